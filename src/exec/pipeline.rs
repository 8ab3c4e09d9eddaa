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
//! A dry run is the same stages without a live part ([`LiveRun`]): no
//! engine and no dispatcher, validation runs on one thread per core, valid
//! rows go to the recorder as `valid`, and nothing touches the network.
//!
//! Shutdown follows the channels closing: the feed ends → the dispatcher's
//! queue closes → the last row task drops its outcome sender → the recorder
//! ends. A stop (signal, time budget, fatal error) trips one [`Stop`]: the
//! feed keeps reading but sends nothing more; the rest are recorded `failed`
//! ("not sent: …") so results.csv still holds every data row exactly once
//! and failures.csv can finish the job. Requests already on the wire finish
//! (bounded by `--timeout`).
//!
//! The background tasks (the rate adapter, the concurrency sizer, the time
//! budget's timer) are all held by one `exec::tasks::Background`, created
//! here: the first two stop once the dispatcher has drained, the timer when
//! [`run`] returns. None is detached.

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
use crate::exec::dispatch::{Permits, dispatch, initial_concurrency, size_concurrency};
use crate::exec::feed::{Done, LiveFeed, Queued, feed, job_queue_batches};
use crate::exec::pace::{Pace, Pacing};
use crate::exec::stop::{Stop, StopKind};
use crate::exec::tasks::{Background, Until};
use crate::exec::throttle::Throttle;
use crate::exec::watch::{
    Gauges, LiveWatch, MetricsSink, RunWatch, StateSink, report_failed_message,
};
use crate::exec::worker::WorkerCtx;
use crate::input::{InputDigest, InputSource};
use crate::intake::Intake;
use crate::progress::Ui;
use crate::report::journal::{self, ResumeError};
use crate::report::recorder::{self, Watch};
use crate::report::run_dir::{self, InputLayout, Journal, Prior, RunDir};
use crate::report::timeline::Sample;
use crate::report::view;
use crate::report::{
    Ending, EngineFigures, InputInfo, RateSummary, Recorder, ShardSummary, Summary, SummaryParts,
};
use crate::retry::RetryPolicy;
use crate::settings::{ExecSettings, LiveSettings, Rate, RunSettings};
use crate::state::{StateReader, StateStore};

/// A live run: what only it has in the settings, and the remote it sends to.
pub struct LiveRun<'a> {
    pub(crate) settings: &'a LiveSettings,
    pub(crate) remote: &'a Remote,
}

/// Run `settings`: live with `live`, dry without; returns the summary
/// (already written). `stop` is tripped by the caller's signal handler.
pub async fn run(
    settings: &RunSettings,
    live: Option<LiveRun<'_>>,
    stop: Stop,
    ui: &Ui,
) -> Result<Summary, Error> {
    let mut background = Background::new();
    let result = run_stages(settings, live, stop, ui, &mut background).await;
    // The run ends: whatever still runs in the background (the time budget's
    // timer; on an early error, every task) stops here, and only here.
    background.shutdown().await;
    result
}

/// [`run`]'s stages, their background tasks spawned into `background`.
async fn run_stages(
    settings: &RunSettings,
    live: Option<LiveRun<'_>>,
    stop: Stop,
    ui: &Ui,
    background: &mut Background,
) -> Result<Summary, Error> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let mut opened = open(settings, live.as_ref().map(|l| l.settings), started)?;
    let live = match live {
        Some(l) => Some(Live::start(settings, l, opened.streamed, &stop, background).await?),
        None => None,
    };
    let progress = progress_of(&opened.prior, live.as_ref(), clock);
    let (outcome_tx, outcome_rx) = mpsc::channel::<Vec<Done>>(256);
    let (watch, state_reader) =
        watch_of(settings, &mut opened, live.as_ref(), ui, &stop, &progress);
    let journaled = live.as_ref().is_some_and(|l| l.settings.journal);
    let recorder_thread = recorder::spawn(opened.recorder, outcome_rx, watch, journaled);
    let (feed, stages) = live
        .as_ref()
        .map(|l| l.spawn(outcome_tx.clone(), &stop, state_reader, background))
        .unzip();
    let read_result = run_feed(opened.intake, outcome_tx, &stop, feed).await?;
    if let Some(stages) = stages {
        stages.wait(&stop, background).await;
    }
    let (recorder, failed, watch) = recorder_thread
        .await
        .map_err(|e| Error::Fatal(format!("report writer failed: {e}")))?;
    watch.finish_bar();
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
        live: live.map(Live::end),
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
    let state = watch.live.as_mut().and_then(|l| l.state.take());
    let summary = finish(settings, recorder, state, stop, ended, reports_failed)?;
    if let Some(m) = &mut watch.metrics {
        m.at_end(&summary);
    }
    Ok(summary)
}

