//! The partition checkpoint: a small file that says where the log starts, how far it is known
//! to be flushed, and whether it was closed cleanly. Written atomically.
//!
//! ```text
//! position size field
//!        0    4 magic "MQPC"
//!        4    2 version = 1
//!        6    2 flags: bit 0 = clean shutdown
//!        8    8 log start offset
//!       16    8 recovery point: every offset below it is known durable
//!       24    8 log end offset          (meaningful only after a clean shutdown)
//!       32    8 active segment's bytes  (meaningful only after a clean shutdown)
//!       40    4 CRC-32C of bytes 0..40
//! ```
//!
//! Written by [`write`]: temp file, fsync, rename over the old one, fsync the directory. A
//! crash at any point leaves either the old or the new checkpoint, never a mix; a checkpoint
//! that fails its CRC anyway is treated as absent (full recovery), never trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use mq_protocol::Offset;

use super::error::{LogError, LogResult};
use super::file_name::{CHECKPOINT_FILE, TMP_SUFFIX};

const MAGIC: &[u8; 4] = b"MQPC";
const VERSION: u16 = 1;
const CLEAN_FLAG: u16 = 1;
const BYTES: usize = 44;

/// The state saved in the checkpoint file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The first readable offset; segments wholly below it are garbage.
    pub(crate) log_start: Offset,
    /// Every offset below this is known to be durable on disk.
    pub(crate) recovery_point: Offset,
    /// Present only when the log was closed cleanly: then nothing needs recovery.
    pub(crate) clean: Option<CleanShutdown>,
}

/// What a clean shutdown records, so that opening needs to read no log data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanShutdown {
    /// The log end offset at close.
    pub(crate) log_end: Offset,
    /// The size of the active segment's `.log` at close; a mismatch on open means the
    /// checkpoint does not describe these files, and the log is recovered instead.
    pub(crate) active_segment_bytes: u64,
}

fn encode(checkpoint: &Checkpoint) -> [u8; BYTES] {
    let mut bytes = [0u8; BYTES];
    bytes[0..4].copy_from_slice(MAGIC);
    bytes[4..6].copy_from_slice(&VERSION.to_be_bytes());
    let flags = if checkpoint.clean.is_some() {
        CLEAN_FLAG
    } else {
        0
    };
    bytes[6..8].copy_from_slice(&flags.to_be_bytes());
    bytes[8..16].copy_from_slice(&checkpoint.log_start.0.to_be_bytes());
    bytes[16..24].copy_from_slice(&checkpoint.recovery_point.0.to_be_bytes());
    let clean = checkpoint.clean.unwrap_or(CleanShutdown {
        log_end: Offset(0),
        active_segment_bytes: 0,
    });
    bytes[24..32].copy_from_slice(&clean.log_end.0.to_be_bytes());
    bytes[32..40].copy_from_slice(&clean.active_segment_bytes.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[..40]);
    bytes[40..44].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Checkpoint> {
    if bytes.len() != BYTES || &bytes[0..4] != MAGIC {
        return None;
    }
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(buf)
    };
    let stored_crc = u32::from_be_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]);
    if u16_at(4) != VERSION || stored_crc != crc32c::crc32c(&bytes[..40]) {
        return None;
    }
    let clean = (u16_at(6) & CLEAN_FLAG != 0).then(|| CleanShutdown {
        log_end: Offset(u64_at(24)),
        active_segment_bytes: u64_at(32),
    });
    Some(Checkpoint {
        log_start: Offset(u64_at(8)),
        recovery_point: Offset(u64_at(16)),
        clean,
    })
}

/// Reads the checkpoint of the partition in `dir`. `Ok(None)` when there is none, or when it
/// is damaged (logged): the caller then recovers the whole log.
pub(crate) fn read(dir: &Path) -> LogResult<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io(&path)(error)),
    };
    let checkpoint = decode(&bytes);
    if checkpoint.is_none() {
        tracing::warn!(path = %path.display(), "ignoring damaged checkpoint");
    }
    Ok(checkpoint)
}

/// Replaces the checkpoint of the partition in `dir` atomically and durably.
pub(crate) fn write(dir: &Path, checkpoint: &Checkpoint) -> LogResult<()> {
    let path = dir.join(CHECKPOINT_FILE);
    let tmp_path = dir.join(format!("{CHECKPOINT_FILE}.{TMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp_path)
        .map_err(LogError::io(&tmp_path))?;
    file.write_all(&encode(checkpoint))
        .and_then(|()| file.sync_all())
        .map_err(LogError::io(&tmp_path))?;
    drop(file);
    fs::rename(&tmp_path, &path).map_err(LogError::io(&path))?;
    sync_dir(dir)
}

/// Makes the creation, deletion or renaming of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> LogResult<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(LogError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_clean_and_unclean() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        for checkpoint in [
            Checkpoint {
                log_start: Offset(5),
                recovery_point: Offset(77),
                clean: None,
            },
            Checkpoint {
                log_start: Offset(0),
                recovery_point: Offset(9),
                clean: Some(CleanShutdown {
                    log_end: Offset(9),
                    active_segment_bytes: 12345,
                }),
            },
        ] {
            write(dir.path(), &checkpoint).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(checkpoint));
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temp file was renamed away");
    }

    #[test]
    fn damaged_checkpoint_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint {
            log_start: Offset(1),
            recovery_point: Offset(2),
            clean: None,
        };
        let good = encode(&checkpoint);
        for position in 0..BYTES {
            let mut bad = good;
            bad[position] ^= 1;
            fs::write(dir.path().join(CHECKPOINT_FILE), bad).unwrap();
            assert_eq!(read(dir.path()).unwrap(), None, "flip at {position}");
        }
        fs::write(dir.path().join(CHECKPOINT_FILE), &good[..10]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
