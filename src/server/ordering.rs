//! Per-room ordering on a connection's way out: a join's replay and the live stream meet
//! here, and each stored message leaves exactly once, in seq order.
//!
//! A join subscribes first and replays from the store after, so live messages can arrive
//! before the replay that precedes them. [`Streams`] holds a joining room's live traffic
//! until its replay arrives, then drops whatever the replay already covered.
//!
//! Held frames stay counted against the connection's byte budget until they are written
//! or dropped: [`Streams::order`] says how many bytes it dropped, the writer gives back
//! the bytes it wrote.

use super::outbound::Outbound;
use crate::protocol::Seq;
use axum::extract::ws::Utf8Bytes;
use std::{collections::VecDeque, sync::Arc};

/// Per-room state of the writer: replaying a join, or streaming live.
enum Stream {
    /// Between `BeginJoin` and `Replay`: live traffic waits here (events have no seq).
    Joining(Vec<(Option<Seq>, Utf8Bytes)>),
    /// Sent everything up to `last`; drop anything not newer.
    Live { last: Seq },
}

/// The ordering state of every room of one connection.
#[derive(Default)]
pub struct Streams {
    rooms: Rooms,
}

/// A connection's rooms and their streams: a list, not a map. Its rooms are few and
/// bounded (`--max-rooms-per-conn`), so a scan costs no more than hashing the name, and one
/// room takes a quarter of the smallest map's table. Grown one room at a time: an idle
/// connection in one room keeps one entry.
#[derive(Default)]
struct Rooms(Vec<(Arc<str>, Stream)>);

impl Rooms {
    fn get(&self, room: &str) -> Option<&Stream> {
        self.0.iter().find(|(name, _)| **name == *room).map(|(_, stream)| stream)
    }

    fn get_mut(&mut self, room: &str) -> Option<&mut Stream> {
        self.0.iter_mut().find(|(name, _)| **name == *room).map(|(_, stream)| stream)
    }

    fn insert(&mut self, room: Arc<str>, stream: Stream) {
        match self.get_mut(&room) {
            Some(existing) => *existing = stream,
            None => {
                self.0.reserve_exact(1);
                self.0.push((room, stream));
            }
        }
    }

    fn remove(&mut self, room: &str) -> Option<Stream> {
        let at = self.0.iter().position(|(name, _)| **name == *room)?;
        Some(self.0.swap_remove(at).1)
    }
}

impl Streams {
    /// Puts one queued item in order, appending what may be written now to `out`.
    /// Returns the bytes it dropped (duplicates, traffic of rooms left).
    pub fn order(&mut self, item: Outbound, out: &mut VecDeque<Utf8Bytes>) -> usize {
        match item {
            Outbound::Frame(frame) => out.push_back(frame),
            Outbound::BeginJoin { room } => {
                // A join of a room already joined replays again: what it held so far is
                // covered by the new replay or re-held behind it.
                let dropped = self.held_bytes(&room);
                self.rooms.insert(room, Stream::Joining(Vec::new()));
                return dropped;
            }
            Outbound::Room { room, seq, frame } => match self.rooms.get_mut(&room) {
                Some(Stream::Joining(held)) => held.push((Some(seq), frame)),
                Some(Stream::Live { last }) if seq > *last => {
                    *last = seq;
                    out.push_back(frame);
                }
                _ => return frame.len(),
            },
            Outbound::RoomEvent { room, frame } => match self.rooms.get_mut(&room) {
                Some(Stream::Joining(held)) => held.push((None, frame)),
                Some(Stream::Live { .. }) => out.push_back(frame),
                None => return frame.len(),
            },
            Outbound::Replay { room, frames, upto } => {
                out.extend(frames);
                let mut last = upto;
                let mut dropped = 0;
                if let Some(Stream::Joining(held)) = self.rooms.remove(&room) {
                    for (seq, frame) in held {
                        match seq {
                            None => out.push_back(frame),
                            Some(seq) if seq > last => {
                                last = seq;
                                out.push_back(frame);
                            }
                            Some(_) => dropped += frame.len(),
                        }
                    }
                }
                self.rooms.insert(room, Stream::Live { last });
                return dropped;
            }
            Outbound::EndRoom { room } => {
                let dropped = self.held_bytes(&room);
                self.rooms.remove(&room);
                return dropped;
            }
        }
        0
    }

    fn held_bytes(&self, room: &str) -> usize {
        match self.rooms.get(room) {
            Some(Stream::Joining(held)) => held.iter().map(|(_, f)| f.len()).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Arc<str> {
        Arc::from("r")
    }

    fn live(seq: Seq) -> Outbound {
        Outbound::Room { room: room(), seq, frame: Utf8Bytes::from(format!("m{seq}")) }
    }

    fn texts(out: &VecDeque<Utf8Bytes>) -> Vec<String> {
        out.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn live_traffic_waits_for_the_replay_and_duplicates_are_dropped() {
        let mut s = Streams::default();
        let mut out = VecDeque::new();
        assert_eq!(s.order(Outbound::BeginJoin { room: room() }, &mut out), 0);
        assert_eq!(s.order(live(3), &mut out), 0);
        s.order(Outbound::RoomEvent { room: room(), frame: Utf8Bytes::from_static("typing") }, &mut out);
        assert_eq!(s.order(live(4), &mut out), 0);
        assert!(out.is_empty(), "held until the replay");
        let frames = ["joined", "m2", "m3"].map(Utf8Bytes::from_static).to_vec();
        // The replay covers up to 3: the held m3 is a duplicate (2 bytes dropped).
        assert_eq!(s.order(Outbound::Replay { room: room(), frames, upto: 3 }, &mut out), 2);
        assert_eq!(texts(&out), ["joined", "m2", "m3", "typing", "m4"]);
        // Live from now on; nothing at or below the last seq sent goes out again.
        out.clear();
        assert_eq!(s.order(live(4), &mut out), 2);
        assert_eq!(s.order(live(5), &mut out), 0);
        assert_eq!(texts(&out), ["m5"]);
    }

    #[test]
    fn leaving_drops_what_was_held_and_what_comes_after() {
        let mut s = Streams::default();
        let mut out = VecDeque::new();
        s.order(Outbound::BeginJoin { room: room() }, &mut out);
        s.order(live(1), &mut out);
        s.order(live(2), &mut out);
        assert_eq!(s.order(Outbound::EndRoom { room: room() }, &mut out), 4);
        assert_eq!(s.order(live(3), &mut out), 2);
        assert!(out.is_empty());
    }

    #[test]
    fn replies_go_out_at_once() {
        let mut s = Streams::default();
        let mut out = VecDeque::new();
        s.order(Outbound::BeginJoin { room: room() }, &mut out);
        s.order(Outbound::Frame(Utf8Bytes::from_static("history")), &mut out);
        assert_eq!(texts(&out), ["history"]);
    }
}
