//! Requests: the header every request starts with, and one struct per API.
//!
//! ```text
//! request frame = length i32 | api_key i16 | api_version i16 | correlation_id i32
//!                 | client_id string | body
//! ```
//!
//! Every API is versioned; [`ApiKey::versions`] says which versions this code speaks, and the
//! ApiVersions API tells a client what a broker speaks. All APIs are at version 0 so far.

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::cluster::{
    AlterPartitionRequest, BrokerHeartbeatRequest, BrokerRegistrationRequest, FetchMetadataRequest,
    ReassignPartitionRequest, RebalanceRequest,
};
use crate::error::DecodeError;
pub use crate::group::{
    FindCoordinatorRequest, GroupsRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
    SyncGroupRequest, TopicPartitions,
};
use crate::limits;
use crate::wire::{self, Reader};

/// Identifies an API. The numbers are Kafka's, for familiarity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiKey(pub i16);

impl ApiKey {
    /// Append record batches.
    pub const PRODUCE: ApiKey = ApiKey(0);
    /// Read record batches (long-poll).
    pub const FETCH: ApiKey = ApiKey(1);
    /// Earliest, latest, or by-timestamp offsets.
    pub const LIST_OFFSETS: ApiKey = ApiKey(2);
    /// Brokers, topics, partitions and leaders.
    pub const METADATA: ApiKey = ApiKey(3);
    /// Which APIs and versions the broker speaks.
    pub const API_VERSIONS: ApiKey = ApiKey(18);
    /// Create topics.
    pub const CREATE_TOPICS: ApiKey = ApiKey(19);
    /// Delete topics.
    pub const DELETE_TOPICS: ApiKey = ApiKey(20);
    /// Add partitions to topics.
    pub const CREATE_PARTITIONS: ApiKey = ApiKey(37);
    /// Store a group's committed offsets.
    pub const OFFSET_COMMIT: ApiKey = ApiKey(8);
    /// Read a group's committed offsets.
    pub const OFFSET_FETCH: ApiKey = ApiKey(9);
    /// Which broker coordinates a group.
    pub const FIND_COORDINATOR: ApiKey = ApiKey(10);
    /// Join (or rejoin) a group.
    pub const JOIN_GROUP: ApiKey = ApiKey(11);
    /// Keep a membership alive; learn of rebalances.
    pub const HEARTBEAT: ApiKey = ApiKey(12);
    /// Leave a group.
    pub const LEAVE_GROUP: ApiKey = ApiKey(13);
    /// Collect a member's assignment.
    pub const SYNC_GROUP: ApiKey = ApiKey(14);
    /// Groups' states and members.
    pub const DESCRIBE_GROUPS: ApiKey = ApiKey(15);
    /// Every group.
    pub const LIST_GROUPS: ApiKey = ApiKey(16);
    /// Delete groups without members, with their committed offsets.
    pub const DELETE_GROUPS: ApiKey = ApiKey(42);
    /// Move a partition to another broker (`crate::cluster`).
    pub const REASSIGN_PARTITION: ApiKey = ApiKey(45);
    /// A reassignment's target has copied the partition (`crate::cluster`; between nodes).
    pub const ALTER_PARTITION: ApiKey = ApiKey(56);
    /// Every registered broker and the controller (`crate::cluster`).
    pub const DESCRIBE_CLUSTER: ApiKey = ApiKey(60);
    /// A broker registers with the controller (`crate::cluster`; between nodes).
    pub const BROKER_REGISTRATION: ApiKey = ApiKey(62);
    /// A broker's heartbeat to the controller (`crate::cluster`; between nodes).
    pub const BROKER_HEARTBEAT: ApiKey = ApiKey(63);
    /// A broker reads the controller's metadata log (`crate::cluster`; between nodes).
    pub const FETCH_METADATA: ApiKey = ApiKey(1000);
    /// Even out partitions across brokers (`crate::cluster`).
    pub const REBALANCE: ApiKey = ApiKey(1001);

