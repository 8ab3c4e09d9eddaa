//! The sandbox's rate limit over real HTTP on loopback (docs/sandbox.md: The sandbox,
//! Rate limiting; issue #12): the strict sliding window by default, the other
//! algorithms when asked for, `Retry-After` only when asked for, spurious 429s,
//! and `max_window` in the stats.
//!
//! Assertions are on counts and outcomes. Where an outcome depends on requests
//! landing within one second of each other (true on loopback by a factor of
//! hundreds), the test measures that they did and otherwise only checks the
//! bound that holds whatever the timing.

use std::time::{Duration, Instant};

use crate::util::codes;
use clap::Parser;
use connect_provision::cli::{Cli, Command};
use connect_provision::sandbox::{
    ConfigPatch, LimitAlgorithm, LiveConfig, Sandbox, SandboxConfig, Stats,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::util::{
    Run, client, create, fault_sequence, get_json, post_control, sandbox, session, single_error,
    token, user,
};

/// Comfortably under the 1 s window: requests sent this fast share one window.
const WITHIN_A_WINDOW: Duration = Duration::from_millis(800);

/// Sends `n` creates one after the other; returns their statuses.
async fn statuses(
    c: &reqwest::Client,
    sb: &Sandbox,
    t: &str,
    prefix: &str,
    n: usize,
) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let resp = create(c, sb, t, &user(&format!("{prefix}{i}")))
            .await
            .unwrap();
        out.push(resp.status());
    }
    out
}

/// Sends `n` creates at once (one task each); returns how many got 200 and 429.
async fn burst(c: &reqwest::Client, sb: &Sandbox, t: &str, prefix: &str, n: usize) -> (u64, u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, url, t) = (c.clone(), sb.url(), t.to_owned());
        let body = user(&format!("{prefix}{i}"));
        tasks.spawn(async move {
            c.post(format!("{url}{}", crate::util::USERS_PATH))
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let (mut ok, mut throttled) = (0, 0);
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, throttled)
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn configure(c: &reqwest::Client, sb: &Sandbox, patch: serde_json::Value) -> LiveConfig {
    let resp = post_control(c, sb, "/_sandbox/config", Some(patch.clone())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{patch}");
    resp.json().await.unwrap()
}

/// Asserts a 429 in the single-error shape, and whether it had `Retry-After: 1`.
async fn assert_throttled(resp: reqwest::Response, retry_after: bool) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = resp.headers().get("retry-after").cloned();
    if retry_after {
        assert_eq!(header.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
    } else {
        assert_eq!(header, None);
    }
    let e = single_error(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(e.error.code, codes::RETRY_LATER);
    assert!(e.meta.is_none(), "a 429 names no parameter: {e:?}");
}

// --- defaults and Retry-After ----------------------------------------------

#[tokio::test]
async fn defaults_are_the_sliding_window_without_retry_after() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(2),
        ..Default::default()
    })
    .await;
    let c = client();
    let live: LiveConfig = get_json(&c, &sb, "/_sandbox/config").await;
    assert_eq!(live.rate_limit_algorithm, LimitAlgorithm::SlidingWindow);
    assert!(!live.retry_after);
    assert_eq!(live.throttle_rate, 0.0);
    // As JSON the algorithm is its command-line name.
    let raw: serde_json::Value = get_json(&c, &sb, "/_sandbox/config").await;
    assert_eq!(raw["rate_limit_algorithm"], "sliding-window");
    assert_eq!(raw["retry_after"], false);

    let t = token(&c, &sb).await;
    let started = Instant::now();
    let mut refused = None;
    for i in 0..3 {
        let resp = create(&c, &sb, &t, &user(&format!("d{i}"))).await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
        }
    }
    if started.elapsed() < WITHIN_A_WINDOW {
        let resp = refused.expect("the third request within a second is refused");
        assert_throttled(resp, false).await;
    }
}

#[tokio::test]
async fn retry_after_is_sent_only_when_asked_for() {
    // throttle_rate 1 makes every users request a 429 whatever the timing.
    let (sb, c, t) = session(SandboxConfig {
        throttle_rate: 1.0,
        retry_after: true,
        ..Default::default()
    })
    .await;
    assert_throttled(create(&c, &sb, &t, &user("a")).await.unwrap(), true).await;

    let live = configure(&c, &sb, json!({"retry_after": false})).await;
    assert!(!live.retry_after);
    assert_throttled(create(&c, &sb, &t, &user("b")).await.unwrap(), false).await;

    sb.set_retry_after(true);
    assert!(
        get_json::<LiveConfig>(&c, &sb, "/_sandbox/config")
            .await
            .retry_after
    );
    assert_throttled(create(&c, &sb, &t, &user("c")).await.unwrap(), true).await;

    // The limiter's own 429s follow the same setting.
    let live = configure(
        &c,
        &sb,
        json!({"throttle_rate": 0.0, "rate_limit": 1, "retry_after": false}),
    )
    .await;
    assert_eq!((live.throttle_rate, live.rate_limit), (0.0, Some(1)));
    let started = Instant::now();
    let first = create(&c, &sb, &t, &user("d")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = create(&c, &sb, &t, &user("e")).await.unwrap();
    sb.set_retry_after(true);
    let third = create(&c, &sb, &t, &user("f")).await.unwrap();
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_throttled(second, false).await;
        assert_throttled(third, true).await;
    }
}

