//! Broker settings and topic settings.
//!
//! [`BrokerConfig`] is what `mq-broker` runs with: every key can come from the TOML file
//! (`--config`), a flag, or an `MQ_`-prefixed environment variable (the binary merges them).
//! [`TopicConfig`] holds one topic's log settings: the broker's defaults, overridden per topic
//! by `key=value` pairs at creation (`retention_ms=3600000`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::group::GroupConfig;
use crate::log::{FlushPolicy, LogConfig};

/// What a broker process does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Controller and broker in one process: a complete single-node system.
    #[default]
    Combined,
    /// Only the controller (cluster mode).
    Controller,
    /// Only a broker, following a controller (cluster mode).
    Broker,
}

/// Settings of a broker process. Field names are the TOML keys; flags are the same names
/// with dashes, environment variables the same in upper case with an `MQ_` prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// What this process does.
    pub role: Role,
    /// This broker's id in the cluster.
    pub node_id: i32,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The `host:port` clients are told to connect to; defaults to the bound address.
    pub advertised_listener: Option<String>,
    /// The controller's addresses (`host:port`, comma-separated on the command line); the
    /// `broker` role needs them.
    pub controller: Vec<String>,
    /// This broker's rack label: replicas of a partition go to distinct racks.
    pub rack: Option<String>,
    /// How often a broker heartbeats to the controller.
    pub heartbeat_interval_ms: u64,
    /// The controller fences a broker it has not heard from for this long.
    pub session_timeout_ms: u64,
    /// Where partition logs and topic metadata live.
    pub data_dir: PathBuf,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections from one IP address served at once; more are closed as they arrive.
    pub max_connections_per_ip: usize,
    /// The largest request frame accepted; a larger one closes its connection.
    pub max_frame_bytes: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout_ms: u64,
    /// A request frame must arrive whole within this long of its first byte, or its
    /// connection is closed (a client trickling bytes cannot hold a connection and its
    /// buffer forever).
    pub frame_timeout_ms: u64,
    /// Bytes of request frames buffered at once over all connections; a connection whose
    /// next frame does not fit stops being read until earlier requests finish.
    pub max_request_memory_bytes: usize,
    /// Appends of up to this many bytes run on the runtime worker that received them
    /// rather than on the blocking pool, when the page cache is under no write pressure
    /// (saves two thread hand-offs; see `server::inline_appends`); 0: never.
    pub inline_append_max_bytes: usize,
    /// Requests of one connection processed at once; reading pauses beyond it.
    pub max_in_flight_requests: usize,
    /// Create a topic with the default settings when a client produces to it.
    pub auto_create_topics: bool,
    /// How often retention runs over every partition.
    pub retention_check_interval_ms: u64,
    /// The shortest session timeout a group member may ask for.
    pub group_min_session_timeout_ms: u64,
    /// The longest session timeout a group member may ask for.
    pub group_max_session_timeout_ms: u64,
    /// The most members one consumer group may have.
    pub group_max_size: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The committed-offsets log is compacted once it holds more records than this (and
    /// more than twice as many as there are live offsets).
    pub offsets_compact_min_records: u64,
    /// Defaults of new topics.
    #[serde(flatten)]
    pub topic_defaults: TopicConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            role: Role::Combined,
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9700)),
            advertised_listener: None,
            controller: Vec::new(),
            rack: None,
            heartbeat_interval_ms: 500,
            session_timeout_ms: 6000,
            data_dir: PathBuf::from("./data"),
            max_connections: 4096,
            max_connections_per_ip: 2048,
            max_frame_bytes: 64 * 1024 * 1024,
            idle_timeout_ms: 10 * 60 * 1000,
            frame_timeout_ms: 30_000,
            max_request_memory_bytes: 256 * 1024 * 1024,
            max_in_flight_requests: 64,
            inline_append_max_bytes: 64 * 1024,
            auto_create_topics: false,
            retention_check_interval_ms: 5 * 60 * 1000,
            group_min_session_timeout_ms: 1000,
            group_max_session_timeout_ms: 300_000,
            group_max_size: 1000,
            offsets_compact_min_records: 10_000,
            metrics_listen: None,
            topic_defaults: TopicConfig::default(),
        }
    }
}

