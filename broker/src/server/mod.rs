//! The TCP server: accepts connections (at most `max_connections` at once, and at most
//! `max_connections_per_ip` from one address: more are closed on arrival) and serves each
//! on its own task; runs the log manager's and the group coordinator's background work
//! and the page-cache monitor that allows inline appends;
//! shuts down gracefully.
//!
//! `run` takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and stop the server when they like.

mod connection;
mod dispatch;
mod inline_appends;
mod metrics_http;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use metrics_http::serve_metrics;
pub use state::{advertised, AdminError, Broker, StartError};

/// How long shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` resolves, then stops accepting, answers held group
/// requests, lets in-flight requests finish and be answered, and closes every log (the
/// committed-offsets log too) cleanly.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(broker.config.max_connections));
    let per_ip = Arc::new(PerIp::new(broker.config.max_connections_per_ip));
    let retention_interval = Duration::from_millis(broker.config.retention_check_interval_ms);
    let background = tokio::spawn(crate::manager::run_background(
        Arc::clone(&broker.manager),
        retention_interval,
        wait_for_shutdown(broker.shutting_down()),
    ));
    let inline_monitor = tokio::spawn(
        Arc::clone(&broker.inline_appends).monitor(wait_for_shutdown(broker.shutting_down())),
    );
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
                let Some(slot) = PerIp::admit(&per_ip, peer.ip()) else {
                    tracing::warn!(%peer, limit = broker.config.max_connections_per_ip, "closing connection: too many from this address");
                    drop(stream);
                    continue;
                };
                let broker = Arc::clone(&broker);
                broker.metrics.connection_accepted();
                tasks.spawn(async move {
                    connection::serve(stream, peer, Arc::clone(&broker)).await;
                    broker.metrics.connection_closed();
                    drop(slot);
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
    let _ = inline_monitor.await;
    // An fsync round started for acks=all requests may outlive the requests it answered,
    // holding its partition for a moment: the logs close once it is done.
    broker.durability_rounds.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, broker.durability_rounds.wait())
        .await
        .is_err()
    {
        tracing::warn!("fsyncs still running after the grace period; closing logs anyway");
    }
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

/// Connections open per client address.
struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in its address's count, given back on drop.
struct PerIpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip`, unless that address is at its limit.
    fn admit(per_ip: &Arc<PerIp>, ip: IpAddr) -> Option<PerIpSlot> {
        let mut open = per_ip.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= per_ip.limit {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            per_ip: Arc::clone(per_ip),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn wait_for_shutdown(mut shutting_down: tokio::sync::watch::Receiver<bool>) {
    let _ = shutting_down.wait_for(|down| *down).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limits_count_each_address_and_give_slots_back() {
        let per_ip = Arc::new(PerIp::new(2));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = PerIp::admit(&per_ip, a).expect("below the limit");
        let second = PerIp::admit(&per_ip, a).expect("at the limit");
        assert!(PerIp::admit(&per_ip, a).is_none(), "over the limit");
        let other = PerIp::admit(&per_ip, b).expect("another address has its own count");
        drop(first);
        let again = PerIp::admit(&per_ip, a).expect("a closed connection gives its slot back");
        drop((second, again, other));
        assert!(
            per_ip.open.lock().unwrap().is_empty(),
            "no entries left behind"
        );
    }
}
