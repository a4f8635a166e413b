//! The browser's decoder of server frames, and encoder of its own.
//!
//! The server speaks serde (`protocol`'s derives); the browser reads and writes the same
//! JSON with `ui::json`, which costs the bundle a fraction of serde's derived code (see
//! there). Only what the browser uses is decoded; everything else keeps its default. A
//! `type` the browser does not know is `None`, as is a frame missing a field it needs.
//! The tests below check, frame by frame, that both sides agree.

use super::json::{Json, Writer};
use crate::protocol::{
    ChatMessage, ClientMsg, DeleteEvent, EditEvent, ErrorCode, Limits, PresenceState, Quote, ReactEvent,
    Reaction, Request, RoomInfo, RoomRole, ServerMsg, ServerRole, UserInfo,
};

/// Decodes one text frame from the server; None for anything else.
pub fn decode(text: &str) -> Option<ServerMsg> {
    let f = Json::parse(text)?;
    let room = || f.str("room");
    Some(match f.get("type")?.as_str()? {
        "message" => ServerMsg::Message(message(&f)?),
        "edit" => ServerMsg::Edit(EditEvent {
            room: room()?,
            seq: f.u64("seq")?,
            target: f.u64("target")?,
            text: f.str("text")?,
            edited_ts: f.int("edited_ts")?,
            user: f.string("user"),
            nick: f.string("nick"),
            client_id: f.string("client_id"),
            mentions: f.strings("mentions"),
        }),
        "delete" => ServerMsg::Delete(DeleteEvent {
            room: room()?,
            seq: f.u64("seq")?,
            target: f.u64("target")?,
            by: f.string("by"),
            user: f.string("user"),
            client_id: f.string("client_id"),
        }),
        "react" => ServerMsg::React(ReactEvent {
            room: room()?,
            seq: f.u64("seq")?,
            target: f.u64("target")?,
            emoji: f.str("emoji")?,
            user: f.str("user")?,
            nick: f.string("nick"),
            on: f.bool("on")?,
        }),
        "presence" => ServerMsg::Presence {
            room: room()?,
            nick: f.str("nick")?,
            state: match f.get("state")?.as_str()? {
                "joined" => PresenceState::Joined,
                "left" => PresenceState::Left,
                _ => return None,
            },
            member_count: f.u32("member_count"),
            guest: f.flag("guest"),
            username: f.str("username"),
        },
        "typing" => ServerMsg::Typing { room: room()?, nick: f.str("nick")? },
        "joined" => ServerMsg::Joined {
            room: room()?,
            members: f.get("members").map(|_| f.strings("members"))?,
            member_count: f.u32("member_count").unwrap_or_default(),
            head: f.u64("head")?,
            truncated: f.flag("truncated"),
            guests: f.strings("guests"),
            usernames: f.strings("usernames"),
            visibility: Default::default(),
            dm: f.flag("dm"),
            topic: f.string("topic"),
            role: f.str("role").as_deref().and_then(RoomRole::parse),
            muted: f.flag("muted"),
            last_read: f.u64("last_read"),
            unread: f.u32("unread"),
            mentions: f.u32("mentions"),
            reference: f.str("ref"),
        },
        "history" => ServerMsg::History {
            room: room()?,
            messages: f.get("messages").map(|_| f.items("messages").iter().filter_map(message).collect())?,
            has_more: f.flag("has_more"),
            reference: f.str("ref"),
        },
        "rooms" => ServerMsg::Rooms {
            rooms: f.get("rooms").map(|_| f.items("rooms").iter().filter_map(room_info).collect())?,
            has_more: f.flag("has_more"),
            next: f.str("next"),
            reference: f.str("ref"),
        },
        "left" => ServerMsg::Left { room: room()?, reference: f.str("ref") },
        "read" => ServerMsg::Read { room: room()?, seq: f.u64("seq")? },
        "welcome" => ServerMsg::Welcome {
            session: f.str("session")?,
            nick: f.str("nick")?,
            limits: limits(f.get("limits")?)?,
            protocol: f.u32("protocol").unwrap_or_default(),
            user: f.get("user").and_then(user_info),
            reference: None,
        },
        "error" => ServerMsg::Error {
            code: error_code(f.get("code")?.as_str()?)?,
            message: f.str("message")?,
            client_id: f.str("client_id"),
            retry_after_ms: f.u64("retry_after_ms"),
            reference: f.str("ref"),
        },
        "invited" => ServerMsg::Invited { room: room()?, by: f.str("by")? },
        "kicked" => ServerMsg::Kicked { room: room()?, by: f.str("by")?, banned: f.flag("banned") },
        "topic" => ServerMsg::Topic { room: room()?, topic: f.string("topic"), by: f.str("by")? },
        "member_update" => ServerMsg::MemberUpdate {
            room: room()?,
            username: f.str("username")?,
            role: f.str("role").as_deref().and_then(RoomRole::parse),
            banned: None,
            muted: f.bool("muted"),
        },
        _ => return None,
    })
}

