//! Consumer groups against real broker processes: members share partitions disjointly and
//! cover them all, clean joins and leaves never deliver a record twice, a member killed with
//! SIGKILL loses its partitions after the session timeout without losing a committed record,
//! committed offsets survive restarts (clean and kill -9), retention deletes segments and a
//! consumer below the log start is reset by its policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use mq_tests::{binary, BrokerProcess};
use tokio::sync::watch;
use tokio::task::JoinHandle;

async fn connect(broker: &BrokerProcess) -> Client {
    Client::connect(&broker.bootstrap(), ClientConfig::default())
        .await
        .unwrap()
}

/// Waits until `condition` holds, checking every 20 ms; panics with `what` after `limit`.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a member last reported: its generation and partitions.
#[derive(Clone, Debug, Default, PartialEq)]
struct MemberState {
    generation: Option<i32>,
    assignment: BTreeSet<TopicPartition>,
}

/// A group member on its own task: polls, records what it got, commits after each batch
/// (at-least-once, and exactly-once across clean rebalances), until stopped.
struct Member {
    state: watch::Receiver<MemberState>,
    values: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// When the member last got an assignment (its rebalance listener was called).
    assigned_at: Arc<Mutex<Option<Instant>>>,
    /// When the member began to leave (just before `Consumer::close`).
    leaving_at: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

/// Notes when a member gets an assignment.
struct Stopwatch(Arc<Mutex<Option<Instant>>>);

impl RebalanceListener for Stopwatch {
    async fn on_partitions_assigned(&mut self, _: &mut Consumer, _: &[TopicPartition]) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

impl Member {
    async fn start(broker: &BrokerProcess, group: &str, topic: &str) -> Member {
        Member::start_with(broker, group, topic, ConsumerConfig::default()).await
    }

    async fn start_with(
        broker: &BrokerProcess,
        group: &str,
        topic: &str,
        config: ConsumerConfig,
    ) -> Member {
        let config = ConsumerConfig {
            auto_commit: false,
            ..config
        };
        let mut consumer = Consumer::new(connect(broker).await, config).unwrap();
        let assigned_at = Arc::new(Mutex::new(None));
        let leaving_at = Arc::new(Mutex::new(None));
        consumer.set_rebalance_listener(Stopwatch(Arc::clone(&assigned_at)));
        consumer.subscribe(group, &[topic]).unwrap();
        let (state_sender, state) = watch::channel(MemberState::default());
        let values = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let values = Arc::clone(&values);
            let stop = Arc::clone(&stop);
            let leaving_at = Arc::clone(&leaving_at);
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
                    let got = !records.is_empty();
                    values.lock().unwrap().extend(records.iter().map(|record| {
                        String::from_utf8_lossy(record.value.as_ref().unwrap()).into_owned()
                    }));
                    if got {
                        consumer.commit_sync().await.unwrap();
                    }
                    state_sender.send_replace(MemberState {
                        generation: consumer.group_generation(),
                        assignment: consumer.assignment().into_iter().collect(),
                    });
                }
                *leaving_at.lock().unwrap() = Some(Instant::now());
                consumer.close().await.unwrap();
            }
        });
        Member {
            state,
            values,
            stop,
            assigned_at,
            leaving_at,
            task,
        }
    }

    fn state(&self) -> MemberState {
        self.state.borrow().clone()
    }

    /// Stops polling, commits, leaves the group cleanly.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let values = self.values.lock().unwrap().clone();
        values
    }
}

/// Whether the members are all in one generation with disjoint assignments covering
/// `partitions` partitions of `topic`.
fn balanced(members: &[&Member], topic: &str, partitions: i32) -> bool {
    let states: Vec<MemberState> = members.iter().map(|member| member.state()).collect();
    let generation = states[0].generation;
    if generation.is_none() || states.iter().any(|state| state.generation != generation) {
        return false;
    }
    let mut seen = BTreeSet::new();
    for state in &states {
        for partition in &state.assignment {
            if !seen.insert(partition.clone()) {
                return false;
            }
        }
    }
    let all: BTreeSet<TopicPartition> = (0..partitions)
        .map(|partition| TopicPartition::new(topic, partition))
        .collect();
    let sizes: Vec<usize> = states.iter().map(|state| state.assignment.len()).collect();
    let spread = sizes.iter().max().unwrap() - sizes.iter().min().unwrap();
    seen == all && spread <= 1
}

