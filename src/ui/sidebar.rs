//! Left column: brand, connection status, joined rooms with unread counts, join box.

use super::{chat::use_chat, nav::use_nav, state::ConnStatus};
use crate::protocol::RoomName;
use leptos::prelude::*;

#[component]
pub fn Sidebar() -> impl IntoView {
    let chat = use_chat();
    // (name, label, unread, current, dm): rooms I am in, and the direct messages I have.
    let all = Memo::new(move |_| {
        chat.model.with(|m| {
            let mut list: Vec<RoomRow> = m
                .rooms
                .iter()
                .map(|(name, v)| {
                    let label = if v.dm && !v.topic.is_empty() { v.topic.clone() } else { name.clone() };
                    (
                        name.clone(),
                        label,
                        v.unread,
                        m.current.as_deref() == Some(name.as_str()),
                        v.dm,
                        v.mentions,
                    )
                })
                .collect();
            for r in m.directory.iter().filter(|r| r.dm && !m.rooms.contains_key(&r.name)) {
                let label = if r.topic.is_empty() { r.name.clone() } else { r.topic.clone() };
                list.push((
                    r.name.clone(),
                    label,
                    r.unread.unwrap_or(0),
                    false,
                    true,
                    r.mentions.unwrap_or(0),
                ));
            }
            list
        })
    });
    let rooms = Memo::new(move |_| all.with(|l| l.iter().filter(|r| !r.4).cloned().collect::<Vec<_>>()));
    let dms = Memo::new(move |_| all.with(|l| l.iter().filter(|r| r.4).cloned().collect::<Vec<_>>()));
    view! {
        <nav class="sidebar" aria-label="Rooms">
            <header class="brand">
                <a href="/" class="logo">"Confab"</a>
                <Status />
            </header>
            <Account />
            <form class="search-form" role="search" action="/search" method="get">
                <label for="search-q">"Search messages"</label>
                <div class="row">
                    <input id="search-q" name="q" type="search" placeholder="words, from:name, in:room" maxlength="200" />
                    <button type="submit">"Search"</button>
                </div>
            </form>
            <JoinForm />
            <h2 class="sidebar-title">"Your rooms"</h2>
            <RoomList rooms=rooms />
            {move || rooms.with(|r| r.is_empty()).then(|| view! { <p class="hint">"Join a room to start."</p> })}
            <div hidden=move || dms.with(|d| d.is_empty())>
                <h2 class="sidebar-title">"Direct messages"</h2>
                <RoomList rooms=dms />
            </div>
        </nav>
    }
}

/// Who I am, and where to manage it (or sign in).
#[component]
fn Account() -> impl IntoView {
    let chat = use_chat();
    // One shape for both cases (a sign-out turns the page into a guest's), less view code.
    let account = Memo::new(move |_| chat.model.with(|m| m.account.clone()));
    let signed_in = move || account.with(Option::is_some);
    let admin =
        move || account.with(|a| a.as_ref().is_some_and(|u| u.role == crate::protocol::ServerRole::Admin));
    let href = move || if signed_in() { "/account" } else { "/login" };
    let text = move || match account.get() {
        Some(user) => format!("Signed in as {}", user.display_name),
        None => "Sign in (you are a guest)".to_owned(),
    };
    view! {
        <div class="account">
            <p class="whoami"><a href=href>{text}</a></p>
            <p class="account-actions" hidden=move || !signed_in()>
                <a href="/rooms/new">"New room"</a>" · "<a href="/dm">"Message someone"</a>
                <span hidden=move || !admin()>" · "<a href="/admin">"Admin"</a></span>
            </p>
        </div>
    }
}

/// (name, label, unread, current, dm, mentions).
type RoomRow = (String, String, u32, bool, bool, u32);

#[component]
fn RoomList(rooms: Memo<Vec<RoomRow>>) -> impl IntoView {
    view! {
            <ul class="room-list">
                <For
                    each=move || rooms.get()
                    key=|r| r.clone()
                    children=move |(name, label_text, unread, current, _, mentions)| {
                        let href = format!("/r/{name}");
                        let label = match (unread, mentions) {
                            (0, _) => label_text.clone(),
                            (n, 0) => format!("{label_text}, {n} unread"),
                            (n, m) => format!("{label_text}, {n} unread, {m} mentioning you"),
                        };
                        view! {
                            <li>
                                <a
                                    href=href
                                    class="room-link"
                                    class:current=current
                                    aria-current=if current { Some("page") } else { None }
                                    aria-label=label
                                    data-room=name.clone()
                                >
                                    <span class="hash" aria-hidden="true">"#"</span>
                                    <span class="room-name">{label_text.clone()}</span>
                                    {(mentions > 0).then(|| view! { <span class="badge mention" data-testid="mentions">{format!("@{mentions}")}</span> })}
                                    {(unread > 0).then(|| view! { <span class="badge" data-testid="unread">{unread}</span> })}
                                </a>
                            </li>
                        }
                    }
                />
            </ul>
    }
}

#[component]
fn Status() -> impl IntoView {
    let chat = use_chat();
    let status = Memo::new(move |_| chat.model.with(|m| m.status.clone()));
    let text = move || match status.get() {
        ConnStatus::Idle => "Not connected".to_owned(),
        ConnStatus::Connecting => "Connecting…".to_owned(),
        ConnStatus::Online => "Online".to_owned(),
        ConnStatus::Offline { retry_in_ms } => {
            format!("Offline, retrying in {} s", retry_in_ms.div_ceil(1000))
        }
    };
    let class = move || match status.get() {
        ConnStatus::Online => "status online",
        ConnStatus::Connecting => "status connecting",
        _ => "status offline",
    };
    view! { <p class=class role="status" data-testid="status">{text}</p> }
}

/// Join or create a room by name. `id` keeps two forms on one page apart.
#[component]
pub fn JoinForm(#[prop(default = "join-room")] id: &'static str) -> impl IntoView {
    let error_id = format!("{id}-error");
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let nav = use_nav();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // Room names are ASCII: lowercasing beyond it cannot make a valid one (and
        // Unicode's case tables would weigh on the bundle).
        let raw = name.get_untracked().trim().to_ascii_lowercase().replace(' ', "-");
        match RoomName::parse(&raw) {
            Ok(room) => {
                error.set(None);
                name.set(String::new());
                nav.navigate(&format!("/r/{room}"));
            }
            Err(err) => error.set(Some(err.to_string())),
        }
    };
    view! {
        <form class="join-form" on:submit=submit action="/" method="get">
            <label for=id>"Join or create a room"</label>
            <div class="row">
                <input
                    id=id
                    name="room"
                    type="text"
                    placeholder="room-name"
                    maxlength="64"
                    autocomplete="off"
                    bind:value=name
                    aria-invalid=move || error.with(|e| e.is_some().to_string())
                    aria-describedby=error_id.clone()
                />
                <button type="submit">"Join"</button>
            </div>
            <p id=error_id class="field-error" role="alert">{move || error.get()}</p>
        </form>
    }
}
