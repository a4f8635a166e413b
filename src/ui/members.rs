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
    // In a room of more than 256 people the server names only 256: count the rest.
    let people = Memo::new(move |_| chat.model.with(|m| m.rooms.get(&room.get()).map_or(0, |v| v.people())));
    let unnamed = move || people.get().saturating_sub(members.with(|m| m.len()));
    view! {
        <aside class="members" aria-labelledby="members-title">
            <h2 id="members-title">{move || format!("Online — {}", people.get())}</h2>
            <ul data-testid="members">
                <For
                    each=move || members.get()
                    key=|n| n.clone()
                    children=|nick| view! {
                        <li><span class="dot" aria-hidden="true"></span>{nick}</li>
                    }
                />
            </ul>
            <p class="members-more">
                {move || match unnamed() {
                    0 => String::new(),
                    n => format!("and {n} more"),
                }}
            </p>
        </aside>
    }
}
