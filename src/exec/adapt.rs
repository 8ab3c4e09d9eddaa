//! `--rate auto`: find the partner's limit while running and hold it, through
//! noise, limit changes and `Retry-After`, against a sliding window, a fixed
//! window or a token bucket.
//!
//! The controller ([`Controller`], clock-free so it can be tested) decides
//! once per *window* (at least [`WINDOW`] and [`WINDOW_REQUESTS`] requests),
//! never per response, and cuts at most once a window. What it reads of a
//! window: requests sent, 429s, and 503s/timeouts.
//!
//! - **Noise or a limit.** Partners answer 429 for reasons other than this
//!   client's rate (a quota shared with other integrations, a lock timeout).
//!   The controller keeps the 429 share of the last minute's held windows as
//!   the *noise* level, and a window counts as pushed back only when its
//!   429s are more than that level explains (a Poisson bound: a few standard
//!   deviations above the expected count). Anything less is *noise ignored*:
//!   no cut, no ceiling. With no noise, one 429 above a probe is enough.
//! - **Noise is checked one below.** A held rate a fraction above the limit
//!   (the pacer's 0.99 × 41 against 40) is refused about every other
//!   second, which looks like noise. Once a held rate not yet checked has
//!   seen [`CHECK_AFTER`] 429s taken for noise, the rate steps one below
//!   for [`CHECK_WINDOWS`] windows: 429s that keep coming at the same share
//!   are noise (the rate is back, and checked), 429s that stop were the
//!   limit's (a ceiling there, and what they taught the noise level is
//!   taken back). What the check saw one below starts that rate's count:
//!   429s that halved but went on (two above a fixed window's limit, then
//!   one) are checked one further below.
//! - **A cut goes to what the partner admitted.** A strict limiter admits L
//!   a second whatever is sent, so in a pushed-back window the requests that
//!   were not refused, per second, measure L. The rate drops to that (at
//!   most halving in one window), not by a fixed factor: a slow start that
//!   overshoots, or a limit that fell from 40 to 13, lands on the limit in
//!   one or two windows. A window cut short by a cluster is measured over
//!   the last second of ticks, and one less: a fixed window's edge may fall
//!   inside a quarter of a second (none admitted, or a second's worth).
//! - **Hold, then probe.** The rate holds at the best rate known to pass.
//!   After a wait it probes above: +1 for two windows (one 429 costs one
//!   retry), or four when it re-tests a standing ceiling, then a step that
//!   doubles each window that passes (+2, +4, …), so a limit that rose is
//!   found in seconds. A step never passes a ceiling that stands, and a
//!   rate that passed with more 429s than the noise level expects holds
//!   instead of stepping on (against a fixed window, one above the limit
//!   is refused once a second, and two above draw a cluster and a
//!   `Retry-After` pause). A probe that is pushed back returns to the held
//!   rate and sets a *ceiling* there; each probe that fails at the same ceiling
//!   doubles the wait (2 s up to [`PROBE_WAIT_MAX`]), since each can cost a
//!   `Retry-After` pause somewhere. A ceiling expires after [`CEILING_TTL`],
//!   and a probe that passes resets the wait.
//! - **A token bucket's credit is not a limit.** A bucket lets a rate above
//!   its refill through until the credit drains, so a probe can pass and
//!   then be refused at the same rate. When a full window admits less than
//!   a rate the last probe passed, the controller models the bucket
//!   ([`Bucket`]: the refill it measured, and the credit this client lets
//!   build by sending under it), and from then on a probe's windows count
//!   only once that credit is spent; windows carried by credit never count
//!   as held. The held rate counts as passed only if it held with no 429
//!   at all, and a shortfall of less than a twentieth of the rate (at
//!   least one), plus two standard deviations of the noise, shows no
//!   bucket: a bucket believed from noise turns every stray 429 into a cut
//!   to what was admitted.
//! - **A pool-wide pause is push-back, not a measure.** A window in which
//!   the partner's `Retry-After` held the whole pool (two 429s close
//!   together) is pushed back unless the noise explains its 429s. What it
//!   admitted measures the pause as much as the limit: its cut is at most
//!   ×0.9, and it shows no bucket.
//! - **A limit that creeps up under a held rate** (the held rate was one
//!   above the limit, or the limit fell by a little) shows as 429s in every
//!   window: three held windows whose 429s together exceed the noise cut
//!   like a single pushed-back one. A probe that fails back to the same
//!   rate does not reset that count.
//! - **5xx and timeouts never set a ceiling.** A window where more than a
//!   tenth of the requests met a 503 or a timeout cuts ×0.9 and waits before
//!   probing; scattered ones are ignored.
//!
//! [`Controller::safe_rate`] is the highest rate held without push-back over
//! the last minute: never at or above a rate pushed back by a cluster (or
//! found a limit by a check) in that minute, or a ceiling that stands, nor a rate whose windows together drew clearly
//! more 429s than the rates under it; and when the partner paused the pool
//! twice or more in that minute, no more than it admitted a second over the
//! minute (a token bucket refills during each pause, so a rate far above its
//! refill can hold, paused every few seconds). It is what `rate.final_per_second`
//! reports, a rate the next night can start from (not the trough after the
//! last cut). Every decision
//! is one log line (`rate decision`, debug) with the window's figures.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::exec::counters::EngineCounters;
use crate::exec::pace::Pace;

/// How often the controller reads the counters.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// A window lasts at least this long…
const WINDOW: Duration = Duration::from_secs(1);

/// …and holds at least this many requests, unless it reaches [`MAX_WINDOW`].
const WINDOW_REQUESTS: u64 = 10;

