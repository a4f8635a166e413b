//! Edge promises against the real server: replies bounded in bytes, one byte budget per
//! connection, rooms that are forgotten and the paginated directory, a client that waits
//! as told, presence past 256 people, store failures, read rate limits, close frames
//! that reach the client, and `ref` echoes.

mod common;

use common::{Client, TestApp, WAIT, eventually, seqs, small_window_user, spawn_app, spawn_on, spawn_with};
use confab::protocol::{ChatMessage, ErrorCode, PresenceState, RoomEvent, RoomInfo, ServerMsg};
use confab::server::{
    StartError,
    config::Config,
    store::{StoreError, sqlite::SqliteStore},
};
use futures::StreamExt;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::atomic::Ordering,
    time::Duration,
};
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

// --- Helpers ---

const TS: i64 = 1_700_000_000_000;

fn chat(room: &str, seq: u64, text: String, ts: i64) -> ChatMessage {
    ChatMessage {
        room: room.into(),
        seq,
        nick: "ann".into(),
        text,
        ts,
        client_id: format!("c-{seq}"),
        ..Default::default()
    }
}

/// A database file holding `messages`, written before any server runs on it.
fn database(messages: &[ChatMessage]) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confab.db");
    let store = SqliteStore::open(&path, false).unwrap();
    for batch in messages.chunks(1000) {
        let mut events: Vec<RoomEvent> = batch.iter().cloned().map(RoomEvent::Message).collect();
        store.append(&mut events).unwrap();
    }
    drop(store);
    (dir, path)
}

/// Text of message `seq` of the big room: 4,000 characters, mostly ASCII, and every few
/// messages the costliest encodings: 4-byte characters, and characters JSON escapes.
fn big_text(seq: u64) -> String {
    match seq % 10 {
        // Escaped as \u0001: 6 bytes of JSON each.
        0 => "\u{1}".repeat(4000),
        // 4 bytes of UTF-8 each.
        5 => "😀".repeat(4000),
        // Escaped as \" and \\: 2 bytes each.
        3 => "\"\\".repeat(2000),
        _ => {
            let prefix = format!("{seq}:");
            let pad = "x".repeat(4000 - prefix.len());
            prefix + &pad
        }
    }
}

/// 500 messages of 4,000 characters in room `big`.
fn big_room() -> Vec<ChatMessage> {
    (1..=500).map(|s| chat("big", s, big_text(s), TS + s as i64)).collect()
}

fn json_len(m: &ChatMessage) -> usize {
    serde_json::to_string(m).unwrap().len()
}

/// Text that encodes to exactly `bytes` bytes of JSON (at most 23,000): control
/// characters (6 bytes each) and ASCII, at most 4,000 characters in all.
fn text_of_json_bytes(bytes: usize) -> String {
    assert!((1..=23_000).contains(&bytes));
    let escaped = if bytes > 4000 { (bytes - 4000).div_ceil(5) } else { 0 };
    let plain = bytes - 6 * escaped;
    let text = "\u{1}".repeat(escaped) + &"x".repeat(plain);
    assert!(text.chars().count() <= 4000);
    text
}

/// Messages of `room`, newest first from seq `newest` down, whose sizes as a page counts
/// them (their JSON plus one separator byte each) add up to exactly `target` bytes.
fn exactly_filling(room: &str, newest: u64, target: usize) -> Vec<ChatMessage> {
    const MOST: usize = 23_000;
    let mut out = Vec::new();
    let mut left = target;
    let mut seq = newest;
    while left > 0 {
        let base = json_len(&chat(room, seq, String::new(), TS)) + 1;
        let room_for_text = left.checked_sub(base).expect("target reachable");
        let text = if room_for_text <= MOST {
            room_for_text
        } else if room_for_text - MOST < 1000 {
            // Leave enough for one more message of its own.
            MOST - 1000
        } else {
            MOST
        };
        let m = chat(room, seq, text_of_json_bytes(text), TS);
        assert_eq!(json_len(&m) + 1, base + text);
        out.push(m);
        left -= base + text;
        seq -= 1;
    }
    out
}

/// Next frame, raw and decoded.
async fn recv_raw(c: &mut Client) -> (String, ServerMsg) {
    let raw = c.recv_text().await;
    let msg = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("bad server frame {raw}: {e}"));
    (raw, msg)
}

/// Next frame that is not room traffic (messages, presence, typing): a reply or an error.
async fn reply(c: &mut Client) -> ServerMsg {
    c.recv_until(|m| {
        !matches!(m, ServerMsg::Message(_) | ServerMsg::Presence { .. } | ServerMsg::Typing { .. })
    })
    .await
}

/// Sends a request and returns its reply, raw and decoded, skipping room traffic. A
/// `rate_limited` answer is waited out as it says, then the same request is sent again.
async fn ask(c: &mut Client, request: &Value) -> (String, ServerMsg) {
    for _ in 0..50 {
        c.send(request.clone()).await;
        let wait = loop {
            let (raw, msg) = recv_raw(c).await;
            match msg {
                ServerMsg::Message(_) | ServerMsg::Presence { .. } | ServerMsg::Typing { .. } => {}
                ServerMsg::Error { code: ErrorCode::RateLimited, retry_after_ms, .. } => {
                    break retry_after_ms.expect("rate_limited says when to retry");
                }
                _ => return (raw, msg),
            }
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    panic!("{request} was refused 50 times");
}

/// Reads to the end of the connection: every text frame, then the close frame's code.
/// Anything else (an IO error, a reset, the stream ending without a close) fails.
async fn read_to_close(c: &mut Client) -> (Vec<String>, u16) {
    let mut texts = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), c.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close frame in time, after {} text frames", texts.len()));
        match frame {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Close(Some(cf)))) => return (texts, u16::from(cf.code)),
            Some(Ok(Message::Close(None))) => return (texts, 1005),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                panic!("an error instead of a close frame, after {} text frames: {e}", texts.len())
            }
            None => panic!("the stream ended without a close frame, after {} text frames", texts.len()),
        }
    }
}

async fn healthz(app: &TestApp) -> Value {
    reqwest::get(app.url("/healthz")).await.unwrap().json().await.unwrap()
}

fn decode(raw: &str) -> ServerMsg {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("bad server frame {raw}: {e}"))
}

// --- 1. Big replies are bounded in bytes ---

