//! The sandbox's scenario knobs over real HTTP on loopback (issues #19 and
//! #23): a rate limit that changes on a schedule, slow start, capacity, latency
//! jitter and a heavy tail, and the per-second table of `/_sandbox/seconds`.
//!
//! As in `sandbox_limit`, assertions are on counts, outcomes and lower bounds
//! on time (a loaded machine only adds time). Where an outcome depends on
//! requests landing within one second of each other, the test checks that they
//! did, and otherwise only the bound that holds whatever the timing.

use std::time::{Duration, Instant};

use crate::util::USERS_PATH;
use clap::Parser;
use connect_provision::cli::{Cli, Command};
use connect_provision::sandbox::{LiveConfig, SandboxConfig, SecondCounts, Stats};
use reqwest::StatusCode;
use serde_json::Value;

use crate::util::{Run, client, create, get_json, post_control, sandbox, session, token, user};

/// Comfortably under the 1 s window: requests sent this fast share one window.
const WITHIN_A_WINDOW: Duration = Duration::from_millis(800);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sends one create and returns its status and how long the answer took.
async fn timed(
    c: &reqwest::Client,
    sb: &connect_provision::sandbox::Sandbox,
    t: &str,
    id: &str,
) -> (StatusCode, Duration) {
    let started = Instant::now();
    let status = create(c, sb, t, &user(id)).await.unwrap().status();
    (status, started.elapsed())
}

/// Sends `n` creates one after the other; returns their statuses.
async fn sequential(
    c: &reqwest::Client,
    sb: &connect_provision::sandbox::Sandbox,
    t: &str,
    prefix: &str,
    n: usize,
) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(timed(c, sb, t, &format!("{prefix}{i}")).await.0);
    }
    out
}

fn count(statuses: &[StatusCode], status: StatusCode) -> u64 {
    statuses.iter().filter(|s| **s == status).count() as u64
}

fn sum(rows: &[SecondCounts], f: impl Fn(&SecondCounts) -> u64) -> u64 {
    rows.iter().map(f).sum()
}

async fn live(c: &reqwest::Client, sb: &connect_provision::sandbox::Sandbox) -> LiveConfig {
    get_json(c, sb, "/_sandbox/config").await
}

// --- /_sandbox/seconds -------------------------------------------------------

#[tokio::test]
async fn seconds_count_each_outcome_by_arrival() {
    let sb = sandbox(SandboxConfig {
        throttle_rate: 0.3,
        fail_rate: 0.3,
        reset_rate: 0.1,
        seed: Some(5),
        ..Default::default()
    })
    .await;
    let c = client();
    // Nothing yet: an empty array, not a second 0.
    let raw: Value = get_json(&c, &sb, "/_sandbox/seconds").await;
    assert_eq!(raw, serde_json::json!([]));

    let t = token(&c, &sb).await;
    for i in 0..30 {
        let _ = create(&c, &sb, &t, &user(&format!("s{i}"))).await;
    }
    // Unauthenticated requests never reach the rate-limit stage.
    let resp = create(&c, &sb, "nope", &user("x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let rows: Vec<SecondCounts> = get_json(&c, &sb, "/_sandbox/seconds").await;
    assert_eq!(rows, sb.seconds());
    let s: Stats = get_json(&c, &sb, "/_sandbox/stats").await;
    assert_eq!(sum(&rows, |r| r.requests), 30);
    assert_eq!(sum(&rows, |r| r.admitted), 30);
    assert_eq!(sum(&rows, |r| r.throttled_limit), 0);
    assert_eq!(sum(&rows, |r| r.throttled_spurious), s.spurious_429);
    assert_eq!(
        sum(&rows, |r| r.failed),
        s.faults_500 + s.faults_503 + s.resets
    );
    assert!(s.spurious_429 > 0 && s.faults_500 + s.faults_503 > 0 && s.resets > 0);
    // Consecutive seconds from 0, no limit.
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.second, i as u64);
        assert_eq!(r.limit, None);
    }
    // The documented shape, field by field.
    let raw: Value = get_json(&c, &sb, "/_sandbox/seconds").await;
    let keys: Vec<&str> = raw[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "second",
        "requests",
        "admitted",
        "throttled_limit",
        "throttled_spurious",
        "failed",
        "limit",
    ];
    want.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, want);

    // A reset empties it.
    post_control(&c, &sb, "/_sandbox/reset", None).await;
    assert!(sb.seconds().is_empty());
}

