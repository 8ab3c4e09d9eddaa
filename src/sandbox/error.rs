//! Every non-200 answer of the sandbox, as one enum that renders the documented
//! Connect error bodies, so no handler can answer in an undocumented shape:
//!
//! - one error: `{"error":{"message","code"},"meta":{"key":…}}`, with
//!   `"meta":{}` when no field is named (never left out);
//! - several: nested under the 9999 wrapper,
//!   `{"error":{"message":"There were issues with your request","code":9999,"errors":[…]},"meta":{}}`.
//!
//! Codes are the documented ones (`api::model::codes`): 1001 for field errors,
//! 4001 for a malformed or unauthorised request, 4000 for an unknown path, 2003
//! for a 429, 5000 / 5001 for the injected 500 / 503.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::model::{ApiError, ApiErrors, ErrorDetail, ErrorMeta, codes};

/// The message of Connect's documented 500 answer.
const INTERNAL_MESSAGE: &str = "Sorry, an unexpected error occurred. Please try again later.";
/// The sandbox's message for its injected 503, in the same style.
const UNAVAILABLE_MESSAGE: &str =
    "Sorry, the service is temporarily unavailable. Please try again later.";

/// A refused request, with the status and body the sandbox answers it with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// 400 with one or more field errors: the single shape for one, the
    /// nested 9999 multiple shape for several (as Connect does).
    #[error("bad request ({} errors)", .0.len())]
    BadRequest(Vec<ApiError>),
    /// 401: missing, unknown, revoked or expired token, or wrong client credentials.
    #[error("unauthorized: {message}")]
    Unauthorized {
        key: &'static str,
        message: &'static str,
    },
    /// 403: credentials sent as query parameters.
    #[error("forbidden: {message}")]
    Forbidden {
        key: &'static str,
        message: &'static str,
    },
    /// 404: no such endpoint.
    #[error("not found")]
    NotFound,
    /// 405: known path, wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 429: the per-second threshold was exceeded. Connect documents no
    /// `Retry-After`, so it is sent only when `retry_after` (the sandbox's
    /// `--retry-after`) asks for it.
    #[error("rate limit exceeded")]
    Throttled { retry_after: bool },
    /// 500 injected by `fail_rate`, with Connect's documented 5000 body.
    #[error("internal server error")]
    Internal,
    /// 503 injected by `fail_rate`, with a 500x code.
    #[error("service unavailable")]
    Unavailable,
}

impl HttpError {
    /// A 400 with a single error that is not about one field (e.g. malformed JSON).
    pub(crate) fn malformed(message: String) -> HttpError {
        HttpError::BadRequest(vec![ApiError {
            error: ErrorDetail {
                message,
                code: codes::INVALID_REQUEST,
            },
            meta: None,
        }])
    }
}

fn single(message: impl Into<String>, code: u32, key: Option<&str>) -> ApiError {
    ApiError {
        error: ErrorDetail {
            message: message.into(),
            code,
        },
        meta: key.map(|k| ErrorMeta { key: k.to_owned() }),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            HttpError::BadRequest(mut errors) => {
                if errors.len() == 1
                    && let Some(e) = errors.pop()
                {
                    return (StatusCode::BAD_REQUEST, Json(e)).into_response();
                }
                return (StatusCode::BAD_REQUEST, Json(ApiErrors::new(errors))).into_response();
            }
            HttpError::Unauthorized { key, message } => (
                StatusCode::UNAUTHORIZED,
                single(message, codes::INVALID_REQUEST, Some(key)),
            ),
            HttpError::Forbidden { key, message } => (
                StatusCode::FORBIDDEN,
                single(message, codes::INVALID_REQUEST, Some(key)),
            ),
            HttpError::NotFound => (
                StatusCode::NOT_FOUND,
                single("not found", codes::RECORD_NOT_FOUND, None),
            ),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                single("method not allowed", codes::INVALID_REQUEST, None),
            ),
            HttpError::Throttled { retry_after } => {
                let body = single("rate limit exceeded, retry later", codes::RETRY_LATER, None);
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                if retry_after {
                    // One second is the window of the per-second threshold.
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                return resp;
            }
            HttpError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                single(INTERNAL_MESSAGE, codes::INTERNAL, None),
            ),
            HttpError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                single(UNAVAILABLE_MESSAGE, codes::SERVICE_UNAVAILABLE, None),
            ),
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    async fn render(e: HttpError) -> (StatusCode, Option<HeaderValue>, Value) {
        let resp = e.into_response();
        let status = resp.status();
        let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).expect("JSON body");
        (status, retry_after, body)
    }

    fn field(key: &str, message: &str) -> ApiError {
        single(message, codes::INVALID_PARAMETER, Some(key))
    }

    // docs/rate-limiting.md "Error bodies": the documented single and multiple shapes, `meta` always present.
    #[tokio::test]
    async fn bodies_are_in_the_documented_shapes() {
        let cases = [
            (
                HttpError::BadRequest(vec![field("first_name", "can't be blank")]),
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "can't be blank", "code": 1001}, "meta": {"key": "first_name"}}),
            ),
            (
                HttpError::BadRequest(vec![
                    field("first_name", "can't be blank"),
                    field("last_name", "contains forbidden characters"),
                ]),
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "There were issues with your request", "code": 9999, "errors": [
                    {"error": {"message": "can't be blank", "code": 1001}, "meta": {"key": "first_name"}},
                    {"error": {"message": "contains forbidden characters", "code": 1001}, "meta": {"key": "last_name"}},
                ]}, "meta": {}}),
            ),
            (
                HttpError::malformed("malformed JSON body".into()),
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "malformed JSON body", "code": 4001}, "meta": {}}),
            ),
            (
                HttpError::Unauthorized {
                    key: "access_token",
                    message: "missing bearer token",
                },
                StatusCode::UNAUTHORIZED,
                json!({"error": {"message": "missing bearer token", "code": 4001}, "meta": {"key": "access_token"}}),
            ),
            (
                HttpError::NotFound,
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "not found", "code": 4000}, "meta": {}}),
            ),
            (
                HttpError::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": {"message": "Sorry, an unexpected error occurred. Please try again later.", "code": 5000}, "meta": {}}),
            ),
            (
                HttpError::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"message": UNAVAILABLE_MESSAGE, "code": 5001}, "meta": {}}),
            ),
            (
                HttpError::Throttled { retry_after: false },
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {"message": "rate limit exceeded, retry later", "code": 2003}, "meta": {}}),
            ),
        ];
        for (e, want_status, want_body) in cases {
            let label = e.to_string();
            let (status, _, body) = render(e).await;
            assert_eq!((status, &body), (want_status, &want_body), "{label}");
        }
    }

    #[tokio::test]
    async fn retry_after_only_when_asked() {
        let (_, header, _) = render(HttpError::Throttled { retry_after: true }).await;
        assert_eq!(header, Some(HeaderValue::from_static("1")));
        let (_, header, _) = render(HttpError::Throttled { retry_after: false }).await;
        assert_eq!(header, None);
    }
}
