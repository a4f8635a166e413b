//! What one message looks like, as plain data: a small tree of elements and text that
//! the browser builds with DOM calls (`client::dom`) and the server writes as escaped
//! HTML (`to_html`). Leptos renders the list and each row's `<li>`; what is inside a row
//! comes from here.
//!
//! Why not Leptos views for the inside: every element, attribute and branch of a view is
//! its own generic code in the WASM bundle, and a message row has many (Markdown blocks
//! and styles, a quote, reactions, action buttons). One tree type and one builder cost a
//! fraction. Buttons carry what they do as `data-act` attributes; one click handler on the
//! list reads them (no listener per button).
//!
//! User text only ever becomes text nodes (or escaped text in HTML): a `<script>` in a
//! message stays text, whatever Markdown surrounds it.

use super::markdown::{BOLD, Block, CODE, ITALIC, LINK, Line, MENTION, parse};
use crate::protocol::{ChatMessage, Seq};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    El(El),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct El {
    pub tag: &'static str,
    pub attrs: Vec<(&'static str, String)>,
    pub kids: Vec<Node>,
}

fn el(tag: &'static str, attrs: Vec<(&'static str, String)>, kids: Vec<Node>) -> Node {
    Node::El(El { tag, attrs, kids })
}

fn text(s: impl Into<String>) -> Node {
    Node::Text(s.into())
}

fn class(c: &str) -> (&'static str, String) {
    ("class", c.to_owned())
}

/// A button that does `act` (with `data-` details) when clicked.
fn button(cls: &str, act: &str, mut attrs: Vec<(&'static str, String)>, kids: Vec<Node>) -> Node {
    attrs.insert(0, ("type", "button".to_owned()));
    attrs.insert(1, class(cls));
    attrs.push(("data-act", act.to_owned()));
    el("button", attrs, kids)
}

/// How the reader relates to the message, and what the row may offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCtx {
    /// My user id.
    pub me: Option<String>,
    pub mine: bool,
    pub deletable: bool,
    /// The app is running (buttons work); false in the server's render.
    pub interactive: bool,
    /// The time shown ("14:05").
    pub time: String,
}

/// What a row shows besides its message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowParts {
    /// It starts a group: author and time shown.
    pub head: bool,
    /// The "new messages" line goes above it.
    pub divider: bool,
    /// The original it answers: (seq, author, first line).
    pub quote: Option<(Seq, String, String)>,
}

/// The children of a message's `<li>`.
pub fn row(msg: &ChatMessage, parts: &RowParts, ctx: &RowCtx) -> Vec<Node> {
    let mut out = Vec::new();
    if parts.divider {
        out.push(el(
            "div",
            vec![class("divider"), ("role", "separator".into()), ("data-testid", "new-divider".into())],
            vec![text("New messages")],
        ));
    }
    if parts.head {
        let author = if msg.guest { "author guest" } else { "author" };
        out.push(el(
            "div",
            vec![class("message-head")],
            vec![
                el("span", vec![class(author)], vec![text(msg.nick.clone())]),
                el("time", vec![class("time")], vec![text(ctx.time.clone())]),
            ],
        ));
    }
    if let Some((seq, nick, line)) = &parts.quote {
        out.push(button(
            "quote",
            "seek",
            vec![("data-target", seq.to_string())],
            vec![
                el("span", vec![class("visually-hidden")], vec![text("Reply to ")]),
                el("b", vec![], vec![text(nick.clone())]),
                text(format!(" {line}")),
            ],
        ));
    }
    if msg.deleted {
        out.push(el("div", vec![class("text tombstone")], vec![text("message deleted")]));
        return out;
    }
    let jumbo = super::markdown::is_jumbo(&msg.text);
    let mut body = blocks(parse(&msg.text, &msg.mentions));
    if msg.edited_ts.is_some() {
        body.push(el("span", vec![class("edited")], vec![text(" (edited)")]));
    }
    out.push(el("div", vec![class(if jumbo { "text jumbo" } else { "text" })], body));
    if !msg.reactions.is_empty() {
        let buttons = msg
            .reactions
            .iter()
            .map(|r| {
                let on = ctx.me.as_ref().is_some_and(|me| r.users.contains(me));
                let who = r.nicks.join(", ");
                button(
                    "reaction",
                    "toggle",
                    vec![
                        ("aria-pressed", on.to_string()),
                        ("title", who.clone()),
                        ("aria-label", format!("{} {}: {who}", r.emoji, r.count)),
                        ("data-emoji", r.emoji.clone()),
                        ("data-on", (!on).to_string()),
                    ],
                    vec![text(format!("{} {}", r.emoji, r.count))],
                )
            })
            .collect();
        out.push(el(
            "div",
            vec![class("reactions"), ("role", "group".into()), ("aria-label", "Reactions".into())],
            buttons,
        ));
    }
    if ctx.interactive {
        let mut actions = vec![
            button("", "reply", vec![], vec![text("Reply")]),
            button("", "react", vec![("aria-haspopup", "dialog".into())], vec![text("React")]),
        ];
        if ctx.mine {
            actions.push(button("", "edit", vec![], vec![text("Edit")]));
        }
        if ctx.deletable {
            actions.push(button("danger", "delete", vec![], vec![text("Delete")]));
        }
        out.push(el(
            "div",
            vec![class("actions"), ("role", "group".into()), ("aria-label", "Message actions".into())],
            actions,
        ));
    }
    out
}

