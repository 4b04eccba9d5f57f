//! The client against a fake broker written here with tokio: no real broker needed.
//!
//! Two kinds of fakes. Scripted sockets (`listen` + `read_request` + `write_response`) play
//! one exact exchange, for the connection's behaviour: responses out of order, a socket
//! closed mid-request, a late answer after a timeout. [`FakeBroker`] is a small in-memory
//! broker (one node, topics of in-memory logs, each request answered by its own task as the
//! real broker does, produce requests appended in arrival order and checked against their
//! producers' sequences as the real broker does) with knobs to misbehave, for the producer,
//! consumer, admin and the reconnection logic. It is also the coordinator of one consumer group, `g`, and notes the
//! group requests it gets (and what tests' rebalance listeners add) as events, so that tests
//! can assert their order. `fake_broker/cluster.rs` fakes a cluster of several nodes, for the
//! admin's cluster calls and the routing of group requests to coordinators.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

#[path = "fake_broker/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mq_client::protocol::batch::{self, BatchHeader};
use mq_client::protocol::codec::{self, FrameCodec};
use mq_client::protocol::request::{
    ApiKey, ListOffsetsPartition, MetadataRequest, ProduceRequest, Request, RequestHeader,
    TopicPartitions,
};
use mq_client::protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerMetadata, DescribeGroupsResponse, DescribedGroup,
    DescribedMember, FetchPartitionResponse, FetchResponse, FetchTopicResponse,
    FindCoordinatorResponse, GroupErrorResponse, GroupErrorsResponse, JoinGroupResponse,
    ListGroupsResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, ListedGroup, MetadataResponse, OffsetFetchPartition,
    OffsetFetchResponse, OffsetFetchTopic, PartitionErrorsResponse, PartitionMetadata,
    ProducePartitionResponse, ProduceResponse, ProduceTopicResponse, Response, ResponseHeader,
    SyncGroupResponse, TopicError, TopicErrorsResponse, TopicMetadata, TopicPartitionErrors,
};
use mq_client::protocol::wire::Reader;
use mq_client::{
    Acks, Admin, Client, ClientConfig, ClientError, Connection, ConnectionConfig, Consumer,
    ConsumerConfig, ErrorCode, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener, SeekTo, TopicPartition,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::Decoder;

// ---------------------------------------------------------------------------------------
// Scripted sockets.

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

/// Reads one request frame; `None` at end of stream.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
) -> Option<(RequestHeader, Request)> {
    let mut codec = FrameCodec::new(64 * 1024 * 1024);
    loop {
        if let Some(frame) = codec.decode(buffer).unwrap() {
            let mut reader = Reader::new(frame);
            let header = RequestHeader::decode(&mut reader).unwrap();
            let request = Request::decode(&header, reader).unwrap();
            return Some((header, request));
        }
        if stream.read_buf(buffer).await.unwrap() == 0 {
            return None;
        }
    }
}

fn response_frame(correlation_id: i32, response: &Response) -> Vec<u8> {
    let header = ResponseHeader {
        correlation_id,
        error_code: ErrorCode::NONE,
        error_message: None,
    };
    let payload = codec::response_frame(&header, Some(response));
    [&(payload.len() as u32).to_be_bytes()[..], &payload[..]].concat()
}

async fn write_response(stream: &mut TcpStream, correlation_id: i32, response: &Response) {
    stream
        .write_all(&response_frame(correlation_id, response))
        .await
        .unwrap();
}

/// A Metadata request for one topic, answered by `named` with that topic's name.
fn metadata_for(topic: &str) -> Request {
    Request::Metadata(MetadataRequest {
        topics: Some(vec![topic.to_string()]),
    })
}

fn named(request: &Request) -> Response {
    let Request::Metadata(MetadataRequest {
        topics: Some(topics),
    }) = request
    else {
        panic!("expected a metadata request for named topics, got {request:?}");
    };
    Response::Metadata(MetadataResponse {
        brokers: vec![],
        controller_id: -1,
        topics: topics
            .iter()
            .map(|name| TopicMetadata {
                error_code: ErrorCode::NONE,
                name: name.clone(),
                partitions: vec![],
            })
            .collect(),
    })
}

fn topic_names(response: Response) -> Vec<String> {
    let Response::Metadata(response) = response else {
        panic!("expected metadata, got {response:?}");
    };
    response
        .topics
        .into_iter()
        .map(|topic| topic.name)
        .collect()
}

fn quick_connection() -> ConnectionConfig {
    ConnectionConfig {
        request_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    }
}

#[tokio::test]
async fn responses_out_of_order_reach_their_requests() {
    let (listener, address) = listen().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        let first = read_request(&mut stream, &mut buffer).await.unwrap();
        let second = read_request(&mut stream, &mut buffer).await.unwrap();
        // Answer the second request first, as a broker running both at once may.
        write_response(&mut stream, second.0.correlation_id, &named(&second.1)).await;
        write_response(&mut stream, first.0.correlation_id, &named(&first.1)).await;
        stream
    });
    let connection = Connection::connect(&address, quick_connection())
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        connection.request(metadata_for("a")),
        connection.request(metadata_for("b"))
    );
    assert_eq!(topic_names(a.unwrap()), ["a"]);
    assert_eq!(topic_names(b.unwrap()), ["b"]);
    assert!(connection.is_alive());
    drop(server.await.unwrap());
}

#[tokio::test]
async fn waiters_fail_when_the_socket_closes_mid_request() {
    let (listener, address) = listen().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        read_request(&mut stream, &mut buffer).await.unwrap();
        read_request(&mut stream, &mut buffer).await.unwrap();
        // Close with both requests unanswered.
    });
    let connection = Connection::connect(&address, quick_connection())
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        connection.request(metadata_for("a")),
        connection.request(metadata_for("b"))
    );
    server.await.unwrap();
    for result in [a, b] {
        let error = result.unwrap_err();
        assert!(
            matches!(error, ClientError::Disconnected { .. }),
            "{error:?}"
        );
        assert_eq!(error.to_string(), format!("connection to {address} closed"));
    }
    assert!(!connection.is_alive());
    let later = connection.request(metadata_for("c")).await.unwrap_err();
    assert!(
        matches!(later, ClientError::Disconnected { .. }),
        "{later:?}"
    );
}

#[tokio::test]
async fn a_timed_out_request_leaves_the_connection_usable() {
    let (listener, address) = listen().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        let slow = read_request(&mut stream, &mut buffer).await.unwrap();
        let quick = read_request(&mut stream, &mut buffer).await.unwrap();
        write_response(&mut stream, quick.0.correlation_id, &named(&quick.1)).await;
        // The slow answer comes after its request gave up: nobody waits for it any more.
        write_response(&mut stream, slow.0.correlation_id, &named(&slow.1)).await;
        let third = read_request(&mut stream, &mut buffer).await.unwrap();
        write_response(&mut stream, third.0.correlation_id, &named(&third.1)).await;
        stream
    });
    let connection = Connection::connect(&address, quick_connection())
        .await
        .unwrap();
    let slow = connection
        .request_with_timeout(metadata_for("slow"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(slow.to_string(), "Metadata timed out after 200 ms");
    assert_eq!(
        topic_names(connection.request(metadata_for("quick")).await.unwrap()),
        ["quick"]
    );
    assert_eq!(
        topic_names(connection.request(metadata_for("third")).await.unwrap()),
        ["third"]
    );
    assert!(connection.is_alive());
    drop(server.await.unwrap());
}

#[tokio::test]
async fn request_header_errors_become_broker_errors() {
    let (listener, address) = listen().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        let (header, _) = read_request(&mut stream, &mut buffer).await.unwrap();
        let header = ResponseHeader {
            correlation_id: header.correlation_id,
            error_code: ErrorCode::UNSUPPORTED_VERSION,
            error_message: Some("version 0 of api key 3 is retired".into()),
        };
        let payload = codec::response_frame(&header, None);
        let frame = [&(payload.len() as u32).to_be_bytes()[..], &payload[..]].concat();
        stream.write_all(&frame).await.unwrap();
        stream
    });
    let connection = Connection::connect(&address, quick_connection())
        .await
        .unwrap();
    let error = connection.request(metadata_for("a")).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UNSUPPORTED_VERSION));
    assert_eq!(
        error.to_string(),
        "UNSUPPORTED_VERSION (35): the broker does not speak this version of the api: \
         version 0 of api key 3 is retired"
    );
    assert!(
        connection.is_alive(),
        "a refused request does not kill the connection"
    );
    drop(server.await.unwrap());
}

