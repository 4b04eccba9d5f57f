//! What a misbehaving or unlucky client can send a real broker process: each case gets a
//! clear error code or a closed connection, and the broker keeps serving everyone else.
//! Also the basic produce / fetch / long-poll behaviour on the wire, without the client.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mq_protocol::batch;
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::request::{
    ApiKey, CreatableTopic, CreateTopicsRequest, FetchPartition, FetchRequest, FetchTopic,
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, MetadataRequest, Request,
    RequestHeader,
};
use mq_protocol::response::Response;
use mq_protocol::{codec, Compression, ErrorCode};
use mq_tests::raw::{self, RawConnection};
use mq_tests::BrokerProcess;

fn create_topic(connection: &mut RawConnection, name: &str, partitions: i32) -> ErrorCode {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }],
        timeout_ms: 5000,
    });
    match connection.call(1, &request) {
        (_, Some(Response::CreateTopics(response))) => response.topics[0].error_code,
        other => panic!("unexpected {other:?}"),
    }
}

fn batch_of(values: &[&str]) -> BytesMut {
    BytesMut::from(&raw::batch_of(values)[..])
}

fn produce(topic: &str, partition: i32, records: BytesMut, acks: i16) -> Request {
    raw::produce_request(topic, partition, &records, acks)
}

fn produce_result(connection: &mut RawConnection, request: &Request) -> (ErrorCode, i64) {
    match connection.call(2, request) {
        (_, Some(Response::Produce(response))) => {
            let partition = &response.topics[0].partitions[0];
            (partition.error_code, partition.base_offset)
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn fetch(topic: &str, offset: i64, max_wait_ms: i32) -> Request {
    fetch_of(topic, offset, max_wait_ms, 1, 1 << 20)
}

/// A fetch of partition 0 of `topic` from `offset`, at most `partition_max_bytes` of it.
fn fetch_of(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    partition_max_bytes: i32,
) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes: partition_max_bytes.max(1 << 20),
        topics: vec![FetchTopic {
            name: topic.to_string(),
            partitions: vec![FetchPartition {
                partition: 0,
                current_leader_epoch: -1,
                fetch_offset: offset,
                partition_max_bytes,
            }],
        }],
    })
}

#[test]
fn api_versions_lists_every_api() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    let (header, body) = connection.call(7, &Request::ApiVersions);
    assert_eq!(header.correlation_id, 7);
    let Some(Response::ApiVersions(versions)) = body else {
        panic!("no body");
    };
    for api_key in ApiKey::ALL {
        assert!(
            versions.apis.iter().any(|api| api.api_key == api_key),
            "{api_key:?}"
        );
    }
}

