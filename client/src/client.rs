//! [`Client`]: the cluster as the client sees it: cached metadata and one connection per
//! broker.
//!
//! A client starts from bootstrap addresses, learns the brokers and the partitions' leaders
//! from a Metadata request, and keeps that view in a cache that the producer and consumer
//! read on every routing decision. They ask for a refresh when a broker says the view is
//! stale (not the leader, unknown partition) or a connection fails. Connections are pooled by
//! broker address; a connection found dead (the broker restarted, or closed an idle
//! connection) is replaced on its next use, so callers never see a stale socket twice.
//!
//! This module does not retry requests; the producer and consumer do, within their own
//! timeouts, because only they know whether a retry is safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mq_protocol::request::{MetadataRequest, Request};
use mq_protocol::response::{MetadataResponse, PartitionMetadata, Response};
use mq_protocol::ErrorCode;
use tokio::time::Instant;

use crate::connection::{Connection, ConnectionConfig, FRAME_BYTES_MAX};
use crate::error::ClientError;

/// Settings shared by everything built on one [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent in every request header, for the brokers' logs.
    pub client_id: String,
    /// How long a request may wait for its response (a fetch gets its long-poll wait on
    /// top of this).
    pub request_timeout: Duration,
    /// How long establishing a TCP connection may take.
    pub connect_timeout: Duration,
    /// Cached metadata older than this is fetched again before use, so that new partitions
    /// are seen even when nothing fails.
    pub metadata_max_age: Duration,
    /// The largest response frame accepted.
    pub max_frame_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "mq-client".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            metadata_max_age: Duration::from_secs(5 * 60),
            max_frame_bytes: FRAME_BYTES_MAX,
        }
    }
}

/// A partition of a topic: the unit of ordering, assignment and routing.
///
/// ```
/// use mq_client::TopicPartition;
///
/// let partition = TopicPartition::new("orders", 3);
/// assert_eq!(partition, TopicPartition::from(("orders", 3)));
/// assert_eq!(partition.to_string(), "orders-3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition number, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl<T: Into<String>> From<(T, i32)> for TopicPartition {
    fn from((topic, partition): (T, i32)) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A broker, as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    /// Its node id.
    pub node_id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: i32,
}

impl Broker {
    /// `host:port`, with an IPv6 host in brackets.
    pub fn address(&self) -> String {
        mq_protocol::types::host_port(&self.host, self.port)
    }
}

/// The brokers of the cluster and its controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The live brokers, by node id.
    pub brokers: Vec<Broker>,
    /// The controller's node id; `None` when the cluster has none right now.
    pub controller_id: Option<i32>,
}

/// A topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Its partitions, by partition number.
    pub partitions: Vec<PartitionDescription>,
}

impl TopicDescription {
    /// The partition numbered `partition`.
    pub fn partition(&self, partition: i32) -> Option<&PartitionDescription> {
        let index = usize::try_from(partition).ok()?;
        match self.partitions.get(index) {
            Some(found) if found.partition == partition => Some(found),
            _ => self
                .partitions
                .iter()
                .find(|found| found.partition == partition),
        }
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition number.
    pub partition: i32,
    /// The node id of its leader; `None` while it has none (offline, or just created).
    pub leader: Option<i32>,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Node ids of its replicas.
    pub replicas: Vec<i32>,
    /// Node ids of its in-sync replicas.
    pub isr: Vec<i32>,
    /// The first offset still stored.
    pub log_start_offset: i64,
    /// The offset the next record will get.
    pub log_end_offset: i64,
    /// Bytes of its log on disk.
    pub size_bytes: i64,
    /// Why the partition is not available (`LEADER_NOT_AVAILABLE`), if it is not.
    pub error: Option<ErrorCode>,
}

/// A snapshot of cluster metadata.
#[derive(Debug)]
pub(crate) struct Metadata {
    /// When it was last fetched, wholly or for some topics; `None` before the first fetch.
    fetched_at: Option<Instant>,
    /// When every topic was last fetched, so that concurrent refreshes can share a fetch.
    refreshed_at: Option<Instant>,
    /// The brokers by node id.
    brokers: BTreeMap<i32, Broker>,
    /// The controller's node id.
    controller_id: Option<i32>,
    /// Topics by name.
    topics: HashMap<String, Arc<TopicDescription>>,
}

/// Where a partition's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leader {
    /// The leader's `host:port`.
    pub(crate) address: String,
    /// The leader epoch to send along.
    pub(crate) epoch: i32,
}

