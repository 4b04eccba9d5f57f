//! A hand-driven protocol connection: sends any bytes, reads frames back. For tests of what
//! a misbehaving client can send; well-behaved tests use `mq-client`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use mq_protocol::codec;
use mq_protocol::request::{ApiKey, Request, RequestHeader};
use mq_protocol::response::{Response, ResponseHeader};
use mq_protocol::wire::Reader;

/// A blocking TCP connection with a read timeout.
#[derive(Debug)]
pub struct RawConnection {
    /// The socket.
    stream: TcpStream,
}

impl RawConnection {
    /// Connects, with a 10 s read timeout.
    pub fn connect(address: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(address).expect("connecting to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting a read timeout");
        RawConnection { stream }
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame (length prefix added).
    pub fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let length = u32::try_from(payload.len()).expect("test frames are small");
        self.stream.write_all(&length.to_be_bytes())?;
        self.stream.write_all(payload)
    }

    /// Sends a well-formed request of version 0.
    pub fn send(&mut self, correlation_id: i32, request: &Request) {
        let header = RequestHeader {
            api_key: request.api_key(),
            api_version: 0,
            correlation_id,
            client_id: Some("raw-test".to_string()),
        };
        self.send_frame(&codec::request_frame(&header, request))
            .expect("sending a request");
    }

    /// Reads one response frame's payload; `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<BytesMut> {
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(BytesMut::from(&payload[..]))
    }

    /// Reads a response to a request of `api_key`: its header, and its body if it has one.
    pub fn read_response(&mut self, api_key: ApiKey) -> Option<(ResponseHeader, Option<Response>)> {
        let mut reader = Reader::new(self.read_frame()?);
        let header = ResponseHeader::decode(&mut reader).expect("a response header");
        if !header.error_code.is_ok() {
            return Some((header, None));
        }
        let body = Response::decode(api_key, reader).expect("a response body");
        Some((header, Some(body)))
    }

    /// Sends a request and reads its response.
    pub fn call(
        &mut self,
        correlation_id: i32,
        request: &Request,
    ) -> (ResponseHeader, Option<Response>) {
        self.send(correlation_id, request);
        self.read_response(request.api_key())
            .expect("the broker answered before closing")
    }

    /// Whether the broker closed the connection (reads end of stream within the timeout).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(ref error) if error.kind() == std::io::ErrorKind::ConnectionReset)
    }
}
