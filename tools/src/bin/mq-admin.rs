//! `mq-admin`: manages topics and consumer groups and shows the cluster, over the same wire
//! API as every client.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use mq_client::{
    Admin, Client, ClientError, ClusterDescription, CommittedOffset, GroupDescription, OffsetSpec,
    PartitionDescription, TopicDescription, TopicPartition,
};
use mq_tools::{human_bytes, BootstrapArgs};
use tokio::time::Instant;

/// How often `partition reassign` and `cluster rebalance` look at the partitions' leaders.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Manage topics and consumer groups; inspect the cluster.
#[derive(Debug, Parser)]
#[command(
    name = "mq-admin",
    version,
    after_help = "Examples:\n  mq-admin topic create orders --partitions 3\n  mq-admin topic create logs --config retention_ms=86400000 --config segment_bytes=104857600\n  mq-admin topic list\n  mq-admin topic describe orders --format json\n  mq-admin topic add-partitions orders --partitions 6\n  mq-admin topic delete orders --yes\n  mq-admin group list\n  mq-admin group describe billing\n  mq-admin group reset-offsets billing --topic orders --to-earliest --yes\n  mq-admin group delete billing --yes\n  mq-admin cluster status\n  mq-admin partition reassign --topic orders --partition 0 --to 2\n  mq-admin cluster rebalance --dry-run"
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
    /// The brokers and the controller; rebalancing.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Move partitions between brokers.
    #[command(subcommand)]
    Partition(PartitionCommand),
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
    /// The controller and every registered broker: liveness, rack, partitions and leaders.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Even out partitions and leaders across the live brokers, and wait until done.
    Rebalance {
        /// Print the plan; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for every move to complete.
        #[arg(long, default_value_t = 120_000, value_name = "MS")]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PartitionCommand {
    /// Move a partition to another broker, and wait until that broker leads it.
    Reassign {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The node id of the broker that is to hold it.
        #[arg(long = "to", value_name = "BROKER")]
        target: i32,
        /// How long to wait for the move to complete.
        #[arg(long, default_value_t = 60_000, value_name = "MS")]
        timeout_ms: u64,
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
    let admin = Admin::new(client.clone());
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
            let description = admin.describe_cluster().await?;
            let load = Load::of(&admin.list_topics().await?);
            match format {
                Format::Text => cluster_text(&mut out, &description, &load)?,
                Format::Json => writeln!(out, "{}", cluster_json(&description, &load))?,
            }
        }
        Command::Cluster(ClusterCommand::Rebalance {
            dry_run,
            timeout_ms,
        }) => {
            let timeout = Duration::from_millis(timeout_ms);
            rebalance(&admin, &client, &mut out, dry_run, timeout).await?;
        }
        Command::Partition(PartitionCommand::Reassign {
            topic,
            partition,
            target,
            timeout_ms,
        }) => {
            let topic_partition = TopicPartition::new(topic, partition);
            let timeout = Duration::from_millis(timeout_ms);
            reassign(&admin, &client, &mut out, &topic_partition, target, timeout).await?;
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
                "leader_epoch": partition.leader_epoch,
                "replicas": partition.replicas,
                "isr": partition.isr,
                "log_start_offset": partition.log_start_offset,
                "log_end_offset": partition.log_end_offset,
                "size_bytes": partition.size_bytes,
                "error": partition.error.map(|code| code.name()),
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
        "{:>9}  {:>7}  {:>5}  {:<10}  {:<10}  {:>12}  {:>12}  {:>10}",
        "partition", "leader", "epoch", "replicas", "isr", "log start", "log end", "size"
    )?;
    for partition in &topic.partitions {
        let known = |value: i64| (value >= 0).then_some(value);
        writeln!(
            out,
            "{:>9}  {:>7}  {:>5}  {:<10}  {:<10}  {:>12}  {:>12}  {:>10}",
            partition.partition,
            leader_text(partition),
            partition.leader_epoch,
            node_list(&partition.replicas),
            node_list(&partition.isr),
            or_dash(known(partition.log_start_offset)),
            or_dash(known(partition.log_end_offset)),
            or_dash(known(partition.size_bytes).map(human_bytes))
        )?;
    }
    Ok(())
}

