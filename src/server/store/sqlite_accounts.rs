//! SQLite engine of [`AccountStore`]: its own connections to the server's database file,
//! so account writes never wait behind the message committer's connection, and so the
//! `confab admin` commands can open the same file while a server runs (SQLite's own
//! locking orders the writers; every write is one short IMMEDIATE transaction).

use super::accounts::*;
use super::sqlite::{configure, migrate};
use crate::protocol::{RoomRole, ServerRole, Username, Visibility};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::{path::Path, sync::Mutex};

pub struct SqliteAccounts {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteAccounts {
    /// Opens (creating and migrating) the database at `path`. Takes no server lock: it is
    /// safe beside a running server. `fsync_every_commit` as for the message store.
    pub fn open(path: &Path, fsync_every_commit: bool) -> Result<Self, AccountError> {
        let mut writer = Connection::open(path)?;
        configure(&writer, fsync_every_commit)?;
        migrate(&mut writer)?;
        let reader = Connection::open(path)?;
        configure(&reader, fsync_every_commit)?;
        Ok(SqliteAccounts { writer: Mutex::new(writer), reader: Mutex::new(reader) })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, AccountError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

const ACCOUNT_COLUMNS: &str = "id, username, display_name, role, active, created_ms";

fn row_to_account(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Account> {
    let username: String = row.get(at + 1)?;
    let role: String = row.get(at + 3)?;
    Ok(Account {
        id: row.get(at)?,
        // Only valid usernames are ever written; a hand-edited row falls back to a safe value.
        username: Username::parse(&username).unwrap_or_else(|| Username::parse("invalid").expect("valid")),
        display_name: row.get(at + 2)?,
        role: ServerRole::parse(&role).unwrap_or(ServerRole::Member),
        active: row.get(at + 4)?,
        created_ms: row.get(at + 5)?,
    })
}

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_ms, s.last_seen_ms, s.user_agent, s.address";

fn row_to_session(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        created_ms: row.get(2)?,
        last_seen_ms: row.get(3)?,
        user_agent: row.get(4)?,
        address: row.get(5)?,
    })
}

const TOKEN_COLUMNS: &str = "t.id, t.user_id, t.name, t.created_ms, t.last_used_ms";

fn row_to_token(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        created_ms: row.get(3)?,
        last_used_ms: row.get(4)?,
    })
}

fn account_prefixed() -> String {
    ACCOUNT_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
}

/// Whether `key` is any account's username or display name key, other than `except`'s.
fn key_taken(tx: &Connection, key: &str, except: Option<UserId>) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE (username_key = ?1 OR display_key = ?1) AND id IS NOT ?2)",
        params![key, except],
        |r| r.get(0),
    )
}

