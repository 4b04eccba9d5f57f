//! Idempotent producers' sequence state of one partition, in memory: what makes pipelined
//! produces safe to retry.
//!
//! A producer that sets a producer id (>= 0) in its batch headers numbers its records per
//! partition (`base_sequence`). For each producer id the log remembers the epoch, the last
//! appended sequence and its last few batches. A batch is then
//! - appended when its first sequence follows the last one, or when it starts at sequence 0
//!   and its producer, or the producer's epoch, is new to this log (the state starts afresh;
//!   a new producer or epoch starting elsewhere is refused, as a gap),
//! - answered with its original offsets, and not written again, when it repeats one of the
//!   recent batches exactly (a retry whose acknowledgement was lost),
//! - refused otherwise (`OUT_OF_ORDER_SEQUENCE_NUMBER`): an earlier batch of that producer
//!   was not appended, and the producer must resend that one first.
//!
//! So a producer with several batches of a partition in flight never gets them appended out
//! of order, whatever fails in between. The state lives in memory and is rebuilt when the
//! log is opened from the batches in the last [`PRODUCER_STATE_SCAN_BYTES`] of its active
//! segment, so a retry of a batch whose answer was lost in a restart is still recognised.
//! A producer whose batches are not there (older, or before a roll) is new to the log: its
//! next batch is refused unless it starts at 0, so the producer renumbers what it has not
//! had acknowledged under a new epoch and resends it in order, and a retry of a batch it
//! appended long before is then stored again (at-least-once). Batches without a producer
//! id are not checked.
//!
//! Work is per batch, from the header, never per record.

use std::collections::{HashMap, VecDeque};

use mq_protocol::batch::BatchHeader;
use mq_protocol::Offset;

/// Recent batches remembered per producer for deduplication (Kafka keeps five, which is
/// also the most batches its producer pipelines per partition).
const RECENT_BATCHES: usize = 5;

/// Bytes at the end of the active segment whose batches rebuild the state when a log is
/// opened: enough for five 1 MiB batches of each of a few producers still retrying, and at
/// most a few milliseconds of reading.
pub(crate) const PRODUCER_STATE_SCAN_BYTES: u64 = 8 * 1024 * 1024;

/// Producers remembered per partition; the least recently used is forgotten beyond this
/// (its next batch is then refused unless it starts at 0, and the producer renumbers).
pub(crate) const PRODUCERS_MAX: usize = 4096;

/// A batch a producer appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Appended {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: Offset,
    last_offset: Offset,
}

/// One producer's state in one partition.
#[derive(Debug)]
struct Producer {
    epoch: i16,
    last_sequence: i32,
    recent: VecDeque<Appended>,
    /// When it last appended, in append counts (for forgetting the least recent).
    last_used: u64,
}

/// What to do with one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Append it.
    Append,
    /// Already appended at these offsets: answer them, write nothing.
    Duplicate {
        /// The original batch's base offset.
        base_offset: Offset,
        /// The original batch's last offset.
        last_offset: Offset,
    },
    /// Refuse: its first sequence does not follow the producer's last.
    OutOfOrder {
        /// The sequence the producer's next batch must start with.
        expected: i32,
    },
    /// Refuse: it overlaps appended sequences without being a recent batch.
    Overlapping,
}

/// The sequence state of a partition's idempotent producers.
#[derive(Debug, Default)]
pub(crate) struct Producers {
    by_id: HashMap<i64, Producer>,
    appends: u64,
}

