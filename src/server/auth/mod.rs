//! Who a request is: accounts, sign-up and sign-in, sessions (the `confab_session`
//! cookie), API tokens (`Authorization: Bearer`) and invites.
//!
//! Every secret handed out is 256 random bits, stored as its SHA-256 (see `token`);
//! passwords are Argon2id PHC strings (see `password`). The live connections of each
//! account are tracked so that revoking a session, a token or an account closes its
//! sockets at once (close code 4001).

pub mod password;
pub mod token;

use super::{
    config::{Config, SignupMode},
    outbound::{CloseReason, ConnHandle},
    store::accounts::{
        Account, AccountError, AccountStore, InviteRow, InviteUse, NewAccount, SessionRow, TokenRow, UserId,
    },
    unix_ms,
};
use crate::protocol::{ErrorCode, Nick, ServerRole, UserInfo, Username};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use password::{Hasher, WeakPassword, check_password};
use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

/// The session cookie's name.
pub const COOKIE: &str = "confab_session";
/// A session unused this long has expired (and its cookie's Max-Age).
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 24 * 3600);
/// `last_seen` is written at most this often per session (a write per request would
/// make every page view a database write).
const TOUCH_EVERY_MS: i64 = 60_000;
/// Longest API token name and user agent kept, in characters.
const MAX_LABEL_CHARS: usize = 100;
/// API tokens one account may hold.
pub const MAX_TOKENS: usize = 50;
/// Sessions listed per account at most (oldest beyond it are not shown).
const MAX_SESSIONS_LISTED: usize = 200;

/// A connection or request's identity, as every authorisation check sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The wire id (`UserInfo::id`): the account id in decimal, or `g-…` for a guest.
    pub id: Arc<str>,
    pub account: Option<(UserId, Username)>,
    pub nick: Nick,
    pub role: ServerRole,
}

impl Identity {
    pub fn of_account(account: &Account) -> Self {
        // A stored display name was validated when it was set.
        let nick = Nick::parse(&account.display_name)
            .unwrap_or_else(|_| Nick::parse(account.username.as_str()).expect("a username is a valid nick"));
        Identity {
            id: Arc::from(account.id.to_string()),
            account: Some((account.id, account.username.clone())),
            nick,
            role: account.role,
        }
    }

    pub fn guest(public_id: &str, nick: Nick) -> Self {
        Identity { id: Arc::from(format!("g-{public_id}")), account: None, nick, role: ServerRole::Guest }
    }

    pub fn is_guest(&self) -> bool {
        self.account.is_none()
    }

    pub fn is_admin(&self) -> bool {
        self.role == ServerRole::Admin
    }

    pub fn user_id(&self) -> Option<UserId> {
        self.account.as_ref().map(|(id, _)| *id)
    }

