//! [`Consumer`]: reads records from assigned partitions, by offset, with long-poll fetches.
//!
//! The consumer keeps a *position* per assigned partition: the offset of the next record
//! [`Consumer::poll`] returns. A partition without one (just assigned, or out of range)
//! gets one from ListOffsets per the reset policy. Fetches go to each partition's leader,
//! one in flight per broker, as background tasks: as soon as `poll` has records to return it
//! sends the next fetches, so they long-poll while the caller processes (prefetch). A fetch
//! answer is used only if the partition's position did not move meanwhile (a seek), and
//! records below the position are skipped (a fetch returns whole batches, and the first may
//! start before the offset asked for).
//!
//! # Partitions: by hand or from a group
//!
//! Partitions are either assigned by hand ([`Consumer::assign`], [`Consumer::assign_all`])
//! or by a consumer group ([`Consumer::subscribe`]), never both on one consumer. In a group,
//! the group's coordinator (a broker) shares the subscribed topics' partitions out among the
//! members, and shares them out anew (a *rebalance*) whenever a member joins or leaves or a
//! topic grows. The member joins, and rejoins in each rebalance, inside [`Consumer::poll`];
//! a background task heartbeats meanwhile (a member not heard from for
//! [`ConsumerConfig::session_timeout`] is removed from the group), and a `poll` waiting for
//! records wakes up as soon as a rebalance starts. Rebalancing is eager: the member gives up
//! all its partitions (first committing, with auto-commit, and calling
//! [`RebalanceListener::on_partitions_revoked`]), rejoins, and gets its new partitions.
//! A new partition starts at the group's committed offset (or per
//! [`ConsumerConfig::reset`] when there is none); one the member keeps carries on from its
//! position. Membership itself is in `group.rs`; `consumer/subscription.rs` is this side of
//! it.
//!
//! ```no_run
//! use std::time::Duration;
//! use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig};
//!
//! # async fn example() -> Result<(), mq_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
//! let mut consumer = Consumer::new(client, ConsumerConfig::default())?;
//! consumer.subscribe("billing", &["orders"])?;
//! for _ in 0..100 {
//!     for record in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}-{} @{}", record.topic, record.partition, record.offset);
//!     }
//! }
//! // Commits (auto-commit is on by default) and leaves: the others get the partitions now.
//! consumer.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Committing, and what a crash costs
//!
//! A group member commits offsets so that whoever reads a partition next (itself after a
//! restart, or another member after a rebalance) starts where it left off. What it commits
//! relative to its processing decides what a crash costs. [`Consumer::commit_sync`] and
//! [`Consumer::commit_async`] commit the *positions*: for each partition, the offset after
//! the last record `poll` returned.
//!
//! **At-most-once** (a crash may lose records, never repeat them): turn auto-commit off and
//! commit right after `poll`, before processing.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig};
//! # fn process(_: &mq_client::ConsumerRecord) {}
//! # async fn example(client: Client) -> Result<(), mq_client::ClientError> {
//! let config = ConsumerConfig {
//!     auto_commit: false,
//!     ..ConsumerConfig::default()
//! };
//! let mut consumer = Consumer::new(client, config)?;
//! consumer.subscribe("alerts", &["events"])?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     consumer.commit_sync().await?;
//!     for record in &records {
//!         process(record);
//!     }
//! }
//! # }
//! ```
//!
//! **At-least-once** (a crash may repeat records, never lose them): process, then commit.
//! Either commit yourself after processing (`commit_sync`, `commit_async`, or
//! [`Consumer::commit_offsets`] with exactly what was processed), or keep auto-commit on
//! (the default): every [`ConsumerConfig::auto_commit_interval`], `poll` commits what the
//! *previous* polls returned, which the application processed before polling again; it also
//! commits before each rebalance and in [`Consumer::close`] (close after processing what was
//! polled). Records processed since the last commit are read again after a crash. Members
//! that leave and join cleanly repeat nothing, whichever way they commit after processing.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig};
//! # fn process(_: &mq_client::ConsumerRecord) {}
//! # async fn example(client: Client) -> Result<(), mq_client::ClientError> {
//! let config = ConsumerConfig {
//!     auto_commit: false,
//!     ..ConsumerConfig::default()
//! };
//! let mut consumer = Consumer::new(client, config)?;
//! consumer.subscribe("billing", &["orders"])?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     for record in &records {
//!         process(record);
//!     }
//!     if !records.is_empty() {
//!         // Queued behind earlier commits; its outcome is not awaited here.
//!         drop(consumer.commit_async());
//!     }
//! }
//! # }
//! ```
//!
//! Commits of one consumer are applied in the order they were made, asynchronous or not, and
//! only in the generation they were made in: a member that was removed from the group (it did
//! not poll within [`ConsumerConfig::rebalance_timeout`], or did not heartbeat within the
//! session timeout) cannot overwrite the offsets of the partitions' new owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_protocol::batch::{whole_batches_len, BatchIter};
use mq_protocol::limits::BATCH_BYTES_MAX;
use mq_protocol::request::{
    FetchPartition, FetchRequest, FetchTopic, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic, Request,
};
use mq_protocol::response::{FetchPartitionResponse, FetchResponse, Response};
use mq_protocol::{BatchError, ErrorCode, Header};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{timeout_at, Instant};

use crate::client::{Client, Route, TopicPartition};
use crate::connection::FRAME_BYTES_MAX;
use crate::error::ClientError;
use crate::group::Signal;
use subscription::{ListenerSlot, Subscription};

mod subscription;

pub use crate::group::CommitHandle;
pub use subscription::RebalanceListener;

/// The most bytes one fetch may ask for. A response holds at most this, or one whole batch
/// when a single batch is larger, so it always fits a frame.
pub const FETCH_BYTES_MAX: usize = BATCH_BYTES_MAX;

const _: () = assert!(FETCH_BYTES_MAX + BATCH_BYTES_MAX < FRAME_BYTES_MAX);

