//! A compact set of 64-bit fingerprints: about 7 bytes a value at 10M values
//! (a `HashSet<u64>` holds about 20), with no resize of the whole set.
//!
//! The top 16 bits of a value pick one of 65,536 buckets and are not stored;
//! each bucket is a sorted `Vec` of the remaining 48 bits (6 bytes), grown by
//! an eighth at a time. A value is found by a binary search of its bucket
//! (about 150 values at 10M) and inserted by moving the larger ones up, so
//! memory grows with the values, never by doubling: the largest transient is
//! one bucket's copy, a few KiB. Values must be uniformly distributed
//! (hashes), or a few buckets grow long.
//!
//! Used by the in-file duplicate filter (`intake`) and the `--state`
//! pre-load of known payloads (`state`).

/// Bits of a value that pick its bucket.
const BUCKET_BITS: u32 = 16;

/// The low 48 bits of a value, big-endian, so that array order is numeric order.
type Rest = [u8; 6];

/// A stored value as a number, for comparisons (cheaper than a byte-wise
/// compare of the array).
fn num(rest: &Rest) -> u64 {
    let [a, b, c, d, e, f] = *rest;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

fn split(value: u64) -> (usize, Rest) {
    let b = value.to_be_bytes();
    (
        (value >> (64 - BUCKET_BITS)) as usize,
        [b[2], b[3], b[4], b[5], b[6], b[7]],
    )
}

/// A set of `u64` (see the module docs).
pub(crate) struct FpSet {
    buckets: Box<[Vec<Rest>]>,
    len: u64,
}

impl Default for FpSet {
    fn default() -> FpSet {
        FpSet::new()
    }
}

impl std::fmt::Debug for FpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FpSet").field("len", &self.len).finish()
    }
}

impl FpSet {
    /// An empty set (its bucket table is 1.5 MiB).
    pub(crate) fn new() -> FpSet {
        FpSet {
            buckets: (0..1usize << BUCKET_BITS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    /// Add `value`; false when it was already in the set.
    pub(crate) fn insert(&mut self, value: u64) -> bool {
        let (b, rest) = split(value);
        let bucket = &mut self.buckets[b];
        match bucket.binary_search_by_key(&num(&rest), num) {
            Ok(_) => false,
            Err(at) => {
                if bucket.len() == bucket.capacity() {
                    // By an eighth, not double: see the module docs.
                    bucket.reserve_exact((bucket.len() / 8).max(4));
                }
                bucket.insert(at, rest);
                self.len += 1;
                true
            }
        }
    }

    /// Whether `value` is in the set.
    pub(crate) fn contains(&self, value: u64) -> bool {
        let (b, rest) = split(value);
        self.buckets[b]
            .binary_search_by_key(&num(&rest), num)
            .is_ok()
    }

    /// Values in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    #[cfg(test)]
    /// Bytes the set holds on the heap (its buckets' capacity and table).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Vec<Rest>>()
            + self
                .buckets
                .iter()
                .map(|b| b.capacity() * std::mem::size_of::<Rest>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// SplitMix64: uniform values, as the set expects.
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn agrees_with_a_hash_set() {
        let mut set = FpSet::new();
        let mut reference = HashSet::new();
        // Repeats, and values that share a bucket or their low 48 bits.
        let values = (0..200_000u64)
            .map(|i| mix(i % 150_000))
            .chain([0, 1, u64::MAX, 1 << 48, (1 << 48) | 1, 7 << 48, 7])
            .chain([0, u64::MAX, 7]);
        for v in values {
            assert_eq!(set.insert(v), reference.insert(v), "{v:#x}");
        }
        assert_eq!(set.len(), reference.len() as u64);
        for v in (0..300_000u64).map(mix).chain([2, 1 << 49, 6 << 48]) {
            assert_eq!(set.contains(v), reference.contains(&v), "{v:#x}");
        }
    }

    #[test]
    fn holds_under_ten_bytes_a_value() {
        let mut set = FpSet::new();
        for i in 0..2_000_000u64 {
            set.insert(mix(i));
        }
        let per_value = set.heap_bytes() as f64 / set.len() as f64;
        assert!(per_value < 10.0, "{per_value:.2} bytes a value");
    }
}
