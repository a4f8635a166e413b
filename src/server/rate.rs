//! Rate limits: a token bucket that, when it refuses, says when to come back.
//!
//! A refused request is promised a slot: the first moment a token will be free for it,
//! counting the slots already promised to earlier refusals. A client that pipelined many
//! requests and resends each one when told is therefore paced at exactly the rate and
//! every resend is accepted. Only a client that keeps sending without waiting pushes its
//! slots further out; once they are more than a few bursts ahead it is not waiting as
//! told, and its refusals count as strikes (see `Reader::rate_limited`).

use std::time::{Duration, Instant};

/// Slots may be promised this many bursts ahead before refusals count as strikes.
const HORIZON_BURSTS: f64 = 4.0;
/// Float slack when a token is due exactly now.
const EPSILON: f64 = 1e-9;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// The slot promised to the latest refused request.
    promised: Option<Instant>,
}

/// Why a request was refused, and when to retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Wait at least this long before sending the refused request again.
    pub retry_after: Duration,
    /// The client is far ahead of its promised slots: it is not waiting as told.
    pub strike: bool,
}

impl Refusal {
    /// `retry_after` in whole milliseconds, rounded up so a resend is never early.
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after.as_nanos().div_ceil(1_000_000) as u64
    }
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        TokenBucket { rate, burst, tokens: burst, last: Instant::now(), promised: None }
    }

    /// When the bucket was last used: a bucket unused for `burst / rate` is full again.
    pub fn last_used(&self) -> Instant {
        self.last
    }

    /// Takes one token if there is one (no slot is promised on refusal).
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    /// Takes a token, or refuses with the slot at which to retry.
    pub fn check(&mut self) -> Result<(), Refusal> {
        self.check_at(Instant::now())
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    fn take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    fn check_at(&mut self, now: Instant) -> Result<(), Refusal> {
        if self.take_at(now) {
            return Ok(());
        }
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let first_free = now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        let slot = match self.promised {
            Some(p) => first_free.max(p + interval),
            None => first_free,
        };
        self.promised = Some(slot);
        let retry_after = slot - now;
        let horizon = Duration::from_secs_f64(HORIZON_BURSTS * self.burst / self.rate);
        Err(Refusal { retry_after, strike: retry_after > horizon })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: f64, burst: f64, at: Instant) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, last: at, promised: None }
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = bucket(10.0, 3.0, start);
        assert!((0..3).all(|_| bucket.take_at(start)));
        assert!(!bucket.take_at(start));
        // 100 ms at 10/s refills one token.
        assert!(bucket.take_at(start + Duration::from_millis(100)));
        assert!(!bucket.take_at(start + Duration::from_millis(120)));
        // A long pause refills at most the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take_at(later)).count(), 3);
    }

    #[test]
    fn refusals_are_promised_successive_slots() {
        let start = Instant::now();
        let mut b = bucket(20.0, 2.0, start);
        assert!(b.check_at(start).is_ok() && b.check_at(start).is_ok());
        let slots: Vec<u64> = (0..3).map(|_| b.check_at(start).unwrap_err().retry_after_ms()).collect();
        assert_eq!(slots, vec![50, 100, 150]);
    }

    /// 100 requests pipelined at once, each refused one resent exactly when told: every
    /// resend is accepted and nothing ever counts as a strike.
    #[test]
    fn a_client_that_waits_as_told_is_paced_and_never_struck() {
        let start = Instant::now();
        let mut b = bucket(20.0, 40.0, start);
        let mut waiting: Vec<Instant> = Vec::new();
        let mut accepted = 0;
        for _ in 0..100 {
            match b.check_at(start) {
                Ok(()) => accepted += 1,
                Err(r) => {
                    assert!(!r.strike, "the burst was in flight, not ignoring the limit");
                    waiting.push(start + Duration::from_millis(r.retry_after_ms()));
                }
            }
        }
        assert_eq!(accepted, 40);
        while !waiting.is_empty() {
            waiting.sort();
            let at = waiting.remove(0);
            match b.check_at(at) {
                Ok(()) => accepted += 1,
                Err(r) => {
                    assert!(!r.strike);
                    waiting.push(at + Duration::from_millis(r.retry_after_ms()));
                }
            }
        }
        assert_eq!(accepted, 100);
    }

    #[test]
    fn a_client_that_never_waits_is_struck() {
        let start = Instant::now();
        let mut b = bucket(20.0, 40.0, start);
        let refusals: Vec<Refusal> = (0..400).filter_map(|_| b.check_at(start).err()).collect();
        // 4 bursts (160 slots, 8 s) may be promised before refusals become strikes.
        assert_eq!(refusals.iter().filter(|r| !r.strike).count(), 160);
        assert!(refusals.iter().skip(160).all(|r| r.strike));
    }
}
