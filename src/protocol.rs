//! Wire protocol v2 (a compatible extension of v1), shared by the browser (WASM) and the server.
//!
//! One JSON object per WebSocket text frame, discriminated by `"type"` (snake_case).
//! docs/PROTOCOL.md is the human-readable contract; the types here are the
//! machine-checked one. Field names are fixed: tools outside the project speak them.
//!
//! The browser decodes server frames with `ui::wire`, not with this enum's derive (which
//! would cost the bundle far more); `ui::wire`'s tests keep the two in step.
//!
//! Values that arrive from the wire are plain `String`s here so that decoding never fails
//! on content; they become the validated newtypes ([`Nick`], [`RoomName`], [`MessageText`])
//! at the server's edge, and after that the type proves the value is valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of this protocol, reported in `welcome`.
pub const PROTOCOL_VERSION: u32 = 2;
/// Longest nick, in characters.
pub const MAX_NICK_CHARS: usize = 32;
/// Longest room name, in characters (ASCII, so also bytes).
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;
/// Messages replayed on a `join` without `since`.
pub const JOIN_RECENT: usize = 50;

/// Position of a message in its room: 1, 2, 3, … with no gaps.
pub type Seq = u64;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Must be the first frame. A guest names itself (`nick`); a connection whose upgrade
    /// carried a session cookie or a Bearer token sends no nick: it is that user.
    /// `session` resumes an earlier guest session (same nick).
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nick: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Join (and create) a room; `since` asks for every message after that seq.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Seq>,
    },
    Leave {
        room: String,
    },
    /// Post a message. `client_id` makes retries idempotent within a session;
    /// `reply_to` is the seq of the message this one answers.
    Send {
        room: String,
        text: String,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
    },
    /// Replace the text of one of your messages (`target` is its seq).
    Edit {
        room: String,
        target: Seq,
        text: String,
        client_id: String,
    },
    /// Delete one of your messages (moderators: anyone's); it becomes a tombstone.
    Delete {
        room: String,
        target: Seq,
        client_id: String,
    },
    /// Add (`on: true`) or take back (`on: false`) your reaction `emoji` to a message.
    React {
        room: String,
        target: Seq,
        emoji: String,
        #[serde(default = "default_true")]
        on: bool,
    },
    /// You have read the room up to `seq` (it never moves back).
    Read {
        room: String,
        seq: Seq,
    },
    /// Full-text search over the rooms you may read, newest first; `before` is the
    /// `next` of the previous page.
    Search {
        query: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Typing {
        room: String,
    },
    /// Older messages than `before`, newest `limit` of them, oldest first.
    History {
        room: String,
        before: Seq,
        #[serde(default = "default_history_limit")]
        limit: u32,
    },
    /// A page of the room directory, most recently active first. `cursor` is the `next`
    /// of the previous page.
    ListRooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Creates a room; the creator becomes its owner and is joined (the reply is `joined`).
    CreateRoom {
        room: String,
        #[serde(default)]
        visibility: Visibility,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// Lets a user into a private room (or back into one they were banned from is not it:
    /// that is `unban`). The invited user hears `invited`.
    Invite {
        room: String,
        username: String,
    },
    /// Removes someone from the room now; they may rejoin a public room.
    Kick {
        room: String,
        username: String,
    },
    /// Removes someone and keeps them out until `unban`.
    Ban {
        room: String,
        username: String,
    },
    Unban {
        room: String,
        username: String,
    },
    /// Someone may read but not send.
    Mute {
        room: String,
        username: String,
    },
    Unmute {
        room: String,
        username: String,
    },
    SetRole {
        room: String,
        username: String,
        role: RoomRole,
    },
    SetTopic {
        room: String,
        topic: String,
    },
    /// Opens (creating on first use) the direct-message room with a user; the reply is
    /// `joined` for it. The server picks the room's name.
    OpenDm {
        username: String,
    },
}

/// Who can see a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Anyone (signed in or guest) can see, join and read it.
    #[default]
    Public,
    /// Only its members see that it exists; to everyone else it is `not_found`.
    Private,
}

impl Visibility {
    pub fn is_public(&self) -> bool {
        *self == Visibility::Public
    }
}

/// A member's role in one room, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomRole {
    Member,
    Moderator,
    Owner,
}

impl RoomRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomRole::Member => "member",
            RoomRole::Moderator => "moderator",
            RoomRole::Owner => "owner",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "member" => Some(RoomRole::Member),
            "moderator" => Some(RoomRole::Moderator),
            "owner" => Some(RoomRole::Owner),
            _ => None,
        }
    }
}

/// A user's role on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerRole {
    Admin,
    Member,
    Guest,
}

impl ServerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Admin => "admin",
            ServerRole::Member => "member",
            ServerRole::Guest => "guest",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(ServerRole::Admin),
            "member" => Some(ServerRole::Member),
            "guest" => Some(ServerRole::Guest),
            _ => None,
        }
    }
}

/// Who a connection is, in `welcome` and `GET /api/me`. `id` is stable for an account;
/// a guest's lasts as long as its guest session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    /// The account's username; none for a guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub display_name: String,
    pub role: ServerRole,
    #[serde(default)]
    pub guest: bool,
}

/// A client frame with its optional request id: `ref` is echoed on the reply (or the
/// error) the frame causes, so a client can tell which request an answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    #[serde(flatten)]
    pub msg: ClientMsg,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Longest `ref`, in bytes.
pub const MAX_REF_BYTES: usize = 64;
/// Rooms in one `rooms` page by default, and at most.
pub const ROOMS_PAGE: u32 = 50;
pub const MAX_ROOMS_PAGE: u32 = 200;

/// Why a client frame could not be decoded: `bad_frame` or `unknown_type`, with a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

/// Every `type` a client may send.
pub const CLIENT_TYPES: [&str; 22] = [
    "hello",
    "join",
    "leave",
    "send",
    "typing",
    "history",
    "list_rooms",
    "create_room",
    "invite",
    "kick",
    "ban",
    "unban",
    "mute",
    "unmute",
    "set_role",
    "set_topic",
    "open_dm",
    "edit",
    "delete",
    "react",
    "read",
    "search",
];

impl Request {
    /// Decodes one text frame with its `ref`. The `ref` is recovered even when the frame
    /// is otherwise invalid, so the error can carry it.
    pub fn decode(text: &str) -> (Result<ClientMsg, DecodeError>, Option<String>) {
        let decoded = if type_is_a_string(text) {
            serde_json::from_str::<Request>(text).map_err(|_| ())
        } else {
            Err(())
        };
        match decoded {
            Ok(req) => match check_ref(req.reference.as_deref()) {
                Ok(()) => (Ok(req.msg), req.reference),
                Err(err) => (Err(err), None),
            },
            Err(_) => {
                #[derive(Deserialize)]
                struct RefOnly {
                    #[serde(rename = "ref", default)]
                    reference: Option<String>,
                }
                // Only from an object: the derived decoder would read an array's first
                // element as the `ref`.
                let reference = (is_an_object(text))
                    .then(|| serde_json::from_str::<RefOnly>(text).ok())
                    .flatten()
                    .and_then(|r| r.reference)
                    .filter(|r| check_ref(Some(r)).is_ok());
                match ClientMsg::decode(text) {
                    // The message is fine, so the `ref` is what is wrong (not a string).
                    Ok(_) => (
                        Err(DecodeError {
                            code: ErrorCode::BadFrame,
                            message: "ref must be a string".to_owned(),
                        }),
                        None,
                    ),
                    Err(err) => (Err(err), reference),
                }
            }
        }
    }
}

