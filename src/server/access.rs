//! Who may do what in a room: the room's visibility and each account's standing, and the
//! rules every path (WebSocket, HTTP API, rendered pages) asks before acting.
//!
//! The rules are plain functions of (who, the room's access, the action), so the whole
//! matrix is unit-tested here; the handlers only ask and act. A private room is
//! `not_found` to anyone who may not see it, never `forbidden`: that would say it exists.

use super::{
    auth::Identity,
    store::accounts::{Membership, RoomMeta, UserId},
};
use crate::protocol::{ErrorCode, RoomRole, ServerRole, Visibility};
use std::collections::{HashMap, HashSet};

/// An account's standing in one room (a stored `room_members` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: RoomRole,
    pub banned: bool,
    pub muted: bool,
}

impl Standing {
    pub const MEMBER: Standing = Standing { role: RoomRole::Member, banned: false, muted: false };
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no such room")]
    NotFound,
    #[error("you may not do that here")]
    Forbidden,
    #[error("you are banned from this room")]
    Banned,
    #[error("you are muted in this room")]
    Muted,
    #[error("sign in to do that")]
    Unauthenticated,
}

impl Denied {
    pub fn code(self) -> ErrorCode {
        match self {
            Denied::NotFound => ErrorCode::NotFound,
            Denied::Forbidden => ErrorCode::Forbidden,
            Denied::Banned => ErrorCode::Banned,
            Denied::Muted => ErrorCode::Muted,
            Denied::Unauthenticated => ErrorCode::Unauthenticated,
        }
    }
}

/// What a moderator (or owner, or admin) may do to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    Invite,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    SetTopic,
    /// Give someone a role (owners only; admins anywhere).
    SetRole(RoomRole),
    DeleteAny,
}

/// A room's access state, kept in memory beside the room and written through to the
/// store on every change.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub visibility: Visibility,
    pub dm: bool,
    pub topic: String,
    /// Accounts with a standing here. In a private room, a row that is not banned is what
    /// membership is; in a public room rows exist only for roles, bans and mutes.
    pub accounts: HashMap<UserId, Standing>,
    /// Guests banned or muted here, by guest id (guests have no stored row: these last
    /// as long as the server process).
    pub banned_guests: HashSet<String>,
    pub muted_guests: HashSet<String>,
}

/// Rank for "may act on": admins above everyone, then owner, moderator, member.
fn rank(role: ServerRole, standing: Option<Standing>) -> u8 {
    if role == ServerRole::Admin {
        return 4;
    }
    match standing.filter(|s| !s.banned).map(|s| s.role) {
        Some(RoomRole::Owner) => 3,
        Some(RoomRole::Moderator) => 2,
        _ => 1,
    }
}

impl Access {
    pub fn from_meta(meta: &RoomMeta) -> Self {
        Access { visibility: meta.visibility, dm: meta.dm, topic: meta.topic.clone(), ..Access::default() }
    }

    pub fn load(&mut self, m: &Membership) {
        self.accounts.insert(m.user_id, Standing { role: m.role, banned: m.banned, muted: m.muted });
    }

    /// Nothing about the room differs from a fresh public room: it may be forgotten when
    /// empty.
    pub fn is_default(&self) -> bool {
        self.visibility.is_public()
            && self.topic.is_empty()
            && self.accounts.is_empty()
            && self.banned_guests.is_empty()
            && self.muted_guests.is_empty()
    }

    pub fn standing(&self, who: &Identity) -> Option<Standing> {
        who.user_id().and_then(|id| self.accounts.get(&id).copied())
    }

    fn is_banned(&self, who: &Identity) -> bool {
        match who.user_id() {
            Some(id) => self.accounts.get(&id).is_some_and(|s| s.banned),
            None => self.banned_guests.contains(&*who.id),
        }
    }

    /// Whether `who` may know the room exists (see it listed, read it, open its page).
    pub fn can_see(&self, who: &Identity) -> bool {
        self.visibility.is_public() || who.is_admin() || self.standing(who).is_some_and(|s| !s.banned)
    }

    /// May `who` read the room's history (HTTP, pages, `history`)?
    pub fn check_read(&self, who: &Identity) -> Result<(), Denied> {
        if self.is_banned(who) && !who.is_admin() {
            return Err(Denied::Banned);
        }
        if !self.can_see(who) {
            // A banned member of a private room knew it existed; they hear why.
            return Err(if self.is_banned(who) { Denied::Banned } else { Denied::NotFound });
        }
        Ok(())
    }

