//! Messages of the cluster: between brokers and the controller, and the cluster's admin APIs.
//!
//! The semantics (registration, fencing, the metadata log, reassignment) are in
//! `ARCHITECTURE.md`, "Cluster"; this module only encodes and decodes. Every message is at
//! version 0.
//!
//! ```text
//! BrokerRegistration  node_id, host, port, rack, incarnation    → error, broker_epoch,
//!                                                                  controller_id
//! BrokerHeartbeat     node_id, broker_epoch, metadata_offset    → error, fenced
//! FetchMetadata       node_id, broker_epoch, offset, max_wait,  → error, log_start, log_end,
//!                     max_bytes                                   record batches
//! DescribeCluster     -                                          → controller, metadata_offset,
//!                                                                  every registered broker
//! ReassignPartition   topic, partition, target broker           → error
//! AlterPartition      node_id, broker_epoch, topic, partition,  → error
//!                     leader_epoch, log_end
//! Rebalance           dry_run                                    → error, moves
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::wire::{self, Reader};

/// Minimum encoded sizes of array elements, so that a hostile count fails before allocating.
const STRING_MIN: usize = 2;

fn decode_error(reader: &mut Reader) -> Result<(ErrorCode, Option<String>), DecodeError> {
    Ok((ErrorCode(reader.i16()?), reader.nullable_string()?))
}

fn encode_error(target: &mut BytesMut, code: ErrorCode, message: Option<&str>) {
    target.put_i16(code.0);
    wire::put_nullable_string(target, message);
}

/// An answer that is only an error code and a message for people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorResponse {
    /// `NONE` on success.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
}

impl ErrorResponse {
    /// An answer of `code` with `message`.
    pub fn new(error_code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            error_code,
            error_message: Some(message.into()),
        }
    }

    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(ErrorResponse {
            error_code,
            error_message,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
    }
}

// ---------------------------------------------------------------------------------------------
// BrokerRegistration

/// A broker introduces itself to the controller, at start-up and after it was fenced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    /// Its node id (`--node-id`).
    pub node_id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: i32,
    /// Its rack label (`--rack`).
    pub rack: Option<String>,
    /// Random per process start: tells a restart from a retried registration.
    pub incarnation: i64,
}

impl BrokerRegistrationRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(BrokerRegistrationRequest {
            node_id: reader.i32()?,
            host: reader.string()?,
            port: reader.i32()?,
            rack: reader.nullable_string()?,
            incarnation: reader.i64()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.node_id);
        wire::put_string(target, &self.host);
        target.put_i32(self.port);
        wire::put_nullable_string(target, self.rack.as_deref());
        target.put_i64(self.incarnation);
    }
}

/// The controller's answer to a registration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerRegistrationResponse {
    /// `NONE`, or why the registration was refused.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// The broker's epoch: the metadata offset of its registration. Heartbeats and metadata
    /// fetches carry it, so that a replaced process is told apart.
    pub broker_epoch: i64,
    /// The controller's node id.
    pub controller_id: i32,
}

impl BrokerRegistrationResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(BrokerRegistrationResponse {
            error_code,
            error_message,
            broker_epoch: reader.i64()?,
            controller_id: reader.i32()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
        target.put_i64(self.broker_epoch);
        target.put_i32(self.controller_id);
    }
}

// ---------------------------------------------------------------------------------------------
// BrokerHeartbeat

/// A registered broker says it is alive, and how far it has applied the metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerHeartbeatRequest {
    /// Its node id.
    pub node_id: i32,
    /// The epoch its registration was given.
    pub broker_epoch: i64,
    /// The metadata offset up to which it has applied changes.
    pub metadata_offset: i64,
}

impl BrokerHeartbeatRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(BrokerHeartbeatRequest {
            node_id: reader.i32()?,
            broker_epoch: reader.i64()?,
            metadata_offset: reader.i64()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.node_id);
        target.put_i64(self.broker_epoch);
        target.put_i64(self.metadata_offset);
    }
}

/// The controller's answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerHeartbeatResponse {
    /// `NONE`; `STALE_BROKER_EPOCH` when the broker must register again.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// Whether the controller holds the broker fenced (its session expired).
    pub fenced: bool,
}

impl BrokerHeartbeatResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(BrokerHeartbeatResponse {
            error_code,
            error_message,
            fenced: reader.bool()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
        target.put_i8(i8::from(self.fenced));
    }
}

// ---------------------------------------------------------------------------------------------
// FetchMetadata

/// A broker reads the metadata log from an offset; long-polled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchMetadataRequest {
    /// Its node id (-1 for a reader that is not a broker).
    pub node_id: i32,
    /// Its broker epoch (-1 for a reader that is not a broker).
    pub broker_epoch: i64,
    /// The first metadata offset wanted.
    pub offset: i64,
    /// How long to wait when there is nothing at `offset` yet.
    pub max_wait_ms: i32,
    /// At most this many bytes of record batches (at least one batch is always returned).
    pub max_bytes: i32,
}

impl FetchMetadataRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FetchMetadataRequest {
            node_id: reader.i32()?,
            broker_epoch: reader.i64()?,
            offset: reader.i64()?,
            max_wait_ms: reader.i32()?,
            max_bytes: reader.i32()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.node_id);
        target.put_i64(self.broker_epoch);
        target.put_i64(self.offset);
        target.put_i32(self.max_wait_ms);
        target.put_i32(self.max_bytes);
    }
}

