//! [`Metrics`]: the broker's counters and histograms, and their Prometheus/OpenMetrics text
//! exposition (served by `server::metrics_http` when `--metrics-listen` is set).
//!
//! Recording is per request, never per record: a request bumps two counters and observes
//! one histogram, through handles created once per API at start-up (no label lookup on the
//! hot path). Gauges of state (log offsets and sizes, consumer lag) are not kept up to date
//! as things change; they are read when scraped, via [`Snapshot`].

use std::sync::Mutex;
use std::time::Duration;

use mq_protocol::request::ApiKey;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Label sets: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

/// Request latency buckets: 25 µs doubling to about 13 s (a long-poll's wait included).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 20))
}

/// The metrics of one API.
#[derive(Clone, Debug)]
struct ApiMetrics {
    key: ApiKey,
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

/// One partition's state at scrape time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset stored.
    pub log_start: u64,
    /// The next offset to be written.
    pub log_end: u64,
    /// Bytes of its segment files.
    pub size_bytes: u64,
}

/// One group's position in one partition at scrape time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOffsetSnapshot {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset.
    pub committed: i64,
    /// The partition's log end offset.
    pub log_end: i64,
}

/// The state read at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every partition.
    pub partitions: Vec<PartitionSnapshot>,
    /// Every committed offset of a partition that exists.
    pub group_offsets: Vec<GroupOffsetSnapshot>,
}

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// By API key; unknown keys share the `unknown` entry.
    apis: Vec<ApiMetrics>,
    unknown: ApiMetrics,
    bytes_in: Counter,
    bytes_out: Counter,
    connections_accepted: Counter,
    connections: Gauge,
    inline_appends: Counter,
    inline_appends_slow: Counter,
    log_start: Family<Labels, Gauge>,
    log_end: Family<Labels, Gauge>,
    log_size: Family<Labels, Gauge>,
    group_committed: Family<Labels, Gauge>,
    group_lag: Family<Labels, Gauge>,
    /// Serialises scrapes: the state gauges are cleared and refilled by each.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mq");
        let requests = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register("requests", "Requests answered, by API", requests.clone());
        registry.register(
            "request_errors",
            "Requests answered with an error code (of the request, or of any topic, partition or group in it), by API",
            errors.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response being queued, by API (long-poll waits included)",
            Unit::Seconds,
            latency.clone(),
        );
        let handles = |key: ApiKey, name: &str| {
            let labels = vec![("api", name.to_string())];
            ApiMetrics {
                key,
                requests: requests.get_or_create(&labels).clone(),
                errors: errors.get_or_create(&labels).clone(),
                latency: latency.get_or_create(&labels).clone(),
            }
        };
        let apis = ApiKey::ALL
            .iter()
            .map(|key| handles(*key, key.name()))
            .collect();
        let unknown = handles(ApiKey(-1), "unknown");
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        registry.register_with_unit(
            "network_received",
            "Request frame bytes received",
            Unit::Bytes,
            bytes_in.clone(),
        );
        registry.register_with_unit(
            "network_sent",
            "Response frame bytes sent",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let connections_accepted = Counter::default();
        let connections = Gauge::default();
        registry.register(
            "connections_accepted",
            "Connections accepted",
            connections_accepted.clone(),
        );
        registry.register("connections", "Connections open", connections.clone());
        let inline_appends = Counter::default();
        let inline_appends_slow = Counter::default();
        registry.register(
            "inline_appends",
            "Appends tried on the runtime worker instead of the blocking pool",
            inline_appends.clone(),
        );
        registry.register(
            "inline_appends_slow",
            "Inline appends that took over 2 ms and paused inline appends for a second",
            inline_appends_slow.clone(),
        );
        let log_start = Family::<Labels, Gauge>::default();
        let log_end = Family::<Labels, Gauge>::default();
        let log_size = Family::<Labels, Gauge>::default();
        let group_committed = Family::<Labels, Gauge>::default();
        let group_lag = Family::<Labels, Gauge>::default();
        registry.register(
            "log_start_offset",
            "First offset stored, by partition",
            log_start.clone(),
        );
        registry.register(
            "log_end_offset",
            "Offset of the next record, by partition",
            log_end.clone(),
        );
        registry.register_with_unit(
            "log_size",
            "Bytes of segment files on disk, by partition",
            Unit::Bytes,
            log_size.clone(),
        );
        registry.register(
            "group_committed_offset",
            "Committed offset, by group and partition",
            group_committed.clone(),
        );
        registry.register(
            "group_lag",
            "Records between the committed offset and the log end, by group and partition",
            group_lag.clone(),
        );
        Metrics {
            registry,
            apis,
            unknown,
            bytes_in,
            bytes_out,
            connections_accepted,
            connections,
            inline_appends,
            inline_appends_slow,
            log_start,
            log_end,
            log_size,
            group_committed,
            group_lag,
            scrape: Mutex::new(()),
        }
    }

    fn api(&self, key: ApiKey) -> &ApiMetrics {
        self.apis
            .iter()
            .find(|api| api.key == key)
            .unwrap_or(&self.unknown)
    }

    /// Records one answered request (`acks=0` produces count when done).
    pub fn request(&self, key: ApiKey, elapsed: Duration, error: bool) {
        let api = self.api(key);
        api.requests.inc();
        if error {
            api.errors.inc();
        }
        api.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a request frame of `bytes` (length prefix included).
    pub fn received(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Records a response frame of `bytes` (length prefix included).
    pub fn sent(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }

    /// Records an accepted connection, open until [`Metrics::connection_closed`].
    pub fn connection_accepted(&self) {
        self.connections_accepted.inc();
        self.connections.inc();
    }

    /// Records an append tried on the runtime worker, and whether it was slow.
    pub fn inline_append(&self, slow: bool) {
        self.inline_appends.inc();
        if slow {
            self.inline_appends_slow.inc();
        }
    }

    /// Records a connection's end.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// The text exposition (OpenMetrics), with the state gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _serial = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for family in [&self.log_start, &self.log_end, &self.log_size] {
            family.clear();
        }
        for partition in &snapshot.partitions {
            let labels = vec![
                ("topic", partition.topic.clone()),
                ("partition", partition.partition.to_string()),
            ];
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.log_start
                .get_or_create(&labels)
                .set(gauge(partition.log_start));
            self.log_end
                .get_or_create(&labels)
                .set(gauge(partition.log_end));
            self.log_size
                .get_or_create(&labels)
                .set(gauge(partition.size_bytes));
        }
        self.group_committed.clear();
        self.group_lag.clear();
        for offset in &snapshot.group_offsets {
            let labels = vec![
                ("group", offset.group.clone()),
                ("topic", offset.topic.clone()),
                ("partition", offset.partition.to_string()),
            ];
            self.group_committed
                .get_or_create(&labels)
                .set(offset.committed);
            self.group_lag
                .get_or_create(&labels)
                .set(offset.log_end.saturating_sub(offset.committed).max(0));
        }
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug of the crate,
        // and a partial exposition is still the most useful answer.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_state_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.request(ApiKey::PRODUCE, Duration::from_micros(300), false);
        metrics.request(ApiKey::PRODUCE, Duration::from_millis(2), true);
        metrics.request(ApiKey(999), Duration::from_millis(1), true);
        metrics.received(100);
        metrics.sent(40);
        let snapshot = Snapshot {
            partitions: vec![PartitionSnapshot {
                topic: "orders".into(),
                partition: 2,
                log_start: 5,
                log_end: 42,
                size_bytes: 4096,
            }],
            group_offsets: vec![GroupOffsetSnapshot {
                group: "billing".into(),
                topic: "orders".into(),
                partition: 2,
                committed: 40,
                log_end: 42,
            }],
        };
        for _ in 0..3 {
            metrics.connection_accepted();
        }
        metrics.connection_closed();
        let text = metrics.render(&snapshot);
        for line in [
            "mq_requests_total{api=\"Produce\"} 2",
            "mq_request_errors_total{api=\"Produce\"} 1",
            "mq_requests_total{api=\"unknown\"} 1",
            "mq_request_duration_seconds_count{api=\"Produce\"} 2",
            "mq_network_received_bytes_total 100",
            "mq_network_sent_bytes_total 40",
            "mq_connections 2",
            "mq_connections_accepted_total 3",
            "mq_log_end_offset{topic=\"orders\",partition=\"2\"} 42",
            "mq_log_start_offset{topic=\"orders\",partition=\"2\"} 5",
            "mq_log_size_bytes{topic=\"orders\",partition=\"2\"} 4096",
            "mq_group_lag{group=\"billing\",topic=\"orders\",partition=\"2\"} 2",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A partition that went away leaves the exposition with the next scrape.
        let text = metrics.render(&Snapshot::default());
        assert!(!text.contains("topic=\"orders\""), "{text}");
    }
}
