//! Request handling: one function per API, from a decoded request to its response.
//!
//! Produce is split in two: [`produce_append`] (which a connection runs for one request at a
//! time, in arrival order) and [`produce_complete`] (the wait for durability, concurrent).
//! OffsetCommit is split the same way, in the group coordinator (`commit_append`,
//! `commit_complete`); the group APIs are otherwise the coordinator's (`crate::group`).
//!
//! File work (appends, reads, fsyncs) runs on the blocking pool, never on a runtime worker.
//! Produce acknowledges per `acks`: 0 never answers, 1 answers after the write, all (-1)
//! answers after the fsync that covers it when the topic's flush policy is `always` (the
//! default). Fetch long-polls: it waits on the log-end watermarks of its partitions until
//! `min_bytes` are available, `max_wait_ms` passed, or the broker shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_protocol::request::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    FindCoordinatorRequest, ListOffsetsPartition, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, Request,
};
use mq_protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerMetadata, FetchPartitionResponse, FetchResponse,
    FetchTopicResponse, FindCoordinatorResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, Response, TopicError, TopicErrorsResponse,
    TopicMetadata,
};
use mq_protocol::{ErrorCode, Offset};

use super::state::{unknown_topic, AdminError, Broker};
use crate::group::{check_group_id, ClientInfo};
use crate::log::{FlushPolicy, LogError};
use crate::manager::{Partition, TopicPartition};

/// The longest a fetch may wait, whatever it asks for.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Handles one request; `None` when no response is due (produce with `acks=0`).
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    context: &RequestContext,
) -> Option<Response> {
    Some(match request {
        Request::ApiVersions => Response::ApiVersions(api_versions()),
        Request::Metadata(request) => Response::Metadata(metadata(broker, request).await),
        Request::CreateTopics(request) => {
            Response::CreateTopics(create_topics(broker, request).await)
        }
        Request::DeleteTopics(request) => {
            Response::DeleteTopics(delete_topics(broker, request).await)
        }
        Request::CreatePartitions(request) => {
            Response::CreatePartitions(create_partitions(broker, request).await)
        }
        Request::Produce(request) => {
            let pending = produce_append(broker, request).await;
            return produce_complete(pending).await.map(Response::Produce);
        }
        Request::Fetch(request) => Response::Fetch(fetch(broker, request).await),
        Request::ListOffsets(request) => Response::ListOffsets(list_offsets(broker, request).await),
        Request::OffsetCommit(request) => {
            let pending = broker.coordinator.commit_append(request).await;
            Response::OffsetCommit(broker.coordinator.commit_complete(pending).await)
        }
        Request::OffsetFetch(request) => {
            Response::OffsetFetch(broker.coordinator.fetch_offsets(request))
        }
        Request::FindCoordinator(request) => {
            Response::FindCoordinator(find_coordinator(broker, &request))
        }
        Request::JoinGroup(request) => {
            let client = ClientInfo {
                client_id: context.client_id.clone().unwrap_or_default(),
                client_host: context.peer.ip().to_string(),
            };
            Response::JoinGroup(broker.coordinator.join_group(request, client).await)
        }
        Request::SyncGroup(request) => Response::SyncGroup(broker.coordinator.sync_group(request)),
        Request::Heartbeat(request) => {
            Response::Heartbeat(broker.coordinator.heartbeat(request).await)
        }
        Request::LeaveGroup(request) => {
            Response::LeaveGroup(broker.coordinator.leave_group(request))
        }
        Request::DescribeGroups(request) => {
            Response::DescribeGroups(broker.coordinator.describe_groups(request))
        }
        Request::ListGroups => Response::ListGroups(broker.coordinator.list_groups()),
        Request::DeleteGroups(request) => {
            Response::DeleteGroups(broker.coordinator.delete_groups(request).await)
        }
    })
}

/// Who sent a request.
#[derive(Clone, Debug)]
pub(crate) struct RequestContext {
    /// The client id of the request's header.
    pub(crate) client_id: Option<String>,
    /// The connection's peer address.
    pub(crate) peer: SocketAddr,
}

/// This broker coordinates every group (single node).
fn find_coordinator(broker: &Broker, request: &FindCoordinatorRequest) -> FindCoordinatorResponse {
    let error_code = match check_group_id(&request.group_id) {
        Err(code) => code,
        Ok(()) if *broker.shutting_down().borrow() => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        Ok(()) => ErrorCode::NONE,
    };
    if error_code != ErrorCode::NONE {
        return FindCoordinatorResponse {
            error_code,
            node_id: -1,
            host: String::new(),
            port: -1,
        };
    }
    FindCoordinatorResponse {
        error_code,
        node_id: broker.config.node_id,
        host: broker.advertised_host.clone(),
        port: broker.advertised_port,
    }
}

fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse {
        apis: ApiKey::ALL
            .iter()
            .filter_map(|api_key| {
                api_key
                    .versions()
                    .map(|(min_version, max_version)| ApiVersion {
                        api_key: *api_key,
                        min_version,
                        max_version,
                    })
            })
            .collect(),
    }
}

async fn metadata(broker: &Arc<Broker>, request: MetadataRequest) -> MetadataResponse {
    let records = match &request.topics {
        None => broker.topics().await,
        Some(names) => {
            let mut records = Vec::new();
            for name in names {
                if let Some(record) = find_or_auto_create(broker, name).await {
                    records.push(record);
                }
            }
            records
        }
    };
    let node_id = broker.config.node_id;
    let mut topics: Vec<TopicMetadata> = records
        .iter()
        .map(|record| TopicMetadata {
            error_code: ErrorCode::NONE,
            name: record.name.clone(),
            partitions: (0..record.partitions)
                .map(|partition| partition_metadata(broker, &record.name, partition, node_id))
                .collect(),
        })
        .collect();
    if let Some(names) = &request.topics {
        for name in names {
            if !records.iter().any(|record| &record.name == name) {
                topics.push(TopicMetadata {
                    error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    name: name.clone(),
                    partitions: Vec::new(),
                });
            }
        }
    }
    MetadataResponse {
        brokers: vec![BrokerMetadata {
            node_id,
            host: broker.advertised_host.clone(),
            port: broker.advertised_port,
        }],
        controller_id: node_id,
        topics,
    }
}

fn partition_metadata(
    broker: &Broker,
    topic: &str,
    partition: i32,
    node_id: i32,
) -> PartitionMetadata {
    let mut metadata = PartitionMetadata {
        error_code: ErrorCode::NONE,
        partition,
        leader: node_id,
        leader_epoch: 0,
        replicas: vec![node_id],
        isr: vec![node_id],
        ..PartitionMetadata::default()
    };
    let topic_partition = TopicPartition {
        topic: Arc::from(topic),
        partition,
    };
    let state = broker.manager.get(&topic_partition).map(|open| {
        open.log
            .with_log(|log| (log.log_start(), log.log_end(), log.size_bytes()))
    });
    match state {
        Some(Ok((log_start, log_end, size_bytes))) => {
            metadata.log_start_offset = log_start.to_wire();
            metadata.log_end_offset = log_end.to_wire();
            metadata.size_bytes = i64::try_from(size_bytes).unwrap_or(i64::MAX);
        }
        _ => {
            metadata.error_code = ErrorCode::LEADER_NOT_AVAILABLE;
            metadata.leader = -1;
        }
    }
    metadata
}

/// The topic, created with the defaults first if it is missing and the broker allows that.
async fn find_or_auto_create(
    broker: &Arc<Broker>,
    name: &str,
) -> Option<crate::topics::TopicRecord> {
    if let Some(record) = broker.topic(name).await {
        return Some(record);
    }
    if !broker.config.auto_create_topics {
        return None;
    }
    match broker.create_topic(name, -1, -1, &[]).await {
        Ok(record) => Some(record),
        Err(error) if error.code == ErrorCode::TOPIC_ALREADY_EXISTS => broker.topic(name).await,
        Err(error) => {
            tracing::warn!(topic = name, message = %error.message, "auto-creating topic failed");
            None
        }
    }
}

fn topic_result(name: &str, result: Result<(), AdminError>) -> TopicError {
    let (error_code, error_message) = match result {
        Ok(()) => (ErrorCode::NONE, None),
        Err(error) => (error.code, Some(error.message)),
    };
    TopicError {
        name: name.to_string(),
        error_code,
        error_message,
    }
}

async fn create_topics(broker: &Arc<Broker>, request: CreateTopicsRequest) -> TopicErrorsResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let result = broker
            .create_topic(
                &topic.name,
                topic.partitions,
                topic.replication_factor,
                &topic.configs,
            )
            .await
            .map(|_| ());
        topics.push(topic_result(&topic.name, result));
    }
    TopicErrorsResponse { topics }
}