/// The longest window (a slow rate still decides).
const MAX_WINDOW: Duration = Duration::from_secs(3);

/// How long the rate holds after a cut or a failed probe before the next
/// probe, at first.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// The longest wait between probes that keep failing at the same ceiling.
const PROBE_WAIT_MAX: Duration = Duration::from_secs(8);

/// A ceiling is forgotten this long after it was last confirmed.
const CEILING_TTL: Duration = Duration::from_secs(60);

/// How far back the noise level and [`Controller::safe_rate`] look.
const LOOKBACK: Duration = Duration::from_secs(60);

/// The most of a window's requests the noise level assumes are 429s for
/// reasons other than this client's rate: more is a limit, however steady.
const NOISE_MAX: f64 = 0.02;

/// Held windows whose 429s are summed to find a limit that creeps under the
/// held rate: a few for a clear excess, more for a faint one.
const CREEP_WINDOWS: [usize; 2] = [3, 10];

/// Ticks not counted after a cut: the partner's sliding second drains.
const SETTLE_AFTER_CUT: u32 = 4;

/// 429s passed for noise at a held rate before it is checked one below…
const CHECK_AFTER: u64 = 3;

/// …for this many windows.
const CHECK_WINDOWS: u32 = 4;

/// Windows a probe of +1 holds when it re-tests a standing ceiling.
const RETEST_WINDOWS: u32 = 4;

/// Slow start multiplies the rate by this each window that passes.
const SLOW_START: f64 = 1.5;

/// What one tick (or window) saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tick {
    pub(crate) requests: u64,
    pub(crate) throttled: u64,
    /// 503s and timeouts.
    pub(crate) overloaded: u64,
    /// Microseconds the whole pool was held by clustered 429s.
    pub(crate) paused_us: u64,
    /// Pool-wide pauses that began: their time is counted in the ticks
    /// after, but the tick a pause began in was cut short by it too.
    pub(crate) pauses: u64,
}

impl Tick {
    fn add(&mut self, t: Tick) {
        self.requests += t.requests;
        self.throttled += t.throttled;
        self.overloaded += t.overloaded;
        self.paused_us += t.paused_us;
        self.pauses += t.pauses;
    }

    /// Whether a pool-wide pause began in or held any part of it: what
    /// such a window admitted measures the pause as much as the limit.
    fn paused(&self) -> bool {
        self.paused_us > 0 || self.pauses > 0
    }
}

/// Where the controller is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Multiplying the rate until the first push-back.
    SlowStart,
    /// Holding the best rate known to pass, until `since` reaches the wait.
    Hold { since: Duration },
    /// Above the held rate: `windows` passed so far, the next `step`, and
    /// what the windows at this rate saw.
    Probe { windows: u32, step: f64, seen: Tick },
    /// One below `rate`, whose windows saw 429s taken for noise (`above`):
    /// if the 429s stop down here, they were the limit's. `below` is what
    /// the `windows` so far saw.
    Check {
        rate: f64,
        above: Tick,
        below: Tick,
        secs: f64,
        windows: u32,
    },
}

/// A rate that was pushed back.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ceiling {
    rate: f64,
    /// The controller's clock when it was last confirmed.
    at: Duration,
}

/// What a probe saw, from its start until a push-back judges it (the held
/// windows after a probe cut short included).
#[derive(Clone, Copy, Debug, PartialEq)]
struct ProbeRecord {
    /// Requests the partner admitted, and over how many seconds.
    admitted: f64,
    secs: f64,
    /// The highest rate that passed: the held rate it started from, or a
    /// step that passed.
    top: f64,
}

/// A token bucket behind the limit, as far as this client can tell. A
/// probe whose windows passed, then a push-back that admitted less than
/// they sent, shows a partner that let a rate above its limit through
/// until a bucket of credit drained. From then on a probe passes only once
/// the credit this client let build up (by sending under `refill`) is
/// spent: a pass on credit says nothing of the limit.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    /// What the partner admitted a second once the credit was spent.
    refill: f64,
    /// The most credit a probe was seen to spend.
    cap: f64,
    /// Credit built up since: requests not sent under `refill`, at most
    /// `cap`; and what it was when the last window began.
    credit: f64,
    before: f64,
}

impl Bucket {
    /// Whether the last window, at `rate`, ran on credit: a probe that
    /// passed it says nothing of the limit. At or under the refill, the
    /// rate passes without.
    fn carried(&self, rate: f64) -> bool {
        rate > self.refill && (self.before > 0.5 || self.credit > 0.5)
    }
}

/// A window of the last minute, for [`Controller::safe_rate`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct Past {
    at: Duration,
    /// The rate that held, or the rate pushed back.
    rate: f64,
    /// For a push-back, the most an earlier window may have held to still
    /// count as safe.
    pushed: Option<f64>,
    /// What a held window saw, and the rate it was sent at (more than
    /// `rate` when the partner admitted less).
    seen: Tick,
    sent_at: f64,
    /// For a push-back: by two 429s or more, or a check's verdict.
    clustered: bool,
}

