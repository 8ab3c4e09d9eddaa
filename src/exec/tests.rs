//! Unit tests of the engine's parts (client, token manager, classification, worker loop)
//! against the real sandbox over loopback HTTP: what the server saw is the
//! assertion (docs/rate-limiting.md: How a run executes, The sandbox).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::client::{Attempt, BaseUrl, ConnectClient, Credentials, TokenError, TransportKind};
use crate::api::model::{CreateUser, Endpoint};
use crate::api::token::{TokenManager, TokenOptions};
use crate::exec::counters::EngineCounters;
use crate::exec::pace::{Pace, Pacing};
use crate::exec::stop::Stop;
use crate::exec::throttle::Throttle;
use crate::exec::worker::{Job, WorkerCtx, provision};
use crate::outcome::{Outcome, Status};
use crate::retry::RetryPolicy;
use crate::sandbox::{ConfigPatch, Sandbox, SandboxConfig};
use bytes::Bytes;
use governor::Jitter;
use secrecy::SecretString;

use std::net::SocketAddr;

/// A sandbox on `127.0.0.1:0`.
async fn sandbox(cfg: SandboxConfig) -> Sandbox {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    Sandbox::start(cfg, listen).await.expect("sandbox starts")
}

fn client_for(url: &str, secret: &str) -> ConnectClient {
    let creds = Credentials {
        client_id: "sandbox-client".into(),
        client_secret: SecretString::from(secret.to_owned()),
        scope: Some("connect:fulfillment".into()),
    };
    let base = BaseUrl::parse(url).expect("the sandbox's URL");
    ConnectClient::new(&base, creds, Duration::from_secs(5)).expect("client")
}

fn client(sb: &Sandbox) -> ConnectClient {
    client_for(&sb.url(), "sandbox-secret")
}

fn job(row: u64) -> Job {
    job_with(row, "ann")
}

fn job_with(row: u64, first_name: &str) -> Job {
    let user = CreateUser {
        user_id: format!("user-{row:04}"),
        first_name: first_name.into(),
        last_name: Some("smith".into()),
        ..Default::default()
    };
    Job {
        row,
        user_id: user.user_id.clone(),
        endpoint: Endpoint::Users,
        body: Bytes::from(serde_json::to_vec(&user).expect("json")),
        update: false,
    }
}

fn retry(max_attempts: u32, base_ms: u64, cap_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(base_ms),
        cap: Duration::from_millis(cap_ms),
    }
}

async fn ctx(sb: &Sandbox, rate: u32, burst: u32, retry: RetryPolicy) -> Arc<WorkerCtx> {
    let client = client(sb);
    let tokens = TokenManager::start(client.clone()).await.expect("token");
    Arc::new(WorkerCtx {
        client,
        tokens,
        pace: Arc::new(Pace::new(f64::from(rate), Pacing::from_burst(Some(burst)))),
        jitter: Jitter::up_to(Duration::from_millis(5)),
        throttle: Throttle::new(),
        retry,
        stop: Stop::new(),
        counters: Arc::new(EngineCounters::default()),
    })
}

/// `workers` tasks pulling rows from one queue, like the pipeline does.
async fn run(
    cx: &Arc<WorkerCtx>,
    rows: impl IntoIterator<Item = Job>,
    workers: usize,
) -> Vec<Outcome> {
    let queue = Arc::new(Mutex::new(rows.into_iter().collect::<VecDeque<_>>()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (cx, queue) = (cx.clone(), queue.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().expect("queue").pop_front();
                let Some(job) = next else { return done };
                done.push(provision(job, &cx).await.expect("no fatal error"));
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.extend(r.expect("worker panicked"));
    }
    out.sort_by_key(|o| o.row);
    out
}

/// Jobs 1..=`rows` run by `workers` tasks against a new sandbox with `cfg`,
/// paced at `rate` with `burst` and retried as `retry` says.
async fn run_against(
    cfg: SandboxConfig,
    rate: u32,
    burst: u32,
    retry: RetryPolicy,
    rows: u64,
    workers: usize,
) -> (Sandbox, Arc<WorkerCtx>, Vec<Outcome>) {
    let sb = sandbox(cfg).await;
    let cx = ctx(&sb, rate, burst, retry).await;
    let outcomes = run(&cx, (1..=rows).map(job), workers).await;
    (sb, cx, outcomes)
}

fn count(outcomes: &[Outcome], status: Status) -> usize {
    outcomes.iter().filter(|o| o.status == status).count()
}

fn stored_ids(sb: &Sandbox) -> BTreeSet<String> {
    sb.users().into_iter().map(|u| u.user_id).collect()
}

fn succeeded_ids(outcomes: &[Outcome]) -> BTreeSet<String> {
    outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Created | Status::Exists))
        .map(|o| o.user_id.clone())
        .collect()
}

