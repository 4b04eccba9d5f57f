//! The group side of [`Admin`]: list, describe and delete groups, read and reset committed
//! offsets, and look up partitions' offsets (to reset them to).
//!
//! Every group request goes to the group's coordinator, found with FindCoordinator and found
//! again when it moved; ListGroups goes to every broker, each listing the groups it
//! coordinates. Resetting offsets commits with generation -1 and no member id, which the
//! coordinator accepts only while the group has no members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mq_protocol::request::{GroupsRequest, ListOffsetsPartition, OffsetCommitRequest, Request};
use mq_protocol::response::{DescribedGroup, Response};
use mq_protocol::ErrorCode;
use tokio::time::Instant;

use super::Admin;
use crate::client::TopicPartition;
use crate::consumer::list_offsets;
use crate::error::ClientError;
use crate::group::{commit_result, commit_topics, fetch_committed, flatten, Coordinator};

/// The pause between attempts of a group request that failed because the coordinator moved
/// or was unreachable.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A group in [`Admin::list_groups`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    /// How many members it has.
    pub members: i32,
}

/// A group's state and members, from [`Admin::describe_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, or `Dead` for a group
    /// the coordinator does not know (neither members nor committed offsets).
    pub state: String,
    /// The assignment strategy of the current generation; empty when there is none.
    pub assignor: String,
    /// The current generation (0 before the first).
    pub generation_id: i32,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// A member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The id the coordinator gave it.
    pub member_id: String,
    /// The client id it connected with.
    pub client_id: String,
    /// The address it connected from.
    pub client_host: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its partitions in the current generation, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A group's committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The offset of the next record the group will read.
    pub offset: i64,
    /// The text committed with it, if any.
    pub metadata: Option<String>,
}

/// Which offset [`Admin::list_offsets`] looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still stored.
    Earliest,
    /// The log end: the offset the next record will get.
    Latest,
    /// The first record with a timestamp at or after this (milliseconds since the Unix
    /// epoch), found by batch; the log end when no record is that recent.
    Timestamp(i64),
}

impl Admin {
    /// Every group the cluster's coordinators know (with members, or with committed
    /// offsets), sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let brokers = self.cluster().await?.brokers;
        let mut groups = BTreeMap::new();
        for broker in brokers {
            let response = self
                .client
                .request_to(&broker.address(), Request::ListGroups)
                .await?;
            let Response::ListGroups(response) = response else {
                return Err(ClientError::UnexpectedResponse { api: "ListGroups" });
            };
            if response.error_code != ErrorCode::NONE {
                return Err(ClientError::broker(response.error_code, None));
            }
            for group in response.groups {
                let listing = GroupListing {
                    group_id: group.group_id,
                    state: group.state,
                    members: group.members,
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Group `group`'s state, generation and members with their partitions. A group the
    /// coordinator does not know is described as `Dead`, without members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = Request::DescribeGroups(GroupsRequest {
            groups: vec![group.to_string()],
        });
        let Response::DescribeGroups(response) = self.group_request(group, request).await? else {
            return Err(ClientError::UnexpectedResponse {
                api: "DescribeGroups",
            });
        };
        let described = response
            .groups
            .into_iter()
            .find(|described| described.group_id == group);
        match described {
            Some(described) if described.error_code == ErrorCode::NONE => Ok(describe(described)),
            Some(described) if described.error_code == ErrorCode::GROUP_ID_NOT_FOUND => {
                Ok(GroupDescription {
                    group_id: group.to_string(),
                    state: "Dead".to_string(),
                    assignor: String::new(),
                    generation_id: 0,
                    members: Vec::new(),
                })
            }
            Some(described) => Err(ClientError::Group {
                group: group.to_string(),
                code: described.error_code,
            }),
            None => Err(ClientError::UnexpectedResponse {
                api: "DescribeGroups",
            }),
        }
    }

    /// Every committed offset of group `group`, by partition; empty for a group without
    /// any (or unknown).
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, CommittedOffset>, ClientError> {
        let coordinator = self.coordinator(group);
        let timeout = self.client.config().request_timeout;
        let fetched =
            fetch_committed(&coordinator, None, timeout, Instant::now() + timeout).await?;
        Ok(fetched
            .into_iter()
            .filter(|(_, offset, _)| *offset >= 0)
            .map(|(topic_partition, offset, metadata)| {
                (topic_partition, CommittedOffset { offset, metadata })
            })
            .collect())
    }

