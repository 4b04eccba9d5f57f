//! Kafka's variable-length integers: zigzag-encoded base-128 varints (as in protobuf's
//! `sint32`/`sint64`), used for every length, delta and count inside a record.
//!
//! Zigzag maps signed to unsigned so that small magnitudes of either sign stay short
//! (0 → 0, -1 → 1, 1 → 2, -2 → 3, ...); the result is written seven bits at a time, least
//! significant group first, with the high bit of each byte saying "more follows".
//!
//! Decoding works on byte slices, never panics, and rejects encodings longer than the type
//! allows (5 bytes for an `i32`, 10 for an `i64`) or carrying bits beyond the type's width.
//! Non-minimal encodings within those lengths (such as `0x80 0x00` for zero) are accepted, as
//! Kafka's own reader accepts them. This module does not know about records (see
//! [`crate::record`]).

use bytes::BufMut;

use crate::error::BatchError;

/// The longest encoding of an `i32`: 32 bits in groups of 7.
pub const VARINT_BYTES_MAX: usize = 5;
/// The longest encoding of an `i64`: 64 bits in groups of 7.
pub const VARLONG_BYTES_MAX: usize = 10;

/// Appends the zigzag varint encoding of `value` to `target`.
pub fn encode_varint(value: i32, target: &mut impl BufMut) {
    encode_unsigned(u64::from(zigzag_32(value)), target);
}

/// Appends the zigzag varlong encoding of `value` to `target`.
pub fn encode_varlong(value: i64, target: &mut impl BufMut) {
    encode_unsigned(zigzag_64(value), target);
}

/// The number of bytes [`encode_varint`] writes for `value`.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(u64::from(zigzag_32(value)))
}

/// The number of bytes [`encode_varlong`] writes for `value`.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(zigzag_64(value))
}

/// Decodes the zigzag varint at the start of `bytes`, returning it with the number of bytes it
/// used. [`BatchError::Truncated`] when `bytes` ends inside it; [`BatchError::BadVarint`] when
/// it is longer than [`VARINT_BYTES_MAX`] or does not fit an `i32`.
pub fn decode_varint(bytes: &[u8]) -> Result<(i32, usize), BatchError> {
    let (unsigned, used) = decode_unsigned(bytes, VARINT_BYTES_MAX, 32)?;
    let unsigned = u32::try_from(unsigned).map_err(|_| BatchError::BadVarint)?;
    Ok((unzigzag_32(unsigned), used))
}

/// Decodes the zigzag varlong at the start of `bytes`, returning it with the number of bytes
/// it used. [`BatchError::Truncated`] when `bytes` ends inside it; [`BatchError::BadVarint`]
/// when it is longer than [`VARLONG_BYTES_MAX`] or does not fit an `i64`.
pub fn decode_varlong(bytes: &[u8]) -> Result<(i64, usize), BatchError> {
    let (unsigned, used) = decode_unsigned(bytes, VARLONG_BYTES_MAX, 64)?;
    Ok((unzigzag_64(unsigned), used))
}

fn zigzag_32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn zigzag_64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag_32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

