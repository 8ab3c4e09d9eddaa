//! The access token, kept fresh for every worker (google-cloud-rust model).
//!
//! ```text
//!  workers ── current() ──▶ watch::Receiver<Current>   (cheap read, Arc clone)
//!     │                          ▲
//!     │ 401: invalidate(gen) ─▶ mpsc<u64> ─▶ refresher task ── fetch_token() ──▶ /v2/oauth/token
//!     │        waits for generation > gen    │  also wakes at the scheduled refresh time
//!     └──── mark_good(gen) after an accepted answer
//! ```
//!
//! * **Fetched before anything is sent.** [`TokenManager::start`] gets the
//!   first token (retrying transient failures) before it returns, so refused
//!   credentials end the run (exit 3) before the first user request.
//! * **Refreshed ahead of expiry** by one background task, at the earlier of
//!   80 % of the lifetime and `expires_at − 60 s`, but never before half the
//!   lifetime (so 1-second test TTLs do not spin).
//! * **Single flight on 401.** Each published token carries a generation. A
//!   worker that got a 401 calls `TokenManager::invalidate` with the
//!   generation it used; the task refreshes only if that generation is still
//!   current and ignores the rest, so N simultaneous 401s cost one request.
//!   Every caller waits until a newer generation (or a failure) is published.
//! * **Failures.** Transient token-endpoint errors are retried with backoff
//!   inside the task. Refused credentials, or a budget exhausted while the token
//!   is unusable, are published as a sticky failure: every later `invalidate`
//!   returns it and the worker turns it into a fatal error. If
//!   `max_unusable_tokens` fresh tokens in a row are 401'd without ever being
//!   accepted (no `mark_good`), the task stops with
//!   [`TokenError::RejectedAfterRefresh`] instead of refreshing forever. A
//!   token that sat through a pool-wide 429 pause before the refused request
//!   (`TokenManager::invalidate_after_pause`) does not count: it was more
//!   likely revoked or expired while nobody could use it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::api::client::{ConnectClient, Token, TokenError};
use crate::retry::RetryPolicy;

/// Tuning of the token manager; [`Default`] suits production.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenOptions {
    /// Retries of a failing token request (transient errors only).
    pub retry: RetryPolicy,
    /// Fresh tokens in a row that may be 401'd before giving up.
    pub max_unusable_tokens: u32,
    /// A never-accepted token refused within this long of being issued
    /// counts towards `max_unusable_tokens`; one that sat unused longer (a
    /// pool-wide 429 pause) was more likely revoked in the meantime.
    pub refused_at_once: Duration,
    /// Lower bound between scheduled refreshes.
    pub min_refresh_interval: Duration,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            // Worst case about 8 s before an unreachable endpoint is reported.
            retry: RetryPolicy {
                max_attempts: 6,
                base: Duration::from_millis(250),
                cap: Duration::from_secs(10),
            },
            max_unusable_tokens: 4,
            refused_at_once: Duration::from_secs(2),
            min_refresh_interval: Duration::from_millis(20),
        }
    }
}

/// The bearer token value. `Debug` does not show it.
#[derive(Clone)]
pub(crate) struct AccessToken(Arc<str>);

impl AccessToken {
    /// The raw token, for the Authorization header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// A snapshot of the current token, with the generation to pass to
/// `TokenManager::invalidate` when it is refused.
#[derive(Clone, Debug)]
pub(crate) struct TokenRef {
    /// Counts the tokens published, from 1; a refresh publishes the next.
    pub generation: u64,
    /// The token itself.
    pub token: AccessToken,
    /// When the refresher published it.
    pub(crate) issued_at: Instant,
}

/// What the refresher publishes.
#[derive(Clone, Debug)]
struct Current {
    generation: u64,
    token: AccessToken,
    expires_at: Instant,
    issued_at: Instant,
    /// Sticky: once set the refresher has stopped.
    failure: Option<TokenError>,
}

/// A 401 reported by a worker.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    generation: u64,
    /// The token sat through a pool-wide pause before the refused request.
    after_pause: bool,
}

/// Where tokens come from: the real client, or a fake in unit tests.
trait FetchToken: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = Result<Token, TokenError>> + Send;
}

impl FetchToken for ConnectClient {
    fn fetch(&self) -> impl Future<Output = Result<Token, TokenError>> + Send {
        self.fetch_token()
    }
}

