//! Cluster mode: the controller, the metadata it keeps, and a broker's part in the cluster.
//!
//! - `records.rs`: [`MetadataRecord`], one change of the metadata, as stored in the metadata log.
//! - `image.rs`: [`ClusterImage`], the metadata as of an offset, built by applying changes.
//! - `placement.rs`: where new partitions go and which moves even out the brokers (pure).
//! - `controller.rs`: [`Controller`], which appends changes to the metadata log and answers
//!   registrations, heartbeats, metadata fetches and the admin operations.
//! - `link.rs`: [`ControllerLink`], how a broker reaches the controller: in process
//!   (`combined`) or over the network (`broker`).
//! - `node.rs`: [`ClusterNode`], a broker's membership: registration, heartbeats, following
//!   the metadata log, and making the local logs match it (opening, creating, deleting
//!   partitions; leadership).
//! - `mover.rs`: a move's target copying a partition from its current broker.

mod controller;
mod image;
mod link;
mod mover;
mod node;
pub mod placement;
mod records;

pub use controller::{Controller, ControllerError, ControllerSettings, METADATA_DIR};
pub use image::{BrokerInfo, ClusterImage, TopicImage};
pub use link::ControllerLink;
pub use node::{join, ClusterNode, NodeSettings};
pub use records::{MetadataRecord, PartitionState};
