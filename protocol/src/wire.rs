//! Primitive encoding of protocol messages: big-endian integers, strings, byte blobs, arrays.
//!
//! ```text
//! i8 i16 i32 i64          big-endian
//! string                  i16 length, then UTF-8 bytes; length -1 = null
//! bytes                   i32 length, then the bytes; length -1 = null
//! array<T>                i32 count, then the elements; count -1 = null
//! ```
//!
//! [`Reader`] decodes from a `BytesMut` frame and never panics: every length is checked
//! against the bytes that remain before anything is allocated, and byte blobs (record batches)
//! are split off the frame without copying.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::DecodeError;

/// Reads protocol primitives from the front of a frame.
#[derive(Debug)]
pub struct Reader {
    /// The bytes not yet read.
    rest: BytesMut,
    /// Array elements the reader may still decode (see [`Reader::limit_elements`]).
    elements_left: usize,
}

impl Reader {
    /// Reads from `frame`.
    pub fn new(frame: BytesMut) -> Reader {
        Reader {
            rest: frame,
            elements_left: usize::MAX,
        }
    }

    /// Refuses arrays once `limit` elements were decoded over all of them, so that a
    /// message's decoded size stays within a bound however its bytes are spent.
    pub fn limit_elements(&mut self, limit: usize) {
        self.elements_left = limit;
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Fails unless every byte was read: trailing bytes mean a malformed message.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }

    fn need(&self, bytes: usize) -> Result<(), DecodeError> {
        if self.rest.len() < bytes {
            return Err(DecodeError::Truncated {
                needed: bytes,
                available: self.rest.len(),
            });
        }
        Ok(())
    }

    /// An `i8`.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        self.need(1)?;
        Ok(self.rest.get_i8())
    }

    /// An `i16`.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.rest.get_i16())
    }

    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.rest.get_i32())
    }

    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.rest.get_i64())
    }

    /// A boolean (one byte, 0 or 1).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.i8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what: "boolean" }),
        }
    }

    /// A nullable string.
    pub fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        let length = self.i16()?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| DecodeError::Invalid {
            what: "string length",
        })?;
        self.need(length)?;
        let bytes = self.rest.split_to(length);
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| DecodeError::Invalid { what: "UTF-8" })
    }

    /// A string that must not be null.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.nullable_string()?.ok_or(DecodeError::Invalid {
            what: "null string",
        })
    }

    /// A nullable byte blob, split off the frame without copying.
    pub fn nullable_bytes(&mut self) -> Result<Option<BytesMut>, DecodeError> {
        let length = self.i32()?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| DecodeError::Invalid {
            what: "bytes length",
        })?;
        self.need(length)?;
        Ok(Some(self.rest.split_to(length)))
    }

    /// A byte blob; null reads as empty.
    pub fn bytes(&mut self) -> Result<BytesMut, DecodeError> {
        Ok(self.nullable_bytes()?.unwrap_or_default())
    }

    /// An array, each element read by `element`. The count is bounded by the bytes that
    /// remain (every element takes at least `min_element_bytes`), so a hostile count cannot
    /// make the reader allocate.
    pub fn array<T>(
        &mut self,
        min_element_bytes: usize,
        mut element: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        Ok(self
            .nullable_array(min_element_bytes, &mut element)?
            .unwrap_or_default())
    }

    /// A nullable array (count -1).
    pub fn nullable_array<T>(
        &mut self,
        min_element_bytes: usize,
        mut element: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let count = self.i32()?;
        if count == -1 {
            return Ok(None);
        }
        let count = usize::try_from(count).map_err(|_| DecodeError::Invalid {
            what: "array count",
        })?;
        if count > self.elements_left {
            return Err(DecodeError::Invalid {
                what: "array elements beyond the request's limit",
            });
        }
        self.elements_left -= count;
        if count.saturating_mul(min_element_bytes.max(1)) > self.rest.len() {
            return Err(DecodeError::Truncated {
                needed: count.saturating_mul(min_element_bytes.max(1)),
                available: self.rest.len(),
            });
        }
        let mut elements = Vec::with_capacity(count);
        for _ in 0..count {
            elements.push(element(self)?);
        }
        Ok(Some(elements))
    }
}

/// Writes a nullable string. A string longer than the format allows (`i16::MAX` bytes) is
/// cut at the last character boundary that fits: names are validated far below that, so
/// only free text (an error message quoting a client's input) can be that long, and a cut
/// message beats a failed response.
pub fn put_nullable_string(target: &mut BytesMut, value: Option<&str>) {
    match value {
        None => target.put_i16(-1),
        Some(value) => {
            let mut end = value.len().min(i16::MAX as usize);
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            target.put_i16(end as i16);
            target.put_slice(&value.as_bytes()[..end]);
        }
    }
}

