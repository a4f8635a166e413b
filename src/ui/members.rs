//! Who is in the room now.

use super::chat::use_chat;
use leptos::prelude::*;

/// Percent-encodes a name for a query string (the browser's own encoder; on the server,
/// which renders the list before anyone is in it, a plain fallback).
fn url_encode(s: &str) -> String {
    #[cfg(feature = "hydrate")]
    {
        js_sys::encode_uri_component(s).into()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    }
}

#[component]
pub fn Members(room: Memo<String>) -> impl IntoView {
    let chat = use_chat();
    let members = Memo::new(move |_| {
        chat.model.with(|m| {
            m.rooms
                .get(&room.get())
                .map(|v| v.members.iter().map(|n| (n.clone(), v.guests.contains(n))).collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });
    // In a room of more than 256 people the server names only 256: count the rest.
    let people = Memo::new(move |_| chat.model.with(|m| m.rooms.get(&room.get()).map_or(0, |v| v.people())));
    let unnamed = move || people.get().saturating_sub(members.with(|m| m.len()));
    let signed_in = move || chat.model.with(|m| m.account.is_some());
    view! {
        <aside class="members" aria-labelledby="members-title">
            <h2 id="members-title">{move || format!("Online — {}", people.get())}</h2>
            <ul data-testid="members">
                <For
                    each=move || members.get()
                    key=|n| n.clone()
                    children=move |(nick, guest)| {
                        let dm = (!guest && signed_in()).then(|| format!("/dm?to={}", url_encode(&nick)));
                        view! {
                            <li>
                                <span class="dot" aria-hidden="true"></span>
                                // Without an href (a guest, or me a guest) it is plain text.
                                <a href=dm class:guest=guest>{nick.clone()}</a>
                            </li>
                        }
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
