//! The client's copy of the server's message rate limit (`welcome.limits`: a burst of
//! `message_burst`, then `messages_per_sec`), so the outbox goes out at a pace the server
//! accepts instead of all at once and half refused.
//!
//! It is the token bucket in its "theoretical arrival time" form (GCRA), in whole
//! milliseconds: one number to keep, and the time of the next free slot falls out of it.

use crate::protocol::Limits;

/// Server tokens the client leaves unused. Frames can bunch up in transit (a busy relay,
/// a stalled tab), reaching the server faster than they were sent; the reserve absorbs
/// that, so a client that paces itself is not refused.
const RESERVE: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacer {
    /// Milliseconds per message at the sustained rate (rounded up: never faster).
    interval: u64,
    /// How far ahead of now the schedule may run: the burst, less one message.
    tolerance: u64,
    /// When the schedule says the next message is due; a burst is sending before it.
    due: u64,
}

impl Pacer {
    /// A full bucket at `now`, as the server's is for a new connection.
    pub fn new(limits: &Limits, now: u64) -> Self {
        let interval = 1000u64.div_ceil(u64::from(limits.messages_per_sec.max(1)));
        let burst = limits.message_burst.saturating_sub(RESERVE).max(1);
        Pacer { interval, tolerance: interval * u64::from(burst - 1), due: now }
    }

    /// Takes a slot for one message at `now`, or tells when the next one is free.
    pub fn take(&mut self, now: u64) -> Result<(), u64> {
        let free_at = self.due.saturating_sub(self.tolerance);
        if now < free_at {
            return Err(free_at);
        }
        self.due = self.due.max(now) + self.interval;
        Ok(())
    }

    /// The server refused a message and promised it the slot at `slot`: its bucket is
    /// empty until then, and that slot is the refused message's. Nothing else goes out
    /// before the slot after it, and then only at the sustained rate, so no other
    /// message takes a slot promised to a refused one.
    pub fn hold_past(&mut self, slot: u64) {
        self.due = self.due.max(slot + self.interval + self.tolerance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32) -> Limits {
        Limits {
            max_text_chars: 4000,
            max_nick_chars: 32,
            max_room_chars: 64,
            max_frame_bytes: 65536,
            max_rooms_per_connection: 32,
            max_history: 500,
            messages_per_sec: rate,
            message_burst: burst,
        }
    }

    /// The times at which `count` messages, all ready at `start`, may go out.
    fn schedule(pacer: &mut Pacer, start: u64, count: usize) -> Vec<u64> {
        let mut now = start;
        let mut sent = Vec::new();
        while sent.len() < count {
            match pacer.take(now) {
                Ok(()) => sent.push(now),
                Err(at) => now = at,
            }
        }
        sent
    }

    #[test]
    fn a_burst_less_the_reserve_then_the_sustained_rate() {
        let mut pacer = Pacer::new(&limits(20, 10), 1000);
        let times = schedule(&mut pacer, 1000, 11);
        assert_eq!(&times[..8], &[1000; 8], "10 - 2 in reserve at once");
        assert_eq!(&times[8..], &[1050, 1100, 1150], "then one per 50 ms");
    }

    #[test]
    fn an_idle_bucket_fills_up_again() {
        let mut pacer = Pacer::new(&limits(10, 4), 0);
        assert_eq!(schedule(&mut pacer, 0, 3), vec![0, 0, 100]);
        // 300 ms later two slots (the burst less the reserve) are free again.
        assert_eq!(schedule(&mut pacer, 400, 3), vec![400, 400, 500]);
    }

    #[test]
    fn a_refusal_holds_everything_past_the_promised_slot_then_paces() {
        let mut pacer = Pacer::new(&limits(20, 40), 0);
        pacer.hold_past(700);
        pacer.hold_past(650);
        assert_eq!(pacer.take(100), Err(750));
        assert_eq!(schedule(&mut pacer, 750, 3), vec![750, 800, 850]);
    }

    #[test]
    fn a_rate_that_does_not_divide_a_second_rounds_to_slower() {
        let mut pacer = Pacer::new(&limits(3, 1), 0);
        assert_eq!(schedule(&mut pacer, 0, 3), vec![0, 334, 668]);
    }
}
