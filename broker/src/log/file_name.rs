//! Names of the files in a partition directory, and parsing them back.
//!
//! ```text
//! 00000000000000000042.log         record batches of the segment whose base offset is 42
//! 00000000000000000042.index       its offset index
//! 00000000000000000042.timeindex   its time index
//! partition.checkpoint             log start offset, recovery point, clean-shutdown flag
//! *.tmp                            a file being written atomically; deleted on open
//! ```

use std::path::{Path, PathBuf};

use mq_protocol::Offset;

/// Extension of a segment's record batches.
pub(crate) const LOG_SUFFIX: &str = "log";
/// Extension of a segment's offset index.
pub(crate) const INDEX_SUFFIX: &str = "index";
/// Extension of a segment's time index.
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Extension of a file being written; a leftover one is garbage from a crash.
pub(crate) const TMP_SUFFIX: &str = "tmp";
/// Name of the partition's checkpoint file.
pub(crate) const CHECKPOINT_FILE: &str = "partition.checkpoint";

/// The three files of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentPaths {
    /// The `.log` file.
    pub(crate) log: PathBuf,
    /// The `.index` file.
    pub(crate) index: PathBuf,
    /// The `.timeindex` file.
    pub(crate) time_index: PathBuf,
}

impl SegmentPaths {
    /// The paths of the segment with `base_offset` in `dir`.
    pub(crate) fn new(dir: &Path, base_offset: Offset) -> SegmentPaths {
        let stem = format!("{:020}", base_offset.0);
        SegmentPaths {
            log: dir.join(format!("{stem}.{LOG_SUFFIX}")),
            index: dir.join(format!("{stem}.{INDEX_SUFFIX}")),
            time_index: dir.join(format!("{stem}.{TIME_INDEX_SUFFIX}")),
        }
    }
}

/// What a file name in a partition directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A segment's `.log`.
    Log(Offset),
    /// A segment's `.index`.
    Index(Offset),
    /// A segment's `.timeindex`.
    TimeIndex(Offset),
    /// A leftover temporary file.
    Temporary,
    /// The checkpoint.
    Checkpoint,
    /// Anything else: left alone.
    Unknown,
}

/// Classifies a file name.
pub(crate) fn parse(file_name: &str) -> FileKind {
    if file_name == CHECKPOINT_FILE {
        return FileKind::Checkpoint;
    }
    let Some((stem, suffix)) = file_name.rsplit_once('.') else {
        return FileKind::Unknown;
    };
    if suffix == TMP_SUFFIX {
        return FileKind::Temporary;
    }
    let offset = match parse_offset(stem) {
        Some(offset) => offset,
        None => return FileKind::Unknown,
    };
    match suffix {
        LOG_SUFFIX => FileKind::Log(offset),
        INDEX_SUFFIX => FileKind::Index(offset),
        TIME_INDEX_SUFFIX => FileKind::TimeIndex(offset),
        _ => FileKind::Unknown,
    }
}

fn parse_offset(stem: &str) -> Option<Offset> {
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse::<u64>()
        .ok()
        .filter(|&value| value <= Offset::MAX.0)
        .map(Offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: FileKind) {
        assert_eq!(parse(name), expected, "{name}");
    }

    #[test]
    fn parses_names() {
        check("00000000000000000042.log", FileKind::Log(Offset(42)));
        check("00000000000000000000.index", FileKind::Index(Offset(0)));
        check(
            "09223372036854775807.timeindex",
            FileKind::TimeIndex(Offset::MAX),
        );
        check("09223372036854775808.log", FileKind::Unknown); // above i64::MAX
        check("42.log", FileKind::Unknown); // not 20 digits
        check("0000000000000000004x.log", FileKind::Unknown);
        check("00000000000000000042.index.tmp", FileKind::Temporary);
        check("partition.checkpoint.tmp", FileKind::Temporary);
        check("partition.checkpoint", FileKind::Checkpoint);
        check("README", FileKind::Unknown);
        check("00000000000000000042.swap", FileKind::Unknown);
    }

    #[test]
    fn paths_round_trip() {
        let paths = SegmentPaths::new(Path::new("/d"), Offset(7));
        assert_eq!(paths.log, Path::new("/d/00000000000000000007.log"));
        let name = paths.index.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse(name), FileKind::Index(Offset(7)));
    }
}
