//! Property tests for what arrives on the wire.
//!
//! - The decoder: whatever the text, `ClientMsg::decode` returns (never panics); what it
//!   accepts re-encodes and decodes to the same value; what it refuses is `bad_frame` or
//!   `unknown_type`, and `unknown_type` exactly when the frame is an object whose `"type"`
//!   is a string the protocol does not know. Every `ClientMsg` round-trips.
//! - The connection handler: against one real server, any sequence of text frames (junk,
//!   arbitrary JSON, valid-but-odd requests) leaves the connection open and answering, and
//!   no server task panics or gets stuck.
//!
//! The cargo-fuzz target in fuzz/ checks the decoder property with coverage guidance
//! (docs/FUZZING.md).

mod common;

use common::{TestApp, WAIT, spawn_with};
use confab::protocol::{ClientMsg, ErrorCode, RoomRole, ServerMsg, Visibility};
use proptest::{prelude::*, sample::select, strategy::ValueTree, test_runner::TestRunner};
use serde_json::{Number, Value, json};
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

// Every `type` a client may send: the protocol's own list (`variant` below is kept in
// step with it by `decoder_inputs_reach_every_variant`).
use confab::protocol::CLIENT_TYPES;
/// Every field name a client frame uses besides `type`.
const FIELDS: [&str; 19] = [
    "nick",
    "session",
    "room",
    "since",
    "text",
    "client_id",
    "before",
    "limit",
    "visibility",
    "topic",
    "username",
    "role",
    "cursor",
    "target",
    "emoji",
    "on",
    "reply_to",
    "seq",
    "query",
];
/// Near misses and other names worth trying as a type or a key.
const ODD_WORDS: [&str; 12] = [
    "",
    "Hello",
    "HELLO",
    " hello",
    "list-rooms",
    "listRooms",
    "ListRooms",
    "welcome",
    "message",
    "error",
    "__proto__",
    "type",
];
/// Frames sent to the server stay under this; over-size frames are another test's concern.
const MAX_FRAME: usize = 8 * 1024;

/// `cases` test cases, or as many as PROPTEST_CASES says (for a longer run by hand).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig::with_cases(cases)
}

/// Index of the variant. No wildcard arm: a new variant fails to compile here, a reminder
/// to teach `arb_client_msg` about it.
fn variant(msg: &ClientMsg) -> usize {
    match msg {
        ClientMsg::Hello { .. } => 0,
        ClientMsg::Join { .. } => 1,
        ClientMsg::Leave { .. } => 2,
        ClientMsg::Send { .. } => 3,
        ClientMsg::Typing { .. } => 4,
        ClientMsg::History { .. } => 5,
        ClientMsg::ListRooms { .. } => 6,
        ClientMsg::CreateRoom { .. } => 7,
        ClientMsg::Invite { .. } => 8,
        ClientMsg::Kick { .. } => 9,
        ClientMsg::Ban { .. } => 10,
        ClientMsg::Unban { .. } => 11,
        ClientMsg::Mute { .. } => 12,
        ClientMsg::Unmute { .. } => 13,
        ClientMsg::SetRole { .. } => 14,
        ClientMsg::SetTopic { .. } => 15,
        ClientMsg::OpenDm { .. } => 16,
        ClientMsg::Edit { .. } => 17,
        ClientMsg::Delete { .. } => 18,
        ClientMsg::React { .. } => 19,
        ClientMsg::Read { .. } => 20,
        ClientMsg::Search { .. } => 21,
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn words(list: &[&'static str]) -> impl Strategy<Value = String> + use<> {
    select(list.to_vec()).prop_map(str::to_owned)
}

/// A word the decoder cares about: type names, field names, near misses.
fn known_word() -> BoxedStrategy<String> {
    prop_oneof![words(&CLIENT_TYPES), words(&FIELDS), words(&ODD_WORDS)].boxed()
}

/// JSON numbers, with the edges of u32 / i64 / u64 and some floats.
fn arb_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(1.0),
            json!(0.5),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::MAX),
            json!(i64::MAX as u64 + 1),
            json!(u64::MAX),
            json!(i64::MIN),
        ]),
    ]
    .boxed()
}

fn arb_json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        any::<String>().prop_map(Value::String),
        known_word().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value: arrays and objects nested a few levels, keys often the protocol's own.
