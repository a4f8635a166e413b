//! Promise 3, a slow reader never hurts anyone else: one client joins and never reads
//! while others exchange 100,000 messages. The others get everything in order, the slow
//! one is cut with 4008 "slow consumer", memory stays bounded, and the slow client can
//! resume with `since` and get exactly what it missed.

mod common;

use common::{rss_kb, spawn_with};
use confab::protocol::{Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::{sync::atomic::Ordering, time::Duration};
use tokio_tungstenite::tungstenite::Message;

const SENDERS: usize = 4;
const WINDOW: usize = 64;

fn total() -> usize {
    std::env::var("CONFAB_SLOW_TEST_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_and_nobody_else_notices() {
    let total = total();
    let app = spawn_with(|c| {
        c.msg_rate = 1_000_000;
        c.msg_burst = 1_000_000;
    })
    .await;
    let (mut slow, slow_session) = app.user("slow").await;
    slow.join("r", None, 0).await;
    let rss_before = rss_kb(std::process::id());

    let mut clients = Vec::new();
    for i in 0..SENDERS {
        let (mut c, _) = app.user(&format!("fast{i}")).await;
        c.join("r", None, 0).await;
        clients.push(c);
    }
    let mut fast = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        fast.push(tokio::spawn(async move {
            let me = format!("fast{i}");
            let quota = total / SENDERS;
            let (mut sent, mut in_flight, mut last) = (0usize, 0usize, 0 as Seq);
            while last < total as Seq {
                while sent < quota && in_flight < WINDOW {
                    let frame = json!({"type": "send", "room": "r", "text": format!("{me} {sent}"), "client_id": format!("{me}-{sent}")});
                    c.ws.send(Message::text(frame.to_string())).await.unwrap();
                    sent += 1;
                    in_flight += 1;
                }
                let frame = tokio::time::timeout(Duration::from_secs(30), c.ws.next()).await.expect("progress");
                let Some(Ok(Message::Text(text))) = frame else { continue };
                match serde_json::from_str::<ServerMsg>(&text).unwrap() {
                    ServerMsg::Message(m) => {
                        assert_eq!(m.seq, last + 1, "{me}: out of order or a gap");
                        last = m.seq;
                        if m.nick == me {
                            in_flight -= 1;
                        }
                    }
                    ServerMsg::Presence { .. } => {}
                    other => panic!("{me}: unexpected {other:?}"),
                }
            }
            last
        }));
    }

    // The server cuts the slow reader once its queue passes the byte budget...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while app.hub.metrics.slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow reader was never cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and says why once it reads again: everything the kernel held, then the close.
    let mut slow_last: Seq = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.ws.next())
            .await
            .expect("slow client sees the end")
        {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ServerMsg::Message(m)) = serde_json::from_str::<ServerMsg>(&text) {
                    assert_eq!(m.seq, slow_last + 1);
                    slow_last = m.seq;
                }
            }
            Some(Ok(Message::Close(Some(cf)))) => break u16::from(cf.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4008);

    for f in fast {
        assert_eq!(f.await.unwrap(), total as Seq, "every fast client got every message");
    }
    let rss_after = rss_kb(std::process::id());
    let growth_mb = rss_after.saturating_sub(rss_before) / 1024;
    println!(
        "slow consumer: {total} messages, slow reader cut after {slow_last}, RSS {rss_before} kB -> {rss_after} kB"
    );
    // Generous: the store's page cache and the clients live in this process too. Without
    // the queue bound the slow reader alone would hold every message (tens of MB).
    assert!(growth_mb < 96, "memory grew by {growth_mb} MB");

    // The slow client resumes where it stopped and gets exactly the rest.
    drop(slow);
    let mut again = app.client().await;
    again.send(json!({"type": "hello", "nick": "slow", "session": slow_session})).await;
    assert!(matches!(again.recv().await, ServerMsg::Welcome { .. }));
    again.send(json!({"type": "join", "room": "r", "since": slow_last})).await;
    let head = match again.recv().await {
        ServerMsg::Joined { head, .. } => head,
        other => panic!("{other:?}"),
    };
    assert_eq!(head, total as Seq);
    let replayed = (head - slow_last).min(app.hub.config.max_history as u64);
    let first = head - replayed + 1;
    for expected in first..=head {
        let m = again.recv_message().await;
        assert_eq!(m.seq, expected);
    }
}
