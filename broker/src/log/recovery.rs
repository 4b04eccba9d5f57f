//! Opening a partition directory: find the segments, and repair the tail after a crash.
//!
//! After a clean shutdown (the checkpoint says so, and the active segment's size agrees) no
//! log data is read: sealed segments are registered by name and size and opened lazily, and
//! only the active segment's indexes are mapped.
//!
//! After a crash, the segments from the one holding the recovery point onwards are scanned:
//! every batch's length, header, CRC and offset continuity is checked, the log is cut at the
//! first bad batch (a torn tail: a warning, not an error), later segments are deleted, and the
//! indexes of the scanned segments are rebuilt. What survives is fsynced, so that the
//! recovery point can be the log end.
//!
//! Leftovers of interrupted operations are cleaned up: `*.tmp` files, index files without a
//! `.log`, and segments wholly below the log start (an interrupted retention pass).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use mq_protocol::Offset;

use super::checkpoint::{self, Checkpoint};
use super::error::{LogError, LogResult};
use super::file_name::SegmentPaths;
use super::file_name::{self, FileKind};
use super::segment::{self, OpenSegments, Segment, SegmentContext};

/// What opening a partition directory found.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The segments; the last is active.
    pub(crate) segments: BTreeMap<Offset, Segment>,
    /// The first readable offset.
    pub(crate) log_start: Offset,
    /// The next offset to assign.
    pub(crate) log_end: Offset,
    /// Whether the log was closed cleanly (nothing was recovered).
    pub(crate) clean: bool,
}

/// The files found in a partition directory.
#[derive(Debug, Default)]
struct Listing {
    /// `.log` files by base offset, with their sizes.
    logs: BTreeMap<Offset, u64>,
    /// Base offsets that have index files.
    indexed: Vec<Offset>,
}

/// Opens the log in `dir` (which exists).
pub(crate) fn load(dir: &Path, context: &SegmentContext<'_>) -> LogResult<Loaded> {
    let checkpoint = checkpoint::read(dir)?;
    let mut listing = list(dir)?;
    remove_orphan_indexes(dir, &listing)?;
    let mut log_start = checkpoint
        .map(|checkpoint| checkpoint.log_start)
        .or_else(|| listing.logs.keys().next().copied())
        .unwrap_or(Offset(0));
    remove_below_log_start(dir, &mut listing, log_start)?;
    // Every readable offset must lie in a segment: if the oldest segments are gone (removed
    // by hand), the log starts at the first one left. Reads and truncation rely on this.
    if let Some(&first_base) = listing.logs.keys().next() {
        log_start = log_start.max(first_base);
    }

    let Some((&last_base, &last_size)) = listing.logs.iter().next_back() else {
        // No data at all: start where the log would continue, never reusing offsets.
        let start = checkpoint.map_or(log_start, |checkpoint| {
            let clean_end = checkpoint.clean.map_or(Offset(0), |clean| clean.log_end);
            log_start.max(checkpoint.recovery_point).max(clean_end)
        });
        let mut segments = BTreeMap::new();
        segments.insert(start, Segment::create(dir, start, context)?);
        checkpoint::sync_dir(dir)?;
        return Ok(Loaded {
            segments,
            log_start: start,
            log_end: start,
            clean: false,
        });
    };

    if let Some(clean) = checkpoint.and_then(|checkpoint| checkpoint.clean) {
        if clean.active_segment_bytes == last_size && clean.log_end >= last_base {
            match Segment::open_active(dir, last_base, last_size, clean.log_end, context) {
                Ok(active) => {
                    let mut segments =
                        lazy_segments(dir, &listing, last_base, context.open_segments);
                    segments.insert(last_base, active);
                    log_start = log_start.min(clean.log_end);
                    return Ok(Loaded {
                        segments,
                        log_start,
                        log_end: clean.log_end,
                        clean: true,
                    });
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "clean shutdown state unusable; recovering");
                }
            }
        } else {
            tracing::warn!(dir = %dir.display(), "checkpoint does not match the files; recovering");
        }
    }
    recover(dir, context, &listing, checkpoint, log_start)
}

