//! Errors of the record batch format. Decoding never panics: every malformed input ends here.

/// Why bytes are not a valid record batch (or records section).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the structure being read needs.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    /// The magic byte is not 2: not a v2 record batch.
    #[error("unsupported magic {magic}, expected 2")]
    BadMagic { magic: i8 },
    /// The batch length field is below the header size or above the limit.
    #[error("batch length {length} out of range")]
    BadLength { length: i64 },
    /// The buffer holds more or fewer bytes than the header's length says.
    #[error("batch length says {expected} bytes, buffer has {actual}")]
    LengthMismatch { expected: usize, actual: usize },
    /// The CRC-32C over attributes..end does not match the header's.
    #[error("crc mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Compression codec bits name a codec we do not support.
    #[error("unsupported compression codec {codec}")]
    UnsupportedCompression { codec: u8 },
    /// The header's counts disagree with each other or with the limits.
    #[error("invalid record count {record_count} with last offset delta {last_offset_delta}")]
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    /// A control or transactional batch where only plain data batches are accepted.
    #[error("control and transactional batches are not supported")]
    UnsupportedAttributes { attributes: i16 },
    /// A varint is longer than its type allows.
    #[error("malformed varint")]
    BadVarint,
    /// A record inside the batch is malformed.
    #[error("malformed record {index}: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    /// The records section decoded to a different number of records than the header says.
    #[error("header says {expected} records, found {actual}")]
    RecordCountMismatch { expected: usize, actual: usize },
    /// Decompression failed or would exceed the decompressed-size limit.
    #[error("decompression failed: {reason}")]
    Decompression { reason: String },
}
