//! Test helpers: the real server on 127.0.0.1:0 with a fresh database, and a small
//! protocol-speaking WebSocket client.
//!
//! The database is a SQLite file in a temporary directory, or, with
//! `CONFAB_TEST_ENGINE=postgres`, a fresh PostgreSQL database of its own (on the server
//! `CONFAB_TEST_PG` names, see `confab::server::store::pg_testing`), dropped with the app.
#![allow(dead_code)]

pub mod cluster;

use confab::protocol::{ChatMessage, Seq, ServerMsg};
use confab::server::{Server, config::Config, hub::Hub, store::pg_testing::TestDb};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub const WAIT: Duration = Duration::from_secs(5);

/// Held by tests that render Leptos pages. Each `#[tokio::test]` has its own runtime, and
/// Leptos's reactive runtime is process-global: two renders in two runtimes at once can
/// leave one waiting on a task spawned into the other (which then ends). A server has one
/// runtime, so this is a test-harness matter only.
pub static PAGE_RENDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TestApp {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// The database's file, or its URL under PostgreSQL.
    pub db: PathBuf,
    kept: Option<Kept>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// What keeps an app's database in being: the SQLite file's directory or the PostgreSQL
/// database (dropped with this). `TestApp::stop` hands it over for a restart on the same
/// database.
pub enum Kept {
    Dir(TempDir),
    Pg(Box<TestDb>),
}

/// The engine the protocol suites run on: `CONFAB_TEST_ENGINE`, `sqlite` (the default)
/// or `postgres`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub const ENGINE_VAR: &str = "CONFAB_TEST_ENGINE";

pub fn engine() -> Engine {
    match std::env::var(ENGINE_VAR).as_deref() {
        Err(_) | Ok("" | "sqlite") => Engine::Sqlite,
        Ok("postgres") => Engine::Postgres,
        Ok(other) => panic!("{ENGINE_VAR}={other}: expected sqlite or postgres"),
    }
}

/// Whether a test that needs SQLite itself (it opens the database file, or checks its
/// lock) runs on this engine; under PostgreSQL it says why it is skipped.
///
/// `if !common::sqlite_only("opens the database file") { return; }`
pub fn sqlite_only(reason: &str) -> bool {
    match engine() {
        Engine::Sqlite => true,
        Engine::Postgres => {
            eprintln!("skipped on postgres: {reason}");
            false
        }
    }
}

pub fn test_config(db: PathBuf) -> Config {
    let mut config = Config::defaults();
    config.addr = Some("127.0.0.1:0".parse().unwrap());
    config.db = db;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Starts a server on a fresh database of the engine `CONFAB_TEST_ENGINE` names.
///
/// # Panics
///
/// Under `CONFAB_TEST_ENGINE=postgres` when no PostgreSQL answers: the run asked for it.
pub async fn spawn_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    let (db, kept) = match engine() {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (dir.path().join("confab.db"), Kept::Dir(dir))
        }
        Engine::Postgres => {
            let Some(pg) = TestDb::create().await else {
                // Not the URL itself: it may hold a password.
                panic!(
                    "{ENGINE_VAR}=postgres, but PostgreSQL is not reachable (the server {} names, by default {}): see the reason above",
                    confab::server::store::pg_testing::ADMIN_URL_VAR,
                    confab::server::store::pg_testing::DEFAULT_ADMIN_URL,
                );
            };
            (PathBuf::from(pg.url()), Kept::Pg(Box::new(pg)))
        }
    };
    let mut app = spawn_on(db, tune).await;
    app.kept = Some(kept);
    app
}

