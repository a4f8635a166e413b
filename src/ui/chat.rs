//! The chat handle components share: the model (a signal) and a command channel to the
//! browser's connection. On the server there is no connection; commands go nowhere.

use super::state::ChatModel;
use crate::protocol::Seq;
use futures::channel::mpsc::UnboundedSender;
use leptos::prelude::*;

/// What a component asks the connection to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Connect (or reconnect) as this nick.
    Hello(String),
    /// Join a room if needed and show it.
    Open(String),
    Leave(String),
    Send {
        room: String,
        text: String,
        reply_to: Option<Seq>,
    },
    Edit {
        room: String,
        target: Seq,
        text: String,
    },
    Delete {
        room: String,
        target: Seq,
    },
    React {
        room: String,
        target: Seq,
        emoji: String,
        on: bool,
    },
    /// I have seen the room up to this seq.
    Read {
        room: String,
        seq: Seq,
    },
    Typing(String),
    LoadOlder(String),
    ListRooms,
}

#[derive(Clone, Copy)]
pub struct Chat {
    pub model: RwSignal<ChatModel>,
    /// Bumped every second in the browser, for typing notices that expire.
    pub clock: RwSignal<f64>,
    /// True once the page is hydrated (false during the server render).
    pub mounted: RwSignal<bool>,
    /// The message the composer answers: (room, seq, author).
    pub replying: RwSignal<Option<(String, Seq, String)>>,
    /// The message of mine the composer edits: (room, seq, its text).
    pub editing: RwSignal<Option<(String, Seq, String)>>,
    /// A message to bring into view (a reply's original, a search hit): (room, seq).
    pub seek: RwSignal<Option<(String, Seq)>>,
    commands: StoredValue<Option<UnboundedSender<Command>>>,
    /// Commands given before the connection started (effects run in no set order).
    backlog: StoredValue<Vec<Command>>,
}

impl Default for Chat {
    fn default() -> Self {
        Self::new()
    }
}

impl Chat {
    pub fn new() -> Self {
        Chat {
            model: RwSignal::new(ChatModel::default()),
            clock: RwSignal::new(0.0),
            mounted: RwSignal::new(false),
            replying: RwSignal::new(None),
            editing: RwSignal::new(None),
            seek: RwSignal::new(None),
            commands: StoredValue::new(None),
            backlog: StoredValue::new(Vec::new()),
        }
    }

    /// Connects the handle to a running connection.
    pub fn attach(&self, tx: UnboundedSender<Command>) {
        for cmd in self.backlog.try_update_value(std::mem::take).unwrap_or_default() {
            let _ = tx.unbounded_send(cmd);
        }
        self.commands.set_value(Some(tx));
    }

    pub fn send(&self, cmd: Command) {
        let queued = self.commands.with_value(|tx| match tx {
            Some(tx) => {
                let _ = tx.unbounded_send(cmd);
                None
            }
            None => Some(cmd),
        });
        if let Some(cmd) = queued {
            self.backlog.update_value(|b| b.push(cmd));
        }
    }
}

pub fn use_chat() -> Chat {
    expect_context::<Chat>()
}
