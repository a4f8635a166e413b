//! One WebSocket connection: a reader (this task) that decodes client frames and hands
//! them to the request handlers, and a writer task that drains the outbound queue into
//! the socket, in per-room order (see `ordering`).
//!
//! Closing is done so the client learns why: the writer puts the close frame behind what
//! the socket already holds and waits (a while) for it to be written; the reader keeps
//! reading, and discarding, until the client answers the close or the patience runs out,
//! so the socket is never dropped with unread input (which would make the kernel send a
//! reset, and the client lose the close frame and whatever it had not yet read).

use super::{
    handlers::Reader,
    hub::Hub,
    ordering::Streams,
    outbound::{CloseReason, ConnHandle},
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{
    Sink, SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

/// `last_heard` while the reader is handling a frame.
const BUSY: u64 = u64::MAX;

/// How long a close may take, by reason: a slow consumer is given time to read what the
/// socket holds before the close frame; at shutdown the whole server has five seconds.
fn close_patience(reason: CloseReason) -> Duration {
    match reason {
        CloseReason::SLOW_CONSUMER => Duration::from_secs(10),
        CloseReason::GOING_AWAY => Duration::from_secs(1),
        _ => Duration::from_secs(3),
    }
}

/// Starts a connection: splits the socket, starts its writer, and returns the reader,
/// which runs the connection to its end.
///
/// Not an `async fn`: a future keeps room for its arguments for as long as it lives, even
/// once they are moved out, and an idle connection would carry a whole second `WebSocket`
/// (and sign-in) that way. The socket is split here; the reader holds only its halves.
pub fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    peer: IpAddr,
    principal: Option<Box<super::auth::Principal>>,
) -> impl Future<Output = ()> + Send + 'static {
    let (sink, stream) = socket.split();
    let conn = ConnHandle::new(hub.next_conn_id(), hub.config.outbound_queue_bytes);
    hub.metrics.connections.fetch_add(1, Ordering::Relaxed);
    hub.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let last_heard = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writer = tokio::spawn(write_loop(sink, conn.clone(), hub.clone(), last_heard.clone(), started));
    let state = Reader::new(hub.clone(), conn.clone(), peer, principal);
    read_loop(stream, writer, state, conn, hub, last_heard, started)
}

