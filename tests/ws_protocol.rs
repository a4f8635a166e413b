//! The WebSocket protocol against the real server: fan-out, history, resume, idempotent
//! sends, presence, typing, and every validation error.

mod common;

use common::{seqs, spawn_app, spawn_on, spawn_with};
use confab::protocol::{PresenceState, ServerMsg};
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_message_reaches_every_member_of_its_room_and_no_one_else() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    let (mut bob, _) = app.user("bob").await;
    let (mut cat, _) = app.user("cat").await;
    ann.join("general", None, 0).await;
    bob.join("general", None, 0).await;
    cat.join("other", None, 0).await;

    let echo = ann.say_acked("general", "hello", "c1").await;
    assert_eq!(
        (echo.seq, echo.nick.as_str(), echo.text.as_str(), echo.room.as_str()),
        (1, "ann", "hello", "general")
    );
    assert!(echo.ts > 1_600_000_000_000, "ts is Unix ms");
    assert_eq!(bob.recv_message().await, echo);
    cat.expect_silence(300).await;

    let second = bob.say_acked("general", "hi ann", "b1").await;
    assert_eq!(second.seq, 2);
    assert_eq!(ann.recv_message().await, second);
}

#[tokio::test]
async fn joining_replays_the_latest_fifty_then_goes_live() {
    let app = spawn_with(|c| c.msg_burst = 100).await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    for i in 1..=60 {
        ann.say_acked("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let (mut bob, _) = app.user("bob").await;
    let (joined, replay) = bob.join("r", None, 50).await;
    match joined {
        ServerMsg::Joined { head, members, truncated, .. } => {
            assert_eq!(head, 60);
            assert_eq!(members, vec!["ann".to_owned(), "bob".to_owned()]);
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seqs(&replay), (11..=60).collect::<Vec<_>>());
    let live = ann.say_acked("r", "live", "c61").await;
    assert_eq!(bob.recv_message().await, live);
}

#[tokio::test]
async fn join_since_resumes_exactly_after_the_last_seen_seq_and_caps_with_truncated() {
    let app = spawn_with(|c| {
        c.msg_burst = 100;
        c.max_history = 5;
    })
    .await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    for i in 1..=12 {
        ann.say_acked("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let (mut bob, _) = app.user("bob").await;
    let (joined, replay) = bob.join("r", Some(9), 3).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 12, truncated: false, .. }));
    assert_eq!(seqs(&replay), vec![10, 11, 12]);

    let (mut cat, _) = app.user("cat").await;
    let (joined, replay) = cat.join("r", Some(0), 5).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 12, truncated: true, .. }), "{joined:?}");
    assert_eq!(seqs(&replay), vec![8, 9, 10, 11, 12]);

    // Up to date: nothing to replay, straight to live.
    let (mut dan, _) = app.user("dan").await;
    dan.join("r", Some(12), 0).await;
    let live = ann.say_acked("r", "m13", "c13").await;
    assert_eq!(dan.recv_message().await.seq, live.seq);
}

#[tokio::test]
async fn a_repeated_client_id_makes_no_second_message_even_after_reconnecting() {
    let app = spawn_app().await;
    let (mut ann, session) = app.user("ann").await;
    let (mut bob, _) = app.user("bob").await;
    ann.join("r", None, 0).await;
    bob.join("r", None, 0).await;
    let first = ann.say_acked("r", "once", "same-id").await;
    assert_eq!(bob.recv_message().await, first);

    ann.say("r", "once", "same-id").await;
    assert_eq!(ann.recv_message().await, first, "the retry is answered with the original");
    bob.expect_silence(300).await;

    // Reconnect with the same session (a new connection) and retry again.
    drop(ann);
    let mut again = app.client().await;
    again.send(json!({"type": "hello", "nick": "ann", "session": session})).await;
    assert!(matches!(again.recv().await, ServerMsg::Welcome { .. }));
    again.join("r", Some(1), 0).await;
    again.say("r", "once", "same-id").await;
    assert_eq!(again.recv_message().await, first);
    let next = again.say_acked("r", "twice", "other-id").await;
    assert_eq!(next.seq, 2, "no seq was spent on the duplicates");
}

