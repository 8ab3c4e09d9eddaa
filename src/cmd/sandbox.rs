//! `sandbox`: run the fake Connect API in the foreground until SIGINT/SIGTERM.

use crate::cli::SandboxArgs;
use crate::cmd::signals::Signals;
use crate::error::Error;
use crate::exit::Exit;
use crate::sandbox::{Sandbox, SandboxConfig};

/// `--long-distance-prefixes`, or the sandbox's default rule.
fn cfg_prefixes(args: &SandboxArgs) -> Vec<String> {
    match &args.long_distance_prefixes {
        Some(given) => given
            .iter()
            .filter(|p| !p.trim().is_empty())
            .cloned()
            .collect(),
        None => SandboxConfig::default().long_distance_prefixes,
    }
}

/// Serve until a signal; prints the URL, the credentials and a first call.
pub(crate) async fn serve(args: &SandboxArgs) -> Result<Exit, Error> {
    let cfg = SandboxConfig {
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        token_ttl: args.token_ttl,
        rate_limit: args.rate_limit,
        rate_limit_algorithm: args.rate_limit_algorithm,
        rate_limit_schedule: args.rate_limit_schedule.clone(),
        retry_after: args.retry_after,
        throttle_rate: args.throttle_rate,
        latency: args.latency,
        latency_jitter: args.latency_jitter,
        latency_p99: args.latency_p99,
        slow_start: args.slow_start,
        capacity: args.capacity,
        fail_rate: args.fail_rate,
        reset_rate: args.reset_rate,
        commit_drop_rate: args.commit_drop_rate,
        seed: args.seed,
        long_distance_prefixes: cfg_prefixes(args),
    };
    let sandbox = Sandbox::start(cfg, args.listen)
        .await
        .map_err(|source| Error::Sandbox {
            addr: args.listen,
            source,
        })?;
    let url = sandbox.url();
    println!("sandbox listening on {url}");
    println!("  client_id:     {}", args.client_id);
    println!("  client_secret: {}   (sandbox only)", args.client_secret);
    println!(
        "  token TTL:     {}",
        humantime::format_duration(args.token_ttl)
    );
    match args.rate_limit {
        Some(n) => println!(
            "  rate limit:    {n}/s ({}), 429 {} Retry-After",
            args.rate_limit_algorithm,
            if args.retry_after { "with" } else { "without" }
        ),
        None => println!("  rate limit:    none"),
    }
    if let Some(schedule) = &args.rate_limit_schedule {
        println!("  limit changes: {schedule} (offset:limit, from the first users request)");
    }
    let latency = humantime::format_duration(args.latency);
    match (args.latency_p99, args.latency_jitter) {
        (Some(p99), _) => println!(
            "  latency:       log-normal, median {latency}, p99 {}",
            humantime::format_duration(p99)
        ),
        (None, j) if j > 0.0 => println!("  latency:       {latency} ± {:.0} %", j * 100.0),
        (None, _) if !args.latency.is_zero() => println!("  latency:       {latency}"),
        _ => {}
    }
    if let Some(s) = args.slow_start {
        println!(
            "  slow start:    {} for requests in the first {}",
            humantime::format_duration(s.delay),
            humantime::format_duration(s.window)
        );
    }
    if let Some(n) = args.capacity {
        println!("  capacity:      {n} users requests started per second (queued, never 429)");
    }
    let far = cfg_prefixes(args);
    if far.is_empty() {
        println!("  long distance: none");
    } else {
        println!("  long distance: postal codes starting {}", far.join(", "));
    }
    println!("try: curl -s -X POST {url}/v2/oauth/token -H 'Content-Type: application/json' \\");
    println!(
        "       -d '{{\"client_id\":\"{}\",\"client_secret\":\"{}\",\"grant_type\":\"client_credentials\"}}'",
        args.client_id, args.client_secret
    );
    println!("stats: {url}/_sandbox/stats, {url}/_sandbox/seconds   (Ctrl-C to stop)");
    let signal = Signals::install().next().await;
    tracing::debug!(signal, "signal received");
    eprintln!("stopping sandbox");
    sandbox.shutdown().await;
    Ok(Exit::Success)
}
