//! The sandbox's shared state: issued tokens, stored users, the rate limiter, the
//! fault dice, the service times and the counters behind `/_sandbox/stats` and
//! `/_sandbox/seconds`.
//!
//! Locking: each concern has its own short-lived lock (tokens behind an `RwLock`
//! because every users request reads it and only token issuance writes it; users
//! in 16 `Mutex`-guarded shards; limiter, faults and service behind a `Mutex`
//! each; the limiter's lock also covers the `max_window` meter and the
//! per-second table, which see the same requests at the same step, and the
//! first request's instant that the schedule, slow start and the table count
//! from), and no lock is ever held across an `.await` or while another is
//! taken. Counters are relaxed atomics: they are statistics, read as a
//! snapshot, and never used to make a decision.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};

use super::limit::{LimitAlgorithm, PeakWindow, RateLimiter};
use super::schedule::RateSchedule;
use super::seconds::{SecondCounts, Seconds, Tally};
use super::service::Service;
use super::{SandboxConfig, SandboxError};
use crate::api::model::{AddressAnswer, CreateUser};

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
    /// Most create requests inside the server at once (after authentication,
    /// until answered: queued behind `--capacity` and sleeping their latency
    /// included).
    max_in_flight,
    /// Most create requests that reached the rate limiter (after authentication,
    /// admitted or refused) in any sliding 1 s window.
    max_window,
    /// Requests to `POST /v2/fulfillment/users/{user_id}/addresses` (also
    /// counted in `users_requests`: they share the users rate limit).
    address_requests,
    /// Address requests answered 200 (the address validated and attached).
    addresses_validated,
    /// Of those, the ones whose `user_id` existed (the upsert found the user;
    /// the others created it and count in `created`).
    address_users_found,
    /// Address requests refused as undeliverable (P.O. boxes); also in `rejected`.
    undeliverable,
    /// Validated addresses flagged `long_distance_delivery`.
    long_distance,
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

/// The rate limit as configured, its running state, its schedule, and the
/// meters that see every request reaching it (`max_window`, the per-second table).
struct Limiter {
    /// The limit set at start or by the last explicit change (config endpoint,
    /// handle); a reset returns to it and replays the schedule from there.
    base: Option<u32>,
    /// The limit in force: `base`, or the last schedule step applied since.
    per_second: Option<u32>,
    algorithm: LimitAlgorithm,
    /// `None` when unlimited.
    active: Option<RateLimiter>,
    schedule: Option<RateSchedule>,
    /// How many steps of `schedule` have been applied.
    applied: usize,
    /// When the first users request reached the limiter (since start or reset):
    /// the origin of the schedule, of slow start and of the per-second table.
    first: Option<Instant>,
    /// Arrivals of the last second; outlives limit changes, cleared by a reset.
    peak: PeakWindow,
    seconds: Seconds,
}

/// What the limiter decided for one users request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    pub(crate) admitted: bool,
    /// How long after the first users request this one arrived.
    pub(crate) since_first: Duration,
}

impl Admission {
    /// The second of `/_sandbox/seconds` the request arrived in.
    pub(crate) fn second(&self) -> u64 {
        self.since_first.as_secs()
    }
}

