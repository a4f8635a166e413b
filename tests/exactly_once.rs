//! Promise 2, exactly once and in order across reconnects. A room's seq numbers its events:
//! `message`, `edit`, `delete` and `react`. Peers send concurrently, edit and delete their
//! own stored messages, toggle reactions on anyone's, and drop their connections at
//! random; each reconnects with its session, resumes every room with `since` = the last
//! event seq it applied, and once that room's replay is in resends its unacknowledged
//! sends, edits and deletions with the same `client_id`s. Every peer must end having
//! applied each room's events exactly once, 1..=head in order, and holding exactly what a
//! fresh load of the room reads (text after edits, tombstones, reactions); the server must
//! have stored each `client_id` once.

mod common;

use common::{
    Client, Rng, TestApp, apply_event, event_author, event_place, event_target, messages_json, spawn_app,
    spawn_with, stored_json,
};
use confab::protocol::{ChatMessage, ErrorCode, RoomName, Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const PEERS: usize = 8;
const ROOMS: [&str; 2] = ["alpha", "beta"];
const MESSAGES_PER_PEER: usize = 250;
const EDITS_PER_PEER: usize = 40;
const DELETES_PER_PEER: usize = 20;
const REACTIONS_PER_PEER: usize = 80;
/// Requests a peer keeps unanswered at once.
const WINDOW: usize = 8;
const EMOJI: [&str; 3] = ["👍", "🎉", "😂"];
/// A connection may change 10 reactions at once (then 4 a second): a peer changes no more
/// than that on one connection, so none is refused.
const REACTIONS_PER_CONNECTION: usize = 10;
/// Edits, deletions and reactions go to recent messages, so they meet: several people on
/// one emoji, reactions taken back, reactions racing a deletion.
const RECENT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Edit,
    Delete,
}

/// A send, edit or deletion not acknowledged yet: resent with its `client_id` after a
/// reconnect, once its room's replay is in.
#[derive(Debug)]
struct Pending {
    kind: Kind,
    room: String,
    /// The message an edit or deletion changes, or the one a send replies to.
    target: Option<Seq>,
    frame: Value,
}

/// A room as a client holds it.
#[derive(Default)]
struct RoomState {
    messages: BTreeMap<Seq, ChatMessage>,
    /// Every event seq applied, in arrival order (a duplicate or a gap would show here).
    got: Vec<Seq>,
    /// What each applied event was (kind, author, `client_id`, target), to compare peers.
    log: Vec<String>,
}

/// What one connection has going.
#[derive(Default)]
struct Conn {
    /// Rooms whose replay is still coming, with the head it ends at.
    replaying: HashMap<String, Seq>,
    /// Rooms whose replay is in: new requests go only there.
    ready: HashSet<String>,
    /// `client_id`s resent on this connection: each may be answered once with the
    /// original event (a seq already held).
    resent: HashSet<String>,
    /// Reactions sent and not answered yet, by `ref`: (room, target, emoji).
    reacts: HashMap<String, (String, Seq, String)>,
    /// Reactions whose event (ours, on that message and emoji) came in before their
    /// answer did: the event may have been one sent on an earlier connection, so an
    /// answer by `ref` may still follow.
    answered: HashMap<String, (String, Seq, String)>,
    reacts_sent: usize,
}

/// A short description of an event that the replay and the live stream agree on (a
/// replayed `message` comes in its current state, a replayed `edit` of a deleted message
/// without its text).
fn event_key(msg: &ServerMsg) -> String {
    match msg {
        ServerMsg::Message(m) => format!("message by {} {} reply_to {:?}", m.user, m.client_id, m.reply_to),
        ServerMsg::Edit(e) => format!("edit #{} by {} {}", e.target, e.user, e.client_id),
        ServerMsg::Delete(d) => format!("delete #{} by {} ({}) {}", d.target, d.user, d.by, d.client_id),
        ServerMsg::React(r) => {
            format!("react #{} {} by {} ({}) on {}", r.target, r.emoji, r.user, r.nick, r.on)
        }
        other => panic!("not a room event: {other:?}"),
    }
}

