//! One client connection: reads frames, runs each request as its own task (so a long-poll
//! fetch never holds up the others), and writes responses as they complete, matched by
//! correlation id on the client side. Produce and OffsetCommit requests are the exception:
//! their appends run one at a time in arrival order, so that a producer's pipelined batches,
//! and a consumer's pipelined commits, keep their order.
//!
//! Memory per connection is bounded: a frame is at most `max_frame_bytes` (refused before it
//! is buffered), at most `max_in_flight_requests` requests run at once (reading pauses at the
//! limit), and responses wait in a bounded queue for the writer; a client that stops reading
//! its responses therefore stops the broker reading its requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_protocol::codec::{self, FrameCodec};
use mq_protocol::request::{OffsetCommitRequest, ProduceRequest, Request, RequestHeader};
use mq_protocol::response::{Response, ResponseHeader};
use mq_protocol::wire::Reader;
use mq_protocol::{DecodeError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Decoder;

use super::dispatch::{self, RequestContext};
use super::state::Broker;

/// Serves one connection until the client closes it, it misbehaves, it idles out, or the
/// broker shuts down (then in-flight requests finish and are answered first).
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    let _ = stream.set_nodelay(true);
    let (mut read_half, write_half) = stream.into_split();
    let in_flight_max = broker.config.max_in_flight_requests;
    let (responses, queue) = mpsc::channel::<Bytes>(in_flight_max);
    let writer = tokio::spawn(write_responses(write_half, queue));
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let (produces, produce_queue) = mpsc::channel(in_flight_max);
    let appender = tokio::spawn(append_in_order(
        Arc::clone(&broker),
        produce_queue,
        responses.clone(),
    ));
    let mut codec = FrameCodec::new(broker.config.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let idle_timeout = Duration::from_millis(broker.config.idle_timeout_ms);
    let mut shutting_down = broker.shutting_down();
    tracing::debug!(%peer, "connection opened");
    loop {
        let frame = match codec.decode(&mut buffer) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let idle = in_flight.available_permits() == in_flight_max;
                tokio::select! {
                    read = read_half.read_buf(&mut buffer) => match read {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(error) => {
                            tracing::debug!(%peer, %error, "read failed");
                            break;
                        }
                    },
                    _ = tokio::time::sleep(idle_timeout), if idle => {
                        tracing::info!(%peer, idle_ms = idle_timeout.as_millis() as u64, "closing idle connection");
                        break;
                    }
                    _ = tokio::time::sleep(idle_timeout), if !idle => continue,
                    _ = shutting_down.changed() => break,
                }
            }
            Err(error) => {
                // An oversized length prefix: the frame's header cannot be read without
                // buffering it, so there is no correlation id to answer. Close.
                tracing::warn!(%peer, %error, "closing connection: bad frame");
                break;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        match decode(frame) {
            Ok((header, Request::Produce(request))) => {
                // Appends in arrival order: see `append_in_order`.
                let queued = (header, InOrder::Produce(request), permit);
                if produces.send(queued).await.is_err() {
                    break;
                }
            }
            Ok((header, Request::OffsetCommit(request))) => {
                let queued = (header, InOrder::OffsetCommit(request), permit);
                if produces.send(queued).await.is_err() {
                    break;
                }
            }
            Ok((header, request)) => {
                let broker = Arc::clone(&broker);
                let responses = responses.clone();
                let context = RequestContext {
                    client_id: header.client_id.clone(),
                    peer,
                };
                tokio::spawn(async move {
                    let api = header.api_key.name();
                    let response = dispatch::handle(&broker, request, &context).await;
                    if let Some(response) = response {
                        send_response(&responses, &header, response).await;
                    }
                    tracing::trace!(api, "request done");
                    drop(permit);
                });
            }
            Err(Refused {
                correlation_id,
                code,
                message,
                close,
            }) => {
                tracing::debug!(%peer, %message, "refused request");
                if let Some(correlation_id) = correlation_id {
                    let header = ResponseHeader {
                        correlation_id,
                        error_code: code,
                        error_message: Some(message),
                    };
                    let _ = responses.send(codec::response_frame(&header, None)).await;
                }
                drop(permit);
                if close {
                    break;
                }
            }
        }
    }
    // Let the requests in flight finish and be answered, then close.
    drop(produces);
    let _ = appender.await;
    let _ = in_flight.acquire_many(in_flight_max as u32).await;
    drop(responses);
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

/// A request whose appends must keep the connection's arrival order.
enum InOrder {
    /// Record batches to append.
    Produce(ProduceRequest),
    /// Offsets to commit.
    OffsetCommit(OffsetCommitRequest),
}

/// A request queued for its connection's appender, with its in-flight permit.
type Queued = (RequestHeader, InOrder, OwnedSemaphorePermit);

/// Appends the connection's produce and commit requests one at a time, in arrival order, so
/// that pipelined produces to a partition keep their order (as Kafka guarantees per
/// connection), and so do pipelined commits of a group. Each request's acknowledgement
/// (which may wait for an fsync) then completes on its own task, so pipelined requests share
/// fsyncs instead of waiting for one another's.
async fn append_in_order(
    broker: Arc<Broker>,
    mut queue: mpsc::Receiver<Queued>,
    responses: mpsc::Sender<Bytes>,
) {
    while let Some((header, request, permit)) = queue.recv().await {
        let responses = responses.clone();
        match request {
            InOrder::Produce(request) => {
                let pending = dispatch::produce_append(&broker, request).await;
                tokio::spawn(async move {
                    if let Some(response) = dispatch::produce_complete(pending).await {
                        send_response(&responses, &header, Response::Produce(response)).await;
                    }
                    drop(permit);
                });
            }
            InOrder::OffsetCommit(request) => {
                let pending = broker.coordinator.commit_append(request).await;
                let broker = Arc::clone(&broker);
                tokio::spawn(async move {
                    let response = broker.coordinator.commit_complete(pending).await;
                    send_response(&responses, &header, Response::OffsetCommit(response)).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn send_response(
    responses: &mpsc::Sender<Bytes>,
    header: &RequestHeader,
    response: Response,
) {
    let header = ResponseHeader {
        correlation_id: header.correlation_id,
        error_code: ErrorCode::NONE,
        error_message: None,
    };
    let _ = responses
        .send(codec::response_frame(&header, Some(&response)))
        .await;
}

/// A request refused before dispatch.
struct Refused {
    /// The request's correlation id, if its header could be read.
    correlation_id: Option<i32>,
    /// The error to answer.
    code: ErrorCode,
    /// What was wrong.
    message: String,
    /// Whether to close the connection afterwards (the stream can no longer be trusted).
    close: bool,
}

fn decode(frame: BytesMut) -> Result<(RequestHeader, Request), Refused> {
    let mut reader = Reader::new(frame);
    let header = RequestHeader::decode(&mut reader).map_err(|error| Refused {
        correlation_id: None,
        code: ErrorCode::INVALID_REQUEST,
        message: error.to_string(),
        close: true,
    })?;
    let refuse = |code, error: DecodeError, close| Refused {
        correlation_id: Some(header.correlation_id),
        code,
        message: error.to_string(),
        close,
    };
    match Request::decode(&header, reader) {
        Ok(request) => Ok((header, request)),
        Err(error @ DecodeError::UnknownApi { .. }) => {
            Err(refuse(ErrorCode::UNKNOWN_API, error, false))
        }
        Err(error @ DecodeError::UnsupportedVersion { .. }) => {
            Err(refuse(ErrorCode::UNSUPPORTED_VERSION, error, false))
        }
        Err(error) => Err(refuse(ErrorCode::INVALID_REQUEST, error, true)),
    }
}

/// Writes response frames as they come, batching those already queued into one flush.
async fn write_responses(write_half: OwnedWriteHalf, mut queue: mpsc::Receiver<Bytes>) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(frame) = queue.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next {
            let length = u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes();
            if writer.write_all(&length).await.is_err() || writer.write_all(&frame).await.is_err() {
                return;
            }
            next = queue.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
