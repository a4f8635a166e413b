//! Conversations against the real server, over the WebSocket protocol and the HTTP API:
//! a room's seq numbers its events (message, edit, delete, react), edits and deletes by
//! who may make them, reactions and their caps, replies, mentions, read state and unread
//! counts, the replay of a `join` (with and without `since`), and full-text search with
//! its filters and its access rule.
//!
//! Every test makes its own server. Each refusal is checked for its code, for storing
//! nothing (the next event takes the next seq, history is unchanged) and for leaving the
//! connection open (a following request is answered).

mod common;

use common::{Client, TestApp, connect_with, spawn_on, spawn_with};
use confab::protocol::{
    ChatMessage, DeleteEvent, EditEvent, ReactEvent, RoomInfo, SearchHit, ServerMsg, UserInfo, is_emoji,
};
use confab::server::config::Config;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const PASSWORD: &str = "correct horse battery staple";

/// HTTP, sign-in and room-creation allowances wide enough that only the tests about
/// limits meet them.
fn wide(c: &mut Config) {
    c.http_burst = 10_000;
    c.auth_burst = 1_000;
    c.room_create_burst = 1_000;
}

async fn server(tune: impl FnOnce(&mut Config)) -> TestApp {
    spawn_with(|c| {
        wide(c);
        tune(c)
    })
    .await
}

/// The `i`th of a run of distinct emoji (U+1F600 on: 😀, 😁, 😂, …).
fn emoji(i: usize) -> String {
    char::from_u32(0x1F600 + i as u32).unwrap().to_string()
}

// --- HTTP ---

/// A signed-up account and the cookie of its session.
struct User {
    username: String,
    id: String,
    cookie: String,
}

/// Signs up `username`. The first account on a server is its admin: tests whose rules
/// hinge on roles sign up a "root" first, so the others are plain members.
async fn signup(app: &TestApp, username: &str) -> User {
    let resp = reqwest::Client::new()
        .post(app.url("/api/auth/signup"))
        .header("origin", format!("http://{}", app.addr))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .expect("sign-up is answered");
    assert_eq!(resp.status().as_u16(), 201, "sign-up of {username}");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().trim().to_owned();
    let body: Value = resp.json().await.unwrap();
    User { username: username.to_owned(), id: body["id"].as_str().unwrap().to_owned(), cookie }
}

/// A GET (with `who`'s cookie, or as nobody) with query parameters: status and JSON body.
async fn get(app: &TestApp, path: &str, params: &[(&str, &str)], who: Option<&User>) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(&app.url(path), params).unwrap();
    let mut req = reqwest::Client::new().get(url);
    if let Some(user) = who {
        req = req.header("cookie", &user.cookie);
    }
    let resp = req.send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A POST from this server's own origin, as a page of it would send.
async fn post(app: &TestApp, path: &str, who: &User, body: Value) -> u16 {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .header("cookie", &who.cookie)
        .header("origin", format!("http://{}", app.addr))
        .json(&body)
        .send()
        .await
        .expect("the request is answered");
    resp.status().as_u16()
}

/// Everything `GET /api/rooms/{room}/messages` holds, oldest first.
async fn history(app: &TestApp, room: &str, who: Option<&User>) -> Vec<ChatMessage> {
    let (status, body) = get(app, &format!("/api/rooms/{room}/messages"), &[("limit", "500")], who).await;
    assert_eq!(status, 200, "history of {room}: {body}");
    assert_eq!(body["has_more"], false, "the whole room fits one page");
    serde_json::from_value(body["messages"].clone()).unwrap()
}

/// `room`'s entry in `GET /api/rooms`.
async fn http_room(app: &TestApp, room: &str, who: Option<&User>) -> RoomInfo {
    let (status, body) = get(app, "/api/rooms", &[], who).await;
    assert_eq!(status, 200, "{body}");
    let rooms: Vec<RoomInfo> = serde_json::from_value(body["rooms"].clone()).unwrap();
    rooms.into_iter().find(|r| r.name == room).unwrap_or_else(|| panic!("{room} is not listed: {body}"))
}

// --- WebSocket ---

/// A socket signed in with `user`'s cookie that said hello.
async fn socket_of(app: &TestApp, user: &User) -> Client {
    let mut c = connect_with(app.addr.port(), &[("cookie", &user.cookie)]).await;
    c.send(json!({"type": "hello"})).await;
    match c.recv().await {
        ServerMsg::Welcome { user: Some(info), .. } => assert_eq!(info.id, user.id),
        other => panic!("expected welcome, got {other:?}"),
    }
    c
}

