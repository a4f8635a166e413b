//! What can be done to one message: the list's one click handler reads what a row's
//! button asks for (`data-act`, see `row`) and does it; and the emoji picker, one panel
//! per room: common emoji, filtered by name as you type.

use super::chat::{Command, use_chat};
use crate::protocol::Seq;
use leptos::{html, prelude::*};

/// The emoji the picker offers, with the words it finds them by.
pub const EMOJI: [(&str, &str); 40] = [
    ("👍", "thumbs up yes ok +1"),
    ("👎", "thumbs down no -1"),
    ("😀", "grin smile happy"),
    ("😂", "joy laugh tears lol"),
    ("🙂", "slight smile"),
    ("😉", "wink"),
    ("😍", "love heart eyes"),
    ("🤔", "thinking hmm"),
    ("😮", "wow surprised open mouth"),
    ("😢", "cry sad tear"),
    ("😡", "angry mad"),
    ("😅", "sweat smile phew"),
    ("🙏", "pray thanks please"),
    ("👏", "clap applause"),
    ("🙌", "raised hands hooray"),
    ("💪", "strong muscle"),
    ("👀", "eyes looking"),
    ("🎉", "tada party celebrate"),
    ("🔥", "fire hot lit"),
    ("✨", "sparkles"),
    ("❤️", "heart love red"),
    ("💯", "hundred perfect"),
    ("✅", "check done yes"),
    ("❌", "cross no wrong"),
    ("⚠️", "warning caution"),
    ("🚀", "rocket launch ship"),
    ("🐛", "bug"),
    ("💡", "idea bulb"),
    ("📌", "pin"),
    ("⏰", "alarm clock time"),
    ("☕", "coffee tea"),
    ("🍕", "pizza food"),
    ("🎂", "cake birthday"),
    ("😎", "cool sunglasses"),
    ("🤝", "handshake deal"),
    ("👋", "wave hello bye"),
    ("😴", "sleep tired"),
    ("🤯", "mind blown"),
    ("🥳", "party face"),
    ("👌", "ok perfect"),
];

/// The emoji whose words contain `query` (all of them for an empty one).
pub fn find_emoji(query: &str) -> Vec<&'static str> {
    let q = query.trim().to_ascii_lowercase();
    EMOJI.iter().filter(|(_, words)| q.is_empty() || words.contains(q.as_str())).map(|(e, _)| *e).collect()
}

/// The emoji picker of a room, for the message `picking` names.
#[component]
pub fn EmojiPicker(room: Memo<String>, picking: RwSignal<Option<Seq>>) -> impl IntoView {
    let chat = use_chat();
    let query = RwSignal::new(String::new());
    let input: NodeRef<html::Input> = NodeRef::new();
    Effect::new(move |_| {
        if picking.get().is_some()
            && let Some(el) = input.get()
        {
            let _ = el.focus();
        }
    });
    let choose = move |emoji: &'static str| {
        if let Some(target) = picking.get_untracked() {
            chat.send(Command::React {
                room: room.get_untracked(),
                target,
                emoji: emoji.to_owned(),
                on: true,
            });
        }
        picking.set(None);
        query.set(String::new());
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            picking.set(None);
        } else if ev.key() == "Enter" {
            ev.prevent_default();
            if let Some(first) = query.with_untracked(|q| find_emoji(q).first().copied()) {
                choose(first);
            }
        }
    };
    view! {
        <div class="picker" role="dialog" aria-label="Pick a reaction" hidden=move || picking.get().is_none() on:keydown=on_keydown>
            <label for="emoji-search" class="visually-hidden">"Search emoji"</label>
            <input id="emoji-search" type="search" placeholder="Search emoji" autocomplete="off" node_ref=input bind:value=query />
            <div class="emoji-grid">
                {move || find_emoji(&query.get()).into_iter().map(|e| view! {
                    <button type="button" class="emoji" aria-label=format!("React with {e}") on:click=move |_| choose(e)>{e}</button>
                }).collect_view()}
            </div>
            <button type="button" class="close" on:click=move |_| picking.set(None)>"Close"</button>
        </div>
    }
}

/// What a row's button asked for, read from its `data-` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowAct {
    Reply,
    React,
    Edit,
    Delete,
    Toggle { emoji: String, on: bool },
    Seek(Seq),
}

impl RowAct {
    /// `get` reads one of the button's attributes.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Option<RowAct> {
        Some(match get("data-act")?.as_str() {
            "reply" => RowAct::Reply,
            "react" => RowAct::React,
            "edit" => RowAct::Edit,
            "delete" => RowAct::Delete,
            "toggle" => RowAct::Toggle { emoji: get("data-emoji")?, on: get("data-on")? == "true" },
            "seek" => RowAct::Seek(get("data-target")?.parse().ok()?),
            _ => return None,
        })
    }
}

/// Does what a row's button asked for, on message `seq` of `room`.
pub fn act(chat: super::chat::Chat, room: String, seq: Seq, what: RowAct, picking: RwSignal<Option<Seq>>) {
    let msg = chat.model.with_untracked(|m| m.rooms.get(&room).and_then(|v| v.message(seq)).cloned());
    match what {
        RowAct::Reply => {
            if let Some(m) = msg {
                chat.editing.set(None);
                chat.replying.set(Some((room, seq, m.nick)));
                focus_composer();
            }
        }
        RowAct::React => picking.update(|p| *p = if *p == Some(seq) { None } else { Some(seq) }),
        RowAct::Edit => {
            if let Some(m) = msg {
                chat.replying.set(None);
                chat.editing.set(Some((room, seq, m.text)));
                focus_composer();
            }
        }
        RowAct::Delete => {
            if confirm("Delete this message for everyone?") {
                chat.send(Command::Delete { room, target: seq });
            }
        }
        RowAct::Toggle { emoji, on } => chat.send(Command::React { room, target: seq, emoji, on }),
        RowAct::Seek(original) => chat.seek.set(Some((room, original))),
    }
}

/// Puts the keyboard in the composer (after choosing to reply).
pub fn focus_composer() {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        if let Some(el) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("composer-text"))
            .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
        {
            let _ = el.focus();
        }
    }
}

/// Asks the reader to confirm (the browser's own dialog: keyboard-usable and announced).
pub fn confirm(question: &str) -> bool {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window().and_then(|w| w.confirm_with_message(question).ok()).unwrap_or(false)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = question;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buttons_attributes_say_what_it_does() {
        let attrs = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(RowAct::read(attrs(&[("data-act", "reply")])), Some(RowAct::Reply));
        assert_eq!(
            RowAct::read(attrs(&[("data-act", "toggle"), ("data-emoji", "🎉"), ("data-on", "false")])),
            Some(RowAct::Toggle { emoji: "🎉".into(), on: false })
        );
        assert_eq!(
            RowAct::read(attrs(&[("data-act", "seek"), ("data-target", "12")])),
            Some(RowAct::Seek(12))
        );
        assert_eq!(RowAct::read(attrs(&[("data-act", "seek"), ("data-target", "x")])), None);
        assert_eq!(RowAct::read(attrs(&[("data-act", "dance")])), None);
        assert_eq!(RowAct::read(attrs(&[])), None);
    }

    #[test]
    fn the_picker_finds_emoji_by_name_and_offers_only_real_ones() {
        assert_eq!(find_emoji("party"), vec!["🎉", "🥳"]);
        assert_eq!(find_emoji("").len(), EMOJI.len());
        assert!(find_emoji("zzz").is_empty());
        for (e, _) in EMOJI {
            assert!(crate::protocol::is_emoji(e), "{e}");
        }
    }
}
