//! The broker: the partition log storage engine, the server and the controller.
//!
//! Empty for now: the storage engine arrives next.

#![deny(unsafe_code)]
