//! Committed offsets: the committer task, [`CommitHandle`], and the OffsetCommit and
//! OffsetFetch exchanges with the coordinator.
//!
//! ```text
//! commit_sync, commit_async, auto-commit ──► bounded mpsc ──► committer task ──► OffsetCommit
//!        ▲                                                          │     (one at a time)
//!        └─────────────── oneshot (or a log line) ◄─────────────────┘
//! ```
//!
//! Every commit of one member goes through its one committer task, which sends them one at a
//! time in the order they were made, so an asynchronous commit made before a synchronous one
//! is never applied after it. A commit carries the generation and member id current when it
//! was made: if the group moved on meanwhile, the coordinator refuses it (the partitions may
//! belong to someone else by now) instead of overwriting a newer owner's progress.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mq_protocol::request::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest, Request,
    TopicPartitions,
};
use mq_protocol::response::{PartitionErrorsResponse, Response};
use mq_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Coordinator, Generation, Signal};
use crate::client::TopicPartition;
use crate::error::ClientError;

/// Commits that may wait for the committer at once; more make
/// [`Consumer::commit_async`](crate::Consumer::commit_async) fail at once (and
/// `commit_sync` wait).
pub(crate) const COMMITS_QUEUED_MAX: usize = 1024;

/// The outcome of an asynchronous commit: a future that completes once the coordinator
/// stored the offsets (or refused them).
///
/// Dropping it does not cancel the commit: the commit is queued already, and its outcome is
/// then not reported anywhere.
#[derive(Debug)]
pub struct CommitHandle {
    /// Where the outcome comes from.
    state: HandleState,
}

/// A [`CommitHandle`]'s outcome, known or to come.
#[derive(Debug)]
enum HandleState {
    /// Known when the commit was made (nothing to commit, or refused before queueing);
    /// `None` once taken.
    Ready(Option<Result<(), ClientError>>),
    /// Completed by the committer task.
    Waiting(oneshot::Receiver<Result<(), ClientError>>),
}

impl CommitHandle {
    /// A handle whose outcome is already known.
    pub(crate) fn ready(result: Result<(), ClientError>) -> CommitHandle {
        CommitHandle {
            state: HandleState::Ready(Some(result)),
        }
    }
}

impl Future for CommitHandle {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            // Polled again after completing (a misuse of the future): nothing more to say.
            HandleState::Ready(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            HandleState::Waiting(receiver) => Pin::new(receiver)
                .poll(context)
                .map(|result| result.unwrap_or_else(|_| Err(committer_closed()))),
        }
    }
}

fn committer_closed() -> ClientError {
    ClientError::Closed {
        what: "committer".to_string(),
    }
}

/// Who learns a commit's outcome.
#[derive(Debug)]
enum Reply {
    /// The caller, through a [`CommitHandle`].
    Caller(oneshot::Sender<Result<(), ClientError>>),
    /// Nobody: a failure is logged (auto-commit).
    Log,
}

/// One commit for the committer task.
#[derive(Debug)]
struct CommitJob {
    /// The generation and member the commit is made in; `None` only with no offsets.
    generation: Option<Generation>,
    /// The offsets; none for a commit that only waits for the earlier ones.
    offsets: Vec<(TopicPartition, i64)>,
    /// Who learns the outcome.
    reply: Reply,
}

/// A member's committer: the queue of its commits and the task sending them.
#[derive(Debug)]
pub(crate) struct Committer {
    /// The queue; dropping it lets the task finish what is queued and end.
    jobs: mpsc::Sender<CommitJob>,
    /// The task.
    task: JoinHandle<()>,
}

impl Committer {
    /// Starts the committer task of a member.
    pub(crate) fn start(
        coordinator: Arc<Coordinator>,
        signal: Arc<Signal>,
        request_timeout: Duration,
    ) -> Committer {
        let (jobs, queue) = mpsc::channel(COMMITS_QUEUED_MAX);
        let task = tokio::spawn(run(coordinator, signal, queue, request_timeout));
        Committer { jobs, task }
    }

