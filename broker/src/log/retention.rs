//! Retention decisions as pure functions: which of a log's oldest sealed segments to delete,
//! given their sizes and timestamps and the time `now`. No files, no clocks: unit-testable.
//!
//! Both rules delete a prefix of the sealed segments (the active segment is never a
//! candidate), so a log deletes the longer of the two prefixes.

/// How many of the oldest sealed segments are past `retention`: their newest record is older
/// than `cutoff_ms` (now minus retention). Stops at the first segment that is not, so that
/// deletion stays a prefix even when timestamps go backwards. `None` (an empty segment)
/// counts as expired: it holds nothing to keep.
pub(crate) fn expired_by_time(
    max_timestamps: impl IntoIterator<Item = Option<i64>>,
    cutoff_ms: i64,
) -> usize {
    max_timestamps
        .into_iter()
        .take_while(|max| max.is_none_or(|max| max < cutoff_ms))
        .count()
}

/// How many of the oldest sealed segments to delete so that the log shrinks to at most
/// `retention_bytes`, deleting a segment only if the log is still at least that big without
/// it (Kafka's rule: never go below the limit by more than needed).
pub(crate) fn expired_by_size(
    sealed_sizes: impl IntoIterator<Item = u64>,
    total_bytes: u64,
    retention_bytes: u64,
) -> usize {
    let mut remaining = total_bytes;
    sealed_sizes
        .into_iter()
        .take_while(|&size| {
            let delete = remaining > retention_bytes && remaining - size >= retention_bytes;
            if delete {
                remaining -= size;
            }
            delete
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_deletes_the_expired_prefix_only() {
        let check = |timestamps: &[Option<i64>], cutoff: i64, expected: usize| {
            assert_eq!(
                expired_by_time(timestamps.iter().copied(), cutoff),
                expected,
                "{timestamps:?} cutoff {cutoff}"
            );
        };
        check(&[], 100, 0);
        check(&[Some(10), Some(20), Some(30)], 25, 2);
        check(&[Some(10), Some(20), Some(30)], 20, 1); // equal to the cutoff is kept
        check(&[Some(10), Some(20), Some(30)], 1000, 3);
        check(&[Some(10), Some(50), Some(30)], 40, 1); // a newer segment shields older ones
        check(&[None, Some(10)], 5, 1);
    }

    #[test]
    fn size_never_deletes_below_the_limit() {
        let check = |sizes: &[u64], total: u64, limit: u64, expected: usize| {
            assert_eq!(
                expired_by_size(sizes.iter().copied(), total, limit),
                expected,
                "{sizes:?} total {total} limit {limit}"
            );
        };
        // Three sealed segments of 100 plus an active one of 50: 350 in all.
        check(&[100, 100, 100], 350, 1000, 0);
        check(&[100, 100, 100], 350, 350, 0);
        check(&[100, 100, 100], 350, 250, 1);
        check(&[100, 100, 100], 350, 249, 1); // deleting two would leave 150 < 249
        check(&[100, 100, 100], 350, 150, 2);
        check(&[100, 100, 100], 350, 0, 3);
        check(&[], 50, 0, 0);
    }
}
