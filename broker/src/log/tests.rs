//! Tests of the partition log through its public API, with file surgery on its directory:
//! chopped and corrupted tails, damaged and missing indexes, leftovers of interrupted work.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_protocol::batch::{self, BatchIter};
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::{Compression, Offset};

use super::*;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

const T0: i64 = 1_700_000_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0 as u64)
}

/// A batch of `records` records of `value_bytes` bytes each, all stamped `timestamp`.
fn batch(records: usize, value_bytes: usize, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for index in 0..records {
        let value = Bytes::from(vec![b'a' + (index % 26) as u8; value_bytes]);
        builder
            .append(&Record::new(timestamp, None, Some(value)))
            .unwrap();
    }
    builder.seal(0).unwrap().to_vec()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        batch_bytes_max: 4096,
        index_interval_bytes: 256,
        index_bytes_max: 4096,
        flush: FlushPolicy::Never,
        retention: None,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: &LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config.clone(), now()).unwrap()
}

/// Appends `count` batches of 3 records of 100 bytes; returns each batch's base offset.
fn fill(log: &mut PartitionLog, count: usize) -> Vec<Offset> {
    (0..count)
        .map(|index| {
            let mut bytes = batch(3, 100, T0 + index as i64);
            log.append(&mut bytes, now()).unwrap().base_offset
        })
        .collect()
}

/// Base offsets of the batches a read returns, checking each batch's CRC.
fn read_bases(log: &PartitionLog, from: Offset, max_bytes: u64) -> Vec<i64> {
    let bytes = log.read(from, max_bytes).unwrap();
    BatchIter::validating(&bytes)
        .map(|found| found.unwrap().header.base_offset)
        .collect()
}

/// Every offset in `[log_start, log_end)` reads back as the batch that holds it.
fn assert_every_offset_readable(log: &PartitionLog) {
    for offset in log.log_start().0..log.log_end().0 {
        let bytes = log.read(Offset(offset), 1).unwrap();
        let header = batch::validate(&bytes).unwrap();
        assert!(
            header.base_offset as u64 <= offset && offset <= header.last_offset() as u64,
            "offset {offset} read batch {}..={}",
            header.base_offset,
            header.last_offset()
        );
    }
}

fn segment_log_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn append_assigns_dense_offsets_and_reads_back_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &LogConfig::default());
    let mut first = batch(3, 10, T0);
    let info = log.append(&mut first, now()).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.log_end),
        (Offset(0), Offset(2), Offset(3))
    );
    let mut second = batch(5, 10, T0);
    let info = log.append(&mut second, now()).unwrap();
    assert_eq!((info.base_offset, info.log_end), (Offset(3), Offset(8)));
    // The bytes written are the bytes received, with the offsets patched in.
    let read = log.read(Offset(0), u64::MAX).unwrap();
    assert_eq!(
        &read[..],
        [first.as_slice(), second.as_slice()].concat().as_slice()
    );
    assert_eq!(batch::validate(&second).unwrap().base_offset, 3);
}

#[test]
fn one_append_may_carry_several_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &LogConfig::default());
    let mut bytes = [batch(2, 10, T0), batch(4, 10, T0), batch(1, 10, T0)].concat();
    let info = log.append(&mut bytes, now()).unwrap();
    assert_eq!((info.batches, info.log_end), (3, Offset(7)));
    assert_eq!(read_bases(&log, Offset(0), u64::MAX), vec![0, 2, 6]);
}

