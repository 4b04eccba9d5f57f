//! [`LogManager`]: owns every partition log of the broker, and the background work on them:
//! periodic fsync for the `interval` flush policy, periodic recovery-point checkpoints, and
//! retention. Connection tasks reach logs only through it.
//!
//! Partition `p` of topic `t` lives in `<data-dir>/t-p/`. All file work is blocking and runs
//! on tokio's blocking pool; background passes take one log at a time, so a slow partition
//! does not hold up appends or fetches on the others.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use mq_protocol::Offset;

use crate::log::{FlushPolicy, LogConfig, LogError, PartitionLog, SharedLog};

/// A topic name and partition number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One open partition.
#[derive(Debug)]
pub struct Partition {
    /// Its log.
    pub log: SharedLog,
    /// The leader epoch under which this broker leads the partition; [`NOT_LEADING`] when
    /// it does not (it is being copied here, or away). Produces are appended only while
    /// leading, checked under the log's write lock (`SharedLog::append_unflushed_if`).
    pub leader_epoch: std::sync::atomic::AtomicI32,
    /// When the background task last fsynced it (for the `interval` policy).
    last_flush: std::sync::Mutex<Instant>,
}

/// [`Partition::leader_epoch`] of a partition this broker does not lead.
pub const NOT_LEADING: i32 = -1;

impl Partition {
    /// Whether this broker leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.leader_epoch.load(std::sync::atomic::Ordering::Acquire) != NOT_LEADING
    }
}

/// Every partition log of this broker.
#[derive(Debug)]
pub struct LogManager {
    /// The data directory.
    data_dir: PathBuf,
    /// Open partitions.
    partitions: DashMap<TopicPartition, Arc<Partition>>,
}

impl LogManager {
    /// A manager of the logs under `data_dir` (opened one by one with
    /// [`LogManager::open_partition`]).
    pub fn new(data_dir: &Path) -> LogManager {
        LogManager {
            data_dir: data_dir.to_path_buf(),
            partitions: DashMap::new(),
        }
    }

    /// The directory of a partition.
    pub fn partition_dir(&self, topic_partition: &TopicPartition) -> PathBuf {
        self.data_dir.join(topic_partition.to_string())
    }

    /// Opens (creating if needed) a partition's log. Blocking.
    pub fn open_partition(
        &self,
        topic_partition: TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Partition>, LogError> {
        let dir = self.partition_dir(&topic_partition);
        let log = PartitionLog::open(&dir, config, SystemTime::now())?;
        tracing::debug!(partition = %topic_partition, log_end = %log.log_end(), "opened partition");
        let partition = Arc::new(Partition {
            log: SharedLog::new(log),
            leader_epoch: std::sync::atomic::AtomicI32::new(NOT_LEADING),
            last_flush: std::sync::Mutex::new(Instant::now()),
        });
        self.partitions
            .insert(topic_partition, Arc::clone(&partition));
        Ok(partition)
    }

    /// Creates a partition's log, deleting anything left in its directory by an earlier
    /// topic of the same name. Blocking.
    pub fn create_partition(
        &self,
        topic_partition: TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Partition>, LogError> {
        let dir = self.partition_dir(&topic_partition);
        if dir.exists() {
            tracing::warn!(dir = %dir.display(), "removing leftover data of an earlier topic");
            std::fs::remove_dir_all(&dir).map_err(|source| LogError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        self.open_partition(topic_partition, config)
    }

    /// The partition, if open.
    pub fn get(&self, topic_partition: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions
            .get(topic_partition)
            .map(|entry| Arc::clone(entry.value()))
    }

    /// Forgets a partition and deletes its directory. Requests still holding it finish on
    /// the open files. Blocking.
    pub fn delete_partition(&self, topic_partition: &TopicPartition) -> Result<(), LogError> {
        self.partitions.remove(topic_partition);
        let dir = self.partition_dir(topic_partition);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LogError::Io { path: dir, source }),
        }
    }

    /// Every open partition.
    pub fn all(&self) -> Vec<(TopicPartition, Arc<Partition>)> {
        self.partitions
            .iter()
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect()
    }

    /// Fsyncs the partitions whose `interval` policy is due, and, when `checkpoint` is set,
    /// checkpoints the recovery points that moved. Blocking; called by a background task.
    pub fn flush_pass(&self, checkpoint: bool) {
        for (topic_partition, partition) in self.all() {
            if let FlushPolicy::Interval(interval) = partition.log.flush_policy() {
                let due = {
                    let last = partition
                        .last_flush
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    last.elapsed() >= interval
                };
                if due {
                    if let Err(error) = partition.log.flush_to(partition.log.log_end()) {
                        tracing::error!(partition = %topic_partition, %error, "periodic flush failed");
                    }
                    *partition
                        .last_flush
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
                }
            }
            if checkpoint {
                let result = partition
                    .log
                    .with_log_mut(|log| log.checkpoint_if_changed());
                if let Err(error) = result.and_then(|inner| inner) {
                    tracing::warn!(partition = %topic_partition, %error, "checkpoint failed");
                }
            }
        }
    }

    /// Applies retention to every partition. Blocking; called by a background task.
    pub fn retention_pass(&self) {
        let now = SystemTime::now();
        for (topic_partition, partition) in self.all() {
            let outcome = partition.log.with_log_mut(|log| log.apply_retention(now));
            match outcome.and_then(|inner| inner) {
                Ok(outcome) if outcome.deleted_segments > 0 => {
                    tracing::info!(
                        partition = %topic_partition,
                        deleted_segments = outcome.deleted_segments,
                        deleted_bytes = outcome.deleted_bytes,
                        log_start = %outcome.log_start,
                        "retention deleted segments"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(partition = %topic_partition, %error, "retention failed");
                }
            }
        }
    }

    /// Closes every log cleanly (flush, clean-shutdown checkpoint). Blocking; call once no
    /// request uses the logs any more.
    pub fn close_all(&self) {
        let all: Vec<(TopicPartition, Arc<Partition>)> = self.all();
        self.partitions.clear();
        for (topic_partition, partition) in all {
            match Arc::try_unwrap(partition) {
                Ok(partition) => {
                    if let Err(error) = partition.log.close() {
                        tracing::error!(partition = %topic_partition, %error, "close failed");
                    }
                }
                Err(partition) => {
                    // Still referenced (a request that outlived shutdown): make it durable at
                    // least; the next start recovers it from its recovery point.
                    tracing::warn!(partition = %topic_partition, "log still in use at shutdown");
                    let _ = partition.log.flush_to(Offset::MAX);
                }
            }
        }
    }
}

/// Runs the background work until `shutdown` resolves: interval flushes (checked every
/// 100 ms), recovery-point checkpoints every 60 s, retention every `retention_interval`.
pub async fn run_background(
    manager: Arc<LogManager>,
    retention_interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut flush_tick = tokio::time::interval(Duration::from_millis(100));
    let mut retention_tick = tokio::time::interval(retention_interval);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = flush_tick.tick() => {
                let checkpoint = last_checkpoint.elapsed() >= Duration::from_secs(60);
                if checkpoint {
                    last_checkpoint = Instant::now();
                }
                let manager = Arc::clone(&manager);
                let _ = tokio::task::spawn_blocking(move || manager.flush_pass(checkpoint)).await;
            }
            _ = retention_tick.tick() => {
                let manager = Arc::clone(&manager);
                let _ = tokio::task::spawn_blocking(move || manager.retention_pass()).await;
            }
        }
    }
}
