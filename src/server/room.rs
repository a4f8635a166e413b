//! One chat room: who is in it, the next seq to assign, and fan-out of stored messages.
//!
//! Each room has its own lock, held only for short, non-blocking work (assigning a seq,
//! pushing already-serialised bytes into bounded queues), so rooms never wait on each other.

use super::{
    access::Access,
    auth::Identity,
    metrics::Metrics,
    outbound::{ConnHandle, ConnId, Outbound},
};
use crate::protocol::{ChatMessage, Nick, PresenceState, RoomEvent, RoomInfo, RoomName, Seq, ServerMsg};
use axum::extract::ws::Utf8Bytes;
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, atomic::Ordering},
};

/// Presence is announced for at most this many people per room: the room names them
/// (in `joined.members` and in `presence` events) and everyone else is counted only
/// (`member_count`). Announcing every arrival and departure in a big room would be O(n²)
/// frames as it fills. Whoever was named is always reported gone when they leave, and
/// the free name slot goes to someone present who was not named yet, so a client that
/// applies `joined` and then every `presence` always holds exactly the named set.
pub const PRESENCE_MAX_PEOPLE: usize = 256;

struct Member {
    nick: Arc<str>,
    conn: Arc<ConnHandle>,
    /// The member's user id (`UserInfo::id`), so a kick or ban finds every tab.
    user: Arc<str>,
    /// Who joined (absent for rooms driven directly by tests), so a change of the room's
    /// access made on another node can be checked against everyone here.
    who: Option<Box<Identity>>,
}

struct RoomState {
    /// Seq the next accepted message gets.
    next_seq: Seq,
    /// Highest seq stored and fanned out; a new member's replay covers up to here.
    head: Seq,
    /// Bumped when messages accepted but not yet stored are abandoned (a failed commit):
    /// their seqs are handed out again, and jobs of an older epoch are refused.
    epoch: u64,
    /// Unix ms of the last message (or of creation): the directory's order.
    last_active: i64,
    members: HashMap<ConnId, Member>,
    /// Connections per nick: presence is per person, not per tab.
    nicks: HashMap<Arc<str>, usize>,
    /// The people this room names to its members (at most `PRESENCE_MAX_PEOPLE`).
    named: BTreeSet<Arc<str>>,
    /// Nicks present that are guests (shown as guests wherever their name shows).
    guests: HashSet<Arc<str>>,
    /// The usernames of nicks present that are accounts (for `@` completion).
    usernames: HashMap<Arc<str>, Arc<str>>,
    /// People connected to other nodes, per node (multi-node presence).
    remote: HashMap<String, Vec<Arc<str>>>,
    /// Bumped when the local connections change.
    version: u64,
}

impl RoomState {
    fn presence(&self, room: &RoomName, nick: &str, state: PresenceState) -> Utf8Bytes {
        encode(&ServerMsg::Presence {
            room: room.as_str().to_owned(),
            nick: nick.to_owned(),
            state,
            member_count: Some(self.nicks.len() as u32),
            guest: self.guests.contains(nick),
            username: self.usernames.get(nick).map(|u| u.to_string()),
        })
    }

    /// Removes one connection, with the presence changes it causes.
    fn remove(&mut self, room: &RoomName, key: &Arc<str>, conn: ConnId) -> Option<Member> {
        let member = self.members.remove(&conn)?;
        self.version += 1;
        self.drop_person(room, key, &member.nick);
        Some(member)
    }

