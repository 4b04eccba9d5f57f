//! The records section of a record batch: encoding records into a sealed batch
//! ([`BatchBuilder`], used by producers) and decoding them back ([`records`], used by
//! consumers and tools).
//!
//! Each record, as in Kafka's v2 format (all lengths and counts are zigzag varints, see
//! [`crate::varint`]):
//!
//! ```text
//! length            varint    bytes after this field
//! attributes        i8        unused, 0
//! timestamp delta   varlong   timestamp - batch base timestamp
//! offset delta      varint    offset - batch base offset
//! key length        varint    -1 for a null key
//! key               bytes
//! value length      varint    -1 for a null value
//! value             bytes
//! header count      varint
//! headers           per header: key length varint, key (UTF-8), value length varint
//!                   (-1 for null), value
//! ```
//!
//! With zstd the whole records section is one zstd frame. The broker never uses this module
//! on the produce or fetch path: it moves batches as they are (see [`crate::batch`]).
//!
//! Decoding is zero-copy: keys, values and header fields are [`Bytes`] slices of the batch
//! (or, for a compressed batch, of its one decompressed buffer). Every length read from the
//! input is checked against the bytes that remain before anything is sliced or allocated, and
//! decompression is bounded by [`DECOMPRESSED_BYTES_MAX`].

use std::io::{self, Read};
use std::iter::FusedIterator;

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, field, BatchHeader, Compression, HEADER_BYTES, LOG_OVERHEAD, MAGIC};
use crate::error::BatchError;
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, DECOMPRESSED_BYTES_MAX, RECORD_FIELD_BYTES_MAX,
    RECORD_HEADERS_MAX,
};
use crate::varint::{
    decode_varint, decode_varlong, encode_varint, encode_varlong, varint_len, varlong_len,
};

/// The zstd level producers compress with: zstd's default, as Kafka's producer uses.
const ZSTD_LEVEL: i32 = zstd::DEFAULT_COMPRESSION_LEVEL;

/// The largest zstd window (as a power of two) a decoder accepts. A frame's window size
/// decides how much memory the decoder allocates before producing any output, so a hostile
/// frame could otherwise claim a huge one. 2^27 is zstd's own default limit; it is below
/// [`DECOMPRESSED_BYTES_MAX`] and above what any ordinary producer level uses.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The first allocation for a decompressed records section; it then doubles up to the limit.
const DECOMPRESS_CHUNK_BYTES: usize = 64 * 1024;

/// The capacity [`BatchBuilder::new`] starts with: Kafka's default producer batch size.
const BUILDER_CAPACITY_BYTES: usize = 16 * 1024;

// Record lengths and field lengths are i32 varints: every limit must fit one.
const _: () = assert!(DECOMPRESSED_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(RECORD_FIELD_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(RECORD_HEADERS_MAX <= i32::MAX as usize);
const _: () = assert!(BATCH_RECORDS_MAX <= i32::MAX as usize);
const _: () = assert!(1usize << ZSTD_WINDOW_LOG_MAX <= DECOMPRESSED_BYTES_MAX);

/// One record header: a key naming it and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's name. Kafka's clients write UTF-8 here ([`Header::new`] guarantees it);
    /// a decoder does not check it, as Kafka's does not, so see [`Header::key_str`].
    pub key: Bytes,
    /// The header's value; `None` is a null value, distinct from an empty one.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a UTF-8 key.
    pub fn new(key: impl Into<String>, value: Option<Bytes>) -> Header {
        Header {
            key: Bytes::from(key.into()),
            value,
        }
    }

    /// The key as text; an error when a (foreign) producer wrote a key that is not UTF-8.
    pub fn key_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.key)
    }
}

/// One record as a producer hands it to [`BatchBuilder::append`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Creation time in milliseconds since the Unix epoch, as chosen by the producer.
    pub timestamp: i64,
    /// The key, used for partitioning; `None` is a null key, distinct from an empty one.
    pub key: Option<Bytes>,
    /// The payload; `None` is a null value (a tombstone, in Kafka's terms).
    pub value: Option<Bytes>,
    /// Application metadata carried alongside the payload, in order.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record without headers.
    pub fn new(timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
        Record {
            timestamp,
            key,
            value,
            headers: Vec::new(),
        }
    }
}

