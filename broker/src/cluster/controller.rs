//! [`Controller`]: the node that owns the cluster's metadata.
//!
//! Every change (a broker registering or being fenced, a topic created, a partition's leader
//! changed) is first appended, durably, to the metadata log (`<data-dir>/__cluster_metadata/`,
//! a partition log of the same format as the data), then applied to the controller's
//! [`ClusterImage`]. At start-up the log is replayed, so a restarted controller knows
//! everything it knew. Brokers read the same log through `FetchMetadata`.
//!
//! Changes are serialised by one lock: each operation reads the image, decides, appends and
//! applies under it, so two operations never decide on the same stale state. Broker sessions
//! (the time of each broker's last heartbeat) are in memory only: after a restart every
//! registered broker gets a full session timeout to heartbeat again.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_protocol::batch::BatchIter;
use mq_protocol::cluster::{
    AlterPartitionRequest, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerRegistrationRequest, BrokerRegistrationResponse, ErrorResponse, FetchMetadataRequest,
    FetchMetadataResponse, PartitionMove, ReassignPartitionRequest, RebalanceResponse,
};
use mq_protocol::record::{self, BatchBuilder, Record};
use mq_protocol::request::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, Request,
};
use mq_protocol::response::{Response, TopicError, TopicErrorsResponse};
use mq_protocol::{Compression, ErrorCode, Offset};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::image::ClusterImage;
use super::placement::{self, Assignment, BrokerLoad};
use super::records::{MetadataRecord, PartitionState};
use crate::config::TopicConfig;
use crate::log::{LogConfig, LogError, PartitionLog, SharedLog};
use crate::topics::{self, PARTITIONS_MAX};

/// The metadata log's directory under the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// The longest a `FetchMetadata` may wait, whatever it asks for.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(10);

/// Bytes read at a time while replaying the log.
const REPLAY_READ_BYTES: u64 = 1024 * 1024;

/// How long a rebalance waits for one move before going on with the next.
const MOVE_WAIT_MAX: Duration = Duration::from_secs(120);

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Its node id.
    pub node_id: i32,
    /// A broker not heard from for this long is fenced.
    pub session_timeout: Duration,
    /// Settings of topics created without them.
    pub topic_defaults: TopicConfig,
}

/// An operation's failure: a wire error code and a message for people.
type Refusal = (ErrorCode, String);

/// The mutable part, under one lock.
#[derive(Debug)]
struct State {
    /// The metadata as of the log's end.
    image: ClusterImage,
    /// When each broker was last heard from.
    sessions: HashMap<i32, Instant>,
}

/// The cluster's controller.
#[derive(Debug)]
pub struct Controller {
    /// Settings.
    settings: ControllerSettings,
    /// The metadata log.
    log: Arc<SharedLog>,
    /// Image and sessions.
    state: Mutex<State>,
    /// The image as of the latest applied change, for readers that must not wait for the lock.
    published: watch::Sender<Arc<ClusterImage>>,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The metadata log could not be opened or read.
    #[error("metadata log: {0}")]
    Log(#[from] LogError),
    /// A change in the metadata log could not be decoded.
    #[error("metadata log at offset {offset}: {reason}")]
    Corrupt {
        /// Where.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
}

impl Controller {
    /// Opens the metadata log under `data_dir` and replays it. Blocking.
    pub fn open(
        data_dir: &Path,
        settings: ControllerSettings,
    ) -> Result<Controller, ControllerError> {
        let config = LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&data_dir.join(METADATA_DIR), config, SystemTime::now())?;
        let mut image = ClusterImage::default();
        replay(&log, &mut image)?;
        tracing::info!(
            metadata_offset = image.offset,
            brokers = image.brokers.len(),
            topics = image.topics.len(),
            "controller replayed the metadata log"
        );
        let now = Instant::now();
        let sessions = image
            .live_brokers()
            .map(|broker| (broker.node_id, now))
            .collect();
        let published = watch::Sender::new(Arc::new(image.clone()));
        Ok(Controller {
            settings,
            log: Arc::new(SharedLog::new(log)),
            state: Mutex::new(State { image, sessions }),
            published,
        })
    }

    /// The controller's node id.
    pub fn node_id(&self) -> i32 {
        self.settings.node_id
    }

    /// The image as of the latest change, and its changes from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.published.subscribe()
    }

