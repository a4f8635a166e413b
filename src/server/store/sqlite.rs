//! SQLite engine: WAL mode, one writer connection and a small pool of readers.
//!
//! WAL lets readers run while the writer commits, and each other: a join replay, a
//! `history` page and an HTTP read never wait for one another's connection. One process
//! owns the file (an advisory lock): a second server would hand out the same seqs. With `synchronous = NORMAL` (the
//! default) a commit is in the WAL file, and so survives the process being killed, before
//! anything is fanned out; only a power loss or kernel crash can lose the last commits.
//! `synchronous = FULL` fsyncs every commit and survives those too; group commit (many
//! messages per transaction, see `committer`) keeps that affordable.

use super::{
    EventPage, MessageStore, Page, SearchPage, SearchQuery, StoreError, StoredRoom, Target, Unread,
    sqlite_events,
};
use crate::protocol::{ChatMessage, RoomEvent, RoomName, Seq};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;
use std::{
    fs::{File, TryLockError},
    path::Path,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE rooms (
        name       TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE messages (
        room      TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        nick      TEXT    NOT NULL,
        text      TEXT    NOT NULL,
        ts        INTEGER NOT NULL,
        client_id TEXT    NOT NULL,
        PRIMARY KEY (room, seq)
     ) WITHOUT ROWID;",
    // 2: messages move to a rowid table. In a WITHOUT ROWID table a row over about 1 KB
    // (a quarter of what a rowid table keeps in a page) spills into an overflow page of
    // its own: 1 KiB messages took 4.3 KB of disk each.
    "CREATE TABLE messages_v2 (
        id        INTEGER PRIMARY KEY,
        room      TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        nick      TEXT    NOT NULL,
        text      TEXT    NOT NULL,
        ts        INTEGER NOT NULL,
        client_id TEXT    NOT NULL,
        UNIQUE (room, seq)
     );
     INSERT INTO messages_v2 (room, seq, nick, text, ts, client_id)
        SELECT room, seq, nick, text, ts, client_id FROM messages ORDER BY room, seq;
     DROP TABLE messages;
     ALTER TABLE messages_v2 RENAME TO messages;",
    // 3: a room is stored with its first message; rooms never spoken in are not kept.
    "DELETE FROM rooms WHERE name NOT IN (SELECT DISTINCT room FROM messages);",
    // 4: accounts and access. Names collide by `Nick::key` (NFKC, case folding, confusable
    // skeleton) across usernames and display names alike; secrets are stored as SHA-256.
    "CREATE TABLE users (
        id           INTEGER PRIMARY KEY,
        username     TEXT    NOT NULL UNIQUE,
        username_key TEXT    NOT NULL UNIQUE,
        display_name TEXT    NOT NULL,
        display_key  TEXT    NOT NULL UNIQUE,
        password     TEXT    NOT NULL,
        role         TEXT    NOT NULL,
        active       INTEGER NOT NULL DEFAULT 1,
        created_ms   INTEGER NOT NULL
     );
     CREATE TABLE auth_sessions (
        id           TEXT    PRIMARY KEY,
        token_digest TEXT    NOT NULL UNIQUE,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        user_agent   TEXT    NOT NULL,
        address      TEXT    NOT NULL
     );
     CREATE INDEX auth_sessions_user ON auth_sessions (user_id);
     CREATE TABLE api_tokens (
        id           TEXT    PRIMARY KEY,
        token_digest TEXT    NOT NULL UNIQUE,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER
     );
     CREATE INDEX api_tokens_user ON api_tokens (user_id);
     CREATE TABLE invites (
        id          TEXT    PRIMARY KEY,
        code_digest TEXT    NOT NULL UNIQUE,
        created_by  INTEGER,
        uses_left   INTEGER,
        expires_ms  INTEGER,
        created_ms  INTEGER NOT NULL
     );
     ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public';
     ALTER TABLE rooms ADD COLUMN dm INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
     CREATE TABLE room_members (
        room       TEXT    NOT NULL,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role       TEXT    NOT NULL,
        banned     INTEGER NOT NULL DEFAULT 0,
        muted      INTEGER NOT NULL DEFAULT 0,
        since_ms   INTEGER NOT NULL,
        PRIMARY KEY (room, user_id)
     ) WITHOUT ROWID;
     ALTER TABLE messages ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE messages ADD COLUMN guest INTEGER NOT NULL DEFAULT 0;",
    // 5: conversations. A room's seq numbers its events (messages, edits, deletions,
    // reaction changes), logged in `events`; `messages` holds each message's current
    // state, `reactions`, `mentions` and the FTS5 index are kept with it in the same
    // transaction. A message's event row points at its `messages` row (`target` = its
    // own seq) instead of copying it. Every message stored so far becomes its event.
    // The index keeps no per-document sizes (`columnsize = 0`: one write less per
    // message; hits are ordered by time, not by bm25 rank, which would need them).
    "ALTER TABLE messages ADD COLUMN reply_to INTEGER;
     ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '';
     ALTER TABLE messages ADD COLUMN edited_ts INTEGER;
     ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE events (
        room      TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        kind      TEXT    NOT NULL,
        target    INTEGER NOT NULL,
        user_id   TEXT    NOT NULL DEFAULT '',
        nick      TEXT    NOT NULL DEFAULT '',
        text      TEXT    NOT NULL DEFAULT '',
        ts        INTEGER NOT NULL,
        emoji     TEXT    NOT NULL DEFAULT '',
        turned_on INTEGER NOT NULL DEFAULT 0,
        client_id TEXT    NOT NULL DEFAULT '',
        mentions  TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (room, seq)
     ) WITHOUT ROWID;
     INSERT INTO events (room, seq, kind, target, ts)
        SELECT room, seq, 'message', seq, ts FROM messages ORDER BY room, seq;
     CREATE INDEX events_edits ON events (room, target) WHERE kind = 'edit';
     CREATE TABLE reactions (
        room    TEXT    NOT NULL,
        target  INTEGER NOT NULL,
        emoji   TEXT    NOT NULL,
        user_id TEXT    NOT NULL,
        nick    TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        grp     INTEGER NOT NULL,
        PRIMARY KEY (room, target, emoji, user_id)
     ) WITHOUT ROWID;
     CREATE TABLE mentions (
        username TEXT    NOT NULL,
        room     TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        PRIMARY KEY (username, room, seq)
     ) WITHOUT ROWID;
     CREATE INDEX mentions_of_message ON mentions (room, seq);
     CREATE TABLE read_state (
        user_id TEXT    NOT NULL,
        room    TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        PRIMARY KEY (user_id, room)
     ) WITHOUT ROWID;
     CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2',
        columnsize = 0
     );
     INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');",
];

