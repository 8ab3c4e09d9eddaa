//! The circuit breaker: a wrong column mapping or a systematic data problem
//! should stop a run after a few hundred doomed rows, not after thousands of
//! doomed requests. It watches the last `window` rows *in input order* (a
//! ring) and trips when more than `max_error_rate` of them are `rejected` or
//! `invalid`, naming the most common error. Transient `failed` rows do not
//! count: an outage is the retry logic's business.
//!
//! Rows finish out of order: a row decided locally (invalid, duplicate)
//! finishes at once, a sent one at the partner's pace. Judged in the order
//! they finish, a slow partner would let the invalid rows read ahead crowd
//! the window and trip a healthy file. So the feed numbers every row it hands
//! on (`seq`, dense, in input order) and the breaker judges them in that
//! order: a row that arrives early waits in a reorder buffer until every
//! row before it has arrived. The same file then gets the same verdict at
//! any latency, concurrency, rate or machine load. [`Lookahead`] keeps the
//! buffer bounded: the feed does not hand on a row more than
//! [`Lookahead::MAX`] rows past the last one judged.
//!
//! After `--resume`, the rows the earlier part already judged (`rejected` or
//! `invalid`) come back to the recorder, but its successes do not (they are
//! skipped). Counted again, those old errors would crowd the window within
//! the first seconds and trip a run that never tripped uninterrupted, so the
//! breaker is told to pass over them ([`CircuitBreaker::passing_over`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::outcome::{Outcome, Status};
use crate::rowset::RowSet;
use crate::settings::Breaker;

/// The sliding window over rows in input order.
pub(crate) struct CircuitBreaker {
    cfg: Breaker,
    /// One entry per judged row: the error of a rejected/invalid row.
    ring: VecDeque<Option<String>>,
    errors: usize,
    tripped: bool,
    /// Rows an earlier part of a resumed run already counted.
    judged: RowSet,
    /// Rows that finished before an earlier one, by `seq - next`.
    early: VecDeque<Option<Verdict>>,
    /// The `seq` of the next row to judge.
    next: u64,
    /// The `seq` of the row that tripped it.
    tripped_at: Option<u64>,
    /// Errors among `early`.
    early_errors: usize,
}