    /// One connection (here, or a node's share) of `nick` more; announces a first one.
    fn add_person(
        &mut self,
        room: &RoomName,
        key: &Arc<str>,
        nick: Arc<str>,
        guest: bool,
        username: Option<&str>,
    ) {
        let count = self.nicks.entry(nick.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        if guest {
            self.guests.insert(nick.clone());
        }
        if let Some(username) = username {
            self.usernames.insert(nick.clone(), Arc::from(username));
        }
        if self.named.len() < PRESENCE_MAX_PEOPLE {
            self.named.insert(nick.clone());
            let frame = self.presence(room, &nick, PresenceState::Joined);
            self.tell_all(key, frame, None);
        }
    }

    /// One connection of `nick` fewer; when it was the last, the others hear that the
    /// person left and someone present who was not named takes the free name slot.
    fn drop_person(&mut self, room: &RoomName, key: &Arc<str>, nick: &Arc<str>) {
        match self.nicks.get_mut(nick) {
            Some(count) if *count > 1 => {
                *count -= 1;
                return;
            }
            Some(_) => {
                self.nicks.remove(nick);
            }
            None => return,
        }
        if self.named.remove(nick) {
            let frame = self.presence(room, nick, PresenceState::Left);
            self.tell_all(key, frame, None);
            let unnamed = self.nicks.keys().find(|n| !self.named.contains(*n)).cloned();
            if let Some(next) = unnamed {
                self.named.insert(next.clone());
                let frame = self.presence(room, &next, PresenceState::Joined);
                self.tell_all(key, frame, None);
            }
        }
        self.guests.remove(nick);
        self.usernames.remove(nick);
    }

    fn tell_all(&self, key: &Arc<str>, frame: Utf8Bytes, except: Option<ConnId>) {
        for (id, member) in &self.members {
            if Some(*id) != except {
                member.conn.push(Outbound::RoomEvent { room: key.clone(), frame: frame.clone() });
            }
        }
    }
}

pub struct Room {
    pub name: RoomName,
    metrics: Arc<Metrics>,
    /// The name as shared bytes, cheap to clone into every queued item.
    pub key: Arc<str>,
    state: Mutex<RoomState>,
    /// Who may see and do what here. Its own lock; when both are held (a join's check
    /// and subscription), it is taken first.
    access: Mutex<Access>,
    /// Moderation changes one at a time (each awaits the store between its read and
    /// its write).
    pub moderation: tokio::sync::Mutex<()>,
}

/// What a new member learns when it subscribes.
pub struct Subscription {
    pub head: Seq,
    /// The named people (at most `PRESENCE_MAX_PEOPLE`), sorted.
    pub members: Vec<String>,
    pub member_count: usize,
    /// Which of `members` are guests.
    pub guests: Vec<String>,
    /// The usernames of `members` that are accounts.
    pub usernames: Vec<String>,
}

impl Room {
    pub fn new(name: RoomName, head: Seq, last_active: i64, metrics: Arc<Metrics>) -> Self {
        let key: Arc<str> = Arc::from(name.as_str());
        Room {
            name,
            metrics,
            key,
            state: Mutex::new(RoomState {
                next_seq: head + 1,
                head,
                epoch: 0,
                last_active,
                members: HashMap::new(),
                nicks: HashMap::new(),
                named: BTreeSet::new(),
                guests: HashSet::new(),
                usernames: HashMap::new(),
                remote: HashMap::new(),
                version: 0,
            }),
            access: Mutex::default(),
            moderation: tokio::sync::Mutex::new(()),
        }
    }

    /// The room's access state (visibility, topic, standings).
    pub fn access(&self) -> MutexGuard<'_, Access> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection (a no-op for a member). The caller must already have queued
    /// `Outbound::BeginJoin` so the writer holds live traffic until the replay (which covers
    /// up to `head`) arrives.
    pub fn subscribe(&self, nick: &Nick, conn: &Arc<ConnHandle>) -> Subscription {
        self.subscribe_as(nick, "", false, conn)
    }

    /// `subscribe` for a known user (`user` is its id; `guest` marks it everywhere).
    pub fn subscribe_as(&self, nick: &Nick, user: &str, guest: bool, conn: &Arc<ConnHandle>) -> Subscription {
        self.subscribe_with(nick, user, guest, None, conn)
    }