/// One rate decision, for the log and the operator's view.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    /// The partner pushed back: the rate was cut to what it admitted.
    Cut { from: f64, to: f64 },
    /// 503s or timeouts made more than a tenth of the window.
    Overloaded { from: f64, to: f64 },
    /// Slow start raised the rate.
    Raised { from: f64, to: f64 },
    /// A probe above the held rate began.
    ProbeStarted { from: f64, to: f64 },
    /// A probe window passed: the rate it held is the new held rate.
    ProbePassed { held: f64, next: f64 },
    /// A probe was pushed back: back to the held rate, a ceiling set.
    ProbeFailed {
        ceiling: f64,
        back_to: f64,
        wait: Duration,
    },
    /// The ceiling was not confirmed for [`CEILING_TTL`].
    CeilingExpired { ceiling: f64 },
    /// 429s the noise level explains: nothing changed.
    NoiseIgnored,
    /// The held rate's 429s passed for noise: one below, to see whether
    /// they stop.
    CheckStarted { from: f64, to: f64 },
    /// They went on one below: noise, and the rate is back.
    NoiseConfirmed { rate: f64 },
    /// They stopped one below: the limit's. A ceiling at the rate checked.
    LimitFound { ceiling: f64, back_to: f64 },
}

/// The controller of `--rate auto`.
#[derive(Clone, Debug)]
pub(crate) struct Controller {
    /// `--rate-max`.
    max: f64,
    rate: f64,
    /// The best rate known to pass.
    held: f64,
    phase: Phase,
    ceiling: Option<Ceiling>,
    probe_wait: Duration,
    /// Time since the controller started (the sum of the ticks).
    clock: Duration,
    /// The window being filled, and how long it has run.
    window: Tick,
    window_len: Duration,
    /// Ticks to discard after a change (answers to requests sent before it).
    settle: u32,
    /// Held windows of the last minute: (when, requests, 429s) for the
    /// noise level.
    noise: VecDeque<(Duration, f64, u64, u64)>,
    /// The highest rate whose 429s a check showed to be noise (they went
    /// on one below it); above it, 429s taken for noise are checked.
    verified: f64,
    /// The last held windows at `creeping_rate`, for a limit that creeps
    /// under it: a probe that fails back to the same rate does not reset
    /// them, so a limit a fraction under the held rate adds up.
    creeping: VecDeque<Tick>,
    creeping_rate: f64,
    /// The last minute's windows, held or pushed back.
    history: VecDeque<Past>,
    /// The last probe, until a push-back judges it: what it saw.
    probe: Option<ProbeRecord>,
    /// What is known of a token bucket behind the limit, once a probe's
    /// passes turned out to be its credit.
    bucket: Option<Bucket>,
    /// The last window decided, for the log, and its length.
    last: Tick,
    last_secs: f64,
    /// The last second's ticks, counted or not: what a window cut short
    /// measures the partner by.
    recent: VecDeque<Tick>,
    /// The last minute's ticks, counted or not, summed: what the partner
    /// admitted, and the pool pauses it asked for.
    minute: VecDeque<Tick>,
}

impl Controller {
    /// A controller starting at `start` (capped at `max`, at least 1/s)
    /// that never goes above `max`: `settings::Rate::Auto`'s bounds.
    pub(crate) fn new(start: f64, max: f64) -> Controller {
        let max = max.max(1.0);
        let rate = start.min(max).max(1.0).floor();
        Controller {
            max,
            rate,
            held: rate,
            phase: Phase::SlowStart,
            ceiling: None,
            probe_wait: PROBE_WAIT,
            clock: Duration::ZERO,
            window: Tick::default(),
            window_len: Duration::ZERO,
            settle: 0,
            noise: VecDeque::new(),
            verified: 0.0,
            creeping: VecDeque::new(),
            creeping_rate: 0.0,
            history: VecDeque::new(),
            probe: None,
            bucket: None,
            last: Tick::default(),
            last_secs: 0.0,
            recent: VecDeque::new(),
            minute: VecDeque::new(),
        }
    }

    /// The rate now.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// The last window decided.
    pub(crate) fn last_window(&self) -> Tick {
        self.last
    }

    /// The last ceiling in force, if any.
    pub(crate) fn ceiling(&self) -> Option<f64> {
        self.ceiling.map(|c| c.rate)
    }

    /// The highest rate that held without a push-back over the last minute:
    /// per window, the rate, or what the partner admitted of it (plus the
    /// noise) when that is less; never at or above a rate pushed back in
    /// that minute, nor above what the partner then admitted when the
    /// limit fell or earlier passes were a token bucket's credit, nor at or
    /// above a ceiling that stands (a probe there has not passed yet). A
    /// rate one above a fixed window's limit passes now and then, between
    /// push-backs. The held rate when no window qualifies.
    pub(crate) fn safe_rate(&self) -> f64 {
        let last_push = self.history.iter().rposition(|p| p.pushed.is_some());
        // Never at or above a rate pushed back in the minute by a cluster
        // (a lone 429 failing a probe may be noise), nor a ceiling that
        // stands.
        let lowest_pushed = self
            .history
            .iter()
            .filter(|p| p.pushed.is_some() && p.clustered)
            .map(|p| p.rate)
            .chain(self.ceiling.map(|c| c.rate))
            .fold(f64::INFINITY, f64::min);
        let most = |i: usize| match last_push {
            Some(l) if i < l => self.history[l].pushed.unwrap_or(f64::INFINITY),
            _ => f64::INFINITY,
        };
        let mut rates: Vec<f64> = self
            .history
            .iter()
            .enumerate()
            .filter(|&(i, p)| p.pushed.is_none() && p.rate <= most(i) && p.rate < lowest_pushed)
            .map(|(_, p)| p.rate)
            .collect();
        rates.sort_by(|a, b| b.total_cmp(a));
        rates.dedup();
        let best = rates
            .iter()
            .copied()
            .find(|&r| !self.refused_more_than_below(r))
            .or(rates.last().copied())
            .unwrap_or(self.rate.min(self.held));
        // A rate held by pausing for the partner's Retry-After again and
        // again is not a rate it admits: a token bucket refills during each
        // pause, and the rate after it drains the bucket again. Then the
        // minute's admitted rate is the most that is safe.
        let minute = self.minute.iter().fold(Tick::default(), |mut s, t| {
            s.add(*t);
            s
        });
        let secs = self.minute.len() as f64 * TICK.as_secs_f64();
        if minute.pauses >= 2 && secs > 0.0 {
            let admitted = (minute.requests - minute.throttled) as f64 / secs;
            best.min(admitted.round().max(1.0))
        } else {
            best
        }
    }