    /// Imports topics of a single-node data directory written before cluster mode (the
    /// `topics/` registry), placing every partition on `node_id`, when the metadata log is
    /// empty. The partitions' data stays where it is.
    pub async fn import_legacy_topics(
        &self,
        records: Vec<crate::topics::TopicRecord>,
        node_id: i32,
    ) -> Result<usize, Refusal> {
        let mut state = self.state.lock().await;
        if state.image.offset != 0 || records.is_empty() {
            return Ok(0);
        }
        let mut changes = Vec::new();
        for topic in &records {
            changes.push(MetadataRecord::Topic {
                name: topic.name.clone(),
                id: random_id(),
                replication_factor: 1,
                config: config_text(&topic.config)?,
            });
            for partition in 0..topic.partitions {
                changes.push(MetadataRecord::Partition(PartitionState {
                    topic: topic.name.clone(),
                    partition,
                    replicas: vec![node_id],
                    isr: vec![node_id],
                    leader: -1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    moving_to: -1,
                }));
            }
        }
        self.commit(&mut state, changes).await?;
        Ok(records.len())
    }

    /// Answers a request the controller handles; `None` for any other.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Option<Response> {
        Some(match request {
            Request::BrokerRegistration(request) => {
                Response::BrokerRegistration(self.register(request).await)
            }
            Request::BrokerHeartbeat(request) => {
                Response::BrokerHeartbeat(self.heartbeat(request).await)
            }
            Request::FetchMetadata(request) => {
                Response::FetchMetadata(self.fetch_metadata(request).await)
            }
            Request::CreateTopics(request) => {
                Response::CreateTopics(self.create_topics(request).await)
            }
            Request::DeleteTopics(request) => {
                Response::DeleteTopics(self.delete_topics(request).await)
            }
            Request::CreatePartitions(request) => {
                Response::CreatePartitions(self.create_partitions(request).await)
            }
            Request::ReassignPartition(request) => {
                Response::ReassignPartition(self.reassign(request).await)
            }
            Request::AlterPartition(request) => {
                Response::AlterPartition(self.alter_partition(request).await)
            }
            Request::Rebalance(request) => {
                Response::Rebalance(self.rebalance(request.dry_run).await)
            }
            _ => return None,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Brokers

    /// Registers a broker (or answers a retried registration with the epoch it was given).
    pub async fn register(&self, request: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
        let refuse = |(error_code, message): Refusal| BrokerRegistrationResponse {
            error_code,
            error_message: Some(message),
            broker_epoch: -1,
            controller_id: self.settings.node_id,
        };
        if request.node_id < 0 || request.port <= 0 || request.host.is_empty() {
            return refuse((
                ErrorCode::INVALID_REQUEST,
                "a broker needs a non-negative node id, a host and a port".to_string(),
            ));
        }
        let mut state = self.state.lock().await;
        if let Some(known) = state.image.brokers.get(&request.node_id) {
            if !known.fenced
                && known.incarnation == request.incarnation
                && known.host == request.host
                && known.port == request.port
            {
                let epoch = known.epoch;
                state.sessions.insert(request.node_id, Instant::now());
                return BrokerRegistrationResponse {
                    error_code: ErrorCode::NONE,
                    error_message: None,
                    broker_epoch: epoch,
                    controller_id: self.settings.node_id,
                };
            }
        }
        let node_id = request.node_id;
        let mut changes = vec![MetadataRecord::RegisterBroker {
            node_id,
            host: request.host,
            port: request.port,
            rack: request.rack,
            incarnation: request.incarnation,
        }];
        // Its offline partitions come back with it.
        for partition in state.image.partitions() {
            if partition.leader == -1
                && partition.moving_to == -1
                && partition.isr.contains(&node_id)
            {
                let mut changed = partition.clone();
                changed.leader = node_id;
                bump(&mut changed);
                changes.push(MetadataRecord::Partition(changed));
            }
        }
        match self.commit(&mut state, changes).await {
            Ok(epoch) => {
                state.sessions.insert(node_id, Instant::now());
                tracing::info!(node_id, broker_epoch = epoch, "broker registered");
                BrokerRegistrationResponse {
                    error_code: ErrorCode::NONE,
                    error_message: None,
                    broker_epoch: epoch,
                    controller_id: self.settings.node_id,
                }
            }
            Err(refusal) => refuse(refusal),
        }
    }

    /// Records a broker's heartbeat.
    pub async fn heartbeat(&self, request: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        let mut state = self.state.lock().await;
        let Some(known) = state.image.brokers.get(&request.node_id) else {
            return BrokerHeartbeatResponse {
                error_code: ErrorCode::STALE_BROKER_EPOCH,
                error_message: Some(format!("broker {} is not registered", request.node_id)),
                fenced: true,
            };
        };
        if known.epoch != request.broker_epoch {
            return BrokerHeartbeatResponse {
                error_code: ErrorCode::STALE_BROKER_EPOCH,
                error_message: Some(format!(
                    "broker {} registered again, at epoch {}",
                    request.node_id, known.epoch
                )),
                fenced: known.fenced,
            };
        }
        let fenced = known.fenced;
        if !fenced {
            state.sessions.insert(request.node_id, Instant::now());
        }
        BrokerHeartbeatResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            fenced,
        }
    }

    /// Fences the brokers whose sessions expired, every `session_timeout / 4`, until
    /// `shutdown` turns true.
    pub async fn run_sessions(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let period = (self.settings.session_timeout / 4).max(Duration::from_millis(20));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let mut state = self.state.lock().await;
            let now = Instant::now();
            let expired: Vec<i32> = state
                .image
                .live_brokers()
                .map(|broker| broker.node_id)
                .filter(|node_id| {
                    state.sessions.get(node_id).is_none_or(|last| {
                        now.duration_since(*last) >= self.settings.session_timeout
                    })
                })
                .collect();
            for node_id in expired {
                let changes = fence_changes(&state.image, node_id);
                match self.commit(&mut state, changes).await {
                    Ok(_) => {
                        state.sessions.remove(&node_id);
                        tracing::warn!(node_id, "broker session expired: fenced");
                    }
                    Err((_, message)) => {
                        tracing::error!(node_id, message, "fencing a broker failed");
                    }
                }
            }
        }
    }

