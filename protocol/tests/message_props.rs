//! Property tests of the request and response codecs: every message decodes to what was
//! encoded, through a bare frame and through [`FrameCodec`]'s length prefix, and no input
//! whatsoever makes a decoder panic.
//!
//! Method: proptest generates every `Request` and `Response` variant with arbitrary field
//! values (any UTF-8 strings, null and present options, empty and short arrays, any integers
//! and error codes, byte blobs for records), encodes it with `codec::request_frame` or
//! `codec::response_frame`, and decodes it back as a receiver would. The robustness properties
//! decode arbitrary bytes, message-shaped bytes (small counts and lengths, so decoding gets
//! past the first array), every strict prefix of a valid frame, and valid frames with one
//! byte changed. A failure prints its minimal case, and proptest stores the seed under
//! `proptest-regressions/` to replay it first on the next run; `PROPTEST_CASES` raises the
//! case counts for a longer soak.

// Test code: helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use mq_protocol::codec::{self, FrameCodec};
use mq_protocol::group::{
    DescribeGroupsResponse, DescribedGroup, DescribedMember, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupErrorResponse, GroupErrorsResponse, GroupsRequest,
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsResponse,
    ListedGroup, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic,
    OffsetFetchPartition, OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopic,
    PartitionErrorsResponse, SyncGroupRequest, SyncGroupResponse, TopicPartitionErrors,
    TopicPartitions,
};
use mq_protocol::request::{
    ApiKey, CreatableTopic, CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest,
    DeleteTopicsRequest, FetchPartition, FetchRequest, FetchTopic, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic, MetadataRequest, ProducePartition, ProduceRequest,
    ProduceTopic, Request, RequestHeader,
};
use mq_protocol::response::{
    ApiVersion, ApiVersionsResponse, BrokerMetadata, FetchPartitionResponse, FetchResponse,
    FetchTopicResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
    ListOffsetsTopicResponse, MetadataResponse, PartitionMetadata, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, Response, ResponseHeader, TopicError,
    TopicErrorsResponse, TopicMetadata,
};
use mq_protocol::wire::Reader;
use mq_protocol::{DecodeError, ErrorCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tokio_util::codec::{Decoder, Encoder};

// ---------------------------------------------------------------------------------------------
// Field strategies

/// Any UTF-8 (every `char`, not only printable ones), up to 40 characters (160 bytes).
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..40).prop_map(String::from_iter)
}

fn optional_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// Arrays of 0 to 3 elements.
fn list<T: Strategy>(element: T) -> impl Strategy<Value = Vec<T::Value>> {
    vec(element, 0..4)
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..200)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<i16>().prop_map(ErrorCode)
}

// ---------------------------------------------------------------------------------------------
// Requests

fn metadata_request() -> impl Strategy<Value = Request> {
    proptest::option::of(list(text()))
        .prop_map(|topics| Request::Metadata(MetadataRequest { topics }))
}

fn create_topics_request() -> impl Strategy<Value = Request> {
    let topic = (text(), any::<i32>(), any::<i16>(), list((text(), text()))).prop_map(
        |(name, partitions, replication_factor, configs)| CreatableTopic {
            name,
            partitions,
            replication_factor,
            configs,
        },
    );
    (list(topic), any::<i32>()).prop_map(|(topics, timeout_ms)| {
        Request::CreateTopics(CreateTopicsRequest { topics, timeout_ms })
    })
}

fn delete_topics_request() -> impl Strategy<Value = Request> {
    (list(text()), any::<i32>()).prop_map(|(names, timeout_ms)| {
        Request::DeleteTopics(DeleteTopicsRequest { names, timeout_ms })
    })
}

fn create_partitions_request() -> impl Strategy<Value = Request> {
    let topic =
        (text(), any::<i32>()).prop_map(|(name, count)| CreatePartitionsTopic { name, count });
    (list(topic), any::<i32>()).prop_map(|(topics, timeout_ms)| {
        Request::CreatePartitions(CreatePartitionsRequest { topics, timeout_ms })
    })
}

fn produce_request() -> impl Strategy<Value = Request> {
    let partition =
        (any::<i32>(), any::<i32>(), blob()).prop_map(|(partition, leader_epoch, records)| {
            ProducePartition {
                partition,
                leader_epoch,
                records: BytesMut::from(&records[..]),
            }
        });
    let topic =
        (text(), list(partition)).prop_map(|(name, partitions)| ProduceTopic { name, partitions });
    (any::<i16>(), any::<i32>(), list(topic)).prop_map(|(acks, timeout_ms, topics)| {
        Request::Produce(ProduceRequest {
            acks,
            timeout_ms,
            topics,
        })
    })
}

