//! The native server (feature `ssr`): WebSocket hub, rooms, storage, HTTP.

pub mod broker;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
pub mod outbound;
pub mod rate;
pub mod room;
pub mod session;
pub mod store;

use crate::app::{App, shell};
use axum::{
    Router,
    extract::{State, WebSocketUpgrade},
    http::{HeaderName, HeaderValue, header},
    response::Response,
    routing::get,
};
use config::Config;
use hub::Hub;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::{future::Future, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};
use store::{StoreError, sqlite::SqliteStore};
use tokio::net::TcpListener;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    #[error("binding the listen address: {0}")]
    Bind(#[from] std::io::Error),
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
        let store = Arc::new(SqliteStore::open(&config.db)?);
        let listener = TcpListener::bind(config.listen_addr()).await?;
        let options = leptos_options(&config, listener.local_addr()?);
        let (hub, committer) = Hub::start(config, store)?;
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
        let sweeper = tokio::spawn(sweep_sessions(hub.clone()));
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .await?;
        sweeper.abort();
        hub.tasks.close();
        if tokio::time::timeout(Duration::from_secs(4), hub.tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        // The committer stops once the last handle (inside the hub) is gone.
        drop(hub);
        let joined = tokio::task::spawn_blocking(move || committer.join());
        if tokio::time::timeout(Duration::from_secs(1), joined).await.is_err() {
            tracing::warn!("committer still busy at exit");
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
    let routes = generate_route_list(App);
    let pages = Router::new()
        .leptos_routes_with_context(
            &options,
            routes,
            {
                let hub = hub.clone();
                move || provide_context(hub.clone())
            },
            {
                let options = options.clone();
                move || shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler(shell))
        .with_state(options)
        // Pages and assets only: the WebSocket upgrade below stays uncompressed.
        .layer(CompressionLayer::new());
    let api = http::routes().route("/ws", get(ws_upgrade)).with_state(hub);
    pages
        .merge(api)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ))
}

async fn ws_upgrade(ws: WebSocketUpgrade, State(hub): State<Arc<Hub>>) -> Response {
    let cfg = &hub.config;
    let tasks = hub.tasks.clone();
    // Tungstenite's defaults (64 MiB messages, 128 KiB read buffer, unbounded write buffer)
    // are replaced by our own bounds.
    ws.max_message_size(cfg.max_frame_bytes)
        .max_frame_size(cfg.max_frame_bytes)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(cfg.outbound_queue_bytes + cfg.max_frame_bytes + 64 * 1024)
        .on_upgrade(move |socket| tasks.track_future(connection::serve(socket, hub)))
}

async fn sweep_sessions(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let n = hub.sessions.sweep();
        if n > 0 {
            tracing::debug!(expired = n, "sessions expired");
        }
    }
}
