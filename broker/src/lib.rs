//! The broker: the partition log storage engine ([`log`]), the log manager ([`manager`]), the
//! topic registry ([`topics`]), committed offsets ([`offsets`]), the consumer group
//! coordinator ([`group`]), the metrics ([`metrics`]) and the TCP server ([`server`]). The binary is
//! `src/bin/mq-broker.rs`; the controller arrives with cluster mode.
//!
//! `unsafe` is denied everywhere but in `log/index.rs`, which memory-maps index files.

#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod group;
pub mod log;
pub mod manager;
pub mod metrics;
pub mod offsets;
pub mod server;
pub mod topics;