/// Encodes records into one sealed v2 record batch.
///
/// Records are encoded as they are appended, into one buffer that starts with room for the
/// batch header; [`BatchBuilder::seal`] fills the header in (and, for zstd, compresses the
/// records section once). The first record's timestamp becomes the batch's base timestamp.
///
/// ```
/// use bytes::Bytes;
/// use mq_protocol::{BatchBuilder, Compression, Record};
///
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.append(&Record::new(1_700_000_000_000, None, Some(Bytes::from("hello"))))?;
/// let batch = builder.seal(0)?;
/// let decoded: Vec<_> = mq_protocol::record::records(&batch)?.collect::<Result<_, _>>()?;
/// assert_eq!(decoded[0].value.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), mq_protocol::BatchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// How the records section is compressed when the batch is sealed.
    compression: Compression,
    /// Idempotent producer id written to the header; -1 when the producer has none.
    producer_id: i64,
    /// Idempotent producer epoch written to the header; -1 when the producer has none.
    producer_epoch: i16,
    /// Sequence number of the first record, written to the header; -1 when none.
    base_sequence: i32,
    /// Leader epoch written to the header; the broker overwrites it on append.
    partition_leader_epoch: i32,
    /// [`HEADER_BYTES`] of header space (filled in by `seal`), then the records encoded so
    /// far, uncompressed.
    buffer: BytesMut,
    /// Records appended so far; the next record's offset delta.
    record_count: i32,
    /// The first record's timestamp; meaningless while `record_count` is 0.
    base_timestamp: i64,
    /// The largest timestamp appended; meaningless while `record_count` is 0.
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch without an idempotent producer (producer id, epoch and base sequence
    /// are -1) and with partition leader epoch -1 (no epoch known; Kafka's Java producer
    /// writes the same).
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder::with_capacity(compression, BUILDER_CAPACITY_BYTES)
    }

    /// Like [`BatchBuilder::new`], with room for `capacity_bytes` of records before the
    /// buffer grows (pass the producer's batch size to encode without reallocation).
    pub fn with_capacity(compression: Compression, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder::with_buffer(compression, BytesMut::new(), capacity_bytes)
    }

    /// Like [`BatchBuilder::with_capacity`], encoding into `buffer`, emptied first: for
    /// callers that recycle the memory of batches they sealed earlier (an uncompressed
    /// batch is sealed in its builder's buffer, see [`Bytes::try_into_mut`]).
    pub fn with_buffer(
        compression: Compression,
        mut buffer: BytesMut,
        capacity_bytes: usize,
    ) -> BatchBuilder {
        buffer.clear();
        buffer.reserve(HEADER_BYTES + capacity_bytes.min(BATCH_BYTES_MAX));
        buffer.put_bytes(0, HEADER_BYTES);
        BatchBuilder {
            compression,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            partition_leader_epoch: -1,
            buffer,
            record_count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// Sets the idempotent producer fields: the producer's id and epoch, and the sequence
    /// number of this batch's first record.
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the partition leader epoch written to the header (default -1). The broker
    /// overwrites it on append; this exists to reproduce other producers' bytes exactly.
    pub fn with_partition_leader_epoch(mut self, partition_leader_epoch: i32) -> BatchBuilder {
        self.partition_leader_epoch = partition_leader_epoch;
        self
    }

    /// Number of records appended so far.
    pub fn record_count(&self) -> usize {
        self.record_count as usize
    }

    /// Whether no record has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Size of the batch if sealed now, uncompressed: exact for [`Compression::None`], and
    /// for zstd an upper estimate unless the records do not compress at all.
    pub fn estimated_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// What [`BatchBuilder::estimated_bytes`] would be after appending `record`, so that a
    /// producer can seal first when the record would take the batch over its size target.
    pub fn estimated_bytes_with(&self, record: &Record) -> usize {
        let (timestamp_delta, offset_delta) = self.deltas(record);
        let body_bytes = body_bytes(record, timestamp_delta, offset_delta);
        self.buffer
            .len()
            .saturating_add(length_bytes(body_bytes))
            .saturating_add(body_bytes)
    }

    /// Encodes `record` at the end of the batch.
    ///
    /// Fails, leaving the builder as it was, when the record breaks a limit: a key, value or
    /// header value over [`RECORD_FIELD_BYTES_MAX`] or more than [`RECORD_HEADERS_MAX`]
    /// headers ([`BatchError::BadRecord`]), a batch already holding [`BATCH_RECORDS_MAX`]
    /// records ([`BatchError::BadRecordCount`]), or records that would no longer fit a batch
    /// ([`BatchError::BadLength`]; for zstd, that bounds the uncompressed records by
    /// [`DECOMPRESSED_BYTES_MAX`]).
    pub fn append(&mut self, record: &Record) -> Result<(), BatchError> {
        let index = self.record_count();
        if index >= BATCH_RECORDS_MAX {
            return Err(BatchError::BadRecordCount {
                record_count: self.record_count.saturating_add(1),
                last_offset_delta: self.record_count,
            });
        }
        check_record_limits(record, index)?;
        let (timestamp_delta, offset_delta) = self.deltas(record);
        let body_bytes = body_bytes(record, timestamp_delta, offset_delta);
        let records_bytes_max = match self.compression {
            Compression::None => BATCH_BYTES_MAX - HEADER_BYTES,
            Compression::Zstd => DECOMPRESSED_BYTES_MAX,
        };
        let records_bytes = self.buffer.len() - HEADER_BYTES;
        let record_bytes = length_bytes(body_bytes).saturating_add(body_bytes);
        if record_bytes > records_bytes_max - records_bytes {
            return Err(BatchError::BadLength {
                length: length_field(records_bytes.saturating_add(record_bytes)),
            });
        }
        // Within the limit, which fits an i32 (asserted above).
        let body_length = body_bytes as i32;

        let start = self.buffer.len();
        self.buffer.reserve(record_bytes);
        encode_varint(body_length, &mut self.buffer);
        self.put_body(record, timestamp_delta, offset_delta);
        assert_eq!(
            self.buffer.len() - start,
            record_bytes,
            "record size was mispredicted"
        );

        if self.record_count == 0 {
            self.base_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.record_count += 1;
        Ok(())
    }

    /// Finishes the batch with `base_offset` (the broker reassigns it on append): compresses
    /// the records if asked, writes the header and its CRC, and returns the whole batch.
    ///
    /// Fails when no record was appended ([`BatchError::BadRecordCount`]), when a compressed
    /// batch would exceed [`BATCH_BYTES_MAX`] ([`BatchError::BadLength`]), or when zstd fails
    /// ([`BatchError::Decompression`], whose reason then says "compression").
    pub fn seal(mut self, base_offset: i64) -> Result<Bytes, BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::BadRecordCount {
                record_count: 0,
                last_offset_delta: -1,
            });
        }
        let batch = match self.compression {
            Compression::None => {
                let mut batch = std::mem::take(&mut self.buffer);
                self.write_header(&mut batch, base_offset)?;
                batch.freeze()
            }
            Compression::Zstd => {
                let mut batch = compress_zstd(&self.buffer[HEADER_BYTES..])?;
                self.write_header(&mut batch, base_offset)?;
                Bytes::from(batch)
            }
        };
        debug_assert_eq!(
            batch::validate(&batch).map(|header| header.record_count),
            Ok(self.record_count)
        );
        Ok(batch)
    }

    /// The timestamp and offset deltas `record` gets if appended next.
    fn deltas(&self, record: &Record) -> (i64, i32) {
        let base_timestamp = if self.record_count == 0 {
            record.timestamp
        } else {
            self.base_timestamp
        };
        // Wrapping, as Kafka's Java client does: the reader's wrapping add restores any
        // timestamp exactly, even when the difference overflows.
        (
            record.timestamp.wrapping_sub(base_timestamp),
            self.record_count,
        )
    }

    /// Writes everything of `record` after its length prefix. Lengths were checked against
    /// the limits (which fit an i32) by `append`.
    fn put_body(&mut self, record: &Record, timestamp_delta: i64, offset_delta: i32) {
        let buffer = &mut self.buffer;
        buffer.put_i8(0);
        encode_varlong(timestamp_delta, buffer);
        encode_varint(offset_delta, buffer);
        put_nullable(buffer, record.key.as_deref());
        put_nullable(buffer, record.value.as_deref());
        encode_varint(record.headers.len() as i32, buffer);
        for header in &record.headers {
            encode_varint(header.key.len() as i32, buffer);
            buffer.put_slice(&header.key);
            put_nullable(buffer, header.value.as_deref());
        }
    }

    /// Writes the header into the first [`HEADER_BYTES`] of `batch` (which holds the whole
    /// batch), then its CRC.
    fn write_header(&self, batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
        if batch.len() > BATCH_BYTES_MAX {
            return Err(BatchError::BadLength {
                length: length_field(batch.len() - HEADER_BYTES),
            });
        }
        let header = BatchHeader {
            base_offset,
            // At most BATCH_BYTES_MAX, which fits an i32 (asserted in limits.rs).
            batch_length: (batch.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC,
            crc: 0,
            attributes: i16::from(self.compression.codec()),
            last_offset_delta: self.record_count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
        };
        header.write(batch);
        let crc = batch::compute_crc(batch);
        batch[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

/// The longest varint, used when a size does not fit one (it is then rejected anyway).
const VARINT_LEN_MAX: usize = crate::varint::VARINT_BYTES_MAX;

/// The batch length field a batch with `records_bytes` of records would have, for errors.
fn length_field(records_bytes: usize) -> i64 {
    i64::try_from(records_bytes.saturating_add(HEADER_BYTES - LOG_OVERHEAD)).unwrap_or(i64::MAX)
}

/// Checks `record` against the limits that [`BatchBuilder::append`] enforces on each
/// record (field sizes, header count), so that a caller can refuse a whole group of records
/// before appending any of them.
pub fn check_limits(record: &Record) -> Result<(), BatchError> {
    check_record_limits(record, 0)
}

fn check_record_limits(record: &Record, index: usize) -> Result<(), BatchError> {
    let too_long = |field: &Option<Bytes>| {
        field
            .as_ref()
            .is_some_and(|bytes| bytes.len() > RECORD_FIELD_BYTES_MAX)
    };
    let reason = if too_long(&record.key) {
        "key longer than RECORD_FIELD_BYTES_MAX"
    } else if too_long(&record.value) {
        "value longer than RECORD_FIELD_BYTES_MAX"
    } else if record.headers.len() > RECORD_HEADERS_MAX {
        "more headers than RECORD_HEADERS_MAX"
    } else if record
        .headers
        .iter()
        .any(|header| header.key.len() > RECORD_FIELD_BYTES_MAX || too_long(&header.value))
    {
        "header longer than RECORD_FIELD_BYTES_MAX"
    } else {
        return Ok(());
    };
    Err(BatchError::BadRecord { index, reason })
}

/// Bytes of a record after its length prefix. Saturates, so that an oversized record is
/// reported rather than wrapped (only possible on targets with a 32-bit `usize`).
fn body_bytes(record: &Record, timestamp_delta: i64, offset_delta: i32) -> usize {
    let headers = record.headers.iter().fold(0usize, |sum, header| {
        sum.saturating_add(length_bytes(header.key.len()))
            .saturating_add(header.key.len())
            .saturating_add(nullable_bytes(header.value.as_deref()))
    });
    (1 + varlong_len(timestamp_delta) + varint_len(offset_delta))
        .saturating_add(nullable_bytes(record.key.as_deref()))
        .saturating_add(nullable_bytes(record.value.as_deref()))
        .saturating_add(length_bytes(record.headers.len()))
        .saturating_add(headers)
}

/// Bytes of the varint holding `length` (the longest varint if it does not fit an i32).
fn length_bytes(length: usize) -> usize {
    i32::try_from(length).map_or(VARINT_LEN_MAX, varint_len)
}

/// Bytes of a nullable field: its length varint (-1 for null) and its contents.
fn nullable_bytes(field: Option<&[u8]>) -> usize {
    match field {
        None => varint_len(-1),
        Some(bytes) => length_bytes(bytes.len()).saturating_add(bytes.len()),
    }
}

fn put_nullable(buffer: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        None => encode_varint(-1, buffer),
        Some(bytes) => {
            encode_varint(bytes.len() as i32, buffer);
            buffer.put_slice(bytes);
        }
    }
}

/// Compresses `records` as one zstd frame, into a buffer that starts with [`HEADER_BYTES`]
/// of header space.
fn compress_zstd(records: &[u8]) -> Result<Vec<u8>, BatchError> {
    let failed = |error: io::Error| BatchError::Decompression {
        reason: format!("zstd compression failed: {error}"),
    };
    let capacity = HEADER_BYTES + zstd::zstd_safe::compress_bound(records.len());
    let mut batch = Vec::with_capacity(capacity);
    batch.resize(HEADER_BYTES, 0);
    // A cursor past the header makes zstd write after it, into the spare capacity.
    let mut target = io::Cursor::new(batch);
    target.set_position(HEADER_BYTES as u64);
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(failed)?;
    compressor
        .compress_to_buffer(records, &mut target)
        .map_err(failed)?;
    Ok(target.into_inner())
}

/// Decompresses a zstd records section, failing once the output would exceed `limit` bytes.
///
/// Nothing in the frame is trusted for sizing: the output buffer starts small and doubles
/// as bytes actually arrive, never past `limit`, and the decoder's window (its own
/// allocation) is capped by [`ZSTD_WINDOW_LOG_MAX`].
fn decompress_zstd(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let failed = |error: io::Error| BatchError::Decompression {
        reason: error.to_string(),
    };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(failed)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(failed)?;
    let mut output: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    loop {
        if filled == output.len() {
            if output.len() >= limit {
                // Full: the input must end here.
                let mut probe = [0u8; 1];
                if decoder.read(&mut probe).map_err(failed)? == 0 {
                    break;
                }
                return Err(BatchError::Decompression {
                    reason: format!("records expand beyond {limit} bytes"),
                });
            }
            let grow = output
                .len()
                .max(DECOMPRESS_CHUNK_BYTES)
                .min(limit - output.len());
            output.reserve_exact(grow);
            output.resize(output.len() + grow, 0);
        }
        let read = decoder.read(&mut output[filled..]).map_err(failed)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    output.truncate(filled);
    Ok(output)
}

/// One decoded record: zero-copy slices of the batch (or of its decompressed records).
///
/// Its slices keep the whole batch (or decompressed buffer) alive: copy a field out
/// (`Bytes::copy_from_slice`) to keep one small value for long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// The record's offset in its partition: the batch's base offset plus its offset delta.
    pub offset: i64,
    /// Milliseconds since the Unix epoch: the producer's timestamp, or for a batch with
    /// LogAppendTime the broker's append time (the batch's max timestamp), as in Kafka.
    pub timestamp: i64,
    /// The key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value; `None` for a null value.
    pub value: Option<Bytes>,
    /// The record's headers, in order.
    pub headers: Vec<Header>,
}

impl RecordView {
    /// The record without its offset, as it could be produced again.
    pub fn into_record(self) -> Record {
        Record {
            timestamp: self.timestamp,
            key: self.key,
            value: self.value,
            headers: self.headers,
        }
    }
}

/// Decodes the records of one whole batch.
///
/// `batch` must hold exactly one batch; it is validated here ([`batch::validate`]: header
/// sanity, length, CRC), so a caller need not have done it, and a zstd records section is
/// decompressed here, at most [`DECOMPRESSED_BYTES_MAX`] bytes. Record-level problems come
/// out of the iterator, which ends after the first error.
pub fn records(batch: &Bytes) -> Result<RecordIter, BatchError> {
    let header = batch::validate(batch)?;
    // `validate` checked that the batch is at least a header long.
    let section = batch.slice(HEADER_BYTES..);
    let records = match header.compression()? {
        Compression::None => section,
        Compression::Zstd => Bytes::from(decompress_zstd(&section, DECOMPRESSED_BYTES_MAX)?),
    };
    Ok(RecordIter {
        header,
        records,
        position: 0,
        index: 0,
        previous_offset_delta: None,
        done: false,
    })
}

/// Iterator over the records of one batch, made by [`records`].
///
/// Besides each record's own structure it checks that offset deltas increase strictly and
/// stay within the header's last offset delta, that each record's length prefix matches the
/// bytes its fields use, and, at the end, that the number of records equals the header's
/// record count ([`BatchError::RecordCountMismatch`]). After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct RecordIter {
    /// The batch's header, for base offset, timestamps and counts.
    header: BatchHeader,
    /// The uncompressed records section.
    records: Bytes,
    /// Where the next record starts in `records`.
    position: usize,
    /// How many records have been yielded.
    index: usize,
    /// The previous record's offset delta, to check that deltas increase.
    previous_offset_delta: Option<i32>,
    /// Set at the end or after an error.
    done: bool,
}

impl RecordIter {
    /// The header of the batch being decoded.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The header's record count, which `parse` checked to be within 0..=BATCH_RECORDS_MAX.
    fn expected_count(&self) -> usize {
        usize::try_from(self.header.record_count).unwrap_or(0)
    }

    fn decode_next(&mut self) -> Result<RecordView, BatchError> {
        let index = self.index;
        let rest = &self.records[self.position..];
        let (length, used) = decode_varint(rest)?;
        let length = usize::try_from(length).map_err(|_| BatchError::BadRecord {
            index,
            reason: "negative record length",
        })?;
        if length > rest.len() - used {
            return Err(BatchError::BadRecord {
                index,
                reason: "record length runs past the end of the batch",
            });
        }
        let start = self.position + used;
        let body = self.records.slice(start..start + length);
        let mut reader = FieldReader {
            body: &body,
            position: 0,
            index,
        };
        let _attributes = reader.i8()?;
        let timestamp_delta = reader.varlong()?;
        let offset_delta = reader.varint()?;
        let key = reader.nullable("negative key length")?;
        let value = reader.nullable("negative value length")?;
        let headers = reader.headers()?;
        if reader.position != body.len() {
            return Err(BatchError::BadRecord {
                index,
                reason: "record length is longer than its fields",
            });
        }
        let offset = self.offset(index, offset_delta)?;
        self.position = start + length;
        self.index += 1;
        self.previous_offset_delta = Some(offset_delta);
        Ok(RecordView {
            offset,
            timestamp: self.timestamp(timestamp_delta),
            key,
            value,
            headers,
        })
    }

    fn offset(&self, index: usize, offset_delta: i32) -> Result<i64, BatchError> {
        let increasing = self
            .previous_offset_delta
            .is_none_or(|previous| offset_delta > previous);
        if offset_delta < 0 || !increasing || offset_delta > self.header.last_offset_delta {
            return Err(BatchError::BadRecord {
                index,
                reason: "offset delta not increasing within the last offset delta",
            });
        }
        self.header
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or(BatchError::BadRecord {
                index,
                reason: "offset overflows",
            })
    }

    fn timestamp(&self, timestamp_delta: i64) -> i64 {
        if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(timestamp_delta)
        }
    }

    /// The error for bytes left after the header's record count: a count mismatch when they
    /// are whole records (judged by their length prefixes), otherwise a malformed record.
    fn trailing_error(&self) -> BatchError {
        let expected = self.expected_count();
        let mut rest = &self.records[self.position..];
        let mut extra = 0usize;
        while !rest.is_empty() {
            let next = decode_varint(rest).ok().and_then(|(length, used)| {
                let length = usize::try_from(length).ok()?;
                rest.get(used..)?.get(length..)
            });
            match next {
                Some(after) => rest = after,
                None => {
                    return BatchError::BadRecord {
                        index: expected,
                        reason: "bytes after the last record",
                    }
                }
            }
            extra += 1;
        }
        BatchError::RecordCountMismatch {
            expected,
            actual: expected + extra,
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<RecordView, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let expected = self.expected_count();
        let result = if self.index == expected {
            self.done = true;
            if self.position == self.records.len() {
                return None;
            }
            Err(self.trailing_error())
        } else if self.position == self.records.len() {
            Err(BatchError::RecordCountMismatch {
                expected,
                actual: self.index,
            })
        } else {
            self.decode_next()
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // One more item when the count turns out wrong.
            (0, Some(self.expected_count() - self.index + 1))
        }
    }
}

impl FusedIterator for RecordIter {}

/// Reads the fields of one record's body, slicing them out without copying.
struct FieldReader<'a> {
    /// The record after its length prefix, exactly as long as the prefix says.
    body: &'a Bytes,
    /// Where the next field starts in `body`.
    position: usize,
    /// The record's index in its batch, for errors.
    index: usize,
}