/// What the cache knows about a partition's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Send to this leader.
    Leader(Leader),
    /// The partition exists but has no (known) leader right now.
    NoLeader,
    /// The cache does not know the topic.
    UnknownTopic,
    /// The topic is known but has no such partition.
    UnknownPartition,
}

impl Metadata {
    fn empty() -> Metadata {
        Metadata {
            fetched_at: None,
            refreshed_at: None,
            brokers: BTreeMap::new(),
            controller_id: None,
            topics: HashMap::new(),
        }
    }

    /// Builds a snapshot from a response; `previous` supplies the topics a partial response
    /// (Metadata for some topics) did not cover.
    fn from_response(response: MetadataResponse, previous: Option<&Metadata>) -> Metadata {
        let now = Instant::now();
        let mut topics = previous
            .map(|previous| previous.topics.clone())
            .unwrap_or_default();
        for topic in response.topics {
            if topic.error_code != ErrorCode::NONE {
                topics.remove(&topic.name);
                continue;
            }
            let mut partitions: Vec<_> = topic.partitions.into_iter().map(describe).collect();
            partitions.sort_by_key(|partition| partition.partition);
            topics.insert(
                topic.name.clone(),
                Arc::new(TopicDescription {
                    name: topic.name,
                    partitions,
                }),
            );
        }
        Metadata {
            fetched_at: Some(now),
            refreshed_at: match previous {
                Some(previous) => previous.refreshed_at,
                None => Some(now),
            },
            brokers: response
                .brokers
                .into_iter()
                .map(|broker| {
                    let broker = Broker {
                        node_id: broker.node_id,
                        host: broker.host,
                        port: broker.port,
                    };
                    (broker.node_id, broker)
                })
                .collect(),
            controller_id: (response.controller_id >= 0).then_some(response.controller_id),
            topics,
        }
    }

    /// The topic, if known.
    pub(crate) fn topic(&self, topic: &str) -> Option<&Arc<TopicDescription>> {
        self.topics.get(topic)
    }

    /// Where requests for a partition go.
    pub(crate) fn route(&self, topic: &str, partition: i32) -> Route {
        let Some(description) = self.topics.get(topic) else {
            return Route::UnknownTopic;
        };
        let Some(partition) = description.partition(partition) else {
            return Route::UnknownPartition;
        };
        let broker = partition
            .leader
            .filter(|_| partition.error.is_none())
            .and_then(|leader| self.brokers.get(&leader));
        match broker {
            Some(broker) => Route::Leader(Leader {
                address: broker.address(),
                epoch: partition.leader_epoch,
            }),
            None => Route::NoLeader,
        }
    }

    /// Broker addresses, the controller's first.
    fn broker_addresses(&self) -> Vec<String> {
        let controller = self.controller_id.and_then(|id| self.brokers.get(&id));
        controller
            .into_iter()
            .chain(self.brokers.values())
            .map(Broker::address)
            .collect()
    }
}

/// Converts a wire partition into its description.
fn describe(partition: PartitionMetadata) -> PartitionDescription {
    PartitionDescription {
        partition: partition.partition,
        leader: (partition.leader >= 0).then_some(partition.leader),
        leader_epoch: partition.leader_epoch,
        replicas: partition.replicas,
        isr: partition.isr,
        log_start_offset: partition.log_start_offset,
        log_end_offset: partition.log_end_offset,
        size_bytes: partition.size_bytes,
        error: (partition.error_code != ErrorCode::NONE).then_some(partition.error_code),
    }
}

/// The converted topics of a Metadata response, each with its error code.
pub(crate) fn topics_of(response: &MetadataResponse) -> Vec<(ErrorCode, TopicDescription)> {
    response
        .topics
        .iter()
        .map(|topic| {
            let mut partitions: Vec<_> = topic.partitions.iter().cloned().map(describe).collect();
            partitions.sort_by_key(|partition| partition.partition);
            (
                topic.error_code,
                TopicDescription {
                    name: topic.name.clone(),
                    partitions,
                },
            )
        })
        .collect()
}