#[test]
fn unknown_apis_and_versions_get_errors_and_the_connection_stays_open() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    let mut unknown = BytesMut::new();
    RequestHeader {
        api_key: ApiKey(999),
        api_version: 0,
        correlation_id: 11,
        client_id: None,
    }
    .encode(&mut unknown);
    connection.send_frame(&unknown).unwrap();
    let (header, _) = connection.read_response(ApiKey(999)).unwrap();
    assert_eq!(
        (header.correlation_id, header.error_code),
        (11, ErrorCode::UNKNOWN_API)
    );
    let newer = RequestHeader {
        api_key: ApiKey::API_VERSIONS,
        api_version: 9,
        correlation_id: 12,
        client_id: None,
    };
    connection
        .send_frame(&codec::request_frame(&newer, &Request::ApiVersions))
        .unwrap();
    let (header, _) = connection.read_response(ApiKey::API_VERSIONS).unwrap();
    assert_eq!(header.error_code, ErrorCode::UNSUPPORTED_VERSION);
    // Still usable.
    let (header, body) = connection.call(13, &Request::ApiVersions);
    assert_eq!((header.error_code, body.is_some()), (ErrorCode::NONE, true));
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let broker = BrokerProcess::start();
    let mut bystander = RawConnection::connect(broker.address);
    // A length prefix of 2 GiB: refused before anything is buffered.
    let mut huge = RawConnection::connect(broker.address);
    huge.send_bytes(&(1u32 << 31).to_be_bytes()).unwrap();
    assert!(huge.is_closed_by_peer());
    // A truncated body: the header is readable, so the client learns why.
    let mut truncated = RawConnection::connect(broker.address);
    let mut frame = BytesMut::new();
    RequestHeader {
        api_key: ApiKey::PRODUCE,
        api_version: 0,
        correlation_id: 21,
        client_id: None,
    }
    .encode(&mut frame);
    frame.extend_from_slice(&[0, 1, 0]); // acks, then half of timeout_ms
    truncated.send_frame(&frame).unwrap();
    let (header, _) = truncated.read_response(ApiKey::PRODUCE).unwrap();
    assert_eq!(
        (header.correlation_id, header.error_code),
        (21, ErrorCode::INVALID_REQUEST)
    );
    assert!(truncated.is_closed_by_peer());
    // Garbage: a frame whose header cannot be read.
    let mut garbage = RawConnection::connect(broker.address);
    garbage.send_frame(&[0xFF, 0xFE, 0xFD]).unwrap();
    assert!(garbage.is_closed_by_peer());
    // The broker still serves the first connection.
    let (header, _) = bystander.call(1, &Request::ApiVersions);
    assert_eq!(header.error_code, ErrorCode::NONE);
    assert!(broker.log().contains("bad frame"));
}

#[test]
fn a_topic_name_of_maximum_length_gets_an_answer_not_a_crash() {
    // The error message quotes the name; a name near the wire's string limit makes it longer
    // than the limit, which must cut the message, not fail the response.
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    let name = "x".repeat(i16::MAX as usize);
    let request = produce(&name, 0, batch_of(&["a"]), 1);
    let (code, _) = produce_result(&mut connection, &request);
    assert_eq!(code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    assert!(!broker.log().contains("panicked"), "{}", broker.log());
}

#[test]
fn topic_admin_errors_are_clear() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "orders", 2), ErrorCode::NONE);
    assert_eq!(
        create_topic(&mut connection, "orders", 2),
        ErrorCode::TOPIC_ALREADY_EXISTS
    );
    assert_eq!(
        create_topic(&mut connection, "bad/name", 1),
        ErrorCode::INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        create_topic(&mut connection, "zero", 0),
        ErrorCode::INVALID_PARTITIONS
    );
    let metadata = Request::Metadata(MetadataRequest {
        topics: Some(vec!["orders".to_string(), "missing".to_string()]),
    });
    let (_, Some(Response::Metadata(response))) = connection.call(3, &metadata) else {
        panic!("no metadata");
    };
    assert_eq!(response.topics.len(), 2);
    let orders = response
        .topics
        .iter()
        .find(|topic| topic.name == "orders")
        .unwrap();
    assert_eq!(orders.partitions.len(), 2);
    assert_eq!(orders.partitions[0].leader, response.brokers[0].node_id);
    let missing = response
        .topics
        .iter()
        .find(|topic| topic.name == "missing")
        .unwrap();
    assert_eq!(missing.error_code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
}

#[test]
fn produce_errors_per_partition() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "t", 1), ErrorCode::NONE);
    let missing = produce("absent", 0, batch_of(&["x"]), -1);
    assert_eq!(
        produce_result(&mut connection, &missing).0,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    let no_partition = produce("t", 5, batch_of(&["x"]), -1);
    assert_eq!(
        produce_result(&mut connection, &no_partition).0,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    let mut corrupt = batch_of(&["hello"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, corrupt, -1)).0,
        ErrorCode::CORRUPT_MESSAGE
    );
    // A header lying about its record count, with a CRC that matches the lie.
    let mut lying = batch_of(&["a", "b"]);
    lying[batch::field::RECORD_COUNT..][..4].copy_from_slice(&7i32.to_be_bytes());
    let crc = batch::compute_crc(&lying);
    lying[batch::field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, lying, -1)).0,
        ErrorCode::CORRUPT_MESSAGE
    );
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["x"]), 3)).0,
        ErrorCode::INVALID_REQUIRED_ACKS
    );
    // None of that wrote anything: the first good batch gets offset 0.
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["ok"]), -1)),
        (ErrorCode::NONE, 0)
    );
}

