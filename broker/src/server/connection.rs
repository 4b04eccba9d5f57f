//! One client connection: reads frames, runs each request as its own task (so a long-poll
//! fetch never holds up the others), and writes responses as they complete, matched by
//! correlation id on the client side. Produce and OffsetCommit requests are the exception:
//! their appends run one at a time in arrival order, so that a producer's pipelined batches,
//! and a consumer's pipelined commits, keep their order, and they are answered in that order
//! too.
//!
//! Memory per connection is bounded: a frame is at most `max_frame_bytes` (refused before it
//! is buffered), at most `max_in_flight_requests` requests run at once (reading pauses at the
//! limit), and responses wait in a bounded queue for the writer; a client that stops reading
//! its responses therefore stops the broker reading its requests. Over all connections,
//! request frames are buffered only within `max_request_memory_bytes`: a frame's length is
//! reserved from that budget before its body is read and given back once it is answered.
//! A frame must arrive whole within `frame_timeout_ms` of its first byte, so a client
//! trickling bytes cannot hold its connection and buffer forever; a connection with nothing
//! in flight closes after `idle_timeout_ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mq_protocol::codec::{self, FrameCodec, FrameParts};
use mq_protocol::request::{ApiKey, OffsetCommitRequest, ProduceRequest, Request, RequestHeader};
use mq_protocol::response::{Response, ResponseHeader};
use mq_protocol::wire::Reader;
use mq_protocol::{DecodeError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Decoder;

use super::dispatch::{self, RequestContext};
use super::state::Broker;

/// Serves one connection until the client closes it, it misbehaves, it idles out, or the
/// broker shuts down (then in-flight requests finish and are answered first).
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    let _ = stream.set_nodelay(true);
    let (mut read_half, write_half) = stream.into_split();
    let in_flight_max = broker.config.max_in_flight_requests;
    let (responses, queue) = mpsc::channel::<FrameParts>(in_flight_max);
    let writer = tokio::spawn(write_responses(write_half, queue, Arc::clone(&broker)));
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let (produces, produce_queue) = mpsc::channel(in_flight_max);
    let appender = tokio::spawn(append_in_order(
        Arc::clone(&broker),
        produce_queue,
        responses.clone(),
    ));
    let max_frame_bytes = broker.config.max_frame_bytes;
    let mut codec = FrameCodec::new(max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let idle_timeout = Duration::from_millis(broker.config.idle_timeout_ms);
    let frame_timeout = Duration::from_millis(broker.config.frame_timeout_ms);
    let mut shutting_down = broker.shutting_down();
    // The share of the broker-wide request memory held for the frame being read, and when
    // its first byte arrived.
    let mut budget: Option<OwnedSemaphorePermit> = None;
    let mut frame_started: Option<Instant> = None;
    tracing::debug!(%peer, "connection opened");
    loop {
        if budget.is_none() {
            if let Some(length) =
                codec::frame_length(&buffer).filter(|length| *length <= max_frame_bytes)
            {
                // Wait for room in the budget before buffering the frame's body: a
                // connection over budget is not read, so its client is slowed by TCP.
                // `max_frame_bytes` fits the budget (checked with the settings).
                let wanted = u32::try_from(length).unwrap_or(u32::MAX);
                let memory = Arc::clone(&broker.request_memory);
                budget = tokio::select! {
                    permit = memory.acquire_many_owned(wanted) => match permit {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    },
                    _ = shutting_down.changed() => break,
                };
            }
        }
        let frame = match codec.decode(&mut buffer) {
            Ok(Some(frame)) => {
                frame_started = None;
                frame
            }
            Ok(None) => {
                if buffer.is_empty() {
                    frame_started = None;
                } else if frame_started.is_none() {
                    frame_started = Some(Instant::now());
                }
                let idle = buffer.is_empty() && in_flight.available_permits() == in_flight_max;
                let frame_deadline = tokio::time::Instant::from_std(
                    frame_started.unwrap_or_else(Instant::now) + frame_timeout,
                );
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
                    _ = tokio::time::sleep_until(frame_deadline), if frame_started.is_some() => {
                        tracing::info!(%peer, frame_timeout_ms = frame_timeout.as_millis() as u64, buffered = buffer.len(), "closing connection: request not received whole in time");
                        break;
                    }
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
        let started = Instant::now();
        broker.metrics.received(frame.len() + 4);
        let Ok(in_flight_permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let permit = Held {
            _in_flight: in_flight_permit,
            _memory: budget.take(),
        };
        match decode(frame) {
            Ok((header, Request::Produce(request))) => {
                // Appends in arrival order: see `append_in_order`.
                let queued = (header, InOrder::Produce(request), started, permit);
                if produces.send(queued).await.is_err() {
                    break;
                }
            }
            Ok((header, Request::OffsetCommit(request))) => {
                let queued = (header, InOrder::OffsetCommit(request), started, permit);
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
                    let response = dispatch::handle(&broker, request, &context).await;
                    answer(&broker, &responses, &header, started, response).await;
                    drop(permit);
                });
            }
            Err(Refused {
                api_key,
                correlation_id,
                code,
                message,
                close,
            }) => {
                tracing::debug!(%peer, %message, "refused request");
                broker.metrics.request(api_key, started.elapsed(), true);
                if let Some(correlation_id) = correlation_id {
                    let header = ResponseHeader {
                        correlation_id,
                        error_code: code,
                        error_message: Some(message),
                    };
                    let _ = responses
                        .send(codec::response_frame_parts(&header, None))
                        .await;
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

/// A request queued for its connection's appender, with its arrival time and its in-flight
/// permit.
type Queued = (RequestHeader, InOrder, Instant, Held);

/// What a request holds until it is answered: its place among the connection's requests in
/// flight, and its frame's share of the broker-wide request memory.
struct Held {
    _in_flight: OwnedSemaphorePermit,
    _memory: Option<OwnedSemaphorePermit>,
}

/// Appends the connection's produce and commit requests one at a time, in arrival order, so
/// that pipelined produces to a partition keep their order (as Kafka guarantees per
/// connection), and so do pipelined commits of a group. Each request's acknowledgement
/// (which may wait for an fsync) then completes on its own task, so pipelined requests share
/// fsyncs instead of waiting for one another's; but the acknowledgements are queued for the
/// writer in arrival order too. Otherwise a later batch's acknowledgement could reach the
/// client and an earlier one's be lost with the connection: the client would resend the
/// earlier batch after the later one (found by the kill -9 soak). In order, what a client
/// receives before a connection dies is always a prefix of its requests.
async fn append_in_order(
    broker: Arc<Broker>,
    mut queue: mpsc::Receiver<Queued>,
    responses: mpsc::Sender<FrameParts>,
) {
    // Resolves (or fails: its task ended) once the previous request's answer was queued.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    while let Some((header, request, started, permit)) = queue.recv().await {
        let responses = responses.clone();
        let broker = Arc::clone(&broker);
        let (answered, next) = oneshot::channel::<()>();
        let after = previous.replace(next);
        match request {
            InOrder::Produce(request) => {
                let pending = dispatch::produce_append(&broker, request).await;
                tokio::spawn(async move {
                    let response = dispatch::produce_complete(pending).await;
                    let response = response.map(Response::Produce);
                    wait_for(after).await;
                    answer(&broker, &responses, &header, started, response).await;
                    drop(answered);
                    drop(permit);
                });
            }
            InOrder::OffsetCommit(request) => {
                let pending = broker.coordinator.commit_append(request).await;
                tokio::spawn(async move {
                    let response = broker.coordinator.commit_complete(pending).await;
                    let response = Some(Response::OffsetCommit(response));
                    wait_for(after).await;
                    answer(&broker, &responses, &header, started, response).await;
                    drop(answered);
                    drop(permit);
                });
            }
        }
    }
}

/// Waits until the previous in-order request was answered (its sender is dropped then).
async fn wait_for(previous: Option<oneshot::Receiver<()>>) {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
}

/// Records the request in the metrics and queues its response, if one is due (a produce
/// with `acks=0` has none).
async fn answer(
    broker: &Broker,
    responses: &mpsc::Sender<FrameParts>,
    header: &RequestHeader,
    started: Instant,
    response: Option<Response>,
) {
    let error = response.as_ref().is_some_and(Response::has_error);
    broker
        .metrics
        .request(header.api_key, started.elapsed(), error);
    let Some(response) = response else {
        return;
    };
    let header = ResponseHeader {
        correlation_id: header.correlation_id,
        error_code: ErrorCode::NONE,
        error_message: None,
    };
    let _ = responses
        .send(codec::response_frame_parts(&header, Some(&response)))
        .await;
}

/// A request refused before dispatch.
struct Refused {
    /// The request's API, if its header could be read (for metrics).
    api_key: ApiKey,
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
        api_key: ApiKey(-1),
        correlation_id: None,
        code: ErrorCode::INVALID_REQUEST,
        message: error.to_string(),
        close: true,
    })?;
    let refuse = |code, error: DecodeError, close| Refused {
        api_key: header.api_key,
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
/// Small parts gather in the buffer; a part at least as large as the buffer (fetched records)
/// goes from its own memory to the socket, after what is buffered.
async fn write_responses(
    write_half: OwnedWriteHalf,
    mut queue: mpsc::Receiver<FrameParts>,
    broker: Arc<Broker>,
) {
    let mut writer = BufWriter::with_capacity(codec::SHARED_PART_MIN, write_half);
    while let Some(frame) = queue.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next {
            let len = frame.len();
            broker.metrics.sent(len + 4);
            let length = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
            if writer.write_all(&length).await.is_err() {
                return;
            }
            for part in frame.parts() {
                if writer.write_all(part).await.is_err() {
                    return;
                }
            }
            next = queue.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
