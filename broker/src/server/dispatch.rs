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
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mq_protocol::request::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    FindCoordinatorRequest, ListOffsetsPartition, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, Request,
};
use mq_protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerHeartbeatResponse, BrokerMetadata,
    BrokerRegistrationResponse, ClusterBroker, DescribeClusterResponse, ErrorResponse,
    FetchMetadataResponse, FetchPartitionResponse, FetchResponse, FetchTopicResponse,
    FindCoordinatorResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, RebalanceResponse, Response, TopicError,
    TopicErrorsResponse, TopicMetadata,
};
use mq_protocol::{ErrorCode, Offset};
use tokio_util::task::TaskTracker;

use super::state::{AdminError, Broker};
use crate::cluster::{ClusterImage, PartitionState, TopicImage};
use crate::group::{check_group_id, ClientInfo};
use crate::log::{Appended, FlushPolicy, LogError, LogResult, TryAppend};
use crate::manager::{Partition, TopicPartition};

/// The longest a fetch may wait, whatever it asks for.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Handles one request; `None` when no response is due (produce with `acks=0`).
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    context: &RequestContext,
) -> Option<Response> {
    let request = match coordinated_elsewhere(broker, request) {
        Ok(request) => request,
        Err(response) => return Some(response),
    };
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
        Request::BrokerRegistration(_)
        | Request::BrokerHeartbeat(_)
        | Request::FetchMetadata(_)
        | Request::AlterPartition(_) => return Some(controller_only(broker, request).await),
        Request::ReassignPartition(_) | Request::Rebalance(_) => {
            let api_key = request.api_key();
            match broker.forward(request).await {
                Ok(response) => response,
                Err(error) => refusal(api_key, error),
            }
        }
        Request::DescribeCluster => Response::DescribeCluster(describe_cluster(broker)),
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

/// The broker that coordinates a group: of the live brokers, the one whose hash with the
/// group id is highest (rendezvous hashing: when a broker dies or returns, only its groups
/// move). -1 when no broker is alive.
pub(crate) fn coordinator_of(image: &ClusterImage, group_id: &str) -> i32 {
    image
        .live_brokers()
        .max_by_key(|broker| rendezvous_hash(group_id, broker.node_id))
        .map_or(-1, |broker| broker.node_id)
}

/// FNV-1a over the group id and the node id, then a final mix: the same on every node.
fn rendezvous_hash(group_id: &str, node_id: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group_id.bytes().chain(node_id.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// Whether this broker coordinates `group_id`.
fn coordinates(broker: &Broker, group_id: &str) -> bool {
    broker.node.is_some() && coordinator_of(&broker.image(), group_id) == broker.node_id()
}

/// A group request for a group another broker coordinates, answered `NOT_COORDINATOR`;
/// any other request back.
fn coordinated_elsewhere(broker: &Broker, request: Request) -> Result<Request, Response> {
    let not_here = |group_id: &str| !coordinates(broker, group_id);
    let error_code = ErrorCode::NOT_COORDINATOR;
    Err(match request {
        Request::OffsetCommit(request) if not_here(&request.group_id) => {
            Response::OffsetCommit(mq_protocol::group::PartitionErrorsResponse {
                topics: request
                    .topics
                    .into_iter()
                    .map(|topic| mq_protocol::group::TopicPartitionErrors {
                        name: topic.name,
                        partitions: topic
                            .partitions
                            .iter()
                            .map(|partition| (partition.partition, error_code))
                            .collect(),
                    })
                    .collect(),
            })
        }
        Request::OffsetFetch(request) if not_here(&request.group_id) => {
            Response::OffsetFetch(mq_protocol::group::OffsetFetchResponse {
                error_code,
                ..Default::default()
            })
        }
        Request::JoinGroup(request) if not_here(&request.group_id) => {
            Response::JoinGroup(mq_protocol::group::JoinGroupResponse {
                error_code,
                ..Default::default()
            })
        }
        Request::SyncGroup(request) if not_here(&request.group_id) => {
            Response::SyncGroup(mq_protocol::group::SyncGroupResponse {
                error_code,
                ..Default::default()
            })
        }
        Request::Heartbeat(request) if not_here(&request.group_id) => {
            Response::Heartbeat(mq_protocol::group::GroupErrorResponse { error_code })
        }
        Request::LeaveGroup(request) if not_here(&request.group_id) => {
            Response::LeaveGroup(mq_protocol::group::GroupErrorResponse { error_code })
        }
        Request::DescribeGroups(request) if request.groups.iter().any(|group| not_here(group)) => {
            Response::DescribeGroups(mq_protocol::group::DescribeGroupsResponse {
                groups: request
                    .groups
                    .into_iter()
                    .map(|group_id| mq_protocol::group::DescribedGroup {
                        error_code: if not_here(&group_id) {
                            error_code
                        } else {
                            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
                        },
                        group_id,
                        state: "Dead".to_string(),
                        ..Default::default()
                    })
                    .collect(),
            })
        }
        Request::DeleteGroups(request) if request.groups.iter().any(|group| not_here(group)) => {
            Response::DeleteGroups(mq_protocol::group::GroupErrorsResponse {
                groups: request
                    .groups
                    .into_iter()
                    .map(|group_id| {
                        let code = if not_here(&group_id) {
                            error_code
                        } else {
                            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
                        };
                        (group_id, code)
                    })
                    .collect(),
            })
        }
        request => return Ok(request),
    })
}

fn find_coordinator(broker: &Broker, request: &FindCoordinatorRequest) -> FindCoordinatorResponse {
    let image = broker.image();
    let chosen = coordinator_of(&image, &request.group_id);
    let error_code = match check_group_id(&request.group_id) {
        Err(code) => code,
        Ok(()) if *broker.shutting_down().borrow() && chosen == broker.node_id() => {
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        }
        Ok(()) if chosen == -1 => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        Ok(()) => ErrorCode::NONE,
    };
    match image.brokers.get(&chosen).filter(|_| error_code.is_ok()) {
        Some(coordinator) => FindCoordinatorResponse {
            error_code,
            node_id: coordinator.node_id,
            host: coordinator.host.clone(),
            port: coordinator.port,
        },
        None => FindCoordinatorResponse {
            error_code,
            node_id: -1,
            host: String::new(),
            port: -1,
        },
    }
}

/// Answers an API only the controller speaks: here, when this process runs it; otherwise
/// `NOT_CONTROLLER`.
async fn controller_only(broker: &Arc<Broker>, request: Request) -> Response {
    let api_key = request.api_key();
    if let Some(controller) = &broker.controller {
        if let Some(response) = controller.handle(request).await {
            return response;
        }
    }
    refusal(
        api_key,
        AdminError::new(
            ErrorCode::NOT_CONTROLLER,
            format!("node {} is not the controller", broker.node_id()),
        ),
    )
}

/// The answer to a cluster request that could not be carried out.
fn refusal(api_key: ApiKey, error: AdminError) -> Response {
    let message = Some(error.message);
    let code = error.code;
    match api_key {
        ApiKey::BROKER_REGISTRATION => Response::BrokerRegistration(BrokerRegistrationResponse {
            error_code: code,
            error_message: message,
            broker_epoch: -1,
            controller_id: -1,
        }),
        ApiKey::BROKER_HEARTBEAT => Response::BrokerHeartbeat(BrokerHeartbeatResponse {
            error_code: code,
            error_message: message,
            fenced: false,
        }),
        ApiKey::FETCH_METADATA => Response::FetchMetadata(FetchMetadataResponse {
            error_code: code,
            error_message: message,
            ..Default::default()
        }),
        ApiKey::REBALANCE => Response::Rebalance(RebalanceResponse {
            error_code: code,
            error_message: message,
            moves: Vec::new(),
        }),
        ApiKey::ALTER_PARTITION => Response::AlterPartition(ErrorResponse {
            error_code: code,
            error_message: message,
        }),
        _ => Response::ReassignPartition(ErrorResponse {
            error_code: code,
            error_message: message,
        }),
    }
}

fn describe_cluster(broker: &Broker) -> DescribeClusterResponse {
    let image = broker.image();
    let controller_address = match (&broker.controller, &broker.node) {
        (Some(_), _) => format!("{}:{}", broker.advertised_host, broker.advertised_port),
        (None, Some(node)) => node.link().describe(),
        (None, None) => String::new(),
    };
    DescribeClusterResponse {
        error_code: ErrorCode::NONE,
        error_message: None,
        controller_id: controller_id(broker),
        controller_address,
        metadata_offset: image.offset,
        brokers: image
            .brokers
            .values()
            .map(|info| ClusterBroker {
                node_id: info.node_id,
                host: info.host.clone(),
                port: info.port,
                rack: info.rack.clone(),
                fenced: info.fenced,
            })
            .collect(),
    }
}

/// The controller's node id as this broker knows it.
fn controller_id(broker: &Broker) -> i32 {
    match (&broker.controller, &broker.node) {
        (Some(controller), _) => controller.node_id(),
        (None, Some(node)) => node.controller_id(),
        (None, None) => -1,
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
    if let Some(names) = &request.topics {
        for name in names {
            find_or_auto_create(broker, name).await;
        }
    }
    let image = broker.image();
    let me = broker.node_id();
    let describe = |topic: &TopicImage| TopicMetadata {
        error_code: ErrorCode::NONE,
        name: topic.name.clone(),
        partitions: topic
            .partitions
            .iter()
            .map(|state| partition_metadata(broker, state, me))
            .collect(),
    };
    let topics = match &request.topics {
        None => image.topics.values().map(describe).collect(),
        Some(names) => names
            .iter()
            .map(|name| match image.topics.get(name) {
                Some(topic) => describe(topic),
                None => TopicMetadata {
                    error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    name: name.clone(),
                    partitions: Vec::new(),
                },
            })
            .collect(),
    };
    MetadataResponse {
        brokers: image
            .live_brokers()
            .map(|info| BrokerMetadata {
                node_id: info.node_id,
                host: info.host.clone(),
                port: info.port,
            })
            .collect(),
        controller_id: controller_id(broker),
        topics,
    }
}

fn partition_metadata(broker: &Broker, state: &PartitionState, me: i32) -> PartitionMetadata {
    let mut metadata = PartitionMetadata {
        error_code: ErrorCode::NONE,
        partition: state.partition,
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
        log_start_offset: -1,
        log_end_offset: -1,
        size_bytes: -1,
    };
    if state.leader == -1 {
        metadata.error_code = ErrorCode::LEADER_NOT_AVAILABLE;
        return metadata;
    }
    if state.leader != me {
        return metadata;
    }
    let topic_partition = TopicPartition {
        topic: Arc::from(state.topic.as_str()),
        partition: state.partition,
    };
    let local = broker.manager.get(&topic_partition).map(|open| {
        open.log
            .with_log(|log| (log.log_start(), log.log_end(), log.size_bytes()))
    });
    if let Some(Ok((log_start, log_end, size_bytes))) = local {
        metadata.log_start_offset = log_start.to_wire();
        metadata.log_end_offset = log_end.to_wire();
        metadata.size_bytes = i64::try_from(size_bytes).unwrap_or(i64::MAX);
    }
    metadata
}

/// Creates the topic with the defaults if it is missing and the broker allows that.
async fn find_or_auto_create(broker: &Arc<Broker>, name: &str) {
    if !broker.config.auto_create_topics || broker.image().topics.contains_key(name) {
        return;
    }
    let request = CreateTopicsRequest {
        topics: vec![mq_protocol::request::CreatableTopic {
            name: name.to_string(),
            partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
        }],
        timeout_ms: 10_000,
    };
    let response = create_topics(broker, request).await;
    for topic in response.topics {
        if !topic.error_code.is_ok() && topic.error_code != ErrorCode::TOPIC_ALREADY_EXISTS {
            tracing::warn!(
                topic = name,
                message = topic.error_message,
                "auto-creating topic failed"
            );
        }
    }
}

/// Forwards a topic admin request to the controller; once it answers, waits until this
/// broker's metadata shows each successful change (`applied`), so the caller can use it here
/// at once.
async fn forward_topics(
    broker: &Arc<Broker>,
    request: Request,
    applied: impl Fn(&ClusterImage, &str) -> bool,
) -> TopicErrorsResponse {
    let names: Vec<String> = match &request {
        Request::CreateTopics(request) => request.topics.iter().map(|t| t.name.clone()).collect(),
        Request::DeleteTopics(request) => request.names.clone(),
        Request::CreatePartitions(request) => {
            request.topics.iter().map(|t| t.name.clone()).collect()
        }
        _ => Vec::new(),
    };
    let response = match broker.forward(request).await {
        Ok(
            Response::CreateTopics(response)
            | Response::DeleteTopics(response)
            | Response::CreatePartitions(response),
        ) => response,
        Ok(_) => {
            return all_failed(
                &names,
                ErrorCode::UNKNOWN_SERVER_ERROR,
                "unexpected answer from the controller".to_string(),
            )
        }
        Err(error) => return all_failed(&names, error.code, error.message),
    };
    let done: Vec<String> = response
        .topics
        .iter()
        .filter(|topic| topic.error_code.is_ok())
        .map(|topic| topic.name.clone())
        .collect();
    if !done.is_empty() && broker.node.is_some() {
        let seen = broker
            .wait_for_image(|image| done.iter().all(|name| applied(image, name)))
            .await;
        if !seen {
            tracing::warn!(topics = ?done, "the change did not reach this broker's metadata in time");
        }
    }
    response
}

fn all_failed(names: &[String], error_code: ErrorCode, message: String) -> TopicErrorsResponse {
    TopicErrorsResponse {
        topics: names
            .iter()
            .map(|name| TopicError {
                name: name.clone(),
                error_code,
                error_message: Some(message.clone()),
            })
            .collect(),
    }
}

async fn create_topics(broker: &Arc<Broker>, request: CreateTopicsRequest) -> TopicErrorsResponse {
    forward_topics(broker, Request::CreateTopics(request), |image, name| {
        image.topics.contains_key(name)
    })
    .await
}

async fn delete_topics(broker: &Arc<Broker>, request: DeleteTopicsRequest) -> TopicErrorsResponse {
    forward_topics(broker, Request::DeleteTopics(request), |image, name| {
        !image.topics.contains_key(name)
    })
    .await
}

async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> TopicErrorsResponse {
    let counts: std::collections::HashMap<String, usize> = request
        .topics
        .iter()
        .map(|topic| {
            (
                topic.name.clone(),
                usize::try_from(topic.count).unwrap_or(0),
            )
        })
        .collect();
    forward_topics(
        broker,
        Request::CreatePartitions(request),
        move |image, name| {
            image.topics.get(name).is_some_and(|topic| {
                topic.partitions.len() >= counts.get(name).copied().unwrap_or(0)
            })
        },
    )
    .await
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
        LogError::OffsetOverflow | LogError::Config(_) | LogError::CopyGap { .. } => {
            ErrorCode::UNKNOWN_SERVER_ERROR
        }
    }
}

/// Who is asking for a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// A client: only the leader serves it.
    Client,
    /// A fetch naming this leader epoch: also served by a partition's current holder while
    /// the partition moves under that epoch (the move's target copying it).
    Fetch(i32),
}

/// The open partition that this broker leads, or the error to answer for it.
async fn lookup(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    auto_create: bool,
    access: Access,
) -> Result<Arc<Partition>, (ErrorCode, String)> {
    if auto_create {
        find_or_auto_create(broker, topic).await;
    }
    let image = broker.image();
    let me = broker.node_id();
    let Some(topic_image) = image.topics.get(topic) else {
        return Err((
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic '{topic}' does not exist"),
        ));
    };
    let Some(state) = usize::try_from(partition)
        .ok()
        .and_then(|index| topic_image.partitions.get(index))
    else {
        return Err((
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic '{topic}' has no partition {partition}"),
        ));
    };
    let moving_from_here = state.moving_to != -1 && state.replicas.contains(&me);
    match access {
        Access::Fetch(epoch) if moving_from_here && epoch == state.leader_epoch => {}
        Access::Fetch(epoch) if moving_from_here && epoch > state.leader_epoch => {
            return Err((
                ErrorCode::UNKNOWN_LEADER_EPOCH,
                format!("{topic}-{partition}: leader epoch {epoch} is not known here yet"),
            ));
        }
        _ if state.leader == me => {}
        _ if state.leader == -1 && state.moving_to != -1 => {
            return Err((
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "{topic}-{partition} is offline while it moves to broker {}",
                    state.moving_to
                ),
            ));
        }
        _ if state.leader == -1 => {
            return Err((
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "{topic}-{partition} is offline: its broker {:?} is down",
                    state.replicas
                ),
            ));
        }
        _ => {
            return Err((
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "broker {} leads {topic}-{partition}, not broker {me}",
                    state.leader
                ),
            ));
        }
    }
    let topic_partition = TopicPartition {
        topic: Arc::from(topic),
        partition,
    };
    broker.manager.get(&topic_partition).ok_or_else(|| {
        (
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!("{topic}-{partition} is not open on broker {me} yet"),
        )
    })
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
    /// Where to start fsync rounds, so that shutdown waits for them.
    durability_rounds: TaskTracker,
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
        durability_rounds: broker.durability_rounds.clone(),
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
                } => wait_durable(
                    pending.acks,
                    open,
                    log_end,
                    deadline,
                    &pending.durability_rounds,
                )
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
    let auto_create = broker.config.auto_create_topics;
    let open = match lookup(broker, topic, partition, auto_create, Access::Client).await {
        Ok(open) => open,
        Err((code, message)) => return PartitionAppend::Failed(code, message),
    };
    let appended = match append_inline(broker, &open, &mut records) {
        Some(appended) => appended,
        None => {
            let open = Arc::clone(&open);
            let appended = tokio::task::spawn_blocking(move || {
                open.log
                    .append_unflushed_if(&mut records, SystemTime::now(), || open.is_leader())
            })
            .await;
            match appended {
                Ok(appended) => appended,
                Err(error) => {
                    return PartitionAppend::Failed(
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        error.to_string(),
                    )
                }
            }
        }
    };
    match appended {
        Ok(Some(Appended { info, log_start })) => PartitionAppend::Written {
            open,
            log_end: info.log_end,
            base_offset: info.base_offset.to_wire(),
            log_start: log_start.to_wire(),
        },
        Ok(None) => PartitionAppend::Failed(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!(
                "broker {} no longer leads {topic}-{partition}",
                broker.node_id()
            ),
        ),
        Err(error) => {
            tracing::debug!(topic, partition, %error, "produce failed");
            PartitionAppend::Failed(log_error_code(&error), error.to_string())
        }
    }
}

