//! The producing side of a run: `--producers` senders, each with its own client and
//! [`Producer`], taking tickets from the shared [`Sequencer`] and sending the records; and,
//! per producer and partition, a task that awaits the deliveries and records each one's
//! latency, from its ticket's send time to its acknowledgement.
//!
//! Records go to explicit partitions, in runs of about one batch per partition (as the
//! client's sticky partitioning would do), so that each partition's deliveries can be awaited
//! in send order: the client completes a partition's records in that order, so awaiting
//! them in order measures each at its own acknowledgement.
//!
//! How each load sends, and why:
//! - **Closed loop** (no `--rate`): an OS thread per producer hands each run to the client at
//!   once with [`Producer::send_batch`] through [`Handle::block_on`], as a load generator
//!   holding many records would: one delivery per run instead of one per record, each
//!   record's latency still counted from its own ticket. Encoding batches on their own
//!   thread leaves the runtime's threads to the network.
//! - **Open loop** (`--rate`): a task per producer on the runtime sends each record at its
//!   own time with [`Producer::send`], as an async application does. Sending from another
//!   thread would add a thread wake-up to every record (the runtime's worker sleeps between
//!   records): 50-60 µs at the median on our test VM, which is the harness's, not the
//!   broker's. tokio's timers have millisecond resolution, so the task sleeps with them
//!   until [`SPIN_BEFORE`] ahead of each send and then yields until it is due (see
//!   [`wait_until`]): at rates above a few hundred records per second the task keeps its
//!   core busy, and its sends are on time to within microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mq_client::protocol::Record;
use mq_client::{
    BatchDeliveryFuture, Bytes, ClientError, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::clock::{self, Clock};
use super::recorder::{Failures, Recorder, Sample};
use super::schedule::{Sequencer, Ticket};
use crate::BootstrapArgs;

/// What the producers send.
#[derive(Debug)]
pub(crate) struct ProduceJob {
    /// Where the brokers are.
    pub(crate) bootstrap: String,
    /// The topic.
    pub(crate) topic: String,
    /// Its partitions.
    pub(crate) partitions: i32,
    /// Producer instances.
    pub(crate) producers: u32,
    /// Their settings.
    pub(crate) config: ProducerConfig,
    /// Every record's value (cloned, not copied); its first 8 bytes are replaced by the send
    /// time when `stamp` is set.
    pub(crate) payload: Bytes,
    /// Whether to stamp the send time into each value (`e2e`).
    pub(crate) stamp: bool,
}

/// Sent records awaiting their acknowledgement.
#[derive(Debug)]
enum Pending {
    /// One record (open loop).
    Record {
        /// Its outcome.
        delivery: DeliveryFuture,
        /// Its ticket.
        ticket: Ticket,
    },
    /// A run of records sent together (closed loop).
    Run {
        /// Their outcome.
        delivery: BatchDeliveryFuture,
        /// Their tickets, in record order.
        tickets: Vec<Ticket>,
    },
}

/// Ends the load when the producing future is dropped (Ctrl-C, an error elsewhere), so that
/// the sender threads stop taking tickets.
struct StopOnDrop(Arc<Sequencer>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The connected producers of a run, ready to send.
#[derive(Debug)]
pub(crate) struct Producers {
    /// What to send.
    job: Arc<ProduceJob>,
    /// One per `--producers`, each with its own client.
    producers: Vec<Producer>,
}

impl Producers {
    /// Connects the job's producers. Done before the schedule starts, so that connecting
    /// is not charged to the first records' latency.
    pub(crate) async fn connect(job: ProduceJob) -> anyhow::Result<Producers> {
        let bootstrap = BootstrapArgs {
            bootstrap: job.bootstrap.clone(),
        };
        let mut producers = Vec::new();
        for _ in 0..job.producers {
            let client = bootstrap.connect("mq-bench").await?;
            producers
                .push(Producer::new(client, job.config.clone()).context("starting a producer")?);
        }
        Ok(Producers {
            job: Arc::new(job),
            producers,
        })
    }

    /// Runs the producers until the sequencer runs out of tickets, then waits for every
    /// delivery. Records acknowledgements in `recorder` when given, failures in `failures`.
    /// Returns how many records were delivered (warm-up included).
    pub(crate) async fn run(
        self,
        sequencer: Arc<Sequencer>,
        clock: Clock,
        recorder: Option<Arc<Recorder>>,
        failures: Arc<Failures>,
    ) -> anyhow::Result<u64> {
        let _stop = StopOnDrop(Arc::clone(&sequencer));
        let Producers { job, producers } = self;
        let mut ackers = JoinSet::new();
        let mut finished = Vec::new();
        for (index, producer) in producers.iter().enumerate() {
            let mut acks = Vec::new();
            for _ in 0..job.partitions {
                let (sender, pending) = mpsc::unbounded_channel();
                acks.push(sender);
                ackers.spawn(acknowledge(
                    pending,
                    clock,
                    recorder.clone(),
                    Arc::clone(&failures),
                    job.payload.len() as u64,
                ));
            }
            let sender = SendLoop {
                runtime: Handle::current(),
                producer: producer.clone(),
                job: Arc::clone(&job),
                index: index as u64,
                sequencer: Arc::clone(&sequencer),
                clock,
                acks,
            };
            let (done, outcome) = oneshot::channel();
            if sequencer.schedule().is_open_loop() {
                tokio::spawn(async move {
                    let _ = done.send(sender.run_open_loop().await);
                });
            } else {
                std::thread::Builder::new()
                    .name(format!("mq-bench-producer-{index}"))
                    .spawn(move || {
                        let _ = done.send(sender.run_closed_loop());
                    })
                    .context("starting a producer thread")?;
            }
            finished.push(outcome);
        }
        let mut outcome = Ok(());
        for thread in finished {
            let result = thread
                .await
                .unwrap_or_else(|_| Err(anyhow!("a producer panicked")));
            if let Err(error) = result {
                sequencer.stop();
                outcome = outcome.and(Err(error));
            }
        }
        for producer in &producers {
            producer.close().await;
        }
        let mut delivered = 0;
        while let Some(acknowledged) = ackers.join_next().await {
            delivered += acknowledged.context("an acknowledgement task failed")?;
        }
        outcome.map(|()| delivered)
    }
}

/// One producer's sending loop: a task (open loop) or a thread (closed loop).
struct SendLoop {
    /// The runtime the producer's tasks live on.
    runtime: Handle,
    /// This loop's producer.
    producer: Producer,
    /// What to send.
    job: Arc<ProduceJob>,
    /// Which producer this is (0-based): where its partition runs start.
    index: u64,
    /// Hands out the tickets.
    sequencer: Arc<Sequencer>,
    /// The run's clock.
    clock: Clock,
    /// Per partition, the channel to its acknowledgement task.
    acks: Vec<mpsc::UnboundedSender<Pending>>,
}

impl SendLoop {
    /// Each record at its ticket's time, alone. Runs as a task on the runtime.
    async fn run_open_loop(self) -> anyhow::Result<()> {
        let outcome = self.send_records().await;
        self.finish(outcome)
    }

    /// Runs of about a batch per partition, each handed over at once. Runs on its own
    /// thread.
    fn run_closed_loop(self) -> anyhow::Result<()> {
        let outcome = self.send_runs();
        self.finish(outcome)
    }

    /// The open loop's sends, until the tickets run out.
    async fn send_records(&self) -> Result<(), ClientError> {
        let job = &*self.job;
        let run_length = records_per_batch(job.config.batch_bytes_max, job.payload.len());
        let mut sent = 0u64;
        while let Some(ticket) = self.sequencer.next(self.clock.now_ns()) {
            wait_until(self.clock.instant_at(ticket.send_ns)).await;
            let partition = partition_for(self.index, sent, job.partitions, run_length);
            let record = ProducerRecord::new(job.topic.clone(), self.value(&ticket))
                .with_partition(partition);
            let delivery = self.producer.send(record).await?;
            if !self.queue(partition, Pending::Record { delivery, ticket }) {
                break;
            }
            sent += 1;
        }
        Ok(())
    }

    /// The closed loop's sends, until the tickets run out.
    fn send_runs(&self) -> Result<(), ClientError> {
        let job = &*self.job;
        let run_length = records_per_batch(job.config.batch_bytes_max, job.payload.len());
        let mut sent = 0u64;
        loop {
            let partition = partition_for(self.index, sent, job.partitions, run_length);
            let now_ns = self.clock.now_ns();
            let tickets: Vec<Ticket> = std::iter::from_fn(|| self.sequencer.next(now_ns))
                .take(usize::try_from(run_length).unwrap_or(usize::MAX))
                .collect();
            if tickets.is_empty() {
                return Ok(());
            }
            let timestamp = mq_client::producer::now_ms();
            let records = tickets
                .iter()
                .map(|ticket| Record::new(timestamp, None, Some(self.value(ticket))))
                .collect();
            let delivery = self
                .runtime
                .block_on(self.producer.send_batch(&job.topic, partition, records))?;
            sent += tickets.len() as u64;
            if !self.queue(partition, Pending::Run { delivery, tickets }) {
                return Ok(());
            }
        }
    }

    /// Ends the load for every producer if this one failed.
    fn finish(&self, outcome: Result<(), ClientError>) -> anyhow::Result<()> {
        if outcome.is_err() {
            self.sequencer.stop();
        }
        outcome.with_context(|| format!("sending to topic '{}'", self.job.topic))
    }

    /// A record's value: the payload, stamped with the ticket's send time for `e2e`.
    fn value(&self, ticket: &Ticket) -> Bytes {
        if self.job.stamp {
            clock::stamp(&self.job.payload, ticket.send_ns)
        } else {
            self.job.payload.clone()
        }
    }

    /// Hands `pending` to its partition's acknowledgement task; `false` once that task is
    /// gone (the run is being torn down).
    fn queue(&self, partition: i32, pending: Pending) -> bool {
        // `partition_for` returns a partition below `partitions`, the length of `acks`.
        self.acks[partition as usize].send(pending).is_ok()
    }
}

/// Awaits one partition's deliveries in send order; records each acknowledgement's latency.
/// Returns how many were delivered.
async fn acknowledge(
    mut pending: mpsc::UnboundedReceiver<Pending>,
    clock: Clock,
    recorder: Option<Arc<Recorder>>,
    failures: Arc<Failures>,
    bytes: u64,
) -> u64 {
    let mut delivered = 0;
    let sample = |ticket: &Ticket, now_ns: u64| Sample {
        bytes,
        latency_ns: Some(now_ns.saturating_sub(ticket.send_ns)),
        measured: ticket.measured,
    };
    while let Some(sent) = pending.recv().await {
        match sent {
            Pending::Record { delivery, ticket } => match delivery.await {
                Ok(_) => {
                    delivered += 1;
                    if let Some(recorder) = &recorder {
                        let now_ns = clock.now_ns();
                        recorder.record(now_ns, [sample(&ticket, now_ns)]);
                    }
                }
                Err(error) => failures.add(&error),
            },
            Pending::Run { delivery, tickets } => match delivery.await {
                Ok(_) => {
                    delivered += tickets.len() as u64;
                    if let Some(recorder) = &recorder {
                        let now_ns = clock.now_ns();
                        recorder.record(now_ns, tickets.iter().map(|t| sample(t, now_ns)));
                    }
                }
                Err(error) => {
                    for _ in &tickets {
                        failures.add(&error);
                    }
                }
            },
        }
    }
    delivered
}

/// How early before a send is due its task stops sleeping on tokio's timer and starts
/// yielding: the timer has millisecond resolution and fires up to a millisecond late.
const SPIN_BEFORE: Duration = Duration::from_millis(2);

/// Waits until `at` (not at all if it has passed): sleeps on tokio's timer until shortly
/// before, then yields until it is time, so that the send is not late by the timer's
/// resolution. Each round yields the thread to the OS too, so that other processes on the
/// core (an `--embedded` broker) are not starved; the task's own runtime runs its other
/// tasks and polls for I/O between rounds.
async fn wait_until(at: Instant) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > SPIN_BEFORE {
        tokio::time::sleep_until((at - SPIN_BEFORE).into()).await;
    }
    while Instant::now() < at {
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
}

/// How many records of `size` bytes fill a batch of `batch_bytes` (at least 1).
fn records_per_batch(batch_bytes: usize, size: usize) -> u64 {
    (batch_bytes / size.max(1)).max(1) as u64
}

/// The partition of a producer's `sent`-th record: runs of `run_length` records per
/// partition, producers starting at different partitions.
fn partition_for(producer: u64, sent: u64, partitions: i32, run_length: u64) -> i32 {
    let partitions = u64::from(partitions.max(1).unsigned_abs());
    // Below `partitions`, which came from an i32.
    ((producer + sent / run_length.max(1)) % partitions) as i32
}

/// A value of `size` bytes: pseudo-random lowercase words, so that zstd finds about as much
/// to compress as in text, rather than nothing (random bytes) or everything (zeros).
pub(crate) fn payload(size: usize) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let value: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 32 {
                0..26 => b'a' + (state % 32) as u8,
                _ => b' ',
            }
        })
        .collect();
    Bytes::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_come_in_runs_of_a_batch() {
        let partitions: Vec<i32> = (0..7).map(|sent| partition_for(0, sent, 3, 2)).collect();
        assert_eq!(partitions, [0, 0, 1, 1, 2, 2, 0]);
        let second: Vec<i32> = (0..4).map(|sent| partition_for(1, sent, 3, 2)).collect();
        assert_eq!(second, [1, 1, 2, 2]);
        assert!((0..100).all(|sent| partition_for(5, sent, 1, 1) == 0));
    }

    #[test]
    fn a_batch_holds_at_least_one_record() {
        assert_eq!(records_per_batch(1024 * 1024, 1024), 1024);
        assert_eq!(records_per_batch(100, 1000), 1);
        assert_eq!(records_per_batch(100, 0), 100);
    }

    #[test]
    fn payload_is_text_of_the_asked_size() {
        let value = payload(1000);
        assert_eq!(value.len(), 1000);
        assert!(value
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || *byte == b' '));
        assert!(value.iter().filter(|byte| **byte == b' ').count() > 50);
        assert_eq!(payload(0).len(), 0);
    }
}
