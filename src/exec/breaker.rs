//! The circuit breaker: a wrong column mapping or a systematic data problem
//! should stop a run after a few hundred doomed rows, not after thousands of
//! doomed requests. It watches the last `window` finished rows (a ring) and
//! trips when more than `max_error_rate` of them are `rejected` or `invalid`,
//! naming the most common error. Transient `failed` rows do not count: an
//! outage is the retry logic's business.
//!
//! After `--resume`, the rows the earlier part already judged (`rejected` or
//! `invalid`) come back to the recorder, but its successes do not (they are
//! skipped). Counted again, those old errors would crowd the window within
//! the first seconds and trip a run that never tripped uninterrupted, so the
//! breaker is told to pass over them ([`CircuitBreaker::passing_over`]).

use std::collections::{HashMap, VecDeque};

use crate::outcome::{Outcome, Status};
use crate::rowset::RowSet;
use crate::settings::Breaker;

/// The sliding window over finished rows.
pub(crate) struct CircuitBreaker {
    cfg: Breaker,
    /// One entry per finished row: the error of a rejected/invalid row.
    ring: VecDeque<Option<String>>,
    errors: usize,
    tripped: bool,
    /// Rows an earlier part of a resumed run already counted.
    judged: RowSet,
}

impl CircuitBreaker {
    /// A breaker with `cfg`'s threshold and window.
    pub(crate) fn new(cfg: Breaker) -> CircuitBreaker {
        CircuitBreaker {
            cfg,
            ring: VecDeque::with_capacity(cfg.window as usize),
            errors: 0,
            tripped: false,
            judged: RowSet::default(),
        }
    }

    /// Pass over the outcomes of `rows`: an earlier part of the run counted them.
    pub(crate) fn passing_over(mut self, rows: RowSet) -> CircuitBreaker {
        self.judged = rows;
        self
    }

    /// Count one finished row; returns the trip message the first time the
    /// error share of a full window exceeds the threshold.
    pub(crate) fn observe(&mut self, o: &Outcome) -> Option<String> {
        if self.judged.contains(o.row) {
            return None;
        }
        let entry = matches!(o.status, Status::Rejected | Status::Invalid)
            .then(|| o.error.clone().unwrap_or_default());
        if entry.is_some() {
            self.errors += 1;
        }
        self.ring.push_back(entry);
        if self.ring.len() > self.cfg.window as usize
            && let Some(Some(_)) = self.ring.pop_front()
        {
            self.errors -= 1;
        }
        let full = self.ring.len() == self.cfg.window as usize;
        let share = self.errors as f64 / self.ring.len().max(1) as f64;
        if self.tripped || !full || share <= self.cfg.max_error_rate {
            return None;
        }
        self.tripped = true;
        let (message, count) = self.dominant();
        Some(format!(
            "circuit breaker: {} of the last {} rows were rejected or invalid (more than {:.0}%); \
             most common ({count} rows): {message} — check the column mapping and the data",
            self.errors,
            self.ring.len(),
            self.cfg.max_error_rate * 100.0
        ))
    }

    fn dominant(&self) -> (String, usize) {
        let mut by_message: HashMap<&str, usize> = HashMap::new();
        for e in self.ring.iter().flatten() {
            *by_message.entry(e.as_str()).or_default() += 1;
        }
        by_message
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(m, n)| (m.to_string(), n))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: Status, error: &str) -> Outcome {
        Outcome::local(
            1,
            "u",
            status,
            (!error.is_empty()).then(|| error.to_string()),
        )
    }

    fn breaker(rate: f64, window: u32) -> CircuitBreaker {
        CircuitBreaker::new(Breaker {
            max_error_rate: rate,
            window,
        })
    }

    #[test]
    fn trips_once_the_window_is_mostly_errors_and_names_the_dominant_one() {
        let mut b = breaker(0.5, 10);
        let mut msg = None;
        for i in 0..10 {
            let o = if i % 5 == 0 {
                row(Status::Rejected, "locale: unknown language")
            } else {
                row(Status::Rejected, "first_name: required")
            };
            msg = b.observe(&o).or(msg);
        }
        let msg = msg.expect("tripped");
        assert!(msg.contains("10 of the last 10"), "{msg}");
        assert!(msg.contains("(8 rows): first_name: required"), "{msg}");
        // Only once.
        assert_eq!(b.observe(&row(Status::Rejected, "x")), None);
    }

    #[test]
    fn a_healthy_run_with_some_bad_rows_never_trips() {
        let mut b = breaker(0.5, 20);
        for i in 0..1000 {
            let o = if i % 4 == 0 {
                row(Status::Invalid, "phone_number: bad")
            } else {
                row(Status::Created, "")
            };
            assert_eq!(b.observe(&o), None);
        }
    }

    #[test]
    fn transient_failures_do_not_count() {
        let mut b = breaker(0.5, 10);
        for _ in 0..50 {
            assert_eq!(b.observe(&row(Status::Failed, "HTTP 503")), None);
        }
    }

    #[test]
    fn rows_judged_by_an_earlier_part_are_passed_over() {
        let mut judged = RowSet::default();
        for r in 1..=100 {
            judged.insert(r);
        }
        let mut b = breaker(0.5, 10).passing_over(judged);
        // The earlier part's errors come back first: none counts.
        for r in 1..=100 {
            let mut o = row(Status::Invalid, "phone_number: bad");
            o.row = r;
            assert_eq!(b.observe(&o), None);
        }
        // New rows are judged as usual.
        let mut tripped = None;
        for r in 101..=110 {
            let mut o = row(Status::Rejected, "x");
            o.row = r;
            tripped = b.observe(&o).or(tripped);
        }
        assert!(tripped.is_some());
    }

    #[test]
    fn the_window_slides() {
        let mut b = breaker(0.5, 10);
        for _ in 0..5 {
            assert_eq!(b.observe(&row(Status::Rejected, "x")), None);
        }
        for _ in 0..20 {
            assert_eq!(b.observe(&row(Status::Created, "")), None);
        }
        // Errors now start from an all-success window: 6 of 10 trips.
        let mut tripped = None;
        for _ in 0..6 {
            tripped = b.observe(&row(Status::Rejected, "x")).or(tripped);
        }
        assert!(tripped.is_some());
    }
}
