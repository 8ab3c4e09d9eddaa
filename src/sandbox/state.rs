//! The sandbox's shared state: issued tokens, stored users, the rate limiter, the
//! fault dice and the counters behind `/_sandbox/stats`.
//!
//! Locking: each concern has its own short-lived lock (tokens behind an `RwLock`
//! because every users request reads it and only token issuance writes it; users
//! in 16 `Mutex`-guarded shards; limiter and faults behind a `Mutex` each; the
//! limiter's lock also covers the `max_window` meter, which sees the same
//! requests at the same step), and no lock is ever held across an `.await` or
//! while another is taken. Counters are relaxed atomics: they are statistics,
//! read as a snapshot, and never used to make a decision.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};

use super::SandboxConfig;
use super::limit::{LimitAlgorithm, PeakWindow, RateLimiter};
use crate::api::model::CreateUser;

/// Declares [`Stats`] and its atomic twin `Counters` from one field list, so the
/// snapshot and the reset can never forget a counter.
macro_rules! stats {
    ($( $(#[doc = $doc:expr])+ $name:ident, )+) => {
        /// A snapshot of what the sandbox has seen since it started (or since the
        /// last `POST /_sandbox/reset`); the body of `GET /_sandbox/stats`.
        ///
        /// "API requests" are those to the Connect endpoints (and unknown paths);
        /// `/_sandbox/*` inspection and control requests are not counted, so reading
        /// the stats does not change them.
        #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
        #[serde(default)]
        pub struct Stats {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        /// The live counters behind [`Stats`].
        #[derive(Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )+
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Relaxed), )+ }
            }

            fn clear(&self) {
                $( self.$name.store(0, Relaxed); )+
            }
        }
    };
}

stats! {
    /// API requests of any kind, including unknown paths.
    requests,
    /// Requests to `POST /v2/oauth/token`.
    token_requests,
    /// Tokens handed out.
    tokens_issued,
    /// Token requests refused with 400 (malformed, missing field, wrong grant_type).
    token_rejected,
    /// Requests to `POST /v2/fulfillment/users`.
    users_requests,
    /// Users stored (including those whose answer was then dropped by a commit-drop).
    created,
    /// Create requests refused with 400 for an invalid or malformed payload.
    rejected,
    /// Create requests refused with 400 because the `user_id` already exists.
    taken,
    /// Answers 429: refused by the rate limiter, plus the spurious ones.
    throttled,
    /// Answers 429 injected by `throttle_rate` on requests the limiter admitted
    /// (also counted in `throttled`).
    spurious_429,
    /// Answers 401 (either endpoint).
    unauthorized,
    /// Answers 403 (credentials in the query string).
    forbidden,
    /// Answers 404/405 (unknown path or method).
    not_found,
    /// Injected 500s.
    faults_500,
    /// Injected 503s.
    faults_503,
    /// Connections dropped unanswered with nothing committed.
    resets,
    /// Requests processed (user stored when valid) whose answer was then dropped.
    commit_drops,
    /// A `user_id` stored twice. Must stay 0: it is counted from the map's own
    /// `insert` result, so it would catch a broken check-then-insert.
    duplicate_creations,
    /// Most create requests in progress at once (after authentication).
    max_in_flight,
    /// Most create requests that reached the rate limiter (after authentication,
    /// admitted or refused) in any sliding 1 s window.
    max_window,
}

/// What the fault dice decided for one users request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// A spurious 429 on a request the limiter admitted.
    Throttle,
    Fail500,
    Fail503,
    Reset,
    CommitDrop,
}

/// Fault knobs and their random source.
struct Faults {
    throttle_rate: f64,
    fail_rate: f64,
    reset_rate: f64,
    commit_drop_rate: f64,
    latency: Duration,
    seed: Option<u64>,
    rng: SmallRng,
}

