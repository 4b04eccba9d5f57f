//! [`Admin`] against a fake cluster of several nodes: the cluster's view (fenced brokers,
//! racks, the controller), partition moves and rebalances, groups spread over coordinators,
//! and log offsets that only a partition's leader knows.
//!
//! Every node of [`FakeCluster`] answers from one shared state, as the real brokers answer
//! from the metadata log they all follow, but each only for what a real broker knows: the
//! log offsets of the partitions it leads, the groups it coordinates. Connections are served
//! one request at a time (the admin never pipelines).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mq_client::protocol::codec;
use mq_client::protocol::request::{ApiKey, Request};
use mq_client::protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerMetadata, ClusterBroker, DescribeClusterResponse,
    DescribeGroupsResponse, DescribedGroup, ErrorResponse, FindCoordinatorResponse,
    GroupErrorsResponse, ListGroupsResponse, ListedGroup, MetadataResponse, PartitionMetadata,
    PartitionMove as PlannedMove, RebalanceResponse, Response, ResponseHeader, TopicMetadata,
};
use mq_client::{
    Admin, BrokerStatus, Client, ClientConfig, ClientError, ErrorCode, PartitionMove,
    TopicPartition,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{listen, read_request, response_frame};

/// The controller's node id, as in the integration tests' clusters.
const CONTROLLER_ID: i32 = 100;

/// A node of the fake cluster.
struct FakeNode {
    /// Its node id.
    node_id: i32,
    /// Its port on 127.0.0.1.
    port: i32,
    /// Its rack label.
    rack: Option<String>,
    /// Whether the controller fenced it (it is then left out of Metadata).
    fenced: bool,
}

/// What every node answers from.
#[derive(Default)]
struct ClusterState {
    /// The nodes, by node id.
    nodes: BTreeMap<i32, FakeNode>,
    /// Topic `t`'s partitions: leader and log end by partition.
    partitions: Vec<(i32, i64)>,
    /// Groups and the node id of their coordinator.
    groups: BTreeMap<String, i32>,
    /// Extra groups a node lists (a group whose coordinator moved, still listed by the old
    /// one).
    stale_listings: Vec<(i32, String)>,
    /// Whether the nodes speak DescribeCluster (a broker from before cluster mode does not).
    cluster_mode: bool,
    /// Partitions being moved: a second move of one is refused.
    moving: Vec<i32>,
    /// Requests as (node id, api name), in arrival order.
    requests: Vec<(i32, &'static str)>,
}

struct FakeCluster {
    state: Mutex<ClusterState>,
}

impl FakeCluster {
    /// Starts `nodes` nodes (ids 1..=nodes), node 1 in rack `a`, the others without, all
    /// speaking DescribeCluster, with topic `t` of two partitions on each node in turn.
    async fn start(nodes: i32) -> Arc<FakeCluster> {
        let cluster = Arc::new(FakeCluster {
            state: Mutex::new(ClusterState {
                cluster_mode: true,
                ..ClusterState::default()
            }),
        });
        for node_id in 1..=nodes {
            let (listener, address) = listen().await;
            let port: i32 = address.rsplit_once(':').unwrap().1.parse().unwrap();
            let node = FakeNode {
                node_id,
                port,
                rack: (node_id == 1).then(|| "a".to_string()),
                fenced: false,
            };
            let mut state = cluster.state.lock().unwrap();
            state.nodes.insert(node_id, node);
            state.partitions.push((node_id, i64::from(node_id) * 10));
            state
                .partitions
                .push((node_id, i64::from(node_id) * 10 + 1));
            drop(state);
            let serving = Arc::clone(&cluster);
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(Arc::clone(&serving).serve(node_id, stream));
                }
            });
        }
        cluster
    }

    fn address(&self, node_id: i32) -> String {
        format!(
            "127.0.0.1:{}",
            self.state.lock().unwrap().nodes[&node_id].port
        )
    }

    /// An admin whose bootstrap is node `node_id`.
    async fn admin(&self, node_id: i32) -> Admin {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        let client = Client::connect(&self.address(node_id), config)
            .await
            .unwrap();
        Admin::new(client)
    }

    /// The node ids that received requests of `api`, in arrival order.
    fn requests_of(&self, api: &str) -> Vec<i32> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|(_, name)| *name == api)
            .map(|(node_id, _)| *node_id)
            .collect()
    }

    async fn serve(self: Arc<Self>, node_id: i32, mut stream: TcpStream) {
        let mut buffer = BytesMut::new();
        while let Some((header, request)) = read_request(&mut stream, &mut buffer).await {
            let frame = match self.handle(node_id, request) {
                Ok(response) => response_frame(header.correlation_id, &response),
                Err(error_code) => {
                    let header = ResponseHeader {
                        correlation_id: header.correlation_id,
                        error_code,
                        error_message: None,
                    };
                    let payload = codec::response_frame(&header, None);
                    [&(payload.len() as u32).to_be_bytes()[..], &payload[..]].concat()
                }
            };
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    }

    /// Node `node_id`'s answer, or the request-level error code it refuses with.
    fn handle(&self, node_id: i32, request: Request) -> Result<Response, ErrorCode> {
        let mut state = self.state.lock().unwrap();
        state.requests.push((node_id, request.api_key().name()));
        Ok(match request {
            Request::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: ApiKey::ALL
                    .iter()
                    .map(|api_key| ApiVersion {
                        api_key: *api_key,
                        min_version: 0,
                        max_version: 0,
                    })
                    .collect(),
            }),
            Request::Metadata(request) => Response::Metadata(state.metadata(node_id, request)),
            Request::DescribeCluster if !state.cluster_mode => {
                return Err(ErrorCode::UNSUPPORTED_VERSION);
            }
            Request::DescribeCluster => Response::DescribeCluster(state.describe_cluster()),
            Request::FindCoordinator(request) => {
                // A group nobody coordinates yet goes to node 1, as a real cluster hashes
                // the group id to some broker.
                let coordinator_id = state.groups.get(&request.group_id).copied();
                let coordinator = &state.nodes[&coordinator_id.unwrap_or(1)];
                Response::FindCoordinator(FindCoordinatorResponse {
                    error_code: ErrorCode::NONE,
                    node_id: coordinator.node_id,
                    host: "127.0.0.1".into(),
                    port: coordinator.port,
                })
            }
            Request::DescribeGroups(request) => {
                let groups = request
                    .groups
                    .into_iter()
                    .map(|group_id| DescribedGroup {
                        error_code: state.coordinates(node_id, &group_id),
                        state: "Empty".into(),
                        group_id,
                        ..DescribedGroup::default()
                    })
                    .collect();
                Response::DescribeGroups(DescribeGroupsResponse { groups })
            }
            Request::DeleteGroups(request) => {
                let mut groups = Vec::new();
                for group_id in request.groups {
                    let code = state.coordinates(node_id, &group_id);
                    if code == ErrorCode::NONE {
                        state.groups.remove(&group_id);
                    }
                    groups.push((group_id, code));
                }
                Response::DeleteGroups(GroupErrorsResponse { groups })
            }
            Request::ListGroups => Response::ListGroups(state.list_groups(node_id)),
            Request::ReassignPartition(request) => {
                let response = if state.moving.contains(&request.partition) {
                    ErrorResponse::new(
                        ErrorCode::REASSIGNMENT_IN_PROGRESS,
                        format!("{}-{} is moving already", request.topic, request.partition),
                    )
                } else {
                    state.moving.push(request.partition);
                    state.partitions[request.partition as usize].0 = request.target;
                    ErrorResponse::default()
                };
                Response::ReassignPartition(response)
            }
            Request::Rebalance(request) => {
                let moves = vec![PlannedMove {
                    topic: "t".into(),
                    partition: 1,
                    from: 1,
                    to: 2,
                }];
                if !request.dry_run {
                    state.partitions[1].0 = 2;
                }
                Response::Rebalance(RebalanceResponse {
                    error_code: ErrorCode::NONE,
                    error_message: None,
                    moves,
                })
            }
            other => panic!("the fake cluster does not handle {other:?}"),
        })
    }
}

