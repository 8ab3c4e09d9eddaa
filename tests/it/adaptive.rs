//! `--rate auto` and the circuit breaker against a real sandbox (issue #7).
//!
//! Only counts, bounds and outcomes are asserted: how close the run comes to
//! the partner's limit, and how fast it gets there, is a benchmark figure
//! (bench/limits.py), not something `cargo test` can measure on a shared or
//! slow machine. A slow machine only lowers the rates, so every bound here is
//! one a slower run still meets.

use std::time::Duration;

use connect_provision::sandbox::{LimitAlgorithm, Sandbox, SandboxConfig};

use crate::util::{CliOutput, Fixture, Reports, Run, TestDir, sandbox};

/// Start `run`, calling `at` with the sandbox every 100 ms until it exits.
async fn run_watching(run: Run, sb: &Sandbox, mut at: impl FnMut(&Sandbox)) -> CliOutput {
    let mut running = run.spawn();
    while running.running() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        at(sb);
    }
    running.wait(Duration::ZERO)
}

/// The timeline's lines after `from` seconds: (requests sent, 429s).
fn steady(lines: &[std::collections::BTreeMap<String, String>], from: u64) -> (u64, u64) {
    let n = |l: &std::collections::BTreeMap<String, String>, c: &str| -> u64 {
        l[c].parse().unwrap_or(0)
    };
    lines
        .iter()
        .filter(|l| n(l, "second") >= from)
        .fold((0, 0), |(s, t), l| {
            (s + n(l, "sent"), t + n(l, "throttled_429"))
        })
}

// Issues #7, #19: a sandbox limited to 40/s and `--rate auto --rate-max 200`:
// the rate climbs until the partner pushes back, then holds at the limit:
// past the start, 429s stay under 2% of requests (a probe now and then), the
// rate it reports is below the limit + 1, and every row is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rate_converges_on_the_partner_limit() {
    converges(LimitAlgorithm::SlidingWindow, false).await;
}

// The same against a partner that counts per aligned second and says
// `Retry-After: 1` (two 429s close together hold the whole pool), and
// against a token bucket, whose credit lets a probe above the limit pass
// for a while: the rate it reports is still below the limit + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rate_converges_on_a_fixed_window_with_retry_after() {
    converges(LimitAlgorithm::FixedWindow, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rate_converges_on_a_token_bucket() {
    converges(LimitAlgorithm::TokenBucket, false).await;
}

async fn converges(algorithm: LimitAlgorithm, retry_after: bool) {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(40),
        rate_limit_algorithm: algorithm,
        retry_after,
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(1500);
    let done = fx
        .provision(&sb, &["--rate", "auto", "--rate-max", "200"])
        .await;
    let st = sb.stats();
    let summary = &done.summary;
    assert_eq!(summary.requests_sent, st.users_requests, "{st:?}");
    assert_eq!(summary.throttled_429, st.throttled, "{st:?}");
    // Every 429 was retried and nothing else went wrong: one request per
    // row plus one per 429.
    assert_eq!(summary.requests_sent, fx.rows + summary.throttled_429);
    // It found the limit (40/s is far below what any machine sends over
    // loopback)...
    assert!(
        summary.throttled_429 > 0,
        "{algorithm}: never pushed back: {st:?}"
    );
    // ...and, past the slow start, did not keep running into it: under 2 %
    // of requests, or 5 % against a token bucket, whose credit a run this
    // short pays to find (probes pass on it until it drains).
    let (sent, throttled) = steady(&done.timeline, 15);
    let share = if algorithm == LimitAlgorithm::TokenBucket {
        20
    } else {
        50
    };
    assert!(
        throttled * share <= sent,
        "{algorithm}: 429s {throttled} of {sent} requests after 15 s"
    );
    let rate = summary.rate.as_ref().expect("a live run reports its rate");
    assert_eq!(rate.mode, "auto");
    assert_eq!(rate.max_per_second, Some(200));
    // Never above the limit + 1 (the pacer sends ⌊R⌋ a second); a slow
    // machine settles lower. Against a token bucket, a loaded machine sends
    // under its rate and the bucket banks the difference, so a probe at +1
    // can pass on that credit near the end of a run this short: 41 at most
    // there (bench/limits.py measures 40 on a quiet machine).
    let settled = rate.final_per_second;
    let below = if algorithm == LimitAlgorithm::TokenBucket {
        42.0
    } else {
        41.0
    };
    assert!(
        (1.0..below).contains(&settled),
        "{algorithm}: settled at {settled}/s for a 40/s limit"
    );
    sb.shutdown().await;
}

// Issue #19: a partner that answers 1 % of requests 429 and 3 % 500/503 for
// reasons of its own, under a 40/s limit. Those spurious 429s are taken for
// noise (timeline.csv counts them), so the rate rises from its start
// instead of taking each for a new ceiling; nothing is lost or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rate_rises_through_spurious_429s_and_5xx() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(40),
        throttle_rate: 0.01,
        fail_rate: 0.03,
        seed: Some(19),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(1500);
    let args = ["--rate", "auto", "--rate-start", "10", "--rate-max", "200"];
    let done = fx.provision(&sb, &args).await;
    let st = sb.stats();
    assert_eq!(st.duplicate_creations, 0, "{st:?}");
    assert!(st.spurious_429 > 0, "the test would be vacuous: {st:?}");
    let noise: u64 = done
        .timeline
        .iter()
        .map(|l| l["noise_429"].parse::<u64>().unwrap())
        .sum();
    assert!(noise > 0, "no 429 was taken for noise: {st:?}");
    let rate = done.summary.rate.expect("a live run reports its rate");
    assert!(
        rate.final_per_second > 10.0,
        "the rate ended at {} from a start of 10",
        rate.final_per_second
    );
    sb.shutdown().await;
}