    /// Every API this code speaks.
    pub const ALL: [ApiKey; 25] = [
        ApiKey::PRODUCE,
        ApiKey::FETCH,
        ApiKey::LIST_OFFSETS,
        ApiKey::METADATA,
        ApiKey::API_VERSIONS,
        ApiKey::CREATE_TOPICS,
        ApiKey::DELETE_TOPICS,
        ApiKey::CREATE_PARTITIONS,
        ApiKey::OFFSET_COMMIT,
        ApiKey::OFFSET_FETCH,
        ApiKey::FIND_COORDINATOR,
        ApiKey::JOIN_GROUP,
        ApiKey::HEARTBEAT,
        ApiKey::LEAVE_GROUP,
        ApiKey::SYNC_GROUP,
        ApiKey::DESCRIBE_GROUPS,
        ApiKey::LIST_GROUPS,
        ApiKey::DELETE_GROUPS,
        ApiKey::REASSIGN_PARTITION,
        ApiKey::ALTER_PARTITION,
        ApiKey::DESCRIBE_CLUSTER,
        ApiKey::BROKER_REGISTRATION,
        ApiKey::BROKER_HEARTBEAT,
        ApiKey::FETCH_METADATA,
        ApiKey::REBALANCE,
    ];

    /// The range of versions this code speaks; `None` for an unknown key.
    pub fn versions(self) -> Option<(i16, i16)> {
        ApiKey::ALL.contains(&self).then_some((0, 0))
    }

    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            ApiKey::PRODUCE => "Produce",
            ApiKey::FETCH => "Fetch",
            ApiKey::LIST_OFFSETS => "ListOffsets",
            ApiKey::METADATA => "Metadata",
            ApiKey::API_VERSIONS => "ApiVersions",
            ApiKey::CREATE_TOPICS => "CreateTopics",
            ApiKey::DELETE_TOPICS => "DeleteTopics",
            ApiKey::CREATE_PARTITIONS => "CreatePartitions",
            ApiKey::OFFSET_COMMIT => "OffsetCommit",
            ApiKey::OFFSET_FETCH => "OffsetFetch",
            ApiKey::FIND_COORDINATOR => "FindCoordinator",
            ApiKey::JOIN_GROUP => "JoinGroup",
            ApiKey::HEARTBEAT => "Heartbeat",
            ApiKey::LEAVE_GROUP => "LeaveGroup",
            ApiKey::SYNC_GROUP => "SyncGroup",
            ApiKey::DESCRIBE_GROUPS => "DescribeGroups",
            ApiKey::LIST_GROUPS => "ListGroups",
            ApiKey::DELETE_GROUPS => "DeleteGroups",
            ApiKey::REASSIGN_PARTITION => "ReassignPartition",
            ApiKey::ALTER_PARTITION => "AlterPartition",
            ApiKey::DESCRIBE_CLUSTER => "DescribeCluster",
            ApiKey::BROKER_REGISTRATION => "BrokerRegistration",
            ApiKey::BROKER_HEARTBEAT => "BrokerHeartbeat",
            ApiKey::FETCH_METADATA => "FetchMetadata",
            ApiKey::REBALANCE => "Rebalance",
            _ => "Unknown",
        }
    }
}

/// The header of every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Which API.
    pub api_key: ApiKey,
    /// Which version of it.
    pub api_version: i16,
    /// Echoed in the response, so that a client can match responses to requests.
    pub correlation_id: i32,
    /// Free-form client name, for logs.
    pub client_id: Option<String>,
}

impl RequestHeader {
    /// Reads a header.
    pub fn decode(reader: &mut Reader) -> Result<RequestHeader, DecodeError> {
        Ok(RequestHeader {
            api_key: ApiKey(reader.i16()?),
            api_version: reader.i16()?,
            correlation_id: reader.i32()?,
            client_id: reader.nullable_string()?,
        })
    }

    /// Writes the header.
    pub fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.api_key.0);
        target.put_i16(self.api_version);
        target.put_i32(self.correlation_id);
        wire::put_nullable_string(target, self.client_id.as_deref());
    }
}