    /// Reads the metadata log from `request.offset`, waiting up to `max_wait_ms` when there
    /// is nothing there yet.
    pub async fn fetch_metadata(&self, request: FetchMetadataRequest) -> FetchMetadataResponse {
        let refuse = |error_code, message: String| FetchMetadataResponse {
            error_code,
            error_message: Some(message),
            log_start: 0,
            log_end: self.log.log_end().to_wire(),
            records: Bytes::new(),
        };
        let Some(offset) = Offset::from_wire(request.offset) else {
            return refuse(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                "negative offset".to_string(),
            );
        };
        let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
            .min(FETCH_WAIT_MAX);
        let mut log_end = self.log.subscribe_log_end();
        let _ = tokio::time::timeout(wait, log_end.wait_for(|end| *end > offset)).await;
        let end = self.log.log_end();
        if offset > end {
            return refuse(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} is past the metadata log's end {end}"),
            );
        }
        let max_bytes = u64::try_from(request.max_bytes).unwrap_or(0).max(1);
        let log = Arc::clone(&self.log);
        let read = tokio::task::spawn_blocking(move || log.read(offset, max_bytes)).await;
        match read {
            Ok(Ok(records)) => FetchMetadataResponse {
                error_code: ErrorCode::NONE,
                error_message: None,
                log_start: 0,
                log_end: end.to_wire(),
                records,
            },
            Ok(Err(error)) => refuse(ErrorCode::KAFKA_STORAGE_ERROR, error.to_string()),
            Err(error) => refuse(ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Topics

    /// Creates topics, placing their partitions on the live brokers.
    pub async fn create_topics(&self, request: CreateTopicsRequest) -> TopicErrorsResponse {
        let mut topics = Vec::new();
        for topic in request.topics {
            let result = self
                .create_topic(
                    &topic.name,
                    topic.partitions,
                    topic.replication_factor,
                    &topic.configs,
                )
                .await;
            topics.push(topic_result(&topic.name, result));
        }
        TopicErrorsResponse { topics }
    }

    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), Refusal> {
        topics::validate_topic_name(name)
            .map_err(|message| (ErrorCode::INVALID_TOPIC_EXCEPTION, message))?;
        let mut config = self.settings.topic_defaults.clone();
        config
            .set_all(configs)
            .map_err(|error| (ErrorCode::INVALID_CONFIG, error.to_string()))?;
        config
            .to_log_config()
            .map_err(|error| (ErrorCode::INVALID_CONFIG, error.to_string()))?;
        let partitions = if partitions == -1 {
            config.partitions
        } else {
            partitions
        };
        check_partition_count(partitions)?;
        if replication_factor != -1 && replication_factor != 1 {
            return Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor}: this version keeps one copy of each partition (replication factor 1)"
                ),
            ));
        }
        let mut state = self.state.lock().await;
        if state.image.topics.contains_key(name) {
            return Err((
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            ));
        }
        let placed = place(&state.image, usize::try_from(partitions).unwrap_or(0))?;
        let mut changes = vec![MetadataRecord::Topic {
            name: name.to_string(),
            id: random_id(),
            replication_factor: 1,
            config: config_text(&config)?,
        }];
        changes.extend(new_partitions(name, 0, placed));
        self.commit(&mut state, changes).await?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(())
    }

    /// Deletes topics.
    pub async fn delete_topics(&self, request: DeleteTopicsRequest) -> TopicErrorsResponse {
        let mut topics = Vec::new();
        for name in request.names {
            let mut state = self.state.lock().await;
            let result = if state.image.topics.contains_key(&name) {
                let change = MetadataRecord::RemoveTopic { name: name.clone() };
                self.commit(&mut state, vec![change]).await.map(|_| ())
            } else {
                Err(unknown_topic(&name))
            };
            drop(state);
            topics.push(topic_result(&name, result));
        }
        TopicErrorsResponse { topics }
    }

    /// Grows topics.
    pub async fn create_partitions(&self, request: CreatePartitionsRequest) -> TopicErrorsResponse {
        let mut topics = Vec::new();
        for topic in request.topics {
            let result = self.add_partitions(&topic.name, topic.count).await;
            topics.push(topic_result(&topic.name, result));
        }
        TopicErrorsResponse { topics }
    }

    async fn add_partitions(&self, name: &str, count: i32) -> Result<(), Refusal> {
        check_partition_count(count)?;
        let mut state = self.state.lock().await;
        let current = match state.image.topics.get(name) {
            Some(topic) => topic.partitions.len(),
            None => return Err(unknown_topic(name)),
        };
        let count = usize::try_from(count).unwrap_or(0);
        if count <= current {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("topic '{name}' has {current} partitions; the new count must be larger"),
            ));
        }
        let placed = place(&state.image, count - current)?;
        let first = i32::try_from(current).unwrap_or(i32::MAX);
        let changes = new_partitions(name, first, placed).collect();
        self.commit(&mut state, changes).await?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Moving partitions

    /// Starts moving a partition to another broker: it goes offline (leader -1, a new leader
    /// epoch) with `moving_to` set; the target copies it from its current broker and then
    /// reports with `AlterPartition`.
    pub async fn reassign(&self, request: ReassignPartitionRequest) -> ErrorResponse {
        let mut state = self.state.lock().await;
        match start_move(
            &state.image,
            &request.topic,
            request.partition,
            request.target,
        ) {
            Ok(change) => match self.commit(&mut state, vec![change]).await {
                Ok(_) => {
                    tracing::info!(
                        topic = request.topic,
                        partition = request.partition,
                        target = request.target,
                        "moving partition"
                    );
                    ErrorResponse::default()
                }
                Err((code, message)) => ErrorResponse::new(code, message),
            },
            Err((code, message)) => ErrorResponse::new(code, message),
        }
    }

    /// A move's target holds the partition's data: it becomes the partition's only replica
    /// and its leader.
    pub async fn alter_partition(&self, request: AlterPartitionRequest) -> ErrorResponse {
        let mut state = self.state.lock().await;
        let Some(broker) = state.image.brokers.get(&request.node_id) else {
            return ErrorResponse::new(ErrorCode::STALE_BROKER_EPOCH, "unknown broker");
        };
        if broker.epoch != request.broker_epoch || broker.fenced {
            return ErrorResponse::new(
                ErrorCode::STALE_BROKER_EPOCH,
                format!("broker {} is not registered at that epoch", request.node_id),
            );
        }
        let Some(partition) = state.image.partition(&request.topic, request.partition) else {
            return ErrorResponse::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{}-{} does not exist", request.topic, request.partition),
            );
        };
        if partition.moving_to != request.node_id || partition.leader_epoch != request.leader_epoch
        {
            return ErrorResponse::new(
                ErrorCode::FENCED_LEADER_EPOCH,
                format!(
                    "{}-{} is not moving to broker {} at leader epoch {}",
                    request.topic, request.partition, request.node_id, request.leader_epoch
                ),
            );
        }
        let mut changed = partition.clone();
        let from = changed.replicas.clone();
        changed.replicas = vec![request.node_id];
        changed.isr = vec![request.node_id];
        changed.leader = request.node_id;
        changed.moving_to = -1;
        bump(&mut changed);
        match self
            .commit(&mut state, vec![MetadataRecord::Partition(changed)])
            .await
        {
            Ok(_) => {
                tracing::info!(
                    topic = request.topic,
                    partition = request.partition,
                    ?from,
                    to = request.node_id,
                    log_end = request.log_end,
                    "moved partition"
                );
                ErrorResponse::default()
            }
            Err((code, message)) => ErrorResponse::new(code, message),
        }
    }

    /// Plans the moves that even out the live brokers' partition counts and, unless
    /// `dry_run`, makes them one at a time in the background.
    pub async fn rebalance(self: &Arc<Self>, dry_run: bool) -> RebalanceResponse {
        let moves = {
            let state = self.state.lock().await;
            if state
                .image
                .partitions()
                .any(|partition| partition.moving_to != -1)
            {
                return RebalanceResponse {
                    error_code: ErrorCode::REASSIGNMENT_IN_PROGRESS,
                    error_message: Some("partitions are being moved already".to_string()),
                    moves: Vec::new(),
                };
            }
            let loads = loads(&state.image);
            let assignments: Vec<Assignment> = state
                .image
                .partitions()
                .map(|partition| Assignment {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    replicas: partition.replicas.clone(),
                    leader: partition.leader,
                })
                .collect();
            placement::rebalance(&loads, &assignments)
        };
        let moves: Vec<PartitionMove> = moves
            .into_iter()
            .map(|planned| PartitionMove {
                topic: planned.topic,
                partition: planned.partition,
                from: planned.from,
                to: planned.to,
            })
            .collect();
        if !dry_run && !moves.is_empty() {
            let controller = Arc::clone(self);
            let planned = moves.clone();
            tokio::spawn(async move { controller.make_moves(planned).await });
        }
        RebalanceResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            moves,
        }
    }

    async fn make_moves(&self, moves: Vec<PartitionMove>) {
        let mut image = self.subscribe();
        for planned in moves {
            let started = self
                .reassign(ReassignPartitionRequest {
                    topic: planned.topic.clone(),
                    partition: planned.partition,
                    target: planned.to,
                })
                .await;
            if !started.error_code.is_ok() {
                tracing::warn!(
                    topic = planned.topic,
                    partition = planned.partition,
                    message = started.error_message,
                    "rebalance: move not started"
                );
                continue;
            }
            let done = image.wait_for(|image| {
                image
                    .partition(&planned.topic, planned.partition)
                    .is_none_or(|partition| partition.moving_to == -1)
            });
            if tokio::time::timeout(MOVE_WAIT_MAX, done).await.is_err() {
                tracing::warn!(
                    topic = planned.topic,
                    partition = planned.partition,
                    "rebalance: a move did not finish in time; stopping"
                );
                return;
            }
        }
    }

    // -----------------------------------------------------------------------------------------

    /// Appends `changes` as one batch, durably, and applies them. Returns the offset of the
    /// first.
    async fn commit(
        &self,
        state: &mut State,
        changes: Vec<MetadataRecord>,
    ) -> Result<i64, Refusal> {
        let timestamp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let mut builder = BatchBuilder::new(Compression::None);
        for change in &changes {
            builder
                .append(&Record::new(
                    timestamp,
                    None,
                    Some(change.encode().freeze()),
                ))
                .map_err(|error| (ErrorCode::POLICY_VIOLATION, error.to_string()))?;
        }
        let mut batch = builder
            .seal(0)
            .map_err(|error| (ErrorCode::POLICY_VIOLATION, error.to_string()))?
            .to_vec();
        let log = Arc::clone(&self.log);
        let appended =
            tokio::task::spawn_blocking(move || log.append(&mut batch, SystemTime::now()))
                .await
                .map_err(|error| (ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()))?
                .map_err(|error| (ErrorCode::KAFKA_STORAGE_ERROR, error.to_string()))?;
        let base = appended.base_offset.to_wire();
        for (index, change) in changes.into_iter().enumerate() {
            state
                .image
                .apply(base + i64::try_from(index).unwrap_or(i64::MAX), change);
        }
        self.published.send_replace(Arc::new(state.image.clone()));
        Ok(base)
    }
}

