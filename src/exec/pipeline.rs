//! The live run: intake → bounded queue → workers → recorder.
//!
//! ```text
//! reader thread (Intake: read, validate, duplicates)
//!    │ job_tx: bounded, batches of up to JOB_BATCH rows ← backpressure: memory stays flat
//!    ▼
//! dispatcher task ── semaphore (concurrency; grows with observed latency)
//!    │ one task per row: provision() = throttle → limiter → token → request → classify
//!    ▼ outcome_tx (invalid/duplicate rows come straight from the reader)
//! recorder thread: the only writer of results.csv / failures.csv / the bar
//! ```
//!
//! Shutdown follows the channels closing: the reader ends → the dispatcher's
//! queue closes → the last row task drops its outcome sender → the recorder
//! ends. A stop (signal, time budget, fatal error) trips one
//! `CancellationToken`: the reader keeps reading but sends nothing more —
//! the rest are recorded `failed` ("not sent: …") so results.csv still holds
//! every data row exactly once and failures.csv can finish the job. Requests
//! already on the wire finish (bounded by `--timeout`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use csv::ByteRecord;
use governor::Jitter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::api::Remote;
use crate::api::client::ConnectClient;
use crate::api::token::TokenManager;
use crate::error::Error;
use crate::exec::breaker::CircuitBreaker;
use crate::exec::counters::EngineCounters;
use crate::exec::pace::{self, Pace, Pacing};
use crate::exec::stop::{Stop, StopKind};
use crate::exec::throttle::Throttle;
use crate::exec::worker::{Job, WorkerCtx, provision};
use crate::input::InputSource;
use crate::intake::Step;
use crate::outcome::{Outcome, Status};
use crate::progress::{RunBar, Ui};
use crate::report::journal::{self, ResumeError};
use crate::report::{
    Ending, EngineFigures, InputInfo, Recorder, ReportError, Summary, SummaryParts,
};
use crate::retry::RetryPolicy;
use crate::rowset::RowSet;
use crate::settings::{ExecSettings, Rate, RunSettings};
use crate::state::{PayloadHash, Recorded, StateReader, StateStore, StoredStatus, payload_hash};

/// Most requests in flight when concurrency is sized automatically.
pub const MAX_AUTO_CONCURRENCY: u32 = 2048;

/// A finished row for the recorder.
struct Done {
    outcome: Outcome,
    /// The input record, when the row goes to failures.csv.
    raw: Option<ByteRecord>,
    /// The payload's hash when it was sent with `--state`.
    hash: Option<PayloadHash>,
}

impl Done {
    /// A row decided without a request; `raw` only when it is a failure.
    fn local(outcome: Outcome, raw: Option<ByteRecord>) -> Done {
        Done {
            outcome,
            raw,
            hash: None,
        }
    }
}

/// A row for the workers.
struct Queued {
    job: Job,
    /// The input record, for failures.csv if the row fails.
    raw: ByteRecord,
    hash: Option<PayloadHash>,
}

/// Concurrency to start with: enough for `rate` at 100 ms, at least 4.
fn initial_concurrency(exec: &ExecSettings) -> u32 {
    exec.concurrency
        .unwrap_or_else(|| (exec.rate.initial().div_ceil(10) + 4).clamp(4, MAX_AUTO_CONCURRENCY))
}

/// In-flight requests needed to sustain `rate` at `latency`, with headroom.
pub fn needed_concurrency(rate: u32, latency: Duration) -> u32 {
    let n = (f64::from(rate) * latency.as_secs_f64() * 1.5).ceil() as u32 + 2;
    n.clamp(4, MAX_AUTO_CONCURRENCY)
}

