//! The options of `mq-bench` (shared by its three subcommands) and their checks: the flags
//! as parsed, turned into [`Settings`] that the rest of the harness can trust, or into a
//! one-line error naming the flag.

use std::time::Duration;

use anyhow::{bail, ensure};
use mq_client::{Acks, Compression, ProducerConfig};

use super::clock::STAMP_BYTES;
use super::schedule::Limit;
use crate::BootstrapArgs;

/// The load of `produce` and `e2e` when neither `--messages` nor `--duration` is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Largest `--batch-bytes`: the client's (and the broker's) batch limit.
const BATCH_BYTES_MAX: usize = mq_client::protocol::limits::BATCH_BYTES_MAX;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Producers only: send to acknowledgement.
    Produce,
    /// Consumers only, reading a topic from its beginning.
    Consume,
    /// Producers and consumers at once: send to receipt.
    E2e,
}

impl Scenario {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Produce => "produce",
            Scenario::Consume => "consume",
            Scenario::E2e => "e2e",
        }
    }

    fn produces(self) -> bool {
        self != Scenario::Consume
    }

    fn consumes(self) -> bool {
        self != Scenario::Produce
    }
}

/// The flags every `mq-bench` subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// Records to measure, over all producers, after the warm-up (consume: records to read
    /// in all, warm-up included) [default for produce and e2e: --duration 10; for consume:
    /// every record stored when it starts].
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    messages: Option<u64>,
    /// Seconds of measured load, after the warm-up.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Bytes of each record's value (e2e: at least 8, the send-time stamp).
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    size: usize,
    /// A producer sends a partition's batch once its records reach this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    batch_bytes: usize,
    /// How long a producer waits for more records before sending a batch that is not full.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    linger_ms: u64,
    /// Producer instances, each with its own connection [default: 1].
    #[arg(long, value_name = "P")]
    producers: Option<u32>,
    /// Consumer instances, each with its own connection; consumer i reads partitions i,
    /// i+C, i+2C, ... [default: 1].
    #[arg(long, value_name = "C")]
    consumers: Option<u32>,
    /// Partitions of the topic when mq-bench creates it [default: 1].
    #[arg(long, value_name = "N")]
    partitions: Option<i32>,
    /// The topic; created when missing.
    #[arg(long, short = 't', default_value = "mq-bench")]
    topic: String,
    /// When the broker acknowledges: 0 (never), 1 (after the write), all (after fsync).
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"], allow_negative_numbers = true)]
    acks: String,
    /// Compression of record batches: none or zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "zstd"])]
    compression: String,
    /// Open loop: send this many records per second in total, on a fixed schedule, and
    /// measure latency from each record's intended send time (so stalls are not hidden).
    /// Without it, producers send as fast as they can (closed loop) and latency runs from
    /// the actual send.
    #[arg(long, value_name = "MSGS_PER_S", allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Seconds of load before measuring; what happens during them is not counted.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    warmup: f64,
    /// Print the report as one JSON object: messages, bytes, seconds, msgs_per_sec,
    /// mb_per_sec (1 MB = 10^6 bytes), latency_us (p50, p90, p99, p999, max), and more.
    #[arg(long)]
    json: bool,
    /// Start a broker for the run (the mq-broker next to mq-bench, on 127.0.0.1, in a
    /// temporary directory), stop it afterwards, and report its peak memory. -b is ignored.
    #[arg(long)]
    embedded: bool,
    /// With --embedded: a broker setting, as KEY=VALUE (flush_policy=never,
    /// segment_bytes=...); repeatable.
    #[arg(long = "broker-arg", value_name = "KEY=VALUE")]
    broker_args: Vec<String>,
}

