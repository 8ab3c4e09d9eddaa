//! A compact set of 64-bit fingerprints: about 7 bytes a value (a
//! `HashSet<u64>` holds about 20), grown a 256th of the set at a time.
//!
//! The top 8 bits of a value pick one of 256 shards and the next 8 one of
//! the shard's 256 sub-buckets; neither is stored. A shard keeps its
//! sub-buckets back to back in one allocation, each `cap` slots of the
//! remaining 48 bits (6 bytes), sorted. A value whose sub-bucket is full
//! goes to the shard's sorted spill list (8 bytes); when the spill holds
//! more than a sixteenth of the shard, the shard is rebuilt with an eighth
//! more slots per sub-bucket. So `cap` follows the mean fill of a
//! sub-bucket, few slots stay empty, and the largest transient is one
//! shard's copy (1/256 of the set). One allocation per shard, not one per
//! bucket: many small blocks grown in step left the allocator's pages
//! half empty (11 bytes a value of resident memory for 6.5 allocated).
//!
//! A value is found by looking where a uniformly distributed value is
//! expected in its sub-bucket and walking from there (a cache line or
//! two), and, only when that sub-bucket is full, in the spill. Values must
//! be uniformly distributed (hashes).
//!
//! Used by the in-file duplicate filter (`intake`) and the `--state`
//! pre-load of known payloads (`state`).

/// Bits of a value that pick its shard, then its sub-bucket.
const SHARD_BITS: u32 = 8;
const SUB_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
const SUBS: usize = 1 << SUB_BITS;

/// The low 48 bits of a value, big-endian.
type Rest = [u8; 6];

/// A stored value as a number, for comparisons.
fn num(rest: &Rest) -> u64 {
    let [a, b, c, d, e, f] = *rest;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

fn rest_of(value: u64) -> Rest {
    let b = value.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn shard_of(value: u64) -> usize {
    (value >> (64 - SHARD_BITS)) as usize
}

fn sub_of(value: u64) -> usize {
    ((value >> (64 - SHARD_BITS - SUB_BITS)) as usize) & (SUBS - 1)
}

/// `binary_search` for `key` in a sorted `bucket`, starting where a
/// uniformly distributed key is expected and walking from there: about
/// √len/2 steps, within a cache line or two, where a binary search of a
/// bucket that is not cached misses once a step.
fn search(bucket: &[Rest], key: u64) -> Result<usize, usize> {
    let len = bucket.len();
    if len == 0 {
        return Err(0);
    }
    let guess = ((u128::from(key) * len as u128) >> 48) as usize;
    let mut i = guess.min(len - 1);
    if num(&bucket[i]) < key {
        i += 1;
        while i < len {
            let v = num(&bucket[i]);
            if v >= key {
                return if v == key { Ok(i) } else { Err(i) };
            }
            i += 1;
        }
        Err(len)
    } else {
        // Walk down to the first value not below `key`.
        while i > 0 && num(&bucket[i - 1]) >= key {
            i -= 1;
        }
        if num(&bucket[i]) == key {
            Ok(i)
        } else {
            Err(i)
        }
    }
}

/// The low 48 bits of a value.
const MASK48: u64 = (1 << 48) - 1;

/// The value of shard `shard`, sub-bucket `sub`, low bits `low`.
fn join(shard: usize, sub: usize, low: u64) -> u64 {
    ((shard as u64) << (64 - SHARD_BITS)) | ((sub as u64) << (64 - SHARD_BITS - SUB_BITS)) | low
}

/// One shard: [`SUBS`] sub-buckets of `cap` slots, and the spill.
struct Shard {
    /// Which shard this is (the values' top bits).
    index: usize,
    /// Sub-bucket `k` is `slots[k * cap..][..lens[k]]`, sorted.
    slots: Vec<Rest>,
    lens: Box<[u32]>,
    cap: usize,
    /// Whole values whose sub-bucket was full, sorted.
    spill: Vec<u64>,
    len: usize,
}

impl Shard {
    /// An empty shard of `cap` slots per sub-bucket.
    fn new(index: usize, cap: usize) -> Shard {
        Shard {
            index,
            slots: vec![[0u8; 6]; SUBS * cap],
            lens: vec![0; SUBS].into_boxed_slice(),
            cap,
            spill: Vec::new(),
            len: 0,
        }
    }

    fn bucket(&self, sub: usize) -> &[Rest] {
        &self.slots[sub * self.cap..][..self.lens[sub] as usize]
    }

    fn is_full(&self, sub: usize) -> bool {
        self.lens[sub] as usize == self.cap
    }

    fn contains(&self, value: u64) -> bool {
        let sub = sub_of(value);
        search(self.bucket(sub), num(&rest_of(value))).is_ok()
            || (self.is_full(sub) && self.spill.binary_search(&value).is_ok())
    }

    fn insert(&mut self, value: u64) -> bool {
        let sub = sub_of(value);
        let rest = rest_of(value);
        let Err(at) = search(self.bucket(sub), num(&rest)) else {
            return false;
        };
        if self.is_full(sub) {
            let Err(i) = self.spill.binary_search(&value) else {
                return false;
            };
            self.spill.insert(i, value);
            self.len += 1;
            if self.spill.len() > (self.len / 16).max(16) {
                self.grow();
            }
        } else {
            let start = sub * self.cap;
            let n = self.lens[sub] as usize;
            self.slots
                .copy_within(start + at..start + n, start + at + 1);
            self.slots[start + at] = rest;
            self.lens[sub] += 1;
            self.len += 1;
        }
        true
    }

    /// Rebuild with an eighth more slots per sub-bucket, moving what fits
    /// of the spill into them (both are in order, sub-bucket by sub-bucket).
    fn grow(&mut self) {
        let cap = (self.cap + self.cap / 8).max(self.cap + 1);
        let mut slots = vec![[0u8; 6]; SUBS * cap];
        let mut lens = vec![0u32; SUBS].into_boxed_slice();
        let spill = std::mem::take(&mut self.spill);
        let mut spilled = spill.iter().copied().peekable();
        let mut kept = Vec::new();
        for sub in 0..SUBS {
            let bucket = self.bucket(sub);
            let mut old = bucket.iter().map(num).peekable();
            let target = &mut slots[sub * cap..][..cap];
            let mut n = 0;
            loop {
                let from_spill = spilled.peek().filter(|v| sub_of(**v) == sub).copied();
                let next = match (old.peek().copied(), from_spill) {
                    (Some(a), Some(b)) if b & MASK48 < a => {
                        spilled.next();
                        b & MASK48
                    }
                    (Some(a), _) => {
                        old.next();
                        a
                    }
                    (None, Some(b)) => {
                        spilled.next();
                        b & MASK48
                    }
                    (None, None) => break,
                };
                if n < cap {
                    target[n] = rest_of(next);
                    n += 1;
                } else {
                    kept.push(join(self.index, sub, next));
                }
            }
            lens[sub] = n as u32;
        }
        self.slots = slots;
        self.lens = lens;
        self.cap = cap;
        self.spill = kept;
    }
}

/// A set of `u64` (see the module docs).
pub(crate) struct FpSet {
    shards: Box<[Shard]>,
}

impl Default for FpSet {
    fn default() -> FpSet {
        FpSet::new()
    }
}

impl std::fmt::Debug for FpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FpSet").field("len", &self.len()).finish()
    }
}