    /// `subscribe_as` for an account, whose `username` the room names beside its nick.
    pub fn subscribe_with(
        &self,
        nick: &Nick,
        user: &str,
        guest: bool,
        username: Option<&str>,
        conn: &Arc<ConnHandle>,
    ) -> Subscription {
        let mut state = self.lock();
        if !state.members.contains_key(&conn.id) {
            let nick: Arc<str> = Arc::from(nick.as_str());
            state.version += 1;
            state.add_person(&self.name, &self.key, nick.clone(), guest, username);
            state
                .members
                .insert(conn.id, Member { nick, conn: conn.clone(), user: Arc::from(user), who: None });
        }
        let members = state.named.iter().map(|n| n.to_string()).collect();
        let guests =
            state.named.iter().filter(|n| state.guests.contains(*n)).map(|n| n.to_string()).collect();
        let usernames =
            state.named.iter().filter_map(|n| state.usernames.get(n)).map(|u| u.to_string()).collect();
        Subscription { head: state.head, members, member_count: state.nicks.len(), guests, usernames }
    }

    /// `subscribe_with` for an identity, kept with the membership (see `shut_out`).
    pub fn subscribe_identity(&self, who: &Identity, conn: &Arc<ConnHandle>) -> Subscription {
        let username = who.account.as_ref().map(|(_, u)| u.as_str());
        let sub = self.subscribe_with(&who.nick, &who.id, who.is_guest(), username, conn);
        if let Some(member) = self.lock().members.get_mut(&conn.id) {
            member.who = Some(Box::new(who.clone()));
        }
        sub
    }

    /// Removes every connection whose identity `access` no longer lets in (the room
    /// turned private, a membership ended or a ban, decided on another node): returns
    /// them, so each can be told. The caller holds the access lock it passes.
    pub fn shut_out(&self, access: &Access) -> Vec<Arc<ConnHandle>> {
        let mut state = self.lock();
        let ids: Vec<ConnId> = state
            .members
            .iter()
            .filter(|(_, m)| m.who.as_ref().is_some_and(|who| access.check_join(who).is_err()))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(member) = state.remove(&self.name, &self.key, id) {
                out.push(member.conn);
            }
        }
        out
    }

    /// Whether anyone is connected to the room on this node.
    pub fn has_members(&self) -> bool {
        !self.lock().members.is_empty()
    }

    /// Queues a join's replay (`joined` and the history) for `conn` if it is still a
    /// member, under the room's lock: a removal (a kick, a ban, access lost on another
    /// node) then either comes after it, its `EndRoom` and `kicked` behind `joined`, or
    /// came before, and the join is not confirmed. False when `conn` was removed.
    pub fn replay_to_member(&self, conn: &ConnHandle, replay: Outbound, reserved: usize) -> bool {
        let state = self.lock();
        if !state.members.contains_key(&conn.id) {
            return false;
        }
        conn.replay(replay, reserved);
        true
    }

    /// Whether `conn` is in the room now (a kick removes it without the reader's help).
    pub fn is_member(&self, conn: ConnId) -> bool {
        self.lock().members.contains_key(&conn)
    }

    /// Removes every connection of `user` (a kick or ban): returns them, so each can be
    /// told, and their queued room traffic dropped.
    pub fn remove_user(&self, user: &str) -> Vec<Arc<ConnHandle>> {
        let mut state = self.lock();
        let ids: Vec<ConnId> =
            state.members.iter().filter(|(_, m)| &*m.user == user).map(|(id, _)| *id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(member) = state.remove(&self.name, &self.key, id) {
                out.push(member.conn);
            }
        }
        out
    }

    /// The user id of the guest present here under `nick` (compared as nicks collide).
    pub fn guest_named(&self, nick: &Nick) -> Option<Arc<str>> {
        let key = nick.key();
        let state = self.lock();
        state
            .members
            .values()
            .find(|m| {
                // A guest's id, not only a guest's nick: an account can never be taken for one.
                m.user.starts_with("g-")
                    && state.guests.contains(&m.nick)
                    && Nick::parse(&m.nick).is_ok_and(|n| n.key() == key)
            })
            .map(|m| m.user.clone())
    }

    /// Sends an event (already encoded) to everyone in the room.
    pub fn broadcast(&self, msg: &ServerMsg) {
        self.broadcast_frame(encode(msg));
    }

