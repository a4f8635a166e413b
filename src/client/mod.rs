//! Browser-only side (feature `hydrate`): the WebSocket connection with reconnect, resume
//! and outbox, and what the page remembers between visits.

mod connection;
pub mod dom;
pub mod notify;
pub mod storage;

use crate::ui::chat::Chat;
use leptos::prelude::*;
use std::time::Duration;

/// Starts the browser side once the page is hydrated.
pub fn start(chat: Chat) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let nick = storage::get(storage::NICK);
    let session = storage::get(storage::SESSION);
    let rooms = storage::rooms();
    chat.model.update(|m| {
        // A signed-in page is its account; the remembered guest nick is for guest pages.
        if m.account.is_none() {
            m.nick = nick;
            m.session = session;
        }
        for room in rooms {
            m.rooms.entry(room).or_default();
        }
    });
    chat.mounted.set(true);
    chat.clock.set(js_sys::Date::now());
    set_interval(move || chat.clock.set(js_sys::Date::now()), Duration::from_secs(1));
    chat.attach(tx);
    leptos::task::spawn_local(connection::run(chat, rx));
}
