//! The producer's record accumulator: records gathered into batches per partition, and the
//! bookkeeping of which batch may be sent when.
//!
//! ```text
//!  append ──► open batch (BatchBuilder) ──seal──► sealed queue ──drain──► in flight
//!                  │ full, or linger passed,           ▲                     │
//!                  │ or flush/close                    └──── retry (front) ◄─┤
//!                  ▼                                                         ▼
//!            expire (delivery timeout)                            complete / fail
//! ```
//!
//! Per partition at most one batch is in flight, and a batch to retry goes back to the front
//! of its queue, so records of one partition are written in the order they were appended,
//! retries included. Every batch holds the buffer bytes its records reserved; they go back to
//! the buffer semaphore when the batch completes or fails, which is what bounds the
//! producer's memory.
//!
//! Time is passed in (`now`), never read here, so the rules are tested without a clock. There
//! is no I/O here either: the producer's sender task decides where batches go.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mq_protocol::{BatchBuilder, Compression, Record};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use crate::client::TopicPartition;
use crate::error::ClientError;
use crate::producer::RecordMetadata;

/// The accumulator's settings, taken from the producer's.
#[derive(Clone, Debug)]
pub(crate) struct AccumulatorConfig {
    /// How long an open batch waits for more records before it may be sent.
    pub(crate) linger: Duration,
    /// A batch is sealed once its records reach this size.
    pub(crate) batch_bytes_max: usize,
    /// How batches are compressed when sealed.
    pub(crate) compression: Compression,
    /// How long a batch may take from its first record to its acknowledgement.
    pub(crate) delivery_timeout: Duration,
}

/// Where one record's outcome goes.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The record's timestamp, reported back in its metadata.
    pub(crate) timestamp: i64,
    /// Completed once the record is acknowledged or has failed.
    pub(crate) sender: oneshot::Sender<Result<RecordMetadata, ClientError>>,
}

/// A sealed batch on its way to its partition's leader.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Creation order; flush waits for every batch below an id.
    pub(crate) id: u64,
    /// The partition.
    pub(crate) topic_partition: TopicPartition,
    /// The sealed batch, as sent (and re-sent on retry).
    pub(crate) records: Bytes,
    /// One delivery per record, in offset order.
    deliveries: Vec<Delivery>,
    /// Buffer bytes the records reserved.
    reserved_bytes: usize,
    /// When the batch fails if not acknowledged.
    pub(crate) deadline: Instant,
    /// Not sent again before this, after a retriable error.
    retry_at: Option<Instant>,
    /// The error of the last attempt, reported if the batch expires before the next.
    last_error: Option<ClientError>,
}

/// A batch still taking records.
#[derive(Debug)]
struct OpenBatch {
    /// Creation order.
    id: u64,
    /// Encodes the records as they come.
    builder: BatchBuilder,
    /// When the first record came; linger and delivery timeout count from here.
    created: Instant,
    /// One delivery per record.
    deliveries: Vec<Delivery>,
    /// Buffer bytes the records reserved.
    reserved_bytes: usize,
}

/// The batches of one partition.
#[derive(Debug, Default)]
struct PartitionQueue {
    /// The batch taking records, if any.
    open: Option<OpenBatch>,
    /// Sealed batches waiting to be sent, oldest first.
    sealed: VecDeque<Batch>,
    /// Whether a batch of this partition is in flight (then nothing else is sent).
    in_flight: bool,
}

/// What [`Accumulator::append`] did besides adding the record.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Appended {
    /// A new batch was opened (so the sender should arm its linger timer).
    pub(crate) opened: bool,
    /// A batch of the partition was sealed (so it can be sent, and records without a key
    /// should move to another partition).
    pub(crate) sealed: bool,
}

/// What [`Accumulator::drain`] found.
#[derive(Debug)]
pub(crate) struct Drained<R> {
    /// Batches to send now, each with the route it was given.
    pub(crate) batches: Vec<(R, Batch)>,
    /// When something not ready now becomes ready (linger, retry backoff, expiry).
    pub(crate) next_wakeup: Option<Instant>,
}