/// Checked settings of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// What to measure.
    pub(crate) scenario: Scenario,
    /// Where the brokers are (unless embedded).
    pub(crate) bootstrap: BootstrapArgs,
    /// When the load ends; `None` for `consume` of every record present.
    pub(crate) limit: Option<Limit>,
    /// Bytes of each record's value.
    pub(crate) size: usize,
    /// The producers' settings.
    pub(crate) producer: ProducerConfig,
    /// Producer instances (0 for `consume`).
    pub(crate) producers: u32,
    /// Consumer instances (0 for `produce`).
    pub(crate) consumers: u32,
    /// Partitions to create the topic with, if asked for.
    pub(crate) partitions: Option<i32>,
    /// The topic.
    pub(crate) topic: String,
    /// `0`, `1` or `all`, as reported.
    pub(crate) acks: String,
    /// `none` or `zstd`, as reported.
    pub(crate) compression: String,
    /// Records per second of an open loop.
    pub(crate) rate: Option<f64>,
    /// Load before measuring.
    pub(crate) warmup: Duration,
    /// Whether the report is JSON.
    pub(crate) json: bool,
    /// With `--embedded`: the broker's extra settings, as (key, value).
    pub(crate) embedded: Option<Vec<(String, String)>>,
}

impl Settings {
    /// Checks `args` for `scenario`.
    pub(crate) fn new(scenario: Scenario, args: BenchArgs) -> anyhow::Result<Settings> {
        let name = scenario.name();
        if !scenario.produces() {
            ensure!(
                args.rate.is_none(),
                "--rate applies to produce and e2e, not {name}"
            );
            ensure!(
                args.producers.is_none(),
                "--producers applies to produce and e2e, not {name}"
            );
        }
        if !scenario.consumes() {
            ensure!(
                args.consumers.is_none(),
                "--consumers applies to consume and e2e, not {name}"
            );
        }
        let limit = limit(scenario, &args)?;
        ensure!(args.size >= 1, "--size must be at least 1 byte");
        if scenario == Scenario::E2e {
            ensure!(
                args.size >= STAMP_BYTES,
                "--size must be at least {STAMP_BYTES} bytes for e2e (each value starts with its send time)"
            );
        }
        ensure!(
            (1..=BATCH_BYTES_MAX).contains(&args.batch_bytes),
            "--batch-bytes must be between 1 and {BATCH_BYTES_MAX}"
        );
        let producers = count("--producers", args.producers)?;
        let consumers = count("--consumers", args.consumers)?;
        if let Some(partitions) = args.partitions {
            ensure!(partitions >= 1, "--partitions must be at least 1");
            ensure!(
                !scenario.consumes() || consumers <= partitions as u32,
                "--consumers {consumers} is more than --partitions {partitions}: each consumer needs a partition"
            );
        }
        ensure!(!args.topic.is_empty(), "--topic must not be empty");
        if let Some(rate) = args.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of records per second"
            );
        }
        let warmup = seconds("--warmup", args.warmup)?;
        let embedded = embedded(scenario, &args)?;
        let producer = ProducerConfig {
            acks: match args.acks.as_str() {
                "0" => Acks::None,
                "1" => Acks::Leader,
                _ => Acks::All,
            },
            compression: match args.compression.as_str() {
                "zstd" => Compression::Zstd,
                _ => Compression::None,
            },
            linger: Duration::from_millis(args.linger_ms),
            batch_bytes_max: args.batch_bytes,
            buffer_bytes_max: ProducerConfig::default()
                .buffer_bytes_max
                .max(args.batch_bytes),
            ..ProducerConfig::default()
        };
        Ok(Settings {
            scenario,
            bootstrap: args.bootstrap,
            limit,
            size: args.size,
            producer,
            producers: if scenario.produces() { producers } else { 0 },
            consumers: if scenario.consumes() { consumers } else { 0 },
            partitions: args.partitions,
            topic: args.topic,
            acks: if args.acks == "-1" {
                "all".to_string()
            } else {
                args.acks
            },
            compression: args.compression,
            rate: args.rate,
            warmup,
            json: args.json,
            embedded,
        })
    }
}

/// The end of the load: as asked, or the scenario's default.
fn limit(scenario: Scenario, args: &BenchArgs) -> anyhow::Result<Option<Limit>> {
    let asked = match (args.messages, args.duration) {
        (Some(0), _) => bail!("--messages must be at least 1"),
        (Some(messages), _) => Some(Limit::Messages(messages)),
        (None, Some(duration)) => {
            let duration = seconds("--duration", duration)?;
            ensure!(!duration.is_zero(), "--duration must be positive");
            Some(Limit::Duration(duration))
        }
        (None, None) => None,
    };
    Ok(match (asked, scenario) {
        (None, Scenario::Produce | Scenario::E2e) => Some(Limit::Duration(DEFAULT_DURATION)),
        (asked, _) => asked,
    })
}

