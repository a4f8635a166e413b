//! Changes to a conversation besides new messages (edits, deletions, reactions), read
//! state and search: who may do what, checked against the stored message, for the
//! WebSocket and the HTTP API alike.
//!
//! The checks here give each refusal its own code. They look at the store before the
//! event takes a seq; the store applies the event again where nothing can race it (see
//! `store::sqlite_events`), so a check that a concurrent change made stale never stores
//! a wrong state: at worst the event is stored as the no-op it became.

use super::{
    access::{Denied, Moderation},
    auth::Identity,
    hub::{Hub, HubError},
    room::Room,
    search::Query,
    store::{SearchPage, SearchQuery, StoreError, Target, Unread},
};
use crate::protocol::{
    ErrorCode, MAX_EMOJI_PER_MESSAGE, MAX_REACTIONS_PER_MESSAGE, RoomInfo, RoomName, Seq, Username, is_emoji,
    mention_candidates,
};

/// Why a change to a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no message {0} in this room")]
    NoSuchMessage(Seq),
    #[error("that message was deleted")]
    Deleted,
    #[error("only its author (or a moderator, for deleting) may change a message")]
    NotYours,
    #[error("a reaction is one emoji")]
    NotAnEmoji,
    #[error(
        "a message holds at most {MAX_REACTIONS_PER_MESSAGE} reactions and {MAX_EMOJI_PER_MESSAGE} different emoji"
    )]
    TooManyReactions,
    #[error("{0}")]
    Denied(#[from] Denied),
    #[error(transparent)]
    Hub(#[from] HubError),
}

impl ChangeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChangeError::NoSuchMessage(_) => ErrorCode::NotFound,
            ChangeError::Deleted => ErrorCode::Deleted,
            ChangeError::NotYours => ErrorCode::Forbidden,
            ChangeError::NotAnEmoji => ErrorCode::InvalidEmoji,
            ChangeError::TooManyReactions => ErrorCode::TooManyReactions,
            ChangeError::Denied(d) => d.code(),
            ChangeError::Hub(h) => h.code(),
        }
    }
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> Self {
        ChangeError::Hub(HubError::Store(e))
    }
}

/// Searches per second per account or guest session, socket and HTTP together (a burst
/// of 10), and four times that per guest address: each reads the index.
pub const SEARCH_RATE: f64 = 2.0;
pub const SEARCH_BURST: f64 = 10.0;

impl Hub {
    /// The stored message `seq` of `room`, as `who` would change it.
    async fn live_target(&self, room: &Room, seq: Seq, who: &Identity) -> Result<Target, ChangeError> {
        let found = self.store.target(&room.name, seq, &who.id).await?;
        let target = found.ok_or(ChangeError::NoSuchMessage(seq))?;
        if target.deleted {
            return Err(ChangeError::Deleted);
        }
        Ok(target)
    }

    /// May `who` edit message `seq`? Only its author, and not while muted.
    pub async fn check_edit(&self, room: &Room, seq: Seq, who: &Identity) -> Result<(), ChangeError> {
        room.access().check_send(who)?;
        let target = self.live_target(room, seq, who).await?;
        if target.author.is_empty() || target.author != *who.id {
            return Err(ChangeError::NotYours);
        }
        Ok(())
    }

    /// May `who` delete message `seq`? Its author, or a moderator of the room (an owner,
    /// an admin).
    pub async fn check_delete(&self, room: &Room, seq: Seq, who: &Identity) -> Result<(), ChangeError> {
        room.access().check_read(who)?;
        let target = self.live_target(room, seq, who).await?;
        let mine = !target.author.is_empty() && target.author == *who.id;
        if !mine && room.access().check_moderate(who, Moderation::DeleteAny, None).is_err() {
            return Err(ChangeError::NotYours);
        }
        Ok(())
    }

    /// May `who` turn reaction `emoji` on message `seq` on (or off)? Not while muted,
    /// within the caps.
    pub async fn check_react(
        &self,
        room: &Room,
        seq: Seq,
        emoji: &str,
        on: bool,
        who: &Identity,
    ) -> Result<(), ChangeError> {
        if !is_emoji(emoji) {
            return Err(ChangeError::NotAnEmoji);
        }
        room.access().check_send(who)?;
        let target = self.live_target(room, seq, who).await?;
        // A request that seems to change nothing is stored all the same (a no-op by the
        // rules): what is stored may be behind a toggle of this user's on its way.
        let has = target.mine.iter().any(|e| e == emoji);
        let new_emoji = !target.emoji.iter().any(|e| e == emoji);
        if on
            && !has
            && (target.reactions >= MAX_REACTIONS_PER_MESSAGE
                || (new_emoji && target.emoji.len() >= MAX_EMOJI_PER_MESSAGE))
        {
            return Err(ChangeError::TooManyReactions);
        }
        Ok(())
    }

    /// The message `reply_to` names must be a message of the room, not deleted.
    pub async fn check_reply(&self, room: &Room, seq: Seq, who: &Identity) -> Result<(), ChangeError> {
        self.live_target(room, seq, who).await.map(|_| ())
    }

