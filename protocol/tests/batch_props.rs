//! Property tests of the record batch codec: what we seal decodes to what was appended, under
//! both codecs, and no input whatsoever makes a decoder panic.
//!
//! Method: proptest generates records (null and empty keys and values, headers with null
//! values, timestamps far apart in both directions), arbitrary byte strings, and single-byte
//! mutations of sealed batches. A failure prints its minimal case, and proptest stores the
//! seed under `proptest-regressions/` to replay it first on the next run; `PROPTEST_CASES`
//! raises the case counts for a longer soak.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use mq_protocol::batch::{self, field, BatchIter, HEADER_BYTES, LOG_OVERHEAD, MAGIC};
use mq_protocol::record::records;
use mq_protocol::{BatchBuilder, BatchError, BatchHeader, Compression, Header, Record, RecordView};
use proptest::prelude::*;

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

fn nullable_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
}

fn header() -> impl Strategy<Value = Header> {
    (".{0,6}", nullable_bytes()).prop_map(|(key, value)| Header::new(key, value))
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => (BASE_TIMESTAMP - 10_000)..(BASE_TIMESTAMP + 10_000),
        1 => any::<i64>(),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        timestamp(),
        nullable_bytes(),
        nullable_bytes(),
        proptest::collection::vec(header(), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Record {
            timestamp,
            key,
            value,
            headers,
        })
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Zstd)]
}

fn seal(
    compression: Compression,
    records: &[Record],
    base_offset: i64,
    producer: (i64, i16, i32),
) -> Bytes {
    let mut builder =
        BatchBuilder::new(compression).with_producer(producer.0, producer.1, producer.2);
    for record in records {
        builder.append(record).unwrap();
    }
    builder.seal(base_offset).unwrap()
}

fn decode(batch: &Bytes) -> Result<Vec<RecordView>, BatchError> {
    records(batch)?.collect()
}

/// Runs every decoder over `bytes`; only panics matter, so results are dropped.
fn decode_everything(bytes: &[u8]) {
    let _ = batch::validate(bytes);
    let _ = BatchHeader::parse(bytes);
    let _ = BatchIter::new(bytes).count();
    let _ = BatchIter::validating(bytes).count();
    let _ = batch::whole_batches_len(bytes);
    let _ = batch::peek_total_bytes(bytes);
    let _ = records(&Bytes::copy_from_slice(bytes)).map(|iter| iter.count());
}

/// A batch around `section` with the given header fields and a correct length and CRC.
fn wrap(section: &[u8], attributes: i16, record_count: i32, last_offset_delta: i32) -> Bytes {
    let mut batch = vec![0u8; HEADER_BYTES];
    batch.extend_from_slice(section);
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (batch.len() - LOG_OVERHEAD) as i32,
        partition_leader_epoch: -1,
        magic: MAGIC,
        crc: 0,
        attributes,
        last_offset_delta,
        base_timestamp: BASE_TIMESTAMP,
        max_timestamp: BASE_TIMESTAMP,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    };
    header.write(&mut batch);
    fix_crc(&mut batch);
    Bytes::from(batch)
}