fn fetch_request() -> impl Strategy<Value = Request> {
    let partition = (any::<i32>(), any::<i32>(), any::<i64>(), any::<i32>()).prop_map(
        |(partition, current_leader_epoch, fetch_offset, partition_max_bytes)| FetchPartition {
            partition,
            current_leader_epoch,
            fetch_offset,
            partition_max_bytes,
        },
    );
    let topic =
        (text(), list(partition)).prop_map(|(name, partitions)| FetchTopic { name, partitions });
    (any::<i32>(), any::<i32>(), any::<i32>(), list(topic)).prop_map(
        |(max_wait_ms, min_bytes, max_bytes, topics)| {
            Request::Fetch(FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                topics,
            })
        },
    )
}

fn list_offsets_request() -> impl Strategy<Value = Request> {
    let timestamp = prop_oneof![
        Just(ListOffsetsPartition::LATEST),
        Just(ListOffsetsPartition::EARLIEST),
        any::<i64>(),
    ];
    let partition =
        (any::<i32>(), timestamp).prop_map(|(partition, timestamp)| ListOffsetsPartition {
            partition,
            timestamp,
        });
    let topic = (text(), list(partition))
        .prop_map(|(name, partitions)| ListOffsetsTopic { name, partitions });
    list(topic).prop_map(|topics| Request::ListOffsets(ListOffsetsRequest { topics }))
}

fn topic_partitions() -> impl Strategy<Value = TopicPartitions> {
    (text(), list(any::<i32>()))
        .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions })
}

/// The consumer-group requests.
fn group_request() -> impl Strategy<Value = Request> {
    let commit_partition =
        (any::<i32>(), any::<i64>(), optional_text()).prop_map(|(partition, offset, metadata)| {
            OffsetCommitPartition {
                partition,
                offset,
                metadata,
            }
        });
    let commit_topic = (text(), list(commit_partition))
        .prop_map(|(name, partitions)| OffsetCommitTopic { name, partitions });
    prop_oneof![
        (text(), any::<i32>(), text(), list(commit_topic)).prop_map(
            |(group_id, generation_id, member_id, topics)| {
                Request::OffsetCommit(OffsetCommitRequest {
                    group_id,
                    generation_id,
                    member_id,
                    topics,
                })
            }
        ),
        (text(), proptest::option::of(list(topic_partitions()))).prop_map(|(group_id, topics)| {
            Request::OffsetFetch(OffsetFetchRequest { group_id, topics })
        }),
        text().prop_map(|group_id| Request::FindCoordinator(FindCoordinatorRequest { group_id })),
        (
            text(),
            any::<i32>(),
            any::<i32>(),
            text(),
            list(text()),
            list(text())
        )
            .prop_map(
                |(
                    group_id,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    member_id,
                    topics,
                    assignors,
                )| {
                    Request::JoinGroup(JoinGroupRequest {
                        group_id,
                        session_timeout_ms,
                        rebalance_timeout_ms,
                        member_id,
                        topics,
                        assignors,
                    })
                }
            ),
        (text(), any::<i32>(), text(), any::<i32>()).prop_map(
            |(group_id, generation_id, member_id, max_wait_ms)| {
                Request::Heartbeat(HeartbeatRequest {
                    group_id,
                    generation_id,
                    member_id,
                    max_wait_ms,
                })
            }
        ),
        (text(), text()).prop_map(|(group_id, member_id)| {
            Request::LeaveGroup(LeaveGroupRequest {
                group_id,
                member_id,
            })
        }),
        (text(), any::<i32>(), text()).prop_map(|(group_id, generation_id, member_id)| {
            Request::SyncGroup(SyncGroupRequest {
                group_id,
                generation_id,
                member_id,
            })
        }),
        list(text()).prop_map(|groups| Request::DescribeGroups(GroupsRequest { groups })),
        Just(Request::ListGroups),
        list(text()).prop_map(|groups| Request::DeleteGroups(GroupsRequest { groups })),
    ]
}

