//! Cluster mode with real processes: a controller and three brokers on loopback. Leaders are
//! balanced, any broker bootstraps a client, a topic created through one broker is usable
//! through all of them, a broker killed with SIGKILL is fenced within its session timeout and
//! rejoins with its data, a restarted controller keeps every piece of metadata, a partition
//! moved to another broker loses nothing, and group coordination moves off a dead broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mq_client::protocol::request::{FindCoordinatorRequest, MetadataRequest, Request};
use mq_client::protocol::response::{MetadataResponse, Response};
use mq_client::{
    Acks, Admin, Client, ClientConfig, Connection, ConnectionConfig, Consumer, ConsumerConfig,
    ErrorCode, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use mq_tests::BrokerProcess;

/// A partition as metadata shows it: number, leader, replicas.
type PartitionShape = (i32, i32, Vec<i32>);

/// The session timeout the brokers run with: a killed broker is fenced this long after its
/// last heartbeat.
const SESSION_TIMEOUT_MS: u64 = 2000;

/// A controller and `n` brokers, each in its own temporary directory.
struct TestCluster {
    controller: BrokerProcess,
    brokers: Vec<BrokerProcess>,
}

impl TestCluster {
    fn start(brokers: usize) -> TestCluster {
        let controller = BrokerProcess::start_with(&[
            "--role",
            "controller",
            "--node-id",
            "100",
            "--session-timeout-ms",
            &SESSION_TIMEOUT_MS.to_string(),
            "--heartbeat-interval-ms",
            "100",
        ]);
        let address = controller.bootstrap();
        let brokers = (1..=brokers)
            .map(|node_id| {
                BrokerProcess::start_with(&[
                    "--role",
                    "broker",
                    "--node-id",
                    &node_id.to_string(),
                    "--controller",
                    &address,
                    "--heartbeat-interval-ms",
                    "100",
                    "--session-timeout-ms",
                    &SESSION_TIMEOUT_MS.to_string(),
                ])
            })
            .collect();
        TestCluster {
            controller,
            brokers,
        }
    }

    /// Every broker's address, comma-separated.
    fn bootstrap(&self) -> String {
        let addresses: Vec<String> = self.brokers.iter().map(BrokerProcess::bootstrap).collect();
        addresses.join(",")
    }

    /// The broker process of `node_id`.
    fn node(&mut self, node_id: i32) -> &mut BrokerProcess {
        let index = usize::try_from(node_id - 1).unwrap();
        &mut self.brokers[index]
    }
}

async fn connection(process: &BrokerProcess) -> Connection {
    Connection::connect(&process.bootstrap(), ConnectionConfig::default())
        .await
        .unwrap()
}

async fn metadata(process: &BrokerProcess) -> MetadataResponse {
    let connection = connection(process).await;
    match connection
        .request(Request::Metadata(MetadataRequest { topics: None }))
        .await
        .unwrap()
    {
        Response::Metadata(response) => response,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Leaders by partition of `topic`, as `process` sees them.
async fn leaders(process: &BrokerProcess, topic: &str) -> Vec<i32> {
    metadata(process)
        .await
        .topics
        .into_iter()
        .find(|found| found.name == topic && found.error_code.is_ok())
        .map(|found| found.partitions.iter().map(|p| p.leader).collect())
        .unwrap_or_default()
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client(bootstrap: &str) -> Client {
    Client::connect(bootstrap, ClientConfig::default())
        .await
        .unwrap()
}

/// Sends `count` records keyed by their index to `topic`, acks=all; returns the values that
/// were acknowledged, by partition, in offset order.
async fn produce(
    client: &Client,
    topic: &str,
    prefix: &str,
    count: usize,
) -> HashMap<i32, Vec<(i64, String)>> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            delivery_timeout: Duration::from_secs(20),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let mut deliveries = Vec::new();
    for index in 0..count {
        let value = format!("{prefix}-{index}");
        let record = ProducerRecord::new(topic, value.clone()).with_key(format!("{index}"));
        deliveries.push((value, producer.send(record).await.unwrap()));
    }
    let mut acknowledged: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for (value, delivery) in deliveries {
        if let Ok(metadata) = delivery.await {
            acknowledged
                .entry(metadata.partition)
                .or_default()
                .push((metadata.offset, value));
        }
    }
    producer.close().await;
    for records in acknowledged.values_mut() {
        records.sort();
    }
    acknowledged
}

/// Every record of `topic`, by partition, in offset order (read until `expected` arrived or
/// 20 s passed).
async fn consume(client: Client, topic: &str, expected: usize) -> HashMap<i32, Vec<(i64, String)>> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).unwrap();
    consumer.assign_all(topic).await.unwrap();
    for assigned in consumer.assignment() {
        consumer
            .seek(&assigned.topic, assigned.partition, SeekTo::Beginning)
            .await
            .unwrap();
    }
    let started = Instant::now();
    let mut records: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    let mut total = 0;
    while total < expected && started.elapsed() < Duration::from_secs(20) {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let value = String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap();
            records
                .entry(record.partition)
                .or_default()
                .push((record.offset, value));
            total += 1;
        }
    }
    records
}

