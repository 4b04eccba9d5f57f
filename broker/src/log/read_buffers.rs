//! [`ReadBuffers`]: the memory of large reads, kept for the next ones.
//!
//! A fetch reads up to several megabytes of a segment into memory, which lives until the
//! response is written to the socket. Allocated afresh each time, the buffer's pages were
//! faulted in and zeroed by the kernel during the read (`clear_page_erms` under `pread`:
//! about 7% of the broker's CPU in a consume profile); reads run on the blocking pool's
//! threads, whose malloc arenas do not hand such blocks on to each other. So reads of at
//! least [`KEEP_MIN_BYTES`] take a buffer kept from an earlier read, and their bytes go back
//! to the pool when the last reference to them is dropped ([`Bytes::from_owner`]).
//!
//! Bounded: at most [`KEEP_BUFFERS_MAX`] buffers, each at most [`KEEP_MAX_BYTES`], so the
//! pool holds at most 32 MiB that the broker is not using. One pool serves the process
//! (like an allocator's cache), so it does not grow with partitions.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Reads smaller than this are left to the allocator.
pub(crate) const KEEP_MIN_BYTES: usize = 64 * 1024;

/// Buffers larger than this are not kept.
pub(crate) const KEEP_MAX_BYTES: usize = 8 * 1024 * 1024;

/// At most this many buffers are kept.
pub(crate) const KEEP_BUFFERS_MAX: usize = 4;

/// The process's pool of read buffers.
pub(crate) static READ_BUFFERS: ReadBuffers = ReadBuffers::new();

/// Empty buffers kept for reads; see the module docs.
#[derive(Debug)]
pub(crate) struct ReadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ReadBuffers {
    /// An empty pool.
    pub(crate) const fn new() -> ReadBuffers {
        ReadBuffers {
            free: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer with room for `len` bytes: a kept one when `len` is large enough to
    /// keep and one is big enough, else a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len >= KEEP_MIN_BYTES {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = free.iter().position(|buffer| buffer.capacity() >= len) {
                return free.swap_remove(index);
            }
        }
        Vec::with_capacity(len)
    }

    /// `buffer`'s bytes as [`Bytes`] that give the buffer back to this pool once the last
    /// reference to them is dropped (if it is worth keeping and there is room).
    pub(crate) fn freeze(&'static self, buffer: Vec<u8>) -> Bytes {
        if buffer.capacity() < KEEP_MIN_BYTES || buffer.capacity() > KEEP_MAX_BYTES {
            return Bytes::from(buffer);
        }
        Bytes::from_owner(Returned { buffer, pool: self })
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < KEEP_BUFFERS_MAX {
            buffer.clear();
            free.push(buffer);
        }
    }

    /// How many buffers are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A read's buffer, going back to its pool when dropped.
struct Returned {
    buffer: Vec<u8>,
    pool: &'static ReadBuffers,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked() -> &'static ReadBuffers {
        Box::leak(Box::new(ReadBuffers::new()))
    }

    fn filled(pool: &ReadBuffers, len: usize, byte: u8) -> Vec<u8> {
        let mut buffer = pool.take(len);
        buffer.resize(len, byte);
        buffer
    }

    #[test]
    fn a_large_read_s_memory_returns_when_its_last_reference_goes() {
        let pool = leaked();
        let buffer = filled(pool, 1 << 20, 7);
        let address = buffer.as_ptr();
        let bytes = pool.freeze(buffer);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.len(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        assert_eq!(pool.len(), 1);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), address, "the same memory");
        assert!(again.is_empty());
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn small_and_huge_reads_bypass_the_pool_and_it_stays_bounded() {
        let pool = leaked();
        drop(pool.freeze(filled(pool, KEEP_MIN_BYTES - 1, 1)));
        drop(pool.freeze(filled(pool, KEEP_MAX_BYTES + 1, 1)));
        assert_eq!(pool.len(), 0);
        let held: Vec<Bytes> = (0..KEEP_BUFFERS_MAX + 2)
            .map(|_| pool.freeze(filled(pool, 128 << 10, 2)))
            .collect();
        drop(held);
        assert_eq!(pool.len(), KEEP_BUFFERS_MAX);
        assert_eq!(
            pool.take(1 << 20).capacity(),
            1 << 20,
            "none kept is big enough: a new one"
        );
        assert_eq!(pool.len(), KEEP_BUFFERS_MAX);
    }
}
