//! Room creation and moderation: `create_room`, `open_dm`, `invite`, `kick`, `ban`,
//! `unban`, `mute`, `unmute`, `set_role`, `set_topic`, shared by the WebSocket handlers
//! and the HTTP API so every path applies the same rules (`access`) and effects.
//!
//! Each change is written to the store first, then to the room's in-memory access, then
//! announced: a crash never leaves a ban that was announced but not kept.

use super::{
    access::{Access, Denied, Moderation, Standing},
    auth::Identity,
    hub::{Hub, HubError},
    outbound::Outbound,
    room::{Room, encode},
    store::accounts::{Account, Membership, RoomMeta},
    unix_ms,
};
use crate::protocol::{
    MAX_TOPIC_CHARS, RoomName, RoomRole, ServerMsg, ServerRole, Username, Visibility, dm_room_name,
    is_dm_name,
};
use std::{net::IpAddr, sync::Arc};

/// Whom a moderation acts on.
enum Target {
    Account(Account),
    /// A guest present in the room: its user id and nick.
    Guest(Arc<str>, String),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Account(a) => a.username.as_str().to_owned(),
            Target::Guest(_, nick) => nick.clone(),
        }
    }

    fn id(&self) -> Arc<str> {
        match self {
            Target::Account(a) => Arc::from(a.id.to_string()),
            Target::Guest(id, _) => id.clone(),
        }
    }
}

/// A moderation request, as both paths receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Invite,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    SetRole(RoomRole),
}

impl Action {
    fn rule(self) -> Moderation {
        match self {
            Action::Invite => Moderation::Invite,
            Action::Kick => Moderation::Kick,
            Action::Ban => Moderation::Ban,
            Action::Unban => Moderation::Unban,
            Action::Mute => Moderation::Mute,
            Action::Unmute => Moderation::Unmute,
            Action::SetRole(role) => Moderation::SetRole(role),
        }
    }

    /// Parses the action of `POST /api/rooms/{room}/{action}`.
    pub fn parse(raw: &str, role: Option<RoomRole>) -> Option<Self> {
        Some(match raw {
            "invite" => Action::Invite,
            "kick" => Action::Kick,
            "ban" => Action::Ban,
            "unban" => Action::Unban,
            "mute" => Action::Mute,
            "unmute" => Action::Unmute,
            "role" => Action::SetRole(role?),
            _ => return None,
        })
    }
}

use super::broker::eject;

impl Hub {
    /// The room `who` acts in: `not_found` when it does not exist or `who` may not see it.
    fn visible_room(&self, name: &RoomName, who: &Identity) -> Result<Arc<Room>, HubError> {
        let room = self.find_room(name).ok_or(Denied::NotFound)?;
        room.access().check_read(who)?;
        Ok(room)
    }

    async fn account_named(&self, username: &str) -> Result<Option<Account>, HubError> {
        let Some(username) = Username::parse(username) else { return Ok(None) };
        let found = self.auth.db(move |s| s.account_by_username(&username)).await.map_err(|_| {
            HubError::Store(super::store::StoreError::Task("the account store failed".into()))
        })?;
        Ok(found.map(|(a, _)| a).filter(|a| a.active))
    }

    /// The username of the active account called `name` (its username or display name).
    pub async fn username_for(&self, name: &str) -> Option<String> {
        if let Ok(Some(account)) = self.account_named(name).await {
            return Some(account.username.to_string());
        }
        let key = crate::protocol::Nick::parse(name).ok()?.key();
        let found = self.auth.db(move |s| s.account_by_display_key(&key)).await.ok()??;
        found.active.then(|| found.username.to_string())
    }

    async fn target(&self, room: &Room, name: &str) -> Result<Target, HubError> {
        if let Some(account) = self.account_named(name).await? {
            return Ok(Target::Account(account));
        }
        let guest = crate::protocol::Nick::parse(name).ok().and_then(|n| room.guest_named(&n));
        match guest {
            Some(id) => Ok(Target::Guest(id, name.to_owned())),
            None => Err(Denied::NotFound.into()),
        }
    }

