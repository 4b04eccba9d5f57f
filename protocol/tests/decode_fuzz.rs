//! Random byte streams through the broker's whole decoding path, as a proptest stand-in for
//! the `frame` fuzz target (`fuzz/`): [`FrameCodec`] splits the stream, delivered in random
//! pieces, into frames; each frame goes through `RequestHeader::decode` and `Request::decode`.
//!
//! `message_props.rs` feeds arbitrary bytes to the message decoders directly and only valid
//! frames through the codec; here the stream itself is hostile: valid frames, random frames,
//! raw garbage and length prefixes over the limit, mixed. A small model of the framing says
//! which frames must come out, in which order, and where the codec must stop with
//! `FrameTooLarge` (as soon as the length prefix is complete, before any body arrives).
//! Whatever decodes as a request must survive a round trip. `PROPTEST_CASES` raises the
//! case count for a longer run.

// Test code: helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use mq_protocol::codec::{self, FrameCodec, LENGTH_BYTES};
use mq_protocol::request::{
    ApiKey, FetchPartition, FetchRequest, FetchTopic, MetadataRequest, Request, RequestHeader,
};
use mq_protocol::wire::Reader;
use mq_protocol::DecodeError;
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// The codec's limit in these tests: small, so that random prefixes exceed it often.
const LIMIT: usize = 512;

/// One piece of a hostile stream.
#[derive(Clone, Debug)]
enum Piece {
    /// A frame with a correct length prefix around these bytes (a request, or not).
    Framed(Vec<u8>),
    /// Bytes as they are, prefix or not.
    Raw(Vec<u8>),
    /// A length prefix above the limit, and some bytes of a body.
    TooLong(u32, Vec<u8>),
}

impl Piece {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Piece::Framed(payload) => {
                let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(payload);
                bytes
            }
            Piece::Raw(bytes) => bytes.clone(),
            Piece::TooLong(length, body) => {
                let mut bytes = length.to_be_bytes().to_vec();
                bytes.extend_from_slice(body);
                bytes
            }
        }
    }
}

/// A valid request frame payload: a few APIs, with random field values.
fn request_payload() -> impl Strategy<Value = Vec<u8>> {
    let request = prop_oneof![
        Just(Request::ApiVersions),
        proptest::option::of(vec("[a-z]{0,8}", 0..3))
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
        (any::<i32>(), any::<i64>(), any::<i32>()).prop_map(|(partition, offset, bytes)| {
            Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 1,
                max_bytes: bytes,
                topics: vec![FetchTopic {
                    name: "t".to_string(),
                    partitions: vec![FetchPartition {
                        partition,
                        current_leader_epoch: -1,
                        fetch_offset: offset,
                        partition_max_bytes: bytes,
                    }],
                }],
            })
        }),
        Just(Request::ListGroups),
    ];
    (request, any::<i32>()).prop_map(|(request, correlation_id)| {
        let header = RequestHeader {
            api_key: request.api_key(),
            api_version: 0,
            correlation_id,
            client_id: Some("fuzz".to_string()),
        };
        codec::request_frame(&header, &request).to_vec()
    })
}

/// A header of a random API (known or not, any version) before random bytes.
fn header_and_garbage() -> impl Strategy<Value = Vec<u8>> {
    let api_key = prop_oneof![
        3 => proptest::sample::select(ApiKey::ALL.to_vec()),
        1 => any::<i16>().prop_map(ApiKey),
    ];
    let version = prop_oneof![4 => Just(0i16), 1 => any::<i16>()];
    (api_key, version, vec(any::<u8>(), 0..64)).prop_map(|(api_key, api_version, body)| {
        let mut payload = BytesMut::new();
        RequestHeader {
            api_key,
            api_version,
            correlation_id: 1,
            client_id: None,
        }
        .encode(&mut payload);
        payload.extend_from_slice(&body);
        payload.to_vec()
    })
}

fn piece() -> impl Strategy<Value = Piece> {
    // Lengths at the limit and just over it come up often: that is where framing goes wrong.
    let random_payload = prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), LIMIT - 1..=LIMIT),];
    let too_long = prop_oneof![Just(LIMIT as u32 + 1), (LIMIT as u32 + 1)..];
    prop_oneof![
        4 => request_payload().prop_map(Piece::Framed),
        3 => header_and_garbage().prop_map(Piece::Framed),
        2 => random_payload.prop_map(Piece::Framed),
        1 => vec(any::<u8>(), 0..24).prop_map(Piece::Raw),
        1 => (too_long, vec(any::<u8>(), 0..16))
            .prop_map(|(length, body)| Piece::TooLong(length, body)),
    ]
}

