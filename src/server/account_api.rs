//! The HTTP API of accounts and access: sign-up, sign-in and out, the signed-in user,
//! sessions, API tokens, invites, posting a message, room creation, members and
//! moderation, and the admin's user list.
//!
//! Every error is `{code, message}` with a stable code. Every state-changing request
//! that does not carry a Bearer token must carry an `Origin` naming this server (a
//! browser always sends one; a page elsewhere cannot forge it), so a cookie alone never
//! authorises a write from another site.

use super::{
    access::{Denied, Standing},
    auth::{AuthError, ClientMeta, Identity, Principal, SignupRequest, Via, auth_quota, bearer},
    http::{ApiError, HttpRateLimit},
    hub::{Hub, HubError},
    moderation::Action,
    room::Room,
    store::accounts::Account,
    unix_ms,
};
use crate::protocol::{
    ChatMessage, ErrorCode, MessageText, Nick, RoomEvent, RoomInfo, RoomName, RoomRole, Seq, ServerRole,
    UserInfo, Visibility, check_client_id,
};
use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::{
    conversation::ChangeError,
    message_api::{claim_change, commit_event},
    store::StoreError,
};

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let retry_after = match &err {
            AuthError::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            _ => None,
        };
        ApiError { retry_after, ..ApiError::new(err.status(), err.code(), err.to_string()) }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        let status = match denied {
            Denied::NotFound => StatusCode::NOT_FOUND,
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden | Denied::Banned | Denied::Muted => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, denied.code(), denied.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::Denied(d) => d.into(),
            HubError::CreationRate(refusal) => ApiError {
                retry_after: Some(refusal.retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many new rooms")
            },
            HubError::Exists => ApiError::new(StatusCode::CONFLICT, ErrorCode::RoomExists, err.to_string()),
            HubError::TooManyRooms => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::TooManyRooms, err.to_string())
            }
            HubError::Invalid(why) => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRoom, why),
            HubError::Store(StoreError::Query(why)) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, why)
            }
            HubError::Store(_) => {
                tracing::error!(%err, "request failed");
                ApiError::internal("the request failed")
            }
        }
    }
}

impl ApiError {
    /// A refused change to a message.
    pub fn change(err: &ChangeError) -> Self {
        let status = match err.code() {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::Muted => StatusCode::FORBIDDEN,
            ErrorCode::Deleted | ErrorCode::TooManyReactions => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, err.code(), err.to_string())
    }
}

/// The identity of a request that is not signed in: a guest nobody is.
pub fn anonymous() -> Identity {
    Identity::guest("anonymous", Nick::parse("anonymous").expect("a valid nick"))
}

/// Who may read: the signed-in user, or (where guests are allowed) anyone.
pub async fn reader(hub: &Hub, headers: &HeaderMap) -> Result<Identity, ApiError> {
    match hub.auth.authenticate(headers).await? {
        Some(principal) => Ok(principal.identity()),
        None if hub.auth.guests => Ok(anonymous()),
        None => Err(AuthError::Unauthenticated.into()),
    }
}

/// The routes of this module, behind `limit` (the per-address allowance of every API
/// route); sign-in and sign-up also behind a stricter per-address limit.
pub fn routes(limit: &HttpRateLimit, auth_limit: &HttpRateLimit) -> Router<Arc<Hub>> {
    let auth = Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .layer(auth_limit.clone());
    Router::new()
        .merge(auth)
        .route("/api/auth/logout", post(logout))
        .route("/api/me", get(me).put(update_me))
        .route("/api/me/password", post(change_password))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", delete(revoke_session))
        .route("/api/tokens", get(tokens).post(create_token))
        .route("/api/tokens/{id}", delete(revoke_token))
        .route("/api/invites", get(invites).post(create_invite))
        .route("/api/invites/{id}", delete(delete_invite))
        .route("/api/rooms", post(create_room))
        .route("/api/rooms/{room}/messages", post(post_message))
        .route(
            "/api/rooms/{room}/messages/{seq}",
            axum::routing::patch(super::message_api::edit).delete(super::message_api::delete),
        )
        .route("/api/rooms/{room}/messages/{seq}/reactions", axum::routing::put(super::message_api::react))
        .route("/api/rooms/{room}/members", get(members))
        .route("/api/rooms/{room}/moderation", post(moderate))
        .route("/api/rooms/{room}/topic", post(set_topic))
        .route("/api/dm", post(open_dm))
        .route("/api/admin/users", get(admin_users))
        .route("/api/admin/users/{username}", post(admin_update_user))
        .layer(limit.clone())
}

