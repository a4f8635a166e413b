//! Several real `confab` nodes on one PostgreSQL database with Redis fan-out: a test
//! database of their own, a Redis key prefix of their own, nodes started, SIGKILLed and
//! restarted on the same port, accounts to sign in with, and a private `redis-server`
//! for tests that kill Redis itself.
//!
//! PostgreSQL comes from `confab::server::store::pg_testing` (a test without it returns
//! early); Redis is `127.0.0.1:6379` (`CONFAB_TEST_REDIS` overrides it), checked with
//! [`redis_or_skip`].
#![allow(dead_code)]

use super::{Client, try_connect_with};
use confab::protocol::{ServerMsg, UserInfo};
use confab::server::store::pg_testing::TestDb;
use futures::StreamExt;
use serde_json::{Value, json};
use std::{
    net::{SocketAddr, TcpListener},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::Message;

/// The shared Redis of the test machine.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";
/// A password every test account uses (long enough, not a common one).
pub const PASSWORD: &str = "correct horse battery staple";
/// Seconds a dead node's people stay present (short, so tests of it stay short).
pub const PRESENCE_TTL_SECS: u64 = 3;
/// Where the private `redis-server` binary is.
pub const REDIS_SERVER_BIN: &str = "/usr/bin/redis-server";

/// The Redis address tests use: `CONFAB_TEST_REDIS` (host:port) or [`REDIS_ADDR`].
pub fn redis_addr() -> String {
    std::env::var("CONFAB_TEST_REDIS").unwrap_or_else(|_| REDIS_ADDR.to_owned())
}

pub fn redis_url_of(addr: &str) -> String {
    format!("redis://{addr}")
}

/// Whether Redis answers at `addr`: a TCP connect, then PING through the `redis` crate.
pub async fn redis_reachable(addr: &str) -> Result<(), String> {
    let socket: SocketAddr = addr.parse().map_err(|e| format!("not an address: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(socket)).await {
        Err(_) => return Err("TCP connect timed out".into()),
        Ok(Err(e)) => return Err(format!("TCP connect: {e}")),
        Ok(Ok(_)) => {}
    }
    let client = redis::Client::open(redis_url_of(addr)).map_err(|e| e.to_string())?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Err(_) => Err("PING timed out".into()),
        Ok(Err(e)) => Err(format!("PING: {e}")),
        Ok(Ok(pong)) if pong == "PONG" => Ok(()),
        Ok(Ok(other)) => Err(format!("PING answered {other:?}")),
    }
}

/// The shared Redis's address, or None after printing why the test is skipped.
pub async fn redis_or_skip() -> Option<String> {
    let addr = redis_addr();
    match redis_reachable(&addr).await {
        Ok(()) => Some(addr),
        Err(why) => {
            eprintln!("skipped: Redis is not reachable at {addr} ({why})");
            None
        }
    }
}

/// A key prefix no other test uses: `confab-test-<uuid>:`.
pub fn new_prefix() -> String {
    format!("confab-test-{}:", uuid::Uuid::new_v4())
}

/// Deletes every key under `prefix` (SCAN MATCH prefix* + DEL); returns how many.
pub async fn delete_prefix(addr: &str, prefix: &str) -> Result<usize, String> {
    let client = redis::Client::open(redis_url_of(addr)).map_err(|e| e.to_string())?;
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                deleted += redis::cmd("DEL").arg(&keys).query_async::<usize>(&mut conn).await?;
            }
            if next == 0 {
                return Ok::<_, redis::RedisError>(deleted);
            }
            cursor = next;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Err(_) => Err("timed out".into()),
        Ok(result) => result.map_err(|e| e.to_string()),
    }
}

/// The same, blocking (for a `Drop` after a failed test).
fn delete_prefix_blocking(addr: &str, prefix: &str) -> Result<usize, String> {
    let client = redis::Client::open(redis_url_of(addr)).map_err(|e| e.to_string())?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL").arg(&keys).query::<usize>(&mut conn).map_err(|e| e.to_string())?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A prefix as a literal SCAN pattern (our prefixes hold no glob characters, but be safe).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Keys under `prefix` now (for checks and diagnostics).
pub async fn keys_under(addr: &str, prefix: &str) -> Result<Vec<String>, String> {
    let client = redis::Client::open(redis_url_of(addr)).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut all = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        all.extend(keys);
        if next == 0 {
            return Ok(all);
        }
        cursor = next;
    }
}

