//! `mq-bench`, the load-test harness: runs one scenario against a broker (or one it starts
//! itself) and reports throughput and latency percentiles.
//!
//! ```text
//! options ─> Settings ─> [embedded broker] ─> topic ─> scenario ─> Recorder ─> Report
//!                                                      produce:  Producers ──────────┐
//!                                                      consume:  consumers ──────────┤
//!                                                      e2e:      Producers + consumers
//! ```
//!
//! - `options.rs`: the flags and their checks ([`BenchArgs`] into `Settings`).
//! - `schedule.rs`: when each record is due (open or closed loop), the warm-up, the end.
//! - `clock.rs`: the run's clock and the send time stamped into `e2e` values.
//! - `produce.rs`: producer threads and acknowledgement tasks.
//! - `consume.rs`: consumers with manual assignment, and when they are done.
//! - `recorder.rs`: the latency histogram and counters, and the progress line.
//! - `report.rs`: the final report, as text or JSON.
//! - `embedded.rs`: `--embedded`, a broker process of the run's own.
//!
//! This module's job is the run itself: settings, broker, topic, the scenario, the report.

mod clock;
mod consume;
mod embedded;
mod options;
mod produce;
mod recorder;
mod report;
mod schedule;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use mq_client::{Admin, Client, ClientError};

use self::clock::Clock;
use self::consume::{Goal, Latency, Start};
use self::embedded::EmbeddedBroker;
use self::options::{Settings, DEFAULT_DURATION};
use self::produce::{ProduceJob, Producers};
use self::recorder::{spawn_progress, Failures, Measurement, Recorder};
use self::report::{Report, Workload};
use self::schedule::{nanos, Limit, Schedule, Sequencer};
pub use options::{BenchArgs, Scenario};

/// What a scenario measured.
#[derive(Debug)]
struct Outcome {
    /// Throughput and latency.
    measured: Measurement,
    /// Records not delivered.
    errors: u64,
}

