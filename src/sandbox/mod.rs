//! The sandbox: a faithful fake of the Instacart Connect API served over real HTTP
//! on loopback, so the job, its tests and a first run need no credentials and no
//! network (docs/sandbox.md "The sandbox").
//!
//! It implements `POST /v2/oauth/token`, `POST /v2/fulfillment/users` and
//! `POST /v2/fulfillment/users/{user_id}/addresses` (an upsert: creates the
//! user or finds it, validates the address, refuses P.O. boxes, flags
//! long-distance postal codes by prefix) with the documented validation and
//! error shapes, plus the faults a real partner API
//! shows: a per-second rate limit (429), latency, random 500/503, spurious 429s,
//! connections dropped unanswered (reset), and the ambiguous case where the user
//! is stored but the answer is lost (commit-drop). `/_sandbox/*` endpoints expose
//! what the server saw and change the faults while it runs.
//!
//! The rate limit is as strict as the partner may be. Connect publishes neither
//! its threshold nor its algorithm, nor any `Retry-After`, so by default the
//! sandbox admits at most N users requests in *any* sliding 1-second window
//! ([`LimitAlgorithm::SlidingWindow`], the strictest reading) and answers the
//! rest 429 with no `Retry-After`. A client that keeps its throughput here keeps
//! it against any laxer limiter. `--rate-limit-algorithm fixed-window|token-bucket`
//! selects a laxer one, `--retry-after` adds `Retry-After: 1`, `--throttle-rate`
//! answers a random share of admitted requests 429 anyway, and
//! `max_window` in the stats reports the busiest sliding second a client produced.
//!
//! Scenarios for a client's rate controller and for slow partners (issues #19
//! and #23), all counted from the first users request (authenticated, reaching
//! the limiter) and restarted by `POST /_sandbox/reset`:
//!
//! - `--rate-limit-schedule 30s:13,90s:40` changes the limit at those offsets
//!   (it needs `--rate-limit` to start from). A change keeps what the limiter
//!   has booked: after a drop from 40 to 13 the last second's 40 still count,
//!   so a client must wait out the window. `GET /_sandbox/config` reports the
//!   limit in force;
//! - `--capacity N` starts at most N users requests per second, FIFO, after the
//!   rate limit: a burst queues and its latency grows, never a 429;
//! - `--slow-start WINDOW:DELAY`: requests arriving within WINDOW take DELAY
//!   instead of their latency;
//! - `--latency-jitter F` spreads the latency uniformly over
//!   `latency × [1 − F, 1 + F]`; `--latency-p99 DUR` makes it log-normal with
//!   median `--latency` and that 99th percentile. Latencies come from their own
//!   generator (seeded from `--seed`), so seeded fault sequences do not change;
//! - `GET /_sandbox/seconds` counts, per second since the first users request
//!   (the last hour of them), the requests reaching the limiter, those it
//!   admitted, its 429s, the spurious 429s, the injected failures, and the
//!   limit in force; `max_in_flight` in the stats is the most users requests
//!   inside the server at once.
//!
//! Layout: `routes` (endpoints, in stage order) → `validate` (payload rules),
//! `state` (tokens, users, limiter, dice, counters), `limit` (the three limit
//! algorithms and the peak-window meter), `schedule` (limit changes),
//! `service` (capacity queue, slow start, latency distributions), `seconds`
//! (the per-second table), `error` (documented error bodies), `server` (accept
//! loop that can drop a connection).

mod error;
mod limit;
mod routes;
mod schedule;
mod seconds;
mod server;
mod service;
mod state;
mod validate;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::model::{AddressAnswer, CreateUser};

pub use limit::LimitAlgorithm;
pub(crate) use schedule::RateSchedule;
pub use seconds::SecondCounts;
pub use service::SlowStart;
pub use state::{ConfigPatch, LiveConfig, Stats};

pub(crate) use routes::BodyRoute;

