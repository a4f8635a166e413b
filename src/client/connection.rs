//! The browser's WebSocket: hello, join, live events; on loss, reconnect with backoff and
//! resume every joined room from its last seq; sends typed meanwhile wait in the outbox
//! and go out again with the same `client_id`, so the server stores each once.

use super::storage;
use crate::protocol::{ClientMsg, JOIN_RECENT, Seq, ServerMsg};
use crate::ui::{
    chat::{Chat, Command},
    state::{ConnStatus, Followup, Pending},
};
use futures::{FutureExt, SinkExt, StreamExt, channel::mpsc::UnboundedReceiver, select, stream::SplitSink};
use gloo_net::websocket::{Message, futures::WebSocket};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use std::collections::HashMap;

/// First retry delay; doubles per failed attempt up to `MAX_BACKOFF_MS`.
const BASE_BACKOFF_MS: f64 = 500.0;
const MAX_BACKOFF_MS: f64 = 10_000.0;

enum Ended {
    /// The connection was lost (or never opened).
    Lost { was_online: bool },
    /// The nick was refused: wait for a new one.
    Rehello,
    /// The page is going away.
    Shutdown,
}

pub async fn run(chat: Chat, mut commands: UnboundedReceiver<Command>) {
    let mut attempt: u32 = 0;
    loop {
        while chat.model.with_untracked(|m| m.nick.is_none()) {
            match commands.next().await {
                Some(cmd) => {
                    apply_local(chat, &cmd);
                }
                None => return,
            }
        }
        chat.model.update(|m| m.status = ConnStatus::Connecting);
        match connect(chat, &mut commands).await {
            Ended::Shutdown => return,
            Ended::Rehello => {
                attempt = 0;
                chat.model.update(|m| m.status = ConnStatus::Idle);
                continue;
            }
            Ended::Lost { was_online } => {
                if was_online {
                    attempt = 0;
                }
            }
        }
        let delay = backoff(attempt);
        attempt = attempt.saturating_add(1);
        chat.model.update(|m| m.mark_offline(delay));
        let mut sleep = TimeoutFuture::new(delay).fuse();
        loop {
            select! {
                _ = sleep => break,
                cmd = commands.next() => match cmd {
                    Some(cmd) => { apply_local(chat, &cmd); }
                    None => return,
                },
            }
        }
    }
}

fn backoff(attempt: u32) -> u32 {
    let exp = BASE_BACKOFF_MS * 2f64.powi(attempt.min(10) as i32);
    let jitter = 0.8 + 0.4 * js_sys::Math::random();
    (exp.min(MAX_BACKOFF_MS) * jitter) as u32
}

fn ws_url() -> String {
    let location = web_sys::window().map(|w| w.location());
    let host = location.as_ref().and_then(|l| l.host().ok()).unwrap_or_default();
    let secure = location.as_ref().and_then(|l| l.protocol().ok()).is_some_and(|p| p == "https:");
    format!("{}://{host}/ws", if secure { "wss" } else { "ws" })
}

fn new_client_id() -> String {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.random_uuid())
        // Integers, not floats: formatting an f64 would add 14 KB to the bundle.
        .unwrap_or_else(|| {
            format!("{}-{}", js_sys::Date::now() as u64, (js_sys::Math::random() * 1e15) as u64)
        })
}

/// Applies a command to the local model; returns the frames it calls for when online.
fn apply_local(chat: Chat, cmd: &Command) -> Vec<ClientMsg> {
    match cmd {
        Command::Hello(nick) => {
            storage::set(storage::NICK, nick);
            chat.model.update(|m| {
                m.nick = Some(nick.clone());
                m.nick_rejected = None;
            });
            Vec::new()
        }
        Command::Open(room) => {
            let known = chat.model.with_untracked(|m| m.rooms.get(room).map(|v| (v.live, v.last_seq())));
            chat.model.update(|m| m.open(room));
            chat.model.with_untracked(|m| storage::save_rooms(m.rooms.keys()));
            match known {
                Some((true, _)) => Vec::new(),
                Some((false, since)) => vec![ClientMsg::Join { room: room.clone(), since }],
                None => vec![ClientMsg::Join { room: room.clone(), since: None }],
            }
        }
        Command::Leave(room) => {
            chat.model.update(|m| m.close(room));
            chat.model.with_untracked(|m| storage::save_rooms(m.rooms.keys()));
            vec![ClientMsg::Leave { room: room.clone() }]
        }
        Command::Send { room, text } => {
            let pending = Pending { client_id: new_client_id(), room: room.clone(), text: text.clone() };
            let frame = ClientMsg::Send {
                room: room.clone(),
                text: text.clone(),
                client_id: pending.client_id.clone(),
            };
            chat.model.update(|m| m.outbox.push(pending));
            vec![frame]
        }
        Command::Typing(room) => vec![ClientMsg::Typing { room: room.clone() }],
        Command::LoadOlder(room) => chat
            .model
            .with_untracked(|m| m.rooms.get(room).and_then(|v| v.first_seq()))
            .map(|before| ClientMsg::History { room: room.clone(), before, limit: JOIN_RECENT as u32 })
            .into_iter()
            .collect(),
        Command::ListRooms => vec![ClientMsg::ListRooms { cursor: None, limit: None }],
    }
}