    /// Sends an already-encoded event to everyone in the room.
    pub fn broadcast_frame(&self, frame: Utf8Bytes) {
        self.lock().tell_all(&self.key, frame, None);
    }

    /// Moves the delivered head to `head` when nobody here would receive what lies
    /// between (a multi-node head check of a room no one here is in). False when someone
    /// is here: the events must then be delivered, not skipped.
    pub fn advance_if_empty(&self, head: Seq) -> bool {
        let mut state = self.lock();
        if !state.members.is_empty() {
            return false;
        }
        state.head = state.head.max(head);
        state.next_seq = state.next_seq.max(state.head + 1);
        true
    }

    /// Bumped whenever the people connected here change (the multi-node presence sync
    /// writes this node's share again only then).
    pub fn presence_version(&self) -> u64 {
        self.lock().version
    }

    /// The people connected to this node: (nick, guest, username), sorted by nick.
    pub fn local_people(&self) -> Vec<(String, bool, Option<String>)> {
        let state = self.lock();
        let mut people: Vec<(String, bool, Option<String>)> = Vec::new();
        for m in state.members.values() {
            if people.iter().any(|(n, _, _)| **n == *m.nick) {
                continue;
            }
            let guest = m.user.starts_with("g-");
            people.push((m.nick.to_string(), guest, state.usernames.get(&m.nick).map(|u| u.to_string())));
        }
        people.sort();
        people
    }

    /// Sets the people another node reports in this room (its presence entry in Redis):
    /// each counts as one connection of theirs, so presence, `member_count` and the named
    /// set cover the whole cluster. An empty list removes the node.
    pub fn set_remote(&self, node: &str, people: Vec<(String, bool, Option<String>)>) {
        let mut state = self.lock();
        let old = state.remote.remove(node).unwrap_or_default();
        let new: Vec<Arc<str>> = people.iter().map(|(n, _, _)| Arc::from(n.as_str())).collect();
        for nick in old.iter().filter(|n| !new.contains(n)) {
            state.drop_person(&self.name, &self.key, nick);
        }
        for ((_, guest, username), nick) in people.iter().zip(&new) {
            if !old.contains(nick) {
                state.add_person(&self.name, &self.key, nick.clone(), *guest, username.as_deref());
            }
        }
        if !new.is_empty() {
            state.remote.insert(node.to_owned(), new);
        }
    }

    /// The nodes whose people are counted here.
    pub fn remote_nodes(&self) -> Vec<String> {
        self.lock().remote.keys().cloned().collect()
    }

    /// Removes a connection; tells the others when a named person has no connection left
    /// here, and names someone present in their place.
    pub fn unsubscribe(&self, conn: ConnId) -> bool {
        let mut state = self.lock();
        state.remove(&self.name, &self.key, conn).is_some()
    }

