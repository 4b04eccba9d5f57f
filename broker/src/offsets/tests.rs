//! Tests of the committed-offsets store through its API and with surgery on its log: replay,
//! tombstones, compaction interrupted at every step, damaged records, torn tails.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::{Compression, Offset};

use super::record::{encode_key, OffsetKey};
use super::*;
use crate::log::{LogConfig, PartitionLog};
use crate::manager::TopicPartition;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: Arc::from(topic),
        partition,
    }
}

fn value(offset: u64) -> CommittedOffset {
    CommittedOffset {
        offset: Offset(offset),
        metadata: Some(format!("at {offset}")),
        commit_timestamp_ms: 1_700_000_000_000,
    }
}

fn open(dir: &Path) -> OffsetStore {
    init_tracing();
    OffsetStore::open(dir, 10).unwrap()
}

/// Every (group, partition, offset) the store holds, sorted.
fn contents(store: &OffsetStore) -> Vec<(String, TopicPartition, u64)> {
    store
        .groups()
        .into_iter()
        .flat_map(|group| {
            store
                .fetch(&group, None)
                .into_iter()
                .map(move |(partition, value)| (group.clone(), partition, value.unwrap().offset.0))
        })
        .collect()
}

fn records_in_log(dir: &Path) -> u64 {
    let log = PartitionLog::open(dir, LogConfig::default(), SystemTime::now()).unwrap();
    log.log_end().0 - log.log_start().0
}

/// Commits many overwrites of a few keys: lots of records, few live entries.
fn commit_overwrites(store: &OffsetStore, rounds: u64) {
    for round in 0..rounds {
        for group in ["billing", "audit"] {
            let entries: Vec<_> = (0..3)
                .map(|p| (tp("orders", p), value(round * 10 + p as u64)))
                .collect();
            store.commit(group, &entries).unwrap();
        }
    }
}

#[test]
fn commits_survive_reopen_and_the_last_value_per_key_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(
            "billing",
            &[(tp("orders", 0), value(5)), (tp("orders", 1), value(7))],
        )
        .unwrap();
    store
        .commit("billing", &[(tp("orders", 0), value(9))])
        .unwrap();
    store
        .commit("audit", &[(tp("payments", 2), value(1))])
        .unwrap();
    let fetched = store.fetch("billing", Some(&[tp("orders", 0), tp("orders", 5)]));
    assert_eq!(
        fetched,
        vec![(tp("orders", 0), Some(value(9))), (tp("orders", 5), None)]
    );
    let before = contents(&store);
    store.close().unwrap();
    assert!(matches!(
        store.commit("billing", &[(tp("orders", 0), value(1))]),
        Err(OffsetsError::Closed)
    ));
    let store = open(dir.path());
    assert_eq!(contents(&store), before);
    assert_eq!(
        store.groups(),
        vec!["audit".to_string(), "billing".to_string()]
    );
    assert_eq!(store.fetch("billing", None)[0].1, Some(value(9)));
    // Without a clean close too (the page cache survives, as after a process crash).
    store
        .commit("audit", &[(tp("payments", 2), value(3))])
        .unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.fetch("audit", None),
        vec![(tp("payments", 2), Some(value(3)))]
    );
}

#[test]
fn deletions_write_tombstones_that_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(
            "billing",
            &[(tp("orders", 0), value(5)), (tp("payments", 0), value(6))],
        )
        .unwrap();
    store
        .commit("audit", &[(tp("orders", 1), value(7))])
        .unwrap();
    store
        .commit("empty-soon", &[(tp("orders", 2), value(8))])
        .unwrap();
    assert_eq!(store.delete_topic("orders").unwrap(), 3);
    assert_eq!(store.delete_topic("orders").unwrap(), 0);
    assert!(store.delete_group("billing").unwrap());
    assert!(!store.delete_group("billing").unwrap());
    assert!(store.groups().is_empty(), "{:?}", contents(&store));
    store
        .commit("audit", &[(tp("orders", 1), value(11))])
        .unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        contents(&store),
        vec![("audit".to_string(), tp("orders", 1), 11)]
    );
    assert!(!store.has_group("billing"));
}

