//! Several nodes on one PostgreSQL database with Redis fan-out, as real processes: every
//! event reaches every receiver exactly once and in order, whichever node it was sent to
//! or read from, across resumes on another node, a SIGKILLed node, lost or restarted
//! Redis, killed PostgreSQL connections and an event committed but never published;
//! presence and typing cross nodes, and a dead node's people leave within the TTL. Two
//! focused tests pin what the broad ones can only hit by chance: a retry through another
//! node is answered, and a resume on a node that is behind the store sends nothing twice.
//!
//! Needs PostgreSQL (`CONFAB_TEST_PG`, default 127.0.0.1:5432, user postgres) and Redis
//! (`CONFAB_TEST_REDIS`, default 127.0.0.1:6379); a test without either says why and
//! returns. Each test has its own database and Redis key prefix (deleted at the end).
//! Run with `--test-threads 1`: every test starts several server processes.
//!
//! Senders are signed-in accounts, so a retry through another node is deduplicated by the
//! store. A resume is what a client does after losing its node: a new socket to another
//! node, `join {since: last seq seen}` for each room, and every unacknowledged `send`
//! again with its `client_id`. Receivers are strict: after each `joined`, a room's events
//! must continue exactly where the receiver was (`seq == last + 1`).

mod common;

use common::cluster::{
    self, Account, Cluster, Next, PRESENCE_TTL_SECS, RedisServer, hello, next_frame, send_frame, signup_all,
};
use common::{Client, Rng, stored};
use confab::protocol::{ErrorCode, PresenceState, Seq, ServerMsg};
use confab::server::store::pg_testing::TestDb;
use serde_json::json;
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};

/// A sender that hears nothing back for this long, with sends outstanding, is stuck.
const NO_ANSWER: Duration = Duration::from_secs(15);
/// How often a client task looks up from its socket (to see whether it is done).
const TICK: Duration = Duration::from_millis(100);

type Heads = BTreeMap<String, Seq>;

// --- Shared progress ---

/// Acknowledged sends over all senders, for the fault drivers to wait on.
#[derive(Clone)]
struct Progress(Arc<watch::Sender<usize>>);

impl Progress {
    fn new() -> Self {
        Progress(Arc::new(watch::channel(0).0))
    }

    fn ack(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    fn now(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until `n` sends are acknowledged (panics after `limit`).
    async fn reach(&self, n: usize, limit: Duration) {
        let mut rx = self.0.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|acked| *acked >= n)).await;
        assert!(reached.is_ok(), "{n} acknowledged sends within {limit:?} (got {})", self.now());
    }

    /// Waits until `n` sends are acknowledged; false after `limit`.
    async fn reach_within(&self, n: usize, limit: Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|acked| *acked >= n)).await.is_ok()
    }
}

