//! [`Segment`]: one `.log` file of record batches with its offset and time indexes.
//!
//! A segment is *active* (the last of its log: open for appends, indexes mapped writable and
//! preallocated) or *sealed* (immutable: its files are opened and its indexes mapped only when
//! first read, so that a log of thousands of segments opens without touching them).
//!
//! Invariants: the `.log` holds whole batches back to back from position 0 up to `size`; the
//! first batch's base offset is the segment's base offset and each batch starts at the offset
//! after the previous one's last; index entries point at batch starts.
//!
//! Not thread-safe for writers: `append`, `seal` and `truncate_to` take `&mut self`; reads
//! take `&self` and may run concurrently with each other.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use mq_protocol::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use mq_protocol::Offset;
use rustix::buffer::spare_capacity;

use super::config::LogConfig;
use super::error::{LogError, LogResult};
use super::file_name::SegmentPaths;
use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use super::read_buffers::READ_BUFFERS;

/// How much of a segment the scanner reads at a time.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// The open files of a segment.
#[derive(Debug)]
struct Parts {
    /// The `.log`, shared with reads in flight.
    file: Arc<File>,
    /// The offset index.
    offset_index: OffsetIndex,
    /// The time index.
    time_index: TimeIndex,
}

/// The load slot of a sealed segment: its open files, once loaded.
type Slot = Mutex<Option<Arc<Parts>>>;

/// The sealed segments of one log whose files are open, in the order they were loaded. Past
/// its capacity the earliest loaded is unloaded (its descriptor closed, its maps dropped; the
/// next read reopens it), so that a log of thousands of segments does not hold thousands of
/// descriptors. Readers in flight keep what they hold alive through their `Arc`s.
#[derive(Debug)]
pub(crate) struct OpenSegments {
    /// How many sealed segments may be open at once.
    capacity: usize,
    /// The open ones, earliest loaded first.
    loaded: Mutex<VecDeque<Arc<Slot>>>,
}

impl OpenSegments {
    /// A registry for at most `capacity` (at least 1) open sealed segments.
    pub(crate) fn new(capacity: usize) -> Arc<OpenSegments> {
        Arc::new(OpenSegments {
            capacity: capacity.max(1),
            loaded: Mutex::new(VecDeque::new()),
        })
    }

    /// Records that `slot` was just filled; unloads the earliest loaded slot if over capacity.
    fn note_loaded(&self, slot: &Arc<Slot>) {
        let evicted = {
            let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
            loaded.push_back(Arc::clone(slot));
            if loaded.len() > self.capacity {
                loaded.pop_front()
            } else {
                None
            }
        };
        // Taken after the registry's lock is released: a loader holds its slot's lock while
        // it takes the registry's, so the opposite order could deadlock.
        if let Some(evicted) = evicted {
            *evicted.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// How many sealed segments are open.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        loaded
            .iter()
            .filter(|slot| {
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
            })
            .count()
    }
}

/// What building a segment needs from its log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentContext<'a> {
    /// The log's settings.
    pub(crate) config: &'a LogConfig,
    /// The log's registry of open sealed segments.
    pub(crate) open_segments: &'a Arc<OpenSegments>,
    /// The current time, for the segment's age.
    pub(crate) now: SystemTime,
}

/// What an active segment tracks to maintain its indexes.
#[derive(Clone, Copy, Debug)]
struct Tracking {
    /// The offset after the last batch.
    next_offset: Offset,
    /// Log bytes written since the last offset index entry.
    bytes_since_index_entry: u64,
    /// The largest max timestamp of any batch so far (`i64::MIN` when empty).
    max_timestamp: i64,
    /// Relative base offset of the last batch, for the final time index entry on seal.
    last_batch_relative: Option<u32>,
}

impl Tracking {
    fn empty(base_offset: Offset) -> Tracking {
        Tracking {
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            max_timestamp: i64::MIN,
            last_batch_relative: None,
        }
    }

