//! `/r/{room}`: the room's messages, who is here, who is typing, and the composer.
//!
//! The server renders the recent history into the page (so it shows without JavaScript)
//! from the page's seed; once hydrated, the WebSocket join takes over and keeps it live.

use super::{
    chat::{Command, use_chat},
    composer::Composer,
    members::Members,
    messages::MessageList,
    nav::use_nav,
    notice::Notice,
    seed::use_seed,
};
use crate::protocol::RoomName;
use leptos::{prelude::*, text_prop::TextProp};
use leptos_meta::Title;

#[component]
pub fn RoomPage() -> impl IntoView {
    let chat = use_chat();
    let nav = use_nav();
    let room = Memo::new(move |_| nav.room());
    let valid = Memo::new(move |_| RoomName::parse(&room.get()).is_ok());
    // The history the server rendered this page with (only for the room it rendered).
    let seed = use_seed();

    // In the browser: show this room, join it, and keep the server-rendered history.
    Effect::new({
        let seed = seed.clone();
        move |_| {
            let room = room.get();
            if valid.get() {
                if let Some(messages) = seed.messages_for(&room) {
                    chat.model.update(|m| m.seed(&room, messages.to_vec()));
                }
                chat.send(Command::Open(room.clone()));
                // `?at=seq` (a search hit) opens the room at that message.
                if let Some(at) = at_in_url() {
                    chat.seek.set(Some((room, at)));
                }
            }
        }
    });

    let messages = Signal::derive(move || {
        let room = room.get();
        let live = chat.model.with(|m| m.rooms.get(&room).map(|v| v.messages.clone()).unwrap_or_default());
        if live.is_empty() { seed.messages_for(&room).map(<[_]>::to_vec).unwrap_or_default() } else { live }
    });
    // "true" once this connection's join was answered: a hook for tests and styling.
    let live = move || chat.model.with(|m| m.rooms.get(&room.get()).is_some_and(|v| v.live)).to_string();
    let topic =
        move || chat.model.with(|m| m.rooms.get(&room.get()).map(|v| v.topic.clone()).unwrap_or_default());
    let leave = move |_| {
        chat.send(Command::Leave(room.get_untracked()));
        nav.navigate("/");
    };

    // leptos_meta reads the title on the server after the render, once the body's first
    // chunk is out, when this request's reactive arena need not be the current one any
    // more (another request may have rendered on this thread meanwhile): reading a signal
    // then panicked, or could read that other request's page. So the server's title is a
    // plain string, taken now; in the browser it follows the room.
    #[cfg(all(feature = "ssr", not(feature = "hydrate")))]
    let title = TextProp::from(nav.title());
    #[cfg(any(feature = "hydrate", not(feature = "ssr")))]
    let title = TextProp::from(move || nav.title());

    view! {
        <Title text=title />
        <Show
            when=move || valid.get()
            fallback=move || view! {
                <section class="empty"><h1>"No such room"</h1><p>"Room names use a-z, 0-9, '-' and '_'."</p></section>
            }
        >
            <section class="room" aria-labelledby="room-title" data-live=live>
                <header class="room-header">
                    <h1 id="room-title"><span aria-hidden="true">"#"</span>{move || room.get()}</h1>
                    <p class="topic">{topic}</p>
                    <NotifySetting room=room />
                    <a class="settings-link" href=move || format!("/r/{}/settings", room.get())>"Settings"</a>
                    <button type="button" class="leave" on:click=leave>"Leave"</button>
                </header>
                <Notice />
                <div class="room-body">
                    <div class="conversation">
                        <MessageList room=room messages=messages />
                        <TypingLine room=room />
                        <Composer room=room />
                    </div>
                    <Members room=room />
                </div>
            </section>
        </Show>
    }
}

/// "bob is typing…", politely announced.
#[component]
fn TypingLine(room: Memo<String>) -> impl IntoView {
    let chat = use_chat();
    let text = move || {
        let now = chat.clock.get();
        let names =
            chat.model.with(|m| m.rooms.get(&room.get()).map(|v| v.typing_now(now)).unwrap_or_default());
        match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [a, b] => format!("{a} and {b} are typing…"),
            _ => "Several people are typing…".to_owned(),
        }
    };
    view! { <p class="typing" aria-live="polite" data-testid="typing">{text}</p> }
}

/// The seq in the page's `?at=` (browser only).
fn at_in_url() -> Option<crate::protocol::Seq> {
    #[cfg(feature = "hydrate")]
    {
        let search = web_sys::window()?.location().search().ok()?;
        search.trim_start_matches('?').split('&').find_map(|kv| kv.strip_prefix("at=")?.parse().ok())
    }
    #[cfg(not(feature = "hydrate"))]
    None
}

/// Which messages of this room notify while the tab is hidden.
#[component]
fn NotifySetting(room: Memo<String>) -> impl IntoView {
    let chat = use_chat();
    let value = RwSignal::new(String::from("mentions"));
    Effect::new(move |_| {
        let room = room.get();
        #[cfg(feature = "hydrate")]
        value.set(crate::client::notify::setting(&room));
        let _ = room;
    });
    let on_change = move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        #[cfg(feature = "hydrate")]
        crate::client::notify::set_setting(&room.get_untracked(), &v);
        value.set(v);
    };
    view! {
        <label class="notify" hidden=move || !chat.mounted.get()>
            "Notify "
            <select on:change=on_change prop:value=move || value.get()>
                <option value="all">"every message"</option>
                <option value="mentions">"mentions"</option>
                <option value="none">"nothing"</option>
            </select>
        </label>
    }
}