/// A `ref` is 1-64 bytes of printable ASCII, like a `client_id`.
fn check_ref(reference: Option<&str>) -> Result<(), DecodeError> {
    match reference {
        // No `"` or `\`: echoed in a reply, a ref is then never longer than it looks.
        Some(r)
            if r.is_empty()
                || r.len() > MAX_REF_BYTES
                || !r.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            Err(DecodeError {
                code: ErrorCode::BadFrame,
                message: format!(
                    "ref must be 1-{MAX_REF_BYTES} printable ASCII characters, no quote or backslash"
                ),
            })
        }
        _ => Ok(()),
    }
}

impl ClientMsg {
    /// Decodes one text frame. Never panics, whatever the input; tells "not our kind of
    /// JSON" (`bad_frame`) from "a type we do not know" (`unknown_type`).
    pub fn decode(text: &str) -> Result<ClientMsg, DecodeError> {
        let err = match serde_json::from_str::<ClientMsg>(text) {
            Ok(msg) if type_is_a_string(text) => return Ok(msg),
            Ok(_) => "\"type\" must be a string".to_owned(),
            Err(err) => err.to_string(),
        };
        // Only on the error path: look again to say what was wrong.
        let (code, message) = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(obj)) => match obj.get("type").and_then(|t| t.as_str()) {
                Some(t) if !CLIENT_TYPES.contains(&t) => {
                    (ErrorCode::UnknownType, format!("unknown type {t:?}"))
                }
                Some(_) => (ErrorCode::BadFrame, format!("bad fields: {err}")),
                None if obj.contains_key("type") => {
                    (ErrorCode::BadFrame, "\"type\" must be a string".to_owned())
                }
                None => (ErrorCode::BadFrame, "missing \"type\"".to_owned()),
            },
            Ok(_) => (ErrorCode::BadFrame, "a frame must be a JSON object".to_owned()),
            Err(_) => (ErrorCode::BadFrame, "not valid JSON".to_owned()),
        };
        Err(DecodeError { code, message })
    }
}

/// Whether the frame is a JSON object whose `type` is a string. serde's derived decoders
/// also take a number as the index of a variant (`{"type":0}` would decode as `hello`)
/// and an array as a list of fields (`["list_rooms"]`): the wire has neither. A cheap
/// second pass that skips every other field.
fn type_is_a_string(text: &str) -> bool {
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        _kind: std::borrow::Cow<'a, str>,
    }
    is_an_object(text) && serde_json::from_str::<TypeOnly>(text).is_ok()
}

/// Whether the text can only be a JSON object (or is not JSON at all).
fn is_an_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{')
}

fn default_history_limit() -> u32 {
    JOIN_RECENT as u32
}

fn default_true() -> bool {
    true
}

/// Most distinct emoji on one message.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;
/// Most reactions (people × emoji) on one message.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 200;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Search hits per page by default, and at most.
pub const SEARCH_PAGE: u32 = 20;
pub const MAX_SEARCH_PAGE: u32 = 50;
/// Most `@username` mentions a message records.
pub const MAX_MENTIONS: usize = 20;

/// What a reply shows of its original: its author and first line (none if deleted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quote {
    pub nick: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// Characters of its original's first line a reply quotes.
pub const QUOTE_CHARS: usize = 100;

/// The first line of `text`, at most [`QUOTE_CHARS`] characters (then "…").
pub fn quote_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(QUOTE_CHARS).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

impl Quote {
    /// The quote of `original` as it is now.
    pub fn of(nick: &str, text: &str, deleted: bool) -> Quote {
        Quote { nick: nick.to_owned(), text: if deleted { String::new() } else { quote_line(text) }, deleted }
    }

    /// The original was edited to `text` (a deleted one stays deleted).
    pub fn edited(&mut self, text: &str) {
        if !self.deleted {
            self.text = quote_line(text);
        }
    }

    /// The original was deleted.
    pub fn deleted(&mut self) {
        self.text.clear();
        self.deleted = true;
    }
}

/// One emoji's reactions on a message: who (user ids, and their names at the time), in
/// the order they reacted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    pub users: Vec<String>,
    #[serde(default)]
    pub nicks: Vec<String>,
}

/// `edit`: a message's text was replaced. Applying it to a deleted message does nothing
/// (its text is then empty: an edit of a later-deleted message is redacted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EditEvent {
    pub room: String,
    pub seq: Seq,
    pub target: Seq,
    pub text: String,
    pub edited_ts: i64,
    pub user: String,
    pub nick: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

/// `delete`: a message became a tombstone (no text, no reactions). `by` is who deleted
/// it (a name), `user` their id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeleteEvent {
    pub room: String,
    pub seq: Seq,
    pub target: Seq,
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
}

/// `react`: `user`'s reaction `emoji` on `target` is now `on` (or off). Applying one that
/// changes nothing (on when on, off when off) is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReactEvent {
    pub room: String,
    pub seq: Seq,
    pub target: Seq,
    pub emoji: String,
    pub user: String,
    pub nick: String,
    pub on: bool,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SearchHit {
    pub room: String,
    pub seq: Seq,
    pub nick: String,
    pub ts: i64,
    pub snippet: String,
}

/// One entry of a room's event log: what `message`, `edit`, `delete` and `react` frames
/// carry, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Message(ChatMessage),
    Edit(EditEvent),
    Delete(DeleteEvent),
    React(ReactEvent),
}

impl RoomEvent {
    pub fn seq(&self) -> Seq {
        match self {
            RoomEvent::Message(m) => m.seq,
            RoomEvent::Edit(e) => e.seq,
            RoomEvent::Delete(e) => e.seq,
            RoomEvent::React(e) => e.seq,
        }
    }

    pub fn set_seq(&mut self, seq: Seq) {
        match self {
            RoomEvent::Message(m) => m.seq = seq,
            RoomEvent::Edit(e) => e.seq = seq,
            RoomEvent::Delete(e) => e.seq = seq,
            RoomEvent::React(e) => e.seq = seq,
        }
    }

    pub fn room(&self) -> &str {
        match self {
            RoomEvent::Message(m) => &m.room,
            RoomEvent::Edit(e) => &e.room,
            RoomEvent::Delete(e) => &e.room,
            RoomEvent::React(e) => &e.room,
        }
    }

    /// The `client_id` a retry of this event's request carries (none for reactions).
    pub fn client_id(&self) -> &str {
        match self {
            RoomEvent::Message(m) => &m.client_id,
            RoomEvent::Edit(e) => &e.client_id,
            RoomEvent::Delete(e) => &e.client_id,
            RoomEvent::React(_) => "",
        }
    }

    pub fn into_server_msg(self) -> ServerMsg {
        match self {
            RoomEvent::Message(m) => ServerMsg::Message(m),
            RoomEvent::Edit(e) => ServerMsg::Edit(e),
            RoomEvent::Delete(e) => ServerMsg::Delete(e),
            RoomEvent::React(e) => ServerMsg::React(e),
        }
    }
}