/// The unclean path: scan from the segment holding the recovery point.
fn recover(
    dir: &Path,
    context: &SegmentContext<'_>,
    listing: &Listing,
    checkpoint: Option<Checkpoint>,
    log_start: Offset,
) -> LogResult<Loaded> {
    let recovery_point = checkpoint.map_or(Offset(0), |checkpoint| checkpoint.recovery_point);
    let first_base = *listing
        .logs
        .keys()
        .next()
        .expect("caller checked non-empty");
    let first_to_scan = listing
        .logs
        .range(..=recovery_point)
        .next_back()
        .map_or(first_base, |(base, _)| *base);
    let mut segments = lazy_segments(dir, listing, first_to_scan, context.open_segments);
    let to_scan: Vec<Offset> = listing
        .logs
        .range(first_to_scan..)
        .map(|(base, _)| *base)
        .collect();
    let mut expected = first_to_scan;
    let mut stopped = false;
    for base in to_scan {
        if stopped || base != expected {
            // After a cut, or after a gap in the offsets, nothing later can be kept: offsets
            // must stay dense.
            tracing::warn!(dir = %dir.display(), base_offset = %base, "deleting segment after the end of the recovered log");
            segment::delete_files(&SegmentPaths::new(dir, base))?;
            stopped = true;
            continue;
        }
        let recovered = Segment::recover(dir, base, context)?;
        if let Some(reason) = &recovered.reason {
            tracing::warn!(
                path = %recovered.segment.paths().log.display(),
                truncated_bytes = recovered.truncated_bytes,
                reason,
                "truncated torn tail during recovery"
            );
            stopped = true;
        }
        let segment = recovered.segment;
        expected = segment
            .next_offset()
            .expect("recovered segments are active");
        segment
            .file(context.config)?
            .sync_data()
            .map_err(LogError::io(&segment.paths().log))?;
        if let Some((_, previous)) = segments.iter_mut().next_back() {
            previous.seal()?;
        }
        segments.insert(base, segment);
    }
    let log_end = expected;
    checkpoint::sync_dir(dir)?;
    Ok(Loaded {
        segments,
        log_start: log_start.min(log_end),
        log_end,
        clean: false,
    })
}

/// Sealed, lazily opened segments for every `.log` below `end`.
fn lazy_segments(
    dir: &Path,
    listing: &Listing,
    end: Offset,
    open_segments: &Arc<OpenSegments>,
) -> BTreeMap<Offset, Segment> {
    listing
        .logs
        .range(..end)
        .map(|(&base, &size)| (base, Segment::lazy(dir, base, size, open_segments)))
        .collect()
}

fn list(dir: &Path) -> LogResult<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        match file_name::parse(name) {
            FileKind::Log(base) => {
                let size = entry.metadata().map_err(LogError::io(entry.path()))?.len();
                listing.logs.insert(base, size);
            }
            FileKind::Index(base) | FileKind::TimeIndex(base) => listing.indexed.push(base),
            FileKind::Temporary => {
                tracing::info!(path = %entry.path().display(), "removing leftover temporary file");
                fs::remove_file(entry.path()).map_err(LogError::io(entry.path()))?;
            }
            FileKind::Checkpoint | FileKind::Unknown => {}
        }
    }
    Ok(listing)
}

fn remove_orphan_indexes(dir: &Path, listing: &Listing) -> LogResult<()> {
    for base in &listing.indexed {
        if !listing.logs.contains_key(base) {
            segment::delete_files(&SegmentPaths::new(dir, *base))?;
        }
    }
    Ok(())
}

/// Deletes segments whose every offset is below the log start: their successor starts at or
/// below it. The last segment is always kept.
fn remove_below_log_start(dir: &Path, listing: &mut Listing, log_start: Offset) -> LogResult<()> {
    let bases: Vec<Offset> = listing.logs.keys().copied().collect();
    for pair in bases.windows(2) {
        if pair[1] <= log_start {
            tracing::info!(dir = %dir.display(), base_offset = %pair[0], "deleting segment below the log start");
            segment::delete_files(&SegmentPaths::new(dir, pair[0]))?;
            listing.logs.remove(&pair[0]);
        }
    }
    Ok(())
}