/// A guest socket, with who the server says it is.
async fn guest(app: &TestApp, nick: &str) -> (Client, UserInfo) {
    let mut c = app.client().await;
    c.send(json!({"type": "hello", "nick": nick})).await;
    match c.recv().await {
        ServerMsg::Welcome { user: Some(user), .. } => (c, user),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Sends `frame` with `ref` set and returns the reply that carries it back.
async fn ask(c: &mut Client, mut frame: Value, reference: &str) -> ServerMsg {
    frame["ref"] = json!(reference);
    c.send(frame).await;
    c.recv_until(|m| m.reference() == Some(reference)).await
}

/// What a reply was: "ack", "joined", the error's code, …
fn outcome(reply: &ServerMsg) -> String {
    match reply {
        ServerMsg::Ack { .. } => "ack".into(),
        ServerMsg::Joined { .. } => "joined".into(),
        ServerMsg::History { .. } => "history".into(),
        ServerMsg::Rooms { .. } => "rooms".into(),
        ServerMsg::SearchResults { .. } => "search_results".into(),
        ServerMsg::Error { code, .. } => code.as_str().into(),
        other => panic!("not a reply: {other:?}"),
    }
}

/// Sends a request that must be refused: its error's code and `client_id`.
async fn refused(c: &mut Client, frame: Value, reference: &str) -> (String, Option<String>) {
    match ask(c, frame.clone(), reference).await {
        ServerMsg::Error { code, client_id, .. } => (code.as_str().to_owned(), client_id),
        other => panic!("expected {frame} to be refused, got {other:?}"),
    }
}

/// Joins `room` and returns `joined` (the replay that follows is left unread).
async fn join(c: &mut Client, room: &str) -> ServerMsg {
    let joined = ask(c, json!({"type": "join", "room": room}), &format!("join-{room}")).await;
    assert_eq!(outcome(&joined), "joined", "joining {room}: {joined:?}");
    joined
}

/// Joins `room` (after `since`, if given) and reads `joined` and `expect` replayed events.
async fn join_replay(
    c: &mut Client,
    room: &str,
    since: Option<u64>,
    expect: usize,
) -> (ServerMsg, Vec<ServerMsg>) {
    let mut frame = json!({"type": "join", "room": room});
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    let joined = ask(c, frame, "replay").await;
    assert_eq!(outcome(&joined), "joined", "{joined:?}");
    let mut events = Vec::new();
    for _ in 0..expect {
        events.push(next_event(c).await);
    }
    (joined, events)
}

/// `joined`'s read state: (last_read, unread, mentions).
fn read_state(joined: &ServerMsg) -> (Option<u64>, Option<u32>, Option<u32>) {
    match joined {
        ServerMsg::Joined { last_read, unread, mentions, .. } => (*last_read, *unread, *mentions),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// `room`'s entry in a `list_rooms` reply.
async fn listed(c: &mut Client, room: &str) -> RoomInfo {
    match ask(c, json!({"type": "list_rooms"}), "list").await {
        ServerMsg::Rooms { rooms, .. } => {
            rooms.into_iter().find(|r| r.name == room).unwrap_or_else(|| panic!("{room} is not listed"))
        }
        other => panic!("expected rooms, got {other:?}"),
    }
}

/// Frames about the room's people rather than its conversation.
fn is_noise(m: &ServerMsg) -> bool {
    matches!(
        m,
        ServerMsg::Presence { .. }
            | ServerMsg::Typing { .. }
            | ServerMsg::MemberUpdate { .. }
            | ServerMsg::Topic { .. }
            | ServerMsg::Invited { .. }
    )
}

/// The next frame that is not noise.
async fn next_event(c: &mut Client) -> ServerMsg {
    c.recv_until(|m| !is_noise(m)).await
}

/// Waits for the frame `pred` picks, skipping others; an error it does not pick fails.
async fn wait_for(c: &mut Client, what: &str, mut pred: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
    loop {
        let m = c.recv().await;
        if pred(&m) {
            return m;
        }
        if matches!(m, ServerMsg::Error { .. }) {
            panic!("expected {what}, got {m:?}");
        }
    }
}

fn seq_of(m: &ServerMsg) -> u64 {
    match m {
        ServerMsg::Message(m) => m.seq,
        ServerMsg::Edit(e) => e.seq,
        ServerMsg::Delete(d) => d.seq,
        ServerMsg::React(r) => r.seq,
        other => panic!("not an event: {other:?}"),
    }
}

fn kind_of(m: &ServerMsg) -> &'static str {
    match m {
        ServerMsg::Message(_) => "message",
        ServerMsg::Edit(_) => "edit",
        ServerMsg::Delete(_) => "delete",
        ServerMsg::React(_) => "react",
        other => panic!("not an event: {other:?}"),
    }
}

/// Posts and waits for the echo.
async fn say(c: &mut Client, room: &str, text: &str, cid: &str) -> ChatMessage {
    c.say(room, text, cid).await;
    let echo =
        wait_for(c, "the message's echo", |m| matches!(m, ServerMsg::Message(m) if m.client_id == cid));
    match echo.await {
        ServerMsg::Message(m) => m,
        _ => unreachable!(),
    }
}

async fn edit(c: &mut Client, room: &str, target: u64, text: &str, cid: &str) -> EditEvent {
    c.send(json!({"type": "edit", "room": room, "target": target, "text": text, "client_id": cid})).await;
    match wait_for(c, "the edit's echo", |m| matches!(m, ServerMsg::Edit(e) if e.client_id == cid)).await {
        ServerMsg::Edit(e) => e,
        _ => unreachable!(),
    }
}

async fn delete(c: &mut Client, room: &str, target: u64, cid: &str) -> DeleteEvent {
    c.send(json!({"type": "delete", "room": room, "target": target, "client_id": cid})).await;
    match wait_for(c, "the delete's echo", |m| matches!(m, ServerMsg::Delete(d) if d.client_id == cid)).await
    {
        ServerMsg::Delete(d) => d,
        _ => unreachable!(),
    }
}

/// `user` turns a reaction on (or off) and waits for its echo.
async fn react(c: &mut Client, user: &str, room: &str, target: u64, emoji: &str, on: bool) -> ReactEvent {
    c.send(json!({"type": "react", "room": room, "target": target, "emoji": emoji, "on": on})).await;
    let echo = wait_for(
        c,
        "the reaction's echo",
        |m| matches!(m, ServerMsg::React(r) if r.user == user && r.target == target && r.emoji == emoji),
    );
    match echo.await {
        ServerMsg::React(r) => r,
        _ => unreachable!(),
    }
}

async fn ws_history(c: &mut Client, room: &str) -> Vec<ChatMessage> {
    let frame = json!({"type": "history", "room": room, "before": 1_000_000_000u64, "limit": 200});
    match ask(c, frame, "history").await {
        ServerMsg::History { messages, has_more, .. } => {
            assert!(!has_more);
            messages
        }
        other => panic!("expected history, got {other:?}"),
    }
}

/// A search's reply: (hits, has_more, next_before).
async fn search(c: &mut Client, mut frame: Value) -> (Vec<SearchHit>, bool, Option<i64>) {
    frame["type"] = json!("search");
    match ask(c, frame.clone(), "search").await {
        ServerMsg::SearchResults { query, hits, has_more, next_before, .. } => {
            assert_eq!(query, frame["query"].as_str().unwrap(), "the reply names its query");
            (hits, has_more, next_before)
        }
        other => panic!("expected search results for {frame}, got {other:?}"),
    }
}

/// The (room, seq) of each hit of `query`, newest first.
async fn found(c: &mut Client, query: &str) -> Vec<(String, u64)> {
    let (hits, _, _) = search(c, json!({"query": query})).await;
    hits.into_iter().map(|h| (h.room, h.seq)).collect()
}

/// A message's visible state, reactions as (emoji, users), for comparing histories.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    seq: u64,
    text: String,
    edited_ts: Option<i64>,
    deleted: bool,
    reply_to: Option<u64>,
    mentions: Vec<String>,
    reactions: Vec<(String, Vec<String>)>,
}

fn shown(m: &ChatMessage) -> Shown {
    Shown {
        seq: m.seq,
        text: m.text.clone(),
        edited_ts: m.edited_ts,
        deleted: m.deleted,
        reply_to: m.reply_to,
        mentions: m.mentions.clone(),
        reactions: m
            .reactions
            .iter()
            .map(|r| {
                assert_eq!(r.count as usize, r.users.len(), "count is the number of users: {r:?}");
                assert_eq!(r.nicks.len(), r.users.len(), "a nick for each user: {r:?}");
                (r.emoji.clone(), r.users.clone())
            })
            .collect(),
    }
}

// === Events and their seqs ===

/// Messages, edits, reactions and deletes each take the room's next seq, with no gap,
/// and each reaches everyone in the room, the sender included, in seq order.
#[tokio::test]
async fn every_event_takes_the_next_seq_and_reaches_the_whole_room() {
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    let (mut bob, bob_info) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;

    assert_eq!(say(&mut ann, "hall", "one", "a1").await.seq, 1);
    assert_eq!(edit(&mut ann, "hall", 1, "one!", "a2").await.seq, 2);
    assert_eq!(react(&mut ann, &ann_info.id, "hall", 1, "👍", true).await.seq, 3);
    // Bob's reaction: Ann sees it stored (Bob's own socket is read in order below).
    bob.send(json!({"type": "react", "room": "hall", "target": 1, "emoji": "🎉"})).await;
    let theirs =
        wait_for(&mut ann, "bob's reaction", |m| matches!(m, ServerMsg::React(r) if r.user == bob_info.id));
    assert_eq!(seq_of(&theirs.await), 4);
    assert_eq!(say(&mut ann, "hall", "two", "a3").await.seq, 5);
    assert_eq!(delete(&mut ann, "hall", 5, "a4").await.seq, 6);

    let mut seen = Vec::new();
    for _ in 0..6 {
        let event = next_event(&mut bob).await;
        seen.push((seq_of(&event), kind_of(&event)));
        match &event {
            ServerMsg::Edit(e) => assert_eq!((e.target, e.text.as_str()), (1, "one!")),
            ServerMsg::React(r) => assert_eq!(r.target, 1),
            ServerMsg::Delete(d) => {
                assert_eq!((d.target, d.by.as_str(), d.user.as_str()), (5, "ann", &*ann_info.id))
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        vec![(1, "message"), (2, "edit"), (3, "react"), (4, "react"), (5, "message"), (6, "delete")]
    );
    let (mut late, _) = guest(&app, "late").await;
    match join(&mut late, "hall").await {
        ServerMsg::Joined { head, .. } => assert_eq!(head, 6, "the head counts every event"),
        _ => unreachable!(),
    }
}

// === Edits ===

/// An edit by the author reaches the others with the target, the new text, when, who
/// and the client_id; history (both paths) shows the message under its own seq with the
/// new text and `edited_ts`.
#[tokio::test]
async fn an_edit_by_its_author_reaches_the_room_and_history_shows_the_new_text() {
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    let original = say(&mut ann, "hall", "helo wrld", "m1").await;
    edit(&mut ann, "hall", 1, "hello world", "e1").await;

    let ServerMsg::Message(m) = next_event(&mut bob).await else { panic!("expected the message first") };
    assert_eq!(m.seq, 1);
    let ServerMsg::Edit(e) = next_event(&mut bob).await else { panic!("expected the edit") };
    assert_eq!(e.room, "hall");
    assert_eq!((e.seq, e.target), (2, 1));
    assert_eq!(e.text, "hello world");
    assert_eq!(e.user, ann_info.id);
    assert_eq!(e.nick, "ann");
    assert_eq!(e.client_id, "e1");
    assert!(e.edited_ts >= original.ts, "edited after it was written");

    for messages in [history(&app, "hall", None).await, ws_history(&mut bob, "hall").await] {
        assert_eq!(messages.len(), 1, "an edit is no message of its own: {messages:?}");
        let m = &messages[0];
        assert_eq!((m.seq, m.text.as_str(), m.edited_ts), (1, "hello world", Some(e.edited_ts)));
        assert_eq!((m.client_id.as_str(), m.ts, m.user.as_str()), ("m1", original.ts, &*ann_info.id));
        assert!(!m.deleted);
    }
}

/// Only the author edits a message: another member, even the server's admin, is
/// refused `forbidden` with the client_id; nothing is stored and the socket goes on.
#[tokio::test]
async fn editing_someone_elses_message_is_forbidden() {
    let app = server(|_| {}).await;
    let root = signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let mut a = socket_of(&app, &ann).await;
    let mut b = socket_of(&app, &bob).await;
    let mut r = socket_of(&app, &root).await;
    for c in [&mut a, &mut b, &mut r] {
        join(c, "hall").await;
    }
    say(&mut a, "hall", "ann's words", "a1").await;

    for (c, who) in [(&mut b, "member"), (&mut r, "admin")] {
        let frame =
            json!({"type": "edit", "room": "hall", "target": 1, "text": "not yours", "client_id": "x1"});
        assert_eq!(
            refused(c, frame, "e").await,
            ("forbidden".to_owned(), Some("x1".to_owned())),
            "an edit by the {who}"
        );
    }
    assert_eq!(say(&mut b, "hall", "bob's words", "b1").await.seq, 2, "nothing was stored");
    let messages = history(&app, "hall", Some(&ann)).await;
    assert_eq!((messages[0].text.as_str(), messages[0].edited_ts), ("ann's words", None));
}

/// A retried edit (same client_id, same session) is answered with the original `edit`
/// event, same seq and text; nothing new is stored or broadcast.
#[tokio::test]
async fn a_retried_edit_is_answered_with_the_original_event() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "typo", "m1").await;
    let first = edit(&mut ann, "hall", 1, "fixed", "e1").await;
    assert_eq!(first.seq, 2);
    let retry = edit(&mut ann, "hall", 1, "fixed again", "e1").await;
    assert_eq!(retry, first, "the retry is answered with the stored event");
    assert_eq!(say(&mut ann, "hall", "next", "m2").await.seq, 3, "the retry stored nothing");

    let seen: Vec<(u64, &str)> = {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = next_event(&mut bob).await;
            seen.push((seq_of(&e), kind_of(&e)));
        }
        seen
    };
    assert_eq!(seen, vec![(1, "message"), (2, "edit"), (3, "message")], "the others heard one edit");
    assert_eq!(history(&app, "hall", None).await[0].text, "fixed");
}

// === Deletes ===

/// A retried delete (same client_id, same session) is answered with the original
/// `delete` event, same seq, like a retried send or edit; nothing new is stored.
#[tokio::test]
async fn a_retried_delete_is_answered_with_the_original_event() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "oops", "m1").await;
    let first = delete(&mut ann, "hall", 1, "d1").await;
    assert_eq!(first.seq, 2);
    // Nothing else is on its way to Ann: the next frame is the retry's answer.
    ann.send(json!({"type": "delete", "room": "hall", "target": 1, "client_id": "d1"})).await;
    match next_event(&mut ann).await {
        ServerMsg::Delete(d) => assert_eq!(d, first),
        other => panic!("the retry of a stored delete is answered with the original delete, got {other:?}"),
    }
    assert_eq!(say(&mut ann, "hall", "next", "m2").await.seq, 3, "the retry stored nothing");
    let e = next_event(&mut bob).await;
    assert_eq!((seq_of(&e), kind_of(&e)), (1, "message"));
    let e = next_event(&mut bob).await;
    assert_eq!((seq_of(&e), kind_of(&e)), (2, "delete"));
    let e = next_event(&mut bob).await;
    assert_eq!((seq_of(&e), kind_of(&e)), (3, "message"));
}

