//! Partition placement: pure functions that decide which brokers hold a cluster's partitions.
//!
//! [`place`] chooses replica lists for new partitions; [`rebalance`] proposes replica moves that
//! even out an existing cluster. Both read only their arguments: no I/O, no clock, no cluster
//! state. The controller calls them and carries out what they return.
//!
//! Rules for [`place`]:
//!
//! - a partition's replicas are distinct brokers; the first is its preferred leader;
//! - replicas go to the brokers holding the fewest replicas, counting the existing load, so
//!   replica counts end up within one of each other whenever the existing load allows it;
//! - a partition's leader is, among the brokers that can be one of the least loaded replicas
//!   (holding no more than the `replication_factor`-th least loaded broker), the one leading the
//!   fewest partitions, then holding the fewest replicas; remaining ties go to the first broker
//!   in node-id order from a starting broker that rotates with each partition, so consecutive
//!   partitions start on different brokers;
//! - followers are the least loaded of the rest; among equals, those leading the most (keeping
//!   the others free to lead the next partitions), then node-id order after the leader, as Kafka
//!   lays them out. Without racks and from no load, replica counts and leader counts both stay
//!   within one of each other after every partition (tested up to 12 brokers);
//! - racks: every broker has a rack or none does ([`PlacementError::MixedRacks`] otherwise).
//!   A partition's replicas are on distinct racks when there are at least as many racks as
//!   replicas, and on every rack otherwise. Rack spread comes before balance: with racks of
//!   unequal size, brokers on small racks hold more replicas.
//!
//! Rules for [`rebalance`]:
//!
//! - only partitions whose replicas are all on live brokers move; the others stay, and their
//!   replicas on live brokers still count toward those brokers' load;
//! - each move takes a replica from the most loaded broker that can give one to the least loaded
//!   broker that can take it, until replica counts are within one of each other or no move helps;
//!   the target never holds a replica of that partition already, and a move never spreads a
//!   partition over fewer racks (so racks of unequal size can leave counts further apart);
//! - a broker leading more than its share gives away partitions it leads first, and one leading
//!   its share or less gives away partitions it follows first, so leader counts even out too.
//!
//! Not here: deciding which brokers are live, electing leaders, carrying out moves.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A live (unfenced) broker and what it holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerLoad {
    /// Its node id; unique among the brokers passed together.
    pub node_id: i32,
    /// Its rack label, if it was started with `--rack`.
    pub rack: Option<String>,
    /// Partition replicas it holds now (leader or not).
    pub replicas: usize,
    /// Partitions it leads now.
    pub leaders: usize,
}

/// Why [`place`] cannot place partitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// There is no live broker at all.
    #[error("no live brokers to place partitions on")]
    NoBrokers,
    /// The replication factor is 0, or more than there are live brokers.
    #[error("replication factor {wanted} must be between 1 and the {live} live brokers")]
    NotEnoughBrokers {
        /// The replication factor asked for.
        wanted: usize,
        /// How many live brokers there are.
        live: usize,
    },
    /// Some brokers have a rack and some do not, so rack spread means nothing.
    #[error("some brokers have a rack and some do not (give every broker a --rack, or none)")]
    MixedRacks,
}

/// Replica lists for `partitions` new partitions with `replication_factor` replicas each; the first
/// replica of each list is its preferred leader. Takes the existing load into account (see the
/// module doc for the rules).
///
/// Errors are checked before `partitions`, so asking for no partitions with a bad replication
/// factor is still an error. Panics if two brokers share a node id.
pub fn place(
    brokers: &[BrokerLoad],
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if brokers.is_empty() {
        return Err(PlacementError::NoBrokers);
    }
    let racked = brokers
        .iter()
        .filter(|broker| broker.rack.is_some())
        .count();
    if racked != 0 && racked != brokers.len() {
        return Err(PlacementError::MixedRacks);
    }
    if replication_factor == 0 || replication_factor > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            wanted: replication_factor,
            live: brokers.len(),
        });
    }
    let mut slots = slots(brokers);
    let broker_count = slots.len();
    let replica_lists = (0..partitions)
        .map(|partition| place_partition(&mut slots, replication_factor, partition % broker_count))
        .collect();
    Ok(replica_lists)
}

