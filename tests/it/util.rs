//! Shared helpers of the integration tests: a scratch directory to build
//! inputs in, a black-box driver of the real binary that shows the command,
//! stdout and stderr when an assertion fails, readers that turn the reports
//! back into data, and the sandbox on loopback with the raw HTTP calls the
//! protocol tests make against it.

#![allow(
    dead_code,
    reason = "each test module uses its own subset of the helpers"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use connect_provision::api::model::{ApiError, ErrorBody, TOKEN_PATH, TokenResponse, USERS_PATH};
use connect_provision::report::Summary;
use connect_provision::sandbox::{Sandbox, SandboxConfig};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// Environment variables the binary reads; removed from every child so the
/// developer's shell cannot change a test's outcome.
pub const TOOL_ENV: [&str; 5] = [
    "CONNECT_BASE_URL",
    "CONNECT_CLIENT_ID",
    "CONNECT_CLIENT_SECRET",
    "CONNECT_PROVISION_CONFIG",
    "RUST_LOG",
];

/// The crate's root (samples/, bench/ live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under samples/.
pub fn sample(name: &str) -> PathBuf {
    repo_root().join("samples").join(name)
}

/// A scratch directory, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl TestDir {
    /// A fresh empty directory.
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("connect-provision-it.")
                .tempdir()
                .expect("create a temporary directory"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the directory (not created).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` inside the directory as a `String`, for argument lists.
    pub fn arg(&self, name: impl AsRef<Path>) -> String {
        self.join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }

    /// Write `bytes` to `name` (parents created); returns the path.
    pub fn write(&self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Write a comma-separated CSV of `rows` (the first is the header),
    /// quoting as needed; returns the path.
    pub fn write_csv(&self, name: impl AsRef<Path>, rows: &[&[&str]]) -> PathBuf {
        self.write(name, csv_bytes(b',', rows))
    }

    /// Read `name` as bytes.
    pub fn read(&self, name: impl AsRef<Path>) -> Vec<u8> {
        let path = self.join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

/// CSV text of `rows` with `delimiter`, `\n` line ends, quoting as needed.
pub fn csv_bytes(delimiter: u8, rows: &[&[&str]]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_writer(vec![]);
    for row in rows {
        w.write_record(*row).expect("write csv row");
    }
    w.into_inner().expect("flush csv")
}

/// The path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_connect-provision"))
}

/// A command line for the binary under test, with a clean tool environment.
pub struct Cli {
    cmd: Command,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

impl Cli {
    /// `connect-provision ARGS...`.
    pub fn new<I, S>(args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Command::new(bin());
        for k in TOOL_ENV {
            cmd.env_remove(k);
        }
        cmd.args(&args);
        Cli {
            cmd,
            args,
            env: vec![],
            stdin: None,
        }
    }

    /// Set an environment variable for the child.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Cli {
        self.cmd.env(key, value.as_ref());
        self.env.push((key.to_string(), value.as_ref().to_string()));
        self
    }

    /// Run in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// Feed `bytes` on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cli {
        self.stdin = Some(bytes.into());
        self
    }

    /// Start in the background, its output discarded (for tests that look
    /// at files while it runs).
    pub fn spawn(mut self) -> std::process::Child {
        let shown = self.describe();
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"))
    }

    /// Run to completion.
    pub fn run(mut self) -> CliOutput {
        let shown = self.describe();
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let input = self.stdin.take().unwrap_or_default();
        let mut pipe = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            // The child may exit without reading all of it; that is its business.
            let _ = pipe.write_all(&input);
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {shown}: {e}"));
        let _ = writer.join();
        CliOutput {
            command: shown,
            output,
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={v:?} "));
        }
        s.push_str("connect-provision");
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '\'', '"', '\\', '$']) {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(&a);
            }
        }
        s
    }
}

/// Run `connect-provision ARGS...` with a clean tool environment.
pub fn run_cli<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Cli::new(args).run()
}

/// Run `cli` to completion on a blocking thread, so that an async test's
/// servers keep answering meanwhile.
pub async fn run_async(cli: Cli) -> CliOutput {
    tokio::task::spawn_blocking(move || cli.run())
        .await
        .expect("the command's thread")
}

/// A finished command: the process output plus the command line, all three
/// shown by `Display` (and by the assertion helpers when they fail).
pub struct CliOutput {
    pub command: String,
    pub output: Output,
}

impl std::ops::Deref for CliOutput {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status: {}", self.output.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout())?;
        write!(f, "--- stderr ---\n{}", self.stderr())
    }
}

impl CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// stdout, lossily decoded.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// stderr, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panic, showing the command and its output, unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &CliOutput {
        assert_eq!(self.code(), code, "unexpected exit code\n{self}");
        self
    }

    /// Panic, showing the command and its output, unless stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &CliOutput {
        assert!(
            self.stderr().contains(needle),
            "stderr does not contain {needle:?}\n{self}"
        );
        self
    }

    /// Panic, showing the command and its output, unless stdout contains `needle`.
    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &CliOutput {
        assert!(
            self.stdout().contains(needle),
            "stdout does not contain {needle:?}\n{self}"
        );
        self
    }

    /// The lines of stderr that start with `error:`.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .map(str::to_string)
            .collect()
    }
}

/// One row of results.csv (SPEC "Reports").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResultRow {
    pub row: u64,
    pub user_id: String,
    pub status: String,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub error: String,
    pub duration_ms: u64,
}

/// The header results.csv must have.
pub use connect_provision::report::RESULTS_HEADER;

/// Parse `dir/results.csv`, checking its header.
#[track_caller]
pub fn read_results(dir: impl AsRef<Path>) -> Vec<ResultRow> {
    let path = dir.as_ref().join("results.csv");
    let mut rdr =
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let header = rdr.headers().expect("results.csv header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        RESULTS_HEADER,
        "{}",
        path.display()
    );
    rdr.deserialize()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Parse `dir/summary.json` into the library's own [`Summary`].
#[track_caller]
pub fn read_summary(dir: impl AsRef<Path>) -> Summary {
    let path = dir.as_ref().join("summary.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// `dir/summary.json` as untyped JSON, for the tests of its shape (field
/// names, fields present or absent) rather than its values.
#[track_caller]
pub fn read_summary_json(dir: impl AsRef<Path>) -> Value {
    let path = dir.as_ref().join("summary.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// failures.csv, read as raw records (UTF-8 BOM stripped; `delimiter` as
/// the run used it). The first record is the header.
#[track_caller]
pub fn read_failures(dir: impl AsRef<Path>, delimiter: u8) -> Vec<csv::ByteRecord> {
    let path = dir.as_ref().join("failures.csv");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(body);
    rdr.byte_records()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Rows per status in `results`.
pub fn status_counts(results: &[ResultRow]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.status.clone()).or_insert(0) += 1;
    }
    m
}

/// The row with number `row`.
#[track_caller]
pub fn result_row(results: &[ResultRow], row: u64) -> &ResultRow {
    results
        .iter()
        .find(|r| r.row == row)
        .unwrap_or_else(|| panic!("no row {row} in results: {results:#?}"))
}

/// SPEC "Reports": every data row 1..=n appears exactly once.
#[track_caller]
pub fn assert_each_row_once(results: &[ResultRow], n_rows: u64) {
    let mut seen = vec![0u32; n_rows as usize + 1];
    for r in results {
        assert!(
            (1..=n_rows).contains(&r.row),
            "row {} outside 1..={n_rows}: {r:?}",
            r.row
        );
        seen[r.row as usize] += 1;
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, n)| **n != 1)
        .map(|(i, n)| (i, *n))
        .collect();
    assert!(
        wrong.is_empty(),
        "rows not present exactly once (row, times): {wrong:?}"
    );
    assert_eq!(results.len() as u64, n_rows);
}

/// The sandbox holds exactly the users of the rows reported created/exists,
/// and never created a user twice.
#[track_caller]
pub fn assert_sandbox_matches(sb: &Sandbox, results: &[ResultRow]) {
    let reported: BTreeSet<String> = results
        .iter()
        .filter(|r| r.status == "created" || r.status == "exists")
        .map(|r| r.user_id.clone())
        .collect();
    let stored: BTreeSet<String> = sb.users().into_iter().map(|u| u.user_id).collect();
    assert_eq!(stored, reported, "sandbox users vs rows created/exists");
    assert_eq!(sb.stats().duplicate_creations, 0);
}

/// File mode bits (unix).
#[cfg(unix)]
pub fn mode(path: impl AsRef<Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.as_ref().display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------
// Live runs against the sandbox.

/// The client secret the sandbox accepts by default.
pub const SANDBOX_SECRET: &str = "sandbox-secret";

/// A sandbox on `127.0.0.1:0`.
pub async fn sandbox(cfg: SandboxConfig) -> Sandbox {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    Sandbox::start(cfg, listen).await.expect("sandbox starts")
}

/// A scratch directory with a generated input of valid, distinct users.
pub struct Fixture {
    pub dir: TestDir,
    pub input: PathBuf,
    pub rows: u64,
}

impl Fixture {
    /// `rows` valid, distinct users in `in.csv`.
    pub fn users(rows: u64) -> Fixture {
        let dir = TestDir::new();
        let mut s = String::from("user_id,first_name,last_name,phone_number,locale\n");
        for i in 1..=rows {
            s.push_str(&format!(
                "u{i:06},ann,smith,(415) 555-{:04},en-US\n",
                i % 10_000
            ));
        }
        let input = dir.write("in.csv", s);
        Fixture { dir, input, rows }
    }

    /// The run's `--out` directory.
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// `INPUT --out OUT EXTRA...`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.input.display().to_string(),
            "--out".into(),
            self.out().display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

/// `connect-provision run ARGS... --base-url BASE --no-progress` with the
/// sandbox's client id and `secret`.
pub fn live_run<I, S>(base: &str, secret: &str, args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut argv: Vec<OsString> = vec!["run".into()];
    argv.extend(args.into_iter().map(Into::into));
    argv.extend(["--base-url".into(), base.into(), "--no-progress".into()]);
    Cli::new(argv)
        .env("CONNECT_CLIENT_ID", "sandbox-client")
        .env("CONNECT_CLIENT_SECRET", secret)
}

/// Run the binary against `base` (see [`live_run`]). With `SHOW_OUTPUT` set
/// in the environment, print what it printed.
pub fn run_against<I, S>(base: &str, secret: &str, args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let out = live_run(base, secret, args).run();
    if std::env::var_os("SHOW_OUTPUT").is_some() {
        eprintln!("{out}");
    }
    out
}

/// [`run_against`] on a blocking thread, so the sandbox keeps answering.
pub async fn run_blocking(base: String, secret: &str, args: Vec<String>) -> CliOutput {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || run_against(&base, &secret, args))
        .await
        .expect("the run's thread")
}

// ---------------------------------------------------------------------------
// Raw HTTP against the sandbox (the protocol tests).

/// An HTTP client for loopback: no proxy, a 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// POST `body` to the sandbox's token endpoint.
pub async fn post_token(c: &reqwest::Client, sb: &Sandbox, body: Value) -> reqwest::Response {
    c.post(format!("{}{TOKEN_PATH}", sb.url()))
        .json(&body)
        .send()
        .await
        .expect("token request")
}

/// The token request body with the sandbox's default credentials.
pub fn good_creds() -> Value {
    json!({"client_id": "sandbox-client", "client_secret": SANDBOX_SECRET, "grant_type": "client_credentials"})
}

/// A token for the sandbox's default credentials.
pub async fn token(c: &reqwest::Client, sb: &Sandbox) -> String {
    let resp = post_token(c, sb, good_creds()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json::<TokenResponse>()
        .await
        .expect("token response")
        .access_token
}

/// POST `body` to the create-user endpoint with `token`.
pub async fn create(
    c: &reqwest::Client,
    sb: &Sandbox,
    token: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{}{USERS_PATH}", sb.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
}

/// The smallest valid create-user body.
pub fn user(id: &str) -> Value {
    json!({"user_id": id, "first_name": "ann"})
}

/// The single-error shape, asserting it is not the multiple one.
pub async fn single_error(resp: reqwest::Response) -> ApiError {
    match resp.json::<ErrorBody>().await.expect("error body") {
        ErrorBody::Single(e) => e,
        ErrorBody::Multiple(m) => panic!("expected the single-error shape, got {m:?}"),
    }
}

/// GET `path` from the sandbox, expecting 200 and a JSON `T`.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    c: &reqwest::Client,
    sb: &Sandbox,
    path: &str,
) -> T {
    let resp = c
        .get(format!("{}{path}", sb.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.expect("JSON body")
}

/// POST to one of the sandbox's control endpoints, with an optional JSON body.
pub async fn post_control(
    c: &reqwest::Client,
    sb: &Sandbox,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = c.post(format!("{}{path}", sb.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("control request")
}

/// The outcome of one create request, for comparing fault sequences.
pub async fn outcome(c: &reqwest::Client, sb: &Sandbox, t: &str, id: &str) -> String {
    match create(c, sb, t, &user(id)).await {
        Ok(resp) => resp.status().as_u16().to_string(),
        Err(_) => "dropped".to_owned(),
    }
}

/// The outcomes of 40 creates in a row: the sandbox's fault dice, as seen.
pub async fn fault_sequence(sb: &Sandbox) -> Vec<String> {
    let c = client();
    let t = token(&c, sb).await;
    let mut seq = Vec::new();
    for i in 0..40 {
        seq.push(outcome(&c, sb, &t, &format!("s{i}")).await);
    }
    seq
}

/// timeline.csv of `dir` parsed back: its per-second columns must sum to
/// summary.json's counts and request figures exactly, its seconds must
/// increase, and its parts must count up from 1 without a gap.
#[track_caller]
pub fn assert_timeline_sums(dir: impl AsRef<Path>) -> Vec<BTreeMap<String, String>> {
    let dir = dir.as_ref();
    let summary = read_summary(dir);
    let path = dir.join("timeline.csv");
    let mut rdr =
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let lines: Vec<BTreeMap<String, String>> = rdr
        .deserialize()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect();
    let sum = |col: &str| -> u64 {
        lines
            .iter()
            .map(|l| {
                l[col]
                    .parse::<u64>()
                    .unwrap_or_else(|e| panic!("{col}: {e}"))
            })
            .sum()
    };
    for (status, n) in &summary.counts {
        assert_eq!(sum(status), *n, "timeline sum of {status}");
    }
    assert_eq!(sum("sent"), summary.requests_sent, "timeline sum of sent");
    assert_eq!(sum("throttled_429"), summary.throttled_429, "429s");
    assert_eq!(sum("retries"), summary.retries, "retries");
    assert_eq!(sum("token_refreshes"), summary.token_refreshes, "refreshes");
    let seconds: Vec<u64> = lines.iter().map(|l| l["second"].parse().unwrap()).collect();
    assert!(
        seconds.windows(2).all(|w| w[0] < w[1]),
        "seconds must increase: {seconds:?}"
    );
    // 429s taken for noise are some of the 429s (counted when the window
    // they fell in was judged, so not always in the same second).
    assert!(sum("noise_429") <= summary.throttled_429, "noise_429");
    let mut parts: Vec<u32> = lines.iter().map(|l| l["part"].parse().unwrap()).collect();
    parts.dedup();
    assert_eq!(parts, (1..=parts.len() as u32).collect::<Vec<_>>(), "parts");
    lines
}
