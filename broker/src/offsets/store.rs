//! [`OffsetStore`]: the committed offsets of every group, in memory and durably in one
//! partition log of the storage engine.
//!
//! Every change (a commit, a group's or a topic's deletion) appends record batches and is
//! applied to the in-memory map only once an fsync covers it, in log order, so the map never
//! shows what a crash could lose, and concurrent commits share fsyncs (the log's group commit).
//! Compaction copies the live entries to the log's end and then drops everything before the
//! copy; it holds commits back while it runs.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use bytes::Bytes;
use mq_protocol::batch::BatchIter;
use mq_protocol::record::{self, BatchBuilder, Record};
use mq_protocol::{Compression, Offset};

use super::record::{
    decode_key, decode_value, encode_key, encode_value, CommittedOffset, OffsetKey,
    STRING_BYTES_MAX,
};
use crate::log::{FlushPolicy, LogConfig, LogError, PartitionLog, SharedLog};
use crate::manager::TopicPartition;

/// Bytes read at a time while replaying the log at start-up.
const REPLAY_READ_BYTES: u64 = 1024 * 1024;

/// The size at which a batch of copied entries or tombstones is sealed; a commit is always
/// one batch, whatever its size (up to the format's limit).
const BATCH_BYTES_TARGET: usize = 1024 * 1024;

/// Records per batch of copied entries or tombstones, at most.
const BATCH_RECORDS_TARGET: usize = 16 * 1024;

/// Segments of the offsets log roll at this size; compaction rolls them itself.
const SEGMENT_BYTES: u32 = 128 * 1024 * 1024;