/// Feed every row on a blocking thread (a read error has already stopped
/// the run when it returns: the feed trips the stop itself).
async fn run_feed(
    intake: Intake,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: &Stop,
    live: Option<LiveFeed>,
) -> Result<Result<u64, crate::input::InputError>, Error> {
    let stop = stop.clone();
    tokio::task::spawn_blocking(move || feed(intake, outcome_tx, stop, live))
        .await
        .map_err(|e| Error::Fatal(format!("input reader failed: {e}")))
}

/// The request figures and active time so far, over every part of a
/// resumed run (zero in a dry run).
fn progress_of(
    prior: &Prior,
    live: Option<&Live<'_>>,
    clock: Instant,
) -> impl Fn() -> journal::Progress + Clone + Send + 'static {
    let counters = live.map(|l| l.engine.counters.clone()).unwrap_or_default();
    let tokens = live.and_then(|l| l.engine.tokens.clone());
    let (prior_figures, prior_elapsed) = (prior.figures, prior.elapsed);
    move || {
        let figures = prior_figures.plus(&counters.snapshot(tokens.as_deref()));
        journal::Progress::new(figures, prior_elapsed + clock.elapsed())
    }
}

/// The recorder's watch, and the state's reader for the feed. A live run
/// has the breaker (passing over rows an earlier part judged), the state,
/// the bar and the gauges; a dry run none of them: it sends nothing to
/// guard, and it is where a bad file is meant to be found.
fn watch_of<P: Clone>(
    settings: &RunSettings,
    opened: &mut Opened,
    live: Option<&Live<'_>>,
    ui: &Ui,
    stop: &Stop,
    progress: &P,
) -> (RunWatch<P>, Option<StateReader>) {
    let (state, reader) = opened.state.take().unzip();
    let watch = RunWatch {
        live: live.map(|l| LiveWatch {
            breaker: CircuitBreaker::new(l.settings.exec.breaker)
                .passing_over(std::mem::take(&mut opened.prior.judged)),
            gate: l.lookahead.clone(),
            state,
            bar: ui.run_bar(opened.rows_estimate),
            show_rate: matches!(l.settings.exec.rate, Rate::Auto { .. }),
            gauges: Gauges {
                pace: l.engine.pace.clone(),
                counters: l.engine.counters.clone(),
                noise_seen: 0,
            },
        }),
        stop: stop.clone(),
        progress: progress.clone(),
        metrics: settings
            .metrics_file
            .clone()
            .map(|path| MetricsSink::new(path, opened.started)),
    };
    (watch, reader)
}

/// What [`open`] prepares before the first row.
struct Opened {
    /// When the run first started (its first part's start, on `--resume`).
    started: jiff::Timestamp,
    intake: Intake,
    recorder: Recorder,
    prior: Prior,
    digest: InputDigest,
    /// `--state`: this run's record and the known users.
    state: Option<(StateSink, StateReader)>,
    /// The input's data rows, estimated from its newlines (a regular,
    /// uncompressed file), at most `--limit`: the bar's length.
    rows_estimate: Option<u64>,
    /// The input is stdin or a pipe (`InputSource::is_stream`), asked once.
    streamed: bool,
}

