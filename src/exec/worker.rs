//! The per-row retry loop: one [`Job`] in, one [`Outcome`] out.
//!
//! Each attempt goes: pool-wide [`Throttle`] → governor cell (before *every*
//! attempt, retries included, so the partner never sees more than `--rate`) →
//! current token → exactly one request to the job's endpoint (create-user or
//! the address upsert) → [`classify`]. A 401 refreshes the
//! token and retries without spending the retry budget; transient failures wait
//! a full-jitter backoff delay (at least the server's Retry-After, and 429s
//! in a cluster hold the whole pool). Cancellation is honoured only *between* attempts: a
//! request already sent is allowed to finish (bounded by `--timeout`), so its
//! answer is never lost.
//!
//! Per-row problems are data (`Outcome`); only a run-ending token problem is an
//! `Err(FatalError)`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::Jitter;

use crate::api::classify::{Verdict, classify};
use crate::api::client::{Attempt, ConnectClient, TokenError};
use crate::api::model::Endpoint;
use crate::api::token::{TokenManager, TokenRef};
use crate::exec::counters::EngineCounters;
use crate::exec::pace::{Pace, Slot};
use crate::exec::stop::Stop;
use crate::exec::throttle::Throttle;
use crate::outcome::{Outcome, Status, ValidatedAddress};
use crate::retry::{Backoff, RetryPolicy};

/// 401s per row answered by refreshing the token "for free". Beyond this a 401
/// spends an attempt like any transient error, so a row cannot loop forever
/// even when tokens are accepted by some requests and refused by others.
const FREE_UNAUTHORIZED_PER_ROW: u32 = 3;

/// The error message of rows cut short by cancellation.
const INTERRUPTED: &str = "interrupted";

/// Everything a worker needs, built once before the run (`Arc`-shared).
pub(crate) struct WorkerCtx {
    /// Sends the create requests.
    pub client: ConnectClient,
    /// Hands out the current access token and refreshes it.
    pub tokens: Arc<TokenManager>,
    /// One limiter for the whole pool (`--rate`, `--burst`), whose rate the
    /// auto controller may change.
    pub pace: Arc<Pace>,
    /// Spreads workers released by the limiter at the same instant.
    pub jitter: Jitter,
    /// The pool-wide pause after a 429.
    pub throttle: Throttle,
    /// Attempts and backoff per row.
    pub retry: RetryPolicy,
    /// Tripped on SIGINT/SIGTERM, when the time budget runs out or on a
    /// fatal error; a row it keeps from its first attempt says why.
    pub stop: Stop,
    /// The run's request, retry and 429 counts.
    pub counters: Arc<EngineCounters>,
}

/// A row ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// 1-based data-row number.
    pub row: u64,
    /// The payload's user_id.
    pub user_id: String,
    /// Where it goes: create-user, or the address endpoint (chosen at intake).
    pub endpoint: Endpoint,
    /// The JSON body, serialised once; retries clone the `Bytes`.
    pub body: Bytes,
    /// With `--state`: a known user sent again for a changed address; its
    /// 200 is `updated`, not `created`.
    pub update: bool,
}

/// A problem that ends the whole run (exit 3), not just one row.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FatalError {
    /// The token could not be refreshed: credentials refused, the endpoint
    /// unreachable past the retry budget, or fresh tokens refused at once.
    #[error("row {row}: cannot refresh the access token")]
    Token {
        /// The row that needed the token.
        row: u64,
        /// Why no token came.
        #[source]
        source: TokenError,
    },
}