/// A partition's leader for people: its node id, or `offline`.
fn leader_text(partition: &PartitionDescription) -> String {
    partition
        .leader
        .map_or("offline".to_string(), |leader| leader.to_string())
}

/// Node ids as `1,2,3`; `-` for none.
fn node_list(nodes: &[i32]) -> String {
    let nodes: Vec<String> = nodes.iter().map(i32::to_string).collect();
    or_dash((!nodes.is_empty()).then(|| nodes.join(",")))
}

/// How many partitions each broker holds and leads, and how many have no leader, from a
/// full Metadata answer.
#[derive(Debug, Default)]
struct Load {
    /// Partitions whose replicas include the broker, by node id.
    replicas: BTreeMap<i32, usize>,
    /// Partitions the broker leads, by node id.
    leaders: BTreeMap<i32, usize>,
    /// Partitions without a leader.
    offline: usize,
}

impl Load {
    fn of(topics: &[TopicDescription]) -> Load {
        let mut load = Load::default();
        for partition in topics.iter().flat_map(|topic| &topic.partitions) {
            for replica in &partition.replicas {
                *load.replicas.entry(*replica).or_default() += 1;
            }
            match partition.leader {
                Some(leader) => *load.leaders.entry(leader).or_default() += 1,
                None => load.offline += 1,
            }
        }
        load
    }

    /// Partitions held and led by broker `node_id`.
    fn of_broker(&self, node_id: i32) -> (usize, usize) {
        let count = |counts: &BTreeMap<i32, usize>| counts.get(&node_id).copied().unwrap_or(0);
        (count(&self.replicas), count(&self.leaders))
    }
}

fn cluster_text(
    out: &mut impl Write,
    description: &ClusterDescription,
    load: &Load,
) -> std::io::Result<()> {
    match (description.controller_id, &description.controller_address) {
        (Some(id), Some(address)) => writeln!(out, "controller: {id} at {address}")?,
        (Some(id), None) => writeln!(out, "controller: {id}")?,
        (None, _) => writeln!(out, "controller: none")?,
    }
    writeln!(
        out,
        "{:<6} {:<24} {:<6} {:<12} {:>10} {:>8}",
        "node", "address", "alive", "rack", "partitions", "leaders"
    )?;
    for broker in &description.brokers {
        let (partitions, leaders) = load.of_broker(broker.node_id);
        writeln!(
            out,
            "{:<6} {:<24} {:<6} {:<12} {:>10} {:>8}",
            broker.node_id,
            broker.address,
            if broker.alive { "yes" } else { "fenced" },
            or_dash(broker.rack.as_deref()),
            partitions,
            leaders
        )?;
    }
    if load.offline > 0 {
        writeln!(out, "offline partitions: {}", load.offline)?;
    }
    Ok(())
}

fn cluster_json(description: &ClusterDescription, load: &Load) -> serde_json::Value {
    let brokers: Vec<_> = description
        .brokers
        .iter()
        .map(|broker| {
            let (partitions, leaders) = load.of_broker(broker.node_id);
            serde_json::json!({
                "node_id": broker.node_id,
                "address": broker.address,
                "alive": broker.alive,
                "rack": broker.rack,
                "partitions": partitions,
                "leaders": leaders,
            })
        })
        .collect();
    serde_json::json!({
        "controller": description.controller_id,
        "controller_address": description.controller_address,
        "metadata_offset": description.metadata_offset,
        "brokers": brokers,
        "offline_partitions": load.offline,
    })
}

