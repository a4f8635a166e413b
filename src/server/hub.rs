//! The hub: the room registry, sessions, the store and the committer, shared by every
//! connection and HTTP handler.
//!
//! The registry lock is taken on join and on room listings, never per message: a
//! connection keeps an `Arc<Room>` for each room it joined.

use super::{
    broker::{Broker, LocalBroker},
    config::Config,
    metrics::{Gauges, Metrics},
    outbound::ConnId,
    room::Room,
    session::Sessions,
    store::{MessageStore, Page, StoreError, committer::Committer},
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
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the server holds its maximum number of rooms")]
    TooManyRooms,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::TooManyRooms => ErrorCode::TooManyRooms,
            HubError::Store(_) => ErrorCode::Internal,
        }
    }
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
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
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
        let (committer, thread) = Committer::start(store.clone(), broker, metrics.clone());
        let rooms = store
            .rooms()?
            .into_iter()
            .map(|(name, head)| (name.clone(), Arc::new(Room::new(name, head, metrics.clone()))))
            .collect();
        let hub = Hub {
            sessions: Sessions::new(config.session_grace()),
            config: Arc::new(config),
            store,
            committer,
            metrics,
            per_ip: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            rooms: Mutex::new(rooms),
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

    /// The room, created (and recorded in the store) on first use.
    pub async fn room(&self, name: &RoomName) -> Result<Arc<Room>, HubError> {
        if let Some(room) = self.find_room(name) {
            return Ok(room);
        }
        if self.room_count() >= self.config.max_rooms {
            return Err(HubError::TooManyRooms);
        }
        let store = self.store.clone();
        let created = name.clone();
        let head = blocking(move || {
            store.create_room(&created)?;
            store.head(&created)
        })
        .await?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        // Another connection may have created it meanwhile: keep theirs.
        Ok(rooms
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Room::new(name.clone(), head, self.metrics.clone())))
            .clone())
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every room, busiest first, then by name.
    pub fn room_list(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> =
            self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut list: Vec<RoomInfo> = rooms.iter().map(|r| r.info()).collect();
        list.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.name.cmp(&b.name)));
        list
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
