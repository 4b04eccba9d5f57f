//! [`Producer`]: sends records to partitions, batched, retried, acknowledged per `acks`.
//!
//! [`Producer::send`] picks the record's partition (explicit, by key hash, or sticky for
//! records without a key), reserves buffer space for it (waiting while the buffer is full),
//! and appends it to the accumulator (`accumulator.rs`). A background sender task drains
//! batches that are full or whose linger passed, groups them by their partition leader's
//! address (one Produce request may carry batches of many partitions, one batch of each), and
//! sends them, at most `max_in_flight` requests per broker and `max_in_flight_per_partition`
//! batches per partition at a time. Requests to one broker are written to its connection in
//! the order they were drained, each waiting for the previous one to be queued there, so the
//! broker, which appends a connection's produce requests in arrival order, sees a partition's
//! batches in order.
//!
//! Idempotence (on by default, with `acks` 1 or all): the producer picks a random producer
//! id, and every batch carries it with its partition's epoch and the sequence number of its
//! first record. The broker appends a batch only when its sequence follows the last one it
//! appended for the producer, answers a repeat of one of the last five batches with their
//! original offsets without writing it again, and refuses anything else as out of order.
//! Retriable failures (leader moved, connection lost, timeout, a batch refused as out of
//! order because an earlier one was not appended) hold the partition until its batches in
//! flight have settled, then resend its batches in order after `retry_backoff` with fresh
//! metadata, until each one's `delivery_timeout` runs out. A batch that fails for good leaves
//! a gap in the sequences; when the broker reports it, the partition's later batches are
//! renumbered under a new epoch (see `accumulator.rs`).
//!
//! What is guaranteed: records of one partition are written in `send` order, retries
//! included, with up to `max_in_flight_per_partition` batches in flight. A retry after a
//! lost acknowledgement is recognised by the broker and not stored twice, as long as the
//! broker stays up: its sequence state lives in memory, so after a broker restart a retry of
//! a batch it had already appended may be stored twice (at-least-once). Without idempotence
//! a partition has one batch in flight at a time and a retry after a lost response may write
//! a batch twice. What an acknowledgement means is the `acks` setting's business; see the
//! crate documentation.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mq_protocol::limits::BATCH_BYTES_MAX;
use mq_protocol::request::{ProducePartition, ProduceRequest, ProduceTopic, Request};
use mq_protocol::response::Response;
use mq_protocol::{Compression, ErrorCode, Header, Record};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::accumulator::{Accumulator, AccumulatorConfig, Batch};
use crate::client::{Client, Leader, Route, TopicPartition};
use crate::delivery::GroupOutcome;
pub use crate::delivery::{BatchDeliveryFuture, BatchMetadata, DeliveryFuture, RecordMetadata};
use crate::error::ClientError;
use crate::partitioner::{partition_for_key, StickyPartitions};

/// When a broker acknowledges a produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no acknowledgement at all; a record counts as delivered once written to
    /// the socket, and its offset is reported as -1.
    None,
    /// `acks=1`: the leader answers once the batch is appended to its log (not necessarily
    /// on disk).
    Leader,
    /// `acks=all` (-1): the leader answers once the batch is durable (fsynced, and later
    /// replicated to the in-sync replicas).
    #[default]
    All,
}

impl Acks {
    /// The value on the wire: 0, 1 or -1.
    pub fn to_wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Settings of a [`Producer`].
///
/// ```
/// use std::time::Duration;
/// use mq_client::{Acks, Compression, ProducerConfig};
///
/// let config = ProducerConfig {
///     acks: Acks::Leader,
///     linger: Duration::from_millis(20),
///     compression: Compression::Zstd,
///     ..ProducerConfig::default()
/// };
/// ```
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// When the broker acknowledges; see [`Acks`].
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent; 0 sends at once, longer
    /// makes fewer, larger requests.
    pub linger: Duration,
    /// A batch is sent as soon as its records reach this many bytes (before compression).
    /// A single larger record still goes, alone in its batch.
    pub batch_bytes_max: usize,
    /// How batches are compressed.
    pub compression: Compression,
    /// How long a record may take from `send` to its acknowledgement, retries included;
    /// then its delivery fails with the last error seen (or a timeout).
    pub delivery_timeout: Duration,
    /// How long to wait before resending a batch after a retriable error.
    pub retry_backoff: Duration,
    /// Produce requests awaiting a response per broker.
    pub max_in_flight: usize,
    /// Whether batches carry a producer id and per-partition sequence numbers, so that the
    /// broker drops repeats of a batch whose acknowledgement was lost and refuses batches
    /// that would land out of order; this is what allows several batches of a partition in
    /// flight. Applies with [`Acks::Leader`] and [`Acks::All`]; with [`Acks::None`] nothing
    /// comes back to act on, and it is off.
    pub idempotence: bool,
    /// Batches of one partition sent and not yet acknowledged: 1 to 5 with idempotence (the
    /// broker remembers a producer's last 5 batches per partition, so a retry must be one of
    /// them); without idempotence always 1, whatever this says, since a retried batch could
    /// otherwise land after a later one.
    pub max_in_flight_per_partition: usize,
    /// Bytes of records buffered and not yet acknowledged; [`Producer::send`] waits while
    /// the buffer is full.
    pub buffer_bytes_max: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes_max: 1024 * 1024,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            max_in_flight: 5,
            idempotence: true,
            max_in_flight_per_partition: 5,
            buffer_bytes_max: 32 * 1024 * 1024,
        }
    }
}

