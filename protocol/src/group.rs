//! Messages of consumer groups and committed offsets.
//!
//! The semantics (generations, the coordinator's states, who assigns partitions) are in
//! `docs/groups.md`; this module only encodes and decodes. Every message is at version 0.
//!
//! ```text
//! FindCoordinator  group_id                                  → error, node_id, host, port
//! JoinGroup        group_id, session/rebalance timeouts,     → error, generation, assignor,
//!                  member_id ("" when new), topics, assignors   leader_id, member_id
//! SyncGroup        group_id, generation, member_id           → error, assignment
//! Heartbeat        group_id, generation, member_id, max_wait → error
//! LeaveGroup       group_id, member_id                       → error
//! OffsetCommit     group_id, generation, member_id, offsets  → error per partition
//! OffsetFetch      group_id, partitions (null: all)          → error, offsets
//! DescribeGroups   group_ids                                 → state, members, assignments
//! ListGroups       -                                         → group ids, states
//! DeleteGroups     group_ids                                 → error per group
//! ```

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::wire::{self, Reader};

/// Minimum encoded sizes of array elements, so that a hostile count fails before allocating.
const STRING_MIN: usize = 2;
const I32_SIZE: usize = 4;

/// Some partitions of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TopicPartitions {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: Vec<i32>,
}

impl TopicPartitions {
    fn decode(reader: &mut Reader) -> Result<TopicPartitions, DecodeError> {
        Ok(TopicPartitions {
            topic: reader.string()?,
            partitions: reader.array(I32_SIZE, Reader::i32)?,
        })
    }

    fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.topic);
        wire::put_array(target, &self.partitions, |target, partition| {
            target.put_i32(*partition)
        });
    }

    fn decode_list(reader: &mut Reader) -> Result<Vec<TopicPartitions>, DecodeError> {
        reader.array(STRING_MIN + 4, TopicPartitions::decode)
    }

    fn encode_list(target: &mut BytesMut, list: &[TopicPartitions]) {
        wire::put_array(target, list, |target, topic| topic.encode(target));
    }
}

fn decode_strings(reader: &mut Reader) -> Result<Vec<String>, DecodeError> {
    reader.array(STRING_MIN, Reader::string)
}

fn encode_strings(target: &mut BytesMut, list: &[String]) {
    wire::put_array(target, list, |target, value| {
        wire::put_string(target, value)
    });
}

fn decode_error(reader: &mut Reader) -> Result<ErrorCode, DecodeError> {
    Ok(ErrorCode(reader.i16()?))
}

// ---------------------------------------------------------------------------------------------
// FindCoordinator

/// Which broker coordinates a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// The group.
    pub group_id: String,
}

impl FindCoordinatorRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorRequest {
            group_id: reader.string()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
    }
}

/// The group's coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// `NONE`, or why there is no coordinator (`COORDINATOR_NOT_AVAILABLE`, `INVALID_GROUP_ID`).
    pub error_code: ErrorCode,
    /// The coordinator's node id.
    pub node_id: i32,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: i32,
}

impl FindCoordinatorResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FindCoordinatorResponse {
            error_code: decode_error(reader)?,
            node_id: reader.i32()?,
            host: reader.string()?,
            port: reader.i32()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
        target.put_i32(self.node_id);
        wire::put_string(target, &self.host);
        target.put_i32(self.port);
    }
}

// ---------------------------------------------------------------------------------------------
// JoinGroup

/// Join a group, or rejoin it for a new generation. Answered once the generation is formed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// The group.
    pub group_id: String,
    /// The member is removed if the coordinator hears nothing from it for this long.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for every member to rejoin in a rebalance.
    pub rebalance_timeout_ms: i32,
    /// The id the coordinator gave this member; empty for a new member.
    pub member_id: String,
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// The assignment strategies the member accepts, preferred first
    /// (`sticky`, `range`, `roundrobin`).
    pub assignors: Vec<String>,
}