// Issue #7: when the partner's limit drops mid-run, the rate follows it down:
// the 429s come in a burst right after the drop, then hardly any. Measured in
// rows, not seconds: at the new 20/s limit, 100 rows take at least 5 s
// however fast or slow the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rate_follows_a_limit_that_drops() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(60),
        ..Default::default()
    })
    .await;
    let fx = Fixture::users(700);
    // 429s so far when the limit dropped, and once 100 more rows were created.
    let mut at_drop: Option<(u64, u64)> = None;
    let mut after_100_rows: Option<u64> = None;
    let run = fx.live(&sb).rate("auto").args(["--rate-max", "200"]);
    let out = run_watching(run, &sb, |sb| {
        let st = sb.stats();
        match at_drop {
            None if st.created >= 300 => {
                sb.set_rate_limit(Some(20));
                at_drop = Some((st.created, sb.stats().throttled));
            }
            Some((created, _)) if after_100_rows.is_none() && st.created >= created + 100 => {
                after_100_rows = Some(st.throttled);
            }
            _ => {}
        }
    })
    .await;
    out.expect_code(0);
    let done = fx.reports().assert_live(&sb, fx.rows);
    let (_, at_drop) = at_drop.expect("the limit was dropped mid-run");
    let after_100 = after_100_rows.expect("100 rows were created after the drop");
    let at_end = sb.stats().throttled;
    assert!(after_100 > at_drop, "the drop was felt");
    assert!(
        at_end - after_100 <= (after_100 - at_drop).max(4),
        "429s kept coming: {at_drop} at the drop, {after_100} 100 rows later, {at_end} at the end"
    );
    assert_eq!(done.summary.throttled_429, at_end);
    let settled = done
        .summary
        .rate
        .expect("a live run reports its rate")
        .final_per_second;
    assert!(settled <= 26.0, "settled at {settled}/s for a 20/s limit");
    sb.shutdown().await;
}

// Issue #7: a mapping that makes the server reject every row trips the
// breaker within its window; results.csv still has every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mapping_trips_the_breaker() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let input = dir.join("export.csv");
    // `Country` looks like a locale to a careless mapping: "US" is a
    // well-formed tag (so not invalid locally) but no language (rejected).
    let mut s = String::from("user_id,first_name,Country\n");
    for i in 1..=2000 {
        s.push_str(&format!("x{i:05},Ann,US\n"));
    }
    std::fs::write(&input, s).unwrap();
    let out_dir = dir.join("out");
    let out = Run::live(&sb)
        .input(&input)
        .args(["--map", "locale=Country", "--concurrency", "50"])
        .rate(2000)
        .out(&out_dir)
        .output_async()
        .await;
    out.expect_code(3);
    let stderr = out.stderr();
    assert!(stderr.contains("circuit breaker"), "{stderr}");
    assert!(
        stderr.contains("unknown language 'us'"),
        "names the dominant error: {stderr}"
    );
    let rows = Reports::at(&out_dir).assert_live(&sb, 2000).rows;
    let rejected = rows.iter().filter(|r| r.status == "rejected").count();
    // Tripped within the default 200-row window, plus what was already on
    // its way when it tripped: the 50 requests in flight, and outcomes queued
    // for the recorder but not yet judged (a row task frees its permit once
    // its outcome is queued; the queue holds 256). It trips as soon as more
    // than half of a window's rows are known to be rejected, even while
    // some rows of that window are still in flight: at least 101.
    let on_the_way = 50 + 256;
    assert!(
        (101..=200 + on_the_way).contains(&rejected),
        "rejected {rejected}"
    );
    let not_sent = rows
        .iter()
        .filter(|r| r.status == "failed" && r.error.contains("circuit breaker"))
        .count();
    assert_eq!(rejected + not_sent, 2000);
    assert!(sb.stats().users_requests <= 200 + on_the_way as u64);
    // The unsent rows are in failures.csv for a rerun once the mapping is
    // fixed (with the rejected ones: assert_live counted them).
    sb.shutdown().await;
}