/// Shared owner of the access token. See the module docs.
pub(crate) struct TokenManager {
    rx: watch::Receiver<Current>,
    invalidate_tx: mpsc::UnboundedSender<Refusal>,
    refreshes: Arc<AtomicU64>,
    last_good: Arc<AtomicU64>,
    task: AbortHandle,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = self.rx.borrow();
        f.debug_struct("TokenManager")
            .field("generation", &cur.generation)
            .field("failure", &cur.failure)
            .field("refreshes", &self.refreshes())
            .finish_non_exhaustive()
    }
}

impl Drop for TokenManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenManager {
    /// Fetch the first token, then keep it fresh in a background task.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn start(client: ConnectClient) -> Result<Arc<TokenManager>, TokenError> {
        Self::start_with(client, TokenOptions::default()).await
    }

    /// [`TokenManager::start`] with explicit options.
    pub(crate) async fn start_with(
        client: ConnectClient,
        opts: TokenOptions,
    ) -> Result<Arc<TokenManager>, TokenError> {
        Self::start_with_source(client, opts).await
    }

    async fn start_with_source<S: FetchToken>(
        source: S,
        opts: TokenOptions,
    ) -> Result<Arc<TokenManager>, TokenError> {
        let first = fetch_with_retry(&source, &opts.retry).await?;
        let now = Instant::now();
        let (expires_at, next_refresh) = deadlines(now, first.expires_in, &opts);
        let (tx, rx) = watch::channel(Current {
            generation: 1,
            token: to_access(&first),
            expires_at,
            issued_at: now,
            failure: None,
        });
        let (invalidate_tx, invalidate_rx) = mpsc::unbounded_channel();
        let refreshes = Arc::new(AtomicU64::new(0));
        let last_good = Arc::new(AtomicU64::new(0));
        let refresher = Refresher {
            source,
            opts,
            tx,
            invalidate_rx,
            refreshes: refreshes.clone(),
            last_good: last_good.clone(),
            unusable_streak: 0,
            next_refresh,
            issued_at: now,
        };
        let task = tokio::spawn(refresher.run()).abort_handle();
        Ok(Arc::new(TokenManager {
            rx,
            invalidate_tx,
            refreshes,
            last_good,
            task,
        }))
    }

    /// The token to use for the next request.
    pub(crate) fn current(&self) -> TokenRef {
        let cur = self.rx.borrow();
        TokenRef {
            generation: cur.generation,
            token: cur.token.clone(),
            issued_at: cur.issued_at,
        }
    }

    /// Report that the token of `generation` was answered 401, and wait until a
    /// newer one is published. Concurrent callers with the same generation share
    /// one refresh. Errors are fatal for the run (credentials refused, endpoint
    /// unreachable past the retry budget, or fresh tokens refused repeatedly).
    pub(crate) async fn invalidate(&self, generation: u64) -> Result<(), TokenError> {
        self.refused(Refusal {
            generation,
            after_pause: false,
        })
        .await
    }

    /// [`TokenManager::invalidate`] for a token that sat through a pool-wide
    /// pause between its issue and the refused request: it does not count
    /// towards `max_unusable_tokens`.
    pub(crate) async fn invalidate_after_pause(&self, generation: u64) -> Result<(), TokenError> {
        self.refused(Refusal {
            generation,
            after_pause: true,
        })
        .await
    }

    async fn refused(&self, refusal: Refusal) -> Result<(), TokenError> {
        let generation = refusal.generation;
        {
            let cur = self.rx.borrow();
            if let Some(e) = &cur.failure {
                return Err(e.clone());
            }
            if cur.generation > generation {
                return Ok(());
            }
        }
        let mut rx = self.rx.clone();
        if self.invalidate_tx.send(refusal).is_err() {
            return Err(self.failure().unwrap_or(TokenError::Stopped));
        }
        let seen = rx
            .wait_for(|c| c.failure.is_some() || c.generation > generation)
            .await
            .map(|c| c.failure.clone());
        match seen {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err(self.failure().unwrap_or(TokenError::Stopped)),
        }
    }

    /// Record that the token of `generation` was accepted by the API. Used to
    /// tell a revoked/expired token from one that never worked.
    pub(crate) fn mark_good(&self, generation: u64) {
        // Load first: the common case (already marked) stays a shared read.
        if self.last_good.load(Ordering::Relaxed) < generation {
            self.last_good.fetch_max(generation, Ordering::Relaxed);
        }
    }

    /// Successful token fetches after the first one.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// The fatal error, once the refresher has given up.
    fn failure(&self) -> Option<TokenError> {
        self.rx.borrow().failure.clone()
    }
}

