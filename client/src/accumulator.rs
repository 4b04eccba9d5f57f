//! The producer's record accumulator: records gathered into batches per partition, and the
//! bookkeeping of which batch may be sent when.
//!
//! ```text
//!  append ──► open batch ──seal──► sealed queue ──drain──► in flight (at most N per partition)
//!                │                 (by batch id)  ▲           │
//!                │ full, or linger passed,        │           ├──► complete
//!                │ or flush/close                 │           ├──► fail
//!                ▼                                │           │
//!          expire (delivery timeout)              └─ retry ◄──┘  (sorted back in; the
//!                                                                 partition is held)
//! ```
//!
//! Sealing stamps a batch with the producer id, the partition's epoch and the sequence of its
//! first record (idempotence; without it the fields stay -1). A partition sends its batches
//! in id order, oldest first, at most `max_in_flight_per_partition` at a time (one without
//! idempotence), and only one until a batch of its current epoch was acknowledged: a broker
//! that knows nothing of the epoch yet accepts whatever sequence comes first. Answers come
//! back in any order, so the limit also bounds the *window*: every batch sent since the
//! oldest one not yet settled (in flight, or queued again for a retry). The broker
//! deduplicates against a producer's last five batches, and a retry of that oldest batch
//! must still be among them.
//!
//! When a batch fails, its partition is *held*: nothing more of it is sent until every batch
//! of it in flight has settled. Retried batches go back into the sealed queue sorted by id,
//! so once the hold ends the broker sees them again in sequence order; a later batch that
//! reached it before an earlier one was refused (`OUT_OF_ORDER_SEQUENCE_NUMBER`) and is
//! simply resent. When the broker refuses the partition's oldest unsettled batch as out of
//! order, it misses sequences that nothing will resend (a batch failed for good or expired):
//! the partition moves to a new epoch and, once nothing of it is in flight, its queued
//! batches are renumbered from sequence 0 (header fields patched, CRC recomputed). The broker
//! starts afresh on a new epoch. Renumbering only after that refusal, rather than as soon as
//! a batch fails, means a queued batch whose acknowledgement was lost is first resent under
//! its old numbers, where the broker recognises it as a duplicate.
//!
//! Every batch holds the buffer bytes its records reserved; they go back to the buffer
//! semaphore when the batch completes or fails, which is what bounds the producer's memory.
//! The memory of an acknowledged batch is kept, a few buffers at most, for the next batches
//! to encode into ([`BatchBuffers`]).
//!
//! Time is passed in (`now`), never read here, so the rules are tested without a clock. There
//! is no I/O here either: the producer's sender task decides where batches go.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_protocol::batch::{self, field};
use mq_protocol::{BatchBuilder, Compression, ErrorCode, Record};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use crate::batch_buffers::BatchBuffers;
use crate::client::TopicPartition;
use crate::delivery::{Delivery, GroupOutcome, Sink};
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
    /// The idempotent producer id stamped on every batch with an epoch and sequences; `None`
    /// without idempotence (the header fields stay -1 and the broker checks nothing).
    pub(crate) producer_id: Option<i64>,
    /// How many batches of one partition may be in flight at once; 1 without idempotence,
    /// since nothing would then stop a retried batch from landing after a later one.
    pub(crate) max_in_flight_per_partition: usize,
}

/// A sealed batch on its way to its partition's leader.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Creation order; flush waits for every batch below an id, and a partition sends its
    /// batches in this order.
    pub(crate) id: u64,
    /// The partition.
    pub(crate) topic_partition: TopicPartition,
    /// The sealed batch, as sent (and re-sent on retry; renumbered on a new epoch).
    pub(crate) records: Bytes,
    /// How many records it holds.
    record_count: usize,
    /// Where its records' outcomes go, each covering consecutive records, in offset order.
    deliveries: Vec<Delivery>,
    /// Buffer bytes the records reserved.
    reserved_bytes: usize,
    /// When the batch fails if not acknowledged.
    pub(crate) deadline: Instant,
    /// Not sent again before this, after a retriable error.
    retry_at: Option<Instant>,
    /// The error of the last attempt, reported if the batch expires before the next.
    last_error: Option<ClientError>,
    /// The producer epoch in its header (-1 without idempotence), to tell whether its
    /// acknowledgement says anything about the partition's current epoch.
    producer_epoch: i16,
    /// Whether it was sent under its current numbers, so the broker may hold it.
    sent: bool,
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
    /// Where the records' outcomes go, each covering consecutive records.
    deliveries: Vec<Delivery>,
    /// Buffer bytes the records reserved.
    reserved_bytes: usize,
}

/// The batches of one partition, and its idempotence state.
///
/// With idempotence the queue outlives its batches: forgetting the epoch and sequence would
/// make the next batch repeat sequences the broker already holds.
#[derive(Debug, Default)]
struct PartitionQueue {
    /// The batch taking records, if any.
    open: Option<OpenBatch>,
    /// Sealed batches waiting to be sent, sorted by id (oldest first).
    sealed: VecDeque<Batch>,
    /// Ids of the batches in flight, to bound them and to tell the oldest unsettled batch.
    in_flight: BTreeSet<u64>,
    /// Ids of the batches sent in the current epoch from the oldest one not yet settled on:
    /// what the broker may have appended since that one, whatever answers came back. A
    /// retry of that batch is recognised as a repeat only while it is among the producer's
    /// last five batches on the broker, so the in-flight limit bounds this window too, not
    /// only the batches in flight (answers come back in any order, and a retried batch waits
    /// in the queue).
    window: BTreeSet<u64>,
    /// Whether a batch failed since the partition last had nothing in flight: then nothing
    /// more is sent until every batch in flight has settled, so that retried batches go out
    /// again in order.
    held: bool,
    /// Whether a batch of the current epoch was acknowledged since the last failure, so the
    /// broker holds this partition's sequence and checks whatever follows; until then one
    /// batch at a time is sent.
    confirmed: bool,
    /// The producer epoch stamped on batches sealed now.
    epoch: i16,
    /// The sequence of the next record sealed, wrapping from `i32::MAX` to 0.
    next_sequence: i32,
    /// Whether the epoch was bumped and the queued batches still carry old numbers; they are
    /// renumbered once nothing of the partition is in flight.
    renumber_pending: bool,
}

impl PartitionQueue {
    /// Whether one more batch may be sent now: not held, below the in-flight limit, and a
    /// resend or with room in the window.
    fn may_send(&self, max_in_flight: usize) -> bool {
        let limit = if self.confirmed { max_in_flight } else { 1 };
        let resend = self.sealed.front().is_some_and(|batch| batch.sent);
        !self.held && self.in_flight.len() < limit && (resend || self.window.len() < max_in_flight)
    }

    /// Drops from the window the batches before the oldest sent batch not yet settled (in
    /// flight, or queued again for a retry: sent batches come first in the queue).
    fn prune_window(&mut self) {
        let queued = self.sealed.front().filter(|batch| batch.sent);
        let oldest = match (self.in_flight.first(), queued) {
            (Some(in_flight), Some(queued)) => Some((*in_flight).min(queued.id)),
            (Some(in_flight), None) => Some(*in_flight),
            (None, Some(queued)) => Some(queued.id),
            (None, None) => None,
        };
        match oldest {
            Some(oldest) => self.window.retain(|id| *id >= oldest),
            None => self.window.clear(),
        }
    }

    /// When the next batch to send is ready: the oldest sealed batch once its retry backoff
    /// passed, or else the open batch once its linger passed (at once when forced); `None`
    /// when there is nothing to send.
    fn ready_at(&self, now: Instant, linger: Duration, force_below: u64) -> Option<Instant> {
        match (self.sealed.front(), &self.open) {
            (Some(batch), _) => Some(batch.retry_at.unwrap_or(now)),
            (None, Some(open)) if open.id < force_below => Some(now),
            (None, Some(open)) => Some(open.created + linger),
            (None, None) => None,
        }
    }

