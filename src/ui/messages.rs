//! The message list: grouped by author, kept at the bottom while the reader is there,
//! "new messages ↓" otherwise. Older history loads while the top of the list is in view
//! (or near it): as the reader scrolls, after each page and once the room is joined,
//! page after page down to "This is the start of the room"; a "Load older messages"
//! button is the fallback (after a failed page). The message the reader is looking at
//! stays where it is on screen as pages arrive above it.
//!
//! The scroll handler rather than an IntersectionObserver watches the top: it runs
//! anyway (for the reader's place), and the observer's bindings cost bundle weight.

use super::{
    chat::{Command, use_chat},
    scroll::{self, Place},
    text::{RichText, clock_time},
};
use crate::protocol::ChatMessage;
use leptos::{html, prelude::*};

/// Consecutive messages from one author within this gap share one header.
const GROUP_GAP_MS: i64 = 5 * 60 * 1000;
/// Pixels from the bottom that still count as "at the bottom".
const STICKY_PX: i32 = 48;
/// The next older page loads once the top of the list is this close above the view, so
/// a reader scrolling up rarely reaches it before the page does.
const PREFETCH_PX: i32 = 600;

/// One row: the message and whether it starts a group (shows author and time).
#[derive(Clone, PartialEq)]
struct Row {
    msg: ChatMessage,
    head: bool,
}

fn rows(messages: &[ChatMessage]) -> Vec<Row> {
    let mut prev: Option<&ChatMessage> = None;
    messages
        .iter()
        .map(|m| {
            let head =
                prev.is_none_or(|p| p.nick != m.nick || p.user != m.user || m.ts - p.ts > GROUP_GAP_MS);
            prev = Some(m);
            Row { msg: m.clone(), head }
        })
        .collect()
}

