//! Per-log settings: segment sizes, index density, retention, and the flush policy.

use std::time::Duration;

use mq_protocol::limits::BATCH_BYTES_MAX;

/// When appended data is made durable with fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// An append is acknowledged only once fsynced; concurrent appends share one fsync
    /// (group commit). The default: nothing acknowledged is lost on power failure.
    Always,
    /// Data is fsynced at most this long after it was appended, by a background task.
    Interval(Duration),
    /// Data is left to the operating system; fsync happens only on close.
    Never,
}

/// Settings of one partition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before an append would take it past this many bytes.
    pub segment_bytes: u32,
    /// Roll the active segment once it is this old (and not empty).
    pub segment_age: Duration,
    /// Add an offset index entry once this many log bytes were written since the last one.
    pub index_interval_bytes: u32,
    /// Preallocated size of each index file; the segment rolls when an index fills.
    pub index_bytes_max: u32,
    /// The largest batch (or set of batches in one append) accepted.
    pub batch_bytes_max: u32,
    /// Delete sealed segments whose newest record is older than this; `None` keeps forever.
    pub retention: Option<Duration>,
    /// Delete the oldest sealed segments while the log is larger than this; `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// When appends are fsynced.
    pub flush: FlushPolicy,
    /// How many sealed segments may have their files open at once; others are reopened
    /// when read. Bounds the descriptors a log holds however many segments it has.
    pub open_sealed_segments_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            index_interval_bytes: 4096,
            index_bytes_max: 10 * 1024 * 1024,
            batch_bytes_max: 8 * 1024 * 1024,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            flush: FlushPolicy::Always,
            open_sealed_segments_max: 8,
        }
    }
}

/// Why a [`LogConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log config: {0}")]
pub struct ConfigError(pub &'static str);

impl LogConfig {
    /// Checks the settings against each other and the format's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // File positions in the index are u32, and a segment must hold at least one batch.
        if self.segment_bytes > i32::MAX as u32 {
            return Err(ConfigError("segment_bytes must be at most 2 GiB - 1"));
        }
        if self.batch_bytes_max as usize > BATCH_BYTES_MAX {
            return Err(ConfigError("batch_bytes_max is above the format's limit"));
        }
        if self.batch_bytes_max < mq_protocol::batch::HEADER_BYTES as u32 {
            return Err(ConfigError("batch_bytes_max is below one batch header"));
        }
        if self.segment_bytes < self.batch_bytes_max {
            return Err(ConfigError(
                "segment_bytes must be at least batch_bytes_max",
            ));
        }
        if self.index_bytes_max < 1024 {
            return Err(ConfigError("index_bytes_max must be at least 1 KiB"));
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError("index_interval_bytes must be positive"));
        }
        if self.open_sealed_segments_max == 0 {
            return Err(ConfigError("open_sealed_segments_max must be positive"));
        }
        if self.segment_age.is_zero() {
            return Err(ConfigError("segment_age must be positive"));
        }
        Ok(())
    }

    /// Entries that fit the offset index.
    pub(crate) fn offset_index_capacity(&self) -> usize {
        self.index_bytes_max as usize / super::index::OFFSET_ENTRY_BYTES
    }

    /// Entries that fit the time index.
    pub(crate) fn time_index_capacity(&self) -> usize {
        self.index_bytes_max as usize / super::index::TIME_ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_ones_are_not() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let small_segments = LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        };
        assert!(small_segments.validate().is_err());
        let huge_segments = LogConfig {
            segment_bytes: u32::MAX,
            ..LogConfig::default()
        };
        assert!(huge_segments.validate().is_err());
    }
}
