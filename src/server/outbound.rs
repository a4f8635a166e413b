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
use futures::task::AtomicWaker;
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};
use tokio::sync::Notify;

pub type ConnId = u64;

/// Frames in one connection's queue at most (bytes are bounded separately).
pub const QUEUE_FRAMES: usize = 4096;

/// What the connection's queue holds. Room traffic carries its seq so the writer can put a
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
    /// Bytes this item holds, for the connection's byte budget.
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
    /// The session or token the socket signed in with was revoked (sign-out, a password
    /// change, `DELETE /api/sessions/{id}`).
    pub const SIGNED_OUT: CloseReason = CloseReason { code: 4001, reason: "signed out" };
    /// The account's role changed (an admin made it admin or member): reconnect, and the
    /// new connection has the new role.
    pub const ACCOUNT_CHANGED: CloseReason = CloseReason { code: 4002, reason: "account changed" };
    /// The account was deactivated by an admin.
    pub const DEACTIVATED: CloseReason = CloseReason { code: 4001, reason: "account deactivated" };
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

/// `ConnHandle::heard_at` while the connection is handling a frame of the client's: the
/// client counts as heard, it is the server that is not reading.
pub const BUSY: u64 = u64::MAX;

pub struct ConnHandle {
    pub id: ConnId,
    pending: Mutex<Pending>,
    /// The connection's task, woken when `pending` gains items, a ping is asked for, or
    /// the connection is closed. One waker, not a `Notify`: the task polls the queue
    /// itself (see `connection`), and an idle connection keeps no wait-list node.
    task: AtomicWaker,
    /// Every byte queued for this connection and not yet written or dropped: room
    /// traffic, replies, and live frames the writer holds while a join replays. One
    /// budget (`max_bytes`) for all of it.
    queued_bytes: AtomicUsize,
    /// Signalled by the writer whenever it gives bytes back, and by `close`.
    drained: Notify,
    max_bytes: usize,
    /// Set by `close`: the fan-out and the writer check this flag, an atomic load, on
    /// every frame.
    is_closed: AtomicBool,
    close_reason: OnceLock<CloseReason>,
    /// When the client was last heard from, in the hub's milliseconds (`Hub::now_ms`), or
    /// [`BUSY`]. Read by the heartbeat (`heartbeat`), which closes a silent connection.
    heard_at: AtomicU64,
    /// Since when (hub milliseconds, plus one) the socket has refused a write the
    /// connection is waiting to make; 0 while it is not stuck. A client that takes no data
    /// for a whole idle timeout is cut by the heartbeat, even in a quiet room that never
    /// pushes it over its budget.
    stuck_since: AtomicU64,
    /// The heartbeat asks for a ping; the connection sends it between two batches, so a
    /// queue that never empties does not hold it back.
    ping_due: AtomicBool,
}

