//! What a search query means: filters (`from:username`, `in:room`) and terms, turned
//! into a full-text expression the engine runs safely.
//!
//! People type words, not FTS5 syntax, so terms are quoted: `"c++"`, `a-b` or `NOT`
//! are words to find, never operators or a syntax error. A `"quoted phrase"` is a
//! phrase, a trailing `*` asks for a prefix, `-word` leaves a word out. A query is
//! bounded in length and in terms, and a prefix needs two letters, so no query can ask
//! the index for everything.

use crate::protocol::{MAX_QUERY_CHARS, RoomName, Username};

/// Most terms (words and phrases) in one query.
pub const MAX_TERMS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The FTS5 expression of the terms.
    pub fts: String,
    /// The terms themselves (included first), for engines with another syntax.
    pub terms: Vec<crate::server::store::SearchTerm>,
    pub from: Option<Username>,
    pub room: Option<RoomName>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("type something to search for")]
    Empty,
    #[error("a search is at most {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("a search has at most {MAX_TERMS} words or phrases")]
    TooManyTerms,
    #[error("a quote is not closed")]
    OpenQuote,
    #[error("a prefix search (word*) needs at least two letters")]
    ShortPrefix,
    #[error("from: needs a username")]
    BadFrom,
    #[error("in: needs a room name")]
    BadRoom,
    #[error("a search needs a word to find, not only words to leave out")]
    OnlyExclusions,
}

struct Term {
    text: String,
    prefix: bool,
    exclude: bool,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        if raw.chars().count() > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong);
        }
        let mut terms: Vec<Term> = Vec::new();
        let (mut from, mut room) = (None, None);
        let mut rest = raw.trim();
        while !rest.is_empty() {
            let exclude = rest.starts_with('-') && rest.len() > 1;
            let body = if exclude { &rest[1..] } else { rest };
            let (word, after) = if let Some(quoted) = body.strip_prefix('"') {
                let end = quoted.find('"').ok_or(QueryError::OpenQuote)?;
                (Word::Phrase(&quoted[..end]), &quoted[end + 1..])
            } else {
                let end = body.find(char::is_whitespace).unwrap_or(body.len());
                (Word::Bare(&body[..end]), &body[end..])
            };
            rest = after.trim_start();
            match word {
                Word::Bare(w) if !exclude && w.starts_with("from:") => {
                    from = Some(
                        Username::parse(w.trim_start_matches("from:").trim_start_matches('@'))
                            .ok_or(QueryError::BadFrom)?,
                    );
                }
                Word::Bare(w) if !exclude && w.starts_with("in:") => {
                    room = Some(
                        RoomName::parse(w.trim_start_matches("in:").trim_start_matches('#'))
                            .map_err(|_| QueryError::BadRoom)?,
                    );
                }
                Word::Bare(w) => {
                    let prefix = w.ends_with('*');
                    let text = w.trim_end_matches('*');
                    // The prefix is the word's last token (the index splits "a.b" into
                    // "a" and "b"): it needs two letters, whatever comes before it.
                    let last = text.rsplit(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
                    if prefix && last.chars().count() < 2 {
                        return Err(QueryError::ShortPrefix);
                    }
                    if text.chars().any(char::is_alphanumeric) {
                        terms.push(Term { text: text.to_owned(), prefix, exclude });
                    }
                }
                Word::Phrase(p) => {
                    if p.chars().any(char::is_alphanumeric) {
                        terms.push(Term { text: p.to_owned(), prefix: false, exclude });
                    }
                }
            }
            if terms.len() > MAX_TERMS {
                return Err(QueryError::TooManyTerms);
            }
        }
        if terms.is_empty() {
            return Err(QueryError::Empty);
        }
        if terms.iter().all(|t| t.exclude) {
            return Err(QueryError::OnlyExclusions);
        }
        // Included terms first: FTS5's NOT is binary (`a NOT b`).
        terms.sort_by_key(|t| t.exclude);
        let mut fts = String::new();
        for t in &terms {
            if !fts.is_empty() {
                fts.push_str(if t.exclude { " NOT " } else { " AND " });
            }
            fts.push('"');
            fts.push_str(&t.text.replace('"', "\"\""));
            fts.push('"');
            if t.prefix {
                fts.push('*');
            }
        }
        let terms = terms
            .into_iter()
            .map(|t| crate::server::store::SearchTerm { text: t.text, prefix: t.prefix, exclude: t.exclude })
            .collect();
        Ok(Query { fts, terms, from, room })
    }
}