fn arb_json() -> BoxedStrategy<Value> {
    let key = prop_oneof![2 => known_word(), 1 => any::<String>()];
    arb_json_leaf()
        .prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Any `ClientMsg`, every variant, any field values.
fn arb_client_msg() -> BoxedStrategy<ClientMsg> {
    let s = any::<String>;
    prop_oneof![
        (proptest::option::of(s()), proptest::option::of(s()))
            .prop_map(|(nick, session)| ClientMsg::Hello { nick, session }),
        (s(), proptest::option::of(any::<u64>())).prop_map(|(room, since)| ClientMsg::Join { room, since }),
        s().prop_map(|room| ClientMsg::Leave { room }),
        (s(), s(), s(), proptest::option::of(any::<u64>())).prop_map(|(room, text, client_id, reply_to)| {
            ClientMsg::Send { room, text, client_id, reply_to }
        }),
        (s(), any::<u64>(), s(), s()).prop_map(|(room, target, text, client_id)| ClientMsg::Edit {
            room,
            target,
            text,
            client_id
        }),
        (s(), any::<u64>(), s()).prop_map(|(room, target, client_id)| ClientMsg::Delete {
            room,
            target,
            client_id
        }),
        (s(), any::<u64>(), s(), any::<bool>()).prop_map(|(room, target, emoji, on)| ClientMsg::React {
            room,
            target,
            emoji,
            on
        }),
        (s(), any::<u64>()).prop_map(|(room, seq)| ClientMsg::Read { room, seq }),
        (
            s(),
            proptest::option::of(s()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(query, room, before, limit)| ClientMsg::Search {
                query,
                room,
                before,
                limit
            }),
        s().prop_map(|room| ClientMsg::Typing { room }),
        (s(), any::<u64>(), any::<u32>()).prop_map(|(room, before, limit)| ClientMsg::History {
            room,
            before,
            limit
        }),
        Just(ClientMsg::ListRooms { cursor: None, limit: None }),
        (s(), any::<bool>(), proptest::option::of(s())).prop_map(|(room, private, topic)| {
            ClientMsg::CreateRoom {
                room,
                visibility: if private { Visibility::Private } else { Visibility::Public },
                topic,
            }
        }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Invite { room, username }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Kick { room, username }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Ban { room, username }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Unban { room, username }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Mute { room, username }),
        (s(), s()).prop_map(|(room, username)| ClientMsg::Unmute { room, username }),
        (s(), s(), any::<bool>()).prop_map(|(room, username, m)| ClientMsg::SetRole {
            room,
            username,
            role: if m { RoomRole::Moderator } else { RoomRole::Member }
        }),
        (s(), s()).prop_map(|(room, topic)| ClientMsg::SetTopic { room, topic }),
        s().prop_map(|username| ClientMsg::OpenDm { username }),
    ]
    .boxed()
}

/// Writes an object with its members in the given order; duplicate keys stay duplicated.
fn object_text(members: &[(String, Value)]) -> String {
    let body: Vec<String> =
        members.iter().map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v)).collect();
    format!("{{{}}}", body.join(","))
}

/// An object that looks like a client frame: a `type` (usually a real one) among fields
/// named like the protocol's, with values of the right or the wrong kind, in any order.
fn client_like_object() -> BoxedStrategy<String> {
    let type_value = prop_oneof![
        6 => words(&CLIENT_TYPES).prop_map(Value::String),
        1 => known_word().prop_map(Value::String),
        1 => arb_json_leaf(),
    ];
    let field_value = prop_oneof![
        4 => prop_oneof![known_word(), "[a-z0-9_-]{0,8}", any::<String>()].prop_map(Value::String),
        3 => arb_number(),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => arb_json(),
    ];
    let field = (prop_oneof![6 => words(&FIELDS), 1 => known_word(), 1 => any::<String>()], field_value);
    (
        prop::option::weighted(0.95, type_value),
        prop::collection::vec(field, 0..7),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(ty, mut fields, at)| {
            if let Some(ty) = ty {
                let at = at.index(fields.len() + 1);
                fields.insert(at, ("type".to_owned(), ty));
            }
            object_text(&fields)
        })
        .boxed()
}

