//! [`ClusterImage`]: the cluster's metadata as of some offset of the metadata log: brokers,
//! topics, partitions with their replicas and leaders. The controller and every broker build
//! it the same way, by applying [`MetadataRecord`]s in log order; it is plain data, no I/O.

use std::collections::BTreeMap;

use super::records::{MetadataRecord, PartitionState};

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Its node id.
    pub node_id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: i32,
    /// Its rack label.
    pub rack: Option<String>,
    /// Random per process start.
    pub incarnation: i64,
    /// The metadata offset of its latest registration.
    pub epoch: i64,
    /// Whether its session expired (it leads nothing until it registers again).
    pub fenced: bool,
}

impl BrokerInfo {
    /// `host:port`, with an IPv6 host in brackets.
    pub fn address(&self) -> String {
        mq_protocol::types::host_port(&self.host, self.port)
    }
}

/// A topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    /// Its name.
    pub name: String,
    /// Its unique id.
    pub id: u128,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Its settings (`TopicConfig` as TOML).
    pub config: String,
    /// Its partitions, by number (a partition record may arrive after its topic's).
    pub partitions: Vec<PartitionState>,
}

/// The cluster's metadata as of [`ClusterImage::offset`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterImage {
    /// The offset of the next change to apply: everything below it is applied.
    pub offset: i64,
    /// Every registered broker.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Every topic.
    pub topics: BTreeMap<String, TopicImage>,
}

impl ClusterImage {
    /// Applies the change at `offset` (which must be [`ClusterImage::offset`] or later).
    pub fn apply(&mut self, offset: i64, record: MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                incarnation,
            } => {
                self.brokers.insert(
                    node_id,
                    BrokerInfo {
                        node_id,
                        host,
                        port,
                        rack,
                        incarnation,
                        epoch: offset,
                        fenced: false,
                    },
                );
            }
            MetadataRecord::FenceBroker { node_id } => {
                if let Some(broker) = self.brokers.get_mut(&node_id) {
                    broker.fenced = true;
                }
            }
            MetadataRecord::Topic {
                name,
                id,
                replication_factor,
                config,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name,
                        id,
                        replication_factor,
                        config,
                        partitions: Vec::new(),
                    },
                );
            }
            MetadataRecord::Partition(state) => {
                if let Some(topic) = self.topics.get_mut(&state.topic) {
                    match usize::try_from(state.partition) {
                        Ok(index) if index < topic.partitions.len() => {
                            topic.partitions[index] = state;
                        }
                        Ok(index) if index == topic.partitions.len() => {
                            topic.partitions.push(state);
                        }
                        _ => tracing::warn!(
                            topic = state.topic,
                            partition = state.partition,
                            offset,
                            "metadata: partition record out of sequence, ignored"
                        ),
                    }
                }
            }
            MetadataRecord::RemoveTopic { name } => {
                self.topics.remove(&name);
            }
        }
        self.offset = self.offset.max(offset + 1);
    }

    /// A partition's state.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// Whether `node_id` is registered and not fenced.
    pub fn is_alive(&self, node_id: i32) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(|broker| !broker.fenced)
    }

    /// The registered, unfenced brokers, by node id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// Every partition, in (topic, partition) order.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionState> {
        self.topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(node_id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            node_id,
            host: "127.0.0.1".into(),
            port: 9700 + node_id,
            rack: None,
            incarnation: 1,
        }
    }

    fn partition(topic: &str, partition: i32, leader: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::Partition(PartitionState {
            topic: topic.into(),
            partition,
            replicas: vec![leader.max(1)],
            isr: vec![leader.max(1)],
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            moving_to: -1,
        })
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            id: 7,
            replication_factor: 1,
            config: String::new(),
        }
    }

    #[test]
    fn changes_apply_in_order() {
        let mut image = ClusterImage::default();
        image.apply(0, register(1));
        image.apply(1, register(2));
        image.apply(2, topic("orders"));
        image.apply(3, partition("orders", 0, 1, 0));
        image.apply(4, partition("orders", 1, 2, 0));
        assert_eq!(image.offset, 5);
        assert_eq!(image.brokers[&2].epoch, 1);
        assert_eq!(image.partition("orders", 1).map(|p| p.leader), Some(2));

        image.apply(5, MetadataRecord::FenceBroker { node_id: 2 });
        image.apply(6, partition("orders", 1, -1, 1));
        assert!(!image.is_alive(2));
        assert_eq!(image.live_brokers().count(), 1);
        assert_eq!(image.partition("orders", 1).map(|p| p.leader), Some(-1));

        image.apply(7, register(2));
        assert!(image.is_alive(2));
        assert_eq!(
            image.brokers[&2].epoch, 7,
            "a new registration is a new broker epoch"
        );

        image.apply(
            8,
            MetadataRecord::RemoveTopic {
                name: "orders".into(),
            },
        );
        assert!(image.partition("orders", 0).is_none());
        assert_eq!(image.partitions().count(), 0);
    }

    #[test]
    fn partitions_out_of_sequence_are_ignored() {
        let mut image = ClusterImage::default();
        image.apply(0, topic("t"));
        image.apply(1, partition("t", 2, 1, 0));
        image.apply(2, partition("missing", 0, 1, 0));
        image.apply(3, partition("t", -1, 1, 0));
        assert_eq!(image.partitions().count(), 0);
        assert_eq!(image.offset, 4);
    }
}
