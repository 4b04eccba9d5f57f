//! Partition assignment strategies: pure functions from the members' subscriptions, the
//! topics' partition counts and the previous generation's assignment to a new assignment.
//!
//! Every strategy gives each partition of a subscribed, existing topic to exactly one member
//! subscribed to that topic, and, when every member subscribes to the same topics, member
//! partition counts differ by at most one (see `docs/groups.md`):
//!
//! - `sticky`: balanced, and keeps as many partitions as balance allows with the member that
//!   had them in the previous generation;
//! - `range`: per topic, contiguous ranges of partitions for the subscribed members sorted by
//!   id; which members get one more than the others rotates from topic to topic, so that the
//!   totals stay balanced;
//! - `roundrobin`: every partition, sorted by topic then partition, dealt to the members
//!   sorted by id, skipping members not subscribed to its topic.
//!
//! No clocks, no I/O, no group state: the coordinator calls [`assign`].

use std::collections::{BTreeMap, BTreeSet};

/// An assignment strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Balanced, moving as few partitions as possible.
    Sticky,
    /// Contiguous ranges per topic.
    Range,
    /// Partitions dealt in turn.
    RoundRobin,
}

impl Strategy {
    /// Every strategy, in the client's default order of preference.
    pub const ALL: [Strategy; 3] = [Strategy::Sticky, Strategy::Range, Strategy::RoundRobin];

    /// The strategy named `name` (as on the wire), if there is one.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.name() == name)
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Sticky => "sticky",
            Strategy::Range => "range",
            Strategy::RoundRobin => "roundrobin",
        }
    }
}

/// One member's partitions: topic → partition numbers, ascending.
pub type MemberAssignment = BTreeMap<String, Vec<i32>>;

/// Every member's partitions, by member id.
pub type Assignment = BTreeMap<String, MemberAssignment>;

/// Members' subscriptions: member id → subscribed topics.
pub type Subscriptions = BTreeMap<String, BTreeSet<String>>;

/// Assigns the partitions of the subscribed topics (`partition_counts`: topic → number of
/// partitions; a topic missing here has none) to `members`. `previous` is the last
/// generation's assignment; only `sticky` reads it. Every member appears in the result.
pub fn assign(
    strategy: Strategy,
    members: &Subscriptions,
    partition_counts: &BTreeMap<String, i32>,
    previous: &Assignment,
) -> Assignment {
    let mut assignment: Assignment = members
        .keys()
        .map(|member| (member.clone(), MemberAssignment::new()))
        .collect();
    if members.is_empty() {
        return assignment;
    }
    let pairs = match strategy {
        Strategy::Sticky => sticky(members, partition_counts, previous),
        Strategy::Range => range(members, partition_counts),
        Strategy::RoundRobin => round_robin(members, partition_counts),
    };
    for (member, (topic, partition)) in pairs {
        if let Some(partitions) = assignment.get_mut(member) {
            partitions
                .entry(topic.to_string())
                .or_default()
                .push(partition);
        }
    }
    for partitions in assignment.values_mut().flat_map(BTreeMap::values_mut) {
        partitions.sort_unstable();
    }
    assignment
}

/// A partition: topic and number.
type Partition<'a> = (&'a str, i32);

/// The existing topics some member subscribes to, with their members (sorted by id).
fn subscribed_topics<'a>(
    members: &'a Subscriptions,
    partition_counts: &'a BTreeMap<String, i32>,
) -> impl Iterator<Item = (&'a str, i32, Vec<&'a str>)> {
    partition_counts.iter().filter_map(move |(topic, &count)| {
        let subscribers: Vec<&str> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member.as_str())
            .collect();
        (count > 0 && !subscribers.is_empty()).then_some((topic.as_str(), count, subscribers))
    })
}

fn range<'a>(
    members: &'a Subscriptions,
    partition_counts: &'a BTreeMap<String, i32>,
) -> Vec<(&'a str, Partition<'a>)> {
    let mut pairs = Vec::new();
    // Extra partitions handed out so far: the next topic's extras start after them.
    let mut rotation = 0usize;
    for (topic, count, subscribers) in subscribed_topics(members, partition_counts) {
        let member_count = subscribers.len();
        let (base, extra) = (count as usize / member_count, count as usize % member_count);
        let first_extra = rotation % member_count;
        let mut next = 0i32;
        for (index, member) in subscribers.into_iter().enumerate() {
            let gets_extra = (index + member_count - first_extra) % member_count < extra;
            let size = (base + usize::from(gets_extra)) as i32;
            pairs.extend((next..next + size).map(|partition| (member, (topic, partition))));
            next += size;
        }
        rotation += extra;
    }
    pairs
}