/// A valid frame, then bent: members shuffled, one dropped, one added, or one value swapped.
fn mutated_valid_frame() -> BoxedStrategy<String> {
    let members = arb_client_msg().prop_flat_map(|msg| {
        let Value::Object(obj) = serde_json::to_value(&msg).expect("serialises") else {
            unreachable!("a ClientMsg is an object")
        };
        Just(obj.into_iter().collect::<Vec<_>>()).prop_shuffle()
    });
    let edit = prop_oneof![
        3 => Just(None),
        1 => any::<prop::sample::Index>().prop_map(|i| Some((i, None))),
        2 => (any::<prop::sample::Index>(), arb_json_leaf()).prop_map(|(i, v)| Some((i, Some(v)))),
    ];
    let extra = proptest::option::weighted(0.3, (known_word(), arb_json()));
    (members, edit, extra)
        .prop_map(|(mut members, edit, extra)| {
            match edit {
                // Swap a value (perhaps of `type` itself) for another of any kind.
                Some((i, Some(value))) => {
                    let i = i.index(members.len());
                    members[i].1 = value;
                }
                // Drop one member.
                Some((i, None)) => {
                    members.remove(i.index(members.len()));
                }
                None => {}
            }
            if let Some(member) = extra {
                members.push(member);
            }
            object_text(&members)
        })
        .boxed()
}

/// Text made of JSON-ish pieces: brackets, quotes, the protocol's words, numbers, escapes.
fn json_ish_text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        4 => words(&[
            "{", "}", "[", "]", ",", ":", "\"", " ", "\n", "\t", "null", "true", "false", "-", "+", ".", "e",
            "0", "00", "1e999", "-0", "NaN", "\\", "\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\x41",
            "\"type\"", "\"type\":", "\"\"", "/*", "*/", "\u{feff}", "\u{0}",
        ]),
        3 => known_word().prop_map(|w| format!("\"{w}\"")),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => ".{0,8}",
    ];
    prop::collection::vec(piece, 0..48).prop_map(|pieces| pieces.concat()).boxed()
}