/// Where a partition without a position starts, or one whose position fell outside the log
/// (retention deleted it, or the topic was re-created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// At the first record still stored.
    #[default]
    Earliest,
    /// At the end: only records produced from now on.
    Latest,
    /// Nowhere: [`Consumer::poll`] fails with [`ClientError::NoPosition`] or
    /// [`ClientError::OffsetOutOfRange`] until the caller seeks.
    None,
}

/// Where [`Consumer::seek`] moves a partition's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// To this offset.
    Offset(i64),
    /// To the first record still stored.
    Beginning,
    /// To the end: the next record produced.
    End,
    /// To the first record with a timestamp at or after this (milliseconds since the Unix
    /// epoch), found by batch (the offset is that of the first batch reaching it); to the
    /// end when no record is that recent.
    Timestamp(i64),
}

/// Settings of a [`Consumer`].
///
/// ```
/// use std::time::Duration;
/// use mq_client::{ConsumerConfig, OffsetReset};
///
/// let config = ConsumerConfig {
///     reset: OffsetReset::Latest,
///     fetch_max_wait: Duration::from_millis(100),
///     ..ConsumerConfig::default()
/// };
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// How long a broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_max_wait: Duration,
    /// A broker answers a fetch as soon as this many bytes are available.
    pub fetch_min_bytes: usize,
    /// Bytes per fetch response, over all its partitions (one larger batch still comes).
    pub fetch_max_bytes: usize,
    /// Bytes per partition in one fetch response (one larger batch still comes). The default,
    /// 4 MiB, lets one partition be read at over 1 GB/s on loopback: a fetch is one round
    /// trip, and with 1 MiB a single partition's reader waited on round trips (BENCHMARKS.md).
    pub partition_max_bytes: usize,
    /// Where partitions without a valid position start.
    pub reset: OffsetReset,
    /// How long to wait before fetching again from a partition after a retriable error.
    pub retry_backoff: Duration,
    /// In a group: the coordinator removes this member when it hears nothing from it (no
    /// heartbeat, join, sync or commit) for this long.
    pub session_timeout: Duration,
    /// In a group: the longest the coordinator holds a heartbeat while nothing changes (its
    /// `max_wait`). Heartbeats are long polls, resent as soon as one comes back, so a member
    /// learns of a rebalance at once whatever this is; it bounds how often they are sent.
    /// Must be below `session_timeout`.
    pub heartbeat_interval: Duration,
    /// In a group: how long the coordinator waits for every member to rejoin in a
    /// rebalance (members that did not are removed). A member rejoins in
    /// [`Consumer::poll`], so the time between two polls should stay below this.
    pub rebalance_timeout: Duration,
    /// In a group: whether `poll` commits the positions every `auto_commit_interval` (and
    /// before a rebalance and on [`Consumer::close`]); see the [module
    /// documentation](self) for what this means for delivery.
    pub auto_commit: bool,
    /// In a group with `auto_commit`: the time between two automatic commits.
    pub auto_commit_interval: Duration,
    /// In a group: the assignment strategies this member accepts, preferred first
    /// (`sticky`, `range`, `roundrobin`); the group uses the first one every member accepts.
    pub assignors: Vec<String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 4 * 1024 * 1024,
            reset: OffsetReset::Earliest,
            retry_backoff: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(60),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            assignors: ["sticky", "range", "roundrobin"]
                .map(str::to_string)
                .to_vec(),
        }
    }
}

impl ConsumerConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let invalid = |name, reason: String| Err(ClientError::InvalidConfig { name, reason });
        let limit = format!("must be between 1 and {FETCH_BYTES_MAX} bytes");
        if !(1..=FETCH_BYTES_MAX).contains(&self.fetch_max_bytes) {
            return invalid("fetch_max_bytes", limit);
        }
        if !(1..=FETCH_BYTES_MAX).contains(&self.partition_max_bytes) {
            return invalid("partition_max_bytes", limit);
        }
        if self.fetch_min_bytes > self.fetch_max_bytes {
            return invalid(
                "fetch_min_bytes",
                "must not exceed fetch_max_bytes".to_string(),
            );
        }
        if self.fetch_max_wait > Duration::from_secs(30) {
            return invalid("fetch_max_wait", "must be at most 30 s".to_string());
        }
        self.validate_group()
    }

    /// Checks the group settings.
    fn validate_group(&self) -> Result<(), ClientError> {
        let invalid = |name, reason: &str| {
            Err(ClientError::InvalidConfig {
                name,
                reason: reason.to_string(),
            })
        };
        let wire_limit = Duration::from_millis(i32::MAX as u64);
        for (name, value) in [
            ("session_timeout", self.session_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("rebalance_timeout", self.rebalance_timeout),
        ] {
            if value < Duration::from_millis(1) || value > wire_limit {
                return invalid(name, "must be between 1 ms and 2^31 - 1 ms");
            }
        }
        if self.heartbeat_interval >= self.session_timeout {
            return invalid("heartbeat_interval", "must be below session_timeout");
        }
        if self.auto_commit_interval.is_zero() {
            return invalid("auto_commit_interval", "must not be zero");
        }
        if self.assignors.is_empty() {
            return invalid("assignors", "must name at least one strategy");
        }
        Ok(())
    }
}

/// A record read by [`Consumer::poll`].
///
/// Key, value and header values are slices of the fetched batch: keeping one alive keeps the
/// whole batch in memory. Copy out (`Bytes::copy_from_slice`) what you keep for long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch: the producer's, or the broker's append time.
    pub timestamp: i64,
    /// The key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value; `None` for a null value.
    pub value: Option<Bytes>,
    /// The record's headers, in order.
    pub headers: Vec<Header>,
}