/// A request body, by API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// See [`ApiKey::API_VERSIONS`].
    ApiVersions,
    /// See [`ApiKey::METADATA`].
    Metadata(MetadataRequest),
    /// See [`ApiKey::CREATE_TOPICS`].
    CreateTopics(CreateTopicsRequest),
    /// See [`ApiKey::DELETE_TOPICS`].
    DeleteTopics(DeleteTopicsRequest),
    /// See [`ApiKey::CREATE_PARTITIONS`].
    CreatePartitions(CreatePartitionsRequest),
    /// See [`ApiKey::PRODUCE`].
    Produce(ProduceRequest),
    /// See [`ApiKey::FETCH`].
    Fetch(FetchRequest),
    /// See [`ApiKey::LIST_OFFSETS`].
    ListOffsets(ListOffsetsRequest),
    /// See [`ApiKey::OFFSET_COMMIT`].
    OffsetCommit(OffsetCommitRequest),
    /// See [`ApiKey::OFFSET_FETCH`].
    OffsetFetch(OffsetFetchRequest),
    /// See [`ApiKey::FIND_COORDINATOR`].
    FindCoordinator(FindCoordinatorRequest),
    /// See [`ApiKey::JOIN_GROUP`].
    JoinGroup(JoinGroupRequest),
    /// See [`ApiKey::HEARTBEAT`].
    Heartbeat(HeartbeatRequest),
    /// See [`ApiKey::LEAVE_GROUP`].
    LeaveGroup(LeaveGroupRequest),
    /// See [`ApiKey::SYNC_GROUP`].
    SyncGroup(SyncGroupRequest),
    /// See [`ApiKey::DESCRIBE_GROUPS`].
    DescribeGroups(GroupsRequest),
    /// See [`ApiKey::LIST_GROUPS`].
    ListGroups,
    /// See [`ApiKey::DELETE_GROUPS`].
    DeleteGroups(GroupsRequest),
    /// See [`ApiKey::REASSIGN_PARTITION`].
    ReassignPartition(ReassignPartitionRequest),
    /// See [`ApiKey::ALTER_PARTITION`].
    AlterPartition(AlterPartitionRequest),
    /// See [`ApiKey::DESCRIBE_CLUSTER`].
    DescribeCluster,
    /// See [`ApiKey::BROKER_REGISTRATION`].
    BrokerRegistration(BrokerRegistrationRequest),
    /// See [`ApiKey::BROKER_HEARTBEAT`].
    BrokerHeartbeat(BrokerHeartbeatRequest),
    /// See [`ApiKey::FETCH_METADATA`].
    FetchMetadata(FetchMetadataRequest),
    /// See [`ApiKey::REBALANCE`].
    Rebalance(RebalanceRequest),
}