/// Large inputs: long runs, deep nesting, a valid frame with a huge text.
fn long_text() -> BoxedStrategy<String> {
    prop_oneof![
        (0usize..200_000).prop_map(|n| "a".repeat(n)),
        (0usize..5_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (0usize..5_000).prop_map(|n| "[".repeat(n)),
        (0usize..2_000).prop_map(|n| format!("{}{}", r#"{"type":"join","room":"#.repeat(n), "}".repeat(n))),
        (0usize..50_000, any::<char>()).prop_map(|(n, c)| {
            json!({"type": "send", "room": "r", "text": c.to_string().repeat(n), "client_id": "c"})
                .to_string()
        }),
        (0usize..20_000).prop_map(|n| format!(r#"{{"type":"list_rooms","pad":"{}"}}"#, " ".repeat(n))),
    ]
    .boxed()
}

/// JSON text cut short at some character.
fn truncated_json() -> BoxedStrategy<String> {
    (prop_oneof![arb_json().prop_map(|v| v.to_string()), mutated_valid_frame()], any::<prop::sample::Index>())
        .prop_map(|(text, at)| text.chars().take(at.index(text.chars().count() + 1)).collect())
        .boxed()
}

/// Everything the decoder property is checked on.
fn decoder_input() -> BoxedStrategy<String> {
    prop_oneof![
        2 => any::<String>(),
        2 => json_ish_text(),
        3 => arb_json().prop_map(|v| v.to_string()),
        1 => arb_json().prop_map(|v| serde_json::to_string_pretty(&v).expect("serialises")),
        3 => client_like_object(),
        3 => mutated_valid_frame(),
        1 => truncated_json(),
        1 => long_text(),
    ]
    .boxed()
}

// Requests a server must handle without trouble, with names and values at and past the edges.

fn room_name() -> BoxedStrategy<String> {
    prop_oneof![
        // A few shared rooms, so connections find history, and joins repeat.
        4 => words(&["lobby", "pt-a", "pt_b", "pt0"]),
        2 => "[a-z0-9_-]{1,64}",
        2 => prop_oneof![
            Just(String::new()),
            Just("a".repeat(64)),
            Just("a".repeat(65)),
            Just("Lobby".to_owned()),
            Just("with space".to_owned()),
            Just("ünï".to_owned()),
            Just("a/b".to_owned()),
            Just(" lobby".to_owned()),
        ],
        2 => ".{0,80}",
    ]
    .boxed()
}

fn message_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => words(&["", " ", " \n\t ", "hi", "<script>alert(1)</script>", "see https://example.org/x", "\u{0}"]),
        4 => ".{0,200}",
        1 => (3_990usize..4_010).prop_map(|n| "x".repeat(n)),
        // Two bytes a character: the limit counts characters, the frame is about 8 KB.
        1 => (3_995usize..4_005).prop_map(|n| "é".repeat(n)),
    ]
    .boxed()
}

fn client_id() -> BoxedStrategy<String> {
    prop_oneof![
        // Repeats exercise the idempotent-retry path.
        4 => words(&["c1", "c2", "c3"]),
        2 => "[!-~]{1,64}",
        1 => prop_oneof![
            Just(String::new()),
            Just("has space".to_owned()),
            Just("x".repeat(64)),
            Just("x".repeat(65)),
        ],
        1 => ".{0,20}",
    ]
    .boxed()
}

fn seq_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0u64..10,
        1 => any::<u64>(),
        1 => select(vec![i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX]),
    ]
}

/// A well-formed request, often refused: bad names, empty or long texts, not joined, ….
fn odd_request() -> BoxedStrategy<String> {
    let limit = prop_oneof![Just(None), any::<u32>().prop_map(Some), (0u32..3).prop_map(Some)];
    prop_oneof![
        3 => (room_name(), proptest::option::of(seq_value())).prop_map(|(room, since)| {
            let mut frame = json!({"type": "join", "room": room});
            if let Some(since) = since {
                frame["since"] = json!(since);
            }
            frame
        }),
        1 => room_name().prop_map(|room| json!({"type": "leave", "room": room})),
        4 => (room_name(), message_text(), client_id()).prop_map(|(room, text, id)| {
            json!({"type": "send", "room": room, "text": text, "client_id": id})
        }),
        2 => room_name().prop_map(|room| json!({"type": "typing", "room": room})),
        2 => (room_name(), seq_value(), limit).prop_map(|(room, before, limit)| {
            let mut frame = json!({"type": "history", "room": room, "before": before});
            if let Some(limit) = limit {
                frame["limit"] = json!(limit);
            }
            frame
        }),
        1 => Just(json!({"type": "list_rooms"})),
        1 => (".{0,40}", proptest::option::of(".{0,40}")).prop_map(|(nick, session)| {
            json!({"type": "hello", "nick": nick, "session": session})
        }),
    ]
    .prop_map(|frame| frame.to_string())
    .boxed()
}

/// One frame sent after hello.
fn any_frame() -> BoxedStrategy<String> {
    prop_oneof![
        4 => odd_request(),
        2 => any::<String>(),
        2 => arb_json().prop_map(|v| v.to_string()),
        2 => client_like_object(),
        2 => mutated_valid_frame(),
        1 => json_ish_text(),
    ]
    .prop_filter("frames stay under 8 KiB", |f| f.len() < MAX_FRAME)
    .boxed()
}

/// One frame sent before hello: anything but a hello the server would accept.
fn junk_before_hello() -> BoxedStrategy<String> {
    any_frame()
        .prop_filter("not a hello", |f| !matches!(ClientMsg::decode(f), Ok(ClientMsg::Hello { .. })))
        .boxed()
}

// ---------------------------------------------------------------------------------------
// The decoder
// ---------------------------------------------------------------------------------------

/// The code a refused frame must get: `unknown_type` exactly for an object whose `"type"` is
/// a string the protocol does not know, `bad_frame` for everything else.
fn expected_code(text: &str) -> ErrorCode {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => match obj.get("type").and_then(Value::as_str) {
            Some(t) if !CLIENT_TYPES.contains(&t) => ErrorCode::UnknownType,
            _ => ErrorCode::BadFrame,
        },
        _ => ErrorCode::BadFrame,
    }
}

