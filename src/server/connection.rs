//! One WebSocket connection, as one task: it reads the client's frames and hands them to
//! the request handlers (`handlers::Reader`), and it drains the connection's outbound
//! queue into the socket, in per-room order (see `ordering`).
//!
//! One task, not a reader and a writer: an idle connection is one task waiting on its
//! socket and its queue, and nothing else. Its state is this module's `Connection`, polled
//! by hand, so no generated future keeps room for states it is not in; it keeps no timer
//! (the `heartbeat` pings it, and cuts it when it falls silent or its socket stops taking
//! data) and no cancellation future (a close wakes it through its queue). A frame being
//! handled is a boxed future the connection polls beside its writing, so a handler that
//! waits for room in the queue is never waiting for itself.
//!
//! Closing is done so the client learns why: what the socket already holds goes first,
//! then the close frame, and the connection waits (a while) for it to be written; it keeps
//! reading, and discarding, until the client answers the close or the patience runs out,
//! so the socket is never dropped with unread input (which would make the kernel send a
//! reset, and the client lose the close frame and whatever it had not yet read).

use super::{
    auth::Principal,
    handlers::Reader,
    hub::Hub,
    ordering::Streams,
    outbound::{BUSY, CloseReason, ConnHandle},
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{Sink, Stream};
use std::{
    collections::VecDeque,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, ready},
    time::Duration,
};

/// Client frames read in one poll at most, and batches written: then the task lets the
/// others run (tokio's own budget usually says so first).
const FRAMES_PER_POLL: usize = 32;
const BATCHES_PER_POLL: usize = 16;

/// How long a close may take, by reason: a slow consumer is given time to read what the
/// socket holds before the close frame; at shutdown the whole server has five seconds.
fn close_patience(reason: CloseReason) -> Duration {
    match reason {
        CloseReason::SLOW_CONSUMER => Duration::from_secs(10),
        CloseReason::GOING_AWAY => Duration::from_secs(1),
        _ => Duration::from_secs(3),
    }
}

/// Starts a connection: registers it with the heartbeat and returns its task, which runs
/// it to its end.
///
/// Not an `async fn`: a future keeps room for its arguments for as long as it lives,
/// even once they are moved out, and an idle connection would carry a second `WebSocket`
/// (and sign-in) that way.
pub fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    peer: IpAddr,
    principal: Option<Box<Principal>>,
) -> impl Future<Output = ()> + Send + 'static {
    let conn = ConnHandle::new(hub.next_conn_id(), hub.config.outbound_queue_bytes);
    hub.metrics.connections.fetch_add(1, Ordering::Relaxed);
    hub.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    hub.open_conn(&conn);
    let reader = Box::new(Reader::new(hub.clone(), conn.clone(), peer, principal));
    run(Connection {
        socket,
        hub,
        conn,
        reader: ReaderState::Idle(reader),
        streams: Streams::default(),
        out: VecDeque::new(),
        writing: 0,
        unflushed: false,
        ping: false,
        stuck: false,
        input_done: false,
    })
}

/// The connection's task. Not an `async fn`: one keeps a second copy of an argument bound
/// with `mut`; the block uses the one it captured (`the_task_holds_the_connection_once`).
#[allow(clippy::manual_async_fn)]
fn run(mut connection: Connection) -> impl Future<Output = ()> + Send {
    async move {
        let end = (&mut connection).await;
        // Boxed: the close sequence's state (its deadlines, the close frame) is needed only
        // at the end, and unboxed it would make every idle connection's task as much larger.
        Box::pin(connection.finish(end)).await;
    }
}

/// A frame's handling: the reader's state, lent to the handler until it is done.
type Handling = Pin<Box<dyn Future<Output = Box<Reader>> + Send>>;

enum ReaderState {
    /// Waiting for the client's next frame.
    Idle(Box<Reader>),
    /// Handling a frame; the next one is not read until it is done.
    Busy(Handling),
    /// Only while moving from one to the other.
    Moving,
}

/// Why the connection's live part ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed, or its socket ended: there is nothing more to read.
    PeerClosed,
    /// `ConnHandle::close` was called (a limit, the heartbeat, a kick, shutdown).
    Closed,
    /// The socket refused a write: nothing more can be written.
    WriteFailed,
}

