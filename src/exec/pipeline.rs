//! A run, live or dry: intake → feed → (dispatch →) recorder.
//!
//! ```text
//! feed thread (exec::feed, with intake: read, validate, duplicates, resume, state)
//!    │ job queue: bounded, batches of up to 32 rows ← backpressure: memory stays flat
//!    ▼ (live run only)
//! dispatcher task (exec::dispatch) ── semaphore (concurrency; grows with observed latency)
//!    │ one task per row: provision() = throttle → limiter → token → request → classify
//!    ▼ outcome queue (rows decided locally come straight from the feed)
//! recorder thread (report::recorder): the only writer of the reports;
//!    its watch (exec::watch) feeds the breaker, the state file and the bar
//! ```
//!
//! A dry run is the same stages with [`Sender::DryRun`]: validation runs on
//! one thread per core, valid rows go to the recorder as `valid`, and
//! nothing touches the network.
//!
//! Shutdown follows the channels closing: the feed ends → the dispatcher's
//! queue closes → the last row task drops its outcome sender → the recorder
//! ends. A stop (signal, time budget, fatal error) trips one [`Stop`]: the
//! feed keeps reading but sends nothing more; the rest are recorded `failed`
//! ("not sent: …") so results.csv still holds every data row exactly once
//! and failures.csv can finish the job. Requests already on the wire finish
//! (bounded by `--timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::Jitter;
use tokio::sync::mpsc;

use crate::api::Remote;
use crate::api::client::ConnectClient;
use crate::api::token::TokenManager;
use crate::error::Error;
use crate::exec::adapt;
use crate::exec::breaker::{CircuitBreaker, Lookahead};
use crate::exec::counters::EngineCounters;
use crate::exec::dispatch::{dispatch, initial_concurrency};
use crate::exec::feed::{Done, Queued, Sink, feed, job_queue_batches};
use crate::exec::pace::{Pace, Pacing};
use crate::exec::stop::{Stop, StopKind};
use crate::exec::throttle::Throttle;
use crate::exec::watch::{Gauges, MetricsSink, RunWatch, StateSink, report_failed_message};
use crate::exec::worker::WorkerCtx;
use crate::input::{InputDigest, InputSource};
use crate::intake::Intake;
use crate::progress::{RunBar, Ui};
use crate::report::journal::{self, ResumeError};
use crate::report::recorder::{self, Watch};
use crate::report::run_dir::{self, InputLayout, Journal, Prior, RunDir};
use crate::report::timeline::Sample;
use crate::report::view;
use crate::report::{
    Ending, EngineFigures, InputInfo, RateSummary, Recorder, ShardSummary, Summary, SummaryParts,
};
use crate::retry::RetryPolicy;
use crate::settings::{Rate, RunSettings};
use crate::state::{StateReader, StateStore};

/// Where the valid rows go: nowhere (a dry run), or to a remote.
pub enum Sender {
    /// Validate and write the reports; no network at all.
    DryRun,
    /// Send to `Remote`.
    Live(Remote),
}