impl Request {
    /// The API of this request.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions => ApiKey::API_VERSIONS,
            Request::Metadata(_) => ApiKey::METADATA,
            Request::CreateTopics(_) => ApiKey::CREATE_TOPICS,
            Request::DeleteTopics(_) => ApiKey::DELETE_TOPICS,
            Request::CreatePartitions(_) => ApiKey::CREATE_PARTITIONS,
            Request::Produce(_) => ApiKey::PRODUCE,
            Request::Fetch(_) => ApiKey::FETCH,
            Request::ListOffsets(_) => ApiKey::LIST_OFFSETS,
            Request::OffsetCommit(_) => ApiKey::OFFSET_COMMIT,
            Request::OffsetFetch(_) => ApiKey::OFFSET_FETCH,
            Request::FindCoordinator(_) => ApiKey::FIND_COORDINATOR,
            Request::JoinGroup(_) => ApiKey::JOIN_GROUP,
            Request::Heartbeat(_) => ApiKey::HEARTBEAT,
            Request::LeaveGroup(_) => ApiKey::LEAVE_GROUP,
            Request::SyncGroup(_) => ApiKey::SYNC_GROUP,
            Request::DescribeGroups(_) => ApiKey::DESCRIBE_GROUPS,
            Request::ListGroups => ApiKey::LIST_GROUPS,
            Request::DeleteGroups(_) => ApiKey::DELETE_GROUPS,
            Request::ReassignPartition(_) => ApiKey::REASSIGN_PARTITION,
            Request::AlterPartition(_) => ApiKey::ALTER_PARTITION,
            Request::DescribeCluster => ApiKey::DESCRIBE_CLUSTER,
            Request::BrokerRegistration(_) => ApiKey::BROKER_REGISTRATION,
            Request::BrokerHeartbeat(_) => ApiKey::BROKER_HEARTBEAT,
            Request::FetchMetadata(_) => ApiKey::FETCH_METADATA,
            Request::Rebalance(_) => ApiKey::REBALANCE,
        }
    }

    /// Reads a request body of the API and version in `header`; the whole rest of the frame
    /// must be the body.
    pub fn decode(header: &RequestHeader, mut reader: Reader) -> Result<Request, DecodeError> {
        let (min, max) = header.api_key.versions().ok_or(DecodeError::UnknownApi {
            api_key: header.api_key.0,
        })?;
        if header.api_version < min || header.api_version > max {
            return Err(DecodeError::UnsupportedVersion {
                api_key: header.api_key.0,
                api_version: header.api_version,
            });
        }
        reader.limit_elements(limits::REQUEST_ELEMENTS_MAX);
        let body = &mut reader;
        let request = match header.api_key {
            ApiKey::API_VERSIONS => Request::ApiVersions,
            ApiKey::METADATA => Request::Metadata(MetadataRequest {
                topics: body.nullable_array(2, Reader::string)?,
            }),
            ApiKey::CREATE_TOPICS => Request::CreateTopics(CreateTopicsRequest::decode(body)?),
            ApiKey::DELETE_TOPICS => Request::DeleteTopics(DeleteTopicsRequest {
                names: body.array(2, Reader::string)?,
                timeout_ms: body.i32()?,
            }),
            ApiKey::CREATE_PARTITIONS => Request::CreatePartitions(CreatePartitionsRequest {
                topics: body.array(6, |reader| {
                    Ok(CreatePartitionsTopic {
                        name: reader.string()?,
                        count: reader.i32()?,
                    })
                })?,
                timeout_ms: body.i32()?,
            }),
            ApiKey::PRODUCE => Request::Produce(ProduceRequest::decode(body)?),
            ApiKey::FETCH => Request::Fetch(FetchRequest::decode(body)?),
            ApiKey::LIST_OFFSETS => Request::ListOffsets(ListOffsetsRequest::decode(body)?),
            ApiKey::OFFSET_COMMIT => Request::OffsetCommit(OffsetCommitRequest::decode(body)?),
            ApiKey::OFFSET_FETCH => Request::OffsetFetch(OffsetFetchRequest::decode(body)?),
            ApiKey::FIND_COORDINATOR => {
                Request::FindCoordinator(FindCoordinatorRequest::decode(body)?)
            }
            ApiKey::JOIN_GROUP => Request::JoinGroup(JoinGroupRequest::decode(body)?),
            ApiKey::HEARTBEAT => Request::Heartbeat(HeartbeatRequest::decode(body)?),
            ApiKey::LEAVE_GROUP => Request::LeaveGroup(LeaveGroupRequest::decode(body)?),
            ApiKey::SYNC_GROUP => Request::SyncGroup(SyncGroupRequest::decode(body)?),
            ApiKey::DESCRIBE_GROUPS => Request::DescribeGroups(GroupsRequest::decode(body)?),
            ApiKey::LIST_GROUPS => Request::ListGroups,
            ApiKey::DELETE_GROUPS => Request::DeleteGroups(GroupsRequest::decode(body)?),
            ApiKey::REASSIGN_PARTITION => {
                Request::ReassignPartition(ReassignPartitionRequest::decode(body)?)
            }
            ApiKey::ALTER_PARTITION => {
                Request::AlterPartition(AlterPartitionRequest::decode(body)?)
            }
            ApiKey::DESCRIBE_CLUSTER => Request::DescribeCluster,
            ApiKey::BROKER_REGISTRATION => {
                Request::BrokerRegistration(BrokerRegistrationRequest::decode(body)?)
            }
            ApiKey::BROKER_HEARTBEAT => {
                Request::BrokerHeartbeat(BrokerHeartbeatRequest::decode(body)?)
            }
            ApiKey::FETCH_METADATA => Request::FetchMetadata(FetchMetadataRequest::decode(body)?),
            ApiKey::REBALANCE => Request::Rebalance(RebalanceRequest {
                dry_run: body.bool()?,
            }),
            ApiKey(api_key) => return Err(DecodeError::UnknownApi { api_key }),
        };
        reader.finish()?;
        Ok(request)
    }

    /// Writes the body.
    pub fn encode(&self, target: &mut BytesMut) {
        match self {
            Request::ApiVersions => {}
            Request::Metadata(request) => {
                wire::put_nullable_array(target, request.topics.as_deref(), |target, topic| {
                    wire::put_string(target, topic)
                });
            }
            Request::CreateTopics(request) => request.encode(target),
            Request::DeleteTopics(request) => {
                wire::put_array(target, &request.names, |target, name| {
                    wire::put_string(target, name)
                });
                target.put_i32(request.timeout_ms);
            }
            Request::CreatePartitions(request) => {
                wire::put_array(target, &request.topics, |target, topic| {
                    wire::put_string(target, &topic.name);
                    target.put_i32(topic.count);
                });
                target.put_i32(request.timeout_ms);
            }
            Request::Produce(request) => request.encode(target),
            Request::Fetch(request) => request.encode(target),
            Request::ListOffsets(request) => request.encode(target),
            Request::OffsetCommit(request) => request.encode(target),
            Request::OffsetFetch(request) => request.encode(target),
            Request::FindCoordinator(request) => request.encode(target),
            Request::JoinGroup(request) => request.encode(target),
            Request::Heartbeat(request) => request.encode(target),
            Request::LeaveGroup(request) => request.encode(target),
            Request::SyncGroup(request) => request.encode(target),
            Request::DescribeGroups(request) | Request::DeleteGroups(request) => {
                request.encode(target)
            }
            Request::ListGroups | Request::DescribeCluster => {}
            Request::ReassignPartition(request) => request.encode(target),
            Request::AlterPartition(request) => request.encode(target),
            Request::BrokerRegistration(request) => request.encode(target),
            Request::BrokerHeartbeat(request) => request.encode(target),
            Request::FetchMetadata(request) => request.encode(target),
            Request::Rebalance(request) => target.put_i8(i8::from(request.dry_run)),
        }
    }
}

