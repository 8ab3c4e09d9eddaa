//! Incremental nightly runs with `--state` through the real binary against a
//! real sandbox (issue #8).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use connect_provision::sandbox::{Sandbox, SandboxConfig};
use connect_provision::state::StateStore;

use crate::util::{Consistent, Reports, ResultRow, Run, TestDir, sandbox};

/// Night 1's file: `n` users; night 2's: the same with every 200th row's
/// last name edited (0.5%) and `new` rows appended (1% of 2,000 = 20).
fn nights(dir: &Path, n: u64, new: u64) -> (PathBuf, PathBuf, BTreeSet<String>, BTreeSet<String>) {
    let header = "user_id,first_name,last_name,phone_number,locale\n";
    let mut n1 = String::from(header);
    let mut n2 = String::from(header);
    let mut edited = BTreeSet::new();
    let mut added = BTreeSet::new();
    for i in 1..=n {
        let id = format!("c{i:06}");
        n1.push_str(&format!("{id},ann,lee,(415) 555-{:04},en-US\n", i % 10_000));
        let last = if i % 200 == 0 {
            edited.insert(id.clone());
            "leeson"
        } else {
            "lee"
        };
        n2.push_str(&format!(
            "{id},ann,{last},(415) 555-{:04},en-US\n",
            i % 10_000
        ));
    }
    for j in 1..=new {
        let id = format!("new{j:05}");
        added.insert(id.clone());
        n2.push_str(&format!("{id},Nina,Novak,,fr-CA\n"));
    }
    let (p1, p2) = (dir.join("night1.csv"), dir.join("night2.csv"));
    std::fs::write(&p1, n1).unwrap();
    std::fs::write(&p2, n2).unwrap();
    (p1, p2, edited, added)
}

/// One night: `input` against `sb` into `out`, with the state file `state`.
fn night(sb: &Sandbox, input: &Path, out: impl AsRef<Path>, state: &Path) -> Run {
    Run::live(sb)
        .input(input)
        .out(out.as_ref())
        .arg("--state")
        .arg(state)
}

fn statuses(rows: &[ResultRow]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|r| (r.user_id.clone(), r.status.clone()))
        .collect()
}

/// The state's users (from `state export`), as a set of ids.
fn state_users(state: &Path) -> BTreeSet<String> {
    let out = Run::cli(["state", "export", "--state", state.to_str().unwrap()]).output();
    out.expect_code(0);
    let text = out.stdout();
    assert!(text.starts_with("user_id,status,first_seen,last_seen\n"));
    // Four columns and nothing else: no names or phone numbers.
    assert!(!text.contains("Novak") && !text.contains("+1415"));
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert!(matches!(f[1], "created" | "exists"), "{l}");
            f[0].to_string()
        })
        .collect()
}

fn sandbox_users(sb: &Sandbox) -> BTreeSet<String> {
    sb.users().into_iter().map(|u| u.user_id).collect()
}

fn check_night2(rows: &[ResultRow], edited: &BTreeSet<String>, added: &BTreeSet<String>) {
    for r in rows {
        let want = if added.contains(&r.user_id) {
            "created"
        } else if edited.contains(&r.user_id) {
            "changed"
        } else {
            "unchanged"
        };
        assert_eq!(r.status, want, "{r:?}");
        if r.status == "changed" {
            assert!(r.error.contains("different payload"), "{r:?}");
        }
    }
}

// Issue #8: night 2 sends only the new rows; edited rows are `changed`, the
// rest `unchanged`; the sandbox's request count proves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_two_sends_only_what_is_new() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let (n1, n2, edited, added) = nights(dir.path(), 2000, 20);
    let state = dir.path().join("state.db");

    let out1 = night(&sb, &n1, dir.path().join("night1"), &state)
        .rate(3000)
        .output_async()
        .await;
    out1.expect_code(0);
    let before = sb.stats().users_requests;
    assert_eq!(before, 2000);

    let night2 = dir.path().join("night2");
    let out2 = night(&sb, &n2, &night2, &state)
        .rate(3000)
        .output_async()
        .await;
    out2.expect_code(0);
    assert_eq!(
        sb.stats().users_requests - before,
        added.len() as u64,
        "only new rows sent"
    );
    let Consistent { rows, summary, .. } = Reports::at(&night2).assert_consistent(2020);
    check_night2(&rows, &edited, &added);
    assert_eq!(summary.counts["unchanged"], 1990);
    assert_eq!(summary.counts["changed"], 10);
    assert_eq!(summary.counts["created"], 20);
    // failures.csv is unaffected: just its header.
    let failures = std::fs::read_to_string(night2.join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count(), 1);
    assert_eq!(state_users(&state), sandbox_users(&sb));
    sb.shutdown().await;
}

