//! Counters for `/healthz` and `/metrics` (Prometheus text format). Plain atomics: bumped
//! on hot paths, read rarely.

use crate::protocol::ErrorCode;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    /// Open WebSocket connections (gauge).
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    /// Upgrades refused: over the per-IP limit, or a foreign Origin.
    pub refused_per_ip: AtomicU64,
    pub refused_origin: AtomicU64,
    /// Messages accepted from clients, stored, and delivered (one per recipient).
    pub messages_in: AtomicU64,
    pub messages_stored: AtomicU64,
    pub messages_out: AtomicU64,
    pub commit_batches: AtomicU64,
    /// Batches the store refused (their senders were told to resend).
    pub store_failures: AtomicU64,
    /// Connections cut for falling behind, for abuse, or for silence.
    pub slow_consumers: AtomicU64,
    pub abusive_closed: AtomicU64,
    pub idle_closed: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
}

/// Gauges owned elsewhere, sampled when the metrics are rendered.
pub struct Gauges {
    pub rooms: usize,
    pub sessions: usize,
    pub tasks: usize,
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].fetch_add(1, Relaxed);
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL.iter().position(|c| *c == code).map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP confab_{name} {help}\n# TYPE confab_{name} {kind}\nconfab_{name} {value}"
            );
        };
        metric("connections", "gauge", "Open WebSocket connections.", self.connections.load(Relaxed));
        metric(
            "connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed),
        );
        metric(
            "refused_per_ip_total",
            "counter",
            "Upgrades refused over the per-IP limit.",
            self.refused_per_ip.load(Relaxed),
        );
        metric(
            "refused_origin_total",
            "counter",
            "Upgrades refused for a foreign Origin.",
            self.refused_origin.load(Relaxed),
        );
        metric("rooms", "gauge", "Rooms the server holds.", g.rooms as u64);
        metric("sessions", "gauge", "Sessions, live or in their grace period.", g.sessions as u64);
        metric("connection_tasks", "gauge", "Connection tasks still running.", g.tasks as u64);
        metric(
            "messages_in_total",
            "counter",
            "Messages accepted from clients.",
            self.messages_in.load(Relaxed),
        );
        metric(
            "messages_stored_total",
            "counter",
            "Messages durably stored.",
            self.messages_stored.load(Relaxed),
        );
        metric(
            "messages_out_total",
            "counter",
            "Message deliveries queued to connections.",
            self.messages_out.load(Relaxed),
        );
        metric(
            "commit_batches_total",
            "counter",
            "Store transactions (group commits).",
            self.commit_batches.load(Relaxed),
        );
        metric(
            "store_failures_total",
            "counter",
            "Batches the store refused; their senders were told to send again.",
            self.store_failures.load(Relaxed),
        );
        metric(
            "slow_consumers_total",
            "counter",
            "Connections cut for falling behind.",
            self.slow_consumers.load(Relaxed),
        );
        metric(
            "abusive_closed_total",
            "counter",
            "Connections closed for sustained rate abuse.",
            self.abusive_closed.load(Relaxed),
        );
        metric(
            "idle_closed_total",
            "counter",
            "Connections closed by the heartbeat.",
            self.idle_closed.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP confab_errors_total Protocol errors sent, by code.\n# TYPE confab_errors_total counter"
        );
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let _ = writeln!(out, "confab_errors_total{{code=\"{code}\"}} {}", self.errors[i].load(Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_errors_by_code() {
        let m = Metrics::default();
        m.error(ErrorCode::RateLimited);
        m.error(ErrorCode::RateLimited);
        m.messages_in.fetch_add(3, Relaxed);
        let text = m.render(&Gauges { rooms: 2, sessions: 1, tasks: 0 });
        assert!(text.contains("# TYPE confab_messages_in_total counter\nconfab_messages_in_total 3\n"));
        assert!(text.contains("confab_rooms 2\n"));
        assert!(text.contains("confab_errors_total{code=\"rate_limited\"} 2\n"));
        assert!(text.contains("confab_errors_total{code=\"bad_frame\"} 0\n"));
        assert_eq!(m.errors(ErrorCode::RateLimited), 2);
    }
}
