//! Crash test: a child process appends with `fsync = always` from several threads and prints
//! each acknowledgement; the parent kills it with SIGKILL at a random moment, reopens the log,
//! and checks that every acknowledged batch is there, at its offset, with its records, and
//! that the log is valid (dense offsets, every CRC good). Then it starts the next round on the
//! same directory, so later rounds also recover from earlier kills.
//!
//! SIGKILL keeps the page cache, so this tests the written-but-not-acknowledged gap and
//! recovery of a log killed mid-append or mid-roll, not fsync ordering under power loss.
//!
//! Runs without libtest (`harness = false`): the same binary is the child when
//! `MQ_CRASH_CHILD_DIR` is set. `MQ_SLOW_TESTS=1` runs 100 rounds instead of 6;
//! `MQ_CRASH_SEED=N` replays a run (the seed is printed).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![allow(clippy::print_stdout)] // The child reports acknowledgements on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mq_broker::log::{FlushPolicy, LogConfig, PartitionLog, SharedLog};
use mq_protocol::batch::BatchIter;
use mq_protocol::record::{self, BatchBuilder, Record};
use mq_protocol::{Compression, Offset};

const CHILD_ENV: &str = "MQ_CRASH_CHILD_DIR";
const WRITER_THREADS: usize = 4;

fn config() -> LogConfig {
    LogConfig {
        // Small segments so that kills also land during rolls.
        segment_bytes: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        index_interval_bytes: 1024,
        flush: FlushPolicy::Always,
        retention: None,
        ..LogConfig::default()
    }
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let slow = std::env::var("MQ_SLOW_TESTS").is_ok_and(|value| value == "1");
    let rounds = if slow { 100 } else { 6 };
    let seed = std::env::var("MQ_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test: {rounds} rounds, MQ_CRASH_SEED={seed}");
    let result = std::panic::catch_unwind(|| parent(rounds, seed));
    match result {
        Ok(()) => println!("test result: ok. 1 passed; 0 failed"),
        Err(_) => {
            println!("crash test failed; replay with MQ_CRASH_SEED={seed}");
            println!("test result: FAILED. 0 passed; 1 failed");
            std::process::exit(1);
        }
    }
}

/// The writer: appends forever from several threads, one record per batch plus filler,
/// printing `ack <base offset> <value>` once an append is durable.
fn child(dir: &Path) {
    let log = PartitionLog::open(dir, config(), SystemTime::now()).unwrap();
    let log = Arc::new(SharedLog::new(log));
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let pid = std::process::id();
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|thread| {
            let log = Arc::clone(&log);
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for sequence in 0u64.. {
                    let value = format!("{pid}-{thread}-{sequence}");
                    let mut builder = BatchBuilder::new(Compression::None);
                    builder
                        .append(&Record::new(0, None, Some(Bytes::from(value.clone()))))
                        .unwrap();
                    // Filler records of varying size, so batches straddle index entries.
                    let filler = Bytes::from(vec![b'f'; (sequence as usize * 37) % 700]);
                    builder.append(&Record::new(0, None, Some(filler))).unwrap();
                    let mut batch = builder.seal(0).unwrap().to_vec();
                    let info = log.append(&mut batch, SystemTime::now()).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ack {} {value}", info.base_offset).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// A tiny deterministic generator (xorshift64), so that runs replay from their seed.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn parent(rounds: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Random(seed);
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let exe = std::env::current_exe().unwrap();
    for round in 0..rounds {
        let before = acknowledged.len();
        let run_for = Duration::from_millis(30 + random.below(400));
        let acks = run_child(&exe, dir.path(), run_for);
        for (offset, value) in acks {
            let previous = acknowledged.insert(offset, value);
            assert!(previous.is_none(), "offset {offset} acknowledged twice");
        }
        let records = verify(dir.path(), &acknowledged);
        println!(
            "round {round}: killed after {run_for:?}; {} new acks, {} acked batches verified, {records} records in the log",
            acknowledged.len() - before,
            acknowledged.len()
        );
    }
    assert!(
        !acknowledged.is_empty(),
        "the child never acknowledged anything"
    );
}

/// Runs the child for `run_for`, kills it with SIGKILL, returns the acknowledgements it
/// printed completely.
fn run_child(exe: &PathBuf, dir: &Path, run_for: Duration) -> Vec<(u64, String)> {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split(' ');
            if let (Some("ack"), Some(offset), Some(value)) =
                (words.next(), words.next(), words.next())
            {
                acks.push((offset.parse().unwrap(), value.to_string()));
            }
        }
        acks
    });
    let started = Instant::now();
    while started.elapsed() < run_for {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited by itself"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A line cut by the kill has no newline and carries a partial value: `lines` yields it,
    // but its value cannot match a record, so only complete lines are kept.
    reader
        .join()
        .unwrap()
        .into_iter()
        .filter(|(_, value)| value.split('-').count() == 3)
        .collect()
}

/// Reopens the log and checks it against the acknowledgements; returns its record count.
fn verify(dir: &Path, acknowledged: &BTreeMap<u64, String>) -> u64 {
    let log = PartitionLog::open(dir, config(), SystemTime::now()).unwrap();
    let mut found: BTreeMap<u64, String> = BTreeMap::new();
    let mut next = log.log_start();
    while next < log.log_end() {
        let bytes = log.read(next, 1024 * 1024).unwrap();
        assert!(
            !bytes.is_empty(),
            "read at {next} below the log end returned nothing"
        );
        for batch in BatchIter::validating(&bytes) {
            let batch = batch.unwrap();
            assert_eq!(
                Offset::from_wire(batch.header.base_offset),
                Some(next),
                "offsets are dense"
            );
            let records: Vec<_> = record::records(&Bytes::copy_from_slice(batch.bytes))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(records.len(), 2);
            let value = records[0].value.clone().unwrap();
            found.insert(next.0, String::from_utf8(value.to_vec()).unwrap());
            next = Offset::from_wire(batch.header.next_offset()).unwrap();
        }
    }
    for (offset, value) in acknowledged {
        assert_eq!(
            found.get(offset),
            Some(value),
            "acknowledged batch at offset {offset}"
        );
    }
    // Values are unique per process, thread and sequence: a duplicate would show here.
    let mut values: Vec<&String> = found.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), found.len(), "no batch is stored twice");
    log.log_end().0
}