/// A count flag: at least 1, default 1.
fn count(flag: &str, value: Option<u32>) -> anyhow::Result<u32> {
    let value = value.unwrap_or(1);
    ensure!(value >= 1, "{flag} must be at least 1");
    Ok(value)
}

/// A flag in seconds, as a duration.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) => Ok(duration),
        Err(_) => bail!("{flag} must be a non-negative number of seconds"),
    }
}

/// The embedded broker's settings, if one is asked for.
fn embedded(scenario: Scenario, args: &BenchArgs) -> anyhow::Result<Option<Vec<(String, String)>>> {
    if !args.embedded {
        ensure!(args.broker_args.is_empty(), "--broker-arg needs --embedded");
        return Ok(None);
    }
    if scenario == Scenario::Consume {
        ensure!(
            args.messages.is_some(),
            "consume --embedded needs --messages N: the records to write to the new broker first, then read"
        );
    }
    let mut settings = Vec::new();
    for pair in &args.broker_args {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--broker-arg {pair}: expected KEY=VALUE");
        };
        let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        ensure!(
            key_ok,
            "--broker-arg {pair}: KEY must be a broker setting such as flush_policy"
        );
        ensure!(
            !matches!(
                key.replace('-', "_").as_str(),
                "listen" | "data_dir" | "config"
            ),
            "--broker-arg {pair}: mq-bench sets the embedded broker's {key} itself"
        );
        settings.push((key.replace('_', "-"), value.to_string()));
    }
    Ok(Some(settings))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn settings(scenario: Scenario, flags: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("mq-bench").chain(flags.iter().copied()))?;
        Settings::new(scenario, cli.args)
    }

    fn error(scenario: Scenario, flags: &[&str]) -> String {
        format!("{:#}", settings(scenario, flags).unwrap_err())
    }

    #[test]
    fn defaults_are_a_ten_second_closed_loop_of_kilobyte_records() {
        let settings = settings(Scenario::Produce, &[]).unwrap();
        assert_eq!(
            settings.limit,
            Some(Limit::Duration(Duration::from_secs(10)))
        );
        assert_eq!(settings.size, 1024);
        assert_eq!((settings.producers, settings.consumers), (1, 0));
        assert_eq!(settings.topic, "mq-bench");
        assert_eq!(settings.producer.acks, Acks::All);
        assert_eq!(settings.rate, None);
        assert!(settings.embedded.is_none());
    }

    #[test]
    fn consume_reads_everything_by_default() {
        let settings = settings(Scenario::Consume, &["--consumers", "2"]).unwrap();
        assert_eq!(settings.limit, None);
        assert_eq!((settings.producers, settings.consumers), (0, 2));
    }

    #[test]
    fn producer_flags_reach_the_producer_config() {
        let settings = settings(
            Scenario::E2e,
            &[
                "--acks",
                "1",
                "--compression",
                "zstd",
                "--batch-bytes",
                "65536",
                "--linger-ms",
                "0",
                "--rate",
                "500",
                "--messages",
                "7",
            ],
        )
        .unwrap();
        assert_eq!(settings.producer.acks, Acks::Leader);
        assert_eq!(settings.producer.compression, Compression::Zstd);
        assert_eq!(settings.producer.batch_bytes_max, 65536);
        assert_eq!(settings.producer.linger, Duration::ZERO);
        assert_eq!(settings.rate, Some(500.0));
        assert_eq!(settings.limit, Some(Limit::Messages(7)));
    }

    #[test]
    fn flags_of_the_other_side_are_refused() {
        assert_eq!(
            error(Scenario::Produce, &["--consumers", "2"]),
            "--consumers applies to consume and e2e, not produce"
        );
        assert_eq!(
            error(Scenario::Consume, &["--rate", "10"]),
            "--rate applies to produce and e2e, not consume"
        );
        assert_eq!(
            error(Scenario::Consume, &["--producers", "2"]),
            "--producers applies to produce and e2e, not consume"
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (scenario, flags, expected) in [
            (
                Scenario::Produce,
                &["--messages", "0"][..],
                "--messages must be at least 1",
            ),
            (
                Scenario::Produce,
                &["--duration", "0"],
                "--duration must be positive",
            ),
            (
                Scenario::Produce,
                &["--duration", "-1"],
                "--duration must be a non-negative number of seconds",
            ),
            (
                Scenario::Produce,
                &["--warmup", "NaN"],
                "--warmup must be a non-negative number of seconds",
            ),
            (
                Scenario::Produce,
                &["--size", "0"],
                "--size must be at least 1 byte",
            ),
            (
                Scenario::E2e,
                &["--size", "7"],
                "--size must be at least 8 bytes for e2e (each value starts with its send time)",
            ),
            (
                Scenario::Produce,
                &["--batch-bytes", "0"],
                "--batch-bytes must be between 1 and 67108864",
            ),
            (
                Scenario::Produce,
                &["--producers", "0"],
                "--producers must be at least 1",
            ),
            (
                Scenario::Produce,
                &["--partitions", "0"],
                "--partitions must be at least 1",
            ),
            (
                Scenario::Produce,
                &["--rate", "0"],
                "--rate must be a positive number of records per second",
            ),
            (
                Scenario::Produce,
                &["--rate", "-5"],
                "--rate must be a positive number of records per second",
            ),
            (
                Scenario::Produce,
                &["--warmup", "-1"],
                "--warmup must be a non-negative number of seconds",
            ),
            (
                Scenario::Produce,
                &["--rate", "inf"],
                "--rate must be a positive number of records per second",
            ),
            (
                Scenario::Produce,
                &["--topic", ""],
                "--topic must not be empty",
            ),
        ] {
            assert_eq!(error(scenario, flags), expected, "{flags:?}");
        }
    }

    #[test]
    fn more_consumers_than_partitions_is_refused() {
        assert_eq!(
            error(Scenario::E2e, &["--consumers", "3", "--partitions", "2"]),
            "--consumers 3 is more than --partitions 2: each consumer needs a partition"
        );
        assert!(settings(Scenario::E2e, &["--consumers", "2", "--partitions", "2"]).is_ok());
    }

    #[test]
    fn messages_and_duration_exclude_each_other() {
        assert!(settings(Scenario::Produce, &["--messages", "1", "--duration", "1"]).is_err());
    }

    #[test]
    fn broker_args_become_broker_flags() {
        let settings = settings(
            Scenario::Produce,
            &[
                "--embedded",
                "--broker-arg",
                "flush_policy=never",
                "--broker-arg",
                "segment-bytes=1048576",
            ],
        )
        .unwrap();
        assert_eq!(
            settings.embedded.unwrap(),
            [
                ("flush-policy".to_string(), "never".to_string()),
                ("segment-bytes".to_string(), "1048576".to_string())
            ]
        );
    }

    #[test]
    fn broker_args_are_checked() {
        assert_eq!(
            error(Scenario::Produce, &["--broker-arg", "flush_policy=never"]),
            "--broker-arg needs --embedded"
        );
        assert_eq!(
            error(
                Scenario::Produce,
                &["--embedded", "--broker-arg", "flush_policy"]
            ),
            "--broker-arg flush_policy: expected KEY=VALUE"
        );
        assert_eq!(
            error(Scenario::Produce, &["--embedded", "--broker-arg=--x=1"]),
            "--broker-arg --x=1: KEY must be a broker setting such as flush_policy"
        );
        assert_eq!(
            error(
                Scenario::Produce,
                &["--embedded", "--broker-arg", "data_dir=/"]
            ),
            "--broker-arg data_dir=/: mq-bench sets the embedded broker's data_dir itself"
        );
    }

    #[test]
    fn embedded_consume_needs_a_count_to_write_first() {
        assert_eq!(
            error(Scenario::Consume, &["--embedded"]),
            "consume --embedded needs --messages N: the records to write to the new broker first, then read"
        );
        assert!(settings(Scenario::Consume, &["--embedded", "--messages", "10"]).is_ok());
    }
}