#[tokio::test]
async fn bootstrap_failure_names_every_address() {
    // Nothing listens on ports 1 and 2 of the loopback address.
    let error = Client::connect("127.0.0.1:1,127.0.0.1:2", ClientConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot connect to 127.0.0.1:1, 127.0.0.1:2: connection refused"
    );
    let error = Client::connect("127.0.0.1:1", ClientConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot connect to 127.0.0.1:1: connection refused"
    );
}

// ---------------------------------------------------------------------------------------
// An in-memory broker.

/// One partition's log: batches with offsets assigned.
#[derive(Default)]
struct Log {
    /// Batches as stored (base offset patched in).
    batches: Vec<Bytes>,
    /// The next offset.
    end: i64,
    /// Idempotent producers' sequence state, by producer id.
    producers: BTreeMap<i64, ProducerState>,
}

/// An idempotent producer's state in one partition, by the real broker's rules
/// (`broker/src/log/producers.rs`).
struct ProducerState {
    /// The epoch of its batches; another epoch starts afresh.
    epoch: i16,
    /// The sequence of the last record appended.
    last_sequence: i32,
    /// Its last five batches: first sequence, last sequence, base offset.
    recent: VecDeque<(i32, i32, i64)>,
}

/// What a produced batch came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// Appended at this base offset.
    Appended(i64),
    /// A repeat of a recent batch, first appended at this base offset.
    Duplicate(i64),
    /// Refused: its sequence does not follow the producer's last.
    OutOfOrder,
}