struct Peer {
    nick: String,
    session: Option<String>,
    /// This guest's user id, the same for the whole session.
    user: Option<String>,
    rooms: BTreeMap<String, RoomState>,
    /// Unacknowledged sends, edits and deletions by `client_id`.
    outbox: BTreeMap<String, Pending>,
    sent: usize,
    edits: usize,
    deletes: usize,
    reactions: usize,
    /// Reactions refused because the message was deleted meanwhile: (room, target).
    refused_deleted: Vec<(String, Seq)>,
    /// Reactions answered `ack` (it was so already).
    acks: usize,
    reconnects: usize,
    /// Recent frames, to explain a failure.
    log: VecDeque<String>,
}

impl Peer {
    fn new(i: usize) -> Self {
        Peer {
            nick: format!("peer{i}"),
            session: None,
            user: None,
            rooms: BTreeMap::new(),
            outbox: BTreeMap::new(),
            sent: 0,
            edits: 0,
            deletes: 0,
            reactions: 0,
            refused_deleted: Vec::new(),
            acks: 0,
            reconnects: 0,
            log: VecDeque::new(),
        }
    }

    fn me(&self) -> &str {
        self.user.as_deref().expect("welcomed")
    }

    fn last(&self, room: &str) -> Seq {
        self.rooms.get(room).and_then(|r| r.got.last().copied()).unwrap_or(0)
    }