/// Run `settings` against `remote`; returns the summary (already written).
/// `stop` is tripped by the caller's signal handler.
pub async fn run_live(
    settings: &RunSettings,
    remote: Remote,
    stop: Stop,
    ui: &Ui,
) -> Result<Summary, Error> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let exec = settings.exec.clone();

    let mut intake = crate::intake::Intake::open(settings)?;
    let (recorder, mut prior, input_sha) = open_journal(settings, &mut intake, started)?;
    let (state_sink, state_reader) = open_state(settings, &input_sha)?;
    // After a resume the summary covers the whole run: its first start, and
    // the active time of every part.
    let started = prior.started.unwrap_or(started);
    let digest = intake.reader().digest();
    let client = ConnectClient::new(&remote.base_url, remote.credentials, exec.timeout)
        .map_err(|e| Error::Fatal(format!("{e}")))?;

    tracing::info!(
        input = %settings.input.display(),
        target = %remote.label,
        rate = %exec.rate,
        out = %settings.out.display(),
        "starting run"
    );

    // The first token before the first row: refused credentials end the run
    // before any user request (every row is then recorded `failed`).
    let cancel = stop.token();
    let tokens = match tokio::select! {
        r = TokenManager::start(client.clone()) => Some(r),
        () = cancel.cancelled() => None,
    } {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot get an access token");
            stop.trip(StopKind::Fatal, e.to_string());
            None
        }
        None => None,
    };

    let counters = Arc::new(EngineCounters::default());
    let concurrency = initial_concurrency(&exec);
    let (job_tx, job_rx) = mpsc::channel::<Vec<Queued>>(job_queue_batches(concurrency));
    let (outcome_tx, outcome_rx) = mpsc::channel::<Vec<Done>>(256);

    if let Some(budget) = exec.time_budget {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(budget).await;
            stop.trip(
                StopKind::Interrupted,
                format!(
                    "time budget of {} spent",
                    humantime::format_duration(budget)
                ),
            );
        });
    }

    let total = match &settings.input {
        InputSource::Path(p) => crate::progress::estimate_rows(p),
        InputSource::Stdin => None,
    }
    .map(|n| settings.read.limit.map_or(n, |l| n.min(l)));
    let bar = ui.run_bar(total);
    let pace = Arc::new(Pace::new(
        f64::from(exec.rate.initial()),
        Pacing::from_burst(exec.burst),
    ));
    let figures = {
        let counters = counters.clone();
        let tokens = tokens.clone();
        let prior_figures = prior.figures;
        move || prior_figures.plus(&counters.snapshot(tokens.as_deref()))
    };
    let progress = {
        let figures = figures.clone();
        let prior_elapsed = prior.elapsed;
        move || journal::Progress::new(figures(), prior_elapsed + clock.elapsed())
    };
    let recorder_thread = spawn_recorder(
        recorder,
        outcome_rx,
        bar,
        progress.clone(),
        stop.clone(),
        RecorderOptions {
            journal: settings.journal,
            breaker: CircuitBreaker::new(exec.breaker)
                .passing_over(std::mem::take(&mut prior.judged)),
            pace: pace.clone(),
            show_rate: matches!(exec.rate, Rate::Auto { .. }),
            state: state_sink,
        },
    );

    let reader = {
        let stop = stop.clone();
        let outcome_tx = outcome_tx.clone();
        tokio::task::spawn_blocking(move || {
            read_rows(intake, job_tx, outcome_tx, stop, state_reader)
        })
    };

    let adapter = match (exec.rate, &tokens) {
        (Rate::Auto { start, max }, Some(_)) => Some(tokio::spawn(pace::adapt(
            pace.clone(),
            counters.clone(),
            pace::AutoRate {
                start: f64::from(start),
                max: f64::from(max),
            },
        ))),
        _ => None,
    };
    let dispatcher = tokens.as_ref().map(|tokens| {
        let cx = Arc::new(WorkerCtx {
            client,
            tokens: tokens.clone(),
            pace: pace.clone(),
            jitter: Jitter::up_to(Duration::ZERO),
            throttle: Throttle::new(),
            retry: RetryPolicy {
                max_attempts: exec.max_attempts,
                ..RetryPolicy::default()
            },
            cancel: stop.token(),
            counters: counters.clone(),
        });
        tokio::spawn(dispatch(
            cx,
            exec.clone(),
            job_rx,
            outcome_tx.clone(),
            stop.clone(),
        ))
    });
    drop(outcome_tx);

    let read_result = reader
        .await
        .map_err(|e| Error::Fatal(format!("input reader failed: {e}")))?;
    if let Err(e) = &read_result {
        stop.trip(StopKind::Fatal, crate::error::chain(e));
    }
    if let Some(d) = dispatcher
        && let Err(e) = d.await
    {
        stop.trip(StopKind::Fatal, format!("dispatcher failed: {e}"));
    }
    if let Some(a) = adapter {
        a.abort();
    }
    let (recorder, bar, state_sink) = recorder_thread
        .await
        .map_err(|e| Error::Fatal(format!("report writer failed: {e}")))?;
    bar.finish();
    let mut recorder = recorder?;
    let rows_read = read_result
        .as_ref()
        .map_or(recorder.counts().total(), |r| *r);

    let engine = figures();
    let (ending, fatal_error) = match stop.reason() {
        None => (Ending::Finished, None),
        Some((StopKind::Interrupted, m)) => {
            tracing::warn!(reason = %m, "run interrupted; rows not sent are recorded failed");
            (Ending::Interrupted, None)
        }
        Some((StopKind::Fatal, m)) => (Ending::Fatal, Some(m)),
    };
    recorder.checkpoint(progress())?;
    let summary = Summary::build(SummaryParts {
        input: InputInfo {
            path: settings.input.display(),
            sha256: digest.sha256_hex(),
        },
        dry_run: false,
        target: Some(remote.label),
        started,
        finished: jiff::Timestamp::now(),
        elapsed: prior.elapsed + clock.elapsed(),
        rows_read,
        counts: recorder.counts(),
        engine,
        rate: Some(crate::report::RateSummary {
            mode: match exec.rate {
                Rate::Fixed(_) => "fixed".into(),
                Rate::Auto { .. } => "auto".into(),
            },
            final_per_second: (pace.safe_rate() * 10.0).round() / 10.0,
            max_per_second: match exec.rate {
                Rate::Fixed(_) => None,
                Rate::Auto { max, .. } => Some(max),
            },
        }),
        ending,
        fatal_error,
    });
    recorder.finish(&summary)?;
    if let Some(mut sink) = state_sink
        && let Err(e) = sink.store.finish_run(sink.run_id, &summary.counts)
    {
        tracing::warn!(error = %crate::error::chain(&e), "cannot close this run's record in the state");
    }
    Ok(summary)
}

