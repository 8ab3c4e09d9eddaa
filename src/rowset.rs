//! A set of row numbers, one bit each: which rows an earlier part of a run
//! finished, which ones a state import has seen. Row numbers are dense, so a
//! bitmap costs an eighth of a byte a row (1.25 MB for 10M rows).

/// A set of row numbers, one bit each.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowSet {
    words: Vec<u64>,
    len: u64,
}

impl RowSet {
    /// Add `row`.
    pub(crate) fn insert(&mut self, row: u64) {
        let (w, b) = ((row / 64) as usize, row % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & (1 << b) == 0 {
            self.len += 1;
        }
        self.words[w] |= 1 << b;
    }

    /// Whether `row` is in the set.
    pub(crate) fn contains(&self, row: u64) -> bool {
        let (w, b) = ((row / 64) as usize, row % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
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
}
