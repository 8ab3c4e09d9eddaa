//! Feed: the intake's thread. Every data row goes either to the dispatcher
//! (a payload to send) or straight to the recorder (decided here: invalid,
//! duplicate, known to the state, not sent after a stop, or `valid` in a dry
//! run). Both queues are filled in batches.

use std::sync::Arc;

use bytes::Bytes;
use csv::ByteRecord;
use tokio::sync::mpsc;

use crate::api::model::Payload;
use crate::exec::breaker::Lookahead;
use crate::exec::stop::{Stop, StopKind};
use crate::exec::worker::Job;
use crate::input::InputError;
use crate::intake::{Intake, Step};
use crate::outcome::{Outcome, Status};
use crate::report::recorder;
use crate::state::{Fingerprint, StateReader, fingerprint};

/// A finished row for the recorder.
pub(crate) type Done = recorder::Done<Tag>;

/// What the watch learns of a row beside its outcome.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tag {
    /// The row's place among the rows the feed handed on (0, 1, 2, … in
    /// input order): the circuit breaker judges rows in this order.
    pub(crate) seq: u64,
    /// With `--state`, the fingerprint of the payload that was sent.
    pub(crate) hash: Option<Fingerprint>,
}

/// A row decided without a request; `raw` only when it is a failure.
fn local(seq: u64, outcome: Outcome, raw: Option<ByteRecord>) -> Done {
    Done {
        outcome,
        raw,
        extra: Tag { seq, hash: None },
    }
}

/// A row for the workers.
pub(crate) struct Queued {
    pub(crate) job: Job,
    /// The input record, for failures.csv if the row fails.
    pub(crate) raw: ByteRecord,
    pub(crate) tag: Tag,
}

/// What the feed does only in a live run: valid rows go to the
/// dispatcher (unless `--state` knows them), within the breaker's
/// lookahead. Without it (a dry run) they are recorded `valid`.
pub(crate) struct LiveFeed {
    /// The dispatcher's job queue.
    pub(crate) jobs: mpsc::Sender<Vec<Queued>>,
    /// `--state`: the users earlier runs provisioned.
    pub(crate) state: Option<StateReader>,
    /// How far the breaker has judged.
    pub(crate) lookahead: Arc<Lookahead>,
    /// The input is stdin or a pipe: each job is handed over at once, since
    /// the next read may wait for the producer as long as it likes.
    pub(crate) streamed: bool,
}

/// The feed's thread: read every data row and hand it on. Returns the
/// number of data rows read, or the read error that ended the input early
/// (the rows before it are handed on, and the run is stopped). In a live
/// run a row is handed on only within [`Lookahead::MAX`] rows of the last
/// one the breaker judged.
pub(crate) fn feed(
    mut intake: Intake,
    outcome_tx: mpsc::Sender<Vec<Done>>,
    stop: Stop,
    live: Option<LiveFeed>,
) -> Result<u64, InputError> {
    let mut out = Handoff {
        recorder: ToRecorder {
            tx: outcome_tx,
            batch: Vec::with_capacity(LOCAL_BATCH),
        },
        dispatcher: live.map(|live| ToDispatcher {
            batch: Vec::with_capacity(JOB_BATCH),
            live,
        }),
        stop,
    };
    let mut failure = None;
    let mut seq = 0u64;
    loop {
        let step = match intake.next_step() {
            Ok(Some(step)) => step,
            Ok(None) => break,
            Err(e) => {
                // Stop sending; rows after an unreadable part cannot be known.
                out.stop.trip(StopKind::Fatal, crate::error::chain(&e));
                failure = Some(e);
                break;
            }
        };
        if out.hold_for(seq).is_err() {
            break;
        }
        let handed = match step {
            Step::Local(o, raw) => {
                let raw = o.status.is_failure().then(|| raw.clone());
                out.recorder.push(local(seq, o, raw))
            }
            Step::Send { row, payload, raw } => out.valid(seq, row, payload, raw),
        };
        seq += 1;
        if handed.is_err() {
            // The recorder is gone (it could not write): nothing more to do.
            break;
        }
    }
    out.finish();
    match failure {
        Some(e) => Err(e),
        None => Ok(intake.rows_read()),
    }
}

/// What the feed makes of a valid row.
enum Prepared {
    /// Decided without a request: known to the state, not sent after a stop,
    /// or a payload that cannot be encoded.
    Local(Done),
    Job(Queued),
}

fn prepare(
    seq: u64,
    row: u64,
    payload: Payload,
    raw: &ByteRecord,
    state: &mut Option<StateReader>,
    stop: &Stop,
) -> Prepared {
    let hash = state.as_ref().map(|_| fingerprint(&payload));
    // With `--state`, a known user whose address changed is sent again
    // (the upsert attaches it) and ends `updated`.
    let mut update = false;
    if let (Some(reader), Some(h)) = (state.as_mut(), &hash) {
        if reader.unchanged(h) {
            // Known with this payload (from the pre-load): not sent again.
            let user_id = payload.into_user().user_id;
            let o = Outcome::local(row, user_id, Status::Unchanged, None);
            return Prepared::Local(local(seq, o, None));
        }
        match reader.lookup(&payload.user().user_id) {
            Ok(Some(k)) => match k.classify_payload(h) {
                Status::Updated => update = true,
                status => {
                    // Provisioned by an earlier run: not sent again.
                    let error = (status == Status::Changed).then(|| k.changed_message());
                    return Prepared::Local(local(
                        seq,
                        Outcome::local(row, payload.into_user().user_id, status, error),
                        None,
                    ));
                }
            },
            Ok(None) => {}
            Err(e) => stop.trip(StopKind::Fatal, crate::error::chain(&e)),
        }
    }
    if stop.is_tripped() {
        let user_id = payload.into_user().user_id;
        return Prepared::Local(not_sent(seq, row, user_id, raw.clone(), stop));
    }
    let endpoint = payload.endpoint();
    let body = payload.to_body();
    let user_id = payload.into_user().user_id;
    match body {
        Ok(body) => Prepared::Job(Queued {
            job: Job {
                row,
                user_id,
                endpoint,
                body: Bytes::from(body),
                update,
            },
            raw: raw.clone(),
            tag: Tag { seq, hash },
        }),
        Err(e) => {
            let o = Outcome::local(
                row,
                user_id,
                Status::Invalid,
                Some(format!("cannot encode the payload: {e}")),
            );
            Prepared::Local(local(seq, o, Some(raw.clone())))
        }
    }
}