    /// Accounts for the batch at `position`, adding index entries where due. The only place
    /// that decides index entries, shared by append, recovery and rebuilds.
    fn on_batch(
        &mut self,
        parts: &mut Parts,
        base_offset: Offset,
        position: u64,
        header: &BatchHeader,
        config: &LogConfig,
    ) -> LogResult<()> {
        let relative = relative_offset(base_offset, header.base_offset)?;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        // The first batch sits at position 0, which a lookup finds without an entry.
        if position > 0 && self.bytes_since_index_entry >= u64::from(config.index_interval_bytes) {
            let entry = OffsetEntry {
                relative_offset: relative,
                position: u32::try_from(position).map_err(|_| LogError::OffsetOverflow)?,
            };
            let time_entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: relative,
            };
            // A full index only costs lookup speed; the roll check keeps room in practice.
            let appended = parts
                .offset_index
                .append(entry)
                .map_err(|source| index_error(parts.offset_index.path(), source))?;
            if appended {
                parts
                    .time_index
                    .maybe_append(time_entry)
                    .map_err(|source| index_error(parts.time_index.path(), source))?;
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes() as u64;
        self.last_batch_relative = Some(relative);
        self.next_offset =
            Offset::from_wire(header.next_offset()).ok_or(LogError::OffsetOverflow)?;
        Ok(())
    }
}

#[derive(Debug)]
enum State {
    /// Open for appends.
    Active {
        /// Files and writable indexes.
        parts: Parts,
        /// Index maintenance state.
        tracking: Tracking,
        /// When the segment was created (or first reopened), for `segment_age`.
        created_at: SystemTime,
    },
    /// Immutable; files opened on first use.
    Sealed {
        /// The opened files, once loaded; shared with the log's [`OpenSegments`].
        parts: Arc<Slot>,
        /// The segment's max timestamp, once known.
        max_timestamp: OnceLock<i64>,
    },
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch; the number in the file names.
    base_offset: Offset,
    /// The segment's files.
    paths: SegmentPaths,
    /// Bytes of whole batches in the `.log`.
    size: u64,
    /// Active or sealed.
    state: State,
    /// The log's registry of open sealed segments.
    open_segments: Arc<OpenSegments>,
}

/// Where a read will take its bytes from; executed outside the log's lock.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// The segment file.
    file: Arc<File>,
    /// Path, for errors.
    path: Arc<std::path::Path>,
    /// Start of the first batch to return.
    position: u64,
    /// Bytes to read: whole batches up to the limit, at least the first batch.
    len: u64,
}

impl ReadPlan {
    /// Reads the planned bytes and cuts them at the last whole batch (the plan's end may fall
    /// inside a batch when the byte limit does).
    pub fn execute(&self) -> LogResult<Bytes> {
        let len = usize::try_from(self.len).map_err(|_| LogError::OffsetOverflow)?;
        // Read into the buffer's spare capacity: no zero-filling first (a memset as costly as
        // a quarter of the copy from the page cache). A large read reuses an earlier one's
        // memory, already faulted in.
        let mut buffer = READ_BUFFERS.take(len);
        while buffer.len() < len {
            let position = self.position + buffer.len() as u64;
            let read = rustix::io::pread(&*self.file, spare_capacity(&mut buffer), position)
                .map_err(|error| LogError::io(&*self.path)(error.into()))?;
            if read == 0 {
                let eof =
                    io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than planned");
                return Err(LogError::io(&*self.path)(eof));
            }
        }
        buffer.truncate(len);
        let whole = batch::whole_batches_len(&buffer);
        buffer.truncate(whole);
        Ok(READ_BUFFERS.freeze(buffer))
    }

    /// Bytes the plan will read at most.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How thoroughly a scan checks batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Lengths, headers, CRCs and offset continuity: for data that may be torn.
    Full,
    /// Lengths, headers and offset continuity: for data known durable, to rebuild indexes.
    Headers,
}

/// Result of scanning a segment to rebuild its indexes.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The segment, active, with rebuilt indexes.
    pub(crate) segment: Segment,
    /// Bytes cut from the end because they were not whole valid batches.
    pub(crate) truncated_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) reason: Option<String>,
}

impl Segment {
    /// Creates the files of a new, empty, active segment.
    pub(crate) fn create(
        dir: &std::path::Path,
        base_offset: Offset,
        context: &SegmentContext<'_>,
    ) -> LogResult<Segment> {
        let config = context.config;
        let paths = SegmentPaths::new(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.log)
            .map_err(LogError::io(&paths.log))?;
        let indexes = OffsetIndex::create(&paths.index, config.offset_index_capacity())
            .map_err(LogError::io(&paths.index))
            .and_then(|offset_index| {
                let time_index = TimeIndex::create(&paths.time_index, config.time_index_capacity())
                    .map_err(LogError::io(&paths.time_index))?;
                Ok((offset_index, time_index))
            });
        let (offset_index, time_index) = match indexes {
            Ok(indexes) => indexes,
            Err(error) => {
                // Leave nothing behind (a full disk can refuse the index files): a `.log`
                // left here would make every later attempt fail on `create_new`.
                drop(file);
                let _ = delete_files(&paths);
                return Err(error);
            }
        };
        let parts = Parts {
            file: Arc::new(file),
            offset_index,
            time_index,
        };
        Ok(Segment {
            base_offset,
            paths,
            size: 0,
            state: State::Active {
                parts,
                tracking: Tracking::empty(base_offset),
                created_at: context.now,
            },
            open_segments: Arc::clone(context.open_segments),
        })
    }

    /// A sealed segment whose files are opened only when first read.
    pub(crate) fn lazy(
        dir: &std::path::Path,
        base_offset: Offset,
        size: u64,
        open_segments: &Arc<OpenSegments>,
    ) -> Segment {
        Segment {
            base_offset,
            paths: SegmentPaths::new(dir, base_offset),
            size,
            state: State::Sealed {
                parts: Arc::new(Mutex::new(None)),
                max_timestamp: OnceLock::new(),
            },
            open_segments: Arc::clone(open_segments),
        }
    }

