//! `mq-consume`: prints the records of a topic (all partitions, or one), from the end, the
//! beginning, or an offset; or, with `--group`, the partitions a consumer group gives it,
//! from the group's committed offsets. Follows the log until Ctrl-C or SIGTERM unless told to
//! stop at its end or after a count.
//!
//! In a group it commits, for each partition, the offset after the last record it printed
//! (flushed to stdout): every few seconds, before giving a partition up in a rebalance, and
//! on exit. So members that join and leave cleanly never print a record twice, and a record
//! is never committed before it was printed.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use mq_client::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceListener, SeekTo,
    TopicPartition,
};
use mq_tools::{json_bytes, BootstrapArgs};

/// How often a group member commits what it printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Print the records of a topic.
///
/// Without --from-beginning or --offset it prints records produced from now on. With
/// --group G it shares the topic's partitions with the group's other members and resumes
/// from the group's committed offsets (a group without any starts per --reset, default
/// earliest). Without -e or -c it follows the topic until interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "mq-consume",
    version,
    after_help = "Examples:\n  mq-consume --topic orders --from-beginning -e\n  mq-consume --topic orders                     # follow new records\n  mq-consume --topic orders --partition 2 --offset 100 -c 10\n  mq-consume --topic orders --group billing     # run several: they share the partitions\n  mq-consume --topic orders --from-beginning -e --format json | jq .value"
)]
struct Args {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// The topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Read only this partition (default: all of them).
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Option<i32>,
    /// Consume as a member of this consumer group: the group's members share the partitions,
    /// and each resumes from the group's committed offsets.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Start at the first record still stored.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition", conflicts_with = "group")]
    offset: Option<i64>,
    /// Where to start when a group has no committed offset, and where to restart when the
    /// position is no longer stored (deleted by retention).
    #[arg(long, value_enum, default_value = "earliest")]
    reset: ResetArg,
    /// Exit once every (assigned) partition is read to its end.
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Exit after this many records.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// value: each record's value on a line; json: one object per record.
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResetArg {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Value,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mq_tools::run(consume(args))
}

async fn consume(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.bootstrap.connect("mq-consume").await?;
    let config = ConsumerConfig {
        reset: match (args.reset, args.group.is_some() && args.from_beginning) {
            (_, true) | (ResetArg::Earliest, _) => OffsetReset::Earliest,
            (ResetArg::Latest, false) => OffsetReset::Latest,
        },
        auto_commit: false,
        ..ConsumerConfig::default()
    };
    match args.group.clone() {
        Some(group) => consume_in_group(&args, client, config, &group).await,
        None => consume_assigned(&args, client, config).await,
    }
}

/// Reads the chosen partitions (all by default) from the chosen start.
async fn consume_assigned(
    args: &Args,
    client: Client,
    config: ConsumerConfig,
) -> anyhow::Result<ExitCode> {
    let topic = client.topic(&args.topic).await?;
    let mut consumer = Consumer::new(client, config).context("starting the consumer")?;
    match args.partition {
        Some(partition) => {
            if topic.partition(partition).is_none() {
                bail!(
                    "topic '{}' has no partition {partition} (it has {})",
                    args.topic,
                    topic.partition_count()
                );
            }
            consumer.assign([(args.topic.clone(), partition)]);
        }
        None => consumer.assign_all(&args.topic).await?,
    }
    let assignment = consumer.assignment();
    for assigned in &assignment {
        let to = match (args.offset, args.from_beginning) {
            (Some(offset), _) => SeekTo::Offset(offset),
            (None, true) => SeekTo::Beginning,
            (None, false) => SeekTo::End,
        };
        consumer
            .seek(&assigned.topic, assigned.partition, to)
            .await?;
    }
    let mut stdout = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut ends = if args.exit_at_end {
        Some(consumer.end_offsets(&assignment).await?)
    } else {
        None
    };
    let interrupted = mq_tools::shutdown_signal();
    tokio::pin!(interrupted);
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
        if let Some(targets) = &mut ends {
            if read_to_end(&mut consumer, &assignment, targets).await? {
                break;
            }
        }
        let records = tokio::select! {
            _ = &mut interrupted => break,
            records = consumer.poll(Duration::from_millis(500)) => records?,
        };
        for record in records {
            if args.count.is_some_and(|count| printed >= count) {
                break;
            }
            print_record(&mut stdout, &record, args.format)?;
            printed += 1;
        }
        stdout.flush()?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What a group member printed and committed, shared with its rebalance listener.
#[derive(Debug, Default)]
struct Progress {
    /// Per partition: the offset after the last record printed and flushed.
    printed: HashMap<TopicPartition, i64>,
    /// Per partition: the offset last committed.
    committed: HashMap<TopicPartition, i64>,
    /// Set when a new assignment arrives (the end offsets for `-e` are then stale).
    assignment_changed: bool,
}

impl Progress {
    /// Printed offsets not committed yet, of every partition (`None`) or of `only`.
    fn pending(&self, only: Option<&[TopicPartition]>) -> Vec<(TopicPartition, i64)> {
        self.printed
            .iter()
            .filter(|(partition, offset)| {
                only.is_none_or(|only| only.contains(partition))
                    && self.committed.get(*partition) != Some(offset)
            })
            .map(|(partition, offset)| (partition.clone(), *offset))
            .collect()
    }

    fn mark_committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (partition, offset) in offsets {
            self.committed.insert(partition.clone(), *offset);
        }
    }

    /// Drops what is known of partitions given up: their next owner commits them now.
    fn forget(&mut self, partitions: &[TopicPartition]) {
        for partition in partitions {
            self.printed.remove(partition);
            self.committed.remove(partition);
        }
    }
}

/// Locks the progress; a panic elsewhere cannot leave it half-updated (every update is a
/// single map operation), so a poisoned lock is still usable.
fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Commits `offsets` (waiting for the broker's acknowledgement) and records them as committed.
async fn commit(
    consumer: &mut Consumer,
    progress: &Mutex<Progress>,
    offsets: Vec<(TopicPartition, i64)>,
) -> anyhow::Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    consumer.commit_offsets(&offsets).await?;
    lock(progress).mark_committed(&offsets);
    Ok(())
}

/// Commits what was printed from partitions before the group takes them away.
struct CommitBeforeRevoke {
    progress: Arc<Mutex<Progress>>,
}

impl RebalanceListener for CommitBeforeRevoke {
    async fn on_partitions_revoked(&mut self, consumer: &mut Consumer, revoked: &[TopicPartition]) {
        let pending = lock(&self.progress).pending(Some(revoked));
        if let Err(error) = commit(consumer, &self.progress, pending).await {
            eprintln!("warning: committing before a rebalance failed: {error:#}");
        }
        lock(&self.progress).forget(revoked);
    }

