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
    actions::EmojiPicker,
    chat::{Command, use_chat},
    row::{RowCtx, RowParts},
    scroll::{self, Place},
    text::clock_time,
};
use crate::protocol::{ChatMessage, Seq};
use leptos::{html, prelude::*};

/// Consecutive messages from one author within this gap share one header.
const GROUP_GAP_MS: i64 = 5 * 60 * 1000;
/// Pixels from the bottom that still count as "at the bottom".
const STICKY_PX: i32 = 48;
/// The next older page loads once the top of the list is this close above the view, so
/// a reader scrolling up rarely reaches it before the page does.
const PREFETCH_PX: i32 = 600;

/// One row: the message, whether it starts a group (shows author and time), whether the
/// "new messages" line goes above it, and the original it answers (author, first line).
#[derive(Clone, PartialEq)]
struct Row {
    msg: ChatMessage,
    head: bool,
    divider: bool,
    quote: Option<(Seq, String, String)>,
    /// Changes whenever what the row shows does (the list re-renders only such rows).
    rev: u64,
}

/// A row with how the reader relates to it: what `<li>` shows, and its key.
#[derive(Clone, PartialEq)]
struct Shown {
    row: Row,
    ctx: RowCtx,
    mentioned: bool,
    key: u64,
}

/// The rows of `messages`; the divider goes above the first message after `divider` that
/// is not `me`'s.
fn rows(messages: &[ChatMessage], divider: Option<Seq>, me: Option<&str>) -> Vec<Row> {
    let mut prev: Option<&ChatMessage> = None;
    let mut divided = false;
    messages
        .iter()
        .map(|m| {
            let head =
                prev.is_none_or(|p| p.nick != m.nick || p.user != m.user || m.ts - p.ts > GROUP_GAP_MS);
            prev = Some(m);
            let divider = !divided && divider.is_some_and(|d| m.seq > d) && me != Some(m.user.as_str());
            divided |= divider;
            // The server's quote of the original (kept up by its edits and deletion);
            // the original itself if it is held and the quote is not there.
            let quote =
                m.reply_to.map(|seq| match (&m.quote, messages.binary_search_by_key(&seq, |o| o.seq)) {
                    (Some(q), _) => {
                        let line = if q.deleted { "message deleted".to_owned() } else { q.text.clone() };
                        (seq, q.nick.clone(), line)
                    }
                    (None, Ok(at)) => {
                        let o = &messages[at];
                        let line = if o.deleted {
                            "message deleted".to_owned()
                        } else {
                            crate::protocol::quote_line(&o.text)
                        };
                        (seq, o.nick.clone(), line)
                    }
                    (None, Err(_)) => (seq, String::new(), "an earlier message".to_owned()),
                });
            let rev = revision(m, head, divider, &quote);
            Row { msg: m.clone(), head, divider, quote, rev }
        })
        .collect()
}

/// FNV-1a over what a row shows.
fn revision(m: &ChatMessage, head: bool, divider: bool, quote: &Option<(Seq, String, String)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(m.text.as_bytes());
    eat(&[u8::from(head), u8::from(divider), u8::from(m.deleted)]);
    eat(&m.edited_ts.unwrap_or(0).to_le_bytes());
    for r in &m.reactions {
        eat(r.emoji.as_bytes());
        for u in &r.users {
            eat(u.as_bytes());
        }
    }
    if let Some((_, nick, line)) = quote {
        eat(nick.as_bytes());
        eat(line.as_bytes());
    }
    h
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
    let picking = RwSignal::new(None::<Seq>);
    let divider = Memo::new(move |_| chat.model.with(|m| m.rooms.get(&room.get()).and_then(|v| v.divider)));
    // The message to bring into view (a reply's original, a search hit): shown once it
    // is loaded, older pages loaded until it is.
    let sought = RwSignal::new(None::<Seq>);
    Effect::new(move |_| {
        let Some((r, seq)) = chat.seek.get() else { return };
        if r != room.get() {
            return;
        }
        let held = messages.with(|m| m.iter().any(|x| x.seq == seq));
        if held {
            chat.seek.set(None);
            sought.set(Some(seq));
            // The reader is no longer at the bottom: the list stops following new
            // messages. Two frames: after the list's own scroll for what just arrived.
            at_bottom.set(false);
            request_animation_frame(move || request_animation_frame(move || scroll_to_seq(seq)));
        } else if chat
            .model
            .with(|m| m.rooms.get(&r).is_some_and(|v| v.live && v.has_older && !v.loading_older))
        {
            chat.send(Command::LoadOlder(r));
        } else if chat.model.with(|m| m.rooms.get(&r).is_some_and(|v| v.live && !v.has_older)) {
            // Not in the room (any more): nothing to show.
            chat.seek.set(None);
        }
    });
    // Read state: while the room is on screen, the reader at its bottom and the tab
    // visible, what is here is read (checked each second: one marker per second at most).
    Effect::new(move |_| {
        chat.clock.track();
        let room = room.get_untracked();
        if !at_bottom.get_untracked() || !page_visible() {
            return;
        }
        let (last, read) = chat
            .model
            .with_untracked(|m| m.rooms.get(&room).map_or((None, 0), |v| (v.last_seq(), v.last_read)));
        if let Some(last) = last
            && last > read
            && chat
                .model
                .with_untracked(|m| m.account.is_some() && m.rooms.get(&room).is_some_and(|v| v.live))
        {
            chat.send(Command::Read { room, seq: last });
        }
    });
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
                <ol class="message-list" on:click=move |ev| on_row_click(ev, room, picking)>
                    <For
                        each=move || {
                            let me = my_id.get();
                            let interactive = chat.mounted.get();
                            let rows = messages.with(|msgs| rows(msgs, divider.get(), me.as_deref()));
                            chat.model.with(|m| {
                                rows.into_iter()
                                    .map(|row| {
                                        let mine = m.is_mine(&row.msg);
                                        let ctx = RowCtx {
                                            me: me.clone(),
                                            mine: mine && !row.msg.deleted,
                                            deletable: !row.msg.deleted && m.may_delete(&row.msg),
                                            interactive,
                                            time: clock_time(row.msg.ts, interactive),
                                        };
                                        let mentioned = m.mentions_me(&row.msg);
                                        let flags = u64::from(ctx.mine) | u64::from(ctx.deletable) << 1
                                            | u64::from(interactive) << 2 | u64::from(mentioned) << 3;
                                        let key = row.rev ^ flags.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                                        Shown { row, ctx, mentioned, key }
                                    })
                                    .collect::<Vec<_>>()
                            })
                        }
                        key=|s| (s.row.msg.seq, s.key)
                        children=move |shown| {
                            let Shown { row: Row { msg, head, divider, quote, .. }, ctx, mentioned, .. } = shown;
                            let seq = msg.seq;
                            let mut class = String::from("message");
                            for (on, name) in [(ctx.mine, " mine"), (!head, " grouped"), (msg.deleted, " deleted"), (mentioned, " mentioned")] {
                                if on {
                                    class.push_str(name);
                                }
                            }
                            let nodes = super::row::row(&msg, &RowParts { head, divider, quote }, &ctx);
                            row_item(class, seq, nodes, sought)
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
                                    <div class="text">{text}</div>
                                    <span class="pending-note">{note}</span>
                                </li>
                            }
                        }
                    />
                </ol>
            </div>
            <EmojiPicker room=room picking=picking />
            <Show when=move || { unseen.get() > 0 }>
                <button type="button" class="new-messages" on:click=move |_| scroll_to_bottom()>
                    {move || format!("{} new messages ↓", unseen.get())}
                </button>
            </Show>
        </div>
    }
}