/// Provision one row: retry until it is created, exists, is rejected, runs out
/// of attempts, or the run is cancelled. `Err` only for [`FatalError`].
///
/// Each turn: wait for a slot (cancellable) → send once → decide. Waits
/// between attempts are cancellable; a request on the wire is not.
pub(crate) async fn provision(job: Job, cx: &WorkerCtx) -> Result<Outcome, FatalError> {
    let mut row = RowRun::new(job, cx.retry.backoff());
    loop {
        let Some(slot) = until_cancelled(cx, wait_for_slot(cx)).await else {
            return Ok(row.interrupted(&cx.stop));
        };
        let token = cx.tokens.current();
        let verdict = send(&mut row, &token, slot, cx).await;
        let ended = match row.decide(verdict) {
            Next::Finish(status, http, error) => return Ok(row.finish(status, http, error)),
            Next::RefreshToken => refresh_for(&row, &token, cx).await?,
            Next::Retry {
                retry_after,
                throttled,
            } => back_off(&mut row, retry_after, throttled, cx).await,
        };
        match ended {
            None => {}
            Some(Ended::Interrupted) => return Ok(row.interrupted(&cx.stop)),
            Some(Ended::OutOfAttempts) => return Ok(row.failed()),
        }
    }
}

/// Why a row stops between attempts.
enum Ended {
    /// The run was stopped.
    Interrupted,
    /// The retry budget is spent.
    OutOfAttempts,
}

/// A 401: refresh the token once for every worker that saw it. A refreshed
/// token is not a retry: no backoff, no budget spent.
async fn refresh_for(
    row: &RowRun,
    token: &TokenRef,
    cx: &WorkerCtx,
) -> Result<Option<Ended>, FatalError> {
    let Some(refreshed) = until_cancelled(cx, refresh(token, cx)).await else {
        return Ok(Some(Ended::Interrupted));
    };
    refreshed.map_err(|source| FatalError::Token {
        row: row.job.row,
        source,
    })?;
    Ok(None)
}

/// Wait out the next backoff delay (at least `retry_after`); a 429 that
/// follows another closely pauses the whole pool for it, since the
/// partner's threshold is shared (`Throttle::throttled`).
async fn back_off(
    row: &mut RowRun,
    retry_after: Option<Duration>,
    throttled: bool,
    cx: &WorkerCtx,
) -> Option<Ended> {
    let Some(delay) = row.backoff.next() else {
        return Some(Ended::OutOfAttempts);
    };
    let delay = retry_after.map_or(delay, |ra| ra.max(delay));
    if throttled {
        let held = cx.throttle.throttled(delay);
        // A pause the partner asked for is push-back the auto rate reads;
        // one of our own backoff is not.
        if retry_after.is_some() {
            cx.counters.pool_held(held);
        }
    }
    cx.counters.retried();
    tracing::debug!(row = row.job.row, attempt = row.attempts, ?delay, reason = %row.last.1, "retrying");
    until_cancelled(cx, tokio::time::sleep(delay))
        .await
        .is_none()
        .then_some(Ended::Interrupted)
}

/// What a row does after an attempt.
enum Next {
    Finish(Status, Option<u16>, Option<String>),
    /// 401 with free refreshes left: refresh the token and send again.
    RefreshToken,
    Retry {
        retry_after: Option<Duration>,
        throttled: bool,
    },
}

/// `fut`, unless the run is cancelled first (`None`).
async fn until_cancelled<T>(cx: &WorkerCtx, fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = cx.stop.cancelled() => None,
        v = fut => Some(v),
    }
}

/// The pool-wide 429 pause, then one slot of the shared limiter.
async fn wait_for_slot(cx: &WorkerCtx) -> Option<Slot> {
    cx.throttle.wait().await;
    cx.pace.until_ready(cx.jitter).await
}

/// Exactly one request with `token`, counted, and classified.
async fn send(row: &mut RowRun, token: &TokenRef, slot: Option<Slot>, cx: &WorkerCtx) -> Verdict {
    row.attempts += 1;
    cx.counters.sending();
    let sent = Instant::now();
    let job = &row.job;
    let attempt = cx
        .client
        .send(
            token.token.expose(),
            job.endpoint,
            &job.user_id,
            job.body.clone(),
        )
        .await;
    let rtt = sent.elapsed();
    let verdict = classify(&attempt);
    cx.counters.observe(&attempt, &verdict, rtt);
    if let (Verdict::Done(..), Attempt::Answered { validated, .. }) = (&verdict, &attempt) {
        row.validated = validated.clone().map(Box::new);
    }
    if matches!(attempt, Attempt::Answered { .. }) {
        // When the partner saw it is only known for an answered request.
        let refused = matches!(
            verdict,
            Verdict::Retry {
                throttled: true,
                ..
            }
        );
        cx.pace.settle(slot, rtt, refused);
        // Any answer but 401 means the token was accepted (the sandbox, like
        // Connect, authenticates before rate limiting); a transport error
        // says nothing about it.
        if !matches!(verdict, Verdict::Unauthorized) {
            cx.tokens.mark_good(token.generation);
        }
    }
    verdict
}

