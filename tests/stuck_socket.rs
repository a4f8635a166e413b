//! A client that keeps talking but stops reading, in a room too quiet to push it over its
//! budget, is cut once its socket has taken nothing for a whole idle timeout (the
//! heartbeat's stuck verdict). Its own file: its queued frames would otherwise count in
//! the memory that `slow_consumer` measures.

mod common;

use common::{eventually, small_window_user, spawn_with};
use confab::{
    protocol::{Seq, ServerMsg},
    server::outbound::QUEUE_FRAMES,
};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio_tungstenite::tungstenite::Message;

const WINDOW: usize = 64;

/// The most the server's socket can hold unsent: its send buffer at its largest (the third
/// figure of `tcp_wmem`).
fn server_send_buffer_at_most() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_talks_but_never_reads_is_cut_once_its_socket_takes_nothing() {
    let app = spawn_with(|c| {
        c.ping_interval_secs = 1;
        c.idle_timeout_secs = 2;
        c.msg_rate = 1_000_000;
        c.msg_burst = 1_000_000;
        // A byte budget nothing here fills.
        c.outbound_queue_bytes = 1 << 30;
    })
    .await;
    // A small receive buffer: the client's side holds little, so the server's socket fills.
    let mut stuck = small_window_user(&app, "stuck").await;
    stuck.join("r", None, 0).await;

    // From now on it talks (pings of its own, which count as heard) and never reads.
    let cut = Arc::new(AtomicBool::new(false));
    let talking = tokio::spawn({
        let cut = cut.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !cut.load(Ordering::Relaxed) {
                tick.tick().await;
                if stuck.ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            stuck
        }
    });

    let (mut sender, _) = app.user("sender").await;
    sender.join("r", None, 0).await;

    // Enough to fill the server's socket and then some, and at most half what the queue
    // holds, so only the stuck socket can be the reason for the cut. (The client's small
    // window keeps the server's send buffer from growing to its maximum.)
    let text = "x".repeat(4000);
    let messages = (server_send_buffer_at_most() / text.len() + 256).min(QUEUE_FRAMES / 2);
    let (mut sent, mut in_flight, mut last) = (0usize, 0usize, 0 as Seq);
    while last < messages as Seq {
        while sent < messages && in_flight < WINDOW {
            let frame = json!({"type": "send", "room": "r", "text": text, "client_id": format!("s-{sent}")});
            sender.ws.send(Message::text(frame.to_string())).await.unwrap();
            sent += 1;
            in_flight += 1;
        }
        if let ServerMsg::Message(m) = sender.recv().await {
            assert_eq!(m.seq, last + 1, "the sender sees every message, in order");
            last = m.seq;
            in_flight -= 1;
        }
    }

    // Then the room is quiet. The sender keeps reading (so it answers the server's pings
    // and is not cut as silent) until the stuck client has been dealt with.
    let done = Arc::new(AtomicBool::new(false));
    let listening = tokio::spawn({
        let done = done.clone();
        async move {
            while !done.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(50), sender.ws.next()).await {
                    Ok(Some(Ok(_))) | Err(_) => {}
                    other => panic!("the sender's connection ended: {other:?}"),
                }
            }
            sender
        }
    });
    // The stuck client is cut within a few idle timeouts.
    eventually("the stuck client is cut", || app.hub.metrics.slow_consumers.load(Ordering::Relaxed) > 0)
        .await;
    cut.store(true, Ordering::Relaxed);
    assert_eq!(app.hub.metrics.idle_closed.load(Ordering::Relaxed), 0, "it was heard all along");
    let mut stuck = talking.await.unwrap();
    // Reading at last, it gets what its socket held, then why it was cut.
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(15), stuck.ws.next()).await.expect("the close arrives")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4008);
    // The sender was never affected.
    done.store(true, Ordering::Relaxed);
    let mut sender = listening.await.unwrap();
    assert_eq!(app.hub.metrics.idle_closed.load(Ordering::Relaxed), 0, "nobody was judged silent");
    let more = sender.say_acked("r", "still here", "s-last").await;
    assert_eq!(more.seq, last + 1);
}
