//! Plain HTTP endpoints: health, metrics and a read-only JSON API over rooms and history.
//!
//! Every error is an [`ApiError`]: a status and a JSON body `{code, message}` with the
//! same stable codes as the WebSocket protocol.

use super::{
    config::Config,
    handlers::{REPLY_ENVELOPE, message_bytes, newest_within},
    hub::Hub,
};
use crate::protocol::{
    ChatMessage, ErrorCode, MAX_SEARCH_PAGE, ROOMS_PAGE, RoomInfo, RoomName, SEARCH_PAGE, SearchHit, Seq,
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tower_governor::{GovernorError, GovernorLayer, governor::GovernorConfigBuilder};

/// The JSON API (behind the per-address `limit`) and the health and metrics endpoints
/// (cheap, polled by monitors, not limited).
pub fn routes(hub: &Arc<Hub>, limit: &HttpRateLimit, auth_limit: &HttpRateLimit) -> Router<Arc<Hub>> {
    let api = Router::new()
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}/messages", get(messages))
        .route("/api/search", get(search));
    api.layer(limit.clone())
        .merge(super::account_api::routes(limit, auth_limit))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), super::account_api::check_origin))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// The per-address HTTP rate limit: one limiter, shared by every route it is put on.
pub type HttpRateLimit = GovernorLayer<
    tower_governor::key_extractor::PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    axum::body::Body,
>;

/// An API error: an HTTP status and `{code, message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds to wait, for 429 (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ApiErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ApiErrorBody { code: self.code, message: &self.message });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The per-address rate limit of the HTTP API and pages (`--http-rate`, `--http-burst`),
/// answered like every other API error: 429, `rate_limited`, `Retry-After`. Build it once
/// and clone it onto each router: clones share the limiter.
pub fn rate_limit(config: &Config) -> HttpRateLimit {
    per_address_limit(
        Duration::from_secs(1) / config.http_rate.max(1),
        config.http_burst,
        "too many requests",
    )
}

/// A per-address limit of one token every `period`, bursts of `burst`, refused as 429
/// `rate_limited` with `Retry-After` and `message`. Addresses whose quota has refilled are
/// forgotten every minute, so the limiter's memory stays bounded.
pub fn per_address_limit(period: Duration, burst: u32, message: &'static str) -> HttpRateLimit {
    let governor = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(burst.max(1))
        .finish()
        .expect("a non-zero period and burst");
    let limiter = governor.limiter().clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.retain_recent();
            }
        });
    }
    GovernorLayer::new(governor).error_handler(move |err| {
        let error = match err {
            GovernorError::TooManyRequests { wait_time, .. } => ApiError {
                retry_after: Some(wait_time.max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
            },
            other => ApiError::internal(other.to_string()),
        };
        error.into_response()
    })
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    connections: u64,
    /// Connection tasks still running: equals `connections` unless one is stuck.
    connection_tasks: usize,
    rooms: usize,
    sessions: usize,
    messages_in: u64,
    messages_stored: u64,
    slow_consumers: u64,
    /// Several nodes only: this node's view of the bus.
    #[serde(skip_serializing_if = "Option::is_none")]
    bus: Option<BusHealth>,
}

#[derive(serde::Serialize)]
struct BusHealth {
    node: String,
    /// Ms from the newest bus event's publication to its arrival here.
    lag_ms: u64,
    reconnects: u64,
    /// Gaps in a room's stream filled from the store, and the events that took.
    gap_fills: u64,
    gap_events: u64,
    /// Head checks that delivered events the bus had lost.
    head_repairs: u64,
    duplicates_dropped: u64,
    publish_failures: u64,
}

