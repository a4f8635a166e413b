//! Rooms' event logs and current state behind a small, engine-neutral trait.
//!
//! The hub never talks to SQLite directly: it appends events through [`committer`] (group
//! commit, one writer) and reads through [`MessageStore`]. A PostgreSQL engine is one more
//! impl.
//!
//! Each room has one log of events numbered by `seq` (messages, edits, deletions and
//! reaction changes) and, beside it, the current state of its messages (text, tombstone,
//! reactions, mentions, the search index). An append writes both in one transaction.

pub mod accounts;
pub mod committer;
#[doc(hidden)]
pub mod pg_testing;
pub mod postgres;
pub mod postgres_accounts;
mod postgres_events;
pub mod sqlite;
pub mod sqlite_accounts;
mod sqlite_events;

use crate::protocol::{ChatMessage, RoomEvent, RoomName, SearchHit, Seq};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (SQLite or PostgreSQL: I/O, a lost connection, a conflict). The
    /// message is the engine's; no engine type crosses this trait.
    #[error("{engine}: {message}")]
    Engine { engine: &'static str, message: String },
    #[error("store task failed: {0}")]
    Task(String),
    /// Another server process holds the database: two writers would hand out the same
    /// seqs.
    #[error("{0} is in use by another Confab server (only one server may use a database file)")]
    Locked(String),
    #[error("opening {path}: {source}")]
    Open { path: String, source: std::io::Error },
    /// A search expression the engine could not run.
    #[error("the search could not be understood: {0}")]
    Query(String),
}

/// Opens the engine `--db` names: a PostgreSQL URL (connected and migrated), else a
/// SQLite file. Both stores share the engine's connections or file.
pub async fn open(
    config: &crate::server::config::Config,
) -> Result<(std::sync::Arc<dyn MessageStore>, std::sync::Arc<dyn accounts::AccountStore>), StoreError> {
    use std::sync::Arc;
    if config.uses_postgres() {
        let url = config.db.to_str().unwrap_or_default();
        let pg = Arc::new(postgres::Pg::connect(url).await?);
        let store = Arc::new(postgres_events::PgStore::new(pg.clone()));
        let accounts = Arc::new(postgres_accounts::PgAccounts::new(pg));
        return Ok((store, accounts));
    }
    let fsync = config.sync == crate::server::config::SyncMode::Full;
    let store = Arc::new(sqlite::SqliteMessages::new(Arc::new(sqlite::SqliteStore::open_with(
        &config.db,
        fsync,
        config.read_connections as usize,
    )?)));
    let accounts = Arc::new(
        sqlite_accounts::SqliteAccounts::open(&config.db, fsync)
            .map_err(|e| StoreError::Task(format!("opening the accounts: {e}")))?,
    );
    Ok((store, accounts))
}

/// A stored room as the hub loads it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    pub name: RoomName,
    /// Highest seq stored.
    pub head: Seq,
    /// Unix ms of its newest message (or of its creation).
    pub last_active: i64,
}

/// A page of messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    /// More messages exist beyond the page (older for `before`, skipped for `after`).
    pub more: bool,
}

/// A page of a room's event log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventPage {
    pub events: Vec<RoomEvent>,
    /// Older events exist in the range that the page left out.
    pub more: bool,
}

impl EventPage {
    /// Pages a query read newest first with one row more than `limit` (see `oldest_first`).
    pub(crate) fn from_newest(rows: Vec<RoomEvent>, limit: usize) -> EventPage {
        let (events, more) = oldest_first(rows, limit);
        EventPage { events, more }
    }

    /// The page's messages only (the store suites compare them).
    #[cfg(test)]
    pub(crate) fn into_messages(self) -> Page {
        let messages = self
            .events
            .into_iter()
            .filter_map(|e| match e {
                RoomEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        Page { messages, more: self.more }
    }

    /// The page's messages, to complete in place (their quotes).
    pub(crate) fn messages_mut(&mut self) -> impl Iterator<Item = &mut ChatMessage> {
        self.events.iter_mut().filter_map(|e| match e {
            RoomEvent::Message(m) => Some(m),
            _ => None,
        })
    }
}

impl Page {
    /// Pages a query read newest first with one row more than `limit` (see `oldest_first`).
    pub(crate) fn from_newest(rows: Vec<ChatMessage>, limit: usize) -> Page {
        let (messages, more) = oldest_first(rows, limit);
        Page { messages, more }
    }
}

/// Both engines page the same way: read newest first, one row more than `limit`, so the
/// extra row tells whether there is more. Returns the `limit` newest rows in seq order,
/// and whether there were more.
fn oldest_first<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    rows.reverse();
    (rows, more)
}

/// What an edit, a deletion or a reaction needs to know of the message it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The author's user id ("" for messages from before accounts).
    pub author: String,
    pub deleted: bool,
    /// Reactions on it (people × emoji) and its distinct emoji.
    pub reactions: usize,
    pub emoji: Vec<String>,
    /// The emoji the asking user has put on it.
    pub mine: Vec<String>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Engine { engine: "sqlite", message: err.to_string() }
    }
}

