//! Server configuration: flags, each with an environment variable and a sensible default.

use crate::protocol::{self, Limits};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// SQLite `synchronous` level for the message store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    Normal,
    Full,
}

/// Who may create an account (`--signup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupMode {
    /// Anyone may sign up.
    Open,
    /// Sign-up needs an invite code (from an admin or a room owner).
    Invite,
    /// Only admins make accounts (`confab admin create-user`).
    Closed,
}

impl SignupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Open => "open",
            SignupMode::Invite => "invite",
            SignupMode::Closed => "closed",
        }
    }
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `confab admin …`: account administration on a stopped or running server's database.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Administer accounts and invites (works while a server runs on the same database).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Creates an account. The password is read from CONFAB_PASSWORD or, when unset, from
    /// the first line of standard input (so it never shows in the process list).
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Make the account an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Sets an account's password and ends all its sessions. The password is read as for
    /// create-user.
    ResetPassword {
        #[arg(long)]
        username: String,
    },
    /// Creates a sign-up invite and prints its code (shown once).
    Invite {
        /// How many sign-ups it allows (default 1); 0 for unlimited.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Hours until it expires (default 168, a week); 0 for never.
        #[arg(long, default_value_t = 168)]
        expires_hours: u64,
    },
}

#[derive(Debug, Clone, Parser)]
#[command(name = "confab", version, about = "Confab chat server")]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on. Defaults to Leptos's site address (LEPTOS_SITE_ADDR, set by
    /// cargo-leptos), else 127.0.0.1:3000.
    #[arg(long, env = "CONFAB_ADDR")]
    pub addr: Option<SocketAddr>,

    /// Where durable state lives: a SQLite file (created with its schema on first start;
    /// one process), or a `postgres://user@host/db` URL shared by several nodes (migrated
    /// at start). See docs/DEPLOYMENT.md.
    #[arg(long, env = "CONFAB_DB", default_value = "confab.db", global = true)]
    pub db: PathBuf,

    /// Fan-out between nodes: a `redis://host:port` URL. Without it a node fans out to
    /// its own connections only (one node, or SQLite).
    #[arg(long, env = "CONFAB_BROKER")]
    pub broker: Option<String>,

    /// Prefix of every Redis key and channel this cluster uses, so clusters (or tests)
    /// can share one Redis.
    #[arg(long, env = "CONFAB_BROKER_PREFIX", default_value = "confab:")]
    pub broker_prefix: String,

    /// Seconds a node's presence entries live in Redis without a refresh: a node that dies
    /// takes its people out of every room within this time.
    #[arg(long, env = "CONFAB_PRESENCE_TTL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub presence_ttl_secs: u64,

    /// When a commit is synced to disk: `normal` (WAL, synced at checkpoints) survives a
    /// crash of the process; `full` (every commit fsynced) also survives power loss, at the
    /// cost of one fsync per group commit.
    #[arg(long, env = "CONFAB_SYNC", value_enum, default_value_t = SyncMode::Normal)]
    pub sync: SyncMode,

    /// Directory holding the built site (pkg/, CSS, assets): cargo-leptos's site root.
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: String,

    /// Longest message text, in characters (at most 4000, the protocol's bound).
    #[arg(long, env = "CONFAB_MAX_TEXT_CHARS", default_value_t = protocol::MAX_TEXT_CHARS)]
    pub max_text_chars: usize,

    /// Largest WebSocket frame or message a client may send, in bytes.
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Bytes that may wait in one connection's outbound queue before it is cut as too slow.
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: usize,

    /// Rooms one connection may have joined at once.
    #[arg(long, env = "CONFAB_MAX_ROOMS_PER_CONN", default_value_t = 32)]
    pub max_rooms_per_conn: usize,

    /// Rooms the server keeps in all; joining a new room beyond this is refused.
    #[arg(long, env = "CONFAB_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// WebSocket connections one client IP may hold at once.
    #[arg(long, env = "CONFAB_MAX_CONNS_PER_IP", default_value_t = 256)]
    pub max_conns_per_ip: usize,

    /// Origins (besides the server's own) whose pages may open the WebSocket, comma
    /// separated, e.g. "https://chat.example.org". Requests without Origin (non-browser
    /// clients) are allowed; browsers always send it.
    #[arg(long, env = "CONFAB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Strikes a connection may accumulate, draining at one per second, before it is
    /// closed for abuse (1008). A refusal strikes only when the client is far ahead of the
    /// retry slots it was given (it is not waiting as told).
    #[arg(long, env = "CONFAB_ABUSE_STRIKES", default_value_t = 20)]
    pub abuse_strikes: u32,

    /// Sustained `send`s per second per connection (token bucket rate).
    #[arg(long, env = "CONFAB_MSG_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub msg_rate: u32,

    /// Burst of `send`s allowed above the rate (token bucket size).
    #[arg(long, env = "CONFAB_MSG_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub msg_burst: u32,

    /// Most messages returned by one `history` request or replayed by one `join` with `since`.
    #[arg(long, env = "CONFAB_MAX_HISTORY", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_history: u32,

    /// Seconds between server pings.
    #[arg(long, env = "CONFAB_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,

    /// Seconds without any frame from a client before it is considered dead and closed.
    #[arg(long, env = "CONFAB_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Seconds a session (and its nick) outlives its last connection, so a reconnect keeps it.
    #[arg(long, env = "CONFAB_SESSION_GRACE_SECS", default_value_t = 120)]
    pub session_grace_secs: u64,

    /// The URL users load Confab from, e.g. "https://chat.example.org". When set, the
    /// WebSocket's Origin check compares against it (not against the request's Host,
    /// which DNS rebinding controls and proxies rewrite), and the page's CSP names it.
    #[arg(long, env = "CONFAB_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// Largest reply, in bytes of JSON: a `history` page, a join's replay, a room list.
    /// Pages stop early (with `has_more` / `truncated`) rather than exceed it. At most
    /// half the outbound queue, and at least 64 KiB.
    #[arg(long, env = "CONFAB_REPLY_BYTES", default_value_t = 256 * 1024)]
    pub reply_bytes: usize,

    /// New rooms one client address may create per minute (sustained).
    #[arg(long, env = "CONFAB_ROOM_CREATE_RATE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub room_create_rate: u32,

    /// New rooms one client address may create at once, above the rate.
    #[arg(long, env = "CONFAB_ROOM_CREATE_BURST", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub room_create_burst: u32,

    /// Messages that may wait for the store; beyond it senders wait (backpressure).
    #[arg(long, env = "CONFAB_COMMIT_QUEUE", default_value_t = 16 * 1024)]
    pub commit_queue: usize,

    /// SQLite read connections (joins, history, pages and the HTTP API read in parallel).
    #[arg(long, env = "CONFAB_READ_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_connections: u32,

    /// HTTP requests (API and pages) per second per client address, sustained.
    #[arg(long, env = "CONFAB_HTTP_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_rate: u32,

    /// HTTP requests one client address may make at once, above the rate.
    #[arg(long, env = "CONFAB_HTTP_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_burst: u32,

    /// Seconds an HTTP request may take before it is answered 408.
    #[arg(long, env = "CONFAB_HTTP_TIMEOUT_SECS", default_value_t = 10)]
    pub http_timeout_secs: u64,

    /// Who may create an account: `open` (anyone), `invite` (with an invite code) or
    /// `closed` (admins only, with `confab admin create-user`). The first account on an
    /// empty server is always allowed and becomes the admin.
    #[arg(long, env = "CONFAB_SIGNUP", value_enum, default_value_t = SignupMode::Open)]
    pub signup: SignupMode,

    /// Whether people without an account may chat under a name of their choosing.
    #[arg(long, env = "CONFAB_GUESTS", value_enum, default_value_t = Switch::On)]
    pub guests: Switch,

    /// Sign-in and sign-up attempts per minute, per address and per username, sustained.
    #[arg(long, env = "CONFAB_AUTH_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_rate: u32,

    /// Sign-in and sign-up attempts at once above the rate, per address and per username.
    #[arg(long, env = "CONFAB_AUTH_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_burst: u32,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "confab=debug".
    #[arg(long, env = "CONFAB_LOG", default_value = "info")]
    pub log: String,
}