/// The sequence after `sequence` by `count` records, wrapping from `i32::MAX` to 0.
fn sequence_plus(sequence: i32, count: i32) -> i32 {
    ((i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

impl Log {
    /// Appends a batch, or answers a repeat with its original offset, or refuses it, by its
    /// producer's sequence: a batch without a producer id, or of a producer or epoch new to
    /// the log, is appended as it comes.
    fn produce(&mut self, mut records: BytesMut) -> Stored {
        let header = batch::validate(&records).unwrap();
        let last_sequence = sequence_plus(header.base_sequence, header.record_count - 1);
        let known = self
            .producers
            .get(&header.producer_id)
            .filter(|producer| producer.epoch == header.producer_epoch);
        if let (true, Some(producer)) = (header.producer_id >= 0, known) {
            let repeat = producer
                .recent
                .iter()
                .find(|(first, last, _)| *first == header.base_sequence && *last == last_sequence);
            if let Some((_, _, base_offset)) = repeat {
                return Stored::Duplicate(*base_offset);
            }
            if header.base_sequence != sequence_plus(producer.last_sequence, 1) {
                return Stored::OutOfOrder;
            }
        }
        let base_offset = self.end;
        batch::set_base_offset(&mut records, base_offset);
        self.end = header.next_offset() - header.base_offset + base_offset;
        self.batches.push(records.freeze());
        if header.producer_id >= 0 {
            let producer = self
                .producers
                .entry(header.producer_id)
                .or_insert(ProducerState {
                    epoch: header.producer_epoch,
                    last_sequence: -1,
                    recent: VecDeque::new(),
                });
            if producer.epoch != header.producer_epoch {
                producer.epoch = header.producer_epoch;
                producer.recent.clear();
            }
            producer.last_sequence = last_sequence;
            if producer.recent.len() == 5 {
                producer.recent.pop_front();
            }
            producer
                .recent
                .push_back((header.base_sequence, last_sequence, base_offset));
        }
        Stored::Appended(base_offset)
    }
}

#[derive(Default)]
struct BrokerState {
    /// Topics and their partitions' logs.
    topics: BTreeMap<String, Vec<Log>>,
    /// Produce requests received, as (acks, [(topic, partition)]).
    produces: Vec<(i16, Vec<(String, i32)>)>,
    /// Produce answers still to fail with NOT_LEADER_OR_FOLLOWER.
    produce_failures: usize,
    /// How long produce answers take (the batches are appended at once, in arrival order).
    produce_delay: Duration,
    /// Counts the batches of idempotent producers received, refused ones included.
    producer_batches: usize,
    /// The index (in `producer_batches`) of one batch to refuse with NOT_LEADER_OR_FOLLOWER.
    refuse_batch: Option<usize>,
    /// The index (in `producer_batches`) of a batch after whose append the broker drops the
    /// connection without answering (nor anything else still unanswered on it).
    drop_after_batch: Option<usize>,
    /// What idempotent producers' batches came to, in arrival order.
    stored: Vec<Stored>,
    /// Producer ids seen in produced batches.
    producer_ids: BTreeSet<i64>,
    /// Produce answers pending (appended, not yet answered), and the most there ever were.
    produce_answers_pending: (usize, usize),
    /// Fetch offsets asked, in order.
    fetch_offsets: Vec<i64>,
}

struct FakeBroker {
    address: String,
    state: Mutex<BrokerState>,
    /// Connections accepted so far.
    connections: AtomicUsize,
    /// Metadata requests answered so far.
    metadata_requests: AtomicUsize,
    /// Closes every open connection when notified.
    kick: Notify,
    /// The group coordinator's state.
    group: Mutex<GroupState>,
    /// Wakes held heartbeats when the group starts a rebalance or forgets a member.
    group_changed: Notify,
    /// Group requests (but heartbeats) as they arrive, and what tests' listeners add, with
    /// the time they happened.
    events: Mutex<Vec<(Instant, String)>>,
}

impl FakeBroker {
    async fn start(topics: &[(&str, usize)]) -> Arc<FakeBroker> {
        let (listener, address) = listen().await;
        let mut state = BrokerState::default();
        for (name, partitions) in topics {
            state.topics.insert(
                name.to_string(),
                (0..*partitions).map(|_| Log::default()).collect(),
            );
        }
        let broker = Arc::new(FakeBroker {
            address,
            state: Mutex::new(state),
            connections: AtomicUsize::new(0),
            metadata_requests: AtomicUsize::new(0),
            kick: Notify::new(),
            group: Mutex::new(GroupState::default()),
            group_changed: Notify::new(),
            events: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&broker);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                serving.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(Arc::clone(&serving).serve(stream));
            }
        });
        broker
    }

    async fn client(&self) -> Client {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        Client::connect(&self.address, config).await.unwrap()
    }

    /// Serves one connection: each request runs as its own task, answers go out as they
    /// complete.
    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let (mut read_half, mut write_half) = stream.into_split();
        let (answers, mut queue) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(frame) = queue.recv().await {
                if write_half.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let mut codec = FrameCodec::new(64 * 1024 * 1024);
        let mut buffer = BytesMut::new();
        loop {
            while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                let mut reader = Reader::new(frame);
                let header = RequestHeader::decode(&mut reader).unwrap();
                let request = Request::decode(&header, reader).unwrap();
                let broker = Arc::clone(&self);
                let answers = answers.clone();
                if let Request::Produce(request) = request {
                    // Appended here, in arrival order, as the real broker does; answered
                    // later.
                    let (response, drop_connection) = broker.produce_in_order(request);
                    if drop_connection {
                        writer.abort();
                        return;
                    }
                    tokio::spawn(async move {
                        let delay = broker.state.lock().unwrap().produce_delay;
                        tokio::time::sleep(delay).await;
                        broker.state.lock().unwrap().produce_answers_pending.0 -= 1;
                        if let Some(response) = response {
                            let _ = answers
                                .send(response_frame(header.correlation_id, &response))
                                .await;
                        }
                    });
                    continue;
                }
                tokio::spawn(async move {
                    if let Some(response) = broker.handle(request).await {
                        let _ = answers
                            .send(response_frame(header.correlation_id, &response))
                            .await;
                    }
                });
            }
            tokio::select! {
                read = read_half.read_buf(&mut buffer) => {
                    if read.unwrap_or(0) == 0 {
                        break;
                    }
                }
                _ = self.kick.notified() => break,
            }
        }
        writer.abort();
    }

    fn port(&self) -> i32 {
        self.address.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    async fn handle(&self, request: Request) -> Option<Response> {
        Some(match request {
            Request::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: ApiKey::ALL
                    .iter()
                    .map(|api_key| ApiVersion {
                        api_key: *api_key,
                        min_version: 0,
                        max_version: 0,
                    })
                    .collect(),
            }),
            Request::Metadata(request) => {
                self.metadata_requests.fetch_add(1, Ordering::SeqCst);
                Response::Metadata(self.metadata(request.topics))
            }
            Request::CreateTopics(request) => {
                let mut state = self.state.lock().unwrap();
                let topics = request
                    .topics
                    .into_iter()
                    .map(|topic| {
                        let error_code = if state.topics.contains_key(&topic.name) {
                            ErrorCode::TOPIC_ALREADY_EXISTS
                        } else {
                            let logs = (0..topic.partitions).map(|_| Log::default()).collect();
                            state.topics.insert(topic.name.clone(), logs);
                            ErrorCode::NONE
                        };
                        TopicError {
                            name: topic.name,
                            error_code,
                            error_message: None,
                        }
                    })
                    .collect();
                Response::CreateTopics(TopicErrorsResponse { topics })
            }
            Request::Produce(request) => return self.produce(request),
            Request::Fetch(request) => {
                // Long-poll a little when there is nothing, as a real broker waits.
                let response = self.fetch(&request);
                let empty = response
                    .topics
                    .iter()
                    .flat_map(|topic| &topic.partitions)
                    .all(|partition| partition.records.is_empty());
                if !empty {
                    return Some(Response::Fetch(response));
                }
                let wait = Duration::from_millis(request.max_wait_ms.min(50) as u64);
                tokio::time::sleep(wait).await;
                Response::Fetch(self.fetch(&request))
            }
            Request::ListOffsets(request) => {
                let state = self.state.lock().unwrap();
                let topics = request
                    .topics
                    .into_iter()
                    .map(|topic| ListOffsetsTopicResponse {
                        partitions: topic
                            .partitions
                            .iter()
                            .map(|asked| {
                                let log = state
                                    .topics
                                    .get(&topic.name)
                                    .and_then(|logs| logs.get(asked.partition as usize));
                                let (error_code, offset) = match (log, asked.timestamp) {
                                    (None, _) => (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, -1),
                                    (Some(_), ListOffsetsPartition::EARLIEST) => {
                                        (ErrorCode::NONE, 0)
                                    }
                                    (Some(log), _) => (ErrorCode::NONE, log.end),
                                };
                                ListOffsetsPartitionResponse {
                                    partition: asked.partition,
                                    error_code,
                                    timestamp: asked.timestamp,
                                    offset,
                                }
                            })
                            .collect(),
                        name: topic.name,
                    })
                    .collect();
                Response::ListOffsets(ListOffsetsResponse { topics })
            }
            request @ (Request::FindCoordinator(_)
            | Request::JoinGroup(_)
            | Request::SyncGroup(_)
            | Request::Heartbeat(_)
            | Request::LeaveGroup(_)
            | Request::OffsetCommit(_)
            | Request::OffsetFetch(_)
            | Request::DescribeGroups(_)
            | Request::ListGroups
            | Request::DeleteGroups(_)) => self.coordinate(request).await,
            other => panic!("the fake broker does not handle {other:?}"),
        })
    }

    fn metadata(&self, names: Option<Vec<String>>) -> MetadataResponse {
        let state = self.state.lock().unwrap();
        let names = names.unwrap_or_else(|| state.topics.keys().cloned().collect());
        MetadataResponse {
            brokers: vec![BrokerMetadata {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: self.port(),
            }],
            controller_id: 1,
            topics: names
                .into_iter()
                .map(|name| match state.topics.get(&name) {
                    Some(logs) => TopicMetadata {
                        error_code: ErrorCode::NONE,
                        partitions: (0..logs.len() as i32)
                            .map(|partition| PartitionMetadata {
                                partition,
                                leader: 1,
                                replicas: vec![1],
                                isr: vec![1],
                                log_end_offset: logs[partition as usize].end,
                                ..PartitionMetadata::default()
                            })
                            .collect(),
                        name,
                    },
                    None => TopicMetadata {
                        error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        name,
                        partitions: vec![],
                    },
                })
                .collect(),
        }
    }

    /// Appends a produce request's batches and returns its answer (none with acks=0), and
    /// whether to drop the connection instead of answering; counts the answer as pending.
    fn produce_in_order(&self, request: ProduceRequest) -> (Option<Response>, bool) {
        let drop_before = self.state.lock().unwrap().drop_after_batch;
        let response = self.produce(request);
        let mut state = self.state.lock().unwrap();
        let dropped = drop_before.is_some_and(|index| index < state.producer_batches);
        if dropped {
            state.drop_after_batch = None;
            return (None, true);
        }
        let pending = &mut state.produce_answers_pending;
        pending.0 += 1;
        pending.1 = pending.1.max(pending.0);
        (response, false)
    }

    fn produce(&self, request: ProduceRequest) -> Option<Response> {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        let written: Vec<_> = request
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| (topic.name.clone(), partition.partition))
            })
            .collect();
        state.produces.push((request.acks, written));
        let fail = state.produce_failures > 0;
        if fail {
            state.produce_failures -= 1;
        }
        let topics = request
            .topics
            .into_iter()
            .map(|topic| ProduceTopicResponse {
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|partition| {
                        let log = &mut state.topics.get_mut(&topic.name).unwrap()
                            [partition.partition as usize];
                        let producer_id =
                            BatchHeader::parse(&partition.records).unwrap().producer_id;
                        state.producer_ids.insert(producer_id);
                        let index = state.producer_batches;
                        if producer_id >= 0 {
                            state.producer_batches += 1;
                        }
                        let refuse = producer_id >= 0 && state.refuse_batch == Some(index);
                        let (error_code, base_offset) = if fail || refuse {
                            (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1)
                        } else {
                            let stored = log.produce(partition.records);
                            if producer_id >= 0 {
                                state.stored.push(stored);
                            }
                            match stored {
                                Stored::Appended(base_offset) | Stored::Duplicate(base_offset) => {
                                    (ErrorCode::NONE, base_offset)
                                }
                                Stored::OutOfOrder => (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1),
                            }
                        };
                        ProducePartitionResponse {
                            partition: partition.partition,
                            error_code,
                            error_message: None,
                            base_offset,
                            log_start_offset: 0,
                        }
                    })
                    .collect(),
                name: topic.name,
            })
            .collect();
        (request.acks != 0).then_some(Response::Produce(ProduceResponse { topics }))
    }

    fn fetch(&self, request: &mq_client::protocol::request::FetchRequest) -> FetchResponse {
        let mut state = self.state.lock().unwrap();
        let mut topics = Vec::new();
        for topic in &request.topics {
            let mut partitions = Vec::new();
            for asked in &topic.partitions {
                state.fetch_offsets.push(asked.fetch_offset);
                let log = &state.topics[&topic.name][asked.partition as usize];
                let mut response = FetchPartitionResponse {
                    partition: asked.partition,
                    high_watermark: log.end,
                    log_start_offset: 0,
                    ..FetchPartitionResponse::default()
                };
                if asked.fetch_offset < 0 || asked.fetch_offset > log.end {
                    response.error_code = ErrorCode::OFFSET_OUT_OF_RANGE;
                } else {
                    // Whole batches from the one holding the offset: the first may start
                    // before it.
                    let records: Vec<u8> = log
                        .batches
                        .iter()
                        .filter(|batch| {
                            BatchHeader::parse(batch).unwrap().next_offset() > asked.fetch_offset
                        })
                        .flat_map(|batch| batch.to_vec())
                        .collect();
                    response.records = Bytes::from(records);
                }
                partitions.push(response);
            }
            topics.push(FetchTopicResponse {
                name: topic.name.clone(),
                partitions,
            });
        }
        FetchResponse { topics }
    }

    /// The values stored in one partition, in offset order, with their offsets.
    fn log(&self, topic: &str, partition: usize) -> Vec<(i64, String)> {
        let state = self.state.lock().unwrap();
        state.topics[topic][partition]
            .batches
            .iter()
            .flat_map(|batch| mq_client::protocol::records(batch).unwrap())
            .map(|record| {
                let record = record.unwrap();
                (
                    record.offset,
                    String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    /// Appends records straight to a partition's log, in batches of the given values.
    fn append(&self, topic: &str, partition: usize, batches: &[&[&str]]) {
        let mut state = self.state.lock().unwrap();
        let log = &mut state.topics.get_mut(topic).unwrap()[partition];
        for values in batches {
            let mut builder = mq_client::protocol::BatchBuilder::new(mq_client::Compression::Zstd);
            for value in *values {
                let record = mq_client::protocol::Record::new(
                    7,
                    None,
                    Some(Bytes::copy_from_slice(value.as_bytes())),
                );
                builder.append(&record).unwrap();
            }
            let batch = builder.seal(log.end).unwrap();
            log.end = BatchHeader::parse(&batch).unwrap().next_offset();
            log.batches.push(batch);
        }
    }
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(20),
        delivery_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    }
}

#[tokio::test]
async fn the_client_reconnects_after_the_broker_drops_its_connection() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    assert_eq!(admin.list_topics().await.unwrap()[0].name, "t");
    assert_eq!(broker.connections.load(Ordering::SeqCst), 1);
    // As a broker restart or idle timeout does: every connection closed under the client.
    broker.kick.notify_waiters();
    let topics = admin.list_topics().await.unwrap();
    assert_eq!(topics[0].name, "t");
    assert_eq!(broker.connections.load(Ordering::SeqCst), 2);
    // The producer too finds its way back after another drop.
    broker.kick.notify_waiters();
    let producer = Producer::new(client, producer_config()).unwrap();
    let delivery = producer
        .send(ProducerRecord::new("t", "after the drop"))
        .await
        .unwrap();
    assert_eq!(delivery.await.unwrap().offset, 0);
    producer.close().await;
}

#[tokio::test]
async fn the_producer_retries_not_leader_and_keeps_order() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.state.lock().unwrap().produce_failures = 2;
    let metadata_before = broker.metadata_requests.load(Ordering::SeqCst);
    let producer = Producer::new(broker.client().await, producer_config()).unwrap();
    let mut deliveries = Vec::new();
    for index in 0..20 {
        let record = ProducerRecord::new("t", format!("v{index}")).with_partition(0);
        deliveries.push(producer.send(record).await.unwrap());
        if index % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset);
    }
    assert_eq!(offsets, (0..20).collect::<Vec<i64>>());
    let expected: Vec<_> = (0..20).map(|index| (index, format!("v{index}"))).collect();
    assert_eq!(broker.log("t", 0), expected, "written once each, in order");
    assert!(
        broker.metadata_requests.load(Ordering::SeqCst) > metadata_before,
        "NOT_LEADER_OR_FOLLOWER makes the producer look up leaders again"
    );
    producer.close().await;
}