/// Reads every change of `log` into `image`.
fn replay(log: &PartitionLog, image: &mut ClusterImage) -> Result<(), ControllerError> {
    let mut next = log.log_start();
    while next < log.log_end() {
        let chunk = log.read(next, REPLAY_READ_BYTES)?;
        if chunk.is_empty() {
            return Err(corrupt(next, "the log ends before its log end offset"));
        }
        for found in BatchIter::new(&chunk) {
            let found = found.map_err(|error| corrupt(next, error))?;
            apply_batch(&chunk.slice_ref(found.bytes), image, &mut apply_to_image)
                .map_err(|(offset, reason)| ControllerError::Corrupt { offset, reason })?;
            next = Offset::from_wire(found.header.next_offset())
                .ok_or_else(|| corrupt(next, "negative offset"))?;
        }
    }
    Ok(())
}

/// Applies each change of one record batch of the metadata log that `image` has not applied
/// yet, through `apply` (which must apply it to `image`); on failure, the offset and why.
pub(crate) fn apply_batch(
    batch: &Bytes,
    image: &mut ClusterImage,
    apply: &mut impl FnMut(&mut ClusterImage, i64, MetadataRecord),
) -> Result<(), (i64, String)> {
    let records = record::records(batch).map_err(|error| (image.offset, error.to_string()))?;
    for found in records {
        let view = found.map_err(|error| (image.offset, error.to_string()))?;
        if view.offset < image.offset {
            continue;
        }
        let value = view
            .value
            .ok_or_else(|| (view.offset, "a metadata record without a value".to_string()))?;
        let change =
            MetadataRecord::decode(&value).map_err(|error| (view.offset, error.to_string()))?;
        apply(image, view.offset, change);
    }
    Ok(())
}

