//! Who is in the room now.

use super::chat::use_chat;
use leptos::prelude::*;

#[component]
pub fn Members(room: Memo<String>) -> impl IntoView {
    let chat = use_chat();
    let members = Memo::new(move |_| {
        chat.model.with(|m| {
            m.rooms
                .get(&room.get())
                .map(|v| v.members.iter().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });
    view! {
        <aside class="members" aria-labelledby="members-title">
            <h2 id="members-title">{move || format!("Online — {}", members.with(|m| m.len()))}</h2>
            <ul data-testid="members">
                <For
                    each=move || members.get()
                    key=|n| n.clone()
                    children=|nick| view! {
                        <li><span class="dot" aria-hidden="true"></span>{nick}</li>
                    }
                />
            </ul>
        </aside>
    }
}
