//! The command line through the real binary: help, usage errors and their
//! wording, and where options come from (README: Command line, its `run`
//! table and Config file and precedence: flag > environment > config file >
//! default).

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::util::{CliOutput, Reports, Run, TestDir};

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A one-row valid input in `t`.
fn one_row(t: &TestDir) -> PathBuf {
    t.write_csv("in.csv", &[&["user_id", "first_name"], &["u1", "Ann"]])
}

fn path_arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `--config CFG run INPUT --dry-run`.
fn dry_with_config(cfg: &Path, input: &str) -> CliOutput {
    Run::dry(input).global(["--config"]).global([cfg]).output()
}

/// The `target` a dry run of a one-row input recorded in summary.json,
/// its command line set by `with` (global options, environment, flags).
fn dry_run_target(t: &TestDir, out: &str, with: impl FnOnce(Run) -> Run) -> Option<String> {
    let dir = t.join(out);
    with(Run::dry(one_row(t)).out(&dir)).output().expect_code(0);
    Reports::at(dir).summary().target
}

// README: Command line ("`--help` on each subcommand lists its options with
// examples").
#[test]
fn help_of_each_command_shows_an_example() {
    for sub in ["run", "check", "sandbox"] {
        let out = Run::cli([sub, "--help"]).output();
        out.expect_code(0)
            .expect_stdout("Examples:")
            .expect_stdout(&format!("connect-provision {sub}"));
    }
    let out = Run::cli(["--help"]).output();
    out.expect_code(0)
        .expect_stdout("connect-provision run samples/customers.csv --dry-run")
        .expect_stdout("Exit codes");
    Run::cli(["help", "run"])
        .output()
        .expect_code(0)
        .expect_stdout("--dry-run");
    Run::cli(["--version"])
        .output()
        .expect_code(0)
        .expect_stdout(env!("CARGO_PKG_VERSION"));
}

// README: Command line, `run` (`--sandbox` / `--env` / `--base-url`: one is
// required unless `--dry-run`; never a silent default to production).
#[test]
fn live_run_without_a_target_is_refused() {
    let t = TestDir::new();
    let input = one_row(&t);
    let out = Run::cli(["run", &path_arg(&input)])
        .current_dir(t.path())
        .output();
    out.expect_code(2)
        .expect_stderr("--sandbox")
        .expect_stderr("--env")
        .expect_stderr("--base-url");
    assert_eq!(out.error_lines().len(), 1, "{out}");
    assert!(!t.join("reports").exists(), "nothing written\n{out}");

    let out = Run::cli(["check"]).current_dir(t.path()).output();
    out.expect_code(2)
        .expect_stderr("--sandbox")
        .expect_stderr("--base-url");
}

#[test]
fn two_targets_are_refused() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    Run::cli(["run", &input, "--sandbox", "--env", "production"])
        .output()
        .expect_code(2);
    Run::cli([
        "run",
        &input,
        "--env",
        "development",
        "--base-url",
        "https://connect.example.com",
    ])
    .output()
    .expect_code(2);
    let cfg = t.write("c.toml", "sandbox = true\nenv = \"production\"\n");
    let out = dry_with_config(&cfg, &input);
    out.expect_code(2).expect_stderr("more than one target");
}

// docs/security.md: Hostile input, secrets and transport (Transport: `http://` only
// for loopback hosts).
#[test]
fn plain_http_base_url_is_only_for_loopback() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    let out = Run::cli(["run", &input, "--base-url", "http://example.com"]).output();
    out.expect_code(2)
        .expect_stderr("only for loopback")
        .expect_stderr("http://example.com");
    Run::cli(["check", "--base-url", "http://connect.example.com:8080"])
        .output()
        .expect_code(2)
        .expect_stderr("only for loopback");
    // The same rule for the environment variable and the config file, and
    // also in a dry run (the target is checked even when nothing is sent).
    Run::cli(["run", &input, "--dry-run", "--out", &t.arg("o1")])
        .env("CONNECT_BASE_URL", "http://10.0.0.1:8080")
        .output()
        .expect_code(2)
        .expect_stderr("only for loopback");
    let cfg = t.write("c.toml", "base_url = \"http://example.com\"\n");
    dry_with_config(&cfg, &input)
        .expect_code(2)
        .expect_stderr("only for loopback");
    Run::cli(["run", &input, "--base-url", "ftp://127.0.0.1/"])
        .output()
        .expect_code(2)
        .expect_stderr("https");
}