/// Metadata of some topics (`Some`) or all (`None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataRequest {
    /// Topic names; `None` for every topic.
    pub topics: Option<Vec<String>>,
}

/// Create topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    /// The topics.
    pub topics: Vec<CreatableTopic>,
    /// How long the broker may take.
    pub timeout_ms: i32,
}

/// One topic to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreatableTopic {
    /// Its name.
    pub name: String,
    /// Number of partitions; -1 for the broker's default.
    pub partitions: i32,
    /// Replicas per partition; -1 for the broker's default.
    pub replication_factor: i16,
    /// Topic settings (`retention_ms`, `segment_bytes`, ...) overriding the broker's defaults.
    pub configs: Vec<(String, String)>,
}

impl CreateTopicsRequest {
    fn decode(reader: &mut Reader) -> Result<CreateTopicsRequest, DecodeError> {
        Ok(CreateTopicsRequest {
            topics: reader.array(12, |reader| {
                Ok(CreatableTopic {
                    name: reader.string()?,
                    partitions: reader.i32()?,
                    replication_factor: reader.i16()?,
                    configs: reader.array(4, |reader| Ok((reader.string()?, reader.string()?)))?,
                })
            })?,
            timeout_ms: reader.i32()?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            target.put_i32(topic.partitions);
            target.put_i16(topic.replication_factor);
            wire::put_array(target, &topic.configs, |target, (key, value)| {
                wire::put_string(target, key);
                wire::put_string(target, value);
            });
        });
        target.put_i32(self.timeout_ms);
    }
}

/// Delete topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    /// Their names.
    pub names: Vec<String>,
    /// How long the broker may take.
    pub timeout_ms: i32,
}

/// Grow topics to a new partition count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    /// The topics.
    pub topics: Vec<CreatePartitionsTopic>,
    /// How long the broker may take.
    pub timeout_ms: i32,
}

/// One topic to grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreatePartitionsTopic {
    /// Its name.
    pub name: String,
    /// The new total number of partitions.
    pub count: i32,
}

/// Append record batches to partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceRequest {
    /// 0: no response at all; 1: after the write; -1 (all): after the write is durable.
    pub acks: i16,
    /// How long the broker may wait for durability before answering `REQUEST_TIMED_OUT`.
    pub timeout_ms: i32,
    /// The data, by topic.
    pub topics: Vec<ProduceTopic>,
}

/// The data for one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceTopic {
    /// The topic.
    pub name: String,
    /// The data, by partition.
    pub partitions: Vec<ProducePartition>,
}

/// The data for one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducePartition {
    /// The partition.
    pub partition: i32,
    /// The leader epoch the producer believes current; -1 when unknown.
    pub leader_epoch: i32,
    /// One or more whole record batches, as split off the frame (mutable, so the broker can
    /// patch offsets into them without a copy).
    pub records: BytesMut,
}

