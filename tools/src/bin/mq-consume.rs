//! `mq-consume`: prints the records of a topic (all partitions, or one), from the end, the
//! beginning, or an offset; follows the log until Ctrl-C unless told to stop at its end or
//! after a count.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use mq_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo, TopicPartition};
use mq_tools::{json_bytes, BootstrapArgs};

/// Print the records of a topic.
///
/// Without --from-beginning or --offset it prints records produced from now on. Without
/// -e or -c it follows the topic until interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "mq-consume",
    version,
    after_help = "Examples:\n  mq-consume --topic orders --from-beginning -e\n  mq-consume --topic orders                     # follow new records\n  mq-consume --topic orders --partition 2 --offset 100 -c 10\n  mq-consume --topic orders --from-beginning -e --format json | jq .value"
)]
struct Args {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// The topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Read only this partition (default: all of them).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Start at the first record still stored.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
    /// Where to restart when the position is no longer stored (deleted by retention).
    #[arg(long, value_enum, default_value = "earliest")]
    reset: ResetArg,
    /// Exit once every partition is read to its end.
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
    let topic = client.topic(&args.topic).await?;
    let config = ConsumerConfig {
        reset: match args.reset {
            ResetArg::Earliest => OffsetReset::Earliest,
            ResetArg::Latest => OffsetReset::Latest,
        },
        ..ConsumerConfig::default()
    };
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
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
        if let Some(targets) = &ends {
            if at_end(&mut consumer, targets).await? {
                // Check again: records may have arrived since the targets were taken.
                let latest = consumer.end_offsets(&assignment).await?;
                if at_end(&mut consumer, &latest).await? {
                    break;
                }
                ends = Some(latest);
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