/// Writes a string.
pub fn put_string(target: &mut BytesMut, value: &str) {
    put_nullable_string(target, Some(value));
}

/// Writes a byte blob.
///
/// # Panics
/// If it is longer than `i32::MAX` bytes: frames are far smaller.
pub fn put_bytes(target: &mut BytesMut, value: &[u8]) {
    put_bytes_length(target, value.len());
    target.put_slice(value);
}

/// Writes the length prefix of a blob of `length` bytes whose bytes are written elsewhere
/// (a frame part of their own).
///
/// # Panics
/// If it is longer than `i32::MAX` bytes: frames are far smaller.
pub fn put_bytes_length(target: &mut BytesMut, length: usize) {
    target.put_i32(i32::try_from(length).expect("blobs are bounded by the frame size"));
}

/// Writes an array, each element by `element`.
pub fn put_array<T>(
    target: &mut BytesMut,
    values: &[T],
    mut element: impl FnMut(&mut BytesMut, &T),
) {
    target.put_i32(i32::try_from(values.len()).unwrap_or(i32::MAX));
    for value in values {
        element(target, value);
    }
}

/// Writes a nullable array.
pub fn put_nullable_array<T>(
    target: &mut BytesMut,
    values: Option<&[T]>,
    element: impl FnMut(&mut BytesMut, &T),
) {
    match values {
        None => target.put_i32(-1),
        Some(values) => put_array(target, values, element),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_element_limit_counts_over_all_arrays() {
        let mut buffer = BytesMut::new();
        for _ in 0..2 {
            put_array(&mut buffer, &[1i32, 2, 3], |target, value| {
                target.put_i32(*value)
            });
        }
        let decode = |limit| {
            let mut reader = Reader::new(buffer.clone());
            reader.limit_elements(limit);
            let first = reader.array(4, |reader| reader.i32())?;
            let second = reader.array(4, |reader| reader.i32())?;
            Ok::<_, DecodeError>((first, second))
        };
        assert_eq!(decode(6).unwrap(), (vec![1, 2, 3], vec![1, 2, 3]));
        assert!(matches!(decode(5), Err(DecodeError::Invalid { .. })));
        assert!(matches!(decode(2), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn primitives_round_trip() {
        let mut buffer = BytesMut::new();
        buffer.put_i8(-3);
        buffer.put_i16(-300);
        buffer.put_i32(70_000);
        buffer.put_i64(-1 << 40);
        put_string(&mut buffer, "héllo");
        put_nullable_string(&mut buffer, None);
        put_bytes(&mut buffer, b"abc");
        put_array(&mut buffer, &[1i32, 2, 3], |target, value| {
            target.put_i32(*value)
        });
        put_nullable_array::<i32>(&mut buffer, None, |target, value| target.put_i32(*value));
        let mut reader = Reader::new(buffer);
        assert_eq!(reader.i8().unwrap(), -3);
        assert_eq!(reader.i16().unwrap(), -300);
        assert_eq!(reader.i32().unwrap(), 70_000);
        assert_eq!(reader.i64().unwrap(), -1 << 40);
        assert_eq!(reader.string().unwrap(), "héllo");
        assert_eq!(reader.nullable_string().unwrap(), None);
        assert_eq!(&reader.bytes().unwrap()[..], b"abc");
        assert_eq!(reader.array(4, Reader::i32).unwrap(), vec![1, 2, 3]);
        assert_eq!(reader.nullable_array(4, Reader::i32).unwrap(), None);
        reader.finish().unwrap();
    }

    #[test]
    fn over_long_strings_are_cut_at_a_character_boundary() {
        let long = "é".repeat(20_000); // 40,000 bytes
        let mut buffer = BytesMut::new();
        put_string(&mut buffer, &long);
        let decoded = Reader::new(buffer).string().unwrap();
        assert_eq!(decoded.len(), 32_766, "the last whole character that fits");
        assert!(long.starts_with(&decoded));
    }

    #[test]
    fn hostile_lengths_fail_before_allocating() {
        let mut buffer = BytesMut::new();
        buffer.put_i32(i32::MAX); // an array of two billion elements, in four bytes
        assert!(matches!(
            Reader::new(buffer).array(1, Reader::i8),
            Err(DecodeError::Truncated { .. })
        ));
        let mut buffer = BytesMut::new();
        buffer.put_i32(1 << 30);
        assert!(Reader::new(buffer).bytes().is_err());
        let mut buffer = BytesMut::new();
        buffer.put_i16(-2);
        assert!(Reader::new(buffer).nullable_string().is_err());
        let mut buffer = BytesMut::new();
        buffer.put_i16(2);
        buffer.put_slice(&[0xFF, 0xFE]);
        assert!(Reader::new(buffer).string().is_err(), "invalid UTF-8");
    }
}
