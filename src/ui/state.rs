//! The browser's view of the chat, as plain data plus the rules that update it from server
//! data events (messages, presence, typing, history pages). Pure logic, compiled on both
//! targets, so it is unit-tested natively. The protocol's control rules (requests and
//! their errors, replay, gaps, outbox pacing) live beside it in `sync.rs`.

use super::sync::RoomSync;
use crate::protocol::{
    ChatMessage, Limits, PresenceState, Reaction, RoomInfo, RoomRole, Seq, ServerMsg, ServerRole, UserInfo,
};
use std::collections::{BTreeMap, BTreeSet};

/// How long a "typing" notice stays up without a new one.
pub const TYPING_TTL_MS: f64 = 4000.0;
/// A typing notice younger than this survives a message from its author.
const FRESH_TYPING_MS: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq)]
pub enum ConnStatus {
    /// Not started yet (server render, or no nick chosen).
    Idle,
    Connecting,
    Online,
    /// Lost; next attempt in `retry_in_ms`.
    Offline {
        retry_in_ms: u32,
    },
}

/// A message typed here and not yet echoed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub client_id: String,
    pub room: String,
    pub text: String,
    /// The message this one answers.
    pub reply_to: Option<Seq>,
    pub delivery: Delivery,
    /// Sent at least once, on this connection or an earlier one: it may be stored even
    /// though no echo came. One never sent cannot be.
    pub tried: bool,
    /// Storage failures (`internal`) so far: the backoff before the next resend grows with it.
    pub failures: u32,
}

impl Pending {
    pub fn new(client_id: String, room: String, text: String) -> Self {
        Pending {
            client_id,
            room,
            text,
            reply_to: None,
            delivery: Delivery::Queued,
            tried: false,
            failures: 0,
        }
    }
}

/// Where an outbox entry is on its way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not sent on this connection yet: it waits for its room's replay, or for a slot of
    /// the message rate.
    Queued,
    /// Sent on this connection; the echo has not arrived yet.
    Sent,
    /// Refused by the rate limit: the server promised it the slot at `slot` (ms), when
    /// it goes out again without waiting for a slot of the client's pace.
    RateLimited { slot: u64 },
    /// The store failed: goes out again, at the client's pace, from `until` (ms).
    Backoff { until: u64 },
}

impl Delivery {
    /// True when the entry is waiting to be sent again rather than on its way.
    pub fn is_retrying(self) -> bool {
        matches!(self, Delivery::RateLimited { .. } | Delivery::Backoff { .. })
    }

    /// When a waiting entry may go again (`None` if it is not waiting).
    pub fn retry_at(self) -> Option<u64> {
        match self {
            Delivery::RateLimited { slot: at } | Delivery::Backoff { until: at } => Some(at),
            Delivery::Queued | Delivery::Sent => None,
        }
    }
}

/// One joined room as the UI shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomView {
    /// Ordered by seq, no duplicates.
    pub messages: Vec<ChatMessage>,
    /// Who is here: everyone in a room of up to 256 people, 256 of them in a bigger one.
    pub members: BTreeSet<String>,
    /// How many people are here (the server's count at `joined`, kept up by presence).
    pub member_count: usize,
    /// Nick → when its typing notice expires (ms, the page's clock).
    pub typing: BTreeMap<String, f64>,
    pub unread: u32,
    /// Messages above this seq are news (unread when the room is not in view).
    pub baseline: Option<Seq>,
    /// Older messages exist on the server than the first one here.
    pub has_older: bool,
    pub loading_older: bool,
    /// A `joined` arrived on the current connection.
    pub live: bool,
    /// Where the room is in the protocol (joining, replaying, a gap): `sync.rs`'s.
    pub sync: RoomSync,
    /// Nicks present that are guests (marked as such).
    pub guests: BTreeSet<String>,
    pub topic: String,
    /// A direct-message room.
    pub dm: bool,
    /// I may read here but not send.
    pub muted: bool,
    /// The last event of the room's log applied here: where a resume starts.
    pub last_event: Option<Seq>,
    /// How far I have read (the server's, shared by my tabs and devices).
    pub last_read: Seq,
    /// Unread messages that mention me.
    pub mentions: u32,
    /// The "new messages" line goes above the first message after this seq (my read
    /// position when I opened the room).
    pub divider: Option<Seq>,
    /// Usernames of the people here, for `@` completion.
    pub usernames: BTreeSet<String>,
    /// My role here (moderators may delete anyone's message).
    pub role: Option<RoomRole>,
}

