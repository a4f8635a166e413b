//! Promise 1, durable once acknowledged: the real binary is SIGKILLed mid-stream while
//! writers send messages and edit, delete and react to them, and is restarted on the same
//! database. Every event any client saw (`message`, `edit`, `delete`, `react`) is still
//! stored with the same seq, every room's event seqs run 1..=head without a gap, and the
//! room as stored now is what applying its replayed events gives.

mod common;

use common::{
    Client, Rng, apply_event, connect, event_author, event_place, event_target, free_port, messages_json,
    start_binary as start, stored, stored_json,
};
use confab::protocol::{ChatMessage, EditEvent, ErrorCode, Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 8;
const ROOMS: usize = 3;
/// Requests each client keeps in flight: enough to make the committer batch.
const WINDOW: usize = 32;
/// Acknowledged messages (over all clients) after which the server is killed.
const KILL_AFTER: usize = 3000;
const EMOJI: [&str; 3] = ["👍", "🎉", "😂"];
/// Edits, deletions and reactions go to the newest messages, so they meet.
const RECENT: usize = 16;
/// So that a `join {since: 0}` replays a whole room in one reply.
const WHOLE_REPLAY: [&str; 6] =
    ["--max-history", "100000", "--reply-bytes", "16777216", "--outbound-queue-bytes", "33554432"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    sigkill_mid_stream(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_with_fsync_per_commit() {
    sigkill_mid_stream(&["--sync", "full"]).await;
}

/// Every room event any client received, keyed by (room, seq).
type Seen = Arc<Mutex<HashMap<(String, Seq), ServerMsg>>>;

/// One writer: sends messages into every room, and now and then edits or deletes one of
/// its own or turns a reaction on or off on anyone's, until the server goes away.
struct Writer {
    nick: String,
    user: String,
    c: Client,
    rng: Rng,
    /// Each room as this writer holds it (it joined before anything was said).
    rooms: HashMap<String, BTreeMap<Seq, ChatMessage>>,
    /// Unanswered sends, edits and deletions: client_id → (room, the message changed).
    outbox: HashMap<String, (String, Option<Seq>)>,
    /// Unanswered reactions by `ref`: (room, target, emoji).
    reacts: HashMap<String, (String, Seq, String)>,
    made: usize,
    reacts_sent: usize,
    /// No reaction before this (after a `rate_limited`).
    react_pause: Instant,
}

impl Writer {
    /// Up to `RECENT` of the newest live messages of `room` that pass `keep`.
    fn recent(&self, room: &str, keep: impl Fn(&ChatMessage) -> bool) -> Vec<Seq> {
        let Some(messages) = self.rooms.get(room) else { return Vec::new() };
        messages.values().rev().filter(|m| !m.deleted && keep(m)).take(RECENT).map(|m| m.seq).collect()
    }

    fn pick(&mut self, from: &[Seq]) -> Option<Seq> {
        (!from.is_empty()).then(|| from[self.rng.below(from.len() as u64) as usize])
    }

    /// The next request: mostly a message, now and then a change.
    fn next_request(&mut self, started: Instant) -> serde_json::Value {
        let room = format!("room{}", (self.rng.next() >> 40) % ROOMS as u64);
        let n = self.made;
        self.made += 1;
        let busy: HashSet<(String, Seq)> =
            self.outbox.values().filter_map(|(r, t)| t.map(|t| (r.clone(), t))).collect();
        let me = self.user.clone();
        let own = self.recent(&room, |m| m.user == me && !busy.contains(&(room.clone(), m.seq)));
        match self.rng.below(16) {
            0 | 1 => {
                if let Some(target) = self.pick(&own) {
                    let id = format!("{}-e{n}", self.nick);
                    self.outbox.insert(id.clone(), (room.clone(), Some(target)));
                    let text = format!("{} edits #{target} ({n})", self.nick);
                    return json!({"type": "edit", "room": room, "target": target, "text": text, "client_id": id});
                }
            }
            2 => {
                if let Some(target) = self.pick(&own) {
                    let id = format!("{}-d{n}", self.nick);
                    self.outbox.insert(id.clone(), (room.clone(), Some(target)));
                    return json!({"type": "delete", "room": room, "target": target, "client_id": id});
                }
            }
            3 | 4 => {
                // A connection changes 10 reactions at once, then 4 a second: keep below.
                let allowance = 10 + (started.elapsed().as_millis() * 3 / 1000) as usize;
                // A recent message (half the time one I reacted to, to take it back).
                let candidates = match self.rng.chance(2) {
                    true => self.recent(&room, |m| m.reactions.iter().any(|r| r.users.contains(&me))),
                    false => Vec::new(),
                };
                let candidates =
                    if candidates.is_empty() { self.recent(&room, |_| true) } else { candidates };
                if self.reacts_sent < allowance
                    && Instant::now() >= self.react_pause
                    && let Some(target) = self.pick(&candidates)
                {
                    let mine: Vec<String> = self.rooms[&room][&target]
                        .reactions
                        .iter()
                        .filter(|r| r.users.contains(&me))
                        .map(|r| r.emoji.clone())
                        .collect();
                    let emoji = match mine.is_empty() {
                        false => mine[self.rng.below(mine.len() as u64) as usize].clone(),
                        true => EMOJI[self.rng.below(EMOJI.len() as u64) as usize].to_owned(),
                    };
                    let key = (room.clone(), target, emoji.clone());
                    if !self.reacts.values().any(|k| *k == key) {
                        let on = !self.rooms[&room][&target]
                            .reactions
                            .iter()
                            .any(|r| r.emoji == emoji && r.users.contains(&me));
                        let reference = format!("{}-r{n}", self.nick);
                        self.reacts.insert(reference.clone(), key);
                        self.reacts_sent += 1;
                        return json!({"type": "react", "room": room, "target": target, "emoji": emoji, "on": on, "ref": reference});
                    }
                }
            }
            _ => {}
        }
        let id = format!("{}-m{n}", self.nick);
        self.outbox.insert(id.clone(), (room.clone(), None));
        json!({"type": "send", "room": room, "text": format!("{} #{n}", self.nick), "client_id": id})
    }

    /// Writes until the server is gone; every room event received goes into `seen`.
    async fn run(mut self, seen: Seen, acked: Arc<AtomicUsize>, kill: Arc<tokio::sync::Notify>) {
        let started = Instant::now();
        loop {
            while self.outbox.len() + self.reacts.len() < WINDOW {
                let frame = self.next_request(started);
                if self.c.ws.send(Message::text(frame.to_string())).await.is_err() {
                    return;
                }
            }
            let text = match self.c.ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // The server is gone (a SIGKILL leaves no close frame, only a dead socket).
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(other)) => panic!("{}: unexpected frame {other:?}", self.nick),
            };
            let msg: ServerMsg =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad frame {text}: {e}"));
            if let Some((room, seq)) = event_place(&msg) {
                let (room, mine) = (room.to_owned(), event_author(&msg).0 == self.user);
                {
                    let mut seen = seen.lock().unwrap();
                    match seen.get(&(room.clone(), seq)) {
                        // Every member gets the same frame.
                        Some(other) => {
                            assert_eq!(other, &msg, "{room} #{seq} reached two clients differently")
                        }
                        None => {
                            seen.insert((room.clone(), seq), msg.clone());
                        }
                    }
                }
                apply_event(self.rooms.entry(room.clone()).or_default(), &msg);
                if mine {
                    if let ServerMsg::React(r) = &msg {
                        let key = (room, r.target, r.emoji.clone());
                        self.reacts.retain(|_, k| *k != key);
                    } else {
                        let id = event_author(&msg).1;
                        assert!(self.outbox.remove(id).is_some(), "{}: {id} came back unasked", self.nick);
                        if matches!(msg, ServerMsg::Message(_))
                            && acked.fetch_add(1, Ordering::Relaxed) + 1 == KILL_AFTER
                        {
                            kill.notify_one();
                        }
                    }
                }
                continue;
            }
            match msg {
                ServerMsg::Ack { reference: Some(r) } if self.reacts.remove(&r).is_some() => {}
                // A reaction to a message deleted meanwhile: refused, nothing stored.
                ServerMsg::Error { code: ErrorCode::Deleted, reference: Some(r), .. }
                    if self.reacts.remove(&r).is_some() => {}
                // Over the reaction rate after all: refused, nothing stored; wait as told.
                ServerMsg::Error {
                    code: ErrorCode::RateLimited, reference: Some(r), retry_after_ms, ..
                } if self.reacts.remove(&r).is_some() => {
                    self.react_pause = Instant::now() + Duration::from_millis(retry_after_ms.unwrap_or(250));
                }
                ServerMsg::Presence { .. } | ServerMsg::Typing { .. } => {}
                other => panic!("{}: unexpected {other:?}", self.nick),
            }
        }
    }
}

async fn sigkill_mid_stream(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let port = free_port();
    let flags: Vec<&str> = flags.iter().copied().chain(WHOLE_REPLAY).collect();
    let mut server = start(&db, port, &flags).await;

    let seen: Seen = Arc::default();
    let acked = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(tokio::sync::Notify::new());
    // Everyone joins before anyone speaks, so each holds every event of every room.
    let mut writers = Vec::new();
    for i in 0..CLIENTS {
        let nick = format!("writer{i}");
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
        let mut c = Client { ws };
        c.send(json!({"type": "hello", "nick": nick})).await;
        let ServerMsg::Welcome { user, .. } = c.recv().await else { panic!("expected welcome") };
        for r in 0..ROOMS {
            c.join(&format!("room{r}"), Some(0), 0).await;
        }
        writers.push(Writer {
            nick,
            user: user.expect("welcome says who").id,
            c,
            rng: Rng::seeded(i as u64),
            rooms: HashMap::new(),
            outbox: HashMap::new(),
            reacts: HashMap::new(),
            made: 0,
            reacts_sent: 0,
            react_pause: Instant::now(),
        });
    }
    let tasks: Vec<_> =
        writers.into_iter().map(|w| tokio::spawn(w.run(seen.clone(), acked.clone(), kill.clone()))).collect();
    tokio::time::timeout(Duration::from_secs(60), kill.notified())
        .await
        .expect("messages acknowledged in time");
    server.start_kill().unwrap(); // SIGKILL: no shutdown path runs
    server.wait().await.unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t).await.expect("clients notice the kill").unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let seen_messages = seen.values().filter(|m| matches!(m, ServerMsg::Message(_))).count();
    assert!(seen_messages >= KILL_AFTER, "saw {seen_messages} messages");

    let _server = start(&db, port, &flags).await;
    let mut verifier = connect(port, "verifier").await;
    let mut heads = BTreeMap::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut compared: BTreeMap<Compared, usize> = BTreeMap::new();
    for r in 0..ROOMS {
        let room = format!("room{r}");
        let replay = replay_all(&mut verifier, &room).await;
        heads.insert(room.clone(), replay.len());

        // Every event seen before the kill is stored at its seq.
        for ((_, seq), frame) in seen.iter().filter(|((r, _), _)| *r == room) {
            let kept = replay
                .get((*seq - 1) as usize)
                .unwrap_or_else(|| panic!("{room} #{seq} was seen but is gone"));
            *compared.entry(same_event(&replay, frame, kept)).or_default() += 1;
        }
        for event in &replay {
            *kinds
                .entry(match event {
                    ServerMsg::Message(_) => "messages",
                    ServerMsg::Edit(_) => "edits",
                    ServerMsg::Delete(_) => "deletions",
                    _ => "reactions",
                })
                .or_default() += 1;
        }
        let ids: Vec<&str> =
            replay.iter().filter(|e| matches!(e, ServerMsg::Message(_))).map(|e| event_author(e).1).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "{room}: a client_id stored twice");

        // The room as stored now is the replay applied.
        let mut model = BTreeMap::new();
        for event in &replay {
            apply_event(&mut model, event);
        }
        // A replayed `message` comes as it is now (without its reactions).
        for event in &replay {
            if let ServerMsg::Message(k) = event {
                let now = &model[&k.seq];
                assert_eq!(
                    (&k.text, k.edited_ts, k.deleted, &k.mentions),
                    (&now.text, now.edited_ts, now.deleted, &now.mentions),
                    "{room} #{} replayed otherwise than it is now",
                    k.seq
                );
                assert!(k.reactions.is_empty(), "{room} #{}: a replayed message carries no reactions", k.seq);
            }
        }
        let ours = messages_json(&model);
        let fresh = stored_json(port, &room, 500).await;
        if ours != fresh {
            let at = ours.iter().zip(&fresh).position(|(a, b)| a != b);
            panic!(
                "{room}: the replay applied differs from a fresh load ({} and {} messages); first difference:\n  replayed: {:?}\n  stored:   {:?}",
                ours.len(),
                fresh.len(),
                at.map(|i| &ours[i]),
                at.map(|i| &fresh[i])
            );
        }
        let typed = stored(port, &room).await;
        assert_eq!(typed.len(), model.len(), "{room}: the typed load agrees");
    }
    let taken_back = seen.values().filter(|e| matches!(e, ServerMsg::React(r) if !r.on)).count();
    assert!(taken_back > 0, "no reaction seen taken back");
    for kind in ["messages", "edits", "deletions", "reactions"] {
        assert!(kinds.get(kind).is_some_and(|n| *n > 0), "no {kind} stored: {kinds:?}");
    }
    println!(
        "durability: {} events ({seen_messages} messages) seen before SIGKILL, found again {compared:?}; \
         after restart heads {heads:?}, stored {kinds:?}, {taken_back} reactions stored off",
        seen.len()
    );
}