/// The Markdown blocks as nodes.
pub fn blocks(blocks: Vec<Block>) -> Vec<Node> {
    blocks
        .into_iter()
        .map(|b| match b {
            Block::Para(lines) => el("p", vec![], lines_of(lines)),
            Block::Code(code) => el("pre", vec![], vec![el("code", vec![], vec![text(code)])]),
            Block::Quote(lines) => el("blockquote", vec![], lines_of(lines)),
            Block::List { ordered, items } => el(
                if ordered { "ol" } else { "ul" },
                vec![],
                items.into_iter().map(|l| el("li", vec![], spans(l))).collect(),
            ),
        })
        .collect()
}

fn lines_of(lines: Vec<Line>) -> Vec<Node> {
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if i > 0 {
            out.push(el("br", vec![], vec![]));
        }
        out.extend(spans(line));
    }
    out
}

fn spans(line: Line) -> Vec<Node> {
    line.into_iter()
        .map(|s| {
            let mut node = if s.style & LINK != 0 {
                let attrs = vec![
                    ("href", s.text.clone()),
                    ("target", "_blank".into()),
                    ("rel", "noopener noreferrer nofollow".into()),
                ];
                el("a", attrs, vec![text(s.text)])
            } else if s.style & MENTION != 0 {
                el("span", vec![class("mention")], vec![text(s.text)])
            } else {
                text(s.text)
            };
            for (bit, tag) in [(CODE, "code"), (ITALIC, "em"), (BOLD, "strong")] {
                if s.style & bit != 0 {
                    node = el(tag, vec![], vec![node]);
                }
            }
            node
        })
        .collect()
}

/// The nodes as HTML, every text and attribute value escaped (the server's render).
pub fn to_html(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        write_html(node, &mut out);
    }
    out
}

fn write_html(node: &Node, out: &mut String) {
    match node {
        Node::Text(t) => escape(t, out),
        Node::El(e) => {
            out.push('<');
            out.push_str(e.tag);
            for (name, value) in &e.attrs {
                out.push(' ');
                out.push_str(name);
                out.push_str("=\"");
                escape(value, out);
                out.push('"');
            }
            out.push('>');
            if e.tag == "br" {
                return;
            }
            for kid in &e.kids {
                write_html(kid, out);
            }
            out.push_str("</");
            out.push_str(e.tag);
            out.push('>');
        }
    }
}

/// Appends `s` escaped for HTML text and attribute values (the server's pages use it
/// too).
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reaction;

    fn msg(text: &str) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq: 7,
            nick: "Ann".into(),
            text: text.into(),
            user: "1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn markup_in_a_message_is_text_in_the_tree_and_escaped_in_html() {
        let nodes = row(
            &msg("**<img src=x onerror=alert(1)>** <script>x</script>"),
            &RowParts::default(),
            &RowCtx::default(),
        );
        let html = to_html(&nodes);
        assert!(html.contains("<strong>&lt;img src=x onerror=alert(1)&gt;</strong>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<img") && !html.contains("<script"), "{html}");
    }

    #[test]
    fn a_row_shows_its_head_quote_edit_mark_reactions_and_actions() {
        let mut m = msg("hi @bob");
        m.mentions = vec!["bob".into()];
        m.edited_ts = Some(5);
        m.reactions = vec![Reaction {
            emoji: "🎉".into(),
            count: 2,
            users: vec!["2".into(), "1".into()],
            nicks: vec!["Bob".into(), "Ann".into()],
        }];
        let parts = RowParts { head: true, divider: true, quote: Some((3, "Bob".into(), "first".into())) };
        let ctx = RowCtx {
            me: Some("1".into()),
            mine: true,
            deletable: true,
            interactive: true,
            time: "10:00".into(),
        };
        let html = to_html(&row(&m, &parts, &ctx));
        for part in [
            r#"<div class="divider" role="separator" data-testid="new-divider">New messages</div>"#,
            r#"<span class="author">Ann</span><time class="time">10:00</time>"#,
            r#"<button type="button" class="quote" data-target="3" data-act="seek"><span class="visually-hidden">Reply to </span><b>Bob</b> first</button>"#,
            r#"<p>hi <span class="mention">@bob</span></p><span class="edited"> (edited)</span>"#,
            r#"aria-pressed="true" title="Bob, Ann" aria-label="🎉 2: Bob, Ann" data-emoji="🎉" data-on="false" data-act="toggle">🎉 2</button>"#,
            r#"data-act="edit">Edit</button>"#,
            r#"class="danger" data-act="delete">Delete</button>"#,
        ] {
            assert!(html.contains(part), "{part}\nin {html}");
        }
    }

    #[test]
    fn a_tombstone_shows_nothing_of_the_message() {
        let mut m = msg("secret");
        m.deleted = true;
        m.text.clear();
        let html =
            to_html(&row(&m, &RowParts::default(), &RowCtx { interactive: true, ..Default::default() }));
        assert_eq!(html, r#"<div class="text tombstone">message deleted</div>"#);
    }

    #[test]
    fn others_messages_offer_no_edit_and_one_emoji_is_large() {
        let ctx = RowCtx { interactive: true, ..Default::default() };
        let html = to_html(&row(&msg("🎉"), &RowParts::default(), &ctx));
        assert!(html.contains(r#"<div class="text jumbo"><p>🎉</p></div>"#), "{html}");
        assert!(!html.contains("data-act=\"edit\"") && !html.contains("data-act=\"delete\""));
    }
}
