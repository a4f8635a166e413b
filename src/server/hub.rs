//! The hub: the room registry, sessions, the store and the committer, shared by every
//! connection and HTTP handler.
//!
//! The registry lock is taken on join and on room listings, never per message: a
//! connection keeps an `Arc<Room>` for each room it joined.

use super::{
    broker::{Broker, LocalBroker},
    config::Config,
    metrics::{Gauges, Metrics},
    outbound::{ConnHandle, ConnId},
    rate::{Refusal, TokenBucket},
    room::{Room, Subscription},
    session::Sessions,
    store::{MessageStore, Page, StoreError, committer::Committer},
};
use crate::protocol::{ErrorCode, Nick, RoomInfo, RoomName, Seq};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the server holds its maximum number of rooms")]
    TooManyRooms,
    #[error("too many new rooms from this address; try again later")]
    CreationRate(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::TooManyRooms => ErrorCode::TooManyRooms,
            HubError::CreationRate(_) => ErrorCode::RateLimited,
            HubError::Store(_) => ErrorCode::Internal,
        }
    }
}

/// One page of the room directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPage {
    pub rooms: Vec<RoomInfo>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// A directory cursor: the position after the last room of a page, in directory order
/// (most recently active first, then by name). Opaque to clients: `{last_active}.{name}`.
fn cursor_of(room: &RoomInfo) -> String {
    format!("{}.{}", room.last_active, room.name)
}

fn parse_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (active, name) = cursor.split_once('.')?;
    Some((active.parse().ok()?, name))
}

/// Directory order: most recently active first, then by name.
fn directory_order(a: &RoomInfo, b: &RoomInfo) -> std::cmp::Ordering {
    b.last_active.cmp(&a.last_active).then_with(|| a.name.cmp(&b.name))
}

pub struct Hub {
    pub config: Arc<Config>,
    pub store: Arc<dyn MessageStore>,
    pub committer: Committer,
    pub sessions: Sessions,
    pub metrics: Arc<Metrics>,
    /// Open connections per client IP, for the per-IP limit.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Cancelled on shutdown: every connection closes with 1001.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them (axum does not).
    pub tasks: TaskTracker,
    /// Rooms kept: every room with messages, and every room someone is in. A room with
    /// neither is forgotten (see `leave_room`), so it neither counts nor lists.
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    /// Store reads the HTTP side (API, page renders) may run at once: half the read
    /// connections, so a flood of HTTP readers queues here and never ahead of a join's
    /// replay or a `history` on a socket.
    http_reads: Arc<tokio::sync::Semaphore>,
    /// Room creations per client address (`--room-create-rate`).
    creations: Mutex<HashMap<IpAddr, TokenBucket>>,
    next_conn: AtomicU64,
}