impl AccountStore for SqliteAccounts {
    fn create_account(
        &self,
        new: NewAccount,
        invite: InviteUse,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        self.write(|tx| {
            let existing: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
            if key_taken(tx, &new.username_key, None)? {
                return Err(AccountError::UsernameTaken);
            }
            if new.display_key != new.username_key && key_taken(tx, &new.display_key, None)? {
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
                let spent = tx.execute(
                    "UPDATE invites SET uses_left = CASE WHEN uses_left IS NULL THEN NULL ELSE uses_left - 1 END
                     WHERE code_digest = ?1 AND (uses_left IS NULL OR uses_left > 0)
                       AND (expires_ms IS NULL OR expires_ms > ?2)",
                    params![code, now_ms],
                )?;
                if spent == 0 {
                    return Err(AccountError::InviteRequired);
                }
            }
            let role = if new.admin || existing == 0 { ServerRole::Admin } else { ServerRole::Member };
            tx.execute(
                "INSERT INTO users (username, username_key, display_name, display_key, password, role, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.username.as_str(),
                    new.username_key,
                    new.display_name,
                    new.display_key,
                    new.password_phc,
                    role.as_str(),
                    now_ms
                ],
            )?;
            Ok(Account {
                id: tx.last_insert_rowid(),
                username: new.username,
                display_name: new.display_name,
                role,
                active: true,
                created_ms: now_ms,
            })
        })
    }

    fn account(&self, id: UserId) -> Result<Option<Account>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = ?1"))?
                .query_row(params![id], |r| row_to_account(r, 0))
                .optional()
        })
    }

    fn account_by_username(&self, username: &Username) -> Result<Option<(Account, String)>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS}, password FROM users WHERE username = ?1"))?
                .query_row(params![username.as_str()], |r| Ok((row_to_account(r, 0)?, r.get(6)?)))
                .optional()
        })
    }

    fn account_by_display_key(&self, key: &str) -> Result<Option<Account>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE display_key = ?1"))?
                .query_row(params![key], |r| row_to_account(r, 0))
                .optional()
        })
    }

    fn name_key_taken(&self, key: &str) -> Result<bool, AccountError> {
        self.read(|c| key_taken(c, key, None))
    }

    fn accounts(&self, limit: usize) -> Result<Vec<Account>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY username LIMIT ?1"))?
                .query_map(params![limit as i64], |r| row_to_account(r, 0))?
                .collect()
        })
    }

    fn count_accounts(&self) -> Result<i64, AccountError> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)))
    }

    fn set_password(&self, user: UserId, phc: &str, keep: Option<&str>) -> Result<Vec<String>, AccountError> {
        self.write(|tx| {
            if tx.execute("UPDATE users SET password = ?2 WHERE id = ?1", params![user, phc])? == 0 {
                return Err(AccountError::NoSuchUser);
            }
            let ended: Vec<String> = tx
                .prepare("SELECT id FROM auth_sessions WHERE user_id = ?1 AND id IS NOT ?2")?
                .query_map(params![user, keep], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            tx.execute("DELETE FROM auth_sessions WHERE user_id = ?1 AND id IS NOT ?2", params![user, keep])?;
            Ok(ended)
        })
    }

    fn set_display_name(&self, user: UserId, display_name: &str, key: &str) -> Result<(), AccountError> {
        self.write(|tx| {
            if key_taken(tx, key, Some(user))? {
                return Err(AccountError::DisplayNameTaken);
            }
            let updated = tx.execute(
                "UPDATE users SET display_name = ?2, display_key = ?3 WHERE id = ?1",
                params![user, display_name, key],
            )?;
            if updated == 0 {
                return Err(AccountError::NoSuchUser);
            }
            Ok(())
        })
    }

    fn set_server_role(&self, user: UserId, role: ServerRole) -> Result<(), AccountError> {
        self.write(|tx| {
            match tx.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![user, role.as_str()])? {
                0 => Err(AccountError::NoSuchUser),
                _ => Ok(()),
            }
        })
    }

    fn set_active(&self, user: UserId, active: bool) -> Result<(), AccountError> {
        self.write(|tx| {
            if tx.execute("UPDATE users SET active = ?2 WHERE id = ?1", params![user, active])? == 0 {
                return Err(AccountError::NoSuchUser);
            }
            if !active {
                tx.execute("DELETE FROM auth_sessions WHERE user_id = ?1", params![user])?;
                tx.execute("DELETE FROM api_tokens WHERE user_id = ?1", params![user])?;
            }
            Ok(())
        })
    }

    fn create_session(&self, row: &SessionRow, token_digest: &str) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO auth_sessions (id, token_digest, user_id, created_ms, last_seen_ms, user_agent, address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.id,
                    token_digest,
                    row.user_id,
                    row.created_ms,
                    row.last_seen_ms,
                    row.user_agent,
                    row.address
                ],
            )?;
            Ok(())
        })
    }

    fn session_by_digest(&self, digest: &str) -> Result<Option<(SessionRow, Account)>, AccountError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {} FROM auth_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_digest = ?1 AND u.active = 1",
            account_prefixed()
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row(params![digest], |r| Ok((row_to_session(r)?, row_to_account(r, 6)?)))
                .optional()
        })
    }

    fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute("UPDATE auth_sessions SET last_seen_ms = ?2 WHERE id = ?1", params![id, now_ms])?;
            Ok(())
        })
    }

    fn sessions(&self, user: UserId) -> Result<Vec<SessionRow>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM auth_sessions s WHERE s.user_id = ?1 ORDER BY s.last_seen_ms DESC"
            ))?
            .query_map(params![user], row_to_session)?
            .collect()
        })
    }

    fn delete_session(&self, user: UserId, id: &str) -> Result<bool, AccountError> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM auth_sessions WHERE id = ?1 AND user_id = ?2", params![id, user])? > 0)
        })
    }

    fn create_token(&self, row: &TokenRow, token_digest: &str, max: usize) -> Result<(), AccountError> {
        self.write(|tx| {
            let held: i64 =
                tx.query_row("SELECT COUNT(*) FROM api_tokens WHERE user_id = ?1", params![row.user_id], |r| r.get(0))?;
            if held as usize >= max {
                return Err(AccountError::TooManyTokens);
            }
            tx.execute(
                "INSERT INTO api_tokens (id, token_digest, user_id, name, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.id, token_digest, row.user_id, row.name, row.created_ms],
            )?;
            Ok(())
        })
    }

    fn token_by_digest(&self, digest: &str) -> Result<Option<(TokenRow, Account)>, AccountError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {} FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_digest = ?1 AND u.active = 1",
            account_prefixed()
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row(params![digest], |r| Ok((row_to_token(r)?, row_to_account(r, 5)?)))
                .optional()
        })
    }

    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute("UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1", params![id, now_ms])?;
            Ok(())
        })
    }

    fn tokens(&self, user: UserId) -> Result<Vec<TokenRow>, AccountError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = ?1 ORDER BY t.created_ms"
            ))?
            .query_map(params![user], row_to_token)?
            .collect()
        })
    }

    fn delete_token(&self, user: UserId, id: &str) -> Result<bool, AccountError> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM api_tokens WHERE id = ?1 AND user_id = ?2", params![id, user])? > 0)
        })
    }

    fn create_invite(&self, row: &InviteRow, code_digest: &str) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO invites (id, code_digest, created_by, uses_left, expires_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, code_digest, row.created_by, row.uses_left, row.expires_ms, row.created_ms],
            )?;
            Ok(())
        })
    }

    fn invites(&self) -> Result<Vec<InviteRow>, AccountError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, created_by, uses_left, expires_ms, created_ms FROM invites ORDER BY created_ms DESC LIMIT 1000",
            )?
            .query_map([], |r| {
                Ok(InviteRow {
                    id: r.get(0)?,
                    created_by: r.get(1)?,
                    uses_left: r.get(2)?,
                    expires_ms: r.get(3)?,
                    created_ms: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn delete_invite(&self, id: &str) -> Result<bool, AccountError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM invites WHERE id = ?1", params![id])? > 0))
    }

    fn create_room(
        &self,
        name: &str,
        meta: &RoomMeta,
        owner: Option<UserId>,
        now_ms: i64,
    ) -> Result<(), AccountError> {
        self.write(|tx| {
            let visibility = if meta.visibility.is_public() { "public" } else { "private" };
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO rooms (name, created_ms, visibility, dm, topic) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, now_ms, visibility, meta.dm, meta.topic],
            )?;
            if inserted == 0 {
                // Stored already: by its first message (a public room anyone could have
                // made by joining), or by an earlier creation.
                let has_settings: bool = tx.query_row(
                    "SELECT visibility <> 'public' OR topic <> '' OR EXISTS (SELECT 1 FROM room_members WHERE room = ?1)
                        OR EXISTS (SELECT 1 FROM messages WHERE room = ?1)
                     FROM rooms WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )?;
                if has_settings {
                    return Err(AccountError::RoomExists);
                }
                tx.execute(
                    "UPDATE rooms SET visibility = ?2, dm = ?3, topic = ?4 WHERE name = ?1",
                    params![name, visibility, meta.dm, meta.topic],
                )?;
            }
            if let Some(owner) = owner {
                tx.execute(
                    "INSERT OR REPLACE INTO room_members (room, user_id, role, banned, muted, since_ms)
                     VALUES (?1, ?2, 'owner', 0, 0, ?3)",
                    params![name, owner, now_ms],
                )?;
            }
            Ok(())
        })
    }

    fn set_topic(&self, room: &str, topic: &str) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO rooms (name, created_ms) VALUES (?1, ?2)",
                params![room, crate::server::unix_ms()],
            )?;
            tx.execute("UPDATE rooms SET topic = ?2 WHERE name = ?1", params![room, topic])?;
            Ok(())
        })
    }

    fn room_metas(&self) -> Result<Vec<(String, RoomMeta)>, AccountError> {
        self.read(|c| {
            c.prepare_cached("SELECT name, visibility, dm, topic FROM rooms")?
                .query_map([], |r| {
                    let visibility: String = r.get(1)?;
                    Ok((
                        r.get(0)?,
                        RoomMeta {
                            visibility: if visibility == "private" {
                                Visibility::Private
                            } else {
                                Visibility::Public
                            },
                            dm: r.get(2)?,
                            topic: r.get(3)?,
                        },
                    ))
                })?
                .collect()
        })
    }

    fn set_membership(&self, m: &Membership, now_ms: i64) -> Result<(), AccountError> {
        self.write(|tx| {
            // A room with standing recorded is kept (and loaded at start).
            tx.execute("INSERT OR IGNORE INTO rooms (name, created_ms) VALUES (?1, ?2)", params![m.room, now_ms])?;
            tx.execute(
                "INSERT INTO room_members (room, user_id, role, banned, muted, since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (room, user_id) DO UPDATE SET role = ?3, banned = ?4, muted = ?5",
                params![m.room, m.user_id, m.role.as_str(), m.banned, m.muted, now_ms],
            )?;
            Ok(())
        })
    }

    fn remove_membership(&self, room: &str, user: UserId) -> Result<(), AccountError> {
        self.write(|tx| {
            tx.execute("DELETE FROM room_members WHERE room = ?1 AND user_id = ?2", params![room, user])?;
            Ok(())
        })
    }

    fn memberships_of(&self, room: Option<&str>) -> Result<Vec<Membership>, AccountError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT m.room, m.user_id, u.username, u.display_name, m.role, m.banned, m.muted
                 FROM room_members m JOIN users u ON u.id = m.user_id
                 WHERE ?1 IS NULL OR m.room = ?1 ORDER BY m.room, u.username",
            )?
            .query_map(params![room], |r| {
                let username: String = r.get(2)?;
                let role: String = r.get(4)?;
                Ok(Membership {
                    room: r.get(0)?,
                    user_id: r.get(1)?,
                    username: Username::parse(&username)
                        .unwrap_or_else(|| Username::parse("invalid").expect("valid")),
                    display_name: r.get(3)?,
                    role: RoomRole::parse(&role).unwrap_or(RoomRole::Member),
                    banned: r.get(5)?,
                    muted: r.get(6)?,
                })
            })?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteAccounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteAccounts::open(&dir.path().join("a.db"), false).unwrap();
        (dir, store)
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

    #[test]
    fn the_first_account_is_admin_and_names_collide_across_usernames_and_display_names() {
        let (_dir, s) = store();
        let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
        assert_eq!(ann.role, ServerRole::Admin);
        let bob = s.create_account(new("bob", "Bob"), InviteUse::NotNeeded, 2).unwrap();
        assert_eq!(bob.role, ServerRole::Member);
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
        assert!(matches!(s.create_account(dan, InviteUse::NotNeeded, 3), Err(AccountError::UsernameTaken)));
        assert!(s.name_key_taken("k:bob").unwrap() && !s.name_key_taken("k:zed").unwrap());
        // Closed sign-up admits the first account only, checked in the same transaction.
        assert!(matches!(
            s.create_account(new("eve", "Eve"), InviteUse::FirstOnly, 4),
            Err(AccountError::SignupClosed)
        ));
        assert_eq!(s.count_accounts().unwrap(), 2);
    }

    #[test]
    fn an_invite_is_spent_once_per_use_and_never_after_it_expires() {
        let (_dir, s) = store();
        s.create_account(new("ann", "Ann"), InviteUse::Required(None), 1).unwrap();
        let invite = |id: &str, uses, expires| InviteRow {
            id: id.into(),
            created_by: Some(1),
            uses_left: uses,
            expires_ms: expires,
            created_ms: 0,
        };
        s.create_invite(&invite("once", Some(1), None), "d-once").unwrap();
        s.create_invite(&invite("old", None, Some(50)), "d-old").unwrap();
        let with = |code: &str| InviteUse::Required(Some(code.to_owned()));
        assert!(matches!(
            s.create_account(new("bob", "Bob"), InviteUse::Required(None), 100),
            Err(AccountError::InviteRequired)
        ));
        s.create_account(new("bob", "Bob"), with("d-once"), 100).unwrap();
        assert!(matches!(
            s.create_account(new("cy", "Cy"), with("d-once"), 100),
            Err(AccountError::InviteRequired)
        ));
        assert!(matches!(
            s.create_account(new("cy", "Cy"), with("d-old"), 100),
            Err(AccountError::InviteRequired)
        ));
        assert!(matches!(
            s.create_account(new("cy", "Cy"), with("nope"), 100),
            Err(AccountError::InviteRequired)
        ));
        assert_eq!(s.invites().unwrap().iter().find(|i| i.id == "once").unwrap().uses_left, Some(0));
    }

    #[test]
    fn sessions_end_with_a_password_change_but_the_kept_one_and_with_deactivation() {
        let (_dir, s) = store();
        let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
        let session = |id: &str| SessionRow {
            id: id.into(),
            user_id: ann.id,
            created_ms: 1,
            last_seen_ms: 1,
            user_agent: "ua".into(),
            address: "127.0.0.1".into(),
        };
        for id in ["a", "b", "c"] {
            s.create_session(&session(id), &format!("digest-{id}")).unwrap();
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
    }

    #[test]
    fn an_account_holds_at_most_max_tokens() {
        let (_dir, s) = store();
        let ann = s.create_account(new("ann", "Ann"), InviteUse::NotNeeded, 1).unwrap();
        let token = |id: &str| TokenRow {
            id: id.into(),
            user_id: ann.id,
            name: id.into(),
            created_ms: 1,
            last_used_ms: None,
        };
        s.create_token(&token("a"), "da", 2).unwrap();
        s.create_token(&token("b"), "db", 2).unwrap();
        assert!(matches!(s.create_token(&token("c"), "dc", 2), Err(AccountError::TooManyTokens)));
        assert!(s.delete_token(ann.id, "a").unwrap());
        s.create_token(&token("c"), "dc", 2).unwrap();
        assert_eq!(s.tokens(ann.id).unwrap().len(), 2);
    }

    #[test]
    fn room_settings_and_standings_are_kept() {
        let (_dir, s) = store();
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
    }
}
