//! The pace of the run: one governor limiter shared by every worker, whose
//! rate can change while the run goes (`--rate auto`).
//!
//! governor's quota is fixed per limiter, so a new rate swaps in a new
//! limiter behind a lock that is only read on the hot path. Workers already
//! waiting on the old limiter finish that wait at the old pace (at most one
//! request each), so a change drops, duplicates and stalls nothing.
//!
//! The auto controller is AIMD, ticking every [`TICK`]:
//! - *slow start*: ×1.25 a tick while nothing pushes back, until the first 429;
//! - then *additive increase*: +2 %/s while the run actually uses its rate;
//! - *multiplicative decrease* on any 429 (×0.6 the first time, ×0.85 after),
//!   and on a rise of 503s/timeouts (more than 10 % of a tick's requests),
//!   followed by a short cool-down;
//! - never above `--rate-max`, never below 1/s.
//!
//! The partner's limiter usually has a burst allowance, so overshoot shows
//! up late; the small additive step keeps that overshoot (and its 429s)
//! small. Tuned with a simulation of a GCRA server; see README "Adaptive rate".

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};

use crate::exec::worker::EngineCounters;

/// How often the auto controller looks at the counters.
pub const TICK: Duration = Duration::from_millis(500);

/// The shared limiter whose rate can be changed.
pub struct Pace {
    /// The limiter in force and its generation (bumped by every change).
    limiter: RwLock<(u64, Arc<DefaultDirectRateLimiter>)>,
    /// Current rate in thousandths of a request per second.
    rate_milli: AtomicU64,
    burst: NonZeroU32,
}

impl Pace {
    /// A pace of `rate` requests per second with `burst`.
    pub fn new(rate: f64, burst: u32) -> Pace {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let rate = rate.max(0.001);
        Pace {
            limiter: RwLock::new((0, Arc::new(limiter(rate, burst)))),
            rate_milli: AtomicU64::new((rate * 1000.0) as u64),
            burst,
        }
    }

    /// The current rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Change the rate; takes effect for the next request to wait.
    pub fn set_rate(&self, rate: f64) {
        let rate = rate.max(0.001);
        let next = Arc::new(limiter(rate, self.burst));
        if let Ok(mut l) = self.limiter.write() {
            *l = (l.0 + 1, next);
        }
        self.rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Wait for this request's slot. A slot granted by a limiter that was
    /// replaced during the wait does not count: the request then also takes
    /// one from the new limiter, so the new rate holds at once instead of
    /// the old waiters draining at the old pace.
    pub async fn until_ready(&self, jitter: Jitter) {
        loop {
            let (generation, current) = self.current();
            current.until_ready_with_jitter(jitter).await;
            if self.current().0 == generation {
                return;
            }
        }
    }

    fn current(&self) -> (u64, Arc<DefaultDirectRateLimiter>) {
        match self.limiter.read() {
            Ok(l) => (l.0, l.1.clone()),
            Err(poisoned) => {
                let l = poisoned.into_inner();
                (l.0, l.1.clone())
            }
        }
    }
}

fn limiter(rate: f64, burst: NonZeroU32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct(quota)
}

/// Settings of `--rate auto`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoRate {
    pub start: f64,
    pub max: f64,
}

/// What one tick saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tick {
    pub requests: u64,
    pub throttled: u64,
    /// 503s and timeouts.
    pub overloaded: u64,
}

/// The AIMD state machine, separate from the clock so it can be tested.
#[derive(Clone, Debug)]
pub struct Controller {
    cfg: AutoRate,
    rate: f64,
    slow_start: bool,
    cooldown: u32,
    /// Ticks since the last decrease.
    since_decrease: u32,
    /// Decreases in quick succession: the partner's limit fell, not our
    /// overshoot; each one cuts deeper.
    streak: usize,
}

/// Decrease factors: a lone push-back, then pushed back again right after.
const DECREASE: [f64; 3] = [0.85, 0.7, 0.5];

/// Ticks to wait after a decrease before increasing again (a 429's
/// Retry-After pause makes the next tick look idle).
const COOLDOWN_TICKS: u32 = 2;

impl Controller {
    /// A controller starting at `cfg.start` (capped at `cfg.max`).
    pub fn new(cfg: AutoRate) -> Controller {
        Controller {
            cfg,
            rate: cfg.start.min(cfg.max).max(1.0),
            slow_start: true,
            cooldown: 0,
            since_decrease: u32::MAX,
            streak: 0,
        }
    }

    /// The rate now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Feed one tick; returns the new rate.
    pub fn tick(&mut self, t: Tick, tick: Duration) -> f64 {
        self.since_decrease = self.since_decrease.saturating_add(1);
        let overloaded = t.requests >= 10 && t.overloaded * 10 > t.requests;
        if t.throttled > 0 || overloaded {
            // Pushed back again within a second of the cool-down: the limit
            // dropped under us, so cut deeper each time.
            self.streak = if self.since_decrease <= COOLDOWN_TICKS + 2 {
                (self.streak + 1).min(DECREASE.len() - 1)
            } else {
                0
            };
            let factor = if self.slow_start {
                0.6
            } else {
                DECREASE[self.streak]
            };
            self.since_decrease = 0;
            self.rate = (self.rate * factor).max(1.0);
            self.slow_start = false;
            self.cooldown = COOLDOWN_TICKS;
        } else if self.cooldown > 0 {
            self.cooldown -= 1;
        } else if t.requests as f64 >= 0.8 * self.rate * tick.as_secs_f64() {
            // Only a rate in use is worth raising.
            self.rate = if self.slow_start {
                self.rate * 1.25
            } else {
                self.rate * (1.0 + 0.02 * tick.as_secs_f64())
            }
            .min(self.cfg.max);
        }
        self.rate
    }
}

