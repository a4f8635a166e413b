//! Accounts and access (issue 9, protocol 2) against the real server: sign-up and
//! sign-in, sessions and API tokens, the Origin rule, invites, private rooms, roles and
//! moderation over both paths (WebSocket and HTTP), guests beside accounts, per-account
//! send allowances, and the `confab admin` command line on a running server's database.
//!
//! Every test makes its own server. Passwords are Argon2id (about a third of a second a
//! hash in a debug build), so each test signs up only the accounts its rule needs.

mod common;

use common::{Client, TestApp, WAIT, connect_with, spawn_with, try_connect_with};
use confab::protocol::{ChatMessage, PresenceState, RoomRole, ServerMsg, ServerRole, UserInfo, Visibility};
use confab::server::config::{Config, SignupMode, Switch};
use futures::StreamExt;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use std::{collections::BTreeSet, net::IpAddr, path::Path, process::Stdio, time::Duration};
use tokio::io::AsyncWriteExt;

const PASSWORD: &str = "correct horse battery staple";

/// A server whose HTTP, sign-in and room-creation allowances are wide, so only the
/// tests about those limits meet them.
async fn server(tune: impl FnOnce(&mut Config)) -> TestApp {
    spawn_with(|c| {
        c.http_burst = 10_000;
        c.auth_burst = 1_000;
        c.room_create_burst = 1_000;
        tune(c)
    })
    .await
}

// --- HTTP ---

/// How a request says who it is.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    /// The `confab_session=…` pair, sent as the `Cookie` header.
    Cookie(&'a str),
    Bearer(&'a str),
}

/// An answer: status, headers, and the body as JSON (Null when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    #[track_caller]
    fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected answer: {}", self.body);
        self
    }

    /// An API error: `status` with `{code, message}`.
    #[track_caller]
    fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected answer: {}", self.body);
        assert_eq!(self.body["code"], code, "unexpected error: {}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error has a message: {}",
            self.body
        );
        self
    }

    /// `Retry-After`, in seconds.
    #[track_caller]
    fn retry_after(&self) -> u64 {
        let value = self.headers.get("retry-after").expect("a Retry-After header");
        value.to_str().unwrap().parse().expect("Retry-After is whole seconds")
    }

    #[track_caller]
    fn set_cookie(&self) -> &str {
        self.headers.get("set-cookie").expect("a Set-Cookie header").to_str().unwrap()
    }

    /// The `confab_session=…` pair of `Set-Cookie`, to send back as `Cookie`.
    #[track_caller]
    fn session_cookie(&self) -> String {
        let pair = self.set_cookie().split(';').next().unwrap().trim();
        assert!(pair.starts_with("confab_session="), "the session cookie: {pair}");
        pair.to_owned()
    }
}

/// One request, built up. A state-changing request without a Bearer token carries this
/// server's `Origin`, as a page of the server would, unless `origin` says otherwise.
struct Call<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    who: As<'a>,
    body: Option<Value>,
    origin: Option<Option<String>>,
    headers: Vec<(&'static str, String)>,
    from: Option<IpAddr>,
}

fn call<'a>(app: &'a TestApp, method: Method, path: &str) -> Call<'a> {
    Call {
        app,
        method,
        path: path.to_owned(),
        who: As::Nobody,
        body: None,
        origin: None,
        headers: Vec::new(),
        from: None,
    }
}

impl<'a> Call<'a> {
    fn who(mut self, who: As<'a>) -> Self {
        self.who = who;
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends exactly this `Origin` (None: none at all).
    fn origin(mut self, origin: Option<&str>) -> Self {
        self.origin = Some(origin.map(str::to_owned));
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Connects from this local address (any of 127.0.0.0/8 reaches the server).
    fn from(mut self, ip: &str) -> Self {
        self.from = Some(ip.parse().unwrap());
        self
    }

    async fn send(self) -> Reply {
        let client = reqwest::Client::builder()
            .local_address(self.from)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client.request(self.method.clone(), self.app.url(&self.path));
        match self.who {
            As::Nobody => {}
            As::Cookie(cookie) => req = req.header("cookie", cookie),
            As::Bearer(token) => req = req.header("authorization", format!("Bearer {token}")),
        }
        let same_site = format!("http://{}", self.app.addr);
        let origin = match self.origin {
            Some(chosen) => chosen,
            None if self.method != Method::GET && !matches!(self.who, As::Bearer(_)) => Some(same_site),
            None => None,
        };
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        if let Some(body) = self.body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the request is answered");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply { status, headers, body }
    }
}

async fn get(app: &TestApp, path: &str, who: As<'_>) -> Reply {
    call(app, Method::GET, path).who(who).send().await
}

async fn post(app: &TestApp, path: &str, who: As<'_>, body: Value) -> Reply {
    call(app, Method::POST, path).who(who).json(body).send().await
}

async fn put(app: &TestApp, path: &str, who: As<'_>, body: Value) -> Reply {
    call(app, Method::PUT, path).who(who).json(body).send().await
}

async fn delete(app: &TestApp, path: &str, who: As<'_>) -> Reply {
    call(app, Method::DELETE, path).who(who).send().await
}

/// A signed-up account and the cookie of its first session.
struct User {
    username: String,
    id: String,
    cookie: String,
}

impl User {
    fn auth(&self) -> As<'_> {
        As::Cookie(&self.cookie)
    }
}

async fn signup(app: &TestApp, username: &str) -> User {
    signup_with(app, json!({"username": username, "password": PASSWORD})).await
}

/// Signs up with `body` (201 expected).
async fn signup_with(app: &TestApp, body: Value) -> User {
    let reply = post(app, "/api/auth/signup", As::Nobody, body).await.expect(201);
    User {
        username: reply.body["username"].as_str().unwrap().to_owned(),
        id: reply.body["id"].as_str().unwrap().to_owned(),
        cookie: reply.session_cookie(),
    }
}

async fn login(app: &TestApp, username: &str, password: &str) -> Reply {
    post(app, "/api/auth/login", As::Nobody, json!({"username": username, "password": password})).await
}

/// A new session of `username` (the default password): its cookie.
async fn new_session(app: &TestApp, username: &str) -> String {
    login(app, username, PASSWORD).await.expect(200).session_cookie()
}

async fn make_token(app: &TestApp, user: &User, name: &str) -> (String, String) {
    let reply = post(app, "/api/tokens", user.auth(), json!({"name": name})).await.expect(201);
    (reply.body["id"].as_str().unwrap().to_owned(), reply.body["token"].as_str().unwrap().to_owned())
}

async fn create_room(app: &TestApp, owner: &User, room: &str, visibility: &str) {
    post(app, "/api/rooms", owner.auth(), json!({"room": room, "visibility": visibility})).await.expect(201);
}

async fn moderate(app: &TestApp, actor: &User, room: &str, action: &str, username: &str) -> Reply {
    let body = json!({"action": action, "username": username});
    post(app, &format!("/api/rooms/{room}/moderation"), actor.auth(), body).await
}

// --- WebSocket ---

/// A socket signed in by `headers` (a cookie or a Bearer token) that said `hello`
/// without a nick; returns it with who the server says it is.
async fn signed_in_with(app: &TestApp, headers: &[(&str, &str)]) -> (Client, UserInfo) {
    let mut c = connect_with(app.addr.port(), headers).await;
    c.send(json!({"type": "hello"})).await;
    match c.recv().await {
        ServerMsg::Welcome { user: Some(user), .. } => (c, user),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn socket(app: &TestApp, cookie: &str) -> Client {
    signed_in_with(app, &[("cookie", cookie)]).await.0
}

async fn socket_of(app: &TestApp, user: &User) -> Client {
    let (c, info) = signed_in_with(app, &[("cookie", &user.cookie)]).await;
    assert_eq!(info.id, user.id);
    c
}

/// A guest socket: returns it with the guest's user info.
async fn guest(app: &TestApp, nick: &str) -> (Client, UserInfo) {
    let mut c = app.client().await;
    c.send(json!({"type": "hello", "nick": nick})).await;
    match c.recv().await {
        ServerMsg::Welcome { user: Some(user), .. } => (c, user),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// `owner` creates `room` over a socket (and owns it), `member` joins it: both sockets.
async fn owner_and_member(app: &TestApp, owner: &User, member: &User, room: &str) -> (Client, Client) {
    let mut owning = socket_of(app, owner).await;
    let made = ask(&mut owning, json!({"type": "create_room", "room": room}), "c").await;
    assert_eq!(outcome(&made), "joined");
    let mut joining = socket_of(app, member).await;
    assert_eq!(try_join(&mut joining, room).await, "joined");
    (owning, joining)
}

/// Sends `frame` with `ref` set and returns the reply that carries it back.
async fn ask(c: &mut Client, mut frame: Value, reference: &str) -> ServerMsg {
    frame["ref"] = json!(reference);
    c.send(frame).await;
    c.recv_until(|m| m.reference() == Some(reference)).await
}

/// A frame as a short word for a failure message: its outcome, or "welcome".
fn outcome_or_welcome(msg: &ServerMsg) -> String {
    match msg {
        ServerMsg::Welcome { .. } => "welcome".into(),
        other => outcome(other),
    }
}

/// What a reply was: "ack", "joined", or the error's code.
fn outcome(reply: &ServerMsg) -> String {
    match reply {
        ServerMsg::Ack { .. } => "ack".into(),
        ServerMsg::Joined { .. } => "joined".into(),
        ServerMsg::Error { code, .. } => code.as_str().into(),
        other => panic!("not a reply: {other:?}"),
    }
}

/// Joins `room` and returns the outcome ("joined" or an error code).
async fn try_join(c: &mut Client, room: &str) -> String {
    outcome(&ask(c, json!({"type": "join", "room": room}), &format!("join-{room}")).await)
}

impl Client {
    /// Sends and waits for its own echo, skipping other people's messages.
    async fn say_acked_skipping(&mut self, room: &str, text: &str, client_id: &str) -> ChatMessage {
        self.say(room, text, client_id).await;
        loop {
            let m = self.recv_message().await;
            if m.client_id == client_id {
                return m;
            }
        }
    }

    /// Closes from this side and waits for the server's answering close frame: by then the
    /// server has let go of the connection's session.
    async fn close_and_wait(mut self) {
        self.ws.close(None).await.expect("close sent");
        tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} })
            .await
            .expect("the server answers the close");
    }
}

// === Sign-up ===

/// Sign-up answers 201 with the user and a session cookie of 64 hex digits (HttpOnly,
/// SameSite=Lax, Path=/, a Max-Age, not Secure over plain http); the first account on an
/// empty server is the admin, later ones are members.
#[tokio::test]
async fn signup_answers_the_user_and_a_session_cookie_and_the_first_account_is_admin() {
    let app = server(|_| {}).await;
    let body = json!({"username": "ann", "password": PASSWORD, "display_name": "Ann A."});
    let first = post(&app, "/api/auth/signup", As::Nobody, body).await.expect(201);
    let set_cookie = first.set_cookie().to_owned();
    let mut parts = set_cookie.split(';').map(str::trim);
    let secret = parts.next().unwrap().strip_prefix("confab_session=").expect("the session cookie");
    assert_eq!(secret.len(), 64, "{set_cookie}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{set_cookie}");
    let attrs: Vec<&str> = parts.collect();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(&attr), "{attr} missing from {set_cookie}");
    }
    let max_age: u64 =
        attrs.iter().find_map(|a| a.strip_prefix("Max-Age=")).expect("Max-Age").parse().unwrap();
    assert!(max_age > 0);
    assert!(!attrs.contains(&"Secure"), "not Secure without an https public URL: {set_cookie}");

