//! The two per-segment indexes, memory-mapped: [`OffsetIndex`] and [`TimeIndex`].
//!
//! Both are sorted arrays of fixed-size big-endian entries in a file:
//!
//! ```text
//! .index      8-byte entries: relative offset u32, file position u32
//! .timeindex 12-byte entries: max timestamp i64, relative offset u32
//! ```
//!
//! An index is derived data: it can always be rebuilt from the `.log`, and is never trusted
//! over it. An active segment's index file is preallocated to its capacity and mapped
//! writable; entries past [`OffsetIndex::len`] are meaningless (zeros after a fresh
//! preallocation, anything after a crash). Sealing trims the file to its entries and maps it
//! read-only. Opening an index checks it ([`OffsetIndex::check`]); a failed check means the
//! caller rebuilds it.
//!
//! The preallocation is sparse (`set_len`): the file system gives a page its block only when
//! it is first written. A store through the map into a page without a block, on a full disk,
//! raises SIGBUS and kills the process; a `write` returns `ENOSPC`. So pages are given blocks
//! with a positioned write of zeros, `ALLOCATION_BYTES` at a time, before the map touches
//! them, and appending an entry fails with the file system's error instead.
//!
//! Not thread-safe for writers: appends take `&mut self`. Readers share `&self`.
//!
//! This is the only module of the crate with `unsafe` code: the memory maps.

#![allow(unsafe_code)] // Memory-mapping index files; each block says why it is sound.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Bytes per offset index entry.
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes per time index entry.
pub(crate) const TIME_ENTRY_BYTES: usize = 12;
/// Index bytes given blocks at a time (zeros written through the descriptor) before the map
/// writes into them: a multiple of every page size in use (4 KiB, 16 KiB, 64 KiB), so that no
/// page the map touches is only partly backed.
const ALLOCATION_BYTES: usize = 64 * 1024;

/// A mapped file of `N`-byte entries, of which the first `len` are valid.
#[derive(Debug)]
struct MappedEntries<const N: usize> {
    /// Where the file lives, for reopening after a trim.
    path: PathBuf,
    /// The mapping, writable while the segment is active.
    map: Map,
    /// Entries in use.
    len: usize,
    /// Bytes from the start of the file known to have blocks (written through the file, not
    /// only preallocated by `set_len`); the map writes only below this.
    allocated: usize,
}

#[derive(Debug)]
enum Map {
    /// A sealed index: the file is closed once mapped (a mapping needs no descriptor), so a
    /// loaded sealed segment costs one descriptor, its `.log`, not three.
    ReadOnly(Mmap),
    /// An active index, with its file kept open for the trim on seal.
    Writable(MmapMut, File),
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::ReadOnly(map) => map,
            Map::Writable(map, _) => map,
        }
    }
}

impl<const N: usize> MappedEntries<N> {
    /// Creates (or truncates) the file, preallocates `capacity` entries, maps it writable.
    fn create(path: &Path, capacity: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Self::map_writable(path, file, 0, capacity)
    }

