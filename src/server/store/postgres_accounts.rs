//! PostgreSQL engine of [`AccountStore`], for several nodes on one database: a port of
//! `sqlite_accounts` on the pool of [`Pg`].
//!
//! SQLite runs one writer at a time (every write is an IMMEDIATE transaction), so its
//! checks and the writes that follow them cannot be interleaved. Here transactions run
//! side by side under READ COMMITTED, so each write that checks before it writes takes the
//! lock that makes the check hold until it commits: the users table for the name checks
//! (no unique index sees a username that equals another account's display name), the
//! account's row for the token cap, the room's row for a room's creation.

use super::accounts::*;
use super::postgres::{Pg, is_unique_violation};
use crate::protocol::{RoomRole, ServerRole, Username, Visibility};
use std::sync::Arc;
use tokio_postgres::Row;

pub struct PgAccounts {
    pg: Arc<Pg>,
}

impl PgAccounts {
    pub fn new(pg: Arc<Pg>) -> Self {
        PgAccounts { pg }
    }
}

/// The columns `row_to_account` reads, in its order (macros, so the queries are constants).
macro_rules! account_columns {
    () => {
        "id, username, display_name, role, active, created_ms"
    };
    (u) => {
        "u.id, u.username, u.display_name, u.role, u.active, u.created_ms"
    };
}

macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.created_ms, s.last_seen_ms, s.user_agent, s.address"
    };
}

macro_rules! token_columns {
    () => {
        "t.id, t.user_id, t.name, t.created_ms, t.last_used_ms"
    };
}

/// Taken by the writes that check names (sign-up, display name changes) before they
/// write: it excludes the others and every other write to users (each waits a moment),
/// not reads. The unique indexes alone would let a username through that equals another
/// account's display name, written at the same time.
const LOCK_NAMES: &str = "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE";

/// Only valid usernames are ever written; a hand-edited row falls back to a safe value.
fn stored_username(raw: &str) -> Username {
    Username::parse(raw).unwrap_or_else(|| Username::parse("invalid").expect("a valid literal"))
}

fn row_to_account(row: &Row, at: usize) -> Result<Account, tokio_postgres::Error> {
    let username: String = row.try_get(at + 1)?;
    let role: String = row.try_get(at + 3)?;
    Ok(Account {
        id: row.try_get(at)?,
        username: stored_username(&username),
        display_name: row.try_get(at + 2)?,
        role: ServerRole::parse(&role).unwrap_or(ServerRole::Member),
        active: row.try_get(at + 4)?,
        created_ms: row.try_get(at + 5)?,
    })
}

fn row_to_session(row: &Row) -> Result<SessionRow, tokio_postgres::Error> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        created_ms: row.try_get(2)?,
        last_seen_ms: row.try_get(3)?,
        user_agent: row.try_get(4)?,
        address: row.try_get(5)?,
    })
}

fn row_to_token(row: &Row) -> Result<TokenRow, tokio_postgres::Error> {
    Ok(TokenRow {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        name: row.try_get(2)?,
        created_ms: row.try_get(3)?,
        last_used_ms: row.try_get(4)?,
    })
}

/// Whether `key` is any account's username or display name key, other than `except`'s.
async fn key_taken(
    client: &impl deadpool_postgres::GenericClient,
    key: &str,
    except: Option<UserId>,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM users
                WHERE (username_key = $1 OR display_key = $1) AND id IS DISTINCT FROM $2::BIGINT)",
        )
        .await?;
    client.query_one(&stmt, &[&key, &except]).await?.try_get(0)
}

/// A name index's violation as the name it protects (the checks under [`LOCK_NAMES`]
/// come first, so this is only a backstop).
fn name_violation(err: tokio_postgres::Error) -> AccountError {
    // `users_username_key` is the index of the `username` column, `users_username_key_key`
    // that of `username_key`.
    if is_unique_violation(&err, Some("users_username_key"))
        || is_unique_violation(&err, Some("users_username_key_key"))
    {
        AccountError::UsernameTaken
    } else if is_unique_violation(&err, Some("users_display_key_key")) {
        AccountError::DisplayNameTaken
    } else {
        err.into()
    }
}

fn visibility_str(visibility: &Visibility) -> &'static str {
    if visibility.is_public() { "public" } else { "private" }
}