/// The decoder property for one input (returning is the "never panics" part).
fn check_decode(text: &str) -> Result<(), TestCaseError> {
    match ClientMsg::decode(text) {
        Ok(msg) => {
            let wire = serde_json::to_string(&msg).expect("a ClientMsg serialises");
            prop_assert_eq!(ClientMsg::decode(&wire), Ok(msg.clone()), "re-encoded as {}", wire);
            let pretty = serde_json::to_string_pretty(&msg).expect("a ClientMsg serialises");
            prop_assert_eq!(ClientMsg::decode(&pretty), Ok(msg));
        }
        Err(err) => {
            prop_assert!(
                matches!(err.code, ErrorCode::BadFrame | ErrorCode::UnknownType),
                "decode may refuse only with bad_frame or unknown_type, got {:?}",
                err
            );
            prop_assert!(!err.message.is_empty(), "an error says why");
            prop_assert_eq!(err.code, expected_code(text), "{}", err.message);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decode_never_panics_on_any_string(text in any::<String>()) {
        check_decode(&text)?;
    }

    #[test]
    fn decode_never_panics_and_round_trips(text in decoder_input()) {
        check_decode(&text)?;
    }

    #[test]
    fn decode_never_panics_on_any_json_value(value in arb_json()) {
        check_decode(&value.to_string())?;
    }

    #[test]
    fn every_client_msg_round_trips(msg in arb_client_msg()) {
        let wire = serde_json::to_string(&msg).expect("serialises");
        prop_assert_eq!(ClientMsg::decode(&wire), Ok(msg.clone()), "wire {}", wire);
        let value = serde_json::to_value(&msg).expect("serialises");
        prop_assert_eq!(&value["type"], &json!(CLIENT_TYPES[variant(&msg)]));
        prop_assert_eq!(serde_json::from_value::<ClientMsg>(value).ok(), Some(msg));
    }
}

/// Inputs worth keeping whatever the generators happen to find.
#[test]
fn decode_handles_known_edge_cases() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}{}", r#"{"type":"#.repeat(10_000), "}".repeat(10_000));
    let cases = [
        "",
        " ",
        "null",
        "0",
        "\"hello\"",
        "[]",
        "{}",
        "\u{feff}{\"type\":\"list_rooms\"}",
        r#"{"type":null}"#,
        r#"{"type":7}"#,
        r#"{"type":"hello"}"#,
        r#"{"type":"hello","nick":"a","session":null}"#,
        r#"{"type":"hello","nick":"a","type":"join"}"#,
        r#"{"type":"dance","type":"hello","nick":"a"}"#,
        r#"{"type":"hello","nick":"\ud800"}"#,
        r#"{"type":"hello","nick":"\u0000"}"#,
        r#"{"type":"join","room":"r","since":-1}"#,
        r#"{"type":"join","room":"r","since":1.0}"#,
        r#"{"type":"join","room":"r","since":18446744073709551615}"#,
        r#"{"type":"join","room":"r","since":18446744073709551616}"#,
        r#"{"type":"join","room":"r","since":1e999}"#,
        r#"{"type":"history","room":"r","before":1,"limit":-1}"#,
        r#"{"type":"history","room":"r","before":1,"limit":4294967296}"#,
        r#"{"type":"list_rooms","extra":[1,{"type":"hello"}]}"#,
        r#"{"type":"list_rooms"} trailing"#,
        r#"{"type":"list_rooms"}{"type":"list_rooms"}"#,
        r#"{"type":"send","room":"r","text":"t"}"#,
        r#"{"TYPE":"list_rooms"}"#,
        &deep,
        &deep_object,
    ];
    for text in cases {
        if let Err(err) = check_decode(text) {
            panic!("{:?}: {err}", text.chars().take(80).collect::<String>());
        }
    }
}

/// The generators reach every variant through the decoder, so the round-trip half of the
/// property is exercised, not only the refusals.
#[test]
fn decoder_inputs_reach_every_variant() {
    let mut runner = TestRunner::deterministic();
    let strategy = decoder_input();
    let (mut accepted, mut refused) = ([0usize; CLIENT_TYPES.len()], [0usize; 2]);
    for _ in 0..8_000 {
        let text = strategy.new_tree(&mut runner).expect("a value").current();
        match ClientMsg::decode(&text) {
            Ok(msg) => accepted[variant(&msg)] += 1,
            Err(err) => refused[usize::from(err.code == ErrorCode::UnknownType)] += 1,
        }
    }
    assert!(accepted.iter().all(|&n| n > 0), "accepted per variant {accepted:?}");
    assert!(refused.iter().all(|&n| n > 0), "refused as bad_frame / unknown_type {refused:?}");
}