impl JoinGroupRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(JoinGroupRequest {
            group_id: reader.string()?,
            session_timeout_ms: reader.i32()?,
            rebalance_timeout_ms: reader.i32()?,
            member_id: reader.string()?,
            topics: decode_strings(reader)?,
            assignors: decode_strings(reader)?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        target.put_i32(self.session_timeout_ms);
        target.put_i32(self.rebalance_timeout_ms);
        wire::put_string(target, &self.member_id);
        encode_strings(target, &self.topics);
        encode_strings(target, &self.assignors);
    }
}

/// The generation a member joined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// `NONE` or why the member could not join.
    pub error_code: ErrorCode,
    /// The new generation.
    pub generation_id: i32,
    /// The strategy the coordinator assigned partitions with.
    pub assignor: String,
    /// The member that joined first (informational: the coordinator assigns).
    pub leader_id: String,
    /// This member's id, to use in every later request.
    pub member_id: String,
}

impl JoinGroupResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(JoinGroupResponse {
            error_code: decode_error(reader)?,
            generation_id: reader.i32()?,
            assignor: reader.string()?,
            leader_id: reader.string()?,
            member_id: reader.string()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
        target.put_i32(self.generation_id);
        wire::put_string(target, &self.assignor);
        wire::put_string(target, &self.leader_id);
        wire::put_string(target, &self.member_id);
    }
}

// ---------------------------------------------------------------------------------------------
// SyncGroup

/// Collect this member's assignment for a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation from JoinGroup.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
}

impl SyncGroupRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(SyncGroupRequest {
            group_id: reader.string()?,
            generation_id: reader.i32()?,
            member_id: reader.string()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        target.put_i32(self.generation_id);
        wire::put_string(target, &self.member_id);
    }
}

/// A member's partitions for a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncGroupResponse {
    /// `NONE`, or why there is no assignment (`REBALANCE_IN_PROGRESS`, `ILLEGAL_GENERATION`).
    pub error_code: ErrorCode,
    /// The member's partitions.
    pub assignment: Vec<TopicPartitions>,
}

impl SyncGroupResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(SyncGroupResponse {
            error_code: decode_error(reader)?,
            assignment: TopicPartitions::decode_list(reader)?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
        TopicPartitions::encode_list(target, &self.assignment);
    }
}

// ---------------------------------------------------------------------------------------------
// Heartbeat

/// Keep the membership alive; learn of a rebalance. Long-polls: answered at once unless the
/// group is stable at the member's generation, then when a rebalance starts or after
/// `max_wait_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// How long the coordinator may hold the answer while nothing changes (0: at once).
    pub max_wait_ms: i32,
}

impl HeartbeatRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(HeartbeatRequest {
            group_id: reader.string()?,
            generation_id: reader.i32()?,
            member_id: reader.string()?,
            max_wait_ms: reader.i32()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        target.put_i32(self.generation_id);
        wire::put_string(target, &self.member_id);
        target.put_i32(self.max_wait_ms);
    }
}

/// A response that is only an error code (Heartbeat, LeaveGroup).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupErrorResponse {
    /// `NONE`, `REBALANCE_IN_PROGRESS` (rejoin), `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, ...
    pub error_code: ErrorCode,
}

impl GroupErrorResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(GroupErrorResponse {
            error_code: decode_error(reader)?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
    }
}

// ---------------------------------------------------------------------------------------------
// LeaveGroup

/// Leave a group now instead of after the session timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// The group.
    pub group_id: String,
    /// The member.
    pub member_id: String,
}

impl LeaveGroupRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(LeaveGroupRequest {
            group_id: reader.string()?,
            member_id: reader.string()?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        wire::put_string(target, &self.member_id);
    }
}

// ---------------------------------------------------------------------------------------------
// OffsetCommit

/// Store a group's positions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation; -1 (with an empty member id) to commit outside membership,
    /// which is allowed only while the group has no members.
    pub generation_id: i32,
    /// The member; empty outside membership.
    pub member_id: String,
    /// The offsets, by topic.
    pub topics: Vec<OffsetCommitTopic>,
}