#[test]
fn read_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &LogConfig::default());
    fill(&mut log, 4); // batches at 0, 3, 6, 9; log end 12
    assert_eq!(read_bases(&log, Offset(0), 1), vec![0]);
    assert_eq!(
        read_bases(&log, Offset(4), 1),
        vec![3],
        "mid-batch gives the holding batch"
    );
    assert_eq!(read_bases(&log, Offset(5), u64::MAX), vec![3, 6, 9]);
    assert_eq!(
        read_bases(&log, Offset(11), u64::MAX),
        vec![9],
        "the last offset"
    );
    assert!(
        log.read(Offset(12), u64::MAX).unwrap().is_empty(),
        "at the log end"
    );
    assert!(matches!(
        log.read(Offset(13), 100),
        Err(LogError::OffsetOutOfRange {
            requested: Offset(13),
            ..
        })
    ));
    let one_batch = log.read(Offset(0), 1).unwrap().len() as u64;
    assert_eq!(
        read_bases(&log, Offset(0), 2 * one_batch - 1),
        vec![0],
        "whole batches only"
    );
    assert_eq!(read_bases(&log, Offset(0), 2 * one_batch), vec![0, 3]);
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    let bases = fill(&mut log, 60);
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    for (segment, next) in log
        .segment_base_offsets()
        .iter()
        .zip(log.segment_base_offsets().iter().skip(1))
    {
        assert!(segment < next);
        assert!(
            bases.contains(segment),
            "segments start at batch boundaries"
        );
    }
    for file in segment_log_files(dir.path()) {
        assert!(fs::metadata(&file).unwrap().len() <= u64::from(config.segment_bytes));
    }
    assert_every_offset_readable(&log);
    // A read stops at the end of a segment; the next read continues in the next one.
    let mut next = Offset(0);
    let mut seen = Vec::new();
    while next < log.log_end() {
        let bytes = log.read(next, u64::MAX).unwrap();
        for found in BatchIter::validating(&bytes) {
            let header = found.unwrap().header;
            seen.push(Offset(header.base_offset as u64));
            next = Offset(header.next_offset() as u64);
        }
    }
    assert_eq!(seen, bases);
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_age: Duration::from_secs(60),
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    log.append(&mut batch(1, 10, T0), now()).unwrap();
    log.append(&mut batch(1, 10, T0), now() + Duration::from_secs(59))
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&mut batch(1, 10, T0), now() + Duration::from_secs(61))
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![Offset(0), Offset(2)]);
}

#[test]
fn invalid_appends_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        batch_bytes_max: 1024,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    let mut flipped = batch(2, 10, T0);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        log.append(&mut flipped, now()),
        Err(LogError::InvalidBatch { .. })
    ));
    // A good batch followed by a bad one: all or nothing.
    let mut mixed = [batch(1, 10, T0), flipped.clone()].concat();
    assert!(matches!(
        log.append(&mut mixed, now()),
        Err(LogError::InvalidBatch { .. })
    ));
    // A header that lies about its record count (CRC recomputed to match).
    let mut lying = batch(2, 10, T0);
    lying[batch::field::LAST_OFFSET_DELTA..][..4].copy_from_slice(&5i32.to_be_bytes());
    let crc = batch::compute_crc(&lying);
    lying[batch::field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append(&mut lying, now()),
        Err(LogError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut batch(1, 2000, T0), now()),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert!(matches!(
        log.append(&mut [], now()),
        Err(LogError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut [0u8; 7], now()),
        Err(LogError::InvalidBatch { .. })
    ));
    assert_eq!(log.log_end(), Offset(0));
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn open_sealed_segments_stay_within_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        open_sealed_segments_max: 3,
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    fill(&mut log, 150);
    assert!(log.segment_count() > 10, "{} segments", log.segment_count());
    assert!(log.open_sealed_segments() <= 3, "after rolls");
    log.close().unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(
        log.open_sealed_segments(),
        0,
        "a clean open opens no sealed segment"
    );
    assert_every_offset_readable(&log);
    assert!(
        log.open_sealed_segments() <= 3,
        "after reading every segment"
    );
    assert!(log.open_sealed_segments() > 0);
}

#[test]
fn clean_reopen_reads_no_log_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    let (log_end, segments) = (log.log_end(), log.segment_count());
    log.close().unwrap();
    // Replace a sealed segment's contents with zeros of the same size: an open that read
    // (or validated) it would notice; a clean open must not.
    let sealed = &segment_log_files(dir.path())[1];
    let size = fs::metadata(sealed).unwrap().len();
    let original = fs::read(sealed).unwrap();
    fs::write(sealed, vec![0u8; size as usize]).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!((log.log_end(), log.segment_count()), (log_end, segments));
    drop(log);
    fs::write(sealed, original).unwrap();
    let mut log = open(dir.path(), &config);
    assert_every_offset_readable(&log);
    let info = log.append(&mut batch(1, 10, T0), now()).unwrap();
    assert_eq!(info.base_offset, log_end);
}