#[test]
fn produce_fetch_and_list_offsets_on_the_wire() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "t", 1), ErrorCode::NONE);
    let first = batch_of(&["a", "b", "c"]);
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, first.clone(), -1)),
        (ErrorCode::NONE, 0)
    );
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["d"]), 1)),
        (ErrorCode::NONE, 3)
    );
    // acks=0: no response at all; the next response is the next request's. Produces of one
    // connection are appended in order, so once the next one is answered the first landed.
    connection.send(40, &produce("t", 0, batch_of(&["e"]), 0));
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["f"]), 1)),
        (ErrorCode::NONE, 5)
    );
    let (header, Some(Response::Fetch(response))) = connection.call(41, &fetch("t", 1, 0)) else {
        panic!("no fetch response");
    };
    assert_eq!(header.correlation_id, 41);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(
        (partition.error_code, partition.high_watermark),
        (ErrorCode::NONE, 6)
    );
    // The first batch holds offset 1 and comes back as it was sent, with only the base
    // offset (bytes 0..8) and the leader epoch (12..16) patched in.
    let found: Vec<_> = batch::BatchIter::validating(&partition.records)
        .map(|found| found.unwrap().header.base_offset)
        .collect();
    assert_eq!(found, vec![0, 3, 4, 5]);
    assert_eq!(&partition.records[8..12], &first[8..12]);
    assert_eq!(&partition.records[16..first.len()], &first[16..]);
    let (_, Some(Response::Fetch(response))) = connection.call(42, &fetch("t", 99, 0)) else {
        panic!("no fetch response");
    };
    assert_eq!(
        response.topics[0].partitions[0].error_code,
        ErrorCode::OFFSET_OUT_OF_RANGE
    );
    let list = |timestamp| {
        Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".to_string(),
                partitions: vec![ListOffsetsPartition {
                    partition: 0,
                    timestamp,
                }],
            }],
        })
    };
    for (timestamp, expected) in [
        (ListOffsetsPartition::EARLIEST, 0),
        (ListOffsetsPartition::LATEST, 6),
        (1_700_000_000_000, 0),
        (1_800_000_000_000, -1),
    ] {
        let (_, Some(Response::ListOffsets(response))) = connection.call(43, &list(timestamp))
        else {
            panic!("no list offsets response");
        };
        assert_eq!(
            response.topics[0].partitions[0].offset, expected,
            "timestamp {timestamp}"
        );
    }
}

#[test]
fn a_waiting_fetch_wakes_on_append_and_does_not_block_other_requests() {
    // Goal: a long-poll fetch at the log end returns as soon as a record is appended, long
    // before its max wait, and while it waits the same connection serves other requests.
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "t", 1), ErrorCode::NONE);
    let started = Instant::now();
    connection.send(50, &fetch("t", 0, 20_000));
    // Same connection, while the fetch waits.
    let (header, _) = connection.call(51, &Request::ApiVersions);
    assert_eq!(
        header.correlation_id, 51,
        "answered before the waiting fetch"
    );
    let mut producer = RawConnection::connect(broker.address);
    assert_eq!(
        produce_result(&mut producer, &produce("t", 0, batch_of(&["wake"]), 1)).0,
        ErrorCode::NONE
    );
    let (header, Some(Response::Fetch(response))) =
        connection.read_response(ApiKey::FETCH).unwrap()
    else {
        panic!("no fetch response");
    };
    assert_eq!(header.correlation_id, 50);
    assert!(!response.topics[0].partitions[0].records.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the fetch waited {:?}: it was not woken by the append",
        started.elapsed()
    );
}

