//! [`Rng`]: a small deterministic generator (SplitMix64) for randomised tests, so that a
//! failing run can be replayed from the seed it prints. Not for anything but tests.

use std::time::{SystemTime, UNIX_EPOCH};

/// A seeded pseudo-random generator.
#[derive(Clone, Debug)]
pub struct Rng {
    /// The state, advanced by a constant per draw.
    state: u64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The seed in environment variable `variable` if set (decimal), else one from the
    /// clock; prints which one is used and how to replay it, on stderr.
    pub fn seed_from_env(variable: &str) -> u64 {
        let seed = match std::env::var(variable) {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{variable}={text:?} is not a decimal u64")),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64),
        };
        eprintln!("seed {seed} (replay with {variable}={seed})");
        seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `range` (which must not be empty).
    pub fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        assert!(range.start < range.end, "empty range {range:?}");
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// `true` with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0..denominator) < numerator
    }

    /// `length` random bytes.
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_numbers_and_ranges_hold() {
        let mut first = Rng::new(42);
        let mut second = Rng::new(42);
        for _ in 0..1000 {
            let value = first.range(10..20);
            assert_eq!(value, second.range(10..20));
            assert!((10..20).contains(&value));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
