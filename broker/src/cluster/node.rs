//! [`ClusterNode`]: a broker's membership of the cluster.
//!
//! At start-up the broker registers with the controller (getting its broker epoch), reads the
//! whole metadata log into a [`ClusterImage`], and makes its local logs match that image
//! before it serves anyone: partitions assigned to it are opened (or created), and it leads
//! those whose leader it is. Then two tasks run until shutdown:
//!
//! - heartbeats every `heartbeat_interval`; when the controller answers that the broker was
//!   fenced or registered again, the broker registers again (and resumes);
//! - the metadata follower: a long-polled `FetchMetadata` from the image's offset; each
//!   change is applied to the image and to the local logs at once, in log order, and the new
//!   image is published to request handlers.
//!
//! Local logs follow the image partition by partition ([`reconcile`]): a partition assigned
//! here is opened, one no longer assigned is deleted, and leadership is switched with a
//! barrier (see `manager::Partition::leader_epoch`). Each partition directory holds a
//! `topic.id` file with its topic's id, so that data of a deleted topic is never served as a
//! new topic of the same name. Directories the image does not assign here are left alone at
//! start-up (a broker pointed at the wrong controller must not delete its data).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mq_protocol::batch::BatchIter;
use mq_protocol::cluster::{
    BrokerHeartbeatRequest, BrokerRegistrationRequest, FetchMetadataRequest,
};
use mq_protocol::request::Request;
use mq_protocol::response::Response;
use mq_protocol::ErrorCode;
use tokio::task::AbortHandle;

use super::controller::{apply_batch, apply_to_image};
use super::image::{ClusterImage, TopicImage};
use super::link::ControllerLink;
use super::mover;
use super::records::MetadataRecord;
use crate::config::TopicConfig;
use crate::manager::{Partition, TopicPartition, NOT_LEADING};
use crate::server::Broker;

/// How long a metadata fetch waits at the controller when there is nothing new.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// Bytes of metadata asked for at a time.
const FOLLOW_BYTES: i32 = 4 * 1024 * 1024;

/// How long to wait before trying the controller again after a failure.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The name of the file holding a partition directory's topic id.
const TOPIC_ID_FILE: &str = "topic.id";

/// A broker's settings as a member of the cluster.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Its node id.
    pub node_id: i32,
    /// The host clients are told to connect to.
    pub host: String,
    /// The port clients are told to connect to.
    pub port: i32,
    /// Its rack label.
    pub rack: Option<String>,
    /// How often it heartbeats.
    pub heartbeat_interval: Duration,
}

/// A broker's membership of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    /// Settings.
    settings: NodeSettings,
    /// How the controller is reached.
    link: ControllerLink,
    /// Random per process start.
    incarnation: i64,
    /// The epoch of the current registration; -1 before the first.
    broker_epoch: AtomicI64,
    /// The controller's node id, as its last answer to a registration gave it.
    controller_id: AtomicI32,
    /// Moves copying a partition to this broker, by partition.
    movers: Mutex<HashMap<TopicPartition, (i32, AbortHandle)>>,
}

impl ClusterNode {
    /// A member that is not registered yet.
    pub fn new(settings: NodeSettings, link: ControllerLink) -> ClusterNode {
        let incarnation = i64::from_be_bytes((super::controller::random_id() as u64).to_be_bytes());
        ClusterNode {
            settings,
            link,
            incarnation,
            broker_epoch: AtomicI64::new(-1),
            controller_id: AtomicI32::new(-1),
            movers: Mutex::new(HashMap::new()),
        }
    }

    /// Its node id.
    pub fn node_id(&self) -> i32 {
        self.settings.node_id
    }

    /// The epoch of its current registration.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// The controller's node id; -1 before the first registration.
    pub fn controller_id(&self) -> i32 {
        self.controller_id.load(Ordering::Acquire)
    }

    /// How it reaches the controller.
    pub fn link(&self) -> &ControllerLink {
        &self.link
    }

