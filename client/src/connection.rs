//! [`Connection`]: one TCP connection to one broker, multiplexing concurrent requests.
//!
//! ```text
//!  request() ──frame──► bounded mpsc ──► writer task ──► socket
//!      ▲                                                   │
//!      └── oneshot ◄── waiters[correlation id] ◄── reader task
//! ```
//!
//! Every request gets a fresh correlation id and a waiter (a `oneshot`) in a map; the reader
//! task completes waiters by the correlation id in each response header, so responses may
//! arrive in any order (the broker runs the requests of one connection concurrently). A
//! Produce with `acks=0` gets no response, so it registers no waiter
//! ([`Connection::send_no_response`]). When the socket fails or closes, every waiter gets an
//! error and the connection is dead for good: [`Connection::is_alive`] turns false and new
//! requests fail at once. Replacing a dead connection is the pool's job
//! ([`Client`](crate::Client)), not this module's.
//!
//! Response bodies are decoded by the task that asked, not by the reader task, so that one
//! large fetch response does not hold up the responses behind it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use mq_protocol::codec::{self, FrameCodec, FrameParts};
use mq_protocol::request::{ApiKey, Request, RequestHeader};
use mq_protocol::response::{Response, ResponseHeader};
use mq_protocol::wire::Reader;
use mq_protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;
use tracing::Instrument;

use crate::error::ClientError;

/// The largest response frame a client accepts by default: a fetch answers up to its
/// `max_bytes` (at most [`FETCH_BYTES_MAX`](crate::consumer::FETCH_BYTES_MAX)) plus one
/// whole batch when a batch does not fit (a batch is at most
/// [`BATCH_BYTES_MAX`](mq_protocol::limits::BATCH_BYTES_MAX)), plus room for the response's
/// own fields.
pub const FRAME_BYTES_MAX: usize = 2 * mq_protocol::limits::BATCH_BYTES_MAX + 1024 * 1024;

/// The largest request frame this side sends: what a length prefix (an `i32` on the wire,
/// as in Kafka) can describe. The broker's own limit is usually lower and answered with an
/// error or a closed connection.
const REQUEST_BYTES_MAX: usize = i32::MAX as usize;

/// Frames queued for the writer task before `request` waits.
const OUTGOING_FRAMES_MAX: usize = 256;

/// Bytes the writer gathers from queued frames into one socket write.
const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// Free space the reader keeps in its buffer before each read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Settings of one connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Sent in every request header, for the broker's logs.
    pub client_id: Option<String>,
    /// How long a request may wait for its response unless it says otherwise.
    pub request_timeout: Duration,
    /// How long establishing the TCP connection may take.
    pub connect_timeout: Duration,
    /// The largest response frame accepted; a larger one kills the connection.
    pub max_frame_bytes: usize,
    /// Requests awaiting a response at once; more wait for a slot.
    pub max_in_flight: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: Some("mq-client".to_string()),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: FRAME_BYTES_MAX,
            max_in_flight: 1024,
        }
    }
}

/// One multiplexed TCP connection to a broker. Cheap to clone: clones share the socket.
///
/// The connection's tasks stop when the last clone is dropped (or on [`Connection::close`]).
///
/// ```no_run
/// use mq_client::{Connection, ConnectionConfig};
/// use mq_client::protocol::request::{MetadataRequest, Request};
///
/// # async fn example() -> Result<(), mq_client::ClientError> {
/// let connection = Connection::connect("127.0.0.1:9700", ConnectionConfig::default()).await?;
/// let response = connection
///     .request(Request::Metadata(MetadataRequest { topics: None }))
///     .await?;
/// println!("{response:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Connection {
    /// The state shared by the clones; its drop stops the tasks.
    inner: Arc<Inner>,
}

