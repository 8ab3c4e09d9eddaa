//! How long the sandbox takes to answer an admitted users request: a slow
//! partner, for testing a client's concurrency and pacing (issue #23).
//!
//! Three knobs, applied in this order after the rate limit:
//!
//! 1. capacity (`--capacity N`): the server starts at most N requests per
//!    second; each waits FIFO behind the earlier ones ([`CapacityQueue`]). It
//!    never answers 429: the wait just adds to the latency;
//! 2. slow start (`--slow-start WINDOW:DELAY`): a request arriving within
//!    WINDOW of the first users request takes DELAY instead of its latency
//!    (a cold backend);
//! 3. latency ([`Latency`]): fixed (`--latency`), uniform in
//!    `latency × [1 − F, 1 + F]` (`--latency-jitter F`), or log-normal with
//!    median `--latency` and 99th percentile `--latency-p99` (a heavy tail).
//!
//! The random latencies come from their own generator, seeded from `--seed`
//! on a different stream than the fault dice, so adding jitter to a seeded
//! run does not change which requests fail.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::SandboxError;

/// The standard normal's 99th percentile: p99 = median × e^(σ · Z99).
const Z99: f64 = 2.326_347_874_040_841;

/// A log-normal draw is capped at this many p99s, so one draw in a billion
/// cannot hold a request for hours (at σ = 1 the cap is 4.6 σ out).
const TAIL_CAP: f64 = 10.0;

/// Mixed into `--seed` for the latency generator: a stream apart from the dice's.
const LATENCY_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;

/// The latency settings and the distribution they make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Latency {
    /// The fixed latency, the centre of the jitter band, or the log-normal's median.
    pub(crate) latency: Duration,
    /// Half-width of the uniform band as a share of `latency` (0..=1; 0: none).
    pub(crate) jitter: f64,
    /// The log-normal's 99th percentile (≥ `latency`), or `None`.
    pub(crate) p99: Option<Duration>,
}

impl Latency {
    /// Refuses settings that cannot work: a jitter outside 0..=1, jitter
    /// together with a p99, a p99 below the latency or without one.
    pub(crate) fn check(&self) -> Result<(), SandboxError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(SandboxError::Jitter(self.jitter));
        }
        let Some(p99) = self.p99 else {
            return Ok(());
        };
        if self.jitter > 0.0 {
            return Err(SandboxError::JitterWithP99);
        }
        if self.latency.is_zero() {
            return Err(SandboxError::P99WithoutLatency);
        }
        if p99 < self.latency {
            return Err(SandboxError::P99BelowLatency {
                latency: self.latency,
                p99,
            });
        }
        Ok(())
    }

    /// One latency (the settings passed [`Latency::check`]).
    fn draw(&self, rng: &mut SmallRng) -> Duration {
        let median = self.latency.as_secs_f64();
        let secs = if let Some(p99) = self.p99 {
            let p99 = p99.as_secs_f64();
            let sigma = (p99 / median).ln() / Z99;
            (median * (sigma * standard_normal(rng)).exp()).min(p99 * TAIL_CAP)
        } else if self.jitter > 0.0 {
            median * (1.0 + self.jitter * rng.random_range(-1.0..=1.0))
        } else {
            return self.latency;
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.latency)
    }
}

/// A standard normal variate by the Box–Muller transform.
fn standard_normal(rng: &mut SmallRng) -> f64 {
    // 1 - [0, 1) is (0, 1]: ln never sees 0.
    let u1 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `--slow-start WINDOW:DELAY`: requests arriving within `window` of the
/// first users request take `delay` instead of their latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowStart {
    /// How long after the first users request the backend is cold.
    pub window: Duration,
    /// What a request arriving then takes instead of its latency.
    pub delay: Duration,
}

impl fmt::Display for SlowStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            humantime::format_duration(self.window),
            humantime::format_duration(self.delay)
        )
    }
}

impl FromStr for SlowStart {
    type Err = SandboxError;

    /// `WINDOW:DELAY`, both durations, e.g. `4s:8s`; WINDOW above zero.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| SandboxError::SlowStart {
            spec: spec.to_owned(),
            reason,
        };
        let (window, delay) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected WINDOW:DELAY (e.g. 4s:8s)".to_owned()))?;
        let parse = |what: &str, s: &str| {
            humantime::parse_duration(s.trim())
                .map_err(|e| bad(format!("{what} '{}': {e}", s.trim())))
        };
        let window = parse("window", window)?;
        let delay = parse("delay", delay)?;
        if window.is_zero() {
            return Err(bad("the window must be longer than zero".to_owned()));
        }
        Ok(SlowStart { window, delay })
    }
}

/// `--capacity N`: at most N service starts per second, FIFO. A request
/// arriving at `t` starts at `max(t, previous start + 1/N)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CapacityQueue {
    per_second: u32,
    interval: Duration,
    last_start: Option<Instant>,
}

