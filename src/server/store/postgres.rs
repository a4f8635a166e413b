//! PostgreSQL engine, for several identical nodes on one database (`--db postgres://…`).
//!
//! The client is tokio-postgres behind a deadpool pool. The message store is async and
//! awaits it directly; the account store's calls block (they run on blocking threads,
//! like SQLite's), so each of those is an async transaction the blocking thread waits for
//! on the server's runtime ([`Pg::run`]), which keeps driving every socket meanwhile.
//!
//! Durability is PostgreSQL's: a commit is acknowledged once it is in the WAL on the
//! server's disk with `synchronous_commit = on` (the default), and only then fanned out.
//! Migrations are embedded and run at start under an advisory lock, so nodes starting
//! together apply each one once.

use super::{StoreError, accounts::AccountError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::{future::Future, time::Duration};
use tokio_postgres::NoTls;

/// Schema migrations, applied in order; `confab_schema` records how many ran. The tables
/// mirror the SQLite schema's final shape; rooms carry their head (the last seq handed
/// out), which the append's transaction locks and moves.
const MIGRATIONS: &[&str] = &["CREATE TABLE rooms (
        name        TEXT PRIMARY KEY,
        created_ms  BIGINT  NOT NULL,
        head        BIGINT  NOT NULL DEFAULT 0,
        last_active BIGINT  NOT NULL DEFAULT 0,
        visibility  TEXT    NOT NULL DEFAULT 'public',
        dm          BOOLEAN NOT NULL DEFAULT false,
        topic       TEXT    NOT NULL DEFAULT ''
     );
     CREATE TABLE messages (
        id        BIGSERIAL PRIMARY KEY,
        room      TEXT    NOT NULL,
        seq       BIGINT  NOT NULL,
        nick      TEXT    NOT NULL,
        text      TEXT    NOT NULL,
        ts        BIGINT  NOT NULL,
        client_id TEXT    NOT NULL,
        user_id   TEXT    NOT NULL DEFAULT '',
        guest     BOOLEAN NOT NULL DEFAULT false,
        reply_to  BIGINT,
        mentions  TEXT    NOT NULL DEFAULT '',
        edited_ts BIGINT,
        deleted   BOOLEAN NOT NULL DEFAULT false,
        -- Words split at every non-alphanumeric, as SQLite's unicode61 tokenizer does
        -- (PostgreSQL's parser keeps deploy.sh or ann@example.org whole).
        tsv       tsvector GENERATED ALWAYS AS
                    (to_tsvector('simple', regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED,
        UNIQUE (room, seq)
     );
     CREATE INDEX messages_tsv ON messages USING GIN (tsv);
     CREATE TABLE events (
        room      TEXT    NOT NULL,
        seq       BIGINT  NOT NULL,
        kind      TEXT    NOT NULL,
        target    BIGINT  NOT NULL,
        user_id   TEXT    NOT NULL DEFAULT '',
        nick      TEXT    NOT NULL DEFAULT '',
        text      TEXT    NOT NULL DEFAULT '',
        ts        BIGINT  NOT NULL,
        emoji     TEXT    NOT NULL DEFAULT '',
        turned_on BOOLEAN NOT NULL DEFAULT false,
        client_id TEXT    NOT NULL DEFAULT '',
        mentions  TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (room, seq)
     );
     -- A retry through any node, after any restart, finds what it already stored.
     CREATE UNIQUE INDEX events_client ON events (room, user_id, client_id)
        WHERE client_id <> '' AND user_id <> '';
     CREATE INDEX events_edits ON events (room, target) WHERE kind = 'edit';
     CREATE TABLE reactions (
        room    TEXT   NOT NULL,
        target  BIGINT NOT NULL,
        emoji   TEXT   NOT NULL,
        user_id TEXT   NOT NULL,
        nick    TEXT   NOT NULL,
        seq     BIGINT NOT NULL,
        grp     BIGINT NOT NULL,
        PRIMARY KEY (room, target, emoji, user_id)
     );
     CREATE TABLE mentions (
        username TEXT   NOT NULL,
        room     TEXT   NOT NULL,
        seq      BIGINT NOT NULL,
        PRIMARY KEY (username, room, seq)
     );
     CREATE INDEX mentions_of_message ON mentions (room, seq);
     CREATE TABLE read_state (
        user_id TEXT   NOT NULL,
        room    TEXT   NOT NULL,
        seq     BIGINT NOT NULL,
        PRIMARY KEY (user_id, room)
     );
     CREATE TABLE users (
        id           BIGSERIAL PRIMARY KEY,
        username     TEXT    NOT NULL UNIQUE,
        username_key TEXT    NOT NULL UNIQUE,
        display_name TEXT    NOT NULL,
        display_key  TEXT    NOT NULL UNIQUE,
        password     TEXT    NOT NULL,
        role         TEXT    NOT NULL,
        active       BOOLEAN NOT NULL DEFAULT true,
        created_ms   BIGINT  NOT NULL
     );
     CREATE TABLE auth_sessions (
        id           TEXT   PRIMARY KEY,
        token_digest TEXT   NOT NULL UNIQUE,
        user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_ms   BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        user_agent   TEXT   NOT NULL,
        address      TEXT   NOT NULL
     );
     CREATE INDEX auth_sessions_user ON auth_sessions (user_id);
     CREATE TABLE api_tokens (
        id           TEXT   PRIMARY KEY,
        token_digest TEXT   NOT NULL UNIQUE,
        user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT   NOT NULL,
        created_ms   BIGINT NOT NULL,
        last_used_ms BIGINT
     );
     CREATE INDEX api_tokens_user ON api_tokens (user_id);
     CREATE TABLE invites (
        id          TEXT   PRIMARY KEY,
        code_digest TEXT   NOT NULL UNIQUE,
        created_by  BIGINT,
        uses_left   BIGINT,
        expires_ms  BIGINT,
        created_ms  BIGINT NOT NULL
     );
     CREATE TABLE room_members (
        room     TEXT    NOT NULL,
        user_id  BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role     TEXT    NOT NULL,
        banned   BOOLEAN NOT NULL DEFAULT false,
        muted    BOOLEAN NOT NULL DEFAULT false,
        since_ms BIGINT  NOT NULL,
        PRIMARY KEY (room, user_id)
     );"];

/// The advisory lock key migrations run under ("confab" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6e66_6162;

/// Connections per node. Each waiting store call holds a blocking thread and one of
/// these; the committer's batches need one at a time.
pub const POOL_SIZE: usize = 16;

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A pool on one database and the runtime its sockets live on.
pub struct Pg {
    pool: Pool,
    runtime: tokio::runtime::Handle,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        StoreError::Engine { engine: "postgres", message: describe(&err) }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StoreError::Engine { engine: "postgres", message: err.to_string() }
    }
}

impl From<tokio_postgres::Error> for AccountError {
    fn from(err: tokio_postgres::Error) -> Self {
        AccountError::Engine { engine: "postgres", message: describe(&err) }
    }
}

impl From<deadpool_postgres::PoolError> for AccountError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        AccountError::Engine { engine: "postgres", message: err.to_string() }
    }
}

/// The server's message when there is one (tokio-postgres's Display says only "db error").
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// Whether an error is a unique-key violation on `constraint` (any, if None).
pub fn is_unique_violation(err: &tokio_postgres::Error, constraint: Option<&str>) -> bool {
    err.as_db_error().is_some_and(|db| {
        db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && constraint.is_none_or(|c| db.constraint() == Some(c))
    })
}

impl Pg {
    /// Connects and migrates. Async: called at start, before anything blocks on it.
    pub async fn connect(url: &str) -> Result<Pg, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            StoreError::Engine { engine: "postgres", message: format!("the database URL: {e}") }
        })?;
        // A node that stalls mid-transaction (paused, partitioned) must not hold the rooms'
        // rows, and with them every other node's commits, for ever: its statements, lock
        // waits and idle transactions end, and a dead peer is noticed within a minute.
        // Options given in the URL win.
        if config.get_options().is_none() {
            config.options(
                "-c statement_timeout=30000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000",
            );
        }
        config.keepalives_idle(Duration::from_secs(30));
        // Verified: a connection whose backend was killed (pg_terminate_backend, a failover)
        // is found out when it is taken from the pool, not by the call that gets it.
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Verified },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Engine { engine: "postgres", message: e.to_string() })?;
        let pg = Pg { pool, runtime: tokio::runtime::Handle::current() };
        pg.migrate().await?;
        Ok(pg)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            client.batch_execute("CREATE TABLE IF NOT EXISTS confab_schema (version INT NOT NULL)").await?;
            let tx = client.transaction().await?;
            let done: i64 = tx.query_one("SELECT COUNT(*) FROM confab_schema", &[]).await?.get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO confab_schema (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Waits for `work` on the server's runtime. Only from a thread outside it (a blocking
    /// thread or the committer's): the traits' calls are made there.
    pub fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }
}
