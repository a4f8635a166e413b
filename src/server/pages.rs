//! Loads each page's seed (see `ui::seed`) before Leptos renders it: the room's recent
//! history for `/r/{room}`, the room directory for `/`. The render itself then needs no
//! async data, and the browser hydrates from the same seed, embedded in the page.

use super::hub::Hub;
use crate::protocol::{JOIN_RECENT, RoomName};
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

/// Middleware in front of the page routes: puts the page's `PageSeed` in the request.
pub async fn seed_page(State(hub): State<Arc<Hub>>, mut request: Request, next: Next) -> Response {
    if let Some(seed) = load(&hub, request.uri().path()).await {
        request.extensions_mut().insert(seed);
    }
    next.run(request).await
}

/// The seed of the page at `path`; None for anything that is not a page with data.
async fn load(hub: &Hub, path: &str) -> Option<PageSeed> {
    let name = match Page::from_path(path) {
        Page::Lobby => return Some(PageSeed { directory: Some(hub.room_list()), ..PageSeed::default() }),
        Page::Room(room) => RoomName::parse(&room).ok()?,
        Page::NotFound => return None,
    };
    let messages = match hub.messages_before(&name, u64::MAX, JOIN_RECENT).await {
        Ok(page) => page.messages,
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
