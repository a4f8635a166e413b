//! Chat sessions: who holds which nick, across tabs and reconnects, and which `client_id`s
//! a session already sent (so a retried `send` never makes a second message).
//!
//! A guest's session is its nick for as long as it is connected (and a grace period
//! after). A signed-in account has one chat session shared by all its connections, so its
//! `client_id`s are deduplicated per account, whichever tab or device retries.

use super::{room::Room, store::accounts::UserId};
use crate::protocol::{ErrorCode, Nick, Seq};
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// `client_id`s remembered per session; older ones are forgotten first.
const DEDUP_CAPACITY: usize = 1024;

/// What a `send` with a given `client_id` should do.
#[derive(Clone)]
pub enum SendState {
    /// Never seen: store it.
    New,
    /// Accepted, not yet stored: its echo is on the way, send nothing more.
    InFlight,
    /// Stored as this room's `seq`: answer with the original `message`, read back from the
    /// store. Retries are rare, so the session keeps where the message is, not its bytes:
    /// a busy sender's memory does not grow with what it sends.
    Stored(Arc<Room>, Seq),
}

#[derive(Default)]
struct Dedup {
    /// Each `client_id` is allocated once and shared by the map and the eviction order.
    states: HashMap<Arc<str>, Option<(Arc<Room>, Seq)>>,
    order: VecDeque<Arc<str>>,
}

pub struct Session {
    /// The guest's resume secret (`welcome.session`). Shared, not copied, by the registry's
    /// two indexes: a guest holds one copy of it.
    pub token: Arc<str>,
    /// A guest's public id (its user id is `g-{public_id}`): never the secret.
    pub public_id: String,
    pub nick: Nick,
    /// The account this session belongs to; None for a guest.
    pub account: Option<UserId>,
    dedup: Mutex<Dedup>,
}

impl Session {
    fn new(nick: Nick) -> Self {
        Session {
            token: Arc::from(super::auth::token::random_token()),
            public_id: super::auth::token::random_id(),
            nick,
            account: None,
            dedup: Mutex::default(),
        }
    }

    /// Looks up a `client_id`, claiming it when new.
    pub fn claim(&self, client_id: &str) -> SendState {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = dedup.states.get(client_id) {
            return match state {
                Some((room, seq)) => SendState::Stored(room.clone(), *seq),
                None => SendState::InFlight,
            };
        }
        if dedup.order.len() >= DEDUP_CAPACITY
            && let Some(oldest) = dedup.order.pop_front()
        {
            dedup.states.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(client_id);
        dedup.order.push_back(id.clone());
        dedup.states.insert(id, None);
        SendState::New
    }

    /// Releases a claim that was refused (rate limit), so a later retry is accepted.
    pub fn forget(&self, client_id: &str) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if dedup.states.remove(client_id).is_some() {
            dedup.order.retain(|c| &**c != client_id);
        }
    }

    /// Records where a message this session sent was stored.
    pub fn remember(&self, client_id: &str, room: &Arc<Room>, seq: Seq) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = dedup.states.get_mut(client_id) {
            *state = Some((room.clone(), seq));
        }
    }
}

struct Entry {
    session: Arc<Session>,
    connections: usize,
    /// When the last connection went away; the nick is held until `grace` after it.
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Registry {
    by_token: HashMap<Arc<str>, Entry>,
    /// Nick key → token.
    by_nick: HashMap<String, Arc<str>>,
    /// Signed-in accounts' sessions (never reachable by a guest's `hello`).
    by_account: HashMap<UserId, Entry>,
}

/// All sessions. One short lock, taken on `hello` and on disconnect only.
pub struct Sessions {
    inner: Mutex<Registry>,
    grace: Duration,
}

impl Sessions {
    pub fn new(grace: Duration) -> Self {
        Sessions { inner: Mutex::default(), grace }
    }

    /// Attaches a connection: resumes `token`'s session when it holds this nick, otherwise
    /// claims the nick for a new session. A nick held by another live session is refused.
    pub fn attach(&self, nick: Nick, token: Option<&str>) -> Result<Arc<Session>, ErrorCode> {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(entry) = token.and_then(|t| reg.by_token.get_mut(t))
            && entry.session.nick.key() == nick.key()
        {
            entry.connections += 1;
            entry.idle_since = None;
            return Ok(entry.session.clone());
        }
        let key = nick.key();
        if let Some(holder) = reg.by_nick.get(&key).cloned() {
            let live = reg.by_token.get(&holder).is_some_and(|e| self.is_live(e, now));
            if live {
                return Err(ErrorCode::NickTaken);
            }
            reg.by_token.remove(&holder);
        }
        let session = Arc::new(Session::new(nick));
        reg.by_nick.insert(key, session.token.clone());
        reg.by_token.insert(
            session.token.clone(),
            Entry { session: session.clone(), connections: 1, idle_since: None },
        );
        Ok(session)
    }

    /// Attaches a signed-in connection to its account's session (made on first use). The
    /// display name may have changed since: the session takes the current one.
    pub fn attach_account(&self, account: UserId, nick: Nick) -> Arc<Session> {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = reg.by_account.get_mut(&account)
            && entry.session.nick == nick
        {
            entry.connections += 1;
            entry.idle_since = None;
            return entry.session.clone();
        }
        let connections = reg.by_account.get(&account).map_or(0, |e| e.connections);
        let session = Arc::new(Session { account: Some(account), ..Session::new(nick) });
        reg.by_account.insert(
            account,
            Entry { session: session.clone(), connections: connections + 1, idle_since: None },
        );
        session
    }