/// Offsets to commit in one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    /// The topic.
    pub name: String,
    /// The offsets, by partition.
    pub partitions: Vec<OffsetCommitPartition>,
}

/// One offset to commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// The partition.
    pub partition: i32,
    /// The next offset to consume (one past the last record processed).
    pub offset: i64,
    /// Free-form text stored with the offset.
    pub metadata: Option<String>,
}

impl OffsetCommitRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetCommitRequest {
            group_id: reader.string()?,
            generation_id: reader.i32()?,
            member_id: reader.string()?,
            topics: reader.array(STRING_MIN + 4, |reader| {
                Ok(OffsetCommitTopic {
                    name: reader.string()?,
                    partitions: reader.array(14, |reader| {
                        Ok(OffsetCommitPartition {
                            partition: reader.i32()?,
                            offset: reader.i64()?,
                            metadata: reader.nullable_string()?,
                        })
                    })?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        target.put_i32(self.generation_id);
        wire::put_string(target, &self.member_id);
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i64(partition.offset);
                wire::put_nullable_string(target, partition.metadata.as_deref());
            });
        });
    }
}

/// Errors per topic and partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionErrorsResponse {
    /// By topic.
    pub topics: Vec<TopicPartitionErrors>,
}

/// Errors of one topic's partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPartitionErrors {
    /// The topic.
    pub name: String,
    /// `(partition, error)`.
    pub partitions: Vec<(i32, ErrorCode)>,
}

impl PartitionErrorsResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(PartitionErrorsResponse {
            topics: reader.array(STRING_MIN + 4, |reader| {
                Ok(TopicPartitionErrors {
                    name: reader.string()?,
                    partitions: reader
                        .array(6, |reader| Ok((reader.i32()?, decode_error(reader)?)))?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, (partition, error)| {
                target.put_i32(*partition);
                target.put_i16(error.0);
            });
        });
    }
}

// ---------------------------------------------------------------------------------------------
// OffsetFetch

/// Read a group's committed offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// The group.
    pub group_id: String,
    /// The partitions; `None` for every partition the group has an offset for.
    pub topics: Option<Vec<TopicPartitions>>,
}

impl OffsetFetchRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetFetchRequest {
            group_id: reader.string()?,
            topics: reader.nullable_array(STRING_MIN + 4, TopicPartitions::decode)?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_string(target, &self.group_id);
        wire::put_nullable_array(target, self.topics.as_deref(), |target, topic| {
            topic.encode(target)
        });
    }
}

/// A group's committed offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// An error of the whole group (`INVALID_GROUP_ID`, `COORDINATOR_NOT_AVAILABLE`).
    pub error_code: ErrorCode,
    /// By topic.
    pub topics: Vec<OffsetFetchTopic>,
}

/// Committed offsets in one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetFetchTopic {
    /// The topic.
    pub name: String,
    /// By partition.
    pub partitions: Vec<OffsetFetchPartition>,
}

/// One partition's committed offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetFetchPartition {
    /// The partition.
    pub partition: i32,
    /// The committed offset; -1 when the group has none for this partition.
    pub offset: i64,
    /// The text committed with it.
    pub metadata: Option<String>,
    /// `NONE` or why this partition has no answer.
    pub error_code: ErrorCode,
}