/// The cluster's requests (`mq_protocol::cluster`).
fn cluster_request() -> impl Strategy<Value = Request> {
    use mq_protocol::cluster::*;
    prop_oneof![
        (
            any::<i32>(),
            text(),
            any::<i32>(),
            optional_text(),
            any::<i64>()
        )
            .prop_map(|(node_id, host, port, rack, incarnation)| {
                Request::BrokerRegistration(BrokerRegistrationRequest {
                    node_id,
                    host,
                    port,
                    rack,
                    incarnation,
                })
            }),
        (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(
            |(node_id, broker_epoch, metadata_offset)| {
                Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                    node_id,
                    broker_epoch,
                    metadata_offset,
                })
            }
        ),
        (
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i32>(),
            any::<i32>()
        )
            .prop_map(|(node_id, broker_epoch, offset, max_wait_ms, max_bytes)| {
                Request::FetchMetadata(FetchMetadataRequest {
                    node_id,
                    broker_epoch,
                    offset,
                    max_wait_ms,
                    max_bytes,
                })
            }),
        Just(Request::DescribeCluster),
        (text(), any::<i32>(), any::<i32>()).prop_map(|(topic, partition, target)| {
            Request::ReassignPartition(ReassignPartitionRequest {
                topic,
                partition,
                target,
            })
        }),
        (
            any::<i32>(),
            any::<i64>(),
            text(),
            any::<i32>(),
            any::<i32>(),
            any::<i64>()
        )
            .prop_map(
                |(node_id, broker_epoch, topic, partition, leader_epoch, log_end)| {
                    Request::AlterPartition(AlterPartitionRequest {
                        node_id,
                        broker_epoch,
                        topic,
                        partition,
                        leader_epoch,
                        log_end,
                    })
                }
            ),
        any::<bool>().prop_map(|dry_run| Request::Rebalance(RebalanceRequest { dry_run })),
    ]
}

/// The cluster's responses.
fn cluster_response() -> impl Strategy<Value = Response> {
    use mq_protocol::cluster::*;
    let error = || {
        (error_code(), optional_text()).prop_map(|(error_code, error_message)| ErrorResponse {
            error_code,
            error_message,
        })
    };
    prop_oneof![
        (error_code(), optional_text(), any::<i64>(), any::<i32>()).prop_map(
            |(error_code, error_message, broker_epoch, controller_id)| {
                Response::BrokerRegistration(BrokerRegistrationResponse {
                    error_code,
                    error_message,
                    broker_epoch,
                    controller_id,
                })
            }
        ),
        (error_code(), optional_text(), any::<bool>()).prop_map(
            |(error_code, error_message, fenced)| {
                Response::BrokerHeartbeat(BrokerHeartbeatResponse {
                    error_code,
                    error_message,
                    fenced,
                })
            }
        ),
        (
            error_code(),
            optional_text(),
            any::<i64>(),
            any::<i64>(),
            blob()
        )
            .prop_map(|(error_code, error_message, log_start, log_end, records)| {
                Response::FetchMetadata(FetchMetadataResponse {
                    error_code,
                    error_message,
                    log_start,
                    log_end,
                    records: Bytes::from(records),
                })
            }),
        (
            error_code(),
            optional_text(),
            any::<i32>(),
            text(),
            any::<i64>(),
            list((
                any::<i32>(),
                text(),
                any::<i32>(),
                optional_text(),
                any::<bool>()
            ))
        )
            .prop_map(
                |(
                    error_code,
                    error_message,
                    controller_id,
                    controller_address,
                    metadata_offset,
                    brokers,
                )| {
                    Response::DescribeCluster(DescribeClusterResponse {
                        error_code,
                        error_message,
                        controller_id,
                        controller_address,
                        metadata_offset,
                        brokers: brokers
                            .into_iter()
                            .map(|(node_id, host, port, rack, fenced)| ClusterBroker {
                                node_id,
                                host,
                                port,
                                rack,
                                fenced,
                            })
                            .collect(),
                    })
                }
            ),
        error().prop_map(Response::ReassignPartition),
        error().prop_map(Response::AlterPartition),
        (
            error_code(),
            optional_text(),
            list((text(), any::<i32>(), any::<i32>(), any::<i32>()))
        )
            .prop_map(|(error_code, error_message, moves)| {
                Response::Rebalance(RebalanceResponse {
                    error_code,
                    error_message,
                    moves: moves
                        .into_iter()
                        .map(|(topic, partition, from, to)| PartitionMove {
                            topic,
                            partition,
                            from,
                            to,
                        })
                        .collect(),
                })
            }),
    ]
}

/// Every request variant; each older API as likely as all the group APIs together.
fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        group_request(),
        cluster_request(),
        Just(Request::ApiVersions),
        metadata_request(),
        create_topics_request(),
        delete_topics_request(),
        create_partitions_request(),
        produce_request(),
        fetch_request(),
        list_offsets_request(),
    ]
}

/// A request with a version-0 header of its API.
fn request_message() -> impl Strategy<Value = (RequestHeader, Request)> {
    (request(), any::<i32>(), optional_text()).prop_map(|(request, correlation_id, client_id)| {
        let header = RequestHeader {
            api_key: request.api_key(),
            api_version: 0,
            correlation_id,
            client_id,
        };
        (header, request)
    })
}

// ---------------------------------------------------------------------------------------------
// Responses

