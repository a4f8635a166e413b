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
    /// Several nodes: publish round trips to Redis, and the ones Redis refused.
    pub bus_published: AtomicU64,
    pub bus_publish_failures: AtomicU64,
    /// Events received from the bus, and those dropped as already delivered.
    pub bus_received: AtomicU64,
    pub bus_duplicates: AtomicU64,
    /// Gaps in a room's stream found on the bus, and the events read back to fill them.
    pub gap_fills: AtomicU64,
    pub gap_events: AtomicU64,
    /// Head checks that found (and delivered) events the bus had not brought.
    pub head_repairs: AtomicU64,
    /// Times the Redis subscription was lost and re-established.
    pub bus_reconnects: AtomicU64,
    /// Bus items dropped because Redis or the sequencer was too far behind.
    pub bus_dropped: AtomicU64,
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
    /// Several nodes: ms between the newest bus event's publication and its arrival.
    pub bus_lag_ms: Option<u64>,
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
        if let Some(lag) = g.bus_lag_ms {
            metric("bus_lag_ms", "gauge", "Ms from the newest bus event's publication to its arrival.", lag);
        }
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
        for (name, help, value) in [
            ("bus_published_total", "Publish round trips to Redis.", &self.bus_published),
            ("bus_publish_failures_total", "Publish round trips Redis refused.", &self.bus_publish_failures),
            ("bus_received_total", "Events received from the bus.", &self.bus_received),
            ("bus_duplicates_total", "Events dropped as already delivered.", &self.bus_duplicates),
            ("gap_fills_total", "Gaps in a room's stream filled from the store.", &self.gap_fills),
            ("gap_events_total", "Events read from the store to fill gaps.", &self.gap_events),
            ("head_repairs_total", "Head checks that delivered events the bus lost.", &self.head_repairs),
            ("bus_reconnects_total", "Re-established Redis subscriptions.", &self.bus_reconnects),
            (
                "bus_dropped_total",
                "Bus items dropped as Redis or the sequencer fell behind.",
                &self.bus_dropped,
            ),
        ] {
            metric(name, "counter", help, value.load(Relaxed));
        }
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
        let text = m.render(&Gauges { rooms: 2, sessions: 1, tasks: 0, bus_lag_ms: Some(3) });
        assert!(text.contains("# TYPE confab_messages_in_total counter\nconfab_messages_in_total 3\n"));
        assert!(text.contains("confab_rooms 2\n"));
        assert!(text.contains("confab_bus_lag_ms 3\n"));
        assert!(text.contains("# TYPE confab_gap_fills_total counter\nconfab_gap_fills_total 0\n"));
        assert!(text.contains("confab_errors_total{code=\"rate_limited\"} 2\n"));
        assert!(text.contains("confab_errors_total{code=\"bad_frame\"} 0\n"));
        assert_eq!(m.errors(ErrorCode::RateLimited), 2);
    }
}
