//! The metrics endpoint: a minimal HTTP/1.1 server answering `GET /metrics` with the
//! Prometheus/OpenMetrics text exposition, on its own listener (`--metrics-listen`).
//!
//! Deliberately small: one request per connection, a bounded request head (8 KiB, 5 s),
//! `Connection: close`. Anything but `GET /metrics` gets 404 (or 400 when unreadable).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::state::Broker;

/// The largest request head read.
const HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes until the broker shuts down.
pub async fn serve_metrics(listener: TcpListener, broker: Arc<Broker>) {
    let mut shutting_down = broker.shutting_down();
    loop {
        let accepted = tokio::select! {
            _ = shutting_down.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(scrape(stream, Arc::clone(&broker)));
            }
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one request on `stream`.
async fn scrape(mut stream: TcpStream, broker: Arc<Broker>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => {
            let _ = respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
            )
            .await;
            return;
        }
    };
    let mut words = head.split_ascii_whitespace();
    let (method, path) = (words.next(), words.next());
    if method != Some("GET") || !matches!(path, Some("/metrics") | Some("/metrics/")) {
        let _ = respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try GET /metrics\n",
        )
        .await;
        return;
    }
    let snapshot_broker = Arc::clone(&broker);
    let Ok(snapshot) =
        tokio::task::spawn_blocking(move || snapshot_broker.metrics_snapshot()).await
    else {
        return;
    };
    let text = broker.metrics.render(&snapshot);
    let _ = respond(
        &mut stream,
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text.as_bytes(),
    )
    .await;
}

/// Reads until the end of the request head; `None` if it is too long, not UTF-8, or the
/// client closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || head.len() + read > HEAD_BYTES_MAX {
            return None;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8(head).ok()
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