    /// Whether the minute's held windows at `rate` drew clearly more 429s,
    /// together, than those under it: one above a fixed window's limit is
    /// refused about once a second, which a window at a time passes for
    /// noise.
    fn refused_more_than_below(&self, rate: f64) -> bool {
        let sum = |keep: &dyn Fn(f64) -> bool| {
            self.history
                .iter()
                .filter(|p| p.pushed.is_none() && keep(p.sent_at))
                .fold(Tick::default(), |mut s, p| {
                    s.add(p.seen);
                    s
                })
        };
        let at = sum(&|r| r == rate);
        let under = sum(&|r| r < rate);
        if under.requests < 200 {
            return false;
        }
        let expected = at.requests as f64 * under.throttled as f64 / under.requests as f64;
        at.throttled as f64 > expected + 2.0 * expected.sqrt() + 1.0
    }

    /// Feed one tick of `tick` length; returns the decisions it led to
    /// (usually none: a window is still filling).
    pub(crate) fn tick(&mut self, t: Tick, tick: Duration) -> Vec<Decision> {
        self.clock += tick;
        self.recent.push_back(t);
        while self.recent.len() as u32 * tick > WINDOW {
            self.recent.pop_front();
        }
        self.minute.push_back(t);
        while self.minute.len() as u32 * tick > LOOKBACK {
            self.minute.pop_front();
        }
        let mut out = Vec::new();
        if let Some(c) = self.ceiling
            && self.clock.saturating_sub(c.at) >= CEILING_TTL
        {
            self.ceiling = None;
            self.probe_wait = PROBE_WAIT;
            out.push(Decision::CeilingExpired { ceiling: c.rate });
        }
        if let Phase::Hold { since } = &mut self.phase {
            *since += tick;
        }
        // A tick mostly refused is news even right after a change: the
        // limit fell (the cut's own stale 429s are a few, not most).
        let refused = t.throttled >= 3 && t.throttled * 2 > t.requests;
        if self.settle > 0 && !refused {
            self.settle -= 1;
            return out;
        }
        self.settle = 0;
        self.window.add(t);
        self.window_len += tick;
        let w = self.window;
        // A cluster decides at once; otherwise wait for a full window.
        let full = self.window_len >= MAX_WINDOW
            || self.window_len >= WINDOW && w.requests >= WINDOW_REQUESTS;
        // A probe (or slow start) ends as soon as it is pushed back: each
        // second more above the limit costs more 429s, and a second 429
        // close to the first would hold the whole pool.
        let probing = matches!(self.phase, Phase::Probe { .. } | Phase::SlowStart);
        let early = w.throttled >= 5 && w.throttled * 2 > w.requests || probing && self.pushed(w);
        if !full && !early {
            return out;
        }
        let secs = self.window_len.as_secs_f64();
        self.window = Tick::default();
        self.window_len = Duration::ZERO;
        out.extend(self.decide(w, secs));
        out
    }

    /// The expected 429s of `requests` at the noise level: the 429 share of
    /// the last minute's held windows, at most [`NOISE_MAX`].
    fn expected_noise(&self, requests: u64) -> f64 {
        self.expected_noise_under(requests, f64::INFINITY)
    }

    /// The same, learned only from windows held under `rate`.
    fn expected_noise_under(&self, requests: u64, rate: f64) -> f64 {
        let (n, k) = self
            .noise
            .iter()
            .filter(|&&(_, r, _, _)| r < rate)
            .fold((0u64, 0u64), |(n, k), &(_, _, wn, wk)| (n + wn, k + wk));
        // A prior of one 429 in a thousand until the minute has data.
        let share = (k as f64 + 0.1) / (n as f64 + 100.0);
        share.min(NOISE_MAX) * requests as f64
    }

    /// Whether the 429s of `seen` are more than the noise level expects, by
    /// a standard deviation: not push-back, but not clean either.
    fn excess(&self, seen: Tick) -> bool {
        let expected = self.expected_noise(seen.requests);
        seen.throttled as f64 > expected + expected.sqrt()
    }

    /// Whether `throttled` 429s out of `requests` are more than noise, at
    /// `sigmas` standard deviations plus `slack`.
    fn beyond_noise(&self, requests: u64, throttled: u64, sigmas: f64, slack: f64) -> bool {
        let expected = self.expected_noise(requests);
        throttled as f64 > expected + sigmas * expected.sqrt() + slack
    }

    /// Whether the window's 429s are push-back. A probe's count from one
    /// 429 above noise, since one above the limit costs just one a second;
    /// any other window needs a cluster (a slow start overshoots by far
    /// more, and stray 429s must not end it at a low rate).
    fn pushed(&self, w: Tick) -> bool {
        match self.phase {
            Phase::Probe { .. } => self.beyond_noise(w.requests, w.throttled, 2.0, 0.5),
            // Slow start knows no noise level yet, and its overshoot is
            // refused by the dozen: a pair of stray 429s must not end it
            // at a tenth of the limit.
            Phase::SlowStart => {
                w.throttled >= 3 && self.beyond_noise(w.requests, w.throttled, 3.0, 1.0)
            }
            _ => self.beyond_noise(w.requests, w.throttled, 3.0, 1.0),
        }
    }

