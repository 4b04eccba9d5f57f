//! [`ClientError`]: everything the client's operations can fail with.
//!
//! Each variant carries the context a caller branches on (topic, partition, address, error
//! code), and its message reads as one line after `error: `, cause included, for example
//! `cannot connect to 127.0.0.1:1: connection refused`. Because the cause is already in the
//! message, variants do not also expose it through [`std::error::Error::source`]: a tool that
//! prints the whole chain (`{:#}` with anyhow) would otherwise say it twice.
//!
//! The error is `Clone` (I/O and decode errors are shared behind an `Arc`), so that one
//! failure can complete every record of a failed batch.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use mq_protocol::{BatchError, DecodeError, ErrorCode};

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection could be made (refused, unreachable, name not found, timed out).
    #[error("cannot connect to {address}: {}", IoReason(error))]
    Connect {
        /// The address tried, or the comma-separated list of bootstrap addresses when every
        /// one of them failed (the error is then the last one's).
        address: String,
        /// What the operating system said.
        error: Arc<io::Error>,
    },
    /// Reading from or writing to an established connection failed.
    #[error("connection to {address} failed: {}", IoReason(error))]
    Io {
        /// The broker's address.
        address: String,
        /// What the operating system said.
        error: Arc<io::Error>,
    },
    /// The broker closed the connection before answering.
    #[error("connection to {address} closed")]
    Disconnected {
        /// The broker's address.
        address: String,
    },
    /// The broker sent bytes that are not a valid response.
    #[error("malformed response from {address}: {error}")]
    Protocol {
        /// The broker's address.
        address: String,
        /// What was wrong with the bytes.
        error: Arc<DecodeError>,
    },
    /// The broker answered with something other than what was asked for.
    #[error("unexpected response to {api}")]
    UnexpectedResponse {
        /// The API of the request (`Produce`, `Fetch`, ...).
        api: &'static str,
    },
    /// The broker answered with an error code.
    #[error("{code}{}", Suffix(message))]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
    },
    /// An operation did not complete in time.
    #[error("{operation} timed out after {} ms", timeout.as_millis())]
    Timeout {
        /// What timed out: an API name (`Produce`, `Metadata`), or `delivery`.
        operation: &'static str,
        /// How long it was given.
        timeout: Duration,
    },
    /// The topic does not exist.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// A topic of that name exists already.
    #[error("topic '{topic}' already exists")]
    TopicAlreadyExists {
        /// The topic.
        topic: String,
    },
    /// A setting or argument is unusable.
    #[error("invalid {name}: {reason}")]
    InvalidConfig {
        /// The setting or argument (`bootstrap`, `batch_bytes_max`, ...).
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A record cannot be encoded into a batch (a field over the format's limits).
    #[error("invalid record: {error}")]
    InvalidRecord {
        /// What the batch format refused.
        error: BatchError,
    },
    /// A record is larger than the producer may ever buffer or send in one batch.
    #[error("record of about {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's estimated encoded size.
        bytes: usize,
        /// The limit it breaks.
        limit: usize,
    },
    /// Records sent together with `Producer::send_batch` are larger than the producer's
    /// buffer.
    #[error("records of about {bytes} bytes sent together exceed the producer's buffer of {limit} bytes")]
    GroupTooLarge {
        /// The records' estimated encoded size.
        bytes: usize,
        /// The buffer's size.
        limit: usize,
    },
    /// A request is larger than a frame may be.
    #[error("request of {bytes} bytes exceeds the frame limit of {limit} bytes")]
    RequestTooLarge {
        /// The request's size.
        bytes: usize,
        /// The frame limit.
        limit: usize,
    },
    /// A fetched batch failed its checks (CRC, lengths, decompression).
    #[error("corrupt batch in '{topic}' partition {partition} at offset {offset}: {error}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The consumer's position when the batch was read.
        offset: i64,
        /// What the check found.
        error: BatchError,
    },
    /// The consumer's position is outside the partition's log, and the reset policy is
    /// [`OffsetReset::None`](crate::OffsetReset::None).
    #[error("offset {offset} is out of range for '{topic}' partition {partition}")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The position that was out of range.
        offset: i64,
    },
    /// The consumer has no position for a partition, and the reset policy is
    /// [`OffsetReset::None`](crate::OffsetReset::None): seek first.
    #[error("no position for '{topic}' partition {partition}: seek first")]
    NoPosition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A consumer operation named a partition that is not assigned to it.
    #[error("'{topic}' partition {partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The producer (or connection) was closed before the operation completed.
    #[error("{what} is closed")]
    Closed {
        /// What is closed: `producer`, `connection to ...`.
        what: String,
    },
    /// The group coordinator refused a group operation with an error code (the member was
    /// removed, no assignment strategy in common, an invalid group id, ...).
    #[error("group {group}: {code}")]
    Group {
        /// The group.
        group: String,
        /// The coordinator's error code.
        code: ErrorCode,
    },
    /// The coordinator refused to commit or read the offset of one partition.
    #[error("group {group}, '{topic}' partition {partition}: {code}")]
    GroupPartition {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The coordinator's error code.
        code: ErrorCode,
    },
    /// The coordinator knows no such group (neither members nor committed offsets).
    #[error("group {group} does not exist")]
    UnknownGroup {
        /// The group.
        group: String,
    },
    /// The group has members, so its offsets cannot be changed, nor the group deleted, from
    /// outside it.
    #[error("group {group} has active members: stop them before {action}")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// What was refused: `resetting its offsets`, `deleting it`.
        action: &'static str,
    },
    /// A group operation (commit, committed offsets) on a consumer that did not subscribe to
    /// a group.
    #[error("{operation} needs a group: this consumer has not subscribed to one")]
    NoGroup {
        /// The operation: `commit`, `committed`.
        operation: &'static str,
    },
    /// A commit of chosen offsets before the consumer joined its group (it joins in
    /// `poll`).
    #[error("group {group}: this consumer is not a member yet: poll first")]
    NotMember {
        /// The group.
        group: String,
    },
    /// `subscribe` on a consumer whose partitions were assigned by hand.
    #[error("cannot subscribe: this consumer's partitions are assigned by hand")]
    AssignedByHand,
    /// `assign` (by hand) on a consumer subscribed to a group, or `subscribe` to a second
    /// group.
    #[error("cannot {action}: this consumer is subscribed to group {group}")]
    Subscribed {
        /// The group it is subscribed to.
        group: String,
        /// What was refused: `assign partitions by hand`, `subscribe to group h`.
        action: String,
    },
    /// Too many commits are waiting for the coordinator.
    #[error("{limit} commits are already queued: wait for some to complete")]
    CommitQueueFull {
        /// How many commits may wait.
        limit: usize,
    },
}