/// Promise 1: `history {before: 501, limit: 500}` over 500 messages of 4,000 characters
/// (some 4-byte characters, some JSON-escaped to 6 bytes) is answered, not closed, with a
/// page within `reply_limit()`, `has_more`, contiguous and ending at 500; paging back with
/// `before` = the first seq yields every message 1..=500 exactly once.
#[tokio::test]
async fn history_of_long_messages_is_paged_within_the_reply_limit() {
    let messages = big_room();
    let (_dir, db) = database(&messages);
    let app = spawn_on(db, |_| {}).await;
    let limit = app.hub.config.reply_limit();
    let (mut c, _) = app.user("reader").await;
    c.join("big", Some(500), 0).await;
    let mut got: Vec<ChatMessage> = Vec::new();
    let mut before = 501;
    let mut pages = 0;
    loop {
        let request = json!({"type": "history", "room": "big", "before": before, "limit": 500});
        let (raw, msg) = ask(&mut c, &request).await;
        let ServerMsg::History { messages: page, has_more, .. } = msg else {
            panic!("expected history before {before}, got {msg:?}")
        };
        pages += 1;
        assert!(raw.len() <= limit, "history page {pages} is {} bytes, over the limit of {limit}", raw.len());
        assert!(!page.is_empty(), "the page before {before} is empty");
        assert_eq!(
            seqs(&page),
            (page[0].seq..before).collect::<Vec<_>>(),
            "contiguous, ending before {before}"
        );
        before = page[0].seq;
        assert_eq!(has_more, before > 1, "has_more with the page starting at {before}");
        got.splice(0..0, page);
        if !has_more {
            break;
        }
    }
    assert!(pages > 1, "500 long messages do not fit one page");
    assert_eq!(got.len(), 500);
    assert!(got == messages, "every message exactly once, as stored");
}

/// Promise 1: a `join` with `since: 0` in a room of 500 long messages answers `joined`
/// with `truncated: true` and replays the newest messages, contiguous up to `head`, all
/// of it (`joined` and the replay) within `reply_limit()`. A join without `since` is
/// bounded the same way.
#[tokio::test]
async fn a_join_replay_of_long_messages_fits_the_reply_limit() {
    let (_dir, db) = database(&big_room());
    let app = spawn_on(db, |_| {}).await;
    let limit = app.hub.config.reply_limit();
    for since in [Some(0), None] {
        let (mut c, _) = app.user(&format!("joiner-{}", since.is_some())).await;
        let mut frame = json!({"type": "join", "room": "big"});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        c.send(frame).await;
        let (raw, joined) = recv_raw(&mut c).await;
        let ServerMsg::Joined { head, truncated, .. } = joined else {
            panic!("expected joined, got {joined:?}")
        };
        assert_eq!(head, 500);
        if since.is_some() {
            assert!(truncated, "since 0 cannot replay 500 long messages: truncated");
        }
        let mut total = raw.len();
        let mut replay: Vec<ChatMessage> = Vec::new();
        while replay.last().map(|m| m.seq) != Some(head) {
            let (raw, msg) = recv_raw(&mut c).await;
            match msg {
                ServerMsg::Message(m) => {
                    total += raw.len();
                    replay.push(m);
                }
                other => panic!("since {since:?}: expected the replay up to {head}, got {other:?}"),
            }
        }
        assert!(total <= limit, "since {since:?}: joined and its replay are {total} bytes, over {limit}");
        let first = replay[0].seq;
        assert_eq!(seqs(&replay), (first..=head).collect::<Vec<_>>(), "since {since:?}: contiguous");
        assert!(replay.iter().all(|m| m.text == big_text(m.seq)));
    }
}

/// Promise 1: `GET /api/rooms/{room}/messages?limit=500` is bounded by `reply_limit()`
/// too, says `has_more`, and paging back with `before` yields every message once.
#[tokio::test]
async fn the_messages_api_pages_long_messages_within_the_reply_limit() {
    let messages = big_room();
    let (_dir, db) = database(&messages);
    let app = spawn_on(db, |_| {}).await;
    let limit = app.hub.config.reply_limit();
    let mut got: Vec<ChatMessage> = Vec::new();
    let mut before = u64::MAX;
    let mut pages = 0;
    loop {
        let url = if before == u64::MAX {
            app.url("/api/rooms/big/messages?limit=500")
        } else {
            app.url(&format!("/api/rooms/big/messages?limit=500&before={before}"))
        };
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        pages += 1;
        assert!(body.len() <= limit, "API page {pages} is {} bytes, over the limit of {limit}", body.len());
        let page: Value = serde_json::from_str(&body).unwrap();
        let page_messages: Vec<ChatMessage> = serde_json::from_value(page["messages"].clone()).unwrap();
        assert!(!page_messages.is_empty());
        let end = if before == u64::MAX { 500 } else { before - 1 };
        assert_eq!(seqs(&page_messages), (page_messages[0].seq..=end).collect::<Vec<_>>());
        before = page_messages[0].seq;
        let has_more = page["has_more"].as_bool().unwrap();
        assert_eq!(has_more, before > 1);
        got.splice(0..0, page_messages);
        if !has_more {
            break;
        }
    }
    assert!(pages > 1);
    assert!(got == messages, "every message exactly once, as stored");
}

