//! Group commit: one writer thread drains every accepted message into as few transactions
//! as the load allows (one sync for many messages), then hands each stored message to the
//! broker for fan-out. A message is never shown to anyone before it is durable.
//!
//! The queue is bounded: a sender waits for a place (`Committer::permit`) before its room
//! assigns a seq, so a store that falls behind slows the senders down instead of growing
//! memory. A batch the store keeps refusing is abandoned, not fatal: each sender gets
//! `error internal` with its `client_id` (which stays free, so the retry is a new attempt),
//! and the rooms hand the abandoned seqs out again, so no gap is ever stored.

use super::MessageStore;
use crate::protocol::{ErrorCode, RoomEvent, ServerMsg};
use crate::server::{
    broker::Broker,
    metrics::Metrics,
    outbound::{ConnHandle, Outbound},
    room::{Room, encode},
    session::Session,
};
use std::{
    sync::{Arc, Weak, atomic::Ordering},
    thread,
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Most messages in one transaction: bounds commit latency under a flood.
const MAX_BATCH: usize = 1024;
/// Attempts at one batch before it is abandoned (transient errors such as a busy lock).
const ATTEMPTS: u32 = 3;

/// An event accepted by a room (seq assigned), waiting to be stored.
pub struct Job {
    pub room: Arc<Room>,
    pub event: RoomEvent,
    /// The room's epoch at acceptance: a job from before a rewind is abandoned.
    pub epoch: u64,
    /// The sender's session, told where the message was stored so a retry is answered.
    pub session: Weak<Session>,
    /// The sender's connection, told when the message could not be stored.
    pub sender: Weak<ConnHandle>,
    /// The job's place in the bounded queue, given back once it is stored or abandoned.
    pub permit: OwnedSemaphorePermit,
    /// Told the outcome (an HTTP post waits for it): the stored message, or Err when it
    /// was abandoned.
    pub done: Option<oneshot::Sender<Result<RoomEvent, ()>>>,
}

/// What the writer thread receives.
enum Cmd {
    Store(Box<Job>),
    /// Store what was queued before this, then stop (and let go of the store).
    Stop,
}

/// Handle for queueing jobs. The thread stops after `stop` (or once every handle is
/// dropped), after a final commit.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Cmd>,
    places: Arc<Semaphore>,
}

impl Committer {
    /// Starts the writer thread with room for `capacity` messages waiting to be stored.
    pub fn start(
        store: Arc<dyn MessageStore>,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> std::io::Result<(Self, thread::JoinHandle<()>)> {
        // The channel itself need not be bounded: nothing enters it without a place.
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = thread::Builder::new().name("confab-committer".into()).spawn({
            // The store is async: the thread waits on the runtime the server runs on.
            let runtime = tokio::runtime::Handle::current();
            move || run(rx, store, broker, metrics, runtime)
        })?;
        Ok((Committer { tx, places: Arc::new(Semaphore::new(capacity.max(1))) }, handle))
    }

    /// Waits for a place in the queue (backpressure: a sender waits while the store is
    /// `capacity` messages behind).
    pub async fn place(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().acquire_owned().await.ok()
    }

    /// Places free now (for tests and metrics).
    pub fn free_places(&self) -> usize {
        self.places.available_permits()
    }

    /// Queues a job. Called with the room's lock held, which is what keeps seq order.
    /// Gives the job back when the committer has stopped.
    pub fn enqueue(&self, job: Job) -> Result<(), Box<Job>> {
        self.tx.send(Cmd::Store(Box::new(job))).map_err(|e| match e.0 {
            Cmd::Store(job) => job,
            Cmd::Stop => unreachable!("only jobs are sent here"),
        })
    }

    /// Asks the thread to store what is queued and stop; joining it then waits for the
    /// last commit. Messages enqueued later are refused (their senders hear `internal`).
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
        // Senders waiting for a place hear that the server is stopping.
        self.places.close();
    }
}

/// Where a message goes once stored, beside the message itself so a batch is stored
/// without copying it.
struct Route {
    room: Arc<Room>,
    session: Weak<Session>,
    sender: Weak<ConnHandle>,
    done: Option<oneshot::Sender<Result<RoomEvent, ()>>>,
    _permit: OwnedSemaphorePermit,
}

