//! [`GroupCoordinator`]: every consumer group of this broker, and their committed offsets.
//! It answers the group APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, DescribeGroups, ListGroups, DeleteGroups) as `docs/groups.md` says, from
//! decoded requests to responses; the server only routes them here.
//!
//! Membership is in memory (one [`Group`] state machine per group, under one lock, never held
//! across an await). Held JoinGroups and long-polled Heartbeats wait outside the lock, on a
//! oneshot and on the group's rebalance counter. A background task
//! ([`GroupCoordinator::run_background`]) expires members and ends rebalances that waited too
//! long. Committed offsets go to the [`OffsetStore`], whose file work runs on the blocking
//! pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mq_protocol::group::{
    DescribeGroupsResponse, DescribedGroup, DescribedMember, GroupErrorResponse,
    GroupErrorsResponse, GroupsRequest, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, ListGroupsResponse, ListedGroup, OffsetCommitRequest, OffsetCommitTopic,
    OffsetFetchPartition, OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopic,
    PartitionErrorsResponse, SyncGroupRequest, SyncGroupResponse, TopicPartitionErrors,
};
use mq_protocol::{ErrorCode, Offset};
use tokio::sync::watch;
use tokio::time::Instant;

use super::assignor::Strategy;
use super::state::{error_join, Group, GroupState, JoinOutcome, JoinRequest};
use crate::manager::TopicPartition;
use crate::offsets::{CommittedOffset, OffsetStore, OffsetsError, PendingCommit};

/// The longest group id, in bytes.
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// The longest metadata text committed with an offset, in bytes.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// How much of a client id a member id starts with.
const MEMBER_ID_PREFIX_CHARS: usize = 64;

/// How often the background task looks for expired members and overdue rebalances.
const TICK: Duration = Duration::from_millis(100);

/// How often the background task checkpoints the committed-offsets log's recovery point.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

const _: () = assert!(GROUP_ID_BYTES_MAX <= crate::offsets::STRING_BYTES_MAX);
const _: () = assert!(OFFSET_METADATA_BYTES_MAX <= crate::offsets::STRING_BYTES_MAX);

/// The coordinator's limits (`group_*` broker settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The shortest session timeout a member may ask for.
    pub min_session_timeout: Duration,
    /// The longest session timeout a member may ask for.
    pub max_session_timeout: Duration,
    /// The most members one group may have.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(1000),
            max_session_timeout: Duration::from_millis(300_000),
            max_size: 1000,
        }
    }
}

/// Who sent a request: shown by DescribeGroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client id of the request header.
    pub client_id: String,
    /// The address the connection comes from.
    pub client_host: String,
}

/// What the coordinator's lock guards.
#[derive(Debug, Default)]
struct Groups {
    /// Groups with members, or known lately (empty groups are forgotten once they have no
    /// committed offsets either).
    by_id: HashMap<String, Group>,
    /// Every topic's partition count, as the broker's registry says.
    partition_counts: BTreeMap<String, i32>,
    /// Set by [`GroupCoordinator::shutdown`]: no new joins.
    shut_down: bool,
    /// Members joined so far, for the leader's seniority.
    joins: u64,
}

/// A topic of an OffsetCommit: its name, and per partition the error, if any.
type TopicOutcomes = (String, Vec<(i32, Option<ErrorCode>)>);

/// An OffsetCommit whose batch is appended and whose acknowledgement waits for the fsync.
#[derive(Debug)]
pub struct PendingOffsetCommit {
    /// Per topic, per partition: the error, or `None` for an offset in the appended batch.
    topics: Vec<TopicOutcomes>,
    /// The appended batch, or why it could not be appended.
    appended: Result<Option<PendingCommit>, ErrorCode>,
}

/// The group coordinator of this broker: every group's membership and committed offsets.
///
/// Thread-safe; share it in an `Arc`. The async methods wait (for a generation, a
/// heartbeat's long poll, the blocking pool); none holds the lock across an await.
#[derive(Debug)]
pub struct GroupCoordinator {
    /// Limits.
    config: GroupConfig,
    /// Committed offsets.
    store: Arc<OffsetStore>,
    /// Membership and topics.
    groups: Mutex<Groups>,
    /// Commits hold it for reading from their checks to their append; a topic's deletion
    /// holds it for writing, so no commit checked before the deletion lands after it.
    topic_changes: tokio::sync::RwLock<()>,
    /// Turns true at shutdown: held heartbeats answer at once.
    shutdown: watch::Sender<bool>,
    /// Member ids made so far, part of the next one.
    member_ids: AtomicU64,
}

