//! The governor limiter: GCRA at the run's rate, swapped for a new one when
//! the rate changes (governor's quota is fixed per limiter), and the burst
//! it runs at behind each [`Guard`].

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};

use super::Guard;

impl Guard {
    /// The GCRA burst the limiter runs at in front of this guard.
    pub(super) fn gcra_burst(&self) -> NonZeroU32 {
        match self {
            // One late wake-up may catch up; the guard keeps the window.
            Guard::Window(_) => NonZeroU32::MIN.saturating_add(1),
            Guard::Burst(b) => *b,
        }
    }
}

/// The limiter in force and its generation (bumped by every change), behind
/// a lock that the hot path only reads.
pub(super) struct Limiter {
    current: RwLock<(u64, Arc<DefaultDirectRateLimiter>)>,
}

impl Limiter {
    /// A limiter of `rate` requests per second (above zero) and `burst`.
    pub(super) fn new(rate: f64, burst: NonZeroU32) -> Limiter {
        Limiter {
            current: RwLock::new((0, Arc::new(governor(rate, burst)))),
        }
    }

    /// Swap in a limiter of `rate` (above zero) and `burst`.
    pub(super) fn set_rate(&self, rate: f64, burst: NonZeroU32) {
        let next = Arc::new(governor(rate, burst));
        if let Ok(mut l) = self.current.write() {
            *l = (l.0 + 1, next);
        }
    }

    /// Wait for a slot of the limiter in force. A slot granted by a limiter
    /// that was replaced during the wait does not count: the request then
    /// takes one from the new limiter too.
    pub(super) async fn until_ready(&self, jitter: Jitter) {
        loop {
            let (generation, current) = self.current();
            current.until_ready_with_jitter(jitter).await;
            if self.current().0 == generation {
                break;
            }
        }
    }

    fn current(&self) -> (u64, Arc<DefaultDirectRateLimiter>) {
        match self.current.read() {
            Ok(l) => (l.0, l.1.clone()),
            Err(poisoned) => {
                let l = poisoned.into_inner();
                (l.0, l.1.clone())
            }
        }
    }
}

fn governor(rate: f64, burst: NonZeroU32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::super::{Pace, Pacing};
    use super::*;

    #[tokio::test]
    async fn pace_rate_changes_take_effect() {
        let pace = Pace::new(1000.0, Pacing::from_burst(Some(1)));
        assert_eq!(pace.rate(), 1000.0);
        pace.set_rate(2.5);
        assert_eq!(pace.rate(), 2.5);
        // Two slots at 2.5/s (burst 1): the second waits about 400 ms.
        let start = std::time::Instant::now();
        pace.until_ready(Jitter::up_to(Duration::ZERO)).await;
        pace.until_ready(Jitter::up_to(Duration::ZERO)).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
