//! The sandbox's HTTP surface: the Connect endpoints (token, create-user, and
//! create-user-and-validate-address) and the `/_sandbox/*` inspection and
//! control endpoints, as an axum `Router`. The address endpoint goes through
//! the same stages as create-user, sharing its rate limit, and ends in the
//! upsert instead of the store.
//!
//! A users request goes through the same stages in the same order every time:
//! authenticate (401) → rate limit (429; every request reaching it counts in
//! `max_window` and `/_sandbox/seconds`, and the first one starts the clock of
//! the schedule and of slow start) → fault dice (a spurious 429 is answered at
//! once, like the limiter's) → capacity queue → latency (or slow start's delay)
//! → dice faults (500/503, reset) → parse and validate (400) → store (400
//! taken, or 200) → commit-drop. A 429 carries `Retry-After` only
//! when the sandbox is configured to send it. A handler
//! that wants the connection dropped unanswered returns a response tagged with
//! [`DropConnection`]; the connection layer (`server.rs`) turns that tag into a
//! service error, which makes hyper close the socket without writing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::HttpError;
use super::seconds::Tally;
use super::state::{Admission, ConfigPatch, Fault, InFlight, Shared, Store, Upsert};
use super::validate::{
    AddressInput, AddressRefusal, UserInput, field_error, validate, validate_address,
};
use crate::api::model::{
    ADDRESSES_ROUTE, AddressAnswer, ApiError, CreateUser, ErrorDetail, ErrorMeta, TOKEN_PATH,
    TokenRequest, TokenResponse, USERS_PATH, codes,
};

/// Response extension telling the connection layer to drop the connection instead
/// of writing this response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

type Shr = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(USERS_PATH, post(create_user))
        .route(ADDRESSES_ROUTE, post(create_address))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/seconds", get(seconds))
        .route("/_sandbox/users", get(users))
        .route("/_sandbox/addresses", get(addresses))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/revoke-tokens", post(revoke_tokens))
        .route("/_sandbox/config", get(get_config).post(set_config))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

fn dropped() -> Response {
    let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    resp.extensions_mut().insert(DropConnection);
    resp
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// `POST /v2/oauth/token`.
async fn token(
    State(sh): Shr,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    bump(&sh.counters.requests);
    bump(&sh.counters.token_requests);
    match issue(&sh, query.as_deref(), body) {
        Ok(resp) => resp,
        Err(e) => {
            let c = &sh.counters;
            match e {
                HttpError::Forbidden { .. } => bump(&c.forbidden),
                HttpError::Unauthorized { .. } => bump(&c.unauthorized),
                _ => bump(&c.token_rejected),
            }
            e.into_response()
        }
    }
}

fn issue(
    sh: &Shared,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    refuse_query_credentials(query)?;
    let body = body.map_err(|r| HttpError::malformed(r.body_text()))?;
    let req: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::malformed(format!("malformed JSON body: {e}")))?;
    check_token_request(&req)?;
    let id = req.client_id.as_deref().unwrap_or("");
    let secret = req.client_secret.as_deref().unwrap_or("");
    if !sh.credentials_match(id, secret) {
        return Err(HttpError::Unauthorized {
            key: "client_secret",
            message: "invalid client credentials",
        });
    }
    Ok(token_response(sh))
}

// docs/security.md "Hostile input, secrets and transport": credentials as query
// parameters are refused with 403, whatever the body says.
fn refuse_query_credentials(query: Option<&str>) -> Result<(), HttpError> {
    let Some(q) = query else {
        return Ok(());
    };
    for pair in q.split('&') {
        let key = pair.split('=').next().unwrap_or("");
        if key == "client_id" || key == "client_secret" {
            return Err(HttpError::Forbidden {
                key: if key == "client_id" {
                    "client_id"
                } else {
                    "client_secret"
                },
                message: "credentials must be sent in the JSON body, not the query string",
            });
        }
    }
    Ok(())
}

