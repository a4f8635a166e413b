//! The browser's decoder of server frames.
//!
//! `ServerMsg` is an internally tagged enum (`"type"` beside the fields); serde's derive
//! for those buffers every frame into an intermediate tree and decodes each variant from
//! it, which costs the bundle about 90 KB before compression. Here the tag is read first
//! and then the frame is decoded straight into its variant's fields (the `type` key is
//! ignored as an unknown field). Only what the browser uses is decoded; everything else
//! keeps its default. A `type` the browser does not know is `None`, as an unknown frame
//! was before.

use crate::protocol::{
    ChatMessage, ErrorCode, Limits, PresenceState, RoomInfo, SearchHit, Seq, ServerMsg, UserInfo,
};
use serde::Deserialize;

/// Every field of every frame the browser uses, by name: one decoder for all of them (a
/// decoder per kind of frame would cost more bundle than the frames do). Each kind
/// takes its fields from here; a field it needs and the frame lacks makes it `None`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    nick: Option<String>,
    session: Option<String>,
    limits: Option<Limits>,
    protocol: u32,
    user: Option<UserInfo>,
    members: Option<Vec<String>>,
    member_count: Option<u32>,
    head: Option<Seq>,
    truncated: bool,
    guests: Vec<String>,
    dm: bool,
    topic: String,
    muted: Option<bool>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    has_more: bool,
    rooms: Option<Vec<RoomInfo>>,
    next: Option<String>,
    state: Option<PresenceState>,
    guest: bool,
    by: Option<String>,
    banned: bool,
    username: Option<String>,
    code: Option<ErrorCode>,
    message: Option<String>,
    client_id: Option<String>,
    retry_after_ms: Option<u64>,
    usernames: Vec<String>,
    last_read: Option<Seq>,
    unread: Option<u32>,
    mentions: Option<u32>,
    seq: Option<Seq>,
    query: Option<String>,
    hits: Option<Vec<SearchHit>>,
    next_before: Option<i64>,
}

/// How every `message` frame starts: serde writes an internally tagged enum's tag first.
const MESSAGE_PREFIX: &str = r#"{"type":"message","#;
const EDIT_PREFIX: &str = r#"{"type":"edit","#;
const DELETE_PREFIX: &str = r#"{"type":"delete","#;
const REACT_PREFIX: &str = r#"{"type":"react","#;

