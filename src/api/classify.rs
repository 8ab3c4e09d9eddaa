//! What one attempt's answer means for the row (SPEC "Execution").
//!
//! Sits between `api::client` (which reports an [`Attempt`]) and
//! `exec::worker` (which acts on the [`Verdict`]). Pure, so every status has a
//! unit test below.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx | `Done(Created)` |
//! | 400 "user_id taken", 409 | `Done(Exists)` — after an ambiguous failure this is the normal result |
//! | 401 | `Unauthorized`: refresh the token, retry without spending an attempt |
//! | 408, 429, 5xx | `Retry` (429 also throttles the whole pool) |
//! | other 3xx/4xx | `Final` → `rejected` |
//! | timeout, connect error, reset | `Retry` |

use std::time::Duration;

use crate::api::client::Attempt;
use crate::outcome::Status;

/// What to do after one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The row is finished successfully: `Created` or `Exists`, with the HTTP status.
    Done(Status, u16),
    /// The API refused the row for good (`rejected`): HTTP status and message.
    Final(u16, String),
    /// Transient: try again after a backoff delay.
    Retry {
        /// Human-readable cause, kept as the row's error if retries run out.
        reason: String,
        /// HTTP status, when there was an answer.
        http: Option<u16>,
        /// The server's `Retry-After`, a floor for the delay.
        retry_after: Option<Duration>,
        /// A 429: the partner's threshold was hit, so the whole pool slows down.
        throttled: bool,
    },
    /// 401: the token was refused; refresh it and retry.
    Unauthorized,
}

/// Decide what an attempt means. See the module table.
pub fn classify(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Transport { kind, message } => Verdict::Retry {
            reason: format!("{kind}: {message}"),
            http: None,
            retry_after: None,
            throttled: false,
        },
        Attempt::Answered {
            status,
            retry_after,
            error,
            snippet,
        } => {
            let status = *status;
            let detail = || {
                error
                    .as_ref()
                    .map(|e| e.summary())
                    .filter(|s| !s.is_empty())
                    .or_else(|| snippet.clone())
            };
            let with_detail = |head: String| match detail() {
                Some(d) => format!("{head}: {d}"),
                None => head,
            };
            match status {
                200..=299 => Verdict::Done(Status::Created, status),
                409 => Verdict::Done(Status::Exists, status),
                400 if error.as_ref().is_some_and(|e| e.is_user_id_taken()) => {
                    Verdict::Done(Status::Exists, status)
                }
                401 => Verdict::Unauthorized,
                // Unlisted 5xx are retried too: a server fault is never the
                // data's fault, and `rejected` would tell the operator to fix rows.
                408 | 429 | 500..=599 => Verdict::Retry {
                    reason: with_detail(format!("HTTP {status}")),
                    http: Some(status),
                    retry_after: *retry_after,
                    throttled: status == 429,
                },
                _ => Verdict::Final(
                    status,
                    detail().unwrap_or_else(|| format!("unexpected HTTP {status}")),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::TransportKind;
    use crate::api::model::{ApiError, ErrorBody, ErrorDetail, ErrorMeta, codes};

    fn answered(status: u16, error: Option<ErrorBody>) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
            error,
            snippet: None,
        }
    }

    fn body(key: &str, message: &str, code: u32) -> Option<ErrorBody> {
        Some(ErrorBody::Single(ApiError {
            error: ErrorDetail {
                message: message.into(),
                code,
            },
            meta: Some(ErrorMeta { key: key.into() }),
        }))
    }

    fn retry(status: u16, throttled: bool) -> Verdict {
        Verdict::Retry {
            reason: format!("HTTP {status}"),
            http: Some(status),
            retry_after: None,
            throttled,
        }
    }

    // SPEC "Execution": one case per status.
    #[test]
    fn status_table() {
        let taken = body("user_id", "has already been taken", codes::TAKEN);
        let blank = body("first_name", "can't be blank", codes::BLANK);
        let cases: Vec<(Attempt, Verdict)> = vec![
            (answered(200, None), Verdict::Done(Status::Created, 200)),
            (answered(201, None), Verdict::Done(Status::Created, 201)),
            (
                answered(400, taken.clone()),
                Verdict::Done(Status::Exists, 400),
            ),
            (answered(409, None), Verdict::Done(Status::Exists, 409)),
            (
                answered(400, blank.clone()),
                Verdict::Final(400, "first_name: can't be blank".into()),
            ),
            (
                answered(400, None),
                Verdict::Final(400, "unexpected HTTP 400".into()),
            ),
            (answered(401, None), Verdict::Unauthorized),
            (
                answered(403, None),
                Verdict::Final(403, "unexpected HTTP 403".into()),
            ),
            (
                answered(404, None),
                Verdict::Final(404, "unexpected HTTP 404".into()),
            ),
            (
                answered(422, blank),
                Verdict::Final(422, "first_name: can't be blank".into()),
            ),
            (
                answered(301, None),
                Verdict::Final(301, "unexpected HTTP 301".into()),
            ),
            (answered(408, None), retry(408, false)),
            (answered(429, None), retry(429, true)),
            (answered(500, None), retry(500, false)),
            (answered(502, None), retry(502, false)),
            (answered(503, None), retry(503, false)),
            (answered(504, None), retry(504, false)),
            (answered(599, None), retry(599, false)),
            // "taken" on another field is not "exists".
            (
                answered(400, body("first_name", "has already been taken", 1)),
                Verdict::Final(400, "first_name: has already been taken".into()),
            ),
        ];
        for (attempt, want) in cases {
            assert_eq!(classify(&attempt), want, "{attempt:?}");
        }
    }

    #[test]
    fn retry_keeps_retry_after_and_detail() {
        let a = Attempt::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            error: body("rate", "too many requests", codes::RATE_LIMITED),
            snippet: None,
        };
        assert_eq!(
            classify(&a),
            Verdict::Retry {
                reason: "HTTP 429: rate: too many requests".into(),
                http: Some(429),
                retry_after: Some(Duration::from_secs(2)),
                throttled: true,
            }
        );
    }

    #[test]
    fn unparsed_bodies_are_quoted() {
        let a = Attempt::Answered {
            status: 404,
            retry_after: None,
            error: None,
            snippet: Some("<html>nope</html>".into()),
        };
        assert_eq!(
            classify(&a),
            Verdict::Final(404, "<html>nope</html>".into())
        );
    }

    #[test]
    fn transport_failures_retry() {
        for kind in [
            TransportKind::Timeout,
            TransportKind::Connect,
            TransportKind::Reset,
            TransportKind::Other,
        ] {
            let v = classify(&Attempt::Transport {
                kind,
                message: "boom".into(),
            });
            assert_eq!(
                v,
                Verdict::Retry {
                    reason: format!("{}: boom", kind.as_str()),
                    http: None,
                    retry_after: None,
                    throttled: false,
                }
            );
        }
    }
}
