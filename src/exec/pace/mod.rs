//! The pace of the run: one governor limiter shared by every worker, whose
//! rate can change while the run goes (`--rate auto`), and, unless the
//! partner is known to allow bursts, a sliding-window guard behind it.
//!
//! Connect does not say how it counts its per-second threshold, so the
//! default assumes the strictest limiter: at most N requests in *any* sliding
//! one-second window. GCRA alone cannot promise that and still hold its rate:
//! with a burst of 1 a timer that wakes late loses its slot for good (the run
//! falls below R), and with a burst of 2 the catch-up lets R + 1 requests into
//! one window. So [`Pacing::Window`] keeps governor at burst 2 (late wake-ups
//! catch up) and puts a `Window` guard behind it: a ring of the last
//! ⌊R⌋ send instants, and a request goes only once the oldest of them is
//! `SPAN` old. `SPAN` is one second plus a margin for the jitter between
//! our send and the partner's arrival clock; it caps the run at R / 1.005.
//! [`Pacing::Burst`] (`--burst N`) is plain GCRA with that burst, for a
//! partner known to run a token bucket.
//!
//! governor's quota is fixed per limiter, so a new rate swaps in a new
//! limiter behind a lock that is only read on the hot path. Workers already
//! waiting on the old limiter take one slot from the new one too, so a
//! change drops, duplicates and stalls nothing.
//!
//! The controller of `--rate auto` lives in `exec::adapt` and sets the rate
//! here; what it last decided (its safe rate, the ceiling, the 429s it took
//! for noise) is kept here too, for the summary and the timeline.
//!
//! By mechanism:
//!
//! * `limiter` — the governor limiter, swapped on a rate change, and the
//!   GCRA burst it runs at behind each `Guard`;
//! * `window` — the sliding-window guard (`Window`, its `Slot`s, the
//!   round-trip spread that moves late arrivals);
//! * `auto` — what `--rate auto`'s controller publishes into the pace, and
//!   its cut after push-back.

mod auto;
mod limiter;
mod window;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::Jitter;

use self::auto::Published;
use self::limiter::Limiter;
pub(crate) use self::window::Slot;
use self::window::Window;

/// How the limiter may line requests up: the user's choice (`--burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// At most ⌊R⌋ requests in any sliding `SPAN` (the default).
    Window,
    /// GCRA with this burst and no window guard (`--burst N`).
    Burst(NonZeroU32),
}

impl Pacing {
    /// `--burst`: `None` keeps the strict default.
    pub(crate) fn from_burst(burst: Option<u32>) -> Pacing {
        burst
            .and_then(NonZeroU32::new)
            .map_or(Pacing::Window, Pacing::Burst)
    }
}

/// What stands behind the limiter, as [`Pacing`] chose: the window guard,
/// or nothing but GCRA's own burst. One value, so a guard and a burst that
/// disagree cannot be built.
enum Guard {
    /// [`Pacing::Window`]: the sliding-window guard (GCRA at burst 2 before it).
    Window(Window),
    /// [`Pacing::Burst`]: GCRA with this burst alone.
    Burst(NonZeroU32),
}

impl Guard {
    /// The guard `pacing` asks for at `rate` requests per second.
    fn new(pacing: Pacing, rate: f64) -> Guard {
        match pacing {
            Pacing::Window => Guard::Window(Window::new(rate)),
            Pacing::Burst(b) => Guard::Burst(b),
        }
    }
}

/// The shared limiter whose rate can be changed.
pub(crate) struct Pace {
    /// The limiter in force, swapped on every change.
    limiter: Limiter,
    /// Current rate in thousandths of a request per second.
    rate_milli: AtomicU64,
    /// `--rate auto`: what the controller last published.
    auto: Published,
    guard: Guard,
}

impl Pace {
    /// A pace of `rate` requests per second.
    pub(crate) fn new(rate: f64, pacing: Pacing) -> Pace {
        let rate = rate.max(0.001);
        let guard = Guard::new(pacing, rate);
        Pace {
            limiter: Limiter::new(rate, guard.gcra_burst()),
            rate_milli: AtomicU64::new((rate * 1000.0) as u64),
            auto: Published::new(rate),
            guard,
        }
    }

    /// The current rate, requests per second.
    pub(crate) fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Change the rate; takes effect for the next request to wait.
    pub(crate) fn set_rate(&self, rate: f64) {
        let rate = rate.max(0.001);
        self.limiter.set_rate(rate, self.guard.gcra_burst());
        if let Guard::Window(w) = &self.guard {
            w.set_rate(rate);
        }
        self.rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Wait for this request's slot. A slot granted by a limiter that was
    /// replaced during the wait does not count: the request then also takes
    /// one from the new limiter, so the new rate holds at once instead of
    /// the old waiters draining at the old pace. With the window guard,
    /// returns the request's place in the window for [`Pace::settle`].
    pub(crate) async fn until_ready(&self, jitter: Jitter) -> Option<Slot> {
        self.limiter.until_ready(jitter).await;
        match &self.guard {
            Guard::Window(w) => w.admit().await,
            Guard::Burst(_) => None,
        }
    }

    /// The request of `slot` was answered after `rtt`, refused with a 429
    /// or not: see `Window::settle`.
    pub(crate) fn settle(&self, slot: Option<Slot>, rtt: Duration, refused: bool) {
        if let (Guard::Window(w), Some(slot)) = (&self.guard, slot) {
            w.settle(slot, rtt, refused);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::window::SPAN;
    use super::*;

    /// Most sends in any sliding `span` of `times`.
    fn max_in_span(times: &[Instant], span: Duration) -> usize {
        let mut most = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= span {
                lo += 1;
            }
            most = most.max(hi - lo + 1);
        }
        most
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_window_guard_keeps_a_sliding_second_at_the_rate() {
        // GCRA at burst 2 lets a late wake-up catch up; the guard keeps any
        // sliding second at ⌊R⌋ however the waits line up, from several
        // tasks at once. (That it still reaches R is a benchmark figure.)
        let pace = Arc::new(Pace::new(50.0, Pacing::Window));
        let sends = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (pace, sends) = (pace.clone(), sends.clone());
                tokio::spawn(async move {
                    for i in 0..30u32 {
                        pace.until_ready(Jitter::up_to(Duration::ZERO)).await;
                        sends.lock().unwrap().push(Instant::now());
                        if (i + t) % 7 == 0 {
                            // A slow task: the next slots catch up.
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut sends = sends.lock().unwrap().clone();
        sends.sort();
        assert_eq!(sends.len(), 120);
        assert!(max_in_span(&sends, SPAN) <= 50);
    }

    #[test]
    fn the_guard_is_what_pacing_chose() {
        let strict = Pace::new(5.0, Pacing::from_burst(None));
        assert!(matches!(strict.guard, Guard::Window(_)));
        assert_eq!(strict.guard.gcra_burst().get(), 2);
        let bucket = Pace::new(5.0, Pacing::from_burst(Some(7)));
        assert!(matches!(bucket.guard, Guard::Burst(b) if b.get() == 7));
        assert_eq!(bucket.guard.gcra_burst().get(), 7);
    }
}
