//! What a run does beside writing each row, on the recorder's thread: in a
//! live run the circuit breaker, the `--state` file, the progress bar and
//! the timeline's gauges ([`LiveWatch`]); in any run `--metrics-file`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exec::breaker::{CircuitBreaker, Lookahead};
use crate::exec::counters::EngineCounters;
use crate::exec::feed::Tag;
use crate::exec::pace::Pace;
use crate::exec::stop::{Stop, StopKind};
use crate::outcome::{Outcome, Status};
use crate::progress::RunBar;
use crate::report::journal::Progress;
use crate::report::metrics::{self, Snapshot};
use crate::report::recorder::Watch;
use crate::report::timeline::{Sample, Second};
use crate::report::{Counts, EngineFigures, ReportError, Summary};
use crate::state::{Fingerprint, Recorded, StateStore, StoredStatus};

/// The run's [`Watch`].
pub(crate) struct RunWatch<P> {
    /// What only a live run watches; `None` in a dry run.
    pub(crate) live: Option<LiveWatch>,
    pub(crate) stop: Stop,
    /// The request figures and active time so far.
    pub(crate) progress: P,
    /// `--metrics-file`.
    pub(crate) metrics: Option<MetricsSink>,
}

/// What a live run does beside writing each row.
pub(crate) struct LiveWatch {
    /// The circuit breaker, and the feed's lookahead it sets.
    pub(crate) breaker: CircuitBreaker,
    pub(crate) gate: Arc<Lookahead>,
    /// `--state`.
    pub(crate) state: Option<StateSink>,
    pub(crate) bar: RunBar,
    /// `--rate auto`: the bar shows the rate.
    pub(crate) show_rate: bool,
    /// The limiter and counters, sampled for the timeline.
    pub(crate) gauges: Gauges,
}

impl<P> RunWatch<P> {
    /// The run is over: clear the bar.
    pub(crate) fn finish_bar(&self) {
        if let Some(live) = &self.live {
            live.bar.finish();
        }
    }
}

/// What the timeline samples of a live run each second.
pub(crate) struct Gauges {
    pub(crate) pace: Arc<Pace>,
    pub(crate) counters: Arc<EngineCounters>,
    /// The controller's noise count at the last sample.
    pub(crate) noise_seen: u64,
}

impl Gauges {
    /// The rate, in-flight requests, latency and `--rate auto`'s ceiling
    /// now, and the 429s it took for noise since the last sample, with `figures`.
    pub(crate) fn sample(&mut self, figures: crate::report::EngineFigures) -> Sample {
        let noise = self.pace.noise_429();
        let noise_429 = noise.saturating_sub(self.noise_seen);
        self.noise_seen = noise;
        Sample {
            figures,
            rate: Some(self.pace.rate()),
            in_flight: self.counters.in_flight(),
            latency_ms: self.counters.take_latency(),
            ceiling: self.pace.ceiling(),
            noise_429,
        }
    }
}

impl<P: Fn() -> Progress + Send + 'static> Watch for RunWatch<P> {
    type Extra = Tag;

    fn recorded(&mut self, outcome: &Outcome, tag: Tag) {
        let Some(live) = &mut self.live else {
            return;
        };
        if let Some(sink) = &mut live.state {
            sink.note(outcome, tag.hash);
        }
        let tripped = live.breaker.observe(tag.seq, outcome);
        live.gate.judged(live.breaker.judged_up_to());
        if let Some(message) = tripped {
            tracing::error!("{message}");
            self.stop.trip(StopKind::Fatal, message);
        }
    }

    fn progress(&self) -> Progress {
        (self.progress)()
    }

    fn checkpointed(&mut self, counts: &Counts, progress: Progress) {
        let Some(live) = &mut self.live else {
            return;
        };
        if let Some(sink) = &mut live.state {
            sink.flush(&self.stop);
        }
        let f = EngineFigures::from(progress);
        let mut extra = crate::report::brief([("retries", f.retries), ("429s", f.throttled_429)]);
        if live.show_rate {
            extra.push_str(&format!(" rate={:.1}/s", live.gauges.pace.rate()));
        }
        live.bar.update(counts.total(), counts, extra.trim());
    }

    fn failed(&mut self, e: &ReportError) {
        self.stop.trip(StopKind::Fatal, report_failed_message(e));
    }

    fn sample(&mut self) -> Sample {
        let figures = EngineFigures::from((self.progress)());
        match &mut self.live {
            Some(live) => live.gauges.sample(figures),
            None => Sample {
                figures,
                ..Sample::default()
            },
        }
    }

    fn ticked(&mut self, counts: &Counts, line: &Second) {
        if let Some(m) = &mut self.metrics {
            m.during(counts, line, (self.progress)(), self.live.is_none());
        }
    }
}