    /// Registers with the controller, retrying until it answers or the broker shuts down.
    async fn register(&self, broker: &Broker) -> Result<(), String> {
        let mut shutdown = broker.shutting_down();
        let mut attempts = 0u32;
        loop {
            let request = Request::BrokerRegistration(BrokerRegistrationRequest {
                node_id: self.settings.node_id,
                host: self.settings.host.clone(),
                port: self.settings.port,
                rack: self.settings.rack.clone(),
                incarnation: self.incarnation,
            });
            let failure = match self.link.call(request, Duration::from_secs(10)).await {
                Ok(Response::BrokerRegistration(response)) if response.error_code.is_ok() => {
                    self.broker_epoch
                        .store(response.broker_epoch, Ordering::Release);
                    self.controller_id
                        .store(response.controller_id, Ordering::Release);
                    tracing::info!(
                        node_id = self.settings.node_id,
                        broker_epoch = response.broker_epoch,
                        controller = self.link.describe(),
                        "registered with the controller"
                    );
                    return Ok(());
                }
                Ok(Response::BrokerRegistration(response))
                    if !response.error_code.is_retriable() =>
                {
                    return Err(format!(
                        "the controller refused the registration: {}",
                        response.error_message.unwrap_or_default()
                    ));
                }
                Ok(other) => format!("unexpected answer {:?}", other.has_error()),
                Err(error) => error,
            };
            attempts += 1;
            if attempts % 25 == 1 {
                tracing::warn!(error = failure, "registering with the controller; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_DELAY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Err("shutting down".to_string()),
            }
        }
    }

    /// One metadata fetch from `offset`: the response's record batches and the log's end.
    async fn fetch(&self, offset: i64, wait: Duration) -> Result<(bytes::Bytes, i64), String> {
        let request = Request::FetchMetadata(FetchMetadataRequest {
            node_id: self.settings.node_id,
            broker_epoch: self.broker_epoch(),
            offset,
            max_wait_ms: i32::try_from(wait.as_millis()).unwrap_or(i32::MAX),
            max_bytes: FOLLOW_BYTES,
        });
        match self
            .link
            .call(request, wait + Duration::from_secs(10))
            .await?
        {
            Response::FetchMetadata(response) if response.error_code.is_ok() => {
                Ok((response.records, response.log_end))
            }
            Response::FetchMetadata(response) => Err(format!(
                "{}: {}",
                response.error_code,
                response.error_message.unwrap_or_default()
            )),
            _ => Err("unexpected answer to FetchMetadata".to_string()),
        }
    }

    fn stop_mover(&self, partition: &TopicPartition) {
        let removed = self
            .movers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(partition);
        if let Some((_, handle)) = removed {
            handle.abort();
        }
    }
}

/// Joins the cluster: registers, catches up with the metadata log, makes the local logs
/// match it, publishes the image, and starts the heartbeat and follower tasks. Returns once
/// the broker may serve.
pub async fn join(broker: &Arc<Broker>) -> Result<(), String> {
    let Some(node) = broker.node.as_ref() else {
        return Ok(());
    };
    node.register(broker).await?;
    let mut image = ClusterImage::default();
    loop {
        let (records, log_end) = node.fetch(image.offset, Duration::ZERO).await?;
        apply_all(&records, &mut image, &mut apply_to_image)?;
        if image.offset >= log_end {
            break;
        }
    }
    let image = {
        let broker = Arc::clone(broker);
        tokio::task::spawn_blocking(move || {
            for topic in image.topics.values() {
                for partition in 0..topic.partitions.len() {
                    let partition = i32::try_from(partition).unwrap_or(i32::MAX);
                    reconcile(&broker, &image, &topic.name, partition);
                }
                broker
                    .coordinator
                    .update_topic(&topic.name, partition_count(topic));
            }
            image
        })
        .await
        .map_err(|error| error.to_string())?
    };
    tracing::info!(
        metadata_offset = image.offset,
        topics = image.topics.len(),
        "caught up with the cluster metadata"
    );
    broker.publish_image(image);
    tokio::spawn(heartbeats(Arc::clone(broker)));
    tokio::spawn(follow(Arc::clone(broker)));
    Ok(())
}

/// Applies every change of fetched record batches that `image` has not applied yet,
/// through `apply`.
fn apply_all(
    records: &bytes::Bytes,
    image: &mut ClusterImage,
    apply: &mut impl FnMut(&mut ClusterImage, i64, MetadataRecord),
) -> Result<(), String> {
    for found in BatchIter::new(records) {
        let found = found.map_err(|error| format!("metadata from the controller: {error}"))?;
        apply_batch(&records.slice_ref(found.bytes), image, apply)
            .map_err(|(offset, reason)| format!("metadata at offset {offset}: {reason}"))?;
    }
    Ok(())
}

async fn heartbeats(broker: Arc<Broker>) {
    let Some(node) = broker.node.as_ref() else {
        return;
    };
    let mut shutdown = broker.shutting_down();
    loop {
        tokio::select! {
            () = tokio::time::sleep(node.settings.heartbeat_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let request = Request::BrokerHeartbeat(BrokerHeartbeatRequest {
            node_id: node.settings.node_id,
            broker_epoch: node.broker_epoch(),
            metadata_offset: broker.image().offset,
        });
        let timeout = node.settings.heartbeat_interval.max(Duration::from_secs(1));
        match node.link.call(request, timeout).await {
            Ok(Response::BrokerHeartbeat(response))
                if response.error_code == ErrorCode::STALE_BROKER_EPOCH || response.fenced =>
            {
                tracing::warn!(
                    message = response.error_message,
                    "the controller fenced this broker; registering again"
                );
                if node.register(&broker).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(error, "heartbeat failed"),
        }
    }
}

/// Follows the metadata log until shutdown, applying each change to the image and to the
/// local logs.
async fn follow(broker: Arc<Broker>) {
    let Some(node) = broker.node.as_ref() else {
        return;
    };
    let mut shutdown = broker.shutting_down();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let offset = broker.image().offset;
        let fetched = tokio::select! {
            fetched = node.fetch(offset, FOLLOW_WAIT) => fetched,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let records = match fetched {
            Ok((records, _)) if records.is_empty() => continue,
            Ok((records, _)) => records,
            Err(error) => {
                tracing::debug!(error, "fetching metadata failed");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let applying = Arc::clone(&broker);
        let applied = tokio::task::spawn_blocking(move || apply_changes(&applying, &records)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error, "applying metadata failed");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            Err(error) => tracing::error!(%error, "applying metadata panicked"),
        }
    }
}

/// Applies fetched changes one at a time, to a copy of the image and to the local logs,
/// then publishes the copy. Blocking.
fn apply_changes(broker: &Arc<Broker>, records: &bytes::Bytes) -> Result<(), String> {
    let mut image = (*broker.image()).clone();
    apply_all(records, &mut image, &mut |image, offset, change| {
        apply_one(broker, image, offset, change)
    })?;
    broker.publish_image(image);
    Ok(())
}

fn apply_one(broker: &Arc<Broker>, image: &mut ClusterImage, offset: i64, change: MetadataRecord) {
    match change {
        MetadataRecord::Partition(state) => {
            let (topic, partition) = (state.topic.clone(), state.partition);
            image.apply(offset, MetadataRecord::Partition(state));
            reconcile(broker, image, &topic, partition);
            if let Some(topic) = image.topics.get(&topic) {
                broker
                    .coordinator
                    .update_topic(&topic.name, partition_count(topic));
            }
        }
        MetadataRecord::RemoveTopic { name } => {
            image.apply(offset, MetadataRecord::RemoveTopic { name: name.clone() });
            remove_topic(broker, &name);
        }
        change => image.apply(offset, change),
    }
}

fn partition_count(topic: &TopicImage) -> i32 {
    i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX)
}

/// Deletes every local partition of a deleted topic, and its committed offsets.
fn remove_topic(broker: &Arc<Broker>, name: &str) {
    for (topic_partition, open) in broker.manager.all() {
        if &*topic_partition.topic == name {
            drop_local(broker, &topic_partition, Some(open));
        }
    }
    let coordinator = Arc::clone(&broker.coordinator);
    let name = name.to_string();
    tokio::runtime::Handle::current().spawn(async move {
        if let Err(error) = coordinator.delete_topic(&name).await {
            tracing::warn!(topic = name, %error, "deleting committed offsets failed");
        }
    });
}

/// Makes the local state of one partition match the image. Blocking.
pub(crate) fn reconcile(broker: &Arc<Broker>, image: &ClusterImage, topic: &str, partition: i32) {
    let Some(node) = broker.node.as_ref() else {
        return;
    };
    let me = node.node_id();
    let topic_partition = TopicPartition {
        topic: Arc::from(topic),
        partition,
    };
    let state = image.partition(topic, partition);
    let open = broker.manager.get(&topic_partition);
    let wanted = state.is_some_and(|state| state.replicas.contains(&me) || state.moving_to == me);
    let (Some(state), Some(topic_image), true) = (state, image.topics.get(topic), wanted) else {
        drop_local(broker, &topic_partition, open);
        return;
    };
    let open = match open {
        Some(open) => open,
        None => match open_local(broker, &topic_partition, topic_image) {
            Ok(open) => open,
            Err(error) => {
                tracing::error!(partition = %topic_partition, error, "opening partition failed");
                return;
            }
        },
    };
    if state.moving_to == me && !state.replicas.contains(&me) {
        step_down(&open);
        let mut movers = node.movers.lock().unwrap_or_else(PoisonError::into_inner);
        let current = movers.get(&topic_partition).map(|(epoch, _)| *epoch);
        if current != Some(state.leader_epoch) {
            if let Some((_, handle)) = movers.remove(&topic_partition) {
                handle.abort();
            }
            let task = tokio::runtime::Handle::current().spawn(mover::copy(
                Arc::clone(broker),
                topic_partition.clone(),
                state.leader_epoch,
                state.replicas.first().copied().unwrap_or(-1),
            ));
            movers.insert(topic_partition, (state.leader_epoch, task.abort_handle()));
        }
        return;
    }
    node.stop_mover(&topic_partition);
    if state.leader == me {
        let epoch = state.leader_epoch;
        let _ = open.log.with_log_mut(|log| log.set_leader_epoch(epoch));
        open.leader_epoch.store(epoch, Ordering::Release);
    } else {
        step_down(&open);
    }
}

/// Stops any copy into a partition no longer assigned here and, when it is open, stops
/// leading it and deletes its data. Blocking.
fn drop_local(broker: &Broker, topic_partition: &TopicPartition, open: Option<Arc<Partition>>) {
    if let Some(node) = &broker.node {
        node.stop_mover(topic_partition);
    }
    let Some(open) = open else {
        return;
    };
    step_down(&open);
    tracing::info!(partition = %topic_partition, "partition no longer assigned here: deleting its data");
    if let Err(error) = broker.manager.delete_partition(topic_partition) {
        tracing::warn!(partition = %topic_partition, %error, "deleting partition data failed");
    }
}

/// Stops leading a partition: no produce allowed before this returns is still to be
/// appended after it.
fn step_down(open: &Partition) {
    if open.leader_epoch.swap(NOT_LEADING, Ordering::AcqRel) != NOT_LEADING {
        let _ = open.log.with_log_mut(|_| ());
    }
}

/// Opens a partition assigned here, creating it, or replacing data of an earlier topic of
/// the same name. Blocking.
fn open_local(
    broker: &Broker,
    topic_partition: &TopicPartition,
    topic: &TopicImage,
) -> Result<Arc<Partition>, String> {
    let config: TopicConfig =
        toml::from_str(&topic.config).map_err(|error| format!("topic settings: {error}"))?;
    let log_config = config
        .to_log_config()
        .map_err(|error| format!("topic settings: {error}"))?;
    let dir = broker.manager.partition_dir(topic_partition);
    let wanted_id = format!("{:032x}", topic.id);
    let found_id = std::fs::read_to_string(dir.join(TOPIC_ID_FILE))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit()));
    let opened = match found_id {
        Some(found) if found != wanted_id => {
            tracing::info!(partition = %topic_partition, "data of an earlier topic of this name: replacing it");
            broker.manager.create_partition(topic_partition.clone(), log_config)
        }
        _ => broker.manager.open_partition(topic_partition.clone(), log_config),
    }
    .map_err(|error| error.to_string())?;
    std::fs::write(dir.join(TOPIC_ID_FILE), format!("{wanted_id}\n"))
        .map_err(|error| format!("writing {}: {error}", dir.join(TOPIC_ID_FILE).display()))?;
    Ok(opened)
}
