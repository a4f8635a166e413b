//! Fan-out, presence and notices between nodes over Redis (`--broker redis://…`).
//!
//! - Stored events: after its commit, a node publishes each event to the room's channel
//!   (`{prefix}room:{name}`, payload `seq ts sent_ms\n frame`). Every node, the publisher
//!   included, delivers from its [`sequencer`](super::sequencer), which drops what it
//!   already delivered and fills gaps from PostgreSQL. Pub/sub is at most once, so a
//!   node also re-reads the heads of its rooms every second and right after every
//!   reconnect of its subscription: an event committed by a node that died before it
//!   published reaches everyone within about a second.
//! - Presence: each node keeps its share of every room it has people in under
//!   `{prefix}presence:{room}:{node}`, with a TTL it refreshes; a node that dies stops
//!   refreshing, and its people leave every room when the TTL runs out. Changes are
//!   announced on `{prefix}ctl` so the others read them at once.
//! - Typing, topic and standing notices, kicks and room changes go over `{prefix}ctl`.
//!
//! Publishing uses redis-rs's reconnecting `ConnectionManager`; the subscription is a
//! dedicated connection this module reconnects itself, because it must know when it was
//! down (the head check after it).

use super::{
    Broker,
    sequencer::{self, Work},
};
use crate::protocol::{Nick, RoomName, Seq};
use crate::server::{hub::Hub, metrics::Metrics, room::Room, store::MessageStore};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Notify, mpsc};

/// How often a node compares its rooms' heads with the store's.
const HEAD_CHECK: Duration = Duration::from_secs(1);
/// How often a node looks at presence (its own changes, the other nodes' entries).
const PRESENCE_TICK: Duration = Duration::from_millis(500);
/// How often a node looks for rooms created elsewhere that it missed a notice of.
const ROOM_SYNC: Duration = Duration::from_secs(10);
/// Events published per round trip, at most.
const PUBLISH_BATCH: usize = 512;
/// Items waiting to be published, and deliveries waiting for the sequencer. Beyond them
/// (Redis or PostgreSQL unreachable for long) new ones are dropped and counted: the head
/// check delivers every dropped event once the store answers, and a lost typing notice
/// is harmless.
const QUEUE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A notice between nodes, on `{prefix}ctl`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Control {
    /// A room was created or its settings or standings changed: read it again.
    Room {
        node: String,
        room: String,
    },
    Typing {
        node: String,
        room: String,
        nick: String,
    },
    Notice {
        node: String,
        room: String,
        frame: String,
    },
    Eject {
        node: String,
        room: String,
        user: String,
        by: String,
        banned: bool,
    },
    /// A node's people in a room changed: read its entry now.
    Presence {
        node: String,
        room: String,
    },
}

impl Control {
    fn node(&self) -> &str {
        match self {
            Control::Room { node, .. }
            | Control::Typing { node, .. }
            | Control::Notice { node, .. }
            | Control::Eject { node, .. }
            | Control::Presence { node, .. } => node,
        }
    }
}

enum Outgoing {
    Event { room: String, payload: Vec<u8> },
    Control(String),
}

pub struct RedisBroker {
    /// This process's id in presence entries and notices (random per start).
    node: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    work: mpsc::Sender<Work>,
    out: mpsc::Sender<Outgoing>,
    hub: OnceLock<Weak<Hub>>,
    metrics: Arc<Metrics>,
    /// Wakes the head check (after a reconnect).
    check_now: Notify,
    presence_ttl: Duration,
    /// Ms from the newest bus event's publication to its arrival here.
    lag_ms: AtomicU64,
    /// Rooms being read from the store now (a burst of events for a room this node has
    /// not met reads it once).
    discovering: std::sync::Mutex<std::collections::HashSet<RoomName>>,
    /// Rooms whose notice came while they were being read: read once more after.
    again: std::sync::Mutex<std::collections::HashSet<RoomName>>,
}