/// The `@username` mentions in a text, in order of first appearance, lower case, at most
/// [`MAX_MENTIONS`]. A mention starts after a non-word character (so `a@b.c` is no
/// mention) and ends at the first character a username cannot hold; a trailing `.` (end
/// of a sentence) is not part of it.
pub fn mention_candidates(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_MENTIONS {
        if bytes[i] == b'@' && (i == 0 || !is_name_byte(bytes[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && is_name_byte(bytes[end]) && end - start < MAX_USERNAME_CHARS + 1 {
                end += 1;
            }
            let mut name = &text[start..end];
            while name.ends_with('.') {
                name = &name[..name.len() - 1];
            }
            if let Some(u) = Username::parse(name)
                && !out.iter().any(|n| n == u.as_str())
            {
                out.push(u.as_str().to_owned());
            }
            i = end.max(start);
        } else {
            i += 1;
        }
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.-".contains(&b)
}

/// Whether `s` is one emoji (a single grapheme made of emoji code points: a pictograph
/// with its modifiers, a ZWJ sequence, a flag, a keycap), as reactions must be.
pub fn is_emoji(s: &str) -> bool {
    if s.is_empty() || s.len() > 32 {
        return false;
    }
    let mut pictographs = 0;
    let chars: Vec<char> = s.chars().collect();
    let mut regional = 0;
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\u{200D}' | '\u{FE0F}' | '\u{20E3}' => {
                // Joiners and selectors only between or after pictographs.
                if i == 0 {
                    return false;
                }
            }
            '\u{1F3FB}'..='\u{1F3FF}' => {
                if i == 0 {
                    return false;
                }
            }
            '\u{1F1E6}'..='\u{1F1FF}' => regional += 1,
            '\u{E0020}'..='\u{E007F}' => {
                if i == 0 {
                    return false;
                }
            }
            '#' | '*' | '0'..='9'
                if chars.get(i + 1) == Some(&'\u{FE0F}') || chars.get(i + 1) == Some(&'\u{20E3}') =>
            {
                pictographs += 1
            }
            c if is_pictograph(c) => pictographs += 1,
            _ => return false,
        }
    }
    // A flag is two regional indicators; nothing else mixes with them.
    if regional > 0 {
        return regional == 2 && pictographs == 0;
    }
    // A ZWJ sequence joins pictographs; without joiners there is one.
    let joiners = chars.iter().filter(|&&c| c == '\u{200D}').count();
    pictographs >= 1 && pictographs == joiners + 1
}

/// Code points of the Extended_Pictographic ranges that emoji come from.
fn is_pictograph(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}' | '\u{231A}'..='\u{23FF}' | '\u{24C2}' | '\u{25AA}'..='\u{27BF}'
        | '\u{2934}' | '\u{2935}' | '\u{2B05}'..='\u{2B55}' | '\u{3030}' | '\u{303D}' | '\u{3297}'
        | '\u{3299}' | '\u{1F000}'..='\u{1FAFF}')
        && !matches!(c, '\u{1F1E6}'..='\u{1F1FF}' | '\u{1F3FB}'..='\u{1F3FF}')
}

/// A stored chat message as it travels in `message` and `history`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    pub seq: Seq,
    pub nick: String,
    pub text: String,
    /// Server time, Unix milliseconds.
    pub ts: i64,
    pub client_id: String,
    /// The author's user id (`UserInfo::id`): "mine" is decided by it, never by nick.
    /// Empty for messages stored before protocol 2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The author was a guest (shown as such wherever the name shows).
    #[serde(default, skip_serializing_if = "is_false")]
    pub guest: bool,
    /// The seq of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    /// Usernames mentioned (`@name`), computed by the server: accounts that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// When the text was last edited (Unix ms); none if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<i64>,
    /// A tombstone: the message was deleted (its text is empty).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The line of the original a reply shows (with `reply_to`), as the original is now:
    /// the server fills it in, and `edit` and `delete` of the original change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// Reactions now, in `history` and the HTTP API (and a fresh join's replay); a
    /// `message` of the live stream or of a `since` replay carries none: the `react`
    /// events that follow it in the log build them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

/// One entry of `rooms` / `GET /api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// Nicks present now.
    pub members: u32,
    /// Latest seq in the room (0 when empty).
    pub head: Seq,
    /// When the room last had a message (or was opened, if it has none), Unix ms: the
    /// directory's order, most recent first.
    #[serde(default)]
    pub last_active: i64,
    #[serde(default, skip_serializing_if = "Visibility::is_public")]
    pub visibility: Visibility,
    /// A direct-message room (listed apart).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dm: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// The viewer's read state here (signed-in users who have read the room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<u32>,
}

/// Unread counts stop here (shown as "999+"): counting further costs a read per message.
pub const MAX_UNREAD_COUNT: u32 = 999;