/// Connects to the first node, from `start` on and never `avoid`, that answers hello.
/// Polls (a refused connection is a node that is down or starting) until `deadline`.
async fn connect_any(
    ports: &[u16],
    start: usize,
    avoid: Option<usize>,
    cookie: Option<&str>,
    nick: &str,
    deadline: Instant,
) -> Result<(usize, Client, confab::protocol::UserInfo), String> {
    let n = ports.len();
    let mut last_error = String::new();
    loop {
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == avoid && n > 1 {
                continue;
            }
            match hello(ports[i], cookie, nick).await {
                Ok((c, user)) => return Ok((i, c, user)),
                Err(e) => last_error = format!("node{i}: {e}"),
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no node would take {nick}: {last_error}"));
        }
        // Every node refused: one is restarting. Polled again shortly.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A different node than `from`, picked at random.
fn other_node(rng: &mut Rng, from: usize, n: usize) -> usize {
    (from + 1 + rng.below(n as u64 - 1) as usize) % n
}

// --- Receivers ---

/// Reads rooms and checks, frame by frame, that each room goes on exactly where it was.
struct Receiver {
    name: String,
    ports: Arc<Vec<u16>>,
    node: usize,
    rooms: Vec<String>,
    /// The last seq received per room.
    last: Heads,
    /// Every seq received per room, in arrival order, over all connections.
    got: BTreeMap<String, Vec<Seq>>,
    problems: Vec<String>,
    arrivals: Vec<Instant>,
    connections: usize,
    /// Connections that ended without the receiver choosing it (the node died).
    lost: usize,
    /// Leaves for another node after between this many messages (random), if set.
    hop: Option<(u64, u64)>,
    rng: Rng,
}

impl Receiver {
    fn new(
        name: String,
        ports: Arc<Vec<u16>>,
        node: usize,
        rooms: &[String],
        hop: Option<(u64, u64)>,
        seed: u64,
    ) -> Self {
        Receiver {
            name,
            ports,
            node,
            rooms: rooms.to_vec(),
            last: rooms.iter().map(|r| (r.clone(), 0)).collect(),
            got: rooms.iter().map(|r| (r.clone(), Vec::new())).collect(),
            problems: Vec::new(),
            arrivals: Vec::new(),
            connections: 0,
            lost: 0,
            hop,
            rng: Rng::seeded(seed),
        }
    }

    fn done(&self, target: &Option<Heads>) -> bool {
        target
            .as_ref()
            .is_some_and(|t| self.rooms.iter().all(|r| self.last[r] >= t.get(r).copied().unwrap_or(0)))
    }

    fn problem(&mut self, p: String) {
        self.problems.push(format!("{}: {p}", self.name));
    }

    async fn run(mut self, target: watch::Receiver<Option<Heads>>, deadline: Instant) -> Self {
        let n = self.ports.len();
        // (where to start looking, which node not to take)
        let mut next: (usize, Option<usize>) = (self.node, None);
        loop {
            let nick = format!("{}-{}", self.name, self.connections);
            let ports = self.ports.clone();
            let (node, mut c, _) = match connect_any(&ports, next.0, next.1, None, &nick, deadline).await {
                Ok(found) => found,
                Err(e) => {
                    self.problem(e);
                    return self;
                }
            };
            self.node = node;
            self.connections += 1;
            let mut ok = true;
            for room in &self.rooms {
                ok &= send_frame(&mut c, &json!({"type": "join", "room": room, "since": self.last[room]}))
                    .await;
            }
            if !ok {
                self.lost += 1;
                next = ((node + 1) % n, Some(node));
                continue;
            }
            let mut joined: HashSet<String> = HashSet::new();
            let mut budget = self.hop.map(|(lo, hi)| lo + self.rng.below(hi - lo + 1));
            loop {
                if joined.len() == self.rooms.len() && self.done(&target.borrow()) {
                    return self;
                }
                if Instant::now() > deadline {
                    let (last, target) = (self.last.clone(), target.borrow().clone());
                    self.problem(format!("gave up at the deadline at {last:?}, target {target:?}"));
                    return self;
                }
                match next_frame(&mut c, TICK).await {
                    Next::Quiet => continue,
                    Next::Closed(_) => {
                        self.lost += 1;
                        next = ((node + 1) % n, Some(node));
                        break;
                    }
                    Next::Frame(msg) => {
                        if self.on_frame(&mut joined, node, msg)
                            && let Some(b) = budget.as_mut()
                        {
                            *b = b.saturating_sub(1);
                            if *b == 0 {
                                // Resume on a different node, mid-stream (maybe mid-replay).
                                next = (other_node(&mut self.rng, node, n), Some(node));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// True for a room event (a message).
    fn on_frame(&mut self, joined: &mut HashSet<String>, node: usize, msg: ServerMsg) -> bool {
        match msg {
            ServerMsg::Joined { room, head, truncated, .. } => {
                let since = self.last.get(&room).copied().unwrap_or(0);
                if head < since {
                    self.problem(format!(
                        "joined {room} on node{node} with since {since}: head {head} is behind what it already received"
                    ));
                }
                if truncated {
                    self.problem(format!("joined {room} on node{node} truncated"));
                }
                joined.insert(room);
                false
            }
            ServerMsg::Message(m) => {
                if !joined.contains(&m.room) {
                    self.problem(format!("{} #{} on node{node} before its joined", m.room, m.seq));
                }
                let Some(&last) = self.last.get(&m.room) else {
                    self.problem(format!("a message of a room not joined: {m:?}"));
                    return true;
                };
                if m.seq <= last {
                    self.problem(format!(
                        "{} #{} again on node{node} (connection {}), after #{last}",
                        m.room, m.seq, self.connections
                    ));
                } else if m.seq > last + 1 {
                    self.problem(format!("{} #{} on node{node} after #{last}: a gap", m.room, m.seq));
                }
                self.got.get_mut(&m.room).unwrap().push(m.seq);
                self.last.insert(m.room.clone(), last.max(m.seq));
                self.arrivals.push(Instant::now());
                true
            }
            ServerMsg::Presence { .. } | ServerMsg::Typing { .. } => false,
            other => {
                self.problem(format!("unexpected frame on node{node}: {other:?}"));
                false
            }
        }
    }
}

// --- Senders ---

/// What a frame means to a sender.
enum Answer {
    Nothing,
    Acked,
    /// Send this client_id again (refused by `internal`).
    Resend(String),
    /// Refused for good (a problem is recorded): stop.
    GiveUp,
}

/// Sends `quota` messages over its rooms, at most `window` unanswered at once; resumes on
/// another node when its node goes (or when `hop` says), re-sending every unacknowledged
/// message with its client_id.
struct Sender {
    name: String,
    account: Account,
    ports: Arc<Vec<u16>>,
    node: usize,
    rooms: Vec<String>,
    quota: usize,
    window: usize,
    made: usize,
    /// Unacknowledged: client_id → (room, text).
    outbox: BTreeMap<String, (String, String)>,
    /// Sent on this connection and not answered yet.
    waiting: HashSet<String>,
    acked: BTreeSet<String>,
    /// client_ids refused with `internal` (then sent again).
    internal: Vec<String>,
    problems: Vec<String>,
    connections: usize,
    /// Connections that ended without the sender choosing it.
    lost: usize,
    /// Sends repeated with a client_id already sent once.
    resent: usize,
    hop: Option<(u64, u64)>,
    rng: Rng,
    progress: Progress,
    last: Heads,
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        account: Account,
        ports: Arc<Vec<u16>>,
        node: usize,
        rooms: &[String],
        quota: usize,
        window: usize,
        hop: Option<(u64, u64)>,
        progress: Progress,
        seed: u64,
    ) -> Self {
        Sender {
            name,
            account,
            ports,
            node,
            rooms: rooms.to_vec(),
            quota,
            window,
            made: 0,
            outbox: BTreeMap::new(),
            waiting: HashSet::new(),
            acked: BTreeSet::new(),
            internal: Vec::new(),
            problems: Vec::new(),
            connections: 0,
            lost: 0,
            resent: 0,
            hop,
            rng: Rng::seeded(seed),
            progress,
            last: rooms.iter().map(|r| (r.clone(), 0)).collect(),
        }
    }

    fn finished(&self) -> bool {
        self.made == self.quota && self.outbox.is_empty()
    }

    fn problem(&mut self, p: String) {
        self.problems.push(format!("{}: {p}", self.name));
    }

    async fn send_one(&mut self, c: &mut Client, id: &str) -> bool {
        let (room, text) = self.outbox[id].clone();
        self.waiting.insert(id.to_owned());
        send_frame(c, &json!({"type": "send", "room": room, "text": text, "client_id": id})).await
    }

    async fn run(mut self, deadline: Instant) -> Self {
        let n = self.ports.len();
        let mut next: (usize, Option<usize>) = (self.node, None);
        loop {
            if self.finished() {
                return self;
            }
            let (ports, cookie) = (self.ports.clone(), self.account.cookie.clone());
            let (node, mut c, user) =
                match connect_any(&ports, next.0, next.1, Some(&cookie), "", deadline).await {
                    Ok(found) => found,
                    Err(e) => {
                        self.problem(e);
                        return self;
                    }
                };
            if user.id != self.account.id {
                self.problem(format!("signed in as {user:?}, not {}", self.account.id));
                return self;
            }
            self.node = node;
            self.connections += 1;
            self.waiting.clear();
            let mut ok = true;
            for room in &self.rooms {
                ok &= send_frame(&mut c, &json!({"type": "join", "room": room, "since": self.last[room]}))
                    .await;
            }
            // Pipelined behind the joins: everything not acknowledged, same client_ids.
            let pending: Vec<String> = self.outbox.keys().cloned().collect();
            for id in &pending {
                self.resent += 1;
                ok &= self.send_one(&mut c, id).await;
            }
            let mut budget = self.hop.map(|(lo, hi)| lo + self.rng.below(hi - lo + 1));
            let mut heard = Instant::now();
            while ok {
                while self.waiting.len() < self.window && self.made < self.quota {
                    let i = self.made;
                    self.made += 1;
                    let id = format!("{}-{i}", self.name);
                    let room = self.rooms[self.rng.below(self.rooms.len() as u64) as usize].clone();
                    self.outbox.insert(id.clone(), (room, format!("{} says {i}", self.name)));
                    ok &= self.send_one(&mut c, &id).await;
                }
                if self.finished() {
                    return self;
                }
                if Instant::now() > deadline {
                    let waiting = self.waiting.clone();
                    self.problem(format!("gave up at the deadline, waiting for {waiting:?}"));
                    return self;
                }
                match next_frame(&mut c, TICK).await {
                    Next::Quiet => {
                        if !self.waiting.is_empty() && heard.elapsed() > NO_ANSWER {
                            let mut waiting: Vec<String> = self.waiting.iter().cloned().collect();
                            waiting.sort();
                            self.problem(format!("no answer on node{node} in {NO_ANSWER:?} to {waiting:?}"));
                            return self;
                        }
                    }
                    Next::Closed(_) => {
                        self.lost += 1;
                        next = ((node + 1) % n, Some(node));
                        break;
                    }
                    Next::Frame(msg) => {
                        heard = Instant::now();
                        match self.on_frame(node, msg) {
                            Answer::Nothing => {}
                            Answer::GiveUp => return self,
                            Answer::Resend(id) => {
                                self.resent += 1;
                                ok &= self.send_one(&mut c, &id).await;
                            }
                            Answer::Acked => {
                                if let Some(b) = budget.as_mut() {
                                    *b = b.saturating_sub(1);
                                    if *b == 0 {
                                        // Leave with sends outstanding; resume elsewhere.
                                        next = (other_node(&mut self.rng, node, n), Some(node));
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if !ok {
                self.lost += 1;
                next = ((node + 1) % n, Some(node));
            }
        }
    }

    fn on_frame(&mut self, node: usize, msg: ServerMsg) -> Answer {
        match msg {
            ServerMsg::Message(m) => {
                if let Some(last) = self.last.get_mut(&m.room) {
                    *last = (*last).max(m.seq);
                }
                if m.user == self.account.id {
                    self.waiting.remove(&m.client_id);
                    if self.outbox.remove(&m.client_id).is_some() {
                        self.acked.insert(m.client_id);
                        self.progress.ack();
                        return Answer::Acked;
                    }
                }
                Answer::Nothing
            }
            ServerMsg::Error { code, client_id: Some(id), .. } if self.outbox.contains_key(&id) => {
                self.waiting.remove(&id);
                match code {
                    ErrorCode::Internal => {
                        self.internal.push(id.clone());
                        Answer::Resend(id)
                    }
                    ErrorCode::RateLimited => {
                        self.problem(format!("{id} rate limited on node{node} (the limits are raised)"));
                        Answer::Resend(id)
                    }
                    other => {
                        self.problem(format!("{id} refused on node{node}: {}", other.as_str()));
                        Answer::GiveUp
                    }
                }
            }
            ServerMsg::Joined { room, truncated: true, .. } => {
                self.problem(format!("joined {room} on node{node} truncated"));
                Answer::Nothing
            }
            ServerMsg::Joined { .. } | ServerMsg::Presence { .. } | ServerMsg::Typing { .. } => {
                Answer::Nothing
            }
            other => {
                self.problem(format!("unexpected frame on node{node}: {other:?}"));
                Answer::Nothing
            }
        }
    }
}

// --- Checks ---

/// Every room as stored, read over HTTP from every node up: each node serves the same
/// history, seqs 1..N with no gap, every acknowledged client_id exactly once and nothing
/// else. Returns the heads.
async fn check_stored(
    cluster: &Cluster,
    rooms: &[String],
    acked: &BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Heads {
    let mut heads = Heads::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let up: Vec<usize> = (0..cluster.len()).filter(|&i| cluster.is_up(i)).collect();
    for room in rooms {
        let first = stored(cluster.port(up[0]), room).await;
        let seqs: Vec<Seq> = first.iter().map(|m| m.seq).collect();
        let dense: Vec<Seq> = (1..=seqs.len() as Seq).collect();
        if seqs != dense {
            problems.push(format!("stored {room}: seqs are not 1..{}: {seqs:?}", seqs.len()));
        }
        for m in &first {
            *ids.entry(m.client_id.clone()).or_default() += 1;
        }
        for &i in &up[1..] {
            let other = stored(cluster.port(i), room).await;
            let a: Vec<(Seq, &str)> = first.iter().map(|m| (m.seq, m.client_id.as_str())).collect();
            let b: Vec<(Seq, &str)> = other.iter().map(|m| (m.seq, m.client_id.as_str())).collect();
            if a != b {
                problems.push(format!("node{i} serves another history of {room} than node{}", up[0]));
            }
        }
        heads.insert(room.clone(), seqs.last().copied().unwrap_or(0));
    }
    for (id, count) in &ids {
        if *count > 1 {
            problems.push(format!("client_id {id} is stored {count} times"));
        }
        if !acked.contains(id) {
            problems.push(format!("client_id {id} is stored but was never acknowledged"));
        }
    }
    for id in acked {
        if !ids.contains_key(id) {
            problems.push(format!("client_id {id} was acknowledged but is not stored"));
        }
    }
    let total: Seq = heads.values().sum();
    if total as usize != acked.len() {
        problems.push(format!("{total} events stored, {} distinct client_ids acknowledged", acked.len()));
    }
    heads
}

/// Each receiver holds, per room, exactly 1..=head in order (and saw nothing odd).
fn check_receivers(receivers: &[Receiver], heads: &Heads, problems: &mut Vec<String>) {
    for r in receivers {
        problems.extend(r.problems.iter().cloned());
        for (room, &head) in heads {
            let expected: Vec<Seq> = (1..=head).collect();
            let got = &r.got[room];
            if *got != expected {
                let dups = got.len() as i64 - head as i64;
                problems.push(format!(
                    "{}: {room} received {} events for a head of {head} ({dups:+}); first differences: {:?}",
                    r.name,
                    got.len(),
                    first_differences(got, head)
                ));
            }
        }
    }
}

/// Where a received sequence departs from 1..=head (a few places, for the report).
fn first_differences(got: &[Seq], head: Seq) -> Vec<String> {
    let mut out = Vec::new();
    let mut expect = 1;
    for (i, &s) in got.iter().enumerate() {
        if s != expect {
            out.push(format!("at {i}: {s} instead of {expect}"));
            if out.len() >= 5 {
                break;
            }
        }
        expect = s + 1;
    }
    if expect <= head && out.len() < 5 {
        out.push(format!("ends at {}", expect - 1));
    }
    out
}

fn fail_on(problems: &[String], what: &str) {
    if problems.is_empty() {
        return;
    }
    let shown: Vec<&String> = problems.iter().take(40).collect();
    panic!(
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
    );
}

/// The longest wait between two deliveries to any receiver after `from` (and the wait
/// from `from` to the first delivery), in ms, with the receiver it was seen by.
fn longest_stall(receivers: &[Receiver], from: Instant, until: Instant) -> (u128, String) {
    longest_stall_of(&receivers.iter().collect::<Vec<_>>(), from, until)
}

fn longest_stall_of(receivers: &[&Receiver], from: Instant, until: Instant) -> (u128, String) {
    let mut worst = (0, String::new());
    for r in receivers {
        let mut prev = from;
        for &t in r.arrivals.iter().filter(|t| **t >= from && **t <= until) {
            let gap = t.duration_since(prev).as_millis();
            if gap > worst.0 {
                worst = (gap, r.name.clone());
            }
            prev = t;
        }
    }
    worst
}

/// A counter of a node's `/metrics` (None when the node does not answer).
async fn metric(port: u16, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("confab_{name} ")).and_then(|v| v.trim().parse().ok()))
}

async fn bus_report(cluster: &Cluster) -> String {
    let mut out = Vec::new();
    for i in (0..cluster.len()).filter(|&i| cluster.is_up(i)) {
        let p = cluster.port(i);
        let mut parts = Vec::new();
        for m in [
            "bus_reconnects_total",
            "bus_publish_failures_total",
            "bus_duplicates_total",
            "gap_fills_total",
            "head_repairs_total",
        ] {
            parts.push(format!("{m}={}", metric(p, m).await.map_or("?".into(), |v| v.to_string())));
        }
        out.push(format!("node{i}: {}", parts.join(" ")));
    }
    out.join("; ")
}

// --- Set-up ---

/// Redis first, then a database, then `n` nodes: None (the reason printed) when either
/// service is missing.
async fn cluster_of(n: usize) -> Option<Cluster> {
    let redis = cluster::redis_or_skip().await?;
    let db = TestDb::create().await?;
    Some(Cluster::start(db, &redis, n, &[]).await)
}

fn room_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

struct Crowd {
    senders: Vec<JoinHandle<Sender>>,
    receivers: Vec<JoinHandle<Receiver>>,
    target: watch::Sender<Option<Heads>>,
    progress: Progress,
}

/// Who sends and who reads.
struct Plan<'a> {
    rooms: &'a [String],
    senders: usize,
    /// The nodes senders start on, in turn.
    sender_nodes: Vec<usize>,
    /// Messages per sender.
    quota: usize,
    /// Sends a sender leaves unanswered at most.
    window: usize,
    /// A sender moves to another node after between this many acknowledgements.
    sender_hop: Option<(u64, u64)>,
    /// Receivers start on node `i % n`.
    receivers: usize,
    /// A receiver moves to another node after between this many messages.
    receiver_hop: Option<(u64, u64)>,
}

/// Signs up the plan's sender accounts and starts them beside its receivers (guests).
async fn crowd(cluster: &Cluster, plan: Plan<'_>, deadline: Instant) -> Crowd {
    let ports = Arc::new(cluster.ports());
    let n = ports.len();
    let names: Vec<String> = (0..plan.senders).map(|i| format!("sender{i}")).collect();
    let accounts = signup_all(&ports, &names).await;
    let progress = Progress::new();
    let (target, target_rx) = watch::channel(None);
    let receivers = (0..plan.receivers)
        .map(|i| {
            let r = Receiver::new(
                format!("rcv{i}"),
                ports.clone(),
                i % n,
                plan.rooms,
                plan.receiver_hop,
                i as u64,
            );
            tokio::spawn(r.run(target_rx.clone(), deadline))
        })
        .collect();
    let senders = accounts
        .into_iter()
        .enumerate()
        .map(|(i, account)| {
            let s = Sender::new(
                format!("s{i}"),
                account,
                ports.clone(),
                plan.sender_nodes[i % plan.sender_nodes.len()],
                plan.rooms,
                plan.quota,
                plan.window,
                plan.sender_hop,
                progress.clone(),
                1000 + i as u64,
            );
            tokio::spawn(s.run(deadline))
        })
        .collect();
    Crowd { senders, receivers, target, progress }
}

impl Crowd {
    /// Waits for every sender; returns them.
    async fn senders_done(&mut self, limit: Duration) -> Vec<Sender> {
        let mut out = Vec::new();
        for t in self.senders.drain(..) {
            out.push(
                tokio::time::timeout(limit, t).await.expect("senders finish in time").expect("a sender task"),
            );
        }
        out
    }

    /// Tells the receivers the heads to reach, and waits for them.
    async fn receivers_done(&mut self, heads: &Heads, limit: Duration) -> Vec<Receiver> {
        self.target.send_replace(Some(heads.clone()));
        let mut out = Vec::new();
        for t in self.receivers.drain(..) {
            out.push(
                tokio::time::timeout(limit, t)
                    .await
                    .expect("receivers finish in time")
                    .expect("a receiver task"),
            );
        }
        out
    }
}

/// The senders' acknowledged client_ids, and their problems into `problems`.
fn gather_senders(senders: &[Sender], problems: &mut Vec<String>) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    for s in senders {
        problems.extend(s.problems.iter().cloned());
        if !s.outbox.is_empty() {
            problems.push(format!(
                "{}: never acknowledged: {:?}",
                s.name,
                s.outbox.keys().collect::<Vec<_>>()
            ));
        }
        for id in &s.acked {
            assert!(acked.insert(id.clone()), "client_id {id} acknowledged to two senders");
        }
    }
    acked
}

fn summary(senders: &[Sender], receivers: &[Receiver]) -> String {
    let resumes: usize = receivers.iter().map(|r| r.connections.saturating_sub(1)).sum();
    let lost: usize = receivers.iter().map(|r| r.lost).sum();
    let s_resumes: usize = senders.iter().map(|s| s.connections.saturating_sub(1)).sum();
    let s_lost: usize = senders.iter().map(|s| s.lost).sum();
    let resent: usize = senders.iter().map(|s| s.resent).sum();
    let internal: usize = senders.iter().map(|s| s.internal.len()).sum();
    format!(
        "receivers resumed {resumes} times ({lost} after losing their node); senders resumed {s_resumes} times \
         ({s_lost} after losing their node), re-sent {resent} client_ids, {internal} `internal` refusals"
    )
}

// --- 1. Resumes on other nodes ---

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_every_event_once_in_order_across_resumes() {
    let Some(cluster) = cluster_of(3).await else { return };
    let started = Instant::now();
    let rooms = room_names(&["alpha", "beta"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    // 6 senders (2 per node) × 50 = 300 messages; 9 receivers, each resuming on another
    // node every 10–40 messages; senders also move now and then with sends outstanding.
    let plan = Plan {
        rooms: &rooms,
        senders: 6,
        sender_nodes: vec![0, 1, 2],
        quota: 50,
        window: 3,
        sender_hop: Some((10, 30)),
        receivers: 9,
        receiver_hop: Some((10, 40)),
    };
    let mut crowd = crowd(&cluster, plan, deadline).await;
    let senders = crowd.senders_done(Duration::from_secs(90)).await;
    let mut problems = Vec::new();
    let acked = gather_senders(&senders, &mut problems);
    let heads = check_stored(&cluster, &rooms, &acked, &mut problems).await;
    let receivers = crowd.receivers_done(&heads, Duration::from_secs(60)).await;
    check_receivers(&receivers, &heads, &mut problems);
    eprintln!("heads {heads:?}; {}; {}", summary(&senders, &receivers), bus_report(&cluster).await);
    cluster.shutdown().await;
    eprintln!("three_nodes_deliver_every_event_once_in_order_across_resumes: {:?}", started.elapsed());
    fail_on(&problems, "delivery across resumes");
}

// --- 2. SIGKILL mid-burst ---

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_burst_loses_no_acknowledged_event() {
    let Some(mut cluster) = cluster_of(3).await else { return };
    let started = Instant::now();
    let rooms = room_names(&["alpha", "beta"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (senders, quota) = (6, 100);
    let total = senders * quota;
    let plan = Plan {
        rooms: &rooms,
        senders,
        sender_nodes: vec![0, 1, 2],
        quota,
        window: 4,
        sender_hop: None,
        receivers: 6,
        receiver_hop: None,
    };
    let mut crowd = crowd(&cluster, plan, deadline).await;
    let progress = crowd.progress.clone();
    for (round, victim) in [0usize, 1, 2].into_iter().enumerate() {
        progress.reach(total * (round + 1) / 6, Duration::from_secs(60)).await;
        let at = progress.now();
        cluster.kill(victim).await;
        eprintln!("round {round}: node{victim} SIGKILLed at {at} acknowledged");
        // The others carry on without it (its people resumed there) before it comes back.
        assert!(at < total, "round {round}: the burst was over before the kill");
        progress.reach((at + 20).min(total), Duration::from_secs(30)).await;
        cluster.restart(victim).await;
        eprintln!("round {round}: node{victim} restarted at {} acknowledged", progress.now());
    }
    let senders = crowd.senders_done(Duration::from_secs(90)).await;
    let mut problems = Vec::new();
    let acked = gather_senders(&senders, &mut problems);
    let heads = check_stored(&cluster, &rooms, &acked, &mut problems).await;
    let receivers = crowd.receivers_done(&heads, Duration::from_secs(60)).await;
    check_receivers(&receivers, &heads, &mut problems);
    for r in &receivers {
        if r.lost == 0 {
            problems.push(format!("{} never lost its node: the kills missed it", r.name));
        }
    }
    eprintln!("heads {heads:?}; {}; {}", summary(&senders, &receivers), bus_report(&cluster).await);
    cluster.shutdown().await;
    eprintln!("a_node_killed_mid_burst_loses_no_acknowledged_event: {:?}", started.elapsed());
    fail_on(&problems, "SIGKILL mid-burst");
}

// --- 3. Committed, never published ---

/// The next message frame within `limit` (presence, typing and `joined` skipped).
async fn next_message(c: &mut Client, limit: Duration) -> Result<confab::protocol::ChatMessage, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(c, left).await {
            Next::Frame(ServerMsg::Message(m)) => return Ok(m),
            Next::Frame(ServerMsg::Presence { .. } | ServerMsg::Typing { .. } | ServerMsg::Joined { .. }) => {
                continue;
            }
            Next::Frame(other) => return Err(format!("unexpected {other:?}")),
            Next::Quiet => return Err(format!("no message within {limit:?}")),
            Next::Closed(why) => return Err(format!("closed: {why}")),
        }
    }
}

/// Writes a message straight into the database as the store does, in one transaction,
/// and publishes nothing: returns its seq.
async fn write_behind_the_nodes_back(db: &tokio_postgres::Client, room: &str, client_id: &str) -> Seq {
    db.batch_execute("BEGIN").await.unwrap();
    let head: i64 = db
        .query_one("UPDATE rooms SET head = head + 1 WHERE name = $1 RETURNING head", &[&room])
        .await
        .unwrap()
        .get(0);
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let text = format!("written by SQL as #{head}");
    db.execute(
        "INSERT INTO messages (room, seq, nick, text, ts, client_id, user_id, guest, reply_to, mentions)
         VALUES ($1, $2, 'ghost', $3, $4, $5, '', false, NULL, '')",
        &[&room, &head, &text, &ts, &client_id],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO events (room, seq, kind, target, user_id, client_id, ts)
         VALUES ($1, $2, 'message', $2, '', $3, $4)",
        &[&room, &head, &client_id, &ts],
    )
    .await
    .unwrap();
    db.batch_execute("COMMIT").await.unwrap();
    head as Seq
}

/// Each reader's next message is `seq` (within `limit`): node i's reader is `readers[i]`.
async fn expect_everywhere(readers: &mut [Client], seq: Seq, limit: Duration) {
    for (i, c) in readers.iter_mut().enumerate() {
        let t = Instant::now();
        match next_message(c, limit).await {
            Ok(m) if m.seq == seq => eprintln!("reader{i} (node{i}) got #{seq} after {:?}", t.elapsed()),
            Ok(m) => panic!("reader{i} (node{i}) expected #{seq}, got #{} ({:?})", m.seq, m.text),
            Err(e) => panic!("reader{i} (node{i}) expected #{seq}: {e}"),
        }
    }
}

/// Backends of `db` (not in `skip`) waiting on a lock: polled until there is one or
/// `until` passes.
async fn blocked_on_lock(
    c: &tokio_postgres::Client,
    db: &str,
    skip: &HashSet<i32>,
    until: Instant,
) -> Vec<i32> {
    loop {
        fresh_activity(c).await;
        let rows = c
            .query(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await
            .unwrap();
        let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).filter(|p| !skip.contains(p)).collect();
        if !pids.is_empty() || Instant::now() > until {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `pg_stat_activity` is read once per transaction and then kept: the locker, inside its
/// transaction, must drop that snapshot to see sessions come and go.
async fn fresh_activity(c: &tokio_postgres::Client) {
    c.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
}

/// The sessions of database `db` but the caller's: (pid, state, wait event, query).
async fn sessions_of(c: &tokio_postgres::Client, db: &str) -> Vec<String> {
    fresh_activity(c).await;
    let rows = c
        .query(
            "SELECT pid, coalesce(state, ''), coalesce(wait_event_type, '') || ':' || coalesce(wait_event, ''),
                    left(query, 80)
             FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3)
            )
        })
        .collect()
}

/// Batches the nodes' committers abandoned (after 3 failed attempts), over all nodes.
async fn store_failures(ports: &[u16]) -> u64 {
    let mut total = 0;
    for &p in ports {
        total += metric(p, "store_failures_total").await.unwrap_or(0);
    }
    total
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL connects");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_committed_but_never_published_arrives_by_the_head_check() {
    let Some(cluster) = cluster_of(2).await else { return };
    let started = Instant::now();
    let room = "gamma";
    let account = cluster::signup(cluster.port(0), "writer").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut readers = Vec::new();
    for i in 0..2 {
        let (_, mut c, _) =
            connect_any(&cluster.ports(), i, None, None, &format!("reader{i}"), deadline).await.unwrap();
        assert!(send_frame(&mut c, &json!({"type": "join", "room": room, "since": 0})).await);
        match next_frame(&mut c, Duration::from_secs(5)).await {
            Next::Frame(ServerMsg::Joined { head: 0, .. }) => {}
            other => panic!("reader{i}: expected joined at 0, got {other:?}"),
        }
        readers.push(c);
    }
    let mut writers = Vec::new();
    for i in 0..2 {
        let (mut c, _) = hello(cluster.port(i), Some(&account.cookie), "").await.unwrap();
        assert!(send_frame(&mut c, &json!({"type": "join", "room": room, "since": 0})).await);
        writers.push(c);
    }
    let say = |n: usize| json!({"type": "send", "room": room, "text": format!("said #{n}"), "client_id": format!("w-{n}")});

    // 1: an ordinary message, through node 0.
    assert!(send_frame(&mut writers[0], &say(1)).await);
    expect_everywhere(&mut readers, 1, Duration::from_secs(5)).await;

    // 2: committed behind the nodes' back. Only the head check can find it.
    let db = pg_client(cluster.db.url()).await;
    assert_eq!(write_behind_the_nodes_back(&db, room, "sql-2").await, 2);
    expect_everywhere(&mut readers, 2, Duration::from_secs(5)).await;

    // 3 behind their back, then 4 through node 1 at once: 4 is published, and whoever
    // has not seen 3 must fill it from the store before 4 goes out.
    assert_eq!(write_behind_the_nodes_back(&db, room, "sql-3").await, 3);
    assert!(send_frame(&mut writers[1], &say(4)).await);
    expect_everywhere(&mut readers, 3, Duration::from_secs(5)).await;
    expect_everywhere(&mut readers, 4, Duration::from_secs(5)).await;

    // 5 through node 0: what comes next is 5, so nothing before it came twice.
    assert!(send_frame(&mut writers[0], &say(5)).await);
    expect_everywhere(&mut readers, 5, Duration::from_secs(5)).await;

    let history = stored(cluster.port(1), room).await;
    let got: Vec<(Seq, &str)> = history.iter().map(|m| (m.seq, m.client_id.as_str())).collect();
    assert_eq!(got, vec![(1, "w-1"), (2, "sql-2"), (3, "sql-3"), (4, "w-4"), (5, "w-5")]);
    eprintln!("{}", bus_report(&cluster).await);
    drop((readers, writers, db));
    cluster.shutdown().await;
    eprintln!("an_event_committed_but_never_published_arrives_by_the_head_check: {:?}", started.elapsed());
}

// --- 3b. Two consequences of "deliver through the sequencer" for resumes and retries ---

/// Sends `frame` and reads until a message with `client_id` arrives (Err after `limit`).
async fn answer_to(
    c: &mut Client,
    client_id: &str,
    limit: Duration,
) -> Result<confab::protocol::ChatMessage, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(c, left).await {
            Next::Frame(ServerMsg::Message(m)) if m.client_id == client_id => return Ok(m),
            Next::Frame(ServerMsg::Error { code, message, client_id: Some(id), .. }) if id == client_id => {
                return Err(format!("error {}: {message}", code.as_str()));
            }
            Next::Frame(_) => {}
            Next::Quiet => return Err(format!("no answer within {limit:?}")),
            Next::Closed(why) => return Err(format!("closed: {why}")),
        }
    }
}

/// An account's message stored through node 0, sent again with its client_id through
/// node 1 (another node's memory, so the store finds the original): it is not stored
/// twice, and the retry is answered with the original, as a retry through node 0 is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_through_another_node_is_answered_with_the_original() {
    let Some(cluster) = cluster_of(2).await else { return };
    let started = Instant::now();
    let room = "epsilon";
    let account = cluster::signup(cluster.port(0), "retrier").await;
    let send = json!({"type": "send", "room": room, "text": "once", "client_id": "c-1"});
    let (mut first, _) = hello(cluster.port(0), Some(&account.cookie), "").await.unwrap();
    assert!(send_frame(&mut first, &json!({"type": "join", "room": room, "since": 0})).await);
    assert!(send_frame(&mut first, &send).await);
    let original =
        answer_to(&mut first, "c-1", Duration::from_secs(5)).await.expect("the send is acknowledged");
    assert_eq!(original.seq, 1);

    // The same retry through node 0 is answered with the original (the session remembers).
    assert!(send_frame(&mut first, &send).await);
    let again = answer_to(&mut first, "c-1", Duration::from_secs(5)).await.expect("node0 answers its retry");
    assert_eq!(again.seq, 1);

    // Through node 1: the client holds the room up to its head (since 1, nothing to
    // replay), its echo lost, and sends again.
    let (mut second, _) = hello(cluster.port(1), Some(&account.cookie), "").await.unwrap();
    assert!(send_frame(&mut second, &json!({"type": "join", "room": room, "since": 1})).await);
    assert!(send_frame(&mut second, &send).await);
    let answered = answer_to(&mut second, "c-1", Duration::from_secs(5)).await;
    let history = stored(cluster.port(1), room).await;
    let ids: Vec<&str> = history.iter().map(|m| m.client_id.as_str()).collect();
    eprintln!("{}", bus_report(&cluster).await);
    drop((first, second));
    cluster.shutdown().await;
    eprintln!("a_retry_through_another_node_is_answered_with_the_original: {:?}", started.elapsed());
    assert_eq!(ids, ["c-1"], "the retry stored nothing");
    match answered {
        Ok(m) => assert_eq!(m.seq, 1, "the answer is the original"),
        Err(e) => panic!("the retry of c-1 through node1 (stored as #1 through node0): {e}"),
    }
}

/// A receiver that saw an event on one node resumes on the other before that one has it
/// (the event was committed without being published: each node's head check, once a
/// second on a timer of its own, brings it). The second node must not answer a head
/// behind what the receiver holds (which says "this server lost history you saw"), nor
/// send the event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_on_a_node_behind_the_store_sends_nothing_twice() {
    let Some(mut cluster) = cluster_of(2).await else { return };
    let started = Instant::now();
    // Restarted so the two nodes' head-check timers are out of step (they start together).
    cluster.kill(1).await;
    cluster.restart(1).await;
    let room = "zeta";
    let account = cluster::signup(cluster.port(0), "talker").await;
    let (mut talker, _) = hello(cluster.port(0), Some(&account.cookie), "").await.unwrap();
    assert!(send_frame(&mut talker, &json!({"type": "join", "room": room, "since": 0})).await);
    assert!(
        send_frame(&mut talker, &json!({"type": "send", "room": room, "text": "hello", "client_id": "t-1"}))
            .await
    );
    answer_to(&mut talker, "t-1", Duration::from_secs(5)).await.expect("the first message is acknowledged");
    // A reader on each node.
    let mut readers = Vec::new();
    for i in 0..2 {
        let (mut c, _) = hello(cluster.port(i), None, &format!("reader{i}")).await.unwrap();
        assert!(send_frame(&mut c, &json!({"type": "join", "room": room, "since": 0})).await);
        assert_eq!(next_message(&mut c, Duration::from_secs(5)).await.expect("the replay").seq, 1);
        readers.push(c);
    }
    let db = pg_client(cluster.db.url()).await;
    let mut problems = Vec::new();
    let mut lagged = 0;
    let rounds = 5;
    for round in 0..rounds {
        let seq = write_behind_the_nodes_back(&db, room, &format!("sql-{round}")).await;
        // Whichever node's head check comes first...
        let (first, got) = {
            let (a, b) = readers.split_at_mut(1);
            tokio::select! {
                m = next_message(&mut a[0], Duration::from_secs(5)) => (0, m),
                m = next_message(&mut b[0], Duration::from_secs(5)) => (1, m),
            }
        };
        assert_eq!(got.expect("a head check delivers").seq, seq);
        // ...its reader resumes at once on the other, with since = what it just got.
        let other = 1 - first;
        let (mut resumed, _) = hello(cluster.port(other), None, &format!("resumed-{round}")).await.unwrap();
        assert!(send_frame(&mut resumed, &json!({"type": "join", "room": room, "since": seq})).await);
        match next_frame(&mut resumed, Duration::from_secs(5)).await {
            Next::Frame(ServerMsg::Joined { head, .. }) if head < seq => {
                lagged += 1;
                problems.push(format!(
                    "round {round}: node{other} answered join {{since: {seq}}} with head {head} \
                     (the event reached node{first} first)"
                ));
            }
            Next::Frame(ServerMsg::Joined { .. }) => {}
            other => panic!("expected joined, got {other:?}"),
        }
        // The other reader shows when its node has the event; then the talker speaks.
        let caught_up = next_message(&mut readers[other], Duration::from_secs(5)).await;
        assert_eq!(caught_up.expect("the other node's head check").seq, seq);
        let id = format!("t-{}", seq + 1);
        let next = json!({"type": "send", "room": room, "text": "next", "client_id": id});
        assert!(send_frame(&mut talker, &next).await);
        match next_message(&mut resumed, Duration::from_secs(5)).await {
            Ok(m) if m.seq == seq + 1 => {}
            Ok(m) => problems.push(format!(
                "round {round}: after join {{since: {seq}}} node{other} sent #{} ({:?}) before #{}",
                m.seq,
                m.text,
                seq + 1
            )),
            Err(e) => problems.push(format!("round {round}: node{other}: {e}")),
        }
        for (i, c) in readers.iter_mut().enumerate() {
            let m = next_message(c, Duration::from_secs(5)).await.expect("everyone gets the next message");
            assert_eq!(m.seq, seq + 1, "reader{i}");
        }
    }
    eprintln!(
        "the second node was behind the store at {lagged} of {rounds} resumes; {}",
        bus_report(&cluster).await
    );
    drop((talker, readers, db));
    cluster.shutdown().await;
    eprintln!("a_resume_on_a_node_behind_the_store_sends_nothing_twice: {:?}", started.elapsed());
    fail_on(&problems, "a resume on a node behind the store");
}

// --- 4. Redis faults ---

/// Runs a crowd over `cluster` while `fault` strikes (given the progress to wait on and
/// the number of sends; it returns when each fault struck), then checks everything and
/// prints how long delivery stalled after each fault. Returns the problems found.
async fn through_a_fault<F, Fut>(cluster: &Cluster, label: &str, fault: F) -> Vec<String>
where
    F: FnOnce(Progress, usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Instant>>,
{
    let rooms = room_names(&["alpha", "beta"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (senders, quota) = (4, 200);
    // Senders on nodes 0 and 1 only: node 2's receivers hear everything from the bus (or,
    // while it is down, from the head check).
    let plan = Plan {
        rooms: &rooms,
        senders,
        sender_nodes: vec![0, 1],
        quota,
        window: 2,
        sender_hop: None,
        receivers: 6,
        receiver_hop: None,
    };
    let mut crowd = crowd(cluster, plan, deadline).await;
    let faults = fault(crowd.progress.clone(), senders * quota).await;
    let senders = crowd.senders_done(Duration::from_secs(90)).await;
    let sent_by = Instant::now();
    let mut problems = Vec::new();
    let acked = gather_senders(&senders, &mut problems);
    let heads = check_stored(cluster, &rooms, &acked, &mut problems).await;
    let receivers = crowd.receivers_done(&heads, Duration::from_secs(60)).await;
    check_receivers(&receivers, &heads, &mut problems);
    for (k, &at) in faults.iter().enumerate() {
        let until = faults.get(k + 1).copied().unwrap_or(sent_by);
        let (ms, who) = longest_stall(&receivers, at, until);
        eprintln!("{label}: after fault {k}, delivery stalled at most {ms} ms (longest wait seen by {who})");
        let node2: Vec<&Receiver> = receivers.iter().filter(|r| r.node == 2).collect();
        let (ms, who) = longest_stall_of(&node2, at, until);
        eprintln!("{label}: after fault {k}, on node2 (no sender there) at most {ms} ms ({who})");
    }
    eprintln!("{label}: heads {heads:?}; {}; {}", summary(&senders, &receivers), bus_report(cluster).await);
    problems.iter().map(|p| format!("{label}: {p}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_faults_stall_delivery_then_lose_and_double_nothing() {
    let Some(redis) = cluster::redis_or_skip().await else { return };
    let Some(db) = TestDb::create().await else { return };
    let started = Instant::now();

    // (a) Every subscription on the shared Redis cut, three times, while senders send.
    let cluster = Cluster::start(db, &redis, 3, &[]).await;
    let shared = redis.clone();
    let mut problems =
        through_a_fault(&cluster, "(a) CLIENT KILL TYPE pubsub", |progress, total| async move {
            let mut at = Vec::new();
            for k in 1..=3 {
                progress.reach(total * k / 4, Duration::from_secs(60)).await;
                let killed = cluster::redis_command(&shared, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
                eprintln!("(a) CLIENT KILL TYPE pubsub at {} acknowledged: {killed:?}", progress.now());
                at.push(Instant::now());
            }
            at
        })
        .await;
    cluster.shutdown().await;
    eprintln!("(a) done after {:?}", started.elapsed());

    // (b) A Redis of its own, SIGKILLed mid-burst and started again on the same port.
    let Some(db) = TestDb::create().await else { return };
    let mut private = RedisServer::start().await;
    let cluster = Cluster::start(db, &private.addr(), 3, &[]).await;
    let private_ref = &mut private;
    let node2_port = cluster.port(2);
    let more = through_a_fault(&cluster, "(b) Redis restart", |progress, total| async move {
        progress.reach(total / 4, Duration::from_secs(60)).await;
        private_ref.kill().await;
        let down = Instant::now();
        let at = progress.now();
        eprintln!("(b) redis-server SIGKILLed at {at} acknowledged");
        // Sends are acknowledged by their own node without Redis, and node2 (no sender)
        // gets them from its head check: Redis stays down until that happened.
        if !progress.reach_within(at + 40, Duration::from_secs(20)).await {
            eprintln!("(b) only {} acknowledged in 20 s with Redis down", progress.now() - at);
        }
        let repairs = Instant::now() + Duration::from_secs(10);
        let mut repaired = false;
        while Instant::now() < repairs {
            if metric(node2_port, "head_repairs_total").await.unwrap_or(0) > 0 {
                repaired = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "(b) node2's head check delivered with Redis down: {repaired} (after {:?})",
            down.elapsed()
        );
        private_ref.restart().await;
        eprintln!(
            "(b) redis-server back after {:?}, {} acknowledged meanwhile",
            down.elapsed(),
            progress.now() - at
        );
        vec![down]
    })
    .await;
    problems.extend(more);
    cluster.shutdown().await;
    private.kill().await;
    eprintln!("redis_faults_stall_delivery_then_lose_and_double_nothing: {:?}", started.elapsed());
    fail_on(&problems, "Redis faults");
}

// --- 5. Killed PostgreSQL connections ---

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_postgres_connection_fails_sends_cleanly_and_the_node_recovers() {
    let Some(cluster) = cluster_of(2).await else { return };
    let started = Instant::now();
    let rooms = room_names(&["delta"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    // A sender on each node, 8 sends outstanding each: the nodes' connections are busy
    // with commits most of the time, so some terminations land inside one.
    let (senders, quota) = (2, 150);
    let plan = Plan {
        rooms: &rooms,
        senders,
        sender_nodes: vec![0, 1],
        quota,
        window: 8,
        sender_hop: None,
        receivers: 2,
        receiver_hop: None,
    };
    let mut crowd = crowd(&cluster, plan, deadline).await;
    // The terminations run from a connection of the admin's own to the test database
    // (`pid <> pg_backend_pid()` spares it), in three kinds of round:
    // - idle: connections end as they happen to be (mostly between commits);
    // - inside: it first holds the room's row lock until a node's commit waits on it, so
    //   the termination lands inside that transaction (the committer's next attempt works);
    // - streak: it holds the lock and ends every attempt that waits on it until a batch is
    //   abandoned (its senders hear `internal`), then lets go.
    let locker = pg_client(cluster.db.url()).await;
    let name = cluster.db.name().to_owned();
    let ports = cluster.ports();
    let rounds = ["inside", "idle", "streak", "idle", "inside", "streak"];
    for (k, kind) in rounds.iter().enumerate() {
        crowd.progress.reach(senders * quota * (k + 1) / (rounds.len() + 2), Duration::from_secs(60)).await;
        let at = crowd.progress.now();
        let failures_before = store_failures(&ports).await;
        let (mut ended, mut inside) = (0, 0);
        if *kind != "idle" {
            locker
                .batch_execute("BEGIN; SELECT head FROM rooms WHERE name = 'delta' FOR UPDATE")
                .await
                .unwrap();
        }
        let mut done: HashSet<i32> = HashSet::new();
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if *kind != "idle" {
                // A node's commit (one not ended yet) waiting on the lock.
                let waiting = blocked_on_lock(&locker, &name, &done, until).await;
                if waiting.is_empty() {
                    panic!(
                        "{kind} round {k}: no node's commit waits on the row lock within 15 s; the database's \
                         sessions: {:#?}; batches abandoned: {}",
                        sessions_of(&locker, &name).await,
                        store_failures(&ports).await
                    );
                }
                inside += waiting.len();
                done.extend(waiting);
            }
            fresh_activity(&locker).await;
            let rows = locker
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .expect("pg_terminate_backend runs");
            ended += rows.iter().filter(|r| r.get::<_, bool>(0)).count();
            if *kind != "streak" || store_failures(&ports).await > failures_before {
                break;
            }
            assert!(Instant::now() < until, "streak round {k}: no batch abandoned within 15 s");
        }
        if *kind != "idle" {
            locker.batch_execute("ROLLBACK").await.unwrap();
        }
        eprintln!(
            "{kind} round {k} at {at} acknowledged: terminated {ended} backends of {name} ({inside} waiting inside a \
             transaction); batches abandoned so far: {}",
            store_failures(&ports).await
        );
    }
    let senders = crowd.senders_done(Duration::from_secs(60)).await;
    let mut problems = Vec::new();
    for i in 0..cluster.len() {
        let failed: Vec<String> = cluster.log(i).into_iter().filter(|l| l.contains("failed")).collect();
        eprintln!("node{i} logged {} failures, e.g. {:?}", failed.len(), failed.first());
    }
    for s in &senders {
        if s.lost > 0 || s.connections != 1 {
            problems.push(format!(
                "{}: its socket closed {} time(s) ({} connections)",
                s.name, s.lost, s.connections
            ));
        }
        eprintln!("{}: {} `internal` refusals: {:?}", s.name, s.internal.len(), s.internal);
    }
    // New sends succeed on every node, which were never restarted.
    let account = senders[0].account.clone();
    let progress = Progress::new();
    let ports = Arc::new(cluster.ports());
    let mut after = Vec::new();
    for i in 0..cluster.len() {
        assert!(cluster.is_up(i));
        let s = Sender::new(
            format!("after{i}"),
            account.clone(),
            ports.clone(),
            i,
            &rooms,
            5,
            1,
            None,
            progress.clone(),
            77 + i as u64,
        );
        after.push(
            tokio::time::timeout(Duration::from_secs(30), s.run(deadline))
                .await
                .expect("sends after the kills are answered"),
        );
    }
    for (i, s) in after.iter().enumerate() {
        if s.node != i || s.connections != 1 {
            problems.push(format!(
                "{} moved to node{} or reconnected ({} connections)",
                s.name, s.node, s.connections
            ));
        }
    }
    let mut all = senders;
    all.extend(after);
    let acked = gather_senders(&all, &mut problems);
    let heads = check_stored(&cluster, &rooms, &acked, &mut problems).await;
    let receivers = crowd.receivers_done(&heads, Duration::from_secs(30)).await;
    check_receivers(&receivers, &heads, &mut problems);
    for r in &receivers {
        if r.lost > 0 {
            problems.push(format!("{}: its socket closed {} time(s)", r.name, r.lost));
        }
    }
    // Every message row has its event row, and every message event its row.
    let db = pg_client(cluster.db.url()).await;
    let orphans: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS
               (SELECT 1 FROM events e WHERE e.room = m.room AND e.seq = m.seq AND e.kind = 'message')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let hollow: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM events e WHERE e.kind = 'message' AND NOT EXISTS
               (SELECT 1 FROM messages m WHERE m.room = e.room AND m.seq = e.seq)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (rows, head): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT (SELECT COUNT(*) FROM messages), (SELECT head FROM rooms WHERE name = 'delta')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    if orphans != 0 || hollow != 0 {
        problems.push(format!(
            "{orphans} message rows without their event, {hollow} message events without their row"
        ));
    }
    if rows != head || head as u64 != heads["delta"] {
        problems.push(format!("{rows} message rows, rooms.head {head}, history head {}", heads["delta"]));
    }
    eprintln!("heads {heads:?}; {}; {}", summary(&all, &receivers), bus_report(&cluster).await);
    drop(db);
    cluster.shutdown().await;
    eprintln!(
        "a_killed_postgres_connection_fails_sends_cleanly_and_the_node_recovers: {:?}",
        started.elapsed()
    );
    fail_on(&problems, "killed PostgreSQL connections");
}

// --- 6. Presence and typing ---

/// Reads until `want` matches (other frames skipped) or `limit` passes.
async fn wait_for(
    c: &mut Client,
    limit: Duration,
    what: &str,
    mut want: impl FnMut(&ServerMsg) -> bool,
) -> Duration {
    let t = Instant::now();
    let deadline = t + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(c, left).await {
            Next::Frame(msg) if want(&msg) => return t.elapsed(),
            Next::Frame(_) => {}
            Next::Quiet => panic!("{what}: not within {limit:?}"),
            Next::Closed(why) => panic!("{what}: the socket closed: {why}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_crosses_nodes_and_a_killed_nodes_people_leave_within_the_ttl() {
    let Some(mut cluster) = cluster_of(2).await else { return };
    let started = Instant::now();
    let room = "lobby";
    let join = json!({"type": "join", "room": room});
    let (mut watcher, _) = hello(cluster.port(0), None, "watcher").await.unwrap();
    assert!(send_frame(&mut watcher, &join).await);
    wait_for(&mut watcher, Duration::from_secs(5), "watcher joins on node0", |m| {
        matches!(m, ServerMsg::Joined { .. })
    })
    .await;

    // Bob joins on node 1: the watcher on node 0 sees him arrive, and he sees the watcher.
    let (mut bob, _) = hello(cluster.port(1), None, "bob").await.unwrap();
    assert!(send_frame(&mut bob, &join).await);
    let bob_sees_watcher = match next_frame(&mut bob, Duration::from_secs(5)).await {
        Next::Frame(ServerMsg::Joined { members, .. }) => members.iter().any(|m| m == "watcher"),
        other => panic!("bob: expected joined, got {other:?}"),
    };
    let took = wait_for(
        &mut watcher,
        Duration::from_secs(5),
        "the watcher sees bob join",
        |m| matches!(m, ServerMsg::Presence { nick, state: PresenceState::Joined, .. } if nick == "bob"),
    )
    .await;
    eprintln!("node0's watcher saw bob (node1) join after {took:?}");
    if !bob_sees_watcher {
        let took = wait_for(&mut bob, Duration::from_secs(5), "bob sees the watcher", |m| {
            matches!(m, ServerMsg::Presence { nick, state: PresenceState::Joined, .. } if nick == "watcher")
        })
        .await;
        eprintln!("bob (node1) saw node0's watcher after {took:?}");
    }

    // Bob types on node 1; the watcher hears it on node 0.
    assert!(send_frame(&mut bob, &json!({"type": "typing", "room": room})).await);
    let took = wait_for(
        &mut watcher,
        Duration::from_secs(5),
        "the watcher hears bob type",
        |m| matches!(m, ServerMsg::Typing { nick, .. } if nick == "bob"),
    )
    .await;
    eprintln!("node0's watcher heard bob (node1) type after {took:?}");

    // Node 1 dies with bob in the room: within about the TTL, he has left.
    cluster.kill(1).await;
    let killed = Instant::now();
    let limit = Duration::from_secs(PRESENCE_TTL_SECS + 5);
    wait_for(
        &mut watcher,
        limit,
        "the watcher sees bob leave after node1 died",
        |m| matches!(m, ServerMsg::Presence { nick, state: PresenceState::Left, .. } if nick == "bob"),
    )
    .await;
    eprintln!("bob left {:?} after node1 was SIGKILLed (TTL {PRESENCE_TTL_SECS} s)", killed.elapsed());
    drop((watcher, bob));
    cluster.shutdown().await;
    eprintln!(
        "presence_crosses_nodes_and_a_killed_nodes_people_leave_within_the_ttl: {:?}",
        started.elapsed()
    );
}

/// Access decided on one node holds on every node. Eve sits in `board` on node 1 (a
/// public room nobody has written in, so only node 1 knows it); on node 0 the owner then
/// creates `board` as a private room. Node 1 reads the room again on its creation notice
/// and removes Eve, and she cannot come back. Then a ban on node 0 removes her from a
/// public room she is in on node 1, and keeps her out there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_decided_on_one_node_holds_on_every_node() {
    let Some(cluster) = cluster_of(2).await else { return };
    // The first account of a server is its admin, who may enter any room: the owner.
    let owner = cluster::signup(cluster.port(0), "owner").await;
    let eve = cluster::signup(cluster.port(1), "eve").await;
    let (mut eve_ws, _) = hello(cluster.port(1), Some(&eve.cookie), "eve").await.unwrap();
    assert!(send_frame(&mut eve_ws, &json!({"type": "join", "room": "board"})).await);
    wait_for(
        &mut eve_ws,
        Duration::from_secs(5),
        "eve joins board on node1",
        |m| matches!(m, ServerMsg::Joined { room, .. } if room == "board"),
    )
    .await;

    let (mut owner_ws, _) = hello(cluster.port(0), Some(&owner.cookie), "owner").await.unwrap();
    let create = json!({"type": "create_room", "room": "board", "visibility": "private"});
    assert!(send_frame(&mut owner_ws, &create).await);
    wait_for(
        &mut owner_ws,
        Duration::from_secs(5),
        "the owner creates board on node0",
        |m| matches!(m, ServerMsg::Joined { room, .. } if room == "board"),
    )
    .await;
    let took = wait_for(
        &mut eve_ws,
        Duration::from_secs(10),
        "eve is removed from board on node1",
        |m| matches!(m, ServerMsg::Kicked { room, .. } if room == "board"),
    )
    .await;
    eprintln!("eve left the now-private board on node1 {took:?} after its creation on node0");
    assert!(send_frame(&mut eve_ws, &json!({"type": "join", "room": "board"})).await);
    wait_for(&mut eve_ws, Duration::from_secs(5), "eve may not rejoin board on node1", |m| {
        matches!(m, ServerMsg::Error { code: ErrorCode::NotFound, .. })
    })
    .await;

    // A ban on node 0 reaches node 1.
    let create = json!({"type": "create_room", "room": "square", "visibility": "public"});
    assert!(send_frame(&mut owner_ws, &create).await);
    wait_for(
        &mut owner_ws,
        Duration::from_secs(5),
        "the owner creates square",
        |m| matches!(m, ServerMsg::Joined { room, .. } if room == "square"),
    )
    .await;
    assert!(send_frame(&mut eve_ws, &json!({"type": "join", "room": "square"})).await);
    wait_for(
        &mut eve_ws,
        Duration::from_secs(10),
        "eve joins square on node1",
        |m| matches!(m, ServerMsg::Joined { room, .. } if room == "square"),
    )
    .await;
    assert!(send_frame(&mut owner_ws, &json!({"type": "ban", "room": "square", "username": "eve"})).await);
    wait_for(
        &mut eve_ws,
        Duration::from_secs(10),
        "eve is banned from square on node1",
        |m| matches!(m, ServerMsg::Kicked { room, banned: true, .. } if room == "square"),
    )
    .await;
    // Node 1 learns the ban from the store with the room's notice; a join there waits for
    // nothing else, so it is tried until the notice has surely been applied, never past 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(send_frame(&mut eve_ws, &json!({"type": "join", "room": "square"})).await);
        let refused = loop {
            match next_frame(&mut eve_ws, Duration::from_secs(5)).await {
                Next::Frame(ServerMsg::Error { code: ErrorCode::Banned, .. }) => break true,
                Next::Frame(ServerMsg::Joined { room, .. }) if room == "square" => break false,
                Next::Frame(_) => continue,
                other => panic!("eve: {other:?}"),
            }
        };
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "node1 still lets the banned eve into square");
        // Joined before the notice landed: the notice will remove her again.
        wait_for(
            &mut eve_ws,
            Duration::from_secs(10),
            "eve removed again",
            |m| matches!(m, ServerMsg::Kicked { room, .. } if room == "square"),
        )
        .await;
    }
    drop((eve_ws, owner_ws));
    cluster.shutdown().await;
}