fn api_versions_response() -> impl Strategy<Value = Response> {
    let api = (any::<i16>(), any::<i16>(), any::<i16>()).prop_map(
        |(api_key, min_version, max_version)| ApiVersion {
            api_key: ApiKey(api_key),
            min_version,
            max_version,
        },
    );
    list(api).prop_map(|apis| Response::ApiVersions(ApiVersionsResponse { apis }))
}

fn metadata_response() -> impl Strategy<Value = Response> {
    let broker =
        (any::<i32>(), text(), any::<i32>()).prop_map(|(node_id, host, port)| BrokerMetadata {
            node_id,
            host,
            port,
        });
    let partition = (
        error_code(),
        any::<i32>(),
        any::<i32>(),
        any::<i32>(),
        list(any::<i32>()),
        list(any::<i32>()),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(
                error_code,
                partition,
                leader,
                leader_epoch,
                replicas,
                isr,
                log_start_offset,
                log_end_offset,
                size_bytes,
            )| PartitionMetadata {
                error_code,
                partition,
                leader,
                leader_epoch,
                replicas,
                isr,
                log_start_offset,
                log_end_offset,
                size_bytes,
            },
        );
    let topic =
        (error_code(), text(), list(partition)).prop_map(|(error_code, name, partitions)| {
            TopicMetadata {
                error_code,
                name,
                partitions,
            }
        });
    (list(broker), any::<i32>(), list(topic)).prop_map(|(brokers, controller_id, topics)| {
        Response::Metadata(MetadataResponse {
            brokers,
            controller_id,
            topics,
        })
    })
}

fn topic_errors() -> impl Strategy<Value = TopicErrorsResponse> {
    let topic =
        (text(), error_code(), optional_text()).prop_map(|(name, error_code, error_message)| {
            TopicError {
                name,
                error_code,
                error_message,
            }
        });
    list(topic).prop_map(|topics| TopicErrorsResponse { topics })
}

fn produce_response() -> impl Strategy<Value = Response> {
    let partition = (
        any::<i32>(),
        error_code(),
        optional_text(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(partition, error_code, error_message, base_offset, log_start_offset)| {
                ProducePartitionResponse {
                    partition,
                    error_code,
                    error_message,
                    base_offset,
                    log_start_offset,
                }
            },
        );
    let topic = (text(), list(partition))
        .prop_map(|(name, partitions)| ProduceTopicResponse { name, partitions });
    list(topic).prop_map(|topics| Response::Produce(ProduceResponse { topics }))
}

fn fetch_response() -> impl Strategy<Value = Response> {
    let partition = (
        any::<i32>(),
        error_code(),
        any::<i64>(),
        any::<i64>(),
        blob(),
    )
        .prop_map(
            |(partition, error_code, high_watermark, log_start_offset, records)| {
                FetchPartitionResponse {
                    partition,
                    error_code,
                    high_watermark,
                    log_start_offset,
                    records: Bytes::from(records),
                }
            },
        );
    let topic = (text(), list(partition))
        .prop_map(|(name, partitions)| FetchTopicResponse { name, partitions });
    list(topic).prop_map(|topics| Response::Fetch(FetchResponse { topics }))
}

fn list_offsets_response() -> impl Strategy<Value = Response> {
    let partition = (any::<i32>(), error_code(), any::<i64>(), any::<i64>()).prop_map(
        |(partition, error_code, timestamp, offset)| ListOffsetsPartitionResponse {
            partition,
            error_code,
            timestamp,
            offset,
        },
    );
    let topic = (text(), list(partition))
        .prop_map(|(name, partitions)| ListOffsetsTopicResponse { name, partitions });
    list(topic).prop_map(|topics| Response::ListOffsets(ListOffsetsResponse { topics }))
}

/// The consumer-group responses.
fn group_response() -> impl Strategy<Value = Response> {
    let partition_errors = (text(), list((any::<i32>(), error_code())))
        .prop_map(|(name, partitions)| TopicPartitionErrors { name, partitions });
    let fetched = (any::<i32>(), any::<i64>(), optional_text(), error_code()).prop_map(
        |(partition, offset, metadata, error_code)| OffsetFetchPartition {
            partition,
            offset,
            metadata,
            error_code,
        },
    );
    let fetched_topic = (text(), list(fetched))
        .prop_map(|(name, partitions)| OffsetFetchTopic { name, partitions });
    let member = (
        text(),
        text(),
        text(),
        list(text()),
        list(topic_partitions()),
    )
        .prop_map(
            |(member_id, client_id, client_host, topics, assignment)| DescribedMember {
                member_id,
                client_id,
                client_host,
                topics,
                assignment,
            },
        );
    let group = (
        error_code(),
        text(),
        text(),
        text(),
        any::<i32>(),
        list(member),
    )
        .prop_map(
            |(error_code, group_id, state, assignor, generation_id, members)| DescribedGroup {
                error_code,
                group_id,
                state,
                assignor,
                generation_id,
                members,
            },
        );
    let listed =
        (text(), text(), any::<i32>()).prop_map(|(group_id, state, members)| ListedGroup {
            group_id,
            state,
            members,
        });
    prop_oneof![
        list(partition_errors)
            .prop_map(|topics| Response::OffsetCommit(PartitionErrorsResponse { topics })),
        (error_code(), list(fetched_topic)).prop_map(|(error_code, topics)| {
            Response::OffsetFetch(OffsetFetchResponse { error_code, topics })
        }),
        (error_code(), any::<i32>(), text(), any::<i32>()).prop_map(
            |(error_code, node_id, host, port)| {
                Response::FindCoordinator(FindCoordinatorResponse {
                    error_code,
                    node_id,
                    host,
                    port,
                })
            }
        ),
        (error_code(), any::<i32>(), text(), text(), text()).prop_map(
            |(error_code, generation_id, assignor, leader_id, member_id)| {
                Response::JoinGroup(JoinGroupResponse {
                    error_code,
                    generation_id,
                    assignor,
                    leader_id,
                    member_id,
                })
            }
        ),
        error_code().prop_map(|error_code| Response::Heartbeat(GroupErrorResponse { error_code })),
        error_code().prop_map(|error_code| Response::LeaveGroup(GroupErrorResponse { error_code })),
        (error_code(), list(topic_partitions())).prop_map(|(error_code, assignment)| {
            Response::SyncGroup(SyncGroupResponse {
                error_code,
                assignment,
            })
        }),
        list(group).prop_map(|groups| Response::DescribeGroups(DescribeGroupsResponse { groups })),
        (error_code(), list(listed)).prop_map(|(error_code, groups)| {
            Response::ListGroups(ListGroupsResponse { error_code, groups })
        }),
        list((text(), error_code()))
            .prop_map(|groups| Response::DeleteGroups(GroupErrorsResponse { groups })),
    ]
}

/// Every response variant; each older API as likely as all the group APIs together.
fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        group_response(),
        cluster_response(),
        api_versions_response(),
        metadata_response(),
        topic_errors().prop_map(Response::CreateTopics),
        topic_errors().prop_map(Response::DeleteTopics),
        topic_errors().prop_map(Response::CreatePartitions),
        produce_response(),
        fetch_response(),
        list_offsets_response(),
    ]
}

