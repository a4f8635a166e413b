//! Throwaway PostgreSQL databases for tests, unit and integration alike (so not behind
//! `cfg(test)`): each test gets a database of its own, dropped when it ends, and is
//! skipped when no PostgreSQL answers.
//!
//! The server to use is `CONFAB_TEST_PG`, an admin URL (a role that may create databases),
//! by default `postgres://postgres@127.0.0.1:5432/postgres`.

use super::postgres::Pg;
use std::{sync::Arc, time::Duration};
use tokio_postgres::{NoTls, config::Host};

/// The environment variable naming the admin URL.
pub const ADMIN_URL_VAR: &str = "CONFAB_TEST_PG";

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Set by `make test` (which starts the engines first): a test that cannot reach them
/// fails instead of skipping.
pub const REQUIRE_VAR: &str = "CONFAB_REQUIRE_ENGINES";

/// Whether skipping is refused (`CONFAB_REQUIRE_ENGINES` set and not `0`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A fresh database, dropped (with its connections ended) when this is dropped.
pub struct TestDb {
    admin: tokio_postgres::Config,
    name: String,
    url: String,
}

impl TestDb {
    /// Creates `confab_test_<random hex>`, or says why not and returns None when the
    /// server cannot be reached (a machine without PostgreSQL skips these tests).
    ///
    /// # Panics
    ///
    /// When the server answers but will not create the database: a broken setup must fail
    /// the test, not skip it.
    pub async fn create() -> Option<TestDb> {
        let admin_url = std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let mut admin: tokio_postgres::Config = match admin_url.parse() {
            Ok(config) => config,
            Err(e) => panic!("{ADMIN_URL_VAR} is not a PostgreSQL URL: {e}"),
        };
        // A dropped packet should skip the test, not hang it.
        admin.connect_timeout(Duration::from_secs(3));
        let (client, connection) = match admin.connect(NoTls).await {
            Ok(pair) => pair,
            Err(e) if required() => {
                panic!("PostgreSQL is not reachable at {} ({e}) and {REQUIRE_VAR} is set", address(&admin))
            }
            Err(e) => {
                eprintln!("skipped: PostgreSQL is not reachable at {} ({})", address(&admin), chain(&e));
                return None;
            }
        };
        let task = tokio::spawn(connection);
        let name = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
            panic!("PostgreSQL at {} would not create a test database: {}", address(&admin), describe(&e));
        }
        drop(client);
        let _ = task.await;
        let url = with_database(&admin_url, &name);
        Some(TestDb { admin, name, url })
    }

    /// The database's URL, for `Pg::connect` or a server's `--db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A fresh, migrated database and its pool, on the calling test's runtime. None when
/// PostgreSQL is not reachable (the reason is printed).
///
/// # Panics
///
/// When the database is made but connecting or migrating fails.
pub async fn fresh() -> Option<(Arc<Pg>, TestDb)> {
    let db = TestDb::create().await?;
    match Pg::connect(db.url()).await {
        Ok(pg) => Some((Arc::new(pg), db)),
        Err(e) => panic!("connecting to the test database {}: {e}", db.name),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // On a thread and runtime of its own: this often runs on a test's runtime, which
        // cannot wait on itself (and may be a single thread).
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = admin.connect(NoTls).await.map_err(|e| describe(&e))?;
                let task = tokio::spawn(connection);
                let result = client.batch_execute(&drop_sql).await.map_err(|e| describe(&e));
                drop(client);
                let _ = task.await;
                result
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => {
                eprintln!("could not drop the test database {}: the dropping thread panicked", self.name)
            }
        }
    }
}

/// `host:port` of the admin URL, for messages.
fn address(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// An error with its causes: tokio-postgres's own says only "error connecting to server".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        out.push_str(&format!(": {e}"));
        cause = e.source();
    }
    out
}

/// The server's message when there is one (tokio-postgres's Display says only "db error").
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// `url` with its database (the path) replaced by `name`, keeping any `?options`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_at..].find('/') {
        Some(slash) => &base[..authority_at + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_keeping_its_options() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgresql://u@h", "x"), "postgresql://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