impl GroupCoordinator {
    /// A coordinator over `store`, knowing the topics' partition counts.
    pub fn new(
        config: GroupConfig,
        store: Arc<OffsetStore>,
        partition_counts: impl IntoIterator<Item = (String, i32)>,
    ) -> GroupCoordinator {
        GroupCoordinator {
            config,
            store,
            groups: Mutex::new(Groups {
                partition_counts: partition_counts.into_iter().collect(),
                ..Groups::default()
            }),
            topic_changes: tokio::sync::RwLock::new(()),
            shutdown: watch::Sender::new(false),
            member_ids: AtomicU64::new(0),
        }
    }

    /// The committed-offsets store.
    pub fn store(&self) -> &Arc<OffsetStore> {
        &self.store
    }

    /// JoinGroup: answered once the generation forms (or at once, see `docs/groups.md`).
    pub async fn join_group(
        &self,
        request: JoinGroupRequest,
        client: ClientInfo,
    ) -> JoinGroupResponse {
        let member_id = request.member_id.clone();
        let group_id = request.group_id.clone();
        let outcome = match check_join(&self.config, request, client) {
            Ok(join) => self.join_checked(&group_id, join),
            Err(code) => JoinOutcome::Now(error_join(&member_id, code)),
        };
        match outcome {
            JoinOutcome::Now(response) => response,
            JoinOutcome::Held(receiver) => receiver
                .await
                .unwrap_or_else(|_| error_join(&member_id, ErrorCode::COORDINATOR_NOT_AVAILABLE)),
        }
    }

    fn join_checked(&self, group_id: &str, mut join: JoinRequest) -> JoinOutcome {
        let member_id = join.member_id.clone();
        let now = Instant::now();
        let mut groups = self.lock();
        if groups.shut_down {
            return JoinOutcome::Now(error_join(&member_id, ErrorCode::COORDINATOR_NOT_AVAILABLE));
        }
        let known = groups
            .by_id
            .get(group_id)
            .is_some_and(|group| group.members.contains_key(&member_id));
        if !member_id.is_empty() && !known {
            return JoinOutcome::Now(error_join(&member_id, ErrorCode::UNKNOWN_MEMBER_ID));
        }
        if let Some(group) = groups.by_id.get(group_id) {
            if !group.accepts(&member_id, &join.strategies) {
                return JoinOutcome::Now(error_join(
                    &member_id,
                    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                ));
            }
            if member_id.is_empty() && group.members.len() >= self.config.max_size {
                return JoinOutcome::Now(error_join(&member_id, ErrorCode::GROUP_MAX_SIZE_REACHED));
            }
        }
        if member_id.is_empty() {
            join.member_id = self.new_member_id(&join.client_id);
        }
        groups.joins += 1;
        let Groups {
            by_id,
            partition_counts,
            joins,
            ..
        } = &mut *groups;
        let group = by_id
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        group.join(join, *joins, now, partition_counts)
    }

