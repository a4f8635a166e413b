//! Rooms' event logs in PostgreSQL: the [`MessageStore`] of several nodes.
//!
//! Several nodes append to one room, so the seq cannot come from a node's memory: each
//! batch's transaction locks its rooms' rows (in name order, so two batches never wait on
//! each other in a cycle), numbers its events from each row's `head`, stores them and
//! moves the heads, all in one commit. Per room, commit order is seq order and a seq is
//! never skipped: a transaction that fails leaves its heads where they were.
//!
//! Messages are written with one multi-row statement per run of messages (group commit:
//! round trips per batch, not per message); an edit, deletion or reaction is applied one
//! at a time to the state as the transaction finds it, with the same rules as SQLite's
//! (`sqlite_events`).

use super::{
    EventPage, MessageStore, Page, SearchPage, SearchQuery, StoreError, StoredRoom, Target, Unread,
    postgres::Pg,
};
use crate::protocol::{
    ChatMessage, DeleteEvent, EditEvent, MAX_EMOJI_PER_MESSAGE, MAX_REACTIONS_PER_MESSAGE, MAX_UNREAD_COUNT,
    Quote, ReactEvent, Reaction, RoomEvent, RoomName, SearchHit, Seq,
};
use deadpool_postgres::GenericClient;
use std::{collections::HashMap, sync::Arc};
use tokio_postgres::Row;

/// How long one search may run before it is refused as too broad.
const SEARCH_TIMEOUT_MS: i64 = 1500;

pub struct PgStore {
    pg: Arc<Pg>,
}

impl PgStore {
    pub fn new(pg: Arc<Pg>) -> Self {
        PgStore { pg }
    }
}

/// The columns `message_at` reads, in order.
const MESSAGE_COLUMNS: &str =
    "seq, nick, text, ts, client_id, user_id, guest, reply_to, mentions, edited_ts, deleted";

fn message_at(room: &str, row: &Row, at: usize) -> Result<ChatMessage, tokio_postgres::Error> {
    Ok(ChatMessage {
        room: room.to_owned(),
        seq: row.try_get::<_, i64>(at)? as Seq,
        nick: row.try_get(at + 1)?,
        text: row.try_get(at + 2)?,
        ts: row.try_get(at + 3)?,
        client_id: row.try_get(at + 4)?,
        user: row.try_get(at + 5)?,
        guest: row.try_get(at + 6)?,
        reply_to: row.try_get::<_, Option<i64>>(at + 7)?.map(|s| s as Seq),
        mentions: super::sqlite::split_names(&row.try_get::<_, String>(at + 8)?),
        edited_ts: row.try_get(at + 9)?,
        deleted: row.try_get(at + 10)?,
        quote: None,
        reactions: Vec::new(),
    })
}

/// A seq as PostgreSQL's BIGINT; values past i64::MAX (only ever sent by a client)
/// saturate.
fn pg_seq(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Messages waiting to be written with one statement, column by column.
#[derive(Default)]
struct MessageRun {
    room: Vec<String>,
    seq: Vec<i64>,
    nick: Vec<String>,
    text: Vec<String>,
    ts: Vec<i64>,
    client_id: Vec<String>,
    user_id: Vec<String>,
    guest: Vec<bool>,
    reply_to: Vec<Option<i64>>,
    mentions: Vec<String>,
    /// (username, room, seq) of every mention.
    mentioned: (Vec<String>, Vec<String>, Vec<i64>),
}

impl MessageRun {
    fn push(&mut self, m: &ChatMessage) {
        self.room.push(m.room.clone());
        self.seq.push(m.seq as i64);
        self.nick.push(m.nick.clone());
        self.text.push(m.text.clone());
        self.ts.push(m.ts);
        self.client_id.push(m.client_id.clone());
        self.user_id.push(m.user.clone());
        self.guest.push(m.guest);
        self.reply_to.push(m.reply_to.map(|s| s as i64));
        self.mentions.push(m.mentions.join(" "));
        for name in &m.mentions {
            self.mentioned.0.push(name.clone());
            self.mentioned.1.push(m.room.clone());
            self.mentioned.2.push(m.seq as i64);
        }
    }

    async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        if self.room.is_empty() {
            return Ok(());
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO messages (room, seq, nick, text, ts, client_id, user_id, guest, reply_to, mentions)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                                      $6::text[], $7::text[], $8::bool[], $9::bigint[], $10::text[])",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &self.room,
                &self.seq,
                &self.nick,
                &self.text,
                &self.ts,
                &self.client_id,
                &self.user_id,
                &self.guest,
                &self.reply_to,
                &self.mentions,
            ],
        )
        .await?;
        // The message's event points at its row (`target` = its own seq), as in SQLite,
        // and keeps its author and client_id for the retry check.
        let log = tx
            .prepare_cached(
                "INSERT INTO events (room, seq, kind, target, user_id, client_id, ts)
                 SELECT r, s, 'message', s, u, c, t
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) AS x(r, s, u, c, t)",
            )
            .await?;
        tx.execute(&log, &[&self.room, &self.seq, &self.user_id, &self.client_id, &self.ts]).await?;
        if !self.mentioned.0.is_empty() {
            let mention = tx
                .prepare_cached(
                    "INSERT INTO mentions (username, room, seq)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&mention, &[&self.mentioned.0, &self.mentioned.1, &self.mentioned.2]).await?;
        }
        *self = MessageRun::default();
        Ok(())
    }
}

/// What a reply to message `seq` of `room` quotes of it now.
async fn quote_of(
    c: &impl GenericClient,
    room: &str,
    seq: Seq,
) -> Result<Option<Quote>, tokio_postgres::Error> {
    let stmt =
        c.prepare_cached("SELECT nick, text, deleted FROM messages WHERE room = $1 AND seq = $2").await?;
    Ok(c.query_opt(&stmt, &[&room, &pg_seq(seq)])
        .await?
        .map(|r| Quote::of(&r.get::<_, String>(0), &r.get::<_, String>(1), r.get(2))))
}

async fn attach_quotes<'a>(
    c: &impl GenericClient,
    room: &str,
    messages: impl Iterator<Item = &'a mut ChatMessage>,
) -> Result<(), tokio_postgres::Error> {
    for m in messages {
        if let Some(original) = m.reply_to {
            m.quote = quote_of(c, room, original).await?;
        }
    }
    Ok(())
}

/// The message row a change applies to, locked: (text, deleted).
async fn current(
    tx: &impl GenericClient,
    room: &str,
    seq: Seq,
) -> Result<Option<(String, bool)>, tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached("SELECT text, deleted FROM messages WHERE room = $1 AND seq = $2 FOR UPDATE")
        .await?;
    Ok(tx.query_opt(&stmt, &[&room, &pg_seq(seq)]).await?.map(|r| (r.get(0), r.get(1))))
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

async fn log(
    tx: &impl GenericClient,
    room: &str,
    seq: Seq,
    kind: &str,
    target: Seq,
    e: Logged<'_>,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (room, seq, kind, target, user_id, nick, text, ts, emoji, turned_on, client_id, mentions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &room,
            &(seq as i64),
            &kind,
            &pg_seq(target),
            &e.user,
            &e.nick,
            &e.text,
            &e.ts,
            &e.emoji,
            &e.on,
            &e.client_id,
            &e.mentions,
        ],
    )
    .await?;
    Ok(())
}

