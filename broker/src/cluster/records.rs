//! [`MetadataRecord`]: one change of the cluster's metadata, as the controller writes it to the
//! metadata log and every broker reads it back.
//!
//! Each change is the value of one record in a record batch of the metadata log (the
//! partition log engine, `<data-dir>/__cluster_metadata/`); the record's offset is the
//! change's epoch. A value starts with a format version (0) and a type byte; the fields follow
//! in the wire protocol's encoding, so that decoding is bounded by the same checks as a
//! request. Partition records carry a partition's whole state (an upsert), so that applying a
//! change never depends on reading an earlier one correctly.

use bytes::{BufMut, BytesMut};
use mq_protocol::wire::{self, Reader};
use mq_protocol::DecodeError;

/// The format version written in front of every record.
const FORMAT_VERSION: i8 = 0;

/// One change of the cluster's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker registered (at start-up, or again after it was fenced): it is alive, at the
    /// given address, and its broker epoch is this record's offset.
    RegisterBroker {
        /// Its node id.
        node_id: i32,
        /// The host clients connect to.
        host: String,
        /// The port clients connect to.
        port: i32,
        /// Its rack label.
        rack: Option<String>,
        /// Random per process start.
        incarnation: i64,
    },
    /// A broker's session expired: it is dead until it registers again.
    FenceBroker {
        /// Its node id.
        node_id: i32,
    },
    /// A topic was created.
    Topic {
        /// Its name.
        name: String,
        /// A unique id, so that a topic created again under the same name is a new topic.
        id: u128,
        /// Replicas per partition.
        replication_factor: i16,
        /// Its settings (`TopicConfig` as TOML), with the controller's defaults filled in.
        config: String,
    },
    /// A partition's whole state, when it is created or any of it changes.
    Partition(PartitionState),
    /// A topic was deleted, with its partitions.
    RemoveTopic {
        /// Its name.
        name: String,
    },
}

/// A partition's assignment and leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The brokers that hold it; the first is its preferred leader.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader (all of them, until replication exists).
    pub isr: Vec<i32>,
    /// The leader's node id; -1 when the partition is offline.
    pub leader: i32,
    /// Bumped whenever the leader changes (or the partition goes offline or starts moving).
    pub leader_epoch: i32,
    /// Bumped on every change of this state.
    pub partition_epoch: i32,
    /// When the partition is being moved: the broker copying it, which becomes its only
    /// replica and leader once it has copied it all; -1 otherwise.
    pub moving_to: i32,
}

impl MetadataRecord {
    /// The record's value bytes.
    pub fn encode(&self) -> BytesMut {
        let mut target = BytesMut::with_capacity(64);
        target.put_i8(FORMAT_VERSION);
        match self {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                incarnation,
            } => {
                target.put_i8(0);
                target.put_i32(*node_id);
                wire::put_string(&mut target, host);
                target.put_i32(*port);
                wire::put_nullable_string(&mut target, rack.as_deref());
                target.put_i64(*incarnation);
            }
            MetadataRecord::FenceBroker { node_id } => {
                target.put_i8(1);
                target.put_i32(*node_id);
            }
            MetadataRecord::Topic {
                name,
                id,
                replication_factor,
                config,
            } => {
                target.put_i8(2);
                wire::put_string(&mut target, name);
                target.put_u128(*id);
                target.put_i16(*replication_factor);
                wire::put_string(&mut target, config);
            }
            MetadataRecord::Partition(state) => {
                target.put_i8(3);
                wire::put_string(&mut target, &state.topic);
                target.put_i32(state.partition);
                let put_ids = |target: &mut BytesMut, ids: &[i32]| {
                    wire::put_array(target, ids, |target, id| target.put_i32(*id))
                };
                put_ids(&mut target, &state.replicas);
                put_ids(&mut target, &state.isr);
                target.put_i32(state.leader);
                target.put_i32(state.leader_epoch);
                target.put_i32(state.partition_epoch);
                target.put_i32(state.moving_to);
            }
            MetadataRecord::RemoveTopic { name } => {
                target.put_i8(4);
                wire::put_string(&mut target, name);
            }
        }
        target
    }

    /// Reads a record's value; the whole of `value` must be the record.
    pub fn decode(value: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut reader = Reader::new(BytesMut::from(value));
        let version = reader.i8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Invalid {
                what: "metadata record format version",
            });
        }
        let body = &mut reader;
        let record = match body.i8()? {
            0 => MetadataRecord::RegisterBroker {
                node_id: body.i32()?,
                host: body.string()?,
                port: body.i32()?,
                rack: body.nullable_string()?,
                incarnation: body.i64()?,
            },
            1 => MetadataRecord::FenceBroker {
                node_id: body.i32()?,
            },
            2 => MetadataRecord::Topic {
                name: body.string()?,
                id: {
                    let high = u128::from(u64::from_be_bytes(body.i64()?.to_be_bytes()));
                    let low = u128::from(u64::from_be_bytes(body.i64()?.to_be_bytes()));
                    (high << 64) | low
                },
                replication_factor: body.i16()?,
                config: body.string()?,
            },
            3 => MetadataRecord::Partition(PartitionState {
                topic: body.string()?,
                partition: body.i32()?,
                replicas: body.array(4, Reader::i32)?,
                isr: body.array(4, Reader::i32)?,
                leader: body.i32()?,
                leader_epoch: body.i32()?,
                partition_epoch: body.i32()?,
                moving_to: body.i32()?,
            }),
            4 => MetadataRecord::RemoveTopic {
                name: body.string()?,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "metadata record type",
                })
            }
        };
        reader.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn examples() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                node_id: 2,
                host: "127.0.0.1".into(),
                port: 9702,
                rack: Some("a".into()),
                incarnation: -5,
            },
            MetadataRecord::FenceBroker { node_id: 2 },
            MetadataRecord::Topic {
                name: "orders".into(),
                id: u128::MAX - 7,
                replication_factor: 1,
                config: "partitions = 3\n".into(),
            },
            MetadataRecord::Partition(PartitionState {
                topic: "orders".into(),
                partition: 1,
                replicas: vec![2],
                isr: vec![2],
                leader: -1,
                leader_epoch: 4,
                partition_epoch: 9,
                moving_to: 3,
            }),
            MetadataRecord::RemoveTopic {
                name: "orders".into(),
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        for record in examples() {
            assert_eq!(MetadataRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn unknown_versions_and_types_are_refused() {
        assert!(MetadataRecord::decode(&[1, 0]).is_err());
        assert!(MetadataRecord::decode(&[0, 9]).is_err());
        assert!(MetadataRecord::decode(&[]).is_err());
        let mut trailing = examples()[1].encode();
        trailing.put_u8(0);
        assert!(MetadataRecord::decode(&trailing).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MetadataRecord::decode(&bytes);
        }

        #[test]
        fn truncated_records_are_refused(index in 0usize..5, cut in 1usize..40) {
            let encoded = examples()[index].encode();
            let cut = cut.min(encoded.len());
            prop_assert!(MetadataRecord::decode(&encoded[..encoded.len() - cut]).is_err());
        }
    }
}
