//! The hub: the room registry, sessions, the store and the committer, shared by every
//! connection and HTTP handler.
//!
//! The registry lock is taken on join and on room listings, never per message: a
//! connection keeps an `Arc<Room>` for each room it joined.

use super::{
    access::{Access, Denied},
    auth::{Auth, Identity},
    broker::{Broker, LocalBroker},
    config::Config,
    metrics::{Gauges, Metrics},
    outbound::{ConnHandle, ConnId},
    rate::{Refusal, TokenBucket},
    room::{Room, Subscription},
    session::Sessions,
    store::{
        EventPage, MessageStore, Page, StoreError,
        accounts::{AccountError, AccountStore},
        committer::Committer,
    },
};
use crate::protocol::{ErrorCode, RoomInfo, RoomName, Seq};
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
    #[error("{0}")]
    Denied(#[from] Denied),
    #[error("a room with that name exists")]
    Exists,
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::TooManyRooms => ErrorCode::TooManyRooms,
            HubError::CreationRate(_) => ErrorCode::RateLimited,
            HubError::Denied(d) => d.code(),
            HubError::Exists => ErrorCode::RoomExists,
            HubError::Invalid(_) => ErrorCode::InvalidRoom,
            HubError::Store(StoreError::Query(_)) => ErrorCode::InvalidQuery,
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
    /// Fan-out: this process only, or every node (Redis).
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn MessageStore>,
    pub committer: Committer,
    pub sessions: Sessions,
    /// Accounts, sign-in, sessions and tokens.
    pub auth: Auth,
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
    /// `send` allowances per account (or guest session, or guest address), shared by
    /// every connection of it: ten tabs do not get ten times the rate.
    send_buckets: Mutex<HashMap<String, Arc<Mutex<TokenBucket>>>>,
    /// Searches running at once: half the read connections, so a flood of searches
    /// queues here and never takes every reader from joins and `history`.
    pub(super) searching: Arc<tokio::sync::Semaphore>,
    /// Room creations (`create_room`, `open_dm`) one at a time: each writes the store
    /// between the registry check and the registration.
    pub(super) creating: tokio::sync::Mutex<()>,
    next_conn: AtomicU64,
    /// Every open connection, for the heartbeat (pings, idle and stuck-socket cuts) and
    /// for shutdown: a connection waits on nothing of its own but its socket and queue.
    live: Mutex<HashMap<ConnId, Arc<ConnHandle>>>,
    /// The hub's clock (`now_ms`) starts here.
    epoch: Instant,
}

impl Hub {
    /// Loads the known rooms and starts the committer. Returns the committer thread's
    /// handle, to join after the hub is dropped (its last commit).
    pub fn start(
        config: Config,
        store: Arc<dyn MessageStore>,
        accounts: Arc<dyn AccountStore>,
    ) -> Result<(Arc<Hub>, JoinHandle<()>), StoreError> {
        Hub::start_with(config, store, accounts, Arc::new(LocalBroker), Arc::default())
    }