    /// Assigns the next seq and hands the event to `enqueue` (the committer) while the
    /// room lock is held, so the committer sees each room's events in seq order. When
    /// `enqueue` fails the seq is taken back, so no gap is left.
    pub fn accept<E>(
        &self,
        build: impl FnOnce(Seq) -> RoomEvent,
        enqueue: impl FnOnce(RoomEvent, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        let seq = state.next_seq;
        let epoch = state.epoch;
        let result = enqueue(build(seq), epoch);
        if result.is_ok() {
            state.next_seq += 1;
        }
        result
    }

    /// The epoch messages are accepted in now.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Abandons every message accepted and not stored: the next message gets the seq
    /// after `stored_head` (what the store holds), and jobs of earlier epochs are refused.
    pub fn rewind(&self, stored_head: Seq) {
        let mut state = self.lock();
        state.epoch += 1;
        state.head = state.head.max(stored_head);
        state.next_seq = state.head + 1;
    }

    /// Fans a stored message out to every member. Serialised once; every member gets the
    /// same bytes. Returns the frame so the sender's session can remember it for retries.
    pub fn deliver(&self, msg: ChatMessage) -> Utf8Bytes {
        let (seq, ts) = (msg.seq, msg.ts);
        let frame = encode(&ServerMsg::Message(msg));
        self.deliver_frame(seq, ts, frame.clone());
        frame
    }

    /// Fans an already-encoded stored message out to every member.
    pub fn deliver_frame(&self, seq: Seq, ts: i64, frame: Utf8Bytes) {
        let mut state = self.lock();
        state.head = state.head.max(seq);
        state.last_active = state.last_active.max(ts);
        // Counted first, so whoever receives the message already sees it counted.
        self.metrics.messages_out.fetch_add(state.members.len() as u64, Ordering::Relaxed);
        for member in state.members.values() {
            member.conn.push(Outbound::Room { room: self.key.clone(), seq, frame: frame.clone() });
        }
    }

    /// Tells the room's other people that `nick` is typing.
    pub fn typing(&self, nick: &Nick) {
        let frame = encode(&ServerMsg::Typing {
            room: self.name.as_str().to_owned(),
            nick: nick.as_str().to_owned(),
        });
        let state = self.lock();
        for member in state.members.values().filter(|m| &*m.nick != nick.as_str()) {
            member.conn.push(Outbound::RoomEvent { room: self.key.clone(), frame: frame.clone() });
        }
    }

    pub fn info(&self) -> RoomInfo {
        let (members, head, last_active) = {
            let state = self.lock();
            (state.nicks.len() as u32, state.head, state.last_active)
        };
        let access = self.access();
        RoomInfo {
            name: self.name.as_str().to_owned(),
            members,
            head,
            last_active,
            visibility: access.visibility,
            dm: access.dm,
            topic: access.topic.clone(),
            ..RoomInfo::default()
        }
    }

    pub fn head(&self) -> Seq {
        self.lock().head
    }

    /// Nobody is here and nothing was ever said or is on its way to the store: the room
    /// need not be kept.
    pub fn is_idle(&self) -> bool {
        let empty = {
            let state = self.lock();
            state.members.is_empty() && state.head == 0 && state.next_seq == 1
        };
        empty && self.access().is_default()
    }
}

/// Serialises a server message to a shareable text frame.
pub fn encode(msg: &ServerMsg) -> Utf8Bytes {
    // Serialising these plain data types cannot fail (no maps with non-string keys).
    let text = serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}"));
    Utf8Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's handle, twice: one to subscribe, one to read its queue as the writer would.
    fn member(id: ConnId) -> (Arc<ConnHandle>, Arc<ConnHandle>) {
        let conn = ConnHandle::new(id, 1 << 20);
        (conn.clone(), conn)
    }

    /// What the member's writer would take off its queue.
    fn frames(conn: &ConnHandle) -> Vec<String> {
        let mut out = Vec::new();
        for item in conn.try_take().unwrap_or_default() {
            match item {
                Outbound::Frame(f)
                | Outbound::Room { frame: f, .. }
                | Outbound::RoomEvent { frame: f, .. } => out.push(f.to_string()),
                other => out.push(format!("{other:?}")),
            }
        }
        out
    }