impl ConnHandle {
    pub fn new(id: ConnId, max_bytes: usize) -> Arc<Self> {
        Arc::new(ConnHandle {
            id,
            pending: Mutex::default(),
            task: AtomicWaker::new(),
            queued_bytes: AtomicUsize::new(0),
            drained: Notify::new(),
            max_bytes,
            is_closed: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            heard_at: AtomicU64::new(0),
            stuck_since: AtomicU64::new(0),
            ping_due: AtomicBool::new(false),
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
        self.task.wake();
        Enqueued::Queued
    }

    /// Queues room traffic without waiting. Returns false (and cuts the connection as a slow
    /// consumer) when it does not fit in the byte or frame budget.
    pub fn push(&self, item: Outbound) -> bool {
        if self.is_closed() {
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

    /// Queues a reply from this connection's own reader (or a marker for the writer),
    /// within the same budget as room traffic. The reader waits until the reply fits with
    /// `headroom` bytes to spare (`Config::reply_limit`): replies never take the room
    /// traffic's last `headroom` bytes, so a client that asks for a lot, or pipelines many
    /// requests, only slows its own requests down and is never cut for them.
    pub async fn reply(&self, item: Outbound, headroom: usize) {
        let bytes = item.bytes();
        if self.wait_for_room(bytes + headroom).await {
            self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
            // The frame bound was checked; the reader is the only one who waits here.
            self.enqueue(item, usize::MAX);
        }
    }

    /// Starts a join: waits until a whole reply's worth (`reserve`, the reply bound) fits
    /// beside `headroom`, takes it, and queues the marker. The replay is then queued with
    /// [`ConnHandle::replay`] without waiting: the live frames held for the room count in
    /// the budget and can only be written behind the replay, so it must never wait for
    /// them. False when the connection closed meanwhile.
    pub async fn begin_join(&self, room: Arc<str>, reserve: usize, headroom: usize) -> bool {
        if !self.wait_for_room(reserve + headroom).await {
            return false;
        }
        self.queued_bytes.fetch_add(reserve, Ordering::AcqRel);
        self.enqueue(Outbound::BeginJoin { room }, usize::MAX);
        true
    }

    /// Queues a join's replay (or its `EndRoom`, when the join failed) in place of the
    /// `reserved` bytes `begin_join` took.
    pub fn replay(&self, item: Outbound, reserved: usize) {
        let bytes = item.bytes();
        if bytes >= reserved {
            self.queued_bytes.fetch_add(bytes - reserved, Ordering::AcqRel);
        } else {
            self.release(reserved - bytes);
        }
        self.enqueue(item, usize::MAX);
    }

    /// Waits until `needed` more bytes fit in the budget (at once when nothing is queued,
    /// so progress is always possible) and the queue has a free slot. False when the
    /// connection closed.
    async fn wait_for_room(&self, needed: usize) -> bool {
        loop {
            // Created before the checks: a `notify_waiters` (a release, a close) after
            // them reaches it.
            let drained = self.drained.notified();
            if self.is_closed() {
                return false;
            }
            let queued = self.queued_bytes.load(Ordering::Acquire);
            let fits = queued == 0 || queued + needed <= self.max_bytes;
            if fits && self.pending().items.len() < QUEUE_FRAMES {
                return true;
            }
            drained.await;
        }
    }

    /// Bytes queued and not yet written or dropped.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Takes everything queued, leaving the queue unallocated; None when it is empty.
    pub fn try_take(&self) -> Option<VecDeque<Outbound>> {
        let mut pending = self.pending();
        if pending.items.is_empty() { None } else { Some(std::mem::take(&mut pending.items)) }
    }

    /// Takes everything queued (the writer's side of the queue), or registers the task to
    /// be woken when there is something; None once the connection is closed. `close`
    /// wakes it too: one wait point for the writer, so a delivery costs it no
    /// cancellation future to register and drop.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<VecDeque<Outbound>>> {
        for registered in [false, true] {
            if self.is_closed() {
                return Poll::Ready(None);
            }
            if let Some(items) = self.try_take() {
                return Poll::Ready(Some(items));
            }
            if registered {
                break;
            }
            // Registered before the second look: a push or a close after the first one
            // wakes this waker.
            self.task.register(cx.waker());
        }
        Poll::Pending
    }

    /// [`ConnHandle::poll_take`] as a future.
    pub async fn take(&self) -> Option<VecDeque<Outbound>> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
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

    /// Called by the writer for bytes it wrote or dropped: gives them back to the budget
    /// and wakes a reader waiting to queue a reply.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.drained.notify_waiters();
        }
    }

    /// Asks the connection to close; the first reason given wins. Wakes the connection's
    /// task, and a reader waiting for budget (which then finds the connection closed).
    pub fn close(&self, reason: CloseReason) {
        let _ = self.close_reason.set(reason);
        self.is_closed.store(true, Ordering::Release);
        self.task.wake();
        self.drained.notify_waiters();
    }

    /// Whether `close` was called; if not, the task is woken when it is.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.is_closed()
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().copied()
    }

    /// The client was heard from at `now` (hub milliseconds), or is being served ([`BUSY`]).
    pub fn heard(&self, now: u64) {
        self.heard_at.store(now, Ordering::Relaxed);
    }

    pub fn heard_at(&self) -> u64 {
        self.heard_at.load(Ordering::Relaxed)
    }