#[test]
fn unclean_reopen_keeps_everything_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    let log_end = log.log_end();
    drop(log); // no close: like a crash after the writes reached the page cache
    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_end(), log_end);
    assert_eq!(
        log.recovery_point(),
        log_end,
        "recovery fsyncs what it keeps"
    );
    assert_every_offset_readable(&log);
    assert_eq!(
        log.append(&mut batch(1, 10, T0), now())
            .unwrap()
            .base_offset,
        log_end
    );
}

#[test]
fn recovery_truncates_a_tail_chopped_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 3);
    let good_end = log.log_end();
    let mut last = batch(2, 50, T0);
    log.append(&mut last, now()).unwrap();
    drop(log);
    let file = segment_log_files(dir.path()).pop().unwrap();
    let full = fs::read(&file).unwrap();
    let keep = full.len() - last.len();
    for cut in keep..full.len() {
        fs::write(&file, &full[..cut]).unwrap();
        let log = open(dir.path(), &config);
        assert_eq!(log.log_end(), good_end, "cut at {cut}");
        assert_eq!(
            fs::metadata(&file).unwrap().len() as usize,
            keep,
            "cut at {cut}"
        );
        assert_every_offset_readable(&log);
    }
}

#[test]
fn recovery_truncates_garbage_and_corrupt_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 3);
    let good_end = log.log_end();
    let good_size = log.size_bytes();
    drop(log);
    let file = segment_log_files(dir.path()).pop().unwrap();
    // Garbage after the last batch.
    let mut handle = OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut handle, &[0xAB; 500]).unwrap();
    drop(handle);
    let mut log = open(dir.path(), &config);
    assert_eq!((log.log_end(), log.size_bytes()), (good_end, good_size));
    // A batch with a flipped byte in its records: cut there, and the batches after it too.
    let mut bad = batch(2, 50, T0);
    log.append(&mut bad, now()).unwrap();
    log.append(&mut batch(2, 50, T0), now()).unwrap();
    drop(log);
    let mut bytes = fs::read(&file).unwrap();
    let position = good_size as usize + bad.len() - 3;
    bytes[position] ^= 0x10;
    fs::write(&file, &bytes).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!((log.log_end(), log.size_bytes()), (good_end, good_size));
}

#[test]
fn recovery_deletes_segments_after_a_cut() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    drop(log);
    // Damage the second-to-last segment's tail: the last segment no longer continues it.
    let files = segment_log_files(dir.path());
    let victim = &files[files.len() - 2];
    let size = fs::metadata(victim).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .set_len(size - 1)
        .unwrap();
    // Make the damaged segment part of what recovery scans: no checkpoint, full recovery.
    fs::remove_file(dir.path().join("partition.checkpoint")).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(segment_log_files(dir.path()).len(), files.len() - 1);
    assert_every_offset_readable(&log);
    let bytes = log.read(log.log_start(), u64::MAX).unwrap();
    assert!(!bytes.is_empty());
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    log.close().unwrap();
    let files = segment_log_files(dir.path());
    let sealed_index = files[0].with_extension("index");
    let sealed_time_index = files[1].with_extension("timeindex");
    let active_index = files.last().unwrap().with_extension("index");
    fs::remove_file(&sealed_index).unwrap();
    fs::write(&sealed_time_index, [0xFF; 24]).unwrap(); // decreasing entries
    fs::write(&active_index, [0x7F; 16]).unwrap(); // entries far past the log's end
    let log = open(dir.path(), &config);
    assert_every_offset_readable(&log);
    assert!(sealed_index.exists(), "rebuilt on first use");
    assert_eq!(log.offset_for_timestamp(T0 + 12).unwrap(), Some(Offset(36)));
}

#[test]
fn an_index_entry_that_lies_is_not_trusted() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    log.close().unwrap();
    // Swap the relative offsets of a sealed index's entries' positions: still increasing,
    // so the open check passes, but pointing at the wrong batches.
    let index = segment_log_files(dir.path())[0].with_extension("index");
    let mut bytes = fs::read(&index).unwrap();
    assert!(bytes.len() >= 16, "the test needs two entries");
    let relative = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    bytes[0..4].copy_from_slice(&(relative + 1).to_be_bytes());
    fs::write(&index, bytes).unwrap();
    let log = open(dir.path(), &config);
    assert_every_offset_readable(&log);
}