/// Promise 1, at the edge: pages whose messages fill the server's budget to the byte
/// (for the API, and for `history` with the longest room name and `ref`) still fit
/// `reply_limit()` once the page's own JSON around the messages is added.
#[tokio::test]
async fn pages_that_fill_the_budget_to_the_byte_still_fit_the_reply_limit() {
    let limit = Config::defaults().reply_limit();
    let room = format!("fit-{}", "f".repeat(60));
    // Newest first: exactly limit - 256 bytes, then one of exactly 256 (together exactly
    // `limit`), then long messages that fit no page.
    let top = exactly_filling(&room, 100, limit - 256);
    let next = 100 - top.len() as u64;
    let edge = exactly_filling(&room, next, 256);
    assert_eq!(edge.len(), 1);
    let mut messages: Vec<ChatMessage> =
        (1..next).map(|s| chat(&room, s, "\u{1}".repeat(4000), TS)).collect();
    messages.extend(edge);
    messages.extend(top.into_iter().rev());
    assert_eq!(seqs(&messages), (1..=100).collect::<Vec<_>>());
    let (_dir, db) = database(&messages);
    let app = spawn_on(db, |_| {}).await;
    assert_eq!(app.hub.config.reply_limit(), limit);

    let body = reqwest::get(app.url(&format!("/api/rooms/{room}/messages?limit=500")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page: Value = serde_json::from_str(&body).unwrap();
    let got: Vec<ChatMessage> = serde_json::from_value(page["messages"].clone()).unwrap();
    assert_eq!(got.last().map(|m| m.seq), Some(100));
    assert_eq!(page["has_more"], true);
    let mut over = Vec::new();
    if body.len() > limit {
        over.push(format!(
            "GET /api/rooms/{{room}}/messages: {} messages, body {} bytes, over the limit of {limit} by {}",
            got.len(),
            body.len(),
            body.len() - limit
        ));
    }

    let (mut c, _) = app.user("edge").await;
    c.join(&room, Some(100), 0).await;
    let reference = "r".repeat(64);
    let request = json!({"type": "history", "room": room, "before": 101, "limit": 500, "ref": reference});
    let (raw, msg) = ask(&mut c, &request).await;
    let ServerMsg::History { messages: got, has_more, .. } = msg else {
        panic!("expected history, got {msg:?}")
    };
    assert!(has_more);
    assert_eq!(got.last().map(|m| m.seq), Some(100));
    if raw.len() > limit {
        over.push(format!(
            "history: {} messages, frame {} bytes, over the limit of {limit} by {}",
            got.len(),
            raw.len(),
            raw.len() - limit
        ));
    }
    assert!(over.is_empty(), "{}", over.join("; "));
}

/// Promise 1: `list_rooms {limit: 200}`, the largest room list, answers with at most 200
/// rooms (and a larger limit is clamped to 200), within `reply_limit()`; so does
/// `GET /api/rooms`. Paging on with `next` lists the rest, each room once.
#[tokio::test]
async fn room_lists_hold_at_most_200_rooms_within_the_reply_limit() {
    let rooms: Vec<ChatMessage> = (0..210)
        .map(|i| {
            let name = format!("room-{i:03}-{}", "a".repeat(55));
            assert_eq!(name.len(), 64);
            chat(&name, 1, "x".into(), TS + i)
        })
        .collect();
    let (_dir, db) = database(&rooms);
    let app = spawn_on(db, |_| {}).await;
    let limit = app.hub.config.reply_limit();
    let (mut c, _) = app.user("lister").await;
    let mut seen = BTreeSet::new();
    for asked in [200, 1000] {
        let (raw, msg) = ask(&mut c, &json!({"type": "list_rooms", "limit": asked})).await;
        let ServerMsg::Rooms { rooms, has_more, next, .. } = msg else {
            panic!("expected rooms, got {msg:?}")
        };
        assert_eq!(rooms.len(), 200, "limit {asked}");
        assert!(has_more && next.is_some());
        assert!(raw.len() <= limit);
        if asked == 200 {
            seen.extend(rooms.into_iter().map(|r| r.name));
            let request = json!({"type": "list_rooms", "limit": 200, "cursor": next});
            let (_, msg) = ask(&mut c, &request).await;
            let ServerMsg::Rooms { rooms, has_more, next, .. } = msg else { panic!("{msg:?}") };
            assert_eq!((rooms.len(), has_more, next), (10, false, None));
            seen.extend(rooms.into_iter().map(|r| r.name));
        }
    }
    assert_eq!(seen.len(), 210, "every room once");
    let body = reqwest::get(app.url("/api/rooms?limit=1000")).await.unwrap().text().await.unwrap();
    assert!(body.len() <= limit);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["rooms"].as_array().unwrap().len(), 200);
    assert_eq!(page["has_more"], true);
}

/// Promise 1, the member list: the bound counts encoded bytes of the whole `joined` reply,
/// names included. People whose nicks are all quotes (each one JSON-escaped to two bytes)
/// fill the room; a `join` with `since: 0` (a replay that fills the budget) still fits
/// `reply_limit()` in all.
#[tokio::test]
async fn a_join_reply_naming_people_with_escaped_nicks_fits_the_reply_limit() {
    let messages: Vec<ChatMessage> =
        (1..=500).map(|s| chat("q", s, "x".repeat(200), TS + s as i64)).collect();
    let (_dir, db) = database(&messages);
    let app = spawn_on(db, |c| c.reply_bytes = 64 * 1024).await;
    let limit = app.hub.config.reply_limit();
    let mut people = Vec::new();
    for i in 0..128 {
        // 32 characters, 29 of them quotes: 64 bytes of JSON for 32 bytes of nick.
        let nick = format!("{}{i:03}", "\"".repeat(29));
        let (mut c, _) = app.user(&nick).await;
        c.join("q", Some(500), 0).await;
        people.push(c);
    }
    let (mut watcher, _) = app.user("watcher").await;
    watcher.send(json!({"type": "join", "room": "q", "since": 0})).await;
    let (raw, joined) = recv_raw(&mut watcher).await;
    let ServerMsg::Joined { members, member_count, head, truncated, .. } = joined else {
        panic!("expected joined, got {joined:?}")
    };
    assert_eq!((members.len(), member_count, head, truncated), (129, 129, 500, true));
    let mut total = raw.len();
    let mut replay = Vec::new();
    while replay.last() != Some(&head) {
        let (raw, msg) = recv_raw(&mut watcher).await;
        let ServerMsg::Message(m) = msg else { panic!("expected the replay, got {msg:?}") };
        total += raw.len();
        replay.push(m.seq);
    }
    assert_eq!(replay, (replay[0]..=head).collect::<Vec<_>>());
    assert!(
        total <= limit,
        "joined ({} bytes, 129 members) and {} replayed messages are {total} bytes, over the limit of {limit} by {}",
        raw.len(),
        replay.len(),
        total - limit
    );
}

/// Promise 1, the member list at the smallest limit: `reply_limit()` is at least 64 KiB
/// (asking for less gets 64 KiB), and a room names up to 256 people of up to 32
/// characters. With 256 people whose nicks are 4-byte characters, the `joined` reply (no
/// history to replay) still fits.
#[tokio::test]
async fn a_joined_reply_naming_256_long_nicks_fits_the_smallest_reply_limit() {
    let app = spawn_with(|c| {
        c.reply_bytes = 16 * 1024;
        c.max_conns_per_ip = 300;
    })
    .await;
    let limit = app.hub.config.reply_limit();
    assert_eq!(limit, confab::server::config::MIN_REPLY_BYTES);
    let mut people = Vec::new();
    for i in 0..256 {
        // 32 characters, 119 bytes.
        let nick = format!("{}{i:03}", "😀".repeat(29));
        let (mut c, _) = app.user(&nick).await;
        c.join("wide", None, 0).await;
        people.push(c);
    }
    let (mut watcher, _) = app.user("watcher").await;
    watcher.send(json!({"type": "join", "room": "wide"})).await;
    let (raw, joined) = recv_raw(&mut watcher).await;
    let ServerMsg::Joined { members, member_count, .. } = joined else {
        panic!("expected joined, got {joined:?}")
    };
    assert_eq!(member_count, 257);
    assert!(members.len() <= 256);
    assert!(
        raw.len() <= limit,
        "joined naming {} people is {} bytes, over the limit of {limit} by {}",
        members.len(),
        raw.len(),
        raw.len() - limit
    );
}

// --- 2. One byte budget per connection ---

/// Promise 2: one byte budget (`outbound_queue_bytes`) covers everything queued for a
/// connection. A client with a 256 KiB budget that joins, asks for history (64 KiB
/// replies) and stops reading while another client sends the worst messages (4,000
/// control characters, about 24 KB of JSON each) is cut with 4008 "slow consumer"; the
/// sender and another reader get every message in order and are not closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_budget_cuts_a_reader_stalled_on_the_worst_messages_and_no_one_else() {
    let app = spawn_with(|c| {
        c.outbound_queue_bytes = 256 * 1024;
        c.reply_bytes = 64 * 1024;
        c.msg_rate = 1_000_000;
        c.msg_burst = 1_000_000;
    })
    .await;
    let limit = app.hub.config.reply_limit();
    let mut stalled = small_window_user(&app, "stalled").await;
    stalled.join("r", None, 0).await;
    let (mut sender, _) = app.user("sender").await;
    sender.join("r", None, 0).await;
    let (mut reader, _) = app.user("reader").await;
    reader.join("r", None, 0).await;
    let worst = "\u{1}".repeat(4000);
    let mut seq = 0u64;
    let send_one = async |sender: &mut Client, reader: &mut Client, seq: &mut u64| {
        *seq += 1;
        let echo = sender.say_acked("r", &worst, &format!("w{seq}")).await;
        assert_eq!(echo.seq, *seq, "the sender's echoes are in order");
        assert_eq!(reader.recv_message().await, echo, "the other reader gets every message in order");
    };
    for _ in 0..10 {
        send_one(&mut sender, &mut reader, &mut seq).await;
    }
    // Replies count too: the stalled client asks for history and never reads it.
    for _ in 0..5 {
        stalled.send(json!({"type": "history", "room": "r", "before": 11, "limit": 500})).await;
    }
    while app.hub.metrics.slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(seq < 2000, "the stalled reader was not cut after {seq} messages of 24 KB");
        send_one(&mut sender, &mut reader, &mut seq).await;
    }
    let cut_after = seq;
    for _ in 0..5 {
        send_one(&mut sender, &mut reader, &mut seq).await;
    }
    assert_eq!(app.hub.metrics.slow_consumers.load(Ordering::Relaxed), 1, "only the stalled reader was cut");

    let (texts, code) = read_to_close(&mut stalled).await;
    assert_eq!(code, 4008, "slow consumer");
    let mut got = Vec::new();
    for t in &texts {
        match decode(t) {
            ServerMsg::Message(m) => got.push(m.seq),
            ServerMsg::History { .. } => assert!(t.len() <= limit, "a history reply of {} bytes", t.len()),
            _ => {}
        }
    }
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "what reached the stalled reader is in order"
    );
    println!("stalled reader cut after {cut_after} messages; it had {} of them in its socket", got.len());
    assert_eq!(healthz(&app).await["slow_consumers"], 1);
}

