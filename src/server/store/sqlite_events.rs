//! How each kind of event changes a room's current state in SQLite, inside the append's
//! transaction, and how the log and the state are read back.
//!
//! The committer hands events over in seq order. Each is applied to the state as it is
//! at that point of the transaction, so a rule checked earlier by the handler (the
//! message is not deleted, the reaction caps) is checked again where it cannot race:
//! an event that no longer applies is stored as what it did (an edit of a deleted
//! message with no text, a reaction over the caps as `on: false`), never skipped, so
//! the log keeps every seq.

use super::{StoreError, Target, Unread};
use crate::protocol::{
    ChatMessage, DeleteEvent, EditEvent, MAX_EMOJI_PER_MESSAGE, MAX_REACTIONS_PER_MESSAGE, MAX_UNREAD_COUNT,
    Quote, ReactEvent, Reaction, RoomEvent, RoomName, Seq,
};
use rusqlite::{Connection, OptionalExtension, params};

/// Applies one event and logs it.
pub(super) fn apply(tx: &Connection, event: &mut RoomEvent) -> rusqlite::Result<()> {
    match event {
        RoomEvent::Message(m) => {
            // The reply's quote, as its original is at this point of the log.
            if let Some(original) = m.reply_to {
                m.quote = quote_of(tx, &m.room, original)?;
            }
            insert_message(tx, m)
        }
        RoomEvent::Edit(e) => edit(tx, e),
        RoomEvent::Delete(d) => delete(tx, d),
        RoomEvent::React(r) => react(tx, r),
    }
}

fn insert_message(tx: &Connection, m: &ChatMessage) -> rusqlite::Result<()> {
    // A room's first event is always a message: it records the room.
    if m.seq == 1 {
        tx.prepare_cached("INSERT OR IGNORE INTO rooms (name, created_ms) VALUES (?1, ?2)")?
            .execute(params![m.room, m.ts])?;
    }
    tx.prepare_cached(
        "INSERT INTO messages (room, seq, nick, text, ts, client_id, user_id, guest, reply_to, mentions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        m.room,
        m.seq as i64,
        m.nick,
        m.text,
        m.ts,
        m.client_id,
        m.user,
        m.guest,
        m.reply_to.map(|s| s as i64),
        m.mentions.join(" ")
    ])?;
    let id = tx.last_insert_rowid();
    index(tx, id, &m.text)?;
    add_mentions(tx, &m.room, m.seq, &m.mentions)?;
    log(tx, &m.room, m.seq, "message", m.seq, Logged { ts: m.ts, ..Logged::default() })
}

/// What a reply to message `seq` of `room` quotes of it now.
fn quote_of(conn: &Connection, room: &str, seq: Seq) -> rusqlite::Result<Option<Quote>> {
    conn.prepare_cached("SELECT nick, text, deleted FROM messages WHERE room = ?1 AND seq = ?2")?
        .query_row(params![room, seq as i64], |r| {
            Ok(Quote::of(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?, r.get(2)?))
        })
        .optional()
}

/// Fills in the quotes of the replies among `messages` (of `room`), as their originals
/// are now.
pub(super) fn attach_quotes<'a>(
    conn: &Connection,
    room: &RoomName,
    messages: impl Iterator<Item = &'a mut ChatMessage>,
) -> rusqlite::Result<()> {
    for m in messages {
        if let Some(original) = m.reply_to {
            m.quote = quote_of(conn, room.as_str(), original)?;
        }
    }
    Ok(())
}

