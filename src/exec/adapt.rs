//! `--rate auto`: find the partner's limit while running and hold it, through
//! noise, limit changes and `Retry-After`.
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
//! - **A cut goes to what the partner admitted.** A strict limiter admits L
//!   a second whatever is sent, so in a pushed-back window the requests that
//!   were not refused, per second, measure L. The rate drops to that (at
//!   most halving in one window), not by a fixed factor: a slow start that
//!   overshoots, or a limit that fell from 40 to 13, lands on the limit in
//!   one or two windows.
//! - **Hold, then probe.** The rate holds at the best rate known to pass.
//!   After a wait it probes above: +1 for two windows (one 429 costs one
//!   retry), then a step that doubles each window that passes (+2, +4, …),
//!   so a limit that rose is found in seconds. A probe that is pushed back
//!   returns to the held rate and sets a *ceiling* there; each probe that
//!   fails at the same ceiling doubles the wait (2 s up to [`PROBE_WAIT_MAX`]),
//!   since each can cost a `Retry-After` pause somewhere. A ceiling expires
//!   after [`CEILING_TTL`], and a probe that passes resets the wait.
//! - **A limit that creeps up under a held rate** (the held rate was one
//!   above the limit, or the limit fell by a little) shows as 429s in every
//!   window: three held windows whose 429s together exceed the noise cut
//!   like a single pushed-back one.
//! - **5xx and timeouts never set a ceiling.** A window where more than a
//!   tenth of the requests met a 503 or a timeout cuts ×0.9 and waits before
//!   probing; scattered ones are ignored.
//!
//! [`Controller::safe_rate`] is the highest rate held without push-back over
//! the last minute: what `rate.final_per_second` reports, a rate the next
//! night can start from (not the trough after the last cut). Every decision
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

/// Slow start multiplies the rate by this each window that passes.
const SLOW_START: f64 = 1.5;

/// What one tick (or window) saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tick {
    pub(crate) requests: u64,
    pub(crate) throttled: u64,
    /// 503s and timeouts.
    pub(crate) overloaded: u64,
}

impl Tick {
    fn add(&mut self, t: Tick) {
        self.requests += t.requests;
        self.throttled += t.throttled;
        self.overloaded += t.overloaded;
    }
}

/// Where the controller is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Multiplying the rate until the first push-back.
    SlowStart,
    /// Holding the best rate known to pass, until `since` reaches the wait.
    Hold { since: Duration },
    /// Above the held rate: `windows` passed so far, the next `step`.
    Probe { windows: u32, step: f64 },
}

/// A rate that was pushed back.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ceiling {
    rate: f64,
    /// The controller's clock when it was last confirmed.
    at: Duration,
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
}

/// The controller of `--rate auto`.
#[derive(Clone, Debug)]
pub(crate) struct Controller {
    /// `--rate-max`.
    max: f64,
    rate: f64,
    /// The best rate known to pass.
    held: f64,
    /// The rate the last push-back measured as admitted: held windows at
    /// or below it are under the limit, so their 429s are noise. Windows
    /// above it (after a probe passed) do not teach the noise level: a
    /// limit a little below the held rate would pass for noise.
    trusted: f64,
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
    noise: VecDeque<(Duration, u64, u64)>,
    /// The last held windows at the current rate, for a limit that creeps
    /// under it.
    creeping: VecDeque<Tick>,
    /// The last minute's windows: when, the rate that held (or the rate
    /// pushed back), and whether it was pushed back.
    history: VecDeque<(Duration, f64, bool)>,
    /// The last window decided, for the log.
    last: Tick,
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
            trusted: f64::INFINITY,
            phase: Phase::SlowStart,
            ceiling: None,
            probe_wait: PROBE_WAIT,
            clock: Duration::ZERO,
            window: Tick::default(),
            window_len: Duration::ZERO,
            settle: 0,
            noise: VecDeque::new(),
            creeping: VecDeque::new(),
            history: VecDeque::new(),
            last: Tick::default(),
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
    /// noise) when that is less. A rate that held before the latest
    /// push-back counts only below the rate that push-back came at: what
    /// held before the limit fell is no longer safe. The held rate when no
    /// window qualifies.
    pub(crate) fn safe_rate(&self) -> f64 {
        let last_push = self.history.iter().rposition(|&(_, _, pushed)| pushed);
        let below = |i: usize| match last_push {
            Some(p) if i < p => self.history[p].1,
            _ => f64::INFINITY,
        };
        self.history
            .iter()
            .enumerate()
            .filter(|&(i, &(_, rate, pushed))| !pushed && rate < below(i))
            .map(|(_, &(_, rate, _))| rate)
            .fold(None, |best: Option<f64>, r| {
                Some(best.map_or(r, |b| b.max(r)))
            })
            .unwrap_or(self.rate.min(self.held))
    }

