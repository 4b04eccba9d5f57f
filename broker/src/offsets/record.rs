//! The committed-offsets log's record format (`docs/groups.md`): one record per offset, its
//! key naming the group, topic and partition, its value the offset (or null: a tombstone).
//!
//! ```text
//! key   = version i16 (0) | group string | topic string | partition i32
//! value = version i16 (0) | offset i64 | metadata nullable string | commit timestamp i64 (ms)
//! ```
//!
//! Strings are as on the wire: an i16 length, then UTF-8. This module only encodes and
//! decodes; it does no I/O.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use mq_protocol::wire::{self, Reader};
use mq_protocol::Offset;

use crate::manager::TopicPartition;

/// The only key version written and read.
const KEY_VERSION: i16 = 0;

/// The only value version written and read.
const VALUE_VERSION: i16 = 0;

/// The longest string a record can hold: its length is an i16.
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// Which offset a record is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct OffsetKey {
    /// The group.
    pub(crate) group: String,
    /// The topic and partition.
    pub(crate) partition: TopicPartition,
}

/// A group's committed position in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: Offset,
    /// Free-form text committed with it.
    pub metadata: Option<String>,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// Encodes a record key.
pub(crate) fn encode_key(key: &OffsetKey) -> Bytes {
    let mut target = BytesMut::with_capacity(12 + key.group.len() + key.partition.topic.len());
    target.put_i16(KEY_VERSION);
    wire::put_string(&mut target, &key.group);
    wire::put_string(&mut target, &key.partition.topic);
    target.put_i32(key.partition.partition);
    target.freeze()
}

/// Encodes a record value.
pub(crate) fn encode_value(value: &CommittedOffset) -> Bytes {
    let metadata_bytes = value.metadata.as_ref().map_or(0, String::len);
    let mut target = BytesMut::with_capacity(20 + metadata_bytes);
    target.put_i16(VALUE_VERSION);
    target.put_i64(value.offset.to_wire());
    wire::put_nullable_string(&mut target, value.metadata.as_deref());
    target.put_i64(value.commit_timestamp_ms);
    target.freeze()
}

/// Decodes a record key; the error says what is wrong with it.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<OffsetKey, String> {
    let mut reader = Reader::new(BytesMut::from(bytes));
    let version = reader.i16().map_err(|error| error.to_string())?;
    if version != KEY_VERSION {
        return Err(format!("unknown key version {version}"));
    }
    let key = (|| {
        let group = reader.string()?;
        let topic = reader.string()?;
        let partition = reader.i32()?;
        Ok::<_, mq_protocol::DecodeError>(OffsetKey {
            group,
            partition: TopicPartition {
                topic: Arc::from(topic),
                partition,
            },
        })
    })()
    .map_err(|error| format!("bad key: {error}"))?;
    reader
        .finish()
        .map_err(|error| format!("bad key: {error}"))?;
    Ok(key)
}

/// Decodes a record value; the error says what is wrong with it.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<CommittedOffset, String> {
    let mut reader = Reader::new(BytesMut::from(bytes));
    let version = reader.i16().map_err(|error| error.to_string())?;
    if version != VALUE_VERSION {
        return Err(format!("unknown value version {version}"));
    }
    let value = (|| {
        let offset = reader.i64()?;
        let metadata = reader.nullable_string()?;
        let commit_timestamp_ms = reader.i64()?;
        Ok::<_, mq_protocol::DecodeError>((offset, metadata, commit_timestamp_ms))
    })()
    .map_err(|error| format!("bad value: {error}"))?;
    reader
        .finish()
        .map_err(|error| format!("bad value: {error}"))?;
    let (offset, metadata, commit_timestamp_ms) = value;
    let offset = Offset::from_wire(offset).ok_or_else(|| format!("negative offset {offset}"))?;
    Ok(CommittedOffset {
        offset,
        metadata,
        commit_timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, topic: &str, partition: i32) -> OffsetKey {
        OffsetKey {
            group: group.to_string(),
            partition: TopicPartition {
                topic: Arc::from(topic),
                partition,
            },
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        let key = key("group-é", "orders", 7);
        assert_eq!(decode_key(&encode_key(&key)), Ok(key));
        for metadata in [None, Some(String::new()), Some("checkpoint 42".to_string())] {
            let value = CommittedOffset {
                offset: Offset(123_456),
                metadata,
                commit_timestamp_ms: 1_700_000_000_000,
            };
            assert_eq!(decode_value(&encode_value(&value)), Ok(value));
        }
    }

    #[test]
    fn the_key_layout_is_as_documented() {
        let encoded = encode_key(&key("g", "t", 2));
        assert_eq!(&encoded[..], &[0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = encode_key(&key("g", "t", 2));
        assert!(decode_key(&good[..good.len() - 1]).is_err(), "truncated");
        assert!(
            decode_key(&[good.as_ref(), &[0]].concat()).is_err(),
            "trailing"
        );
        assert!(
            decode_key(&[0, 9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "version"
        );
        let value = encode_value(&CommittedOffset {
            offset: Offset(1),
            metadata: None,
            commit_timestamp_ms: 0,
        });
        let mut negative = value.to_vec();
        negative[2..10].copy_from_slice(&(-5i64).to_be_bytes());
        assert!(decode_value(&negative).is_err(), "negative offset");
        assert!(decode_value(&value[..5]).is_err(), "truncated");
    }
}