    fn note(&mut self, line: String) {
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// Everything this peer has to do is done and acknowledged.
    fn done(&self) -> bool {
        self.sent == MESSAGES_PER_PEER
            && self.edits == EDITS_PER_PEER
            && self.deletes == DELETES_PER_PEER
            && self.reactions == REACTIONS_PER_PEER
            && self.outbox.is_empty()
    }

    async fn connect(&mut self, app: &TestApp) -> Client {
        let mut c = app.client().await;
        let mut hello = json!({"type": "hello", "nick": self.nick});
        if let Some(s) = &self.session {
            hello["session"] = json!(s);
        }
        c.send(hello).await;
        match c.recv().await {
            ServerMsg::Welcome { session, user, .. } => {
                if let Some(old) = &self.session {
                    assert_eq!(old, &session, "the session survives a reconnect");
                }
                self.session = Some(session);
                let id = user.expect("welcome says who this is").id;
                if let Some(old) = &self.user {
                    assert_eq!(old, &id, "a guest keeps its id for the session");
                }
                self.user = Some(id);
            }
            other => panic!("{other:?}"),
        }
        self.note("--- connected".into());
        // The room joined first is ready first: take turns.
        let first = self.reconnects % ROOMS.len();
        for room in ROOMS[first..].iter().chain(&ROOMS[..first]) {
            // since 0 on the first join too: this peer wants the whole room.
            c.send(json!({"type": "join", "room": room, "since": self.last(room)})).await;
        }
        c
    }

    /// Applies one frame; returns the room whose replay it completed, if it did.
    fn apply(&mut self, msg: ServerMsg, conn: &mut Conn) -> Option<String> {
        self.note(format!("{msg:?}"));
        match msg {
            ServerMsg::Joined { room, head, truncated, .. } => {
                assert!(!truncated, "{}: the replay of {room} was cut (the test does not page)", self.nick);
                self.rooms.entry(room.clone()).or_default();
                if self.last(&room) >= head {
                    return Some(room);
                }
                conn.replaying.insert(room, head);
                None
            }
            ServerMsg::Ack { reference } => {
                let r = reference.expect("an ack of a reaction carries its ref");
                let known = conn.reacts.remove(&r).or_else(|| conn.answered.remove(&r));
                assert!(
                    known.is_some(),
                    "{}: ack for {r}, which is no reaction of this connection",
                    self.nick
                );
                self.acks += 1;
                None
            }
            ServerMsg::Error { code: ErrorCode::Deleted, reference: Some(r), client_id: None, .. }
                if conn.reacts.contains_key(&r) || conn.answered.contains_key(&r) =>
            {
                // A reaction to a message its author deleted meanwhile: refused, nothing stored.
                let (room, target, _) = conn.reacts.remove(&r).or_else(|| conn.answered.remove(&r)).unwrap();
                self.refused_deleted.push((room, target));
                None
            }
            ServerMsg::Error { code, message, client_id, reference, .. } => panic!(
                "{}: unexpected error {code} ({message}), client_id {client_id:?} ({:?}), ref {reference:?}; recent frames: {:#?}",
                self.nick,
                client_id.as_ref().and_then(|id| self.outbox.get(id)),
                self.log
            ),
            event @ (ServerMsg::Message(_)
            | ServerMsg::Edit(_)
            | ServerMsg::Delete(_)
            | ServerMsg::React(_)) => self.apply_event(event, conn),
            _ => None,
        }
    }

    fn apply_event(&mut self, event: ServerMsg, conn: &mut Conn) -> Option<String> {
        let (room, seq) = event_place(&event).map(|(r, s)| (r.to_owned(), s)).unwrap();
        let (user, client_id) = event_author(&event);
        let (mine, client_id) = (user == self.me(), client_id.to_owned());
        let last = self.last(&room);
        if seq <= last {
            // Only the answer to a retry of a change stored already repeats a seq: the
            // original event, read back from the store. A client holds it already.
            assert!(
                mine && conn.resent.remove(&client_id),
                "{}: {room} #{seq} again (holding up to {last}), not as the answer to a retry: {event:?}; recent frames: {:#?}",
                self.nick,
                self.log
            );
            let held = &self.rooms[&room].log[(seq - 1) as usize];
            assert_eq!(
                held,
                &event_key(&event),
                "{}: a retry of {client_id} answered with another event",
                self.nick
            );
            self.settle(&client_id, &event);
            return None;
        }
        assert_eq!(
            seq,
            last + 1,
            "{}: gap in {room} after {last}; recent frames: {:#?}",
            self.nick,
            self.log
        );
        let state = self.rooms.entry(room.clone()).or_default();
        apply_event(&mut state.messages, &event);
        state.got.push(seq);
        state.log.push(event_key(&event));
        if mine {
            match &event {
                ServerMsg::React(r) => {
                    let key = (room.clone(), r.target, r.emoji.clone());
                    let answered = conn.reacts.iter().find(|(_, k)| **k == key).map(|(r, _)| r.clone());
                    if let Some(r) = answered {
                        let key = conn.reacts.remove(&r).unwrap();
                        conn.answered.insert(r, key);
                    }
                }
                _ => self.settle(&client_id, &event),
            }
        }
        match conn.replaying.get(&room) {
            Some(head) if seq >= *head => {
                conn.replaying.remove(&room);
                Some(room)
            }
            _ => None,
        }
    }

    /// Our own event came: what it answers is acknowledged.
    fn settle(&mut self, client_id: &str, event: &ServerMsg) {
        let Some(p) = self.outbox.remove(client_id) else { return };
        let (room, _) = event_place(event).unwrap();
        assert_eq!(p.room, room, "{}: {client_id} stored in another room", self.nick);
        let target = match event {
            ServerMsg::Message(m) => m.reply_to,
            other => event_target(other),
        };
        let kind = match event {
            ServerMsg::Message(_) => Kind::Send,
            ServerMsg::Edit(_) => Kind::Edit,
            ServerMsg::Delete(_) => Kind::Delete,
            other => panic!("{}: {client_id} answered by {other:?}", self.nick),
        };
        assert_eq!(
            (p.kind, p.target),
            (kind, target),
            "{}: {client_id} stored as something else: {event:?}",
            self.nick
        );
    }

    /// Messages a pending request names (changes, or replies to): not to be changed now.
    fn busy(&self) -> HashSet<(String, Seq)> {
        self.outbox.values().filter_map(|p| p.target.map(|t| (p.room.clone(), t))).collect()
    }

    /// Up to `RECENT` of the newest live messages of `room` that pass `keep`.
    fn recent(&self, room: &str, keep: impl Fn(&ChatMessage) -> bool) -> Vec<Seq> {
        let Some(state) = self.rooms.get(room) else { return Vec::new() };
        state.messages.values().rev().filter(|m| !m.deleted && keep(m)).take(RECENT).map(|m| m.seq).collect()
    }

    /// One of my recent live messages in `room` that no pending request names.
    fn own_target(&self, room: &str, rng: &mut Rng) -> Option<Seq> {
        let busy = self.busy();
        let me = self.me().to_owned();
        let mine = self.recent(room, |m| m.user == me && !busy.contains(&(room.to_owned(), m.seq)));
        (!mine.is_empty()).then(|| mine[rng.below(mine.len() as u64) as usize])
    }

    /// The next request to make, if any is possible now: sends, edits, deletions and
    /// reactions mixed in proportion to what is left of each.
    fn next_request(&mut self, rng: &mut Rng, conn: &mut Conn) -> Option<Value> {
        // Changes go to either room alike (once its replay is in), sends to each in turn.
        // (From the generator's high bits: its low bits follow the calls made before.)
        let room = ROOMS[((rng.next() >> 40) % ROOMS.len() as u64) as usize].to_owned();
        let ready = conn.ready.contains(&room);
        let send_room = ROOMS[self.sent % ROOMS.len()];
        let own = if ready { self.own_target(&room, rng) } else { None };
        let react = {
            // Mostly a recent message and any emoji (on, or off if mine is on); now and
            // then one of my reactions anywhere in the room, to take it back.
            let me = self.me().to_owned();
            let mine: Vec<(Seq, String)> = match self.rooms.get(&room) {
                Some(state) if ready && rng.chance(3) => state
                    .messages
                    .values()
                    .filter(|m| !m.deleted)
                    .flat_map(|m| {
                        m.reactions.iter().filter(|r| r.users.contains(&me)).map(|r| (m.seq, r.emoji.clone()))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let candidates = if ready { self.recent(&room, |_| true) } else { Vec::new() };
            if !mine.is_empty() {
                Some(mine[rng.below(mine.len() as u64) as usize].clone())
            } else {
                (!candidates.is_empty()).then(|| {
                    let target = candidates[rng.below(candidates.len() as u64) as usize];
                    (target, EMOJI[rng.below(EMOJI.len() as u64) as usize].to_owned())
                })
            }
        }
        .filter(|(target, emoji)| {
            !conn.reacts.values().any(|k| *k == (room.clone(), *target, emoji.clone()))
        });
        let weights = [
            if conn.ready.contains(send_room) { MESSAGES_PER_PEER - self.sent } else { 0 },
            if own.is_some() { EDITS_PER_PEER - self.edits } else { 0 },
            if own.is_some() { DELETES_PER_PEER - self.deletes } else { 0 },
            if react.is_some() && conn.reacts_sent < REACTIONS_PER_CONNECTION {
                REACTIONS_PER_PEER - self.reactions
            } else {
                0
            },
        ];
        let total: usize = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.below(total as u64) as usize;
        let choice = weights.iter().position(|w| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        });
        let (id, pending) = match choice.unwrap() {
            0 => {
                let room = send_room.to_owned();
                let id = format!("{}-m{}", self.nick, self.sent);
                let text = format!("{} says {}", self.nick, self.sent);
                let mut frame = json!({"type": "send", "room": room, "text": text, "client_id": id});
                // Now and then an answer to one of my own messages (which I do not delete
                // while the answer is on its way: a reply to a deleted message is refused).
                let reply_to = if rng.chance(5) { self.own_target(&room, rng) } else { None };
                if let Some(original) = reply_to {
                    frame["reply_to"] = json!(original);
                }
                self.sent += 1;
                (id, Pending { kind: Kind::Send, room, target: reply_to, frame })
            }
            1 => {
                let target = own.unwrap();
                let id = format!("{}-e{}", self.nick, self.edits);
                let text = format!("{} edits #{target}, take {}", self.nick, self.edits);
                let frame =
                    json!({"type": "edit", "room": room, "target": target, "text": text, "client_id": id});
                self.edits += 1;
                (id, Pending { kind: Kind::Edit, room, target: Some(target), frame })
            }
            2 => {
                let target = own.unwrap();
                let id = format!("{}-d{}", self.nick, self.deletes);
                let frame = json!({"type": "delete", "room": room, "target": target, "client_id": id});
                self.deletes += 1;
                (id, Pending { kind: Kind::Delete, room, target: Some(target), frame })
            }
            _ => {
                let (target, emoji) = react.unwrap();
                let me = self.me().to_owned();
                let on = !self.rooms[&room].messages[&target]
                    .reactions
                    .iter()
                    .any(|r| r.emoji == emoji && r.users.contains(&me));
                let reference = format!("{}-r{}", self.nick, self.reactions);
                let frame = json!({"type": "react", "room": room, "target": target, "emoji": emoji, "on": on, "ref": reference});
                self.reactions += 1;
                conn.reacts_sent += 1;
                conn.reacts.insert(reference, (room, target, emoji));
                return Some(frame);
            }
        };
        let frame = pending.frame.clone();
        self.outbox.insert(id, pending);
        Some(frame)
    }

    /// Works until everything is done and acknowledged, dropping the connection at random.
    async fn run(&mut self, app: &TestApp, rng: &mut Rng) {
        while !self.done() {
            let mut c = self.connect(app).await;
            let mut conn = Conn::default();
            loop {
                if self.outbox.len() + conn.reacts.len() < WINDOW
                    && let Some(frame) = self.next_request(rng, &mut conn)
                {
                    if c.ws.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                    continue;
                }
                if self.done() {
                    return;
                }
                let only_reactions_left = self.sent == MESSAGES_PER_PEER
                    && self.edits == EDITS_PER_PEER
                    && self.deletes == DELETES_PER_PEER
                    && self.outbox.is_empty();
                if only_reactions_left && conn.reacts_sent >= REACTIONS_PER_CONNECTION {
                    // This connection's reactions are spent; a new one has its own.
                    break;
                }
                let frame = tokio::time::timeout(common::WAIT, c.ws.next()).await.unwrap_or_else(|_| {
                    panic!(
                        "{}: no progress; outbox {:?}; recent frames: {:#?}",
                        self.nick, self.outbox, self.log
                    )
                });
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("{}: expected a text frame, got {other:?}", self.nick),
                };
                let msg: ServerMsg = serde_json::from_str(&text).unwrap();
                if let Some(room) = self.apply(msg, &mut conn) {
                    conn.ready.insert(room.clone());
                    let resend: Vec<(String, Value)> = self
                        .outbox
                        .iter()
                        .filter(|(_, p)| p.room == room)
                        .map(|(id, p)| (id.clone(), p.frame.clone()))
                        .collect();
                    for (id, frame) in resend {
                        conn.resent.insert(id);
                        let _ = c.ws.send(Message::text(frame.to_string())).await;
                    }
                }
                if rng.chance(60) {
                    // A network drop: no close frame; unacknowledged requests stay in the
                    // outbox (reactions are not retried: a lost one is simply not made).
                    self.reconnects += 1;
                    break;
                }
            }
        }
    }

    /// Reconnects once more and reads until every room is at `heads`.
    async fn catch_up(&mut self, app: &TestApp, heads: &BTreeMap<String, Seq>) {
        let mut c = self.connect(app).await;
        let mut conn = Conn::default();
        while heads.iter().any(|(room, head)| self.last(room) < *head) {
            let msg = c.recv().await;
            self.apply(msg, &mut conn);
        }
        assert!(self.outbox.is_empty());
    }
}

/// A room as `history` pages it back from `head`, oldest first, each message as the JSON
/// text of the value the server sent.
async fn history_json(c: &mut Client, room: &str, head: Seq, limit: u32) -> Vec<String> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before = head + 1;
    loop {
        c.send(json!({"type": "history", "room": room, "before": before, "limit": limit})).await;
        let page: Value = loop {
            let frame: Value = serde_json::from_str(&c.recv_text().await).unwrap();
            if frame["type"] == "history" {
                break frame;
            }
            assert!(["presence", "typing"].contains(&frame["type"].as_str().unwrap()), "{frame}");
        };
        assert_eq!(page["room"], room);
        let msgs = page["messages"].as_array().unwrap().clone();
        let more = page["has_more"].as_bool().unwrap();
        if let Some(first) = msgs.first() {
            before = first["seq"].as_u64().unwrap();
        }
        assert!(!more || !msgs.is_empty());
        pages.push(msgs);
        if !more {
            break;
        }
    }
    pages.into_iter().rev().flatten().map(|m| m.to_string()).collect()
}

/// Where the two copies of a room first differ, to explain a failure.
fn first_difference(ours: &[String], theirs: &[String]) -> String {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a != b {
            return format!("message {i} differs:\n  peer:  {a}\n  fresh: {b}");
        }
    }
    format!("lengths differ: peer {}, fresh {}", ours.len(), theirs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_applies_every_event_exactly_once_in_order_despite_random_disconnects() {
    let began = std::time::Instant::now();
    let app = spawn_with(|c| {
        c.msg_rate = 100_000;
        c.msg_burst = 100_000;
        c.http_rate = 100_000;
        c.http_burst = 100_000;
        // Every resume fits in one replay (the test does not page through `history`).
        c.max_history = 10_000;
        c.reply_bytes = 4 << 20;
        c.outbound_queue_bytes = 8 << 20;
    })
    .await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..PEERS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut peer = Peer::new(i);
            let mut rng = Rng::seeded(i as u64);
            peer.run(&app, &mut rng).await;
            peer
        }));
    }
    let mut peers = Vec::new();
    for t in tasks {
        peers.push(t.await.unwrap());
    }

    // A dropped connection's last requests may still be being read: wait until every
    // connection task has ended (then everything they accepted has its seq)...
    app.hub.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), app.hub.tasks.wait()).await.expect("connections end");
    app.hub.tasks.reopen();
    // ... and have the last word in each room: its echo is the head, and everything
    // accepted before it is stored before it.
    let (mut closer, _) = app.user("closer").await;
    let mut heads = BTreeMap::new();
    for room in ROOMS {
        let stored_head = app.hub.find_room(&RoomName::parse(room).unwrap()).unwrap().head();
        closer.send(json!({"type": "join", "room": room, "since": stored_head})).await;
        let id = format!("closer-{room}");
        closer.say(room, "that is all", &id).await;
        let last = match closer.recv_until(|m| matches!(m, ServerMsg::Message(m) if m.client_id == id)).await
        {
            ServerMsg::Message(m) => m,
            _ => unreachable!(),
        };
        heads.insert(room.to_owned(), last.seq);
    }

    let mut reconnects = 0;
    for peer in &mut peers {
        peer.catch_up(&app, &heads).await;
        for (room, head) in &heads {
            assert_eq!(peer.rooms[room].got, (1..=*head).collect::<Vec<_>>(), "{} in {room}", peer.nick);
        }
        reconnects += peer.reconnects;
    }
    assert!(reconnects >= PEERS * 5, "the test really disconnected ({reconnects} times)");

    // Everyone saw the same events at the same seqs.
    for peer in &peers[1..] {
        for room in ROOMS {
            assert_eq!(
                peer.rooms[room].log, peers[0].rooms[room].log,
                "{} and {} in {room}",
                peer.nick, peers[0].nick
            );
        }
    }

    // Each client_id stored exactly once: every message, edit and deletion made, no more.
    let mut stored_ids: HashMap<String, usize> = HashMap::new();
    for room in ROOMS {
        for key in &peers[0].rooms[room].log {
            if let Some(id) = key.split(' ').find(|w| w.starts_with("peer") && w.contains('-')) {
                *stored_ids.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    let made: Vec<String> = (0..PEERS)
        .flat_map(|p| {
            let sends = (0..MESSAGES_PER_PEER).map(move |n| format!("peer{p}-m{n}"));
            let edits = (0..EDITS_PER_PEER).map(move |n| format!("peer{p}-e{n}"));
            let deletes = (0..DELETES_PER_PEER).map(move |n| format!("peer{p}-d{n}"));
            sends.chain(edits).chain(deletes)
        })
        .collect();
    for id in &made {
        assert_eq!(stored_ids.get(id), Some(&1), "{id} stored once");
    }
    assert_eq!(stored_ids.len(), made.len(), "nothing stored that nobody made");

    // Every peer holds each room exactly as a fresh load reads it, over HTTP and `history`.
    let mut tally = (0, 0, 0, 0);
    for room in ROOMS {
        let fresh = stored_json(app.addr.port(), room, 200).await;
        let paged = history_json(&mut closer, room, heads[room], 300).await;
        assert_eq!(paged, fresh, "{room}: `history` and the HTTP API agree");
        assert_eq!(fresh.len(), PEERS * MESSAGES_PER_PEER / ROOMS.len() + 1, "{room}: every message once");
        for peer in &peers {
            let ours = messages_json(&peer.rooms[room].messages);
            assert!(
                ours == fresh,
                "{} holds {room} otherwise than it is stored: {}",
                peer.nick,
                first_difference(&ours, &fresh)
            );
            for (r, target) in peer.refused_deleted.iter().filter(|(r, _)| r == room) {
                assert!(
                    peer.rooms[r].messages[target].deleted,
                    "{}: a reaction to {r} #{target} was refused as deleted",
                    peer.nick
                );
            }
        }
        let messages = peers[0].rooms[room].messages.values();
        for m in messages {
            tally.0 += m.deleted as usize;
            tally.1 += m.edited_ts.is_some() as usize;
            tally.2 += m.reactions.iter().map(|r| r.users.len()).sum::<usize>();
            tally.3 += m.reply_to.is_some() as usize;
        }
    }
    let (deleted, edited, reactions, replies) = tally;
    assert_eq!(deleted, PEERS * DELETES_PER_PEER, "each deletion made a different message a tombstone");
    assert!(
        edited > 0 && reactions > 0 && replies > 0,
        "edited {edited}, reactions {reactions}, replies {replies}"
    );
    let taken_back: usize =
        ROOMS.iter().map(|r| peers[0].rooms[*r].log.iter().filter(|k| k.ends_with("on false")).count()).sum();
    assert!(taken_back > 0, "some reactions were taken back");
    let refused: usize = peers.iter().map(|p| p.refused_deleted.len()).sum();
    let acks: usize = peers.iter().map(|p| p.acks).sum();
    println!(
        "exactly-once: heads {heads:?}; {} messages, {} edits, {} deletions, {} reactions made \
         ({taken_back} stored off, {acks} already so, {refused} refused as deleted); {reconnects} random disconnects; \
         {PEERS} peers all 1..=head and equal to a fresh load; {deleted} tombstones, {edited} edited, \
         {reactions} reactions, {replies} replies stored; {:?}",
        PEERS * MESSAGES_PER_PEER,
        PEERS * EDITS_PER_PEER,
        PEERS * DELETES_PER_PEER,
        PEERS * REACTIONS_PER_PEER,
        began.elapsed()
    );
}

/// The next frame that is not presence or typing.
async fn next_event(c: &mut Client) -> ServerMsg {
    c.recv_until(|m| !matches!(m, ServerMsg::Presence { .. } | ServerMsg::Typing { .. })).await
}

/// A retry of an edit or a deletion that is stored already is answered with the original
/// event (its seq, its fields as stored), as a send's retry is, and stores nothing new; on
/// the same connection and after a reconnect with the session.
#[tokio::test]
async fn a_retried_edit_or_delete_is_answered_with_the_stored_event() {
    let app = spawn_app().await;
    let (mut c, session) = app.user("ann").await;
    c.join("retry", Some(0), 0).await;
    let original = c.say_acked("retry", "first", "m1").await;
    assert_eq!(original.seq, 1);

    let edit = json!({"type": "edit", "room": "retry", "target": 1, "text": "second", "client_id": "e1"});
    c.send(edit.clone()).await;
    let ServerMsg::Edit(edited) = next_event(&mut c).await else { panic!("expected the edit") };
    assert_eq!(
        (edited.seq, edited.target, edited.text.as_str(), edited.client_id.as_str()),
        (2, 1, "second", "e1")
    );
    c.send(edit.clone()).await;
    assert_eq!(
        next_event(&mut c).await,
        ServerMsg::Edit(edited.clone()),
        "a retried edit gets the stored one"
    );

    let delete = json!({"type": "delete", "room": "retry", "target": 1, "client_id": "d1"});
    c.send(delete.clone()).await;
    let ServerMsg::Delete(deleted) = next_event(&mut c).await else { panic!("expected the deletion") };
    assert_eq!((deleted.seq, deleted.target, deleted.client_id.as_str()), (3, 1, "d1"));
    c.send(delete.clone()).await;
    assert_eq!(
        next_event(&mut c).await,
        ServerMsg::Delete(deleted.clone()),
        "a retried deletion gets the stored one"
    );
    // The edit as it is stored now: its message was deleted, so it keeps no text.
    let redacted =
        confab::protocol::EditEvent { text: String::new(), mentions: Vec::new(), ..edited.clone() };
    c.send(edit.clone()).await;
    assert_eq!(
        next_event(&mut c).await,
        ServerMsg::Edit(redacted.clone()),
        "a retried edit of a since-deleted message"
    );

    // After a reconnect with the session, the same.
    drop(c);
    let mut c = app.client().await;
    c.send(json!({"type": "hello", "nick": "ann", "session": session})).await;
    assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
    c.send(json!({"type": "join", "room": "retry", "since": 3})).await;
    assert!(matches!(
        c.recv_until(|m| matches!(m, ServerMsg::Joined { .. })).await,
        ServerMsg::Joined { head: 3, .. }
    ));
    c.send(delete).await;
    assert_eq!(next_event(&mut c).await, ServerMsg::Delete(deleted), "a retried deletion after a reconnect");
    c.send(edit).await;
    assert_eq!(next_event(&mut c).await, ServerMsg::Edit(redacted), "a retried edit after a reconnect");

    // Nothing new was stored.
    let room = app.hub.find_room(&RoomName::parse("retry").unwrap()).unwrap();
    assert_eq!(room.head(), 3);
    let (mut other, _) = app.user("bob").await;
    let (joined, _) = other.join("retry", Some(0), 0).await;
    assert!(matches!(joined, ServerMsg::Joined { head: 3, .. }), "{joined:?}");
}