/// The most batches of one partition in flight with idempotence: the broker deduplicates
/// against a producer's last 5 batches.
const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

impl ProducerConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let invalid = |name, reason: &str| {
            Err(ClientError::InvalidConfig {
                name,
                reason: reason.to_string(),
            })
        };
        if self.batch_bytes_max == 0 || self.batch_bytes_max > BATCH_BYTES_MAX {
            return invalid("batch_bytes_max", "must be between 1 and 64 MiB");
        }
        if self.buffer_bytes_max < self.batch_bytes_max
            || self.buffer_bytes_max > Semaphore::MAX_PERMITS.min(u32::MAX as usize)
        {
            return invalid(
                "buffer_bytes_max",
                "must be at least batch_bytes_max and below 4 GiB",
            );
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be positive");
        }
        if self.is_idempotent()
            && !(1..=IDEMPOTENT_IN_FLIGHT_MAX).contains(&self.max_in_flight_per_partition)
        {
            return invalid(
                "max_in_flight_per_partition",
                "must be between 1 and 5 with idempotence",
            );
        }
        if self.delivery_timeout.is_zero() {
            return invalid("delivery_timeout", "must be positive");
        }
        Ok(())
    }

    /// Whether idempotence applies: asked for, and with acknowledgements to act on.
    fn is_idempotent(&self) -> bool {
        self.idempotence && self.acks != Acks::None
    }

    /// Batches of one partition in flight at once, as the accumulator applies it.
    fn in_flight_per_partition(&self) -> usize {
        if self.is_idempotent() {
            self.max_in_flight_per_partition
        } else {
            1
        }
    }
}

/// A record to send.
///
/// ```
/// use mq_client::ProducerRecord;
///
/// let record = ProducerRecord::new("orders", "order 17 shipped")
///     .with_key("order-17")
///     .with_header("source", "warehouse");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; `None` to choose by key hash (or sticky, for records without a key).
    pub partition: Option<i32>,
    /// The key: records with equal keys go to the same partition, in order.
    pub key: Option<Bytes>,
    /// The payload; `None` is a null value.
    pub value: Option<Bytes>,
    /// Application metadata carried with the record.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` for the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with `value`, no key, partition chosen by the producer.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// With a key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    /// To an explicit partition.
    pub fn with_partition(mut self, partition: i32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    /// With one more header.
    pub fn with_header(
        mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> ProducerRecord {
        self.headers.push(Header::new(key, Some(value.into())));
        self
    }

    /// With an explicit timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> ProducerRecord {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Sends records to topics. Cheap to clone: clones share the buffer and the sender task.
///
/// Dropping the last clone without [`Producer::close`] still delivers what was sent, in the
/// background, as long as the runtime runs.
///
/// ```no_run
/// use mq_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
///
/// # async fn example() -> Result<(), mq_client::ClientError> {
/// let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
/// let producer = Producer::new(client, ProducerConfig::default())?;
/// let delivery = producer
///     .send(ProducerRecord::new("orders", "order 17 shipped").with_key("order-17"))
///     .await?;
/// let metadata = delivery.await?;
/// println!("written to partition {} at offset {}", metadata.partition, metadata.offset);
/// producer.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Producer {
    /// The handle shared by the clones; the last one's drop starts closing.
    handle: Arc<Handle>,
}

/// What the producer's clones share; closes the producer when dropped.
#[derive(Debug)]
struct Handle {
    /// The state shared with the sender task.
    shared: Arc<Shared>,
    /// The sender task, awaited by [`Producer::close`].
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_close();
    }
}