impl CapacityQueue {
    /// An empty queue for `per_second` starts per second (0 is treated as 1).
    pub(crate) fn new(per_second: u32) -> CapacityQueue {
        let n = per_second.max(1);
        CapacityQueue {
            per_second: n,
            interval: Duration::from_secs(1) / n,
            last_start: None,
        }
    }

    /// When the request arriving at `arrival` (not before the previous
    /// arrival) starts being served; books that start.
    pub(crate) fn start(&mut self, arrival: Instant) -> Instant {
        let start = match self.last_start {
            Some(prev) => arrival.max(prev + self.interval),
            None => arrival,
        };
        self.last_start = Some(start);
        start
    }
}

/// Everything that decides when an admitted request is answered.
pub(crate) struct Service {
    pub(crate) latency: Latency,
    pub(crate) slow_start: Option<SlowStart>,
    queue: Option<CapacityQueue>,
    seed: Option<u64>,
    rng: SmallRng,
}

impl Service {
    pub(crate) fn new(
        latency: Latency,
        slow_start: Option<SlowStart>,
        capacity: Option<u32>,
        seed: Option<u64>,
    ) -> Service {
        Service {
            latency,
            slow_start,
            queue: capacity.map(CapacityQueue::new),
            seed,
            rng: Service::rng_for(seed),
        }
    }