/// The field errors of a token request: every blank field, then an
/// unsupported grant type, all in one 400.
fn check_token_request(req: &TokenRequest) -> Result<(), HttpError> {
    let mut errors = Vec::new();
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
    for (key, value) in [
        ("client_id", &req.client_id),
        ("client_secret", &req.client_secret),
        ("grant_type", &req.grant_type),
    ] {
        if blank(value) {
            errors.push(field_error(key, codes::BLANK, "can't be blank"));
        }
    }
    if let Some(g) = req.grant_type.as_deref()
        && !g.trim().is_empty()
        && g != "client_credentials"
    {
        errors.push(field_error(
            "grant_type",
            codes::MALFORMED,
            "unsupported grant_type, expected client_credentials",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(HttpError::BadRequest(errors))
    }
}

/// A fresh token, counted, as the 200 body.
fn token_response(sh: &Shared) -> Response {
    let access_token = sh.issue_token();
    bump(&sh.counters.tokens_issued);
    // Whole seconds as on the wire, rounded up so a sub-second test TTL says 1.
    let ttl = sh.token_ttl;
    let expires_in = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Json(TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in,
        created_at,
    })
    .into_response()
}

/// The bearer token of a request, if the header is present and well-formed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `POST /v2/fulfillment/users`.
async fn create_user(
    State(sh): Shr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (_in_flight, fault) = match users_request(&sh, &headers).await {
        Ok(passed) => passed,
        Err(resp) => return resp,
    };
    let resp = match create(&sh, body) {
        Ok(user) => Json(user).into_response(),
        Err(e) => e.into_response(),
    };
    commit(&sh, fault, resp)
}

/// The stages a users request (create-user or the address upsert) passes
/// before the store: the token, the shared users rate limit, the injected
/// faults and latency. Returns the in-flight guard, held until the answer,
/// and the fault rolled for the commit; or the answer that ends it here.
async fn users_request<'a>(
    sh: &'a Shared,
    headers: &HeaderMap,
) -> Result<(InFlight<'a>, Fault), Response> {
    let c = &sh.counters;
    bump(&c.requests);
    bump(&c.users_requests);
    authenticate(sh, headers).map_err(IntoResponse::into_response)?;
    let in_flight = sh.enter();
    let admission = sh.admit();
    if !admission.admitted {
        bump(&c.throttled);
        return Err(throttled(sh));
    }
    let fault = sh.roll();
    match inject_fault(sh, admission, fault).await {
        Some(resp) => Err(resp),
        None => Ok((in_flight, fault)),
    }
}

/// The answer of a request that reached the store, unless the commit-drop
/// fault drops it.
fn commit(sh: &Shared, fault: Fault, resp: Response) -> Response {
    if fault == Fault::CommitDrop {
        // The ambiguous case: the request took effect, the client never hears so.
        bump(&sh.counters.commit_drops);
        tracing::debug!("sandbox: dropping connection after commit (commit-drop fault)");
        return dropped();
    }
    resp
}

/// `POST /v2/fulfillment/users/{user_id}/addresses`: the same stages as
/// create-user (token, the shared users rate limit, faults, latency), then
/// the upsert: validate the address, create the user or find it, attach
/// the address, answer the validated address flat.
async fn create_address(
    State(sh): Shr,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    bump(&sh.counters.address_requests);
    let (_in_flight, fault) = match users_request(&sh, &headers).await {
        Ok(passed) => passed,
        Err(resp) => return resp,
    };
    let resp = match upsert_address(&sh, &user_id, body) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    };
    commit(&sh, fault, resp)
}