// --- 3. Rooms: forgotten, counted, rate limited, listed ---

/// Promise 3: rooms with neither messages nor members are forgotten and not counted. With
/// `max_rooms = 40`, 40 new rooms in use refuse a 41st; once their members leave (or
/// disconnect) they are gone from `/healthz` and a new room can be created.
#[tokio::test]
async fn empty_rooms_are_forgotten_and_free_their_place() {
    let app = spawn_with(|c| {
        c.max_rooms = 40;
        c.room_create_burst = 100;
    })
    .await;
    let mut clients = Vec::new();
    for k in 0..4 {
        let (mut c, _) = app.user(&format!("u{k}")).await;
        for i in 0..10 {
            c.join(&format!("empty-{k}-{i}"), None, 0).await;
        }
        clients.push(c);
    }
    assert_eq!(app.hub.room_count(), 40);
    assert_eq!(healthz(&app).await["rooms"], 40);
    let (mut late, _) = app.user("late").await;
    late.send(json!({"type": "join", "room": "one-too-many"})).await;
    late.expect_error("too_many_rooms").await;

    // Two leave each room, two disconnect.
    for (k, c) in clients.iter_mut().enumerate().take(2) {
        for i in 0..10 {
            let room = format!("empty-{k}-{i}");
            c.send(json!({"type": "leave", "room": room})).await;
            assert_eq!(reply(c).await, ServerMsg::Left { room, reference: None });
        }
    }
    assert_eq!(app.hub.room_count(), 20, "left rooms are forgotten at once");
    clients.truncate(2);
    drop(clients);
    eventually("every empty room forgotten", || app.hub.room_count() == 0).await;
    assert_eq!(healthz(&app).await["rooms"], 0);

    let (joined, _) = late.join("one-too-many", None, 0).await;
    assert!(matches!(joined, ServerMsg::Joined { ref room, .. } if room == "one-too-many"), "{joined:?}");
    let (_, msg) = ask(&mut late, &json!({"type": "list_rooms"})).await;
    let ServerMsg::Rooms { rooms, .. } = msg else { panic!("{msg:?}") };
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["one-too-many"], "forgotten rooms are not listed");
}

/// Promise 3: rooms with messages are kept and counted. With `max_rooms = 40` and 39
/// stored rooms, a room whose only member sends and leaves at once (the message still on
/// its way to the store) is kept: its seqs continue, and a 41st new room is refused.
#[tokio::test]
async fn rooms_with_messages_are_kept_and_counted() {
    let stored: Vec<ChatMessage> =
        (0..39).map(|i| chat(&format!("kept-{i:02}"), 1, "x".into(), TS)).collect();
    let (_dir, db) = database(&stored);
    let app = spawn_on(db, |c| c.max_rooms = 40).await;
    assert_eq!(app.hub.room_count(), 39);

    let (mut c, _) = app.user("speaker").await;
    c.join("live", None, 0).await;
    c.say("live", "said and gone", "s1").await;
    c.send(json!({"type": "leave", "room": "live"})).await;
    c.recv_until(|m| matches!(m, ServerMsg::Left { .. })).await;
    eventually("the message stored", || app.hub.metrics.messages_stored.load(Ordering::Relaxed) == 1).await;
    assert_eq!(app.hub.room_count(), 40, "a room with a message is kept after its last member leaves");
    assert_eq!(healthz(&app).await["rooms"], 40);

    let (mut other, _) = app.user("other").await;
    other.send(json!({"type": "join", "room": "one-too-many"})).await;
    other.expect_error("too_many_rooms").await;
    let (joined, replay) = other.join("kept-00", None, 1).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 1, .. }), "{joined:?}");
    assert_eq!(seqs(&replay), [1]);
    let (joined, replay) = other.join("live", None, 1).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 1, .. }), "{joined:?}");
    assert_eq!(replay[0].text, "said and gone");
    assert_eq!(other.say_acked("live", "next", "o1").await.seq, 2, "the kept room's seqs continue");
}