fn round_robin<'a>(
    members: &'a Subscriptions,
    partition_counts: &'a BTreeMap<String, i32>,
) -> Vec<(&'a str, Partition<'a>)> {
    let ids: Vec<&str> = members.keys().map(String::as_str).collect();
    let mut cursor = 0usize;
    let mut pairs = Vec::new();
    for (topic, count, _) in subscribed_topics(members, partition_counts) {
        for partition in 0..count {
            // Some member subscribes to the topic, so this ends within one turn.
            loop {
                let member = ids[cursor % ids.len()];
                cursor += 1;
                if members[member].contains(topic) {
                    pairs.push((member, (topic, partition)));
                    break;
                }
            }
        }
    }
    pairs
}

fn sticky<'a>(
    members: &'a Subscriptions,
    partition_counts: &'a BTreeMap<String, i32>,
    previous: &Assignment,
) -> Vec<(&'a str, Partition<'a>)> {
    let all: Vec<Partition<'a>> = subscribed_topics(members, partition_counts)
        .flat_map(|(topic, count, _)| (0..count).map(move |partition| (topic, partition)))
        .collect();
    let owned = still_owned(members, partition_counts, previous);
    let caps = keep_caps(members, all.len(), &owned);
    let mut owner: BTreeMap<Partition<'a>, &'a str> = BTreeMap::new();
    let mut load: BTreeMap<&'a str, usize> = members.keys().map(|id| (id.as_str(), 0)).collect();
    for (member, partitions) in &owned {
        for partition in partitions.iter().take(caps[member]) {
            owner.insert(*partition, member);
        }
        load.insert(member, partitions.len().min(caps[member]));
    }
    for partition in all {
        if owner.contains_key(&partition) {
            continue;
        }
        // The least loaded subscribed member, by id on ties. Every topic in `all` has a
        // subscriber; were one without, its partitions would stay unassigned.
        let Some(member) = load
            .iter()
            .filter(|(member, _)| members[**member].contains(partition.0))
            .min_by_key(|(member, count)| (**count, **member))
            .map(|(member, _)| *member)
        else {
            continue;
        };
        owner.insert(partition, member);
        *load.entry(member).or_default() += 1;
    }
    owner
        .into_iter()
        .map(|(partition, member)| (member, partition))
        .collect()
}

/// Each current member's partitions from `previous` that it may keep: the partition still
/// exists, the member still subscribes to its topic, and no member before it (by id) already
/// claimed it. Sorted by topic and partition.
fn still_owned<'a>(
    members: &'a Subscriptions,
    partition_counts: &'a BTreeMap<String, i32>,
    previous: &Assignment,
) -> BTreeMap<&'a str, Vec<Partition<'a>>> {
    let mut claimed: BTreeSet<Partition<'a>> = BTreeSet::new();
    let mut owned = BTreeMap::new();
    for (member, topics) in members {
        let mut keep = Vec::new();
        for (topic, partitions) in previous.get(member).into_iter().flatten() {
            let Some((topic, &count)) = partition_counts.get_key_value(topic) else {
                continue;
            };
            if !topics.contains(topic) {
                continue;
            }
            for &partition in partitions {
                if (0..count).contains(&partition) && claimed.insert((topic.as_str(), partition)) {
                    keep.push((topic.as_str(), partition));
                }
            }
        }
        keep.sort_unstable();
        owned.insert(member.as_str(), keep);
    }
    owned
}