impl Producers {
    /// How `header`'s batch fits the producer's sequence, as if `pending` (batches of the
    /// same append checked before it, not yet recorded) had been appended.
    pub(crate) fn check(&self, header: &BatchHeader, pending: &[BatchHeader]) -> Check {
        if header.producer_id < 0 {
            return Check::Append;
        }
        let earlier = pending
            .iter()
            .rev()
            .find(|other| other.producer_id == header.producer_id);
        let last_sequence = match (earlier, self.by_id.get(&header.producer_id)) {
            (Some(other), _) if other.producer_epoch == header.producer_epoch => {
                last_sequence_of(other)
            }
            (Some(_), _) => return start_of_epoch(header),
            (None, Some(producer)) if producer.epoch == header.producer_epoch => {
                if let Some(recent) = producer.recent.iter().find(|recent| {
                    recent.first_sequence == header.base_sequence
                        && recent.last_sequence == last_sequence_of(header)
                }) {
                    return Check::Duplicate {
                        base_offset: recent.base_offset,
                        last_offset: recent.last_offset,
                    };
                }
                producer.last_sequence
            }
            // New producer, or a new epoch: it starts afresh, at sequence 0.
            (None, _) => return start_of_epoch(header),
        };
        let expected = next_sequence(last_sequence);
        if header.base_sequence == expected {
            Check::Append
        } else if self
            .by_id
            .get(&header.producer_id)
            .is_some_and(|producer| overlaps(producer, header))
        {
            Check::Overlapping
        } else {
            Check::OutOfOrder { expected }
        }
    }

    /// Records an appended batch (its header carries its base offset).
    pub(crate) fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        self.appends += 1;
        let appends = self.appends;
        if !self.by_id.contains_key(&header.producer_id) && self.by_id.len() >= PRODUCERS_MAX {
            self.forget_least_recent();
        }
        let producer = self
            .by_id
            .entry(header.producer_id)
            .or_insert_with(|| Producer {
                epoch: header.producer_epoch,
                last_sequence: -1,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
                last_used: appends,
            });
        if producer.epoch != header.producer_epoch {
            producer.epoch = header.producer_epoch;
            producer.recent.clear();
        }
        producer.last_sequence = last_sequence_of(header);
        producer.last_used = appends;
        if producer.recent.len() == RECENT_BATCHES {
            producer.recent.pop_front();
        }
        let base_offset = Offset(u64::try_from(header.base_offset).unwrap_or(0));
        let count = u64::try_from(header.last_offset_delta).unwrap_or(0);
        producer.recent.push_back(Appended {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence_of(header),
            base_offset,
            last_offset: base_offset.plus(count),
        });
    }

    /// How many producers are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .by_id
            .iter()
            .min_by_key(|(_, producer)| producer.last_used)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.by_id.remove(&id);
        }
    }
}

/// A producer's first batch in this log, or the first of a new epoch, must start at 0:
/// otherwise earlier batches of it may be missing (appended before a restart, or not yet).
fn start_of_epoch(header: &BatchHeader) -> Check {
    if header.base_sequence == 0 {
        Check::Append
    } else {
        Check::OutOfOrder { expected: 0 }
    }
}

