//! Choosing a record's partition: by key hash, or sticky for records without a key.
//!
//! Keyed records go to `to_positive(murmur2(key)) % partitions`, computed exactly as Kafka's
//! Java client does (`Utils.murmur2`, `Utils.toPositive`), so that a key lands on the same
//! partition number here as there, and records with one key stay in order.
//!
//! Records without a key stick to one partition per topic until a batch of that partition is
//! sealed, then move to another partition chosen at random (Kafka's sticky partitioner): full
//! batches rather than many tiny ones, and an even spread over time.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Kafka's murmur2 hash of `data` (seed `0x9747b28c`), as `Utils.murmur2` computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's int arithmetic: lengths and products wrap at 32 bits.
    let mut hash = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        // Bytes are assembled low byte first, as the Java code does with shifts.
        let mut k = u32::from(chunk[0])
            | (u32::from(chunk[1]) << 8)
            | (u32::from(chunk[2]) << 16)
            | (u32::from(chunk[3]) << 24);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    // The Java switch falls through from case 3 to case 1.
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition of a keyed record: `to_positive(murmur2(key)) % partition_count`, as
/// Kafka's default partitioner.
///
/// # Panics
/// If `partition_count` is not positive: a topic always has a partition.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    // Kafka's `toPositive`: clear the sign bit (not `abs`, which overflows on i32::MIN).
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

/// The sticky choice for records without a key, per topic.
#[derive(Debug)]
pub(crate) struct StickyPartitions {
    /// The current choice per topic: `Ok(partition)` while sticking, `Err(previous)` once a
    /// batch of `previous` was sealed and the next record should move elsewhere.
    current: HashMap<String, Result<i32, i32>>,
    /// Chooses new partitions.
    random: Random,
}

impl StickyPartitions {
    pub(crate) fn new() -> StickyPartitions {
        StickyPartitions {
            current: HashMap::new(),
            random: Random::new(),
        }
    }

    /// The partition for the next record without a key in `topic`.
    pub(crate) fn partition(&mut self, topic: &str, partition_count: i32) -> i32 {
        assert!(partition_count > 0, "a topic has at least one partition");
        let previous = match self.current.get(topic) {
            Some(Ok(partition)) if *partition < partition_count => return *partition,
            Some(Err(previous)) => Some(*previous),
            _ => None,
        };
        let mut partition = self.random.below(partition_count);
        if partition_count > 1 && Some(partition) == previous {
            // Move on: pick among the others.
            partition = (partition + 1 + self.random.below(partition_count - 1)) % partition_count;
        }
        self.current.insert(topic.to_string(), Ok(partition));
        partition
    }

    /// Tells the partitioner that a batch of `partition` was sealed: records without a key
    /// move to another partition if they were sticking to this one.
    pub(crate) fn batch_sealed(&mut self, topic: &str, partition: i32) {
        if let Some(choice) = self.current.get_mut(topic) {
            if *choice == Ok(partition) {
                *choice = Err(partition);
            }
        }
    }
}

/// A small xorshift generator, seeded from the standard library's random hasher keys: good
/// enough to spread partitions, no dependency needed.
#[derive(Debug)]
struct Random {
    /// The generator's state; never zero.
    state: u64,
}

impl Random {
    fn new() -> Random {
        let seed = RandomState::new().build_hasher().finish();
        Random { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A number in `0..bound`; `bound` is positive.
    fn below(&mut self, bound: i32) -> i32 {
        let bound = u64::try_from(bound).unwrap_or(1).max(1);
        i32::try_from(self.next() % bound).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keyed_partitions_are_kafkas() {
        // to_positive(-973932308) = 1173551340; 1173551340 % 10 = 0, % 7 = 3.
        assert_eq!(partition_for_key(b"21", 10), 0);
        assert_eq!(partition_for_key(b"21", 7), 3);
        for count in 1..50 {
            let partition = partition_for_key(b"foobar", count);
            assert!((0..count).contains(&partition));
        }
    }

    #[test]
    fn keyed_partitions_spread_over_all_partitions() {
        let mut counts = [0u32; 8];
        for key in 0..8000 {
            counts[partition_for_key(format!("key-{key}").as_bytes(), 8) as usize] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn records_without_key_stick_until_a_batch_is_sealed() {
        let mut sticky = StickyPartitions::new();
        let first = sticky.partition("t", 4);
        for _ in 0..100 {
            assert_eq!(sticky.partition("t", 4), first);
        }
        sticky.batch_sealed("t", (first + 1) % 4);
        assert_eq!(sticky.partition("t", 4), first, "another partition's batch");
        sticky.batch_sealed("t", first);
        let second = sticky.partition("t", 4);
        assert_ne!(second, first, "moves on after its batch is sealed");
        assert_eq!(sticky.partition("t", 4), second);
    }

    #[test]
    fn sticky_choices_cover_every_partition() {
        let mut sticky = StickyPartitions::new();
        let mut seen = [false; 5];
        for _ in 0..500 {
            let partition = sticky.partition("t", 5);
            seen[partition as usize] = true;
            sticky.batch_sealed("t", partition);
        }
        assert!(seen.iter().all(|seen| *seen), "{seen:?}");
        let mut single = StickyPartitions::new();
        single.batch_sealed("t", 0);
        assert_eq!(single.partition("t", 1), 0);
        single.batch_sealed("t", 0);
        assert_eq!(
            single.partition("t", 1),
            0,
            "one partition: nowhere else to go"
        );
    }

    #[test]
    fn a_shrunk_partition_count_is_respected() {
        let mut sticky = StickyPartitions::new();
        for _ in 0..100 {
            let partition = sticky.partition("t", 10);
            assert!(partition < 10);
            assert!(sticky.partition("t", 2) < 2);
        }
    }
}