/// Read connections in the pool.
pub const DEFAULT_READERS: usize = 4;

/// WAL pages (4 KiB each) past which the committer restarts the WAL itself. SQLite starts
/// writing the WAL over from its beginning only after a checkpoint that copied all of
/// it; the once-a-second passive checkpoint never does under sustained load (commits keep
/// landing behind it), so the file would grow forever (390 MB in 24 s in the benchmark).
/// A restart stalls the committer for a few ms (the rest of the copy and a database
/// fsync), so it is kept rare: 64 MiB is seconds of the heaviest benchmark load and hours
/// of chat. The file is reused, not truncated (truncating a large file took 30 ms).
const WAL_RESTART_PAGES: i64 = 16 * 1024;
/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the WAL restart waits for a lock (the passive checkpoint's, a reader's)
/// before leaving it to a later commit: not at all, so it never stalls the writer on a lock.
const RESTART_WAIT: Duration = Duration::ZERO;

pub struct SqliteStore {
    // A std Mutex, not a tokio one: every call is short and runs on a blocking thread.
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// Where the next reader search starts, so waits spread over the pool.
    next_reader: AtomicUsize,
    /// The advisory lock that keeps a second server out: held until `release` or the
    /// store's end.
    lock: Mutex<Option<File>>,
    /// Checkpoints run here, never inside a commit: SQLite's automatic checkpoint would
    /// stall the committer (and every room behind it) for a database fsync.
    checkpointer: Mutex<Connection>,
    /// Set by the passive checkpoint when the WAL is over `WAL_RESTART_PAGES`; the writer
    /// then restarts it between two commits (a short stall, not a growing file).
    wal_restart_due: AtomicBool,
    wal_restart_pages: i64,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database. `fsync_every_commit` selects
    /// `synchronous = FULL` (power-loss safe) over `NORMAL` (process-crash safe).
    pub fn open(path: &Path, fsync_every_commit: bool) -> Result<Self, StoreError> {
        Self::open_with(path, fsync_every_commit, DEFAULT_READERS)
    }