/// Applies a change to the image alone.
pub(crate) fn apply_to_image(image: &mut ClusterImage, offset: i64, change: MetadataRecord) {
    image.apply(offset, change);
}

fn corrupt(offset: Offset, reason: impl ToString) -> ControllerError {
    ControllerError::Corrupt {
        offset: offset.to_wire(),
        reason: reason.to_string(),
    }
}

/// The changes that fence `node_id`: the broker, then a new leader (or none) for each
/// partition it led, and the end of every move towards it.
fn fence_changes(image: &ClusterImage, node_id: i32) -> Vec<MetadataRecord> {
    let mut changes = vec![MetadataRecord::FenceBroker { node_id }];
    for partition in image.partitions() {
        if partition.moving_to == node_id {
            // The copy cannot finish: the partition stays where it is.
            let mut changed = partition.clone();
            changed.moving_to = -1;
            changed.leader = elect(image, &changed, node_id);
            bump(&mut changed);
            changes.push(MetadataRecord::Partition(changed));
        } else if partition.leader == node_id {
            let mut changed = partition.clone();
            changed.leader = elect(image, &changed, node_id);
            bump(&mut changed);
            changes.push(MetadataRecord::Partition(changed));
        }
    }
    changes
}

/// The first in-sync replica that is alive and not `excluded`; -1 when there is none.
fn elect(image: &ClusterImage, partition: &PartitionState, excluded: i32) -> i32 {
    partition
        .isr
        .iter()
        .copied()
        .find(|replica| *replica != excluded && image.is_alive(*replica))
        .unwrap_or(-1)
}

