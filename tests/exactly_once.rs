//! Promise 2, exactly once and in order across reconnects: peers send concurrently and drop
//! their connections at random; each reconnects with its session, resumes every room with
//! `since` = the last seq it holds and resends its unacknowledged outbox with the same
//! `client_id`s. Every peer must end with each room's messages exactly once, 1..=head, and
//! the server must have stored each `client_id` once.

mod common;

use common::{Client, Rng, TestApp, spawn_with};
use confab::protocol::{Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_tungstenite::tungstenite::Message;

const PEERS: usize = 8;
const ROOMS: [&str; 2] = ["alpha", "beta"];
const MESSAGES_PER_PEER: usize = 250;
const WINDOW: usize = 8;

struct Peer {
    nick: String,
    session: Option<String>,
    /// Per room, every seq received, in arrival order (duplicates would show here).
    got: BTreeMap<String, Vec<Seq>>,
    /// Unacknowledged sends: client_id → (room, text).
    outbox: BTreeMap<String, (String, String)>,
    sent: usize,
    reconnects: usize,
    /// Recent frames, to explain a failure.
    log: std::collections::VecDeque<String>,
}

impl Peer {
    fn last(&self, room: &str) -> Seq {
        self.got.get(room).and_then(|v| v.last().copied()).unwrap_or(0)
    }

    async fn connect(&mut self, app: &TestApp) -> Client {
        let mut c = app.client().await;
        let mut hello = json!({"type": "hello", "nick": self.nick});
        if let Some(s) = &self.session {
            hello["session"] = json!(s);
        }
        c.send(hello).await;
        match c.recv().await {
            ServerMsg::Welcome { session, .. } => {
                if let Some(old) = &self.session {
                    assert_eq!(old, &session, "the session survives a reconnect");
                }
                self.session = Some(session);
            }
            other => panic!("{other:?}"),
        }
        for room in ROOMS {
            // since 0 on the first join too: this peer wants the whole room.
            c.send(json!({"type": "join", "room": room, "since": self.last(room)})).await;
        }
        c
    }

    /// Applies one frame; returns rooms whose replay just completed.
    fn apply(&mut self, msg: ServerMsg, replaying: &mut HashMap<String, Seq>) -> Option<String> {
        if self.log.len() == 30 {
            self.log.pop_front();
        }
        self.log.push_back(format!("{msg:?}"));
        match msg {
            ServerMsg::Joined { room, head, .. } => {
                self.got.entry(room.clone()).or_default();
                if self.last(&room) >= head {
                    return Some(room);
                }
                replaying.insert(room, head);
                None
            }
            ServerMsg::Message(m) => {
                if m.nick == self.nick {
                    self.outbox.remove(&m.client_id);
                }
                let last = self.last(&m.room);
                // The answer to a duplicate send repeats a seq we hold: ignore it, as a client
                // must. Anything else must be exactly the next seq.
                if m.seq > last {
                    assert_eq!(
                        m.seq,
                        last + 1,
                        "{}: gap in {} after {last}; recent frames: {:#?}",
                        self.nick,
                        m.room,
                        self.log
                    );
                    self.got.entry(m.room.clone()).or_default().push(m.seq);
                }
                match replaying.get(&m.room) {
                    Some(head) if m.seq >= *head => {
                        replaying.remove(&m.room);
                        Some(m.room)
                    }
                    _ => None,
                }
            }
            ServerMsg::Error { code, .. } => panic!("{}: unexpected error {code}", self.nick),
            _ => None,
        }
    }

    /// Sends until everything is acknowledged, dropping the connection at random.
    async fn run(&mut self, app: &TestApp, rng: &mut Rng) {
        while self.sent < MESSAGES_PER_PEER || !self.outbox.is_empty() {
            let mut c = self.connect(app).await;
            self.log.push_back("--- connected".into());
            let mut replaying = HashMap::new();
            let mut ready: HashSet<String> = HashSet::new();
            loop {
                // Send new messages only to rooms whose replay is complete.
                let in_flight = self.outbox.len();
                if in_flight < WINDOW && self.sent < MESSAGES_PER_PEER {
                    let room = ROOMS[self.sent % ROOMS.len()].to_owned();
                    if ready.contains(&room) {
                        let id = format!("{}-{}", self.nick, self.sent);
                        let text = format!("{} says {}", self.nick, self.sent);
                        self.outbox.insert(id.clone(), (room.clone(), text.clone()));
                        self.sent += 1;
                        let frame = json!({"type": "send", "room": room, "text": text, "client_id": id});
                        if c.ws.send(Message::text(frame.to_string())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                }
                if self.sent == MESSAGES_PER_PEER && self.outbox.is_empty() {
                    return;
                }
                let frame = tokio::time::timeout(common::WAIT, c.ws.next()).await.expect("progress");
                let Some(Ok(Message::Text(text))) = frame else { continue };
                let msg: ServerMsg = serde_json::from_str(&text).unwrap();
                if let Some(room) = self.apply(msg, &mut replaying) {
                    ready.insert(room.clone());
                    let resend: Vec<_> = self
                        .outbox
                        .iter()
                        .filter(|(_, (r, _))| *r == room)
                        .map(|(id, (r, t))| (id.clone(), r.clone(), t.clone()))
                        .collect();
                    for (id, r, t) in resend {
                        let frame = json!({"type": "send", "room": r, "text": t, "client_id": id});
                        let _ = c.ws.send(Message::text(frame.to_string())).await;
                    }
                }
                if rng.chance(60) {
                    // A network drop: no close frame, unacknowledged sends stay in the outbox.
                    self.reconnects += 1;
                    break;
                }
            }
        }
    }

    /// Reconnects once more and reads until every room is at `heads`.
    async fn catch_up(&mut self, app: &TestApp, heads: &BTreeMap<String, Seq>) {
        let mut c = self.connect(app).await;
        let mut replaying = HashMap::new();
        while heads.iter().any(|(room, head)| self.last(room) < *head) {
            let msg = c.recv().await;
            self.apply(msg, &mut replaying);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_gets_every_message_exactly_once_in_order_despite_random_disconnects() {
    let app = spawn_with(|c| {
        c.msg_rate = 100_000;
        c.msg_burst = 100_000;
        // Every resume fits in one replay (the test does not page through `history`).
        c.max_history = 10_000;
    })
    .await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..PEERS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut peer = Peer {
                nick: format!("peer{i}"),
                session: None,
                got: BTreeMap::new(),
                outbox: BTreeMap::new(),
                sent: 0,
                reconnects: 0,
                log: Default::default(),
            };
            let mut rng = Rng::seeded(i as u64);
            peer.run(&app, &mut rng).await;
            peer
        }));
    }
    let mut peers = Vec::new();
    for t in tasks {
        peers.push(t.await.unwrap());
    }
    let heads: BTreeMap<String, Seq> = ROOMS
        .iter()
        .map(|r| {
            (r.to_string(), app.hub.find_room(&confab::protocol::RoomName::parse(r).unwrap()).unwrap().head())
        })
        .collect();
    let total: u64 = heads.values().sum();
    assert_eq!(total as usize, PEERS * MESSAGES_PER_PEER, "each client_id stored exactly once: {heads:?}");

    let mut reconnects = 0;
    for peer in &mut peers {
        peer.catch_up(&app, &heads).await;
        for (room, head) in &heads {
            assert_eq!(peer.got[room], (1..=*head).collect::<Vec<_>>(), "{} in {room}", peer.nick);
        }
        reconnects += peer.reconnects;
    }
    assert!(reconnects >= PEERS * 5, "the test really disconnected ({reconnects} times)");
    println!("exactly-once: {total} messages, {reconnects} random disconnects, {PEERS} peers all 1..=head");
}