impl RoomView {
    /// The last event applied, the `since` for a resume.
    pub fn last_seq(&self) -> Option<Seq> {
        self.last_event.max(self.messages.last().map(|m| m.seq))
    }

    /// Notes that the log's event `seq` was applied.
    fn saw(&mut self, seq: Seq) {
        self.last_event = Some(self.last_event.map_or(seq, |l| l.max(seq)));
    }

    fn message_mut(&mut self, seq: Seq) -> Option<&mut ChatMessage> {
        let at = self.messages.binary_search_by_key(&seq, |m| m.seq).ok()?;
        self.messages.get_mut(at)
    }

    /// The message `seq` held here.
    pub fn message(&self, seq: Seq) -> Option<&ChatMessage> {
        let at = self.messages.binary_search_by_key(&seq, |m| m.seq).ok()?;
        self.messages.get(at)
    }

    pub fn first_seq(&self) -> Option<Seq> {
        self.messages.first().map(|m| m.seq)
    }

    /// People here, named or not.
    pub fn people(&self) -> usize {
        self.member_count.max(self.members.len())
    }

    /// Drops every message held: the server no longer has the history they came from.
    pub fn forget_history(&mut self) {
        self.messages.clear();
        self.last_event = None;
        self.baseline = None;
        self.unread = 0;
        self.has_older = false;
        self.loading_older = false;
    }

    /// Keeps only the messages from `seq` on: what is older is behind a gap and will be
    /// loaded again as history.
    pub fn keep_from(&mut self, seq: Seq) {
        self.messages.retain(|m| m.seq >= seq);
        self.has_older = seq > 1;
    }

    /// Inserts, or replaces the copy held (a `message` frame is the message as the server
    /// has it: the answer to a retried `send` comes as it is now). Returns false when a
    /// copy was held.
    pub fn put(&mut self, msg: ChatMessage) -> bool {
        match self.messages.binary_search_by_key(&msg.seq, |m| m.seq) {
            Ok(at) => {
                self.messages[at] = msg;
                false
            }
            Err(_) => self.insert(msg),
        }
    }

    /// Inserts in seq order; returns false for a message already held.
    pub fn insert(&mut self, msg: ChatMessage) -> bool {
        match self.messages.last() {
            None => {
                self.messages.push(msg);
                true
            }
            Some(last) if msg.seq > last.seq => {
                self.messages.push(msg);
                true
            }
            _ => match self.messages.binary_search_by_key(&msg.seq, |m| m.seq) {
                Ok(_) => false,
                Err(pos) => {
                    self.messages.insert(pos, msg);
                    true
                }
            },
        }
    }

    /// Nicks typing now, sorted.
    pub fn typing_now(&self, now_ms: f64) -> Vec<String> {
        self.typing.iter().filter(|(_, until)| **until > now_ms).map(|(n, _)| n.clone()).collect()
    }
}

/// Everything the page knows. The connection feeds it server events; components read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatModel {
    pub nick: Option<String>,
    /// Who I am on this connection (`welcome.user`): "mine" is decided by its id.
    pub user: Option<UserInfo>,
    /// The signed-in account the page was rendered for: its connections say `hello {}`.
    pub account: Option<UserInfo>,
    pub session: Option<String>,
    pub status: ConnStatus,
    pub limits: Option<Limits>,
    /// Joined rooms, by name.
    pub rooms: BTreeMap<String, RoomView>,
    /// The room on screen.
    pub current: Option<String>,
    /// Every room on the server, from `list_rooms`.
    pub directory: Vec<RoomInfo>,
    pub outbox: Vec<Pending>,
    /// Last error worth showing (and its code).
    pub notice: Option<(String, String)>,
    /// The server refused the nick: ask again.
    pub nick_rejected: Option<String>,
}