    /// Makes a room with `who` as its owner (guests may make public rooms only, and own
    /// none). The caller then joins it.
    pub async fn create_room(
        &self,
        who: &Identity,
        from: IpAddr,
        name: &RoomName,
        visibility: Visibility,
        topic: Option<String>,
    ) -> Result<Arc<Room>, HubError> {
        if is_dm_name(name.as_str()) {
            return Err(HubError::Invalid("room names starting with dm- are reserved for direct messages"));
        }
        if who.is_guest() && !visibility.is_public() {
            return Err(Denied::Forbidden.into());
        }
        let topic = check_topic(topic.unwrap_or_default())?;
        let _one_at_a_time = self.creating.lock().await;
        let meta = RoomMeta { visibility, dm: false, topic };
        let owner = who.user_id();
        let mut access = Access::from_meta(&meta);
        if let Some(owner) = owner {
            access.accounts.insert(owner, Standing { role: RoomRole::Owner, banned: false, muted: false });
        }
        // In the registry with its access before the store is written: a `join` that
        // arrives meanwhile meets the private room, not a fresh public one.
        let room = self.reserve_room(name, from, access)?;
        let (room_name, stored) = (name.as_str().to_owned(), meta.clone());
        let written = self.auth.db(move |s| s.create_room(&room_name, &stored, owner, unix_ms())).await;
        if let Err(e) = written {
            self.forget_room(&room);
            return Err(match e {
                super::auth::AuthError::Invalid(_) => HubError::Exists,
                e => store_failed("the room could not be stored", e),
            });
        }
        self.broker.room_changed(name);
        tracing::info!(room = %name, visibility = ?visibility, by = %who.id, "room created");
        Ok(room)
    }

    /// The direct-message room of `who` and `username`, made on first use; the other
    /// person hears `invited`.
    pub async fn open_dm(&self, who: &Identity, username: &str) -> Result<RoomName, HubError> {
        let Some(me) = who.user_id() else { return Err(Denied::Forbidden.into()) };
        let other = self.account_named(username).await?.ok_or(Denied::NotFound)?;
        let name =
            RoomName::parse(&dm_room_name(me, other.id)).map_err(|_| HubError::Invalid("bad dm name"))?;
        if self.find_room(&name).is_some() {
            return Ok(name);
        }
        let _one_at_a_time = self.creating.lock().await;
        if self.find_room(&name).is_some() {
            return Ok(name);
        }
        // The topic names the two: what the sidebar shows for the conversation.
        let topic = format!("{} & {}", who.nick, other.display_name);
        let meta = RoomMeta { visibility: Visibility::Private, dm: true, topic };
        let (room_name, stored, other_id) = (name.as_str().to_owned(), meta.clone(), other.id);
        self.auth
            .db(move |s| {
                s.create_room(&room_name, &stored, None, unix_ms())?;
                for user in [me, other_id] {
                    let m = Membership {
                        room: room_name.clone(),
                        user_id: user,
                        username: Username::parse("x").expect("valid"),
                        display_name: String::new(),
                        role: RoomRole::Member,
                        banned: false,
                        muted: false,
                    };
                    s.set_membership(&m, unix_ms())?;
                }
                Ok(())
            })
            .await
            .map_err(|e| store_failed("the conversation could not be stored", e))?;
        let mut access = Access::from_meta(&meta);
        access.accounts.insert(me, Standing::MEMBER);
        access.accounts.insert(other.id, Standing::MEMBER);
        self.register_room(&name, access)?;
        self.broker.room_changed(&name);
        let invited =
            encode(&ServerMsg::Invited { room: name.as_str().to_owned(), by: who.nick.as_str().to_owned() });
        for conn in self.auth.live_conns(other.id) {
            conn.push(Outbound::Frame(invited.clone()));
        }
        Ok(name)
    }