// README: Command line, `run` (`--client-secret-file`: "No flag takes the
// secret itself").
#[test]
fn there_is_no_client_secret_flag() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    for args in [
        vec![
            "run",
            &input,
            "--sandbox",
            "--client-secret",
            "s3cr3t-value",
        ],
        vec![
            "check",
            "--env",
            "development",
            "--client-secret",
            "s3cr3t-value",
        ],
        vec!["run", &input, "--sandbox", "--client-secret=s3cr3t-value"],
    ] {
        let out = Run::cli(args).output();
        out.expect_code(2).expect_stderr("--client-secret");
        assert!(!out.stderr().contains("s3cr3t-value"), "{out}");
    }
}

#[test]
fn rate_zero_is_a_usage_error_naming_rate() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    Run::cli(["run", &input, "--sandbox", "--rate", "0"])
        .output()
        .expect_code(2)
        .expect_stderr("--rate");
    let cfg = t.write("c.toml", "rate = 0\n");
    dry_with_config(&cfg, &input)
        .expect_code(2)
        .expect_stderr("rate");
}

// README: Config file and precedence (any option in the file; unknown keys
// are an error).
#[test]
fn config_with_an_unknown_key_is_refused_naming_it() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    let cfg = t.write("c.toml", "rate = 5\nrates = 5\n");
    let out = dry_with_config(&cfg, &input);
    out.expect_code(2)
        .expect_stderr("rates")
        .expect_stderr("c.toml");
    assert_eq!(out.error_lines().len(), 1, "{out}");

    // An unknown field inside [columns] too; a config file that does not
    // exist, and one that is not TOML.
    let columns = t.write("c2.toml", "[columns]\nemail = \"E-mail\"\n");
    let not_toml = t.write("bad.toml", "rate = \n");
    for (cfg, needle) in [
        (columns, "email"),
        (t.join("nope.toml"), "nope.toml"),
        (not_toml, "bad.toml"),
    ] {
        dry_with_config(&cfg, &input)
            .expect_code(2)
            .expect_stderr(needle);
    }
}

// Regression: an unknown key at the start of line N (its span starts the
// line) was reported "at line N-1".
#[test]
fn config_error_names_the_right_line() {
    let t = TestDir::new();
    let input = path_arg(&one_row(&t));
    let cfg = t.write("c.toml", "rate = 5\n\n\nrates = 5\n");
    dry_with_config(&cfg, &input)
        .expect_code(2)
        .expect_stderr("rates")
        .expect_stderr("(at line 4)");
}

