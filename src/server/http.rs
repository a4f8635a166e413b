//! Plain HTTP endpoints: health and a read-only JSON API over rooms and history.

use super::hub::Hub;
use crate::protocol::{ChatMessage, ErrorCode, RoomInfo, RoomName, Seq};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, atomic::Ordering};

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}/messages", get(messages))
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
    })
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let body = hub.metrics.render(&hub.gauges());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn rooms(State(hub): State<Arc<Hub>>) -> Json<Vec<RoomInfo>> {
    Json(hub.room_list())
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

/// An API error with the same stable codes as the WebSocket protocol.
#[derive(Serialize)]
struct ApiError {
    code: ErrorCode,
    message: String,
}

fn api_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (status, Json(ApiError { code, message: message.into() })).into_response()
}

async fn messages(
    State(hub): State<Arc<Hub>>,
    Path(room): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let name = match RoomName::parse(&room) {
        Ok(name) => name,
        Err(err) => return api_error(StatusCode::BAD_REQUEST, err.code(), err.to_string()),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, hub.config.max_history.max(1)) as usize;
    let before = q.before.unwrap_or(Seq::MAX);
    match hub.messages_before(&name, before, limit).await {
        Ok(page) => Json(MessagesPage {
            room: name.as_str().to_owned(),
            messages: page.messages,
            has_more: page.more,
        })
        .into_response(),
        Err(err) => {
            tracing::error!(%err, "messages API failed");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "could not load messages")
        }
    }
}