    let ann = &first.body;
    assert!(ann["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(ann["username"], "ann");
    assert_eq!(ann["display_name"], "Ann A.");
    assert_eq!(ann["role"], "admin");
    assert_eq!(ann["guest"], false);

    let bob = post(&app, "/api/auth/signup", As::Nobody, json!({"username": "bob", "password": PASSWORD}))
        .await
        .expect(201);
    assert_eq!(bob.body["role"], "member");
    assert_eq!(bob.body["display_name"], "bob", "the display name defaults to the username");
    assert_ne!(bob.body["id"], ann["id"]);

    let cookie = first.session_cookie();
    let me = get(&app, "/api/me", As::Cookie(&cookie)).await.expect(200);
    assert_eq!(me.body["id"], ann["id"]);
    assert_eq!(me.body["username"], "ann");
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["via"], "session");
}

/// Behind an https public URL the session cookie is Secure, when set and when cleared.
#[tokio::test]
async fn the_session_cookie_is_secure_behind_an_https_public_url() {
    let public = "https://chat.example.org";
    let app = server(|c| c.public_url = Some(public.into())).await;
    let body = json!({"username": "ann", "password": PASSWORD});
    let reply =
        call(&app, Method::POST, "/api/auth/signup").json(body).origin(Some(public)).send().await.expect(201);
    let attrs: Vec<String> = reply.set_cookie().split(';').map(|a| a.trim().to_owned()).collect();
    assert!(attrs.iter().any(|a| a == "Secure"), "{attrs:?}");
    let cookie = reply.session_cookie();
    let out = call(&app, Method::POST, "/api/auth/logout")
        .who(As::Cookie(&cookie))
        .origin(Some(public))
        .send()
        .await;
    let out = out.expect(204);
    let attrs: Vec<&str> = out.set_cookie().split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Max-Age=0") && attrs.contains(&"Secure"), "{attrs:?}");
}

/// Usernames are 1-32 of [a-z0-9_.-], compared without case ("Ann" is stored "ann", and
/// signs in as "ANN"); anything else is 400 invalid_username.
#[tokio::test]
async fn usernames_are_lowercase_ascii_of_at_most_32_characters() {
    let app = server(|_| {}).await;
    let too_long = "a".repeat(33);
    for bad in ["", "a b", "ann!", "émile", "ann/x", "ann@example.org", too_long.as_str()] {
        let body = json!({"username": bad, "password": PASSWORD});
        post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(400, "invalid_username");
    }
    let ann = signup_with(&app, json!({"username": "Ann", "password": PASSWORD})).await;
    assert_eq!(ann.username, "ann");
    let longest = format!("a.b_c-9{}", "z".repeat(25));
    assert_eq!(longest.len(), 32);
    assert_eq!(signup(&app, &longest).await.username, longest);
    let me = login(&app, "ANN", PASSWORD).await.expect(200);
    assert_eq!(me.body["id"], ann.id.as_str());
    assert_eq!(me.body["username"], "ann");
}

/// Passwords: under 12 characters, over 256, on the common list (any case), or only the
/// username repeated are 400 weak_password; 12 and 256 characters are fine.
#[tokio::test]
async fn weak_passwords_are_refused() {
    let app = server(|_| {}).await;
    let too_long = "x".repeat(257);
    for weak in
        ["elevenchars", too_long.as_str(), "password1234", "PASSWORD1234", "annannannann", "ANN ANN ANN ANN"]
    {
        let body = json!({"username": "ann", "password": weak});
        post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(400, "weak_password");
    }
    signup_with(&app, json!({"username": "ann", "password": "twelve chars"})).await;
    signup_with(&app, json!({"username": "bob", "password": "x".repeat(256)})).await;
}

/// A display name that is not a valid nick (a control character, an invisible one, over
/// 32 characters) is 400 invalid_nick.
#[tokio::test]
async fn a_bad_display_name_is_invalid_nick() {
    let app = server(|_| {}).await;
    let too_long = "d".repeat(33);
    for bad in ["bad\u{7}name", "bo\u{200B}b", "\u{3164}", too_long.as_str()] {
        let body = json!({"username": "ann", "password": PASSWORD, "display_name": bad});
        post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(400, "invalid_nick");
    }
}

/// A username or display name is taken when it collides with any account's username or
/// display name after NFKC, case folding and the confusable skeleton: 409 username_taken
/// for the username, 409 nick_taken for the display name.
#[tokio::test]
async fn taken_names_conflict_by_case_and_by_confusable_skeleton() {
    let app = server(|_| {}).await;
    signup_with(&app, json!({"username": "ann", "password": PASSWORD, "display_name": "Annie"})).await;
    signup(&app, "colin").await;
    let username_taken = [
        json!({"username": "ann", "password": PASSWORD}),
        json!({"username": "ANN", "password": PASSWORD}),
        // The username of one is the display name of another.
        json!({"username": "annie", "password": PASSWORD}),
        // "1" is a confusable of "l".
        json!({"username": "co1in", "password": PASSWORD}),
    ];
    let mut wrong = Vec::new();
    for body in username_taken {
        let reply = post(&app, "/api/auth/signup", As::Nobody, body.clone()).await;
        if (reply.status.as_u16(), reply.body["code"].as_str()) != (409, Some("username_taken")) {
            wrong.push(format!("{}: {} {}", body["username"], reply.status, reply.body));
        }
    }
    // Cyrillic а (U+0430), full-width letters, and case.
    for (i, display) in ["\u{430}nn", "ＡＮＮ", "ANNIE", "Colin", "COLIN"].into_iter().enumerate() {
        // A username of its own each, so a case wrongly let through does not block the next.
        let body = json!({"username": format!("bob{i}"), "password": PASSWORD, "display_name": display});
        let reply = post(&app, "/api/auth/signup", As::Nobody, body).await;
        if (reply.status.as_u16(), reply.body["code"].as_str()) != (409, Some("nick_taken")) {
            wrong.push(format!("display name {display:?}: {} {}", reply.status, reply.body));
        }
    }
    assert!(wrong.is_empty(), "names that should have been taken: {wrong:#?}");
}

/// Invite mode: the first account needs no invite (and is the admin); after it, sign-up
/// without an invite, with a wrong one, an expired one or a used-up one is 403
/// invite_required. An invite is single-use by default; `uses: 0` is unlimited.
#[tokio::test]
async fn invite_mode_needs_a_valid_unused_invite_after_the_first_account() {
    let app = server(|c| c.signup = SignupMode::Invite).await;
    let admin = signup(&app, "ann").await;
    let me = get(&app, "/api/me", admin.auth()).await.expect(200);
    assert_eq!(me.body["role"], "admin");
    let signup_body = |name: &str, invite: Option<&str>| {
        let mut body = json!({"username": name, "password": PASSWORD});
        if let Some(code) = invite {
            body["invite"] = json!(code);
        }
        body
    };
    post(&app, "/api/auth/signup", As::Nobody, signup_body("bob", None))
        .await
        .expect_error(403, "invite_required");
    post(&app, "/api/auth/signup", As::Nobody, signup_body("bob", Some("not-a-real-code")))
        .await
        .expect_error(403, "invite_required");

    let invite = post(&app, "/api/invites", admin.auth(), json!({})).await.expect(201).body;
    assert_eq!(invite["uses_left"], 1, "single use by default: {invite}");
    let now = confab::server::unix_ms();
    assert!(invite["expires_ms"].as_i64().unwrap() > now, "{invite}");
    assert!(invite["created_ms"].as_i64().unwrap() <= now, "{invite}");
    assert!(invite["id"].as_str().is_some_and(|id| !id.is_empty()));
    let code = invite["code"].as_str().unwrap();
    let bob = post(&app, "/api/auth/signup", As::Nobody, signup_body("bob", Some(code))).await.expect(201);
    assert_eq!(bob.body["role"], "member");
    post(&app, "/api/auth/signup", As::Nobody, signup_body("carol", Some(code)))
        .await
        .expect_error(403, "invite_required");

    // Expired the moment it was made.
    let (_, expired) = app.hub.auth.create_invite(None, Some(5), Some(Duration::ZERO)).await.unwrap();
    post(&app, "/api/auth/signup", As::Nobody, signup_body("carol", Some(&expired)))
        .await
        .expect_error(403, "invite_required");

    let unlimited = post(&app, "/api/invites", admin.auth(), json!({"uses": 0, "expires_hours": 0}))
        .await
        .expect(201)
        .body;
    assert!(unlimited["uses_left"].is_null() && unlimited["expires_ms"].is_null(), "{unlimited}");
    let code = unlimited["code"].as_str().unwrap();
    post(&app, "/api/auth/signup", As::Nobody, signup_body("carol", Some(code))).await.expect(201);
    post(&app, "/api/auth/signup", As::Nobody, signup_body("dave", Some(code))).await.expect(201);
}

/// Invites are made by admins and by owners of some room (others 403 forbidden); only
/// admins list them, and the list never shows a code.
#[tokio::test]
async fn admins_and_room_owners_make_invites_and_only_admins_list_them() {
    let app = server(|_| {}).await;
    let admin = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    post(&app, "/api/invites", bob.auth(), json!({})).await.expect_error(403, "forbidden");
    get(&app, "/api/invites", bob.auth()).await.expect_error(403, "forbidden");
    post(&app, "/api/invites", As::Nobody, json!({})).await.expect_error(401, "unauthenticated");

    create_room(&app, &bob, "bobs-room", "public").await;
    let made = post(&app, "/api/invites", bob.auth(), json!({"uses": 3})).await.expect(201).body;
    assert_eq!(made["uses_left"], 3);
    get(&app, "/api/invites", bob.auth()).await.expect_error(403, "forbidden");

    let listed = get(&app, "/api/invites", admin.auth()).await.expect(200).body;
    let listed = listed.as_array().unwrap();
    assert!(listed.iter().any(|i| i["id"] == made["id"] && i["uses_left"] == 3), "{listed:?}");
    assert!(listed.iter().all(|i| i.get("code").is_none()), "codes are shown once: {listed:?}");
}

/// Closed sign-up: the first account of an empty server may still sign up (the admin);
/// after it, 403 signup_closed.
#[tokio::test]
async fn closed_signup_allows_only_the_first_account() {
    let app = server(|c| c.signup = SignupMode::Closed).await;
    let first =
        post(&app, "/api/auth/signup", As::Nobody, json!({"username": "ann", "password": PASSWORD})).await;
    assert_eq!(first.expect(201).body["role"], "admin");
    let body = json!({"username": "bob", "password": PASSWORD});
    post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(403, "signup_closed");
}

// === Sign-in and sign-out ===

/// Every login is a new session: a new cookie secret and a new session id, and all of
/// them work side by side.
#[tokio::test]
async fn every_login_is_a_new_session() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let first = login(&app, "ann", PASSWORD).await.expect(200);
    assert_eq!(first.body["id"], ann.id.as_str());
    assert_eq!(first.body["username"], "ann");
    let second = new_session(&app, "ann").await;
    let cookies = BTreeSet::from([ann.cookie.clone(), first.session_cookie(), second.clone()]);
    assert_eq!(cookies.len(), 3, "a new secret every time");
    for cookie in &cookies {
        get(&app, "/api/me", As::Cookie(cookie)).await.expect(200);
    }
    let sessions = get(&app, "/api/sessions", As::Cookie(&second)).await.expect(200).body;
    let ids: BTreeSet<&str> =
        sessions.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "a new id every time: {sessions}");
}