impl Faults {
    fn rng_for(seed: Option<u64>) -> SmallRng {
        match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// Exactly two draws per request whatever the knobs say, so with a seed the
    /// n-th request's fate depends only on n (and the rates), not on earlier outcomes.
    /// The rates partition [0, 1) in the order throttle, fail, reset, commit-drop,
    /// so each is the probability of its fault as long as they sum to at most 1
    /// (and a zero throttle rate leaves the other faults' sequence as it was).
    fn roll(&mut self) -> Fault {
        let u: f64 = self.rng.random();
        let pick_503: bool = self.rng.random();
        let throttle_end = self.throttle_rate;
        let fail_end = throttle_end + self.fail_rate;
        let reset_end = fail_end + self.reset_rate;
        let drop_end = reset_end + self.commit_drop_rate;
        if u < throttle_end {
            Fault::Throttle
        } else if u < fail_end {
            if pick_503 {
                Fault::Fail503
            } else {
                Fault::Fail500
            }
        } else if u < reset_end {
            Fault::Reset
        } else if u < drop_end {
            Fault::CommitDrop
        } else {
            Fault::None
        }
    }
}

/// The rate limit as configured, its running state, and the `max_window` meter.
struct Limiter {
    per_second: Option<u32>,
    algorithm: LimitAlgorithm,
    /// `None` when unlimited.
    active: Option<RateLimiter>,
    /// Arrivals of the last second; outlives limit changes, cleared by a reset.
    peak: PeakWindow,
}

impl Limiter {
    fn new(per_second: Option<u32>, algorithm: LimitAlgorithm) -> Limiter {
        let mut l = Limiter {
            per_second,
            algorithm,
            active: None,
            peak: PeakWindow::default(),
        };
        l.restart();
        l
    }

    /// Starts the limit afresh from its current settings (nothing booked).
    fn restart(&mut self) {
        let now = Instant::now();
        self.active = self
            .per_second
            .map(|n| RateLimiter::new(self.algorithm, n, now));
    }
}

/// Number of user-map shards. Sharding keeps the two runtime workers from
/// queueing on one lock and, more importantly, bounds the stall when a map grows:
/// rehashing a sixteenth of a million users instead of all of them.
const USER_SHARDS: usize = 16;

/// Stored users, keyed by `user_id` and sharded by a hash of it; each entry keeps
/// its creation sequence number for a stable `/_sandbox/users` listing.
struct Users {
    shards: Vec<Mutex<HashMap<String, (u64, CreateUser)>>>,
    /// Picks the shard. Deliberately a different hasher from the maps' own: the
    /// same hash would put all of a shard's keys in 1/16 of its buckets.
    pick: RandomState,
    next_seq: AtomicU64,
}

impl Users {
    fn new() -> Users {
        Users {
            shards: (0..USER_SHARDS).map(|_| Mutex::default()).collect(),
            pick: RandomState::new(),
            next_seq: AtomicU64::new(0),
        }
    }

    fn shard(&self, user_id: &str) -> &Mutex<HashMap<String, (u64, CreateUser)>> {
        // Truncation is the point: any bits of the hash pick a shard uniformly.
        #[allow(clippy::cast_possible_truncation)]
        let i = self.pick.hash_one(user_id) as usize % USER_SHARDS;
        &self.shards[i]
    }
}

/// Result of trying to store a user.
pub(crate) enum Store {
    Created,
    Taken,
}

/// A change to the live fault/limit settings (`POST /_sandbox/config`); absent
/// fields are left as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// `Some(None)` (JSON `null`) removes the limit; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    pub rate_limit: Option<Option<u32>>,
    /// Probability of a random 500 or 503.
    pub fail_rate: Option<f64>,
    /// Probability of dropping the connection unanswered.
    pub reset_rate: Option<f64>,
    /// Probability of storing the user and then dropping the connection.
    pub commit_drop_rate: Option<f64>,
    /// Delay before answering a users request, in milliseconds.
    pub latency_ms: Option<u64>,
    /// `"sliding-window"`, `"fixed-window"` or `"token-bucket"`; restarts the limit.
    pub rate_limit_algorithm: Option<LimitAlgorithm>,
    /// Whether a 429 carries `Retry-After: 1`.
    pub retry_after: Option<bool>,
    /// Probability of a spurious 429 on a request the limiter admitted.
    pub throttle_rate: Option<f64>,
}

/// Distinguishes `"rate_limit": null` (Some(None)) from a missing field (None).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// The live settings, as `GET /_sandbox/config` reports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveConfig {
    /// Users requests per second before 429 (`None`: unlimited).
    pub rate_limit: Option<u32>,
    /// How `rate_limit` is counted.
    pub rate_limit_algorithm: LimitAlgorithm,
    /// Whether a 429 carries `Retry-After: 1`.
    pub retry_after: bool,
    /// Probability of a spurious 429 on a request the limiter admitted.
    pub throttle_rate: f64,
    /// Probability of a random 500 or 503.
    pub fail_rate: f64,
    reset_rate: f64,
    commit_drop_rate: f64,
    /// Delay before answering a users request, in milliseconds.
    pub latency_ms: u64,
    token_ttl_ms: u64,
    seed: Option<u64>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    client_id: String,
    client_secret: String,
    pub(crate) token_ttl: Duration,
    tokens: RwLock<HashMap<String, Instant>>,
    users: Users,
    limiter: Mutex<Limiter>,
    /// `--retry-after`; a plain flag read by every 429, so an atomic rather than a lock.
    retry_after: AtomicBool,
    faults: Mutex<Faults>,
    pub(crate) counters: Counters,
    in_flight: AtomicU64,
}

