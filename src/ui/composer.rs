//! The composer: Enter sends, Shift+Enter starts a new line, a counter near the limit.

use super::chat::{Command, use_chat};
use crate::protocol::MAX_TEXT_CHARS;
use leptos::prelude::*;

/// The counter appears when this few characters are left.
const COUNTER_FROM: usize = 200;
/// At most one typing notice per this many ms.
const TYPING_EVERY_MS: f64 = 3000.0;

#[component]
pub fn Composer(room: Memo<String>) -> impl IntoView {
    let chat = use_chat();
    let text = RwSignal::new(String::new());
    let last_typing = StoredValue::new(f64::NEG_INFINITY);
    let limit = Memo::new(move |_| {
        chat.model.with(|m| m.limits.as_ref().map_or(MAX_TEXT_CHARS, |l| l.max_text_chars as usize))
    });
    let count = Memo::new(move |_| text.with(|t| t.chars().count()));
    let left = move || limit.get() as i64 - count.get() as i64;
    let muted = move || chat.model.with(|m| m.rooms.get(&room.get()).is_some_and(|v| v.muted));
    let can_send = move || chat.mounted.get() && chat.model.with(|m| m.nick.is_some()) && !muted();

    let send = move || {
        let body = text.get_untracked();
        if body.trim().is_empty() || left() < 0 {
            return;
        }
        chat.send(Command::Send { room: room.get_untracked(), text: body });
        text.set(String::new());
        last_typing.set_value(f64::NEG_INFINITY);
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let on_input = move |_| {
        let now = js_now();
        if now - last_typing.get_value() > TYPING_EVERY_MS && !text.with_untracked(|t| t.is_empty()) {
            last_typing.set_value(now);
            chat.send(Command::Typing(room.get_untracked()));
        }
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        send();
    };

    view! {
        <form class="composer" on:submit=on_submit>
            <label for="composer-text" class="visually-hidden">{move || format!("Message #{}", room.get())}</label>
            <textarea
                id="composer-text"
                rows="2"
                placeholder=move || if muted() { "You are muted in this room".to_owned() } else { format!("Message #{}", room.get()) }
                bind:value=text
                on:keydown=on_keydown
                on:input=on_input
                aria-describedby="composer-help composer-count"
                disabled=move || !can_send()
            ></textarea>
            <button type="submit" disabled=move || !can_send() || left() < 0>"Send"</button>
            <p id="composer-help" class="visually-hidden">"Enter sends, Shift+Enter starts a new line."</p>
            <p
                id="composer-count"
                class="counter"
                class:over=move || { left() < 0 }
                aria-live="polite"
            >
                {move || (left() <= COUNTER_FROM as i64).then(|| format!("{} characters left", left()))}
            </p>
        </form>
    }
}

/// Milliseconds on the page's clock (0 on the server, where nobody types).
pub fn js_now() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}