    fn msg(seq: Seq) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            nick: "ann".into(),
            text: "hi".into(),
            ts: 0,
            client_id: "c".into(),
            ..ChatMessage::default()
        }
    }

    /// A join's `joined` reaches the client only while it is a member: one removed while
    /// its history was read hears `kicked` and no `joined` after it (found by the cluster
    /// test of a ban on another node, which saw `kicked`, then `joined`).
    #[test]
    fn a_join_is_confirmed_only_to_a_member() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let eve = Nick::parse("eve").unwrap();
        let replay =
            || Outbound::Replay { room: room.key.clone(), frames: vec![Utf8Bytes::from("joined")], upto: 0 };
        let (conn, writer) = member(1);
        room.subscribe_as(&eve, "u-eve", false, &conn);
        // Removed while the replay was read: not confirmed, nothing queued for it.
        crate::server::broker::eject(&room, room.remove_user("u-eve"), "owner", true);
        assert!(!room.replay_to_member(&conn, replay(), 0));
        let kicked = frames(&writer);
        assert_eq!(kicked.len(), 2, "{kicked:?}");
        assert!(kicked[0].starts_with("EndRoom") && kicked[1].contains(r#""type":"kicked""#), "{kicked:?}");
        // Still a member: the replay goes first, so a removal right after follows it.
        let (conn, writer) = member(2);
        room.subscribe_as(&eve, "u-eve", false, &conn);
        assert!(room.replay_to_member(&conn, replay(), 0));
        crate::server::broker::eject(&room, room.remove_user("u-eve"), "owner", true);
        let order = frames(&writer);
        assert!(order[0].starts_with("Replay") && order[2].contains(r#""type":"kicked""#), "{order:?}");
    }

    #[test]
    fn seqs_continue_from_the_stored_head() {
        let room = Room::new(RoomName::parse("r").unwrap(), 41, 0, Arc::default());
        let mut got = Vec::new();
        for _ in 0..3 {
            room.accept(
                |s| RoomEvent::Message(msg(s)),
                |m, _| {
                    got.push(m.seq());
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        }
        assert_eq!(got, vec![42, 43, 44]);
    }

    #[test]
    fn delivery_reaches_every_member_with_the_same_bytes() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let (a, ra) = member(1);
        let (b, rb) = member(2);
        room.subscribe(&Nick::parse("ann").unwrap(), &a);
        room.subscribe(&Nick::parse("bob").unwrap(), &b);
        frames(&ra); // presence of bob
        let frame = room.deliver(msg(1));
        assert_eq!(frames(&ra), vec![frame.to_string()]);
        assert_eq!(frames(&rb), vec![frame.to_string()]);
        assert_eq!(room.head(), 1);
    }

    #[test]
    fn presence_is_per_nick_not_per_connection() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let (watcher, rw) = member(1);
        room.subscribe(&Nick::parse("zed").unwrap(), &watcher);
        let (tab1, _r1) = member(2);
        let (tab2, _r2) = member(3);
        let bob = Nick::parse("bob").unwrap();
        room.subscribe(&bob, &tab1);
        let sub = room.subscribe(&bob, &tab2);
        assert_eq!(sub.members, vec!["bob".to_owned(), "zed".to_owned()]);
        let seen = frames(&rw);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains(r#""state":"joined""#));

        assert!(room.unsubscribe(2));
        assert!(frames(&rw).is_empty(), "bob still has a tab open");
        assert!(room.unsubscribe(3));
        assert!(frames(&rw)[0].contains(r#""state":"left""#));
        assert!(!room.unsubscribe(3));
        assert_eq!(room.info().members, 1);
    }

    #[test]
    fn large_rooms_stop_announcing_each_person_and_cap_the_member_list() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let (watcher, rw) = member(0);
        room.subscribe(&Nick::parse("watcher").unwrap(), &watcher);
        let mut keep = Vec::new();
        for i in 1..PRESENCE_MAX_PEOPLE + 10 {
            let (c, rx) = member(i as u64);
            let sub = room.subscribe(&Nick::parse(&format!("p{i:04}")).unwrap(), &c);
            assert!(sub.members.len() <= PRESENCE_MAX_PEOPLE);
            assert_eq!(sub.member_count, i + 1);
            keep.push((c, rx));
        }
        // Announced while fewer than 256 were named, silent after.
        assert_eq!(frames(&rw).len(), PRESENCE_MAX_PEOPLE - 1);
        assert_eq!(room.info().members as usize, PRESENCE_MAX_PEOPLE + 10);
    }

    /// Presence as a client applies it: `joined.members`, then every presence event.
    fn named_set(sub: &Subscription, events: &[String]) -> BTreeSet<String> {
        let mut named: BTreeSet<String> = sub.members.iter().cloned().collect();
        for e in events {
            let ServerMsg::Presence { nick, state, .. } = serde_json::from_str(e).unwrap() else { continue };
            match state {
                PresenceState::Joined => named.insert(nick),
                PresenceState::Left => named.remove(&nick),
            };
        }
        named
    }

    #[test]
    fn everyone_a_client_was_told_is_present_is_reported_gone_in_a_big_room() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let mut people = Vec::new();
        for i in 0..PRESENCE_MAX_PEOPLE + 50 {
            let (c, _) = member(i as u64 + 10);
            room.subscribe(&Nick::parse(&format!("p{i:04}")).unwrap(), &c);
            people.push(c);
        }
        // The observer joins a room past the announcement size and is told 256 names.
        let (watcher, rw) = member(1);
        let sub = room.subscribe(&Nick::parse("watcher").unwrap(), &watcher);
        assert_eq!((sub.members.len(), sub.member_count), (PRESENCE_MAX_PEOPLE, PRESENCE_MAX_PEOPLE + 51));
        // Everyone it was told of leaves, and then everyone else.
        let mut events = Vec::new();
        for c in &people {
            assert!(room.unsubscribe(c.id));
            events.extend(frames(&rw));
            let present: BTreeSet<String> = room.lock().nicks.keys().map(|n| n.to_string()).collect();
            let named = named_set(&sub, &events);
            assert!(
                named.is_subset(&present),
                "a ghost: {:?}",
                named.difference(&present).collect::<Vec<_>>()
            );
        }
        assert_eq!(named_set(&sub, &events), BTreeSet::from(["watcher".to_owned()]));
        let last: ServerMsg = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(matches!(last, ServerMsg::Presence { member_count: Some(1), .. }), "{last:?}");
    }

    #[test]
    fn a_kick_removes_every_tab_of_the_user_and_guests_are_marked() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let (watcher, rw) = member(1);
        room.subscribe_as(&Nick::parse("zed").unwrap(), "1", false, &watcher);
        let (tab1, _) = member(2);
        let (tab2, _) = member(3);
        let bob = Nick::parse("bob").unwrap();
        let sub = room.subscribe_as(&bob, "g-b0b", true, &tab1);
        assert_eq!(sub.guests, vec!["bob".to_owned()]);
        room.subscribe_as(&bob, "g-b0b", true, &tab2);
        assert!(frames(&rw)[0].contains(r#""guest":true"#));
        assert_eq!(room.guest_named(&Nick::parse("BOB").unwrap()).as_deref(), Some("g-b0b"));
        assert_eq!(room.guest_named(&Nick::parse("zed").unwrap()), None, "not a guest");
        // An account's socket is never taken for a guest, even under a guest's nick.
        let (acct, _) = member(4);
        room.subscribe_as(&bob, "7", false, &acct);
        assert_eq!(room.guest_named(&bob).as_deref(), Some("g-b0b"));
        room.unsubscribe(4);
        let gone = room.remove_user("g-b0b");
        assert_eq!(gone.len(), 2);
        assert!(!room.is_member(2) && !room.is_member(3) && room.is_member(1));
        assert!(frames(&rw)[0].contains(r#""state":"left""#));
    }

    #[test]
    fn typing_skips_the_typist() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let (a, ra) = member(1);
        let (b, rb) = member(2);
        let ann = Nick::parse("ann").unwrap();
        room.subscribe(&ann, &a);
        room.subscribe(&Nick::parse("bob").unwrap(), &b);
        frames(&ra);
        room.typing(&ann);
        assert!(frames(&ra).is_empty());
        assert_eq!(frames(&rb), vec![r#"{"type":"typing","room":"r","nick":"ann"}"#.to_owned()]);
    }

    #[test]
    fn a_full_queue_cuts_only_that_member() {
        let room = Room::new(RoomName::parse("r").unwrap(), 0, 0, Arc::default());
        let slow = ConnHandle::new(1, 300);
        let (fast, fast_rx) = member(2);
        room.subscribe(&Nick::parse("slow").unwrap(), &slow);
        room.subscribe(&Nick::parse("fast").unwrap(), &fast);
        frames(&fast_rx);
        for seq in 1..=10 {
            room.deliver(msg(seq));
        }
        assert_eq!(slow.close_reason(), Some(super::super::outbound::CloseReason::SLOW_CONSUMER));
        assert_eq!(frames(&fast_rx).len(), 10);
        assert!(fast.close_reason().is_none());
    }
}