/// The replies among `messages` to `target` follow an edit of it (`Some(text)`) or its
/// deletion (`None`), as the server's quote of it does.
pub fn requote<'a>(messages: impl Iterator<Item = &'a mut ChatMessage>, target: Seq, edit: Option<&str>) {
    for m in messages.filter(|m| m.reply_to == Some(target)) {
        if let Some(quote) = &mut m.quote {
            match edit {
                Some(text) => quote.edited(text),
                None => quote.deleted(),
            }
        }
    }
}

/// Turns `user`'s reaction `emoji` on or off in `reactions`, as the server does: a
/// new emoji goes last, a new reactor last within it, an emoji nobody holds goes away.
/// Doing what is done already changes nothing.
pub fn set_reaction(reactions: &mut Vec<Reaction>, emoji: &str, user: &str, nick: &str, on: bool) {
    let at = reactions.iter().position(|r| r.emoji == emoji);
    match (at, on) {
        (None, true) => reactions.push(Reaction {
            emoji: emoji.to_owned(),
            count: 1,
            users: vec![user.to_owned()],
            nicks: vec![nick.to_owned()],
        }),
        (Some(i), true) => {
            let r = &mut reactions[i];
            if !r.users.iter().any(|u| u == user) {
                r.users.push(user.to_owned());
                r.nicks.push(nick.to_owned());
                r.count += 1;
            }
        }
        (Some(i), false) => {
            let r = &mut reactions[i];
            if let Some(j) = r.users.iter().position(|u| u == user) {
                r.users.remove(j);
                if j < r.nicks.len() {
                    r.nicks.remove(j);
                }
                r.count = r.count.saturating_sub(1);
            }
            if r.users.is_empty() {
                reactions.remove(i);
            }
        }
        (None, false) => {}
    }
}

impl Default for ChatModel {
    fn default() -> Self {
        ChatModel {
            nick: None,
            user: None,
            account: None,
            session: None,
            status: ConnStatus::Idle,
            limits: None,
            rooms: BTreeMap::new(),
            current: None,
            directory: Vec::new(),
            outbox: Vec::new(),
            notice: None,
            nick_rejected: None,
        }
    }
}

impl ChatModel {
    /// Opens a room locally (the connection sends `join`).
    pub fn open(&mut self, room: &str) {
        self.rooms.entry(room.to_owned()).or_default();
        self.current = Some(room.to_owned());
        if let Some(view) = self.rooms.get_mut(room) {
            view.unread = 0;
            view.mentions = 0;
            // The line marks what arrived while I was away: only if something did.
            let me = self.user.as_ref().map(|u| u.id.as_str());
            let unread = view.messages.iter().any(|m| m.seq > view.last_read && Some(m.user.as_str()) != me);
            view.divider = Some(view.last_read).filter(|&r| r > 0 && unread);
        }
    }

    /// May I delete `m` (mine, or as a moderator here, or as an admin)?
    pub fn may_delete(&self, m: &ChatMessage) -> bool {
        let admin = self.user.as_ref().is_some_and(|u| u.role == ServerRole::Admin);
        let moderator =
            self.rooms.get(&m.room).is_some_and(|v| v.role.is_some_and(|r| r >= RoomRole::Moderator));
        self.is_mine(m) || admin || (moderator && !self.rooms.get(&m.room).is_some_and(|v| v.dm))
    }

    /// Whether `m` mentions me.
    pub fn mentions_me(&self, m: &ChatMessage) -> bool {
        let me = self.user.as_ref().and_then(|u| u.username.as_deref());
        me.is_some_and(|me| m.mentions.iter().any(|n| n == me))
    }

    /// I have read `room` up to `seq` (here or on another tab): the counts follow.
    pub fn read_to(&mut self, room: &str, seq: Seq) {
        let me = self.user.as_ref().map(|u| u.id.clone());
        let username = self.user.as_ref().and_then(|u| u.username.clone());
        let Some(view) = self.rooms.get_mut(room) else { return };
        if seq <= view.last_read {
            return;
        }
        view.last_read = seq;
        let left: Vec<&ChatMessage> = view
            .messages
            .iter()
            .filter(|m| m.seq > seq && !m.deleted && Some(&m.user) != me.as_ref())
            .collect();
        view.unread = left.len() as u32;
        view.mentions =
            left.iter().filter(|m| username.as_ref().is_some_and(|u| m.mentions.contains(u))).count() as u32;
    }