/// Sends records `prefix-N` for N in `range`, N to partition N mod the partition count, and
/// waits for every acknowledgement.
async fn produce(client: &Client, topic: &str, prefix: &str, range: std::ops::Range<usize>) {
    let partitions = client.topic(topic).await.unwrap().partition_count();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for sequence in range {
        let partition = i32::try_from(sequence).unwrap() % partitions;
        let record =
            ProducerRecord::new(topic, format!("{prefix}-{sequence}")).with_partition(partition);
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_clean_rebalances_deliver_each_record_once() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("shared", 6, 1, &[])
        .await
        .unwrap();
    // Records keep arriving while members join and leave.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = tokio::spawn({
        let client = client.clone();
        let producing = Arc::clone(&producing);
        async move {
            let mut next = 0;
            while producing.load(Ordering::SeqCst) {
                produce(&client, "shared", "r", next..next + 20).await;
                next += 20;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            next
        }
    });
    let limit = Duration::from_secs(20);
    let first = Member::start(&broker, "g", "shared").await;
    eventually(limit, "one member with all partitions", || {
        balanced(&[&first], "shared", 6)
    })
    .await;
    let second = Member::start(&broker, "g", "shared").await;
    eventually(limit, "two members sharing six partitions", || {
        balanced(&[&first, &second], "shared", 6)
    })
    .await;
    let third = Member::start(&broker, "g", "shared").await;
    eventually(limit, "three members sharing six partitions", || {
        balanced(&[&first, &second, &third], "shared", 6)
    })
    .await;
    assert!(
        [&first, &second, &third]
            .iter()
            .all(|member| member.state().assignment.len() == 2),
        "six partitions over three members: two each"
    );
    let mut values = first.stop().await;
    eventually(limit, "two members after one left", || {
        balanced(&[&second, &third], "shared", 6)
    })
    .await;
    producing.store(false, Ordering::SeqCst);
    let produced = producer.await.unwrap();
    // The last records: wait until the remaining members have them all.
    eventually(limit, "every record consumed", || {
        values.len() + second.values.lock().unwrap().len() + third.values.lock().unwrap().len()
            >= produced
    })
    .await;
    values.extend(second.stop().await);
    values.extend(third.stop().await);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for value in &values {
        *counts.entry(value.clone()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for sequence in 0..produced {
        assert!(
            counts.contains_key(&format!("r-{sequence}")),
            "r-{sequence} was never delivered"
        );
    }
    assert_eq!(values.len(), produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_after_a_clean_leave_does_not_wait_for_the_session_timeout() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("twelve", 12, 1, &[])
        .await
        .unwrap();
    let limit = Duration::from_secs(20);
    let config = ConsumerConfig {
        session_timeout: Duration::from_secs(30),
        ..ConsumerConfig::default()
    };
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::start_with(&broker, "fast", "twelve", config.clone()).await);
        let all: Vec<&Member> = members.iter().collect();
        eventually(limit, "a balanced group", || balanced(&all, "twelve", 12)).await;
    }
    let leaving = members.pop().unwrap();
    let before = members[0].state().generation;
    let leaving_at = Arc::clone(&leaving.leaving_at);
    leaving.stop().await;
    let remaining: Vec<&Member> = members.iter().collect();
    eventually(limit, "two members with all twelve partitions", || {
        remaining
            .iter()
            .all(|member| member.state().generation > before)
            && balanced(&remaining, "twelve", 12)
    })
    .await;
    // From the leaving member's close (commit, revoke, LeaveGroup) to the last remaining
    // member's new assignment.
    let started = leaving_at.lock().unwrap().unwrap();
    let finished = remaining
        .iter()
        .map(|member| member.assigned_at.lock().unwrap().unwrap())
        .max()
        .unwrap();
    let elapsed = finished - started;
    eprintln!("rebalance after a clean leave: 3 -> 2 members, 12 partitions: {elapsed:?}");
    // Far below the 30 s session timeout: the leave, not an expiry, started it.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    for member in members {
        member.stop().await;
    }
}