/// Run `settings`; returns the summary (already written). `stop` is tripped
/// by the caller's signal handler.
pub async fn run(
    settings: &RunSettings,
    sender: Sender,
    stop: Stop,
    ui: &Ui,
) -> Result<Summary, Error> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let mut opened = open(settings, &sender, started)?;
    let (engine, target) = match sender {
        Sender::Live(remote) => (
            Some(Engine::start(settings, &remote, &stop).await?),
            Some(remote.label),
        ),
        Sender::DryRun => (None, None),
    };
    let progress = progress_of(&opened.prior, engine.as_ref(), clock);
    let (outcome_tx, outcome_rx) = mpsc::channel::<Vec<Done>>(256);
    let (live, p) = (engine.as_ref(), progress.clone());
    let lookahead = engine.as_ref().map(|_| Arc::new(Lookahead::default()));
    let watch = watch_of(settings, &mut opened, live, ui, &stop, p, lookahead.clone());
    let journaled = settings.journal && engine.is_some();
    let recorder_thread = recorder::spawn(opened.recorder, outcome_rx, watch, journaled);
    let (sink, stages) = match &engine {
        Some(e) => e.spawn(settings, outcome_tx.clone(), &stop),
        None => (Sink::Valid, Stages::default()),
    };
    let state = opened.state_reader.take();
    let read_result = run_feed(opened.intake, sink, outcome_tx, &stop, state, lookahead).await?;
    stages.wait(&stop).await;
    let (recorder, failed, watch) = recorder_thread
        .await
        .map_err(|e| Error::Fatal(format!("report writer failed: {e}")))?;
    watch.bar.finish();
    let rows_read = match read_result {
        Ok(n) => n,
        // Nothing could be read: a usage error (exit 2), as for any command.
        Err(e) if recorder.counts().total() == 0 => return Err(e.into()),
        // The rows before the damage stand; the run ends fatal (exit 3).
        Err(_) => recorder.counts().total(),
    };
    let ended = Ended {
        started: opened.started,
        elapsed: opened.prior.elapsed + clock.elapsed(),
        rows_read,
        engine: EngineFigures::from(progress()),
        rate: engine.as_ref().map(|e| e.rate_summary(settings)),
        target,
        digest: opened.digest,
    };
    conclude(settings, recorder, watch, &stop, ended, failed.is_some())
}

/// Close the timeline's last (partial) second with the figures summary.json
/// gives (its columns then sum to them exactly), write the summary and
/// report.html, then the metrics file's final figures.
fn conclude<P: Fn() -> journal::Progress + Send + 'static>(
    settings: &RunSettings,
    mut recorder: Recorder,
    mut watch: RunWatch<P>,
    stop: &Stop,
    ended: Ended,
    reports_failed: bool,
) -> Result<Summary, Error> {
    let last = Sample {
        figures: ended.engine,
        ..watch.sample()
    };
    recorder.timeline.close(Instant::now(), &last);
    let summary = finish(settings, recorder, watch.state, stop, ended, reports_failed)?;
    if let Some(m) = &mut watch.metrics {
        m.at_end(&summary);
    }
    Ok(summary)
}

/// Feed every row on a blocking thread (a read error has already stopped
/// the run when it returns: the feed trips the stop itself).
async fn run_feed(
    intake: Intake,
    sink: Sink,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: &Stop,
    state: Option<StateReader>,
    lookahead: Option<Arc<Lookahead>>,
) -> Result<Result<u64, crate::input::InputError>, Error> {
    let stop = stop.clone();
    tokio::task::spawn_blocking(move || feed(intake, sink, outcome_tx, stop, state, lookahead))
        .await
        .map_err(|e| Error::Fatal(format!("input reader failed: {e}")))
}

/// The request figures and active time so far, over every part of a
/// resumed run (zero in a dry run).
fn progress_of(
    prior: &Prior,
    engine: Option<&Engine>,
    clock: Instant,
) -> impl Fn() -> journal::Progress + Clone + Send + 'static {
    let counters = engine.map(|e| e.counters.clone()).unwrap_or_default();
    let tokens = engine.and_then(|e| e.tokens.clone());
    let (prior_figures, prior_elapsed) = (prior.figures, prior.elapsed);
    move || {
        let figures = prior_figures.plus(&counters.snapshot(tokens.as_deref()));
        journal::Progress::new(figures, prior_elapsed + clock.elapsed())
    }
}

/// The recorder's watch. A live run has the breaker (passing over rows an
/// earlier part judged), the state and the bar; a dry run none of them: it
/// sends nothing to guard, and it is where a bad file is meant to be found.
fn watch_of<P>(
    settings: &RunSettings,
    opened: &mut Opened,
    engine: Option<&Engine>,
    ui: &Ui,
    stop: &Stop,
    progress: P,
    lookahead: Option<Arc<Lookahead>>,
) -> RunWatch<P> {
    RunWatch {
        breaker: lookahead.map(|gate| {
            let breaker = CircuitBreaker::new(settings.exec.breaker)
                .passing_over(std::mem::take(&mut opened.prior.judged));
            (breaker, gate)
        }),
        state: opened.state_sink.take(),
        bar: match engine {
            Some(_) => ui.run_bar(bar_total(settings)),
            None => RunBar::hidden(),
        },
        stop: stop.clone(),
        pace: engine
            .filter(|_| matches!(settings.exec.rate, Rate::Auto { .. }))
            .map(|e| e.pace.clone()),
        progress,
        metrics: settings
            .metrics_file
            .clone()
            .map(|path| MetricsSink::new(path, opened.started, engine.is_none())),
        gauges: engine.map(|e| Gauges {
            pace: e.pace.clone(),
            counters: e.counters.clone(),
            noise_seen: 0,
        }),
    }
}