    /// Reopens the last segment of a cleanly closed log for appending, trusting its data
    /// (`size` bytes ending at `next_offset`) and checking its indexes (rebuilt if bad).
    pub(crate) fn open_active(
        dir: &std::path::Path,
        base_offset: Offset,
        size: u64,
        next_offset: Offset,
        context: &SegmentContext<'_>,
    ) -> LogResult<Segment> {
        let config = context.config;
        let paths = SegmentPaths::new(dir, base_offset);
        let file = open_log_file(&paths, true)?;
        let created_at = file
            .metadata()
            .and_then(|metadata| metadata.created().or_else(|_| metadata.modified()))
            .unwrap_or(context.now);
        let reopened = OffsetIndex::open_writable(&paths.index, config.offset_index_capacity())
            .and_then(|offset_index| {
                let time_index =
                    TimeIndex::open_writable(&paths.time_index, config.time_index_capacity())?;
                Ok((offset_index, time_index))
            });
        let parts = match reopened {
            Ok((offset_index, time_index)) => Parts {
                file: Arc::new(file),
                offset_index,
                time_index,
            },
            Err(error) => {
                tracing::warn!(path = %paths.index.display(), %error, "rebuilding unreadable index");
                let recovered = Segment::rebuild(
                    paths,
                    base_offset,
                    Arc::new(file),
                    size,
                    Check::Headers,
                    context,
                )?;
                return Ok(recovered.segment);
            }
        };
        let mut segment = Segment {
            base_offset,
            paths,
            size,
            state: State::Active {
                parts,
                tracking: Tracking::empty(base_offset),
                created_at,
            },
            open_segments: Arc::clone(context.open_segments),
        };
        match segment.check_indexes() {
            Ok(()) => {
                segment.restore_tracking(config)?;
                if segment.next_offset() != Some(next_offset) {
                    return Err(segment.corrupt(size, "segment end disagrees with the checkpoint"));
                }
                Ok(segment)
            }
            Err(reason) => {
                tracing::warn!(path = %segment.paths.index.display(), reason, "rebuilding bad index");
                let State::Active { parts, .. } = segment.state else {
                    unreachable!("constructed active above");
                };
                let recovered = Segment::rebuild(
                    segment.paths,
                    base_offset,
                    parts.file,
                    size,
                    Check::Headers,
                    context,
                )?;
                Ok(recovered.segment)
            }
        }
    }

    /// Scans the whole `.log` of a segment that may have a torn or corrupt tail, validating
    /// every batch (CRC, offsets continuing from `base_offset`), truncates the file after the
    /// last valid batch and rebuilds both indexes. The result is active.
    pub(crate) fn recover(
        dir: &std::path::Path,
        base_offset: Offset,
        context: &SegmentContext<'_>,
    ) -> LogResult<Recovered> {
        let paths = SegmentPaths::new(dir, base_offset);
        let file = open_log_file(&paths, true)?;
        let file_bytes = file.metadata().map_err(LogError::io(&paths.log))?.len();
        Segment::rebuild(
            paths,
            base_offset,
            Arc::new(file),
            file_bytes,
            Check::Full,
            context,
        )
    }

    fn rebuild(
        paths: SegmentPaths,
        base_offset: Offset,
        file: Arc<File>,
        file_bytes: u64,
        check: Check,
        context: &SegmentContext<'_>,
    ) -> LogResult<Recovered> {
        let config = context.config;
        let mut parts = Parts {
            file,
            offset_index: OffsetIndex::create(&paths.index, config.offset_index_capacity())
                .map_err(LogError::io(&paths.index))?,
            time_index: TimeIndex::create(&paths.time_index, config.time_index_capacity())
                .map_err(LogError::io(&paths.time_index))?,
        };
        let mut tracking = Tracking::empty(base_offset);
        let file = Arc::clone(&parts.file);
        let mut scanner = Scanner::new(&file, file_bytes);
        let mut reason = None;
        let mut valid_bytes = 0u64;
        loop {
            let item = scanner.next().map_err(LogError::io(&paths.log))?;
            let (position, bytes) = match item {
                Scanned::End => break,
                Scanned::Torn { reason: why } => {
                    reason = Some(why.to_string());
                    break;
                }
                Scanned::Batch { position, bytes } => (position, bytes),
            };
            let header = match check_batch(bytes, check, tracking.next_offset) {
                Ok(header) => header,
                Err(why) => {
                    reason = Some(why);
                    break;
                }
            };
            tracking.on_batch(&mut parts, base_offset, position, &header, config)?;
            valid_bytes = position + bytes.len() as u64;
        }
        if reason.is_some() && check == Check::Headers {
            // Data below the recovery point is known durable: damage there is not a torn tail.
            return Err(LogError::Corrupt {
                path: paths.log.clone(),
                position: valid_bytes,
                reason: reason.unwrap_or_default(),
            });
        }
        let truncated_bytes = file_bytes - valid_bytes;
        if truncated_bytes > 0 {
            parts
                .file
                .set_len(valid_bytes)
                .map_err(LogError::io(&paths.log))?;
        }
        Ok(Recovered {
            segment: Segment {
                base_offset,
                paths,
                size: valid_bytes,
                state: State::Active {
                    parts,
                    tracking,
                    created_at: context.now,
                },
                open_segments: Arc::clone(context.open_segments),
            },
            truncated_bytes,
            reason,
        })
    }