    pub fn close(&mut self, room: &str) {
        self.rooms.remove(room);
        self.outbox.retain(|p| p.room != room);
        if self.current.as_deref() == Some(room) {
            self.current = None;
        }
    }

    /// Seeds a room with server-rendered history so hydration and live data agree.
    pub fn seed(&mut self, room: &str, messages: Vec<ChatMessage>) {
        let view = self.rooms.entry(room.to_owned()).or_default();
        for m in messages {
            view.insert(m);
        }
    }

    /// Every joined room as `(name, since)` for resuming after a reconnect.
    pub fn resume_points(&self) -> Vec<(String, Option<Seq>)> {
        self.rooms.iter().map(|(name, view)| (name.clone(), view.last_seq())).collect()
    }

    pub fn mark_offline(&mut self, retry_in_ms: u32) {
        self.status = ConnStatus::Offline { retry_in_ms };
        for view in self.rooms.values_mut() {
            view.live = false;
            view.typing.clear();
            view.loading_older = false;
        }
        // A new connection has a new rate limit and its own replays: everything goes out
        // again once its room is resumed.
        for p in &mut self.outbox {
            p.delivery = Delivery::Queued;
        }
    }

    /// A message of mine the server has stored (echo, replay or history): its outbox entry
    /// is done, whichever way the news arrived.
    pub fn acknowledge(&mut self, m: &ChatMessage) {
        if self.is_mine(m) {
            self.outbox.retain(|p| p.client_id != m.client_id);
        }
    }

    /// Whether I wrote `m`: by user id, never by nick (a new holder of an old nick is not
    /// its old holder).
    pub fn is_mine(&self, m: &ChatMessage) -> bool {
        self.user.as_ref().is_some_and(|u| !m.user.is_empty() && u.id == m.user)
    }

    /// The server ended this page's sign-in: it becomes a guest page that asks for a
    /// name again (with a way to sign in), saying why.
    pub fn sign_out(&mut self, reason: &str) {
        self.account = None;
        self.user = None;
        self.nick = None;
        self.session = None;
        let why = if reason.is_empty() { "this session was ended".to_owned() } else { reason.to_owned() };
        self.nick_rejected = Some(format!("You were signed out ({why}). Sign in again, or chat as a guest."));
    }

    /// Signs this page in as `account` (from the page's seed).
    pub fn sign_in(&mut self, account: UserInfo) {
        self.nick = Some(account.display_name.clone());
        self.account = Some(account);
    }

    /// Shows an error to the user (its code, and the server's words).
    pub fn notify(&mut self, code: &str, message: String) {
        self.notice = Some((code.to_owned(), message));
    }