#[test]
fn leftovers_of_interrupted_work_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    log.close().unwrap();
    fs::write(dir.path().join("partition.checkpoint.tmp"), b"half").unwrap();
    fs::write(dir.path().join("00000000000000999999.index"), [0u8; 8]).unwrap();
    fs::write(dir.path().join("00000000000000999999.timeindex"), [0u8; 12]).unwrap();
    let log = open(dir.path(), &config);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|name| name.ends_with(".tmp")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|name| name.starts_with("00000000000000999999")),
        "{names:?}"
    );
    assert_every_offset_readable(&log);
}

#[test]
fn segments_removed_behind_the_logs_back_move_the_log_start_up() {
    // The checkpoint says the log starts at 0, but the oldest segments' files are gone (an
    // operator cleaned up by hand): the log must start at the first segment it has, so that
    // reads below it are out of range and truncation below it restarts the log instead of
    // looking for a segment that is not there.
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 60);
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    for base in &bases[..2] {
        for extension in ["log", "index", "timeindex"] {
            fs::remove_file(dir.path().join(format!("{:020}.{extension}", base.0))).unwrap();
        }
    }
    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_start(), bases[2]);
    assert!(matches!(
        log.read(Offset(0), 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_every_offset_readable(&log);
    log.truncate_to(Offset(bases[2].0 - 1), now()).unwrap();
    assert_eq!(
        (log.log_start(), log.log_end()),
        (Offset(bases[2].0 - 1), Offset(bases[2].0 - 1))
    );
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    let bases = fill(&mut log, 40); // batch i stamped T0 + i
    for (index, base) in bases.iter().enumerate() {
        assert_eq!(
            log.offset_for_timestamp(T0 + index as i64).unwrap(),
            Some(*base)
        );
    }
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(T0 + 40).unwrap(), None);
    log.close().unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.offset_for_timestamp(T0 + 39).unwrap(), Some(bases[39]));
    assert_eq!(log.offset_for_timestamp(T0 + 17).unwrap(), Some(bases[17]));
}

#[test]
fn retention_by_size_deletes_oldest_segments_and_advances_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(8192),
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    fill(&mut log, 60);
    let before = log.segment_count();
    let outcome = log.apply_retention(now()).unwrap();
    assert!(outcome.deleted_segments > 0);
    assert_eq!(log.segment_count(), before - outcome.deleted_segments);
    assert!(log.size_bytes() >= 8192 && log.size_bytes() < 8192 + 4096);
    assert_eq!(log.log_start(), log.segment_base_offsets()[0]);
    assert!(matches!(
        log.read(Offset(0), 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_every_offset_readable(&log);
    assert_eq!(segment_log_files(dir.path()).len(), log.segment_count());
    let log_start = log.log_start();
    drop(log);
    assert_eq!(
        open(dir.path(), &config).log_start(),
        log_start,
        "checkpointed"
    );
}

#[test]
fn retention_by_time_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention: Some(Duration::from_secs(3600)),
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    fill(&mut log, 30);
    let log_end = log.log_end();
    assert_eq!(log.apply_retention(now()).unwrap().deleted_segments, 0);
    let later = now() + Duration::from_secs(7200);
    let outcome = log.apply_retention(later).unwrap();
    assert_eq!(log.segment_count(), 1, "all sealed segments expired");
    assert!(outcome.deleted_segments > 0);
    assert_eq!(log.log_end(), log_end);
    assert_eq!(log.log_start(), log.segment_base_offsets()[0]);
}

#[test]
fn open_finishes_an_interrupted_retention_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(8192),
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    fill(&mut log, 60);
    let bases = log.segment_base_offsets();
    // Advance and checkpoint the log start as retention does first, then "crash" before
    // deleting any file.
    log.with_test_log_start(bases[3]);
    log.write_checkpoint().unwrap();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_start(), bases[3]);
    assert_eq!(log.segment_base_offsets()[0], bases[3]);
    assert_eq!(segment_log_files(dir.path()).len(), bases.len() - 3);
}

