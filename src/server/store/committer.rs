//! Group commit: one writer thread drains every accepted message into as few transactions
//! as the load allows (one sync for many messages), then hands each stored message to the
//! broker for fan-out. A message is never shown to anyone before it is durable.

use super::MessageStore;
use crate::protocol::{ChatMessage, ServerMsg};
use crate::server::{
    broker::Broker,
    metrics::Metrics,
    room::{Room, encode},
    session::Session,
};
use std::{
    sync::{Arc, Weak, atomic::Ordering},
    thread,
    time::Duration,
};
use tokio::sync::mpsc;

/// Most messages in one transaction: bounds commit latency under a flood.
const MAX_BATCH: usize = 1024;
/// Attempts before a failing disk is declared fatal.
const ATTEMPTS: u32 = 5;

/// A message accepted by a room (seq assigned), waiting to be stored.
pub struct Job {
    pub room: Arc<Room>,
    pub msg: ChatMessage,
    /// The sender's session, told where the message was stored so a retry is answered.
    pub session: Weak<Session>,
}

/// Handle for queueing jobs; dropping every handle stops the thread after a final commit.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the writer thread. The queue is unbounded on purpose: what bounds it is the
    /// per-connection rate limit, and a room must never block while holding its lock.
    pub fn start(
        store: Arc<dyn MessageStore>,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
    ) -> (Self, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = thread::Builder::new()
            .name("confab-committer".into())
            .spawn(move || run(rx, store, broker, metrics))
            .expect("spawn committer thread");
        (Committer { tx }, handle)
    }

    /// Queues a job. Called with the room's lock held, which is what keeps seq order.
    pub fn enqueue(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

fn run(
    mut rx: mpsc::UnboundedReceiver<Job>,
    store: Arc<dyn MessageStore>,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
) {
    // The messages and the rest of each job side by side, so the batch is stored without
    // copying a message.
    let mut batch: Vec<ChatMessage> = Vec::with_capacity(MAX_BATCH);
    let mut routes: Vec<(Arc<Room>, Weak<Session>)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(job) = next {
            batch.push(job.msg);
            routes.push((job.room, job.session));
            next = if batch.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
        }
        commit_or_die(&*store, &batch);
        metrics.commit_batches.fetch_add(1, Ordering::Relaxed);
        metrics.messages_stored.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (msg, (room, session)) in batch.drain(..).zip(routes.drain(..)) {
            let seq = msg.seq;
            // Remembered before anyone sees it, so a retry that races the echo is answered
            // with the original rather than waiting for an echo already sent.
            if let Some(session) = session.upgrade() {
                session.remember(&msg.client_id, &room, seq);
            }
            // Encoded once: the same bytes go to every member.
            let frame = encode(&ServerMsg::Message(msg));
            broker.publish(&room, seq, frame);
        }
    }
    tracing::debug!("committer stopped: every queued message is stored");
}

/// Stores a batch, retrying a transient failure. When the disk keeps failing the process
/// stops rather than go on with a gap in the seqs: nothing unstored was ever shown or
/// acknowledged, so clients resend from their outboxes once a healthy server is back.
fn commit_or_die(store: &dyn MessageStore, batch: &[ChatMessage]) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        match store.append(batch) {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(%err, attempt, messages = batch.len(), "storing messages failed");
                thread::sleep(delay);
                delay *= 2;
            }
        }
    }
    tracing::error!("the store keeps failing; stopping so no acknowledged message can be lost");
    std::process::exit(75);
}