/// One message's `<li>`: the server writes its inside as escaped HTML, the browser
/// builds it with DOM calls once the element is there.
fn row_item(
    class: String,
    seq: Seq,
    nodes: Vec<super::row::Node>,
    sought: RwSignal<Option<Seq>>,
) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    {
        let li: NodeRef<html::Li> = NodeRef::new();
        li.on_load(move |el| crate::client::dom::fill(&el, &nodes));
        view! { <li class=class class:sought=move || sought.get() == Some(seq) data-seq=seq node_ref=li></li> }
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let html = super::row::to_html(&nodes);
        view! { <li class=class class:sought=move || sought.get() == Some(seq) data-seq=seq inner_html=html></li> }
    }
}

/// The list's one click handler: a row's button says what it does in its `data-act`.
fn on_row_click(ev: leptos::ev::MouseEvent, room: Memo<String>, picking: RwSignal<Option<Seq>>) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(target) = ev.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let Some(button) = target.closest("[data-act]").ok().flatten() else { return };
        let Some(seq) = button
            .closest("li[data-seq]")
            .ok()
            .flatten()
            .and_then(|li| li.get_attribute("data-seq"))
            .and_then(|s| s.parse().ok())
        else {
            return;
        };
        if let Some(what) = super::actions::RowAct::read(|name| button.get_attribute(name)) {
            super::actions::act(use_chat(), room.get_untracked(), seq, what, picking);
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, room, picking);
}

/// Scrolls the message with this seq into the middle of the view.
fn scroll_to_seq(seq: Seq) {
    #[cfg(feature = "hydrate")]
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector(&format!("li[data-seq=\"{seq}\"]")).ok().flatten())
    {
        el.scroll_into_view();
    }
    let _ = seq;
}

/// The tab is on screen (always, on the server).
fn page_visible() -> bool {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window().and_then(|w| w.document()).is_none_or(|d| !d.hidden())
    }
    #[cfg(not(feature = "hydrate"))]
    true
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
        let heads: Vec<bool> = rows(
            &[m(1, "a", 0), m(2, "a", 1000), m(3, "b", 2000), m(4, "b", 2000 + GROUP_GAP_MS + 1)],
            None,
            None,
        )
        .into_iter()
        .map(|r| r.head)
        .collect();
        assert_eq!(heads, vec![true, false, true, true]);
    }

    #[test]
    fn the_divider_goes_above_the_first_unread_message_of_someone_else() {
        let mut msgs = vec![m(1, "a", 0), m(2, "me", 0), m(3, "a", 0), m(4, "a", 0)];
        msgs[1].user = "me".into();
        let divided: Vec<Seq> =
            rows(&msgs, Some(1), Some("me")).into_iter().filter(|r| r.divider).map(|r| r.msg.seq).collect();
        assert_eq!(divided, vec![3]);
        assert!(rows(&msgs, None, Some("me")).iter().all(|r| !r.divider));
    }

    #[test]
    fn a_reply_quotes_the_first_line_of_its_original_and_changes_with_it() {
        let mut msgs = vec![m(1, "a", 0), m(5, "b", 0)];
        msgs[0].text = "first line\nsecond".into();
        msgs[1].reply_to = Some(1);
        let before = rows(&msgs, None, None);
        assert_eq!(before[1].quote, Some((1, "a".into(), "first line".into())));
        msgs[0].deleted = true;
        let after = rows(&msgs, None, None);
        assert_eq!(after[1].quote, Some((1, "a".into(), "message deleted".into())));
        assert_ne!(before[1].rev, after[1].rev, "the reply re-renders");
        msgs[1].reply_to = Some(0);
        assert_eq!(
            rows(&msgs, None, None)[1].quote.as_ref().map(|q| q.2.as_str()),
            Some("an earlier message")
        );
    }
}