/// The smallest reply bound (see `Config::reply_limit`).
pub const MIN_REPLY_BYTES: usize = 64 * 1024;

/// `--public-url`: an http(s) origin, kept without a trailing slash.
fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = raw.trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(url.to_owned()),
        _ => Err("must be an origin such as https://chat.example.org (scheme and host, no path)".into()),
    }
}

impl Config {
    /// Defaults, as if started with no flags and no environment: a developer's
    /// `CONFAB_*` variables never change what tests see.
    pub fn defaults() -> Self {
        let command = Config::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["confab"]);
        Config::from_arg_matches(&matches).expect("the defaults parse")
    }

    /// Whether `--db` is a PostgreSQL URL.
    pub fn uses_postgres(&self) -> bool {
        self.db.to_str().is_some_and(crate::server::store::postgres::is_url)
    }

    /// `--db` as shown in logs: a URL without its password.
    pub fn db_display(&self) -> String {
        let db = self.db.display().to_string();
        match (db.find("://"), db.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &db[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{user}{}", &db[..scheme + 3], &db[at..])
            }
            _ => db,
        }
    }

    /// Settings that cannot work together, said at start rather than found under load.
    pub fn validate(&self) -> Result<(), String> {
        if self.outbound_queue_bytes < 2 * MIN_REPLY_BYTES {
            return Err(format!(
                "--outbound-queue-bytes must be at least {} (two of the smallest replies)",
                2 * MIN_REPLY_BYTES
            ));
        }
        if self.broker.as_deref().is_some_and(|b| !b.starts_with("redis://")) {
            return Err("--broker takes a redis:// URL".into());
        }
        if self.broker.is_some() && !self.uses_postgres() {
            return Err("--broker needs --db postgres://…: nodes share one database".into());
        }
        if self.http_rate > 1_000_000_000 {
            return Err("--http-rate is at most 1000000000 per second".into());
        }
        Ok(())
    }

    /// The reply bound in force: `--reply-bytes`, at most half the outbound queue (so a
    /// reply always fits behind live traffic), and at least 64 KiB: a `joined` naming 256
    /// people of the longest nicks (about 34 KB) plus the longest message (about 24 KB).
    pub fn reply_limit(&self) -> usize {
        self.reply_bytes.min(self.outbound_queue_bytes / 2).max(MIN_REPLY_BYTES)
    }

    /// The origin browsers load Confab from, when `--public-url` is set.
    pub fn public_origin(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Where to listen: `--addr`, else LEPTOS_SITE_ADDR, else 127.0.0.1:3000.
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
            .or_else(|| std::env::var("LEPTOS_SITE_ADDR").ok()?.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }

    /// Never shorter than a ping interval plus a second: a client needs a ping to answer.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(self.ping_interval().as_secs() + 1))
    }

    pub fn guests_allowed(&self) -> bool {
        self.guests == Switch::On
    }

    pub fn session_grace(&self) -> Duration {
        Duration::from_secs(self.session_grace_secs)
    }

    pub fn text_limit(&self) -> usize {
        self.max_text_chars.clamp(1, protocol::MAX_TEXT_CHARS)
    }

    /// What `welcome` tells clients.
    pub fn limits(&self) -> Limits {
        Limits {
            max_text_chars: self.text_limit() as u32,
            max_nick_chars: protocol::MAX_NICK_CHARS as u32,
            max_room_chars: protocol::MAX_ROOM_CHARS as u32,
            max_frame_bytes: self.max_frame_bytes as u32,
            max_rooms_per_connection: self.max_rooms_per_conn as u32,
            max_history: self.max_history,
            messages_per_sec: self.msg_rate,
            message_burst: self.msg_burst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_the_environment() {
        // SAFETY: set before any thread of this test reads the environment; other tests
        // never read CONFAB_MAX_HISTORY.
        unsafe { std::env::set_var("CONFAB_MAX_HISTORY", "7") };
        assert_eq!(Config::defaults().max_history, 500);
        assert_eq!(Config::parse_from(["confab"]).max_history, 7, "flags still read it");
        unsafe { std::env::remove_var("CONFAB_MAX_HISTORY") };
    }

    #[test]
    fn public_url_is_an_origin() {
        assert_eq!(parse_public_url("https://chat.example.org/").unwrap(), "https://chat.example.org");
        assert!(parse_public_url("chat.example.org").is_err());
        assert!(parse_public_url("https://chat.example.org/app").is_err());
    }
}