/// The server's limits, sent in `welcome` so a client can check before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_text_chars: u32,
    pub max_nick_chars: u32,
    pub max_room_chars: u32,
    pub max_frame_bytes: u32,
    pub max_rooms_per_connection: u32,
    pub max_history: u32,
    /// Sustained `send`s per second per connection.
    pub messages_per_sec: u32,
    /// Short bursts above the sustained rate.
    pub message_burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Joined,
    Left,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        session: String,
        nick: String,
        limits: Limits,
        #[serde(default)]
        protocol: u32,
        /// Who this connection is (protocol 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserInfo>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Joined {
        room: String,
        /// Nicks present (at most 256 of them in a large room; see `member_count`).
        members: Vec<String>,
        /// How many people are present.
        #[serde(default)]
        member_count: u32,
        head: Seq,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
        /// Which of `members` are guests.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        guests: Vec<String>,
        /// The usernames of `members` that are accounts (for `@` mentions).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        usernames: Vec<String>,
        #[serde(default, skip_serializing_if = "Visibility::is_public")]
        visibility: Visibility,
        #[serde(default, skip_serializing_if = "is_false")]
        dm: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        topic: String,
        /// The joiner's role here, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<RoomRole>,
        /// The joiner is muted here: it may read but not send.
        #[serde(default, skip_serializing_if = "is_false")]
        muted: bool,
        /// How far the joiner has read (signed-in users; 0 when never).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_read: Option<Seq>,
        /// Messages after `last_read` by others (at most [`MAX_UNREAD_COUNT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unread: Option<u32>,
        /// Of those, the ones that mention the joiner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mentions: Option<u32>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Left {
        room: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Message(ChatMessage),
    Edit(EditEvent),
    Delete(DeleteEvent),
    React(ReactEvent),
    /// You (on another connection) read the room up to `seq`.
    Read {
        room: String,
        seq: Seq,
    },
    SearchResults {
        query: String,
        hits: Vec<SearchHit>,
        has_more: bool,
        /// Pass as `before` for the next page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_before: Option<i64>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Typing {
        room: String,
        nick: String,
    },
    History {
        room: String,
        messages: Vec<ChatMessage>,
        has_more: bool,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// One page of the directory; `next` (when `has_more`) is the cursor of the next page.
    Rooms {
        rooms: Vec<RoomInfo>,
        #[serde(default)]
        has_more: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Presence {
        room: String,
        nick: String,
        state: PresenceState,
        /// How many people are in the room after this change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_count: Option<u32>,
        #[serde(default, skip_serializing_if = "is_false")]
        guest: bool,
        /// The person's username, when they are an account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
    /// You were let into a private room (join it to enter).
    Invited {
        room: String,
        by: String,
    },
    /// You were removed from a room (and are no longer in it); `banned` when you may not
    /// come back.
    Kicked {
        room: String,
        by: String,
        #[serde(default, skip_serializing_if = "is_false")]
        banned: bool,
    },
    /// A member's standing in a room changed (sent to the room).
    MemberUpdate {
        room: String,
        username: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<RoomRole>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        banned: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        muted: Option<bool>,
    },
    /// A request that has no other answer (`invite`, `kick`, `ban`, `unban`, `mute`,
    /// `unmute`, `set_role`, `set_topic`) was carried out.
    Ack {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// The room's topic changed.
    Topic {
        room: String,
        topic: String,
        by: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// With `rate_limited`: wait this long before sending the refused request again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ServerMsg {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            client_id: None,
            retry_after_ms: None,
            reference: None,
        }
    }

    /// The `ref` this frame echoes, if it is a reply that carries one.
    pub fn reference(&self) -> Option<&str> {
        match self {
            ServerMsg::Welcome { reference, .. }
            | ServerMsg::Joined { reference, .. }
            | ServerMsg::Left { reference, .. }
            | ServerMsg::History { reference, .. }
            | ServerMsg::Rooms { reference, .. }
            | ServerMsg::Ack { reference }
            | ServerMsg::SearchResults { reference, .. }
            | ServerMsg::Error { reference, .. } => reference.as_deref(),
            _ => None,
        }
    }

    /// Sets the `ref` of a reply (a no-op for frames that carry none).
    pub fn with_reference(mut self, r: Option<String>) -> Self {
        match &mut self {
            ServerMsg::Welcome { reference, .. }
            | ServerMsg::Joined { reference, .. }
            | ServerMsg::Left { reference, .. }
            | ServerMsg::History { reference, .. }
            | ServerMsg::Rooms { reference, .. }
            | ServerMsg::Ack { reference }
            | ServerMsg::SearchResults { reference, .. }
            | ServerMsg::Error { reference, .. } => *reference = r,
            _ => {}
        }
        self
    }
}

/// Stable error codes. Clients match on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a binary frame, or a field of the wrong type.
    BadFrame,
    /// JSON with a `type` this server does not know.
    UnknownType,
    /// Anything but `hello` before `hello`.
    HelloRequired,
    /// A second `hello` on one connection.
    AlreadyHello,
    NotJoined,
    TooLong,
    EmptyText,
    InvalidNick,
    InvalidRoom,
    InvalidClientId,
    NickTaken,
    RateLimited,
    TooManyRooms,
    Internal,
    /// Signing in is needed (no account, or guests are off).
    Unauthenticated,
    /// Known, but not allowed (a member trying to kick, a guest making a private room).
    Forbidden,
    /// No such room, user or thing, or one the caller may not know exists (a private
    /// room to a non-member).
    NotFound,
    /// Banned from the room.
    Banned,
    /// Muted in the room: may read, not send.
    Muted,
    InvalidUsername,
    WeakPassword,
    UsernameTaken,
    InviteRequired,
    BadCredentials,
    SignupClosed,
    /// A browser request from another origin.
    BadOrigin,
    /// `create_room` of a name in use.
    RoomExists,
    /// A reaction that is not one emoji.
    InvalidEmoji,
    /// The message has as many reactions (or distinct emoji) as it may.
    TooManyReactions,
    /// A search query that is empty, too long or not understood.
    InvalidQuery,
    /// The message was deleted: it can no longer be edited, reacted to or answered.
    Deleted,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 31] = [
        ErrorCode::BadFrame,
        ErrorCode::UnknownType,
        ErrorCode::HelloRequired,
        ErrorCode::AlreadyHello,
        ErrorCode::NotJoined,
        ErrorCode::TooLong,
        ErrorCode::EmptyText,
        ErrorCode::InvalidNick,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidClientId,
        ErrorCode::NickTaken,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::Internal,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Banned,
        ErrorCode::Muted,
        ErrorCode::InvalidUsername,
        ErrorCode::WeakPassword,
        ErrorCode::UsernameTaken,
        ErrorCode::InviteRequired,
        ErrorCode::BadCredentials,
        ErrorCode::SignupClosed,
        ErrorCode::BadOrigin,
        ErrorCode::RoomExists,
        ErrorCode::InvalidEmoji,
        ErrorCode::TooManyReactions,
        ErrorCode::InvalidQuery,
        ErrorCode::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::AlreadyHello => "already_hello",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooLong => "too_long",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::InvalidNick => "invalid_nick",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::NickTaken => "nick_taken",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Banned => "banned",
            ErrorCode::Muted => "muted",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::InviteRequired => "invite_required",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::SignupClosed => "signup_closed",
            ErrorCode::BadOrigin => "bad_origin",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::InvalidEmoji => "invalid_emoji",
            ErrorCode::TooManyReactions => "too_many_reactions",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value from the wire was refused; each maps to one [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("nick must be 1-{MAX_NICK_CHARS} characters with no control characters")]
    Nick,
    #[error("room names are 1-{MAX_ROOM_CHARS} characters of a-z, 0-9, '_' and '-'")]
    Room,
    #[error("message text is empty")]
    EmptyText,
    #[error("message text is longer than {max} characters")]
    TooLong { max: usize },
    #[error("client_id must be 1-{MAX_CLIENT_ID_BYTES} printable ASCII characters")]
    ClientId,
}

impl ValidationError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ValidationError::Nick => ErrorCode::InvalidNick,
            ValidationError::Room => ErrorCode::InvalidRoom,
            ValidationError::EmptyText => ErrorCode::EmptyText,
            ValidationError::TooLong { .. } => ErrorCode::TooLong,
            ValidationError::ClientId => ErrorCode::InvalidClientId,
        }
    }
}

/// A nickname: 1–32 characters, no control characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nick(String);

