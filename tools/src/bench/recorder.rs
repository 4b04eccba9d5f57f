//! What a run measures, as it goes: the latency histogram of measured records, counts of
//! records and bytes, failed deliveries, and the time of the last measured completion; and
//! the progress line printed on stderr once per second.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::clock::Clock;
use super::report::Percentiles;

/// The largest latency the histogram tells apart, in microseconds (60 s); longer ones are
/// recorded as 60 s.
const LATENCY_US_MAX: u64 = 60_000_000;

/// Failed deliveries printed on stderr before the rest are only counted.
const FAILURES_PRINTED: u64 = 5;

/// One record completed: acknowledged (produce) or received (consume, e2e).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// Its value's size.
    pub(crate) bytes: u64,
    /// Its latency, when it has one of its own (a consumer's poll has one for all its records).
    pub(crate) latency_ns: Option<u64>,
    /// Whether it counts: sent (or, for `consume`, received) after the warm-up.
    pub(crate) measured: bool,
}

/// Collects samples from any number of tasks.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The run's clock.
    clock: Clock,
    /// When measurement starts, on that clock.
    measure_start_ns: u64,
    /// The totals so far.
    totals: Mutex<Totals>,
}

/// The mutable part of [`Recorder`].
#[derive(Debug)]
struct Totals {
    /// Latencies of measured records, in microseconds.
    latency_us: Histogram<u64>,
    /// Measured records completed.
    measured_records: u64,
    /// Their bytes.
    measured_bytes: u64,
    /// All records completed, warm-up included (for the progress line).
    records: u64,
    /// Their bytes.
    bytes: u64,
    /// When the last measured record completed, on the run's clock.
    last_measured_ns: Option<u64>,
}

/// The outcome of a run, as measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Measurement {
    /// Measured records.
    pub(crate) messages: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// From the end of the warm-up to the last measured completion.
    pub(crate) seconds: f64,
    /// Latency percentiles of the measured records.
    pub(crate) latency_us: Percentiles,
}

impl Recorder {
    /// A recorder whose measurement starts at `measure_start_ns` on `clock`.
    pub(crate) fn new(clock: Clock, measure_start_ns: u64) -> Recorder {
        // The bounds are constants that satisfy the constructor's rules (low >= 1, high >=
        // 2 * low, at most 5 significant figures), so this cannot fail.
        let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
            .expect("constant histogram bounds are valid");
        Recorder {
            clock,
            measure_start_ns,
            totals: Mutex::new(Totals {
                latency_us,
                measured_records: 0,
                measured_bytes: 0,
                records: 0,
                bytes: 0,
                last_measured_ns: None,
            }),
        }
    }

    /// The run's clock.
    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// When measurement starts, on the run's clock.
    pub(crate) fn measure_start_ns(&self) -> u64 {
        self.measure_start_ns
    }

    /// Records samples that completed at `at_ns`.
    pub(crate) fn record(&self, at_ns: u64, samples: impl IntoIterator<Item = Sample>) {
        let mut totals = self.lock();
        for sample in samples {
            totals.records += 1;
            totals.bytes += sample.bytes;
            if !sample.measured {
                continue;
            }
            totals.measured_records += 1;
            totals.measured_bytes += sample.bytes;
            totals.last_measured_ns = Some(at_ns);
            if let Some(latency_ns) = sample.latency_ns {
                totals.latency_us.saturating_record(latency_ns / 1000);
            }
        }
    }