/// A new leader epoch and partition epoch.
fn bump(partition: &mut PartitionState) {
    partition.leader_epoch = partition.leader_epoch.saturating_add(1);
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
}

/// The change that starts moving a partition to `target`, or why it cannot move.
fn start_move(
    image: &ClusterImage,
    topic: &str,
    partition: i32,
    target: i32,
) -> Result<MetadataRecord, Refusal> {
    let Some(state) = image.partition(topic, partition) else {
        return Err((
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("partition {topic}-{partition} does not exist"),
        ));
    };
    if state.moving_to != -1 {
        return Err((
            ErrorCode::REASSIGNMENT_IN_PROGRESS,
            format!(
                "{topic}-{partition} is being moved to broker {} already",
                state.moving_to
            ),
        ));
    }
    if state.replicas.len() != 1 {
        return Err((
            ErrorCode::INVALID_REPLICA_ASSIGNMENT,
            format!(
                "{topic}-{partition} has {} replicas; only single-replica partitions can be moved",
                state.replicas.len()
            ),
        ));
    }
    if state.replicas.contains(&target) {
        return Err((
            ErrorCode::INVALID_REPLICA_ASSIGNMENT,
            format!("{topic}-{partition} is on broker {target} already"),
        ));
    }
    if !image.is_alive(target) {
        return Err((
            ErrorCode::BROKER_NOT_AVAILABLE,
            format!("broker {target} is not a live broker of the cluster"),
        ));
    }
    if state.leader == -1 {
        return Err((
            ErrorCode::LEADER_NOT_AVAILABLE,
            format!(
                "{topic}-{partition} is offline (broker {} is down): its data cannot be copied",
                state.replicas[0]
            ),
        ));
    }
    let mut changed = state.clone();
    changed.leader = -1;
    changed.moving_to = target;
    bump(&mut changed);
    Ok(MetadataRecord::Partition(changed))
}

