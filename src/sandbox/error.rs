//! Every non-200 answer of the sandbox, as one enum that renders the documented
//! Connect error bodies, so no handler can answer in an undocumented shape.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::model::{ApiError, ApiErrors, ErrorDetail, ErrorMeta, codes};

/// A refused request, with the status and body the sandbox answers it with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// 400 with one or more field errors: the single shape for one, the
    /// multiple shape for several (as Connect does).
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
    /// 500 injected by `fail_rate`.
    #[error("internal server error")]
    Internal,
    /// 503 injected by `fail_rate`.
    #[error("service unavailable")]
    Unavailable,
}

impl HttpError {
    /// A 400 with a single error that is not about one field (e.g. malformed JSON).
    pub(crate) fn malformed(message: String) -> HttpError {
        HttpError::BadRequest(vec![ApiError {
            error: ErrorDetail {
                message,
                code: codes::MALFORMED,
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
                return (StatusCode::BAD_REQUEST, Json(ApiErrors { errors })).into_response();
            }
            HttpError::Unauthorized { key, message } => (
                StatusCode::UNAUTHORIZED,
                single(message, codes::UNAUTHORIZED, Some(key)),
            ),
            HttpError::Forbidden { key, message } => (
                StatusCode::FORBIDDEN,
                single(message, codes::FORBIDDEN, Some(key)),
            ),
            HttpError::NotFound => (
                StatusCode::NOT_FOUND,
                single("not found", codes::NOT_FOUND, None),
            ),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                single("method not allowed", codes::NOT_FOUND, None),
            ),
            HttpError::Throttled { retry_after } => {
                let body = single(
                    "rate limit exceeded, retry later",
                    codes::RATE_LIMITED,
                    None,
                );
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
                single("internal server error", codes::INTERNAL, None),
            ),
            HttpError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                single("service unavailable", codes::INTERNAL, None),
            ),
        };
        (status, Json(body)).into_response()
    }
}
