//! Retry delays: exponential backoff with *full* jitter, as an iterator.
//!
//! The worker's retry loop (`exec::worker`) and the token manager
//! (`api::token`) pull one delay per retry from `Backoff`; when it runs dry the
//! retry budget is spent. backon's `ExponentialBuilder` supplies the envelope
//! `min(cap, base·2ⁿ)`, but its own jitter is *additive* (`d + rand·d`, i.e. in
//! `[d, 2d)`), not full jitter, so the jitter is applied here:
//! `delay = uniform[0, min(cap, base·2ⁿ)]` (AWS "Exponential Backoff And Jitter").
//! Full jitter spreads a pool of workers that failed together, which is what the
//! partner asks for after a 429.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

/// How often and how patiently a request is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Requests allowed per row, the first one included (`--max-attempts`).
    pub max_attempts: u32,
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling any delay can have.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// A fresh delay schedule: `max_attempts - 1` delays, one before each retry.
    pub(crate) fn backoff(&self) -> Backoff {
        // backon does not cap its first delay, so clamp base to cap here.
        let base = self.base.min(self.cap);
        let retries = self.max_attempts.saturating_sub(1) as usize;
        let envelope = ExponentialBuilder::default()
            .with_min_delay(base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .with_max_times(retries)
            .build();
        Backoff { envelope }
    }
}

/// Delays before successive retries; `None` once the retry budget is spent.
#[derive(Debug)]
pub(crate) struct Backoff {
    envelope: ExponentialBackoff,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.envelope.next().map(full_jitter)
    }
}

/// A uniformly random duration in `[0, ceiling]`.
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // The thread-local RNG is created and dropped here, never held across an
    // `.await`, so the futures that use a `Backoff` stay `Send`.
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32, base_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
        }
    }

    #[test]
    fn yields_one_delay_per_retry() {
        assert_eq!(policy(6, 100, 10_000).backoff().count(), 5);
        assert_eq!(policy(1, 100, 10_000).backoff().count(), 0);
        assert_eq!(policy(0, 100, 10_000).backoff().count(), 0);
    }

    #[test]
    fn delays_stay_within_the_exponential_envelope() {
        for _ in 0..200 {
            let delays: Vec<_> = policy(10, 100, 1_000).backoff().collect();
            assert_eq!(delays.len(), 9);
            for (n, d) in delays.iter().enumerate() {
                let ceiling = Duration::from_millis((100u64 << n).min(1_000));
                assert!(*d <= ceiling, "delay {n} = {d:?} above {ceiling:?}");
            }
        }
    }

    #[test]
    fn delays_grow_on_average_and_are_jittered() {
        // Mean of uniform[0, c] is c/2: 50 ms for the first, 400 ms (capped) at n = 4.
        let runs = 2_000;
        let mut first = Duration::ZERO;
        let mut fifth = Duration::ZERO;
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..runs {
            let d: Vec<_> = policy(6, 100, 800).backoff().collect();
            first += d[0];
            fifth += d[4];
            distinct.insert(d[0]);
        }
        let (first, fifth) = (first / runs, fifth / runs);
        assert!(
            first > Duration::from_millis(35) && first < Duration::from_millis(65),
            "{first:?}"
        );
        assert!(
            fifth > Duration::from_millis(330) && fifth < Duration::from_millis(470),
            "{fifth:?}"
        );
        assert!(
            distinct.len() > runs as usize / 2,
            "full jitter must spread delays"
        );
    }

    #[test]
    fn base_above_cap_is_capped() {
        for d in policy(4, 5_000, 200).backoff() {
            assert!(d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn full_jitter_bounds() {
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1_000 {
            assert!(full_jitter(Duration::from_millis(3)) <= Duration::from_millis(3));
        }
    }
}
