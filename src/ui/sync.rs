//! The connection's protocol rules (docs/PROTOCOL.md §11), as plain code over the model:
//! what to send after `welcome`, when a room's replay is complete, how a gap in a room's
//! history is walked, how the outbox is paced and retried, and which request an `error`
//! answers. `client::connection` drives it: it writes the frames and runs the timers this
//! asks for. Time comes in as an argument and timers go out as data, so every rule here
//! has a native unit test without a clock or a socket.
//!
//! The log. A room's seq numbers its events (messages, edits, deletions, reactions); a
//! resume asks for every event after the last one applied here, and applying them in
//! order gives the room's current state.
//!
//! Gaps. A `join` with `since` that had more to replay than `max_history` answers
//! `joined.truncated` with only the newest events: between `since` and the first one
//! replayed is a gap, in which messages held here may have been edited, deleted or
//! reacted to. It is not patched: the local copy is replaced by the replay (from its
//! first message on), older messages come back in their current state by scrolling up
//! as usual, and only the first [`GAP_PAGES`] pages after `since` are read, without
//! keeping them, to look for messages of ours, if one was sent that could be there (see
//! below). A gap outlives its connection: a walk cut short goes on after the next
//! connection's replay of the room.
//!
//! Errors. Every request but `send` and `typing` carries a `ref` from a counter, and the
//! syncer remembers what each asked for, so an `error` is applied to its request: a
//! failed join is retried with backoff, a rate-limited request after `retry_after_ms`, a
//! failed page of older messages is told to the user. A `send` is known by its
//! `client_id`: refused by the rate limit it goes again in the slot the server names, a
//! storage failure is retried with backoff, anything else drops it with a notice.
//!
//! The outbox and gaps. A message of ours that was stored while we were away shows up
//! in the gap with our nick and its `client_id`; after a server restart the new session
//! has no dedup memory, so resending it would store it twice. A room's outbox is
//! therefore held until its replay is complete and its gap walked, and then only what was
//! not found goes out. Such a message was sent before the connection dropped, so it is
//! stored right after `since`: that is where the walk of a big gap looks.

use super::{
    pacer::Pacer,
    state::{ChatModel, Delivery, Pending, RoomView},
};
use crate::protocol::{ChatMessage, ClientMsg, ErrorCode, JOIN_RECENT, Request, Seq, ServerMsg};

/// A truncated replay's gap is searched for our own messages this many `history` pages
/// (of `max_history`) deep.
pub const GAP_PAGES: u64 = 4;
/// First delay before retrying a failed request; doubles per failure up to `MAX_RETRY_MS`.
const BASE_RETRY_MS: u64 = 500;
const MAX_RETRY_MS: u64 = 10_000;

/// What the driver should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this frame.
    Send(Request),
    /// Call [`Syncer::on_timer`] with `timer` after `ms` (on this connection only).
    After { ms: u64, timer: Timer },
    /// `welcome` arrived: remember the nick and session token for the next visit.
    Welcomed,
    /// The nick was refused: hang up and wait until the user picks another.
    Rehello,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Send the outbox entries the pacer and their retry times allow.
    Drain,
    /// Send a request again that failed or was refused.
    Retry(Req),
}

/// What a request with a `ref` asked for, so its answer or its error can be applied.
/// `attempt` counts earlier failures of the same request (the backoff grows with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Join {
        room: String,
        since: Option<Seq>,
        attempt: u32,
    },
    /// Older messages for the reader scrolling up.
    Older {
        room: String,
        attempt: u32,
    },
    /// A page of the room's gap.
    Gap {
        room: String,
        attempt: u32,
    },
    ListRooms {
        attempt: u32,
    },
    Leave {
        room: String,
    },
}

/// A room's place in the protocol, kept with the room (`RoomView::sync`) so it goes
/// when the room does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSync {
    /// Where the room is on the current connection (`None`: not joined on it).
    phase: Option<Phase>,
    /// Seqs of the room this client has not seen; outlives a connection.
    gap: Option<Gap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    /// `joined` arrived; the replay runs until the message with seq `head`.
    Replaying {
        head: Seq,
        since: Option<Seq>,
        truncated: bool,
    },
    Live,
    /// The join failed; a retry is scheduled (unless it cannot succeed).
    Failed,
}

/// Seqs strictly between `after` and `before` that this client has not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    after: Seq,
    before: Seq,
    /// Messages per page (the server's `max_history`).
    page: Seq,
    /// A page of it was asked for on this connection.
    asked: bool,
}

/// State of one connection, from `welcome` to its loss.
#[derive(Debug)]
struct Conn {
    /// Requests awaiting an answer, by `ref` (a handful at a time: a list will do).
    requests: Vec<(u64, Req)>,
    pacer: Pacer,
    /// When the `Drain` timer set last is due.
    drain_at: Option<u64>,
}

/// The protocol side of the browser's connection. Per-room state lives in the model's
/// rooms; what is here lasts one connection, but for the counter of refs.
#[derive(Debug, Default)]
pub struct Syncer {
    next_ref: u64,
    conn: Option<Conn>,
}

fn backoff_ms(attempt: u32) -> u64 {
    (BASE_RETRY_MS << attempt.min(8)).min(MAX_RETRY_MS)
}

fn sync_of<'a>(model: &'a mut ChatModel, room: &str) -> Option<&'a mut RoomSync> {
    model.rooms.get_mut(room).map(|v| &mut v.sync)
}

fn phase_of(model: &ChatModel, room: &str) -> Option<Phase> {
    model.rooms.get(room)?.sync.phase
}

fn set_phase(model: &mut ChatModel, room: &str, phase: Phase) {
    if let Some(sync) = sync_of(model, room) {
        sync.phase = Some(phase);
    }
}

fn gap_of(model: &ChatModel, room: &str) -> Option<Gap> {
    model.rooms.get(room)?.sync.gap
}

fn set_gap(model: &mut ChatModel, room: &str, gap: Option<Gap>) {
    if let Some(sync) = sync_of(model, room) {
        sync.gap = gap;
    }
}

impl Syncer {
    /// The first frame of a connection.
    pub fn hello(&self, model: &ChatModel) -> Request {
        // A signed-in page is its account: the server knows who from the cookie.
        if model.account.is_some() {
            return Request { msg: ClientMsg::Hello { nick: None, session: None }, reference: None };
        }
        let nick = model.nick.clone().unwrap_or_default();
        Request {
            msg: ClientMsg::Hello { nick: Some(nick), session: model.session.clone() },
            reference: None,
        }
    }

    /// True between `welcome` and the connection's loss.
    pub fn online(&self) -> bool {
        self.conn.is_some()
    }

