//! Micro-benchmark of the partition log alone (no network): append and read throughput with
//! 1 KiB records in 64 KiB batches, under fsync `never` and `always`, and the time to open a
//! log of 10,000 segments after a clean shutdown.
//!
//! Run: `cargo bench -p mq-broker --bench log_throughput` (set `MQ_BENCH_DIR` to put the logs
//! on another filesystem; the default is the system temp dir). Each figure is the median of
//! several runs, printed with the range, next to this machine's memory-copy bandwidth
//! measured in the same run, since the machine is shared and noisy.

#![allow(clippy::unwrap_used)] // Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::print_stdout)] // The report goes to stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mq_broker::log::{FlushPolicy, LogConfig, PartitionLog, SharedLog};
use mq_protocol::record::{BatchBuilder, Record};
use mq_protocol::{Compression, Offset};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 64;
const RUNS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects scenarios by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|filter| name.contains(filter));
    let base_dir = std::env::var_os("MQ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "log_throughput: {RUNS} runs each, median [min .. max]; logs under {}",
        base_dir.display()
    );
    let batch = make_batch();
    println!(
        "batch: {RECORDS_PER_BATCH} records of {RECORD_BYTES} B = {} B",
        batch.len()
    );
    if wanted("memcpy") {
        report(
            "memcpy (machine limit, same run)",
            "GB/s",
            runs(memcpy_gbps),
        );
    }
    if wanted("append-never") {
        let gib = 1.0;
        report(
            &format!("append fsync=never, {gib} GiB"),
            "GB/s",
            runs(|| append_gbps(&base_dir, &batch, gib, FlushPolicy::Never)),
        );
    }
    if wanted("read") {
        report(
            "read from page cache, 1 MiB reads, 1 GiB",
            "GB/s",
            runs(|| read_gbps(&base_dir, &batch)),
        );
    }
    if wanted("append-always") {
        for writers in [1, 4] {
            let results = runs(|| append_always(&base_dir, &batch, writers));
            report(
                &format!("append fsync=always, {writers} writer(s), 64 MiB"),
                "MB/s",
                results.iter().map(|result| result.0).collect(),
            );
            report(
                &format!("  appends per fsync, {writers} writer(s)"),
                "",
                results.iter().map(|result| result.1).collect(),
            );
        }
    }
    if wanted("open") {
        open_10k_segments(&base_dir);
    }
}

fn make_batch() -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for index in 0..RECORDS_PER_BATCH {
        let value = Bytes::from(vec![b'a' + (index % 26) as u8; RECORD_BYTES]);
        builder
            .append(&Record::new(1_700_000_000_000, None, Some(value)))
            .unwrap();
    }
    builder.seal(0).unwrap().to_vec()
}

fn runs<T>(mut run: impl FnMut() -> T) -> Vec<T> {
    (0..RUNS).map(|_| run()).collect()
}

fn report(name: &str, unit: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    println!(
        "{name:<52} {median:>9.2} {unit:<5} [{:.2} .. {:.2}]",
        values[0],
        values[values.len() - 1]
    );
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        retention: None,
        ..LogConfig::default()
    }
}

fn memcpy_gbps() -> f64 {
    let source = vec![7u8; 256 * 1024 * 1024];
    let mut target = vec![0u8; source.len()];
    target.copy_from_slice(&source); // fault the pages in first
    let started = Instant::now();
    for _ in 0..4 {
        target.copy_from_slice(std::hint::black_box(&source));
    }
    let elapsed = started.elapsed();
    std::hint::black_box(&target);
    (4 * source.len()) as f64 / elapsed.as_secs_f64() / 1e9
}

fn append_gbps(base: &PathBuf, batch: &[u8], gib: f64, flush: FlushPolicy) -> f64 {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut log = PartitionLog::open(dir.path(), config(flush), SystemTime::now()).unwrap();
    let mut buffer = batch.to_vec();
    let batches = (gib * (1u64 << 30) as f64) as usize / batch.len();
    let started = Instant::now();
    for _ in 0..batches {
        log.append(&mut buffer, SystemTime::now()).unwrap();
    }
    let elapsed = started.elapsed();
    (batches * batch.len()) as f64 / elapsed.as_secs_f64() / 1e9
}

fn read_gbps(base: &PathBuf, batch: &[u8]) -> f64 {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut log =
        PartitionLog::open(dir.path(), config(FlushPolicy::Never), SystemTime::now()).unwrap();
    let mut buffer = batch.to_vec();
    for _ in 0..(1usize << 30) / batch.len() {
        log.append(&mut buffer, SystemTime::now()).unwrap();
    }
    let started = Instant::now();
    let mut next = Offset(0);
    let mut bytes = 0usize;
    while next < log.log_end() {
        let read = log.read(next, 1024 * 1024).unwrap();
        bytes += read.len();
        let last = mq_protocol::batch::BatchIter::new(&read)
            .last()
            .unwrap()
            .unwrap();
        next = Offset(last.header.next_offset() as u64);
    }
    let elapsed = started.elapsed();
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// Appends 64 MiB with fsync before each acknowledgement from `writers` threads; returns
/// (MB/s, appends per fsync).
fn append_always(base: &PathBuf, batch: &[u8], writers: usize) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let log =
        PartitionLog::open(dir.path(), config(FlushPolicy::Always), SystemTime::now()).unwrap();
    let log = Arc::new(SharedLog::new(log));
    let appends = (64usize << 20) / batch.len();
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(&log);
            let mut buffer = batch.to_vec();
            std::thread::spawn(move || {
                for _ in 0..appends / writers {
                    log.append(&mut buffer, SystemTime::now()).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let elapsed = started.elapsed();
    let done = appends / writers * writers;
    (
        (done * batch.len()) as f64 / elapsed.as_secs_f64() / 1e6,
        done as f64 / log.flush_count() as f64,
    )
}

/// Builds a log of 10,000 one-batch segments, closes it, and times clean opens.
fn open_10k_segments(base: &PathBuf) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let small = LogConfig {
        segment_bytes: 4096,
        batch_bytes_max: 4096,
        ..config(FlushPolicy::Never)
    };
    let mut builder = BatchBuilder::new(Compression::None);
    builder
        .append(&Record::new(
            1_700_000_000_000,
            None,
            Some(Bytes::from(vec![b'x'; 3000])),
        ))
        .unwrap();
    let mut one = builder.seal(0).unwrap().to_vec();
    let mut log = PartitionLog::open(dir.path(), small.clone(), SystemTime::now()).unwrap();
    for _ in 0..10_000 {
        log.append(&mut one, SystemTime::now()).unwrap();
    }
    let segments = log.segment_count();
    log.close().unwrap();
    let mut times: Vec<f64> = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let log = PartitionLog::open(dir.path(), small.clone(), SystemTime::now()).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(log.segment_count(), segments);
        log.close().unwrap();
    }
    report(
        &format!("open after clean shutdown, {segments} segments"),
        "ms",
        times,
    );
    // For scale: the same open must still serve reads from any segment.
    let log = PartitionLog::open(dir.path(), small, SystemTime::now()).unwrap();
    let started = Instant::now();
    let read = log.read(Offset(5_000), 4096).unwrap();
    assert!(!read.is_empty());
    println!(
        "{:<52} {:>9.3} ms",
        "  first read of a lazily opened segment",
        elapsed_ms(started.elapsed())
    );
}

fn elapsed_ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}