impl ClientError {
    /// Whether retrying the same operation later may succeed: connection failures,
    /// timeouts, and broker error codes marked retriable (leader moved, partition not yet
    /// available, ...). The producer and consumer retry these themselves within their
    /// timeouts.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Io { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Broker { code, .. }
            | ClientError::Group { code, .. }
            | ClientError::GroupPartition { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The broker's error code, if this is a broker or group error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. }
            | ClientError::Group { code, .. }
            | ClientError::GroupPartition { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A broker error without a message.
    pub(crate) fn broker(code: ErrorCode, message: Option<String>) -> ClientError {
        ClientError::Broker { code, message }
    }

    /// Whether the error says the client's view of the cluster (leaders, topics) may be
    /// stale, so that metadata should be fetched again before a retry.
    pub(crate) fn needs_metadata(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Io { .. }
            | ClientError::Disconnected { .. } => true,
            ClientError::Broker { code, .. } => is_metadata_error(*code),
            _ => false,
        }
    }
}

/// Whether a broker error code means the client should refresh its metadata.
pub(crate) fn is_metadata_error(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_LEADER_OR_FOLLOWER
        || code == ErrorCode::LEADER_NOT_AVAILABLE
        || code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        || code == ErrorCode::KAFKA_STORAGE_ERROR
        || code == ErrorCode::BROKER_SHUTTING_DOWN
}

/// Formats an I/O error as a short lower-case phrase: `connection refused` rather than
/// `Connection refused (os error 111)`.
struct IoReason<'a>(&'a io::Error);

