//! The browser's WebSocket, driving `ui::sync`: it opens the socket, says hello, hands
//! every frame, command and due timer to the [`Syncer`] and carries out what it answers
//! (write a frame, set a timer). On loss it reconnects with backoff and jitter. The
//! protocol's rules (resume, replay, gaps, outbox pacing, errors) are all in `ui::sync`.

use super::storage;
use crate::protocol::{ClientMsg, Request};
use crate::ui::{
    chat::{Chat, Command},
    state::{ChatModel, ConnStatus},
    sync::{Action, Syncer, Timer},
};
use futures::{
    FutureExt, SinkExt, StreamExt,
    channel::mpsc::UnboundedReceiver,
    future::{Fuse, FusedFuture},
    select,
    stream::SplitSink,
};
use gloo_net::websocket::{Message, futures::WebSocket};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;

/// First retry delay; doubles per failed attempt up to `MAX_BACKOFF_MS`.
const BASE_BACKOFF_MS: f64 = 500.0;
const MAX_BACKOFF_MS: f64 = 10_000.0;
/// The close code of a revoked sign-in (sign-out elsewhere, a deactivated account).
const SIGNED_OUT: u16 = 4001;

enum Ended {
    /// The connection was lost (or never opened).
    Lost { was_online: bool },
    /// The nick was refused: wait for a new one.
    Rehello,
    /// The page is going away.
    Shutdown,
    /// The server ended this sign-in (4001): no reconnecting.
    SignedOut,
}