/// Search cursors are positions in the index (row ids of messages, of every room). As
/// they are, a cursor that stopped on a message of a private room would tell where such
/// a message is, and so when it was written, to someone who may not read it. A cursor
/// therefore leaves the server sealed: a keyed permutation of the position (four Feistel
/// rounds over its two halves, the key random per process), which reveals nothing of
/// it, and opens back to it. A cursor from before a restart opens to some other
/// position: the next page starts elsewhere, nothing more.
pub fn seal(position: i64) -> i64 {
    let (mut l, mut r) = ((position as u64 >> 32) as u32, position as u64 as u32);
    for round in 0..4u32 {
        (l, r) = (r, l ^ feistel(round, r));
    }
    ((u64::from(l) << 32) | u64::from(r)) as i64
}

/// The position a sealed cursor stands for.
pub fn unseal(cursor: i64) -> i64 {
    let (mut l, mut r) = ((cursor as u64 >> 32) as u32, cursor as u64 as u32);
    for round in (0..4u32).rev() {
        (l, r) = (r ^ feistel(round, l), l);
    }
    ((u64::from(l) << 32) | u64::from(r)) as i64
}

fn feistel(round: u32, half: u32) -> u32 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new).hash_one((round, half)) as u32
}

enum Word<'a> {
    Bare(&'a str),
    Phrase(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fts(q: &str) -> String {
        Query::parse(q).unwrap().fts
    }

    #[test]
    fn words_are_quoted_so_nothing_is_an_operator() {
        assert_eq!(fts("deploy friday"), r#""deploy" AND "friday""#);
        assert_eq!(fts("NOT OR c++"), r#""NOT" AND "OR" AND "c++""#);
        assert_eq!(
            fts(r#"say "hello there" -spam dep*"#),
            r#""say" AND "hello there" AND "dep"* NOT "spam""#
        );
        assert_eq!(fts(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn filters_are_taken_out_of_the_terms() {
        let q = Query::parse("from:@Ann in:#general release").unwrap();
        assert_eq!(q.from.unwrap().as_str(), "ann");
        assert_eq!(q.room.unwrap().as_str(), "general");
        assert_eq!(q.fts, r#""release""#);
    }

    #[test]
    fn bad_queries_say_why() {
        assert_eq!(Query::parse("   "), Err(QueryError::Empty));
        assert_eq!(Query::parse("from:ann"), Err(QueryError::Empty));
        assert_eq!(Query::parse(r#""open"#), Err(QueryError::OpenQuote));
        assert_eq!(Query::parse("a*"), Err(QueryError::ShortPrefix));
        assert_eq!(Query::parse("long.b*"), Err(QueryError::ShortPrefix), "the prefix is its last token");
        assert!(Query::parse("a.bc*").is_ok());
        assert_eq!(Query::parse("-spam"), Err(QueryError::OnlyExclusions));
        assert_eq!(Query::parse("in:Bad/Room x"), Err(QueryError::BadRoom));
        assert_eq!(Query::parse(&"x".repeat(201)), Err(QueryError::TooLong));
        assert_eq!(Query::parse("a b c d e f g h i"), Err(QueryError::TooManyTerms));
        assert_eq!(Query::parse("!!! ..."), Err(QueryError::Empty));
    }

    #[test]
    fn sealed_cursors_open_back_and_hide_their_position() {
        for p in [0, 1, 2, 41, 1 << 40, i64::MAX, -1] {
            assert_eq!(unseal(seal(p)), p);
        }
        let (a, b) = (seal(1000), seal(1001));
        assert_ne!(a, 1000);
        assert!(a.abs_diff(b) > 1, "neighbours are not neighbours sealed");
    }
}