async fn delete_topics(broker: &Arc<Broker>, request: DeleteTopicsRequest) -> TopicErrorsResponse {
    let mut topics = Vec::new();
    for name in request.names {
        let result = broker.delete_topic(&name).await;
        topics.push(topic_result(&name, result));
    }
    TopicErrorsResponse { topics }
}

async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> TopicErrorsResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let result = broker.add_partitions(&topic.name, topic.count).await;
        topics.push(topic_result(&topic.name, result));
    }
    TopicErrorsResponse { topics }
}

/// A wire error code and message for a log error.
fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        LogError::InvalidBatch { .. } => ErrorCode::CORRUPT_MESSAGE,
        LogError::BatchTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        LogError::OutOfOrderSequence { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::DuplicateSequence { .. } => ErrorCode::DUPLICATE_SEQUENCE_NUMBER,
        LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Offline { .. } => {
            ErrorCode::KAFKA_STORAGE_ERROR
        }
        LogError::OffsetOverflow | LogError::Config(_) => ErrorCode::UNKNOWN_SERVER_ERROR,
    }
}

/// The open partition, or the error to answer for it.
async fn lookup(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    auto_create: bool,
) -> Result<Arc<Partition>, (ErrorCode, String)> {
    let topic_partition = TopicPartition {
        topic: Arc::from(topic),
        partition,
    };
    if let Some(open) = broker.manager.get(&topic_partition) {
        return Ok(open);
    }
    if auto_create && find_or_auto_create(broker, topic).await.is_some() {
        if let Some(open) = broker.manager.get(&topic_partition) {
            return Ok(open);
        }
    }
    let message = if broker.topic(topic).await.is_some() {
        format!("topic '{topic}' has no partition {partition}")
    } else {
        unknown_topic(topic).message
    };
    Err((ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, message))
}

/// A produce request whose batches are appended and whose acknowledgement may still wait
/// for durability.
pub(crate) struct PendingProduce {
    /// The request's acks.
    acks: i16,
    /// How long durability may take.
    timeout: Duration,
    /// Per topic, per partition: the outcome of the append.
    topics: Vec<(String, Vec<(i32, PartitionAppend)>)>,
}

/// The outcome of appending to one partition.
enum PartitionAppend {
    /// Appended: the partition, the appended range's end, base offset and log start.
    Written {
        open: Arc<Partition>,
        log_end: Offset,
        base_offset: i64,
        log_start: i64,
    },
    /// Refused.
    Failed(ErrorCode, String),
}

/// Appends a produce request's batches, partition by partition, in request order. A
/// connection runs this for one request at a time, in arrival order, so that pipelined
/// produces to a partition land in the order they were sent.
pub(crate) async fn produce_append(
    broker: &Arc<Broker>,
    request: ProduceRequest,
) -> PendingProduce {
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for data in topic.partitions {
            let outcome = if (-1..=1).contains(&acks) {
                append_partition(broker, &topic.name, data.partition, data.records).await
            } else {
                PartitionAppend::Failed(
                    ErrorCode::INVALID_REQUIRED_ACKS,
                    format!("acks {acks} is not 0, 1 or -1 (all)"),
                )
            };
            partitions.push((data.partition, outcome));
        }
        topics.push((topic.name, partitions));
    }
    PendingProduce {
        acks,
        timeout: Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0)),
        topics,
    }
}

/// Waits for durability where `acks=all` and the flush policy ask for it, then builds the
/// response; `None` for `acks=0`. Runs concurrently with later requests: pipelined produces
/// share their fsyncs (group commit).
pub(crate) async fn produce_complete(pending: PendingProduce) -> Option<ProduceResponse> {
    let deadline = tokio::time::Instant::now() + pending.timeout;
    let mut topics = Vec::with_capacity(pending.topics.len());
    for (name, partitions) in pending.topics {
        let mut responses = Vec::with_capacity(partitions.len());
        for (partition, outcome) in partitions {
            let outcome = match outcome {
                PartitionAppend::Written {
                    open,
                    log_end,
                    base_offset,
                    log_start,
                } => wait_durable(pending.acks, open, log_end, deadline)
                    .await
                    .map(|()| (base_offset, log_start)),
                PartitionAppend::Failed(code, message) => Err((code, message)),
            };
            responses.push(match outcome {
                Ok((base_offset, log_start_offset)) => ProducePartitionResponse {
                    partition,
                    error_code: ErrorCode::NONE,
                    error_message: None,
                    base_offset,
                    log_start_offset,
                },
                Err((error_code, message)) => ProducePartitionResponse {
                    partition,
                    error_code,
                    error_message: Some(message),
                    base_offset: -1,
                    log_start_offset: -1,
                },
            });
        }
        topics.push(ProduceTopicResponse {
            name,
            partitions: responses,
        });
    }
    (pending.acks != 0).then_some(ProduceResponse { topics })
}