/// Open the input, the run directory and (live) the state. Validation runs
/// on one thread per core for a dry run and for a live run reading a regular
/// file: a live run validates the rows of stdin or a pipe one by one, as
/// they arrive, since a batch would wait to fill. A dry run writes no journal.
fn open(
    settings: &RunSettings,
    live: Option<&LiveSettings>,
    started: jiff::Timestamp,
) -> Result<Opened, Error> {
    let streamed = settings.input.is_stream();
    if live.is_some_and(|l| l.resume) && streamed {
        // Before opening it: opening a FIFO waits for its writer.
        return Err(ResumeError::Stdin.into());
    }
    let mut intake = Intake::open(settings)?;
    let rows_estimate = rows_estimate(settings);
    if let Some(rows) = rows_estimate {
        intake.expect_rows(rows);
    }
    let journaled = match live {
        Some(live) => Some((live, journal_of(settings, live, started, streamed)?)),
        None => None,
    };
    let input = InputLayout {
        header: intake.reader().header_record(),
        delimiter: settings.read.delimiter,
    };
    let journal = journaled.as_ref().map(|(_, journal)| journal);
    let run_dir = RunDir::open(&settings.out, input, journal)?;
    if journaled.is_none() || !streamed {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        intake.validate_in_parallel(workers);
    }
    let state = match &journaled {
        Some((live, journal)) => open_state(settings, live, journal, &run_dir)?,
        None => None,
    };
    let run_dir::Opened {
        recorder,
        mut prior,
    } = run_dir;
    intake.resume_from(std::mem::take(&mut prior.rows));
    Ok(Opened {
        started: prior.started.unwrap_or(started),
        digest: intake.reader().digest(),
        intake,
        recorder,
        prior,
        state,
        rows_estimate,
        streamed,
    })
}

/// The file's estimated rows, at most `--limit`: the bar's length, and the
/// size the duplicate filter is allocated at.
fn rows_estimate(settings: &RunSettings) -> Option<u64> {
    match &settings.input {
        InputSource::Path(p) => crate::progress::estimate_rows(p),
        InputSource::Stdin => None,
    }
    .map(|n| settings.read.limit.map_or(n, |l| n.min(l)))
}

/// A live run under way: its settings, how summary.json names its target,
/// its engine, and how far the breaker has judged (the feed waits on it).
struct Live<'a> {
    settings: &'a LiveSettings,
    target: String,
    engine: Engine,
    lookahead: Arc<Lookahead>,
    /// The input is stdin or a pipe: rows come as the producer writes them.
    streamed: bool,
}

/// What a live run adds to its figures once every row is recorded.
struct LiveEnded {
    target: String,
    rate: RateSummary,
}

impl<'a> Live<'a> {
    /// Start the engine of `run` (see [`Engine::start`]); `streamed`: the
    /// input is stdin or a pipe.
    async fn start(
        settings: &RunSettings,
        run: LiveRun<'a>,
        streamed: bool,
        stop: &Stop,
        background: &mut Background,
    ) -> Result<Live<'a>, Error> {
        let exec = &run.settings.exec;
        Ok(Live {
            settings: run.settings,
            target: run.remote.label.clone(),
            engine: Engine::start(settings, exec, run.remote, stop, background).await?,
            lookahead: Arc::new(Lookahead::default()),
            streamed,
        })
    }

    /// Start the dispatcher (with a token), and in `background` the
    /// adaptive rate and the concurrency sizer; returns the feed's live part.
    fn spawn(
        &self,
        outcome_tx: mpsc::Sender<Vec<Done>>,
        stop: &Stop,
        state: Option<StateReader>,
        background: &mut Background,
    ) -> (LiveFeed, Stages) {
        let (engine, exec) = (&self.engine, &self.settings.exec);
        let (job_tx, job_rx) =
            mpsc::channel::<Vec<Queued>>(job_queue_batches(initial_concurrency(exec)));
        if let (Rate::Auto { start, max }, Some(_)) = (exec.rate, &engine.tokens) {
            background.spawn(
                Until::RowsDone,
                adapt::adapt(engine.pace.clone(), engine.counters.clone(), start, max),
            );
        }
        let dispatcher = engine.tokens.as_ref().map(|tokens| {
            let cx = Arc::new(WorkerCtx {
                client: engine.client.clone(),
                tokens: tokens.clone(),
                pace: engine.pace.clone(),
                jitter: Jitter::up_to(Duration::ZERO),
                throttle: Throttle::new(),
                retry: RetryPolicy {
                    max_attempts: exec.max_attempts,
                    ..RetryPolicy::default()
                },
                stop: stop.clone(),
                counters: engine.counters.clone(),
            });
            let permits = Arc::new(Permits::new(initial_concurrency(exec)));
            if exec.concurrency.is_none() {
                background.spawn(
                    Until::RowsDone,
                    size_concurrency(cx.clone(), permits.clone()),
                );
            }
            tokio::spawn(dispatch(cx, permits, job_rx, outcome_tx, stop.clone()))
        });
        let feed = LiveFeed {
            jobs: job_tx,
            state,
            lookahead: self.lookahead.clone(),
            streamed: self.streamed,
        };
        (feed, Stages { dispatcher })
    }

    /// The target and the rate part of summary.json.
    fn end(self) -> LiveEnded {
        let (mode, max_per_second) = match self.settings.exec.rate {
            Rate::Fixed(_) => ("fixed", None),
            Rate::Auto { max, .. } => ("auto", Some(max)),
        };
        LiveEnded {
            target: self.target,
            rate: RateSummary {
                mode: mode.into(),
                final_per_second: (self.engine.pace.safe_rate() * 10.0).round() / 10.0,
                max_per_second,
            },
        }
    }
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
    async fn start(
        settings: &RunSettings,
        exec: &ExecSettings,
        remote: &Remote,
        stop: &Stop,
        background: &mut Background,
    ) -> Result<Engine, Error> {
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
            spawn_time_budget(budget, stop.clone(), background);
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
}