/// What the earlier parts of a resumed run contribute to its summary.
#[derive(Clone, Debug, Default)]
struct Prior {
    /// Rows the earlier part's circuit breaker already counted.
    judged: RowSet,
    figures: EngineFigures,
    elapsed: Duration,
    started: Option<jiff::Timestamp>,
}

/// Open the reports: fresh (refusing to overwrite an earlier run's) with
/// run.json written before the first request, or continuing the run in
/// `--out` after checking the input's SHA-256. Returns the recorder and the
/// request figures of the earlier part.
fn open_journal(
    settings: &RunSettings,
    intake: &mut crate::intake::Intake,
    started: jiff::Timestamp,
) -> Result<(Recorder, Prior, String), Error> {
    let out = &settings.out;
    let header = intake.reader().header_record().clone();
    let delimiter = settings.read.delimiter;
    let sha = match &settings.input {
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
    if settings.resume {
        let state = journal::load(out, &sha)?;
        tracing::info!(
            done = state.earlier.done.len(),
            rejected = state.earlier.rejected.len(),
            "resuming: rows already final are skipped"
        );
        let mut state = state;
        let prior = Prior {
            judged: std::mem::take(&mut state.judged),
            figures: state.prior,
            elapsed: state.prior_elapsed,
            started: state.started,
        };
        let recorder = Recorder::resume(out, &header, delimiter, &state)?;
        intake.resume_from(state.earlier);
        Ok((recorder, prior, sha))
    } else {
        journal::check_fresh(out)?;
        let recorder = Recorder::create(out, &header, delimiter)?;
        journal::write_meta(
            out,
            &journal::RunMeta {
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                input_path: settings.input.display(),
                input_sha256: sha.clone(),
                started: started.to_string(),
            },
        )?;
        Ok((recorder, Prior::default(), sha))
    }
}

/// Open `--state` (taking its lock: a second run gets exit 2) and start this
/// run's record in it. On `--resume`, first record the successes the
/// interrupted part may have journaled but not yet written to the state (a
/// crash between the two): importing results.csv is idempotent.
fn open_state(
    settings: &RunSettings,
    input_sha: &str,
) -> Result<(Option<StateSink>, Option<StateReader>), Error> {
    let Some(path) = &settings.state else {
        return Ok((None, None));
    };
    let mut store = StateStore::open(path)?;
    let results = settings.out.join("results.csv");
    if settings.resume && results.exists() {
        let mut fresh = crate::intake::Intake::open(settings)?;
        store.import(&results, &mut fresh)?;
    }
    let run_id = store.begin_run(input_sha, Some(&settings.out))?;
    let reader = store.reader()?;
    tracing::info!(state = %path.display(), "known users are not sent again");
    Ok((
        Some(StateSink {
            store,
            run_id,
            pending: Vec::new(),
            failed: false,
        }),
        Some(reader),
    ))
}

/// The reader thread: every data row goes either to a worker (as a job) or
/// straight to the recorder. Returns the number of data rows read.
fn read_rows(
    mut intake: crate::intake::Intake,
    job_tx: mpsc::Sender<Vec<Queued>>,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
    mut state: Option<StateReader>,
) -> Result<u64, crate::input::InputError> {
    let mut out = Handoff {
        job_tx,
        outcome_tx,
        jobs: Vec::with_capacity(JOB_BATCH),
        local: Vec::with_capacity(LOCAL_BATCH),
        stop,
    };
    let mut failure = None;
    loop {
        let step = match intake.next_step() {
            Ok(Some(step)) => step,
            Ok(None) => break,
            Err(e) => {
                // Stop sending; rows after an unreadable part cannot be known.
                out.stop
                    .trip(StopKind::Fatal, format!("cannot read input: {e}"));
                failure = Some(e);
                break;
            }
        };
        let handed = match step {
            Step::Local(o, raw) => {
                let raw = o.status.is_failure().then(|| raw.clone());
                out.local(Done::local(o, raw))
            }
            Step::Send { row, user, raw } => match prepare(row, user, raw, &mut state, &out.stop) {
                Prepared::Local(done) => out.local(done),
                Prepared::Job(queued) => out.job(queued, &mut state),
            },
        };
        if handed.is_err() {
            // The recorder is gone (it could not write): nothing more to do.
            break;
        }
    }
    out.finish();
    match failure {
        Some(e) => Err(e),
        None => Ok(intake.reader().rows_read()),
    }
}

/// What the reader makes of a valid row.
enum Prepared {
    /// Decided without a request: known to the state, not sent after a stop,
    /// or a payload that cannot be encoded.
    Local(Done),
    Job(Queued),
}

fn prepare(
    row: u64,
    user: crate::api::model::CreateUser,
    raw: &ByteRecord,
    state: &mut Option<StateReader>,
    stop: &Stop,
) -> Prepared {
    let hash = state.as_ref().map(|_| payload_hash(&user));
    if let (Some(reader), Some(h)) = (state.as_mut(), &hash) {
        match reader.lookup(&user.user_id) {
            Ok(Some(k)) => {
                // Provisioned by an earlier run: not sent again.
                let status = k.classify(h);
                let error = (status == Status::Changed).then(|| k.changed_message());
                return Prepared::Local(Done::local(
                    Outcome::local(row, user.user_id, status, error),
                    None,
                ));
            }
            Ok(None) => {}
            Err(e) => stop.trip(StopKind::Fatal, crate::error::chain(&e)),
        }
    }
    if stop.is_tripped() {
        return Prepared::Local(not_sent(row, user.user_id, raw.clone(), stop));
    }
    match serde_json::to_vec(&user) {
        Ok(body) => Prepared::Job(Queued {
            job: Job {
                row,
                user_id: user.user_id,
                body: Bytes::from(body),
            },
            raw: raw.clone(),
            hash,
        }),
        Err(e) => {
            let o = Outcome::local(
                row,
                user.user_id,
                Status::Invalid,
                Some(format!("cannot encode the payload: {e}")),
            );
            Prepared::Local(Done::local(o, Some(raw.clone())))
        }
    }
}

/// A row recorded `failed` because the run stopped before it was sent.
fn not_sent(row: u64, user_id: String, raw: ByteRecord, stop: &Stop) -> Done {
    let o = Outcome::local(row, user_id, Status::Failed, Some(stop.not_sent_reason()));
    Done::local(o, Some(raw))
}

/// The reader's two outgoing queues, each filled in batches: a channel send
/// per row cost two futex calls per row (the reader thread parked on the full
/// queue and was woken for every slot freed).
struct Handoff {
    job_tx: mpsc::Sender<Vec<Queued>>,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    jobs: Vec<Queued>,
    local: Vec<Done>,
    stop: Stop,
}

/// The recorder is gone.
struct Gone;

impl Handoff {
    fn local(&mut self, done: Done) -> Result<(), Gone> {
        self.local.push(done);
        if self.local.len() >= LOCAL_BATCH {
            self.flush_local()?;
        }
        Ok(())
    }

    fn flush_local(&mut self) -> Result<(), Gone> {
        if self.local.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.local, Vec::with_capacity(LOCAL_BATCH));
        self.outcome_tx.blocking_send(batch).map_err(|_| Gone)
    }

    /// Queue a job; the batch goes when it is full, or at once when the
    /// workers have nothing queued (start-up, a slow stdin).
    fn job(&mut self, queued: Queued, state: &mut Option<StateReader>) -> Result<(), Gone> {
        self.jobs.push(queued);
        let starving = self.job_tx.capacity() == self.job_tx.max_capacity();
        if self.jobs.len() < JOB_BATCH && !starving {
            return Ok(());
        }
        if self.job_tx.capacity() == 0 {
            // About to block on a full queue: hand over the rows decided so
            // far, and let go of the state's read snapshot so its WAL can be
            // checkpointed.
            self.flush_local()?;
            if let Some(reader) = state {
                let _ = reader.release();
            }
        }
        self.flush_jobs()
    }

    fn flush_jobs(&mut self) -> Result<(), Gone> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.jobs, Vec::with_capacity(JOB_BATCH));
        if let Err(mpsc::error::SendError(batch)) = self.job_tx.blocking_send(batch) {
            // No dispatcher (no token): record them as not sent.
            for Queued { job, raw, .. } in batch {
                self.local(not_sent(job.row, job.user_id, raw, &self.stop))?;
            }
        }
        Ok(())
    }

    /// Hand over whatever is left (the job queue closes when `self` drops).
    fn finish(mut self) {
        if self.flush_jobs().is_ok() {
            let _ = self.flush_local();
        }
    }
}