    /// As `open`, with `readers` read connections (at least one).
    pub fn open_with(path: &Path, fsync_every_commit: bool, readers: usize) -> Result<Self, StoreError> {
        let lock = lock_database(path)?;
        let mut writer = Connection::open(path)?;
        configure(&writer, fsync_every_commit)?;
        migrate(&mut writer)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let readers = (0..readers.max(1))
            .map(|_| {
                let reader = Connection::open(path)?;
                configure(&reader, fsync_every_commit)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer, fsync_every_commit)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            lock: Mutex::new(Some(lock)),
            checkpointer: Mutex::new(checkpointer),
            wal_restart_due: AtomicBool::new(false),
            wal_restart_pages: WAL_RESTART_PAGES,
        })
    }

    /// Copies the rest of the WAL into the database so the next commit writes the WAL from
    /// its beginning; on the writer connection, between two commits. The passive
    /// checkpoint has already copied nearly all of it. It does not wait for locks: when it
    /// cannot finish, it is tried again after the next commit. Upkeep never fails the
    /// commit that ran it.
    fn restart_wal(&self, conn: &Connection) {
        let started = std::time::Instant::now();
        let run = || -> rusqlite::Result<bool> {
            conn.busy_timeout(RESTART_WAIT)?;
            let done = checkpoint(conn, "RESTART").map(|(busy, _, _)| busy == 0);
            conn.busy_timeout(BUSY_TIMEOUT)?;
            done
        };
        match run() {
            Ok(true) => tracing::debug!(took = ?started.elapsed(), "WAL restarted"),
            Ok(false) => self.wal_restart_due.store(true, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(%err, "restarting the WAL failed; will retry");
                self.wal_restart_due.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Runs `f` on a free read connection, or waits for one.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let free = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok());
        let conn: MutexGuard<'_, Connection> =
            free.unwrap_or_else(|| self.readers[start % n].lock().unwrap_or_else(|p| p.into_inner()));
        Ok(f(&conn)?)
    }
}

/// Takes the advisory lock on the database file (creating it if new). The lock goes with
/// the process, so a crashed server never leaves it behind.
fn lock_database(path: &Path) -> Result<File, StoreError> {
    let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
    let file =
        File::options().read(true).write(true).create(true).truncate(false).open(path).map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked(path.display().to_string())),
        Err(TryLockError::Error(err)) => Err(open_err(err)),
    }
}

pub(super) fn configure(conn: &Connection, fsync_every_commit: bool) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync_every_commit { "FULL" } else { "NORMAL" })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Runs a checkpoint: (busy, pages in the WAL, pages copied into the database).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Applies the migrations not applied yet. Each runs in an IMMEDIATE transaction that
/// reads the version again, so two processes opening the file at once (the server and a
/// `confab admin` command) never apply one twice.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if done > i {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The columns `row_to_message` reads, in order.
const MESSAGE_COLUMNS: &str =
    "seq, nick, text, ts, client_id, user_id, guest, reply_to, mentions, edited_ts, deleted";

fn row_to_message(room: &RoomName, row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    message_at(room, row, 0)
}