/// Sends `count` records `v0`, `v1`, ... to partition 0 of `t` without waiting, in small
/// batches, and returns their offsets once all are acknowledged.
async fn send_pipelined(producer: &Producer, count: i64) -> Vec<i64> {
    let mut deliveries = Vec::new();
    for index in 0..count {
        let record = ProducerRecord::new("t", format!("v{index}")).with_partition(0);
        deliveries.push(producer.send(record).await.unwrap());
        if index % 4 == 3 {
            // Let the sender take what is sealed, so that batches go one by one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset);
    }
    offsets
}

fn pipelining_config() -> ProducerConfig {
    ProducerConfig {
        // About four records per batch.
        batch_bytes_max: 100,
        ..producer_config()
    }
}

#[tokio::test]
async fn a_batch_refused_in_a_pipeline_is_resent_first_and_records_land_once_in_order() {
    // Goal: with several batches of a partition in flight, one refused with
    // NOT_LEADER_OR_FOLLOWER makes the broker refuse the later ones as out of order; the
    // producer resends them all in order, and every record is stored once, in send order,
    // at the offset its delivery reports. Method: a fake broker enforcing the sequence rules
    // and answering produce requests 30 ms late (so that batches pipeline), refusing the
    // fourth batch it gets.
    let broker = FakeBroker::start(&[("t", 1)]).await;
    {
        let mut state = broker.state.lock().unwrap();
        state.produce_delay = Duration::from_millis(30);
        state.refuse_batch = Some(3);
    }
    let producer = Producer::new(broker.client().await, pipelining_config()).unwrap();
    let offsets = send_pipelined(&producer, 60).await;
    assert_eq!(offsets, (0..60).collect::<Vec<i64>>());
    let expected: Vec<_> = (0..60).map(|index| (index, format!("v{index}"))).collect();
    assert_eq!(broker.log("t", 0), expected, "written once each, in order");
    {
        let state = broker.state.lock().unwrap();
        assert!(
            state.produce_answers_pending.1 >= 2,
            "batches were pipelined: at most {} answers pending",
            state.produce_answers_pending.1
        );
        assert!(
            state.stored.contains(&Stored::OutOfOrder),
            "a batch behind the refused one was refused too: {:?}",
            state.stored
        );
        assert_eq!(state.producer_ids.len(), 1, "{:?}", state.producer_ids);
        assert!(state.producer_ids.first().unwrap() >= &0);
    }
    producer.close().await;
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_is_recognised_and_not_stored_twice() {
    // Goal: batches appended whose answers are lost with their connection are resent, and
    // the broker answers the repeats with their original offsets instead of storing them
    // again. Method: the fake broker drops the connection right after appending the third
    // batch, with the answers of the batches before it still pending.
    let broker = FakeBroker::start(&[("t", 1)]).await;
    {
        let mut state = broker.state.lock().unwrap();
        state.produce_delay = Duration::from_millis(30);
        state.drop_after_batch = Some(2);
    }
    let producer = Producer::new(broker.client().await, pipelining_config()).unwrap();
    let offsets = send_pipelined(&producer, 40).await;
    assert_eq!(offsets, (0..40).collect::<Vec<i64>>());
    let expected: Vec<_> = (0..40).map(|index| (index, format!("v{index}"))).collect();
    assert_eq!(broker.log("t", 0), expected, "written once each, in order");
    let stored = broker.state.lock().unwrap().stored.clone();
    assert!(
        stored
            .iter()
            .any(|stored| matches!(stored, Stored::Duplicate(_))),
        "a resent batch was recognised: {stored:?}"
    );
    producer.close().await;
}

#[tokio::test]
async fn without_idempotence_batches_carry_no_producer_id() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        idempotence: false,
        ..pipelining_config()
    };
    let producer = Producer::new(broker.client().await, config).unwrap();
    let offsets = send_pipelined(&producer, 10).await;
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    {
        let state = broker.state.lock().unwrap();
        assert_eq!(state.producer_ids, BTreeSet::from([-1]));
        assert!(state.stored.is_empty(), "nothing to check");
    }
    producer.close().await;
}

#[tokio::test]
async fn one_produce_request_carries_batches_of_several_partitions() {
    let broker = FakeBroker::start(&[("t", 3)]).await;
    let config = ProducerConfig {
        linger: Duration::from_secs(5),
        ..producer_config()
    };
    let producer = Producer::new(broker.client().await, config).unwrap();
    let mut deliveries = Vec::new();
    for partition in [0, 1, 2, 0] {
        let record = ProducerRecord::new("t", "x").with_partition(partition);
        deliveries.push(producer.send(record).await.unwrap());
    }
    // Linger is long: only the flush sends them, together.
    producer.flush().await;
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let produces = broker.state.lock().unwrap().produces.clone();
    assert_eq!(produces.len(), 1, "{produces:?}");
    let (acks, mut partitions) = produces[0].clone();
    partitions.sort();
    assert_eq!(acks, -1);
    assert_eq!(
        partitions,
        [
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("t".to_string(), 2)
        ]
    );
    assert_eq!(broker.log("t", 0).len(), 2);
    producer.close().await;
}

#[tokio::test]
async fn keyed_records_go_to_their_hash_partition() {
    let broker = FakeBroker::start(&[("t", 10)]).await;
    let producer = Producer::new(broker.client().await, producer_config()).unwrap();
    // Kafka's murmur2("21") is -973932308: partition 0 of 10.
    let delivery = producer
        .send(ProducerRecord::new("t", "v").with_key("21"))
        .await
        .unwrap();
    assert_eq!(delivery.await.unwrap().partition, 0);
    producer.close().await;
}

