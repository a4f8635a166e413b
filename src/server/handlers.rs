//! Client requests, one handler each: validate into newtypes, check the rate, act, reply.
//!
//! Every reply is queued through the connection's byte budget (`ConnHandle::reply`) and
//! carries the request's `ref`. Every reply is bounded in bytes (`Config::reply_limit`) as
//! well as in count, so each one can always be written.

use super::{
    auth::{Identity, Principal},
    hub::{Hub, HubError},
    moderation::Action,
    outbound::{CloseReason, ConnHandle, Outbound},
    rate::{Refusal, TokenBucket},
    room::{Room, encode},
    search::Query,
    session::{SendState, Session},
    store::committer::Job,
};
use crate::protocol::{
    ChatMessage, ClientMsg, DeleteEvent, EditEvent, ErrorCode, JOIN_RECENT, MAX_SEARCH_PAGE, MessageText,
    Nick, PROTOCOL_VERSION, ROOMS_PAGE, ReactEvent, Request, RoomEvent, RoomName, SEARCH_PAGE, SearchHit,
    Seq, ServerMsg, ValidationError, Visibility, check_client_id,
};
use axum::extract::ws::Utf8Bytes;
use std::{
    net::IpAddr,
    sync::{Arc, Mutex, atomic::Ordering},
};

/// Typing events per second a connection may send (burst of 3).
const TYPING_RATE: f64 = 2.0;
/// Joins per second a connection may make (burst of 10).
const JOIN_RATE: f64 = 5.0;
/// `history` requests per second (burst of 10): each is a store read.
const HISTORY_RATE: f64 = 5.0;
/// `list_rooms` requests per second (burst of 5): each sorts the directory.
const LIST_RATE: f64 = 2.0;
/// Moderation and room-creation requests per second (burst of 10): each writes the store.
const MODERATION_RATE: f64 = 2.0;
/// Reactions per second a connection may change (burst of 10).
const REACT_RATE: f64 = 4.0;
/// Read markers per second per account (burst of 10): each may be a store write.
const READ_RATE: f64 = 4.0;
const READ_BURST: f64 = 10.0;
use super::conversation::{SEARCH_BURST, SEARCH_RATE};
/// A guest address's `send` allowance, in multiples of one session's: people behind one
/// NAT share it, so it is wider, but ten guest tabs still do not get ten times the rate.
const GUEST_ADDRESS_SCALE: u32 = 4;

/// The reader's state: who this connection is and what it joined.
pub struct Reader {
    hub: Arc<Hub>,
    conn: Arc<ConnHandle>,
    peer: IpAddr,
    /// Who the WebSocket upgrade signed in as (cookie or Bearer token), if anyone.
    principal: Option<Box<Principal>>,
    session: Option<Arc<Session>>,
    /// Who this connection is, from `hello` on.
    identity: Option<Identity>,
    joined: Joined,
    /// The `ref` of the request being handled, echoed on its reply.
    reference: Option<String>,
    /// The account's (or guest session's) `send` allowance, shared by its connections;
    /// a guest's address has one more.
    sends: Vec<Arc<Mutex<TokenBucket>>>,
    moderation: TokenBucket,
    reactions: TokenBucket,
    /// The account's read-marker and search allowances (a guest's address has one more
    /// search allowance), shared by its connections: each is a store read or write.
    reads: Vec<Arc<Mutex<TokenBucket>>>,
    searches: Vec<Arc<Mutex<TokenBucket>>>,
    typing: TokenBucket,
    joins: TokenBucket,
    history: TokenBucket,
    lists: TokenBucket,
    /// Refusals of a client that does not wait as told; when it runs dry the client is
    /// abusive and is closed.
    strikes: TokenBucket,
}

impl Reader {
    pub fn new(
        hub: Arc<Hub>,
        conn: Arc<ConnHandle>,
        peer: IpAddr,
        principal: Option<Box<Principal>>,
    ) -> Self {
        let cfg = &hub.config;
        let strikes = TokenBucket::new(1.0, cfg.abuse_strikes as f64);
        // Tracked from the upgrade on, not from `hello`: a socket that waits to say hello
        // must not outlive the revocation of the sign-in it was opened with.
        if let Some(p) = &principal {
            hub.auth.register_live(p.account.id, p.via.clone(), p.account.role, &conn);
        }
        Reader {
            hub,
            conn,
            peer,
            principal,
            session: None,
            identity: None,
            joined: Joined::default(),
            reference: None,
            sends: Vec::new(),
            moderation: TokenBucket::new(MODERATION_RATE, 10.0),
            reactions: TokenBucket::new(REACT_RATE, 10.0),
            reads: Vec::new(),
            searches: Vec::new(),
            typing: TokenBucket::new(TYPING_RATE, 3.0),
            joins: TokenBucket::new(JOIN_RATE, 10.0),
            history: TokenBucket::new(HISTORY_RATE, 10.0),
            lists: TokenBucket::new(LIST_RATE, 5.0),
            strikes,
        }
    }

