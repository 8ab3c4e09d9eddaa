//! Transport safety (docs/security.md: Hostile input, secrets and transport,
//! "Transport": plain `http://` only for loopback hosts; redirects are never
//! followed, so the secret and the bearer token go only to the target).
//!
//! Redirects: a tiny axum server stands in for Connect. Its token endpoint
//! works, but its users endpoint (or its token endpoint) answers a redirect
//! to a second local server that records every request it gets. Following
//! the redirect would hand the bearer token (or the client secret) to
//! another host, so the second server must receive nothing at all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::util::{Reports, Run, TestDir};

/// What the second server saw: (method, path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const SECRET: &str = "transport-secret-4e1f";

async fn serve(router: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

/// The recording server: answers 200 with a plausible user to anything, so
/// a client that followed a redirect here would believe it succeeded.
async fn recorder() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .fallback(
            |State(seen): State<Seen>,
             method: axum::http::Method,
             uri: axum::http::Uri,
             headers: HeaderMap| async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string());
                seen.lock()
                    .unwrap()
                    .push((method.to_string(), uri.to_string(), auth));
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "user_id": "r1", "first_name": "Ann",
                        "access_token": TOKEN, "token_type": "Bearer",
                        "expires_in": 86400, "created_at": 0
                    })),
                )
            },
        )
        .with_state(seen.clone());
    let (url, task) = serve(router).await;
    (url, seen, task)
}

fn token_json() -> axum::Json<serde_json::Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    axum::Json(json!({
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 86400,
        "created_at": now,
    }))
}

fn redirect(status: StatusCode, to: &str) -> Response {
    (status, [(header::LOCATION, to.to_string())]).into_response()
}

/// A fake Connect whose users endpoint redirects to `to` with `status`.
async fn redirecting_users(
    status: StatusCode,
    to: String,
) -> (String, tokio::task::JoinHandle<()>) {
    let router = Router::new()
        .route("/v2/oauth/token", post(|| async { token_json() }))
        .route(
            "/v2/fulfillment/users",
            post(move || {
                let to = to.clone();
                async move { redirect(status, &to) }
            }),
        );
    serve(router).await
}

/// A fake Connect whose token endpoint redirects to `to` with `status`.
async fn redirecting_token(
    status: StatusCode,
    to: String,
) -> (String, tokio::task::JoinHandle<()>) {
    let router = Router::new().route(
        "/v2/oauth/token",
        post(move || {
            let to = to.clone();
            async move { redirect(status, &to) }
        }),
    );
    serve(router).await
}

/// A live run of `input` against the fake at `base`, with its credentials.
fn tool(base: &str, input: &Path, out: &Path) -> Run {
    Run::live_at(base)
        .input(input)
        .out(out)
        .env("CONNECT_CLIENT_ID", "transport-client")
        .secret(SECRET)
}

// docs/security.md: Hostile input, secrets and transport (Transport): plain http to a
// non-loopback host is refused before anything
// is sent (no network needed: the check happens first).
#[test]
fn plain_http_to_a_remote_host_is_refused_with_exit_2() {
    let t = TestDir::new();
    let input = t.write_csv("in.csv", &[&["user_id", "first_name"], &["u1", "Ann"]]);
    for sub in [
        vec![
            "run".to_string(),
            input.display().to_string(),
            "--out".into(),
            t.arg("out"),
        ],
        vec!["check".to_string()],
    ] {
        let mut args = sub.clone();
        args.extend(["--base-url".to_string(), "http://example.com".to_string()]);
        let out = Run::cli(args)
            .env("CONNECT_CLIENT_ID", "c")
            .secret(SECRET)
            .output();
        out.expect_code(2).expect_stderr("only for loopback");
        assert!(!out.stderr().contains(SECRET), "{out}");
        assert!(!t.join("out").join("results.csv").exists(), "nothing run");
    }
    // And through the environment variable.
    Run::cli(["check"])
        .env("CONNECT_BASE_URL", "http://10.1.2.3:8080")
        .env("CONNECT_CLIENT_ID", "c")
        .secret(SECRET)
        .output()
        .expect_code(2)
        .expect_stderr("only for loopback");
}

// The users endpoint answers a redirect: it is not followed, the bearer
// token never reaches the other server, and the row ends as a final answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_users_request_is_not_followed() {
    let (other, seen, other_task) = recorder().await;
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[&["user_id", "first_name"], &["u1", "Ann"], &["u2", "Bob"]],
    );
    for status in [
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::FOUND,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::PERMANENT_REDIRECT,
        StatusCode::SEE_OTHER,
    ] {
        let code = status.as_u16();
        let (base, task) = redirecting_users(status, format!("{other}/v2/fulfillment/users")).await;
        let out_dir = t.join(format!("out-{code}"));
        let out = tool(&base, &input, &out_dir)
            .args(["--max-attempts", "2"])
            .output_async()
            .await;
        assert_ne!(out.code(), 101, "{out}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "HTTP {code}: the redirect was followed: {:?}\n{out}",
            seen.lock().unwrap()
        );
        let rows = Reports::at(&out_dir).results();
        assert_eq!(rows.len(), 2, "{out}");
        for r in &rows {
            // Today: `rejected` with "unexpected HTTP 3xx" (a final answer,
            // not retried). `failed` would also be safe.
            assert!(
                r.status == "rejected" || r.status == "failed",
                "HTTP {code}: {r:?}"
            );
            assert_eq!(r.http_status, Some(code), "{r:?}");
            assert!(r.error.contains(&code.to_string()), "{r:?}");
        }
        // The exit code is the one the statuses call for.
        let want = if rows.iter().any(|r| r.status == "rejected") {
            1
        } else {
            75
        };
        out.expect_code(want);
        assert_eq!(i32::from(Reports::at(&out_dir).summary().exit_code), want);
        assert!(!out.stderr().contains(TOKEN), "{out}");
        task.abort();
    }
    other_task.abort();
}