// README: Config file and precedence (flag > environment > config file).
// A dry run records its target in summary.json without sending anything.
#[test]
fn target_precedence_flag_then_env_then_config() {
    let t = TestDir::new();
    let cfg = t.write("c.toml", "base_url = \"http://127.0.0.1:3003\"\n");
    let cfg = path_arg(&cfg);

    let with_cfg = ["--config", cfg.as_str()];

    assert_eq!(
        dry_run_target(&t, "config", |r| r.global(with_cfg)).as_deref(),
        Some("http://127.0.0.1:3003")
    );

    let env = |r: Run| r.env("CONNECT_BASE_URL", "http://127.0.0.1:2002/");
    assert_eq!(
        dry_run_target(&t, "env", |r| env(r.global(with_cfg))).as_deref(),
        Some("http://127.0.0.1:2002")
    );

    let flag = |r: Run| r.args(["--base-url", "http://localhost:1001"]);
    assert_eq!(
        dry_run_target(&t, "flag", |r| flag(env(r.global(with_cfg)))).as_deref(),
        Some("http://localhost:1001")
    );

    // A flag target of another kind replaces the config's (and the env's).
    let production = |r: Run| r.global(with_cfg).args(["--env", "production"]);
    assert_eq!(
        dry_run_target(&t, "env-flag", production).as_deref(),
        Some("https://connect.instacart.com")
    );
    let embedded = |r: Run| r.global(with_cfg).arg("--sandbox");
    assert_eq!(
        dry_run_target(&t, "sandbox-flag", embedded).as_deref(),
        Some("embedded sandbox")
    );

    // The config file named by CONNECT_PROVISION_CONFIG.
    let named = |r: Run| r.env("CONNECT_PROVISION_CONFIG", &cfg);
    assert_eq!(
        dry_run_target(&t, "env-config", named).as_deref(),
        Some("http://127.0.0.1:3003")
    );

    // No target at all is fine for a dry run.
    assert_eq!(dry_run_target(&t, "none", |r| r), None);
}

// The same precedence seen from `check`, whose error names the URL it tried.
#[test]
fn check_tries_the_url_of_highest_precedence() {
    let t = TestDir::new();
    let (flag, env, file) = (closed_port(), closed_port(), closed_port());
    let cfg = t.write(
        "c.toml",
        format!("base_url = \"http://127.0.0.1:{file}\"\nclient_id = \"from-config\"\n"),
    );
    let cfg = path_arg(&cfg);
    let check = |extra: &[&str], env_url: Option<String>| -> CliOutput {
        let mut args = vec!["--config", cfg.as_str(), "check", "--timeout", "5s"];
        args.extend_from_slice(extra);
        let mut cli = Run::cli(args).env("CONNECT_CLIENT_SECRET", "not-a-real-secret");
        if let Some(u) = env_url {
            cli = cli.env("CONNECT_BASE_URL", u);
        }
        let out = cli.output();
        out.expect_code(3);
        assert!(!out.stderr().contains("not-a-real-secret"), "{out}");
        out
    };
    check(&[], None).expect_stderr(&format!("http://127.0.0.1:{file}"));
    check(&[], Some(format!("http://127.0.0.1:{env}")))
        .expect_stderr(&format!("http://127.0.0.1:{env}"));
    let flag_url = format!("http://127.0.0.1:{flag}");
    let out = check(
        &["--base-url", &flag_url],
        Some(format!("http://127.0.0.1:{env}")),
    );
    out.expect_stderr(&flag_url);
    assert!(!out.stderr().contains(&format!(":{env}")), "{out}");
    assert!(!out.stderr().contains(&format!(":{file}")), "{out}");

    // Credentials: without a secret from anywhere, a usage error before any request.
    let out = Run::cli(["--config", cfg.as_str(), "check"]).output();
    out.expect_code(2).expect_stderr("CONNECT_CLIENT_SECRET");
}