/// A broker's load while [`place`] adds replicas to it.
struct Slot<'a> {
    /// The broker's node id, which goes into replica lists.
    node_id: i32,
    /// The broker's rack, for rack spread.
    rack: Option<&'a str>,
    /// Replicas it holds, counting those placed so far.
    replicas: usize,
    /// Partitions it leads, counting those placed so far.
    leaders: usize,
}

/// The brokers as slots, sorted by node id.
fn slots(brokers: &[BrokerLoad]) -> Vec<Slot<'_>> {
    let mut slots: Vec<Slot<'_>> = brokers
        .iter()
        .map(|broker| Slot {
            node_id: broker.node_id,
            rack: broker.rack.as_deref(),
            replicas: broker.replicas,
            leaders: broker.leaders,
        })
        .collect();
    slots.sort_unstable_by_key(|slot| slot.node_id);
    assert!(
        slots
            .windows(2)
            .all(|pair| pair[0].node_id != pair[1].node_id),
        "brokers must have distinct node ids"
    );
    slots
}

/// Places one partition, looking for its leader from `start` (an index into `slots`), records
/// the new load, and returns its replica list, leader first.
fn place_partition(slots: &mut [Slot<'_>], replication_factor: usize, start: usize) -> Vec<i32> {
    // Any broker holding no more replicas than the `replication_factor`-th least loaded one can
    // join the least loaded replicas; of those, lead on the one leading the fewest.
    let mut replica_counts: Vec<usize> = slots.iter().map(|slot| slot.replicas).collect();
    replica_counts.sort_unstable();
    let most_replicas = replica_counts[replication_factor - 1];
    let leader = pick(
        slots,
        &[],
        |slot| (slot.replicas > most_replicas, slot.leaders, slot.replicas),
        start,
    );
    let mut chosen = vec![leader];
    while chosen.len() < replication_factor {
        let follower = pick(
            slots,
            &chosen,
            |slot| (slot.replicas, Reverse(slot.leaders)),
            leader + 1,
        );
        chosen.push(follower);
    }
    slots[leader].leaders += 1;
    chosen
        .into_iter()
        .map(|index| {
            slots[index].replicas += 1;
            slots[index].node_id
        })
        .collect()
}

/// The index of the slot not in `chosen` with the smallest `load`, ties going to the first in
/// node-id order at or after index `start` (wrapping around). While some such slot is on a rack
/// none of `chosen` is on, only those count, so replicas spread over as many racks as there are.
fn pick<Load: Ord>(
    slots: &[Slot<'_>],
    chosen: &[usize],
    load: impl Fn(&Slot<'_>) -> Load,
    start: usize,
) -> usize {
    let used_racks: BTreeSet<&str> = chosen
        .iter()
        .filter_map(|&index| slots[index].rack)
        .collect();
    let free: Vec<usize> = (0..slots.len())
        .filter(|index| !chosen.contains(index))
        .collect();
    let on_new_rack = |index: &usize| {
        slots[*index]
            .rack
            .is_some_and(|rack| !used_racks.contains(rack))
    };
    let can_spread = free.iter().any(on_new_rack);
    let distance = |index: usize| (index + slots.len() - start % slots.len()) % slots.len();
    free.into_iter()
        .filter(|index| !can_spread || on_new_rack(index))
        .min_by_key(|&index| (load(&slots[index]), distance(index)))
        .expect("the replication factor is at most the number of brokers, so one is free")
}

/// One partition's current assignment, as input to [`rebalance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The partition's topic.
    pub topic: String,
    /// The partition's number within its topic.
    pub partition: i32,
    /// The brokers holding its replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// The broker leading it now.
    pub leader: i32,
}

/// A move [`rebalance`] proposes: the replica on `from` goes to `to` (for replication factor 1 this
/// moves the partition and its leadership).
///
/// `to` takes `from`'s place in the replica list, so when `from` leads the partition, `to` is
/// meant to lead it afterwards; later moves are planned on that assumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The partition's topic.
    pub topic: String,
    /// The partition's number within its topic.
    pub partition: i32,
    /// The broker giving up its replica.
    pub from: i32,
    /// The broker taking the replica.
    pub to: i32,
}

/// The moves that even out replica counts (and so, for replication factor 1, leader counts) across
/// `live` brokers (node ids; brokers not in `live` receive nothing; partitions on dead brokers are
/// not moved, since their data is unreachable). Deterministic for a given input.
///
/// Replica and leader counts come from `assignments`; the `replicas` and `leaders` fields of
/// `live` are not read. Moves are listed in the order they were planned; each assumes the ones
/// before it. Panics if two live brokers share a node id.
pub fn rebalance(live: &[BrokerLoad], assignments: &[Assignment]) -> Vec<Move> {
    let mut cluster = Cluster::new(live, assignments);
    let mut moves = Vec::new();
    // Every move lowers the sum of squared replica counts, so the loop ends without the bound;
    // the bound keeps a mistake from becoming a hang.
    let replica_count: usize = cluster.replicas.values().sum();
    for _ in 0..replica_count {
        let Some(step) = cluster.next_step() else {
            break;
        };
        moves.push(cluster.apply(step));
    }
    moves
}

/// A partition [`rebalance`] may move, as moved so far.
struct Movable<'a> {
    /// The partition's topic.
    topic: &'a str,
    /// The partition's number within its topic.
    partition: i32,
    /// The brokers holding its replicas, distinct and all live.
    replicas: Vec<i32>,
    /// The broker leading it.
    leader: i32,
}