#[test]
fn pipelined_produces_on_one_connection_keep_their_order() {
    // Goal: many produce requests sent back to back without waiting (as a producer with
    // several requests in flight does) are appended in the order sent, including with
    // acks=all, where acknowledgements wait for fsyncs concurrently.
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "t", 1), ErrorCode::NONE);
    let count = 200;
    for index in 0..count {
        let value = format!("{index}");
        connection.send(
            1000 + index,
            &produce("t", 0, batch_of(&[value.as_str()]), -1),
        );
    }
    let mut offsets = std::collections::HashMap::new();
    for _ in 0..count {
        let (header, Some(Response::Produce(response))) =
            connection.read_response(ApiKey::PRODUCE).unwrap()
        else {
            panic!("no produce response");
        };
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, ErrorCode::NONE);
        offsets.insert(header.correlation_id - 1000, partition.base_offset);
    }
    for index in 0..count {
        assert_eq!(
            offsets[&index],
            i64::from(index),
            "request {index} landed out of order"
        );
    }
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_survives() {
    let mut broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "t", 1), ErrorCode::NONE);
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["a", "b"]), -1)).1,
        0
    );
    drop(connection);
    assert!(broker.terminate().success());
    assert!(
        broker.log().contains("shut down cleanly"),
        "{}",
        broker.log()
    );
    // Every log closed cleanly: nothing (such as the fsync round the acks=all produce
    // started) still held one.
    assert!(
        !broker.log().contains("still in use at shutdown"),
        "{}",
        broker.log()
    );
    broker.restart();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(
        produce_result(&mut connection, &produce("t", 0, batch_of(&["c"]), -1)).1,
        2
    );
}