/// How many of its previous partitions each member may keep. With equal subscriptions: the
/// balanced share (`total / members`), plus one for as many members as there are partitions
/// left over (`total % members`), given to members that had more than the share, those with
/// the most first; so no member exceeds the balanced maximum and as many partitions as
/// possible stay. With unequal subscriptions (no balance promised): the rounded-up share.
fn keep_caps<'a>(
    members: &'a Subscriptions,
    total: usize,
    owned: &BTreeMap<&'a str, Vec<Partition<'a>>>,
) -> BTreeMap<&'a str, usize> {
    let member_count = members.len();
    let share = total / member_count;
    let equal = members
        .values()
        .all(|topics| Some(topics) == members.values().next());
    if !equal {
        let rounded_up = total.div_ceil(member_count);
        return owned.keys().map(|member| (*member, rounded_up)).collect();
    }
    let mut caps: BTreeMap<&str, usize> = owned.keys().map(|member| (*member, share)).collect();
    let mut over_share: Vec<(&str, usize)> = owned
        .iter()
        .filter(|(_, partitions)| partitions.len() > share)
        .map(|(member, partitions)| (*member, partitions.len()))
        .collect();
    over_share.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (member, _) in over_share.into_iter().take(total % member_count) {
        caps.insert(member, share + 1);
    }
    caps
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as _;

    use super::*;

    fn subscriptions(members: &[(&str, &[&str])]) -> Subscriptions {
        members
            .iter()
            .map(|(id, topics)| {
                let topics = topics.iter().map(|topic| topic.to_string()).collect();
                (id.to_string(), topics)
            })
            .collect()
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics
            .iter()
            .map(|(topic, count)| (topic.to_string(), *count))
            .collect()
    }

    /// `member: topic partitions; ...`, members in id order, for compact expectations.
    fn render(assignment: &Assignment) -> String {
        assignment
            .iter()
            .map(|(member, topics)| {
                let topics: Vec<String> = topics
                    .iter()
                    .map(|(topic, partitions)| format!("{topic}{partitions:?}"))
                    .collect();
                format!("{member}: {}", topics.join(" "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn names_round_trip() {
        for strategy in Strategy::ALL {
            assert_eq!(Strategy::from_name(strategy.name()), Some(strategy));
        }
        assert_eq!(Strategy::from_name("cooperative-sticky"), None);
    }

    #[test]
    fn range_gives_contiguous_ranges_and_rotates_the_extras() {
        let members = subscriptions(&[("a", &["x", "y"]), ("b", &["x", "y"])]);
        let assignment = assign(
            Strategy::Range,
            &members,
            &counts(&[("x", 3), ("y", 3)]),
            &Assignment::new(),
        );
        assert_eq!(render(&assignment), "a: x[0, 1] y[0]; b: x[2] y[1, 2]");
    }

    #[test]
    fn round_robin_deals_in_turn_and_skips_members_not_subscribed() {
        let members = subscriptions(&[("a", &["x"]), ("b", &["x", "y"]), ("c", &["x"])]);
        let assignment = assign(
            Strategy::RoundRobin,
            &members,
            &counts(&[("x", 4), ("y", 2), ("z", 5)]),
            &Assignment::new(),
        );
        assert_eq!(render(&assignment), "a: x[0, 3]; b: x[1] y[0, 1]; c: x[2]");
    }

    #[test]
    fn sticky_moves_only_what_balance_needs() {
        let members = subscriptions(&[("a", &["x"]), ("b", &["x"])]);
        let partition_counts = counts(&[("x", 6)]);
        let first = assign(
            Strategy::Sticky,
            &members,
            &partition_counts,
            &Assignment::new(),
        );
        assert_eq!(render(&first), "a: x[0, 2, 4]; b: x[1, 3, 5]");
        // A third member takes one partition from each; the rest stay.
        let members = subscriptions(&[("a", &["x"]), ("b", &["x"]), ("c", &["x"])]);
        let second = assign(Strategy::Sticky, &members, &partition_counts, &first);
        assert_eq!(render(&second), "a: x[0, 2]; b: x[1, 3]; c: x[4, 5]");
        // When a leaves, its partitions go; b's stay with b.
        let members = subscriptions(&[("b", &["x"]), ("c", &["x"])]);
        let third = assign(Strategy::Sticky, &members, &partition_counts, &second);
        assert_eq!(render(&third), "b: x[0, 1, 3]; c: x[2, 4, 5]");
    }

    #[test]
    fn missing_topics_contribute_nothing_and_every_member_is_listed() {
        let members = subscriptions(&[("a", &["gone"]), ("b", &["x"])]);
        for strategy in Strategy::ALL {
            let assignment = assign(strategy, &members, &counts(&[("x", 2)]), &Assignment::new());
            assert_eq!(render(&assignment), "a: ; b: x[0, 1]", "{strategy:?}");
        }
    }

    /// Random inputs: up to 4 existing topics `t0..t3` of 0..12 partitions, 1..7 members each
    /// subscribing to a subset of `t0..t4` (`t4` never exists), and a previous assignment of
    /// random partitions to random members, present or not.
    #[derive(Debug, Clone)]
    struct Input {
        members: Subscriptions,
        partition_counts: BTreeMap<String, i32>,
        previous: Assignment,
    }

    fn input(equal_subscriptions: bool) -> impl proptest::strategy::Strategy<Value = Input> {
        (
            proptest::collection::vec(0..12i32, 0..=4),
            proptest::collection::btree_set(0..10usize, 1..=7),
            proptest::collection::vec(proptest::collection::btree_set(0..5usize, 0..=5), 7),
            proptest::collection::vec((0..5usize, 0..14i32, 0..12usize), 0..40),
        )
            .prop_map(move |(topic_counts, ids, topic_sets, previous_pairs)| {
                let partition_counts = topic_counts
                    .iter()
                    .enumerate()
                    .map(|(index, count)| (format!("t{index}"), *count))
                    .collect();
                let members = ids
                    .iter()
                    .enumerate()
                    .map(|(index, id)| {
                        let set = if equal_subscriptions {
                            &topic_sets[0]
                        } else {
                            &topic_sets[index]
                        };
                        (
                            format!("m{id}"),
                            set.iter().map(|topic| format!("t{topic}")).collect(),
                        )
                    })
                    .collect();
                let mut previous = Assignment::new();
                let mut seen = BTreeSet::new();
                for (topic, partition, member) in previous_pairs {
                    if seen.insert((topic, partition)) {
                        previous
                            .entry(format!("m{member}"))
                            .or_default()
                            .entry(format!("t{topic}"))
                            .or_default()
                            .push(partition);
                    }
                }
                Input {
                    members,
                    partition_counts,
                    previous,
                }
            })
    }

    fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
        prop_oneof![
            Just(Strategy::Sticky),
            Just(Strategy::Range),
            Just(Strategy::RoundRobin)
        ]
    }

    fn counts_per_member(assignment: &Assignment) -> Vec<usize> {
        assignment
            .values()
            .map(|topics| topics.values().map(Vec::len).sum())
            .collect()
    }

    proptest! {
        #[test]
        fn every_subscribed_partition_goes_to_exactly_one_subscribed_member(
            input in input(false),
            strategy in strategy(),
        ) {
            let assignment = assign(strategy, &input.members, &input.partition_counts, &input.previous);
            prop_assert_eq!(
                assignment.keys().collect::<Vec<_>>(),
                input.members.keys().collect::<Vec<_>>()
            );
            let mut given = BTreeSet::new();
            for (member, topics) in &assignment {
                for (topic, partitions) in topics {
                    prop_assert!(input.members[member].contains(topic), "{} not subscribed to {}", member, topic);
                    for partition in partitions {
                        prop_assert!(given.insert((topic.clone(), *partition)), "{}-{} given twice", topic, partition);
                    }
                }
            }
            let subscribed: BTreeSet<&String> = input.members.values().flatten().collect();
            let expected: BTreeSet<(String, i32)> = input
                .partition_counts
                .iter()
                .filter(|(topic, _)| subscribed.contains(topic))
                .flat_map(|(topic, count)| (0..*count).map(move |partition| (topic.clone(), partition)))
                .collect();
            prop_assert_eq!(given, expected);
        }

        #[test]
        fn equal_subscriptions_are_balanced_within_one(
            input in input(true),
            strategy in strategy(),
        ) {
            let assignment = assign(strategy, &input.members, &input.partition_counts, &input.previous);
            let counts = counts_per_member(&assignment);
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}: {}", strategy, render(&assignment));
        }

        #[test]
        fn sticky_keeps_every_partition_that_can_stay_while_balanced(input in input(true)) {
            let assignment = assign(Strategy::Sticky, &input.members, &input.partition_counts, &input.previous);
            let owned = still_owned(&input.members, &input.partition_counts, &input.previous);
            let total: usize = counts_per_member(&assignment).iter().sum();
            let share = total / input.members.len();
            let over_share = owned.values().filter(|partitions| partitions.len() > share).count();
            let most_kept = owned.values().map(|partitions| partitions.len().min(share)).sum::<usize>()
                + over_share.min(total % input.members.len());
            let kept = owned
                .iter()
                .map(|(member, partitions)| {
                    partitions
                        .iter()
                        .filter(|(topic, partition)| {
                            assignment[*member].get(*topic).is_some_and(|now| now.contains(partition))
                        })
                        .count()
                })
                .sum::<usize>();
            prop_assert_eq!(kept, most_kept, "{}", render(&assignment));
        }
    }
}
