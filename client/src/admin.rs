//! [`Admin`]: topics and cluster state: create, delete, list, describe, add partitions; the
//! cluster (in `cluster.rs`): its brokers, partition moves, rebalances; and consumer groups
//! (in `groups.rs`): list, describe, delete, committed offsets.
//!
//! Every call asks the cluster afresh (nothing is answered from the metadata cache), and
//! every change refreshes the cache afterwards, so that a producer on the same client sees a
//! new topic at once. Per-topic error codes become the matching [`ClientError`] variant:
//! [`ClientError::UnknownTopic`], [`ClientError::TopicAlreadyExists`], else
//! [`ClientError::Broker`] with the broker's message.

mod cluster;
mod groups;

pub use cluster::{BrokerStatus, ClusterDescription, PartitionMove};
pub use groups::{CommittedOffset, GroupDescription, GroupListing, MemberDescription, OffsetSpec};

use std::collections::BTreeSet;

use mq_protocol::request::{
    CreatableTopic, CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest,
    DeleteTopicsRequest, MetadataRequest, Request,
};
use mq_protocol::response::{MetadataResponse, Response, TopicError, TopicErrorsResponse};
use mq_protocol::ErrorCode;

use crate::client::{topics_of, Broker, Client, Cluster, TopicDescription};
use crate::error::ClientError;

/// Administers topics and reads cluster state.
///
/// ```no_run
/// use mq_client::{Admin, Client, ClientConfig, ClientError};
///
/// # async fn example() -> Result<(), ClientError> {
/// let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
/// let admin = Admin::new(client);
/// let configs = [("retention_ms".to_string(), "3600000".to_string())];
/// match admin.create_topic("orders", 3, 1, &configs).await {
///     Ok(()) | Err(ClientError::TopicAlreadyExists { .. }) => {}
///     Err(error) => return Err(error),
/// }
/// let orders = admin.describe_topic("orders").await?;
/// for partition in &orders.partitions {
///     println!("{}: leader {:?}", partition.partition, partition.leader);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    /// The cluster.
    client: Client,
}