/// What the framing must do with a whole stream: the frames before the end or the first
/// over-long prefix, and the position where that prefix is complete (the codec must fail by
/// then), if there is one.
fn model(stream: &[u8]) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut frames = Vec::new();
    let mut position = 0;
    while stream.len() - position >= LENGTH_BYTES {
        let prefix: [u8; 4] = stream[position..position + 4].try_into().unwrap();
        let length = u32::from_be_bytes(prefix) as usize;
        if length > LIMIT {
            return (frames, Some(position + LENGTH_BYTES));
        }
        if stream.len() - position - LENGTH_BYTES < length {
            break;
        }
        frames.push(stream[position + LENGTH_BYTES..][..length].to_vec());
        position += LENGTH_BYTES + length;
    }
    (frames, None)
}

/// Feeds `stream` to a codec in pieces ending at `cuts`; returns the frames, and how many
/// bytes had been delivered when it failed, if it did.
fn decode_stream(stream: &[u8], cuts: &[usize]) -> (Vec<BytesMut>, Option<(usize, DecodeError)>) {
    let mut codec = FrameCodec::new(LIMIT);
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut delivered = 0;
    for cut in cuts {
        buffer.extend_from_slice(&stream[delivered..cut]);
        delivered = cut;
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some((delivered, error))),
            }
        }
    }
    (frames, None)
}

/// Decodes a frame as the broker does; a request that decodes must survive a round trip.
fn decode_request(frame: &BytesMut) -> Result<(), TestCaseError> {
    let mut reader = Reader::new(frame.clone());
    let Ok(header) = RequestHeader::decode(&mut reader) else {
        return Ok(());
    };
    let Ok(request) = Request::decode(&header, reader) else {
        return Ok(());
    };
    let encoded: Bytes = codec::request_frame(&header, &request);
    let mut reader = Reader::new(BytesMut::from(&encoded[..]));
    let header_again = RequestHeader::decode(&mut reader).unwrap();
    prop_assert_eq!(&header_again, &header);
    prop_assert_eq!(Request::decode(&header_again, reader).unwrap(), request);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn hostile_streams_split_as_the_model_says_and_never_panic(
        pieces in vec(piece(), 0..8),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let stream: Vec<u8> = pieces.iter().flat_map(Piece::bytes).collect();
        let (expected_frames, fails_at) = model(&stream);
        let (frames, failure) = decode_stream(&stream, &cuts);
        prop_assert_eq!(frames.len(), expected_frames.len());
        for (frame, expected) in frames.iter().zip(&expected_frames) {
            prop_assert_eq!(&frame[..], &expected[..]);
            prop_assert!(frame.len() <= LIMIT);
            decode_request(frame)?;
        }
        match (fails_at, failure) {
            (None, None) => {}
            (Some(position), Some((delivered, error))) => {
                // Refused once the prefix is in, whatever of the body came with it.
                prop_assert!(delivered >= position, "failed before the prefix was complete");
                let too_large = matches!(error, DecodeError::FrameTooLarge { .. });
                prop_assert!(too_large, "{:?}", error);
            }
            (expected, actual) => {
                prop_assert!(false, "expected failure at {:?}, got {:?}", expected, actual);
            }
        }
    }

    #[test]
    fn random_bytes_through_the_frame_codec_never_panic(
        stream in vec(any::<u8>(), 0..2048),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let (frames, _) = decode_stream(&stream, &cuts);
        let (expected_frames, _) = model(&stream);
        prop_assert_eq!(frames.len(), expected_frames.len());
        for frame in &frames {
            decode_request(frame)?;
        }
    }
}

#[test]
fn the_model_agrees_with_the_codec_on_simple_streams() {
    // The model itself, on streams whose answer is known.
    let frame = Piece::Framed(b"abc".to_vec()).bytes();
    assert_eq!(model(&frame), (vec![b"abc".to_vec()], None));
    assert_eq!(model(&frame[..5]), (vec![], None));
    let mut two = frame.clone();
    two.extend_from_slice(&Piece::TooLong(LIMIT as u32 + 1, vec![1, 2]).bytes());
    assert_eq!(model(&two), (vec![b"abc".to_vec()], Some(frame.len() + 4)));
    let (frames, failure) = decode_stream(&two, &[]);
    assert_eq!(frames.len(), 1);
    assert!(matches!(
        failure,
        Some((_, DecodeError::FrameTooLarge { .. }))
    ));
}
