//! [`Broker`]: the state every connection shares: settings, the cluster's metadata as this
//! broker applied it, the log manager, the group coordinator, the controller (when this
//! process runs it), and the shutdown signal. Admin operations go to the controller
//! ([`Broker::forward`]); the broker answers once their effect reached its own metadata.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use mq_protocol::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use mq_protocol::request::Request;
use mq_protocol::response::Response;

use crate::cluster::{ClusterImage, ClusterNode, Controller};
use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::manager::LogManager;
use crate::metrics::{GroupOffsetSnapshot, Metrics, PartitionSnapshot, Snapshot};
use crate::offsets::{OffsetStore, OffsetsError};
use crate::topics;

use super::inline_appends::InlineAppends;

/// How long a forwarded admin request, and the wait for its effect here, may take.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The controller's metadata log could not be opened.
    #[error("opening the controller: {0}")]
    Controller(#[from] crate::cluster::ControllerError),
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
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
        }
    }
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
    /// Whether a small append may run on the runtime worker.
    pub(crate) inline_appends: Arc<InlineAppends>,
    /// The fsync rounds that acks=all produce requests started (see `wait_durable`): they
    /// may outlive the requests they answered, and shutdown waits for them before it
    /// closes the logs.
    pub(crate) durability_rounds: TaskTracker,
    /// The controller, when this process runs it (roles `combined` and `controller`).
    pub controller: Option<Arc<Controller>>,
    /// This broker's membership of the cluster (roles `combined` and `broker`).
    pub node: Option<ClusterNode>,
    /// The cluster's metadata as this broker last applied it.
    image: watch::Sender<Arc<ClusterImage>>,
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

    /// Opens the data directory (locking it) and the committed offsets. Blocking. `bound` is
    /// the address actually listened on (for an ephemeral port). Partition logs are opened
    /// when the cluster's metadata assigns them here (`cluster::start`).
    pub fn open(
        config: BrokerConfig,
        bound: std::net::SocketAddr,
        controller: Option<Arc<Controller>>,
        node: Option<ClusterNode>,
    ) -> Result<Broker, StartError> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let io = |source| StartError::Io {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(io)?;
        let lock = lock_data_dir(&data_dir)?;
        let manager = Arc::new(LogManager::new(&data_dir));
        let offsets = OffsetStore::open(
            &data_dir.join(OffsetStore::DIR_NAME),
            config.offsets_compact_min_records,
        )?;
        let coordinator = Arc::new(GroupCoordinator::new(
            config.group_config(),
            Arc::new(offsets),
            std::iter::empty(),
        ));
        let (advertised_host, advertised_port) = advertised(&config, bound);
        let request_memory = Arc::new(Semaphore::new(config.max_request_memory_bytes));
        let inline_appends = Arc::new(InlineAppends::new(config.inline_append_max_bytes));
        let image = match &controller {
            Some(controller) if node.is_none() => controller.subscribe().borrow().clone(),
            _ => Arc::new(ClusterImage::default()),
        };
        Ok(Broker {
            config,
            manager,
            coordinator,
            metrics: Metrics::new(),
            request_memory,
            inline_appends,
            durability_rounds: TaskTracker::new(),
            controller,
            node,
            image: watch::Sender::new(image),
            advertised_host,
            advertised_port,
            shutdown: watch::Sender::new(false),
            _lock: lock,
        })
    }

    /// The cluster's metadata as this broker last applied it.
    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// The image, and its changes from now on.
    pub fn subscribe_image(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image.subscribe()
    }

    /// Publishes a newly applied image to request handlers.
    pub fn publish_image(&self, image: ClusterImage) {
        self.image.send_replace(Arc::new(image));
    }

    /// This process's node id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Sends an admin request to the controller (in process, or through this broker's link)
    /// and returns its answer.
    pub async fn forward(&self, request: Request) -> Result<Response, AdminError> {
        if let Some(controller) = &self.controller {
            return controller.handle(request).await.ok_or_else(|| {
                AdminError::new(ErrorCode::INVALID_REQUEST, "not a controller request")
            });
        }
        match &self.node {
            Some(node) => node
                .link()
                .call(request, FORWARD_TIMEOUT)
                .await
                .map_err(|message| AdminError::new(ErrorCode::NOT_CONTROLLER, message)),
            None => Err(AdminError::new(
                ErrorCode::NOT_CONTROLLER,
                "this node knows no controller",
            )),
        }
    }

    /// Waits (up to a few seconds) until this broker's image satisfies `done`: a broker that
    /// forwarded a change answers once the change is in effect here.
    pub async fn wait_for_image(&self, done: impl Fn(&ClusterImage) -> bool) -> bool {
        let mut image = self.subscribe_image();
        tokio::time::timeout(FORWARD_TIMEOUT, image.wait_for(|image| done(image)))
            .await
            .is_ok_and(|result| result.is_ok())
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

/// The host and port clients are told to connect to: `advertised_listener`, or the bound
/// address (loopback for an unspecified one).
pub fn advertised(config: &BrokerConfig, bound: std::net::SocketAddr) -> (String, i32) {
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
