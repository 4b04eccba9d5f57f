//! `mq-broker`: the broker process. Parses settings (TOML file, flags, `MQ_*` environment
//! variables: a flag beats its variable, which beats the file, which beats the default),
//! installs the log subscriber, binds the listener, and serves until SIGTERM or SIGINT.
//!
//! Prints `mq-broker listening on HOST:PORT` on stdout once it accepts connections, so that
//! scripts and tests that asked for port 0 learn the port.

#![allow(clippy::print_stdout)] // The one line on stdout is the bound address, for scripts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use std::time::Duration;

use mq_broker::cluster::{
    self, ClusterNode, Controller, ControllerLink, ControllerSettings, NodeSettings,
};
use mq_broker::config::{BrokerConfig, Role};
use mq_broker::server::{self, Broker};

/// The mq broker: a Kafka-style commit-log message broker.
///
/// With no arguments it runs a complete single-node system: listening on 127.0.0.1:9700,
/// storing data in ./data.
#[derive(Debug, Parser)]
#[command(
    name = "mq-broker",
    version,
    after_help = "Examples:\n  mq-broker                                   # single node on 127.0.0.1:9700, data in ./data\n  mq-broker --listen 0.0.0.0:9700 --data-dir /var/lib/mq\n  mq-broker --config broker.toml --retention-ms 86400000\n  MQ_DATA_DIR=/tmp/mq mq-broker\n\nEvery setting is also a TOML key (with underscores) and an MQ_ environment variable."
)]
struct Args {
    /// A TOML file of settings (keys as the flags, with underscores).
    #[arg(long, env = "MQ_CONFIG")]
    config: Option<PathBuf>,
    /// combined (controller and broker: the default), controller, or broker.
    #[arg(long, env = "MQ_ROLE")]
    role: Option<String>,
    /// This broker's id in the cluster.
    #[arg(long, env = "MQ_NODE_ID")]
    node_id: Option<i32>,
    /// Address to listen on [default: 127.0.0.1:9700]; port 0 picks a free port.
    #[arg(long, env = "MQ_LISTEN")]
    listen: Option<SocketAddr>,
    /// host:port that clients are told to connect to [default: the listen address].
    #[arg(long, env = "MQ_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,
    /// The controller's address(es), for the broker role: HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "MQ_CONTROLLER", value_delimiter = ',')]
    controller: Option<Vec<String>>,
    #[arg(long, env = "MQ_RACK")]
    rack: Option<String>,
    #[arg(long, env = "MQ_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "MQ_SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// Where data lives [default: ./data].
    #[arg(long, env = "MQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Connections served at once [default: 4096].
    #[arg(long, env = "MQ_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections from one IP address served at once [default: 2048].
    #[arg(long, env = "MQ_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Largest request frame accepted, in bytes [default: 67108864].
    #[arg(long, env = "MQ_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Close connections idle this long [default: 600000].
    #[arg(long, env = "MQ_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Close a connection whose request frame has not arrived whole this long after its
    /// first byte [default: 30000].
    #[arg(long, env = "MQ_FRAME_TIMEOUT_MS")]
    frame_timeout_ms: Option<u64>,
    /// Bytes of request frames buffered at once over all connections [default: 268435456].
    #[arg(long, env = "MQ_MAX_REQUEST_MEMORY_BYTES")]
    max_request_memory_bytes: Option<usize>,
    /// Requests processed at once per connection [default: 64].
    #[arg(long, env = "MQ_MAX_IN_FLIGHT_REQUESTS")]
    max_in_flight_requests: Option<usize>,
    /// Appends up to this size run on the thread that received them when the page cache
    /// is under no write pressure, 0 for never [default: 65536].
    #[arg(long, env = "MQ_INLINE_APPEND_MAX_BYTES")]
    inline_append_max_bytes: Option<usize>,
    /// Create unknown topics when clients use them [default: false].
    #[arg(long, env = "MQ_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// How often retention runs [default: 300000].
    #[arg(long, env = "MQ_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Shortest session timeout a group member may ask for [default: 1000].
    #[arg(long, env = "MQ_GROUP_MIN_SESSION_TIMEOUT_MS")]
    group_min_session_timeout_ms: Option<u64>,
    /// Longest session timeout a group member may ask for [default: 300000].
    #[arg(long, env = "MQ_GROUP_MAX_SESSION_TIMEOUT_MS")]
    group_max_session_timeout_ms: Option<u64>,
    /// Most members of one consumer group [default: 1000].
    #[arg(long, env = "MQ_GROUP_MAX_SIZE")]
    group_max_size: Option<usize>,
    /// Compact the committed-offsets log above this many records [default: 10000].
    #[arg(long, env = "MQ_OFFSETS_COMPACT_MIN_RECORDS")]
    offsets_compact_min_records: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, env = "MQ_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Default partitions of new topics [default: 1].
    #[arg(long, env = "MQ_PARTITIONS")]
    partitions: Option<i32>,
    /// Default segment size of new topics [default: 1073741824].
    #[arg(long, env = "MQ_SEGMENT_BYTES")]
    segment_bytes: Option<u32>,
    /// Default segment age of new topics [default: 604800000].
    #[arg(long, env = "MQ_SEGMENT_MS")]
    segment_ms: Option<u64>,
    /// Default retention by age of new topics, -1 forever [default: 604800000].
    #[arg(long, env = "MQ_RETENTION_MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Default retention by size per partition, -1 unlimited [default: -1].
    #[arg(long, env = "MQ_RETENTION_BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Default fsync policy: always (ack after fsync), interval, never [default: always].
    #[arg(long, env = "MQ_FLUSH_POLICY")]
    flush_policy: Option<String>,
    /// Fsync interval of the interval policy [default: 1000].
    #[arg(long, env = "MQ_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Largest record batch accepted per partition and request [default: 8388608].
    #[arg(long, env = "MQ_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<u32>,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = settings(args)?;
    keep_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config))
}

