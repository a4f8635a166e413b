//! Fan-out of stored events and of room notices to subscribers: the seam for running
//! several nodes.
//!
//! With one process, [`LocalBroker`] delivers straight to the room. With several nodes,
//! [`redis::RedisBroker`] publishes each stored event to the room's Redis channel, and
//! every node (the publisher included) delivers it in seq order through its sequencer,
//! filling any gap from the store. Notices that are not stored (typing, a topic change,
//! a kick) cross nodes the same way, without the order guarantee.

pub mod redis;
mod sequencer;

use super::{outbound::ConnHandle, room::Room};
use crate::protocol::{Nick, RoomName, Seq};
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

pub trait Broker: Send + Sync + 'static {
    /// Delivers a stored event (already encoded as its frame) to every subscriber of its
    /// room, on every node.
    fn publish(&self, room: &Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes);

    /// Someone here is typing in `room`: everyone else in it, on every node, hears it.
    fn typing(&self, room: &Arc<Room>, nick: &Nick) {
        room.typing(nick);
    }

    /// An event that is not stored (a topic change, a standing change) for every member
    /// of `room`, on every node.
    fn notice(&self, room: &Arc<Room>, frame: Utf8Bytes) {
        room.broadcast_frame(frame);
    }

    /// `user` was removed from `room` (kicked or banned) here: other nodes remove their
    /// connections too. Here the caller already did.
    fn eject(&self, _room: &RoomName, _user: &str, _by: &str, _banned: bool) {}

    /// `room` was created, or its settings or standings changed, in the store: other
    /// nodes read it again.
    fn room_changed(&self, _room: &RoomName) {}

    /// This node's id among the nodes, when there are several.
    fn node(&self) -> Option<&str> {
        None
    }

    /// Ms between the newest bus event's publication and its arrival here.
    fn lag_ms(&self) -> Option<u64> {
        None
    }

    /// Whether several nodes share the store (a room unknown here may exist elsewhere).
    fn is_shared(&self) -> bool {
        false
    }
}

/// Single-process fan-out.
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn publish(&self, room: &Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes) {
        room.deliver_frame(seq, ts, frame);
    }
}

/// Removes connections from a room: their queued room traffic is dropped and each is
/// told why.
pub fn eject(room: &Room, conns: Vec<Arc<ConnHandle>>, by: &str, banned: bool) {
    use super::{outbound::Outbound, room::encode};
    let frame = encode(&crate::protocol::ServerMsg::Kicked {
        room: room.name.as_str().to_owned(),
        by: by.to_owned(),
        banned,
    });
    for conn in conns {
        conn.push(Outbound::EndRoom { room: room.key.clone() });
        conn.push(Outbound::Frame(frame.clone()));
    }
}
