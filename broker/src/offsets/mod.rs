//! Committed offsets: where each consumer group is in each partition, stored durably in
//! `<data-dir>/__consumer_offsets/`, one partition log of the storage engine (see
//! `docs/groups.md`, "The committed-offsets log").
//!
//! - `record.rs`: the record format (keys, values, tombstones).
//! - `store.rs`: [`OffsetStore`]: replay at start-up, commits (acknowledged after fsync,
//!   concurrent ones sharing fsyncs), deletions, compaction.
//!
//! It knows nothing about the network, the protocol's requests, or groups' membership: the
//! group coordinator (`crate::group`) decides who may commit; this module only stores.

mod record;
mod store;
#[cfg(test)]
mod tests;

pub use record::{CommittedOffset, STRING_BYTES_MAX};
pub use store::{CompactionOutcome, OffsetStore, OffsetsError, OffsetsResult, PendingCommit};
