//! A hand-driven protocol connection: sends any bytes, reads frames back. For tests of what
//! a misbehaving client can send, and of exact batch boundaries and offsets on the wire;
//! well-behaved tests use `mq-client`. The helpers below the connection build the common
//! requests and pick the one partition's result out of their responses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_protocol::codec;
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::request::{
    ApiKey, CreatableTopic, CreateTopicsRequest, FetchPartition, FetchRequest, FetchTopic,
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, ProducePartition, ProduceRequest,
    ProduceTopic, Request, RequestHeader,
};
use mq_protocol::response::{FetchPartitionResponse, Response, ResponseHeader};
use mq_protocol::wire::Reader;
use mq_protocol::{Compression, ErrorCode};

/// A blocking TCP connection with a read timeout.
#[derive(Debug)]
pub struct RawConnection {
    /// The socket.
    stream: TcpStream,
}

impl RawConnection {
    /// Connects, with a 10 s read timeout and Nagle's algorithm off (so that a request's
    /// last bytes are not held back waiting for the broker's delayed ACK, 40 ms a request).
    pub fn connect(address: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(address).expect("connecting to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting a read timeout");
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        RawConnection { stream }
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame (length prefix added), in one write.
    pub fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let length = u32::try_from(payload.len()).expect("test frames are small");
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)
    }

    /// Sends a well-formed request of version 0.
    pub fn send(&mut self, correlation_id: i32, request: &Request) {
        let header = RequestHeader {
            api_key: request.api_key(),
            api_version: 0,
            correlation_id,
            client_id: Some("raw-test".to_string()),
        };
        self.send_frame(&codec::request_frame(&header, request))
            .expect("sending a request");
    }

    /// Reads one response frame's payload; `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<BytesMut> {
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(BytesMut::from(&payload[..]))
    }

    /// Reads a response to a request of `api_key`: its header, and its body if it has one.
    pub fn read_response(&mut self, api_key: ApiKey) -> Option<(ResponseHeader, Option<Response>)> {
        let mut reader = Reader::new(self.read_frame()?);
        let header = ResponseHeader::decode(&mut reader).expect("a response header");
        if !header.error_code.is_ok() {
            return Some((header, None));
        }
        let body = Response::decode(api_key, reader).expect("a response body");
        Some((header, Some(body)))
    }

    /// Sends a request and reads its response.
    pub fn call(
        &mut self,
        correlation_id: i32,
        request: &Request,
    ) -> (ResponseHeader, Option<Response>) {
        self.send(correlation_id, request);
        self.read_response(request.api_key())
            .expect("the broker answered before closing")
    }

    /// Whether the broker closed the connection (reads end of stream within the timeout).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(ref error) if error.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

impl RawConnection {
    /// Creates a topic with `configs` (`key=value` overrides); returns the topic's error code.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> ErrorCode {
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.to_string(),
                partitions,
                replication_factor: -1,
                configs: configs
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            }],
            timeout_ms: 5000,
        });
        match self.call(1, &request) {
            (_, Some(Response::CreateTopics(response))) => response.topics[0].error_code,
            other => panic!("unexpected answer to CreateTopics: {other:?}"),
        }
    }

    /// Produces `records` (whole batches) to one partition; returns the partition's error code
    /// and base offset.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[u8],
        acks: i16,
    ) -> (ErrorCode, i64) {
        self.try_produce(topic, partition, records, acks)
            .expect("the broker answered before closing")
    }

    /// As [`RawConnection::produce`], but `None` when the connection closed without an
    /// answer (for tests that then ask why).
    pub fn try_produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[u8],
        acks: i16,
    ) -> Option<(ErrorCode, i64)> {
        let request = produce_request(topic, partition, records, acks);
        self.send(2, &request);
        match self.read_response(ApiKey::PRODUCE)? {
            (_, Some(Response::Produce(response))) => {
                let result = &response.topics[0].partitions[0];
                Some((result.error_code, result.base_offset))
            }
            other => panic!("unexpected answer to Produce: {other:?}"),
        }
    }

    /// Fetches from one partition without waiting; returns the partition's part of the response.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> FetchPartitionResponse {
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes,
            topics: vec![FetchTopic {
                name: topic.to_string(),
                partitions: vec![FetchPartition {
                    partition,
                    current_leader_epoch: -1,
                    fetch_offset: offset,
                    partition_max_bytes: max_bytes,
                }],
            }],
        });
        match self.call(3, &request) {
            (_, Some(Response::Fetch(mut response))) => {
                response.topics.remove(0).partitions.remove(0)
            }
            other => panic!("unexpected answer to Fetch: {other:?}"),
        }
    }

    /// The log end offset of one partition (ListOffsets, latest).
    pub fn log_end(&mut self, topic: &str, partition: i32) -> i64 {
        let request = Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: topic.to_string(),
                partitions: vec![ListOffsetsPartition {
                    partition,
                    timestamp: ListOffsetsPartition::LATEST,
                }],
            }],
        });
        match self.call(4, &request) {
            (_, Some(Response::ListOffsets(response))) => {
                let result = &response.topics[0].partitions[0];
                assert_eq!(
                    result.error_code,
                    ErrorCode::NONE,
                    "ListOffsets of {topic}-{partition}"
                );
                result.offset
            }
            other => panic!("unexpected answer to ListOffsets: {other:?}"),
        }
    }
}

/// A produce request of one partition's `records`.
pub fn produce_request(topic: &str, partition: i32, records: &[u8], acks: i16) -> Request {
    Request::Produce(ProduceRequest {
        acks,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            name: topic.to_string(),
            partitions: vec![ProducePartition {
                partition,
                leader_epoch: -1,
                records: BytesMut::from(records),
            }],
        }],
    })
}

/// One uncompressed batch holding a record per value (base offset 0, for the broker to set).
pub fn batch_of<V: AsRef<[u8]>>(values: &[V]) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None);
    for value in values {
        builder
            .append(&Record::new(
                1_700_000_000_000,
                None,
                Some(Bytes::copy_from_slice(value.as_ref())),
            ))
            .expect("test records fit a batch");
    }
    builder.seal(0).expect("test batches seal")
}