    /// Queues a commit, returning its handle; fails at once when the queue is full.
    pub(crate) fn commit(
        &self,
        generation: Option<Generation>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> CommitHandle {
        let (sender, receiver) = oneshot::channel();
        let job = CommitJob {
            generation,
            offsets,
            reply: Reply::Caller(sender),
        };
        match self.jobs.try_send(job) {
            Ok(()) => CommitHandle {
                state: HandleState::Waiting(receiver),
            },
            Err(mpsc::error::TrySendError::Full(_)) => {
                CommitHandle::ready(Err(ClientError::CommitQueueFull {
                    limit: COMMITS_QUEUED_MAX,
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                CommitHandle::ready(Err(committer_closed()))
            }
        }
    }

    /// Queues a commit, waiting for room in the queue, and waits for its outcome.
    pub(crate) async fn commit_waiting(
        &self,
        generation: Option<Generation>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<(), ClientError> {
        let (sender, receiver) = oneshot::channel();
        let job = CommitJob {
            generation,
            offsets,
            reply: Reply::Caller(sender),
        };
        self.jobs.send(job).await.map_err(|_| committer_closed())?;
        receiver.await.unwrap_or_else(|_| Err(committer_closed()))
    }

    /// Queues a commit whose failure is only logged (auto-commit); skipped, with a log line,
    /// when the queue is full.
    pub(crate) fn commit_logged(
        &self,
        generation: Option<Generation>,
        offsets: Vec<(TopicPartition, i64)>,
    ) {
        let job = CommitJob {
            generation,
            offsets,
            reply: Reply::Log,
        };
        if self.jobs.try_send(job).is_err() {
            tracing::debug!("commit queue full, skipping an auto-commit");
        }
    }

    /// Lets the task send what is queued, waiting up to `timeout` for it to finish, then
    /// stops it.
    pub(crate) async fn close(self, timeout: Duration) {
        let Committer { jobs, mut task } = self;
        drop(jobs);
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            tracing::debug!("committer did not finish in time, stopping it");
            task.abort();
        }
    }
}

/// The committer task: sends the queued commits one at a time until the queue closes.
async fn run(
    coordinator: Arc<Coordinator>,
    signal: Arc<Signal>,
    mut queue: mpsc::Receiver<CommitJob>,
    request_timeout: Duration,
) {
    while let Some(job) = queue.recv().await {
        let result = match &job.generation {
            _ if job.offsets.is_empty() => Ok(()),
            Some(generation) => {
                let deadline = Instant::now() + request_timeout;
                let result = commit(
                    &coordinator,
                    generation,
                    &job.offsets,
                    request_timeout,
                    deadline,
                )
                .await;
                if let Some(code) = result.as_ref().err().and_then(ClientError::code) {
                    if code == ErrorCode::ILLEGAL_GENERATION || code == ErrorCode::UNKNOWN_MEMBER_ID
                    {
                        signal.rejoin(generation.id, code);
                    }
                }
                result
            }
            None => Err(ClientError::NotMember {
                group: coordinator.group_id().to_string(),
            }),
        };
        match job.reply {
            Reply::Caller(sender) => {
                let _ = sender.send(result);
            }
            Reply::Log => {
                if let Err(error) = result {
                    tracing::warn!(group = coordinator.group_id(), %error, "auto-commit failed");
                }
            }
        }
    }
}

/// Commits `offsets` in `generation`, retrying a moved coordinator until `deadline`.
pub(crate) async fn commit(
    coordinator: &Coordinator,
    generation: &Generation,
    offsets: &[(TopicPartition, i64)],
    timeout: Duration,
    deadline: Instant,
) -> Result<(), ClientError> {
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group_id: coordinator.group_id().to_string(),
        generation_id: generation.id,
        member_id: generation.member_id.clone(),
        topics: commit_topics(offsets),
    });
    let Response::OffsetCommit(response) = coordinator.request(request, timeout, deadline).await?
    else {
        return Err(ClientError::UnexpectedResponse {
            api: "OffsetCommit",
        });
    };
    tracing::debug!(
        group = coordinator.group_id(),
        generation = generation.id,
        partitions = offsets.len(),
        "committed offsets"
    );
    commit_result(coordinator.group_id(), &response)
}

/// Groups offsets by topic, as OffsetCommit carries them.
pub(crate) fn commit_topics(offsets: &[(TopicPartition, i64)]) -> Vec<OffsetCommitTopic> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitPartition>> = BTreeMap::new();
    for (topic_partition, offset) in offsets {
        topics
            .entry(&topic_partition.topic)
            .or_default()
            .push(OffsetCommitPartition {
                partition: topic_partition.partition,
                offset: *offset,
                metadata: None,
            });
    }
    topics
        .into_iter()
        .map(|(name, partitions)| OffsetCommitTopic {
            name: name.to_string(),
            partitions,
        })
        .collect()
}

/// The outcome of an OffsetCommit: the first refused partition's error, if any. Codes about
/// the membership become [`ClientError::Group`], `NON_EMPTY_GROUP` (a commit from outside a
/// group with members) [`ClientError::GroupNotEmpty`].
pub(crate) fn commit_result(
    group: &str,
    response: &PartitionErrorsResponse,
) -> Result<(), ClientError> {
    let refused = response.topics.iter().find_map(|topic| {
        topic
            .partitions
            .iter()
            .find(|(_, code)| *code != ErrorCode::NONE)
            .map(|(partition, code)| (topic.name.as_str(), *partition, *code))
    });
    let Some((topic, partition, code)) = refused else {
        return Ok(());
    };
    Err(match code {
        ErrorCode::NON_EMPTY_GROUP => ClientError::GroupNotEmpty {
            group: group.to_string(),
            action: "resetting its offsets",
        },
        ErrorCode::UNKNOWN_MEMBER_ID
        | ErrorCode::ILLEGAL_GENERATION
        | ErrorCode::REBALANCE_IN_PROGRESS
        | ErrorCode::INVALID_GROUP_ID => ClientError::Group {
            group: group.to_string(),
            code,
        },
        code => ClientError::GroupPartition {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            code,
        },
    })
}

/// A committed offset as OffsetFetch answers it: -1 when the group has none.
pub(crate) type FetchedOffset = (TopicPartition, i64, Option<String>);

/// The group's committed offsets of `partitions` (`None`: of every partition it has one
/// for), retrying a moved coordinator until `deadline`.
pub(crate) async fn fetch_committed(
    coordinator: &Coordinator,
    partitions: Option<&[TopicPartition]>,
    timeout: Duration,
    deadline: Instant,
) -> Result<Vec<FetchedOffset>, ClientError> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group_id: coordinator.group_id().to_string(),
        topics: partitions.map(fetch_topics),
    });
    let Response::OffsetFetch(response) = coordinator.request(request, timeout, deadline).await?
    else {
        return Err(ClientError::UnexpectedResponse { api: "OffsetFetch" });
    };
    if response.error_code != ErrorCode::NONE {
        return Err(coordinator.error(response.error_code));
    }
    let mut offsets = Vec::new();
    for topic in response.topics {
        for entry in topic.partitions {
            if entry.error_code != ErrorCode::NONE {
                return Err(ClientError::GroupPartition {
                    group: coordinator.group_id().to_string(),
                    topic: topic.name,
                    partition: entry.partition,
                    code: entry.error_code,
                });
            }
            let topic_partition = TopicPartition::new(topic.name.clone(), entry.partition);
            offsets.push((topic_partition, entry.offset, entry.metadata));
        }
    }
    Ok(offsets)
}

