//! What a run does beside writing each row, on the recorder's thread: the
//! circuit breaker, the `--state` file and the progress bar.

use std::sync::Arc;

use crate::exec::breaker::CircuitBreaker;
use crate::exec::counters::EngineCounters;
use crate::exec::pace::Pace;
use crate::exec::stop::{Stop, StopKind};
use crate::outcome::Outcome;
use crate::progress::RunBar;
use crate::report::journal::Progress;
use crate::report::recorder::Watch;
use crate::report::timeline::{Sample, Second};
use crate::report::{Counts, EngineFigures, ReportError};
use crate::state::{PayloadHash, Recorded, StateStore, StoredStatus};

/// The run's [`Watch`].
pub(crate) struct RunWatch<P> {
    /// `None` in a dry run.
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) state: Option<StateSink>,
    pub(crate) bar: RunBar,
    pub(crate) stop: Stop,
    /// Shown on the bar with `--rate auto`.
    pub(crate) pace: Option<Arc<Pace>>,
    /// The request figures and active time so far.
    pub(crate) progress: P,
    /// The live run's limiter and counters, sampled for the timeline.
    pub(crate) gauges: Option<Gauges>,
}

/// What the timeline samples of a live run each second.
pub(crate) struct Gauges {
    pub(crate) pace: Arc<Pace>,
    pub(crate) counters: Arc<EngineCounters>,
}

impl Gauges {
    /// The rate, in-flight requests and latency now, with `figures`.
    pub(crate) fn sample(&self, figures: crate::report::EngineFigures) -> Sample {
        Sample {
            figures,
            rate: Some(self.pace.rate()),
            in_flight: self.counters.in_flight(),
            latency_ms: self.counters.take_latency(),
        }
    }
}

impl<P: Fn() -> Progress + Send + 'static> Watch for RunWatch<P> {
    type Extra = Option<PayloadHash>;

    fn recorded(&mut self, outcome: &Outcome, hash: Option<PayloadHash>) {
        if let Some(sink) = &mut self.state {
            sink.note(outcome, hash);
        }
        if let Some(message) = self.breaker.as_mut().and_then(|b| b.observe(outcome)) {
            tracing::error!("{message}");
            self.stop.trip(StopKind::Fatal, message);
        }
    }

    fn progress(&self) -> Progress {
        (self.progress)()
    }

    fn checkpointed(&mut self, counts: &Counts, progress: Progress) {
        if let Some(sink) = &mut self.state {
            sink.flush(&self.stop);
        }
        let f = EngineFigures::from(progress);
        let mut extra = crate::report::brief([("retries", f.retries), ("429s", f.throttled_429)]);
        if let Some(pace) = &self.pace {
            extra.push_str(&format!(" rate={:.1}/s", pace.rate()));
        }
        self.bar.update(counts.total(), counts, extra.trim());
    }

    fn failed(&mut self, e: &ReportError) {
        self.stop.trip(StopKind::Fatal, crate::error::chain(e));
    }

    fn sample(&mut self) -> Sample {
        let figures = EngineFigures::from((self.progress)());
        match &self.gauges {
            Some(g) => g.sample(figures),
            None => Sample {
                figures,
                ..Sample::default()
            },
        }
    }

    fn ticked(&mut self, _counts: &Counts, _line: &Second) {}
}

/// The state store's side of the recorder: successes of sent rows wait in
/// `pending` and are written in one transaction per journal checkpoint.
pub(crate) struct StateSink {
    pub(crate) store: StateStore,
    pub(crate) run_id: i64,
    pending: Vec<Recorded>,
    failed: bool,
}

impl StateSink {
    pub(crate) fn new(store: StateStore, run_id: i64) -> StateSink {
        StateSink {
            store,
            run_id,
            pending: Vec::new(),
            failed: false,
        }
    }

    fn note(&mut self, o: &Outcome, hash: Option<PayloadHash>) {
        if let (Some(status), Some(payload_hash)) = (StoredStatus::from_outcome(o.status), hash) {
            self.pending.push(Recorded {
                user_id: o.user_id.clone(),
                payload_hash,
                status,
                at: jiff::Timestamp::now(),
            });
        }
    }

    fn flush(&mut self, stop: &Stop) {
        if self.pending.is_empty() || self.failed {
            return;
        }
        if let Err(e) = self.store.record(&self.pending) {
            // The reports stay right; the next run resends these and gets `exists`.
            tracing::error!(error = %crate::error::chain(&e), "cannot record in the state");
            stop.trip(StopKind::Fatal, crate::error::chain(&e));
            self.failed = true;
        }
        self.pending.clear();
    }
}
