//! Secrets and personal data stay out of logs and reports (docs/security.md: Hostile
//! input, secrets and transport, "Secrets"; ARCHITECTURE: Invariants, "No
//! secret in argv, logs, reports or `Debug`"; docs/rate-limiting.md: How a run executes,
//! "Logs": names and phone numbers are not logged above debug level).
//!
//! Each run goes through the real binary against an in-process sandbox that
//! accepts a distinctive secret, and then every byte the run produced
//! (stdout, stderr, every file under `--out`) is searched for it.

use std::path::Path;
use std::time::Duration;

use connect_provision::sandbox::{Sandbox, SandboxConfig};

use crate::util::{CliOutput, Run, SANDBOX_CLIENT, TestDir, sandbox};

/// Distinctive secrets: long enough that an accidental match is impossible.
const ENV_SECRET: &str = "envSecret-7f3a9c1e-QUUX-never-log-me";
const FILE_SECRET: &str = "fileSecret-b41d22e0-ZORP-never-log-me";
const WRONG_SECRET: &str = "wrongSecret-0c9e8d7f-FROB-never-log-me";

async fn sandbox_with_secret(secret: &str, token_ttl: Duration) -> Sandbox {
    sandbox(SandboxConfig {
        client_secret: secret.to_string(),
        token_ttl,
        ..Default::default()
    })
    .await
}

/// Distinctive personal data: names no log line could contain by chance,
/// phones in written forms whose digits are searched too.
const NAMES: [&str; 4] = [
    "Quillonzabeth",
    "Vorpaldinkle",
    "Xanthippowicz",
    "Brumbleforth",
];
const PHONES: [(&str, &str); 3] = [
    ("(415) 555-0142", "4155550142"),
    ("+1 415 555 0177", "4155550177"),
    ("415.555.0163", "4155550163"),
];

fn personal_input(t: &TestDir) -> std::path::PathBuf {
    let rows: Vec<Vec<String>> = vec![
        vec!["user_id", "first_name", "last_name", "phone_number"]
            .into_iter()
            .map(String::from)
            .collect(),
        vec!["p1", NAMES[0], NAMES[1], PHONES[0].0]
            .into_iter()
            .map(String::from)
            .collect(),
        vec!["p2", NAMES[2], "", PHONES[1].0]
            .into_iter()
            .map(String::from)
            .collect(),
        // Invalid (forbidden character): its error must not echo the name.
        vec!["p3", &format!("{}/x", NAMES[3]), "", PHONES[2].0]
            .into_iter()
            .map(String::from)
            .collect(),
        // Invalid phone: its error must not echo the number.
        vec!["p4", "Ann", "", "555-0199-0000-1"]
            .into_iter()
            .map(String::from)
            .collect(),
    ];
    let refs: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    t.write_csv("people.csv", &slices)
}

/// Every file under `dir` (recursively) with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Panic if `needle` appears in the run's stdout, stderr or any file under `out`.
#[track_caller]
fn assert_absent(needle: &str, run: &CliOutput, out: Option<&Path>) {
    assert!(
        !contains(&run.output.stdout, needle),
        "{needle:?} on stdout\n{run}"
    );
    assert!(
        !contains(&run.output.stderr, needle),
        "{needle:?} on stderr\n{run}"
    );
    if let Some(out) = out {
        for (path, bytes) in files_under(out) {
            assert!(!contains(&bytes, needle), "{needle:?} in {path}");
        }
    }
}

/// Maximal runs of lowercase hex digits of exactly `len` characters. The
/// sandbox issues 48-hex-digit tokens; the input's SHA-256 (64) is longer
/// and so is not mistaken for one.
fn hex_runs_of_len(bytes: &[u8], len: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut found = vec![];
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            if run.len() == len {
                found.push(run.clone());
            }
            run.clear();
        }
    }
    found
}