async fn add_mentions(
    tx: &impl GenericClient,
    room: &str,
    seq: Seq,
    names: &[String],
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO mentions (username, room, seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .await?;
    for name in names {
        tx.execute(&stmt, &[name, &room, &pg_seq(seq)]).await?;
    }
    Ok(())
}

async fn edit(tx: &impl GenericClient, e: &mut EditEvent) -> Result<(), tokio_postgres::Error> {
    match current(tx, &e.room, e.target).await? {
        Some((_, false)) => {
            let update = tx
                .prepare_cached(
                    "UPDATE messages SET text = $3, edited_ts = $4, mentions = $5 WHERE room = $1 AND seq = $2",
                )
                .await?;
            tx.execute(&update, &[&e.room, &pg_seq(e.target), &e.text, &e.edited_ts, &e.mentions.join(" ")])
                .await?;
            let clear = tx.prepare_cached("DELETE FROM mentions WHERE room = $1 AND seq = $2").await?;
            tx.execute(&clear, &[&e.room, &pg_seq(e.target)]).await?;
            add_mentions(tx, &e.room, e.target, &e.mentions).await?;
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
    log(tx, &e.room, e.seq, "edit", e.target, logged).await
}

async fn delete(tx: &impl GenericClient, d: &mut DeleteEvent) -> Result<(), tokio_postgres::Error> {
    if let Some((_, false)) = current(tx, &d.room, d.target).await? {
        let target = pg_seq(d.target);
        for sql in [
            "UPDATE messages SET text = '', mentions = '', deleted = true WHERE room = $1 AND seq = $2",
            "DELETE FROM reactions WHERE room = $1 AND target = $2",
            "DELETE FROM mentions WHERE room = $1 AND seq = $2",
            // What was deleted is gone from the log too: its edits keep their place, not their text.
            "UPDATE events SET text = '', mentions = '' WHERE room = $1 AND target = $2 AND kind = 'edit'",
        ] {
            let stmt = tx.prepare_cached(sql).await?;
            tx.execute(&stmt, &[&d.room, &target]).await?;
        }
    }
    let ts = crate::server::unix_ms();
    let logged = Logged { user: &d.user, nick: &d.by, ts, client_id: &d.client_id, ..Logged::default() };
    log(tx, &d.room, d.seq, "delete", d.target, logged).await
}

async fn react(tx: &impl GenericClient, r: &mut ReactEvent) -> Result<(), tokio_postgres::Error> {
    let target = pg_seq(r.target);
    if r.on {
        let live = matches!(current(tx, &r.room, r.target).await?, Some((_, false)));
        let has = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM reactions WHERE room = $1 AND target = $2 AND emoji = $3 AND user_id = $4)",
            )
            .await?;
        let has: bool = tx.query_one(&has, &[&r.room, &target, &r.emoji, &r.user]).await?.get(0);
        if !has {
            let group = tx
                .prepare_cached(
                    "SELECT MIN(grp) FROM reactions WHERE room = $1 AND target = $2 AND emoji = $3",
                )
                .await?;
            let group: Option<i64> = tx.query_one(&group, &[&r.room, &target, &r.emoji]).await?.get(0);
            let counts = tx
                .prepare_cached(
                    "SELECT COUNT(*), COUNT(DISTINCT emoji) FROM reactions WHERE room = $1 AND target = $2",
                )
                .await?;
            let row = tx.query_one(&counts, &[&r.room, &target]).await?;
            let (count, emoji): (i64, i64) = (row.get(0), row.get(1));
            let fits = count < MAX_REACTIONS_PER_MESSAGE as i64
                && (group.is_some() || emoji < MAX_EMOJI_PER_MESSAGE as i64);
            if live && fits {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO reactions (room, target, emoji, user_id, nick, seq, grp)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await?;
                let seq = r.seq as i64;
                tx.execute(
                    &insert,
                    &[&r.room, &target, &r.emoji, &r.user, &r.nick, &seq, &group.unwrap_or(seq)],
                )
                .await?;
            } else {
                // Deleted, or full, since the handler looked: the user's reaction stays off.
                r.on = false;
            }
        }
    } else {
        let remove = tx
            .prepare_cached(
                "DELETE FROM reactions WHERE room = $1 AND target = $2 AND emoji = $3 AND user_id = $4",
            )
            .await?;
        tx.execute(&remove, &[&r.room, &target, &r.emoji, &r.user]).await?;
    }
    let logged = Logged {
        user: &r.user,
        nick: &r.nick,
        ts: crate::server::unix_ms(),
        emoji: &r.emoji,
        on: r.on,
        ..Logged::default()
    };
    log(tx, &r.room, r.seq, "react", r.target, logged).await
}

/// PostgreSQL's text cannot hold U+0000, which a message's text may (SQLite keeps it): one
/// such message would fail its whole batch, everyone's events with it. It is stored, and
/// sent, as U+FFFD instead.
fn without_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

/// Author key of an event for the retry check: (user id, client_id), when it has both.
fn retry_key(event: &RoomEvent) -> Option<(&str, &str)> {
    let user = match event {
        RoomEvent::Message(m) => &m.user,
        RoomEvent::Edit(e) => &e.user,
        RoomEvent::Delete(d) => &d.user,
        RoomEvent::React(_) => return None,
    };
    let client_id = event.client_id();
    (!user.is_empty() && !client_id.is_empty()).then_some((user.as_str(), client_id))
}

/// The event log of `room` with `after < seq <= upto`, newest first, at most `limit`.
async fn events_desc(
    c: &impl GenericClient,
    room: &str,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<RoomEvent>, tokio_postgres::Error> {
    let stmt = c
        .prepare_cached(
            "SELECT e.seq, e.kind, e.target, e.user_id, e.nick, e.text, e.ts, e.emoji, e.turned_on, e.client_id,
                    e.mentions,
                    m.seq, m.nick, m.text, m.ts, m.client_id, m.user_id, m.guest, m.reply_to, m.mentions,
                    m.edited_ts, m.deleted
             FROM events e LEFT JOIN messages m
               ON e.kind = 'message' AND m.room = e.room AND m.seq = e.seq
             WHERE e.room = $1 AND e.seq > $2 AND e.seq <= $3 ORDER BY e.seq DESC LIMIT $4",
        )
        .await?;
    let rows = c.query(&stmt, &[&room, &after, &upto, &limit]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq = row.try_get::<_, i64>(0)? as Seq;
        let kind: String = row.try_get(1)?;
        let target = row.try_get::<_, i64>(2)? as Seq;
        let name = room.to_owned();
        out.push(match kind.as_str() {
            "edit" => RoomEvent::Edit(EditEvent {
                room: name,
                seq,
                target,
                user: row.try_get(3)?,
                nick: row.try_get(4)?,
                text: row.try_get(5)?,
                edited_ts: row.try_get(6)?,
                client_id: row.try_get(9)?,
                mentions: super::sqlite::split_names(&row.try_get::<_, String>(10)?),
            }),
            "delete" => RoomEvent::Delete(DeleteEvent {
                room: name,
                seq,
                target,
                user: row.try_get(3)?,
                by: row.try_get(4)?,
                client_id: row.try_get(9)?,
            }),
            "react" => RoomEvent::React(ReactEvent {
                room: name,
                seq,
                target,
                emoji: row.try_get(7)?,
                user: row.try_get(3)?,
                nick: row.try_get(4)?,
                on: row.try_get(8)?,
            }),
            _ => RoomEvent::Message(message_at(room, &row, 11)?),
        });
    }
    Ok(out)
}

async fn attach_reactions(
    c: &impl GenericClient,
    room: &str,
    messages: &mut [ChatMessage],
) -> Result<(), tokio_postgres::Error> {
    let (Some(lo), Some(hi)) = (messages.iter().map(|m| m.seq).min(), messages.iter().map(|m| m.seq).max())
    else {
        return Ok(());
    };
    let stmt = c
        .prepare_cached(
            "SELECT target, emoji, user_id, nick FROM reactions
             WHERE room = $1 AND target >= $2 AND target <= $3 ORDER BY target, grp, seq",
        )
        .await?;
    for row in c.query(&stmt, &[&room, &pg_seq(lo), &pg_seq(hi)]).await? {
        let (target, emoji, user, nick) = (
            row.get::<_, i64>(0) as Seq,
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
        );
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

impl PgStore {
    async fn append_async(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
        for event in batch.iter_mut() {
            match event {
                RoomEvent::Message(m) => without_nul(&mut m.text),
                RoomEvent::Edit(e) => without_nul(&mut e.text),
                _ => {}
            }
        }
        let mut client = self.pg.pool().get().await?;
        let tx = client.transaction().await?;
        // Lock every room of the batch, in name order, recording the new ones.
        let mut names: Vec<&str> = batch.iter().map(RoomEvent::room).collect();
        names.sort_unstable();
        names.dedup();
        // A room new to the store is created at its first message's time, as SQLite's is.
        let now = crate::server::unix_ms();
        let created: Vec<i64> = names
            .iter()
            .map(|name| {
                batch
                    .iter()
                    .find_map(|e| match e {
                        RoomEvent::Message(m) if m.room == *name => Some(m.ts),
                        _ => None,
                    })
                    .unwrap_or(now)
            })
            .collect();
        let lock = tx
            .prepare_cached(
                "INSERT INTO rooms (name, created_ms, last_active)
                 SELECT n, c, c FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS x(n, c, i) ORDER BY i
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING name, head",
            )
            .await?;
        let mut heads: HashMap<String, i64> = HashMap::with_capacity(names.len());
        for row in tx.query(&lock, &[&names, &created]).await? {
            heads.insert(row.get(0), row.get(1));
        }
        // Retries already stored (through any node): one look-up for the whole batch.
        let keyed: Vec<usize> = (0..batch.len()).filter(|&i| retry_key(&batch[i]).is_some()).collect();
        let mut stored: HashMap<(String, String, String), i64> = HashMap::new();
        if !keyed.is_empty() {
            let (mut rooms, mut users, mut ids) = (Vec::new(), Vec::new(), Vec::new());
            for &i in &keyed {
                let (user, id) = retry_key(&batch[i]).unwrap_or_default();
                rooms.push(batch[i].room().to_owned());
                users.push(user.to_owned());
                ids.push(id.to_owned());
            }
            let find = tx
                .prepare_cached(
                    // One index probe per key (LATERAL): a join the planner is free to
                    // turn into a scan of the whole log would grow with it.
                    "SELECT k.room, k.user_id, k.client_id, e.seq
                     FROM unnest($1::text[], $2::text[], $3::text[]) AS k(room, user_id, client_id)
                     CROSS JOIN LATERAL (
                        SELECT seq FROM events
                        WHERE room = k.room AND user_id = k.user_id AND client_id = k.client_id
                          AND client_id <> '' AND user_id <> ''
                     ) e",
                )
                .await?;
            for row in tx.query(&find, &[&rooms, &users, &ids]).await? {
                stored.insert((row.get(0), row.get(1), row.get(2)), row.get(3));
            }
        }
        let mut run = MessageRun::default();
        let mut active: HashMap<&str, i64> = HashMap::new();
        let mut retries = Vec::new();
        for (i, event) in batch.iter_mut().enumerate() {
            let original = retry_key(event).and_then(|(user, id)| {
                stored.get(&(event.room().to_owned(), user.to_owned(), id.to_owned())).copied()
            });
            if let Some(seq) = original {
                // A retry: it becomes the stored original, and stores nothing.
                run.flush(&tx).await?;
                let room = event.room().to_owned();
                if let Some(found) = events_desc(&tx, &room, seq - 1, seq, 1).await?.pop() {
                    let mut found = found;
                    if let RoomEvent::Message(m) = &mut found
                        && let Some(original) = m.reply_to
                    {
                        m.quote = quote_of(&tx, &room, original).await?;
                    }
                    *event = found;
                }
                retries.push(i);
                continue;
            }
            let head = heads.entry(event.room().to_owned()).or_insert(0);
            *head += 1;
            event.set_seq(*head as Seq);
            // Later events of this batch with the same key are retries of this one.
            if let Some((user, id)) = retry_key(event) {
                stored.insert((event.room().to_owned(), user.to_owned(), id.to_owned()), *head);
            }
            match event {
                RoomEvent::Message(m) => {
                    if let Some(original) = m.reply_to {
                        // Its quote is what the original is at this point of the log.
                        run.flush(&tx).await?;
                        m.quote = quote_of(&tx, &m.room, original).await?;
                    }
                    run.push(m);
                }
                RoomEvent::Edit(e) => {
                    run.flush(&tx).await?;
                    edit(&tx, e).await?;
                }
                RoomEvent::Delete(d) => {
                    run.flush(&tx).await?;
                    delete(&tx, d).await?;
                }
                RoomEvent::React(r) => {
                    run.flush(&tx).await?;
                    react(&tx, r).await?;
                }
            }
        }
        run.flush(&tx).await?;
        for event in batch.iter() {
            if let RoomEvent::Message(m) = event {
                let at = active.entry(event.room()).or_insert(0);
                *at = (*at).max(m.ts);
            }
        }
        let (mut rooms, mut new_heads, mut last_active) = (Vec::new(), Vec::new(), Vec::new());
        for (room, head) in &heads {
            rooms.push(room.as_str());
            new_heads.push(*head);
            last_active.push(active.get(room.as_str()).copied().unwrap_or(0));
        }
        let move_heads = tx
            .prepare_cached(
                "UPDATE rooms SET head = u.head, last_active = GREATEST(rooms.last_active, u.active)
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(name, head, active)
                 WHERE rooms.name = u.name",
            )
            .await?;
        tx.execute(&move_heads, &[&rooms, &new_heads, &last_active]).await?;
        tx.commit().await?;
        Ok(retries)
    }

    async fn search_async(&self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        let mut client = self.pg.pool().get().await?;
        let tx = client.transaction().await?;
        // The bound on a search's cost: past it the search is refused as too broad.
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {SEARCH_TIMEOUT_MS}")).await?;
        let mut parts = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for term in &q.terms {
            let n = values.len() + 4;
            let expr = if term.prefix {
                // The prefix is the word's last token, as the index splits it.
                let words: Vec<String> = term
                    .text
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                let Some((last, rest)) = words.split_last() else { continue };
                let mut lexemes: Vec<String> = rest.iter().map(|w| format!("'{w}'")).collect();
                lexemes.push(format!("'{last}':*"));
                values.push(lexemes.join(" <-> "));
                format!("to_tsquery('simple', ${n})")
            } else {
                values.push(term.text.replace('\0', " "));
                // Split as the index was (see the `tsv` column in `postgres.rs`).
                format!("phraseto_tsquery('simple', regexp_replace(${n}, '[^[:alnum:]]+', ' ', 'g'))")
            };
            parts.push(if term.exclude { format!("!!({expr})") } else { expr });
        }
        if parts.is_empty() {
            return Ok(SearchPage::default());
        }
        let tsquery = parts.join(" && ");
        let sql = format!(
            "SELECT id, room, seq, nick, ts,
                    ts_headline('simple', text, {tsquery}, 'StartSel=\"\",StopSel=\"\",MaxWords=16,MinWords=6')
             FROM messages
             WHERE tsv @@ ({tsquery}) AND NOT deleted AND room = ANY($1) AND id < $2
               AND ($3::text IS NULL OR user_id = $3)
             ORDER BY id DESC LIMIT {}",
            q.limit + 1
        );
        let before = q.before.unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&q.rooms, &before, &q.from_user];
        for v in &values {
            params.push(v);
        }
        let rows = match tx.query(&sql, &params).await {
            Ok(rows) => rows,
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                return Err(StoreError::Query(
                    "the search is too broad: add words, or search one room".into(),
                ));
            }
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR) => {
                return Err(StoreError::Query(err.to_string()));
            }
            Err(err) => return Err(err.into()),
        };
        let mut page = SearchPage::default();
        for row in rows.iter().take(q.limit) {
            page.positions.push(row.get(0));
            page.hits.push(SearchHit {
                room: row.get(1),
                seq: row.get::<_, i64>(2) as Seq,
                nick: row.get(3),
                ts: row.get(4),
                snippet: row.get(5),
            });
        }
        if rows.len() > q.limit {
            page.next = page.positions.last().copied();
        }
        tx.commit().await?;
        Ok(page)
    }
}

#[async_trait::async_trait]
impl MessageStore for PgStore {
    fn assigns_seqs(&self) -> bool {
        true
    }

    async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let rows = client
                .query("SELECT name, head, GREATEST(last_active, created_ms) FROM rooms ORDER BY name", &[])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let name = RoomName::parse(r.get::<_, &str>(0)).ok()?;
                    Some(StoredRoom { name, head: r.get::<_, i64>(1) as Seq, last_active: r.get(2) })
                })
                .collect())
        }
        .await
    }

    async fn head(&self, room: &RoomName) -> Result<Seq, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("SELECT head FROM rooms WHERE name = $1").await?;
            let head: Option<i64> = client.query_opt(&stmt, &[&room.as_str()]).await?.map(|r| r.get(0));
            Ok(head.unwrap_or(0) as Seq)
        }
        .await
    }

    async fn heads(&self, rooms: &[String]) -> Result<Vec<(String, Seq)>, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("SELECT name, head FROM rooms WHERE name = ANY($1)").await?;
            let rows = client.query(&stmt, &[&rooms]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as Seq)).collect())
        }
        .await
    }

    async fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.append_async(batch).await
    }

    async fn events_after(
        &self,
        room: &RoomName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let events =
                events_desc(&client, room.as_str(), pg_seq(after), pg_seq(upto), (limit + 1) as i64).await?;
            let mut page = EventPage::from_newest(events, limit);
            attach_quotes(&client, room.as_str(), page.messages_mut()).await?;
            Ok(page)
        }
        .await
    }

    async fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ))
                .await?;
            let rows = client.query(&stmt, &[&room.as_str(), &pg_seq(before), &((limit + 1) as i64)]).await?;
            let messages =
                rows.iter().map(|r| message_at(room.as_str(), r, 0)).collect::<Result<Vec<_>, _>>()?;
            let mut page = Page::from_newest(messages, limit);
            attach_reactions(&client, room.as_str(), &mut page.messages).await?;
            attach_quotes(&client, room.as_str(), page.messages.iter_mut()).await?;
            Ok(page)
        }
        .await
    }

    async fn target(&self, room: &RoomName, seq: Seq, user: &str) -> Result<Option<Target>, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached("SELECT user_id, deleted FROM messages WHERE room = $1 AND seq = $2")
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&room.as_str(), &pg_seq(seq)]).await? else {
                return Ok(None);
            };
            let mut t = Target { author: row.get(0), deleted: row.get(1), ..Target::default() };
            let stmt = client
                .prepare_cached("SELECT emoji, user_id FROM reactions WHERE room = $1 AND target = $2")
                .await?;
            for row in client.query(&stmt, &[&room.as_str(), &pg_seq(seq)]).await? {
                let (emoji, by): (String, String) = (row.get(0), row.get(1));
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
        .await
    }

    async fn mark_read(&self, user: &str, room: &RoomName, seq: Seq) -> Result<Seq, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO read_state (user_id, room, seq) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, room) DO UPDATE SET seq = GREATEST(read_state.seq, EXCLUDED.seq)
                     RETURNING seq",
                )
                .await?;
            let row = client.query_one(&stmt, &[&user, &room.as_str(), &pg_seq(seq)]).await?;
            Ok(row.get::<_, i64>(0) as Seq)
        }
        .await
    }

    async fn unread(
        &self,
        user: &str,
        username: Option<&str>,
        rooms: &[String],
    ) -> Result<Vec<(String, Unread)>, StoreError> {
        async {
            let client = self.pg.pool().get().await?;
            let cap = i64::from(MAX_UNREAD_COUNT);
            let positions = client.prepare_cached("SELECT seq FROM read_state WHERE user_id = $1 AND room = $2").await?;
            let count = client
                .prepare_cached(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM messages
                      WHERE room = $1 AND seq > $2 AND NOT deleted AND user_id <> $3 LIMIT $4) x",
                )
                .await?;
            let mentions = client
                .prepare_cached(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM mentions m JOIN messages g ON g.room = m.room AND g.seq = m.seq
                      WHERE m.username = $1 AND m.room = $2 AND m.seq > $3 AND g.user_id <> $4 LIMIT $5) x",
                )
                .await?;
            let mut out = Vec::new();
            for room in rooms {
                let Some(row) = client.query_opt(&positions, &[&user, room]).await? else { continue };
                let last: i64 = row.get(0);
                let unread: i64 = client.query_one(&count, &[room, &last, &user, &cap]).await?.get(0);
                let mentioned: i64 = match username {
                    Some(name) => client.query_one(&mentions, &[&name, room, &last, &user, &cap]).await?.get(0),
                    None => 0,
                };
                out.push((
                    room.to_string(),
                    Unread { last_read: last as Seq, unread: unread as u32, mentions: mentioned as u32 },
                ));
            }
            Ok(out)
        }
        .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.search_async(query).await
    }
}