/// Joins `room` with `since: 0` on `c` and reads its whole event log, checking its seqs
/// run 1..=head.
async fn replay_all(c: &mut Client, room: &str) -> Vec<ServerMsg> {
    c.send(json!({"type": "join", "room": room, "since": 0})).await;
    let head = match c.recv_until(|m| matches!(m, ServerMsg::Joined { .. })).await {
        ServerMsg::Joined { head, truncated, .. } => {
            assert!(!truncated, "{room}: the replay was cut");
            head
        }
        _ => unreachable!(),
    };
    let mut replay = Vec::with_capacity(head as usize);
    while (replay.len() as Seq) < head {
        let msg = c.recv().await;
        match event_place(&msg) {
            Some((r, seq)) => {
                assert_eq!(r, room);
                assert_eq!(seq, replay.len() as Seq + 1, "{room}: seqs have a gap");
                replay.push(msg);
            }
            None => assert!(matches!(msg, ServerMsg::Presence { .. } | ServerMsg::Typing { .. }), "{msg:?}"),
        }
    }
    replay
}

/// How a seen event was found again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Compared {
    /// The very frame.
    Exactly,
    /// A message edited or deleted since, or an edit whose message was deleted since: the
    /// same event, as it is now.
    ChangedSince,
}

/// `seen` (a live frame from before the kill) and `kept` (the replayed event at its seq)
/// are the same event. A replayed `message` comes as it is now: only one no edit or
/// deletion has touched since must be the same frame. A replayed `edit` of a message
/// deleted later has lost its text and mentions.
fn same_event(replay: &[ServerMsg], seen: &ServerMsg, kept: &ServerMsg) -> Compared {
    let (room, seq) = event_place(seen).unwrap();
    let changes_of = |target: Seq| replay.iter().filter(move |e| event_target(e) == Some(target));
    match (seen, kept) {
        (ServerMsg::Message(m), ServerMsg::Message(k)) => {
            let touched = changes_of(seq).any(|e| matches!(e, ServerMsg::Edit(_) | ServerMsg::Delete(_)));
            if touched {
                let fixed = |m: &ChatMessage| {
                    (m.nick.clone(), m.client_id.clone(), m.ts, m.user.clone(), m.guest, m.reply_to)
                };
                assert_eq!(fixed(k), fixed(m), "{room} #{seq} changed");
                Compared::ChangedSince
            } else {
                assert_eq!(k, m, "{room} #{seq} changed");
                Compared::Exactly
            }
        }
        (ServerMsg::Edit(e), ServerMsg::Edit(_)) => {
            let deleted_later =
                changes_of(e.target).any(|d| matches!(d, ServerMsg::Delete(d) if d.seq > e.seq));
            let expected = if deleted_later {
                ServerMsg::Edit(EditEvent { text: String::new(), mentions: Vec::new(), ..e.clone() })
            } else {
                seen.clone()
            };
            assert_eq!(kept, &expected, "{room} #{seq} changed");
            if deleted_later { Compared::ChangedSince } else { Compared::Exactly }
        }
        (ServerMsg::Delete(_), ServerMsg::Delete(_)) | (ServerMsg::React(_), ServerMsg::React(_)) => {
            assert_eq!(kept, seen, "{room} #{seq} changed");
            Compared::Exactly
        }
        _ => panic!("{room} #{seq} was {seen:?}, is {kept:?}"),
    }
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