    pub fn info(&self) -> UserInfo {
        UserInfo {
            id: self.id.to_string(),
            username: self.account.as_ref().map(|(_, u)| u.as_str().to_owned()),
            display_name: self.nick.as_str().to_owned(),
            role: self.role,
            guest: self.is_guest(),
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The session cookie; the session's public id.
    Session(String),
    /// An API token; its id.
    Token(String),
}

/// A signed-in request: the account and how it signed in.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account: Account,
    pub via: Via,
}

impl Principal {
    pub fn identity(&self) -> Identity {
        Identity::of_account(&self.account)
    }
}

/// Everything sign-in and account management can refuse, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("sign in first")]
    Unauthenticated,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("usernames are 1-32 characters of a-z, 0-9, '_', '.' and '-'")]
    InvalidUsername,
    #[error("display names are 1-32 characters with no control characters")]
    InvalidDisplayName,
    #[error("{0}")]
    WeakPassword(#[from] WeakPassword),
    #[error("that username is taken")]
    UsernameTaken,
    #[error("that display name is taken")]
    DisplayNameTaken,
    #[error("an invite code is needed to sign up")]
    InviteRequired,
    #[error("sign-up is closed on this server; ask an admin for an account")]
    SignupClosed,
    #[error("too many attempts; try again later")]
    RateLimited { retry_after: Duration },
    #[error("not found")]
    NotFound,
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Unauthenticated => ErrorCode::Unauthenticated,
            AuthError::BadCredentials => ErrorCode::BadCredentials,
            AuthError::InvalidUsername => ErrorCode::InvalidUsername,
            AuthError::InvalidDisplayName => ErrorCode::InvalidNick,
            AuthError::WeakPassword(_) => ErrorCode::WeakPassword,
            AuthError::UsernameTaken => ErrorCode::UsernameTaken,
            AuthError::DisplayNameTaken => ErrorCode::NickTaken,
            AuthError::InviteRequired => ErrorCode::InviteRequired,
            AuthError::SignupClosed => ErrorCode::SignupClosed,
            AuthError::RateLimited { .. } => ErrorCode::RateLimited,
            AuthError::NotFound => ErrorCode::NotFound,
            AuthError::Forbidden => ErrorCode::Forbidden,
            AuthError::Invalid(_) => ErrorCode::BadFrame,
            AuthError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Unauthenticated | AuthError::BadCredentials => StatusCode::UNAUTHORIZED,
            AuthError::InvalidUsername
            | AuthError::InvalidDisplayName
            | AuthError::WeakPassword(_)
            | AuthError::Invalid(_) => StatusCode::BAD_REQUEST,
            AuthError::UsernameTaken | AuthError::DisplayNameTaken => StatusCode::CONFLICT,
            AuthError::InviteRequired | AuthError::SignupClosed | AuthError::Forbidden => {
                StatusCode::FORBIDDEN
            }
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::NotFound => StatusCode::NOT_FOUND,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<AccountError> for AuthError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::UsernameTaken => AuthError::UsernameTaken,
            AccountError::DisplayNameTaken => AuthError::DisplayNameTaken,
            AccountError::InviteRequired => AuthError::InviteRequired,
            AccountError::NoSuchUser => AuthError::NotFound,
            AccountError::SignupClosed => AuthError::SignupClosed,
            AccountError::TooManyTokens => {
                AuthError::Invalid(format!("an account may hold at most {MAX_TOKENS} API tokens"))
            }
            AccountError::RoomExists => AuthError::Invalid("a room with that name exists".into()),
            err @ (AccountError::Engine { .. } | AccountError::Task(_)) => {
                tracing::error!(%err, "account store failed");
                AuthError::Internal("the account store failed".into())
            }
        }
    }
}

/// Where a request came from, for the sessions list.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user_agent: String,
    pub address: String,
}

impl ClientMeta {
    pub fn of(headers: &HeaderMap, address: std::net::IpAddr) -> Self {
        let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        ClientMeta {
            user_agent: user_agent.chars().take(MAX_LABEL_CHARS).collect(),
            address: address.to_string(),
        }
    }
}

/// A new account's details, as sign-up (or `confab admin create-user`) gives them.
#[derive(Debug, Clone)]
pub struct SignupRequest {
    pub username: String,
    pub password: String,
    pub display_name: Option<String>,
    pub invite: Option<String>,
}

struct LiveConn {
    conn: Weak<ConnHandle>,
    via: Via,
    /// The server role the socket acts with (fixed when it signed in).
    role: ServerRole,
}

pub struct Auth {
    pub store: Arc<dyn AccountStore>,
    hasher: Hasher,
    pub signup: SignupMode,
    pub guests: bool,
    secure_cookie: bool,
    /// Open sockets per account, for closing them when access ends.
    live: Mutex<HashMap<UserId, Vec<LiveConn>>>,
    /// Sign-in attempts per username (the per-address limit is an HTTP layer).
    per_username: DefaultKeyedRateLimiter<String>,
}