// Issue #8: kill -9 during night 2, then --resume: state and sandbox agree
// exactly, and no user was created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_night_two_then_resume_keeps_state_and_sandbox_equal() {
    let sb = sandbox(SandboxConfig {
        latency: Duration::from_millis(40),
        ..Default::default()
    })
    .await;
    let dir = TestDir::new();
    let (n1, n2, edited, added) = nights(dir.path(), 1000, 400);
    let state = dir.path().join("state.db");
    let out1 = night(&sb, &n1, dir.path().join("night1"), &state)
        .rate(3000)
        .output_async()
        .await;
    out1.expect_code(0);

    // Night 2 at 100/s: the 400 new rows take ~4 s; kill it half way.
    let night2 = dir.path().join("night2");
    let mut child = night(&sb, &n2, &night2, &state).rate(100).spawn();
    let start = Instant::now();
    while sb.stats().created < 1000 + 150 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill_9();
    assert!(sb.stats().created < 1400, "killed before the end");

    let out = night(&sb, &n2, &night2, &state)
        .rate(300)
        .resume()
        .output_async()
        .await;
    out.expect_code(0);
    let rows = Reports::at(&night2).assert_consistent(1400).rows;
    // New rows created (or exists: in flight at the kill); the rest as before.
    for r in &rows {
        if added.contains(&r.user_id) {
            assert!(matches!(r.status.as_str(), "created" | "exists"), "{r:?}");
        } else if edited.contains(&r.user_id) {
            assert_eq!(r.status, "changed");
        } else {
            assert_eq!(r.status, "unchanged");
        }
    }
    assert_eq!(state_users(&state), sandbox_users(&sb), "state vs sandbox");
    assert_eq!(sb.stats().duplicate_creations, 0);
    assert_eq!(sb.stats().created, 1400);
    sb.shutdown().await;
}

// Issue #8: `state import` of night 1's results.csv and input into a fresh
// state gives the same night 2 as a state that saw night 1 happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_state_gives_the_same_night_two() {
    let dir = TestDir::new();
    let (n1, n2, edited, added) = nights(dir.path(), 600, 20);

    // A: night 1 with the state.
    let a = sandbox(SandboxConfig::default()).await;
    let sa = dir.path().join("a.db");
    let o = night(&a, &n1, dir.path().join("a1"), &sa)
        .rate(3000)
        .output_async()
        .await;
    o.expect_code(0);
    let o = night(&a, &n2, dir.path().join("a2"), &sa)
        .rate(3000)
        .output_async()
        .await;
    o.expect_code(0);

    // B: night 1 without a state (a one-off import), then `state import`.
    let b = sandbox(SandboxConfig::default()).await;
    let b1 = dir.path().join("b1");
    let o = Run::live(&b)
        .input(&n1)
        .out(&b1)
        .args(["--rate", "3000"])
        .output_async()
        .await;
    o.expect_code(0);
    let sb_path = dir.path().join("b.db");
    let imp = Run::cli([
        "state",
        "import",
        "--state",
        sb_path.to_str().unwrap(),
        "--results",
        b1.join("results.csv").to_str().unwrap(),
        n1.to_str().unwrap(),
    ])
    .output();
    imp.expect_code(0).expect_stdout("created=600");
    let before = b.stats().users_requests;
    let o = night(&b, &n2, dir.path().join("b2"), &sb_path)
        .rate(3000)
        .output_async()
        .await;
    o.expect_code(0);
    assert_eq!(
        b.stats().users_requests - before,
        20,
        "the import was not resent"
    );

    let ra = Reports::at(dir.join("a2")).results();
    let rb = Reports::at(dir.join("b2")).results();
    check_night2(&rb, &edited, &added);
    assert_eq!(statuses(&ra), statuses(&rb));
    a.shutdown().await;
    b.shutdown().await;
}

// Issue #8: one run at a time per state file: a second gets exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_state_file_gives_exit_2() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let (n1, _, _, _) = nights(dir.path(), 10, 0);
    let state = dir.path().join("state.db");
    let held = StateStore::open(&state).unwrap();
    let out = night(&sb, &n1, dir.path().join("out"), &state)
        .output_async()
        .await;
    out.expect_code(2);
    out.expect_stderr("in use by another run");
    assert_eq!(out.error_lines().len(), 1, "{out}");
    assert_eq!(sb.stats().users_requests, 0, "nothing sent");
    drop(held);
    let out = night(&sb, &n1, dir.path().join("out2"), &state)
        .output_async()
        .await;
    out.expect_code(0);
    sb.shutdown().await;
}
