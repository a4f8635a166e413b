//! Loads each page's seed (see `ui::seed`) before Leptos renders it: the room's recent
//! history for `/r/{room}`, the room directory for `/`. The render itself then needs no
//! async data, and the browser hydrates from the same seed, embedded in the page.

use super::{auth::Identity, hub::Hub};
use crate::protocol::{JOIN_RECENT, ROOMS_PAGE, RoomName};
use crate::ui::{
    nav::Page,
    seed::{PageSeed, RoomSeed},
};
use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
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
    // Who is looking decides what the page may show: the directory lists only rooms they
    // may see, and a private room they are not in is "not found" (404, no history).
    let viewer = match hub.auth.authenticate(request.headers()).await {
        Ok(Some(principal)) => Some(principal.identity()),
        _ => None,
    };
    if viewer.is_none() && !hub.auth.guests {
        // No guests here: the sign-in page first.
        let to = format!("/login?next={}", request.uri().path());
        return axum::response::Redirect::to(&to).into_response();
    }
    let user = viewer.as_ref().map(Identity::info);
    let viewer = viewer.unwrap_or_else(super::account_api::anonymous);
    let (seed, not_found) = load(&hub, &viewer, request.uri().path()).await;
    let seed = seed
        .map(|seed| PageSeed { user: user.clone(), ..seed })
        .or(user.map(|u| PageSeed { user: Some(u), ..PageSeed::default() }));
    if let Some(seed) = seed {
        request.extensions_mut().insert(seed);
    }
    let mut response = next.run(request).await;
    if not_found {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

/// The seed of the page at `path` (None for anything that is not a page with data), and
/// whether the page is a room `viewer` may not see.
async fn load(hub: &Hub, viewer: &Identity, path: &str) -> (Option<PageSeed>, bool) {
    let name = match Page::from_path(path) {
        Page::Lobby => {
            let directory = hub.room_page(viewer, None, ROOMS_PAGE).rooms;
            return (Some(PageSeed { directory: Some(directory), ..PageSeed::default() }), false);
        }
        Page::Room(room) => match RoomName::parse(&room) {
            Ok(name) => name,
            Err(_) => return (None, false),
        },
        Page::NotFound => return (None, false),
    };
    match hub.check_read(&name, viewer) {
        Ok(_) => {}
        // A room that does not exist yet renders (joining creates it), with nothing in it.
        Err(_) if hub.find_room(&name).is_none() && !crate::protocol::is_dm_name(name.as_str()) => {
            let room = RoomSeed { name: name.as_str().to_owned(), messages: Vec::new() };
            return (Some(PageSeed { room: Some(room), ..PageSeed::default() }), false);
        }
        Err(_) => return (None, true),
    }
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
    (
        Some(PageSeed {
            room: Some(RoomSeed { name: name.as_str().to_owned(), messages }),
            ..PageSeed::default()
        }),
        false,
    )
}
