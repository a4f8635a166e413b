//! One WebSocket connection: a reader (this task) that decodes and handles client frames,
//! and a writer task that drains the outbound queue into the socket.

use super::{
    hub::Hub,
    outbound::{CloseReason, ConnHandle, Outbound, Taken},
    rate::TokenBucket,
    room::{Room, encode},
    session::{SendState, Session},
    store::committer::Job,
};
use crate::protocol::{
    ChatMessage, ClientMsg, ErrorCode, JOIN_RECENT, MessageText, Nick, PROTOCOL_VERSION, RoomName, Seq,
    ServerMsg, ValidationError, check_client_id,
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{Sink, SinkExt, StreamExt, stream::SplitSink};
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Typing events per second a connection may send (burst of 3).
const TYPING_RATE: f64 = 2.0;
/// Joins per second a connection may make (burst of 10): room creation costs a disk write.
const JOIN_RATE: f64 = 5.0;

/// Runs a connection to its end.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>) {
    let (sink, mut stream) = socket.split();
    let conn = ConnHandle::new(hub.next_conn_id(), hub.config.outbound_queue_bytes);
    hub.metrics.connections.fetch_add(1, Ordering::Relaxed);
    hub.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let last_heard = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writer = tokio::spawn(write_loop(sink, conn.clone(), hub.clone(), last_heard.clone(), started));

    let mut state = Reader::new(hub.clone(), conn.clone());
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = conn.closed().cancelled() => break,
            _ = hub.shutdown.cancelled() => { conn.close(CloseReason::GOING_AWAY); break }
        };
        last_heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match frame {
            // Boxed: handling a frame needs a few KB of future state for a moment, and an
            // idle connection should not carry that in its task.
            Some(Ok(Message::Text(text))) => Box::pin(state.handle_text(&text)).await,
            Some(Ok(Message::Binary(_))) => {
                let error =
                    state.error(ErrorCode::BadFrame, "binary frames are not accepted; send JSON text");
                Box::pin(error).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(err)) => {
                // tungstenite reports a frame or message over the limit as a capacity error.
                match err.into_inner().downcast::<tungstenite::Error>() {
                    Ok(err) if matches!(*err, tungstenite::Error::Capacity(_)) => {
                        conn.close(CloseReason::TOO_BIG)
                    }
                    Ok(err) => tracing::debug!(conn = conn.id, %err, "read error"),
                    Err(err) => tracing::debug!(conn = conn.id, %err, "read error"),
                }
                break;
            }
        }
    }
    state.leave_all();
    if conn.close_reason().is_none() {
        // The client went away: let the writer finish by itself.
        conn.close(CloseReason { code: 1000, reason: "" });
    }
    let _ = writer.await;
    hub.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Per-room state of the writer: replaying a join, or streaming live.
