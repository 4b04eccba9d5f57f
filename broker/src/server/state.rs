//! [`Broker`]: the state every connection shares: settings, the topic registry, the log
//! manager, the group coordinator, and the shutdown signal. Admin operations (create, delete,
//! grow topics) live here because they change the registry, the logs and the coordinator's
//! view of the topics together.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use mq_protocol::ErrorCode;
use tokio::sync::{watch, Mutex, Semaphore};

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::manager::{LogManager, TopicPartition};
use crate::metrics::{GroupOffsetSnapshot, Metrics, PartitionSnapshot, Snapshot};
use crate::offsets::{OffsetStore, OffsetsError};
use crate::topics::{self, TopicRecord, TopicStore, PARTITIONS_MAX};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another broker (lock file {path}/.lock)")]
    Locked {
        /// The data directory.
        path: String,
    },
    /// An I/O error on the data directory.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The topic registry could not be read.
    #[error(transparent)]
    Topics(#[from] topics::TopicStoreError),
    /// A partition log could not be opened.
    #[error("opening partition {partition}: {source}")]
    Log {
        /// The partition.
        partition: String,
        /// The error.
        #[source]
        source: crate::log::LogError,
    },
    /// A setting is unusable.
    #[error("invalid setting {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The committed offsets could not be loaded.
    #[error("opening committed offsets: {0}")]
    Offsets(#[from] OffsetsError),
}

/// An admin operation's failure: a wire error code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl AdminError {
    fn new(code: ErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
        }
    }
}

/// The topics, guarded together with their store so that admin operations are serialised.
#[derive(Debug)]
struct Topics {
    /// The durable registry.
    store: Arc<TopicStore>,
    /// Every topic by name.
    records: BTreeMap<String, TopicRecord>,
}

/// The state shared by every connection of one broker.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: BrokerConfig,
    /// The partition logs.
    pub manager: Arc<LogManager>,
    /// Consumer groups and their committed offsets.
    pub coordinator: Arc<GroupCoordinator>,
    /// Request counts, latencies, bytes, connections.
    pub metrics: Metrics,
    /// The budget of request bytes buffered at once over all connections
    /// (`max_request_memory_bytes`): one permit per byte, held from a frame's length prefix
    /// until its request is answered.
    pub request_memory: Arc<Semaphore>,
    /// Topics; admin operations hold this lock for their whole duration.
    topics: Mutex<Topics>,
    /// The host clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: i32,
    /// Turns true when the broker begins shutting down; long-polls return early.
    shutdown: watch::Sender<bool>,
    /// Held for the broker's life: the data directory's lock.
    _lock: File,
}