/// Runs one Redis command on `addr` (CLIENT KILL and the like); returns its answer.
pub async fn redis_command(addr: &str, args: &[&str]) -> Result<redis::Value, String> {
    let client = redis::Client::open(redis_url_of(addr)).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<redis::Value>(&mut conn).await.map_err(|e| e.to_string())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// --- A private redis-server ---

/// A `redis-server` of one test (no persistence), killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer { port: free_port(), child: None };
        server.restart().await;
        server
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        redis_url_of(&self.addr())
    }

    /// (Re)starts it on its port and waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the private redis-server is already running");
        let port = self.port.to_string();
        let child = Command::new(REDIS_SERVER_BIN)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{REDIS_SERVER_BIN} starts: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match redis_reachable(&self.addr()).await {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!("the private redis-server did not come up: {why}")
                }
                // Polling for a condition (the server answers), not waiting a set time.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// SIGKILL, and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

// --- The nodes ---

struct Node {
    port: u16,
    child: Option<Child>,
    /// Everything the node wrote (its warnings and errors), across restarts.
    log: Arc<Mutex<Vec<String>>>,
}

/// Identical nodes on one test database and one Redis prefix. Dropping it kills the
/// nodes and deletes the prefix's keys (`shutdown` does the same, and reports).
pub struct Cluster {
    redis_addr: String,
    pub prefix: String,
    nodes: Vec<Node>,
    extra: Vec<String>,
    cleaned: bool,
    /// Dropped last (the nodes must be gone first).
    pub db: TestDb,
}

impl Cluster {
    /// Starts `n` nodes (all at once) on `db`, fanning out through Redis at `redis_addr`
    /// under a fresh prefix, each with `extra` flags too.
    pub async fn start(db: TestDb, redis_addr: &str, n: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            redis_addr: redis_addr.to_owned(),
            prefix: new_prefix(),
            nodes: (0..n)
                .map(|_| Node { port: free_port(), child: None, log: Arc::new(Mutex::new(Vec::new())) })
                .collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cleaned: false,
            db,
        };
        let spawned: Vec<Child> = (0..n).map(|i| cluster.spawn(i)).collect();
        for (i, child) in spawned.into_iter().enumerate() {
            cluster.nodes[i].child = Some(child);
        }
        for i in 0..n {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    pub fn redis_addr(&self) -> &str {
        &self.redis_addr
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The node's log lines so far.
    pub fn log(&self, i: usize) -> Vec<String> {
        self.nodes[i].log.lock().unwrap().clone()
    }

    fn spawn(&self, i: usize) -> Child {
        let node = &self.nodes[i];
        let redis_url = redis_url_of(&self.redis_addr);
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["--addr", &format!("127.0.0.1:{}", node.port), "--db", self.db.url()])
            .args(["--broker", &redis_url, "--broker-prefix", &self.prefix])
            .args(["--presence-ttl-secs", &PRESENCE_TTL_SECS.to_string(), "--log", "warn"])
            .args(["--msg-rate", "100000", "--msg-burst", "100000"])
            .args(["--http-rate", "100000", "--http-burst", "100000"])
            .args(["--room-create-rate", "100000", "--room-create-burst", "100000"])
            .args(&self.extra)
            .env("CONFAB_AUTH_RATE", "100000")
            .env("CONFAB_AUTH_BURST", "100000")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the confab binary starts");
        // The log goes to stdout (tracing's default), a panic to stderr: both are kept,
        // and shown with the node's name.
        let (log, port) = (node.log.clone(), node.port);
        let stdout = child.stdout.take().expect("piped stdout");
        tokio::spawn(relay(BufReader::new(stdout), log.clone(), format!("[node{i} :{port}]")));
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(relay(BufReader::new(stderr), log, format!("[node{i} :{port} stderr]")));
        child
    }

    /// Polls `/healthz` until the node answers (a condition, with a deadline).
    async fn wait_healthy(&mut self, i: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].port);
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("node {i} exited while starting: {status}; its log: {:?}", self.log(i));
            }
            assert!(Instant::now() < deadline, "node {i} did not answer /healthz within 60 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (no shutdown path runs); returns once the process is gone.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.start_kill().expect("SIGKILL is sent");
            let status = child.wait().await.expect("the killed node is reaped");
            assert!(!status.success(), "a SIGKILLed node does not exit cleanly: {status}");
        }
    }

    /// Starts node `i` again, on the same port and database; waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is still running");
        let child = self.spawn(i);
        self.nodes[i].child = Some(child);
        self.wait_healthy(i).await;
    }

    /// Kills every node and deletes the prefix's keys.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
        match delete_prefix(&self.redis_addr, &self.prefix).await {
            Ok(n) => eprintln!("deleted {n} Redis keys under {}", self.prefix),
            Err(e) => eprintln!("could not delete the Redis keys under {}: {e}", self.prefix),
        }
        self.cleaned = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
                // Reaped so it writes no key after the clean-up below.
                let deadline = Instant::now() + Duration::from_secs(3);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if let Err(e) = delete_prefix_blocking(&self.redis_addr, &self.prefix) {
            eprintln!("could not delete the Redis keys under {}: {e}", self.prefix);
        }
    }
}

