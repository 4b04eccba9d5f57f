//! A move's target copying a partition from the broker that holds it.
//!
//! When the controller starts a move it takes the partition offline under a new leader
//! epoch E. The target empties its local log and fetches from the source with
//! `current_leader_epoch = E`. The source answers such a fetch only once it has applied epoch
//! E itself (`UNKNOWN_LEADER_EPOCH` before), and applying it stopped its produces behind a
//! barrier; so once the target has copied up to a log end the source reported at epoch E,
//! it holds everything the source ever acknowledged. It then makes the copy durable and
//! tells the controller (`AlterPartition`), which makes it the partition's leader; the source
//! deletes its copy when it sees that.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mq_client::{Connection, ConnectionConfig};
use mq_protocol::cluster::AlterPartitionRequest;
use mq_protocol::request::{FetchPartition, FetchRequest, FetchTopic, Request};
use mq_protocol::response::Response;
use mq_protocol::{ErrorCode, Offset};

use crate::manager::TopicPartition;
use crate::server::Broker;

/// Pause after a failed step before trying again.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Bytes fetched at a time.
const COPY_BYTES: i32 = 8 * 1024 * 1024;

/// Copies `topic_partition` from broker `source` under leader epoch `epoch`, then reports
/// to the controller. Runs until done or aborted (the move ended otherwise).
pub(crate) async fn copy(
    broker: Arc<Broker>,
    topic_partition: TopicPartition,
    epoch: i32,
    source: i32,
) {
    tracing::info!(partition = %topic_partition, source, epoch, "copying partition");
    let started = std::time::Instant::now();
    let Some(open) = broker.manager.get(&topic_partition) else {
        return;
    };
    // Whatever an earlier copy left is discarded: the copy starts at the source's log start.
    let mut reset_done = false;
    let mut connection: Option<Connection> = None;
    loop {
        if *broker.shutting_down().borrow() {
            return;
        }
        let Some(address) = broker
            .image()
            .brokers
            .get(&source)
            .filter(|info| !info.fenced)
            .map(|info| info.address())
        else {
            tokio::time::sleep(RETRY_DELAY * 5).await;
            continue;
        };
        let current = match connection
            .as_ref()
            .filter(|held| held.is_alive() && held.address() == address)
        {
            Some(held) => held.clone(),
            None => match Connection::connect(&address, ConnectionConfig::default()).await {
                Ok(fresh) => {
                    connection = Some(fresh.clone());
                    fresh
                }
                Err(error) => {
                    tracing::debug!(%error, "connecting to a move's source failed");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let fetch_offset = open.log.log_end().to_wire();
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: 200,
            min_bytes: 1,
            max_bytes: COPY_BYTES,
            topics: vec![FetchTopic {
                name: topic_partition.topic.to_string(),
                partitions: vec![FetchPartition {
                    partition: topic_partition.partition,
                    current_leader_epoch: epoch,
                    fetch_offset: if reset_done { fetch_offset } else { -1 },
                    partition_max_bytes: COPY_BYTES,
                }],
            }],
        });
        let response = match current.request(request).await {
            Ok(Response::Fetch(response)) => response,
            Ok(_) | Err(_) => {
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let Some(answer) = response
            .topics
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .next()
        else {
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        };
        if !reset_done {
            // The first answer tells where the source's log starts.
            if answer.error_code != ErrorCode::OFFSET_OUT_OF_RANGE && !answer.error_code.is_ok() {
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
            let Some(start) = Offset::from_wire(answer.log_start_offset) else {
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            };
            let log = Arc::clone(&open);
            let reset =
                tokio::task::spawn_blocking(move || log.log.reset_to(start, SystemTime::now()))
                    .await;
            if !matches!(reset, Ok(Ok(()))) {
                tracing::warn!(partition = %topic_partition, "emptying the local copy failed; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
            reset_done = true;
            continue;
        }
        if !answer.error_code.is_ok() {
            // UNKNOWN_LEADER_EPOCH: the source has not applied the move yet.
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        if !answer.records.is_empty() {
            let mut batches = answer.records.to_vec();
            let log = Arc::clone(&open);
            let appended = tokio::task::spawn_blocking(move || {
                log.log.append_copy(&mut batches, SystemTime::now())
            })
            .await;
            let failed = match appended {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(error) = failed {
                tracing::warn!(partition = %topic_partition, error, "appending a copied batch failed; starting over");
                reset_done = false;
                tokio::time::sleep(RETRY_DELAY).await;
            }
            continue;
        }
        if open.log.log_end().to_wire() < answer.high_watermark {
            continue;
        }
        // Everything is here: make it durable, then tell the controller.
        let log = Arc::clone(&open);
        let end = open.log.log_end();
        let flushed = tokio::task::spawn_blocking(move || log.log.flush_to(end)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        let Some(node) = broker.node.as_ref() else {
            return;
        };
        let report = Request::AlterPartition(AlterPartitionRequest {
            node_id: node.node_id(),
            broker_epoch: node.broker_epoch(),
            topic: topic_partition.topic.to_string(),
            partition: topic_partition.partition,
            leader_epoch: epoch,
            log_end: end.to_wire(),
        });
        match node.link().call(report, Duration::from_secs(10)).await {
            Ok(Response::AlterPartition(answer)) if answer.error_code.is_ok() => {
                tracing::info!(
                    partition = %topic_partition,
                    log_end = %end,
                    millis = started.elapsed().as_millis(),
                    "copied partition"
                );
                return;
            }
            Ok(Response::AlterPartition(answer))
                if answer.error_code == ErrorCode::FENCED_LEADER_EPOCH =>
            {
                tracing::info!(partition = %topic_partition, message = answer.error_message, "the move ended otherwise");
                return;
            }
            _ => tokio::time::sleep(RETRY_DELAY).await,
        }
    }
}
