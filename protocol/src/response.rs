//! Responses: the header every response starts with, and one struct per API.
//!
//! ```text
//! response frame = length i32 | correlation_id i32 | error_code i16 | error_message string
//!                  | body (only when error_code is NONE)
//! ```
//!
//! The header's error code is for the request as a whole (unknown API, unsupported version,
//! malformed request), so a client learns of it whatever API it called. Errors of single
//! topics or partitions are in the body.

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::cluster::{
    BrokerHeartbeatResponse, BrokerRegistrationResponse, ClusterBroker, DescribeClusterResponse,
    ErrorResponse, FetchMetadataResponse, PartitionMove, RebalanceResponse,
};
use crate::error::{DecodeError, ErrorCode};
pub use crate::group::{
    DescribeGroupsResponse, DescribedGroup, DescribedMember, FindCoordinatorResponse,
    GroupErrorResponse, GroupErrorsResponse, JoinGroupResponse, ListGroupsResponse, ListedGroup,
    OffsetFetchPartition, OffsetFetchResponse, OffsetFetchTopic, PartitionErrorsResponse,
    SyncGroupResponse, TopicPartitionErrors,
};
use crate::request::ApiKey;
use crate::wire::{self, Reader};

/// The header of every response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The request's correlation id.
    pub correlation_id: i32,
    /// An error of the whole request; the body is absent unless this is `NONE`.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
}

impl ResponseHeader {
    /// Reads a header.
    pub fn decode(reader: &mut Reader) -> Result<ResponseHeader, DecodeError> {
        Ok(ResponseHeader {
            correlation_id: reader.i32()?,
            error_code: ErrorCode(reader.i16()?),
            error_message: reader.nullable_string()?,
        })
    }

    /// Writes the header.
    pub fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.correlation_id);
        target.put_i16(self.error_code.0);
        wire::put_nullable_string(target, self.error_message.as_deref());
    }
}

/// A response body, by API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// See [`ApiKey::API_VERSIONS`].
    ApiVersions(ApiVersionsResponse),
    /// See [`ApiKey::METADATA`].
    Metadata(MetadataResponse),
    /// See [`ApiKey::CREATE_TOPICS`].
    CreateTopics(TopicErrorsResponse),
    /// See [`ApiKey::DELETE_TOPICS`].
    DeleteTopics(TopicErrorsResponse),
    /// See [`ApiKey::CREATE_PARTITIONS`].
    CreatePartitions(TopicErrorsResponse),
    /// See [`ApiKey::PRODUCE`].
    Produce(ProduceResponse),
    /// See [`ApiKey::FETCH`].
    Fetch(FetchResponse),
    /// See [`ApiKey::LIST_OFFSETS`].
    ListOffsets(ListOffsetsResponse),
    /// See [`ApiKey::OFFSET_COMMIT`].
    OffsetCommit(PartitionErrorsResponse),
    /// See [`ApiKey::OFFSET_FETCH`].
    OffsetFetch(OffsetFetchResponse),
    /// See [`ApiKey::FIND_COORDINATOR`].
    FindCoordinator(FindCoordinatorResponse),
    /// See [`ApiKey::JOIN_GROUP`].
    JoinGroup(JoinGroupResponse),
    /// See [`ApiKey::HEARTBEAT`].
    Heartbeat(GroupErrorResponse),
    /// See [`ApiKey::LEAVE_GROUP`].
    LeaveGroup(GroupErrorResponse),
    /// See [`ApiKey::SYNC_GROUP`].
    SyncGroup(SyncGroupResponse),
    /// See [`ApiKey::DESCRIBE_GROUPS`].
    DescribeGroups(DescribeGroupsResponse),
    /// See [`ApiKey::LIST_GROUPS`].
    ListGroups(ListGroupsResponse),
    /// See [`ApiKey::DELETE_GROUPS`].
    DeleteGroups(GroupErrorsResponse),
    /// See [`ApiKey::REASSIGN_PARTITION`].
    ReassignPartition(ErrorResponse),
    /// See [`ApiKey::ALTER_PARTITION`].
    AlterPartition(ErrorResponse),
    /// See [`ApiKey::DESCRIBE_CLUSTER`].
    DescribeCluster(DescribeClusterResponse),
    /// See [`ApiKey::BROKER_REGISTRATION`].
    BrokerRegistration(BrokerRegistrationResponse),
    /// See [`ApiKey::BROKER_HEARTBEAT`].
    BrokerHeartbeat(BrokerHeartbeatResponse),
    /// See [`ApiKey::FETCH_METADATA`].
    FetchMetadata(FetchMetadataResponse),
    /// See [`ApiKey::REBALANCE`].
    Rebalance(RebalanceResponse),
}