/// Record batches of the metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchMetadataResponse {
    /// `NONE`; `OFFSET_OUT_OF_RANGE` when `offset` is past the log's end.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// The metadata log's first offset.
    pub log_start: i64,
    /// The metadata log's end: the offset its next change will get.
    pub log_end: i64,
    /// Whole record batches from `offset`, as stored.
    pub records: Bytes,
}

impl FetchMetadataResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(FetchMetadataResponse {
            error_code,
            error_message,
            log_start: reader.i64()?,
            log_end: reader.i64()?,
            records: reader.bytes()?.freeze(),
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
        target.put_i64(self.log_start);
        target.put_i64(self.log_end);
        wire::put_bytes(target, &self.records);
    }
}

// ---------------------------------------------------------------------------------------------
// DescribeCluster

/// A registered broker, alive or fenced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterBroker {
    /// Its node id.
    pub node_id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: i32,
    /// Its rack label.
    pub rack: Option<String>,
    /// Whether it is fenced: its session expired and it leads nothing.
    pub fenced: bool,
}

/// The cluster's brokers (every registered one, fenced included) and its controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribeClusterResponse {
    /// `NONE`, or why the cluster cannot be described.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// The controller's node id.
    pub controller_id: i32,
    /// The controller's address (`host:port`), as the answering broker reaches it.
    pub controller_address: String,
    /// How far the answering broker has applied the metadata log.
    pub metadata_offset: i64,
    /// Every registered broker, by node id.
    pub brokers: Vec<ClusterBroker>,
}

impl DescribeClusterResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(DescribeClusterResponse {
            error_code,
            error_message,
            controller_id: reader.i32()?,
            controller_address: reader.string()?,
            metadata_offset: reader.i64()?,
            brokers: reader.array(4 + STRING_MIN + 4 + 2 + 1, |reader| {
                Ok(ClusterBroker {
                    node_id: reader.i32()?,
                    host: reader.string()?,
                    port: reader.i32()?,
                    rack: reader.nullable_string()?,
                    fenced: reader.bool()?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
        target.put_i32(self.controller_id);
        wire::put_string(target, &self.controller_address);
        target.put_i64(self.metadata_offset);
        wire::put_array(target, &self.brokers, |target, broker| {
            target.put_i32(broker.node_id);
            wire::put_string(target, &broker.host);
            target.put_i32(broker.port);
            wire::put_nullable_string(target, broker.rack.as_deref());
            target.put_i8(i8::from(broker.fenced));
        });
    }
}

// ---------------------------------------------------------------------------------------------
// ReassignPartition

/// Move a partition (replication factor 1) to another broker. Answered once the controller has
/// started the move; the partition is unavailable while its data is copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassignPartitionRequest {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The node id of the broker that is to hold it.
    pub target: i32,
}

impl ReassignPartitionRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ReassignPartitionRequest {
            topic: reader.string()?,
            partition: reader.i32()?,
            target: reader.i32()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.topic);
        target.put_i32(self.partition);
        target.put_i32(self.target);
    }
}

// ---------------------------------------------------------------------------------------------
// AlterPartition

/// A reassignment's target broker tells the controller that it holds all of the partition's
/// data as of the move's leader epoch, so that it can become the leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The target broker's node id.
    pub node_id: i32,
    /// Its broker epoch.
    pub broker_epoch: i64,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch of the move.
    pub leader_epoch: i32,
    /// The log end it copied up to.
    pub log_end: i64,
}

impl AlterPartitionRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(AlterPartitionRequest {
            node_id: reader.i32()?,
            broker_epoch: reader.i64()?,
            topic: reader.string()?,
            partition: reader.i32()?,
            leader_epoch: reader.i32()?,
            log_end: reader.i64()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.node_id);
        target.put_i64(self.broker_epoch);
        wire::put_string(target, &self.topic);
        target.put_i32(self.partition);
        target.put_i32(self.leader_epoch);
        target.put_i64(self.log_end);
    }
}

// ---------------------------------------------------------------------------------------------
// Rebalance

/// Even out partition and leader counts across live brokers, or (`dry_run`) only say how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebalanceRequest {
    /// Plan only; move nothing.
    pub dry_run: bool,
}

/// One partition move of a rebalance plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMove {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The broker it leaves.
    pub from: i32,
    /// The broker it goes to.
    pub to: i32,
}

/// The plan, and whether it was started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebalanceResponse {
    /// `NONE`, or why nothing was planned or started.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// The moves, in the order they are made.
    pub moves: Vec<PartitionMove>,
}

impl RebalanceResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let (error_code, error_message) = decode_error(reader)?;
        Ok(RebalanceResponse {
            error_code,
            error_message,
            moves: reader.array(STRING_MIN + 12, |reader| {
                Ok(PartitionMove {
                    topic: reader.string()?,
                    partition: reader.i32()?,
                    from: reader.i32()?,
                    to: reader.i32()?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_error(target, self.error_code, self.error_message.as_deref());
        wire::put_array(target, &self.moves, |target, planned| {
            wire::put_string(target, &planned.topic);
            target.put_i32(planned.partition);
            target.put_i32(planned.from);
            target.put_i32(planned.to);
        });
    }
}
