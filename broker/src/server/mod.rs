//! The TCP server: accepts connections (at most `max_connections` at once) and serves each
//! on its own task; runs the log manager's and the group coordinator's background work;
//! shuts down gracefully.
//!
//! `run` takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and stop the server when they like.

mod connection;
mod dispatch;
mod metrics_http;
mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use metrics_http::serve_metrics;
pub use state::{AdminError, Broker, StartError};

/// How long shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` resolves, then stops accepting, answers held group
/// requests, lets in-flight requests finish and be answered, and closes every log (the
/// committed-offsets log too) cleanly.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(broker.config.max_connections));
    let retention_interval = Duration::from_millis(broker.config.retention_check_interval_ms);
    let background = tokio::spawn(crate::manager::run_background(
        Arc::clone(&broker.manager),
        retention_interval,
        wait_for_shutdown(broker.shutting_down()),
    ));
    let groups_background = tokio::spawn(
        Arc::clone(&broker.coordinator).run_background(wait_for_shutdown(broker.shutting_down())),
    );
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let broker = Arc::clone(&broker);
                broker.metrics.connection_accepted();
                tasks.spawn(async move {
                    connection::serve(stream, peer, Arc::clone(&broker)).await;
                    broker.metrics.connection_closed();
                    drop(permit);
                });
            }
            Err(error) => {
                // Usually out of descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    drop(listener);
    broker.begin_shutdown();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing logs anyway");
        tasks.abort_all();
    }
    let _ = background.await;
    let _ = groups_background.await;
    let manager = Arc::clone(&broker.manager);
    let _ = tokio::task::spawn_blocking(move || manager.close_all()).await;
    let offsets = Arc::clone(broker.coordinator.store());
    match tokio::task::spawn_blocking(move || offsets.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "closing the committed-offsets log failed"),
        Err(error) => tracing::error!(%error, "closing the committed-offsets log panicked"),
    }
    tracing::info!("shut down cleanly");
}

async fn wait_for_shutdown(mut shutting_down: tokio::sync::watch::Receiver<bool>) {
    let _ = shutting_down.wait_for(|down| *down).await;
}
