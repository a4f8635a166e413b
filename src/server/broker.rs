//! Fan-out of stored messages to subscribers: the seam for running several nodes.
//!
//! With one process, [`LocalBroker`] delivers straight to the room. A multi-node engine
//! (Redis pub/sub, PostgreSQL NOTIFY) implements the same trait by publishing the stored
//! message to the other nodes, whose subscriber task calls `Room::deliver` there.

use super::room::Room;
use crate::protocol::Seq;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

pub trait Broker: Send + Sync + 'static {
    /// Delivers a stored message (already encoded as its `message` frame) to every
    /// subscriber of its room.
    fn publish(&self, room: &Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes);
}

/// Single-process fan-out.
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn publish(&self, room: &Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes) {
        room.deliver_frame(seq, ts, frame);
    }
}