/// `partition reassign`: starts the move, then waits until `target` leads the partition.
async fn reassign(
    admin: &Admin,
    client: &Client,
    out: &mut impl Write,
    topic_partition: &TopicPartition,
    target: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    // Fresh: the client fetched metadata when it connected.
    let current = cached_partition(client, topic_partition).await?;
    if current.leader == Some(target) && current.replicas == [target] {
        writeln!(out, "{topic_partition} is already on broker {target}")?;
        return Ok(());
    }
    let source = current
        .leader
        .or_else(|| current.replicas.first().copied())
        .map_or("-".to_string(), |source| source.to_string());
    let started = Instant::now();
    admin
        .reassign_partition(&topic_partition.topic, topic_partition.partition, target)
        .await
        .with_context(|| format!("moving {topic_partition} to broker {target}"))?;
    let targets = BTreeMap::from([(topic_partition.clone(), target)]);
    let pending = wait_for_leaders(client, &targets, started + timeout).await?;
    if let Some(pending) = pending.first() {
        bail!(
            "{topic_partition} did not move to broker {target} within {} ms ({})",
            timeout.as_millis(),
            pending.state
        );
    }
    writeln!(
        out,
        "moved {topic_partition} from broker {source} to broker {target} in {} ms",
        started.elapsed().as_millis()
    )?;
    Ok(())
}

/// `cluster rebalance`: prints the plan; unless a dry run, waits until every move is done.
async fn rebalance(
    admin: &Admin,
    client: &Client,
    out: &mut impl Write,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let moves = admin.rebalance(dry_run).await?;
    if moves.is_empty() {
        writeln!(out, "balanced: nothing to move")?;
        return Ok(());
    }
    for planned in &moves {
        writeln!(
            out,
            "{}: broker {} -> broker {}",
            planned.topic_partition, planned.source, planned.target
        )?;
    }
    if dry_run {
        return Ok(());
    }
    writeln!(out, "started {} moves", moves.len())?;
    // A partition moved twice ends on its last target.
    let targets: BTreeMap<TopicPartition, i32> = moves
        .into_iter()
        .map(|planned| (planned.topic_partition, planned.target))
        .collect();
    let pending = wait_for_leaders(client, &targets, started + timeout).await?;
    if !pending.is_empty() {
        let pending: Vec<String> = pending.iter().map(PendingMove::to_string).collect();
        bail!(
            "rebalance not done within {} ms: {} of {} moves pending: {}",
            timeout.as_millis(),
            pending.len(),
            targets.len(),
            pending.join(", ")
        );
    }
    writeln!(out, "done in {} ms", started.elapsed().as_millis())?;
    Ok(())
}

/// A partition as the client's metadata cache describes it.
async fn cached_partition(
    client: &Client,
    topic_partition: &TopicPartition,
) -> Result<PartitionDescription, ClientError> {
    let topic = client.topic(&topic_partition.topic).await?;
    let found = topic.partition(topic_partition.partition).cloned();
    found.ok_or_else(|| ClientError::UnknownPartition {
        topic: topic_partition.topic.clone(),
        partition: topic_partition.partition,
    })
}

/// A move not done yet: where its partition's leader is.
struct PendingMove {
    /// The partition.
    topic_partition: TopicPartition,
    /// The broker it is to move to.
    target: i32,
    /// Where it is now, for people: `leader now 3`, `leader now offline`, `no metadata: ...`.
    state: String,
}

impl std::fmt::Display for PendingMove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to broker {} ({})",
            self.topic_partition, self.target, self.state
        )
    }
}