/// Copies a node's output lines to the test's stderr (tagged) and to its log.
async fn relay(out: impl tokio::io::AsyncBufRead + Unpin, log: Arc<Mutex<Vec<String>>>, tag: String) {
    let mut lines = out.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{tag} {line}");
        log.lock().unwrap().push(line);
    }
}

// --- Accounts and sockets ---

/// A signed-up account and the cookie of its session (valid on every node: sessions
/// are in PostgreSQL).
#[derive(Clone, Debug)]
pub struct Account {
    pub username: String,
    pub id: String,
    /// `confab_session=…`, to send as `Cookie`.
    pub cookie: String,
}

/// Signs `username` up through node `port` (201 expected).
pub async fn signup(port: u16, username: &str) -> Account {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/api/auth/signup"))
        .header("origin", format!("http://127.0.0.1:{port}"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .expect("sign-up is answered");
    let status = resp.status();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_owned());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status.as_u16(), 201, "sign-up of {username}: {body}");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("confab_session="), "{cookie}");
    Account {
        username: body["username"].as_str().unwrap().to_owned(),
        id: body["id"].as_str().unwrap().to_owned(),
        cookie,
    }
}

/// Signs up several accounts at once, spread over `ports`.
pub async fn signup_all(ports: &[u16], names: &[String]) -> Vec<Account> {
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (port, name) = (ports[i % ports.len()], name.clone());
            tokio::spawn(async move { signup(port, &name).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("sign-up task"));
    }
    out
}

/// What reading a socket gave.
#[derive(Debug)]
// Returned and matched at once, never stored: boxing the frame would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Frame(ServerMsg),
    /// Nothing within the wait.
    Quiet,
    /// Closed or broken (the node died, or closed it): why.
    Closed(String),
}

/// The next server frame within `wait` (pings skipped); never panics on a closed socket.
pub async fn next_frame(c: &mut Client, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return Next::Quiet,
            Ok(None) => return Next::Closed("the stream ended".into()),
            Ok(Some(Err(e))) => return Next::Closed(format!("error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => {
                return match serde_json::from_str::<ServerMsg>(&t) {
                    Ok(msg) => Next::Frame(msg),
                    Err(e) => Next::Closed(format!("an undecodable frame {t}: {e}")),
                };
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Next::Closed(format!("close frame {frame:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Sends a frame; false when the socket is gone.
pub async fn send_frame(c: &mut Client, frame: &Value) -> bool {
    use futures::SinkExt;
    c.ws.send(Message::text(frame.to_string())).await.is_ok()
}

/// A socket to `port` that said hello: signed in with `cookie`, or a guest `nick`.
/// Err when the node refuses or does not answer (it is down, or starting).
pub async fn hello(port: u16, cookie: Option<&str>, nick: &str) -> Result<(Client, UserInfo), String> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    let mut c = match tokio::time::timeout(Duration::from_secs(3), try_connect_with(port, &headers)).await {
        Err(_) => return Err("the upgrade timed out".into()),
        Ok(Err(e)) => return Err(format!("upgrade: {e}")),
        Ok(Ok(c)) => c,
    };
    let frame = match cookie {
        Some(_) => json!({"type": "hello"}),
        None => json!({"type": "hello", "nick": nick}),
    };
    if !send_frame(&mut c, &frame).await {
        return Err("hello could not be sent".into());
    }
    match next_frame(&mut c, Duration::from_secs(5)).await {
        Next::Frame(ServerMsg::Welcome { user: Some(user), .. }) => Ok((c, user)),
        other => Err(format!("expected welcome, got {other:?}")),
    }
}
