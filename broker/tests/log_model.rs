//! Property test: random sequences of appends, reads, rolls, reopens (clean and unclean),
//! retention, truncation and timestamp lookups keep the partition log consistent with a
//! plain in-memory model (a list of batches).
//!
//! Method: proptest generates the operations; after each one the log's offsets are compared
//! with the model's, and every read's bytes must be the model's batches, byte for byte.
//! Failures shrink to a minimal sequence, and proptest prints the seed to replay it
//! (`PROPTEST_CASES` raises the case count for a longer run).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_broker::log::{FlushPolicy, LogConfig, LogError, PartitionLog};
use mq_protocol::batch::{self, BatchIter};
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::{Compression, Offset};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Append batches of (records, value bytes, timestamp offset).
    Append(Vec<(usize, usize, i64)>),
    /// Read from a point chosen relative to the log (per mille of the range, may fall outside).
    Read {
        at: i64,
        max_bytes: u64,
    },
    Roll,
    Reopen {
        clean: bool,
    },
    Flush,
    Retention,
    /// Truncate to a point chosen like `Read`'s.
    Truncate {
        at: i64,
    },
    TimestampLookup {
        timestamp: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1usize..6, 0usize..400, 0i64..50), 1..4).prop_map(Op::Append),
        4 => (-50i64..1100, prop_oneof![Just(1u64), 1u64..3000, Just(u64::MAX)])
            .prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => Just(Op::Flush),
        1 => Just(Op::Retention),
        1 => (-50i64..1100).prop_map(|at| Op::Truncate { at }),
        1 => (-5i64..60).prop_map(|timestamp| Op::TimestampLookup { timestamp }),
    ]
}

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 3000,
        batch_bytes_max: 3000,
        index_interval_bytes: 200,
        index_bytes_max: 1024,
        retention: None,
        retention_bytes: Some(6000),
        flush: FlushPolicy::Never,
        // Tiny, so that reads keep evicting and reopening sealed segments.
        open_sealed_segments_max: 2,
        ..LogConfig::default()
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0 as u64)
}

fn make_batch(records: usize, value_bytes: usize, timestamp: i64, tag: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for index in 0..records {
        let mut value = format!("{tag}:{index}:").into_bytes();
        value.resize(value.len() + value_bytes, b'.');
        builder
            .append(&Record::new(T0 + timestamp, None, Some(Bytes::from(value))))
            .unwrap();
    }
    builder.seal(0).unwrap().to_vec()
}

/// The model: the batches of the log, as stored (offsets patched), and the log start.
#[derive(Default)]
struct Model {
    batches: Vec<Vec<u8>>,
    log_start: u64,
    log_end: u64,
}

impl Model {
    fn header(batch: &[u8]) -> batch::BatchHeader {
        batch::validate(batch).unwrap()
    }

    /// Index of the batch holding `offset` or the first after it.
    fn position_of(&self, offset: u64) -> Option<usize> {
        self.batches
            .iter()
            .position(|batch| Model::header(batch).last_offset() as u64 >= offset)
    }

    /// Maps a per-mille point onto offsets around the log.
    fn pick(&self, at: i64) -> u64 {
        let span = (self.log_end - self.log_start) as i64;
        (self.log_start as i64 + span * at / 1000).max(0) as u64
    }
}