#[test]
fn advance_log_start_deletes_only_segments_wholly_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 80);
    let bases = log.segment_base_offsets();
    assert!(bases.len() > 6, "{bases:?}");
    // Inside segment 2: segments 0 and 1 go, segment 2 stays (it holds the new start).
    let target = Offset(bases[2].0 + 1);
    let outcome = log.advance_log_start(target).unwrap();
    assert_eq!(outcome.deleted_segments, 2);
    assert_eq!(log.log_start(), target);
    assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
    assert!(matches!(
        log.read(bases[1], 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Lower than the log start: nothing changes. Past the log end: an error.
    assert_eq!(log.advance_log_start(bases[1]).unwrap().deleted_segments, 0);
    assert_eq!(log.log_start(), target);
    assert!(log.advance_log_start(log.log_end().plus(1)).is_err());
    // At the log end: every sealed segment goes, the active one stays, appends continue.
    let log_end = log.log_end();
    log.advance_log_start(log_end).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!((log.log_start(), log.log_end()), (log_end, log_end));
    let info = log.append(&mut batch(3, 100, T0), now()).unwrap();
    assert_eq!(info.base_offset, log_end);
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!((log.log_start(), log.log_end()), (log_end, log_end.plus(3)));
    assert_every_offset_readable(&log);
}

#[test]
fn advance_log_start_survives_reopen_and_a_crash_before_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 80);
    let bases = log.segment_base_offsets();
    log.advance_log_start(bases[3]).unwrap();
    log.close().unwrap();
    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_start(), bases[3]);
    assert_eq!(segment_log_files(dir.path()).len(), bases.len() - 3);
    // A crash after the checkpoint but before any deletion: the next open deletes them.
    log.with_test_log_start(bases[5]);
    log.write_checkpoint().unwrap();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_start(), bases[5]);
    assert_eq!(segment_log_files(dir.path()).len(), bases.len() - 5);
    assert_every_offset_readable(&log);
}

#[test]
fn truncate_within_and_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    let bases = fill(&mut log, 40);
    // Mid-batch: the holding batch goes whole.
    log.truncate_to(Offset(bases[30].0 + 1), now()).unwrap();
    assert_eq!(log.log_end(), bases[30]);
    assert_every_offset_readable(&log);
    // Into an earlier segment.
    log.truncate_to(bases[5], now()).unwrap();
    assert_eq!(log.log_end(), bases[5]);
    assert!(log.segment_count() <= 2);
    assert_eq!(
        log.append(&mut batch(3, 100, T0), now())
            .unwrap()
            .base_offset,
        bases[5]
    );
    fill(&mut log, 20);
    assert_every_offset_readable(&log);
    let log_end = log.log_end();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end(), log_end);
    assert_every_offset_readable(&log);
}

#[test]
fn truncate_below_log_start_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small_segments());
    fill(&mut log, 5);
    log.truncate_to(Offset(0), now()).unwrap();
    assert_eq!(
        (log.log_start(), log.log_end(), log.segment_count()),
        (Offset(0), Offset(0), 1)
    );
    assert_eq!(
        log.append(&mut batch(1, 10, T0), now())
            .unwrap()
            .base_offset,
        Offset(0)
    );
}

