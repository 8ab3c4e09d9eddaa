//! The operator's view: report.html (its structure, not its pixels),
//! `report DIR`, `--metrics-file` parsed back by an exposition-format
//! parser, shell completions and the man page.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use connect_provision::sandbox::SandboxConfig;

use crate::util::{Consistent, Fixture, Reports, Run, TestDir, sample, sandbox};

/// The `<figure id="ID">` element of `html`, whole.
#[track_caller]
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<figure id=\"{id}\""))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let len = html[start..].find("</figure>").expect("figure closes");
    &html[start..start + len]
}

/// The top-errors table as (message, count, first rows), in page order.
fn top_errors(html: &str) -> Vec<(String, u64, String)> {
    let cell = |row: &str, class: &str| -> String {
        let open = format!("<td class=\"{class}\">");
        let at = row.find(&open).expect("cell") + open.len();
        row[at..at + row[at..].find("</td>").expect("cell closes")].to_string()
    };
    html.split("<tr><td class=\"message\">")
        .skip(1)
        .map(|rest| {
            let row = format!("<td class=\"message\">{rest}");
            (
                cell(&row, "message"),
                cell(&row, "count").parse().expect("count"),
                cell(&row, "rows"),
            )
        })
        .collect()
}

/// What the top-errors table must say, from results.csv: the failing rows'
/// messages by count (most first, ties in first-seen order), at most 10.
fn expected_errors(dir: &Path) -> Vec<(String, u64, String)> {
    let mut seen: Vec<(String, u64, Vec<u64>)> = Vec::new();
    for r in Reports::at(dir).results() {
        if !matches!(r.status.as_str(), "invalid" | "rejected" | "failed") {
            continue;
        }
        match seen.iter_mut().find(|(m, ..)| *m == r.error) {
            Some((_, n, rows)) => {
                *n += 1;
                if rows.len() < 5 {
                    rows.push(r.row);
                }
            }
            None => seen.push((r.error.clone(), 1, vec![r.row])),
        }
    }
    seen.sort_by_key(|(_, n, _)| std::cmp::Reverse(*n));
    seen.into_iter()
        .take(10)
        .map(|(m, n, rows)| {
            let rows: Vec<String> = rows.iter().map(u64::to_string).collect();
            (html_escape(&m), n, rows.join(", "))
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// report.html of `dir`: self-contained, every chart drawn (a dry run has
/// no requests: its latency figure says so instead), the top errors as
/// results.csv has them.
#[track_caller]
fn assert_report(dir: &Path, live: bool) -> String {
    let html = String::from_utf8(std::fs::read(dir.join("report.html")).expect("report.html"))
        .expect("UTF-8");
    for id in [
        "chart-outcomes",
        "chart-throughput",
        "chart-latency",
        "chart-inflight",
    ] {
        let drawn = figure(&html, id).contains("<svg");
        assert!(
            drawn || (!live && id == "chart-latency"),
            "{id} has no chart"
        );
        assert!(drawn || !figure(&html, id).is_empty());
    }
    for banned in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(banned), "report.html holds {banned}");
    }
    assert!(html.contains("<dl id=\"facts\">"));
    let summary = Reports::at(dir).summary();
    assert!(html.contains(&summary.input.sha256), "the input's SHA-256");
    assert_eq!(top_errors(&html), expected_errors(dir));
    html
}

// A dry run of the sample: the page is written, its errors are the
// sample's, and `report DIR` draws the same page again from the files.
#[test]
fn a_dry_run_writes_report_html_and_report_dir_redraws_it() {
    let t = TestDir::new();
    let out = t.join("out");
    let o = Run::dry(sample("customers.csv")).out(&out).output();
    o.expect_code(1).expect_stdout("report.html");
    let first = assert_report(&out, false);
    assert_eq!(top_errors(&first).iter().map(|e| e.1).sum::<u64>(), 8);
    assert!(first.contains("id=\"next-step\""));
    assert!(first.contains("some rows need fixing"));

    std::fs::remove_file(out.join("report.html")).unwrap();
    Run::cli(["report", out.to_str().unwrap()])
        .output()
        .expect_code(0)
        .expect_stdout("report.html");
    let again = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(again, first, "report DIR draws the page the run drew");
}

#[test]
fn report_of_a_directory_without_a_run_is_a_one_line_usage_error() {
    let t = TestDir::new();
    let o = Run::cli(["report", t.path().to_str().unwrap()]).output();
    o.expect_code(2).expect_stderr("no summary.json");
    assert_eq!(o.error_lines().len(), 1, "{o}");
}

// Writing the page never changes the exit code: a directory in its way
// makes a warning, and the run's result stands.
#[test]
fn an_unwritable_report_html_is_a_warning_not_a_new_exit_code() {
    let t = TestDir::new();
    let out = t.join("out");
    std::fs::create_dir_all(out.join("report.html")).unwrap();
    let o = Run::dry(sample("customers.csv")).out(&out).output();
    o.expect_code(1).expect_stderr("cannot write report.html");
    assert_eq!(Reports::at(&out).summary().exit_code, 1);
}

// A run with 429s, faults and a token that expires mid-run: the timeline
// and the page show them, and they add up to summary.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_429s_and_faults_draws_them() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(40),
        throttle_rate: 0.02,
        fail_rate: 0.15,
        token_ttl: Duration::from_secs(2),
        latency: Duration::from_millis(5),
        seed: Some(7),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(400);
    // Two attempts: some rows outlast them, so the page has errors to list.
    let o = fx
        .live(&sb)
        .rate(60)
        .args(["--max-attempts", "2"])
        .output_async()
        .await;
    let out = fx.out();
    let Consistent {
        summary, timeline, ..
    } = fx.reports().assert_live(&sb, fx.rows);
    assert_eq!(i32::from(summary.exit_code), o.code(), "{o}");
    assert!(summary.throttled_429 > 0, "{summary:?}");
    assert!(summary.token_refreshes > 0, "{summary:?}");
    assert!(
        timeline.iter().any(|l| !l["p99_ms"].is_empty()),
        "latency sampled"
    );
    assert!(
        timeline.iter().all(|l| !l["rate"].is_empty()),
        "rate sampled"
    );
    let html = assert_report(&out, true);
    assert!(!top_errors(&html).is_empty(), "rows outlasted two attempts");
    let throughput = figure(&html, "chart-throughput");
    assert!(
        throughput.contains(&format!("({} in all)", summary.throttled_429)),
        "429s marked"
    );
    let inflight = figure(&html, "chart-inflight");
    assert!(
        inflight.contains(&format!("({} in all)", summary.token_refreshes)),
        "refreshes marked"
    );
    sb.shutdown().await;
}