impl ClusterState {
    /// Node `node_id`'s Metadata: live brokers, and log offsets of the partitions it leads.
    fn metadata(
        &self,
        node_id: i32,
        request: mq_client::protocol::request::MetadataRequest,
    ) -> MetadataResponse {
        let wanted = request
            .topics
            .is_none_or(|topics| topics.iter().any(|topic| topic == "t"));
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .map(|(partition, (leader, log_end))| {
                let led = *leader == node_id;
                PartitionMetadata {
                    partition: partition as i32,
                    leader: *leader,
                    replicas: vec![*leader],
                    isr: vec![*leader],
                    log_start_offset: if led { 0 } else { -1 },
                    log_end_offset: if led { *log_end } else { -1 },
                    size_bytes: if led { log_end * 100 } else { -1 },
                    ..PartitionMetadata::default()
                }
            })
            .collect();
        MetadataResponse {
            brokers: self
                .nodes
                .values()
                .filter(|node| !node.fenced)
                .map(|node| BrokerMetadata {
                    node_id: node.node_id,
                    host: "127.0.0.1".into(),
                    port: node.port,
                })
                .collect(),
            controller_id: CONTROLLER_ID,
            topics: wanted
                .then(|| TopicMetadata {
                    error_code: ErrorCode::NONE,
                    name: "t".into(),
                    partitions,
                })
                .into_iter()
                .collect(),
        }
    }

