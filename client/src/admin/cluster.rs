//! The cluster side of [`Admin`]: describe every registered broker (fenced ones included)
//! and the controller, move a partition to another broker, even out partitions across
//! brokers.
//!
//! ReassignPartition and Rebalance may go to any broker, which forwards them to the
//! controller. They are answered once the controller has started the moves (or, for a dry
//! run, planned them), not once the moves are done: callers watch the partitions' leaders in
//! metadata for that. Neither is retried here, because a retry after a lost answer finds the
//! move under way (`REASSIGNMENT_IN_PROGRESS`), which only the caller can judge.

use mq_protocol::request::{ReassignPartitionRequest, RebalanceRequest, Request};
use mq_protocol::response::{DescribeClusterResponse, ErrorResponse, RebalanceResponse, Response};
use mq_protocol::ErrorCode;

use super::Admin;
use crate::client::{Broker, Cluster, TopicPartition};
use crate::error::ClientError;

/// The cluster's brokers and controller, from [`Admin::describe_cluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The controller's node id; `None` when the cluster has none right now.
    pub controller_id: Option<i32>,
    /// The controller's `host:port`, as the answering broker reaches it; `None` when unknown.
    pub controller_address: Option<String>,
    /// How far the answering broker has applied the metadata log; -1 from a broker without
    /// cluster mode.
    pub metadata_offset: i64,
    /// Every registered broker, alive or fenced, by node id.
    pub brokers: Vec<BrokerStatus>,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStatus {
    /// Its node id.
    pub node_id: i32,
    /// The `host:port` clients connect to.
    pub address: String,
    /// Its rack label, if it has one.
    pub rack: Option<String>,
    /// Whether its session with the controller is current; a fenced broker leads nothing.
    pub alive: bool,
}

/// One partition move of a rebalance, from [`Admin::rebalance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMove {
    /// The partition that moves.
    pub topic_partition: TopicPartition,
    /// The node id of the broker it leaves.
    pub source: i32,
    /// The node id of the broker it goes to.
    pub target: i32,
}

impl Admin {
    /// Every registered broker (fenced ones included, which Metadata leaves out), with its
    /// rack, and the controller. A broker without cluster mode (it does not speak
    /// DescribeCluster) is described from Metadata: its live brokers, no racks.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        match self.client.request_any(Request::DescribeCluster).await {
            Ok(Response::DescribeCluster(response)) => describe_cluster(response),
            Ok(_) => Err(ClientError::UnexpectedResponse {
                api: "DescribeCluster",
            }),
            Err(error) if error.code() == Some(ErrorCode::UNSUPPORTED_VERSION) => {
                Ok(describe_metadata_cluster(self.cluster().await?))
            }
            Err(error) => Err(error),
        }
    }

    /// Asks the controller to move partition `partition` of `topic` to broker `target` (a
    /// node id). Returns once the move has started; the partition is unavailable while its
    /// data is copied, and its leader is `target` once it is done.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: i32,
        target: i32,
    ) -> Result<(), ClientError> {
        let request = Request::ReassignPartition(ReassignPartitionRequest {
            topic: topic.to_string(),
            partition,
            target,
        });
        let Response::ReassignPartition(response) = self.client.request_any(request).await? else {
            return Err(ClientError::UnexpectedResponse {
                api: "ReassignPartition",
            });
        };
        error_result(response)
    }

    /// Asks the controller to even out partitions and leaders across the live brokers, and
    /// returns its moves in the order it makes them (one at a time); empty when the cluster
    /// is balanced. With `dry_run`, only plans: nothing moves.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<PartitionMove>, ClientError> {
        let request = Request::Rebalance(RebalanceRequest { dry_run });
        let Response::Rebalance(response) = self.client.request_any(request).await? else {
            return Err(ClientError::UnexpectedResponse { api: "Rebalance" });
        };
        rebalance_moves(response)
    }
}

/// Converts a DescribeCluster answer.
fn describe_cluster(response: DescribeClusterResponse) -> Result<ClusterDescription, ClientError> {
    if response.error_code != ErrorCode::NONE {
        return Err(ClientError::broker(
            response.error_code,
            response.error_message,
        ));
    }
    let mut brokers: Vec<BrokerStatus> = response
        .brokers
        .into_iter()
        .map(|broker| BrokerStatus {
            address: Broker {
                node_id: broker.node_id,
                host: broker.host,
                port: broker.port,
            }
            .address(),
            node_id: broker.node_id,
            rack: broker.rack,
            alive: !broker.fenced,
        })
        .collect();
    brokers.sort_by_key(|broker| broker.node_id);
    Ok(ClusterDescription {
        controller_id: (response.controller_id >= 0).then_some(response.controller_id),
        controller_address: (!response.controller_address.is_empty())
            .then_some(response.controller_address),
        metadata_offset: response.metadata_offset,
        brokers,
    })
}

