//! A set of row numbers, one bit each: which rows an earlier part of a run
//! finished, which ones a state import has seen. Row numbers are dense, so a
//! bitmap costs an eighth of a byte a row (1.25 MB for 10M rows). A row
//! number far beyond the rows held (a damaged or hostile results.csv) is
//! kept aside in an ordered set instead, so memory follows the rows held,
//! never the largest row number.

use std::collections::BTreeSet;

/// Bitmap words allowed per row held (plus [`SLACK_WORDS`]) before a row
/// goes to the sparse set: 16 words, 1,024 bits, so a bitmap at least
/// 1/1,024 full (a `--shard K/N` run's rows with N up to 1,024) stays one.
const WORDS_PER_ROW: u64 = 16;
/// Bitmap words any set may use whatever it holds (64 KiB, 524,288 rows).
const SLACK_WORDS: u64 = 8192;

/// A set of row numbers, one bit each.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowSet {
    words: Vec<u64>,
    /// Rows too far beyond the bitmap to grow it for.
    sparse: BTreeSet<u64>,
    len: u64,
}

impl RowSet {
    /// Add `row`.
    pub(crate) fn insert(&mut self, row: u64) {
        let (w, b) = (row / 64, row % 64);
        if w >= self.words.len() as u64 {
            if w >= self.len.saturating_add(1).saturating_mul(WORDS_PER_ROW) + SLACK_WORDS {
                if self.sparse.insert(row) {
                    self.len += 1;
                }
                return;
            }
            // In range now: `w` fits the bitmap's bound, so the cast holds.
            self.words.resize(w as usize + 1, 0);
        }
        let word = &mut self.words[w as usize];
        if *word & (1 << b) == 0 {
            // A row kept aside before the bitmap reached it is already counted.
            if !self.sparse.remove(&row) {
                self.len += 1;
            }
            *word |= 1 << b;
        }
    }

    /// Whether `row` is in the set.
    pub(crate) fn contains(&self, row: u64) -> bool {
        let (w, b) = (row / 64, row % 64);
        usize::try_from(w)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|x| x & (1 << b) != 0)
            || (!self.sparse.is_empty() && self.sparse.contains(&row))
    }

    /// Rows in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rowset() {
        let mut s = RowSet::default();
        assert!(!s.contains(5));
        s.insert(5);
        s.insert(5);
        s.insert(1000);
        assert!(s.contains(5) && s.contains(1000) && !s.contains(6));
        assert_eq!(s.len(), 2);
    }

    // Found by the `results` fuzz target (fuzz/corpus/results/huge_row_number.csv):
    // a results.csv line numbered 18446744073709551615 made `--resume` and
    // `state import` allocate a 2^61-byte bitmap. Memory follows the rows
    // held, not the largest row number.
    #[test]
    fn a_far_row_costs_no_more_than_a_near_one() {
        let mut s = RowSet::default();
        for row in [1 << 26, u64::MAX, 3, 1 << 26, u64::MAX - 64] {
            s.insert(row);
        }
        assert!(s.words.len() < 4096, "{} words", s.words.len());
        assert_eq!(s.len(), 4);
        for row in [1 << 26, u64::MAX, 3, u64::MAX - 64] {
            assert!(s.contains(row), "{row}");
        }
        assert!(!s.contains(4) && !s.contains((1 << 26) + 1) && !s.contains(u64::MAX - 1));
        // Dense rows after a far one stay in the bitmap and count once.
        for row in 0..100_000 {
            s.insert(row);
        }
        assert_eq!(s.len(), 100_000 + 3);
        assert!(s.contains(99_999) && s.contains(1 << 26) && !s.contains(100_000));
    }
}