/// A plain member may not delete another's message: `forbidden` with the client_id,
/// nothing stored.
#[tokio::test]
async fn deleting_someone_elses_message_is_forbidden_to_a_member() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "keep me", "a1").await;
    let frame = json!({"type": "delete", "room": "hall", "target": 1, "client_id": "d1"});
    assert_eq!(refused(&mut bob, frame, "d").await, ("forbidden".to_owned(), Some("d1".to_owned())));
    assert_eq!(say(&mut bob, "hall", "sorry", "b1").await.seq, 2, "nothing was stored");
    let messages = history(&app, "hall", None).await;
    assert_eq!((messages[0].text.as_str(), messages[0].deleted), ("keep me", false));
}

/// A room's moderator, its owner and the server's admin each delete someone else's
/// message: the author hears `delete` naming who did it, history shows tombstones.
#[tokio::test]
async fn moderators_owners_and_admins_delete_anyones_message() {
    let app = server(|_| {}).await;
    let root = signup(&app, "root").await;
    let olga = signup(&app, "olga").await;
    let mia = signup(&app, "mia").await;
    let uma = signup(&app, "uma").await;
    let mut owner = socket_of(&app, &olga).await;
    let made = ask(&mut owner, json!({"type": "create_room", "room": "hall"}), "c").await;
    assert_eq!(outcome(&made), "joined");
    let role = json!({"action": "role", "username": "mia", "role": "moderator"});
    assert_eq!(post(&app, "/api/rooms/hall/moderation", &olga, role).await, 204);
    let mut moderator = socket_of(&app, &mia).await;
    let mut admin = socket_of(&app, &root).await;
    let mut author = socket_of(&app, &uma).await;
    for c in [&mut moderator, &mut admin, &mut author] {
        join(c, "hall").await;
    }
    for i in 1..=3 {
        assert_eq!(say(&mut author, "hall", &format!("uma's {i}"), &format!("u{i}")).await.seq, i);
    }

    let deleters = [(&mut moderator, &mia), (&mut owner, &olga), (&mut admin, &root)];
    for (i, (c, who)) in deleters.into_iter().enumerate() {
        let target = i as u64 + 1;
        let d = delete(c, "hall", target, &format!("d{i}")).await;
        assert_eq!((d.target, d.by.as_str(), d.user.as_str()), (target, &*who.username, &*who.id));
        let heard =
            wait_for(&mut author, "the delete", |m| matches!(m, ServerMsg::Delete(x) if x.target == target));
        assert_eq!(heard.await, ServerMsg::Delete(d));
    }
    let messages = history(&app, "hall", Some(&uma)).await;
    assert_eq!(
        messages.iter().map(|m| (m.seq, m.deleted, m.text.as_str())).collect::<Vec<_>>(),
        vec![(1, true, ""), (2, true, ""), (3, true, "")]
    );
}

/// A deleted message stays in history as a tombstone under its seq (no text, no
/// reactions) and is no longer found by search, on the socket or over HTTP.
#[tokio::test]
async fn a_deleted_message_is_a_tombstone_in_history_and_gone_from_search() {
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "zebra crossing ahead", "m1").await;
    say(&mut ann, "hall", "the zebra is fine", "m2").await;
    react(&mut ann, &ann_info.id, "hall", 1, "👍", true).await;
    assert_eq!(found(&mut ann, "crossing").await, vec![("hall".to_owned(), 1)]);

    let d = delete(&mut ann, "hall", 1, "d1").await;
    assert_eq!((d.seq, d.target), (4, 1));
    for messages in [history(&app, "hall", None).await, ws_history(&mut ann, "hall").await] {
        assert_eq!(messages.len(), 2, "the tombstone keeps its place: {messages:?}");
        let t = &messages[0];
        assert_eq!((t.seq, t.deleted, t.text.as_str()), (1, true, ""));
        assert!(t.reactions.is_empty(), "a tombstone has no reactions: {t:?}");
        assert_eq!((messages[1].seq, messages[1].deleted), (2, false));
    }
    assert!(found(&mut ann, "crossing").await.is_empty(), "a deleted message is not found");
    assert_eq!(found(&mut ann, "zebra").await, vec![("hall".to_owned(), 2)], "only the live one");
    let (status, body) = get(&app, "/api/search", &[("q", "crossing")], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"], json!([]));
}

/// A deleted message can be neither edited, deleted again, reacted to nor answered:
/// each is `deleted` (with the client_id where the request has one), nothing stored.
#[tokio::test]
async fn a_deleted_message_can_no_longer_be_changed_or_answered() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "soon gone", "m1").await;
    delete(&mut ann, "hall", 1, "d1").await;

    let requests = [
        json!({"type": "edit", "room": "hall", "target": 1, "text": "back", "client_id": "x1"}),
        json!({"type": "delete", "room": "hall", "target": 1, "client_id": "x2"}),
        json!({"type": "react", "room": "hall", "target": 1, "emoji": "👍"}),
        json!({"type": "send", "room": "hall", "text": "re", "client_id": "x3", "reply_to": 1}),
    ];
    for (i, frame) in requests.into_iter().enumerate() {
        let (code, client_id) = refused(&mut ann, frame.clone(), &format!("r{i}")).await;
        assert_eq!(code, "deleted", "{frame}");
        assert_eq!(client_id.as_deref(), frame["client_id"].as_str(), "{frame}");
    }
    let other = json!({"type": "react", "room": "hall", "target": 1, "emoji": "🎉"});
    assert_eq!(refused(&mut bob, other, "b").await.0, "deleted");
    assert_eq!(say(&mut ann, "hall", "after", "m2").await.seq, 3, "nothing was stored");
}

/// Edit, delete and react of a seq that is no message (an edit's seq, one past the head,
/// 0) are `not_found`; edit and delete errors carry the client_id; nothing stored.
#[tokio::test]
async fn changing_a_seq_that_is_not_a_message_is_not_found() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "the message", "m1").await;
    assert_eq!(edit(&mut ann, "hall", 1, "the message!", "e1").await.seq, 2);

    for target in [2u64, 99, 0] {
        let frames = [
            json!({"type": "edit", "room": "hall", "target": target, "text": "x", "client_id": "x1"}),
            json!({"type": "delete", "room": "hall", "target": target, "client_id": "x2"}),
            json!({"type": "react", "room": "hall", "target": target, "emoji": "👍"}),
        ];
        for frame in frames {
            let (code, client_id) = refused(&mut ann, frame.clone(), "nf").await;
            assert_eq!(code, "not_found", "{frame}");
            assert_eq!(client_id.as_deref(), frame["client_id"].as_str(), "{frame}");
        }
    }
    assert_eq!(say(&mut ann, "hall", "next", "m2").await.seq, 3, "nothing was stored");
}