/// Why a setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl BrokerConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new("max_connections", "must be positive"));
        }
        if self.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "max_connections_per_ip",
                "must be positive",
            ));
        }
        if self.idle_timeout_ms == 0 || self.frame_timeout_ms == 0 {
            return Err(ConfigError::new(
                "idle_timeout_ms",
                "idle_timeout_ms and frame_timeout_ms must be positive",
            ));
        }
        if self.max_in_flight_requests == 0 {
            return Err(ConfigError::new(
                "max_in_flight_requests",
                "must be positive",
            ));
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > i32::MAX as usize {
            return Err(ConfigError::new(
                "max_frame_bytes",
                "must be between 1 KiB and 2 GiB",
            ));
        }
        if self.max_request_memory_bytes < self.max_frame_bytes
            || self.max_request_memory_bytes > u32::MAX as usize
        {
            return Err(ConfigError::new(
                "max_request_memory_bytes",
                "must be at least max_frame_bytes and at most 4 GiB",
            ));
        }
        if (self.topic_defaults.max_message_bytes as usize) > self.max_frame_bytes {
            return Err(ConfigError::new(
                "max_message_bytes",
                "must not exceed max_frame_bytes",
            ));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError::new(
                "retention_check_interval_ms",
                "must be positive",
            ));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
            || self.group_max_session_timeout_ms > i32::MAX as u64
        {
            return Err(ConfigError::new(
                "group_max_session_timeout_ms",
                "must be at least group_min_session_timeout_ms and fit an i32",
            ));
        }
        if self.role == Role::Broker && self.controller.is_empty() {
            return Err(ConfigError::new(
                "controller",
                "the broker role needs the controller's address (--controller HOST:PORT)",
            ));
        }
        if self.role != Role::Broker && !self.controller.is_empty() {
            return Err(ConfigError::new(
                "controller",
                "only the broker role takes --controller; the other roles run the controller",
            ));
        }
        if self.node_id < 0 {
            return Err(ConfigError::new("node_id", "must not be negative"));
        }
        if self.heartbeat_interval_ms == 0
            || self.session_timeout_ms < 2 * self.heartbeat_interval_ms
        {
            return Err(ConfigError::new(
                "session_timeout_ms",
                "heartbeat_interval_ms must be positive and session_timeout_ms at least twice it",
            ));
        }
        if self.group_max_size == 0 {
            return Err(ConfigError::new("group_max_size", "must be positive"));
        }
        self.topic_defaults.to_log_config().map(|_| ())
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> GroupConfig {
        GroupConfig {
            min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
            max_size: self.group_max_size,
        }
    }
}

/// One topic's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Partitions of a topic created without a count.
    pub partitions: i32,
    /// Roll a segment at this size.
    pub segment_bytes: u32,
    /// Roll a segment at this age.
    pub segment_ms: u64,
    /// Delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete old segments while the partition is larger; -1 for no limit.
    pub retention_bytes: i64,
    /// `always` (ack after fsync), `interval` (fsync every `flush_interval_ms`) or `never`.
    pub flush_policy: String,
    /// The fsync interval of the `interval` policy.
    pub flush_interval_ms: u64,
    /// The largest record batch (or batches for one partition in one request) accepted.
    pub max_message_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_policy: "always".to_string(),
            flush_interval_ms: 1000,
            max_message_bytes: 8 * 1024 * 1024,
        }
    }
}

impl TopicConfig {
    /// The keys a topic may set at creation.
    pub const KEYS: [&'static str; 8] = [
        "partitions",
        "segment_bytes",
        "segment_ms",
        "retention_ms",
        "retention_bytes",
        "flush_policy",
        "flush_interval_ms",
        "max_message_bytes",
    ];