// ---------------------------------------------------------------------------------------
// The connection handler
// ---------------------------------------------------------------------------------------

/// Name of the server runtime's threads, so a panic in a server task can be told apart.
const SERVER_THREAD: &str = "proptest-server";
/// Panics seen on server threads (tasks and blocking work): each would be a server bug.
static SERVER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_NICK: AtomicU64 = AtomicU64::new(0);

fn record_server_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(SERVER_THREAD) {
            SERVER_PANICS.lock().unwrap_or_else(|p| p.into_inner()).push(info.to_string());
        }
        previous(info);
    }));
}

/// One case: junk before hello, hello, the frames, then `list_rooms` must be answered.
async fn survive(app: &TestApp, before_hello: &[String], frames: &[String]) -> Result<(), TestCaseError> {
    let nick = format!("pt{}", NEXT_NICK.fetch_add(1, Ordering::Relaxed));
    let mut c = app.client().await;

    // Before hello, each frame gets exactly one refusal.
    for frame in before_hello {
        c.send_text(frame).await;
    }
    c.send(json!({"type": "hello", "nick": nick})).await;
    for frame in before_hello {
        match c.recv().await {
            ServerMsg::Error {
                code: ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::HelloRequired,
                ..
            } => {}
            other => prop_assert!(false, "before hello, {:?} got {:?}", frame, other),
        }
    }
    match c.recv().await {
        ServerMsg::Welcome { nick: got, .. } => prop_assert_eq!(got, nick),
        other => prop_assert!(false, "expected welcome, got {:?}", other),
    }

    for frame in frames {
        c.send_text(frame).await;
    }
    c.send(json!({"type": "list_rooms", "ref": "final-probe"})).await;

    // The probe is answered (its `rooms`, or `rate_limited` if the frames used up the
    // list rate), carrying its ref, after everything before it. Every frame the server
    // sends on the way must be a well-formed ServerMsg (`recv` checks), and none may
    // report an internal error.
    let answered = tokio::time::timeout(WAIT * 2, async {
        loop {
            let msg = c.recv().await;
            if let ServerMsg::Error { code: ErrorCode::Internal, message, .. } = &msg {
                return Err(format!("internal error: {message}"));
            }
            if msg.reference() == Some("final-probe") {
                return match msg {
                    ServerMsg::Rooms { .. } | ServerMsg::Error { code: ErrorCode::RateLimited, .. } => Ok(()),
                    other => Err(format!("the probe got {other:?}")),
                };
            }
        }
    })
    .await;
    match answered {
        Ok(Ok(())) => {}
        Ok(Err(problem)) => prop_assert!(false, "{}", problem),
        Err(_) => prop_assert!(false, "stalled: the final list_rooms was never answered"),
    }
    let _ = c.ws.close(None).await;
    Ok(())
}

#[test]
fn connection_survives_any_frame_sequence() {
    record_server_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = rt.block_on(spawn_with(|c| {
        c.msg_rate = 100_000;
        c.msg_burst = 100_000;
        c.abuse_strikes = 100_000;
        // Low, so some sequences run into it.
        c.max_rooms_per_conn = 4;
    }));

    // A failing case can take seconds (timeouts): bound the shrinking.
    let config = ProptestConfig { max_shrink_time: 120_000, ..config(64) };
    proptest!(config, |(
        before_hello in prop::collection::vec(junk_before_hello(), 0..3),
        frames in prop::collection::vec(any_frame(), 1..20),
    )| {
        rt.block_on(survive(&app, &before_hello, &frames))?;
    });

    rt.block_on(async {
        // Every connection has ended, and its task with it: a connection task that panicked
        // never decrements `connections`; a stuck one keeps `connection_tasks` up.
        let mut waited = Duration::ZERO;
        loop {
            let health: Value = reqwest::get(app.url("/healthz")).await.unwrap().json().await.unwrap();
            assert_eq!(health["status"], "ok", "{health}");
            if health["connections"] == 0 && health["connection_tasks"] == 0 {
                break;
            }
            assert!(waited < WAIT * 2, "connections did not wind down: {health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
    });
    let panics = SERVER_PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(panics.is_empty(), "server tasks panicked: {panics:#?}");
    // The server's own task ends cleanly (it would return the panic otherwise).
    rt.block_on(app.stop());
}
