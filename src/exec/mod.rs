//! Execution: turning validated rows into API calls under a shared rate limit,
//! with retries, backoff and token refresh.
//!
//! * [`worker`] — the per-row retry loop (`provision`).
//! * [`backoff`] — exponential backoff with full jitter.
//! * [`throttle`] — the pool-wide pause after a 429.

pub mod backoff;
pub mod breaker;
pub mod pace;
pub mod pipeline;
pub mod throttle;
pub mod worker;

pub use worker::{
    EngineCounters, EngineStats, FatalError, Job, WorkerCtx, fetch_first_token, provision,
};