/// Run the controller against the engine's counters until aborted.
pub async fn adapt(pace: Arc<Pace>, counters: Arc<EngineCounters>, cfg: AutoRate) {
    let mut ctl = Controller::new(cfg);
    pace.set_rate(ctl.rate());
    let read = |c: &EngineCounters| Tick {
        requests: c.requests_sent.load(Ordering::Relaxed),
        throttled: c.throttled_429.load(Ordering::Relaxed),
        overloaded: c.overloaded.load(Ordering::Relaxed),
    };
    let mut last = read(&counters);
    loop {
        tokio::time::sleep(TICK).await;
        let now = read(&counters);
        let delta = Tick {
            requests: now.requests - last.requests,
            throttled: now.throttled - last.throttled,
            overloaded: now.overloaded - last.overloaded,
        };
        last = now;
        let before = ctl.rate();
        let after = ctl.tick(delta, TICK);
        if (after - before).abs() > f64::EPSILON {
            pace.set_rate(after);
            if after < before {
                tracing::info!(
                    from = format!("{before:.1}"),
                    to = format!("{after:.1}"),
                    throttled = delta.throttled,
                    overloaded = delta.overloaded,
                    "partner pushing back: rate lowered"
                );
            } else {
                tracing::debug!(from = before, to = after, "rate raised");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(rate: f64) -> Tick {
        Tick {
            requests: (rate * TICK.as_secs_f64()).ceil() as u64,
            ..Tick::default()
        }
    }

    #[test]
    fn slow_start_then_decrease_then_additive() {
        let mut c = Controller::new(AutoRate {
            start: 10.0,
            max: 200.0,
        });
        let r1 = c.tick(busy(10.0), TICK);
        assert!((r1 - 12.5).abs() < 1e-9);
        let r2 = c.tick(
            Tick {
                throttled: 1,
                ..busy(r1)
            },
            TICK,
        );
        assert!((r2 - 12.5 * 0.6).abs() < 1e-9, "first decrease is deep");
        // Cool-down: two ticks without change.
        assert_eq!(c.tick(busy(r2), TICK), r2);
        assert_eq!(c.tick(busy(r2), TICK), r2);
        let r3 = c.tick(busy(r2), TICK);
        assert!((r3 - r2 * 1.01).abs() < 1e-9, "additive after slow start");
        let r4 = c.tick(
            Tick {
                throttled: 3,
                ..busy(r3)
            },
            TICK,
        );
        // Pushed back again right after the last decrease: a deeper cut.
        assert!((r4 - r3 * 0.7).abs() < 1e-9);
    }

    #[test]
    fn push_back_right_after_a_decrease_cuts_deeper() {
        let mut c = Controller::new(AutoRate {
            start: 60.0,
            max: 200.0,
        });
        c.slow_start = false;
        let hit = Tick {
            requests: 30,
            throttled: 3,
            overloaded: 0,
        };
        let mut rates = vec![];
        for _ in 0..3 {
            rates.push(c.tick(hit, TICK));
            // Cool-down ticks, then pushed back again at once.
            c.tick(busy(c.rate()), TICK);
            c.tick(busy(c.rate()), TICK);
        }
        let expect = [60.0 * 0.85, 60.0 * 0.85 * 0.7, 60.0 * 0.85 * 0.7 * 0.5];
        for (r, e) in rates.iter().zip(expect) {
            assert!((r - e).abs() < 1e-9, "{rates:?}");
        }
        // A push-back long after the last one is a lone one again.
        for _ in 0..20 {
            c.tick(busy(c.rate()), TICK);
        }
        let before = c.rate();
        assert!((c.tick(hit, TICK) - before * 0.85).abs() < 1e-9);
    }

    #[test]
    fn never_above_max_nor_below_one() {
        let mut c = Controller::new(AutoRate {
            start: 50.0,
            max: 60.0,
        });
        for _ in 0..20 {
            let r = c.rate();
            c.tick(busy(r), TICK);
        }
        assert_eq!(c.rate(), 60.0);
        for _ in 0..50 {
            c.tick(
                Tick {
                    throttled: 1,
                    requests: 1,
                    overloaded: 0,
                },
                TICK,
            );
        }
        assert_eq!(c.rate(), 1.0);
    }

    #[test]
    fn idle_runs_do_not_raise_the_rate() {
        let mut c = Controller::new(AutoRate {
            start: 20.0,
            max: 200.0,
        });
        assert_eq!(c.tick(Tick::default(), TICK), 20.0);
        assert_eq!(c.tick(busy(5.0), TICK), 20.0);
    }

    #[test]
    fn a_rise_of_503s_lowers_the_rate() {
        let mut c = Controller::new(AutoRate {
            start: 40.0,
            max: 200.0,
        });
        let r = c.tick(
            Tick {
                requests: 20,
                throttled: 0,
                overloaded: 5,
            },
            TICK,
        );
        assert!(r < 40.0);
        // A few scattered faults are not a trend.
        let mut c = Controller::new(AutoRate {
            start: 40.0,
            max: 200.0,
        });
        let r = c.tick(
            Tick {
                requests: 20,
                throttled: 0,
                overloaded: 1,
            },
            TICK,
        );
        assert!(r > 40.0);
    }

    #[tokio::test]
    async fn pace_rate_changes_take_effect() {
        let pace = Pace::new(1000.0, 1);
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