impl Response {
    /// Reads the body of a response to a request of `api_key` (version 0).
    pub fn decode(api_key: ApiKey, mut reader: Reader) -> Result<Response, DecodeError> {
        let body = &mut reader;
        let response = match api_key {
            ApiKey::API_VERSIONS => Response::ApiVersions(ApiVersionsResponse {
                apis: body.array(6, |reader| {
                    Ok(ApiVersion {
                        api_key: ApiKey(reader.i16()?),
                        min_version: reader.i16()?,
                        max_version: reader.i16()?,
                    })
                })?,
            }),
            ApiKey::METADATA => Response::Metadata(MetadataResponse::decode(body)?),
            ApiKey::CREATE_TOPICS => Response::CreateTopics(TopicErrorsResponse::decode(body)?),
            ApiKey::DELETE_TOPICS => Response::DeleteTopics(TopicErrorsResponse::decode(body)?),
            ApiKey::CREATE_PARTITIONS => {
                Response::CreatePartitions(TopicErrorsResponse::decode(body)?)
            }
            ApiKey::PRODUCE => Response::Produce(ProduceResponse::decode(body)?),
            ApiKey::FETCH => Response::Fetch(FetchResponse::decode(body)?),
            ApiKey::LIST_OFFSETS => Response::ListOffsets(ListOffsetsResponse::decode(body)?),
            ApiKey::OFFSET_COMMIT => Response::OffsetCommit(PartitionErrorsResponse::decode(body)?),
            ApiKey::OFFSET_FETCH => Response::OffsetFetch(OffsetFetchResponse::decode(body)?),
            ApiKey::FIND_COORDINATOR => {
                Response::FindCoordinator(FindCoordinatorResponse::decode(body)?)
            }
            ApiKey::JOIN_GROUP => Response::JoinGroup(JoinGroupResponse::decode(body)?),
            ApiKey::HEARTBEAT => Response::Heartbeat(GroupErrorResponse::decode(body)?),
            ApiKey::LEAVE_GROUP => Response::LeaveGroup(GroupErrorResponse::decode(body)?),
            ApiKey::SYNC_GROUP => Response::SyncGroup(SyncGroupResponse::decode(body)?),
            ApiKey::DESCRIBE_GROUPS => {
                Response::DescribeGroups(DescribeGroupsResponse::decode(body)?)
            }
            ApiKey::LIST_GROUPS => Response::ListGroups(ListGroupsResponse::decode(body)?),
            ApiKey::DELETE_GROUPS => Response::DeleteGroups(GroupErrorsResponse::decode(body)?),
            ApiKey::REASSIGN_PARTITION => Response::ReassignPartition(ErrorResponse::decode(body)?),
            ApiKey::ALTER_PARTITION => Response::AlterPartition(ErrorResponse::decode(body)?),
            ApiKey::DESCRIBE_CLUSTER => {
                Response::DescribeCluster(DescribeClusterResponse::decode(body)?)
            }
            ApiKey::BROKER_REGISTRATION => {
                Response::BrokerRegistration(BrokerRegistrationResponse::decode(body)?)
            }
            ApiKey::BROKER_HEARTBEAT => {
                Response::BrokerHeartbeat(BrokerHeartbeatResponse::decode(body)?)
            }
            ApiKey::FETCH_METADATA => Response::FetchMetadata(FetchMetadataResponse::decode(body)?),
            ApiKey::REBALANCE => Response::Rebalance(RebalanceResponse::decode(body)?),
            ApiKey(api_key) => return Err(DecodeError::UnknownApi { api_key }),
        };
        reader.finish()?;
        Ok(response)
    }