/// The message row a change applies to: (rowid, text, deleted).
fn current(tx: &Connection, room: &str, seq: Seq) -> rusqlite::Result<Option<(i64, String, bool)>> {
    tx.prepare_cached("SELECT id, text, deleted FROM messages WHERE room = ?1 AND seq = ?2")?
        .query_row(params![room, seq as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
}

fn edit(tx: &Connection, e: &mut EditEvent) -> rusqlite::Result<()> {
    match current(tx, &e.room, e.target)? {
        Some((id, old, false)) => {
            unindex(tx, id, &old)?;
            index(tx, id, &e.text)?;
            tx.prepare_cached("UPDATE messages SET text = ?1, edited_ts = ?2, mentions = ?3 WHERE id = ?4")?
                .execute(params![e.text, e.edited_ts, e.mentions.join(" "), id])?;
            tx.prepare_cached("DELETE FROM mentions WHERE room = ?1 AND seq = ?2")?
                .execute(params![e.room, e.target as i64])?;
            add_mentions(tx, &e.room, e.target, &e.mentions)?;
        }
        // Deleted (or gone) since the handler looked: stored, and sent, with no text.
        _ => {
            e.text.clear();
            e.mentions.clear();
        }
    }
    let logged = Logged {
        user: &e.user,
        nick: &e.nick,
        text: &e.text,
        ts: e.edited_ts,
        client_id: &e.client_id,
        mentions: e.mentions.join(" "),
        ..Logged::default()
    };
    log(tx, &e.room, e.seq, "edit", e.target, logged)
}

fn delete(tx: &Connection, d: &mut DeleteEvent) -> rusqlite::Result<()> {
    if let Some((id, old, false)) = current(tx, &d.room, d.target)? {
        unindex(tx, id, &old)?;
        tx.prepare_cached("UPDATE messages SET text = '', mentions = '', deleted = 1 WHERE id = ?1")?
            .execute(params![id])?;
        let target = d.target as i64;
        tx.prepare_cached("DELETE FROM reactions WHERE room = ?1 AND target = ?2")?
            .execute(params![d.room, target])?;
        tx.prepare_cached("DELETE FROM mentions WHERE room = ?1 AND seq = ?2")?
            .execute(params![d.room, target])?;
        // What was deleted is gone from the log too: its edits keep their place, not their text.
        tx.prepare_cached(
            "UPDATE events SET text = '', mentions = '' WHERE room = ?1 AND target = ?2 AND kind = 'edit'",
        )?
        .execute(params![d.room, target])?;
    }
    let ts = crate::server::unix_ms();
    let logged = Logged { user: &d.user, nick: &d.by, ts, client_id: &d.client_id, ..Logged::default() };
    log(tx, &d.room, d.seq, "delete", d.target, logged)
}

fn react(tx: &Connection, r: &mut ReactEvent) -> rusqlite::Result<()> {
    let target = r.target as i64;
    if r.on {
        let live = matches!(current(tx, &r.room, r.target)?, Some((_, _, false)));
        let has: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM reactions WHERE room = ?1 AND target = ?2 AND emoji = ?3 AND user_id = ?4)",
            )?
            .query_row(params![r.room, target, r.emoji, r.user], |row| row.get(0))?;
        if !has {
            let group: Option<i64> = tx
                .prepare_cached(
                    "SELECT MIN(grp) FROM reactions WHERE room = ?1 AND target = ?2 AND emoji = ?3",
                )?
                .query_row(params![r.room, target, r.emoji], |row| row.get(0))?;
            let (count, emoji): (i64, i64) = tx
                .prepare_cached(
                    "SELECT COUNT(*), COUNT(DISTINCT emoji) FROM reactions WHERE room = ?1 AND target = ?2",
                )?
                .query_row(params![r.room, target], |row| Ok((row.get(0)?, row.get(1)?)))?;
            let fits = count < MAX_REACTIONS_PER_MESSAGE as i64
                && (group.is_some() || emoji < MAX_EMOJI_PER_MESSAGE as i64);
            if live && fits {
                tx.prepare_cached(
                    "INSERT INTO reactions (room, target, emoji, user_id, nick, seq, grp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    r.room,
                    target,
                    r.emoji,
                    r.user,
                    r.nick,
                    r.seq as i64,
                    group.unwrap_or(r.seq as i64)
                ])?;
            } else {
                // Deleted, or full, since the handler looked: the user's reaction stays off.
                r.on = false;
            }
        }
    } else {
        tx.prepare_cached(
            "DELETE FROM reactions WHERE room = ?1 AND target = ?2 AND emoji = ?3 AND user_id = ?4",
        )?
        .execute(params![r.room, target, r.emoji, r.user])?;
    }
    let logged = Logged {
        user: &r.user,
        nick: &r.nick,
        ts: crate::server::unix_ms(),
        emoji: &r.emoji,
        on: r.on,
        ..Logged::default()
    };
    log(tx, &r.room, r.seq, "react", r.target, logged)
}