/// Edit, delete, react and read of a room the connection has not joined (or has left)
/// are `not_joined`; edit and delete errors carry the client_id.
#[tokio::test]
async fn changes_in_a_room_not_joined_are_not_joined() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "hello", "m1").await;
    assert!(matches!(
        ask(&mut ann, json!({"type": "leave", "room": "hall"}), "leave").await,
        ServerMsg::Left { .. }
    ));
    for room in ["hall", "elsewhere"] {
        let frames = [
            json!({"type": "edit", "room": room, "target": 1, "text": "x", "client_id": "x1"}),
            json!({"type": "delete", "room": room, "target": 1, "client_id": "x2"}),
            json!({"type": "react", "room": room, "target": 1, "emoji": "👍"}),
            json!({"type": "read", "room": room, "seq": 1}),
        ];
        for frame in frames {
            let (code, client_id) = refused(&mut ann, frame.clone(), "nj").await;
            assert_eq!(code, "not_joined", "{frame}");
            assert_eq!(client_id.as_deref(), frame["client_id"].as_str(), "{frame}");
        }
    }
    match join(&mut ann, "hall").await {
        ServerMsg::Joined { head, .. } => assert_eq!(head, 1, "nothing was stored"),
        _ => unreachable!(),
    }
    assert_eq!(history(&app, "hall", None).await[0].text, "hello");
}

/// A muted member may neither edit their message nor react (`muted`, the edit's with
/// its client_id); nothing is stored, and they still read the room.
#[tokio::test]
async fn a_muted_member_may_neither_edit_nor_react() {
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let olga = signup(&app, "olga").await;
    let bob = signup(&app, "bob").await;
    let mut owner = socket_of(&app, &olga).await;
    assert_eq!(
        outcome(&ask(&mut owner, json!({"type": "create_room", "room": "hall"}), "c").await),
        "joined"
    );
    let mut member = socket_of(&app, &bob).await;
    join(&mut member, "hall").await;
    say(&mut member, "hall", "bob's", "b1").await;
    say(&mut owner, "hall", "olga's", "o1").await;
    let mute = json!({"type": "mute", "room": "hall", "username": "bob"});
    assert_eq!(outcome(&ask(&mut owner, mute, "m").await), "ack");
    member.recv_until(|m| matches!(m, ServerMsg::MemberUpdate { muted: Some(true), .. })).await;

    let frame = json!({"type": "edit", "room": "hall", "target": 1, "text": "louder", "client_id": "x1"});
    assert_eq!(refused(&mut member, frame, "e").await, ("muted".to_owned(), Some("x1".to_owned())));
    let frame = json!({"type": "react", "room": "hall", "target": 2, "emoji": "👍"});
    assert_eq!(refused(&mut member, frame, "r").await.0, "muted");

    assert_eq!(say(&mut owner, "hall", "quiet", "o2").await.seq, 3, "nothing was stored");
    let heard = wait_for(&mut member, "olga's message", |m| matches!(m, ServerMsg::Message(m) if m.seq == 3));
    assert!(matches!(heard.await, ServerMsg::Message(m) if m.text == "quiet"), "a muted member still reads");
    let messages = history(&app, "hall", Some(&olga)).await;
    assert_eq!((messages[0].text.as_str(), messages[0].edited_ts), ("bob's", None));
    assert!(messages[1].reactions.is_empty());
}

// === Reactions ===

/// A reaction is one emoji: a letter, two emoji or nothing is `invalid_emoji` (and
/// stores nothing); a pictograph, a ZWJ sequence or a flag is accepted.
#[tokio::test]
async fn a_reaction_must_be_one_emoji() {
    for good in ["👍", "😀", "👩\u{200D}💻", "🇫🇷", "❤\u{FE0F}"] {
        assert!(is_emoji(good), "{good:?} is one emoji");
    }
    for bad in ["a", "👍👍", "", "👍a", ":+1:"] {
        assert!(!is_emoji(bad), "{bad:?} is not one emoji");
    }
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "react to me", "m1").await;
    for bad in ["a", "👍👍", "", "👍a"] {
        let frame = json!({"type": "react", "room": "hall", "target": 1, "emoji": bad});
        assert_eq!(refused(&mut ann, frame, "bad").await.0, "invalid_emoji", "{bad:?}");
    }
    let r = react(&mut ann, &ann_info.id, "hall", 1, "👩\u{200D}💻", true).await;
    assert_eq!((r.seq, r.on), (2, true), "nothing was stored before");
    assert_eq!(react(&mut ann, &ann_info.id, "hall", 1, "🇫🇷", true).await.seq, 3);
}

/// A reaction request that changes nothing (off when never on, on when on) is stored as
/// the event it is, a no-op by the rules every client applies: deciding "unchanged"
/// before the store would race a toggle still on its way to it.
#[tokio::test]
async fn a_reaction_that_changes_nothing_is_a_no_op_event() {
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "hi", "m1").await;

    let off_before = react(&mut ann, &ann_info.id, "hall", 1, "👍", false).await;
    assert_eq!((off_before.seq, off_before.on), (2, false), "off when never on");
    let on = react(&mut ann, &ann_info.id, "hall", 1, "👍", true).await;
    assert_eq!((on.seq, on.on, on.nick.as_str()), (3, true, "ann"));
    let again = react(&mut ann, &ann_info.id, "hall", 1, "👍", true).await;
    assert_eq!((again.seq, again.on), (4, true), "on when on");
    assert_eq!(
        history(&app, "hall", None).await[0].reactions[0].count,
        1,
        "one reaction per person per emoji"
    );
    let off = react(&mut ann, &ann_info.id, "hall", 1, "👍", false).await;
    assert_eq!((off.seq, off.on), (5, false));
    assert_eq!(say(&mut ann, "hall", "done", "m2").await.seq, 6);

    let mut seen = Vec::new();
    for _ in 0..6 {
        let e = next_event(&mut bob).await;
        seen.push((seq_of(&e), kind_of(&e)));
    }
    assert_eq!(
        seen,
        vec![(1, "message"), (2, "react"), (3, "react"), (4, "react"), (5, "react"), (6, "message")]
    );
    assert!(history(&app, "hall", None).await[0].reactions.is_empty());
}

/// History lists a message's reactions with emoji in the order first added and users
/// in the order they reacted, with counts and nicks; taking one back removes that user.
#[tokio::test]
async fn history_orders_reactions_by_first_use_and_reactors_by_time() {
    let app = server(|_| {}).await;
    let (mut ann, a) = guest(&app, "ann").await;
    let (mut bob, b) = guest(&app, "bob").await;
    let (mut cat, c) = guest(&app, "cat").await;
    for s in [&mut ann, &mut bob, &mut cat] {
        join(s, "hall").await;
    }
    say(&mut ann, "hall", "vote", "m1").await;
    react(&mut ann, &a.id, "hall", 1, "👍", true).await;
    react(&mut bob, &b.id, "hall", 1, "🎉", true).await;
    react(&mut cat, &c.id, "hall", 1, "👍", true).await;
    react(&mut bob, &b.id, "hall", 1, "👍", true).await;
    react(&mut cat, &c.id, "hall", 1, "😀", true).await;
    react(&mut ann, &a.id, "hall", 1, "👍", false).await;

    let expected = vec![
        ("👍".to_owned(), 2, vec![c.id.clone(), b.id.clone()], vec!["cat".to_owned(), "bob".to_owned()]),
        ("🎉".to_owned(), 1, vec![b.id.clone()], vec!["bob".to_owned()]),
        ("😀".to_owned(), 1, vec![c.id.clone()], vec!["cat".to_owned()]),
    ];
    for messages in [history(&app, "hall", None).await, ws_history(&mut ann, "hall").await] {
        let got: Vec<_> = messages[0]
            .reactions
            .iter()
            .map(|r| (r.emoji.clone(), r.count, r.users.clone(), r.nicks.clone()))
            .collect();
        assert_eq!(got, expected);
    }
}

/// At most 20 distinct emoji on a message: a 21st is `too_many_reactions`, stores
/// nothing; one more person on an emoji already there is still fine.
#[tokio::test]
async fn a_message_holds_at_most_20_distinct_emoji() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "so many feelings", "m1").await;
    // A connection changes 10 reactions at once (then 4 a second): two of them fill it.
    for g in 0..2 {
        let (mut c, info) = guest(&app, &format!("g{g}")).await;
        join(&mut c, "hall").await;
        for i in g * 10..g * 10 + 10 {
            assert!(is_emoji(&emoji(i)), "{} is an emoji", emoji(i));
            react(&mut c, &info.id, "hall", 1, &emoji(i), true).await;
        }
    }
    let (mut late, info) = guest(&app, "late").await;
    join(&mut late, "hall").await;
    let frame = json!({"type": "react", "room": "hall", "target": 1, "emoji": emoji(20)});
    assert_eq!(refused(&mut late, frame, "r").await.0, "too_many_reactions");
    let r = react(&mut late, &info.id, "hall", 1, &emoji(0), true).await;
    assert_eq!(r.seq, 22, "the refusal stored nothing");

    let m = &history(&app, "hall", None).await[0];
    assert_eq!(m.reactions.len(), 20);
    assert_eq!(
        m.reactions.iter().map(|r| r.emoji.clone()).collect::<Vec<_>>(),
        (0..20).map(emoji).collect::<Vec<_>>()
    );
    assert_eq!(m.reactions[0].count, 2);
}