fn upsert_address(
    sh: &Shared,
    user_id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<AddressAnswer, HttpError> {
    let c = &sh.counters;
    let parsed = body
        .map_err(|r| HttpError::malformed(r.body_text()))
        .and_then(|b| {
            serde_json::from_slice::<AddressInput>(&b)
                .map_err(|e| HttpError::malformed(format!("malformed JSON body: {e}")))
        });
    let checked = parsed.and_then(|input| {
        validate_address(user_id, input, &sh.long_distance).map_err(|refusal| match refusal {
            AddressRefusal::Invalid(errors) => HttpError::BadRequest(errors),
            AddressRefusal::Undeliverable(e) => {
                bump(&c.undeliverable);
                HttpError::BadRequest(vec![e])
            }
        })
    });
    let checked = match checked {
        Ok(ch) => ch,
        Err(e) => {
            bump(&c.rejected);
            return Err(e);
        }
    };
    if let Upsert::Found = sh.upsert_address(&checked.user, &checked.answer) {
        bump(&c.address_users_found);
    }
    bump(&c.addresses_validated);
    if checked.answer.long_distance_delivery {
        bump(&c.long_distance);
    }
    Ok(checked.answer)
}

/// The 401 for a users request without a valid bearer token, counted.
fn authenticate(sh: &Shared, headers: &HeaderMap) -> Result<(), HttpError> {
    let message = match bearer(headers) {
        None => "missing bearer token",
        Some(t) if !sh.token_valid(t) => "invalid, revoked or expired access token",
        Some(_) => return Ok(()),
    };
    bump(&sh.counters.unauthorized);
    Err(HttpError::Unauthorized {
        key: "access_token",
        message,
    })
}

/// A 429, with `Retry-After` when the sandbox sends it.
fn throttled(sh: &Shared) -> Response {
    HttpError::Throttled {
        retry_after: sh.retry_after(),
    }
    .into_response()
}

/// The rolled fault's answer, if it answers before the store: a spurious 429
/// at once; else, after the capacity queue and the latency, a 500, a 503 or a
/// dropped connection.
async fn inject_fault(sh: &Shared, admission: Admission, fault: Fault) -> Option<Response> {
    let c = &sh.counters;
    let second = admission.second();
    if fault == Fault::Throttle {
        // Admitted, and its slot stays booked: to the client it is just a 429.
        bump(&c.throttled);
        bump(&c.spurious_429);
        sh.tally(second, Tally::Spurious);
        return Some(throttled(sh));
    }
    let answer_at = sh.answer_at(admission.since_first);
    if answer_at > Instant::now() {
        tokio::time::sleep_until(answer_at.into()).await;
    }
    let resp = match fault {
        Fault::Fail500 => {
            bump(&c.faults_500);
            HttpError::Internal.into_response()
        }
        Fault::Fail503 => {
            bump(&c.faults_503);
            HttpError::Unavailable.into_response()
        }
        Fault::Reset => {
            bump(&c.resets);
            tracing::debug!("sandbox: dropping connection (reset fault)");
            dropped()
        }
        Fault::None | Fault::CommitDrop | Fault::Throttle => return None,
    };
    sh.tally(second, Tally::Failed);
    Some(resp)
}

fn create(sh: &Shared, body: Result<Bytes, BytesRejection>) -> Result<CreateUser, HttpError> {
    let c = &sh.counters;
    let parsed = body
        .map_err(|r| HttpError::malformed(r.body_text()))
        .and_then(|b| {
            serde_json::from_slice::<UserInput>(&b)
                .map_err(|e| HttpError::malformed(format!("malformed JSON body: {e}")))
        });
    let user = parsed.and_then(|input| validate(input).map_err(HttpError::BadRequest));
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            bump(&c.rejected);
            return Err(e);
        }
    };
    match sh.store(&user) {
        Store::Created => Ok(user),
        Store::Taken => {
            bump(&c.taken);
            Err(HttpError::BadRequest(vec![ApiError {
                error: ErrorDetail {
                    message: "has already been taken".to_owned(),
                    code: codes::TAKEN,
                },
                meta: Some(ErrorMeta {
                    key: "user_id".to_owned(),
                }),
            }]))
        }
    }
}

