//! The consuming side of a run: `--consumers` consumers, each with its own client, given
//! partitions by hand (consumer i reads partitions i, i+C, i+2C, ...) and positioned at the
//! beginning (`consume`) or the end (`e2e`) before the load starts; then each polls until the
//! shared [`Goal`] is met, recording what it receives: with the latency from the send time
//! stamped in each value (`e2e`), or with the poll's own duration (`consume`, where there is
//! no send to measure from).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mq_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
use tokio::task::JoinSet;

use super::clock;
use super::recorder::{Recorder, Sample};
use super::schedule::nanos;
use crate::BootstrapArgs;

/// How long one poll waits for records before the goal is checked again.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// How long consumers may receive nothing, once they know how many records to expect,
/// before the run fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where consumers start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// At each partition's first record.
    Beginning,
    /// At each partition's end: only records produced from now on.
    End,
}

/// What a received record's latency is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Latency {
    /// From the send time stamped in its value; records without one are not ours and are
    /// skipped. Measured when that send time is after the warm-up.
    Stamp,
    /// The duration of the poll that returned it (one sample per poll). Measured when
    /// received after the warm-up.
    Poll,
}

/// When the consumers are done: a number of records, a deadline, or a stop.
#[derive(Debug)]
pub(crate) struct Goal {
    /// Records kept so far, over all consumers.
    received: AtomicU64,
    /// Records to keep in all; `u64::MAX` while unknown (e2e, until the producers finish).
    target: AtomicU64,
    /// When to stop regardless, on the run's clock.
    deadline_ns: Option<u64>,
    /// When a record was last kept, or the target set, on the run's clock.
    progress_ns: AtomicU64,
    /// Set when the run ends early (an error elsewhere).
    stopped: AtomicBool,
    /// Said after the idle-timeout error: what the user may do about it.
    hint: &'static str,
}

impl Goal {
    /// A goal of `target` records (unknown: `None`) or until `deadline_ns`.
    pub(crate) fn new(target: Option<u64>, deadline_ns: Option<u64>, hint: &'static str) -> Goal {
        Goal {
            received: AtomicU64::new(0),
            target: AtomicU64::new(target.unwrap_or(u64::MAX)),
            deadline_ns,
            progress_ns: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            hint,
        }
    }

    /// Sets the number of records to keep in all, at `now_ns`.
    pub(crate) fn set_target(&self, target: u64, now_ns: u64) {
        self.progress_ns.fetch_max(now_ns, Ordering::Relaxed);
        self.target.store(target, Ordering::Relaxed);
    }

    /// Ends the consumers' run early.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Records kept so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Takes up to `count` more records; returns how many to keep (fewer once the target
    /// is reached).
    fn claim(&self, count: u64, now_ns: u64) -> u64 {
        let target = self.target.load(Ordering::Relaxed);
        let before = self
            .received
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |received| {
                Some(received.saturating_add(count).min(target.max(received)))
            })
            .unwrap_or_else(|received| received);
        let kept = before.saturating_add(count).min(target.max(before)) - before;
        if kept > 0 {
            self.progress_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
        kept
    }

    /// Whether the consumers are done at `now_ns`.
    fn is_met(&self, now_ns: u64) -> bool {
        self.stopped.load(Ordering::Relaxed)
            || self.received() >= self.target.load(Ordering::Relaxed)
            || self.deadline_ns.is_some_and(|deadline| now_ns >= deadline)
    }

    /// Fails when the target is known and nothing arrived for [`IDLE_TIMEOUT`].
    fn check_idle(&self, now_ns: u64) -> anyhow::Result<()> {
        let target = self.target.load(Ordering::Relaxed);
        let idle = now_ns.saturating_sub(self.progress_ns.load(Ordering::Relaxed));
        if target != u64::MAX && self.deadline_ns.is_none() && idle >= nanos(IDLE_TIMEOUT) {
            bail!(
                "consumers received {} of {target} records, then nothing for {} s{}",
                self.received(),
                IDLE_TIMEOUT.as_secs(),
                self.hint
            );
        }
        Ok(())
    }
}

/// Creates `consumers` consumers of `topic`, each assigned its share of the `partitions`
/// and positioned at `start`.
pub(crate) async fn position(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    consumers: u32,
    start: Start,
) -> anyhow::Result<Vec<Consumer>> {
    let bootstrap = BootstrapArgs {
        bootstrap: bootstrap.to_string(),
    };
    let config = ConsumerConfig {
        reset: match start {
            Start::Beginning => OffsetReset::Earliest,
            Start::End => OffsetReset::Latest,
        },
        auto_commit: false,
        ..ConsumerConfig::default()
    };
    let mut positioned = Vec::new();
    for index in 0..consumers as i32 {
        let client = bootstrap.connect("mq-bench").await?;
        let mut consumer = Consumer::new(client, config.clone()).context("starting a consumer")?;
        let share: Vec<i32> = (index..partitions).step_by(consumers as usize).collect();
        consumer.assign(share.iter().map(|partition| (topic, *partition)));
        for partition in share {
            let to = match start {
                Start::Beginning => SeekTo::Beginning,
                Start::End => SeekTo::End,
            };
            consumer
                .seek(topic, partition, to)
                .await
                .with_context(|| format!("positioning a consumer on partition {partition}"))?;
        }
        positioned.push(consumer);
    }
    Ok(positioned)
}