enum Stream {
    /// Between `BeginJoin` and `Replay`: live traffic waits here (events have no seq).
    Joining(Vec<(Option<Seq>, Utf8Bytes)>),
    /// Sent everything up to `last`; drop anything not newer.
    Live { last: Seq },
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    conn: Arc<ConnHandle>,
    hub: Arc<Hub>,
    last_heard: Arc<AtomicU64>,
    started: Instant,
) {
    let mut streams: HashMap<Arc<str>, Stream> = HashMap::new();
    // Frames ordered and not yet handed to the socket. Allocated per batch and dropped
    // after it: an idle connection should cost as little as possible.
    let mut out = VecDeque::new();
    let mut ping = tokio::time::interval(hub.config.ping_interval());
    ping.tick().await;
    let idle_timeout = hub.config.idle_timeout().as_millis() as u64;
    loop {
        tokio::select! {
            biased;
            _ = conn.closed().cancelled() => break,
            // Everything queued is written with one flush (write coalescing).
            items = conn.take() => {
                let taken = Taken::of(&items);
                for item in items {
                    order(item, &mut streams, &mut out);
                }
                // A client that stops reading must not keep this task alive forever.
                let result = tokio::select! {
                    r = write_all(&mut sink, &mut out) => r,
                    _ = conn.closed().cancelled() => break,
                };
                // Released once written: frames waiting on the socket still count against
                // the connection's budgets.
                conn.release(taken);
                if result.is_err() {
                    conn.close(CloseReason { code: 1006, reason: "write failed" });
                    conn.shut();
                    return;
                }
                out = VecDeque::new();
            }
            _ = ping.tick() => {
                let heard = last_heard.load(Ordering::Relaxed);
                if started.elapsed().as_millis() as u64 > heard + idle_timeout {
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
    if reason != CloseReason::SLOW_CONSUMER {
        // Say what is already queued (the errors that led to an abuse close, the last
        // messages before a shutdown), then why we close. Not for a slow consumer: its
        // queue is the problem.
        // `out` still holds what an interrupted write had not handed over: it goes first.
        for item in leftover {
            order(item, &mut streams, &mut out);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), write_all(&mut sink, &mut out)).await;
    }
    let close =
        Message::Close(Some(CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) }));
    // Best effort: a slow consumer gets a while to drain what the kernel holds and read why
    // it was cut; a dead one never will.
    let patience = if reason == CloseReason::SLOW_CONSUMER { 5 } else { 1 };
    let _ = tokio::time::timeout(Duration::from_secs(patience), sink.send(close)).await;
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

/// Puts one queued item in order: a room's live messages wait while its join replays, and
/// nothing at or below what was already sent for a room goes out again.
fn order(item: Outbound, streams: &mut HashMap<Arc<str>, Stream>, out: &mut VecDeque<Utf8Bytes>) {
    match item {
        Outbound::Frame(frame) => out.push_back(frame),
        Outbound::BeginJoin { room } => {
            streams.insert(room, Stream::Joining(Vec::new()));
        }
        Outbound::Room { room, seq, frame } => match streams.get_mut(&room) {
            Some(Stream::Joining(held)) => held.push((Some(seq), frame)),
            Some(Stream::Live { last }) if seq > *last => {
                *last = seq;
                out.push_back(frame);
            }
            _ => {}
        },
        Outbound::RoomEvent { room, frame } => match streams.get_mut(&room) {
            Some(Stream::Joining(held)) => held.push((None, frame)),
            Some(Stream::Live { .. }) => out.push_back(frame),
            None => {}
        },
        Outbound::Replay { room, frames, upto } => {
            out.extend(frames);
            let mut last = upto;
            if let Some(Stream::Joining(held)) = streams.remove(&room) {
                for (seq, frame) in held {
                    match seq {
                        None => out.push_back(frame),
                        Some(seq) if seq > last => {
                            last = seq;
                            out.push_back(frame);
                        }
                        Some(_) => {}
                    }
                }
            }
            streams.insert(room, Stream::Live { last });
        }
        Outbound::EndRoom { room } => {
            streams.remove(&room);
        }
    }
}

/// The reader's state: who this connection is and what it joined.
struct Reader {
    hub: Arc<Hub>,
    conn: Arc<ConnHandle>,
    session: Option<Arc<Session>>,
    joined: HashMap<RoomName, Arc<Room>>,
    sends: TokenBucket,
    typing: TokenBucket,
    joins: TokenBucket,
    /// Refusals for rate; when it runs dry the client is abusive and is closed.
    strikes: TokenBucket,
}

impl Reader {
    fn new(hub: Arc<Hub>, conn: Arc<ConnHandle>) -> Self {
        let cfg = &hub.config;
        let sends = TokenBucket::new(cfg.msg_rate as f64, cfg.msg_burst as f64);
        let strikes = TokenBucket::new(1.0, cfg.abuse_strikes as f64);
        Reader {
            hub,
            conn,
            session: None,
            joined: HashMap::new(),
            sends,
            typing: TokenBucket::new(TYPING_RATE, 3.0),
            joins: TokenBucket::new(JOIN_RATE, 10.0),
            strikes,
        }
    }

    async fn reply(&self, msg: &ServerMsg) {
        self.conn.reply(Outbound::Frame(encode(msg))).await;
    }

    async fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.hub.metrics.error(code);
        self.reply(&ServerMsg::error(code, message)).await;
    }

    async fn error_for(&self, code: ErrorCode, message: impl Into<String>, client_id: &str) {
        self.hub.metrics.error(code);
        let msg = ServerMsg::Error { code, message: message.into(), client_id: Some(client_id.to_owned()) };
        self.reply(&msg).await;
    }

    async fn handle_text(&mut self, text: &str) {
        let msg = match ClientMsg::decode(text) {
            Ok(msg) => msg,
            Err(err) => return self.error(err.code, err.message).await,
        };
        let Some(session) = self.session.clone() else {
            return match msg {
                ClientMsg::Hello { nick, session } => self.hello(&nick, session.as_deref()).await,
                _ => self.error(ErrorCode::HelloRequired, "send hello first").await,
            };
        };
        match msg {
            ClientMsg::Hello { .. } => {
                self.error(ErrorCode::AlreadyHello, "this connection already said hello").await
            }
            ClientMsg::Join { room, since } => self.join(&session, &room, since).await,
            ClientMsg::Leave { room } => self.leave(&room).await,
            ClientMsg::Send { room, text, client_id } => self.send(&session, &room, text, client_id).await,
            ClientMsg::Typing { room } => self.typing(&session, &room).await,
            ClientMsg::History { room, before, limit } => self.history(&room, before, limit).await,
            ClientMsg::ListRooms {} => self.reply(&ServerMsg::Rooms { rooms: self.hub.room_list() }).await,
        }
    }

    async fn hello(&mut self, nick: &str, token: Option<&str>) {
        let nick = match Nick::parse(nick) {
            Ok(nick) => nick,
            Err(err) => return self.invalid(err).await,
        };
        match self.hub.sessions.attach(nick, token) {
            Ok(session) => {
                let welcome = ServerMsg::Welcome {
                    session: session.token.clone(),
                    nick: session.nick.as_str().to_owned(),
                    limits: self.hub.config.limits(),
                    protocol: PROTOCOL_VERSION,
                };
                self.session = Some(session);
                self.reply(&welcome).await;
            }
            Err(code) => self.error(code, "that nick is in use by someone else").await,
        }
    }

    /// Answers a request over a rate limit; a client that keeps going is closed.
    async fn rate_limited(&mut self, message: &str, client_id: Option<&str>) {
        if !self.strikes.take() {
            tracing::info!(conn = self.conn.id, "closing a connection that ignores rate limits");
            self.conn.close(CloseReason::RATE_ABUSE);
        }
        match client_id {
            Some(id) => self.error_for(ErrorCode::RateLimited, message, id).await,
            None => self.error(ErrorCode::RateLimited, message).await,
        }
    }

    async fn invalid(&self, err: ValidationError) {
        self.error(err.code(), err.to_string()).await
    }

    fn joined_room(&self, room: &str) -> Result<&Arc<Room>, (ErrorCode, String)> {
        let name = RoomName::parse(room).map_err(|e| (e.code(), e.to_string()))?;
        self.joined.get(&name).ok_or((ErrorCode::NotJoined, format!("join {name} first")))
    }

    async fn join(&mut self, session: &Session, room: &str, since: Option<Seq>) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        if !self.joins.take() {
            return self.rate_limited("too many joins", None).await;
        }
        let room = match self.joined.get(&name) {
            Some(room) => room.clone(),
            None => {
                if self.joined.len() >= self.hub.config.max_rooms_per_conn {
                    let max = self.hub.config.max_rooms_per_conn;
                    return self
                        .error(ErrorCode::TooManyRooms, format!("a connection may join at most {max} rooms"))
                        .await;
                }
                match self.hub.room(&name).await {
                    Ok(room) => room,
                    Err(err) => return self.error(err.code(), err.to_string()).await,
                }
            }
        };
        // Subscribe first, then replay from the store up to the head seen at subscription:
        // the writer holds live messages meanwhile and drops what both would send.
        self.conn.reply(Outbound::BeginJoin { room: room.key.clone() }).await;
        let sub = room.subscribe(&session.nick, &self.conn);
        self.joined.insert(name.clone(), room.clone());
        let (after, cap) = match since {
            Some(since) => (since, self.hub.config.max_history as usize),
            None => (0, JOIN_RECENT),
        };
        let page = match self.hub.messages_after(&name, after, sub.head, cap).await {
            Ok(page) => page,
            Err(err) => {
                tracing::error!(%err, room = %name, "replay failed");
                room.unsubscribe(self.conn.id);
                self.joined.remove(&name);
                self.conn.reply(Outbound::EndRoom { room: room.key.clone() }).await;
                return self.error(ErrorCode::Internal, "could not load the room's history").await;
            }
        };
        let joined = ServerMsg::Joined {
            room: name.as_str().to_owned(),
            members: sub.members,
            member_count: sub.member_count as u32,
            head: sub.head,
            truncated: since.is_some() && page.more,
        };
        let mut frames = Vec::with_capacity(page.messages.len() + 1);
        frames.push(encode(&joined));
        frames.extend(page.messages.into_iter().map(|m| encode(&ServerMsg::Message(m))));
        self.conn.reply(Outbound::Replay { room: room.key.clone(), frames, upto: sub.head }).await;
    }

    async fn leave(&mut self, room: &str) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        match self.joined.remove(&name) {
            Some(room) => {
                room.unsubscribe(self.conn.id);
                self.conn.reply(Outbound::EndRoom { room: room.key.clone() }).await;
                self.reply(&ServerMsg::Left { room: name.as_str().to_owned() }).await;
            }
            None => self.error(ErrorCode::NotJoined, format!("not in {name}")).await,
        }
    }

    async fn send(&mut self, session: &Arc<Session>, room: &str, text: String, client_id: String) {
        if let Err(err) = check_client_id(&client_id) {
            return self.error(err.code(), err.to_string()).await;
        }
        let room = match self.joined_room(room) {
            Ok(room) => room.clone(),
            Err((code, message)) => return self.error_for(code, message, &client_id).await,
        };
        let text = match MessageText::parse(text, self.hub.config.text_limit()) {
            Ok(text) => text,
            Err(err) => return self.error_for(err.code(), err.to_string(), &client_id).await,
        };
        match session.claim(&client_id) {
            SendState::New => {}
            // Already accepted: its echo reaches this room's members when stored.
            SendState::InFlight => return,
            SendState::Stored(stored_in, seq) => {
                // Answered from the store: a retry costs a read, so it is rate limited too.
                if !self.sends.take() {
                    return self.rate_limited("slow down: too many messages", Some(&client_id)).await;
                }
                return self.resend_stored(&stored_in, seq, &client_id).await;
            }
        }
        if !self.sends.take() {
            session.forget(&client_id);
            return self.rate_limited("slow down: too many messages", Some(&client_id)).await;
        }
        self.hub.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
        let nick = session.nick.as_str().to_owned();
        let text = text.into_string();
        let ts = super::unix_ms();
        let weak = Arc::downgrade(session);
        let room_for_job = room.clone();
        let committer = &self.hub.committer;
        room.accept(
            |seq| ChatMessage { room: room.name.as_str().to_owned(), seq, nick, text, ts, client_id },
            |msg| {
                committer.enqueue(Job { room: room_for_job, msg, session: weak });
            },
        );
    }

    /// Answers a retry of a stored message with the original, read back from the store.
    async fn resend_stored(&self, room: &Room, seq: Seq, client_id: &str) {
        let found = self.hub.messages_after(&room.name, seq - 1, seq, 1).await;
        match found.map(|page| page.messages.into_iter().next()) {
            Ok(Some(msg)) => self.reply(&ServerMsg::Message(msg)).await,
            failed => {
                let err = failed.err().map(|e| e.to_string()).unwrap_or_else(|| "not in the store".into());
                tracing::error!(%err, room = %room.name, seq, "reading a remembered message failed");
                self.error_for(ErrorCode::Internal, "could not load the stored message", client_id).await
            }
        }
    }

    async fn typing(&mut self, session: &Session, room: &str) {
        let room = match self.joined_room(room) {
            Ok(room) => room.clone(),
            Err((code, message)) => return self.error(code, message).await,
        };
        if !self.typing.take() {
            return self.rate_limited("too many typing events", None).await;
        }
        room.typing(&session.nick);
    }

    async fn history(&mut self, room: &str, before: Seq, limit: u32) {
        let name = match self.joined_room(room) {
            Ok(room) => room.name.clone(),
            Err((code, message)) => return self.error(code, message).await,
        };
        let limit = limit.clamp(1, self.hub.config.max_history.max(1)) as usize;
        match self.hub.messages_before(&name, before, limit).await {
            Ok(page) => {
                let msg = ServerMsg::History {
                    room: name.as_str().to_owned(),
                    messages: page.messages,
                    has_more: page.more,
                };
                self.reply(&msg).await
            }
            Err(err) => {
                tracing::error!(%err, room = %name, "history failed");
                self.error(ErrorCode::Internal, "could not load history").await
            }
        }
    }

    fn leave_all(&mut self) {
        for (_, room) in self.joined.drain() {
            room.unsubscribe(self.conn.id);
        }
        if let Some(session) = self.session.take() {
            self.hub.sessions.detach(&session);
        }
    }
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