/// A row recorded `failed` because the run stopped before it was sent.
fn not_sent(seq: u64, row: u64, user_id: String, raw: ByteRecord, stop: &Stop) -> Done {
    let o = Outcome::local(row, user_id, Status::Failed, Some(stop.not_sent_reason()));
    local(seq, o, Some(raw))
}

/// The feed's two outgoing queues, each filled in batches: a channel send
/// per row cost two futex calls per row (the feed thread parked on the full
/// queue and was woken for every slot freed).
struct Handoff {
    recorder: ToRecorder,
    /// `None` in a dry run.
    dispatcher: Option<ToDispatcher>,
    stop: Stop,
}

/// Rows decided here, on their way to the recorder.
struct ToRecorder {
    tx: mpsc::Sender<Vec<Done>>,
    batch: Vec<Done>,
}

/// Rows to send, on their way to the dispatcher.
struct ToDispatcher {
    live: LiveFeed,
    batch: Vec<Queued>,
}

/// The recorder is gone.
struct Gone;

impl Handoff {
    /// Wait until row `seq` is within the breaker's lookahead. Before
    /// waiting, hand over every row held in a batch: the breaker may be
    /// waiting for one of them.
    fn hold_for(&mut self, seq: u64) -> Result<(), Gone> {
        let Some(d) = &mut self.dispatcher else {
            return Ok(());
        };
        if d.live.lookahead.open_for(seq) {
            return Ok(());
        }
        d.flush(&mut self.recorder, &self.stop)?;
        self.recorder.flush()?;
        let tx = &self.recorder.tx;
        d.live.lookahead.wait_for(seq, || tx.is_closed());
        if tx.is_closed() {
            return Err(Gone);
        }
        Ok(())
    }

    /// A valid row: recorded `valid` in a dry run, else sent or decided
    /// here ([`prepare`]).
    fn valid(
        &mut self,
        seq: u64,
        row: u64,
        payload: Payload,
        raw: &ByteRecord,
    ) -> Result<(), Gone> {
        let Some(d) = &mut self.dispatcher else {
            let valid = Outcome::local(row, payload.into_user().user_id, Status::Valid, None);
            return self.recorder.push(local(seq, valid, None));
        };
        match prepare(seq, row, payload, raw, &mut d.live.state, &self.stop) {
            Prepared::Local(done) => self.recorder.push(done),
            Prepared::Job(queued) => d.push(queued, &mut self.recorder, &self.stop),
        }
    }

    /// Hand over whatever is left (the job queue closes when `self` drops).
    fn finish(mut self) {
        let jobs = match &mut self.dispatcher {
            Some(d) => d.flush(&mut self.recorder, &self.stop),
            None => Ok(()),
        };
        if jobs.is_ok() {
            let _ = self.recorder.flush();
        }
    }
}

impl ToRecorder {
    fn push(&mut self, done: Done) -> Result<(), Gone> {
        self.batch.push(done);
        if self.batch.len() >= LOCAL_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(LOCAL_BATCH));
        self.tx.blocking_send(batch).map_err(|_| Gone)
    }
}

impl ToDispatcher {
    /// Queue a job; the batch goes when it is full, or at once when the
    /// workers have nothing queued (start-up) or the input is streamed.
    fn push(&mut self, queued: Queued, recorder: &mut ToRecorder, stop: &Stop) -> Result<(), Gone> {
        self.batch.push(queued);
        let jobs = &self.live.jobs;
        let starving = jobs.capacity() == jobs.max_capacity();
        if self.batch.len() < JOB_BATCH && !starving && !self.live.streamed {
            return Ok(());
        }
        if jobs.capacity() == 0 {
            // About to block on a full queue: hand over the rows decided so
            // far, and let go of the state's read snapshot so its WAL can be
            // checkpointed.
            recorder.flush()?;
            if let Some(reader) = &mut self.live.state {
                let _ = reader.release();
            }
        }
        self.flush(recorder, stop)
    }

    fn flush(&mut self, recorder: &mut ToRecorder, stop: &Stop) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(JOB_BATCH));
        if let Err(mpsc::error::SendError(batch)) = self.live.jobs.blocking_send(batch) {
            // No dispatcher (no token): record them as not sent.
            for Queued { job, raw, tag } in batch {
                recorder.push(not_sent(tag.seq, job.row, job.user_id, raw, stop))?;
            }
        }
        Ok(())
    }
}

/// Rows decided by the feed (invalid, duplicate, unchanged, …) handed to the
/// recorder at once: one channel wake-up per batch, not per row.
const LOCAL_BATCH: usize = 256;

/// Most rows the feed hands to the dispatcher at once.
const JOB_BATCH: usize = 32;

/// Batches the job queue holds: about two rows queued per request in flight,
/// and at least two batches so the feed fills one while the other drains.
pub(crate) fn job_queue_batches(concurrency: u32) -> usize {
    (concurrency as usize * 2).div_ceil(JOB_BATCH).max(2)
}