// The token endpoint answers a redirect: not followed, so the client secret
// never reaches the other server; the run stops with exit 3 before any row
// is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_token_request_is_not_followed() {
    let (other, seen, other_task) = recorder().await;
    let t = TestDir::new();
    let input = t.write_csv("in.csv", &[&["user_id", "first_name"], &["u1", "Ann"]]);
    for status in [StatusCode::TEMPORARY_REDIRECT, StatusCode::FOUND] {
        let code = status.as_u16();
        let (base, task) = redirecting_token(status, format!("{other}/v2/oauth/token")).await;
        let out_dir = t.join(format!("out-{code}"));
        let out = tool(&base, &input, &out_dir).output_async().await;
        out.expect_code(3);
        assert!(out.stderr().contains(&code.to_string()), "{out}");
        assert!(!out.stderr().contains(SECRET), "{out}");
        let check = Run::cli(["check", "--base-url", &base])
            .env("CONNECT_CLIENT_ID", "transport-client")
            .secret(SECRET)
            .output_async()
            .await;
        check.expect_code(3);
        assert!(
            seen.lock().unwrap().is_empty(),
            "HTTP {code}: the token redirect was followed: {:?}",
            seen.lock().unwrap()
        );
        let rows = Reports::at(&out_dir).results();
        assert!(rows.iter().all(|r| r.status == "failed" && r.attempts == 0));
        task.abort();
    }
    other_task.abort();
}

/// A fake Connect whose users endpoint refuses every user with a 422 whose
/// message (or key) looks like a spreadsheet formula, chosen by user_id.
async fn formula_errors() -> (String, tokio::task::JoinHandle<()>) {
    let router = Router::new()
        .route("/v2/oauth/token", post(|| async { token_json() }))
        .route(
            "/v2/fulfillment/users",
            post(|axum::Json(body): axum::Json<serde_json::Value>| async move {
                let body = match body["user_id"].as_str().unwrap_or("") {
                    "f1" => json!({"error": {"message": "=HYPERLINK(\"http://evil.example\",\"x\")", "code": 1}}),
                    "f2" => json!({"errors": [{"error": {"message": "+cmd|' /C calc'!A0", "code": 1}}]}),
                    "f3" => json!({"error": {"message": "bad", "code": 1}, "meta": {"key": "@SUM(A1)"}}),
                    _ => json!({"error": {"message": "-1+1", "code": 1}}),
                };
                (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body))
            }),
        );
    serve(router).await
}

// docs/reports.md: Reports (formula injection): cells the tool writes (error messages
// everywhere) are
// neutralised against formula injection, also when the text comes from the
// API; the input's own cells stay verbatim in failures.csv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_messages_are_neutralised_in_reports() {
    let (base, task) = formula_errors().await;
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            &["user_id", "first_name", "phone_number"],
            &["f1", "Ann", "+1 415 555 0101"],
            &["f2", "Bob", ""],
            &["f3", "Cy", ""],
            &["f4", "Di", ""],
        ],
    );
    let out_dir = t.join("out");
    let out = tool(&base, &input, &out_dir).output_async().await;
    out.expect_code(1);
    let rows = Reports::at(&out_dir).results();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r.status, "rejected", "{r:?}");
        assert!(r.error.starts_with('\''), "neutralised: {r:?}");
    }
    let by_id = |id: &str| rows.iter().find(|r| r.user_id == id).unwrap().error.clone();
    assert!(by_id("f1").starts_with("'=HYPERLINK("), "{rows:?}");
    assert!(by_id("f2").starts_with("'+cmd"), "{rows:?}");
    assert!(by_id("f3").starts_with("'@SUM(A1)"), "{rows:?}");
    assert!(by_id("f4").starts_with("'-1+1"), "{rows:?}");
    let failures = Reports::at(&out_dir).failures(b',');
    assert_eq!(failures.len(), 5);
    let header: Vec<&[u8]> = failures[0].iter().collect();
    let msg = header.iter().position(|h| *h == b"error_message").unwrap();
    for rec in &failures[1..] {
        assert_eq!(rec[msg].first(), Some(&b'\''), "{rec:?}");
    }
    // The input's own cells stay verbatim (a +1 phone survives a rerun).
    assert!(failures[1..].iter().any(|r| &r[2] == b"+1 415 555 0101"));
    task.abort();
}
