//! Execution: turning validated rows into API calls under a shared rate limit,
//! with retries, backoff and token refresh.
//!
//! * [`pipeline`] — a run, live or dry: the stages started and joined.
//! * `feed` — the intake's thread: rows to send, or decided on the spot.
//! * `dispatch` — one task per row under a growing semaphore.
//! * `watch` — the breaker, the state file and the bar, on the recorder's thread.
//! * `worker` — the per-row retry loop (`provision`).
//! * `throttle` — the pool-wide pause after a 429.
//! * `pace` — the shared limiter (`limiter`), its window guard (`window`)
//!   and what `--rate auto` publishes (`auto`).
//! * `adapt` — `--rate auto`: the controller that sets the pace's rate.
//! * `counters` — the run-wide request counters.
//! * `breaker` — the circuit breaker over finished rows.
//! * [`stop`] — the run-wide stop switch and its reason.
//! * `tasks` — the run's background tasks: one owner, nothing detached.

mod adapt;
mod breaker;
pub(crate) mod counters;
mod dispatch;
mod feed;
pub(crate) mod pace;
pub mod pipeline;
pub mod stop;
mod tasks;
pub(crate) mod throttle;
mod watch;
pub(crate) mod worker;

#[cfg(test)]
mod tests;