/// A planned move: the replica of `movable[index]` on `source` goes to `target`.
struct Step {
    /// The partition, as an index into [`Cluster::movable`].
    index: usize,
    /// The broker giving up the replica.
    source: i32,
    /// The broker taking it.
    target: i32,
}

/// The live brokers' load while [`rebalance`] plans moves.
struct Cluster<'a> {
    /// Each live broker's rack, by node id.
    racks: BTreeMap<i32, Option<&'a str>>,
    /// Replicas each live broker holds, of movable partitions or not.
    replicas: BTreeMap<i32, usize>,
    /// Partitions each live broker leads, movable or not.
    leaders: BTreeMap<i32, usize>,
    /// The partitions that may move, sorted by topic and partition.
    movable: Vec<Movable<'a>>,
    /// Each live broker's movable partitions, as indexes into `movable`.
    held: BTreeMap<i32, BTreeSet<usize>>,
}

impl<'a> Cluster<'a> {
    fn new(live: &'a [BrokerLoad], assignments: &'a [Assignment]) -> Cluster<'a> {
        let racks: BTreeMap<i32, Option<&str>> = live
            .iter()
            .map(|broker| (broker.node_id, broker.rack.as_deref()))
            .collect();
        assert_eq!(
            racks.len(),
            live.len(),
            "live brokers must have distinct node ids"
        );
        let mut replicas: BTreeMap<i32, usize> = racks.keys().map(|&node| (node, 0)).collect();
        let mut leaders = replicas.clone();
        for assignment in assignments {
            for node in &assignment.replicas {
                if let Some(count) = replicas.get_mut(node) {
                    *count += 1;
                }
            }
            if let Some(count) = leaders.get_mut(&assignment.leader) {
                *count += 1;
            }
        }
        let mut movable: Vec<Movable<'a>> = assignments
            .iter()
            .filter(|assignment| is_movable(assignment, &racks))
            .map(|assignment| Movable {
                topic: &assignment.topic,
                partition: assignment.partition,
                replicas: assignment.replicas.clone(),
                leader: assignment.leader,
            })
            .collect();
        movable.sort_by(|left, right| {
            (left.topic, left.partition).cmp(&(right.topic, right.partition))
        });
        let mut held: BTreeMap<i32, BTreeSet<usize>> =
            racks.keys().map(|&node| (node, BTreeSet::new())).collect();
        for (index, partition) in movable.iter().enumerate() {
            for node in &partition.replicas {
                held.entry(*node).or_default().insert(index);
            }
        }
        Cluster {
            racks,
            replicas,
            leaders,
            movable,
            held,
        }
    }

    /// The next move: from the most loaded broker that can give a replica to a broker holding at
    /// least two fewer, to the least loaded such broker; `None` when there is none.
    fn next_step(&self) -> Option<Step> {
        let mut sources: Vec<i32> = self.replicas.keys().copied().collect();
        sources.sort_by_key(|node| {
            (
                Reverse(self.replicas[node]),
                Reverse(self.leaders[node]),
                *node,
            )
        });
        let mut targets = sources.clone();
        targets.sort_by_key(|node| (self.replicas[node], self.leaders[node], *node));
        for &source in &sources {
            let candidates = self.candidates(source);
            for &target in &targets {
                if self.replicas[&target] + 2 > self.replicas[&source] {
                    break;
                }
                let found = candidates
                    .iter()
                    .find(|&&index| self.can_move(index, source, target));
                if let Some(&index) = found {
                    return Some(Step {
                        index,
                        source,
                        target,
                    });
                }
            }
        }
        None
    }

    /// The movable partitions on `source` in the order it should give them away: if it leads
    /// more than its share, those it leads first, otherwise those it follows first; by topic and
    /// partition within each group.
    fn candidates(&self, source: i32) -> Vec<usize> {
        let leader_count: usize = self.leaders.values().sum();
        let leads_too_many = self.leaders[&source] * self.leaders.len() > leader_count;
        let mut candidates: Vec<usize> = self.held[&source].iter().copied().collect();
        // `false` sorts first, and the sort is stable.
        candidates.sort_by_key(|&index| (self.movable[index].leader == source) != leads_too_many);
        candidates
    }

    /// Whether `target` may take the replica of `movable[index]` on `source`: it holds none of
    /// the partition's replicas, and the partition keeps its rack spread.
    fn can_move(&self, index: usize, source: i32, target: i32) -> bool {
        let replicas = &self.movable[index].replicas;
        if replicas.contains(&target) {
            return false;
        }
        let moved = replicas
            .iter()
            .map(|&node| if node == source { target } else { node });
        self.rack_count(moved) >= self.rack_count(replicas.iter().copied())
    }

    /// How many distinct racks `nodes` are on.
    fn rack_count(&self, nodes: impl Iterator<Item = i32>) -> usize {
        nodes
            .filter_map(|node| self.racks.get(&node).copied().flatten())
            .collect::<BTreeSet<&str>>()
            .len()
    }

    /// Records `step` in the load and returns it as a [`Move`].
    fn apply(&mut self, step: Step) -> Move {
        let Step {
            index,
            source,
            target,
        } = step;
        let partition = &mut self.movable[index];
        for node in &mut partition.replicas {
            if *node == source {
                *node = target;
            }
        }
        if partition.leader == source {
            partition.leader = target;
            *self.leaders.entry(source).or_default() -= 1;
            *self.leaders.entry(target).or_default() += 1;
        }
        *self.replicas.entry(source).or_default() -= 1;
        *self.replicas.entry(target).or_default() += 1;
        self.held.entry(source).or_default().remove(&index);
        self.held.entry(target).or_default().insert(index);
        Move {
            topic: partition.topic.to_string(),
            partition: partition.partition,
            from: source,
            to: target,
        }
    }
}

