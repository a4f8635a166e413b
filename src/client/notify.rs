//! Browser notifications for messages that arrive while the tab is hidden, by each
//! room's setting: every message, mentions of me (the default), or nothing. Permission is
//! asked for only when the reader picks a setting (a click), never on page load.

use super::storage;
use crate::{protocol::ChatMessage, ui::chat::Chat};
use leptos::prelude::*;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

/// What a room notifies about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    All,
    Mentions,
    Nothing,
}

impl Level {
    pub fn parse(raw: &str) -> Level {
        match raw {
            "all" => Level::All,
            "none" => Level::Nothing,
            _ => Level::Mentions,
        }
    }
}

fn key(room: &str) -> String {
    format!("confab.notify.{room}")
}

/// The room's setting ("all", "mentions" or "none").
pub fn setting(room: &str) -> String {
    storage::get(&key(room)).unwrap_or_else(|| "mentions".to_owned())
}

/// Stores the room's setting and, unless it is "none", asks for permission (this runs
/// from the reader's change of the setting).
pub fn set_setting(room: &str, value: &str) {
    storage::set(&key(room), value);
    if Level::parse(value) != Level::Nothing && Notification::permission() == NotificationPermission::Default
    {
        let _ = Notification::request_permission();
    }
}

/// Whether the tab is hidden (the reader cannot see the message arrive).
pub fn hidden() -> bool {
    web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden())
}

/// Shows a notification for `msg` if its room's setting asks for one.
pub fn message(chat: Chat, msg: &ChatMessage) {
    let (mine, mentioned, news) = chat.model.with_untracked(|m| {
        let news = m.rooms.get(&msg.room).and_then(|v| v.baseline).is_some_and(|b| msg.seq > b);
        (m.is_mine(msg), m.mentions_me(msg), news)
    });
    let wanted = match Level::parse(&setting(&msg.room)) {
        Level::All => true,
        Level::Mentions => mentioned,
        Level::Nothing => false,
    };
    if mine
        || !news
        || !wanted
        || msg.deleted
        || Notification::permission() != NotificationPermission::Granted
    {
        return;
    }
    let options = NotificationOptions::new();
    options.set_body(&msg.text.chars().take(140).collect::<String>());
    options.set_tag(&msg.room);
    let title = if mentioned {
        format!("{} mentioned you in #{}", msg.nick, msg.room)
    } else {
        format!("{} in #{}", msg.nick, msg.room)
    };
    let _ = Notification::new_with_options(&title, &options);
}