/// The statuses one fresh sandbox answers `body` sent twice to `route`,
/// past the token, limiter and fault stages, and the users it then holds
/// (the fuzz targets' entry, `crate::fuzzing`).
pub(crate) fn answer_twice(
    route: BodyRoute,
    query: Option<&str>,
    user_id: &str,
    body: &[u8],
) -> ([u16; 2], usize) {
    let sh = state::Shared::new(&SandboxConfig::default());
    let once = || routes::answer_body(&sh, route, query, user_id, body).as_u16();
    let first = once();
    ([first, once()], sh.users().len())
}

/// How long `shutdown` lets in-flight requests finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of a sandbox server (the `sandbox` subcommand's options).
#[derive(Clone)]
pub struct SandboxConfig {
    /// Accepted `client_id` (default `sandbox-client`).
    pub client_id: String,
    /// Accepted `client_secret` (default `sandbox-secret`); redacted in `Debug`.
    pub client_secret: String,
    /// Lifetime of issued tokens (default 24 h; sub-second values work for tests).
    pub token_ttl: Duration,
    /// Users requests per second before 429 (`None`: unlimited).
    pub rate_limit: Option<u32>,
    /// How `rate_limit` is counted (default: the strictest, a sliding 1 s window).
    pub rate_limit_algorithm: LimitAlgorithm,
    /// Changes of `rate_limit` at offsets from the first users request (needs a
    /// `rate_limit` to start from). A change keeps the arrivals already booked.
    pub rate_limit_schedule: Option<RateSchedule>,
    /// Whether a 429 carries `Retry-After: 1` (default: no, as Connect documents none).
    pub retry_after: bool,
    /// Probability of a spurious 429 on a users request the limiter admitted
    /// (nothing stored); rolled on the same seeded dice as the other faults.
    pub throttle_rate: f64,
    /// Delay added before answering a users request: the fixed latency, the
    /// centre of the jitter band, or the median of the log-normal.
    pub latency: Duration,
    /// Spread of the latency: uniform in `latency × [1 − F, 1 + F]` (0..=1; 0: none).
    pub latency_jitter: f64,
    /// Heavy tail: latency log-normal with median `latency` and this 99th
    /// percentile (≥ `latency`); excludes `latency_jitter`.
    pub latency_p99: Option<Duration>,
    /// A cold backend: requests arriving within its window of the first users
    /// request take its delay instead of their latency.
    pub slow_start: Option<SlowStart>,
    /// Users requests the server starts per second, FIFO; never a 429, the
    /// queue's wait adds to the latency (`None`: unlimited).
    pub capacity: Option<u32>,
    /// Probability of a random 500 or 503 on a users request (nothing stored).
    pub fail_rate: f64,
    /// Probability of dropping a users request's connection unanswered (nothing stored).
    pub reset_rate: f64,
    /// Probability of storing the user and then dropping the connection unanswered.
    pub commit_drop_rate: f64,
    /// Seed for the fault dice, making the n-th request's fate reproducible.
    pub seed: Option<u64>,
    /// Postal-code prefixes whose addresses the address endpoint flags
    /// `long_distance_delivery` (case and spaces ignored; default
    /// `DEFAULT_LONG_DISTANCE_PREFIXES`: Alaska and Canada's north).
    pub long_distance_prefixes: Vec<String>,
}