/// A message as `message`, `history` and the page's seed carry it.
pub fn message(v: &Json) -> Option<ChatMessage> {
    Some(ChatMessage {
        room: v.str("room")?,
        seq: v.u64("seq")?,
        nick: v.str("nick")?,
        text: v.str("text")?,
        ts: v.int("ts")?,
        client_id: v.str("client_id")?,
        user: v.string("user"),
        guest: v.flag("guest"),
        reply_to: v.u64("reply_to"),
        mentions: v.strings("mentions"),
        edited_ts: v.int("edited_ts"),
        deleted: v.flag("deleted"),
        quote: v.get("quote").and_then(|q| {
            Some(Quote { nick: q.str("nick")?, text: q.string("text"), deleted: q.flag("deleted") })
        }),
        reactions: v
            .items("reactions")
            .iter()
            .filter_map(|r| {
                Some(Reaction {
                    emoji: r.str("emoji")?,
                    count: r.u32("count")?,
                    users: r.strings("users"),
                    nicks: r.strings("nicks"),
                })
            })
            .collect(),
    })
}

pub fn room_info(v: &Json) -> Option<RoomInfo> {
    Some(RoomInfo {
        name: v.str("name")?,
        members: v.u32("members")?,
        head: v.u64("head")?,
        last_active: v.int("last_active").unwrap_or_default(),
        visibility: Default::default(),
        dm: v.flag("dm"),
        topic: v.string("topic"),
        last_read: v.u64("last_read"),
        unread: v.u32("unread"),
        mentions: v.u32("mentions"),
    })
}

pub fn user_info(v: &Json) -> Option<UserInfo> {
    Some(UserInfo {
        id: v.str("id")?,
        username: v.str("username"),
        display_name: v.str("display_name")?,
        role: ServerRole::parse(v.get("role")?.as_str()?)?,
        guest: v.flag("guest"),
    })
}

fn limits(v: &Json) -> Option<Limits> {
    Some(Limits {
        max_text_chars: v.u32("max_text_chars")?,
        max_nick_chars: v.u32("max_nick_chars")?,
        max_room_chars: v.u32("max_room_chars")?,
        max_frame_bytes: v.u32("max_frame_bytes")?,
        max_rooms_per_connection: v.u32("max_rooms_per_connection")?,
        max_history: v.u32("max_history")?,
        messages_per_sec: v.u32("messages_per_sec")?,
        message_burst: v.u32("message_burst")?,
    })
}

fn error_code(s: &str) -> Option<ErrorCode> {
    ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
}

