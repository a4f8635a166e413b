//! A connection's outbound side as the rest of the server sees it: a bounded queue of
//! already-serialised frames, and a way to cut the connection.
//!
//! Rooms push into the queue without ever waiting: a client that does not read fills its
//! own queue and is cut as a slow consumer, and nobody else notices.
//!
//! The queue is a `VecDeque` the writer takes whole: an idle connection's queue holds no
//! allocation at all (a channel would keep a block of slots per connection, about 2 KB).

use crate::protocol::Seq;
use axum::extract::ws::Utf8Bytes;
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub type ConnId = u64;

/// Frames in one connection's queue at most (bytes are bounded separately).
pub const QUEUE_FRAMES: usize = 4096;

/// What the writer task receives. Room traffic carries its seq so the writer can put a
/// join's replay and the live stream in order and drop what both contain.
#[derive(Debug)]
pub enum Outbound {
    /// A reply or an ephemeral event (presence, typing): written as is.
    Frame(Utf8Bytes),
    /// A stored room message from the live stream.
    Room { room: Arc<str>, seq: Seq, frame: Utf8Bytes },
    /// A room's ephemeral event (presence, typing): held like live messages while the join
    /// replays (so it never precedes `joined`), dropped once the room is left.
    RoomEvent { room: Arc<str>, frame: Utf8Bytes },
    /// Sent before subscribing to a room: hold its live messages until the replay arrives.
    BeginJoin { room: Arc<str> },
    /// `joined` plus the replayed history, covering every seq up to `upto`.
    Replay { room: Arc<str>, frames: Vec<Utf8Bytes>, upto: Seq },
    /// The connection left the room: drop its messages still queued.
    EndRoom { room: Arc<str> },
}

impl Outbound {
    /// Items the connection's own reader queued (as opposed to room traffic).
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            Outbound::Frame(_)
                | Outbound::Replay { .. }
                | Outbound::BeginJoin { .. }
                | Outbound::EndRoom { .. }
        )
    }

    /// Bytes this item holds, for the queue's byte budget.
    pub fn bytes(&self) -> usize {
        match self {
            Outbound::Frame(f) | Outbound::Room { frame: f, .. } | Outbound::RoomEvent { frame: f, .. } => {
                f.len()
            }
            Outbound::Replay { frames, .. } => frames.iter().map(|f| f.len()).sum(),
            Outbound::BeginJoin { .. } | Outbound::EndRoom { .. } => 0,
        }
    }
}

/// Bytes a batch taken off the queue holds, by budget.
#[derive(Debug, Default, Clone, Copy)]
pub struct Taken {
    room: usize,
    replies: usize,
}

impl Taken {
    pub fn of(items: &VecDeque<Outbound>) -> Self {
        items.iter().fold(Taken::default(), |mut t, item| {
            if item.is_reply() {
                t.replies += item.bytes();
            } else {
                t.room += item.bytes();
            }
            t
        })
    }
}

/// Why the server closed a connection: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const GOING_AWAY: CloseReason = CloseReason { code: 1001, reason: "server shutting down" };
    pub const TOO_BIG: CloseReason = CloseReason { code: 1009, reason: "frame too large" };
    pub const SLOW_CONSUMER: CloseReason = CloseReason { code: 4008, reason: "slow consumer" };
    pub const IDLE: CloseReason = CloseReason { code: 4000, reason: "heartbeat timeout" };
    pub const RATE_ABUSE: CloseReason = CloseReason { code: 1008, reason: "rate limit exceeded" };
}

enum Enqueued {
    Queued,
    Full,
    Shut,
}

/// Items waiting for the writer.
#[derive(Default)]
struct Pending {
    items: VecDeque<Outbound>,
    /// The writer has stopped: nothing more is accepted.
    shut: bool,
}

