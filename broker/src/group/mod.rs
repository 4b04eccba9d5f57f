//! Consumer groups: membership, generations and partition assignment, as `docs/groups.md`
//! describes. The broker is the coordinator of every group (single node) and computes
//! assignments itself.
//!
//! - `assignor.rs`: the strategies (`sticky`, `range`, `roundrobin`), pure functions.
//! - `state.rs`: one group's state machine (Empty, PreparingRebalance, CompletingRebalance,
//!   Stable), synchronous and clock-free.
//! - `coordinator.rs`: [`GroupCoordinator`]: every group, the waiting (held JoinGroups,
//!   long-polled Heartbeats), session expiry, and committed offsets through
//!   [`crate::offsets::OffsetStore`].
//!
//! No networking: the server decodes requests and hands them here.

pub mod assignor;
mod coordinator;
mod state;
#[cfg(test)]
mod tests;

pub use coordinator::{
    check_group_id, ClientInfo, GroupConfig, GroupCoordinator, PendingOffsetCommit,
    GROUP_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX,
};