/// A wrong password and an unknown (or impossible) username get the same answer: 401
/// bad_credentials with the same message.
#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let app = server(|_| {}).await;
    signup(&app, "ann").await;
    let wrong = login(&app, "ann", "not the right password").await.expect_error(401, "bad_credentials");
    let unknown = login(&app, "nobody", PASSWORD).await.expect_error(401, "bad_credentials");
    let impossible = login(&app, "no body!", PASSWORD).await.expect_error(401, "bad_credentials");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, impossible.body);
    assert!(wrong.headers.get("set-cookie").is_none());
}

/// Sign-in and sign-up share one allowance per address (auth_burst at once, auth_rate a
/// minute): past it, 429 rate_limited with Retry-After of at least a second.
#[tokio::test]
async fn sign_in_and_sign_up_are_rate_limited_per_address() {
    let app = spawn_with(|c| {
        c.auth_burst = 3;
        c.auth_rate = 1;
    })
    .await;
    login(&app, "nobody1", PASSWORD).await.expect_error(401, "bad_credentials");
    login(&app, "nobody2", PASSWORD).await.expect_error(401, "bad_credentials");
    let body = json!({"username": "nobody3", "password": "short"});
    post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(400, "weak_password");
    let limited = login(&app, "nobody4", PASSWORD).await.expect_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    let body = json!({"username": "nobody5", "password": PASSWORD});
    let limited = post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    // Another address has its own allowance.
    call(&app, Method::POST, "/api/auth/login")
        .json(json!({"username": "nobody6", "password": PASSWORD}))
        .from("127.0.0.2")
        .send()
        .await
        .expect_error(401, "bad_credentials");
}

/// Sign-in and sign-up also share one allowance per username, whichever address the
/// attempts come from: past it, 429 rate_limited with Retry-After; other usernames are
/// not affected.
#[tokio::test]
async fn sign_in_and_sign_up_are_rate_limited_per_username() {
    let app = spawn_with(|c| {
        c.auth_burst = 3;
        c.auth_rate = 1;
    })
    .await;
    let attempt = |from: &'static str, username: &'static str| {
        call(&app, Method::POST, "/api/auth/login")
            .json(json!({"username": username, "password": PASSWORD}))
            .from(from)
    };
    attempt("127.0.0.2", "ann").send().await.expect_error(401, "bad_credentials");
    attempt("127.0.0.3", "ANN").send().await.expect_error(401, "bad_credentials");
    call(&app, Method::POST, "/api/auth/signup")
        .json(json!({"username": "ann", "password": "short"}))
        .from("127.0.0.4")
        .send()
        .await
        .expect_error(400, "weak_password");
    let limited = attempt("127.0.0.5", "ann").send().await.expect_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    attempt("127.0.0.6", "bob").send().await.expect_error(401, "bad_credentials");
}

/// Logout: 204, the cookie cleared (Max-Age=0), the session revoked: its sockets close
/// with 4001 at once and its cookie is no longer signed in. Other sessions go on.
#[tokio::test]
async fn logout_ends_the_session_and_closes_its_sockets() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let other = new_session(&app, "ann").await;
    let mut tab = socket(&app, &ann.cookie).await;
    let mut elsewhere = socket(&app, &other).await;

    let out = post(&app, "/api/auth/logout", ann.auth(), json!({})).await.expect(204);
    let cleared: Vec<&str> = out.set_cookie().split(';').map(str::trim).collect();
    assert_eq!(cleared[0], "confab_session=");
    assert!(cleared.contains(&"Max-Age=0"), "{cleared:?}");
    assert_eq!(tab.expect_close().await, 4001);
    get(&app, "/api/me", ann.auth()).await.expect_error(401, "unauthenticated");
    // The old cookie on a socket is simply not signed in.
    let mut stale = connect_with(app.addr.port(), &[("cookie", &ann.cookie)]).await;
    stale.send(json!({"type": "hello"})).await;
    stale.expect_error("unauthenticated").await;

    get(&app, "/api/me", As::Cookie(&other)).await.expect(200);
    assert_eq!(try_join(&mut elsewhere, "lobby").await, "joined", "the other session's socket is open");
}

/// GET /api/me: who the request is and how it signed in, or 401 unauthenticated; PUT
/// /api/me changes the display name (validated, and not one that is taken), and new
/// sockets go by it.
#[tokio::test]
async fn me_shows_and_changes_the_signed_in_user() {
    let app = server(|_| {}).await;
    get(&app, "/api/me", As::Nobody).await.expect_error(401, "unauthenticated");
    get(&app, "/api/me", As::Cookie("confab_session=00ff")).await.expect_error(401, "unauthenticated");
    let ann = signup(&app, "ann").await;
    signup(&app, "bob").await;
    let me = get(&app, "/api/me", ann.auth()).await.expect(200).body;
    assert_eq!(
        me,
        json!({"id": ann.id, "username": "ann", "display_name": "ann", "role": "admin", "guest": false, "via": "session"})
    );

    let changed =
        put(&app, "/api/me", ann.auth(), json!({"display_name": "Ann Smith"})).await.expect(200).body;
    assert_eq!(changed["display_name"], "Ann Smith");
    assert_eq!(get(&app, "/api/me", ann.auth()).await.expect(200).body["display_name"], "Ann Smith");
    put(&app, "/api/me", ann.auth(), json!({"display_name": "a\u{7}b"}))
        .await
        .expect_error(400, "invalid_nick");
    put(&app, "/api/me", ann.auth(), json!({"display_name": "BOB"})).await.expect_error(409, "nick_taken");
    put(&app, "/api/me", As::Nobody, json!({"display_name": "x"})).await.expect_error(401, "unauthenticated");

    let mut c = connect_with(app.addr.port(), &[("cookie", &ann.cookie)]).await;
    c.send(json!({"type": "hello"})).await;
    assert!(matches!(c.recv().await, ServerMsg::Welcome { nick, .. } if nick == "Ann Smith"));
}

/// Changing the password needs the current one (else 401 bad_credentials); it ends every
/// other session of the account (their sockets close with 4001, their cookies stop
/// working) and keeps the current one; the new password signs in, the old one not.
#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let other = new_session(&app, "ann").await;
    let mut here = socket(&app, &ann.cookie).await;
    let mut there = socket(&app, &other).await;
    let new_password = "a much better passphrase";

    let wrong = json!({"current": "not my password", "new": new_password});
    post(&app, "/api/me/password", ann.auth(), wrong).await.expect_error(401, "bad_credentials");
    get(&app, "/api/me", As::Cookie(&other)).await.expect(200);

    let weak = json!({"current": PASSWORD, "new": "short"});
    post(&app, "/api/me/password", ann.auth(), weak).await.expect_error(400, "weak_password");

    let change = json!({"current": PASSWORD, "new": new_password});
    post(&app, "/api/me/password", ann.auth(), change).await.expect(204);
    assert_eq!(there.expect_close().await, 4001);
    get(&app, "/api/me", As::Cookie(&other)).await.expect_error(401, "unauthenticated");
    get(&app, "/api/me", ann.auth()).await.expect(200);
    assert_eq!(try_join(&mut here, "lobby").await, "joined", "the current session's socket stays open");

    login(&app, "ann", PASSWORD).await.expect_error(401, "bad_credentials");
    login(&app, "ann", new_password).await.expect(200);
}

/// GET /api/sessions lists the account's sessions (which one is this request's, user
/// agent, address); DELETE /api/sessions/{id} ends one (204) and closes its sockets with
/// 4001 at once; another user's session, or none, is 404.
#[tokio::test]
async fn sessions_are_listed_and_revoked() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let phone = call(&app, Method::POST, "/api/auth/login")
        .json(json!({"username": "ann", "password": PASSWORD}))
        .header("user-agent", "confab-phone/2.0")
        .send()
        .await
        .expect(200)
        .session_cookie();
    let mut phone_socket = socket(&app, &phone).await;

    let list = get(&app, "/api/sessions", ann.auth()).await.expect(200).body;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    let phone_row = list.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(phone_row["user_agent"], "confab-phone/2.0");
    assert_eq!(phone_row["address"], "127.0.0.1");
    assert!(phone_row["created_ms"].as_i64().unwrap() > 0 && phone_row["last_seen_ms"].as_i64().unwrap() > 0);
    let phone_id = phone_row["id"].as_str().unwrap();
    let ann_id = current[0]["id"].as_str().unwrap();

    let bob = signup(&app, "bob").await;
    delete(&app, &format!("/api/sessions/{ann_id}"), bob.auth()).await.expect_error(404, "not_found");
    get(&app, "/api/me", ann.auth()).await.expect(200);
    delete(&app, "/api/sessions/no-such-session", ann.auth()).await.expect_error(404, "not_found");

    delete(&app, &format!("/api/sessions/{phone_id}"), ann.auth()).await.expect(204);
    assert_eq!(phone_socket.expect_close().await, 4001);
    get(&app, "/api/me", As::Cookie(&phone)).await.expect_error(401, "unauthenticated");
    get(&app, "/api/me", ann.auth()).await.expect(200);
    let left = get(&app, "/api/sessions", ann.auth()).await.expect(200).body;
    assert_eq!(left.as_array().unwrap().len(), 1);
}

// === API tokens ===