#[tokio::test]
async fn acks_zero_resolves_once_written_without_a_response() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        acks: Acks::None,
        ..producer_config()
    };
    let client = broker.client().await;
    let producer = Producer::new(client.clone(), config).unwrap();
    let delivery = producer
        .send(ProducerRecord::new("t", "fire and forget"))
        .await
        .unwrap();
    let metadata = delivery.await.unwrap();
    assert_eq!(
        (metadata.topic.as_str(), metadata.partition, metadata.offset),
        ("t", 0, -1)
    );
    producer.close().await;
    // The connection carries on: nothing waits for an answer that never comes.
    let topics = Admin::new(client).list_topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(broker.log("t", 0), [(0, "fire and forget".to_string())]);
    assert_eq!(broker.state.lock().unwrap().produces[0].0, 0);
}

#[tokio::test]
async fn unknown_topics_are_reported_by_name() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let client = broker.client().await;
    let producer = Producer::new(client.clone(), producer_config()).unwrap();
    let error = producer
        .send(ProducerRecord::new("nope", "v"))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "topic 'nope' does not exist");
    let error = producer
        .send(ProducerRecord::new("t", "v").with_partition(5))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "topic 't' has no partition 5");
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).unwrap();
    consumer.assign([("nope", 0)]);
    let error = consumer.poll(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(error.to_string(), "topic 'nope' does not exist");
    let error = consumer.assign_all("nope").await.unwrap_err();
    assert!(matches!(error, ClientError::UnknownTopic { .. }));
}

#[tokio::test]
async fn admin_maps_topic_errors_and_sees_new_topics() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let error = admin.create_topic("t", 1, 1, &[]).await.unwrap_err();
    assert_eq!(error.to_string(), "topic 't' already exists");
    admin.create_topic("fresh", 4, 1, &[]).await.unwrap();
    let fresh = admin.describe_topic("fresh").await.unwrap();
    assert_eq!(fresh.partition_count(), 4);
    assert_eq!(fresh.partitions[3].leader, Some(1));
    let error = admin.describe_topic("nope").await.unwrap_err();
    assert_eq!(error.to_string(), "topic 'nope' does not exist");
    let cluster = admin.cluster().await.unwrap();
    assert_eq!(cluster.controller_id, Some(1));
    assert_eq!(cluster.brokers[0].address(), broker.address);
    // The cache learnt of the new topic: a producer can use it at once.
    let producer = Producer::new(client, producer_config()).unwrap();
    let delivery = producer
        .send(ProducerRecord::new("fresh", "v").with_partition(3))
        .await
        .unwrap();
    assert_eq!(delivery.await.unwrap().partition, 3);
    producer.close().await;
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        ..ConsumerConfig::default()
    }
}

async fn poll_values(consumer: &mut Consumer, count: usize) -> Vec<(i64, String)> {
    let mut values = Vec::new();
    for _ in 0..50 {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push((
                record.offset,
                String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
            ));
        }
        if values.len() >= count {
            break;
        }
    }
    values
}

#[tokio::test]
async fn the_consumer_skips_records_below_its_position() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    // Zstd batches of offsets 0-2 and 3-4.
    broker.append("t", 0, &[&["a", "b", "c"], &["d", "e"]]);
    let mut consumer = Consumer::new(broker.client().await, consumer_config()).unwrap();
    consumer.assign([("t", 0)]);
    consumer.seek("t", 0, SeekTo::Offset(1)).await.unwrap();
    let values = poll_values(&mut consumer, 4).await;
    assert_eq!(
        values,
        [
            (1, "b".into()),
            (2, "c".into()),
            (3, "d".into()),
            (4, "e".into())
        ]
    );
    assert_eq!(consumer.position("t", 0).await.unwrap(), 5);
    assert_eq!(broker.state.lock().unwrap().fetch_offsets[0], 1);
}

#[tokio::test]
async fn the_consumer_resets_an_out_of_range_position_per_policy() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.append("t", 0, &[&["a", "b"]]);
    let client = broker.client().await;
    let mut consumer = Consumer::new(client.clone(), consumer_config()).unwrap();
    consumer.assign([("t", 0)]);
    consumer.seek("t", 0, SeekTo::Offset(100)).await.unwrap();
    let values = poll_values(&mut consumer, 2).await;
    assert_eq!(
        values,
        [(0, "a".into()), (1, "b".into())],
        "reset to earliest"
    );

    let config = ConsumerConfig {
        reset: mq_client::OffsetReset::None,
        ..consumer_config()
    };
    let mut strict = Consumer::new(client, config).unwrap();
    strict.assign([("t", 0)]);
    let error = strict.poll(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "no position for 't' partition 0: seek first"
    );
    strict.seek("t", 0, SeekTo::Offset(100)).await.unwrap();
    let error = strict.poll(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "offset 100 is out of range for 't' partition 0"
    );
}

#[tokio::test]
async fn produced_records_come_back_to_a_consumer() {
    let broker = FakeBroker::start(&[("t", 3)]).await;
    let client = broker.client().await;
    let mut consumer = Consumer::new(client.clone(), consumer_config()).unwrap();
    consumer.assign_all("t").await.unwrap();
    assert_eq!(consumer.assignment().len(), 3);
    let end = consumer.end_offsets(&consumer.assignment()).await.unwrap();
    assert!(end.values().all(|offset| *offset == 0));
    // Poll first, so that fetches long-poll before anything is produced.
    assert!(consumer
        .poll(Duration::from_millis(60))
        .await
        .unwrap()
        .is_empty());
    let config = ProducerConfig {
        compression: mq_client::Compression::Zstd,
        ..producer_config()
    };
    let producer = Producer::new(client, config).unwrap();
    for index in 0..30 {
        let record = ProducerRecord::new("t", format!("v{index}")).with_key(format!("k{index}"));
        drop(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    let mut values: Vec<String> = poll_values(&mut consumer, 30)
        .await
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    values.sort_by_key(|value| value[1..].parse::<u32>().unwrap());
    let expected: Vec<_> = (0..30).map(|index| format!("v{index}")).collect();
    assert_eq!(values, expected);
    producer.close().await;
}

#[tokio::test]
async fn a_closed_producer_refuses_records() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let producer = Producer::new(broker.client().await, producer_config()).unwrap();
    let delivery = producer
        .send(ProducerRecord::new("t", "last"))
        .await
        .unwrap();
    producer.close().await;
    assert_eq!(
        delivery.await.unwrap().offset,
        0,
        "close delivers what was sent"
    );
    let error = producer
        .send(ProducerRecord::new("t", "too late"))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "producer is closed");
}

// ---------------------------------------------------------------------------------------
// The fake broker as a group coordinator, and consumer groups against it.

/// The fake's coordinator state, for one group named `g`. A generation forms as soon as a
/// member joins (the tests have one member at a time); the assignment is scripted or, by
/// default, every partition of the member's topics.
#[derive(Default)]
struct GroupState {
    /// The current generation; 0 before the first.
    generation: i32,
    /// The members, by id, with their topics.
    members: BTreeMap<String, Vec<String>>,
    /// The members' partitions in the current generation.
    assigned: BTreeMap<String, Vec<(String, i32)>>,
    /// How many member ids were handed out.
    member_ids: usize,
    /// Whether a rebalance started: heartbeats answer REBALANCE_IN_PROGRESS until a join.
    rebalancing: bool,
    /// The assignments of the next generations, in order; then every partition.
    assignments: VecDeque<Vec<(String, i32)>>,
    /// Committed offsets.
    committed: BTreeMap<(String, i32), i64>,
    /// A commit holding this offset is applied only after a while.
    slow_offset: Option<i64>,
}

impl GroupState {
    fn known(&self) -> bool {
        !self.members.is_empty() || !self.committed.is_empty()
    }

