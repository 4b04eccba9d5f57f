//! [`BatchBuffers`]: the memory of acknowledged batches, kept for the next ones.
//!
//! The producer encodes each batch into a buffer of about the batch size and frees it once
//! the batch is acknowledged. Large freed blocks go back to the kernel (glibc's malloc does
//! so beyond twice the largest block freed so far), and the next batch's buffer is faulted
//! in again, page by page: with 1 MiB batches that cost one producer about a sixth of its
//! throughput on our test VM (BENCHMARKS.md). Kafka's producer keeps a pool of batch
//! buffers for the same reason (`BufferPool`).
//!
//! Kept buffers are few and bounded: at most one more than a partition's batches in flight
//! (what one partition sending at full pipelining cycles through), each at least
//! [`KEEP_MIN_BYTES`] (smaller ones are cheap to allocate) and at most twice the batch size
//! (a batch reaches its size target plus at most one record). A batch's bytes are kept
//! only once nothing else holds them (the connection has written them).

use bytes::{Bytes, BytesMut};

/// Buffers smaller than this are left to the allocator.
pub(crate) const KEEP_MIN_BYTES: usize = 64 * 1024;

/// Buffers of finished batches, for the next batches to encode into.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    /// The kept buffers, empty.
    free: Vec<BytesMut>,
    /// At most this many are kept.
    max_buffers: usize,
    /// None larger than this is kept.
    max_capacity: usize,
}

impl BatchBuffers {
    /// Keeps up to `max_buffers` buffers of up to `max_capacity` bytes.
    pub(crate) fn new(max_buffers: usize, max_capacity: usize) -> BatchBuffers {
        BatchBuffers {
            free: Vec::with_capacity(max_buffers),
            max_buffers,
            max_capacity,
        }
    }

    /// An empty buffer: a kept one with room for `capacity` bytes if there is one, else a
    /// new, unallocated one (the batch builder reserves what it needs).
    pub(crate) fn take(&mut self, capacity: usize) -> BytesMut {
        match self
            .free
            .iter()
            .position(|buffer| buffer.capacity() >= capacity)
        {
            Some(index) => self.free.swap_remove(index),
            None => BytesMut::new(),
        }
    }

    /// Keeps the memory of a finished batch's `records` if nothing else holds it and it is
    /// worth keeping; frees it otherwise.
    pub(crate) fn give_back(&mut self, records: Bytes) {
        if self.free.len() >= self.max_buffers {
            return;
        }
        let Ok(mut buffer) = records.try_into_mut() else {
            return;
        };
        if (KEEP_MIN_BYTES..=self.max_capacity).contains(&buffer.capacity()) {
            buffer.clear();
            self.free.push(buffer);
        }
    }

    /// How many buffers are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(capacity: usize) -> Bytes {
        let mut buffer = BytesMut::with_capacity(capacity);
        buffer.resize(capacity / 2, 7);
        buffer.freeze()
    }

    #[test]
    fn a_given_back_buffer_is_taken_again_empty_and_whole() {
        let mut buffers = BatchBuffers::new(2, 4 << 20);
        let records = filled(1 << 20);
        let address = records.as_ptr();
        buffers.give_back(records);
        assert_eq!(buffers.len(), 1);
        let buffer = buffers.take(1 << 20);
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= 1 << 20);
        assert_eq!(buffer.as_ptr(), address, "the same memory");
        assert_eq!(buffers.len(), 0);
    }

    #[test]
    fn takes_only_a_buffer_large_enough() {
        let mut buffers = BatchBuffers::new(2, 4 << 20);
        buffers.give_back(filled(128 << 10));
        let buffer = buffers.take(1 << 20);
        assert_eq!(
            buffer.capacity(),
            0,
            "a new buffer: the kept one is too small"
        );
        assert_eq!(buffers.len(), 1);
        assert!(buffers.take(100 << 10).capacity() >= 100 << 10);
    }

    #[test]
    fn keeps_nothing_shared_too_small_too_large_or_beyond_the_limit() {
        let mut buffers = BatchBuffers::new(2, 2 << 20);
        let shared = filled(1 << 20);
        let held_elsewhere = shared.clone();
        buffers.give_back(shared);
        assert_eq!(buffers.len(), 0, "still held by the connection");
        drop(held_elsewhere);
        buffers.give_back(filled(KEEP_MIN_BYTES - 1));
        buffers.give_back(filled((2 << 20) + 1));
        assert_eq!(buffers.len(), 0, "too small, too large");
        for _ in 0..3 {
            buffers.give_back(filled(1 << 20));
        }
        assert_eq!(buffers.len(), 2, "at most max_buffers");
    }
}