#[cfg(test)]
mod tests {
    //! The SQLite store's suite (`sqlite.rs`), run against PostgreSQL, and what only this
    //! engine does: it numbers events itself, from the room row's head, and turns retries
    //! into their originals. Each test gets a database of its own and is skipped (with the
    //! reason printed) when no PostgreSQL answers; see `pg_testing`.

    /// The store's calls as the tests make them: blocking, from the test's thread.
    impl PgStore {
        fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
            self.pg.run(MessageStore::rooms(self))
        }
        fn head(&self, room: &RoomName) -> Result<Seq, StoreError> {
            self.pg.run(MessageStore::head(self, room))
        }
        fn heads(&self, rooms: &[&str]) -> Result<Vec<(String, Seq)>, StoreError> {
            let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
            self.pg.run(MessageStore::heads(self, &rooms))
        }
        fn append(&self, batch: &mut [RoomEvent]) -> Result<Vec<usize>, StoreError> {
            self.pg.run(MessageStore::append(self, batch))
        }
        fn events_after(
            &self,
            room: &RoomName,
            after: Seq,
            upto: Seq,
            limit: usize,
        ) -> Result<EventPage, StoreError> {
            self.pg.run(MessageStore::events_after(self, room, after, upto, limit))
        }
        fn before(&self, room: &RoomName, before: Seq, limit: usize) -> Result<Page, StoreError> {
            self.pg.run(MessageStore::before(self, room, before, limit))
        }
        fn target(&self, room: &RoomName, seq: Seq, user: &str) -> Result<Option<Target>, StoreError> {
            self.pg.run(MessageStore::target(self, room, seq, user))
        }
        fn mark_read(&self, user: &str, room: &RoomName, seq: Seq) -> Result<Seq, StoreError> {
            self.pg.run(MessageStore::mark_read(self, user, room, seq))
        }
        fn unread(
            &self,
            user: &str,
            username: Option<&str>,
            rooms: &[&str],
        ) -> Result<Vec<(String, Unread)>, StoreError> {
            let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
            self.pg.run(MessageStore::unread(self, user, username, &rooms))
        }
        fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
            self.pg.run(MessageStore::search(self, query))
        }
    }

    use super::*;
    use crate::server::store::{SearchTerm, pg_testing, sqlite::SqliteStore};
    use std::{
        sync::Barrier,
        time::{Duration, Instant},
    };

    /// Runs `test` on a blocking thread (the store's calls block) against a fresh database,
    /// with the database's URL; returns at once when PostgreSQL is not reachable.
    async fn with_store(test: impl FnOnce(&PgStore, &Pg, &str) + Send + 'static) {
        let Some((pg, db)) = pg_testing::fresh().await else { return };
        let url = db.url().to_owned();
        let store = PgStore::new(pg.clone());
        let outcome = tokio::task::spawn_blocking(move || test(&store, &pg, &url)).await;
        drop(db);
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the test's thread: {e}"),
        }
    }

    /// Raw SQL, for what no store call does (rows written behind the store's back).
    fn sql(pg: &Pg, statements: &str) {
        pg.run(async { pg.pool().get().await.unwrap().batch_execute(statements).await.unwrap() })
    }

    fn count(pg: &Pg, query: &str) -> i64 {
        pg.run(async { pg.pool().get().await.unwrap().query_one(query, &[]).await.unwrap().get(0) })
    }

    fn msg(room: &str, seq: Seq) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            nick: "ann".into(),
            text: format!("m{seq}"),
            ts: 1,
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    /// A message by an account: `(room, user, client_id)` is what a retry repeats.
    fn by(room: &str, user: &str, client_id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq: 0,
            nick: format!("n{user}"),
            text: text.into(),
            ts: 5,
            client_id: client_id.into(),
            user: user.into(),
            ..Default::default()
        }
    }

    fn events(messages: impl IntoIterator<Item = ChatMessage>) -> Vec<RoomEvent> {
        messages.into_iter().map(RoomEvent::Message).collect()
    }

    fn name(room: &str) -> RoomName {
        RoomName::parse(room).unwrap()
    }

    trait Messages {
        fn put(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError>;
        /// The messages among the events of `events_after`.
        fn after(&self, room: &RoomName, after: Seq, upto: Seq, limit: usize) -> Result<Page, StoreError>;
    }

    impl Messages for PgStore {
        fn put(&self, messages: Vec<ChatMessage>) -> Result<(), StoreError> {
            self.append(&mut events(messages)).map(drop)
        }
        fn after(&self, room: &RoomName, after: Seq, upto: Seq, limit: usize) -> Result<Page, StoreError> {
            Ok(self.events_after(room, after, upto, limit)?.into_messages())
        }
    }

    fn seqs(page: &Page) -> Vec<Seq> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    fn edit_of(seq: Seq, target: Seq, text: &str) -> EditEvent {
        EditEvent {
            room: "a".into(),
            seq,
            target,
            text: text.into(),
            edited_ts: 9,
            user: "1".into(),
            nick: "ann".into(),
            client_id: format!("e{seq}"),
            mentions: Vec::new(),
        }
    }

    fn edit(seq: Seq, target: Seq, text: &str) -> RoomEvent {
        RoomEvent::Edit(edit_of(seq, target, text))
    }

    fn delete_of(seq: Seq, target: Seq) -> DeleteEvent {
        DeleteEvent {
            room: "a".into(),
            seq,
            target,
            by: "ann".into(),
            user: "1".into(),
            client_id: format!("d{seq}"),
        }
    }

    fn delete(seq: Seq, target: Seq) -> RoomEvent {
        RoomEvent::Delete(delete_of(seq, target))
    }

    fn react(seq: Seq, target: Seq, emoji: &str, user: &str, on: bool) -> RoomEvent {
        RoomEvent::React(ReactEvent {
            room: "a".into(),
            seq,
            target,
            emoji: emoji.into(),
            user: user.into(),
            nick: user.to_uppercase(),
            on,
        })
    }

    fn query(words: &str, rooms: &[&str]) -> SearchQuery {
        let parsed = crate::server::search::Query::parse(words).unwrap();
        SearchQuery {
            fts: parsed.fts,
            terms: parsed.terms,
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            from_user: None,
            before: None,
            limit: 10,
        }
    }

    fn hits(page: &SearchPage) -> Vec<(String, Seq)> {
        page.hits.iter().map(|h| (h.room.clone(), h.seq)).collect()
    }

    fn search(store: &PgStore, words: &str) -> Vec<Seq> {
        store.search(&query(words, &["a"])).unwrap().hits.iter().map(|h| h.seq).collect()
    }

    // --- The SQLite store's suite ---

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_then_read_pages_oldest_first() {
        with_store(|store, _, _| {
            let room = name("a");
            store.put((1..=10).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
            store.put(vec![msg("b", 1)]).unwrap();

            assert_eq!(store.head(&room).unwrap(), 10);
            let page = store.after(&room, 0, 10, 3).unwrap();
            assert_eq!((seqs(&page), page.more), (vec![8, 9, 10], true));
            let page = store.after(&room, 6, 8, 50).unwrap();
            assert_eq!((seqs(&page), page.more), (vec![7, 8], false));
            let page = store.before(&room, 5, 2).unwrap();
            assert_eq!((seqs(&page), page.more), (vec![3, 4], true));
            // A client-sent seq past i64::MAX must not wrap around to "from the start".
            assert!(store.after(&room, u64::MAX, 10, 50).unwrap().messages.is_empty());
            assert!(store.after(&room, 1 << 63, 10, 50).unwrap().messages.is_empty());
            assert_eq!(seqs(&store.after(&room, 0, u64::MAX, 50).unwrap()), (1..=10).collect::<Vec<_>>());
            let page = store.before(&room, 3, 5).unwrap();
            assert_eq!((seqs(&page), page.more), (vec![1, 2], false));
            assert_eq!(page.messages[0], msg("a", 1));
            assert_eq!(seqs(&store.before(&room, u64::MAX, 2).unwrap()), vec![9, 10]);
            assert_eq!(store.before(&name("nowhere"), u64::MAX, 10).unwrap(), Page::default());
            assert_eq!(store.head(&name("nowhere")).unwrap(), 0);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_after_pages_the_whole_log_newest_last() {
        with_store(|store, _, _| {
            let room = name("a");
            store.put((1..=3).map(|s| msg("a", s)).collect()).unwrap();
            store.append(&mut [edit(4, 1, "one"), react(5, 2, "👍", "2", true), delete(6, 3)]).unwrap();
            store.put(vec![msg("a", 7)]).unwrap();
            let page = store.events_after(&room, 0, 7, 3).unwrap();
            assert_eq!(page.events.iter().map(RoomEvent::seq).collect::<Vec<_>>(), vec![5, 6, 7]);
            assert!(page.more);
            let page = store.events_after(&room, 2, 5, 10).unwrap();
            assert!(!page.more);
            assert!(matches!(&page.events[..], [
                RoomEvent::Message(m), RoomEvent::Edit(e), RoomEvent::React(r)
            ] if m.seq == 3 && m.deleted && e.target == 1 && e.text == "one" && r.on && r.user == "2"));
            // Messages come in their current state, without the reactions the log builds.
            let page = store.events_after(&room, 0, 2, 10).unwrap();
            assert!(matches!(&page.events[1], RoomEvent::Message(m) if m.reactions.is_empty()));
            assert!(
                matches!(&page.events[0], RoomEvent::Message(m) if m.text == "one" && m.edited_ts == Some(9))
            );
            assert_eq!(store.events_after(&room, 7, 7, 10).unwrap(), EventPage::default());
        })
        .await
    }

    /// SQLite's `a_failed_batch_stores_nothing` makes its batch fail with a seq used twice;
    /// here seqs are the store's, so a row the store did not write stands where a later event
    /// of the batch goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_fails_partway_stores_nothing_and_leaves_the_heads() {
        with_store(|store, pg, _| {
            let a = name("a");
            store.put(vec![msg("a", 1)]).unwrap();
            sql(pg, "INSERT INTO events (room, seq, kind, target, ts) VALUES ('a', 4, 'react', 1, 0)");
            // Room b's message, a's message 2 and the edit are written before seq 4 fails.
            let mut batch =
                vec![RoomEvent::Message(msg("b", 1)), RoomEvent::Message(msg("a", 2)), edit(3, 1, "changed")];
            batch.push(RoomEvent::Message(msg("a", 4)));
            assert!(store.append(&mut batch).is_err());
            assert_eq!(store.head(&a).unwrap(), 1);
            assert_eq!(store.heads(&["a", "b"]).unwrap(), vec![("a".to_owned(), 1)], "b was never stored");
            let page = store.before(&a, Seq::MAX, 10).unwrap();
            assert_eq!(page.messages, vec![msg("a", 1)], "the edit rolled back with the rest");
            assert_eq!(count(pg, "SELECT COUNT(*) FROM messages"), 1);
            sql(pg, "DELETE FROM events WHERE room = 'a' AND seq = 4");
            // The next batch takes the seqs the failed one did not keep.
            let mut next = events([msg("a", 1)]);
            store.append(&mut next).unwrap();
            assert_eq!(next[0].seq(), 2);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rooms_survive_reopen_with_their_heads_and_activity() {
        with_store(|store, pg, url| {
            let mut late = msg("busy", 2);
            late.ts = 99;
            store.put(vec![msg("busy", 1), late, msg("quiet", 1)]).unwrap();
            // Another node (a pool of its own) sees what this one stored.
            let other = PgStore::new(Arc::new(pg.run(Pg::connect(url)).unwrap()));
            let rooms: Vec<(String, Seq, i64)> = other
                .rooms()
                .unwrap()
                .into_iter()
                .map(|r| (r.name.as_str().to_owned(), r.head, r.last_active))
                .collect();
            assert_eq!(rooms, vec![("busy".to_owned(), 2, 99), ("quiet".to_owned(), 1, 1)]);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_of_several_rooms_leave_out_the_rooms_not_stored() {
        with_store(|store, _, _| {
            store.put(vec![msg("a", 1), msg("a", 2), msg("b", 1)]).unwrap();
            let mut heads = store.heads(&["b", "a", "nowhere", "Not A Room!"]).unwrap();
            heads.sort();
            assert_eq!(heads, vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);
            assert!(store.heads(&[]).unwrap().is_empty());
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_change_the_current_state_and_the_index_in_the_same_commit() {
        with_store(|store, _, _| {
            let room = name("a");
            let mut first = msg("a", 1);
            first.text = "deploy on friday".into();
            store.put(vec![first, msg("a", 2)]).unwrap();
            let mut batch = vec![
                edit(3, 1, "deploy on monday"),
                react(4, 2, "🎉", "2", true),
                react(5, 2, "👍", "1", true),
                react(6, 2, "🎉", "1", true),
                react(7, 2, "🎉", "2", false),
            ];
            store.append(&mut batch).unwrap();
            assert_eq!(store.head(&room).unwrap(), 7);
            let page = store.before(&room, Seq::MAX, 10).unwrap();
            assert_eq!(
                (page.messages[0].text.as_str(), page.messages[0].edited_ts),
                ("deploy on monday", Some(9))
            );
            // 🎉's group began first and still has someone in it; 👍 came after.
            let reactions: Vec<(String, Vec<String>)> =
                page.messages[1].reactions.iter().map(|r| (r.emoji.clone(), r.users.clone())).collect();
            assert_eq!(reactions, vec![("🎉".into(), vec!["1".into()]), ("👍".into(), vec!["1".into()])]);
            assert_eq!(page.messages[1].reactions[0].nicks, vec!["1".to_owned()]);
            assert_eq!(search(store, "monday"), vec![1]);
            assert!(search(store, "friday").is_empty(), "the edit re-indexed");
            // The log replays every event, messages without their reactions.
            let events = store.events_after(&room, 0, 7, 100).unwrap().events;
            assert_eq!(events.iter().map(RoomEvent::seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
            assert!(matches!(&events[1], RoomEvent::Message(m) if m.reactions.is_empty()));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deletion_redacts_the_message_its_edits_and_the_index_and_later_changes_do_nothing() {
        with_store(|store, _, _| {
            let room = name("a");
            let mut first = msg("a", 1);
            first.text = "secret plans".into();
            store.put(vec![first]).unwrap();
            let mut batch = vec![
                edit(2, 1, "secret plans v2"),
                react(3, 1, "👍", "2", true),
                delete(4, 1),
                edit(5, 1, "after"),
                react(6, 1, "🎉", "2", true),
            ];
            store.append(&mut batch).unwrap();
            // What raced the deletion is stored as the no-op it became.
            assert!(matches!(&batch[3], RoomEvent::Edit(e) if e.text.is_empty()));
            assert!(matches!(&batch[4], RoomEvent::React(r) if !r.on));
            let m = &store.before(&room, Seq::MAX, 10).unwrap().messages[0];
            assert!(m.deleted && m.text.is_empty() && m.reactions.is_empty());
            let events = store.events_after(&room, 0, 6, 100).unwrap().events;
            assert!(matches!(&events[0], RoomEvent::Message(m) if m.deleted && m.text.is_empty()));
            assert!(matches!(&events[1], RoomEvent::Edit(e) if e.text.is_empty()), "{:?}", events[1]);
            assert!(matches!(&events[4], RoomEvent::Edit(e) if e.text.is_empty()), "{:?}", events[4]);
            assert!(matches!(&events[5], RoomEvent::React(r) if !r.on), "{:?}", events[5]);
            assert!(search(store, "secret").is_empty());
            let target = store.target(&room, 1, "2").unwrap().unwrap();
            assert!(target.deleted && target.reactions == 0);
            assert_eq!(store.target(&room, 99, "2").unwrap(), None);
            // A second deletion of a tombstone changes nothing, and is logged.
            let mut again = [delete(7, 1)];
            store.append(&mut again).unwrap();
            assert_eq!(store.head(&room).unwrap(), 7);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_or_reaction_of_a_message_that_is_not_there_is_stored_as_a_no_op() {
        with_store(|store, _, _| {
            let room = name("a");
            store.put(vec![msg("a", 1)]).unwrap();
            // Seqs past i64::MAX (only a client sends them) saturate rather than fail.
            let mut batch =
                vec![edit(2, 50, "ghost"), react(3, u64::MAX, "👍", "2", true), edit(4, u64::MAX, "x")];
            store.append(&mut batch).unwrap();
            assert!(matches!(&batch[0], RoomEvent::Edit(e) if e.text.is_empty()));
            assert!(matches!(&batch[1], RoomEvent::React(r) if !r.on));
            assert_eq!(store.head(&room).unwrap(), 4);
            assert_eq!(store.before(&room, Seq::MAX, 10).unwrap().messages, vec![msg("a", 1)]);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reactions_over_the_caps_are_stored_off() {
        with_store(|store, _, _| {
            store.put(vec![msg("a", 1)]).unwrap();
            let emoji = crate::ui::actions::EMOJI;
            let mut batch: Vec<RoomEvent> =
                (0..21).map(|i| react(2 + i as Seq, 1, emoji[i].0, "1", true)).collect();
            store.append(&mut batch).unwrap();
            let on: Vec<bool> = batch.iter().map(|e| matches!(e, RoomEvent::React(r) if r.on)).collect();
            assert_eq!(on.iter().filter(|o| **o).count(), 20);
            assert!(!on[20], "the 21st distinct emoji stays off");
            let target = store.target(&name("a"), 1, "1").unwrap().unwrap();
            assert_eq!((target.emoji.len(), target.mine.len()), (20, 20));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reactions_past_the_per_message_total_are_stored_off_and_repeats_change_nothing() {
        with_store(|store, _, _| {
            let room = name("a");
            store.put(vec![msg("a", 1)]).unwrap();
            let emoji = crate::ui::actions::EMOJI;
            let per_emoji = MAX_REACTIONS_PER_MESSAGE / MAX_EMOJI_PER_MESSAGE;
            let mut batch: Vec<RoomEvent> = (0..MAX_REACTIONS_PER_MESSAGE)
                .map(|i| {
                    react(
                        0,
                        1,
                        emoji[i % MAX_EMOJI_PER_MESSAGE].0,
                        &format!("u{}", i / MAX_EMOJI_PER_MESSAGE),
                        true,
                    )
                })
                .collect();
            // One too many, on an emoji already there; then a repeat of a reaction that is on.
            batch.push(react(0, 1, emoji[0].0, &format!("u{per_emoji}"), true));
            batch.push(react(0, 1, emoji[0].0, "u0", true));
            store.append(&mut batch).unwrap();
            assert!(
                batch[..MAX_REACTIONS_PER_MESSAGE].iter().all(|e| matches!(e, RoomEvent::React(r) if r.on))
            );
            assert!(
                matches!(&batch[MAX_REACTIONS_PER_MESSAGE], RoomEvent::React(r) if !r.on),
                "over the total"
            );
            assert!(
                matches!(&batch[MAX_REACTIONS_PER_MESSAGE + 1], RoomEvent::React(r) if r.on),
                "already on"
            );
            let target = store.target(&room, 1, "u0").unwrap().unwrap();
            assert_eq!((target.reactions, target.emoji.len(), target.mine.len()), (200, 20, 20));
            // Turning one off makes room for another; turning off what is off is logged, off.
            let mut batch = vec![react(0, 1, emoji[0].0, "u0", false), react(0, 1, emoji[0].0, "u0", false)];
            batch.push(react(0, 1, emoji[0].0, &format!("u{per_emoji}"), true));
            store.append(&mut batch).unwrap();
            assert!(matches!(&batch[2], RoomEvent::React(r) if r.on));
            let page = store.before(&room, Seq::MAX, 1).unwrap();
            let first = &page.messages[0].reactions[0];
            assert_eq!((first.emoji.as_str(), first.count), (emoji[0].0, per_emoji as u32));
            assert!(
                !first.users.contains(&"u0".to_owned())
                    && first.users.last() == Some(&format!("u{per_emoji}"))
            );
            assert_eq!(store.head(&room).unwrap(), 1 + 202 + 3);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_markers_never_move_back() {
        with_store(|store, _, _| {
            let room = name("a");
            store.put((1..=5).map(|s| msg("a", s)).collect()).unwrap();
            assert_eq!(store.mark_read("7", &room, 3).unwrap(), 3);
            assert_eq!(store.mark_read("7", &room, 2).unwrap(), 3);
            let unread = store.unread("7", Some("seven"), &["a", "b"]).unwrap();
            assert_eq!(unread.len(), 1, "only rooms read before");
            assert_eq!((unread[0].1.last_read, unread[0].1.unread), (3, 2));
            // A client-sent seq past i64::MAX saturates.
            assert_eq!(store.mark_read("7", &room, u64::MAX).unwrap(), i64::MAX as Seq);
            assert_eq!(store.mark_read("8", &name("b"), 0).unwrap(), 0);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unread_counts_leave_out_ones_own_and_deleted_messages_and_count_mentions() {
        with_store(|store, _, _| {
            let room = name("a");
            let mut from_bob = by("a", "2", "b1", "hi");
            from_bob.mentions = vec!["ann".into()];
            let mut mention = by("a", "1", "a1", "@bob look");
            mention.mentions = vec!["bob".into(), "carl".into()];
            let mut deleted_mention = by("a", "1", "a2", "@bob gone");
            deleted_mention.mentions = vec!["bob".into()];
            store
                .put(vec![msg("a", 1), from_bob, mention, deleted_mention, by("a", "1", "a3", "plain")])
                .unwrap();
            store.append(&mut [delete(0, 4)]).unwrap();
            store.mark_read("2", &room, 1).unwrap();
            let unread = |user: &str, name: Option<&str>| store.unread(user, name, &["a"]).unwrap()[0].1;
            // Seqs 3 and 5 by someone else, alive; 2 is bob's own, 4 deleted.
            assert_eq!(unread("2", Some("bob")), Unread { last_read: 1, unread: 2, mentions: 1 });
            assert_eq!(unread("2", None).mentions, 0);
            // An edit takes the mention away (and gives carl's back).
            let mut e = edit_of(0, 3, "no one");
            e.mentions = vec!["carl".into()];
            store.append(&mut [RoomEvent::Edit(e)]).unwrap();
            assert_eq!(unread("2", Some("bob")).mentions, 0);
            store.mark_read("9", &room, 0).unwrap();
            assert_eq!(unread("9", Some("carl")), Unread { last_read: 0, unread: 4, mentions: 1 });
            // Counts stop at the cap.
            let mut flood = by("b", "1", "", "@bob");
            flood.mentions = vec!["bob".into()];
            store.put(vec![flood; MAX_UNREAD_COUNT as usize + 5]).unwrap();
            store.mark_read("2", &crate::protocol::RoomName::parse("b").unwrap(), 0).unwrap();
            let capped = store.unread("2", Some("bob"), &["b"]).unwrap()[0].1;
            assert_eq!((capped.unread, capped.mentions), (MAX_UNREAD_COUNT, MAX_UNREAD_COUNT));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_quotes_its_original_as_it_is_now() {
        with_store(|store, _, _| {
            let room = name("a");
            let mut original = msg("a", 1);
            original.text = "first line\nsecond".into();
            let mut reply = msg("a", 2);
            reply.reply_to = Some(1);
            let mut batch = vec![RoomEvent::Message(original), RoomEvent::Message(reply)];
            store.append(&mut batch).unwrap();
            // The live frame carries the quote made in the commit.
            assert!(
                matches!(&batch[1], RoomEvent::Message(m) if m.quote == Some(Quote::of("ann", "first line", false)))
            );
            store.append(&mut [edit(3, 1, "edited")]).unwrap();
            let quote = |page: &Page| page.messages.iter().find(|m| m.seq == 2).unwrap().quote.clone();
            assert_eq!(quote(&store.before(&room, Seq::MAX, 10).unwrap()), Some(Quote::of("ann", "edited", false)));
            store.append(&mut [delete(4, 1)]).unwrap();
            assert_eq!(quote(&store.after(&room, 1, 4, 10).unwrap()), Some(Quote::of("ann", "", true)));
            // A reply to nothing stored quotes nothing.
            let mut orphan = msg("a", 5);
            orphan.reply_to = Some(77);
            let mut batch = events([orphan]);
            store.append(&mut batch).unwrap();
            assert!(matches!(&batch[0], RoomEvent::Message(m) if m.quote.is_none() && m.reply_to == Some(77)));
        })
        .await
    }

    // --- Search ---

    /// Messages to search: (room, user, text).
    const CORPUS: &[(&str, &str, &str)] = &[
        ("a", "1", "deploy on friday"),
        ("a", "2", "hello there friends"),
        ("a", "1", "there hello"),
        ("a", "2", "the deployment failed"),
        ("a", "1", "Deploy again, DEPLOY harder"),
        ("b", "2", "deploy in b"),
        ("a", "2", "c++ rocks and foo-bar too"),
        ("a", "1", "snake_case names"),
        ("a", "2", "HELLO THERE, shouting"),
        ("a", "1", "deployed it friday night"),
    ];

    fn corpus() -> Vec<RoomEvent> {
        CORPUS
            .iter()
            .enumerate()
            .map(|(i, (r, u, t))| RoomEvent::Message(by(r, u, &format!("s{i}"), t)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_finds_words_phrases_and_prefixes_and_leaves_out_exclusions() {
        with_store(|store, _, _| {
            store.append(&mut corpus()).unwrap();
            // Room a's seqs: the corpus in order, b's message aside.
            assert_eq!(search(store, "deploy"), vec![5, 1]);
            assert_eq!(search(store, "DePlOy"), vec![5, 1], "case does not matter");
            assert_eq!(search(store, "dep*"), vec![9, 5, 4, 1]);
            assert_eq!(search(store, "deploy*"), vec![9, 5, 4, 1]);
            assert_eq!(search(store, "dep* -friday"), vec![5, 4]);
            assert_eq!(search(store, "friday deploy"), vec![1]);
            assert_eq!(search(store, r#""hello there""#), vec![8, 2], "a phrase is in order");
            assert_eq!(search(store, "hello there"), vec![8, 3, 2]);
            assert_eq!(search(store, r#"hello -"there hello""#), vec![8, 2]);
            assert_eq!(search(store, "c++"), vec![6]);
            assert_eq!(search(store, "bar"), vec![6]);
            assert_eq!(search(store, "case"), vec![7]);
            assert!(search(store, "nothing").is_empty());
            // Each hit says where it is, with an excerpt of its text.
            let page = store.search(&query("friday", &["a"])).unwrap();
            assert_eq!(page.hits[0].nick, "n1");
            assert_eq!(page.hits[0].ts, 5);
            assert!(page.hits[0].snippet.contains("friday"), "{:?}", page.hits[0].snippet);
            assert_eq!(page.positions.len(), 2);
            assert!(page.positions[0] > page.positions[1], "newest first");
            assert_eq!(page.next, None);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_keeps_to_the_rooms_given_and_the_author_asked_for() {
        with_store(|store, _, _| {
            store.append(&mut corpus()).unwrap();
            let both = store.search(&query("deploy", &["a", "b"])).unwrap();
            assert_eq!(hits(&both), vec![("b".into(), 1), ("a".into(), 5), ("a".into(), 1)]);
            assert_eq!(hits(&store.search(&query("deploy", &["b"])).unwrap()), vec![("b".into(), 1)]);
            assert!(store.search(&query("deploy", &[])).unwrap().hits.is_empty());
            let mut by_two = query("dep*", &["a", "b"]);
            by_two.from_user = Some("2".into());
            assert_eq!(hits(&store.search(&by_two).unwrap()), vec![("b".into(), 1), ("a".into(), 4)]);
            by_two.from_user = Some("nobody".into());
            assert!(store.search(&by_two).unwrap().hits.is_empty());
            // Deleted messages are not found.
            store.append(&mut [delete(0, 5)]).unwrap();
            assert_eq!(search(store, "deploy"), vec![1]);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_pages_go_on_from_their_cursor() {
        with_store(|store, _, _| {
            let mut batch: Vec<RoomEvent> = (0..7)
                .map(|i| {
                    RoomEvent::Message(by(
                        if i % 3 == 0 { "b" } else { "a" },
                        "1",
                        &format!("p{i}"),
                        "page me",
                    ))
                })
                .collect();
            store.append(&mut batch).unwrap();
            let mut q = query("page", &["a", "b"]);
            q.limit = 3;
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.search(&q).unwrap();
                assert!(page.hits.len() <= 3 && page.hits.len() == page.positions.len());
                seen.extend(hits(&page));
                pages += 1;
                match page.next {
                    Some(next) => {
                        assert_eq!(
                            Some(&next),
                            page.positions.last(),
                            "the next page starts after the last hit"
                        );
                        q.before = Some(next);
                    }
                    None => break,
                }
            }
            assert_eq!(pages, 3);
            let mut expected: Vec<(String, Seq)> = Vec::new();
            let (mut a, mut b) = (0, 0);
            for i in 0..7 {
                if i % 3 == 0 {
                    b += 1;
                    expected.push(("b".into(), b));
                } else {
                    a += 1;
                    expected.push(("a".into(), a));
                }
            }
            expected.reverse();
            assert_eq!(seen, expected, "every hit once, newest first");
            // Exactly a page's worth leaves no cursor.
            q.before = None;
            q.limit = 7;
            assert_eq!(store.search(&q).unwrap().next, None);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_search_with_no_word_to_find_finds_nothing() {
        with_store(|store, _, _| {
            store.append(&mut corpus()).unwrap();
            let mut q = query("deploy", &["a"]);
            q.terms = vec![SearchTerm { text: "!!".into(), prefix: true, exclude: false }];
            assert_eq!(store.search(&q).unwrap(), SearchPage::default());
        })
        .await
    }

    /// The same corpus and queries on both engines find the same messages, in the same
    /// order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_finds_what_the_sqlite_engine_finds() {
        with_store(|store, _, _| {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqliteStore::open(&dir.path().join("t.db"), false).unwrap();
            let mut numbered = corpus();
            store.append(&mut numbered).unwrap();
            sqlite.append(&mut numbered).unwrap();
            for words in [
                "deploy",
                "DEPLOY",
                "dep*",
                "depl*",
                "dep* -friday",
                "friday deploy",
                r#""hello there""#,
                "hello there",
                "there -hello",
                "c++",
                "foo-bar",
                "foo",
                "snake_case",
                "snake",
                "shouting",
                r#"hello -"hello there""#,
                "fri*",
                "night*",
            ] {
                let q = query(words, &["a", "b"]);
                let pg_hits = hits(&store.search(&q).unwrap());
                assert_eq!(pg_hits, hits(&sqlite.search(&q).unwrap()), "{words}");
            }
        })
        .await
    }

    /// PostgreSQL's parser alone keeps file names, host names, URLs, e-mail addresses and
    /// version numbers as single lexemes (`deploy.sh`, `example.com`); SQLite's `unicode61`
    /// splits at every non-alphanumeric character. The index (`messages.tsv` in
    /// `postgres.rs`) and the queries split the same way, so both engines find the same.
    /// (Diacritics still differ: SQLite folds them, PostgreSQL's `simple` keeps them.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_splits_words_as_the_sqlite_engine_does() {
        with_store(|store, _, _| {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqliteStore::open(&dir.path().join("t.db"), false).unwrap();
            let texts = [
                "run deploy.sh now",
                "see example.com/docs today",
                "mail ann@example.org please",
                "v1.2.3 released",
                "look at a.bcd",
            ];
            let mut numbered: Vec<RoomEvent> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| RoomEvent::Message(by("a", "1", &format!("t{i}"), t)))
                .collect();
            store.append(&mut numbered).unwrap();
            sqlite.append(&mut numbered).unwrap();
            let mut differ = Vec::new();
            for words in [
                "deploy",
                "sh",
                "example",
                "docs",
                "ann",
                "org",
                "v1",
                "released",
                "a.bc*",
                "bcd",
                "deploy.sh",
            ] {
                let q = query(words, &["a"]);
                let (on_pg, on_sqlite) =
                    (hits(&store.search(&q).unwrap()), hits(&sqlite.search(&q).unwrap()));
                if on_pg != on_sqlite {
                    differ.push(format!("{words}: postgres {on_pg:?}, sqlite {on_sqlite:?}"));
                }
            }
            assert!(differ.is_empty(), "{differ:#?}");
        })
        .await
    }

    // --- What only PostgreSQL does: seqs from the room row, retries found in the store ---

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seqs_are_numbered_per_room_from_the_stored_head_whatever_the_event_carried() {
        with_store(|store, pg, _| {
            let mut batch = events([msg("a", 42), msg("b", 7), msg("a", 0)]);
            batch.push(edit(99, 1, "edited"));
            batch.push(react(3, 1, "👍", "2", true));
            store.append(&mut batch).unwrap();
            assert_eq!(
                batch.iter().map(|e| (e.room().to_owned(), e.seq())).collect::<Vec<_>>(),
                vec![
                    ("a".to_owned(), 1),
                    ("b".to_owned(), 1),
                    ("a".to_owned(), 2),
                    ("a".to_owned(), 3),
                    ("a".to_owned(), 4),
                ]
            );
            // Targets are not renumbered: the edit changed message 1.
            assert_eq!(store.before(&name("a"), Seq::MAX, 10).unwrap().messages[0].text, "edited");
            let mut batch = events([msg("b", 1), msg("a", 1)]);
            store.append(&mut batch).unwrap();
            assert_eq!((batch[0].seq(), batch[1].seq()), (2, 5));
            // The head is the room row's: a row moved on (another node's counter) is followed,
            // and a room made before its first message (its settings) starts at 1.
            sql(
                pg,
                "UPDATE rooms SET head = 10 WHERE name = 'b';
                     INSERT INTO rooms (name, created_ms) VALUES ('c', 1)",
            );
            let mut batch = events([msg("b", 3), msg("c", 9)]);
            store.append(&mut batch).unwrap();
            assert_eq!((batch[0].seq(), batch[1].seq()), (11, 1));
            let mut heads = store.heads(&["a", "b", "c"]).unwrap();
            heads.sort();
            assert_eq!(heads, vec![("a".into(), 5), ("b".into(), 11), ("c".into(), 1)]);
            assert_eq!(store.events_after(&name("a"), 0, 10, 10).unwrap().events.len(), 5);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_for_one_room_from_two_threads_at_once_never_leave_a_gap_or_repeat_a_seq() {
        const BATCHES: usize = 30;
        const SIZE: usize = 6;
        with_store(|store, _, _| {
            let start = Barrier::new(2);
            // Per thread: every stored (room, seq, text), batch by batch.
            let told: Vec<Vec<Vec<(String, Seq, String)>>> = std::thread::scope(|scope| {
                let threads: Vec<_> = (0..2)
                    .map(|t| {
                        let start = &start;
                        scope.spawn(move || {
                            start.wait();
                            (0..BATCHES)
                                .map(|b| {
                                    // The two threads name the rooms in opposite orders.
                                    let mut batch: Vec<RoomEvent> = (0..SIZE)
                                        .map(|i| {
                                            let room = if (i + t) % 2 == 0 { "a" } else { "x" };
                                            let id = format!("t{t}-{b}-{i}");
                                            RoomEvent::Message(by(room, &format!("u{t}"), &id, &id))
                                        })
                                        .collect();
                                    store.append(&mut batch).unwrap();
                                    batch
                                        .iter()
                                        .map(|e| match e {
                                            RoomEvent::Message(m) => (m.room.clone(), m.seq, m.text.clone()),
                                            other => panic!("{other:?}"),
                                        })
                                        .collect()
                                })
                                .collect()
                        })
                    })
                    .collect();
                threads.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let per_room = BATCHES * SIZE;
            for r in ["a", "x"] {
                assert_eq!(store.head(&name(r)).unwrap(), per_room as Seq);
                let stored = store.after(&name(r), 0, Seq::MAX, per_room + 1).unwrap();
                assert_eq!(
                    seqs(&stored),
                    (1..=per_room as Seq).collect::<Vec<_>>(),
                    "{r}: a gap or a repeat"
                );
                let texts: HashMap<Seq, String> =
                    stored.messages.into_iter().map(|m| (m.seq, m.text)).collect();
                for batch in told.iter().flatten() {
                    let mine: Vec<&(String, Seq, String)> =
                        batch.iter().filter(|(room, _, _)| room == r).collect();
                    // A batch's events of one room are consecutive: its commit held the room.
                    assert!(mine.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{r}: {mine:?}");
                    for (_, seq, text) in mine {
                        assert_eq!(texts.get(seq), Some(text), "{r} {seq}: stored as told");
                    }
                }
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_within_one_batch_becomes_its_original_and_stores_nothing() {
        with_store(|store, pg, _| {
            let mut batch = events([
                by("a", "1", "x", "first"),
                by("a", "1", "y", "other"),
                by("a", "1", "x", "again"),
                // Not retries: another author, another room.
                by("a", "2", "x", "bob's x"),
                by("b", "1", "x", "x in b"),
            ]);
            assert_eq!(store.append(&mut batch).unwrap(), vec![2], "the retry is told apart");
            assert_eq!(batch[2], batch[0]);
            assert!(matches!(&batch[0], RoomEvent::Message(m) if m.seq == 1 && m.text == "first"));
            assert_eq!(batch.iter().map(RoomEvent::seq).collect::<Vec<_>>(), vec![1, 2, 1, 3, 1]);
            assert_eq!(store.head(&name("a")).unwrap(), 3);
            assert_eq!(count(pg, "SELECT COUNT(*) FROM messages WHERE room = 'a'"), 3);
            assert_eq!(count(pg, "SELECT COUNT(*) FROM events WHERE room = 'a'"), 3);
            // An edit retried in its batch, after the change it made.
            let e1 = EditEvent { client_id: "ed".into(), ..edit_of(0, 2, "other, edited") };
            let e2 = EditEvent { client_id: "ed".into(), ..edit_of(0, 2, "edited twice?") };
            let mut batch = vec![RoomEvent::Edit(e1), RoomEvent::Edit(e2)];
            assert_eq!(store.append(&mut batch).unwrap(), vec![1]);
            assert_eq!(batch[0], batch[1]);
            assert!(matches!(&batch[1], RoomEvent::Edit(e) if e.seq == 4 && e.text == "other, edited"));
            assert_eq!(store.head(&name("a")).unwrap(), 4);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_in_a_later_batch_becomes_the_stored_original_and_stores_nothing() {
        with_store(|store, pg, _| {
            let a = name("a");
            let mut original = by("a", "1", "q", "the question");
            original.mentions = vec!["bob".into()];
            let mut reply = by("a", "2", "r", "the answer");
            reply.reply_to = Some(1);
            let mut first = events([original, reply]);
            store.append(&mut first).unwrap();
            store
                .append(&mut [RoomEvent::Delete(DeleteEvent { client_id: "del".into(), ..delete_of(0, 1) })])
                .unwrap();
            let mut retry = by("a", "2", "r", "the answer, sent again");
            retry.ts = 77;
            retry.reply_to = Some(1);
            let mut batch = events([msg("a", 0), retry]);
            batch.push(RoomEvent::Delete(DeleteEvent { client_id: "del".into(), ..delete_of(0, 1) }));
            assert_eq!(store.append(&mut batch).unwrap(), vec![1, 2]);
            // The message as stored (with its quote as the original is now), the deletion's
            // seq: nothing new for either.
            let RoomEvent::Message(m) = &batch[1] else { panic!("{:?}", batch[1]) };
            assert_eq!((m.seq, m.text.as_str(), m.ts), (2, "the answer", 5));
            assert_eq!(m.quote, Some(Quote::of("n1", "", true)));
            assert_eq!(batch[2].seq(), 3);
            assert_eq!(batch[0].seq(), 4, "the new message takes the next seq");
            assert_eq!(store.head(&a).unwrap(), 4);
            assert_eq!(count(pg, "SELECT COUNT(*) FROM events WHERE room = 'a'"), 4);
            // The rooms' heads stay put when a batch holds nothing but retries.
            let mut only = events([by("a", "2", "r", "third time")]);
            assert_eq!(store.append(&mut only).unwrap(), vec![0]);
            assert_eq!((only[0].seq(), store.head(&a).unwrap()), (2, 4));
        })
        .await
    }

    /// The transaction is PostgreSQL's, not the client's: a connection lost in the middle
    /// of a batch (here, ended by the server while the batch waits for a row) takes
    /// everything the batch wrote with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_connection_is_ended_midway_stores_nothing() {
        with_store(|store, pg, _| {
            let a = name("a");
            store.put(vec![msg("a", 1)]).unwrap();
            // Another connection holds message 1: the batch's edit waits for it, after the
            // batch's messages are written.
            let holder = pg.run(pg.pool().get()).unwrap();
            pg.run(holder.batch_execute("BEGIN; SELECT 1 FROM messages WHERE room = 'a' AND seq = 1 FOR UPDATE"))
                .unwrap();
            std::thread::scope(|scope| {
                let append = scope.spawn(|| {
                    let mut batch = events([msg("a", 2), msg("b", 1)]);
                    batch.push(edit(3, 1, "never"));
                    store.append(&mut batch)
                });
                // Watched from a third connection: inside the holder's transaction
                // pg_stat_activity would show one snapshot throughout.
                let watcher = pg.run(pg.pool().get()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let waiting = pg.run(watcher.query(
                        "SELECT pid FROM pg_stat_activity
                         WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                        &[],
                    ));
                    if let Some(row) = waiting.unwrap().first() {
                        let pid: i32 = row.get(0);
                        pg.run(watcher.execute("SELECT pg_terminate_backend($1)", &[&pid])).unwrap();
                        break;
                    }
                    if Instant::now() > deadline {
                        // Let the batch go on (a panic here would wait for it forever).
                        pg.run(holder.batch_execute("ROLLBACK")).unwrap();
                        panic!("the batch never waited for the row");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let failed = append.join().unwrap();
                assert!(failed.is_err(), "the batch failed");
                eprintln!("the batch: {}", failed.unwrap_err());
            });
            pg.run(holder.batch_execute("ROLLBACK")).unwrap();
            drop(holder);
            // The ended connection can be handed out once more before its task has seen the
            // socket close (the pool's fast recycling checks only that): that call fails.
            let deadline = Instant::now() + Duration::from_secs(5);
            let head = loop {
                match store.head(&a) {
                    Ok(head) => break head,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("after the ended connection: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(head, 1);
            assert!(store.heads(&["b"]).unwrap().is_empty());
            assert_eq!(store.before(&a, Seq::MAX, 10).unwrap().messages, vec![msg("a", 1)]);
            assert_eq!(count(pg, "SELECT COUNT(*) FROM events"), 1);
            let mut next = events([msg("a", 1)]);
            store.append(&mut next).unwrap();
            assert_eq!(next[0].seq(), 2);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_text_with_a_nul_character_does_not_fail_its_batch() {
        with_store(|store, _, _| {
            let mut batch = events([
                by("a", "1", "n1", "before"),
                by("a", "2", "n2", "a\0b"),
                by("a", "1", "n3", "after"),
            ]);
            store.append(&mut batch).unwrap();
            let stored = store.before(&name("a"), Seq::MAX, 10).unwrap();
            assert_eq!(seqs(&stored), vec![1, 2, 3]);
            let RoomEvent::Message(sent) = &batch[1] else { unreachable!() };
            assert_eq!(sent.text, "a\u{FFFD}b");
            assert_eq!(stored.messages[1].text, sent.text, "what was sent is what is stored");
            // Nor does a search for one fail.
            let mut q = query("a", &["a"]);
            q.terms[0].text = "b\0before".into();
            assert!(store.search(&q).unwrap().hits.is_empty());
            assert_eq!(search(store, "before"), vec![1]);
            let mut e = edit(0, 1, "x\0y");
            store.append(std::slice::from_mut(&mut e)).unwrap();
            let RoomEvent::Edit(e) = &e else { unreachable!() };
            assert_eq!(store.before(&name("a"), Seq::MAX, 10).unwrap().messages[0].text, e.text);
        })
        .await
    }
}
