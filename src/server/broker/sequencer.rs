//! Per-room delivery in seq order when several nodes write one room.
//!
//! Stored events reach a node from its own committer and from the bus, in any order and
//! possibly twice or never (Redis pub/sub drops messages on a reconnect or a full
//! buffer). The sequencer is the one place they are delivered from: a duplicate
//! (seq ≤ delivered) is dropped, a gap (seq > delivered + 1) is filled from the store
//! before anything later goes out, and the head check (every second, and after every bus
//! reconnect) hands it the store's heads so a lost tail is filled too. One task does it
//! for every room: a fill is rare and short, and a single task needs no per-room locks.

use crate::protocol::{RoomEvent, Seq};
use crate::server::{
    metrics::Metrics,
    room::{Room, encode},
    store::MessageStore,
};
use axum::extract::ws::Utf8Bytes;
use std::sync::{Arc, atomic::Ordering::Relaxed};
use tokio::sync::mpsc;

/// Events read per store call while filling a gap.
const FILL_PAGE: Seq = 500;

pub enum Work {
    /// A stored event, from this node's committer or from the bus.
    Event { room: Arc<Room>, seq: Seq, ts: i64, frame: Utf8Bytes },
    /// The store holds `room` up to `head` (the head check).
    Head { room: Arc<Room>, head: Seq },
}

pub async fn run(mut rx: mpsc::Receiver<Work>, store: Arc<dyn MessageStore>, metrics: Arc<Metrics>) {
    while let Some(work) = rx.recv().await {
        match work {
            Work::Event { room, seq, ts, frame } => {
                let delivered = room.head();
                if seq <= delivered {
                    metrics.bus_duplicates.fetch_add(1, Relaxed);
                    continue;
                }
                if seq > delivered + 1 {
                    metrics.gap_fills.fetch_add(1, Relaxed);
                    if !fill(&room, seq - 1, &store, &metrics).await {
                        // The store is unreachable: nothing later goes out before the gap
                        // is filled; the head check tries again.
                        continue;
                    }
                }
                if room.head() + 1 == seq {
                    room.deliver_frame(seq, ts, frame);
                }
            }
            Work::Head { room, head } => {
                if head > room.head()
                    && !room.advance_if_empty(head)
                    && fill(&room, head, &store, &metrics).await
                {
                    metrics.head_repairs.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Delivers what the store holds of `room` after its delivered head, up to `upto`.
/// False when the store could not be read.
async fn fill(room: &Arc<Room>, upto: Seq, store: &Arc<dyn MessageStore>, metrics: &Metrics) -> bool {
    loop {
        let from = room.head();
        if from >= upto {
            return true;
        }
        // Seqs are dense, so this range holds exactly its length in events: the page is
        // the oldest of the gap, never its newest.
        let to = upto.min(from + FILL_PAGE);
        let events = match store.events_after(&room.name, from, to, FILL_PAGE as usize).await {
            Ok(page) => page.events,
            Err(err) => {
                tracing::warn!(%err, room = %room.name, from, to, "filling a gap failed");
                return false;
            }
        };
        if events.is_empty() {
            // The store does not hold them (yet): nothing to do but wait.
            return false;
        }
        for event in events {
            let seq = event.seq();
            if seq != room.head() + 1 {
                continue;
            }
            let ts = match &event {
                RoomEvent::Message(m) => m.ts,
                _ => 0,
            };
            metrics.gap_events.fetch_add(1, Relaxed);
            room.deliver_frame(seq, ts, encode(&event.into_server_msg()));
        }
        if room.head() == from {
            // Nothing in the page continued the room: never spin on it.
            return false;
        }
    }
}
