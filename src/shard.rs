//! `--shard K/N`: which rows one of N processes handles. A row belongs to
//! shard `xxh3_64(user_id) mod N + 1`, where `user_id` is the trimmed cell
//! as UTF-8 bytes (the raw cell, lossily decoded, when the row is invalid)
//! and xxh3_64 is XXH3's 64-bit hash with seed 0, a published algorithm
//! that gives the same value on every machine and in every version. Equal
//! user_ids therefore fall in the same shard, and in-file duplicates are
//! still found.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (1 ≤ index ≤ count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`; `None` unless 1 ≤ index ≤ count.
    pub(crate) fn new(index: u32, count: u32) -> Option<Shard> {
        (index >= 1 && index <= count).then_some(Shard { index, count })
    }

    /// Its number, 1-based.
    pub(crate) fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub(crate) fn count(self) -> u32 {
        self.count
    }

    /// The shard (1-based) a row with this `user_id` belongs to, of `count`.
    pub(crate) fn of(user_id: &str, count: u32) -> u32 {
        let h = xxhash_rust::xxh3::xxh3_64(user_id.as_bytes());
        (h % u64::from(count.max(1))) as u32 + 1
    }

    /// Whether this shard handles the row with this `user_id`.
    pub(crate) fn owns(self, user_id: &str) -> bool {
        Shard::of(user_id, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N`, with 1 ≤ K ≤ N.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("expected K/N with 1 <= K <= N (e.g. 2/4), got '{s}'");
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(k, n).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n_and_refuses_the_rest() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard { index: 1, count: 1 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", "-1/4", "1/4/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard::new(3, 8).unwrap().to_string(), "3/8");
    }

    /// The hash is part of the contract: a row must not change shards
    /// between versions (a resumed or re-run shard would miss rows).
    #[test]
    fn shard_numbers_are_pinned() {
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let got: Vec<u32> = ["cust00000001", "cust00000002", "u1", "", "José"]
            .iter()
            .map(|id| Shard::of(id, 4))
            .collect();
        assert_eq!(got, PINNED);
    }

    // Cross-checked with the reference implementation (Python's xxhash,
    // `xxh3_64_intdigest(id.encode()) % 4 + 1`).
    const PINNED: [u32; 5] = [1, 1, 2, 3, 4];

    #[test]
    fn every_user_id_has_exactly_one_shard() {
        let n = 5;
        let mut per = [0u32; 5];
        for i in 0..10_000 {
            let id = format!("cust{i:08}");
            let owners: Vec<u32> = (1..=n)
                .filter(|&k| Shard::new(k, n).unwrap().owns(&id))
                .collect();
            assert_eq!(owners.len(), 1, "{id}");
            per[owners[0] as usize - 1] += 1;
        }
        // Spread evenly: each shard within 10 % of 2,000.
        assert!(per.iter().all(|&c| (1800..=2200).contains(&c)), "{per:?}");
    }
}
