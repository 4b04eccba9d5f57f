//! The heartbeat task: keeps a member of one generation alive and learns of rebalances.
//!
//! Heartbeat is a long poll: the coordinator holds it up to `max_wait_ms` (the member's
//! heartbeat interval) while the group is stable and answers `NONE` when the wait is over, or
//! `REBALANCE_IN_PROGRESS` as soon as a rebalance starts. So the task sends the next heartbeat
//! as soon as one comes back `NONE`, and a member hears of a rebalance within a round trip.
//! Any other error code (`REBALANCE_IN_PROGRESS`, `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`)
//! means the member must rejoin: it is handed to the consumer through the member's
//! [`Signal`] (the consumer rejoins in its next `poll`, or at once if a `poll` is waiting),
//! and the task keeps heartbeating every interval meanwhile, which keeps the member in the
//! group until it rejoins. A coordinator that moved or cannot be reached is looked up again
//! after a backoff. The consumer stops the task when it rejoins (a new generation gets a new
//! task) or leaves.

use std::sync::Arc;
use std::time::Duration;

use mq_protocol::request::{HeartbeatRequest, Request};
use mq_protocol::response::Response;
use mq_protocol::ErrorCode;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{millis_i32, Coordinator, Generation, GroupSettings, Signal};
use crate::error::ClientError;

/// What the task does after an answer (or a failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Send the next heartbeat at once: the coordinator held this one as long as it wanted.
    Send,
    /// Tell the consumer to rejoin with this reason, then wait an interval. Any error code
    /// but the coordinator's (which come as retriable errors): `REBALANCE_IN_PROGRESS`,
    /// `ILLEGAL_GENERATION` and `UNKNOWN_MEMBER_ID` are what the coordinator sends; if it
    /// sends another, the rejoin surfaces it from `poll`.
    Rejoin(ErrorCode),
    /// Wait the retry backoff: the coordinator moved or could not be reached (it is looked up
    /// again).
    Backoff,
    /// Wait an interval: an answer that is not a heartbeat's, logged.
    Wait,
}

/// What to do after a heartbeat's outcome: its error code, or why it got none.
fn next(outcome: &Result<ErrorCode, ClientError>) -> Next {
    match outcome {
        Ok(ErrorCode::NONE) => Next::Send,
        Ok(code) => Next::Rejoin(*code),
        Err(error) if error.is_retriable() => Next::Backoff,
        Err(_) => Next::Wait,
    }
}

/// Starts the heartbeat task of `generation`.
pub(super) fn spawn(
    coordinator: Arc<Coordinator>,
    generation: Generation,
    settings: &GroupSettings,
    signal: Arc<Signal>,
) -> JoinHandle<()> {
    tokio::spawn(run(
        coordinator,
        generation,
        settings.heartbeat_interval,
        settings.retry_backoff,
        settings.request_timeout,
        signal,
    ))
}

/// Heartbeats until aborted.
async fn run(
    coordinator: Arc<Coordinator>,
    generation: Generation,
    interval: Duration,
    retry_backoff: Duration,
    request_timeout: Duration,
    signal: Arc<Signal>,
) {
    let group = coordinator.group_id().to_string();
    loop {
        let sent_at = Instant::now();
        let request = Request::Heartbeat(HeartbeatRequest {
            group_id: group.clone(),
            generation_id: generation.id,
            member_id: generation.member_id.clone(),
            max_wait_ms: millis_i32(interval),
        });
        let outcome = match coordinator
            .request_once(request, interval + request_timeout)
            .await
        {
            Ok(Response::Heartbeat(response)) => Ok(response.error_code),
            Ok(_) => Err(ClientError::UnexpectedResponse { api: "Heartbeat" }),
            Err(error) => Err(error),
        };
        let resume_at = match next(&outcome) {
            // At least a backoff apart even so, in case a coordinator answers at once.
            Next::Send => sent_at + retry_backoff,
            Next::Rejoin(code) => {
                tracing::debug!(group, generation = generation.id, %code, "heartbeat: rejoin");
                signal.rejoin(generation.id, code);
                Instant::now() + interval
            }
            Next::Backoff => {
                if let Err(error) = &outcome {
                    tracing::debug!(group, %error, "heartbeat failed, retrying");
                }
                Instant::now() + retry_backoff
            }
            Next::Wait => {
                if let Err(error) = &outcome {
                    tracing::warn!(group, %error, "heartbeat failed");
                }
                Instant::now() + interval
            }
        };
        tokio::time::sleep_until(resume_at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(outcome: Result<ErrorCode, ClientError>, expected: Next) {
        assert_eq!(next(&outcome), expected, "{outcome:?}");
    }

    #[test]
    fn heartbeat_outcomes() {
        check(Ok(ErrorCode::NONE), Next::Send);
        for code in [
            ErrorCode::REBALANCE_IN_PROGRESS,
            ErrorCode::ILLEGAL_GENERATION,
            ErrorCode::UNKNOWN_MEMBER_ID,
        ] {
            check(Ok(code), Next::Rejoin(code));
        }
        check(
            Ok(ErrorCode::INVALID_GROUP_ID),
            Next::Rejoin(ErrorCode::INVALID_GROUP_ID),
        );
        let moved = ClientError::Group {
            group: "g".into(),
            code: ErrorCode::NOT_COORDINATOR,
        };
        check(Err(moved), Next::Backoff);
        let lost = ClientError::Disconnected {
            address: "h:1".into(),
        };
        check(Err(lost), Next::Backoff);
        check(
            Err(ClientError::UnexpectedResponse { api: "Heartbeat" }),
            Next::Wait,
        );
    }
}