impl fmt::Display for IoReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let text = match text.rfind(" (os error ") {
            Some(position) if text.ends_with(')') => &text[..position],
            _ => &text,
        };
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => write!(f, "{}{}", first.to_lowercase(), chars.as_str()),
            None => write!(f, "{:?}", self.0.kind()),
        }
    }
}

/// Formats an optional message as `: message`, or nothing.
struct Suffix<'a>(&'a Option<String>);

impl fmt::Display for Suffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(message) if !message.is_empty() => write!(f, ": {message}"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: ClientError, expected: &str) {
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn messages_read_as_one_line() {
        check(
            ClientError::UnknownTopic { topic: "x".into() },
            "topic 'x' does not exist",
        );
        check(
            ClientError::TopicAlreadyExists { topic: "x".into() },
            "topic 'x' already exists",
        );
        check(
            ClientError::Connect {
                address: "127.0.0.1:1".into(),
                error: Arc::new(io::Error::from_raw_os_error(111)),
            },
            "cannot connect to 127.0.0.1:1: connection refused",
        );
        check(
            ClientError::Broker {
                code: ErrorCode::INVALID_CONFIG,
                message: Some("retention_ms is not a number".into()),
            },
            "INVALID_CONFIG (40): a topic config key or value is invalid: \
             retention_ms is not a number",
        );
        check(
            ClientError::Broker {
                code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                message: None,
            },
            "NOT_LEADER_OR_FOLLOWER (6): this broker does not lead the partition",
        );
        check(
            ClientError::Timeout {
                operation: "delivery",
                timeout: Duration::from_secs(30),
            },
            "delivery timed out after 30000 ms",
        );
    }

    #[test]
    fn group_messages_read_as_one_line() {
        check(
            ClientError::GroupNotEmpty {
                group: "g".into(),
                action: "resetting its offsets",
            },
            "group g has active members: stop them before resetting its offsets",
        );
        check(
            ClientError::Group {
                group: "g".into(),
                code: ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
            },
            "group g: INCONSISTENT_GROUP_PROTOCOL (23): the member shares no assignment \
             strategy with the group",
        );
        check(
            ClientError::GroupPartition {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
                code: ErrorCode::OFFSET_METADATA_TOO_LARGE,
            },
            "group g, 't' partition 2: OFFSET_METADATA_TOO_LARGE (12): the offset's metadata \
             text is longer than the broker accepts",
        );
        check(
            ClientError::NoGroup {
                operation: "commit",
            },
            "commit needs a group: this consumer has not subscribed to one",
        );
        check(
            ClientError::Subscribed {
                group: "g".into(),
                action: "assign partitions by hand".into(),
            },
            "cannot assign partitions by hand: this consumer is subscribed to group g",
        );
        check(
            ClientError::UnknownGroup { group: "g".into() },
            "group g does not exist",
        );
        let moved = ClientError::Group {
            group: "g".into(),
            code: ErrorCode::NOT_COORDINATOR,
        };
        assert!(moved.is_retriable());
        assert_eq!(moved.code(), Some(ErrorCode::NOT_COORDINATOR));
    }

    #[test]
    fn custom_io_errors_keep_their_text() {
        check(
            ClientError::Io {
                address: "h:1".into(),
                error: Arc::new(io::Error::other("Broken pipe")),
            },
            "connection to h:1 failed: broken pipe",
        );
    }

    #[test]
    fn connection_and_leader_errors_are_retriable() {
        let disconnected = ClientError::Disconnected {
            address: "h:1".into(),
        };
        assert!(disconnected.is_retriable());
        assert!(disconnected.needs_metadata());
        let not_leader = ClientError::broker(ErrorCode::NOT_LEADER_OR_FOLLOWER, None);
        assert!(not_leader.is_retriable());
        assert!(not_leader.needs_metadata());
        assert!(!ClientError::broker(ErrorCode::CORRUPT_MESSAGE, None).is_retriable());
        assert!(!ClientError::UnknownTopic { topic: "x".into() }.is_retriable());
    }
}