/// `run` of the personal input against `sb` into `t/out`, logging as `fmt`
/// (the secret given by the caller).
fn live(sb: &Sandbox, t: &TestDir, out: &str, fmt: &str) -> Run {
    Run::live(sb)
        .input(personal_input(t))
        .out(t.join(out))
        .args(["--log-format", fmt])
        .env_remove("CONNECT_CLIENT_SECRET")
}

/// `-vvv [--log-format FMT] check` against `sb` (credentials given by the caller).
fn check(sb: &Sandbox, fmt: Option<&str>) -> Run {
    let global = fmt.map(|f| ["--log-format", f]).into_iter().flatten();
    Run::cli(["-vvv"])
        .args(global)
        .args(["check", "--base-url", &sb.url()])
        .env("CONNECT_CLIENT_ID", SANDBOX_CLIENT)
}

// docs/security.md: Hostile input, secrets and transport (Secrets): the secret from
// CONNECT_CLIENT_SECRET appears in no
// output and no report, even at trace level (-vvv), in text and JSON logs;
// nor does the access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_secret_and_token_are_absent_at_trace_level() {
    // A short TTL so the run refreshes (and logs refreshes) too.
    let sb = sandbox_with_secret(ENV_SECRET, Duration::from_secs(1)).await;
    let t = TestDir::new();
    for fmt in ["text", "json"] {
        let out_name = format!("out-{fmt}");
        let run = live(&sb, &t, &out_name, fmt).arg("-vvv").secret(ENV_SECRET);
        let out = run.output_async().await;
        out.expect_code(1); // p3 and p4 are invalid
        // The logs are really verbose (the test is not vacuous): -vvv turns
        // on debug for the HTTP stack too.
        assert!(
            out.stderr().contains("DEBUG") && out.stderr().contains("connection"),
            "{fmt}: verbose logs\n{out}"
        );
        assert_absent(ENV_SECRET, &out, Some(&t.join(&out_name)));
        let tokens = hex_runs_of_len(&out.output.stderr, 48);
        assert!(
            tokens.is_empty(),
            "{fmt}: token-like strings in the log: {tokens:?}"
        );
        for (path, bytes) in files_under(&t.join(&out_name)) {
            let tokens = hex_runs_of_len(&bytes, 48);
            assert!(tokens.is_empty(), "{path}: token-like strings {tokens:?}");
        }
    }
    assert!(sb.stats().tokens_issued >= 2);
    sb.shutdown().await;
}

// docs/security.md: Hostile input, secrets and transport (Secrets): the secret read
// from --client-secret-file likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_file_value_is_absent_at_trace_level() {
    let sb = sandbox_with_secret(FILE_SECRET, Duration::from_secs(3600)).await;
    let t = TestDir::new();
    let secret_file = t.write("secret", format!("{FILE_SECRET}\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for fmt in ["text", "json"] {
        let out_name = format!("out-{fmt}");
        let run = live(&sb, &t, &out_name, fmt)
            .arg("-vvv")
            .arg("--client-secret-file")
            .arg(&secret_file);
        let out = run.output_async().await;
        out.expect_code(1);
        assert_absent(FILE_SECRET, &out, Some(&t.join(&out_name)));
        assert!(hex_runs_of_len(&out.output.stderr, 48).is_empty(), "{out}");
    }
    sb.shutdown().await;
}

// README: Command line, `check` (exits 3 when the credentials are refused),
// and Secrets: `check` with refused credentials exits 3 and prints
// nothing of the secret; `check` with good ones prints no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_never_prints_the_secret_or_the_token() {
    let sb = sandbox_with_secret(ENV_SECRET, Duration::from_secs(3600)).await;
    for fmt in ["text", "json"] {
        let refused = check(&sb, Some(fmt))
            .secret(WRONG_SECRET)
            .output_async()
            .await;
        refused.expect_code(3);
        assert_absent(WRONG_SECRET, &refused, None);
        assert_absent(ENV_SECRET, &refused, None);

        let ok = check(&sb, Some(fmt))
            .secret(ENV_SECRET)
            .output_async()
            .await;
        ok.expect_code(0);
        assert_absent(ENV_SECRET, &ok, None);
        let mut all = ok.output.stdout.clone();
        all.extend_from_slice(&ok.output.stderr);
        assert!(hex_runs_of_len(&all, 48).is_empty(), "{ok}");
    }
    // A secret file that is refused: the same.
    let t = TestDir::new();
    let secret_file = t.write("wrong", WRONG_SECRET);
    let refused = check(&sb, None)
        .arg("--client-secret-file")
        .arg(&secret_file)
        .output_async()
        .await;
    refused.expect_code(3);
    assert_absent(WRONG_SECRET, &refused, None);
    sb.shutdown().await;
}

