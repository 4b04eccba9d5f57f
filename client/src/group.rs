//! Group membership: joining a consumer group, staying in it, committing, leaving.
//!
//! The semantics are in `docs/groups.md`: the coordinator (a broker) assigns the partitions
//! when a generation forms, rebalancing is eager (every member gives up every partition, then
//! rejoins), and a member learns of a rebalance from its heartbeat. This module is the
//! member's side of that protocol; it does not fetch records or keep positions (that is the
//! [`Consumer`](crate::Consumer)'s job).
//!
//! ```text
//!            ┌──────────── Membership (owned by the consumer) ──────────────┐
//!  poll ───► │ join: JoinGroup (held until the generation forms), SyncGroup │
//!            │ committed: OffsetFetch            leave: LeaveGroup          │
//!            └──┬──────────────────────────┬────────────────────────────────┘
//!               │ one per generation       │ one per member
//!        heartbeat task             committer task (offsets.rs)
//!               │ REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID
//!               └──────────► Signal ──► the consumer rejoins in poll
//! ```
//!
//! Every request goes to the group's coordinator through one [`Coordinator`], which finds it
//! and finds it again when it moves.

mod coordinator;
mod heartbeat;
mod offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mq_protocol::request::{
    JoinGroupRequest, LeaveGroupRequest, Request, SyncGroupRequest, TopicPartitions,
};
use mq_protocol::response::{JoinGroupResponse, Response};
use mq_protocol::ErrorCode;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, TopicPartition};
use crate::error::ClientError;

pub(crate) use coordinator::Coordinator;
pub use offsets::CommitHandle;
pub(crate) use offsets::{commit_result, commit_topics, fetch_committed, Committer};

/// How much longer than the rebalance timeout a JoinGroup may take: the coordinator holds it
/// up to the rebalance timeout, then needs a moment to answer.
const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// The longest group id the coordinator accepts, in bytes.
pub(crate) const GROUP_ID_BYTES_MAX: usize = 255;

/// A member's settings, from [`ConsumerConfig`](crate::ConsumerConfig) and the client's.
#[derive(Clone, Debug)]
pub(crate) struct GroupSettings {
    /// The coordinator removes the member when it hears nothing from it for this long.
    pub(crate) session_timeout: Duration,
    /// How long the coordinator may hold a heartbeat.
    pub(crate) heartbeat_interval: Duration,
    /// How long the coordinator waits for the members to rejoin in a rebalance.
    pub(crate) rebalance_timeout: Duration,
    /// The assignment strategies accepted, preferred first.
    pub(crate) assignors: Vec<String>,
    /// The pause between attempts of a failed request.
    pub(crate) retry_backoff: Duration,
    /// How long an ordinary request may wait for its answer.
    pub(crate) request_timeout: Duration,
}

/// A member's place in a generation of its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The generation's id.
    pub(crate) id: i32,
    /// The member's id.
    pub(crate) member_id: String,
}

impl Generation {
    /// Whether a member that was `self` and is now `next` owned its partitions all along:
    /// same member (it was not removed meanwhile) and the same or the following generation,
    /// so that nobody else can have owned any of them in between.
    pub(crate) fn continues_into(&self, next: &Generation) -> bool {
        self.member_id == next.member_id && (next.id == self.id || next.id == self.id + 1)
    }
}

/// Rejoin requests from a member's background tasks, for the consumer to pick up.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    /// The latest request: the generation it is about and the coordinator's reason.
    reason: Mutex<Option<(i32, ErrorCode)>>,
    /// Wakes a `poll` waiting for records.
    notify: Notify,
}

impl Signal {
    /// Asks the member of `generation` to rejoin.
    pub(crate) fn rejoin(&self, generation: i32, code: ErrorCode) {
        *self.lock() = Some((generation, code));
        self.notify.notify_one();
    }