    async fn reply(&self, msg: ServerMsg) {
        let msg = msg.with_reference(self.reference.clone());
        self.conn.reply(Outbound::Frame(encode(&msg)), self.hub.config.reply_limit()).await;
    }

    pub async fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.hub.metrics.error(code);
        self.reply(ServerMsg::error(code, message)).await;
    }

    async fn error_for(&self, code: ErrorCode, message: impl Into<String>, client_id: &str) {
        self.hub.metrics.error(code);
        let msg = ServerMsg::Error {
            code,
            message: message.into(),
            client_id: Some(client_id.to_owned()),
            retry_after_ms: None,
            reference: None,
        };
        self.reply(msg).await;
    }

    /// Answers a binary frame (which carries no `ref`).
    pub async fn handle_binary(&mut self) {
        self.reference = None;
        self.error(ErrorCode::BadFrame, "binary frames are not accepted; send JSON text").await
    }

    pub async fn handle_text(&mut self, text: &str) {
        let (msg, reference) = Request::decode(text);
        self.reference = reference;
        let msg = match msg {
            Ok(msg) => msg,
            Err(err) => return self.error(err.code, err.message).await,
        };
        let (Some(session), Some(who)) = (self.session.clone(), self.identity.clone()) else {
            return match msg {
                ClientMsg::Hello { nick, session } => self.hello(nick.as_deref(), session.as_deref()).await,
                _ => self.error(ErrorCode::HelloRequired, "send hello first").await,
            };
        };
        match msg {
            ClientMsg::Hello { .. } => {
                self.error(ErrorCode::AlreadyHello, "this connection already said hello").await
            }
            ClientMsg::Join { room, since } => self.join(&who, &room, since).await,
            ClientMsg::Leave { room } => self.leave(&room).await,
            ClientMsg::Send { room, text, client_id, reply_to } => {
                self.send(&session, &who, &room, text, client_id, reply_to).await
            }
            ClientMsg::Edit { room, target, text, client_id } => {
                self.edit(&session, &who, &room, target, text, client_id).await
            }
            ClientMsg::Delete { room, target, client_id } => {
                self.delete(&session, &who, &room, target, client_id).await
            }
            ClientMsg::React { room, target, emoji, on } => self.react(&who, &room, target, emoji, on).await,
            ClientMsg::Read { room, seq } => self.read(&who, &room, seq).await,
            ClientMsg::Search { query, room, before, limit } => {
                self.search(&who, &query, room.as_deref(), before, limit).await
            }
            ClientMsg::Typing { room } => self.typing(&session, &room).await,
            ClientMsg::History { room, before, limit } => self.history(&who, &room, before, limit).await,
            ClientMsg::ListRooms { cursor, limit } => self.list_rooms(&who, cursor, limit).await,
            ClientMsg::CreateRoom { room, visibility, topic } => {
                self.create_room(&who, &room, visibility, topic).await
            }
            ClientMsg::OpenDm { username } => self.open_dm(&who, &username).await,
            ClientMsg::SetTopic { room, topic } => self.set_topic(&who, &room, topic).await,
            ClientMsg::Invite { room, username } => {
                self.moderate(&who, &room, Action::Invite, &username).await
            }
            ClientMsg::Kick { room, username } => self.moderate(&who, &room, Action::Kick, &username).await,
            ClientMsg::Ban { room, username } => self.moderate(&who, &room, Action::Ban, &username).await,
            ClientMsg::Unban { room, username } => self.moderate(&who, &room, Action::Unban, &username).await,
            ClientMsg::Mute { room, username } => self.moderate(&who, &room, Action::Mute, &username).await,
            ClientMsg::Unmute { room, username } => {
                self.moderate(&who, &room, Action::Unmute, &username).await
            }
            ClientMsg::SetRole { room, username, role } => {
                self.moderate(&who, &room, Action::SetRole(role), &username).await
            }
        }
    }

    /// `hello`: a signed-in upgrade is its account (any nick is ignored); otherwise a
    /// guest names itself, where guests are allowed, and never with an account's name.
    async fn hello(&mut self, nick: Option<&str>, token: Option<&str>) {
        let (session, identity) = match self.principal.clone() {
            Some(principal) => {
                let identity = principal.identity();
                let session = self.hub.sessions.attach_account(principal.account.id, identity.nick.clone());
                (session, identity)
            }
            None => {
                if !self.hub.auth.guests {
                    return self
                        .error(ErrorCode::Unauthenticated, "this server has no guests: sign in first")
                        .await;
                }
                let Some(nick) = nick else {
                    return self
                        .error(ErrorCode::Unauthenticated, "sign in, or say hello with a nick as a guest")
                        .await;
                };
                let nick = match Nick::parse(nick) {
                    Ok(nick) => nick,
                    Err(err) => return self.invalid(err).await,
                };
                match self.hub.auth.guest_name_free(&nick).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let message = "that name belongs to a registered user; sign in or pick another";
                        return self.error(ErrorCode::NickTaken, message).await;
                    }
                    Err(err) => return self.error(err.code(), err.to_string()).await,
                }
                let session = match self.hub.sessions.attach(nick, token) {
                    Ok(session) => session,
                    Err(code) => return self.error(code, "that nick is in use by someone else").await,
                };
                let identity = Identity::guest(&session.public_id, session.nick.clone());
                (session, identity)
            }
        };
        // Fetched again, for this identity, when first used.
        self.sends = Vec::new();
        self.reads = Vec::new();
        self.searches = Vec::new();
        let welcome = ServerMsg::Welcome {
            session: if identity.is_guest() { session.token.to_string() } else { String::new() },
            nick: identity.nick.as_str().to_owned(),
            limits: self.hub.config.limits(),
            protocol: PROTOCOL_VERSION,
            user: Some(identity.info()),
            reference: None,
        };
        self.session = Some(session);
        self.identity = Some(identity);
        self.reply(welcome).await;
    }

    /// Takes a `send` token of every allowance this connection draws on.
    fn check_send_rate(&mut self) -> Result<(), Refusal> {
        self.check_allowance(Allowance::Send)
    }

    /// Takes a token of every allowance of `kind` this connection draws on: the account's
    /// (or guest session's), shared by its connections, and a guest's address's. Fetched
    /// from the hub on first use, so a connection that only listens holds none.
    fn check_allowance(&mut self, kind: Allowance) -> Result<(), Refusal> {
        let held = match kind {
            Allowance::Send => &self.sends,
            Allowance::Read => &self.reads,
            Allowance::Search => &self.searches,
        };
        if held.is_empty() {
            // Every request that draws on an allowance comes after `hello`; without an
            // identity there is no allowance to draw on, and nothing goes through.
            let Some(identity) = &self.identity else {
                return Err(Refusal { retry_after: std::time::Duration::from_secs(1), strike: false });
            };
            let fetched = self.allowances(kind, identity);
            *match kind {
                Allowance::Send => &mut self.sends,
                Allowance::Read => &mut self.reads,
                Allowance::Search => &mut self.searches,
            } = fetched;
        }
        check_all(match kind {
            Allowance::Send => &self.sends,
            Allowance::Read => &self.reads,
            Allowance::Search => &self.searches,
        })
    }

    fn allowances(&self, kind: Allowance, identity: &Identity) -> Vec<Arc<Mutex<TokenBucket>>> {
        let scale = f64::from(GUEST_ADDRESS_SCALE);
        let mut buckets = match kind {
            Allowance::Send => vec![self.hub.send_bucket(&identity.id, 1)],
            Allowance::Read => vec![self.hub.bucket(&format!("read:{}", identity.id), READ_RATE, READ_BURST)],
            Allowance::Search => {
                vec![self.hub.bucket(&format!("search:{}", identity.id), SEARCH_RATE, SEARCH_BURST)]
            }
        };
        if identity.is_guest() {
            match kind {
                Allowance::Send => {
                    buckets.push(self.hub.send_bucket(&format!("ip:{}", self.peer), GUEST_ADDRESS_SCALE))
                }
                Allowance::Read => {}
                Allowance::Search => {
                    let key = format!("search:ip:{}", self.peer);
                    buckets.push(self.hub.bucket(&key, SEARCH_RATE * scale, SEARCH_BURST * scale));
                }
            }
        }
        buckets
    }

    async fn create_room(
        &mut self,
        who: &Identity,
        room: &str,
        visibility: Visibility,
        topic: Option<String>,
    ) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        if let Err(refusal) = self.moderation.check() {
            return self.rate_limited(refusal, "too many requests", None).await;
        }
        match self.hub.create_room(who, self.peer, &name, visibility, topic).await {
            Ok(_) => self.join(who, &name.to_string(), None).await,
            Err(HubError::CreationRate(refusal)) => {
                let refusal = Refusal { strike: false, ..refusal };
                self.rate_limited(refusal, "too many new rooms; try again later", None).await
            }
            Err(err) => self.error(err.code(), err.to_string()).await,
        }
    }

    async fn open_dm(&mut self, who: &Identity, username: &str) {
        if let Err(refusal) = self.moderation.check() {
            return self.rate_limited(refusal, "too many requests", None).await;
        }
        match self.hub.open_dm(who, username).await {
            Ok(name) => self.join(who, &name.to_string(), None).await,
            Err(err) => self.error(err.code(), err.to_string()).await,
        }
    }

    async fn set_topic(&mut self, who: &Identity, room: &str, topic: String) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        if let Err(refusal) = self.moderation.check() {
            return self.rate_limited(refusal, "too many requests", None).await;
        }
        match self.hub.set_topic(who, &name, topic).await {
            Ok(()) => self.reply(ServerMsg::Ack { reference: None }).await,
            Err(err) => self.error(err.code(), err.to_string()).await,
        }
    }

    async fn moderate(&mut self, who: &Identity, room: &str, action: Action, username: &str) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        if let Err(refusal) = self.moderation.check() {
            return self.rate_limited(refusal, "too many requests", None).await;
        }
        match self.hub.moderate(who, &name, action, username).await {
            Ok(()) => self.reply(ServerMsg::Ack { reference: None }).await,
            Err(err) => self.error(err.code(), err.to_string()).await,
        }
    }

    /// A room this connection joined and is still in (a kick takes it out without the
    /// reader's knowing; the stale entry goes here).
    fn current_room(&mut self, room: &str) -> Result<Arc<Room>, (ErrorCode, String)> {
        let room = self.joined_room(room)?.clone();
        if !room.is_member(self.conn.id) {
            self.joined.remove(&room.name);
            return Err((ErrorCode::NotJoined, format!("you are no longer in {}", room.name)));
        }
        Ok(room)
    }

    /// Answers a request over a rate limit with when to retry. A refusal counts as a
    /// strike only when the client is far ahead of the slots it was promised (it is not
    /// waiting as told); requests pipelined before the first refusal reached the client
    /// are promised successive slots and never strike. Out of strikes: closed (1008).
    async fn rate_limited(&mut self, refusal: Refusal, message: &str, client_id: Option<&str>) {
        if refusal.strike && !self.strikes.take() {
            tracing::info!(conn = self.conn.id, "closing a connection that ignores rate limits");
            self.conn.close(CloseReason::RATE_ABUSE);
        }
        self.hub.metrics.error(ErrorCode::RateLimited);
        let msg = ServerMsg::Error {
            code: ErrorCode::RateLimited,
            message: message.to_owned(),
            client_id: client_id.map(str::to_owned),
            retry_after_ms: Some(refusal.retry_after_ms()),
            reference: None,
        };
        self.reply(msg).await;
    }

    async fn invalid(&self, err: ValidationError) {
        self.error(err.code(), err.to_string()).await
    }

    fn joined_room(&self, room: &str) -> Result<&Arc<Room>, (ErrorCode, String)> {
        let name = RoomName::parse(room).map_err(|e| (e.code(), e.to_string()))?;
        self.joined.get(&name).ok_or((ErrorCode::NotJoined, format!("join {name} first")))
    }

    async fn join(&mut self, who: &Identity, room: &str, since: Option<Seq>) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        if let Err(refusal) = self.joins.check() {
            return self.rate_limited(refusal, "too many joins", None).await;
        }
        let max = self.hub.config.max_rooms_per_conn;
        if !self.joined.contains_key(&name) && self.joined.len() >= max {
            let message = format!("a connection may join at most {max} rooms");
            return self.error(ErrorCode::TooManyRooms, message).await;
        }
        // Several nodes: a room created on another node may not be known here yet (its
        // notice still on the way). It is read from the store before the join decides
        // whether the room exists, and with which access.
        if self.hub.broker.is_shared()
            && self.hub.find_room(&name).is_none()
            && let Err(err) = self.hub.discover_room(&name).await
        {
            // Fail closed: the room may exist, private, on another node.
            tracing::warn!(%err, room = %name, "reading a room from the store failed");
            return self.error(ErrorCode::Internal, "could not load the room; try again").await;
        }
        // Subscribe first, then replay from the store up to the head seen at subscription:
        // the writer holds live messages meanwhile and drops what both would send. The
        // replay's bytes are reserved first, so it never waits behind what is held for it.
        let reserve = self.hub.config.reply_limit();
        let key: Arc<str> = Arc::from(name.as_str());
        if !self.conn.begin_join(key.clone(), reserve, reserve).await {
            return;
        }
        let (room, sub) = match self.hub.join_room(&name, self.peer, who, &self.conn) {
            Ok(joined) => joined,
            Err(err) => {
                self.conn.replay(Outbound::EndRoom { room: key }, reserve);
                return match err {
                    // A bucket shared by every client of the address: waiting in it is
                    // not ignoring the limit, so it never strikes.
                    HubError::CreationRate(refusal) => {
                        let refusal = Refusal { strike: false, ..refusal };
                        self.rate_limited(refusal, "too many new rooms; try again later", None).await
                    }
                    err => self.error(err.code(), err.to_string()).await,
                };
            }
        };
        self.joined.insert(name.clone(), room.clone());
        // Several nodes: this node may be behind the store (the bus or its head check has
        // not brought the newest events yet) while the client, resuming from another
        // node, already holds them. The replay then runs to the store's head, and the
        // writer drops whatever the sequencer delivers up to there later.
        let mut head = sub.head;
        if self.hub.broker.is_shared() && since.is_some_and(|s| s > head) {
            match self.hub.stored_head(&name).await {
                Ok(stored) => head = head.max(stored),
                // The client holds up to `since`: never let those through again.
                Err(err) => {
                    tracing::warn!(%err, room = %name, "reading the stored head failed");
                    head = head.max(since.unwrap_or(0));
                }
            }
        }
        // A `since` join replays the log after it; a fresh one gets the newest messages
        // as they are now (with their reactions), everything up to the head applied.
        let replay = match since {
            Some(since) => {
                let cap = self.hub.config.max_history as usize;
                self.hub.events_after(&name, since, head, cap).await.map(|page| {
                    let frames = page.events.into_iter().map(|e| encode(&e.into_server_msg())).collect();
                    (frames, page.more)
                })
            }
            None => {
                self.hub.messages_before(&name, sub.head.saturating_add(1), JOIN_RECENT).await.map(|page| {
                    let frames: Vec<Utf8Bytes> =
                        page.messages.into_iter().map(|m| encode(&ServerMsg::Message(m))).collect();
                    (frames, false)
                })
            }
        };
        let (encoded, more) = match replay {
            Ok(replay) => replay,
            Err(err) => {
                tracing::error!(%err, room = %name, "replay failed");
                self.joined.remove(&name);
                self.hub.leave_room(&room, self.conn.id);
                self.conn.replay(Outbound::EndRoom { room: room.key.clone() }, reserve);
                return self.error(ErrorCode::Internal, "could not load the room's history").await;
            }
        };
        let unread = match self.hub.unread_of(who, vec![name.as_str().to_owned()]).await {
            Ok(found) => found.into_iter().next().map(|(_, u)| u),
            Err(err) => {
                tracing::warn!(%err, room = %name, "reading unread counts failed");
                None
            }
        };
        let (visibility, dm, topic, standing) = {
            let access = room.access();
            (access.visibility, access.dm, access.topic.clone(), access.standing(who))
        };
        let muted = room.access().check_send(who).is_err();
        let mut joined = ServerMsg::Joined {
            room: name.as_str().to_owned(),
            members: sub.members,
            member_count: sub.member_count as u32,
            head,
            truncated: since.is_some(),
            guests: sub.guests,
            usernames: sub.usernames,
            visibility,
            dm,
            topic,
            role: standing.map(|s| s.role),
            muted,
            last_read: unread.map(|u| u.last_read).or_else(|| (!who.is_guest()).then_some(0)),
            unread: unread.map(|u| u.unread),
            mentions: unread.map(|u| u.mentions),
            reference: self.reference.clone(),
        };
        // The replay is the newest messages that fit the reply bound beside `joined` (its
        // size measured encoded, with `truncated` set: the larger of its two forms).
        let budget = reserve.saturating_sub(encode(&joined).len());
        let (replay, cut) = newest_within(encoded, budget, |f| f.len());
        if let ServerMsg::Joined { truncated, .. } = &mut joined {
            *truncated = since.is_some() && (more || cut);
        }
        let mut frames = Vec::with_capacity(replay.len() + 1);
        frames.push(encode(&joined));
        frames.extend(replay);
        let replay = Outbound::Replay { room: room.key.clone(), frames, upto: head };
        if !room.replay_to_member(&self.conn, replay, reserve) {
            // Removed while the history was read: the removal's `kicked` is on its way, and
            // a `joined` after it would leave the client in a room it is not in.
            self.joined.remove(&name);
            self.conn.replay(Outbound::EndRoom { room: room.key.clone() }, reserve);
            let refused = room.access().check_join(who).err();
            match refused {
                Some(denied) => self.error(denied.code(), denied.to_string()).await,
                None => self.error(ErrorCode::NotJoined, format!("removed from {name} while joining")).await,
            }
        }
    }

    async fn leave(&mut self, room: &str) {
        let name = match RoomName::parse(room) {
            Ok(name) => name,
            Err(err) => return self.invalid(err).await,
        };
        match self.joined.remove(&name) {
            Some(room) => {
                self.hub.leave_room(&room, self.conn.id);
                self.conn.reply(Outbound::EndRoom { room: room.key.clone() }, 0).await;
                self.reply(ServerMsg::Left { room: name.as_str().to_owned(), reference: None }).await;
            }
            None => self.error(ErrorCode::NotJoined, format!("not in {name}")).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        session: &Arc<Session>,
        who: &Identity,
        room: &str,
        text: String,
        client_id: String,
        reply_to: Option<Seq>,
    ) {
        if let Err(err) = check_client_id(&client_id) {
            return self.error(err.code(), err.to_string()).await;
        }
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error_for(code, message, &client_id).await,
        };
        let allowed = room.access().check_send(who);
        if let Err(denied) = allowed {
            return self.error_for(denied.code(), denied.to_string(), &client_id).await;
        }
        let text = match MessageText::parse(text, self.hub.config.text_limit()) {
            Ok(text) => text.into_string(),
            Err(err) => return self.error_for(err.code(), err.to_string(), &client_id).await,
        };
        if !self.claim(session, &client_id).await {
            return;
        }
        if let Some(original) = reply_to
            && let Err(err) = self.hub.check_reply(&room, original, who).await
        {
            session.forget(&client_id);
            return self.error_for(err.code(), err.to_string(), &client_id).await;
        }
        let mentions = self.hub.mentions_in(&text).await;
        let (nick, user, guest) = (who.nick.as_str().to_owned(), who.id.to_string(), who.is_guest());
        let ts = super::unix_ms();
        let room_name = room.name.as_str().to_owned();
        let cid = client_id.clone();
        self.submit(session, &room, Some(&client_id), move |seq| {
            RoomEvent::Message(ChatMessage {
                room: room_name,
                seq,
                nick,
                text,
                ts,
                client_id: cid,
                user,
                guest,
                reply_to,
                mentions,
                ..ChatMessage::default()
            })
        })
        .await
    }

    /// Claims a `client_id` for a new change, rate limited. False when there is nothing
    /// more to do: a retry already answered (or in flight), or a refusal sent.
    async fn claim(&mut self, session: &Arc<Session>, client_id: &str) -> bool {
        match session.claim(client_id) {
            SendState::New => {}
            // Already accepted: its echo reaches this room's members when stored.
            SendState::InFlight => return false,
            SendState::Stored(stored_in, seq) => {
                // Answered from the store: a retry costs a read, so it is rate limited too.
                if let Err(refusal) = self.check_send_rate() {
                    let message = "slow down: too many messages";
                    self.rate_limited(refusal, message, Some(client_id)).await;
                    return false;
                }
                self.resend_stored(&stored_in, seq, client_id).await;
                return false;
            }
        }
        if let Err(refusal) = self.check_send_rate() {
            session.forget(client_id);
            self.rate_limited(refusal, "slow down: too many messages", Some(client_id)).await;
            return false;
        }
        true
    }

    /// Gives a checked event its seq and queues it for the store (whose echo answers).
    async fn submit(
        &mut self,
        session: &Arc<Session>,
        room: &Arc<Room>,
        client_id: Option<&str>,
        build: impl FnOnce(Seq) -> RoomEvent,
    ) {
        // A place in the store's queue: waits while the store is behind (backpressure).
        let Some(permit) = self.hub.committer.place().await else {
            return self.stopping(session, client_id).await;
        };
        self.hub.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
        let committer = &self.hub.committer;
        let accepted = room.accept(build, |event, epoch| {
            committer.enqueue(Job {
                room: room.clone(),
                event,
                epoch,
                session: Arc::downgrade(session),
                sender: Arc::downgrade(&self.conn),
                permit,
                done: None,
            })
        });
        if accepted.is_err() {
            self.stopping(session, client_id).await;
        }
    }

    async fn stopping(&self, session: &Session, client_id: Option<&str>) {
        let message = "the server is stopping";
        match client_id {
            Some(id) => {
                session.forget(id);
                self.error_for(ErrorCode::Internal, message, id).await
            }
            None => self.error(ErrorCode::Internal, message).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn edit(
        &mut self,
        session: &Arc<Session>,
        who: &Identity,
        room: &str,
        target: Seq,
        text: String,
        client_id: String,
    ) {
        if let Err(err) = check_client_id(&client_id) {
            return self.error(err.code(), err.to_string()).await;
        }
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error_for(code, message, &client_id).await,
        };
        let text = match MessageText::parse(text, self.hub.config.text_limit()) {
            Ok(text) => text.into_string(),
            Err(err) => return self.error_for(err.code(), err.to_string(), &client_id).await,
        };
        // A retry of a stored edit is answered with it first, whatever changed since.
        if !self.claim(session, &client_id).await {
            return;
        }
        if let Err(err) = self.hub.check_edit(&room, target, who).await {
            session.forget(&client_id);
            return self.error_for(err.code(), err.to_string(), &client_id).await;
        }
        let mentions = self.hub.mentions_in(&text).await;
        let event = EditEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target,
            text,
            edited_ts: super::unix_ms(),
            user: who.id.to_string(),
            nick: who.nick.as_str().to_owned(),
            client_id: client_id.clone(),
            mentions,
        };
        self.submit(session, &room, Some(&client_id), move |seq| RoomEvent::Edit(EditEvent { seq, ..event }))
            .await
    }

    async fn delete(
        &mut self,
        session: &Arc<Session>,
        who: &Identity,
        room: &str,
        target: Seq,
        client_id: String,
    ) {
        if let Err(err) = check_client_id(&client_id) {
            return self.error(err.code(), err.to_string()).await;
        }
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error_for(code, message, &client_id).await,
        };
        // A retry of a stored deletion is answered with it (the message is deleted now).
        if !self.claim(session, &client_id).await {
            return;
        }
        if let Err(err) = self.hub.check_delete(&room, target, who).await {
            session.forget(&client_id);
            return self.error_for(err.code(), err.to_string(), &client_id).await;
        }
        let event = DeleteEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target,
            by: who.nick.as_str().to_owned(),
            user: who.id.to_string(),
            client_id: client_id.clone(),
        };
        self.submit(session, &room, Some(&client_id), move |seq| {
            RoomEvent::Delete(DeleteEvent { seq, ..event })
        })
        .await
    }

    async fn react(&mut self, who: &Identity, room: &str, target: Seq, emoji: String, on: bool) {
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error(code, message).await,
        };
        if let Err(refusal) = self.reactions.check() {
            return self.rate_limited(refusal, "too many reactions", None).await;
        }
        if let Err(err) = self.hub.check_react(&room, target, &emoji, on, who).await {
            return self.error(err.code(), err.to_string()).await;
        }
        let Some(session) = self.session.clone() else { return };
        let event = ReactEvent {
            room: room.name.as_str().to_owned(),
            seq: 0,
            target,
            emoji,
            user: who.id.to_string(),
            nick: who.nick.as_str().to_owned(),
            on,
        };
        self.submit(&session, &room, None, move |seq| RoomEvent::React(ReactEvent { seq, ..event })).await
    }

    async fn read(&mut self, who: &Identity, room: &str, seq: Seq) {
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error(code, message).await,
        };
        if let Err(refusal) = self.check_allowance(Allowance::Read) {
            return self.rate_limited(refusal, "too many read markers", None).await;
        }
        match self.hub.mark_read(&room, seq, who).await {
            Ok(Some(at)) => {
                // Every other tab and device of the account moves its marker too.
                let frame = encode(&ServerMsg::Read { room: room.name.as_str().to_owned(), seq: at });
                if let Some(user) = who.user_id() {
                    for conn in self.hub.auth.live_conns(user) {
                        if conn.id != self.conn.id {
                            conn.push(Outbound::Frame(frame.clone()));
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(%err, room = %room.name, "storing a read marker failed");
                self.error(ErrorCode::Internal, "could not store the read marker").await
            }
        }
    }

    async fn search(
        &mut self,
        who: &Identity,
        raw: &str,
        room: Option<&str>,
        before: Option<i64>,
        limit: Option<u32>,
    ) {
        if let Err(refusal) = self.check_allowance(Allowance::Search) {
            return self.rate_limited(refusal, "too many searches", None).await;
        }
        let query = match Query::parse(raw) {
            Ok(q) => q,
            Err(err) => return self.error(ErrorCode::InvalidQuery, err.to_string()).await,
        };
        let room = match room.map(RoomName::parse).transpose() {
            Ok(room) => room,
            Err(err) => return self.invalid(err).await,
        };
        let limit = limit.unwrap_or(SEARCH_PAGE).clamp(1, MAX_SEARCH_PAGE) as usize;
        match self.hub.search(who, &query, room.as_ref(), before, limit).await {
            Ok(page) => {
                let budget = self.hub.config.reply_limit().saturating_sub(REPLY_ENVELOPE + raw.len() * 6);
                let (hits, cut) = first_within(page.hits, budget);
                // Cut for size: the next page starts after the last hit sent.
                let next = if cut {
                    hits.len().checked_sub(1).and_then(|i| page.positions.get(i).copied())
                } else {
                    page.next
                };
                let msg = ServerMsg::SearchResults {
                    query: raw.to_owned(),
                    has_more: next.is_some() || cut,
                    next_before: next,
                    hits,
                    reference: None,
                };
                self.reply(msg).await
            }
            Err(err) => {
                if err.code() == ErrorCode::Internal {
                    tracing::error!(%err, "search failed");
                }
                self.error(err.code(), err.to_string()).await
            }
        }
    }

    /// Answers a retry of a stored change with the original event, read back from the
    /// store.
    async fn resend_stored(&self, room: &Room, seq: Seq, client_id: &str) {
        let found = self.hub.events_after(&room.name, seq - 1, seq, 1).await;
        match found.map(|page| page.events.into_iter().next()) {
            // A message as it is now, reactions and all: the client may not hold it, and
            // the events that changed it may be behind its copy.
            Ok(Some(RoomEvent::Message(_))) => match self.hub.messages_before(&room.name, seq + 1, 1).await {
                Ok(page) if page.messages.first().is_some_and(|m| m.seq == seq) => {
                    let msg = page.messages.into_iter().next().map(ServerMsg::Message);
                    self.reply(msg.unwrap_or_else(|| ServerMsg::error(ErrorCode::Internal, "lost"))).await
                }
                _ => {
                    self.error_for(ErrorCode::Internal, "could not load the stored message", client_id).await
                }
            },
            Ok(Some(event)) => self.reply(event.into_server_msg()).await,
            failed => {
                let err = failed.err().map(|e| e.to_string()).unwrap_or_else(|| "not in the store".into());
                tracing::error!(%err, room = %room.name, seq, "reading a remembered event failed");
                self.error_for(ErrorCode::Internal, "could not load the stored message", client_id).await
            }
        }
    }

    async fn typing(&mut self, session: &Session, room: &str) {
        let room = match self.current_room(room) {
            Ok(room) => room,
            Err((code, message)) => return self.error(code, message).await,
        };
        if let Err(refusal) = self.typing.check() {
            return self.rate_limited(refusal, "too many typing events", None).await;
        }
        self.hub.broker.typing(&room, &session.nick);
    }

    async fn history(&mut self, who: &Identity, room: &str, before: Seq, limit: u32) {
        let name = match self.current_room(room) {
            Ok(room) => {
                let readable = room.access().check_read(who);
                if let Err(denied) = readable {
                    return self.error(denied.code(), denied.to_string()).await;
                }
                room.name.clone()
            }
            Err((code, message)) => return self.error(code, message).await,
        };
        if let Err(refusal) = self.history.check() {
            return self.rate_limited(refusal, "too many history requests", None).await;
        }
        let limit = limit.clamp(1, self.hub.config.max_history.max(1)) as usize;
        match self.hub.messages_before(&name, before, limit).await {
            Ok(page) => {
                let budget = self.hub.config.reply_limit() - REPLY_ENVELOPE;
                let (messages, cut) = newest_within(page.messages, budget, message_bytes);
                let msg = ServerMsg::History {
                    room: name.as_str().to_owned(),
                    messages,
                    has_more: page.more || cut,
                    reference: None,
                };
                self.reply(msg).await
            }
            Err(err) => {
                tracing::error!(%err, room = %name, "history failed");
                self.error(ErrorCode::Internal, "could not load history").await
            }
        }
    }

    async fn list_rooms(&mut self, who: &Identity, cursor: Option<String>, limit: Option<u32>) {
        if let Err(refusal) = self.lists.check() {
            return self.rate_limited(refusal, "too many room lists", None).await;
        }
        let mut page = self.hub.room_page(who, cursor.as_deref(), limit.unwrap_or(ROOMS_PAGE));
        self.hub.annotate_unread(who, &mut page.rooms).await;
        let msg = ServerMsg::Rooms {
            has_more: page.next.is_some(),
            rooms: page.rooms,
            next: page.next,
            reference: None,
        };
        self.reply(msg).await
    }

    /// Leaves every room and lets go of the session (the connection has ended).
    pub fn leave_all(&mut self) {
        for room in self.joined.drain() {
            self.hub.leave_room(&room, self.conn.id);
        }
        if let Some(session) = self.session.take() {
            self.hub.sessions.detach(&session);
        }
    }
}

/// The rooms a connection is in: a few at most (`--max-rooms-per-conn`), so a list, which
/// holding one room takes a fifth of the smallest map's table.
#[derive(Default)]
struct Joined(Vec<Arc<Room>>);

impl Joined {
    fn get(&self, name: &RoomName) -> Option<&Arc<Room>> {
        self.0.iter().find(|room| room.name == *name)
    }

    fn contains_key(&self, name: &RoomName) -> bool {
        self.get(name).is_some()
    }

    /// Adds `room` under `name`, in place of the room of that name if it was there.
    fn insert(&mut self, name: RoomName, room: Arc<Room>) {
        debug_assert!(room.name == name);
        self.remove(&name);
        self.0.push(room);
    }

    fn remove(&mut self, name: &RoomName) -> Option<Arc<Room>> {
        let at = self.0.iter().position(|room| room.name == *name)?;
        Some(self.0.swap_remove(at))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn drain(&mut self) -> impl Iterator<Item = Arc<Room>> + '_ {
        self.0.drain(..)
    }
}

/// The allowances shared by an account's (or guest's) connections.
#[derive(Debug, Clone, Copy)]
enum Allowance {
    Send,
    Read,
    Search,
}

/// A reader dropped without `leave_all` (its connection's task dropped, or a handler that
/// panicked) still leaves its rooms and its guest session.
impl Drop for Reader {
    fn drop(&mut self) {
        self.leave_all();
    }
}

/// Takes a token of each allowance (all of them, or a refusal naming the longest wait
/// among those that refused first).
fn check_all(buckets: &[Arc<Mutex<TokenBucket>>]) -> Result<(), Refusal> {
    for bucket in buckets {
        bucket.lock().unwrap_or_else(|p| p.into_inner()).check()?;
    }
    Ok(())
}

/// Bytes a page reply takes besides its messages, at most: the type, a 64-character room
/// name, `has_more`, a 64-character `ref`, and JSON punctuation.
pub const REPLY_ENVELOPE: usize = 256;

/// Bytes one message takes inside a reply (its JSON and a separator).
pub fn message_bytes(m: &ChatMessage) -> usize {
    serde_json::to_string(m).map_or(0, |s| s.len() + 1)
}

/// The first search hits that fit in `budget` bytes; true when some were left out (the
/// client then asks again from the last one it got).
fn first_within(mut hits: Vec<SearchHit>, budget: usize) -> (Vec<SearchHit>, bool) {
    let mut used = 0;
    let keep = hits
        .iter()
        .take_while(|h| {
            used += serde_json::to_string(h).map_or(0, |s| s.len() + 1);
            used <= budget
        })
        .count();
    let cut = keep < hits.len();
    hits.truncate(keep);
    (hits, cut)
}

/// The newest items (the end of `items`, which is oldest first) whose sizes add up to at
/// most `budget`; true when older ones were left out.
pub fn newest_within<T>(mut items: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, bool) {
    let mut used = 0;
    let mut keep = 0;
    for item in items.iter().rev() {
        used += size(item);
        if used > budget {
            break;
        }
        keep += 1;
    }
    let cut = keep < items.len();
    let items = items.split_off(items.len() - keep);
    (items, cut)
}

#[cfg(test)]
mod tests {
    use super::newest_within;

    #[test]
    fn the_newest_items_that_fit_are_kept() {
        assert_eq!(newest_within(vec![5, 5, 5, 5], 12, |x| *x), (vec![5, 5], true));
        assert_eq!(newest_within(vec![1, 2, 3], 6, |x| *x), (vec![1, 2, 3], false));
        assert_eq!(newest_within(vec![9], 5, |x| *x), (Vec::<usize>::new(), true));
    }
}