    /// The socket refused a write at `now` (hub milliseconds); kept from the first refusal
    /// until [`ConnHandle::unstuck`].
    pub fn stuck(&self, now: u64) {
        let _ = self.stuck_since.compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The socket took what was waiting.
    pub fn unstuck(&self) {
        self.stuck_since.store(0, Ordering::Relaxed);
    }

    /// Since when the socket has refused the write the connection waits to make.
    pub fn stuck_since(&self) -> Option<u64> {
        match self.stuck_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since - 1),
        }
    }

    /// Asks the connection to send a ping (the heartbeat's).
    pub fn ask_ping(&self) {
        self.ping_due.store(true, Ordering::Relaxed);
        self.task.wake();
    }

    /// Whether a ping was asked for since the last call.
    pub fn take_ping(&self) -> bool {
        self.ping_due.load(Ordering::Relaxed) && self.ping_due.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ordering::Streams;
    use std::time::Duration;

    fn frame(bytes: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(bytes))
    }

    fn live(seq: Seq, bytes: usize) -> Outbound {
        Outbound::Room { room: Arc::from("r"), seq, frame: frame(bytes) }
    }

    /// Live frames the writer holds while a join replays are still queued bytes: the
    /// budget covers them until they are written or dropped.
    #[test]
    fn frames_held_during_a_join_count_until_written() {
        let conn = ConnHandle::new(1, 10_000);
        let mut streams = Streams::default();
        let mut out = VecDeque::new();
        assert!(conn.push(Outbound::BeginJoin { room: Arc::from("r") }));
        for seq in 1..=4 {
            assert!(conn.push(live(seq, 2_000)));
        }
        // The writer takes everything; nothing can be written before the replay.
        for item in conn.try_take().unwrap() {
            let dropped = streams.order(item, &mut out);
            conn.release(dropped);
        }
        assert!(out.is_empty());
        assert_eq!(conn.queued_bytes(), 8_000, "held frames still count");
        // So the next live frames overflow the budget: the connection is cut, it does not
        // grow a second, unbounded queue behind the replay.
        assert!(!conn.push(live(5, 2_001)));
        assert_eq!(conn.close_reason(), Some(CloseReason::SLOW_CONSUMER));
    }

    /// The replay of a join is queued even when the frames held for that room fill the
    /// budget: they can only be written behind it.
    #[tokio::test]
    async fn a_replay_is_never_stuck_behind_the_frames_held_for_it() {
        let conn = ConnHandle::new(1, 10_000);
        let mut streams = Streams::default();
        let mut out = VecDeque::new();
        assert!(conn.begin_join(Arc::from("r"), 3_000, 0).await);
        assert!(conn.push(live(1, 6_000)));
        for item in conn.try_take().unwrap() {
            conn.release(streams.order(item, &mut out));
        }
        assert_eq!(conn.queued_bytes(), 9_000, "the reservation and the held frame");
        let replay = Outbound::Replay { room: Arc::from("r"), frames: vec![frame(2_000)], upto: 0 };
        conn.replay(replay, 3_000);
        assert_eq!(conn.queued_bytes(), 8_000, "the replay in place of its reservation");
        for item in conn.try_take().unwrap() {
            conn.release(streams.order(item, &mut out));
        }
        assert_eq!(out.len(), 2, "the replay, then the held frame");
    }

    #[tokio::test]
    async fn a_reply_waits_until_it_fits_in_the_same_budget() {
        let conn = ConnHandle::new(1, 10_000);
        assert!(conn.push(live(1, 9_000)));
        let waiting = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.reply(Outbound::Frame(frame(5_000)), 0).await })
        };
        // The reply does not fit behind 9,000 queued bytes: it waits.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(conn.queued_bytes(), 9_000);
        // The writer writes the room frame and gives its bytes back: the reply goes in.
        let taken = conn.try_take().unwrap();
        conn.release(taken.iter().map(Outbound::bytes).sum());
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(conn.queued_bytes(), 5_000);
        // Room traffic is now measured against everything queued, replies included.
        assert!(!conn.push(live(2, 5_001)));
    }

    /// The writer waits in one place, `poll_take` (here as `take`): a close wakes it there,
    /// and from then on it says the connection is closed (what is still queued is for
    /// `shut`).
    #[tokio::test]
    async fn a_close_wakes_the_writer_waiting_for_items() {
        let conn = ConnHandle::new(1, 10_000);
        let waiting = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.take().await })
        };
        tokio::task::yield_now().await;
        assert!(conn.push(live(1, 10)));
        conn.close(CloseReason::IDLE);
        // Whichever the writer saw first, the items or the close, it is woken.
        let first = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(conn.take().await.is_none(), "closed: nothing more to take");
        assert!(!conn.push(live(2, 10)), "nothing is queued after the close");
        // What the writer did not take before the close is left for its closing flush.
        let left = conn.shut();
        assert_eq!(first.map_or(0, |items| items.len()) + left.len(), 1, "the one item, once");
    }

    /// Replies keep `headroom` free for room traffic: pipelined requests wait, they do not
    /// fill the budget and get their own connection cut.
    #[tokio::test]
    async fn replies_leave_headroom_for_room_traffic() {
        let conn = ConnHandle::new(1, 10_000);
        conn.reply(Outbound::Frame(frame(4_000)), 3_000).await;
        let second = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.reply(Outbound::Frame(frame(4_000)), 3_000).await })
        };
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "4,000 + 4,000 + 3,000 of headroom is over 10,000");
        // Live traffic still fits in the headroom.
        assert!(conn.push(live(1, 3_000)));
        assert!(conn.close_reason().is_none());
        let taken = conn.try_take().unwrap();
        conn.release(taken.iter().map(Outbound::bytes).sum());
        tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
    }

    /// The worst message a client can make: 4000 control characters, each escaped to six
    /// bytes of JSON. The budget is counted in encoded bytes, so it still bounds.
    #[test]
    fn the_budget_counts_encoded_bytes() {
        use crate::protocol::{ChatMessage, ServerMsg};
        let msg = ChatMessage {
            room: "r".into(),
            seq: 1,
            nick: "n".into(),
            text: "\u{1}".repeat(4000),
            ts: 0,
            client_id: "c".into(),
            ..Default::default()
        };
        let encoded = crate::server::room::encode(&ServerMsg::Message(msg));
        assert!(encoded.len() > 24_000, "{}", encoded.len());
        let conn = ConnHandle::new(1, 100_000);
        let mut queued = 0;
        let mut seq = 0;
        while conn.push(Outbound::Room { room: Arc::from("r"), seq, frame: encoded.clone() }) {
            seq += 1;
            queued += encoded.len();
        }
        assert!(queued <= 100_000 && conn.queued_bytes() >= queued);
        assert_eq!(seq, 100_000 / encoded.len() as u64);
    }
}