/// A poisoned lock only means a handler panicked mid-update of plain data; the
/// sandbox keeps serving rather than failing every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(cfg: &SandboxConfig) -> Shared {
        Shared {
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            token_ttl: cfg.token_ttl,
            tokens: RwLock::default(),
            users: Users::new(),
            limiter: Mutex::new(Limiter::new(cfg.rate_limit, cfg.rate_limit_algorithm)),
            retry_after: AtomicBool::new(cfg.retry_after),
            faults: Mutex::new(Faults {
                throttle_rate: cfg.throttle_rate,
                fail_rate: cfg.fail_rate,
                reset_rate: cfg.reset_rate,
                commit_drop_rate: cfg.commit_drop_rate,
                latency: cfg.latency,
                seed: cfg.seed,
                rng: Faults::rng_for(cfg.seed),
            }),
            counters: Counters::default(),
            in_flight: AtomicU64::new(0),
        }
    }

    pub(crate) fn credentials_match(&self, client_id: &str, client_secret: &str) -> bool {
        client_id == self.client_id && client_secret == self.client_secret
    }

    /// Issues a fresh random token valid for `token_ttl`, pruning expired ones so
    /// the map stays as small as the number of live tokens.
    pub(crate) fn issue_token(&self) -> String {
        let bytes: [u8; 24] = rand::rng().random();
        let token = hex::encode(bytes);
        let now = Instant::now();
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), now + self.token_ttl);
        token
    }

    pub(crate) fn token_valid(&self, token: &str) -> bool {
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        tokens
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    pub(crate) fn revoke_tokens(&self) {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Rate-limit admission for one users request, which also feeds `max_window`.
    /// `now` is read under the lock, so both see arrivals in order.
    pub(crate) fn admit(&self) -> bool {
        let mut l = lock(&self.limiter);
        let now = Instant::now();
        let seen = l.peak.record(now);
        self.counters.max_window.fetch_max(seen, Relaxed);
        match &mut l.active {
            Some(limit) => limit.check(now),
            None => true,
        }
    }

    /// Whether a 429 carries `Retry-After: 1`.
    pub(crate) fn retry_after(&self) -> bool {
        self.retry_after.load(Relaxed)
    }

    /// The configured latency and the fault for this request.
    pub(crate) fn roll(&self) -> (Duration, Fault) {
        let mut f = lock(&self.faults);
        (f.latency, f.roll())
    }

    /// Stores `user` unless its `user_id` exists. The existence check and the
    /// insert happen under one (shard) lock; `duplicate_creations` counts what
    /// `insert` itself reports, so a regression here shows up in the stats.
    pub(crate) fn store(&self, user: &CreateUser) -> Store {
        let mut shard = lock(self.users.shard(&user.user_id));
        if shard.contains_key(&user.user_id) {
            return Store::Taken;
        }
        let seq = self.users.next_seq.fetch_add(1, Relaxed);
        if shard
            .insert(user.user_id.clone(), (seq, user.clone()))
            .is_some()
        {
            self.counters.duplicate_creations.fetch_add(1, Relaxed);
        }
        self.counters.created.fetch_add(1, Relaxed);
        Store::Created
    }

    /// Stored users in creation order.
    pub(crate) fn users(&self) -> Vec<CreateUser> {
        let mut list: Vec<(u64, CreateUser)> = Vec::new();
        for shard in &self.users.shards {
            list.extend(lock(shard).values().cloned());
        }
        list.sort_unstable_by_key(|(seq, _)| *seq);
        list.into_iter().map(|(_, u)| u).collect()
    }

    /// `POST /_sandbox/reset`: forget users, tokens and counters, refill the rate
    /// limiter and restart the fault dice from the seed (so a seeded run can be
    /// replayed). Fault and limit settings are kept.
    pub(crate) fn reset(&self) {
        for shard in &self.users.shards {
            *lock(shard) = HashMap::new();
        }
        self.users.next_seq.store(0, Relaxed);
        self.revoke_tokens();
        {
            let mut l = lock(&self.limiter);
            *l = Limiter::new(l.per_second, l.algorithm);
        }
        {
            let mut f = lock(&self.faults);
            f.rng = Faults::rng_for(f.seed);
        }
        self.counters.clear();
    }

    /// Changes the limit and/or its algorithm and restarts it with nothing
    /// booked; `max_window` keeps counting.
    pub(crate) fn set_limit(
        &self,
        per_second: Option<Option<u32>>,
        algorithm: Option<LimitAlgorithm>,
    ) {
        let mut l = lock(&self.limiter);
        if let Some(n) = per_second {
            l.per_second = n;
        }
        if let Some(a) = algorithm {
            l.algorithm = a;
        }
        l.restart();
    }

    pub(crate) fn set_retry_after(&self, on: bool) {
        self.retry_after.store(on, Relaxed);
    }

    /// Applies a validated patch (see [`ConfigPatch::check`]).
    pub(crate) fn apply(&self, patch: &ConfigPatch) {
        if patch.rate_limit.is_some() || patch.rate_limit_algorithm.is_some() {
            self.set_limit(patch.rate_limit, patch.rate_limit_algorithm);
        }
        if let Some(on) = patch.retry_after {
            self.set_retry_after(on);
        }
        let mut f = lock(&self.faults);
        if let Some(p) = patch.throttle_rate {
            f.throttle_rate = p;
        }
        if let Some(p) = patch.fail_rate {
            f.fail_rate = p;
        }
        if let Some(p) = patch.reset_rate {
            f.reset_rate = p;
        }
        if let Some(p) = patch.commit_drop_rate {
            f.commit_drop_rate = p;
        }
        if let Some(ms) = patch.latency_ms {
            f.latency = Duration::from_millis(ms);
        }
    }

    pub(crate) fn live_config(&self) -> LiveConfig {
        let (rate_limit, rate_limit_algorithm) = {
            let l = lock(&self.limiter);
            (l.per_second, l.algorithm)
        };
        let f = lock(&self.faults);
        LiveConfig {
            rate_limit,
            rate_limit_algorithm,
            retry_after: self.retry_after(),
            throttle_rate: f.throttle_rate,
            fail_rate: f.fail_rate,
            reset_rate: f.reset_rate,
            commit_drop_rate: f.commit_drop_rate,
            latency_ms: u64::try_from(f.latency.as_millis()).unwrap_or(u64::MAX),
            token_ttl_ms: u64::try_from(self.token_ttl.as_millis()).unwrap_or(u64::MAX),
            seed: f.seed,
        }
    }

    /// Marks a create request in progress until the guard drops.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.counters.max_in_flight.fetch_max(now, Relaxed);
        InFlight(self)
    }
}