    /// Opens an existing file read-only; its length must be a whole number of entries.
    fn open_read_only(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).open(path)?;
        let bytes = file.metadata()?.len();
        if bytes % N as u64 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("index length {bytes} is not a multiple of {N}"),
            ));
        }
        let len = usize::try_from(bytes / N as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "index too large"))?;
        // SAFETY: the file lives in a partition directory that this process owns exclusively
        // (the broker locks its data directory), and index files are rewritten or shrunk only
        // by the log's single writer, which holds the log exclusively while no reader can be
        // using an index (readers use indexes only under the log's shared lock; read plans
        // carry the `.log` file, never an index). So the mapping stays valid while used.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedEntries {
            path: path.to_path_buf(),
            map: Map::ReadOnly(map),
            len,
            allocated: 0,
        })
    }

    /// Opens an existing file of `len` valid entries for appending up to `capacity` entries.
    fn open_writable(path: &Path, capacity: usize) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let bytes = file.metadata()?.len();
        if bytes % N as u64 != 0 || bytes / N as u64 > capacity as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("index length {bytes} is not a whole number of entries within capacity"),
            ));
        }
        Self::map_writable(path, file, (bytes / N as u64) as usize, capacity)
    }

    /// Maps `file`, whose first `len` entries are written (so have blocks), for appending up
    /// to `capacity` entries.
    fn map_writable(path: &Path, file: File, len: usize, capacity: usize) -> io::Result<Self> {
        file.set_len((capacity * N) as u64)?;
        // SAFETY: as in `open_read_only`; in addition only this value writes through the map,
        // and the file is not resized while it is mapped (`seal` drops the map first). The
        // descriptor writes only zeros past `allocated`, where the map has never written and
        // no entry in use lies, while `&mut self` rules out any borrow of the mapped bytes.
        let map = unsafe { MmapOptions::new().len(capacity * N).map_mut(&file)? };
        Ok(MappedEntries {
            path: path.to_path_buf(),
            map: Map::Writable(map, file),
            len,
            allocated: len * N,
        })
    }

    /// Makes sure the file has blocks for `entries` entries after those in use (as many as
    /// fit), so that appending them cannot fault on a full disk. Fails with the file system's
    /// error (`ENOSPC`) instead.
    fn reserve(&mut self, entries: usize) -> io::Result<()> {
        let Map::Writable(map, file) = &self.map else {
            return Ok(());
        };
        let needed = (self.len + entries).saturating_mul(N).min(map.len());
        if needed <= self.allocated {
            return Ok(());
        }
        let target = needed.next_multiple_of(ALLOCATION_BYTES).min(map.len());
        #[cfg(test)]
        super::fault::index_allocation()?;
        file.write_all_at(&vec![0u8; target - self.allocated], self.allocated as u64)?;
        self.allocated = target;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.map.bytes().len() / N
    }

    fn entry(&self, slot: usize) -> [u8; N] {
        assert!(
            slot < self.len,
            "index slot {slot} beyond {} entries",
            self.len
        );
        let mut entry = [0u8; N];
        entry.copy_from_slice(&self.map.bytes()[slot * N..][..N]);
        entry
    }

    /// Appends an entry; `false` when the index is full or read-only, an error when its
    /// page cannot be given a block (see `reserve`).
    fn push(&mut self, entry: [u8; N]) -> io::Result<bool> {
        if self.len >= self.capacity() || matches!(self.map, Map::ReadOnly(_)) {
            return Ok(false);
        }
        self.reserve(1)?;
        let len = self.len;
        let Map::Writable(map, _) = &mut self.map else {
            return Ok(false);
        };
        let Some(target) = map.get_mut(len * N..(len + 1) * N) else {
            return Ok(false);
        };
        assert!(
            (len + 1) * N <= self.allocated,
            "index entry in an unallocated page"
        );
        target.copy_from_slice(&entry);
        self.len += 1;
        Ok(true)
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Trims the file to its entries and maps it read-only.
    fn seal(self) -> io::Result<Self> {
        let MappedEntries { path, map, len, .. } = self;
        if let Map::Writable(map, file) = map {
            // The map must go before the file shrinks: touching a mapped page past the end
            // of a file raises SIGBUS.
            drop(map);
            file.set_len((len * N) as u64)?;
        }
        Self::open_read_only(&path)
    }

    /// The largest slot whose entry has `key(entry) <= target`, given entries sorted by `key`.
    fn floor(&self, target: i64, key: impl Fn(&[u8; N]) -> i64) -> Option<usize> {
        // Binary search for the first entry with a key above the target.
        let (mut low, mut high) = (0usize, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            if key(&self.entry(middle)) <= target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1)
    }
}

/// An entry of the offset index: the batch starting at `position` has base offset
/// `segment base + relative_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// The batch's base offset minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Where the batch starts in the `.log` file.
    pub(crate) position: u32,
}

/// The sparse offset index of one segment: one entry per ~`index_interval_bytes` of log.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    /// The mapped entries.
    entries: MappedEntries<OFFSET_ENTRY_BYTES>,
}

impl OffsetIndex {
    /// Creates an empty index file preallocated for `capacity` entries.
    pub(crate) fn create(path: &Path, capacity: usize) -> io::Result<OffsetIndex> {
        MappedEntries::create(path, capacity).map(|entries| OffsetIndex { entries })
    }