impl Limiter {
    fn new(
        per_second: Option<u32>,
        algorithm: LimitAlgorithm,
        schedule: Option<RateSchedule>,
    ) -> Limiter {
        let mut l = Limiter {
            base: per_second,
            per_second,
            algorithm,
            active: None,
            schedule,
            applied: 0,
            first: None,
            peak: PeakWindow::default(),
            seconds: Seconds::default(),
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

    /// Brings the limiter up to `now`: applies the schedule's steps that are
    /// due, in order, each keeping what is booked, and fills the per-second
    /// table up to `now`, each second with the limit in force at its end.
    /// Nothing happens before the first users request.
    fn advance(&mut self, now: Instant) {
        let Some(first) = self.first else {
            return;
        };
        let elapsed = now.saturating_duration_since(first);
        if let Some(schedule) = &self.schedule {
            while let Some(step) = schedule.steps().get(self.applied)
                && step.at <= elapsed
            {
                let second = step.at.as_secs();
                self.seconds.fill_to(second, self.per_second);
                self.per_second = Some(step.per_second);
                match &mut self.active {
                    Some(limit) => limit.set_per_second(step.per_second),
                    None => {
                        self.active = Some(RateLimiter::new(
                            self.algorithm,
                            step.per_second,
                            first + step.at,
                        ));
                    }
                }
                self.seconds.set_limit(second, self.per_second);
                self.applied += 1;
            }
        }
        self.seconds.fill_to(elapsed.as_secs(), self.per_second);
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

/// Result of the address endpoint's upsert.
pub(crate) enum Upsert {
    /// The `user_id` was new: the user was created with the address.
    Created,
    /// The `user_id` existed: the address was attached to that user.
    Found,
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
    /// Delay before answering a users request, in milliseconds (the median
    /// when a jitter or a p99 is set).
    pub latency_ms: Option<u64>,
    /// Uniform spread of the latency, 0..=1 (0 removes it).
    pub latency_jitter: Option<f64>,
    /// 99th percentile of a log-normal latency, in milliseconds; `null`
    /// removes it.
    #[serde(default, deserialize_with = "present")]
    pub latency_p99_ms: Option<Option<u64>>,
    /// Users requests started per second; `null` removes the cap. The queue
    /// starts empty.
    #[serde(default, deserialize_with = "present")]
    pub capacity: Option<Option<u32>>,
    /// `"sliding-window"`, `"fixed-window"` or `"token-bucket"`; restarts the limit.
    pub rate_limit_algorithm: Option<LimitAlgorithm>,
    /// Whether a 429 carries `Retry-After: 1`.
    pub retry_after: Option<bool>,
    /// Probability of a spurious 429 on a request the limiter admitted.
    pub throttle_rate: Option<f64>,
}

/// Distinguishes `"rate_limit": null` (Some(None)) from a missing field (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The live settings, as `GET /_sandbox/config` reports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveConfig {
    /// Users requests per second before 429 (`None`: unlimited): the limit in
    /// force now, after the schedule's steps that are due.
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
    /// Uniform spread of the latency (0: none).
    pub latency_jitter: f64,
    /// 99th percentile of a log-normal latency, in milliseconds.
    pub latency_p99_ms: Option<u64>,
    /// Users requests started per second (`None`: unlimited).
    pub capacity: Option<u32>,
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
    /// The last validated address of each user, by `user_id`.
    addresses: Mutex<HashMap<String, AddressAnswer>>,
    /// Postal-code prefixes flagged long-distance (upper case, no spaces).
    pub(crate) long_distance: Vec<String>,
    limiter: Mutex<Limiter>,
    /// `--retry-after`; a plain flag read by every 429, so an atomic rather than a lock.
    retry_after: AtomicBool,
    faults: Mutex<Faults>,
    service: Mutex<Service>,
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
            addresses: Mutex::default(),
            long_distance: super::validate::long_distance_prefixes(&cfg.long_distance_prefixes),
            limiter: Mutex::new(Limiter::new(
                cfg.rate_limit,
                cfg.rate_limit_algorithm,
                cfg.rate_limit_schedule.clone(),
            )),
            retry_after: AtomicBool::new(cfg.retry_after),
            faults: Mutex::new(Faults {
                throttle_rate: cfg.throttle_rate,
                fail_rate: cfg.fail_rate,
                reset_rate: cfg.reset_rate,
                commit_drop_rate: cfg.commit_drop_rate,
                seed: cfg.seed,
                rng: Faults::rng_for(cfg.seed),
            }),
            service: Mutex::new(Service::new(
                cfg.latency_settings(),
                cfg.slow_start,
                cfg.capacity,
                cfg.seed,
            )),
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

    /// Rate-limit admission for one users request, which also feeds
    /// `max_window` and the per-second table; the first one starts the
    /// schedule's clock. `now` is read under the lock, so all see arrivals in order.
    pub(crate) fn admit(&self) -> Admission {
        let mut l = lock(&self.limiter);
        let now = Instant::now();
        let first = *l.first.get_or_insert(now);
        l.advance(now);
        let seen = l.peak.record(now);
        self.counters.max_window.fetch_max(seen, Relaxed);
        let admitted = match &mut l.active {
            Some(limit) => limit.check(now),
            None => true,
        };
        let since_first = now.saturating_duration_since(first);
        l.seconds.arrival(since_first.as_secs(), admitted);
        Admission {
            admitted,
            since_first,
        }
    }

    /// Counts what became of a request admitted in `second` in the per-second table.
    pub(crate) fn tally(&self, second: u64, what: Tally) {
        lock(&self.limiter).seconds.tally(second, what);
    }

    /// The per-second table up to now (`GET /_sandbox/seconds`).
    pub(crate) fn seconds(&self) -> Vec<SecondCounts> {
        let mut l = lock(&self.limiter);
        l.advance(Instant::now());
        l.seconds.to_vec()
    }

    /// Whether a 429 carries `Retry-After: 1`.
    pub(crate) fn retry_after(&self) -> bool {
        self.retry_after.load(Relaxed)
    }

    /// The fault for this request.
    pub(crate) fn roll(&self) -> Fault {
        lock(&self.faults).roll()
    }

    /// When to answer the request admitted `since_first` after the first users
    /// request: its turn in the capacity queue plus its latency (or slow start's
    /// delay). Taken under the service lock, so the queue is FIFO.
    pub(crate) fn answer_at(&self, since_first: Duration) -> Instant {
        let mut s = lock(&self.service);
        s.answer_at(Instant::now(), since_first)
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

    /// The address endpoint's upsert: stores `user` unless its `user_id`
    /// exists (an existing user keeps its names: the upsert is not
    /// documented to update them), then attaches `answer` as its address.
    pub(crate) fn upsert_address(&self, user: &CreateUser, answer: &AddressAnswer) -> Upsert {
        let upsert = match self.store(user) {
            Store::Created => Upsert::Created,
            Store::Taken => Upsert::Found,
        };
        lock(&self.addresses).insert(user.user_id.clone(), answer.clone());
        upsert
    }

    /// The last validated address of every user that has one, by `user_id`.
    pub(crate) fn addresses(&self) -> Vec<AddressAnswer> {
        let mut list: Vec<AddressAnswer> = lock(&self.addresses).values().cloned().collect();
        list.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        list
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

    /// `POST /_sandbox/reset`: forget users, tokens, counters and the
    /// per-second table, refill the rate limiter (back to its limit before the
    /// schedule, whose clock restarts at the next users request), empty the
    /// capacity queue and restart the fault dice and the latency generator from
    /// the seed (so a seeded run can be replayed). Fault and limit settings are kept.
    pub(crate) fn reset(&self) {
        for shard in &self.users.shards {
            *lock(shard) = HashMap::new();
        }
        self.users.next_seq.store(0, Relaxed);
        *lock(&self.addresses) = HashMap::new();
        self.revoke_tokens();
        {
            let mut l = lock(&self.limiter);
            *l = Limiter::new(l.base, l.algorithm, l.schedule.clone());
        }
        {
            let mut f = lock(&self.faults);
            f.rng = Faults::rng_for(f.seed);
        }
        lock(&self.service).reset();
        self.counters.clear();
    }

    /// Changes the limit and/or its algorithm and restarts it with nothing
    /// booked; `max_window` keeps counting. The schedule's later steps still
    /// apply; a reset returns to this limit.
    pub(crate) fn set_limit(
        &self,
        per_second: Option<Option<u32>>,
        algorithm: Option<LimitAlgorithm>,
    ) {
        let mut l = lock(&self.limiter);
        let now = Instant::now();
        l.advance(now);
        if let Some(n) = per_second {
            l.base = n;
            l.per_second = n;
        }
        if let Some(a) = algorithm {
            l.algorithm = a;
        }
        l.restart();
        if let Some(first) = l.first {
            let second = now.saturating_duration_since(first).as_secs();
            let limit = l.per_second;
            l.seconds.set_limit(second, limit);
        }
    }

    pub(crate) fn set_retry_after(&self, on: bool) {
        self.retry_after.store(on, Relaxed);
    }

    /// Applies a patch that passed [`ConfigPatch::check`]. Refuses, changing
    /// nothing, one whose latency settings do not work with the current ones
    /// (a p99 below the latency, jitter and p99 together).
    pub(crate) fn apply(&self, patch: &ConfigPatch) -> Result<(), SandboxError> {
        {
            let mut s = lock(&self.service);
            let mut latency = s.latency;
            if let Some(ms) = patch.latency_ms {
                latency.latency = Duration::from_millis(ms);
            }
            if let Some(j) = patch.latency_jitter {
                latency.jitter = j;
            }
            if let Some(p99) = patch.latency_p99_ms {
                latency.p99 = p99.map(Duration::from_millis);
            }
            latency.check()?;
            s.latency = latency;
            if let Some(capacity) = patch.capacity {
                s.set_capacity(capacity);
            }
        }
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
        Ok(())
    }

    pub(crate) fn live_config(&self) -> LiveConfig {
        let (rate_limit, rate_limit_algorithm) = {
            let mut l = lock(&self.limiter);
            l.advance(Instant::now());
            (l.per_second, l.algorithm)
        };
        let (latency, capacity) = {
            let s = lock(&self.service);
            (s.latency, s.capacity())
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let f = lock(&self.faults);
        LiveConfig {
            rate_limit,
            rate_limit_algorithm,
            retry_after: self.retry_after(),
            throttle_rate: f.throttle_rate,
            fail_rate: f.fail_rate,
            reset_rate: f.reset_rate,
            commit_drop_rate: f.commit_drop_rate,
            latency_ms: ms(latency.latency),
            latency_jitter: latency.jitter,
            latency_p99_ms: latency.p99.map(ms),
            capacity,
            token_ttl_ms: ms(self.token_ttl),
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
        let admitted = (0..5).filter(|_| sh.admit().admitted).count();
        assert_eq!(admitted, 2);
        assert_eq!(sh.counters.snapshot().max_window, 5);
        sh.set_limit(Some(Some(10)), Some(LimitAlgorithm::TokenBucket));
        assert_eq!(
            sh.live_config().rate_limit_algorithm,
            LimitAlgorithm::TokenBucket
        );
        assert!(sh.admit().admitted);
        assert_eq!(sh.counters.snapshot().max_window, 6);
        sh.reset();
        assert_eq!(sh.counters.snapshot().max_window, 0);
        assert!(sh.admit().admitted);
        assert_eq!(sh.counters.snapshot().max_window, 1);
        // The reset kept the settings.
        let live = sh.live_config();
        assert_eq!(
            (live.rate_limit, live.rate_limit_algorithm),
            (Some(10), LimitAlgorithm::TokenBucket)
        );
    }

    #[test]
    fn a_schedule_step_applies_at_its_offset_and_a_reset_replays_it() {
        // A step at 0 s applies at the first users request, whatever the timing.
        let sh = Shared::new(&SandboxConfig {
            rate_limit: Some(10),
            rate_limit_schedule: Some("0s:2,1h:50".parse().unwrap()),
            ..SandboxConfig::default()
        });
        assert_eq!(sh.live_config().rate_limit, Some(10));
        assert!(sh.seconds().is_empty());
        let admitted = (0..5).filter(|_| sh.admit().admitted).count();
        assert_eq!(admitted, 2);
        assert_eq!(sh.live_config().rate_limit, Some(2));
        let rows = sh.seconds();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].requests, rows[0].admitted, rows[0].throttled_limit),
            (5, 2, 3)
        );
        assert_eq!(rows[0].limit, Some(2));
        sh.tally(0, Tally::Failed);
        sh.tally(0, Tally::Spurious);
        let rows = sh.seconds();
        assert_eq!((rows[0].failed, rows[0].throttled_spurious), (1, 1));

        // A reset goes back to the limit before the schedule and restarts its clock.
        sh.reset();
        assert_eq!(sh.live_config().rate_limit, Some(10));
        assert!(sh.seconds().is_empty());
        assert_eq!((0..5).filter(|_| sh.admit().admitted).count(), 2);

        // An explicit change is the new base; later steps still apply.
        sh.set_limit(Some(Some(4)), None);
        assert_eq!(sh.live_config().rate_limit, Some(4));
        assert_eq!(sh.seconds()[0].limit, Some(4));
        sh.reset();
        assert_eq!(sh.live_config().rate_limit, Some(4));
        sh.admit();
        assert_eq!(sh.live_config().rate_limit, Some(2));
    }

    #[test]
    fn config_patch_latency_settings_are_checked_against_the_current_ones() {
        let sh = Shared::new(&SandboxConfig {
            latency: Duration::from_millis(100),
            ..SandboxConfig::default()
        });
        let patch = |json: &str| serde_json::from_str::<ConfigPatch>(json).unwrap();
        sh.apply(&patch(r#"{"latency_p99_ms":1000,"capacity":5}"#))
            .unwrap();
        let live = sh.live_config();
        assert_eq!(
            (live.latency_ms, live.latency_p99_ms, live.capacity),
            (100, Some(1000), Some(5))
        );
        // Jitter with a p99, or a latency above the p99: refused, nothing changed.
        for bad in [
            r#"{"latency_jitter":0.2,"fail_rate":0.5}"#,
            r#"{"latency_ms":2000,"capacity":null}"#,
        ] {
            assert!(sh.apply(&patch(bad)).is_err(), "{bad}");
            assert_eq!(sh.live_config(), live, "{bad}");
        }
        // Both in one patch: fine.
        sh.apply(&patch(
            r#"{"latency_p99_ms":null,"latency_jitter":0.2,"capacity":null}"#,
        ))
        .unwrap();
        let live = sh.live_config();
        assert_eq!(
            (live.latency_jitter, live.latency_p99_ms, live.capacity),
            (0.2, None, None)
        );
        assert!(patch(r#"{"latency_jitter":1.5}"#).check().is_err());
        assert!(patch(r#"{"capacity":0}"#).check().is_err());
    }
}