/// Rows decided by the reader (invalid, duplicate, unchanged, …) handed to the
/// recorder at once: one channel wake-up per batch, not per row.
const LOCAL_BATCH: usize = 256;

/// Most rows the reader hands to the dispatcher at once.
const JOB_BATCH: usize = 32;

/// Batches the job queue holds: about two rows queued per request in flight,
/// and at least two batches so the reader fills one while the other drains.
fn job_queue_batches(concurrency: u32) -> usize {
    (concurrency as usize * 2).div_ceil(JOB_BATCH).max(2)
}

/// Start one task per job, at most `concurrency` at once; grow the limit when
/// the observed latency says `--rate` is out of reach.
async fn dispatch(
    cx: Arc<WorkerCtx>,
    exec: ExecSettings,
    mut job_rx: mpsc::Receiver<Vec<Queued>>,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
) {
    let initial = initial_concurrency(&exec);
    let sem = Arc::new(Semaphore::new(initial as usize));
    let current = Arc::new(AtomicU64::new(u64::from(initial)));
    let tracker = TaskTracker::new();
    let grower = exec
        .concurrency
        .is_none()
        .then(|| tokio::spawn(grow_concurrency(cx.clone(), sem.clone(), current.clone())));
    'batches: while let Some(batch) = job_rx.recv().await {
        for queued in batch {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break 'batches;
            };
            tracker.spawn(run_row(
                cx.clone(),
                queued,
                permit,
                outcome_tx.clone(),
                stop.clone(),
            ));
        }
    }
    tracker.close();
    tracker.wait().await;
    if let Some(g) = grower {
        g.abort();
    }
}