fn count(records: &HashMap<i32, Vec<(i64, String)>>) -> usize {
    records.values().map(Vec::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_are_balanced_and_a_topic_is_usable_through_every_broker() {
    let cluster = TestCluster::start(3);
    let admin = Admin::new(client(&cluster.brokers[0].bootstrap()).await);
    admin.create_topic("orders", 6, 1, &[]).await.unwrap();
    // Created through broker 1: how long until brokers 2 and 3 show it with its leaders.
    let created = Instant::now();
    for broker in &cluster.brokers[1..] {
        eventually(
            Duration::from_secs(5),
            "the topic reaching every broker",
            || async { leaders(broker, "orders").await.len() == 6 },
        )
        .await;
    }
    eprintln!(
        "metadata propagation: topic usable through every broker {} µs after CreateTopics returned",
        created.elapsed().as_micros()
    );
    let mut per_broker: HashMap<i32, usize> = HashMap::new();
    for leader in leaders(&cluster.brokers[2], "orders").await {
        *per_broker.entry(leader).or_default() += 1;
    }
    assert_eq!(
        per_broker,
        HashMap::from([(1, 2), (2, 2), (3, 2)]),
        "6 partitions over 3 brokers: 2 leaders each"
    );
    // Any one broker bootstraps a client that reaches every leader.
    let sent = produce(
        &client(&cluster.brokers[2].bootstrap()).await,
        "orders",
        "r",
        120,
    )
    .await;
    assert_eq!(count(&sent), 120, "every record acknowledged");
    assert_eq!(sent.len(), 6, "keys spread over all partitions");
    let read = consume(client(&cluster.brokers[1].bootstrap()).await, "orders", 120).await;
    assert_eq!(
        read, sent,
        "every acknowledged record, at its offset, read through another broker"
    );
    // The controller answers metadata too, and names itself.
    let from_controller = metadata(&cluster.controller).await;
    assert_eq!(from_controller.controller_id, 100);
    assert_eq!(from_controller.brokers.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_fenced_and_rejoins_with_its_data() {
    let mut cluster = TestCluster::start(3);
    let bootstrap = cluster.bootstrap();
    Admin::new(client(&bootstrap).await)
        .create_topic("ledger", 3, 1, &[])
        .await
        .unwrap();
    let sent = produce(&client(&bootstrap).await, "ledger", "before", 60).await;
    assert_eq!(count(&sent), 60);
    let victim = leaders(&cluster.brokers[0], "ledger").await[0];
    cluster.node(victim).kill9();
    let killed = Instant::now();
    let observer = if victim == 1 { 1 } else { 0 };
    let fenced = eventually(
        Duration::from_secs(5),
        "the killed broker fenced",
        || async {
            let seen = metadata(&cluster.brokers[observer]).await;
            !seen.brokers.iter().any(|broker| broker.node_id == victim)
                && leaders(&cluster.brokers[observer], "ledger").await[0] == -1
        },
    )
    .await;
    eprintln!(
        "broker {victim} fenced {} ms after SIGKILL (session timeout {SESSION_TIMEOUT_MS} ms)",
        killed.elapsed().as_millis()
    );
    assert!(fenced < Duration::from_millis(SESSION_TIMEOUT_MS * 3));
    // Its partition is offline: a clear, retriable error.
    let raw = connection(&cluster.brokers[observer]).await;
    let produce = mq_tests::raw::produce_request("ledger", 0, &mq_tests::raw::batch_of(&["x"]), -1);
    match raw.request(produce).await.unwrap() {
        Response::Produce(response) => {
            let answer = &response.topics[0].partitions[0];
            assert_eq!(answer.error_code, ErrorCode::NOT_LEADER_OR_FOLLOWER);
            assert!(answer.error_code.is_retriable());
            let message = answer.error_message.clone().unwrap_or_default();
            assert!(message.contains("offline"), "{message}");
        }
        other => panic!("unexpected answer {other:?}"),
    }
    // It comes back with its data and leads its partitions again.
    cluster.node(victim).restart();
    eventually(
        Duration::from_secs(10),
        "the broker back as leader",
        || async { leaders(&cluster.brokers[observer], "ledger").await[0] == victim },
    )
    .await;
    let read = consume(client(&bootstrap).await, "ledger", 60).await;
    assert_eq!(read, sent, "nothing acknowledged was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_all_metadata() {
    let mut cluster = TestCluster::start(3);
    let admin = Admin::new(client(&cluster.bootstrap()).await);
    admin.create_topic("alpha", 4, 1, &[]).await.unwrap();
    admin
        .create_topic(
            "beta",
            2,
            1,
            &[("retention_ms".to_string(), "60000".to_string())],
        )
        .await
        .unwrap();
    admin.add_partitions("alpha", 5).await.unwrap();
    admin.create_topic("gone", 1, 1, &[]).await.unwrap();
    admin.delete_topic("gone").await.unwrap();
    let before = metadata(&cluster.controller).await;
    cluster.controller.kill9();
    cluster.controller.restart();
    let after = metadata(&cluster.controller).await;
    let shape = |response: &MetadataResponse| {
        let mut topics: Vec<(String, Vec<PartitionShape>)> = response
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.leader, p.replicas.clone()))
                    .collect();
                (topic.name.clone(), partitions)
            })
            .collect();
        topics.sort();
        topics
    };
    assert_eq!(
        shape(&after),
        shape(&before),
        "topics, partitions, leaders and replicas"
    );
    assert_eq!(shape(&after).len(), 2);
    // The brokers carry on with it: still alive after a few session timeouts, and a new
    // topic is placed on them.
    tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS * 2)).await;
    assert_eq!(metadata(&cluster.controller).await.brokers.len(), 3);
    admin.create_topic("gamma", 3, 1, &[]).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the new topic on the brokers",
        || async { leaders(&cluster.brokers[2], "gamma").await.len() == 3 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_partition_moves_its_data_and_loses_nothing() {
    let cluster = TestCluster::start(3);
    let bootstrap = cluster.bootstrap();
    let admin = Admin::new(client(&bootstrap).await);
    admin.create_topic("moving", 1, 1, &[]).await.unwrap();
    let first = produce(&client(&bootstrap).await, "moving", "early", 300).await;
    let source = leaders(&cluster.brokers[0], "moving").await[0];
    let target = if source == 3 { 1 } else { source + 1 };
    // Produce while the partition moves: the producer retries through the unavailability.
    let producing = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(
            async move { produce(&client(&bootstrap).await, "moving", "during", 300).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    admin.reassign_partition("moving", 0, target).await.unwrap();
    let moved = eventually(
        Duration::from_secs(20),
        "the partition led by its target",
        || async { leaders(&cluster.brokers[0], "moving").await == vec![target] },
    )
    .await;
    eprintln!(
        "moved moving-0 from broker {source} to broker {target} in {} ms",
        moved.as_millis()
    );
    let during = producing.await.unwrap();
    let mut sent: Vec<(i64, String)> = first.get(&0).cloned().unwrap_or_default();
    sent.extend(during.get(&0).cloned().unwrap_or_default());
    sent.sort();
    assert_eq!(
        sent.len(),
        600,
        "every record acknowledged within the delivery timeout"
    );
    let read = consume(client(&bootstrap).await, "moving", 600).await;
    assert_eq!(
        read.get(&0).cloned().unwrap_or_default(),
        sent,
        "all of it, at the same offsets"
    );
    let source_dir =
        cluster.brokers[usize::try_from(source - 1).unwrap()].partition_dir("moving", 0);
    eventually(
        Duration::from_secs(5),
        "the source's copy deleted",
        || async { !source_dir.exists() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_coordination_moves_off_a_dead_broker() {
    let mut cluster = TestCluster::start(3);
    let find = |process: &BrokerProcess| {
        let address = process.bootstrap();
        async move {
            let connection = Connection::connect(&address, ConnectionConfig::default())
                .await
                .unwrap();
            let request = Request::FindCoordinator(FindCoordinatorRequest {
                group_id: "workers".to_string(),
            });
            match connection.request(request).await.unwrap() {
                Response::FindCoordinator(response) => {
                    assert!(response.error_code.is_ok(), "{response:?}");
                    response.node_id
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
    };
    let coordinator = find(&cluster.brokers[0]).await;
    for broker in &cluster.brokers {
        assert_eq!(
            find(broker).await,
            coordinator,
            "every broker names the same coordinator"
        );
    }
    let survivor = if coordinator == 1 { 2 } else { 1 };
    let survivor_index = usize::try_from(survivor - 1).unwrap();
    // A topic on the survivor only, so the group has data while the coordinator is dead.
    let admin = Admin::new(client(&cluster.brokers[survivor_index].bootstrap()).await);
    admin.create_topic("jobs", 3, 1, &[]).await.unwrap();
    let bootstrap = cluster.brokers[survivor_index].bootstrap();
    cluster.node(coordinator).kill9();
    let moved = eventually(Duration::from_secs(10), "a new coordinator", || async {
        let seen = find(&cluster.brokers[survivor_index]).await;
        seen != coordinator
    })
    .await;
    eprintln!(
        "group coordination moved {} ms after SIGKILL",
        moved.as_millis()
    );
    // A member joins through the new coordinator and reads what the live brokers hold.
    let leaders_now = leaders(&cluster.brokers[survivor_index], "jobs").await;
    let online: Vec<i32> = (0..3).filter(|p| leaders_now[*p as usize] != -1).collect();
    assert!(!online.is_empty());
    let producer_client = client(&bootstrap).await;
    let producer = Producer::new(producer_client, ProducerConfig::default()).unwrap();
    for partition in &online {
        producer
            .send(ProducerRecord::new("jobs", "job").with_partition(*partition))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
    let mut consumer = Consumer::new(client(&bootstrap).await, ConsumerConfig::default()).unwrap();
    consumer.subscribe("workers", &["jobs"]).unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < online.len() && started.elapsed() < Duration::from_secs(20) {
        got += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(
        got,
        online.len(),
        "the group consumes while its old coordinator is dead"
    );
    consumer.commit_sync().await.unwrap();
}