#[test]
fn compaction_shrinks_the_log_and_keeps_every_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    commit_overwrites(&store, 50);
    store
        .commit("gone", &[(tp("orders", 0), value(1))])
        .unwrap();
    store.delete_group("gone").unwrap();
    let before = contents(&store);
    assert_eq!(before.len(), 6);
    assert!(store.needs_compaction());
    let outcome = store.maybe_compact().unwrap().expect("compaction is due");
    assert_eq!(outcome.records_before, 50 * 6 + 2);
    assert_eq!(outcome.live_entries, 6);
    assert!(outcome.deleted_segments >= 1);
    assert!(!store.needs_compaction());
    assert_eq!(store.maybe_compact().unwrap(), None);
    assert_eq!(contents(&store), before);
    // Commits continue after the copy, and everything replays.
    store
        .commit("billing", &[(tp("orders", 0), value(1000))])
        .unwrap();
    store.close().unwrap();
    assert_eq!(records_in_log(dir.path()), 7);
    let store = open(dir.path());
    let mut expected = before;
    expected
        .iter_mut()
        .filter(|(group, partition, _)| group == "billing" && *partition == tp("orders", 0))
        .for_each(|entry| entry.2 = 1000);
    assert_eq!(contents(&store), expected);
}

#[test]
fn compaction_waits_for_enough_records() {
    let dir = tempfile::tempdir().unwrap();
    init_tracing();
    let store = OffsetStore::open(dir.path(), 1000).unwrap();
    commit_overwrites(&store, 50);
    assert!(!store.needs_compaction(), "300 records, below the minimum");
    let store_few_overwrites = open(tempfile::tempdir().unwrap().path());
    let entries: Vec<_> = (0..20).map(|p| (tp("orders", p), value(1))).collect();
    store_few_overwrites.commit("g", &entries).unwrap();
    assert!(
        !store_few_overwrites.needs_compaction(),
        "every record is live"
    );
}

/// Goal: a crash at any step of compaction loses nothing. Method: run the steps by hand up
/// to a point, drop the store without closing it (a crash with the page cache intact), and
/// reopen.
#[test]
fn a_crash_between_compaction_steps_loses_nothing() {
    for stop_after in ["roll", "partial copy", "copy", "log start checkpoint"] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        commit_overwrites(&store, 30);
        store.delete_group("audit").unwrap();
        let before = contents(&store);
        {
            let guard = store.write_log();
            let log = guard.as_ref().unwrap();
            match stop_after {
                "roll" => log
                    .with_log_mut(|log| log.roll(SystemTime::now()))
                    .unwrap()
                    .unwrap(),
                "partial copy" => {
                    log.with_log_mut(|log| log.roll(SystemTime::now()))
                        .unwrap()
                        .unwrap();
                    // One entry of the copy, not fsynced.
                    let key = OffsetKey {
                        group: "billing".to_string(),
                        partition: tp("orders", 1),
                    };
                    let live = store.fetch("billing", Some(&[tp("orders", 1)]))[0]
                        .1
                        .clone();
                    let mut batch = raw_batch(
                        Some(encode_key(&key)),
                        live.as_ref().map(super::record::encode_value),
                    );
                    log.append_unflushed(&mut batch, SystemTime::now()).unwrap();
                }
                "copy" => {
                    store.copy_live_entries(log).unwrap();
                }
                "log start checkpoint" => {
                    let (copy_start, _) = store.copy_live_entries(log).unwrap();
                    log.with_log_mut(|log| {
                        log.with_test_log_start(copy_start);
                        log.write_checkpoint()
                    })
                    .unwrap()
                    .unwrap();
                }
                _ => unreachable!(),
            }
        }
        drop(store);
        let store = open(dir.path());
        assert_eq!(contents(&store), before, "crash after {stop_after}");
        // And a later compaction finishes the job.
        store.compact().unwrap();
        assert_eq!(contents(&store), before, "compacted after {stop_after}");
        store.close().unwrap();
        assert_eq!(records_in_log(dir.path()), before.len() as u64);
    }
}

/// One batch of one record with these key and value bytes.
fn raw_batch(key: Option<Bytes>, value: Option<Bytes>) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(&Record::new(0, key, value)).unwrap();
    builder.seal(0).unwrap().to_vec()
}

