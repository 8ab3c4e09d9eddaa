//! The recorder thread: the only writer of the reports during a run.
//!
//! It takes finished rows in batches off one channel, writes each to
//! results.csv (and failures.csv), and every [`CHECKPOINT_EVERY`] makes them
//! durable: flush + fsync + progress.json with the journal on, a flush
//! without. What a run does beside writing (the circuit breaker, the state
//! file, the progress bar) is the caller's [`Watch`], so this module knows
//! nothing of the engine.

use std::time::{Duration, Instant};

use csv::ByteRecord;
use tokio::sync::mpsc;

use super::journal::Progress;
use super::timeline::{Sample, Second};
use super::{Counts, Recorder, ReportError};
use crate::outcome::Outcome;

/// A finished row for the recorder, with the caller's `extra` for its watch.
pub(crate) struct Done<X> {
    /// The row's outcome.
    pub(crate) outcome: Outcome,
    /// The input record, when the row goes to failures.csv.
    pub(crate) raw: Option<ByteRecord>,
    /// Passed to [`Watch::recorded`] (the payload's hash with `--state`).
    pub(crate) extra: X,
}

/// What the run does beside writing: told of each row and each checkpoint.
pub(crate) trait Watch: Send + 'static {
    /// What each [`Done`] carries for the watch.
    type Extra: Send + 'static;

    /// `outcome` was written to the reports.
    fn recorded(&mut self, outcome: &Outcome, extra: Self::Extra);

    /// The request figures and active time so far, for progress.json.
    fn progress(&self) -> Progress;

    /// Everything recorded so far is durable: `counts` are the reports'.
    fn checkpointed(&mut self, counts: &Counts, progress: Progress);

    /// The reports cannot be written: the run must stop.
    fn failed(&mut self, e: &ReportError);

    /// The figures for the timeline's second that is closing.
    fn sample(&mut self) -> Sample;

    /// A second of the timeline closed; `counts` are the rows so far.
    fn ticked(&mut self, counts: &Counts, line: &Second);
}

/// The recorder's pause between drains while rows keep coming.
const RECORDER_NAP: Duration = Duration::from_millis(1);

/// Most time a recorded row waits before it is fsynced.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The recorder thread's end: the reports, why they could no longer be
/// written (the run was stopped then), and the watch, handed back.
type Recorded<W> = (Recorder, Option<ReportError>, W);

/// Start the recorder thread on tokio's blocking pool. `journal` off only
/// flushes at each checkpoint (benchmarks and dry runs).
pub(crate) fn spawn<W: Watch>(
    recorder: Recorder,
    rx: mpsc::Receiver<Vec<Done<W::Extra>>>,
    watch: W,
    journal: bool,
) -> tokio::task::JoinHandle<Recorded<W>> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut thread = Thread {
            recorder,
            rx,
            watch,
            journal,
            runtime,
            last_checkpoint: Instant::now(),
            dirty: false,
        };
        let failed = thread.run().err();
        if let Some(e) = &failed {
            thread.watch.failed(e);
        }
        (thread.recorder, failed, thread.watch)
    })
}

struct Thread<W: Watch> {
    recorder: Recorder,
    rx: mpsc::Receiver<Vec<Done<W::Extra>>>,
    watch: W,
    journal: bool,
    runtime: tokio::runtime::Handle,
    last_checkpoint: Instant,
    /// Rows recorded since the last checkpoint.
    dirty: bool,
}

impl<W: Watch> Thread<W> {
    fn run(&mut self) -> Result<(), ReportError> {
        let mut open = true;
        while open {
            // Take everything queued. While rows keep coming, nap a moment
            // between drains instead of waiting on the channel: senders then
            // queue without waking this thread for every row.
            let (drained, still_open) = self.drain()?;
            open = still_open;
            self.tick();
            let due = CHECKPOINT_EVERY.saturating_sub(self.last_checkpoint.elapsed());
            if self.dirty && due.is_zero() {
                self.checkpoint()?;
            }
            if !open {
                break;
            }
            if drained > 0 {
                std::thread::sleep(RECORDER_NAP);
                continue;
            }
            open = self.wait(due)?;
        }
        self.checkpoint()
    }

    /// Record every batch queued now; returns how many, and whether the
    /// channel is still open.
    fn drain(&mut self) -> Result<(usize, bool), ReportError> {
        let mut drained = 0;
        loop {
            match self.rx.try_recv() {
                Ok(batch) => {
                    self.tick();
                    self.record(batch)?;
                    drained += 1;
                }
                Err(mpsc::error::TryRecvError::Empty) => return Ok((drained, true)),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok((drained, false)),
            }
        }
    }

    /// Close the timeline's second once it is over, with the watch's
    /// figures; its line is written at the next checkpoint.
    fn tick(&mut self) {
        let now = Instant::now();
        if self.recorder.timeline.due(now) {
            let sample = self.watch.sample();
            let line = self.recorder.timeline.close(now, &sample);
            self.watch.ticked(self.recorder.counts(), &line);
            self.dirty = true;
        }
    }

    /// Quiet: wait for the next rows, but no longer than the next checkpoint
    /// is due (so what is recorded becomes durable on time) or the
    /// timeline's second is over. Returns whether the channel is still open.
    fn wait(&mut self, due: Duration) -> Result<bool, ReportError> {
        let tick = self.recorder.timeline.until_due(Instant::now());
        let wait = if self.dirty { due.min(tick) } else { tick };
        let next = match self
            .runtime
            .block_on(tokio::time::timeout(wait, self.rx.recv()))
        {
            Ok(next) => next,
            Err(_) => return Ok(true),
        };
        let Some(batch) = next else {
            return Ok(false);
        };
        self.tick();
        self.record(batch)?;
        // Rows are coming again: nap before the next drain, or every row
        // would wake this thread (a futex pair each).
        std::thread::sleep(RECORDER_NAP);
        Ok(true)
    }

    fn record(&mut self, batch: Vec<Done<W::Extra>>) -> Result<(), ReportError> {
        for Done {
            outcome,
            raw,
            extra,
        } in batch
        {
            self.recorder.record(&outcome, raw.as_ref())?;
            self.watch.recorded(&outcome, extra);
        }
        self.dirty = true;
        Ok(())
    }

    /// Make what is recorded durable, then tell the watch (results.csv
    /// first: the state never claims a user the reports do not show).
    fn checkpoint(&mut self) -> Result<(), ReportError> {
        let progress = self.watch.progress();
        if self.journal {
            self.recorder.checkpoint(progress)?;
        } else {
            self.recorder.flush()?;
        }
        self.last_checkpoint = Instant::now();
        self.dirty = false;
        self.watch.checkpointed(self.recorder.counts(), progress);
        Ok(())
    }
}