    fn describe_cluster(&self) -> DescribeClusterResponse {
        DescribeClusterResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            controller_id: CONTROLLER_ID,
            controller_address: "127.0.0.1:1".into(),
            metadata_offset: 17,
            brokers: self
                .nodes
                .values()
                .rev()
                .map(|node| ClusterBroker {
                    node_id: node.node_id,
                    host: "127.0.0.1".into(),
                    port: node.port,
                    rack: node.rack.clone(),
                    fenced: node.fenced,
                })
                .collect(),
        }
    }

    /// `NONE` if node `node_id` coordinates `group_id`, else `NOT_COORDINATOR`; a group no
    /// node coordinates is unknown.
    fn coordinates(&self, node_id: i32, group_id: &str) -> ErrorCode {
        match self.groups.get(group_id) {
            Some(coordinator) if *coordinator == node_id => ErrorCode::NONE,
            Some(_) => ErrorCode::NOT_COORDINATOR,
            None => ErrorCode::GROUP_ID_NOT_FOUND,
        }
    }

    fn list_groups(&self, node_id: i32) -> ListGroupsResponse {
        let coordinated = self
            .groups
            .iter()
            .filter(|(_, coordinator)| **coordinator == node_id)
            .map(|(group_id, _)| group_id.clone());
        let stale = self
            .stale_listings
            .iter()
            .filter(|(lister, _)| *lister == node_id)
            .map(|(_, group_id)| group_id.clone());
        ListGroupsResponse {
            error_code: ErrorCode::NONE,
            groups: coordinated
                .chain(stale)
                .map(|group_id| ListedGroup {
                    group_id,
                    state: "Empty".into(),
                    members: 0,
                })
                .collect(),
        }
    }
}

#[tokio::test]
async fn the_cluster_is_described_with_fenced_brokers_and_racks() {
    let cluster = FakeCluster::start(3).await;
    cluster
        .state
        .lock()
        .unwrap()
        .nodes
        .get_mut(&3)
        .unwrap()
        .fenced = true;
    let admin = cluster.admin(2).await;
    let described = admin.describe_cluster().await.unwrap();
    assert_eq!(described.controller_id, Some(CONTROLLER_ID));
    assert_eq!(described.controller_address.as_deref(), Some("127.0.0.1:1"));
    assert_eq!(described.metadata_offset, 17);
    let expected: Vec<BrokerStatus> = (1..=3)
        .map(|node_id| BrokerStatus {
            node_id,
            address: cluster.address(node_id),
            rack: (node_id == 1).then(|| "a".to_string()),
            alive: node_id != 3,
        })
        .collect();
    assert_eq!(described.brokers, expected);
}