/// One row's task: provision it, turn a fatal error or a panic into its one
/// outcome, and queue that for the recorder.
async fn run_row(
    cx: Arc<WorkerCtx>,
    Queued { job, raw, hash }: Queued,
    permit: OwnedSemaphorePermit,
    tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
) {
    let (row, user_id) = (job.row, job.user_id.clone());
    // A panicking row must still produce its one outcome.
    let joined = CatchUnwind(Box::pin(provision(job, &cx))).await;
    let outcome = match joined {
        // Cut short before its first request: say why, like the rows the
        // reader never queued.
        Ok(Ok(mut o)) if o.status == Status::Failed && o.attempts == 0 => {
            o.error = Some(stop.not_sent_reason());
            o
        }
        Ok(Ok(o)) => o,
        Ok(Err(fatal)) => {
            let msg = crate::error::chain(&fatal);
            tracing::error!(error = %msg, "stopping the run");
            stop.trip(StopKind::Fatal, msg.clone());
            failed(row, user_id, msg)
        }
        Err(()) => {
            let msg = "internal error while sending (a bug: please report it)".to_string();
            tracing::error!(row, error = %msg);
            failed(row, user_id, msg)
        }
    };
    let raw = outcome.status.is_failure().then_some(raw);
    if tx.send(vec![Done { outcome, raw, hash }]).await.is_err() {
        tracing::debug!(row, "recorder gone");
    }
    // Held until the outcome is queued: a stalled recorder stops new
    // requests instead of piling up finished rows in memory.
    drop(permit);
}