    /// Sets group `group`'s committed offsets of some partitions (each the offset of the next
    /// record to read). Only while the group has no members: otherwise
    /// [`ClientError::GroupNotEmpty`].
    pub async fn alter_committed_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        if let Some((topic_partition, offset)) = offsets.iter().find(|(_, offset)| *offset < 0) {
            return Err(ClientError::InvalidConfig {
                name: "offset",
                reason: format!("{offset} for {topic_partition} is negative"),
            });
        }
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group_id: group.to_string(),
            generation_id: -1,
            member_id: String::new(),
            topics: commit_topics(offsets),
        });
        let Response::OffsetCommit(response) = self.group_request(group, request).await? else {
            return Err(ClientError::UnexpectedResponse {
                api: "OffsetCommit",
            });
        };
        commit_result(group, &response)
    }

    /// Deletes group `group` and its committed offsets. Only a group without members:
    /// otherwise [`ClientError::GroupNotEmpty`]; an unknown group is
    /// [`ClientError::UnknownGroup`].
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = Request::DeleteGroups(GroupsRequest {
            groups: vec![group.to_string()],
        });
        let Response::DeleteGroups(response) = self.group_request(group, request).await? else {
            return Err(ClientError::UnexpectedResponse {
                api: "DeleteGroups",
            });
        };
        let code = response
            .groups
            .iter()
            .find(|(id, _)| id == group)
            .map(|(_, code)| *code)
            .ok_or(ClientError::UnexpectedResponse {
                api: "DeleteGroups",
            })?;
        match code {
            ErrorCode::NONE => Ok(()),
            ErrorCode::NON_EMPTY_GROUP => Err(ClientError::GroupNotEmpty {
                group: group.to_string(),
                action: "deleting it",
            }),
            ErrorCode::GROUP_ID_NOT_FOUND => Err(ClientError::UnknownGroup {
                group: group.to_string(),
            }),
            code => Err(ClientError::Group {
                group: group.to_string(),
                code,
            }),
        }
    }

    /// The offsets of `partitions` per `spec`, each asked of the partition's leader.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let timestamp = match spec {
            OffsetSpec::Earliest => ListOffsetsPartition::EARLIEST,
            OffsetSpec::Latest => ListOffsetsPartition::LATEST,
            OffsetSpec::Timestamp(timestamp) => timestamp,
        };
        let mut offsets: BTreeMap<TopicPartition, i64> =
            list_offsets(&self.client, partitions, timestamp, RETRY_BACKOFF)
                .await?
                .into_iter()
                .collect();
        // No record that recent: the log end, as for a consumer's seek by time.
        let too_recent: Vec<TopicPartition> = offsets
            .iter()
            .filter(|(_, offset)| **offset < 0)
            .map(|(topic_partition, _)| topic_partition.clone())
            .collect();
        if !too_recent.is_empty() {
            let ends = list_offsets(
                &self.client,
                &too_recent,
                ListOffsetsPartition::LATEST,
                RETRY_BACKOFF,
            )
            .await?;
            offsets.extend(ends);
        }
        Ok(offsets)
    }

    /// The coordinator of `group`, to be looked up.
    fn coordinator(&self, group: &str) -> Arc<Coordinator> {
        Coordinator::new(self.client.clone(), group, RETRY_BACKOFF)
    }

    /// Sends `request` to `group`'s coordinator, retrying within the request timeout while
    /// the coordinator moves or cannot be reached.
    async fn group_request(&self, group: &str, request: Request) -> Result<Response, ClientError> {
        let timeout = self.client.config().request_timeout;
        self.coordinator(group)
            .request(request, timeout, Instant::now() + timeout)
            .await
    }
}

/// Converts a described group.
fn describe(described: DescribedGroup) -> GroupDescription {
    GroupDescription {
        group_id: described.group_id,
        state: described.state,
        assignor: described.assignor,
        generation_id: described.generation_id,
        members: described
            .members
            .into_iter()
            .map(|member| MemberDescription {
                member_id: member.member_id,
                client_id: member.client_id,
                client_host: member.client_host,
                topics: member.topics,
                assignment: flatten(member.assignment),
            })
            .collect(),
    }
}