/// A handle on the cluster: metadata cache and connection pool. Cheap to clone; clones share
/// everything, so one client serves any number of producers, consumers and admins.
///
/// ```no_run
/// use mq_client::{Client, ClientConfig};
///
/// # async fn example() -> Result<(), mq_client::ClientError> {
/// let client = Client::connect("127.0.0.1:9700", ClientConfig::default()).await?;
/// let cluster = client.cluster();
/// println!("controller: {:?}, brokers: {}", cluster.controller_id, cluster.brokers.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    /// What the clones share.
    inner: Arc<ClientInner>,
}

/// The state shared by a client's clones.
#[derive(Debug)]
struct ClientInner {
    /// The settings.
    config: ClientConfig,
    /// The bootstrap addresses, tried when no known broker answers.
    bootstrap: Vec<String>,
    /// The latest metadata snapshot; replaced whole, never edited in place.
    metadata: RwLock<Arc<Metadata>>,
    /// Serialises metadata fetches, so that a burst of refresh requests costs one fetch.
    refresh_lock: tokio::sync::Mutex<()>,
    /// One connection slot per broker address; the slot's lock is held while connecting,
    /// so concurrent users of a new broker share one connection.
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl Client {
    /// Connects to the first reachable address of `bootstrap` (`host:port[,host:port...]`),
    /// checks that it speaks the protocol (ApiVersions), and fetches the cluster's metadata.
    ///
    /// When no address is reachable the error names them all. Must be called inside a tokio
    /// runtime.
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let addresses = parse_bootstrap(bootstrap)?;
        let client = Client {
            inner: Arc::new(ClientInner {
                config,
                bootstrap: addresses.clone(),
                metadata: RwLock::new(Arc::new(Metadata::empty())),
                refresh_lock: tokio::sync::Mutex::new(()),
                connections: Mutex::new(HashMap::new()),
            }),
        };
        let mut last_error = None;
        for address in &addresses {
            match client.check_broker(address).await {
                Ok(()) => {
                    client.refresh_metadata().await?;
                    return Ok(client);
                }
                Err(error) => {
                    tracing::debug!(address, %error, "bootstrap address failed");
                    last_error = Some(error);
                }
            }
        }
        Err(match last_error {
            Some(ClientError::Connect { error, .. }) if addresses.len() > 1 => {
                ClientError::Connect {
                    address: addresses.join(", "),
                    error,
                }
            }
            Some(error) => error,
            None => ClientError::InvalidConfig {
                name: "bootstrap",
                reason: "no address given".to_string(),
            },
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Fetches the metadata of every topic again, from any broker that answers. Concurrent
    /// calls share one fetch.
    pub async fn refresh_metadata(&self) -> Result<(), ClientError> {
        let asked_at = Instant::now();
        let _guard = self.inner.refresh_lock.lock().await;
        if self
            .metadata()
            .refreshed_at
            .is_some_and(|refreshed| refreshed >= asked_at)
        {
            return Ok(());
        }
        let response = self.request_metadata(None).await?;
        let metadata = Metadata::from_response(response, None);
        *self.write_metadata() = Arc::new(metadata);
        Ok(())
    }

    /// The cluster's brokers and controller, as cached.
    pub fn cluster(&self) -> Cluster {
        let metadata = self.metadata();
        Cluster {
            brokers: metadata.brokers.values().cloned().collect(),
            controller_id: metadata.controller_id,
        }
    }

    /// The topic as cached, fetching its metadata first when it is not cached or the cache
    /// is older than [`ClientConfig::metadata_max_age`]. Asking the broker for one topic by
    /// name lets a broker that auto-creates topics create it.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicDescription>, ClientError> {
        let metadata = self.metadata();
        let fresh = metadata
            .fetched_at
            .is_some_and(|fetched| fetched.elapsed() < self.inner.config.metadata_max_age);
        if let Some(description) = metadata.topic(topic).filter(|_| fresh) {
            return Ok(Arc::clone(description));
        }
        self.refresh_topic(topic).await?;
        self.metadata()
            .topic(topic)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_string(),
            })
    }