/// At most 200 reactions (people × emoji) on a message: the 201st is
/// `too_many_reactions`, even on an emoji already there.
#[tokio::test]
async fn a_message_holds_at_most_200_reactions() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "popular", "m1").await;
    // Twenty people, ten reactions each (a connection's burst): every one of the 20 emoji
    // gets ten people.
    for g in 0..20 {
        let (mut c, info) = guest(&app, &format!("g{g}")).await;
        join(&mut c, "hall").await;
        let first = (g % 2) * 10;
        for i in first..first + 10 {
            c.send(json!({"type": "react", "room": "hall", "target": 1, "emoji": emoji(i)})).await;
        }
        for _ in 0..10 {
            wait_for(
                &mut c,
                "a reaction's echo",
                |m| matches!(m, ServerMsg::React(r) if r.user == info.id && r.on),
            )
            .await;
        }
    }
    let (mut late, _) = guest(&app, "late").await;
    join(&mut late, "hall").await;
    let frame = json!({"type": "react", "room": "hall", "target": 1, "emoji": emoji(0)});
    assert_eq!(refused(&mut late, frame, "r").await.0, "too_many_reactions");
    assert_eq!(say(&mut late, "hall", "wow", "l1").await.seq, 202, "the refusal stored nothing");

    let m = &history(&app, "hall", None).await[0];
    assert_eq!(m.reactions.len(), 20);
    assert!(m.reactions.iter().all(|r| r.count == 10), "{:?}", m.reactions);
    assert_eq!(m.reactions.iter().map(|r| r.count).sum::<u32>(), 200);
}

/// Reaction changes are rate limited per connection (`rate_limited` with when to
/// retry); a refused one is not stored, and the connection goes on.
#[tokio::test]
async fn reactions_are_rate_limited() {
    let app = server(|_| {}).await;
    let (mut ann, ann_info) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "spam me", "m1").await;
    for i in 0..20 {
        ann.send(json!({"type": "react", "room": "hall", "target": 1, "emoji": emoji(i)})).await;
    }
    let (mut stored, mut limited) = (0, 0);
    while stored + limited < 20 {
        match next_event(&mut ann).await {
            ServerMsg::React(r) => {
                assert_eq!(r.user, ann_info.id);
                stored += 1
            }
            ServerMsg::Error { code, retry_after_ms, .. } => {
                assert_eq!(code.as_str(), "rate_limited");
                assert!(retry_after_ms.is_some_and(|ms| ms > 0));
                limited += 1
            }
            other => panic!("expected a reaction or a refusal, got {other:?}"),
        }
    }
    assert!(limited > 0, "20 reactions at once are over the allowance");
    assert!(stored >= 10, "the burst is allowed");
    let m = &history(&app, "hall", None).await[0];
    assert_eq!(m.reactions.len(), stored, "only the allowed ones are stored");
    assert_eq!(say(&mut ann, "hall", "still here", "m2").await.seq, 2 + stored as u64);
}

// === Replies ===

/// `reply_to` must name a message of the room: a missing seq (or an edit's) is
/// `not_found` with the client_id, nothing is stored and the client_id stays free; a
/// reply to a message carries `reply_to` live and in history.
#[tokio::test]
async fn a_reply_to_a_missing_message_is_not_found() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let (mut bob, _) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "question?", "m1").await;
    edit(&mut ann, "hall", 1, "question!?", "e1").await;
    for missing in [99u64, 2] {
        let frame =
            json!({"type": "send", "room": "hall", "text": "answer", "client_id": "r1", "reply_to": missing});
        assert_eq!(refused(&mut bob, frame, "r").await, ("not_found".to_owned(), Some("r1".to_owned())));
    }
    bob.send(json!({"type": "send", "room": "hall", "text": "answer", "client_id": "r1", "reply_to": 1}))
        .await;
    let reply =
        wait_for(&mut bob, "the reply", |m| matches!(m, ServerMsg::Message(m) if m.client_id == "r1"));
    let ServerMsg::Message(reply) = reply.await else { unreachable!() };
    assert_eq!((reply.seq, reply.reply_to), (3, Some(1)), "nothing was stored before");
    let heard = wait_for(&mut ann, "bob's reply", |m| matches!(m, ServerMsg::Message(m) if m.seq == 3));
    assert!(matches!(heard.await, ServerMsg::Message(m) if m.reply_to == Some(1)));
    let messages = history(&app, "hall", None).await;
    assert_eq!(
        messages.iter().map(|m| (m.seq, m.reply_to)).collect::<Vec<_>>(),
        vec![(1, None), (3, Some(1))]
    );
}

// === Mentions ===

/// `mentions` are the `@username`s of the text that name accounts, lower case, once
/// each (not an e-mail address, not a name nobody has); an edit recomputes them, live,
/// in history and in the mentioned users' counts.
#[tokio::test]
async fn mentions_name_existing_accounts_and_edits_recompute_them() {
    let app = server(|_| {}).await;
    let root = signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    signup(&app, "carol").await;
    let mut b = socket_of(&app, &bob).await;
    join(&mut b, "hall").await;
    b.send(json!({"type": "read", "room": "hall", "seq": 0})).await;
    let mut a = socket_of(&app, &ann).await;
    join(&mut a, "hall").await;

    let text = "hi @Bob, @bob and @nobody; cc @carol. mail ann@bob.org";
    let m = say(&mut a, "hall", text, "m1").await;
    assert_eq!(m.mentions, vec!["bob", "carol"]);
    let heard = wait_for(&mut b, "ann's message", |m| matches!(m, ServerMsg::Message(_)));
    assert!(matches!(heard.await, ServerMsg::Message(m) if m.mentions == ["bob", "carol"]));
    let info = listed(&mut b, "hall").await;
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(0), Some(1), Some(1)));

    let e = edit(&mut a, "hall", 1, "sorry, I meant @ROOT", "e1").await;
    assert_eq!(e.mentions, vec!["root"]);
    let heard = wait_for(&mut b, "the edit", |m| matches!(m, ServerMsg::Edit(_)));
    assert!(matches!(heard.await, ServerMsg::Edit(e) if e.mentions == ["root"]));
    let messages = history(&app, "hall", Some(&root)).await;
    assert_eq!(messages[0].mentions, vec!["root"]);
    let info = listed(&mut b, "hall").await;
    assert_eq!((info.unread, info.mentions), (Some(1), Some(0)), "bob is no longer mentioned");
}

// === Read state ===

/// A read marker reaches the account's other sockets (not the one that sent it), never
/// moves back, stops at the room's head, and is what `joined.last_read` says on a new
/// connection, after a restart too; `list_rooms` and `GET /api/rooms` show it.
#[tokio::test]
async fn read_markers_reach_the_accounts_other_sockets_and_persist() {
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let mut one = socket_of(&app, &ann).await;
    let mut two = socket_of(&app, &ann).await;
    join(&mut one, "hall").await;
    join(&mut two, "hall").await;
    for i in 1..=3 {
        say(&mut one, "hall", &format!("m{i}"), &format!("m{i}")).await;
    }

    for (sent, now) in [(2u64, 2u64), (1, 2), (99, 3)] {
        one.send(json!({"type": "read", "room": "hall", "seq": sent})).await;
        match two.recv_until(|m| matches!(m, ServerMsg::Read { .. })).await {
            ServerMsg::Read { room, seq } => {
                assert_eq!((room.as_str(), seq), ("hall", now), "after reading up to {sent}")
            }
            _ => unreachable!(),
        }
    }
    // The sender hears no `read` of its own: the next thing it gets is this reply.
    one.send(json!({"type": "list_rooms", "ref": "l"})).await;
    let reply = one.recv_until(|m| !is_noise(m) && !matches!(m, ServerMsg::Message(_))).await;
    let ServerMsg::Rooms { rooms, .. } = reply else { panic!("expected rooms first, got {reply:?}") };
    let info = rooms.iter().find(|r| r.name == "hall").unwrap();
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(3), Some(0), Some(0)));
    let info = http_room(&app, "hall", Some(&ann)).await;
    assert_eq!((info.last_read, info.unread), (Some(3), Some(0)));

    drop((one, two));
    let mut three = socket_of(&app, &ann).await;
    assert_eq!(read_state(&join(&mut three, "hall").await), (Some(3), Some(0), Some(0)));
    drop(three);

    let db = app.db.clone();
    let _dir = app.stop().await;
    let app = spawn_on(db, wide).await;
    let mut four = socket_of(&app, &ann).await;
    assert_eq!(read_state(&join(&mut four, "hall").await).0, Some(3), "the marker was stored");
}