pub struct ConnHandle {
    pub id: ConnId,
    pending: Mutex<Pending>,
    /// Wakes the writer when `pending` gains items (a stored permit if it is not waiting).
    ready: Notify,
    /// Room traffic queued and not yet taken by the writer: the slow-consumer budget.
    queued_bytes: AtomicUsize,
    /// Replies to this connection's own requests queued: bounded by making the reader wait.
    reply_bytes: AtomicUsize,
    /// Signalled by the writer whenever it takes items off the queue.
    drained: Notify,
    max_bytes: usize,
    closed: CancellationToken,
    close_reason: OnceLock<CloseReason>,
}

impl ConnHandle {
    pub fn new(id: ConnId, max_bytes: usize) -> Arc<Self> {
        Arc::new(ConnHandle {
            id,
            pending: Mutex::default(),
            ready: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            reply_bytes: AtomicUsize::new(0),
            drained: Notify::new(),
            max_bytes,
            closed: CancellationToken::new(),
            close_reason: OnceLock::new(),
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends to the queue and wakes the writer, unless the writer has stopped or the
    /// queue already holds `max_frames` items.
    fn enqueue(&self, item: Outbound, max_frames: usize) -> Enqueued {
        {
            let mut pending = self.pending();
            if pending.shut {
                return Enqueued::Shut;
            }
            if pending.items.len() >= max_frames {
                return Enqueued::Full;
            }
            pending.items.push_back(item);
        }
        self.ready.notify_one();
        Enqueued::Queued
    }

    /// Queues room traffic without waiting. Returns false (and cuts the connection as a slow
    /// consumer) when the queue is over its byte or frame budget.
    pub fn push(&self, item: Outbound) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let bytes = item.bytes();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.max_bytes {
            self.close(CloseReason::SLOW_CONSUMER);
            return false;
        }
        match self.enqueue(item, QUEUE_FRAMES) {
            Enqueued::Queued => true,
            Enqueued::Full => {
                self.close(CloseReason::SLOW_CONSUMER);
                false
            }
            Enqueued::Shut => false,
        }
    }

    /// Queues a reply from this connection's own reader (or a marker for the writer). The
    /// reader waits while earlier replies exceed the budget: a client that asks for more
    /// than it reads only slows itself down. Replies are not counted against the room
    /// traffic budget, so a large join replay never makes an honest client look slow.
    pub async fn reply(&self, item: Outbound) {
        loop {
            let drained = self.drained.notified();
            let room_for_it = self.reply_bytes.load(Ordering::Acquire) <= self.max_bytes
                && self.pending().items.len() < QUEUE_FRAMES;
            if room_for_it {
                break;
            }
            tokio::select! {
                _ = drained => {}
                _ = self.closed.cancelled() => return,
            }
        }
        if self.closed.is_cancelled() {
            return;
        }
        self.reply_bytes.fetch_add(item.bytes(), Ordering::AcqRel);
        // The frame bound was checked above; the reader is the only one who waits here.
        self.enqueue(item, usize::MAX);
    }

    /// Takes everything queued, leaving the queue unallocated; None when it is empty.
    pub fn try_take(&self) -> Option<VecDeque<Outbound>> {
        let mut pending = self.pending();
        if pending.items.is_empty() { None } else { Some(std::mem::take(&mut pending.items)) }
    }

    /// Waits for queued items and takes them all (the writer's side of the queue).
    pub async fn take(&self) -> VecDeque<Outbound> {
        loop {
            if let Some(items) = self.try_take() {
                return items;
            }
            self.ready.notified().await;
        }
    }

    /// Stops accepting items and takes what is left (the writer, as it finishes). A
    /// reader waiting for budget is woken (and finds the connection closed).
    pub fn shut(&self) -> VecDeque<Outbound> {
        let left = {
            let mut pending = self.pending();
            pending.shut = true;
            std::mem::take(&mut pending.items)
        };
        self.drained.notify_waiters();
        left
    }

    /// Called by the writer once a batch it took is written: gives its bytes back to the
    /// budgets and wakes a reader waiting to queue a reply.
    pub fn release(&self, taken: Taken) {
        self.queued_bytes.fetch_sub(taken.room, Ordering::AcqRel);
        self.reply_bytes.fetch_sub(taken.replies, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.close_reason.set(reason);
        self.closed.cancel();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().copied()
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}
