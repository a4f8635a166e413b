//! Accounts, sessions, API tokens, invites and room membership, behind an engine-neutral
//! trait (the SQLite engine is `sqlite_accounts`; PostgreSQL is one more impl).
//!
//! Secrets never reach this layer in the clear: sessions, tokens and invite codes are
//! looked up by their SHA-256, passwords are PHC strings.

use crate::protocol::{RoomRole, ServerRole, Username, Visibility};

pub type UserId = i64;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("that username is taken")]
    UsernameTaken,
    /// The display name collides (after folding) with another account's name.
    #[error("that display name is taken")]
    DisplayNameTaken,
    #[error("an invite code is needed to sign up")]
    InviteRequired,
    #[error("no such account")]
    NoSuchUser,
    #[error("sign-up is closed")]
    SignupClosed,
    #[error("the account holds its maximum number of API tokens")]
    TooManyTokens,
    #[error("a room with that name exists")]
    RoomExists,
    /// The engine failed (its own message; no engine type crosses this trait).
    #[error("{engine}: {message}")]
    Engine { engine: &'static str, message: String },
    #[error("store task failed: {0}")]
    Task(String),
}

impl From<rusqlite::Error> for AccountError {
    fn from(err: rusqlite::Error) -> Self {
        AccountError::Engine { engine: "sqlite", message: err.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub username: Username,
    pub display_name: String,
    pub role: ServerRole,
    pub active: bool,
    pub created_ms: i64,
}

/// What sign-up stores: the names with their collision keys (`Nick::key`), the PHC.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: Username,
    pub username_key: String,
    pub display_name: String,
    pub display_key: String,
    pub password_phc: String,
    /// Admin regardless of whether others exist (`confab admin create-user --admin`).
    pub admin: bool,
}

/// Whether sign-up must spend an invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteUse {
    NotNeeded,
    /// This code's digest (or none given): needed unless the server has no account yet.
    Required(Option<String>),
    /// Only the first account of an empty server (closed sign-up).
    FirstOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user_id: UserId,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub user_agent: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub user_id: UserId,
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    pub id: String,
    pub created_by: Option<UserId>,
    /// Uses left; None for unlimited.
    pub uses_left: Option<i64>,
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
}

/// A room's settings as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomMeta {
    pub visibility: Visibility,
    pub dm: bool,
    pub topic: String,
}

/// One account's standing in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub room: String,
    pub user_id: UserId,
    pub username: Username,
    pub display_name: String,
    pub role: RoomRole,
    pub banned: bool,
    pub muted: bool,
}

/// Calls block: the server runs them on blocking threads. A separate process (the
/// `confab admin` commands) may use the same database at the same time.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account in one transaction: checks both names against every account's
    /// username and display name keys, spends the invite when one is needed, and makes
    /// the first account on an empty server an admin.
    fn create_account(
        &self,
        new: NewAccount,
        invite: InviteUse,
        now_ms: i64,
    ) -> Result<Account, AccountError>;
    fn account(&self, id: UserId) -> Result<Option<Account>, AccountError>;
    /// The account and its PHC string.
    fn account_by_username(&self, username: &Username) -> Result<Option<(Account, String)>, AccountError>;
    /// The account whose display name has this collision key.
    fn account_by_display_key(&self, key: &str) -> Result<Option<Account>, AccountError>;
    /// Whether any account's username or display name has this collision key.
    fn name_key_taken(&self, key: &str) -> Result<bool, AccountError>;
    fn accounts(&self, limit: usize) -> Result<Vec<Account>, AccountError>;
    fn count_accounts(&self) -> Result<i64, AccountError>;
    /// Sets the password; every session but `keep` ends. Returns the ended sessions' ids.
    fn set_password(&self, user: UserId, phc: &str, keep: Option<&str>) -> Result<Vec<String>, AccountError>;
    fn set_display_name(&self, user: UserId, display_name: &str, key: &str) -> Result<(), AccountError>;
    fn set_server_role(&self, user: UserId, role: ServerRole) -> Result<(), AccountError>;
    /// Deactivates (ending every session and token) or reactivates an account.
    fn set_active(&self, user: UserId, active: bool) -> Result<(), AccountError>;

    fn create_session(&self, row: &SessionRow, token_digest: &str) -> Result<(), AccountError>;
    /// The session of a cookie and its account (active accounts only).
    fn session_by_digest(&self, digest: &str) -> Result<Option<(SessionRow, Account)>, AccountError>;
    fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), AccountError>;
    fn sessions(&self, user: UserId) -> Result<Vec<SessionRow>, AccountError>;
    /// Ends one of the user's sessions; false when it has no such session.
    fn delete_session(&self, user: UserId, id: &str) -> Result<bool, AccountError>;

    /// Stores a token unless its account already holds `max` (counted in the same
    /// transaction, so concurrent creations cannot pass the cap).
    fn create_token(&self, row: &TokenRow, token_digest: &str, max: usize) -> Result<(), AccountError>;
    fn token_by_digest(&self, digest: &str) -> Result<Option<(TokenRow, Account)>, AccountError>;
    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), AccountError>;
    fn tokens(&self, user: UserId) -> Result<Vec<TokenRow>, AccountError>;
    fn delete_token(&self, user: UserId, id: &str) -> Result<bool, AccountError>;

    fn create_invite(&self, row: &InviteRow, code_digest: &str) -> Result<(), AccountError>;
    fn invites(&self) -> Result<Vec<InviteRow>, AccountError>;
    fn delete_invite(&self, id: &str) -> Result<bool, AccountError>;

    /// Records a room with its settings (private rooms and DMs are stored at creation).
    fn create_room(
        &self,
        name: &str,
        meta: &RoomMeta,
        owner: Option<UserId>,
        now_ms: i64,
    ) -> Result<(), AccountError>;
    fn set_topic(&self, room: &str, topic: &str) -> Result<(), AccountError>;
    /// Every room's settings (rooms without a row are public with no topic).
    fn room_metas(&self) -> Result<Vec<(String, RoomMeta)>, AccountError>;
    /// Sets (inserting) an account's standing in a room.
    fn set_membership(&self, m: &Membership, now_ms: i64) -> Result<(), AccountError>;
    fn remove_membership(&self, room: &str, user: UserId) -> Result<(), AccountError>;
    /// Every membership of every room (loaded once at start).
    fn memberships(&self) -> Result<Vec<Membership>, AccountError> {
        self.memberships_of(None)
    }
    /// One room's memberships, or every room's.
    fn memberships_of(&self, room: Option<&str>) -> Result<Vec<Membership>, AccountError>;
}