fn check_read(log: &PartitionLog, model: &Model, from: u64, max_bytes: u64) {
    let result = log.read(Offset(from), max_bytes);
    if from < model.log_start || from > model.log_end {
        assert!(
            matches!(result, Err(LogError::OffsetOutOfRange { .. })),
            "read {from} outside [{}, {}]: {result:?}",
            model.log_start,
            model.log_end
        );
        return;
    }
    let bytes = result.unwrap();
    if from == model.log_end {
        assert!(bytes.is_empty());
        return;
    }
    let first = model.position_of(from).expect("from < log_end");
    let returned: Vec<&[u8]> = BatchIter::validating(&bytes)
        .map(|found| found.unwrap().bytes)
        .collect();
    assert!(
        !returned.is_empty(),
        "a read below the log end returns a batch"
    );
    assert!(
        returned.len() == 1 || bytes.len() as u64 <= max_bytes,
        "more than max_bytes only for a single batch"
    );
    for (index, batch) in returned.iter().enumerate() {
        assert_eq!(
            *batch,
            model.batches[first + index].as_slice(),
            "batch {index} of read at {from}"
        );
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), now()).unwrap();
    let mut model = Model::default();
    let mut tag = 0u64;
    for op in ops {
        match op {
            Op::Append(batches) => {
                let mut bytes = Vec::new();
                let mut parts = Vec::new();
                for (records, value_bytes, timestamp) in batches {
                    tag += 1;
                    let batch = make_batch(records, value_bytes, timestamp, tag);
                    bytes.extend_from_slice(&batch);
                    parts.push(batch.len());
                }
                match log.append(&mut bytes, now()) {
                    Ok(info) => {
                        assert_eq!(info.base_offset.0, model.log_end);
                        let mut position = 0;
                        for len in parts {
                            model.batches.push(bytes[position..position + len].to_vec());
                            position += len;
                        }
                        model.log_end = info.log_end.0;
                    }
                    Err(LogError::BatchTooLarge { .. }) => {
                        assert!(bytes.len() > config().batch_bytes_max as usize)
                    }
                    Err(error) => panic!("append failed: {error}"),
                }
            }
            Op::Read { at, max_bytes } => check_read(&log, &model, model.pick(at), max_bytes),
            Op::Roll => log.roll(now()).unwrap(),
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                log = PartitionLog::open(dir.path(), config(), now()).unwrap();
            }
            Op::Flush => {
                log.flush().unwrap();
                assert_eq!(log.recovery_point().0, model.log_end);
            }
            Op::Retention => {
                let outcome = log.apply_retention(now()).unwrap();
                let log_start = outcome.log_start.0;
                assert!(log_start >= model.log_start && log_start <= model.log_end);
                model
                    .batches
                    .retain(|batch| Model::header(batch).base_offset as u64 >= log_start);
                if let Some(first) = model.batches.first() {
                    assert_eq!(
                        Model::header(first).base_offset as u64,
                        log_start,
                        "log start at a batch"
                    );
                }
                model.log_start = log_start;
                if outcome.deleted_segments > 0 {
                    assert!(log.size_bytes() >= config().retention_bytes.unwrap());
                }
            }
            Op::Truncate { at } => {
                let target = model.pick(at);
                log.truncate_to(Offset(target), now()).unwrap();
                if target <= model.log_start {
                    if target < model.log_end {
                        model = Model {
                            batches: Vec::new(),
                            log_start: target,
                            log_end: target,
                        };
                    }
                } else if let Some(cut) = model.position_of(target) {
                    model.log_end = Model::header(&model.batches[cut]).base_offset as u64;
                    model.batches.truncate(cut);
                }
            }
            Op::TimestampLookup { timestamp } => {
                let expected = model
                    .batches
                    .iter()
                    .map(|batch| Model::header(batch))
                    .find(|header| header.max_timestamp >= T0 + timestamp)
                    .map(|header| Offset(header.base_offset as u64));
                assert_eq!(log.offset_for_timestamp(T0 + timestamp).unwrap(), expected);
            }
        }
        assert_eq!(log.log_end().0, model.log_end, "log end");
        assert_eq!(log.log_start().0, model.log_start, "log start");
    }
    // Finally every offset reads back as the model says.
    for offset in model.log_start..model.log_end {
        check_read(&log, &model, offset, 1);
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), config(), now()).unwrap();
    assert_eq!(
        log.log_end().0,
        model.log_end,
        "log end after a final unclean reopen"
    );
    check_read(&log, &model, model.log_start, u64::MAX);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