/// Promise 3: room creation is rate limited per address. With a burst of 3 and 1 per
/// minute, the 4th new room gets `rate_limited` with `retry_after_ms`, also on another
/// connection from the same address; joining an existing room is not creation.
#[tokio::test]
async fn room_creation_is_rate_limited_per_address() {
    let app = spawn_with(|c| {
        c.room_create_burst = 3;
        c.room_create_rate = 1;
    })
    .await;
    let (mut a, _) = app.user("a").await;
    for room in ["new-1", "new-2", "new-3"] {
        let (joined, _) = a.join(room, None, 0).await;
        assert!(matches!(joined, ServerMsg::Joined { .. }));
    }
    a.send(json!({"type": "join", "room": "new-4"})).await;
    match a.expect_error("rate_limited").await {
        ServerMsg::Error { retry_after_ms: Some(ms), .. } => assert!(ms > 0),
        other => panic!("rate_limited without retry_after_ms: {other:?}"),
    }
    let (mut b, _) = app.user("b").await;
    b.send(json!({"type": "join", "room": "new-5"})).await;
    match b.expect_error("rate_limited").await {
        ServerMsg::Error { retry_after_ms: Some(ms), .. } => assert!(ms > 0),
        other => panic!("rate_limited without retry_after_ms: {other:?}"),
    }
    let (joined, _) = b.join("new-1", None, 0).await;
    assert!(matches!(joined, ServerMsg::Joined { member_count: 2, .. }), "{joined:?}");
    assert_eq!(app.hub.room_count(), 3);
}

/// Promise 3: `list_rooms` and `GET /api/rooms` are paginated (`limit`, `cursor` →
/// `rooms`, `has_more`, `next`) and ordered by recent activity, most recent first (ties
/// by name, even across a page boundary); paging with limit 2 lists every room once.
#[tokio::test]
async fn the_directory_pages_by_recent_activity_and_lists_each_room_once() {
    let stored = [("ancient", 500), ("old", 1000), ("mid-a", 2000), ("mid-b", 2000), ("mid-c", 2000)];
    let stored: Vec<ChatMessage> = stored
        .iter()
        .chain(&[("mid-d", 2000), ("new", 3000)])
        .map(|(room, ts)| chat(room, 1, "x".into(), *ts))
        .collect();
    let (_dir, db) = database(&stored);
    let app = spawn_on(db, |_| {}).await;
    let (mut a, _) = app.user("a").await;
    a.join("fresh", None, 0).await;
    let (mut b, _) = app.user("b").await;
    b.join("old", None, 1).await;
    let echo = b.say_acked("old", "back to life", "b1").await;

    let mut ws_listing: Vec<RoomInfo> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut request = json!({"type": "list_rooms", "limit": 2});
        if let Some(cursor) = &cursor {
            request["cursor"] = json!(cursor);
        }
        let (_, msg) = ask(&mut a, &request).await;
        let ServerMsg::Rooms { rooms, has_more, next, .. } = msg else { panic!("{msg:?}") };
        pages += 1;
        assert!(rooms.len() <= 2 && !rooms.is_empty(), "page {pages}: {rooms:?}");
        assert_eq!(has_more, next.is_some());
        ws_listing.extend(rooms);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 4);
    let names: Vec<&str> = ws_listing.iter().map(|r| r.name.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a room listed twice: {names:?}");
    let expected: BTreeSet<&str> =
        ["ancient", "old", "mid-a", "mid-b", "mid-c", "mid-d", "new", "fresh"].into_iter().collect();
    assert_eq!(unique, expected);
    for pair in ws_listing.windows(2) {
        let in_order = pair[0].last_active > pair[1].last_active
            || (pair[0].last_active == pair[1].last_active && pair[0].name < pair[1].name);
        assert!(in_order, "out of order: {:?} before {:?}", pair[0], pair[1]);
    }
    let info = |name: &str| ws_listing.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(
        (info("old").last_active, info("old").head),
        (echo.ts, 2),
        "a new message makes a room recent"
    );
    assert!(info("fresh").last_active > 3000 && info("fresh").members == 1);
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != "old" && *n != "fresh").collect();
    assert_eq!(rest, ["new", "mid-a", "mid-b", "mid-c", "mid-d", "ancient"]);
    assert!(names[..2].contains(&"old") && names[..2].contains(&"fresh"));

    let mut http_listing: Vec<RoomInfo> = Vec::new();
    let mut url = app.url("/api/rooms?limit=2");
    for _ in 0..10 {
        let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let rooms: Vec<RoomInfo> = serde_json::from_value(page["rooms"].clone()).unwrap();
        assert!(rooms.len() <= 2);
        http_listing.extend(rooms);
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                url = app.url(&format!("/api/rooms?limit=2&cursor={next}"));
            }
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(http_listing, ws_listing, "the HTTP directory pages the same way");
}

/// Promise 3: the room count check is race-free. With `max_rooms = 5`, 20 clients each
/// creating a distinct room at once: exactly 5 succeed, the other 15 get `too_many_rooms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creators_never_exceed_max_rooms() {
    let app = spawn_with(|c| c.max_rooms = 5).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(app.user(&format!("racer{i}")).await.0);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                c.send(json!({"type": "join", "room": format!("race-{i}")})).await;
                let msg = reply(&mut c).await;
                (msg, c)
            })
        })
        .collect();
    let mut joined = 0;
    let mut refused = 0;
    let mut keep = Vec::new();
    for task in tasks {
        let (msg, c) = task.await.unwrap();
        match msg {
            ServerMsg::Joined { .. } => joined += 1,
            ServerMsg::Error { code: ErrorCode::TooManyRooms, .. } => refused += 1,
            other => panic!("{other:?}"),
        }
        keep.push(c);
    }
    assert_eq!((joined, refused), (5, 15));
    assert_eq!(app.hub.room_count(), 5);
}

// --- 4. Waiting as told ---