/// Records by partition, batched. See the module documentation.
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// The settings.
    config: AccumulatorConfig,
    /// The queues, by partition.
    partitions: BTreeMap<TopicPartition, PartitionQueue>,
    /// The id of the next batch opened.
    next_batch_id: u64,
    /// Ids of batches opened and not yet completed or failed.
    incomplete: BTreeSet<u64>,
    /// Open batches with an id below this are sent without waiting for linger (flush,
    /// close).
    force_below: u64,
    /// The producer's buffer, given back the bytes of every finished batch.
    buffer: Arc<Semaphore>,
}

impl Accumulator {
    pub(crate) fn new(config: AccumulatorConfig, buffer: Arc<Semaphore>) -> Accumulator {
        Accumulator {
            config,
            partitions: BTreeMap::new(),
            next_batch_id: 0,
            incomplete: BTreeSet::new(),
            force_below: 0,
            buffer,
        }
    }

    /// Appends `record` to the open batch of its partition, sealing that batch first if the
    /// record would take it over the size target, and after if the batch reached it.
    ///
    /// `reserved_bytes` were taken from the buffer for this record; on error they are given
    /// back and the delivery is dropped.
    pub(crate) fn append(
        &mut self,
        topic_partition: &TopicPartition,
        record: &Record,
        reserved_bytes: usize,
        sender: oneshot::Sender<Result<RecordMetadata, ClientError>>,
        now: Instant,
    ) -> Result<Appended, ClientError> {
        let mut appended = Appended::default();
        let queue = self.partitions.entry(topic_partition.clone()).or_default();
        let would_overflow = queue.open.as_ref().is_some_and(|open| {
            !open.builder.is_empty()
                && open.builder.estimated_bytes_with(record) > self.config.batch_bytes_max
        });
        if would_overflow {
            seal_open(
                queue,
                topic_partition,
                &self.config,
                &mut self.incomplete,
                &self.buffer,
            );
            appended.sealed = true;
        }
        let open = match &mut queue.open {
            Some(open) => open,
            None => {
                let id = self.next_batch_id;
                self.next_batch_id += 1;
                self.incomplete.insert(id);
                appended.opened = true;
                let capacity = self
                    .config
                    .batch_bytes_max
                    .min(reserved_bytes.max(1024) * 16);
                queue.open.insert(OpenBatch {
                    id,
                    builder: BatchBuilder::with_capacity(self.config.compression, capacity),
                    created: now,
                    deliveries: Vec::new(),
                    reserved_bytes: 0,
                })
            }
        };
        if let Err(error) = open.builder.append(record) {
            self.buffer.add_permits(reserved_bytes);
            if open.builder.is_empty() {
                let id = open.id;
                queue.open = None;
                self.incomplete.remove(&id);
            }
            return Err(ClientError::InvalidRecord { error });
        }
        open.deliveries.push(Delivery {
            timestamp: record.timestamp,
            sender,
        });
        open.reserved_bytes += reserved_bytes;
        if open.builder.estimated_bytes() >= self.config.batch_bytes_max {
            seal_open(
                queue,
                topic_partition,
                &self.config,
                &mut self.incomplete,
                &self.buffer,
            );
            appended.sealed = true;
        }
        Ok(appended)
    }

