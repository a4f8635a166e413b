//! Sessions: who holds which nick, across tabs and reconnects, and which `client_id`s a
//! session already sent (so a retried `send` never makes a second message).

use crate::protocol::{ErrorCode, Nick};
use axum::extract::ws::Utf8Bytes;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// `client_id`s remembered per session; older ones are forgotten first.
const DEDUP_CAPACITY: usize = 1024;

/// What a `send` with a given `client_id` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendState {
    /// Never seen: store it.
    New,
    /// Accepted, not yet stored: its echo is on the way, send nothing more.
    InFlight,
    /// Stored: answer with the original `message` frame.
    Stored(Utf8Bytes),
}

#[derive(Default)]
struct Dedup {
    states: HashMap<String, Option<Utf8Bytes>>,
    order: VecDeque<String>,
}

pub struct Session {
    pub token: String,
    pub nick: Nick,
    dedup: Mutex<Dedup>,
}

impl Session {
    fn new(nick: Nick) -> Self {
        Session { token: uuid::Uuid::new_v4().simple().to_string(), nick, dedup: Mutex::default() }
    }

    /// Looks up a `client_id`, claiming it when new.
    pub fn claim(&self, client_id: &str) -> SendState {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = dedup.states.get(client_id) {
            return match state {
                Some(frame) => SendState::Stored(frame.clone()),
                None => SendState::InFlight,
            };
        }
        if dedup.order.len() >= DEDUP_CAPACITY
            && let Some(oldest) = dedup.order.pop_front()
        {
            dedup.states.remove(&oldest);
        }
        dedup.order.push_back(client_id.to_owned());
        dedup.states.insert(client_id.to_owned(), None);
        SendState::New
    }

    /// Releases a claim that was refused (rate limit), so a later retry is accepted.
    pub fn forget(&self, client_id: &str) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if dedup.states.remove(client_id).is_some() {
            dedup.order.retain(|c| c != client_id);
        }
    }

    /// Records the stored frame of a message this session sent.
    pub fn remember(&self, client_id: String, frame: Utf8Bytes) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = dedup.states.get_mut(&client_id) {
            *state = Some(frame);
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
    by_token: HashMap<String, Entry>,
    /// Nick key → token.
    by_nick: HashMap<String, String>,
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

    /// Detaches a connection; the session (and nick) stays for the grace period.
    pub fn detach(&self, session: &Session) {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
        let expired: Vec<(String, String)> = reg
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
        expired.len()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_token.len()
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
    fn client_ids_are_claimed_once() {
        let session = Session::new(nick("ann"));
        assert_eq!(session.claim("a"), SendState::New);
        assert_eq!(session.claim("a"), SendState::InFlight);
        session.remember("a".into(), Utf8Bytes::from_static("frame"));
        assert_eq!(session.claim("a"), SendState::Stored(Utf8Bytes::from_static("frame")));
    }

    #[test]
    fn tokens_are_unguessable_and_distinct() {
        let a = Session::new(nick("a"));
        let b = Session::new(nick("b"));
        assert_eq!(a.token.len(), 32);
        assert_ne!(a.token, b.token);
    }
}