// --- --rate-limit-schedule ---------------------------------------------------

#[tokio::test]
async fn a_schedule_drops_the_limit_at_its_offset_and_seconds_show_it() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(100),
        rate_limit_schedule: Some("1s:3".parse().unwrap()),
        ..Default::default()
    })
    .await;
    // Before the first users request the clock has not started.
    tokio::time::sleep(ms(1200)).await;
    assert_eq!(live(&c, &sb).await.rate_limit, Some(100));

    assert_eq!(timed(&c, &sb, &t, "first").await.0, StatusCode::OK);
    let after_first = Instant::now();
    assert_eq!(live(&c, &sb).await.rate_limit, Some(100));
    // Past the offset (counted from the first request, which arrived before
    // `after_first`), the limit in force is the new one.
    tokio::time::sleep_until((after_first + ms(1100)).into()).await;
    assert_eq!(live(&c, &sb).await.rate_limit, Some(3));

    // The first request is more than a second old: three fit, the rest do not.
    let started = Instant::now();
    let got = sequential(&c, &sb, &t, "after", 6).await;
    assert_eq!(count(&got[..3], StatusCode::OK), 3, "{got:?}");
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!(&got[3..], [StatusCode::TOO_MANY_REQUESTS; 3]);
    }
    let refused = count(&got, StatusCode::TOO_MANY_REQUESTS);

    let rows = sb.seconds();
    assert!(rows.len() >= 2, "{rows:?}");
    assert_eq!(rows[0].second, 0);
    assert_eq!((rows[0].requests, rows[0].limit), (1, Some(100)));
    assert!(rows[1..].iter().all(|r| r.limit == Some(3)), "{rows:?}");
    assert_eq!(sum(&rows, |r| r.requests), 7);
    assert_eq!(sum(&rows, |r| r.throttled_limit), refused);
    assert_eq!(rows[0].throttled_limit, 0);
    assert_eq!(sb.stats().throttled, refused);

    // A reset restarts the schedule: back to 100 until a second after the
    // next first request.
    post_control(&c, &sb, "/_sandbox/reset", None).await;
    assert_eq!(live(&c, &sb).await.rate_limit, Some(100));
    assert!(sb.seconds().is_empty());
    let t = token(&c, &sb).await;
    let started = Instant::now();
    let got = sequential(&c, &sb, &t, "again", 6).await;
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!(count(&got, StatusCode::OK), 6, "{got:?}");
    }
}

#[tokio::test]
async fn a_schedule_drop_keeps_the_arrivals_already_booked() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(5),
        rate_limit_schedule: Some("500ms:2".parse().unwrap()),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let mut got = vec![timed(&c, &sb, &t, "early").await.0];
    // The first request arrived before this: the drop is due 500 ms after it.
    let first_answered = Instant::now();
    got.extend(sequential(&c, &sb, &t, "early", 4).await);
    let early_fast = started.elapsed() < ms(400);
    if early_fast {
        assert_eq!(count(&got, StatusCode::OK), 5, "{got:?}");
    }
    tokio::time::sleep_until((first_answered + ms(550)).into()).await;
    let (late, _) = timed(&c, &sb, &t, "late").await;
    let late_answered = Instant::now();
    assert_eq!(live(&c, &sb).await.rate_limit, Some(2));
    if early_fast && started.elapsed() < WITHIN_A_WINDOW {
        // Five are booked in the last second: the strict reading refuses
        // until all but one have left the window.
        assert_eq!(late, StatusCode::TOO_MANY_REQUESTS);
    }
    // Once they have, two fit again.
    let quiet = (started + Duration::from_secs(2)).max(late_answered + ms(1100));
    tokio::time::sleep_until(quiet.into()).await;
    let again_started = Instant::now();
    let again = sequential(&c, &sb, &t, "again", 3).await;
    assert_eq!(count(&again[..2], StatusCode::OK), 2, "{again:?}");
    if again_started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!(again[2], StatusCode::TOO_MANY_REQUESTS);
    }
    let rows = sb.seconds();
    assert_eq!(
        sum(&rows, |r| r.throttled_limit),
        sb.stats().throttled,
        "{rows:?}"
    );
    // The drop came within second 0, so every second ends at 2.
    assert!(rows.iter().all(|r| r.limit == Some(2)), "{rows:?}");
}

