//! `GET /_sandbox/seconds`: what the sandbox saw in each second since its first
//! users request, so a benchmark can read a client's rate, its 429s and the
//! limit in force second by second from the server's side (issue #19).
//!
//! Every column counts users requests by the second they *arrived* in (reached
//! the rate-limit stage), even when their answer (a 500 after a long latency)
//! came later. Only the last [`KEEP`] seconds are kept.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many seconds the table keeps: an hour.
pub(crate) const KEEP: usize = 3600;

/// One second of `GET /_sandbox/seconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCounts {
    /// Whole seconds since the first users request (0 is the second it arrived in).
    pub second: u64,
    /// Users requests that reached the rate-limit stage (authenticated ones).
    pub requests: u64,
    /// Of those, the ones the rate limiter admitted.
    pub admitted: u64,
    /// Of those, the ones the rate limiter refused with 429 (the genuine 429s).
    pub throttled_limit: u64,
    /// Admitted requests answered 429 anyway by `--throttle-rate`.
    pub throttled_spurious: u64,
    /// Admitted requests answered with an injected 500 or 503 or dropped unanswered
    /// (reset); commit-drops, which store the user, are not counted here.
    pub failed: u64,
    /// The rate limit in force at the end of the second, or so far for the
    /// current one (`null`: unlimited).
    pub limit: Option<u32>,
}

/// What happened to an admitted request after the limiter, for [`Seconds::tally`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tally {
    /// A `--throttle-rate` 429.
    Spurious,
    /// An injected 500/503 or a reset.
    Failed,
}

/// The per-second table: consecutive seconds, oldest first, at most [`KEEP`].
#[derive(Debug, Default)]
pub(crate) struct Seconds {
    /// The second of `rows[0]`.
    first: u64,
    rows: VecDeque<SecondCounts>,
}

impl Seconds {
    /// Adds the missing seconds up to and including `second`, each with
    /// `limit`, dropping the oldest past [`KEEP`].
    pub(crate) fn fill_to(&mut self, second: u64, limit: Option<u32>) {
        let next = self.first + self.rows.len() as u64;
        if second < next {
            return;
        }
        let keep = KEEP as u64;
        // A long idle gap: skip straight to the seconds that will be kept.
        let from = next.max((second + 1).saturating_sub(keep));
        if from > next {
            self.rows.clear();
            self.first = from;
        }
        for s in from..=second {
            self.rows.push_back(SecondCounts {
                second: s,
                limit,
                ..SecondCounts::default()
            });
        }
        while self.rows.len() > KEEP {
            self.rows.pop_front();
            self.first += 1;
        }
    }

    /// The row of `second`, if it is kept and was filled.
    fn row(&mut self, second: u64) -> Option<&mut SecondCounts> {
        let i = usize::try_from(second.checked_sub(self.first)?).ok()?;
        self.rows.get_mut(i)
    }

    /// Sets the limit of `second` (a change of limit during it).
    pub(crate) fn set_limit(&mut self, second: u64, limit: Option<u32>) {
        if let Some(r) = self.row(second) {
            r.limit = limit;
        }
    }

    /// Counts one request arriving in `second` (filled already), admitted or not.
    pub(crate) fn arrival(&mut self, second: u64, admitted: bool) {
        if let Some(r) = self.row(second) {
            r.requests += 1;
            if admitted {
                r.admitted += 1;
            } else {
                r.throttled_limit += 1;
            }
        }
    }

    /// Counts what became of a request admitted in `second`; a second that has
    /// been dropped meanwhile is not counted.
    pub(crate) fn tally(&mut self, second: u64, what: Tally) {
        if let Some(r) = self.row(second) {
            match what {
                Tally::Spurious => r.throttled_spurious += 1,
                Tally::Failed => r.failed += 1,
            }
        }
    }

    /// The kept seconds, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<SecondCounts> {
        self.rows.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_second_with_gaps_filled() {
        let mut s = Seconds::default();
        s.fill_to(0, Some(40));
        s.arrival(0, true);
        s.arrival(0, false);
        s.fill_to(3, Some(40));
        s.arrival(3, true);
        s.tally(3, Tally::Failed);
        s.tally(0, Tally::Spurious);
        s.set_limit(3, Some(13));
        let rows = s.to_vec();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows.iter().map(|r| r.second).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            (rows[0].requests, rows[0].admitted, rows[0].throttled_limit),
            (2, 1, 1)
        );
        assert_eq!(rows[0].throttled_spurious, 1);
        assert_eq!(
            rows[1],
            SecondCounts {
                second: 1,
                limit: Some(40),
                ..SecondCounts::default()
            }
        );
        assert_eq!(
            (rows[3].requests, rows[3].failed, rows[3].limit),
            (1, 1, Some(13))
        );
        // Filling backwards or to the same second changes nothing.
        s.fill_to(2, None);
        assert_eq!(s.to_vec(), rows);
    }

    #[test]
    fn keeps_the_last_hour() {
        let mut s = Seconds::default();
        s.fill_to(0, None);
        s.arrival(0, true);
        s.fill_to(KEEP as u64 + 9, None);
        let rows = s.to_vec();
        assert_eq!(rows.len(), KEEP);
        assert_eq!(rows[0].second, 10);
        assert_eq!(rows[KEEP - 1].second, KEEP as u64 + 9);
        // Second 0 is gone: late tallies for it are dropped.
        s.tally(0, Tally::Failed);
        assert_eq!(s.to_vec(), rows);
        // A gap longer than the table skips ahead instead of filling it all.
        s.fill_to(10 * KEEP as u64, Some(5));
        let rows = s.to_vec();
        assert_eq!(rows.len(), KEEP);
        assert_eq!(rows[0].second, 9 * KEEP as u64 + 1);
        assert!(rows.iter().all(|r| r.limit == Some(5)));
    }
}