    /// Opens a sealed (trimmed) index read-only. Call [`OffsetIndex::check`] before use.
    pub(crate) fn open(path: &Path) -> io::Result<OffsetIndex> {
        MappedEntries::open_read_only(path).map(|entries| OffsetIndex { entries })
    }

    /// Reopens a trimmed index for appending, preallocating it back to `capacity` entries.
    pub(crate) fn open_writable(path: &Path, capacity: usize) -> io::Result<OffsetIndex> {
        MappedEntries::open_writable(path, capacity).map(|entries| OffsetIndex { entries })
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len
    }

    /// How many more entries fit.
    pub(crate) fn remaining(&self) -> usize {
        self.entries.capacity().saturating_sub(self.entries.len)
    }

    /// The entry in `slot`.
    pub(crate) fn entry(&self, slot: usize) -> OffsetEntry {
        let raw = self.entries.entry(slot);
        OffsetEntry {
            relative_offset: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            position: u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
        }
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<OffsetEntry> {
        self.len().checked_sub(1).map(|slot| self.entry(slot))
    }

    /// Appends an entry; `false` if the index is full, an error if the file system has no
    /// room for its page. Entries must strictly increase in both fields: a violation is a bug
    /// in the caller, so it panics.
    pub(crate) fn append(&mut self, entry: OffsetEntry) -> io::Result<bool> {
        if let Some(last) = self.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must increase: {last:?} then {entry:?}"
            );
        }
        let mut raw = [0u8; OFFSET_ENTRY_BYTES];
        raw[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
        raw[4..].copy_from_slice(&entry.position.to_be_bytes());
        self.entries.push(raw)
    }

    /// The entry with the largest relative offset `<= relative_offset`: the batch that holds
    /// the target offset starts there or later. `None` when the target precedes every entry
    /// (then the search starts at position 0).
    pub(crate) fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        self.slot_at_or_below(relative_offset)
            .map(|slot| self.entry(slot))
    }

    /// The entry with the largest position `<= position` (positions increase with offsets).
    pub(crate) fn lookup_position(&self, position: u64) -> Option<OffsetEntry> {
        let target = i64::try_from(position).unwrap_or(i64::MAX);
        self.entries
            .floor(target, |raw| {
                i64::from(u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]))
            })
            .map(|slot| self.entry(slot))
    }

    /// Forgets every entry with a relative offset `>= relative_offset`.
    pub(crate) fn truncate_from(&mut self, relative_offset: u32) {
        let keep = match relative_offset.checked_sub(1) {
            None => 0,
            Some(below) => self.slot_at_or_below(below).map_or(0, |slot| slot + 1),
        };
        self.entries.truncate(keep);
    }

    fn slot_at_or_below(&self, relative_offset: u32) -> Option<usize> {
        self.entries.floor(i64::from(relative_offset), |raw| {
            i64::from(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        })
    }

    /// Checks that the entries strictly increase and point inside a log of `log_bytes`.
    pub(crate) fn check(&self, log_bytes: u64) -> Result<(), &'static str> {
        let mut previous: Option<OffsetEntry> = None;
        for slot in 0..self.len() {
            let entry = self.entry(slot);
            if u64::from(entry.position) >= log_bytes {
                return Err("offset index entry points past the end of the log");
            }
            if let Some(previous) = previous {
                if entry.relative_offset <= previous.relative_offset
                    || entry.position <= previous.position
                {
                    return Err("offset index entries do not increase");
                }
            }
            previous = Some(entry);
        }
        Ok(())
    }

    /// Trims the file to its entries and maps it read-only.
    pub(crate) fn seal(self) -> io::Result<OffsetIndex> {
        self.entries.seal().map(|entries| OffsetIndex { entries })
    }

    /// The index file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.entries.path
    }
}

/// An entry of the time index: every batch up to and including the one at
/// `segment base + relative_offset` has a max timestamp `<= timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// The largest timestamp of the segment's batches up to this point.
    pub(crate) timestamp: i64,
    /// The base offset (relative) of the batch at which that maximum held.
    pub(crate) relative_offset: u32,
}

/// The time index of one segment: entries are added (sparsely) only when the segment's max
/// timestamp so far grows, so both fields strictly increase.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    /// The mapped entries.
    entries: MappedEntries<TIME_ENTRY_BYTES>,
}