    /// The connection was lost: what was asked on it will not be answered.
    pub fn disconnected(&mut self, model: &mut ChatModel, retry_in_ms: u32) {
        self.conn = None;
        for view in model.rooms.values_mut() {
            view.sync.phase = None;
            if let Some(gap) = &mut view.sync.gap {
                gap.asked = false;
            }
        }
        model.mark_offline(retry_in_ms);
    }

    /// Applies one frame from the server.
    pub fn on_frame(&mut self, model: &mut ChatModel, msg: ServerMsg, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            ServerMsg::Welcome { .. } => self.welcome(model, msg, now, &mut out),
            ServerMsg::Joined { .. } => self.joined(model, msg, now, &mut out),
            ServerMsg::Message(ChatMessage { ref room, .. })
            | ServerMsg::Edit(crate::protocol::EditEvent { ref room, .. })
            | ServerMsg::Delete(crate::protocol::DeleteEvent { ref room, .. })
            | ServerMsg::React(crate::protocol::ReactEvent { ref room, .. }) => {
                let room = room.clone();
                model.apply(msg, now as f64);
                self.check_replay(model, &room, now, &mut out);
            }
            // The chat never searches over its socket (search is a page of its own).
            ServerMsg::SearchResults { .. } => {}
            ServerMsg::History { .. } => self.history(model, msg, now, &mut out),
            ServerMsg::Left { ref room, ref reference } => {
                self.take_request(reference.as_deref());
                // Closed already when the user left; unless the room was opened again since.
                if phase_of(model, room).is_none() {
                    model.apply(msg, now as f64);
                }
            }
            ServerMsg::Rooms { ref reference, .. } => {
                self.take_request(reference.as_deref());
                model.apply(msg, now as f64);
            }
            ServerMsg::Error { code, message, client_id, retry_after_ms, reference } => {
                match (code, self.take_request(reference.as_deref()), client_id) {
                    (ErrorCode::NickTaken | ErrorCode::InvalidNick, _, _) => {
                        model.nick_rejected = Some(message);
                        model.nick = None;
                        model.session = None;
                        out.push(Action::Rehello);
                    }
                    (_, Some(req), _) => {
                        self.request_failed(model, req, code, message, retry_after_ms, &mut out)
                    }
                    (_, None, Some(id)) => {
                        self.send_failed(model, &id, code, message, retry_after_ms, now, &mut out)
                    }
                    // Neither a request nor a send: a refused typing notice, stale by the
                    // time it could be resent. Nothing to tell the user.
                    (ErrorCode::RateLimited, None, None) => {}
                    (_, None, None) => model.notify(code.as_str(), message),
                }
            }
            ServerMsg::Ack { ref reference } => {
                self.take_request(reference.as_deref());
            }
            ServerMsg::Invited { .. } => {
                model.apply(msg, now as f64);
                // A new private room or conversation: the directory now lists it.
                self.request(
                    ClientMsg::ListRooms { cursor: None, limit: None },
                    Req::ListRooms { attempt: 0 },
                    &mut out,
                );
            }
            ServerMsg::Typing { .. }
            | ServerMsg::Kicked { .. }
            | ServerMsg::Presence { .. }
            | ServerMsg::MemberUpdate { .. }
            | ServerMsg::Read { .. }
            | ServerMsg::Topic { .. } => model.apply(msg, now as f64),
        }
        out
    }

    /// A timer set by an earlier [`Action::After`] is due.
    pub fn on_timer(&mut self, model: &mut ChatModel, timer: Timer, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match timer {
            Timer::Drain => {
                if let Some(conn) = &mut self.conn {
                    conn.drain_at = None;
                }
                self.drain(model, now, &mut out);
            }
            Timer::Retry(req) => self.retry(model, req, &mut out),
        }
        out
    }

    /// Shows a room, joining it if this connection has not (or its join failed).
    pub fn open(&mut self, model: &mut ChatModel, room: &str) -> Vec<Action> {
        model.open(room);
        let mut out = Vec::new();
        if self.online() && matches!(phase_of(model, room), None | Some(Phase::Failed)) {
            self.join(model, room, 0, &mut out);
        }
        out
    }

    pub fn leave(&mut self, model: &mut ChatModel, room: &str) -> Vec<Action> {
        model.close(room);
        let mut out = Vec::new();
        let msg = ClientMsg::Leave { room: room.to_owned() };
        self.request(msg, Req::Leave { room: room.to_owned() }, &mut out);
        out
    }

    /// Queues a message typed by the user; it goes out as soon as its room and the pace
    /// allow.
    pub fn send(
        &mut self,
        model: &mut ChatModel,
        room: &str,
        text: String,
        client_id: String,
        now: u64,
    ) -> Vec<Action> {
        self.reply(model, room, text, client_id, None, now)
    }

    /// `send` answering the message `reply_to`.
    pub fn reply(
        &mut self,
        model: &mut ChatModel,
        room: &str,
        text: String,
        client_id: String,
        reply_to: Option<Seq>,
        now: u64,
    ) -> Vec<Action> {
        let mut pending = Pending::new(client_id, room.to_owned(), text);
        pending.reply_to = reply_to;
        model.outbox.push(pending);
        let mut out = Vec::new();
        self.drain(model, now, &mut out);
        out
    }

    /// Sends a change to a message (an edit, a deletion, a reaction) now: it needs the
    /// room live on this connection, and is not kept for later (the user sees it refused).
    pub fn change(&mut self, model: &mut ChatModel, room: &str, msg: ClientMsg) -> Vec<Action> {
        if !self.online() || phase_of(model, room) != Some(Phase::Live) {
            model.notify("offline", "Not connected: try again in a moment.".to_owned());
            return Vec::new();
        }
        vec![Action::Send(Request { msg, reference: None })]
    }

    /// I have read `room` up to `seq`: recorded here at once, and on the server (which
    /// tells my other tabs and devices).
    pub fn read(&mut self, model: &mut ChatModel, room: &str, seq: Seq) -> Vec<Action> {
        let before = model.rooms.get(room).map_or(0, |v| v.last_read);
        // Only what the server is told moves here: a marker that cannot go now is asked
        // for again (the page checks each second), not lost.
        if seq <= before || !self.online() || phase_of(model, room) != Some(Phase::Live) {
            return Vec::new();
        }
        model.read_to(room, seq);
        vec![Action::Send(Request { msg: ClientMsg::Read { room: room.to_owned(), seq }, reference: None })]
    }

    pub fn typing(&self, model: &ChatModel, room: &str) -> Vec<Action> {
        if !self.online() || phase_of(model, room) != Some(Phase::Live) {
            return Vec::new();
        }
        let msg = ClientMsg::Typing { room: room.to_owned() };
        vec![Action::Send(Request { msg, reference: None })]
    }

    /// Asks for the page before the oldest message held, unless one is on its way.
    pub fn load_older(&mut self, model: &mut ChatModel, room: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if model.rooms.get(room).is_some_and(|v| v.live && v.has_older && !v.loading_older) {
            self.ask_older(model, room, 0, &mut out);
        }
        out
    }

    pub fn list_rooms(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.request(
            ClientMsg::ListRooms { cursor: None, limit: None },
            Req::ListRooms { attempt: 0 },
            &mut out,
        );
        out
    }

    /// The request a reply or an error with this `ref` answers (it is answered now).
    fn take_request(&mut self, reference: Option<&str>) -> Option<Req> {
        let conn = self.conn.as_mut()?;
        let id: u64 = reference?.parse().ok()?;
        let at = conn.requests.iter().position(|(r, _)| *r == id)?;
        Some(conn.requests.swap_remove(at).1)
    }

    /// Sends `msg` with a fresh `ref`, remembering what it asked for (online only).
    fn request(&mut self, msg: ClientMsg, req: Req, out: &mut Vec<Action>) {
        let Some(conn) = &mut self.conn else { return };
        self.next_ref += 1;
        conn.requests.push((self.next_ref, req));
        out.push(Action::Send(Request { msg, reference: Some(self.next_ref.to_string()) }));
    }

    fn after(ms: u64, timer: Timer, out: &mut Vec<Action>) {
        out.push(Action::After { ms, timer });
    }

    fn welcome(&mut self, model: &mut ChatModel, msg: ServerMsg, now: u64, out: &mut Vec<Action>) {
        let ServerMsg::Welcome { limits, .. } = &msg else { return };
        // Rooms are resumed alike whether or not the session was: a new session has no
        // dedup memory, so the outbox waits for each room's replay (and gap) either way.
        self.conn = Some(Conn { requests: Vec::new(), pacer: Pacer::new(limits, now), drain_at: None });
        model.apply(msg, now as f64);
        out.push(Action::Welcomed);
        let rooms: Vec<String> = model.rooms.keys().cloned().collect();
        for room in rooms {
            self.join(model, &room, 0, out);
        }
        self.request(ClientMsg::ListRooms { cursor: None, limit: None }, Req::ListRooms { attempt: 0 }, out);
    }

    /// Joins `room` from the last seq held (or fresh, holding none).
    fn join(&mut self, model: &mut ChatModel, room: &str, attempt: u32, out: &mut Vec<Action>) {
        if !self.online() {
            return;
        }
        set_phase(model, room, Phase::Joining);
        let since = model.rooms.get(room).and_then(RoomView::last_seq);
        let msg = ClientMsg::Join { room: room.to_owned(), since };
        self.request(msg, Req::Join { room: room.to_owned(), since, attempt }, out);
    }

    fn joined(&mut self, model: &mut ChatModel, msg: ServerMsg, now: u64, out: &mut Vec<Action>) {
        let ServerMsg::Joined { room, head, truncated, reference, .. } = &msg else { return };
        let (room, head, truncated) = (room.clone(), *head, *truncated);
        let since = match self.take_request(reference.as_deref()) {
            Some(Req::Join { since, .. }) => since,
            _ => model.rooms.get(&room).and_then(RoomView::last_seq),
        };
        let Some(view) = model.rooms.get_mut(&room) else { return };
        if since.is_some_and(|since| head < since) {
            // The server lost history we saw (restored from a backup, another database):
            // what we hold may not match its seqs any more. Start the room afresh; the
            // outbox stays and goes out after the new replay.
            view.forget_history();
            view.sync.gap = None;
            return self.join(model, &room, 0, out);
        }
        model.apply(msg, now as f64);
        // A fresh join's replay is the room as it is now, up to `head`: this copy is at
        // the head already (the messages that follow fill it in).
        if since.is_none()
            && let Some(view) = model.rooms.get_mut(&room)
        {
            view.last_event = Some(view.last_event.unwrap_or(0).max(head));
        }
        set_phase(model, &room, Phase::Replaying { head, since, truncated });
        self.check_replay(model, &room, now, out);
    }

    /// Ends the room's replay once the message with seq == head is held, opens its gap if
    /// the replay was truncated, and carries on with the gap or the outbox.
    fn check_replay(&mut self, model: &mut ChatModel, room: &str, now: u64, out: &mut Vec<Action>) {
        let Some(Phase::Replaying { head, since, truncated }) = phase_of(model, room) else { return };
        let page = model.limits.as_ref().map_or(JOIN_RECENT as Seq, |l| Seq::from(l.max_history.max(1)));
        let Some(view) = model.rooms.get_mut(room) else { return };
        if view.last_seq().unwrap_or(0) < head {
            return;
        }
        view.sync.phase = Some(Phase::Live);
        if let (true, Some(since)) = (truncated, since) {
            // No message replayed (only changes to older ones): nothing held is current.
            let first = view.messages.iter().map(|m| m.seq).find(|&seq| seq > since).unwrap_or(head + 1);
            open_gap(view, since, first, page);
        }
        self.carry_on(model, room, now, out);
    }

    /// After a replay or a gap page: walk the room's gap further, or send its outbox.
    fn carry_on(&mut self, model: &mut ChatModel, room: &str, now: u64, out: &mut Vec<Action>) {
        if phase_of(model, room) != Some(Phase::Live) {
            return;
        }
        if let Some(gap) = gap_of(model, room) {
            let outbox_waits = model.outbox.iter().any(|p| p.room == room && p.tried);
            if outbox_waits {
                if !gap.asked {
                    self.ask_gap(model, room, gap, 0, out);
                }
                return;
            }
            // Nothing of ours was sent that could be in it: no walk.
            set_gap(model, room, None);
        }
        self.drain(model, now, out);
    }

    fn ask_gap(&mut self, model: &mut ChatModel, room: &str, gap: Gap, attempt: u32, out: &mut Vec<Action>) {
        set_gap(model, room, Some(Gap { asked: true, ..gap }));
        let limit = (gap.before - gap.after - 1).min(gap.page) as u32;
        let msg = ClientMsg::History { room: room.to_owned(), before: gap.before, limit };
        self.request(msg, Req::Gap { room: room.to_owned(), attempt }, out);
    }

    fn ask_older(&mut self, model: &mut ChatModel, room: &str, attempt: u32, out: &mut Vec<Action>) {
        if !self.online() {
            return;
        }
        let Some(view) = model.rooms.get_mut(room) else { return };
        let Some(before) = view.first_seq() else { return };
        view.loading_older = true;
        let msg = ClientMsg::History { room: room.to_owned(), before, limit: JOIN_RECENT as u32 };
        self.request(msg, Req::Older { room: room.to_owned(), attempt }, out);
    }

    fn history(&mut self, model: &mut ChatModel, msg: ServerMsg, now: u64, out: &mut Vec<Action>) {
        let ServerMsg::History { room, messages, has_more, reference } = msg else { return };
        let Some(Req::Gap { .. }) = self.take_request(reference.as_deref()) else {
            let page = ServerMsg::History { room, messages, has_more, reference: None };
            return model.apply(page, now as f64);
        };
        let Some(mut gap) = gap_of(model, &room) else { return };
        let walked = match messages.first() {
            Some(first) if has_more && first.seq > gap.after + 1 => {
                gap.before = first.seq;
                false
            }
            // Reached `since` (or the start of the room).
            _ => true,
        };
        for m in &messages {
            model.acknowledge(m);
        }
        // The walk keeps nothing: the room was reloaded from the replay.
        set_gap(model, &room, (!walked).then_some(Gap { asked: false, ..gap }));
        self.carry_on(model, &room, now, out);
    }

    fn request_failed(
        &mut self,
        model: &mut ChatModel,
        req: Req,
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let limited = code == ErrorCode::RateLimited;
        let wait =
            |attempt| if limited { retry_after_ms.unwrap_or(BASE_RETRY_MS) } else { backoff_ms(attempt) };
        match &req {
            Req::Join { room, attempt, .. } => {
                let Some(view) = model.rooms.get_mut(room) else { return };
                view.live = false;
                view.sync.phase = Some(Phase::Failed);
                if !limited {
                    model.notify(code.as_str(), format!("Could not join #{room}: {message}"));
                }
                // A name the server refuses stays refused; anything else may pass later.
                if code != ErrorCode::InvalidRoom {
                    Self::after(wait(*attempt), Timer::Retry(req), out);
                }
            }
            Req::Older { room, attempt } => {
                let Some(view) = model.rooms.get_mut(room) else { return };
                if limited {
                    Self::after(wait(*attempt), Timer::Retry(req), out);
                } else {
                    view.loading_older = false;
                    model.notify(code.as_str(), format!("Could not load older messages: {message}"));
                }
            }
            Req::Gap { room, attempt } => {
                let Some(gap) = gap_of(model, room) else { return };
                set_gap(model, room, Some(Gap { asked: false, ..gap }));
                // Not in the room (its join failed): the next join walks the gap again.
                if code != ErrorCode::NotJoined {
                    Self::after(wait(*attempt), Timer::Retry(req), out);
                }
            }
            Req::ListRooms { attempt } => {
                if limited {
                    Self::after(wait(*attempt), Timer::Retry(req), out);
                }
            }
            Req::Leave { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_failed(
        &mut self,
        model: &mut ChatModel,
        client_id: &str,
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(entry) = model.outbox.iter_mut().find(|p| p.client_id == client_id) else {
            // Not a message of the outbox: an edit or a deletion, refused. Say so.
            return model.notify(code.as_str(), message);
        };
        match code {
            // Not stored, and its client_id released: the server named the slot to resend it in.
            ErrorCode::RateLimited => {
                let slot = now + retry_after_ms.unwrap_or(BASE_RETRY_MS);
                entry.delivery = Delivery::RateLimited { slot };
                if let Some(conn) = &mut self.conn {
                    conn.pacer.hold_past(slot);
                }
                self.wake_at(slot, now, out);
            }
            // The store failed; the same client_id may be sent again.
            ErrorCode::Internal => {
                let until = now + backoff_ms(entry.failures);
                entry.failures += 1;
                entry.delivery = Delivery::Backoff { until };
                self.wake_at(until, now, out);
            }
            // The server does not have us in the room: join again, then resend.
            ErrorCode::NotJoined => {
                entry.delivery = Delivery::Queued;
                let room = entry.room.clone();
                if let Some(view) = model.rooms.get_mut(&room)
                    && view.sync.phase == Some(Phase::Live)
                {
                    view.live = false;
                    self.join(model, &room, 0, out);
                }
            }
            // Refused for good (too long, empty, bad room): it would never be stored.
            _ => {
                model.outbox.retain(|p| p.client_id != client_id);
                model.notify(code.as_str(), message);
            }
        }
    }

    fn retry(&mut self, model: &mut ChatModel, req: Req, out: &mut Vec<Action>) {
        match req {
            Req::Join { room, attempt, .. } => {
                if phase_of(model, &room) == Some(Phase::Failed) {
                    self.join(model, &room, attempt + 1, out);
                }
            }
            Req::Older { room, attempt } => {
                if model.rooms.get(&room).is_some_and(|v| v.loading_older) {
                    self.ask_older(model, &room, attempt + 1, out);
                }
            }
            Req::Gap { room, attempt } => {
                if let Some(gap) = gap_of(model, &room)
                    && !gap.asked
                    && phase_of(model, &room) == Some(Phase::Live)
                {
                    self.ask_gap(model, &room, gap, attempt + 1, out);
                }
            }
            Req::ListRooms { attempt } => {
                let msg = ClientMsg::ListRooms { cursor: None, limit: None };
                self.request(msg, Req::ListRooms { attempt: attempt + 1 }, out);
            }
            Req::Leave { .. } => {}
        }
    }

    /// Sends, in order, the outbox entries whose room is ready, as the pacer allows. A
    /// room is ready once its replay is complete and its gap walked; within a room an
    /// entry waiting to be sent again holds back the ones typed after it, so messages are
    /// stored in the order they were typed. A rate-limited entry goes in the slot the
    /// server promised it, without a slot of the pacer's (which is held past it).
    fn drain(&mut self, model: &mut ChatModel, now: u64, out: &mut Vec<Action>) {
        let Some(conn) = &mut self.conn else { return };
        let mut wake: Option<u64> = None;
        let mut held_back: Vec<String> = Vec::new();
        let ChatModel { outbox, rooms, .. } = model;
        for p in outbox.iter_mut() {
            let ready =
                rooms.get(&p.room).is_some_and(|v| v.sync.phase == Some(Phase::Live) && v.sync.gap.is_none());
            if p.delivery == Delivery::Sent || !ready || held_back.contains(&p.room) {
                continue;
            }
            if let Some(at) = p.delivery.retry_at()
                && at > now
            {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                held_back.push(p.room.clone());
                continue;
            }
            let paced = match p.delivery {
                Delivery::RateLimited { .. } => Ok(()),
                _ => conn.pacer.take(now),
            };
            match paced {
                Ok(()) => {
                    p.delivery = Delivery::Sent;
                    p.tried = true;
                    let msg = ClientMsg::Send {
                        room: p.room.clone(),
                        text: p.text.clone(),
                        client_id: p.client_id.clone(),
                        reply_to: p.reply_to,
                    };
                    out.push(Action::Send(Request { msg, reference: None }));
                }
                Err(at) => {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    break;
                }
            }
        }
        if let Some(at) = wake {
            self.wake_at(at, now, out);
        }
    }

    /// Sets a `Drain` timer for `at`, unless one is due already by then.
    fn wake_at(&mut self, at: u64, now: u64, out: &mut Vec<Action>) {
        let Some(conn) = &mut self.conn else { return };
        if conn.drain_at.is_some_and(|due| due > now && due <= at) {
            return;
        }
        conn.drain_at = Some(at);
        Self::after(at.saturating_sub(now), Timer::Drain, out);
    }
}

/// Records the gap (since, first) a truncated replay left: the copy is reloaded from
/// `first` (what is older comes back as history, in its current state) and only the
/// start of the gap is looked at, for messages of ours.
fn open_gap(view: &mut RoomView, since: Seq, first: Seq, page: Seq) {
    if first <= since + 1 {
        return;
    }
    let limit = GAP_PAGES * page;
    view.keep_from(first);
    view.sync.gap = Some(match view.sync.gap {
        // An earlier gap is still being walked: our messages, if stored, are in that one.
        Some(old) => old,
        None => Gap { after: since, before: first.min(since + 1 + limit), page, asked: false },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> crate::protocol::UserInfo {
        crate::protocol::UserInfo {
            id: "me".into(),
            username: None,
            display_name: "me".into(),
            role: crate::protocol::ServerRole::Guest,
            guest: true,
        }
    }
    use crate::protocol::{ChatMessage, Limits};
    use crate::ui::state::Pending;

    fn limits(max_history: u32, rate: u32, burst: u32) -> Limits {
        Limits {
            max_text_chars: 4000,
            max_nick_chars: 32,
            max_room_chars: 64,
            max_frame_bytes: 65536,
            max_rooms_per_connection: 32,
            max_history,
            messages_per_sec: rate,
            message_burst: burst,
        }
    }

    fn msg(room: &str, seq: Seq, nick: &str) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            nick: nick.into(),
            text: format!("m{seq}"),
            ts: 0,
            client_id: format!("{nick}-{seq}"),
            user: nick.into(),
            ..Default::default()
        }
    }

    fn message(room: &str, seq: Seq, nick: &str) -> ServerMsg {
        ServerMsg::Message(msg(room, seq, nick))
    }

    fn joined(room: &str, head: Seq, truncated: bool, reference: &str) -> ServerMsg {
        ServerMsg::Joined {
            room: room.into(),
            members: vec!["me".into()],
            member_count: 1,
            head,
            truncated,
            reference: Some(reference.into()),
            guests: Vec::new(),
            visibility: Default::default(),
            dm: false,
            topic: String::new(),
            role: None,
            muted: false,
            last_read: None,
            unread: None,
            mentions: None,
            usernames: Vec::new(),
        }
    }

    fn error(
        code: ErrorCode,
        client_id: Option<&str>,
        retry_after_ms: Option<u64>,
        reference: Option<&str>,
    ) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: "no".into(),
            client_id: client_id.map(Into::into),
            retry_after_ms,
            reference: reference.map(Into::into),
        }
    }

    fn history(
        room: &str,
        seqs: std::ops::RangeInclusive<Seq>,
        has_more: bool,
        reference: &str,
    ) -> ServerMsg {
        ServerMsg::History {
            room: room.into(),
            messages: seqs.map(|s| msg(room, s, "bob")).collect(),
            has_more,
            reference: Some(reference.into()),
        }
    }

    /// The frames among `actions`, with their refs.
    fn frames(actions: &[Action]) -> Vec<(ClientMsg, Option<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(r) => Some((r.msg.clone(), r.reference.clone())),
                _ => None,
            })
            .collect()
    }

    /// The `client_id`s of the `send` frames among `actions`.
    fn sends(actions: &[Action]) -> Vec<String> {
        frames(actions)
            .into_iter()
            .filter_map(|(m, _)| match m {
                ClientMsg::Send { client_id, .. } => Some(client_id),
                _ => None,
            })
            .collect()
    }

    fn timers(actions: &[Action]) -> Vec<(u64, Timer)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::After { ms, timer } => Some((*ms, timer.clone())),
                _ => None,
            })
            .collect()
    }

    fn only_timer(actions: &[Action]) -> (u64, Timer) {
        let mut all = timers(actions);
        assert_eq!(all.len(), 1, "one timer in {actions:?}");
        all.remove(0)
    }

    /// The ref of the only request among `actions`.
    fn only_ref(actions: &[Action]) -> String {
        let refs: Vec<String> = frames(actions).into_iter().filter_map(|(_, r)| r).collect();
        assert_eq!(refs.len(), 1, "one request in {actions:?}");
        refs[0].clone()
    }

    fn queue(model: &mut ChatModel, room: &str, client_id: &str) {
        model.outbox.push(Pending::new(client_id.into(), room.into(), format!("text of {client_id}")));
    }

    /// Online as "me" in room "a", which holds seqs 1..=held; returns the join's ref.
    fn online(limits: Limits, held: Seq) -> (Syncer, ChatModel, String) {
        let mut model = ChatModel { nick: Some("me".into()), user: Some(me()), ..Default::default() };
        model.open("a");
        model.seed("a", (1..=held).map(|s| msg("a", s, "bob")).collect());
        let mut sync = Syncer::default();
        let welcome = ServerMsg::Welcome {
            session: "s".into(),
            nick: "me".into(),
            limits,
            protocol: 1,
            reference: None,
            user: Some(me()),
        };
        let actions = sync.on_frame(&mut model, welcome, 0);
        let join_ref = frames(&actions)
            .into_iter()
            .find_map(|(m, r)| matches!(m, ClientMsg::Join { .. }).then_some(r).flatten())
            .expect("a join");
        (sync, model, join_ref)
    }

    fn seqs(model: &ChatModel, room: &str) -> Vec<Seq> {
        model.rooms[room].messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn welcome_rejoins_every_room_from_its_last_seq_each_with_its_own_ref() {
        let mut model = ChatModel { nick: Some("me".into()), user: Some(me()), ..Default::default() };
        model.open("a");
        model.seed("a", vec![msg("a", 5, "bob")]);
        model.open("b");
        let mut sync = Syncer::default();
        assert!(matches!(sync.hello(&model).msg, ClientMsg::Hello { .. }));
        let welcome = ServerMsg::Welcome {
            session: "s".into(),
            nick: "me".into(),
            limits: limits(500, 20, 40),
            protocol: 1,
            reference: None,
            user: Some(me()),
        };
        let actions = sync.on_frame(&mut model, welcome, 0);
        assert_eq!(actions[0], Action::Welcomed);
        let sent = frames(&actions);
        assert_eq!(
            sent.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
            vec![
                ClientMsg::Join { room: "a".into(), since: Some(5) },
                ClientMsg::Join { room: "b".into(), since: None },
                ClientMsg::ListRooms { cursor: None, limit: None },
            ]
        );
        let mut refs: Vec<_> = sent.into_iter().map(|(_, r)| r.expect("a ref")).collect();
        refs.dedup();
        assert_eq!(refs.len(), 3, "distinct refs");
    }

    #[test]
    fn the_outbox_waits_for_the_replay_and_what_the_replay_shows_stored_is_not_resent() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 5);
        queue(&mut model, "a", "me-6");
        queue(&mut model, "a", "later");
        assert!(sends(&sync.on_frame(&mut model, joined("a", 7, false, &join), 0)).is_empty());
        // seq 6 is ours: stored while we were away.
        assert!(sends(&sync.on_frame(&mut model, message("a", 6, "me"), 0)).is_empty());
        // The replay ends with seq == head: only what was not stored goes out.
        let actions = sync.on_frame(&mut model, message("a", 7, "bob"), 0);
        assert_eq!(sends(&actions), vec!["later".to_owned()]);
        assert_eq!(model.outbox.len(), 1);
        assert_eq!(model.outbox[0].delivery, Delivery::Sent);
    }

    #[test]
    fn a_replay_with_nothing_new_completes_at_once() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 5);
        queue(&mut model, "a", "x");
        let actions = sync.on_frame(&mut model, joined("a", 5, false, &join), 0);
        assert_eq!(sends(&actions), vec!["x".to_owned()]);
    }

    #[test]
    fn a_failed_history_clears_loading_and_says_so() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        sync.on_frame(&mut model, joined("a", 80, false, &join), 0);
        for seq in 31..=80 {
            sync.on_frame(&mut model, message("a", seq, "bob"), 0);
        }
        let actions = sync.load_older(&mut model, "a");
        assert_eq!(frames(&actions)[0].0, ClientMsg::History { room: "a".into(), before: 31, limit: 50 });
        assert!(model.rooms["a"].loading_older);
        let r = only_ref(&actions);
        let after = sync.on_frame(&mut model, error(ErrorCode::Internal, None, None, Some(&r)), 0);
        assert!(!model.rooms["a"].loading_older);
        assert_eq!(model.notice.as_ref().map(|n| n.0.as_str()), Some("internal"));
        assert!(after.is_empty(), "no automatic retry: {after:?}");
    }

    #[test]
    fn a_rate_limited_history_is_asked_again_after_the_wait() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        sync.on_frame(&mut model, joined("a", 80, false, &join), 0);
        sync.on_frame(&mut model, message("a", 80, "bob"), 0);
        let r = only_ref(&sync.load_older(&mut model, "a"));
        let actions = sync.on_frame(&mut model, error(ErrorCode::RateLimited, None, Some(300), Some(&r)), 0);
        let (300, timer) = only_timer(&actions) else { panic!("{actions:?}") };
        assert!(model.rooms["a"].loading_older && model.notice.is_none());
        let again = sync.on_timer(&mut model, timer, 300);
        assert_eq!(frames(&again)[0].0, ClientMsg::History { room: "a".into(), before: 80, limit: 50 });
        assert_ne!(only_ref(&again), r);
    }

    #[test]
    fn a_failed_join_marks_the_room_not_live_and_rejoins_with_backoff() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 5);
        let actions = sync.on_frame(&mut model, error(ErrorCode::Internal, None, None, Some(&join)), 0);
        assert!(!model.rooms["a"].live);
        assert!(model.notice.as_ref().is_some_and(|n| n.1.contains("#a")));
        let (500, timer) = only_timer(&actions) else { panic!("{actions:?}") };
        let rejoin = sync.on_timer(&mut model, timer, 500);
        assert_eq!(frames(&rejoin)[0].0, ClientMsg::Join { room: "a".into(), since: Some(5) });
        // It fails again: the wait doubles.
        let again =
            sync.on_frame(&mut model, error(ErrorCode::Internal, None, None, Some(&only_ref(&rejoin))), 500);
        assert_eq!(timers(&again)[0].0, 1000);
        // A name the server refuses is not retried.
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        assert!(
            timers(&sync.on_frame(&mut model, error(ErrorCode::InvalidRoom, None, None, Some(&join)), 0))
                .is_empty()
        );
    }

    #[test]
    fn a_rate_limited_join_is_retried_after_the_wait_quietly() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        let actions =
            sync.on_frame(&mut model, error(ErrorCode::RateLimited, None, Some(250), Some(&join)), 0);
        assert_eq!(
            timers(&actions),
            vec![(250, Timer::Retry(Req::Join { room: "a".into(), since: None, attempt: 0 }))]
        );
        assert!(model.notice.is_none());
        // Opening the room again meanwhile joins at once; the timer then finds it joining.
        assert_eq!(frames(&sync.open(&mut model, "a")).len(), 1);
        let timer = timers(&actions).remove(0).1;
        assert!(sync.on_timer(&mut model, timer, 250).is_empty());
    }

    #[test]
    fn a_head_below_since_drops_the_room_and_joins_it_fresh_keeping_the_outbox() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 9);
        queue(&mut model, "a", "x");
        let actions = sync.on_frame(&mut model, joined("a", 3, false, &join), 0);
        assert!(model.rooms["a"].messages.is_empty());
        assert_eq!(frames(&actions)[0].0, ClientMsg::Join { room: "a".into(), since: None });
        assert!(sends(&actions).is_empty());
        // A fresh join is the room as it is now, up to its head: the outbox goes at once
        // (it was never sent, so it cannot be among the messages that follow).
        let fresh = only_ref(&actions);
        assert_eq!(sends(&sync.on_frame(&mut model, joined("a", 3, false, &fresh), 0)), vec!["x".to_owned()]);
        sync.on_frame(&mut model, message("a", 1, "bob"), 0);
        sync.on_frame(&mut model, message("a", 2, "bob"), 0);
        sync.on_frame(&mut model, message("a", 3, "bob"), 0);
        assert_eq!(seqs(&model, "a"), vec![1, 2, 3]);
        assert_eq!(model.rooms["a"].last_seq(), Some(3));
    }

    /// Joined with `since` 5 and truncated: the replay holds only `replay`.
    fn truncated(
        limits: Limits,
        head: Seq,
        replay: std::ops::RangeInclusive<Seq>,
    ) -> (Syncer, ChatModel, Vec<Action>) {
        let (mut sync, mut model, join) = online(limits, 5);
        queue(&mut model, "a", "me-8");
        model.outbox[0].tried = true; // sent before the connection dropped
        queue(&mut model, "a", "unsent");
        let mut actions = sync.on_frame(&mut model, joined("a", head, true, &join), 0);
        for seq in replay {
            actions = sync.on_frame(&mut model, message("a", seq, "bob"), 0);
        }
        (sync, model, actions)
    }

    #[test]
    fn a_small_gap_is_not_patched_but_searched_for_ours_while_the_outbox_waits() {
        // Gap 6..=30 with pages of 10: messages held before it may have changed in it, so
        // the copy restarts at the replay; the gap is read only for messages of ours.
        let (mut sync, mut model, mut actions) = truncated(limits(10, 20, 40), 40, 31..=40);
        let mut pages = vec![(21..=30, true), (11..=20, true), (6..=10, true)].into_iter();
        let mut befores = Vec::new();
        while let Some((ClientMsg::History { before, limit, .. }, Some(r))) =
            frames(&actions).into_iter().next()
        {
            assert!(sends(&actions).is_empty(), "the outbox waits for the gap");
            befores.push((before, limit));
            let (range, more) = pages.next().expect("a page for each request");
            let mut page = history("a", range, more, &r);
            if let ServerMsg::History { messages, .. } = &mut page
                && before == 11
            {
                messages[2] = msg("a", 8, "me"); // ours, stored while we were away
            }
            actions = sync.on_frame(&mut model, page, 0);
        }
        assert_eq!(befores, vec![(31, 10), (21, 10), (11, 5)]);
        assert_eq!(seqs(&model, "a"), (31..=40).collect::<Vec<_>>());
        assert!(model.rooms["a"].has_older, "older messages come back by scrolling up");
        assert_eq!(sends(&actions), vec!["unsent".to_owned()], "seq 8 was ours: not resent");
    }

    #[test]
    fn a_big_gap_reloads_and_only_looks_for_our_messages_just_after_since() {
        // Gap 6..=190 with pages of 10 (more than 4 pages): the replay replaces the copy.
        let (mut sync, mut model, actions) = truncated(limits(10, 20, 40), 200, 191..=200);
        assert_eq!(seqs(&model, "a"), (191..=200).collect::<Vec<_>>());
        assert!(model.rooms["a"].has_older);
        assert_eq!(frames(&actions)[0].0, ClientMsg::History { room: "a".into(), before: 46, limit: 10 });
        let r = only_ref(&actions);
        let mut page = history("a", 36..=45, true, &r);
        let ServerMsg::History { messages, .. } = &mut page else { unreachable!() };
        messages[0] = msg("a", 36, "me");
        let next = sync.on_frame(&mut model, page, 0);
        // Nothing found: keep looking, down to since.
        let r = only_ref(&next);
        let mut page = history("a", 26..=35, true, &r);
        let ServerMsg::History { messages, .. } = &mut page else { unreachable!() };
        messages[2] = msg("a", 8 + 20, "me");
        model.outbox[0].client_id = "me-28".into();
        let done = sync.on_frame(&mut model, page, 0);
        assert_eq!(sends(&done), vec!["unsent".to_owned()]);
        assert_eq!(seqs(&model, "a"), (191..=200).collect::<Vec<_>>(), "looked at, not kept");
    }

    #[test]
    fn a_big_gap_with_an_empty_outbox_needs_no_walk() {
        let (mut sync, mut model, join) = online(limits(10, 20, 40), 5);
        sync.on_frame(&mut model, joined("a", 200, true, &join), 0);
        let mut last = Vec::new();
        for seq in 191..=200 {
            last = sync.on_frame(&mut model, message("a", seq, "bob"), 0);
        }
        assert!(frames(&last).is_empty());
        queue(&mut model, "a", "new");
        assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, 0)), vec!["new".to_owned()]);
    }

    #[test]
    fn a_gap_walk_cut_by_a_lost_connection_goes_on_after_the_next_replay() {
        let (mut sync, mut model, actions) = truncated(limits(10, 20, 40), 40, 31..=40);
        let r = only_ref(&actions);
        sync.on_frame(&mut model, history("a", 21..=30, true, &r), 0);
        sync.disconnected(&mut model, 500);
        let welcome = ServerMsg::Welcome {
            session: "s".into(),
            nick: "me".into(),
            limits: limits(10, 20, 40),
            protocol: 1,
            reference: None,
            user: Some(me()),
        };
        let actions = sync.on_frame(&mut model, welcome, 1000);
        let (ClientMsg::Join { since: Some(40), .. }, Some(join)) = frames(&actions)[0].clone() else {
            panic!("{actions:?}")
        };
        let actions = sync.on_frame(&mut model, joined("a", 40, false, &join), 1000);
        assert_eq!(frames(&actions)[0].0, ClientMsg::History { room: "a".into(), before: 21, limit: 10 });
        assert!(sends(&actions).is_empty());
    }

    /// Online in "a" with its replay complete and `n` entries queued at time 0.
    fn ready_with_outbox(limits: Limits, n: usize) -> (Syncer, ChatModel, Vec<Action>) {
        let (mut sync, mut model, join) = online(limits, 0);
        for i in 0..n {
            queue(&mut model, "a", &format!("c{i}"));
        }
        let actions = sync.on_frame(&mut model, joined("a", 0, false, &join), 0);
        (sync, model, actions)
    }

    #[test]
    fn the_outbox_drains_a_burst_then_at_the_rate() {
        // Burst 5 (3 after the reserve), 20/s.
        let (mut sync, mut model, actions) = ready_with_outbox(limits(500, 20, 5), 5);
        assert_eq!(sends(&actions), vec!["c0", "c1", "c2"]);
        assert_eq!(timers(&actions), vec![(50, Timer::Drain)]);
        let actions = sync.on_timer(&mut model, Timer::Drain, 50);
        assert_eq!((sends(&actions), timers(&actions)), (vec!["c3".to_owned()], vec![(50, Timer::Drain)]));
        assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, 100)), vec!["c4"]);
        // Typed now, the pace still holds it back.
        let typed = sync.send(&mut model, "a", "t".into(), "c5".into(), 110);
        assert_eq!((sends(&typed), timers(&typed)), (vec![], vec![(40, Timer::Drain)]));
    }

    #[test]
    fn a_rate_limited_send_waits_for_its_slot_showing_as_retrying_and_keeps_its_place() {
        let (mut sync, mut model, actions) = ready_with_outbox(limits(500, 20, 40), 2);
        assert_eq!(sends(&actions), vec!["c0", "c1"]);
        let refused =
            sync.on_frame(&mut model, error(ErrorCode::RateLimited, Some("c0"), Some(400), None), 10);
        assert_eq!(timers(&refused), vec![(400, Timer::Drain)]);
        assert_eq!(model.outbox[0].delivery, Delivery::RateLimited { slot: 410 });
        assert!(model.outbox[0].delivery.is_retrying() && !model.outbox[1].delivery.is_retrying());
        // Typed meanwhile: waits behind the refused one.
        assert!(sends(&sync.send(&mut model, "a", "t".into(), "c2".into(), 20)).is_empty());
        assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, 410)), vec!["c0"]);
        assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, 460)), vec!["c2"]);
    }

    #[test]
    fn refused_sends_each_go_in_their_own_promised_slot() {
        let (mut sync, mut model, actions) = ready_with_outbox(limits(500, 20, 40), 4);
        assert_eq!(sends(&actions).len(), 4);
        // The server had room for one: the others get successive slots.
        for (id, wait) in [("c1", 50), ("c2", 100), ("c3", 150)] {
            sync.on_frame(&mut model, error(ErrorCode::RateLimited, Some(id), Some(wait), None), 0);
        }
        let typed = sync.send(&mut model, "a", "t".into(), "c4".into(), 0);
        assert!(sends(&typed).is_empty());
        for (at, id) in [(50, "c1"), (100, "c2"), (150, "c3"), (200, "c4")] {
            assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, at)), vec![id], "at {at}");
        }
    }

    #[test]
    fn a_send_the_store_failed_stays_and_goes_again_after_a_backoff() {
        let (mut sync, mut model, _) = ready_with_outbox(limits(500, 20, 40), 1);
        let failed = sync.on_frame(&mut model, error(ErrorCode::Internal, Some("c0"), None, None), 0);
        assert_eq!(timers(&failed), vec![(500, Timer::Drain)]);
        assert_eq!(model.outbox[0].delivery, Delivery::Backoff { until: 500 });
        assert_eq!(sends(&sync.on_timer(&mut model, Timer::Drain, 500)), vec!["c0"]);
        let again = sync.on_frame(&mut model, error(ErrorCode::Internal, Some("c0"), None, None), 600);
        assert_eq!(timers(&again), vec![(1000, Timer::Drain)]);
        assert!(model.notice.is_none());
    }

    #[test]
    fn a_send_refused_for_good_leaves_the_outbox_with_a_notice() {
        let (mut sync, mut model, _) = ready_with_outbox(limits(500, 20, 40), 2);
        sync.on_frame(&mut model, error(ErrorCode::TooLong, Some("c1"), None, None), 0);
        assert_eq!(model.outbox.iter().map(|p| p.client_id.as_str()).collect::<Vec<_>>(), vec!["c0"]);
        assert_eq!(model.notice.as_ref().map(|n| n.0.as_str()), Some("too_long"));
    }

    #[test]
    fn not_joined_on_a_send_joins_again_then_resends() {
        let (mut sync, mut model, _) = ready_with_outbox(limits(500, 20, 40), 1);
        let actions = sync.on_frame(&mut model, error(ErrorCode::NotJoined, Some("c0"), None, None), 0);
        let r = only_ref(&actions);
        assert!(matches!(frames(&actions)[0].0, ClientMsg::Join { .. }));
        assert_eq!(sends(&sync.on_frame(&mut model, joined("a", 0, false, &r), 0)), vec!["c0"]);
    }

    #[test]
    fn a_refused_typing_notice_is_not_news_but_other_unattributed_errors_are() {
        let (mut sync, mut model, _) = online(limits(500, 20, 40), 0);
        assert!(
            sync.on_frame(&mut model, error(ErrorCode::RateLimited, None, Some(500), None), 0).is_empty()
        );
        assert!(model.notice.is_none());
        sync.on_frame(&mut model, error(ErrorCode::BadFrame, None, None, None), 0);
        assert_eq!(model.notice.as_ref().map(|n| n.0.as_str()), Some("bad_frame"));
    }

    #[test]
    fn leaving_drops_the_rooms_outbox_and_a_late_left_spares_a_room_opened_again() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        sync.on_frame(&mut model, joined("a", 0, false, &join), 0);
        queue(&mut model, "a", "x");
        let actions = sync.leave(&mut model, "a");
        assert_eq!(frames(&actions)[0].0, ClientMsg::Leave { room: "a".into() });
        assert!(model.outbox.is_empty() && !model.rooms.contains_key("a"));
        // Opened again before the answer came: the answer does not close it.
        assert!(matches!(frames(&sync.open(&mut model, "a"))[0].0, ClientMsg::Join { .. }));
        let left = ServerMsg::Left { room: "a".into(), reference: Some(only_ref(&actions)) };
        sync.on_frame(&mut model, left, 0);
        assert!(model.rooms.contains_key("a"));
    }

    #[test]
    fn typing_goes_out_only_in_a_room_joined_on_this_connection() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 0);
        assert!(sync.typing(&model, "a").is_empty(), "still joining");
        sync.on_frame(&mut model, joined("a", 0, false, &join), 0);
        assert_eq!(frames(&sync.typing(&model, "a"))[0].0, ClientMsg::Typing { room: "a".into() });
        sync.disconnected(&mut model, 500);
        assert!(sync.typing(&model, "a").is_empty());
    }

    #[test]
    fn nick_taken_asks_for_another_nick() {
        let (mut sync, mut model, _) = online(limits(500, 20, 40), 0);
        let actions = sync.on_frame(&mut model, ServerMsg::error(ErrorCode::NickTaken, "taken"), 0);
        assert_eq!(actions, vec![Action::Rehello]);
        assert!(model.nick.is_none());
        assert_eq!(model.nick_rejected.as_deref(), Some("taken"));
    }

    #[test]
    fn a_read_marker_moves_only_when_it_can_be_sent() {
        let (mut sync, mut model, join) = online(limits(500, 20, 40), 3);
        // Still joining: nothing goes out, and nothing moves here (the page asks again).
        assert!(sync.read(&mut model, "a", 3).is_empty());
        assert_eq!(model.rooms["a"].last_read, 0);
        sync.on_frame(&mut model, joined("a", 3, false, &join), 0);
        let sent = frames(&sync.read(&mut model, "a", 3));
        assert_eq!(sent, vec![(ClientMsg::Read { room: "a".into(), seq: 3 }, None)]);
        assert_eq!(model.rooms["a"].last_read, 3);
        assert!(sync.read(&mut model, "a", 2).is_empty(), "never back");
    }
}
