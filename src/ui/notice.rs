//! The last error worth telling the user (a room that could not be joined, older
//! messages that could not be loaded, a message the server refused), until dismissed.

use super::chat::use_chat;
use leptos::prelude::*;

#[component]
pub fn Notice() -> impl IntoView {
    let chat = use_chat();
    let text = Memo::new(move |_| chat.model.with(|m| m.notice.as_ref().map(|(_, message)| message.clone())));
    let dismiss = move |_| chat.model.update(|m| m.notice = None);
    // Always in the page, hidden when empty: an alert region that is there before its
    // text changes is announced reliably.
    view! {
        <div class="notice" role="alert" data-testid="notice" hidden=move || text.with(Option::is_none)>
            <p>{move || text.get().unwrap_or_default()}</p>
            <button type="button" on:click=dismiss>"Dismiss"</button>
        </div>
    }
}