// --- algorithms --------------------------------------------------------------

#[tokio::test]
async fn switching_the_algorithm_through_the_config_endpoint_takes_effect() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(4),
        ..Default::default()
    })
    .await;

    // Token bucket (4/s, burst 4): a burst of 4 passes, the 5th is refused, and
    // one interval (250 ms) later one more slot is free.
    let live = configure(&c, &sb, json!({"rate_limit_algorithm": "token-bucket"})).await;
    assert_eq!(
        (live.rate_limit, live.rate_limit_algorithm),
        (Some(4), LimitAlgorithm::TokenBucket)
    );
    let started = Instant::now();
    let got = statuses(&c, &sb, &t, "tb", 5).await;
    assert_eq!(count(&got[..4], StatusCode::OK), 4, "{got:?}");
    if started.elapsed() < Duration::from_millis(200) {
        assert_eq!(got[4], StatusCode::TOO_MANY_REQUESTS);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(statuses(&c, &sb, &t, "tb-later", 1).await, [StatusCode::OK]);

    // Sliding window (restarted, nothing booked): 4 pass, the 5th is refused,
    // and it stays refused until a second after the first, where the token
    // bucket had a slot free after 250 ms.
    let live = configure(&c, &sb, json!({"rate_limit_algorithm": "sliding-window"})).await;
    assert_eq!(live.rate_limit_algorithm, LimitAlgorithm::SlidingWindow);
    let started = Instant::now();
    let got = statuses(&c, &sb, &t, "sw", 5).await;
    assert_eq!(count(&got[..4], StatusCode::OK), 4, "{got:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = statuses(&c, &sb, &t, "sw-later", 1).await;
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!(got[4], StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(later, [StatusCode::TOO_MANY_REQUESTS]);
    }

    // Fixed window, through the handle: 4 pass in the window the switch opened.
    sb.set_rate_limit_algorithm(LimitAlgorithm::FixedWindow);
    let live = sb.configure(&ConfigPatch::default()).unwrap();
    assert_eq!(live.rate_limit_algorithm, LimitAlgorithm::FixedWindow);
    let started = Instant::now();
    let got = statuses(&c, &sb, &t, "fw", 6).await;
    assert_eq!(count(&got[..4], StatusCode::OK), 4, "{got:?}");
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!(&got[4..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    }

    // An unknown algorithm is refused and changes nothing.
    let resp = post_control(
        &c,
        &sb,
        "/_sandbox/config",
        Some(json!({"rate_limit_algorithm": "leaky-bucket"})),
    )
    .await;
    let _ = single_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        get_json::<LiveConfig>(&c, &sb, "/_sandbox/config")
            .await
            .rate_limit_algorithm,
        LimitAlgorithm::FixedWindow
    );
    let s = sb.stats();
    assert_eq!(s.created + s.throttled, s.users_requests);
    assert_eq!(s.spurious_429, 0);
}

#[tokio::test]
async fn a_burst_over_the_limit_gets_exactly_n_through_the_sliding_window() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(5),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (ok, throttled) = burst(&c, &sb, &t, "b", 20).await;
    assert_eq!(ok + throttled, 20);
    let s = sb.stats();
    assert_eq!((s.created, s.throttled), (ok, throttled));
    if started.elapsed() < WITHIN_A_WINDOW {
        assert_eq!((ok, throttled), (5, 15));
        // Refused requests count in max_window too.
        assert_eq!(s.max_window, 20);
    } else {
        assert!((5..=20).contains(&ok), "{ok}");
    }
}

// --- max_window ----------------------------------------------------------------