/// Report `token` refused; a token that sat through a pool-wide pause was
/// more likely revoked meanwhile than refused at once.
async fn refresh(token: &TokenRef, cx: &WorkerCtx) -> Result<(), TokenError> {
    if cx.throttle.held_after(token.issued_at) {
        cx.tokens.invalidate_after_pause(token.generation).await
    } else {
        cx.tokens.invalidate(token.generation).await
    }
}

/// Book-keeping for one row while it is being provisioned.
struct RowRun {
    job: Job,
    started: Instant,
    attempts: u32,
    /// Delays before the retries left.
    backoff: Backoff,
    /// 401s answered by a token refresh so far.
    free_unauthorized: u32,
    /// Last HTTP status and reason, for `failed` rows.
    last: (Option<u16>, String),
    /// The address endpoint's validated answer, once an attempt succeeded.
    validated: Option<Box<ValidatedAddress>>,
}

impl RowRun {
    fn new(job: Job, backoff: Backoff) -> Self {
        RowRun {
            job,
            started: Instant::now(),
            attempts: 0,
            backoff,
            free_unauthorized: 0,
            last: (None, String::new()),
            validated: None,
        }
    }

    /// What to do after an attempt classified `verdict`.
    fn decide(&mut self, verdict: Verdict) -> Next {
        match verdict {
            Verdict::Done(Status::Created, http) if self.job.update => {
                Next::Finish(Status::Updated, Some(http), None)
            }
            Verdict::Done(status, http) => Next::Finish(status, Some(http), None),
            Verdict::Final(http, message) => {
                Next::Finish(Status::Rejected, Some(http), Some(message))
            }
            Verdict::Unauthorized if self.free_unauthorized < FREE_UNAUTHORIZED_PER_ROW => {
                self.free_unauthorized += 1;
                self.last = (Some(401), "HTTP 401: access token refused".into());
                Next::RefreshToken
            }
            Verdict::Unauthorized => {
                self.last = (
                    Some(401),
                    "HTTP 401: access token refused repeatedly".into(),
                );
                Next::Retry {
                    retry_after: None,
                    throttled: false,
                }
            }
            Verdict::Retry {
                reason,
                http,
                retry_after,
                throttled,
            } => {
                self.last = (http, reason);
                Next::Retry {
                    retry_after,
                    throttled,
                }
            }
        }
    }

    /// Transient errors outlasted the retries.
    fn failed(mut self) -> Outcome {
        let (http, reason) = std::mem::take(&mut self.last);
        self.finish(Status::Failed, http, Some(reason))
    }

    fn finish(self, status: Status, http_status: Option<u16>, error: Option<String>) -> Outcome {
        Outcome {
            row: self.job.row,
            user_id: self.job.user_id,
            status,
            http_status,
            attempts: self.attempts,
            error,
            duration: self.started.elapsed(),
            address: self.validated,
        }
    }

    /// Cut short by a stop: "not sent" before its first attempt, like the
    /// rows the feed never queued; "interrupted" after one.
    fn interrupted(mut self, stop: &Stop) -> Outcome {
        let (http, reason) = std::mem::take(&mut self.last);
        let error = if self.attempts == 0 {
            stop.not_sent_reason()
        } else if reason.is_empty() {
            INTERRUPTED.to_owned()
        } else {
            format!("{INTERRUPTED} (last error: {reason})")
        };
        self.finish(Status::Failed, http, Some(error))
    }
}