/// A guest's read marker is accepted (no error) but not kept: guests have no read state
/// in `joined`, `list_rooms` or `GET /api/rooms`.
#[tokio::test]
async fn a_guests_read_marker_is_accepted_and_not_kept() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    let joined = join(&mut ann, "hall").await;
    assert_eq!(read_state(&joined), (None, None, None));
    say(&mut ann, "hall", "hello", "m1").await;
    ann.send(json!({"type": "read", "room": "hall", "seq": 1})).await;
    let reply = ask(&mut ann, json!({"type": "list_rooms"}), "l").await;
    let ServerMsg::Rooms { rooms, .. } = reply else { panic!("expected rooms, got {reply:?}") };
    let info = rooms.iter().find(|r| r.name == "hall").unwrap();
    assert_eq!((info.last_read, info.unread, info.mentions), (None, None, None));
    let info = http_room(&app, "hall", None).await;
    assert_eq!((info.last_read, info.unread), (None, None));
    let (mut again, _) = guest(&app, "ann2").await;
    assert_eq!(read_state(&join(&mut again, "hall").await), (None, None, None));
}

/// On a fresh join a signed-in user hears how far they read, how many messages by
/// others came since (deleted ones and their own not counted) and how many of those
/// mention them; the room lists (socket and HTTP) say the same. A user who never read
/// the room has `last_read` 0.
#[tokio::test]
async fn a_fresh_join_counts_unread_messages_and_mentions() {
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let mut b1 = socket_of(&app, &bob).await;
    assert_eq!(read_state(&join(&mut b1, "hall").await).0, Some(0), "never read");
    let mut a = socket_of(&app, &ann).await;
    join(&mut a, "hall").await;
    say(&mut a, "hall", "welcome", "a1").await;
    b1.recv_until(|m| matches!(m, ServerMsg::Message(_))).await;
    b1.send(json!({"type": "read", "room": "hall", "seq": 1})).await;
    let info = listed(&mut b1, "hall").await;
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(1), Some(0), Some(0)));
    drop(b1);

    let mut b2 = socket_of(&app, &bob).await;
    join(&mut b2, "hall").await;
    say(&mut a, "hall", "hey @bob look", "a2").await; // 2: unread, mentions bob
    say(&mut a, "hall", "plain", "a3").await; // 3: unread
    say(&mut a, "hall", "@bob again", "a4").await; // 4: deleted below
    delete(&mut a, "hall", 4, "a5").await; // 5
    say(&mut a, "hall", "to @root", "a6").await; // 6: unread
    say(&mut b2, "hall", "note to self @bob", "b1").await; // 7: bob's own

    let mut b3 = socket_of(&app, &bob).await;
    assert_eq!(read_state(&join(&mut b3, "hall").await), (Some(1), Some(3), Some(1)));
    let info = listed(&mut b3, "hall").await;
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(1), Some(3), Some(1)));
    let info = http_room(&app, "hall", Some(&bob)).await;
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(1), Some(3), Some(1)));

    b3.send(json!({"type": "read", "room": "hall", "seq": 7})).await;
    let info = listed(&mut b3, "hall").await;
    assert_eq!((info.last_read, info.unread, info.mentions), (Some(7), Some(0), Some(0)));
    let mut b4 = socket_of(&app, &bob).await;
    assert_eq!(read_state(&join(&mut b4, "hall").await), (Some(7), Some(0), Some(0)));
}

// === Replay ===

/// A `join` with `since` replays every event after it (messages in their current text,
/// without reactions); applying them in order gives exactly what history shows. The
/// text of an edit of a message deleted later is gone from the log too.
#[tokio::test]
async fn a_join_since_replays_every_event_and_ends_where_history_is() {
    let app = server(|_| {}).await;
    let (mut ann, a) = guest(&app, "ann").await;
    let (mut bob, b) = guest(&app, "bob").await;
    join(&mut ann, "hall").await;
    join(&mut bob, "hall").await;
    say(&mut ann, "hall", "alpha", "m1").await; // 1
    say(&mut ann, "hall", "beta", "m2").await; // 2
    say(&mut ann, "hall", "gamma", "m3").await; // 3
    react(&mut bob, &b.id, "hall", 1, "👍", true).await; // 4
    edit(&mut ann, "hall", 2, "beta two", "e1").await; // 5
    react(&mut bob, &b.id, "hall", 1, "🎉", true).await; // 6
    react(&mut ann, &a.id, "hall", 1, "👍", true).await; // 7
    edit(&mut ann, "hall", 3, "gamma secret", "e2").await; // 8
    delete(&mut ann, "hall", 3, "d1").await; // 9
    react(&mut bob, &b.id, "hall", 1, "👍", false).await; // 10
    edit(&mut ann, "hall", 2, "beta three", "e3").await; // 11
    ann.send(json!({"type": "send", "room": "hall", "text": "delta @x", "client_id": "m4", "reply_to": 1}))
        .await; // 12
    wait_for(&mut ann, "the reply", |m| matches!(m, ServerMsg::Message(m) if m.client_id == "m4")).await;
    react(&mut bob, &b.id, "hall", 12, "😀", true).await; // 13

    let (mut cat, _) = guest(&app, "cat").await;
    let (joined, events) = join_replay(&mut cat, "hall", Some(0), 13).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 13, truncated: false, .. }), "{joined:?}");
    assert_eq!(events.iter().map(seq_of).collect::<Vec<_>>(), (1..=13).collect::<Vec<_>>());

    let mut state: BTreeMap<u64, Shown> = BTreeMap::new();
    for event in &events {
        match event {
            ServerMsg::Message(m) => {
                assert!(m.reactions.is_empty(), "a replayed message carries no reactions: {m:?}");
                state.insert(m.seq, shown(m));
            }
            ServerMsg::Edit(e) => {
                let m = state.get_mut(&e.target).expect("an edit follows its message");
                if e.target == 3 {
                    assert_eq!(e.text, "", "the edit of a deleted message is redacted");
                }
                if !m.deleted {
                    m.text = e.text.clone();
                    m.edited_ts = Some(e.edited_ts);
                    m.mentions = e.mentions.clone();
                }
            }
            ServerMsg::Delete(d) => {
                let m = state.get_mut(&d.target).unwrap();
                m.deleted = true;
                m.text.clear();
                m.reactions.clear();
                m.mentions.clear();
            }
            ServerMsg::React(r) => {
                let m = state.get_mut(&r.target).unwrap();
                let at = m.reactions.iter().position(|(e, _)| *e == r.emoji);
                match (r.on, at) {
                    (true, Some(i)) => m.reactions[i].1.push(r.user.clone()),
                    (true, None) => m.reactions.push((r.emoji.clone(), vec![r.user.clone()])),
                    (false, Some(i)) => {
                        m.reactions[i].1.retain(|u| *u != r.user);
                        if m.reactions[i].1.is_empty() {
                            m.reactions.remove(i);
                        }
                    }
                    (false, None) => {}
                }
            }
            other => panic!("not an event: {other:?}"),
        }
    }
    let rebuilt: Vec<Shown> = state.into_values().collect();
    let stored: Vec<Shown> = history(&app, "hall", None).await.iter().map(shown).collect();
    assert_eq!(rebuilt, stored);
    assert_eq!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 12],
        "messages keep their seqs"
    );
    assert_eq!(stored[1].text, "beta three");
    // 👍 came first and never went away (Ann's stayed when Bob took his back).
    assert_eq!(
        stored[0].reactions,
        vec![("👍".to_owned(), vec![a.id.clone()]), ("🎉".to_owned(), vec![b.id.clone()])]
    );

    // From further on: only what came after.
    let (mut dan, _) = guest(&app, "dan").await;
    let (_, events) = join_replay(&mut dan, "hall", Some(9), 4).await;
    assert_eq!(
        events.iter().map(|e| (seq_of(e), kind_of(e))).collect::<Vec<_>>(),
        vec![(10, "react"), (11, "edit"), (12, "message"), (13, "react")]
    );
}

/// A fresh join (no `since`) replays the newest 50 messages as they are now (edited
/// text, tombstones, reactions), and no other events.
#[tokio::test]
async fn a_fresh_join_replays_the_newest_messages_as_they_are_now() {
    let app = server(|c| c.msg_burst = 1000).await;
    let (mut ann, a) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    for i in 1..=52 {
        say(&mut ann, "hall", &format!("m{i}"), &format!("m{i}")).await;
    }
    edit(&mut ann, "hall", 3, "m3 edited", "e1").await; // 53
    react(&mut ann, &a.id, "hall", 52, "👍", true).await; // 54
    delete(&mut ann, "hall", 51, "d1").await; // 55

    let (mut bob, _) = guest(&app, "bob").await;
    let (joined, replay) = join_replay(&mut bob, "hall", None, 50).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 55, .. }), "{joined:?}");
    let messages: Vec<ChatMessage> = replay
        .into_iter()
        .map(|e| match e {
            ServerMsg::Message(m) => m,
            other => panic!("a fresh join replays messages only, got {other:?}"),
        })
        .collect();
    assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (3..=52).collect::<Vec<_>>());
    assert_eq!((messages[0].text.as_str(), messages[0].edited_ts.is_some()), ("m3 edited", true));
    assert_eq!((messages[48].deleted, messages[48].text.as_str()), (true, ""));
    assert_eq!(messages[49].reactions.len(), 1);
    assert_eq!((messages[49].reactions[0].emoji.as_str(), messages[49].reactions[0].count), ("👍", 1));
    // The replay is over: the next frame answers this request.
    bob.send(json!({"type": "list_rooms", "ref": "after"})).await;
    let next = next_event(&mut bob).await;
    assert_eq!((outcome(&next), next.reference()), ("rooms".to_owned(), Some("after")), "{next:?}");
    let stored = history(&app, "hall", None).await;
    assert_eq!(
        messages.iter().map(shown).collect::<Vec<_>>(),
        stored[2..].iter().map(shown).collect::<Vec<_>>(),
        "the replay is history's newest 50"
    );
}