/// Runs `scenario` with `args`: starts the embedded broker if asked, makes sure the topic
/// exists, measures, prints the report on stdout, and stops the broker. Ctrl-C or SIGTERM
/// ends the run early, as an error. Fails (after the report) when records were not
/// delivered.
pub async fn run(scenario: Scenario, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::new(scenario, args)?;
    // Listened to from the start, so that an interruption while the embedded broker starts
    // still drops (and so kills) it.
    let interrupted = crate::shutdown_signal();
    tokio::pin!(interrupted);
    let broker = match &settings.embedded {
        Some(broker_settings) => tokio::select! {
            broker = EmbeddedBroker::start(broker_settings) => Some(broker?),
            () = &mut interrupted => bail!("interrupted"),
        },
        None => None,
    };
    let bootstrap = match &broker {
        Some(broker) => broker.bootstrap().to_string(),
        None => settings.bootstrap.bootstrap.clone(),
    };
    let measured = tokio::select! {
        measured = measure(&settings, &bootstrap) => measured,
        () = &mut interrupted => Err(anyhow!("interrupted")),
    };
    // Stopped, after reading its peak memory, whatever the outcome of the run.
    let usage = broker.map(EmbeddedBroker::stop);
    let (workload, outcome) = measured?;
    let report = Report {
        workload,
        measured: outcome.measured,
        errors: outcome.errors,
        broker: usage,
    };
    let mut stdout = std::io::stdout().lock();
    if settings.json {
        writeln!(stdout, "{}", report.to_json())?;
    } else {
        write!(stdout, "{}", report.to_text())?;
    }
    stdout.flush()?;
    if report.errors > 0 {
        bail!("{} records were not delivered", report.errors);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prepares the topic and runs the scenario.
async fn measure(settings: &Settings, bootstrap: &str) -> anyhow::Result<(Workload, Outcome)> {
    let client = crate::BootstrapArgs {
        bootstrap: bootstrap.to_string(),
    }
    .connect("mq-bench")
    .await?;
    let partitions = ensure_topic(&client, settings).await?;
    ensure!(
        settings.consumers <= partitions.max(0) as u32,
        "--consumers {} is more than the {partitions} partitions of topic '{}': each consumer needs a partition",
        settings.consumers,
        settings.topic
    );
    let open = settings.rate.is_some();
    let (outcome, latency) = match settings.scenario {
        Scenario::Produce => (
            produce(settings, bootstrap, partitions).await?,
            if open {
                "intended send to acknowledgement"
            } else {
                "send to acknowledgement"
            },
        ),
        Scenario::Consume => (
            consume(settings, bootstrap, partitions).await?,
            "duration of each poll that returned records",
        ),
        Scenario::E2e => (
            end_to_end(settings, bootstrap, partitions).await?,
            if open {
                "intended send to receipt by a consumer"
            } else {
                "send to receipt by a consumer"
            },
        ),
    };
    let workload = Workload {
        scenario: settings.scenario.name(),
        topic: settings.topic.clone(),
        partitions,
        size: settings.size,
        producers: settings.producers,
        consumers: settings.consumers,
        acks: settings.acks.clone(),
        compression: settings.compression.clone(),
        rate: settings.rate,
        warmup_s: settings.warmup.as_secs_f64(),
        latency,
    };
    Ok((workload, outcome))
}

/// The topic's partition count, after creating it with `--partitions` if it is missing.
async fn ensure_topic(client: &Client, settings: &Settings) -> anyhow::Result<i32> {
    let topic = &settings.topic;
    match client.topic(topic).await {
        Ok(description) => {
            let count = description.partition_count();
            if let Some(asked) = settings.partitions.filter(|asked| *asked != count) {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: topic '{topic}' exists with {count} partitions; using them, not --partitions {asked}"
                );
            }
            Ok(count)
        }
        Err(ClientError::UnknownTopic { .. }) => {
            if settings.scenario == Scenario::Consume && settings.embedded.is_none() {
                bail!("topic '{topic}' does not exist: write records first, e.g. mq-bench produce --topic {topic} --messages 100000");
            }
            let partitions = settings.partitions.unwrap_or(1);
            match Admin::new(client.clone())
                .create_topic(topic, partitions, -1, &[])
                .await
            {
                Ok(()) | Err(ClientError::TopicAlreadyExists { .. }) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("creating topic '{topic}'"))
                }
            }
            Ok(client.topic(topic).await?.partition_count())
        }
        Err(error) => Err(error.into()),
    }
}

/// What the producers of `settings` send.
fn produce_job(settings: &Settings, bootstrap: &str, partitions: i32, stamp: bool) -> ProduceJob {
    ProduceJob {
        bootstrap: bootstrap.to_string(),
        topic: settings.topic.clone(),
        partitions,
        producers: settings.producers,
        config: settings.producer.clone(),
        payload: produce::payload(settings.size),
        stamp,
    }
}

/// `produce`: producers only; latency to the acknowledgement.
async fn produce(settings: &Settings, bootstrap: &str, partitions: i32) -> anyhow::Result<Outcome> {
    let producers = Producers::connect(produce_job(settings, bootstrap, partitions, false)).await?;
    let clock = Clock::new();
    let limit = settings.limit.unwrap_or(Limit::Duration(DEFAULT_DURATION));
    let schedule = Schedule::new(clock.now_ns(), settings.warmup, settings.rate, limit);
    let recorder = Arc::new(Recorder::new(clock, schedule.measure_start_ns()));
    let _progress = spawn_progress(Arc::clone(&recorder), "produce");
    let failures = Arc::new(Failures::default());
    producers
        .run(
            Arc::new(Sequencer::new(schedule)),
            clock,
            Some(Arc::clone(&recorder)),
            Arc::clone(&failures),
        )
        .await?;
    Ok(Outcome {
        measured: recorder.measurement(),
        errors: failures.count(),
    })
}

