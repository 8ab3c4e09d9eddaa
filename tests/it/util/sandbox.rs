//! The sandbox on loopback, the raw HTTP calls the protocol tests make
//! against it, and the check that it holds what the reports say.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::wire::{TOKEN_PATH, USERS_PATH};
use connect_provision::api::model::{ApiError, ErrorBody, TokenResponse};
use connect_provision::sandbox::{Sandbox, SandboxConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::reports::ResultRow;

/// The client id the sandbox accepts by default.
pub const SANDBOX_CLIENT: &str = "sandbox-client";

/// The client secret the sandbox accepts by default.
pub const SANDBOX_SECRET: &str = "sandbox-secret";

/// A sandbox on `127.0.0.1:0`.
pub async fn sandbox(cfg: SandboxConfig) -> Sandbox {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    Sandbox::start(cfg, listen).await.expect("sandbox starts")
}

/// The sandbox holds exactly the users of the rows reported created/exists,
/// and never created a user twice.
#[track_caller]
pub fn assert_sandbox_matches(sb: &Sandbox, results: &[ResultRow]) {
    let reported: BTreeSet<String> = results
        .iter()
        .filter(|r| r.status == "created" || r.status == "exists")
        .map(|r| r.user_id.clone())
        .collect();
    let stored: BTreeSet<String> = sb.users().into_iter().map(|u| u.user_id).collect();
    assert_eq!(stored, reported, "sandbox users vs rows created/exists");
    assert_eq!(sb.stats().duplicate_creations, 0);
}

/// An HTTP client for loopback: no proxy, a 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// POST `body` to the sandbox's token endpoint.
pub async fn post_token(c: &reqwest::Client, sb: &Sandbox, body: Value) -> reqwest::Response {
    c.post(format!("{}{TOKEN_PATH}", sb.url()))
        .json(&body)
        .send()
        .await
        .expect("token request")
}

/// The token request body with the sandbox's default credentials.
pub fn good_creds() -> Value {
    json!({"client_id": SANDBOX_CLIENT, "client_secret": SANDBOX_SECRET, "grant_type": "client_credentials"})
}

/// A token for the sandbox's default credentials.
pub async fn token(c: &reqwest::Client, sb: &Sandbox) -> String {
    let resp = post_token(c, sb, good_creds()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json::<TokenResponse>()
        .await
        .expect("token response")
        .access_token
}

/// POST `body` to the create-user endpoint with `token`.
pub async fn create(
    c: &reqwest::Client,
    sb: &Sandbox,
    token: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{}{USERS_PATH}", sb.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
}

/// POST `body` to the address endpoint of `user_id` with `token`, the way
/// the docs' curl does (`user_id` percent-encoded as one path segment).
pub async fn post_address(
    c: &reqwest::Client,
    sb: &Sandbox,
    token: &str,
    user_id: &str,
    body: &Value,
) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&format!("{}{USERS_PATH}", sb.url())).expect("users URL");
    url.path_segments_mut()
        .expect("a base URL")
        .push(user_id)
        .push("addresses");
    c.post(url)
        .bearer_auth(token)
        .header("Accept", "application/json")
        .json(body)
        .send()
        .await
        .expect("address request")
}

/// The smallest valid create-user body.
pub fn user(id: &str) -> Value {
    json!({"user_id": id, "first_name": "ann"})
}

/// An answer with `status` in the single-error shape (not the multiple
/// one): its error.
pub async fn single_error(resp: reqwest::Response, status: StatusCode) -> ApiError {
    assert_eq!(resp.status(), status, "{}", resp.url());
    match resp.json::<ErrorBody>().await.expect("error body") {
        ErrorBody::Single(e) => e,
        ErrorBody::Multiple(m) => panic!("expected the single-error shape, got {m:?}"),
    }
}

/// GET `path` from the sandbox, expecting 200 and a JSON `T`.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    c: &reqwest::Client,
    sb: &Sandbox,
    path: &str,
) -> T {
    let resp = c
        .get(format!("{}{path}", sb.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.expect("JSON body")
}

/// POST to one of the sandbox's control endpoints, with an optional JSON body.
pub async fn post_control(
    c: &reqwest::Client,
    sb: &Sandbox,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = c.post(format!("{}{path}", sb.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("control request")
}

/// The outcome of one create request, for comparing fault sequences.
pub async fn outcome(c: &reqwest::Client, sb: &Sandbox, t: &str, id: &str) -> String {
    match create(c, sb, t, &user(id)).await {
        Ok(resp) => resp.status().as_u16().to_string(),
        Err(_) => "dropped".to_owned(),
    }
}

/// The outcomes of 40 creates in a row: the sandbox's fault dice, as seen.
pub async fn fault_sequence(sb: &Sandbox) -> Vec<String> {
    let c = client();
    let t = token(&c, sb).await;
    let mut seq = Vec::new();
    for i in 0..40 {
        seq.push(outcome(&c, sb, &t, &format!("s{i}")).await);
    }
    seq
}

/// A sandbox with `cfg`, an HTTP client for it and a token for its default
/// credentials: where every protocol test starts.
pub async fn session(cfg: SandboxConfig) -> (Sandbox, reqwest::Client, String) {
    let sb = sandbox(cfg).await;
    let c = client();
    let t = token(&c, &sb).await;
    (sb, c, t)
}
