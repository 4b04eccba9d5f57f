//! [`PartitionLog`]: one partition's ordered segments, with append, read, roll, flush,
//! retention and truncation.
//!
//! Offsets are assigned here and only here: an append patches each batch's base offset (and
//! leader epoch) in place, so the bytes written are the bytes received. Offsets are dense:
//! each batch starts at the offset after the previous one's last.
//!
//! Not thread-safe: every mutation takes `&mut self`, reads take `&self`. Sharing a log
//! between threads, and group commit, are [`super::SharedLog`]'s job.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mq_protocol::batch::{self, BatchHeader, BatchIter};
use mq_protocol::Offset;

use super::checkpoint::{self, Checkpoint, CleanShutdown};
use super::config::LogConfig;
use super::error::{LogError, LogResult};
use super::producers::{Check, Producers, PRODUCER_STATE_SCAN_BYTES};
use super::recovery;
use super::retention;
use super::segment::{OpenSegments, ReadPlan, Segment, SegmentContext};

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record appended.
    pub base_offset: Offset,
    /// Offset given to the last record appended.
    pub last_offset: Offset,
    /// The log end offset after the append (`last_offset + 1`).
    pub log_end: Offset,
    /// Number of batches appended.
    pub batches: usize,
    /// Bytes appended.
    pub bytes: usize,
}

/// What a retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Bytes of log deleted.
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start: Offset,
}

/// The files to fsync to make the log durable up to `up_to`, taken under the log's lock and
/// synced outside it (see [`PartitionLog::flush_job`]).
#[derive(Debug)]
pub struct FlushJob {
    /// Segment files with data the recovery point does not cover yet.
    files: Vec<(Arc<fs::File>, PathBuf)>,
    /// The partition directory, if files were created or deleted in it since the last sync.
    dir: Option<PathBuf>,
    /// The log end offset when the job was made: what it makes durable.
    up_to: Offset,
    /// Directory changes counted when the job was made.
    dir_changes: u64,
    /// Truncations counted when the job was made: a truncation voids the job.
    truncations: u64,
}

impl FlushJob {
    /// The offset below which everything is durable once the job ran.
    pub fn up_to(&self) -> Offset {
        self.up_to
    }

    /// Runs the fsyncs: file data, then the directory. Blocking.
    pub fn sync(&self) -> LogResult<()> {
        for (file, path) in &self.files {
            file.sync_data().map_err(LogError::io(path))?;
        }
        if let Some(dir) = &self.dir {
            checkpoint::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// One partition's log: a directory of segments.
#[derive(Debug)]
pub struct PartitionLog {
    /// The partition directory.
    dir: PathBuf,
    /// Settings.
    config: LogConfig,
    /// Which sealed segments have their files open; bounds this log's descriptors.
    open_segments: Arc<OpenSegments>,
    /// Segments by base offset; the last one is active.
    segments: BTreeMap<Offset, Segment>,
    /// The first readable offset.
    log_start: Offset,
    /// The offset the next appended record gets.
    log_end: Offset,
    /// Every offset below this is durable.
    recovery_point: Offset,
    /// Written into every appended batch's header.
    leader_epoch: i32,
    /// The log start and recovery point of the last checkpoint written since opening (which
    /// says "not cleanly closed"); `None` while the checkpoint on disk still says "clean". It
    /// must say "not clean" before anything changes on disk, or a crash could pass for a
    /// clean shutdown.
    checkpointed: Option<(Offset, Offset)>,
    /// Files created or deleted in the directory, counted; see `dir_synced`.
    dir_changes: u64,
    /// `dir_changes` as of the last directory fsync.
    dir_synced: u64,
    /// Truncations so far; a flush job made before one must not advance the recovery point.
    truncations: u64,
    /// Set when a write or fsync failed in a way that leaves the disk's state unknown.
    offline: bool,
    /// Idempotent producers' sequences (in memory; see the `producers` module).
    producers: Producers,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if needed, and recovers it if it was
    /// not closed cleanly (see the `recovery` module).
    pub fn open(dir: &Path, config: LogConfig, now: SystemTime) -> LogResult<PartitionLog> {
        config.validate()?;
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(LogError::io(dir))?;
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent)?;
            }
        }
        let open_segments = OpenSegments::new(config.open_sealed_segments_max);
        let context = SegmentContext {
            config: &config,
            open_segments: &open_segments,
            now,
        };
        let loaded = recovery::load(dir, &context)?;
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            open_segments,
            segments: loaded.segments,
            log_start: loaded.log_start,
            log_end: loaded.log_end,
            recovery_point: loaded.log_end,
            leader_epoch: 0,
            checkpointed: None,
            dir_changes: 0,
            dir_synced: 0,
            truncations: 0,
            offline: false,
            producers: Producers::default(),
        };
        if !loaded.clean {
            // Recovery fsynced what it kept; record that, and that we are open.
            log.write_checkpoint()?;
        }
        // Idempotent producers' state, from the batches at the end of the log: a producer
        // retrying a batch whose answer was lost in a restart is recognised.
        for header in log
            .active()
            .tail_headers(PRODUCER_STATE_SCAN_BYTES, &log.config)?
        {
            log.producers.record(&header);
        }
        Ok(log)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first readable offset.
    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    /// The offset the next record will get.
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// Everything below this offset is durable on disk.
    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of record batches on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<Offset> {
        self.segments.keys().copied().collect()
    }