    fn state(&self) -> &'static str {
        match (self.members.is_empty(), self.rebalancing) {
            (true, _) => "Empty",
            (false, true) => "PreparingRebalance",
            (false, false) => "Stable",
        }
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

fn by_topic(partitions: &[(String, i32)]) -> Vec<TopicPartitions> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    topics
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

fn names(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(" ")
}

impl FakeBroker {
    /// Notes an event (a group request, a listener call, a test step).
    fn event(&self, text: impl Into<String>) {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), text.into()));
    }

    fn events(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().map(|(_, text)| text.clone()).collect()
    }

    /// The events from the last one equal to `marker` on.
    fn events_since(&self, marker: &str) -> Vec<String> {
        let events = self.events();
        let start = events.iter().rposition(|text| text == marker).unwrap();
        events[start..].to_vec()
    }

    /// When the last event equal to `text` happened.
    fn event_time(&self, text: &str) -> Instant {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .rev()
            .find(|(_, event)| event == text)
            .unwrap()
            .0
    }

    /// Starts a rebalance, as another member joining would.
    fn start_rebalance(&self) {
        self.group.lock().unwrap().rebalancing = true;
        self.event("rebalance");
        self.group_changed.notify_waiters();
    }

    /// Forgets every member, as a session expiry or a broker restart would.
    fn forget_members(&self) {
        self.group.lock().unwrap().members.clear();
        self.event("forget");
        self.group_changed.notify_waiters();
    }

    async fn coordinate(&self, request: Request) -> Response {
        match request {
            Request::FindCoordinator(_) => {
                self.event("FindCoordinator");
                Response::FindCoordinator(FindCoordinatorResponse {
                    error_code: ErrorCode::NONE,
                    node_id: 1,
                    host: "127.0.0.1".into(),
                    port: self.port(),
                })
            }
            Request::JoinGroup(request) => {
                self.event(format!("JoinGroup {}", or_dash(&request.member_id)));
                let mut group = self.group.lock().unwrap();
                let known = group.members.contains_key(&request.member_id);
                if !request.member_id.is_empty() && !known {
                    return Response::JoinGroup(JoinGroupResponse {
                        error_code: ErrorCode::UNKNOWN_MEMBER_ID,
                        ..JoinGroupResponse::default()
                    });
                }
                let member_id = if request.member_id.is_empty() {
                    group.member_ids += 1;
                    format!("member-{}", group.member_ids)
                } else {
                    request.member_id
                };
                group.members.insert(member_id.clone(), request.topics);
                group.generation += 1;
                group.rebalancing = false;
                Response::JoinGroup(JoinGroupResponse {
                    error_code: ErrorCode::NONE,
                    generation_id: group.generation,
                    assignor: request.assignors[0].clone(),
                    leader_id: member_id.clone(),
                    member_id,
                })
            }
            Request::SyncGroup(request) => {
                self.event(format!("SyncGroup {}", request.generation_id));
                let (topics, scripted) = {
                    let mut group = self.group.lock().unwrap();
                    let Some(topics) = group.members.get(&request.member_id).cloned() else {
                        return sync_error(ErrorCode::UNKNOWN_MEMBER_ID);
                    };
                    if request.generation_id != group.generation {
                        return sync_error(ErrorCode::ILLEGAL_GENERATION);
                    }
                    (topics, group.assignments.pop_front())
                };
                let assignment = scripted.unwrap_or_else(|| {
                    let state = self.state.lock().unwrap();
                    topics
                        .iter()
                        .flat_map(|topic| {
                            let count = state.topics.get(topic).map_or(0, Vec::len) as i32;
                            (0..count).map(move |partition| (topic.clone(), partition))
                        })
                        .collect()
                });
                let mut group = self.group.lock().unwrap();
                group.assigned.insert(request.member_id, assignment.clone());
                Response::SyncGroup(SyncGroupResponse {
                    error_code: ErrorCode::NONE,
                    assignment: by_topic(&assignment),
                })
            }
            Request::Heartbeat(request) => Response::Heartbeat(GroupErrorResponse {
                error_code: self
                    .heartbeat(
                        &request.member_id,
                        request.generation_id,
                        request.max_wait_ms,
                    )
                    .await,
            }),
            Request::LeaveGroup(request) => {
                self.event(format!("LeaveGroup {}", request.member_id));
                let mut group = self.group.lock().unwrap();
                let error_code = match group.members.remove(&request.member_id) {
                    Some(_) => ErrorCode::NONE,
                    None => ErrorCode::UNKNOWN_MEMBER_ID,
                };
                Response::LeaveGroup(GroupErrorResponse { error_code })
            }
            Request::OffsetCommit(request) => self.commit(request).await,
            Request::OffsetFetch(request) => {
                let group = self.group.lock().unwrap();
                let asked: Vec<(String, i32)> = match &request.topics {
                    Some(topics) => topics
                        .iter()
                        .flat_map(|topic| {
                            topic
                                .partitions
                                .iter()
                                .map(|partition| (topic.topic.clone(), *partition))
                        })
                        .collect(),
                    None => group.committed.keys().cloned().collect(),
                };
                let listed: Vec<String> = asked
                    .iter()
                    .map(|(topic, partition)| format!("{topic}-{partition}"))
                    .collect();
                self.event(format!("OffsetFetch {}", listed.join(" ")));
                let topics = by_topic(&asked)
                    .into_iter()
                    .map(|topic| OffsetFetchTopic {
                        partitions: topic
                            .partitions
                            .iter()
                            .map(|partition| OffsetFetchPartition {
                                partition: *partition,
                                offset: group
                                    .committed
                                    .get(&(topic.topic.clone(), *partition))
                                    .copied()
                                    .unwrap_or(-1),
                                metadata: None,
                                error_code: ErrorCode::NONE,
                            })
                            .collect(),
                        name: topic.topic,
                    })
                    .collect();
                Response::OffsetFetch(OffsetFetchResponse {
                    error_code: ErrorCode::NONE,
                    topics,
                })
            }
            Request::DescribeGroups(request) => {
                let group = self.group.lock().unwrap();
                let groups = request
                    .groups
                    .into_iter()
                    .map(|group_id| {
                        if group_id != "g" || !group.known() {
                            return DescribedGroup {
                                error_code: ErrorCode::NONE,
                                group_id,
                                state: "Dead".into(),
                                ..DescribedGroup::default()
                            };
                        }
                        DescribedGroup {
                            error_code: ErrorCode::NONE,
                            group_id,
                            state: group.state().into(),
                            assignor: "sticky".into(),
                            generation_id: group.generation,
                            members: group
                                .members
                                .iter()
                                .map(|(member_id, topics)| DescribedMember {
                                    member_id: member_id.clone(),
                                    client_id: "mq-client".into(),
                                    client_host: "127.0.0.1".into(),
                                    topics: topics.clone(),
                                    assignment: by_topic(
                                        group.assigned.get(member_id).map_or(&[], Vec::as_slice),
                                    ),
                                })
                                .collect(),
                        }
                    })
                    .collect();
                Response::DescribeGroups(DescribeGroupsResponse { groups })
            }
            Request::ListGroups => {
                let group = self.group.lock().unwrap();
                let groups = group
                    .known()
                    .then(|| ListedGroup {
                        group_id: "g".into(),
                        state: group.state().into(),
                        members: group.members.len() as i32,
                    })
                    .into_iter()
                    .collect();
                Response::ListGroups(ListGroupsResponse {
                    error_code: ErrorCode::NONE,
                    groups,
                })
            }
            Request::DeleteGroups(request) => {
                let mut group = self.group.lock().unwrap();
                let groups = request
                    .groups
                    .into_iter()
                    .map(|group_id| {
                        let code = if group_id != "g" || !group.known() {
                            ErrorCode::GROUP_ID_NOT_FOUND
                        } else if !group.members.is_empty() {
                            ErrorCode::NON_EMPTY_GROUP
                        } else {
                            group.committed.clear();
                            ErrorCode::NONE
                        };
                        (group_id, code)
                    })
                    .collect();
                Response::DeleteGroups(GroupErrorsResponse { groups })
            }
            other => panic!("not a group request: {other:?}"),
        }
    }

    /// Holds a heartbeat while the member's generation is current and stable, up to
    /// `max_wait_ms`, as the real coordinator does.
    async fn heartbeat(&self, member_id: &str, generation: i32, max_wait_ms: i32) -> ErrorCode {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(max_wait_ms.max(0) as u64);
        loop {
            let changed = self.group_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let group = self.group.lock().unwrap();
                if !group.members.contains_key(member_id) {
                    return ErrorCode::UNKNOWN_MEMBER_ID;
                }
                if generation != group.generation {
                    return ErrorCode::ILLEGAL_GENERATION;
                }
                if group.rebalancing {
                    return ErrorCode::REBALANCE_IN_PROGRESS;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return ErrorCode::NONE;
            }
        }
    }

    async fn commit(&self, request: mq_client::protocol::request::OffsetCommitRequest) -> Response {
        let offsets: Vec<(String, i32, i64)> = request
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| (topic.name.clone(), partition.partition, partition.offset))
            })
            .collect();
        let listed: Vec<String> = offsets
            .iter()
            .map(|(topic, partition, offset)| format!("{topic}-{partition}@{offset}"))
            .collect();
        let listed = listed.join(" ");
        self.event(format!(
            "OffsetCommit {} {} {listed}",
            request.generation_id,
            or_dash(&request.member_id)
        ));
        let (code, slow) = {
            let group = self.group.lock().unwrap();
            let code = if request.generation_id == -1 && request.member_id.is_empty() {
                if group.members.is_empty() {
                    ErrorCode::NONE
                } else {
                    ErrorCode::NON_EMPTY_GROUP
                }
            } else if !group.members.contains_key(&request.member_id) {
                ErrorCode::UNKNOWN_MEMBER_ID
            } else if request.generation_id != group.generation {
                ErrorCode::ILLEGAL_GENERATION
            } else {
                ErrorCode::NONE
            };
            let slow = offsets
                .iter()
                .any(|(_, _, offset)| Some(*offset) == group.slow_offset);
            (code, slow)
        };
        if slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if code == ErrorCode::NONE {
            let mut group = self.group.lock().unwrap();
            for (topic, partition, offset) in &offsets {
                group.committed.insert((topic.clone(), *partition), *offset);
            }
            self.event(format!("committed {listed}"));
        }
        Response::OffsetCommit(PartitionErrorsResponse {
            topics: request
                .topics
                .into_iter()
                .map(|topic| TopicPartitionErrors {
                    partitions: topic
                        .partitions
                        .iter()
                        .map(|partition| (partition.partition, code))
                        .collect(),
                    name: topic.name,
                })
                .collect(),
        })
    }
}

