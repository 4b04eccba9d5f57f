//! When each record is sent, and which records count: the open-loop schedule, the closed
//! loop, the warm-up, and the end of the load. Pure logic over nanoseconds of the run's
//! [`Clock`](super::clock::Clock); the producers do the sleeping.
//!
//! Open loop (`--rate R`): record `i` is due at `start + i / R`, whatever happened to the
//! records before it, and its latency is measured from that intended time. A stall in the
//! broker or the client then shows up in the latency of every record that should have been
//! sent during it, instead of silently delaying the sends (coordinated omission).
//! Closed loop (no rate): each producer sends as fast as the client takes records, and
//! latency is measured from the actual send.
//!
//! Records due (open loop) or sent (closed loop) before `start + warmup` are sent but not
//! measured. The load ends after a number of measured records or after a measured duration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// When the load ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Limit {
    /// After this many measured records (over all producers).
    Messages(u64),
    /// After this long, counted from the end of the warm-up.
    Duration(Duration),
}

/// The plan of a run's sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// When the load starts, on the run's clock.
    start_ns: u64,
    /// How long the warm-up lasts.
    warmup_ns: u64,
    /// Records per second, for an open loop; `None` for a closed loop.
    rate: Option<f64>,
    /// When the load ends.
    limit: Limit,
    /// Open loop: how many records are due before the warm-up ends (they are not measured).
    warmup_records: u64,
}

/// One record to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// When it is to be sent (open loop) or was claimed (closed loop), on the run's clock;
    /// latency is measured from here.
    pub(crate) send_ns: u64,
    /// Whether it counts: sent after the warm-up.
    pub(crate) measured: bool,
}

impl Schedule {
    /// A schedule starting at `start_ns`. `rate` must be positive and finite (the options
    /// check it).
    pub(crate) fn new(start_ns: u64, warmup: Duration, rate: Option<f64>, limit: Limit) -> Self {
        let mut schedule = Schedule {
            start_ns,
            warmup_ns: nanos(warmup),
            rate,
            limit,
            warmup_records: 0,
        };
        schedule.warmup_records = schedule.first_index_at(schedule.warmup_ns);
        schedule
    }

    /// When measurement starts: the end of the warm-up, on the run's clock.
    pub(crate) fn measure_start_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.warmup_ns)
    }

    /// Whether records are paced at a fixed rate.
    pub(crate) fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// Open loop: nanoseconds from the start to when record `index` is due.
    fn offset_ns(&self, index: u64) -> u64 {
        match self.rate {
            // Float to integer casts saturate, so a huge index cannot wrap.
            Some(rate) => (index as f64 * 1e9 / rate) as u64,
            None => 0,
        }
    }

    /// Open loop: the first index due at or after `offset_ns` from the start (0 for a closed
    /// loop). Exact, so that "measured" means the same to producers (by index) and consumers
    /// (by the stamped send time).
    fn first_index_at(&self, offset_ns: u64) -> u64 {
        let Some(rate) = self.rate else {
            return 0;
        };
        let mut index = (offset_ns as f64 * rate / 1e9).ceil() as u64;
        while index > 0 && self.offset_ns(index - 1) >= offset_ns {
            index -= 1;
        }
        while self.offset_ns(index) < offset_ns {
            index += 1;
        }
        index
    }
}

/// Hands out tickets to any number of producer threads, in schedule order.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// The plan.
    schedule: Schedule,
    /// The next index to hand out.
    next: AtomicU64,
    /// Closed loop: measured tickets handed out so far.
    measured: AtomicU64,
    /// Set to end the load early (an error, an interruption).
    stopped: AtomicBool,
}

impl Sequencer {
    /// A sequencer at the start of `schedule`.
    pub(crate) fn new(schedule: Schedule) -> Sequencer {
        Sequencer {
            schedule,
            next: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// The plan.
    pub(crate) fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The next record to send, given the time now; `None` once the load is over.
    pub(crate) fn next(&self, now_ns: u64) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let schedule = &self.schedule;
        let measure_start = schedule.measure_start_ns();
        if schedule.is_open_loop() {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let send_ns = schedule.start_ns.saturating_add(schedule.offset_ns(index));
            let over = match schedule.limit {
                Limit::Messages(count) => index >= schedule.warmup_records.saturating_add(count),
                Limit::Duration(duration) => {
                    send_ns >= measure_start.saturating_add(nanos(duration))
                }
            };
            let measured = index >= schedule.warmup_records;
            return (!over).then_some(Ticket { send_ns, measured });
        }
        if now_ns < measure_start {
            return Some(Ticket {
                send_ns: now_ns,
                measured: false,
            });
        }
        let over = match schedule.limit {
            Limit::Messages(count) => self.measured.fetch_add(1, Ordering::Relaxed) >= count,
            Limit::Duration(duration) => now_ns >= measure_start.saturating_add(nanos(duration)),
        };
        (!over).then_some(Ticket {
            send_ns: now_ns,
            measured: true,
        })
    }

    /// Ends the load: every later [`Sequencer::next`] returns `None`.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// A duration in nanoseconds, saturating.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn drain(sequencer: &Sequencer, now_ns: u64) -> Vec<Ticket> {
        std::iter::from_fn(|| sequencer.next(now_ns)).collect()
    }