/// Appends on this runtime worker when [`InlineAppends`](super::inline_appends) allows it
/// and the log can take the append without waiting; `None` when it must go to the
/// blocking pool instead.
/// The inner `None`: this broker no longer leads the partition.
fn append_inline(
    broker: &Broker,
    open: &Partition,
    records: &mut [u8],
) -> Option<LogResult<Option<Appended>>> {
    let inline = &broker.inline_appends;
    if !inline.allows(records.len()) {
        return None;
    }
    let started = Instant::now();
    let tried = open
        .log
        .try_append_unflushed_if(records, SystemTime::now(), || open.is_leader());
    broker
        .metrics
        .inline_append(inline.record(started.elapsed()));
    match tried {
        Ok(TryAppend::Appended(appended)) => Some(Ok(Some(appended))),
        Ok(TryAppend::NotAllowed) => Some(Ok(None)),
        Ok(TryAppend::WouldWait) => None,
        Err(error) => Some(Err(error)),
    }
}

/// With `acks=all` under the `always` policy, waits until the appended range is fsynced.
/// Holds no thread while it waits: of all the requests waiting on a log, one at a time starts
/// the fsyncs on the blocking pool
/// ([`SharedLog::flush_rounds`](crate::log::SharedLog::flush_rounds)), and every one of
/// them answers when the flushed offset covers its range, or when the rounds fail.
async fn wait_durable(
    acks: i16,
    open: Arc<Partition>,
    log_end: Offset,
    deadline: tokio::time::Instant,
    rounds_tracker: &TaskTracker,
) -> Result<(), (ErrorCode, String)> {
    if acks != -1 || open.log.flush_policy() != FlushPolicy::Always {
        return Ok(());
    }
    let waited = tokio::time::timeout_at(deadline, async {
        let mut flushed = open.log.subscribe_flushed();
        // The fsync rounds this request started, if it claimed the log's flusher role. It
        // answers as soon as its range is durable: the rounds may go on for later appends.
        let mut rounds = None;
        loop {
            if *flushed.borrow_and_update() >= log_end {
                return Ok(());
            }
            if rounds.is_none() && open.log.claim_flusher() {
                let flusher = Arc::clone(&open);
                rounds = Some(rounds_tracker.spawn_blocking(move || flusher.log.flush_rounds()));
            }
            let ended = match rounds.as_mut() {
                Some(running) => tokio::select! {
                    ended = running => Some(ended),
                    changed = flushed.changed() => {
                        changed.map_err(|_| log_closed())?;
                        None
                    }
                },
                None => {
                    flushed.changed().await.map_err(|_| log_closed())?;
                    None
                }
            };
            if let Some(ended) = ended {
                rounds = None;
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return Err((log_error_code(&error), error.to_string())),
                    Err(error) => return Err((ErrorCode::UNKNOWN_SERVER_ERROR, error.to_string())),
                }
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        Err((
            ErrorCode::REQUEST_TIMED_OUT,
            "the write was not durable within the request's timeout".to_string(),
        ))
    })
}

/// The error of a durability wait whose log was closed under it.
fn log_closed() -> (ErrorCode, String) {
    (
        ErrorCode::NOT_LEADER_OR_FOLLOWER,
        "the partition's log was closed".to_string(),
    )
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
                open: lookup(
                    broker,
                    &topic.name,
                    partition.partition,
                    false,
                    Access::Fetch(partition.current_leader_epoch),
                )
                .await,
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
            match lookup(broker, &topic.name, asked.partition, false, Access::Client).await {
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