impl FieldReader<'_> {
    fn rest(&self) -> &[u8] {
        &self.body[self.position..]
    }

    fn bad(&self, reason: &'static str) -> BatchError {
        BatchError::BadRecord {
            index: self.index,
            reason,
        }
    }

    fn overrun(&self) -> BatchError {
        self.bad("fields run past the record's length")
    }

    fn i8(&mut self) -> Result<i8, BatchError> {
        let byte = *self.rest().first().ok_or_else(|| self.overrun())?;
        self.position += 1;
        Ok(byte as i8)
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        match decode_varint(self.rest()) {
            Ok((value, used)) => {
                self.position += used;
                Ok(value)
            }
            Err(BatchError::Truncated { .. }) => Err(self.overrun()),
            Err(error) => Err(error),
        }
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        match decode_varlong(self.rest()) {
            Ok((value, used)) => {
                self.position += used;
                Ok(value)
            }
            Err(BatchError::Truncated { .. }) => Err(self.overrun()),
            Err(error) => Err(error),
        }
    }

    /// `length` bytes as a slice of the body, after checking they are there.
    fn take(&mut self, length: usize) -> Result<Bytes, BatchError> {
        if length > self.rest().len() {
            return Err(self.overrun());
        }
        let bytes = self.body.slice(self.position..self.position + length);
        self.position += length;
        Ok(bytes)
    }

    /// A length-prefixed field where -1 means null; other negative lengths are malformed.
    fn nullable(&mut self, negative: &'static str) -> Result<Option<Bytes>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            length => {
                let length = usize::try_from(length).map_err(|_| self.bad(negative))?;
                self.take(length).map(Some)
            }
        }
    }

    fn headers(&mut self) -> Result<Vec<Header>, BatchError> {
        let count = self.varint()?;
        let count = usize::try_from(count).map_err(|_| self.bad("negative header count"))?;
        if count > RECORD_HEADERS_MAX {
            return Err(self.bad("more headers than RECORD_HEADERS_MAX"));
        }
        // Every header takes at least two bytes (two length varints), so a count the bytes
        // cannot hold is rejected before it sizes an allocation.
        if count > self.rest().len() / 2 {
            return Err(self.overrun());
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let key_length = self.varint()?;
            let key_length =
                usize::try_from(key_length).map_err(|_| self.bad("negative header key length"))?;
            let key = self.take(key_length)?;
            let value = self.nullable("negative header value length")?;
            headers.push(Header { key, value });
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record {
                timestamp: 1_000,
                key: bytes("k0"),
                value: bytes("hello"),
                headers: vec![Header::new("h", bytes("v")), Header::new("n", None)],
            },
            Record::new(990, None, bytes("")),
            Record::new(1_005, bytes(""), None),
        ]
    }

    fn seal(compression: Compression, records: &[Record]) -> Bytes {
        let mut builder = BatchBuilder::new(compression);
        for record in records {
            builder.append(record).unwrap();
        }
        builder.seal(100).unwrap()
    }

    fn decode(batch: &Bytes) -> Result<Vec<RecordView>, BatchError> {
        records(batch)?.collect()
    }

    /// A batch whose records section is `section`, with a correct header and CRC.
    fn batch_with_section(record_count: i32, last_offset_delta: i32, section: &[u8]) -> Bytes {
        let mut batch = vec![0u8; HEADER_BYTES];
        batch.extend_from_slice(section);
        let header = BatchHeader {
            base_offset: 0,
            batch_length: (batch.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: -1,
            magic: MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count,
        };
        header.write(&mut batch);
        let crc = batch::compute_crc(&batch);
        batch[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(batch)
    }

    #[test]
    fn round_trip_both_codecs() {
        for compression in [Compression::None, Compression::Zstd] {
            let batch = seal(compression, &sample_records());
            let header = batch::validate(&batch).unwrap();
            assert_eq!(header.compression(), Ok(compression));
            assert_eq!(header.base_timestamp, 1_000);
            assert_eq!(header.max_timestamp, 1_005);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.partition_leader_epoch, -1);
            let decoded = decode(&batch).unwrap();
            let offsets: Vec<i64> = decoded.iter().map(|record| record.offset).collect();
            assert_eq!(offsets, [100, 101, 102]);
            let records: Vec<Record> = decoded.into_iter().map(RecordView::into_record).collect();
            assert_eq!(records, sample_records());
        }
    }

    #[test]
    fn uncompressed_values_are_slices_of_the_batch() {
        let batch = seal(Compression::None, &sample_records());
        let decoded = decode(&batch).unwrap();
        let value = decoded[0].value.as_ref().unwrap();
        let batch_range = batch.as_ptr_range();
        assert!(batch_range.contains(&value.as_ptr()));
    }

    #[test]
    fn builder_tracks_size_and_count() {
        let mut builder = BatchBuilder::new(Compression::None);
        assert!(builder.is_empty());
        assert_eq!(builder.estimated_bytes(), HEADER_BYTES);
        for record in sample_records() {
            let predicted = builder.estimated_bytes_with(&record);
            builder.append(&record).unwrap();
            assert_eq!(builder.estimated_bytes(), predicted);
        }
        assert_eq!(builder.record_count(), 3);
        let size = builder.estimated_bytes();
        assert_eq!(builder.seal(0).unwrap().len(), size);
    }

    #[test]
    fn a_recycled_buffer_encodes_the_same_batch_in_the_same_memory() {
        let first: Vec<Record> = (0..50)
            .map(|index| Record::new(1_000 + index, None, Some(Bytes::from(vec![7u8; 300]))))
            .collect();
        let second = vec![Record::new(5, Some(Bytes::from_static(b"k")), None)];
        let sealed = seal(Compression::None, &first);
        let address = sealed.as_ptr();
        let recycled = sealed.try_into_mut().expect("the only handle");
        let mut builder = BatchBuilder::with_buffer(Compression::None, recycled, 1024);
        for record in &second {
            builder.append(record).unwrap();
        }
        let again = builder.seal(100).unwrap();
        assert_eq!(
            again,
            seal(Compression::None, &second),
            "old bytes do not leak in"
        );
        assert_eq!(again.as_ptr(), address, "the memory was reused");
        assert_eq!(decode(&again).unwrap().len(), 1);
    }

    #[test]
    fn sealing_an_empty_builder_fails() {
        let builder = BatchBuilder::new(Compression::Zstd);
        assert!(matches!(
            builder.seal(0),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn oversized_record_is_rejected_and_builder_unchanged() {
        let mut builder = BatchBuilder::new(Compression::None);
        builder
            .append(&Record::new(0, None, bytes("small")))
            .unwrap();
        let size = builder.estimated_bytes();
        let huge = Record::new(0, None, Some(Bytes::from(vec![0u8; BATCH_BYTES_MAX])));
        assert!(matches!(
            builder.append(&huge),
            Err(BatchError::BadLength { .. })
        ));
        assert_eq!(builder.estimated_bytes(), size);
        assert_eq!(builder.record_count(), 1);
        let many_headers = Record {
            headers: vec![Header::new("", None); RECORD_HEADERS_MAX + 1],
            ..Record::default()
        };
        assert!(matches!(
            builder.append(&many_headers),
            Err(BatchError::BadRecord { index: 1, .. })
        ));
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        let records = vec![
            Record::new(i64::MAX, None, None),
            Record::new(i64::MIN, None, None),
            Record::new(-1, None, None),
        ];
        let batch = seal(Compression::None, &records);
        let decoded: Vec<Record> = decode(&batch)
            .unwrap()
            .into_iter()
            .map(RecordView::into_record)
            .collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn fewer_records_than_the_header_says() {
        // One record: length 7, attributes, deltas 0, null key, empty value, no headers.
        let record = [0x0C, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        let batch = batch_with_section(2, 1, &record);
        let mut iter = records(&batch).unwrap();
        assert!(iter.next().unwrap().is_ok());
        assert_eq!(
            iter.next(),
            Some(Err(BatchError::RecordCountMismatch {
                expected: 2,
                actual: 1
            }))
        );
        assert_eq!(iter.next(), None);
    }

    #[test]
    fn more_records_than_the_header_says() {
        let first = [0x0C, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        let second = [0x0C, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00];
        let batch = batch_with_section(1, 0, &[&first[..], &second[..]].concat());
        let result = decode(&batch);
        assert_eq!(
            result,
            Err(BatchError::RecordCountMismatch {
                expected: 1,
                actual: 2
            })
        );
        let batch = batch_with_section(1, 0, &[&first[..], &[0x7F][..]].concat());
        assert!(matches!(
            decode(&batch),
            Err(BatchError::BadRecord { index: 1, .. })
        ));
    }

    #[test]
    fn length_prefix_must_match_the_fields() {
        // Says 7 bytes, fields use 6 (then one trailing byte inside the record).
        let longer = [0x0E, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert!(matches!(
            decode(&batch_with_section(1, 0, &longer)),
            Err(BatchError::BadRecord { index: 0, .. })
        ));
        // Says 5 bytes, fields need 6.
        let shorter = [0x0A, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        assert!(matches!(
            decode(&batch_with_section(1, 0, &shorter)),
            Err(BatchError::BadRecord { index: 0, .. })
        ));
    }

    #[test]
    fn hostile_lengths_and_counts_are_rejected_before_allocating() {
        // Key length i32::MAX in a tiny record.
        let huge_key = [0x0E, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F];
        let huge_key = [&huge_key[..], &[0; 2][..]].concat();
        assert!(decode(&batch_with_section(1, 0, &huge_key)).is_err());
        // Header count 65536 with no bytes for them.
        let many = [0x0C, 0x00, 0x00, 0x00, 0x01, 0x01, 0x80, 0x80, 0x08];
        assert!(matches!(
            decode(&batch_with_section(1, 0, &many)),
            Err(BatchError::BadRecord { index: 0, .. })
        ));
        // Negative record length.
        assert!(decode(&batch_with_section(1, 0, &[0x01])).is_err());
    }

    #[test]
    fn offset_deltas_must_increase() {
        let first = [0x0C, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00];
        let second = [0x0C, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00];
        let batch = batch_with_section(2, 1, &[&first[..], &second[..]].concat());
        assert!(matches!(
            decode(&batch),
            Err(BatchError::BadRecord { index: 1, .. })
        ));
    }

    #[test]
    fn decompression_is_bounded() {
        let records = vec![0u8; 1 << 20];
        let frame = zstd::bulk::compress(&records, 3).unwrap();
        assert_eq!(decompress_zstd(&frame, 1 << 20).unwrap(), records);
        assert!(matches!(
            decompress_zstd(&frame, (1 << 20) - 1),
            Err(BatchError::Decompression { .. })
        ));
        assert!(matches!(
            decompress_zstd(&frame, 1000),
            Err(BatchError::Decompression { .. })
        ));
        assert!(decompress_zstd(&frame[..frame.len() - 1], 1 << 20).is_err());
        assert!(decompress_zstd(&[], 1 << 20).is_err());
    }

    #[test]
    fn decompression_ignores_the_claimed_size() {
        // A frame that claims 2^40 bytes of content but carries a few bytes of it.
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD];
        // Frame header descriptor: 8-byte content size (little-endian 2^40), single segment.
        frame.push(0xE0);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0]);
        // One raw, last block of 3 bytes.
        frame.extend_from_slice(&[0x19, 0x00, 0x00, b'a', b'b', b'c']);
        assert!(decompress_zstd(&frame, 1 << 20).is_err());
    }
}