/// The description of a cluster without cluster mode: its live brokers, from Metadata.
fn describe_metadata_cluster(cluster: Cluster) -> ClusterDescription {
    let controller_address = cluster
        .brokers
        .iter()
        .find(|broker| Some(broker.node_id) == cluster.controller_id)
        .map(Broker::address);
    ClusterDescription {
        controller_id: cluster.controller_id,
        controller_address,
        metadata_offset: -1,
        brokers: cluster
            .brokers
            .iter()
            .map(|broker| BrokerStatus {
                node_id: broker.node_id,
                address: broker.address(),
                rack: None,
                alive: true,
            })
            .collect(),
    }
}

/// Converts a Rebalance answer.
fn rebalance_moves(response: RebalanceResponse) -> Result<Vec<PartitionMove>, ClientError> {
    if response.error_code != ErrorCode::NONE {
        return Err(ClientError::broker(
            response.error_code,
            response.error_message,
        ));
    }
    Ok(response
        .moves
        .into_iter()
        .map(|planned| PartitionMove {
            topic_partition: TopicPartition::new(planned.topic, planned.partition),
            source: planned.from,
            target: planned.to,
        })
        .collect())
}

/// The outcome of an answer that is only an error code.
fn error_result(response: ErrorResponse) -> Result<(), ClientError> {
    match response.error_code {
        ErrorCode::NONE => Ok(()),
        code => Err(ClientError::broker(code, response.error_message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::response::{ClusterBroker, PartitionMove as PlannedMove};

    fn broker(node_id: i32, host: &str, rack: Option<&str>, fenced: bool) -> ClusterBroker {
        ClusterBroker {
            node_id,
            host: host.to_string(),
            port: 9700 + node_id,
            rack: rack.map(str::to_string),
            fenced,
        }
    }

    #[test]
    fn described_brokers_are_sorted_with_racks_and_fencing() {
        let response = DescribeClusterResponse {
            controller_id: 100,
            controller_address: "10.0.0.9:9800".into(),
            metadata_offset: 42,
            brokers: vec![
                broker(2, "::1", None, true),
                broker(1, "10.0.0.1", Some("a"), false),
            ],
            ..DescribeClusterResponse::default()
        };
        let described = describe_cluster(response).unwrap();
        assert_eq!(
            described,
            ClusterDescription {
                controller_id: Some(100),
                controller_address: Some("10.0.0.9:9800".into()),
                metadata_offset: 42,
                brokers: vec![
                    BrokerStatus {
                        node_id: 1,
                        address: "10.0.0.1:9701".into(),
                        rack: Some("a".into()),
                        alive: true,
                    },
                    BrokerStatus {
                        node_id: 2,
                        address: "[::1]:9702".into(),
                        rack: None,
                        alive: false,
                    },
                ],
            }
        );
    }

    #[test]
    fn a_cluster_without_controller_has_neither_id_nor_address() {
        let response = DescribeClusterResponse {
            controller_id: -1,
            ..DescribeClusterResponse::default()
        };
        let described = describe_cluster(response).unwrap();
        assert_eq!(
            (described.controller_id, described.controller_address),
            (None, None)
        );
    }

    #[test]
    fn error_codes_become_broker_errors_with_their_messages() {
        let refused = ErrorResponse::new(ErrorCode::REASSIGNMENT_IN_PROGRESS, "t-0 is moving");
        assert_eq!(
            error_result(refused).unwrap_err().to_string(),
            "REASSIGNMENT_IN_PROGRESS (60): the partition is being moved already: t-0 is moving"
        );
        assert!(error_result(ErrorResponse::default()).is_ok());
        let response = DescribeClusterResponse {
            error_code: ErrorCode::BROKER_NOT_AVAILABLE,
            ..DescribeClusterResponse::default()
        };
        assert_eq!(
            describe_cluster(response).unwrap_err().code(),
            Some(ErrorCode::BROKER_NOT_AVAILABLE)
        );
        let response = RebalanceResponse {
            error_code: ErrorCode::NOT_CONTROLLER,
            error_message: Some("the controller moved".into()),
            moves: Vec::new(),
        };
        let error = rebalance_moves(response).unwrap_err();
        assert!(error.is_retriable());
    }

    #[test]
    fn planned_moves_keep_their_order() {
        let planned = |topic: &str, partition, from, to| PlannedMove {
            topic: topic.to_string(),
            partition,
            from,
            to,
        };
        let response = RebalanceResponse {
            moves: vec![planned("b", 3, 1, 2), planned("a", 0, 2, 3)],
            ..RebalanceResponse::default()
        };
        let moves = rebalance_moves(response).unwrap();
        assert_eq!(
            moves,
            [
                PartitionMove {
                    topic_partition: TopicPartition::new("b", 3),
                    source: 1,
                    target: 2,
                },
                PartitionMove {
                    topic_partition: TopicPartition::new("a", 0),
                    source: 2,
                    target: 3,
                },
            ]
        );
    }

    #[test]
    fn a_metadata_cluster_lists_live_brokers_and_finds_the_controller() {
        let cluster = Cluster {
            brokers: vec![Broker {
                node_id: 1,
                host: "h".into(),
                port: 9,
            }],
            controller_id: Some(1),
        };
        let described = describe_metadata_cluster(cluster);
        assert_eq!(described.controller_address.as_deref(), Some("h:9"));
        assert_eq!(described.metadata_offset, -1);
        assert!(described.brokers[0].alive);
    }
}