/// A message from `MESSAGE_COLUMNS` starting at column `at`.
pub(super) fn message_at(
    room: &RoomName,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<ChatMessage> {
    Ok(ChatMessage {
        room: room.as_str().to_owned(),
        seq: row.get::<_, i64>(at)? as Seq,
        nick: row.get(at + 1)?,
        text: row.get(at + 2)?,
        ts: row.get(at + 3)?,
        client_id: row.get(at + 4)?,
        user: row.get(at + 5)?,
        guest: row.get(at + 6)?,
        reply_to: row.get::<_, Option<i64>>(at + 7)?.map(|s| s as Seq),
        mentions: split_names(&row.get::<_, String>(at + 8)?),
        edited_ts: row.get(at + 9)?,
        deleted: row.get(at + 10)?,
        quote: None,
        reactions: Vec::new(),
    })
}

/// Usernames are stored space-separated (they hold no spaces).
pub(super) fn split_names(joined: &str) -> Vec<String> {
    joined.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A seq as SQLite's signed integer: values past i64::MAX (only ever sent by a client)
/// saturate instead of wrapping negative.
fn sql_seq(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Collects a "newest first, limit + 1" query into an oldest-first page.
fn page_desc(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    room: &RoomName,
    limit: usize,
) -> rusqlite::Result<Page> {
    let messages =
        stmt.query_map(params, |row| row_to_message(room, row))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Page::from_newest(messages, limit))
}

/// The engine's calls, synchronous: the async [`SqliteMessages`] runs them on blocking
/// threads (and tests and tools call them directly).
impl SqliteStore {
    pub fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.name, COALESCE((SELECT MAX(seq) FROM events WHERE room = r.name), 0),
                        COALESCE((SELECT ts FROM messages WHERE room = r.name ORDER BY seq DESC LIMIT 1),
                                 r.created_ms)
                 FROM rooms r ORDER BY r.name",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, head, last_active) = row?;
                // A name that no longer validates (never written by this code) is skipped.
                if let Ok(name) = RoomName::parse(&name) {
                    out.push(StoredRoom { name, head: head as Seq, last_active });
                }
            }
            Ok(out)
        })
    }

    pub fn head(&self, room: &RoomName) -> Result<Seq, StoreError> {
        self.read(|conn| {
            let head: Option<i64> = conn
                .prepare_cached("SELECT MAX(seq) FROM events WHERE room = ?1")?
                .query_row(params![room.as_str()], |row| row.get(0))
                .optional()?
                .flatten();
            Ok(head.unwrap_or(0) as Seq)
        })
    }

    pub fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        for event in batch.iter_mut() {
            sqlite_events::apply(&tx, event)?;
        }
        tx.commit()?;
        if self.wal_restart_due.swap(false, Ordering::Relaxed) {
            self.restart_wal(&conn);
        }
        // One writer: the sessions find every retry before it gets here.
        Ok(Vec::new())
    }

    pub fn release(&self) {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn maintain(&self) -> Result<(), StoreError> {
        let conn = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        // PASSIVE: copy what it can without waiting for, or blocking, the writer.
        let (_, wal_pages, _) = checkpoint(&conn, "PASSIVE")?;
        if wal_pages > self.wal_restart_pages {
            self.wal_restart_due.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn events_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        self.read(|conn| {
            let events =
                sqlite_events::events_desc(conn, room, sql_seq(after), sql_seq(upto), (limit + 1) as i64)?;
            let mut page = EventPage::from_newest(events, limit);
            sqlite_events::attach_quotes(conn, room, page.messages_mut())?;
            Ok(page)
        })
    }

    pub fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let mut page = page_desc(
                &mut stmt,
                params![room.as_str(), sql_seq(before), (limit + 1) as i64],
                room,
                limit,
            )?;
            sqlite_events::attach_reactions(conn, room, &mut page.messages)?;
            sqlite_events::attach_quotes(conn, room, page.messages.iter_mut())?;
            Ok(page)
        })
    }

    pub fn target(&self, room: &RoomName, seq: Seq, user: &str) -> Result<Option<Target>, StoreError> {
        self.read(|conn| sqlite_events::target(conn, room, seq, user))
    }

    pub fn mark_read(&self, user: &str, room: &RoomName, seq: Seq) -> Result<Seq, StoreError> {
        // Read first: a marker already there (another tab, a repeat) costs no commit on
        // the writer that every message waits for.
        let stored = self.read(|conn| sqlite_events::read_position(conn, user, room))?;
        if stored.is_some_and(|at| at >= seq) {
            return Ok(stored.unwrap_or(seq));
        }
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(sqlite_events::mark_read(&conn, user, room, sql_seq(seq) as Seq)?)
    }

    pub fn unread(
        &self,
        user: &str,
        username: Option<&str>,
        rooms: &[&str],
    ) -> Result<Vec<(String, Unread)>, StoreError> {
        self.read(|conn| sqlite_events::unread(conn, user, username, rooms))
    }

    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let free = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok());
        let conn = free.unwrap_or_else(|| self.readers[start % n].lock().unwrap_or_else(|p| p.into_inner()));
        sqlite_events::search(&conn, query)
    }
}