#[tokio::test]
async fn token_is_fetched_before_any_user_request() {
    let sb = sandbox(SandboxConfig::default()).await;
    let tokens = TokenManager::start(client(&sb)).await.expect("token");
    assert_eq!(tokens.current().generation, 1);
    assert!(!tokens.current().token.expose().is_empty());
    let stats = sb.stats();
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.users_requests, 0);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Token): refused credentials exit 3 before any
// user request.
#[tokio::test]
async fn refused_credentials_fail_before_any_user_request() {
    let sb = sandbox(SandboxConfig::default()).await;
    let err = TokenManager::start(client_for(&sb.url(), "wrong-secret"))
        .await
        .expect_err("refused");
    assert!(matches!(err, TokenError::Refused { .. }), "{err:?}");
    assert!(!err.is_transient());
    let stats = sb.stats();
    assert_eq!(stats.tokens_issued, 0);
    assert_eq!(
        stats.token_requests, 1,
        "refused credentials are not retried"
    );
    assert_eq!(stats.users_requests, 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn unreachable_target_is_a_transport_error() {
    // Bind then drop: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let opts = TokenOptions {
        retry: retry(3, 50, 200),
        ..TokenOptions::default()
    };
    let err = TokenManager::start_with(client_for(&format!("http://127.0.0.1:{port}"), "x"), opts)
        .await
        .expect_err("unreachable");
    assert!(
        matches!(
            err,
            TokenError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    // A guard against retrying past the budget, not a speed check: three
    // refused connections and two backoff sleeps of at most 200 ms.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
}

#[tokio::test]
async fn created_exists_and_rejected() {
    let sb = sandbox(SandboxConfig::default()).await;
    let cx = ctx(&sb, 100, 10, retry(3, 10, 100)).await;
    let first = provision(job(1), &cx).await.expect("ok");
    assert_eq!(first.status, Status::Created);
    assert_eq!((first.http_status, first.attempts), (Some(200), 1));
    let again = provision(job(1), &cx).await.expect("ok");
    assert_eq!(again.status, Status::Exists, "{again:?}");
    assert_eq!(again.http_status, Some(400));
    let bad = provision(job_with(2, "a:b"), &cx).await.expect("ok");
    assert_eq!(bad.status, Status::Rejected, "{bad:?}");
    assert_eq!((bad.http_status, bad.attempts), (Some(400), 1));
    assert!(
        bad.error.as_deref().unwrap_or("").contains("first_name"),
        "{bad:?}"
    );
    assert_eq!(cx.counters.snapshot(Some(&cx.tokens)).requests_sent, 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn cancelled_before_sending_is_failed_not_sent() {
    let sb = sandbox(SandboxConfig::default()).await;
    let cx = ctx(&sb, 100, 10, retry(3, 10, 100)).await;
    cx.stop.interrupt("interrupted by SIGINT");
    let o = provision(job(1), &cx).await.expect("ok");
    assert_eq!(o.status, Status::Failed);
    // The worker says why itself, as the feed does for the rows it never queued.
    assert_eq!(o.error.as_deref(), Some("not sent: interrupted by SIGINT"));
    assert_eq!(o.attempts, 0);
    assert_eq!(sb.stats().users_requests, 0);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Token): a job may outlive its token; it is
// refreshed ahead of expiry.
#[tokio::test]
async fn short_token_ttl_is_refreshed_ahead_of_expiry() {
    let cfg = SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..SandboxConfig::default()
    };
    // 300 rows at 100/s: about 3 s of work, i.e. about three token lifetimes.
    let (sb, cx, outcomes) = run_against(cfg, 100, 10, retry(4, 20, 200), 300, 50).await;
    assert_eq!(outcomes.len(), 300);
    assert_eq!(count(&outcomes, Status::Created), 300, "{outcomes:?}");
    assert_eq!(count(&outcomes, Status::Failed), 0);
    let stats = cx.counters.snapshot(Some(&cx.tokens));
    assert!(stats.token_refreshes >= 2, "{stats:?}");
    assert_eq!(sb.stats().tokens_issued, 1 + stats.token_refreshes);
    assert_eq!(sb.stats().created, 300);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Token): "On a 401, the token is refreshed
// once, however many workers saw the 401 at once".
#[tokio::test]
async fn revoked_token_is_refreshed_once_for_all_workers() {
    let sb = sandbox(SandboxConfig::default()).await;
    let cx = ctx(&sb, 100, 20, retry(4, 20, 200)).await;
    let runner = {
        let cx = cx.clone();
        tokio::spawn(async move { run(&cx, (1..=200).map(job), 20).await })
    };
    // Revoke once the run is under way: after its first user, which at
    // 100/s leaves most of the 200 to go whatever the machine's speed.
    while sb.stats().created == 0 && !runner.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = sb.stats();
    assert!(
        before.created > 0 && before.created < 200,
        "revoke mid-run: {before:?}"
    );
    sb.revoke_tokens();
    let outcomes = runner.await.expect("runner");
    assert_eq!(count(&outcomes, Status::Created), 200, "{outcomes:?}");
    let after = sb.stats();
    assert_eq!(after.tokens_issued, before.tokens_issued + 1, "{after:?}");
    assert_eq!(cx.tokens.refreshes(), 1);
    assert!(after.unauthorized >= 1, "{after:?}");
    let stats = cx.counters.snapshot(Some(&cx.tokens));
    assert_eq!(cx.counters.unauthorized.load(Relaxed), after.unauthorized);
    // 401s are retried without spending the retry budget.
    assert_eq!(stats.retries, 0, "{stats:?}");
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries: 429s in a cluster pause the whole
// pool); nothing is lost.
#[tokio::test]
async fn rate_limited_storm_creates_everything() {
    let cfg = SandboxConfig {
        rate_limit: Some(5),
        ..SandboxConfig::default()
    };
    // Our limiter is far above the partner's threshold, so 429s must happen.
    let (sb, cx, outcomes) = run_against(cfg, 1_000, 100, retry(30, 100, 2_000), 40, 40).await;
    assert_eq!(count(&outcomes, Status::Created), 40, "{outcomes:?}");
    let server = sb.stats();
    let stats = cx.counters.snapshot(Some(&cx.tokens));
    assert!(server.throttled > 0, "{server:?}");
    assert_eq!(stats.throttled_429, server.throttled);
    assert_eq!(stats.requests_sent, server.users_requests);
    assert_eq!(server.created, 40);
    assert_eq!(stored_ids(&sb), succeeded_ids(&outcomes));
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries): 500/503 are retried with backoff;
// the report matches the server.
#[tokio::test]
async fn random_server_errors_are_retried() {
    let cfg = SandboxConfig {
        fail_rate: 0.5,
        seed: Some(7),
        ..SandboxConfig::default()
    };
    let (sb, cx, outcomes) = run_against(cfg, 200, 20, retry(6, 5, 50), 80, 16).await;
    assert_eq!(outcomes.len(), 80);
    for o in &outcomes {
        match o.status {
            Status::Created => assert_eq!(o.http_status, Some(200)),
            Status::Failed => {
                assert_eq!(o.attempts, 6, "{o:?}");
                assert!(matches!(o.http_status, Some(500 | 503)), "{o:?}");
                assert!(
                    o.error.as_deref().unwrap_or("").starts_with("HTTP 50"),
                    "{o:?}"
                );
            }
            other => panic!("unexpected {other:?}: {o:?}"),
        }
    }
    assert!(count(&outcomes, Status::Created) >= 70, "{outcomes:?}");
    let server = sb.stats();
    assert_eq!(stored_ids(&sb), succeeded_ids(&outcomes));
    assert_eq!(server.duplicate_creations, 0);
    let stats = cx.counters.snapshot(Some(&cx.tokens));
    assert_eq!(stats.requests_sent, server.users_requests);
    assert_eq!(
        stats.retries,
        server.faults_500 + server.faults_503 - count(&outcomes, Status::Failed) as u64
    );
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries): a retry after an ambiguous failure
// that is told the user is taken ends `exists`, not an error.
#[tokio::test]
async fn lost_answers_end_as_created_or_exists() {
    let cfg = SandboxConfig {
        commit_drop_rate: 0.3,
        seed: Some(11),
        ..SandboxConfig::default()
    };
    let (sb, cx, outcomes) = run_against(cfg, 200, 20, retry(8, 5, 50), 60, 12).await;
    for o in &outcomes {
        assert!(
            matches!(o.status, Status::Created | Status::Exists),
            "{o:?}"
        );
    }
    let server = sb.stats();
    assert!(server.commit_drops > 0, "{server:?}");
    assert_eq!(server.duplicate_creations, 0);
    assert_eq!(server.created, 60);
    assert_eq!(stored_ids(&sb), succeeded_ids(&outcomes));
    // Every Exists row is one whose first answer was lost.
    assert!(count(&outcomes, Status::Exists) as u64 <= server.commit_drops);
    assert!(count(&outcomes, Status::Exists) > 0);
    assert_eq!(
        cx.counters.transport_errors.load(Relaxed),
        server.commit_drops
    );
    sb.shutdown().await;
}

// One request each, looking at the raw `Attempt` the client reports.
#[tokio::test]
async fn client_reports_resets_and_retry_after() {
    let sb = sandbox(SandboxConfig {
        commit_drop_rate: 1.0,
        ..SandboxConfig::default()
    })
    .await;
    let client = client(&sb);
    let token = client.fetch_token().await.expect("token");
    let token = secrecy::ExposeSecret::expose_secret(&token.access_token).to_owned();
    let lost = client.create_user(&token, job(1).body).await;
    assert!(
        matches!(
            lost,
            Attempt::Transport {
                kind: TransportKind::Reset,
                ..
            }
        ),
        "{lost:?}"
    );
    sb.configure(&ConfigPatch {
        commit_drop_rate: Some(0.0),
        rate_limit: Some(Some(1)),
        retry_after: Some(true),
        ..ConfigPatch::default()
    })
    .expect("configure");
    let _ = client.create_user(&token, job(2).body).await;
    let throttled = client.create_user(&token, job(3).body).await;
    match throttled {
        Attempt::Answered {
            status: 429,
            retry_after,
            ..
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let unauthorized = client.create_user("not-a-token", job(4).body).await;
    assert!(
        matches!(unauthorized, Attempt::Answered { status: 401, .. }),
        "{unauthorized:?}"
    );
    sb.shutdown().await;
}