    /// Waits until a rejoin is asked for (possibly before this call: a request that nobody
    /// waited for is kept).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    fn take(&self) -> Option<(i32, ErrorCode)> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i32, ErrorCode)>> {
        // A plain value: valid whatever a panicking holder was doing.
        self.reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A consumer's membership of one group.
///
/// Starts outside the group; [`Membership::join`] (called from `poll`) joins it, and again
/// whenever [`Membership::needs_join`] says so. Dropping it stops the heartbeat task; queued
/// commits are still sent, and the coordinator removes the member after its session timeout
/// ([`Membership::leave`] removes it at once).
#[derive(Debug)]
pub(crate) struct Membership {
    /// Where the group's requests go.
    coordinator: Arc<Coordinator>,
    /// The member's settings.
    settings: GroupSettings,
    /// The topics subscribed to.
    topics: Vec<String>,
    /// The id the coordinator gave this member; empty before the first join and after the
    /// coordinator forgot the member.
    member_id: String,
    /// The generation joined; `None` before the first join and while rejoining.
    generation: Option<Generation>,
    /// Whether the member must (re)join: not joined yet, subscription changed, or the
    /// coordinator said so.
    join_needed: bool,
    /// Rejoin requests from the heartbeat task and the committer.
    signal: Arc<Signal>,
    /// The heartbeat task of the current generation.
    heartbeat: Option<JoinHandle<()>>,
    /// The committer, started at the first join.
    committer: Option<Committer>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Membership {
    /// A member-to-be of `group_id`, subscribing to `topics`. Nothing is sent yet.
    pub(crate) fn new(
        client: Client,
        group_id: &str,
        topics: Vec<String>,
        settings: GroupSettings,
    ) -> Membership {
        Membership {
            coordinator: Coordinator::new(client, group_id, settings.retry_backoff),
            settings,
            topics,
            member_id: String::new(),
            generation: None,
            join_needed: true,
            signal: Arc::new(Signal::default()),
            heartbeat: None,
            committer: None,
        }
    }

    /// The group.
    pub(crate) fn group_id(&self) -> &str {
        self.coordinator.group_id()
    }

    /// The generation joined, if any.
    pub(crate) fn generation(&self) -> Option<&Generation> {
        self.generation.as_ref()
    }

    /// The member id, once the coordinator gave one.
    pub(crate) fn member_id(&self) -> Option<&str> {
        Some(self.member_id.as_str()).filter(|id| !id.is_empty())
    }

    /// Changes the subscription; a change takes effect at the next join, which it requires.
    pub(crate) fn set_topics(&mut self, topics: Vec<String>) {
        if topics != self.topics {
            self.topics = topics;
            self.join_needed = true;
        }
    }

    /// Where rejoin requests are announced.
    pub(crate) fn signal(&self) -> Arc<Signal> {
        Arc::clone(&self.signal)
    }

    /// Whether the member must (re)join before going on: first picks up what the background
    /// tasks reported about the current generation.
    pub(crate) fn needs_join(&mut self) -> bool {
        if let Some((generation, code)) = self.signal.take() {
            if self.generation.as_ref().map(|current| current.id) == Some(generation) {
                tracing::info!(group = self.group_id(), generation, %code, "rejoining the group");
                if code == ErrorCode::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                self.join_needed = true;
            }
        }
        self.join_needed
    }

    /// Joins the group for a new generation: JoinGroup (held by the coordinator until the
    /// generation forms) then SyncGroup, again as often as the coordinator starts over.
    /// Returns the generation and this member's partitions, sorted. Retriable failures (the
    /// coordinator moved or is unreachable) are retried until `deadline`.
    ///
    /// The heartbeat task is stopped for the duration and restarted for the new generation.
    pub(crate) async fn join(
        &mut self,
        deadline: Instant,
    ) -> Result<(Generation, Vec<TopicPartition>), ClientError> {
        self.stop_heartbeat();
        self.generation = None;
        let (joined, assignment) = loop {
            let joined = self.join_group(deadline).await?;
            let generation = Generation {
                id: joined.generation_id,
                member_id: joined.member_id.clone(),
            };
            if let Some(assignment) = self.sync_group(&generation, deadline).await? {
                break (joined, assignment);
            }
        };
        let generation = Generation {
            id: joined.generation_id,
            member_id: joined.member_id,
        };
        tracing::info!(
            group = self.group_id(),
            generation = generation.id,
            member_id = generation.member_id,
            assignor = joined.assignor,
            partitions = assignment.len(),
            "joined the group"
        );
        // Requests about earlier generations are moot now.
        self.signal.take();
        self.join_needed = false;
        self.generation = Some(generation.clone());
        self.heartbeat = Some(heartbeat::spawn(
            Arc::clone(&self.coordinator),
            generation.clone(),
            &self.settings,
            Arc::clone(&self.signal),
        ));
        if self.committer.is_none() {
            self.committer = Some(Committer::start(
                Arc::clone(&self.coordinator),
                Arc::clone(&self.signal),
                self.settings.request_timeout,
            ));
        }
        Ok((generation, assignment))
    }

    /// JoinGroup until the coordinator accepts this member: joins anew (with an empty id)
    /// when the coordinator forgot it.
    async fn join_group(&mut self, deadline: Instant) -> Result<JoinGroupResponse, ClientError> {
        let timeout = self.settings.rebalance_timeout + JOIN_TIMEOUT_MARGIN;
        loop {
            let request = Request::JoinGroup(JoinGroupRequest {
                group_id: self.group_id().to_string(),
                session_timeout_ms: millis_i32(self.settings.session_timeout),
                rebalance_timeout_ms: millis_i32(self.settings.rebalance_timeout),
                member_id: self.member_id.clone(),
                topics: self.topics.clone(),
                assignors: self.settings.assignors.clone(),
            });
            let response = self.coordinator.request(request, timeout, deadline).await?;
            let Response::JoinGroup(response) = response else {
                return Err(ClientError::UnexpectedResponse { api: "JoinGroup" });
            };
            match response.error_code {
                ErrorCode::NONE => {
                    self.member_id.clone_from(&response.member_id);
                    return Ok(response);
                }
                ErrorCode::UNKNOWN_MEMBER_ID if !self.member_id.is_empty() => {
                    tracing::info!(
                        group = self.group_id(),
                        "the coordinator forgot this member"
                    );
                    self.member_id.clear();
                }
                code => return Err(self.coordinator.error(code)),
            }
        }
    }

    /// SyncGroup: this member's partitions in `generation`, or `None` when the group started
    /// over meanwhile (join again).
    async fn sync_group(
        &mut self,
        generation: &Generation,
        deadline: Instant,
    ) -> Result<Option<Vec<TopicPartition>>, ClientError> {
        let request = Request::SyncGroup(SyncGroupRequest {
            group_id: self.group_id().to_string(),
            generation_id: generation.id,
            member_id: generation.member_id.clone(),
        });
        let timeout = self.settings.request_timeout;
        let response = self.coordinator.request(request, timeout, deadline).await?;
        let Response::SyncGroup(response) = response else {
            return Err(ClientError::UnexpectedResponse { api: "SyncGroup" });
        };
        match response.error_code {
            ErrorCode::NONE => Ok(Some(flatten(response.assignment))),
            ErrorCode::REBALANCE_IN_PROGRESS | ErrorCode::ILLEGAL_GENERATION => Ok(None),
            ErrorCode::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(None)
            }
            code => Err(self.coordinator.error(code)),
        }
    }