/// What every live broker holds now.
fn loads(image: &ClusterImage) -> Vec<BrokerLoad> {
    image
        .live_brokers()
        .map(|broker| BrokerLoad {
            node_id: broker.node_id,
            rack: broker.rack.clone(),
            replicas: image
                .partitions()
                .filter(|partition| partition.replicas.contains(&broker.node_id))
                .count(),
            leaders: image
                .partitions()
                .filter(|partition| partition.leader == broker.node_id)
                .count(),
        })
        .collect()
}

/// Replica lists for `count` new partitions of replication factor 1.
fn place(image: &ClusterImage, count: usize) -> Result<Vec<Vec<i32>>, Refusal> {
    placement::place(&loads(image), count, 1)
        .map_err(|error| (ErrorCode::INVALID_REPLICATION_FACTOR, error.to_string()))
}

/// Partition records for new partitions numbered from `first`, led by their first replicas.
fn new_partitions(
    topic: &str,
    first: i32,
    placed: Vec<Vec<i32>>,
) -> impl Iterator<Item = MetadataRecord> + '_ {
    (first..).zip(placed).map(move |(partition, replicas)| {
        MetadataRecord::Partition(PartitionState {
            topic: topic.to_string(),
            partition,
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            moving_to: -1,
        })
    })
}

fn check_partition_count(partitions: i32) -> Result<(), Refusal> {
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err((
            ErrorCode::INVALID_PARTITIONS,
            format!("partition count {partitions} is outside 1..={PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

fn unknown_topic(name: &str) -> Refusal {
    (
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        format!("topic '{name}' does not exist"),
    )
}

fn topic_result(name: &str, result: Result<(), Refusal>) -> TopicError {
    let (error_code, error_message) = match result {
        Ok(()) => (ErrorCode::NONE, None),
        Err((code, message)) => (code, Some(message)),
    };
    TopicError {
        name: name.to_string(),
        error_code,
        error_message,
    }
}

/// A topic's settings as the metadata log keeps them.
fn config_text(config: &TopicConfig) -> Result<String, Refusal> {
    toml::to_string(config).map_err(|error| (ErrorCode::INVALID_CONFIG, error.to_string()))
}

/// A random 128-bit id (topic ids).
pub(crate) fn random_id() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let high = RandomState::new().hash_one(nanos);
    let low = RandomState::new().hash_one((nanos, std::process::id()));
    (u128::from(high) << 64) | u128::from(low)
}