/// `consume`: consumers only, from the beginning of each partition; throughput, and the
/// duration of each poll. With `--embedded`, writes the records to read first.
async fn consume(settings: &Settings, bootstrap: &str, partitions: i32) -> anyhow::Result<Outcome> {
    if let (Some(_), Some(Limit::Messages(count))) = (&settings.embedded, settings.limit) {
        fill(settings, bootstrap, partitions, count).await?;
    }
    let mut consumers = consume::position(
        bootstrap,
        &settings.topic,
        partitions,
        settings.consumers,
        Start::Beginning,
    )
    .await?;
    let target = match settings.limit {
        Some(Limit::Messages(count)) => Some(count),
        Some(Limit::Duration(_)) => None,
        None => {
            let available = consume::available(&mut consumers).await?;
            ensure!(
                available > 0,
                "topic '{}' is empty: write records first, e.g. mq-bench produce --topic {} --messages 100000",
                settings.topic,
                settings.topic
            );
            Some(available)
        }
    };
    let clock = Clock::new();
    let measure_start_ns = clock.now_ns().saturating_add(nanos(settings.warmup));
    let deadline_ns = match settings.limit {
        Some(Limit::Duration(duration)) => Some(measure_start_ns.saturating_add(nanos(duration))),
        _ => None,
    };
    let goal = Arc::new(Goal::new(
        target,
        deadline_ns,
        ": the topic has no more (write some first: mq-bench produce --messages N)",
    ));
    let recorder = Arc::new(Recorder::new(clock, measure_start_ns));
    let _progress = spawn_progress(Arc::clone(&recorder), "consume");
    consume::run(consumers, goal, Arc::clone(&recorder), Latency::Poll).await?;
    Ok(Outcome {
        measured: recorder.measurement(),
        errors: 0,
    })
}

/// Writes `count` records for `consume --embedded` to read, as fast as the producer can.
async fn fill(
    settings: &Settings,
    bootstrap: &str,
    partitions: i32,
    count: u64,
) -> anyhow::Result<()> {
    let _ = writeln!(
        std::io::stderr(),
        "mq-bench consume: writing {count} records to topic '{}' first",
        settings.topic
    );
    let mut job = produce_job(settings, bootstrap, partitions, false);
    job.producers = 1;
    let producers = Producers::connect(job).await?;
    let clock = Clock::new();
    let schedule = Schedule::new(clock.now_ns(), Duration::ZERO, None, Limit::Messages(count));
    let failures = Arc::new(Failures::default());
    producers
        .run(
            Arc::new(Sequencer::new(schedule)),
            clock,
            None,
            Arc::clone(&failures),
        )
        .await?;
    ensure!(
        failures.count() == 0,
        "writing the records to consume failed: {} of {count} not delivered",
        failures.count()
    );
    Ok(())
}

/// `e2e`: consumers positioned at the end first, then producers stamping each value with
/// its send time; latency from that time to the consumer's receipt.
async fn end_to_end(
    settings: &Settings,
    bootstrap: &str,
    partitions: i32,
) -> anyhow::Result<Outcome> {
    let consumers = consume::position(
        bootstrap,
        &settings.topic,
        partitions,
        settings.consumers,
        Start::End,
    )
    .await?;
    let producers = Producers::connect(produce_job(settings, bootstrap, partitions, true)).await?;
    let clock = Clock::new();
    let limit = settings.limit.unwrap_or(Limit::Duration(DEFAULT_DURATION));
    let schedule = Schedule::new(clock.now_ns(), settings.warmup, settings.rate, limit);
    let recorder = Arc::new(Recorder::new(clock, schedule.measure_start_ns()));
    let _progress = spawn_progress(Arc::clone(&recorder), "e2e");
    let sequencer = Arc::new(Sequencer::new(schedule));
    let goal = Arc::new(Goal::new(None, None, ""));
    let failures = Arc::new(Failures::default());
    let consuming = async {
        let consumed = consume::run(
            consumers,
            Arc::clone(&goal),
            Arc::clone(&recorder),
            Latency::Stamp,
        )
        .await;
        if consumed.is_err() {
            sequencer.stop();
        }
        consumed
    };
    let producing = async {
        let produced = producers
            .run(Arc::clone(&sequencer), clock, None, Arc::clone(&failures))
            .await;
        match &produced {
            // Consumers are done once they received every delivered record.
            Ok(delivered) => goal.set_target(*delivered, clock.now_ns()),
            Err(_) => goal.stop(),
        }
        produced
    };
    let (consumed, produced) = tokio::join!(consuming, producing);
    produced?;
    consumed?;
    Ok(Outcome {
        measured: recorder.measurement(),
        errors: failures.count(),
    })
}