fn fix_crc(batch: &mut [u8]) {
    let crc = batch::compute_crc(batch);
    batch[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sealed_batches_decode_to_their_records(
        records in proptest::collection::vec(record(), 1..24),
        compression in compression(),
        base_offset in 0i64..(i64::MAX / 2),
        producer in (any::<i64>(), any::<i16>(), any::<i32>()),
    ) {
        let batch = seal(compression, &records, base_offset, producer);
        let header = batch::validate(&batch).unwrap();
        prop_assert_eq!(header.compression(), Ok(compression));
        prop_assert_eq!(header.record_count as usize, records.len());
        prop_assert!(header.check_producible().is_ok());
        prop_assert_eq!(header.base_offset, base_offset);
        prop_assert_eq!(header.base_timestamp, records[0].timestamp);
        let max_timestamp = records.iter().map(|record| record.timestamp).max().unwrap();
        prop_assert_eq!(header.max_timestamp, max_timestamp);
        prop_assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), producer);

        let decoded = decode(&batch).unwrap();
        let offsets: Vec<i64> = decoded.iter().map(|record| record.offset).collect();
        let expected_offsets: Vec<i64> = (0..records.len() as i64).map(|delta| base_offset + delta).collect();
        prop_assert_eq!(offsets, expected_offsets);
        let decoded: Vec<Record> = decoded.into_iter().map(RecordView::into_record).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn uncompressed_size_estimate_is_exact(records in proptest::collection::vec(record(), 1..16)) {
        let mut builder = BatchBuilder::new(Compression::None);
        for record in &records {
            let predicted = builder.estimated_bytes_with(record);
            builder.append(record).unwrap();
            prop_assert_eq!(builder.estimated_bytes(), predicted);
        }
        let size = builder.estimated_bytes();
        prop_assert_eq!(builder.seal(0).unwrap().len(), size);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_plausible_header_never_panic(
        prefix in proptest::collection::vec(any::<u8>(), HEADER_BYTES..HEADER_BYTES + 1),
        rest in proptest::collection::vec(any::<u8>(), 0..100),
        claimed_length in 49i32..200,
    ) {
        // A length and magic that pass the first checks, so the later ones are reached.
        let mut bytes = [prefix, rest].concat();
        bytes[field::LENGTH..][..4].copy_from_slice(&claimed_length.to_be_bytes());
        bytes[field::MAGIC] = MAGIC as u8;
        decode_everything(&bytes);
        fix_crc(&mut bytes);
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_records_sections_never_panic(
        section in proptest::collection::vec(any::<u8>(), 0..200),
        compress in any::<bool>(),
        log_append_time in any::<bool>(),
        record_count in 0i32..6,
        last_offset_delta in 0i32..6,
    ) {
        // Compressing the random bytes makes them reach the record decoder behind zstd.
        let (section, codec) = if compress {
            (zstd::bulk::compress(&section, 1).unwrap(), Compression::Zstd.codec())
        } else {
            (section, Compression::None.codec())
        };
        let attributes = i16::from(codec) | if log_append_time { 0x08 } else { 0 };
        let batch = wrap(&section, attributes, record_count, last_offset_delta);
        let _ = decode(&batch);
    }

    #[test]
    fn record_shaped_sections_never_panic(
        fields in proptest::collection::vec(
            prop_oneof![
                any::<i32>().prop_map(|value| varint(i64::from(value))),
                (-2i64..40).prop_map(varint),
                any::<i64>().prop_map(varint),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            0..24,
        ),
        record_count in 0i32..4,
    ) {
        // Sequences of varints and short byte runs look enough like records to get deep.
        let section = fields.concat();
        let _ = decode(&wrap(&section, 0, record_count, record_count.max(1) - 1));
    }

    #[test]
    fn mutated_byte_is_detected_or_decodes(
        records in proptest::collection::vec(record(), 1..8),
        compression in compression(),
        position_seed in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let batch = seal(compression, &records, 0, (-1, -1, -1));
        let position = position_seed % batch.len();
        let mut mutated = batch.to_vec();
        mutated[position] ^= flip;

        // Outside the base offset and the leader epoch, any change breaks the length, the
        // magic or the CRC (a CRC-32 catches every error within 32 consecutive bits).
        let unchecked = position < field::LENGTH
            || (field::PARTITION_LEADER_EPOCH..field::MAGIC).contains(&position);
        let validated = batch::validate(&mutated);
        prop_assert_eq!(validated.is_ok(), unchecked, "mutation at {}", position);
        if unchecked {
            match decode(&Bytes::from(mutated.clone())) {
                Ok(decoded) => {
                    let decoded: Vec<Record> = decoded.into_iter().map(RecordView::into_record).collect();
                    prop_assert_eq!(decoded, records.clone());
                }
                Err(error) => {
                    let is_bad_record = matches!(error, BatchError::BadRecord { .. });
                    prop_assert!(is_bad_record, "unexpected {:?}", error);
                }
            }
        }

        // With the CRC recomputed, the record decoder sees the damage: it may fail, not panic.
        fix_crc(&mut mutated);
        let _ = decode(&Bytes::from(mutated));
    }
}

fn varint(value: i64) -> Vec<u8> {
    let mut encoded = Vec::new();
    mq_protocol::varint::encode_varlong(value, &mut encoded);
    encoded
}