/// The state shared by the producer's handles, the sender task and produce tasks.
#[derive(Debug)]
struct Shared {
    /// The cluster.
    client: Client,
    /// The settings.
    config: ProducerConfig,
    /// Batches and routing state.
    state: Mutex<State>,
    /// Buffer space, in bytes: taken by `send`, given back when a batch finishes.
    buffer: Arc<Semaphore>,
    /// Wakes the sender task: a batch is ready, a request finished, metadata arrived.
    wake: Notify,
    /// Wakes flush and close waiters: some batch finished.
    progress: Notify,
}

/// The mutable part of [`Shared`].
#[derive(Debug)]
struct State {
    /// The batches.
    accumulator: Accumulator,
    /// The partition choice for records without a key.
    sticky: StickyPartitions,
    /// Produce requests in flight, by broker address.
    in_flight: HashMap<String, usize>,
    /// Per broker address, resolved once the last request sent there was queued on its
    /// connection (or given up): the next request waits for it, so that requests reach the
    /// connection in the order they were drained (tasks may start in any order).
    turns: HashMap<String, oneshot::Receiver<()>>,
    /// Whether the producer is closing: no new records, everything sent without linger.
    closing: bool,
    /// Whether a metadata refresh is running.
    refreshing: bool,
    /// When the last metadata refresh started, to space them by the retry backoff.
    refreshed_at: Option<Instant>,
}