    /// Feed one tick of `tick` length; returns the decisions it led to
    /// (usually none: a window is still filling).
    pub(crate) fn tick(&mut self, t: Tick, tick: Duration) -> Vec<Decision> {
        self.clock += tick;
        let mut out = Vec::new();
        if let Some(c) = self.ceiling
            && self.clock.saturating_sub(c.at) >= CEILING_TTL
        {
            self.ceiling = None;
            self.probe_wait = PROBE_WAIT;
            self.trusted = self.trusted.max(self.held);
            out.push(Decision::CeilingExpired { ceiling: c.rate });
        }
        if let Phase::Hold { since } = &mut self.phase {
            *since += tick;
        }
        // A tick mostly refused is news even right after a change: the
        // limit fell (the cut's own stale 429s are a few, not most).
        let refused = t.throttled >= 5 && t.throttled * 2 > t.requests;
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
        let (n, k) = self
            .noise
            .iter()
            .fold((0u64, 0u64), |(n, k), &(_, wn, wk)| (n + wn, k + wk));
        // A prior of one 429 in a thousand until the minute has data.
        let share = (k as f64 + 0.1) / (n as f64 + 100.0);
        share.min(NOISE_MAX) * requests as f64
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
    /// more, and one spurious 429 must not end it at a low rate).
    fn pushed(&self, w: Tick) -> bool {
        if matches!(self.phase, Phase::Probe { .. }) {
            self.beyond_noise(w.requests, w.throttled, 2.0, 0.5)
        } else {
            self.beyond_noise(w.requests, w.throttled, 3.0, 1.0)
        }
    }

    /// Judge a full window of `secs` seconds.
    fn decide(&mut self, w: Tick, secs: f64) -> Vec<Decision> {
        self.last = w;
        let probing = matches!(self.phase, Phase::Probe { .. } | Phase::SlowStart);
        let pushed = self.pushed(w);
        let creeping = (!pushed && !probing)
            .then(|| self.held_window(w, secs))
            .flatten();
        let admitted = (w.requests - w.throttled) as f64 / secs;
        // What held: the rate, or what the partner admitted of it when that
        // is less (429s beyond noise that no test caught yet, an idle run).
        let noise = self.expected_noise(w.requests) / secs;
        let held = self.rate.min((admitted + noise + 1e-6).floor());
        // A pushed-back window is remembered at the rate pushed back.
        let back = pushed || creeping.is_some();
        self.remember(if back { self.rate } else { held }, back);
        let overloaded = w.requests >= 10 && w.overloaded * 10 > w.requests && w.overloaded >= 3;
        let in_use = w.requests as f64 >= 0.7 * self.rate * secs;
        if let Some(admitted) = creeping {
            self.pushed_back(admitted, secs, true)
        } else if pushed {
            self.pushed_back(admitted, secs, in_use)
        } else if overloaded {
            let from = self.rate;
            let to = (from * 0.9).floor().max(1.0);
            self.set(to);
            self.held = to;
            self.phase = Phase::Hold {
                since: Duration::ZERO,
            };
            vec![Decision::Overloaded { from, to }]
        } else {
            let mut d = self.passed(in_use);
            if w.throttled > 0 {
                d.push(Decision::NoiseIgnored);
            }
            d
        }
    }

    /// A held window with no cluster: keep it for the creeping test and,
    /// at a trusted rate, for the noise level. Returns what the partner
    /// admitted a second when the last few held windows together show a
    /// limit under the held rate.
    fn held_window(&mut self, w: Tick, secs: f64) -> Option<f64> {
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
        if creeping.is_none() && self.rate <= self.trusted {
            self.noise.push_back((self.clock, w.requests, w.throttled));
        }
        while self
            .noise
            .front()
            .is_some_and(|&(at, _, _)| self.clock.saturating_sub(at) > LOOKBACK)
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
        let fell = w.throttled >= 3 && w.throttled * 4 > w.requests && small_step;
        let clock = self.clock;
        // What the partner admitted, at most halving at once, and at
        // least one below the rate that was pushed back. A window the pool
        // did not fill (paused by a Retry-After, say) measures the pause,
        // not the limit: at most ×0.9 then.
        let below = (from - 1.0).max(1.0);
        let most = if in_use { 0.5 } else { 0.9 };
        let measured = admitted
            .floor()
            .clamp((from * most).floor().max(1.0), below);
        let decision = match self.phase {
            Phase::Probe { .. } => {
                // Back to the held rate: the noise in the window says
                // nothing against it. Unless the limit fell under it (what
                // was admitted), or a full window shows the partner
                // admitting more (a probe that overshot far); a probe that
                // ended early measured too short a time to say.
                let back_to = if fell {
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
            Phase::SlowStart | Phase::Hold { .. } => {
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
        // Rates up to what was admitted are under the limit; a window cut
        // short measured too little time to vouch for more than the rate
        // now.
        self.trusted = measured.min(self.held);
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
                self.set(to);
                self.phase = Phase::Probe {
                    windows: 0,
                    step: 2.0,
                };
                vec![Decision::ProbeStarted { from, to }]
            }
            Phase::Hold { .. } => Vec::new(),
            // A window the pool did not fill (a pool-wide pause, a slow
            // input) says nothing of the probe's rate: it neither passes
            // nor fails.
            Phase::Probe { .. } if !in_use => Vec::new(),
            Phase::Probe { windows, step } => {
                if windows == 0 {
                    // +1 holds a second window: the first 429 above a
                    // limit can take a full second to come.
                    self.phase = Phase::Probe { windows: 1, step };
                    return Vec::new();
                }
                self.held = from;
                self.probe_wait = PROBE_WAIT;
                if self.ceiling.is_some_and(|c| c.rate <= from) {
                    self.ceiling = None;
                }
                if from >= self.max {
                    self.phase = Phase::Hold {
                        since: Duration::ZERO,
                    };
                    return vec![Decision::ProbePassed {
                        held: from,
                        next: from,
                    }];
                }
                let next = (from + step).min(self.max);
                self.set(next);
                self.phase = Phase::Probe {
                    windows: windows + 1,
                    step: step * 2.0,
                };
                vec![Decision::ProbePassed { held: from, next }]
            }
        }
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
            self.creeping.clear();
        }
    }

    fn remember(&mut self, rate: f64, pushed: bool) {
        self.history.push_back((self.clock, rate, pushed));
        while self
            .history
            .front()
            .is_some_and(|&(at, _, _)| self.clock.saturating_sub(at) > LOOKBACK)
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
        }
    }

    /// Log the decision with the window's figures, the rate before and
    /// after it, and the ceiling after it: one line, debug, or info for
    /// the cuts an operator should see.
    fn log(&self, w: Tick, from: f64, to: f64, ceiling: Option<f64>) {
        let decision = self.name();
        let (requests, throttled, overloaded) = (w.requests, w.throttled, w.overloaded);
        match self {
            Decision::Cut { .. } | Decision::Overloaded { .. } => tracing::info!(
                decision,
                from,
                to,
                ?ceiling,
                requests,
                throttled,
                overloaded,
                "partner pushing back: rate lowered"
            ),
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
        let mut pushed_back = false;
        for d in ctl.tick(delta, TICK) {
            d.log(ctl.last_window(), before, ctl.rate(), ctl.ceiling());
            match d {
                Decision::NoiseIgnored => pace.note_noise(ctl.last_window().throttled),
                Decision::Cut { .. } | Decision::ProbeFailed { .. } => pushed_back = true,
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