#[test]
fn in_place_appends_decline_file_work_and_leave_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_age: Duration::from_secs(60),
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    fill(&mut log, 1);
    log.close().unwrap();
    // A cleanly reopened log's first append replaces the clean checkpoint first.
    let mut log = open(dir.path(), &config);
    assert_eq!(
        log.append_in_place(&mut batch(3, 100, T0), now()).unwrap(),
        None
    );
    assert_eq!(log.log_end(), Offset(3));
    fill(&mut log, 1);
    let in_place = log
        .append_in_place(&mut batch(3, 100, T0), now())
        .unwrap()
        .expect("a write into the active segment");
    assert_eq!(
        (in_place.base_offset, in_place.log_end),
        (Offset(6), Offset(9))
    );
    // One that would roll by size, then one that would roll by age: declined, nothing
    // changed; the ordinary append then rolls.
    while log.size_bytes() + 400 <= u64::from(config.segment_bytes) {
        let mut bytes = batch(3, 100, T0);
        assert!(log.append_in_place(&mut bytes, now()).unwrap().is_some());
    }
    let (end, segments) = (log.log_end(), log.segment_count());
    assert_eq!(
        log.append_in_place(&mut batch(3, 100, T0), now()).unwrap(),
        None
    );
    assert_eq!((log.log_end(), log.segment_count()), (end, segments));
    log.append(&mut batch(3, 100, T0), now()).unwrap();
    assert_eq!(log.segment_count(), segments + 1);
    let later = now() + Duration::from_secs(61);
    assert_eq!(
        log.append_in_place(&mut batch(1, 10, T0), later).unwrap(),
        None
    );
    log.append(&mut batch(1, 10, T0), later).unwrap();
    assert_eq!(log.segment_count(), segments + 2);
    // Invalid batches are refused in place as anywhere.
    let mut corrupt = batch(1, 10, T0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(log.append_in_place(&mut corrupt, later).is_err());
    assert_every_offset_readable(&log);
}

#[test]
fn trying_an_append_never_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedLog::new(open(dir.path(), &small_segments()));
    shared.append(&mut batch(1, 10, T0), now()).unwrap();
    let tried = shared
        .try_append_unflushed_if(&mut batch(2, 10, T0), now(), || true)
        .unwrap();
    assert_eq!(
        tried,
        TryAppend::Appended(Appended {
            info: AppendInfo {
                base_offset: Offset(1),
                last_offset: Offset(2),
                log_end: Offset(3),
                batches: 1,
                bytes: batch(2, 10, T0).len(),
            },
            log_start: Offset(0),
        })
    );
    assert_eq!(shared.log_end(), Offset(3), "the log end is published");
    let refused = shared.try_append_unflushed_if(&mut batch(1, 10, T0), now(), || false);
    assert_eq!(refused.unwrap(), TryAppend::NotAllowed);
    // Held by another thread (a reader here): declined at once, nothing written.
    let tried = shared
        .with_log(|_| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| shared.try_append_unflushed_if(&mut batch(1, 10, T0), now(), || true))
                    .join()
                    .unwrap()
            })
        })
        .unwrap();
    assert_eq!(tried.unwrap(), TryAppend::WouldWait);
    assert_eq!(shared.log_end(), Offset(3));
}

/// A shared log in `dir` whose appends are not flushed unless asked to.
fn unflushed_shared_log(dir: &Path) -> SharedLog {
    let config = LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    SharedLog::new(open(dir, &config))
}

#[test]
fn shared_log_flush_covers_every_append_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let shared = unflushed_shared_log(dir.path());
    let first = shared.append(&mut batch(1, 10, T0), now()).unwrap();
    let second = shared.append(&mut batch(1, 10, T0), now()).unwrap();
    assert_eq!(shared.flushed(), Offset(0));
    assert_eq!(shared.flush_count(), 0);
    // One fsync for the later append covers the earlier one too: group commit.
    shared.flush_to(second.log_end).unwrap();
    shared.flush_to(first.log_end).unwrap();
    assert_eq!(shared.flush_count(), 1);
    assert_eq!(shared.flushed(), second.log_end);
}