impl Producer {
    /// A producer sending through `client`. Starts its sender task: must be called inside
    /// a tokio runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let buffer = Arc::new(Semaphore::new(config.buffer_bytes_max));
        let producer_id = config.is_idempotent().then(random_producer_id);
        if let Some(producer_id) = producer_id {
            tracing::debug!(producer_id, "idempotent producer");
        }
        let accumulator = Accumulator::new(
            AccumulatorConfig {
                linger: config.linger,
                batch_bytes_max: config.batch_bytes_max,
                compression: config.compression,
                delivery_timeout: config.delivery_timeout,
                producer_id,
                max_in_flight_per_partition: config.in_flight_per_partition(),
            },
            Arc::clone(&buffer),
        );
        let shared = Arc::new(Shared {
            client,
            config,
            state: Mutex::new(State {
                accumulator,
                sticky: StickyPartitions::new(),
                in_flight: HashMap::new(),
                turns: HashMap::new(),
                closing: false,
                refreshing: false,
                refreshed_at: None,
            }),
            buffer,
            wake: Notify::new(),
            progress: Notify::new(),
        });
        let task = tokio::spawn(run_sender(Arc::clone(&shared)));
        Ok(Producer {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues `record` for sending and returns its [`DeliveryFuture`].
    ///
    /// Waits while the buffer is full (it drains as batches are acknowledged or expire).
    /// Fails at once, without queueing, when the topic or partition does not exist, the
    /// record is too large, or the producer is closed. Records sent one after the other to
    /// one partition are written in that order.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.handle.shared;
        shared.check_open()?;
        let partition_count = shared
            .partition_count(&record.topic, record.partition)
            .await?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let topic = record.topic;
        let chosen = record.partition;
        let record = Record {
            timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        let reserved_bytes = record_bytes(&record);
        let limit = shared.config.buffer_bytes_max.min(BATCH_BYTES_MAX);
        if reserved_bytes > limit {
            return Err(ClientError::RecordTooLarge {
                bytes: reserved_bytes,
                limit,
            });
        }
        shared.reserve(reserved_bytes).await?;
        let (sender, receiver) = oneshot::channel();
        let appended = {
            let mut state = shared.lock();
            if state.closing {
                shared.buffer.add_permits(reserved_bytes);
                return Err(closed());
            }
            let partition = match (chosen, &record.key) {
                (Some(partition), _) => partition,
                (None, Some(key)) => partition_for_key(key, partition_count),
                (None, None) => state.sticky.partition(&topic, partition_count),
            };
            let topic_partition = TopicPartition::new(topic, partition);
            let now = Instant::now();
            let appended =
                state
                    .accumulator
                    .append(&topic_partition, &record, reserved_bytes, sender, now)?;
            if appended.sealed {
                state.sticky.batch_sealed(&topic_partition.topic, partition);
            }
            appended
        };
        if appended.opened || appended.sealed {
            shared.wake.notify_one();
        }
        Ok(DeliveryFuture { receiver })
    }

    /// Queues `records` for `partition` of `topic`, in the order given, with one outcome
    /// for them all, and returns it.
    ///
    /// This is [`Producer::send`] for callers that already hold many records of one
    /// partition (a load generator, a bridge from another log): batching, retries, order and
    /// idempotence are the same, but the cost per record is only its encoding, with no
    /// future, buffer reservation or lock per record. The records are split into batches
    /// where a batch fills up (`batch_bytes_max`); records of other calls to the same
    /// partition never land between them within a batch. Timestamps are as given ([`now_ms`] gives the one `send` would stamp).
    ///
    /// Waits while the buffer is full. Fails at once, without queueing, when the topic or
    /// partition does not exist, when the records together are larger than the buffer
    /// (`buffer_bytes_max`), when one of them breaks a limit of the batch format, or when
    /// the producer is closed. An empty `records` is delivered at once.
    ///
    /// ```no_run
    /// use mq_client::protocol::Record;
    /// use mq_client::{Client, ClientConfig, Producer, ProducerConfig};
    ///
    /// # async fn example() -> Result<(), mq_client::ClientError> {
    /// let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
    /// let producer = Producer::new(client, ProducerConfig::default())?;
    /// let now = mq_client::producer::now_ms();
    /// let records = (0..1000)
    ///     .map(|n| Record::new(now, None, Some(format!("reading {n}").into())))
    ///     .collect();
    /// let written = producer.send_batch("sensors", 0, records).await?.await?;
    /// println!("{} records from offset {}", written.record_count(), written.first_offset());
    /// producer.close().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<BatchDeliveryFuture, ClientError> {
        let shared = &self.handle.shared;
        shared.check_open()?;
        shared.partition_count(topic, Some(partition)).await?;
        let mut reserved = Vec::with_capacity(records.len());
        for record in &records {
            mq_protocol::record::check_limits(record)
                .map_err(|error| ClientError::InvalidRecord { error })?;
            reserved.push(record_bytes(record));
        }
        let total: usize = reserved.iter().sum();
        let limit = shared.config.buffer_bytes_max;
        if total > limit {
            return Err(ClientError::GroupTooLarge {
                bytes: total,
                limit,
            });
        }
        let topic_partition = TopicPartition::new(topic, partition);
        let (group, delivery) = GroupOutcome::new(topic_partition.topic.clone(), partition);
        if records.is_empty() {
            group.appended(0);
            return Ok(delivery);
        }
        shared.reserve(total).await?;
        let appended = {
            let mut state = shared.lock();
            if state.closing {
                shared.buffer.add_permits(total);
                return Err(closed());
            }
            let now = Instant::now();
            let appended =
                state
                    .accumulator
                    .append_group(&topic_partition, &records, &reserved, &group, now);
            if appended.sealed {
                state.sticky.batch_sealed(topic, partition);
            }
            appended
        };
        if appended.opened || appended.sealed {
            shared.wake.notify_one();
        }
        Ok(delivery)
    }

    /// Sends every record queued so far without waiting for linger, and waits until each
    /// is acknowledged or has failed (the outcome of each is in its [`DeliveryFuture`]).
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        let target = shared.lock().accumulator.flush();
        shared.wake.notify_one();
        shared
            .wait_for(|state| state.accumulator.is_done_below(target))
            .await;
    }

