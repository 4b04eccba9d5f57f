//! The group side of [`Consumer`]: subscribing, rebalancing inside `poll`, committing,
//! closing; and [`RebalanceListener`], the application's hooks around a rebalance.
//!
//! Membership itself (finding the coordinator, JoinGroup and SyncGroup, heartbeats, the
//! committer) is [`crate::group`]'s; this module decides what a rebalance does to the
//! consumer's partitions and positions:
//!
//! 1. the member owned partitions: commit the positions (with auto-commit), call
//!    [`RebalanceListener::on_partitions_revoked`], drop the partitions and their prefetched
//!    data, keep their positions aside;
//! 2. join (JoinGroup, SyncGroup): the new generation and this member's partitions;
//! 3. positions: a partition the member also owned in the generation just before keeps the
//!    position kept aside (nobody else can have read it in between); any other starts at the
//!    group's committed offset, or per the reset policy when there is none;
//! 4. [`RebalanceListener::on_partitions_assigned`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Consumer, PartitionState};
use crate::client::TopicPartition;
use crate::error::ClientError;
use crate::group::{
    CommitHandle, Generation, GroupSettings, Membership, Signal, GROUP_ID_BYTES_MAX,
};

/// The application's hooks around a rebalance of the consumer's group.
///
/// Both methods get the consumer, so they can commit, seek or look up positions. They are
/// called from inside [`Consumer::poll`] (and `on_partitions_revoked` from
/// [`Consumer::close`]); they must not call `poll` themselves. Both do nothing by default.
///
/// ```no_run
/// use mq_client::{Consumer, RebalanceListener, TopicPartition};
///
/// /// Commits what was processed before the partitions go to another member.
/// struct CommitOnRevoke;
///
/// impl RebalanceListener for CommitOnRevoke {
///     async fn on_partitions_revoked(&mut self, consumer: &mut Consumer, _: &[TopicPartition]) {
///         if let Err(error) = consumer.commit_sync().await {
///             eprintln!("commit before the rebalance failed: {error}");
///         }
///     }
/// }
///
/// # fn example(consumer: &mut Consumer) {
/// consumer.set_rebalance_listener(CommitOnRevoke);
/// # }
/// ```
pub trait RebalanceListener: Send {
    /// Before the member gives up `revoked` (a rebalance starts, or the consumer closes):
    /// commit here what was processed of them. The consumer still owns them during the call,
    /// and the group's current generation accepts commits.
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut Consumer,
        revoked: &[TopicPartition],
    ) -> impl Future<Output = ()> + Send {
        let _ = (consumer, revoked);
        async {}
    }

    /// After the member got `assigned` for a new generation, with positions already set
    /// (from the committed offsets); a seek here decides where reading starts.
    fn on_partitions_assigned(
        &mut self,
        consumer: &mut Consumer,
        assigned: &[TopicPartition],
    ) -> impl Future<Output = ()> + Send {
        let _ = (consumer, assigned);
        async {}
    }
}

/// A listener's future, boxed so that listeners can be stored without their type.
type ListenerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// [`RebalanceListener`] without its type: dyn-compatible, with boxed futures.
trait ErasedListener: Send {
    /// Calls [`RebalanceListener::on_partitions_revoked`].
    fn revoked<'a>(
        &'a mut self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a>;

    /// Calls [`RebalanceListener::on_partitions_assigned`].
    fn assigned<'a>(
        &'a mut self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a>;
}

impl<L: RebalanceListener> ErasedListener for L {
    fn revoked<'a>(
        &'a mut self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(self.on_partitions_revoked(consumer, partitions))
    }

    fn assigned<'a>(
        &'a mut self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(self.on_partitions_assigned(consumer, partitions))
    }
}

/// Where the consumer keeps its listener. Shared (an `Arc`) so that a call can hold it while
/// the listener gets `&mut Consumer`, and locked (a tokio mutex: held across the call) so that
/// the consumer stays `Sync` and a listener is never called from within itself. If a `poll`
/// is dropped mid-call, the listener stays in place.
#[derive(Default)]
pub(super) struct ListenerSlot(Option<Arc<tokio::sync::Mutex<Box<dyn ErasedListener>>>>);

