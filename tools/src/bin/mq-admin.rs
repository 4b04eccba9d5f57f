//! `mq-admin`: manages topics and consumer groups and shows the cluster, over the same wire
//! API as every client.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use mq_client::{
    Admin, CommittedOffset, GroupDescription, OffsetSpec, TopicDescription, TopicPartition,
};
use mq_tools::{human_bytes, BootstrapArgs};

/// Manage topics and consumer groups; inspect the cluster.
#[derive(Debug, Parser)]
#[command(
    name = "mq-admin",
    version,
    after_help = "Examples:\n  mq-admin topic create orders --partitions 3\n  mq-admin topic create logs --config retention_ms=86400000 --config segment_bytes=104857600\n  mq-admin topic list\n  mq-admin topic describe orders --format json\n  mq-admin topic add-partitions orders --partitions 6\n  mq-admin topic delete orders --yes\n  mq-admin group list\n  mq-admin group describe billing\n  mq-admin group reset-offsets billing --topic orders --to-earliest --yes\n  mq-admin group delete billing --yes\n  mq-admin cluster status"
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
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// The brokers and the controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups: with members, or with committed offsets.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a group's members, their partitions, committed offsets and lag.
    Describe {
        /// The group.
        group: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Move a group's committed offsets for a topic (only while the group has no members).
    #[command(group(clap::ArgGroup::new("target").required(true)))]
    ResetOffsets {
        /// The group.
        group: String,
        /// The topic whose partitions are reset (all of them).
        #[arg(long)]
        topic: String,
        /// To the first record still stored.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To the end: only records produced from now on.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To this offset (kept within each partition's log start and end).
        #[arg(long, group = "target", value_name = "N")]
        to_offset: Option<i64>,
        /// Confirm: the group's members will reprocess or skip records.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// The group.
        group: String,
        /// Confirm: the committed offsets cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
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
    match &args.command {
        Command::Topic(TopicCommand::Delete { name, yes: false }) => {
            bail!("deleting topic '{name}' removes all its data; add --yes to confirm");
        }
        Command::Group(GroupCommand::Delete { group, yes: false }) => {
            bail!("deleting group '{group}' removes its committed offsets; add --yes to confirm");
        }
        Command::Group(GroupCommand::ResetOffsets {
            group, yes: false, ..
        }) => {
            bail!("resetting the offsets of group '{group}' changes where it resumes; add --yes to confirm");
        }
        _ => {}
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
        Command::Group(command) => group(&admin, &mut out, command).await?,
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

async fn group(admin: &Admin, out: &mut impl Write, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { format } => {
            let groups = admin.list_groups().await?;
            match format {
                Format::Text => {
                    for group in &groups {
                        writeln!(out, "{}", group.group_id)?;
                    }
                }
                Format::Json => {
                    let list: Vec<_> = groups
                        .iter()
                        .map(|group| {
                            serde_json::json!({
                                "group": group.group_id,
                                "state": group.state,
                                "members": group.members,
                            })
                        })
                        .collect();
                    writeln!(out, "{}", serde_json::Value::Array(list))?;
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let description = admin.describe_group(&group).await?;
            let committed = admin.committed_offsets(&group).await?;
            if description.state == "Dead" && committed.is_empty() {
                bail!("group '{group}' does not exist");
            }
            let rows = lag_rows(admin, &description, &committed).await?;
            match format {
                Format::Text => group_text(out, &description, &rows)?,
                Format::Json => writeln!(out, "{}", group_json(&description, &rows))?,
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            ..
        } => {
            let description = admin.describe_group(&group).await?;
            if !description.members.is_empty() {
                bail!(
                    "group '{group}' has {} active member(s): stop them before resetting its offsets",
                    description.members.len()
                );
            }
            let partitions: Vec<TopicPartition> = admin
                .describe_topic(&topic)
                .await?
                .partitions
                .iter()
                .map(|partition| TopicPartition::new(topic.as_str(), partition.partition))
                .collect();
            let earliest = admin
                .list_offsets(&partitions, OffsetSpec::Earliest)
                .await?;
            let latest = admin.list_offsets(&partitions, OffsetSpec::Latest).await?;
            let mut targets = Vec::with_capacity(partitions.len());
            for partition in &partitions {
                let start = offset_of(&earliest, partition)?;
                let end = offset_of(&latest, partition)?;
                let target = match (to_earliest, to_latest, to_offset) {
                    (true, _, _) => start,
                    (_, true, _) => end,
                    (_, _, Some(offset)) => offset.clamp(start, end),
                    _ => bail!("one of --to-earliest, --to-latest, --to-offset is required"),
                };
                targets.push((partition.clone(), target));
            }
            admin
                .alter_committed_offsets(&group, &targets)
                .await
                .with_context(|| format!("resetting the offsets of group '{group}'"))?;
            writeln!(
                out,
                "{:<24} {:>9} {:>12}",
                "topic", "partition", "new offset"
            )?;
            for (partition, offset) in &targets {
                writeln!(
                    out,
                    "{:<24} {:>9} {:>12}",
                    partition.topic, partition.partition, offset
                )?;
            }
        }
        GroupCommand::Delete { group, .. } => {
            admin.delete_group(&group).await?;
            writeln!(out, "deleted group '{group}'")?;
        }
    }
    Ok(())
}

fn offset_of(
    offsets: &BTreeMap<TopicPartition, i64>,
    partition: &TopicPartition,
) -> anyhow::Result<i64> {
    offsets
        .get(partition)
        .copied()
        .with_context(|| format!("the broker returned no offset for {partition}"))
}

/// One partition of a group: where it is, how far behind, who reads it.
struct LagRow {
    partition: TopicPartition,
    committed: Option<i64>,
    log_end: Option<i64>,
    member: Option<String>,
}

impl LagRow {
    fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

/// Every partition the group has a committed offset for or a member reads, in order.
async fn lag_rows(
    admin: &Admin,
    description: &GroupDescription,
    committed: &BTreeMap<TopicPartition, CommittedOffset>,
) -> anyhow::Result<Vec<LagRow>> {
    let mut owners: BTreeMap<TopicPartition, Option<String>> = committed
        .keys()
        .map(|partition| (partition.clone(), None))
        .collect();
    for member in &description.members {
        for partition in &member.assignment {
            owners.insert(partition.clone(), Some(member.member_id.clone()));
        }
    }
    // A partition of a deleted topic has no log end: its row shows none.
    let topics = admin.list_topics().await?;
    let existing: Vec<TopicPartition> = owners
        .keys()
        .filter(|partition| {
            topics.iter().any(|topic| {
                topic.name == partition.topic && topic.partition(partition.partition).is_some()
            })
        })
        .cloned()
        .collect();
    let ends = admin.list_offsets(&existing, OffsetSpec::Latest).await?;
    Ok(owners
        .into_iter()
        .map(|(partition, member)| LagRow {
            committed: committed.get(&partition).map(|offset| offset.offset),
            log_end: ends.get(&partition).copied(),
            member,
            partition,
        })
        .collect())
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

fn group_text(
    out: &mut impl Write,
    description: &GroupDescription,
    rows: &[LagRow],
) -> std::io::Result<()> {
    writeln!(
        out,
        "group {}  state {}  assignor {}  generation {}  members {}",
        description.group_id,
        description.state,
        or_dash((!description.assignor.is_empty()).then_some(&description.assignor)),
        description.generation_id,
        description.members.len()
    )?;
    if !description.members.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<40} {:<16} {:<22} partitions",
            "member", "client", "host"
        )?;
        for member in &description.members {
            let partitions: Vec<String> =
                member.assignment.iter().map(ToString::to_string).collect();
            writeln!(
                out,
                "{:<40} {:<16} {:<22} {}",
                member.member_id,
                member.client_id,
                member.client_host,
                or_dash((!partitions.is_empty()).then(|| partitions.join(",")))
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:>9} {:>12} {:>12} {:>10}  member",
        "topic", "partition", "committed", "log end", "lag"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
            row.partition.topic,
            row.partition.partition,
            or_dash(row.committed),
            or_dash(row.log_end),
            or_dash(row.lag()),
            or_dash(row.member.as_deref())
        )?;
    }
    Ok(())
}

fn group_json(description: &GroupDescription, rows: &[LagRow]) -> serde_json::Value {
    let members: Vec<_> = description
        .members
        .iter()
        .map(|member| {
            let assignment: Vec<_> = member
                .assignment
                .iter()
                .map(|partition| {
                    serde_json::json!({ "topic": partition.topic, "partition": partition.partition })
                })
                .collect();
            serde_json::json!({
                "member_id": member.member_id,
                "client_id": member.client_id,
                "client_host": member.client_host,
                "topics": member.topics,
                "assignment": assignment,
            })
        })
        .collect();
    let offsets: Vec<_> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "topic": row.partition.topic,
                "partition": row.partition.partition,
                "committed_offset": row.committed,
                "log_end_offset": row.log_end,
                "lag": row.lag(),
                "member_id": row.member,
            })
        })
        .collect();
    serde_json::json!({
        "group": description.group_id,
        "state": description.state,
        "assignor": description.assignor,
        "generation": description.generation_id,
        "members": members,
        "offsets": offsets,
    })
}