#[component]
pub fn MessageList(room: Memo<String>, messages: Signal<Vec<ChatMessage>>) -> impl IntoView {
    let chat = use_chat();
    let list: NodeRef<html::Div> = NodeRef::new();
    let at_bottom = RwSignal::new(true);
    let unseen = RwSignal::new(0usize);
    // Where the reader was at the last scroll, to put them back after a prepend.
    let place = StoredValue::new(None::<Place>);
    // (first seq, last seq, joined) at the last render: tells appends from prepends, and
    // when the join was answered.
    let last_render = StoredValue::new((0u64, 0u64, false));
    let my_id = Memo::new(move |_| chat.model.with(|m| m.user.as_ref().map(|u| u.id.clone())));
    // The room's unacknowledged messages: (client_id, text, waiting out a refusal).
    let pending = Memo::new(move |_| {
        let room = room.get();
        chat.model.with(|m| {
            m.outbox
                .iter()
                .filter(|p| p.room == room)
                .map(|p| (p.client_id.clone(), p.text.clone(), p.delivery.is_retrying()))
                .collect::<Vec<_>>()
        })
    });
    let view_state = move |f: fn(&super::state::RoomView) -> bool| {
        chat.model.with(|m| m.rooms.get(&room.get()).is_some_and(f))
    };
    // Before the model knows the room (the server's render, hydration), the seed tells.
    let has_older = move || {
        let known = chat.model.with(|m| m.rooms.get(&room.get()).map(|v| v.has_older));
        known.unwrap_or_else(|| messages.with(|m| m.first().is_some_and(|first| first.seq > 1)))
    };
    let loading = move || view_state(|v| v.loading_older);
    // The button needs the app; without it (the server's render) older pages cannot load.
    let offer_button = move || has_older() && !loading() && chat.mounted.get();
    let edge_text = move || {
        if loading() {
            "Loading older messages…"
        } else if has_older() {
            if chat.mounted.get() { "" } else { "Older messages are not shown here." }
        } else if messages.with(|m| m.is_empty()) {
            "No messages yet. Say hello!"
        } else {
            "This is the start of the room."
        }
    };

    // `try_` reads: this also runs from a frame callback, which may come after the list
    // is gone.
    let load_older = move || {
        let Some(room) = room.try_get_untracked() else { return };
        let wanted = chat.model.try_with_untracked(|m| {
            m.rooms.get(&room).is_some_and(|v| v.has_older && !v.loading_older && v.live)
        });
        if wanted == Some(true) {
            chat.send(Command::LoadOlder(room));
        }
    };

    let scroll_to_bottom = move || {
        if let Some(el) = list.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        unseen.set(0);
    };

    Effect::new(move |_| {
        let msgs = messages.get();
        pending.track();
        let joined = view_state(|v| v.live);
        let Some(el) = list.get() else { return };
        let first = msgs.first().map_or(0, |m| m.seq);
        let last = msgs.last().map_or(0, |m| m.seq);
        let (prev_first, prev_last, was_joined) = last_render.get_value();
        last_render.set_value((first, last, joined));
        let prepended = prev_first != 0 && first < prev_first;
        let added = msgs.iter().filter(|m| m.seq > prev_last).count();
        let (bottom, saved) = (at_bottom.get_untracked(), place.get_value());
        // Effects run in no set order with the list's own update: measure once the DOM
        // has it, before the frame is painted.
        request_animation_frame(move || {
            let kept = prepended && !bottom && saved.is_some_and(|p| scroll::restore(&el, p));
            if kept {
                place.try_set_value(scroll::place(&el));
            } else if bottom {
                el.set_scroll_top(el.scroll_height());
            } else if last > prev_last {
                unseen.try_update(|n| *n += added);
            }
            // Keep loading while the top is in view: as the reader scrolls (above),
            // after each page, and once joined (a short room shows its top at once).
            if (prepended || (joined && !was_joined)) && scroll::near_top(&el, PREFETCH_PX) {
                load_older();
            }
        });
    });

    let on_scroll = move |_| {
        let Some(el) = list.get_untracked() else { return };
        let bottom = el.scroll_height() - el.scroll_top() - el.client_height() <= STICKY_PX;
        at_bottom.set(bottom);
        if bottom {
            unseen.set(0);
        }
        place.set_value(scroll::place(&el));
        if scroll::near_top(&el, PREFETCH_PX) {
            load_older();
        }
    };

    view! {
        <div class="messages-wrap">
            <div
                class="messages"
                node_ref=list
                on:scroll=on_scroll
                role="log"
                aria-live="polite"
                aria-relevant="additions"
                aria-label="Messages"
                tabindex="0"
                data-testid="messages"
            >
                // The list's first child is its top edge, its last the messages (see scroll.rs).
                <div class="history-edge">
                    <p data-testid="history-edge">{edge_text}</p>
                    <button type="button" class="load-older" hidden=move || !offer_button() on:click=move |_| load_older()>
                        "Load older messages"
                    </button>
                </div>
                <ol class="message-list">
                    <For
                        each=move || rows(&messages.get())
                        key=|row| (row.msg.seq, row.head)
                        children=move |row| {
                            let Row { msg, head } = row;
                            let nick = msg.nick.clone();
                            let guest = msg.guest;
                            let mine = {
                                let user = msg.user.clone();
                                move || !user.is_empty() && my_id.with(|me| me.as_deref() == Some(user.as_str()))
                            };
                            let ts = msg.ts;
                            let time = move || clock_time(ts, chat.mounted.get());
                            view! {
                                <li class="message" class:mine=mine class:grouped=!head data-seq=msg.seq>
                                    {head.then(|| view! {
                                        <div class="message-head">
                                            <span class="author" class:guest=guest>{nick.clone()}</span>
                                            <time class="time">{time}</time>
                                        </div>
                                    })}
                                    <div class="text"><RichText text=msg.text.clone() /></div>
                                </li>
                            }
                        }
                    />
                    <For
                        each=move || pending.get()
                        key=|p| (p.0.clone(), p.2)
                        children=move |(_, text, retrying)| {
                            let (class, note) = if retrying {
                                ("message mine pending retrying", "waiting to retry")
                            } else {
                                ("message mine pending", "sending…")
                            };
                            view! {
                                <li class=class aria-label=note>
                                    <div class="text"><RichText text=text /></div>
                                    <span class="pending-note">{note}</span>
                                </li>
                            }
                        }
                    />
                </ol>
            </div>
            <Show when=move || { unseen.get() > 0 }>
                <button type="button" class="new-messages" on:click=move |_| scroll_to_bottom()>
                    {move || format!("{} new messages ↓", unseen.get())}
                </button>
            </Show>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, nick: &str, ts: i64) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            nick: nick.into(),
            text: String::new(),
            ts,
            client_id: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn consecutive_messages_from_one_author_are_grouped() {
        let heads: Vec<bool> =
            rows(&[m(1, "a", 0), m(2, "a", 1000), m(3, "b", 2000), m(4, "b", 2000 + GROUP_GAP_MS + 1)])
                .into_iter()
                .map(|r| r.head)
                .collect();
        assert_eq!(heads, vec![true, false, true, true]);
    }
}
