//! A response frame on its way to the socket: byte strings, and record sets that go from a
//! segment file to the socket with `sendfile`, never entering the broker's memory.
//!
//! A fetch's record sets are planned on the blocking pool ([`ReadPlan`]: whole batches of one
//! segment). Large ones whose pages look cached are sent from the file; the rest are read
//! there into memory as before. Sending from the file runs on the runtime worker that writes
//! the connection; the cache check keeps it from waiting on the disk in all but the case
//! where pages are evicted between the check and the send.

use std::io;

use bytes::{Bytes, BytesMut};
use mq_protocol::codec::{self, FrameParts};
use mq_protocol::response::{FetchResponse, ResponseHeader};
use mq_protocol::wire;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::log::ReadPlan;

/// Record sets at least this long are sent from their file when cached; shorter ones cost
/// less to read and copy than a `sendfile` round of their own.
pub(crate) const SENDFILE_MIN_BYTES: u64 = 64 * 1024;

/// One piece of a frame.
#[derive(Debug)]
pub(crate) enum Part {
    /// Bytes in memory.
    Bytes(Bytes),
    /// Whole batches in a segment file.
    File(ReadPlan),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(bytes) => bytes.len() as u64,
            Part::File(plan) => plan.len(),
        }
    }
}

/// A frame's payload, in parts written one after another (its length prefix is the
/// writer's).
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    parts: Vec<Part>,
}

impl Outgoing {
    /// The payload's length.
    pub(crate) fn len(&self) -> u64 {
        self.parts.iter().map(Part::len).sum()
    }

    /// The parts, in order.
    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// A Fetch response whose partitions' record sets come, in order, from `files` where
    /// it holds a plan (their `records` are then empty), else from `records`.
    pub(crate) fn fetch(
        header: &ResponseHeader,
        response: &FetchResponse,
        files: Vec<Option<ReadPlan>>,
    ) -> Outgoing {
        let mut head = BytesMut::with_capacity(256);
        let mut parts = Vec::new();
        let mut files = files.into_iter();
        header.encode(&mut head);
        response.encode_with(&mut head, &mut |head, records| {
            match files.next().flatten() {
                Some(plan) => {
                    // Within the frame limit: the fetch planned at most `max_frame_bytes`.
                    wire::put_bytes_length(head, usize::try_from(plan.len()).unwrap_or(0));
                    parts.push(Part::Bytes(head.split().freeze()));
                    parts.push(Part::File(plan));
                }
                None if records.len() >= codec::SHARED_PART_MIN => {
                    wire::put_bytes_length(head, records.len());
                    parts.push(Part::Bytes(head.split().freeze()));
                    parts.push(Part::Bytes(records.clone()));
                }
                None => wire::put_bytes(head, records),
            }
        });
        if !head.is_empty() {
            parts.push(Part::Bytes(head.freeze()));
        }
        Outgoing { parts }
    }
}

impl From<FrameParts> for Outgoing {
    fn from(frame: FrameParts) -> Outgoing {
        Outgoing {
            parts: frame.parts().iter().cloned().map(Part::Bytes).collect(),
        }
    }
}

/// Sends the planned bytes from their file to `socket`, waiting for room as a write would.
/// Fails if the file turned out shorter than planned (the log was truncated meanwhile): the
/// frame can then not be finished, and the caller must close the connection.
pub(crate) async fn send_file(socket: &TcpStream, plan: &ReadPlan) -> io::Result<()> {
    let mut offset = plan.position();
    let end = offset + plan.len();
    while offset < end {
        socket.writable().await?;
        let remaining = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = socket.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(socket, plan.file(), Some(&mut offset), remaining)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than planned",
                ))
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
