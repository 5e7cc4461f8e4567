//! Relay metrics, rendered as Prometheus text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A frame type label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FrameLabel {
    pub(crate) r#type: &'static str,
}

/// A rejection reason label (an [`agentwire_wire::ErrorCode`] name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Every metric the relay keeps. Cheap to update from any task.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: Gauge,
    pub(crate) frames_in: Family<FrameLabel, Counter>,
    pub(crate) frames_out: Family<FrameLabel, Counter>,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) queued: Gauge,
    pub(crate) rejections: Family<ReasonLabel, Counter>,
    pub(crate) store_commit_seconds: Histogram,
    /// PostgreSQL only: connections in this node's pool, open and idle.
    pub(crate) pool_connections: Gauge,
    /// PostgreSQL only: connections in the pool not in use.
    pub(crate) pool_idle: Gauge,
    /// PostgreSQL only: requests waiting for a connection.
    pub(crate) pool_waiting: Gauge,
    /// PostgreSQL only: notifications from other nodes received.
    pub(crate) notifications: Counter,
    /// PostgreSQL only: times the notification listener (re)connected.
    pub(crate) listener_connects: Counter,
    /// PostgreSQL only: recipients woken by the periodic check rather than a
    /// notification.
    pub(crate) check_wakeups: Counter,
}

impl Metrics {
    /// The relay's metrics; those of the PostgreSQL store only when
    /// `postgres`.
    pub(crate) fn new(postgres: bool) -> Self {
        let mut registry = Registry::with_prefix("agentwire_relay");
        let metrics = Self {
            connections: Gauge::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            queued: Gauge::default(),
            rejections: Family::default(),
            // 50 µs .. ~3 s
            store_commit_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            pool_connections: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_waiting: Gauge::default(),
            notifications: Counter::default(),
            listener_connects: Counter::default(),
            check_wakeups: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "frames_in",
            "Frames received, by type",
            metrics.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames sent, by type",
            metrics.frames_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received in binary frames",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes sent in binary frames",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "queued_envelopes",
            "Envelopes stored and not yet acknowledged or expired",
            metrics.queued.clone(),
        );
        registry.register(
            "rejections",
            "Requests or connections refused, by reason",
            metrics.rejections.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time to run and commit one store transaction",
            metrics.store_commit_seconds.clone(),
        );
        if postgres {
            let pg = registry.sub_registry_with_prefix("postgres");
            pg.register(
                "pool_connections",
                "Connections open in this node's pool",
                metrics.pool_connections.clone(),
            );
            pg.register(
                "pool_idle",
                "Connections in this node's pool not in use",
                metrics.pool_idle.clone(),
            );
            pg.register(
                "pool_waiting",
                "Store requests waiting for a connection",
                metrics.pool_waiting.clone(),
            );
            pg.register(
                "notifications",
                "Notifications of new envelopes or expiry notices received",
                metrics.notifications.clone(),
            );
            pg.register(
                "listener_connects",
                "Times the notification listener connected (more than one means it reconnected)",
                metrics.listener_connects.clone(),
            );
            pg.register(
                "check_wakeups",
                "Recipients woken by the periodic check instead of a notification",
                metrics.check_wakeups.clone(),
            );
        }
        Self {
            registry,
            ..metrics
        }
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        self.rejections.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
