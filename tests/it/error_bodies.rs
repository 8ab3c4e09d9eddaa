//! Instacart's documented error bodies over real loopback HTTP (issue #12,
//! docs/rate-limiting.md: Error bodies): the sandbox answers in the documented shapes,
//! the library's parser reads them, and the reports name each error as
//! `key: message (code)`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::util::{TOKEN_PATH, USERS_PATH};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use connect_provision::api::classify::{Verdict, classify};
use connect_provision::api::client::Attempt;
use connect_provision::api::model::ErrorBody;
use connect_provision::outcome::Status;
use connect_provision::sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::util::{Reports, Run, TestDir, session};

/// A raw create-user request: the status, the body's bytes, and the body as
/// JSON.
async fn create(
    c: &reqwest::Client,
    sb: &Sandbox,
    token: &str,
    body: &Value,
) -> (u16, Vec<u8>, Value) {
    let resp = c
        .post(format!("{}{USERS_PATH}", sb.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap().to_vec();
    let raw = serde_json::from_slice(&bytes).expect("a JSON body");
    (status, bytes, raw)
}

/// What the tool decides about an answer, from its parsed body.
fn verdict(status: u16, body: &[u8]) -> Verdict {
    classify(&Attempt::Answered {
        status,
        retry_after: None,
        error: Some(ErrorBody::parse(body).unwrap()),
        snippet: None,
        validated: None,
    })
}

// The minimum the issue asks for: a blank first_name and a forbidden last_name
// in one request get the nested 9999 body, and the library renders both.
#[tokio::test]
async fn several_field_errors_come_nested_under_9999() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let body = json!({"user_id": "e1", "first_name": "", "last_name": "a/b"});
    let (status, bytes, raw) = create(&c, &sb, &t, &body).await;
    assert_eq!(status, 400);
    let last = "contains forbidden characters '/' (none of '/:<>$%?' are allowed)";
    assert_eq!(
        raw,
        json!({
            "error": {
                "message": "There were issues with your request",
                "code": 9999,
                "errors": [
                    {"error": {"message": "can't be blank", "code": 1001}, "meta": {"key": "first_name"}},
                    {"error": {"message": last, "code": 1001}, "meta": {"key": "last_name"}},
                ],
            },
            "meta": {},
        })
    );
    let want = format!("first_name: can't be blank (1001); last_name: {last} (1001)");
    assert_eq!(ErrorBody::parse(&bytes).unwrap().summary(), want);
    assert_eq!(verdict(status, &bytes), Verdict::Final(400, want));
    assert!(sb.users().is_empty());
    sb.shutdown().await;
}

// One error: the single shape, `meta` with the key; a taken user_id reads as
// `exists`.
#[tokio::test]
async fn one_error_comes_in_the_single_shape_with_meta() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let body = json!({"user_id": "e2", "first_name": "ann", "locale": "US"});
    let (status, bytes, raw) = create(&c, &sb, &t, &body).await;
    assert_eq!(status, 400);
    assert_eq!(raw["meta"], json!({"key": "locale"}), "{raw}");
    assert_eq!(raw["error"]["code"], 1001, "{raw}");
    assert!(raw["error"].get("errors").is_none(), "{raw}");
    assert_eq!(
        verdict(status, &bytes),
        Verdict::Final(
            400,
            "locale: is not supported: unknown language 'us' (1001)".into()
        )
    );

    let user = json!({"user_id": "e3", "first_name": "ann"});
    assert_eq!(create(&c, &sb, &t, &user).await.0, 200);
    let (status, bytes, raw) = create(&c, &sb, &t, &user).await;
    assert_eq!(status, 400);
    assert_eq!(
        raw,
        json!({"error": {"message": "has already been taken", "code": 1001}, "meta": {"key": "user_id"}})
    );
    assert_eq!(verdict(status, &bytes), Verdict::Done(Status::Exists, 400));

    // A malformed body names no field: `meta` is `{}`, never left out.
    let resp = c
        .post(format!("{}{USERS_PATH}", sb.url()))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let raw: Value = resp.json().await.unwrap();
    assert_eq!(
        (&raw["meta"], &raw["error"]["code"]),
        (&json!({}), &json!(4001)),
        "{raw}"
    );
    sb.shutdown().await;
}

// Injected 500/503: the docs' 500 body, and a 500x code for the 503; both retried.
#[tokio::test]
async fn injected_faults_answer_the_documented_5000_body() {
    let (sb, c, t) = session(SandboxConfig {
        fail_rate: 1.0,
        seed: Some(12),
        ..Default::default()
    })
    .await;
    let mut seen = BTreeMap::new();
    for i in 0..40 {
        let (status, bytes, raw) = create(
            &c,
            &sb,
            &t,
            &json!({"user_id": format!("f{i}"), "first_name": "ann"}),
        )
        .await;
        assert!(
            matches!(
                verdict(status, &bytes),
                Verdict::Retry {
                    throttled: false,
                    ..
                }
            ),
            "{status} {raw}"
        );
        seen.insert(status, raw);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen[&500],
        json!({"error": {"message": "Sorry, an unexpected error occurred. Please try again later.", "code": 5000}, "meta": {}})
    );
    let unavailable = &seen[&503];
    assert_eq!(unavailable["meta"], json!({}), "{unavailable}");
    let code = unavailable["error"]["code"].as_u64().unwrap();
    assert!((5000..=5009).contains(&code), "{unavailable}");
    sb.shutdown().await;
}