impl Admin {
    /// An admin working through `client`.
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// Creates topic `name` with `partitions` partitions of `replication_factor` replicas
    /// each (-1 for the broker's default, either), and `configs` (`retention_ms`,
    /// `segment_bytes`, ...) overriding the broker's topic defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs.to_vec(),
            }],
            timeout_ms: self.timeout_ms(),
        });
        let response = self.client.request_any(request).await?;
        let Response::CreateTopics(response) = response else {
            return Err(ClientError::UnexpectedResponse {
                api: "CreateTopics",
            });
        };
        topic_result(name, &response)?;
        self.refresh().await;
        Ok(())
    }

    /// Deletes topic `name` and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: self.timeout_ms(),
        });
        let response = self.client.request_any(request).await?;
        let Response::DeleteTopics(response) = response else {
            return Err(ClientError::UnexpectedResponse {
                api: "DeleteTopics",
            });
        };
        topic_result(name, &response)?;
        self.refresh().await;
        Ok(())
    }

    /// Grows topic `name` to `new_total` partitions (partitions are never removed).
    pub async fn add_partitions(&self, name: &str, new_total: i32) -> Result<(), ClientError> {
        let request = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.to_string(),
                count: new_total,
            }],
            timeout_ms: self.timeout_ms(),
        });
        let response = self.client.request_any(request).await?;
        let Response::CreatePartitions(response) = response else {
            return Err(ClientError::UnexpectedResponse {
                api: "CreatePartitions",
            });
        };
        topic_result(name, &response)?;
        self.refresh().await;
        Ok(())
    }

    /// Every topic, with its partitions, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        let response = self.metadata(None).await?;
        let mut topics = Vec::new();
        for (code, topic) in topics_of(&response) {
            if code != ErrorCode::NONE {
                return Err(topic_error(&topic.name, code, None));
            }
            topics.push(topic);
        }
        topics.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(topics)
    }

    /// Topic `name`: its partitions with their leaders, replicas, log start and end offsets
    /// and sizes.
    ///
    /// A broker knows the log offsets and sizes only of the partitions it leads (-1 for the
    /// others), so those are asked of each partition's leader. They stay -1 for a partition
    /// without a leader, or whose leader does not answer.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let response = self.metadata(Some(vec![name.to_string()])).await?;
        let found = topics_of(&response)
            .into_iter()
            .find(|(_, topic)| topic.name == name);
        match found {
            Some((ErrorCode::NONE, mut topic)) => {
                self.fill_log_offsets(&response, &mut topic).await;
                Ok(topic)
            }
            Some((code, _)) => Err(topic_error(name, code, None)),
            None => Err(ClientError::UnexpectedResponse { api: "Metadata" }),
        }
    }

    /// Fills in the log offsets and sizes that the broker answering `response` did not know,
    /// from each partition's leader (one Metadata request per leader).
    async fn fill_log_offsets(&self, response: &MetadataResponse, topic: &mut TopicDescription) {
        let leaders: BTreeSet<i32> = topic
            .partitions
            .iter()
            .filter(|partition| partition.log_end_offset < 0)
            .filter_map(|partition| partition.leader)
            .collect();
        for leader in leaders {
            let Some(broker) = response
                .brokers
                .iter()
                .find(|broker| broker.node_id == leader)
            else {
                continue;
            };
            let address = Broker {
                node_id: broker.node_id,
                host: broker.host.clone(),
                port: broker.port,
            }
            .address();
            let request = Request::Metadata(MetadataRequest {
                topics: Some(vec![topic.name.clone()]),
            });
            match self.client.request_to(&address, request).await {
                Ok(Response::Metadata(leader_view)) => {
                    merge_log_offsets(topic, leader, &leader_view);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(address, %error, "leader did not describe its partitions");
                }
            }
        }
    }

    /// The live brokers and the controller.
    pub async fn cluster(&self) -> Result<Cluster, ClientError> {
        let response = self.metadata(Some(Vec::new())).await?;
        let mut brokers: Vec<Broker> = response
            .brokers
            .into_iter()
            .map(|broker| Broker {
                node_id: broker.node_id,
                host: broker.host,
                port: broker.port,
            })
            .collect();
        brokers.sort_by_key(|broker| broker.node_id);
        Ok(Cluster {
            brokers,
            controller_id: (response.controller_id >= 0).then_some(response.controller_id),
        })
    }

    async fn metadata(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse, ClientError> {
        match self
            .client
            .request_any(Request::Metadata(MetadataRequest { topics }))
            .await?
        {
            Response::Metadata(response) => Ok(response),
            _ => Err(ClientError::UnexpectedResponse { api: "Metadata" }),
        }
    }

    /// Refreshes the client's cache after a change; a failure only delays when others see
    /// the change, so it is logged, not returned.
    async fn refresh(&self) {
        if let Err(error) = self.client.refresh_metadata().await {
            tracing::debug!(%error, "metadata refresh after admin change failed");
        }
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.config().request_timeout.as_millis()).unwrap_or(i32::MAX)
    }
}

/// The outcome for topic `name` in a CreateTopics, DeleteTopics or CreatePartitions answer.
fn topic_result(name: &str, response: &TopicErrorsResponse) -> Result<(), ClientError> {
    let found: Option<&TopicError> = response.topics.iter().find(|topic| topic.name == name);
    match found {
        Some(topic) if topic.error_code == ErrorCode::NONE => Ok(()),
        Some(topic) => Err(topic_error(
            name,
            topic.error_code,
            topic.error_message.clone(),
        )),
        None => Err(ClientError::UnexpectedResponse { api: "topic admin" }),
    }
}