/// Whether `rebalance` may move `assignment`: it has replicas, on distinct live brokers.
fn is_movable(assignment: &Assignment, racks: &BTreeMap<i32, Option<&str>>) -> bool {
    let distinct: BTreeSet<i32> = assignment.replicas.iter().copied().collect();
    !distinct.is_empty()
        && distinct.len() == assignment.replicas.len()
        && distinct.iter().all(|node| racks.contains_key(node))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on a missing value, which is what they want.
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Brokers with no load, from `(node id, rack)` pairs.
    fn brokers(nodes: &[(i32, Option<&str>)]) -> Vec<BrokerLoad> {
        nodes
            .iter()
            .map(|&(node_id, rack)| BrokerLoad {
                node_id,
                rack: rack.map(str::to_string),
                replicas: 0,
                leaders: 0,
            })
            .collect()
    }

    /// Brokers with no load and no rack.
    fn unracked(node_ids: &[i32]) -> Vec<BrokerLoad> {
        let nodes: Vec<(i32, Option<&str>)> = node_ids.iter().map(|&node| (node, None)).collect();
        brokers(&nodes)
    }

    /// Replica and leader counts per node id after `replica_lists`, on top of `brokers`' load.
    fn counts_after(
        brokers: &[BrokerLoad],
        replica_lists: &[Vec<i32>],
    ) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
        let mut replicas: BTreeMap<i32, usize> = brokers
            .iter()
            .map(|broker| (broker.node_id, broker.replicas))
            .collect();
        let mut leaders: BTreeMap<i32, usize> = brokers
            .iter()
            .map(|broker| (broker.node_id, broker.leaders))
            .collect();
        for list in replica_lists {
            *leaders.get_mut(&list[0]).unwrap() += 1;
            for node in list {
                *replicas.get_mut(node).unwrap() += 1;
            }
        }
        (replicas, leaders)
    }

    fn spread(counts: &BTreeMap<i32, usize>) -> usize {
        counts.values().max().unwrap() - counts.values().min().unwrap()
    }

    /// Distinct racks of `nodes` among `brokers`.
    fn racks_of(brokers: &[BrokerLoad], nodes: &[i32]) -> BTreeSet<String> {
        nodes
            .iter()
            .filter_map(|node| {
                let broker = brokers
                    .iter()
                    .find(|broker| broker.node_id == *node)
                    .unwrap();
                broker.rack.clone()
            })
            .collect()
    }

    fn assignment(topic: &str, partition: i32, replicas: &[i32]) -> Assignment {
        Assignment {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
            leader: replicas[0],
        }
    }

    /// `assignments` after `moves`, or why a move was wrong: its partition is unknown, `from`
    /// does not hold it, `to` is not live or already holds it.
    fn apply_moves(
        live: &[BrokerLoad],
        assignments: &[Assignment],
        moves: &[Move],
    ) -> Result<Vec<Assignment>, String> {
        let mut after = assignments.to_vec();
        for step in moves {
            let moved = after
                .iter_mut()
                .find(|moved| moved.topic == step.topic && moved.partition == step.partition)
                .ok_or(format!("{step:?}: no such partition"))?;
            if !live.iter().any(|broker| broker.node_id == step.to) {
                return Err(format!("{step:?}: target not live"));
            }
            if moved.replicas.contains(&step.to) {
                return Err(format!("{step:?}: target already holds {moved:?}"));
            }
            let position = moved
                .replicas
                .iter()
                .position(|&node| node == step.from)
                .ok_or(format!("{step:?}: source does not hold {moved:?}"))?;
            moved.replicas[position] = step.to;
            if moved.leader == step.from {
                moved.leader = step.to;
            }
        }
        Ok(after)
    }

    /// Replica and leader counts per live broker in `assignments`.
    fn live_counts(
        live: &[BrokerLoad],
        assignments: &[Assignment],
    ) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
        let mut replicas: BTreeMap<i32, usize> =
            live.iter().map(|broker| (broker.node_id, 0)).collect();
        let mut leaders = replicas.clone();
        for assignment in assignments {
            for node in &assignment.replicas {
                if let Some(count) = replicas.get_mut(node) {
                    *count += 1;
                }
            }
            if let Some(count) = leaders.get_mut(&assignment.leader) {
                *count += 1;
            }
        }
        (replicas, leaders)
    }

    #[test]
    fn place_gives_3_brokers_4_of_12_partitions_and_4_leaders_each() {
        let brokers = unracked(&[1, 2, 3]);
        let replica_lists = place(&brokers, 12, 1).unwrap();
        assert_eq!(replica_lists.len(), 12);
        let (replicas, leaders) = counts_after(&brokers, &replica_lists);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    }

    #[test]
    fn place_rotates_leaders_and_lays_followers_after_them() {
        let brokers = unracked(&[3, 1, 2]);
        let replica_lists = place(&brokers, 6, 2).unwrap();
        assert_eq!(
            replica_lists,
            [[1, 2], [3, 1], [2, 3], [1, 2], [3, 1], [2, 3]]
        );
    }

    #[test]
    fn place_fills_the_least_loaded_brokers_first() {
        let mut brokers = unracked(&[1, 2, 3]);
        for (broker, load) in brokers.iter_mut().zip([4, 0, 2]) {
            broker.replicas = load;
            broker.leaders = load;
        }
        let replica_lists = place(&brokers, 6, 1).unwrap();
        let (replicas, leaders) = counts_after(&brokers, &replica_lists);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
        // With replication factor 2, a partition cannot go to broker 2 twice; counts still end
        // within one of each other.
        let replica_lists = place(&brokers, 4, 2).unwrap();
        let (replicas, _) = counts_after(&brokers, &replica_lists);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [5, 4, 5]);
    }

    #[test]
    fn place_leads_on_the_least_loaded_brokers_leading_fewest() {
        let mut brokers = unracked(&[1, 2, 3]);
        for (broker, (replicas, leaders)) in brokers.iter_mut().zip([(2, 2), (2, 0), (0, 0)]) {
            broker.replicas = replicas;
            broker.leaders = leaders;
        }
        // Broker 3 holds fewest replicas and leads nothing, so it leads first; broker 1 follows
        // rather than broker 2, which it ties with on replicas, to keep broker 2 free to lead.
        let replica_lists = place(&brokers, 2, 2).unwrap();
        assert_eq!(replica_lists, [[3, 1], [2, 3]]);
    }

    #[test]
    fn place_from_no_load_keeps_counts_within_one_after_every_partition() {
        // Every broker count and replication factor up to 12, 120 partitions each: after each
        // partition, replica counts and leader counts are each within one of each other.
        for broker_count in 1..=12 {
            let brokers = unracked(&(0..broker_count).collect::<Vec<_>>());
            for replication_factor in 1..=brokers.len() {
                let replica_lists = place(&brokers, 120, replication_factor).unwrap();
                for placed in 1..=replica_lists.len() {
                    let (replicas, leaders) = counts_after(&brokers, &replica_lists[..placed]);
                    let context = format!("{broker_count} brokers, factor {replication_factor}");
                    assert!(spread(&replicas) <= 1, "{context}: {replicas:?}");
                    assert!(spread(&leaders) <= 1, "{context}: {leaders:?}");
                }
            }
        }
    }

    #[test]
    fn place_puts_each_partition_on_3_racks_when_there_are_3() {
        let brokers = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let replica_lists = place(&brokers, 12, 3).unwrap();
        for list in &replica_lists {
            assert_eq!(racks_of(&brokers, list).len(), 3, "{list:?}");
        }
        let (replicas, leaders) = counts_after(&brokers, &replica_lists);
        assert_eq!(spread(&replicas), 0, "{replicas:?}");
        assert_eq!(spread(&leaders), 0, "{leaders:?}");
    }

    #[test]
    fn place_spreads_over_both_racks_when_there_are_fewer_racks_than_replicas() {
        let brokers = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        let replica_lists = place(&brokers, 8, 3).unwrap();
        for list in &replica_lists {
            assert_eq!(racks_of(&brokers, list).len(), 2, "{list:?}");
        }
    }

    #[test]
    fn place_rejects_mixed_racks() {
        let brokers = brokers(&[(1, Some("a")), (2, None), (3, Some("b"))]);
        assert_eq!(place(&brokers, 3, 1), Err(PlacementError::MixedRacks));
    }

    #[test]
    fn place_rejects_a_replication_factor_of_0_or_above_the_live_brokers() {
        let brokers = unracked(&[1, 2]);
        assert_eq!(
            place(&brokers, 3, 3),
            Err(PlacementError::NotEnoughBrokers { wanted: 3, live: 2 })
        );
        assert_eq!(
            place(&brokers, 3, 0),
            Err(PlacementError::NotEnoughBrokers { wanted: 0, live: 2 })
        );
    }

    #[test]
    fn place_without_brokers_is_an_error_and_no_partitions_are_no_lists() {
        assert_eq!(place(&[], 3, 1), Err(PlacementError::NoBrokers));
        assert_eq!(place(&unracked(&[1]), 0, 1), Ok(Vec::new()));
    }

    #[test]
    fn rebalance_evens_6_0_0_to_2_2_2_in_4_moves() {
        let live = unracked(&[1, 2, 3]);
        let assignments: Vec<Assignment> = (0..6)
            .map(|partition| assignment("t", partition, &[1]))
            .collect();
        let moves = rebalance(&live, &assignments);
        assert_eq!(moves.len(), 4, "{moves:?}");
        let after = apply_moves(&live, &assignments, &moves).unwrap();
        let (replicas, leaders) = live_counts(&live, &after);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    }

    #[test]
    fn rebalance_leaves_partitions_with_replicas_on_dead_brokers() {
        let live = unracked(&[1, 2]);
        // Broker 9 is dead: "t-0" to "t-3" stay where they are, and still load broker 1.
        let mut assignments: Vec<Assignment> = (0..4)
            .map(|partition| assignment("t", partition, &[1, 9]))
            .collect();
        assignments.push(assignment("u", 0, &[9]));
        assignments.extend((0..2).map(|partition| assignment("v", partition, &[1])));
        let moves = rebalance(&live, &assignments);
        let expected: Vec<Move> = (0..2)
            .map(|partition| Move {
                topic: "v".to_string(),
                partition,
                from: 1,
                to: 2,
            })
            .collect();
        assert_eq!(moves, expected);
    }

    #[test]
    fn rebalance_of_a_balanced_cluster_moves_nothing() {
        let live = unracked(&[1, 2, 3]);
        let assignments = [
            assignment("t", 0, &[1, 2]),
            assignment("t", 1, &[2, 3]),
            assignment("t", 2, &[3, 1]),
            assignment("u", 0, &[1]),
        ];
        assert_eq!(rebalance(&live, &assignments), []);
    }

    #[test]
    fn rebalance_moves_led_partitions_off_a_broker_leading_too_many() {
        let live = unracked(&[1, 2, 3]);
        // Broker 1 holds 4 replicas and leads 3 partitions; broker 3 holds 1 and leads none.
        let assignments = [
            assignment("t", 0, &[2, 1]),
            assignment("t", 1, &[1, 2]),
            assignment("t", 2, &[1, 2]),
            assignment("t", 3, &[1, 3]),
        ];
        let moves = rebalance(&live, &assignments);
        let expected = [Move {
            topic: "t".to_string(),
            partition: 1,
            from: 1,
            to: 3,
        }];
        assert_eq!(moves, expected);
    }

    #[test]
    fn rebalance_keeps_each_partition_on_distinct_racks() {
        let live = brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b"))]);
        let assignments: Vec<Assignment> = (0..4)
            .map(|partition| assignment("t", partition, &[1, 3]))
            .collect();
        let moves = rebalance(&live, &assignments);
        // Broker 3 is alone on rack "b", so it keeps a replica of every partition (4, where 3
        // brokers would hold 2 or 3 each if racks allowed); brokers 1 and 2 share rack "a"'s.
        let expected: Vec<Move> = (0..2)
            .map(|partition| Move {
                topic: "t".to_string(),
                partition,
                from: 1,
                to: 2,
            })
            .collect();
        assert_eq!(moves, expected);
    }

    /// Random brokers: 1 to 8 distinct node ids, all with a rack out of 4 or none, no load.
    fn random_brokers() -> impl Strategy<Value = Vec<BrokerLoad>> {
        (
            proptest::collection::btree_set(0..20i32, 1..=8),
            any::<bool>(),
            proptest::collection::vec(0..4u8, 8),
        )
            .prop_map(|(node_ids, racked, racks)| {
                node_ids
                    .into_iter()
                    .zip(racks)
                    .map(|(node_id, rack)| BrokerLoad {
                        node_id,
                        rack: racked.then(|| format!("r{rack}")),
                        replicas: 0,
                        leaders: 0,
                    })
                    .collect()
            })
    }

    /// Random brokers, a partition count and a replication factor they allow (at most 3).
    fn placement_input() -> impl Strategy<Value = (Vec<BrokerLoad>, usize, usize)> {
        (random_brokers(), 0..200usize).prop_flat_map(|(brokers, partitions)| {
            let most = brokers.len().min(3);
            (Just(brokers), Just(partitions), 1..=most)
        })
    }

    /// A random cluster: live brokers (with racks when `racked`), up to `dead_max` dead ones
    /// (node ids 100 and up), and partitions of topics `t0` to `t2` with 1 to 3 replicas on
    /// random distinct brokers, live or dead; at most as many replicas as live brokers.
    fn random_cluster(
        racked: bool,
        dead_max: usize,
    ) -> impl Strategy<Value = (Vec<BrokerLoad>, Vec<Assignment>)> {
        (
            random_brokers(),
            0..=dead_max,
            proptest::collection::vec(
                (1..=3usize, proptest::collection::vec(any::<usize>(), 3)),
                0..60,
            ),
        )
            .prop_map(move |(mut live, dead_count, partitions)| {
                if !racked {
                    for broker in &mut live {
                        broker.rack = None;
                    }
                }
                let mut pool: Vec<i32> = live.iter().map(|broker| broker.node_id).collect();
                pool.extend((0..dead_count as i32).map(|dead| 100 + dead));
                let assignments = partitions
                    .into_iter()
                    .enumerate()
                    .map(|(index, (replication_factor, seeds))| {
                        let mut remaining = pool.clone();
                        let replicas: Vec<i32> = seeds
                            .into_iter()
                            .take(replication_factor.min(live.len()))
                            .map(|seed| remaining.remove(seed % remaining.len()))
                            .collect();
                        let topic = format!("t{}", index % 3);
                        assignment(&topic, (index / 3) as i32, &replicas)
                    })
                    .collect();
                (live, assignments)
            })
    }

    proptest! {
        #[test]
        fn place_from_no_load_is_distinct_balanced_and_rack_spread(
            (brokers, partitions, replication_factor) in placement_input(),
        ) {
            let replica_lists = place(&brokers, partitions, replication_factor).unwrap();
            prop_assert_eq!(replica_lists.len(), partitions);
            let all_racks = racks_of(&brokers, &brokers.iter().map(|broker| broker.node_id).collect::<Vec<_>>());
            for list in &replica_lists {
                let distinct: BTreeSet<&i32> = list.iter().collect();
                prop_assert_eq!(distinct.len(), replication_factor, "{:?}", list);
                if !all_racks.is_empty() {
                    let spanned = racks_of(&brokers, list).len();
                    prop_assert_eq!(spanned, replication_factor.min(all_racks.len()), "{:?}", list);
                }
            }
            if all_racks.is_empty() {
                let (replicas, leaders) = counts_after(&brokers, &replica_lists);
                prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
                prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
            }
        }

        #[test]
        fn place_never_widens_the_replica_spread(
            (mut brokers, partitions, replication_factor) in placement_input(),
            loads in proptest::collection::vec((0..30usize, 0..30usize), 8),
        ) {
            for (broker, (replicas, leaders)) in brokers.iter_mut().zip(loads) {
                broker.rack = None;
                broker.replicas = replicas;
                broker.leaders = leaders.min(replicas);
            }
            let (before, _) = counts_after(&brokers, &[]);
            let replica_lists = place(&brokers, partitions, replication_factor).unwrap();
            let (after, _) = counts_after(&brokers, &replica_lists);
            prop_assert!(spread(&after) <= spread(&before).max(1), "{:?} -> {:?}", before, after);
        }

        #[test]
        fn rebalance_evens_out_a_cluster_of_live_brokers_without_racks(
            (live, assignments) in random_cluster(false, 0),
        ) {
            let moves = rebalance(&live, &assignments);
            let after = apply_moves(&live, &assignments, &moves);
            prop_assert!(after.is_ok(), "{:?}", after);
            let (replicas, _) = live_counts(&live, &after.unwrap());
            prop_assert!(spread(&replicas) <= 1, "{:?} after {:?}", replicas, moves);
            let replica_count: usize = replicas.values().sum();
            prop_assert!(moves.len() <= replica_count);
        }

        #[test]
        fn rebalance_moves_are_valid_deterministic_and_keep_rack_spread(
            (live, assignments) in random_cluster(true, 2),
        ) {
            let moves = rebalance(&live, &assignments);
            let reversed: Vec<Assignment> = assignments.iter().rev().cloned().collect();
            prop_assert_eq!(&rebalance(&live, &reversed), &moves);
            let after = apply_moves(&live, &assignments, &moves);
            prop_assert!(after.is_ok(), "{:?}", after);
            let after = after.unwrap();
            for (before, now) in assignments.iter().zip(&after) {
                let on_dead = before
                    .replicas
                    .iter()
                    .any(|node| live.iter().all(|broker| broker.node_id != *node));
                if on_dead {
                    prop_assert_eq!(before, now);
                }
                let racks_before = racks_of(&live, &before.replicas.iter().copied().filter(|node| *node < 100).collect::<Vec<_>>());
                let racks_now = racks_of(&live, &now.replicas.iter().copied().filter(|node| *node < 100).collect::<Vec<_>>());
                prop_assert!(racks_now.len() >= racks_before.len(), "{:?} -> {:?}", before, now);
            }
            let (replicas_before, _) = live_counts(&live, &assignments);
            let (replicas_now, _) = live_counts(&live, &after);
            prop_assert!(spread(&replicas_now) <= spread(&replicas_before));
        }
    }
}