fn run(
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    store: Arc<dyn MessageStore>,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
) {
    let mut batch: Vec<RoomEvent> = Vec::with_capacity(MAX_BATCH);
    let mut routes: Vec<Route> = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    loop {
        // Once asked to stop, the queue is closed (so nothing can slip in after the last
        // look) and only what is already in it is taken.
        let first = if stopping {
            rx.close();
            rx.try_recv().ok()
        } else {
            rx.blocking_recv()
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Cmd::Stop => stopping = true,
                Cmd::Store(job) => {
                    let job = *job;
                    let route = Route {
                        room: job.room,
                        session: job.session,
                        sender: job.sender,
                        done: job.done,
                        _permit: job.permit,
                    };
                    if route.room.epoch() == job.epoch {
                        batch.push(job.event);
                        routes.push(route);
                    } else {
                        // Accepted before a failed batch of its room: its seq was handed out again.
                        let mut route = route;
                        abandon(&job.event, &mut route, &metrics);
                    }
                }
            }
            next = if batch.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
        }
        if batch.is_empty() {
            continue;
        }
        let Some(retries) = commit(&*store, &mut batch, &runtime) else {
            // Rewound before the senders hear of it, so a retry gets a seq of the new epoch.
            // A store that numbers events itself left no seq handed out to take back.
            if !store.assigns_seqs() {
                rewind(&*store, &routes, &runtime);
            }
            for (msg, route) in batch.iter().zip(routes.iter_mut()) {
                abandon(msg, route, &metrics);
            }
            metrics.store_failures.fetch_add(1, Ordering::Relaxed);
            batch.clear();
            routes.clear();
            continue;
        };
        metrics.commit_batches.fetch_add(1, Ordering::Relaxed);
        metrics.messages_stored.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (i, (event, mut route)) in batch.drain(..).zip(routes.drain(..)).enumerate() {
            let seq = event.seq();
            let retry = retries.contains(&i);
            if let Some(done) = route.done.take() {
                let _ = done.send(Ok(event.clone()));
            }
            // Remembered before anyone sees it, so a retry that races the echo is answered
            // with the original rather than waiting for an echo already sent.
            if let Some(session) = route.session.upgrade()
                && !event.client_id().is_empty()
            {
                session.remember(event.client_id(), &route.room, seq);
            }
            // Only a new message makes a room active (the directory's order).
            let ts = match &event {
                RoomEvent::Message(m) => m.ts,
                _ => 0,
            };
            // Encoded once: the same bytes go to every member.
            let frame = encode(&event.into_server_msg());
            if retry && seq <= route.room.head() {
                // A retry (through another node) of what everyone here already has: the
                // sender is answered with the original, as a retry its session knew is.
                if let Some(sender) = route.sender.upgrade() {
                    sender.push(Outbound::Frame(frame));
                }
                continue;
            }
            broker.publish(&route.room, seq, ts, frame);
        }
    }
    tracing::debug!("committer stopped: every queued message is stored");
}

/// Stores a batch, retrying a transient failure a few times. Each attempt starts from
/// the events as accepted: a failed attempt may have rewritten edits and reactions (the
/// store's no-ops) before rolling back, so those are kept aside first. Messages and
/// deletions are never rewritten, and are not copied.
fn commit(
    store: &dyn MessageStore,
    batch: &mut [RoomEvent],
    runtime: &tokio::runtime::Handle,
) -> Option<Vec<usize>> {
    let mut delay = Duration::from_millis(20);
    let rewritable: Vec<(usize, RoomEvent)> = batch
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, RoomEvent::Edit(_) | RoomEvent::React(_)))
        .map(|(i, e)| (i, e.clone()))
        .collect();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            for (i, e) in &rewritable {
                batch[*i] = e.clone();
            }
        }
        match runtime.block_on(store.append(batch)) {
            Ok(retries) => return Some(retries),
            Err(err) => {
                tracing::error!(%err, attempt, messages = batch.len(), "storing messages failed");
                if attempt < ATTEMPTS {
                    thread::sleep(delay);
                    delay *= 4;
                }
            }
        }
    }
    None
}

/// Tells the sender its event was not stored; the `client_id` is freed for the retry.
fn abandon(event: &RoomEvent, route: &mut Route, metrics: &Metrics) {
    if let Some(done) = route.done.take() {
        let _ = done.send(Err(()));
    }
    if let Some(session) = route.session.upgrade() {
        session.forget(event.client_id());
    }
    metrics.error(ErrorCode::Internal);
    if let Some(sender) = route.sender.upgrade() {
        let error = ServerMsg::Error {
            code: ErrorCode::Internal,
            message: "the change could not be stored; send it again".into(),
            client_id: Some(event.client_id().to_owned()).filter(|c| !c.is_empty()),
            retry_after_ms: None,
            reference: None,
        };
        sender.push(Outbound::Frame(encode(&error)));
    }
}