    /// The segment's base offset.
    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// Bytes of whole batches in the `.log`.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The segment's files.
    pub(crate) fn paths(&self) -> &SegmentPaths {
        &self.paths
    }

    /// Whether this segment takes appends.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// The offset after the last batch; known for the active segment only.
    pub(crate) fn next_offset(&self) -> Option<Offset> {
        match &self.state {
            State::Active { tracking, .. } => Some(tracking.next_offset),
            State::Sealed { .. } => None,
        }
    }

    /// When the active segment was created; `None` for sealed ones.
    pub(crate) fn created_at(&self) -> Option<SystemTime> {
        match &self.state {
            State::Active { created_at, .. } => Some(*created_at),
            State::Sealed { .. } => None,
        }
    }

    /// Whether `batches` more index entries fit the active segment's indexes.
    pub(crate) fn indexes_have_room(&self, batches: usize) -> bool {
        match &self.state {
            State::Active { parts, .. } => {
                parts.offset_index.remaining() >= batches && parts.time_index.remaining() > batches
            }
            State::Sealed { .. } => false,
        }
    }

    /// The file handle of the `.log` (opening it for a sealed segment), for fsync.
    pub(crate) fn file(&self, config: &LogConfig) -> LogResult<Arc<File>> {
        match &self.state {
            State::Active { parts, .. } => Ok(Arc::clone(&parts.file)),
            State::Sealed { .. } => Ok(Arc::clone(&self.sealed_parts(config)?.file)),
        }
    }