/// Sample name → each series' (labels, value).
type Metrics = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// A metrics file parsed by prometheus-parse.
fn parse_metrics(path: &Path) -> Metrics {
    let text = std::fs::read_to_string(path).expect("metrics file");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition format");
    let n_samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(scrape.samples.len(), n_samples, "every sample parsed");
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for s in scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected {other:?}"),
        };
        let labels = s
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.entry(s.metric).or_default().push((labels, v));
    }
    out
}

fn one(m: &Metrics, name: &str) -> Option<f64> {
    m.get(name).map(|v| v[0].1)
}

// --metrics-file: written while the run goes on (running, no exit code)
// and at the end (the summary's figures, the exit code, the last success).
#[test]
fn the_metrics_file_is_written_during_and_after_the_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(sandbox(SandboxConfig::default()));
    let fx = Fixture::users(60);
    let metrics = fx.dir.join("connect_provision.prom");
    let mut child = fx
        .live(&sb)
        .rate(10)
        .arg("--metrics-file")
        .arg(&metrics)
        .spawn();
    let start = Instant::now();
    while !metrics.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = parse_metrics(&metrics);
    assert_eq!(one(&during, "connect_provision_running"), Some(1.0));
    assert_eq!(one(&during, "connect_provision_exit_code"), None);
    assert_eq!(
        one(&during, "connect_provision_rate_per_second"),
        Some(10.0)
    );
    // A guard against a run that never ends, not a speed check.
    child.wait(Duration::from_secs(120)).expect_code(0);

    let after = parse_metrics(&metrics);
    let summary = Reports::at(fx.out()).summary();
    assert_eq!(one(&after, "connect_provision_running"), Some(0.0));
    assert_eq!(one(&after, "connect_provision_exit_code"), Some(0.0));
    assert_eq!(
        one(&after, "connect_provision_requests_sent_total"),
        Some(summary.requests_sent as f64)
    );
    let rows = &after["connect_provision_rows"];
    let created = rows.iter().find(|(l, _)| l["status"] == "created").unwrap();
    assert_eq!(created.1, 60.0);
    assert_eq!(created.0["metrics_file"], "connect_provision.prom");
    let last = one(&after, "connect_provision_last_success_timestamp_seconds").unwrap();
    let started = one(&after, "connect_provision_started_timestamp_seconds").unwrap();
    assert!(last >= started, "{last} < {started}");
    assert_eq!(crate::util::mode(&metrics) & 0o777, 0o644);
    rt.block_on(sb.shutdown());
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    for (shell, needle) in [
        ("bash", "complete -F _connect__provision"),
        ("zsh", "#compdef connect-provision"),
        ("fish", "complete -c connect-provision"),
    ] {
        let o = Run::cli(["completions", shell]).output();
        o.expect_code(0).expect_stdout(needle);
        assert!(o.stdout().contains("metrics-file"), "{shell}: flags listed");
    }
    Run::cli(["completions", "tcsh"]).output().expect_code(2);
    let man = Run::cli(["man"]).output();
    man.expect_code(0).expect_stdout(".TH connect-provision");
    let t = TestDir::new();
    let dir = t.join("man1");
    Run::cli(["man", "--out-dir", dir.to_str().unwrap()])
        .output()
        .expect_code(0);
    for page in [
        "connect-provision.1",
        "connect-provision-run.1",
        "connect-provision-report.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let run_page = std::fs::read_to_string(dir.join("connect-provision-run.1")).unwrap();
    assert!(
        run_page.contains("metrics\\-file"),
        "run's flags in its page"
    );
}
