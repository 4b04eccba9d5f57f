//! `mq-bench`: the load-test harness. Measures producing, consuming, or both at once
//! (end-to-end), against a broker or one it starts itself, and reports throughput and
//! latency percentiles; the work is in `mq_tools::bench`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mq_tools::bench::{BenchArgs, Scenario};

/// Load-test a broker: throughput and latency percentiles (hdrhistogram).
///
/// Prints a progress line on stderr every second and the report on stdout: records, bytes,
/// seconds, records/s, MB/s (1 MB = 10^6 bytes), and latency p50/p90/p99/p99.9/max in
/// microseconds. With --rate the load is an open loop and latency runs from each record's
/// intended send time, so a stall counts against every record due during it.
#[derive(Debug, Parser)]
#[command(
    name = "mq-bench",
    version,
    after_help = "Examples:\n  mq-bench produce --embedded --messages 200000\n  mq-bench produce --messages 1000000 --size 100 --producers 2 --partitions 4 --acks 1\n  mq-bench consume --messages 1000000 --consumers 2\n  mq-bench e2e --embedded --rate 10000 --duration 30 --warmup 5\n  mq-bench e2e --rate 50000 --duration 60 --json > result.json\n  mq-bench produce --embedded --broker-arg flush_policy=never --duration 20"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce records; latency from send to acknowledgement.
    #[command(
        after_help = "Examples:\n  mq-bench produce --embedded --messages 200000\n  mq-bench produce --duration 30 --size 100 --producers 4 --partitions 4\n  mq-bench produce --rate 20000 --duration 60 --acks 1 --compression zstd\n\nThe topic (default mq-bench) is created with --partitions when missing."
    )]
    Produce(BenchArgs),
    /// Consume a topic from its beginning; throughput (latency: each poll's duration).
    #[command(
        after_help = "Examples:\n  mq-bench produce --messages 1000000 && mq-bench consume\n  mq-bench consume --messages 500000 --consumers 2\n  mq-bench consume --embedded --messages 1000000   # writes them first, then reads\n\nWithout --messages or --duration it reads every record stored when it starts; with\n--messages N it reads N records, warm-up included."
    )]
    Consume(BenchArgs),
    /// Produce and consume at once; latency from send to receipt by a consumer.
    #[command(
        after_help = "Examples:\n  mq-bench e2e --embedded --rate 10000 --duration 5\n  mq-bench e2e --rate 50000 --duration 60 --warmup 10 --producers 2 --consumers 2 --partitions 4\n  mq-bench e2e --messages 100000 --acks 1 --linger-ms 0\n\nConsumers start at the end of the topic before the producers start. Each value begins\nwith its send time (8 bytes), so --size must be at least 8."
    )]
    E2e(BenchArgs),
}

fn main() -> ExitCode {
    let (scenario, args) = match Cli::parse().command {
        Command::Produce(args) => (Scenario::Produce, args),
        Command::Consume(args) => (Scenario::Consume, args),
        Command::E2e(args) => (Scenario::E2e, args),
    };
    mq_tools::run(mq_tools::bench::run(scenario, args))
}
