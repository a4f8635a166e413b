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

    // The message answered, when it is one of this room's.
    let replying = Memo::new(move |_| {
        chat.replying.get().filter(|(r, _, _)| *r == room.get()).map(|(_, seq, nick)| (seq, nick))
    });
    // `@` completion: the usernames here that start with the word being typed.
    let suggestions = Memo::new(move |_| {
        let prefix = text.with(|t| mention_prefix(t).map(str::to_owned));
        let Some(prefix) = prefix else { return Vec::new() };
        chat.model.with(|m| {
            m.rooms
                .get(&room.get())
                .map(|v| v.usernames.iter().filter(|u| u.starts_with(&prefix)).take(6).cloned().collect())
                .unwrap_or_default()
        })
    });
    let complete = move |username: String| {
        text.update(|t| complete_mention(t, &username));
        super::actions::focus_composer();
    };

    // Editing one of my messages here: the composer holds its text until saved.
    let editing =
        Memo::new(move |_| chat.editing.get().filter(|(r, _, _)| *r == room.get()).map(|(_, seq, _)| seq));
    Effect::new(move |_| {
        if let Some((r, _, original)) = chat.editing.get()
            && r == room.get_untracked()
        {
            text.set(original);
        }
    });
    let stop_editing = move || {
        chat.editing.set(None);
        text.set(String::new());
    };

    let send = move || {
        let body = text.get_untracked();
        if body.trim().is_empty() || left() < 0 {
            return;
        }
        if let Some(target) = editing.get_untracked() {
            let unchanged = chat.editing.with_untracked(|e| e.as_ref().is_some_and(|(_, _, t)| *t == body));
            if !unchanged {
                chat.send(Command::Edit { room: room.get_untracked(), target, text: body });
            }
            return stop_editing();
        }
        let reply_to = replying.get_untracked().map(|(seq, _)| seq);
        chat.send(Command::Send { room: room.get_untracked(), text: body, reply_to });
        chat.replying.set(None);
        text.set(String::new());
        last_typing.set_value(f64::NEG_INFINITY);
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Tab" && !ev.shift_key() {
            if let Some(first) = suggestions.with_untracked(|s| s.first().cloned()) {
                ev.prevent_default();
                complete(first);
            }
        } else if ev.key() == "Escape" && editing.get_untracked().is_some() {
            stop_editing();
        } else if ev.key() == "Escape" && replying.get_untracked().is_some() {
            chat.replying.set(None);
        } else if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
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
            <p class="replying" data-testid="editing" hidden=move || editing.get().is_none()>
                "Editing your message (Enter saves, Escape cancels)"
                <button type="button" on:click=move |_| stop_editing()>"Cancel edit"</button>
            </p>
            {move || replying.get().map(|(_, nick)| view! {
                <p class="replying" data-testid="replying">
                    {format!("Replying to {nick}")}
                    <button type="button" on:click=move |_| chat.replying.set(None)>"Cancel reply"</button>
                </p>
            })}
            <ul class="suggestions" aria-label="Mention suggestions (Tab takes the first)" hidden=move || suggestions.with(|s| s.is_empty())>
                {move || suggestions.get().into_iter().map(|u| {
                    let name = u.clone();
                    view! { <li><button type="button" on:click=move |_| complete(name.clone())>{format!("@{u}")}</button></li> }
                }).collect_view()}
            </ul>
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
            <button type="submit" disabled=move || !can_send() || left() < 0>
                {move || if editing.get().is_some() { "Save" } else { "Send" }}
            </button>
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

/// The username being typed at the end of `text` (after an `@` that starts a word).
pub fn mention_prefix(text: &str) -> Option<&str> {
    let at = text.rfind('@')?;
    let word = &text[at + 1..];
    let starts_word = text[..at].chars().last().is_none_or(char::is_whitespace);
    let name_like = word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    (starts_word && name_like && word.len() <= 32).then_some(word)
}

/// Replaces the `@prefix` at the end of `text` with `@username `.
pub fn complete_mention(text: &mut String, username: &str) {
    if let Some(prefix) = mention_prefix(text) {
        let keep = text.len() - prefix.len();
        text.truncate(keep);
        text.push_str(username);
        text.push(' ');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_takes_the_word_after_an_at() {
        assert_eq!(mention_prefix("hi @an"), Some("an"));
        assert_eq!(mention_prefix("@"), Some(""));
        assert_eq!(mention_prefix("mail a@b"), None, "inside a word");
        assert_eq!(mention_prefix("@ann done"), None, "finished");
        let mut t = "thanks @an".to_owned();
        complete_mention(&mut t, "ann");
        assert_eq!(t, "thanks @ann ");
    }
}