/// SQLite behind the engine-neutral async trait: each call on a blocking thread.
pub struct SqliteMessages {
    inner: Arc<SqliteStore>,
}

impl SqliteMessages {
    pub fn new(inner: Arc<SqliteStore>) -> Self {
        SqliteMessages { inner }
    }

    /// Runs `f` on the store on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl MessageStore for SqliteMessages {
    async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        self.blocking(|s| s.rooms()).await
    }

    async fn head(&self, room: &RoomName) -> Result<Seq, StoreError> {
        let room = room.clone();
        self.blocking(move |s| s.head(&room)).await
    }

    async fn heads(&self, rooms: &[String]) -> Result<Vec<(String, Seq)>, StoreError> {
        let rooms = rooms.to_vec();
        self.blocking(move |s| {
            let mut out = Vec::with_capacity(rooms.len());
            for room in rooms {
                if let Ok(name) = RoomName::parse(&room) {
                    let head = s.head(&name)?;
                    out.push((room, head));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
        // Inline, not on a blocking thread: only the committer appends, on a thread of its
        // own that exists to wait for the disk. A hop per batch would add two thread
        // wake-ups to every commit's latency, which a sender's window waits on.
        self.inner.append(batch)
    }

    async fn events_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let room = room.clone();
        self.blocking(move |s| s.events_after(&room, after, upto, limit)).await
    }

    async fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError> {
        let room = room.clone();
        self.blocking(move |s| s.before(&room, before, limit)).await
    }

    async fn target(&self, room: &RoomName, seq: Seq, user: &str) -> Result<Option<Target>, StoreError> {
        let (room, user) = (room.clone(), user.to_owned());
        self.blocking(move |s| s.target(&room, seq, &user)).await
    }

    async fn mark_read(&self, user: &str, room: &RoomName, seq: Seq) -> Result<Seq, StoreError> {
        let (room, user) = (room.clone(), user.to_owned());
        self.blocking(move |s| s.mark_read(&user, &room, seq)).await
    }

    async fn unread(
        &self,
        user: &str,
        username: Option<&str>,
        rooms: &[String],
    ) -> Result<Vec<(String, Unread)>, StoreError> {
        let (user, username, rooms) = (user.to_owned(), username.map(str::to_owned), rooms.to_vec());
        self.blocking(move |s| {
            let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
            s.unread(&user, username.as_deref(), &rooms)
        })
        .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        let query = query.clone();
        self.blocking(move |s| s.search(&query)).await
    }

    fn release(&self) {
        self.inner.release();
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.maintain()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: Seq) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            nick: "ann".into(),
            text: format!("m{seq}"),
            ts: 1,
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    /// Messages as the events that store them.
    fn events(messages: impl IntoIterator<Item = ChatMessage>) -> Vec<RoomEvent> {
        messages.into_iter().map(RoomEvent::Message).collect()
    }

    trait Messages {
        fn put(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError>;
        /// The messages among the events of `events_after`.
        fn after(&self, room: &RoomName, after: Seq, upto: Seq, limit: usize) -> Result<Page, StoreError>;
    }

    impl Messages for SqliteStore {
        fn put(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError> {
            self.append(&mut events(messages)).map(drop)
        }
        fn after(&self, room: &RoomName, after: Seq, upto: Seq, limit: usize) -> Result<Page, StoreError> {
            Ok(self.events_after(room, after, upto, limit)?.into_messages())
        }
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), true).unwrap();
        (dir, store)
    }

    fn seqs(page: &Page) -> Vec<Seq> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn append_then_read_pages_oldest_first() {
        let (_dir, store) = store();
        let room = RoomName::parse("a").unwrap();
        store.put((1..=10).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
        store.put(vec![msg("b", 1)]).unwrap();

        assert_eq!(store.head(&room).unwrap(), 10);
        let page = store.after(&room, 0, 10, 3).unwrap();
        assert_eq!((seqs(&page), page.more), (vec![8, 9, 10], true));
        let page = store.after(&room, 6, 8, 50).unwrap();
        assert_eq!((seqs(&page), page.more), (vec![7, 8], false));
        let page = store.before(&room, 5, 2).unwrap();
        assert_eq!((seqs(&page), page.more), (vec![3, 4], true));
        // A client-sent seq past i64::MAX must not wrap around to "from the start".
        assert!(store.after(&room, u64::MAX, 10, 50).unwrap().messages.is_empty());
        assert!(store.after(&room, 1 << 63, 10, 50).unwrap().messages.is_empty());
        let page = store.before(&room, 3, 5).unwrap();
        assert_eq!((seqs(&page), page.more), (vec![1, 2], false));
        assert_eq!(page.messages[0], msg("a", 1));
    }

    #[test]
    fn checkpoints_move_the_wal_into_the_database() {
        let (dir, store) = store();
        store.put((1..=500).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
        let wal = dir.path().join("t.db-wal");
        let before = std::fs::metadata(&wal).unwrap().len();
        assert!(before > 0);
        store.maintain().unwrap();
        // The next commit starts the WAL over instead of growing it.
        store.put(vec![msg("a", 501)]).unwrap();
        store.maintain().unwrap();
        store.put(vec![msg("a", 502)]).unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() <= before);
        assert_eq!(store.head(&RoomName::parse("a").unwrap()).unwrap(), 502);
    }

    #[test]
    fn a_wal_the_passive_checkpoint_cannot_finish_is_restarted_by_the_writer() {
        let (dir, mut store) = store();
        store.wal_restart_pages = 8;
        let path = dir.path().join("t.db");
        let wal_len = || std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        store.put((1..=500).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
        // A reader's snapshot keeps the passive checkpoint from copying the newest commits,
        // as commits landing during it do under load: the WAL cannot start over by itself.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM messages;").unwrap();
        store.put((501..=600).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
        store.maintain().unwrap();
        reader.execute_batch("COMMIT").unwrap();
        // The next commit restarts the WAL: what follows is written from its beginning,
        // so the file stops growing (without the restart each commit would extend it).
        store.put(vec![msg("a", 601)]).unwrap();
        let len = wal_len();
        for seq in 602..=606 {
            store.put(vec![msg("a", seq)]).unwrap();
        }
        assert_eq!(wal_len(), len, "the WAL was written over from its beginning");
        assert_eq!(store.after(&RoomName::parse("a").unwrap(), 0, 606, 1000).unwrap().messages.len(), 606);
    }

    #[test]
    fn version_1_databases_are_migrated_with_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute("INSERT INTO rooms VALUES ('a', 0)", []).unwrap();
            for seq in 1..=3 {
                let m = msg("a", seq);
                conn.execute(
                    "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![m.room, m.seq as i64, m.nick, m.text, m.ts, m.client_id],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, true).unwrap();
        let room = RoomName::parse("a").unwrap();
        let page = store.after(&room, 0, 10, 10).unwrap();
        assert_eq!(page.messages, (1..=3).map(|s| msg("a", s)).collect::<Vec<_>>());
        store.put(vec![msg("a", 4)]).unwrap();
        assert!(store.put(vec![msg("a", 4)]).is_err(), "(room, seq) is still unique");
        assert_eq!(store.head(&room).unwrap(), 4);
        let version: usize =
            store.read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0))).unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn a_failed_batch_stores_nothing() {
        let (_dir, store) = store();
        store.put(vec![msg("a", 1)]).unwrap();
        // seq 1 again violates the primary key: the whole batch must roll back.
        assert!(store.put(vec![msg("a", 2), msg("a", 1)]).is_err());
        assert_eq!(store.head(&RoomName::parse("a").unwrap()).unwrap(), 1);
    }

    #[test]
    fn rooms_survive_reopen_with_their_heads_and_activity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let store = SqliteStore::open(&path, true).unwrap();
            let mut late = msg("busy", 2);
            late.ts = 99;
            store.put(vec![msg("busy", 1), late, msg("quiet", 1)]).unwrap();
        }
        let store = SqliteStore::open(&path, true).unwrap();
        let rooms: Vec<(String, Seq, i64)> = store
            .rooms()
            .unwrap()
            .into_iter()
            .map(|r| (r.name.as_str().to_owned(), r.head, r.last_active))
            .collect();
        assert_eq!(rooms, vec![("busy".to_owned(), 2, 99), ("quiet".to_owned(), 1, 1)]);
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let first = SqliteStore::open(&path, true).unwrap();
        match SqliteStore::open(&path, true) {
            Err(StoreError::Locked(p)) => assert!(p.ends_with("t.db")),
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("two stores opened one database"),
        }
        drop(first);
        // The lock goes with its holder, or when a stopped server releases it.
        let second = SqliteStore::open(&path, true).unwrap();
        second.release();
        SqliteStore::open(&path, true).unwrap();
    }

    #[test]
    fn rooms_never_spoken_in_are_dropped_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute("INSERT INTO rooms VALUES ('empty', 0), ('busy', 0)", []).unwrap();
            conn.execute("INSERT INTO messages (room, seq, nick, text, ts, client_id) VALUES ('busy', 1, 'a', 't', 5, 'c')", [])
                .unwrap();
            let _ = &mut conn;
        }
        let store = SqliteStore::open(&path, true).unwrap();
        let names: Vec<String> =
            store.rooms().unwrap().into_iter().map(|r| r.name.as_str().to_owned()).collect();
        assert_eq!(names, vec!["busy".to_owned()]);
    }

    fn edit(seq: Seq, target: Seq, text: &str) -> RoomEvent {
        RoomEvent::Edit(crate::protocol::EditEvent {
            room: "a".into(),
            seq,
            target,
            text: text.into(),
            edited_ts: 9,
            user: "1".into(),
            nick: "ann".into(),
            client_id: format!("e{seq}"),
            mentions: Vec::new(),
        })
    }

    fn delete(seq: Seq, target: Seq) -> RoomEvent {
        RoomEvent::Delete(crate::protocol::DeleteEvent {
            room: "a".into(),
            seq,
            target,
            by: "ann".into(),
            user: "1".into(),
            client_id: format!("d{seq}"),
        })
    }

    fn react(seq: Seq, target: Seq, emoji: &str, user: &str, on: bool) -> RoomEvent {
        RoomEvent::React(crate::protocol::ReactEvent {
            room: "a".into(),
            seq,
            target,
            emoji: emoji.into(),
            user: user.into(),
            nick: user.to_uppercase(),
            on,
        })
    }

    fn search(store: &SqliteStore, words: &str) -> Vec<Seq> {
        let parsed = crate::server::search::Query::parse(words).unwrap();
        let q = SearchQuery {
            fts: parsed.fts,
            terms: parsed.terms,
            rooms: vec!["a".into()],
            from_user: None,
            before: None,
            limit: 10,
        };
        store.search(&q).unwrap().hits.iter().map(|h| h.seq).collect()
    }

    #[test]
    fn events_change_the_current_state_and_the_index_in_the_same_commit() {
        let (_dir, store) = store();
        let room = RoomName::parse("a").unwrap();
        let mut first = msg("a", 1);
        first.text = "deploy on friday".into();
        store.put(vec![first, msg("a", 2)]).unwrap();
        let mut batch = vec![
            edit(3, 1, "deploy on monday"),
            react(4, 2, "🎉", "2", true),
            react(5, 2, "👍", "1", true),
            react(6, 2, "🎉", "1", true),
            react(7, 2, "🎉", "2", false),
        ];
        store.append(&mut batch).unwrap();
        assert_eq!(store.head(&room).unwrap(), 7);
        let page = store.before(&room, Seq::MAX, 10).unwrap();
        assert_eq!(
            (page.messages[0].text.as_str(), page.messages[0].edited_ts),
            ("deploy on monday", Some(9))
        );
        // 🎉's group began first and still has someone in it; 👍 came after.
        let reactions: Vec<(String, Vec<String>)> =
            page.messages[1].reactions.iter().map(|r| (r.emoji.clone(), r.users.clone())).collect();
        assert_eq!(reactions, vec![("🎉".into(), vec!["1".into()]), ("👍".into(), vec!["1".into()])]);
        assert_eq!(search(&store, "monday"), vec![1]);
        assert!(search(&store, "friday").is_empty(), "the edit re-indexed");
        // The log replays every event, messages without their reactions.
        let events = store.events_after(&room, 0, 7, 100).unwrap().events;
        assert_eq!(events.iter().map(RoomEvent::seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
        assert!(matches!(&events[1], RoomEvent::Message(m) if m.reactions.is_empty()));
    }

    #[test]
    fn a_deletion_redacts_the_message_its_edits_and_the_index_and_later_changes_do_nothing() {
        let (_dir, store) = store();
        let room = RoomName::parse("a").unwrap();
        let mut first = msg("a", 1);
        first.text = "secret plans".into();
        store.put(vec![first]).unwrap();
        let mut batch = vec![
            edit(2, 1, "secret plans v2"),
            react(3, 1, "👍", "2", true),
            delete(4, 1),
            edit(5, 1, "after"),
        ];
        batch.push(react(6, 1, "🎉", "2", true));
        store.append(&mut batch).unwrap();
        // What raced the deletion is stored as the no-op it became.
        assert!(matches!(&batch[3], RoomEvent::Edit(e) if e.text.is_empty()));
        assert!(matches!(&batch[4], RoomEvent::React(r) if !r.on));
        let m = &store.before(&room, Seq::MAX, 10).unwrap().messages[0];
        assert!(m.deleted && m.text.is_empty() && m.reactions.is_empty());
        let events = store.events_after(&room, 0, 6, 100).unwrap().events;
        assert!(matches!(&events[0], RoomEvent::Message(m) if m.deleted && m.text.is_empty()));
        assert!(matches!(&events[1], RoomEvent::Edit(e) if e.text.is_empty()), "{:?}", events[1]);
        assert!(search(&store, "secret").is_empty());
        let target = store.target(&room, 1, "2").unwrap().unwrap();
        assert!(target.deleted);
    }

    #[test]
    fn reactions_over_the_caps_are_stored_off() {
        let (_dir, store) = store();
        store.put(vec![msg("a", 1)]).unwrap();
        let emoji = crate::ui::actions::EMOJI;
        let mut batch: Vec<RoomEvent> =
            (0..21).map(|i| react(2 + i as Seq, 1, emoji[i].0, "1", true)).collect();
        store.append(&mut batch).unwrap();
        let on: Vec<bool> = batch.iter().map(|e| matches!(e, RoomEvent::React(r) if r.on)).collect();
        assert_eq!(on.iter().filter(|o| **o).count(), 20);
        assert!(!on[20], "the 21st distinct emoji stays off");
        let target = store.target(&RoomName::parse("a").unwrap(), 1, "1").unwrap().unwrap();
        assert_eq!((target.emoji.len(), target.mine.len()), (20, 20));
    }

    #[test]
    fn read_markers_never_move_back() {
        let (_dir, store) = store();
        let room = RoomName::parse("a").unwrap();
        store.put((1..=5).map(|s| msg("a", s)).collect()).unwrap();
        assert_eq!(store.mark_read("7", &room, 3).unwrap(), 3);
        assert_eq!(store.mark_read("7", &room, 2).unwrap(), 3);
        let unread = store.unread("7", Some("seven"), &["a", "b"]).unwrap();
        assert_eq!(unread.len(), 1, "only rooms read before");
        assert_eq!((unread[0].1.last_read, unread[0].1.unread), (3, 2));
    }

    #[test]
    fn a_reply_quotes_its_original_as_it_is_now() {
        use crate::protocol::Quote;
        let (_dir, store) = store();
        let room = RoomName::parse("a").unwrap();
        let mut original = msg("a", 1);
        original.text = "first line\nsecond".into();
        let mut reply = msg("a", 2);
        reply.reply_to = Some(1);
        let mut batch = vec![RoomEvent::Message(original), RoomEvent::Message(reply)];
        store.append(&mut batch).unwrap();
        // The live frame carries the quote made in the commit.
        assert!(
            matches!(&batch[1], RoomEvent::Message(m) if m.quote == Some(Quote::of("ann", "first line", false)))
        );
        store.append(&mut [edit(3, 1, "edited")]).unwrap();
        let quote = |page: &Page| page.messages.iter().find(|m| m.seq == 2).unwrap().quote.clone();
        assert_eq!(
            quote(&store.before(&room, Seq::MAX, 10).unwrap()),
            Some(Quote::of("ann", "edited", false))
        );
        store.append(&mut [delete(4, 1)]).unwrap();
        assert_eq!(quote(&store.after(&room, 1, 4, 10).unwrap()), Some(Quote::of("ann", "", true)));
    }
}