// === Search ===

/// Search finds words in every room the user may read, newest first, with room, seq,
/// nick, time and a snippet; `from:username`, `in:room` and the `room` field narrow it.
#[tokio::test]
async fn search_finds_words_with_from_and_in_filters() {
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let mut a = socket_of(&app, &ann).await;
    let mut b = socket_of(&app, &bob).await;
    join(&mut a, "hall").await;
    join(&mut a, "ops").await;
    join(&mut b, "hall").await;
    let first = say(&mut a, "hall", "we deploy on friday", "a1").await;
    say(&mut b, "hall", "deploy monday instead", "b1").await;
    say(&mut a, "ops", "deploy tuesday at noon", "a2").await;
    say(&mut a, "hall", "lunch?", "a3").await;

    let (hits, has_more, next) = search(&mut a, json!({"query": "deploy"})).await;
    assert_eq!(
        hits.iter().map(|h| (h.room.as_str(), h.seq, h.nick.as_str())).collect::<Vec<_>>(),
        vec![("ops", 1, "ann"), ("hall", 2, "bob"), ("hall", 1, "ann")]
    );
    assert!(!has_more && next.is_none());
    assert_eq!(hits[2].ts, first.ts);
    assert!(hits.iter().all(|h| h.snippet.contains("deploy")), "{hits:?}");

    assert_eq!(found(&mut a, "from:bob deploy").await, vec![("hall".to_owned(), 2)]);
    assert_eq!(found(&mut a, "in:ops deploy").await, vec![("ops".to_owned(), 1)]);
    let (hits, _, _) = search(&mut a, json!({"query": "deploy", "room": "hall"})).await;
    assert_eq!(hits.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(found(&mut a, "deploy -monday").await.len(), 2);
}

/// Search pages: with `limit`, `has_more` and `next_before` lead to the rest.
#[tokio::test]
async fn search_pages_with_next_before() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    for i in 1..=3 {
        say(&mut ann, "hall", &format!("kiwi number {i}"), &format!("k{i}")).await;
    }
    let (hits, has_more, next) = search(&mut ann, json!({"query": "kiwi", "limit": 2})).await;
    assert_eq!(hits.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![3, 2]);
    assert!(has_more);
    let next = next.expect("a cursor to the next page");
    let (hits, has_more, after) =
        search(&mut ann, json!({"query": "kiwi", "limit": 2, "before": next})).await;
    assert_eq!(hits.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![1]);
    assert!(!has_more && after.is_none());
}

/// An edit is re-indexed: the old words are no longer found, the new ones are.
#[tokio::test]
async fn an_edit_is_searched_by_its_new_words() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "apple pie recipe", "m1").await;
    assert_eq!(found(&mut ann, "apple").await, vec![("hall".to_owned(), 1)]);
    edit(&mut ann, "hall", 1, "banana bread recipe", "e1").await;
    assert!(found(&mut ann, "apple").await.is_empty(), "the old words are gone");
    assert_eq!(found(&mut ann, "banana").await, vec![("hall".to_owned(), 1)]);
    assert_eq!(found(&mut ann, "recipe").await, vec![("hall".to_owned(), 1)], "found once");
}

/// A private room's messages are never found by someone who may not read it, account
/// or guest, socket or HTTP; naming it (`in:` or `room`) is `not_found`. Once invited,
/// they find them.
#[tokio::test]
async fn search_never_shows_a_private_room_to_a_non_member() {
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let mut owner = socket_of(&app, &bob).await;
    let create = json!({"type": "create_room", "room": "vault", "visibility": "private"});
    assert_eq!(outcome(&ask(&mut owner, create, "c").await), "joined");
    say(&mut owner, "vault", "secret plans", "v1").await;
    join(&mut owner, "hall").await;
    say(&mut owner, "hall", "a secret everyone knows", "h1").await;

    let mut outsider = socket_of(&app, &carol).await;
    let (mut visitor, _) = guest(&app, "visitor").await;
    for c in [&mut outsider, &mut visitor] {
        assert_eq!(found(c, "secret").await, vec![("hall".to_owned(), 1)]);
        let named = ask(c, json!({"type": "search", "query": "in:vault secret"}), "in").await;
        assert_eq!(outcome(&named), "not_found");
        let named = ask(c, json!({"type": "search", "query": "secret", "room": "vault"}), "room").await;
        assert_eq!(outcome(&named), "not_found");
    }
    for who in [Some(&carol), None] {
        let (status, body) = get(&app, "/api/search", &[("q", "secret")], who).await;
        assert_eq!(status, 200, "{body}");
        let hits: Vec<SearchHit> = serde_json::from_value(body["hits"].clone()).unwrap();
        assert_eq!(hits.iter().map(|h| h.room.as_str()).collect::<Vec<_>>(), vec!["hall"]);
        let (status, body) = get(&app, "/api/search", &[("q", "secret"), ("room", "vault")], who).await;
        assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
        let (status, body) = get(&app, "/api/search", &[("q", "in:vault secret")], who).await;
        assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    }

    let invite = json!({"type": "invite", "room": "vault", "username": "carol"});
    assert_eq!(outcome(&ask(&mut owner, invite, "i").await), "ack");
    assert_eq!(found(&mut outsider, "secret").await, vec![("hall".to_owned(), 1), ("vault".to_owned(), 1)]);
    assert_eq!(found(&mut owner, "in:vault secret").await, vec![("vault".to_owned(), 1)]);
}

/// A query that is empty, has an unclosed quote, is over 200 characters or asks for a
/// one-letter prefix is `invalid_query`; the connection goes on searching.
#[tokio::test]
async fn bad_search_queries_are_invalid_query() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "hello there", "m1").await;
    let long = "x".repeat(201);
    for bad in ["", "\"unclosed quote", "a*", long.as_str()] {
        let reply = ask(&mut ann, json!({"type": "search", "query": bad}), "bad").await;
        assert_eq!(outcome(&reply), "invalid_query", "{bad:?}");
    }
    assert_eq!(found(&mut ann, "hello").await, vec![("hall".to_owned(), 1)]);

    // Another guest: each guest session has its own allowance.
    let (mut bob, _) = guest(&app, "bob").await;
    let reply = ask(&mut bob, json!({"type": "search", "query": "   "}), "blank").await;
    assert_eq!(outcome(&reply), "invalid_query");
    let longest = "y".repeat(200);
    let (hits, _, _) = search(&mut bob, json!({"query": longest})).await;
    assert!(hits.is_empty(), "200 characters is a query");
}