async fn append_partition(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    mut records: bytes::BytesMut,
) -> PartitionAppend {
    let open = match lookup(broker, topic, partition, broker.config.auto_create_topics).await {
        Ok(open) => open,
        Err((code, message)) => return PartitionAppend::Failed(code, message),
    };
    let appended = tokio::task::spawn_blocking(move || {
        let info = open.log.append_unflushed(&mut records, SystemTime::now())?;
        let log_start = open.log.with_log(|log| log.log_start())?;
        Ok::<_, LogError>((open, info, log_start))
    })
    .await;
    match appended {
        Ok(Ok((open, info, log_start))) => PartitionAppend::Written {
            open,
            log_end: info.log_end,
            base_offset: info.base_offset.to_wire(),
            log_start: log_start.to_wire(),
        },
        Ok(Err(error)) => {
            tracing::debug!(topic, partition, %error, "produce failed");
            PartitionAppend::Failed(log_error_code(&error), error.to_string())
        }
        Err(error) => PartitionAppend::Failed(ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string()),
    }
}

/// With `acks=all` under the `always` policy, waits until the appended range is fsynced.
async fn wait_durable(
    acks: i16,
    open: Arc<Partition>,
    log_end: Offset,
    deadline: tokio::time::Instant,
) -> Result<(), (ErrorCode, String)> {
    if acks != -1 || open.log.flush_policy() != FlushPolicy::Always || open.log.flushed() >= log_end
    {
        return Ok(());
    }
    let flush = tokio::task::spawn_blocking(move || open.log.flush_to(log_end));
    match tokio::time::timeout_at(deadline, flush).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((log_error_code(&error), error.to_string())),
        Ok(Err(error)) => Err((ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string())),
        Err(_) => Err((
            ErrorCode::REQUEST_TIMED_OUT,
            "the write was not durable within the request's timeout".to_string(),
        )),
    }
}

/// One partition of a fetch, as resolved.
struct FetchTarget {
    /// The topic.
    topic: String,
    /// The partition.
    partition: i32,
    /// The open partition, or the error to answer.
    open: Result<Arc<Partition>, (ErrorCode, String)>,
    /// The first offset wanted.
    fetch_offset: i64,
    /// At most this many bytes from it.
    max_bytes: u64,
}

async fn fetch(broker: &Arc<Broker>, request: FetchRequest) -> FetchResponse {
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = u64::try_from(request.min_bytes).unwrap_or(0);
    // A response is never larger than a request may be (plus the one whole batch a fetch
    // always returns, itself within the frame limit): whatever the client asks, a fetch
    // holds at most about two frames' worth of memory.
    let max_bytes = u64::try_from(request.max_bytes)
        .unwrap_or(0)
        .clamp(1, broker.config.max_frame_bytes as u64);
    let mut targets = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            targets.push(FetchTarget {
                topic: topic.name.clone(),
                partition: partition.partition,
                open: lookup(broker, &topic.name, partition.partition, false).await,
                fetch_offset: partition.fetch_offset,
                max_bytes: u64::try_from(partition.partition_max_bytes)
                    .unwrap_or(0)
                    .max(1),
            });
        }
    }
    // Subscribe before the first read, so an append between the read and the wait wakes us.
    let mut watermarks: Vec<_> = targets
        .iter()
        .filter_map(|target| target.open.as_ref().ok())
        .map(|open| open.log.subscribe_log_end())
        .collect();
    let mut shutting_down = broker.shutting_down();
    let targets = Arc::new(targets);
    loop {
        let results = read_targets(Arc::clone(&targets), max_bytes).await;
        let available: u64 = results
            .iter()
            .map(|result| result.records.len() as u64)
            .sum();
        let any_error = results.iter().any(|result| !result.error_code.is_ok());
        let expired = tokio::time::Instant::now() >= deadline;
        if available >= min_bytes
            || any_error
            || expired
            || watermarks.is_empty()
            || *shutting_down.borrow()
        {
            return group_fetch_results(&targets, results);
        }
        tokio::select! {
            _ = any_changed(&mut watermarks) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutting_down.changed() => {}
        }
    }
}

