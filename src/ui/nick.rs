//! Asks for a nickname on first visit (remembered in the browser afterwards).

use super::chat::{Command, use_chat};
use crate::protocol::Nick;
use leptos::{html, prelude::*};

#[component]
pub fn NickGate() -> impl IntoView {
    let chat = use_chat();
    let open = move || chat.mounted.get() && chat.model.with(|m| m.nick.is_none());
    view! { <Show when=open><NickDialog /></Show> }
}

#[component]
fn NickDialog() -> impl IntoView {
    let chat = use_chat();
    let value = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let input: NodeRef<html::Input> = NodeRef::new();
    let rejected = move || chat.model.with(|m| m.nick_rejected.clone());
    let nav = super::nav::use_nav();
    let sign_in = move || format!("/login?next={}", nav.path());
    Effect::new(move |_| {
        if let Some(el) = input.get() {
            let _ = el.focus();
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match Nick::parse(&value.get_untracked()) {
            Ok(nick) => {
                error.set(None);
                chat.send(Command::Hello(nick.as_str().to_owned()));
            }
            Err(err) => error.set(Some(err.to_string())),
        }
    };
    view! {
        <div class="overlay">
            <form class="nick-dialog" role="dialog" aria-modal="true" aria-labelledby="nick-title" on:submit=submit>
                <h2 id="nick-title">"Welcome to Confab"</h2>
                <label for="nick-input">"Choose a nickname"</label>
                <input
                    id="nick-input"
                    node_ref=input
                    type="text"
                    maxlength="32"
                    autocomplete="nickname"
                    bind:value=value
                    aria-describedby="nick-error"
                />
                <p id="nick-error" class="field-error" role="alert">{move || error.get().or_else(rejected)}</p>
                <button type="submit">"Start chatting as a guest"</button>
                <p class="hint"><a href=sign_in>"Sign in or create an account"</a></p>
            </form>
        </div>
    }
}