/// The live run's stage besides the feed and the recorder (its background
/// tasks are in the run's [`Background`]).
struct Stages {
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl Stages {
    /// Wait for the last row task, then stop adapting the rate and sizing
    /// the concurrency.
    async fn wait(self, stop: &Stop, background: &mut Background) {
        if let Some(d) = self.dispatcher
            && let Err(e) = d.await
        {
            stop.trip(StopKind::Fatal, format!("dispatcher failed: {e}"));
        }
        background.rows_done().await;
    }
}

/// Trip `stop` once `budget` is spent (a task of `background` until the
/// run ends: the budget may stop a run while its last rows are recorded).
fn spawn_time_budget(budget: Duration, stop: Stop, background: &mut Background) {
    background.spawn(Until::RunEnds, async move {
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
    /// `None` in a dry run (whose target is named from the settings).
    live: Option<LiveEnded>,
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
    // The last checkpoint of a live run makes every recorded row durable.
    // When it fails (a disk that filled at the end), or after the reports
    // failed mid-run, the run ends fatal: summary.json is then written if
    // space allows, and the journal's last good checkpoint is what
    // `--resume` goes on from.
    let mut reports_failed = reports_failed;
    if ended.live.is_some()
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
        dry_run: ended.live.is_none(),
        target: match &ended.live {
            Some(live) => Some(live.target.clone()),
            None => settings.mode.target().map(|t| t.describe()),
        },
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
        rate: ended.live.map(|live| live.rate),
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

/// The journal a live run keeps in `--out`: run.json in a new run, with
/// the input's SHA-256, which a resume checks (a run that reads stdin or a
/// pipe, `streamed`, cannot be resumed).
fn journal_of(
    settings: &RunSettings,
    live: &LiveSettings,
    started: jiff::Timestamp,
    streamed: bool,
) -> Result<Journal, Error> {
    let input_sha256 = match &settings.input {
        InputSource::Path(p) if !streamed => {
            journal::sha256_file(p).map_err(|e| crate::input::InputError::Open {
                path: p.display().to_string(),
                source: e,
            })?
        }
        // stdin or a pipe is read once, as it comes: it cannot be hashed
        // first, nor read again on --resume. run.json can only say so.
        _ if live.resume => return Err(ResumeError::Stdin.into()),
        InputSource::Path(_) => "pipe".to_string(),
        InputSource::Stdin => "stdin".to_string(),
    };
    let shard = settings.shard.map(|s| s.to_string());
    Ok(if live.resume {
        Journal::Resume {
            input_sha256,
            shard,
        }
    } else {
        Journal::Fresh(journal::RunMeta {
            tool_version: crate::VERSION.to_string(),
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
    live: &LiveSettings,
    journal: &Journal,
    run_dir: &run_dir::Opened,
) -> Result<Option<(StateSink, StateReader)>, Error> {
    let Some(path) = &live.state else {
        return Ok(None);
    };
    let mut store = StateStore::open(path)?;
    if let Journal::Resume { .. } = journal {
        let mut fresh = Intake::open(settings)?;
        let results = run_dir.recorder.dir().results();
        store.import_successes(&results, &run_dir.prior.successes, &mut fresh)?;
    }
    let run_id = store.begin_run(journal.input_sha256(), Some(&settings.out))?;
    let mut reader = store.reader()?;
    let started = std::time::Instant::now();
    let known = reader.preload()?;
    tracing::info!(
        state = %path.display(),
        known,
        preload_ms = started.elapsed().as_millis() as u64,
        "known users are not sent again"
    );
    Ok(Some((StateSink::new(store, run_id), reader)))
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