/// Promise 4: with the default rates (20/s, burst 40, 20 strikes), a client that pipelines
/// 100 sends and, for every `rate_limited` (with its `client_id` and `retry_after_ms`),
/// waits as told and resends that same send gets all 100 acknowledged, each stored
/// exactly once, and is never closed.
#[tokio::test]
async fn a_client_that_waits_as_told_gets_every_send_through_and_is_never_cut() {
    let app = spawn_app().await;
    let (mut c, _) = app.user("patient").await;
    c.join("r", None, 0).await;
    let text = |id: &str| format!("patient says {id}");
    for i in 0..100 {
        let id = format!("p{i}");
        c.say("r", &text(&id), &id).await;
    }
    let mut echoed: HashMap<String, u64> = HashMap::new();
    let mut due: Vec<(Instant, String)> = Vec::new();
    let mut refusals = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while echoed.len() < 100 {
        assert!(Instant::now() < deadline, "only {} of 100 acknowledged", echoed.len());
        let next_due = due.iter().map(|(at, _)| *at).min();
        tokio::select! {
            frame = tokio::time::timeout(WAIT, c.ws.next()) => {
                match frame.expect("a frame in time") {
                    Some(Ok(Message::Text(t))) => match decode(&t) {
                        ServerMsg::Message(m) => {
                            assert_eq!(m.text, text(&m.client_id));
                            assert!(echoed.insert(m.client_id.clone(), m.seq).is_none(), "{} echoed twice", m.client_id);
                        }
                        ServerMsg::Error { code: ErrorCode::RateLimited, client_id, retry_after_ms, .. } => {
                            let id = client_id.expect("a refused send names its client_id");
                            let ms = retry_after_ms.expect("a refused send says when to retry");
                            refusals += 1;
                            due.push((Instant::now() + Duration::from_millis(ms), id));
                        }
                        ServerMsg::Presence { .. } => {}
                        other => panic!("unexpected {other:?}"),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("the patient client's connection ended: {other:?}"),
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {
                let now = Instant::now();
                let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(at, _)| *at <= now);
                due = later;
                for (_, id) in ready {
                    c.say("r", &text(&id), &id).await;
                }
            }
        }
    }
    assert!(refusals >= 60, "100 sends at once exceed the burst of 40: {refusals} refusals");
    let mut acked: Vec<u64> = echoed.values().copied().collect();
    acked.sort();
    assert_eq!(acked, (1..=100).collect::<Vec<_>>());
    assert_eq!(app.hub.metrics.abusive_closed.load(Ordering::Relaxed), 0);
    // Still open and usable.
    let (_, msg) = ask(&mut c, &json!({"type": "list_rooms"})).await;
    assert!(matches!(msg, ServerMsg::Rooms { .. }));
    let stored = common::stored(app.addr.port(), "r").await;
    assert_eq!(seqs(&stored), (1..=100).collect::<Vec<_>>());
    let ids: HashSet<&str> = stored.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(ids.len(), 100, "each send stored exactly once");
}

/// Promise 4 (and 8): with the default settings, a client that floods 400 sends and
/// never waits is closed with 1008, and the close arrives as a close frame after what
/// the server had queued, though the server had not read the rest of the flood.
#[tokio::test]
async fn a_flooding_client_is_closed_with_1008_under_default_limits() {
    let app = spawn_app().await;
    let (mut c, _) = app.user("flood").await;
    c.join("r", None, 0).await;
    for i in 0..400 {
        c.say("r", "spam", &format!("f{i}")).await;
    }
    let (texts, code) = read_to_close(&mut c).await;
    assert_eq!(code, 1008);
    let mut echoes = 0;
    for t in &texts {
        match decode(t) {
            ServerMsg::Message(_) => echoes += 1,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(_),
                client_id: Some(_),
                ..
            } => {}
            ServerMsg::Presence { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(app.hub.metrics.abusive_closed.load(Ordering::Relaxed), 1);
    // The burst was accepted and stored, though its echoes may not have been queued yet
    // when the close went out (each commit also writes the event log and the search
    // index). A later message's echo means everything accepted before it is stored.
    let (mut witness, _) = app.user("witness").await;
    witness.join("r", None, 0).await;
    witness.say("r", "after the flood", "w-1").await;
    witness.recv_until(|m| matches!(m, ServerMsg::Message(m) if m.client_id == "w-1")).await;
    let stored = common::stored(app.addr.port(), "r").await;
    let spam = stored.iter().filter(|m| m.text == "spam").count();
    assert!(spam >= 40, "the burst was accepted: {spam} stored");
    assert!(echoes <= spam, "{echoes} echoes of {spam} stored");
}

// --- 5. Presence past 256 people ---

/// Promise 5: in a room of 261 people, an observer is told 256 names (`joined.members`)
/// and `member_count` 261; whoever it was told of is reported gone (`presence left`, with
/// `member_count`) when they leave, the names it holds are always people really there,
/// and once the room is back under 256 it holds exactly everyone present.
#[tokio::test]
async fn presence_reports_everyone_named_gone_in_a_room_past_256() {
    let app = spawn_with(|c| c.max_conns_per_ip = 400).await;
    let mut people: BTreeMap<String, Client> = BTreeMap::new();
    for i in 0..260 {
        let nick = format!("p{i:03}");
        let (mut c, _) = app.user(&nick).await;
        c.join("crowd", None, 0).await;
        people.insert(nick, c);
    }
    let (mut watcher, _) = app.user("watcher").await;
    let (joined, _) = watcher.join("crowd", None, 0).await;
    let ServerMsg::Joined { members, member_count, .. } = joined else { panic!("{joined:?}") };
    assert_eq!((members.len(), member_count), (256, 261));
    let mut present: BTreeSet<String> = people.keys().cloned().collect();
    present.insert("watcher".into());
    let mut named: BTreeSet<String> = members.into_iter().collect();
    assert!(named.is_subset(&present));

    // Two people the watcher was not told of leave: nothing to tell.
    let unnamed: Vec<String> = people.keys().filter(|n| !named.contains(*n)).take(2).cloned().collect();
    assert_eq!(unnamed.len(), 2);
    for nick in &unnamed {
        drop(people.remove(nick));
        present.remove(nick);
    }
    let room = app.hub.find_room(&confab::protocol::RoomName::parse("crowd").unwrap()).unwrap();
    eventually("the unnamed two gone", || room.info().members == 259).await;

    // Twelve named people leave one by one; the first three free a name for the three
    // unnamed people still there (two and the watcher).
    let leaving: Vec<String> = named.iter().filter(|n| *n != "watcher").take(12).cloned().collect();
    let mut count_now = 259;
    for nick in leaving {
        drop(people.remove(&nick));
        present.remove(&nick);
        loop {
            let ServerMsg::Presence { nick: who, state, member_count, .. } = watcher.recv().await else {
                panic!("expected presence")
            };
            match state {
                PresenceState::Left => {
                    assert!(named.remove(&who), "told {who} left, never told they were here");
                    count_now -= 1;
                    assert_eq!(member_count, Some(count_now), "presence left carries member_count");
                    if who == nick {
                        break;
                    }
                }
                PresenceState::Joined => {
                    assert_eq!(member_count, Some(count_now), "presence joined carries member_count");
                    assert!(present.contains(&who), "named {who}, who is not here");
                    assert!(named.insert(who));
                }
            }
            let mut allowed = present.clone();
            allowed.insert(nick.clone());
            assert!(
                named.is_subset(&allowed),
                "a ghost: {:?}",
                named.difference(&allowed).collect::<Vec<_>>()
            );
        }
        assert!(named.is_subset(&present), "a ghost: {:?}", named.difference(&present).collect::<Vec<_>>());
    }
    assert_eq!(present.len(), 247);
    assert_eq!(named, present, "under 256 people, the watcher holds everyone present");
}

// --- 6. The committer ---

/// Promise 6: a second server on the database file of a running one refuses to start
/// with `StoreError::Locked` ("in use by another Confab server"); the first keeps working.
#[tokio::test]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    if !common::sqlite_only("checks the SQLite file's lock (PostgreSQL has several writers)") {
        return;
    }
    let app = spawn_app().await;
    match confab::server::Server::bind(common::test_config(app.db.clone())).await {
        Ok(_) => panic!("a second server started on a database in use"),
        Err(err) => {
            assert!(err.to_string().contains("in use by another Confab server"), "{err}");
            assert!(matches!(err, StartError::Store(StoreError::Locked(_))), "{err}");
        }
    }
    let (mut c, _) = app.user("still-here").await;
    c.join("r", None, 0).await;
    assert_eq!(c.say_acked("r", "fine", "c1").await.seq, 1);
}

/// Promise 6: a store failure (a trigger refusing the insert) reaches the sender as
/// `error internal` with its `client_id`, the connection stays open, nobody sees the
/// refused message, the next send gets the next seq with no gap, and once the store
/// accepts again the same `client_id` is stored and echoed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_reaches_the_sender_and_the_send_stays_retryable() {
    if !common::sqlite_only("injects the failure with a trigger in the SQLite file") {
        return;
    }
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    let (mut bob, _) = app.user("bob").await;
    bob.join("r", None, 0).await;
    let first = ann.say_acked("r", "before", "c1").await;
    assert_eq!(first.seq, 1);
    assert_eq!(bob.recv_message().await, first);

    let db = rusqlite::Connection::open(&app.db).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail BEFORE INSERT ON messages WHEN NEW.text = 'boom'
         BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .unwrap();
    ann.say("r", "boom", "c-boom").await;
    match reply(&mut ann).await {
        ServerMsg::Error { code: ErrorCode::Internal, client_id: Some(id), .. } => assert_eq!(id, "c-boom"),
        other => panic!("expected error internal for c-boom, got {other:?}"),
    }
    let second = ann.say_acked("r", "after", "c2").await;
    assert_eq!(second.seq, 2, "no gap after the failed send");
    assert_eq!(bob.recv_message().await, second, "nobody saw the refused message");

    db.execute_batch("DROP TRIGGER fail").unwrap();
    let boom = ann.say_acked("r", "boom", "c-boom").await;
    assert_eq!((boom.seq, boom.text.as_str()), (3, "boom"));
    assert_eq!(bob.recv_message().await, boom);
    // Once stored, the same client_id is answered with the original, not stored again.
    ann.say("r", "boom", "c-boom").await;
    assert_eq!(ann.recv_message().await, boom);

    let stored = common::stored(app.addr.port(), "r").await;
    let got: Vec<(u64, &str, &str)> =
        stored.iter().map(|m| (m.seq, m.text.as_str(), m.client_id.as_str())).collect();
    assert_eq!(got, [(1, "before", "c1"), (2, "after", "c2"), (3, "boom", "c-boom")]);
    assert!(app.hub.metrics.store_failures.load(Ordering::Relaxed) >= 1);
}

// --- 7. Read rate limits ---

/// Requests `url` until refused (bounded); returns how many succeeded and the refusal.
async fn until_refused(url: &str) -> (usize, reqwest::Response) {
    let mut ok = 0;
    for _ in 0..20 {
        let resp = reqwest::get(url).await.unwrap();
        if resp.status() == 429 {
            return (ok, resp);
        }
        assert_eq!(resp.status(), 200, "{url}");
        ok += 1;
    }
    panic!("{url}: never refused after {ok} requests");
}

async fn assert_rate_limited_response(resp: reqwest::Response) {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!(retry >= 1);
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Promise 7: the HTTP API and the pages are rate limited per address, with one allowance
/// for both: past the burst,
/// 429 with `Retry-After` and `{"code": "rate_limited", "message": ...}`.
#[tokio::test]
async fn http_reads_past_the_burst_get_429_with_retry_after() {
    // Taken first, so waiting for it cannot let the allowance refill mid-test.
    let _render = common::PAGE_RENDER.lock().await;
    let app = spawn_with(|c| {
        c.http_rate = 1;
        c.http_burst = 3;
    })
    .await;
    // The room must exist: the history of a room that does not is 404.
    let (mut ann, _) = app.user("ann").await;
    ann.join("lobby", None, 0).await;
    let (ok, refused) = until_refused(&app.url("/api/rooms/lobby/messages")).await;
    assert!(ok >= 3, "the burst is served: {ok}");
    assert_rate_limited_response(refused).await;
    let (_, refused) = until_refused(&app.url("/api/rooms")).await;
    assert_rate_limited_response(refused).await;

    // Pages share the address's one allowance: spent on the API, a page is refused too
    // (before the server reads anything for it).
    let page = reqwest::get(app.url("/r/lobby")).await.unwrap();
    assert_rate_limited_response(page).await;
}

/// Promise 7: on the socket, `history` (5/s, burst 10) and `list_rooms` (2/s, burst 5)
/// are rate limited: a burst beyond that gets `rate_limited` with `retry_after_ms` and the
/// request's `ref`; waiting as told, the refused request is then answered.
#[tokio::test]
async fn history_and_list_rooms_are_rate_limited_on_the_socket() {
    let app = spawn_app().await;
    let (mut c, _) = app.user("reader").await;
    c.join("r", None, 0).await;
    for (kind, burst, n) in [("history", 10, 20), ("list_rooms", 5, 12)] {
        for i in 0..n {
            let mut request = json!({"type": kind, "ref": format!("{kind}-{i}")});
            if kind == "history" {
                request["room"] = json!("r");
                request["before"] = json!(100);
            }
            c.send(request).await;
        }
        let mut refused = None;
        for i in 0..n {
            let msg = reply(&mut c).await;
            let want = format!("{kind}-{i}");
            assert_eq!(msg.reference(), Some(want.as_str()), "{msg:?}");
            match msg {
                ServerMsg::History { .. } | ServerMsg::Rooms { .. } => {}
                ServerMsg::Error { code: ErrorCode::RateLimited, retry_after_ms, .. } => {
                    assert!(i >= burst, "{kind} {i} refused within the burst of {burst}");
                    let ms = retry_after_ms.expect("rate_limited says when to retry");
                    refused.get_or_insert((i, ms));
                }
                other => panic!("{kind} {i}: {other:?}"),
            }
        }
        let (i, ms) = refused.unwrap_or_else(|| panic!("{n} {kind} requests at once were all answered"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut request = json!({"type": kind, "ref": format!("{kind}-{i}")});
        if kind == "history" {
            request["room"] = json!("r");
            request["before"] = json!(100);
        }
        // Requests accepted after the refusal may have taken the tokens since: `ask` waits
        // out any further refusal too.
        let (_, msg) = ask(&mut c, &request).await;
        assert!(
            matches!(msg, ServerMsg::History { .. } | ServerMsg::Rooms { .. }),
            "{kind} after waiting: {msg:?}"
        );
        assert_eq!(msg.reference(), Some(format!("{kind}-{i}").as_str()));
    }
}

// --- 8. A client that is cut learns why ---

/// Promise 8: a reader cut as a slow consumer that then reads gets everything that was in
/// its socket, in order, and then a close frame 4008 (not a reset, not a stream that ends
/// without a close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_reads_again_gets_what_its_socket_held_then_4008() {
    let app = spawn_with(|c| {
        c.outbound_queue_bytes = 128 * 1024; // the smallest allowed
        c.msg_rate = 1_000_000;
        c.msg_burst = 1_000_000;
    })
    .await;
    let (mut slow, _) = app.user("slow").await;
    slow.join("r", None, 0).await;
    let (mut sender, _) = app.user("sender").await;
    sender.join("r", None, 0).await;
    let text = "y".repeat(4000);
    let (mut sent, mut acked) = (0u64, 0u64);
    while app.hub.metrics.slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(sent < 20_000, "the slow reader was not cut after {sent} messages of 4 KB");
        while sent < acked + 16 {
            sent += 1;
            sender.say("r", &text, &format!("s{sent}")).await;
        }
        let echo = sender.recv_message().await;
        acked += 1;
        assert_eq!(echo.seq, acked);
    }
    while acked < sent {
        acked += 1;
        assert_eq!(sender.recv_message().await.seq, acked);
    }
    let (texts, code) = read_to_close(&mut slow).await;
    assert_eq!(code, 4008, "slow consumer");
    let got: Vec<u64> = texts
        .iter()
        .filter_map(|t| match decode(t) {
            ServerMsg::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert!(!got.is_empty(), "the socket held some messages");
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "in order, none lost before the cut");
    println!("slow reader got {} of {sent} messages, then 4008", got.len());
}

/// Promise 8: the abuse close (1008) arrives as a close frame even though the client had
/// pipelined 200 sends the server had not read yet: never an IO error or a reset.
#[tokio::test]
async fn the_abuse_close_arrives_as_a_close_frame_despite_unread_input() {
    let app = spawn_with(|c| {
        c.msg_rate = 1;
        c.msg_burst = 1;
        c.abuse_strikes = 5;
    })
    .await;
    let (mut c, _) = app.user("spammer").await;
    c.join("r", None, 0).await;
    for i in 0..200 {
        c.say("r", "spam", &format!("m{i}")).await;
    }
    let (texts, code) = read_to_close(&mut c).await;
    assert_eq!(code, 1008);
    assert!(texts.iter().any(|t| matches!(decode(t), ServerMsg::Error { code: ErrorCode::RateLimited, .. })));
    assert!(texts.len() < 100, "closed long before the flood was read: {} replies", texts.len());
}

// --- ref ---

/// Every request's `ref` comes back on its reply or error: hello → welcome, join →
/// joined, history → history, list_rooms → rooms, leave → left, and errors (bad frame,
/// unknown type, invalid room, not joined); a request without `ref` gets none.
#[tokio::test]
async fn every_request_ref_is_echoed_on_its_reply_or_error() {
    let app = spawn_app().await;
    let mut c = app.client().await;
    c.send(json!({"type": "join", "room": "r", "ref": "x0"})).await;
    let msg = c.expect_error("hello_required").await;
    assert_eq!(msg.reference(), Some("x0"));
    c.send(json!({"type": "hello", "nick": "refs", "ref": "x1"})).await;
    let msg = c.recv().await;
    assert!(matches!(msg, ServerMsg::Welcome { .. }) && msg.reference() == Some("x1"), "{msg:?}");

    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "join", "room": "r", "ref": "x2"}), "joined"),
        (json!({"type": "history", "room": "r", "before": 10, "ref": "x3"}), "history"),
        (json!({"type": "list_rooms", "ref": "x4"}), "rooms"),
        (
            json!({"type": "send", "room": "elsewhere", "text": "t", "client_id": "c1", "ref": "x5"}),
            "not_joined",
        ),
        (json!({"type": "history", "room": "r", "ref": "x6"}), "bad_frame"),
        (json!({"type": "dance", "ref": "x7"}), "unknown_type"),
        (json!({"type": "join", "room": "Bad Room", "ref": "x8"}), "invalid_room"),
        (json!({"type": "leave", "room": "r", "ref": "x9"}), "left"),
        (json!({"type": "leave", "room": "r", "ref": "x10"}), "not_joined"),
        (json!({"type": "typing", "room": "r", "ref": "x11"}), "not_joined"),
    ];
    for (request, expected) in cases {
        c.send(request.clone()).await;
        let msg = reply(&mut c).await;
        let kind = match &msg {
            ServerMsg::Error { code, .. } => code.as_str(),
            ServerMsg::Joined { .. } => "joined",
            ServerMsg::History { .. } => "history",
            ServerMsg::Rooms { .. } => "rooms",
            ServerMsg::Left { .. } => "left",
            other => panic!("{request}: {other:?}"),
        };
        assert_eq!(kind, expected, "{request}: {msg:?}");
        assert_eq!(msg.reference(), request["ref"].as_str(), "{request}: {msg:?}");
    }
    c.send(json!({"type": "list_rooms"})).await;
    let msg = reply(&mut c).await;
    assert!(matches!(msg, ServerMsg::Rooms { reference: None, .. }), "no ref asked, none given: {msg:?}");
}