    /// Sets `key` from its text form, then checks the settings together.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set_unchecked(key, value)?;
        self.to_log_config().map(|_| ())
    }

    /// Sets every `key=value` pair, then checks the settings together, so that their order
    /// does not matter (`segment_bytes=4096` may come before the `max_message_bytes` that
    /// makes it valid).
    pub fn set_all(&mut self, pairs: &[(String, String)]) -> Result<(), ConfigError> {
        for (key, value) in pairs {
            self.set_unchecked(key, value)?;
        }
        self.to_log_config().map(|_| ())
    }

    fn set_unchecked(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
            value
                .parse()
                .map_err(|_| ConfigError::new(key, format!("'{value}' is not a valid number")))
        }
        match key {
            "partitions" => self.partitions = number(key, value)?,
            "segment_bytes" => self.segment_bytes = number(key, value)?,
            "segment_ms" => self.segment_ms = number(key, value)?,
            "retention_ms" => self.retention_ms = number(key, value)?,
            "retention_bytes" => self.retention_bytes = number(key, value)?,
            "flush_policy" => self.flush_policy = value.to_string(),
            "flush_interval_ms" => self.flush_interval_ms = number(key, value)?,
            "max_message_bytes" => self.max_message_bytes = number(key, value)?,
            _ => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "unknown topic setting (known: {})",
                        TopicConfig::KEYS.join(", ")
                    ),
                ))
            }
        }
        Ok(())
    }

    /// The partition log settings these topic settings mean.
    pub fn to_log_config(&self) -> Result<LogConfig, ConfigError> {
        let flush = match self.flush_policy.as_str() {
            "always" => FlushPolicy::Always,
            "never" => FlushPolicy::Never,
            "interval" if self.flush_interval_ms > 0 => {
                FlushPolicy::Interval(Duration::from_millis(self.flush_interval_ms))
            }
            "interval" => return Err(ConfigError::new("flush_interval_ms", "must be positive")),
            other => {
                return Err(ConfigError::new(
                    "flush_policy",
                    format!("'{other}' is not one of always, interval, never"),
                ))
            }
        };
        if self.partitions < 1 {
            return Err(ConfigError::new("partitions", "must be at least 1"));
        }
        let config = LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_ms),
            batch_bytes_max: self.max_message_bytes,
            retention: u64::try_from(self.retention_ms)
                .ok()
                .map(Duration::from_millis),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
            flush,
            ..LogConfig::default()
        };
        config
            .validate()
            .map_err(|error| ConfigError::new("topic config", error.0))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_toml() {
        assert_eq!(BrokerConfig::default().validate(), Ok(()));
        let parsed: BrokerConfig = toml::from_str(
            "node_id = 3\nlisten = \"127.0.0.1:9800\"\nretention_ms = 1000\nflush_policy = \"never\"\n",
        )
        .unwrap();
        assert_eq!(parsed.node_id, 3);
        assert_eq!(parsed.listen.port(), 9800);
        assert_eq!(parsed.topic_defaults.retention_ms, 1000);
        assert_eq!(
            parsed.topic_defaults.to_log_config().unwrap().flush,
            FlushPolicy::Never
        );
        assert!(toml::from_str::<BrokerConfig>("no_such_key = 1").is_err());
        let groups: BrokerConfig = toml::from_str(
            "group_min_session_timeout_ms = 10\ngroup_max_size = 5\noffsets_compact_min_records = 7\n",
        )
        .unwrap();
        assert_eq!(groups.group_config().max_size, 5);
        assert_eq!(
            groups.group_config().min_session_timeout,
            Duration::from_millis(10)
        );
        assert_eq!(groups.offsets_compact_min_records, 7);
        assert_eq!(
            BrokerConfig::default().group_config(),
            GroupConfig::default()
        );
        let inverted = BrokerConfig {
            group_min_session_timeout_ms: 5000,
            group_max_session_timeout_ms: 4000,
            ..BrokerConfig::default()
        };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn topic_settings_are_checked() {
        let mut config = TopicConfig::default();
        config.set("retention_ms", "-1").unwrap();
        assert_eq!(config.to_log_config().unwrap().retention, None);
        config.set("flush_policy", "interval").unwrap();
        assert!(matches!(
            config.to_log_config().unwrap().flush,
            FlushPolicy::Interval(_)
        ));
        assert!(config.set("flush_policy", "sometimes").is_err());
        assert!(TopicConfig::default().set("retention_ms", "soon").is_err());
        assert!(TopicConfig::default().set("colour", "blue").is_err());
        assert!(
            TopicConfig::default().set("segment_bytes", "10").is_err(),
            "below the batch limit"
        );
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };
        let small = pairs(&[("segment_bytes", "4096"), ("max_message_bytes", "1024")]);
        let mut config = TopicConfig::default();
        config.set_all(&small).unwrap();
        assert_eq!(config.segment_bytes, 4096);
        assert!(TopicConfig::default()
            .set_all(&pairs(&[("segment_bytes", "4096")]))
            .is_err());
    }
}
