//! The client against a fake broker written here with tokio: no real broker needed.
//!
//! Two kinds of fakes. Scripted sockets (`listen` + `read_request` + `write_response`) play
//! one exact exchange, for the connection's behaviour: responses out of order, a socket
//! closed mid-request, a late answer after a timeout. [`FakeBroker`] is a small in-memory
//! broker (one node, topics of in-memory logs, each request answered by its own task as the
//! real broker does) with knobs to misbehave, for the producer, consumer, admin and the
//! reconnection logic.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_client::protocol::batch::{self, BatchHeader};
use mq_client::protocol::codec::{self, FrameCodec};
use mq_client::protocol::request::{
    ApiKey, ListOffsetsPartition, MetadataRequest, ProduceRequest, Request, RequestHeader,
};
use mq_client::protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerMetadata, FetchPartitionResponse, FetchResponse,
    FetchTopicResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, Response, ResponseHeader, TopicError,
    TopicErrorsResponse, TopicMetadata,
};
use mq_client::protocol::wire::Reader;
use mq_client::{
    Acks, Admin, Client, ClientConfig, ClientError, Connection, ConnectionConfig, Consumer,
    ConsumerConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord, SeekTo,
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
}

#[derive(Default)]
struct BrokerState {
    /// Topics and their partitions' logs.
    topics: BTreeMap<String, Vec<Log>>,
    /// Produce requests received, as (acks, [(topic, partition)]).
    produces: Vec<(i16, Vec<(String, i32)>)>,
    /// Produce answers still to fail with NOT_LEADER_OR_FOLLOWER.
    produce_failures: usize,
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

    fn produce(&self, request: ProduceRequest) -> Option<Response> {
        let mut state = self.state.lock().unwrap();
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
                    .map(|mut partition| {
                        let log = &mut state.topics.get_mut(&topic.name).unwrap()
                            [partition.partition as usize];
                        let (error_code, base_offset) = if fail {
                            (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1)
                        } else {
                            let base_offset = log.end;
                            batch::set_base_offset(&mut partition.records, base_offset);
                            let header = batch::validate(&partition.records).unwrap();
                            log.end = header.next_offset();
                            log.batches.push(partition.records.freeze());
                            (ErrorCode::NONE, base_offset)
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
