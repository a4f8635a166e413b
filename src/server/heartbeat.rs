//! The heartbeat: one task that pings every connection, cuts the silent and the stuck
//! ones, and closes them all at shutdown.
//!
//! A connection keeps no timer of its own: an idle one waits on nothing but its socket
//! and its queue (see `connection`), which is most of what makes it cheap to hold. The
//! heartbeat visits the connections a slice at a time, so each is visited once per ping
//! interval and the pings of many connections are spread over it rather than sent at
//! once.

use super::{
    hub::Hub,
    outbound::{BUSY, CloseReason},
};
use std::sync::Arc;
use tokio::time::MissedTickBehavior;

/// The ping interval is divided into this many ticks, each visiting one slice.
const SLICES: u64 = 8;

/// What the heartbeat does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently: ask for a ping, which the client's answer proves it is there.
    Ping,
    /// Nothing heard for a whole idle timeout (not even the answer to a ping): closed 4000.
    Idle,
    /// The socket has taken nothing for a whole idle timeout: a client that stopped
    /// reading, in a room too quiet to push it over its budget. Closed 4008.
    Stuck,
}

/// The verdict at `now` for a connection last heard at `heard` (or [`BUSY`] handling a
/// frame) whose socket has refused writes since `stuck` (all in hub milliseconds).
///
/// A stuck socket is judged by how long it has been stuck, not by what was heard: a client
/// that stopped reading cannot see the pings it would answer, and it is a slow consumer
/// (4008, with a slow consumer's patience for what the socket holds), not a silent one.
pub fn verdict(now: u64, heard: u64, stuck: Option<u64>, idle_timeout: u64) -> Verdict {
    if let Some(since) = stuck {
        return if now.saturating_sub(since) > idle_timeout { Verdict::Stuck } else { Verdict::Ping };
    }
    if heard != BUSY && now.saturating_sub(heard) > idle_timeout {
        return Verdict::Idle;
    }
    Verdict::Ping
}

/// Runs until shutdown, then closes every connection with 1001.
pub async fn run(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(hub.config.ping_interval() / SLICES as u32);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slice = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.shutdown.cancelled() => break,
        }
        visit(&hub, slice, SLICES);
        slice = (slice + 1) % SLICES;
    }
    for conn in hub.live_conns(0, 1) {
        conn.close(CloseReason::GOING_AWAY);
    }
}

/// Visits one slice of the connections.
pub fn visit(hub: &Hub, slice: u64, slices: u64) {
    let now = hub.now_ms();
    let idle_timeout = hub.config.idle_timeout().as_millis() as u64;
    for conn in hub.live_conns(slice, slices) {
        match verdict(now, conn.heard_at(), conn.stuck_since(), idle_timeout) {
            Verdict::Ping => conn.ask_ping(),
            Verdict::Idle => conn.close(CloseReason::IDLE),
            Verdict::Stuck => conn.close(CloseReason::SLOW_CONSUMER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_heard_within_the_timeout_is_pinged() {
        assert_eq!(verdict(10_000, 8_000, None, 2_000), Verdict::Ping);
        assert_eq!(verdict(10_000, 8_000, None, 1_999), Verdict::Idle);
    }

    #[test]
    fn a_client_being_served_is_never_idle() {
        assert_eq!(verdict(1_000_000, BUSY, None, 2_000), Verdict::Ping);
    }

    /// A socket stuck for the whole timeout is cut even though the client still talks:
    /// it is the reading that stopped.
    #[test]
    fn a_socket_that_takes_nothing_for_the_timeout_is_stuck() {
        assert_eq!(verdict(10_000, 9_999, Some(7_000), 2_000), Verdict::Stuck);
        assert_eq!(verdict(10_000, 9_999, Some(8_000), 2_000), Verdict::Ping);
        assert_eq!(verdict(10_000, BUSY, Some(1_000), 2_000), Verdict::Stuck);
    }

    /// A client whose socket is stuck has not seen the pings: unheard, it is still judged
    /// by the stuck socket.
    #[test]
    fn a_stuck_client_is_not_judged_silent() {
        assert_eq!(verdict(10_000, 1_000, Some(9_000), 2_000), Verdict::Ping);
        assert_eq!(verdict(10_000, 1_000, Some(7_000), 2_000), Verdict::Stuck);
    }

    /// A clock read before a connection registered its times must not wrap around.
    #[test]
    fn times_after_now_are_not_overdue() {
        assert_eq!(verdict(1_000, 1_005, Some(1_005), 2_000), Verdict::Ping);
    }
}