fn sync_error(error_code: ErrorCode) -> Response {
    Response::SyncGroup(SyncGroupResponse {
        error_code,
        assignment: Vec::new(),
    })
}

/// Settings for a group member against the fake: quick fetches, heartbeats held long enough
/// that only a rebalance ends one early, no auto-commit unless a test asks.
fn group_config() -> ConsumerConfig {
    ConsumerConfig {
        heartbeat_interval: Duration::from_secs(2),
        session_timeout: Duration::from_secs(6),
        auto_commit: false,
        ..consumer_config()
    }
}

/// Notes rebalance callbacks among the fake broker's events; commits the positions on
/// revocation when told to.
struct Recorder {
    broker: Arc<FakeBroker>,
    commit_on_revoke: bool,
}

impl RebalanceListener for Recorder {
    async fn on_partitions_revoked(&mut self, consumer: &mut Consumer, revoked: &[TopicPartition]) {
        self.broker.event(format!("revoked {}", names(revoked)));
        if self.commit_on_revoke {
            consumer.commit_sync().await.unwrap();
        }
    }

    async fn on_partitions_assigned(&mut self, _: &mut Consumer, assigned: &[TopicPartition]) {
        self.broker.event(format!("assigned {}", names(assigned)));
    }
}

/// Polls until the consumer has joined its group.
async fn join(consumer: &mut Consumer) {
    for _ in 0..50 {
        if consumer.group_generation().is_some() {
            return;
        }
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    panic!("the consumer did not join its group");
}

/// Waits until `condition` holds, for up to 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..250 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_member_starts_at_the_committed_offsets_auto_commits_and_leaves_on_close() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    broker.append("t", 0, &[&["a", "b", "c", "d"]]);
    broker.append("t", 1, &[&["e", "f"]]);
    broker
        .group
        .lock()
        .unwrap()
        .committed
        .insert(("t".into(), 0), 2);
    let config = ConsumerConfig {
        auto_commit: true,
        auto_commit_interval: Duration::from_millis(100),
        ..group_config()
    };
    let mut consumer = Consumer::new(broker.client().await, config).unwrap();
    consumer.subscribe("g", &["t"]).unwrap();
    assert_eq!(consumer.group_generation(), None, "joins in poll");
    let mut values = poll_values(&mut consumer, 4).await;
    values.sort();
    assert_eq!(
        values,
        [
            (0, "e".into()),
            (1, "f".into()),
            (2, "c".into()),
            (3, "d".into())
        ],
        "t-0 from its committed offset, t-1 (none committed) from the earliest"
    );
    assert_eq!(consumer.group_generation(), Some(1));
    assert_eq!(consumer.member_id(), Some("member-1"));
    assert_eq!(
        broker.events()[..4],
        [
            "FindCoordinator",
            "JoinGroup -",
            "SyncGroup 1",
            "OffsetFetch t-0 t-1"
        ]
    );
    // A poll after the interval commits what the earlier polls returned.
    tokio::time::sleep(Duration::from_millis(150)).await;
    consumer.poll(Duration::from_millis(10)).await.unwrap();
    eventually("the auto-commit", || {
        broker
            .events()
            .contains(&"committed t-0@4 t-1@2".to_string())
    })
    .await;
    broker.event("closing");
    consumer.close().await.unwrap();
    assert_eq!(
        broker.events_since("closing"),
        [
            "closing",
            "OffsetCommit 1 member-1 t-0@4 t-1@2",
            "committed t-0@4 t-1@2",
            "LeaveGroup member-1"
        ]
    );
}

#[tokio::test]
async fn a_rebalance_revokes_through_the_listener_then_rejoins_at_once() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.append("t", 0, &[&["a", "b", "c"]]);
    let mut consumer = Consumer::new(broker.client().await, group_config()).unwrap();
    consumer.set_rebalance_listener(Recorder {
        broker: Arc::clone(&broker),
        commit_on_revoke: true,
    });
    consumer.subscribe("g", &["t"]).unwrap();
    assert_eq!(poll_values(&mut consumer, 3).await.len(), 3);
    // The heartbeat is held (for up to 2 s): only the rebalance ends it early.
    broker.start_rebalance();
    assert!(consumer
        .poll(Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        broker.events_since("rebalance"),
        [
            "rebalance",
            "revoked t-0",
            "OffsetCommit 1 member-1 t-0@3",
            "committed t-0@3",
            "JoinGroup member-1",
            "SyncGroup 2",
            // The partition stays: it keeps its position, no committed offset is read.
            "assigned t-0"
        ],
        "the listener commits in the old generation before the member rejoins"
    );
    let reaction = broker.event_time("JoinGroup member-1") - broker.event_time("rebalance");
    assert!(
        reaction < Duration::from_millis(300),
        "rejoined {reaction:?} after the rebalance began"
    );
    assert_eq!(consumer.group_generation(), Some(2));
    consumer.close().await.unwrap();
    assert_eq!(
        broker.events().last().unwrap(),
        "LeaveGroup member-1",
        "close tells the listener (which commits), then leaves"
    );
}