/// What the clones of a connection share.
#[derive(Debug)]
struct Inner {
    /// The broker's address, as dialled.
    address: String,
    /// The connection's settings.
    config: ConnectionConfig,
    /// Frames for the writer task.
    outgoing: mpsc::Sender<Outgoing>,
    /// Waiters and liveness, shared with the reader and writer tasks.
    shared: Arc<Shared>,
    /// Bounds the requests awaiting a response.
    in_flight: Semaphore,
    /// The next correlation id to hand out.
    next_correlation_id: AtomicI32,
    /// The reader task, stopped when the last clone goes.
    reader: AbortHandle,
    /// The writer task, stopped by [`Connection::close`] (it ends by itself once the
    /// channel closes, after writing what was queued).
    writer: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// State shared between the handles and the connection's tasks.
#[derive(Debug)]
struct Shared {
    /// The broker's address, for errors.
    address: String,
    /// Waiters and liveness, under one lock so that no waiter registers after the drain.
    state: Mutex<State>,
}

/// The mutable part of [`Shared`].
#[derive(Debug, Default)]
struct State {
    /// Requests awaiting a response, by correlation id.
    waiters: HashMap<i32, Waiter>,
    /// Why the connection died; `None` while it is alive.
    closed: Option<ClientError>,
}

/// A request awaiting its response.
#[derive(Debug)]
struct Waiter {
    /// The API asked, which decides how the body decodes.
    api_key: ApiKey,
    /// Completed by the reader task with the header and the unread body.
    sender: oneshot::Sender<Result<(ResponseHeader, Reader), ClientError>>,
}

/// A frame for the writer task.
#[derive(Debug)]
struct Outgoing {
    /// The frame's payload (the writer adds the length prefix).
    payload: FrameParts,
    /// Told once the frame is handed to the socket (for requests without a response).
    written: Option<oneshot::Sender<()>>,
}

impl Connection {
    /// Connects to `address` (`host:port`) and starts the connection's tasks.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(
        address: &str,
        config: ConnectionConfig,
    ) -> Result<Connection, ClientError> {
        let connect_error = |error: io::Error| ClientError::Connect {
            address: address.to_string(),
            error: Arc::new(error),
        };
        let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(address))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_error(error)),
            Err(_) => {
                let message = format!("timed out after {} ms", config.connect_timeout.as_millis());
                return Err(connect_error(io::Error::new(
                    io::ErrorKind::TimedOut,
                    message,
                )));
            }
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared {
            address: address.to_string(),
            state: Mutex::new(State::default()),
        });
        let (outgoing, queue) = mpsc::channel(OUTGOING_FRAMES_MAX);
        let span = tracing::debug_span!("connection", address);
        // The configured limit is for responses; requests were bounded by `encode`.
        let read_codec = FrameCodec::new(config.max_frame_bytes);
        let reader = tokio::spawn(
            read_loop(read_half, Arc::clone(&shared), read_codec).instrument(span.clone()),
        );
        let writer =
            tokio::spawn(write_loop(write_half, queue, Arc::clone(&shared)).instrument(span));
        tracing::debug!(address, "connected");
        Ok(Connection {
            inner: Arc::new(Inner {
                address: address.to_string(),
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                config,
                outgoing,
                shared,
                next_correlation_id: AtomicI32::new(0),
                reader: reader.abort_handle(),
                writer: writer.abort_handle(),
            }),
        })
    }

    /// The broker's address, as dialled.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Whether the connection can still carry requests. Once false, it stays false.
    pub fn is_alive(&self) -> bool {
        self.inner.shared.lock().closed.is_none()
    }

    /// Sends `request` and waits for its response, at most the configured request timeout.
    ///
    /// An error code in the response header becomes [`ClientError::Broker`]; errors of
    /// single topics or partitions are in the response body, for the caller to read.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        self.request_with_timeout(request, self.inner.config.request_timeout)
            .await
    }

    /// Like [`Connection::request`], with its own timeout (a long-poll fetch needs its wait
    /// on top of the usual timeout).
    ///
    /// A timed-out request is forgotten: its response, if it comes, is dropped, and the
    /// connection stays usable. Dropping the returned future forgets the request likewise.
    pub async fn request_with_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let deadline = Instant::now() + timeout;
        let api_key = request.api_key();
        let timed_out = || ClientError::Timeout {
            operation: api_key.name(),
            timeout,
        };
        let _permit = timeout_at(deadline, self.inner.in_flight.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| self.closed_error())?;
        let correlation_id = self.next_correlation_id();
        let payload = self.encode(correlation_id, request)?;
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.inner.shared.lock();
            if let Some(error) = &state.closed {
                return Err(error.clone());
            }
            state
                .waiters
                .insert(correlation_id, Waiter { api_key, sender });
        }
        // Forgets the waiter however this function ends (timeout, error, or drop).
        let _forget = ForgetWaiter {
            shared: &self.inner.shared,
            correlation_id,
        };
        tracing::debug!(api = api_key.name(), correlation_id, "request");
        let outgoing = Outgoing {
            payload,
            written: None,
        };
        match timeout_at(deadline, self.inner.outgoing.send(outgoing)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => return Err(timed_out()),
        }
        let (header, body) = match timeout_at(deadline, receiver).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => return Err(timed_out()),
        };
        if header.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(header.error_code, header.error_message));
        }
        Response::decode(api_key, body).map_err(|error| ClientError::Protocol {
            address: self.inner.address.clone(),
            error: Arc::new(error),
        })
    }

    /// Sends a request that gets no response (Produce with `acks=0`), returning once the
    /// frame is handed to the socket, or after the request timeout.
    pub async fn send_no_response(&self, request: Request) -> Result<(), ClientError> {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let api_key = request.api_key();
        let correlation_id = self.next_correlation_id();
        let payload = self.encode(correlation_id, request)?;
        if let Some(error) = &self.inner.shared.lock().closed {
            return Err(error.clone());
        }
        let (written, done) = oneshot::channel();
        let outgoing = Outgoing {
            payload,
            written: Some(written),
        };
        tracing::debug!(
            api = api_key.name(),
            correlation_id,
            "request without response"
        );
        let result = async {
            self.inner
                .outgoing
                .send(outgoing)
                .await
                .map_err(|_| self.closed_error())?;
            done.await.map_err(|_| self.closed_error())
        };
        timeout_at(deadline, result)
            .await
            .map_err(|_| ClientError::Timeout {
                operation: api_key.name(),
                timeout,
            })?
    }

    /// Closes the connection: waiters get an error, queued frames are dropped.
    pub fn close(&self) {
        self.inner.shared.close(ClientError::Closed {
            what: format!("connection to {}", self.inner.address),
        });
        self.inner.reader.abort();
        self.inner.writer.abort();
    }

    fn next_correlation_id(&self) -> i32 {
        // Wraps to negative ids after 2^31 requests, which is harmless: ids only need to be
        // distinct among the requests in flight.
        self.inner
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed)
    }

    fn encode(&self, correlation_id: i32, request: Request) -> Result<FrameParts, ClientError> {
        let header = RequestHeader {
            api_key: request.api_key(),
            api_version: 0,
            correlation_id,
            client_id: self.inner.config.client_id.clone(),
        };
        let payload = codec::request_frame_parts(&header, request);
        if payload.len() > REQUEST_BYTES_MAX {
            return Err(ClientError::RequestTooLarge {
                bytes: payload.len(),
                limit: REQUEST_BYTES_MAX,
            });
        }
        Ok(payload)
    }

    /// The error for a request that found the connection gone.
    fn closed_error(&self) -> ClientError {
        self.inner
            .shared
            .lock()
            .closed
            .clone()
            .unwrap_or_else(|| ClientError::Disconnected {
                address: self.inner.address.clone(),
            })
    }
}