    /// Takes the batches that may be sent now: per partition not in flight, the oldest
    /// sealed batch (once its retry backoff passed), or else the open batch once its linger
    /// passed (or a flush wants it). `route` decides where a partition's batch goes; `None`
    /// leaves the partition's batches where they are (no leader known, broker busy).
    pub(crate) fn drain<R>(
        &mut self,
        now: Instant,
        mut route: impl FnMut(&TopicPartition) -> Option<R>,
    ) -> Drained<R> {
        let mut drained = Drained {
            batches: Vec::new(),
            next_wakeup: None,
        };
        let mut wake_at = |at: Instant| {
            drained.next_wakeup = Some(drained.next_wakeup.map_or(at, |next| next.min(at)));
        };
        let mut taken = Vec::new();
        for (topic_partition, queue) in &mut self.partitions {
            // Expiry deadlines matter whether or not the partition can send.
            if let Some(open) = &queue.open {
                wake_at(open.created + self.config.delivery_timeout);
            }
            for batch in &queue.sealed {
                wake_at(batch.deadline);
            }
            if queue.in_flight {
                continue;
            }
            let ready = match (queue.sealed.front(), &queue.open) {
                (Some(batch), _) => match batch.retry_at {
                    Some(retry_at) if retry_at > now => {
                        wake_at(retry_at);
                        false
                    }
                    _ => true,
                },
                (None, Some(open)) => {
                    let linger_end = open.created + self.config.linger;
                    let forced = open.id < self.force_below;
                    if !forced && linger_end > now {
                        wake_at(linger_end);
                    }
                    forced || linger_end <= now
                }
                (None, None) => false,
            };
            if !ready {
                continue;
            }
            let Some(target) = route(topic_partition) else {
                continue;
            };
            if queue.sealed.is_empty() {
                seal_open(
                    queue,
                    topic_partition,
                    &self.config,
                    &mut self.incomplete,
                    &self.buffer,
                );
            }
            if let Some(batch) = queue.sealed.pop_front() {
                queue.in_flight = true;
                taken.push((target, batch));
            }
        }
        drained.batches = taken;
        drained
    }

    /// Fails every batch not in flight whose delivery timeout passed, with its last error
    /// (or a timeout when it never got one).
    pub(crate) fn expire(&mut self, now: Instant) {
        let timeout = self.config.delivery_timeout;
        let mut expired = Vec::new();
        for queue in self.partitions.values_mut() {
            if queue
                .open
                .as_ref()
                .is_some_and(|open| open.created + timeout <= now)
            {
                expired.extend(
                    queue
                        .open
                        .take()
                        .map(|open| (open.id, open.deliveries, open.reserved_bytes, None)),
                );
            }
            while queue
                .sealed
                .front()
                .is_some_and(|batch| batch.deadline <= now)
            {
                if let Some(batch) = queue.sealed.pop_front() {
                    expired.push((
                        batch.id,
                        batch.deliveries,
                        batch.reserved_bytes,
                        batch.last_error,
                    ));
                }
            }
        }
        for (id, deliveries, reserved_bytes, last_error) in expired {
            let error = last_error.unwrap_or(ClientError::Timeout {
                operation: "delivery",
                timeout,
            });
            fail_deliveries(deliveries, &error);
            self.finish(id, reserved_bytes);
        }
        self.partitions
            .retain(|_, queue| queue.open.is_some() || !queue.sealed.is_empty() || queue.in_flight);
    }

    /// Completes an in-flight batch: its records got offsets from `base_offset` on (or -1
    /// each, for `None`: acks=0).
    pub(crate) fn complete(&mut self, batch: Batch, base_offset: Option<i64>) {
        self.unmute(&batch.topic_partition);
        let topic_partition = &batch.topic_partition;
        for (index, delivery) in batch.deliveries.into_iter().enumerate() {
            let offset = match base_offset {
                Some(base) => base + i64::try_from(index).unwrap_or(i64::MAX),
                None => -1,
            };
            let _ = delivery.sender.send(Ok(RecordMetadata {
                topic: topic_partition.topic.clone(),
                partition: topic_partition.partition,
                offset,
                timestamp: delivery.timestamp,
            }));
        }
        self.finish(batch.id, batch.reserved_bytes);
    }

    /// Fails an in-flight batch: every record gets `error`.
    pub(crate) fn fail(&mut self, batch: Batch, error: &ClientError) {
        self.unmute(&batch.topic_partition);
        fail_deliveries(batch.deliveries, error);
        self.finish(batch.id, batch.reserved_bytes);
    }