impl RedisBroker {
    /// Connects (publishing connection, then the sequencer and publisher tasks). The
    /// subscription, head check and presence start with `attach`, once the hub exists.
    pub async fn connect(
        url: &str,
        prefix: &str,
        presence_ttl: Duration,
        store: Arc<dyn MessageStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let (work, work_rx) = mpsc::channel(QUEUE);
        let (out, out_rx) = mpsc::channel(QUEUE);
        tokio::spawn(sequencer::run(work_rx, store, metrics.clone()));
        let broker = Arc::new(RedisBroker {
            node: crate::server::auth::token::random_id(),
            prefix: prefix.to_owned(),
            client,
            conn,
            work,
            out,
            hub: OnceLock::new(),
            metrics,
            check_now: Notify::new(),
            presence_ttl,
            lag_ms: AtomicU64::new(0),
            discovering: std::sync::Mutex::default(),
            again: std::sync::Mutex::default(),
        });
        tokio::spawn(publisher(broker.conn.clone(), broker.prefix.clone(), out_rx, broker.metrics.clone()));
        Ok(broker)
    }

    /// Starts the subscription, the head check and the presence sync for `hub`.
    pub fn attach(self: &Arc<Self>, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
        let tasks = [
            tokio::spawn(self.clone().subscribe()),
            tokio::spawn(self.clone().head_check()),
            tokio::spawn(self.clone().presence()),
        ];
        let (this, shutdown) = (self.clone(), hub.shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            for task in tasks {
                task.abort();
            }
            this.farewell().await;
        });
    }

    /// A node stopping takes its people out of every room at once, rather than after
    /// the TTL.
    async fn farewell(&self) {
        let Some(hub) = self.hub() else { return };
        let mut pipe = redis::pipe();
        let ctl = format!("{}ctl", self.prefix);
        for room in hub.all_rooms() {
            let name = room.name.as_str().to_owned();
            pipe.del(self.presence_key(&name, &self.node)).ignore();
            if let Ok(json) =
                serde_json::to_string(&Control::Presence { node: self.node.clone(), room: name })
            {
                pipe.publish(&ctl, json).ignore();
            }
        }
        pipe.srem(format!("{}nodes", self.prefix), &self.node).ignore();
        pipe.del(format!("{}node:{}", self.prefix, self.node)).ignore();
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(err) = done {
            tracing::warn!(%err, "removing this node's presence from Redis failed; it expires with its TTL");
        }
    }

    /// Hands work to the sequencer, or drops and counts it when it is that far behind.
    fn deliver(&self, work: Work) {
        if self.work.try_send(work).is_err() {
            self.metrics.bus_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Queues an item for Redis, or drops and counts it when Redis is that far behind.
    fn queue(&self, item: Outgoing) {
        if self.out.try_send(item).is_err() {
            self.metrics.bus_dropped.fetch_add(1, Relaxed);
        }
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    fn control(&self, make: impl FnOnce(String) -> Control) {
        if let Ok(json) = serde_json::to_string(&make(self.node.clone())) {
            self.queue(Outgoing::Control(json));
        }
    }

    /// The subscription: reconnects for ever, and asks for a head check each time it is
    /// back (whatever was published meanwhile never reached it).
    async fn subscribe(self: Arc<Self>) {
        let rooms = format!("{}room:*", self.prefix);
        let ctl = format!("{}ctl", self.prefix);
        let mut delay = Duration::from_millis(50);
        let mut first = true;
        loop {
            let connected = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.psubscribe(&rooms).await?;
                pubsub.subscribe(&ctl).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            let pubsub = match connected {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(%err, "the Redis subscription is down; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if !first {
                self.metrics.bus_reconnects.fetch_add(1, Relaxed);
                tracing::info!("the Redis subscription is back; checking every room's head");
                // Notices sent while it was down are lost: every room's settings and
                // standings are read again.
                if let Some(hub) = self.hub() {
                    tokio::spawn(async move {
                        for room in hub.all_rooms() {
                            if let Err(err) = hub.discover_room(&room.name).await {
                                tracing::warn!(%err, room = %room.name, "reading a room from the store failed");
                            }
                        }
                    });
                }
            }
            first = false;
            delay = Duration::from_millis(50);
            self.check_now.notify_one();
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name();
                if channel == ctl {
                    if let Ok(control) = serde_json::from_slice::<Control>(msg.get_payload_bytes()) {
                        self.on_control(control);
                    }
                } else if let Some(room) =
                    channel.strip_prefix(&self.prefix).and_then(|c| c.strip_prefix("room:"))
                {
                    self.on_event(room, msg.get_payload_bytes());
                }
            }
            tracing::warn!("the Redis subscription was lost; reconnecting");
        }
    }

    fn on_event(self: &Arc<Self>, room: &str, payload: &[u8]) {
        self.metrics.bus_received.fetch_add(1, Relaxed);
        let Some((seq, ts, sent, frame)) = parse_event(payload) else { return };
        let lag = (crate::server::unix_ms() - sent).max(0) as u64;
        self.lag_ms.store(lag, Relaxed);
        let Some(hub) = self.hub() else { return };
        let Ok(name) = RoomName::parse(room) else { return };
        match hub.find_room(&name) {
            Some(room) => {
                self.deliver(Work::Event { room, seq, ts, frame: Utf8Bytes::from(frame.to_owned()) });
            }
            // A room this node has not met yet: read it (its head covers this event).
            None => self.discover(hub, name),
        }
    }

    /// Reads a room from the store unless that is already under way.
    fn discover(self: &Arc<Self>, hub: Arc<Hub>, name: RoomName) {
        {
            let mut discovering = self.discovering.lock().unwrap_or_else(|p| p.into_inner());
            if !discovering.insert(name.clone()) {
                self.again.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(err) = hub.discover_room(&name).await {
                    tracing::warn!(%err, room = %name, "reading a room from the store failed");
                }
                // A notice that came while it read may be newer than what it read: read
                // again, once for any number of them.
                let mut discovering = this.discovering.lock().unwrap_or_else(|p| p.into_inner());
                if !this.again.lock().unwrap_or_else(|p| p.into_inner()).remove(&name) {
                    discovering.remove(&name);
                    return;
                }
            }
        });
    }

    fn on_control(self: &Arc<Self>, control: Control) {
        if control.node() == self.node {
            return;
        }
        let Some(hub) = self.hub() else { return };
        let find = |room: &str| RoomName::parse(room).ok().and_then(|n| hub.find_room(&n));
        match control {
            Control::Room { room, .. } => {
                if let Ok(name) = RoomName::parse(&room) {
                    self.discover(hub, name);
                }
            }
            Control::Typing { room, nick, .. } => {
                if let (Some(room), Ok(nick)) = (find(&room), Nick::parse(&nick)) {
                    room.typing(&nick);
                }
            }
            Control::Notice { room, frame, .. } => {
                if let Some(room) = find(&room) {
                    room.broadcast_frame(Utf8Bytes::from(frame));
                }
            }
            Control::Eject { room, user, by, banned, .. } => {
                if let Some(room) = find(&room) {
                    // An account's ban is in the store (read with the room's notice); a
                    // guest's lives in memory, so it is kept here too.
                    if banned && user.starts_with("g-") {
                        room.access().banned_guests.insert(user.clone());
                    }
                    super::eject(&room, room.remove_user(&user), &by, banned);
                }
            }
            Control::Presence { room, node } => {
                if let Some(room) = find(&room) {
                    let this = self.hub.get().cloned();
                    let mut conn = self.conn.clone();
                    let key = self.presence_key(room.name.as_str(), &node);
                    tokio::spawn(async move {
                        let entry: Option<String> = conn.get(&key).await.ok().flatten();
                        room.set_remote(&node, entry.as_deref().map(parse_people).unwrap_or_default());
                        drop(this);
                    });
                }
            }
        }
    }

    /// Every second (and after a reconnect): the store's heads of every room held here;
    /// the sequencer fills whatever this node has not delivered. Every ten seconds, rooms
    /// created elsewhere whose notice was lost are read too.
    async fn head_check(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sync = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.check_now.notified() => {}
            }
            let Some(hub) = self.hub() else { return };
            let rooms = hub.all_rooms();
            let names: Vec<String> = rooms.iter().map(|r| r.name.as_str().to_owned()).collect();
            match hub.store.heads(&names).await {
                Ok(heads) => {
                    let heads: HashMap<String, Seq> = heads.into_iter().collect();
                    for room in rooms {
                        if let Some(&head) = heads.get(room.name.as_str())
                            && head > room.head()
                        {
                            self.deliver(Work::Head { room, head });
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "the head check could not read the store"),
            }
            if last_sync.elapsed() >= ROOM_SYNC {
                last_sync = Instant::now();
                hub.discover_rooms().await;
            }
        }
    }

    fn presence_key(&self, room: &str, node: &str) -> String {
        format!("{}presence:{room}:{node}", self.prefix)
    }

    /// Writes this node's share of each room when it changed (and again before its TTL
    /// runs out); reads the other nodes' shares of the rooms it has people in.
    async fn presence(self: Arc<Self>) {
        let mut conn = self.conn.clone();
        let nodes_key = format!("{}nodes", self.prefix);
        let alive_key = format!("{}node:{}", self.prefix, self.node);
        let ttl_ms = self.presence_ttl.as_millis() as u64;
        let refresh = self.presence_ttl / 3;
        let mut written: HashMap<String, (u64, Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(PRESENCE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now() - HEAD_CHECK;
        let mut last_alive = Instant::now() - refresh;
        let mut nodes: Vec<String> = Vec::new();
        loop {
            tick.tick().await;
            let Some(hub) = self.hub() else { return };
            if last_alive.elapsed() >= refresh {
                let alive: redis::RedisResult<()> = redis::pipe()
                    .sadd(&nodes_key, &self.node)
                    .ignore()
                    .pset_ex(&alive_key, 1, ttl_ms)
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                if alive.is_ok() {
                    last_alive = Instant::now();
                }
            }
            let rooms = hub.all_rooms();
            for room in &rooms {
                let name = room.name.as_str();
                let version = room.presence_version();
                let seen = written.get(name).copied();
                let changed = seen.is_none_or(|(v, _)| v != version);
                let stale = seen.is_some_and(|(_, at)| at.elapsed() >= refresh);
                if !changed && !stale {
                    continue;
                }
                let people = room.local_people();
                if people.is_empty() && seen.is_none() {
                    continue;
                }
                let key = self.presence_key(name, &self.node);
                let result: redis::RedisResult<()> = if people.is_empty() {
                    conn.del(&key).await
                } else {
                    conn.pset_ex(&key, serde_json::to_string(&people).unwrap_or_default(), ttl_ms).await
                };
                if result.is_ok() {
                    if people.is_empty() {
                        written.remove(name);
                    } else {
                        written.insert(name.to_owned(), (version, Instant::now()));
                    }
                    if changed {
                        let room = name.to_owned();
                        self.control(|node| Control::Presence { node, room });
                    }
                }
            }
            // Rooms this node has forgotten (nobody here, nothing stored) leave no entry.
            let held: std::collections::HashSet<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
            let gone: Vec<String> = written.keys().filter(|n| !held.contains(n.as_str())).cloned().collect();
            drop(held);
            {
                for name in gone {
                    let _: redis::RedisResult<()> = conn.del(self.presence_key(&name, &self.node)).await;
                    written.remove(&name);
                    self.control(|node| Control::Presence { node, room: name });
                }
            }
            if last_read.elapsed() < HEAD_CHECK {
                continue;
            }
            last_read = Instant::now();
            // The other nodes, without those whose liveness key is gone.
            if let Ok(all) = conn.smembers::<_, Vec<String>>(&nodes_key).await {
                nodes = Vec::with_capacity(all.len());
                for node in all.into_iter().filter(|n| *n != self.node) {
                    let alive: bool =
                        conn.exists(format!("{}node:{node}", self.prefix)).await.unwrap_or(true);
                    if alive {
                        nodes.push(node);
                    } else {
                        let _: redis::RedisResult<()> = conn.srem(&nodes_key, &node).await;
                    }
                }
            }
            for room in rooms.iter().filter(|r| r.has_members() || !r.remote_nodes().is_empty()) {
                let mut ask: Vec<String> = nodes.clone();
                for gone in room.remote_nodes() {
                    if !ask.contains(&gone) {
                        ask.push(gone);
                    }
                }
                if ask.is_empty() {
                    continue;
                }
                let keys: Vec<String> =
                    ask.iter().map(|n| self.presence_key(room.name.as_str(), n)).collect();
                let entries: redis::RedisResult<Vec<Option<String>>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
                let Ok(entries) = entries else { continue };
                for (node, entry) in ask.iter().zip(entries) {
                    room.set_remote(node, entry.as_deref().map(parse_people).unwrap_or_default());
                }
            }
        }
    }
}

fn parse_people(json: &str) -> Vec<(String, bool, Option<String>)> {
    serde_json::from_str(json).unwrap_or_default()
}

/// `seq ts sent_ms\nframe`.
fn event_payload(seq: Seq, ts: i64, frame: &str) -> Vec<u8> {
    let mut out = format!("{seq} {ts} {}\n", crate::server::unix_ms()).into_bytes();
    out.extend_from_slice(frame.as_bytes());
    out
}

fn parse_event(payload: &[u8]) -> Option<(Seq, i64, i64, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (head, frame) = text.split_once('\n')?;
    let mut parts = head.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let ts = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, ts, sent, frame))
}

/// Publishes what the committer stored and the notices, many per round trip. A batch
/// Redis refuses is dropped and counted: the head check delivers the events anyway.
async fn publisher(
    mut conn: ConnectionManager,
    prefix: String,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: Arc<Metrics>,
) {
    let ctl = format!("{prefix}ctl");
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for item in batch.drain(..) {
            match item {
                Outgoing::Event { room, payload } => {
                    pipe.publish(format!("{prefix}room:{room}"), payload).ignore()
                }
                Outgoing::Control(json) => pipe.publish(&ctl, json).ignore(),
            };
        }
        let sent: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        match sent {
            Ok(()) => metrics.bus_published.fetch_add(1, Relaxed),
            Err(err) => {
                tracing::warn!(%err, "publishing to Redis failed; the head check will deliver");
                metrics.bus_publish_failures.fetch_add(1, Relaxed)
            }
        };
    }
}