#[tokio::test]
async fn a_broker_without_cluster_mode_is_described_from_metadata() {
    let cluster = FakeCluster::start(2).await;
    cluster.state.lock().unwrap().cluster_mode = false;
    let admin = cluster.admin(1).await;
    let described = admin.describe_cluster().await.unwrap();
    assert_eq!(described.controller_id, Some(CONTROLLER_ID));
    assert_eq!(described.controller_address, None, "not among the brokers");
    assert_eq!(described.metadata_offset, -1);
    let nodes: Vec<(i32, bool)> = described
        .brokers
        .iter()
        .map(|broker| (broker.node_id, broker.alive))
        .collect();
    assert_eq!(nodes, [(1, true), (2, true)]);
}

#[tokio::test]
async fn log_offsets_are_asked_of_each_partitions_leader() {
    let cluster = FakeCluster::start(3).await;
    let admin = cluster.admin(1).await;
    let topic = admin.describe_topic("t").await.unwrap();
    let offsets: Vec<(Option<i32>, i64, i64)> = topic
        .partitions
        .iter()
        .map(|partition| {
            (
                partition.leader,
                partition.log_end_offset,
                partition.size_bytes,
            )
        })
        .collect();
    assert_eq!(
        offsets,
        [
            (Some(1), 10, 1000),
            (Some(1), 11, 1100),
            (Some(2), 20, 2000),
            (Some(2), 21, 2100),
            (Some(3), 30, 3000),
            (Some(3), 31, 3100),
        ]
    );
    // The leaders answered for their own partitions: nodes 2 and 3 were asked once each.
    let mut asked = cluster.requests_of("Metadata");
    asked.sort_unstable();
    asked.dedup();
    assert_eq!(asked, [1, 2, 3]);
}

#[tokio::test]
async fn groups_are_listed_from_every_broker_and_handled_by_their_coordinator() {
    let cluster = FakeCluster::start(3).await;
    {
        let mut state = cluster.state.lock().unwrap();
        for (group, coordinator) in [("a", 1), ("b", 2), ("c", 3), ("d", 3)] {
            state.groups.insert(group.to_string(), coordinator);
        }
        // Node 1 still lists "c", whose coordinator moved to node 3.
        state.stale_listings.push((1, "c".to_string()));
    }
    let admin = cluster.admin(1).await;
    let listed: Vec<String> = admin
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|group| group.group_id)
        .collect();
    assert_eq!(listed, ["a", "b", "c", "d"]);
    assert_eq!(cluster.requests_of("ListGroups"), [1, 2, 3]);

    let described = admin.describe_group("b").await.unwrap();
    assert_eq!(
        (described.group_id.as_str(), described.state.as_str()),
        ("b", "Empty")
    );
    assert_eq!(cluster.requests_of("DescribeGroups"), [2]);
    admin.delete_group("d").await.unwrap();
    assert_eq!(cluster.requests_of("DeleteGroups"), [3]);
    let error = admin.delete_group("d").await.unwrap_err();
    assert!(
        matches!(error, ClientError::UnknownGroup { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn reassignments_and_rebalances_reach_the_controller_through_any_broker() {
    let cluster = FakeCluster::start(2).await;
    let admin = cluster.admin(2).await;
    admin.reassign_partition("t", 0, 2).await.unwrap();
    let topic = admin.describe_topic("t").await.unwrap();
    assert_eq!(topic.partition(0).unwrap().leader, Some(2));
    let error = admin.reassign_partition("t", 0, 1).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::REASSIGNMENT_IN_PROGRESS));
    assert_eq!(
        error.to_string(),
        "REASSIGNMENT_IN_PROGRESS (60): the partition is being moved already: \
         t-0 is moving already"
    );

    let planned = PartitionMove {
        topic_partition: TopicPartition::new("t", 1),
        source: 1,
        target: 2,
    };
    assert_eq!(
        admin.rebalance(true).await.unwrap(),
        std::slice::from_ref(&planned)
    );
    let topic = admin.describe_topic("t").await.unwrap();
    assert_eq!(
        topic.partition(1).unwrap().leader,
        Some(1),
        "a dry run moves nothing"
    );
    assert_eq!(admin.rebalance(false).await.unwrap(), [planned]);
    let topic = admin.describe_topic("t").await.unwrap();
    assert_eq!(topic.partition(1).unwrap().leader, Some(2));
}
