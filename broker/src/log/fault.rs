//! Test-only fault injection for the storage engine: makes the calling thread's next segment
//! write, or a coming index page allocation, fail as a full disk does (`ENOSPC`), the write
//! after a given number of bytes, so that unit tests can check what a failed write leaves behind without a
//! file system that fills up. Compiled only under `cfg(test)`; production code calls the
//! hooks only from `#[cfg(test)]` lines.

use std::cell::Cell;
use std::io;

thread_local! {
    /// Bytes the next segment write gets through before failing, when armed.
    static WRITE_FAILS_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    /// Index allocations still to succeed before one fails, when armed.
    static INDEX_ALLOCATION_FAILS_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Arms a failure of this thread's next segment write after `bytes` bytes were written.
pub(crate) fn fail_next_write_after(bytes: usize) {
    WRITE_FAILS_AFTER.with(|cell| cell.set(Some(bytes)));
}

/// Arms a failure of this thread's index allocation after `successes` more succeeded.
pub(crate) fn fail_index_allocation_after(successes: usize) {
    INDEX_ALLOCATION_FAILS_AFTER.with(|cell| cell.set(Some(successes)));
}

/// The error a full disk gives.
fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

/// For the segment write: how many bytes to write before failing, if armed (disarms).
pub(super) fn segment_write() -> Option<(usize, io::Error)> {
    WRITE_FAILS_AFTER
        .with(Cell::take)
        .map(|bytes| (bytes, no_space()))
}

/// For an index allocation: fails when its turn came (and disarms).
pub(super) fn index_allocation() -> io::Result<()> {
    match INDEX_ALLOCATION_FAILS_AFTER.with(Cell::take) {
        Some(0) => Err(no_space()),
        Some(successes) => {
            INDEX_ALLOCATION_FAILS_AFTER.with(|cell| cell.set(Some(successes - 1)));
            Ok(())
        }
        None => Ok(()),
    }
}