    /// Puts an in-flight batch that failed with a retriable `error` back at the front of its
    /// queue, to be sent again after `backoff`; fails it instead when that would pass its
    /// deadline.
    pub(crate) fn retry(
        &mut self,
        mut batch: Batch,
        error: ClientError,
        now: Instant,
        backoff: Duration,
    ) {
        let retry_at = now + backoff;
        if retry_at >= batch.deadline {
            self.fail(batch, &error);
            return;
        }
        batch.retry_at = Some(retry_at);
        batch.last_error = Some(error);
        let queue = self
            .partitions
            .entry(batch.topic_partition.clone())
            .or_default();
        queue.in_flight = false;
        queue.sealed.push_front(batch);
    }

    /// Makes every batch opened so far sendable without waiting for linger, and returns the
    /// id below which [`Accumulator::is_done_below`] tells when they are all finished.
    pub(crate) fn flush(&mut self) -> u64 {
        self.force_below = self.force_below.max(self.next_batch_id);
        self.next_batch_id
    }

    /// Sends everything without waiting for linger, from now on (close).
    pub(crate) fn flush_all(&mut self) {
        self.force_below = u64::MAX;
    }

    /// Whether every batch with an id below `target` completed or failed.
    pub(crate) fn is_done_below(&self, target: u64) -> bool {
        self.incomplete.first().is_none_or(|first| *first >= target)
    }

    /// Whether no batch is open, queued or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.incomplete.is_empty()
    }

    fn unmute(&mut self, topic_partition: &TopicPartition) {
        if let Some(queue) = self.partitions.get_mut(topic_partition) {
            queue.in_flight = false;
        }
    }

    fn finish(&mut self, id: u64, reserved_bytes: usize) {
        self.incomplete.remove(&id);
        self.buffer.add_permits(reserved_bytes);
    }
}

/// Seals the partition's open batch onto its sealed queue. A batch that cannot be sealed
/// (compression failed, too large once compressed) fails its records instead.
fn seal_open(
    queue: &mut PartitionQueue,
    topic_partition: &TopicPartition,
    config: &AccumulatorConfig,
    incomplete: &mut BTreeSet<u64>,
    buffer: &Semaphore,
) {
    let Some(open) = queue.open.take() else {
        return;
    };
    match open.builder.seal(0) {
        Ok(records) => queue.sealed.push_back(Batch {
            id: open.id,
            topic_partition: topic_partition.clone(),
            records,
            deliveries: open.deliveries,
            reserved_bytes: open.reserved_bytes,
            deadline: open.created + config.delivery_timeout,
            retry_at: None,
            last_error: None,
        }),
        Err(error) => {
            tracing::warn!(partition = %topic_partition, %error, "cannot seal batch");
            fail_deliveries(open.deliveries, &ClientError::InvalidRecord { error });
            incomplete.remove(&open.id);
            buffer.add_permits(open.reserved_bytes);
        }
    }
}

