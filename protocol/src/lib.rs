//! Wire types and the record batch format shared by the broker, the client and the tools.
//!
//! The record batch ([`batch`]) is byte for byte Kafka's v2 `RecordBatch` (magic 2): the same
//! bytes travel from the producer over the wire, onto the broker's disk, and back out to
//! consumers. The broker touches only the header (base offset, leader epoch); the records
//! section ([`record`]) is encoded by producers and decoded by consumers.
//!
//! This crate does no I/O and owns no runtime: every decoder works on byte slices and is
//! bounded by the limits in [`limits`].

#![forbid(unsafe_code)]

pub mod batch;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod group;
pub mod limits;
pub mod record;
pub mod request;
pub mod response;
pub mod types;
pub mod varint;
pub mod wire;

pub use batch::{BatchHeader, Compression};
pub use error::{BatchError, DecodeError, ErrorCode};
pub use record::{records, BatchBuilder, Header, Record, RecordIter, RecordView};
pub use types::Offset;
