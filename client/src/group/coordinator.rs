//! [`Coordinator`]: finds a group's coordinator and sends it the group's requests.
//!
//! The coordinator's address comes from FindCoordinator (asked of any broker) and is cached.
//! It is forgotten when an answer says the broker no longer coordinates the group
//! (`NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`) or the request fails on the way
//! (connection lost, timed out), so that the next request looks it up again.
//! [`Coordinator::request`] retries those failures, and `COORDINATOR_LOAD_IN_PROGRESS`, with a
//! backoff until a deadline. Every other error code is left to the caller, which knows what it
//! means for its request.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mq_protocol::request::{FindCoordinatorRequest, Request};
use mq_protocol::response::Response;
use mq_protocol::ErrorCode;
use tokio::time::Instant;

use crate::client::{Broker, Client};
use crate::error::ClientError;

/// The coordinator of one group, as this client knows it. Shared (behind an `Arc`) by a
/// member's consumer, heartbeat task and committer.
#[derive(Debug)]
pub(crate) struct Coordinator {
    /// The cluster.
    client: Client,
    /// The group.
    group_id: String,
    /// The pause between attempts of a failed request.
    retry_backoff: Duration,
    /// The coordinator's `host:port`; `None` until found, and after it moved.
    address: Mutex<Option<String>>,
}

impl Coordinator {
    /// The coordinator of `group_id`, to be looked up on first use.
    pub(crate) fn new(client: Client, group_id: &str, retry_backoff: Duration) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            client,
            group_id: group_id.to_string(),
            retry_backoff,
            address: Mutex::new(None),
        })
    }

    /// The group.
    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The error for a group-level error code of this group.
    pub(crate) fn error(&self, code: ErrorCode) -> ClientError {
        ClientError::Group {
            group: self.group_id.clone(),
            code,
        }
    }

    /// Sends `request` to the coordinator, waiting up to `timeout` for the answer, and
    /// retries (finding the coordinator again) while it fails in a way that says the
    /// coordinator moved or is not ready, until `deadline`. An answer whose error code says
    /// so becomes [`ClientError::Group`] with that code.
    pub(crate) async fn request(
        &self,
        request: Request,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Response, ClientError> {
        loop {
            let error = match self.request_once(request.clone(), timeout).await {
                Ok(response) => return Ok(response),
                Err(error) if error.is_retriable() => error,
                Err(error) => return Err(error),
            };
            let retry_at = Instant::now() + self.retry_backoff;
            if retry_at >= deadline {
                return Err(error);
            }
            tracing::debug!(group = %self.group_id, %error, "group request failed, retrying");
            tokio::time::sleep_until(retry_at).await;
        }
    }

    /// Sends `request` once, like [`Coordinator::request`] without the retries.
    pub(crate) async fn request_once(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let address = self.address().await?;
        let result = self
            .client
            .request_to_with_timeout(&address, request, timeout)
            .await;
        let code = result.as_ref().ok().and_then(coordinator_error);
        let moved = match &result {
            Ok(_) => code.is_some_and(|code| code != ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            Err(error) => error.is_retriable(),
        };
        if moved {
            tracing::debug!(group = %self.group_id, address, "forgetting the group coordinator");
            self.forget(&address);
        }
        match code {
            Some(code) => Err(self.error(code)),
            None => result,
        }
    }

    /// The cached coordinator address, or a new one from FindCoordinator.
    async fn address(&self) -> Result<String, ClientError> {
        if let Some(address) = self.lock().clone() {
            return Ok(address);
        }
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group_id: self.group_id.clone(),
        });
        let Response::FindCoordinator(response) = self.client.request_any(request).await? else {
            return Err(ClientError::UnexpectedResponse {
                api: "FindCoordinator",
            });
        };
        if response.error_code != ErrorCode::NONE {
            return Err(self.error(response.error_code));
        }
        let address = Broker {
            node_id: response.node_id,
            host: response.host,
            port: response.port,
        }
        .address();
        tracing::debug!(group = %self.group_id, address, "found the group coordinator");
        *self.lock() = Some(address.clone());
        Ok(address)
    }

    /// Forgets `address` unless another task already replaced it.
    fn forget(&self, address: &str) {
        let mut slot = self.lock();
        if slot.as_deref() == Some(address) {
            *slot = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        // The slot holds a plain value, valid whatever a panicking holder was doing.
        self.address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `code` says the request went to a broker that does not (or not yet) coordinate
/// the group.
fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_COORDINATOR
        || code == ErrorCode::COORDINATOR_NOT_AVAILABLE
        || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
}

/// The first error code in a group answer that says the coordinator moved or is not ready,
/// wherever the answer carries its codes (top level, per partition, per group).
pub(crate) fn coordinator_error(response: &Response) -> Option<ErrorCode> {
    let codes: Vec<ErrorCode> = match response {
        Response::JoinGroup(response) => vec![response.error_code],
        Response::SyncGroup(response) => vec![response.error_code],
        Response::Heartbeat(response) | Response::LeaveGroup(response) => {
            vec![response.error_code]
        }
        Response::OffsetFetch(response) => std::iter::once(response.error_code)
            .chain(
                response
                    .topics
                    .iter()
                    .flat_map(|topic| topic.partitions.iter().map(|entry| entry.error_code)),
            )
            .collect(),
        Response::OffsetCommit(response) => response
            .topics
            .iter()
            .flat_map(|topic| topic.partitions.iter().map(|(_, code)| *code))
            .collect(),
        Response::DescribeGroups(response) => response
            .groups
            .iter()
            .map(|group| group.error_code)
            .collect(),
        Response::DeleteGroups(response) => response.groups.iter().map(|(_, code)| *code).collect(),
        Response::ListGroups(response) => vec![response.error_code],
        _ => Vec::new(),
    };
    codes.into_iter().find(|code| is_coordinator_error(*code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::response::{
        GroupErrorResponse, JoinGroupResponse, PartitionErrorsResponse, TopicPartitionErrors,
    };

    #[test]
    fn coordinator_errors_are_found_wherever_the_answer_has_codes() {
        let join = Response::JoinGroup(JoinGroupResponse {
            error_code: ErrorCode::NOT_COORDINATOR,
            ..JoinGroupResponse::default()
        });
        assert_eq!(coordinator_error(&join), Some(ErrorCode::NOT_COORDINATOR));
        let heartbeat = Response::Heartbeat(GroupErrorResponse {
            error_code: ErrorCode::REBALANCE_IN_PROGRESS,
        });
        assert_eq!(
            coordinator_error(&heartbeat),
            None,
            "not about the coordinator"
        );
        let commit = Response::OffsetCommit(PartitionErrorsResponse {
            topics: vec![TopicPartitionErrors {
                name: "t".into(),
                partitions: vec![
                    (0, ErrorCode::NONE),
                    (1, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
                ],
            }],
        });
        assert_eq!(
            coordinator_error(&commit),
            Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
        );
    }
}