/// When to refresh a token of this lifetime: the earlier of 80 % and
/// `lifetime − 60 s`, but not before half the lifetime (short test TTLs) and
/// not sooner than `min_refresh_interval`.
/// When a token received at `now` that lasts `lifetime` expires, and when
/// its scheduled refresh is due.
pub(crate) fn deadlines(
    now: Instant,
    lifetime: Duration,
    opts: &TokenOptions,
) -> (Instant, Instant) {
    (now + lifetime, now + refresh_delay(lifetime, opts))
}

fn refresh_delay(lifetime: Duration, opts: &TokenOptions) -> Duration {
    let ahead = lifetime
        .mul_f64(0.8)
        .min(lifetime.saturating_sub(Duration::from_secs(60)));
    ahead.max(lifetime / 2).max(opts.min_refresh_interval)
}

fn to_access(t: &Token) -> AccessToken {
    // Arc<str> so every request's snapshot is a refcount bump, not a copy.
    AccessToken(Arc::from(t.access_token.expose_secret()))
}

/// One token, retrying transient failures per `policy`; the last error once
/// the budget is spent.
async fn fetch_with_retry<S: FetchToken>(
    source: &S,
    policy: &RetryPolicy,
) -> Result<Token, TokenError> {
    let mut backoff = policy.backoff();
    loop {
        match source.fetch().await {
            Ok(t) => return Ok(t),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                let Some(delay) = backoff.next() else {
                    return Err(e);
                };
                let delay = e.retry_after().map_or(delay, |ra| ra.max(delay));
                tracing::warn!(error = %e, retry_in = ?delay, "token request failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Scheduled,
    Invalidated,
}

/// The background task: the only caller of the token endpoint after start.
struct Refresher<S> {
    source: S,
    opts: TokenOptions,
    tx: watch::Sender<Current>,
    invalidate_rx: mpsc::UnboundedReceiver<Refusal>,
    refreshes: Arc<AtomicU64>,
    last_good: Arc<AtomicU64>,
    unusable_streak: u32,
    next_refresh: Instant,
    /// When the current token was issued.
    issued_at: Instant,
}

impl<S: FetchToken> Refresher<S> {
    async fn run(mut self) {
        loop {
            tokio::select! {
                // Invalidations first: a refused token is more urgent than the schedule.
                biased;
                msg = self.invalidate_rx.recv() => {
                    // None: the manager was dropped.
                    let Some(refusal) = msg else { return };
                    // Stale: someone already caused (or the schedule did) a refresh.
                    if refusal.generation == self.tx.borrow().generation {
                        self.on_invalidated(refusal).await;
                    }
                }
                () = tokio::time::sleep_until(self.next_refresh) => self.refresh(Why::Scheduled).await,
            }
            if self.tx.borrow().failure.is_some() {
                return;
            }
        }
    }

    async fn on_invalidated(
        &mut self,
        Refusal {
            generation,
            after_pause,
        }: Refusal,
    ) {
        let refused_at_once = !after_pause && self.issued_at.elapsed() < self.opts.refused_at_once;
        if self.last_good.load(Ordering::Relaxed) >= generation || !refused_at_once {
            // It worked before, or lived a while unused (a long 429 pause):
            // revoked or expired, so a normal refresh.
            self.unusable_streak = 0;
        } else {
            self.unusable_streak += 1;
        }
        if self.unusable_streak >= self.opts.max_unusable_tokens {
            let e = TokenError::RejectedAfterRefresh(self.unusable_streak);
            tracing::error!(error = %e, "giving up on the access token");
            self.fail(e);
            return;
        }
        self.refresh(Why::Invalidated).await;
    }

    async fn refresh(&mut self, why: Why) {
        let mut backoff = self.opts.retry.backoff();
        loop {
            match self.source.fetch().await {
                Ok(token) => return self.publish(&token, why),
                Err(e) if !e.is_transient() => return self.fail(e),
                Err(e) => {
                    let Some(delay) = backoff.next() else {
                        let expires_at = self.tx.borrow().expires_at;
                        if why == Why::Scheduled && expires_at > Instant::now() {
                            // The current token still works: try again later
                            // rather than failing the run early.
                            self.next_refresh = Instant::now() + self.opts.retry.cap;
                            tracing::warn!(error = %e, "token refresh failed; keeping the current token for now");
                            return;
                        }
                        return self.fail(e);
                    };
                    let delay = e.retry_after().map_or(delay, |ra| ra.max(delay));
                    tracing::warn!(error = %e, retry_in = ?delay, "token refresh failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn publish(&mut self, token: &Token, why: Why) {
        let now = Instant::now();
        self.issued_at = now;
        let (expires_at, next_refresh) = deadlines(now, token.expires_in, &self.opts);
        self.next_refresh = next_refresh;
        let generation = self.tx.borrow().generation + 1;
        self.tx.send_replace(Current {
            generation,
            token: to_access(token),
            expires_at,
            issued_at: now,
            failure: None,
        });
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(generation, reason = ?why, expires_in = ?token.expires_in, "access token refreshed");
    }

    fn fail(&mut self, e: TokenError) {
        self.tx.send_modify(|c| c.failure = Some(e));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use secrecy::SecretString;

    use super::*;
    use crate::api::client::TransportKind;

    /// A token endpoint that answers from a script, then with fresh tokens.
    struct Fake {
        calls: AtomicU32,
        ttl: Duration,
        latency: Duration,
        script: Mutex<VecDeque<Result<(), TokenError>>>,
    }

    impl Fake {
        fn new(ttl: Duration, script: Vec<Result<(), TokenError>>) -> Arc<Fake> {
            Arc::new(Fake {
                calls: AtomicU32::new(0),
                ttl,
                latency: Duration::from_millis(2),
                script: Mutex::new(script.into()),
            })
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl FetchToken for Arc<Fake> {
        fn fetch(&self) -> impl Future<Output = Result<Token, TokenError>> + Send {
            let this = self.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(this.latency).await;
                let next = this.script.lock().expect("script").pop_front();
                if let Some(Err(e)) = next {
                    return Err(e);
                }
                Ok(Token {
                    access_token: SecretString::from(format!("tok-{n}")),
                    expires_in: this.ttl,
                })
            }
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn opts() -> TokenOptions {
        TokenOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(5),
                cap: Duration::from_millis(20),
            },
            ..TokenOptions::default()
        }
    }

    fn refused() -> TokenError {
        TokenError::Refused {
            status: 401,
            message: "bad client".into(),
        }
    }

    fn down() -> TokenError {
        TokenError::Transport {
            kind: TransportKind::Connect,
            message: "refused".into(),
        }
    }

    #[test]
    fn refresh_delay_schedule() {
        let o = TokenOptions::default();
        assert_eq!(refresh_delay(DAY, &o), DAY.mul_f64(0.8));
        assert_eq!(
            refresh_delay(Duration::from_secs(100), &o),
            Duration::from_secs(50)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(1_000), &o),
            Duration::from_secs(800)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(1), &o),
            Duration::from_millis(500)
        );
        assert_eq!(refresh_delay(Duration::ZERO, &o), o.min_refresh_interval);
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken(Arc::from("very-secret"));
        assert!(!format!("{t:?}").contains("very-secret"));
    }

    #[tokio::test]
    async fn start_fetches_the_first_token() {
        let fake = Fake::new(DAY, vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        let t = m.current();
        assert_eq!(t.generation, 1);
        assert_eq!(t.token.expose(), "tok-1");
        assert_eq!(fake.calls(), 1);
        assert_eq!(m.refreshes(), 0);
    }

    #[tokio::test]
    async fn refused_credentials_fail_start_without_retry() {
        let fake = Fake::new(DAY, vec![Err(refused())]);
        let err = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect_err("refused");
        assert_eq!(err, refused());
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn transient_start_failures_are_retried_then_reported() {
        let fake = Fake::new(DAY, vec![Err(down()), Err(down())]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        assert_eq!(fake.calls(), 3);
        assert_eq!(m.current().generation, 1);

        let fake = Fake::new(DAY, vec![Err(down()), Err(down()), Err(down())]);
        let err = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect_err("down");
        assert!(err.is_transient());
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn concurrent_invalidations_share_one_refresh() {
        let fake = Fake::new(DAY, vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        m.mark_good(1);
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.invalidate(1).await })
            })
            .collect();
        for w in waiters {
            w.await.expect("join").expect("invalidate");
        }
        assert_eq!(fake.calls(), 2);
        assert_eq!(m.refreshes(), 1);
        assert_eq!(m.current().generation, 2);
        assert_eq!(m.current().token.expose(), "tok-2");
        // A late caller with the old generation does not refresh again.
        m.invalidate(1).await.expect("stale");
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn refreshes_ahead_of_expiry() {
        let fake = Fake::new(Duration::from_millis(200), vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        tokio::time::sleep(Duration::from_millis(550)).await;
        // Every ~100 ms (half of a short TTL): at least 2 refreshes in 550 ms
        // even on a loaded machine.
        assert!(m.refreshes() >= 2, "{}", m.refreshes());
        assert!(m.rx.borrow().expires_at > Instant::now());
    }

    #[tokio::test]
    async fn refused_refresh_is_surfaced_to_every_caller() {
        let fake = Fake::new(DAY, vec![Ok(()), Err(refused())]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        m.mark_good(1);
        assert_eq!(m.invalidate(1).await, Err(refused()));
        assert_eq!(m.invalidate(1).await, Err(refused()));
        assert_eq!(m.failure(), Some(refused()));
    }

    #[tokio::test]
    async fn transient_refresh_failures_are_retried_inside() {
        let fake = Fake::new(DAY, vec![Ok(()), Err(down()), Err(down())]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        m.mark_good(1);
        m.invalidate(1).await.expect("refresh after retries");
        assert_eq!(m.current().generation, 2);
        assert_eq!(fake.calls(), 4);
    }

    #[tokio::test]
    async fn fresh_tokens_refused_repeatedly_is_fatal() {
        let fake = Fake::new(DAY, vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        // Never marked good: each fresh token is 401'd straight away.
        m.invalidate(1).await.expect("first refresh");
        m.invalidate(2).await.expect("second refresh");
        m.invalidate(3).await.expect("third refresh");
        let err = m.invalidate(4).await.expect_err("fatal");
        assert_eq!(err, TokenError::RejectedAfterRefresh(4));
        assert!(
            err.to_string()
                .contains("token rejected immediately after refresh")
        );
        assert_eq!(fake.calls(), 4);
    }

    #[tokio::test]
    async fn a_token_refused_long_after_issue_was_revoked_not_bad() {
        let fake = Fake::new(DAY, vec![]);
        let o = TokenOptions {
            refused_at_once: Duration::from_millis(50),
            ..opts()
        };
        let m = TokenManager::start_with_source(fake.clone(), o)
            .await
            .expect("start");
        for generation in 1..=6 {
            // Unused for longer than `refused_at_once` (a 429 pause), then 401'd.
            tokio::time::sleep(Duration::from_millis(80)).await;
            m.invalidate(generation).await.expect("a normal refresh");
        }
        assert_eq!(m.failure(), None);
    }

    #[tokio::test]
    async fn a_token_refused_after_a_pool_pause_was_revoked_not_bad() {
        let fake = Fake::new(DAY, vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        // Refused at once, but each after a 429 pause: revocations, not a
        // refusal of fresh tokens.
        for generation in 1..=6 {
            m.invalidate_after_pause(generation)
                .await
                .expect("a normal refresh");
        }
        assert_eq!(m.failure(), None);
        // Without the pause the streak counts again from zero.
        for generation in 7..=9 {
            m.invalidate(generation).await.expect("refresh");
        }
        assert_eq!(
            m.invalidate(10).await,
            Err(TokenError::RejectedAfterRefresh(4))
        );
    }

    #[tokio::test]
    async fn accepted_tokens_reset_the_streak() {
        let fake = Fake::new(DAY, vec![]);
        let m = TokenManager::start_with_source(fake.clone(), opts())
            .await
            .expect("start");
        for generation in 1..=6 {
            m.mark_good(generation);
            m.invalidate(generation).await.expect("refresh");
        }
        assert_eq!(m.refreshes(), 6);
    }
}