    /// Stops taking records, sends everything queued, waits for every outcome, and stops the
    /// sender task. Later sends fail with [`ClientError::Closed`].
    pub async fn close(&self) {
        let shared = &self.handle.shared;
        shared.begin_close();
        shared.wait_for(|state| state.accumulator.is_empty()).await;
        let task = self
            .handle
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // State stays consistent across a panic in a delivery callback: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `bytes` of buffer space, waiting while the buffer is full; given back when the
    /// batch holding them finishes. The caller checked `bytes` against the buffer's size,
    /// itself below `u32::MAX` (`validate`).
    async fn reserve(&self, bytes: usize) -> Result<(), ClientError> {
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        match self.buffer.acquire_many(permits).await {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(_) => Err(closed()),
        }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        if self.lock().closing {
            return Err(closed());
        }
        Ok(())
    }

    fn begin_close(&self) {
        {
            let mut state = self.lock();
            state.closing = true;
            state.accumulator.flush_all();
        }
        self.wake.notify_one();
    }

    /// The topic's partition count, checking an explicit partition against it (with fresh
    /// metadata, in case partitions were just added).
    async fn partition_count(
        &self,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<i32, ClientError> {
        let mut description = self.client.topic(topic).await?;
        if let Some(partition) = partition {
            if description.partition(partition).is_none() {
                self.client.refresh_topic(topic).await?;
                description = self.client.topic(topic).await?;
            }
            if description.partition(partition).is_none() {
                return Err(ClientError::UnknownPartition {
                    topic: topic.to_string(),
                    partition,
                });
            }
        }
        match description.partition_count() {
            0 => Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            }),
            count => Ok(count),
        }
    }

    /// Waits until `done` holds, re-checking whenever a batch finishes.
    async fn wait_for(&self, done: impl Fn(&State) -> bool) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a finish in between is not missed.
            notified.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// Starts a metadata refresh in the background unless one runs or ran within the retry
    /// backoff; the sender is woken when it ends.
    fn request_refresh(self: &Arc<Self>, state: &mut State) {
        let recent = state
            .refreshed_at
            .is_some_and(|at| at.elapsed() < self.config.retry_backoff);
        if state.refreshing || recent {
            return;
        }
        state.refreshing = true;
        state.refreshed_at = Some(Instant::now());
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = shared.client.refresh_metadata().await {
                tracing::debug!(%error, "metadata refresh failed");
            }
            shared.lock().refreshing = false;
            shared.wake.notify_one();
        });
    }
}