impl TimeIndex {
    /// Creates an empty time index preallocated for `capacity` entries.
    pub(crate) fn create(path: &Path, capacity: usize) -> io::Result<TimeIndex> {
        MappedEntries::create(path, capacity).map(|entries| TimeIndex { entries })
    }

    /// Opens a sealed time index read-only. Call [`TimeIndex::check`] before use.
    pub(crate) fn open(path: &Path) -> io::Result<TimeIndex> {
        MappedEntries::open_read_only(path).map(|entries| TimeIndex { entries })
    }

    /// Reopens a trimmed time index for appending up to `capacity` entries.
    pub(crate) fn open_writable(path: &Path, capacity: usize) -> io::Result<TimeIndex> {
        MappedEntries::open_writable(path, capacity).map(|entries| TimeIndex { entries })
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len
    }

    /// How many more entries fit.
    pub(crate) fn remaining(&self) -> usize {
        self.entries.capacity().saturating_sub(self.entries.len)
    }

    /// The entry in `slot`.
    pub(crate) fn entry(&self, slot: usize) -> TimeEntry {
        let raw = self.entries.entry(slot);
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&raw[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(timestamp),
            relative_offset: u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]),
        }
    }

    /// The last entry: its timestamp is the segment's max timestamp once sealed.
    pub(crate) fn last(&self) -> Option<TimeEntry> {
        self.len().checked_sub(1).map(|slot| self.entry(slot))
    }

    /// Appends an entry if it grows both fields; returns `false` only when the index is full,
    /// an error if the file system has no room for its page.
    pub(crate) fn maybe_append(&mut self, entry: TimeEntry) -> io::Result<bool> {
        if let Some(last) = self.last() {
            if entry.timestamp <= last.timestamp || entry.relative_offset <= last.relative_offset {
                return Ok(true);
            }
        }
        let mut raw = [0u8; TIME_ENTRY_BYTES];
        raw[..8].copy_from_slice(&entry.timestamp.to_be_bytes());
        raw[8..].copy_from_slice(&entry.relative_offset.to_be_bytes());
        self.entries.push(raw)
    }

    /// The last entry with a timestamp below `timestamp`: every batch up to it is older than
    /// the target, so a search for the first batch at or after `timestamp` starts there.
    pub(crate) fn last_before(&self, timestamp: i64) -> Option<TimeEntry> {
        self.entries
            .floor(timestamp.saturating_sub(1), |raw| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw[..8]);
                i64::from_be_bytes(bytes)
            })
            .map(|slot| self.entry(slot))
    }

    /// Forgets every entry with a relative offset `>= relative_offset`.
    pub(crate) fn truncate_from(&mut self, relative_offset: u32) {
        let keep = (0..self.len())
            .rev()
            .find(|&slot| self.entry(slot).relative_offset < relative_offset)
            .map_or(0, |slot| slot + 1);
        self.entries.truncate(keep);
    }

    /// Checks that both fields strictly increase.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        for slot in 1..self.len() {
            let (previous, entry) = (self.entry(slot - 1), self.entry(slot));
            if entry.timestamp <= previous.timestamp
                || entry.relative_offset <= previous.relative_offset
            {
                return Err("time index entries do not increase");
            }
        }
        Ok(())
    }

    /// The index file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.entries.path
    }

    /// Trims the file to its entries and maps it read-only.
    pub(crate) fn seal(self) -> io::Result<TimeIndex> {
        self.entries.seal().map(|entries| TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    fn index_with(dir: &Path, entries: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::create(&dir.join("0.index"), 16).unwrap();
        for &(relative_offset, position) in entries {
            assert!(index.append(entry(relative_offset, position)).unwrap());
        }
        index
    }

    /// One data-driven check per lookup: target -> expected entry.
    fn check_lookup(index: &OffsetIndex, target: u32, expected: Option<(u32, u32)>) {
        assert_eq!(
            index.lookup(target),
            expected.map(|(relative_offset, position)| entry(relative_offset, position)),
            "lookup({target})"
        );
    }

    #[test]
    fn lookup_at_every_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(dir.path(), &[(10, 4096), (20, 8192), (35, 12288)]);
        check_lookup(&index, 0, None); // below the first entry
        check_lookup(&index, 9, None);
        check_lookup(&index, 10, Some((10, 4096))); // exactly the first
        check_lookup(&index, 11, Some((10, 4096))); // between entries
        check_lookup(&index, 19, Some((10, 4096)));
        check_lookup(&index, 20, Some((20, 8192)));
        check_lookup(&index, 34, Some((20, 8192)));
        check_lookup(&index, 35, Some((35, 12288))); // exactly the last
        check_lookup(&index, u32::MAX, Some((35, 12288))); // past the end
    }

    #[test]
    fn lookup_by_position_at_every_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(dir.path(), &[(10, 4096), (20, 8192), (35, 12288)]);
        let found = |position| {
            index
                .lookup_position(position)
                .map(|entry| (entry.relative_offset, entry.position))
        };
        assert_eq!(found(4095), None);
        assert_eq!(found(4096), Some((10, 4096)));
        assert_eq!(found(8191), Some((10, 4096)));
        assert_eq!(found(8192), Some((20, 8192)));
        assert_eq!(found(u64::MAX), Some((35, 12288)));
    }

    #[test]
    fn empty_index_lookup_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(dir.path(), &[]);
        check_lookup(&index, 0, None);
        check_lookup(&index, u32::MAX, None);
    }

    #[test]
    fn full_index_refuses_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::create(&dir.path().join("0.index"), 2).unwrap();
        assert!(index.append(entry(1, 100)).unwrap());
        assert!(index.append(entry(2, 200)).unwrap());
        assert_eq!(index.remaining(), 0);
        assert!(!index.append(entry(3, 300)).unwrap());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn seal_trims_and_reopen_keeps_entries() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(dir.path(), &[(1, 10), (5, 50)]);
        let path = index.path().to_path_buf();
        let sealed = index.seal().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        assert_eq!(sealed.len(), 2);
        drop(sealed);
        let reopened = OffsetIndex::open(&path).unwrap();
        assert_eq!(reopened.check(100), Ok(()));
        check_lookup(&reopened, 7, Some((5, 50)));
        let mut writable = OffsetIndex::open_writable(&path, 16).unwrap();
        assert!(writable.append(entry(9, 90)).unwrap());
        check_lookup(&writable, 9, Some((9, 90)));
    }

    #[test]
    fn check_rejects_bad_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(dir.path(), &[(1, 10), (5, 50)]);
        assert_eq!(index.check(51), Ok(()));
        assert!(index.check(50).is_err(), "entry at the log's end");
        // An untrimmed preallocated file read as sealed: zero entries after real ones.
        let path = index.path().to_path_buf();
        drop(index);
        let reopened = OffsetIndex::open(&path).unwrap();
        assert_eq!(reopened.len(), 16);
        assert!(reopened.check(1000).is_err());
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(
            OffsetIndex::open(&path).is_err(),
            "length not a multiple of 8"
        );
    }

    #[test]
    fn truncate_from_drops_entries_at_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_with(dir.path(), &[(1, 10), (5, 50), (9, 90)]);
        index.truncate_from(6);
        assert_eq!(index.len(), 2);
        index.truncate_from(5);
        assert_eq!(index.len(), 1);
        index.truncate_from(0);
        assert_eq!(index.len(), 0);
        assert!(index.append(entry(2, 20)).unwrap());
    }

    #[test]
    fn time_index_grows_only_and_finds_last_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TimeIndex::create(&dir.path().join("0.timeindex"), 8).unwrap();
        let time = |timestamp, relative_offset| TimeEntry {
            timestamp,
            relative_offset,
        };
        assert!(index.maybe_append(time(100, 0)).unwrap());
        assert!(index.maybe_append(time(100, 3)).unwrap()); // same timestamp: skipped
        assert!(index.maybe_append(time(90, 4)).unwrap()); // older: skipped
        assert!(index.maybe_append(time(200, 5)).unwrap());
        assert_eq!(index.len(), 2);
        assert_eq!(index.check(), Ok(()));
        assert_eq!(index.last_before(100), None);
        assert_eq!(index.last_before(101), Some(time(100, 0)));
        assert_eq!(index.last_before(200), Some(time(100, 0)));
        assert_eq!(index.last_before(201), Some(time(200, 5)));
        index.truncate_from(5);
        assert_eq!(index.last(), Some(time(100, 0)));
    }
}
