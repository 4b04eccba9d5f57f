//! How a produce's outcome reaches its caller: one future per record
//! ([`DeliveryFuture`], from `Producer::send`) or one per group of records
//! ([`BatchDeliveryFuture`], from `Producer::send_batch`).
//!
//! A sealed batch holds a list of `Delivery`s, each covering consecutive records of the
//! batch. A single record's delivery covers one record and completes a oneshot; a group sent
//! with `send_batch` may span several batches (it is split where a batch fills up), so each
//! of its parts completes a share of one `GroupOutcome`, which answers once every part has
//! settled. Either way the work per acknowledged batch is per delivery, not per record, for
//! groups: this is what lets one producer thread keep a socket full.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::error::ClientError;

/// Where an acknowledged record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with `acks=0`, where the broker does not say.
    pub offset: i64,
    /// The record's timestamp, as sent.
    pub timestamp: i64,
}

/// Where the records of one `Producer::send_batch` were written: their partition and
/// offsets, in the order they were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Runs of consecutive offsets, `(first offset, record count)`, in record order. The
    /// records of a group are written in order but may be split over several batches, and
    /// another producer's batch may land between two of them. With `acks=0` the offsets are
    /// -1.
    runs: Vec<(i64, usize)>,
}

impl BatchMetadata {
    /// How many records the group held.
    pub fn record_count(&self) -> usize {
        self.runs.iter().map(|(_, count)| count).sum()
    }

    /// The offset of the group's first record (-1 with `acks=0`).
    pub fn first_offset(&self) -> i64 {
        self.runs.first().map_or(-1, |(offset, _)| *offset)
    }

    /// Every record's offset, in the order the records were given.
    pub fn offsets(&self) -> impl Iterator<Item = i64> + '_ {
        self.runs.iter().flat_map(|&(first, count)| {
            (0..count).map(move |index| {
                if first < 0 {
                    -1
                } else {
                    first + i64::try_from(index).unwrap_or(i64::MAX)
                }
            })
        })
    }
}

/// The outcome of one `Producer::send`: resolves once the record is acknowledged (or
/// written to the socket, with `acks=0`), or has failed for good.
///
/// Dropping it does not cancel the record.
#[derive(Debug)]
#[must_use = "a delivery tells whether the record was written; await it or drop it knowingly"]
pub struct DeliveryFuture {
    /// Completed by the sender task.
    pub(crate) receiver: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        poll_outcome(&mut self.receiver, context)
    }
}

/// The outcome of one `Producer::send_batch`: resolves once every record of the group is
/// acknowledged, or with the first error once any of them failed for good (records of the
/// group in other batches may then have been written: at-least-once, as for single
/// records that failed).
///
/// Dropping it does not cancel the records.
#[derive(Debug)]
#[must_use = "a delivery tells whether the records were written; await it or drop it knowingly"]
pub struct BatchDeliveryFuture {
    /// Completed by the last part of the group to settle.
    pub(crate) receiver: oneshot::Receiver<Result<BatchMetadata, ClientError>>,
}

impl Future for BatchDeliveryFuture {
    type Output = Result<BatchMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        poll_outcome(&mut self.receiver, context)
    }
}

/// An outcome sent by the producer; the producer closed if its sender is gone unsent.
fn poll_outcome<T>(
    receiver: &mut oneshot::Receiver<Result<T, ClientError>>,
    context: &mut Context<'_>,
) -> Poll<Result<T, ClientError>> {
    Pin::new(receiver).poll(context).map(|result| {
        result.unwrap_or_else(|_| {
            Err(ClientError::Closed {
                what: "producer".to_string(),
            })
        })
    })
}

/// The outcome of some consecutive records of one batch.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// How many consecutive records of the batch it covers (at least 1).
    pub(crate) records: usize,
    /// Where the outcome goes.
    pub(crate) sink: Sink,
}

/// Where a [`Delivery`]'s outcome goes.
#[derive(Debug)]
pub(crate) enum Sink {
    /// One record of `Producer::send`, with its timestamp (reported back in its metadata).
    Record {
        timestamp: i64,
        sender: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    },
    /// Part `part` of a group of `Producer::send_batch`.
    Group {
        part: usize,
        group: Arc<GroupOutcome>,
    },
}

impl Delivery {
    /// A single record's delivery.
    pub(crate) fn record(
        timestamp: i64,
        sender: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    ) -> Delivery {
        Delivery {
            records: 1,
            sink: Sink::Record { timestamp, sender },
        }
    }

    /// Its records were written at offsets from `first_offset` on (-1 each, with `acks=0`).
    pub(crate) fn complete(self, topic: &str, partition: i32, first_offset: Option<i64>) {
        match self.sink {
            Sink::Record { timestamp, sender } => {
                let _ = sender.send(Ok(RecordMetadata {
                    topic: topic.to_string(),
                    partition,
                    offset: first_offset.unwrap_or(-1),
                    timestamp,
                }));
            }
            Sink::Group { part, group } => {
                group.settle_part(part, Ok((first_offset.unwrap_or(-1), self.records)));
            }
        }
    }

    /// Its records failed for good.
    pub(crate) fn fail(self, error: &ClientError) {
        match self.sink {
            Sink::Record { sender, .. } => {
                let _ = sender.send(Err(error.clone()));
            }
            Sink::Group { part, group } => group.settle_part(part, Err(error)),
        }
    }
}

