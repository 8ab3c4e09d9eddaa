//! The live run through the real binary against a real sandbox on loopback
//! (issue #4). Every test ends on the shared checks of
//! [`Reports::assert_live`]: each data row in results.csv exactly once, the
//! reports agreeing with each other, and the sandbox's stored users exactly
//! the rows reported `created` or `exists`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use connect_provision::sandbox::SandboxConfig;

use crate::util::{Fixture, Run, sandbox};

// docs/rate-limiting.md: How a run executes ("The token is refreshed ahead of expiry"); a
// job may outlive its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_several_times_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(300);
    let done = fx.provision(&sb, &["--rate", "100"]).await;
    assert!(
        done.rows.iter().all(|r| r.status == "created"),
        "every row created"
    );
    let refreshes = done.summary.token_refreshes;
    assert!(refreshes >= 2, "refreshes = {refreshes}");
    assert!(sb.stats().tokens_issued > 2);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries: 429s in a cluster pause the whole
// pool); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(25),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(150);
    let args = ["--rate", "500", "--burst", "50", "--max-attempts", "20"];
    let done = fx.provision(&sb, &args).await;
    assert!(done.rows.iter().all(|r| r.status == "created"));
    let throttled = done.summary.throttled_429;
    assert!(throttled > 0, "the storm happened");
    assert_eq!(throttled, sb.stats().throttled);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries): 500/503 and dropped connections are
// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_resets_are_retried() {
    let sb = sandbox(SandboxConfig {
        fail_rate: 0.2,
        reset_rate: 0.1,
        seed: Some(42),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(200);
    let done = fx
        .provision(&sb, &["--rate", "400", "--max-attempts", "12"])
        .await;
    assert!(done.rows.iter().all(|r| r.status == "created"));
    let st = sb.stats();
    assert!(st.faults_500 + st.faults_503 > 0 && st.resets > 0, "{st:?}");
    assert_eq!(
        done.summary.retries,
        st.faults_500 + st.faults_503 + st.resets
    );
    assert!(done.rows.iter().any(|r| r.attempts > 1));
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Retries: "when a request was sent but its
// answer lost, and the retry is told the user is taken, the row ends
// `exists`").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ambiguous_case_ends_exists_never_twice() {
    let sb = sandbox(SandboxConfig {
        commit_drop_rate: 0.3,
        seed: Some(7),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(150);
    let done = fx
        .provision(&sb, &["--rate", "400", "--max-attempts", "12"])
        .await;
    let exists = done.rows.iter().filter(|r| r.status == "exists").count() as u64;
    assert!(exists > 0);
    assert!(
        done.rows
            .iter()
            .all(|r| r.status == "created" || r.status == "exists")
    );
    // Only rows whose request was dropped after the commit can end `exists`.
    assert!(exists <= sb.stats().commit_drops);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Token: refused credentials exit 3 before any
// user request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_3_and_send_nothing() {
    let sb = sandbox(SandboxConfig::default()).await;
    let fx = Fixture::users(20);
    let out = fx.live(&sb).secret("wrong-secret").output_async().await;
    out.expect_code(3).expect_stderr("credentials refused");
    assert_eq!(sb.stats().users_requests, 0);
    let done = fx.reports().assert_consistent(fx.rows);
    assert!(
        done.rows
            .iter()
            .all(|r| r.status == "failed" && r.attempts == 0)
    );
    assert_eq!(done.summary.exit_code, 3);
    // The secret itself appears nowhere in what the run printed.
    assert!(!out.stderr().contains("wrong-secret"), "{out}");
    sb.shutdown().await;
}

// README: The nightly recipe (exit 3: the target unreachable past the retry
// budget); the reports are flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_exits_3_with_reports() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fx = Fixture::users(10);
    let started = Instant::now();
    let out = Run::live_at(format!("http://127.0.0.1:{port}"))
        .input(&fx.input)
        .out(fx.out())
        .args(["--timeout", "2s"])
        .output_async()
        .await;
    out.expect_code(3);
    // A guard against retrying forever, not a speed check: the token fetch
    // gives up after a fixed schedule of backoff sleeps (about 8 s at worst)
    // that a slower machine does not lengthen.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "gave up after {took:?}");
    let done = fx.reports().assert_consistent(fx.rows);
    assert!(done.rows.iter().all(|r| r.status == "failed"));
    let failures = std::fs::read_to_string(fx.out().join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count() as u64, fx.rows + 1);
    assert!(
        done.summary
            .fatal_error
            .as_deref()
            .unwrap_or("")
            .contains("reach"),
        "{:?}",
        done.summary
    );
}

// docs/reports.md: Reports (`exists`: the `user_id` is already taken, 400 with
// `meta.key = user_id`), a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_created_earlier_come_back_exists() {
    let sb = sandbox(SandboxConfig::default()).await;
    let fx = Fixture::users(5);
    // A first run creates the first two users; the second meets them taken.
    let first_out = fx.dir.join("first");
    let pre = Run::live(&sb)
        .input(&fx.input)
        .args(["--limit", "2"])
        .out(&first_out)
        .output_async()
        .await;
    pre.expect_code(0);
    let done = fx.provision(&sb, &[]).await;
    let by_id: BTreeMap<_, _> = done.rows.iter().map(|r| (r.user_id.as_str(), r)).collect();
    assert_eq!(by_id["u000001"].status, "exists");
    assert_eq!(by_id["u000001"].http_status, Some(400));
    assert_eq!(by_id["u000003"].status, "created");
    sb.shutdown().await;
}