    /// Judge a full window of `secs` seconds.
    fn decide(&mut self, w: Tick, secs: f64) -> Vec<Decision> {
        self.last = w;
        self.last_secs = secs;
        // A pool-wide pause the partner asked for (two 429s close together,
        // with Retry-After) is push-back, unless the noise explains them:
        // a token bucket refills during each pause, and a rate far above
        // its refill would otherwise hold, paused every other second.
        let pushed = self.pushed(w) || w.pauses > 0 && self.excess(w);
        // The time the pool could send: a pause for clustered 429s (a
        // partner's Retry-After) is push-back, not a pool left idle.
        let busy = (secs - w.paused_us as f64 / 1e6).max(0.25 * secs);
        let in_use = w.requests as f64 >= 0.7 * self.rate * busy;
        let admitted_n = (w.requests - w.throttled) as f64;
        if let Some(p) = &mut self.probe {
            p.admitted += admitted_n;
            p.secs += secs;
        }
        if let Some(b) = &mut self.bucket {
            b.before = b.credit;
            b.credit = (b.credit + b.refill * secs - admitted_n).clamp(0.0, b.cap);
        }
        let held_phase = matches!(self.phase, Phase::Hold { .. });
        let creeping = (!pushed && held_phase)
            .then(|| self.held_window(w, secs))
            .flatten();
        // What the partner admitted a second of the whole window: a
        // bucket refills while the pool is held, so the time it could send
        // would count that refill as its rate.
        let admitted = admitted_n / secs;
        // What held: the rate, or what the partner admitted of it when that
        // is less (429s beyond noise that no test caught yet, an idle run).
        let noise = self.expected_noise(w.requests) / secs;
        let mut held = self.rate.min((admitted + noise + 1e-6).floor());
        // What passed on a bucket's credit held only up to its refill.
        if let Some(b) = self.bucket.filter(|b| b.carried(self.rate)) {
            held = held.min(b.refill);
        }
        let overloaded = w.requests >= 10 && w.overloaded * 10 > w.requests && w.overloaded >= 3;
        if let Some(admitted) = creeping {
            self.pushed_back(admitted, secs, true)
        } else if pushed {
            // A window cut short measures the partner over the last second
            // of ticks instead: a fixed window's edge inside a quarter of a
            // second admits none, or a whole second's worth.
            let admitted = if secs < WINDOW.as_secs_f64() {
                let r = self.recent.iter().fold(Tick::default(), |mut s, t| {
                    s.add(*t);
                    s
                });
                let span = self.recent.len() as f64 * TICK.as_secs_f64();
                (r.requests - r.throttled) as f64 / span.max(secs)
            } else {
                admitted
            };
            self.pushed_back(admitted, secs, in_use)
        } else if overloaded {
            self.remember(held, None);
            let from = self.rate;
            let to = (from * 0.9).floor().max(1.0);
            self.set(to);
            self.held = to;
            self.phase = Phase::Hold {
                since: Duration::ZERO,
            };
            vec![Decision::Overloaded { from, to }]
        } else {
            self.remember(held, None);
            let mut d = self.passed(in_use);
            if w.throttled > 0 {
                d.push(Decision::NoiseIgnored);
            }
            d
        }
    }

    /// A held window with no cluster: keep it for the creeping test and
    /// for the noise level (a check one below takes back what it taught
    /// when its 429s turn out to be the limit's). Returns what the partner
    /// admitted a second when the last few held windows together show a
    /// limit under the held rate.
    fn held_window(&mut self, w: Tick, secs: f64) -> Option<f64> {
        if (self.rate - self.creeping_rate).abs() > f64::EPSILON {
            self.creeping.clear();
            self.creeping_rate = self.rate;
        }
        self.creeping.push_back(w);
        if self.creeping.len() > CREEP_WINDOWS[1] {
            self.creeping.pop_front();
        }
        let creeping = CREEP_WINDOWS.into_iter().find_map(|m| {
            let sum = self
                .creeping
                .iter()
                .rev()
                .take(m)
                .fold(Tick::default(), |mut s, t| {
                    s.add(*t);
                    s
                });
            (self.creeping.len() >= m
                && sum.throttled >= 3
                && self.beyond_noise(sum.requests, sum.throttled, 3.0, 1.0))
            .then(|| (sum.requests - sum.throttled) as f64 / (m as f64 * secs))
        });
        if creeping.is_none() {
            self.noise
                .push_back((self.clock, self.rate, w.requests, w.throttled));
        }
        while self
            .noise
            .front()
            .is_some_and(|&(at, _, _, _)| self.clock.saturating_sub(at) > LOOKBACK)
        {
            self.noise.pop_front();
        }
        creeping
    }

