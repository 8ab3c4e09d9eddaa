//! The run's error messages, tallied for report.html's "top errors": each
//! message with its count and the first rows that had it. The recorder
//! tallies failing rows as it writes them; `connect-provision report` tallies
//! results.csv. Memory is bounded: past [`MAX_MESSAGES`] distinct messages,
//! new ones are counted together.

use std::collections::HashMap;

/// Distinct messages kept; the rest are counted as one "other" group.
pub(crate) const MAX_MESSAGES: usize = 10_000;

/// Rows listed per message.
pub(crate) const FIRST_ROWS: usize = 5;

/// What new messages are counted under once [`MAX_MESSAGES`] are kept.
pub(crate) const OTHER: &str = "(other messages)";

/// One error message of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ErrorGroup {
    /// The error text, as results.csv has it.
    pub(crate) message: String,
    /// Rows with this message.
    pub(crate) count: u64,
    /// The first (up to [`FIRST_ROWS`]) data-row numbers with it.
    pub(crate) rows: Vec<u64>,
}

/// Error messages counted as rows are recorded.
#[derive(Debug, Default)]
pub(crate) struct ErrorTally {
    index: HashMap<String, usize>,
    groups: Vec<ErrorGroup>,
}

impl ErrorTally {
    /// Count `row`'s `message`.
    pub(crate) fn add(&mut self, message: &str, row: u64) {
        let i = match self.index.get(message) {
            Some(&i) => i,
            None => {
                let key = if self.groups.len() < MAX_MESSAGES {
                    message
                } else {
                    OTHER
                };
                let next = self.groups.len();
                let i = *self.index.entry(key.to_string()).or_insert(next);
                if i == next {
                    self.groups.push(ErrorGroup {
                        message: key.to_string(),
                        count: 0,
                        rows: Vec::new(),
                    });
                }
                i
            }
        };
        let g = &mut self.groups[i];
        g.count += 1;
        if g.rows.len() < FIRST_ROWS {
            g.rows.push(row);
        }
    }

    /// The `n` most frequent messages, most frequent first (ties: the one
    /// seen first).
    pub(crate) fn top(&self, n: usize) -> Vec<ErrorGroup> {
        let mut order: Vec<&ErrorGroup> = self.groups.iter().collect();
        order.sort_by_key(|g| std::cmp::Reverse(g.count));
        order.into_iter().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_messages_count_rows_and_keep_the_first_five() {
        let mut t = ErrorTally::default();
        for row in 1..=8 {
            t.add("email: invalid", row);
        }
        t.add("phone_number: invalid", 20);
        t.add("phone_number: invalid", 21);
        t.add("locale: unknown", 30);
        let top = t.top(2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].message, "email: invalid");
        assert_eq!(
            (top[0].count, top[0].rows.clone()),
            (8, vec![1, 2, 3, 4, 5])
        );
        assert_eq!((top[1].count, top[1].rows.clone()), (2, vec![20, 21]));
    }

    #[test]
    fn messages_past_the_bound_are_counted_together() {
        let mut t = ErrorTally::default();
        for row in 0..(MAX_MESSAGES as u64 + 3) {
            t.add(&format!("m{row}"), row);
        }
        t.add("m0", 99);
        assert_eq!(t.groups.len(), MAX_MESSAGES + 1);
        let top = t.top(2);
        assert_eq!((top[0].message.as_str(), top[0].count), (OTHER, 3));
        assert_eq!((top[1].message.as_str(), top[1].count), ("m0", 2));
    }
}