struct Connection {
    socket: WebSocket,
    hub: Arc<Hub>,
    conn: Arc<ConnHandle>,
    reader: ReaderState,
    streams: Streams,
    /// Frames ordered and not yet handed to the socket. Allocated per batch and dropped
    /// after it: an idle connection should cost as little as possible.
    out: VecDeque<Utf8Bytes>,
    /// Bytes of the batch being written: given back to the budget once it is flushed.
    writing: usize,
    /// Frames handed to the socket since its last flush.
    unflushed: bool,
    /// A ping the heartbeat asked for, not yet handed to the socket.
    ping: bool,
    /// The socket refused a write and the heartbeat was told (`ConnHandle::stuck`).
    stuck: bool,
    /// The client's close arrived, or its input ended: nothing more to read.
    input_done: bool,
}

impl Future for Connection {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if let Poll::Ready(end) = this.poll_read(cx) {
            return Poll::Ready(end);
        }
        this.poll_write(cx)
    }
}

impl Connection {
    /// Reads and handles the client's frames, one at a time.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..FRAMES_PER_POLL {
            if let ReaderState::Busy(handling) = &mut self.reader {
                let reader = ready!(handling.as_mut().poll(cx));
                self.reader = ReaderState::Idle(reader);
                self.conn.heard(self.hub.now_ms());
            }
            if self.conn.is_closed() {
                return Poll::Ready(End::Closed);
            }
            let frame = match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Text(text))) => Some(text),
                Some(Ok(Message::Binary(_))) => None,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    self.conn.heard(self.hub.now_ms());
                    continue;
                }
                Some(Ok(Message::Close(_))) | None => {
                    self.conn.heard(self.hub.now_ms());
                    self.input_done = true;
                    return Poll::Ready(End::PeerClosed);
                }
                Some(Err(err)) => {
                    // tungstenite reports a frame or message over the limit as a capacity
                    // error: the client is told (1009). The stream ends with the error, so
                    // there is no more input to drain.
                    match err.into_inner().downcast::<tungstenite::Error>() {
                        Ok(err) if matches!(*err, tungstenite::Error::Capacity(_)) => {
                            self.conn.close(CloseReason::TOO_BIG);
                            return Poll::Ready(End::Closed);
                        }
                        Ok(err) => tracing::debug!(conn = self.conn.id, %err, "read error"),
                        Err(err) => tracing::debug!(conn = self.conn.id, %err, "read error"),
                    }
                    self.input_done = true;
                    return Poll::Ready(End::PeerClosed);
                }
            };
            self.begin(frame);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Starts handling a text frame (or a binary one, `None`). Boxed: handling needs a few
    /// KB of future state for a moment, and an idle connection should not carry that.
    fn begin(&mut self, text: Option<Utf8Bytes>) {
        if let ReaderState::Idle(mut reader) = std::mem::replace(&mut self.reader, ReaderState::Moving) {
            // While a frame is being handled (a sender waiting for the store, say) the
            // client counts as heard: it is the server that is not reading.
            self.conn.heard(BUSY);
            self.reader = ReaderState::Busy(Box::pin(async move {
                match text {
                    Some(text) => reader.handle_text(&text).await,
                    None => reader.handle_binary().await,
                }
                reader
            }));
        }
    }

    /// Writes what is queued: each batch taken whole, written with one flush (write
    /// coalescing), and given back to the budget once flushed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..BATCHES_PER_POLL {
            if self.ping {
                match Pin::new(&mut self.socket).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(End::WriteFailed),
                    Poll::Pending => return self.blocked(cx),
                }
                if Pin::new(&mut self.socket).start_send(Message::Ping(Default::default())).is_err() {
                    return Poll::Ready(End::WriteFailed);
                }
                self.ping = false;
                self.unflushed = true;
            }
            if self.unflushed || !self.out.is_empty() {
                match write_all(&mut self.socket, &mut self.out, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(End::WriteFailed),
                    Poll::Pending => {
                        self.unflushed = true;
                        return self.blocked(cx);
                    }
                }
                self.unflushed = false;
                if self.stuck {
                    self.stuck = false;
                    self.conn.unstuck();
                }
                // Given back once written: frames waiting on the socket, and frames held
                // while a join replays, count against the connection's budget.
                self.conn.release(std::mem::take(&mut self.writing));
                self.out = VecDeque::new();
            }
            // Between two batches, so a queue that never empties does not hold it back.
            if self.conn.take_ping() {
                self.ping = true;
                continue;
            }
            let items = match self.conn.poll_take(cx) {
                Poll::Ready(Some(items)) => items,
                Poll::Ready(None) => return Poll::Ready(End::Closed),
                // Now registered: a ping asked for before that is seen here, one asked
                // for after it wakes the task.
                Poll::Pending if self.conn.take_ping() => {
                    self.ping = true;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            let mut dropped = 0;
            for item in items {
                dropped += self.streams.order(item, &mut self.out);
            }
            self.conn.release(dropped);
            self.writing = self.out.iter().map(|frame| frame.len()).sum();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The socket takes no more for now: the heartbeat is told, so a client that takes
    /// nothing for a whole idle timeout is cut, and a close still ends the wait.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        if !self.stuck {
            self.stuck = true;
            self.conn.stuck(self.hub.now_ms());
        }
        if self.conn.poll_closed(cx) { Poll::Ready(End::Closed) } else { Poll::Pending }
    }

    /// Ends the connection: the rooms are left, and the client is told why, behind what it
    /// is still owed (see the module's doc), while a frame being handled finishes.
    async fn finish(&mut self, end: End) {
        let conn = self.conn.clone();
        if end == End::WriteFailed {
            // Nothing more can be written: a handler waiting for room is let go.
            conn.close(CloseReason { code: 1006, reason: "write failed" });
        }
        if let ReaderState::Idle(reader) = &mut self.reader {
            reader.leave_all();
        }
        // The client went away: a normal close.
        conn.close(CloseReason { code: 1000, reason: "" });
        let reason = conn.close_reason().unwrap_or(CloseReason::GOING_AWAY);
        let leftover = conn.shut();
        let deadline = tokio::time::Instant::now() + close_patience(reason);
        let mut close = None;
        if end != End::WriteFailed {
            let m = &self.hub.metrics;
            match reason {
                CloseReason::SLOW_CONSUMER => m.slow_consumers.fetch_add(1, Ordering::Relaxed),
                CloseReason::RATE_ABUSE => m.abusive_closed.fetch_add(1, Ordering::Relaxed),
                CloseReason::IDLE => m.idle_closed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            if reason == CloseReason::SLOW_CONSUMER {
                // Its queue is the problem: what is not yet in the socket is dropped.
                self.out.clear();
            } else {
                // Say what is already queued (the errors that led to an abuse close, the
                // last messages before a shutdown), then why we close. `out` still holds
                // what an interrupted write had not handed over: it goes first.
                for item in leftover {
                    self.streams.order(item, &mut self.out);
                }
            }
            close = Some(Message::Close(Some(CloseFrame {
                code: reason.code,
                reason: Utf8Bytes::from_static(reason.reason),
            })));
        }
        // Behind whatever the socket still holds: a client that reads in time gets it all,
        // then the close frame. A dead one never will, hence the deadline. A frame being
        // handled finishes meanwhile (its waits for room end with the close).
        let closing = std::future::poll_fn(|cx| {
            let handled = self.poll_handled(cx);
            let written =
                if end == End::WriteFailed { Poll::Ready(()) } else { self.poll_closing(&mut close, cx) };
            if handled.is_ready() && written.is_ready() { Poll::Ready(()) } else { Poll::Pending }
        });
        let _ = tokio::time::timeout_at(deadline, closing).await;
        // A second more than the write's patience: the client's answer to the close frame
        // may arrive just after it was written, and a handler still running gets as long.
        let draining = std::future::poll_fn(|cx| {
            let handled = self.poll_handled(cx);
            let drained = self.poll_drain(cx);
            if handled.is_ready() && drained.is_ready() { Poll::Ready(()) } else { Poll::Pending }
        });
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), draining).await;
        // A handler still running then is dropped with its reader, which leaves its rooms
        // as it goes (`Reader`'s `Drop`); the rest is `Connection`'s `Drop`.
    }

    /// Finishes the frame being handled, if any, then leaves the rooms.
    fn poll_handled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let ReaderState::Busy(handling) = &mut self.reader {
            let mut reader = ready!(handling.as_mut().poll(cx));
            reader.leave_all();
            self.reader = ReaderState::Idle(reader);
        }
        Poll::Ready(())
    }

    /// Writes what is left and the close frame, reading (and discarding) meanwhile.
    ///
    /// After the client's own close, tungstenite refuses more frames but has queued its
    /// answer to that close: a refused write still ends with a flush, which sends it.
    fn poll_closing(&mut self, close: &mut Option<Message>, cx: &mut Context<'_>) -> Poll<()> {
        let _ = self.poll_drain(cx);
        if ready!(write_all(&mut self.socket, &mut self.out, cx)).is_ok()
            && let Some(frame) = close.take()
        {
            match Pin::new(&mut self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let _ = Pin::new(&mut self.socket).start_send(frame);
                }
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    *close = Some(frame);
                    return Poll::Pending;
                }
            }
        }
        self.out.clear();
        Pin::new(&mut self.socket).poll_flush(cx).map(|_| ())
    }

    /// Reads and discards until the client's close arrives or its input ends: input left
    /// unread when the socket is dropped makes the kernel reset the connection, and the
    /// client would lose the close frame and what it had not read yet.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.input_done {
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => self.input_done = true,
                Some(Ok(_)) => {}
            }
        }
        Poll::Ready(())
    }
}