/// Polls metadata until each partition of `targets` is led by its target broker, or
/// `deadline` passes; returns the moves still pending then (none when all are done).
/// Failures to reach a broker are waited out, since the cluster is busy moving partitions;
/// other failures end the wait.
async fn wait_for_leaders(
    client: &Client,
    targets: &BTreeMap<TopicPartition, i32>,
    deadline: Instant,
) -> anyhow::Result<Vec<PendingMove>> {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        let refreshed = tokio::time::timeout_at(deadline, client.refresh_metadata())
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    operation: "Metadata",
                    timeout: deadline.saturating_duration_since(started),
                })
            });
        for (topic_partition, target) in targets {
            let state = match &refreshed {
                Ok(()) => {
                    let partition = cached_partition(client, topic_partition).await?;
                    if partition.leader == Some(*target) && partition.error.is_none() {
                        continue;
                    }
                    format!("leader now {}", leader_text(&partition))
                }
                Err(error) if error.is_retriable() => format!("no metadata: {error}"),
                Err(error) => return Err(error.clone().into()),
            };
            pending.push(PendingMove {
                topic_partition: topic_partition.clone(),
                target: *target,
                state,
            });
        }
        if pending.is_empty() || Instant::now() + LEADER_POLL_INTERVAL > deadline {
            return Ok(pending);
        }
        tokio::time::sleep(LEADER_POLL_INTERVAL).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use mq_client::{BrokerStatus, ErrorCode};

    fn partition(partition: i32, leader: Option<i32>, replicas: &[i32]) -> PartitionDescription {
        PartitionDescription {
            partition,
            leader,
            leader_epoch: 4,
            replicas: replicas.to_vec(),
            isr: leader.into_iter().collect(),
            log_start_offset: if leader == Some(1) { 0 } else { -1 },
            log_end_offset: if leader == Some(1) { 12 } else { -1 },
            size_bytes: if leader == Some(1) { 2048 } else { -1 },
            error: leader.is_none().then_some(ErrorCode::LEADER_NOT_AVAILABLE),
        }
    }

    fn topic() -> TopicDescription {
        TopicDescription {
            name: "t".into(),
            partitions: vec![
                partition(0, Some(1), &[1]),
                partition(1, Some(2), &[2]),
                partition(2, None, &[3]),
            ],
        }
    }

    fn text(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cluster_status_shows_fenced_brokers_load_and_offline_partitions() {
        let broker = |node_id, rack: Option<&str>, alive| BrokerStatus {
            node_id,
            address: format!("127.0.0.1:970{node_id}"),
            rack: rack.map(str::to_string),
            alive,
        };
        let description = ClusterDescription {
            controller_id: Some(100),
            controller_address: Some("127.0.0.1:9800".into()),
            metadata_offset: 9,
            brokers: vec![
                broker(1, Some("a"), true),
                broker(2, None, true),
                broker(3, None, false),
            ],
        };
        let load = Load::of(&[topic()]);
        let status = text(|out| cluster_text(out, &description, &load));
        assert_eq!(
            status,
            "controller: 100 at 127.0.0.1:9800\n\
             node   address                  alive  rack         partitions  leaders\n\
             1      127.0.0.1:9701           yes    a                     1        1\n\
             2      127.0.0.1:9702           yes    -                     1        1\n\
             3      127.0.0.1:9703           fenced -                     1        0\n\
             offline partitions: 1\n"
        );
        let json = cluster_json(&description, &load);
        assert_eq!(json["controller"], 100);
        assert_eq!(json["offline_partitions"], 1);
        assert_eq!(json["brokers"][2]["alive"], false);
        assert_eq!(json["brokers"][0]["rack"], "a");
        assert_eq!(json["brokers"][1]["leaders"], 1);
    }

    #[test]
    fn topic_description_marks_unknown_offsets_and_offline_leaders() {
        let described = text(|out| describe_text(out, &topic()));
        assert_eq!(
            described,
            "topic t  partitions 3  replication factor 1\n\
             partition   leader  epoch  replicas    isr            log start       log end        size\n\
             \x20       0        1      4  1           1                      0            12     2.0 KiB\n\
             \x20       1        2      4  2           2                      -             -           -\n\
             \x20       2  offline      4  3           -                      -             -           -\n"
        );
        let json = describe_json(&topic());
        assert_eq!(json["partitions"][2]["leader"], serde_json::Value::Null);
        assert_eq!(json["partitions"][2]["error"], "LEADER_NOT_AVAILABLE");
        assert_eq!(json["partitions"][0]["leader_epoch"], 4);
        assert_eq!(json["partitions"][0]["log_end_offset"], 12);
    }
}