/// Removes a waiter when its request ends, however it ends.
struct ForgetWaiter<'a> {
    /// Where the waiter is.
    shared: &'a Shared,
    /// Its key.
    correlation_id: i32,
}

impl Drop for ForgetWaiter<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.correlation_id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only a map of channels behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection dead (the first reason wins) and fails every waiter.
    fn close(&self, reason: ClientError) {
        let (waiters, reason) = {
            let mut state = self.lock();
            let reason = state.closed.get_or_insert_with(|| {
                tracing::debug!(address = %self.address, %reason, "connection closed");
                reason
            });
            let reason = reason.clone();
            (std::mem::take(&mut state.waiters), reason)
        };
        for (_, waiter) in waiters {
            let _ = waiter.sender.send(Err(reason.clone()));
        }
    }

    /// Hands one response frame to its waiter. An error means the stream can no longer be
    /// trusted.
    fn dispatch(&self, frame: BytesMut) -> Result<(), ClientError> {
        let mut reader = Reader::new(frame);
        let header =
            ResponseHeader::decode(&mut reader).map_err(|error| ClientError::Protocol {
                address: self.address.clone(),
                error: Arc::new(error),
            })?;
        let waiter = self.lock().waiters.remove(&header.correlation_id);
        match waiter {
            Some(waiter) => {
                tracing::debug!(
                    api = waiter.api_key.name(),
                    correlation_id = header.correlation_id,
                    "response"
                );
                let _ = waiter.sender.send(Ok((header, reader)));
            }
            None => {
                // The request timed out or was dropped: its answer has nobody to go to.
                tracing::debug!(
                    correlation_id = header.correlation_id,
                    "response without waiter"
                );
            }
        }
        Ok(())
    }
}