    /// Whether no batch of this partition older than `id` is in flight or queued.
    fn is_oldest_unsettled(&self, id: u64) -> bool {
        self.in_flight.first().is_none_or(|first| *first > id)
            && self.sealed.front().is_none_or(|front| front.id > id)
    }

    /// Puts a batch back into the sealed queue at its place by id.
    fn requeue(&mut self, batch: Batch) {
        let position = self.sealed.partition_point(|queued| queued.id < batch.id);
        self.sealed.insert(position, batch);
    }

    /// Called after a batch of this partition settled: the window moves on; once nothing is
    /// in flight, the hold ends and a pending renumbering happens.
    fn settled(&mut self, producer_id: Option<i64>) {
        self.prune_window();
        if !self.in_flight.is_empty() {
            return;
        }
        self.held = false;
        if let (true, Some(producer_id)) = (self.renumber_pending, producer_id) {
            self.renumber(producer_id);
        }
    }

    /// Gives every queued batch the current epoch and sequences from 0, in order.
    fn renumber(&mut self, producer_id: i64) {
        assert!(
            self.in_flight.is_empty(),
            "renumbering with batches in flight"
        );
        let mut sequence = 0;
        for batch in &mut self.sealed {
            batch.records = with_producer_fields(&batch.records, producer_id, self.epoch, sequence);
            batch.producer_epoch = self.epoch;
            batch.sent = false;
            sequence = advance_sequence(sequence, batch.record_count);
        }
        // The broker forgets the old epoch's batches when it sees the new one.
        self.window.clear();
        tracing::debug!(
            epoch = self.epoch,
            batches = self.sealed.len(),
            "renumbered queued batches"
        );
        self.next_sequence = sequence;
        self.renumber_pending = false;
        self.confirmed = false;
    }
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
    /// Batches to send now, each with the route it was given; at most one per partition.
    pub(crate) batches: Vec<(R, Batch)>,
    /// When something not ready now becomes ready (linger, retry backoff, expiry, or the
    /// next batch of a partition that may have more in flight: then it is `now` or earlier).
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
    /// Memory of acknowledged batches, for new ones.
    batch_buffers: BatchBuffers,
}