    /// `start` with a broker (several nodes) and the metrics it already counts into.
    pub fn start_with(
        config: Config,
        store: Arc<dyn MessageStore>,
        accounts: Arc<dyn AccountStore>,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Hub>, JoinHandle<()>), StoreError> {
        let (committer, thread) =
            Committer::start(store.clone(), broker.clone(), metrics.clone(), config.commit_queue)
                .map_err(|e| StoreError::Task(format!("starting the committer: {e}")))?;
        let load = |e: AccountError| StoreError::Task(format!("loading room access: {e}"));
        let metas: HashMap<String, _> = accounts.room_metas().map_err(load)?.into_iter().collect();
        let mut memberships: HashMap<String, Vec<_>> = HashMap::new();
        for m in accounts.memberships().map_err(load)? {
            memberships.entry(m.room.clone()).or_default().push(m);
        }
        // Called on a blocking thread (see `Server::bind`): the async store is waited for.
        let rooms = tokio::runtime::Handle::current()
            .block_on(store.rooms())?
            .into_iter()
            .map(|r| {
                let room = Room::new(r.name.clone(), r.head, r.last_active, metrics.clone());
                {
                    let mut access = room.access();
                    if let Some(meta) = metas.get(r.name.as_str()) {
                        *access = Access::from_meta(meta);
                    }
                    for m in memberships.get(r.name.as_str()).into_iter().flatten() {
                        access.load(m);
                    }
                }
                (r.name, Arc::new(room))
            })
            .collect();
        let http_reads = Arc::new(tokio::sync::Semaphore::new((config.read_connections as usize / 2).max(1)));
        let searching = Arc::new(tokio::sync::Semaphore::new((config.read_connections as usize / 2).max(1)));
        let hub = Hub {
            broker,
            searching,
            auth: Auth::new(accounts, &config),
            send_buckets: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
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
            live: Mutex::default(),
            epoch: Instant::now(),
        };
        Ok((Arc::new(hub), thread))
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Milliseconds since the hub started: the connections' heard and stuck times.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers an open connection with the heartbeat. One opened once shutdown has begun
    /// is closed at once (the shutdown's sweep may have passed already).
    pub fn open_conn(&self, conn: &Arc<ConnHandle>) {
        conn.heard(self.now_ms());
        self.live().insert(conn.id, conn.clone());
        if self.shutdown.is_cancelled() {
            conn.close(super::outbound::CloseReason::GOING_AWAY);
        }
    }

    /// The connection has ended.
    pub fn close_conn(&self, id: ConnId) {
        self.live().remove(&id);
    }

    /// The open connections whose id is `slice` modulo `slices` (the heartbeat visits
    /// them a slice at a time, so pings are spread over the interval).
    pub fn live_conns(&self, slice: u64, slices: u64) -> Vec<Arc<ConnHandle>> {
        self.live().values().filter(|c| c.id % slices == slice).cloned().collect()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<ConnHandle>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
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
        Gauges {
            rooms: self.room_count(),
            sessions: self.sessions.len(),
            tasks: self.tasks.len(),
            bus_lag_ms: self.broker.lag_ms(),
        }
    }

    /// Several nodes: reads `name` from the store (created, or changed, on another node)
    /// and registers it, or refreshes its access; false when the store does not hold it.
    /// Access is replaced as stored, and whoever here it no longer lets in is removed (a
    /// room made private, a membership ended, a ban). An error leaves the room as it was:
    /// the caller must not take an unknown room for a new one.
    pub async fn discover_room(&self, name: &RoomName) -> Result<bool, HubError> {
        // A change made here meanwhile must not be overwritten by an older reading.
        let known = self.find_room(name);
        let _one_at_a_time = match &known {
            Some(room) => Some(room.moderation.lock().await),
            None => None,
        };
        let head = self.store.heads(&[name.as_str().to_owned()]).await?.first().map(|(_, h)| *h);
        let Some(head) = head else { return Ok(false) };
        let room = name.as_str().to_owned();
        let (meta, members) = self
            .auth
            .db(move |accounts| {
                let meta = accounts.room_metas()?.into_iter().find(|(n, _)| *n == room);
                let members = accounts.memberships_of(Some(&room))?;
                Ok((meta, members))
            })
            .await
            .map_err(|e| StoreError::Task(format!("reading a room's access: {e}")))?;
        let mut access = meta.map(|(_, m)| Access::from_meta(&m)).unwrap_or_default();
        for m in &members {
            access.load(m);
        }
        let room = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Room::new(name.clone(), head, super::unix_ms(), self.metrics.clone()))
                })
                .clone()
        };
        let shut_out = {
            let mut current = room.access();
            // Guest bans and mutes live in memory on the node that made them.
            access.banned_guests = std::mem::take(&mut current.banned_guests);
            access.muted_guests = std::mem::take(&mut current.muted_guests);
            *current = access;
            room.shut_out(&current)
        };
        if !shut_out.is_empty() {
            super::broker::eject(&room, shut_out, "", true);
        }
        Ok(true)
    }

    /// Several nodes: registers every stored room this node does not know yet (a missed
    /// creation notice).
    pub async fn discover_rooms(&self) {
        let Ok(stored) = self.store.rooms().await else { return };
        for r in stored {
            if self.find_room(&r.name).is_none()
                && let Err(err) = self.discover_room(&r.name).await
            {
                tracing::warn!(%err, room = %r.name, "reading a room from the store failed");
            }
        }
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
        who: &Identity,
        conn: &Arc<ConnHandle>,
    ) -> Result<(Arc<Room>, Subscription), HubError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = match rooms.get(name) {
            Some(room) => room.clone(),
            // Direct-message rooms are made by `open_dm` only.
            None if crate::protocol::is_dm_name(name.as_str()) => return Err(Denied::NotFound.into()),
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
        // The access lock is held while subscribing: a ban that lands between the check
        // and the subscription would otherwise miss this connection.
        let access = room.access();
        access.check_join(who)?;
        let sub = room.subscribe_identity(who, conn);
        drop(access);
        Ok((room, sub))
    }

    /// Registers a room made by `create_room` or `open_dm` (its settings already stored).
    /// A public room a join made in the meantime takes the new settings.
    pub(super) fn register_room(&self, name: &RoomName, access: Access) -> Result<Arc<Room>, HubError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = match rooms.get(name) {
            Some(room) => room.clone(),
            None => {
                if rooms.len() >= self.config.max_rooms {
                    return Err(HubError::TooManyRooms);
                }
                let room = Arc::new(Room::new(name.clone(), 0, super::unix_ms(), self.metrics.clone()));
                rooms.insert(name.clone(), room.clone());
                room
            }
        };
        *room.access() = access;
        Ok(room)
    }

    /// Registers a new room with its access, checking the count and the address's
    /// creation rate under the registry lock: `Exists` when the name is taken.
    pub(super) fn reserve_room(
        &self,
        name: &RoomName,
        from: IpAddr,
        access: Access,
    ) -> Result<Arc<Room>, HubError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.contains_key(name) {
            return Err(HubError::Exists);
        }
        if rooms.len() >= self.config.max_rooms {
            return Err(HubError::TooManyRooms);
        }
        self.creation_allowed(from).map_err(HubError::CreationRate)?;
        let room = Arc::new(Room::new(name.clone(), 0, super::unix_ms(), self.metrics.clone()));
        *room.access() = access;
        rooms.insert(name.clone(), room.clone());
        Ok(room)
    }

    /// Takes back a room `reserve_room` registered whose creation failed.
    pub(super) fn forget_room(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.name);
        }
    }

    /// May `who` read `name`'s history? A room that does not exist, and a private room
    /// `who` is not in, are both `not_found`.
    pub fn check_read(&self, name: &RoomName, who: &Identity) -> Result<Arc<Room>, Denied> {
        let room = self.find_room(name).ok_or(Denied::NotFound)?;
        room.access().check_read(who)?;
        Ok(room)
    }

    /// Refuses names a live guest holds now (`nick_taken`): an account signing up or
    /// renaming itself must not take a name from under someone in the chat.
    pub fn check_not_held_by_guest(&self, names: &[Option<&str>]) -> Result<(), super::auth::AuthError> {
        for name in names.iter().flatten() {
            if let Ok(nick) = crate::protocol::Nick::parse(name)
                && self.sessions.guest_holds(&nick.key())
            {
                return Err(super::auth::AuthError::DisplayNameTaken);
            }
        }
        Ok(())
    }

    /// Whether `user` owns any room (every room with a standing is kept in memory).
    pub fn owns_a_room(&self, user: super::store::accounts::UserId) -> bool {
        let rooms: Vec<Arc<Room>> =
            self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        rooms.iter().any(|r| {
            r.access()
                .accounts
                .get(&user)
                .is_some_and(|s| s.role == crate::protocol::RoomRole::Owner && !s.banned)
        })
    }

    /// The `send` allowance of `key` (an account, guest session or guest address).
    pub fn send_bucket(&self, key: &str, scale: u32) -> Arc<Mutex<TokenBucket>> {
        let (rate, burst) = (self.config.msg_rate * scale, self.config.msg_burst * scale);
        self.bucket(key, rate as f64, burst as f64)
    }

    /// The allowance named `key` (`send`'s, or another kind's under its own prefix:
    /// `search:7`, `read:7`), shared by every connection that draws on it; made with
    /// `rate` and `burst` when new.
    pub fn bucket(&self, key: &str, rate: f64, burst: f64) -> Arc<Mutex<TokenBucket>> {
        let mut buckets = self.send_buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(TokenBucket::new(rate, burst))))
            .clone()
    }

    /// Forgets send allowances nobody holds that have refilled.
    pub fn sweep_send_buckets(&self) {
        let full_after = Duration::from_secs_f64(
            (self.config.msg_burst as f64 / self.config.msg_rate.max(1) as f64).max(1.0),
        );
        let now = Instant::now();
        let mut buckets = self.send_buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|_, b| {
            Arc::strong_count(b) > 1
                || now.saturating_duration_since(b.lock().unwrap_or_else(|p| p.into_inner()).last_used())
                    < full_after
        });
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

    /// Every room kept now.
    pub fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// One page of the directory after `cursor`, at most `limit` rooms (1..=200).
    /// Only rooms `viewer` may see are listed.
    pub fn room_page(&self, viewer: &Identity, cursor: Option<&str>, limit: u32) -> RoomPage {
        let limit = limit.clamp(1, crate::protocol::MAX_ROOMS_PAGE) as usize;
        let rooms: Vec<Arc<Room>> =
            self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let after = cursor.and_then(parse_cursor);
        let mut list: Vec<RoomInfo> = rooms
            .iter()
            .filter(|r| r.access().can_see(viewer))
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

    /// Events after `after` up to `upto`, at most `limit` (the newest of them).
    pub async fn events_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<EventPage, HubError> {
        Ok(self.store.events_after(room, after, upto, limit).await?)
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
        // A task of its own, holding the turn until the read ends.
        let read = tokio::spawn(async move {
            let _turn = turn;
            store.before(&room, before, limit).await
        });
        Ok(read.await.map_err(|e| StoreError::Task(e.to_string()))??)
    }

    /// The highest seq the store holds of a room.
    pub async fn stored_head(&self, room: &RoomName) -> Result<Seq, HubError> {
        Ok(self.store.head(room).await?)
    }

    /// The newest `limit` messages before `before`.
    pub async fn messages_before(
        &self,
        room: &RoomName,
        before: Seq,
        limit: usize,
    ) -> Result<Page, HubError> {
        Ok(self.store.before(room, before, limit).await?)
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
