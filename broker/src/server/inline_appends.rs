//! [`InlineAppends`]: when a small append may run on the runtime worker that received it
//! instead of on the blocking pool.
//!
//! Handing an append to a blocking thread and its result back costs two thread wake-ups,
//! which for a one-record produce is most of the broker's share of the latency (p99 of
//! batch-of-1 produces 264-366 µs through the pool against 227-246 µs inline on our test
//! VM, BENCHMARKS.md). A write of a few kilobytes into the page cache normally takes
//! microseconds, so small appends run inline when nothing says it could wait longer:
//!
//! - the append is at most `inline_append_max_bytes` (0 turns inline appends off);
//! - the log's lock is free and the append needs no file work (no segment roll, no
//!   checkpoint): see `SharedLog::try_append_unflushed_if`, which declines otherwise;
//! - the page cache is under no write pressure: the kernel throttles writers
//!   (`balance_dirty_pages`, pauses of up to 200 ms) only once dirty and writeback pages
//!   pass midway between the background and the foreground dirty thresholds. A monitor
//!   reads `/proc/vmstat` every [`SAMPLE_INTERVAL`] and allows inline appends only while
//!   they are below the background threshold, the lower one. Where that cannot be read
//!   (not Linux), appends never run inline.
//! - no inline append was slow lately: one that took longer than [`SLOW_APPEND`] (for
//!   whatever reason: a journal wait, a page fault, a limit of the process's cgroup that
//!   `/proc/vmstat` does not show) turns inline appends off for [`PAUSE_AFTER_SLOW`].
//!
//! fsyncs never run inline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the page cache's dirty state is sampled.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// An inline append slower than this pauses inline appends.
pub(crate) const SLOW_APPEND: Duration = Duration::from_millis(2);

/// How long inline appends stay off after a slow one.
pub(crate) const PAUSE_AFTER_SLOW: Duration = Duration::from_secs(1);

/// Decides whether an append may run on the runtime worker; see the module docs.
#[derive(Debug)]
pub(crate) struct InlineAppends {
    /// Appends up to this size may run inline; 0: none.
    max_bytes: usize,
    /// The page cache was below its background dirty threshold when last sampled.
    calm: AtomicBool,
    /// Inline appends are off until this many nanoseconds after `epoch` (after a slow one).
    paused_until_ns: AtomicU64,
    /// The clock's origin.
    epoch: Instant,
}

impl InlineAppends {
    /// Inline appends of up to `max_bytes`, off until the first sample says the page cache
    /// is calm.
    pub(crate) fn new(max_bytes: usize) -> InlineAppends {
        InlineAppends {
            max_bytes,
            calm: AtomicBool::new(false),
            paused_until_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether an append of `bytes` may run inline now.
    pub(crate) fn allows(&self, bytes: usize) -> bool {
        bytes <= self.max_bytes
            && self.calm.load(Ordering::Relaxed)
            && self.nanos_now() >= self.paused_until_ns.load(Ordering::Relaxed)
    }

    /// Notes that an inline append took `took`; a slow one pauses inline appends and is
    /// reported `true`.
    pub(crate) fn record(&self, took: Duration) -> bool {
        if took <= SLOW_APPEND {
            return false;
        }
        let until = self.nanos_now().saturating_add(nanos(PAUSE_AFTER_SLOW));
        self.paused_until_ns.fetch_max(until, Ordering::Relaxed);
        tracing::info!(
            took_us = took.as_micros() as u64,
            pause_ms = PAUSE_AFTER_SLOW.as_millis() as u64,
            "slow inline append; appending on the blocking pool for a while"
        );
        true
    }

    /// Samples the page cache's dirty state every [`SAMPLE_INTERVAL`] until `stop`
    /// resolves. Does nothing when inline appends are off.
    pub(crate) async fn monitor(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if self.max_bytes == 0 {
            return;
        }
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = ticks.tick() => {}
            }
            // procfs reads no disk, but stays off the workers like all file access.
            let sampled = tokio::task::spawn_blocking(|| std::fs::read_to_string("/proc/vmstat"))
                .await
                .ok()
                .and_then(Result::ok)
                .as_deref()
                .and_then(DirtyPages::parse);
            let calm = sampled.is_some_and(|dirty| dirty.is_calm());
            if self.calm.swap(calm, Ordering::Relaxed) != calm {
                tracing::debug!(calm, ?sampled, "page cache write pressure changed");
            }
        }
    }