/// Turns a panic inside the wrapped future into `Err(())`, so the row still
/// gets its outcome (one task per row instead of a task plus a join).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

fn failed(row: u64, user_id: String, msg: String) -> Outcome {
    Outcome::local(row, user_id, Status::Failed, Some(msg))
}

/// Every 250 ms, compare the permits with what the mean request latency needs
/// to keep the current rate busy, and add the difference. Never shrinks: idle
/// permits cost nothing.
async fn grow_concurrency(cx: Arc<WorkerCtx>, sem: Arc<Semaphore>, current: Arc<AtomicU64>) {
    let mut last = (0u64, 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = cx.counters.requests_sent.load(Ordering::Relaxed);
        let micros = cx.counters.request_micros.load(Ordering::Relaxed);
        let (d_sent, d_micros) = (sent - last.0, micros.saturating_sub(last.1));
        last = (sent, micros);
        if d_sent == 0 {
            continue;
        }
        let mean = Duration::from_micros(d_micros / d_sent);
        let rate = cx.pace.rate().ceil() as u32;
        let want = u64::from(needed_concurrency(rate, mean));
        let have = current.load(Ordering::Relaxed);
        if want > have {
            sem.add_permits((want - have) as usize);
            current.store(want, Ordering::Relaxed);
            tracing::debug!(
                concurrency = want,
                latency_ms = mean.as_millis() as u64,
                "raised concurrency"
            );
        }
    }
}

