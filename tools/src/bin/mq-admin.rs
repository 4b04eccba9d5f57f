//! `mq-admin`: manages topics and shows the cluster, over the same wire API as every client.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use mq_client::{Admin, TopicDescription};
use mq_tools::{human_bytes, BootstrapArgs};

/// Manage topics and inspect the cluster.
#[derive(Debug, Parser)]
#[command(
    name = "mq-admin",
    version,
    after_help = "Examples:\n  mq-admin topic create orders --partitions 3\n  mq-admin topic create logs --config retention_ms=86400000 --config segment_bytes=104857600\n  mq-admin topic list\n  mq-admin topic describe orders --format json\n  mq-admin topic add-partitions orders --partitions 6\n  mq-admin topic delete orders --yes\n  mq-admin cluster status"
)]
struct Args {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, grow and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// The brokers and the controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Its name: letters, digits, '.', '_' and '-', at most 249.
        name: String,
        /// Number of partitions (default: the broker's, normally 1).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic setting, repeatable: retention_ms, retention_bytes, segment_bytes,
        /// segment_ms, flush_policy, flush_interval_ms, max_message_bytes.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topic names.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a topic's partitions: leader, replicas, offsets, size.
    Describe {
        /// The topic.
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Delete a topic and all its data.
    Delete {
        /// The topic.
        name: String,
        /// Confirm: the data cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
    /// Grow a topic to a new total number of partitions.
    AddPartitions {
        /// The topic.
        name: String,
        /// The new total.
        #[arg(long)]
        partitions: i32,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The controller and the brokers.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mq_tools::run(admin(args))
}

async fn admin(args: Args) -> anyhow::Result<ExitCode> {
    // Refuse before connecting: a missing --yes is the user's mistake whatever the cluster.
    if let Command::Topic(TopicCommand::Delete { name, yes: false }) = &args.command {
        bail!("deleting topic '{name}' removes all its data; add --yes to confirm");
    }
    let client = args.bootstrap.connect("mq-admin").await?;
    let admin = Admin::new(client);
    let mut out = std::io::stdout().lock();
    match args.command {
        Command::Topic(TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        }) => {
            let configs = configs
                .iter()
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) => Ok((key.to_string(), value.to_string())),
                    None => bail!("--config {pair}: expected KEY=VALUE"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            admin
                .create_topic(
                    &name,
                    partitions.unwrap_or(-1),
                    replication_factor.unwrap_or(-1),
                    &configs,
                )
                .await?;
            let created = admin.describe_topic(&name).await?;
            writeln!(
                out,
                "created topic '{name}' with {} partitions",
                created.partitions.len()
            )?;
        }
        Command::Topic(TopicCommand::List { format }) => {
            let topics = admin.list_topics().await?;
            match format {
                Format::Text => {
                    for topic in &topics {
                        writeln!(out, "{}", topic.name)?;
                    }
                }
                Format::Json => {
                    let list: Vec<_> = topics.iter().map(describe_json).collect();
                    writeln!(out, "{}", serde_json::Value::Array(list))?;
                }
            }
        }
        Command::Topic(TopicCommand::Describe { name, format }) => {
            let topic = admin.describe_topic(&name).await?;
            match format {
                Format::Text => describe_text(&mut out, &topic)?,
                Format::Json => writeln!(out, "{}", describe_json(&topic))?,
            }
        }
        Command::Topic(TopicCommand::Delete { name, .. }) => {
            admin.delete_topic(&name).await?;
            writeln!(out, "deleted topic '{name}'")?;
        }
        Command::Topic(TopicCommand::AddPartitions { name, partitions }) => {
            admin
                .add_partitions(&name, partitions)
                .await
                .with_context(|| format!("growing topic '{name}'"))?;
            writeln!(out, "topic '{name}' now has {partitions} partitions")?;
        }
        Command::Cluster(ClusterCommand::Status { format }) => {
            let cluster = admin.cluster().await?;
            let controller = cluster.controller_id;
            match format {
                Format::Text => {
                    match controller {
                        Some(id) => writeln!(out, "controller: {id}")?,
                        None => writeln!(out, "controller: none")?,
                    }
                    writeln!(out, "{:<6} {:<24} alive", "node", "address")?;
                    for broker in &cluster.brokers {
                        writeln!(out, "{:<6} {:<24} yes", broker.node_id, broker.address())?;
                    }
                }
                Format::Json => {
                    let brokers: Vec<_> = cluster
                        .brokers
                        .iter()
                        .map(|broker| {
                            serde_json::json!({
                                "node_id": broker.node_id,
                                "address": broker.address(),
                                "alive": true,
                            })
                        })
                        .collect();
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({ "controller": controller, "brokers": brokers })
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_json(topic: &TopicDescription) -> serde_json::Value {
    let partitions: Vec<_> = topic
        .partitions
        .iter()
        .map(|partition| {
            serde_json::json!({
                "partition": partition.partition,
                "leader": partition.leader,
                "replicas": partition.replicas,
                "isr": partition.isr,
                "log_start_offset": partition.log_start_offset,
                "log_end_offset": partition.log_end_offset,
                "size_bytes": partition.size_bytes,
            })
        })
        .collect();
    serde_json::json!({ "name": topic.name, "partitions": partitions })
}

fn describe_text(out: &mut impl Write, topic: &TopicDescription) -> std::io::Result<()> {
    let replication = topic
        .partitions
        .first()
        .map_or(0, |partition| partition.replicas.len());
    writeln!(
        out,
        "topic {}  partitions {}  replication factor {replication}",
        topic.name,
        topic.partitions.len()
    )?;
    writeln!(
        out,
        "{:>9}  {:>6}  {:<10}  {:>12}  {:>12}  {:>10}",
        "partition", "leader", "replicas", "log start", "log end", "size"
    )?;
    for partition in &topic.partitions {
        let leader = partition
            .leader
            .map_or("none".to_string(), |leader| leader.to_string());
        let replicas: Vec<String> = partition.replicas.iter().map(i32::to_string).collect();
        writeln!(
            out,
            "{:>9}  {:>6}  {:<10}  {:>12}  {:>12}  {:>10}",
            partition.partition,
            leader,
            replicas.join(","),
            partition.log_start_offset,
            partition.log_end_offset,
            human_bytes(partition.size_bytes)
        )?;
    }
    Ok(())
}