/// The sequence of a batch's last record (sequences wrap from `i32::MAX` to 0, as Kafka's).
fn last_sequence_of(header: &BatchHeader) -> i32 {
    let sum = i64::from(header.base_sequence) + i64::from(header.last_offset_delta);
    i32::try_from(sum % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Whether the batch's first sequence lies within the producer's remembered batches (a
/// repeat that is not exactly one of them).
fn overlaps(producer: &Producer, header: &BatchHeader) -> bool {
    producer.recent.iter().any(|recent| {
        recent.first_sequence <= header.base_sequence
            && header.base_sequence <= recent.last_sequence
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    fn append(producers: &mut Producers, header: &mut BatchHeader, next_offset: &mut u64) {
        assert_eq!(producers.check(header, &[]), Check::Append);
        header.base_offset = *next_offset as i64;
        *next_offset += u64::try_from(header.last_offset_delta).unwrap() + 1;
        producers.record(header);
    }

    #[test]
    fn batches_must_follow_their_producers_last_sequence() {
        let mut producers = Producers::default();
        let mut offset = 0;
        append(&mut producers, &mut batch(7, 0, 0, 3), &mut offset);
        append(&mut producers, &mut batch(7, 0, 3, 2), &mut offset);
        assert_eq!(
            producers.check(&batch(7, 0, 6, 1), &[]),
            Check::OutOfOrder { expected: 5 },
            "a gap: sequence 5 was never appended"
        );
        append(&mut producers, &mut batch(7, 0, 5, 1), &mut offset);
        assert_eq!(
            producers.check(&batch(8, 0, 0, 1), &[]),
            Check::Append,
            "a new producer"
        );
        assert_eq!(
            producers.check(&batch(7, 1, 0, 1), &[]),
            Check::Append,
            "a new epoch"
        );
        assert_eq!(
            producers.check(&batch(8, 0, 40, 1), &[]),
            Check::OutOfOrder { expected: 0 },
            "a new producer starting elsewhere than 0"
        );
        assert_eq!(
            producers.check(&batch(7, 1, 40, 1), &[]),
            Check::OutOfOrder { expected: 0 },
            "a new epoch starting elsewhere than 0"
        );
        assert_eq!(
            producers.check(&batch(-1, -1, -1, 5), &[]),
            Check::Append,
            "no producer id: not checked"
        );
    }

    #[test]
    fn a_repeated_recent_batch_is_answered_with_its_original_offsets() {
        let mut producers = Producers::default();
        let mut offset = 100;
        append(&mut producers, &mut batch(7, 0, 0, 3), &mut offset);
        append(&mut producers, &mut batch(7, 0, 3, 2), &mut offset);
        assert_eq!(
            producers.check(&batch(7, 0, 0, 3), &[]),
            Check::Duplicate {
                base_offset: Offset(100),
                last_offset: Offset(102)
            }
        );
        assert_eq!(
            producers.check(&batch(7, 0, 1, 2), &[]),
            Check::Overlapping,
            "overlapping sequences that are not a batch appended"
        );
        for sequence in (5..50).step_by(5) {
            append(&mut producers, &mut batch(7, 0, sequence, 5), &mut offset);
        }
        assert!(
            matches!(
                producers.check(&batch(7, 0, 0, 3), &[]),
                Check::OutOfOrder { .. }
            ),
            "too old to be remembered: refused, not appended again"
        );
    }

    #[test]
    fn batches_of_one_append_are_checked_against_each_other() {
        let producers = Producers::default();
        let pending = [batch(7, 0, 0, 2)];
        assert_eq!(producers.check(&batch(7, 0, 2, 1), &pending), Check::Append);
        assert_eq!(
            producers.check(&batch(7, 0, 3, 1), &pending),
            Check::OutOfOrder { expected: 2 }
        );
    }

    #[test]
    fn sequences_wrap_after_the_largest() {
        let mut producers = Producers::default();
        let mut offset = 0;
        append(&mut producers, &mut batch(7, 0, 0, 1), &mut offset);
        if let Some(producer) = producers.by_id.get_mut(&7) {
            // As if 2^31 - 2 records had followed (and the first batch was long forgotten).
            producer.last_sequence = i32::MAX - 2;
            producer.recent.clear();
        }
        append(
            &mut producers,
            &mut batch(7, 0, i32::MAX - 1, 2),
            &mut offset,
        );
        assert_eq!(producers.check(&batch(7, 0, 0, 1), &[]), Check::Append);
        assert!(matches!(
            producers.check(&batch(7, 0, i32::MAX, 1), &[]),
            Check::Overlapping
        ));
    }

    #[test]
    fn the_least_recent_producer_is_forgotten_at_the_limit() {
        let mut producers = Producers::default();
        let mut offset = 0;
        for id in 0..PRODUCERS_MAX as i64 + 1 {
            append(&mut producers, &mut batch(id, 0, 0, 1), &mut offset);
        }
        assert_eq!(producers.len(), PRODUCERS_MAX);
        assert_eq!(
            producers.check(&batch(0, 0, 1, 1), &[]),
            Check::OutOfOrder { expected: 0 },
            "producer 0 was forgotten: it must start afresh at 0"
        );
        assert_eq!(
            producers.check(&batch(1, 0, 1, 1), &[]),
            Check::Append,
            "producer 1 is remembered"
        );
    }
}

/// The rules through a real log: what is written, what is answered, and a restart.
#[cfg(test)]
mod log_tests {
    use std::time::SystemTime;

    use bytes::{Bytes, BytesMut};
    use mq_protocol::record::{BatchBuilder, Record};
    use mq_protocol::Compression;

    use crate::log::{LogConfig, LogError, PartitionLog};

    fn batch(producer_id: i64, base_sequence: i32, records: usize) -> BytesMut {
        let mut builder =
            BatchBuilder::new(Compression::None).with_producer(producer_id, 0, base_sequence);
        for index in 0..records {
            let value = Bytes::from(format!("record {index}"));
            builder
                .append(&Record::new(1_700_000_000_000, None, Some(value)))
                .unwrap();
        }
        BytesMut::from(&builder.seal(0).unwrap()[..])
    }

    #[test]
    fn retries_are_deduplicated_and_gaps_refused_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), now).unwrap();
        let first = log.append(&mut batch(7, 0, 2), now).unwrap();
        assert_eq!((first.base_offset.0, first.last_offset.0), (0, 1));
        log.append(&mut batch(7, 2, 3), now).unwrap();
        assert_eq!(log.log_end().0, 5);

        // A retry of the first batch (its acknowledgement lost): its offsets, nothing written.
        let again = log.append(&mut batch(7, 0, 2), now).unwrap();
        assert_eq!((again.base_offset.0, again.last_offset.0), (0, 1));
        assert_eq!(again.batches, 0);
        assert_eq!(log.log_end().0, 5, "not written twice");

        // A batch after a missing one (sequence 5 never came) is refused.
        let gap = log.append(&mut batch(7, 6, 1), now).unwrap_err();
        assert!(
            matches!(
                gap,
                LogError::OutOfOrderSequence {
                    expected: 5,
                    found: 6,
                    ..
                }
            ),
            "{gap}"
        );
        assert_eq!(log.log_end().0, 5);
        log.append(&mut batch(7, 5, 1), now).unwrap();
        log.append(&mut batch(7, 6, 1), now).unwrap();
        assert_eq!(log.log_end().0, 7);

        // Reopened (after a clean close, or a crash: the same), the state is rebuilt from
        // the log's tail: a retry is still recognised, and the sequence goes on.
        log.close().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), now).unwrap();
        let again = log.append(&mut batch(7, 6, 1), now).unwrap();
        assert_eq!((again.base_offset.0, again.batches), (6, 0));
        let gap = log.append(&mut batch(7, 8, 1), now).unwrap_err();
        assert!(
            matches!(gap, LogError::OutOfOrderSequence { expected: 7, .. }),
            "{gap}"
        );
        log.append(&mut batch(7, 7, 1), now).unwrap();
        assert_eq!(log.log_end().0, 8);
    }

    #[test]
    fn a_producer_not_in_the_reopened_logs_tail_must_start_again_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), now).unwrap();
        log.append(&mut batch(7, 0, 2), now).unwrap();
        // Another producer's batches fill more than the scanned tail.
        let filler = Bytes::from("x".repeat(64 * 1024));
        let records = (super::PRODUCER_STATE_SCAN_BYTES / filler.len() as u64) as i32 + 2;
        for sequence in 0..records {
            let mut builder = BatchBuilder::new(Compression::None).with_producer(9, 0, sequence);
            let record = Record::new(1_700_000_000_000, None, Some(filler.clone()));
            builder.append(&record).unwrap();
            let mut sealed = BytesMut::from(&builder.seal(0).unwrap()[..]);
            log.append(&mut sealed, now).unwrap();
        }
        log.close().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), now).unwrap();
        let forgotten = log.append(&mut batch(7, 2, 1), now).unwrap_err();
        assert!(
            matches!(
                forgotten,
                LogError::OutOfOrderSequence {
                    expected: 0,
                    found: 2,
                    ..
                }
            ),
            "{forgotten}"
        );
        log.append(&mut batch(7, 0, 1), now).unwrap();
        log.append(&mut batch(9, records, 1), now)
            .expect("producer 9 is in the tail: its sequence goes on");
    }
}