/// What one finished row means to the breaker.
enum Verdict {
    /// Counted by an earlier part of the run: passed over.
    PassOver,
    /// Counts in the window: `Some(error)` when rejected or invalid.
    Counts(Option<String>),
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
            early: VecDeque::new(),
            next: 0,
            tripped_at: None,
            early_errors: 0,
        }
    }

    /// Rows judged so far: every `seq` below this one.
    pub(crate) fn judged_up_to(&self) -> u64 {
        self.next
    }

    /// Pass over the outcomes of `rows`: an earlier part of the run counted them.
    pub(crate) fn passing_over(mut self, rows: RowSet) -> CircuitBreaker {
        self.judged = rows;
        self
    }

    /// Take the finished row the feed numbered `seq`, and judge every row
    /// that is now next in input order; returns the trip message the first
    /// time the error share of a full window exceeds the threshold.
    pub(crate) fn observe(&mut self, seq: u64, o: &Outcome) -> Option<String> {
        let Some(at) = seq
            .checked_sub(self.next)
            .and_then(|i| usize::try_from(i).ok())
        else {
            debug_assert!(false, "row seq {seq} judged twice");
            return None;
        };
        let verdict = if self.judged.contains(o.row) {
            Verdict::PassOver
        } else {
            Verdict::Counts(
                matches!(o.status, Status::Rejected | Status::Invalid)
                    .then(|| o.error.clone().unwrap_or_default()),
            )
        };
        let error = matches!(verdict, Verdict::Counts(Some(_)));
        if error {
            self.early_errors += 1;
        }
        if self.early.len() <= at {
            self.early.resize_with(at + 1, || None);
        }
        self.early[at] = Some(verdict);
        let threshold = self.cfg.max_error_rate * f64::from(self.cfg.window);
        if error
            && !self.tripped
            && self.early.front().is_some_and(Option::is_none)
            && (self.early_errors + self.errors) as f64 > threshold
        {
            // Rows before this one are still on their way: judge now if the
            // window up to the newest row trips whatever they turn out to be.
            if let Some(message) = self.certain_trip() {
                return Some(message);
            }
        }
        let mut message = None;
        while let Some(Some(_)) = self.early.front() {
            let Some(Some(verdict)) = self.early.pop_front() else {
                break;
            };
            self.next += 1;
            if let Verdict::Counts(entry) = verdict {
                if entry.is_some() {
                    self.early_errors -= 1;
                }
                message = self.judge(entry).or(message);
            }
        }
        message
    }

    /// The window of the last `window` rows up to the newest one received
    /// (rows still on their way counted as fine) when its known errors alone
    /// exceed the threshold: judged in input order, it would trip there or
    /// before, so the verdict is the same, only sooner. A slow row early in
    /// the file then does not let hundreds more doomed requests go out.
    fn certain_trip(&mut self) -> Option<String> {
        let window = self.cfg.window as usize;
        let mut rows = 0;
        let mut errors: Vec<&str> = Vec::new();
        for e in self.early.iter().rev() {
            match e {
                Some(Verdict::PassOver) => continue,
                Some(Verdict::Counts(Some(m))) => errors.push(m),
                _ => {}
            }
            rows += 1;
            if rows == window {
                break;
            }
        }
        for e in self.ring.iter().rev().take(window - rows) {
            if let Some(m) = e {
                errors.push(m);
            }
            rows += 1;
        }
        if rows < window || errors.len() as f64 <= self.cfg.max_error_rate * window as f64 {
            return None;
        }
        self.tripped = true;
        self.tripped_at = Some(self.next + self.early.len() as u64 - 1);
        let n = errors.len();
        let (message, count) = dominant(errors.into_iter());
        Some(trip_message(
            n,
            window,
            self.cfg.max_error_rate,
            &message,
            count,
        ))
    }

    /// Count one row, in input order.
    fn judge(&mut self, entry: Option<String>) -> Option<String> {
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
        self.tripped_at = self.next.checked_sub(1);
        let (message, count) = dominant(self.ring.iter().flatten().map(String::as_str));
        Some(trip_message(
            self.errors,
            self.ring.len(),
            self.cfg.max_error_rate,
            &message,
            count,
        ))
    }
}

fn trip_message(errors: usize, rows: usize, max_rate: f64, message: &str, count: usize) -> String {
    format!(
        "circuit breaker: {errors} of the last {rows} rows were rejected or invalid (more than {:.0}%); \
         most common ({count} rows): {message} — check the column mapping and the data",
        max_rate * 100.0
    )
}

/// The most common of `errors` and how often it came.
fn dominant<'a>(errors: impl Iterator<Item = &'a str>) -> (String, usize) {
    let mut by_message: HashMap<&str, usize> = HashMap::new();
    for e in errors {
        *by_message.entry(e).or_default() += 1;
    }
    by_message
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(m, n)| (m.to_string(), n))
        .unwrap_or_default()
}