impl Broker for RedisBroker {
    fn publish(&self, room: &Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes) {
        let payload = event_payload(seq, ts, frame.as_str());
        self.deliver(Work::Event { room: room.clone(), seq, ts, frame });
        self.queue(Outgoing::Event { room: room.name.as_str().to_owned(), payload });
    }

    fn typing(&self, room: &Arc<Room>, nick: &Nick) {
        room.typing(nick);
        let (room, nick) = (room.name.as_str().to_owned(), nick.as_str().to_owned());
        self.control(|node| Control::Typing { node, room, nick });
    }

    fn notice(&self, room: &Arc<Room>, frame: Utf8Bytes) {
        room.broadcast_frame(frame.clone());
        let (room, frame) = (room.name.as_str().to_owned(), frame.as_str().to_owned());
        self.control(|node| Control::Notice { node, room, frame });
    }

    fn eject(&self, room: &RoomName, user: &str, by: &str, banned: bool) {
        let (room, user, by) = (room.as_str().to_owned(), user.to_owned(), by.to_owned());
        self.control(|node| Control::Eject { node, room, user, by, banned });
    }

    fn room_changed(&self, room: &RoomName) {
        let room = room.as_str().to_owned();
        self.control(|node| Control::Room { node, room });
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn lag_ms(&self) -> Option<u64> {
        Some(self.lag_ms.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_payloads_round_trip_with_any_frame() {
        let frame = "{\"type\":\"message\",\"text\":\"a\\nb c\"}";
        let payload = event_payload(42, 7, frame);
        let (seq, ts, sent, back) = parse_event(&payload).unwrap();
        assert_eq!((seq, ts, back), (42, 7, frame));
        assert!(sent > 0);
        assert_eq!(parse_event(b"nonsense"), None);
        assert_eq!(parse_event(b"1 x 3\n{}"), None);
    }

    #[test]
    fn control_messages_use_their_kind_as_tag() {
        let c = Control::Eject {
            node: "n".into(),
            room: "r".into(),
            user: "7".into(),
            by: "ann".into(),
            banned: true,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"kind\":\"eject\""), "{json}");
        assert!(matches!(
            serde_json::from_str::<Control>(&json).unwrap(),
            Control::Eject { banned: true, .. }
        ));
    }
}