pub async fn run(chat: Chat, mut commands: UnboundedReceiver<Command>) {
    let mut syncer = Syncer::default();
    let mut attempt: u32 = 0;
    loop {
        while chat.model.with_untracked(|m| m.nick.is_none()) {
            match commands.next().await {
                Some(cmd) => {
                    command(chat, &mut syncer, cmd);
                }
                None => return,
            }
        }
        chat.model.update(|m| m.status = ConnStatus::Connecting);
        let ended = connect(chat, &mut syncer, &mut commands).await;
        // A connection that got as far as `welcome` starts the backoff over.
        if let Ended::Lost { was_online: true } | Ended::Rehello = ended {
            attempt = 0;
        }
        let delay = backoff(attempt);
        chat.model.update(|m| syncer.disconnected(m, delay));
        match ended {
            Ended::Shutdown => return,
            // The page asks for a guest name again; a new one connects as a guest.
            Ended::SignedOut => {
                chat.model.update(|m| m.status = ConnStatus::Idle);
                continue;
            }
            Ended::Rehello => {
                chat.model.update(|m| m.status = ConnStatus::Idle);
                continue;
            }
            Ended::Lost { .. } => attempt = attempt.saturating_add(1),
        }
        let mut sleep = TimeoutFuture::new(delay).fuse();
        loop {
            select! {
                _ = sleep => break,
                cmd = commands.next() => match cmd {
                    // Offline, commands only change the model (the outbox fills up).
                    Some(cmd) => { command(chat, &mut syncer, cmd); }
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

/// The page's clock in whole milliseconds: the syncer's time.
fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// A step of the syncer over the model. Boxed: one copy of the signal's update code
/// serves every step, instead of one each.
type Step<'a> = Box<dyn FnOnce(&mut Syncer, &mut ChatModel) -> Vec<Action> + 'a>;

/// Runs `f` on the model and the syncer together, returning its actions.
fn with_model(chat: Chat, syncer: &mut Syncer, f: Step<'_>) -> Vec<Action> {
    chat.model.try_update(|m| f(syncer, m)).unwrap_or_default()
}

/// Applies a command from the UI; returns what it calls for (nothing while offline).
fn command(chat: Chat, syncer: &mut Syncer, cmd: Command) -> Vec<Action> {
    match cmd {
        Command::Hello(nick) => {
            storage::set(storage::NICK, &nick);
            chat.model.update(|m| {
                m.nick = Some(nick);
                m.nick_rejected = None;
            });
            Vec::new()
        }
        Command::Open(room) => {
            let actions = with_model(chat, syncer, Box::new(|s, m| s.open(m, &room)));
            chat.model.with_untracked(|m| storage::save_rooms(m.rooms.keys()));
            actions
        }
        Command::Leave(room) => {
            let actions = with_model(chat, syncer, Box::new(|s, m| s.leave(m, &room)));
            chat.model.with_untracked(|m| storage::save_rooms(m.rooms.keys()));
            actions
        }
        Command::Send { room, text, reply_to } => {
            let (client_id, now) = (new_client_id(), now());
            with_model(chat, syncer, Box::new(move |s, m| s.reply(m, &room, text, client_id, reply_to, now)))
        }
        Command::Edit { room, target, text } => {
            let msg = ClientMsg::Edit { room: room.clone(), target, text, client_id: new_client_id() };
            with_model(chat, syncer, Box::new(move |s, m| s.change(m, &room, msg)))
        }
        Command::Delete { room, target } => {
            let msg = ClientMsg::Delete { room: room.clone(), target, client_id: new_client_id() };
            with_model(chat, syncer, Box::new(move |s, m| s.change(m, &room, msg)))
        }
        Command::React { room, target, emoji, on } => {
            let msg = ClientMsg::React { room: room.clone(), target, emoji, on };
            with_model(chat, syncer, Box::new(move |s, m| s.change(m, &room, msg)))
        }
        Command::Read { room, seq } => with_model(chat, syncer, Box::new(move |s, m| s.read(m, &room, seq))),
        Command::Typing(room) => chat.model.with_untracked(|m| syncer.typing(m, &room)),
        Command::LoadOlder(room) => with_model(chat, syncer, Box::new(|s, m| s.load_older(m, &room))),
        Command::ListRooms => syncer.list_rooms(),
    }
}

type Writer = SplitSink<WebSocket, Message>;

/// The syncer's timers on this connection: each is due at a time (ms); one browser
/// timeout, for the earliest, wakes the connection.
struct Timers {
    due: Vec<(u64, Timer)>,
    alarm: Fuse<TimeoutFuture>,
    /// What `alarm` is set for.
    armed_for: Option<u64>,
}

impl Timers {
    fn new() -> Self {
        Timers { due: Vec::new(), alarm: Fuse::terminated(), armed_for: None }
    }

    fn add(&mut self, at: u64, timer: Timer) {
        self.due.push((at, timer));
    }

    /// The timers due by `now`, in the order they were set.
    fn take_due(&mut self, now: u64) -> Vec<Timer> {
        self.armed_for = None;
        let (ready, later) = std::mem::take(&mut self.due).into_iter().partition(|(at, _)| *at <= now);
        self.due = later;
        ready.into_iter().map(|(_, timer)| timer).collect()
    }

    /// Sets the browser timeout for the earliest timer, if it is not set for it already.
    fn arm(&mut self, now: u64) {
        let earliest = self.due.iter().map(|(at, _)| *at).min();
        if earliest.is_some() && (earliest != self.armed_for || self.alarm.is_terminated()) {
            let wait = earliest.unwrap_or(now).saturating_sub(now);
            self.alarm = TimeoutFuture::new(u32::try_from(wait).unwrap_or(u32::MAX)).fuse();
            self.armed_for = earliest;
        }
    }
}

async fn write(sink: &mut Writer, req: &Request) -> bool {
    match crate::ui::wire::encode(req) {
        Some(text) => sink.send(Message::Text(text)).await.is_ok(),
        None => true,
    }
}

/// Carries out the syncer's actions; `Err` ends the connection.
async fn perform(
    chat: Chat,
    sink: &mut Writer,
    timers: &mut Timers,
    actions: Vec<Action>,
) -> Result<(), Ended> {
    for action in actions {
        match action {
            Action::Send(req) => {
                if !write(sink, &req).await {
                    return Err(Ended::Lost { was_online: true });
                }
            }
            Action::After { ms, timer } => timers.add(now() + ms, timer),
            Action::Welcomed => chat.model.with_untracked(|m| {
                if let (Some(nick), Some(session)) = (&m.nick, &m.session) {
                    storage::set(storage::NICK, nick);
                    storage::set(storage::SESSION, session);
                }
            }),
            Action::Rehello => {
                storage::remove(storage::SESSION);
                return Err(Ended::Rehello);
            }
        }
    }
    Ok(())
}

/// One connection, from open to loss. Its timers end with it.
async fn connect(chat: Chat, syncer: &mut Syncer, commands: &mut UnboundedReceiver<Command>) -> Ended {
    let Ok(socket) = WebSocket::open(&ws_url()) else {
        return Ended::Lost { was_online: false };
    };
    let (mut sink, stream) = socket.split();
    let mut stream = stream.fuse();
    let hello = chat.model.with_untracked(|m| syncer.hello(m));
    if !write(&mut sink, &hello).await {
        return Ended::Lost { was_online: false };
    }
    let mut timers = Timers::new();
    loop {
        let actions = select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Bytes(_))) => continue,
                    Some(Err(gloo_net::websocket::WebSocketError::ConnectionClose(close))) if close.code == SIGNED_OUT => {
                        chat.model.update(|m| m.sign_out(&close.reason));
                        return Ended::SignedOut;
                    }
                    Some(Err(_)) | None => return Ended::Lost { was_online: syncer.online() },
                };
                let Some(msg) = crate::ui::wire::decode(&text) else { continue };
                let now = now();
                // Only a hidden tab notifies: the copy is made only then.
                let notify = match &msg {
                    crate::protocol::ServerMsg::Message(m) if super::notify::hidden() => Some(m.clone()),
                    _ => None,
                };
                let actions = with_model(chat, syncer, Box::new(move |s, m| s.on_frame(m, msg, now)));
                if let Some(m) = notify {
                    super::notify::message(chat, &m);
                }
                actions
            }
            () = &mut timers.alarm => {
                let now = now();
                let due = timers.take_due(now);
                with_model(chat, syncer, Box::new(move |s, m| {
                    due.into_iter().flat_map(|timer| s.on_timer(m, timer, now)).collect()
                }))
            }
            cmd = commands.next() => match cmd {
                Some(cmd) => command(chat, syncer, cmd),
                None => return Ended::Shutdown,
            },
        };
        if let Err(ended) = perform(chat, &mut sink, &mut timers, actions).await {
            return ended;
        }
        timers.arm(now());
    }
}