/// What [`open`] prepares before the first row.
struct Opened {
    /// When the run first started (its first part's start, on `--resume`).
    started: jiff::Timestamp,
    intake: Intake,
    recorder: Recorder,
    prior: Prior,
    digest: InputDigest,
    state_sink: Option<StateSink>,
    state_reader: Option<StateReader>,
}

/// Open the input, the run directory and (live) the state. A dry run
/// validates on one thread per core and writes no journal.
fn open(
    settings: &RunSettings,
    sender: &Sender,
    started: jiff::Timestamp,
) -> Result<Opened, Error> {
    let mut intake = Intake::open(settings)?;
    let journal = journal_of(settings, sender, started)?;
    let input = InputLayout {
        header: intake.reader().header_record(),
        delimiter: settings.read.delimiter,
    };
    let run_dir::Opened {
        recorder,
        mut prior,
    } = RunDir::open(&settings.out, input, &journal)?;
    let (state_sink, state_reader) = open_state(settings, &journal, &recorder, &prior)?;
    intake.resume_from(std::mem::take(&mut prior.rows));
    if let Journal::None = journal {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        intake.validate_in_parallel(workers);
    }
    Ok(Opened {
        started: prior.started.unwrap_or(started),
        digest: intake.reader().digest(),
        intake,
        recorder,
        prior,
        state_sink,
        state_reader,
    })
}

/// The bar's length: the file's estimated rows, at most `--limit`.
fn bar_total(settings: &RunSettings) -> Option<u64> {
    match &settings.input {
        InputSource::Path(p) => crate::progress::estimate_rows(p),
        InputSource::Stdin => None,
    }
    .map(|n| settings.read.limit.map_or(n, |l| n.min(l)))
}

/// The live run's engine: client, token, limiter and counters.
struct Engine {
    client: ConnectClient,
    /// `None` when no first token could be had (the run is stopped).
    tokens: Option<Arc<TokenManager>>,
    pace: Arc<Pace>,
    counters: Arc<EngineCounters>,
}

impl Engine {
    /// Build the client and take the first token before the first row:
    /// refused credentials end the run before any user request (every row
    /// is then recorded `failed`).
    async fn start(settings: &RunSettings, remote: &Remote, stop: &Stop) -> Result<Engine, Error> {
        let exec = &settings.exec;
        let client = ConnectClient::new(&remote.base_url, remote.credentials.clone(), exec.timeout)
            .map_err(|e| Error::Fatal(format!("{e}")))?;
        tracing::info!(
            input = %settings.input.display(),
            target = %remote.label,
            rate = %exec.rate,
            out = %settings.out.display(),
            "starting run"
        );
        let tokens = match tokio::select! {
            r = TokenManager::start(client.clone()) => Some(r),
            () = stop.cancelled() => None,
        } {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot get an access token");
                stop.trip(StopKind::Fatal, e.to_string());
                None
            }
            None => None,
        };
        if let Some(budget) = exec.time_budget {
            spawn_time_budget(budget, stop.clone());
        }
        Ok(Engine {
            client,
            tokens,
            pace: Arc::new(Pace::new(
                f64::from(exec.rate.initial()),
                Pacing::from_burst(exec.burst),
            )),
            counters: Arc::new(EngineCounters::default()),
        })
    }

    /// Start the dispatcher (with a token) and the adaptive rate; returns
    /// the feed's sink.
    fn spawn(
        &self,
        settings: &RunSettings,
        outcome_tx: mpsc::Sender<Vec<Done>>,
        stop: &Stop,
    ) -> (Sink, Stages) {
        let exec = &settings.exec;
        let (job_tx, job_rx) =
            mpsc::channel::<Vec<Queued>>(job_queue_batches(initial_concurrency(exec)));
        let adapter = match (exec.rate, &self.tokens) {
            (Rate::Auto { start, max }, Some(_)) => Some(tokio::spawn(adapt::adapt(
                self.pace.clone(),
                self.counters.clone(),
                start,
                max,
            ))),
            _ => None,
        };
        let dispatcher = self.tokens.as_ref().map(|tokens| {
            let cx = Arc::new(WorkerCtx {
                client: self.client.clone(),
                tokens: tokens.clone(),
                pace: self.pace.clone(),
                jitter: Jitter::up_to(Duration::ZERO),
                throttle: Throttle::new(),
                retry: RetryPolicy {
                    max_attempts: exec.max_attempts,
                    ..RetryPolicy::default()
                },
                stop: stop.clone(),
                counters: self.counters.clone(),
            });
            tokio::spawn(dispatch(cx, exec.clone(), job_rx, outcome_tx, stop.clone()))
        });
        (
            Sink::Send(job_tx),
            Stages {
                dispatcher,
                adapter,
            },
        )
    }

    /// The rate part of summary.json.
    fn rate_summary(&self, settings: &RunSettings) -> RateSummary {
        let (mode, max_per_second) = match settings.exec.rate {
            Rate::Fixed(_) => ("fixed", None),
            Rate::Auto { max, .. } => ("auto", Some(max)),
        };
        RateSummary {
            mode: mode.into(),
            final_per_second: (self.pace.safe_rate() * 10.0).round() / 10.0,
            max_per_second,
        }
    }
}