/// The bound on how far the feed reads ahead of the breaker: the feed hands
/// on row `seq` only once every row below `seq - MAX` is judged, so the
/// reorder buffer never holds more than `MAX` rows. A sent row that takes
/// long to finish (a slow partner, retries) holds the feed back after `MAX`
/// rows, not the whole file.
pub(crate) struct Lookahead {
    judged: AtomicU64,
    /// The feed is waiting: the breaker's side notifies.
    waiting: AtomicBool,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Default for Lookahead {
    fn default() -> Self {
        Lookahead {
            judged: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }
}

impl Lookahead {
    /// Most rows handed on past the last row judged. Above the rows the
    /// outcome queue holds (256 batches of up to 256), so that queue, not
    /// this bound, paces a feed that is only ahead of the recorder.
    pub(crate) const MAX: u64 = 1 << 17;

    /// Whether the feed may hand on row `seq` without waiting.
    pub(crate) fn open_for(&self, seq: u64) -> bool {
        seq < self
            .judged
            .load(Ordering::Acquire)
            .saturating_add(Self::MAX)
    }

    /// Block until row `seq` may be handed on, or `give_up` says the
    /// breaker's side is gone (checked every 100 ms).
    pub(crate) fn wait_for(&self, seq: u64, give_up: impl Fn() -> bool) {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.open_for(seq) && !give_up() {
            self.waiting.store(true, Ordering::Release);
            guard = match self.moved.wait_timeout(guard, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.waiting.store(false, Ordering::Release);
    }

    /// Every row below `next` is judged.
    pub(crate) fn judged(&self, next: u64) {
        self.judged.store(next, Ordering::Release);
        if self.waiting.load(Ordering::Acquire) {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.moved.notify_all();
        }
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

    impl CircuitBreaker {
        /// The next row in input order.
        fn observe_next(&mut self, o: &Outcome) -> Option<String> {
            let seq = self.next + self.early.len() as u64;
            self.observe(seq, o)
        }
    }

    /// Where (the `seq` whose arrival tripped it, and the rows judged by
    /// then) and with which message `outcomes` trip a breaker when they
    /// arrive in `order`.
    fn trip_point(order: &[usize], outcomes: &[Outcome]) -> Option<(u64, String)> {
        let mut b = breaker(0.5, 20);
        for &i in order {
            if let Some(msg) = b.observe(i as u64, &outcomes[i]) {
                return Some((b.tripped_at.expect("tripped"), msg));
            }
        }
        None
    }

    #[test]
    fn the_verdict_does_not_depend_on_the_order_rows_finish_in() {
        // A healthy file: 8 % invalid rows, a bad stretch of 40 % near the
        // start. Sent rows finish late (a slow partner): every invalid row
        // of the next 500 arrives before them. Judged as they finish, the
        // window would fill with invalid rows; judged in input order, it
        // never trips.
        let outcomes: Vec<Outcome> = (0..3000u64)
            .map(|i| {
                let bad = i % 12 == 0 || (100..150).contains(&i) && i % 5 < 2;
                let mut o = if bad {
                    row(Status::Invalid, "first_name: required")
                } else {
                    row(Status::Created, "")
                };
                o.row = i + 1;
                o
            })
            .collect();
        let in_order: Vec<usize> = (0..outcomes.len()).collect();
        let mut late_sends = Vec::new();
        for block in in_order.chunks(500) {
            let (local, sent): (Vec<usize>, Vec<usize>) = block
                .iter()
                .partition(|&&i| outcomes[i].status == Status::Invalid);
            late_sends.extend(local);
            late_sends.extend(sent.into_iter().rev());
        }
        assert_eq!(trip_point(&in_order, &outcomes), None);
        assert_eq!(trip_point(&late_sends, &outcomes), None);
        // Finished in any order, a file whose rows go bad from row 1,000 on
        // trips at the same row with the same message.
        let outcomes: Vec<Outcome> = (0..3000u64)
            .map(|i| {
                let mut o = match i {
                    ..1000 if i % 12 == 0 => row(Status::Invalid, "phone_number: bad"),
                    ..1000 => row(Status::Created, ""),
                    _ if i % 3 == 0 => row(Status::Created, ""),
                    _ => row(Status::Rejected, "locale: unknown language"),
                };
                o.row = i + 1;
                o
            })
            .collect();
        let expected = trip_point(&in_order, &outcomes).expect("trips in input order");
        assert!(expected.0 >= 1000 && expected.0 < 1020, "{expected:?}");
        let mut shuffled = in_order.clone();
        for (k, block) in shuffled.chunks_mut(97).enumerate() {
            block.rotate_left(k % block.len());
            if k % 2 == 0 {
                block.reverse();
            }
        }
        // It trips too, on the same error; a row still on its way does not
        // delay a verdict the rows around it already make certain.
        let (at, message) = trip_point(&shuffled, &outcomes).expect("trips out of order");
        assert!((1000..1020 + 97).contains(&at), "{at}");
        let most_common = |m: &str| m.split("rows): ").nth(1).map(str::to_owned);
        assert_eq!(most_common(&message), most_common(&expected.1));
    }

    #[test]
    fn a_certain_verdict_does_not_wait_for_a_slow_row() {
        let mut b = breaker(0.5, 10);
        // Row 0 is in flight; of rows 1..=9, six are errors: 6 of a window
        // of 10 trip whatever row 0 turns out to be…
        let mut tripped = None;
        for seq in 1..=9 {
            let o = if seq >= 4 {
                row(Status::Rejected, "x")
            } else {
                row(Status::Created, "")
            };
            tripped = b.observe(seq, &o).or(tripped);
            if seq < 9 {
                assert_eq!(tripped, None, "fewer than 10 rows: nothing is certain");
            }
        }
        let message = tripped.expect("tripped before row 0 finished");
        assert!(message.contains("6 of the last 10"), "{message}");
        assert_eq!(b.judged_up_to(), 0);
        // …but only when the window is full: with fewer rows judged or
        // received than the window, nothing is certain.
        let mut b = breaker(0.5, 10);
        for seq in 1..=5 {
            assert_eq!(b.observe(seq, &row(Status::Rejected, "x")), None);
        }
    }

    #[test]
    fn a_row_that_finishes_early_waits_for_the_rows_before_it() {
        let mut b = breaker(0.5, 4);
        // Rows 1 and 2 (seq 1, 2) are errors but row 0 is still in flight:
        // nothing is judged yet (2 of 4 is not more than half).
        assert_eq!(b.observe(1, &row(Status::Rejected, "x")), None);
        assert_eq!(b.observe(2, &row(Status::Rejected, "x")), None);
        assert_eq!(b.judged_up_to(), 0);
        // Row 0 arrives: all three are judged; row 3 then fills the window.
        assert_eq!(b.observe(0, &row(Status::Created, "")), None);
        assert_eq!(b.judged_up_to(), 3);
        assert!(b.observe(3, &row(Status::Invalid, "y")).is_some());
        assert_eq!(b.judged_up_to(), 4);
    }

    #[test]
    fn the_lookahead_holds_the_feed_until_the_breaker_catches_up() {
        let gate = std::sync::Arc::new(Lookahead::default());
        assert!(gate.open_for(Lookahead::MAX - 1));
        assert!(!gate.open_for(Lookahead::MAX));
        let g = gate.clone();
        let waiter = std::thread::spawn(move || {
            g.wait_for(Lookahead::MAX + 5, || false);
            g.open_for(Lookahead::MAX + 5)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "handed on a row too far ahead");
        gate.judged(6);
        assert!(waiter.join().unwrap());
        // A breaker that is gone releases the feed.
        gate.wait_for(u64::MAX, || true);
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
            msg = b.observe_next(&o).or(msg);
        }
        let msg = msg.expect("tripped");
        assert!(msg.contains("10 of the last 10"), "{msg}");
        assert!(msg.contains("(8 rows): first_name: required"), "{msg}");
        // Only once.
        assert_eq!(b.observe_next(&row(Status::Rejected, "x")), None);
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
            assert_eq!(b.observe_next(&o), None);
        }
    }

    #[test]
    fn transient_failures_do_not_count() {
        let mut b = breaker(0.5, 10);
        for _ in 0..50 {
            assert_eq!(b.observe_next(&row(Status::Failed, "HTTP 503")), None);
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
            assert_eq!(b.observe_next(&o), None);
        }
        // New rows are judged as usual.
        let mut tripped = None;
        for r in 101..=110 {
            let mut o = row(Status::Rejected, "x");
            o.row = r;
            tripped = b.observe_next(&o).or(tripped);
        }
        assert!(tripped.is_some());
    }

    #[test]
    fn the_window_slides() {
        let mut b = breaker(0.5, 10);
        for _ in 0..5 {
            assert_eq!(b.observe_next(&row(Status::Rejected, "x")), None);
        }
        for _ in 0..20 {
            assert_eq!(b.observe_next(&row(Status::Created, "")), None);
        }
        // Errors now start from an all-success window: 6 of 10 trips.
        let mut tripped = None;
        for _ in 0..6 {
            tripped = b.observe_next(&row(Status::Rejected, "x")).or(tripped);
        }
        assert!(tripped.is_some());
    }
}