/// The reader: decodes client frames and hands them to the request handlers until the
/// connection ends, then closes it (see the module's doc).
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    writer: tokio::task::JoinHandle<()>,
    mut state: Reader,
    conn: Arc<ConnHandle>,
    hub: Arc<Hub>,
    last_heard: Arc<AtomicU64>,
    started: Instant,
) {
    let mut peer_closed = false;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = conn.closed().cancelled() => break,
            _ = hub.shutdown.cancelled() => { conn.close(CloseReason::GOING_AWAY); break }
        };
        // While a frame is being handled (a sender waiting for the store, say) the client
        // counts as heard: it is the server that is not reading.
        last_heard.store(BUSY, Ordering::Relaxed);
        match frame {
            // Boxed: handling a frame needs a few KB of future state for a moment, and an
            // idle connection should not carry that in its task.
            Some(Ok(Message::Text(text))) => Box::pin(state.handle_text(&text)).await,
            Some(Ok(Message::Binary(_))) => Box::pin(state.handle_binary()).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                last_heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                peer_closed = true;
                break;
            }
            Some(Err(err)) => {
                peer_closed = true;
                // tungstenite reports a frame or message over the limit as a capacity error.
                match err.into_inner().downcast::<tungstenite::Error>() {
                    Ok(err) if matches!(*err, tungstenite::Error::Capacity(_)) => {
                        peer_closed = false;
                        conn.close(CloseReason::TOO_BIG)
                    }
                    Ok(err) => tracing::debug!(conn = conn.id, %err, "read error"),
                    Err(err) => tracing::debug!(conn = conn.id, %err, "read error"),
                }
                break;
            }
        }
        last_heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    state.leave_all();
    if conn.close_reason().is_none() {
        // The client went away: let the writer finish by itself.
        conn.close(CloseReason { code: 1000, reason: "" });
    }
    let reason = conn.close_reason().unwrap_or(CloseReason::GOING_AWAY);
    // A second more than the writer's patience: the client's answer to the close frame
    // may arrive just after it was written.
    let deadline = tokio::time::Instant::now() + close_patience(reason) + Duration::from_secs(1);
    // Read (and discard) while the writer closes, and until the client answers the close:
    // input left unread when the socket is dropped makes the kernel reset the connection,
    // and the client would lose the close frame and what it had not read yet.
    let drain = async {
        if peer_closed {
            return;
        }
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, async { tokio::join!(writer, drain) }).await;
    hub.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    conn: Arc<ConnHandle>,
    hub: Arc<Hub>,
    last_heard: Arc<AtomicU64>,
    started: Instant,
) {
    let mut streams = Streams::default();
    // Frames ordered and not yet handed to the socket. Allocated per batch and dropped
    // after it: an idle connection should cost as little as possible.
    let mut out = VecDeque::new();
    let mut ping = tokio::time::interval(hub.config.ping_interval());
    // A connection kept busy past a tick handles it once, late, not once per tick missed.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let idle_timeout = hub.config.idle_timeout().as_millis() as u64;
    loop {
        tokio::select! {
            biased;
            // Everything queued is written with one flush (write coalescing). None once
            // the connection is closed.
            items = conn.take() => {
                let Some(items) = items else { break };
                let mut dropped = 0;
                for item in items {
                    dropped += streams.order(item, &mut out);
                }
                conn.release(dropped);
                let writing: usize = out.iter().map(|f: &Utf8Bytes| f.len()).sum();
                // A client that stops reading must not keep this task alive forever: cut when
                // the connection closes, or when the client has taken no data for a whole
                // idle timeout (a quiet room would otherwise never push it over its
                // budget). Checked on the ping ticks, so a write costs no timer of its own.
                let result = {
                    let write = write_all(&mut sink, &mut out);
                    tokio::pin!(write);
                    // A socket with room takes the batch in the first poll: the common
                    // case polls no cancellation future and no timer for it.
                    match futures::poll!(&mut write) {
                        Poll::Ready(r) => Some(r),
                        Poll::Pending => {
                            let writing_since = Instant::now();
                            let closed = conn.closed().cancelled();
                            tokio::pin!(closed);
                            loop {
                                tokio::select! {
                                    biased;
                                    r = &mut write => break Some(r),
                                    _ = &mut closed => break None,
                                    _ = ping.tick() => {
                                        if writing_since.elapsed().as_millis() as u64 > idle_timeout {
                                            conn.close(CloseReason::SLOW_CONSUMER);
                                            break None;
                                        }
                                    }
                                }
                            }
                        }
                    }
                };
                let Some(result) = result else { break };
                // Given back once written: frames waiting on the socket, and frames held
                // while a join replays, count against the connection's budget.
                conn.release(writing);
                if result.is_err() {
                    conn.close(CloseReason { code: 1006, reason: "write failed" });
                    conn.shut();
                    return;
                }
                out = VecDeque::new();
            }
            _ = ping.tick() => {
                let heard = last_heard.load(Ordering::Relaxed);
                if heard != BUSY && started.elapsed().as_millis() as u64 > heard + idle_timeout {
                    conn.close(CloseReason::IDLE);
                    break;
                }
                let sent = tokio::select! {
                    r = sink.send(Message::Ping(Default::default())) => r.is_ok(),
                    _ = conn.closed().cancelled() => break,
                };
                if !sent {
                    conn.close(CloseReason { code: 1006, reason: "write failed" });
                    conn.shut();
                    return;
                }
            }
        }
    }
    let reason = conn.close_reason().unwrap_or(CloseReason::GOING_AWAY);
    let m = &hub.metrics;
    match reason {
        CloseReason::SLOW_CONSUMER => m.slow_consumers.fetch_add(1, Ordering::Relaxed),
        CloseReason::RATE_ABUSE => m.abusive_closed.fetch_add(1, Ordering::Relaxed),
        CloseReason::IDLE => m.idle_closed.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let leftover = conn.shut();
    let deadline = tokio::time::Instant::now() + close_patience(reason);
    if reason == CloseReason::SLOW_CONSUMER {
        // Its queue is the problem: what is not yet in the socket is dropped.
        out.clear();
    } else {
        // Say what is already queued (the errors that led to an abuse close, the last
        // messages before a shutdown), then why we close. `out` still holds what an
        // interrupted write had not handed over: it goes first.
        for item in leftover {
            streams.order(item, &mut out);
        }
        let _ = tokio::time::timeout_at(deadline, write_all(&mut sink, &mut out)).await;
    }
    let close =
        Message::Close(Some(CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) }));
    // Behind whatever the socket still holds: a client that reads in time gets it all,
    // then the close frame. A dead one never will, hence the deadline.
    let _ = tokio::time::timeout_at(deadline, sink.send(close)).await;
}

/// Writes `out` and flushes. A frame leaves `out` only once the socket has taken it, so a
/// write cut short (the connection closing) leaves exactly the unsent frames behind.
async fn write_all<S: Sink<Message> + Unpin>(
    sink: &mut S,
    out: &mut VecDeque<Utf8Bytes>,
) -> Result<(), S::Error> {
    if out.is_empty() {
        return Ok(());
    }
    while let Some(frame) = out.front() {
        // `feed` hands the frame over in the same poll that finds the sink ready, so if
        // this future is dropped the frame was either taken or not, never half.
        sink.feed(Message::Text(frame.clone())).await?;
        out.pop_front();
    }
    sink.flush().await
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

    #[tokio::test]
    async fn an_interrupted_write_leaves_exactly_the_unsent_frames() {
        let mut sink = Stalling { room: 3, taken: Vec::new() };
        let mut out: VecDeque<Utf8Bytes> = (1..=5).map(|i| Utf8Bytes::from(format!("m{i}"))).collect();
        // The connection closes while the write waits on the socket: the write is dropped.
        let interrupted =
            tokio::time::timeout(Duration::from_millis(20), write_all(&mut sink, &mut out)).await;
        assert!(interrupted.is_err(), "the write was still waiting");
        assert_eq!(sink.taken, ["m1", "m2", "m3"]);
        assert_eq!(out, ["m4", "m5"].map(Utf8Bytes::from_static));
        // The closing flush sends the rest, each frame once.
        sink.room = 10;
        write_all(&mut sink, &mut out).await.unwrap();
        assert_eq!(sink.taken, ["m1", "m2", "m3", "m4", "m5"]);
        assert!(out.is_empty());
    }
}
