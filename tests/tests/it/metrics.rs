//! The metrics endpoint of a real broker (`--metrics-listen`): request counts, bytes, log
//! offsets and consumer lag in the Prometheus text format; anything but `GET /metrics` is
//! refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mq_client::{
    Admin, Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use mq_tests::BrokerProcess;

/// The metrics address, from the broker's log line `serving metrics at /metrics address=...`.
fn metrics_address(broker: &BrokerProcess) -> String {
    let started = Instant::now();
    loop {
        let log = broker.log();
        if let Some(line) = log.lines().find(|line| line.contains("serving metrics")) {
            let address = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("address="))
                .unwrap();
            return address.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no metrics line in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one HTTP request, returns the whole response.
fn http(address: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The value of the sample `name` in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_requests_offsets_and_lag() {
    let broker = BrokerProcess::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let address = metrics_address(&broker);
    let client = Client::connect(&broker.bootstrap(), ClientConfig::default())
        .await
        .unwrap();
    let admin = Admin::new(client.clone());
    admin.create_topic("metered", 1, 1, &[]).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for index in 0..10 {
        producer
            .send(ProducerRecord::new("metered", format!("record {index}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
    admin
        .alter_committed_offsets("watchers", &[(TopicPartition::new("metered", 0), 4)])
        .await
        .unwrap();
    let response = tokio::task::spawn_blocking({
        let address = address.clone();
        move || http(&address, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
    })
    .await
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let produced = sample(body, "mq_requests_total{api=\"Produce\"}").unwrap();
    assert!(produced >= 10.0, "{produced}");
    assert_eq!(
        sample(body, "mq_request_errors_total{api=\"Produce\"}"),
        Some(0.0)
    );
    assert!(sample(body, "mq_request_duration_seconds_count{api=\"Produce\"}").unwrap() >= 10.0);
    assert!(sample(body, "mq_network_received_bytes_total").unwrap() > 0.0);
    assert!(sample(body, "mq_network_sent_bytes_total").unwrap() > 0.0);
    assert!(sample(body, "mq_connections").unwrap() >= 1.0);
    assert_eq!(
        sample(body, "mq_log_end_offset{topic=\"metered\",partition=\"0\"}"),
        Some(10.0)
    );
    assert!(sample(body, "mq_log_size_bytes{topic=\"metered\",partition=\"0\"}").unwrap() > 0.0);
    assert_eq!(
        sample(
            body,
            "mq_group_lag{group=\"watchers\",topic=\"metered\",partition=\"0\"}"
        ),
        Some(6.0)
    );
    let (not_found, garbage) = tokio::task::spawn_blocking(move || {
        (
            http(&address, "GET /other HTTP/1.1\r\n\r\n"),
            http(&address, "\u{1}\u{2} garbage\r\n\r\n"),
        )
    })
    .await
    .unwrap();
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    assert!(garbage.starts_with("HTTP/1.1 404"), "{garbage}");
}