    /// May `who` join (enter) the room?
    pub fn check_join(&self, who: &Identity) -> Result<(), Denied> {
        self.check_read(who)?;
        if self.is_banned(who) && !who.is_admin() {
            return Err(Denied::Banned);
        }
        Ok(())
    }

    /// May `who` post here?
    pub fn check_send(&self, who: &Identity) -> Result<(), Denied> {
        self.check_join(who)?;
        let muted = match who.user_id() {
            Some(id) => self.accounts.get(&id).is_some_and(|s| s.muted),
            None => self.muted_guests.contains(&*who.id),
        };
        if muted && !who.is_admin() {
            return Err(Denied::Muted);
        }
        Ok(())
    }

    /// May `actor` do `action` to `target` (whose standing here is `target_standing`,
    /// server role `target_role`)? `target` is None for actions on the room itself.
    pub fn check_moderate(
        &self,
        actor: &Identity,
        action: Moderation,
        target: Option<(ServerRole, Option<Standing>)>,
    ) -> Result<(), Denied> {
        self.check_read(actor)?;
        if actor.is_guest() {
            return Err(Denied::Forbidden);
        }
        let actor_standing = self.standing(actor);
        let mine = rank(actor.role, actor_standing);
        let needed = match action {
            Moderation::SetRole(_) => 3,
            _ => 2,
        };
        // A direct-message room has no moderators: its two people only talk.
        if self.dm && !actor.is_admin() {
            return Err(Denied::Forbidden);
        }
        if mine < needed {
            return Err(Denied::Forbidden);
        }
        if let Moderation::SetRole(RoomRole::Owner) = action
            && mine < 3
        {
            return Err(Denied::Forbidden);
        }
        // Nobody acts on someone of their own rank or above (owners on owners included),
        // except admins, who are above every room.
        if let Some((role, standing)) = target
            && !matches!(action, Moderation::Invite)
            && rank(role, standing) >= mine
            && mine < 4
        {
            return Err(Denied::Forbidden);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Nick, Username};

    fn account(id: UserId, role: ServerRole) -> Identity {
        let username = format!("user{id}");
        let mut who = Identity::of_account(&crate::server::store::accounts::Account {
            id,
            username: Username::parse(&username).unwrap(),
            display_name: username.clone(),
            role,
            active: true,
            created_ms: 0,
        });
        who.role = role;
        who
    }

    fn guest() -> Identity {
        Identity::guest("abc", Nick::parse("visitor").unwrap())
    }

    const OWNER: UserId = 1;
    const MODERATOR: UserId = 2;
    const MEMBER: UserId = 3;
    const BANNED: UserId = 4;
    const MUTED: UserId = 5;
    const OUTSIDER: UserId = 6;
    const ADMIN: UserId = 7;

    fn room(visibility: Visibility) -> Access {
        let mut access = Access { visibility, ..Access::default() };
        let set = |role, banned, muted| Standing { role, banned, muted };
        access.accounts.insert(OWNER, set(RoomRole::Owner, false, false));
        access.accounts.insert(MODERATOR, set(RoomRole::Moderator, false, false));
        access.accounts.insert(MEMBER, set(RoomRole::Member, false, false));
        access.accounts.insert(BANNED, set(RoomRole::Member, true, false));
        access.accounts.insert(MUTED, set(RoomRole::Member, false, true));
        access
    }

    fn who(id: UserId) -> Identity {
        account(id, if id == ADMIN { ServerRole::Admin } else { ServerRole::Member })
    }

    #[test]
    fn a_private_room_is_not_found_to_everyone_who_is_not_in_it() {
        let private = room(Visibility::Private);
        for id in [OWNER, MODERATOR, MEMBER, MUTED, ADMIN] {
            assert_eq!(private.check_read(&who(id)), Ok(()), "user {id}");
            assert_eq!(private.check_join(&who(id)), Ok(()), "user {id}");
        }
        assert_eq!(private.check_read(&who(OUTSIDER)), Err(Denied::NotFound));
        assert_eq!(private.check_join(&who(OUTSIDER)), Err(Denied::NotFound));
        assert_eq!(private.check_send(&who(OUTSIDER)), Err(Denied::NotFound));
        assert_eq!(private.check_read(&guest()), Err(Denied::NotFound));
        assert_eq!(private.check_join(&who(BANNED)), Err(Denied::Banned));
        assert!(
            !private.can_see(&who(OUTSIDER)) && !private.can_see(&guest()) && !private.can_see(&who(BANNED))
        );
        // Moderation of a room one cannot see is not found either, not forbidden.
        assert_eq!(private.check_moderate(&who(OUTSIDER), Moderation::Kick, None), Err(Denied::NotFound));
    }

    #[test]
    fn a_public_room_is_open_to_all_but_the_banned() {
        let public = room(Visibility::Public);
        for id in [OWNER, MEMBER, OUTSIDER, ADMIN] {
            assert_eq!(public.check_join(&who(id)), Ok(()));
        }
        assert_eq!(public.check_join(&guest()), Ok(()));
        assert_eq!(public.check_join(&who(BANNED)), Err(Denied::Banned));
        assert_eq!(public.check_send(&who(MUTED)), Err(Denied::Muted));
        assert_eq!(public.check_read(&who(MUTED)), Ok(()), "muted people still read");
        assert_eq!(public.check_read(&who(BANNED)), Err(Denied::Banned), "banned people do not");
        let mut with_guest_rules = public.clone();
        with_guest_rules.banned_guests.insert(guest().id.to_string());
        assert_eq!(with_guest_rules.check_join(&guest()), Err(Denied::Banned));
        with_guest_rules.banned_guests.clear();
        with_guest_rules.muted_guests.insert(guest().id.to_string());
        assert_eq!(with_guest_rules.check_send(&guest()), Err(Denied::Muted));
    }

    /// role × action: who may moderate whom.
    #[test]
    fn the_moderation_matrix() {
        use Moderation::*;
        let public = room(Visibility::Public);
        let member = Some((ServerRole::Member, Some(Standing::MEMBER)));
        let moderator = Some((ServerRole::Member, public.accounts.get(&MODERATOR).copied()));
        let owner = Some((ServerRole::Member, public.accounts.get(&OWNER).copied()));
        let admin_target = Some((ServerRole::Admin, None));
        let actions = [Invite, Kick, Ban, Unban, Mute, Unmute, SetTopic, DeleteAny];
        for action in actions {
            // Members, outsiders and guests may not moderate at all.
            for id in [MEMBER, OUTSIDER, MUTED] {
                assert_eq!(
                    public.check_moderate(&who(id), action, member),
                    Err(Denied::Forbidden),
                    "{id} {action:?}"
                );
            }
            assert_eq!(public.check_moderate(&guest(), action, member), Err(Denied::Forbidden));
            // Moderators, owners and admins may act on members.
            for id in [MODERATOR, OWNER, ADMIN] {
                assert_eq!(public.check_moderate(&who(id), action, member), Ok(()), "{id} {action:?}");
            }
        }
        for action in [Kick, Ban, Mute] {
            // Not on their equals or betters.
            assert_eq!(public.check_moderate(&who(MODERATOR), action, moderator), Err(Denied::Forbidden));
            assert_eq!(public.check_moderate(&who(MODERATOR), action, owner), Err(Denied::Forbidden));
            assert_eq!(public.check_moderate(&who(OWNER), action, moderator), Ok(()));
            assert_eq!(public.check_moderate(&who(OWNER), action, admin_target), Err(Denied::Forbidden));
            assert_eq!(public.check_moderate(&who(ADMIN), action, owner), Ok(()));
        }
        // Roles: owners (and admins) give them; moderators do not.
        assert_eq!(
            public.check_moderate(&who(MODERATOR), SetRole(RoomRole::Moderator), member),
            Err(Denied::Forbidden)
        );
        assert_eq!(public.check_moderate(&who(OWNER), SetRole(RoomRole::Moderator), member), Ok(()));
        assert_eq!(public.check_moderate(&who(OWNER), SetRole(RoomRole::Owner), member), Ok(()));
        assert_eq!(public.check_moderate(&who(ADMIN), SetRole(RoomRole::Owner), member), Ok(()));
    }

    #[test]
    fn a_direct_message_room_has_no_moderators() {
        let mut dm = room(Visibility::Private);
        dm.dm = true;
        assert_eq!(dm.check_moderate(&who(OWNER), Moderation::Kick, None), Err(Denied::Forbidden));
        assert_eq!(dm.check_moderate(&who(ADMIN), Moderation::Kick, None), Ok(()));
    }
}