    /// The window was pushed back: `admitted` requests a second got through,
    /// in a window of `secs` the pool filled (`in_use`) or not.
    fn pushed_back(&mut self, admitted: f64, secs: f64, in_use: bool) -> Vec<Decision> {
        let from = self.rate;
        let w = self.last;
        // Most of a window refused, and more than a stray few, a step or
        // two above the held rate: the limit fell under the held rate (a
        // larger probe step is refused in part by its own overshoot).
        let small_step = (from - self.held) <= 2.0;
        let fell = w.throttled >= 5 && w.throttled * 2 > w.requests && small_step;
        let clock = self.clock;
        // What the partner admitted, at most halving at once, and at
        // least one below the rate that was pushed back. A window the pool
        // did not fill, or held for clustered 429s, measures the pause as
        // much as the limit: at most ×0.9 then.
        let below = (from - 1.0).max(1.0);
        let most = if in_use && !w.paused() { 0.5 } else { 0.9 };
        // A window cut short by a cluster measures high against a fixed
        // window or a bucket, which admit their second's worth early in
        // it: one below that.
        let short = secs < WINDOW.as_secs_f64();
        let measured = (admitted.floor() - if short { 1.0 } else { 0.0 })
            .clamp((from * most).floor().max(1.0), below);
        // A paused window admitted less for the pause: no bucket shows.
        let full = in_use && secs >= WINDOW.as_secs_f64() && !w.paused();
        // Noise refused some of what the limit admitted, give or take two
        // standard deviations, and a twentieth of the rate (at least one)
        // is the measure's own slack: a shortfall within that is no
        // bucket.
        let expected = self.expected_noise(w.requests);
        let noise = expected / secs.max(f64::EPSILON);
        let margin = (0.05 * from).max(1.0) + 2.0 * expected.sqrt() / secs.max(f64::EPSILON);
        let credit_spent = self.judge_probe((admitted + noise).floor(), full, margin);
        // What held before counts below the rate pushed back, or only up
        // to what was admitted when that shows the earlier passes unsafe.
        self.remember(from, Some(if credit_spent { measured } else { below }));
        let decision = match self.phase {
            Phase::Probe { .. } => {
                // Back to the held rate: the noise in the window says
                // nothing against it. Unless the limit fell under it (what
                // was admitted), or a full window shows the partner
                // admitting more (a probe that overshot far); a probe that
                // ended early measured too short a time to say.
                let back_to = if fell || credit_spent {
                    measured
                } else if secs >= WINDOW.as_secs_f64() {
                    self.held.max(measured).min(below)
                } else {
                    self.held.min(below)
                };
                let same = self.ceiling.is_some_and(|c| c.rate <= from);
                self.probe_wait = if same {
                    (self.probe_wait * 2).min(PROBE_WAIT_MAX)
                } else {
                    PROBE_WAIT
                };
                self.ceiling = Some(Ceiling {
                    rate: from,
                    at: clock,
                });
                self.held = back_to;
                Decision::ProbeFailed {
                    ceiling: from,
                    back_to,
                    wait: self.probe_wait,
                }
            }
            Phase::SlowStart | Phase::Hold { .. } | Phase::Check { .. } => {
                self.ceiling = Some(Ceiling {
                    rate: from,
                    at: clock,
                });
                self.probe_wait = PROBE_WAIT;
                // Slow start's last step overshot: at least the rate before it.
                self.held = if self.phase == Phase::SlowStart {
                    self.held.max(measured).min(below)
                } else {
                    measured
                };
                Decision::Cut {
                    from,
                    to: self.held,
                }
            }
        };
        self.set(self.held);
        self.verified = self.verified.min(self.held);
        // A cut by half: the limit fell far under the rates that taught
        // the noise level, and their 429s may have been its.
        let held = self.held;
        if held <= 0.5 * from {
            self.noise.retain(|&(_, rate, _, _)| rate <= held);
        }
        self.phase = Phase::Hold {
            since: Duration::ZERO,
        };
        vec![decision]
    }