impl fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("ListenerSlot").field(&state).finish()
    }
}

/// Which hook to call.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// [`RebalanceListener::on_partitions_revoked`].
    Revoked,
    /// [`RebalanceListener::on_partitions_assigned`].
    Assigned,
}

/// A consumer's group: the membership and what rebalances need to remember.
#[derive(Debug)]
pub(super) struct Subscription {
    /// The membership.
    membership: Membership,
    /// The partitions given up at the start of the current rebalance, with the generation
    /// they were owned in and their positions: the next generation may keep them.
    revoked: Option<Revoked>,
    /// A new assignment the listener has not heard of yet.
    unannounced: Option<Vec<TopicPartition>>,
    /// When the positions were last committed automatically (or the generation began).
    last_auto_commit: Instant,
    /// When committed offsets may be read again after a retriable failure.
    committed_retry_at: Option<Instant>,
}

/// Partitions given up in a rebalance.
#[derive(Debug)]
struct Revoked {
    /// The generation they were owned in.
    generation: Generation,
    /// Their positions.
    positions: BTreeMap<TopicPartition, i64>,
}

impl Subscription {
    /// The error for an `assign` on a subscribed consumer.
    pub(super) fn refuse_assign(&self) -> ClientError {
        ClientError::Subscribed {
            group: self.membership.group_id().to_string(),
            action: "assign partitions by hand".to_string(),
        }
    }
}

impl Consumer {
    /// Subscribes to `topics` as a member of `group`: the group's coordinator assigns this
    /// consumer some of the topics' partitions, sharing them out among the group's members.
    ///
    /// Nothing is sent yet: the consumer joins the group in its next [`Consumer::poll`], and
    /// rejoins there whenever the group rebalances. Calling it again with other topics
    /// changes the subscription (at the next poll). Fails on a consumer whose partitions were
    /// assigned by hand, or that subscribed to another group.
    pub fn subscribe(&mut self, group: &str, topics: &[&str]) -> Result<(), ClientError> {
        if self.assigned_by_hand {
            return Err(ClientError::AssignedByHand);
        }
        check_group_id(group)?;
        if topics.is_empty() {
            return Err(ClientError::InvalidConfig {
                name: "topics",
                reason: "name no topic to subscribe to".to_string(),
            });
        }
        let mut topics: Vec<String> = topics.iter().map(|topic| topic.to_string()).collect();
        topics.sort();
        topics.dedup();
        match &mut self.subscription {
            Some(subscription) if subscription.membership.group_id() != group => {
                Err(ClientError::Subscribed {
                    group: subscription.membership.group_id().to_string(),
                    action: format!("subscribe to group {group}"),
                })
            }
            Some(subscription) => {
                subscription.membership.set_topics(topics);
                Ok(())
            }
            None => {
                let membership =
                    Membership::new(self.client.clone(), group, topics, self.group_settings());
                self.subscription = Some(Subscription {
                    membership,
                    revoked: None,
                    unannounced: None,
                    last_auto_commit: Instant::now(),
                    committed_retry_at: None,
                });
                Ok(())
            }
        }
    }