#[test]
fn concurrent_durable_appends_share_fsyncs_and_keep_offsets_dense() {
    let dir = tempfile::tempdir().unwrap();
    let shared = std::sync::Arc::new(SharedLog::new(open(dir.path(), &LogConfig::default())));
    let threads = 8;
    let appends_each = 40;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let shared = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                (0..appends_each)
                    .map(|_| {
                        let info = shared.append(&mut batch(2, 64, T0), now()).unwrap();
                        // Acknowledged means durable.
                        assert!(shared.flushed() >= info.log_end);
                        info.base_offset.0
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut bases: Vec<u64> = handles
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    bases.sort_unstable();
    let expected: Vec<u64> = (0..threads * appends_each)
        .map(|index| index as u64 * 2)
        .collect();
    assert_eq!(bases, expected);
    assert!(shared.flush_count() <= (threads * appends_each) as u64);
    tracing::info!(
        appends = threads * appends_each,
        fsyncs = shared.flush_count(),
        "group commit"
    );
}

#[test]
fn the_flusher_role_is_held_by_one_caller_and_given_up_after_its_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let shared = unflushed_shared_log(dir.path());
    let appended = shared.append(&mut batch(1, 10, T0), now()).unwrap();
    assert!(shared.claim_flusher());
    assert!(!shared.claim_flusher(), "one flusher at a time");
    shared.flush_rounds().unwrap();
    assert_eq!(shared.flushed(), appended.log_end);
    assert_eq!(shared.flush_count(), 1);
    assert!(shared.claim_flusher(), "the rounds gave the role up");
    shared.flush_rounds().unwrap();
    assert_eq!(shared.flush_count(), 1, "nothing new: no fsync");
    assert!(shared.claim_flusher(), "given up again");
}

#[test]
fn an_append_made_while_the_last_round_ends_gets_a_round_of_its_own() {
    // The race the flusher's rounds close: an append lands after a round's fsync was
    // fixed, and its waiter finds the role still taken, so it leaves the fsync to the
    // flusher. The flusher must see it before it stops.
    let dir = tempfile::tempdir().unwrap();
    let shared = unflushed_shared_log(dir.path());
    shared.append(&mut batch(1, 10, T0), now()).unwrap();
    assert!(shared.claim_flusher());
    let mut late = None;
    shared
        .flush_rounds_of(|log| {
            log.flush_to(log.log_end())?;
            if late.is_none() {
                late = Some(log.append(&mut batch(1, 10, T0), now())?.log_end);
                assert!(!log.claim_flusher(), "the role is still held");
            }
            Ok(())
        })
        .unwrap();
    let late = late.unwrap();
    assert_eq!(shared.flushed(), late, "the late append was flushed too");
    assert_eq!(shared.flush_count(), 2);
    assert!(shared.claim_flusher(), "and the role was given up");
}

#[test]
fn waiters_that_find_the_flusher_role_taken_are_covered_by_its_rounds() {
    // Each thread appends and then waits as an acks=all produce request does: it runs the
    // rounds if it can claim the flusher's role, and otherwise waits for the flushed offset
    // to move and tries again. Every waiter must be covered, within a bound.
    let dir = tempfile::tempdir().unwrap();
    let shared = std::sync::Arc::new(unflushed_shared_log(dir.path()));
    let threads = 8;
    let appends_each = 50;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let shared = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                for _ in 0..appends_each {
                    let info = shared
                        .append_unflushed(&mut batch(2, 64, T0), now())
                        .unwrap();
                    let mut flushed = shared.subscribe_flushed();
                    let deadline = std::time::Instant::now() + Duration::from_secs(20);
                    loop {
                        if *flushed.borrow_and_update() >= info.log_end {
                            break;
                        }
                        if shared.claim_flusher() {
                            shared.flush_rounds().unwrap();
                            continue;
                        }
                        while !flushed.has_changed().unwrap() {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "a waiter was left uncovered: flushed {} < {}",
                                shared.flushed(),
                                info.log_end
                            );
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(shared.log_end(), Offset(2 * threads * appends_each));
    assert_eq!(shared.flushed(), shared.log_end());
    assert!(shared.flush_count() <= threads * appends_each);
    assert!(shared.claim_flusher(), "the role was given up at the end");
}

#[test]
fn periodic_checkpoints_write_only_what_moved() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 3);
    log.close().unwrap();
    let mut log = open(dir.path(), &config);
    assert!(
        !log.checkpoint_if_changed().unwrap(),
        "unchanged since a clean open"
    );
    fill(&mut log, 3); // the first append marks the checkpoint unclean
    assert!(
        !log.checkpoint_if_changed().unwrap(),
        "nothing flushed yet: nothing moved"
    );
    log.flush().unwrap();
    assert!(
        log.checkpoint_if_changed().unwrap(),
        "the recovery point moved"
    );
    assert!(!log.checkpoint_if_changed().unwrap());
    let log_end = log.log_end();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end(), log_end);
}

#[test]
fn closed_log_reopens_at_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let shared = SharedLog::new(open(dir.path(), &config));
    for _ in 0..20 {
        shared.append(&mut batch(3, 100, T0), now()).unwrap();
    }
    let log_end = shared.log_end();
    shared.close().unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end(), log_end);
    assert_eq!(log.recovery_point(), log_end);
    assert_every_offset_readable(&log);
}