/// An `mq-consume --group` child process whose stdout lines are collected.
struct ConsumeProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ConsumeProcess {
    fn start(broker: &BrokerProcess, args: &[&str]) -> ConsumeProcess {
        let mut child = Command::new(binary("mq-consume"))
            .args(["-b", &broker.bootstrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let lines = Arc::clone(&lines);
            move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            }
        });
        ConsumeProcess { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (at most 20 s) for a successful exit.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "mq-consume exited with {status}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mq-consume did not exit within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread ends at EOF; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        self.lines()
    }
}

impl Drop for ConsumeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn describe(admin: &Admin, group: &str) -> mq_client::GroupDescription {
    admin.describe_group(group).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consume_processes_share_a_topic_and_a_clean_exit_hands_over_without_duplicates() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("jobs", 4, 1, &[]).await.unwrap();
    produce(&client, "jobs", "before", 0..200).await;
    let limit = Duration::from_secs(30);
    let first = ConsumeProcess::start(&broker, &["--topic", "jobs", "--group", "workers"]);
    let second = ConsumeProcess::start(&broker, &["--topic", "jobs", "--group", "workers"]);
    let mut stable = false;
    let started = Instant::now();
    while !stable {
        assert!(
            started.elapsed() < limit,
            "the group never had two members sharing 4 partitions"
        );
        let group = describe(&admin, "workers").await;
        let counts: Vec<usize> = group.members.iter().map(|m| m.assignment.len()).collect();
        stable = group.state == "Stable" && counts == [2, 2];
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&client, "jobs", "during", 0..200).await;
    eventually(limit, "400 records printed", || {
        first.lines().len() + second.lines().len() >= 400
    })
    .await;
    // The first leaves cleanly: it commits what it printed, then the second takes over.
    let mut printed = first.terminate();
    produce(&client, "jobs", "after", 0..200).await;
    eventually(limit, "600 records printed", || {
        printed.len() + second.lines().len() >= 600
    })
    .await;
    printed.extend(second.terminate());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in &printed {
        *counts.entry(line.clone()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "printed more than once: {twice:?}");
    assert_eq!(counts.len(), 600, "every record printed");
    // Both exited cleanly: the group is empty, its offsets at the log end.
    let group = describe(&admin, "workers").await;
    assert_eq!(group.state, "Empty");
    let committed = admin.committed_offsets("workers").await.unwrap();
    let partitions: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("jobs", p)).collect();
    let ends = admin
        .list_offsets(&partitions, OffsetSpec::Latest)
        .await
        .unwrap();
    for partition in &partitions {
        assert_eq!(
            committed.get(partition).map(|c| c.offset),
            ends.get(partition).copied(),
            "{partition} committed at its end"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_its_partitions_after_the_session_timeout_and_no_record_is_lost() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("tasks", 4, 1, &[]).await.unwrap();
    let limit = Duration::from_secs(40);
    // The victim: a real process, killed with SIGKILL (default session timeout, 10 s).
    let mut victim = ConsumeProcess::start(&broker, &["--topic", "tasks", "--group", "crew"]);
    let survivor = Member::start(&broker, "crew", "tasks").await;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < limit, "the group never had two members");
        let group = describe(&admin, "crew").await;
        let counts: Vec<usize> = group.members.iter().map(|m| m.assignment.len()).collect();
        if group.state == "Stable" && counts == [2, 2] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&client, "tasks", "t", 0..400).await;
    eventually(limit, "400 records consumed", || {
        victim.lines().len() + survivor.values.lock().unwrap().len() >= 400
    })
    .await;
    // Let the victim's periodic commit happen for part of what it printed, then kill it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Instant::now();
    let printed_by_victim = victim.lines();
    produce(&client, "tasks", "t", 400..600).await;
    eventually(limit, "the survivor owning all four partitions", || {
        balanced(&[&survivor], "tasks", 4)
    })
    .await;
    let handed_over = killed_at.elapsed();
    eprintln!(
        "partitions of a SIGKILLed member handed over after {handed_over:?} (session timeout 10 s)"
    );
    assert!(
        handed_over >= Duration::from_secs(5),
        "handed over after {handed_over:?}: before the session timeout could expire"
    );
    eventually(limit, "every record consumed by someone", || {
        let survivor: BTreeSet<String> = survivor.values.lock().unwrap().iter().cloned().collect();
        (0..600).all(|sequence| {
            let value = format!("t-{sequence}");
            survivor.contains(&value) || printed_by_victim.contains(&value)
        })
    })
    .await;
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_clean_restart_and_a_kill_9() {
    let mut broker = BrokerProcess::start();
    let client = connect(&broker).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("ledger", 3, 1, &[]).await.unwrap();
    produce(&client, "ledger", "x", 0..30).await;
    let partitions: Vec<TopicPartition> =
        (0..3).map(|p| TopicPartition::new("ledger", p)).collect();
    // Commits outside membership (the group is empty), as the reset tool does.
    let offsets: Vec<(TopicPartition, i64)> = partitions
        .iter()
        .map(|p| (p.clone(), 1 + i64::from(p.partition)))
        .collect();
    admin
        .alter_committed_offsets("books", &offsets)
        .await
        .unwrap();
    broker.terminate();
    broker.restart();
    let admin = Admin::new(connect(&broker).await);
    let committed = admin.committed_offsets("books").await.unwrap();
    for (partition, offset) in &offsets {
        assert_eq!(
            committed[partition].offset, *offset,
            "{partition} after a clean restart"
        );
    }
    // Many acknowledged commits, then SIGKILL right after the last acknowledgement.
    let mut last = Vec::new();
    for round in 0..50i64 {
        last = partitions
            .iter()
            .map(|p| (p.clone(), round * 3 + i64::from(p.partition)))
            .collect();
        admin.alter_committed_offsets("books", &last).await.unwrap();
    }
    broker.kill9();
    broker.restart();
    let admin = Admin::new(connect(&broker).await);
    let committed = admin.committed_offsets("books").await.unwrap();
    for (partition, offset) in &last {
        assert_eq!(
            committed[partition].offset, *offset,
            "{partition} after kill -9"
        );
    }
    // A member starts from the committed offset.
    let mut consumer = Consumer::new(
        connect(&broker).await,
        ConsumerConfig {
            auto_commit: false,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    let reset: Vec<(TopicPartition, i64)> = partitions.iter().map(|p| (p.clone(), 5)).collect();
    admin
        .alter_committed_offsets("books", &reset)
        .await
        .unwrap();
    consumer.subscribe("books", &["ledger"]).unwrap();
    let mut first_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let started = Instant::now();
    while first_offsets.len() < 3 && started.elapsed() < Duration::from_secs(20) {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            first_offsets
                .entry(record.partition)
                .or_insert(record.offset);
        }
    }
    assert_eq!(first_offsets, (0..3).map(|p| (p, 5)).collect());
    consumer.close().await.unwrap();
}

/// The log start offsets of a topic's partitions.
async fn log_starts(admin: &Admin, topic: &str) -> Vec<i64> {
    admin
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|partition| partition.log_start_offset)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments_and_a_consumer_below_the_log_start_is_reset() {
    let broker = BrokerProcess::start_with(&["--retention-check-interval-ms", "200"]);
    let client = connect(&broker).await;
    let admin = Admin::new(client.clone());
    let small_segments = |extra: (&str, &str)| {
        vec![
            ("segment_bytes".to_string(), "4096".to_string()),
            ("max_message_bytes".to_string(), "1024".to_string()),
            (extra.0.to_string(), extra.1.to_string()),
        ]
    };
    admin
        .create_topic(
            "by-size",
            1,
            1,
            &small_segments(("retention_bytes", "8192")),
        )
        .await
        .unwrap();
    admin
        .create_topic("by-age", 1, 1, &small_segments(("retention_ms", "1000")))
        .await
        .unwrap();
    // A group committed at offset 0 of both topics before retention runs.
    let zero = vec![
        (TopicPartition::new("by-size", 0), 0),
        (TopicPartition::new("by-age", 0), 0),
    ];
    admin.alter_committed_offsets("late", &zero).await.unwrap();
    admin.alter_committed_offsets("later", &zero).await.unwrap();
    for topic in ["by-size", "by-age"] {
        // One record per batch (one send and wait at a time): many small batches, many segments.
        for sequence in 0..200 {
            produce(&client, topic, &format!("{sequence:0>100}"), 0..1).await;
        }
    }
    let describe_size = admin.describe_topic("by-size").await.unwrap();
    let size = describe_size.partitions[0].size_bytes;
    let limit = Duration::from_secs(20);
    let started = Instant::now();
    loop {
        let starts = log_starts(&admin, "by-size").await;
        let topic = admin.describe_topic("by-size").await.unwrap();
        if starts[0] > 0 && topic.partitions[0].size_bytes <= 8192 + 4096 {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "retention by size never ran (size {size})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    loop {
        let starts = log_starts(&admin, "by-age").await;
        let end = admin.describe_topic("by-age").await.unwrap().partitions[0].log_end_offset;
        // Everything but the active segment is older than a second by now.
        if starts[0] > 0 && end - starts[0] < 100 {
            break;
        }
        assert!(started.elapsed() < limit, "retention by age never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Committed offset 0 is below the log start: earliest resets to the log start ...
    for topic in ["by-size", "by-age"] {
        let start = log_starts(&admin, topic).await[0];
        let mut consumer = Consumer::new(
            connect(&broker).await,
            ConsumerConfig {
                auto_commit: false,
                reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.subscribe("late", &[topic]).unwrap();
        let started = Instant::now();
        let mut first = None;
        while first.is_none() && started.elapsed() < limit {
            first = consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .first()
                .map(|record| record.offset);
        }
        let first = first.expect("the consumer was reset to a stored record");
        assert!(
            first >= start,
            "{topic}: read offset {first} below the log start {start}"
        );
        consumer.close().await.unwrap();
    }
    // ... and latest to the log end: nothing old is read.
    let mut consumer = Consumer::new(
        connect(&broker).await,
        ConsumerConfig {
            auto_commit: false,
            reset: OffsetReset::Latest,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.subscribe("later", &["by-size"]).unwrap();
    let end = admin.describe_topic("by-size").await.unwrap().partitions[0].log_end_offset;
    let started = Instant::now();
    while consumer.group_generation().is_none() && started.elapsed() < limit {
        assert!(consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty());
    }
    produce(&client, "by-size", "new", 0..1).await;
    let mut records = Vec::new();
    let started = Instant::now();
    while records.is_empty() && started.elapsed() < limit {
        records = consumer.poll(Duration::from_millis(200)).await.unwrap();
    }
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].offset, end,
        "latest: the first record read is the new one"
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_removes_its_files_and_its_committed_offsets() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    let admin = Admin::new(client.clone());
    admin.create_topic("doomed", 2, 1, &[]).await.unwrap();
    admin.create_topic("kept", 1, 1, &[]).await.unwrap();
    produce(&client, "doomed", "d", 0..10).await;
    let offsets = vec![
        (TopicPartition::new("doomed", 0), 3),
        (TopicPartition::new("doomed", 1), 4),
        (TopicPartition::new("kept", 0), 0),
    ];
    admin.alter_committed_offsets("g", &offsets).await.unwrap();
    let dirs = [
        broker.data_dir.join("doomed-0"),
        broker.data_dir.join("doomed-1"),
    ];
    assert!(dirs.iter().all(|dir| dir.is_dir()));
    admin.delete_topic("doomed").await.unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert!(broker.data_dir.join("kept-0").is_dir());
    let committed = admin.committed_offsets("g").await.unwrap();
    assert_eq!(
        committed.keys().cloned().collect::<Vec<_>>(),
        vec![TopicPartition::new("kept", 0)],
        "only the remaining topic's offset is left"
    );
}