/// A `send_batch` group's outcome, shared by its parts (one per batch it landed in).
#[derive(Debug)]
pub(crate) struct GroupOutcome {
    /// The topic and partition, for the metadata.
    topic: String,
    partition: i32,
    /// What the parts said so far.
    state: Mutex<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    /// Parts not settled yet; known once the group is fully appended (`sealed_parts`).
    unsettled: Option<usize>,
    /// Parts settled so far.
    settled: usize,
    /// `(part, first offset, record count)` of the parts written.
    runs: Vec<(usize, i64, usize)>,
    /// Taken by the first failure, or by the last part to settle.
    sender: Option<oneshot::Sender<Result<BatchMetadata, ClientError>>>,
}

impl GroupOutcome {
    /// A group for `partition` of `topic`, and the future its caller awaits.
    pub(crate) fn new(topic: String, partition: i32) -> (Arc<GroupOutcome>, BatchDeliveryFuture) {
        let (sender, receiver) = oneshot::channel();
        let group = Arc::new(GroupOutcome {
            topic,
            partition,
            state: Mutex::new(GroupState {
                unsettled: None,
                settled: 0,
                runs: Vec::new(),
                sender: Some(sender),
            }),
        });
        (group, BatchDeliveryFuture { receiver })
    }

    /// Says how many parts the group was split into, once all of its records are appended;
    /// until then it cannot answer, since a part may settle while later ones are appended.
    pub(crate) fn appended(&self, parts: usize) {
        let mut state = self.lock();
        state.unsettled = Some(parts);
        self.answer_if_done(&mut state);
    }

    /// Fails the group at once with `error` (some of its records could not be appended).
    pub(crate) fn fail(&self, error: &ClientError) {
        if let Some(sender) = self.lock().sender.take() {
            let _ = sender.send(Err(error.clone()));
        }
    }

    fn settle_part(&self, part: usize, outcome: Result<(i64, usize), &ClientError>) {
        let mut state = self.lock();
        state.settled += 1;
        match outcome {
            Ok((first_offset, records)) => state.runs.push((part, first_offset, records)),
            Err(error) => {
                if let Some(sender) = state.sender.take() {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
        self.answer_if_done(&mut state);
    }

    fn answer_if_done(&self, state: &mut GroupState) {
        if state.unsettled != Some(state.settled) {
            return;
        }
        let Some(sender) = state.sender.take() else {
            return;
        };
        let mut runs = std::mem::take(&mut state.runs);
        runs.sort_unstable_by_key(|(part, _, _)| *part);
        let _ = sender.send(Ok(BatchMetadata {
            topic: self.topic.clone(),
            partition: self.partition,
            runs: runs
                .into_iter()
                .map(|(_, first, count)| (first, count))
                .collect(),
        }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        // Plain data, consistent after any panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> ClientError {
        ClientError::Closed {
            what: "test".to_string(),
        }
    }

    #[tokio::test]
    async fn a_group_answers_once_every_part_settled_in_part_order() {
        let (group, future) = GroupOutcome::new("t".to_string(), 3);
        let part = |part, records| Delivery {
            records,
            sink: Sink::Group {
                part,
                group: Arc::clone(&group),
            },
        };
        part(1, 2).complete("t", 3, Some(100));
        part(0, 3).complete("t", 3, Some(10));
        group.appended(3);
        part(2, 1).complete("t", 3, Some(200));
        let metadata = future.await.expect("delivered");
        assert_eq!(metadata.partition, 3);
        assert_eq!(metadata.record_count(), 6);
        assert_eq!(metadata.first_offset(), 10);
        let offsets: Vec<i64> = metadata.offsets().collect();
        assert_eq!(offsets, [10, 11, 12, 100, 101, 200]);
    }

    #[tokio::test]
    async fn a_group_does_not_answer_before_it_is_fully_appended() {
        let (group, mut future) = GroupOutcome::new("t".to_string(), 0);
        Delivery {
            records: 1,
            sink: Sink::Group {
                part: 0,
                group: Arc::clone(&group),
            },
        }
        .complete("t", 0, Some(5));
        assert!(futures_poll(&mut future).is_none(), "answered too early");
        group.appended(1);
        assert_eq!(future.await.expect("delivered").first_offset(), 5);
    }

    #[tokio::test]
    async fn a_failed_part_fails_the_group_at_once() {
        let (group, future) = GroupOutcome::new("t".to_string(), 0);
        Delivery {
            records: 4,
            sink: Sink::Group {
                part: 1,
                group: Arc::clone(&group),
            },
        }
        .fail(&error());
        assert!(matches!(future.await, Err(ClientError::Closed { .. })));
        // Later parts settling changes nothing and does not panic.
        Delivery {
            records: 1,
            sink: Sink::Group { part: 0, group },
        }
        .complete("t", 0, Some(1));
    }

    #[tokio::test]
    async fn without_offsets_every_record_reads_minus_one() {
        let (group, future) = GroupOutcome::new("t".to_string(), 0);
        Delivery {
            records: 2,
            sink: Sink::Group {
                part: 0,
                group: Arc::clone(&group),
            },
        }
        .complete("t", 0, None);
        group.appended(1);
        let metadata = future.await.expect("delivered");
        assert_eq!(metadata.offsets().collect::<Vec<_>>(), [-1, -1]);
    }

    /// Polls once without a runtime's help: `None` while pending.
    fn futures_poll(
        future: &mut BatchDeliveryFuture,
    ) -> Option<Result<BatchMetadata, ClientError>> {
        let waker = std::task::Waker::noop();
        let mut context = Context::from_waker(waker);
        match Pin::new(future).poll(&mut context) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        }
    }
}