    /// Sets the hooks called around rebalances, replacing any earlier listener.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        let listener: Box<dyn ErasedListener> = Box::new(listener);
        self.listener = ListenerSlot(Some(Arc::new(tokio::sync::Mutex::new(listener))));
    }

    /// The group generation this consumer is a member of: `Some` once a join completed
    /// (JoinGroup and SyncGroup), `None` before and while it rejoins.
    pub fn group_generation(&self) -> Option<i32> {
        self.subscription
            .as_ref()
            .and_then(|subscription| subscription.membership.generation())
            .map(|generation| generation.id)
    }

    /// The id the group's coordinator gave this member, once it gave one.
    pub fn member_id(&self) -> Option<&str> {
        self.subscription
            .as_ref()
            .and_then(|subscription| subscription.membership.member_id())
    }

    /// Commits the position of every assigned partition (the offset after the last record
    /// `poll` returned) and waits until the coordinator stored them. Fails without a group
    /// ([`ClientError::NoGroup`]), or when the group rebalanced without this member
    /// ([`ClientError::Group`] with `ILLEGAL_GENERATION` or `UNKNOWN_MEMBER_ID`).
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        let positions = self.positions();
        self.membership("commit")?.commit_waiting(positions).await
    }

    /// Commits `offsets` (each the offset of the next record to process: one past the last
    /// one processed) and waits until the coordinator stored them.
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        check_offsets(offsets)?;
        self.membership("commit")?
            .commit_waiting(offsets.to_vec())
            .await
    }

    /// Like [`Consumer::commit_sync`] without waiting: the commit is queued behind earlier
    /// ones (commits are applied in the order they were made) and the handle completes with
    /// its outcome.
    pub fn commit_async(&mut self) -> CommitHandle {
        let positions = self.positions();
        match self.membership("commit") {
            Ok(membership) => membership.commit(positions),
            Err(error) => CommitHandle::ready(Err(error)),
        }
    }

    /// Like [`Consumer::commit_offsets`] without waiting; see [`Consumer::commit_async`].
    pub fn commit_offsets_async(&mut self, offsets: Vec<(TopicPartition, i64)>) -> CommitHandle {
        if let Err(error) = check_offsets(&offsets) {
            return CommitHandle::ready(Err(error));
        }
        match self.membership("commit") {
            Ok(membership) => membership.commit(offsets),
            Err(error) => CommitHandle::ready(Err(error)),
        }
    }

    /// The group's committed offsets of `partitions` (assigned or not): `None` where the
    /// group has none.
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<i64>>, ClientError> {
        let deadline = Instant::now() + self.client.config().request_timeout;
        self.membership("committed")?
            .committed(partitions, deadline)
            .await
    }

    /// Closes the consumer. In a group: commits the positions (with auto-commit), calls
    /// [`RebalanceListener::on_partitions_revoked`], waits for queued commits, and leaves the
    /// group, so that its partitions go to the other members at once rather than after the
    /// session timeout. Returns the first failure, after doing all of it.
    ///
    /// A consumer dropped without `close` stops heartbeating; the coordinator removes it
    /// after its session timeout.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.subscription.is_none() {
            return Ok(());
        }
        let mut result = Ok(());
        if self.group_generation().is_some() {
            if self.config.auto_commit {
                result = self.commit_sync().await;
            }
            let owned = self.assignment();
            if !owned.is_empty() {
                self.call_listener(Hook::Revoked, &owned).await;
            }
        }
        self.fetches.shutdown().await;
        self.in_flight.clear();
        self.partitions.clear();
        let Some(subscription) = self.subscription.take() else {
            return result;
        };
        let left = subscription.membership.leave().await;
        result.and(left)
    }

    /// The group's rejoin announcements, for `poll` to wait on; `None` without a group.
    pub(super) fn rejoin_signal(&self) -> Option<Arc<Signal>> {
        self.subscription
            .as_ref()
            .map(|subscription| subscription.membership.signal())
    }

    /// With auto-commit in a group: queues a commit of the positions (those after the records
    /// earlier polls returned) when the interval has passed since the last one.
    pub(super) fn auto_commit(&mut self) {
        let interval = self.config.auto_commit_interval;
        let due = self.config.auto_commit
            && self.subscription.as_ref().is_some_and(|subscription| {
                subscription.membership.generation().is_some()
                    && subscription.last_auto_commit.elapsed() >= interval
            });
        if !due {
            return;
        }
        let positions = self.positions();
        if let Some(subscription) = self.subscription.as_mut() {
            subscription.last_auto_commit = Instant::now();
            if !positions.is_empty() {
                subscription.membership.commit_logged(positions);
            }
        }
    }

    /// In a group: rejoins when needed, and tells the listener of a new assignment. Returns
    /// `false` when joining failed in a way a later poll may get past (the coordinator moved
    /// or is unreachable): the poll then returns nothing.
    pub(super) async fn keep_membership(&mut self, deadline: Instant) -> Result<bool, ClientError> {
        let Some(subscription) = self.subscription.as_mut() else {
            return Ok(true);
        };
        if subscription.membership.needs_join() && !self.rejoin(deadline).await? {
            return Ok(false);
        }
        let unannounced = self
            .subscription
            .as_mut()
            .and_then(|subscription| subscription.unannounced.take());
        if let Some(assigned) = unannounced {
            self.call_listener(Hook::Assigned, &assigned).await;
        }
        Ok(true)
    }

    /// One rebalance, as the module documentation lists its steps. Runs to completion even
    /// past `deadline` once the JoinGroup is sent; retriable failures before that are retried
    /// until `deadline` (or for one backoff).
    async fn rejoin(&mut self, deadline: Instant) -> Result<bool, ClientError> {
        let owned = self.assignment();
        if !owned.is_empty() {
            self.give_up(&owned).await;
        }
        let retry_until = deadline.max(Instant::now() + self.config.retry_backoff);
        let Some(subscription) = self.subscription.as_mut() else {
            return Ok(true);
        };
        let (generation, assignment) = match subscription.membership.join(retry_until).await {
            Ok(joined) => joined,
            Err(error) if error.is_retriable() => {
                let group = subscription.membership.group_id();
                tracing::debug!(group, %error, "joining the group failed, retrying at the next poll");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        let kept = match subscription.revoked.take() {
            Some(revoked) if revoked.generation.continues_into(&generation) => revoked.positions,
            _ => BTreeMap::new(),
        };
        subscription.last_auto_commit = Instant::now();
        subscription.committed_retry_at = None;
        subscription.unannounced = Some(assignment.clone());
        self.partitions = assignment
            .into_iter()
            .map(|topic_partition| {
                let position = kept.get(&topic_partition).copied();
                let state = PartitionState {
                    position,
                    committed_pending: position.is_none(),
                    ..PartitionState::default()
                };
                (topic_partition, state)
            })
            .collect();
        // Positions before the listener hears of the assignment, so that it sees them and a
        // seek of its wins. A retriable failure is retried by the poll loop.
        match self.read_committed_positions(retry_until).await {
            Err(error) if !error.is_retriable() => Err(error),
            _ => Ok(true),
        }
    }

    /// The first step of a rebalance: commit (with auto-commit), tell the listener, drop the
    /// partitions and what was prefetched of them, keep their positions aside.
    async fn give_up(&mut self, owned: &[TopicPartition]) {
        if self.config.auto_commit {
            if let Err(error) = self.commit_sync().await {
                tracing::warn!(%error, "committing before a rebalance failed");
            }
        }
        self.call_listener(Hook::Revoked, owned).await;
        let positions = self.positions().into_iter().collect();
        if let Some(subscription) = self.subscription.as_mut() {
            subscription.revoked =
                subscription
                    .membership
                    .generation()
                    .cloned()
                    .map(|generation| Revoked {
                        generation,
                        positions,
                    });
        }
        self.fetches.shutdown().await;
        self.in_flight.clear();
        self.partitions.clear();
    }

    /// Reads the committed offsets of the partitions waiting for them, once the backoff
    /// after a retriable failure has passed.
    pub(super) async fn lookup_committed(
        &mut self,
        wake_at: &mut Instant,
    ) -> Result<(), ClientError> {
        let Some(subscription) = self.subscription.as_ref() else {
            return Ok(());
        };
        if !self
            .partitions
            .values()
            .any(|state| state.committed_pending)
        {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(retry_at) = subscription.committed_retry_at.filter(|at| *at > now) {
            *wake_at = (*wake_at).min(retry_at);
            return Ok(());
        }
        let retry_at = now + self.config.retry_backoff;
        match self.read_committed_positions(retry_at).await {
            Err(error) if error.is_retriable() => {
                tracing::debug!(%error, "reading committed offsets failed, retrying");
                if let Some(subscription) = self.subscription.as_mut() {
                    subscription.committed_retry_at = Some(retry_at);
                }
                *wake_at = (*wake_at).min(retry_at);
                Ok(())
            }
            result => result,
        }
    }

    /// Gives the partitions waiting for a committed offset their position: the offset, or
    /// none (the reset policy decides) when the group has none.
    pub(super) async fn read_committed_positions(
        &mut self,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let pending: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.committed_pending)
            .map(|(topic_partition, _)| topic_partition.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let committed = match self.subscription.as_ref() {
            Some(subscription) => {
                subscription
                    .membership
                    .committed(&pending, deadline)
                    .await?
            }
            None => HashMap::new(),
        };
        for topic_partition in pending {
            if let Some(state) = self.partitions.get_mut(&topic_partition) {
                if state.committed_pending {
                    state.committed_pending = false;
                    state.position = committed.get(&topic_partition).copied().flatten();
                }
            }
        }
        Ok(())
    }

    /// The positions to commit: every assigned partition that has one.
    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(_, state)| !state.committed_pending)
            .filter_map(|(topic_partition, state)| {
                state
                    .position
                    .map(|position| (topic_partition.clone(), position))
            })
            .collect()
    }

    /// The membership, for a group `operation`; an error without a group.
    fn membership(&self, operation: &'static str) -> Result<&Membership, ClientError> {
        self.subscription
            .as_ref()
            .map(|subscription| &subscription.membership)
            .ok_or(ClientError::NoGroup { operation })
    }

    /// The member's settings.
    fn group_settings(&self) -> GroupSettings {
        let config = &self.config;
        GroupSettings {
            session_timeout: config.session_timeout,
            heartbeat_interval: config.heartbeat_interval,
            rebalance_timeout: config.rebalance_timeout,
            assignors: config.assignors.clone(),
            retry_backoff: config.retry_backoff,
            request_timeout: self.client.config().request_timeout,
        }
    }

    /// Calls a hook of the listener, if there is one (and it is not the caller: a listener
    /// that polls is not called again from within itself).
    async fn call_listener(&mut self, hook: Hook, partitions: &[TopicPartition]) {
        let Some(listener) = self.listener.0.clone() else {
            return;
        };
        let Ok(mut listener) = listener.try_lock_owned() else {
            return;
        };
        match hook {
            Hook::Revoked => listener.revoked(self, partitions).await,
            Hook::Assigned => listener.assigned(self, partitions).await,
        }
    }
}

