//! The partition log: the storage engine. It appends and reads record batches by offset, and
//! knows nothing about the network or the protocol's requests.
//!
//! ```text
//! <data-dir>/<topic>-<partition>/
//!     00000000000000000000.log         record batches, back to back, as received
//!     00000000000000000000.index       sparse offset index: relative offset u32, position u32
//!     00000000000000000000.timeindex   time index: max timestamp i64, relative offset u32
//!     00000000000000004096.log         the next segment, starting at offset 4096
//!     00000000000000004096.index       (the active segment's indexes are preallocated)
//!     00000000000000004096.timeindex
//!     partition.checkpoint             log start, recovery point, clean-shutdown flag
//! ```
//!
//! Files, one type each:
//! - `index.rs`: `OffsetIndex` and `TimeIndex`, memory-mapped; the only `unsafe`.
//! - `segment.rs`: `Segment`, one `.log` with its indexes; the batch scanner.
//! - `read_buffers.rs`: the memory of large reads, kept for the next ones.
//! - `partition_log.rs`: [`PartitionLog`], the ordered segments: append, read, roll, flush,
//!   retention, truncation, close.
//! - `producers.rs`: idempotent producers' sequences (in memory): the order check and the
//!   answer to a repeated batch.
//! - `recovery.rs`: opening a directory; repairing the tail after a crash.
//! - `retention.rs`: pure functions deciding which segments retention deletes.
//! - `checkpoint.rs`: the atomically written checkpoint file.
//! - `file_name.rs`: file names and their parsing.
//! - `shared.rs`: [`SharedLog`], a log shared between threads, with group commit.
//! - `config.rs`, `error.rs`: [`LogConfig`] and [`LogError`].
//! - `fault.rs` (tests only): makes the next write fail as a full disk does.
//!
//! Thread safety: [`PartitionLog`] is single-writer (`&mut self` for every mutation) and not
//! synchronised; [`SharedLog`] owns the concurrency.
//!
//! Durability contract: an append is durable once [`PartitionLog::flush`] (or
//! [`SharedLog::flush_to`]) covering it has returned; under [`FlushPolicy::Always`],
//! [`SharedLog::append`] returns only then. The index files are derived data and are never
//! fsynced: after a crash they are rebuilt from the `.log`.

mod checkpoint;
mod config;
mod error;
#[cfg(test)]
pub(crate) mod fault;
mod file_name;
mod index;
mod partition_log;
mod producers;
mod read_buffers;
mod recovery;
mod retention;
mod segment;
mod shared;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, FlushPolicy, LogConfig};
pub use error::{LogError, LogResult};
pub use partition_log::{AppendInfo, FlushJob, PartitionLog, RetentionOutcome};
pub use segment::ReadPlan;
pub use shared::{Appended, SharedLog, TryAppend};
