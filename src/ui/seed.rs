//! What the server already knew when it rendered the page (the room's recent history, the
//! room directory), handed to the browser inside the page itself.
//!
//! The server loads it before rendering (see `server::pages`), so the render is
//! synchronous; the browser reads the same data back from the page before it hydrates, so
//! both sides build the same view without a second request. That keeps Leptos's async
//! machinery (resources, suspense, server functions) out of the WASM bundle.

use crate::protocol::{ChatMessage, RoomInfo, UserInfo};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `id` of the `<script type="application/json">` element that carries the seed.
pub const SCRIPT_ID: &str = "confab-seed";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageSeed {
    /// The room the page shows, with its latest messages.
    #[serde(default)]
    pub room: Option<RoomSeed>,
    /// Every room, for the lobby.
    #[serde(default)]
    pub directory: Option<Vec<RoomInfo>>,
    /// The signed-in user the page was rendered for (none for a guest).
    #[serde(default)]
    pub user: Option<UserInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSeed {
    pub name: String,
    pub messages: Vec<ChatMessage>,
}

impl PageSeed {
    /// The seeded messages of `room`, if the page was rendered for it.
    pub fn messages_for(&self, room: &str) -> Option<&[ChatMessage]> {
        self.room.as_ref().filter(|r| r.name == room).map(|r| r.messages.as_slice())
    }

    /// The seed as JSON that is safe inside a `<script>` element: `<` only ever occurs in
    /// JSON strings, where `\u003c` means the same, so no `</script>` can end it early.
    pub fn to_script_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()).replace('<', "\\u003c")
    }

    /// The seed of the page being rendered: loaded by the server before rendering.
    #[cfg(feature = "ssr")]
    pub fn of_request() -> Self {
        use_context::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<PageSeed>().cloned())
            .unwrap_or_default()
    }

    /// The seed the server put in this page (empty if there is none or it does not parse).
    #[cfg(feature = "hydrate")]
    pub fn from_page() -> Self {
        web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(SCRIPT_ID))
            .and_then(|e| e.text_content())
            .and_then(|json| Self::parse(&json))
            .unwrap_or_default()
    }

    /// Reads the seed back from its JSON (with the browser's small reader, `ui::json`).
    pub fn parse(text: &str) -> Option<Self> {
        use super::{json::Json, wire};
        let v = Json::parse(text)?;
        let room = v.get("room").and_then(|r| {
            Some(RoomSeed {
                name: r.str("name")?,
                messages: r.items("messages").iter().filter_map(wire::message).collect(),
            })
        });
        let directory =
            v.get("directory").map(|_| v.items("directory").iter().filter_map(wire::room_info).collect());
        Some(PageSeed { room, directory, user: v.get("user").and_then(wire::user_info) })
    }

    /// The seed for this render: the request's on the server, the page's in the browser.
    pub fn current() -> Self {
        #[cfg(feature = "ssr")]
        return Self::of_request();
        #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
        return Self::from_page();
        #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
        Self::default()
    }
}

/// Makes the seed available to every component and returns it. Called by the server's
/// shell (which also writes it into the page) and by `App`, which in the browser is the
/// first to ask; the seed is loaded once either way.
pub fn provide_seed() -> Arc<PageSeed> {
    use_context::<Arc<PageSeed>>().unwrap_or_else(|| {
        let seed = Arc::new(PageSeed::current());
        provide_context(seed.clone());
        seed
    })
}

pub fn use_seed() -> Arc<PageSeed> {
    use_context::<Arc<PageSeed>>().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_its_script_and_reads_back_the_same() {
        let seed = PageSeed {
            room: Some(RoomSeed {
                name: "r".into(),
                messages: vec![ChatMessage {
                    room: "r".into(),
                    seq: 1,
                    nick: "ann".into(),
                    text: "</script><script>alert(1)</script> & <!--".into(),
                    ts: 0,
                    client_id: "c".into(),
                    ..Default::default()
                }],
            }),
            directory: Some(vec![RoomInfo {
                name: "r".into(),
                members: 1,
                head: 1,
                last_active: 0,
                ..Default::default()
            }]),
            user: Some(crate::protocol::UserInfo {
                id: "1".into(),
                username: Some("ann".into()),
                display_name: "</script>".into(),
                role: crate::protocol::ServerRole::Member,
                guest: false,
            }),
        };
        let json = seed.to_script_json();
        assert!(!json.contains('<'));
        assert_eq!(serde_json::from_str::<PageSeed>(&json).unwrap(), seed.clone());
        assert_eq!(PageSeed::parse(&json), Some(seed.clone()), "the browser reads it back the same");
        assert_eq!(seed.messages_for("r").map(<[_]>::len), Some(1));
        assert!(seed.messages_for("other").is_none());
    }
}