    /// Writes `bytes` (whole batches, already validated and given offsets; `headers` are
    /// theirs, with their positions within `bytes`) at the end of the active segment.
    ///
    /// All or nothing: on failure (a full disk, for the `.log` or an index page) the segment
    /// is as it was, the file cut back to its length before the write, so that no partial
    /// batch stays on disk and the next append continues at the same position and offset.
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
        config: &LogConfig,
    ) -> LogResult<()> {
        let base_offset = self.base_offset;
        let size = self.size;
        let State::Active {
            parts, tracking, ..
        } = &mut self.state
        else {
            panic!("append to sealed segment {base_offset}");
        };
        if let Err(error) = write_all_at(&parts.file, bytes, size) {
            // Cut off whatever part was written so the file ends at a batch boundary again;
            // if even that fails the caller takes the log offline.
            let _ = parts.file.set_len(size);
            return Err(LogError::io(&self.paths.log)(error));
        }
        let before = *tracking;
        for (position, header) in headers {
            assert_eq!(
                Offset::from_wire(header.base_offset),
                Some(tracking.next_offset),
                "append must continue the segment's offsets"
            );
            let indexed =
                tracking.on_batch(parts, base_offset, size + *position as u64, header, config);
            if let Err(error) = indexed {
                // An index page could not get its block (a full disk; see the `index`
                // module). Undo the whole append: its index entries, the tracking, the bytes.
                let first = relative_offset(base_offset, headers[0].1.base_offset)?;
                parts.offset_index.truncate_from(first);
                parts.time_index.truncate_from(first);
                *tracking = before;
                let _ = parts.file.set_len(size);
                return Err(error);
            }
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the segment immutable: records its max timestamp as the last time index entry,
    /// trims both indexes to their entries and maps them read-only.
    pub(crate) fn seal(&mut self) -> LogResult<()> {
        // The final time index entry first, while the segment is whole: if the disk has no
        // room for its page, the segment stays active and usable, and the caller gets the
        // error.
        if let State::Active {
            parts, tracking, ..
        } = &mut self.state
        {
            if let Some(relative_offset) = tracking.last_batch_relative {
                parts
                    .time_index
                    .maybe_append(TimeEntry {
                        timestamp: tracking.max_timestamp,
                        relative_offset,
                    })
                    .map_err(|source| index_error(&self.paths.time_index, source))?;
            }
        }
        let placeholder = State::Sealed {
            parts: Arc::new(Mutex::new(None)),
            max_timestamp: OnceLock::new(),
        };
        let State::Active {
            parts, tracking, ..
        } = std::mem::replace(&mut self.state, placeholder)
        else {
            return Ok(());
        };
        let sealed = seal_parts(parts, &tracking, &self.paths)?;
        let max_timestamp = OnceLock::new();
        if tracking.last_batch_relative.is_some() {
            let _ = max_timestamp.set(tracking.max_timestamp);
        }
        // A segment just sealed is likely still read (consumers near the tail): keep it open.
        let slot = Arc::new(Mutex::new(Some(Arc::new(sealed))));
        self.open_segments.note_loaded(&slot);
        self.state = State::Sealed {
            parts: slot,
            max_timestamp,
        };
        Ok(())
    }

    /// Reopens a sealed segment for appending (after a truncation made it the last one).
    pub(crate) fn reactivate(&mut self, context: &SegmentContext<'_>) -> LogResult<()> {
        if self.is_active() {
            return Ok(());
        }
        // Drop our own mapping of the sealed files before remapping them writable.
        self.state = State::Sealed {
            parts: Arc::new(Mutex::new(None)),
            max_timestamp: OnceLock::new(),
        };
        let dir = self
            .paths
            .log
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        // The data below the recovery point is trusted; rebuilding the indexes from it is the
        // simplest way to restore the active segment's tracking exactly.
        let file = open_log_file(&self.paths, true)?;
        let recovered = Segment::rebuild(
            SegmentPaths::new(&dir, self.base_offset),
            self.base_offset,
            Arc::new(file),
            self.size,
            Check::Headers,
            context,
        )?;
        *self = recovered.segment;
        Ok(())
    }

    /// Removes every batch whose last offset is `>= offset` from this active segment; the
    /// segment then ends at the base offset of the first removed batch. Returns the bytes cut.
    pub(crate) fn truncate_to(&mut self, offset: Offset, config: &LogConfig) -> LogResult<u64> {
        let Some((position, header)) = self.find(offset, config)? else {
            return Ok(0);
        };
        let base_offset = self.base_offset;
        let State::Active {
            parts, tracking, ..
        } = &mut self.state
        else {
            panic!("truncate of sealed segment {base_offset}");
        };
        parts
            .file
            .set_len(position)
            .map_err(LogError::io(&self.paths.log))?;
        let cut = self.size - position;
        self.size = position;
        let relative = relative_offset(base_offset, header.base_offset)?;
        parts.offset_index.truncate_from(relative);
        parts.time_index.truncate_from(relative);
        *tracking = Tracking::empty(base_offset);
        self.restore_tracking(config)?;
        Ok(cut)
    }

    /// Recomputes the active segment's tracking from its indexes and the batches after their
    /// last entries.
    fn restore_tracking(&mut self, config: &LogConfig) -> LogResult<()> {
        let base_offset = self.base_offset;
        let size = self.size;
        let path = self.paths.log.clone();
        let State::Active {
            parts, tracking, ..
        } = &mut self.state
        else {
            return Ok(());
        };
        // Resume from the last offset index entry: a batch boundary with a known offset.
        let (mut position, mut next_offset) = match parts.offset_index.last() {
            Some(entry) => (
                u64::from(entry.position),
                base_offset.plus(u64::from(entry.relative_offset)),
            ),
            None => (0, base_offset),
        };
        let mut restored = Tracking {
            next_offset,
            bytes_since_index_entry: 0,
            max_timestamp: parts
                .time_index
                .last()
                .map_or(i64::MIN, |entry| entry.timestamp),
            last_batch_relative: None,
        };
        while position < size {
            let header = read_header(&parts.file, position)
                .map_err(LogError::io(&path))?
                .filter(|header| Offset::from_wire(header.base_offset) == Some(next_offset))
                .ok_or_else(|| LogError::Corrupt {
                    path: path.clone(),
                    position,
                    reason: "batch does not continue the segment's offsets".to_string(),
                })?;
            restored.max_timestamp = restored.max_timestamp.max(header.max_timestamp);
            restored.bytes_since_index_entry += header.total_bytes() as u64;
            restored.last_batch_relative = Some(relative_offset(base_offset, header.base_offset)?);
            next_offset =
                Offset::from_wire(header.next_offset()).ok_or(LogError::OffsetOverflow)?;
            position += header.total_bytes() as u64;
        }
        if position != size {
            return Err(LogError::Corrupt {
                path,
                position,
                reason: "last batch runs past the segment's end".to_string(),
            });
        }
        restored.next_offset = next_offset;
        // Do not index again right away what the last entry already covers.
        restored.bytes_since_index_entry = restored
            .bytes_since_index_entry
            .min(u64::from(config.index_interval_bytes));
        *tracking = restored;
        Ok(())
    }

    /// Finds the batch holding `offset`, or the first batch after it: its position and header.
    /// `None` if every batch of the segment ends before `offset`.
    pub(crate) fn find(
        &self,
        offset: Offset,
        config: &LogConfig,
    ) -> LogResult<Option<(u64, BatchHeader)>> {
        let parts = self.parts(config)?;
        let relative =
            u32::try_from(offset.0.saturating_sub(self.base_offset.0)).unwrap_or(u32::MAX);
        let start = self.scan_start(&parts, parts.offset_index.lookup(relative))?;
        self.scan_headers(&parts.file, start, |header| {
            Offset::from_wire(header.last_offset()).is_some_and(|last| last >= offset)
        })
    }

    /// Plans a read of whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (but always the whole first batch). `None` if the segment has no batch at
    /// or after `offset`.
    pub(crate) fn plan_read(
        &self,
        offset: Offset,
        max_bytes: u64,
        config: &LogConfig,
    ) -> LogResult<Option<ReadPlan>> {
        let Some((position, header)) = self.find(offset, config)? else {
            return Ok(None);
        };
        let available = self.size - position;
        let len = available.min(max_bytes.max(header.total_bytes() as u64));
        Ok(Some(ReadPlan {
            file: self.file(config)?,
            path: Arc::from(self.paths.log.as_path()),
            position,
            len,
        }))
    }

    /// The base offset of the first batch whose max timestamp is `>= timestamp`, if any.
    pub(crate) fn find_by_timestamp(
        &self,
        timestamp: i64,
        config: &LogConfig,
    ) -> LogResult<Option<Offset>> {
        if self
            .max_timestamp(config)?
            .is_none_or(|max| max < timestamp)
        {
            return Ok(None);
        }
        let parts = self.parts(config)?;
        let start = match parts.time_index.last_before(timestamp) {
            Some(entry) => parts
                .offset_index
                .lookup(entry.relative_offset)
                .map_or(0, |entry| u64::from(entry.position)),
            None => 0,
        };
        let found = self.scan_headers(&parts.file, start, |header| {
            header.max_timestamp >= timestamp
        })?;
        Ok(found.and_then(|(_, header)| Offset::from_wire(header.base_offset)))
    }

    /// The largest timestamp in the segment; `None` when it is empty.
    pub(crate) fn max_timestamp(&self, config: &LogConfig) -> LogResult<Option<i64>> {
        match &self.state {
            State::Active { tracking, .. } => {
                Ok(tracking.last_batch_relative.map(|_| tracking.max_timestamp))
            }
            State::Sealed { max_timestamp, .. } => {
                if let Some(max) = max_timestamp.get() {
                    return Ok(Some(*max));
                }
                if self.size == 0 {
                    return Ok(None);
                }
                let parts = self.sealed_parts(config)?;
                let Some(last) = parts.time_index.last() else {
                    return Err(self.corrupt(0, "sealed segment without a time index entry"));
                };
                Ok(Some(*max_timestamp.get_or_init(|| last.timestamp)))
            }
        }
    }

    /// The headers of the batches in about the last `window` bytes of the segment, oldest
    /// first: from the last indexed batch at or before `size - window` (the first batch when
    /// there is none) to the end. Reads those bytes in large chunks; parses headers only.
    pub(crate) fn tail_headers(
        &self,
        window: u64,
        config: &LogConfig,
    ) -> LogResult<Vec<BatchHeader>> {
        let parts = self.parts(config)?;
        let from = self.size.saturating_sub(window);
        let start = self.scan_start(&parts, parts.offset_index.lookup_position(from))?;
        let mut scanner = Scanner::starting_at(&parts.file, self.size, start);
        let mut headers = Vec::new();
        loop {
            match scanner.next().map_err(LogError::io(&self.paths.log))? {
                Scanned::Batch { position, bytes } => match BatchHeader::parse(bytes) {
                    Ok(header) => headers.push(header),
                    Err(_) => return Err(self.corrupt(position, "unreadable batch header")),
                },
                Scanned::Torn { reason } => return Err(self.corrupt(self.size, reason)),
                Scanned::End => return Ok(headers),
            }
        }
    }

    /// Deletes the segment's files. Readers holding its file keep reading it until they drop it.
    pub(crate) fn delete(self) -> LogResult<()> {
        drop(self.state);
        delete_files(&self.paths)
    }

    /// Where a scan for a batch may start: at the batch an index `entry` points to, once its
    /// header confirms it, or else at the segment's start (no entry, or one that does not
    /// match the log: the index is never trusted over the log).
    fn scan_start(&self, parts: &Parts, entry: Option<OffsetEntry>) -> LogResult<u64> {
        let Some(entry) = entry else {
            return Ok(0);
        };
        let position = u64::from(entry.position);
        let expected = self.base_offset.plus(u64::from(entry.relative_offset));
        match read_header(&parts.file, position).map_err(LogError::io(&self.paths.log))? {
            Some(header) if Offset::from_wire(header.base_offset) == Some(expected) => Ok(position),
            _ => {
                tracing::warn!(path = %self.paths.index.display(), position, "index entry does not match the log; scanning");
                Ok(0)
            }
        }
    }

    fn scan_headers(
        &self,
        file: &File,
        mut position: u64,
        mut stop: impl FnMut(&BatchHeader) -> bool,
    ) -> LogResult<Option<(u64, BatchHeader)>> {
        while position < self.size {
            let Some(header) =
                read_header(file, position).map_err(LogError::io(&self.paths.log))?
            else {
                return Err(self.corrupt(position, "unreadable batch header"));
            };
            if stop(&header) {
                return Ok(Some((position, header)));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    fn parts(&self, config: &LogConfig) -> LogResult<PartsRef<'_>> {
        match &self.state {
            State::Active { parts, .. } => Ok(PartsRef::Borrowed(parts)),
            State::Sealed { .. } => self.sealed_parts(config).map(PartsRef::Shared),
        }
    }

    fn sealed_parts(&self, config: &LogConfig) -> LogResult<Arc<Parts>> {
        let State::Sealed { parts: slot, .. } = &self.state else {
            panic!("sealed_parts of active segment {}", self.base_offset);
        };
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(loaded) = &*guard {
            return Ok(Arc::clone(loaded));
        }
        let loaded = Arc::new(self.load_sealed(config)?);
        *guard = Some(Arc::clone(&loaded));
        // Release our slot before the registry may lock another one: no thread ever holds
        // two slot locks, so loaders cannot deadlock.
        drop(guard);
        self.open_segments.note_loaded(slot);
        Ok(loaded)
    }

    /// Opens a sealed segment's files, checking its indexes and rebuilding them if needed.
    fn load_sealed(&self, config: &LogConfig) -> LogResult<Parts> {
        let file = Arc::new(open_log_file(&self.paths, false)?);
        let opened = OffsetIndex::open(&self.paths.index).and_then(|offset_index| {
            Ok(Parts {
                file: Arc::clone(&file),
                offset_index,
                time_index: TimeIndex::open(&self.paths.time_index)?,
            })
        });
        let problem = match opened {
            Ok(parts) => match check_parts(&parts, self.size) {
                Ok(()) => return Ok(parts),
                Err(reason) => reason.to_string(),
            },
            Err(error) => error.to_string(),
        };
        tracing::warn!(path = %self.paths.index.display(), problem, "rebuilding sealed segment's indexes");
        let context = SegmentContext {
            config,
            open_segments: &self.open_segments,
            now: SystemTime::now(),
        };
        let recovered = Segment::rebuild(
            self.paths.clone(),
            self.base_offset,
            file,
            self.size,
            Check::Headers,
            &context,
        )?;
        let State::Active {
            parts, tracking, ..
        } = recovered.segment.state
        else {
            unreachable!("rebuild returns an active segment");
        };
        seal_parts(parts, &tracking, &self.paths)
    }

    fn check_indexes(&self) -> Result<(), &'static str> {
        match &self.state {
            State::Active { parts, .. } => check_parts(parts, self.size),
            State::Sealed { .. } => Ok(()),
        }
    }

    fn corrupt(&self, position: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: self.paths.log.clone(),
            position,
            reason: reason.to_string(),
        }
    }
}

/// Borrowed (active) or shared (sealed) parts.
enum PartsRef<'a> {
    Borrowed(&'a Parts),
    Shared(Arc<Parts>),
}

impl std::ops::Deref for PartsRef<'_> {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        match self {
            PartsRef::Borrowed(parts) => parts,
            PartsRef::Shared(parts) => parts,
        }
    }
}

