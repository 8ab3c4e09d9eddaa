//! What one attempt's answer means for the row (ARCHITECTURE.md "The path of one row").
//!
//! Sits between `api::client` (which reports an [`Attempt`]) and
//! `exec::worker` (which acts on the [`Verdict`]). Pure, so every status has a
//! unit test below.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx | `Done(Created)` |
//! | 409, or 400 whose only error is "user_id taken" | `Done(Exists)` — after an ambiguous failure this is the normal result |
//! | 401 | `Unauthorized`: refresh the token, retry without spending an attempt |
//! | 408, 429, 5xx | `Retry` (429 also throttles the whole pool) |
//! | other status, every `error.code` 2003 "retry later" or 500x internal | `Retry` (not throttled) |
//! | other 3xx/4xx | `Final` → `rejected` |
//! | timeout, connect error, reset | `Retry` |
//!
//! The status decides first; the body's codes only turn an otherwise final
//! answer into a retry. A row that keeps getting 2003 therefore ends `failed`
//! (rerun later), never `rejected` (fix the data). Messages name each error
//! as `key: message (code)`, joined with `; ` (see `ErrorBody::summary`).

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
            ..
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
                // The same goes for a body that only says "retry later" (2003)
                // or "internal error" (500x), whatever the status; only a 429
                // slows the whole pool.
                408 | 429 | 500..=599 => Verdict::Retry {
                    reason: with_detail(format!("HTTP {status}")),
                    http: Some(status),
                    retry_after: *retry_after,
                    throttled: status == 429,
                },
                _ if error.as_ref().is_some_and(|e| e.is_transient()) => Verdict::Retry {
                    reason: with_detail(format!("HTTP {status}")),
                    http: Some(status),
                    retry_after: *retry_after,
                    throttled: false,
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
    use crate::api::client::{TransportKind, read_error_body};
    use crate::api::model::{ApiError, ErrorBody, ErrorDetail, ErrorMeta, codes};

    fn answered(status: u16, error: Option<ErrorBody>) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
            error,
            snippet: None,
            validated: None,
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

    // ARCHITECTURE.md "The path of one row": one case per status.
    #[test]
    fn status_table() {
        let taken = body(
            "user_id",
            "has already been taken",
            codes::INVALID_PARAMETER,
        );
        let blank = body("first_name", "can't be blank", codes::INVALID_PARAMETER);
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
                Verdict::Final(400, "first_name: can't be blank (1001)".into()),
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
                Verdict::Final(422, "first_name: can't be blank (1001)".into()),
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
                Verdict::Final(400, "first_name: has already been taken (1)".into()),
            ),
        ];
        for (attempt, want) in cases {
            assert_eq!(classify(&attempt), want, "{attempt:?}");
        }
    }

    /// An answer as the client reports it, from the raw body bytes.
    fn raw(status: u16, body: &str) -> Attempt {
        let (error, snippet) = read_error_body(body.as_bytes());
        Attempt::Answered {
            status,
            retry_after: None,
            error,
            snippet,
            validated: None,
        }
    }

    fn retry_because(status: u16, detail: &str, throttled: bool) -> Verdict {
        Verdict::Retry {
            reason: format!("HTTP {status}: {detail}"),
            http: Some(status),
            retry_after: None,
            throttled,
        }
    }

    const BLANK_FIRST: &str =
        r#"{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}}"#;
    const BAD_LAST: &str = r#"{"error":{"message":"contains forbidden characters","code":1001},"meta":{"key":"last_name"}}"#;
    const TAKEN: &str =
        r#"{"error":{"message":"has already been taken","code":1001},"meta":{"key":"user_id"}}"#;

    fn nested(list: &[&str]) -> String {
        format!(
            r#"{{"error":{{"message":"There were issues with your request","code":9999,"errors":[{}]}},"meta":{{}}}}"#,
            list.join(",")
        )
    }

    fn legacy(list: &[&str]) -> String {
        format!(r#"{{"errors":[{}]}}"#, list.join(","))
    }

    // issue #12: every documented body (docs/rate-limiting.md "Error bodies"), the legacy one and
    // garbage, from bytes to the rendered text and the verdict.
    #[test]
    fn documented_bodies_fixtures() {
        let both =
            "first_name: can't be blank (1001); last_name: contains forbidden characters (1001)";
        let cases: Vec<(u16, String, Verdict)> = vec![
            // Single shape, meta with a key.
            (
                404,
                r#"{"error":{"message":"User not found","code":1001},"meta":{"key":"user_id"}}"#.into(),
                Verdict::Final(404, "user_id: User not found (1001)".into()),
            ),
            // Single shape, meta {} (the docs' 500 example): retried.
            (
                500,
                r#"{"error":{"message":"Sorry, an unexpected error occurred. Please try again later.","code":5000},"meta":{}}"#.into(),
                retry_because(500, "Sorry, an unexpected error occurred. Please try again later. (5000)", false),
            ),
            // Single shape, meta absent.
            (
                400,
                r#"{"error":{"message":"Invalid request","code":4001}}"#.into(),
                Verdict::Final(400, "Invalid request (4001)".into()),
            ),
            (
                404,
                r#"{"error":{"message":"Record not found","code":4000},"meta":{}}"#.into(),
                Verdict::Final(404, "Record not found (4000)".into()),
            ),
            (
                400,
                r#"{"error":{"message":"Context not resolved","code":4002},"meta":{"key":"store_id"}}"#.into(),
                Verdict::Final(400, "store_id: Context not resolved (4002)".into()),
            ),
            // Nested multiple shape, and the legacy top-level list: same text.
            (400, nested(&[BLANK_FIRST, BAD_LAST]), Verdict::Final(400, both.into())),
            (400, legacy(&[BLANK_FIRST, BAD_LAST]), Verdict::Final(400, both.into())),
            // A 9999 wrapper with an empty list shows the wrapper.
            (
                400,
                nested(&[]),
                Verdict::Final(400, "There were issues with your request (9999)".into()),
            ),
            // user_id taken, alone, in every shape: exists.
            (400, TAKEN.into(), Verdict::Done(Status::Exists, 400)),
            (400, nested(&[TAKEN]), Verdict::Done(Status::Exists, 400)),
            (400, legacy(&[TAKEN]), Verdict::Done(Status::Exists, 400)),
            // Taken plus another field error: the row needs fixing.
            (
                400,
                nested(&[TAKEN, BLANK_FIRST]),
                Verdict::Final(
                    400,
                    "user_id: has already been taken (1001); first_name: can't be blank (1001)".into(),
                ),
            ),
            (409, nested(&[BLANK_FIRST]), Verdict::Done(Status::Exists, 409)),
            // 2003 "retry later" is transient whatever the status; only a 429 throttles.
            (
                400,
                r#"{"error":{"message":"Please retry later","code":2003},"meta":{}}"#.into(),
                retry_because(400, "Please retry later (2003)", false),
            ),
            (
                403,
                r#"{"error":{"message":"Please retry later","code":2003}}"#.into(),
                retry_because(403, "Please retry later (2003)", false),
            ),
            (
                429,
                r#"{"error":{"message":"rate limit exceeded, retry later","code":2003},"meta":{}}"#.into(),
                retry_because(429, "rate limit exceeded, retry later (2003)", true),
            ),
            (
                400,
                nested(&[r#"{"error":{"message":"Please retry later","code":2003},"meta":{}}"#]),
                retry_because(400, "Please retry later (2003)", false),
            ),
            // ... but not when a field error comes with it.
            (
                400,
                nested(&[r#"{"error":{"message":"Please retry later","code":2003},"meta":{}}"#, BLANK_FIRST]),
                Verdict::Final(400, "Please retry later (2003); first_name: can't be blank (1001)".into()),
            ),
            // 500x is a server fault, also under a 4xx status.
            (
                503,
                r#"{"error":{"message":"Sorry, the service is temporarily unavailable. Please try again later.","code":5001},"meta":{}}"#.into(),
                retry_because(503, "Sorry, the service is temporarily unavailable. Please try again later. (5001)", false),
            ),
            (
                400,
                r#"{"error":{"message":"Sorry, an unexpected error occurred.","code":5000},"meta":{}}"#.into(),
                retry_because(400, "Sorry, an unexpected error occurred. (5000)", false),
            ),
            // 401 refreshes the token whatever the body says.
            (
                401,
                r#"{"error":{"message":"Please retry later","code":2003},"meta":{}}"#.into(),
                Verdict::Unauthorized,
            ),
            // Unknown extra members are ignored.
            (
                400,
                r#"{"error":{"message":"can't be blank","code":1001,"hint":"x"},"meta":{"key":"first_name","request_id":"r-1"},"trace":{"id":7}}"#.into(),
                Verdict::Final(400, "first_name: can't be blank (1001)".into()),
            ),
            // Garbage stays a raw snippet; an empty body names the status.
            (
                400,
                "<html>Bad Request</html>".into(),
                Verdict::Final(400, "<html>Bad Request</html>".into()),
            ),
            (
                400,
                r#"{"error":"boom"}"#.into(),
                Verdict::Final(400, r#"{"error":"boom"}"#.into()),
            ),
            (400, String::new(), Verdict::Final(400, "unexpected HTTP 400".into())),
            (502, "<html>Bad Gateway</html>".into(), retry_because(502, "<html>Bad Gateway</html>", false)),
            (500, String::new(), retry(500, false)),
        ];
        for (status, body, want) in cases {
            assert_eq!(classify(&raw(status, &body)), want, "{status} {body}");
        }
    }

    #[test]
    fn retry_keeps_retry_after_and_detail() {
        let a = Attempt::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            error: body("rate", "too many requests", codes::RETRY_LATER),
            snippet: None,
            validated: None,
        };
        assert_eq!(
            classify(&a),
            Verdict::Retry {
                reason: "HTTP 429: rate: too many requests (2003)".into(),
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
            validated: None,
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