/// The recorder thread: writes each outcome, makes the journal durable every
/// [`CHECKPOINT_EVERY`] (flush + fsync + progress.json), keeps the bar current.
fn spawn_recorder(
    mut recorder: Recorder,
    mut outcome_rx: mpsc::Receiver<Vec<Done>>,
    bar: RunBar,
    progress: impl Fn() -> journal::Progress + Send + 'static,
    stop: Stop,
    opts: RecorderOptions,
) -> tokio::task::JoinHandle<(Result<Recorder, ReportError>, RunBar, Option<StateSink>)> {
    let RecorderOptions {
        journal,
        mut breaker,
        pace,
        show_rate,
        mut state,
    } = opts;
    let brief = move |f: &EngineFigures| {
        let mut s = engine_brief(f);
        if show_rate {
            s.push_str(&format!(" rate={:.1}/s", pace.rate()));
        }
        s.trim().to_string()
    };
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut last_checkpoint = Instant::now();
        let fail = |e: ReportError, bar: RunBar, state: Option<StateSink>| {
            stop.trip(StopKind::Fatal, crate::error::chain(&e));
            (Err(e), bar, state)
        };
        // results.csv first, then the state: the state never claims a user
        // the reports do not show (see report::journal and state).
        let checkpoint = |recorder: &mut Recorder, state: &mut Option<StateSink>| {
            if journal {
                recorder.checkpoint(progress())?;
            } else {
                recorder.flush()?;
            }
            if let Some(sink) = state {
                sink.flush(&stop);
            }
            Ok(())
        };
        // Rows recorded since the last checkpoint.
        let mut dirty = false;
        let mut record = |batch: Vec<Done>,
                          recorder: &mut Recorder,
                          state: &mut Option<StateSink>|
         -> Result<(), ReportError> {
            for Done { outcome, raw, hash } in batch {
                recorder.record(&outcome, raw.as_ref())?;
                if let Some(sink) = state {
                    sink.note(&outcome, hash);
                }
                if let Some(message) = breaker.observe(&outcome) {
                    tracing::error!("{message}");
                    stop.trip(StopKind::Fatal, message);
                }
            }
            Ok(())
        };
        let mut open = true;
        while open {
            // Take everything queued. While rows keep coming, nap a moment
            // between drains instead of waiting on the channel: senders then
            // queue without waking this thread for every row.
            let mut drained = 0;
            loop {
                match outcome_rx.try_recv() {
                    Ok(batch) => {
                        if let Err(e) = record(batch, &mut recorder, &mut state) {
                            return fail(e, bar, state);
                        }
                        drained += 1;
                        dirty = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let due = CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed());
            if dirty && due.is_zero() {
                if let Err(e) = checkpoint(&mut recorder, &mut state) {
                    return fail(e, bar, state);
                }
                last_checkpoint = Instant::now();
                dirty = false;
                let f = EngineFigures::from(progress());
                bar.update(recorder.counts().total(), recorder.counts(), &brief(&f));
            }
            if !open {
                break;
            }
            if drained > 0 {
                std::thread::sleep(RECORDER_NAP);
                continue;
            }
            // Quiet: wait for the next rows, but no longer than the next
            // checkpoint is due, so what is recorded becomes durable on time.
            let next = if dirty {
                match runtime.block_on(tokio::time::timeout(due, outcome_rx.recv())) {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            } else {
                outcome_rx.blocking_recv()
            };
            match next {
                Some(batch) => {
                    if let Err(e) = record(batch, &mut recorder, &mut state) {
                        return fail(e, bar, state);
                    }
                    dirty = true;
                    // Rows are coming again: nap before the next drain, or
                    // every row would wake this thread (a futex pair each).
                    std::thread::sleep(RECORDER_NAP);
                }
                None => open = false,
            }
        }
        if let Err(e) = checkpoint(&mut recorder, &mut state) {
            return fail(e, bar, state);
        }
        let f = EngineFigures::from(progress());
        bar.update(recorder.counts().total(), recorder.counts(), &brief(&f));
        (Ok(recorder), bar, state)
    })
}

/// The state store's side of the recorder: successes of sent rows wait in
/// `pending` and are written in one transaction per journal checkpoint.
pub struct StateSink {
    store: StateStore,
    run_id: i64,
    pending: Vec<Recorded>,
    failed: bool,
}

impl StateSink {
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

/// What the recorder thread does besides writing rows.
struct RecorderOptions {
    /// Checkpoint the journal (off only for benchmarks).
    journal: bool,
    breaker: CircuitBreaker,
    /// Shown on the bar with `--rate auto`.
    pace: Arc<Pace>,
    show_rate: bool,
    /// `--state`: where successes are remembered.
    state: Option<StateSink>,
}

/// The recorder's pause between drains while rows keep coming.
const RECORDER_NAP: Duration = Duration::from_millis(1);

/// Most time a recorded row waits before it is fsynced.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

fn engine_brief(f: &EngineFigures) -> String {
    crate::report::brief([("retries", f.retries), ("429s", f.throttled_429)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_covers_rate_times_latency() {
        assert_eq!(needed_concurrency(200, Duration::from_millis(100)), 32);
        assert_eq!(needed_concurrency(10, Duration::from_millis(5)), 4);
        assert_eq!(
            needed_concurrency(100_000, Duration::from_secs(1)),
            MAX_AUTO_CONCURRENCY
        );
        let exec = ExecSettings::default();
        assert_eq!(initial_concurrency(&exec), 5);
        let fixed = ExecSettings {
            concurrency: Some(7),
            ..ExecSettings::default()
        };
        assert_eq!(initial_concurrency(&fixed), 7);
    }

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