/// The sender task: drains ready batches, sends them grouped by leader, sleeps until the next
/// batch is due or something changes. Ends once the producer is closing and empty.
async fn run_sender(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let metadata = shared.client.metadata();
        let max_in_flight = shared.config.max_in_flight;
        let (requests, next_wakeup) = {
            let mut state = shared.lock();
            state.accumulator.expire(now);
            if state.closing && state.accumulator.is_empty() {
                drop(state);
                shared.progress.notify_waiters();
                return;
            }
            let mut unrouted = false;
            let State {
                accumulator,
                in_flight,
                ..
            } = &mut *state;
            let drained = accumulator.drain(now, |topic_partition| {
                match metadata.route(&topic_partition.topic, topic_partition.partition) {
                    Route::Leader(leader) => {
                        let busy = in_flight.get(&leader.address).copied().unwrap_or(0);
                        (busy < max_in_flight).then_some(leader)
                    }
                    Route::NoLeader | Route::UnknownTopic | Route::UnknownPartition => {
                        unrouted = true;
                        None
                    }
                }
            });
            let mut next_wakeup = drained.next_wakeup;
            if unrouted {
                shared.request_refresh(&mut state);
                let retry_at = now + shared.config.retry_backoff;
                next_wakeup = Some(next_wakeup.map_or(retry_at, |next| next.min(retry_at)));
            }
            let mut requests: HashMap<String, Vec<(Leader, Batch)>> = HashMap::new();
            for (leader, batch) in drained.batches {
                let topic_partition = &batch.topic_partition;
                state
                    .sticky
                    .batch_sealed(&topic_partition.topic, topic_partition.partition);
                requests
                    .entry(leader.address.clone())
                    .or_default()
                    .push((leader, batch));
            }
            let mut turns = Vec::with_capacity(requests.len());
            for (address, batches) in requests {
                *state.in_flight.entry(address.clone()).or_default() += 1;
                let (done, next) = oneshot::channel();
                let previous = state.turns.insert(address.clone(), next);
                turns.push((address, batches, Turn { previous, done }));
            }
            (turns, next_wakeup)
        };
        for (address, batches, turn) in requests {
            tokio::spawn(produce(Arc::clone(&shared), address, batches, turn));
        }
        // The progress of expiries and completions above may unblock flush waiters.
        shared.progress.notify_waiters();
        match next_wakeup {
            Some(at) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// A request's place in the order of the requests to one broker.
#[derive(Debug)]
struct Turn {
    /// Resolves (or fails: the previous task ended) once the previous request to the broker
    /// was queued on its connection; `None` for the first request to a broker.
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped once this request is queued on its connection (or given up), to let the next
    /// one go.
    done: oneshot::Sender<()>,
}

/// Runs `future`, a request on a connection, and drops `done` once it has been polled once:
/// a request is queued on its connection on its first poll (unless the connection's queue
/// is full; then it waits in a fair queue, which keeps the order too).
async fn after_first_poll<F: Future>(future: F, done: oneshot::Sender<()>) -> F::Output {
    let mut future = pin!(future);
    let first = std::future::poll_fn(|context| Poll::Ready(future.as_mut().poll(context))).await;
    drop(done);
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => future.await,
    }
}

/// Sends one Produce request with `batches` to the leader at `address`, after the previous
/// request to it was queued, and settles each batch: completed, retried or failed.
async fn produce(shared: Arc<Shared>, address: String, batches: Vec<(Leader, Batch)>, turn: Turn) {
    if let Some(previous) = turn.previous {
        // An error only says the previous task ended without queueing: nothing to wait for.
        let _ = previous.await;
    }
    let done = turn.done;
    let config = &shared.config;
    let request_timeout = shared.client.config().request_timeout;
    let request = produce_request(config.acks, request_timeout, &batches);
    let deadline = batches
        .iter()
        .map(|(_, batch)| batch.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    // A request gets at most the time its latest batch has left.
    let timeout = deadline
        .saturating_duration_since(Instant::now())
        .min(request_timeout)
        .max(Duration::from_millis(1));
    let outcome = match shared.client.connection(&address).await {
        Ok(connection) if config.acks == Acks::None => {
            after_first_poll(connection.send_no_response(request), done)
                .await
                .map(|()| None)
        }
        Ok(connection) => {
            match after_first_poll(connection.request_with_timeout(request, timeout), done).await {
                Ok(Response::Produce(response)) => Ok(Some(response)),
                Ok(_) => Err(ClientError::UnexpectedResponse { api: "Produce" }),
                Err(error) => Err(error),
            }
        }
        Err(error) => {
            drop(done);
            Err(error)
        }
    };
    let now = Instant::now();
    let mut state = shared.lock();
    let mut needs_metadata = false;
    let mut settle =
        |state: &mut State, batch: Batch, result: Result<Option<i64>, ClientError>| match result {
            Ok(base_offset) => state.accumulator.complete(batch, base_offset),
            Err(error) if error.is_retriable() => {
                tracing::debug!(partition = %batch.topic_partition, %error, "retrying batch");
                needs_metadata |= error.needs_metadata();
                state
                    .accumulator
                    .retry(batch, error, now, config.retry_backoff);
            }
            Err(error) => {
                tracing::debug!(partition = %batch.topic_partition, %error, "batch failed");
                state.accumulator.fail(batch, &error);
            }
        };
    match outcome {
        Ok(None) => {
            for (_, batch) in batches {
                settle(&mut state, batch, Ok(None));
            }
        }
        Ok(Some(response)) => {
            let mut results = HashMap::new();
            for topic in response.topics {
                for partition in topic.partitions {
                    let result = if partition.error_code == ErrorCode::NONE {
                        Ok(Some(partition.base_offset))
                    } else {
                        Err(ClientError::broker(
                            partition.error_code,
                            partition.error_message,
                        ))
                    };
                    results.insert(
                        TopicPartition::new(topic.name.clone(), partition.partition),
                        result,
                    );
                }
            }
            for (_, batch) in batches {
                let result = results
                    .remove(&batch.topic_partition)
                    .unwrap_or(Err(ClientError::UnexpectedResponse { api: "Produce" }));
                settle(&mut state, batch, result);
            }
        }
        Err(error) => {
            for (_, batch) in batches {
                settle(&mut state, batch, Err(error.clone()));
            }
        }
    }
    if let Some(count) = state.in_flight.get_mut(&address) {
        *count = count.saturating_sub(1);
    }
    if needs_metadata {
        shared.request_refresh(&mut state);
    }
    drop(state);
    shared.wake.notify_one();
    shared.progress.notify_waiters();
}

/// The Produce request carrying `batches`, grouped by topic.
fn produce_request(acks: Acks, timeout: Duration, batches: &[(Leader, Batch)]) -> Request {
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for (leader, batch) in batches {
        let partition = ProducePartition {
            partition: batch.topic_partition.partition,
            leader_epoch: leader.epoch,
            records: bytes::BytesMut::from(&batch.records[..]),
        };
        match topics
            .iter_mut()
            .find(|topic| topic.name == batch.topic_partition.topic)
        {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(ProduceTopic {
                name: batch.topic_partition.topic.clone(),
                partitions: vec![partition],
            }),
        }
    }
    Request::Produce(ProduceRequest {
        acks: acks.to_wire(),
        timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
        topics,
    })
}

/// An estimate of the bytes a record takes in a batch, used to reserve buffer space: its
/// fields plus the most its varints and fixed fields may need.
fn record_bytes(record: &Record) -> usize {
    const RECORD_OVERHEAD: usize = 32;
    const HEADER_OVERHEAD: usize = 10;
    let field = |value: &Option<Bytes>| value.as_ref().map_or(0, Bytes::len);
    let headers: usize = record
        .headers
        .iter()
        .map(|header| header.key.len() + field(&header.value) + HEADER_OVERHEAD)
        .sum();
    RECORD_OVERHEAD + field(&record.key) + field(&record.value) + headers
}

fn closed() -> ClientError {
    ClientError::Closed {
        what: "producer".to_string(),
    }
}

/// A producer id in `0..i64::MAX`, random enough that two producers writing to one partition
/// do not share one (the broker tells producers apart only by it): std's randomly keyed
/// hasher over the time, the process id and a counter.
fn random_producer_id() -> i64 {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let count = CREATED.fetch_add(1, Ordering::Relaxed);
    let hash = RandomState::new().hash_one((nanos, std::process::id(), count));
    let id = (hash >> 1) % i64::MAX.unsigned_abs();
    i64::try_from(id).expect("below i64::MAX")
}

/// Milliseconds since the Unix epoch.
/// Milliseconds since the Unix epoch, as [`Producer::send`] stamps records that have no
/// timestamp: for records given to [`Producer::send_batch`], which are sent as they are.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        ProducerConfig::default().validate().unwrap();
        let config = ProducerConfig {
            buffer_bytes_max: 10,
            ..ProducerConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid buffer_bytes_max: must be at least batch_bytes_max and below 4 GiB"
        );
        let config = ProducerConfig {
            batch_bytes_max: 0,
            ..ProducerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn idempotence_bounds_the_batches_in_flight_per_partition() {
        let default = ProducerConfig::default();
        assert!(default.is_idempotent());
        assert_eq!(default.in_flight_per_partition(), 5);
        for bad in [0, 6] {
            let config = ProducerConfig {
                max_in_flight_per_partition: bad,
                ..ProducerConfig::default()
            };
            assert_eq!(
                config.validate().unwrap_err().to_string(),
                "invalid max_in_flight_per_partition: must be between 1 and 5 with idempotence"
            );
        }
        let without = ProducerConfig {
            idempotence: false,
            max_in_flight_per_partition: 6,
            ..ProducerConfig::default()
        };
        without.validate().unwrap();
        assert_eq!(without.in_flight_per_partition(), 1, "forced to one");
        let acks_none = ProducerConfig {
            acks: Acks::None,
            ..ProducerConfig::default()
        };
        assert!(!acks_none.is_idempotent(), "nothing comes back to act on");
        assert_eq!(acks_none.in_flight_per_partition(), 1);
    }

    #[test]
    fn producer_ids_are_non_negative_and_differ() {
        let ids: std::collections::BTreeSet<i64> = (0..100).map(|_| random_producer_id()).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| (0..i64::MAX).contains(id)));
    }

    #[test]
    fn acks_have_kafkas_wire_values() {
        assert_eq!(Acks::None.to_wire(), 0);
        assert_eq!(Acks::Leader.to_wire(), 1);
        assert_eq!(Acks::All.to_wire(), -1);
        assert_eq!(Acks::default(), Acks::All);
    }

    #[test]
    fn record_estimates_cover_the_encoded_size() {
        let record = Record {
            timestamp: i64::MAX,
            key: Some(Bytes::from(vec![0; 300])),
            value: Some(Bytes::from(vec![0; 70_000])),
            headers: vec![Header::new("a-header", Some(Bytes::from(vec![0; 200])))],
        };
        let mut builder = mq_protocol::BatchBuilder::new(Compression::None);
        builder.append(&Record::new(0, None, None)).unwrap();
        let before = builder.estimated_bytes();
        builder.append(&record).unwrap();
        let encoded = builder.estimated_bytes() - before;
        assert!(
            record_bytes(&record) >= encoded,
            "{} < {encoded}",
            record_bytes(&record)
        );
    }
}