/// `GET /api/search?q=…` answers `{query, hits, has_more, next?}`; a bad query is 400
/// `invalid_query`, a room that does not exist 404.
#[tokio::test]
async fn http_search_answers_json_and_refuses_bad_queries() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    let first = say(&mut ann, "hall", "search over http works", "m1").await;
    say(&mut ann, "hall", "http again", "m2").await;

    let (status, body) = get(&app, "/api/search", &[("q", "works")], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["query"], "works");
    assert_eq!(body["has_more"], false);
    assert!(body.get("next").is_none(), "{body}");
    let hits: Vec<SearchHit> = serde_json::from_value(body["hits"].clone()).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].room.as_str(), hits[0].seq, hits[0].nick.as_str()), ("hall", 1, "ann"));
    assert_eq!(hits[0].ts, first.ts);
    assert!(hits[0].snippet.contains("works"), "{:?}", hits[0]);

    let (status, body) =
        get(&app, "/api/search", &[("q", "http"), ("room", "hall"), ("limit", "1")], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["hits"][0]["seq"].as_u64(), &body["has_more"]), (Some(2), &json!(true)));
    let next = body["next"].as_i64().expect("a cursor").to_string();
    let (_, body) = get(&app, "/api/search", &[("q", "http"), ("before", next.as_str())], None).await;
    assert_eq!(
        body["hits"].as_array().unwrap().iter().map(|h| h["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(body["has_more"], false);

    for bad in ["", "a*", "\"open", &"z".repeat(201)] {
        let (status, body) = get(&app, "/api/search", &[("q", bad)], None).await;
        assert_eq!((status, &body["code"]), (400, &json!("invalid_query")), "{bad:?}: {body}");
    }
    let (status, body) = get(&app, "/api/search", &[("q", "works"), ("room", "nowhere")], None).await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
}

/// Searches are rate limited per connection (`rate_limited` with when to retry); the
/// connection goes on with other requests.
#[tokio::test]
async fn searches_are_rate_limited() {
    let app = server(|_| {}).await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    for i in 0..14 {
        ann.send(json!({"type": "search", "query": "anything", "ref": format!("s{i}")})).await;
    }
    let mut outcomes = Vec::new();
    for i in 0..14 {
        let reply = ann.recv_until(|m| m.reference().is_some()).await;
        assert_eq!(reply.reference(), Some(format!("s{i}").as_str()), "replies in order");
        if let ServerMsg::Error { retry_after_ms, .. } = &reply {
            assert!(retry_after_ms.is_some_and(|ms| ms > 0), "{reply:?}");
        }
        outcomes.push(outcome(&reply));
    }
    assert_eq!(&outcomes[..10], ["search_results"; 10], "ten at once are allowed");
    assert!(outcomes.contains(&"rate_limited".to_owned()), "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o == "search_results" || o == "rate_limited"), "{outcomes:?}");
    assert_eq!(say(&mut ann, "hall", "still open", "m1").await.seq, 1);
}

/// A bot's retry (same `client_id`) of a stored reply is answered with the original even
/// after the message it answered was deleted: the dedup comes before the checks.
#[tokio::test]
async fn an_http_retry_of_a_stored_reply_is_answered_after_its_original_is_deleted() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let mut sock = socket_of(&app, &ann).await;
    join(&mut sock, "hall").await;
    say(&mut sock, "hall", "question", "q1").await;
    let body = json!({"text": "answer", "client_id": "r1", "reply_to": 1});
    assert_eq!(post(&app, "/api/rooms/hall/messages", &ann, body.clone()).await, 201);
    sock.send(json!({"type": "delete", "room": "hall", "target": 1, "client_id": "d1"})).await;
    sock.recv_until(|m| matches!(m, ServerMsg::Delete(d) if d.target == 1)).await;
    assert_eq!(post(&app, "/api/rooms/hall/messages", &ann, body).await, 200, "answered with the original");
    let answers: Vec<ChatMessage> =
        history(&app, "hall", None).await.into_iter().filter(|m| m.text == "answer").collect();
    assert_eq!(answers.len(), 1, "stored once");
    assert_eq!(answers[0].reply_to, Some(1));
    // A new reply to the deleted message is refused.
    let fresh = json!({"text": "late", "client_id": "r2", "reply_to": 1});
    assert_eq!(post(&app, "/api/rooms/hall/messages", &ann, fresh).await, 409);
}

/// One account's sockets and its HTTP searches share one allowance: a second tab does not
/// double it.
#[tokio::test]
async fn an_accounts_connections_share_one_search_allowance() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let mut first = socket_of(&app, &ann).await;
    let mut second = socket_of(&app, &ann).await;
    for i in 0..10 {
        let reply = ask(&mut first, json!({"type": "search", "query": "anything"}), &format!("a{i}")).await;
        assert_eq!(outcome(&reply), "search_results");
    }
    let reply = ask(&mut second, json!({"type": "search", "query": "anything"}), "b0").await;
    assert_eq!(outcome(&reply), "rate_limited");
    let (status, body) = get(&app, "/api/search", &[("q", "anything")], Some(&ann)).await;
    assert_eq!((status, &body["code"]), (429, &json!("rate_limited")), "{body}");
}

/// Edits and deletes draw on the `send` allowance: over it they are `rate_limited` with
/// their client_id and stored nothing.
#[tokio::test]
async fn edits_and_deletes_share_the_send_allowance() {
    let app = server(|c| {
        c.msg_rate = 1;
        c.msg_burst = 2;
    })
    .await;
    let (mut ann, _) = guest(&app, "ann").await;
    join(&mut ann, "hall").await;
    say(&mut ann, "hall", "one", "m1").await;
    edit(&mut ann, "hall", 1, "one!", "e1").await;
    let frame = json!({"type": "edit", "room": "hall", "target": 1, "text": "one!!", "client_id": "e2"});
    assert_eq!(refused(&mut ann, frame, "e").await, ("rate_limited".to_owned(), Some("e2".to_owned())));
    let frame = json!({"type": "delete", "room": "hall", "target": 1, "client_id": "d1"});
    assert_eq!(refused(&mut ann, frame, "d").await, ("rate_limited".to_owned(), Some("d1".to_owned())));

    let (mut bob, _) = guest(&app, "bob").await;
    let (joined, _) = join_replay(&mut bob, "hall", None, 1).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 2, .. }), "nothing was stored: {joined:?}");
    let messages = history(&app, "hall", None).await;
    assert_eq!((messages[0].text.as_str(), messages[0].deleted), ("one!", false));
}

// --- HTTP: changing messages ---

/// A request with `who`'s cookie from this server's origin: status and JSON body.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: &User,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, app.url(path))
        .header("cookie", &who.cookie)
        .header("origin", format!("http://{}", app.addr));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Bots edit, delete and react over HTTP with the socket's rules and answers: the stored
/// event (as the socket sends it), a retry answered with the original, refusals with the
/// socket's codes, a private room 404 to an outsider, and every socket in the room sees
/// each event once, in seq order.
#[tokio::test]
async fn messages_change_over_http_as_over_the_socket() {
    use reqwest::Method;
    let app = server(|_| {}).await;
    signup(&app, "root").await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let mut watcher = socket_of(&app, &bob).await;
    join(&mut watcher, "hall").await;
    let mut sock = socket_of(&app, &ann).await;
    join(&mut sock, "hall").await;
    say(&mut sock, "hall", "draft", "m1").await;

    let edit = json!({"text": "final", "client_id": "e1"});
    let (status, body) =
        call(&app, Method::PATCH, "/api/rooms/hall/messages/1", &ann, Some(edit.clone())).await;
    assert_eq!(
        (status, &body["type"], &body["seq"], &body["text"]),
        (200, &json!("edit"), &json!(2), &json!("final"))
    );
    let (status, again) = call(&app, Method::PATCH, "/api/rooms/hall/messages/1", &ann, Some(edit)).await;
    assert_eq!((status, again), (200, body), "a retry answers the original");
    let theirs = json!({"text": "mine now", "client_id": "b1"});
    let (status, body) = call(&app, Method::PATCH, "/api/rooms/hall/messages/1", &bob, Some(theirs)).await;
    assert_eq!((status, &body["code"]), (403, &json!("forbidden")), "{body}");
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/rooms/hall/messages/9",
        &ann,
        Some(json!({"text": "x", "client_id": "e9"})),
    )
    .await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");

    let react = json!({"emoji": "🎉"});
    let (status, body) =
        call(&app, Method::PUT, "/api/rooms/hall/messages/1/reactions", &bob, Some(react)).await;
    assert_eq!(
        (status, &body["type"], &body["seq"], &body["on"]),
        (200, &json!("react"), &json!(3), &json!(true))
    );
    let bad = json!({"emoji": "yay"});
    let (status, body) =
        call(&app, Method::PUT, "/api/rooms/hall/messages/1/reactions", &bob, Some(bad)).await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_emoji")), "{body}");

    let (status, body) =
        call(&app, Method::DELETE, "/api/rooms/hall/messages/1?client_id=d1", &ann, None).await;
    assert_eq!((status, &body["type"], &body["seq"]), (200, &json!("delete"), &json!(4)));
    let (status, again) =
        call(&app, Method::DELETE, "/api/rooms/hall/messages/1?client_id=d1", &ann, None).await;
    assert_eq!((status, again), (200, body), "a retried deletion answers the original");
    let (status, body) =
        call(&app, Method::DELETE, "/api/rooms/hall/messages/1?client_id=d2", &ann, None).await;
    assert_eq!((status, &body["code"]), (409, &json!("deleted")), "{body}");

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut watcher).await;
        seen.push((seq_of(&e), kind_of(&e)));
    }
    assert_eq!(seen, vec![(1, "message"), (2, "edit"), (3, "react"), (4, "delete")]);
    let stored = history(&app, "hall", None).await;
    assert!(stored[0].deleted && stored[0].reactions.is_empty());

    // A private room is not found by an outsider, over HTTP too.
    let mut owner = socket_of(&app, &ann).await;
    let create = json!({"type": "create_room", "room": "vault", "visibility": "private"});
    assert_eq!(outcome(&ask(&mut owner, create, "c").await), "joined");
    say(&mut owner, "vault", "secret", "v1").await;
    let (status, body) =
        call(&app, Method::PUT, "/api/rooms/vault/messages/1/reactions", &bob, Some(json!({"emoji": "👀"})))
            .await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    // Without the page's Origin (and no Bearer token), a cookie may not change anything.
    let resp = reqwest::Client::new()
        .delete(app.url("/api/rooms/hall/messages/1?client_id=d3"))
        .header("cookie", &ann.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}
