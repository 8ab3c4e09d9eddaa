//! The sandbox's per-second threshold on `POST /v2/fulfillment/users`.
//!
//! Connect does not publish its algorithm, only that a per-second threshold exists.
//! The sandbox uses GCRA (the "virtual scheduling" form of a token bucket) with a
//! rate of N per second and a burst of N: a client that paces itself at N/s is never
//! throttled however its requests line up with second boundaries, a client that
//! sends faster is, and an idle client may send N at once. A fixed one-second window
//! would instead let 2N through around a boundary and throttle an evenly paced
//! client whose jitter puts N+1 requests in one window.

use std::time::{Duration, Instant};

/// GCRA state for one limit.
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
    pub(crate) fn new(per_second: u32, now: Instant) -> Gcra {
        let n = per_second.max(1);
        let interval = Duration::from_secs(1) / n;
        Gcra {
            interval,
            tolerance: interval * (n - 1),
            tat: now,
        }
    }

    /// Admits the request arriving at `now` (and books its slot), or refuses it
    /// without booking anything, so throttled requests do not push later ones out.
    pub(crate) fn check(&mut self, now: Instant) -> bool {
        let tat = self.tat.max(now);
        if tat.duration_since(now) > self.tolerance {
            return false;
        }
        self.tat = tat + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_of_n_then_one_per_interval() {
        let t0 = Instant::now();
        let mut g = Gcra::new(5, t0);
        for _ in 0..5 {
            assert!(g.check(t0));
        }
        assert!(!g.check(t0));
        // One interval (200 ms) later exactly one more fits.
        let t1 = t0 + Duration::from_millis(200);
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
    fn evenly_paced_client_is_never_throttled() {
        let t0 = Instant::now();
        let mut g = Gcra::new(10, t0);
        for i in 0..1000u32 {
            assert!(g.check(t0 + Duration::from_millis(100) * i), "request {i}");
        }
    }

    #[test]
    fn sustained_rate_is_bounded() {
        // 4 s of 1000 attempts/s against a 50/s limit: at most 50 + 4 * 50 pass.
        let t0 = Instant::now();
        let mut g = Gcra::new(50, t0);
        let passed = (0..4000u32)
            .filter(|i| g.check(t0 + Duration::from_millis(1) * *i))
            .count();
        assert!((200..=250).contains(&passed), "{passed}");
    }
}
