//! Loads each page's seed (see `ui::seed`) before Leptos renders it: the room's recent
//! history for `/r/{room}`, the room directory for `/`. The render itself then needs no
//! async data, and the browser hydrates from the same seed, embedded in the page.

use super::hub::Hub;
use crate::protocol::{JOIN_RECENT, ROOMS_PAGE, RoomName};
use crate::ui::{
    nav::Page,
    seed::{PageSeed, RoomSeed},
};
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use std::sync::Arc;

/// Where the page's WebSocket may connect: its CSP `connect-src` (besides `'self'`, which
/// not every browser extends to `ws:`/`wss:`). Only the page's own origin: `--public-url`
/// when set, else the host the page was requested from.
#[derive(Debug, Clone)]
pub struct SocketOrigins(pub String);

impl SocketOrigins {
    fn of(hub: &Hub, request: &Request) -> Self {
        if let Some(public) = hub.config.public_origin() {
            let ws = public.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
            return SocketOrigins(ws);
        }
        let host = request.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
        // Only a plain host[:port] goes into the header: nothing that could add a directive.
        let plain =
            |h: &&str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        match host.filter(plain) {
            Some(host) => SocketOrigins(format!("ws://{host} wss://{host}")),
            None => SocketOrigins(String::new()),
        }
    }
}

/// Middleware in front of every page: where its socket may connect (its CSP).
pub async fn socket_origins(State(hub): State<Arc<Hub>>, mut request: Request, next: Next) -> Response {
    let origins = SocketOrigins::of(&hub, &request);
    request.extensions_mut().insert(origins);
    next.run(request).await
}

/// Middleware of the page routes (behind their rate limit): puts the page's `PageSeed`
/// in the request.
pub async fn seed_page(State(hub): State<Arc<Hub>>, mut request: Request, next: Next) -> Response {
    if let Some(seed) = load(&hub, request.uri().path()).await {
        request.extensions_mut().insert(seed);
    }
    next.run(request).await
}

/// The seed of the page at `path`; None for anything that is not a page with data.
async fn load(hub: &Hub, path: &str) -> Option<PageSeed> {
    let name = match Page::from_path(path) {
        Page::Lobby => {
            let directory = hub.room_page(None, ROOMS_PAGE).rooms;
            return Some(PageSeed { directory: Some(directory), ..PageSeed::default() });
        }
        Page::Room(room) => RoomName::parse(&room).ok()?,
        Page::NotFound => return None,
    };
    let messages = match hub.http_messages_before(&name, u64::MAX, JOIN_RECENT).await {
        Ok(page) => {
            let budget = hub.config.reply_limit() - super::handlers::REPLY_ENVELOPE;
            super::handlers::newest_within(page.messages, budget, super::handlers::message_bytes).0
        }
        Err(err) => {
            // The page still renders, and the WebSocket join loads the history.
            tracing::error!(%err, room = %name, "loading a room page's history failed");
            Vec::new()
        }
    };
    Some(PageSeed {
        room: Some(RoomSeed { name: name.as_str().to_owned(), messages }),
        ..PageSeed::default()
    })
}