/// One word or phrase of a search, for engines that build their own expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm {
    pub text: String,
    /// `word*`: any word starting with it.
    pub prefix: bool,
    /// `-word`: hits must not have it.
    pub exclude: bool,
}

/// A search, already authorised: `rooms` are the rooms the asker may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// SQLite's full-text expression (see `search::Query::fts`).
    pub fts: String,
    /// The same terms, for engines with another syntax (PostgreSQL's tsquery).
    pub terms: Vec<SearchTerm>,
    pub rooms: Vec<String>,
    /// Only messages by this user id.
    pub from_user: Option<String>,
    /// Only hits stored before this cursor (`SearchPage::next`).
    pub before: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Each hit's position, where a page that ends after it goes on from.
    pub positions: Vec<i64>,
    /// The position the next page starts from, when there may be more.
    pub next: Option<i64>,
}

/// Unread counts of one user in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unread {
    pub last_read: Seq,
    /// Messages after `last_read` by others, not deleted (capped).
    pub unread: u32,
    /// Of those, the ones that mention the user.
    pub mentions: u32,
}

/// Durable rooms, engine-neutral and async: SQLite runs each call on a blocking thread
/// (its calls are synchronous), PostgreSQL awaits its client. The hub and the broker only
/// see this trait.
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Whether `append` assigns each event's seq itself (PostgreSQL: several nodes write
    /// one room, so the seq comes from the row the transaction locks), overwriting the
    /// seq the room proposed. With one writer (SQLite) the room's own count is the seq.
    fn assigns_seqs(&self) -> bool {
        false
    }

    /// Every stored room (a room is stored with its first message).
    async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError>;

    /// Highest stored seq of a room's log, 0 if none.
    async fn head(&self, room: &RoomName) -> Result<Seq, StoreError>;

    /// The heads of several rooms at once (the multi-node head check, every second);
    /// rooms the store does not hold are left out.
    async fn heads(&self, rooms: &[String]) -> Result<Vec<(String, Seq)>, StoreError>;

    /// Stores a batch of events, in order, atomically (recording rooms new to the store):
    /// all of it or none, one durable commit. Each event is applied to the current state
    /// as the store finds it, and rewritten to what it did: an edit of a message deleted
    /// meanwhile is stored (and sent) redacted, a reaction over the caps as `on: false`.
    /// A store that `assigns_seqs` numbers them here, and rewrites an event whose (room,
    /// author, `client_id`) it already holds into the stored original (a retry through
    /// another node), storing nothing for it. Returns the positions of those retries, so
    /// their senders are answered with the original instead of it being fanned out again.
    /// Only the committer calls it, from its own thread: an engine may block in it.
    async fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError>;

    /// Events with `after < seq <= upto`, oldest first; when more than `limit`, the
    /// newest `limit` of them and `more = true`. A `message` comes in its current text
    /// (a tombstone if deleted) without reactions: the `react` events after it build them.
    async fn events_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<EventPage, StoreError>;

    /// The newest `limit` messages with `seq < before` in their current state (with
    /// reactions); `more` when older ones exist.
    async fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError>;

    /// The message `seq` of a room, as an edit, deletion or reaction by `user` sees it.
    async fn target(&self, room: &RoomName, seq: Seq, user: &str) -> Result<Option<Target>, StoreError>;

    /// Moves `user`'s read position in `room` up to `seq` (never back); returns where it is.
    async fn mark_read(&self, user: &str, room: &RoomName, seq: Seq) -> Result<Seq, StoreError>;

    /// `user`'s unread counts in each of `rooms` they have a read position in.
    async fn unread(
        &self,
        user: &str,
        username: Option<&str>,
        rooms: &[String],
    ) -> Result<Vec<(String, Unread)>, StoreError>;

    /// Full-text search, newest first.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// The server has stopped writing (its committer has finished): let another server
    /// have the database, even while something in this process still holds the store.
    fn release(&self) {}

    /// Periodic housekeeping off the write path (SQLite: move the WAL into the database).
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