/// Records stored in the consumers' partitions from their positions to the ends.
pub(crate) async fn available(consumers: &mut [Consumer]) -> anyhow::Result<u64> {
    let mut total = 0;
    for consumer in consumers {
        let assignment = consumer.assignment();
        let ends = consumer.end_offsets(&assignment).await?;
        for partition in &assignment {
            let position = consumer
                .position(&partition.topic, partition.partition)
                .await?;
            let end = ends.get(partition).copied().unwrap_or(position);
            total += u64::try_from(end - position).unwrap_or(0);
        }
    }
    Ok(total)
}

/// Runs the consumers until the goal is met; the first error stops them all.
pub(crate) async fn run(
    consumers: Vec<Consumer>,
    goal: Arc<Goal>,
    recorder: Arc<Recorder>,
    latency: Latency,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for consumer in consumers {
        tasks.spawn(consume(
            consumer,
            Arc::clone(&goal),
            Arc::clone(&recorder),
            latency,
        ));
    }
    let mut outcome = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .context("a consumer task failed")
            .and_then(|result| result);
        if let Err(error) = result {
            goal.stop();
            outcome = outcome.and(Err(error));
        }
    }
    outcome
}

/// One consumer's loop.
async fn consume(
    mut consumer: Consumer,
    goal: Arc<Goal>,
    recorder: Arc<Recorder>,
    latency: Latency,
) -> anyhow::Result<()> {
    let clock = recorder.clock();
    let measure_start_ns = recorder.measure_start_ns();
    loop {
        let polled_ns = clock.now_ns();
        if goal.is_met(polled_ns) {
            return Ok(());
        }
        let records = consumer.poll(POLL_TIMEOUT).await.context("consuming")?;
        let now_ns = clock.now_ns();
        if records.is_empty() {
            goal.check_idle(now_ns)?;
            continue;
        }
        let mut samples: Vec<Sample> = match latency {
            Latency::Stamp => records
                .iter()
                .filter_map(|record| {
                    let sent_ns = clock::read_stamp(record.value.as_deref()?)?;
                    Some(Sample {
                        bytes: value_bytes(record),
                        latency_ns: Some(now_ns.saturating_sub(sent_ns)),
                        measured: sent_ns >= measure_start_ns,
                    })
                })
                .collect(),
            Latency::Poll => records
                .iter()
                .map(|record| Sample {
                    bytes: value_bytes(record),
                    latency_ns: None,
                    measured: now_ns >= measure_start_ns,
                })
                .collect(),
        };
        if latency == Latency::Poll {
            if let Some(first) = samples.first_mut() {
                first.latency_ns = Some(now_ns - polled_ns);
            }
        }
        let kept = goal.claim(samples.len() as u64, now_ns);
        samples.truncate(usize::try_from(kept).unwrap_or(usize::MAX));
        recorder.record(now_ns, samples);
    }
}

fn value_bytes(record: &ConsumerRecord) -> u64 {
    record.value.as_ref().map_or(0, |value| value.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_target() {
        let goal = Goal::new(Some(10), None, "");
        assert_eq!(goal.claim(4, 1), 4);
        assert!(!goal.is_met(1));
        assert_eq!(goal.claim(8, 2), 6);
        assert_eq!(goal.claim(3, 3), 0);
        assert!(goal.is_met(3));
        assert_eq!(goal.received(), 10);
    }

    #[test]
    fn an_unknown_target_takes_everything_until_set() {
        let goal = Goal::new(None, None, "");
        assert_eq!(goal.claim(1000, 1), 1000);
        assert!(!goal.is_met(1));
        goal.set_target(1500, 2);
        assert!(!goal.is_met(2));
        assert_eq!(goal.claim(1000, 3), 500);
        assert!(goal.is_met(3));
    }

    #[test]
    fn a_deadline_or_a_stop_ends_the_run() {
        let goal = Goal::new(None, Some(100), "");
        assert!(!goal.is_met(99));
        assert!(goal.is_met(100));
        let goal = Goal::new(Some(5), None, "");
        goal.stop();
        assert!(goal.is_met(0));
    }

    #[test]
    fn idling_fails_only_with_a_known_target() {
        let idle = nanos(IDLE_TIMEOUT);
        let unknown = Goal::new(None, None, "");
        assert!(unknown.check_idle(idle * 2).is_ok());
        let known = Goal::new(Some(5), None, ": write more");
        assert_eq!(known.claim(2, idle), 2);
        assert!(known.check_idle(idle * 2 - 1).is_ok());
        assert_eq!(
            known.check_idle(idle * 2).unwrap_err().to_string(),
            "consumers received 2 of 5 records, then nothing for 10 s: write more"
        );
        let timed = Goal::new(Some(5), Some(u64::MAX), "");
        assert!(timed.check_idle(idle * 3).is_ok());
    }
}