impl AccountStore for PgAccounts {
    fn create_account(
        &self,
        new: NewAccount,
        invite: InviteUse,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(LOCK_NAMES).await?;
            let count = tx.prepare_cached("SELECT COUNT(*) FROM users").await?;
            let existing: i64 = tx.query_one(&count, &[]).await?.try_get(0)?;
            if key_taken(&tx, &new.username_key, None).await? {
                return Err(AccountError::UsernameTaken);
            }
            if new.display_key != new.username_key && key_taken(&tx, &new.display_key, None).await? {
                return Err(AccountError::DisplayNameTaken);
            }
            if invite == InviteUse::FirstOnly && existing > 0 {
                return Err(AccountError::SignupClosed);
            }
            // The first account needs no invite: nobody could have made one yet.
            if let InviteUse::Required(code) = &invite
                && existing > 0
            {
                let Some(code) = code else { return Err(AccountError::InviteRequired) };
                // Unlimited invites (uses_left NULL) stay NULL. A spender waiting on this
                // row rechecks the use left once this one commits.
                let spend = tx
                    .prepare_cached(
                        "UPDATE invites SET uses_left = uses_left - 1
                         WHERE code_digest = $1 AND (uses_left IS NULL OR uses_left > 0)
                           AND (expires_ms IS NULL OR expires_ms > $2)",
                    )
                    .await?;
                if tx.execute(&spend, &[code, &now_ms]).await? == 0 {
                    return Err(AccountError::InviteRequired);
                }
            }
            let role = if new.admin || existing == 0 { ServerRole::Admin } else { ServerRole::Member };
            let insert = tx
                .prepare_cached(
                    "INSERT INTO users (username, username_key, display_name, display_key, password, role, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .await?;
            let id: i64 = tx
                .query_one(
                    &insert,
                    &[
                        &new.username.as_str(),
                        &new.username_key,
                        &new.display_name,
                        &new.display_key,
                        &new.password_phc,
                        &role.as_str(),
                        &now_ms,
                    ],
                )
                .await
                .map_err(name_violation)?
                .try_get(0)?;
            tx.commit().await?;
            Ok(Account {
                id,
                username: new.username,
                display_name: new.display_name,
                role,
                active: true,
                created_ms: now_ms,
            })
        })
    }

    fn account(&self, id: UserId) -> Result<Option<Account>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!("SELECT ", account_columns!(), " FROM users WHERE id = $1"))
                .await?;
            Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| row_to_account(&r, 0)).transpose()?)
        })
    }

    fn account_by_username(&self, username: &Username) -> Result<Option<(Account, String)>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    account_columns!(),
                    ", password FROM users WHERE username = $1"
                ))
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&username.as_str()]).await? else { return Ok(None) };
            Ok(Some((row_to_account(&row, 0)?, row.try_get(6)?)))
        })
    }

    fn account_by_display_key(&self, key: &str) -> Result<Option<Account>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!("SELECT ", account_columns!(), " FROM users WHERE display_key = $1"))
                .await?;
            Ok(client.query_opt(&stmt, &[&key]).await?.map(|r| row_to_account(&r, 0)).transpose()?)
        })
    }

    fn name_key_taken(&self, key: &str) -> Result<bool, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            Ok(key_taken(&client, key, None).await?)
        })
    }

    fn accounts(&self, limit: usize) -> Result<Vec<Account>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            // Byte order, as SQLite sorts: the database's collation may sort otherwise.
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM users ORDER BY username COLLATE \"C\" LIMIT $1"
                ))
                .await?;
            // PostgreSQL refuses a negative LIMIT where SQLite reads it as none.
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client.query(&stmt, &[&limit]).await?;
            Ok(rows.iter().map(|r| row_to_account(r, 0)).collect::<Result<_, _>>()?)
        })
    }

    fn count_accounts(&self) -> Result<i64, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("SELECT COUNT(*) FROM users").await?;
            Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
        })
    }

    fn set_password(&self, user: UserId, phc: &str, keep: Option<&str>) -> Result<Vec<String>, AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            let update = tx.prepare_cached("UPDATE users SET password = $2 WHERE id = $1").await?;
            if tx.execute(&update, &[&user, &phc]).await? == 0 {
                return Err(AccountError::NoSuchUser);
            }
            // One statement lists and ends them, so a session made meanwhile is either
            // both or neither.
            let end = tx
                .prepare_cached(
                    "DELETE FROM auth_sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2::TEXT RETURNING id",
                )
                .await?;
            let ended =
                tx.query(&end, &[&user, &keep]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
            tx.commit().await?;
            Ok(ended)
        })
    }

    fn set_display_name(&self, user: UserId, display_name: &str, key: &str) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(LOCK_NAMES).await?;
            if key_taken(&tx, key, Some(user)).await? {
                return Err(AccountError::DisplayNameTaken);
            }
            let update = tx
                .prepare_cached("UPDATE users SET display_name = $2, display_key = $3 WHERE id = $1")
                .await?;
            if tx.execute(&update, &[&user, &display_name, &key]).await.map_err(name_violation)? == 0 {
                return Err(AccountError::NoSuchUser);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn set_server_role(&self, user: UserId, role: ServerRole) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("UPDATE users SET role = $2 WHERE id = $1").await?;
            match client.execute(&stmt, &[&user, &role.as_str()]).await? {
                0 => Err(AccountError::NoSuchUser),
                _ => Ok(()),
            }
        })
    }

    fn set_active(&self, user: UserId, active: bool) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            let update = tx.prepare_cached("UPDATE users SET active = $2 WHERE id = $1").await?;
            if tx.execute(&update, &[&user, &active]).await? == 0 {
                return Err(AccountError::NoSuchUser);
            }
            if !active {
                let sessions = tx.prepare_cached("DELETE FROM auth_sessions WHERE user_id = $1").await?;
                tx.execute(&sessions, &[&user]).await?;
                let tokens = tx.prepare_cached("DELETE FROM api_tokens WHERE user_id = $1").await?;
                tx.execute(&tokens, &[&user]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn create_session(&self, row: &SessionRow, token_digest: &str) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO auth_sessions (id, token_digest, user_id, created_ms, last_seen_ms, user_agent, address)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            client
                .execute(
                    &stmt,
                    &[
                        &row.id,
                        &token_digest,
                        &row.user_id,
                        &row.created_ms,
                        &row.last_seen_ms,
                        &row.user_agent,
                        &row.address,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn session_by_digest(&self, digest: &str) -> Result<Option<(SessionRow, Account)>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    session_columns!(),
                    ", ",
                    account_columns!(u),
                    " FROM auth_sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_digest = $1 AND u.active"
                ))
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&digest]).await? else { return Ok(None) };
            Ok(Some((row_to_session(&row)?, row_to_account(&row, 6)?)))
        })
    }

    fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt =
                client.prepare_cached("UPDATE auth_sessions SET last_seen_ms = $2 WHERE id = $1").await?;
            client.execute(&stmt, &[&id, &now_ms]).await?;
            Ok(())
        })
    }

    fn sessions(&self, user: UserId) -> Result<Vec<SessionRow>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM auth_sessions s WHERE s.user_id = $1 ORDER BY s.last_seen_ms DESC"
                ))
                .await?;
            let rows = client.query(&stmt, &[&user]).await?;
            Ok(rows.iter().map(row_to_session).collect::<Result<_, _>>()?)
        })
    }

    fn delete_session(&self, user: UserId, id: &str) -> Result<bool, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt =
                client.prepare_cached("DELETE FROM auth_sessions WHERE id = $1 AND user_id = $2").await?;
            Ok(client.execute(&stmt, &[&id, &user]).await? > 0)
        })
    }

    fn create_token(&self, row: &TokenRow, token_digest: &str, max: usize) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            // The account's row, locked, orders the creations of its tokens: a second one
            // counts after the first commits. (NO KEY UPDATE: sign-ins, whose sessions
            // only reference the row, need not wait.) No row: the insert's foreign key
            // refuses it, as SQLite's does.
            let lock = tx.prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE").await?;
            tx.query_opt(&lock, &[&row.user_id]).await?;
            let count = tx.prepare_cached("SELECT COUNT(*) FROM api_tokens WHERE user_id = $1").await?;
            let held: i64 = tx.query_one(&count, &[&row.user_id]).await?.try_get(0)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= max {
                return Err(AccountError::TooManyTokens);
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO api_tokens (id, token_digest, user_id, name, created_ms) VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
            tx.execute(&insert, &[&row.id, &token_digest, &row.user_id, &row.name, &row.created_ms]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn token_by_digest(&self, digest: &str) -> Result<Option<(TokenRow, Account)>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    token_columns!(),
                    ", ",
                    account_columns!(u),
                    " FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_digest = $1 AND u.active"
                ))
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&digest]).await? else { return Ok(None) };
            Ok(Some((row_to_token(&row)?, row_to_account(&row, 5)?)))
        })
    }

    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("UPDATE api_tokens SET last_used_ms = $2 WHERE id = $1").await?;
            client.execute(&stmt, &[&id, &now_ms]).await?;
            Ok(())
        })
    }

    fn tokens(&self, user: UserId) -> Result<Vec<TokenRow>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM api_tokens t WHERE t.user_id = $1 ORDER BY t.created_ms"
                ))
                .await?;
            let rows = client.query(&stmt, &[&user]).await?;
            Ok(rows.iter().map(row_to_token).collect::<Result<_, _>>()?)
        })
    }

    fn delete_token(&self, user: UserId, id: &str) -> Result<bool, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2").await?;
            Ok(client.execute(&stmt, &[&id, &user]).await? > 0)
        })
    }

    fn create_invite(&self, row: &InviteRow, code_digest: &str) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO invites (id, code_digest, created_by, uses_left, expires_ms, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            client
                .execute(
                    &stmt,
                    &[
                        &row.id,
                        &code_digest,
                        &row.created_by,
                        &row.uses_left,
                        &row.expires_ms,
                        &row.created_ms,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn invites(&self) -> Result<Vec<InviteRow>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT id, created_by, uses_left, expires_ms, created_ms FROM invites
                     ORDER BY created_ms DESC LIMIT 1000",
                )
                .await?;
            let rows = client.query(&stmt, &[]).await?;
            let invite = |r: &Row| -> Result<InviteRow, tokio_postgres::Error> {
                Ok(InviteRow {
                    id: r.try_get(0)?,
                    created_by: r.try_get(1)?,
                    uses_left: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                })
            };
            Ok(rows.iter().map(invite).collect::<Result<_, _>>()?)
        })
    }

    fn delete_invite(&self, id: &str) -> Result<bool, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client.prepare_cached("DELETE FROM invites WHERE id = $1").await?;
            Ok(client.execute(&stmt, &[&id]).await? > 0)
        })
    }

    fn create_room(
        &self,
        name: &str,
        meta: &RoomMeta,
        owner: Option<UserId>,
        now_ms: i64,
    ) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            let visibility = visibility_str(&meta.visibility);
            let insert = tx
                .prepare_cached(
                    "INSERT INTO rooms (name, created_ms, visibility, dm, topic) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            let inserted = tx.execute(&insert, &[&name, &now_ms, &visibility, &meta.dm, &meta.topic]).await?;
            if inserted == 0 {
                // Stored already: by its first message (a public room anyone could have
                // made by joining), or by an earlier creation. Its row, locked, holds off
                // a creation, a first message or a standing until this one commits, so
                // what the next statement sees stays true.
                let lock = tx.prepare_cached("SELECT 1 FROM rooms WHERE name = $1 FOR UPDATE").await?;
                if tx.query_opt(&lock, &[&name]).await?.is_none() {
                    // Nothing deletes rooms: the row was there a statement ago.
                    return Err(AccountError::Engine {
                        engine: "postgres",
                        message: format!("room {name} vanished while it was being created"),
                    });
                }
                let check = tx
                    .prepare_cached(
                        "SELECT visibility <> 'public' OR topic <> ''
                            OR EXISTS (SELECT 1 FROM room_members WHERE room = $1)
                            OR EXISTS (SELECT 1 FROM messages WHERE room = $1)
                         FROM rooms WHERE name = $1",
                    )
                    .await?;
                let has_settings: bool = tx.query_one(&check, &[&name]).await?.try_get(0)?;
                if has_settings {
                    return Err(AccountError::RoomExists);
                }
                let update = tx
                    .prepare_cached("UPDATE rooms SET visibility = $2, dm = $3, topic = $4 WHERE name = $1")
                    .await?;
                tx.execute(&update, &[&name, &visibility, &meta.dm, &meta.topic]).await?;
            }
            if let Some(owner) = owner {
                // SQLite's INSERT OR REPLACE: the whole row anew, `since_ms` too.
                let member = tx
                    .prepare_cached(
                        "INSERT INTO room_members (room, user_id, role, banned, muted, since_ms)
                         VALUES ($1, $2, 'owner', false, false, $3)
                         ON CONFLICT (room, user_id) DO UPDATE
                         SET role = EXCLUDED.role, banned = EXCLUDED.banned, muted = EXCLUDED.muted,
                             since_ms = EXCLUDED.since_ms",
                    )
                    .await?;
                tx.execute(&member, &[&name, &owner, &now_ms]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn set_topic(&self, room: &str, topic: &str) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO rooms (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            tx.execute(&insert, &[&room, &crate::server::unix_ms()]).await?;
            let update = tx.prepare_cached("UPDATE rooms SET topic = $2 WHERE name = $1").await?;
            tx.execute(&update, &[&room, &topic]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn room_metas(&self) -> Result<Vec<(String, RoomMeta)>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached("SELECT name, visibility, dm, topic FROM rooms ORDER BY name COLLATE \"C\"")
                .await?;
            let rows = client.query(&stmt, &[]).await?;
            let meta = |r: &Row| -> Result<(String, RoomMeta), tokio_postgres::Error> {
                let visibility: String = r.try_get(1)?;
                Ok((
                    r.try_get(0)?,
                    RoomMeta {
                        visibility: if visibility == "private" {
                            Visibility::Private
                        } else {
                            Visibility::Public
                        },
                        dm: r.try_get(2)?,
                        topic: r.try_get(3)?,
                    },
                ))
            };
            Ok(rows.iter().map(meta).collect::<Result<_, _>>()?)
        })
    }

    fn set_membership(&self, m: &Membership, now_ms: i64) -> Result<(), AccountError> {
        self.pg.run(async {
            let mut client = self.pg.pool().get().await?;
            let tx = client.transaction().await?;
            // A room with standing recorded is kept (and loaded at start).
            let insert = tx
                .prepare_cached(
                    "INSERT INTO rooms (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            tx.execute(&insert, &[&m.room, &now_ms]).await?;
            // The weakest lock on the room's row, enough to wait for a creation checking
            // the room (`create_room`, which then comes first) or to make it see this.
            let lock = tx.prepare_cached("SELECT 1 FROM rooms WHERE name = $1 FOR KEY SHARE").await?;
            tx.query_opt(&lock, &[&m.room]).await?;
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO room_members (room, user_id, role, banned, muted, since_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (room, user_id) DO UPDATE
                     SET role = EXCLUDED.role, banned = EXCLUDED.banned, muted = EXCLUDED.muted",
                )
                .await?;
            tx.execute(&upsert, &[&m.room, &m.user_id, &m.role.as_str(), &m.banned, &m.muted, &now_ms])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn remove_membership(&self, room: &str, user: UserId) -> Result<(), AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt =
                client.prepare_cached("DELETE FROM room_members WHERE room = $1 AND user_id = $2").await?;
            client.execute(&stmt, &[&room, &user]).await?;
            Ok(())
        })
    }

    fn memberships_of(&self, room: Option<&str>) -> Result<Vec<Membership>, AccountError> {
        self.pg.run(async {
            let client = self.pg.pool().get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT m.room, m.user_id, u.username, u.display_name, m.role, m.banned, m.muted
                     FROM room_members m JOIN users u ON u.id = m.user_id
                     WHERE $1::TEXT IS NULL OR m.room = $1::TEXT
                     ORDER BY m.room COLLATE \"C\", u.username COLLATE \"C\"",
                )
                .await?;
            let rows = client.query(&stmt, &[&room]).await?;
            let membership = |r: &Row| -> Result<Membership, tokio_postgres::Error> {
                let username: String = r.try_get(2)?;
                let role: String = r.try_get(4)?;
                Ok(Membership {
                    room: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    username: stored_username(&username),
                    display_name: r.try_get(3)?,
                    role: RoomRole::parse(&role).unwrap_or(RoomRole::Member),
                    banned: r.try_get(5)?,
                    muted: r.try_get(6)?,
                })
            };
            Ok(rows.iter().map(membership).collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::pg_testing;
    use std::sync::Barrier;

    /// Runs `test` on a blocking thread (the store's calls block) against a fresh
    /// database, or skips it when PostgreSQL is not reachable.
    async fn with_store(test: impl FnOnce(&PgAccounts, &Pg) + Send + 'static) {
        let Some((pg, _db)) = pg_testing::fresh().await else { return };
        let store = PgAccounts::new(pg.clone());
        let outcome = tokio::task::spawn_blocking(move || test(&store, &pg)).await;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the test's thread: {e}"),
        }
    }

    /// Raw SQL, for rows only the message store writes.
    fn sql(pg: &Pg, statements: &str) {
        pg.run(async { pg.pool().get().await.unwrap().batch_execute(statements).await.unwrap() })
    }

    fn new(username: &str, display: &str) -> NewAccount {
        NewAccount {
            username: Username::parse(username).unwrap(),
            username_key: format!("k:{username}"),
            display_name: display.to_owned(),
            display_key: format!("k:{}", display.to_lowercase()),
            password_phc: "$argon2id$stub".to_owned(),
            admin: false,
        }
    }

    fn invite(id: &str, uses: Option<i64>, expires: Option<i64>) -> InviteRow {
        InviteRow { id: id.into(), created_by: Some(1), uses_left: uses, expires_ms: expires, created_ms: 0 }
    }

    fn with(code: &str) -> InviteUse {
        InviteUse::Required(Some(code.to_owned()))
    }

    fn session(user: UserId, id: &str, last_seen_ms: i64) -> SessionRow {
        SessionRow {
            id: id.into(),
            user_id: user,
            created_ms: 1,
            last_seen_ms,
            user_agent: "ua".into(),
            address: "127.0.0.1".into(),
        }
    }

    fn token(user: UserId, id: &str) -> TokenRow {
        TokenRow { id: id.into(), user_id: user, name: id.into(), created_ms: 1, last_used_ms: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_account_is_admin_and_names_collide_across_usernames_and_display_names() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            assert_eq!(ann.role, ServerRole::Admin);
            let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 2).unwrap();
            assert_eq!(bob.role, ServerRole::Member);
            assert_ne!(ann.id, bob.id);
            assert!(matches!(
                s.create_account(new("ann", "X"), InviteUse::NotNeeded, 3),
                Err(AccountError::UsernameTaken)
            ));
            // A display name that is someone's username, and a username that is someone's
            // display name, both collide.
            assert!(matches!(
                s.create_account(new("carl", "bob"), InviteUse::NotNeeded, 3),
                Err(AccountError::DisplayNameTaken)
            ));
            let mut dan = new("dan", "Dan");
            dan.username_key = "k:ann".into();
            assert!(matches!(
                s.create_account(dan, InviteUse::NotNeeded, 3),
                Err(AccountError::UsernameTaken)
            ));
            let mut fay = new("fay", "Fay");
            fay.username_key = "k:bob".into();
            assert!(matches!(
                s.create_account(fay, InviteUse::NotNeeded, 3),
                Err(AccountError::UsernameTaken)
            ));
            // One's own username as display name is fine.
            let gil = s.create_account(new("gil", "gil"), InviteUse::NotNeeded, 3).unwrap();
            assert_eq!(s.account_by_display_key("k:gil").unwrap().map(|a| a.id), Some(gil.id));
            assert!(s.name_key_taken("k:bob").unwrap() && !s.name_key_taken("k:zed").unwrap());
            // Closed sign-up admits the first account only, checked in the same transaction.
            assert!(matches!(
                s.create_account(new("eve", "Eve"), InviteUse::FirstOnly, 4),
                Err(AccountError::SignupClosed)
            ));
            // `admin` makes an admin even when others exist.
            let mut hal = new("hal", "Hal");
            hal.admin = true;
            assert_eq!(s.create_account(hal, InviteUse::NotNeeded, 5).unwrap().role, ServerRole::Admin);
            assert_eq!(s.count_accounts().unwrap(), 4);
            assert_eq!(s.account(bob.id).unwrap(), Some(bob));
            assert_eq!(s.account(9999).unwrap(), None);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_signup_admits_the_first_account() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::FirstOnly, 1).unwrap();
            assert_eq!(ann.role, ServerRole::Admin);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invite_is_spent_once_per_use_and_never_after_it_expires() {
        with_store(|s, _| {
            s.create_account(new("ann", "Ann"), InviteUse::Required(None), 1).unwrap();
            s.create_invite(&invite("once", Some(1), None), "d-once").unwrap();
            s.create_invite(&invite("old", None, Some(50)), "d-old").unwrap();
            s.create_invite(&invite("open", None, None), "d-open").unwrap();
            assert!(matches!(
                s.create_account(new("bob", "Bob"), InviteUse::Required(None), 100),
                Err(AccountError::InviteRequired)
            ));
            s.create_account(new("bob", "Bob"), with("d-once"), 100).unwrap();
            for code in ["d-once", "d-old", "nope"] {
                assert!(matches!(
                    s.create_account(new("cy", "Cy"), with(code), 100),
                    Err(AccountError::InviteRequired)
                ));
            }
            // An unexpired invite before its expiry, and an unlimited one, again and again.
            s.create_account(new("cy", "Cy"), with("d-old"), 49).unwrap();
            s.create_account(new("di", "Di"), with("d-open"), 100).unwrap();
            s.create_account(new("ed", "Ed"), with("d-open"), 100).unwrap();
            // A name collision spends nothing.
            s.create_invite(&invite("twice", Some(2), None), "d-twice").unwrap();
            assert!(matches!(
                s.create_account(new("ed", "E"), with("d-twice"), 100),
                Err(AccountError::UsernameTaken)
            ));
            let invites = s.invites().unwrap();
            let left = |id: &str| invites.iter().find(|i| i.id == id).unwrap().uses_left;
            assert_eq!((left("once"), left("open"), left("twice")), (Some(0), None, Some(2)));
            assert!(s.delete_invite("once").unwrap());
            assert!(!s.delete_invite("once").unwrap());
            assert_eq!(s.invites().unwrap().len(), 3);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sign_ups_spend_an_invite_exactly_as_often_as_it_allows() {
        with_store(|s, _| {
            s.create_account(new("admin", "Admin"), InviteUse::NotNeeded, 1).unwrap();
            s.create_invite(&invite("three", Some(3), None), "d-three").unwrap();
            let start = Barrier::new(8);
            let made = std::thread::scope(|scope| {
                let tries: Vec<_> = (0..8)
                    .map(|i| {
                        let start = &start;
                        scope.spawn(move || {
                            start.wait();
                            s.create_account(new(&format!("u{i}"), &format!("U{i}")), with("d-three"), 10)
                        })
                    })
                    .collect();
                tries.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>()
            });
            assert_eq!(made.iter().filter(|r| r.is_ok()).count(), 3);
            assert!(made.iter().all(|r| matches!(r, Ok(_) | Err(AccountError::InviteRequired))));
            assert_eq!(s.invites().unwrap()[0].uses_left, Some(0));
            assert_eq!(s.count_accounts().unwrap(), 4);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sign_ups_cannot_share_a_name_across_username_and_display_name() {
        with_store(|s, _| {
            s.create_account(new("admin", "Admin"), InviteUse::NotNeeded, 1).unwrap();
            // One takes the name as a username, the other as a display name: no unique
            // index sees the two collide, only the check under the lock.
            for round in 0..10 {
                let name = format!("zed{round}");
                let start = Barrier::new(2);
                let (a, b) = std::thread::scope(|scope| {
                    let a = scope.spawn(|| {
                        start.wait();
                        s.create_account(new(&name, &format!("Someone {round}")), InviteUse::NotNeeded, 2)
                    });
                    let b = scope.spawn(|| {
                        start.wait();
                        s.create_account(
                            new(&format!("other{round}"), &name.to_uppercase()),
                            InviteUse::NotNeeded,
                            2,
                        )
                    });
                    (a.join().unwrap(), b.join().unwrap())
                });
                match (&a, &b) {
                    (Ok(_), Err(AccountError::DisplayNameTaken))
                    | (Err(AccountError::UsernameTaken), Ok(_)) => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_display_name_changes_unless_another_account_has_it() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            s.create_account(new("bob", "Bobby"), InviteUse::NotNeeded, 2).unwrap();
            assert!(matches!(
                s.set_display_name(ann.id, "Bob", "k:bob"),
                Err(AccountError::DisplayNameTaken)
            ));
            assert!(matches!(
                s.set_display_name(ann.id, "BOBBY", "k:bobby"),
                Err(AccountError::DisplayNameTaken)
            ));
            // Its own username's key, or its own display name again, is its own.
            s.set_display_name(ann.id, "ANN", "k:ann").unwrap();
            s.set_display_name(ann.id, "Annie", "k:annie").unwrap();
            assert_eq!(s.account(ann.id).unwrap().unwrap().display_name, "Annie");
            assert_eq!(s.account_by_display_key("k:annie").unwrap().map(|a| a.id), Some(ann.id));
            assert_eq!(s.account_by_display_key("k:ann").unwrap(), None);
            assert!(matches!(s.set_display_name(9999, "Zed", "k:zed"), Err(AccountError::NoSuchUser)));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accounts_are_listed_by_username_and_their_role_changes() {
        with_store(|s, _| {
            for name in ["cy", "ann", "bob"] {
                s.create_account(new(name, &name.to_uppercase()), InviteUse::NotNeeded, 1).unwrap();
            }
            let names = |limit| -> Vec<String> {
                s.accounts(limit).unwrap().into_iter().map(|a| a.username.as_str().to_owned()).collect()
            };
            assert_eq!(names(usize::MAX), ["ann", "bob", "cy"]);
            assert_eq!(names(2), ["ann", "bob"]);
            let bob = s.account_by_username(&Username::parse("bob").unwrap()).unwrap().unwrap().0;
            s.set_server_role(bob.id, ServerRole::Admin).unwrap();
            assert_eq!(s.account(bob.id).unwrap().unwrap().role, ServerRole::Admin);
            assert!(matches!(s.set_server_role(9999, ServerRole::Admin), Err(AccountError::NoSuchUser)));
            assert!(matches!(s.set_active(9999, false), Err(AccountError::NoSuchUser)));
            assert!(matches!(s.set_password(9999, "x", None), Err(AccountError::NoSuchUser)));
            assert!(s.account_by_username(&Username::parse("zed").unwrap()).unwrap().is_none());
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_end_with_a_password_change_but_the_kept_one_and_with_deactivation() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            for id in ["a", "b", "c"] {
                s.create_session(&session(ann.id, id, 1), &format!("digest-{id}")).unwrap();
            }
            let mut ended = s.set_password(ann.id, "$argon2id$new", Some("b")).unwrap();
            ended.sort();
            assert_eq!(ended, ["a", "c"]);
            assert!(s.session_by_digest("digest-a").unwrap().is_none());
            assert_eq!(s.session_by_digest("digest-b").unwrap().unwrap().0.id, "b");
            assert!(!s.delete_session(ann.id + 1, "b").unwrap(), "another user's session is not found");
            s.set_active(ann.id, false).unwrap();
            assert!(s.session_by_digest("digest-b").unwrap().is_none());
            let (account, phc) = s.account_by_username(&Username::parse("ANN").unwrap()).unwrap().unwrap();
            assert!(!account.active);
            assert_eq!(phc, "$argon2id$new");
            // Reactivated, it signs in anew; without a kept session every one ends.
            s.set_active(ann.id, true).unwrap();
            assert!(s.account(ann.id).unwrap().unwrap().active);
            assert!(s.sessions(ann.id).unwrap().is_empty());
            s.create_session(&session(ann.id, "d", 1), "digest-d").unwrap();
            assert_eq!(s.set_password(ann.id, "$argon2id$newer", None).unwrap(), ["d"]);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_are_found_by_digest_touched_listed_and_deleted() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 1).unwrap();
            s.create_session(&session(ann.id, "a1", 10), "da1").unwrap();
            s.create_session(&session(ann.id, "a2", 20), "da2").unwrap();
            s.create_session(&session(bob.id, "b1", 30), "db1").unwrap();
            let (row, account) = s.session_by_digest("da1").unwrap().unwrap();
            assert_eq!((row, account), (session(ann.id, "a1", 10), ann.clone()));
            assert!(s.session_by_digest("a1").unwrap().is_none(), "found by digest, not id");
            let ids = |user| -> Vec<String> { s.sessions(user).unwrap().into_iter().map(|r| r.id).collect() };
            assert_eq!(ids(ann.id), ["a2", "a1"], "most recently seen first");
            s.touch_session("a1", 40).unwrap();
            assert_eq!(s.session_by_digest("da1").unwrap().unwrap().0.last_seen_ms, 40);
            assert_eq!(ids(ann.id), ["a1", "a2"]);
            assert!(!s.delete_session(ann.id, "b1").unwrap());
            assert!(s.delete_session(ann.id, "a1").unwrap());
            assert!(!s.delete_session(ann.id, "a1").unwrap());
            assert_eq!((ids(ann.id), ids(bob.id)), (vec!["a2".to_owned()], vec!["b1".to_owned()]));
            // A session of no account is refused by the engine.
            assert!(matches!(
                s.create_session(&session(9999, "x", 1), "dx"),
                Err(AccountError::Engine { engine: "postgres", .. })
            ));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_account_holds_at_most_max_tokens() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            s.create_token(&token(ann.id, "a"), "da", 2).unwrap();
            s.create_token(&token(ann.id, "b"), "db", 2).unwrap();
            assert!(matches!(s.create_token(&token(ann.id, "c"), "dc", 2), Err(AccountError::TooManyTokens)));
            assert!(s.delete_token(ann.id, "a").unwrap());
            s.create_token(&token(ann.id, "c"), "dc", 2).unwrap();
            assert_eq!(s.tokens(ann.id).unwrap().len(), 2);
            assert!(matches!(s.create_token(&token(ann.id, "z"), "dz", 0), Err(AccountError::TooManyTokens)));
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_token_creations_cannot_pass_the_cap() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let start = Barrier::new(8);
            let made = std::thread::scope(|scope| {
                let tries: Vec<_> = (0..8)
                    .map(|i| {
                        let start = &start;
                        scope.spawn(move || {
                            start.wait();
                            s.create_token(&token(ann.id, &format!("t{i}")), &format!("d{i}"), 3)
                        })
                    })
                    .collect();
                tries.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>()
            });
            assert_eq!(made.iter().filter(|r| r.is_ok()).count(), 3);
            assert!(made.iter().all(|r| matches!(r, Ok(()) | Err(AccountError::TooManyTokens))));
            assert_eq!(s.tokens(ann.id).unwrap().len(), 3);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_sign_in_until_revoked_or_the_account_is_deactivated() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 1).unwrap();
            s.create_token(&token(ann.id, "a"), "da", 10).unwrap();
            s.create_token(&TokenRow { created_ms: 2, ..token(ann.id, "b") }, "db", 10).unwrap();
            s.create_token(&token(bob.id, "c"), "dc", 10).unwrap();
            let (row, account) = s.token_by_digest("da").unwrap().unwrap();
            assert_eq!((row, account.id), (token(ann.id, "a"), ann.id));
            s.touch_token("a", 77).unwrap();
            assert_eq!(s.token_by_digest("da").unwrap().unwrap().0.last_used_ms, Some(77));
            let ids: Vec<String> = s.tokens(ann.id).unwrap().into_iter().map(|t| t.id).collect();
            assert_eq!(ids, ["a", "b"], "oldest first");
            assert!(!s.delete_token(bob.id, "a").unwrap(), "another user's token is not found");
            assert!(s.delete_token(ann.id, "b").unwrap());
            assert!(s.token_by_digest("db").unwrap().is_none());
            s.create_session(&session(ann.id, "s", 1), "ds").unwrap();
            s.set_active(ann.id, false).unwrap();
            assert!(s.token_by_digest("da").unwrap().is_none());
            assert!(s.tokens(ann.id).unwrap().is_empty() && s.sessions(ann.id).unwrap().is_empty());
            // Reactivation brings none of them back; others' are untouched.
            s.set_active(ann.id, true).unwrap();
            assert!(
                s.token_by_digest("da").unwrap().is_none() && s.session_by_digest("ds").unwrap().is_none()
            );
            assert_eq!(s.token_by_digest("dc").unwrap().unwrap().1.id, bob.id);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn room_settings_and_standings_are_kept() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let meta = RoomMeta { visibility: Visibility::Private, dm: false, topic: "t".into() };
            s.create_room("plans", &meta, Some(ann.id), 5).unwrap();
            assert!(matches!(s.create_room("plans", &meta, None, 6), Err(AccountError::RoomExists)));
            assert_eq!(s.room_metas().unwrap(), vec![("plans".to_owned(), meta)]);
            let members = s.memberships_of(Some("plans")).unwrap();
            assert_eq!((members.len(), members[0].role), (1, RoomRole::Owner));
            let mut m = members[0].clone();
            m.muted = true;
            s.set_membership(&m, 7).unwrap();
            assert!(s.memberships().unwrap()[0].muted);
            s.remove_membership("plans", ann.id).unwrap();
            assert!(s.memberships_of(Some("plans")).unwrap().is_empty());
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_is_created_over_a_bare_row_but_not_over_one_in_use() {
        with_store(|s, pg| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 1).unwrap();
            let private = RoomMeta { visibility: Visibility::Private, dm: false, topic: String::new() };
            // Spoken in already (a public room anyone could have made by joining).
            sql(
                pg,
                "INSERT INTO rooms (name, created_ms, head, last_active) VALUES ('lobby', 1, 1, 1);
                 INSERT INTO messages (room, seq, nick, text, ts, client_id) VALUES ('lobby', 1, 'ann', 'hi', 1, 'c1');",
            );
            assert!(matches!(s.create_room("lobby", &private, Some(bob.id), 2), Err(AccountError::RoomExists)));
            // A topic, or a standing, is a setting.
            s.set_topic("topical", "news").unwrap();
            assert!(matches!(s.create_room("topical", &private, None, 2), Err(AccountError::RoomExists)));
            let standing = Membership {
                room: "held".into(),
                user_id: bob.id,
                username: bob.username.clone(),
                display_name: bob.display_name.clone(),
                role: RoomRole::Member,
                banned: true,
                muted: false,
            };
            s.set_membership(&standing, 3).unwrap();
            assert!(matches!(s.create_room("held", &private, None, 4), Err(AccountError::RoomExists)));
            // A row left with nothing in it is taken over, settings and all.
            s.remove_membership("held", bob.id).unwrap();
            let dm = RoomMeta { visibility: Visibility::Private, dm: true, topic: "us".into() };
            s.create_room("held", &dm, Some(ann.id), 5).unwrap();
            let metas = s.room_metas().unwrap();
            assert_eq!(metas.iter().find(|(n, _)| n == "held").map(|(_, m)| m), Some(&dm));
            assert_eq!(metas.iter().find(|(n, _)| n == "lobby").map(|(_, m)| m), Some(&RoomMeta::default()));
            assert_eq!(
                metas.iter().find(|(n, _)| n == "topical").map(|(_, m)| m.topic.as_str()),
                Some("news")
            );
            // The owner's row is written anew, standing and all.
            s.set_membership(&standing, 6).unwrap();
            s.set_membership(
                &Membership {
                    room: "held".into(),
                    user_id: ann.id,
                    username: ann.username.clone(),
                    display_name: ann.display_name.clone(),
                    role: RoomRole::Member,
                    banned: true,
                    muted: true,
                },
                6,
            )
            .unwrap();
            assert!(matches!(s.create_room("held", &dm, Some(ann.id), 7), Err(AccountError::RoomExists)));
            let held = s.memberships_of(Some("held")).unwrap();
            let names: Vec<(&str, RoomRole, bool, bool)> =
                held.iter().map(|m| (m.username.as_str(), m.role, m.banned, m.muted)).collect();
            assert_eq!(names, [("ann", RoomRole::Member, true, true), ("bob", RoomRole::Member, true, false)]);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memberships_round_trip_in_room_then_username_order() {
        with_store(|s, _| {
            let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
            let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 1).unwrap();
            let standing = |room: &str, who: &Account, role, banned, muted| Membership {
                room: room.into(),
                user_id: who.id,
                username: who.username.clone(),
                display_name: who.display_name.clone(),
                role,
                banned,
                muted,
            };
            let all = vec![
                standing("a-room", &ann, RoomRole::Owner, false, false),
                standing("a-room", &bob, RoomRole::Moderator, false, true),
                standing("b_room", &ann, RoomRole::Member, true, false),
                standing("b_room", &bob, RoomRole::Member, false, false),
            ];
            for m in all.iter().rev() {
                s.set_membership(m, 1).unwrap();
            }
            assert_eq!(s.memberships().unwrap(), all);
            assert_eq!(s.memberships_of(Some("b_room")).unwrap(), all[2..]);
            assert!(s.memberships_of(Some("c")).unwrap().is_empty());
            // Changing a standing keeps one row; the rooms are stored with it.
            s.set_membership(&standing("b_room", &ann, RoomRole::Member, false, false), 2).unwrap();
            assert!(!s.memberships_of(Some("b_room")).unwrap()[0].banned);
            let rooms: Vec<String> = s.room_metas().unwrap().into_iter().map(|(n, _)| n).collect();
            assert_eq!(rooms, ["a-room", "b_room"]);
        })
        .await
    }
}