    fn rng_for(seed: Option<u64>) -> SmallRng {
        match seed {
            Some(s) => SmallRng::seed_from_u64(s ^ LATENCY_STREAM),
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// The capacity in force (`None`: unlimited).
    pub(crate) fn capacity(&self) -> Option<u32> {
        self.queue.map(|q| q.per_second)
    }

    /// Changes the capacity; the queue starts empty.
    pub(crate) fn set_capacity(&mut self, capacity: Option<u32>) {
        self.queue = capacity.map(CapacityQueue::new);
    }

    /// Empties the queue and restarts the latency generator from the seed.
    pub(crate) fn reset(&mut self) {
        self.queue = self.queue.map(|q| CapacityQueue::new(q.per_second));
        self.rng = Service::rng_for(self.seed);
    }

    /// When to answer the request arriving `now`, `since_first` after the first
    /// users request: its start in the capacity queue plus its latency.
    pub(crate) fn answer_at(&mut self, now: Instant, since_first: Duration) -> Instant {
        let start = match &mut self.queue {
            Some(q) => q.start(now),
            None => now,
        };
        let latency = match self.slow_start {
            Some(s) if since_first < s.window => s.delay,
            _ => self.latency.draw(&mut self.rng),
        };
        start + latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn latency(ms_: u64, jitter: f64, p99: Option<u64>) -> Latency {
        Latency {
            latency: ms(ms_),
            jitter,
            p99: p99.map(ms),
        }
    }

    fn draws(l: Latency, n: usize) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut v: Vec<f64> = (0..n).map(|_| l.draw(&mut rng).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        assert_eq!(latency(100, 0.0, None).check(), Ok(()));
        assert_eq!(latency(100, 1.0, None).check(), Ok(()));
        assert_eq!(latency(100, 0.0, Some(100)).check(), Ok(()));
        assert_eq!(latency(0, 0.5, None).check(), Ok(()));
        assert_eq!(
            latency(100, 1.5, None).check(),
            Err(SandboxError::Jitter(1.5))
        );
        assert_eq!(
            latency(100, -0.1, None).check(),
            Err(SandboxError::Jitter(-0.1))
        );
        assert_eq!(
            latency(100, 0.2, Some(1000)).check(),
            Err(SandboxError::JitterWithP99)
        );
        assert_eq!(
            latency(100, 0.0, Some(99)).check(),
            Err(SandboxError::P99BelowLatency {
                latency: ms(100),
                p99: ms(99)
            })
        );
        assert_eq!(
            latency(0, 0.0, Some(10)).check(),
            Err(SandboxError::P99WithoutLatency)
        );
    }

    #[test]
    fn fixed_latency_is_fixed() {
        let v = draws(latency(20, 0.0, None), 100);
        assert!(v.iter().all(|s| *s == 0.020));
        // p99 equal to the median is a zero-width log-normal.
        let v = draws(latency(20, 0.0, Some(20)), 100);
        assert!(v.iter().all(|s| (s - 0.020).abs() < 1e-9), "{v:?}");
    }

    #[test]
    fn jitter_stays_in_its_band_and_fills_it() {
        let v = draws(latency(300, 0.2, None), 10_000);
        assert!(
            v[0] >= 0.240 && v[v.len() - 1] <= 0.360,
            "{} {}",
            v[0],
            v[9999]
        );
        assert!(
            v[0] < 0.245 && v[v.len() - 1] > 0.355,
            "{} {}",
            v[0],
            v[9999]
        );
        let median = v[5000];
        assert!((0.295..0.305).contains(&median), "{median}");
    }

    #[test]
    fn log_normal_has_the_asked_median_and_p99() {
        let v = draws(latency(100, 0.0, Some(1000)), 20_000);
        let median = v[10_000];
        let p99 = v[19_800];
        assert!((0.095..0.105).contains(&median), "median {median}");
        assert!((0.9..1.1).contains(&p99), "p99 {p99}");
        assert!(v[0] > 0.0);
        assert!(v[v.len() - 1] <= 10.0);
    }

    #[test]
    fn standard_normal_is_standard() {
        let mut rng = SmallRng::seed_from_u64(3);
        let v: Vec<f64> = (0..50_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
    }

    #[test]
    fn capacity_queue_spaces_starts_by_one_over_n() {
        let t0 = Instant::now();
        let mut q = CapacityQueue::new(4);
        // A burst of 5 at t0: starts at 0, 250, 500, 750, 1000 ms.
        let starts: Vec<Duration> = (0..5).map(|_| q.start(t0) - t0).collect();
        assert_eq!(starts, [ms(0), ms(250), ms(500), ms(750), ms(1000)]);
        // Arriving while the queue is busy: behind the last start.
        assert_eq!(q.start(t0 + ms(1100)) - t0, ms(1250));
        // Arriving after it drained: served at once, and the spacing counts from there.
        assert_eq!(q.start(t0 + ms(3000)) - t0, ms(3000));
        assert_eq!(q.start(t0 + ms(3100)) - t0, ms(3250));
        assert_eq!(q.start(t0 + ms(3600)) - t0, ms(3600));
    }

    #[test]
    fn capacity_queue_lets_m_simultaneous_finish_after_m_minus_1_over_n() {
        let t0 = Instant::now();
        for (n, m) in [(1, 3), (10, 25), (200, 1000)] {
            let mut q = CapacityQueue::new(n);
            let last = (0..m).map(|_| q.start(t0)).last().unwrap();
            assert_eq!(last - t0, Duration::from_secs(1) / n * (m - 1), "{n} {m}");
        }
        assert_eq!(CapacityQueue::new(0).per_second, 1);
    }

    #[test]
    fn service_adds_queue_wait_slow_start_and_latency() {
        let t0 = Instant::now();
        let slow = SlowStart {
            window: ms(1000),
            delay: ms(5000),
        };
        let mut s = Service::new(latency(20, 0.0, None), Some(slow), Some(2), Some(1));
        assert_eq!(s.answer_at(t0, ms(0)) - t0, ms(5000));
        assert_eq!(s.answer_at(t0, ms(0)) - t0, ms(5500));
        // Past the window: the queue still spaces it, then the plain latency.
        assert_eq!(s.answer_at(t0 + ms(1000), ms(1000)) - t0, ms(1020));
        assert_eq!(s.capacity(), Some(2));
        s.reset();
        assert_eq!(s.answer_at(t0 + ms(1000), ms(1000)) - t0, ms(1020));
        s.set_capacity(None);
        assert_eq!(s.answer_at(t0 + ms(1000), ms(2000)) - t0, ms(1020));
    }

    #[test]
    fn seeded_latencies_replay_and_differ_from_the_dice_stream() {
        let l = latency(100, 0.5, None);
        let mut a = Service::new(l, None, None, Some(9));
        let mut b = Service::new(l, None, None, Some(9));
        let t0 = Instant::now();
        let va: Vec<Instant> = (0..20).map(|_| a.answer_at(t0, ms(0))).collect();
        let vb: Vec<Instant> = (0..20).map(|_| b.answer_at(t0, ms(0))).collect();
        assert_eq!(va, vb);
        a.reset();
        let again: Vec<Instant> = (0..20).map(|_| a.answer_at(t0, ms(0))).collect();
        assert_eq!(again, va);
        // Not the dice's own stream.
        let mut dice = SmallRng::seed_from_u64(9);
        let mut mine = Service::rng_for(Some(9));
        assert_ne!(dice.random::<u64>(), mine.random::<u64>());
    }

    #[test]
    fn slow_start_parses() {
        let s: SlowStart = "4s:8s".parse().unwrap();
        assert_eq!((s.window, s.delay), (ms(4000), ms(8000)));
        assert_eq!(s.to_string().parse::<SlowStart>().unwrap(), s);
        let s: SlowStart = " 500ms : 0s ".parse().unwrap();
        assert_eq!((s.window, s.delay), (ms(500), ms(0)));
        for (spec, says) in [
            ("4s", "WINDOW:DELAY"),
            ("4:8s", "window '4'"),
            ("4s:later", "delay 'later'"),
            ("0s:8s", "longer than zero"),
        ] {
            let err = spec.parse::<SlowStart>().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(spec), "{spec}: {err}");
        }
    }
}