/// The default long-distance rule: Alaska's ZIP codes (995–999) and the
/// Canadian postal districts of the territories (X: Northwest Territories
/// and Nunavut, Y: Yukon). A deterministic stand-in for "more than 30
/// minutes from the closest stores".
pub(crate) const DEFAULT_LONG_DISTANCE_PREFIXES: [&str; 7] =
    ["995", "996", "997", "998", "999", "X", "Y"];

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            client_id: "sandbox-client".to_owned(),
            client_secret: "sandbox-secret".to_owned(),
            token_ttl: Duration::from_secs(24 * 60 * 60),
            rate_limit: None,
            rate_limit_algorithm: LimitAlgorithm::SlidingWindow,
            rate_limit_schedule: None,
            retry_after: false,
            throttle_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: 0.0,
            latency_p99: None,
            slow_start: None,
            capacity: None,
            fail_rate: 0.0,
            reset_rate: 0.0,
            commit_drop_rate: 0.0,
            seed: None,
            long_distance_prefixes: DEFAULT_LONG_DISTANCE_PREFIXES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("token_ttl", &self.token_ttl)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_algorithm", &self.rate_limit_algorithm)
            .field("rate_limit_schedule", &self.rate_limit_schedule)
            .field("retry_after", &self.retry_after)
            .field("throttle_rate", &self.throttle_rate)
            .field("latency", &self.latency)
            .field("latency_jitter", &self.latency_jitter)
            .field("latency_p99", &self.latency_p99)
            .field("slow_start", &self.slow_start)
            .field("capacity", &self.capacity)
            .field("fail_rate", &self.fail_rate)
            .field("reset_rate", &self.reset_rate)
            .field("commit_drop_rate", &self.commit_drop_rate)
            .field("seed", &self.seed)
            .field("long_distance_prefixes", &self.long_distance_prefixes)
            .finish()
    }
}

/// A sandbox setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SandboxError {
    /// A fault rate outside 0..=1.
    #[error("{name} must be a probability between 0 and 1, got {value}")]
    Probability {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A rate limit of 0.
    #[error("rate limit must be at least 1 request per second")]
    ZeroRateLimit,
    /// A token lifetime of 0.
    #[error("token ttl must be greater than zero")]
    ZeroTokenTtl,
    /// A `--rate-limit-schedule` that cannot be read or cannot work.
    #[error("invalid rate-limit schedule '{spec}': {reason}")]
    Schedule {
        /// The schedule as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A schedule without a rate limit to start from.
    #[error("a rate-limit schedule needs a rate limit to start from (--rate-limit)")]
    ScheduleWithoutLimit,
    /// A latency jitter outside 0..=1.
    #[error("latency jitter must be between 0 and 1, got {0}")]
    Jitter(f64),
    /// Both latency models at once.
    #[error("latency jitter and latency p99 are two latency models; choose one")]
    JitterWithP99,
    /// A p99 below the median latency.
    #[error(
        "latency p99 ({}) must be at least the latency, its median ({})",
        humantime::format_duration(*.p99),
        humantime::format_duration(*.latency)
    )]
    P99BelowLatency {
        /// The latency (the median).
        latency: Duration,
        /// The p99 asked for.
        p99: Duration,
    },
    /// A p99 with no latency to be its median.
    #[error("latency p99 needs a latency above zero to be its median")]
    P99WithoutLatency,
    /// A `--slow-start` that cannot be read.
    #[error("invalid slow start '{spec}': {reason}")]
    SlowStart {
        /// The setting as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A capacity of 0.
    #[error("capacity must be at least 1 request per second")]
    ZeroCapacity,
}

fn check_probability(name: &'static str, value: f64) -> Result<(), SandboxError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SandboxError::Probability { name, value })
    }
}

impl SandboxConfig {
    /// Checks the settings; `Sandbox::start` refuses a config that fails this.
    fn validate(&self) -> Result<(), SandboxError> {
        check_probability("throttle rate", self.throttle_rate)?;
        check_probability("fail rate", self.fail_rate)?;
        check_probability("reset rate", self.reset_rate)?;
        check_probability("commit-drop rate", self.commit_drop_rate)?;
        if self.rate_limit == Some(0) {
            return Err(SandboxError::ZeroRateLimit);
        }
        if self.rate_limit_schedule.is_some() && self.rate_limit.is_none() {
            return Err(SandboxError::ScheduleWithoutLimit);
        }
        if self.token_ttl.is_zero() {
            return Err(SandboxError::ZeroTokenTtl);
        }
        self.latency_settings().check()?;
        if self.capacity == Some(0) {
            return Err(SandboxError::ZeroCapacity);
        }
        Ok(())
    }

    fn latency_settings(&self) -> service::Latency {
        service::Latency {
            latency: self.latency,
            jitter: self.latency_jitter,
            p99: self.latency_p99,
        }
    }
}

