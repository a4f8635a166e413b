//! Server-rendered account pages: sign-in and sign-up (with "continue as guest"), the
//! account page (display name, password, sessions, API tokens, invites, sign-out), the
//! admin page, a new room, a direct message, and a room's settings.
//!
//! Plain HTML forms, no script: they work without JavaScript, add nothing to the browser
//! bundle, and post to handlers that call the same `Auth` and `Hub` methods as the JSON
//! API, so each rule is enforced once. Every POST is checked for its `Origin` (CSRF), the
//! session cookie is SameSite=Lax, and what is private is 404 to outsiders here too.

use super::{
    account_api::{self, AdminUpdate, InviteRequest, anonymous, may_invite},
    auth::{AuthError, ClientMeta, Identity, Principal, SignupRequest, Via},
    config::SignupMode,
    http::{ApiError, HttpRateLimit},
    hub::Hub,
    moderation::Action,
};
use crate::protocol::{RoomName, RoomRole, ServerRole, Visibility};
use axum::{
    Form, Router,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use std::{fmt::Write, net::SocketAddr, sync::Arc};

/// The pages' routes. Sign-in and sign-up posts share `auth_limit` with the JSON API.
pub fn routes(hub: &Arc<Hub>, auth_limit: &HttpRateLimit) -> Router<Arc<Hub>> {
    let attempts = Router::new()
        .route("/login", post(login_post))
        .route("/signup", post(signup_post))
        .layer(auth_limit.clone());
    Router::new()
        .route("/login", get(login_page))
        .merge(attempts)
        .route("/logout", post(logout_post))
        .route("/account", get(account_page))
        .route("/account/{action}", post(account_post))
        .route("/account/sessions/{id}/revoke", post(revoke_session_post))
        .route("/account/tokens/{id}/revoke", post(revoke_token_post))
        .route("/admin", get(admin_page))
        .route("/admin/users/{username}", post(admin_user_post))
        .route("/admin/invites", post(admin_invite_post))
        .route("/rooms/new", get(new_room_page).post(new_room_post))
        .route("/dm", get(dm_page).post(dm_post))
        .route("/r/{room}/settings", get(settings_page).post(settings_post))
        .route("/search", get(super::search_page::search_page))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), account_api::check_origin))
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::ui::row::escape(s, &mut out);
    out
}