/// Guard returned by [`Shared::enter`].
pub(crate) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(fail: f64, reset: f64, drop: f64, seed: u64) -> Faults {
        Faults {
            throttle_rate: 0.0,
            fail_rate: fail,
            reset_rate: reset,
            commit_drop_rate: drop,
            latency: Duration::ZERO,
            seed: Some(seed),
            rng: Faults::rng_for(Some(seed)),
        }
    }

    #[test]
    fn certain_and_impossible_faults() {
        let mut f = faults(0.0, 0.0, 0.0, 1);
        assert!((0..1000).all(|_| f.roll() == Fault::None));
        let mut f = faults(0.0, 1.0, 0.0, 1);
        assert!((0..1000).all(|_| f.roll() == Fault::Reset));
        let mut f = faults(0.0, 0.0, 1.0, 1);
        assert!((0..1000).all(|_| f.roll() == Fault::CommitDrop));
        let mut f = faults(1.0, 0.0, 0.0, 1);
        let rolls: Vec<Fault> = (0..1000).map(|_| f.roll()).collect();
        assert!(
            rolls
                .iter()
                .all(|r| matches!(r, Fault::Fail500 | Fault::Fail503))
        );
        assert!(rolls.contains(&Fault::Fail500) && rolls.contains(&Fault::Fail503));
    }

    #[test]
    fn throttle_rate_is_rolled_first_and_leaves_other_faults_alone_at_zero() {
        let mut t = faults(0.0, 0.0, 0.0, 1);
        t.throttle_rate = 1.0;
        assert!((0..1000).all(|_| t.roll() == Fault::Throttle));
        // A zero throttle rate replays exactly the sequence without the knob.
        let mut a = faults(0.2, 0.1, 0.1, 7);
        let mut b = faults(0.2, 0.1, 0.1, 7);
        b.throttle_rate = 0.0;
        let ra: Vec<Fault> = (0..1000).map(|_| a.roll()).collect();
        let rb: Vec<Fault> = (0..1000).map(|_| b.roll()).collect();
        assert_eq!(ra, rb);
        // And a non-zero one is roughly honoured, on the same seeded dice.
        let mut c = faults(0.2, 0.0, 0.0, 42);
        c.throttle_rate = 0.3;
        let rc: Vec<Fault> = (0..10_000).map(|_| c.roll()).collect();
        let throttles = rc.iter().filter(|r| **r == Fault::Throttle).count();
        let fails = rc
            .iter()
            .filter(|r| matches!(r, Fault::Fail500 | Fault::Fail503))
            .count();
        assert!((2700..3300).contains(&throttles), "{throttles}");
        assert!((1700..2300).contains(&fails), "{fails}");
    }

    #[test]
    fn rates_are_roughly_honoured_and_seeded() {
        let mut a = faults(0.2, 0.1, 0.1, 42);
        let mut b = faults(0.2, 0.1, 0.1, 42);
        let ra: Vec<Fault> = (0..10_000).map(|_| a.roll()).collect();
        let rb: Vec<Fault> = (0..10_000).map(|_| b.roll()).collect();
        assert_eq!(ra, rb);
        let count = |k: Fault| ra.iter().filter(|r| **r == k).count();
        assert!((1700..2300).contains(&(count(Fault::Fail500) + count(Fault::Fail503))));
        assert!((800..1200).contains(&count(Fault::Reset)));
        assert!((800..1200).contains(&count(Fault::CommitDrop)));
    }

    #[test]
    fn config_patch_distinguishes_null_from_absent() {
        let p: ConfigPatch = serde_json::from_str(r#"{"rate_limit":null}"#).unwrap();
        assert_eq!(p.rate_limit, Some(None));
        let p: ConfigPatch = serde_json::from_str(r#"{"rate_limit":7}"#).unwrap();
        assert_eq!(p.rate_limit, Some(Some(7)));
        let p: ConfigPatch = serde_json::from_str(r#"{"fail_rate":0.5}"#).unwrap();
        assert_eq!(p.rate_limit, None);
        assert!(serde_json::from_str::<ConfigPatch>(r#"{"fail_rat":0.5}"#).is_err());
    }

    #[test]
    fn config_patch_reads_limit_algorithm_retry_after_and_throttle_rate() {
        let p: ConfigPatch = serde_json::from_str(
            r#"{"rate_limit_algorithm":"token-bucket","retry_after":true,"throttle_rate":0.25}"#,
        )
        .unwrap();
        assert_eq!(p.rate_limit_algorithm, Some(LimitAlgorithm::TokenBucket));
        assert_eq!(p.retry_after, Some(true));
        assert_eq!(p.throttle_rate, Some(0.25));
        for name in ["sliding-window", "fixed-window", "token-bucket"] {
            let p: ConfigPatch =
                serde_json::from_str(&format!(r#"{{"rate_limit_algorithm":"{name}"}}"#)).unwrap();
            assert_eq!(
                p.rate_limit_algorithm.map(LimitAlgorithm::as_str),
                Some(name)
            );
        }
        assert!(
            serde_json::from_str::<ConfigPatch>(r#"{"rate_limit_algorithm":"leaky"}"#).is_err()
        );
    }

    #[test]
    fn limit_changes_keep_max_window_and_reset_clears_it() {
        let sh = Shared::new(&SandboxConfig {
            rate_limit: Some(2),
            ..SandboxConfig::default()
        });
        let admitted = (0..5).filter(|_| sh.admit()).count();
        assert_eq!(admitted, 2);
        assert_eq!(sh.counters.snapshot().max_window, 5);
        sh.set_limit(Some(Some(10)), Some(LimitAlgorithm::TokenBucket));
        assert_eq!(
            sh.live_config().rate_limit_algorithm,
            LimitAlgorithm::TokenBucket
        );
        assert!(sh.admit());
        assert_eq!(sh.counters.snapshot().max_window, 6);
        sh.reset();
        assert_eq!(sh.counters.snapshot().max_window, 0);
        assert!(sh.admit());
        assert_eq!(sh.counters.snapshot().max_window, 1);
        // The reset kept the settings.
        let live = sh.live_config();
        assert_eq!(
            (live.rate_limit, live.rate_limit_algorithm),
            (Some(10), LimitAlgorithm::TokenBucket)
        );
    }
}
