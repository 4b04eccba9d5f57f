//! The integration tests, in one binary so that they link once: tests against real
//! `mq-broker` processes (on the wire, through the client, through the tools), and the tidy
//! checks of the code base.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod bench;
mod cli;
mod cluster;
mod faults;
mod groups;
mod hostile;
mod metrics;
mod produce_consume;
mod raw_protocol;
mod tidy;