    /// Writes the body.
    pub fn encode(&self, target: &mut BytesMut) {
        match self {
            Response::ApiVersions(response) => {
                wire::put_array(target, &response.apis, |target, api| {
                    target.put_i16(api.api_key.0);
                    target.put_i16(api.min_version);
                    target.put_i16(api.max_version);
                });
            }
            Response::Metadata(response) => response.encode(target),
            Response::CreateTopics(response)
            | Response::DeleteTopics(response)
            | Response::CreatePartitions(response) => response.encode(target),
            Response::Produce(response) => response.encode(target),
            Response::Fetch(response) => response.encode(target),
            Response::ListOffsets(response) => response.encode(target),
            Response::OffsetCommit(response) => response.encode(target),
            Response::OffsetFetch(response) => response.encode(target),
            Response::FindCoordinator(response) => response.encode(target),
            Response::JoinGroup(response) => response.encode(target),
            Response::Heartbeat(response) | Response::LeaveGroup(response) => {
                response.encode(target)
            }
            Response::SyncGroup(response) => response.encode(target),
            Response::DescribeGroups(response) => response.encode(target),
            Response::ListGroups(response) => response.encode(target),
            Response::DeleteGroups(response) => response.encode(target),
            Response::ReassignPartition(response) | Response::AlterPartition(response) => {
                response.encode(target)
            }
            Response::DescribeCluster(response) => response.encode(target),
            Response::BrokerRegistration(response) => response.encode(target),
            Response::BrokerHeartbeat(response) => response.encode(target),
            Response::FetchMetadata(response) => response.encode(target),
            Response::Rebalance(response) => response.encode(target),
        }
    }
}

impl Response {
    /// Whether any error code in the body is not `NONE`: of the response, or of any topic,
    /// partition or group in it. (For metrics: which answers carried an error.)
    pub fn has_error(&self) -> bool {
        fn any<T>(items: &[T], error: impl Fn(&T) -> bool) -> bool {
            items.iter().any(error)
        }
        let failed = |code: &ErrorCode| !code.is_ok();
        match self {
            Response::ApiVersions(_) => false,
            Response::Metadata(response) => any(&response.topics, |topic| {
                failed(&topic.error_code)
                    || any(&topic.partitions, |partition| failed(&partition.error_code))
            }),
            Response::CreateTopics(response)
            | Response::DeleteTopics(response)
            | Response::CreatePartitions(response) => {
                any(&response.topics, |topic| failed(&topic.error_code))
            }
            Response::Produce(response) => any(&response.topics, |topic| {
                any(&topic.partitions, |partition| failed(&partition.error_code))
            }),
            Response::Fetch(response) => any(&response.topics, |topic| {
                any(&topic.partitions, |partition| failed(&partition.error_code))
            }),
            Response::ListOffsets(response) => any(&response.topics, |topic| {
                any(&topic.partitions, |partition| failed(&partition.error_code))
            }),
            Response::OffsetCommit(response) => any(&response.topics, |topic| {
                any(&topic.partitions, |(_, code)| failed(code))
            }),
            Response::OffsetFetch(response) => {
                failed(&response.error_code)
                    || any(&response.topics, |topic| {
                        any(&topic.partitions, |partition| failed(&partition.error_code))
                    })
            }
            Response::FindCoordinator(response) => failed(&response.error_code),
            Response::JoinGroup(response) => failed(&response.error_code),
            Response::Heartbeat(response) | Response::LeaveGroup(response) => {
                failed(&response.error_code)
            }
            Response::SyncGroup(response) => failed(&response.error_code),
            Response::DescribeGroups(response) => {
                any(&response.groups, |group| failed(&group.error_code))
            }
            Response::ListGroups(response) => failed(&response.error_code),
            Response::DeleteGroups(response) => any(&response.groups, |(_, code)| failed(code)),
            Response::ReassignPartition(response) | Response::AlterPartition(response) => {
                failed(&response.error_code)
            }
            Response::DescribeCluster(response) => failed(&response.error_code),
            Response::BrokerRegistration(response) => failed(&response.error_code),
            Response::BrokerHeartbeat(response) => failed(&response.error_code),
            Response::FetchMetadata(response) => failed(&response.error_code),
            Response::Rebalance(response) => failed(&response.error_code),
        }
    }
}

/// The APIs a broker speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// One entry per API.
    pub apis: Vec<ApiVersion>,
}

/// The versions of one API a broker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersion {
    /// The API.
    pub api_key: ApiKey,
    /// The oldest version spoken.
    pub min_version: i16,
    /// The newest version spoken.
    pub max_version: i16,
}

/// Brokers and topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataResponse {
    /// The live brokers.
    pub brokers: Vec<BrokerMetadata>,
    /// The node id of the controller; -1 when unknown.
    pub controller_id: i32,
    /// The topics asked for (or all).
    pub topics: Vec<TopicMetadata>,
}