/// The stop's message when the reports cannot be written mid-run (a full
/// disk, say): what failed, and that the run can go on from its journal.
pub(crate) fn report_failed_message(e: &ReportError) -> String {
    format!(
        "{}; the run stopped: free space (or fix the cause), then run it again with \
         --resume and the same --out to continue",
        crate::error::chain(e)
    )
}

/// How often `--metrics-file` is rewritten while the run goes on.
const METRICS_EVERY: Duration = Duration::from_secs(10);

/// `--metrics-file`: the run's figures for Prometheus, written at the first
/// second, every [`METRICS_EVERY`] after it and at the end. A failed write
/// is a warning (once): monitoring never stops or fails the run.
pub(crate) struct MetricsSink {
    path: PathBuf,
    started_unix: f64,
    last: Option<Instant>,
    warned: bool,
}

impl MetricsSink {
    /// Metrics of a run that started at `started`.
    pub(crate) fn new(path: PathBuf, started: jiff::Timestamp) -> MetricsSink {
        MetricsSink {
            path,
            started_unix: started.as_millisecond() as f64 / 1000.0,
            last: None,
            warned: false,
        }
    }

    /// A second of a run (dry or not) closed: rewrite the file if it is due.
    fn during(&mut self, counts: &Counts, line: &Second, progress: Progress, dry_run: bool) {
        if self.last.is_some_and(|t| t.elapsed() < METRICS_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let rows = Status::ALL.map(|st| (st.as_str(), counts.get(st)));
        let f = EngineFigures::from(progress);
        self.write(&Snapshot {
            rows: &rows,
            requests_sent: f.requests_sent,
            throttled_429: f.throttled_429,
            retries: f.retries,
            token_refreshes: f.token_refreshes,
            rate_per_second: line.rate,
            duration_seconds: progress.elapsed().as_secs_f64(),
            started_unix: self.started_unix,
            exit_code: None,
            dry_run,
            now_unix: now_unix(),
        });
    }

    /// The run ended as `summary` says.
    pub(crate) fn at_end(&mut self, summary: &Summary) {
        let rows = Status::ALL.map(|st| {
            let n = summary.counts.get(st.as_str()).copied().unwrap_or(0);
            (st.as_str(), n)
        });
        self.write(&Snapshot {
            rows: &rows,
            requests_sent: summary.requests_sent,
            throttled_429: summary.throttled_429,
            retries: summary.retries,
            token_refreshes: summary.token_refreshes,
            rate_per_second: summary.rate.as_ref().map(|r| r.final_per_second),
            duration_seconds: summary.elapsed_seconds,
            started_unix: self.started_unix,
            exit_code: Some(summary.exit_code),
            dry_run: summary.dry_run,
            now_unix: now_unix(),
        });
    }

    fn write(&mut self, snapshot: &Snapshot<'_>) {
        if let Err(e) = metrics::write(&self.path, snapshot)
            && !self.warned
        {
            tracing::warn!(error = %crate::error::chain(&e), "cannot write the metrics file; the run goes on");
            self.warned = true;
        }
    }
}

fn now_unix() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
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

    fn note(&mut self, o: &Outcome, print: Option<Fingerprint>) {
        if let (Some(status), Some(print)) = (StoredStatus::from_outcome(o.status), print) {
            let validated_address = o.address.as_deref().map(|a| {
                serde_json::json!({
                    "address_line_1": a.address_line_1,
                    "postal_code": a.postal_code,
                    "long_distance_delivery": a.long_distance_delivery,
                })
                .to_string()
            });
            self.pending.push(Recorded {
                user_id: o.user_id.clone(),
                payload_hash: print.user,
                status,
                at: jiff::Timestamp::now(),
                address_hash: print.address,
                validated_address,
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