/// Sign-in and sign-up attempts per address (`--auth-rate`, `--auth-burst`); the same
/// quota applies per username inside `Auth`. Build it once: clones share the limiter.
pub fn auth_limit(config: &super::config::Config) -> HttpRateLimit {
    let quota = auth_quota(config);
    super::http::per_address_limit(quota.replenish_interval(), quota.burst_size().get(), "too many attempts")
}

/// Middleware of every API route: a state-changing request without a Bearer token must
/// come from a page of this server (`Origin`).
pub async fn check_origin(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let headers = request.headers();
    if !safe && bearer(headers).is_none() {
        let cfg = &hub.config;
        let ok = headers.contains_key(header::ORIGIN)
            && super::origin_allowed(headers, cfg.public_origin(), &cfg.allowed_origins);
        if !ok {
            let message = "a request that changes something must come from this server's pages (Origin) or carry a Bearer token";
            return ApiError::new(StatusCode::FORBIDDEN, ErrorCode::BadOrigin, message).into_response();
        }
    }
    next.run(request).await
}

/// A user as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct MeBody {
    #[serde(flatten)]
    pub user: UserInfo,
    /// How this request signed in: `session` or `token`.
    pub via: String,
}

fn user_info(account: &Account) -> UserInfo {
    Identity::of_account(account).info()
}

fn signed_in(hub: &Hub, status: StatusCode, account: &Account, secret: &str) -> Response {
    let mut response = (status, Json(user_info(account))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, hub.auth.cookie(secret));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Deserialize)]
pub struct SignupBody {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub invite: Option<String>,
}

async fn signup(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignupBody>,
) -> Result<Response, ApiError> {
    hub.check_not_held_by_guest(&[Some(&body.username), body.display_name.as_deref()])?;
    let req = SignupRequest {
        username: body.username,
        password: body.password,
        display_name: body.display_name,
        invite: body.invite,
    };
    let (account, secret) = hub.auth.signup(req, ClientMeta::of(&headers, peer.ip())).await?;
    Ok(signed_in(&hub, StatusCode::CREATED, &account, &secret))
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

async fn login(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    let (account, secret) =
        hub.auth.login(&body.username, &body.password, ClientMeta::of(&headers, peer.ip())).await?;
    Ok(signed_in(&hub, StatusCode::OK, &account, &secret))
}

/// Ends the request's session (and closes its sockets); always clears the cookie.
async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(Principal { account, via: Via::Session(id) }) = hub.auth.authenticate(&headers).await? {
        hub.auth.revoke_session(account.id, &id).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, hub.auth.clear_cookie());
    Ok(response)
}

async fn me(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<MeBody>, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let via = match p.via {
        Via::Session(_) => "session",
        Via::Token(_) => "token",
    };
    Ok(Json(MeBody { user: user_info(&p.account), via: via.into() }))
}

#[derive(Debug, Deserialize)]
struct UpdateMe {
    display_name: String,
}

async fn update_me(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(body): Json<UpdateMe>,
) -> Result<Json<UserInfo>, ApiError> {
    let p = hub.auth.require(&headers).await?;
    hub.check_not_held_by_guest(&[Some(&body.display_name)])?;
    hub.auth.set_display_name(p.account.id, &body.display_name).await?;
    let id = p.account.id;
    let account = hub.auth.db(move |s| s.account(id)).await?.ok_or(AuthError::NotFound)?;
    Ok(Json(user_info(&account)))
}

#[derive(Debug, Deserialize)]
struct PasswordBody {
    current: String,
    new: String,
}