/// A response as a broker sends it: mostly a `NONE` header and a body; sometimes an error
/// header (any non-zero code) and no body. The api key says how to decode the body.
fn response_message() -> impl Strategy<Value = (ApiKey, ResponseHeader, Option<Response>)> {
    let success = (response(), any::<i32>(), optional_text()).prop_map(
        |(response, correlation_id, error_message)| {
            let header = ResponseHeader {
                correlation_id,
                error_code: ErrorCode::NONE,
                error_message,
            };
            (response_api_key(&response), header, Some(response))
        },
    );
    let failure = (
        api_key(),
        any::<i32>(),
        any::<i16>().prop_filter("an error", |code| *code != 0),
        optional_text(),
    )
        .prop_map(|(api_key, correlation_id, code, error_message)| {
            let header = ResponseHeader {
                correlation_id,
                error_code: ErrorCode(code),
                error_message,
            };
            (api_key, header, None)
        });
    prop_oneof![4 => success, 1 => failure]
}

/// The API a response answers; exhaustive, so a new variant must be added here.
fn response_api_key(response: &Response) -> ApiKey {
    match response {
        Response::ApiVersions(_) => ApiKey::API_VERSIONS,
        Response::Metadata(_) => ApiKey::METADATA,
        Response::CreateTopics(_) => ApiKey::CREATE_TOPICS,
        Response::DeleteTopics(_) => ApiKey::DELETE_TOPICS,
        Response::CreatePartitions(_) => ApiKey::CREATE_PARTITIONS,
        Response::Produce(_) => ApiKey::PRODUCE,
        Response::Fetch(_) => ApiKey::FETCH,
        Response::ListOffsets(_) => ApiKey::LIST_OFFSETS,
        Response::OffsetCommit(_) => ApiKey::OFFSET_COMMIT,
        Response::OffsetFetch(_) => ApiKey::OFFSET_FETCH,
        Response::FindCoordinator(_) => ApiKey::FIND_COORDINATOR,
        Response::JoinGroup(_) => ApiKey::JOIN_GROUP,
        Response::Heartbeat(_) => ApiKey::HEARTBEAT,
        Response::LeaveGroup(_) => ApiKey::LEAVE_GROUP,
        Response::SyncGroup(_) => ApiKey::SYNC_GROUP,
        Response::DescribeGroups(_) => ApiKey::DESCRIBE_GROUPS,
        Response::ListGroups(_) => ApiKey::LIST_GROUPS,
        Response::DeleteGroups(_) => ApiKey::DELETE_GROUPS,
        Response::ReassignPartition(_) => ApiKey::REASSIGN_PARTITION,
        Response::AlterPartition(_) => ApiKey::ALTER_PARTITION,
        Response::DescribeCluster(_) => ApiKey::DESCRIBE_CLUSTER,
        Response::BrokerRegistration(_) => ApiKey::BROKER_REGISTRATION,
        Response::BrokerHeartbeat(_) => ApiKey::BROKER_HEARTBEAT,
        Response::FetchMetadata(_) => ApiKey::FETCH_METADATA,
        Response::Rebalance(_) => ApiKey::REBALANCE,
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, versions and decoding as a receiver does

/// A known api key.
fn api_key() -> impl Strategy<Value = ApiKey> {
    proptest::sample::select(ApiKey::ALL.to_vec())
}

/// An api key this code does not know.
fn unknown_api_key() -> impl Strategy<Value = ApiKey> {
    any::<i16>()
        .prop_map(ApiKey)
        .prop_filter("unknown", |key| !ApiKey::ALL.contains(key))
}

/// Known keys, unknown keys near the known ones, and any key at all.
fn any_api_key() -> impl Strategy<Value = ApiKey> {
    prop_oneof![
        4 => api_key(),
        1 => (-2i16..50).prop_map(ApiKey),
        1 => any::<i16>().prop_map(ApiKey),
    ]
}

/// Mostly version 0 (the one spoken), also 1, -1 and any.
fn any_version() -> impl Strategy<Value = i16> {
    prop_oneof![4 => Just(0i16), 1 => Just(1i16), 1 => Just(-1i16), 1 => any::<i16>()]
}

/// Decodes a request frame (length prefix excluded) as the broker does.
fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
    let mut reader = Reader::new(BytesMut::from(frame));
    let header = RequestHeader::decode(&mut reader)?;
    let request = Request::decode(&header, reader)?;
    Ok((header, request))
}

/// Decodes a response frame (length prefix excluded) to a request of `api_key`, as the client
/// does: the body is there only when the header's code is `NONE`, and nothing may follow.
fn decode_response(
    api_key: ApiKey,
    frame: &[u8],
) -> Result<(ResponseHeader, Option<Response>), DecodeError> {
    let mut reader = Reader::new(BytesMut::from(frame));
    let header = ResponseHeader::decode(&mut reader)?;
    if header.error_code.is_ok() {
        let response = Response::decode(api_key, reader)?;
        Ok((header, Some(response)))
    } else {
        reader.finish()?;
        Ok((header, None))
    }
}

/// Whether `result` is the refusal of an unknown `api_key`.
fn is_unknown_api<T>(result: &Result<T, DecodeError>, api_key: ApiKey) -> bool {
    matches!(result, Err(DecodeError::UnknownApi { api_key: key }) if *key == api_key.0)
}

/// Whether `result` is the refusal of `api_version` of `api_key`.
fn is_unsupported_version<T>(
    result: &Result<T, DecodeError>,
    api_key: ApiKey,
    api_version: i16,
) -> bool {
    matches!(
        result,
        Err(DecodeError::UnsupportedVersion { api_key: key, api_version: version })
            if *key == api_key.0 && *version == api_version
    )
}

/// Decodes `bytes` as a request frame and as a response frame to every API (and an unknown
/// one); only panics matter, so results are dropped.
fn decode_everything(bytes: &[u8]) {
    let _ = decode_request(bytes);
    for api_key in ApiKey::ALL.into_iter().chain([ApiKey(-1), ApiKey(4)]) {
        let _ = decode_response(api_key, bytes);
        let _ = Response::decode(api_key, Reader::new(BytesMut::from(bytes)));
    }
}

/// Bytes that look like message fields: small counts and lengths (including -1, null, and
/// -2, invalid), strings and short random runs, so that decoding gets into nested arrays.
fn message_shaped_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        (-2i32..5).prop_map(|count| count.to_be_bytes().to_vec()),
        (-2i16..5).prop_map(|length| length.to_be_bytes().to_vec()),
        text().prop_map(|text| {
            let mut bytes = (text.len() as i16).to_be_bytes().to_vec();
            bytes.extend_from_slice(text.as_bytes());
            bytes
        }),
        vec(any::<u8>(), 0..9),
    ];
    vec(field, 0..24).prop_map(|fields| fields.concat())
}