// docs/rate-limiting.md: How a run executes (Logs): names and phone numbers are not logged at the
// default level, in a live run with valid and invalid rows, text and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_phones_are_not_logged_at_info_level() {
    let sb = sandbox_with_secret(ENV_SECRET, Duration::from_secs(3600)).await;
    let t = TestDir::new();
    for fmt in ["text", "json"] {
        let out_name = format!("out-{fmt}");
        let run = live(&sb, &t, &out_name, fmt).secret(ENV_SECRET);
        let out = run.output_async().await;
        out.expect_code(1);
        // The run did log something, so the check is not vacuous.
        assert!(
            out.stderr().contains("INFO") || out.stderr().contains("\"level\""),
            "{out}"
        );
        for name in NAMES {
            assert_absent(name, &out, None);
        }
        for (written, digits) in PHONES {
            assert_absent(written, &out, None);
            assert_absent(digits, &out, None);
            assert_absent(&digits[3..], &out, None);
        }
        assert_absent("555-0199-0000-1", &out, None);
        // results.csv holds ids, statuses and messages: no names or phones
        // (failures.csv holds the input verbatim, as it must).
        let results = std::fs::read(t.join(&out_name).join("results.csv")).unwrap();
        for name in NAMES {
            assert!(!contains(&results, name), "{name} in results.csv");
        }
        for (written, digits) in PHONES {
            assert!(!contains(&results, written) && !contains(&results, digits));
        }
    }
    // p1 and p2: created by the first run, `exists` in the second.
    assert_eq!(sb.users().len(), 2);
    sb.shutdown().await;
}

// The token detector itself finds a token where one is printed (text and
// JSON), and does not mistake a SHA-256 for one.
#[test]
fn the_token_detector_works() {
    let token = "cfe9d8dcdc503ff87b6eae48352f64762ceed3b5318257df";
    assert_eq!(
        hex_runs_of_len(format!("Bearer {token}\n").as_bytes(), 48),
        [token]
    );
    assert_eq!(
        hex_runs_of_len(format!("{{\"token\":\"{token}\"}}").as_bytes(), 48).len(),
        1
    );
    let sha = "f7dbd8514daaf7a95967e98d8fdd9233f3388632d80a4bb6efb348dd04d9c935";
    assert!(hex_runs_of_len(sha.as_bytes(), 48).is_empty());
}

// docs/reports.md: Reports ("created with mode 0600"): every file of a live run
// (results.csv, failures.csv,
// summary.json, and the run.json / progress.json kept for --resume) is
// created with mode 0600, and no temporary file is left behind (summary.json
// and the journal files are written to a temporary file and renamed).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_run_report_files_are_private_and_complete() {
    let sb = sandbox_with_secret(ENV_SECRET, Duration::from_secs(3600)).await;
    let t = TestDir::new();
    let out_name = "out";
    let run = live(&sb, &t, out_name, "json").secret(ENV_SECRET);
    let out = run.output_async().await;
    out.expect_code(1);
    let dir = t.join(out_name);
    let files = files_under(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for want in ["results.csv", "failures.csv", "summary.json", "run.json"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for (path, _) in &files {
        assert_eq!(crate::util::mode(path), 0o600, "{path}");
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        assert!(!name.contains(".tmp"), "leftover temporary file {path}");
    }
    sb.shutdown().await;
}