    /// The window passed: raise in slow start, probe after the wait, step
    /// up while a probe passes.
    fn passed(&mut self, in_use: bool) -> Vec<Decision> {
        let from = self.rate;
        match self.phase {
            Phase::SlowStart if in_use && from < self.max => {
                let to = (from * SLOW_START).ceil().min(self.max);
                self.held = from;
                self.set(to);
                vec![Decision::Raised { from, to }]
            }
            Phase::SlowStart => Vec::new(),
            // 429s passed for noise at a rate not yet checked: one below,
            // for a few windows.
            Phase::Hold { .. }
                if self.rate > self.verified && self.rate > 1.0 && {
                    let seen = self.streak();
                    seen.throttled >= CHECK_AFTER && in_use
                } =>
            {
                let above = self.streak();
                let to = from - 1.0;
                self.set(to);
                self.phase = Phase::Check {
                    rate: from,
                    above,
                    below: Tick::default(),
                    secs: 0.0,
                    windows: 0,
                };
                vec![Decision::CheckStarted { from, to }]
            }
            // Probe only from a rate seen to hold for a few windows: a held
            // rate a little above the limit shows there first.
            Phase::Hold { since }
                if in_use
                    && since >= self.probe_wait
                    && self.creeping.len() >= CREEP_WINDOWS[0]
                    && from < self.max =>
            {
                let to = (from + 1.0).min(self.max);
                self.held = from;
                // Probes until a full window judges them make one record.
                // The held rate is the top passed only if it held with no
                // 429 at all: a fixed window refuses one above its limit
                // now and then, which the noise level, learned from the
                // same windows, would explain.
                let top = if self.streak().throttled == 0 {
                    from
                } else {
                    0.0
                };
                self.set(to);
                self.probe.get_or_insert(ProbeRecord {
                    admitted: 0.0,
                    secs: 0.0,
                    top,
                });
                self.phase = Phase::Probe {
                    windows: 0,
                    step: 2.0,
                    seen: Tick::default(),
                };
                vec![Decision::ProbeStarted { from, to }]
            }
            Phase::Hold { .. } => Vec::new(),
            Phase::Check { .. } if !in_use => Vec::new(),
            Phase::Check {
                rate,
                above,
                mut below,
                secs,
                windows,
            } => {
                below.add(self.last);
                let secs = secs + self.last_secs;
                if windows + 1 < CHECK_WINDOWS {
                    self.phase = Phase::Check {
                        rate,
                        above,
                        below,
                        secs,
                        windows: windows + 1,
                    };
                    return Vec::new();
                }
                self.phase = Phase::Hold {
                    since: Duration::ZERO,
                };
                // At the same share, one below would have seen this many;
                // fewer than half is the limit's (sitting one above it
                // costs more than one below).
                let expected =
                    above.throttled as f64 * below.requests as f64 / above.requests.max(1) as f64;
                if (below.throttled as f64) * 2.0 < expected {
                    // A bucket behind the limit refilled by what the check
                    // sent under it.
                    let refilled = from * secs - (below.requests - below.throttled) as f64;
                    self.limit_found(rate, from, below, refilled)
                } else {
                    self.verified = rate;
                    self.set(rate);
                    vec![Decision::NoiseConfirmed { rate }]
                }
            }
            // A window the pool did not fill (a pool-wide pause, a slow
            // input) says nothing of the probe's rate: it neither passes
            // nor fails.
            Phase::Probe { .. } if !in_use => Vec::new(),
            Phase::Probe {
                windows,
                step,
                mut seen,
            } => {
                // +1 holds a second window: the first 429 above a limit
                // can take a full second to come. Re-testing a ceiling
                // that stands at this rate, it holds four: a limit a
                // fraction under it refuses less than one a second.
                // A bucket's credit may be carrying the probe: its windows
                // count once that is spent, and four of them.
                if self.bucket.is_some_and(|b| b.carried(from)) {
                    return Vec::new();
                }
                seen.add(self.last);
                let known = self.ceiling.is_some_and(|c| c.rate <= from) || self.bucket.is_some();
                let hold = if known { RETEST_WINDOWS } else { 2 };
                if step <= 2.0 && windows + 1 < hold {
                    self.phase = Phase::Probe {
                        windows: windows + 1,
                        step,
                        seen,
                    };
                    return Vec::new();
                }
                // A rate that passed with more 429s than the noise level
                // expects holds, and does not step on: a rate one above a
                // fixed window's limit is refused about once a second, and
                // a step above it draws a cluster (a `Retry-After` pause).
                // Held, its 429s are checked one below; until then it is
                // neither a bucket's refill, nor the top a probe passed,
                // nor past the ceiling.
                let excess = self.excess(seen);
                if !excess {
                    if let Some(b) = &mut self.bucket {
                        b.refill = b.refill.max(from);
                    }
                    if let Some(p) = &mut self.probe {
                        p.top = p.top.max(from);
                    }
                    if self.ceiling.is_some_and(|c| c.rate <= from) {
                        self.ceiling = None;
                    }
                }
                self.held = from;
                self.probe_wait = PROBE_WAIT;
                if from >= self.max || excess {
                    self.phase = Phase::Hold {
                        since: Duration::ZERO,
                    };
                    return vec![Decision::ProbePassed {
                        held: from,
                        next: from,
                    }];
                }
                // Never past a ceiling that stands: it is re-tested first.
                let next = (from + step)
                    .min(self.max)
                    .min(self.ceiling.map_or(f64::INFINITY, |c| c.rate))
                    .max(from + 1.0);
                self.set(next);
                self.phase = Phase::Probe {
                    windows: windows + 1,
                    step: step * 2.0,
                    seen: Tick::default(),
                };
                vec![Decision::ProbePassed { held: from, next }]
            }
        }
    }

    /// The held windows at the rate now, summed.
    fn streak(&self) -> Tick {
        self.creeping.iter().fold(Tick::default(), |mut s, t| {
            s.add(*t);
            s
        })
    }

    /// A push-back found `measured` a second admitted, over a `full`
    /// window or not, give or take `margin`: whether the last probe's
    /// passes were a token bucket's credit (a full window admitted less
    /// than a rate that passed), and what that teaches of the bucket.
    fn judge_probe(&mut self, measured: f64, full: bool, margin: f64) -> bool {
        let probe = self.probe;
        let credit_spent = full && probe.is_some_and(|p| measured + margin < p.top);
        if let Some(p) = probe.filter(|_| credit_spent) {
            // At least a second's worth: the common burst, and more than
            // one probe can show.
            let cap = (p.admitted - measured * p.secs)
                .max(measured)
                .max(self.bucket.map_or(0.0, |b| b.cap));
            self.bucket = Some(Bucket {
                refill: measured,
                cap,
                credit: 0.0,
                before: 0.0,
            });
        } else if let Some(b) = &mut self.bucket {
            // Pushed back: whatever the bucket held is spent.
            b.credit = 0.0;
            if full {
                b.refill = measured;
            }
        }
        // A probe cut short is judged by the held windows after it.
        if full || !matches!(self.phase, Phase::Probe { .. }) {
            self.probe = None;
        }
        credit_spent
    }

    /// A check found `ceiling`'s 429s were the limit's: hold at `back_to`,
    /// one below, and forget what those windows taught the noise level.
    /// What the check saw down there (`below`) starts `back_to`'s streak
    /// when the noise does not explain it: 429s that fell by half but went
    /// on (two above a fixed window's limit, then one) are checked one
    /// further below.
    fn limit_found(
        &mut self,
        ceiling: f64,
        back_to: f64,
        below: Tick,
        refilled: f64,
    ) -> Vec<Decision> {
        self.ceiling = Some(Ceiling {
            rate: ceiling,
            at: self.clock,
        });
        self.probe_wait = PROBE_WAIT;
        self.held = back_to;
        self.verified = self.verified.min(back_to);
        // A check compares two rates directly: the ceiling itself had
        // passed.
        self.judge_probe(back_to, true, 0.0);
        if let Some(b) = &mut self.bucket {
            b.credit = refilled.clamp(0.0, b.cap);
        }
        self.noise.retain(|&(_, rate, _, _)| rate < ceiling);
        self.history
            .retain(|p| p.pushed.is_some() || p.rate < ceiling);
        self.remember(ceiling, Some(back_to));
        if let Some(p) = self.history.back_mut() {
            p.clustered = true;
        }
        // 429s down there beyond what the noise learned under it explains
        // start the lower rate's count, so they are checked one further
        // below soon; noise alone does not.
        let expected = self.expected_noise_under(below.requests, back_to);
        if below.throttled as f64 > expected + expected.sqrt() {
            self.creeping = VecDeque::from([below]);
            self.creeping_rate = back_to;
        }
        vec![Decision::LimitFound { ceiling, back_to }]
    }

