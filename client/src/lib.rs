//! The native async client of the broker: producer, consumer and admin.
//!
//! Not built yet: the wire protocol and the broker's server arrive with the single-node broker
//! issue, and the client with them. Until then this crate only reserves its place in the
//! workspace's layering (`client` depends on `protocol`, never on `broker`).

#![forbid(unsafe_code)]