#[tokio::test]
async fn presence_follows_people_not_tabs() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    let (mut bob, bob_session) = app.user("bob").await;
    bob.join("r", None, 0).await;
    assert_eq!(
        ann.recv().await,
        ServerMsg::Presence {
            room: "r".into(),
            nick: "bob".into(),
            state: PresenceState::Joined,
            member_count: Some(2),
            guest: true,
            username: None,
        }
    );
    // A second tab of bob's session: no new presence.
    let mut bob2 = app.client().await;
    bob2.send(json!({"type": "hello", "nick": "bob", "session": bob_session})).await;
    assert!(matches!(bob2.recv().await, ServerMsg::Welcome { .. }));
    bob2.join("r", None, 0).await;
    ann.expect_silence(200).await;
    drop(bob2);
    ann.expect_silence(300).await;
    drop(bob);
    assert_eq!(
        ann.recv().await,
        ServerMsg::Presence {
            room: "r".into(),
            nick: "bob".into(),
            state: PresenceState::Left,
            member_count: Some(1),
            guest: true,
            username: None,
        }
    );
}

#[tokio::test]
async fn typing_goes_to_the_others_only() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    let (mut bob, _) = app.user("bob").await;
    ann.join("r", None, 0).await;
    bob.join("r", None, 0).await;
    ann.recv().await; // bob's presence
    ann.send(json!({"type": "typing", "room": "r"})).await;
    assert_eq!(bob.recv().await, ServerMsg::Typing { room: "r".into(), nick: "ann".into() });
    ann.expect_silence(200).await;
}

#[tokio::test]
async fn history_pages_backwards() {
    let app = spawn_with(|c| c.msg_burst = 100).await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    for i in 1..=7 {
        ann.say_acked("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    ann.send(json!({"type": "history", "room": "r", "before": 6, "limit": 3})).await;
    match ann.recv().await {
        ServerMsg::History { room, messages, has_more, .. } => {
            assert_eq!(room, "r");
            assert_eq!(seqs(&messages), vec![3, 4, 5]);
            assert!(has_more);
        }
        other => panic!("{other:?}"),
    }
    ann.send(json!({"type": "history", "room": "r", "before": 3, "limit": 10})).await;
    assert!(
        matches!(ann.recv().await, ServerMsg::History { has_more: false, ref messages, .. } if seqs(messages) == vec![1, 2])
    );
}

#[tokio::test]
async fn list_rooms_and_leave() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    let (mut bob, _) = app.user("bob").await;
    ann.join("alpha", None, 0).await;
    bob.join("alpha", None, 0).await;
    ann.recv().await; // presence
    ann.join("beta", None, 0).await;
    ann.say_acked("beta", "x", "c1").await;
    ann.send(json!({"type": "list_rooms"})).await;
    match ann.recv().await {
        ServerMsg::Rooms { rooms, has_more: false, next: None, .. } => {
            let got: Vec<(String, u32, u64)> =
                rooms.into_iter().map(|r| (r.name, r.members, r.head)).collect();
            // Most recently active first: beta has a message newer than alpha's opening.
            assert_eq!(got, vec![("beta".into(), 1, 1), ("alpha".into(), 2, 0)]);
        }
        other => panic!("{other:?}"),
    }
    bob.send(json!({"type": "leave", "room": "alpha"})).await;
    assert_eq!(bob.recv().await, ServerMsg::Left { room: "alpha".into(), reference: None });
    assert!(matches!(ann.recv().await, ServerMsg::Presence { state: PresenceState::Left, .. }));
    ann.say_acked("alpha", "after bob left", "c2").await;
    bob.expect_silence(300).await;
    bob.say("alpha", "no", "b1").await;
    bob.expect_error("not_joined").await;
}

#[tokio::test]
async fn seqs_continue_after_a_restart() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    for i in 1..=3 {
        ann.say_acked("r", "x", &format!("c{i}")).await;
    }
    drop(ann);
    let db = app.db.clone();
    let dir = app.stop().await;
    let app = spawn_on(db, |_| {}).await;
    let (mut ann, _) = app.user("ann").await;
    let (joined, replay) = ann.join("r", None, 3).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 3, .. }));
    assert_eq!(seqs(&replay), vec![1, 2, 3]);
    assert_eq!(ann.say_acked("r", "y", "c4").await.seq, 4);
    drop(dir);
}

