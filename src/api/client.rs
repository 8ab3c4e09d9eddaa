//! The HTTP client for the two Connect endpoints (README "Running against Instacart").
//!
//! One [`reqwest::Client`] is built once and shared (cloning a `ConnectClient`
//! is cheap), so connections are pooled across all workers. The client only
//! *reports* what happened: `ConnectClient::create_user` makes exactly one
//! request and returns an [`Attempt`] (data, never an error); deciding whether
//! that means created / exists / retry / rejected is `api::classify`'s job, and
//! retrying is `exec::worker`'s. `ConnectClient::fetch_token` returns a typed
//! `TokenError` so the caller can tell "credentials refused" (fatal, exit 3)
//! from "the endpoint is down" (retry).

use std::error::Error as _;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

use crate::api::model::{
    ADDRESSES_SEGMENT, Endpoint, ErrorBody, TOKEN_PATH, TokenRequestRef, TokenResponse, USERS_PATH,
    ValidatedAddress,
};

/// Longest Retry-After we honour. A server asking for more is treated as asking
/// for this much, so one odd header cannot park the whole pool for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Longest token lifetime we believe. A token answer that claims more (up to
/// `u64::MAX` seconds) is taken to say this much: the clock cannot add more.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How much of an unparseable error body is kept for messages.
const SNIPPET_LEN: usize = 200;

/// Partner credentials for the client_credentials grant.
///
/// `Debug` shows the secret as `[REDACTED]` (secrecy's `SecretString`).
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    /// OAuth `client_id`.
    pub client_id: String,
    /// OAuth `client_secret`.
    pub client_secret: SecretString,
    /// OAuth scope, e.g. `connect:fulfillment`; left out of the request when `None`.
    pub scope: Option<String>,
}

/// A base URL, parsed once: http or https, with a host. It shows without a
/// trailing slash, as messages and summary.json name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseUrl(Url);

impl BaseUrl {
    /// Parse `s`; an error names the URL and what is wrong with it.
    pub(crate) fn parse(s: &str) -> Result<BaseUrl, ClientBuildError> {
        let url = Url::parse(s.trim()).map_err(|e| invalid_url(s, &e.to_string()))?;
        BaseUrl::new(url).map_err(|reason| invalid_url(s, reason))
    }

