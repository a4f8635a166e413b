//! Message history behind a small, engine-neutral trait.
//!
//! The hub never talks to SQLite directly: it appends through [`committer`] (group commit,
//! one writer) and reads through [`MessageStore`]. A PostgreSQL engine is one more impl.

pub mod accounts;
pub mod committer;
pub mod sqlite;
pub mod sqlite_accounts;

use crate::protocol::{ChatMessage, RoomName, Seq};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store task failed: {0}")]
    Task(String),
    /// Another server process holds the database: two writers would hand out the same
    /// seqs.
    #[error("{0} is in use by another Confab server (only one server may use a database file)")]
    Locked(String),
    #[error("opening {path}: {source}")]
    Open { path: String, source: std::io::Error },
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

/// Durable message history. Calls block: the hub runs them on blocking threads.
pub trait MessageStore: Send + Sync + 'static {
    /// Every stored room (a room is stored with its first message).
    fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError>;

    /// Highest stored seq of a room, 0 if none.
    fn head(&self, room: &RoomName) -> Result<Seq, StoreError>;

    /// Stores a batch atomically (recording rooms new to the store): all of it or none,
    /// one durable commit.
    fn append(&self, batch: &[ChatMessage]) -> Result<(), StoreError>;

    /// Messages with `after < seq <= upto`; when more than `limit`, the newest `limit`
    /// of them and `more = true`.
    fn after(&self, room: &RoomName, after: Seq, upto: Seq, limit: usize) -> Result<Page, StoreError>;

    /// The newest `limit` messages with `seq < before`; `more` when older ones exist.
    fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError>;

    /// The server has stopped writing (its committer has finished): let another server
    /// have the database, even while something in this process still holds the store.
    fn release(&self) {}

    /// Periodic housekeeping off the write path (SQLite: move the WAL into the database).
    fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