/// Reads records from the partitions assigned to it, by hand or by its consumer group (see
/// the [module documentation](self)).
///
/// ```no_run
/// use std::time::Duration;
/// use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig, SeekTo};
///
/// # async fn example() -> Result<(), mq_client::ClientError> {
/// let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default())?;
/// consumer.assign_all("orders").await?;
/// consumer.seek("orders", 0, SeekTo::Beginning).await?;
/// loop {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{} @{}: {:?}", record.partition, record.offset, record.value);
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    /// The cluster.
    client: Client,
    /// The settings.
    config: ConsumerConfig,
    /// The assigned partitions and their positions.
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Fetch tasks in flight (aborted when the consumer is dropped).
    fetches: JoinSet<Result<FetchResponse, ClientError>>,
    /// What each fetch task asked for, by task id.
    in_flight: HashMap<Id, InFlight>,
    /// An error to report once the records gathered with it are returned.
    pending_error: Option<ClientError>,
    /// Record data fetched and not decoded yet. A partition's position already stands
    /// past it (read off the batch headers), so that the next fetch can go out before the
    /// records are checked and decoded.
    undecoded: Vec<Undecoded>,
    /// Whether a broker said the cached metadata is stale.
    metadata_stale: bool,
    /// When this consumer last refreshed metadata, to space refreshes by the retry backoff.
    refreshed_at: Option<Instant>,
    /// When positions may be looked up again after a retriable ListOffsets failure.
    reset_retry_at: Option<Instant>,
    /// Whether partitions were assigned by hand, which rules out subscribing.
    assigned_by_hand: bool,
    /// The group subscribed to, with the membership and rebalance bookkeeping.
    subscription: Option<Subscription>,
    /// An `assign` refused because the consumer is subscribed, reported by the next `poll`.
    refused_assign: Option<ClientError>,
    /// The application's rebalance hooks.
    listener: ListenerSlot,
}

/// One assigned partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// The offset of the next record to return; `None` until looked up (from the group's
    /// committed offset, else per the reset policy).
    position: Option<i64>,
    /// Whether the position is still to be read from the group's committed offset (a
    /// partition the group just assigned); the reset policy applies only when there is none.
    committed_pending: bool,
    /// Whether a fetch for the partition is in flight.
    in_flight: bool,
    /// Not fetched again before this, after a retriable error.
    retry_at: Option<Instant>,
}

/// One partition's fetched record data, waiting to be decoded.
#[derive(Debug)]
struct Undecoded {
    /// The partition.
    topic_partition: TopicPartition,
    /// The offset the fetch asked for: records below it are skipped.
    fetch_offset: i64,
    /// Whole batches as the broker sent them.
    data: Bytes,
    /// The position set from their headers, to be corrected if decoding stops early.
    end_offset: i64,
}

/// A fetch in flight.
#[derive(Debug)]
struct InFlight {
    /// The broker it went to.
    address: String,
    /// The partitions asked for, with the offset asked for each.
    partitions: Vec<(TopicPartition, i64)>,
}

