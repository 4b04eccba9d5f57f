//! The native async client of the broker: producer, consumer and admin, on tokio.
//!
//! ```text
//! Producer ─┐                      ┌─ Connection (broker 1) ─ writer/reader tasks
//! Consumer ─┼─ Client (metadata, ──┼─ Connection (broker 2)
//! Admin ────┘   connection pool)   └─ ...
//! ```
//!
//! A [`Client`] connects to bootstrap addresses, caches the cluster's metadata (brokers,
//! partitions, leaders) and keeps one multiplexed [`Connection`] per broker. [`Producer`],
//! [`Consumer`] and [`Admin`] are built on a client (clone it to share it) and route each
//! partition's requests to its leader, refreshing metadata and retrying when a leader moves
//! or a connection drops.
//!
//! ```no_run
//! use std::time::Duration;
//! use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
//!                 ProducerRecord};
//!
//! # async fn example() -> Result<(), mq_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?;
//! let delivery = producer.send(ProducerRecord::new("events", "hello")).await?;
//! let written = delivery.await?;
//! producer.close().await;
//!
//! let mut consumer = Consumer::new(client, ConsumerConfig::default())?;
//! consumer.assign([("events", written.partition)]);
//! let records = consumer.poll(Duration::from_secs(1)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery semantics
//!
//! [`Producer::send`] queues a record and returns a [`DeliveryFuture`]; the record is
//! batched with others for the same partition and sent after [`ProducerConfig::linger`] or
//! once the batch is full. [`Producer::send_batch`] queues many records of one partition with
//! one [`BatchDeliveryFuture`] for them all, for callers that already hold records in bulk:
//! the same batching, order and guarantees at a fraction of the cost per record. What a
//! future's success means depends on [`Acks`]:
//!
//! - [`Acks::None`] (`acks=0`): the request was written to the socket. The broker does not
//!   answer, so nothing says it arrived; offsets are reported as -1. At-most-once.
//! - [`Acks::Leader`] (`acks=1`): the partition's leader appended the batch to its log. A
//!   crash before the data reaches the disk may lose it.
//! - [`Acks::All`] (`acks=-1`, the default): the leader appended the batch and made it
//!   durable (fsynced per the topic's flush policy; with replication, copied to the in-sync
//!   replicas) before answering.
//!
//! Retriable failures (a connection lost, a leader moved, a request timed out) are retried
//! after [`ProducerConfig::retry_backoff`] until [`ProducerConfig::delivery_timeout`] runs
//! out; then the future fails with the last error. The producer is idempotent by default
//! ([`ProducerConfig::idempotence`]): its batches carry a producer id and per-partition
//! sequence numbers, so the broker appends a partition's batches only in sequence and
//! answers a retried batch it already holds with its original offsets instead of storing it
//! again. Records sent to one partition are written in the order of their `send` calls,
//! retries included, with up to [`ProducerConfig::max_in_flight_per_partition`] batches in
//! flight. The broker rebuilds the sequences from the end of its logs when it restarts; a
//! retry of a batch older than that (its answer lost in a restart) may be stored twice
//! (at-least-once).
//!
//! On the consuming side, [`Consumer::poll`] returns each partition's records in offset
//! order from the consumer's position. What the application does with them before moving on,
//! and when it commits, decides between at-most-once and at-least-once processing.
//!
//! # Consumer groups
//!
//! Consumers that [`Consumer::subscribe`] to the same group share the subscribed topics'
//! partitions: the group's coordinator (a broker) gives each partition to one member, and
//! shares them out again when members come and go. A member commits offsets to the group, so
//! that the next reader of a partition starts where it left off:
//!
//! - *At-most-once*: [`ConsumerConfig::auto_commit`] off, [`Consumer::commit_sync`] right
//!   after each `poll`, before processing. A crash loses what was being processed.
//! - *At-least-once*: process, then commit ([`Consumer::commit_sync`],
//!   [`Consumer::commit_async`], [`Consumer::commit_offsets`]); or leave auto-commit on (the
//!   default), which commits at the next `poll` what previous polls returned. A crash
//!   repeats what was processed since the last commit.
//!
//! Members that join and leave cleanly ([`Consumer::close`]) repeat and lose nothing. The
//! [`consumer`] module documentation has examples of both; [`RebalanceListener`] hooks into
//! rebalances, and [`Admin`] lists, describes and deletes groups and resets their offsets.
//!
//! ```no_run
//! use std::time::Duration;
//! use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig};
//!
//! # async fn example() -> Result<(), mq_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
//! let mut consumer = Consumer::new(client, ConsumerConfig::default())?;
//! consumer.subscribe("billing", &["orders"])?;
//! let records = consumer.poll(Duration::from_secs(1)).await?;
//! // ... process the records; the next poll commits their offsets (auto-commit) ...
//! consumer.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Everything fails with [`ClientError`], whose variants carry the topic, partition, address
//! or error code involved and whose messages read as one line
//! (`topic 'orders' does not exist`).

#![forbid(unsafe_code)]

mod accumulator;
pub mod admin;
mod batch_buffers;
pub mod client;
pub mod connection;
pub mod consumer;
pub mod delivery;
pub mod error;
mod group;
pub mod partitioner;
pub mod producer;

pub use admin::{
    Admin, BrokerStatus, ClusterDescription, CommittedOffset, GroupDescription, GroupListing,
    MemberDescription, OffsetSpec, PartitionMove,
};
pub use client::{
    Broker, Client, ClientConfig, Cluster, PartitionDescription, TopicDescription, TopicPartition,
};
pub use connection::{Connection, ConnectionConfig};
pub use consumer::{
    CommitHandle, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceListener, SeekTo,
};
pub use delivery::{BatchDeliveryFuture, BatchMetadata, DeliveryFuture, RecordMetadata};
pub use error::ClientError;
pub use producer::{Acks, Producer, ProducerConfig, ProducerRecord};

/// Byte buffers, as keys, values and header values are given and returned.
pub use bytes::Bytes;
/// The wire protocol and record format this client speaks, for callers that need its types
/// ([`ErrorCode`], requests for [`Connection::request`]).
pub use mq_protocol as protocol;
pub use mq_protocol::{Compression, ErrorCode, Header};