/// Records the final time index entry (the segment's max timestamp), trims both indexes to
/// their entries and maps them read-only.
fn seal_parts(mut parts: Parts, tracking: &Tracking, paths: &SegmentPaths) -> LogResult<Parts> {
    if let Some(relative_offset) = tracking.last_batch_relative {
        // Already there when `Segment::seal` called this; needed for a rebuilt segment.
        parts
            .time_index
            .maybe_append(TimeEntry {
                timestamp: tracking.max_timestamp,
                relative_offset,
            })
            .map_err(LogError::io(&paths.time_index))?;
    }
    Ok(Parts {
        file: parts.file,
        offset_index: parts
            .offset_index
            .seal()
            .map_err(LogError::io(&paths.index))?,
        time_index: parts
            .time_index
            .seal()
            .map_err(LogError::io(&paths.time_index))?,
    })
}

fn check_parts(parts: &Parts, size: u64) -> Result<(), &'static str> {
    parts.offset_index.check(size)?;
    parts.time_index.check()?;
    if size > 0 && parts.time_index.len() == 0 {
        return Err("time index of a non-empty segment is empty");
    }
    Ok(())
}

fn check_batch(bytes: &[u8], check: Check, expected: Offset) -> Result<BatchHeader, String> {
    let header = match check {
        Check::Full => batch::validate(bytes),
        Check::Headers => BatchHeader::parse(bytes),
    }
    .map_err(|error| error.to_string())?;
    if Offset::from_wire(header.base_offset) != Some(expected) {
        return Err(format!(
            "batch base offset {} does not continue at {expected}",
            header.base_offset
        ));
    }
    Ok(header)
}