    fn nanos_now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The page cache's dirty state, in pages, from `/proc/vmstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirtyPages {
    /// Dirty pages (`nr_dirty`).
    pub(crate) dirty: u64,
    /// Pages being written back (`nr_writeback`).
    pub(crate) writeback: u64,
    /// Where background writeback starts (`nr_dirty_background_threshold`).
    pub(crate) background_threshold: u64,
}

impl DirtyPages {
    /// Reads the three counters from `/proc/vmstat`'s text; `None` if one is missing.
    pub(crate) fn parse(vmstat: &str) -> Option<DirtyPages> {
        let (mut dirty, mut writeback, mut background_threshold) = (None, None, None);
        for line in vmstat.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
                continue;
            };
            let slot = match name {
                "nr_dirty" => &mut dirty,
                "nr_writeback" => &mut writeback,
                "nr_dirty_background_threshold" => &mut background_threshold,
                _ => continue,
            };
            *slot = value.parse().ok();
        }
        Some(DirtyPages {
            dirty: dirty?,
            writeback: writeback?,
            background_threshold: background_threshold?,
        })
    }

    /// Whether writers are far from being throttled: dirty and writeback pages together
    /// below the background threshold (the kernel throttles only above the midpoint
    /// between it and the higher, foreground one).
    pub(crate) fn is_calm(&self) -> bool {
        self.dirty.saturating_add(self.writeback) < self.background_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMSTAT: &str = "nr_free_pages 5000000\nnr_dirty 1200\nnr_writeback 30\nnr_writeback_temp 0\nnr_dirty_threshold 1100000\nnr_dirty_background_threshold 550000\npgpgin 1\n";

    #[test]
    fn parses_the_dirty_counters_and_ignores_the_rest() {
        assert_eq!(
            DirtyPages::parse(VMSTAT),
            Some(DirtyPages {
                dirty: 1200,
                writeback: 30,
                background_threshold: 550_000,
            })
        );
        assert_eq!(DirtyPages::parse("nr_dirty 1\nnr_writeback 2\n"), None);
        assert_eq!(DirtyPages::parse(""), None);
        assert_eq!(
            DirtyPages::parse("nr_dirty x\nnr_writeback 2\nnr_dirty_background_threshold 3\n"),
            None
        );
    }

    #[test]
    fn calm_only_below_the_background_threshold_counting_writeback() {
        let at = |dirty, writeback| DirtyPages {
            dirty,
            writeback,
            background_threshold: 1000,
        };
        assert!(at(0, 0).is_calm());
        assert!(at(900, 99).is_calm());
        assert!(!at(900, 100).is_calm());
        assert!(!at(2000, 0).is_calm());
        assert!(!at(u64::MAX, u64::MAX).is_calm());
    }

    #[test]
    fn allows_small_appends_only_when_calm_and_not_paused() {
        let inline = InlineAppends::new(4096);
        assert!(!inline.allows(100), "off until the first calm sample");
        inline.calm.store(true, Ordering::Relaxed);
        assert!(inline.allows(100));
        assert!(inline.allows(4096));
        assert!(!inline.allows(4097));
        assert!(!inline.record(Duration::from_micros(50)));
        assert!(inline.allows(100), "a fast append changes nothing");
        assert!(inline.record(SLOW_APPEND + Duration::from_micros(1)));
        assert!(!inline.allows(100), "a slow append pauses inline appends");
        inline.calm.store(false, Ordering::Relaxed);
        inline.paused_until_ns.store(0, Ordering::Relaxed);
        assert!(!inline.allows(100), "not under write pressure");
        assert!(!InlineAppends::new(0).allows(0), "0 turns them off");
    }

    #[tokio::test]
    async fn the_monitor_follows_vmstat() {
        let sample = || {
            std::fs::read_to_string("/proc/vmstat")
                .ok()
                .as_deref()
                .and_then(DirtyPages::parse)
        };
        let inline = Arc::new(InlineAppends::new(4096));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let monitor = tokio::spawn(Arc::clone(&inline).monitor(async {
            let _ = stopped.await;
        }));
        // Where vmstat cannot be read, appends never run inline; elsewhere the monitor's
        // decision follows the counters (which may move meanwhile: retry, bounded).
        let expected = || sample().is_some_and(|dirty| dirty.is_calm());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut agreed = false;
        while !agreed && Instant::now() < deadline {
            tokio::time::sleep(SAMPLE_INTERVAL).await;
            agreed = inline.allows(1) == expected();
        }
        let _ = stop.send(());
        monitor.await.expect("the monitor stops");
        assert!(agreed, "the monitor's decision follows /proc/vmstat");
        if sample().is_none() {
            assert!(!inline.allows(1));
        }
    }
}
