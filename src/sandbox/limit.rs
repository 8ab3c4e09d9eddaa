//! The sandbox's per-second threshold on `POST /v2/fulfillment/users`, and the
//! peak-window meter behind `max_window` in `/_sandbox/stats`.
//!
//! Connect publishes neither its number nor its algorithm, only that a per-second
//! threshold exists (docs/rate-limiting.md "Rate limiting"). The sandbox therefore assumes the strictest
//! reading by default: at most N requests in *any* sliding 1-second window
//! ([`LimitAlgorithm::SlidingWindow`]). A client that stays under it stays under
//! every other plausible limiter too. Two laxer algorithms are kept for
//! comparison and for testing a client against them:
//!
//! - [`LimitAlgorithm::FixedWindow`]: at most N per aligned 1-second window counted
//!   from the limiter's start, which lets up to 2N through around a boundary;
//! - [`LimitAlgorithm::TokenBucket`]: GCRA (the "virtual scheduling" form of a
//!   token bucket) with a rate of N per second and a burst of N, which lets an idle
//!   client send N at once and then one every 1/N s, so up to 2N - 1 in one
//!   sliding second.
//!
//! A refused request is never booked by any of them, so a client hammering the
//! limit does not push its own later requests out.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The length of the window every algorithm counts over.
const WINDOW: Duration = Duration::from_secs(1);

/// Which rate-limiting algorithm the sandbox applies (`--rate-limit-algorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitAlgorithm {
    /// At most N in any sliding 1 s window: the strictest, and the default.
    #[default]
    SlidingWindow,
    /// At most N per aligned 1 s window from the limiter's start.
    FixedWindow,
    /// GCRA token bucket, rate N/s, burst N.
    TokenBucket,
}

impl LimitAlgorithm {
    /// Every algorithm, in the order of [`LimitAlgorithm::NAMES`].
    const ALL: [LimitAlgorithm; 3] = [
        LimitAlgorithm::SlidingWindow,
        LimitAlgorithm::FixedWindow,
        LimitAlgorithm::TokenBucket,
    ];

    /// The names used on the command line and in `/_sandbox/config`.
    pub(crate) const NAMES: [&'static str; 3] = ["sliding-window", "fixed-window", "token-bucket"];

    /// The name used on the command line and in `/_sandbox/config`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitAlgorithm::SlidingWindow => "sliding-window",
            LimitAlgorithm::FixedWindow => "fixed-window",
            LimitAlgorithm::TokenBucket => "token-bucket",
        }
    }
}