fn relative_offset(base_offset: Offset, offset: i64) -> LogResult<u32> {
    Offset::from_wire(offset)
        .and_then(|offset| offset.0.checked_sub(base_offset.0))
        .and_then(|relative| u32::try_from(relative).ok())
        .ok_or(LogError::OffsetOverflow)
}

/// An I/O error on an index file (built only on failure: appends call this on every batch).
fn index_error(path: &std::path::Path, source: io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `write_all_at`, through the test-only fault injection (a write failing part way, as on a
/// full disk).
fn write_all_at(file: &File, bytes: &[u8], position: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some((written, error)) = super::fault::segment_write() {
        file.write_all_at(&bytes[..written.min(bytes.len())], position)?;
        return Err(error);
    }
    file.write_all_at(bytes, position)
}

/// Deletes a segment's files; missing ones are fine.
pub(crate) fn delete_files(paths: &SegmentPaths) -> LogResult<()> {
    for path in [&paths.log, &paths.index, &paths.time_index] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(LogError::io(path)(error)),
        }
    }
    Ok(())
}

fn open_log_file(paths: &SegmentPaths, writable: bool) -> LogResult<File> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&paths.log)
        .map_err(LogError::io(&paths.log))
}

/// Reads and parses the batch header at `position`; `None` if there is no sane header there.
fn read_header(file: &File, position: u64) -> io::Result<Option<BatchHeader>> {
    let mut header = [0u8; HEADER_BYTES];
    match file.read_exact_at(&mut header, position) {
        Ok(()) => Ok(BatchHeader::parse(&header).ok()),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(error) => Err(error),
    }
}