impl Accumulator {
    pub(crate) fn new(config: AccumulatorConfig, buffer: Arc<Semaphore>) -> Accumulator {
        assert!(
            config.max_in_flight_per_partition >= 1,
            "a partition must be able to send a batch"
        );
        // A batch reaches its size target plus at most one record: twice the target holds
        // any batch that was not a single oversized record.
        let batch_buffers = BatchBuffers::new(
            config.max_in_flight_per_partition + 1,
            config.batch_bytes_max.saturating_mul(2),
        );
        Accumulator {
            config,
            partitions: BTreeMap::new(),
            next_batch_id: 0,
            incomplete: BTreeSet::new(),
            force_below: 0,
            buffer,
            batch_buffers,
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
        let mut delivery = Some(Delivery::record(record.timestamp, sender));
        // More single records may follow: room for some, without taking a whole batch's
        // memory for a record that may stay alone.
        let expected_bytes = reserved_bytes.max(1024) * 16;
        self.append_record(
            topic_partition,
            record,
            reserved_bytes,
            expected_bytes,
            now,
            // A single record's delivery is its batch's as soon as it is in.
            |open, added| {
                if added {
                    open.deliveries.extend(delivery.take());
                }
            },
        )
    }

    /// Appends `records` in order to the open batches of their partition, as
    /// [`Accumulator::append`] does one record, with one outcome for them all: `group`.
    /// The records are split where a batch fills up; each batch gets one delivery for its
    /// share of them.
    ///
    /// `reserved_bytes[i]` were taken from the buffer for `records[i]`. When a record cannot
    /// be appended (it breaks a limit of the batch format), the group fails with that error,
    /// the bytes of the records not appended are given back, and those before it are still
    /// sent (the caller is told of the failure, as for any record that failed).
    pub(crate) fn append_group(
        &mut self,
        topic_partition: &TopicPartition,
        records: &[Record],
        reserved_bytes: &[usize],
        group: &Arc<GroupOutcome>,
        now: Instant,
    ) -> Appended {
        let mut appended = Appended::default();
        let mut parts = 0;
        let mut part_records = 0;
        // Closes the group's part in `open` before it is sealed, or once the group is in.
        let mut close_part = |open: &mut OpenBatch, part_records: &mut usize| {
            if *part_records > 0 {
                open.deliveries.push(Delivery {
                    records: *part_records,
                    sink: Sink::Group {
                        part: parts,
                        group: Arc::clone(group),
                    },
                });
                parts += 1;
                *part_records = 0;
            }
        };
        let mut remaining_bytes: usize = reserved_bytes.iter().sum();
        for (index, (record, reserved)) in records.iter().zip(reserved_bytes).enumerate() {
            let outcome = self.append_record(
                topic_partition,
                record,
                *reserved,
                remaining_bytes,
                now,
                |open, added| {
                    if added {
                        part_records += 1;
                    } else {
                        close_part(open, &mut part_records);
                    }
                },
            );
            remaining_bytes -= reserved;
            match outcome {
                Ok(step) => {
                    appended.opened |= step.opened;
                    appended.sealed |= step.sealed;
                }
                Err(error) => {
                    let unappended: usize = reserved_bytes[index + 1..].iter().sum();
                    self.buffer.add_permits(unappended);
                    group.fail(&error);
                    break;
                }
            }
        }
        if let Some(open) = self
            .partitions
            .get_mut(topic_partition)
            .and_then(|queue| queue.open.as_mut())
        {
            close_part(open, &mut part_records);
        }
        group.appended(parts);
        appended
    }

    /// The step shared by [`Accumulator::append`] and [`Accumulator::append_group`]: appends
    /// one record, sealing the open batch before or after as the size target says. `settle`
    /// is told of the open batch once the record is in it (`true`), and before that batch is
    /// sealed (`false`), so that deliveries are in place when a batch leaves.
    /// `expected_bytes` is what the caller knows is coming, this record's included: a new
    /// batch's buffer is sized for it.
    fn append_record(
        &mut self,
        topic_partition: &TopicPartition,
        record: &Record,
        reserved_bytes: usize,
        expected_bytes: usize,
        now: Instant,
        mut settle: impl FnMut(&mut OpenBatch, bool),
    ) -> Result<Appended, ClientError> {
        let mut appended = Appended::default();
        if !self.partitions.contains_key(topic_partition) {
            self.partitions
                .insert(topic_partition.clone(), PartitionQueue::default());
        }
        let Some(queue) = self.partitions.get_mut(topic_partition) else {
            unreachable!("inserted above");
        };
        let would_overflow = queue.open.as_ref().is_some_and(|open| {
            !open.builder.is_empty()
                && open.builder.estimated_bytes_with(record) > self.config.batch_bytes_max
        });
        if would_overflow {
            if let Some(open) = &mut queue.open {
                settle(open, false);
            }
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
                // A batch reaches the size target plus at most one record; below that, room
                // for what is known to come, so that the buffer is not regrown (and its
                // records copied again) on the way.
                let capacity = (self.config.batch_bytes_max + reserved_bytes).min(expected_bytes);
                let memory = self
                    .batch_buffers
                    .take(mq_protocol::batch::HEADER_BYTES + capacity);
                queue.open.insert(OpenBatch {
                    id,
                    builder: BatchBuilder::with_buffer(self.config.compression, memory, capacity),
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
        settle(open, true);
        open.reserved_bytes += reserved_bytes;
        if open.builder.estimated_bytes() >= self.config.batch_bytes_max {
            settle(open, false);
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

    /// Takes the batches that may be sent now, at most one per partition (a Produce request
    /// carries one batch per partition): per partition neither held nor at its in-flight
    /// limit, the oldest sealed batch once its retry backoff passed, or else the open batch
    /// once its linger passed (or a flush wants it). `route` decides where a partition's
    /// batch goes; `None` leaves the partition's batches where they are (no leader known,
    /// broker busy).
    pub(crate) fn drain<R>(
        &mut self,
        now: Instant,
        mut route: impl FnMut(&TopicPartition) -> Option<R>,
    ) -> Drained<R> {
        let mut next_wakeup: Option<Instant> = None;
        let mut wake_at = |at: Instant| {
            next_wakeup = Some(next_wakeup.map_or(at, |next| next.min(at)));
        };
        let max_in_flight = self.config.max_in_flight_per_partition;
        let (linger, force_below) = (self.config.linger, self.force_below);
        let mut taken = Vec::new();
        for (topic_partition, queue) in &mut self.partitions {
            // Expiry deadlines matter whether or not the partition can send.
            if let Some(open) = &queue.open {
                wake_at(open.created + self.config.delivery_timeout);
            }
            for batch in &queue.sealed {
                wake_at(batch.deadline);
            }
            if !queue.may_send(max_in_flight) {
                continue;
            }
            match queue.ready_at(now, linger, force_below) {
                Some(ready_at) if ready_at <= now => {}
                Some(ready_at) => {
                    wake_at(ready_at);
                    continue;
                }
                None => continue,
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
            let Some(mut batch) = queue.sealed.pop_front() else {
                continue;
            };
            batch.sent = true;
            queue.in_flight.insert(batch.id);
            queue.window.insert(batch.id);
            taken.push((target, batch));
            // The partition's next batch goes in the next round, to the same or a new route.
            if queue.may_send(max_in_flight) {
                if let Some(ready_at) = queue.ready_at(now, linger, force_below) {
                    wake_at(ready_at);
                }
            }
        }
        Drained {
            batches: taken,
            next_wakeup,
        }
    }

    /// Fails every batch not in flight whose delivery timeout passed, with its last error
    /// (or a timeout when it never got one).
    ///
    /// An expired sealed batch leaves a gap in its partition's sequences; the broker reports
    /// it when the next batch comes (see the module documentation), which that batch is
    /// therefore sent alone to learn.
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
                    queue.confirmed = false;
                    expired.push((
                        batch.id,
                        batch.deliveries,
                        batch.reserved_bytes,
                        batch.last_error,
                    ));
                }
                queue.prune_window();
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
        if self.config.producer_id.is_none() {
            self.partitions.retain(|_, queue| {
                queue.open.is_some() || !queue.sealed.is_empty() || !queue.in_flight.is_empty()
            });
        }
    }

    /// Completes an in-flight batch: its records got offsets from `base_offset` on (or -1
    /// each, for `None`: acks=0). A repeat the broker recognised is answered with the
    /// original base offset, so it completes the same way.
    pub(crate) fn complete(&mut self, batch: Batch, base_offset: Option<i64>) {
        let producer_id = self.config.producer_id;
        if let Some(queue) = self.partitions.get_mut(&batch.topic_partition) {
            queue.in_flight.remove(&batch.id);
            if batch.producer_epoch == queue.epoch && !queue.renumber_pending {
                queue.confirmed = true;
            }
            queue.settled(producer_id);
        }
        let TopicPartition { topic, partition } = &batch.topic_partition;
        let mut first_offset = base_offset;
        for delivery in batch.deliveries {
            let records = i64::try_from(delivery.records).unwrap_or(i64::MAX);
            let next = first_offset.map(|offset| offset.saturating_add(records));
            delivery.complete(topic, *partition, first_offset);
            first_offset = next;
        }
        self.finish(batch.id, batch.reserved_bytes);
        self.batch_buffers.give_back(batch.records);
    }

    /// Fails an in-flight batch for good: every record gets `error`, and the partition is
    /// held until its other batches in flight settle.
    pub(crate) fn fail(&mut self, batch: Batch, error: &ClientError) {
        let producer_id = self.config.producer_id;
        if let Some(queue) = self.partitions.get_mut(&batch.topic_partition) {
            queue.in_flight.remove(&batch.id);
            queue.held = true;
            queue.confirmed = false;
            queue.settled(producer_id);
        }
        fail_deliveries(batch.deliveries, error);
        self.finish(batch.id, batch.reserved_bytes);
    }

    /// Puts an in-flight batch that failed with a retriable `error` back into its queue at
    /// its place by id, to be sent again after `backoff` and after every batch of the
    /// partition now in flight has settled; fails it instead when that would pass its
    /// deadline.
    ///
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER` for the partition's oldest unsettled batch means the
    /// broker misses sequences nothing will resend: the partition moves to a new epoch.
    pub(crate) fn retry(
        &mut self,
        mut batch: Batch,
        error: ClientError,
        now: Instant,
        backoff: Duration,
    ) {
        let producer_id = self.config.producer_id;
        let Some(queue) = self.partitions.get_mut(&batch.topic_partition) else {
            // Cannot happen: a partition with a batch in flight keeps its queue.
            self.fail(batch, &error);
            return;
        };
        queue.in_flight.remove(&batch.id);
        queue.held = true;
        queue.confirmed = false;
        let gap = producer_id.is_some()
            && error.code() == Some(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            && batch.producer_epoch == queue.epoch
            && !queue.renumber_pending
            && queue.is_oldest_unsettled(batch.id);
        if gap {
            queue.epoch = next_epoch(queue.epoch);
            queue.renumber_pending = true;
            tracing::debug!(
                partition = %batch.topic_partition,
                epoch = queue.epoch,
                "sequence gap: new producer epoch"
            );
        }
        let retry_at = now + backoff;
        let failed = if retry_at >= batch.deadline {
            Some(batch)
        } else {
            batch.retry_at = Some(retry_at);
            batch.last_error = Some(error.clone());
            queue.requeue(batch);
            None
        };
        queue.settled(producer_id);
        if let Some(batch) = failed {
            fail_deliveries(batch.deliveries, &error);
            self.finish(batch.id, batch.reserved_bytes);
        }
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

    fn finish(&mut self, id: u64, reserved_bytes: usize) {
        self.incomplete.remove(&id);
        self.buffer.add_permits(reserved_bytes);
    }
}

/// Seals the partition's open batch onto its sealed queue, stamped with the producer id, the
/// partition's epoch and next sequence when idempotent. A batch that cannot be sealed
/// (compression failed, too large once compressed) fails its records instead, and uses no
/// sequence.
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
    let (builder, producer_epoch) = match config.producer_id {
        Some(producer_id) => (
            open.builder
                .with_producer(producer_id, queue.epoch, queue.next_sequence),
            queue.epoch,
        ),
        None => (open.builder, -1),
    };
    let record_count = builder.record_count();
    match builder.seal(0) {
        Ok(records) => {
            if config.producer_id.is_some() {
                queue.next_sequence = advance_sequence(queue.next_sequence, record_count);
            }
            assert!(
                queue.sealed.back().is_none_or(|last| last.id < open.id),
                "sealed queue out of id order"
            );
            queue.sealed.push_back(Batch {
                id: open.id,
                topic_partition: topic_partition.clone(),
                records,
                record_count,
                deliveries: open.deliveries,
                reserved_bytes: open.reserved_bytes,
                deadline: open.created + config.delivery_timeout,
                retry_at: None,
                last_error: None,
                producer_epoch,
                sent: false,
            });
        }
        Err(error) => {
            tracing::warn!(partition = %topic_partition, %error, "cannot seal batch");
            fail_deliveries(open.deliveries, &ClientError::InvalidRecord { error });
            incomplete.remove(&open.id);
            buffer.add_permits(open.reserved_bytes);
        }
    }
}

/// A copy of the sealed batch `records` with the producer id, epoch and base sequence
/// replaced, and its CRC recomputed (it covers those fields).
fn with_producer_fields(
    records: &Bytes,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    let mut patched = BytesMut::from(&records[..]);
    patched[field::PRODUCER_ID..][..8].copy_from_slice(&producer_id.to_be_bytes());
    patched[field::PRODUCER_EPOCH..][..2].copy_from_slice(&producer_epoch.to_be_bytes());
    patched[field::BASE_SEQUENCE..][..4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = batch::compute_crc(&patched);
    patched[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(
        batch::validate(&patched).is_ok(),
        "a patched batch is valid"
    );
    patched.freeze()
}

/// The sequence after `record_count` records from `sequence`, wrapping from `i32::MAX` to 0
/// as Kafka's (and the broker's) do.
fn advance_sequence(sequence: i32, record_count: usize) -> i32 {
    let count = i64::try_from(record_count).expect("a batch's record count fits an i64");
    let next = (i64::from(sequence) + count) % (i64::from(i32::MAX) + 1);
    i32::try_from(next).expect("reduced below 2^31")
}

/// The epoch after `epoch`, wrapping from `i16::MAX` to 0 (the broker only asks that it
/// differ).
fn next_epoch(epoch: i16) -> i16 {
    if epoch == i16::MAX {
        0
    } else {
        epoch + 1
    }
}

fn fail_deliveries(deliveries: Vec<Delivery>, error: &ClientError) {
    for delivery in deliveries {
        delivery.fail(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::record::records;

    type Receiver = oneshot::Receiver<Result<RecordMetadata, ClientError>>;

    const PRODUCER_ID: i64 = 77;

    struct Setup {
        accumulator: Accumulator,
        buffer: Arc<Semaphore>,
        start: Instant,
    }

    fn setup(batch_bytes_max: usize) -> Setup {
        setup_with(batch_bytes_max, |_| {})
    }

    fn setup_with(batch_bytes_max: usize, adjust: impl FnOnce(&mut AccumulatorConfig)) -> Setup {
        let buffer = Arc::new(Semaphore::new(0));
        let mut config = AccumulatorConfig {
            linger: Duration::from_millis(5),
            batch_bytes_max,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(30),
            producer_id: Some(PRODUCER_ID),
            max_in_flight_per_partition: 1,
        };
        adjust(&mut config);
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
        values_of(&batch.records)
    }

    fn values_of(batch: &Bytes) -> Vec<String> {
        records(batch)
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
    fn an_acknowledged_batch_leaves_its_memory_to_a_later_one() {
        let mut setup = setup(250_000);
        let append = |setup: &mut Setup, fill: u8| {
            let record = Record::new(1000, None, Some(Bytes::from(vec![fill; 100_000])));
            let (sender, _) = oneshot::channel();
            let now = setup.at(0);
            setup
                .accumulator
                .append(&tp(0), &record, 100_000, sender, now)
                .unwrap();
        };
        append(&mut setup, b'a');
        append(&mut setup, b'a');
        setup.accumulator.flush();
        let ((), first) = setup.drain(0).batches.remove(0);
        let address = first.records.as_ptr();
        setup.accumulator.complete(first, Some(0));
        append(&mut setup, b'b');
        setup.accumulator.flush();
        let ((), second) = setup.drain(1).batches.remove(0);
        assert_eq!(second.records.as_ptr(), address, "the same memory");
        assert_eq!(values(&second), ["b".repeat(100_000)]);
        // Still held elsewhere (a connection writing it): not kept, and nothing breaks.
        let held = second.records.clone();
        setup.accumulator.complete(second, Some(2));
        append(&mut setup, b'c');
        setup.accumulator.flush();
        let ((), third) = setup.drain(2).batches.remove(0);
        assert_ne!(third.records.as_ptr(), address);
        assert_eq!(values_of(&held), ["b".repeat(100_000)], "untouched");
        assert_eq!(values(&third), ["c".repeat(100_000)]);
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

    fn one_letter_records(values: &[&str]) -> Vec<Record> {
        values
            .iter()
            .map(|value| Record::new(1000, None, Some(Bytes::copy_from_slice(value.as_bytes()))))
            .collect()
    }

    #[test]
    fn a_group_is_split_where_batches_fill_and_keeps_its_order() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        // A single record first: the group starts in a batch that is already open.
        let (_, single) = setup.append(0, "s", 0);
        let (group, delivery) = GroupOutcome::new("t".to_string(), 0);
        let records = one_letter_records(&["a", "b", "c", "d"]);
        let appended =
            setup
                .accumulator
                .append_group(&tp(0), &records, &[10; 4], &group, setup.at(0));
        assert!(appended.sealed);
        setup.accumulator.flush();
        // The first batch goes alone (the epoch is not confirmed yet), then two at once.
        let first = setup.drain_one(0).unwrap();
        assert_eq!(values(&first), ["s", "a"]);
        assert_eq!(numbers(&first), (0, 0, 2));
        setup.accumulator.complete(first, Some(10));
        let (second, third) = (setup.drain_one(0).unwrap(), setup.drain_one(0).unwrap());
        assert_eq!(values(&second), ["b", "c"]);
        assert_eq!(values(&third), ["d"]);
        assert_eq!(
            (numbers(&second), numbers(&third)),
            ((0, 2, 2), (0, 4, 1)),
            "sequences count records"
        );
        // Answers in any order; the group answers once its last part settles.
        setup.accumulator.complete(third, Some(30));
        setup.accumulator.complete(second, Some(20));
        assert_eq!(single.blocking_recv().unwrap().unwrap().offset, 10);
        let written = delivery.receiver.blocking_recv().unwrap().unwrap();
        assert_eq!(written.offsets().collect::<Vec<_>>(), [11, 20, 21, 30]);
        assert!(setup.accumulator.is_empty());
        assert_eq!(
            setup.buffer.available_permits(),
            50,
            "every reserved byte back"
        );
    }

    #[test]
    fn a_failed_batch_fails_the_group_and_the_rest_of_it_still_settles() {
        let mut setup = setup(TWO_PER_BATCH);
        let (group, delivery) = GroupOutcome::new("t".to_string(), 0);
        let records = one_letter_records(&["a", "b", "c"]);
        setup
            .accumulator
            .append_group(&tp(0), &records, &[10; 3], &group, setup.at(0));
        setup.accumulator.flush();
        let first = setup.drain_one(0).unwrap();
        setup.accumulator.fail(first, &disconnected());
        let outcome = delivery.receiver.blocking_recv().unwrap();
        assert_eq!(outcome.unwrap_err().to_string(), "connection to h:1 closed");
        let second = setup.drain_one(0).unwrap();
        setup.accumulator.complete(second, Some(5));
        assert!(setup.accumulator.is_empty());
        assert_eq!(setup.buffer.available_permits(), 30);
    }

    #[test]
    fn an_invalid_record_in_a_group_fails_it_and_gives_the_rest_back() {
        let mut setup = setup(1 << 20);
        let (group, delivery) = GroupOutcome::new("t".to_string(), 0);
        let mut records = one_letter_records(&["a", "b", "c"]);
        records[1].headers =
            vec![mq_protocol::Header::new("h", None); mq_protocol::limits::RECORD_HEADERS_MAX + 1];
        setup
            .accumulator
            .append_group(&tp(0), &records, &[10; 3], &group, setup.at(0));
        assert!(matches!(
            delivery.receiver.blocking_recv().unwrap(),
            Err(ClientError::InvalidRecord { .. })
        ));
        // The record before it is still sent; the bytes of the two others are back.
        assert_eq!(setup.buffer.available_permits(), 20);
        setup.accumulator.flush();
        let batch = setup.drain_one(0).unwrap();
        assert_eq!(values(&batch), ["a"]);
        setup.accumulator.complete(batch, Some(0));
        assert_eq!(setup.buffer.available_permits(), 30);
    }

    /// Two one-letter records per batch: a header, then 8 bytes per record, with slack below
    /// a third.
    const TWO_PER_BATCH: usize = 61 + 2 * 8 + 4;

    impl Setup {
        /// The one batch a drain at `millis` takes, if any.
        fn drain_one(&mut self, millis: u64) -> Option<Batch> {
            let mut drained = self.drain(millis).batches;
            assert!(drained.len() <= 1, "one partition, one batch per drain");
            drained.pop().map(|((), batch)| batch)
        }

        fn queue(&self, partition: i32) -> &PartitionQueue {
            &self.accumulator.partitions[&tp(partition)]
        }

        /// Appends one-letter records to partition 0 at time 0.
        fn append_all(&mut self, values: &[&str]) {
            for value in values {
                self.append(0, value, 0);
            }
        }
    }

    /// A batch's producer epoch, base sequence and record count, from its header (checked,
    /// CRC included), with its producer id checked.
    fn numbers(batch: &Batch) -> (i16, i32, i32) {
        let header = batch::validate(&batch.records).unwrap();
        assert_eq!(header.producer_id, PRODUCER_ID);
        (
            header.producer_epoch,
            header.base_sequence,
            header.record_count,
        )
    }

    fn broker_error(code: ErrorCode) -> ClientError {
        ClientError::broker(code, None)
    }

    fn disconnected() -> ClientError {
        ClientError::Disconnected {
            address: "h:1".into(),
        }
    }

    #[test]
    fn sealing_stamps_the_epoch_and_sequences_that_advance_by_record_count() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        setup.append_all(&["a", "b", "c", "d", "e"]);
        setup.accumulator.flush();
        let mut stamped = Vec::new();
        while let Some(batch) = setup.drain_one(0) {
            stamped.push(numbers(&batch));
            setup.accumulator.complete(batch, Some(0));
        }
        assert_eq!(stamped, [(0, 0, 2), (0, 2, 2), (0, 4, 1)]);
        assert_eq!(setup.queue(0).next_sequence, 5);
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(advance_sequence(i32::MAX, 1), 0);
        assert_eq!(advance_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(advance_sequence(5, 0), 5);
        assert_eq!(next_epoch(i16::MAX), 0);
        assert_eq!(next_epoch(3), 4);
        let mut setup = setup(TWO_PER_BATCH);
        setup.append(0, "a", 0);
        let queue = setup.accumulator.partitions.get_mut(&tp(0)).unwrap();
        queue.next_sequence = i32::MAX;
        setup.append_all(&["b", "c"]);
        let batch = setup.drain_one(0).unwrap();
        assert_eq!(numbers(&batch), (0, i32::MAX, 2), "stamped when sealed");
        assert_eq!(setup.queue(0).next_sequence, 1);
    }

    #[test]
    fn one_batch_goes_until_the_broker_acknowledged_one_of_the_epoch() {
        // A broker that knows nothing of an epoch accepts whatever sequence comes first: a
        // second batch in flight could overtake a first one refused by a leader change.
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 3;
        });
        setup.append_all(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]);
        let first = setup.drain_one(0).unwrap();
        let drained = setup.drain(0);
        assert!(drained.batches.is_empty(), "the epoch is not confirmed");
        setup.accumulator.complete(first, Some(0));
        let drained = setup.drain(0);
        assert_eq!(drained.batches.len(), 1, "one per partition per drain");
        assert_eq!(
            drained.next_wakeup,
            Some(setup.at(0)),
            "the next one may go at once"
        );
        let mut in_flight = vec![drained.batches.into_iter().next().unwrap().1];
        in_flight.extend(setup.drain_one(0));
        in_flight.extend(setup.drain_one(0));
        let values: Vec<_> = in_flight.iter().map(values).collect();
        assert_eq!(values, [["c", "d"], ["e", "f"], ["g", "h"]]);
        let drained = setup.drain(0);
        assert!(drained.batches.is_empty(), "three in flight: the limit");
        assert_ne!(drained.next_wakeup, Some(setup.at(0)));
    }

    /// Sends `values` to partition 0 with up to 5 batches in flight and returns the batches in
    /// flight after the first, which is acknowledged to confirm the epoch.
    fn pipelined(setup: &mut Setup, values: &[&str]) -> Vec<Batch> {
        setup.append_all(values);
        setup.accumulator.flush();
        let first = setup.drain_one(0).unwrap();
        setup.accumulator.complete(first, Some(0));
        let mut in_flight = Vec::new();
        while let Some(batch) = setup.drain_one(0) {
            in_flight.push(batch);
        }
        in_flight
    }

    #[test]
    fn the_limit_counts_every_batch_sent_since_the_oldest_unsettled_one() {
        // The broker recognises a retry only among a producer's last five batches: while the
        // oldest batch is unanswered, later ones acknowledged still take room.
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 3;
        });
        let mut in_flight = pipelined(&mut setup, &["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        assert_eq!(in_flight.len(), 3);
        let oldest = in_flight.remove(0);
        for batch in in_flight {
            setup.accumulator.complete(batch, Some(4));
        }
        assert_eq!(setup.queue(0).in_flight.len(), 1);
        assert!(
            setup.drain(0).batches.is_empty(),
            "three sent since the oldest unsettled one"
        );
        let now = setup.at(0);
        setup
            .accumulator
            .retry(oldest, disconnected(), now, Duration::ZERO);
        assert_eq!(
            setup.queue(0).window.len(),
            3,
            "a queued retry keeps its window"
        );
        let again = setup.drain_one(0).unwrap();
        assert_eq!(values(&again), ["c", "d"], "a resend needs no room");
        setup.accumulator.complete(again, Some(2));
        assert!(setup.queue(0).window.is_empty());
        let next = setup.drain_one(0).unwrap();
        assert_eq!(values(&next), ["i"]);
    }

    #[test]
    fn a_failure_holds_the_partition_until_its_batches_in_flight_settle() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        let mut in_flight = pipelined(&mut setup, &["a", "b", "c", "d", "e", "f", "g", "h"]);
        assert_eq!(in_flight.len(), 3);
        setup.append_all(&["i", "j", "k"]);
        setup.accumulator.flush();
        let last = in_flight.pop().unwrap();
        let middle = in_flight.pop().unwrap();
        let first = in_flight.pop().unwrap();
        let now = setup.at(0);
        let no_backoff = Duration::ZERO;
        let not_leader = broker_error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        setup.accumulator.retry(first, not_leader, now, no_backoff);
        assert!(setup.queue(0).held);
        assert!(
            setup.drain(1).batches.is_empty(),
            "held: two batches still in flight"
        );
        let out_of_order = broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
        setup
            .accumulator
            .retry(last, out_of_order.clone(), now, no_backoff);
        assert!(
            setup.drain(1).batches.is_empty(),
            "held: one still in flight"
        );
        assert_eq!(setup.queue(0).epoch, 0, "not the oldest: no gap");
        setup
            .accumulator
            .retry(middle, out_of_order, now, no_backoff);
        assert!(!setup.queue(0).held, "nothing in flight: the hold ends");
        let again = setup.drain_one(1).unwrap();
        assert_eq!(values(&again), ["c", "d"]);
        assert_eq!(numbers(&again), (0, 2, 2), "the same numbers");
        assert!(
            setup.drain(1).batches.is_empty(),
            "alone until acknowledged"
        );
        setup.accumulator.complete(again, Some(2));
        let mut sent = Vec::new();
        while let Some(batch) = setup.drain_one(1) {
            sent.push(values(&batch));
        }
        let expected: [&[&str]; 4] = [&["e", "f"], &["g", "h"], &["i", "j"], &["k"]];
        assert_eq!(sent, expected);
    }

    #[test]
    fn retried_batches_go_back_in_id_order() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        let mut in_flight = pipelined(&mut setup, &["a", "b", "c", "d", "e", "f", "g", "h"]);
        let now = setup.at(0);
        // Answers come back in any order.
        for index in [2, 0, 0] {
            let batch = in_flight.remove(index);
            setup
                .accumulator
                .retry(batch, disconnected(), now, Duration::from_millis(3));
        }
        let queued: Vec<_> = setup.queue(0).sealed.iter().map(values).collect();
        assert_eq!(queued, [["c", "d"], ["e", "f"], ["g", "h"]]);
        let probe = setup.drain_one(3).unwrap();
        setup.accumulator.complete(probe, Some(2));
        let mut sent = Vec::new();
        while let Some(batch) = setup.drain_one(3) {
            sent.push((values(&batch), numbers(&batch)));
        }
        assert_eq!(
            sent,
            [
                (vec!["e".to_string(), "f".to_string()], (0, 4, 2)),
                (vec!["g".to_string(), "h".to_string()], (0, 6, 2)),
            ]
        );
    }

    #[test]
    fn a_gap_reported_by_the_broker_renumbers_the_queued_batches_under_a_new_epoch() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        let mut in_flight = pipelined(&mut setup, &["a", "b", "c", "d", "e", "f", "g"]);
        let (last, middle, first) = (
            in_flight.pop().unwrap(),
            in_flight.pop().unwrap(),
            in_flight.pop().unwrap(),
        );
        assert!(in_flight.is_empty());
        assert_eq!(values(&last), ["g"]);
        let now = setup.at(0);
        let backoff = Duration::from_millis(3);
        // The first fails for good, so the broker refuses the later ones: their sequences do
        // not follow its last.
        let too_large = broker_error(ErrorCode::MESSAGE_TOO_LARGE);
        setup.accumulator.fail(first, &too_large);
        let out_of_order = broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
        setup
            .accumulator
            .retry(middle, out_of_order.clone(), now, backoff);
        let queue = setup.queue(0);
        assert_eq!(
            (queue.epoch, queue.renumber_pending),
            (1, true),
            "the oldest unsettled batch refused: a gap"
        );
        assert_eq!(
            numbers(&queue.sealed[0]),
            (0, 4, 2),
            "not renumbered while a batch is in flight"
        );
        setup.accumulator.retry(last, out_of_order, now, backoff);
        let queue = setup.queue(0);
        let renumbered: Vec<_> = queue.sealed.iter().map(numbers).collect();
        assert_eq!(renumbered, [(1, 0, 2), (1, 2, 1)]);
        assert_eq!(queue.next_sequence, 3);
        assert!(!queue.renumber_pending && !queue.confirmed);
        setup.append_all(&["j"]);
        setup.accumulator.flush();
        let probe = setup.drain_one(3).unwrap();
        assert_eq!(values(&probe), ["e", "f"], "records untouched");
        assert!(
            setup.drain(3).batches.is_empty(),
            "a new epoch: alone first"
        );
        setup.accumulator.complete(probe, Some(2));
        let rest: Vec<_> = std::iter::from_fn(|| setup.drain_one(3))
            .map(|batch| (values(&batch), numbers(&batch)))
            .collect();
        assert_eq!(
            rest,
            [
                (vec!["g".to_string()], (1, 2, 1)),
                (vec!["j".to_string()], (1, 3, 1)),
            ]
        );
    }

    #[test]
    fn a_batch_whose_acknowledgement_was_lost_keeps_its_numbers_when_another_fails() {
        // The broker may hold it: resent with its numbers, it is recognised as a repeat.
        // Renumbered, it would be stored twice. A failure for good alone is no reason to
        // renumber; only the broker's refusal of the oldest batch is.
        let mut setup = setup_with(TWO_PER_BATCH, |config| {
            config.max_in_flight_per_partition = 5;
        });
        let mut in_flight = pipelined(&mut setup, &["a", "b", "c", "d", "e", "f"]);
        let (last, first) = (in_flight.pop().unwrap(), in_flight.pop().unwrap());
        let now = setup.at(0);
        setup
            .accumulator
            .retry(first, disconnected(), now, Duration::ZERO);
        let too_large = broker_error(ErrorCode::MESSAGE_TOO_LARGE);
        setup.accumulator.fail(last, &too_large);
        let again = setup.drain_one(0).unwrap();
        assert_eq!(values(&again), ["c", "d"]);
        assert_eq!(numbers(&again), (0, 2, 2));
    }

    #[test]
    fn without_idempotence_batches_carry_no_producer_and_go_one_at_a_time() {
        let mut setup = setup_with(TWO_PER_BATCH, |config| config.producer_id = None);
        setup.append_all(&["a", "b", "c", "d"]);
        setup.accumulator.flush();
        let first = setup.drain_one(0).unwrap();
        let header = batch::validate(&first.records).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (-1, -1, -1)
        );
        assert!(setup.drain(0).batches.is_empty(), "one at a time");
        setup.accumulator.complete(first, Some(0));
        let second = setup.drain_one(0).unwrap();
        assert!(setup.drain(0).batches.is_empty(), "still one at a time");
        setup.accumulator.complete(second, Some(2));
        setup.accumulator.expire(setup.at(1));
        assert!(
            setup.accumulator.partitions.is_empty(),
            "nothing to remember without idempotence"
        );
    }

    /// The broker's side of idempotence for one partition, with the rules of
    /// `broker/src/log/producers.rs` (or stricter, see [`BrokerPartition::produce`]): a
    /// model to check what the accumulator sends against.
    #[derive(Debug, Default)]
    struct BrokerPartition {
        /// The values stored, by offset.
        log: Vec<String>,
        /// The producer's state; `None` before its first batch.
        producer: Option<BrokerProducer>,
    }

    /// The broker's state of the producer in one partition.
    #[derive(Debug)]
    struct BrokerProducer {
        /// The epoch of its batches; another one starts afresh.
        epoch: i16,
        /// The sequence of its last record appended.
        last_sequence: i32,
        /// Its last five batches: first sequence, last sequence, base offset.
        recent: VecDeque<(i32, i32, i64)>,
    }

    impl BrokerPartition {
        /// Appends a batch or refuses it, by the sequence rules; answers the base offset.
        /// With `strict_start`, a producer or epoch new to the broker must start from
        /// sequence 0 (as with Kafka), instead of being accepted whatever its sequence.
        fn produce(&mut self, records: &Bytes, strict_start: bool) -> Result<i64, ErrorCode> {
            let header = batch::validate(records).expect("the producer sends valid batches");
            assert_eq!(header.producer_id, PRODUCER_ID);
            let last_sequence = advance_sequence(
                header.base_sequence,
                usize::try_from(header.record_count - 1).unwrap(),
            );
            match &self.producer {
                Some(producer) if producer.epoch == header.producer_epoch => {
                    let repeat = producer.recent.iter().find(|(first, last, _)| {
                        *first == header.base_sequence && *last == last_sequence
                    });
                    if let Some((_, _, base_offset)) = repeat {
                        return Ok(*base_offset);
                    }
                    if header.base_sequence != advance_sequence(producer.last_sequence, 1) {
                        return Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
                    }
                }
                _ if strict_start && header.base_sequence != 0 => {
                    return Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
                }
                // A new producer or a new epoch: accepted whatever its sequence.
                _ => {
                    self.producer = Some(BrokerProducer {
                        epoch: header.producer_epoch,
                        last_sequence: -1,
                        recent: VecDeque::new(),
                    })
                }
            }
            let base_offset = i64::try_from(self.log.len()).unwrap();
            self.log.extend(values_of(records));
            let producer = self.producer.as_mut().unwrap();
            producer.last_sequence = last_sequence;
            let recent = &mut producer.recent;
            if recent.len() == 5 {
                recent.pop_front();
            }
            recent.push_back((header.base_sequence, last_sequence, base_offset));
            Ok(base_offset)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A record to a partition.
        Append {
            partition: i32,
            size: usize,
        },
        /// Records to a partition with one outcome (`Producer::send_batch`).
        AppendGroup {
            partition: i32,
            count: usize,
            size: usize,
        },
        /// Time passes; expired batches fail, ready ones are sent.
        Advance(u64),
        /// The oldest request on the wire reaches the broker, which answers it by its rules.
        Arrive,
        /// The oldest request on the wire is refused unread: NOT_LEADER_OR_FOLLOWER when
        /// retriable, MESSAGE_TOO_LARGE otherwise.
        Refuse {
            retriable: bool,
        },
        /// One of the answers reaches the producer.
        Answer(usize),
        /// One of the answers is lost: the producer sees a disconnection.
        LoseAnswer(usize),
        /// The connection drops: the first `arriving` requests on the wire still reach the
        /// broker, the rest do not, and the producer hears of none of them.
        Disconnect {
            arriving: usize,
        },
        Flush,
        /// The broker restarts: it forgets producers' sequences, and the requests on the
        /// wire or answered are lost, which the producer hears of one by one, later.
        Restart,
        /// The producer hears that one of the requests lost with a restart failed.
        HearLost(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..3i32, 0..40usize).prop_map(|(partition, size)| Op::Append { partition, size }),
            2 => (0..3i32, 1..8usize, 0..40usize)
                .prop_map(|(partition, count, size)| Op::AppendGroup { partition, count, size }),
            3 => (0..20u64).prop_map(Op::Advance),
            3 => Just(Op::Arrive),
            1 => any::<bool>().prop_map(|retriable| Op::Refuse { retriable }),
            3 => any::<usize>().prop_map(Op::Answer),
            1 => any::<usize>().prop_map(Op::LoseAnswer),
            1 => (0..3usize).prop_map(|arriving| Op::Disconnect { arriving }),
            1 => Just(Op::Flush),
        ]
    }

    fn op_with_restarts() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            20 => op(),
            1 => Just(Op::Restart),
            3 => any::<usize>().prop_map(Op::HearLost),
        ]
    }

    /// How a record of the property test learns its outcome.
    enum Outcome {
        /// Sent alone.
        Record(Receiver),
        /// The first of a group: the group's outcome.
        Group(oneshot::Receiver<Result<crate::delivery::BatchMetadata, ClientError>>),
        /// A later record of a group: told through the group's first.
        InGroup,
    }

    /// The producer's surroundings in the property test: one connection to a broker.
    struct Harness {
        setup: Setup,
        /// The test's clock.
        millis: u64,
        /// The accumulator's in-flight limit per partition.
        max_in_flight: usize,
        /// Requests sent and not yet at the broker, in the order sent.
        wire: VecDeque<Batch>,
        /// Requests the broker answered, with its answer, not yet received.
        answered: Vec<(Batch, Result<i64, ErrorCode>)>,
        /// Requests lost with a broker restart, which the producer has not heard of yet.
        lost: Vec<Batch>,
        /// Whether the broker starts producers and epochs from sequence 0 only.
        strict_start: bool,
        /// Whether the broker restarted: then a retry of a batch it had appended before may
        /// be stored again.
        restarted: bool,
        /// The broker's partitions.
        broker: BTreeMap<i32, BrokerPartition>,
        /// Every record appended: its partition, value and delivery.
        records: Vec<(i32, String, Outcome)>,
        /// Per partition and epoch, the base sequence and record count each batch id was
        /// sent with.
        numbering: BTreeMap<(i32, i16), BTreeMap<u64, (i32, i32)>>,
    }

    const BACKOFF: Duration = Duration::from_millis(3);

    impl Harness {
        fn in_flight(&self, partition: i32) -> Vec<u64> {
            let wire = self.wire.iter();
            let answered = self.answered.iter().map(|(batch, _)| batch);
            wire.chain(answered)
                .chain(&self.lost)
                .filter(|batch| batch.topic_partition.partition == partition)
                .map(|batch| batch.id)
                .collect()
        }

        /// Expires and sends what is due, checking how batches leave.
        fn send(&mut self) {
            let now = self.setup.at(self.millis);
            self.setup.accumulator.expire(now);
            for ((), batch) in self.setup.accumulator.drain(now, |_| Some(())).batches {
                let partition = batch.topic_partition.partition;
                let in_flight = self.in_flight(partition);
                assert!(
                    in_flight.iter().all(|id| *id < batch.id),
                    "batch {} sent with {in_flight:?} in flight: out of order",
                    batch.id
                );
                assert!(in_flight.len() < self.max_in_flight, "over the limit");
                let (epoch, base_sequence, count) = numbers(&batch);
                let numbered = self.numbering.entry((partition, epoch)).or_default();
                let previous = numbered.insert(batch.id, (base_sequence, count));
                assert!(
                    previous.is_none_or(|previous| previous == (base_sequence, count)),
                    "batch {} renumbered within epoch {epoch}",
                    batch.id
                );
                let mut next_free = 0;
                for (id, (base_sequence, count)) in numbered.iter() {
                    assert!(
                        *base_sequence >= next_free,
                        "batch {id} overlaps an earlier one in epoch {epoch}: {numbered:?}"
                    );
                    next_free = base_sequence + count;
                }
                self.wire.push_back(batch);
            }
        }

        /// The producer gets the answer to `batch`, as the sender task would settle it.
        fn settle(&mut self, batch: Batch, answer: Result<i64, ErrorCode>) {
            let now = self.setup.at(self.millis);
            match answer {
                Ok(base_offset) => self.setup.accumulator.complete(batch, Some(base_offset)),
                Err(code) => {
                    let error = broker_error(code);
                    if error.is_retriable() {
                        self.setup.accumulator.retry(batch, error, now, BACKOFF);
                    } else {
                        self.setup.accumulator.fail(batch, &error);
                    }
                }
            }
        }

        fn lose(&mut self, batch: Batch) {
            let now = self.setup.at(self.millis);
            self.setup
                .accumulator
                .retry(batch, disconnected(), now, BACKOFF);
        }

        fn arrive(&mut self) {
            if let Some(batch) = self.wire.pop_front() {
                let partition = batch.topic_partition.partition;
                let answer = self
                    .broker
                    .entry(partition)
                    .or_default()
                    .produce(&batch.records, self.strict_start);
                self.answered.push((batch, answer));
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Append { partition, size } => {
                    let value = format!("{}:{}", self.records.len(), "x".repeat(size));
                    let (_, receiver) = self.setup.append(partition, &value, self.millis);
                    self.records
                        .push((partition, value, Outcome::Record(receiver)));
                }
                Op::AppendGroup {
                    partition,
                    count,
                    size,
                } => {
                    let first = self.records.len();
                    let values: Vec<String> = (first..first + count)
                        .map(|index| format!("{index}:{}", "x".repeat(size)))
                        .collect();
                    let records = values
                        .iter()
                        .map(|value| {
                            Record::new(1000, None, Some(Bytes::copy_from_slice(value.as_bytes())))
                        })
                        .collect::<Vec<_>>();
                    let (group, delivery) = GroupOutcome::new("t".to_string(), partition);
                    let now = self.setup.at(self.millis);
                    self.setup.accumulator.append_group(
                        &tp(partition),
                        &records,
                        &vec![10; count],
                        &group,
                        now,
                    );
                    let mut delivery = Some(delivery.receiver);
                    for value in values {
                        let outcome = match delivery.take() {
                            Some(receiver) => Outcome::Group(receiver),
                            None => Outcome::InGroup,
                        };
                        self.records.push((partition, value, outcome));
                    }
                }
                Op::Advance(step) => {
                    self.millis += step;
                    self.send();
                }
                Op::Arrive => self.arrive(),
                Op::Refuse { retriable } => {
                    if let Some(batch) = self.wire.pop_front() {
                        let code = if retriable {
                            ErrorCode::NOT_LEADER_OR_FOLLOWER
                        } else {
                            ErrorCode::MESSAGE_TOO_LARGE
                        };
                        self.answered.push((batch, Err(code)));
                    }
                }
                Op::Answer(index) if !self.answered.is_empty() => {
                    let (batch, answer) = self.answered.remove(index % self.answered.len());
                    self.settle(batch, answer);
                }
                Op::LoseAnswer(index) if !self.answered.is_empty() => {
                    let (batch, _) = self.answered.remove(index % self.answered.len());
                    self.lose(batch);
                }
                Op::Answer(_) | Op::LoseAnswer(_) => {}
                Op::Disconnect { arriving } => {
                    for _ in 0..arriving {
                        self.arrive();
                    }
                    let answered = std::mem::take(&mut self.answered);
                    let wire = std::mem::take(&mut self.wire);
                    for batch in answered.into_iter().map(|(batch, _)| batch).chain(wire) {
                        self.lose(batch);
                    }
                }
                Op::Flush => {
                    self.setup.accumulator.flush();
                }
                Op::Restart => {
                    self.restarted = true;
                    for broker in self.broker.values_mut() {
                        broker.producer = None;
                    }
                    let answered = std::mem::take(&mut self.answered);
                    self.lost
                        .extend(answered.into_iter().map(|(batch, _)| batch));
                    self.lost.extend(self.wire.drain(..));
                }
                Op::HearLost(index) if !self.lost.is_empty() => {
                    let batch = self.lost.remove(index % self.lost.len());
                    self.lose(batch);
                }
                Op::HearLost(_) => {}
            }
        }

        /// Sends, delivers and answers everything, without failures, until every batch
        /// settled; a millisecond passes per round.
        fn settle_everything(&mut self) {
            let mut rounds = 0;
            while !self.setup.accumulator.is_empty() {
                rounds += 1;
                assert!(rounds < 10_000, "no progress");
                self.millis += 1;
                for batch in std::mem::take(&mut self.lost) {
                    self.lose(batch);
                }
                self.send();
                while !self.wire.is_empty() {
                    self.arrive();
                }
                for (batch, answer) in std::mem::take(&mut self.answered) {
                    self.settle(batch, answer);
                }
                self.check_logs();
            }
        }

        /// Every partition's log holds records in the order they were appended, each once;
        /// after a restart, where a record may be stored again, in the order of their first
        /// copies.
        fn check_logs(&self) {
            for (partition, broker) in &self.broker {
                let mut seen = BTreeSet::new();
                let indexes: Vec<usize> = broker
                    .log
                    .iter()
                    .map(|value| value.split(':').next().unwrap().parse().unwrap())
                    .filter(|index| !self.restarted || seen.insert(*index))
                    .collect();
                assert!(
                    indexes.windows(2).all(|pair| pair[0] < pair[1]),
                    "partition {partition} stored out of order or twice: {indexes:?}"
                );
                for index in indexes {
                    assert_eq!(self.records[index].0, *partition, "in its own partition");
                }
            }
        }
    }

    /// Runs `ops`, then lets everything settle without failures, and checks the outcome.
    fn run(
        max_in_flight: usize,
        ops: Vec<Op>,
        strict_start: bool,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut harness = Harness {
            setup: setup_with(61 + 100, |config| {
                config.max_in_flight_per_partition = max_in_flight;
                config.delivery_timeout = Duration::from_millis(300);
            }),
            millis: 0,
            max_in_flight,
            wire: VecDeque::new(),
            answered: Vec::new(),
            lost: Vec::new(),
            strict_start,
            restarted: false,
            broker: BTreeMap::new(),
            records: Vec::new(),
            numbering: BTreeMap::new(),
        };
        for op in ops {
            harness.apply(op);
            harness.check_logs();
        }
        // Then nothing goes wrong any more: everything settles, and a record sent now is
        // acknowledged (whatever gap the failures left is repaired).
        harness.setup.accumulator.flush_all();
        harness.settle_everything();
        let late = harness.records.len();
        for partition in 0..3 {
            harness.apply(Op::Append { partition, size: 1 });
        }
        harness.settle_everything();
        let count = harness.records.len();
        let mut records = std::mem::take(&mut harness.records);
        let values: Vec<String> = records.iter().map(|(_, value, _)| value.clone()).collect();
        for (index, (partition, value, outcome)) in records.iter_mut().enumerate() {
            let log = &harness.broker[partition].log;
            let stored_at = |offset: i64| &log[usize::try_from(offset).unwrap()];
            match outcome {
                Outcome::Record(receiver) => match receiver.try_recv() {
                    Ok(Ok(metadata)) => {
                        proptest::prop_assert_eq!(metadata.partition, *partition);
                        proptest::prop_assert_eq!(
                            stored_at(metadata.offset),
                            value,
                            "acknowledged where stored"
                        );
                    }
                    Ok(Err(error)) => {
                        proptest::prop_assert!(index < late, "{value} failed: {error}")
                    }
                    Err(error) => proptest::prop_assert!(false, "{value} never settled: {error}"),
                },
                Outcome::Group(receiver) => match receiver.try_recv() {
                    Ok(Ok(metadata)) => {
                        proptest::prop_assert_eq!(metadata.partition, *partition);
                        for (position, offset) in metadata.offsets().enumerate() {
                            proptest::prop_assert_eq!(
                                stored_at(offset),
                                &values[index + position],
                                "a group's record acknowledged where stored"
                            );
                        }
                    }
                    Ok(Err(error)) => {
                        proptest::prop_assert!(index < late, "group at {value} failed: {error}")
                    }
                    Err(error) => {
                        proptest::prop_assert!(false, "group at {value} never settled: {error}")
                    }
                },
                Outcome::InGroup => {}
            }
        }
        proptest::prop_assert_eq!(harness.setup.buffer.available_permits(), count * 10);
        Ok(())
    }

    proptest::proptest! {
        /// Goal: whatever the interleaving of appends, sends, answers, lost answers, refusals
        /// (retriable or not), disconnections, expiries and flushes, with up to N batches of
        /// a partition in flight, the broker stores each partition's records in append order
        /// and at most once, and in the end every record is either acknowledged at the offset
        /// where the broker stored it or failed, with every reserved byte back. Method: the
        /// accumulator against a model of one connection (requests arrive in the order sent,
        /// or are lost with it) and of the broker's sequence rules.
        #[test]
        fn partitions_are_stored_in_append_order_and_at_most_once(
            max_in_flight in 1..=5usize,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            run(max_in_flight, ops, false)?;
        }

        /// Goal: the same across broker restarts, which lose the broker's sequence state and
        /// the requests in flight, while the producer hears of those failures late and may
        /// already send to the restarted broker: records stay in append order (a retry of a
        /// batch appended before the restart may be stored again), provided the broker
        /// accepts a producer or epoch it does not know only from sequence 0, as Kafka's
        /// does. Method: as above, with restarts.
        #[test]
        fn partitions_stay_in_append_order_across_restarts(
            max_in_flight in 1..=5usize,
            ops in proptest::collection::vec(op_with_restarts(), 1..300),
        ) {
            run(max_in_flight, ops, true)?;
        }
    }
}
