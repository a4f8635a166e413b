//! The small Markdown subset messages may use, parsed into plain data that the view turns
//! into DOM nodes (never HTML: `<script>` in a message is text, whatever surrounds it).
//!
//! Blocks: paragraphs (lines kept), ```` ``` ```` fenced code, `> ` quotes, `- `/`* `
//! and `1. ` lists. Inline: `**bold**`, `*italic*` (or `_italic_`), `` `code` ``, http(s)
//! links and `@mentions` of the message's `mentions`. A marker without its closing twin
//! on the same line is text, so "2 * 3 * 4" stays arithmetic.

use crate::protocol::{Segment, segments};

/// Inline style bits.
pub const BOLD: u8 = 1;
pub const ITALIC: u8 = 2;
pub const CODE: u8 = 4;
pub const LINK: u8 = 8;
pub const MENTION: u8 = 16;

/// A run of text with one style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    pub style: u8,
}

/// One line of spans.
pub type Line = Vec<Span>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Para(Vec<Line>),
    Code(String),
    Quote(Vec<Line>),
    List { ordered: bool, items: Vec<Line> },
}

/// Parses a message. `mentions` are the usernames the server found in it.
pub fn parse(text: &str, mentions: &[String]) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            let _language = rest;
            let mut code: Vec<&str> = Vec::new();
            for inner in lines.by_ref() {
                if inner.trim_start().starts_with("```") {
                    break;
                }
                code.push(inner);
            }
            blocks.push(Block::Code(code.join("\n")));
            continue;
        }
        let (kind, body) = classify(line);
        let spans = inline(body, mentions);
        match (kind, blocks.last_mut()) {
            (Kind::Quote, Some(Block::Quote(q))) => q.push(spans),
            (Kind::Quote, _) => blocks.push(Block::Quote(vec![spans])),
            (Kind::Item(o), Some(Block::List { ordered, items })) if *ordered == o => items.push(spans),
            (Kind::Item(ordered), _) => blocks.push(Block::List { ordered, items: vec![spans] }),
            (Kind::Text, Some(Block::Para(p))) => p.push(spans),
            (Kind::Text, _) => blocks.push(Block::Para(vec![spans])),
        }
    }
    blocks
}

enum Kind {
    Text,
    Quote,
    Item(bool),
}

fn classify(line: &str) -> (Kind, &str) {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("> ").or_else(|| (trimmed == ">").then_some("")) {
        return (Kind::Quote, rest);
    }
    if let Some(rest) = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* ")) {
        return (Kind::Item(false), rest);
    }
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits < 4 && trimmed[digits..].starts_with(". ") {
        return (Kind::Item(true), &trimmed[digits + 2..]);
    }
    (Kind::Text, line)
}

/// Splits one line into styled spans.
pub fn inline(line: &str, mentions: &[String]) -> Line {
    let mut out: Line = Vec::new();
    let mut style = 0u8;
    let mut run = String::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        let marker = if rest.starts_with("**") {
            Some(("**", BOLD))
        } else if c == '*' || c == '_' {
            Some((&rest[..1], ITALIC))
        } else if c == '`' {
            Some(("`", CODE))
        } else {
            None
        };
        if let Some((mark, bit)) = marker {
            let after = &rest[mark.len()..];
            // Opening needs its closing later on the line (and something between).
            let opens =
                style & bit == 0 && after.find(mark).is_some_and(|i| i > 0) && !after.starts_with(' ');
            // `_` inside a word (snake_case) is a letter.
            let in_word =
                mark == "_" && run.chars().last().is_some_and(char::is_alphanumeric) && style & bit == 0;
            if (opens && !in_word) || style & bit != 0 {
                flush(&mut out, &mut run, style, mentions);
                if bit == CODE && opens {
                    // Code is verbatim up to its closing backtick.
                    let end = after.find('`').unwrap_or(after.len());
                    out.push(Span { text: after[..end].to_owned(), style: style | CODE });
                    rest = after.get(end + 1..).unwrap_or("");
                    continue;
                }
                style ^= bit;
                rest = after;
                continue;
            }
        }
        run.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut out, &mut run, style, mentions);
    out
}