impl Nick {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        let bad = |c: char| c.is_control() || is_invisible_format(c) || is_blank_lookalike(c);
        if chars == 0 || chars > MAX_NICK_CHARS || trimmed.chars().any(bad) {
            return Err(ValidationError::Nick);
        }
        Ok(Nick(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Key under which nicks collide: the UTS #39 confusable skeleton of the NFKC, case
    /// folded nick. "Bob" and "bob" are the same person, and so are "alice" and "аlice"
    /// (Cyrillic а), "ｂｏｂ" (full width) and "bob". Server only: the tables are large.
    #[cfg(feature = "ssr")]
    pub fn key(&self) -> String {
        use unicode_normalization::UnicodeNormalization;
        // Skeleton, fold, twice: many skeleton prototypes are capitals ("I" stands for
        // "l"), so the skeleton comes before folding, and folding can make new capitals.
        // Upper case first: "ALICE" must be "alice", but the skeleton of capital I is l
        // while small i is its own, so case is taken out before the skeleton sees it
        // (i, I, l and 1 are then one letter: "bill" and "bili" collide, on purpose).
        let pass =
            |s: &str| caseless::default_case_fold_str(&unicode_security::skeleton(s).collect::<String>());
        pass(&pass(&pass(&self.0.nfkc().collect::<String>()).to_uppercase()))
    }
}

/// Characters that show as nothing though they are not white space (U+3164 Hangul
/// filler, U+2800 braille blank, U+115F, ...): a nick of them looks empty, or like
/// another nick with a space. Unicode lists most as Default_Ignorable; the check of the
/// full property runs on the server (`Nick::key`'s tables), this list in both builds.
fn is_blank_lookalike(c: char) -> bool {
    #[cfg(feature = "ssr")]
    {
        use unicode_security::GeneralSecurityProfile;
        use unicode_security::general_security_profile::IdentifierType;
        // Variation selectors pick an emoji's presentation ("❤️"): visible, not a blank.
        let variation_selector = matches!(c, '\u{FE00}'..='\u{FE0F}');
        if c.identifier_type() == Some(IdentifierType::Default_Ignorable) && !variation_selector {
            return true;
        }
    }
    matches!(
        c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}' | '\u{034F}' | '\u{17B4}' | '\u{17B5}'
    )
}

/// Unicode format characters (general category Cf): invisible, or reordering the text
/// around them. In a nick they let "bo\u{200B}b" pass for "bob", or flip how a name
/// reads (U+202E), so nicks may not contain them.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// A room name: 1–64 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_ROOM_CHARS
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(RoomName(raw.to_owned())) } else { Err(ValidationError::Room) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest username, in characters (ASCII).
pub const MAX_USERNAME_CHARS: usize = 32;
/// Longest room topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;

/// An account's username: 1–32 of `a-z 0-9 _ . -`, compared case-insensitively (kept in
/// lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Option<Self> {
        let lower = raw.trim().to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= MAX_USERNAME_CHARS
            && lower.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        ok.then_some(Username(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of the direct-message room of two accounts: reserved (`dm-` rooms are never
/// created by `join` or `create_room`).
pub fn dm_room_name(a: i64, b: i64) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("dm-{lo}-{hi}")
}

/// Whether a room name is in the reserved direct-message space.
pub fn is_dm_name(name: &str) -> bool {
    name.starts_with("dm-")
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message text: 1 to `max` characters, not only white space. Kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: String, max: usize) -> Result<Self, ValidationError> {
        if raw.trim().is_empty() {
            return Err(ValidationError::EmptyText);
        }
        // Cheap byte check first: a string of n bytes has at most n chars.
        if raw.len() > max && raw.chars().count() > max {
            return Err(ValidationError::TooLong { max });
        }
        Ok(MessageText(raw))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Validates a client-chosen message id (used for idempotent retries).
pub fn check_client_id(raw: &str) -> Result<(), ValidationError> {
    let ok = !raw.is_empty() && raw.len() <= MAX_CLIENT_ID_BYTES && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(ValidationError::ClientId) }
}

/// Splits text into plain runs and URLs, so the UI can render links without ever
/// interpreting user text as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Link(&'a str),
}

pub fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder
        .spans(text)
        .map(|span| match span.kind() {
            Some(linkify::LinkKind::Url)
                if span.as_str().starts_with("http://") || span.as_str().starts_with("https://") =>
            {
                Segment::Link(span.as_str())
            }
            _ => Segment::Text(span.as_str()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip_client(msg: ClientMsg, wire: serde_json::Value) {
        assert_eq!(serde_json::to_value(&msg).unwrap(), wire);
        let back: ClientMsg = serde_json::from_value(wire).unwrap();
        assert_eq!(back, msg);
    }

    fn round_trip_server(msg: ServerMsg, wire: serde_json::Value) {
        assert_eq!(serde_json::to_value(&msg).unwrap(), wire);
        let back: ServerMsg = serde_json::from_value(wire).unwrap();
        assert_eq!(back, msg);
    }

    fn sample_message() -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            seq: 7,
            nick: "ann".into(),
            text: "hi <b>".into(),
            ts: 1_700_000_000_000,
            client_id: "c-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn client_messages_round_trip_with_fixed_field_names() {
        round_trip_client(
            ClientMsg::Hello { nick: Some("ann".into()), session: None },
            json!({"type": "hello", "nick": "ann"}),
        );
        round_trip_client(
            ClientMsg::Hello { nick: Some("ann".into()), session: Some("s".into()) },
            json!({"type": "hello", "nick": "ann", "session": "s"}),
        );
        round_trip_client(
            ClientMsg::Join { room: "r".into(), since: Some(3) },
            json!({"type": "join", "room": "r", "since": 3}),
        );
        round_trip_client(
            ClientMsg::Join { room: "r".into(), since: None },
            json!({"type": "join", "room": "r"}),
        );
        round_trip_client(ClientMsg::Leave { room: "r".into() }, json!({"type": "leave", "room": "r"}));
        round_trip_client(
            ClientMsg::Send { room: "r".into(), text: "t".into(), client_id: "c".into(), reply_to: None },
            json!({"type": "send", "room": "r", "text": "t", "client_id": "c"}),
        );
        round_trip_client(ClientMsg::Typing { room: "r".into() }, json!({"type": "typing", "room": "r"}));
        round_trip_client(
            ClientMsg::History { room: "r".into(), before: 10, limit: 5 },
            json!({"type": "history", "room": "r", "before": 10, "limit": 5}),
        );
        round_trip_client(ClientMsg::ListRooms { cursor: None, limit: None }, json!({"type": "list_rooms"}));
        round_trip_client(
            ClientMsg::ListRooms { cursor: Some("5.a".into()), limit: Some(10) },
            json!({"type": "list_rooms", "cursor": "5.a", "limit": 10}),
        );
    }

    #[test]
    fn conversation_messages_round_trip_with_fixed_field_names() {
        round_trip_client(
            ClientMsg::Send { room: "r".into(), text: "t".into(), client_id: "c".into(), reply_to: Some(3) },
            json!({"type": "send", "room": "r", "text": "t", "client_id": "c", "reply_to": 3}),
        );
        round_trip_client(
            ClientMsg::Edit { room: "r".into(), target: 3, text: "t".into(), client_id: "e".into() },
            json!({"type": "edit", "room": "r", "target": 3, "text": "t", "client_id": "e"}),
        );
        round_trip_client(
            ClientMsg::Delete { room: "r".into(), target: 3, client_id: "d".into() },
            json!({"type": "delete", "room": "r", "target": 3, "client_id": "d"}),
        );
        round_trip_client(
            ClientMsg::React { room: "r".into(), target: 3, emoji: "🎉".into(), on: false },
            json!({"type": "react", "room": "r", "target": 3, "emoji": "🎉", "on": false}),
        );
        assert_eq!(
            ClientMsg::decode(r#"{"type":"react","room":"r","target":3,"emoji":"🎉"}"#).unwrap(),
            ClientMsg::React { room: "r".into(), target: 3, emoji: "🎉".into(), on: true },
            "on defaults to true"
        );
        round_trip_client(
            ClientMsg::Read { room: "r".into(), seq: 9 },
            json!({"type": "read", "room": "r", "seq": 9}),
        );
        round_trip_client(
            ClientMsg::Search {
                query: "q".into(),
                room: Some("r".into()),
                before: Some(-5),
                limit: Some(10),
            },
            json!({"type": "search", "query": "q", "room": "r", "before": -5, "limit": 10}),
        );
        round_trip_client(
            ClientMsg::Search { query: "q".into(), room: None, before: None, limit: None },
            json!({"type": "search", "query": "q"}),
        );
        round_trip_server(
            ServerMsg::Edit(EditEvent {
                room: "r".into(),
                seq: 4,
                target: 3,
                text: "t".into(),
                edited_ts: 7,
                user: "1".into(),
                nick: "Ann".into(),
                client_id: "e".into(),
                mentions: vec!["bob".into()],
            }),
            json!({"type": "edit", "room": "r", "seq": 4, "target": 3, "text": "t", "edited_ts": 7, "user": "1",
                   "nick": "Ann", "client_id": "e", "mentions": ["bob"]}),
        );
        round_trip_server(
            ServerMsg::Delete(DeleteEvent {
                room: "r".into(),
                seq: 5,
                target: 3,
                by: "Ann".into(),
                user: "1".into(),
                client_id: "d".into(),
            }),
            json!({"type": "delete", "room": "r", "seq": 5, "target": 3, "by": "Ann", "user": "1", "client_id": "d"}),
        );
        round_trip_server(
            ServerMsg::React(ReactEvent {
                room: "r".into(),
                seq: 6,
                target: 3,
                emoji: "🎉".into(),
                user: "2".into(),
                nick: "Bob".into(),
                on: true,
            }),
            json!({"type": "react", "room": "r", "seq": 6, "target": 3, "emoji": "🎉", "user": "2", "nick": "Bob", "on": true}),
        );
        round_trip_server(
            ServerMsg::Read { room: "r".into(), seq: 6 },
            json!({"type": "read", "room": "r", "seq": 6}),
        );
        round_trip_server(
            ServerMsg::SearchResults {
                query: "q".into(),
                hits: vec![SearchHit {
                    room: "r".into(),
                    seq: 3,
                    nick: "Ann".into(),
                    ts: 1,
                    snippet: "…q…".into(),
                }],
                has_more: true,
                next_before: Some(99),
                reference: Some("s".into()),
            },
            json!({"type": "search_results", "query": "q", "has_more": true, "next_before": 99, "ref": "s",
                   "hits": [{"room": "r", "seq": 3, "nick": "Ann", "ts": 1, "snippet": "…q…"}]}),
        );
        let m = ChatMessage {
            reply_to: Some(3),
            quote: Some(Quote { nick: "Bob".into(), text: String::new(), deleted: true }),
            mentions: vec!["bob".into()],
            edited_ts: Some(8),
            deleted: true,
            reactions: vec![Reaction {
                emoji: "👍".into(),
                count: 1,
                users: vec!["2".into()],
                nicks: vec!["Bob".into()],
            }],
            ..sample_message()
        };
        round_trip_server(
            ServerMsg::Message(m),
            json!({"type": "message", "room": "lobby", "seq": 7, "nick": "ann", "text": "hi <b>",
                   "ts": 1_700_000_000_000_i64, "client_id": "c-1", "reply_to": 3,
                   "quote": {"nick": "Bob", "deleted": true}, "mentions": ["bob"], "edited_ts": 8,
                   "deleted": true, "reactions": [{"emoji": "👍", "count": 1, "users": ["2"], "nicks": ["Bob"]}]}),
        );
        for code in [
            ErrorCode::InvalidEmoji,
            ErrorCode::TooManyReactions,
            ErrorCode::InvalidQuery,
            ErrorCode::Deleted,
        ] {
            assert!(ErrorCode::ALL.contains(&code));
        }
        assert_eq!(
            [
                ErrorCode::InvalidEmoji,
                ErrorCode::TooManyReactions,
                ErrorCode::InvalidQuery,
                ErrorCode::Deleted
            ]
            .map(ErrorCode::as_str),
            ["invalid_emoji", "too_many_reactions", "invalid_query", "deleted"]
        );
    }

    #[test]
    fn emoji_mentions_and_quotes() {
        for yes in ["👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "1️⃣", "❤️", "©"] {
            assert!(is_emoji(yes), "{yes:?}");
        }
        for no in ["", "a", "👍👍", "🇫", "👍 ", "\u{200D}", "🏽", "ok👍"] {
            assert!(!is_emoji(no), "{no:?}");
        }
        assert_eq!(
            mention_candidates("hi @Ann and @bob.b, not a@b.c; @ann again. @x"),
            vec!["ann", "bob.b", "x"]
        );
        assert_eq!(mention_candidates("@ mail a@b.c"), Vec::<String>::new());
        assert_eq!(quote_line("first\nsecond"), "first");
        assert_eq!(quote_line(&"é".repeat(150)), format!("{}…", "é".repeat(100)));
        let mut q = Quote::of("Ann", "a", false);
        q.edited("b");
        assert_eq!(q.text, "b");
        q.deleted();
        q.edited("c");
        assert_eq!(q, Quote::of("Ann", "", true));
    }

    #[test]
    fn protocol_2_messages_round_trip_with_fixed_field_names() {
        round_trip_client(ClientMsg::Hello { nick: None, session: None }, json!({"type": "hello"}));
        round_trip_client(
            ClientMsg::CreateRoom {
                room: "r".into(),
                visibility: Visibility::Private,
                topic: Some("t".into()),
            },
            json!({"type": "create_room", "room": "r", "visibility": "private", "topic": "t"}),
        );
        assert_eq!(
            ClientMsg::decode(r#"{"type":"create_room","room":"r"}"#).unwrap(),
            ClientMsg::CreateRoom { room: "r".into(), visibility: Visibility::Public, topic: None }
        );
        for (msg, t) in [
            (ClientMsg::Invite { room: "r".into(), username: "u".into() }, "invite"),
            (ClientMsg::Kick { room: "r".into(), username: "u".into() }, "kick"),
            (ClientMsg::Ban { room: "r".into(), username: "u".into() }, "ban"),
            (ClientMsg::Unban { room: "r".into(), username: "u".into() }, "unban"),
            (ClientMsg::Mute { room: "r".into(), username: "u".into() }, "mute"),
            (ClientMsg::Unmute { room: "r".into(), username: "u".into() }, "unmute"),
        ] {
            round_trip_client(msg, json!({"type": t, "room": "r", "username": "u"}));
        }
        round_trip_client(
            ClientMsg::SetRole { room: "r".into(), username: "u".into(), role: RoomRole::Moderator },
            json!({"type": "set_role", "room": "r", "username": "u", "role": "moderator"}),
        );
        round_trip_client(
            ClientMsg::SetTopic { room: "r".into(), topic: "t".into() },
            json!({"type": "set_topic", "room": "r", "topic": "t"}),
        );
        round_trip_client(
            ClientMsg::OpenDm { username: "u".into() },
            json!({"type": "open_dm", "username": "u"}),
        );
        round_trip_server(
            ServerMsg::Invited { room: "r".into(), by: "ann".into() },
            json!({"type": "invited", "room": "r", "by": "ann"}),
        );
        round_trip_server(
            ServerMsg::Kicked { room: "r".into(), by: "ann".into(), banned: true },
            json!({"type": "kicked", "room": "r", "by": "ann", "banned": true}),
        );
        round_trip_server(
            ServerMsg::MemberUpdate {
                room: "r".into(),
                username: "bob".into(),
                role: Some(RoomRole::Owner),
                banned: None,
                muted: Some(true),
            },
            json!({"type": "member_update", "room": "r", "username": "bob", "role": "owner", "muted": true}),
        );
        round_trip_server(ServerMsg::Ack { reference: Some("q".into()) }, json!({"type": "ack", "ref": "q"}));
        let user = UserInfo {
            id: "7".into(),
            username: Some("ann".into()),
            display_name: "Ann".into(),
            role: ServerRole::Admin,
            guest: false,
        };
        assert_eq!(
            serde_json::to_value(&user).unwrap(),
            json!({"id": "7", "username": "ann", "display_name": "Ann", "role": "admin", "guest": false})
        );
        let m = ChatMessage { user: "g-1".into(), guest: true, ..sample_message() };
        assert_eq!(serde_json::to_value(&m).unwrap()["user"], json!("g-1"));
        assert_eq!(serde_json::to_value(&m).unwrap()["guest"], json!(true));
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn names_in_capitals_collide_with_their_small_letters() {
        let key = |s: &str| Nick::parse(s).unwrap().key();
        assert_eq!(key("ALICE"), key("alice"));
        assert_eq!(key("COLIN"), key("colin"));
        assert_eq!(key("AIice"), key("alice"), "capital I for small l");
        assert_eq!(key("аlice"), key("alice"), "Cyrillic а");
        assert_ne!(key("alice"), key("alicia"));
    }

    #[test]
    fn usernames_are_lower_case_ascii_and_dm_names_are_reserved() {
        assert_eq!(Username::parse("Ann.B-1_").unwrap().as_str(), "ann.b-1_");
        assert!(Username::parse("").is_none());
        assert!(Username::parse("an n").is_none());
        assert!(Username::parse("аnn").is_none(), "Cyrillic а");
        assert!(Username::parse(&"a".repeat(33)).is_none());
        assert!(Username::parse(&"a".repeat(32)).is_some());
        assert_eq!(dm_room_name(9, 3), "dm-3-9");
        assert!(is_dm_name("dm-3-9") && !is_dm_name("dmz"));
    }

    #[test]
    fn a_request_carries_its_ref_through_errors_too() {
        let req = Request { msg: ClientMsg::Leave { room: "r".into() }, reference: Some("q7".into()) };
        let wire = json!({"type": "leave", "room": "r", "ref": "q7"});
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
        assert_eq!(
            Request::decode(&wire.to_string()),
            (Ok(ClientMsg::Leave { room: "r".into() }), Some("q7".into()))
        );
        // Without ref, and with one the frame is otherwise wrong in.
        assert_eq!(Request::decode(r#"{"type":"list_rooms"}"#).1, None);
        let (msg, reference) = Request::decode(r#"{"type":"history","room":"r","ref":"h1"}"#);
        assert_eq!((msg.unwrap_err().code, reference.as_deref()), (ErrorCode::BadFrame, Some("h1")));
        let (msg, _) = Request::decode(r#"{"type":"dance","ref":"d"}"#);
        assert_eq!(msg.unwrap_err().code, ErrorCode::UnknownType);
        // A ref that is not 1-64 printable ASCII is refused, and not echoed.
        let (msg, reference) =
            Request::decode(&json!({"type": "list_rooms", "ref": "x".repeat(65)}).to_string());
        assert_eq!((msg.unwrap_err().code, reference), (ErrorCode::BadFrame, None));
        assert_eq!(
            Request::decode(r#"{"type":"list_rooms","ref":""}"#).0.unwrap_err().code,
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn server_messages_round_trip_with_fixed_field_names() {
        let limits = Limits {
            max_text_chars: 4000,
            max_nick_chars: 32,
            max_room_chars: 64,
            max_frame_bytes: 65536,
            max_rooms_per_connection: 32,
            max_history: 200,
            messages_per_sec: 10,
            message_burst: 20,
        };
        round_trip_server(
            ServerMsg::Welcome {
                session: "tok".into(),
                nick: "ann".into(),
                limits: limits.clone(),
                protocol: PROTOCOL_VERSION,
                reference: None,
                user: None,
            },
            json!({"type": "welcome", "session": "tok", "nick": "ann", "protocol": 2, "limits": {
                "max_text_chars": 4000, "max_nick_chars": 32, "max_room_chars": 64,
                "max_frame_bytes": 65536, "max_rooms_per_connection": 32, "max_history": 200,
                "messages_per_sec": 10, "message_burst": 20}}),
        );
        round_trip_server(
            ServerMsg::Joined {
                room: "r".into(),
                members: vec!["ann".into()],
                member_count: 1,
                head: 4,
                truncated: false,
                reference: Some("j1".into()),
                guests: Vec::new(),
                visibility: Default::default(),
                dm: false,
                topic: String::new(),
                role: None,
                muted: false,
                last_read: None,
                unread: None,
                mentions: None,
                usernames: Vec::new(),
            },
            json!({"type": "joined", "room": "r", "members": ["ann"], "member_count": 1, "head": 4, "ref": "j1"}),
        );
        round_trip_server(
            ServerMsg::Joined {
                room: "r".into(),
                members: vec![],
                member_count: 0,
                head: 900,
                truncated: true,
                reference: None,
                guests: Vec::new(),
                visibility: Default::default(),
                dm: false,
                topic: String::new(),
                role: None,
                muted: false,
                last_read: None,
                unread: None,
                mentions: None,
                usernames: Vec::new(),
            },
            json!({"type": "joined", "room": "r", "members": [], "member_count": 0, "head": 900, "truncated": true}),
        );
        round_trip_server(
            ServerMsg::Left { room: "r".into(), reference: None },
            json!({"type": "left", "room": "r"}),
        );
        round_trip_server(
            ServerMsg::Message(sample_message()),
            json!({"type": "message", "room": "lobby", "seq": 7, "nick": "ann", "text": "hi <b>",
                   "ts": 1_700_000_000_000_i64, "client_id": "c-1"}),
        );
        round_trip_server(
            ServerMsg::Typing { room: "r".into(), nick: "bob".into() },
            json!({"type": "typing", "room": "r", "nick": "bob"}),
        );
        round_trip_server(
            ServerMsg::History {
                room: "lobby".into(),
                messages: vec![sample_message()],
                has_more: true,
                reference: None,
            },
            json!({"type": "history", "room": "lobby", "has_more": true, "messages": [
                {"room": "lobby", "seq": 7, "nick": "ann", "text": "hi <b>",
                 "ts": 1_700_000_000_000_i64, "client_id": "c-1"}]}),
        );
        round_trip_server(
            ServerMsg::Rooms {
                rooms: vec![RoomInfo {
                    name: "r".into(),
                    members: 2,
                    head: 9,
                    last_active: 5,
                    ..Default::default()
                }],
                has_more: true,
                next: Some("5.r".into()),
                reference: None,
            },
            json!({"type": "rooms", "has_more": true, "next": "5.r",
                   "rooms": [{"name": "r", "members": 2, "head": 9, "last_active": 5}]}),
        );
        round_trip_server(
            ServerMsg::Presence {
                room: "r".into(),
                nick: "bob".into(),
                state: PresenceState::Left,
                member_count: Some(3),
                guest: false,
                username: None,
            },
            json!({"type": "presence", "room": "r", "nick": "bob", "state": "left", "member_count": 3}),
        );
        round_trip_server(
            ServerMsg::Error {
                code: ErrorCode::TooLong,
                message: "m".into(),
                client_id: Some("c".into()),
                retry_after_ms: None,
                reference: None,
            },
            json!({"type": "error", "code": "too_long", "message": "m", "client_id": "c"}),
        );
        round_trip_server(
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                message: "m".into(),
                client_id: Some("c".into()),
                retry_after_ms: Some(50),
                reference: Some("r1".into()),
            },
            json!({"type": "error", "code": "rate_limited", "message": "m", "client_id": "c",
                   "retry_after_ms": 50, "ref": "r1"}),
        );
    }

    #[test]
    fn every_error_code_serialises_to_its_stable_name() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn decode_tells_bad_frames_from_unknown_types() {
        let code = |t: &str| ClientMsg::decode(t).unwrap_err().code;
        assert_eq!(
            ClientMsg::decode(r#"{"type":"list_rooms"}"#),
            Ok(ClientMsg::ListRooms { cursor: None, limit: None })
        );
        assert_eq!(code("nope"), ErrorCode::BadFrame);
        assert_eq!(code("[]"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"room":"r"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
    }

    /// A number is not a type, though serde's derived decoder would read `0` as the first
    /// variant (`hello`): found by `proptest_frames`, which then saw `unauthenticated`.
    #[test]
    fn a_type_given_as_a_number_is_a_bad_frame() {
        for text in [r#"{"type":0}"#, r#"{"type":0,"nick":"ann"}"#, r#"{"type":3,"room":"r"}"#] {
            let err = ClientMsg::decode(text).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadFrame, "{text}");
            assert_eq!(err.message, "\"type\" must be a string", "{text}");
            let (decoded, _) = Request::decode(text);
            assert_eq!(decoded.unwrap_err().code, ErrorCode::BadFrame, "{text}");
        }
        let (decoded, reference) = Request::decode(r#"{"type":0,"nick":"ann","ref":"q1"}"#);
        assert_eq!(decoded.unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(reference.as_deref(), Some("q1"), "the ref is still echoed");
        // Escaped names are still names.
        assert!(ClientMsg::decode(r#"{"type":"list\u005frooms"}"#).is_ok());
        // Nor is an array a frame, though the derived decoders would read one as fields.
        for text in [r#"["list_rooms"]"#, r#" ["list_rooms", null, null]"#] {
            let err = ClientMsg::decode(text).unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (ErrorCode::BadFrame, "a frame must be a JSON object")
            );
            let (decoded, reference) = Request::decode(text);
            assert_eq!(decoded.unwrap_err().message, "a frame must be a JSON object", "{text}");
            assert_eq!(reference, None);
        }
        let (_, reference) = Request::decode(r#"["q1"]"#);
        assert_eq!(reference, None, "an array's first string is not a ref");
    }

    #[test]
    fn history_limit_defaults_when_absent() {
        let msg: ClientMsg = serde_json::from_str(r#"{"type":"history","room":"r","before":5}"#).unwrap();
        assert_eq!(msg, ClientMsg::History { room: "r".into(), before: 5, limit: JOIN_RECENT as u32 });
    }

    #[test]
    fn nick_validation() {
        assert_eq!(Nick::parse("  ann ").unwrap().as_str(), "ann");
        assert_eq!(Nick::parse(&"é".repeat(32)).unwrap().as_str().chars().count(), 32);
        assert_eq!(Nick::parse(&"a".repeat(33)), Err(ValidationError::Nick));
        assert_eq!(Nick::parse(""), Err(ValidationError::Nick));
        assert_eq!(Nick::parse("   "), Err(ValidationError::Nick));
        assert_eq!(Nick::parse("a\u{7}b"), Err(ValidationError::Nick));
        // Invisible or reordering format characters would let one nick pass for another.
        for spoof in ["bo\u{200B}b", "bob\u{200D}", "\u{202E}bob", "b\u{AD}ob", "\u{FEFF}bob", "bob\u{2066}"]
        {
            assert_eq!(Nick::parse(spoof), Err(ValidationError::Nick), "{spoof:?}");
        }
        assert_eq!(Nick::parse("Zoë 🦀").unwrap().as_str(), "Zoë 🦀");
        assert!(Nick::parse("ann \u{2764}\u{FE0F}").is_ok(), "emoji presentation selector");
        assert_eq!(Nick::parse("Bob").unwrap().key(), Nick::parse("bob").unwrap().key());
        // Blank look-alikes: a nick that shows as nothing, or as another with a space.
        for blank in ["\u{3164}", "bob\u{3164}", "\u{2800}", "a\u{115F}b", "\u{FFA0}x", "x\u{034F}"] {
            assert_eq!(Nick::parse(blank), Err(ValidationError::Nick), "{blank:?}");
        }
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn look_alike_nicks_share_a_key() {
        let key = |s: &str| Nick::parse(s).unwrap().key();
        assert_eq!(key("\u{430}lice"), key("alice"), "Cyrillic а");
        assert_eq!(key("ＢＯＢ"), key("bob"), "full width");
        assert_eq!(key("STRASSE"), key("straße"), "case folding");
        assert_eq!(key("pаypаl"), key("paypal"), "Cyrillic а twice");
        assert_eq!(key("AIice"), key("alice"), "capital I for l");
        assert_ne!(key("alice"), key("alicia"));
    }

    #[test]
    fn room_validation() {
        assert!(RoomName::parse("general_chat-2").is_ok());
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "General", "with space", "ünï", "a/b", &"a".repeat(65)] {
            assert_eq!(RoomName::parse(bad), Err(ValidationError::Room), "{bad:?}");
        }
    }

    #[test]
    fn text_validation_counts_characters_not_bytes() {
        assert!(MessageText::parse("é".repeat(4000), 4000).is_ok());
        assert_eq!(MessageText::parse("é".repeat(4001), 4000), Err(ValidationError::TooLong { max: 4000 }));
        assert_eq!(MessageText::parse(" \n ".into(), 4000), Err(ValidationError::EmptyText));
        assert_eq!(MessageText::parse(" x ".into(), 4000).unwrap().into_string(), " x ");
    }

    #[test]
    fn client_id_validation() {
        assert!(check_client_id("abc-123").is_ok());
        assert!(check_client_id("").is_err());
        assert!(check_client_id("has space").is_err());
        assert!(check_client_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn segments_find_http_links_only() {
        assert_eq!(
            segments("see https://example.org/a?b=1 and javascript:alert(1)"),
            vec![
                Segment::Text("see "),
                Segment::Link("https://example.org/a?b=1"),
                Segment::Text(" and javascript:alert(1)"),
            ]
        );
        assert_eq!(segments("<img src=x>"), vec![Segment::Text("<img src=x>")]);
    }
}