    #[test]
    fn open_loop_spaces_records_by_the_rate_from_the_start() {
        let schedule = Schedule::new(5 * SECOND, Duration::ZERO, Some(4.0), Limit::Messages(3));
        let tickets = drain(&Sequencer::new(schedule), 0);
        let times: Vec<u64> = tickets.iter().map(|ticket| ticket.send_ns).collect();
        assert_eq!(
            times,
            [
                5 * SECOND,
                5 * SECOND + 250_000_000,
                5 * SECOND + 500_000_000
            ]
        );
        assert!(tickets.iter().all(|ticket| ticket.measured));
    }

    #[test]
    fn open_loop_times_do_not_depend_on_when_records_are_taken() {
        // Late callers get the same intended times: a stall is charged to the records.
        let schedule = Schedule::new(0, Duration::ZERO, Some(1000.0), Limit::Messages(10));
        let late = drain(&Sequencer::new(schedule), 60 * SECOND);
        assert_eq!(late.len(), 10);
        assert_eq!(late[9].send_ns, 9_000_000);
    }

    #[test]
    fn open_loop_warmup_records_come_first_and_are_not_counted() {
        let schedule = Schedule::new(0, Duration::from_secs(1), Some(10.0), Limit::Messages(5));
        let tickets = drain(&Sequencer::new(schedule), 0);
        assert_eq!(tickets.len(), 15);
        assert!(tickets[..10].iter().all(|ticket| !ticket.measured));
        assert!(tickets[10..].iter().all(|ticket| ticket.measured));
        assert_eq!(tickets[10].send_ns, SECOND);
        assert_eq!(schedule.measure_start_ns(), SECOND);
    }

    #[test]
    fn open_loop_warmup_boundary_agrees_with_the_stamped_times() {
        // Whatever the rate, a ticket is measured exactly when its send time is at or after
        // the end of the warm-up, which is what consumers check on the stamp.
        for rate in [3.0, 7.0, 1000.0, 33_333.0, 1e6 / 7.0] {
            let schedule = Schedule::new(
                17,
                Duration::from_millis(1234),
                Some(rate),
                Limit::Messages(50),
            );
            for ticket in drain(&Sequencer::new(schedule), 0) {
                assert_eq!(
                    ticket.measured,
                    ticket.send_ns >= schedule.measure_start_ns(),
                    "rate {rate}"
                );
            }
        }
    }

    #[test]
    fn open_loop_duration_ends_after_the_measured_duration() {
        let schedule = Schedule::new(
            0,
            Duration::from_secs(1),
            Some(100.0),
            Limit::Duration(Duration::from_secs(2)),
        );
        let tickets = drain(&Sequencer::new(schedule), 0);
        assert_eq!(tickets.len(), 300);
        assert_eq!(tickets.iter().filter(|ticket| ticket.measured).count(), 200);
    }

    #[test]
    fn closed_loop_counts_measured_records_after_the_warmup() {
        let schedule = Schedule::new(SECOND, Duration::from_secs(1), None, Limit::Messages(2));
        let sequencer = Sequencer::new(schedule);
        let warm = sequencer.next(SECOND + 5).unwrap();
        assert_eq!(
            warm,
            Ticket {
                send_ns: SECOND + 5,
                measured: false
            }
        );
        assert!(sequencer.next(3 * SECOND).unwrap().measured);
        assert_eq!(
            sequencer.next(3 * SECOND + 1).unwrap().send_ns,
            3 * SECOND + 1
        );
        assert_eq!(sequencer.next(3 * SECOND + 2), None);
    }

    #[test]
    fn closed_loop_duration_ends_by_the_clock() {
        let schedule = Schedule::new(
            0,
            Duration::ZERO,
            None,
            Limit::Duration(Duration::from_secs(1)),
        );
        let sequencer = Sequencer::new(schedule);
        assert!(sequencer.next(SECOND - 1).is_some());
        assert_eq!(sequencer.next(SECOND), None);
    }

    #[test]
    fn stop_ends_the_load() {
        let schedule = Schedule::new(0, Duration::ZERO, Some(10.0), Limit::Messages(100));
        let sequencer = Sequencer::new(schedule);
        assert!(sequencer.next(0).is_some());
        sequencer.stop();
        assert_eq!(sequencer.next(0), None);
    }
}