/// The columns of an event row besides its place.
#[derive(Default)]
struct Logged<'a> {
    user: &'a str,
    nick: &'a str,
    text: &'a str,
    ts: i64,
    emoji: &'a str,
    on: bool,
    client_id: &'a str,
    mentions: String,
}

fn log(
    tx: &Connection,
    room: &str,
    seq: Seq,
    kind: &str,
    target: Seq,
    e: Logged<'_>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (room, seq, kind, target, user_id, nick, text, ts, emoji, turned_on, client_id, mentions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        room,
        seq as i64,
        kind,
        target as i64,
        e.user,
        e.nick,
        e.text,
        e.ts,
        e.emoji,
        e.on,
        e.client_id,
        e.mentions
    ])?;
    Ok(())
}

fn index(tx: &Connection, id: i64, text: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)")?
        .execute(params![id, text])?;
    Ok(())
}

/// Takes a text out of the index (an external-content FTS5 table is told the old text).
fn unindex(tx: &Connection, id: i64, text: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', ?1, ?2)")?
        .execute(params![id, text])?;
    Ok(())
}

fn add_mentions(tx: &Connection, room: &str, seq: Seq, names: &[String]) -> rusqlite::Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO mentions (username, room, seq) VALUES (?1, ?2, ?3)")?;
    for name in names {
        insert.execute(params![name, room, seq as i64])?;
    }
    Ok(())
}

/// The event log of `room` with `after < seq <= upto`, newest first, at most `limit`.
pub(super) fn events_desc(
    conn: &Connection,
    room: &RoomName,
    after: i64,
    upto: i64,
    limit: i64,
) -> rusqlite::Result<Vec<RoomEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.seq, e.kind, e.target, e.user_id, e.nick, e.text, e.ts, e.emoji, e.turned_on, e.client_id,
                e.mentions,
                m.seq, m.nick, m.text, m.ts, m.client_id, m.user_id, m.guest, m.reply_to, m.mentions,
                m.edited_ts, m.deleted
         FROM events e LEFT JOIN messages m
           ON e.kind = 'message' AND m.room = e.room AND m.seq = e.seq
         WHERE e.room = ?1 AND e.seq > ?2 AND e.seq <= ?3 ORDER BY e.seq DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![room.as_str(), after, upto, limit], |row| {
        let seq = row.get::<_, i64>(0)? as Seq;
        let kind: String = row.get(1)?;
        let target = row.get::<_, i64>(2)? as Seq;
        let name = room.as_str().to_owned();
        Ok(match kind.as_str() {
            "edit" => RoomEvent::Edit(EditEvent {
                room: name,
                seq,
                target,
                user: row.get(3)?,
                nick: row.get(4)?,
                text: row.get(5)?,
                edited_ts: row.get(6)?,
                client_id: row.get(9)?,
                mentions: super::sqlite::split_names(&row.get::<_, String>(10)?),
            }),
            "delete" => RoomEvent::Delete(DeleteEvent {
                room: name,
                seq,
                target,
                user: row.get(3)?,
                by: row.get(4)?,
                client_id: row.get(9)?,
            }),
            "react" => RoomEvent::React(ReactEvent {
                room: name,
                seq,
                target,
                emoji: row.get(7)?,
                user: row.get(3)?,
                nick: row.get(4)?,
                on: row.get(8)?,
            }),
            _ => RoomEvent::Message(super::sqlite::message_at(room, row, 11)?),
        })
    })?;
    rows.collect()
}