#[test]
fn a_trickled_frame_holds_the_request_memory_only_until_its_frame_timeout() {
    // The whole request memory is one frame's worth. A client announces a full-size frame
    // and sends only part of it: it holds the budget, so a second client's request waits,
    // until the frame timeout closes the trickler and gives the budget back.
    let frame = 64 * 1024;
    let broker = BrokerProcess::start_with(&[
        "--max-frame-bytes",
        &frame.to_string(),
        "--max-request-memory-bytes",
        &frame.to_string(),
        "--frame-timeout-ms",
        "1500",
        "--max-message-bytes",
        &(frame / 2).to_string(),
    ]);
    let mut trickler = RawConnection::connect(broker.address);
    trickler
        .send_bytes(&u32::try_from(frame).unwrap().to_be_bytes())
        .unwrap();
    trickler.send_bytes(&[0u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let mut waiting = RawConnection::connect(broker.address);
    let (header, _) = waiting.call(1, &Request::ApiVersions);
    let waited = started.elapsed();
    assert_eq!(header.error_code, ErrorCode::NONE);
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}: the trickler's frame should have held the whole budget"
    );
    assert!(
        waited < Duration::from_secs(8),
        "served after {waited:?}: the frame timeout should have freed the budget"
    );
    assert!(trickler.is_closed_by_peer(), "the trickler is closed");
    assert!(broker.log().contains("not received whole in time"));
    // With the budget back, requests are served at once again.
    let started = Instant::now();
    let (header, _) = waiting.call(2, &Request::ApiVersions);
    assert_eq!(header.error_code, ErrorCode::NONE);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn connections_beyond_the_per_address_limit_are_closed_on_arrival() {
    let broker = BrokerProcess::start_with(&["--max-connections-per-ip", "3"]);
    let mut open: Vec<RawConnection> = (0..3)
        .map(|_| RawConnection::connect(broker.address))
        .collect();
    for (id, connection) in open.iter_mut().enumerate() {
        let (header, _) = connection.call(id as i32, &Request::ApiVersions);
        assert_eq!(header.error_code, ErrorCode::NONE);
    }
    let mut fourth = RawConnection::connect(broker.address);
    assert!(
        fourth.is_closed_by_peer(),
        "the fourth connection is closed"
    );
    assert!(broker.log().contains("too many from this address"));
    // Closing one gives its place back (the broker notices the close asynchronously).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = RawConnection::connect(broker.address);
        again.send(9, &Request::ApiVersions);
        if again.read_response(ApiKey::API_VERSIONS).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never given back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sequenced_batch(producer_id: i64, base_sequence: i32, values: &[&str]) -> BytesMut {
    let mut builder =
        BatchBuilder::new(Compression::None).with_producer(producer_id, 0, base_sequence);
    for value in values {
        builder
            .append(&Record::new(
                1_700_000_000_000,
                None,
                Some(Bytes::from(value.to_string())),
            ))
            .unwrap();
    }
    BytesMut::from(&builder.seal(0).unwrap()[..])
}

#[test]
fn pipelined_batches_of_a_producer_are_appended_in_sequence_or_refused() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "seq", 1), ErrorCode::NONE);
    // Three pipelined batches; the middle one is corrupt, so the third would leave a gap.
    let mut corrupt = sequenced_batch(42, 2, &["c", "d"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let requests = [
        produce("seq", 0, sequenced_batch(42, 0, &["a", "b"]), 1),
        produce("seq", 0, corrupt, 1),
        produce("seq", 0, sequenced_batch(42, 4, &["e"]), 1),
    ];
    for (id, request) in requests.iter().enumerate() {
        connection.send(id as i32, request);
    }
    let mut codes = Vec::new();
    for _ in &requests {
        let (_, Some(Response::Produce(response))) =
            connection.read_response(ApiKey::PRODUCE).unwrap()
        else {
            panic!("no produce response");
        };
        codes.push(response.topics[0].partitions[0].error_code);
    }
    assert_eq!(
        codes,
        [
            ErrorCode::NONE,
            ErrorCode::CORRUPT_MESSAGE,
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        ]
    );
    // The producer resends in order: both land after the first, in sequence.
    let resent = produce("seq", 0, sequenced_batch(42, 2, &["c", "d"]), 1);
    assert_eq!(
        produce_result(&mut connection, &resent),
        (ErrorCode::NONE, 2)
    );
    let resent = produce("seq", 0, sequenced_batch(42, 4, &["e"]), 1);
    assert_eq!(
        produce_result(&mut connection, &resent),
        (ErrorCode::NONE, 4)
    );
    // A retry whose acknowledgement was lost: answered with its offset, not stored again.
    let retry = produce("seq", 0, sequenced_batch(42, 2, &["c", "d"]), 1);
    assert_eq!(
        produce_result(&mut connection, &retry),
        (ErrorCode::NONE, 2)
    );
    // Nothing was stored twice: the next batch gets offset 5.
    let next = produce("seq", 0, sequenced_batch(42, 5, &["f"]), 1);
    assert_eq!(produce_result(&mut connection, &next), (ErrorCode::NONE, 5));
}

#[test]
fn a_connections_produce_acknowledgements_come_in_request_order() {
    // An acks=all produce waits for its fsync; an acks=1 produce right behind it, to another
    // partition, is done at once. Its acknowledgement still comes second: a client that
    // loses its connection must have received a prefix of its acknowledgements, or it would
    // resend an earlier batch after a later acknowledged one.
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "order", 2), ErrorCode::NONE);
    for round in 0..20 {
        let durable = produce("order", 0, batch_of(&["slow"; 100]), -1);
        let quick = produce("order", 1, batch_of(&["quick"]), 1);
        connection.send(2 * round, &durable);
        connection.send(2 * round + 1, &quick);
        let first = connection.read_response(ApiKey::PRODUCE).unwrap().0;
        let second = connection.read_response(ApiKey::PRODUCE).unwrap().0;
        assert_eq!(
            (first.correlation_id, second.correlation_id),
            (2 * round, 2 * round + 1),
            "round {round}"
        );
    }
}