/// Groups partitions by topic, as OffsetFetch carries them.
fn fetch_topics(partitions: &[TopicPartition]) -> Vec<TopicPartitions> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for topic_partition in partitions {
        topics
            .entry(&topic_partition.topic)
            .or_default()
            .push(topic_partition.partition);
    }
    topics
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::response::TopicPartitionErrors;

    fn offsets(list: &[(&str, i32, i64)]) -> Vec<(TopicPartition, i64)> {
        list.iter()
            .map(|(topic, partition, offset)| (TopicPartition::new(*topic, *partition), *offset))
            .collect()
    }

    #[test]
    fn offsets_are_grouped_by_topic() {
        let topics = commit_topics(&offsets(&[("b", 1, 7), ("a", 0, 3), ("b", 0, 5)]));
        let summary: Vec<(String, Vec<(i32, i64)>)> = topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| (partition.partition, partition.offset))
                    .collect();
                (topic.name, partitions)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a".to_string(), vec![(0, 3)]),
                ("b".to_string(), vec![(1, 7), (0, 5)])
            ]
        );
        let fetch = fetch_topics(&[TopicPartition::new("b", 2), TopicPartition::new("a", 1)]);
        assert_eq!(fetch[0].topic, "a");
        assert_eq!(fetch[1].partitions, [2]);
    }

    fn answer(code: ErrorCode) -> PartitionErrorsResponse {
        PartitionErrorsResponse {
            topics: vec![TopicPartitionErrors {
                name: "t".into(),
                partitions: vec![(0, ErrorCode::NONE), (1, code)],
            }],
        }
    }

    #[test]
    fn commit_errors_name_the_group_and_partition() {
        assert!(commit_result("g", &answer(ErrorCode::NONE)).is_ok());
        let error = commit_result("g", &answer(ErrorCode::NON_EMPTY_GROUP)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "group g has active members: stop them before resetting its offsets"
        );
        let error = commit_result("g", &answer(ErrorCode::ILLEGAL_GENERATION)).unwrap_err();
        assert!(matches!(error, ClientError::Group { .. }), "{error:?}");
        let error = commit_result("g", &answer(ErrorCode::INVALID_REQUEST)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "group g, 't' partition 1: INVALID_REQUEST (42): the request is malformed"
        );
    }

    #[tokio::test]
    async fn ready_handles_complete_at_once() {
        assert!(CommitHandle::ready(Ok(())).await.is_ok());
        let error = CommitHandle::ready(Err(ClientError::NoGroup {
            operation: "commit",
        }))
        .await
        .unwrap_err();
        assert!(matches!(error, ClientError::NoGroup { .. }));
    }
}
