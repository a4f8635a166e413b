//! Left column: brand, connection status, joined rooms with unread counts, join box.

use super::{chat::use_chat, nav::use_nav, state::ConnStatus};
use crate::protocol::RoomName;
use leptos::prelude::*;

#[component]
pub fn Sidebar() -> impl IntoView {
    let chat = use_chat();
    let rooms = Memo::new(move |_| {
        chat.model.with(|m| {
            m.rooms
                .iter()
                .map(|(name, v)| (name.clone(), v.unread, m.current.as_deref() == Some(name.as_str())))
                .collect::<Vec<_>>()
        })
    });
    view! {
        <nav class="sidebar" aria-label="Rooms">
            <header class="brand">
                <a href="/" class="logo">"Confab"</a>
                <Status />
            </header>
            <JoinForm />
            <h2 class="sidebar-title">"Your rooms"</h2>
            <ul class="room-list">
                <For
                    each=move || rooms.get()
                    key=|r| r.clone()
                    children=move |(name, unread, current)| {
                        let href = format!("/r/{name}");
                        let label = if unread > 0 { format!("{name}, {unread} unread") } else { name.clone() };
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
                                    <span class="room-name">{name.clone()}</span>
                                    {(unread > 0).then(|| view! { <span class="badge" data-testid="unread">{unread}</span> })}
                                </a>
                            </li>
                        }
                    }
                />
            </ul>
            {move || rooms.with(|r| r.is_empty()).then(|| view! { <p class="hint">"Join a room to start."</p> })}
        </nav>
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