#[tokio::test]
async fn max_window_reports_the_busiest_second() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    assert_eq!(sb.stats().max_window, 0);

    let started = Instant::now();
    let (ok, _) = burst(&c, &sb, &t, "first", 12).await;
    assert_eq!(ok, 12);
    let first_burst_fast = started.elapsed() < WITHIN_A_WINDOW;
    let s = sb.stats();
    if first_burst_fast {
        assert_eq!(s.max_window, 12);
    } else {
        assert!((1..=12).contains(&s.max_window), "{}", s.max_window);
    }
    // The stats endpoint says the same.
    assert_eq!(
        get_json::<Stats>(&c, &sb, "/_sandbox/stats").await,
        sb.stats()
    );

    // Unauthenticated requests never reach the limiter and are not counted.
    for i in 0..5 {
        let resp = create(&c, &sb, "not-a-token", &user(&format!("x{i}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sb.stats().max_window, s.max_window);

    // A smaller burst more than a second later does not add up with the first:
    // it is the most in one window, not a total.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, _) = burst(&c, &sb, &t, "second", 7).await;
    assert_eq!(ok, 7);
    let s = sb.stats();
    assert_eq!(s.users_requests, 24);
    if first_burst_fast {
        assert_eq!(s.max_window, 12);
    }

    // A reset clears it.
    let resp = post_control(&c, &sb, "/_sandbox/reset", None).await;
    assert!(resp.status().is_success());
    assert_eq!(sb.stats().max_window, 0);
    let t = token(&c, &sb).await;
    create(&c, &sb, &t, &user("after")).await.unwrap();
    assert_eq!(sb.stats().max_window, 1);
}

// --- spurious 429s ------------------------------------------------------------

#[tokio::test]
async fn throttle_rate_one_refuses_everything_and_zero_nothing() {
    let (sb, c, t) = session(SandboxConfig {
        throttle_rate: 1.0,
        ..Default::default()
    })
    .await;
    for i in 0..10 {
        let resp = create(&c, &sb, &t, &user(&format!("s{i}"))).await.unwrap();
        assert_throttled(resp, false).await;
    }
    let s = sb.stats();
    assert_eq!((s.throttled, s.spurious_429, s.created), (10, 10, 0));
    assert!(sb.users().is_empty());

    let live = configure(&c, &sb, json!({"throttle_rate": 0.0})).await;
    assert_eq!(live.throttle_rate, 0.0);
    let got = statuses(&c, &sb, &t, "s", 10).await;
    assert_eq!(count(&got, StatusCode::OK), 10, "{got:?}");
    let s = sb.stats();
    assert_eq!((s.throttled, s.spurious_429, s.created), (10, 10, 10));

    // Through the handle, with the same validation as the endpoint.
    sb.set_throttle_rate(1.0).unwrap();
    assert_throttled(create(&c, &sb, &t, &user("h")).await.unwrap(), false).await;
    assert!(sb.set_throttle_rate(1.5).is_err());
    let resp = post_control(
        &c,
        &sb,
        "/_sandbox/config",
        Some(json!({"throttle_rate": -0.1})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        get_json::<LiveConfig>(&c, &sb, "/_sandbox/config")
            .await
            .throttle_rate,
        1.0
    );
}

#[tokio::test]
async fn spurious_429s_use_the_seeded_fault_dice() {
    let cfg = |seed| SandboxConfig {
        throttle_rate: 0.3,
        fail_rate: 0.2,
        seed: Some(seed),
        ..Default::default()
    };
    let a = sandbox(cfg(77)).await;
    let b = sandbox(cfg(77)).await;
    let seq_a = fault_sequence(&a).await;
    assert_eq!(seq_a, fault_sequence(&b).await);
    let n429 = seq_a.iter().filter(|o| *o == "429").count() as u64;
    assert!(n429 > 0, "{seq_a:?}");
    assert!(seq_a.iter().any(|o| o == "200"), "{seq_a:?}");
    let s = a.stats();
    assert_eq!((s.spurious_429, s.throttled), (n429, n429));
    // A reset replays the same fates.
    let c = client();
    post_control(&c, &a, "/_sandbox/reset", None).await;
    assert_eq!(fault_sequence(&a).await, seq_a);
}

// --- command line ---------------------------------------------------------------

fn sandbox_args(extra: &[&str]) -> connect_provision::cli::SandboxArgs {
    let mut argv = vec!["connect-provision", "sandbox"];
    argv.extend(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Sandbox(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn sandbox_flags_parse_with_strict_defaults() {
    let args = sandbox_args(&[]);
    assert_eq!(args.rate_limit_algorithm, LimitAlgorithm::SlidingWindow);
    assert!(!args.retry_after);
    assert_eq!(args.throttle_rate, 0.0);

    let args = sandbox_args(&[
        "--rate-limit",
        "50",
        "--rate-limit-algorithm",
        "token-bucket",
        "--retry-after",
        "--throttle-rate",
        "0.01",
    ]);
    assert_eq!(args.rate_limit, Some(50));
    assert_eq!(args.rate_limit_algorithm, LimitAlgorithm::TokenBucket);
    assert!(args.retry_after);
    assert_eq!(args.throttle_rate, 0.01);
    assert_eq!(
        sandbox_args(&["--rate-limit-algorithm", "fixed-window"]).rate_limit_algorithm,
        LimitAlgorithm::FixedWindow
    );
}

#[test]
fn bad_sandbox_limit_flags_are_usage_errors() {
    Run::cli(["sandbox", "--rate-limit-algorithm", "leaky-bucket"])
        .output()
        .expect_code(2)
        .expect_stderr("--rate-limit-algorithm")
        .expect_stderr("sliding-window");
    Run::cli(["sandbox", "--throttle-rate", "2"])
        .output()
        .expect_code(2)
        .expect_stderr("--throttle-rate");
    Run::cli(["sandbox", "--help"])
        .output()
        .expect_code(0)
        .expect_stdout("--rate-limit-algorithm")
        .expect_stdout("--retry-after")
        .expect_stdout("--throttle-rate");
}
