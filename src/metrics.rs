//! Counters for `/metrics`, kept as atomics and rendered in the Prometheus text format.
//!
//! A handful of counters and one histogram do not justify a metrics framework (and its recorder,
//! which is process-global and awkward in tests that start many apps).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the ingest latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_conflict: AtomicU64,
    pub overload_rejections: AtomicU64,
    pub requests_ingest: AtomicU64,
    pub stream_overflows: AtomicU64,
    pub otlp_spans_accepted: AtomicU64,
    pub otlp_spans_rejected: AtomicU64,
    pub otlp_records_accepted: AtomicU64,
    pub otlp_spans_not_kept: AtomicU64,
    pub otlp_records_rejected: AtomicU64,
    /// Guard answers by decision, and asks and denies that could not be recorded in their session.
    pub guard_allow: AtomicU64,
    pub guard_ask: AtomicU64,
    pub guard_deny: AtomicU64,
    pub guard_unrecorded: AtomicU64,
    /// Connections turned away at the cap (answered `503`, or closed when too many arrive at once).
    pub connections_refused: AtomicU64,
    /// Connections being served now, and the most that may be (the cap in force).
    pub connections_open: AtomicU64,
    pub connections_max: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Values read at scrape time rather than counted.
pub struct Gauges {
    pub subscribers: usize,
    pub queue_depth: usize,
    pub store_bytes: u64,
    pub store_writable: bool,
    pub commits: u64,
    pub alerts: u64,
    pub ingest_bytes: u64,
    pub notify: crate::notify::worker::StatusView,
}

impl Metrics {
    pub fn observe_ingest_latency(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let simple = [
            ("aop_events_ingested_total", "counter", "Events stored.", load(&self.events_accepted)),
            (
                "aop_events_duplicate_total",
                "counter",
                "Retried events acknowledged without storing them again.",
                load(&self.events_duplicate),
            ),
            ("aop_events_rejected_total", "counter", "Events refused by validation.", load(&self.events_rejected)),
            (
                "aop_events_conflict_total",
                "counter",
                "Events refused because their sequence was taken by different content.",
                load(&self.events_conflict),
            ),
            (
                "aop_overload_rejections_total",
                "counter",
                "Requests answered 503 because the write queue was full or the store unavailable.",
                load(&self.overload_rejections),
            ),
            ("aop_ingest_requests_total", "counter", "POST /events requests.", load(&self.requests_ingest)),
            (
                "aop_stream_overflows_total",
                "counter",
                "Subscribers cut off for falling behind.",
                load(&self.stream_overflows),
            ),
            (
                "aop_otlp_spans_accepted_total",
                "counter",
                "OTLP spans received and stored (or already stored).",
                load(&self.otlp_spans_accepted),
            ),
            (
                "aop_otlp_spans_rejected_total",
                "counter",
                "OTLP spans refused (counted in partial_success).",
                load(&self.otlp_spans_rejected),
            ),
            (
                "aop_otlp_spans_not_kept_total",
                "counter",
                "OTLP spans acknowledged and not kept: a coding agent's internal spans outside any conversation.",
                load(&self.otlp_spans_not_kept),
            ),
            (
                "aop_otlp_log_records_accepted_total",
                "counter",
                "OTLP log records received and stored (or already stored).",
                load(&self.otlp_records_accepted),
            ),
            (
                "aop_otlp_log_records_rejected_total",
                "counter",
                "OTLP log records refused (counted in partial_success).",
                load(&self.otlp_records_rejected),
            ),
            ("aop_store_commits_total", "counter", "Write transactions committed.", g.commits),
            ("aop_alerts_total", "counter", "Alerts raised.", g.alerts),
            ("aop_stream_subscribers", "gauge", "Open /stream connections.", g.subscribers as u64),
            ("aop_write_queue_depth", "gauge", "Write jobs waiting for the writer.", g.queue_depth as u64),
            (
                "aop_ingest_bytes_in_flight",
                "gauge",
                "Memory held by ingest requests being read, decoded or stored.",
                g.ingest_bytes,
            ),
            ("aop_store_bytes", "gauge", "Size of the database files on disk.", g.store_bytes),
            ("aop_store_writable", "gauge", "1 when the store accepts writes.", u64::from(g.store_writable)),
        ];
        let connections = [
            (
                "aop_connections_refused_total",
                "counter",
                "Connections refused because the collector was at its connection limit.",
                load(&self.connections_refused),
            ),
            ("aop_connections_open", "gauge", "Open client connections.", load(&self.connections_open)),
            (
                "aop_connections_max",
                "gauge",
                "The most client connections served at once.",
                load(&self.connections_max),
            ),
        ];
        let n = &g.notify;
        let notify = [
            ("aop_notify_targets", "gauge", "Notification targets configured on this instance.", n.targets as u64),
            ("aop_notify_pending", "gauge", "Notification deliveries waiting (in the whole store).", n.pending),
            (
                "aop_notify_failed",
                "gauge",
                "Notification deliveries given up after notify_max_age (in the whole store).",
                n.failed,
            ),
            (
                "aop_notify_delivered_total",
                "counter",
                "Alerts this instance delivered to a target, one by one or in a summary.",
                n.delivered_total,
            ),
            (
                "aop_notify_attempts_failed_total",
                "counter",
                "Delivery attempts of this instance that failed (retried, or given up).",
                n.failed_attempts_total,
            ),
        ];
        let mut out = String::with_capacity(4096);
        for (name, kind, help, v) in simple.into_iter().chain(connections).chain(notify) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let name = "aop_guard_decisions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Guard answers (POST /guard, Claude Code's PreToolUse hook).\n# TYPE {name} counter"
        );
        for (decision, n) in [("allow", &self.guard_allow), ("ask", &self.guard_ask), ("deny", &self.guard_deny)] {
            let _ = writeln!(out, "{name}{{decision=\"{decision}\"}} {}", load(n));
        }
        let name = "aop_guard_unrecorded_total";
        let _ = writeln!(
            out,
            "# HELP {name} Asks and denies the guard answered but could not record in their session (the store was busy).\n# TYPE {name} counter\n{name} {}",
            load(&self.guard_unrecorded)
        );

        let name = "aop_ingest_latency_seconds";
        let _ = writeln!(out, "# HELP {name} Time from request to durable acknowledgement.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(n);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", load(&self.latency_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}