    /// Fetches one topic's metadata into the cache (removing it when the broker does not
    /// know it).
    pub(crate) async fn refresh_topic(&self, topic: &str) -> Result<(), ClientError> {
        let response = self.request_metadata(Some(vec![topic.to_string()])).await?;
        let mut slot = self.write_metadata();
        let metadata = Metadata::from_response(response, Some(&slot));
        *slot = Arc::new(metadata);
        Ok(())
    }

    /// The current metadata snapshot.
    pub(crate) fn metadata(&self) -> Arc<Metadata> {
        let slot = self
            .inner
            .metadata
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&slot)
    }

    fn write_metadata(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Metadata>> {
        self.inner
            .metadata
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pooled connection to `address`, made (or remade, if the old one died) on demand.
    pub(crate) async fn connection(&self, address: &str) -> Result<Connection, ClientError> {
        self.pooled_connection(address)
            .await
            .map(|(connection, _)| connection)
    }

    /// Like [`Client::connection`], also saying whether the connection was already in the
    /// pool (it may then have died unnoticed: the broker restarted while it was idle).
    async fn pooled_connection(&self, address: &str) -> Result<(Connection, bool), ClientError> {
        let slot = {
            let mut connections = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(connections.entry(address.to_string()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.is_alive() {
                return Ok((connection.clone(), true));
            }
            tracing::debug!(address, "replacing dead connection");
        }
        *slot = None;
        let connection = Connection::connect(address, self.connection_config()).await?;
        *slot = Some(connection.clone());
        Ok((connection, false))
    }

    /// Sends `request` to the broker at `address`. When a pooled connection turns out to be
    /// dead (the broker restarted or closed it while idle), the request is sent once more on
    /// a new connection: the old socket's failure says nothing about the broker now.
    pub(crate) async fn request_to(
        &self,
        address: &str,
        request: Request,
    ) -> Result<Response, ClientError> {
        let timeout = self.inner.config.request_timeout;
        self.request_to_with_timeout(address, request, timeout)
            .await
    }

    /// Like [`Client::request_to`], with its own timeout (a request the broker holds, such
    /// as JoinGroup, needs longer than usual).
    pub(crate) async fn request_to_with_timeout(
        &self,
        address: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let (connection, pooled) = self.pooled_connection(address).await?;
        match connection
            .request_with_timeout(request.clone(), timeout)
            .await
        {
            Err(ClientError::Disconnected { .. } | ClientError::Io { .. }) if pooled => {
                tracing::debug!(address, "pooled connection was dead, reconnecting");
                self.connection(address)
                    .await?
                    .request_with_timeout(request, timeout)
                    .await
            }
            result => result,
        }
    }

    /// Sends `request` to the first broker that answers: known brokers (the controller first,
    /// which is where admin requests belong), then the bootstrap addresses. Moves to the next
    /// broker only when the connection fails; an answer, even an error, ends the search.
    pub(crate) async fn request_any(&self, request: Request) -> Result<Response, ClientError> {
        let mut addresses = self.metadata().broker_addresses();
        addresses.extend(self.inner.bootstrap.iter().cloned());
        let mut seen = Vec::new();
        let mut last_error = None;
        for address in addresses {
            if seen.contains(&address) {
                continue;
            }
            match self.request_to(&address, request.clone()).await {
                Err(error) if is_connection_error(&error) => {
                    tracing::debug!(address, %error, "broker unreachable, trying the next");
                    last_error = Some(error);
                }
                result => return result,
            }
            seen.push(address);
        }
        Err(last_error.unwrap_or_else(|| ClientError::InvalidConfig {
            name: "bootstrap",
            reason: "no broker address known".to_string(),
        }))
    }

    async fn request_metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        match self
            .request_any(Request::Metadata(MetadataRequest { topics }))
            .await?
        {
            Response::Metadata(response) => Ok(response),
            _ => Err(ClientError::UnexpectedResponse { api: "Metadata" }),
        }
    }

    /// Checks that the broker at `address` answers ApiVersions and speaks version 0 of the
    /// APIs this client uses (a broker lacking one is logged, not refused: the request that
    /// needs it gets the broker's error).
    async fn check_broker(&self, address: &str) -> Result<(), ClientError> {
        let response = self.request_to(address, Request::ApiVersions).await?;
        let Response::ApiVersions(versions) = response else {
            return Err(ClientError::UnexpectedResponse { api: "ApiVersions" });
        };
        for api_key in mq_protocol::request::ApiKey::ALL {
            let spoken = versions
                .apis
                .iter()
                .any(|api| api.api_key == api_key && api.min_version <= 0 && api.max_version >= 0);
            if !spoken {
                tracing::warn!(
                    address,
                    api = api_key.name(),
                    "broker does not speak version 0"
                );
            }
        }
        Ok(())
    }

    fn connection_config(&self) -> ConnectionConfig {
        let config = &self.inner.config;
        ConnectionConfig {
            client_id: Some(config.client_id.clone()),
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            ..ConnectionConfig::default()
        }
    }
}

/// Whether the error is about reaching the broker (so another broker may do), rather than
/// the broker's answer.
fn is_connection_error(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Disconnected { .. }
    )
}

/// Splits `host:port[,host:port...]`, checking each has a port.
fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>, ClientError> {
    let addresses: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
        .collect();
    if addresses.is_empty() {
        return Err(ClientError::InvalidConfig {
            name: "bootstrap",
            reason: format!("'{bootstrap}' names no address (expected host:port[,host:port])"),
        });
    }
    for address in &addresses {
        let port = address
            .rsplit_once(':')
            .map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            return Err(ClientError::InvalidConfig {
                name: "bootstrap",
                reason: format!("'{address}' is not host:port"),
            });
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_protocol::response::{BrokerMetadata, TopicMetadata};

    #[test]
    fn bootstrap_lists_are_split_and_checked() {
        assert_eq!(
            parse_bootstrap("a:1, b:2,").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert_eq!(parse_bootstrap("[::1]:9700").unwrap(), vec!["[::1]:9700"]);
        let error = parse_bootstrap("localhost").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid bootstrap: 'localhost' is not host:port"
        );
        assert!(parse_bootstrap(" , ").is_err());
    }

    fn response(partitions: Vec<PartitionMetadata>) -> MetadataResponse {
        MetadataResponse {
            brokers: vec![BrokerMetadata {
                node_id: 1,
                host: "h".into(),
                port: 9,
            }],
            controller_id: 1,
            topics: vec![TopicMetadata {
                error_code: ErrorCode::NONE,
                name: "t".into(),
                partitions,
            }],
        }
    }

    fn partition(partition: i32, leader: i32, error_code: ErrorCode) -> PartitionMetadata {
        PartitionMetadata {
            error_code,
            partition,
            leader,
            leader_epoch: 3,
            ..PartitionMetadata::default()
        }
    }

    #[test]
    fn routes_follow_leaders() {
        let metadata = Metadata::from_response(
            response(vec![
                partition(1, -1, ErrorCode::LEADER_NOT_AVAILABLE),
                partition(0, 1, ErrorCode::NONE),
                partition(2, 7, ErrorCode::NONE),
            ]),
            None,
        );
        assert_eq!(
            metadata.route("t", 0),
            Route::Leader(Leader {
                address: "h:9".into(),
                epoch: 3
            })
        );
        assert_eq!(metadata.route("t", 1), Route::NoLeader);
        assert_eq!(
            metadata.route("t", 2),
            Route::NoLeader,
            "leader not among brokers"
        );
        assert_eq!(metadata.route("t", 3), Route::UnknownPartition);
        assert_eq!(metadata.route("u", 0), Route::UnknownTopic);
    }

    #[test]
    fn partial_responses_keep_other_topics_and_drop_unknown_ones() {
        let full = Metadata::from_response(response(vec![partition(0, 1, ErrorCode::NONE)]), None);
        let mut partial = response(vec![]);
        partial.topics = vec![
            TopicMetadata {
                error_code: ErrorCode::NONE,
                name: "u".into(),
                partitions: vec![partition(0, 1, ErrorCode::NONE)],
            },
            TopicMetadata {
                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                name: "gone".into(),
                partitions: vec![],
            },
        ];
        let merged = Metadata::from_response(partial, Some(&full));
        assert!(merged.topic("t").is_some());
        assert!(merged.topic("u").is_some());
        assert!(merged.topic("gone").is_none());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let broker = Broker {
            node_id: 1,
            host: "::1".into(),
            port: 9700,
        };
        assert_eq!(broker.address(), "[::1]:9700");
    }
}