    /// Check an already parsed URL.
    pub(crate) fn new(url: Url) -> Result<BaseUrl, &'static str> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("scheme must be http or https");
        }
        if url.host_str().is_none() {
            return Err("no host");
        }
        Ok(BaseUrl(url))
    }

    /// The endpoint at `path` below this base.
    fn join(&self, path: &str) -> Result<Url, ClientBuildError> {
        let s = format!("{self}{path}");
        Url::parse(&s).map_err(|e| invalid_url(&s, &e.to_string()))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

fn invalid_url(url: &str, reason: &str) -> ClientBuildError {
    ClientBuildError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Why a [`ConnectClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBuildError {
    /// The base URL does not parse or is not http(s).
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// reqwest refused the configuration (e.g. no TLS backend).
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// How a request failed before an HTTP answer arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The per-request (or connect) timeout elapsed.
    Timeout,
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// The connection was dropped after the request may have been sent —
    /// the ambiguous case: the server may have acted on it.
    Reset,
    /// Anything else reqwest reported.
    Other,
}

impl TransportKind {
    /// Short word for reasons and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TransportKind::Timeout => "timeout",
            TransportKind::Connect => "connection error",
            TransportKind::Reset => "connection reset",
            TransportKind::Other => "transport error",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one `POST /v2/fulfillment/users` produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered with a status line.
    Answered {
        /// The HTTP status code.
        status: u16,
        /// Parsed `Retry-After` (delta-seconds or HTTP-date), capped at `MAX_RETRY_AFTER`.
        retry_after: Option<Duration>,
        /// The documented 4xx body, when it parsed.
        error: Option<ErrorBody>,
        /// Start of a non-2xx body that did not parse as [`ErrorBody`].
        snippet: Option<String>,
        /// The address endpoint's 2xx answer, read liberally (fields at
        /// the top level or under `address`); `None` for create-user.
        validated: Option<ValidatedAddress>,
    },
    /// No answer: the request failed in transport.
    Transport {
        /// How it failed.
        kind: TransportKind,
        /// The error and its causes, as text.
        message: String,
    },
}

/// An access token as issued by `POST /v2/oauth/token`.
#[derive(Debug)]
pub(crate) struct Token {
    /// The bearer token for `Authorization` headers.
    pub access_token: SecretString,
    /// Lifetime from the moment it was received (`expires_in`).
    pub(crate) expires_in: Duration,
}

/// Why no token could be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// 400/401/403: the credentials (or scope) were refused. Fatal: exit 3.
    #[error("credentials refused by the token endpoint (HTTP {status}): {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// What the answer's body said (or the status text).
        message: String,
    },
    /// 408/429/5xx: the endpoint is temporarily unavailable. Retryable.
    #[error("token endpoint unavailable (HTTP {status})")]
    Unavailable {
        /// The HTTP status code.
        status: u16,
        /// The answer's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer (connect error, timeout, reset). Retryable.
    #[error("cannot reach the token endpoint ({kind}): {message}")]
    Transport {
        /// How it failed.
        kind: TransportKind,
        /// The error and its causes, as text.
        message: String,
    },
    /// Any other answer (3xx, 404, …): wrong base URL or API. Fatal.
    #[error("unexpected answer from the token endpoint (HTTP {status}): {message}")]
    Unexpected {
        /// The HTTP status code.
        status: u16,
        /// What the answer's body said (or the status text).
        message: String,
    },
    /// A 2xx whose body is not a token. Fatal.
    #[error("malformed token response: {0}")]
    Malformed(String),
    /// Several fresh tokens in a row were answered with 401. Fatal.
    #[error("token rejected immediately after refresh ({0} fresh tokens in a row answered 401)")]
    RejectedAfterRefresh(u32),
    /// The token manager's background task is gone (runtime shutting down).
    #[error("token manager stopped")]
    Stopped,
}

impl TokenError {
    /// Worth retrying with backoff (the endpoint may come back).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Unavailable { .. } | TokenError::Transport { .. }
        )
    }

    /// Retry-After sent with the error, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Client for the Connect endpoints. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct ConnectClient {
    http: reqwest::Client,
    base: Url,
    token_url: Url,
    users_url: Url,
    credentials: std::sync::Arc<Credentials>,
}

impl fmt::Debug for ConnectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectClient")
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl ConnectClient {
    /// Build the client. `timeout` bounds each whole request (send + body);
    /// connecting is bounded by the smaller of `timeout` and 10 s.
    ///
    /// Redirects are never followed (a redirected POST would silently become a
    /// GET or leak the bearer token), and loopback targets bypass any
    /// `HTTP_PROXY` from the environment.
    pub(crate) fn new(
        base: &BaseUrl,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<ConnectClient, ClientBuildError> {
        let (token_url, users_url) = (base.join(TOKEN_PATH)?, base.join(USERS_PATH)?);

        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Shorter than common server keep-alives, so we rarely reuse a
            // connection the server is closing ("connection closed before
            // message completed" — retryable anyway, but wasteful).
            .pool_idle_timeout(Duration::from_secs(20))
            // No hidden retries of HTTP/2 protocol NACKs inside reqwest: every
            // attempt goes through the worker's loop, so it takes a limiter
            // slot and is counted. It also spares a copy of every request's
            // headers made in case of such a retry.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .user_agent(concat!("connect-provision/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base.0) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(ClientBuildError::Http)?;
        Ok(ConnectClient {
            http,
            base: base.0.clone(),
            token_url,
            users_url,
            credentials: std::sync::Arc::new(credentials),
        })
    }

    /// `POST /v2/oauth/token` with the credentials in a JSON body (as query
    /// parameters Connect refuses them with 403). One request, no retries.
    pub(crate) async fn fetch_token(&self) -> Result<Token, TokenError> {
        let creds = &*self.credentials;
        let body = TokenRequestRef {
            client_id: &creds.client_id,
            client_secret: creds.client_secret.expose_secret(),
            grant_type: "client_credentials",
            scope: creds.scope.as_deref(),
        };
        let resp = self
            .http
            .post(self.token_url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| TokenError::Transport {
                kind: transport_kind(&e),
                message: crate::error_chain::chain(&e),
            })?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| TokenError::Transport {
            kind: transport_kind(&e),
            message: crate::error_chain::chain(&e),
        })?;
        read_token_answer(status, retry_after, &bytes)
    }

    /// `POST /v2/fulfillment/users`: exactly one request, whatever happens.
    pub(crate) async fn create_user(&self, token: &str, body: Bytes) -> Attempt {
        self.post(token, self.users_url.clone(), body, false).await
    }

    /// One request to `endpoint` for `user_id`: create-user, or
    /// `POST /v2/fulfillment/users/{user_id}/addresses` (the id
    /// percent-encoded as one path segment).
    pub(crate) async fn send(
        &self,
        token: &str,
        endpoint: Endpoint,
        user_id: &str,
        body: Bytes,
    ) -> Attempt {
        match endpoint {
            Endpoint::Users => self.create_user(token, body).await,
            Endpoint::Addresses => {
                let mut url = self.users_url.clone();
                match url.path_segments_mut() {
                    Ok(mut path) => {
                        path.push(user_id).push(ADDRESSES_SEGMENT);
                    }
                    Err(()) => {
                        return Attempt::Transport {
                            kind: TransportKind::Other,
                            message: "the base URL cannot take a path".into(),
                        };
                    }
                }
                self.post(token, url, body, true).await
            }
        }
    }

    /// Exactly one POST of `body` to `url`, whatever happens.
    ///
    /// `body` is the JSON, serialised once per row; retries clone the
    /// `Bytes` (a refcount bump). The response body is always read, so the
    /// connection goes back to the pool. With `read_address`, a 2xx body is
    /// read as the address endpoint's answer.
    async fn post(&self, token: &str, url: Url, body: Bytes, read_address: bool) -> Attempt {
        let mut auth = match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(v) => v,
            Err(_) => {
                return Attempt::Transport {
                    kind: TransportKind::Other,
                    message: "access token is not a valid header value".into(),
                };
            }
        };
        // Keeps the token out of any Debug output of the request.
        auth.set_sensitive(true);
        let sent = self
            .http
            .post(url)
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Transport {
                    kind: transport_kind(&e),
                    message: crate::error_chain::chain(&e),
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A failed body read does not change what the status line said (a 200
        // is a creation even if the echo was cut off), so keep the status.
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(status = status.as_u16(), error = %crate::error_chain::chain(&e), "cannot read response body");
                Bytes::new()
            }
        };
        Attempt::answered(
            status,
            retry_after.as_deref(),
            &bytes,
            read_address,
            SystemTime::now(),
        )
    }
}

impl Attempt {
    /// An answer as [`ConnectClient`] reads it: the status, the
    /// `Retry-After` header's text, the body; with `read_address`, a 2xx
    /// body is read as the address endpoint's answer.
    pub(crate) fn answered(
        status: StatusCode,
        retry_after: Option<&str>,
        bytes: &[u8],
        read_address: bool,
        now: SystemTime,
    ) -> Attempt {
        let (error, snippet) = if status.is_success() {
            (None, None)
        } else {
            read_error_body(bytes)
        };
        let validated = (read_address && status.is_success())
            .then(|| {
                let v = ValidatedAddress::from_answer(bytes);
                if v.is_none() {
                    tracing::debug!(
                        "the address answer is not a JSON object; nothing validated kept"
                    );
                }
                v
            })
            .flatten();
        Attempt::Answered {
            status: status.as_u16(),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            error,
            snippet,
            validated,
        }
    }
}

/// The token endpoint's answer: a token from a 2xx, else the typed refusal.
pub(crate) fn read_token_answer(
    status: StatusCode,
    retry_after: Option<Duration>,
    bytes: &[u8],
) -> Result<Token, TokenError> {
    let code = status.as_u16();
    if status.is_success() {
        let parsed: TokenResponse =
            serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if parsed.access_token.is_empty() {
            return Err(TokenError::Malformed("empty access_token".into()));
        }
        return Ok(Token {
            access_token: SecretString::from(parsed.access_token),
            expires_in: Duration::from_secs(parsed.expires_in).min(MAX_TOKEN_LIFETIME),
        });
    }
    let message = || describe_body(bytes).unwrap_or_else(|| status_text(status));
    Err(match code {
        400 | 401 | 403 => TokenError::Refused {
            status: code,
            message: message(),
        },
        408 | 429 | 500..=599 => TokenError::Unavailable {
            status: code,
            retry_after,
        },
        _ => TokenError::Unexpected {
            status: code,
            message: message(),
        },
    })
}

/// True for `localhost` and loopback IP hosts (`127.0.0.0/8`, `[::1]`).
fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// True for `localhost` and loopback IP literals, bracketed IPv6 included.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP-date relative to `now`.
/// A date in the past means "now" (zero). Capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        // Not RFC 9110, but some servers send fractions; accept sane ones.
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(secs).unwrap_or(MAX_RETRY_AFTER)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, SystemTime::now())
}

/// Classify a reqwest error. hyper's "connection closed before message
/// completed" and io resets mean the request may have reached the server.
fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_timeout() {
        return TransportKind::Timeout;
    }
    if e.is_connect() {
        return TransportKind::Connect;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return TransportKind::Reset;
                }
                TimedOut => return TransportKind::Timeout,
                _ => {}
            }
        }
        // hyper is not a direct dependency, so recognise its messages by text.
        let text = s.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("connection reset")
            || text.contains("connection error")
            || text.contains("incomplete message")
        {
            return TransportKind::Reset;
        }
        source = s.source();
    }
    TransportKind::Other
}

/// A non-2xx body: the parsed [`ErrorBody`] in any of its shapes, or else the
/// start of the raw text (`None` for an empty body).
pub(crate) fn read_error_body(bytes: &[u8]) -> (Option<ErrorBody>, Option<String>) {
    match ErrorBody::parse(bytes) {
        Ok(e) => (Some(e), None),
        Err(_) => (None, snippet(bytes)),
    }
}

fn describe_body(bytes: &[u8]) -> Option<String> {
    match read_error_body(bytes) {
        (Some(b), _) => Some(b.summary()),
        (None, snippet) => snippet,
    }
}

fn snippet(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut s: String = text.chars().take(SNIPPET_LEN).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    Some(s)
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Found by the `answer` fuzz target (fuzz/corpus/answer/token_forever):
    // a token answer with `"expires_in": 18446744073709551615` made the
    // token manager panic adding the lifetime to the clock.
    #[test]
    fn a_token_that_lasts_forever_is_taken_for_a_year() {
        let body = br#"{"access_token":"t","token_type":"Bearer","expires_in":18446744073709551615,"created_at":0}"#;
        let Ok(token) = read_token_answer(StatusCode::OK, None, body) else {
            panic!("a token");
        };
        let now = tokio::time::Instant::now();
        let opts = crate::api::token::TokenOptions::default();
        let (expires, refresh) = crate::api::token::deadlines(now, token.expires_in, &opts);
        assert!(now < refresh && refresh < expires);
        assert_eq!(token.expires_in, MAX_TOKEN_LIFETIME);
    }

    fn creds() -> Credentials {
        Credentials {
            client_id: "cid".into(),
            client_secret: SecretString::from("s3cr3t-value".to_owned()),
            scope: Some("connect:fulfillment".into()),
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = creds();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("cid"));
        let client = ConnectClient::new(
            &BaseUrl::parse("http://127.0.0.1:1").unwrap(),
            c,
            Duration::from_secs(1),
        )
        .expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn loopback_hosts() {
        let yes = [
            "http://127.0.0.1:8787",
            "http://localhost/",
            "http://[::1]:80",
            "http://127.1.2.3",
        ];
        let no = [
            "https://connect.instacart.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
        ];
        for u in yes {
            assert!(is_loopback(&Url::parse(u).expect("url")), "{u}");
        }
        for u in no {
            assert!(!is_loopback(&Url::parse(u).expect("url")), "{u}");
        }
    }

    #[test]
    fn endpoint_urls_join_the_base() {
        let c = ConnectClient::new(
            &BaseUrl::parse("http://127.0.0.1:9/").unwrap(),
            creds(),
            Duration::from_secs(1),
        )
        .expect("client");
        assert_eq!(c.token_url.as_str(), "http://127.0.0.1:9/v2/oauth/token");
        assert_eq!(
            c.users_url.as_str(),
            "http://127.0.0.1:9/v2/fulfillment/users"
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("not a url").is_err());
        assert_eq!(
            BaseUrl::parse("https://connect.example.com/")
                .unwrap()
                .to_string(),
            "https://connect.example.com"
        );
    }

    #[test]
    fn snippets_are_bounded() {
        assert_eq!(snippet(b"   "), None);
        let long = "x".repeat(1_000);
        let s = snippet(long.as_bytes()).expect("snippet");
        assert_eq!(s.chars().count(), SNIPPET_LEN + 1);
    }

    #[test]
    fn token_error_transience() {
        assert!(
            TokenError::Unavailable {
                status: 503,
                retry_after: None
            }
            .is_transient()
        );
        assert!(
            TokenError::Transport {
                kind: TransportKind::Connect,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !TokenError::Refused {
                status: 401,
                message: String::new()
            }
            .is_transient()
        );
        assert!(!TokenError::RejectedAfterRefresh(3).is_transient());
    }
}