/// What the scanner found next.
enum Scanned<'a> {
    /// A batch whose length field fits the file (its contents are not yet checked).
    Batch { position: u64, bytes: &'a [u8] },
    /// The bytes at `position` cannot be a whole batch.
    Torn { reason: &'static str },
    /// The end of the file, at a batch boundary.
    End,
}

/// Reads a segment file front to back in large chunks, cutting it into batches by their
/// length fields. Checks nothing else: callers validate each batch.
struct Scanner<'f> {
    /// The file being read.
    file: &'f File,
    /// How many bytes of it to read.
    file_bytes: u64,
    /// Bytes read and not yet consumed start at `buffer[cursor]`.
    buffer: Vec<u8>,
    /// File position of `buffer[0]`.
    buffer_position: u64,
    /// Start of the next batch within `buffer`.
    cursor: usize,
}

impl<'f> Scanner<'f> {
    fn new(file: &'f File, file_bytes: u64) -> Scanner<'f> {
        Scanner::starting_at(file, file_bytes, 0)
    }

    /// A scanner whose first batch starts at `position` (a batch boundary).
    fn starting_at(file: &'f File, file_bytes: u64, position: u64) -> Scanner<'f> {
        Scanner {
            file,
            file_bytes,
            buffer: Vec::new(),
            buffer_position: position,
            cursor: 0,
        }
    }

    fn next(&mut self) -> io::Result<Scanned<'_>> {
        let position = self.buffer_position + self.cursor as u64;
        if position >= self.file_bytes {
            return Ok(Scanned::End);
        }
        if !self.fill(LOG_OVERHEAD)? {
            return Ok(Scanned::Torn {
                reason: "partial batch header at the end of the file",
            });
        }
        let total = batch::peek_total_bytes(&self.buffer[self.cursor..]).unwrap_or(0);
        let Ok(total) = usize::try_from(total) else {
            return Ok(Scanned::Torn {
                reason: "negative batch length",
            });
        };
        if !(HEADER_BYTES..=mq_protocol::limits::BATCH_BYTES_MAX).contains(&total) {
            return Ok(Scanned::Torn {
                reason: "batch length out of range",
            });
        }
        if !self.fill(total)? {
            return Ok(Scanned::Torn {
                reason: "partial batch at the end of the file",
            });
        }
        let bytes = &self.buffer[self.cursor..self.cursor + total];
        self.cursor += total;
        Ok(Scanned::Batch { position, bytes })
    }

    /// Ensures `needed` unconsumed bytes are buffered; `false` if the file ends first.
    fn fill(&mut self, needed: usize) -> io::Result<bool> {
        if self.buffer.len() - self.cursor >= needed {
            return Ok(true);
        }
        self.buffer.drain(..self.cursor);
        self.buffer_position += self.cursor as u64;
        self.cursor = 0;
        let end_of_buffer = self.buffer_position + self.buffer.len() as u64;
        let left_in_file = self.file_bytes.saturating_sub(end_of_buffer);
        let want = (needed - self.buffer.len()).max(SCAN_CHUNK_BYTES) as u64;
        let read = usize::try_from(want.min(left_in_file)).unwrap_or(usize::MAX);
        let filled = self.buffer.len();
        self.buffer.resize(filled + read, 0);
        let mut done = 0;
        while done < read {
            match self.file.read_at(
                &mut self.buffer[filled + done..],
                end_of_buffer + done as u64,
            )? {
                0 => break,
                count => done += count,
            }
        }
        self.buffer.truncate(filled + done);
        Ok(self.buffer.len() >= needed)
    }
}