/// Reads every target on the blocking pool, sharing `max_bytes` among them in order (the
/// first partition with data returns at least one whole batch regardless).
async fn read_targets(
    targets: Arc<Vec<FetchTarget>>,
    max_bytes: u64,
) -> Vec<FetchPartitionResponse> {
    let joined = tokio::task::spawn_blocking(move || {
        let mut remaining = max_bytes;
        targets
            .iter()
            .map(|target| {
                let mut response = FetchPartitionResponse {
                    partition: target.partition,
                    high_watermark: -1,
                    log_start_offset: -1,
                    ..FetchPartitionResponse::default()
                };
                let open = match &target.open {
                    Ok(open) => open,
                    Err((code, _)) => {
                        response.error_code = *code;
                        return response;
                    }
                };
                let (log_start, log_end) = open
                    .log
                    .with_log(|log| (log.log_start(), log.log_end()))
                    .unwrap_or((Offset(0), Offset(0)));
                response.high_watermark = log_end.to_wire();
                response.log_start_offset = log_start.to_wire();
                let Some(offset) = Offset::from_wire(target.fetch_offset) else {
                    response.error_code = ErrorCode::OFFSET_OUT_OF_RANGE;
                    return response;
                };
                if remaining == 0 || offset == log_end {
                    return response;
                }
                match open.log.read(offset, target.max_bytes.min(remaining)) {
                    Ok(records) => {
                        remaining = remaining.saturating_sub(records.len() as u64);
                        response.records = records;
                    }
                    Err(error) => response.error_code = log_error_code(&error),
                }
                response
            })
            .collect::<Vec<_>>()
    })
    .await;
    joined.unwrap_or_else(|error| {
        tracing::error!(%error, "fetch read task failed");
        Vec::new()
    })
}

fn group_fetch_results(
    targets: &[FetchTarget],
    results: Vec<FetchPartitionResponse>,
) -> FetchResponse {
    let mut topics: Vec<FetchTopicResponse> = Vec::new();
    if results.len() != targets.len() {
        // The read task failed: answer every partition with an error rather than nothing.
        for target in targets {
            push_result(
                &mut topics,
                &target.topic,
                FetchPartitionResponse {
                    partition: target.partition,
                    error_code: ErrorCode::UNKNOWN_SERVER_ERROR,
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Bytes::new(),
                },
            );
        }
        return FetchResponse { topics };
    }
    for (target, result) in targets.iter().zip(results) {
        push_result(&mut topics, &target.topic, result);
    }
    FetchResponse { topics }
}

fn push_result(topics: &mut Vec<FetchTopicResponse>, topic: &str, result: FetchPartitionResponse) {
    match topics.last_mut() {
        Some(last) if last.name == topic => last.partitions.push(result),
        _ => topics.push(FetchTopicResponse {
            name: topic.to_string(),
            partitions: vec![result],
        }),
    }
}

/// Resolves once any of the watermarks changes (or its log is gone).
async fn any_changed(watermarks: &mut [tokio::sync::watch::Receiver<Offset>]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = watermarks
        .iter_mut()
        .map(|receiver| {
            Box::pin(async move {
                let _ = receiver.changed().await;
            }) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
        .collect();
    std::future::poll_fn(|context| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

async fn list_offsets(broker: &Arc<Broker>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for asked in topic.partitions {
            let mut response = ListOffsetsPartitionResponse {
                partition: asked.partition,
                error_code: ErrorCode::NONE,
                timestamp: asked.timestamp,
                offset: -1,
            };
            match lookup(broker, &topic.name, asked.partition, false).await {
                Err((code, _)) => response.error_code = code,
                Ok(open) => {
                    let timestamp = asked.timestamp;
                    let found = tokio::task::spawn_blocking(move || {
                        open.log.with_log(|log| match timestamp {
                            ListOffsetsPartition::LATEST => Ok(Some(log.log_end())),
                            ListOffsetsPartition::EARLIEST => Ok(Some(log.log_start())),
                            timestamp => log.offset_for_timestamp(timestamp),
                        })
                    })
                    .await;
                    match found {
                        Ok(Ok(Ok(offset))) => response.offset = offset.map_or(-1, Offset::to_wire),
                        Ok(Ok(Err(error)) | Err(error)) => {
                            response.error_code = log_error_code(&error)
                        }
                        Err(_) => response.error_code = ErrorCode::UNKNOWN_SERVER_ERROR,
                    }
                }
            }
            partitions.push(response);
        }
        topics.push(ListOffsetsTopicResponse {
            name: topic.name,
            partitions,
        });
    }
    ListOffsetsResponse { topics }
}
