//! The native server (feature `ssr`): WebSocket hub, rooms, storage, HTTP.

pub mod access;
pub mod account_api;
pub mod account_pages;
pub mod admin;
pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod conversation;
pub mod handlers;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod message_api;
pub mod metrics;
pub mod moderation;
pub mod ordering;
pub mod outbound;
pub mod pages;
pub mod rate;
pub mod room;
pub mod search;
pub mod search_page;
pub mod session;
pub mod store;

use crate::app::shell;
use axum::{
    Router,
    extract::{ConnectInfo, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
    serve::ListenerExt,
};
use config::Config;
use hub::Hub;
use leptos::prelude::*;
use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::Duration,
};
use store::StoreError;
use tokio::net::TcpListener;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer, timeout::TimeoutLayer};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    #[error("opening the accounts: {0}")]
    Accounts(#[from] store::accounts::AccountError),
    #[error("binding the listen address: {0}")]
    Bind(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// Wall-clock time as Unix milliseconds (message timestamps, room creation).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A bound, not yet running, server.
pub struct Server {
    hub: Arc<Hub>,
    committer: JoinHandle<()>,
    listener: TcpListener,
    app: Router,
}

impl Server {
    /// Opens the store, loads the rooms, binds the address. Nothing is served until `run`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let (store, accounts) = store::open(&config).await?;
        let listener = TcpListener::bind(config.listen_addr()).await?;
        let options = leptos_options(&config, listener.local_addr()?);
        let metrics = Arc::new(metrics::Metrics::default());
        let redis = match &config.broker {
            Some(url) => {
                let ttl = Duration::from_secs(config.presence_ttl_secs);
                let connected = broker::redis::RedisBroker::connect(
                    url,
                    &config.broker_prefix,
                    ttl,
                    store.clone(),
                    metrics.clone(),
                )
                .await;
                Some(connected.map_err(|e| StartError::Config(format!("--broker: {e}")))?)
            }
            None => None,
        };
        let fanout: Arc<dyn broker::Broker> = match &redis {
            Some(redis) => redis.clone(),
            None => Arc::new(broker::LocalBroker),
        };
        // Loading rooms blocks on the store (PostgreSQL's calls wait on this runtime):
        // off the async threads.
        let (hub, committer) =
            tokio::task::spawn_blocking(move || Hub::start_with(config, store, accounts, fanout, metrics))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??;
        if let Some(redis) = &redis {
            redis.attach(&hub);
            tracing::info!(node = ?broker::Broker::node(&**redis), "fan-out between nodes through Redis");
        }
        let app = router(hub.clone(), options);
        Ok(Server { hub, committer, listener, app })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serves until `shutdown` resolves, then closes every connection (1001), waits up to
    /// five seconds for them, and lets the committer store what it holds.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Server { hub, committer, listener, app } = self;
        let stop = hub.shutdown.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down");
            stop.cancel();
        };
        let stopped = hub.shutdown.clone();
        let sweeper = tokio::spawn(sweep_sessions(hub.clone()));
        // Pings every connection, cuts the silent and stuck ones, closes all at shutdown.
        let heartbeat = tokio::spawn(heartbeat::run(hub.clone()));
        let maintenance = tokio::spawn(maintain_store(hub.clone()));
        // No Nagle: chat frames are small and must go out now, not after a delayed ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal);
        // Graceful shutdown waits for HTTP requests in flight without a deadline; a slow
        // one (a client reading a page slowly) must not hold the server past its 5 s.
        let overdue = async move {
            stopped.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        tokio::select! {
            served = serve => served?,
            _ = overdue => tracing::warn!("HTTP requests still in flight at shutdown; dropped"),
        }
        sweeper.abort();
        maintenance.abort();
        // It has closed every connection (1001) by now, or does so as it sees the
        // shutdown; a connection opened after that is closed as it registers.
        drop(heartbeat);
        hub.tasks.close();
        if tokio::time::timeout(Duration::from_secs(4), hub.tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        // The committer stores what it holds and stops, letting go of its handle on the
        // store; the database's lock goes with the hub's, once the last holder drops it.
        hub.committer.stop();
        let store = hub.store.clone();
        drop(hub);
        let joined = tokio::task::spawn_blocking(move || committer.join());
        match tokio::time::timeout(Duration::from_secs(1), joined).await {
            // Nothing writes any more: another server may take the database now, though
            // a task of this one may still hold the store for a moment.
            Ok(_) => store.release(),
            Err(_) => tracing::warn!("committer still busy at exit"),
        }
        Ok(())
    }
}

fn leptos_options(config: &Config, addr: SocketAddr) -> LeptosOptions {
    let env = match std::env::var("LEPTOS_ENV").as_deref() {
        Ok("DEV") | Ok("dev") | Ok("development") => leptos::config::Env::DEV,
        _ => leptos::config::Env::PROD,
    };
    LeptosOptions::builder()
        .output_name(std::env::var("LEPTOS_OUTPUT_NAME").unwrap_or_else(|_| "confab".into()))
        .site_root(config.site_root.clone())
        .site_pkg_dir(std::env::var("LEPTOS_SITE_PKG_DIR").unwrap_or_else(|_| "pkg".into()))
        .site_addr(addr)
        .env(env)
        .build()
}

/// The whole HTTP surface: Leptos pages and assets, the WebSocket, the JSON API.
pub fn router(hub: Arc<Hub>, options: LeptosOptions) -> Router {
    // Leptos renders on tokio (an error only means it was set up already).
    let _ = any_spawner::Executor::init_tokio();
    // The app's two pages; anything else is a static file or the app's "not found" (404).
    let render = leptos_axum::render_app_to_stream_with_context(|| (), {
        let options = options.clone();
        move || shell(options.clone())
    });
    // Pages read the store (a room's history, the directory): the per-address rate
    // limit comes first, then the seed is loaded. Static assets are not limited. Every
    // page, the "not found" one included, gets where its socket may connect (its CSP).
    // One limiter for pages and the API: a client address has one allowance.
    let limit = http::rate_limit(&hub.config);
    // Sign-in and sign-up attempts, by page or API, share one stricter allowance.
    let auth_limit = account_api::auth_limit(&hub.config);
    let page_routes = Router::new()
        .route("/", get(render.clone()))
        .route("/r/{room}", get(render))
        .route_layer(axum::middleware::from_fn_with_state(hub.clone(), pages::seed_page))
        .merge(account_pages::routes(&hub, &auth_limit).with_state(hub.clone()));
    let pages = page_routes
        .layer(limit.clone())
        .fallback(leptos_axum::file_and_error_handler(shell))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), pages::socket_origins))
        .with_state(options)
        // Pages and assets only: the WebSocket upgrade below stays uncompressed.
        .layer(CompressionLayer::new());
    let timeout = Duration::from_secs(hub.config.http_timeout_secs.max(1));
    let api = http::routes(&hub, &limit, &auth_limit);
    let http = pages
        .merge(api.with_state(hub.clone()))
        // A slow request is cut (408) rather than held open; not the WebSocket, whose
        // connection outlives its upgrade request.
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout));
    http.merge(Router::new().route("/ws", get(ws_upgrade)).with_state(hub))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // Not `no-referrer`: under it browsers send `Origin: null` with a form post,
            // and the account pages' forms are checked by their Origin. `same-origin`
            // still tells other sites nothing.
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ))
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let cfg = &hub.config;
    // Cross-site WebSocket hijacking: a page elsewhere must not talk to us with the
    // visitor's cookies and network position.
    if !origin_allowed(&headers, cfg.public_origin(), &cfg.allowed_origins) {
        hub.metrics.refused_origin.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // The session cookie or a Bearer token makes the socket that account's; a bad or
    // revoked token is refused here (401), a stale cookie only means "not signed in".
    let principal = match hub.auth.authenticate(&headers).await {
        Ok(principal) => principal,
        Err(err) => return http::ApiError::from(err).into_response(),
    };
    let Some(slot) = hub.admit(peer.ip()) else {
        hub.metrics.refused_per_ip.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "too many connections from this address").into_response();
    };
    let tasks = hub.tasks.clone();
    // Boxed: the upgrade's callback keeps room for it for the connection's whole life.
    let principal = principal.map(Box::new);
    // Tungstenite's defaults (64 MiB messages, 128 KiB read buffer, unbounded write buffer)
    // are replaced by our own bounds.
    ws.max_message_size(cfg.max_frame_bytes)
        .max_frame_size(cfg.max_frame_bytes)
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(cfg.outbound_queue_bytes + cfg.max_frame_bytes + 64 * 1024)
        .on_upgrade(move |socket| {
            use futures::FutureExt;
            // Not an `async` block around `serve`: it would keep room for the socket it
            // moved into the connection, for as long as the connection lives.
            let connection = connection::serve(socket, hub, peer.ip(), principal);
            tasks.track_future(connection.map(move |()| drop(slot)))
        })
}