/// An API token (shown once, "confab_…") signs in HTTP and the WebSocket by `Authorization:
/// Bearer`; listed without its secret; once deleted, its sockets close with 4001 and it is
/// 401 on HTTP and on the upgrade. A bad token is 401 too.
#[tokio::test]
async fn api_tokens_sign_in_until_revoked() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let made = post(&app, "/api/tokens", ann.auth(), json!({"name": "deploy bot"})).await.expect(201).body;
    assert_eq!(made["name"], "deploy bot");
    assert!(made["created_ms"].as_i64().unwrap() > 0);
    let token = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("confab_"), "{token}");

    let listed = get(&app, "/api/tokens", ann.auth()).await.expect(200).body;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["name"], "deploy bot");
    assert!(listed[0].get("token").is_none(), "the secret is shown once: {listed:?}");

    let me = get(&app, "/api/me", As::Bearer(&token)).await.expect(200).body;
    assert_eq!(me["id"], ann.id.as_str());
    assert_eq!(me["via"], "token");
    let bearer = format!("Bearer {token}");
    let (mut bot, info) = signed_in_with(&app, &[("authorization", &bearer)]).await;
    assert_eq!(info.id, ann.id);
    assert!(!info.guest);

    delete(&app, &format!("/api/tokens/{id}"), ann.auth()).await.expect(204);
    assert_eq!(bot.expect_close().await, 4001);
    get(&app, "/api/me", As::Bearer(&token)).await.expect_error(401, "unauthenticated");
    assert_upgrade_refused(&app, &bearer, 401).await;
    delete(&app, &format!("/api/tokens/{id}"), ann.auth()).await.expect_error(404, "not_found");

    let bad = format!("confab_{}", "0".repeat(64));
    get(&app, "/api/me", As::Bearer(&bad)).await.expect_error(401, "unauthenticated");
    assert_upgrade_refused(&app, &format!("Bearer {bad}"), 401).await;
    // A bad token is refused even beside a good cookie.
    call(&app, Method::GET, "/api/me")
        .who(As::Bearer("confab_nope"))
        .header("cookie", &ann.cookie)
        .send()
        .await
        .expect_error(401, "unauthenticated");
}

/// The WebSocket upgrade with this Authorization header is answered `status`.
async fn assert_upgrade_refused(app: &TestApp, authorization: &str, status: u16) {
    match try_connect_with(app.addr.port(), &[("authorization", authorization)]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), status),
        Err(other) => panic!("expected an HTTP {status}, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// POST /api/rooms/{room}/messages with a token: 201 with the stored message (author id
/// as `user`), delivered to the room's sockets; the same client_id again is 200 with the
/// same message, never stored twice.
#[tokio::test]
async fn a_token_posts_a_message_once_per_client_id() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let (_, token) = make_token(&app, &ann, "bot").await;
    let (mut watcher, _) = guest(&app, "watcher").await;
    assert_eq!(try_join(&mut watcher, "lobby").await, "joined");

    let body = json!({"text": "deploy finished", "client_id": "deploy-1"});
    let stored =
        post(&app, "/api/rooms/lobby/messages", As::Bearer(&token), body.clone()).await.expect(201).body;
    assert_eq!(stored["room"], "lobby");
    assert_eq!(stored["seq"], 1);
    assert_eq!(stored["nick"], "ann");
    assert_eq!(stored["text"], "deploy finished");
    assert_eq!(stored["client_id"], "deploy-1");
    assert_eq!(stored["user"], ann.id.as_str());
    assert!(stored["ts"].as_i64().unwrap() > 0);
    let seen = watcher.recv_message().await;
    assert_eq!((seen.seq, seen.user.as_str(), seen.guest), (1, ann.id.as_str(), false));

    let again = post(&app, "/api/rooms/lobby/messages", As::Bearer(&token), body).await.expect(200).body;
    assert_eq!(again, stored, "the retry answers the original");
    let next = json!({"text": "and again", "client_id": "deploy-2"});
    let second = post(&app, "/api/rooms/lobby/messages", As::Bearer(&token), next).await.expect(201).body;
    assert_eq!(second["seq"], 2);
    assert_eq!(watcher.recv_message().await.seq, 2, "the retry was not delivered again");
    let history = get(&app, "/api/rooms/lobby/messages", As::Nobody).await.expect(200).body;
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["deploy finished", "and again"]);
}

/// Posting over HTTP draws on the account's send allowance (msg_burst, msg_rate), shared
/// by all its tokens: past it, 429 rate_limited with Retry-After; another account is not
/// affected.
#[tokio::test]
async fn posting_is_rate_limited_per_account() {
    let app = server(|c| {
        c.msg_burst = 2;
        c.msg_rate = 1;
    })
    .await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let (_, first) = make_token(&app, &ann, "one").await;
    let (_, second) = make_token(&app, &ann, "two").await;
    let (_, bobs) = make_token(&app, &bob, "bob").await;
    let (mut watcher, _) = guest(&app, "watcher").await;
    assert_eq!(try_join(&mut watcher, "lobby").await, "joined");

    let say = async |token: &str, id: &str| {
        let body = json!({"text": "tick", "client_id": id});
        post(&app, "/api/rooms/lobby/messages", As::Bearer(token), body).await
    };
    say(&first, "a1").await.expect(201);
    say(&first, "a2").await.expect(201);
    let limited = say(&first, "a3").await.expect_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    say(&second, "a4").await.expect_error(429, "rate_limited");
    say(&bobs, "b1").await.expect(201);
}

/// Posting over HTTP obeys the room: a private room the token's user is not in is 404
/// not_found, muted is 403 muted, banned is 403 banned.
#[tokio::test]
async fn posting_obeys_the_rooms_access() {
    let app = server(|_| {}).await;
    signup(&app, "admin").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let (_, token) = make_token(&app, &carol, "carol's bot").await;
    create_room(&app, &bob, "secret", "private").await;
    let say = |id: &str| {
        call(&app, Method::POST, "/api/rooms/secret/messages")
            .who(As::Bearer(&token))
            .json(json!({"text": "hello?", "client_id": id}))
    };
    say("c1").send().await.expect_error(404, "not_found");
    call(&app, Method::POST, "/api/rooms/nowhere/messages")
        .who(As::Bearer(&token))
        .json(json!({"text": "hello?", "client_id": "c0"}))
        .send()
        .await
        .expect_error(404, "not_found");

    moderate(&app, &bob, "secret", "invite", "carol").await.expect(204);
    moderate(&app, &bob, "secret", "mute", "carol").await.expect(204);
    say("c2").send().await.expect_error(403, "muted");
    moderate(&app, &bob, "secret", "unmute", "carol").await.expect(204);
    say("c3").send().await.expect(201);
    moderate(&app, &bob, "secret", "ban", "carol").await.expect(204);
    say("c4").send().await.expect_error(403, "banned");
}

// === Origin ===

/// A state-changing request without a Bearer token must carry this server's Origin: a
/// cookie (or anonymous) POST, PUT or DELETE without one, or from another site, is 403
/// bad_origin and changes nothing; with the right Origin it works; a Bearer request needs
/// none.
#[tokio::test]
async fn state_changing_requests_need_this_servers_origin() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let evil = Some("http://evil.example");
    let other_port = format!("http://127.0.0.1:{}", app.addr.port().wrapping_add(1));
    for origin in [None, evil, Some(other_port.as_str()), Some("null")] {
        call(&app, Method::POST, "/api/tokens")
            .who(ann.auth())
            .json(json!({"name": "csrf"}))
            .origin(origin)
            .send()
            .await
            .expect_error(403, "bad_origin");
        call(&app, Method::PUT, "/api/me")
            .who(ann.auth())
            .json(json!({"display_name": "pwned"}))
            .origin(origin)
            .send()
            .await
            .expect_error(403, "bad_origin");
        call(&app, Method::POST, "/api/auth/logout")
            .who(ann.auth())
            .origin(origin)
            .send()
            .await
            .expect_error(403, "bad_origin");
        call(&app, Method::POST, "/api/auth/signup")
            .json(json!({"username": "mallory", "password": PASSWORD}))
            .origin(origin)
            .send()
            .await
            .expect_error(403, "bad_origin");
    }
    let me = get(&app, "/api/me", ann.auth()).await.expect(200).body;
    assert_eq!(me["display_name"], "ann", "nothing changed, and the session is still signed in");
    assert!(get(&app, "/api/tokens", ann.auth()).await.expect(200).body.as_array().unwrap().is_empty());

    let (id, token) = make_token(&app, &ann, "legit").await;
    call(&app, Method::DELETE, &format!("/api/tokens/{id}"))
        .who(ann.auth())
        .origin(evil)
        .send()
        .await
        .expect_error(403, "bad_origin");
    // A Bearer request is not a browser's: no Origin needed.
    let by_token = call(&app, Method::POST, "/api/tokens")
        .who(As::Bearer(&token))
        .json(json!({"name": "more"}))
        .origin(None);
    by_token.send().await.expect(201);
    put(&app, "/api/me", ann.auth(), json!({"display_name": "Ann"})).await.expect(200);
}

// === Rooms over HTTP ===

/// POST /api/rooms (signed in) makes a room owned by its creator: 201 with its info; the
/// name taken is 409 room_exists; "dm-" names are reserved; anonymous is 401.
#[tokio::test]
async fn rooms_are_created_over_http() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let body = json!({"room": "plans", "visibility": "private", "topic": "Q3 planning"});
    let room = post(&app, "/api/rooms", bob.auth(), body.clone()).await.expect(201).body;
    assert_eq!(room["name"], "plans");
    assert_eq!(room["visibility"], "private");
    assert_eq!(room["topic"], "Q3 planning");
    assert_eq!(room["head"], 0);
    post(&app, "/api/rooms", bob.auth(), body.clone()).await.expect_error(409, "room_exists");
    post(&app, "/api/rooms", ann.auth(), json!({"room": "plans"})).await.expect_error(409, "room_exists");
    post(&app, "/api/rooms", ann.auth(), json!({"room": "dm-1-2"})).await.expect_error(400, "invalid_room");
    post(&app, "/api/rooms", ann.auth(), json!({"room": "Not Valid"}))
        .await
        .expect_error(400, "invalid_room");
    post(&app, "/api/rooms", As::Nobody, json!({"room": "open"})).await.expect_error(401, "unauthenticated");

    let members = get(&app, "/api/rooms/plans/members", bob.auth()).await.expect(200).body;
    assert_eq!(
        members,
        json!([{"username": "bob", "display_name": "bob", "role": "owner", "banned": false, "muted": false}])
    );
}

/// POST /api/dm opens the direct-message room of two accounts (the same one from either
/// side): "dm-<lo id>-<hi id>", dm, private. Both read it; a third user, a guest and the
/// members list see nothing (404).
#[tokio::test]
async fn direct_message_rooms_over_http() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    // ann is the admin (the first account): the DM is bob's and carol's.
    let room = post(&app, "/api/dm", bob.auth(), json!({"username": "carol"})).await.expect(200).body;
    let (b, c): (i64, i64) = (bob.id.parse().unwrap(), carol.id.parse().unwrap());
    let name = format!("dm-{}-{}", b.min(c), b.max(c));
    assert_eq!(room["name"], name.as_str());
    assert_eq!(room["dm"], true);
    assert_eq!(room["visibility"], "private");
    let back = post(&app, "/api/dm", carol.auth(), json!({"username": "bob"})).await.expect(200).body;
    assert_eq!(back["name"], name.as_str());
    post(&app, "/api/dm", bob.auth(), json!({"username": "nobody"})).await.expect_error(404, "not_found");

    let history = format!("/api/rooms/{name}/messages");
    get(&app, &history, bob.auth()).await.expect(200);
    get(&app, &history, carol.auth()).await.expect(200);
    get(&app, &history, As::Nobody).await.expect_error(404, "not_found");
    let stranger = signup(&app, "dave").await;
    get(&app, &history, stranger.auth()).await.expect_error(404, "not_found");
    get(&app, &format!("/api/rooms/{name}/members"), stranger.auth()).await.expect_error(404, "not_found");
    let listed = get(&app, "/api/rooms", stranger.auth()).await.expect(200).body;
    assert!(listed["rooms"].as_array().unwrap().iter().all(|r| r["name"] != name.as_str()));
    let listed = get(&app, "/api/rooms", ann.auth()).await.expect(200).body;
    assert!(
        listed["rooms"].as_array().unwrap().iter().any(|r| r["name"] == name.as_str()),
        "admins see every room"
    );
}

