//! Fuzz target `frame`: bytes as they arrive on a broker's socket, through the broker's
//! decoding path: `FrameCodec` (the length prefix, checked against the frame limit before
//! anything is buffered), then `RequestHeader::decode`, then `Request::decode`.
//!
//! The first input byte chooses where the stream is cut in two (a socket delivers bytes in
//! pieces). Checked: nothing panics; no frame exceeds the limit; a frame that decodes into a
//! request encodes back to bytes that decode into the same request.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mq_protocol::codec::{self, FrameCodec};
use mq_protocol::request::{Request, RequestHeader};
use mq_protocol::wire::Reader;
use tokio_util::codec::Decoder;

/// Small, so that inputs reach past the limit check as well as below it.
const FRAME_BYTES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(stream.len());
    let mut codec = FrameCodec::new(FRAME_BYTES_MAX);
    let mut buffer = BytesMut::new();
    for piece in [&stream[..cut], &stream[cut..]] {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= FRAME_BYTES_MAX, "frame over the limit");
                    decode_request(frame);
                }
                Ok(None) => break,
                // The broker closes the connection here.
                Err(_) => return,
            }
        }
    }
});

/// Decodes one frame as the broker does; what decodes must survive a round trip.
fn decode_request(frame: BytesMut) {
    let mut reader = Reader::new(frame);
    let Ok(header) = RequestHeader::decode(&mut reader) else {
        return;
    };
    let Ok(request) = Request::decode(&header, reader) else {
        return;
    };
    let encoded = codec::request_frame(&header, &request);
    let mut reader = Reader::new(BytesMut::from(&encoded[..]));
    let header_again = RequestHeader::decode(&mut reader).expect("an encoded header decodes");
    assert_eq!(header_again, header);
    let request_again = Request::decode(&header_again, reader).expect("an encoded body decodes");
    assert_eq!(request_again, request);
}