impl ProduceRequest {
    fn decode(reader: &mut Reader) -> Result<ProduceRequest, DecodeError> {
        Ok(ProduceRequest {
            acks: reader.i16()?,
            timeout_ms: reader.i32()?,
            topics: reader.array(6, |reader| {
                Ok(ProduceTopic {
                    name: reader.string()?,
                    partitions: reader.array(12, |reader| {
                        Ok(ProducePartition {
                            partition: reader.i32()?,
                            leader_epoch: reader.i32()?,
                            records: reader.bytes()?,
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.acks);
        target.put_i32(self.timeout_ms);
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i32(partition.leader_epoch);
                wire::put_bytes(target, &partition.records);
            });
        });
    }

    /// Encodes the request as [`ProduceRequest::encode`] does, except that record sets of at
    /// least `shared_min` bytes are moved into `parts` as parts of their own instead of being
    /// copied: the frame is `parts` followed by what is left in `head`.
    pub(crate) fn encode_parts(
        self,
        head: &mut BytesMut,
        parts: &mut Vec<Bytes>,
        shared_min: usize,
    ) {
        head.put_i16(self.acks);
        head.put_i32(self.timeout_ms);
        head.put_i32(i32::try_from(self.topics.len()).unwrap_or(i32::MAX));
        for topic in self.topics {
            wire::put_string(head, &topic.name);
            head.put_i32(i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX));
            for partition in topic.partitions {
                head.put_i32(partition.partition);
                head.put_i32(partition.leader_epoch);
                if partition.records.len() < shared_min {
                    wire::put_bytes(head, &partition.records);
                    continue;
                }
                wire::put_bytes_length(head, partition.records.len());
                parts.push(head.split().freeze());
                parts.push(partition.records.freeze());
            }
        }
    }
}

/// Read record batches; long-polls until `min_bytes` are available or `max_wait_ms` passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchRequest {
    /// How long to wait for `min_bytes`.
    pub max_wait_ms: i32,
    /// Answer as soon as this many bytes are available (0: at once).
    pub min_bytes: i32,
    /// At most this many bytes in all (at least one batch is returned regardless).
    pub max_bytes: i32,
    /// What to read, by topic.
    pub topics: Vec<FetchTopic>,
}

/// What to read from one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchTopic {
    /// The topic.
    pub name: String,
    /// What to read, by partition.
    pub partitions: Vec<FetchPartition>,
}

/// What to read from one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition.
    pub partition: i32,
    /// The leader epoch the consumer believes current; -1 when unknown.
    pub current_leader_epoch: i32,
    /// The first offset wanted.
    pub fetch_offset: i64,
    /// At most this many bytes from this partition.
    pub partition_max_bytes: i32,
}

impl FetchRequest {
    fn decode(reader: &mut Reader) -> Result<FetchRequest, DecodeError> {
        Ok(FetchRequest {
            max_wait_ms: reader.i32()?,
            min_bytes: reader.i32()?,
            max_bytes: reader.i32()?,
            topics: reader.array(6, |reader| {
                Ok(FetchTopic {
                    name: reader.string()?,
                    partitions: reader.array(20, |reader| {
                        Ok(FetchPartition {
                            partition: reader.i32()?,
                            current_leader_epoch: reader.i32()?,
                            fetch_offset: reader.i64()?,
                            partition_max_bytes: reader.i32()?,
                        })
                    })?,
                })
            })?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        target.put_i32(self.max_wait_ms);
        target.put_i32(self.min_bytes);
        target.put_i32(self.max_bytes);
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i32(partition.current_leader_epoch);
                target.put_i64(partition.fetch_offset);
                target.put_i32(partition.partition_max_bytes);
            });
        });
    }
}

/// Offsets by position or time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// What to look up, by topic.
    pub topics: Vec<ListOffsetsTopic>,
}

/// What to look up in one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    /// The topic.
    pub name: String,
    /// What to look up, by partition.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// What to look up in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// The partition.
    pub partition: i32,
    /// [`ListOffsetsPartition::LATEST`], [`ListOffsetsPartition::EARLIEST`], or a timestamp
    /// (ms since the epoch): the first offset whose batch reaches it.
    pub timestamp: i64,
}

impl ListOffsetsPartition {
    /// The log end offset: where the next record will go.
    pub const LATEST: i64 = -1;
    /// The log start offset: the first record still stored.
    pub const EARLIEST: i64 = -2;
}

impl ListOffsetsRequest {
    fn decode(reader: &mut Reader) -> Result<ListOffsetsRequest, DecodeError> {
        Ok(ListOffsetsRequest {
            topics: reader.array(6, |reader| {
                Ok(ListOffsetsTopic {
                    name: reader.string()?,
                    partitions: reader.array(12, |reader| {
                        Ok(ListOffsetsPartition {
                            partition: reader.i32()?,
                            timestamp: reader.i64()?,
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
                target.put_i64(partition.timestamp);
            });
        });
    }
}