// The 429 body: single shape, code 2003 "retry later", `meta` {}.
#[tokio::test]
async fn throttled_answers_2003_in_the_single_shape() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(1),
        ..Default::default()
    })
    .await;
    let mut throttled = None;
    for i in 0..10 {
        let (status, bytes, _) = create(
            &c,
            &sb,
            &t,
            &json!({"user_id": format!("q{i}"), "first_name": "ann"}),
        )
        .await;
        if status == 429 {
            throttled = Some(bytes);
            break;
        }
    }
    let bytes = throttled.expect("a 429 within 10 quick requests at 1/s");
    let raw: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(raw["meta"], json!({}), "{raw}");
    assert_eq!(raw["error"]["code"], 2003, "{raw}");
    assert!(matches!(
        verdict(429, &bytes),
        Verdict::Retry {
            throttled: true,
            ..
        }
    ));
    sb.shutdown().await;
}

/// A stand-in Connect whose users endpoint answers each user_id with a fixed
/// error body, counting the requests per user_id.
async fn scripted(
    answers: Vec<(&'static str, u16, Value)>,
) -> (
    String,
    Arc<Mutex<BTreeMap<String, u32>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let answers = Arc::new(answers);
    let counts = seen.clone();
    let router = Router::new()
        .route(
            TOKEN_PATH,
            post(|| async {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                axum::Json(
                    json!({"access_token": "t0123456789abcdef", "token_type": "Bearer",
                                  "expires_in": 86400, "created_at": now}),
                )
            }),
        )
        .route(
            USERS_PATH,
            post(move |axum::Json(body): axum::Json<Value>| {
                let (answers, counts) = (answers.clone(), counts.clone());
                async move {
                    let id = body["user_id"].as_str().unwrap_or("").to_owned();
                    *counts.lock().unwrap().entry(id.clone()).or_default() += 1;
                    match answers.iter().find(|(u, _, _)| *u == id) {
                        Some((_, status, body)) => (
                            StatusCode::from_u16(*status).unwrap(),
                            axum::Json(body.clone()),
                        ),
                        None => (StatusCode::OK, axum::Json(body)),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), seen, task)
}

fn field(key: &str, message: &str) -> Value {
    json!({"error": {"message": message, "code": 1001}, "meta": {"key": key}})
}

fn nested(errors: Vec<Value>) -> Value {
    json!({"error": {"message": "There were issues with your request", "code": 9999,
                     "errors": errors}, "meta": {}})
}

// End to end through the binary: every shape lands in results.csv and
// failures.csv as `key: message (code)`; a lone taken user_id is `exists`,
// 2003 is retried and ends `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_name_each_error_by_key_message_and_code() {
    let both = "first_name: can't be blank (1001); last_name: is invalid (1001)";
    let errors = || {
        vec![
            field("first_name", "can't be blank"),
            field("last_name", "is invalid"),
        ]
    };
    let taken = || field("user_id", "has already been taken");
    let (base, counts, task) = scripted(vec![
        ("nested", 400, nested(errors())),
        ("legacy", 400, json!({"errors": errors()})),
        ("taken", 400, nested(vec![taken()])),
        (
            "taken-and-bad",
            400,
            nested(vec![taken(), field("first_name", "can't be blank")]),
        ),
        (
            "later",
            400,
            json!({"error": {"message": "Please retry later", "code": 2003}, "meta": {}}),
        ),
        (
            "missing",
            404,
            json!({"error": {"message": "Record not found", "code": 4000}}),
        ),
    ])
    .await;
    let t = TestDir::new();
    let input = t.write_csv(
        "in.csv",
        &[
            &["user_id", "first_name", "last_name"],
            &["nested", "Ann", "Lee"],
            &["legacy", "Bob", "Lee"],
            &["taken", "Cy", "Lee"],
            &["taken-and-bad", "Di", "Lee"],
            &["later", "Ed", "Lee"],
            &["missing", "Flo", "Lee"],
            &["fine", "Gus", "Lee"],
        ],
    );
    let out_dir = t.join("out");
    let out = Run::live_at(base)
        .input(&input)
        .out(&out_dir)
        .args(["--max-attempts", "2"])
        .env("CONNECT_CLIENT_ID", "scripted")
        .secret("scripted-secret")
        .output_async()
        .await;
    out.expect_code(1);

    let rows = Reports::at(&out_dir).results();
    let got: BTreeMap<&str, (&str, Option<u16>, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.user_id.as_str(),
                (r.status.as_str(), r.http_status, r.error.as_str()),
            )
        })
        .collect();
    let want: BTreeMap<&str, (&str, Option<u16>, &str)> = [
        ("nested", ("rejected", Some(400), both)),
        ("legacy", ("rejected", Some(400), both)),
        ("taken", ("exists", Some(400), "")),
        (
            "taken-and-bad",
            (
                "rejected",
                Some(400),
                "user_id: has already been taken (1001); first_name: can't be blank (1001)",
            ),
        ),
        (
            "later",
            ("failed", Some(400), "HTTP 400: Please retry later (2003)"),
        ),
        (
            "missing",
            ("rejected", Some(404), "Record not found (4000)"),
        ),
        ("fine", ("created", Some(200), "")),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{out}");

    // 2003 was retried (both attempts spent); final answers were not.
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts["later"], 2, "{counts:?}");
    assert_eq!(counts["nested"], 1, "{counts:?}");

    // failures.csv carries the same text.
    let failures = Reports::at(&out_dir).failures(b',');
    let header: Vec<&[u8]> = failures[0].iter().collect();
    let msg = header.iter().position(|h| *h == b"error_message").unwrap();
    let by_id: BTreeMap<&[u8], &[u8]> = failures[1..].iter().map(|r| (&r[0], &r[msg])).collect();
    assert_eq!(by_id[&b"nested"[..]], both.as_bytes());
    assert_eq!(by_id[&b"legacy"[..]], both.as_bytes());
    assert_eq!(by_id.len(), 5, "{by_id:?}");
    task.abort();
}