impl Auth {
    pub fn new(store: Arc<dyn AccountStore>, config: &Config) -> Self {
        Auth {
            store,
            hasher: Hasher::default(),
            signup: config.signup,
            guests: config.guests_allowed(),
            secure_cookie: config.public_origin().is_some_and(|u| u.starts_with("https://")),
            live: Mutex::default(),
            per_username: DefaultKeyedRateLimiter::keyed(auth_quota(config)),
        }
    }

    /// Runs a store call on a blocking thread.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn AccountStore) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let store = self.store.clone();
        let joined = tokio::task::spawn_blocking(move || f(&*store)).await;
        Ok(joined.map_err(|e| AuthError::Internal(e.to_string()))??)
    }

    /// Who the request is, from `Authorization: Bearer` or else the session cookie. A
    /// Bearer token that is wrong or revoked is an error (a script should hear it); a stale
    /// cookie is not (the visitor is simply not signed in, and may still be a guest).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        if let Some(token) = bearer(headers) {
            let digest = token::digest(token);
            let found = self.db(move |s| s.token_by_digest(&digest)).await?;
            let Some((row, account)) = found else { return Err(AuthError::Unauthenticated) };
            let now = unix_ms();
            if row.last_used_ms.is_none_or(|t| now - t > TOUCH_EVERY_MS) {
                let id = row.id.clone();
                self.db(move |s| s.touch_token(&id, now)).await?;
            }
            return Ok(Some(Principal { account, via: Via::Token(row.id) }));
        }
        let Some(cookie) = session_cookie(headers) else { return Ok(None) };
        let digest = token::digest(cookie);
        let Some((row, account)) = self.db(move |s| s.session_by_digest(&digest)).await? else {
            return Ok(None);
        };
        let now = unix_ms();
        if now - row.last_seen_ms > SESSION_IDLE.as_millis() as i64 {
            let id = row.id.clone();
            self.db(move |s| s.delete_session(row.user_id, &id)).await?;
            return Ok(None);
        }
        if now - row.last_seen_ms > TOUCH_EVERY_MS {
            let id = row.id.clone();
            self.db(move |s| s.touch_session(&id, now)).await?;
        }
        Ok(Some(Principal { account, via: Via::Session(row.id) }))
    }

    /// As `authenticate`, but a request that is not signed in is refused.
    pub async fn require(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.authenticate(headers).await?.ok_or(AuthError::Unauthenticated)
    }

    fn limit_username(&self, username: &str) -> Result<(), AuthError> {
        self.per_username.check_key(&username.to_owned()).map_err(|not_until| AuthError::RateLimited {
            retry_after: not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
        })
    }

    /// Forgets rate-limit state that has refilled (called periodically).
    pub fn sweep(&self) {
        self.per_username.retain_recent();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, conns| {
            conns.retain(|c| c.conn.strong_count() > 0);
            !conns.is_empty()
        });
    }

    /// Validates a new account's names and password and hashes the password.
    pub async fn new_account(&self, req: &SignupRequest, admin: bool) -> Result<NewAccount, AuthError> {
        let username = Username::parse(&req.username).ok_or(AuthError::InvalidUsername)?;
        let display = req.display_name.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let display_name =
            Nick::parse(display.unwrap_or(username.as_str())).map_err(|_| AuthError::InvalidDisplayName)?;
        check_password(&req.password, username.as_str())?;
        let password_phc =
            self.hasher.hash(req.password.clone()).await.map_err(|e| AuthError::Internal(e.to_string()))?;
        let username_key = Nick::parse(username.as_str()).map_err(|_| AuthError::InvalidUsername)?.key();
        Ok(NewAccount {
            username,
            username_key,
            display_key: display_name.key(),
            display_name: display_name.as_str().to_owned(),
            password_phc,
            admin,
        })
    }

    /// Sign-up (`POST /api/auth/signup`): the account and the new session's cookie token.
    pub async fn signup(&self, req: SignupRequest, meta: ClientMeta) -> Result<(Account, String), AuthError> {
        let username = Username::parse(&req.username).ok_or(AuthError::InvalidUsername)?;
        self.limit_username(username.as_str())?;
        let invite = match self.signup {
            SignupMode::Open => InviteUse::NotNeeded,
            SignupMode::Invite => InviteUse::Required(
                req.invite.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(token::digest),
            ),
            // Closed, except for the very first account of an empty server (checked in
            // the transaction that creates it, so two at once cannot both be first).
            SignupMode::Closed => InviteUse::FirstOnly,
        };
        if let InviteUse::Required(None) = invite
            && self.db(|s| s.count_accounts()).await? > 0
        {
            return Err(AuthError::InviteRequired);
        }
        let new = self.new_account(&req, false).await?;
        let now = unix_ms();
        let account = self.db(move |s| s.create_account(new, invite, now)).await?;
        tracing::info!(user = account.id, username = %account.username, role = account.role.as_str(), "account created");
        let token = self.start_session(&account, meta).await?;
        Ok((account, token))
    }

    /// Sign-in: a new session (a new id every time) and its cookie token. A wrong
    /// password and an unknown username take the same time and give the same answer.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        meta: ClientMeta,
    ) -> Result<(Account, String), AuthError> {
        let Some(username) = Username::parse(username) else {
            // Still costs a hash: an invalid name must not answer faster than a wrong one.
            let _ = self.hasher.verify(password.to_owned(), None).await;
            return Err(AuthError::BadCredentials);
        };
        self.limit_username(username.as_str())?;
        if password.chars().count() > password::MAX_PASSWORD_CHARS {
            return Err(AuthError::BadCredentials);
        }
        let lookup = username.clone();
        let found = self.db(move |s| s.account_by_username(&lookup)).await?;
        let (account, phc) = match found {
            Some((account, phc)) if account.active => (Some(account), Some(phc)),
            _ => (None, None),
        };
        let ok = self
            .hasher
            .verify(password.to_owned(), phc)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        match (ok, account) {
            (true, Some(account)) => {
                let token = self.start_session(&account, meta).await?;
                Ok((account, token))
            }
            _ => Err(AuthError::BadCredentials),
        }
    }

    async fn start_session(&self, account: &Account, meta: ClientMeta) -> Result<String, AuthError> {
        let secret = token::random_token();
        let now = unix_ms();
        let row = SessionRow {
            id: token::random_id(),
            user_id: account.id,
            created_ms: now,
            last_seen_ms: now,
            user_agent: meta.user_agent,
            address: meta.address,
        };
        let digest = token::digest(&secret);
        self.db(move |s| s.create_session(&row, &digest)).await?;
        Ok(secret)
    }

    /// Ends one session of `user` and closes its sockets. False when there is no such
    /// session of theirs (another user's session is not found either).
    pub async fn revoke_session(&self, user: UserId, id: &str) -> Result<bool, AuthError> {
        let owned = id.to_owned();
        let gone = self.db(move |s| s.delete_session(user, &owned)).await?;
        if gone {
            self.close_live(user, |via| matches!(via, Via::Session(s) if s == id), CloseReason::SIGNED_OUT);
        }
        Ok(gone)
    }

    pub async fn sessions(&self, user: UserId) -> Result<Vec<SessionRow>, AuthError> {
        let mut rows = self.db(move |s| s.sessions(user)).await?;
        rows.truncate(MAX_SESSIONS_LISTED);
        Ok(rows)
    }

    /// Changes the password (the current one must be given) and ends every other session.
    pub async fn change_password(&self, who: &Principal, current: &str, new: &str) -> Result<(), AuthError> {
        self.limit_username(who.account.username.as_str())?;
        let username = who.account.username.clone();
        let found = self.db(move |s| s.account_by_username(&username)).await?;
        let phc = found.map(|(_, phc)| phc);
        if !self
            .hasher
            .verify(current.to_owned(), phc)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
        {
            return Err(AuthError::BadCredentials);
        }
        self.set_password(
            who.account.id,
            who.account.username.as_str(),
            new,
            match &who.via {
                Via::Session(id) => Some(id.clone()),
                Via::Token(_) => None,
            },
        )
        .await
    }

    /// Sets a password (checked against the rules) and ends every session but `keep`.
    pub async fn set_password(
        &self,
        user: UserId,
        username: &str,
        new: &str,
        keep: Option<String>,
    ) -> Result<(), AuthError> {
        check_password(new, username)?;
        let phc = self.hasher.hash(new.to_owned()).await.map_err(|e| AuthError::Internal(e.to_string()))?;
        let keep_id = keep.clone();
        let ended = self.db(move |s| s.set_password(user, &phc, keep_id.as_deref())).await?;
        self.close_live(
            user,
            |via| matches!(via, Via::Session(s) if ended.contains(s)),
            CloseReason::SIGNED_OUT,
        );
        Ok(())
    }

    pub async fn set_display_name(&self, user: UserId, display: &str) -> Result<(), AuthError> {
        let nick = Nick::parse(display).map_err(|_| AuthError::InvalidDisplayName)?;
        let key = nick.key();
        let name = nick.as_str().to_owned();
        self.db(move |s| s.set_display_name(user, &name, &key)).await
    }

    /// A new API token for `user`: the secret (shown once) and its row.
    pub async fn create_token(&self, user: UserId, name: &str) -> Result<(TokenRow, String), AuthError> {
        let name: String = name.trim().chars().take(MAX_LABEL_CHARS).collect();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(AuthError::Invalid("a token needs a name (1-100 characters)".into()));
        }
        let secret = format!("confab_{}", token::random_token());
        let row = TokenRow {
            id: token::random_id(),
            user_id: user,
            name,
            created_ms: unix_ms(),
            last_used_ms: None,
        };
        let digest = token::digest(&secret);
        let stored = row.clone();
        self.db(move |s| s.create_token(&stored, &digest, MAX_TOKENS)).await?;
        Ok((row, secret))
    }

    pub async fn revoke_token(&self, user: UserId, id: &str) -> Result<bool, AuthError> {
        let owned = id.to_owned();
        let gone = self.db(move |s| s.delete_token(user, &owned)).await?;
        if gone {
            self.close_live(user, |via| matches!(via, Via::Token(t) if t == id), CloseReason::SIGNED_OUT);
        }
        Ok(gone)
    }

    /// A new sign-up invite: its code (shown once) and its row. `uses` None is unlimited.
    pub async fn create_invite(
        &self,
        by: Option<UserId>,
        uses: Option<i64>,
        valid_for: Option<Duration>,
    ) -> Result<(InviteRow, String), AuthError> {
        if uses.is_some_and(|u| u < 1) {
            return Err(AuthError::Invalid("an invite has at least one use".into()));
        }
        let code = token::random_token()[..24].to_owned();
        let now = unix_ms();
        let row = InviteRow {
            id: token::random_id(),
            created_by: by,
            uses_left: uses,
            expires_ms: valid_for.map(|d| now + d.as_millis() as i64),
            created_ms: now,
        };
        let digest = token::digest(&code);
        let stored = row.clone();
        self.db(move |s| s.create_invite(&stored, &digest)).await?;
        Ok((row, code))
    }

    /// Deactivates an account: its sessions and tokens end, its sockets close now.
    pub async fn deactivate(&self, user: UserId) -> Result<(), AuthError> {
        self.db(move |s| s.set_active(user, false)).await?;
        self.close_live(user, |_| true, CloseReason::DEACTIVATED);
        Ok(())
    }

    /// Whether a guest may call itself `nick`: not when any account's username or display
    /// name has the same key (NFKC, case folding, confusable skeleton).
    pub async fn guest_name_free(&self, nick: &Nick) -> Result<bool, AuthError> {
        let key = nick.key();
        Ok(!self.db(move |s| s.name_key_taken(&key)).await?)
    }

    /// Closes the sockets whose session or token no longer exists, or whose account was
    /// deactivated, by another process (`confab admin reset-password` on the same
    /// database): this server's own revocations close them at once; these within a
    /// sweep. Called periodically.
    pub async fn revalidate(&self) {
        let users: Vec<UserId> =
            self.live.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        for user in users {
            let found = self.db(move |s| Ok((s.account(user)?, s.sessions(user)?, s.tokens(user)?))).await;
            let Ok((account, sessions, tokens)) = found else { continue };
            let Some(account) = account.filter(|a| a.active) else {
                self.close_live(user, |_| true, CloseReason::DEACTIVATED);
                continue;
            };
            self.close_other_roles(user, account.role);
            self.close_live(
                user,
                |via| match via {
                    Via::Session(id) => !sessions.iter().any(|s| &s.id == id),
                    Via::Token(id) => !tokens.iter().any(|t| &t.id == id),
                },
                CloseReason::SIGNED_OUT,
            );
        }
    }

    /// Tracks a signed-in socket so revoking its access closes it.
    pub fn register_live(&self, user: UserId, via: Via, role: ServerRole, conn: &Arc<ConnHandle>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let conns = live.entry(user).or_default();
        conns.retain(|c| c.conn.strong_count() > 0);
        conns.push(LiveConn { conn: Arc::downgrade(conn), via, role });
    }

    /// Closes every socket of `user` that acts with another role than `role` (after an
    /// admin changed it): they reconnect with the new one.
    pub fn close_other_roles(&self, user: UserId, role: ServerRole) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = live.get_mut(&user) {
            conns.retain(|c| {
                if c.role == role {
                    return c.conn.strong_count() > 0;
                }
                if let Some(conn) = c.conn.upgrade() {
                    conn.close(CloseReason::ACCOUNT_CHANGED);
                }
                false
            });
        }
    }

    /// The open sockets of `user` (for `invited`, `kicked`).
    pub fn live_conns(&self, user: UserId) -> Vec<Arc<ConnHandle>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&user).map(|c| c.iter().filter_map(|c| c.conn.upgrade()).collect()).unwrap_or_default()
    }

    /// Closes the sockets of `user` signed in by a matching `Via`.
    pub fn close_live(&self, user: UserId, which: impl Fn(&Via) -> bool, reason: CloseReason) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = live.get_mut(&user) {
            conns.retain(|c| {
                if !which(&c.via) {
                    return c.conn.strong_count() > 0;
                }
                if let Some(conn) = c.conn.upgrade() {
                    conn.close(reason);
                }
                false
            });
        }
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn cookie(&self, secret: &str) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let value = format!(
            "{COOKIE}={secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
            SESSION_IDLE.as_secs()
        );
        HeaderValue::from_str(&value).expect("a cookie of hex digits is a valid header")
    }

    /// The `Set-Cookie` value that signs a browser out.
    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}"))
            .expect("a static cookie is a valid header")
    }
}

/// The quota of sign-in and sign-up attempts, per address and per username.
pub fn auth_quota(config: &Config) -> Quota {
    let per_min = NonZeroU32::new(config.auth_rate.max(1)).expect("at least one");
    let burst = NonZeroU32::new(config.auth_burst.max(1)).expect("at least one");
    Quota::per_minute(per_min).allow_burst(burst)
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The value of the `confab_session` cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_and_the_bearer_token_are_read_from_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; confab_session=abc ; b=2"));
        assert_eq!(session_cookie(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  tok "));
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&h), None);
        let empty = HeaderMap::new();
        assert_eq!(session_cookie(&empty), None);
    }
}