// --- --slow-start --------------------------------------------------------------

#[tokio::test]
async fn slow_start_delays_the_early_requests_only() {
    let (sb, c, t) = session(SandboxConfig {
        slow_start: Some("1s:1500ms".parse().unwrap()),
        ..Default::default()
    })
    .await;
    // The first request opens the window, so it is always in it.
    let (status, took) = timed(&c, &sb, &t, "cold").await;
    assert_eq!(status, StatusCode::OK);
    assert!(took >= ms(1500), "{took:?}");
    // It came back 1.5 s after arriving: the next arrives past the 1 s window
    // and takes the usual latency (none), far below the delay.
    let (status, took) = timed(&c, &sb, &t, "warm").await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < ms(1500), "{took:?}");
}

// --- --capacity ------------------------------------------------------------------

#[tokio::test]
async fn capacity_queues_a_burst_without_a_429() {
    const N: u32 = 4;
    const M: u64 = 8;
    let latency = Duration::from_secs(1);
    let (sb, c, t) = session(SandboxConfig {
        capacity: Some(N),
        latency,
        ..Default::default()
    })
    .await;
    assert_eq!(live(&c, &sb).await.capacity, Some(N));

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..M {
        let (c, url, t) = (c.clone(), sb.url(), t.clone());
        tasks.spawn(async move {
            c.post(format!("{url}{USERS_PATH}"))
                .bearer_auth(t)
                .json(&user(&format!("q{i}")))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    let last_answer = started.elapsed();
    assert_eq!(statuses, [StatusCode::OK; M as usize]);
    // The last of M started (M - 1)/N s after the first at the earliest, then
    // took its latency.
    let floor = Duration::from_secs(1) / N * (M as u32 - 1) + latency;
    assert!(last_answer >= floor, "{last_answer:?} < {floor:?}");

    let s = sb.stats();
    assert_eq!((s.created, s.throttled), (M, 0));
    assert!(s.max_in_flight <= M);
    if s.max_window == M {
        // All M arrived within a second, before the first (1 s of latency)
        // could leave: all were inside at once.
        assert_eq!(s.max_in_flight, M);
    }
    assert_eq!(sum(&sb.seconds(), |r| r.admitted), M);
}

// --- latency models ----------------------------------------------------------------

#[tokio::test]
async fn jitter_keeps_every_latency_above_its_band_floor() {
    let sb = sandbox(SandboxConfig {
        latency: ms(200),
        latency_jitter: 0.5,
        seed: Some(5),
        ..Default::default()
    })
    .await;
    let c = client();
    assert_eq!(live(&c, &sb).await.latency_jitter, 0.5);
    let t = token(&c, &sb).await;
    let mut took = Vec::new();
    for i in 0..10 {
        let (status, d) = timed(&c, &sb, &t, &format!("j{i}")).await;
        assert_eq!(status, StatusCode::OK);
        took.push(d);
    }
    // The band is [100 ms, 300 ms]: every answer takes at least its floor, and
    // the seeded draws reach above the centre.
    assert!(took.iter().all(|d| *d >= ms(100)), "{took:?}");
    assert!(took.iter().any(|d| *d >= ms(200)), "{took:?}");
}

#[tokio::test]
async fn p99_gives_latencies_a_heavy_tail() {
    let sb = sandbox(SandboxConfig {
        latency: ms(50),
        latency_p99: Some(Duration::from_secs(1)),
        seed: Some(3),
        ..Default::default()
    })
    .await;
    let c = client();
    let cfg = live(&c, &sb).await;
    assert_eq!((cfg.latency_ms, cfg.latency_p99_ms), (50, Some(1000)));
    let t = token(&c, &sb).await;
    let mut took = Vec::new();
    for i in 0..30 {
        let (status, d) = timed(&c, &sb, &t, &format!("p{i}")).await;
        assert_eq!(status, StatusCode::OK);
        took.push(d);
    }
    // Lower bounds only: some answers at or above the median, and (seeded)
    // some far out in the tail, at three times the median or more.
    assert!(took.iter().any(|d| *d >= ms(50)), "{took:?}");
    assert!(took.iter().any(|d| *d >= ms(150)), "{took:?}");
}

// --- command line ---------------------------------------------------------------------

fn sandbox_args(extra: &[&str]) -> connect_provision::cli::SandboxArgs {
    let mut argv = vec!["connect-provision", "sandbox"];
    argv.extend(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Sandbox(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn scenario_flags_parse() {
    let args = sandbox_args(&[]);
    assert_eq!(args.rate_limit_schedule, None);
    assert_eq!((args.latency_jitter, args.latency_p99), (0.0, None));
    assert_eq!((args.slow_start, args.capacity), (None, None));

    let args = sandbox_args(&[
        "--rate-limit",
        "40",
        "--rate-limit-schedule",
        "30s:13,90s:40",
        "--latency-p99",
        "1s",
        "--slow-start",
        "4s:8s",
        "--capacity",
        "50",
    ]);
    let steps = args.rate_limit_schedule.unwrap();
    let steps: Vec<(u64, u32)> = steps
        .steps()
        .iter()
        .map(|s| (s.at.as_secs(), s.per_second))
        .collect();
    assert_eq!(steps, [(30, 13), (90, 40)]);
    assert_eq!(args.latency_p99, Some(Duration::from_secs(1)));
    let slow = args.slow_start.unwrap();
    assert_eq!((slow.window, slow.delay), (ms(4000), ms(8000)));
    assert_eq!(args.capacity, Some(50));
    assert_eq!(
        sandbox_args(&["--latency-jitter", "0.2"]).latency_jitter,
        0.2
    );
}

#[test]
fn bad_scenario_flags_are_usage_errors() {
    for (args, says) in [
        (
            &[
                "--rate-limit",
                "40",
                "--rate-limit-schedule",
                "30s:13,10s:40",
            ][..],
            "offsets must increase",
        ),
        (
            &["--rate-limit", "40", "--rate-limit-schedule", "30s"],
            "--rate-limit-schedule",
        ),
        (&["--rate-limit-schedule", "30s:13"], "--rate-limit"),
        (&["--latency-jitter", "1.5"], "--latency-jitter"),
        (
            &["--latency-jitter", "0.1", "--latency-p99", "1s"],
            "cannot be used with",
        ),
        (
            &["--latency", "100ms", "--latency-p99", "50ms"],
            "latency p99 (50ms) must be at least the latency",
        ),
        (&["--latency-p99", "50ms"], "needs a latency above zero"),
        (&["--slow-start", "4s"], "--slow-start"),
        (&["--capacity", "0"], "--capacity"),
    ] {
        let mut argv = vec!["sandbox", "--listen", "127.0.0.1:0"];
        argv.extend(args);
        Run::cli(argv).output().expect_code(2).expect_stderr(says);
    }
    Run::cli(["sandbox", "--help"])
        .output()
        .expect_code(0)
        .expect_stdout("--rate-limit-schedule")
        .expect_stdout("--latency-jitter")
        .expect_stdout("--latency-p99")
        .expect_stdout("--slow-start")
        .expect_stdout("--capacity");
}