    fn set(&mut self, rate: f64) {
        if (rate - self.rate).abs() > f64::EPSILON {
            // After a cut, the partner's window still holds the second
            // before it, and its 429s say nothing of the new rate. A raise
            // counts from the next tick: its first request above the old
            // rate may be refused at once (the partner's second is full).
            self.settle = if rate < self.rate {
                SETTLE_AFTER_CUT
            } else {
                0
            };
            self.rate = rate;
        }
    }

    /// Remember a window: the rate that held, or the rate pushed back and
    /// what the partner admitted of it.
    fn remember(&mut self, rate: f64, admitted: Option<f64>) {
        self.history.push_back(Past {
            at: self.clock,
            rate,
            pushed: admitted,
            seen: if admitted.is_some() {
                Tick::default()
            } else {
                self.last
            },
            sent_at: self.rate,
            clustered: admitted.is_some() && self.last.throttled >= 2,
        });
        while self
            .history
            .front()
            .is_some_and(|p| self.clock.saturating_sub(p.at) > LOOKBACK)
        {
            self.history.pop_front();
        }
    }
}

impl Decision {
    /// The decision's name in the log.
    fn name(&self) -> &'static str {
        match self {
            Decision::Cut { .. } => "cut",
            Decision::Overloaded { .. } => "overloaded",
            Decision::Raised { .. } => "raised",
            Decision::ProbeStarted { .. } => "probe started",
            Decision::ProbePassed { .. } => "probe passed",
            Decision::ProbeFailed { .. } => "probe failed",
            Decision::CeilingExpired { .. } => "ceiling expired",
            Decision::NoiseIgnored => "noise ignored",
            Decision::CheckStarted { .. } => "noise check started",
            Decision::NoiseConfirmed { .. } => "noise confirmed",
            Decision::LimitFound { .. } => "limit found",
        }
    }

    /// Log the decision with the window's figures, the rate before and
    /// after it, and the ceiling after it: one line, debug, or info for
    /// the cuts an operator should see.
    fn log(&self, w: Tick, from: f64, to: f64, ceiling: Option<f64>) {
        let decision = self.name();
        let (requests, throttled, overloaded) = (w.requests, w.throttled, w.overloaded);
        match self {
            Decision::Cut { .. } | Decision::Overloaded { .. } | Decision::LimitFound { .. } => {
                tracing::info!(
                    decision,
                    from,
                    to,
                    ?ceiling,
                    requests,
                    throttled,
                    overloaded,
                    "partner pushing back: rate lowered"
                )
            }
            _ => tracing::debug!(
                decision,
                from,
                to,
                ?ceiling,
                requests,
                throttled,
                overloaded,
                "rate decision"
            ),
        }
    }
}

/// Run the controller of `--rate auto` (`settings::Rate::Auto`'s bounds)
/// against the engine's counters until aborted.
pub(crate) async fn adapt(pace: Arc<Pace>, counters: Arc<EngineCounters>, start: u32, max: u32) {
    let mut ctl = Controller::new(f64::from(start), f64::from(max));
    pace.set_rate(ctl.rate());
    let read = |c: &EngineCounters| Tick {
        requests: c.requests_sent.load(Ordering::Relaxed),
        throttled: c.throttled_429.load(Ordering::Relaxed),
        overloaded: c.overloaded.load(Ordering::Relaxed),
        paused_us: c.pool_held_micros.load(Ordering::Relaxed),
        pauses: 0,
    };
    let mut last = read(&counters);
    // A pause is counted when it begins, by the 429s of the tick it began
    // in: it is spread over the ticks after that one.
    let tick_us = TICK.as_micros() as u64;
    let mut paused = 0u64;
    loop {
        tokio::time::sleep(TICK).await;
        let now = read(&counters);
        let delta = Tick {
            requests: now.requests - last.requests,
            throttled: now.throttled - last.throttled,
            overloaded: now.overloaded - last.overloaded,
            paused_us: paused.min(tick_us),
            pauses: u64::from(now.paused_us > last.paused_us),
        };
        paused = paused - delta.paused_us + (now.paused_us - last.paused_us);
        last = now;
        let before = ctl.rate();
        let mut pushed_back = false;
        for d in ctl.tick(delta, TICK) {
            d.log(ctl.last_window(), before, ctl.rate(), ctl.ceiling());
            match d {
                Decision::NoiseIgnored => pace.note_noise(ctl.last_window().throttled),
                Decision::Cut { .. }
                | Decision::ProbeFailed { .. }
                | Decision::LimitFound { .. } => pushed_back = true,
                _ => {}
            }
        }
        pace.note_controller(ctl.safe_rate(), ctl.ceiling());
        if pushed_back {
            pace.cut_rate(ctl.rate());
        } else if (ctl.rate() - before).abs() > f64::EPSILON {
            pace.set_rate(ctl.rate());
        }
    }
}

#[cfg(test)]
mod tests;
