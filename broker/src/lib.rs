//! The broker: the partition log storage engine ([`log`]); the server and the controller
//! arrive with later work.
//!
//! `unsafe` is denied everywhere but in `log/index.rs`, which memory-maps index files.

#![deny(unsafe_code)]

pub mod log;
