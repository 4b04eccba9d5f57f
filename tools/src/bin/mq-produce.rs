//! `mq-produce`: sends one record per line of standard input to a topic, batched, and says at
//! exit how many the brokers acknowledged. Exits 0 only if all were.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use mq_client::{Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use mq_tools::BootstrapArgs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Send one record per line of standard input to a topic.
///
/// At exit, prints `acknowledged N of M records` on stderr; the exit code is 0 only if every
/// record was acknowledged.
#[derive(Debug, Parser)]
#[command(
    name = "mq-produce",
    version,
    after_help = "Examples:\n  echo hello | mq-produce --topic orders\n  seq 1000 | mq-produce --topic numbers --acks 1\n  printf 'user1:clicked\\nuser2:paid\\n' | mq-produce --topic events --key-separator :\n  mq-produce --topic logs --compression zstd < app.log"
)]
struct Args {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// The topic to write to.
    #[arg(long, short = 't')]
    topic: String,
    /// Write every record to this partition (default: by key hash; keyless records spread).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// When the broker acknowledges: 0 (never), 1 (after the write), all (after fsync).
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// Compression of record batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// How long a record may take to be acknowledged, retries included.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    delivery_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Zstd,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mq_tools::run(produce(args))
}

async fn produce(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.bootstrap.connect("mq-produce").await?;
    // Fail fast on a missing topic rather than retrying until the delivery timeout.
    let topic = client.topic(&args.topic).await?;
    if let Some(partition) = args.partition {
        if topic.partition(partition).is_none() {
            bail!(
                "topic '{}' has no partition {partition} (it has {})",
                args.topic,
                topic.partition_count()
            );
        }
    }
    let config = ProducerConfig {
        acks: match args.acks.as_str() {
            "0" => Acks::None,
            "1" => Acks::Leader,
            _ => Acks::All,
        },
        compression: match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Zstd => Compression::Zstd,
        },
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config).context("starting the producer")?;
    // Deliveries are awaited in send order by their own task while stdin is still read.
    let (deliveries, pending) = mpsc::channel::<DeliveryFuture>(10_000);
    let acknowledger = tokio::spawn(count_acknowledged(pending));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    let mut unsendable = 0u64;
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        line_number += 1;
        let mut record = match &args.key_separator {
            None => ProducerRecord::new(args.topic.clone(), line),
            Some(separator) => match line.split_once(separator.as_str()) {
                Some((key, value)) => ProducerRecord::new(args.topic.clone(), value.to_string())
                    .with_key(key.to_string()),
                None => {
                    unsendable += 1;
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: line {line_number} has no key separator '{separator}'; not sent"
                    );
                    continue;
                }
            },
        };
        if let Some(partition) = args.partition {
            record = record.with_partition(partition);
        }
        sent += 1;
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send(delivery).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "error: line {line_number}: {error}");
            }
        }
    }
    producer.close().await;
    drop(deliveries);
    let acknowledged = acknowledger.await.context("waiting for acknowledgements")?;
    let total = sent + unsendable;
    let _ = writeln!(
        std::io::stderr(),
        "acknowledged {acknowledged} of {total} records"
    );
    Ok(if acknowledged == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Awaits deliveries in order; counts the acknowledged ones, reports the first few failures.
async fn count_acknowledged(mut pending: mpsc::Receiver<DeliveryFuture>) -> u64 {
    let mut acknowledged = 0u64;
    let mut failures = 0u64;
    while let Some(delivery) = pending.recv().await {
        match delivery.await {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                failures += 1;
                if failures <= 5 {
                    let _ = writeln!(std::io::stderr(), "error: record not delivered: {error}");
                } else if failures == 6 {
                    let _ = writeln!(std::io::stderr(), "error: more records not delivered");
                }
            }
        }
    }
    acknowledged
}
