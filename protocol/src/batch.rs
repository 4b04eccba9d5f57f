//! The record batch header: Kafka's v2 `RecordBatch` (magic 2), byte for byte.
//!
//! ```text
//! position  size  field
//!        0     8  base offset              i64   patched by the broker on append
//!        8     4  batch length             i32   bytes after this field
//!       12     4  partition leader epoch   i32   patched by the broker on append
//!       16     1  magic                    i8    = 2
//!       17     4  crc                      u32   CRC-32C of bytes 21..end
//!       21     2  attributes               i16   bits 0-2 compression, 3 timestamp type,
//!                                                4 transactional, 5 control
//!       23     4  last offset delta        i32
//!       27     8  base timestamp           i64
//!       35     8  max timestamp            i64
//!       43     8  producer id              i64
//!       51     2  producer epoch           i16
//!       53     4  base sequence            i32
//!       57     4  record count             i32
//!       61     -  records (possibly compressed as a whole)
//! ```
//!
//! All integers are big-endian. The CRC does not cover the base offset, the length or the
//! leader epoch, so the broker assigns offsets by patching the header without recomputing it.
//!
//! This module reads and checks headers and walks buffers of concatenated batches; it never
//! looks inside the records section (see [`crate::record`] for that).

use crate::error::BatchError;
use crate::limits::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};

/// Bytes before the batch length field's coverage starts: base offset and batch length.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole header, up to the first record.
pub const HEADER_BYTES: usize = 61;
/// The only magic value we speak.
pub const MAGIC: i8 = 2;

/// Positions of the header fields within a batch.
pub mod field {
    /// Base offset, i64.
    pub const BASE_OFFSET: usize = 0;
    /// Batch length, i32.
    pub const LENGTH: usize = 8;
    /// Partition leader epoch, i32.
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    /// Magic, i8.
    pub const MAGIC: usize = 16;
    /// CRC-32C, u32.
    pub const CRC: usize = 17;
    /// Attributes, i16; the CRC covers everything from here to the end.
    pub const ATTRIBUTES: usize = 21;
    /// Last offset delta, i32.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// Base timestamp, i64.
    pub const BASE_TIMESTAMP: usize = 27;
    /// Max timestamp, i64.
    pub const MAX_TIMESTAMP: usize = 35;
    /// Producer id, i64.
    pub const PRODUCER_ID: usize = 43;
    /// Producer epoch, i16.
    pub const PRODUCER_EPOCH: usize = 51;
    /// Base sequence, i32.
    pub const BASE_SEQUENCE: usize = 53;
    /// Record count, i32.
    pub const RECORD_COUNT: usize = 57;
    /// First byte of the records section.
    pub const RECORDS: usize = 61;
}

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// How the records section is compressed (attribute bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Codec 0: records are stored as they are.
    None,
    /// Codec 4: the records section is one zstd frame.
    Zstd,
}

impl Compression {
    /// The attribute bits of this codec.
    pub fn codec(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by attribute bits 0-2.
    pub fn from_codec(codec: u8) -> Result<Compression, BatchError> {
        match codec {
            0 => Ok(Compression::None),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnsupportedCompression { codec }),
        }
    }
}