/// Keeps memory that the broker frees for its next requests instead of giving it back to
/// the kernel at once. glibc's malloc trims freed memory at the top of its heaps beyond 2x
/// the largest buffer freed so far, so a produce of 1 MiB batches handed each request
/// frame's pages back and faulted fresh ones in for the next: page faults and page
/// clearing were 10-12% of the broker's CPU in that profile. Both limits are raised:
/// buffers up to 32 MiB (glibc's maximum) come from the heap, and the heap keeps up to
/// 256 MiB free (the default `max_request_memory_bytes`, so about what requests may hold
/// at once anyway). Must run before other threads start. Other C libraries keep their
/// own policy.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets malloc's tuning parameters, and no other thread exists yet
    // to be allocating meanwhile. Its failure (0) leaves the defaults: nothing to handle.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Merges the file, environment and flags into the settings.
fn settings(args: Args) -> anyhow::Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if let Some(role) = args.role {
        config.role = match role.as_str() {
            "combined" => Role::Combined,
            "controller" => Role::Controller,
            "broker" => Role::Broker,
            other => bail!("--role must be combined, controller or broker, not '{other}'"),
        };
    }
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(value) = args.$field { config.$field = value; })* };
    }
    set!(
        node_id,
        listen,
        data_dir,
        max_connections,
        max_frame_bytes,
        idle_timeout_ms
    );
    set!(
        max_connections_per_ip,
        frame_timeout_ms,
        max_request_memory_bytes
    );
    set!(controller, heartbeat_interval_ms, session_timeout_ms);
    if args.rack.is_some() {
        config.rack = args.rack;
    }
    set!(
        max_in_flight_requests,
        inline_append_max_bytes,
        auto_create_topics,
        retention_check_interval_ms
    );
    set!(
        group_min_session_timeout_ms,
        group_max_session_timeout_ms,
        group_max_size,
        offsets_compact_min_records
    );
    if args.advertised_listener.is_some() {
        config.advertised_listener = args.advertised_listener;
    }
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    let topic = &mut config.topic_defaults;
    macro_rules! set_topic {
        ($($field:ident),*) => { $(if let Some(value) = args.$field { topic.$field = value; })* };
    }
    set_topic!(
        partitions,
        segment_bytes,
        segment_ms,
        retention_ms,
        retention_bytes
    );
    set_topic!(flush_policy, flush_interval_ms, max_message_bytes);
    config.validate().context("invalid settings")?;
    Ok(config)
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?,
        ),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || open(config, bound))
        .await
        .context("opening the broker")?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let broker = Arc::new(broker);
    if let Some(controller) = &broker.controller {
        tokio::spawn(Arc::clone(controller).run_sessions(broker.shutting_down()));
        if broker.node.is_none() {
            // The controller role serves metadata from the controller's own image.
            let mut image = controller.subscribe();
            let serving = Arc::clone(&broker);
            tokio::spawn(async move {
                while image.changed().await.is_ok() {
                    let current = (**image.borrow_and_update()).clone();
                    serving.publish_image(current);
                }
            });
        }
    }
    import_legacy_topics(&broker).await?;
    cluster::join(&broker)
        .await
        .map_err(|error| anyhow::anyhow!("joining the cluster: {error}"))?;
    tracing::info!(address = %bound, node_id = broker.config.node_id, role = ?broker.config.role, "listening");
    if let Some(metrics_listener) = metrics_listener {
        let address = metrics_listener
            .local_addr()
            .context("reading the metrics address")?;
        tracing::info!(%address, "serving metrics at /metrics");
        tokio::spawn(server::serve_metrics(metrics_listener, Arc::clone(&broker)));
    }
    println!("mq-broker listening on {bound}");
    server::run(listener, broker, shutdown_signal()).await;
    Ok(())
}