/// Only a local path may be a `next`: never another site ("//evil", "https://…").
fn safe_next(next: Option<&str>) -> String {
    match next {
        // A plain path of this site: no "//host", no backslash, no white space or control
        // character (browsers strip tabs and newlines from a Location, so "/\t/evil" would
        // become "//evil").
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() < 512
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_.-~?=&%+".contains(&b)) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A UTC date and time of Unix ms, "2026-12-01 13:05".
pub(super) fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// A whole page: the app's stylesheet, no script at all (the CSP says so).
pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/pkg/confab.css\"><title>{} · Confab</title></head>\
         <body><main class=\"account-page\"><p class=\"account-nav\"><a class=\"logo\" href=\"/\">Confab</a></p>{body}</main></body></html>",
        esc(title)
    );
    let mut response = (status, axum::response::Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn alert(message: Option<&str>) -> String {
    match message {
        Some(m) => format!("<p class=\"form-error\" role=\"alert\">{}</p>", esc(m)),
        None => String::new(),
    }
}

fn done(message: Option<&str>) -> String {
    match message {
        Some(m) => format!("<p class=\"form-done\" role=\"status\">{}</p>", esc(m)),
        None => String::new(),
    }
}

/// A secret just made (a token, an invite code), shown this once. Focusable: a long one
/// scrolls, and must be reachable by keyboard.
fn secret_section(title: &str, secret: &str) -> String {
    format!(
        "<section class=\"secret\" aria-labelledby=\"secret-title\"><h2 id=\"secret-title\">{}</h2>\
         <p>Copy it now: it is shown only once.</p><pre tabindex=\"0\"><code>{}</code></pre></section>",
        esc(title),
        esc(secret)
    )
}

fn redirect_with_cookie(to: &str, cookie: HeaderValue) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// The signed-in user, or a redirect to the sign-in page that comes back to `here`.
async fn signed_in(hub: &Hub, headers: &HeaderMap, here: &str) -> Result<Principal, Response> {
    match hub.auth.authenticate(headers).await {
        Ok(Some(p)) => Ok(p),
        _ => Err(Redirect::to(&format!("/login?next={}", esc(here))).into_response()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Ok(Some(_)) = hub.auth.authenticate(&headers).await {
        return Redirect::to(&next).into_response();
    }
    login_form(&hub, &next, None, StatusCode::OK).await
}

async fn login_form(hub: &Hub, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let n = esc(next);
    let mut body = format!(
        "<h1>Sign in to Confab</h1>{}\
         <section aria-labelledby=\"signin-title\"><h2 id=\"signin-title\">Sign in</h2>\
         <form method=\"post\" action=\"/login?next={n}\">\
         <label for=\"login-username\">Username</label>\
         <input id=\"login-username\" name=\"username\" autocomplete=\"username\" required maxlength=\"32\">\
         <label for=\"login-password\">Password</label>\
         <input id=\"login-password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"256\">\
         <button type=\"submit\">Sign in</button></form></section>",
        alert(error)
    );
    let empty = hub.auth.db(|s| s.count_accounts()).await.map(|n| n == 0).unwrap_or(false);
    let mode = hub.auth.signup;
    if mode != SignupMode::Closed || empty {
        let invite = if mode == SignupMode::Invite && !empty {
            "<label for=\"signup-invite\">Invite code</label>\
             <input id=\"signup-invite\" name=\"invite\" required autocomplete=\"off\" maxlength=\"64\">"
        } else {
            ""
        };
        let first =
            if empty { "<p class=\"hint\">The first account becomes this server's admin.</p>" } else { "" };
        let _ = write!(
            body,
            "<section aria-labelledby=\"signup-title\"><h2 id=\"signup-title\">Create an account</h2>{first}\
             <form method=\"post\" action=\"/signup?next={n}\">\
             <label for=\"signup-username\">Username</label>\
             <input id=\"signup-username\" name=\"username\" autocomplete=\"username\" required maxlength=\"32\" \
              pattern=\"[A-Za-z0-9_.\\-]{{1,32}}\" aria-describedby=\"signup-username-hint\">\
             <p id=\"signup-username-hint\" class=\"hint\">1–32 letters, digits, “_”, “.” or “-”.</p>\
             <label for=\"signup-display\">Display name (optional)</label>\
             <input id=\"signup-display\" name=\"display_name\" autocomplete=\"nickname\" maxlength=\"32\">\
             <label for=\"signup-password\">Password</label>\
             <input id=\"signup-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required \
              minlength=\"12\" maxlength=\"256\" aria-describedby=\"signup-password-hint\">\
             <p id=\"signup-password-hint\" class=\"hint\">At least 12 characters; a phrase of a few words is good.</p>\
             {invite}<button type=\"submit\">Create account</button></form></section>"
        );
    } else {
        body.push_str("<p class=\"hint\">Sign-up is closed on this server; ask an admin for an account.</p>");
    }
    if hub.auth.guests {
        let _ = write!(body, "<p class=\"guest-link\"><a href=\"{n}\">Continue as a guest</a></p>");
    }
    page(status, "Sign in", &body)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_post(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    match hub.auth.login(&form.username, &form.password, ClientMeta::of(&headers, peer.ip())).await {
        Ok((_, secret)) => redirect_with_cookie(&next, hub.auth.cookie(&secret)),
        Err(err) => {
            let err = ApiError::from(err);
            login_form(&hub, &next, Some(&err.message), err.status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct SignupForm {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    invite: Option<String>,
}

async fn signup_post(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
    Form(form): Form<SignupForm>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Err(err) = hub.check_not_held_by_guest(&[Some(&form.username), form.display_name.as_deref()]) {
        let err = ApiError::from(err);
        return login_form(&hub, &next, Some(&err.message), err.status).await;
    }
    let req = SignupRequest {
        username: form.username,
        password: form.password,
        display_name: form.display_name,
        invite: form.invite,
    };
    match hub.auth.signup(req, ClientMeta::of(&headers, peer.ip())).await {
        Ok((_, secret)) => redirect_with_cookie(&next, hub.auth.cookie(&secret)),
        Err(err) => {
            let err = ApiError::from(err);
            login_form(&hub, &next, Some(&err.message), err.status).await
        }
    }
}

async fn logout_post(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Ok(Some(Principal { account, via: Via::Session(id) })) = hub.auth.authenticate(&headers).await {
        let _ = hub.auth.revoke_session(account.id, &id).await;
    }
    redirect_with_cookie("/login", hub.auth.clear_cookie())
}

#[derive(Debug, Default, Deserialize)]
struct Flash {
    done: Option<String>,
    error: Option<String>,
}

async fn account_page(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(flash): Query<Flash>,
) -> Response {
    let p = match signed_in(&hub, &headers, "/account").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    account_view(&hub, &p, flash.done.as_deref(), flash.error.as_deref(), None, StatusCode::OK).await
}

/// The account page. `secret` is a just-made token or invite code, shown this once.
async fn account_view(
    hub: &Hub,
    p: &Principal,
    done_msg: Option<&str>,
    error: Option<&str>,
    secret: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    let a = &p.account;
    let mut body = format!(
        "<h1>Your account</h1>{}{}<p>Signed in as <strong>{}</strong> (<code>{}</code>, {}).</p>",
        alert(error),
        done(done_msg),
        esc(&a.display_name),
        esc(a.username.as_str()),
        a.role.as_str()
    );
    if let Some((what, value)) = secret {
        body.push_str(&secret_section(&format!("Your new {what}"), value));
    }
    let _ = write!(
        body,
        "<p class=\"account-links\"><a href=\"/\">Back to chat</a> · <a href=\"/rooms/new\">New room</a> · \
         <a href=\"/dm\">Message someone</a>{}</p>",
        if a.role == ServerRole::Admin { " · <a href=\"/admin\">Admin</a>" } else { "" }
    );
    let _ = write!(
        body,
        "<section aria-labelledby=\"profile-title\"><h2 id=\"profile-title\">Display name</h2>\
         <form method=\"post\" action=\"/account/display-name\"><label for=\"display-name\">Display name</label>\
         <input id=\"display-name\" name=\"display_name\" value=\"{}\" required maxlength=\"32\">\
         <button type=\"submit\">Save</button></form></section>\
         <section aria-labelledby=\"password-title\"><h2 id=\"password-title\">Password</h2>\
         <form method=\"post\" action=\"/account/password\">\
         <label for=\"current-password\">Current password</label>\
         <input id=\"current-password\" name=\"current\" type=\"password\" autocomplete=\"current-password\" required>\
         <label for=\"new-password\">New password</label>\
         <input id=\"new-password\" name=\"new\" type=\"password\" autocomplete=\"new-password\" minlength=\"12\" maxlength=\"256\" required>\
         <button type=\"submit\">Change password</button>\
         <p class=\"hint\">Changing it signs out every other session.</p></form></section>",
        esc(&a.display_name)
    );
    let current = match &p.via {
        Via::Session(id) => Some(id.as_str()),
        Via::Token(_) => None,
    };
    body.push_str(
        "<section aria-labelledby=\"sessions-title\"><h2 id=\"sessions-title\">Sessions</h2>\
         <table><thead><tr><th scope=\"col\">Browser</th><th scope=\"col\">Address</th>\
         <th scope=\"col\">Signed in</th><th scope=\"col\">Last seen</th><th scope=\"col\"><span class=\"visually-hidden\">Action</span></th></tr></thead><tbody>",
    );
    for s in hub.auth.sessions(a.id).await.unwrap_or_default() {
        let action = if current == Some(s.id.as_str()) {
            "<td>This session</td>".to_owned()
        } else {
            format!(
                "<td><form method=\"post\" action=\"/account/sessions/{}/revoke\"><button type=\"submit\" \
                 aria-label=\"Sign out the session from {}\">Sign out</button></form></td>",
                esc(&s.id),
                esc(&s.address)
            )
        };
        let ua = if s.user_agent.is_empty() { "unknown" } else { &s.user_agent };
        let _ = write!(
            body,
            "<tr data-session=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{action}</tr>",
            esc(&s.id),
            esc(ua),
            esc(&s.address),
            when(s.created_ms),
            when(s.last_seen_ms)
        );
    }
    body.push_str("</tbody></table></section>");
    body.push_str(
        "<section aria-labelledby=\"tokens-title\"><h2 id=\"tokens-title\">API tokens</h2>\
         <p class=\"hint\">For bots and scripts: <code>Authorization: Bearer &lt;token&gt;</code>.</p>\
         <form method=\"post\" action=\"/account/tokens\"><label for=\"token-name\">Token name</label>\
         <input id=\"token-name\" name=\"name\" required maxlength=\"100\"><button type=\"submit\">Create token</button></form><ul class=\"plain-list\">",
    );
    let id = a.id;
    for t in hub.auth.db(move |s| s.tokens(id)).await.unwrap_or_default() {
        let used = t.last_used_ms.map_or("never used".to_owned(), |t| format!("last used {}", when(t)));
        let _ = write!(
            body,
            "<li>{} <span class=\"hint\">({}, made {})</span> <form class=\"inline\" method=\"post\" \
             action=\"/account/tokens/{}/revoke\"><button type=\"submit\" aria-label=\"Revoke the token {}\">Revoke</button></form></li>",
            esc(&t.name),
            used,
            when(t.created_ms),
            esc(&t.id),
            esc(&t.name)
        );
    }
    body.push_str("</ul></section>");
    if may_invite(hub, p) {
        body.push_str(
            "<section aria-labelledby=\"invite-title\"><h2 id=\"invite-title\">Invite someone</h2>\
             <form method=\"post\" action=\"/account/invite\"><button type=\"submit\">Make a sign-up invite</button>\
             <p class=\"hint\">One sign-up, valid for a week.</p></form></section>",
        );
    }
    body.push_str(
        "<form method=\"post\" action=\"/logout\"><button type=\"submit\" class=\"danger\">Sign out</button></form>",
    );
    page(status, "Your account", &body)
}

/// What an account form did: the message to show, and a secret to show once.
type Outcome = (&'static str, Option<(&'static str, String)>);

#[derive(Debug, Default, Deserialize)]
struct AccountForm {
    display_name: Option<String>,
    current: Option<String>,
    new: Option<String>,
    name: Option<String>,
}

async fn account_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(form): Form<AccountForm>,
) -> Response {
    let p = match signed_in(&hub, &headers, "/account").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    let result: Result<Outcome, ApiError> = async {
        match action.as_str() {
            "display-name" => {
                let name = form.display_name.as_deref().unwrap_or("");
                hub.check_not_held_by_guest(&[Some(name)])?;
                hub.auth.set_display_name(p.account.id, name).await?;
                Ok(("Display name saved (it shows on your next connection).", None))
            }
            "password" => {
                let (current, new) = (form.current.unwrap_or_default(), form.new.unwrap_or_default());
                hub.auth.change_password(&p, &current, &new).await?;
                Ok(("Password changed; your other sessions are signed out.", None))
            }
            "tokens" => {
                let (_, secret) =
                    hub.auth.create_token(p.account.id, form.name.as_deref().unwrap_or("")).await?;
                Ok(("Token created.", Some(("API token", secret))))
            }
            "invite" => {
                let invite = account_api::make_invite(&hub, &p, InviteRequest::default()).await?;
                Ok(("Invite created.", Some(("invite code", invite.code.unwrap_or_default()))))
            }
            _ => Err(AuthError::NotFound.into()),
        }
    }
    .await;
    let fresh = hub.auth.authenticate(&headers).await.ok().flatten().unwrap_or(p);
    match result {
        Ok((message, secret)) => {
            let secret = secret.as_ref().map(|(what, value)| (*what, value.as_str()));
            account_view(&hub, &fresh, Some(message), None, secret, StatusCode::OK).await
        }
        Err(err) => account_view(&hub, &fresh, None, Some(&err.message), None, err.status).await,
    }
}

async fn revoke_session_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let p = match signed_in(&hub, &headers, "/account").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    match hub.auth.revoke_session(p.account.id, &id).await {
        Ok(true) => Redirect::to("/account?done=The+session+is+signed+out.").into_response(),
        Ok(false) => {
            account_view(&hub, &p, None, Some("No such session."), None, StatusCode::NOT_FOUND).await
        }
        Err(err) => {
            let err = ApiError::from(err);
            account_view(&hub, &p, None, Some(&err.message), None, err.status).await
        }
    }
}

async fn revoke_token_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let p = match signed_in(&hub, &headers, "/account").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    match hub.auth.revoke_token(p.account.id, &id).await {
        Ok(true) => Redirect::to("/account?done=The+token+is+revoked.").into_response(),
        Ok(false) => account_view(&hub, &p, None, Some("No such token."), None, StatusCode::NOT_FOUND).await,
        Err(err) => {
            let err = ApiError::from(err);
            account_view(&hub, &p, None, Some(&err.message), None, err.status).await
        }
    }
}

/// The admin page: 404 to everyone but admins (it is not there for them).
async fn admin_principal(hub: &Hub, headers: &HeaderMap) -> Result<Principal, Response> {
    let p = signed_in(hub, headers, "/admin").await?;
    if p.account.role != ServerRole::Admin {
        return Err(page(StatusCode::NOT_FOUND, "Not found", "<h1>Not found</h1>"));
    }
    Ok(p)
}

async fn admin_page(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(flash): Query<Flash>) -> Response {
    let p = match admin_principal(&hub, &headers).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    admin_view(&hub, &p, flash.done.as_deref(), flash.error.as_deref(), None, StatusCode::OK).await
}

async fn admin_view(
    hub: &Hub,
    p: &Principal,
    done_msg: Option<&str>,
    error: Option<&str>,
    code: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut body = format!(
        "<h1>Admin</h1>{}{}<p class=\"account-links\"><a href=\"/account\">Your account</a> · <a href=\"/\">Back to chat</a></p>\
         <p>Sign-up: <strong>{}</strong> · Guests: <strong>{}</strong> <span class=\"hint\">(set with --signup and --guests)</span></p>",
        alert(error),
        done(done_msg),
        hub.auth.signup.as_str(),
        if hub.auth.guests { "on" } else { "off" }
    );
    if let Some(code) = code {
        body.push_str(&secret_section("New invite code", code));
    }
    body.push_str(
        "<section aria-labelledby=\"users-title\"><h2 id=\"users-title\">Users</h2><table><thead><tr>\
         <th scope=\"col\">Username</th><th scope=\"col\">Display name</th><th scope=\"col\">Role</th>\
         <th scope=\"col\">Status</th><th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead><tbody>",
    );
    for a in hub.auth.db(|s| s.accounts(account_api::ADMIN_USERS)).await.unwrap_or_default() {
        let u = esc(a.username.as_str());
        let actions = if a.id == p.account.id {
            "<td>You</td>".to_owned()
        } else {
            let (role_to, role_label) =
                if a.role == ServerRole::Admin { ("member", "Make member") } else { ("admin", "Make admin") };
            let (active_to, active_label) =
                if a.active { ("false", "Deactivate") } else { ("true", "Reactivate") };
            format!(
                "<td><form class=\"inline\" method=\"post\" action=\"/admin/users/{u}\"><input type=\"hidden\" name=\"role\" value=\"{role_to}\">\
                 <button type=\"submit\" aria-label=\"{role_label}: {u}\">{role_label}</button></form> \
                 <form class=\"inline\" method=\"post\" action=\"/admin/users/{u}\"><input type=\"hidden\" name=\"active\" value=\"{active_to}\">\
                 <button type=\"submit\" aria-label=\"{active_label} {u}\">{active_label}</button></form></td>"
            )
        };
        let _ = write!(
            body,
            "<tr><td>{u}</td><td>{}</td><td>{}</td><td>{}</td>{actions}</tr>",
            esc(&a.display_name),
            a.role.as_str(),
            if a.active { "active" } else { "deactivated" }
        );
    }
    body.push_str("</tbody></table></section>");
    body.push_str(
        "<section aria-labelledby=\"invites-title\"><h2 id=\"invites-title\">Invites</h2>\
         <form method=\"post\" action=\"/admin/invites\"><label for=\"invite-uses\">Sign-ups (0 for unlimited)</label>\
         <input id=\"invite-uses\" name=\"uses\" type=\"number\" min=\"0\" value=\"1\">\
         <label for=\"invite-hours\">Valid for hours (0 for ever)</label>\
         <input id=\"invite-hours\" name=\"expires_hours\" type=\"number\" min=\"0\" value=\"168\">\
         <button type=\"submit\">Make an invite</button></form><ul class=\"plain-list\">",
    );
    for i in hub.auth.db(|s| s.invites()).await.unwrap_or_default() {
        let uses = i.uses_left.map_or("unlimited".to_owned(), |n| format!("{n} left"));
        let expires = i.expires_ms.map_or("never expires".to_owned(), |t| format!("expires {}", when(t)));
        let _ = write!(body, "<li><code>{}</code>: {uses}, {expires}</li>", esc(&i.id));
    }
    body.push_str("</ul></section>");
    page(status, "Admin", &body)
}

#[derive(Debug, Default, Deserialize)]
struct AdminUserForm {
    role: Option<String>,
    active: Option<String>,
}

async fn admin_user_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(username): Path<String>,
    Form(form): Form<AdminUserForm>,
) -> Response {
    let p = match admin_principal(&hub, &headers).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let change = AdminUpdate {
        role: form.role.as_deref().and_then(ServerRole::parse),
        active: form.active.as_deref().map(|a| a == "true"),
    };
    match account_api::admin_update(&hub, &p, &username, change).await {
        Ok(()) => Redirect::to("/admin?done=Saved.").into_response(),
        Err(err) => admin_view(&hub, &p, None, Some(&err.message), None, err.status).await,
    }
}

#[derive(Debug, Default, Deserialize)]
struct InviteForm {
    uses: Option<i64>,
    expires_hours: Option<u64>,
}

async fn admin_invite_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Response {
    let p = match admin_principal(&hub, &headers).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let req = InviteRequest { uses: form.uses, expires_hours: form.expires_hours };
    match account_api::make_invite(&hub, &p, req).await {
        Ok(invite) => {
            admin_view(&hub, &p, Some("Invite created."), None, invite.code.as_deref(), StatusCode::CREATED)
                .await
        }
        Err(err) => admin_view(&hub, &p, None, Some(&err.message), None, err.status).await,
    }
}

async fn new_room_page(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    match signed_in(&hub, &headers, "/rooms/new").await {
        Ok(_) => new_room_view(None, StatusCode::OK),
        Err(to_login) => to_login,
    }
}

fn new_room_view(error: Option<&str>, status: StatusCode) -> Response {
    let body = format!(
        "<h1>New room</h1>{}<form method=\"post\" action=\"/rooms/new\">\
         <label for=\"room-name\">Name</label>\
         <input id=\"room-name\" name=\"room\" required maxlength=\"64\" pattern=\"[a-z0-9_\\-]{{1,64}}\" aria-describedby=\"room-name-hint\">\
         <p id=\"room-name-hint\" class=\"hint\">Lower-case letters, digits, “_” and “-”.</p>\
         <fieldset><legend>Who can see it</legend>\
         <label><input type=\"radio\" name=\"visibility\" value=\"public\" checked> Public: anyone can find and join it</label>\
         <label><input type=\"radio\" name=\"visibility\" value=\"private\"> Private: only people you invite</label></fieldset>\
         <label for=\"room-topic\">Topic (optional)</label><input id=\"room-topic\" name=\"topic\" maxlength=\"200\">\
         <button type=\"submit\">Create room</button></form>",
        alert(error)
    );
    page(status, "New room", &body)
}

#[derive(Debug, Deserialize)]
struct NewRoomForm {
    room: String,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

async fn new_room_post(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<NewRoomForm>,
) -> Response {
    let p = match signed_in(&hub, &headers, "/rooms/new").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    let Ok(name) = RoomName::parse(form.room.trim()) else {
        return new_room_view(Some("Room names are 1-64 of a-z, 0-9, '_' and '-'."), StatusCode::BAD_REQUEST);
    };
    let visibility =
        if form.visibility.as_deref() == Some("private") { Visibility::Private } else { Visibility::Public };
    let topic = form.topic.filter(|t| !t.trim().is_empty());
    match hub.create_room(&p.identity(), peer.ip(), &name, visibility, topic).await {
        Ok(_) => Redirect::to(&format!("/r/{name}")).into_response(),
        Err(err) => {
            let err = ApiError::from(err);
            new_room_view(Some(&err.message), err.status)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DmQuery {
    to: Option<String>,
}

async fn dm_page(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(q): Query<DmQuery>) -> Response {
    match signed_in(&hub, &headers, "/dm").await {
        Ok(_) => dm_view(q.to.as_deref(), None, StatusCode::OK),
        Err(to_login) => to_login,
    }
}

fn dm_view(to: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let body = format!(
        "<h1>Message someone</h1>{}<form method=\"post\" action=\"/dm\">\
         <label for=\"dm-to\">Username or display name</label>\
         <input id=\"dm-to\" name=\"to\" required maxlength=\"32\" value=\"{}\">\
         <button type=\"submit\">Open conversation</button></form>",
        alert(error),
        esc(to.unwrap_or(""))
    );
    page(status, "Message someone", &body)
}

#[derive(Debug, Deserialize)]
struct DmForm {
    to: String,
}

async fn dm_post(State(hub): State<Arc<Hub>>, headers: HeaderMap, Form(form): Form<DmForm>) -> Response {
    let p = match signed_in(&hub, &headers, "/dm").await {
        Ok(p) => p,
        Err(to_login) => return to_login,
    };
    let to = form.to.trim();
    // A display name is as good as a username: the two never collide between accounts.
    let username = match hub.username_for(to).await {
        Some(u) => u,
        None => return dm_view(Some(to), Some("Nobody has that name."), StatusCode::NOT_FOUND),
    };
    match hub.open_dm(&p.identity(), &username).await {
        Ok(room) => Redirect::to(&format!("/r/{room}")).into_response(),
        Err(err) => {
            let err = ApiError::from(err);
            dm_view(Some(to), Some(&err.message), err.status)
        }
    }
}

/// Who is looking at a room page: the signed-in user, or an anonymous visitor.
pub(super) async fn viewer(hub: &Hub, headers: &HeaderMap) -> (Identity, Option<Principal>) {
    match hub.auth.authenticate(headers).await {
        Ok(Some(p)) => (p.identity(), Some(p)),
        _ => (anonymous(), None),
    }
}

async fn settings_page(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let (who, principal) = viewer(&hub, &headers).await;
    if principal.is_none() && !hub.auth.guests {
        return Redirect::to(&format!("/login?next={}", safe_next(Some(&format!("/r/{room}/settings")))))
            .into_response();
    }
    settings_view(&hub, &who, &room, flash.done.as_deref(), flash.error.as_deref(), StatusCode::OK).await
}

fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "<h1>Not found</h1><p>There is no such room.</p>")
}

async fn settings_view(
    hub: &Hub,
    who: &Identity,
    room: &str,
    done_msg: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let Ok(name) = RoomName::parse(room) else { return not_found() };
    let Ok(r) = hub.check_read(&name, who) else { return not_found() };
    let Ok(members) = hub.room_members(who, &name).await else { return not_found() };
    let access = r.access().clone();
    let moderator = access.check_moderate(who, crate::server::access::Moderation::Kick, None).is_ok();
    let owner =
        access.check_moderate(who, crate::server::access::Moderation::SetRole(RoomRole::Owner), None).is_ok();
    let n = esc(name.as_str());
    let mut body = format!(
        "<h1>#{n} settings</h1>{}{}<p class=\"account-links\"><a href=\"/r/{n}\">Back to #{n}</a></p>\
         <p>{} room.{}</p>",
        alert(error),
        done(done_msg),
        if access.dm {
            "A direct-message"
        } else if access.visibility.is_public() {
            "A public"
        } else {
            "A private"
        },
        if access.topic.is_empty() { String::new() } else { format!(" Topic: {}", esc(&access.topic)) }
    );
    if moderator {
        let _ = write!(
            body,
            "<section aria-labelledby=\"topic-title\"><h2 id=\"topic-title\">Topic</h2>\
             <form method=\"post\" action=\"/r/{n}/settings\"><input type=\"hidden\" name=\"action\" value=\"topic\">\
             <label for=\"room-topic\">Topic</label><input id=\"room-topic\" name=\"topic\" maxlength=\"200\" value=\"{}\">\
             <button type=\"submit\">Set topic</button></form></section>\
             <section aria-labelledby=\"invite-title\"><h2 id=\"invite-title\">Invite</h2>\
             <form method=\"post\" action=\"/r/{n}/settings\"><input type=\"hidden\" name=\"action\" value=\"invite\">\
             <label for=\"invite-username\">Username</label><input id=\"invite-username\" name=\"username\" required maxlength=\"32\">\
             <button type=\"submit\">Invite</button></form></section>\
             <section aria-labelledby=\"moderate-title\"><h2 id=\"moderate-title\">Moderate someone</h2>\
             <form method=\"post\" action=\"/r/{n}/settings\"><label for=\"moderate-username\">Username (or a guest's name)</label>\
             <input id=\"moderate-username\" name=\"username\" required maxlength=\"32\">\
             <label for=\"moderate-action\">Action</label><select id=\"moderate-action\" name=\"action\">\
             <option value=\"kick\">Kick (may come back to a public room)</option><option value=\"ban\">Ban</option>\
             <option value=\"unban\">Unban</option><option value=\"mute\">Mute</option><option value=\"unmute\">Unmute</option></select>\
             <button type=\"submit\">Apply</button></form></section>",
            esc(&access.topic)
        );
    }
    body.push_str(
        "<section aria-labelledby=\"members-title\"><h2 id=\"members-title\">Members</h2><table><thead><tr>\
         <th scope=\"col\">Name</th><th scope=\"col\">Role</th><th scope=\"col\">Standing</th>",
    );
    if moderator {
        body.push_str("<th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th>");
    }
    body.push_str("</tr></thead><tbody>");
    for (username, display, standing) in members {
        let u = esc(&username);
        let state = match (standing.banned, standing.muted) {
            (true, _) => "banned",
            (_, true) => "muted",
            _ => "",
        };
        let _ = write!(
            body,
            "<tr data-member=\"{u}\"><td>{} <span class=\"hint\">@{u}</span></td><td>{}</td><td>{state}</td>",
            esc(&display),
            standing.role.as_str()
        );
        if moderator {
            body.push_str("<td>");
            let actions: &[(&str, &str)] = if standing.banned {
                &[("unban", "Unban")]
            } else if standing.muted {
                &[("kick", "Kick"), ("ban", "Ban"), ("unmute", "Unmute")]
            } else {
                &[("kick", "Kick"), ("ban", "Ban"), ("mute", "Mute")]
            };
            for (action, label) in actions {
                let _ = write!(
                    body,
                    "<form class=\"inline\" method=\"post\" action=\"/r/{n}/settings\"><input type=\"hidden\" name=\"action\" value=\"{action}\">\
                     <input type=\"hidden\" name=\"username\" value=\"{u}\"><button type=\"submit\" aria-label=\"{label} {u}\">{label}</button></form> "
                );
            }
            if owner && !standing.banned {
                for role in [RoomRole::Member, RoomRole::Moderator, RoomRole::Owner] {
                    if role != standing.role {
                        let _ = write!(
                            body,
                            "<form class=\"inline\" method=\"post\" action=\"/r/{n}/settings\"><input type=\"hidden\" name=\"action\" value=\"role\">\
                             <input type=\"hidden\" name=\"role\" value=\"{0}\"><input type=\"hidden\" name=\"username\" value=\"{u}\">\
                             <button type=\"submit\" aria-label=\"Make {u} {0}\">Make {0}</button></form> ",
                            role.as_str()
                        );
                    }
                }
            }
            body.push_str("</td>");
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></section>");
    page(status, &format!("#{} settings", name.as_str()), &body)
}

#[derive(Debug, Deserialize)]
struct SettingsForm {
    action: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

async fn settings_post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    let (who, principal) = viewer(&hub, &headers).await;
    let Ok(name) = RoomName::parse(&room) else { return not_found() };
    if hub.check_read(&name, &who).is_err() {
        return not_found();
    }
    if principal.is_none() {
        return Redirect::to(&format!("/login?next=/r/{name}/settings")).into_response();
    }
    let result = if form.action == "topic" {
        hub.set_topic(&who, &name, form.topic.unwrap_or_default()).await
    } else {
        let role = form.role.as_deref().and_then(RoomRole::parse);
        match Action::parse(&form.action, role) {
            Some(action) => {
                hub.moderate(&who, &name, action, form.username.as_deref().unwrap_or("").trim()).await
            }
            None => {
                return settings_view(
                    &hub,
                    &who,
                    &room,
                    None,
                    Some("Unknown action."),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        }
    };
    match result {
        Ok(()) => Redirect::to(&format!("/r/{name}/settings?done=Done.")).into_response(),
        Err(err) => {
            let err = ApiError::from(err);
            settings_view(&hub, &who, &room, None, Some(&err.message), err.status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_next_stays_on_this_site() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(safe_next(Some("/r/lobby")), "/r/lobby");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/r/lobby?x=1")), "/r/lobby?x=1");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_764_594_300_000), "2025-12-01 13:05 UTC");
    }
}
