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
        let Some(length) = frame_length(source) else {
            return Ok(None);
        };
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

/// The length announced by the frame at the start of `buffer`, once its prefix is there.
pub fn frame_length(buffer: &[u8]) -> Option<usize> {
    let prefix: [u8; LENGTH_BYTES] = buffer.get(..LENGTH_BYTES)?.try_into().ok()?;
    Some(usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX))
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

/// Record sets at least this long go into a response frame as parts of their own (see
/// [`FrameParts`]); shorter ones are cheaper to copy than to write separately.
pub const SHARED_PART_MIN: usize = 16 * 1024;

/// A frame's payload as byte strings to be written one after another, so that fetched record
/// sets reach the socket without being copied into the frame (the length prefix is the
/// writer's: [`FrameParts::len`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameParts {
    parts: Vec<Bytes>,
}

impl FrameParts {
    /// The parts encoded so far followed by what is left in `head` (if anything).
    fn finish(mut parts: Vec<Bytes>, head: BytesMut) -> FrameParts {
        if !head.is_empty() || parts.is_empty() {
            parts.push(head.freeze());
        }
        FrameParts { parts }
    }

    /// The payload's length: the sum of its parts'.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The payload in one piece (a copy, unless it has only one part).
    pub fn concat(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [only] => only.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }
}

/// The payload of a request frame, as [`request_frame`], in parts: the record batches of a
/// Produce request (those of at least [`SHARED_PART_MIN`] bytes) are moved, not copied.
pub fn request_frame_parts(header: &RequestHeader, request: Request) -> FrameParts {
    let mut head = BytesMut::with_capacity(256);
    let mut parts = Vec::new();
    header.encode(&mut head);
    match request {
        Request::Produce(produce) => produce.encode_parts(&mut head, &mut parts, SHARED_PART_MIN),
        request => request.encode(&mut head),
    }
    FrameParts::finish(parts, head)
}

/// The payload of a response frame, as [`response_frame`], in parts: fetched record sets of
/// at least [`SHARED_PART_MIN`] bytes are shared, not copied.
pub fn response_frame_parts(header: &ResponseHeader, response: Option<&Response>) -> FrameParts {
    let mut head = BytesMut::with_capacity(256);
    let mut parts = Vec::new();
    header.encode(&mut head);
    match response {
        Some(Response::Fetch(fetch)) => fetch.encode_parts(&mut head, &mut parts, SHARED_PART_MIN),
        Some(response) => response.encode(&mut head),
        None => {}
    }
    FrameParts::finish(parts, head)
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

    #[test]
    fn large_record_sets_are_shared_not_copied() {
        use crate::response::{FetchPartitionResponse, FetchResponse, FetchTopicResponse};
        use crate::ErrorCode;

        let large = Bytes::from(vec![7u8; SHARED_PART_MIN]);
        let small = Bytes::from_static(b"tiny");
        let partition = |partition, records: &Bytes| FetchPartitionResponse {
            partition,
            error_code: ErrorCode::NONE,
            high_watermark: 10,
            log_start_offset: 0,
            records: records.clone(),
        };
        let response = Response::Fetch(FetchResponse {
            topics: vec![FetchTopicResponse {
                name: "t".to_string(),
                partitions: vec![
                    partition(0, &large),
                    partition(1, &small),
                    partition(2, &large),
                ],
            }],
        });
        let header = ResponseHeader {
            correlation_id: 3,
            error_code: ErrorCode::NONE,
            error_message: None,
        };
        let parts = response_frame_parts(&header, Some(&response));
        let shared: Vec<_> = parts
            .parts()
            .iter()
            .filter(|part| part.as_ptr() == large.as_ptr())
            .collect();
        assert_eq!(
            shared.len(),
            2,
            "both large record sets are parts of their own"
        );
        assert_eq!(
            parts.parts().len(),
            4,
            "head, large, middle, large: nothing follows"
        );
        assert_eq!(parts.concat(), response_frame(&header, Some(&response)));
    }

    #[test]
    fn large_produce_batches_are_moved_not_copied() {
        use crate::request::{ApiKey, ProducePartition, ProduceRequest, ProduceTopic};

        let records = BytesMut::from(&vec![9u8; SHARED_PART_MIN][..]);
        let address = records.as_ptr();
        let request = Request::Produce(ProduceRequest {
            acks: -1,
            timeout_ms: 1000,
            topics: vec![ProduceTopic {
                name: "t".to_string(),
                partitions: vec![
                    ProducePartition {
                        partition: 0,
                        leader_epoch: -1,
                        records,
                    },
                    ProducePartition {
                        partition: 1,
                        leader_epoch: -1,
                        records: BytesMut::from(&b"small"[..]),
                    },
                ],
            }],
        });
        let header = RequestHeader {
            api_key: ApiKey::PRODUCE,
            api_version: 0,
            correlation_id: 1,
            client_id: None,
        };
        let whole = request_frame(&header, &request);
        let parts = request_frame_parts(&header, request);
        assert_eq!(parts.parts().len(), 3, "head, the large batch, the rest");
        assert_eq!(parts.parts()[1].as_ptr(), address, "moved, not copied");
        assert_eq!(parts.concat(), whole);
    }
}