    /// Applies one server event: the data it carries (the control side of `welcome`,
    /// `joined` and `error` is `sync.rs`'s).
    pub fn apply(&mut self, msg: ServerMsg, now_ms: f64) {
        match msg {
            ServerMsg::Welcome { session, nick, limits, user, .. } => {
                self.user = user;
                self.session = Some(session).filter(|s| !s.is_empty());
                self.nick = Some(nick);
                self.limits = Some(limits);
                self.status = ConnStatus::Online;
                self.nick_rejected = None;
            }
            ServerMsg::Joined {
                room,
                members,
                member_count,
                head,
                guests,
                dm,
                topic,
                muted,
                last_read,
                unread,
                mentions,
                usernames,
                role,
                ..
            } => {
                let in_view = self.current.as_deref() == Some(room.as_str());
                let view = self.rooms.entry(room).or_default();
                if let Some(read) = last_read {
                    let first = view.last_read == 0 && view.divider.is_none();
                    view.last_read = view.last_read.max(read);
                    if first && in_view && read > 0 && read < head {
                        view.divider = Some(read);
                    }
                    if !in_view {
                        view.unread = unread.unwrap_or(0);
                        view.mentions = mentions.unwrap_or(0);
                    }
                }
                view.members = members.into_iter().collect();
                view.guests = guests.into_iter().collect();
                view.usernames = usernames.into_iter().collect();
                view.role = role;
                view.dm = dm;
                view.topic = topic;
                view.muted = muted;
                view.member_count = member_count as usize;
                view.live = true;
                if view.baseline.is_none() {
                    view.baseline = Some(head);
                }
                // Older history exists when the first message held is not seq 1.
                view.has_older = view.first_seq().map_or(head > 0, |s| s > 1);
            }
            ServerMsg::Left { room, .. } => {
                self.close(&room);
            }
            ServerMsg::Message(m) => {
                let mine = self.is_mine(&m);
                let username = self.user.as_ref().and_then(|u| u.username.clone());
                self.acknowledge(&m);
                let in_view = self.current.as_deref() == Some(m.room.as_str());
                let Some(view) = self.rooms.get_mut(&m.room) else {
                    return;
                };
                let seq = m.seq;
                // The message ends its author's typing notice, unless that notice is fresh:
                // typing is fanned out at once while a message waits for its commit, so a
                // notice for the next message can overtake the previous message.
                if view
                    .typing
                    .get(&m.nick)
                    .is_some_and(|until| until - TYPING_TTL_MS < now_ms - FRESH_TYPING_MS)
                {
                    view.typing.remove(&m.nick);
                }
                let was_empty = view.messages.is_empty();
                let mentioned = username.as_ref().is_some_and(|u| m.mentions.contains(u));
                view.saw(seq);
                if view.put(m) {
                    if was_empty {
                        view.has_older = seq > 1;
                    }
                    let news = view.baseline.is_some_and(|b| seq > b) && seq > view.last_read;
                    if news && !mine && !in_view {
                        view.unread += 1;
                        if mentioned {
                            view.mentions += 1;
                        }
                    }
                }
            }
            ServerMsg::Edit(e) => {
                let Some(view) = self.rooms.get_mut(&e.room) else { return };
                view.saw(e.seq);
                requote(view.messages.iter_mut(), e.target, Some(&e.text));
                if let Some(m) = view.message_mut(e.target)
                    && !m.deleted
                {
                    m.text = e.text;
                    m.edited_ts = Some(e.edited_ts);
                    m.mentions = e.mentions;
                }
            }
            ServerMsg::Delete(d) => {
                let Some(view) = self.rooms.get_mut(&d.room) else { return };
                view.saw(d.seq);
                requote(view.messages.iter_mut(), d.target, None);
                if let Some(m) = view.message_mut(d.target) {
                    m.deleted = true;
                    m.text.clear();
                    m.mentions.clear();
                    m.reactions.clear();
                }
            }
            ServerMsg::React(r) => {
                let Some(view) = self.rooms.get_mut(&r.room) else { return };
                view.saw(r.seq);
                if let Some(m) = view.message_mut(r.target)
                    && !m.deleted
                {
                    set_reaction(&mut m.reactions, &r.emoji, &r.user, &r.nick, r.on);
                }
            }
            ServerMsg::Read { room, seq } => self.read_to(&room, seq),
            // Search is a page of its own (`/search`), not part of the chat's model.
            ServerMsg::SearchResults { .. } => {}
            ServerMsg::Typing { room, nick } => {
                if let Some(view) = self.rooms.get_mut(&room) {
                    view.typing.insert(nick, now_ms + TYPING_TTL_MS);
                }
            }
            ServerMsg::History { room, messages, has_more, .. } => {
                for m in &messages {
                    self.acknowledge(m);
                }
                if let Some(view) = self.rooms.get_mut(&room) {
                    for m in messages {
                        view.insert(m);
                    }
                    view.has_older = has_more;
                    view.loading_older = false;
                }
            }
            ServerMsg::Rooms { rooms, .. } => self.directory = rooms,
            ServerMsg::Presence { room, nick, state, member_count, guest, username } => {
                if let Some(view) = self.rooms.get_mut(&room) {
                    match state {
                        PresenceState::Joined => {
                            if guest {
                                view.guests.insert(nick.clone());
                            }
                            if let Some(username) = username {
                                view.usernames.insert(username);
                            }
                            if view.members.insert(nick) && member_count.is_none() {
                                view.member_count += 1;
                            }
                        }
                        PresenceState::Left => {
                            view.typing.remove(&nick);
                            if view.members.remove(&nick) && member_count.is_none() {
                                view.member_count = view.member_count.saturating_sub(1);
                            }
                        }
                    }
                    // The server's count, when it sends one, is the truth.
                    if let Some(count) = member_count {
                        view.member_count = count as usize;
                    }
                }
            }
            ServerMsg::Error { code, message, .. } => self.notify(code.as_str(), message),
            ServerMsg::Kicked { room, by, banned } => {
                self.close(&room);
                let what = if banned { "banned from" } else { "removed from" };
                self.notify(
                    if banned { "banned" } else { "kicked" },
                    format!("You were {what} #{room} by {by}."),
                );
            }
            ServerMsg::Invited { room, by } => {
                self.notify("invited", format!("{by} invited you to #{room}."));
            }
            ServerMsg::Topic { room, topic, .. } => {
                if let Some(view) = self.rooms.get_mut(&room) {
                    view.topic = topic;
                }
            }
            ServerMsg::MemberUpdate { room, username, muted, role, .. } => {
                let me = self.user.as_ref().and_then(|u| u.username.as_deref()) == Some(username.as_str());
                if let (true, Some(view)) = (me, self.rooms.get_mut(&room)) {
                    if let Some(muted) = muted {
                        view.muted = muted;
                    }
                    if role.is_some() {
                        view.role = role;
                    }
                }
            }
            ServerMsg::Ack { .. } => {}
        }
    }