/// The decoded fixed-size header of one record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; assigned by the broker.
    pub base_offset: i64,
    /// Bytes after the length field: the batch occupies `LOG_OVERHEAD + batch_length` bytes.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended; assigned by the broker.
    pub partition_leader_epoch: i32,
    /// Format version; always [`MAGIC`] once parsed.
    pub magic: i8,
    /// CRC-32C of everything from the attributes to the end.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record; records carry deltas from it.
    pub base_timestamp: i64,
    /// Largest timestamp of any record in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes` and checks what the header alone can show:
    /// the magic, a length within limits, a supported codec and consistent counts. It does not
    /// check the CRC (that needs the whole batch: see [`validate`]).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        // The length and magic come first, so a short read of a non-batch fails on them.
        let prefix = bytes.get(..=field::MAGIC).ok_or(BatchError::Truncated {
            needed: field::MAGIC + 1,
            available: bytes.len(),
        })?;
        let batch_length = read_i32(prefix, field::LENGTH);
        check_length(batch_length)?;
        let magic = prefix[field::MAGIC] as i8;
        if magic != MAGIC {
            return Err(BatchError::BadMagic { magic });
        }
        let header = bytes.get(..HEADER_BYTES).ok_or(BatchError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        })?;
        let parsed = BatchHeader {
            base_offset: read_i64(header, field::BASE_OFFSET),
            batch_length,
            partition_leader_epoch: read_i32(header, field::PARTITION_LEADER_EPOCH),
            magic,
            crc: read_u32(header, field::CRC),
            attributes: read_i16(header, field::ATTRIBUTES),
            last_offset_delta: read_i32(header, field::LAST_OFFSET_DELTA),
            base_timestamp: read_i64(header, field::BASE_TIMESTAMP),
            max_timestamp: read_i64(header, field::MAX_TIMESTAMP),
            producer_id: read_i64(header, field::PRODUCER_ID),
            producer_epoch: read_i16(header, field::PRODUCER_EPOCH),
            base_sequence: read_i32(header, field::BASE_SEQUENCE),
            record_count: read_i32(header, field::RECORD_COUNT),
        };
        parsed.compression()?;
        parsed.check_counts()?;
        Ok(parsed)
    }

    /// Total bytes the batch occupies, header included.
    pub fn total_bytes(&self) -> usize {
        // `parse` checked that the length is positive and within BATCH_BYTES_MAX.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The compression codec of the records section.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_codec((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// Whether timestamps were set by the broker at append time (LogAppendTime).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Checks what a producer's batch must satisfy beyond the format itself: at least one
    /// record, a last offset delta of exactly `record_count - 1` (offsets are dense), and no
    /// transactional or control bits (we do not implement transactions).
    pub fn check_producible(&self) -> Result<(), BatchError> {
        if self.record_count < 1 || self.last_offset_delta != self.record_count - 1 {
            return Err(BatchError::BadRecordCount {
                record_count: self.record_count,
                last_offset_delta: self.last_offset_delta,
            });
        }
        if self.is_transactional() || self.is_control() {
            return Err(BatchError::UnsupportedAttributes {
                attributes: self.attributes,
            });
        }
        Ok(())
    }

    /// Writes the header into the first [`HEADER_BYTES`] of `target`, CRC field included as
    /// it is in `self` (the caller computes it with [`compute_crc`] once the records are in).
    ///
    /// # Panics
    /// If `target` is shorter than [`HEADER_BYTES`]: a programming error.
    pub fn write(&self, target: &mut [u8]) {
        let target = &mut target[..HEADER_BYTES];
        target[field::BASE_OFFSET..][..8].copy_from_slice(&self.base_offset.to_be_bytes());
        target[field::LENGTH..][..4].copy_from_slice(&self.batch_length.to_be_bytes());
        target[field::PARTITION_LEADER_EPOCH..][..4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        target[field::MAGIC] = self.magic as u8;
        target[field::CRC..][..4].copy_from_slice(&self.crc.to_be_bytes());
        target[field::ATTRIBUTES..][..2].copy_from_slice(&self.attributes.to_be_bytes());
        target[field::LAST_OFFSET_DELTA..][..4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        target[field::BASE_TIMESTAMP..][..8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        target[field::MAX_TIMESTAMP..][..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        target[field::PRODUCER_ID..][..8].copy_from_slice(&self.producer_id.to_be_bytes());
        target[field::PRODUCER_EPOCH..][..2].copy_from_slice(&self.producer_epoch.to_be_bytes());
        target[field::BASE_SEQUENCE..][..4].copy_from_slice(&self.base_sequence.to_be_bytes());
        target[field::RECORD_COUNT..][..4].copy_from_slice(&self.record_count.to_be_bytes());
    }

    fn check_counts(&self) -> Result<(), BatchError> {
        let bad = BatchError::BadRecordCount {
            record_count: self.record_count,
            last_offset_delta: self.last_offset_delta,
        };
        if self.record_count < 0
            || self.last_offset_delta < 0
            || self.record_count as usize > BATCH_RECORDS_MAX
        {
            return Err(bad);
        }
        Ok(())
    }
}

/// Checks one whole batch that occupies exactly `bytes`: header sanity, length, and CRC.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_bytes() != bytes.len() {
        return Err(BatchError::LengthMismatch {
            expected: header.total_bytes(),
            actual: bytes.len(),
        });
    }
    let computed = compute_crc(bytes);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// The CRC-32C of a whole batch's covered bytes (attributes to the end).
///
/// # Panics
/// If `batch` is shorter than the header: a programming error (call after [`BatchHeader::parse`]).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[field::ATTRIBUTES..])
}

/// The total size of the batch that starts `bytes`, read from its first [`LOG_OVERHEAD`]
/// bytes alone; `None` when fewer bytes are given. The length is not checked.
pub fn peek_total_bytes(bytes: &[u8]) -> Option<i64> {
    let prefix = bytes.get(..LOG_OVERHEAD)?;
    Some(LOG_OVERHEAD as i64 + i64::from(read_i32(prefix, field::LENGTH)))
}

/// Overwrites the base offset of the batch that starts `batch`. The CRC stays valid.
///
/// # Panics
/// If `batch` is shorter than the header: a programming error.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[field::BASE_OFFSET..][..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch that starts `batch`. The CRC stays valid.
///
/// # Panics
/// If `batch` is shorter than the header: a programming error.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[field::PARTITION_LEADER_EPOCH..][..4].copy_from_slice(&epoch.to_be_bytes());
}

/// Walks a buffer of concatenated batches, yielding each header with the batch's position.
///
/// Each yielded batch is whole and its header is sane; the CRC is checked only when built with
/// [`BatchIter::validating`]. The first malformed batch ends the walk with an error; a
/// trailing partial batch is an error too ([`BatchError::Truncated`]): callers that read a
/// byte range which may end mid-batch use [`whole_batches_len`] first.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    /// The bytes being walked.
    bytes: &'a [u8],
    /// Where the next batch starts.
    position: usize,
    /// Whether each batch's CRC is checked.
    check_crc: bool,
    /// Set after the first error, so that the iterator then ends.
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Walks `bytes` checking headers and lengths only.
    pub fn new(bytes: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            bytes,
            position: 0,
            check_crc: false,
            failed: false,
        }
    }

    /// Walks `bytes` checking every batch fully, CRC included.
    pub fn validating(bytes: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            check_crc: true,
            ..BatchIter::new(bytes)
        }
    }
}