/// Fills in the reactions of `messages` (one room's, any order of seqs).
pub(super) fn attach_reactions(
    conn: &Connection,
    room: &RoomName,
    messages: &mut [ChatMessage],
) -> rusqlite::Result<()> {
    let (Some(lo), Some(hi)) = (messages.iter().map(|m| m.seq).min(), messages.iter().map(|m| m.seq).max())
    else {
        return Ok(());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT target, emoji, user_id, nick FROM reactions
         WHERE room = ?1 AND target >= ?2 AND target <= ?3 ORDER BY target, grp, seq",
    )?;
    let rows = stmt.query_map(params![room.as_str(), lo as i64, hi as i64], |r| {
        Ok((
            r.get::<_, i64>(0)? as Seq,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (target, emoji, user, nick) = row?;
        let Some(m) = messages.iter_mut().find(|m| m.seq == target) else { continue };
        match m.reactions.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => {
                r.count += 1;
                r.users.push(user);
                r.nicks.push(nick);
            }
            None => m.reactions.push(Reaction { emoji, count: 1, users: vec![user], nicks: vec![nick] }),
        }
    }
    Ok(())
}

pub(super) fn target(
    conn: &Connection,
    room: &RoomName,
    seq: Seq,
    user: &str,
) -> rusqlite::Result<Option<Target>> {
    let found: Option<(String, bool)> = conn
        .prepare_cached("SELECT user_id, deleted FROM messages WHERE room = ?1 AND seq = ?2")?
        .query_row(params![room.as_str(), seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((author, deleted)) = found else { return Ok(None) };
    let mut stmt =
        conn.prepare_cached("SELECT emoji, user_id FROM reactions WHERE room = ?1 AND target = ?2")?;
    let mut t = Target { author, deleted, ..Target::default() };
    for row in stmt.query_map(params![room.as_str(), seq as i64], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (emoji, by) = row?;
        t.reactions += 1;
        if by == user {
            t.mine.push(emoji.clone());
        }
        if !t.emoji.contains(&emoji) {
            t.emoji.push(emoji);
        }
    }
    Ok(Some(t))
}

pub(super) fn read_position(conn: &Connection, user: &str, room: &RoomName) -> rusqlite::Result<Option<Seq>> {
    conn.prepare_cached("SELECT seq FROM read_state WHERE user_id = ?1 AND room = ?2")?
        .query_row(params![user, room.as_str()], |r| Ok(r.get::<_, i64>(0)? as Seq))
        .optional()
}

pub(super) fn mark_read(conn: &Connection, user: &str, room: &RoomName, seq: Seq) -> rusqlite::Result<Seq> {
    conn.prepare_cached(
        "INSERT INTO read_state (user_id, room, seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, room) DO UPDATE SET seq = MAX(seq, excluded.seq) RETURNING seq",
    )?
    .query_row(params![user, room.as_str(), seq as i64], |r| Ok(r.get::<_, i64>(0)? as Seq))
}

pub(super) fn unread(
    conn: &Connection,
    user: &str,
    username: Option<&str>,
    rooms: &[&str],
) -> rusqlite::Result<Vec<(String, Unread)>> {
    let cap = i64::from(MAX_UNREAD_COUNT);
    let mut positions = conn.prepare_cached("SELECT seq FROM read_state WHERE user_id = ?1 AND room = ?2")?;
    let mut count = conn.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM messages
          WHERE room = ?1 AND seq > ?2 AND deleted = 0 AND user_id != ?3 LIMIT ?4)",
    )?;
    let mut mentions = conn.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM mentions m JOIN messages g ON g.room = m.room AND g.seq = m.seq
          WHERE m.username = ?1 AND m.room = ?2 AND m.seq > ?3 AND g.user_id != ?4 LIMIT ?5)",
    )?;
    let mut out = Vec::new();
    for room in rooms {
        let Some(last) = positions.query_row(params![user, room], |r| r.get::<_, i64>(0)).optional()? else {
            continue;
        };
        let unread: i64 = count.query_row(params![room, last, user, cap], |r| r.get(0))?;
        let mentioned: i64 = match username {
            Some(name) => mentions.query_row(params![name, room, last, user, cap], |r| r.get(0))?,
            None => 0,
        };
        out.push((
            room.to_string(),
            Unread { last_read: last as Seq, unread: unread as u32, mentions: mentioned as u32 },
        ));
    }
    Ok(out)
}