fn fail_deliveries(deliveries: Vec<Delivery>, error: &ClientError) {
    for delivery in deliveries {
        let _ = delivery.sender.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::record::records;

    type Receiver = oneshot::Receiver<Result<RecordMetadata, ClientError>>;

    struct Setup {
        accumulator: Accumulator,
        buffer: Arc<Semaphore>,
        start: Instant,
    }

    fn setup(batch_bytes_max: usize) -> Setup {
        let buffer = Arc::new(Semaphore::new(0));
        let config = AccumulatorConfig {
            linger: Duration::from_millis(5),
            batch_bytes_max,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(30),
        };
        Setup {
            accumulator: Accumulator::new(config, Arc::clone(&buffer)),
            buffer,
            start: Instant::now(),
        }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    impl Setup {
        fn at(&self, millis: u64) -> Instant {
            self.start + Duration::from_millis(millis)
        }

        fn append(&mut self, partition: i32, value: &str, millis: u64) -> (Appended, Receiver) {
            let (sender, receiver) = oneshot::channel();
            let record = Record::new(1000, None, Some(Bytes::copy_from_slice(value.as_bytes())));
            let now = self.at(millis);
            let appended = self
                .accumulator
                .append(&tp(partition), &record, 10, sender, now)
                .unwrap();
            (appended, receiver)
        }

        fn drain(&mut self, millis: u64) -> Drained<()> {
            let now = self.at(millis);
            self.accumulator.drain(now, |_| Some(()))
        }
    }

    fn values(batch: &Batch) -> Vec<String> {
        records(&batch.records)
            .unwrap()
            .map(|record| String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn records_of_a_partition_stay_in_order_across_batches() {
        // Three records per batch: a header, then 9 bytes per record ("v0": 7 bytes of
        // fields and 2 of value), with slack below a fourth record.
        let mut setup = setup(61 + 3 * 9 + 4);
        for index in 0..10 {
            setup.append(0, &format!("v{index}"), 0);
        }
        let mut seen = Vec::new();
        let mut millis = 10;
        loop {
            let drained = setup.drain(millis);
            assert!(
                drained.batches.len() <= 1,
                "one batch in flight per partition"
            );
            let Some(((), batch)) = drained.batches.into_iter().next() else {
                break;
            };
            seen.extend(values(&batch));
            assert!(
                setup.drain(millis).batches.is_empty(),
                "muted while in flight"
            );
            setup.accumulator.complete(batch, Some(0));
            millis += 1;
        }
        let expected: Vec<_> = (0..10).map(|index| format!("v{index}")).collect();
        assert_eq!(seen, expected);
        assert!(setup.accumulator.is_empty());
        assert_eq!(
            setup.buffer.available_permits(),
            100,
            "every reserved byte back"
        );
    }

    #[test]
    fn a_full_batch_is_sealed_and_sent_before_linger() {
        // Two records per batch: 8 bytes per one-letter record.
        let mut setup = setup(61 + 2 * 8 + 4);
        let (first, _) = setup.append(0, "a", 0);
        assert_eq!(
            first,
            Appended {
                opened: true,
                sealed: false
            }
        );
        let (second, _) = setup.append(0, "b", 0);
        assert!(!second.opened);
        let (third, _) = setup.append(0, "c", 0);
        assert_eq!(
            third,
            Appended {
                opened: true,
                sealed: true
            },
            "the third record does not fit: the batch is sealed, a new one opened"
        );
        let drained = setup.drain(0);
        assert_eq!(drained.batches.len(), 1, "sent at once, linger or not");
        assert_eq!(values(&drained.batches[0].1), ["a", "b"]);
    }

    #[test]
    fn an_open_batch_waits_for_linger() {
        let mut setup = setup(1 << 20);
        setup.append(0, "a", 0);
        let drained = setup.drain(4);
        assert!(drained.batches.is_empty());
        assert_eq!(drained.next_wakeup, Some(setup.at(5)));
        let drained = setup.drain(5);
        assert_eq!(drained.batches.len(), 1);
    }

    #[test]
    fn flush_sends_open_batches_at_once_and_tracks_them() {
        let mut setup = setup(1 << 20);
        setup.append(0, "a", 0);
        setup.append(1, "b", 0);
        let target = setup.accumulator.flush();
        setup.append(2, "c", 0);
        let drained = setup.drain(0);
        assert_eq!(
            drained.batches.len(),
            2,
            "the batch opened after the flush lingers"
        );
        assert!(!setup.accumulator.is_done_below(target));
        for ((), batch) in drained.batches {
            setup.accumulator.complete(batch, Some(7));
        }
        assert!(setup.accumulator.is_done_below(target));
        assert!(!setup.accumulator.is_empty());
    }

    #[test]
    fn deliveries_get_consecutive_offsets() {
        let mut setup = setup(1 << 20);
        let (_, first) = setup.append(0, "a", 0);
        let (_, second) = setup.append(0, "b", 0);
        let ((), batch) = setup.drain(10).batches.pop().unwrap();
        setup.accumulator.complete(batch, Some(41));
        let first = first.blocking_recv().unwrap().unwrap();
        let second = second.blocking_recv().unwrap().unwrap();
        assert_eq!((first.offset, second.offset), (41, 42));
        assert_eq!(
            (first.topic.as_str(), first.partition, first.timestamp),
            ("t", 0, 1000)
        );
    }

    #[test]
    fn a_retried_batch_goes_first_after_its_backoff() {
        let mut setup = setup(61 + 2 * 8 + 4);
        for value in ["a", "b", "c", "d"] {
            setup.append(0, value, 0);
        }
        let ((), first) = setup.drain(10).batches.pop().unwrap();
        assert_eq!(values(&first), ["a", "b"]);
        let error = ClientError::broker(mq_protocol::ErrorCode::NOT_LEADER_OR_FOLLOWER, None);
        setup
            .accumulator
            .retry(first, error, setup.at(10), Duration::from_millis(100));
        let drained = setup.drain(50);
        assert!(
            drained.batches.is_empty(),
            "nothing overtakes the batch in backoff"
        );
        assert_eq!(drained.next_wakeup, Some(setup.at(110)));
        let ((), again) = setup.drain(110).batches.pop().unwrap();
        assert_eq!(values(&again), ["a", "b"]);
    }

    #[test]
    fn expired_batches_fail_with_their_last_error() {
        let mut setup = setup(1 << 20);
        let (_, never_sent) = setup.append(0, "a", 0);
        let (_, retried) = setup.append(1, "b", 0);
        let ((), batch) = setup
            .accumulator
            .drain(setup.at(10), |topic_partition| {
                (topic_partition.partition == 1).then_some(())
            })
            .batches
            .pop()
            .unwrap();
        let error = ClientError::Disconnected {
            address: "h:1".into(),
        };
        setup
            .accumulator
            .retry(batch, error, setup.at(20), Duration::from_millis(100));
        setup.accumulator.expire(setup.at(29_999));
        assert!(!setup.accumulator.is_empty());
        setup.accumulator.expire(setup.at(30_000));
        assert!(setup.accumulator.is_empty());
        let never_sent = never_sent.blocking_recv().unwrap().unwrap_err();
        assert_eq!(never_sent.to_string(), "delivery timed out after 30000 ms");
        let retried = retried.blocking_recv().unwrap().unwrap_err();
        assert_eq!(retried.to_string(), "connection to h:1 closed");
        assert_eq!(setup.buffer.available_permits(), 20);
    }

    #[test]
    fn a_retry_past_the_deadline_fails_at_once() {
        let mut setup = setup(1 << 20);
        let (_, receiver) = setup.append(0, "a", 0);
        let ((), batch) = setup.drain(10).batches.pop().unwrap();
        let error = ClientError::broker(mq_protocol::ErrorCode::LEADER_NOT_AVAILABLE, None);
        setup
            .accumulator
            .retry(batch, error, setup.at(29_950), Duration::from_millis(100));
        assert!(setup.accumulator.is_empty());
        assert!(receiver.blocking_recv().unwrap().is_err());
    }

    #[test]
    fn unrouted_partitions_keep_their_batches() {
        let mut setup = setup(1 << 20);
        setup.append(0, "a", 0);
        setup.append(1, "b", 0);
        let drained = setup.accumulator.drain(setup.at(10), |topic_partition| {
            (topic_partition.partition == 0).then_some(topic_partition.partition)
        });
        assert_eq!(drained.batches.len(), 1);
        assert_eq!(drained.batches[0].0, 0);
        let drained = setup.drain(11);
        assert_eq!(drained.batches.len(), 1, "partition 1 goes once routable");
        assert_eq!(values(&drained.batches[0].1), ["b"]);
    }

    #[test]
    fn an_invalid_record_gives_its_bytes_back() {
        let mut setup = setup(1 << 20);
        let (sender, _receiver) = oneshot::channel();
        let mut record = Record::new(0, None, None);
        record.headers =
            vec![mq_protocol::Header::new("h", None); mq_protocol::limits::RECORD_HEADERS_MAX + 1];
        let result = setup
            .accumulator
            .append(&tp(0), &record, 10, sender, setup.at(0));
        assert!(matches!(result, Err(ClientError::InvalidRecord { .. })));
        assert_eq!(setup.buffer.available_permits(), 10);
        assert!(setup.accumulator.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append { partition: i32, size: usize },
        Advance(u64),
        Complete(usize),
        Retry(usize),
        Flush,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3i32, 0..40usize).prop_map(|(partition, size)| Op::Append { partition, size }),
            2 => (0..10u64).prop_map(Op::Advance),
            2 => any::<usize>().prop_map(Op::Complete),
            1 => any::<usize>().prop_map(Op::Retry),
            1 => Just(Op::Flush),
        ]
    }

    proptest::proptest! {
        /// Goal: whatever the interleaving of appends, drains, completions, retries and
        /// flushes, each partition's written records are, at every step, an in-order prefix
        /// of its appended records without duplicates, and in the end all of them, with every
        /// reserved byte back. Method: run random operations against a model of per-partition
        /// lists ("written" grows only when a batch completes).
        #[test]
        fn partitions_are_written_in_append_order(ops in proptest::collection::vec(op(), 1..200)) {
            let mut setup = setup(61 + 100);
            let mut appended: BTreeMap<i32, Vec<String>> = BTreeMap::new();
            let mut written: BTreeMap<i32, Vec<String>> = BTreeMap::new();
            let mut in_flight: Vec<Batch> = Vec::new();
            let mut millis = 0;
            let complete = |setup: &mut Setup, batch: Batch, written: &mut BTreeMap<i32, Vec<String>>| {
                let partition = batch.topic_partition.partition;
                written.entry(partition).or_default().extend(values(&batch));
                setup.accumulator.complete(batch, Some(0));
            };
            for op in ops {
                match op {
                    Op::Append { partition, size } => {
                        let count: usize = appended.values().map(Vec::len).sum();
                        let value = format!("{count}:{}", "x".repeat(size));
                        setup.append(partition, &value, millis);
                        appended.entry(partition).or_default().push(value);
                    }
                    Op::Advance(step) => {
                        millis += step;
                        for ((), batch) in setup.drain(millis).batches {
                            let partition = &batch.topic_partition;
                            assert!(
                                in_flight.iter().all(|other| &other.topic_partition != partition),
                                "two batches of one partition in flight"
                            );
                            in_flight.push(batch);
                        }
                    }
                    Op::Complete(index) if !in_flight.is_empty() => {
                        let batch = in_flight.remove(index % in_flight.len());
                        complete(&mut setup, batch, &mut written);
                    }
                    Op::Retry(index) if !in_flight.is_empty() => {
                        let batch = in_flight.remove(index % in_flight.len());
                        let error = ClientError::Disconnected { address: "h:1".into() };
                        let now = setup.at(millis);
                        setup.accumulator.retry(batch, error, now, Duration::from_millis(3));
                    }
                    Op::Complete(_) | Op::Retry(_) => {}
                    Op::Flush => {
                        setup.accumulator.flush();
                    }
                }
                for (partition, written) in &written {
                    let appended = &appended[partition];
                    proptest::prop_assert!(appended.starts_with(written), "{written:?} vs {appended:?}");
                }
            }
            setup.accumulator.flush_all();
            for batch in in_flight.drain(..) {
                complete(&mut setup, batch, &mut written);
            }
            while !setup.accumulator.is_empty() {
                millis += 5;
                for ((), batch) in setup.drain(millis).batches {
                    complete(&mut setup, batch, &mut written);
                }
            }
            appended.retain(|_, values| !values.is_empty());
            proptest::prop_assert_eq!(&written, &appended);
            let count: usize = appended.values().map(Vec::len).sum();
            proptest::prop_assert_eq!(setup.buffer.available_permits(), count * 10);
        }
    }
}