#[test]
fn a_fetch_asking_for_gigabytes_gets_at_most_a_frames_worth() {
    let frame = 1024 * 1024;
    let broker = BrokerProcess::start_with(&[
        "--max-frame-bytes",
        &frame.to_string(),
        "--max-request-memory-bytes",
        &frame.to_string(),
        "--max-message-bytes",
        &(frame / 2).to_string(),
    ]);
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "big", 1), ErrorCode::NONE);
    let value = "v".repeat(1000);
    let values: Vec<&str> = vec![value.as_str(); 100];
    for _ in 0..40 {
        let request = produce("big", 0, batch_of(&values), 1);
        assert_eq!(produce_result(&mut connection, &request).0, ErrorCode::NONE);
    }
    let batch_bytes = batch_of(&values).len();
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: i32::MAX,
        topics: vec![FetchTopic {
            name: "big".to_string(),
            partitions: vec![FetchPartition {
                partition: 0,
                current_leader_epoch: -1,
                fetch_offset: 0,
                partition_max_bytes: i32::MAX,
            }],
        }],
    });
    let (_, Some(Response::Fetch(response))) = connection.call(7, &request) else {
        panic!("no fetch response");
    };
    let records = &response.topics[0].partitions[0].records;
    assert!(
        records.len() <= frame && records.len() + batch_bytes > frame,
        "{} bytes of {} stored for a 1 MiB frame limit",
        records.len(),
        40 * batch_bytes
    );
}

#[test]
fn large_fetches_are_whole_batches_sent_from_the_segment_and_pipelined_in_order() {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(create_topic(&mut connection, "files", 1), ErrorCode::NONE);
    // 24 batches of 100 records of 1,000 bytes: about 100 KiB each, so that fetches of one
    // batch or more are large enough to be sent from the segment file.
    let mut produced = Vec::new();
    for index in 0..24 {
        let value = format!("{index:04}").repeat(250);
        let values = vec![value.as_str(); 100];
        let request = produce("files", 0, batch_of(&values), 1);
        let (code, base_offset) = produce_result(&mut connection, &request);
        assert_eq!((code, base_offset), (ErrorCode::NONE, index * 100));
        produced.push(batch_of(&values).len());
    }
    let batch_bytes = produced[0];
    assert!(produced.iter().all(|len| *len == batch_bytes));
    let limits = [1, 70 * 1024, 2 * batch_bytes + 10, 64 * 1024 * 1024];
    let cases: Vec<(i64, usize)> = [0, 150, 2_399]
        .into_iter()
        .flat_map(|offset| limits.iter().map(move |limit| (offset, *limit)))
        .collect();
    // Every case pipelined on one connection before any answer is read: the writer must
    // keep each file-backed record set inside its own frame (fetches may be answered in any
    // order; the correlation id says which is which).
    for (index, (offset, limit)) in cases.iter().enumerate() {
        let limit = i32::try_from(*limit).unwrap();
        connection.send(100 + index as i32, &fetch_of("files", *offset, 0, 0, limit));
    }
    let mut answers = std::collections::BTreeMap::new();
    for _ in &cases {
        let Some((header, Some(Response::Fetch(response)))) =
            connection.read_response(ApiKey::FETCH)
        else {
            panic!("no fetch response");
        };
        assert!(answers.insert(header.correlation_id, response).is_none());
    }
    for (index, (offset, limit)) in cases.iter().enumerate() {
        let response = &answers[&(100 + index as i32)];
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, ErrorCode::NONE);
        let bases: Vec<i64> = batch::BatchIter::validating(&partition.records)
            .map(|found| found.unwrap().header.base_offset)
            .collect();
        let first = offset / 100 * 100;
        let remaining = (2_400 - first) as usize / 100;
        let expected = (limit / batch_bytes).clamp(1, remaining);
        let expected: Vec<i64> = (0..expected as i64).map(|n| first + n * 100).collect();
        assert_eq!(bases, expected, "from {offset} with limit {limit}");
        assert_eq!(partition.records.len(), bases.len() * batch_bytes);
        let batch = batch::BatchIter::validating(&partition.records)
            .next()
            .unwrap()
            .unwrap();
        let value = mq_protocol::record::records(&partition.records.slice(..batch.bytes.len()))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .value
            .unwrap();
        assert_eq!(&value[..4], format!("{:04}", first / 100).as_bytes());
    }
}
