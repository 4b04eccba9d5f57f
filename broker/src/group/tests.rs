//! Tests of the group coordinator without a network, on tokio's paused clock: generations
//! forming, rebalances on join, leave, expiry and topic changes, generation fencing of
//! commits, long-polled heartbeats, and the admin APIs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mq_protocol::group::{
    GroupsRequest, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
    SyncGroupRequest, TopicPartitions,
};
use mq_protocol::ErrorCode;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::offsets::OffsetStore;

const GROUP: &str = "billing";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 5_000;

/// A coordinator over a store in a temporary directory, with topics `orders` (6 partitions)
/// and `payments` (3), and its background task running.
struct Fixture {
    coordinator: Arc<GroupCoordinator>,
    _dir: TempDir,
}

fn fixture_with(config: GroupConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = OffsetStore::open(&dir.path().join(OffsetStore::DIR_NAME), 10_000).unwrap();
    let topics = [("orders".to_string(), 6), ("payments".to_string(), 3)];
    let coordinator = Arc::new(GroupCoordinator::new(config, Arc::new(store), topics));
    tokio::spawn(Arc::clone(&coordinator).run_background(std::future::pending()));
    Fixture {
        coordinator,
        _dir: dir,
    }
}

fn new_fixture() -> Fixture {
    fixture_with(GroupConfig::default())
}

fn join_request(group: &str, member_id: &str, topics: &[&str]) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: group.to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        member_id: member_id.to_string(),
        topics: topics.iter().map(|topic| topic.to_string()).collect(),
        assignors: vec!["sticky".into(), "range".into(), "roundrobin".into()],
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        client_id: "test-client".to_string(),
        client_host: "127.0.0.1".to_string(),
    }
}

fn spawn_join(
    coordinator: &Arc<GroupCoordinator>,
    request: JoinGroupRequest,
) -> JoinHandle<JoinGroupResponse> {
    let coordinator = Arc::clone(coordinator);
    tokio::spawn(async move { coordinator.join_group(request, client()).await })
}

/// Lets spawned tasks run up to their next wait.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn heartbeat(
    coordinator: &GroupCoordinator,
    member: &JoinGroupResponse,
    max_wait_ms: i32,
) -> ErrorCode {
    coordinator
        .heartbeat(HeartbeatRequest {
            group_id: GROUP.to_string(),
            generation_id: member.generation_id,
            member_id: member.member_id.clone(),
            max_wait_ms,
        })
        .await
        .error_code
}

fn sync(coordinator: &GroupCoordinator, member: &JoinGroupResponse) -> Vec<TopicPartitions> {
    let response = coordinator.sync_group(SyncGroupRequest {
        group_id: GROUP.to_string(),
        generation_id: member.generation_id,
        member_id: member.member_id.clone(),
    });
    assert_eq!(response.error_code, ErrorCode::NONE);
    response.assignment
}

/// Forms a generation: `new` members join first (starting the rebalance), then the
/// `existing` ones rejoin; every answer must carry the same new generation. Then every
/// member syncs. Returns the members' join answers and their partitions.
async fn form(
    coordinator: &Arc<GroupCoordinator>,
    new: usize,
    existing: &[&JoinGroupResponse],
) -> Vec<(JoinGroupResponse, Vec<(String, i32)>)> {
    let mut handles = Vec::new();
    for _ in 0..new {
        handles.push(spawn_join(
            coordinator,
            join_request(GROUP, "", &["orders", "payments"]),
        ));
        settle().await;
    }
    for member in existing {
        handles.push(spawn_join(
            coordinator,
            join_request(GROUP, &member.member_id, &["orders", "payments"]),
        ));
    }
    let mut joined = Vec::new();
    for handle in handles {
        joined.push(handle.await.unwrap());
    }
    let generation = joined[0].generation_id;
    joined
        .into_iter()
        .map(|member| {
            assert_eq!(member.error_code, ErrorCode::NONE);
            assert_eq!(member.generation_id, generation);
            let partitions = sync(coordinator, &member)
                .into_iter()
                .flat_map(|topic| {
                    let name = topic.topic;
                    topic
                        .partitions
                        .into_iter()
                        .map(move |partition| (name.clone(), partition))
                })
                .collect();
            (member, partitions)
        })
        .collect()
}