/// Total bytes of the directory's `.log` files.
fn log_bytes(dir: &Path) -> u64 {
    segment_log_files(dir)
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .sum()
}

/// Whether an append failed as on a full disk (the fault injection's `ENOSPC`).
fn failed_for_space(result: &LogResult<AppendInfo>) -> bool {
    matches!(result, Err(LogError::Io { source, .. }) if source.raw_os_error() == Some(28))
}

#[test]
fn a_write_failing_part_way_leaves_no_partial_batch() {
    // A full disk stops the write of an append after some bytes. The segment must be cut back
    // to its length before the write (no partial batch on disk, the log end unchanged), the
    // log must stay online, the next append must continue at the same offset, and a reopen
    // after a crash must find nothing to cut. Small segments, so that some attempts roll.
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 3);
    let attempt = batch(3, 100, T0);
    for written in [0, 1, batch::HEADER_BYTES, attempt.len() - 1, 0, 7, 100, 200] {
        let log_end = log.log_end();
        let bytes = log_bytes(dir.path());
        fault::fail_next_write_after(written);
        let result = log.append(&mut attempt.clone(), now());
        assert!(failed_for_space(&result), "{result:?}");
        assert_eq!(log.log_end(), log_end);
        assert_eq!(
            log_bytes(dir.path()),
            bytes,
            "cut back after {written} bytes"
        );
        let info = log.append(&mut attempt.clone(), now()).unwrap();
        assert_eq!(info.base_offset, log_end, "the next append continues");
    }
    assert!(log.segment_count() > 1, "some attempts rolled a segment");
    assert_every_offset_readable(&log);
    let (log_end, bytes) = (log.log_end(), log_bytes(dir.path()));
    drop(log); // A crash: no clean shutdown.
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end(), log_end);
    assert_eq!(
        log_bytes(dir.path()),
        bytes,
        "recovery found nothing to cut"
    );
    assert_every_offset_readable(&log);
}

#[test]
fn an_index_page_the_disk_refuses_undoes_the_append() {
    // Index files are preallocated sparse and written through a map: an entry's page gets its
    // block by a write first, and when the disk refuses it (after the `.log` write succeeded)
    // the append is undone whole. The offset index fails in the first round, the time index
    // (after the offset index took its entry) in the second. A stale index entry left behind
    // would make the next append's entry panic (entries must increase).
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    for successes in [0, 1] {
        let mut log = open(dir.path(), &config);
        // A fresh segment (the first round's log, or one rolled now): the next append after
        // the first is due its first index entries, in pages without blocks.
        log.roll(now()).unwrap();
        fill(&mut log, 1);
        let (log_end, bytes) = (log.log_end(), log_bytes(dir.path()));
        fault::fail_index_allocation_after(successes);
        let result = log.append(&mut batch(3, 100, T0), now());
        assert!(failed_for_space(&result), "{result:?}");
        assert_eq!(log.log_end(), log_end);
        assert_eq!(log_bytes(dir.path()), bytes, "the written batch is cut off");
        let info = log.append(&mut batch(3, 100, T0), now()).unwrap();
        assert_eq!(info.base_offset, log_end);
        fill(&mut log, 5);
        assert_every_offset_readable(&log);
        log.close().unwrap();
    }
    let log = open(dir.path(), &config);
    assert_every_offset_readable(&log);
}

#[test]
fn a_roll_the_disk_refuses_keeps_the_active_segment() {
    // Sealing adds the segment's final time index entry; when the disk refuses its page the
    // roll fails, and the segment stays active: appends go on and a later roll succeeds.
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    fill(&mut log, 1);
    fault::fail_index_allocation_after(0);
    let result = log.roll(now());
    assert!(
        matches!(&result, Err(LogError::Io { source, .. }) if source.raw_os_error() == Some(28)),
        "{result:?}"
    );
    assert_eq!(log.segment_count(), 1);
    assert_eq!(fill(&mut log, 1), vec![Offset(3)]);
    log.roll(now()).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(fill(&mut log, 1), vec![Offset(6)]);
    assert_every_offset_readable(&log);
}