/// Rewinds each room of a failed batch to what the store holds.
fn rewind(store: &dyn MessageStore, routes: &[Route], runtime: &tokio::runtime::Handle) {
    let mut done: Vec<&Arc<Room>> = Vec::new();
    for route in routes {
        if done.iter().any(|r| Arc::ptr_eq(r, &route.room)) {
            continue;
        }
        done.push(&route.room);
        let stored = runtime.block_on(store.head(&route.room.name)).unwrap_or_else(|err| {
            tracing::error!(%err, room = %route.room.name, "reading the stored head failed");
            route.room.head()
        });
        route.room.rewind(stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatMessage, RoomName, Seq};
    use crate::server::{
        broker::LocalBroker,
        store::{EventPage, Page, SearchPage, SearchQuery, StoreError, StoredRoom, Target, Unread},
    };
    use std::sync::{Condvar, Mutex};

    /// A store whose `append` waits until released, and can be told to fail.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
        fail: Mutex<bool>,
        stored: Mutex<Vec<Seq>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    #[async_trait::async_trait]
    impl MessageStore for Gate {
        async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
            Ok(Vec::new())
        }
        async fn head(&self, _: &RoomName) -> Result<Seq, StoreError> {
            Ok(self.stored.lock().unwrap().last().copied().unwrap_or(0))
        }
        async fn heads(&self, _: &[String]) -> Result<Vec<(String, Seq)>, StoreError> {
            Ok(Vec::new())
        }
        async fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            if *self.fail.lock().unwrap() {
                return Err(StoreError::Task("disk full".into()));
            }
            self.stored.lock().unwrap().extend(batch.iter().map(|m| m.seq()));
            Ok(Vec::new())
        }
        async fn events_after(
            &self,
            _: &RoomName,
            _: Seq,
            _: Seq,
            _: usize,
        ) -> Result<EventPage, StoreError> {
            Ok(EventPage::default())
        }
        async fn before(&self, _: &RoomName, _: Seq, _: usize) -> Result<Page, StoreError> {
            Ok(Page::default())
        }
        async fn target(&self, _: &RoomName, _: Seq, _: &str) -> Result<Option<Target>, StoreError> {
            Ok(None)
        }
        async fn mark_read(&self, _: &str, _: &RoomName, seq: Seq) -> Result<Seq, StoreError> {
            Ok(seq)
        }
        async fn unread(
            &self,
            _: &str,
            _: Option<&str>,
            _: &[String],
        ) -> Result<Vec<(String, Unread)>, StoreError> {
            Ok(Vec::new())
        }
        async fn search(&self, _: &SearchQuery) -> Result<SearchPage, StoreError> {
            Ok(SearchPage::default())
        }
    }

    fn message(seq: Seq) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            nick: "n".into(),
            text: "t".into(),
            ts: 0,
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    async fn send(committer: &Committer, room: &Arc<Room>, sender: &Arc<ConnHandle>) {
        let permit = committer.place().await.unwrap();
        room.accept(
            |seq| RoomEvent::Message(message(seq)),
            |event, epoch| {
                committer.enqueue(Job {
                    room: room.clone(),
                    event,
                    epoch,
                    session: Weak::new(),
                    sender: Arc::downgrade(sender),
                    permit,
                    done: None,
                })
            },
        )
        .map_err(|_| ())
        .unwrap();
    }

    #[tokio::test]
    async fn senders_wait_while_the_store_is_behind() {
        let gate = Arc::new(Gate::default());
        let (committer, thread) =
            Committer::start(gate.clone(), Arc::new(LocalBroker), Arc::default(), 3).unwrap();
        let room = Arc::new(Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default()));
        let sender = ConnHandle::new(1, 1 << 20);
        for _ in 0..3 {
            send(&committer, &room, &sender).await;
        }
        assert_eq!(committer.free_places(), 0);
        // A fourth sender waits for a place: the queue does not grow.
        let fourth = tokio::time::timeout(Duration::from_millis(50), committer.place()).await;
        assert!(fourth.is_err(), "the queue is bounded");
        gate.open();
        send(&committer, &room, &sender).await;
        drop(committer);
        tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
        assert_eq!(*gate.stored.lock().unwrap(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_failed_batch_reaches_its_senders_and_leaves_no_gap() {
        let gate = Arc::new(Gate::default());
        *gate.fail.lock().unwrap() = true;
        let metrics: Arc<Metrics> = Arc::default();
        let (committer, thread) =
            Committer::start(gate.clone(), Arc::new(LocalBroker), metrics.clone(), 16).unwrap();
        let room = Arc::new(Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default()));
        let sender = ConnHandle::new(1, 1 << 20);
        send(&committer, &room, &sender).await;
        send(&committer, &room, &sender).await;
        gate.open();
        // Both senders hear `internal` with their client_id, and nothing closed.
        let mut errors = Vec::new();
        while errors.len() < 2 {
            let items = tokio::time::timeout(Duration::from_secs(5), sender.take())
                .await
                .unwrap()
                .expect("the connection stays open");
            for item in items {
                if let Outbound::Frame(f) = item {
                    errors.push(serde_json::from_str::<ServerMsg>(&f).unwrap());
                }
            }
        }
        for (e, id) in errors.iter().zip(["c1", "c2"]) {
            assert!(
                matches!(e, ServerMsg::Error { code: ErrorCode::Internal, client_id: Some(c), .. } if c == id),
                "{e:?}"
            );
        }
        assert!(sender.close_reason().is_none());
        // The store is back: the next message gets seq 1 again, so no gap is stored.
        *gate.fail.lock().unwrap() = false;
        send(&committer, &room, &sender).await;
        drop(committer);
        tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
        assert_eq!(*gate.stored.lock().unwrap(), vec![1]);
        assert!(metrics.store_failures.load(Ordering::Relaxed) >= 1);
    }
}
