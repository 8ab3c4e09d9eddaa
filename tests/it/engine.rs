//! The live run through the real binary against a real sandbox on loopback
//! (issue #4). Every test checks the two invariants: each data row appears in
//! results.csv exactly once, and the sandbox's stored users are exactly the
//! rows reported `created` or `exists`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use connect_provision::sandbox::{Sandbox, SandboxConfig};

/// One results.csv row.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Row {
    pub row: u64,
    pub user_id: String,
    pub status: String,
    pub http_status: Option<u16>,
    pub attempts: u32,
    #[allow(dead_code, reason = "read by some tests only")]
    pub error: String,
}

/// A temporary directory with a generated input.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub input: PathBuf,
    pub rows: u64,
}

impl Fixture {
    /// `rows` valid, distinct users.
    pub(crate) fn users(rows: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let mut s = String::from("user_id,first_name,last_name,phone_number,locale\n");
        for i in 1..=rows {
            s.push_str(&format!(
                "u{i:06},ann,smith,(415) 555-{:04},en-US\n",
                i % 10_000
            ));
        }
        std::fs::write(&input, s).unwrap();
        Fixture { dir, input, rows }
    }

    pub(crate) fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

/// Run the binary against `base` with the sandbox's credentials.
pub(crate) fn run_against(base: &str, secret: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_connect-provision"));
    cmd.arg("run")
        .args(args)
        .args(["--base-url", base, "--no-progress"])
        .env("CONNECT_CLIENT_ID", "sandbox-client")
        .env("CONNECT_CLIENT_SECRET", secret)
        .env_remove("CONNECT_PROVISION_CONFIG")
        .env_remove("CONNECT_BASE_URL");
    let out = cmd.output().expect("binary runs");
    if std::env::var_os("SHOW_OUTPUT").is_some() {
        eprintln!(
            "--- {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub(crate) fn read_results(out: &Path) -> Vec<Row> {
    let mut rdr = csv::Reader::from_path(out.join("results.csv")).unwrap();
    rdr.deserialize().map(|r| r.unwrap()).collect()
}

pub(crate) fn read_summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Each row 1..=n exactly once.
pub(crate) fn assert_each_row_once(rows: &[Row], n: u64) {
    let mut seen = BTreeMap::new();
    for r in rows {
        *seen.entry(r.row).or_insert(0) += 1;
    }
    assert_eq!(seen.len() as u64, n, "distinct rows in results.csv");
    assert!(seen.values().all(|&c| c == 1), "a row appears twice");
    assert_eq!(seen.keys().next().copied(), Some(1));
    assert_eq!(seen.keys().last().copied(), Some(n));
}

/// The sandbox holds exactly the rows reported created/exists, and never
/// created a user twice.
pub(crate) fn assert_sandbox_matches(sb: &Sandbox, rows: &[Row]) {
    let reported: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.status == "created" || r.status == "exists")
        .map(|r| r.user_id.clone())
        .collect();
    let stored: BTreeSet<String> = sb.users().into_iter().map(|u| u.user_id).collect();
    assert_eq!(stored, reported, "sandbox users vs rows created/exists");
    assert_eq!(sb.stats().duplicate_creations, 0);
}

pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) async fn sandbox(cfg: SandboxConfig) -> Sandbox {
    Sandbox::start(cfg, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap()
}

pub(crate) async fn run_blocking(base: String, secret: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_against(&base, secret, &args)
    })
    .await
    .unwrap()
}

pub(crate) fn args(fx: &Fixture, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        fx.input.display().to_string(),
        "--out".into(),
        fx.out().display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

// SPEC "Execution": the token is refreshed ahead of expiry; a job may outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_several_times_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(300);
    let out = run_blocking(sb.url(), "sandbox-secret", args(&fx, &["--rate", "100"])).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(
        rows.iter().all(|r| r.status == "created"),
        "every row created"
    );
    let summary = read_summary(&fx.out());
    let refreshes = summary["token_refreshes"].as_u64().unwrap();
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
        "sandbox-secret",
        args(
            &fx,
            &["--rate", "500", "--burst", "50", "--max-attempts", "20"],
        ),
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "created"));
    let summary = read_summary(&fx.out());
    let throttled = summary["throttled_429"].as_u64().unwrap();
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
        "sandbox-secret",
        args(&fx, &["--rate", "400", "--max-attempts", "12"]),
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "created"));
    let st = sb.stats();
    assert!(st.faults_500 + st.faults_503 > 0 && st.resets > 0, "{st:?}");
    let summary = read_summary(&fx.out());
    assert_eq!(
        summary["retries"].as_u64().unwrap(),
        st.faults_500 + st.faults_503 + st.resets
    );
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
        "sandbox-secret",
        args(&fx, &["--rate", "400", "--max-attempts", "12"]),
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = read_results(&fx.out());
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
    let out = run_blocking(sb.url(), "wrong-secret", args(&fx, &[])).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("credentials refused"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.stats().users_requests, 0);
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "failed" && r.attempts == 0));
    assert_eq!(read_summary(&fx.out())["exit_code"], 3);
    // The secret itself appears nowhere in what the run printed.
    assert!(!stderr(&out).contains("wrong-secret"));
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
        "sandbox-secret",
        args(&fx, &["--timeout", "2s"]),
    )
    .await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    assert!(rows.iter().all(|r| r.status == "failed"));
    let failures = std::fs::read_to_string(fx.out().join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count() as u64, fx.rows + 1);
    let summary = read_summary(&fx.out());
    assert!(summary["fatal_error"].as_str().unwrap().contains("reach"));
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
        "sandbox-secret",
        vec![
            fx.input.display().to_string(),
            "--limit".into(),
            "2".into(),
            "--out".into(),
            first_out.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code(&pre), 0, "{}", stderr(&pre));
    let out = run_blocking(sb.url(), "sandbox-secret", args(&fx, &[])).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = read_results(&fx.out());
    assert_each_row_once(&rows, fx.rows);
    let by_id: BTreeMap<_, _> = rows.iter().map(|r| (r.user_id.as_str(), r)).collect();
    assert_eq!(by_id["u000001"].status, "exists");
    assert_eq!(by_id["u000001"].http_status, Some(400));
    assert_eq!(by_id["u000003"].status, "created");
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}