    /// Sets the leader epoch written into the headers of batches appended from now on.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = epoch;
    }

    /// Appends one or more whole batches (concatenated in `batches`) after validating every
    /// one of them (length, magic, CRC, dense record counts). Offsets are assigned by
    /// patching the headers in `batches`. All or nothing: an invalid batch anywhere rejects
    /// the whole append before anything is written.
    ///
    /// Durability is the caller's: see [`PartitionLog::flush`] and [`super::SharedLog`].
    pub fn append(&mut self, batches: &mut [u8], now: SystemTime) -> LogResult<AppendInfo> {
        match self.stage(batches, AppendKind::Leader)? {
            Staged::Duplicate(info) => Ok(info),
            Staged::Ready(staged) => self.write_staged(batches, staged, now),
        }
    }

    /// Appends like [`PartitionLog::append`] if that is only a write into the active
    /// segment; `None`, with nothing written, if it would first have to roll a segment or
    /// write the log's checkpoint (file creation, fsyncs). For callers that must not wait
    /// on those: an async runtime's worker (see `SharedLog::try_append_unflushed_if`).
    pub fn append_in_place(
        &mut self,
        batches: &mut [u8],
        now: SystemTime,
    ) -> LogResult<Option<AppendInfo>> {
        match self.stage(batches, AppendKind::Leader)? {
            Staged::Duplicate(info) => Ok(Some(info)),
            // The offsets patched into `batches` are rewritten by whichever append takes
            // them next.
            Staged::Ready(staged)
                if self.checkpointed.is_none() || self.roll_needed(batches, &staged, now) =>
            {
                Ok(None)
            }
            Staged::Ready(staged) => self.write_staged(batches, staged, now).map(Some),
        }
    }

    /// Appends batches copied from another broker's log of this partition, keeping their
    /// offsets: each batch must start at this log's end (a copy starts with
    /// [`PartitionLog::reset_to`] at the source's log start). Producers' sequences are
    /// recorded but not checked: the source checked them, and a copy may begin in the
    /// middle of a producer's sequence.
    pub fn append_copy(&mut self, batches: &mut [u8], now: SystemTime) -> LogResult<AppendInfo> {
        match self.stage(batches, AppendKind::Copy)? {
            Staged::Duplicate(info) => Ok(info),
            Staged::Ready(staged) => self.write_staged(batches, staged, now),
        }
    }

    /// An append's checks and offsets, before anything is written: validates the batches,
    /// checks producers' sequences (a repeated batch is answered with its original offsets)
    /// and patches each header's base offset and leader epoch.
    fn stage(&self, batches: &mut [u8], kind: AppendKind) -> LogResult<Staged> {
        self.check_online()?;
        if batches.len() > self.config.batch_bytes_max as usize {
            return Err(LogError::BatchTooLarge {
                bytes: batches.len(),
                limit: self.config.batch_bytes_max as usize,
            });
        }
        let mut headers = validate_append(batches)?;
        if kind == AppendKind::Leader {
            if let Some(duplicate) = self.check_sequences(&headers)? {
                return Ok(Staged::Duplicate(duplicate));
            }
        }
        let base_offset = self.log_end;
        let mut next_offset = base_offset;
        for (position, header) in &mut headers {
            if kind == AppendKind::Copy && header.base_offset != next_offset.to_wire() {
                return Err(LogError::CopyGap {
                    log_end: next_offset,
                    found: header.base_offset,
                });
            }
            let count = u64::try_from(header.last_offset_delta).unwrap_or(0) + 1;
            if next_offset
                .0
                .checked_add(count)
                .is_none_or(|end| end > Offset::MAX.0)
            {
                return Err(LogError::OffsetOverflow);
            }
            let batch_bytes = &mut batches[*position..];
            batch::set_base_offset(batch_bytes, next_offset.to_wire());
            batch::set_partition_leader_epoch(batch_bytes, self.leader_epoch);
            header.base_offset = next_offset.to_wire();
            header.partition_leader_epoch = self.leader_epoch;
            next_offset = next_offset.plus(count);
        }
        Ok(Staged::Ready(StagedAppend {
            headers,
            base_offset,
            next_offset,
        }))
    }

    /// Writes a staged append: the checkpoint first if the log has none since it opened,
    /// a new segment if the active one cannot take it, then the batches.
    fn write_staged(
        &mut self,
        batches: &[u8],
        staged: StagedAppend,
        now: SystemTime,
    ) -> LogResult<AppendInfo> {
        let roll = self.roll_needed(batches, &staged, now);
        self.mark_dirty()?;
        if roll {
            self.roll(now)?;
        }
        let StagedAppend {
            headers,
            base_offset,
            next_offset,
        } = staged;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment");
        if let Err(error) = active.append(batches, &headers, &self.config) {
            // The segment cut off any partial write; if the failure left the file longer
            // than our view of it, later appends would still be right, but be safe.
            tracing::error!(dir = %self.dir.display(), %error, "append failed");
            if active_size_mismatch(self.active()) {
                self.offline = true;
            }
            return Err(error);
        }
        self.log_end = next_offset;
        for (_, header) in &headers {
            self.producers.record(header);
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: Offset(next_offset.0 - 1),
            log_end: next_offset,
            batches: headers.len(),
            bytes: batches.len(),
        })
    }

    /// Reads whole batches starting with the one that holds `from`, up to about `max_bytes`
    /// (at least one whole batch, so a consumer always makes progress). Empty at the log end.
    pub fn read(&self, from: Offset, max_bytes: u64) -> LogResult<Bytes> {
        match self.plan_read(from, max_bytes)? {
            Some(plan) => plan.execute(),
            None => Ok(Bytes::new()),
        }
    }

    /// Like [`PartitionLog::read`], but only locates the bytes: the returned plan reads them
    /// later, without the log (so without its lock). `None` at the log end.
    pub fn plan_read(&self, from: Offset, max_bytes: u64) -> LogResult<Option<ReadPlan>> {
        if from < self.log_start || from > self.log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                log_start: self.log_start,
                log_end: self.log_end,
            });
        }
        if from == self.log_end {
            return Ok(None);
        }
        // The segment with the largest base offset not above `from`, then later ones if
        // `from` lies past that segment's last batch (possible only at segment boundaries).
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(Offset(0), |(base, _)| *base);
        for segment in self.segments.range(first..).map(|(_, segment)| segment) {
            if let Some(plan) = segment.plan_read(from, max_bytes, &self.config)? {
                return Ok(Some(plan));
            }
        }
        Ok(None)
    }

    /// The base offset of the first batch whose max timestamp is at or after `timestamp`
    /// (milliseconds since the epoch); `None` if every record is older.
    ///
    /// Batch granularity: records of that batch older than `timestamp` are the reader's to
    /// skip, as the broker never looks inside batches.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> LogResult<Option<Offset>> {
        for segment in self.segments.values() {
            if let Some(offset) = segment.find_by_timestamp(timestamp, &self.config)? {
                return Ok(Some(offset.max(self.log_start)));
            }
        }
        Ok(None)
    }

    /// Seals the active segment and starts a new one at the log end, unless the active
    /// segment is empty.
    pub fn roll(&mut self, now: SystemTime) -> LogResult<()> {
        self.check_online()?;
        if self.active().size() == 0 {
            return Ok(());
        }
        self.mark_dirty()?;
        self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, self.log_end, &self.context(now))?;
        tracing::info!(dir = %self.dir.display(), base_offset = %self.log_end, "rolled segment");
        self.segments.insert(self.log_end, segment);
        self.dir_changes += 1;
        Ok(())
    }

    /// Makes everything appended so far durable. Blocking.
    pub fn flush(&mut self) -> LogResult<()> {
        let job = self.flush_job()?;
        let result = job.sync();
        self.complete_flush(&job, result)
    }

    /// What to fsync to make the log durable up to its current end. With
    /// [`PartitionLog::complete_flush`] this lets a caller fsync without holding the log:
    /// appends continue meanwhile, and the next job covers them (group commit).
    pub fn flush_job(&self) -> LogResult<FlushJob> {
        self.check_online()?;
        let first_unflushed = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(Offset(0), |(base, _)| *base);
        let mut files = Vec::new();
        if self.recovery_point < self.log_end {
            for segment in self
                .segments
                .range(first_unflushed..)
                .map(|(_, segment)| segment)
            {
                files.push((segment.file(&self.config)?, segment.paths().log.clone()));
            }
        }
        Ok(FlushJob {
            files,
            dir: (self.dir_changes != self.dir_synced).then(|| self.dir.clone()),
            up_to: self.log_end,
            dir_changes: self.dir_changes,
            truncations: self.truncations,
        })
    }

    /// Records the outcome of a [`FlushJob`]: on success the recovery point advances to what
    /// it covered; on failure the log goes offline, because after a failed fsync the kernel
    /// may have dropped the dirty pages and what is on disk is unknown.
    pub fn complete_flush(&mut self, job: &FlushJob, result: LogResult<()>) -> LogResult<()> {
        if let Err(error) = result {
            tracing::error!(dir = %self.dir.display(), %error, "fsync failed; taking the log offline");
            self.offline = true;
            return Err(error);
        }
        if job.truncations == self.truncations {
            self.recovery_point = self.recovery_point.max(job.up_to).min(self.log_end);
        }
        self.dir_synced = self.dir_synced.max(job.dir_changes);
        Ok(())
    }

    /// Deletes the oldest sealed segments that retention (by age and by size) no longer
    /// keeps. Advances the log start offset and checkpoints it durably first, so that a crash
    /// midway leaves segments below the log start, which the next open deletes.
    pub fn apply_retention(&mut self, now: SystemTime) -> LogResult<RetentionOutcome> {
        self.check_online()?;
        let sealed: Vec<&Segment> = self.segments.values().filter(|s| !s.is_active()).collect();
        let by_time = match self.config.retention {
            Some(retention) => {
                let cutoff = millis_since_epoch(now).saturating_sub(millis(retention));
                let mut failure = None;
                let timestamps =
                    sealed
                        .iter()
                        .map_while(|segment| match segment.max_timestamp(&self.config) {
                            Ok(max) => Some(max),
                            Err(error) => {
                                failure = Some(error);
                                None
                            }
                        });
                let count = retention::expired_by_time(timestamps, cutoff);
                if let Some(error) = failure {
                    return Err(error);
                }
                count
            }
            None => 0,
        };
        let by_size = match self.config.retention_bytes {
            Some(limit) => retention::expired_by_size(
                sealed.iter().map(|segment| segment.size()),
                self.size_bytes(),
                limit,
            ),
            None => 0,
        };
        let count = by_time.max(by_size).min(sealed.len());
        if count == 0 {
            return Ok(RetentionOutcome {
                log_start: self.log_start,
                ..RetentionOutcome::default()
            });
        }
        let first_kept = self
            .segments
            .keys()
            .nth(count)
            .copied()
            .expect("the active segment is never deleted");
        self.delete_oldest_segments(count, first_kept, "retention")
    }

    /// Advances the log start to `offset` and deletes the sealed segments wholly below it
    /// (those whose next segment starts at or below `offset`); the active segment stays. For
    /// a log that drops its own old records, such as the committed-offsets log after it
    /// copied its live entries. Like retention, it checkpoints the new log start durably
    /// before deleting any file. An `offset` at or below the log start changes nothing.
    pub fn advance_log_start(&mut self, offset: Offset) -> LogResult<RetentionOutcome> {
        self.check_online()?;
        if offset > self.log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end: self.log_end,
            });
        }
        if offset <= self.log_start {
            return Ok(RetentionOutcome {
                log_start: self.log_start,
                ..RetentionOutcome::default()
            });
        }
        let bases: Vec<Offset> = self.segments.keys().copied().collect();
        let count = bases
            .windows(2)
            .take_while(|pair| pair[1] <= offset)
            .count();
        self.delete_oldest_segments(count, offset, "log start advanced")
    }

    /// Moves the log start up to `log_start` and checkpoints it durably, then deletes the
    /// `count` oldest segments (all sealed and wholly below `log_start`). A crash between the
    /// checkpoint and the deletions leaves segments below the log start, which the next open
    /// deletes.
    fn delete_oldest_segments(
        &mut self,
        count: usize,
        log_start: Offset,
        reason: &'static str,
    ) -> LogResult<RetentionOutcome> {
        assert!(
            count < self.segments.len(),
            "the active segment is never deleted"
        );
        if count > 0 {
            let first_kept = self.segments.keys().nth(count).expect("count < len");
            assert!(
                *first_kept <= log_start,
                "only segments wholly below the log start are deleted"
            );
        }
        let doomed: Vec<Offset> = self.segments.keys().take(count).copied().collect();
        self.mark_dirty()?;
        self.log_start = self.log_start.max(log_start);
        self.write_checkpoint()?;
        let mut outcome = RetentionOutcome {
            log_start: self.log_start,
            ..RetentionOutcome::default()
        };
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                outcome.deleted_bytes += segment.size();
                outcome.deleted_segments += 1;
                segment.delete()?;
            }
        }
        if outcome.deleted_segments > 0 {
            self.dir_changes += 1;
            tracing::info!(
                dir = %self.dir.display(),
                reason,
                deleted_segments = outcome.deleted_segments,
                deleted_bytes = outcome.deleted_bytes,
                log_start = %self.log_start,
                "deleted segments below the log start"
            );
        }
        Ok(outcome)
    }

    /// Removes every record at or after `offset`. A batch holding `offset` goes whole, so the
    /// log then ends at the largest batch boundary not above `offset`. Truncating to at or
    /// below the log start empties the log and restarts it at `offset`.
    pub fn truncate_to(&mut self, offset: Offset, now: SystemTime) -> LogResult<()> {
        self.check_online()?;
        if offset >= self.log_end {
            return Ok(());
        }
        self.mark_dirty()?;
        // Lower the recovery point durably first: data past it is about to be rewritten.
        self.recovery_point = self.recovery_point.min(offset);
        self.truncations += 1;
        self.write_checkpoint()?;
        if offset <= self.log_start {
            return self.restart_at(offset, now);
        }
        let doomed: Vec<Offset> = self
            .segments
            .range(offset..)
            .map(|(base, _)| *base)
            .collect();
        let keep_base = *self
            .segments
            .range(..offset)
            .next_back()
            .map(|(base, _)| base)
            .expect("offset > log_start, so a segment starts below it");
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        self.dir_changes += 1;
        let context = SegmentContext {
            config: &self.config,
            open_segments: &self.open_segments,
            now,
        };
        let segment = self
            .segments
            .get_mut(&keep_base)
            .expect("the kept segment is in the map");
        segment.reactivate(&context)?;
        segment.truncate_to(offset, &self.config)?;
        self.log_end = segment
            .next_offset()
            .expect("a reactivated segment is active");
        self.recovery_point = self.recovery_point.min(self.log_end);
        tracing::info!(dir = %self.dir.display(), log_end = %self.log_end, "truncated log");
        Ok(())
    }

    /// Deletes every record and starts the log empty at `offset`: a copy of another
    /// broker's log begins where that log begins.
    pub fn reset_to(&mut self, offset: Offset, now: SystemTime) -> LogResult<()> {
        self.check_online()?;
        self.mark_dirty()?;
        self.truncations += 1;
        self.restart_at(offset, now)
    }

    /// Deletes every segment and starts an empty log at `offset`.
    fn restart_at(&mut self, offset: Offset, now: SystemTime) -> LogResult<()> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete()?;
        }
        self.segments.insert(
            offset,
            Segment::create(&self.dir, offset, &self.context(now))?,
        );
        self.log_start = offset;
        self.log_end = offset;
        self.recovery_point = offset;
        self.dir_changes += 1;
        self.write_checkpoint()
    }

    /// Saves the log start and recovery point durably. Cheap enough to call periodically; a
    /// stale recovery point only means more to scan after a crash.
    pub fn write_checkpoint(&mut self) -> LogResult<()> {
        checkpoint::write(
            &self.dir,
            &Checkpoint {
                log_start: self.log_start,
                recovery_point: self.recovery_point,
                clean: None,
            },
        )?;
        self.checkpointed = Some((self.log_start, self.recovery_point));
        Ok(())
    }

    /// Writes the checkpoint if the log start or recovery point moved since the last one; for
    /// periodic checkpointing, which then costs nothing on idle logs. A log unchanged since a
    /// clean open keeps its clean checkpoint.
    pub fn checkpoint_if_changed(&mut self) -> LogResult<bool> {
        match self.checkpointed {
            Some(written) if written != (self.log_start, self.recovery_point) => {
                self.write_checkpoint()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Flushes everything and records a clean shutdown, so that the next open reads no log
    /// data. Dropping a log without closing it is like a crash: the next open recovers.
    pub fn close(mut self) -> LogResult<()> {
        self.flush()?;
        let active_base = self.active().base_offset();
        // Sealing records the final time index entry and trims the indexes; the next open
        // reopens them writable.
        self.active_mut().seal()?;
        let active_segment_bytes = self.segments[&active_base].size();
        checkpoint::write(
            &self.dir,
            &Checkpoint {
                log_start: self.log_start,
                recovery_point: self.log_end,
                clean: Some(CleanShutdown {
                    log_end: self.log_end,
                    active_segment_bytes,
                }),
            },
        )
    }

    /// Closes the log and deletes its directory with everything in it.
    pub fn delete(self) -> LogResult<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(LogError::io(&dir))?;
        if let Some(parent) = dir.parent() {
            checkpoint::sync_dir(parent)?;
        }
        Ok(())
    }

    /// How many sealed segments have their files open.
    #[cfg(test)]
    pub(crate) fn open_sealed_segments(&self) -> usize {
        self.open_segments.open_count()
    }

    /// Sets the log start as retention would, without deleting anything (to test recovery).
    #[cfg(test)]
    pub(crate) fn with_test_log_start(&mut self, log_start: Offset) {
        self.log_start = log_start;
    }

    /// Whether the staged append of `batches` must first roll the active segment: it
    /// would grow too big or is too old, its indexes are full, or its relative offsets
    /// would overflow. An empty segment is never rolled.
    fn roll_needed(&self, batches: &[u8], staged: &StagedAppend, now: SystemTime) -> bool {
        let (bytes, batch_count, next_offset) =
            (batches.len(), staged.headers.len(), staged.next_offset);
        let active = self.active();
        if active.size() == 0 {
            return false;
        }
        let too_big = active.size() + bytes as u64 > u64::from(self.config.segment_bytes);
        let too_old = active
            .created_at()
            .and_then(|created| now.duration_since(created).ok())
            .is_some_and(|age| age >= self.config.segment_age);
        let index_full = !active.indexes_have_room(batch_count);
        let offsets_overflow = next_offset.0 - active.base_offset().0 > u64::from(u32::MAX);
        too_big || too_old || index_full || offsets_overflow
    }

    fn context(&self, now: SystemTime) -> SegmentContext<'_> {
        SegmentContext {
            config: &self.config,
            open_segments: &self.open_segments,
            now,
        }
    }

    fn mark_dirty(&mut self) -> LogResult<()> {
        if self.checkpointed.is_none() {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Checks the append's batches against their producers' sequences (all or nothing):
    /// `Some` answers a repeated batch with its original offsets, writing nothing.
    fn check_sequences(&self, headers: &[(usize, BatchHeader)]) -> LogResult<Option<AppendInfo>> {
        let mut checked: Vec<BatchHeader> = Vec::new();
        for (_, header) in headers {
            match self.producers.check(header, &checked) {
                Check::Append => checked.push(*header),
                Check::Duplicate {
                    base_offset,
                    last_offset,
                } if headers.len() == 1 => {
                    return Ok(Some(AppendInfo {
                        base_offset,
                        last_offset,
                        log_end: self.log_end,
                        batches: 0,
                        bytes: 0,
                    }));
                }
                Check::Duplicate { .. } | Check::Overlapping => {
                    return Err(LogError::DuplicateSequence {
                        producer_id: header.producer_id,
                        found: header.base_sequence,
                    });
                }
                Check::OutOfOrder { expected } => {
                    return Err(LogError::OutOfOrderSequence {
                        producer_id: header.producer_id,
                        expected,
                        found: header.base_sequence,
                    });
                }
            }
        }
        Ok(None)
    }

    fn check_online(&self) -> LogResult<()> {
        if self.offline {
            return Err(LogError::Offline {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
}

/// Validates every batch of an append; returns each one's position and header.
fn validate_append(batches: &[u8]) -> LogResult<Vec<(usize, BatchHeader)>> {
    if batches.is_empty() {
        return Err(LogError::InvalidBatch {
            position: 0,
            source: mq_protocol::BatchError::Truncated {
                needed: batch::HEADER_BYTES,
                available: 0,
            },
        });
    }
    let mut headers = Vec::new();
    for found in BatchIter::validating(batches) {
        let found = found.map_err(|source| LogError::InvalidBatch {
            position: headers
                .last()
                .map_or(0, |(position, header): &(usize, BatchHeader)| {
                    position + header.total_bytes()
                }),
            source,
        })?;
        found
            .header
            .check_producible()
            .map_err(|source| LogError::InvalidBatch {
                position: found.position,
                source,
            })?;
        headers.push((found.position, found.header));
    }
    Ok(headers)
}

fn active_size_mismatch(active: &Segment) -> bool {
    fs::metadata(&active.paths().log).map_or(true, |metadata| metadata.len() != active.size())
}

/// Whose batches an append carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppendKind {
    /// A producer's: offsets are assigned, producers' sequences checked.
    Leader,
    /// Another broker's log's: offsets are kept.
    Copy,
}

/// An append checked and given its offsets, nothing written yet.
#[derive(Debug)]
enum Staged {
    /// Every batch repeats one already in the log: answered with its original offsets.
    Duplicate(AppendInfo),
    /// To be written.
    Ready(StagedAppend),
}

/// The batches of a staged append and the offsets they were given.
#[derive(Debug)]
struct StagedAppend {
    /// Each batch's position in the append and its (patched) header.
    headers: Vec<(usize, BatchHeader)>,
    /// The first batch's base offset.
    base_offset: Offset,
    /// The log end after the append.
    next_offset: Offset,
}

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) fn millis_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => millis(after),
        Err(before) => -millis(before.duration()),
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