/// Asserts the members' partitions are disjoint, cover both topics, and are balanced.
fn assert_disjoint_covering(members: &[(JoinGroupResponse, Vec<(String, i32)>)]) {
    let mut all: Vec<(String, i32)> = members
        .iter()
        .flat_map(|(_, partitions)| partitions.clone())
        .collect();
    all.sort();
    let expected: Vec<(String, i32)> = (0..6)
        .map(|partition| ("orders".to_string(), partition))
        .chain((0..3).map(|partition| ("payments".to_string(), partition)))
        .collect();
    assert_eq!(all, expected, "disjoint and covering");
    let counts: Vec<usize> = members
        .iter()
        .map(|(_, partitions)| partitions.len())
        .collect();
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
}

fn commit_request(member: Option<&JoinGroupResponse>, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: GROUP.to_string(),
        generation_id: member.map_or(-1, |member| member.generation_id),
        member_id: member.map_or(String::new(), |member| member.member_id.clone()),
        topics: vec![OffsetCommitTopic {
            name: "orders".to_string(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset,
                metadata: None,
            }],
        }],
    }
}

/// The error of the single partition of a [`commit_request`].
async fn commit(
    coordinator: &GroupCoordinator,
    member: Option<&JoinGroupResponse>,
    offset: i64,
) -> ErrorCode {
    let response = coordinator
        .commit_offsets(commit_request(member, offset))
        .await;
    response.topics[0].partitions[0].1
}