/// Starts a server on an existing database (a file, or a PostgreSQL URL).
pub async fn spawn_on(db: PathBuf, tune: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(db.clone());
    tune(&mut config);
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr();
    let hub = server.hub();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TestApp { addr, hub, db, kept: None, stop: Some(stop), handle: Some(handle) }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn client(&self) -> Client {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr)).await.expect("ws connects");
        Client { ws }
    }

    /// A client that said hello as `nick`; returns it with its session token.
    pub async fn user(&self, nick: &str) -> (Client, String) {
        let mut c = self.client().await;
        c.send(json!({"type": "hello", "nick": nick})).await;
        match c.recv().await {
            ServerMsg::Welcome { session, nick: got, .. } => {
                assert_eq!(got, nick);
                (c, session)
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Graceful stop; keeps the database (returned: its directory, or the PostgreSQL
    /// database) for a restart.
    pub async fn stop(mut self) -> Option<Kept> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
        self.kept.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Next frame that is not a ping/pong, decoded.
    pub async fn recv(&mut self) -> ServerMsg {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad server frame {text}: {e}"))
    }

    pub async fn recv_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Skips frames until one matches.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let msg = self.recv().await;
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Next chat message, skipping presence and typing.
    pub async fn recv_message(&mut self) -> ChatMessage {
        match self.recv_until(|m| !matches!(m, ServerMsg::Presence { .. } | ServerMsg::Typing { .. })).await {
            ServerMsg::Message(m) => m,
            other => panic!("expected message, got {other:?}"),
        }
    }

    pub async fn expect_error(&mut self, code: &str) -> ServerMsg {
        let msg = self.recv().await;
        match &msg {
            ServerMsg::Error { code: got, .. } if got.as_str() == code => msg,
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Asserts nothing but pings arrives for `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Joins and reads the `joined` reply and the replayed messages (`expect` of them).
    pub async fn join(
        &mut self,
        room: &str,
        since: Option<u64>,
        expect: usize,
    ) -> (ServerMsg, Vec<ChatMessage>) {
        let mut frame = json!({"type": "join", "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        self.send(frame).await;
        let joined = self.recv_until(|m| matches!(m, ServerMsg::Joined { .. })).await;
        let mut messages = Vec::new();
        for _ in 0..expect {
            messages.push(self.recv_message().await);
        }
        (joined, messages)
    }

    pub async fn say(&mut self, room: &str, text: &str, client_id: &str) {
        self.send(json!({"type": "send", "room": room, "text": text, "client_id": client_id})).await;
    }

    /// Sends and waits for the echo (the ack).
    pub async fn say_acked(&mut self, room: &str, text: &str, client_id: &str) -> ChatMessage {
        self.say(room, text, client_id).await;
        let msg = self.recv_message().await;
        assert_eq!(msg.client_id, client_id);
        msg
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("close in time");
            match frame {
                Some(Ok(Message::Close(Some(cf)))) => return u16::from(cf.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error instead of close: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

pub fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

// --- The real binary as a child process (crash tests, soak) ---

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the real `confab` binary on `port` with `db`, plus `extra` flags; waits until it
/// answers /healthz. Rate limits are raised so load tests measure the server, not the limit.
pub async fn start_binary(db: &Path, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--db", db.to_str().unwrap(), "--log", "warn"])
        .args(["--msg-rate", "100000", "--msg-burst", "100000"])
        .args(["--http-rate", "100000", "--http-burst", "100000"])
        .args(["--room-create-rate", "100000", "--room-create-burst", "100000"])
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not come up");
}

pub async fn connect(port: u16, nick: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    let mut c = Client { ws };
    c.send(json!({"type": "hello", "nick": nick})).await;
    assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
    c
}

/// A WebSocket client whose upgrade request carries `headers` (a session `Cookie`, an
/// `Authorization: Bearer` token); it has not said hello yet.
pub async fn connect_with(port: u16, headers: &[(&str, &str)]) -> Client {
    try_connect_with(port, headers).await.expect("ws connects")
}

/// As `connect_with`, but a refused upgrade is returned (its HTTP response is in the
/// error) rather than a panic.
pub async fn try_connect_with(
    port: u16,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request().expect("a valid ws URL");
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .expect("a header name");
        request.headers_mut().insert(name, HeaderValue::from_str(value).expect("a header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Client { ws })
}

/// Everything stored in a room, via the HTTP API, oldest first.
pub async fn stored(port: u16, room: &str) -> Vec<ChatMessage> {
    let mut all = Vec::new();
    let mut before = u64::MAX;
    loop {
        let url = format!("http://127.0.0.1:{port}/api/rooms/{room}/messages?before={before}&limit=500");
        let page: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let mut msgs: Vec<ChatMessage> = serde_json::from_value(page["messages"].clone()).unwrap();
        let more = page["has_more"].as_bool().unwrap();
        before = msgs.first().map_or(0, |m| m.seq);
        msgs.append(&mut all);
        all = msgs;
        if !more {
            return all;
        }
    }
}

// --- Room events (`message`, `edit`, `delete`, `react`) as a client applies them ---

/// The room and seq of a room event; none for any other frame.
pub fn event_place(msg: &ServerMsg) -> Option<(&str, Seq)> {
    match msg {
        ServerMsg::Message(m) => Some((&m.room, m.seq)),
        ServerMsg::Edit(e) => Some((&e.room, e.seq)),
        ServerMsg::Delete(d) => Some((&d.room, d.seq)),
        ServerMsg::React(r) => Some((&r.room, r.seq)),
        _ => None,
    }
}

/// Who made a room event (its `user`) and the `client_id` a retry of it carries (empty
/// for a reaction, and for anything that is not a room event).
pub fn event_author(msg: &ServerMsg) -> (&str, &str) {
    match msg {
        ServerMsg::Message(m) => (&m.user, &m.client_id),
        ServerMsg::Edit(e) => (&e.user, &e.client_id),
        ServerMsg::Delete(d) => (&d.user, &d.client_id),
        ServerMsg::React(r) => (&r.user, ""),
        _ => ("", ""),
    }
}

/// The message a change (`edit`, `delete`, `react`) applies to.
pub fn event_target(msg: &ServerMsg) -> Option<Seq> {
    match msg {
        ServerMsg::Edit(e) => Some(e.target),
        ServerMsg::Delete(d) => Some(d.target),
        ServerMsg::React(r) => Some(r.target),
        _ => None,
    }
}

/// Applies one room event to a client's copy of the room (messages by seq), by the
/// client's rule: a `message` is inserted (or replaces the one held); an `edit` of a held,
/// live message sets its text, `edited_ts` and mentions; a `delete` makes the held message
/// a tombstone (no text, mentions or reactions); a `react` turns the user's reaction on a
/// held, live message on or off (`confab::ui::state::set_reaction`). Anything else is
/// left alone.
pub fn apply_event(messages: &mut BTreeMap<Seq, ChatMessage>, msg: &ServerMsg) {
    match msg {
        ServerMsg::Message(m) => {
            messages.insert(m.seq, m.clone());
        }
        ServerMsg::Edit(e) => {
            confab::ui::state::requote(messages.values_mut(), e.target, Some(&e.text));
            if let Some(m) = messages.get_mut(&e.target)
                && !m.deleted
            {
                m.text = e.text.clone();
                m.edited_ts = Some(e.edited_ts);
                m.mentions = e.mentions.clone();
            }
        }
        ServerMsg::Delete(d) => {
            confab::ui::state::requote(messages.values_mut(), d.target, None);
            if let Some(m) = messages.get_mut(&d.target) {
                m.deleted = true;
                m.text.clear();
                m.mentions.clear();
                m.reactions.clear();
            }
        }
        ServerMsg::React(r) => {
            if let Some(m) = messages.get_mut(&r.target)
                && !m.deleted
            {
                confab::ui::state::set_reaction(&mut m.reactions, &r.emoji, &r.user, &r.nick, r.on);
            }
        }
        _ => {}
    }
}

/// A room's messages as JSON, oldest first: what a client's copy serialises to, for a
/// comparison byte for byte with a fresh load (both go through `serde_json::Value`, so
/// their keys come in the same order).
pub fn messages_json(messages: &BTreeMap<Seq, ChatMessage>) -> Vec<String> {
    messages.values().map(|m| serde_json::to_value(m).unwrap().to_string()).collect()
}

/// Everything stored in a room as the HTTP API returns it (current state: text after
/// edits, tombstones, reactions), oldest first, paging back until `has_more` is false;
/// each message as the JSON text of the value the server sent.
pub async fn stored_json(port: u16, room: &str, limit: u32) -> Vec<String> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before = u64::MAX;
    loop {
        let url = format!("http://127.0.0.1:{port}/api/rooms/{room}/messages?before={before}&limit={limit}");
        let response = reqwest::get(url).await.unwrap();
        assert!(response.status().is_success(), "messages API: {}", response.status());
        let page: Value = response.json().await.unwrap();
        let msgs = page["messages"].as_array().expect("a messages array").clone();
        let more = page["has_more"].as_bool().expect("has_more");
        assert!(!more || !msgs.is_empty(), "a page with has_more holds something");
        if let Some(first) = msgs.first() {
            before = first["seq"].as_u64().expect("a seq");
        }
        pages.push(msgs);
        if !more {
            break;
        }
    }
    let all: Vec<Value> = pages.into_iter().rev().flatten().collect();
    let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{room}: pages overlap or are out of order: {seqs:?}");
    all.iter().map(Value::to_string).collect()
}

// --- Small shared tools ---

/// Resident memory of a process, in kB, from /proc.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Small deterministic generator (xorshift), so a failing run replays the same way.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded(id: u64) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

/// A user whose socket has a small receive buffer: when it stops reading, the server's
/// side backs up after a few KB instead of the kernel's default hundreds.
pub async fn small_window_user(app: &TestApp, nick: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", app.addr), MaybeTlsStream::Plain(stream))
            .await
            .expect("ws connects");
    let mut c = Client { ws };
    c.send(json!({"type": "hello", "nick": nick})).await;
    assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
    c
}

/// Polls `cond` until it holds (bounded).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