/// One batch found by [`BatchIter`].
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    /// Where the batch starts in the walked buffer.
    pub position: usize,
    /// Its parsed header.
    pub header: BatchHeader,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.position..];
        let result = BatchHeader::parse(rest).and_then(|header| {
            let total = header.total_bytes();
            let bytes = rest.get(..total).ok_or(BatchError::Truncated {
                needed: total,
                available: rest.len(),
            })?;
            let header = if self.check_crc {
                validate(bytes)?
            } else {
                header
            };
            Ok(BatchRef {
                position: self.position,
                header,
                bytes,
            })
        });
        match &result {
            Ok(batch) => self.position += batch.bytes.len(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

/// The length of the longest prefix of `bytes` made of whole batches, judged by their length
/// fields alone (no other check). Used to cut a byte range read from a log at a batch boundary.
pub fn whole_batches_len(bytes: &[u8]) -> usize {
    let mut position = 0usize;
    while let Some(total) = peek_total_bytes(&bytes[position..]) {
        let Ok(total) = usize::try_from(total) else {
            break;
        };
        if total < HEADER_BYTES || bytes.len() - position < total {
            break;
        }
        position += total;
    }
    position
}

fn check_length(batch_length: i32) -> Result<(), BatchError> {
    let total = LOG_OVERHEAD as i64 + i64::from(batch_length);
    if total < HEADER_BYTES as i64 || total > BATCH_BYTES_MAX as i64 {
        return Err(BatchError::BadLength {
            length: i64::from(batch_length),
        });
    }
    Ok(())
}

// The readers below take slices already checked to be long enough by their callers.

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid batch with `record_count` fake records of `filler` bytes in total.
    pub(crate) fn fake_batch(base_offset: i64, record_count: i32, filler: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES + filler];
        let header = BatchHeader {
            base_offset,
            batch_length: (bytes.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: 0,
            magic: MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: record_count - 1,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count,
        };
        header.write(&mut bytes);
        let crc = compute_crc(&bytes);
        bytes[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn parse_write_round_trip() {
        let bytes = fake_batch(42, 3, 10);
        let header = validate(&bytes).unwrap();
        let mut rewritten = vec![0u8; HEADER_BYTES];
        header.write(&mut rewritten);
        assert_eq!(&rewritten[..], &bytes[..HEADER_BYTES]);
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.total_bytes(), bytes.len());
    }

    #[test]
    fn patching_offset_and_epoch_keeps_crc_valid() {
        let mut bytes = fake_batch(0, 5, 100);
        set_base_offset(&mut bytes, 1_000_000);
        set_partition_leader_epoch(&mut bytes, 7);
        let header = validate(&bytes).unwrap();
        assert_eq!(header.base_offset, 1_000_000);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn flipped_covered_byte_fails_crc() {
        let bytes = fake_batch(0, 1, 20);
        for position in field::ATTRIBUTES..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= 0x40;
            assert!(validate(&corrupt).is_err(), "flip at {position} accepted");
        }
    }

    #[test]
    fn bad_lengths_and_magic_are_rejected() {
        let mut bytes = fake_batch(0, 1, 0);
        bytes[field::MAGIC] = 1;
        assert_eq!(validate(&bytes), Err(BatchError::BadMagic { magic: 1 }));
        let mut bytes = fake_batch(0, 1, 0);
        bytes[field::LENGTH..][..4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::BadLength { .. })
        ));
        let mut bytes = fake_batch(0, 1, 0);
        bytes[field::LENGTH..][..4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::BadLength { .. })
        ));
        let bytes = fake_batch(0, 1, 8);
        assert!(matches!(
            validate(&bytes[..bytes.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn producible_requires_dense_counts() {
        let header = BatchHeader::parse(&fake_batch(0, 3, 0)).unwrap();
        assert!(header.check_producible().is_ok());
        let mut lying = header;
        lying.last_offset_delta = 5;
        assert!(lying.check_producible().is_err());
        lying.last_offset_delta = 2;
        lying.attributes = CONTROL_BIT;
        assert!(lying.check_producible().is_err());
        let empty = BatchHeader::parse(&fake_batch(0, 0, 0));
        // record_count 0 with last_offset_delta -1 is not a sane header at all.
        assert!(empty.is_err());
    }

    #[test]
    fn iter_walks_concatenated_batches_and_stops_at_garbage() {
        let mut buffer = fake_batch(0, 2, 5);
        buffer.extend(fake_batch(2, 1, 7));
        let whole = buffer.len();
        buffer.extend([0xFF; 30]);
        let found: Vec<_> = BatchIter::validating(&buffer).collect();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].as_ref().unwrap().header.base_offset, 0);
        assert_eq!(found[1].as_ref().unwrap().position, HEADER_BYTES + 5);
        assert!(found[2].is_err());
        assert_eq!(whole_batches_len(&buffer), whole);
        assert_eq!(whole_batches_len(&buffer[..whole - 1]), HEADER_BYTES + 5);
    }
}