/// However the task ends (finished, dropped at runtime shutdown, a handler that panicked),
/// the connection is closed, its queue refuses more, and the hub forgets it.
impl Drop for Connection {
    fn drop(&mut self) {
        self.conn.close(CloseReason::GOING_AWAY);
        self.conn.shut();
        if let ReaderState::Idle(reader) = &mut self.reader {
            reader.leave_all();
        }
        self.hub.close_conn(self.conn.id);
        self.hub.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands `out` to the socket, front first, and flushes. A frame leaves `out` only once the
/// socket has taken it, so a write cut short (the connection closing) leaves exactly the
/// unsent frames behind.
fn write_all<S: Sink<Message> + Unpin>(
    sink: &mut S,
    out: &mut VecDeque<Utf8Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), S::Error>> {
    while let Some(frame) = out.front() {
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        Pin::new(&mut *sink).start_send(Message::Text(frame.clone()))?;
        out.pop_front();
    }
    Pin::new(sink).poll_flush(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    /// A socket that takes `room` frames and then blocks, as a client that stops reading.
    struct Stalling {
        room: usize,
        taken: Vec<String>,
    }

    impl Sink<Message> for Stalling {
        type Error = ();
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            if self.taken.len() < self.room { Poll::Ready(Ok(())) } else { Poll::Pending }
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
            self.taken.push(item.into_text().unwrap().to_string());
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn output_size<A, Fut, F: FnOnce(A) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// An idle connection's task holds its `Connection` once, and little beside: not a
    /// second copy (an `async fn` keeps one of an argument it rebinds) and not the close
    /// sequence's state (boxed, and made only at the end).
    #[test]
    fn the_task_holds_the_connection_once() {
        let connection = std::mem::size_of::<Connection>();
        let task = output_size(&run);
        assert!(
            task <= connection + 32,
            "the task's future is {task} bytes for a {connection}-byte connection"
        );
    }

    #[tokio::test]
    async fn an_interrupted_write_leaves_exactly_the_unsent_frames() {
        let mut sink = Stalling { room: 3, taken: Vec::new() };
        let mut out: VecDeque<Utf8Bytes> = (1..=5).map(|i| Utf8Bytes::from(format!("m{i}"))).collect();
        // The connection closes while the write waits on the socket: the write is dropped.
        let interrupted = tokio::time::timeout(
            Duration::from_millis(20),
            std::future::poll_fn(|cx| write_all(&mut sink, &mut out, cx)),
        )
        .await;
        assert!(interrupted.is_err(), "the write was still waiting");
        assert_eq!(sink.taken, ["m1", "m2", "m3"]);
        assert_eq!(out, ["m4", "m5"].map(Utf8Bytes::from_static));
        // The closing flush sends the rest, each frame once.
        sink.room = 10;
        std::future::poll_fn(|cx| write_all(&mut sink, &mut out, cx)).await.unwrap();
        assert_eq!(sink.taken, ["m1", "m2", "m3", "m4", "m5"]);
        assert!(out.is_empty());
    }
}