impl fmt::Display for LimitAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`LimitAlgorithm::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown rate-limit algorithm '{0}' (expected sliding-window, fixed-window or token-bucket)"
)]
pub struct UnknownAlgorithm(String);

impl FromStr for LimitAlgorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// One rate limit of N requests per second, under the chosen algorithm.
#[derive(Debug)]
pub(crate) enum RateLimiter {
    SlidingWindow(SlidingWindow),
    FixedWindow(FixedWindow),
    TokenBucket(Gcra),
}

impl RateLimiter {
    /// A fresh limiter for `per_second` requests per second (`per_second` ≥ 1;
    /// 0 is treated as 1) that starts at `now` with nothing booked.
    pub(crate) fn new(algorithm: LimitAlgorithm, per_second: u32, now: Instant) -> RateLimiter {
        match algorithm {
            LimitAlgorithm::SlidingWindow => {
                RateLimiter::SlidingWindow(SlidingWindow::new(per_second))
            }
            LimitAlgorithm::FixedWindow => {
                RateLimiter::FixedWindow(FixedWindow::new(per_second, now))
            }
            LimitAlgorithm::TokenBucket => RateLimiter::TokenBucket(Gcra::new(per_second, now)),
        }
    }

    /// Admits the request arriving at `now` (and books it), or refuses it without
    /// booking anything. `now` must not go backwards between calls.
    pub(crate) fn check(&mut self, now: Instant) -> bool {
        match self {
            RateLimiter::SlidingWindow(l) => l.check(now),
            RateLimiter::FixedWindow(l) => l.check(now),
            RateLimiter::TokenBucket(l) => l.check(now),
        }
    }

    /// Changes the limit to `per_second` (0 is treated as 1) and keeps what is
    /// booked, the strict reading of a partner lowering its limit: after a drop
    /// the requests of the last second still count against the new, lower limit
    /// (sliding window), the current window keeps its count (fixed window), and
    /// the bucket keeps its debt, now repaid at the new rate (token bucket).
    pub(crate) fn set_per_second(&mut self, per_second: u32) {
        let n = per_second.max(1);
        match self {
            RateLimiter::SlidingWindow(l) => l.limit = usize::try_from(n).unwrap_or(usize::MAX),
            RateLimiter::FixedWindow(l) => l.limit = n,
            RateLimiter::TokenBucket(l) => l.set_per_second(n),
        }
    }
}

/// At most N admitted in any sliding 1 s window: a log of the instants of the
/// last (at most N) admitted requests. A request at `now` is admitted iff fewer
/// than N of them lie in `(now - 1 s, now]`.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: usize,
    /// Admitted instants, oldest first; never longer than `limit`, except
    /// after the limit was lowered, until the older arrivals leave the window.
    admitted: VecDeque<Instant>,
}

impl SlidingWindow {
    fn new(per_second: u32) -> SlidingWindow {
        SlidingWindow {
            limit: usize::try_from(per_second.max(1)).unwrap_or(usize::MAX),
            // Grows on demand: a huge limit on a quiet sandbox costs nothing.
            admitted: VecDeque::new(),
        }
    }

    fn check(&mut self, now: Instant) -> bool {
        // An instant exactly 1 s old is outside (now - 1 s, now].
        while let Some(&oldest) = self.admitted.front() {
            if now.saturating_duration_since(oldest) >= WINDOW {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if self.admitted.len() >= self.limit {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// At most N per aligned 1 s window `[start + k s, start + (k+1) s)`.
#[derive(Debug)]
pub(crate) struct FixedWindow {
    limit: u32,
    start: Instant,
    /// Index `k` of the window `count` belongs to.
    window: u64,
    count: u32,
}

impl FixedWindow {
    fn new(per_second: u32, now: Instant) -> FixedWindow {
        FixedWindow {
            limit: per_second.max(1),
            start: now,
            window: 0,
            count: 0,
        }
    }

    fn check(&mut self, now: Instant) -> bool {
        let window = now.saturating_duration_since(self.start).as_secs();
        if window != self.window {
            self.window = window;
            self.count = 0;
        }
        if self.count >= self.limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// GCRA state for one limit: rate N per second, burst N.
#[derive(Debug)]
pub(crate) struct Gcra {
    /// Time between two requests at the sustained rate (1 s / N).
    interval: Duration,
    /// How far ahead of `now` the theoretical arrival time may run: (N - 1)
    /// intervals, which lets a burst of N pass.
    tolerance: Duration,
    /// Theoretical arrival time of the next conforming request.
    tat: Instant,
}

impl Gcra {
    /// A limiter for `per_second` requests per second (`per_second` ≥ 1).
    fn new(per_second: u32, now: Instant) -> Gcra {
        let n = per_second.max(1);
        let interval = WINDOW / n;
        Gcra {
            interval,
            tolerance: interval * (n - 1),
            tat: now,
        }
    }

    /// Changes the rate (`per_second` ≥ 1) and keeps the theoretical arrival
    /// time: slots booked ahead at the old rate stay booked.
    fn set_per_second(&mut self, per_second: u32) {
        let n = per_second.max(1);
        self.interval = WINDOW / n;
        self.tolerance = self.interval * (n - 1);
    }

    /// Admits the request arriving at `now` (and books its slot), or refuses it
    /// without booking anything, so throttled requests do not push later ones out.
    fn check(&mut self, now: Instant) -> bool {
        let tat = self.tat.max(now);
        if tat.duration_since(now) > self.tolerance {
            return false;
        }
        self.tat = tat + self.interval;
        true
    }
}

/// Measures the most requests seen in any sliding 1 s window (`max_window`).
///
/// Keeps the arrival instants of the last second; each arrival is pushed once
/// and popped once, so recording is O(1) amortised. Its memory is one `Instant`
/// per request of the last second (about 1.6 MB at 100 000 requests/s).
#[derive(Debug, Default)]
pub(crate) struct PeakWindow {
    arrivals: VecDeque<Instant>,
}

impl PeakWindow {
    /// Records an arrival at `now` (not before the previous one) and returns how
    /// many arrivals, this one included, lie in `(now - 1 s, now]`. The maximum of
    /// these counts is the maximum over every sliding window, since the busiest
    /// window can always be slid to end at an arrival.
    pub(crate) fn record(&mut self, now: Instant) -> u64 {
        while let Some(&oldest) = self.arrivals.front() {
            if now.saturating_duration_since(oldest) >= WINDOW {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        self.arrivals.push_back(now);
        u64::try_from(self.arrivals.len()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// How many of `arrivals` (offsets from a common start) `algorithm` admits at `n`/s.
    fn admitted(algorithm: LimitAlgorithm, n: u32, arrivals: &[Duration]) -> Vec<bool> {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(algorithm, n, t0);
        arrivals.iter().map(|d| l.check(t0 + *d)).collect()
    }

    #[test]
    fn names_round_trip() {
        for a in LimitAlgorithm::ALL {
            assert_eq!(a.as_str().parse::<LimitAlgorithm>(), Ok(a));
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
            assert_eq!(
                serde_json::from_str::<LimitAlgorithm>(&format!("\"{a}\"")).unwrap(),
                a
            );
        }
        assert_eq!(
            LimitAlgorithm::NAMES,
            LimitAlgorithm::ALL.map(LimitAlgorithm::as_str)
        );
        assert_eq!(LimitAlgorithm::default(), LimitAlgorithm::SlidingWindow);
        assert!("leaky-bucket".parse::<LimitAlgorithm>().is_err());
        assert!(serde_json::from_str::<LimitAlgorithm>("\"sliding_window\"").is_err());
    }

    // --- sliding window ----------------------------------------------------

    #[test]
    fn sliding_window_refuses_the_n_plus_first_until_a_full_second_has_passed() {
        let t0 = Instant::now();
        let mut l = SlidingWindow::new(5);
        for i in 0..5 {
            assert!(l.check(t0 + ms(10) * i), "request {i}");
        }
        assert!(!l.check(t0 + ms(999)));
        // Exactly 1 s after the first, the first has left the window.
        assert!(l.check(t0 + ms(1000)));
        assert!(!l.check(t0 + ms(1000)));
        // The second (at 10 ms) leaves at 1.010 s, not before.
        assert!(!l.check(t0 + ms(1009)));
        assert!(l.check(t0 + ms(1010)));
    }

    #[test]
    fn sliding_window_refusals_are_not_booked() {
        let t0 = Instant::now();
        let mut l = SlidingWindow::new(2);
        assert!(l.check(t0));
        assert!(l.check(t0));
        for i in 1..100 {
            assert!(!l.check(t0 + ms(i)));
        }
        // Hammering did not extend the window: both slots free at 1 s.
        assert!(l.check(t0 + ms(1000)));
        assert!(l.check(t0 + ms(1000)));
        assert!(!l.check(t0 + ms(1000)));
    }

    #[test]
    fn sliding_window_never_refuses_an_evenly_paced_client() {
        let pace: Vec<Duration> = (0..1000).map(|i| ms(100) * i).collect();
        assert!(
            admitted(LimitAlgorithm::SlidingWindow, 10, &pace)
                .iter()
                .all(|ok| *ok)
        );
    }

    #[test]
    fn sliding_window_admits_at_most_n_in_any_second() {
        // 3 s of one attempt per ms against 50/s: every window of 1 s holds ≤ 50.
        let arrivals: Vec<Duration> = (0..3000).map(ms).collect();
        let ok = admitted(LimitAlgorithm::SlidingWindow, 50, &arrivals);
        let passed: Vec<u64> = (0..3000u64).filter(|i| ok[*i as usize]).collect();
        assert_eq!(passed.len(), 150);
        for (i, start) in passed.iter().enumerate() {
            let in_window = passed[i..]
                .iter()
                .take_while(|t| **t < start + 1000)
                .count();
            assert!(in_window <= 50, "{in_window} from {start} ms");
        }
    }

    // --- fixed window ------------------------------------------------------

    #[test]
    fn fixed_window_counts_per_aligned_second() {
        let t0 = Instant::now();
        let mut l = FixedWindow::new(3, t0);
        assert!(l.check(t0));
        assert!(l.check(t0 + ms(500)));
        assert!(l.check(t0 + ms(998)));
        assert!(!l.check(t0 + ms(999)));
        // A new window starts at exactly 1 s, whatever came just before.
        assert!(l.check(t0 + ms(1000)));
        assert!(l.check(t0 + ms(1000)));
        assert!(l.check(t0 + ms(1000)));
        assert!(!l.check(t0 + ms(1999)));
        // Skipping windows is fine.
        assert!(l.check(t0 + ms(5000)));
    }

    #[test]
    fn fixed_window_lets_2n_through_around_a_boundary() {
        // N at the end of one window, N at the start of the next: 2N in 2 ms,
        // which a sliding window refuses.
        let mut arrivals = vec![ms(999); 5];
        arrivals.extend([ms(1000); 5]);
        let fixed = admitted(LimitAlgorithm::FixedWindow, 5, &arrivals);
        assert_eq!(fixed.iter().filter(|ok| **ok).count(), 10);
        let sliding = admitted(LimitAlgorithm::SlidingWindow, 5, &arrivals);
        assert_eq!(sliding.iter().filter(|ok| **ok).count(), 5);
    }

    #[test]
    fn fixed_window_never_refuses_an_evenly_paced_client_aligned_to_it() {
        let pace: Vec<Duration> = (0..1000).map(|i| ms(100) * i).collect();
        assert!(
            admitted(LimitAlgorithm::FixedWindow, 10, &pace)
                .iter()
                .all(|ok| *ok)
        );
    }

    // --- token bucket (GCRA) -----------------------------------------------

    #[test]
    fn token_bucket_burst_of_n_then_one_per_interval() {
        let t0 = Instant::now();
        let mut g = Gcra::new(5, t0);
        for _ in 0..5 {
            assert!(g.check(t0));
        }
        assert!(!g.check(t0));
        // One interval (200 ms) later exactly one more fits.
        let t1 = t0 + ms(200);
        assert!(g.check(t1));
        assert!(!g.check(t1));
        // After a full idle second the whole burst is available again.
        let t2 = t1 + Duration::from_secs(2);
        for _ in 0..5 {
            assert!(g.check(t2));
        }
        assert!(!g.check(t2));
    }

    #[test]
    fn token_bucket_admits_2n_minus_1_in_one_sliding_second() {
        // Burst of 5 at 0, then one per 200 ms: 4 more before 1 s. The sliding
        // window admits only the first 5 of the same arrivals.
        let mut arrivals = vec![Duration::ZERO; 5];
        arrivals.extend((1..5).map(|i| ms(200) * i));
        let bucket = admitted(LimitAlgorithm::TokenBucket, 5, &arrivals);
        assert!(bucket.iter().all(|ok| *ok), "{bucket:?}");
        let sliding = admitted(LimitAlgorithm::SlidingWindow, 5, &arrivals);
        assert_eq!(sliding.iter().filter(|ok| **ok).count(), 5);
    }

    #[test]
    fn token_bucket_never_refuses_an_evenly_paced_client() {
        let pace: Vec<Duration> = (0..1000).map(|i| ms(100) * i).collect();
        assert!(
            admitted(LimitAlgorithm::TokenBucket, 10, &pace)
                .iter()
                .all(|ok| *ok)
        );
    }

    #[test]
    fn token_bucket_sustained_rate_is_bounded() {
        // 4 s of 1000 attempts/s against a 50/s limit: at most 50 + 4 * 50 pass.
        let arrivals: Vec<Duration> = (0..4000).map(ms).collect();
        let ok = admitted(LimitAlgorithm::TokenBucket, 50, &arrivals);
        let passed = ok.iter().filter(|ok| **ok).count();
        assert!((200..=250).contains(&passed), "{passed}");
    }

    // --- all algorithms ----------------------------------------------------

    #[test]
    fn every_algorithm_admits_a_burst_of_n_and_refuses_the_next() {
        for a in LimitAlgorithm::ALL {
            let ok = admitted(a, 7, &[Duration::ZERO; 8]);
            assert_eq!(ok.iter().filter(|ok| **ok).count(), 7, "{a}");
            assert!(!ok[7], "{a}");
        }
    }

    #[test]
    fn a_limit_of_zero_means_one() {
        for a in LimitAlgorithm::ALL {
            let ok = admitted(a, 0, &[Duration::ZERO; 2]);
            assert_eq!(ok, [true, false], "{a}");
        }
    }

    // --- limit changes (--rate-limit-schedule) -----------------------------

    #[test]
    fn a_lowered_sliding_window_keeps_its_bookings() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(LimitAlgorithm::SlidingWindow, 5, t0);
        for i in 0..5 {
            assert!(l.check(t0 + ms(10) * i));
        }
        l.set_per_second(2);
        // Five booked in the last second: refused until only one is left in it.
        assert!(!l.check(t0 + ms(600)));
        assert!(!l.check(t0 + ms(1020)));
        assert!(l.check(t0 + ms(1030)));
        assert!(!l.check(t0 + ms(1030)));
        // Raised again: the new room is there at once.
        l.set_per_second(4);
        assert!(l.check(t0 + ms(1031)));
        assert!(l.check(t0 + ms(1032)));
        assert!(!l.check(t0 + ms(1033)));
    }

    #[test]
    fn a_lowered_fixed_window_keeps_its_count() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(LimitAlgorithm::FixedWindow, 5, t0);
        for _ in 0..3 {
            assert!(l.check(t0 + ms(100)));
        }
        l.set_per_second(2);
        assert!(!l.check(t0 + ms(200)));
        assert!(l.check(t0 + ms(1000)));
        assert!(l.check(t0 + ms(1000)));
        assert!(!l.check(t0 + ms(1000)));
    }

    #[test]
    fn a_lowered_token_bucket_keeps_its_debt() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(LimitAlgorithm::TokenBucket, 10, t0);
        for _ in 0..10 {
            assert!(l.check(t0));
        }
        // tat is now t0 + 1 s; at 2/s the tolerance is 500 ms, so the next slot
        // is free once tat - now <= 500 ms, i.e. at 500 ms.
        l.set_per_second(2);
        assert!(!l.check(t0 + ms(499)));
        assert!(l.check(t0 + ms(500)));
        // ...and then one per 500 ms.
        assert!(!l.check(t0 + ms(999)));
        assert!(l.check(t0 + ms(1000)));
    }

    // --- peak window -------------------------------------------------------

    #[test]
    fn peak_window_counts_arrivals_in_the_last_second() {
        let t0 = Instant::now();
        let mut p = PeakWindow::default();
        let counts: Vec<u64> = [0, 0, 0, 500, 999, 1000, 1000, 1499, 1500, 2600]
            .into_iter()
            .map(|m| p.record(t0 + ms(m)))
            .collect();
        // At 1000 ms the three arrivals at 0 have left; at 2600 everyone has.
        assert_eq!(counts, [1, 2, 3, 4, 5, 3, 4, 5, 5, 1]);
    }

    #[test]
    fn peak_window_max_is_the_busiest_sliding_second() {
        // 10/s evenly for 5 s, then a burst of 30 at 5 s: the busiest second,
        // (4 s, 5 s], holds the 10 paced arrivals at 4.1..=5.0 s and the burst.
        let t0 = Instant::now();
        let mut p = PeakWindow::default();
        let mut max = 0;
        for i in 0..=50u32 {
            max = max.max(p.record(t0 + ms(100) * i));
        }
        assert_eq!(max, 10);
        for _ in 0..30 {
            max = max.max(p.record(t0 + ms(5000)));
        }
        assert_eq!(max, 40);
    }
}