    /// Applies a moderation action of `actor` to `target_name` (a username, or a guest's
    /// nick) in `room`.
    pub async fn moderate(
        &self,
        actor: &Identity,
        name: &RoomName,
        action: Action,
        target_name: &str,
    ) -> Result<(), HubError> {
        let room = self.visible_room(name, actor)?;
        // One change at a time per room: each reads the standing it changes after the
        // last one was written (a ban and a mute at once must not undo each other).
        let _one_at_a_time = room.moderation.lock().await;
        room.access().check_read(actor)?;
        let target = self.target(&room, target_name).await?;
        let (target_role, target_standing) = match &target {
            Target::Account(a) => (a.role, room.access().accounts.get(&a.id).copied()),
            Target::Guest(..) => (ServerRole::Guest, None),
        };
        room.access().check_moderate(actor, action.rule(), Some((target_role, target_standing)))?;
        let by = actor.nick.as_str().to_owned();
        let private = !room.access().visibility.is_public();
        let username = target.name();
        let update =
            |role: Option<RoomRole>, banned: Option<bool>, muted: Option<bool>| ServerMsg::MemberUpdate {
                room: name.as_str().to_owned(),
                username: username.clone(),
                role,
                banned,
                muted,
            };
        match (&target, action) {
            (Target::Guest(..), Action::Invite | Action::SetRole(_)) => return Err(Denied::Forbidden.into()),
            (Target::Guest(id, _), Action::Kick) => {
                eject(&room, room.remove_user(id), &by, false);
                self.broker.eject(name, id, &by, false);
            }
            (Target::Guest(id, _), Action::Ban) => {
                room.access().banned_guests.insert(id.to_string());
                eject(&room, room.remove_user(id), &by, true);
                self.broker.eject(name, id, &by, true);
                self.broker.notice(&room, encode(&update(None, Some(true), None)));
            }
            (Target::Guest(id, _), Action::Unban) => {
                room.access().banned_guests.remove(&**id);
                self.broker.notice(&room, encode(&update(None, Some(false), None)));
            }
            (Target::Guest(id, _), Action::Mute | Action::Unmute) => {
                let on = action == Action::Mute;
                let mut access = room.access();
                if on {
                    access.muted_guests.insert(id.to_string());
                } else {
                    access.muted_guests.remove(&**id);
                }
                drop(access);
                self.broker.notice(&room, encode(&update(None, None, Some(on))));
            }
            (Target::Account(account), action) => {
                let current = target_standing;
                let next: Option<Standing> = match action {
                    Action::Invite => match current {
                        Some(s) if s.banned => return Err(Denied::Forbidden.into()),
                        Some(s) => Some(s),
                        None if private => Some(Standing::MEMBER),
                        None => None,
                    },
                    // Leaving a private room ends membership: coming back needs an invite.
                    Action::Kick if private => None,
                    Action::Kick => current,
                    Action::Ban => Some(Standing { role: RoomRole::Member, banned: true, muted: false }),
                    Action::Unban if private => None,
                    Action::Unban => current.map(|s| Standing { banned: false, ..s }),
                    Action::Mute | Action::Unmute => {
                        let base = match current {
                            Some(s) => s,
                            None if private => return Err(Denied::NotFound.into()),
                            None => Standing::MEMBER,
                        };
                        Some(Standing { muted: action == Action::Mute, ..base })
                    }
                    Action::SetRole(role) => {
                        let base = match current {
                            Some(s) if !s.banned => s,
                            _ if private => return Err(Denied::NotFound.into()),
                            _ => Standing::MEMBER,
                        };
                        Some(Standing { role, ..base })
                    }
                };
                // A public-room row that says nothing (a plain member) is not kept.
                let keep = next.filter(|s| private || *s != Standing::MEMBER);
                if keep != current {
                    self.store_standing(name, account, keep).await?;
                    let mut access = room.access();
                    match keep {
                        Some(s) => access.accounts.insert(account.id, s),
                        None => access.accounts.remove(&account.id),
                    };
                }
                let id = target.id();
                match action {
                    Action::Invite => {
                        let invited =
                            encode(&ServerMsg::Invited { room: name.as_str().to_owned(), by: by.clone() });
                        for conn in self.auth.live_conns(account.id) {
                            conn.push(Outbound::Frame(invited.clone()));
                        }
                    }
                    Action::Kick => {
                        eject(&room, room.remove_user(&id), &by, false);
                        self.broker.eject(name, &id, &by, false);
                    }
                    Action::Ban => {
                        eject(&room, room.remove_user(&id), &by, true);
                        self.broker.eject(name, &id, &by, true);
                        self.broker.notice(&room, encode(&update(None, Some(true), None)));
                    }
                    Action::Unban => self.broker.notice(&room, encode(&update(None, Some(false), None))),
                    Action::Mute | Action::Unmute => {
                        self.broker.notice(&room, encode(&update(None, None, Some(action == Action::Mute))))
                    }
                    Action::SetRole(role) => {
                        self.broker.notice(&room, encode(&update(Some(role), None, None)))
                    }
                }
                if keep != current {
                    self.broker.room_changed(name);
                }
            }
        }
        tracing::info!(room = %name, action = ?action, target = target_name, by = %actor.id, "moderation");
        Ok(())
    }