/// Checks a group id as the coordinator would: 1 to 255 bytes, not only whitespace.
fn check_group_id(group: &str) -> Result<(), ClientError> {
    let reason = if group.trim().is_empty() {
        "must not be empty or only whitespace"
    } else if group.len() > GROUP_ID_BYTES_MAX {
        "must be at most 255 bytes"
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidConfig {
        name: "group",
        reason: reason.to_string(),
    })
}

/// Checks that offsets to commit are not negative.
fn check_offsets(offsets: &[(TopicPartition, i64)]) -> Result<(), ClientError> {
    match offsets.iter().find(|(_, offset)| *offset < 0) {
        Some((topic_partition, offset)) => Err(ClientError::InvalidConfig {
            name: "offset",
            reason: format!("{offset} for {topic_partition} is negative"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_checked_as_the_coordinator_does() {
        assert!(check_group_id("g").is_ok());
        assert!(check_group_id(&"g".repeat(255)).is_ok());
        let error = check_group_id(" ").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid group: must not be empty or only whitespace"
        );
        assert!(check_group_id(&"g".repeat(256)).is_err());
    }

    #[test]
    fn negative_offsets_are_refused() {
        assert!(check_offsets(&[(TopicPartition::new("t", 0), 0)]).is_ok());
        let error = check_offsets(&[(TopicPartition::new("t", 1), -1)]).unwrap_err();
        assert_eq!(error.to_string(), "invalid offset: -1 for t-1 is negative");
    }
}