/// Copies into `topic` the log offsets and sizes of the partitions that broker `leader` leads
/// (by both views) and reports in `leader_view`, its answer to Metadata.
fn merge_log_offsets(topic: &mut TopicDescription, leader: i32, leader_view: &MetadataResponse) {
    let Some(known) = leader_view
        .topics
        .iter()
        .find(|known| known.error_code == ErrorCode::NONE && known.name == topic.name)
    else {
        return;
    };
    for known in &known.partitions {
        let slot = topic
            .partitions
            .iter_mut()
            .find(|partition| partition.partition == known.partition);
        let Some(slot) = slot else {
            continue;
        };
        let led = known.leader == leader && slot.leader == Some(leader);
        if led && known.log_end_offset >= 0 && slot.log_end_offset < 0 {
            slot.log_start_offset = known.log_start_offset;
            slot.log_end_offset = known.log_end_offset;
            slot.size_bytes = known.size_bytes;
        }
    }
}

/// The error for a per-topic error code.
fn topic_error(name: &str, code: ErrorCode, message: Option<String>) -> ClientError {
    match code {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => ClientError::UnknownTopic {
            topic: name.to_string(),
        },
        ErrorCode::TOPIC_ALREADY_EXISTS => ClientError::TopicAlreadyExists {
            topic: name.to_string(),
        },
        code => ClientError::broker(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::response::{PartitionMetadata, TopicMetadata};

    fn response(code: ErrorCode, message: Option<&str>) -> TopicErrorsResponse {
        TopicErrorsResponse {
            topics: vec![TopicError {
                name: "x".into(),
                error_code: code,
                error_message: message.map(str::to_string),
            }],
        }
    }

    #[test]
    fn topic_error_codes_map_to_variants() {
        assert!(topic_result("x", &response(ErrorCode::NONE, None)).is_ok());
        let error = topic_result(
            "x",
            &response(ErrorCode::TOPIC_ALREADY_EXISTS, Some("exists")),
        );
        assert_eq!(error.unwrap_err().to_string(), "topic 'x' already exists");
        let error = topic_result("x", &response(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None));
        assert_eq!(error.unwrap_err().to_string(), "topic 'x' does not exist");
        let error = topic_result(
            "x",
            &response(ErrorCode::INVALID_PARTITIONS, Some("must grow")),
        );
        assert_eq!(
            error.unwrap_err().to_string(),
            "INVALID_PARTITIONS (37): the partition count is invalid: must grow"
        );
        assert!(matches!(
            topic_result("y", &response(ErrorCode::NONE, None)),
            Err(ClientError::UnexpectedResponse { .. })
        ));
    }

    fn partition(partition: i32, leader: i32, log_end_offset: i64) -> PartitionMetadata {
        PartitionMetadata {
            error_code: ErrorCode::NONE,
            partition,
            leader,
            log_start_offset: log_end_offset.min(0),
            log_end_offset,
            size_bytes: log_end_offset * 10,
            ..PartitionMetadata::default()
        }
    }

    fn view(partitions: Vec<PartitionMetadata>) -> MetadataResponse {
        MetadataResponse {
            brokers: Vec::new(),
            controller_id: 100,
            topics: vec![TopicMetadata {
                error_code: ErrorCode::NONE,
                name: "t".into(),
                partitions,
            }],
        }
    }

    #[test]
    fn log_offsets_come_from_the_partitions_leaders() {
        // Broker 1 answered: it knows its own partition 0 only.
        let answered = view(vec![
            partition(0, 1, 5),
            partition(1, 2, -1),
            partition(2, 3, -1),
            partition(3, -1, -1),
        ]);
        let mut topic = topics_of(&answered).remove(0).1;
        // Broker 2 knows partition 1, and says it leads partition 2 (it moved since).
        let leader_view = view(vec![
            partition(0, 1, -1),
            partition(1, 2, 7),
            partition(2, 2, 9),
        ]);
        merge_log_offsets(&mut topic, 2, &leader_view);
        let ends: Vec<(i64, i64)> = topic
            .partitions
            .iter()
            .map(|partition| (partition.log_end_offset, partition.size_bytes))
            .collect();
        assert_eq!(ends, [(5, 50), (7, 70), (-1, -10), (-1, -10)]);
    }
}