/// Reads response frames until the socket closes or fails, then fails every waiter.
async fn read_loop(mut read_half: OwnedReadHalf, shared: Arc<Shared>, mut codec: FrameCodec) {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let reason = loop {
        match codec.decode(&mut buffer) {
            Ok(Some(frame)) => match shared.dispatch(frame) {
                Ok(()) => continue,
                Err(error) => break error,
            },
            Ok(None) => {}
            Err(error) => {
                break ClientError::Protocol {
                    address: shared.address.clone(),
                    error: Arc::new(error),
                }
            }
        }
        if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES / 8 {
            buffer.reserve(READ_BUFFER_BYTES);
        }
        match read_half.read_buf(&mut buffer).await {
            Ok(0) => {
                break ClientError::Disconnected {
                    address: shared.address.clone(),
                }
            }
            Ok(_) => {}
            Err(error) => {
                break ClientError::Io {
                    address: shared.address.clone(),
                    error: Arc::new(error),
                }
            }
        }
    };
    shared.close(reason);
}

/// Writes queued frames, gathering those already waiting into one write, until every
/// handle is gone or the socket fails. Small parts are gathered in a buffer; a large part
/// (a produced batch) goes to the socket from its own memory, after what is gathered.
async fn write_loop(
    mut write_half: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut buffer = BytesMut::new();
    let mut written = Vec::new();
    let fail = |error: std::io::Error| {
        shared.close(ClientError::Io {
            address: shared.address.clone(),
            error: Arc::new(error),
        });
    };
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut gathered = 0;
        while let Some(outgoing) = next {
            // `encode` checked the length against REQUEST_BYTES_MAX (an i32's range).
            let length = u32::try_from(outgoing.payload.len()).unwrap_or(u32::MAX);
            buffer.put_u32(length);
            gathered += codec::LENGTH_BYTES + outgoing.payload.len();
            for part in outgoing.payload.parts() {
                if part.len() < codec::SHARED_PART_MIN {
                    buffer.put_slice(part);
                    continue;
                }
                if let Err(error) = write_half.write_all(&buffer).await {
                    return fail(error);
                }
                buffer.clear();
                if let Err(error) = write_half.write_all(part).await {
                    return fail(error);
                }
            }
            written.extend(outgoing.written);
            next = if gathered < WRITE_BATCH_BYTES {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(error) = write_half.write_all(&buffer).await {
            return fail(error);
        }
        buffer.clear();
        for sender in written.drain(..) {
            let _ = sender.send(());
        }
    }
    let _ = write_half.shutdown().await;
}