/// Ends a run of plain text: links and mentions become their own spans.
fn flush(out: &mut Line, run: &mut String, style: u8, mentions: &[String]) {
    if run.is_empty() {
        return;
    }
    for seg in segments(run) {
        match seg {
            Segment::Link(url) => out.push(Span { text: url.to_owned(), style: style | LINK }),
            Segment::Text(text) => split_mentions(out, text, style, mentions),
        }
    }
    run.clear();
}

fn split_mentions(out: &mut Line, text: &str, style: u8, mentions: &[String]) {
    let mut start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'@' && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let end = i
                + 1
                + bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
                    .count();
            let name = text[i + 1..end].trim_end_matches('.');
            if !name.is_empty() && mentions.iter().any(|m| m.eq_ignore_ascii_case(name)) {
                let end = i + 1 + name.len();
                if start < i {
                    out.push(Span { text: text[start..i].to_owned(), style });
                }
                out.push(Span { text: text[i..end].to_owned(), style: style | MENTION });
                start = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if start < text.len() {
        out.push(Span { text: text[start..].to_owned(), style });
    }
}

/// A message that is one emoji and nothing else, shown large.
pub fn is_jumbo(text: &str) -> bool {
    crate::protocol::is_emoji(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str, style: u8) -> Span {
        Span { text: text.into(), style }
    }

    #[test]
    fn emphasis_code_and_links() {
        assert_eq!(
            inline("a **b** *c* `d *e*` https://x.org/", &[]),
            vec![
                span("a ", 0),
                span("b", BOLD),
                span(" ", 0),
                span("c", ITALIC),
                span(" ", 0),
                span("d *e*", CODE),
                span(" ", 0),
                span("https://x.org/", LINK),
            ]
        );
        assert_eq!(inline("***both***", &[]), vec![span("both", BOLD | ITALIC)]);
    }

    #[test]
    fn lone_markers_are_text() {
        assert_eq!(inline("2 * 3 * 4", &[]), vec![span("2 * 3 * 4", 0)]);
        assert_eq!(inline("snake_case_name", &[]), vec![span("snake_case_name", 0)]);
        assert_eq!(inline("**open", &[]), vec![span("**open", 0)]);
        assert_eq!(inline("a ` b", &[]), vec![span("a ` b", 0)]);
    }

    #[test]
    fn markup_is_text() {
        let blocks = parse("<script>alert(1)</script> **<img src=x onerror=alert(1)>**", &[]);
        assert_eq!(
            blocks,
            vec![Block::Para(vec![vec![
                span("<script>alert(1)</script> ", 0),
                span("<img src=x onerror=alert(1)>", BOLD),
            ]])]
        );
    }

    #[test]
    fn blocks() {
        let text = "hi\nthere\n> quoted\n> more\n- one\n- two\n1. first\n```\nlet x = **1**;\n```\nafter";
        let blocks = parse(text, &[]);
        assert_eq!(blocks.len(), 6, "{blocks:?}");
        assert_eq!(blocks[0], Block::Para(vec![vec![span("hi", 0)], vec![span("there", 0)]]));
        assert_eq!(blocks[1], Block::Quote(vec![vec![span("quoted", 0)], vec![span("more", 0)]]));
        assert_eq!(
            blocks[2],
            Block::List { ordered: false, items: vec![vec![span("one", 0)], vec![span("two", 0)]] }
        );
        assert_eq!(blocks[3], Block::List { ordered: true, items: vec![vec![span("first", 0)]] });
        assert_eq!(blocks[4], Block::Code("let x = **1**;".into()));
        assert_eq!(blocks[5], Block::Para(vec![vec![span("after", 0)]]));
    }

    #[test]
    fn mentions_are_the_servers_only() {
        let mentions = vec!["ann".to_owned()];
        assert_eq!(
            inline("hi @Ann and @bob, mail a@ann.org", &mentions),
            vec![span("hi ", 0), span("@Ann", MENTION), span(" and @bob, mail a@ann.org", 0)]
        );
    }

    #[test]
    fn one_emoji_is_jumbo() {
        assert!(is_jumbo(" 🎉 "));
        assert!(is_jumbo("👍🏽"));
        assert!(is_jumbo("👨‍👩‍👧"));
        assert!(!is_jumbo("🎉 yay"));
        assert!(!is_jumbo("ok"));
    }
}