/// The live run's tasks besides the feed and the recorder.
#[derive(Default)]
struct Stages {
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    adapter: Option<tokio::task::JoinHandle<()>>,
}

impl Stages {
    /// Wait for the last row task, then stop adapting the rate.
    async fn wait(self, stop: &Stop) {
        if let Some(d) = self.dispatcher
            && let Err(e) = d.await
        {
            stop.trip(StopKind::Fatal, format!("dispatcher failed: {e}"));
        }
        if let Some(a) = self.adapter {
            a.abort();
        }
    }
}

/// Trip `stop` once `budget` is spent.
fn spawn_time_budget(budget: Duration, stop: Stop) {
    tokio::spawn(async move {
        tokio::time::sleep(budget).await;
        stop.interrupt(format!(
            "time budget of {} spent",
            humantime::format_duration(budget)
        ));
    });
}

/// The run's figures once every row is recorded.
struct Ended {
    started: jiff::Timestamp,
    elapsed: Duration,
    rows_read: u64,
    engine: EngineFigures,
    rate: Option<RateSummary>,
    /// `None` in a dry run: named from the settings.
    target: Option<String>,
    /// The input's SHA-256 (complete once every row is read).
    digest: InputDigest,
}

/// Write summary.json (the last checkpoint first) and close this run's
/// record in the state.
fn finish(
    settings: &RunSettings,
    mut recorder: Recorder,
    state: Option<StateSink>,
    stop: &Stop,
    ended: Ended,
    reports_failed: bool,
) -> Result<Summary, Error> {
    let dry_run = ended.target.is_none();
    // The last checkpoint makes every recorded row durable. When it fails
    // (a disk that filled at the end), or after the reports failed mid-run,
    // the run ends fatal: summary.json is then written if space allows, and
    // the journal's last good checkpoint is what `--resume` goes on from.
    let mut reports_failed = reports_failed;
    if !dry_run
        && let Err(e) = recorder.checkpoint(journal::Progress::new(ended.engine, ended.elapsed))
    {
        tracing::warn!(error = %crate::error::chain(&e), "cannot write the last checkpoint");
        if !reports_failed {
            stop.trip(StopKind::Fatal, report_failed_message(&e));
            reports_failed = true;
        }
    }
    let (ending, fatal_error) = match stop.reason() {
        None => (Ending::Finished, None),
        Some((StopKind::Interrupted, m)) => {
            tracing::warn!(reason = %m, "run interrupted; rows not sent are recorded failed");
            (Ending::Interrupted, None)
        }
        Some((StopKind::Fatal, m)) => (Ending::Fatal, Some(m)),
    };
    let summary = Summary::build(SummaryParts {
        input: InputInfo {
            path: settings.input.display(),
            sha256: ended.digest.sha256_hex(),
        },
        dry_run,
        target: ended
            .target
            .or_else(|| settings.mode.target().map(|t| t.describe())),
        started: ended.started,
        finished: jiff::Timestamp::now(),
        elapsed: ended.elapsed,
        rows_read: ended.rows_read,
        shard: settings.shard.map(|s| ShardSummary {
            index: s.index(),
            count: s.count(),
        }),
        counts: recorder.counts(),
        engine: ended.engine,
        rate: ended.rate,
        ending,
        fatal_error,
    });
    let errors = recorder.errors.top(view::TOP_ERRORS);
    let run_dir = recorder.dir().clone();
    match recorder.finish(&summary) {
        Err(e) if reports_failed => {
            tracing::warn!(error = %crate::error::chain(&e), "cannot write the reports' last lines");
        }
        r => r?,
    }
    // The page is for people: if it cannot be written, the run's result
    // (and exit code) stands.
    if let Err(e) = view::write(&run_dir, &summary, &errors) {
        tracing::warn!(error = %crate::error::chain(&e), "cannot write report.html; the run's result stands");
    }
    if let Some(mut sink) = state
        && let Err(e) = sink.store.finish_run(sink.run_id, &summary.counts)
    {
        tracing::warn!(error = %crate::error::chain(&e), "cannot close this run's record in the state");
    }
    Ok(summary)
}