async fn change_password(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let p = hub.auth.require(&headers).await?;
    hub.auth.change_password(&p, &body.current, &body.new).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One session as `GET /api/sessions` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionBody {
    pub id: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub user_agent: String,
    pub address: String,
    /// The session this request came with.
    pub current: bool,
}

async fn sessions(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionBody>>, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let current = match &p.via {
        Via::Session(id) => Some(id.clone()),
        Via::Token(_) => None,
    };
    let rows = hub.auth.sessions(p.account.id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| SessionBody {
                current: current.as_deref() == Some(r.id.as_str()),
                id: r.id,
                created_ms: r.created_ms,
                last_seen_ms: r.last_seen_ms,
                user_agent: r.user_agent,
                address: r.address,
            })
            .collect(),
    ))
}

async fn revoke_session(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = hub.auth.require(&headers).await?;
    if !hub.auth.revoke_session(p.account.id, &id).await? {
        return Err(AuthError::NotFound.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    name: String,
}

/// A token as listed; `token` (the secret) only in the answer that made it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenBody {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

async fn create_token(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(body): Json<TokenRequest>,
) -> Result<(StatusCode, Json<TokenBody>), ApiError> {
    let p = hub.auth.require(&headers).await?;
    let (row, secret) = hub.auth.create_token(p.account.id, &body.name).await?;
    let body = TokenBody {
        id: row.id,
        name: row.name,
        created_ms: row.created_ms,
        last_used_ms: None,
        token: Some(secret),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

async fn tokens(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Vec<TokenBody>>, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let id = p.account.id;
    let rows = hub.auth.db(move |s| s.tokens(id)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TokenBody {
                id: r.id,
                name: r.name,
                created_ms: r.created_ms,
                last_used_ms: r.last_used_ms,
                token: None,
            })
            .collect(),
    ))
}

async fn revoke_token(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = hub.auth.require(&headers).await?;
    if !hub.auth.revoke_token(p.account.id, &id).await? {
        return Err(AuthError::NotFound.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
pub struct InviteRequest {
    /// Sign-ups it allows; absent for one, 0 for unlimited.
    #[serde(default)]
    pub uses: Option<i64>,
    /// Hours until it expires; absent for a week, 0 for never.
    #[serde(default)]
    pub expires_hours: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InviteBody {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
    /// The code to sign up with: only in the answer that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Admins, and owners of any room, may make sign-up invites.
pub fn may_invite(hub: &Hub, p: &Principal) -> bool {
    p.account.role == ServerRole::Admin || hub.owns_a_room(p.account.id)
}

/// Invites a room owner (not an admin) may make at most: so many sign-ups, so long.
const OWNER_INVITE_USES: i64 = 10;
const OWNER_INVITE_HOURS: u64 = 7 * 24;

pub async fn make_invite(hub: &Hub, p: &Principal, req: InviteRequest) -> Result<InviteBody, ApiError> {
    if !may_invite(hub, p) {
        return Err(AuthError::Forbidden.into());
    }
    // Any member can own a room, so an owner's invites are bounded: otherwise one
    // unlimited, never-expiring invite would make `--signup invite` open.
    if p.account.role != ServerRole::Admin {
        let uses_ok = req.uses.is_none_or(|u| (1..=OWNER_INVITE_USES).contains(&u));
        let hours_ok = req.expires_hours.is_none_or(|h| (1..=OWNER_INVITE_HOURS).contains(&h));
        if !uses_ok || !hours_ok {
            let message = format!(
                "a room owner's invite allows 1-{OWNER_INVITE_USES} sign-ups for at most {OWNER_INVITE_HOURS} hours"
            );
            return Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message));
        }
    }
    let uses = match req.uses {
        None => Some(1),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let valid_for = match req.expires_hours {
        None => Some(Duration::from_secs(7 * 24 * 3600)),
        Some(0) => None,
        Some(h) => Some(Duration::from_secs(h.min(24 * 365 * 10) * 3600)),
    };
    let (row, code) = hub.auth.create_invite(Some(p.account.id), uses, valid_for).await?;
    Ok(InviteBody {
        id: row.id,
        uses_left: row.uses_left,
        expires_ms: row.expires_ms,
        created_ms: row.created_ms,
        code: Some(code),
    })
}

async fn create_invite(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Option<Json<InviteRequest>>,
) -> Result<(StatusCode, Json<InviteBody>), ApiError> {
    let p = hub.auth.require(&headers).await?;
    let invite = make_invite(&hub, &p, body.map(|b| b.0).unwrap_or_default()).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

async fn require_admin(hub: &Hub, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let p = hub.auth.require(headers).await?;
    if p.account.role != ServerRole::Admin {
        return Err(AuthError::Forbidden.into());
    }
    Ok(p)
}

async fn invites(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Vec<InviteBody>>, ApiError> {
    require_admin(&hub, &headers).await?;
    let rows = hub.auth.db(|s| s.invites()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| InviteBody {
                id: r.id,
                uses_left: r.uses_left,
                expires_ms: r.expires_ms,
                created_ms: r.created_ms,
                code: None,
            })
            .collect(),
    ))
}

async fn delete_invite(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&hub, &headers).await?;
    if !hub.auth.db(move |s| s.delete_invite(&id)).await? {
        return Err(AuthError::NotFound.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AdminUser {
    #[serde(flatten)]
    pub user: UserInfo,
    pub active: bool,
    pub created_ms: i64,
}

/// Users listed at most on the admin page and API.
pub const ADMIN_USERS: usize = 1000;

async fn admin_users(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<Vec<AdminUser>>, ApiError> {
    require_admin(&hub, &headers).await?;
    let rows = hub.auth.db(|s| s.accounts(ADMIN_USERS)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|a| AdminUser { user: user_info(&a), active: a.active, created_ms: a.created_ms })
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct AdminUpdate {
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub role: Option<ServerRole>,
}

/// Applies an admin's change to an account: role, deactivation (sockets close at once).
pub async fn admin_update(
    hub: &Hub,
    admin: &Principal,
    username: &str,
    change: AdminUpdate,
) -> Result<(), ApiError> {
    let username = crate::protocol::Username::parse(username).ok_or(AuthError::NotFound)?;
    let (account, _) =
        hub.auth.db(move |s| s.account_by_username(&username)).await?.ok_or(AuthError::NotFound)?;
    if account.id == admin.account.id
        && (change.active == Some(false) || change.role.is_some_and(|r| r != ServerRole::Admin))
    {
        return Err(AuthError::Invalid("an admin cannot deactivate or demote themselves".into()).into());
    }
    let id = account.id;
    if let Some(role) = change.role {
        if role == ServerRole::Guest {
            return Err(AuthError::Invalid("an account's role is admin or member".into()).into());
        }
        hub.auth.db(move |s| s.set_server_role(id, role)).await?;
        // Open sockets act with the role they signed in with: they reconnect (4002).
        hub.auth.close_other_roles(id, role);
    }
    match change.active {
        Some(false) => hub.auth.deactivate(id).await?,
        Some(true) => hub.auth.db(move |s| s.set_active(id, true)).await?,
        None => {}
    }
    tracing::info!(user = id, by = admin.account.id, ?change.role, ?change.active, "account changed by an admin");
    Ok(())
}

async fn admin_update_user(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(username): Path<String>,
    Json(body): Json<AdminUpdate>,
) -> Result<StatusCode, ApiError> {
    let admin = require_admin(&hub, &headers).await?;
    admin_update(&hub, &admin, &username, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct CreateRoom {
    room: String,
    #[serde(default)]
    visibility: Visibility,
    #[serde(default)]
    topic: Option<String>,
}

async fn create_room(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<CreateRoom>,
) -> Result<(StatusCode, Json<RoomInfo>), ApiError> {
    let p = hub.auth.require(&headers).await?;
    let name = RoomName::parse(&body.room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let room = hub.create_room(&p.identity(), peer.ip(), &name, body.visibility, body.topic).await?;
    Ok((StatusCode::CREATED, Json(room.info())))
}

#[derive(Debug, Deserialize)]
struct OpenDm {
    username: String,
}

async fn open_dm(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(body): Json<OpenDm>,
) -> Result<Json<RoomInfo>, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let who = p.identity();
    let name = hub.open_dm(&who, &body.username).await?;
    let room = hub.check_read(&name, &who)?;
    Ok(Json(room.info()))
}

/// One person with a standing in a room.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberBody {
    pub username: String,
    pub display_name: String,
    pub role: RoomRole,
    #[serde(default)]
    pub banned: bool,
    #[serde(default)]
    pub muted: bool,
}

pub fn member_bodies(rows: Vec<(String, String, Standing)>) -> Vec<MemberBody> {
    rows.into_iter()
        .map(|(username, display_name, s)| MemberBody {
            username,
            display_name,
            role: s.role,
            banned: s.banned,
            muted: s.muted,
        })
        .collect()
}

async fn members(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<Vec<MemberBody>>, ApiError> {
    let who = reader(&hub, &headers).await?;
    let name = RoomName::parse(&room).map_err(|_| ApiError::from(Denied::NotFound))?;
    Ok(Json(member_bodies(hub.room_members(&who, &name).await?)))
}

#[derive(Debug, Deserialize)]
struct ModerationBody {
    /// invite, kick, ban, unban, mute, unmute or role.
    action: String,
    username: String,
    #[serde(default)]
    role: Option<RoomRole>,
}

async fn moderate(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(body): Json<ModerationBody>,
) -> Result<StatusCode, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let name = RoomName::parse(&room).map_err(|_| ApiError::from(Denied::NotFound))?;
    let action = Action::parse(&body.action, body.role).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadFrame,
            "action is invite, kick, ban, unban, mute, unmute or role (with role)",
        )
    })?;
    hub.moderate(&p.identity(), &name, action, &body.username).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct TopicBody {
    topic: String,
}

async fn set_topic(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(body): Json<TopicBody>,
) -> Result<StatusCode, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let name = RoomName::parse(&room).map_err(|_| ApiError::from(Denied::NotFound))?;
    hub.set_topic(&p.identity(), &name, body.topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct PostMessage {
    text: String,
    client_id: String,
    #[serde(default)]
    reply_to: Option<Seq>,
}

/// `POST /api/rooms/{room}/messages`: a bot or script posts as its account, with the
/// socket's validation, dedup (per account, by `client_id`) and rate limit. Answers once
/// the message is stored: 201 with it, or 200 with the original for a retry.
async fn post_message(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(body): Json<PostMessage>,
) -> Result<Response, ApiError> {
    let p = hub.auth.require(&headers).await?;
    let who = p.identity();
    let name = RoomName::parse(&room).map_err(|_| ApiError::from(Denied::NotFound))?;
    let room = hub.find_room(&name).ok_or(Denied::NotFound)?;
    room.access().check_send(&who)?;
    let bad =
        |e: crate::protocol::ValidationError| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string());
    check_client_id(&body.client_id).map_err(bad)?;
    let text = MessageText::parse(body.text, hub.config.text_limit()).map_err(bad)?;
    let session = hub.sessions.attach_account(p.account.id, who.nick.clone());
    let result = store_post(&hub, &room, &who, &session, text, body.client_id, body.reply_to).await;
    hub.sessions.detach(&session);
    result
}

async fn store_post(
    hub: &Hub,
    room: &Arc<Room>,
    who: &Identity,
    session: &Arc<super::session::Session>,
    text: MessageText,
    client_id: String,
    reply_to: Option<Seq>,
) -> Result<Response, ApiError> {
    // After the dedup: a retry of a stored reply is answered even if its original has
    // been deleted since.
    let check = async {
        match reply_to {
            Some(original) => hub.check_reply(room, original, who).await.map_err(|e| ApiError::change(&e)),
            None => Ok(()),
        }
    };
    if let Some(event) = claim_change(hub, who, session, &client_id, check).await? {
        let RoomEvent::Message(msg) = event else {
            return Err(ApiError::internal("that client_id was used for another kind of change"));
        };
        return Ok((StatusCode::OK, Json(msg)).into_response());
    }
    let ts = unix_ms();
    let (nick, user) = (who.nick.as_str().to_owned(), who.id.to_string());
    let text = text.into_string();
    let mentions = hub.mentions_in(&text).await;
    let room_name = room.name.as_str().to_owned();
    let cid = client_id.clone();
    let build = move |seq| {
        RoomEvent::Message(ChatMessage {
            room: room_name,
            seq,
            nick,
            text,
            ts,
            client_id: cid,
            user,
            reply_to,
            mentions,
            ..ChatMessage::default()
        })
    };
    match commit_event(hub, room, session, Some(&client_id), build).await? {
        RoomEvent::Message(msg) => Ok((StatusCode::CREATED, Json(msg)).into_response()),
        _ => {
            Err(ApiError::internal("the message could not be stored; send it again with the same client_id"))
        }
    }
}
