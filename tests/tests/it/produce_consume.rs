//! Producing and consuming through `mq-client` against real broker processes: every record
//! comes back, keys keep their partition and order, a long-poll wakes on append, and a broker
//! killed with SIGKILL mid-stream loses nothing that was acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mq_client::protocol::Record;
use mq_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Producer,
    ProducerConfig, ProducerRecord, SeekTo,
};
use mq_tests::BrokerProcess;

async fn connect(broker: &BrokerProcess) -> Client {
    Client::connect(&broker.bootstrap(), ClientConfig::default())
        .await
        .unwrap()
}

/// Consumes from the beginning of every partition until `expected` records arrived or
/// `deadline` passed.
async fn consume_all(
    client: Client,
    topic: &str,
    expected: usize,
    deadline: Duration,
) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).unwrap();
    consumer.assign_all(topic).await.unwrap();
    for assigned in consumer.assignment() {
        consumer
            .seek(&assigned.topic, assigned.partition, SeekTo::Beginning)
            .await
            .unwrap();
    }
    let started = Instant::now();
    let mut records = Vec::new();
    while records.len() < expected && started.elapsed() < deadline {
        records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    records
}

fn value(record: &ConsumerRecord) -> String {
    String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_stay_in_one_partition_in_order() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("events", 4, 1, &[])
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for sequence in 0..100 {
        for key in 0..10 {
            let record = ProducerRecord::new("events", format!("{key}:{sequence}"))
                .with_key(format!("key-{key}"));
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
    let records = consume_all(client, "events", 1000, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1000, "every record exactly once");
    let mut partitions_of_key: HashMap<String, i32> = HashMap::new();
    let mut last_sequence: HashMap<String, i64> = HashMap::new();
    let mut by_partition: BTreeMap<i32, Vec<&ConsumerRecord>> = BTreeMap::new();
    for record in &records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for partition_records in by_partition.values_mut() {
        partition_records.sort_by_key(|record| record.offset);
        for record in partition_records.iter() {
            let text = value(record);
            let (key, sequence) = text.split_once(':').unwrap();
            let partition = *partitions_of_key
                .entry(key.to_string())
                .or_insert(record.partition);
            assert_eq!(partition, record.partition, "key {key} in two partitions");
            let sequence: i64 = sequence.parse().unwrap();
            let previous = last_sequence
                .insert(key.to_string(), sequence)
                .unwrap_or(-1);
            assert_eq!(sequence, previous + 1, "key {key} out of order");
        }
    }
    assert!(
        by_partition.len() > 1,
        "ten keys spread over more than one of four partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_at_the_end_gets_new_records_without_waiting_out_its_poll() {
    // Goal: a consumer waiting at the end of a partition is woken by the append (the fetch
    // long-polls on the log end), so records arrive in far less than the fetch's max wait.
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("live", 1, 1, &[])
        .await
        .unwrap();
    let config = ConsumerConfig {
        fetch_max_wait: Duration::from_secs(5),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config).unwrap();
    consumer.assign([("live", 0)]);
    consumer.seek("live", 0, SeekTo::End).await.unwrap();
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let mut latencies = Vec::new();
    for round in 0..50 {
        // Let the consumer's fetch reach the broker and start waiting.
        let polling = consumer.poll(Duration::from_millis(20)).await.unwrap();
        assert!(polling.is_empty());
        let sent = Instant::now();
        producer
            .send(ProducerRecord::new("live", format!("{round}")))
            .await
            .unwrap()
            .await
            .unwrap();
        let mut received = Vec::new();
        while received.is_empty() && sent.elapsed() < Duration::from_secs(10) {
            received = consumer.poll(Duration::from_secs(10)).await.unwrap();
        }
        latencies.push(sent.elapsed());
        assert_eq!(value(&received[0]), round.to_string());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    // A consumer that polled instead of being woken would see about the 5 s max wait.
    assert!(
        p99 < Duration::from_secs(1),
        "p99 {p99:?}: the fetch was not woken by the append"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_broker_is_killed_mid_stream() {
    // Goal: with acks=all, every record the producer saw acknowledged is there after the
    // broker is killed with SIGKILL and restarted; the client reconnects by itself and the
    // producer keeps going. Method: produce in the background, kill -9 and restart the broker
    // twice, then read everything back.
    let mut broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("durable", 2, 1, &[])
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let writer = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            for sequence in 0..3000u32 {
                let record = ProducerRecord::new("durable", sequence.to_string())
                    .with_key(sequence.to_string());
                deliveries.push((sequence, producer.send(record).await.unwrap()));
                if sequence % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut acknowledged = Vec::new();
            for (sequence, delivery) in deliveries {
                if delivery.await.is_ok() {
                    acknowledged.push(sequence);
                }
            }
            acknowledged
        })
    };
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        broker.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        broker.restart();
    }
    let acknowledged = writer.await.unwrap();
    producer.close().await;
    assert!(
        acknowledged.len() > 1000,
        "only {} acknowledged",
        acknowledged.len()
    );
    let records = consume_all(
        client,
        "durable",
        acknowledged.len(),
        Duration::from_secs(30),
    )
    .await;
    let stored: std::collections::HashSet<String> = records.iter().map(value).collect();
    for sequence in &acknowledged {
        assert!(
            stored.contains(&sequence.to_string()),
            "acknowledged record {sequence} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_as_groups_land_in_order_at_the_offsets_reported() {
    let broker = BrokerProcess::start();
    let client = connect(&broker).await;
    Admin::new(client.clone())
        .create_topic("groups", 2, 1, &[])
        .await
        .unwrap();
    // Small batches, so that groups are split over several of them and share batches with
    // single records sent in between.
    let config = ProducerConfig {
        batch_bytes_max: 4096,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config).unwrap();
    let mut groups = Vec::new();
    let mut singles = Vec::new();
    let mut sent = 0;
    for round in 0..20 {
        let records: Vec<Record> = (0..150)
            .map(|index| Record::new(1_000, None, Some(format!("g{round}:{index}").into())))
            .collect();
        sent += records.len();
        let values: Vec<String> = (0..150).map(|index| format!("g{round}:{index}")).collect();
        let delivery = producer.send_batch("groups", 1, records).await.unwrap();
        groups.push((values, delivery));
        let single = ProducerRecord::new("groups", format!("s{round}")).with_partition(1);
        singles.push((format!("s{round}"), producer.send(single).await.unwrap()));
        sent += 1;
    }
    let empty = producer.send_batch("groups", 0, Vec::new()).await.unwrap();
    assert_eq!(empty.await.unwrap().record_count(), 0);
    let unknown = producer.send_batch("groups", 7, Vec::new()).await;
    assert!(
        unknown.is_err(),
        "a partition that does not exist is refused at once"
    );

    let mut expected = BTreeMap::new();
    for (values, delivery) in groups {
        let written = delivery.await.unwrap();
        assert_eq!(written.partition, 1);
        assert_eq!(written.record_count(), values.len());
        for (value, offset) in values.into_iter().zip(written.offsets()) {
            assert!(
                expected.insert(offset, value).is_none(),
                "offset {offset} twice"
            );
        }
    }
    for (value, delivery) in singles {
        let written = delivery.await.unwrap();
        assert!(expected.insert(written.offset, value).is_none());
    }
    producer.close().await;
    let records = consume_all(client, "groups", sent, Duration::from_secs(30)).await;
    assert_eq!(records.len(), sent, "every record exactly once");
    let stored: BTreeMap<i64, String> = records
        .iter()
        .map(|record| (record.offset, value(record)))
        .collect();
    assert_eq!(
        stored, expected,
        "each record at the offset its delivery reported"
    );
    // Within the partition, each group's records and the singles keep their send order.
    let order: Vec<&String> = stored.values().collect();
    let position = |value: &str| order.iter().position(|stored| *stored == value).unwrap();
    for round in 0..20 {
        let (first, last) = (
            position(&format!("g{round}:0")),
            position(&format!("g{round}:149")),
        );
        assert_eq!(
            last - first,
            149,
            "group {round} is contiguous: nothing else was sent then"
        );
        assert!(last < position(&format!("s{round}")));
    }
}
