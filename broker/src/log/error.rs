//! The errors of the partition log.

use std::io;
use std::path::PathBuf;

use mq_protocol::{BatchError, Offset};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A read asked for an offset outside `[log_start, log_end]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The first offset the log holds.
        log_start: Offset,
        /// The offset the next append will get.
        log_end: Offset,
    },
    /// An appended batch is malformed; nothing of that append was written.
    #[error("invalid batch at byte {position} of the append: {source}")]
    InvalidBatch {
        /// Where the bad batch starts within the appended bytes.
        position: usize,
        /// What is wrong with it.
        #[source]
        source: BatchError,
    },
    /// An append is larger than the log accepts.
    #[error("append of {bytes} bytes exceeds the limit of {limit}")]
    BatchTooLarge {
        /// Size of the append.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The offsets of the append would overflow the offset space.
    #[error("offset overflow")]
    OffsetOverflow,
    /// A copied batch does not continue the log (see `PartitionLog::append_copy`).
    #[error("a copied batch starts at offset {found}, not at the log end {log_end}")]
    CopyGap {
        /// The log's end.
        log_end: Offset,
        /// The batch's base offset.
        found: i64,
    },
    /// An operating-system I/O error on a file of the log.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Data on disk is damaged where damage is not expected (not a torn tail).
    #[error("corrupt log data in {path} at position {position}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An idempotent producer's batch does not follow its last appended one: an earlier
    /// batch is missing, so this one is refused to keep the producer's order.
    #[error("producer {producer_id}: batch starts at sequence {found}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence its next batch must start with.
        expected: i32,
        /// The sequence this batch starts with.
        found: i32,
    },
    /// An idempotent producer's batch repeats appended sequences without being one of its
    /// recent batches (or repeats one inside a multi-batch append).
    #[error(
        "producer {producer_id}: batch at sequence {found} repeats sequences already appended"
    )]
    DuplicateSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence this batch starts with.
        found: i32,
    },
    /// An earlier fsync failed, so what is on disk is unknown: the log refuses all writes
    /// until it is reopened (and recovered).
    #[error("log {path} is offline after an earlier i/o failure")]
    Offline {
        /// The partition directory.
        path: PathBuf,
    },
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
}

impl LogError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}

/// Results of log operations.
pub type LogResult<T> = Result<T, LogError>;