async fn healthz(State(hub): State<Arc<Hub>>) -> Json<Health> {
    let m = &hub.metrics;
    Json(Health {
        status: "ok",
        connections: m.connections.load(Ordering::Relaxed),
        connection_tasks: hub.tasks.len(),
        rooms: hub.room_count(),
        sessions: hub.sessions.len(),
        messages_in: m.messages_in.load(Ordering::Relaxed),
        messages_stored: m.messages_stored.load(Ordering::Relaxed),
        slow_consumers: m.slow_consumers.load(Ordering::Relaxed),
        bus: hub.broker.node().map(|node| BusHealth {
            node: node.to_owned(),
            lag_ms: hub.broker.lag_ms().unwrap_or(0),
            reconnects: m.bus_reconnects.load(Ordering::Relaxed),
            gap_fills: m.gap_fills.load(Ordering::Relaxed),
            gap_events: m.gap_events.load(Ordering::Relaxed),
            head_repairs: m.head_repairs.load(Ordering::Relaxed),
            duplicates_dropped: m.bus_duplicates.load(Ordering::Relaxed),
            publish_failures: m.bus_publish_failures.load(Ordering::Relaxed),
        }),
    })
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let body = hub.metrics.render(&hub.gauges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct RoomsQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Response body of `GET /api/rooms`: one page of the directory, most recently active
/// first; `next` is the `cursor` of the next page.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomsPage {
    pub rooms: Vec<RoomInfo>,
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The rooms the caller may see (private ones only to their members).
async fn rooms(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<RoomsQuery>,
) -> Result<Json<RoomsPage>, ApiError> {
    let who = super::account_api::reader(&hub, &headers).await?;
    let mut page = hub.room_page(&who, q.cursor.as_deref(), q.limit.unwrap_or(ROOMS_PAGE));
    hub.annotate_unread(&who, &mut page.rooms).await;
    Ok(Json(RoomsPage { has_more: page.next.is_some(), rooms: page.rooms, next: page.next }))
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<Seq>,
    limit: Option<u32>,
}

/// Response body of `GET /api/rooms/{room}/messages`: oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessagesPage {
    pub room: String,
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}

/// A room's history: 404 for a room that does not exist and for a private room the
/// caller is not in (the same answer, so it does not tell which).
async fn messages(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    let name = RoomName::parse(&room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let who = super::account_api::reader(&hub, &headers).await?;
    hub.check_read(&name, &who)?;
    let limit = q.limit.unwrap_or(50).clamp(1, hub.config.max_history.max(1)) as usize;
    let before = q.before.unwrap_or(Seq::MAX);
    let page = hub.http_messages_before(&name, before, limit).await.map_err(|err| {
        tracing::error!(%err, "messages API failed");
        ApiError::internal("could not load messages")
    })?;
    let budget = hub.config.reply_limit() - REPLY_ENVELOPE;
    let (messages, cut) = newest_within(page.messages, budget, message_bytes);
    Ok(Json(MessagesPage { room: name.as_str().to_owned(), messages, has_more: page.more || cut }))
}

#[derive(Deserialize)]
struct SearchParams {
    q: String,
    room: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// Response body of `GET /api/search`: hits newest first; `next` is the `before` of the
/// next page.
#[derive(Debug, Serialize, Deserialize)]
pub struct SearchResults {
    pub query: String,
    pub hits: Vec<SearchHit>,
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// Full-text search over the rooms the caller may read (`from:` and `in:` work in `q`).
async fn search(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(p): Query<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    let who = super::account_api::reader(&hub, &headers).await?;
    hub.search_allowed(&who).map_err(|refusal| ApiError {
        retry_after: Some(refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many searches")
    })?;
    let query = super::search::Query::parse(&p.q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, e.to_string()))?;
    let room = p
        .room
        .as_deref()
        .map(RoomName::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let limit = p.limit.unwrap_or(SEARCH_PAGE).clamp(1, MAX_SEARCH_PAGE) as usize;
    let page = hub.search(&who, &query, room.as_ref(), p.before, limit).await?;
    Ok(Json(SearchResults { query: p.q, has_more: page.next.is_some(), hits: page.hits, next: page.next }))
}