// README: Config file and precedence (a `[columns]` table holds the `--map`
// entries), and
// precedence for reading options: --map / --delimiter / --encoding beat the file.
#[test]
fn config_columns_table_and_flag_overrides() {
    let t = TestDir::new();
    let cfg = t.write(
        "c.toml",
        "delimiter = \";\"\nencoding = \"windows-1252\"\n\n[columns]\nuser_id = \"Customer ID\"\nfirst_name = \"Given Name\"\n",
    );
    let cfg = path_arg(&cfg);
    let input = t.write(
        "in.csv",
        &b"Customer ID;Given Name;Alt Name\nc1;Jos\xE9;Ann\nc2;;Bob\n"[..],
    );
    let input = path_arg(&input);
    let run = |out: &str, extra: &[&str]| -> (CliOutput, String) {
        let dir = t.arg(out);
        let mut args = vec![
            "--config",
            cfg.as_str(),
            "run",
            input.as_str(),
            "--dry-run",
            "--out",
            dir.as_str(),
        ];
        args.extend_from_slice(extra);
        (Run::cli(args).output(), dir)
    };

    let (out, dir) = run("config", &[]);
    out.expect_code(1);
    let results = Reports::at(&dir).results();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0].user_id.as_str(), results[0].status.as_str()),
        ("c1", "valid")
    );
    assert_eq!(results[1].error, "first_name: required");

    // --map replaces the file's mapping for that field only.
    let (out, dir) = run("map", &["--map", "first_name=Alt Name"]);
    out.expect_code(0);
    assert!(
        Reports::at(&dir)
            .results()
            .iter()
            .all(|r| r.status == "valid")
    );

    // --encoding beats the file's encoding: read as UTF-8, row 1 is invalid.
    let (out, dir) = run("encoding", &["--encoding", "utf-8"]);
    out.expect_code(1);
    let results = Reports::at(&dir).results();
    assert!(
        results[0]
            .error
            .contains("invalid UTF-8 in column 'Given Name'"),
        "{results:#?}"
    );

    // --delimiter beats the file's delimiter: with ',' the header is one column.
    let (out, _) = run("delimiter", &["--delimiter", ","]);
    out.expect_code(2).expect_stderr("Customer ID");
}

// docs/rate-limiting.md: How a run executes (Logs: "Names and phone numbers are not logged
// above debug level").
#[test]
fn dry_run_logs_no_names_or_phones() {
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            &["user_id", "first_name", "phone_number"],
            &["u1", "Unmistakablename", "+1 415 555 0199"],
            &["u2", "", "+1 415 555 0198"],
        ],
    );
    let out = Run::cli([
        "run",
        &path_arg(&input),
        "--dry-run",
        "--out",
        &t.arg("out"),
        "--log-format",
        "json",
    ])
    .output();
    out.expect_code(1);
    let all = format!("{}{}", out.stdout(), out.stderr());
    for secret in ["Unmistakablename", "555 0199", "555 0198", "4155550199"] {
        assert!(!all.contains(secret), "{secret} leaked\n{out}");
    }
}

// `--version` names its build (the short commit hash and the commit's date,
// from git at build time), and a run's reports record the same string.
#[tokio::test]
async fn version_names_its_build_and_the_reports_record_it() {
    let out = Run::cli(["--version"]).output();
    out.expect_code(0);
    let stdout = out.stdout();
    let version = stdout
        .trim()
        .strip_prefix("connect-provision ")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(version, connect_provision::VERSION);
    let (semver, build) = version.split_once(' ').unwrap_or((version, ""));
    assert_eq!(semver, env!("CARGO_PKG_VERSION"));
    let build = build
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no build in {version:?}"));
    let (commit, date) = build.split_once(' ').unwrap_or_else(|| panic!("{build}"));
    // Built from this checkout: the hash is HEAD's, unless git is absent.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => {
            assert_eq!(commit, head, "{version}");
            let d = date.as_bytes();
            assert!(
                d.len() == 10 && d[4] == b'-' && d[7] == b'-',
                "a date, YYYY-MM-DD: {date}"
            );
        }
        None => assert_eq!((commit, date), ("unknown", "unknown")),
    }

    let sb = crate::util::sandbox(connect_provision::sandbox::SandboxConfig::default()).await;
    let t = TestDir::new();
    let input = one_row(&t);
    let dir = t.join("out");
    Run::live(&sb)
        .input(&input)
        .out(&dir)
        .output_async()
        .await
        .expect_code(0);
    let reports = Reports::at(&dir);
    assert_eq!(reports.summary().tool_version, version);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.path("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    assert_eq!(run["tool_version"], version);
    let html = std::fs::read_to_string(reports.path("report.html")).expect("report.html");
    assert!(html.contains(version), "report.html names {version}");
}