/// A broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Its node id.
    pub node_id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: i32,
}

/// A topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicMetadata {
    /// `UNKNOWN_TOPIC_OR_PARTITION` for a topic asked for that does not exist.
    pub error_code: ErrorCode,
    /// Its name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<PartitionMetadata>,
}

/// A partition of a topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// `LEADER_NOT_AVAILABLE` when the partition is offline.
    pub error_code: ErrorCode,
    /// Its index.
    pub partition: i32,
    /// The node id of its leader; -1 when none.
    pub leader: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Node ids of its replicas.
    pub replicas: Vec<i32>,
    /// Node ids of its in-sync replicas.
    pub isr: Vec<i32>,
    /// Its log start offset.
    pub log_start_offset: i64,
    /// Its log end offset.
    pub log_end_offset: i64,
    /// Bytes of its log on disk.
    pub size_bytes: i64,
}

impl Default for ErrorCode {
    fn default() -> Self {
        ErrorCode::NONE
    }
}

impl MetadataResponse {
    fn decode(reader: &mut Reader) -> Result<MetadataResponse, DecodeError> {
        Ok(MetadataResponse {
            brokers: reader.array(10, |reader| {
                Ok(BrokerMetadata {
                    node_id: reader.i32()?,
                    host: reader.string()?,
                    port: reader.i32()?,
                })
            })?,
            controller_id: reader.i32()?,
            topics: reader.array(8, |reader| {
                Ok(TopicMetadata {
                    error_code: ErrorCode(reader.i16()?),
                    name: reader.string()?,
                    partitions: reader.array(46, |reader| {
                        Ok(PartitionMetadata {
                            error_code: ErrorCode(reader.i16()?),
                            partition: reader.i32()?,
                            leader: reader.i32()?,
                            leader_epoch: reader.i32()?,
                            replicas: reader.array(4, Reader::i32)?,
                            isr: reader.array(4, Reader::i32)?,
                            log_start_offset: reader.i64()?,
                            log_end_offset: reader.i64()?,
                            size_bytes: reader.i64()?,
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.brokers, |target, broker| {
            target.put_i32(broker.node_id);
            wire::put_string(target, &broker.host);
            target.put_i32(broker.port);
        });
        target.put_i32(self.controller_id);
        wire::put_array(target, &self.topics, |target, topic| {
            target.put_i16(topic.error_code.0);
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i16(partition.error_code.0);
                target.put_i32(partition.partition);
                target.put_i32(partition.leader);
                target.put_i32(partition.leader_epoch);
                wire::put_array(target, &partition.replicas, |target, id| {
                    target.put_i32(*id)
                });
                wire::put_array(target, &partition.isr, |target, id| target.put_i32(*id));
                target.put_i64(partition.log_start_offset);
                target.put_i64(partition.log_end_offset);
                target.put_i64(partition.size_bytes);
            });
        });
    }
}

/// The outcome per topic of CreateTopics, DeleteTopics and CreatePartitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicErrorsResponse {
    /// One entry per topic of the request.
    pub topics: Vec<TopicError>,
}

/// The outcome for one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicError {
    /// The topic.
    pub name: String,
    /// `NONE` on success.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
}

impl TopicErrorsResponse {
    fn decode(reader: &mut Reader) -> Result<TopicErrorsResponse, DecodeError> {
        Ok(TopicErrorsResponse {
            topics: reader.array(6, |reader| {
                Ok(TopicError {
                    name: reader.string()?,
                    error_code: ErrorCode(reader.i16()?),
                    error_message: reader.nullable_string()?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            target.put_i16(topic.error_code.0);
            wire::put_nullable_string(target, topic.error_message.as_deref());
        });
    }
}

/// The outcome of a Produce, per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceResponse {
    /// By topic.
    pub topics: Vec<ProduceTopicResponse>,
}

/// Produce outcomes of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceTopicResponse {
    /// The topic.
    pub name: String,
    /// By partition.
    pub partitions: Vec<ProducePartitionResponse>,
}

/// The produce outcome of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// The partition.
    pub partition: i32,
    /// `NONE` on success.
    pub error_code: ErrorCode,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// Offset given to the first record; -1 on error.
    pub base_offset: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
}

impl ProduceResponse {
    fn decode(reader: &mut Reader) -> Result<ProduceResponse, DecodeError> {
        Ok(ProduceResponse {
            topics: reader.array(6, |reader| {
                Ok(ProduceTopicResponse {
                    name: reader.string()?,
                    partitions: reader.array(24, |reader| {
                        Ok(ProducePartitionResponse {
                            partition: reader.i32()?,
                            error_code: ErrorCode(reader.i16()?),
                            error_message: reader.nullable_string()?,
                            base_offset: reader.i64()?,
                            log_start_offset: reader.i64()?,
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i16(partition.error_code.0);
                wire::put_nullable_string(target, partition.error_message.as_deref());
                target.put_i64(partition.base_offset);
                target.put_i64(partition.log_start_offset);
            });
        });
    }
}

/// Fetched data, per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchResponse {
    /// By topic.
    pub topics: Vec<FetchTopicResponse>,
}

/// Fetched data of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchTopicResponse {
    /// The topic.
    pub name: String,
    /// By partition.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// Fetched data of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// The partition.
    pub partition: i32,
    /// `NONE`, or why nothing was read (`OFFSET_OUT_OF_RANGE`, ...).
    pub error_code: ErrorCode,
    /// The offset after the last record readable now (the log end offset).
    pub high_watermark: i64,
    /// The first offset still stored.
    pub log_start_offset: i64,
    /// Whole record batches as stored; the first may begin before the fetch offset.
    pub records: Bytes,
}

impl FetchResponse {
    fn decode(reader: &mut Reader) -> Result<FetchResponse, DecodeError> {
        Ok(FetchResponse {
            topics: reader.array(6, |reader| {
                Ok(FetchTopicResponse {
                    name: reader.string()?,
                    partitions: reader.array(26, |reader| {
                        Ok(FetchPartitionResponse {
                            partition: reader.i32()?,
                            error_code: ErrorCode(reader.i16()?),
                            high_watermark: reader.i64()?,
                            log_start_offset: reader.i64()?,
                            records: reader.bytes()?.freeze(),
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        self.encode_with(target, &mut |target, records| {
            wire::put_bytes(target, records)
        });
    }

    /// Encodes the response into `head`, except that each record set at least
    /// `shared_min` bytes long becomes a part of its own in `parts`, shared rather than copied:
    /// the frame is `parts` followed by what is left in `head`, written one after another.
    pub(crate) fn encode_parts(
        &self,
        head: &mut BytesMut,
        parts: &mut Vec<Bytes>,
        shared_min: usize,
    ) {
        self.encode_with(head, &mut |head, records| {
            if records.len() < shared_min {
                wire::put_bytes(head, records);
                return;
            }
            wire::put_bytes_length(head, records.len());
            parts.push(head.split().freeze());
            parts.push(records.clone());
        });
    }

    fn encode_with(
        &self,
        target: &mut BytesMut,
        put_records: &mut dyn FnMut(&mut BytesMut, &Bytes),
    ) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i16(partition.error_code.0);
                target.put_i64(partition.high_watermark);
                target.put_i64(partition.log_start_offset);
                put_records(target, &partition.records);
            });
        });
    }
}

/// Offsets found, per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// By topic.
    pub topics: Vec<ListOffsetsTopicResponse>,
}

/// Offsets found in one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsTopicResponse {
    /// The topic.
    pub name: String,
    /// By partition.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// The offset found in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// The partition.
    pub partition: i32,
    /// `NONE` on success.
    pub error_code: ErrorCode,
    /// The timestamp asked for (or -1 / -2).
    pub timestamp: i64,
    /// The offset found; -1 when no record is that recent.
    pub offset: i64,
}

impl ListOffsetsResponse {
    fn decode(reader: &mut Reader) -> Result<ListOffsetsResponse, DecodeError> {
        Ok(ListOffsetsResponse {
            topics: reader.array(6, |reader| {
                Ok(ListOffsetsTopicResponse {
                    name: reader.string()?,
                    partitions: reader.array(22, |reader| {
                        Ok(ListOffsetsPartitionResponse {
                            partition: reader.i32()?,
                            error_code: ErrorCode(reader.i16()?),
                            timestamp: reader.i64()?,
                            offset: reader.i64()?,
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i16(partition.error_code.0);
                target.put_i64(partition.timestamp);
                target.put_i64(partition.offset);
            });
        });
    }
}