/// What the run keeps in `--out` beside its reports: nothing in a dry run;
/// run.json in a new live run (with the input's SHA-256, which a resume
/// checks: a run that reads stdin cannot be resumed).
fn journal_of(
    settings: &RunSettings,
    sender: &Sender,
    started: jiff::Timestamp,
) -> Result<Journal, Error> {
    if let Sender::DryRun = sender {
        return Ok(Journal::None);
    }
    let input_sha256 = match &settings.input {
        InputSource::Path(p) => {
            journal::sha256_file(p).map_err(|e| crate::input::InputError::Open {
                path: p.display().to_string(),
                source: e,
            })?
        }
        InputSource::Stdin if settings.resume => return Err(ResumeError::Stdin.into()),
        // stdin is hashed as it is read; run.json can only say so.
        InputSource::Stdin => "stdin".to_string(),
    };
    let shard = settings.shard.map(|s| s.to_string());
    Ok(if settings.resume {
        Journal::Resume {
            input_sha256,
            shard,
        }
    } else {
        Journal::Fresh(journal::RunMeta {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            input_path: settings.input.display(),
            input_sha256,
            started: started.to_string(),
            shard,
        })
    })
}

/// Open `--state` (taking its lock: a second run gets exit 2) and start this
/// run's record in it. On `--resume`, first record the successes the
/// interrupted part may have journaled but not yet written to the state (a
/// crash between the two): importing them is idempotent.
fn open_state(
    settings: &RunSettings,
    journal: &Journal,
    recorder: &Recorder,
    prior: &Prior,
) -> Result<(Option<StateSink>, Option<StateReader>), Error> {
    let (Some(path), Some(input_sha)) = (&settings.state, journal.input_sha256()) else {
        return Ok((None, None));
    };
    let mut store = StateStore::open(path)?;
    if let Journal::Resume { .. } = journal {
        let mut fresh = Intake::open(settings)?;
        store.import_successes(&recorder.dir().results(), &prior.successes, &mut fresh)?;
    }
    let run_id = store.begin_run(input_sha, Some(&settings.out))?;
    let reader = store.reader()?;
    tracing::info!(state = %path.display(), "known users are not sent again");
    Ok((Some(StateSink::new(store, run_id)), Some(reader)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let s = Stop::new();
        assert!(!s.is_tripped());
        s.trip(StopKind::Interrupted, "SIGINT");
        s.trip(StopKind::Fatal, "later");
        assert!(s.is_tripped());
        assert_eq!(s.reason(), Some((StopKind::Interrupted, "SIGINT".into())));
    }
}