impl Hub {
    /// Loads the known rooms and starts the committer. Returns the committer thread's
    /// handle, to join after the hub is dropped (its last commit).
    pub fn start(
        config: Config,
        store: Arc<dyn MessageStore>,
    ) -> Result<(Arc<Hub>, JoinHandle<()>), StoreError> {
        let metrics = Arc::new(Metrics::default());
        let broker: Arc<dyn Broker> = Arc::new(LocalBroker);
        let (committer, thread) =
            Committer::start(store.clone(), broker, metrics.clone(), config.commit_queue)
                .map_err(|e| StoreError::Task(format!("starting the committer: {e}")))?;
        let rooms = store
            .rooms()?
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(Room::new(r.name, r.head, r.last_active, metrics.clone()))))
            .collect();
        let http_reads = Arc::new(tokio::sync::Semaphore::new((config.read_connections as usize / 2).max(1)));
        let hub = Hub {
            http_reads,
            sessions: Sessions::new(config.session_grace()),
            config: Arc::new(config),
            store,
            committer,
            metrics,
            per_ip: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            rooms: Mutex::new(rooms),
            creations: Mutex::default(),
            next_conn: AtomicU64::new(1),
        };
        Ok((Arc::new(hub), thread))
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection from `ip` unless that IP is at the limit; the returned guard
    /// gives the slot back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.config.max_conns_per_ip {
            return None;
        }
        *count += 1;
        Some(IpSlot { hub: self.clone(), ip })
    }

    pub fn gauges(&self) -> Gauges {
        Gauges { rooms: self.room_count(), sessions: self.sessions.len(), tasks: self.tasks.len() }
    }

    pub fn find_room(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Subscribes `conn` to a room, creating the room on first use. Lookup, the room
    /// count check, creation and the subscription happen under the registry lock, so two
    /// joins cannot both take the last free room and a room being forgotten cannot gain
    /// a member. Creating costs no disk write: a room is stored with its first message.
    pub fn join_room(
        &self,
        name: &RoomName,
        from: IpAddr,
        nick: &Nick,
        conn: &Arc<ConnHandle>,
    ) -> Result<(Arc<Room>, Subscription), HubError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = match rooms.get(name) {
            Some(room) => room.clone(),
            None => {
                if rooms.len() >= self.config.max_rooms {
                    return Err(HubError::TooManyRooms);
                }
                self.creation_allowed(from).map_err(HubError::CreationRate)?;
                let room = Arc::new(Room::new(name.clone(), 0, super::unix_ms(), self.metrics.clone()));
                rooms.insert(name.clone(), room.clone());
                room
            }
        };
        let sub = room.subscribe(nick, conn);
        Ok((room, sub))
    }

    /// Unsubscribes `conn`; a room left with nobody in it and nothing said is forgotten.
    pub fn leave_room(&self, room: &Arc<Room>, conn: ConnId) {
        room.unsubscribe(conn);
        if room.is_idle() {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the registry lock: joins subscribe under it.
            if room.is_idle() && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
        }
    }

    /// Takes a room-creation token of `from`'s bucket.
    fn creation_allowed(&self, from: IpAddr) -> Result<(), Refusal> {
        let mut creations = self.creations.lock().unwrap_or_else(|p| p.into_inner());
        let rate = self.config.room_create_rate as f64 / 60.0;
        let burst = self.config.room_create_burst as f64;
        creations.entry(from).or_insert_with(|| TokenBucket::new(rate, burst)).check()
    }

    /// Forgets creation buckets that have refilled (called periodically).
    pub fn sweep_creations(&self) {
        let full_after = Duration::from_secs_f64(
            self.config.room_create_burst as f64 * 60.0 / self.config.room_create_rate.max(1) as f64,
        );
        let now = Instant::now();
        let mut creations = self.creations.lock().unwrap_or_else(|p| p.into_inner());
        creations.retain(|_, bucket| now.saturating_duration_since(bucket.last_used()) < full_after);
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// One page of the directory after `cursor`, at most `limit` rooms (1..=200).
    pub fn room_page(&self, cursor: Option<&str>, limit: u32) -> RoomPage {
        let limit = limit.clamp(1, crate::protocol::MAX_ROOMS_PAGE) as usize;
        let rooms: Vec<Arc<Room>> =
            self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let after = cursor.and_then(parse_cursor);
        let mut list: Vec<RoomInfo> = rooms
            .iter()
            .map(|r| r.info())
            .filter(|info| match after {
                // Strictly after the cursor in directory order.
                Some((active, name)) => {
                    info.last_active < active || (info.last_active == active && info.name.as_str() > name)
                }
                None => true,
            })
            .collect();
        list.sort_by(directory_order);
        let more = list.len() > limit;
        list.truncate(limit);
        let next = if more { list.last().map(cursor_of) } else { None };
        RoomPage { rooms: list, next }
    }

    /// Messages after `after` up to `upto`, at most `limit` (the newest of them).
    pub async fn messages_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Page, HubError> {
        let store = self.store.clone();
        let room = room.clone();
        Ok(blocking(move || store.after(&room, after, upto, limit)).await?)
    }

    /// `messages_before` for the HTTP side (API, page renders): waits its turn behind other
    /// HTTP reads, never ahead of the sockets. The turn is held by the read itself, so a
    /// request that times out does not free it while its read still runs.
    pub async fn http_messages_before(
        &self,
        room: &RoomName,
        before: Seq,
        limit: usize,
    ) -> Result<Page, HubError> {
        let turn =
            self.http_reads.clone().acquire_owned().await.map_err(|e| StoreError::Task(e.to_string()))?;
        let store = self.store.clone();
        let room = room.clone();
        Ok(blocking(move || {
            let _turn = turn;
            store.before(&room, before, limit)
        })
        .await?)
    }

    /// The newest `limit` messages before `before`.
    pub async fn messages_before(
        &self,
        room: &RoomName,
        before: Seq,
        limit: usize,
    ) -> Result<Page, HubError> {
        let store = self.store.clone();
        let room = room.clone();
        Ok(blocking(move || store.before(&room, before, limit)).await?)
    }
}

/// One connection's place in the per-IP count.
pub struct IpSlot {
    hub: Arc<Hub>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.hub.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}
