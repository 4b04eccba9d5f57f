//! Measures produce-to-consume latency through the long-poll fetch, one record at a time:
//! a producer task sends single records (acks=1, no linger) at a fixed rate, each carrying
//! its send time; a consumer task waiting at the end of the partition records when each
//! arrives. Prints percentiles.
//!
//! Run against a broker (release builds give the real figures):
//! `cargo run --release -p mq-client --example e2e_latency -- [bootstrap] [records] [per_second]`

#![allow(clippy::print_stdout)] // An example reports on stdout.
#![allow(clippy::unwrap_used)] // An example stops at the first error.

use std::time::{Duration, Instant};

use mq_client::{
    Acks, Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer,
    ProducerConfig, ProducerRecord, SeekTo,
};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9700".to_string());
    let records: usize = args.next().map_or(5000, |count| count.parse().unwrap());
    let per_second: u64 = args.next().map_or(1000, |rate| rate.parse().unwrap());
    let client = Client::connect(&bootstrap, ClientConfig::default())
        .await
        .unwrap();
    match Admin::new(client.clone())
        .create_topic("e2e-latency", 1, 1, &[])
        .await
    {
        Ok(()) | Err(ClientError::TopicAlreadyExists { .. }) => {}
        Err(error) => panic!("{error}"),
    }
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).unwrap();
    consumer.assign([("e2e-latency", 0)]);
    consumer.seek("e2e-latency", 0, SeekTo::End).await.unwrap();
    let epoch = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(records);
        while latencies.len() < records {
            for record in consumer.poll(Duration::from_secs(5)).await.unwrap() {
                let sent: u64 = std::str::from_utf8(record.value.as_ref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                latencies.push(epoch.elapsed() - Duration::from_nanos(sent));
            }
        }
        latencies
    });
    // Give the consumer's first fetch time to reach the broker and wait there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second));
    for _ in 0..records {
        ticker.tick().await;
        let sent = epoch.elapsed().as_nanos() as u64;
        let delivery = producer
            .send(ProducerRecord::new("e2e-latency", sent.to_string()))
            .await
            .unwrap();
        // The consumer's clock is what counts here; the acknowledgement is not awaited.
        drop(delivery);
    }
    producer.flush().await;
    let mut latencies = receiver.await.unwrap();
    latencies.sort();
    let at =
        |per_mille: usize| latencies[(latencies.len() * per_mille / 1000).min(latencies.len() - 1)];
    println!(
        "{records} records at {per_second}/s, one per batch, acks=1: p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        at(500),
        at(900),
        at(990),
        at(999),
        latencies[latencies.len() - 1]
    );
}