    async fn store_standing(
        &self,
        room: &RoomName,
        account: &Account,
        standing: Option<Standing>,
    ) -> Result<(), HubError> {
        let (room, user) = (room.as_str().to_owned(), account.id);
        let username = account.username.clone();
        let result = self
            .auth
            .db(move |s| match standing {
                Some(st) => s.set_membership(
                    &Membership {
                        room,
                        user_id: user,
                        username,
                        display_name: String::new(),
                        role: st.role,
                        banned: st.banned,
                        muted: st.muted,
                    },
                    unix_ms(),
                ),
                None => s.remove_membership(&room, user),
            })
            .await;
        result.map_err(|e| store_failed("the change could not be stored", e))
    }

    /// Sets a room's topic (owners and moderators; admins anywhere).
    pub async fn set_topic(&self, actor: &Identity, name: &RoomName, topic: String) -> Result<(), HubError> {
        let room = self.visible_room(name, actor)?;
        let _one_at_a_time = room.moderation.lock().await;
        room.access().check_moderate(actor, Moderation::SetTopic, None)?;
        let topic = check_topic(topic)?;
        let (room_name, stored) = (name.as_str().to_owned(), topic.clone());
        self.auth
            .db(move |s| s.set_topic(&room_name, &stored))
            .await
            .map_err(|e| store_failed("the topic could not be stored", e))?;
        room.access().topic = topic.clone();
        self.broker.room_changed(name);
        self.broker.notice(
            &room,
            encode(&ServerMsg::Topic {
                room: name.as_str().to_owned(),
                topic,
                by: actor.nick.as_str().to_owned(),
            }),
        );
        Ok(())
    }

    /// The people with a standing in a room (settings panel, `GET /api/rooms/{room}/members`):
    /// (username, display name, standing). Visible to whoever may see the room; bans and
    /// mutes only to its moderators.
    pub async fn room_members(
        &self,
        viewer: &Identity,
        name: &RoomName,
    ) -> Result<Vec<(String, String, Standing)>, HubError> {
        let room = self.visible_room(name, viewer)?;
        let moderator = room.access().check_moderate(viewer, Moderation::Kick, None).is_ok();
        let room_name = name.as_str().to_owned();
        let all = self
            .auth
            .db(move |s| s.memberships_of(Some(&room_name)))
            .await
            .map_err(|e| store_failed("members could not be loaded", e))?;
        let access = room.access();
        Ok(all
            .into_iter()
            .filter_map(|m| {
                access.accounts.get(&m.user_id).map(|s| (m.username.to_string(), m.display_name, *s))
            })
            .filter(|(_, _, s)| moderator || !(s.banned || s.muted))
            .collect())
    }
}

/// A failed store call, reported as `internal` (never as the client's fault).
fn store_failed(what: &str, err: super::auth::AuthError) -> HubError {
    HubError::Store(super::store::StoreError::Task(format!("{what}: {err}")))
}

/// A topic: at most 200 characters, no control characters (trimmed).
fn check_topic(topic: String) -> Result<String, HubError> {
    let topic = topic.trim().to_owned();
    if topic.chars().count() > MAX_TOPIC_CHARS || topic.chars().any(char::is_control) {
        return Err(HubError::Invalid("a topic is at most 200 characters, with no control characters"));
    }
    Ok(topic)
}
