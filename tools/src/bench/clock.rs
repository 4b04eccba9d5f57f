//! The benchmark's clock, and the send time stamped into record values.
//!
//! Producers and consumers of one run live in the same process, so they share one monotonic
//! clock: nanoseconds since the run's epoch. For `e2e`, the first 8 bytes of each record
//! value hold the record's (intended or actual) send time on that clock, big-endian, so that
//! the consumer measures latency with sub-microsecond resolution and no clock skew.

use std::time::{Duration, Instant};

use mq_client::Bytes;

/// Bytes of the send-time stamp at the start of an `e2e` record value.
pub(crate) const STAMP_BYTES: usize = 8;

/// A monotonic clock counting nanoseconds from the start of the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// The instant that reads as 0.
    epoch: Instant,
}

impl Clock {
    /// A clock reading 0 now.
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch (saturating after 584 years).
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` nanoseconds after the epoch.
    pub(crate) fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

/// `payload` with its first [`STAMP_BYTES`] bytes replaced by `send_ns`, big-endian. The
/// payload must be at least that long (the options check `--size` for `e2e`).
pub(crate) fn stamp(payload: &[u8], send_ns: u64) -> Bytes {
    assert!(payload.len() >= STAMP_BYTES, "payload too short to stamp");
    let mut value = Vec::with_capacity(payload.len());
    value.extend_from_slice(&send_ns.to_be_bytes());
    value.extend_from_slice(&payload[STAMP_BYTES..]);
    Bytes::from(value)
}

/// The send time stamped into `value`, if it is long enough to hold one.
pub(crate) fn read_stamp(value: &[u8]) -> Option<u64> {
    let bytes: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_keeps_the_rest_of_the_payload() {
        let payload = b"0123456789abcdef";
        let stamped = stamp(payload, 0x0102_0304_0506_0708);
        assert_eq!(stamped.len(), payload.len());
        assert_eq!(&stamped[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&stamped[8..], b"89abcdef");
        assert_eq!(read_stamp(&stamped), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn clock_maps_nanoseconds_to_instants() {
        let clock = Clock::new();
        let now = clock.now_ns();
        assert!(clock.instant_at(now + 1_000_000) > clock.instant_at(now));
    }
}