/// Encodes `frames` with the length prefix into one stream, feeds the stream to a decoder in
/// pieces cut at `cuts` (positions modulo the stream length), and returns the frames decoded.
fn frame_codec_round_trip(frames: &[Bytes], cuts: &[usize]) -> Vec<BytesMut> {
    let mut codec = FrameCodec::new(1 << 20);
    let mut stream = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut stream).unwrap();
    }
    let total = stream.len();
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (total + 1)).collect();
    cuts.push(total);
    cuts.sort_unstable();

    let mut received = BytesMut::new();
    let mut decoded = Vec::new();
    let mut start = 0;
    for cut in cuts {
        received.extend_from_slice(&stream[start..cut]);
        start = cut;
        while let Some(frame) = codec.decode(&mut received).unwrap() {
            decoded.push(frame);
        }
    }
    assert!(received.is_empty(), "{} bytes left over", received.len());
    decoded
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn requests_round_trip((header, request) in request_message()) {
        let frame = codec::request_frame(&header, &request);
        let (decoded_header, decoded) = decode_request(&frame).unwrap();
        prop_assert_eq!(decoded_header, header);
        prop_assert_eq!(decoded, request);
    }

    #[test]
    fn responses_round_trip((api_key, header, response) in response_message()) {
        let frame = codec::response_frame(&header, response.as_ref());
        let (decoded_header, decoded) = decode_response(api_key, &frame).unwrap();
        prop_assert_eq!(decoded_header, header);
        prop_assert_eq!(decoded, response);
    }

    #[test]
    fn requests_in_parts_are_the_same_bytes((header, request) in request_message()) {
        let whole = codec::request_frame(&header, &request);
        let parts = codec::request_frame_parts(&header, request);
        prop_assert_eq!(parts.len(), whole.len());
        prop_assert_eq!(parts.concat(), whole);
    }

    #[test]
    fn responses_in_parts_are_the_same_bytes((_api_key, header, response) in response_message()) {
        let whole = codec::response_frame(&header, response.as_ref());
        let parts = codec::response_frame_parts(&header, response.as_ref());
        prop_assert_eq!(parts.len(), whole.len());
        prop_assert_eq!(parts.concat(), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        decode_everything(&bytes);
    }

    #[test]
    fn message_shaped_bytes_never_panic(body in message_shaped_bytes()) {
        decode_everything(&body);
    }

    #[test]
    fn arbitrary_bodies_after_a_header_decode_or_fail_by_key_and_version(
        api_key in any_api_key(),
        api_version in any_version(),
        correlation_id in any::<i32>(),
        client_id in optional_text(),
        body in prop_oneof![vec(any::<u8>(), 0..300), message_shaped_bytes()],
    ) {
        // A well-formed header steers the body into each API's decoder (or into a refusal).
        let header = RequestHeader { api_key, api_version, correlation_id, client_id };
        let mut frame = BytesMut::new();
        header.encode(&mut frame);
        frame.extend_from_slice(&body);
        let result = decode_request(&frame);
        if !ApiKey::ALL.contains(&api_key) {
            prop_assert!(is_unknown_api(&result, api_key), "{:?}", result);
        } else if api_version != 0 {
            let refused = is_unsupported_version(&result, api_key, api_version);
            prop_assert!(refused, "{:?}", result);
        } else if let Ok((decoded_header, request)) = result {
            prop_assert_eq!(decoded_header, header);
            prop_assert_eq!(request.api_key(), api_key);
        }
    }

    #[test]
    fn requests_with_a_flipped_byte_fail_or_decode_stably(
        (header, request) in request_message(),
        position_seed in any::<usize>(),
        flip in 1u8..=255,
    ) {
        // The damage may go unnoticed (a changed integer) or not (a length, a key, UTF-8), but
        // it must not panic, and what does decode must survive another round trip unchanged.
        let mut frame = codec::request_frame(&header, &request).to_vec();
        let position = position_seed % frame.len();
        frame[position] ^= flip;
        if let Ok((header, request)) = decode_request(&frame) {
            let again = codec::request_frame(&header, &request);
            let (header_again, request_again) = decode_request(&again).unwrap();
            prop_assert_eq!(header_again, header);
            prop_assert_eq!(request_again, request);
        }
    }

    #[test]
    fn responses_with_a_flipped_byte_fail_or_decode_stably(
        (api_key, header, response) in response_message(),
        position_seed in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let mut frame = codec::response_frame(&header, response.as_ref()).to_vec();
        let position = position_seed % frame.len();
        frame[position] ^= flip;
        if let Ok((header, response)) = decode_response(api_key, &frame) {
            let again = codec::response_frame(&header, response.as_ref());
            let (header_again, response_again) = decode_response(api_key, &again).unwrap();
            prop_assert_eq!(header_again, header);
            prop_assert_eq!(response_again, response);
        }
    }

    #[test]
    fn unknown_api_keys_are_refused(
        api_key in unknown_api_key(),
        api_version in any::<i16>(),
        body in prop_oneof![vec(any::<u8>(), 0..64), message_shaped_bytes()],
    ) {
        let header = RequestHeader { api_key, api_version, correlation_id: 7, client_id: None };
        let result = Request::decode(&header, Reader::new(BytesMut::from(&body[..])));
        prop_assert!(is_unknown_api(&result, api_key), "request: {:?}", result);
        let result = Response::decode(api_key, Reader::new(BytesMut::from(&body[..])));
        prop_assert!(is_unknown_api(&result, api_key), "response: {:?}", result);
    }

    #[test]
    fn unsupported_versions_are_refused(
        (header, request) in request_message(),
        api_version in any::<i16>().prop_filter("not version 0", |version| *version != 0),
    ) {
        // A valid version-0 body under another version: refused before the body is read.
        let header = RequestHeader { api_version, ..header };
        let frame = codec::request_frame(&header, &request);
        let result = decode_request(&frame);
        let refused = is_unsupported_version(&result, request.api_key(), api_version);
        prop_assert!(refused, "{:?}", result);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip_through_the_frame_codec(
        messages in vec(request_message(), 1..5),
        cuts in vec(any::<usize>(), 0..6),
    ) {
        let frames: Vec<Bytes> = messages
            .iter()
            .map(|(header, request)| codec::request_frame(header, request))
            .collect();
        let decoded = frame_codec_round_trip(&frames, &cuts);
        prop_assert_eq!(decoded.len(), messages.len());
        for (frame, (header, request)) in decoded.iter().zip(&messages) {
            let (decoded_header, decoded) = decode_request(frame).unwrap();
            prop_assert_eq!(&decoded_header, header);
            prop_assert_eq!(&decoded, request);
        }
    }

    #[test]
    fn responses_round_trip_through_the_frame_codec(
        messages in vec(response_message(), 1..5),
        cuts in vec(any::<usize>(), 0..6),
    ) {
        let frames: Vec<Bytes> = messages
            .iter()
            .map(|(_, header, response)| codec::response_frame(header, response.as_ref()))
            .collect();
        let decoded = frame_codec_round_trip(&frames, &cuts);
        prop_assert_eq!(decoded.len(), messages.len());
        for (frame, (api_key, header, response)) in decoded.iter().zip(&messages) {
            let (decoded_header, decoded) = decode_response(*api_key, frame).unwrap();
            prop_assert_eq!(&decoded_header, header);
            prop_assert_eq!(&decoded, response);
        }
    }

    #[test]
    fn truncated_requests_fail_as_truncated((header, request) in request_message()) {
        // Every strict prefix: a frame cut short must never decode, whatever the cut.
        let frame = codec::request_frame(&header, &request);
        for length in 0..frame.len() {
            let result = decode_request(&frame[..length]);
            let truncated = matches!(result, Err(DecodeError::Truncated { .. }));
            prop_assert!(truncated, "cut at {} of {}: {:?}", length, frame.len(), result);
        }
    }

    #[test]
    fn truncated_responses_fail_as_truncated((api_key, header, response) in response_message()) {
        let frame = codec::response_frame(&header, response.as_ref());
        for length in 0..frame.len() {
            let result = decode_response(api_key, &frame[..length]);
            let truncated = matches!(result, Err(DecodeError::Truncated { .. }));
            prop_assert!(truncated, "cut at {} of {}: {:?}", length, frame.len(), result);
        }
    }
}

/// The strategies must produce every API: a key added to `ApiKey::ALL` without a strategy
/// fails here rather than going untested.
#[test]
fn strategies_cover_every_api() {
    let mut runner = TestRunner::deterministic();
    let requests = request();
    let responses = response();
    let mut request_keys = HashSet::new();
    let mut response_keys = HashSet::new();
    for _ in 0..3000 {
        request_keys.insert(requests.new_tree(&mut runner).unwrap().current().api_key());
        response_keys.insert(response_api_key(
            &responses.new_tree(&mut runner).unwrap().current(),
        ));
    }
    let all: HashSet<ApiKey> = ApiKey::ALL.into_iter().collect();
    assert_eq!(request_keys, all);
    assert_eq!(response_keys, all);
}

/// Version 1 of every known API is refused; a header alone is enough to tell.
#[test]
fn version_one_of_every_api_is_unsupported() {
    for api_key in ApiKey::ALL {
        let header = RequestHeader {
            api_key,
            api_version: 1,
            correlation_id: 1,
            client_id: Some("test".to_owned()),
        };
        let mut frame = BytesMut::new();
        header.encode(&mut frame);
        let result = decode_request(&frame);
        assert!(
            is_unsupported_version(&result, api_key, 1),
            "{}: {result:?}",
            api_key.name()
        );
    }
}