    /// Unread counts per room, for the sidebar.
    pub fn unread(&self, room: &str) -> u32 {
        self.rooms.get(room).map_or(0, |v| v.unread)
    }
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

    fn joined(room: &str, head: Seq) -> ServerMsg {
        ServerMsg::Joined {
            room: room.into(),
            members: vec!["me".into()],
            member_count: 1,
            head,
            truncated: false,
            reference: None,
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

    fn model() -> ChatModel {
        let mut m = ChatModel { nick: Some("me".into()), user: Some(me()), ..Default::default() };
        m.open("a");
        m.open("b");
        m.apply(joined("a", 2), 0.0);
        m.apply(joined("b", 0), 0.0);
        m
    }

    #[test]
    fn messages_stay_ordered_and_unique() {
        let mut m = model();
        for seq in [2, 1, 3, 2, 3] {
            m.apply(ServerMsg::Message(msg("a", seq, "bob")), 0.0);
        }
        let seqs: Vec<Seq> = m.rooms["a"].messages.iter().map(|x| x.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn only_news_from_others_in_other_rooms_counts_as_unread() {
        let mut m = model(); // "b" is current
        // Replay of what was there before joining: not news.
        m.apply(ServerMsg::Message(msg("a", 1, "bob")), 0.0);
        m.apply(ServerMsg::Message(msg("a", 2, "bob")), 0.0);
        assert_eq!(m.unread("a"), 0);
        m.apply(ServerMsg::Message(msg("a", 3, "bob")), 0.0);
        m.apply(ServerMsg::Message(msg("a", 4, "me")), 0.0);
        m.apply(ServerMsg::Message(msg("b", 1, "bob")), 0.0);
        assert_eq!((m.unread("a"), m.unread("b")), (1, 0));
        m.open("a");
        assert_eq!(m.unread("a"), 0);
    }

    #[test]
    fn the_echo_clears_the_outbox_entry() {
        let mut m = model();
        m.outbox.push(Pending::new("me-1".into(), "b".into(), "m1".into()));
        m.apply(ServerMsg::Message(msg("b", 1, "me")), 0.0);
        assert!(m.outbox.is_empty());
    }

    #[test]
    fn my_message_in_a_history_page_clears_its_outbox_entry() {
        let mut m = model();
        m.outbox.push(Pending::new("me-3".into(), "a".into(), "m3".into()));
        let page = vec![msg("a", 3, "me")];
        m.apply(
            ServerMsg::History { room: "a".into(), messages: page, has_more: true, reference: None },
            0.0,
        );
        assert!(m.outbox.is_empty());
    }

    #[test]
    fn going_offline_queues_every_entry_again() {
        let mut m = model();
        let mut sent = Pending::new("x".into(), "a".into(), "t".into());
        sent.delivery = Delivery::Sent;
        let mut waiting = Pending::new("y".into(), "a".into(), "t".into());
        waiting.delivery = Delivery::RateLimited { slot: 5 };
        m.outbox = vec![sent, waiting];
        m.mark_offline(500);
        assert!(m.outbox.iter().all(|p| p.delivery == Delivery::Queued));
        assert!(!m.rooms["a"].live);
    }

    #[test]
    fn resume_points_name_the_last_seq_held() {
        let mut m = model();
        m.apply(ServerMsg::Message(msg("a", 5, "bob")), 0.0);
        assert_eq!(m.resume_points(), vec![("a".to_owned(), Some(5)), ("b".to_owned(), None)]);
    }

    #[test]
    fn presence_and_typing() {
        let mut m = model();
        let presence = |state| ServerMsg::Presence {
            room: "a".into(),
            nick: "bob".into(),
            state,
            member_count: None,
            guest: false,
            username: None,
        };
        m.apply(presence(PresenceState::Joined), 0.0);
        m.apply(ServerMsg::Typing { room: "a".into(), nick: "bob".into() }, 1000.0);
        assert_eq!(m.rooms["a"].typing_now(1500.0), vec!["bob".to_owned()]);
        assert!(m.rooms["a"].typing_now(1000.0 + TYPING_TTL_MS + 1.0).is_empty());
        assert!(m.rooms["a"].members.contains("bob"));
        // A message from bob ends an older notice but not one that just arrived.
        m.apply(ServerMsg::Message(msg("a", 1, "bob")), 1200.0);
        assert_eq!(m.rooms["a"].typing_now(1200.0), vec!["bob".to_owned()]);
        m.apply(ServerMsg::Message(msg("a", 2, "bob")), 2500.0);
        assert!(m.rooms["a"].typing_now(2500.0).is_empty());
        m.apply(ServerMsg::Typing { room: "a".into(), nick: "bob".into() }, 3000.0);
        m.apply(presence(PresenceState::Left), 0.0);
        assert!(!m.rooms["a"].members.contains("bob"));
    }

    #[test]
    fn a_big_room_counts_everyone_though_it_names_only_some() {
        let mut m = model();
        let names: Vec<String> = (0..256).map(|i| format!("p{i:03}")).collect();
        m.apply(
            ServerMsg::Joined {
                room: "big".into(),
                members: names,
                member_count: 1000,
                head: 0,
                truncated: false,
                reference: None,
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
            },
            0.0,
        );
        assert_eq!((m.rooms["big"].members.len(), m.rooms["big"].people()), (256, 1000));
        // Presence in a small room keeps the count with the names.
        let presence = |nick: &str, state| ServerMsg::Presence {
            room: "a".into(),
            nick: nick.into(),
            state,
            member_count: None,
            guest: false,
            username: None,
        };
        m.apply(presence("bob", PresenceState::Joined), 0.0);
        m.apply(presence("bob", PresenceState::Joined), 0.0);
        m.apply(presence("cy", PresenceState::Joined), 0.0);
        assert_eq!(m.rooms["a"].people(), 3, "me, bob and cy");
        m.apply(presence("bob", PresenceState::Left), 0.0);
        assert_eq!(m.rooms["a"].people(), 2);
    }

    #[test]
    fn history_prepends_and_tracks_more() {
        let mut m = model();
        m.apply(ServerMsg::Message(msg("a", 60, "bob")), 0.0);
        assert!(m.rooms["a"].has_older);
        m.apply(
            ServerMsg::History {
                room: "a".into(),
                messages: vec![msg("a", 58, "x"), msg("a", 59, "x")],
                has_more: false,
                reference: None,
            },
            0.0,
        );
        let view = &m.rooms["a"];
        assert_eq!(view.first_seq(), Some(58));
        assert!(!view.has_older);
    }

    #[test]
    fn a_message_frame_replaces_the_copy_held() {
        let mut m = model();
        m.apply(ServerMsg::Message(msg("a", 1, "bob")), 0.0);
        let mut now = msg("a", 1, "bob");
        now.reactions =
            vec![Reaction {
                emoji: "🎉".into(), count: 1, users: vec!["x".into()], nicks: vec!["X".into()]
            }];
        m.apply(ServerMsg::Message(now.clone()), 0.0);
        assert_eq!(m.rooms["a"].messages, vec![now]);
    }

    #[test]
    fn events_change_the_message_they_name_and_move_the_resume_point() {
        use crate::protocol::{DeleteEvent, EditEvent, ReactEvent};
        let mut m = model();
        m.apply(ServerMsg::Message(msg("a", 1, "bob")), 0.0);
        let react = |seq, user: &str, on| {
            ServerMsg::React(ReactEvent {
                room: "a".into(),
                seq,
                target: 1,
                emoji: "👍".into(),
                user: user.into(),
                nick: user.to_uppercase(),
                on,
            })
        };
        m.apply(
            ServerMsg::Edit(EditEvent {
                room: "a".into(),
                seq: 2,
                target: 1,
                text: "new".into(),
                edited_ts: 5,
                ..Default::default()
            }),
            0.0,
        );
        m.apply(react(3, "x", true), 0.0);
        m.apply(react(4, "y", true), 0.0);
        m.apply(react(5, "x", true), 0.0);
        m.apply(react(6, "x", false), 0.0);
        let held = &m.rooms["a"].messages[0];
        assert_eq!((held.text.as_str(), held.edited_ts), ("new", Some(5)));
        assert_eq!(
            held.reactions,
            vec![Reaction {
                emoji: "👍".into(), count: 1, users: vec!["y".into()], nicks: vec!["Y".into()]
            }]
        );
        m.apply(
            ServerMsg::Delete(DeleteEvent { room: "a".into(), seq: 7, target: 1, ..Default::default() }),
            0.0,
        );
        m.apply(react(8, "z", true), 0.0);
        m.apply(
            ServerMsg::Edit(EditEvent {
                room: "a".into(),
                seq: 9,
                target: 1,
                text: String::new(),
                ..Default::default()
            }),
            0.0,
        );
        let held = &m.rooms["a"].messages[0];
        assert!(held.deleted && held.text.is_empty() && held.reactions.is_empty(), "{held:?}");
        assert_eq!(m.rooms["a"].last_seq(), Some(9), "a resume starts after the last event");
    }

    #[test]
    fn a_replys_quote_follows_its_original() {
        use crate::protocol::{DeleteEvent, EditEvent, Quote};
        let mut m = model();
        let mut reply = msg("a", 5, "bob");
        reply.reply_to = Some(1);
        reply.quote = Some(Quote::of("ann", "old line\nmore", false));
        m.apply(ServerMsg::Message(reply), 0.0);
        assert_eq!(m.rooms["a"].messages[0].quote.as_ref().unwrap().text, "old line");
        // The original is not held here: the quote follows its events all the same.
        m.apply(
            ServerMsg::Edit(EditEvent {
                room: "a".into(),
                seq: 6,
                target: 1,
                text: "new line".into(),
                ..Default::default()
            }),
            0.0,
        );
        assert_eq!(m.rooms["a"].messages[0].quote, Some(Quote::of("ann", "new line", false)));
        m.apply(
            ServerMsg::Delete(DeleteEvent { room: "a".into(), seq: 7, target: 1, ..Default::default() }),
            0.0,
        );
        m.apply(
            ServerMsg::Edit(EditEvent {
                room: "a".into(),
                seq: 8,
                target: 1,
                text: String::new(),
                ..Default::default()
            }),
            0.0,
        );
        assert_eq!(m.rooms["a"].messages[0].quote, Some(Quote::of("ann", "", true)));
    }
}