    /// The group's committed offsets of `partitions` (`None` where it has none), retrying a
    /// moved coordinator until `deadline`.
    pub(crate) async fn committed(
        &self,
        partitions: &[TopicPartition],
        deadline: Instant,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, ClientError> {
        let fetched = fetch_committed(
            &self.coordinator,
            Some(partitions),
            self.settings.request_timeout,
            deadline,
        )
        .await?;
        let mut offsets: HashMap<TopicPartition, Option<i64>> = partitions
            .iter()
            .map(|topic_partition| (topic_partition.clone(), None))
            .collect();
        for (topic_partition, offset, _) in fetched {
            if let Some(slot) = offsets.get_mut(&topic_partition) {
                *slot = (offset >= 0).then_some(offset);
            }
        }
        Ok(offsets)
    }

    /// Queues a commit of `offsets` in the current generation; the handle completes once the
    /// coordinator answered. With no offsets, it completes once the earlier commits did.
    pub(crate) fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> CommitHandle {
        match self.committer_for(&offsets) {
            Ok(Some(committer)) => committer.commit(self.generation.clone(), offsets),
            Ok(None) => CommitHandle::ready(Ok(())),
            Err(error) => CommitHandle::ready(Err(error)),
        }
    }

    /// Like [`Membership::commit`], waiting for room in the queue rather than failing.
    pub(crate) async fn commit_waiting(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<(), ClientError> {
        match self.committer_for(&offsets)? {
            Some(committer) => {
                committer
                    .commit_waiting(self.generation.clone(), offsets)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Queues a commit whose failure is only logged (auto-commit).
    pub(crate) fn commit_logged(&self, offsets: Vec<(TopicPartition, i64)>) {
        if let Ok(Some(committer)) = self.committer_for(&offsets) {
            committer.commit_logged(self.generation.clone(), offsets);
        }
    }

    /// The committer for a commit of `offsets`: `None` when there is nothing to commit nor
    /// wait for; an error when there are offsets but no generation to commit them in.
    fn committer_for(
        &self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<Option<&Committer>, ClientError> {
        if !offsets.is_empty() && self.generation.is_none() {
            return Err(ClientError::NotMember {
                group: self.group_id().to_string(),
            });
        }
        Ok(self.committer.as_ref())
    }

    /// Leaves the group: stops heartbeating, lets queued commits finish, then LeaveGroup
    /// (a coordinator that already forgot the member is fine).
    pub(crate) async fn leave(mut self) -> Result<(), ClientError> {
        self.stop_heartbeat();
        let timeout = self.settings.request_timeout;
        if let Some(committer) = self.committer.take() {
            committer.close(timeout).await;
        }
        self.generation = None;
        if self.member_id.is_empty() {
            return Ok(());
        }
        let request = Request::LeaveGroup(LeaveGroupRequest {
            group_id: self.group_id().to_string(),
            member_id: self.member_id.clone(),
        });
        let deadline = Instant::now() + timeout;
        let response = self.coordinator.request(request, timeout, deadline).await?;
        let Response::LeaveGroup(response) = response else {
            return Err(ClientError::UnexpectedResponse { api: "LeaveGroup" });
        };
        match response.error_code {
            ErrorCode::NONE | ErrorCode::UNKNOWN_MEMBER_ID => {
                tracing::info!(
                    group = self.group_id(),
                    member_id = self.member_id,
                    "left the group"
                );
                Ok(())
            }
            code => Err(self.coordinator.error(code)),
        }
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

/// Partitions listed by topic, as one sorted list.
pub(crate) fn flatten(topics: Vec<TopicPartitions>) -> Vec<TopicPartition> {
    let mut partitions: Vec<TopicPartition> = topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.topic;
            topic
                .partitions
                .into_iter()
                .map(move |partition| TopicPartition::new(name.clone(), partition))
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    partitions
}

/// A duration in whole milliseconds, as the wire carries it (saturating).
pub(crate) fn millis_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(id: i32, member_id: &str) -> Generation {
        Generation {
            id,
            member_id: member_id.to_string(),
        }
    }

    #[test]
    fn positions_carry_over_only_into_the_next_generation_of_the_same_member() {
        let before = generation(4, "m-1");
        assert!(before.continues_into(&generation(5, "m-1")));
        assert!(
            before.continues_into(&generation(4, "m-1")),
            "same generation"
        );
        assert!(
            !before.continues_into(&generation(6, "m-1")),
            "one was missed"
        );
        assert!(
            !before.continues_into(&generation(5, "m-2")),
            "removed and joined anew"
        );
    }

    #[tokio::test]
    async fn a_rejoin_request_is_kept_until_picked_up() {
        let signal = Signal::default();
        signal.rejoin(3, ErrorCode::REBALANCE_IN_PROGRESS);
        // Nobody waited: the notification is kept for the next wait.
        tokio::time::timeout(Duration::from_secs(1), signal.notified())
            .await
            .unwrap();
        assert_eq!(signal.take(), Some((3, ErrorCode::REBALANCE_IN_PROGRESS)));
        assert_eq!(signal.take(), None);
    }

    #[test]
    fn milliseconds_saturate() {
        assert_eq!(millis_i32(Duration::from_secs(3)), 3000);
        assert_eq!(millis_i32(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