impl OffsetFetchResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(OffsetFetchResponse {
            error_code: decode_error(reader)?,
            topics: reader.array(STRING_MIN + 4, |reader| {
                Ok(OffsetFetchTopic {
                    name: reader.string()?,
                    partitions: reader.array(16, |reader| {
                        Ok(OffsetFetchPartition {
                            partition: reader.i32()?,
                            offset: reader.i64()?,
                            metadata: reader.nullable_string()?,
                            error_code: decode_error(reader)?,
                        })
                    })?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
        wire::put_array(target, &self.topics, |target, topic| {
            wire::put_string(target, &topic.name);
            wire::put_array(target, &topic.partitions, |target, partition| {
                target.put_i32(partition.partition);
                target.put_i64(partition.offset);
                wire::put_nullable_string(target, partition.metadata.as_deref());
                target.put_i16(partition.error_code.0);
            });
        });
    }
}

// ---------------------------------------------------------------------------------------------
// DescribeGroups, ListGroups, DeleteGroups

/// Groups by id (DescribeGroups, DeleteGroups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupsRequest {
    /// The group ids.
    pub groups: Vec<String>,
}

impl GroupsRequest {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(GroupsRequest {
            groups: decode_strings(reader)?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        encode_strings(target, &self.groups);
    }
}

/// Groups described.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    /// One per requested group, in request order.
    pub groups: Vec<DescribedGroup>,
}

/// One group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribedGroup {
    /// `NONE` or why the group could not be described.
    pub error_code: ErrorCode,
    /// The group.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead` (unknown).
    pub state: String,
    /// The strategy of the current generation; empty when there is none.
    pub assignor: String,
    /// The current generation (0 before the first).
    pub generation_id: i32,
    /// The members.
    pub members: Vec<DescribedMember>,
}

/// One member of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribedMember {
    /// Its id.
    pub member_id: String,
    /// The client id it connected with.
    pub client_id: String,
    /// The address it connected from.
    pub client_host: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its partitions in the current generation.
    pub assignment: Vec<TopicPartitions>,
}

impl DescribeGroupsResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeGroupsResponse {
            groups: reader.array(16, |reader| {
                Ok(DescribedGroup {
                    error_code: decode_error(reader)?,
                    group_id: reader.string()?,
                    state: reader.string()?,
                    assignor: reader.string()?,
                    generation_id: reader.i32()?,
                    members: reader.array(14, |reader| {
                        Ok(DescribedMember {
                            member_id: reader.string()?,
                            client_id: reader.string()?,
                            client_host: reader.string()?,
                            topics: decode_strings(reader)?,
                            assignment: TopicPartitions::decode_list(reader)?,
                        })
                    })?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.groups, |target, group| {
            target.put_i16(group.error_code.0);
            wire::put_string(target, &group.group_id);
            wire::put_string(target, &group.state);
            wire::put_string(target, &group.assignor);
            target.put_i32(group.generation_id);
            wire::put_array(target, &group.members, |target, member| {
                wire::put_string(target, &member.member_id);
                wire::put_string(target, &member.client_id);
                wire::put_string(target, &member.client_host);
                encode_strings(target, &member.topics);
                TopicPartitions::encode_list(target, &member.assignment);
            });
        });
    }
}

/// Every group the coordinator knows: with members, or with committed offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// `NONE` or why the groups could not be listed.
    pub error_code: ErrorCode,
    /// The groups, by id.
    pub groups: Vec<ListedGroup>,
}

/// One group in a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group.
    pub group_id: String,
    /// Its state (as in [`DescribedGroup::state`]).
    pub state: String,
    /// How many members it has.
    pub members: i32,
}

impl ListGroupsResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListGroupsResponse {
            error_code: decode_error(reader)?,
            groups: reader.array(8, |reader| {
                Ok(ListedGroup {
                    group_id: reader.string()?,
                    state: reader.string()?,
                    members: reader.i32()?,
                })
            })?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        target.put_i16(self.error_code.0);
        wire::put_array(target, &self.groups, |target, group| {
            wire::put_string(target, &group.group_id);
            wire::put_string(target, &group.state);
            target.put_i32(group.members);
        });
    }
}

/// An error per group (DeleteGroups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupErrorsResponse {
    /// `(group id, error)`, in request order.
    pub groups: Vec<(String, ErrorCode)>,
}

impl GroupErrorsResponse {
    pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        Ok(GroupErrorsResponse {
            groups: reader.array(4, |reader| Ok((reader.string()?, decode_error(reader)?)))?,
        })
    }

    pub(crate) fn encode(&self, target: &mut BytesMut) {
        wire::put_array(target, &self.groups, |target, (group, error)| {
            wire::put_string(target, group);
            target.put_i16(error.0);
        });
    }
}
