//! One group's membership state machine (`docs/groups.md`, "The coordinator's states"):
//! members, generations, rebalances, and the JoinGroup requests held until a generation forms.
//!
//! Synchronous and clock-free: the coordinator calls it under its lock and passes the time
//! and the topics' partition counts in. Held JoinGroups are oneshot senders, answered when a
//! generation forms; heartbeats learn that a rebalance started from a watch counter. No
//! committed offsets here: those are `crate::offsets`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mq_protocol::group::{JoinGroupResponse, TopicPartitions};
use mq_protocol::ErrorCode;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::assignor::{self, Assignment, Strategy, Subscriptions};

/// Where a group is in its life (the names are the wire's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join; JoinGroups are held.
    PreparingRebalance,
    /// A generation formed; waiting for every member's SyncGroup.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// The state's name as reported by DescribeGroups and ListGroups.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// One member of a group.
#[derive(Debug)]
pub(crate) struct Member {
    /// The client id it connected with (for DescribeGroups).
    pub(crate) client_id: String,
    /// The address it connected from (for DescribeGroups).
    pub(crate) client_host: String,
    /// It is removed when not heard from for this long.
    pub(crate) session_timeout: Duration,
    /// How long a rebalance waits for it to rejoin.
    pub(crate) rebalance_timeout: Duration,
    /// The topics it subscribes to.
    pub(crate) topics: BTreeSet<String>,
    /// The strategies it accepts, preferred first.
    pub(crate) strategies: Vec<Strategy>,
    /// When it first joined, as a sequence number: the smallest is the leader.
    pub(crate) joined_seq: u64,
    /// When a request of its was last seen.
    pub(crate) last_heard: Instant,
    /// Its JoinGroup, held until the generation forms.
    pub(crate) held_join: Option<oneshot::Sender<JoinGroupResponse>>,
    /// Whether it called SyncGroup for the current generation.
    pub(crate) synced: bool,
}

/// What a JoinGroup request asks for, once validated.
#[derive(Debug)]
pub(crate) struct JoinRequest {
    /// The member's id; empty for a new member.
    pub(crate) member_id: String,
    /// The member's client id.
    pub(crate) client_id: String,
    /// The member's address.
    pub(crate) client_host: String,
    /// Its session timeout.
    pub(crate) session_timeout: Duration,
    /// Its rebalance timeout.
    pub(crate) rebalance_timeout: Duration,
    /// Its subscription.
    pub(crate) topics: BTreeSet<String>,
    /// The strategies it accepts (known ones only, preferred first, not empty).
    pub(crate) strategies: Vec<Strategy>,
}

/// The answer to a JoinGroup: now, or when the generation forms.
#[derive(Debug)]
pub(crate) enum JoinOutcome {
    /// Answered at once.
    Now(JoinGroupResponse),
    /// Held: the answer comes through this receiver.
    Held(oneshot::Receiver<JoinGroupResponse>),
}

/// One consumer group's membership.
#[derive(Debug)]
pub(crate) struct Group {
    /// The group id, for logs.
    id: String,
    /// Where it is in its life.
    pub(crate) state: GroupState,
    /// The current generation; 0 before the first.
    pub(crate) generation: i32,
    /// The current generation's strategy.
    pub(crate) strategy: Option<Strategy>,
    /// The current generation's leader.
    pub(crate) leader: Option<String>,
    /// The members, by id.
    pub(crate) members: BTreeMap<String, Member>,
    /// When the rebalance in progress began.
    rebalance_started: Option<Instant>,
    /// The current (or, while rebalancing, the last) generation's assignment; `sticky`
    /// starts from it.
    pub(crate) assignment: Assignment,
    /// Counts rebalances started; held heartbeats wait for it to change.
    rebalances: watch::Sender<u64>,
}