#[test]
fn an_unreadable_record_in_the_middle_fails_start_up() {
    for (name, key, bad_value) in [
        ("no key", None, None),
        (
            "bad key version",
            Some(Bytes::from_static(&[
                0, 9, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 0,
            ])),
            None,
        ),
        (
            "truncated value",
            Some(encode_key(&OffsetKey {
                group: "g".to_string(),
                partition: tp("t", 0),
            })),
            Some(Bytes::from_static(&[0, 0, 1])),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .commit("billing", &[(tp("orders", 0), value(5))])
            .unwrap();
        store.close().unwrap();
        let mut log =
            PartitionLog::open(dir.path(), LogConfig::default(), SystemTime::now()).unwrap();
        log.append(&mut raw_batch(key, bad_value), SystemTime::now())
            .unwrap();
        let good_key = OffsetKey {
            group: "billing".to_string(),
            partition: tp("orders", 0),
        };
        let mut good = raw_batch(
            Some(encode_key(&good_key)),
            Some(super::record::encode_value(&value(6))),
        );
        log.append(&mut good, SystemTime::now()).unwrap();
        log.close().unwrap();
        match OffsetStore::open(dir.path(), 10) {
            Err(OffsetsError::Corrupt { offset, .. }) => assert_eq!(offset, Offset(1), "{name}"),
            other => panic!("{name}: expected a corrupt-record error, got {other:?}"),
        }
    }
}

#[test]
fn a_damaged_batch_below_the_recovery_point_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for round in 0..5 {
        store
            .commit("billing", &[(tp("orders", 0), value(round))])
            .unwrap();
    }
    store.close().unwrap();
    // Flip a byte inside the second batch's records: its CRC no longer matches.
    let segment = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&segment).unwrap();
    let second_batch = bytes.len() / 5;
    bytes[second_batch + 70] ^= 0xff;
    fs::write(&segment, bytes).unwrap();
    let error = OffsetStore::open(dir.path(), 10).unwrap_err();
    assert!(matches!(error, OffsetsError::Corrupt { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("unreadable committed-offsets record"),
        "{error}"
    );
}

#[test]
fn a_torn_tail_is_truncated_by_the_logs_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit("billing", &[(tp("orders", 0), value(5))])
        .unwrap();
    store
        .commit("billing", &[(tp("orders", 0), value(6))])
        .unwrap();
    drop(store);
    // Half of a third commit reached the file before the crash.
    let torn = raw_batch(
        Some(encode_key(&OffsetKey {
            group: "billing".to_string(),
            partition: tp("orders", 0),
        })),
        Some(super::record::encode_value(&value(7))),
    );
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("00000000000000000000.log"))
        .unwrap();
    file.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(file);
    let store = open(dir.path());
    assert_eq!(
        store.fetch("billing", None),
        vec![(tp("orders", 0), Some(value(6)))]
    );
    store
        .commit("billing", &[(tp("orders", 0), value(8))])
        .unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.fetch("billing", None),
        vec![(tp("orders", 0), Some(value(8)))]
    );
}

/// Goal: concurrent commits are applied in log order (the map agrees with a replay) and share
/// fsyncs. Method: threads commit increasing offsets to the same keys; compare the map with
/// a fresh replay.
#[test]
fn concurrent_commits_apply_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for round in 0..50 {
                    let entry = (tp("orders", round % 2), value(thread * 1000 + round as u64));
                    store.commit("billing", &[entry]).unwrap();
                    if round % 10 == 0 {
                        let _ = store.maybe_compact().unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let in_memory = contents(&store);
    drop(store);
    let store = open(dir.path());
    assert_eq!(contents(&store), in_memory);
}

#[test]
fn overlong_strings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let long = "x".repeat(STRING_BYTES_MAX + 1);
    assert!(matches!(
        store.commit(&long, &[(tp("orders", 0), value(1))]),
        Err(OffsetsError::TooLong { .. })
    ));
    let mut with_metadata = value(1);
    with_metadata.metadata = Some(long);
    assert!(matches!(
        store.commit("g", &[(tp("orders", 0), with_metadata)]),
        Err(OffsetsError::TooLong { .. })
    ));
    assert!(store.groups().is_empty());
}