impl Broker {
    /// The state the metrics show: every partition's offsets and size, every group's
    /// committed offsets with their lag. Blocking (reads log state under each log's lock).
    pub fn metrics_snapshot(&self) -> Snapshot {
        let mut partitions: Vec<PartitionSnapshot> = self
            .manager
            .all()
            .into_iter()
            .filter_map(|(topic_partition, partition)| {
                let (log_start, log_end, size_bytes) = partition
                    .log
                    .with_log(|log| (log.log_start(), log.log_end(), log.size_bytes()))
                    .ok()?;
                Some(PartitionSnapshot {
                    topic: topic_partition.topic.to_string(),
                    partition: topic_partition.partition,
                    log_start: log_start.0,
                    log_end: log_end.0,
                    size_bytes,
                })
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let log_ends: HashMap<(&str, i32), u64> = partitions
            .iter()
            .map(|partition| {
                (
                    (partition.topic.as_str(), partition.partition),
                    partition.log_end,
                )
            })
            .collect();
        let store = self.coordinator.store();
        let mut group_offsets = Vec::new();
        for group in store.groups() {
            for (topic_partition, committed) in store.fetch(&group, None) {
                let key = (&*topic_partition.topic, topic_partition.partition);
                let (Some(committed), Some(log_end)) = (committed, log_ends.get(&key)) else {
                    continue;
                };
                group_offsets.push(GroupOffsetSnapshot {
                    group: group.clone(),
                    topic: topic_partition.topic.to_string(),
                    partition: topic_partition.partition,
                    committed: i64::try_from(committed.offset.0).unwrap_or(i64::MAX),
                    log_end: i64::try_from(*log_end).unwrap_or(i64::MAX),
                });
            }
        }
        Snapshot {
            partitions,
            group_offsets,
        }
    }

    /// Opens the data directory (locking it), the topic registry and every partition log.
    /// Blocking. `bound` is the address actually listened on (for an ephemeral port).
    pub fn open(config: BrokerConfig, bound: std::net::SocketAddr) -> Result<Broker, StartError> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let io = |source| StartError::Io {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(io)?;
        let lock = lock_data_dir(&data_dir)?;
        let (store, records) = TopicStore::open(&data_dir)?;
        let manager = Arc::new(LogManager::new(&data_dir));
        for topic in &records {
            let log_config = topic.config.to_log_config()?;
            for partition in 0..topic.partitions {
                let topic_partition = TopicPartition {
                    topic: Arc::from(topic.name.as_str()),
                    partition,
                };
                manager
                    .open_partition(topic_partition.clone(), log_config.clone())
                    .map_err(|source| StartError::Log {
                        partition: topic_partition.to_string(),
                        source,
                    })?;
            }
        }
        let offsets = OffsetStore::open(
            &data_dir.join(OffsetStore::DIR_NAME),
            config.offsets_compact_min_records,
        )?;
        let coordinator = Arc::new(GroupCoordinator::new(
            config.group_config(),
            Arc::new(offsets),
            records
                .iter()
                .map(|topic| (topic.name.clone(), topic.partitions)),
        ));
        tracing::info!(topics = records.len(), partitions = manager.all().len(), data_dir = %data_dir.display(), "opened data directory");
        let (advertised_host, advertised_port) = advertised(&config, bound);
        let request_memory = Arc::new(Semaphore::new(config.max_request_memory_bytes));
        Ok(Broker {
            config,
            manager,
            coordinator,
            metrics: Metrics::new(),
            request_memory,
            topics: Mutex::new(Topics {
                store: Arc::new(store),
                records: records
                    .into_iter()
                    .map(|topic| (topic.name.clone(), topic))
                    .collect(),
            }),
            advertised_host,
            advertised_port,
            shutdown: watch::Sender::new(false),
            _lock: lock,
        })
    }

    /// A receiver that turns true when the broker begins shutting down.
    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection and long-poll that the broker is shutting down; held
    /// JoinGroups and Heartbeats are answered `COORDINATOR_NOT_AVAILABLE`.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.coordinator.shutdown();
    }

    /// Every topic, or the ones named.
    pub async fn topics(&self) -> Vec<TopicRecord> {
        self.topics.lock().await.records.values().cloned().collect()
    }

    /// One topic.
    pub async fn topic(&self, name: &str) -> Option<TopicRecord> {
        self.topics.lock().await.records.get(name).cloned()
    }

    /// Creates a topic: validates it, stores it durably, creates its partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<TopicRecord, AdminError> {
        topics::validate_topic_name(name)
            .map_err(|message| AdminError::new(ErrorCode::INVALID_TOPIC_EXCEPTION, message))?;
        let mut config = self.config.topic_defaults.clone();
        config
            .set_all(configs)
            .map_err(|error| AdminError::new(ErrorCode::INVALID_CONFIG, error.to_string()))?;
        let partitions = if partitions == -1 {
            config.partitions
        } else {
            partitions
        };
        check_partition_count(partitions)?;
        if replication_factor != -1 && replication_factor != 1 {
            return Err(AdminError::new(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
        let log_config = config
            .to_log_config()
            .map_err(|error| AdminError::new(ErrorCode::INVALID_CONFIG, error.to_string()))?;
        let mut topics = self.topics.lock().await;
        if topics.records.contains_key(name) {
            return Err(AdminError::new(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            ));
        }
        let record = TopicRecord {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            config,
        };
        // Logs first, then the registry: a crash in between leaves directories without a
        // topic, which the next create of that name clears.
        self.create_partitions(name, 0..partitions, &log_config)
            .await?;
        store_blocking(&topics.store, &record).await?;
        topics.records.insert(name.to_string(), record.clone());
        self.coordinator.update_topic(name, partitions);
        tracing::info!(topic = name, partitions, "created topic");
        Ok(record)
    }

    /// Deletes a topic, every group's committed offsets for it, and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let mut topics = self.topics.lock().await;
        let Some(record) = topics.records.get(name).cloned() else {
            return Err(unknown_topic(name));
        };
        // Committed offsets first: if that fails the topic stays, whole, and the deletion can
        // be retried; offsets left behind would otherwise apply to a later topic of the name.
        match self.coordinator.delete_topic(name).await {
            Ok(offsets) => tracing::info!(topic = name, offsets, "deleted committed offsets"),
            Err(error) => {
                self.coordinator.update_topic(name, record.partitions);
                return Err(AdminError::new(
                    ErrorCode::KAFKA_STORAGE_ERROR,
                    format!("deleting the committed offsets of topic '{name}': {error}"),
                ));
            }
        }
        // Registry next: once the topic is gone from it, its directories are garbage.
        if let Err(error) = remove_blocking(&topics.store, name).await {
            self.coordinator.update_topic(name, record.partitions);
            return Err(error);
        }
        topics.records.remove(name);
        let manager = Arc::clone(&self.manager);
        let topic: Arc<str> = Arc::from(name);
        let result = tokio::task::spawn_blocking(move || {
            for partition in 0..record.partitions {
                manager.delete_partition(&TopicPartition {
                    topic: Arc::clone(&topic),
                    partition,
                })?;
            }
            Ok::<_, crate::log::LogError>(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(topic = name, %error, "deleting topic data failed"),
            Err(error) => tracing::warn!(topic = name, %error, "deleting topic data panicked"),
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub async fn add_partitions(&self, name: &str, count: i32) -> Result<(), AdminError> {
        let mut topics = self.topics.lock().await;
        let Some(mut record) = topics.records.get(name).cloned() else {
            return Err(unknown_topic(name));
        };
        check_partition_count(count)?;
        if count <= record.partitions {
            return Err(AdminError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "topic '{name}' has {} partitions; the new count must be larger",
                    record.partitions
                ),
            ));
        }
        let log_config = record
            .config
            .to_log_config()
            .map_err(|error| AdminError::new(ErrorCode::INVALID_CONFIG, error.to_string()))?;
        self.create_partitions(name, record.partitions..count, &log_config)
            .await?;
        record.partitions = count;
        store_blocking(&topics.store, &record).await?;
        topics.records.insert(name.to_string(), record);
        self.coordinator.update_topic(name, count);
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    async fn create_partitions(
        &self,
        name: &str,
        range: std::ops::Range<i32>,
        log_config: &crate::log::LogConfig,
    ) -> Result<(), AdminError> {
        let manager = Arc::clone(&self.manager);
        let topic: Arc<str> = Arc::from(name);
        let log_config = log_config.clone();
        tokio::task::spawn_blocking(move || {
            for partition in range {
                manager.create_partition(
                    TopicPartition {
                        topic: Arc::clone(&topic),
                        partition,
                    },
                    log_config.clone(),
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|error| AdminError::new(ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()))?
        .map_err(|error: crate::log::LogError| {
            AdminError::new(ErrorCode::KAFKA_STORAGE_ERROR, error.to_string())
        })
    }
}

/// An `UNKNOWN_TOPIC_OR_PARTITION` error for `name`.
pub(super) fn unknown_topic(name: &str) -> AdminError {
    AdminError::new(
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        format!("topic '{name}' does not exist"),
    )
}

fn check_partition_count(partitions: i32) -> Result<(), AdminError> {
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err(AdminError::new(
            ErrorCode::INVALID_PARTITIONS,
            format!("partition count {partitions} is outside 1..={PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

async fn store_blocking(store: &Arc<TopicStore>, record: &TopicRecord) -> Result<(), AdminError> {
    let (store, record) = (Arc::clone(store), record.clone());
    tokio::task::spawn_blocking(move || store.save(&record))
        .await
        .map_err(|error| AdminError::new(ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()))?
        .map_err(|error| AdminError::new(ErrorCode::KAFKA_STORAGE_ERROR, error.to_string()))
}

async fn remove_blocking(store: &Arc<TopicStore>, name: &str) -> Result<(), AdminError> {
    let (store, name) = (Arc::clone(store), name.to_string());
    tokio::task::spawn_blocking(move || store.remove(&name))
        .await
        .map_err(|error| AdminError::new(ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()))?
        .map_err(|error| AdminError::new(ErrorCode::KAFKA_STORAGE_ERROR, error.to_string()))
}

fn lock_data_dir(data_dir: &Path) -> Result<File, StartError> {
    let path = data_dir.join(".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StartError::Io {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked {
            path: data_dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn advertised(config: &BrokerConfig, bound: std::net::SocketAddr) -> (String, i32) {
    if let Some(listener) = &config.advertised_listener {
        if let Some((host, port)) = listener.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                return (host.to_string(), port);
            }
        }
    }
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        bound.ip().to_string()
    };
    (host, i32::from(bound.port()))
}