const _: () = assert!(mq_protocol::limits::BATCH_BYTES_MAX <= SEGMENT_BYTES as usize);
const _: () = assert!(BATCH_BYTES_TARGET <= mq_protocol::limits::BATCH_BYTES_MAX);
const _: () = assert!(BATCH_RECORDS_TARGET <= mq_protocol::limits::BATCH_RECORDS_MAX);

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// The log failed (I/O, or offline after a failed fsync).
    #[error("committed-offsets log: {0}")]
    Log(#[from] LogError),
    /// A record of the log cannot be read: start-up stops rather than lose offsets.
    #[error("unreadable committed-offsets record at offset {offset} in {path}: {reason}")]
    Corrupt {
        /// The log's directory.
        path: PathBuf,
        /// The record's (or its batch's) offset.
        offset: Offset,
        /// What is wrong.
        reason: String,
    },
    /// A group id, topic name or metadata text longer than a record can hold.
    #[error("{what} is {bytes} bytes long; the limit is {limit}")]
    TooLong {
        /// What is too long.
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A commit too large for one record batch.
    #[error("a commit of {records} offsets does not fit one record batch")]
    CommitTooLarge {
        /// How many offsets it held.
        records: usize,
    },
    /// The store was closed.
    #[error("the committed-offsets store is closed")]
    Closed,
}

/// Results of store operations.
pub type OffsetsResult<T> = Result<T, OffsetsError>;

/// A commit appended by [`OffsetStore::append_commit`], not yet known to be durable.
#[derive(Debug)]
#[must_use = "a commit is acknowledged only after `OffsetStore::wait_durable`"]
pub struct PendingCommit {
    /// The log end right after the commit's batch.
    log_end: Offset,
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Records in the log before.
    pub records_before: u64,
    /// Live entries copied (the records left).
    pub live_entries: u64,
    /// Segments deleted.
    pub deleted_segments: usize,
    /// The log start afterwards: the first offset of the copy.
    pub log_start: Offset,
}

/// One change to the map: a value, or `None` to delete the key.
type Update = (OffsetKey, Option<CommittedOffset>);

/// Updates appended to the log but not yet covered by an fsync.
#[derive(Debug)]
struct PendingUpdates {
    /// The log end right after their batch: they are durable once the flushed offset reaches it.
    log_end: Offset,
    /// The updates, in record order.
    updates: Vec<Update>,
}

/// The committed offsets in memory: by group, then by topic and partition.
#[derive(Debug, Default)]
struct OffsetMap {
    /// Groups that have at least one offset.
    groups: BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    /// Offsets over all groups.
    entries: u64,
}

impl OffsetMap {
    fn apply(&mut self, (key, value): Update) {
        match value {
            Some(value) => {
                let group = self.groups.entry(key.group).or_default();
                if group.insert(key.partition, value).is_none() {
                    self.entries += 1;
                }
            }
            None => {
                let Some(group) = self.groups.get_mut(&key.group) else {
                    return;
                };
                if group.remove(&key.partition).is_some() {
                    self.entries -= 1;
                }
                if group.is_empty() {
                    self.groups.remove(&key.group);
                }
            }
        }
    }

    /// Every entry, as updates that would recreate the map.
    fn live(&self) -> Vec<Update> {
        self.groups
            .iter()
            .flat_map(|(group, offsets)| {
                offsets.iter().map(|(partition, value)| {
                    let key = OffsetKey {
                        group: group.clone(),
                        partition: partition.clone(),
                    };
                    (key, Some(value.clone()))
                })
            })
            .collect()
    }

    /// Tombstones for every entry whose key `doomed` selects.
    fn tombstones(&self, doomed: impl Fn(&str, &TopicPartition) -> bool) -> Vec<Update> {
        self.groups
            .iter()
            .flat_map(|(group, offsets)| {
                offsets
                    .keys()
                    .filter(|partition| doomed(group, partition))
                    .map(|partition| {
                        let key = OffsetKey {
                            group: group.clone(),
                            partition: partition.clone(),
                        };
                        (key, None)
                    })
            })
            .collect()
    }
}

/// The committed offsets of every group, kept in `<data-dir>/__consumer_offsets/`.
///
/// The log is one partition log with flush policy `always`; its records are described in
/// the `record` module and `docs/groups.md`. At open the whole log (from its start) is
/// replayed into memory: the last value per key wins, a tombstone deletes its key, and an
/// unreadable record is an error.
///
/// Thread-safe. Methods that write ([`OffsetStore::commit`], the deletions, compaction,
/// [`OffsetStore::close`]) block on file I/O: call them on a blocking thread. Reads
/// ([`OffsetStore::fetch`], [`OffsetStore::groups`]) only take a lock on the map.
#[derive(Debug)]
pub struct OffsetStore {
    /// The log's directory, for errors.
    dir: PathBuf,
    /// The log; `None` once closed. Commits hold the read lock from their append to their
    /// apply; compaction, deletions and close hold the write lock, so they see no commit
    /// in flight and hold new ones back.
    log: RwLock<Option<SharedLog>>,
    /// Appended but not yet durable updates, in log order. Appends happen under this lock, so
    /// its order is the log's.
    pending: Mutex<VecDeque<PendingUpdates>>,
    /// What is durable, in memory.
    offsets: RwLock<OffsetMap>,
    /// Compaction is considered once the log holds more records than this.
    compact_min_records: u64,
    /// Set while a compaction runs, so that only one is started at a time.
    compacting: AtomicBool,
}

impl OffsetStore {
    /// The name of the store's directory inside the data directory. A topic's partition
    /// directory is always `<topic>-<partition>`, so it never has this name.
    pub const DIR_NAME: &'static str = "__consumer_offsets";

    /// Opens (creating if needed) the store in `dir`: recovers the log as any partition log,
    /// then replays it from its start. Blocking. Compaction is considered once the log holds
    /// more than `compact_min_records` records.
    pub fn open(dir: &Path, compact_min_records: u64) -> OffsetsResult<OffsetStore> {
        let log = PartitionLog::open(dir, log_config(), SystemTime::now())?;
        let offsets = replay(&log)?;
        tracing::info!(
            dir = %dir.display(),
            groups = offsets.groups.len(),
            entries = offsets.entries,
            records = log.log_end().0 - log.log_start().0,
            "loaded committed offsets"
        );
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            log: RwLock::new(Some(SharedLog::new(log))),
            pending: Mutex::new(VecDeque::new()),
            offsets: RwLock::new(offsets),
            compact_min_records,
            compacting: AtomicBool::new(false),
        })
    }

    /// Stores a group's offsets: one record batch, returned once fsynced. Blocking. All or
    /// nothing: on an error nothing is applied (although after a failed fsync the batch may
    /// still turn up at the next start).
    pub fn commit(
        &self,
        group: &str,
        entries: &[(TopicPartition, CommittedOffset)],
    ) -> OffsetsResult<()> {
        let pending = self.append_commit(group, entries)?;
        self.wait_durable(pending)
    }

    /// The first half of [`OffsetStore::commit`]: appends the batch (to the page cache) and
    /// returns without waiting for the fsync, so that a caller can append commits in order
    /// and wait for them concurrently. Blocking.
    pub fn append_commit(
        &self,
        group: &str,
        entries: &[(TopicPartition, CommittedOffset)],
    ) -> OffsetsResult<PendingCommit> {
        if entries.is_empty() {
            return Ok(PendingCommit { log_end: Offset(0) });
        }
        check_length("group id", group)?;
        let mut updates = Vec::with_capacity(entries.len());
        for (partition, value) in entries {
            check_length("topic name", &partition.topic)?;
            if let Some(metadata) = &value.metadata {
                check_length("metadata", metadata)?;
            }
            let key = OffsetKey {
                group: group.to_string(),
                partition: partition.clone(),
            };
            updates.push((key, Some(value.clone())));
        }
        let batch = encode_one_batch(&updates)?;
        let guard = self.read_log();
        let log = guard.as_ref().ok_or(OffsetsError::Closed)?;
        let log_end = self.append_batches(log, vec![(batch, updates)])?;
        Ok(PendingCommit { log_end })
    }

    /// The second half of [`OffsetStore::commit`]: returns once the commit is durable (an
    /// fsync, shared with concurrent commits) and applied. Blocking.
    pub fn wait_durable(&self, pending: PendingCommit) -> OffsetsResult<()> {
        let guard = self.read_log();
        let log = guard.as_ref().ok_or(OffsetsError::Closed)?;
        log.flush_to(pending.log_end)?;
        self.apply_durable(log.flushed());
        Ok(())
    }

    /// The group's committed offsets: with `filter`, one answer per partition asked for
    /// (`None` where the group has no offset); without, every offset the group has.
    pub fn fetch(
        &self,
        group: &str,
        filter: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let offsets = self.read_offsets();
        let committed = offsets.groups.get(group);
        match filter {
            Some(partitions) => partitions
                .iter()
                .map(|partition| {
                    let value = committed.and_then(|committed| committed.get(partition));
                    (partition.clone(), value.cloned())
                })
                .collect(),
            None => committed
                .into_iter()
                .flatten()
                .map(|(partition, value)| (partition.clone(), Some(value.clone())))
                .collect(),
        }
    }

    /// The groups that have committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.read_offsets().groups.keys().cloned().collect()
    }

    /// Whether the group has committed offsets.
    pub fn has_group(&self, group: &str) -> bool {
        self.read_offsets().groups.contains_key(group)
    }

    /// Deletes every offset of the group durably; `false` if it had none. Blocking.
    pub fn delete_group(&self, group: &str) -> OffsetsResult<bool> {
        self.delete_where(|candidate, _| candidate == group)
            .map(|deleted| deleted > 0)
    }

    /// Deletes every group's offsets of the topic durably; returns how many. Blocking.
    pub fn delete_topic(&self, topic: &str) -> OffsetsResult<usize> {
        self.delete_where(|_, partition| &*partition.topic == topic)
    }

    /// Whether the log holds more than `compact_min_records` records and more than twice as
    /// many as there are live entries; `false` while a compaction or deletion holds the log.
    /// Does no I/O.
    pub fn needs_compaction(&self) -> bool {
        let Ok(guard) = self.log.try_read() else {
            return false;
        };
        let Some(log) = guard.as_ref() else {
            return false;
        };
        let records = log.with_log(record_count).unwrap_or(0);
        let live = self.read_offsets().entries;
        records > self.compact_min_records && records > live.saturating_mul(2)
    }

    /// Compacts the log if [`OffsetStore::needs_compaction`] and no other compaction runs.
    /// Blocking.
    pub fn maybe_compact(&self) -> OffsetsResult<Option<CompactionOutcome>> {
        if !self.needs_compaction() || self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let outcome = self.compact();
        self.compacting.store(false, Ordering::Release);
        outcome.map(Some)
    }

    /// Compacts the log: rolls a new segment, appends every live entry (in batches), fsyncs,
    /// then advances the log start to the first offset of that copy, which deletes the older
    /// segments. Commits are held back meanwhile. Blocking.
    ///
    /// A crash at any point leaves a log whose replay gives the same map: before the log
    /// start moves, the old records are all there and the copy only repeats their values;
    /// after, the copy is complete and durable.
    pub fn compact(&self) -> OffsetsResult<CompactionOutcome> {
        let guard = self.write_log();
        let log = guard.as_ref().ok_or(OffsetsError::Closed)?;
        self.apply_everything(log)?;
        let records_before = log.with_log(record_count)?;
        let (copy_start, live_entries) = self.copy_live_entries(log)?;
        let advanced = log.with_log_mut(|log| log.advance_log_start(copy_start))??;
        let outcome = CompactionOutcome {
            records_before,
            live_entries,
            deleted_segments: advanced.deleted_segments,
            log_start: advanced.log_start,
        };
        tracing::info!(
            dir = %self.dir.display(),
            records_before,
            live_entries,
            deleted_segments = outcome.deleted_segments,
            log_start = %outcome.log_start,
            "compacted committed offsets"
        );
        Ok(outcome)
    }

    /// The first steps of compaction: roll, append every live entry, fsync. Returns where
    /// the copy starts and how many entries it holds. The caller holds the write lock and
    /// applied every appended update first ([`OffsetStore::apply_everything`]), so the map is
    /// the whole log's state.
    pub(super) fn copy_live_entries(&self, log: &SharedLog) -> OffsetsResult<(Offset, u64)> {
        log.with_log_mut(|log| log.roll(SystemTime::now()))??;
        let copy_start = log.log_end();
        let live = self.read_offsets().live();
        let live_entries = live.len() as u64;
        for (mut batch, _) in encode_batches(live)? {
            log.append_unflushed(&mut batch, SystemTime::now())?;
        }
        log.flush_to(log.log_end())?;
        Ok((copy_start, live_entries))
    }

    /// Writes the log's checkpoint if its recovery point or start moved since the last one,
    /// so that recovery after a crash scans only what came since. Blocking.
    pub fn checkpoint(&self) -> OffsetsResult<()> {
        let guard = self.read_log();
        if let Some(log) = guard.as_ref() {
            log.with_log_mut(|log| log.checkpoint_if_changed())??;
        }
        Ok(())
    }

    /// Closes the log cleanly. Later writes fail with [`OffsetsError::Closed`]; reads still
    /// answer from memory. Blocking.
    pub fn close(&self) -> OffsetsResult<()> {
        match self.write_log().take() {
            Some(log) => Ok(log.close()?),
            None => Ok(()),
        }
    }

    /// Appends tombstones for every entry `doomed` selects, in batches, durably. Holds
    /// commits back meanwhile, so that the map it reads is exactly what the log says.
    fn delete_where(&self, doomed: impl Fn(&str, &TopicPartition) -> bool) -> OffsetsResult<usize> {
        let guard = self.write_log();
        let log = guard.as_ref().ok_or(OffsetsError::Closed)?;
        self.apply_everything(log)?;
        let tombstones = self.read_offsets().tombstones(doomed);
        let count = tombstones.len();
        if count > 0 {
            self.append_batches(log, encode_batches(tombstones)?)?;
            self.apply_everything(log)?;
        }
        Ok(count)
    }

    /// Appends each batch and queues its updates, to be applied once durable; returns the
    /// log end after the last one.
    fn append_batches(
        &self,
        log: &SharedLog,
        batches: Vec<(Vec<u8>, Vec<Update>)>,
    ) -> OffsetsResult<Offset> {
        let mut pending = self.lock_pending();
        let mut log_end = log.log_end();
        for (mut batch, updates) in batches {
            log_end = log.append_unflushed(&mut batch, SystemTime::now())?.log_end;
            pending.push_back(PendingUpdates { log_end, updates });
        }
        Ok(log_end)
    }

    /// Makes everything appended durable and applies it. With the write lock held, the map
    /// is then exactly what a replay of the log would give.
    fn apply_everything(&self, log: &SharedLog) -> OffsetsResult<()> {
        log.flush_to(log.log_end())?;
        self.apply_durable(log.flushed());
        Ok(())
    }

    /// Applies the pending updates that an fsync has covered, oldest first. Whoever gets here
    /// first applies everyone's, so the map follows the log's order.
    fn apply_durable(&self, flushed: Offset) {
        let mut pending = self.lock_pending();
        let mut offsets = self.write_offsets();
        while pending
            .front()
            .is_some_and(|front| front.log_end <= flushed)
        {
            if let Some(durable) = pending.pop_front() {
                for update in durable.updates {
                    offsets.apply(update);
                }
            }
        }
    }

    /// The log, exclusively (tests use it to stop compaction midway).
    pub(super) fn write_log(&self) -> RwLockWriteGuard<'_, Option<SharedLog>> {
        // A panic under this lock leaves the log consistent: its own lock guards it.
        self.log.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_log(&self) -> RwLockReadGuard<'_, Option<SharedLog>> {
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_pending(&self) -> MutexGuard<'_, VecDeque<PendingUpdates>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_offsets(&self) -> RwLockReadGuard<'_, OffsetMap> {
        self.offsets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_offsets(&self) -> RwLockWriteGuard<'_, OffsetMap> {
        self.offsets.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The offsets log's settings: fsync before acknowledging, never deleted by age or size,
/// room for the largest batch the format allows.
fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        batch_bytes_max: mq_protocol::limits::BATCH_BYTES_MAX as u32,
        retention: None,
        retention_bytes: None,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

/// Records between the log start and the log end (offsets are dense: one per record).
fn record_count(log: &PartitionLog) -> u64 {
    log.log_end().0 - log.log_start().0
}

fn check_length(what: &'static str, text: &str) -> OffsetsResult<()> {
    if text.len() > STRING_BYTES_MAX {
        return Err(OffsetsError::TooLong {
            what,
            bytes: text.len(),
            limit: STRING_BYTES_MAX,
        });
    }
    Ok(())
}

fn to_record(timestamp_ms: i64, (key, value): &Update) -> Record {
    Record::new(
        timestamp_ms,
        Some(encode_key(key)),
        value.as_ref().map(encode_value),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Encodes `updates` as exactly one batch.
fn encode_one_batch(updates: &[Update]) -> OffsetsResult<Vec<u8>> {
    let too_large = || OffsetsError::CommitTooLarge {
        records: updates.len(),
    };
    let timestamp_ms = now_ms();
    let mut builder = BatchBuilder::new(Compression::None);
    for update in updates {
        builder
            .append(&to_record(timestamp_ms, update))
            .map_err(|_| too_large())?;
    }
    Ok(builder.seal(0).map_err(|_| too_large())?.to_vec())
}

/// Encodes `updates` as batches of about [`BATCH_BYTES_TARGET`], each with its updates.
fn encode_batches(updates: Vec<Update>) -> OffsetsResult<Vec<(Vec<u8>, Vec<Update>)>> {
    let timestamp_ms = now_ms();
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new(Compression::None);
    let mut batch_updates = Vec::new();
    for update in updates {
        let record = to_record(timestamp_ms, &update);
        let full = builder.record_count() >= BATCH_RECORDS_TARGET
            || builder.estimated_bytes_with(&record) > BATCH_BYTES_TARGET;
        if full && !builder.is_empty() {
            let sealed = std::mem::replace(&mut builder, BatchBuilder::new(Compression::None));
            batches.push((seal(sealed)?, std::mem::take(&mut batch_updates)));
        }
        builder
            .append(&record)
            .map_err(|_| OffsetsError::CommitTooLarge { records: 1 })?;
        batch_updates.push(update);
    }
    if !builder.is_empty() {
        batches.push((seal(builder)?, batch_updates));
    }
    Ok(batches)
}

fn seal(builder: BatchBuilder) -> OffsetsResult<Vec<u8>> {
    let records = builder.record_count();
    Ok(builder
        .seal(0)
        .map_err(|_| OffsetsError::CommitTooLarge { records })?
        .to_vec())
}

/// Reads the log from its start into a map.
fn replay(log: &PartitionLog) -> OffsetsResult<OffsetMap> {
    let mut offsets = OffsetMap::default();
    let mut next = log.log_start();
    while next < log.log_end() {
        let chunk = log.read(next, REPLAY_READ_BYTES)?;
        if chunk.is_empty() {
            return Err(corrupt(log, next, "the log ends before its log end offset"));
        }
        for found in BatchIter::new(&chunk) {
            let found = found.map_err(|error| corrupt(log, next, error))?;
            let batch = chunk.slice_ref(found.bytes);
            replay_batch(log, &batch, &mut offsets)?;
            next = Offset::from_wire(found.header.next_offset())
                .ok_or_else(|| corrupt(log, next, "negative offset"))?;
        }
    }
    Ok(offsets)
}

fn replay_batch(log: &PartitionLog, batch: &Bytes, offsets: &mut OffsetMap) -> OffsetsResult<()> {
    let base_offset = mq_protocol::BatchHeader::parse(batch)
        .ok()
        .and_then(|header| Offset::from_wire(header.base_offset))
        .unwrap_or_default();
    let records = record::records(batch).map_err(|error| corrupt(log, base_offset, error))?;
    for found in records {
        let view = found.map_err(|error| corrupt(log, base_offset, error))?;
        let offset = Offset::from_wire(view.offset).unwrap_or_default();
        if offset < log.log_start() {
            continue;
        }
        let key_bytes = view
            .key
            .ok_or_else(|| corrupt(log, offset, "a record without a key"))?;
        let key = decode_key(&key_bytes).map_err(|reason| corrupt(log, offset, reason))?;
        let value = match view.value {
            Some(bytes) => {
                Some(decode_value(&bytes).map_err(|reason| corrupt(log, offset, reason))?)
            }
            None => None,
        };
        offsets.apply((key, value));
    }
    Ok(())
}

fn corrupt(log: &PartitionLog, offset: Offset, reason: impl ToString) -> OffsetsError {
    OffsetsError::Corrupt {
        path: log.dir().to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}