fn committed(coordinator: &GroupCoordinator, group: &str) -> Vec<(String, i32, i64)> {
    let response = coordinator.fetch_offsets(OffsetFetchRequest {
        group_id: group.to_string(),
        topics: None,
    });
    assert_eq!(response.error_code, ErrorCode::NONE);
    response
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name;
            topic
                .partitions
                .into_iter()
                .map(move |partition| (name.clone(), partition.partition, partition.offset))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn joins_of_one_two_and_three_members_give_disjoint_covering_assignments() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    assert_eq!(one[0].0.generation_id, 1);
    assert!(
        one[0].0.member_id.starts_with("test-client-"),
        "{}",
        one[0].0.member_id
    );
    assert_eq!(one[0].0.leader_id, one[0].0.member_id);
    assert_eq!(one[0].0.assignor, "sticky");
    assert_disjoint_covering(&one);

    // A second member: the first learns of the rebalance from its heartbeat, then rejoins.
    let second = spawn_join(
        coordinator,
        join_request(GROUP, "", &["orders", "payments"]),
    );
    settle().await;
    assert_eq!(
        heartbeat(coordinator, &one[0].0, 0).await,
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    let first_again = spawn_join(
        coordinator,
        join_request(GROUP, &one[0].0.member_id, &["orders", "payments"]),
    );
    let (first_again, second) = (first_again.await.unwrap(), second.await.unwrap());
    assert_eq!((first_again.generation_id, second.generation_id), (2, 2));
    assert_eq!(
        second.leader_id, one[0].0.member_id,
        "the longest-standing member leads"
    );
    let two: Vec<_> = [first_again, second]
        .into_iter()
        .map(|member| {
            let partitions = sync(coordinator, &member)
                .into_iter()
                .flat_map(|topic| {
                    let name = topic.topic;
                    topic
                        .partitions
                        .into_iter()
                        .map(move |partition| (name.clone(), partition))
                })
                .collect();
            (member, partitions)
        })
        .collect();
    assert_disjoint_covering(&two);
    assert_ne!(two[0].0.member_id, two[1].0.member_id);

    let three = form(coordinator, 1, &[&two[0].0, &two[1].0]).await;
    assert_eq!(three[0].0.generation_id, 3);
    assert_disjoint_covering(&three);
    // Sticky: the first two members keep what balance allows (3 each of their 4 or 5).
    for (before, after) in two.iter().zip(&three[1..]) {
        let kept = before
            .1
            .iter()
            .filter(|partition| after.1.contains(partition))
            .count();
        assert_eq!(kept, after.1.len(), "{:?} -> {:?}", before.1, after.1);
    }
    let described = coordinator.describe_groups(GroupsRequest {
        groups: vec![GROUP.to_string()],
    });
    assert_eq!(described.groups[0].state, "Stable");
    assert_eq!(described.groups[0].members.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_leave_rebalances_and_the_rest_get_everything() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let two = form(coordinator, 1, &[&one[0].0]).await;
    let leaving = &two[1].0;
    let left = coordinator.leave_group(LeaveGroupRequest {
        group_id: GROUP.to_string(),
        member_id: leaving.member_id.clone(),
    });
    assert_eq!(left.error_code, ErrorCode::NONE);
    assert_eq!(
        heartbeat(coordinator, leaving, 0).await,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(coordinator, &two[0].0, 0).await,
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    let alone = form(coordinator, 0, &[&two[0].0]).await;
    assert_eq!(alone[0].0.generation_id, 3);
    assert_disjoint_covering(&alone);
    // The last member leaving empties the group.
    coordinator.leave_group(LeaveGroupRequest {
        group_id: GROUP.to_string(),
        member_id: alone[0].0.member_id.clone(),
    });
    let again = coordinator.leave_group(LeaveGroupRequest {
        group_id: GROUP.to_string(),
        member_id: alone[0].0.member_id.clone(),
    });
    assert_eq!(again.error_code, ErrorCode::UNKNOWN_MEMBER_ID);
    let described = coordinator.describe_groups(GroupsRequest {
        groups: vec![GROUP.to_string()],
    });
    assert_eq!(
        described.groups[0].state, "Dead",
        "no members and no offsets"
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_heartbeating_is_expired_after_its_session_timeout() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let two = form(coordinator, 1, &[&one[0].0]).await;
    // The first member heartbeats (long polls of 3 s); the second goes silent.
    let silent_since = Instant::now();
    let alive = two[0].0.clone();
    let outcome = loop {
        let code = heartbeat(coordinator, &alive, 3_000).await;
        if code != ErrorCode::NONE {
            break code;
        }
    };
    assert_eq!(outcome, ErrorCode::REBALANCE_IN_PROGRESS);
    let waited = silent_since.elapsed();
    let session = Duration::from_millis(SESSION_MS as u64);
    assert!(
        waited >= session && waited < session + Duration::from_millis(300),
        "{waited:?}"
    );
    let alone = form(coordinator, 0, &[&alive]).await;
    assert_eq!(alone.len(), 1);
    assert_disjoint_covering(&alone);
    assert_eq!(
        heartbeat(coordinator, &two[1].0, 0).await,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[tokio::test(start_paused = true)]
async fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let two = form(coordinator, 1, &[&one[0].0]).await;
    let started = Instant::now();
    // A third member joins; only the first rejoins.
    let third = spawn_join(
        coordinator,
        join_request(GROUP, "", &["orders", "payments"]),
    );
    settle().await;
    let first = spawn_join(
        coordinator,
        join_request(GROUP, &two[0].0.member_id, &["orders", "payments"]),
    );
    let (third, first) = (third.await.unwrap(), first.await.unwrap());
    let waited = started.elapsed();
    let rebalance = Duration::from_millis(REBALANCE_MS as u64);
    assert!(
        waited >= rebalance && waited < rebalance + Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!((first.generation_id, third.generation_id), (3, 3));
    assert_eq!(
        heartbeat(coordinator, &two[1].0, 0).await,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    let members = [first, third].map(|member| {
        let partitions: usize = sync(coordinator, &member)
            .iter()
            .map(|topic| topic.partitions.len())
            .sum();
        partitions
    });
    assert_eq!(members.iter().sum::<usize>(), 9);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_long_poll_returns_rebalance_in_progress_promptly_when_another_member_joins() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let member = one[0].0.clone();
    let polling = {
        let coordinator = Arc::clone(coordinator);
        tokio::spawn(async move {
            let code = heartbeat(&coordinator, &member, 4_000).await;
            (code, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let joined_at = Instant::now();
    let _second = spawn_join(coordinator, join_request(GROUP, "", &["orders"]));
    let (code, answered_at) = polling.await.unwrap();
    assert_eq!(code, ErrorCode::REBALANCE_IN_PROGRESS);
    assert!(answered_at - joined_at < Duration::from_millis(10));
    // Without a rebalance the long poll answers NONE after its wait, capped at half the
    // session timeout.
    let quiet = new_fixture();
    let one = form(&quiet.coordinator, 1, &[]).await;
    let started = Instant::now();
    assert_eq!(
        heartbeat(&quiet.coordinator, &one[0].0, 60_000).await,
        ErrorCode::NONE
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(SESSION_MS as u64 / 2)
    );
}

#[tokio::test(start_paused = true)]
async fn commits_from_a_stale_generation_are_rejected() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let two = form(coordinator, 1, &[&one[0].0]).await;
    assert_eq!(
        commit(coordinator, Some(&one[0].0), 5).await,
        ErrorCode::ILLEGAL_GENERATION
    );
    assert_eq!(
        commit(coordinator, Some(&two[0].0), 6).await,
        ErrorCode::NONE
    );
    let mut stranger = two[0].0.clone();
    stranger.member_id = "someone-else".to_string();
    assert_eq!(
        commit(coordinator, Some(&stranger), 7).await,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        committed(coordinator, GROUP),
        vec![("orders".to_string(), 0, 6)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_commit_during_a_rebalance_from_the_current_generation_is_accepted() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let _second = spawn_join(coordinator, join_request(GROUP, "", &["orders"]));
    settle().await;
    let described = coordinator.describe_groups(GroupsRequest {
        groups: vec![GROUP.to_string()],
    });
    assert_eq!(described.groups[0].state, "PreparingRebalance");
    assert_eq!(
        commit(coordinator, Some(&one[0].0), 42).await,
        ErrorCode::NONE
    );
    assert_eq!(
        committed(coordinator, GROUP),
        vec![("orders".to_string(), 0, 42)]
    );
}

#[tokio::test(start_paused = true)]
async fn commits_outside_membership_are_accepted_only_while_the_group_is_empty() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    assert_eq!(
        commit(coordinator, None, 3).await,
        ErrorCode::NONE,
        "no group yet"
    );
    let one = form(coordinator, 1, &[]).await;
    assert_eq!(
        commit(coordinator, None, 4).await,
        ErrorCode::NON_EMPTY_GROUP
    );
    coordinator.leave_group(LeaveGroupRequest {
        group_id: GROUP.to_string(),
        member_id: one[0].0.member_id.clone(),
    });
    assert_eq!(commit(coordinator, None, 5).await, ErrorCode::NONE);
    assert_eq!(
        committed(coordinator, GROUP),
        vec![("orders".to_string(), 0, 5)]
    );
}

#[tokio::test(start_paused = true)]
async fn each_partition_of_a_commit_is_checked() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let partition = |partition, offset, metadata: Option<String>| OffsetCommitPartition {
        partition,
        offset,
        metadata,
    };
    let request = OffsetCommitRequest {
        group_id: GROUP.to_string(),
        generation_id: -1,
        member_id: String::new(),
        topics: vec![
            OffsetCommitTopic {
                name: "orders".to_string(),
                partitions: vec![
                    partition(0, 10, Some("ok".to_string())),
                    partition(6, 10, None),
                    partition(1, -1, None),
                    partition(2, 10, Some("x".repeat(4097))),
                    partition(3, 1 << 40, Some("x".repeat(4096))),
                ],
            },
            OffsetCommitTopic {
                name: "missing".to_string(),
                partitions: vec![partition(0, 1, None)],
            },
        ],
    };
    let response = coordinator.commit_offsets(request).await;
    let codes: Vec<ErrorCode> = response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|(_, code)| *code))
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::NONE,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::INVALID_REQUEST,
            ErrorCode::OFFSET_METADATA_TOO_LARGE,
            ErrorCode::NONE,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        ]
    );
    assert_eq!(
        committed(coordinator, GROUP),
        vec![
            ("orders".to_string(), 0, 10),
            ("orders".to_string(), 3, 1 << 40)
        ]
    );
    let fetched = coordinator.fetch_offsets(OffsetFetchRequest {
        group_id: GROUP.to_string(),
        topics: Some(vec![TopicPartitions {
            topic: "orders".to_string(),
            partitions: vec![0, 1],
        }]),
    });
    let answers: Vec<(i32, i64, Option<String>)> = fetched.topics[0]
        .partitions
        .iter()
        .map(|partition| {
            (
                partition.partition,
                partition.offset,
                partition.metadata.clone(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        vec![(0, 10, Some("ok".to_string())), (1, -1, None)]
    );
}

#[tokio::test(start_paused = true)]
async fn joins_are_validated() {
    let fixture = fixture_with(GroupConfig {
        max_size: 2,
        ..GroupConfig::default()
    });
    let coordinator = &fixture.coordinator;
    let join = |request| coordinator.join_group(request, client());
    for group in ["", "   ", &"g".repeat(256)] {
        let response = join(join_request(group, "", &["orders"])).await;
        assert_eq!(
            response.error_code,
            ErrorCode::INVALID_GROUP_ID,
            "{group:?}"
        );
    }
    for session_timeout_ms in [999, 300_001, -1] {
        let request = JoinGroupRequest {
            session_timeout_ms,
            ..join_request(GROUP, "", &["orders"])
        };
        assert_eq!(
            join(request).await.error_code,
            ErrorCode::INVALID_SESSION_TIMEOUT
        );
    }
    let unknown_strategy = JoinGroupRequest {
        assignors: vec!["cooperative-sticky".to_string()],
        ..join_request(GROUP, "", &["orders"])
    };
    assert_eq!(
        join(unknown_strategy).await.error_code,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
    let unknown_member = join(join_request(GROUP, "nobody", &["orders"])).await;
    assert_eq!(unknown_member.error_code, ErrorCode::UNKNOWN_MEMBER_ID);

    let range_only = JoinGroupRequest {
        assignors: vec!["range".to_string()],
        ..join_request(GROUP, "", &["orders"])
    };
    let first = join(range_only).await;
    assert_eq!(
        (first.error_code, first.assignor.as_str()),
        (ErrorCode::NONE, "range")
    );
    let round_robin_only = JoinGroupRequest {
        assignors: vec!["roundrobin".to_string()],
        ..join_request(GROUP, "", &["orders"])
    };
    assert_eq!(
        join(round_robin_only).await.error_code,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
    let _second = spawn_join(coordinator, join_request(GROUP, "", &["orders"]));
    settle().await;
    let third = join(join_request(GROUP, "", &["orders"])).await;
    assert_eq!(third.error_code, ErrorCode::GROUP_MAX_SIZE_REACHED);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_rejoin_of_a_stable_member_is_answered_at_once() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let again = coordinator
        .join_group(
            join_request(GROUP, &one[0].0.member_id, &["orders", "payments"]),
            client(),
        )
        .await;
    assert_eq!(again, one[0].0);
    // A changed subscription starts a rebalance; being alone, it forms at once.
    let changed = coordinator
        .join_group(
            join_request(GROUP, &one[0].0.member_id, &["orders"]),
            client(),
        )
        .await;
    assert_eq!(changed.generation_id, 2);
    let partitions = sync(coordinator, &changed);
    assert_eq!(
        partitions,
        vec![TopicPartitions {
            topic: "orders".to_string(),
            partitions: (0..6).collect()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn topic_changes_rebalance_subscribed_groups_and_deletions_drop_offsets() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let member = coordinator
        .join_group(join_request(GROUP, "", &["orders", "fresh"]), client())
        .await;
    assert_eq!(
        sync(coordinator, &member).len(),
        1,
        "fresh does not exist yet"
    );
    coordinator.update_topic("payments", 5);
    assert_eq!(
        heartbeat(coordinator, &member, 0).await,
        ErrorCode::NONE,
        "not subscribed"
    );
    coordinator.update_topic("fresh", 2);
    assert_eq!(
        heartbeat(coordinator, &member, 0).await,
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    let member = coordinator
        .join_group(
            join_request(GROUP, &member.member_id, &["orders", "fresh"]),
            client(),
        )
        .await;
    let topics: Vec<String> = sync(coordinator, &member)
        .into_iter()
        .map(|topic| topic.topic)
        .collect();
    assert_eq!(topics, ["fresh", "orders"]);
    assert_eq!(commit(coordinator, Some(&member), 9).await, ErrorCode::NONE);
    assert_eq!(coordinator.delete_topic("orders").await.unwrap(), 1);
    assert!(committed(coordinator, GROUP).is_empty());
    assert_eq!(
        heartbeat(coordinator, &member, 0).await,
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        commit(coordinator, Some(&member), 10).await,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[tokio::test(start_paused = true)]
async fn groups_are_listed_described_and_deleted() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let member = form(coordinator, 1, &[]).await.remove(0).0;
    let offsets_only = OffsetCommitRequest {
        group_id: "archived".to_string(),
        ..commit_request(None, 7)
    };
    coordinator.commit_offsets(offsets_only).await;
    let listed: Vec<(String, String, i32)> = coordinator
        .list_groups()
        .groups
        .into_iter()
        .map(|group| (group.group_id, group.state, group.members))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("archived".to_string(), "Empty".to_string(), 0),
            (GROUP.to_string(), "Stable".to_string(), 1),
        ]
    );
    let described = coordinator.describe_groups(GroupsRequest {
        groups: vec![
            GROUP.to_string(),
            "archived".to_string(),
            "nobody".to_string(),
            String::new(),
        ],
    });
    let billing = &described.groups[0];
    assert_eq!(
        (billing.assignor.as_str(), billing.generation_id),
        ("sticky", 1)
    );
    let described_member = &billing.members[0];
    assert_eq!(described_member.member_id, member.member_id);
    assert_eq!(
        (
            described_member.client_id.as_str(),
            described_member.client_host.as_str()
        ),
        ("test-client", "127.0.0.1")
    );
    assert_eq!(described_member.topics, ["orders", "payments"]);
    assert_eq!(described_member.assignment.len(), 2);
    let states: Vec<(&str, ErrorCode)> = described.groups[1..]
        .iter()
        .map(|group| (group.state.as_str(), group.error_code))
        .collect();
    assert_eq!(
        states,
        [
            ("Empty", ErrorCode::NONE),
            ("Dead", ErrorCode::NONE),
            ("", ErrorCode::INVALID_GROUP_ID)
        ]
    );

    let deleted = coordinator
        .delete_groups(GroupsRequest {
            groups: vec![
                GROUP.to_string(),
                "archived".to_string(),
                "archived".to_string(),
                "nobody".to_string(),
            ],
        })
        .await;
    let codes: Vec<ErrorCode> = deleted.groups.iter().map(|(_, code)| *code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::NON_EMPTY_GROUP,
            ErrorCode::NONE,
            ErrorCode::GROUP_ID_NOT_FOUND,
            ErrorCode::GROUP_ID_NOT_FOUND
        ]
    );
    assert!(committed(coordinator, "archived").is_empty());
    assert_eq!(coordinator.list_groups().groups.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_held_joins_and_heartbeats() {
    let fixture = new_fixture();
    let coordinator = &fixture.coordinator;
    let one = form(coordinator, 1, &[]).await;
    let member = one[0].0.clone();
    let polling = {
        let coordinator = Arc::clone(coordinator);
        tokio::spawn(async move { heartbeat(&coordinator, &member, 4_000).await })
    };
    let other_group = coordinator
        .join_group(join_request("other", "", &["orders"]), client())
        .await;
    let held = spawn_join(coordinator, join_request("other", "", &["orders"]));
    settle().await;
    let before = Instant::now();
    coordinator.shutdown();
    assert_eq!(polling.await.unwrap(), ErrorCode::COORDINATOR_NOT_AVAILABLE);
    assert_eq!(
        held.await.unwrap().error_code,
        ErrorCode::COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(before.elapsed(), Duration::ZERO);
    let late = coordinator
        .join_group(
            join_request("other", &other_group.member_id, &["orders"]),
            client(),
        )
        .await;
    assert_eq!(late.error_code, ErrorCode::COORDINATOR_NOT_AVAILABLE);
}

#[test]
fn member_ids_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let store = OffsetStore::open(dir.path(), 10).unwrap();
    let coordinator = GroupCoordinator::new(GroupConfig::default(), Arc::new(store), []);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One group each: a second member of a group would wait for the first to rejoin.
    let ids: BTreeSet<String> = (0..100)
        .map(|group| {
            let request = join_request(&format!("group-{group}"), "", &["orders"]);
            runtime
                .block_on(coordinator.join_group(request, ClientInfo::default()))
                .member_id
        })
        .collect();
    assert_eq!(ids.len(), 100);
    assert!(ids.iter().all(|id| id.starts_with("member-")));
}