    /// SyncGroup: the member's assignment for its generation, at once.
    pub fn sync_group(&self, request: SyncGroupRequest) -> SyncGroupResponse {
        let error = |error_code| SyncGroupResponse {
            error_code,
            assignment: Vec::new(),
        };
        let mut groups = self.lock();
        if groups.shut_down {
            return error(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        let Some(group) = known_member(&mut groups, &request.group_id, &request.member_id) else {
            return error(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if request.generation_id != group.generation {
            return error(ErrorCode::ILLEGAL_GENERATION);
        }
        if group.state == GroupState::PreparingRebalance {
            return error(ErrorCode::REBALANCE_IN_PROGRESS);
        }
        SyncGroupResponse {
            error_code: ErrorCode::NONE,
            assignment: group.sync(&request.member_id),
        }
    }

    /// Heartbeat: refreshes the member; long-polls while the group is settled at its
    /// generation (up to `max_wait_ms`, capped at half its session timeout), answering
    /// `REBALANCE_IN_PROGRESS` as soon as a rebalance starts.
    pub async fn heartbeat(&self, request: HeartbeatRequest) -> GroupErrorResponse {
        let answer = |error_code| GroupErrorResponse { error_code };
        let (mut rebalances, wait) = {
            let mut groups = self.lock();
            if groups.shut_down {
                return answer(ErrorCode::COORDINATOR_NOT_AVAILABLE);
            }
            let Some(group) = known_member(&mut groups, &request.group_id, &request.member_id)
            else {
                return answer(ErrorCode::UNKNOWN_MEMBER_ID);
            };
            if request.generation_id != group.generation {
                return answer(ErrorCode::ILLEGAL_GENERATION);
            }
            if group.state == GroupState::PreparingRebalance {
                return answer(ErrorCode::REBALANCE_IN_PROGRESS);
            }
            let session_timeout = group.members[&request.member_id].session_timeout;
            let wait = millis(request.max_wait_ms).min(session_timeout / 2);
            (group.subscribe_rebalances(), wait)
        };
        if wait.is_zero() {
            return answer(ErrorCode::NONE);
        }
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            _ = rebalances.changed() => answer(ErrorCode::REBALANCE_IN_PROGRESS),
            _ = tokio::time::sleep(wait) => answer(ErrorCode::NONE),
            _ = shutdown.wait_for(|down| *down) => answer(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// LeaveGroup: removes the member now.
    pub fn leave_group(&self, request: LeaveGroupRequest) -> GroupErrorResponse {
        let now = Instant::now();
        let mut groups = self.lock();
        let Groups {
            by_id,
            partition_counts,
            ..
        } = &mut *groups;
        let error_code = match by_id.get_mut(&request.group_id) {
            Some(group) if group.members.contains_key(&request.member_id) => {
                group.remove_member(&request.member_id, now, partition_counts, "left the group");
                ErrorCode::NONE
            }
            _ => ErrorCode::UNKNOWN_MEMBER_ID,
        };
        GroupErrorResponse { error_code }
    }

    /// OffsetCommit in one go: checks, appends, waits for the fsync.
    pub async fn commit_offsets(&self, request: OffsetCommitRequest) -> PartitionErrorsResponse {
        let pending = self.commit_append(request).await;
        self.commit_complete(pending).await
    }

    /// The first half of an OffsetCommit: checks the membership and every partition, then
    /// appends the valid offsets as one batch (on the blocking pool). A connection runs this
    /// for one request at a time, in arrival order.
    pub async fn commit_append(&self, request: OffsetCommitRequest) -> PendingOffsetCommit {
        let _no_topic_deletion = self.topic_changes.read().await;
        let checked = self.check_commit(&request);
        let (topics, entries) = split_commit(request.topics, &checked);
        let appended = if entries.is_empty() {
            Ok(None)
        } else {
            let store = Arc::clone(&self.store);
            let group_id = request.group_id;
            run_blocking(move || store.append_commit(&group_id, &entries))
                .await
                .map(Some)
        };
        PendingOffsetCommit { topics, appended }
    }

    /// The second half of an OffsetCommit: waits until its batch is durable (sharing the
    /// fsync with concurrent commits), then builds the response.
    pub async fn commit_complete(&self, pending: PendingOffsetCommit) -> PartitionErrorsResponse {
        let outcome = match pending.appended {
            Ok(Some(appended)) => {
                let store = Arc::clone(&self.store);
                let durable = run_blocking(move || {
                    store.wait_durable(appended)?;
                    Ok(store.needs_compaction())
                })
                .await;
                if durable == Ok(true) {
                    self.compact_in_background();
                }
                durable.map(|_| ())
            }
            Ok(None) => Ok(()),
            Err(code) => Err(code),
        };
        PartitionErrorsResponse {
            topics: pending
                .topics
                .into_iter()
                .map(|(name, partitions)| TopicPartitionErrors {
                    name,
                    partitions: partitions
                        .into_iter()
                        .map(|(partition, error)| {
                            let code = error.unwrap_or(match outcome {
                                Ok(()) => ErrorCode::NONE,
                                Err(code) => code,
                            });
                            (partition, code)
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The group-level checks of a commit; on success, the partition counts to check the
    /// partitions against.
    fn check_commit(
        &self,
        request: &OffsetCommitRequest,
    ) -> Result<BTreeMap<String, i32>, ErrorCode> {
        check_group_id(&request.group_id)?;
        let mut groups = self.lock();
        if groups.shut_down {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        let counts = groups.partition_counts.clone();
        if request.generation_id == -1 && request.member_id.is_empty() {
            let has_members = groups
                .by_id
                .get(&request.group_id)
                .is_some_and(|group| !group.members.is_empty());
            return if has_members {
                Err(ErrorCode::NON_EMPTY_GROUP)
            } else {
                Ok(counts)
            };
        }
        let Some(group) = known_member(&mut groups, &request.group_id, &request.member_id) else {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if request.generation_id != group.generation {
            return Err(ErrorCode::ILLEGAL_GENERATION);
        }
        Ok(counts)
    }

    fn compact_in_background(&self) {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.maybe_compact() {
                tracing::warn!(%error, "compacting committed offsets failed");
            }
        });
    }

    /// OffsetFetch: the committed offsets, from memory.
    pub fn fetch_offsets(&self, request: OffsetFetchRequest) -> OffsetFetchResponse {
        if let Err(error_code) = check_group_id(&request.group_id) {
            return OffsetFetchResponse {
                error_code,
                topics: Vec::new(),
            };
        }
        let filter: Option<Vec<TopicPartition>> = request.topics.as_ref().map(|topics| {
            topics
                .iter()
                .flat_map(|topic| {
                    topic.partitions.iter().map(|partition| TopicPartition {
                        topic: Arc::from(topic.topic.as_str()),
                        partition: *partition,
                    })
                })
                .collect()
        });
        let fetched = self.store.fetch(&request.group_id, filter.as_deref());
        let mut topics: Vec<OffsetFetchTopic> = Vec::new();
        for (key, value) in fetched {
            let partition = OffsetFetchPartition {
                partition: key.partition,
                offset: value.as_ref().map_or(-1, |value| value.offset.to_wire()),
                metadata: value.and_then(|value| value.metadata),
                error_code: ErrorCode::NONE,
            };
            match topics.last_mut() {
                Some(last) if *last.name == *key.topic => last.partitions.push(partition),
                _ => topics.push(OffsetFetchTopic {
                    name: key.topic.to_string(),
                    partitions: vec![partition],
                }),
            }
        }
        OffsetFetchResponse {
            error_code: ErrorCode::NONE,
            topics,
        }
    }

    /// DescribeGroups: each group's state and members; `Dead` for an unknown group.
    pub fn describe_groups(&self, request: GroupsRequest) -> DescribeGroupsResponse {
        let groups = self.lock();
        let described = request
            .groups
            .into_iter()
            .map(|group_id| {
                if let Err(error_code) = check_group_id(&group_id) {
                    return DescribedGroup {
                        error_code,
                        group_id,
                        ..DescribedGroup::default()
                    };
                }
                match groups.by_id.get(&group_id) {
                    Some(group) if !group.members.is_empty() => describe(&group_id, group),
                    group => {
                        let state = if self.store.has_group(&group_id) {
                            "Empty"
                        } else {
                            "Dead"
                        };
                        DescribedGroup {
                            error_code: ErrorCode::NONE,
                            group_id,
                            state: state.to_string(),
                            generation_id: group.map_or(0, |group| group.generation),
                            ..DescribedGroup::default()
                        }
                    }
                }
            })
            .collect();
        DescribeGroupsResponse { groups: described }
    }

    /// ListGroups: groups with members and groups with committed offsets.
    pub fn list_groups(&self) -> ListGroupsResponse {
        let mut listed: BTreeMap<String, ListedGroup> = self
            .store
            .groups()
            .into_iter()
            .map(|group_id| {
                let group = ListedGroup {
                    group_id: group_id.clone(),
                    state: GroupState::Empty.name().to_string(),
                    members: 0,
                };
                (group_id, group)
            })
            .collect();
        let groups = self.lock();
        for (group_id, group) in &groups.by_id {
            if !group.members.is_empty() {
                listed.insert(
                    group_id.clone(),
                    ListedGroup {
                        group_id: group_id.clone(),
                        state: group.state.name().to_string(),
                        members: i32::try_from(group.members.len()).unwrap_or(i32::MAX),
                    },
                );
            }
        }
        ListGroupsResponse {
            error_code: ErrorCode::NONE,
            groups: listed.into_values().collect(),
        }
    }

    /// DeleteGroups: removes groups without members, with their committed offsets (durably).
    pub async fn delete_groups(&self, request: GroupsRequest) -> GroupErrorsResponse {
        let mut results = Vec::with_capacity(request.groups.len());
        for group_id in request.groups {
            let error_code = self.delete_group(&group_id).await;
            results.push((group_id, error_code));
        }
        GroupErrorsResponse { groups: results }
    }

    async fn delete_group(&self, group_id: &str) -> ErrorCode {
        if let Err(code) = check_group_id(group_id) {
            return code;
        }
        {
            let mut groups = self.lock();
            if groups.shut_down {
                return ErrorCode::COORDINATOR_NOT_AVAILABLE;
            }
            if groups
                .by_id
                .get(group_id)
                .is_some_and(|group| !group.members.is_empty())
            {
                return ErrorCode::NON_EMPTY_GROUP;
            }
            groups.by_id.remove(group_id);
        }
        let store = Arc::clone(&self.store);
        let group_id = group_id.to_string();
        match run_blocking(move || store.delete_group(&group_id)).await {
            Ok(true) => ErrorCode::NONE,
            Ok(false) => ErrorCode::GROUP_ID_NOT_FOUND,
            Err(code) => code,
        }
    }

    /// A topic was created or grew: groups subscribed to it rebalance.
    pub fn update_topic(&self, topic: &str, partitions: i32) {
        let now = Instant::now();
        let mut groups = self.lock();
        if groups
            .partition_counts
            .insert(topic.to_string(), partitions)
            == Some(partitions)
        {
            return;
        }
        for group in groups.by_id.values_mut() {
            group.topic_changed(topic, now);
        }
    }

    /// A topic was deleted: groups subscribed to it rebalance, and every group's committed
    /// offsets for it are deleted durably. Returns how many offsets were deleted.
    pub async fn delete_topic(&self, topic: &str) -> Result<usize, OffsetsError> {
        let _no_commits = self.topic_changes.write().await;
        {
            let now = Instant::now();
            let mut groups = self.lock();
            groups.partition_counts.remove(topic);
            for group in groups.by_id.values_mut() {
                group.topic_changed(topic, now);
            }
        }
        let store = Arc::clone(&self.store);
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || store.delete_topic(&topic))
            .await
            .unwrap_or(Err(OffsetsError::Closed))
    }

    /// Expires members and ends overdue rebalances as of `now`; forgets empty groups without
    /// committed offsets.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        let Groups {
            by_id,
            partition_counts,
            ..
        } = &mut *groups;
        for group in by_id.values_mut() {
            group.tick(now, partition_counts);
        }
        by_id.retain(|group_id, group| {
            group.state != GroupState::Empty || self.store.has_group(group_id)
        });
    }

    /// Runs [`GroupCoordinator::tick`] every 100 ms, and checkpoints the committed-offsets
    /// log every minute, until `shutdown` resolves.
    pub async fn run_background(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoints = tokio::time::interval(CHECKPOINT_INTERVAL);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => self.tick(Instant::now()),
                _ = checkpoints.tick() => {
                    let store = Arc::clone(&self.store);
                    // A failure is logged by `run_blocking`; the next minute retries.
                    let _ = run_blocking(move || store.checkpoint()).await;
                }
            }
        }
    }

    /// Stops taking joins and answers every held JoinGroup and Heartbeat with
    /// `COORDINATOR_NOT_AVAILABLE`. The store stays open until closed.
    pub fn shutdown(&self) {
        let mut groups = self.lock();
        groups.shut_down = true;
        for group in groups.by_id.values_mut() {
            group.answer_held_joins(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        self.shutdown.send_replace(true);
    }

    /// A member id unique across restarts: the client id, the time in nanoseconds, the
    /// process id and a counter.
    fn new_member_id(&self, client_id: &str) -> String {
        let prefix: String = client_id.chars().take(MEMBER_ID_PREFIX_CHARS).collect();
        let prefix = if prefix.is_empty() {
            "member".to_string()
        } else {
            prefix
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let count = self.member_ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{nanos:x}{:x}{count:x}", std::process::id())
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        // Group state is changed in small steps that leave it consistent; a panic in one
        // request does not make it unusable for the others.
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The group, if it has this member; refreshes the member's liveness.
fn known_member<'a>(
    groups: &'a mut Groups,
    group_id: &str,
    member_id: &str,
) -> Option<&'a mut Group> {
    let group = groups.by_id.get_mut(group_id)?;
    let member = group.members.get_mut(member_id)?;
    member.last_heard = Instant::now();
    Some(group)
}

fn describe(group_id: &str, group: &Group) -> DescribedGroup {
    DescribedGroup {
        error_code: ErrorCode::NONE,
        group_id: group_id.to_string(),
        state: group.state.name().to_string(),
        assignor: group.strategy.map_or("", Strategy::name).to_string(),
        generation_id: group.generation,
        members: group
            .members
            .iter()
            .map(|(member_id, member)| DescribedMember {
                member_id: member_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                topics: member.topics.iter().cloned().collect(),
                assignment: group.member_assignment(member_id),
            })
            .collect(),
    }
}

/// Validates a JoinGroup: group id, session timeout, strategies (unknown ones are ignored;
/// none known is `INCONSISTENT_GROUP_PROTOCOL`).
fn check_join(
    config: &GroupConfig,
    request: JoinGroupRequest,
    client: ClientInfo,
) -> Result<JoinRequest, ErrorCode> {
    check_group_id(&request.group_id)?;
    let session_timeout = millis(request.session_timeout_ms);
    let session_bounds = config.min_session_timeout..=config.max_session_timeout;
    if request.session_timeout_ms < 0 || !session_bounds.contains(&session_timeout) {
        return Err(ErrorCode::INVALID_SESSION_TIMEOUT);
    }
    let rebalance_timeout = if request.rebalance_timeout_ms > 0 {
        millis(request.rebalance_timeout_ms)
    } else {
        session_timeout
    };
    let mut strategies = Vec::new();
    for strategy in request
        .assignors
        .iter()
        .filter_map(|name| Strategy::from_name(name))
    {
        if !strategies.contains(&strategy) {
            strategies.push(strategy);
        }
    }
    if strategies.is_empty() {
        return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    }
    Ok(JoinRequest {
        member_id: request.member_id,
        client_id: client.client_id,
        client_host: client.client_host,
        session_timeout,
        rebalance_timeout,
        topics: request.topics.into_iter().collect(),
        strategies,
    })
}

/// Checks a group id: 1 to 255 bytes, not only whitespace (`INVALID_GROUP_ID`).
pub fn check_group_id(group_id: &str) -> Result<(), ErrorCode> {
    if group_id.is_empty()
        || group_id.len() > GROUP_ID_BYTES_MAX
        || group_id.chars().all(char::is_whitespace)
    {
        return Err(ErrorCode::INVALID_GROUP_ID);
    }
    Ok(())
}

/// Splits a commit's partitions into the outcome of each (an error, or `None` for one to
/// store) and the entries to store. `checked` is the group-level check: an error for every
/// partition, or the partition counts to check each against.
fn split_commit(
    topics: Vec<OffsetCommitTopic>,
    checked: &Result<BTreeMap<String, i32>, ErrorCode>,
) -> (Vec<TopicOutcomes>, Vec<(TopicPartition, CommittedOffset)>) {
    let commit_timestamp_ms = now_ms();
    let mut entries = Vec::new();
    let mut outcomes = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let error = match checked {
                Err(code) => Some(*code),
                Ok(counts) => check_partition(counts, &topic.name, &partition),
            };
            partitions.push((partition.partition, error));
            if error.is_some() {
                continue;
            }
            let key = TopicPartition {
                topic: Arc::from(topic.name.as_str()),
                partition: partition.partition,
            };
            let value = CommittedOffset {
                offset: Offset::from_wire(partition.offset).unwrap_or_default(),
                metadata: partition.metadata,
                commit_timestamp_ms,
            };
            entries.push((key, value));
        }
        outcomes.push((topic.name, partitions));
    }
    (outcomes, entries)
}

/// The error of one partition of a commit, if any.
fn check_partition(
    counts: &BTreeMap<String, i32>,
    topic: &str,
    partition: &mq_protocol::group::OffsetCommitPartition,
) -> Option<ErrorCode> {
    let exists = counts
        .get(topic)
        .is_some_and(|count| (0..*count).contains(&partition.partition));
    if !exists {
        return Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if partition.offset < 0 {
        return Some(ErrorCode::INVALID_REQUEST);
    }
    if partition
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.len() > OFFSET_METADATA_BYTES_MAX)
    {
        return Some(ErrorCode::OFFSET_METADATA_TOO_LARGE);
    }
    None
}

/// Runs store work on the blocking pool; its error as a wire code.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OffsetsError> + Send + 'static,
) -> Result<T, ErrorCode> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "committed-offsets store failed");
            Err(offsets_error_code(&error))
        }
        Err(error) => {
            tracing::error!(%error, "committed-offsets task failed");
            Err(ErrorCode::UNKNOWN_SERVER_ERROR)
        }
    }
}

fn offsets_error_code(error: &OffsetsError) -> ErrorCode {
    match error {
        OffsetsError::Closed => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        OffsetsError::CommitTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        OffsetsError::TooLong { .. } => ErrorCode::INVALID_REQUEST,
        OffsetsError::Log(_) | OffsetsError::Corrupt { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
    }
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