impl Consumer {
    /// A consumer reading through `client`, with nothing assigned yet.
    pub fn new(client: Client, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        config.validate()?;
        if config.fetch_max_bytes >= client.config().max_frame_bytes {
            return Err(ClientError::InvalidConfig {
                name: "fetch_max_bytes",
                reason: "must be below the client's max_frame_bytes".to_string(),
            });
        }
        Ok(Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            in_flight: HashMap::new(),
            pending_error: None,
            undecoded: Vec::new(),
            metadata_stale: false,
            refreshed_at: None,
            reset_retry_at: None,
            assigned_by_hand: false,
            subscription: None,
            refused_assign: None,
            listener: ListenerSlot::default(),
        })
    }

    /// Replaces the assignment with `partitions`. Partitions that stay assigned keep their
    /// positions; new ones start per the reset policy unless sought.
    ///
    /// On a consumer subscribed to a group this changes nothing, and the next
    /// [`Consumer::poll`] fails with [`ClientError::Subscribed`]: the group assigns.
    pub fn assign<T: Into<TopicPartition>>(&mut self, partitions: impl IntoIterator<Item = T>) {
        if let Some(subscription) = &self.subscription {
            self.refused_assign = Some(subscription.refuse_assign());
            return;
        }
        self.assigned_by_hand = true;
        let mut assigned = BTreeMap::new();
        for topic_partition in partitions.into_iter().map(Into::into) {
            let state = self.partitions.remove(&topic_partition).unwrap_or_default();
            assigned.insert(topic_partition, state);
        }
        self.partitions = assigned;
    }

    /// Replaces the assignment with every partition of `topic`, as metadata has them now.
    /// Fails with [`ClientError::Subscribed`] on a consumer subscribed to a group.
    pub async fn assign_all(&mut self, topic: &str) -> Result<(), ClientError> {
        if let Some(subscription) = &self.subscription {
            return Err(subscription.refuse_assign());
        }
        let description = self.client.topic(topic).await?;
        self.assign(
            description
                .partitions
                .iter()
                .map(|partition| TopicPartition::new(topic, partition.partition)),
        );
        Ok(())
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Moves the position of an assigned partition; the next records returned for it start
    /// there.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: i32,
        to: SeekTo,
    ) -> Result<(), ClientError> {
        let topic_partition = TopicPartition::new(topic, partition);
        if !self.partitions.contains_key(&topic_partition) {
            return Err(not_assigned(&topic_partition));
        }
        let position = match to {
            SeekTo::Offset(offset) if offset < 0 => {
                return Err(ClientError::InvalidConfig {
                    name: "offset",
                    reason: format!("{offset} is negative"),
                })
            }
            SeekTo::Offset(offset) => offset,
            SeekTo::Beginning => {
                self.list_offset(&topic_partition, ListOffsetsPartition::EARLIEST)
                    .await?
            }
            SeekTo::End => {
                self.list_offset(&topic_partition, ListOffsetsPartition::LATEST)
                    .await?
            }
            SeekTo::Timestamp(timestamp) => {
                match self.list_offset(&topic_partition, timestamp).await? {
                    -1 => {
                        self.list_offset(&topic_partition, ListOffsetsPartition::LATEST)
                            .await?
                    }
                    offset => offset,
                }
            }
        };
        if let Some(state) = self.partitions.get_mut(&topic_partition) {
            state.position = Some(position);
            state.committed_pending = false;
            state.retry_at = None;
        }
        Ok(())
    }

    /// The offset of the next record [`Consumer::poll`] returns for an assigned partition,
    /// looked up (from the group's committed offset, else per the reset policy) if it has
    /// none yet.
    pub async fn position(&mut self, topic: &str, partition: i32) -> Result<i64, ClientError> {
        let topic_partition = TopicPartition::new(topic, partition);
        let pending = self
            .partitions
            .get(&topic_partition)
            .is_some_and(|state| state.committed_pending);
        if pending {
            let deadline = Instant::now() + self.client.config().request_timeout;
            self.read_committed_positions(deadline).await?;
        }
        let state = self
            .partitions
            .get(&topic_partition)
            .ok_or_else(|| not_assigned(&topic_partition))?;
        if let Some(position) = state.position {
            return Ok(position);
        }
        let timestamp = reset_timestamp(self.config.reset, &topic_partition)?;
        let position = self.list_offset(&topic_partition, timestamp).await?;
        if let Some(state) = self.partitions.get_mut(&topic_partition) {
            state.position = Some(position);
        }
        Ok(position)
    }

    /// The first offset still stored, per partition.
    pub async fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        self.list_offsets(partitions, ListOffsetsPartition::EARLIEST)
            .await
    }

    /// The log end offset (the offset the next record will get), per partition.
    pub async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        self.list_offsets(partitions, ListOffsetsPartition::LATEST)
            .await
    }

    /// Returns the records available from the assigned partitions, waiting up to `timeout`
    /// for some to arrive; an empty list when none did.
    ///
    /// Records of one partition come in offset order, from its position on; the position
    /// moves past every record returned. Fails on what retrying cannot fix: an unknown topic
    /// or partition, a corrupt batch, a position out of range with
    /// [`OffsetReset::None`]. Connection failures and leader changes are retried inside,
    /// within `timeout`.
    ///
    /// In a group, `poll` is also where the member lives: it joins the group (the first
    /// time), rejoins when the group rebalances (waking up from its wait as soon as the
    /// rebalance starts), and commits automatically when `auto_commit` is on. A rebalance, once
    /// begun, runs to completion even past `timeout`; when the coordinator cannot be reached,
    /// `poll` returns nothing after `timeout` and tries again at the next call. Fails when
    /// the coordinator refuses the member (no assignment strategy in common, an invalid group
    /// id, ...).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        if let Some(error) = self.refused_assign.take() {
            return Err(error);
        }
        self.auto_commit();
        loop {
            let mut wake_at = deadline;
            if !self.keep_membership(deadline).await? {
                return Ok(Vec::new());
            }
            self.check_routes(&mut wake_at).await?;
            self.lookup_committed(&mut wake_at).await?;
            self.reset_positions(&mut wake_at).await?;
            self.send_fetches(deadline, &mut wake_at).await;
            while let Some(joined) = self.fetches.try_join_next_with_id() {
                self.complete_fetch(joined);
            }
            if self.undecoded.is_empty() && self.pending_error.is_none() {
                // A rebalance interrupts the wait, so that the member rejoins at once.
                let rejoin = self.rejoin_signal();
                if self.fetches.is_empty() {
                    tokio::select! {
                        () = tokio::time::sleep_until(wake_at) => {}
                        () = rejoin_requested(rejoin) => {}
                    }
                } else {
                    tokio::select! {
                        joined = timeout_at(wake_at, self.fetches.join_next_with_id()) => {
                            if let Ok(Some(joined)) = joined {
                                self.complete_fetch(joined);
                            }
                        }
                        () = rejoin_requested(rejoin) => {}
                    }
                }
            }
            if !self.undecoded.is_empty() {
                // Prefetch: the next fetches go out before these records are checked and
                // decoded, and long-poll while the caller handles them. Their errors come
                // back on the next poll.
                let mut ignored = deadline;
                self.send_fetches(deadline, &mut ignored).await;
                let records = self.decode_fetched();
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            if let Some(error) = self.pending_error.take() {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Looks again at the topics of assigned partitions the cache does not know (the cache
    /// may predate them), and fails if a fresh look does not know them either.
    async fn check_routes(&mut self, wake_at: &mut Instant) -> Result<(), ClientError> {
        let metadata = self.client.metadata();
        let unknown: Vec<TopicPartition> = self
            .partitions
            .keys()
            .filter(|tp| !is_known(&metadata.route(&tp.topic, tp.partition)))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if !self.refresh_due(now) {
            *wake_at = (*wake_at).min(now + self.config.retry_backoff);
            return Ok(());
        }
        self.refreshed_at = Some(now);
        let topics: std::collections::BTreeSet<&str> =
            unknown.iter().map(|tp| tp.topic.as_str()).collect();
        for topic in topics {
            match self.client.refresh_topic(topic).await {
                Ok(()) => {}
                Err(error) if error.is_retriable() => {
                    tracing::debug!(topic, %error, "metadata fetch failed, retrying");
                    *wake_at = (*wake_at).min(now + self.config.retry_backoff);
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        let metadata = self.client.metadata();
        match unknown
            .iter()
            .find(|tp| !is_known(&metadata.route(&tp.topic, tp.partition)))
        {
            Some(topic_partition) => Err(unknown_partition(&metadata, topic_partition)),
            None => Ok(()),
        }
    }

    /// Gives positions to the partitions without one (and no committed offset to come), per
    /// the reset policy.
    async fn reset_positions(&mut self, wake_at: &mut Instant) -> Result<(), ClientError> {
        let metadata = self.client.metadata();
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.position.is_none() && !state.committed_pending)
            .map(|(topic_partition, _)| topic_partition)
            .filter(|tp| is_known(&metadata.route(&tp.topic, tp.partition)))
            .cloned()
            .collect();
        let Some(first) = missing.first() else {
            return Ok(());
        };
        let timestamp = reset_timestamp(self.config.reset, first)?;
        let now = Instant::now();
        if let Some(retry_at) = self.reset_retry_at.filter(|retry_at| *retry_at > now) {
            *wake_at = (*wake_at).min(retry_at);
            return Ok(());
        }
        let queries: Vec<_> = missing.into_iter().map(|tp| (tp, timestamp)).collect();
        let (found, failed) = list_offsets_once(&self.client, &queries).await;
        for (topic_partition, offset) in found {
            if let Some(state) = self.partitions.get_mut(&topic_partition) {
                state.position.get_or_insert(offset);
            }
        }
        if let Some((_, error)) = failed.into_iter().next() {
            if !error.is_retriable() {
                return Err(error);
            }
            tracing::debug!(%error, "looking up positions failed, retrying");
            self.metadata_stale |= error.needs_metadata();
            let retry_at = now + self.config.retry_backoff;
            self.reset_retry_at = Some(retry_at);
            *wake_at = (*wake_at).min(retry_at);
        }
        Ok(())
    }

    /// Sends a fetch to every leader without one in flight, for its assigned partitions that
    /// have a position and no fetch in flight.
    async fn send_fetches(&mut self, deadline: Instant, wake_at: &mut Instant) {
        let now = Instant::now();
        if self.metadata_stale && self.refresh_due(now) {
            self.refresh_metadata(deadline).await;
        }
        let metadata = self.client.metadata();
        let busy: HashSet<&str> = self
            .in_flight
            .values()
            .map(|fetch| fetch.address.as_str())
            .collect();
        let mut requests: BTreeMap<String, Vec<(TopicPartition, i32, i64)>> = BTreeMap::new();
        for (topic_partition, state) in &self.partitions {
            let Some(position) = state.position else {
                continue;
            };
            if state.in_flight {
                continue;
            }
            if let Some(retry_at) = state.retry_at.filter(|retry_at| *retry_at > now) {
                *wake_at = (*wake_at).min(retry_at);
                continue;
            }
            match metadata.route(&topic_partition.topic, topic_partition.partition) {
                Route::Leader(leader) if busy.contains(leader.address.as_str()) => {}
                Route::Leader(leader) => requests.entry(leader.address).or_default().push((
                    topic_partition.clone(),
                    leader.epoch,
                    position,
                )),
                Route::NoLeader => {
                    self.metadata_stale = true;
                    *wake_at = (*wake_at).min(now + self.config.retry_backoff);
                }
                // Left to `check_routes`.
                Route::UnknownTopic | Route::UnknownPartition => {}
            }
        }
        drop(busy);
        for (address, partitions) in requests {
            self.spawn_fetch(address, partitions);
        }
    }

    fn spawn_fetch(&mut self, address: String, partitions: Vec<(TopicPartition, i32, i64)>) {
        let config = &self.config;
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (topic_partition, epoch, position) in &partitions {
            let partition = FetchPartition {
                partition: topic_partition.partition,
                current_leader_epoch: *epoch,
                fetch_offset: *position,
                partition_max_bytes: clamp_i32(config.partition_max_bytes),
            };
            match topics.last_mut() {
                Some(topic) if topic.name == topic_partition.topic => {
                    topic.partitions.push(partition)
                }
                _ => topics.push(FetchTopic {
                    name: topic_partition.topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: clamp_i32(
                usize::try_from(config.fetch_max_wait.as_millis()).unwrap_or(usize::MAX),
            ),
            min_bytes: clamp_i32(config.fetch_min_bytes),
            max_bytes: clamp_i32(config.fetch_max_bytes),
            topics,
        });
        let timeout = self.client.config().request_timeout + config.fetch_max_wait;
        let client = self.client.clone();
        let target = address.clone();
        let handle = self.fetches.spawn(async move {
            let connection = client.connection(&target).await?;
            match connection.request_with_timeout(request, timeout).await? {
                Response::Fetch(response) => Ok(response),
                _ => Err(ClientError::UnexpectedResponse { api: "Fetch" }),
            }
        });
        for (topic_partition, _, _) in &partitions {
            if let Some(state) = self.partitions.get_mut(topic_partition) {
                state.in_flight = true;
            }
        }
        self.in_flight.insert(
            handle.id(),
            InFlight {
                address,
                partitions: partitions
                    .into_iter()
                    .map(|(topic_partition, _, position)| (topic_partition, position))
                    .collect(),
            },
        );
    }

    /// Takes in a finished fetch: records into `records`, positions moved, errors noted.
    /// Checks and decodes the fetched record data, in the order it arrived. Where data
    /// turns out corrupt, the partition's position goes back to where decoding stopped (a
    /// fetch already sent from past it is then answered stale and dropped) and the error is
    /// reported after the records before it.
    fn decode_fetched(&mut self) -> Vec<ConsumerRecord> {
        let mut records = Vec::new();
        for fetched in std::mem::take(&mut self.undecoded) {
            let (position, error) = decode_records(
                &fetched.topic_partition,
                fetched.fetch_offset,
                &fetched.data,
                &mut records,
            );
            if position != fetched.end_offset {
                if let Some(state) = self.partitions.get_mut(&fetched.topic_partition) {
                    if state.position == Some(fetched.end_offset) {
                        state.position = Some(position);
                    }
                }
            }
            if error.is_some() {
                self.pending_error = error;
            }
        }
        records
    }

    fn complete_fetch(
        &mut self,
        joined: Result<(Id, Result<FetchResponse, ClientError>), JoinError>,
    ) {
        let (id, result) = match joined {
            Ok(joined) => joined,
            Err(error) => (
                error.id(),
                Err(ClientError::Closed {
                    what: "fetch task".to_string(),
                }),
            ),
        };
        let Some(fetch) = self.in_flight.remove(&id) else {
            return;
        };
        for (topic_partition, _) in &fetch.partitions {
            if let Some(state) = self.partitions.get_mut(topic_partition) {
                state.in_flight = false;
            }
        }
        let now = Instant::now();
        let response = match result {
            Ok(response) => response,
            Err(error) if error.is_retriable() => {
                tracing::debug!(address = %fetch.address, %error, "fetch failed, retrying");
                self.metadata_stale |= error.needs_metadata();
                for (topic_partition, _) in &fetch.partitions {
                    self.back_off(topic_partition, now);
                }
                return;
            }
            Err(error) => {
                self.pending_error = Some(error);
                return;
            }
        };
        let asked: HashMap<&TopicPartition, i64> = fetch
            .partitions
            .iter()
            .map(|(tp, offset)| (tp, *offset))
            .collect();
        for topic in response.topics {
            for partition in topic.partitions {
                let topic_partition = TopicPartition::new(topic.name.clone(), partition.partition);
                let Some(fetch_offset) = asked.get(&topic_partition).copied() else {
                    continue;
                };
                let current = self
                    .partitions
                    .get(&topic_partition)
                    .and_then(|state| state.position);
                if current != Some(fetch_offset) {
                    // Sought (or unassigned) while the fetch was in flight: stale data.
                    continue;
                }
                self.complete_partition(topic_partition, fetch_offset, partition, now);
            }
        }
    }

    fn complete_partition(
        &mut self,
        topic_partition: TopicPartition,
        fetch_offset: i64,
        partition: FetchPartitionResponse,
        now: Instant,
    ) {
        let code = partition.error_code;
        if code == ErrorCode::NONE {
            if partition.records.is_empty() {
                return;
            }
            let end_offset = end_offset(fetch_offset, &partition.records);
            if let Some(state) = self.partitions.get_mut(&topic_partition) {
                state.position = Some(end_offset);
            }
            self.undecoded.push(Undecoded {
                topic_partition,
                fetch_offset,
                data: partition.records,
                end_offset,
            });
        } else if code == ErrorCode::OFFSET_OUT_OF_RANGE {
            let offset = fetch_offset;
            tracing::debug!(partition = %topic_partition, offset, "offset out of range");
            let topic_partition = &topic_partition;
            if self.config.reset == OffsetReset::None {
                self.pending_error = Some(ClientError::OffsetOutOfRange {
                    topic: topic_partition.topic.clone(),
                    partition: topic_partition.partition,
                    offset: fetch_offset,
                });
            } else if let Some(state) = self.partitions.get_mut(topic_partition) {
                state.position = None;
            }
        } else if code.is_retriable() {
            tracing::debug!(partition = %topic_partition, %code, "fetch partition error, retrying");
            self.metadata_stale |= crate::error::is_metadata_error(code);
            self.back_off(&topic_partition, now);
        } else {
            self.pending_error = Some(ClientError::broker(code, None));
        }
    }

    fn back_off(&mut self, topic_partition: &TopicPartition, now: Instant) {
        if let Some(state) = self.partitions.get_mut(topic_partition) {
            state.retry_at = Some(now + self.config.retry_backoff);
        }
    }

    fn refresh_due(&self, now: Instant) -> bool {
        self.refreshed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.retry_backoff)
    }

    /// Refreshes metadata, giving up at the poll's deadline (but allowing one backoff's
    /// time when the deadline has passed), so that `poll` stays close to its timeout.
    async fn refresh_metadata(&mut self, deadline: Instant) {
        let now = Instant::now();
        self.refreshed_at = Some(now);
        self.metadata_stale = false;
        let limit = deadline.max(now + self.config.retry_backoff);
        match timeout_at(limit, self.client.refresh_metadata()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "metadata refresh failed");
                self.metadata_stale = true;
            }
            Err(_) => self.metadata_stale = true,
        }
    }

    /// One partition's offset by position or time, retrying within the request timeout.
    async fn list_offset(
        &self,
        topic_partition: &TopicPartition,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        let offsets = self
            .list_offsets(std::slice::from_ref(topic_partition), timestamp)
            .await?;
        offsets
            .get(topic_partition)
            .copied()
            .ok_or(ClientError::UnexpectedResponse { api: "ListOffsets" })
    }

    /// Offsets by position or time, retrying retriable failures within the request timeout.
    async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<HashMap<TopicPartition, i64>, ClientError> {
        list_offsets(
            &self.client,
            partitions,
            timestamp,
            self.config.retry_backoff,
        )
        .await
    }
}

/// Offsets by position or time (a ListOffsets timestamp), asked of each partition's leader,
/// retrying retriable failures within the request timeout.
pub(crate) async fn list_offsets(
    client: &Client,
    partitions: &[TopicPartition],
    timestamp: i64,
    retry_backoff: Duration,
) -> Result<HashMap<TopicPartition, i64>, ClientError> {
    // A look at each topic first (a fresh one if the cache lacks the topic or one of the
    // partitions), so that what does not exist fails at once.
    let mut checked = HashSet::new();
    for topic_partition in partitions {
        if !checked.insert(topic_partition.topic.as_str()) {
            continue;
        }
        let description = client.topic(&topic_partition.topic).await?;
        let missing = partitions.iter().any(|tp| {
            tp.topic == topic_partition.topic && description.partition(tp.partition).is_none()
        });
        if missing {
            client.refresh_topic(&topic_partition.topic).await?;
        }
    }
    let deadline = Instant::now() + client.config().request_timeout;
    let mut found = HashMap::new();
    let mut pending: Vec<_> = partitions
        .iter()
        .map(|tp| (tp.clone(), timestamp))
        .collect();
    loop {
        let (offsets, failed) = list_offsets_once(client, &pending).await;
        found.extend(offsets);
        let Some((_, error)) = failed.first() else {
            return Ok(found);
        };
        let retry_at = Instant::now() + retry_backoff;
        if !error.is_retriable() || retry_at >= deadline {
            return Err(error.clone());
        }
        tracing::debug!(%error, "list offsets failed, retrying");
        if failed.iter().any(|(_, error)| error.needs_metadata()) {
            let _ = client.refresh_metadata().await;
        }
        tokio::time::sleep_until(retry_at).await;
        pending = failed.into_iter().map(|(tp, _)| (tp, timestamp)).collect();
    }
}

/// Completes when `signal` (the group's, if any) asks the member to rejoin; never without a
/// group.
async fn rejoin_requested(signal: Option<Arc<Signal>>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
    }
}

/// One round of ListOffsets: one request per leader. Returns the offsets found and the
/// partitions that failed, each with its error.
async fn list_offsets_once(
    client: &Client,
    queries: &[(TopicPartition, i64)],
) -> (
    HashMap<TopicPartition, i64>,
    Vec<(TopicPartition, ClientError)>,
) {
    let metadata = client.metadata();
    let mut found = HashMap::new();
    let mut failed = Vec::new();
    let mut by_leader: BTreeMap<String, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
    for query in queries {
        let topic_partition = &query.0;
        match metadata.route(&topic_partition.topic, topic_partition.partition) {
            Route::Leader(leader) => by_leader.entry(leader.address).or_default().push(query),
            Route::NoLeader => failed.push((
                topic_partition.clone(),
                ClientError::broker(ErrorCode::LEADER_NOT_AVAILABLE, None),
            )),
            Route::UnknownTopic | Route::UnknownPartition => failed.push((
                topic_partition.clone(),
                unknown_partition(&metadata, topic_partition),
            )),
        }
    }
    for (address, queries) in by_leader {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (topic_partition, timestamp) in &queries {
            let partition = ListOffsetsPartition {
                partition: topic_partition.partition,
                timestamp: *timestamp,
            };
            match topics
                .iter_mut()
                .find(|topic| topic.name == topic_partition.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(ListOffsetsTopic {
                    name: topic_partition.topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = Request::ListOffsets(ListOffsetsRequest { topics });
        let response = match client.request_to(&address, request).await {
            Ok(Response::ListOffsets(response)) => response,
            Ok(_) => {
                let error = ClientError::UnexpectedResponse { api: "ListOffsets" };
                failed.extend(queries.iter().map(|(tp, _)| (tp.clone(), error.clone())));
                continue;
            }
            Err(error) => {
                failed.extend(queries.iter().map(|(tp, _)| (tp.clone(), error.clone())));
                continue;
            }
        };
        let mut answered = HashSet::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let topic_partition = TopicPartition::new(topic.name.clone(), partition.partition);
                answered.insert(topic_partition.clone());
                if partition.error_code == ErrorCode::NONE {
                    found.insert(topic_partition, partition.offset);
                } else {
                    failed.push((
                        topic_partition,
                        ClientError::broker(partition.error_code, None),
                    ));
                }
            }
        }
        for (topic_partition, _) in queries {
            if !answered.contains(topic_partition) {
                failed.push((
                    topic_partition.clone(),
                    ClientError::UnexpectedResponse { api: "ListOffsets" },
                ));
            }
        }
    }
    (found, failed)
}

/// Decodes the records of one partition's fetch answer from `fetch_offset` on into
/// `records`. Returns the new position, and the error that stopped decoding, if any (the
/// records before it are kept, and the position stops at the bad batch).
fn decode_records(
    topic_partition: &TopicPartition,
    fetch_offset: i64,
    data: &Bytes,
    records: &mut Vec<ConsumerRecord>,
) -> (i64, Option<ClientError>) {
    let mut position = fetch_offset;
    let corrupt = |position, error| ClientError::Corrupt {
        topic: topic_partition.topic.clone(),
        partition: topic_partition.partition,
        offset: position,
        error,
    };
    let whole = whole_batches_len(data);
    if whole == 0 && !data.is_empty() {
        // The broker sends whole batches; a lone partial one means it cut a batch larger
        // than the partition's byte limit.
        let error = BatchError::Truncated {
            needed: mq_protocol::batch::peek_total_bytes(data)
                .and_then(|total| usize::try_from(total).ok())
                .unwrap_or(0),
            available: data.len(),
        };
        return (position, Some(corrupt(position, error)));
    }
    for batch in BatchIter::new(&data[..whole]) {
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => return (position, Some(corrupt(position, error))),
        };
        let next_offset = batch.header.next_offset();
        if next_offset <= position || batch.header.is_control() {
            position = position.max(next_offset);
            continue;
        }
        let bytes = data.slice(batch.position..batch.position + batch.bytes.len());
        let iter = match mq_protocol::record::records(&bytes) {
            Ok(iter) => iter,
            Err(error) => return (position, Some(corrupt(position, error))),
        };
        let start = records.len();
        for record in iter {
            match record {
                Ok(record) if record.offset < position => {}
                Ok(record) => records.push(ConsumerRecord {
                    topic: topic_partition.topic.clone(),
                    partition: topic_partition.partition,
                    offset: record.offset,
                    timestamp: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                }),
                Err(error) => {
                    // All or nothing per batch, so the position can stay at its start.
                    records.truncate(start);
                    return (position, Some(corrupt(position, error)));
                }
            }
        }
        position = next_offset;
    }
    (position, None)
}

/// The position after the whole batches of `data`, fetched from `fetch_offset`, read off
/// their headers alone (no CRC check, no record decoded): what [`decode_records`] ends at
/// unless it finds the data corrupt.
fn end_offset(fetch_offset: i64, data: &[u8]) -> i64 {
    let whole = whole_batches_len(data);
    BatchIter::new(&data[..whole])
        .map_while(Result::ok)
        .fold(fetch_offset, |position, batch| {
            position.max(batch.header.next_offset())
        })
}

/// The ListOffsets timestamp for the reset policy; an error for [`OffsetReset::None`].
fn reset_timestamp(
    reset: OffsetReset,
    topic_partition: &TopicPartition,
) -> Result<i64, ClientError> {
    match reset {
        OffsetReset::Earliest => Ok(ListOffsetsPartition::EARLIEST),
        OffsetReset::Latest => Ok(ListOffsetsPartition::LATEST),
        OffsetReset::None => Err(ClientError::NoPosition {
            topic: topic_partition.topic.clone(),
            partition: topic_partition.partition,
        }),
    }
}

/// Whether the cache knows the partition (with or without a leader).
fn is_known(route: &Route) -> bool {
    matches!(route, Route::Leader(_) | Route::NoLeader)
}

/// The error for a partition the metadata does not have.
fn unknown_partition(
    metadata: &crate::client::Metadata,
    topic_partition: &TopicPartition,
) -> ClientError {
    if metadata.topic(&topic_partition.topic).is_some() {
        ClientError::UnknownPartition {
            topic: topic_partition.topic.clone(),
            partition: topic_partition.partition,
        }
    } else {
        ClientError::UnknownTopic {
            topic: topic_partition.topic.clone(),
        }
    }
}

fn not_assigned(topic_partition: &TopicPartition) -> ClientError {
    ClientError::NotAssigned {
        topic: topic_partition.topic.clone(),
        partition: topic_partition.partition,
    }
}

fn clamp_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::{BatchBuilder, Compression, Record};

    fn batch(base_offset: i64, values: &[&str], compression: Compression) -> Bytes {
        let mut builder = BatchBuilder::new(compression);
        for value in values {
            builder
                .append(&Record::new(
                    5,
                    None,
                    Some(Bytes::copy_from_slice(value.as_bytes())),
                ))
                .unwrap();
        }
        builder.seal(base_offset).unwrap()
    }

    fn decode(fetch_offset: i64, data: &[Bytes]) -> (Vec<(i64, String)>, i64, Option<ClientError>) {
        let data = Bytes::from(data.concat());
        let mut records = Vec::new();
        let (position, error) = decode_records(
            &TopicPartition::new("t", 0),
            fetch_offset,
            &data,
            &mut records,
        );
        let records = records
            .into_iter()
            .map(|record| {
                (
                    record.offset,
                    String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        (records, position, error)
    }

    #[test]
    fn records_below_the_fetch_offset_are_skipped() {
        let data = [
            batch(10, &["a", "b", "c"], Compression::None),
            batch(13, &["d", "e"], Compression::None),
        ];
        let (records, position, error) = decode(11, &data);
        assert_eq!(
            records,
            [
                (11, "b".into()),
                (12, "c".into()),
                (13, "d".into()),
                (14, "e".into())
            ]
        );
        assert_eq!(position, 15);
        assert!(error.is_none());
        let (records, position, _) = decode(14, &data);
        assert_eq!(records, [(14, "e".into())]);
        assert_eq!(position, 15);
    }

    #[test]
    fn zstd_batches_are_decoded() {
        let data = [batch(0, &["x", "y"], Compression::Zstd)];
        let (records, position, error) = decode(0, &data);
        assert_eq!(records, [(0, "x".into()), (1, "y".into())]);
        assert_eq!(position, 2);
        assert!(error.is_none());
    }

    #[test]
    fn a_corrupt_batch_stops_decoding_at_its_start() {
        let good = batch(0, &["a"], Compression::None);
        let mut bad = batch(1, &["b"], Compression::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let (records, position, error) = decode(0, &[good, Bytes::from(bad)]);
        assert_eq!(records, [(0, "a".into())]);
        assert_eq!(position, 1);
        let error = error.unwrap().to_string();
        assert!(
            error.starts_with("corrupt batch in 't' partition 0 at offset 1: crc mismatch"),
            "{error}"
        );
    }

    #[test]
    fn a_trailing_partial_batch_is_left_for_the_next_fetch() {
        let first = batch(0, &["a"], Compression::None);
        let second = batch(1, &["b"], Compression::None);
        let partial = second.slice(..second.len() - 3);
        let (records, position, error) = decode(0, &[first, partial.clone()]);
        assert_eq!(records, [(0, "a".into())]);
        assert_eq!(position, 1);
        assert!(error.is_none());
        let (records, _, error) = decode(1, &[partial]);
        assert!(records.is_empty());
        assert!(matches!(error, Some(ClientError::Corrupt { .. })));
    }

    #[test]
    fn an_empty_answer_keeps_the_position() {
        let (records, position, error) = decode(42, &[]);
        assert!(records.is_empty());
        assert_eq!(position, 42);
        assert!(error.is_none());
    }

    #[test]
    fn consumer_futures_can_move_between_threads() {
        fn send<T: Send>(_: &T) {}
        fn share<T: Send + Sync>(_: &T) {}
        // Type-checked only: a consumer in a spawned task needs every future to be `Send`.
        let _ = |consumer: &mut Consumer| {
            share(consumer);
            send(&consumer.poll(Duration::ZERO));
            send(&consumer.commit_sync());
            send(&consumer.commit_async());
            send(&consumer.committed(&[]));
        };
        let _ = |consumer: Consumer| send(&consumer.close());
    }

    #[test]
    fn group_settings_are_checked() {
        let config = ConsumerConfig {
            heartbeat_interval: Duration::from_secs(10),
            ..ConsumerConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid heartbeat_interval: must be below session_timeout"
        );
        let config = ConsumerConfig {
            assignors: Vec::new(),
            ..ConsumerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn defaults_are_valid() {
        ConsumerConfig::default().validate().unwrap();
        let config = ConsumerConfig {
            fetch_max_bytes: FETCH_BYTES_MAX + 1,
            ..ConsumerConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
