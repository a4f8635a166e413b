//! Promise 1, durable once acknowledged: the real binary is SIGKILLed mid-stream and
//! restarted on the same database; every message any client saw is still there, with the
//! same seq, and every room's seqs run 1..=head without a gap.

mod common;

use common::{connect, free_port, start_binary as start, stored};
use confab::protocol::{ChatMessage, ServerMsg};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

const CLIENTS: usize = 8;
const ROOMS: usize = 3;
/// Sends each client keeps in flight: enough to make the committer batch.
const WINDOW: usize = 32;
/// Acknowledged messages (over all clients) after which the server is killed.
const KILL_AFTER: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    sigkill_mid_stream(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_with_fsync_per_commit() {
    sigkill_mid_stream(&["--sync", "full"]).await;
}

async fn sigkill_mid_stream(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let port = free_port();
    let mut server = start(&db, port, flags).await;

    // Every message any client received, keyed by (room, seq).
    let seen: Arc<Mutex<HashMap<(String, u64), ChatMessage>>> = Arc::default();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let seen = seen.clone();
        let acked = acked.clone();
        let mut c = connect(port, &format!("writer{i}")).await;
        for r in 0..ROOMS {
            c.join(&format!("room{r}"), None, 0).await;
        }
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let mut sent = 0usize;
            let mut in_flight = 0usize;
            loop {
                while in_flight < WINDOW {
                    let room = format!("room{}", sent % ROOMS);
                    let frame = json!({"type": "send", "room": room, "text": format!("w{i} #{sent}"), "client_id": format!("w{i}-{sent}")});
                    if futures::SinkExt::send(&mut c.ws, tokio_tungstenite::tungstenite::Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                    sent += 1;
                    in_flight += 1;
                }
                let Some(Ok(frame)) = c.ws.next().await else { return };
                let Ok(text) = frame.to_text() else { continue };
                if let Ok(ServerMsg::Message(m)) = serde_json::from_str::<ServerMsg>(text) {
                    if m.nick == format!("writer{i}") {
                        in_flight -= 1;
                        acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    seen.lock().unwrap().insert((m.room.clone(), m.seq), m);
                }
            }
        }));
    }
    while acked.load(std::sync::atomic::Ordering::Relaxed) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.start_kill().unwrap(); // SIGKILL: no shutdown path runs
    server.wait().await.unwrap();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await.expect("clients notice the kill");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() >= KILL_AFTER, "saw {} messages", seen.len());

    let _server = start(&db, port, flags).await;
    let mut heads = BTreeMap::new();
    for r in 0..ROOMS {
        let room = format!("room{r}");
        let stored = stored(port, &room).await;
        let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "{room}: seqs have a gap");
        heads.insert(room.clone(), stored.len());
        let by_seq: HashMap<u64, &ChatMessage> = stored.iter().map(|m| (m.seq, m)).collect();
        for ((seen_room, seq), msg) in seen.iter().filter(|((r, _), _)| *r == room) {
            let kept = by_seq.get(seq).unwrap_or_else(|| panic!("{seen_room} #{seq} was seen but is gone"));
            assert_eq!(*kept, msg, "{seen_room} #{seq} changed");
        }
    }
    println!(
        "durability: {} messages seen before SIGKILL, stored heads after restart: {heads:?}",
        seen.len()
    );
}

/// Promise 6, clean shutdown: on SIGTERM the binary closes every client with 1001, stores
/// what it accepted, and exits by itself (its own deadline is 5 s; here we only require
/// that it exits, and print how long it took).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_keeps_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("term.db");
    let port = free_port();
    let mut server = start(&db, port, &[]).await;
    let mut clients = Vec::new();
    let mut acked = Vec::new();
    for i in 0..4 {
        let mut c = connect(port, &format!("t{i}")).await;
        c.join("shutdown", None, 0).await;
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for n in 0..25 {
            let id = format!("t{i}-{n}");
            c.say("shutdown", "before the end", &id).await;
            // Others' messages arrive too: wait for our own echo, the ack.
            match c.recv_until(|m| matches!(m, ServerMsg::Message(m) if m.client_id == id)).await {
                ServerMsg::Message(m) => acked.push(m),
                _ => unreachable!(),
            }
        }
    }
    let pid = server.id().unwrap() as i32;
    let began = std::time::Instant::now();
    // kill(1), so the test needs no libc binding for one signal.
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    for c in &mut clients {
        assert_eq!(c.expect_close().await, 1001);
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), server.wait()).await.expect("exits").unwrap();
    println!("shutdown: exited {exit} after {:?}", began.elapsed());
    assert!(exit.success(), "{exit}");

    let _server = start(&db, port, &[]).await;
    let kept = stored(port, "shutdown").await;
    assert_eq!(kept.len(), acked.len());
    for m in &acked {
        assert_eq!(&kept[(m.seq - 1) as usize], m);
    }
}