fn unzigzag_64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn encode_unsigned(mut value: u64, target: &mut impl BufMut) {
    while value >= 0x80 {
        target.put_u8((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    target.put_u8(value as u8);
}

fn unsigned_len(value: u64) -> usize {
    // One byte per started group of 7 significant bits, and at least one byte for zero.
    let significant_bits = 64 - value.leading_zeros() as usize;
    significant_bits.div_ceil(7).max(1)
}

/// Reads at most `bytes_max` bytes of a base-128 number that must fit in `bits` bits.
fn decode_unsigned(bytes: &[u8], bytes_max: usize, bits: u32) -> Result<(u64, usize), BatchError> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().take(bytes_max).enumerate() {
        let shift = 7 * index as u32;
        let group = u64::from(byte & 0x7F);
        // The last allowed byte may only carry the bits that are left of the type's width.
        if bits - shift < 7 && group >> (bits - shift) != 0 {
            return Err(BatchError::BadVarint);
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    if bytes.len() >= bytes_max {
        Err(BatchError::BadVarint)
    } else {
        Err(BatchError::Truncated {
            needed: bytes.len() + 1,
            available: bytes.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_varint(value: i32, expected: &[u8]) {
        let mut encoded = Vec::new();
        encode_varint(value, &mut encoded);
        assert_eq!(encoded, expected, "encoding {value}");
        assert_eq!(varint_len(value), expected.len(), "length of {value}");
        assert_eq!(decode_varint(&encoded), Ok((value, expected.len())));
        // As a varlong, the same value has the same encoding.
        assert_eq!(
            decode_varlong(&encoded),
            Ok((i64::from(value), expected.len()))
        );
    }

    fn check_varlong(value: i64, expected: &[u8]) {
        let mut encoded = Vec::new();
        encode_varlong(value, &mut encoded);
        assert_eq!(encoded, expected, "encoding {value}");
        assert_eq!(varlong_len(value), expected.len(), "length of {value}");
        assert_eq!(decode_varlong(&encoded), Ok((value, expected.len())));
    }

    #[test]
    fn varint_boundaries() {
        check_varint(0, &[0x00]);
        check_varint(-1, &[0x01]);
        check_varint(1, &[0x02]);
        check_varint(-64, &[0x7F]);
        check_varint(64, &[0x80, 0x01]);
        check_varint(150, &[0xAC, 0x02]);
        check_varint(i32::MAX, &[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]);
        check_varint(i32::MIN, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    }

    #[test]
    fn varlong_boundaries() {
        check_varlong(0, &[0x00]);
        check_varlong(-1, &[0x01]);
        check_varlong(1, &[0x02]);
        check_varlong(i64::from(i32::MAX) + 1, &[0x80, 0x80, 0x80, 0x80, 0x10]);
        let mut max = vec![0xFE];
        max.extend([0xFF; 8]);
        max.push(0x01);
        check_varlong(i64::MAX, &max);
        let mut min = vec![0xFF; 9];
        min.push(0x01);
        check_varlong(i64::MIN, &min);
    }

    #[test]
    fn decode_ignores_bytes_after_the_number() {
        assert_eq!(decode_varint(&[0x02, 0xFF, 0xFF]), Ok((1, 1)));
        assert_eq!(decode_varlong(&[0xAC, 0x02, 0x00]), Ok((150, 2)));
    }

    #[test]
    fn truncated_input_is_reported() {
        let truncated = BatchError::Truncated {
            needed: 1,
            available: 0,
        };
        assert_eq!(decode_varint(&[]), Err(truncated.clone()));
        assert_eq!(decode_varlong(&[]), Err(truncated));
        assert_eq!(
            decode_varint(&[0x80, 0x80]),
            Err(BatchError::Truncated {
                needed: 3,
                available: 2
            })
        );
        assert!(matches!(
            decode_varlong(&[0xFF; 9]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn over_long_encodings_are_rejected() {
        assert_eq!(decode_varint(&[0x80; 5]), Err(BatchError::BadVarint));
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(BatchError::BadVarint)
        );
        assert_eq!(decode_varlong(&[0x80; 10]), Err(BatchError::BadVarint));
        assert_eq!(decode_varlong(&[0x80; 11]), Err(BatchError::BadVarint));
    }

    #[test]
    fn bits_beyond_the_type_are_rejected() {
        // A fifth varint byte may carry 4 bits, a tenth varlong byte 1 bit.
        assert_eq!(
            decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F]),
            Err(BatchError::BadVarint)
        );
        let mut long = vec![0xFF; 9];
        long.push(0x02);
        assert_eq!(decode_varlong(&long), Err(BatchError::BadVarint));
    }

    #[test]
    fn non_minimal_encodings_within_the_length_are_accepted() {
        assert_eq!(decode_varint(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(decode_varint(&[0x81, 0x80, 0x80, 0x80, 0x00]), Ok((-1, 5)));
    }

    #[test]
    fn round_trips_every_length_class() {
        for shift in 0..64 {
            let power = 1i64 << shift;
            for value in [power, power.wrapping_neg(), power.wrapping_sub(1)] {
                let mut encoded = Vec::new();
                encode_varlong(value, &mut encoded);
                assert_eq!(decode_varlong(&encoded), Ok((value, encoded.len())));
                assert_eq!(varlong_len(value), encoded.len());
                if let Ok(narrow) = i32::try_from(value) {
                    assert_eq!(decode_varint(&encoded), Ok((narrow, encoded.len())));
                } else {
                    assert!(decode_varint(&encoded).is_err(), "{value} decoded as i32");
                }
            }
        }
    }
}