/// Encodes a request the browser sends (the kinds it sends; others are not its to send).
pub fn encode(req: &Request) -> Option<String> {
    let mut w;
    match &req.msg {
        ClientMsg::Hello { nick, session } => {
            w = Writer::object("hello");
            w.opt_str("nick", nick.as_deref()).opt_str("session", session.as_deref());
        }
        ClientMsg::Join { room, since } => {
            w = Writer::object("join");
            w.str("room", room);
            if let Some(since) = since {
                w.uint("since", *since);
            }
        }
        ClientMsg::Leave { room } => {
            w = Writer::object("leave");
            w.str("room", room);
        }
        ClientMsg::Send { room, text, client_id, reply_to } => {
            w = Writer::object("send");
            w.str("room", room).str("text", text).str("client_id", client_id);
            if let Some(seq) = reply_to {
                w.uint("reply_to", *seq);
            }
        }
        ClientMsg::Typing { room } => {
            w = Writer::object("typing");
            w.str("room", room);
        }
        ClientMsg::History { room, before, limit } => {
            w = Writer::object("history");
            w.str("room", room).uint("before", *before).uint("limit", u64::from(*limit));
        }
        ClientMsg::ListRooms { cursor, limit } => {
            w = Writer::object("list_rooms");
            w.opt_str("cursor", cursor.as_deref());
            if let Some(limit) = limit {
                w.uint("limit", u64::from(*limit));
            }
        }
        ClientMsg::Edit { room, target, text, client_id } => {
            w = Writer::object("edit");
            w.str("room", room).uint("target", *target).str("text", text).str("client_id", client_id);
        }
        ClientMsg::Delete { room, target, client_id } => {
            w = Writer::object("delete");
            w.str("room", room).uint("target", *target).str("client_id", client_id);
        }
        ClientMsg::React { room, target, emoji, on } => {
            w = Writer::object("react");
            w.str("room", room).uint("target", *target).str("emoji", emoji).bool("on", *on);
        }
        ClientMsg::Read { room, seq } => {
            w = Writer::object("read");
            w.str("room", room).uint("seq", *seq);
        }
        _ => return None,
    }
    w.opt_str("ref", req.reference.as_deref());
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            quote: Some(Quote { nick: "Bob".into(), text: "the original".into(), deleted: false }),
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
        assert!(matches!(decode(joined), Some(ServerMsg::Joined { role: Some(RoomRole::Owner), .. })));
        assert_eq!(decode(r#"{"type":"search_results","query":"q","hits":[],"has_more":false}"#), None);
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
            Some(ServerMsg::MemberUpdate { role: Some(RoomRole::Owner), banned: None, muted: None, .. })
        ));
        assert_eq!(decode(r#"{"type":"kicked","room":"r"}"#), None, "no by");
        assert_eq!(decode(r#"{"type":"ack","ref":"x"}"#), None);
        assert_eq!(decode(r#"{"type":"dance"}"#), None);
        assert_eq!(decode("not json"), None);
        assert_eq!(decode(r#"{"type":"message","room":"r"}"#), None, "missing fields");
        assert_eq!(decode(r#"{"type":"message","room":"r","seq":1.5}"#), None, "not an integer");
    }

    /// Every request the browser sends is the JSON serde writes for it.
    #[test]
    fn requests_encode_as_the_server_decodes_them() {
        let msgs = vec![
            ClientMsg::Hello { nick: Some("ann \"x\"".into()), session: Some("s".into()) },
            ClientMsg::Hello { nick: None, session: None },
            ClientMsg::Join { room: "r".into(), since: Some(4) },
            ClientMsg::Join { room: "r".into(), since: None },
            ClientMsg::Leave { room: "r".into() },
            ClientMsg::Send {
                room: "r".into(),
                text: "a\nb\u{1}😀".into(),
                client_id: "c".into(),
                reply_to: Some(3),
            },
            ClientMsg::Send { room: "r".into(), text: "t".into(), client_id: "c".into(), reply_to: None },
            ClientMsg::Typing { room: "r".into() },
            ClientMsg::History { room: "r".into(), before: 9, limit: 50 },
            ClientMsg::ListRooms { cursor: None, limit: None },
            ClientMsg::ListRooms { cursor: Some("5.a".into()), limit: Some(10) },
            ClientMsg::Edit { room: "r".into(), target: 3, text: "new".into(), client_id: "e".into() },
            ClientMsg::Delete { room: "r".into(), target: 3, client_id: "d".into() },
            ClientMsg::React { room: "r".into(), target: 3, emoji: "🎉".into(), on: false },
            ClientMsg::Read { room: "r".into(), seq: 12 },
        ];
        for msg in msgs {
            for reference in [None, Some("7".to_owned())] {
                let req = Request { msg: msg.clone(), reference };
                let ours: serde_json::Value = serde_json::from_str(&encode(&req).unwrap()).unwrap();
                assert_eq!(ours, serde_json::to_value(&req).unwrap(), "{req:?}");
                assert_eq!(Request::decode(&encode(&req).unwrap()).0, Ok(req.msg.clone()));
            }
        }
        let other = Request { msg: ClientMsg::OpenDm { username: "u".into() }, reference: None };
        assert_eq!(encode(&other), None, "not the browser's to send");
    }
}
