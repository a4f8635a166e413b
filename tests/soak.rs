//! Promise 8, a bounded soak: clients connect, join, send, read slowly or not at all, drop
//! and come back at random for `CONFAB_SOAK_SECS` (default 5; run it for minutes with
//! `CONFAB_SOAK_SECS=300 cargo test --release --features ssr --test soak -- --nocapture`).
//! It ends by checking that no acknowledged message was lost, none was stored twice, every
//! connection and its task are gone, and memory is back near where it started.

mod common;

use common::{Client, Rng, free_port, rss_kb, start_binary, stored};
use confab::protocol::{Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const WORKERS: usize = 12;
const ROOMS: [&str; 5] = ["soak-a", "soak-b", "soak-c", "soak-d", "soak-e"];

fn soak_secs() -> u64 {
    std::env::var("CONFAB_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// Acknowledged messages: (room, seq) → client_id, shared by all workers.
type Acked = Arc<Mutex<HashMap<(String, Seq), String>>>;

/// The next server message; None once the connection is closed (or cut).
async fn next_msg(c: &mut Client) -> Option<ServerMsg> {
    loop {
        match tokio::time::timeout(common::WAIT, c.ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return None,
        }
    }
}

/// One simulated person: connects with its session, joins a few rooms, sends, sometimes
/// stops reading (and gets cut), sometimes just vanishes, then comes back.
async fn worker(port: u16, id: usize, deadline: Instant, acked: Acked) -> (usize, usize) {
    let mut rng = Rng::seeded(id as u64);
    let nick = format!("soak{id}");
    let mut session: Option<String> = None;
    let (mut sent, mut sessions) = (0usize, 0usize);
    // Sent but not yet acknowledged: client_id → (room, text). Resent after a reconnect.
    let mut outbox: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Highest seq seen per room: where to resume.
    let mut last: HashMap<String, Seq> = HashMap::new();
    while Instant::now() < deadline {
        sessions += 1;
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
        let mut c = Client { ws };
        let mut hello = json!({"type": "hello", "nick": nick});
        if let Some(s) = &session {
            hello["session"] = json!(s);
        }
        c.send(hello).await;
        match c.recv().await {
            ServerMsg::Welcome { session: s, .. } => session = Some(s),
            other => panic!("{nick}: {other:?}"),
        }
        let mut rooms: Vec<&str> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let room = ROOMS[rng.below(ROOMS.len() as u64) as usize];
            if !rooms.contains(&room) {
                rooms.push(room);
                let since = last.get(room).copied().unwrap_or(0);
                c.send(json!({"type": "join", "room": room, "since": since})).await;
            }
        }
        // As a client must (docs/PROTOCOL.md §11): read each room's replay first (it may
        // hold messages of ours whose echo the last connection never saw), fill the gap of
        // a truncated replay from history, then resend what is still unacknowledged.
        let mut replaying: HashMap<String, Seq> = HashMap::new();
        // Truncated rooms: the `since` asked for, and the first seq the replay held.
        let mut gaps: HashMap<String, (Seq, Option<Seq>)> = HashMap::new();
        let mut answered = 0;
        let apply = |m: &confab::protocol::ChatMessage, outbox: &mut BTreeMap<String, (String, String)>| {
            if m.nick == nick && outbox.remove(&m.client_id).is_some() {
                acked.lock().unwrap().insert((m.room.clone(), m.seq), m.client_id.clone());
            }
        };
        let mut cut = false;
        while answered < rooms.len() || !replaying.is_empty() {
            // The server may cut a client that falls behind even while it replays.
            let Some(msg) = next_msg(&mut c).await else {
                cut = true;
                break;
            };
            match msg {
                ServerMsg::Joined { room, head, truncated, .. } => {
                    answered += 1;
                    let held = last.get(&room).copied().unwrap_or(0);
                    if truncated {
                        gaps.insert(room.clone(), (held, None));
                    }
                    // Nothing to replay when we already hold everything up to the head.
                    if head > held {
                        replaying.insert(room, head);
                    }
                }
                ServerMsg::Message(m) => {
                    if let Some((_, first @ None)) = gaps.get_mut(&m.room) {
                        *first = Some(m.seq);
                    }
                    let seen = last.entry(m.room.clone()).or_default();
                    *seen = (*seen).max(m.seq);
                    apply(&m, &mut outbox);
                    if replaying.get(&m.room).is_some_and(|head| m.seq >= *head) {
                        replaying.remove(&m.room);
                    }
                }
                _ => {}
            }
        }
        // Page back through each gap: an echo of ours may be in it.
        for (room, (since, first)) in gaps {
            let mut before = first.unwrap_or(Seq::MAX);
            while !cut && before > since + 1 {
                c.send(json!({"type": "history", "room": room, "before": before, "limit": 500})).await;
                let page = loop {
                    match next_msg(&mut c).await {
                        Some(ServerMsg::History { messages, .. }) => break Some(messages),
                        Some(ServerMsg::Message(m)) => {
                            let seen = last.entry(m.room.clone()).or_default();
                            *seen = (*seen).max(m.seq);
                            apply(&m, &mut outbox);
                        }
                        // Waiting as told, then asking again, is the protocol.
                        Some(ServerMsg::Error { retry_after_ms: Some(ms), .. }) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            let again =
                                json!({"type": "history", "room": room, "before": before, "limit": 500});
                            c.send(again).await;
                        }
                        Some(ServerMsg::Error { code, .. }) => panic!("{nick}: history failed: {code}"),
                        Some(_) => {}
                        None => break None,
                    }
                };
                let Some(messages) = page else {
                    cut = true;
                    break;
                };
                for m in &messages {
                    apply(m, &mut outbox);
                }
                match messages.first() {
                    Some(m) => before = m.seq,
                    None => break,
                }
            }
        }
        if cut {
            continue;
        }
        for (cid, (room, text)) in &outbox {
            if rooms.contains(&room.as_str()) {
                c.say(room, text, cid).await;
            }
        }
        let slow = rng.below(6) == 0;
        // Slow readers stay long enough to fill their queue and be cut.
        let life = Duration::from_millis(if slow { 1500 + rng.below(1500) } else { 100 + rng.below(600) });
        let until = Instant::now() + life;
        while Instant::now() < until.min(deadline) {
            if outbox.len() < 8 {
                let room = rooms[rng.below(rooms.len() as u64) as usize];
                let cid = format!("{nick}-{sent}");
                let text = format!("{nick} #{sent} {}", "x".repeat(rng.below(200) as usize));
                sent += 1;
                outbox.insert(cid.clone(), (room.to_owned(), text.clone()));
                let frame = json!({"type": "send", "room": room, "text": text, "client_id": cid});
                if c.ws.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
            }
            if slow {
                // Not reading: the server must cut this one, not buffer for it forever.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(50), c.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if let Ok(ServerMsg::Message(m)) = serde_json::from_str::<ServerMsg>(&text) {
                        let seen = last.entry(m.room.clone()).or_default();
                        *seen = (*seen).max(m.seq);
                        if m.nick == nick && outbox.remove(&m.client_id).is_some() {
                            acked.lock().unwrap().insert((m.room, m.seq), m.client_id);
                        }
                    }
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(_) => break,
            }
        }
        // Leave abruptly half of the time, politely otherwise.
        if rng.below(2) == 0 {
            let _ = c.ws.close(None).await;
        }
        drop(c);
    }
    (sent, sessions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_loses_nothing_duplicates_nothing_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The real binary, so its memory is measured alone. Small queues: slow readers get cut.
    let flags = ["--outbound-queue-bytes", "131072", "--max-history", "100000"];
    let mut server = start_binary(&dir.path().join("soak.db"), port, &flags).await;
    let pid = server.id().unwrap();
    let health = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let baseline = rss_kb(pid);
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let acked: Acked = Arc::default();
    let tasks: Vec<_> =
        (0..WORKERS).map(|i| tokio::spawn(worker(port, i, deadline, acked.clone()))).collect();
    let (mut sent, mut sessions) = (0, 0);
    for t in tasks {
        let (s, n) = t.await.unwrap();
        sent += s;
        sessions += n;
    }

    // Every connection and its task must be gone.
    let quiet_by = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = health(port).await;
        if h["connections"] == 0 && h["connection_tasks"] == 0 {
            break h;
        }
        assert!(Instant::now() < quiet_by, "connections left behind: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let after = rss_kb(pid);

    // No acknowledged message lost, no message stored twice, no gap in any room.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let mut stored_ids: HashMap<String, (String, Seq)> = HashMap::new();
    let mut stored_total = 0;
    for room in ROOMS {
        let messages = stored(port, room).await;
        let seqs: Vec<Seq> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as Seq).collect::<Vec<_>>(), "{room}: gap");
        for m in &messages {
            if let Some(first) = stored_ids.insert(m.client_id.clone(), (room.to_owned(), m.seq)) {
                panic!("{} stored twice: {first:?} and ({room}, {})", m.client_id, m.seq);
            }
            if let Some(cid) = acked.get(&(room.to_owned(), m.seq)) {
                assert_eq!(cid, &m.client_id, "{room} #{}", m.seq);
            }
        }
        stored_total += messages.len();
    }
    for ((room, seq), cid) in &acked {
        assert!(stored_ids.contains_key(cid), "acknowledged {room} #{seq} ({cid}) was lost");
    }

    println!(
        "soak: {}s, {sessions} connections, {sent} sent, {} acknowledged, {stored_total} stored, server RSS {baseline} kB -> {after} kB after everyone left, health {h}",
        soak_secs(),
        acked.len(),
    );
    assert!(acked.len() > 100, "the soak did real work");
    // Back near the baseline: what remains is allocator slack and SQLite's page cache, not
    // per-connection state (which would grow with the thousands of connections made).
    let growth_mb = after.saturating_sub(baseline) / 1024;
    assert!(growth_mb < 64, "server memory grew by {growth_mb} MB");
    server.start_kill().unwrap();
}
