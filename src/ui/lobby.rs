//! `/`: every room on the server, busiest first.

use super::{chat::use_chat, seed::use_seed, sidebar::JoinForm};
use crate::protocol::RoomInfo;
use leptos::prelude::*;

#[component]
pub fn Lobby() -> impl IntoView {
    let chat = use_chat();
    // Rooms as the server knew them when it rendered the page (and for clients without JS).
    let seed = use_seed();
    Effect::new(move |_| {
        chat.model.update(|m| m.current = None);
        chat.send(super::chat::Command::ListRooms);
    });
    let rooms = move || {
        let live = chat.model.with(|m| m.directory.clone());
        if live.is_empty() { seed.directory.clone().unwrap_or_default() } else { live }
    };
    view! {
        <section class="lobby">
            <h1>"Rooms"</h1>
            <p class="lede">"Pick a room, or make a new one by joining it."</p>
            <div class="lobby-join"><JoinForm id="lobby-join-room" /></div>
            <ul class="directory">
                <For
                    each=rooms
                    key=|r| (r.name.clone(), r.members, r.head)
                    children=|r: RoomInfo| {
                        let href = format!("/r/{}", r.name);
                        let people = if r.members == 1 { "1 person".to_owned() } else { format!("{} people", r.members) };
                        let messages = if r.head == 1 { "1 message".to_owned() } else { format!("{} messages", r.head) };
                        view! {
                            <li>
                                <a href=href class="directory-room">
                                    // A direct message by who is in it ("A & B"), not its dm- name.
                                    <span class="room-name">"#" {if r.dm && !r.topic.is_empty() { r.topic.clone() } else { r.name.clone() }}</span>
                                    <span class="meta">{people} " · " {messages}</span>
                                </a>
                            </li>
                        }
                    }
                />
            </ul>
        </section>
    }
}