async fn not_found(State(sh): Shr) -> Response {
    bump(&sh.counters.requests);
    bump(&sh.counters.not_found);
    HttpError::NotFound.into_response()
}

async fn method_not_allowed(State(sh): Shr) -> Response {
    bump(&sh.counters.requests);
    bump(&sh.counters.not_found);
    HttpError::MethodNotAllowed.into_response()
}

/// `GET /_sandbox/stats`.
async fn stats(State(sh): Shr) -> Response {
    Json(sh.counters.snapshot()).into_response()
}

/// `GET /_sandbox/seconds`.
async fn seconds(State(sh): Shr) -> Response {
    Json(sh.seconds()).into_response()
}

/// `GET /_sandbox/users`.
async fn users(State(sh): Shr) -> Response {
    Json(sh.users()).into_response()
}

/// `GET /_sandbox/addresses`.
async fn addresses(State(sh): Shr) -> Response {
    Json(sh.addresses()).into_response()
}

/// `POST /_sandbox/reset`.
async fn reset(State(sh): Shr) -> StatusCode {
    sh.reset();
    StatusCode::NO_CONTENT
}

/// `POST /_sandbox/revoke-tokens`.
async fn revoke_tokens(State(sh): Shr) -> StatusCode {
    sh.revoke_tokens();
    StatusCode::NO_CONTENT
}

/// `GET /_sandbox/config`.
async fn get_config(State(sh): Shr) -> Response {
    Json(sh.live_config()).into_response()
}

/// `POST /_sandbox/config`: applies a [`ConfigPatch`] and answers the new settings.
async fn set_config(State(sh): Shr, body: Result<Bytes, BytesRejection>) -> Response {
    match configure(&sh, body) {
        Ok(()) => Json(sh.live_config()).into_response(),
        Err(e) => e.into_response(),
    }
}

fn configure(sh: &Shared, body: Result<Bytes, BytesRejection>) -> Result<(), HttpError> {
    let patch = body
        .map_err(|r| HttpError::malformed(r.body_text()))
        .and_then(|b| {
            serde_json::from_slice::<ConfigPatch>(&b)
                .map_err(|e| HttpError::malformed(format!("malformed config: {e}")))
        })
        .and_then(|p| {
            p.check()
                .map(|()| p)
                .map_err(|e| HttpError::malformed(e.to_string()))
        });
    patch.and_then(|p| {
        sh.apply(&p)
            .map_err(|e| HttpError::malformed(e.to_string()))
    })
}

/// A request body the sandbox reads, for [`answer_body`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum BodyRoute {
    /// `POST /v2/oauth/token`, with its query string.
    Token,
    /// `POST /v2/fulfillment/users`.
    User,
    /// `POST /v2/fulfillment/users/{user_id}/addresses`.
    Address,
    /// `POST /_sandbox/config`.
    Config,
}

/// The status the sandbox answers `body` at `route` with, past the token,
/// limiter and fault stages (the fuzz targets' entry, `crate::fuzzing`).
pub(crate) fn answer_body(
    sh: &Shared,
    route: BodyRoute,
    query: Option<&str>,
    user_id: &str,
    body: &[u8],
) -> StatusCode {
    let body = Ok(Bytes::copy_from_slice(body));
    let status = |r: Result<Response, HttpError>| match r {
        Ok(resp) => resp.status(),
        Err(e) => e.into_response().status(),
    };
    match route {
        BodyRoute::Token => status(issue(sh, query, body)),
        BodyRoute::User => status(create(sh, body).map(|u| Json(u).into_response())),
        BodyRoute::Address => {
            status(upsert_address(sh, user_id, body).map(|a| Json(a).into_response()))
        }
        BodyRoute::Config => status(configure(sh, body).map(|()| StatusCode::OK.into_response())),
    }
}