/// GET /api/rooms lists private rooms only to their members and admins; GET
/// /api/rooms/{room}/messages and /members are 404 not_found for a private room to a
/// non-member and to an anonymous caller, and for a room that does not exist.
#[tokio::test]
async fn private_rooms_are_hidden_from_the_directory_and_history() {
    let app = server(|_| {}).await;
    let admin = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    create_room(&app, &bob, "hideout", "private").await;
    create_room(&app, &bob, "square", "public").await;

    let names = |page: Value| -> BTreeSet<String> {
        page["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
    };
    let both = BTreeSet::from(["hideout".to_owned(), "square".to_owned()]);
    let public = BTreeSet::from(["square".to_owned()]);
    assert_eq!(names(get(&app, "/api/rooms", bob.auth()).await.expect(200).body), both);
    assert_eq!(names(get(&app, "/api/rooms", admin.auth()).await.expect(200).body), both);
    assert_eq!(names(get(&app, "/api/rooms", carol.auth()).await.expect(200).body), public);
    assert_eq!(names(get(&app, "/api/rooms", As::Nobody).await.expect(200).body), public);

    for path in ["/api/rooms/hideout/messages", "/api/rooms/hideout/members"] {
        get(&app, path, bob.auth()).await.expect(200);
        get(&app, path, admin.auth()).await.expect(200);
        get(&app, path, carol.auth()).await.expect_error(404, "not_found");
        get(&app, path, As::Nobody).await.expect_error(404, "not_found");
    }
    get(&app, "/api/rooms/square/messages", carol.auth()).await.expect(200);
    get(&app, "/api/rooms/nowhere/messages", bob.auth()).await.expect_error(404, "not_found");
    get(&app, "/api/rooms/nowhere/messages", As::Nobody).await.expect_error(404, "not_found");
}

/// The page of a private room renders with status 404 to a non-member (signed in or
/// not), 200 to a member.
#[tokio::test]
async fn a_private_rooms_page_is_not_found_to_non_members() {
    let _render = common::PAGE_RENDER.lock().await;
    let app = server(|_| {}).await;
    signup(&app, "admin").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    create_room(&app, &bob, "hideout", "private").await;
    let page = |who: Option<&str>| {
        let mut req = call(&app, Method::GET, "/r/hideout");
        if let Some(cookie) = who {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    assert_eq!(page(None).await.status, 404);
    assert_eq!(page(Some(&carol.cookie)).await.status, 404);
    assert_eq!(page(Some(&bob.cookie)).await.status, 200);
    moderate(&app, &bob, "hideout", "invite", "carol").await.expect(204);
    assert_eq!(page(Some(&carol.cookie)).await.status, 200, "an invited user is a member");
}

// === Admin ===

/// GET /api/admin/users is for admins only (else 403); POST /api/admin/users/{username}
/// changes a role, or deactivates: the user's sockets close with 4001 at once and their
/// cookies and tokens stop working, until reactivated.
#[tokio::test]
async fn admins_manage_users_and_deactivation_ends_all_access() {
    let app = server(|_| {}).await;
    let admin = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    get(&app, "/api/admin/users", bob.auth()).await.expect_error(403, "forbidden");
    post(&app, "/api/admin/users/ann", bob.auth(), json!({"active": false}))
        .await
        .expect_error(403, "forbidden");
    let users = get(&app, "/api/admin/users", admin.auth()).await.expect(200).body;
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2);
    let bob_row = users.iter().find(|u| u["username"] == "bob").unwrap();
    assert_eq!((bob_row["role"].as_str(), bob_row["active"].as_bool()), (Some("member"), Some(true)));

    post(&app, "/api/admin/users/bob", admin.auth(), json!({"role": "admin"})).await.expect(204);
    get(&app, "/api/admin/users", bob.auth()).await.expect(200);
    post(&app, "/api/admin/users/bob", admin.auth(), json!({"role": "member"})).await.expect(204);
    get(&app, "/api/admin/users", bob.auth()).await.expect_error(403, "forbidden");
    post(&app, "/api/admin/users/nobody", admin.auth(), json!({"active": false}))
        .await
        .expect_error(404, "not_found");

    let (_, token) = make_token(&app, &bob, "bot").await;
    let mut by_cookie = socket_of(&app, &bob).await;
    let bearer = format!("Bearer {token}");
    let (mut by_token, _) = signed_in_with(&app, &[("authorization", &bearer)]).await;
    post(&app, "/api/admin/users/bob", admin.auth(), json!({"active": false})).await.expect(204);
    assert_eq!(by_cookie.expect_close().await, 4001);
    assert_eq!(by_token.expect_close().await, 4001);
    get(&app, "/api/me", bob.auth()).await.expect_error(401, "unauthenticated");
    get(&app, "/api/me", As::Bearer(&token)).await.expect_error(401, "unauthenticated");
    login(&app, "bob", PASSWORD).await.expect_error(401, "bad_credentials");

    post(&app, "/api/admin/users/bob", admin.auth(), json!({"active": true})).await.expect(204);
    login(&app, "bob", PASSWORD).await.expect(200);
}

// === WebSocket: who a connection is ===

/// A socket signed in by cookie says `hello` without a nick and is welcomed as its
/// account (protocol 2, empty guest session); a nick in its hello is ignored.
#[tokio::test]
async fn a_signed_in_socket_is_its_account() {
    let app = server(|_| {}).await;
    let ann =
        signup_with(&app, json!({"username": "ann", "password": PASSWORD, "display_name": "Ann A."})).await;
    for hello in [json!({"type": "hello"}), json!({"type": "hello", "nick": "mallory"})] {
        let mut c = connect_with(app.addr.port(), &[("cookie", &ann.cookie)]).await;
        c.send(hello).await;
        match c.recv().await {
            ServerMsg::Welcome { session, nick, protocol, user: Some(user), limits, .. } => {
                assert_eq!(session, "");
                assert_eq!(nick, "Ann A.");
                assert_eq!(protocol, 2);
                assert_eq!(
                    user,
                    UserInfo {
                        id: ann.id.clone(),
                        username: Some("ann".into()),
                        display_name: "Ann A.".into(),
                        role: ServerRole::Admin,
                        guest: false,
                    }
                );
                assert!(limits.max_text_chars > 0);
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

/// A guest names itself in hello and is welcomed as a guest (id "g-…", role guest); a
/// hello with neither a nick nor a signed-in upgrade is unauthenticated.
#[tokio::test]
async fn a_guest_names_itself_and_a_bare_hello_is_unauthenticated() {
    let app = server(|_| {}).await;
    let mut c = app.client().await;
    c.send(json!({"type": "hello", "nick": "visitor"})).await;
    match c.recv().await {
        ServerMsg::Welcome { session, nick, protocol, user: Some(user), .. } => {
            assert!(!session.is_empty(), "a guest gets a session to resume");
            assert_eq!((nick.as_str(), protocol), ("visitor", 2));
            assert!(user.id.starts_with("g-"), "{user:?}");
            assert_eq!((user.role, user.guest, user.username), (ServerRole::Guest, true, None));
            assert_eq!(user.display_name, "visitor");
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    let mut bare = app.client().await;
    bare.send(json!({"type": "hello"})).await;
    bare.expect_error("unauthenticated").await;
}

/// A guest cannot take a registered username or display name, compared after NFKC, case
/// folding and the confusable skeleton: nick_taken. Other names are free.
#[tokio::test]
async fn guests_cannot_take_registered_names() {
    let app = server(|_| {}).await;
    signup_with(&app, json!({"username": "alice", "password": PASSWORD, "display_name": "Wonderland"})).await;
    let mut admitted = Vec::new();
    for nick in
        ["alice", "ALICE", "\u{430}lice", "ａｌｉｃｅ", "Alice", "wonderland", "WONDERLAND", "W0NDERLAND"]
    {
        let mut c = app.client().await;
        c.send(json!({"type": "hello", "nick": nick})).await;
        match c.recv().await {
            ServerMsg::Error { code, .. } if code.as_str() == "nick_taken" => {}
            other => admitted.push(format!("{nick:?} got {}", outcome_or_welcome(&other))),
        }
    }
    assert!(admitted.is_empty(), "guests took registered names: {admitted:?}");
    let (_, user) = guest(&app, "alicia").await;
    assert!(user.guest);
}

/// With guests off, a guest hello is unauthenticated (with or without a nick); signed-in
/// sockets still work.
#[tokio::test]
async fn with_guests_off_only_accounts_may_chat() {
    let app = server(|c| c.guests = Switch::Off).await;
    for hello in [json!({"type": "hello", "nick": "visitor"}), json!({"type": "hello"})] {
        let mut c = app.client().await;
        c.send(hello).await;
        c.expect_error("unauthenticated").await;
    }
    let ann = signup(&app, "ann").await;
    let mut c = socket_of(&app, &ann).await;
    assert_eq!(try_join(&mut c, "lobby").await, "joined");
}

/// Messages carry the author's id (`user`) and `guest: true` for guests; presence events
/// mark guests; `joined` lists the guests among its members and omits `visibility`, `role`
/// and `muted` in a plain public room.
#[tokio::test]
async fn messages_and_presence_say_who_is_a_guest() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let (mut visitor, visitor_info) = guest(&app, "visitor").await;
    assert_eq!(try_join(&mut visitor, "lobby").await, "joined");

    let mut tab = socket_of(&app, &ann).await;
    tab.send(json!({"type": "join", "room": "lobby", "ref": "j"})).await;
    let joined: Value = loop {
        let frame: Value = serde_json::from_str(&tab.recv_text().await).unwrap();
        if frame["type"] == "joined" {
            break frame;
        }
    };
    assert_eq!(joined["guests"], json!(["visitor"]), "{joined}");
    let members: BTreeSet<&str> =
        joined["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(members, BTreeSet::from(["ann", "visitor"]));
    for absent in ["visibility", "role", "muted"] {
        assert!(joined.get(absent).is_none(), "{absent} in a plain public room's joined: {joined}");
    }
    match visitor.recv().await {
        ServerMsg::Presence { nick, state: PresenceState::Joined, guest, .. } => {
            assert_eq!(nick, "ann");
            assert!(!guest, "ann is not a guest");
        }
        other => panic!("expected presence, got {other:?}"),
    }

    let (mut wanderer, _) = guest(&app, "wanderer").await;
    assert_eq!(try_join(&mut wanderer, "lobby").await, "joined");
    match tab.recv().await {
        ServerMsg::Presence { nick, state: PresenceState::Joined, guest, .. } => {
            assert_eq!(nick, "wanderer");
            assert!(guest, "a guest's presence says so");
        }
        other => panic!("expected presence, got {other:?}"),
    }

    let from_guest = visitor.say_acked("lobby", "hi all", "v1").await;
    assert_eq!((from_guest.user.as_str(), from_guest.guest), (visitor_info.id.as_str(), true));
    let seen = tab.recv_message().await;
    assert_eq!((seen.user, seen.guest, seen.nick.as_str()), (visitor_info.id.clone(), true, "visitor"));

    let from_ann = tab.say_acked("lobby", "hello", "a1").await;
    assert_eq!((from_ann.user.as_str(), from_ann.guest), (ann.id.as_str(), false));
    let seen = visitor.recv_message().await;
    assert_eq!((seen.user.as_str(), seen.guest), (ann.id.as_str(), false));
}

/// A new guest who takes an old guest's nick is a different user: a different id on
/// welcome and on its messages (so "mine" is decided by id, not by nick).
#[tokio::test]
async fn a_new_guest_with_an_old_guests_nick_is_someone_else() {
    let app = server(|c| c.session_grace_secs = 0).await;
    let (mut old, old_info) = guest(&app, "zed").await;
    assert_eq!(try_join(&mut old, "lobby").await, "joined");
    let first = old.say_acked("lobby", "first zed", "z1").await;
    assert_eq!(first.user, old_info.id);
    old.close_and_wait().await;

    let (mut new, new_info) = guest(&app, "zed").await;
    assert_ne!(new_info.id, old_info.id);
    let (_, replay) = new.join("lobby", None, 1).await;
    assert_eq!(replay[0].user, old_info.id, "the old zed's message is not the new zed's");
    let second = new.say_acked("lobby", "second zed", "z1").await;
    assert_eq!(second.user, new_info.id);
    assert_eq!(second.seq, 2, "the same client_id from someone else is a new message");
    let history = get(&app, "/api/rooms/lobby/messages", As::Nobody).await.expect(200).body;
    let authors: Vec<(&str, &str)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["nick"].as_str().unwrap(), m["user"].as_str().unwrap()))
        .collect();
    assert_eq!(authors, [("zed", old_info.id.as_str()), ("zed", new_info.id.as_str())]);
}

// === WebSocket: rooms and moderation ===

/// create_room: the creator owns the room and is joined (the reply is `joined`, with its
/// visibility, topic and role); guests may make public rooms only (private: forbidden);
/// "dm-" names are invalid_room; a taken name is room_exists.
#[tokio::test]
async fn create_room_makes_the_creator_owner_and_joins_it() {
    let app = server(|_| {}).await;
    let bob = signup(&app, "bob").await;
    let mut c = socket_of(&app, &bob).await;
    let frame = json!({"type": "create_room", "room": "den", "visibility": "private", "topic": "bob's den"});
    match ask(&mut c, frame.clone(), "r1").await {
        ServerMsg::Joined { room, visibility, topic, role, muted, .. } => {
            assert_eq!(room, "den");
            assert_eq!(visibility, Visibility::Private);
            assert_eq!(topic, "bob's den");
            assert_eq!(role, Some(RoomRole::Owner));
            assert!(!muted);
        }
        other => panic!("expected joined, got {other:?}"),
    }
    assert_eq!(outcome(&ask(&mut c, frame, "r2").await), "room_exists");
    assert_eq!(
        outcome(&ask(&mut c, json!({"type": "create_room", "room": "dm-1-2"}), "r3").await),
        "invalid_room"
    );

    let (mut visitor, _) = guest(&app, "visitor").await;
    let private = json!({"type": "create_room", "room": "guest-den", "visibility": "private"});
    assert_eq!(outcome(&ask(&mut visitor, private, "g1").await), "forbidden");
    let public = json!({"type": "create_room", "room": "guest-den"});
    match ask(&mut visitor, public, "g2").await {
        ServerMsg::Joined { room, visibility, role, .. } => {
            assert_eq!(
                (room.as_str(), visibility, role),
                ("guest-den", Visibility::Public, None),
                "a guest owns nothing"
            );
        }
        other => panic!("expected joined, got {other:?}"),
    }
    assert_eq!(
        outcome(&ask(&mut c, json!({"type": "create_room", "room": "guest-den"}), "r4").await),
        "room_exists"
    );
}

/// One moderation case: `actor` does `action` to `target` in the room; the expected
/// outcome is "ack", "forbidden" or "not_found".
struct Case<'a> {
    actor: &'a User,
    action: &'a str,
    target: &'a str,
    role: Option<&'a str>,
    expect: &'a str,
}

/// Carries a case out over the WebSocket (a fresh socket of the actor) and returns the
/// outcome.
async fn moderate_ws(app: &TestApp, room: &str, case: &Case<'_>, reference: &str) -> String {
    let mut c = socket_of(app, case.actor).await;
    let frame = match case.role {
        Some(role) => json!({"type": "set_role", "room": room, "username": case.target, "role": role}),
        None => json!({"type": case.action, "room": room, "username": case.target}),
    };
    outcome(&ask(&mut c, frame, reference).await)
}

/// Carries a case out over HTTP and returns the outcome, checking the status matches it.
async fn moderate_http(app: &TestApp, room: &str, case: &Case<'_>) -> String {
    let mut body = json!({"action": case.action, "username": case.target});
    if let Some(role) = case.role {
        body["role"] = json!(role);
    }
    let reply = post(app, &format!("/api/rooms/{room}/moderation"), case.actor.auth(), body).await;
    match reply.status.as_u16() {
        204 => "ack".into(),
        status => {
            let code = reply.body["code"].as_str().unwrap_or("?").to_owned();
            let expected = match code.as_str() {
                "forbidden" => 403,
                "not_found" => 404,
                _ => 0,
            };
            assert_eq!(status, expected, "{code} with status {status}");
            code
        }
    }
}

/// The moderation matrix, role × action × path (WebSocket and HTTP): members may not
/// moderate; moderators act on members but not on their equals or above, and set no
/// roles; owners act on moderators and set roles, but not on admins; admins do anything.
/// Each allowed change is undone by the next case, so both paths start from the same
/// standing; the members list confirms it at the end.
#[tokio::test]
async fn the_moderation_matrix_on_both_paths() {
    let app = server(|_| {}).await;
    let root = signup(&app, "root").await;
    let olga = signup(&app, "olga").await;
    let mia = signup(&app, "mia").await;
    signup(&app, "max").await;
    let uma = signup(&app, "uma").await;
    signup(&app, "ulf").await;
    create_room(&app, &olga, "hall", "public").await;
    for moderator in ["mia", "max"] {
        let body = json!({"action": "role", "username": moderator, "role": "moderator"});
        post(&app, "/api/rooms/hall/moderation", olga.auth(), body).await.expect(204);
    }
    let case = |actor, action, target, expect| Case { actor, action, target, role: None, expect };
    let role = |actor, target, role, expect| Case { actor, action: "role", target, role: Some(role), expect };
    let cases = [
        // A plain member moderates nobody.
        case(&uma, "kick", "ulf", "forbidden"),
        case(&uma, "ban", "ulf", "forbidden"),
        case(&uma, "mute", "ulf", "forbidden"),
        case(&uma, "invite", "ulf", "forbidden"),
        role(&uma, "ulf", "moderator", "forbidden"),
        // Moderators act on members...
        case(&mia, "kick", "uma", "ack"),
        case(&mia, "mute", "uma", "ack"),
        case(&mia, "unmute", "uma", "ack"),
        case(&mia, "ban", "uma", "ack"),
        case(&mia, "unban", "uma", "ack"),
        case(&mia, "invite", "uma", "ack"),
        // ...not on their equals or above, and give no roles.
        case(&mia, "kick", "max", "forbidden"),
        case(&mia, "mute", "max", "forbidden"),
        case(&mia, "ban", "olga", "forbidden"),
        case(&mia, "kick", "root", "forbidden"),
        role(&mia, "uma", "moderator", "forbidden"),
        // Owners act on moderators and give roles; not on admins.
        case(&olga, "mute", "mia", "ack"),
        case(&olga, "unmute", "mia", "ack"),
        case(&olga, "kick", "max", "ack"),
        role(&olga, "uma", "moderator", "ack"),
        role(&olga, "uma", "member", "ack"),
        case(&olga, "kick", "root", "forbidden"),
        case(&olga, "mute", "root", "forbidden"),
        case(&olga, "kick", "nobody-here", "not_found"),
        // Admins do anything anywhere.
        case(&root, "mute", "olga", "ack"),
        case(&root, "unmute", "olga", "ack"),
        case(&root, "kick", "olga", "ack"),
        role(&root, "ulf", "moderator", "ack"),
        role(&root, "ulf", "member", "ack"),
    ];
    for (i, c) in cases.iter().enumerate() {
        let what = format!("{} {} {} {:?}", c.actor.username, c.action, c.target, c.role);
        assert_eq!(moderate_ws(&app, "hall", c, &format!("m{i}")).await, c.expect, "WebSocket: {what}");
    }
    for c in &cases {
        let what = format!("{} {} {} {:?}", c.actor.username, c.action, c.target, c.role);
        assert_eq!(moderate_http(&app, "hall", c).await, c.expect, "HTTP: {what}");
    }

    let members = get(&app, "/api/rooms/hall/members", olga.auth()).await.expect(200).body;
    let standing: BTreeSet<(String, String, bool, bool)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap().to_owned();
            (s("username"), s("role"), m["banned"].as_bool().unwrap(), m["muted"].as_bool().unwrap())
        })
        .collect();
    let expected = BTreeSet::from([
        ("max".to_owned(), "moderator".to_owned(), false, false),
        ("mia".to_owned(), "moderator".to_owned(), false, false),
        ("olga".to_owned(), "owner".to_owned(), false, false),
    ]);
    assert_eq!(standing, expected);
}

/// A private room: to a non-member (account or guest) joining is not_found, its history
/// 404, and moderating it not_found; after an invite (the invitee's sockets hear
/// `invited`) the invitee joins and reads. Admins join it without an invite.
#[tokio::test]
async fn a_private_room_opens_to_the_invited_only() {
    let app = server(|_| {}).await;
    let admin = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let mut owner = socket_of(&app, &bob).await;
    let create = json!({"type": "create_room", "room": "vault", "visibility": "private"});
    assert_eq!(outcome(&ask(&mut owner, create, "c").await), "joined");
    owner.say_acked("vault", "the combination is 1234", "s1").await;

    let mut outsider = socket_of(&app, &carol).await;
    assert_eq!(try_join(&mut outsider, "vault").await, "not_found");
    let kick = json!({"type": "kick", "room": "vault", "username": "bob"});
    assert_eq!(outcome(&ask(&mut outsider, kick, "k").await), "not_found");
    let invite_self = json!({"type": "invite", "room": "vault", "username": "carol"});
    assert_eq!(outcome(&ask(&mut outsider, invite_self, "i").await), "not_found");
    get(&app, "/api/rooms/vault/messages", carol.auth()).await.expect_error(404, "not_found");
    moderate(&app, &carol, "vault", "kick", "bob").await.expect_error(404, "not_found");
    let (mut visitor, _) = guest(&app, "visitor").await;
    assert_eq!(try_join(&mut visitor, "vault").await, "not_found");

    let invite = json!({"type": "invite", "room": "vault", "username": "carol"});
    assert!(
        matches!(ask(&mut owner, invite, "inv").await, ServerMsg::Ack { reference: Some(r) } if r == "inv")
    );
    match outsider.recv_until(|m| matches!(m, ServerMsg::Invited { .. })).await {
        ServerMsg::Invited { room, by } => assert_eq!((room.as_str(), by.as_str()), ("vault", "bob")),
        _ => unreachable!(),
    }
    let (joined, replay) = outsider.join("vault", None, 1).await;
    assert!(
        matches!(
            joined,
            ServerMsg::Joined { visibility: Visibility::Private, role: Some(RoomRole::Member), .. }
        ),
        "{joined:?}"
    );
    assert_eq!(replay[0].text, "the combination is 1234");
    let history = get(&app, "/api/rooms/vault/messages", carol.auth()).await.expect(200).body;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);

    let mut admin_socket = socket_of(&app, &admin).await;
    assert_eq!(try_join(&mut admin_socket, "vault").await, "joined", "admins are in every room");
}

/// A ban removes the user's sockets from the room at once (they hear `kicked` with
/// banned); their new connections cannot rejoin (banned) until unbanned.
#[tokio::test]
async fn a_banned_user_stays_out_until_unbanned() {
    let app = server(|_| {}).await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let (mut owner, mut target) = owner_and_member(&app, &bob, &carol, "arena").await;
    owner.recv_until(|m| matches!(m, ServerMsg::Presence { nick, state: PresenceState::Joined, .. } if nick == "carol")).await;
    // The owner acts from another tab, so this one sees the room's events in order.
    let mut desk = socket_of(&app, &bob).await;

    let ban = json!({"type": "ban", "room": "arena", "username": "carol"});
    assert_eq!(outcome(&ask(&mut desk, ban, "b").await), "ack");
    match target.recv_until(|m| matches!(m, ServerMsg::Kicked { .. })).await {
        ServerMsg::Kicked { room, by, banned } => {
            assert_eq!((room.as_str(), by.as_str(), banned), ("arena", "bob", true))
        }
        _ => unreachable!(),
    }
    owner
        .recv_until(
            |m| matches!(m, ServerMsg::Presence { nick, state: PresenceState::Left, .. } if nick == "carol"),
        )
        .await;
    target.say("arena", "let me back", "x1").await;
    assert!(
        matches!(target.expect_error("not_joined").await, ServerMsg::Error { client_id: Some(id), .. } if id == "x1")
    );
    assert_eq!(try_join(&mut target, "arena").await, "banned");
    let mut fresh = socket_of(&app, &carol).await;
    assert_eq!(try_join(&mut fresh, "arena").await, "banned");

    let unban = json!({"type": "unban", "room": "arena", "username": "carol"});
    assert_eq!(outcome(&ask(&mut desk, unban, "u").await), "ack");
    let mut after = socket_of(&app, &carol).await;
    assert_eq!(try_join(&mut after, "arena").await, "joined");
}

/// A kick removes the user's sockets from the room at once: they hear `kicked`, the
/// others see them leave, and their next send there is not_joined. They may rejoin a
/// public room; a private one only when invited again.
#[tokio::test]
async fn a_kicked_user_may_rejoin_a_public_room_but_not_a_private_one() {
    let app = server(|_| {}).await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let mut owner = socket_of(&app, &bob).await;
    let mut target = socket_of(&app, &carol).await;
    assert_eq!(
        outcome(&ask(&mut owner, json!({"type": "create_room", "room": "arena"}), "c1").await),
        "joined"
    );
    let private = json!({"type": "create_room", "room": "vault", "visibility": "private"});
    assert_eq!(outcome(&ask(&mut owner, private, "c2").await), "joined");
    let invite = json!({"type": "invite", "room": "vault", "username": "carol"});
    assert_eq!(outcome(&ask(&mut owner, invite.clone(), "i1").await), "ack");
    // The owner acts from another tab, so this one sees the rooms' events in order.
    let mut desk = socket_of(&app, &bob).await;

    for room in ["arena", "vault"] {
        assert_eq!(try_join(&mut target, room).await, "joined");
        owner.recv_until(|m| matches!(m, ServerMsg::Presence { room: r, nick, state: PresenceState::Joined, .. } if r == room && nick == "carol")).await;
        let kick = json!({"type": "kick", "room": room, "username": "carol"});
        assert_eq!(outcome(&ask(&mut desk, kick, &format!("k-{room}")).await), "ack");
        match target.recv_until(|m| matches!(m, ServerMsg::Kicked { .. })).await {
            ServerMsg::Kicked { room: r, by, banned } => {
                assert_eq!((r.as_str(), by.as_str(), banned), (room, "bob", false))
            }
            _ => unreachable!(),
        }
        owner.recv_until(|m| matches!(m, ServerMsg::Presence { room: r, nick, state: PresenceState::Left, .. } if r == room && nick == "carol")).await;
        target.say(room, "still here?", &format!("s-{room}")).await;
        target.expect_error("not_joined").await;
    }
    assert_eq!(try_join(&mut target, "arena").await, "joined", "back in the public room");
    assert_eq!(try_join(&mut target, "vault").await, "not_found", "a private room needs a new invite");
    assert_eq!(outcome(&ask(&mut desk, invite, "i2").await), "ack");
    target.recv_until(|m| matches!(m, ServerMsg::Invited { room, .. } if room == "vault")).await;
    assert_eq!(try_join(&mut target, "vault").await, "joined");
}

/// A muted user still reads, but `send` is refused with muted (and its client_id); the
/// room hears member_update; `joined` says muted; unmuted, they send again.
#[tokio::test]
async fn a_muted_user_reads_but_cannot_send() {
    let app = server(|_| {}).await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let (mut owner, mut target) = owner_and_member(&app, &bob, &carol, "arena").await;

    let mute = json!({"type": "mute", "room": "arena", "username": "carol"});
    assert_eq!(outcome(&ask(&mut owner, mute, "m").await), "ack");
    match target.recv_until(|m| matches!(m, ServerMsg::MemberUpdate { .. })).await {
        ServerMsg::MemberUpdate { room, username, muted, .. } => {
            assert_eq!((room.as_str(), username.as_str(), muted), ("arena", "carol", Some(true)))
        }
        _ => unreachable!(),
    }
    target.say("arena", "can you hear me?", "q1").await;
    match target.expect_error("muted").await {
        ServerMsg::Error { client_id, .. } => assert_eq!(client_id.as_deref(), Some("q1")),
        _ => unreachable!(),
    }
    owner.say("arena", "quiet please", "o1").await;
    assert_eq!(target.recv_message().await.text, "quiet please", "a muted user still reads");
    let mut other_tab = socket_of(&app, &carol).await;
    match ask(&mut other_tab, json!({"type": "join", "room": "arena"}), "j").await {
        ServerMsg::Joined { muted, .. } => assert!(muted, "joined says muted"),
        other => panic!("expected joined, got {other:?}"),
    }

    let unmute = json!({"type": "unmute", "room": "arena", "username": "carol"});
    assert_eq!(outcome(&ask(&mut owner, unmute, "u").await), "ack");
    target.recv_until(|m| matches!(m, ServerMsg::MemberUpdate { muted: Some(false), .. })).await;
    assert_eq!(target.say_acked("arena", "thanks", "q2").await.text, "thanks");
}

/// open_dm: the opener is joined to the DM room (dm, private) and the other user's
/// sockets hear `invited`; both may join, a third user gets not_found.
#[tokio::test]
async fn a_direct_message_room_is_for_its_two_people() {
    let app = server(|_| {}).await;
    signup(&app, "admin").await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let dave = signup(&app, "dave").await;
    let mut callee = socket_of(&app, &carol).await;
    let mut caller = socket_of(&app, &bob).await;
    let name = match ask(&mut caller, json!({"type": "open_dm", "username": "carol"}), "dm").await {
        ServerMsg::Joined { room, dm, visibility, .. } => {
            assert!(dm);
            assert_eq!(visibility, Visibility::Private);
            room
        }
        other => panic!("expected joined, got {other:?}"),
    };
    let (b, c): (i64, i64) = (bob.id.parse().unwrap(), carol.id.parse().unwrap());
    assert_eq!(name, format!("dm-{}-{}", b.min(c), b.max(c)));
    match callee.recv_until(|m| matches!(m, ServerMsg::Invited { .. })).await {
        ServerMsg::Invited { room, by } => assert_eq!((room.as_str(), by.as_str()), (name.as_str(), "bob")),
        _ => unreachable!(),
    }
    assert_eq!(try_join(&mut callee, &name).await, "joined");
    caller.say(&name, "psst", "p1").await;
    assert_eq!(callee.recv_message().await.text, "psst");

    let mut third = socket_of(&app, &dave).await;
    assert_eq!(try_join(&mut third, &name).await, "not_found");
    get(&app, &format!("/api/rooms/{name}/messages"), dave.auth()).await.expect_error(404, "not_found");
}

/// set_topic: owners (and moderators) set it, the room hears `topic`, later joins carry
/// it; a member is forbidden.
#[tokio::test]
async fn owners_set_the_topic_and_members_may_not() {
    let app = server(|_| {}).await;
    let bob = signup(&app, "bob").await;
    let carol = signup(&app, "carol").await;
    let (mut owner, mut member) = owner_and_member(&app, &bob, &carol, "forum").await;

    let set = json!({"type": "set_topic", "room": "forum", "topic": "Release day"});
    assert_eq!(outcome(&ask(&mut owner, set, "t1").await), "ack");
    match member.recv_until(|m| matches!(m, ServerMsg::Topic { .. })).await {
        ServerMsg::Topic { room, topic, by } => {
            assert_eq!((room.as_str(), topic.as_str(), by.as_str()), ("forum", "Release day", "bob"))
        }
        _ => unreachable!(),
    }
    let hijack = json!({"type": "set_topic", "room": "forum", "topic": "Free crypto"});
    assert_eq!(outcome(&ask(&mut member, hijack, "t2").await), "forbidden");
    let (mut visitor, _) = guest(&app, "visitor").await;
    match ask(&mut visitor, json!({"type": "join", "room": "forum"}), "j").await {
        ServerMsg::Joined { topic, .. } => assert_eq!(topic, "Release day"),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// Two sockets of one account share one send allowance: with a burst of 5 at 1 a second,
/// 5 sends from tab A (stored) leave tab B rate_limited. Someone else is not affected.
#[tokio::test]
async fn an_accounts_sockets_share_one_send_allowance() {
    let app = server(|c| {
        c.msg_burst = 5;
        c.msg_rate = 1;
    })
    .await;
    let ann = signup(&app, "ann").await;
    let mut a = socket_of(&app, &ann).await;
    let mut b = socket_of(&app, &ann).await;
    let (mut visitor, _) = guest(&app, "visitor").await;
    for c in [&mut a, &mut b, &mut visitor] {
        assert_eq!(try_join(c, "lobby").await, "joined");
    }
    // Each socket has its own reader: B's send is sent only once A's five were taken.
    for i in 1..=5 {
        a.say("lobby", "spam", &format!("a{i}")).await;
    }
    let mine = (1..=5).map(|i| format!("a{i}")).collect::<BTreeSet<_>>();
    let mut acked = BTreeSet::new();
    while acked.len() < 5 {
        let m = a.recv_message().await;
        assert!(mine.contains(&m.client_id), "{m:?}");
        assert_eq!(m.user, ann.id);
        acked.insert(m.client_id);
    }
    b.say("lobby", "one more", "b1").await;
    match b.recv_until(|m| matches!(m, ServerMsg::Error { .. })).await {
        ServerMsg::Error { code, client_id, retry_after_ms, .. } => {
            assert_eq!(code.as_str(), "rate_limited");
            assert_eq!(client_id.as_deref(), Some("b1"));
            assert!(retry_after_ms.is_some_and(|ms| ms > 0));
        }
        _ => unreachable!(),
    }
    let theirs = visitor.say_acked_skipping("lobby", "not me", "v1").await;
    assert!(theirs.user.starts_with("g-"), "a guest has its own allowance: {theirs:?}");
}

// === The admin command line ===

/// Runs `confab <args>` with only `env` set; `stdin` is written to it. Asserts success
/// and returns standard output.
async fn confab_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("in time")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab {args:?} failed: {stdout} {stderr}");
    stdout
}

fn db_arg(db: &Path) -> &str {
    db.to_str().unwrap()
}

/// `confab admin create-user` on a running server's database makes an account the
/// server sees at once: it signs in over HTTP (password from CONFAB_PASSWORD, or stdin's
/// first line; `--admin` for an admin), and closed sign-up is now closed.
#[tokio::test]
async fn admin_cli_creates_users_on_a_running_servers_database() {
    let app = server(|c| c.signup = SignupMode::Closed).await;
    let db = db_arg(&app.db);
    let out = confab_cli(
        &["--db", db, "admin", "create-user", "--username", "Carol", "--display-name", "Carol C"],
        &[("CONFAB_PASSWORD", PASSWORD)],
        None,
    )
    .await;
    assert!(out.contains("carol"), "{out}");
    let carol = login(&app, "carol", PASSWORD).await.expect(200).body;
    assert_eq!(
        (carol["username"].as_str(), carol["display_name"].as_str()),
        (Some("carol"), Some("Carol C"))
    );
    assert_eq!(carol["role"], "admin", "the first account of the server is its admin");

    let dave_password = "dave's own long passphrase";
    confab_cli(
        &["admin", "create-user", "--username", "dave"],
        &[("CONFAB_DB", db)],
        Some(&format!("{dave_password}\n")),
    )
    .await;
    assert_eq!(login(&app, "dave", dave_password).await.expect(200).body["role"], "member");
    confab_cli(
        &["admin", "create-user", "--username", "erin", "--admin", "--db", db],
        &[("CONFAB_PASSWORD", PASSWORD)],
        None,
    )
    .await;
    assert_eq!(login(&app, "erin", PASSWORD).await.expect(200).body["role"], "admin");

    let body = json!({"username": "frank", "password": PASSWORD});
    post(&app, "/api/auth/signup", As::Nobody, body).await.expect_error(403, "signup_closed");
    let mut c = app.client().await;
    c.send(json!({"type": "hello", "nick": "Carol C"})).await;
    c.expect_error("nick_taken").await;
}

/// `confab admin reset-password` ends every session of the account (its cookies are no
/// longer signed in); the new password signs in, the old one does not.
#[tokio::test]
async fn admin_cli_reset_password_ends_the_accounts_sessions() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let other = new_session(&app, "ann").await;
    let mut tab = socket(&app, &ann.cookie).await;
    let new_password = "reset by the admin today";
    confab_cli(
        &["--db", db_arg(&app.db), "admin", "reset-password", "--username", "ann"],
        &[],
        Some(&format!("{new_password}\n")),
    )
    .await;
    get(&app, "/api/me", ann.auth()).await.expect_error(401, "unauthenticated");
    get(&app, "/api/me", As::Cookie(&other)).await.expect_error(401, "unauthenticated");
    login(&app, "ann", PASSWORD).await.expect_error(401, "bad_credentials");
    login(&app, "ann", new_password).await.expect(200);
    // Another process ended the session: the server's periodic check (run here instead
    // of waiting for its tick) closes the socket that signed in with it.
    app.hub.auth.revalidate().await;
    assert_eq!(tab.expect_close().await, 4001);
}

/// `confab admin invite` prints a code on its first line that signs up in invite mode,
/// as many times as `--uses` says.
#[tokio::test]
async fn admin_cli_invite_prints_a_code_that_signs_up() {
    let app = server(|c| c.signup = SignupMode::Invite).await;
    signup(&app, "ann").await;
    let out = confab_cli(
        &["admin", "invite", "--uses", "1", "--expires-hours", "2"],
        &[("CONFAB_DB", db_arg(&app.db))],
        None,
    )
    .await;
    let code = out.lines().next().unwrap().trim();
    assert!(!code.is_empty() && !code.contains(' '), "{out}");
    let body = |name: &str| json!({"username": name, "password": PASSWORD, "invite": code});
    assert_eq!(
        post(&app, "/api/auth/signup", As::Nobody, body("bob")).await.expect(201).body["role"],
        "member"
    );
    post(&app, "/api/auth/signup", As::Nobody, body("carol")).await.expect_error(403, "invite_required");
}

// --- Found in review: each reproduced here first ---

/// A room owner's invites are bounded (1-10 sign-ups, at most a week): any member can own
/// a room, so an unlimited, never-expiring invite would make invite-only sign-up open.
/// Admins' are not.
#[tokio::test]
async fn a_room_owners_invites_are_bounded_and_an_admins_are_not() {
    let app = server(|_| {}).await;
    let admin = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    create_room(&app, &bob, "bobs-room", "public").await;
    for body in
        [json!({"uses": 0}), json!({"uses": 11}), json!({"expires_hours": 0}), json!({"expires_hours": 169})]
    {
        post(&app, "/api/invites", bob.auth(), body).await.expect_error(403, "forbidden");
    }
    post(&app, "/api/invites", bob.auth(), json!({"uses": 10, "expires_hours": 168})).await.expect(201);
    let unlimited =
        post(&app, "/api/invites", admin.auth(), json!({"uses": 0, "expires_hours": 0})).await.expect(201);
    assert!(unlimited.body.get("uses_left").is_none() && unlimited.body.get("expires_ms").is_none());
}

/// An admin made member loses admin powers at once on the sockets already open: they are
/// closed with 4002 and reconnect with the new role.
#[tokio::test]
async fn a_demoted_admin_s_open_sockets_reconnect_with_the_new_role() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    post(&app, "/api/admin/users/bob", ann.auth(), json!({"role": "admin"})).await.expect(204);
    let (mut tab, info) = signed_in_with(&app, &[("cookie", &bob.cookie)]).await;
    assert_eq!(info.role, ServerRole::Admin);
    post(&app, "/api/admin/users/bob", ann.auth(), json!({"role": "member"})).await.expect(204);
    assert_eq!(tab.expect_close().await, 4002);
    let (_, info) = signed_in_with(&app, &[("cookie", &bob.cookie)]).await;
    assert_eq!(info.role, ServerRole::Member);
}

/// A socket opened with a cookie is closed when the session ends even if it never said
/// hello (it must not wait out the revocation and then use the sign-in).
#[tokio::test]
async fn a_socket_that_has_not_said_hello_is_closed_when_its_session_ends() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let mut waiting = connect_with(app.addr.port(), &[("cookie", &ann.cookie)]).await;
    post(&app, "/api/auth/logout", ann.auth(), json!({})).await.expect(204);
    assert_eq!(waiting.expect_close().await, 4001);
}