#[tokio::test]
async fn nicks_are_held_by_their_session() {
    let app = spawn_app().await;
    let (_ann, session) = app.user("Ann").await;
    let mut imposter = app.client().await;
    imposter.send(json!({"type": "hello", "nick": "ann"})).await;
    imposter.expect_error("nick_taken").await;
    imposter.send(json!({"type": "hello", "nick": "ann", "session": "guessed"})).await;
    imposter.expect_error("nick_taken").await;
    // Still usable: choose another nick.
    imposter.send(json!({"type": "hello", "nick": "ann2"})).await;
    assert!(matches!(imposter.recv().await, ServerMsg::Welcome { .. }));

    let mut tab = app.client().await;
    tab.send(json!({"type": "hello", "nick": "Ann", "session": session})).await;
    assert!(matches!(tab.recv().await, ServerMsg::Welcome { ref nick, .. } if nick == "Ann"));
}

/// Every validation error: the right code, and the connection stays usable.
#[tokio::test]
async fn every_bad_input_gets_its_error_code_and_the_connection_survives() {
    let app = spawn_with(|c| {
        c.max_rooms_per_conn = 2;
        c.msg_burst = 3;
        c.msg_rate = 1;
    })
    .await;
    let mut c = app.client().await;
    let long_nick = "n".repeat(33);
    let before_hello: &[(&str, &str)] = &[
        (r#"{"type":"join","room":"r"}"#, "hello_required"),
        ("not json", "bad_frame"),
        ("[1,2]", "bad_frame"),
        (r#"{"room":"r"}"#, "bad_frame"),
        (r#"{"type":"fly"}"#, "unknown_type"),
        (r#"{"type":"send","room":5}"#, "bad_frame"),
        (r#"{"type":"hello","nick":""}"#, "invalid_nick"),
        (r#"{"type":"hello","nick":"a\u0007b"}"#, "invalid_nick"),
    ];
    for (frame, code) in before_hello {
        c.send_text(frame).await;
        c.expect_error(code).await;
    }
    c.send(json!({"type": "hello", "nick": long_nick})).await;
    c.expect_error("invalid_nick").await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    c.expect_error("bad_frame").await;

    c.send(json!({"type": "hello", "nick": "val"})).await;
    assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
    c.join("r", None, 0).await;
    let too_long = "x".repeat(4001);
    let after_hello: Vec<(serde_json::Value, &str, Option<&str>)> = vec![
        (json!({"type": "hello", "nick": "again"}), "already_hello", None),
        (json!({"type": "join", "room": "Bad Room"}), "invalid_room", None),
        (json!({"type": "join", "room": "a".repeat(65)}), "invalid_room", None),
        (
            json!({"type": "send", "room": "elsewhere", "text": "x", "client_id": "c1"}),
            "not_joined",
            Some("c1"),
        ),
        (json!({"type": "send", "room": "BAD", "text": "x", "client_id": "c2"}), "invalid_room", Some("c2")),
        (json!({"type": "send", "room": "r", "text": too_long, "client_id": "c3"}), "too_long", Some("c3")),
        (json!({"type": "send", "room": "r", "text": "  ", "client_id": "c4"}), "empty_text", Some("c4")),
        (json!({"type": "send", "room": "r", "text": "x", "client_id": ""}), "invalid_client_id", None),
        (
            json!({"type": "send", "room": "r", "text": "x", "client_id": "has space"}),
            "invalid_client_id",
            None,
        ),
        (json!({"type": "typing", "room": "elsewhere"}), "not_joined", None),
        (json!({"type": "leave", "room": "elsewhere"}), "not_joined", None),
        (json!({"type": "history", "room": "elsewhere", "before": 5}), "not_joined", None),
    ];
    for (frame, code, client_id) in after_hello {
        c.send(frame.clone()).await;
        match c.expect_error(code).await {
            ServerMsg::Error { client_id: got, .. } => assert_eq!(got.as_deref(), client_id, "{frame}"),
            _ => unreachable!(),
        }
    }
    // Exactly 4000 characters (multi-byte) is fine.
    let max = c.say_acked("r", &"é".repeat(4000), "max").await;
    assert_eq!(max.text.chars().count(), 4000);

    // Rooms per connection.
    c.join("r2", None, 0).await;
    c.send(json!({"type": "join", "room": "r3"})).await;
    c.expect_error("too_many_rooms").await;

    // Rate limit: the burst (3, one already spent) then rate_limited with the client_id.
    c.say_acked("r", "1", "rl1").await;
    c.say_acked("r", "2", "rl2").await;
    c.say("r", "3", "rl3").await;
    match c.expect_error("rate_limited").await {
        ServerMsg::Error { client_id, .. } => assert_eq!(client_id.as_deref(), Some("rl3")),
        _ => unreachable!(),
    }
    // Still usable.
    c.send(json!({"type": "list_rooms"})).await;
    assert!(matches!(c.recv().await, ServerMsg::Rooms { .. }));
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let app = spawn_with(|c| c.max_frame_bytes = 1024).await;
    let (mut c, _) = app.user("big").await;
    c.send_text(&format!(r#"{{"type":"typing","room":"{}"}}"#, "a".repeat(2000))).await;
    assert_eq!(c.expect_close().await, 1009);
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let app = spawn_app().await;
    let (mut ann, _) = app.user("ann").await;
    ann.join("r", None, 0).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(ann.expect_close().await, 1001);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_reaped_and_its_presence_removed() {
    let app = spawn_with(|c| {
        // The timeout must exceed the ping interval plus a round trip, or a live client
        // that answers every ping can still be judged silent.
        c.ping_interval_secs = 1;
        c.idle_timeout_secs = 2;
    })
    .await;
    let (mut watcher, _) = app.user("watcher").await;
    let (mut ghost, _) = app.user("ghost").await;
    watcher.join("r", None, 0).await;
    ghost.join("r", None, 0).await;
    watcher.recv().await; // ghost joined
    // The watcher keeps reading (its client answers pings); the ghost never reads, so it
    // never answers a ping.
    let left = tokio::time::timeout(std::time::Duration::from_secs(6), watcher.recv())
        .await
        .expect("reaped in time");
    assert_eq!(
        left,
        ServerMsg::Presence {
            room: "r".into(),
            nick: "ghost".into(),
            state: PresenceState::Left,
            member_count: Some(1),
            guest: true,
            username: None,
        }
    );
    // The ghost's client has pongs queued for the pings it never read; writing them can hit
    // the already closed socket before the close frame is read. The server's own count of
    // heartbeat closes is the dependable witness; the close code, when it gets through,
    // must be 4000.
    let ghost_saw = tokio::time::timeout(common::WAIT, async {
        loop {
            match futures::StreamExt::next(&mut ghost.ws).await {
                Some(Ok(Message::Close(Some(cf)))) => return Some(u16::from(cf.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the ghost's connection ends");
    assert!(matches!(ghost_saw, None | Some(4000)), "{ghost_saw:?}");
    assert_eq!(app.hub.metrics.idle_closed.load(std::sync::atomic::Ordering::Relaxed), 1);
}