    /// The `@username`s of `text` that name accounts, in order.
    pub async fn mentions_in(&self, text: &str) -> Vec<String> {
        let candidates = mention_candidates(text);
        if candidates.is_empty() {
            return candidates;
        }
        let found = self
            .auth
            .db(move |store| {
                let mut out = Vec::new();
                for name in candidates {
                    if let Some(u) = Username::parse(&name)
                        && store.account_by_username(&u)?.is_some_and(|(a, _)| a.active)
                    {
                        out.push(name);
                    }
                }
                Ok(out)
            })
            .await;
        found.unwrap_or_else(|err| {
            tracing::warn!(%err, "looking up mentions failed; none recorded");
            Vec::new()
        })
    }

    /// Records that `who` read `room` up to `seq` (capped at what the room holds): where
    /// they are now. A guest's read state is not kept (their id lasts one session).
    pub async fn mark_read(&self, room: &Room, seq: Seq, who: &Identity) -> Result<Option<Seq>, HubError> {
        if who.is_guest() {
            return Ok(None);
        }
        let seq = seq.min(room.head());
        Ok(Some(self.store.mark_read(&who.id, &room.name, seq).await?))
    }

    /// `who`'s unread counts in `rooms` (signed-in users; guests have none).
    pub async fn unread_of(
        &self,
        who: &Identity,
        rooms: Vec<String>,
    ) -> Result<Vec<(String, Unread)>, HubError> {
        if who.is_guest() || rooms.is_empty() {
            return Ok(Vec::new());
        }
        let username = who.account.as_ref().map(|(_, u)| u.as_str());
        Ok(self.store.unread(&who.id, username, &rooms).await?)
    }

    /// Fills in `who`'s read state of each listed room they may read (a public room
    /// they are banned from is listed, but says nothing of what is in it).
    pub async fn annotate_unread(&self, who: &Identity, rooms: &mut [RoomInfo]) {
        let names = rooms
            .iter()
            .filter(|r| RoomName::parse(&r.name).is_ok_and(|n| self.check_read(&n, who).is_ok()))
            .map(|r| r.name.clone())
            .collect();
        match self.unread_of(who, names).await {
            Ok(found) => {
                for (name, u) in found {
                    if let Some(info) = rooms.iter_mut().find(|r| r.name == name) {
                        info.last_read = Some(u.last_read);
                        info.unread = Some(u.unread);
                        info.mentions = Some(u.mentions);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "reading unread counts failed; the list goes without"),
        }
    }

    /// Takes a search token of a signed-in user's allowance (shared with their sockets);
    /// anonymous HTTP searches have their address's HTTP allowance.
    pub fn search_allowed(&self, who: &Identity) -> Result<(), super::rate::Refusal> {
        if who.is_guest() {
            return Ok(());
        }
        let bucket = self.bucket(&format!("search:{}", who.id), SEARCH_RATE, SEARCH_BURST);
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.check()
    }

    /// Searches the rooms `who` may read (only `in:`'s, or `room`'s, when given: a room
    /// `who` may not read is `not_found`).
    pub async fn search(
        &self,
        who: &Identity,
        query: &Query,
        room: Option<&RoomName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<SearchPage, HubError> {
        let only = query.room.as_ref().or(room);
        let rooms: Vec<String> = match only {
            Some(name) => {
                let room = self.check_read(name, who)?;
                vec![room.name.as_str().to_owned()]
            }
            None => self
                .all_rooms()
                .into_iter()
                .filter(|r| r.access().check_read(who).is_ok())
                .map(|r| r.name.as_str().to_owned())
                .collect(),
        };
        let from_user = match &query.from {
            Some(username) => {
                let username = username.clone();
                let found = self
                    .auth
                    .db(move |store| Ok(store.account_by_username(&username)?.map(|(a, _)| a.id)))
                    .await
                    .map_err(|e| HubError::Store(StoreError::Task(e.to_string())))?;
                match found {
                    Some(id) => Some(id.to_string()),
                    // Nobody by that name wrote anything.
                    None => return Ok(SearchPage::default()),
                }
            }
            None => None,
        };
        if rooms.is_empty() {
            return Ok(SearchPage::default());
        }
        // Cursors leave the server sealed (see `search::seal`): a position in the index
        // can be a private room's message.
        let before = before.map(super::search::unseal);
        let q = SearchQuery {
            fts: query.fts.clone(),
            terms: query.terms.clone(),
            rooms,
            from_user,
            before,
            limit,
        };
        // A task of its own, holding the turn until the search ends (a cancelled request
        // does not free the turn while SQLite still searches).
        let turn =
            self.searching.clone().acquire_owned().await.map_err(|e| StoreError::Task(e.to_string()))?;
        let store = self.store.clone();
        let search = tokio::spawn(async move {
            let _turn = turn;
            store.search(&q).await
        });
        let mut page = search.await.map_err(|e| StoreError::Task(e.to_string()))??;
        page.next = page.next.map(super::search::seal);
        page.positions.iter_mut().for_each(|p| *p = super::search::seal(*p));
        Ok(page)
    }
}