    /// The outcome so far.
    pub(crate) fn measurement(&self) -> Measurement {
        let totals = self.lock();
        let seconds = totals.last_measured_ns.map_or(0.0, |last| {
            last.saturating_sub(self.measure_start_ns) as f64 / 1e9
        });
        Measurement {
            messages: totals.measured_records,
            bytes: totals.measured_bytes,
            seconds,
            latency_us: Percentiles::of(&totals.latency_us),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Totals> {
        // Every update is a few additions, complete before anything can panic: a poisoned
        // lock still holds consistent totals.
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts failed deliveries and prints the first few on stderr.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    /// How many so far.
    count: AtomicU64,
}

impl Failures {
    /// Counts one failure; prints it if it is among the first few.
    pub(crate) fn add(&self, error: &dyn std::fmt::Display) {
        let seen = self.count.fetch_add(1, Ordering::Relaxed);
        if seen < FAILURES_PRINTED {
            let _ = writeln!(std::io::stderr(), "error: record not delivered: {error}");
        } else if seen == FAILURES_PRINTED {
            let _ = writeln!(
                std::io::stderr(),
                "error: more records not delivered (counted in the report)"
            );
        }
    }

    /// How many so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The task printing progress lines; stopped when dropped.
#[derive(Debug)]
pub(crate) struct ProgressTask(tokio::task::JoinHandle<()>);

impl Drop for ProgressTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints a progress line on stderr every second until the returned task is dropped: the
/// last second's records/s and MB/s (warm-up included), and the p99 latency of the measured
/// records so far.
pub(crate) fn spawn_progress(recorder: Arc<Recorder>, scenario: &'static str) -> ProgressTask {
    ProgressTask(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        // The first tick completes at once.
        ticker.tick().await;
        let clock = recorder.clock();
        let (mut records, mut bytes, mut at_ns) = (0, 0, clock.now_ns());
        loop {
            ticker.tick().await;
            let now_ns = clock.now_ns();
            let (now_records, now_bytes, p99_us) = {
                let totals = recorder.lock();
                let p99 = (!totals.latency_us.is_empty())
                    .then(|| totals.latency_us.value_at_quantile(0.99));
                (totals.records, totals.bytes, p99)
            };
            let interval = now_ns.saturating_sub(at_ns).max(1) as f64 / 1e9;
            let line = progress_line(&Progress {
                scenario,
                elapsed_s: now_ns / 1_000_000_000,
                msgs_per_sec: (now_records - records) as f64 / interval,
                mb_per_sec: (now_bytes - bytes) as f64 / interval / 1e6,
                p99_us,
                warming_up: now_ns < recorder.measure_start_ns(),
            });
            let _ = writeln!(std::io::stderr(), "{line}");
            (records, bytes, at_ns) = (now_records, now_bytes, now_ns);
        }
    }))
}

/// What one progress line says.
#[derive(Debug)]
struct Progress {
    /// The subcommand.
    scenario: &'static str,
    /// Whole seconds since the run's clock started.
    elapsed_s: u64,
    /// Records per second over the last interval.
    msgs_per_sec: f64,
    /// MB (10^6 bytes) per second over the last interval.
    mb_per_sec: f64,
    /// The p99 latency of the measured records so far.
    p99_us: Option<u64>,
    /// Whether the warm-up is still on.
    warming_up: bool,
}

fn progress_line(progress: &Progress) -> String {
    let latency = match (progress.warming_up, progress.p99_us) {
        (true, _) => "warming up".to_string(),
        (false, Some(p99)) => format!("p99 {}", human_micros(p99)),
        (false, None) => "p99 -".to_string(),
    };
    format!(
        "mq-bench {} {:>4} s: {:>9.0} msgs/s {:>8.1} MB/s  {latency}",
        progress.scenario, progress.elapsed_s, progress.msgs_per_sec, progress.mb_per_sec
    )
}

/// Microseconds for people: `850 µs`, `12.34 ms`, `1.50 s`.
pub(crate) fn human_micros(micros: u64) -> String {
    match micros {
        0..1000 => format!("{micros} µs"),
        1000..1_000_000 => format!("{:.2} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: u64, latency_ns: Option<u64>, measured: bool) -> Sample {
        Sample {
            bytes,
            latency_ns,
            measured,
        }
    }

    #[test]
    fn only_measured_samples_count() {
        let recorder = Recorder::new(Clock::new(), 1_000_000_000);
        recorder.record(
            1_500_000_000,
            [
                sample(10, Some(5_000), false),
                sample(20, Some(2_000_000), true),
            ],
        );
        recorder.record(3_000_000_000, [sample(30, None, true)]);
        let measured = recorder.measurement();
        assert_eq!(measured.messages, 2);
        assert_eq!(measured.bytes, 50);
        assert_eq!(measured.seconds, 2.0);
        assert_eq!(measured.latency_us.max, 2000);
        assert_eq!(measured.latency_us.p50, 2000);
    }

    #[test]
    fn huge_latencies_saturate_instead_of_failing() {
        let recorder = Recorder::new(Clock::new(), 0);
        recorder.record(1, [sample(1, Some(u64::MAX), true)]);
        let max = recorder.measurement().latency_us.max;
        assert!((LATENCY_US_MAX..LATENCY_US_MAX + LATENCY_US_MAX / 500).contains(&max));
    }

    #[test]
    fn nothing_measured_reads_as_zero() {
        let measured = Recorder::new(Clock::new(), 0).measurement();
        assert_eq!((measured.messages, measured.seconds), (0, 0.0));
        assert_eq!(measured.latency_us, Percentiles::default());
    }

    #[test]
    fn progress_lines_show_rate_and_p99() {
        let mut progress = Progress {
            scenario: "produce",
            elapsed_s: 3,
            msgs_per_sec: 81234.4,
            mb_per_sec: 83.18,
            p99_us: Some(1234),
            warming_up: false,
        };
        assert_eq!(
            progress_line(&progress),
            "mq-bench produce    3 s:     81234 msgs/s     83.2 MB/s  p99 1.23 ms"
        );
        progress.warming_up = true;
        assert!(progress_line(&progress).ends_with("warming up"));
    }

    #[test]
    fn human_micros_picks_units() {
        assert_eq!(human_micros(850), "850 µs");
        assert_eq!(human_micros(12_346), "12.35 ms");
        assert_eq!(human_micros(1_500_000), "1.50 s");
    }
}
