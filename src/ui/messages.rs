//! The message list: grouped by author, kept at the bottom while the reader is there,
//! "new messages ↓" otherwise, and older history loaded by scrolling to the top.

use super::{
    chat::{Command, use_chat},
    text::{RichText, clock_time},
};
use crate::protocol::ChatMessage;
use leptos::{html, prelude::*};

/// Consecutive messages from one author within this gap share one header.
const GROUP_GAP_MS: i64 = 5 * 60 * 1000;
/// Pixels from the bottom that still count as "at the bottom".
const STICKY_PX: i32 = 48;

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
            let head = prev.is_none_or(|p| p.nick != m.nick || m.ts - p.ts > GROUP_GAP_MS);
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
    // (first seq, last seq, scroll height) at the last render, to tell appends from prepends.
    let last_render = StoredValue::new((0u64, 0u64, 0i32));
    let my_nick = Memo::new(move |_| chat.model.with(|m| m.nick.clone()));
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

    let scroll_to_bottom = move || {
        if let Some(el) = list.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        unseen.set(0);
    };

    Effect::new(move |_| {
        let msgs = messages.get();
        pending.track();
        let Some(el) = list.get() else { return };
        let first = msgs.first().map_or(0, |m| m.seq);
        let last = msgs.last().map_or(0, |m| m.seq);
        let (prev_first, prev_last, prev_height) = last_render.get_value();
        if prev_first != 0 && first < prev_first && last == prev_last {
            // Older messages were prepended: keep the reader's place.
            el.set_scroll_top(el.scroll_top() + el.scroll_height() - prev_height);
        } else if at_bottom.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        } else if last > prev_last {
            let added = msgs.iter().filter(|m| m.seq > prev_last).count();
            unseen.update(|n| *n += added);
        }
        last_render.set_value((first, last, el.scroll_height()));
    });

    let on_scroll = move |_| {
        let Some(el) = list.get_untracked() else { return };
        let bottom = el.scroll_height() - el.scroll_top() - el.client_height() <= STICKY_PX;
        at_bottom.set(bottom);
        if bottom {
            unseen.set(0);
        }
        last_render.update_value(|r| r.2 = el.scroll_height());
        if el.scroll_top() < 40 {
            let room = room.get_untracked();
            let want = chat.model.with_untracked(|m| {
                m.rooms.get(&room).is_some_and(|v| v.has_older && !v.loading_older && v.live)
            });
            if want {
                chat.send(Command::LoadOlder(room));
            }
        }
    };
    let loading_older =
        move || chat.model.with(|m| m.rooms.get(&room.get()).is_some_and(|v| v.loading_older));
    let has_older = move || chat.model.with(|m| m.rooms.get(&room.get()).is_some_and(|v| v.has_older));

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
                <p class="history-edge">
                    {move || {
                        if loading_older() {
                            "Loading older messages…"
                        } else if has_older() {
                            "Scroll up for older messages"
                        } else if messages.with(|m| m.is_empty()) {
                            "No messages yet. Say hello!"
                        } else {
                            "This is the start of the room."
                        }
                    }}
                </p>
                <ol class="message-list">
                    <For
                        each=move || rows(&messages.get())
                        key=|row| (row.msg.seq, row.head)
                        children=move |row| {
                            let Row { msg, head } = row;
                            let nick = msg.nick.clone();
                            let mine = {
                                let nick = nick.clone();
                                move || my_nick.with(|me| me.as_deref() == Some(nick.as_str()))
                            };
                            let ts = msg.ts;
                            let time = move || clock_time(ts, chat.mounted.get());
                            view! {
                                <li class="message" class:mine=mine class:grouped=!head data-seq=msg.seq>
                                    {head.then(|| view! {
                                        <div class="message-head">
                                            <span class="author">{nick.clone()}</span>
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
                            let note = if retrying { "waiting to retry" } else { "sending…" };
                            view! {
                                <li class="message mine pending" class:retrying=retrying aria-label=note>
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