    /// Takes each new partition's starting position as printed-up-to, so that a partition
    /// with nothing to print still gets a committed offset (where a later member resumes).
    async fn on_partitions_assigned(
        &mut self,
        consumer: &mut Consumer,
        assigned: &[TopicPartition],
    ) {
        let mut starts = Vec::with_capacity(assigned.len());
        for partition in assigned {
            // Without a position now (broker unreachable), the partition is committed once
            // something from it is printed.
            if let Ok(start) = consumer
                .position(&partition.topic, partition.partition)
                .await
            {
                starts.push((partition.clone(), start));
            }
        }
        let mut progress = lock(&self.progress);
        for (partition, start) in starts {
            progress.printed.entry(partition).or_insert(start);
        }
        progress.assignment_changed = true;
    }
}

/// Reads the partitions the group assigns, from its committed offsets, committing what it
/// printed.
async fn consume_in_group(
    args: &Args,
    client: Client,
    config: ConsumerConfig,
    group: &str,
) -> anyhow::Result<ExitCode> {
    // Fail early and clearly on a missing topic rather than waiting in an empty group.
    client.topic(&args.topic).await?;
    let mut consumer = Consumer::new(client, config).context("starting the consumer")?;
    let progress = Arc::new(Mutex::new(Progress::default()));
    consumer.set_rebalance_listener(CommitBeforeRevoke {
        progress: Arc::clone(&progress),
    });
    consumer
        .subscribe(group, &[args.topic.as_str()])
        .with_context(|| format!("joining group '{group}'"))?;
    let mut stdout = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut ends: Option<HashMap<TopicPartition, i64>> = None;
    let mut last_commit = Instant::now();
    let interrupted = mq_tools::shutdown_signal();
    tokio::pin!(interrupted);
    let outcome: anyhow::Result<()> = async {
        loop {
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
            if args.exit_at_end && consumer.group_generation().is_some() {
                let assignment = consumer.assignment();
                let changed = std::mem::take(&mut lock(&progress).assignment_changed);
                if changed || ends.is_none() {
                    ends = Some(consumer.end_offsets(&assignment).await?);
                }
                if let Some(targets) = &mut ends {
                    if read_to_end(&mut consumer, &assignment, targets).await? {
                        return Ok(());
                    }
                }
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                last_commit = Instant::now();
                let pending = lock(&progress).pending(None);
                if let Err(error) = commit(&mut consumer, &progress, pending).await {
                    eprintln!("warning: periodic commit failed: {error:#}");
                }
            }
            let records = tokio::select! {
                _ = &mut interrupted => return Ok(()),
                records = consumer.poll(Duration::from_millis(500)) => records?,
            };
            let mut newly_printed = Vec::new();
            for record in records {
                if args.count.is_some_and(|count| printed >= count) {
                    break;
                }
                print_record(&mut stdout, &record, args.format)?;
                printed += 1;
                newly_printed.push((
                    TopicPartition::new(record.topic, record.partition),
                    record.offset + 1,
                ));
            }
            // Only what reached stdout counts as printed, and so may be committed.
            stdout.flush()?;
            let mut progress = lock(&progress);
            for (partition, next) in newly_printed {
                progress.printed.insert(partition, next);
            }
        }
    }
    .await;
    let flushed = stdout.flush();
    // Commit what was printed even when the loop failed (say, stdout closed by `head`).
    let pending = lock(&progress).pending(None);
    let committed = commit(&mut consumer, &progress, pending)
        .await
        .with_context(|| format!("committing the offsets of group '{group}'"));
    let closed = consumer.close().await.context("leaving the group");
    outcome?;
    flushed?;
    committed?;
    closed?;
    Ok(ExitCode::SUCCESS)
}

/// Whether every partition of `assignment` is read to its end: its position reached the
/// end offset in `targets` and, checked again, the current end (records may have arrived since
/// the targets were taken; then they become the new targets).
async fn read_to_end(
    consumer: &mut Consumer,
    assignment: &[TopicPartition],
    targets: &mut HashMap<TopicPartition, i64>,
) -> anyhow::Result<bool> {
    if !at_end(consumer, targets).await? {
        return Ok(false);
    }
    let latest = consumer.end_offsets(assignment).await?;
    if at_end(consumer, &latest).await? {
        return Ok(true);
    }
    *targets = latest;
    Ok(false)
}

/// Whether every partition's position reached its target end offset.
async fn at_end(
    consumer: &mut Consumer,
    targets: &HashMap<TopicPartition, i64>,
) -> anyhow::Result<bool> {
    for (assigned, end) in targets {
        if consumer
            .position(&assigned.topic, assigned.partition)
            .await?
            < *end
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn print_record(
    out: &mut impl Write,
    record: &ConsumerRecord,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Value => {
            if let Some(value) = &record.value {
                out.write_all(value)?;
            }
            out.write_all(b"\n")
        }
        Format::Json => {
            let (key, key_encoding) = json_bytes(record.key.as_ref());
            let (value, value_encoding) = json_bytes(record.value.as_ref());
            let mut object = serde_json::json!({
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": key,
                "value": value,
            });
            if let Some(encoding) = key_encoding {
                object["key_encoding"] = encoding.into();
            }
            if let Some(encoding) = value_encoding {
                object["value_encoding"] = encoding.into();
            }
            writeln!(out, "{object}")
        }
    }
}