/// Whether a WebSocket upgrade's `Origin` may talk to us. No Origin at all is not a
/// browser, and is allowed. With `--public-url` the page must come from that origin (or
/// `--allowed-origins`): the request's own `Host` is not trusted, since DNS rebinding
/// controls it and a proxy may rewrite it. Without it, same-origin means the Origin's
/// host is the Host we were reached at.
pub(crate) fn origin_allowed(headers: &HeaderMap, public: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    if let Some(public) = public {
        return public.eq_ignore_ascii_case(origin);
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Store housekeeping once a second (SQLite checkpoints), on a blocking thread.
async fn maintain_store(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(err) = hub.store.maintain().await {
            tracing::warn!(%err, "store maintenance failed");
        }
    }
}

async fn sweep_sessions(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        hub.sweep_creations();
        hub.sweep_send_buckets();
        hub.auth.sweep();
        hub.auth.revalidate().await;
        let n = hub.sessions.sweep();
        if n > 0 {
            tracing::debug!(expired = n, "sessions expired");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://chat.example.org".to_owned()];
        let ok = |origin, host| origin_allowed(&headers(origin, host), None, &allowed);
        assert!(ok(None, "a:1"));
        assert!(ok(Some("http://a:1"), "a:1"));
        assert!(ok(Some("https://chat.example.org"), "a:1"));
        assert!(!ok(Some("http://evil.example"), "a:1"));
        assert!(!ok(Some("http://a:2"), "a:1"));
        assert!(!ok(Some("null"), "a:1"));
    }

    #[test]
    fn with_a_public_url_the_host_header_is_not_trusted() {
        let public = Some("https://chat.example.org");
        let ok = |origin, host| origin_allowed(&headers(origin, host), public, &[]);
        assert!(ok(Some("https://chat.example.org"), "internal:3000"), "behind a proxy that rewrites Host");
        // DNS rebinding: evil.example resolves to us, and Origin and Host agree.
        assert!(!ok(Some("http://evil.example"), "evil.example"));
        assert!(!ok(Some("http://chat.example.org"), "chat.example.org"), "scheme matters");
        assert!(ok(None, "anything"));
    }
}