#[tokio::test]
async fn a_kept_partition_keeps_its_position_and_a_new_one_starts_at_its_commit() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    broker.append("t", 0, &[&["a", "b", "c"]]);
    broker.append("t", 1, &[&["x", "y", "z"]]);
    {
        let mut group = broker.group.lock().unwrap();
        group.committed.insert(("t".into(), 1), 1);
        group.assignments = VecDeque::from([
            vec![("t".to_string(), 0)],
            vec![("t".to_string(), 0), ("t".to_string(), 1)],
        ]);
    }
    let mut consumer = Consumer::new(broker.client().await, group_config()).unwrap();
    consumer.subscribe("g", &["t"]).unwrap();
    let values = poll_values(&mut consumer, 3).await;
    assert_eq!(values, [(0, "a".into()), (1, "b".into()), (2, "c".into())]);
    // Nothing was committed for t-0: after the rebalance only its position in memory says
    // where the member was.
    broker.start_rebalance();
    eventually("the heartbeat to report the rebalance", || {
        broker.events().contains(&"rebalance".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.append("t", 0, &[&["d"]]);
    let mut values = poll_values(&mut consumer, 3).await;
    values.sort();
    assert_eq!(values, [(1, "y".into()), (2, "z".into()), (3, "d".into())]);
    assert_eq!(consumer.group_generation(), Some(2));
    let fetches: Vec<String> = broker
        .events_since("rebalance")
        .into_iter()
        .filter(|event| event.starts_with("OffsetFetch"))
        .collect();
    assert_eq!(
        fetches,
        ["OffsetFetch t-1"],
        "only the new partition's is read"
    );
}

#[tokio::test]
async fn a_member_the_coordinator_forgot_joins_anew_from_the_committed_offsets() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.append("t", 0, &[&["a", "b", "c"]]);
    let mut consumer = Consumer::new(broker.client().await, group_config()).unwrap();
    consumer.subscribe("g", &["t"]).unwrap();
    assert_eq!(poll_values(&mut consumer, 3).await.len(), 3);
    consumer
        .commit_offsets(&[(TopicPartition::new("t", 0), 1)])
        .await
        .unwrap();
    broker.forget_members();
    let values = poll_values(&mut consumer, 2).await;
    assert_eq!(
        values,
        [(1, "b".into()), (2, "c".into())],
        "a new member reads the committed offset, not the old member's position"
    );
    assert_eq!(consumer.member_id(), Some("member-2"));
    assert_eq!(
        broker.events_since("forget")[1..4],
        ["JoinGroup -", "SyncGroup 2", "OffsetFetch t-0"]
    );
}

#[tokio::test]
async fn commits_are_applied_in_the_order_they_were_made() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.group.lock().unwrap().slow_offset = Some(5);
    let mut consumer = Consumer::new(broker.client().await, group_config()).unwrap();
    consumer.subscribe("g", &["t"]).unwrap();
    join(&mut consumer).await;
    let partition = TopicPartition::new("t", 0);
    // Dropping the handle does not cancel the commit.
    drop(consumer.commit_offsets_async(vec![(partition.clone(), 5)]));
    let second = consumer.commit_offsets_async(vec![(partition.clone(), 6)]);
    consumer
        .commit_offsets(&[(partition.clone(), 7)])
        .await
        .unwrap();
    second.await.unwrap();
    let applied: Vec<String> = broker
        .events()
        .into_iter()
        .filter(|event| event.starts_with("committed"))
        .collect();
    assert_eq!(
        applied,
        ["committed t-0@5", "committed t-0@6", "committed t-0@7"],
        "the slow first commit is not overtaken"
    );
    let committed = consumer
        .committed(&[partition.clone(), TopicPartition::new("t", 1)])
        .await
        .unwrap();
    assert_eq!(committed[&partition], Some(7));
    assert_eq!(committed[&TopicPartition::new("t", 1)], None);
    let error = consumer
        .commit_offsets(&[(partition, -1)])
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "invalid offset: -1 for t-0 is negative");
}

#[tokio::test]
async fn group_operations_need_a_subscription_and_exclude_assigning_by_hand() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = broker.client().await;
    let mut manual = Consumer::new(client.clone(), group_config()).unwrap();
    manual.assign([("t", 0)]);
    let error = manual.commit_sync().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "commit needs a group: this consumer has not subscribed to one"
    );
    let error = manual.subscribe("g", &["t"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot subscribe: this consumer's partitions are assigned by hand"
    );
    manual.close().await.unwrap();

    let mut member = Consumer::new(client, group_config()).unwrap();
    member.subscribe("g", &["t"]).unwrap();
    let error = member
        .commit_offsets(&[(TopicPartition::new("t", 0), 1)])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "group g: this consumer is not a member yet: poll first"
    );
    member.assign([("t", 0)]);
    let error = member.poll(Duration::from_millis(10)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot assign partitions by hand: this consumer is subscribed to group g"
    );
    let error = member.subscribe("h", &["t"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot subscribe to group h: this consumer is subscribed to group g"
    );
    assert!(member.subscribe("", &["t"]).is_err());
    member.close().await.unwrap();
    assert!(
        !broker
            .events()
            .iter()
            .any(|event| event.starts_with("LeaveGroup")),
        "a consumer that never joined has nothing to leave"
    );
}

#[tokio::test]
async fn admin_lists_describes_resets_and_deletes_groups() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    broker.append("t", 0, &[&["a", "b", "c"]]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let nobody = admin.describe_group("nobody").await.unwrap();
    assert_eq!((nobody.state.as_str(), nobody.members.len()), ("Dead", 0));
    assert!(admin.list_groups().await.unwrap().is_empty());

    let t0 = TopicPartition::new("t", 0);
    let t1 = TopicPartition::new("t", 1);
    admin
        .alter_committed_offsets("g", &[(t0.clone(), 2), (t1.clone(), 0)])
        .await
        .unwrap();
    let committed = admin.committed_offsets("g").await.unwrap();
    assert_eq!(committed[&t0].offset, 2);
    assert_eq!(committed[&t1].offset, 0);

    let mut member = Consumer::new(client, group_config()).unwrap();
    member.subscribe("g", &["t"]).unwrap();
    join(&mut member).await;
    let groups = admin.list_groups().await.unwrap();
    assert_eq!(
        groups,
        [mq_client::GroupListing {
            group_id: "g".into(),
            state: "Stable".into(),
            members: 1
        }]
    );
    let description = admin.describe_group("g").await.unwrap();
    assert_eq!(description.state, "Stable");
    assert_eq!(description.generation_id, 1);
    assert_eq!(description.members[0].member_id, "member-1");
    assert_eq!(description.members[0].topics, ["t"]);
    assert_eq!(description.members[0].assignment, [t0.clone(), t1.clone()]);
    let error = admin
        .alter_committed_offsets("g", &[(t0.clone(), 0)])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "group g has active members: stop them before resetting its offsets"
    );
    let error = admin.delete_group("g").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "group g has active members: stop them before deleting it"
    );
    member.close().await.unwrap();
    admin.delete_group("g").await.unwrap();
    let error = admin.delete_group("g").await.unwrap_err();
    assert_eq!(error.to_string(), "group g does not exist");

    let earliest = admin
        .list_offsets(&[t0.clone(), t1.clone()], OffsetSpec::Earliest)
        .await
        .unwrap();
    let latest = admin
        .list_offsets(&[t0.clone(), t1.clone()], OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!((earliest[&t0], latest[&t0], latest[&t1]), (0, 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_reach_the_broker_in_the_order_they_were_drained() {
    // Goal: on a multi-thread runtime, where tasks spawned one after the other may start in
    // any order, a partition's pipelined batches still reach the broker in sequence order
    // (none refused as out of order). Method: 200 records in small batches, answers 30 ms late
    // so that several requests are in flight, nothing failing.
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.state.lock().unwrap().produce_delay = Duration::from_millis(30);
    let producer = Producer::new(broker.client().await, pipelining_config()).unwrap();
    let offsets = send_pipelined(&producer, 200).await;
    assert_eq!(offsets, (0..200).collect::<Vec<i64>>());
    {
        let state = broker.state.lock().unwrap();
        assert!(state.produce_answers_pending.1 >= 2, "pipelined");
        assert!(
            !state.stored.contains(&Stored::OutOfOrder),
            "{:?}",
            state.stored
        );
    }
    producer.close().await;
}

#[tokio::test]
async fn a_corrupt_batch_stops_the_consumer_at_its_offset_after_the_records_before_it() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.append("t", 0, &[&["a", "b"], &["c", "d"], &["e"]]);
    {
        // Flip the last byte of the second batch: its CRC no longer matches.
        let mut state = broker.state.lock().unwrap();
        let batches = &mut state.topics.get_mut("t").unwrap()[0].batches;
        let mut damaged = batches[1].to_vec();
        *damaged.last_mut().unwrap() ^= 0xff;
        batches[1] = Bytes::from(damaged);
    }
    let mut consumer = Consumer::new(broker.client().await, consumer_config()).unwrap();
    consumer.assign([("t", 0)]);
    consumer.seek("t", 0, SeekTo::Beginning).await.unwrap();
    let first = consumer.poll(Duration::from_secs(5)).await.unwrap();
    let values: Vec<_> = first.iter().map(|record| record.offset).collect();
    assert_eq!(values, [0, 1], "the records before the damage come first");
    for _ in 0..2 {
        // Every later poll reports the damage at its offset: the position went back there
        // (a prefetch sent from past it is dropped), never past it.
        let error = consumer.poll(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(error, ClientError::Corrupt { offset: 2, .. }),
            "{error}"
        );
        assert_eq!(consumer.position("t", 0).await.unwrap(), 2);
    }
}
