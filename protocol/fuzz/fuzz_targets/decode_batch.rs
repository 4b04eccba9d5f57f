//! Fuzz target `batch`: bytes as a producer's record set or a segment's contents, through
//! every batch check and the record reader: `batch::validate`, `BatchHeader::parse`,
//! `BatchIter` (plain and validating), `whole_batches_len`, and `records` over each batch
//! (decompressing zstd batches within `DECOMPRESSED_BYTES_MAX`).
//!
//! The first input byte is a mode: when odd, the rest gets a header that agrees with it
//! (length, magic, CRC) before the checks, so that the fuzzer's bytes reach the record
//! decoder instead of stopping at the CRC. Checked: nothing panics; batches found lie inside
//! the input, one after another; a batch that validates yields at most its header's record
//! count before the reader stops.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mq_protocol::batch::{self, field, BatchHeader, BatchIter, HEADER_BYTES, LOG_OVERHEAD, MAGIC};
use mq_protocol::records;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = rest.to_vec();
    if mode % 2 == 1 && input.len() >= HEADER_BYTES {
        let length = i32::try_from(input.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
        input[field::LENGTH..][..4].copy_from_slice(&length.to_be_bytes());
        input[field::MAGIC] = MAGIC as u8;
        let crc = batch::compute_crc(&input);
        input[field::CRC..][..4].copy_from_slice(&crc.to_be_bytes());
    }
    check(&input);
});

fn check(data: &[u8]) {
    let _ = BatchHeader::parse(data);
    let _ = batch::peek_total_bytes(data);
    let whole = batch::whole_batches_len(data);
    assert!(whole <= data.len());
    let _ = BatchIter::new(data).count();
    let bytes = Bytes::copy_from_slice(data);
    let mut end = 0;
    for found in BatchIter::validating(data) {
        let Ok(found) = found else {
            break;
        };
        assert_eq!(found.position, end, "batches follow one another");
        end = found.position + found.header.total_bytes();
        assert!(end <= data.len(), "a batch past the input");
        let batch = bytes.slice(found.position..end);
        let header = batch::validate(&batch).expect("a batch the iterator validated");
        assert_eq!(header, found.header);
        if let Ok(reader) = records(&batch) {
            let read = reader.take_while(Result::is_ok).count();
            let expected = usize::try_from(header.record_count).unwrap_or(0);
            assert!(
                read <= expected,
                "{read} records from a batch of {expected}"
            );
        }
    }
    // The reader on its own, over anything (it validates first).
    if let Ok(reader) = records(&bytes) {
        for record in reader {
            if record.is_err() {
                break;
            }
        }
    }
}