impl ConfigPatch {
    /// Checks the values a patch would set.
    fn check(&self) -> Result<(), SandboxError> {
        for (name, value) in [
            ("throttle_rate", self.throttle_rate),
            ("fail_rate", self.fail_rate),
            ("reset_rate", self.reset_rate),
            ("commit_drop_rate", self.commit_drop_rate),
        ] {
            if let Some(v) = value {
                check_probability(name, v)?;
            }
        }
        if self.rate_limit == Some(Some(0)) {
            return Err(SandboxError::ZeroRateLimit);
        }
        if let Some(j) = self.latency_jitter
            && !(0.0..=1.0).contains(&j)
        {
            return Err(SandboxError::Jitter(j));
        }
        if self.capacity == Some(Some(0)) {
            return Err(SandboxError::ZeroCapacity);
        }
        Ok(())
    }
}

/// A running sandbox server. Dropping it stops the server abruptly; call
/// [`Sandbox::shutdown`] to let in-flight requests finish.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    graceful: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
    accept: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks a free port) and starts serving on the
    /// current tokio runtime. A config that fails `SandboxConfig::validate` is
    /// refused with `InvalidInput`.
    pub async fn start(cfg: SandboxConfig, listen: SocketAddr) -> std::io::Result<Sandbox> {
        cfg.validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(state::Shared::new(&cfg));
        let router = routes::router(Arc::clone(&shared));
        let graceful = CancellationToken::new();
        let hard = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept = tokio::spawn(server::accept_loop(
            listener,
            router,
            graceful.clone(),
            hard.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, ?cfg, "sandbox: listening");
        Ok(Sandbox {
            addr,
            shared,
            graceful,
            hard,
            tracker,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for clients, e.g. `http://127.0.0.1:8787`. A wildcard bind
    /// (`0.0.0.0`, `::`) is reported as loopback, which is where a local client connects.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The same snapshot `GET /_sandbox/stats` returns.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Stored users in creation order (`GET /_sandbox/users`).
    pub fn users(&self) -> Vec<CreateUser> {
        self.shared.users()
    }

    /// The last validated address of each user, by `user_id`
    /// (`GET /_sandbox/addresses`).
    pub fn addresses(&self) -> Vec<AddressAnswer> {
        self.shared.addresses()
    }

    /// Per-second counts since the first users request, the last hour of them
    /// (`GET /_sandbox/seconds`).
    pub fn seconds(&self) -> Vec<SecondCounts> {
        self.shared.seconds()
    }

    /// Changes the rate limit while running (`None`: unlimited; `Some(0)` is
    /// treated as 1/s). The limit restarts with nothing booked.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.shared
            .set_limit(Some(per_second.map(|n| n.max(1))), None);
    }

    /// Changes how the rate limit is counted while running. The limit restarts
    /// with nothing booked; `max_window` keeps counting.
    pub fn set_rate_limit_algorithm(&self, algorithm: LimitAlgorithm) {
        self.shared.set_limit(None, Some(algorithm));
    }

    /// Turns `Retry-After: 1` on 429 answers on or off while running.
    pub fn set_retry_after(&self, on: bool) {
        self.shared.set_retry_after(on);
    }

    /// Changes the probability of a spurious 429 while running.
    pub fn set_throttle_rate(&self, probability: f64) -> Result<(), SandboxError> {
        self.configure(&ConfigPatch {
            throttle_rate: Some(probability),
            ..ConfigPatch::default()
        })
        .map(drop)
    }

    /// Changes faults and limits while running (`POST /_sandbox/config`). A
    /// patch that fails, alone or with the settings it leaves, changes nothing.
    pub fn configure(&self, patch: &ConfigPatch) -> Result<LiveConfig, SandboxError> {
        patch.check()?;
        self.shared.apply(patch)?;
        Ok(self.shared.live_config())
    }

    /// Invalidates every issued token (`POST /_sandbox/revoke-tokens`).
    pub fn revoke_tokens(&self) {
        self.shared.revoke_tokens();
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), then closes
    /// every connection.
    pub async fn shutdown(mut self) {
        self.graceful.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            self.hard.cancel();
            self.tracker.wait().await;
        }
        tracing::debug!(addr = %self.addr, "sandbox: stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Without this a dropped handle (e.g. a failed test) would leave the
        // server running on the runtime until it shuts down.
        self.graceful.cancel();
        self.hard.cancel();
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret() {
        let cfg = SandboxConfig {
            client_secret: "hunter2-very-secret".into(),
            ..Default::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sandbox-client"));
    }

    #[test]
    fn defaults_are_the_strict_limit_without_retry_after() {
        let cfg = SandboxConfig::default();
        assert_eq!(cfg.rate_limit_algorithm, LimitAlgorithm::SlidingWindow);
        assert!(!cfg.retry_after);
        assert_eq!(cfg.throttle_rate, 0.0);
    }

    #[test]
    fn config_patch_check_covers_throttle_rate() {
        let patch = ConfigPatch {
            throttle_rate: Some(1.5),
            ..ConfigPatch::default()
        };
        assert!(matches!(
            patch.check(),
            Err(SandboxError::Probability {
                name: "throttle_rate",
                ..
            })
        ));
    }

    #[test]
    fn validate_rejects_impossible_settings() {
        assert_eq!(SandboxConfig::default().validate(), Ok(()));
        let bad = SandboxConfig {
            fail_rate: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(SandboxError::Probability { .. })
        ));
        let bad = SandboxConfig {
            throttle_rate: -0.5,
            ..Default::default()
        };
        assert_eq!(
            bad.validate(),
            Err(SandboxError::Probability {
                name: "throttle rate",
                value: -0.5
            })
        );
        let bad = SandboxConfig {
            rate_limit: Some(0),
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(SandboxError::ZeroRateLimit));
        let bad = SandboxConfig {
            token_ttl: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(SandboxError::ZeroTokenTtl));
    }

    #[test]
    fn validate_rejects_impossible_scenarios() {
        let ms = Duration::from_millis;
        let cases = [
            (
                SandboxConfig {
                    rate_limit_schedule: Some("30s:13".parse().unwrap()),
                    ..Default::default()
                },
                SandboxError::ScheduleWithoutLimit,
            ),
            (
                SandboxConfig {
                    latency: ms(100),
                    latency_jitter: 1.01,
                    ..Default::default()
                },
                SandboxError::Jitter(1.01),
            ),
            (
                SandboxConfig {
                    latency: ms(100),
                    latency_jitter: 0.2,
                    latency_p99: Some(ms(500)),
                    ..Default::default()
                },
                SandboxError::JitterWithP99,
            ),
            (
                SandboxConfig {
                    latency: ms(100),
                    latency_p99: Some(ms(50)),
                    ..Default::default()
                },
                SandboxError::P99BelowLatency {
                    latency: ms(100),
                    p99: ms(50),
                },
            ),
            (
                SandboxConfig {
                    latency_p99: Some(ms(50)),
                    ..Default::default()
                },
                SandboxError::P99WithoutLatency,
            ),
            (
                SandboxConfig {
                    capacity: Some(0),
                    ..Default::default()
                },
                SandboxError::ZeroCapacity,
            ),
        ];
        for (cfg, want) in cases {
            assert_eq!(cfg.validate(), Err(want));
        }
        let good = SandboxConfig {
            rate_limit: Some(40),
            rate_limit_schedule: Some("30s:13".parse().unwrap()),
            latency: ms(100),
            latency_p99: Some(ms(1000)),
            slow_start: Some("4s:8s".parse().unwrap()),
            capacity: Some(50),
            ..Default::default()
        };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(
            SandboxError::P99BelowLatency {
                latency: ms(100),
                p99: ms(50)
            }
            .to_string(),
            "latency p99 (50ms) must be at least the latency, its median (100ms)"
        );
    }
}