/// An account cannot take a name a guest is chatting under (sign-up or rename): the
/// guest would otherwise be shown, and moderated, as someone else.
#[tokio::test]
async fn an_account_cannot_take_a_live_guests_name() {
    let app = server(|_| {}).await;
    let _ann = signup(&app, "ann").await;
    let (_visitor, _) = guest(&app, "Visitor").await;
    post(&app, "/api/auth/signup", As::Nobody, json!({"username": "visitor", "password": PASSWORD}))
        .await
        .expect_error(409, "nick_taken");
    post(
        &app,
        "/api/auth/signup",
        As::Nobody,
        json!({"username": "vis", "password": PASSWORD, "display_name": "VISITOR"}),
    )
    .await
    .expect_error(409, "nick_taken");
    let cy = signup(&app, "cy").await;
    put(&app, "/api/me", cy.auth(), json!({"display_name": "visitor"})).await.expect_error(409, "nick_taken");
}

/// A banned account reads a public room no more than it joins it: history over the
/// socket and HTTP is `banned` / 403.
#[tokio::test]
async fn a_banned_account_cannot_read_a_public_room() {
    let app = server(|_| {}).await;
    let ann = signup(&app, "ann").await;
    let bob = signup(&app, "bob").await;
    create_room(&app, &ann, "town", "public").await;
    moderate(&app, &ann, "town", "ban", "bob").await.expect(204);
    get(&app, "/api/rooms/town/messages", bob.auth()).await.expect_error(403, "banned");
}

/// With guests off, a room's settings page is for signed-in people only: anyone else is
/// sent to sign in (the redirect is followed here), and sees no member list.
#[tokio::test]
async fn with_guests_off_a_rooms_settings_page_asks_to_sign_in() {
    let app = server(|c| c.guests = Switch::Off).await;
    let ann = signup(&app, "ann").await;
    create_room(&app, &ann, "town", "public").await;
    let anonymous = get(&app, "/r/town/settings", As::Nobody).await;
    let page = anonymous.body.as_str().unwrap_or_default();
    assert!(page.contains("Sign in to Confab") && !page.contains("data-member"), "{page}");
    let signed_in = get(&app, "/r/town/settings", ann.auth()).await.expect(200);
    assert!(signed_in.body.as_str().unwrap_or_default().contains("data-member=\"ann\""));
}