impl Group {
    /// A new, empty group.
    pub(crate) fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            strategy: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_started: None,
            assignment: Assignment::new(),
            rebalances: watch::Sender::new(0),
        }
    }

    /// A receiver that sees the next rebalance start.
    pub(crate) fn subscribe_rebalances(&self) -> watch::Receiver<u64> {
        self.rebalances.subscribe()
    }

    /// Whether a strategy exists that `strategies` and every member other than `member_id`
    /// accept.
    pub(crate) fn accepts(&self, member_id: &str, strategies: &[Strategy]) -> bool {
        strategies.iter().any(|strategy| {
            self.members
                .iter()
                .filter(|(id, _)| id.as_str() != member_id)
                .all(|(_, member)| member.strategies.contains(strategy))
        })
    }

    /// Handles a validated JoinGroup of a new member (`member_id` given: the caller made it
    /// unique) or a known one; the caller checked that the member, if named, exists and that
    /// the strategies are compatible.
    pub(crate) fn join(
        &mut self,
        request: JoinRequest,
        joined_seq: u64,
        now: Instant,
        counts: &BTreeMap<String, i32>,
    ) -> JoinOutcome {
        let member_id = request.member_id.clone();
        if let Some(member) = self.members.get_mut(&member_id) {
            member.last_heard = now;
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            let unchanged =
                member.topics == request.topics && member.strategies == request.strategies;
            let settled = matches!(
                self.state,
                GroupState::Stable | GroupState::CompletingRebalance
            );
            if unchanged && settled {
                return JoinOutcome::Now(self.join_response(&member_id));
            }
            member.topics = request.topics;
            member.strategies = request.strategies;
        } else {
            tracing::info!(group = %self.id, member_id = %member_id, "member joined");
            self.members.insert(
                member_id.clone(),
                Member {
                    client_id: request.client_id,
                    client_host: request.client_host,
                    session_timeout: request.session_timeout,
                    rebalance_timeout: request.rebalance_timeout,
                    topics: request.topics,
                    strategies: request.strategies,
                    joined_seq,
                    last_heard: now,
                    held_join: None,
                    synced: false,
                },
            );
        }
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&member_id) {
            if let Some(earlier) = member.held_join.replace(sender) {
                // The client sent another JoinGroup; it no longer waits for this answer.
                let _ = earlier.send(error_join(&member_id, ErrorCode::REBALANCE_IN_PROGRESS));
            }
        }
        if self.state != GroupState::PreparingRebalance {
            self.start_rebalance(now, "member joined");
        }
        self.try_form(now, counts);
        JoinOutcome::Held(receiver)
    }

    /// Removes a member (LeaveGroup, expiry); the others rebalance, or the group is empty.
    pub(crate) fn remove_member(
        &mut self,
        member_id: &str,
        now: Instant,
        counts: &BTreeMap<String, i32>,
        reason: &'static str,
    ) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        tracing::info!(group = %self.id, member_id, reason, "member removed");
        if let Some(held) = member.held_join.take() {
            let _ = held.send(error_join(member_id, ErrorCode::UNKNOWN_MEMBER_ID));
        }
        if self.members.is_empty() {
            self.become_empty();
        } else if self.state == GroupState::PreparingRebalance {
            self.try_form(now, counts);
        } else {
            self.start_rebalance(now, reason);
        }
    }

    /// Starts a rebalance if any member subscribes to `topic` and the group is settled (a
    /// rebalance in progress assigns with the partition counts of when it completes).
    pub(crate) fn topic_changed(&mut self, topic: &str, now: Instant) {
        let subscribed = self
            .members
            .values()
            .any(|member| member.topics.contains(topic));
        let settled = matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        );
        if subscribed && settled {
            self.start_rebalance(now, "subscribed topic changed");
        }
    }

    /// Marks a member synced for the current generation; the group is stable once all are.
    pub(crate) fn sync(&mut self, member_id: &str) -> Vec<TopicPartitions> {
        if let Some(member) = self.members.get_mut(member_id) {
            member.synced = true;
        }
        if self.state == GroupState::CompletingRebalance
            && self.members.values().all(|member| member.synced)
        {
            self.state = GroupState::Stable;
            tracing::info!(group = %self.id, generation = self.generation, "group stable");
        }
        self.member_assignment(member_id)
    }

    /// Expires members not heard from for their session timeout, and forms the generation
    /// if the rebalance timeout passed. Returns whether the group changed.
    pub(crate) fn tick(&mut self, now: Instant, counts: &BTreeMap<String, i32>) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                member.held_join.is_none() && now >= member.last_heard + member.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in expired {
            self.remove_member(&member_id, now, counts, "session timeout");
        }
        if self
            .rebalance_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            self.form_generation(now, counts);
        }
    }

    /// Answers every held JoinGroup with `code` (the broker is shutting down).
    pub(crate) fn answer_held_joins(&mut self, code: ErrorCode) {
        for (member_id, member) in &mut self.members {
            if let Some(held) = member.held_join.take() {
                let _ = held.send(error_join(member_id, code));
            }
        }
    }

    /// A member's partitions in the current generation (none while rebalancing).
    pub(crate) fn member_assignment(&self, member_id: &str) -> Vec<TopicPartitions> {
        if self.state == GroupState::PreparingRebalance {
            return Vec::new();
        }
        self.assignment
            .get(member_id)
            .into_iter()
            .flatten()
            .map(|(topic, partitions)| TopicPartitions {
                topic: topic.clone(),
                partitions: partitions.clone(),
            })
            .collect()
    }

    /// The answer to a member's JoinGroup in the current generation.
    fn join_response(&self, member_id: &str) -> JoinGroupResponse {
        JoinGroupResponse {
            error_code: ErrorCode::NONE,
            generation_id: self.generation,
            assignor: self.strategy.map_or("", Strategy::name).to_string(),
            leader_id: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
        }
    }

    fn start_rebalance(&mut self, now: Instant, reason: &'static str) {
        tracing::info!(group = %self.id, generation = self.generation, reason, "rebalance started");
        self.state = GroupState::PreparingRebalance;
        self.rebalance_started = Some(now);
        for member in self.members.values_mut() {
            member.synced = false;
        }
        self.rebalances.send_modify(|count| *count += 1);
    }

    /// When the rebalance in progress gives up on members that have not rejoined.
    fn rebalance_deadline(&self) -> Option<Instant> {
        let started = self.rebalance_started?;
        let longest = self
            .members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default();
        Some(started + longest)
    }

    /// Forms the generation if every member holds a JoinGroup.
    fn try_form(&mut self, now: Instant, counts: &BTreeMap<String, i32>) {
        if self.state == GroupState::PreparingRebalance
            && self
                .members
                .values()
                .all(|member| member.held_join.is_some())
        {
            self.form_generation(now, counts);
        }
    }

    /// Removes the members that did not rejoin, assigns, and answers every held JoinGroup.
    fn form_generation(&mut self, now: Instant, counts: &BTreeMap<String, i32>) {
        let absent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.held_join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for member_id in &absent {
            self.members.remove(member_id);
            tracing::info!(group = %self.id, member_id = %member_id, "member removed: did not rejoin in time");
        }
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        self.leader = self
            .members
            .iter()
            .min_by_key(|(_, member)| member.joined_seq)
            .map(|(id, _)| id.clone());
        self.strategy = self.choose_strategy();
        let subscriptions: Subscriptions = self
            .members
            .iter()
            .map(|(id, member)| (id.clone(), member.topics.clone()))
            .collect();
        let strategy = self.strategy.unwrap_or(Strategy::Range);
        self.assignment = assignor::assign(strategy, &subscriptions, counts, &self.assignment);
        self.state = GroupState::CompletingRebalance;
        self.rebalance_started = None;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            strategy = strategy.name(),
            "generation formed"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in ids {
            let response = self.join_response(&member_id);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.synced = false;
                member.last_heard = now;
                if let Some(held) = member.held_join.take() {
                    let _ = held.send(response);
                }
            }
        }
    }

    /// The first strategy of the leader's list that every member accepts.
    fn choose_strategy(&self) -> Option<Strategy> {
        let leader = self.members.get(self.leader.as_deref()?)?;
        leader
            .strategies
            .iter()
            .copied()
            .find(|strategy| {
                self.members
                    .values()
                    .all(|member| member.strategies.contains(strategy))
            })
            .or_else(|| leader.strategies.first().copied())
    }

    fn become_empty(&mut self) {
        tracing::info!(group = %self.id, generation = self.generation, "group empty");
        self.state = GroupState::Empty;
        self.strategy = None;
        self.leader = None;
        self.rebalance_started = None;
        self.assignment.clear();
    }
}

/// A JoinGroup answer carrying only an error.
pub(crate) fn error_join(member_id: &str, error_code: ErrorCode) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code,
        generation_id: -1,
        assignor: String::new(),
        leader_id: String::new(),
        member_id: member_id.to_string(),
    }
}