impl FpSet {
    /// An empty set (256 KiB of sub-bucket lengths).
    pub(crate) fn new() -> FpSet {
        FpSet::with_capacity(0)
    }

    /// An empty set sized for about `n` values, allocated once: each
    /// sub-bucket gets an eighth more slots than its mean fill, so few
    /// values spill (0.2 % at 10M) and the set need not grow. Growing a
    /// shard frees its old block, which the allocator keeps resident for a
    /// while: a set grown from empty to 10M values was about 1.5 times its
    /// size in resident memory, one sized first about 1.0 (`cargo run
    /// --release --example fpset_bench`). More than `n` values grow it as
    /// [`FpSet::new`]'s does.
    pub(crate) fn with_capacity(n: u64) -> FpSet {
        let mean = n as f64 / (SHARDS * SUBS) as f64;
        // Below a few values a sub-bucket, growing costs little and an
        // estimate that is too large would cost more.
        let cap = if mean < 4.0 {
            0
        } else {
            (mean * 1.125).ceil() as usize + 1
        };
        FpSet {
            shards: (0..SHARDS).map(|i| Shard::new(i, cap)).collect(),
        }
    }

    /// Add `value`; false when it was already in the set.
    pub(crate) fn insert(&mut self, value: u64) -> bool {
        self.shards[shard_of(value)].insert(value)
    }

    /// Whether `value` is in the set.
    pub(crate) fn contains(&self, value: u64) -> bool {
        self.shards[shard_of(value)].contains(value)
    }

    /// Values in the set.
    pub(crate) fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.len as u64).sum()
    }

    /// Bytes the set holds on the heap (tests and `examples/fpset_bench.rs`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                std::mem::size_of::<Shard>()
                    + s.slots.capacity() * std::mem::size_of::<Rest>()
                    + s.lens.len() * 4
                    + s.spill.capacity() * 8
            })
            .sum()
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
    fn one_crowded_sub_bucket_spills_and_grows_correctly() {
        let mut set = FpSet::new();
        let mut reference = HashSet::new();
        // Every value in shard 3, most in one sub-bucket: the spill and the
        // rebuilds carry them.
        let crowded = |i: u64| (3 << 56) | ((i % 7 / 6) << 48) | (mix(i % 9_000) & MASK48);
        for i in 0..12_000u64 {
            assert_eq!(set.insert(crowded(i)), reference.insert(crowded(i)));
        }
        assert_eq!(set.len(), reference.len() as u64);
        for i in 0..20_000u64 {
            let v = crowded(i + 5_000);
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

    #[test]
    fn a_presized_set_is_allocated_once_and_still_grows_past_its_size() {
        let n = 1_000_000u64;
        let mut set = FpSet::with_capacity(n);
        let mut reference = HashSet::new();
        let sized = set.heap_bytes();
        for i in 0..n {
            assert_eq!(set.insert(mix(i)), reference.insert(mix(i)));
        }
        // The spill of full sub-buckets is all that was added: no rebuild.
        let spilled: usize = set.shards.iter().map(|s| s.spill.capacity() * 8).sum();
        assert_eq!(set.heap_bytes(), sized + spilled);
        // At 1M a sub-bucket holds 15 values on average, so more spill than
        // at 10M (153): about 4 % of the bytes here, 0.2 % there.
        assert!(spilled * 20 < sized, "{spilled} bytes spilled of {sized}");
        let per_value = (sized + spilled) as f64 / n as f64;
        assert!(per_value < 8.5, "{per_value:.2} bytes a value");
        // Three times the estimate: it grows, and stays exact.
        for i in n..3 * n {
            assert_eq!(set.insert(mix(i)), reference.insert(mix(i)));
        }
        assert_eq!(set.len(), 3 * n);
        for i in (0..4 * n).step_by(7) {
            assert_eq!(set.contains(mix(i)), reference.contains(&mix(i)));
        }
        // A small estimate allocates nothing up front.
        assert_eq!(
            FpSet::with_capacity(1_000).heap_bytes(),
            FpSet::new().heap_bytes()
        );
    }
}
