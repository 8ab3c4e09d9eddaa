//! The live run through the real binary against a real sandbox on loopback
//! (issue #4). Every test checks the two invariants: each data row appears in
//! results.csv exactly once, and the sandbox's stored users are exactly the
//! rows reported `created` or `exists`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use connect_provision::sandbox::SandboxConfig;

use crate::util::{
    Fixture, SANDBOX_SECRET, assert_each_row_once, assert_sandbox_matches, read_results,
    read_summary, run_blocking, sandbox,
};

// SPEC "Execution": the token is refreshed ahead of expiry; a job may outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_several_times_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(300);
    let out = run_blocking(sb.url(), SANDBOX_SECRET, fx.args(&["--rate", "100"])).await;
    out.expect_code(0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(
        rows.iter().all(|r| r.status == "created"),
        "every row created"
    );
    let summary = read_summary(fx.out());
    let refreshes = summary.token_refreshes;
    assert!(refreshes >= 2, "refreshes = {refreshes}");
    assert!(sb.stats().tokens_issued > 2);
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}

// SPEC: a 429 slows the whole pool; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(25),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(150);
    let out = run_blocking(
        sb.url(),
        SANDBOX_SECRET,
        fx.args(&["--rate", "500", "--burst", "50", "--max-attempts", "20"]),
    )
    .await;
    out.expect_code(0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "created"));
    let summary = read_summary(fx.out());
    let throttled = summary.throttled_429;
    assert!(throttled > 0, "the storm happened");
    assert_eq!(throttled, sb.stats().throttled);
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}

// SPEC: 500/503 and dropped connections are retried.
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
    let out = run_blocking(
        sb.url(),
        SANDBOX_SECRET,
        fx.args(&["--rate", "400", "--max-attempts", "12"]),
    )
    .await;
    out.expect_code(0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "created"));
    let st = sb.stats();
    assert!(st.faults_500 + st.faults_503 > 0 && st.resets > 0, "{st:?}");
    let summary = read_summary(fx.out());
    assert_eq!(summary.retries, st.faults_500 + st.faults_503 + st.resets);
    assert!(rows.iter().any(|r| r.attempts > 1));
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}

// SPEC: a retry after an ambiguous failure that answers "already exists" is `exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ambiguous_case_ends_exists_never_twice() {
    let sb = sandbox(SandboxConfig {
        commit_drop_rate: 0.3,
        seed: Some(7),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(150);
    let out = run_blocking(
        sb.url(),
        SANDBOX_SECRET,
        fx.args(&["--rate", "400", "--max-attempts", "12"]),
    )
    .await;
    out.expect_code(0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    let exists = rows.iter().filter(|r| r.status == "exists").count() as u64;
    assert!(exists > 0);
    assert!(
        rows.iter()
            .all(|r| r.status == "created" || r.status == "exists")
    );
    // Only rows whose request was dropped after the commit can end `exists`.
    assert!(exists <= sb.stats().commit_drops);
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}

// SPEC: bad credentials: exit 3 before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_3_and_send_nothing() {
    let sb = sandbox(SandboxConfig::default()).await;
    let fx = Fixture::users(20);
    let out = run_blocking(sb.url(), "wrong-secret", fx.args(&[])).await;
    out.expect_code(3);
    out.expect_stderr("credentials refused");
    assert_eq!(sb.stats().users_requests, 0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "failed" && r.attempts == 0));
    assert_eq!(read_summary(fx.out()).exit_code, 3);
    // The secret itself appears nowhere in what the run printed.
    assert!(!out.stderr().contains("wrong-secret"), "{out}");
    sb.shutdown().await;
}

// SPEC: target unreachable past the retry budget: exit 3, reports flushed.
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
    let out = run_blocking(
        format!("http://127.0.0.1:{port}"),
        SANDBOX_SECRET,
        fx.args(&["--timeout", "2s"]),
    )
    .await;
    out.expect_code(3);
    // A guard against retrying forever, not a speed check: the token fetch
    // gives up after a fixed schedule of backoff sleeps (about 8 s at worst)
    // that a slower machine does not lengthen.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "gave up after {took:?}");
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "failed"));
    let failures = std::fs::read_to_string(fx.out().join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count() as u64, fx.rows + 1);
    let summary = read_summary(fx.out());
    assert!(
        summary
            .fatal_error
            .as_deref()
            .unwrap_or("")
            .contains("reach"),
        "{summary:?}"
    );
}

// SPEC assumption: a taken user_id (400, meta.key user_id) is `exists`, a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_created_earlier_come_back_exists() {
    let sb = sandbox(SandboxConfig::default()).await;
    let fx = Fixture::users(5);
    // A first run creates the first two users; the second meets them taken.
    let first_out = fx.dir.path().join("first");
    let pre = run_blocking(
        sb.url(),
        SANDBOX_SECRET,
        vec![
            fx.input.display().to_string(),
            "--limit".into(),
            "2".into(),
            "--out".into(),
            first_out.display().to_string(),
        ],
    )
    .await;
    pre.expect_code(0);
    let out = run_blocking(sb.url(), SANDBOX_SECRET, fx.args(&[])).await;
    out.expect_code(0);
    let rows = read_results(fx.out());
    assert_each_row_once(&rows, fx.rows);
    let by_id: BTreeMap<_, _> = rows.iter().map(|r| (r.user_id.as_str(), r)).collect();
    assert_eq!(by_id["u000001"].status, "exists");
    assert_eq!(by_id["u000001"].http_status, Some(400));
    assert_eq!(by_id["u000003"].status, "created");
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}
