//! Produces ten records to topic `example` and reads them back.
//!
//! Needs a running broker: `MQ_BOOTSTRAP` names it (default `127.0.0.1:9700`). Creates the
//! topic (3 partitions) if it is missing, starts reading every partition at its current end,
//! produces ten keyed records, prints where each was written, then prints each one consumed.
//!
//! ```text
//! cargo run -p mq-client --example produce_consume
//! ```

// An example shows its results on stdout; libraries log instead.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::time::{Duration, Instant};

use mq_client::{
    Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};

const TOPIC: &str = "example";
const RECORDS: usize = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let bootstrap = std::env::var("MQ_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9700".to_string());
    let client = Client::connect(&bootstrap, ClientConfig::default()).await?;

    match Admin::new(client.clone())
        .create_topic(TOPIC, 3, 1, &[])
        .await
    {
        Ok(()) => println!("created topic '{TOPIC}'"),
        Err(ClientError::TopicAlreadyExists { .. }) => println!("topic '{TOPIC}' exists"),
        Err(error) => return Err(error.into()),
    }

    // Start at the current end of every partition, to read back exactly what we produce.
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default())?;
    consumer.assign_all(TOPIC).await?;
    let ends = consumer.end_offsets(&consumer.assignment()).await?;
    for (partition, end) in &ends {
        consumer
            .seek(&partition.topic, partition.partition, SeekTo::Offset(*end))
            .await?;
    }

    let producer = Producer::new(client, ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for index in 0..RECORDS {
        let record =
            ProducerRecord::new(TOPIC, format!("record {index}")).with_key(format!("key-{index}"));
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        let written = delivery.await?;
        println!(
            "produced to {}-{} at offset {}",
            written.topic, written.partition, written.offset
        );
    }
    producer.close().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut consumed = 0;
    while consumed < RECORDS {
        if Instant::now() > deadline {
            return Err(format!("only {consumed} of {RECORDS} records came back").into());
        }
        for record in consumer.poll(Duration::from_secs(1)).await? {
            let text = |bytes: &Option<mq_client::Bytes>| {
                bytes
                    .as_deref()
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_else(|| "null".to_string())
            };
            println!(
                "consumed {}-{} at offset {}: key={} value={}",
                record.topic,
                record.partition,
                record.offset,
                text(&record.key),
                text(&record.value)
            );
            consumed += 1;
        }
    }
    Ok(())
}