/// Opens the controller and the broker as the role asks. Blocking.
fn open(config: BrokerConfig, bound: SocketAddr) -> anyhow::Result<Broker> {
    let controller = match config.role {
        Role::Combined | Role::Controller => Some(Arc::new(Controller::open(
            &config.data_dir,
            ControllerSettings {
                node_id: config.node_id,
                session_timeout: Duration::from_millis(config.session_timeout_ms),
                topic_defaults: config.topic_defaults.clone(),
            },
        )?)),
        Role::Broker => None,
    };
    let node = match config.role {
        Role::Controller => None,
        Role::Combined | Role::Broker => {
            let link = match &controller {
                Some(controller) => ControllerLink::Local(Arc::clone(controller)),
                None => ControllerLink::remote(config.controller.clone()),
            };
            let (host, port) = server::advertised(&config, bound);
            Some(ClusterNode::new(
                NodeSettings {
                    node_id: config.node_id,
                    host,
                    port,
                    rack: config.rack.clone(),
                    heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
                },
                link,
            ))
        }
    };
    Ok(Broker::open(config, bound, controller, node)?)
}

/// A data directory written by a single-node version before cluster mode keeps its topics in
/// `topics/`; a `combined` node whose metadata log is empty takes them over, in place.
async fn import_legacy_topics(broker: &Broker) -> anyhow::Result<()> {
    let (Some(controller), Some(_)) = (&broker.controller, &broker.node) else {
        return Ok(());
    };
    if !broker.config.data_dir.join("topics").is_dir() {
        return Ok(());
    }
    let data_dir = broker.config.data_dir.clone();
    let records =
        tokio::task::spawn_blocking(move || mq_broker::topics::TopicStore::open(&data_dir))
            .await
            .context("reading the topic registry")?
            .context("reading the topic registry")?
            .1;
    let imported = controller
        .import_legacy_topics(records, broker.node_id())
        .await
        .map_err(|(_, message)| anyhow::anyhow!("importing topics: {message}"))?;
    if imported > 0 {
        tracing::info!(
            topics = imported,
            "imported topics of the single-node registry"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
