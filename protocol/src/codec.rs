//! [`FrameCodec`]: length-prefixed frames for `tokio_util::codec`; the only use of tokio-util.
//!
//! A frame is a big-endian `u32` length, then that many bytes. The length is checked against
//! the codec's limit before any buffer is reserved for the frame, so a peer announcing a
//! gigabyte gets an error, not an allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::DecodeError;
use crate::request::{Request, RequestHeader};
use crate::response::{Response, ResponseHeader};

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Splits a byte stream into frames of at most `max_frame_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// The largest frame accepted, length prefix excluded.
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = DecodeError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
        if source.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u32::from_be_bytes([source[0], source[1], source[2], source[3]]);
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > self.max_frame_bytes {
            return Err(DecodeError::FrameTooLarge {
                length: length as u64,
                limit: self.max_frame_bytes,
            });
        }
        if source.len() < LENGTH_BYTES + length {
            // Reserve only what this (bounded) frame still needs.
            source.reserve(LENGTH_BYTES + length - source.len());
            return Ok(None);
        }
        source.advance(LENGTH_BYTES);
        Ok(Some(source.split_to(length)))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = DecodeError;

    fn encode(&mut self, frame: Bytes, target: &mut BytesMut) -> Result<(), DecodeError> {
        let length = u32::try_from(frame.len())
            .ok()
            .filter(|_| frame.len() <= self.max_frame_bytes)
            .ok_or(DecodeError::FrameTooLarge {
                length: frame.len() as u64,
                limit: self.max_frame_bytes,
            })?;
        target.reserve(LENGTH_BYTES + frame.len());
        target.put_u32(length);
        target.put_slice(&frame);
        Ok(())
    }
}

/// The payload of a request frame: header then body.
pub fn request_frame(header: &RequestHeader, request: &Request) -> Bytes {
    let mut payload = BytesMut::with_capacity(64);
    header.encode(&mut payload);
    request.encode(&mut payload);
    payload.freeze()
}

/// The payload of a response frame: header, then the body if the header carries no error.
pub fn response_frame(header: &ResponseHeader, response: Option<&Response>) -> Bytes {
    let mut payload = BytesMut::with_capacity(64);
    header.encode(&mut payload);
    if let Some(response) = response {
        response.encode(&mut payload);
    }
    payload.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_their_length() {
        let mut codec = FrameCodec::new(100);
        let mut stream = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"hello"), &mut stream)
            .unwrap();
        codec.encode(Bytes::from_static(b""), &mut stream).unwrap();
        let partial = stream.split_off(stream.len() - 2);
        assert_eq!(&codec.decode(&mut stream).unwrap().unwrap()[..], b"hello");
        assert_eq!(
            codec.decode(&mut stream).unwrap(),
            None,
            "half a length prefix"
        );
        stream.unsplit(partial);
        assert_eq!(&codec.decode(&mut stream).unwrap().unwrap()[..], b"");
        assert_eq!(codec.decode(&mut stream).unwrap(), None);
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let mut codec = FrameCodec::new(100);
        let mut stream = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut stream),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert!(stream.capacity() < 1024, "nothing reserved for the frame");
        let mut stream = BytesMut::from(&101u32.to_be_bytes()[..]);
        assert!(codec.decode(&mut stream).is_err());
        let mut stream = BytesMut::from(&100u32.to_be_bytes()[..]);
        assert_eq!(
            codec.decode(&mut stream).unwrap(),
            None,
            "at the limit: waits for bytes"
        );
    }
}