/// Turns an engine error from a search into `StoreError::Query` when it is the query's
/// fault (FTS5 reports syntax errors as SQLITE_ERROR with an "fts5:" message).
pub(super) fn query_error(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
            StoreError::Query("the search is too broad: add words, or search one room".to_owned())
        }
        rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("fts5") || msg.contains("syntax") => {
            StoreError::Query(msg.clone())
        }
        _ => err.into(),
    }
}

/// Index entries a search page looks at, at most: a query's cost is bounded whatever it
/// matches and whichever rooms the asker may read (the page then ends early, with a
/// cursor to go on from).
const SEARCH_SCAN: i64 = 2000;
/// SQLite virtual-machine steps one search may take (checked every 1,000): what the index
/// does before it yields its first entries (an exclusion, a phrase of common words walks
/// whole lists) is bounded too. Past it the search is refused as too broad.
const SEARCH_STEPS: u32 = 20_000;

pub(super) fn search(conn: &Connection, q: &super::SearchQuery) -> Result<super::SearchPage, StoreError> {
    let mut steps = 0u32;
    conn.progress_handler(
        1000,
        Some(move || {
            steps += 1;
            steps > SEARCH_STEPS
        }),
    );
    let result = search_within(conn, q);
    conn.progress_handler(1000, None::<fn() -> bool>);
    result
}

fn search_within(conn: &Connection, q: &super::SearchQuery) -> Result<super::SearchPage, StoreError> {
    let before = q.before.unwrap_or(i64::MAX);
    let candidates: Vec<i64> = conn
        .prepare_cached(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![q.fts, before, SEARCH_SCAN], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(query_error)?;
    let rooms: std::collections::HashSet<&str> = q.rooms.iter().map(String::as_str).collect();
    let mut lookup = conn
        .prepare_cached("SELECT room, seq, nick, ts, user_id FROM messages WHERE id = ?1 AND deleted = 0")?;
    let mut hits = Vec::new();
    let mut last_hit = None;
    for id in &candidates {
        let Some((room, seq, nick, ts, user)) = lookup
            .query_row(params![id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .optional()
            .map_err(query_error)?
        else {
            continue;
        };
        if !rooms.contains(room.as_str()) || q.from_user.as_ref().is_some_and(|u| *u != user) {
            continue;
        }
        if hits.len() == q.limit {
            // One more than asked for: there is a next page, from the last hit shown.
            return finish(conn, q, hits, last_hit);
        }
        hits.push((
            *id,
            crate::protocol::SearchHit { room, seq: seq as Seq, nick, ts, snippet: String::new() },
        ));
        last_hit = Some(*id);
    }
    let next = (candidates.len() as i64 == SEARCH_SCAN).then(|| candidates.last().copied()).flatten();
    finish(conn, q, hits, next)
}

/// Adds each hit's snippet (the index's excerpt around the match, no markers: the text
/// is shown as text).
fn finish(
    conn: &Connection,
    q: &super::SearchQuery,
    hits: Vec<(i64, crate::protocol::SearchHit)>,
    next: Option<i64>,
) -> Result<super::SearchPage, StoreError> {
    let mut snippet = conn
        .prepare_cached(
            "SELECT snippet(messages_fts, 0, '', '', '…', 16) FROM messages_fts WHERE messages_fts MATCH ?1 AND rowid = ?2",
        )
        .map_err(query_error)?;
    let mut out = Vec::with_capacity(hits.len());
    let mut positions = Vec::with_capacity(hits.len());
    for (id, mut hit) in hits {
        hit.snippet = snippet
            .query_row(params![q.fts, id], |r| r.get(0))
            .optional()
            .map_err(query_error)?
            .unwrap_or_default();
        out.push(hit);
        positions.push(id);
    }
    Ok(super::SearchPage { hits: out, positions, next })
}