/// Decodes one text frame from the server; None for anything else.
pub fn decode(text: &str) -> Option<ServerMsg> {
    // Messages are most of the traffic: straight into `ChatMessage` (whose `user` is an
    // id, where `welcome`'s is an object).
    if text.starts_with(MESSAGE_PREFIX) {
        return serde_json::from_str(text).ok().map(ServerMsg::Message);
    }
    // The log's other events, straight into their structs too (their `user` is an id).
    if text.starts_with(EDIT_PREFIX) {
        return serde_json::from_str(text).ok().map(ServerMsg::Edit);
    }
    if text.starts_with(DELETE_PREFIX) {
        return serde_json::from_str(text).ok().map(ServerMsg::Delete);
    }
    if text.starts_with(REACT_PREFIX) {
        return serde_json::from_str(text).ok().map(ServerMsg::React);
    }
    let f: Frame = serde_json::from_str(text).ok()?;
    Some(match f.kind.as_str() {
        "presence" => ServerMsg::Presence {
            room: f.room?,
            nick: f.nick?,
            state: f.state?,
            member_count: f.member_count,
            guest: f.guest,
            username: f.username,
        },
        "typing" => ServerMsg::Typing { room: f.room?, nick: f.nick? },
        "joined" => ServerMsg::Joined {
            room: f.room?,
            members: f.members?,
            member_count: f.member_count.unwrap_or_default(),
            head: f.head?,
            truncated: f.truncated,
            guests: f.guests,
            usernames: f.usernames,
            visibility: Default::default(),
            dm: f.dm,
            topic: f.topic,
            role: None,
            muted: f.muted.unwrap_or_default(),
            last_read: f.last_read,
            unread: f.unread,
            mentions: f.mentions,
            reference: f.reference,
        },
        "read" => ServerMsg::Read { room: f.room?, seq: f.seq? },
        "search_results" => ServerMsg::SearchResults {
            query: f.query?,
            hits: f.hits?,
            has_more: f.has_more,
            next_before: f.next_before,
            reference: f.reference,
        },
        "history" => ServerMsg::History {
            room: f.room?,
            messages: f.messages?,
            has_more: f.has_more,
            reference: f.reference,
        },
        "rooms" => {
            ServerMsg::Rooms { rooms: f.rooms?, has_more: f.has_more, next: f.next, reference: f.reference }
        }
        "left" => ServerMsg::Left { room: f.room?, reference: f.reference },
        "welcome" => ServerMsg::Welcome {
            session: f.session?,
            nick: f.nick?,
            limits: f.limits?,
            protocol: f.protocol,
            user: f.user,
            reference: None,
        },
        "error" => ServerMsg::Error {
            code: f.code?,
            message: f.message?,
            client_id: f.client_id,
            retry_after_ms: f.retry_after_ms,
            reference: f.reference,
        },
        "invited" => ServerMsg::Invited { room: f.room?, by: f.by? },
        "kicked" => ServerMsg::Kicked { room: f.room?, by: f.by?, banned: f.banned },
        "topic" => ServerMsg::Topic { room: f.room?, topic: f.topic, by: f.by? },
        "member_update" => ServerMsg::MemberUpdate {
            room: f.room?,
            username: f.username?,
            role: None,
            banned: None,
            muted: f.muted,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RoomRole, ServerRole};

    fn limits() -> Limits {
        Limits {
            max_text_chars: 4000,
            max_nick_chars: 32,
            max_room_chars: 64,
            max_frame_bytes: 65536,
            max_rooms_per_connection: 32,
            max_history: 200,
            messages_per_sec: 10,
            message_burst: 20,
        }
    }

    /// Every frame the browser uses decodes to what the server encoded (the fields it
    /// does not use come back as their defaults).
    #[test]
    fn frames_decode_as_the_server_encodes_them() {
        let msg = ChatMessage {
            room: "r".into(),
            seq: 3,
            nick: "ann".into(),
            text: "hi \"there\"".into(),
            ts: 5,
            client_id: "c".into(),
            user: "7".into(),
            guest: true,
            reply_to: Some(2),
            mentions: vec!["bob".into()],
            edited_ts: Some(9),
            deleted: false,
            reactions: vec![crate::protocol::Reaction {
                emoji: "👍".into(),
                count: 1,
                users: vec!["8".into()],
                nicks: vec!["Bob".into()],
            }],
        };
        let user = UserInfo {
            id: "7".into(),
            username: Some("ann".into()),
            display_name: "Ann".into(),
            role: ServerRole::Member,
            guest: false,
        };
        let samples = vec![
            ServerMsg::Message(msg.clone()),
            ServerMsg::Welcome {
                session: "s".into(),
                nick: "Ann".into(),
                limits: limits(),
                protocol: 2,
                user: Some(user),
                reference: None,
            },
            ServerMsg::Joined {
                room: "r".into(),
                members: vec!["ann".into(), "bob".into()],
                member_count: 2,
                head: 9,
                truncated: true,
                guests: vec!["bob".into()],
                usernames: vec!["ann".into()],
                visibility: Default::default(),
                dm: true,
                topic: "t".into(),
                role: None,
                muted: true,
                last_read: Some(4),
                unread: Some(5),
                mentions: Some(1),
                reference: Some("j1".into()),
            },
            ServerMsg::Edit(crate::protocol::EditEvent {
                room: "r".into(),
                seq: 10,
                target: 3,
                text: "new".into(),
                edited_ts: 11,
                user: "7".into(),
                nick: "Ann".into(),
                client_id: "e1".into(),
                mentions: vec!["bob".into()],
            }),
            ServerMsg::Delete(crate::protocol::DeleteEvent {
                room: "r".into(),
                seq: 12,
                target: 3,
                by: "Ann".into(),
                user: "7".into(),
                client_id: "d1".into(),
            }),
            ServerMsg::React(crate::protocol::ReactEvent {
                room: "r".into(),
                seq: 13,
                target: 3,
                emoji: "🎉".into(),
                user: "7".into(),
                nick: "Ann".into(),
                on: false,
            }),
            ServerMsg::Read { room: "r".into(), seq: 13 },
            ServerMsg::SearchResults {
                query: "q".into(),
                hits: vec![SearchHit {
                    room: "r".into(),
                    seq: 3,
                    nick: "Ann".into(),
                    ts: 5,
                    snippet: "…q…".into(),
                }],
                has_more: true,
                next_before: Some(77),
                reference: Some("s1".into()),
            },
            ServerMsg::Left { room: "r".into(), reference: Some("l".into()) },
            ServerMsg::Typing { room: "r".into(), nick: "bob".into() },
            ServerMsg::History {
                room: "r".into(),
                messages: vec![msg],
                has_more: true,
                reference: Some("h".into()),
            },
            ServerMsg::Rooms {
                rooms: vec![RoomInfo {
                    name: "r".into(),
                    members: 1,
                    head: 2,
                    dm: true,
                    topic: "x".into(),
                    ..Default::default()
                }],
                has_more: true,
                next: Some("n".into()),
                reference: None,
            },
            ServerMsg::Presence {
                room: "r".into(),
                nick: "bob".into(),
                state: PresenceState::Left,
                member_count: Some(1),
                guest: true,
                username: Some("bob".into()),
            },
            ServerMsg::Error {
                code: ErrorCode::Muted,
                message: "m".into(),
                client_id: Some("c".into()),
                retry_after_ms: Some(3),
                reference: Some("e".into()),
            },
            ServerMsg::Invited { room: "r".into(), by: "ann".into() },
            ServerMsg::Kicked { room: "r".into(), by: "ann".into(), banned: true },
            ServerMsg::Topic { room: "r".into(), topic: "new".into(), by: "ann".into() },
            ServerMsg::MemberUpdate {
                room: "r".into(),
                username: "bob".into(),
                role: None,
                banned: None,
                muted: Some(true),
            },
        ];
        for sample in samples {
            let text = serde_json::to_string(&sample).unwrap();
            assert_eq!(decode(&text), Some(sample), "{text}");
        }
    }

    #[test]
    fn what_the_browser_does_not_use_is_skipped_or_defaulted() {
        let joined =
            r#"{"type":"joined","room":"r","members":[],"head":0,"visibility":"private","role":"owner"}"#;
        assert!(matches!(decode(joined), Some(ServerMsg::Joined { role: None, .. })));
        let update = ServerMsg::MemberUpdate {
            room: "r".into(),
            username: "bob".into(),
            role: Some(RoomRole::Owner),
            banned: Some(true),
            muted: None,
        };
        let decoded = decode(&serde_json::to_string(&update).unwrap());
        assert!(matches!(
            decoded,
            Some(ServerMsg::MemberUpdate { role: None, banned: None, muted: None, .. })
        ));
        assert_eq!(decode(r#"{"type":"kicked","room":"r"}"#), None, "no by");
        assert_eq!(decode(r#"{"type":"ack","ref":"x"}"#), None);
        assert_eq!(decode(r#"{"type":"dance"}"#), None);
        assert_eq!(decode("not json"), None);
        assert_eq!(decode(r#"{"type":"message","room":"r"}"#), None, "missing fields");
        // The server's encoder writes the tag first, which the fast path relies on.
        let m = ServerMsg::Message(ChatMessage::default());
        assert!(serde_json::to_string(&m).unwrap().starts_with(MESSAGE_PREFIX));
    }
}