    /// Whether a live guest session (connected, or within its grace period) holds a nick
    /// with this key: an account may not take it from under them.
    pub fn guest_holds(&self, key: &str) -> bool {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        reg.by_nick.get(key).and_then(|token| reg.by_token.get(token)).is_some_and(|e| self.is_live(e, now))
    }

    /// Detaches a connection; the session (and nick) stays for the grace period.
    pub fn detach(&self, session: &Session) {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(account) = session.account {
            if let Some(entry) = reg.by_account.get_mut(&account) {
                entry.connections = entry.connections.saturating_sub(1);
                if entry.connections == 0 {
                    entry.idle_since = Some(Instant::now());
                }
            }
            return;
        }
        if let Some(entry) = reg.by_token.get_mut(&session.token) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                entry.idle_since = Some(Instant::now());
            }
        }
    }

    /// Forgets sessions idle for longer than the grace period. Returns how many.
    pub fn sweep(&self) -> usize {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired: Vec<(Arc<str>, String)> = reg
            .by_token
            .iter()
            .filter(|(_, e)| !self.is_live(e, now))
            .map(|(t, e)| (t.clone(), e.session.nick.key()))
            .collect();
        for (token, nick_key) in &expired {
            reg.by_token.remove(token);
            if reg.by_nick.get(nick_key) == Some(token) {
                reg.by_nick.remove(nick_key);
            }
        }
        let before = reg.by_account.len();
        let grace = self.grace;
        reg.by_account.retain(|_, e| e.idle_since.is_none_or(|since| now.duration_since(since) < grace));
        expired.len() + before - reg.by_account.len()
    }

    pub fn len(&self) -> usize {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_token.len() + reg.by_account.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_live(&self, entry: &Entry, now: Instant) -> bool {
        match entry.idle_since {
            None => true,
            Some(since) => now.duration_since(since) < self.grace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nick(s: &str) -> Nick {
        Nick::parse(s).unwrap()
    }

    #[test]
    fn a_live_nick_is_taken_case_insensitively() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let ann = sessions.attach(nick("Ann"), None).unwrap();
        assert_eq!(sessions.attach(nick("ann"), None).err(), Some(ErrorCode::NickTaken));
        // The session's own token may open more connections (tabs).
        let again = sessions.attach(nick("Ann"), Some(&ann.token)).unwrap();
        assert!(Arc::ptr_eq(&ann, &again));
    }

    #[test]
    fn a_session_keeps_its_nick_through_the_grace_period_only() {
        let sessions = Sessions::new(Duration::from_millis(30));
        let ann = sessions.attach(nick("ann"), None).unwrap();
        sessions.detach(&ann);
        assert_eq!(sessions.attach(nick("ann"), None).err(), Some(ErrorCode::NickTaken));
        let resumed = sessions.attach(nick("ann"), Some(&ann.token)).unwrap();
        assert!(Arc::ptr_eq(&ann, &resumed));
        sessions.detach(&resumed);
        std::thread::sleep(Duration::from_millis(40));
        let other = sessions.attach(nick("ann"), None).unwrap();
        assert_ne!(other.token, ann.token);
        assert_eq!(sessions.sweep(), 0);
        sessions.detach(&other);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(sessions.sweep(), 1);
        assert!(sessions.is_empty());
    }

    #[test]
    fn an_account_has_one_session_for_all_its_connections() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let a = sessions.attach_account(7, nick("Ann"));
        let b = sessions.attach_account(7, nick("Ann"));
        assert!(Arc::ptr_eq(&a, &b), "two tabs share the dedup of one account");
        // A guest can neither take the account's session nor is blocked by it here (the
        // account's names are checked against the account store).
        assert!(sessions.attach(nick("Ann"), Some(&a.token)).is_ok_and(|g| !Arc::ptr_eq(&g, &a)));
        sessions.detach(&a);
        sessions.detach(&b);
        assert_eq!(a.account, Some(7));
    }

    #[test]
    fn client_ids_are_claimed_once() {
        let session = Session::new(nick("ann"));
        let room = Arc::new(Room::new(crate::protocol::RoomName::parse("r").unwrap(), 0, 0, Arc::default()));
        assert!(matches!(session.claim("a"), SendState::New));
        assert!(matches!(session.claim("a"), SendState::InFlight));
        session.remember("a", &room, 7);
        assert!(matches!(session.claim("a"), SendState::Stored(r, 7) if Arc::ptr_eq(&r, &room)));
        assert!(matches!(session.claim("b"), SendState::New));
    }

    #[test]
    fn a_refused_claim_is_forgotten_and_the_oldest_claims_are_evicted() {
        let session = Session::new(nick("ann"));
        assert!(matches!(session.claim("x"), SendState::New));
        session.forget("x");
        assert!(matches!(session.claim("x"), SendState::New));
        for i in 0..DEDUP_CAPACITY {
            session.claim(&format!("c{i}"));
        }
        // "x" was the oldest: evicted to make room.
        assert!(matches!(session.claim("x"), SendState::New));
        assert!(matches!(session.claim(&format!("c{}", DEDUP_CAPACITY - 1)), SendState::InFlight));
    }

    #[test]
    fn tokens_are_unguessable_and_distinct() {
        let a = Session::new(nick("a"));
        let b = Session::new(nick("b"));
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.public_id.as_str(), &*a.token);
        assert_ne!(a.token, b.token);
    }
}