type Writer = SplitSink<WebSocket, Message>;

async fn write(sink: &mut Writer, msg: &ClientMsg) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => sink.send(Message::Text(text)).await.is_ok(),
        Err(_) => true,
    }
}

/// Everything a fresh `welcome` calls for: rejoin rooms from their last seq and refresh
/// the directory. The outbox goes out per room once its replay is complete (see
/// `ReplayTracker`).
fn resume_frames(chat: Chat) -> Vec<ClientMsg> {
    chat.model.with_untracked(|m| {
        let mut frames: Vec<ClientMsg> =
            m.resume_points().into_iter().map(|(room, since)| ClientMsg::Join { room, since }).collect();
        frames.push(ClientMsg::ListRooms { cursor: None, limit: None });
        frames
    })
}

/// The outbox of one room, as `send` frames with their original `client_id`s.
fn outbox_frames(chat: Chat, room: &str) -> Vec<ClientMsg> {
    chat.model.with_untracked(|m| {
        m.outbox
            .iter()
            .filter(|p| p.room == room)
            .map(|p| ClientMsg::Send {
                room: p.room.clone(),
                text: p.text.clone(),
                client_id: p.client_id.clone(),
            })
            .collect()
    })
}

/// Holds back a room's outbox until its join replay is complete. The replay may contain a
/// message of ours that was stored but whose echo we never saw (the connection dropped);
/// applying it clears that outbox entry, so the resend cannot store it twice, even when the
/// server restarted and forgot our session's `client_id`s.
#[derive(Default)]
struct ReplayTracker {
    /// Room → the head announced in `joined`; the replay ends at that seq.
    pending: HashMap<String, Seq>,
}

impl ReplayTracker {
    /// Call after applying `msg`; returns a room whose replay just completed.
    fn observe(&mut self, chat: Chat, room: Option<(String, Option<Seq>)>) -> Option<String> {
        let (room, joined_head) = room?;
        if let Some(head) = joined_head {
            self.pending.insert(room.clone(), head);
        }
        let head = *self.pending.get(&room)?;
        let held = chat.model.with_untracked(|m| m.rooms.get(&room).and_then(|v| v.last_seq()).unwrap_or(0));
        if held >= head {
            self.pending.remove(&room);
            Some(room)
        } else {
            None
        }
    }
}

/// The room a frame is about, and the head if it is a `joined`.
fn replay_key(msg: &ServerMsg) -> Option<(String, Option<Seq>)> {
    match msg {
        ServerMsg::Joined { room, head, .. } => Some((room.clone(), Some(*head))),
        ServerMsg::Message(m) => Some((m.room.clone(), None)),
        _ => None,
    }
}

/// One connection, from open to loss.
async fn connect(chat: Chat, commands: &mut UnboundedReceiver<Command>) -> Ended {
    let Ok(socket) = WebSocket::open(&ws_url()) else {
        return Ended::Lost { was_online: false };
    };
    let (mut sink, stream) = socket.split();
    let mut stream = stream.fuse();
    let (nick, session) =
        chat.model.with_untracked(|m| (m.nick.clone().unwrap_or_default(), m.session.clone()));
    if !write(&mut sink, &ClientMsg::Hello { nick, session }).await {
        return Ended::Lost { was_online: false };
    }
    let mut online = false;
    let mut replays = ReplayTracker::default();
    loop {
        select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Bytes(_))) => continue,
                    Some(Err(_)) | None => return Ended::Lost { was_online: online },
                };
                let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) else { continue };
                let now = js_sys::Date::now();
                let key = replay_key(&msg);
                let followup = chat.model.try_update(|m| m.apply(msg, now)).unwrap_or(Followup::None);
                if let Some(room) = replays.observe(chat, key) {
                    for frame in outbox_frames(chat, &room) {
                        if !write(&mut sink, &frame).await {
                            return Ended::Lost { was_online: true };
                        }
                    }
                }
                match followup {
                    Followup::None => {}
                    Followup::Resume => {
                        online = true;
                        chat.model.with_untracked(|m| {
                            if let (Some(nick), Some(session)) = (&m.nick, &m.session) {
                                storage::set(storage::NICK, nick);
                                storage::set(storage::SESSION, session);
                            }
                        });
                        for frame in resume_frames(chat) {
                            if !write(&mut sink, &frame).await {
                                return Ended::Lost { was_online: true };
                            }
                        }
                    }
                    Followup::Rehello => {
                        storage::remove(storage::SESSION);
                        return Ended::Rehello;
                    }
                }
            }
            cmd = commands.next() => {
                let Some(cmd) = cmd else { return Ended::Shutdown };
                let frames = apply_local(chat, &cmd);
                if online {
                    for frame in frames {
                        if !write(&mut sink, &frame).await {
                            return Ended::Lost { was_online: true };
                        }
                    }
                }
            }
        }
    }
}
