//! Protocol tests of the sandbox over real HTTP on loopback (docs/sandbox.md: The
//! sandbox, Error bodies). Every test starts its own server on port 0.

use std::net::SocketAddr;
use std::time::Duration;

use crate::util::{TOKEN_PATH, USERS_PATH, codes};
use connect_provision::api::model::{ApiError, ApiErrors, CreateUser, ErrorBody, TokenResponse};
use connect_provision::sandbox::{ConfigPatch, LiveConfig, Sandbox, SandboxConfig, Stats};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{
    client, create, fault_sequence, get_json, good_creds, post_control, post_token, sandbox,
    session, single_error, token, user,
};

fn key(e: &ApiError) -> &str {
    e.meta.as_ref().map_or("", |m| m.key.as_str())
}

// --- token endpoint -------------------------------------------------------

#[tokio::test]
async fn token_success_returns_documented_fields() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    let resp = post_token(&c, &sb, good_creds()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let t: TokenResponse = resp.json().await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, 86_400);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - t.created_at).abs() <= 5,
        "created_at {}",
        t.created_at
    );
    assert!(t.access_token.len() >= 32);
    // A scope is accepted, and every token is fresh.
    let mut with_scope = good_creds();
    with_scope["scope"] = json!("connect:fulfillment");
    let t2: TokenResponse = post_token(&c, &sb, with_scope).await.json().await.unwrap();
    assert_ne!(t.access_token, t2.access_token);
    let s = sb.stats();
    assert_eq!((s.token_requests, s.tokens_issued), (2, 2));
}

#[tokio::test]
async fn token_wrong_credentials_is_401_single_shape() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    for body in [
        json!({"client_id": "sandbox-client", "client_secret": "nope", "grant_type": "client_credentials"}),
        json!({"client_id": "other", "client_secret": "sandbox-secret", "grant_type": "client_credentials"}),
    ] {
        let resp = post_token(&c, &sb, body).await;
        let e = single_error(resp, StatusCode::UNAUTHORIZED).await;
        assert_eq!(e.error.code, codes::INVALID_REQUEST);
    }
    let s = sb.stats();
    assert_eq!((s.unauthorized, s.tokens_issued), (2, 0));
}

#[tokio::test]
async fn token_credentials_in_query_are_403() {
    // docs/sandbox.md: The sandbox ("Credentials sent as query parameters get 403").
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    let resp = c
        .post(format!(
            "{}{TOKEN_PATH}?client_id=sandbox-client&client_secret=sandbox-secret&grant_type=client_credentials",
            sb.url()
        ))
        .json(&good_creds())
        .send()
        .await
        .unwrap();
    let e = single_error(resp, StatusCode::FORBIDDEN).await;
    assert_eq!(e.error.code, codes::INVALID_REQUEST);
    let s = sb.stats();
    assert_eq!((s.forbidden, s.tokens_issued), (1, 0));
}

#[tokio::test]
async fn token_malformed_requests_are_400() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();

    let resp = c
        .post(format!("{}{TOKEN_PATH}", sb.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        single_error(resp, StatusCode::BAD_REQUEST).await.error.code,
        codes::INVALID_REQUEST
    );

    // All missing fields at once, in the multiple-errors shape.
    let resp = post_token(&c, &sb, json!({})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: ApiErrors = resp.json().await.unwrap();
    let keys: Vec<&str> = body.errors.iter().map(key).collect();
    assert_eq!(keys, ["client_id", "client_secret", "grant_type"]);

    let mut wrong_grant = good_creds();
    wrong_grant["grant_type"] = json!("password");
    let resp = post_token(&c, &sb, wrong_grant).await;
    assert_eq!(
        key(&single_error(resp, StatusCode::BAD_REQUEST).await),
        "grant_type"
    );

    let s = sb.stats();
    assert_eq!((s.token_rejected, s.tokens_issued), (3, 0));
}

// --- create user: success and validation ----------------------------------

#[tokio::test]
async fn create_user_docs_example_is_title_cased_and_stored() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let body = json!({"user_id": "u-1", "first_name": "john", "last_name": "smith",
                      "phone_number": "+18005550100", "locale": "en-US"});
    let resp = create(&c, &sb, &t, &body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(
        echoed,
        json!({"user_id": "u-1", "first_name": "John", "last_name": "Smith",
               "phone_number": "+18005550100", "locale": "en-US"})
    );

    let resp = create(
        &c,
        &sb,
        &t,
        &json!({"user_id": "u-2", "first_name": "mary-ann", "last_name": "o'neil"}),
    )
    .await
    .unwrap();
    let u: CreateUser = resp.json().await.unwrap();
    assert_eq!(
        (u.first_name.as_str(), u.last_name.as_deref()),
        ("Mary-Ann", Some("O'Neil"))
    );

    let stored = sb.users();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].user_id, "u-1");
    assert_eq!(stored[0].first_name, "John");
    assert_eq!(stored[1].user_id, "u-2");
    assert_eq!(sb.stats().created, 2);
}

#[tokio::test]
async fn each_validation_error_has_single_shape_and_field_key() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let mut cases = vec![
        (
            json!({"first_name": "ann"}),
            "user_id",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "  ", "first_name": "ann"}),
            "user_id",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1"}),
            "first_name",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": ""}),
            "first_name",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": "ann", "last_name": "x?y"}),
            "last_name",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": "ann", "phone_number": "8005550100"}),
            "phone_number",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": "ann", "phone_number": "+1 800 555 0100"}),
            "phone_number",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": "ann", "locale": "english"}),
            "locale",
            codes::INVALID_PARAMETER,
        ),
        (
            json!({"user_id": "v1", "first_name": "ann", "locale": "en_US"}),
            "locale",
            codes::INVALID_PARAMETER,
        ),
    ];
    // Each character `first_name` must not hold.
    cases.extend("/:<>$%?".chars().map(|ch| {
        let body = json!({"user_id": "v1", "first_name": format!("a{ch}b")});
        (body, "first_name", codes::INVALID_PARAMETER)
    }));
    for (body, want_key, want_code) in &cases {
        let resp = create(&c, &sb, &t, body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let e = single_error(resp, StatusCode::BAD_REQUEST).await;
        assert_eq!((key(&e), e.error.code), (*want_key, *want_code), "{body}");
    }
    assert!(sb.users().is_empty());
    let s = sb.stats();
    assert_eq!((s.rejected, s.created), (cases.len() as u64, 0));
}

#[tokio::test]
async fn several_validation_errors_use_multiple_shape() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let body = json!({"user_id": "", "first_name": "a%b", "phone_number": "12", "locale": "??"});
    let resp = create(&c, &sb, &t, &body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let raw: Value = resp.json().await.unwrap();
    // docs/rate-limiting.md: Error bodies: nested under the 9999 wrapper, with `meta` {}
    // (issue #12).
    assert_eq!(raw["error"]["code"], 9999, "{raw}");
    assert_eq!(raw["meta"], json!({}), "{raw}");
    assert!(raw.get("errors").is_none(), "{raw}");
    let body: ApiErrors = serde_json::from_value(raw).unwrap();
    let got: Vec<(&str, u32)> = body.errors.iter().map(|e| (key(e), e.error.code)).collect();
    assert_eq!(
        got,
        [
            ("user_id", codes::INVALID_PARAMETER),
            ("first_name", codes::INVALID_PARAMETER),
            ("phone_number", codes::INVALID_PARAMETER),
            ("locale", codes::INVALID_PARAMETER),
        ]
    );
    assert!(sb.users().is_empty());
}

#[tokio::test]
async fn malformed_json_body_is_400_in_documented_shape() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    for raw in [
        "{\"user_id\": ",
        "[1,2]",
        "{\"user_id\": 5, \"first_name\": \"a\"}",
        "",
    ] {
        let resp = c
            .post(format!("{}{USERS_PATH}", sb.url()))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(
            single_error(resp, StatusCode::BAD_REQUEST).await.error.code,
            codes::INVALID_REQUEST,
            "{raw:?}"
        );
    }
    assert!(sb.users().is_empty());
    assert_eq!(sb.stats().rejected, 4);
}

#[tokio::test]
async fn taken_user_id_is_400_with_meta_key_user_id() {
    // docs/sandbox.md: The sandbox ("A `user_id` already stored gets 400 `has already
    // been taken`").
    let (sb, c, t) = session(SandboxConfig::default()).await;
    assert_eq!(
        create(&c, &sb, &t, &user("dup")).await.unwrap().status(),
        StatusCode::OK
    );
    let resp = create(&c, &sb, &t, &json!({"user_id": "dup", "first_name": "bob"}))
        .await
        .unwrap();
    let e = single_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(key(&e), "user_id");
    assert_eq!(e.error.code, codes::INVALID_PARAMETER);
    assert_eq!(e.error.message, "has already been taken");
    assert!(ErrorBody::Single(e).is_user_id_taken());
    // The first user is kept as it was.
    assert_eq!(sb.users()[0].first_name, "Ann");
    let s = sb.stats();
    assert_eq!(
        (s.created, s.taken, s.rejected, s.duplicate_creations),
        (1, 1, 0, 0)
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_user_id_store_it_once() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (c, url, t) = (c.clone(), format!("{}{USERS_PATH}", sb.url()), t.clone());
        set.spawn(async move {
            c.post(url)
                .bearer_auth(t)
                .json(&user("same"))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = set.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_REQUEST)
            .count(),
        39
    );
    let s = sb.stats();
    assert_eq!((s.created, s.taken, s.duplicate_creations), (1, 39, 0));
    assert_eq!(sb.users().len(), 1);
}

// --- authentication --------------------------------------------------------

#[tokio::test]
async fn missing_unknown_and_malformed_tokens_are_401() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    let url = format!("{}{USERS_PATH}", sb.url());
    let no_header = c.post(&url).json(&user("a")).send().await.unwrap();
    let unknown = create(&c, &sb, "not-a-token", &user("a")).await.unwrap();
    let basic = c
        .post(&url)
        .header(
            "authorization",
            "Basic c2FuZGJveC1jbGllbnQ6c2FuZGJveC1zZWNyZXQ=",
        )
        .json(&user("a"))
        .send()
        .await
        .unwrap();
    for resp in [no_header, unknown, basic] {
        let e = single_error(resp, StatusCode::UNAUTHORIZED).await;
        assert_eq!(e.error.code, codes::INVALID_REQUEST);
    }
    assert!(sb.users().is_empty());
    assert_eq!(sb.stats().unauthorized, 3);
}

#[tokio::test]
async fn expired_token_is_401() {
    let sb = sandbox(SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let c = client();
    let resp = post_token(&c, &sb, good_creds()).await;
    let t: TokenResponse = resp.json().await.unwrap();
    assert_eq!(t.expires_in, 1);
    assert_eq!(
        create(&c, &sb, &t.access_token, &user("a"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resp = create(&c, &sb, &t.access_token, &user("b")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A fresh token works again.
    let fresh = token(&c, &sb).await;
    assert_eq!(
        create(&c, &sb, &fresh, &user("b")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(sb.users().len(), 2);
}

#[tokio::test]
async fn sub_second_ttl_reports_one_second_and_expires() {
    let sb = sandbox(SandboxConfig {
        token_ttl: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let c = client();
    let t: TokenResponse = post_token(&c, &sb, good_creds())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t.expires_in, 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let resp = create(&c, &sb, &t.access_token, &user("a")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoked_tokens_are_401() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    let t1 = token(&c, &sb).await;
    let t2 = token(&c, &sb).await;
    assert_eq!(
        create(&c, &sb, &t1, &user("a")).await.unwrap().status(),
        StatusCode::OK
    );

    let resp = post_control(&c, &sb, "/_sandbox/revoke-tokens", None).await;
    assert!(resp.status().is_success());
    for t in [&t1, &t2] {
        let resp = create(&c, &sb, t, &user("b")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Through the handle as well.
    let t3 = token(&c, &sb).await;
    sb.revoke_tokens();
    assert_eq!(
        create(&c, &sb, &t3, &user("b")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let t4 = token(&c, &sb).await;
    assert_eq!(
        create(&c, &sb, &t4, &user("b")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(sb.stats().unauthorized, 3);
}

// --- rate limit and faults -------------------------------------------------

// docs/sandbox.md: The sandbox ("The rate limit is as strict as a partner may be";
// a 429 carries no `Retry-After`, as documented).
#[tokio::test]
async fn rate_limit_answers_429_without_retry_after_by_default() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(3),
        ..Default::default()
    })
    .await;
    let mut ok = 0;
    let mut throttled = 0;
    let started = std::time::Instant::now();
    for i in 0..10 {
        let resp = create(&c, &sb, &t, &user(&format!("r{i}"))).await.unwrap();
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                assert!(resp.headers().get("retry-after").is_none());
                assert_eq!(
                    single_error(resp, StatusCode::TOO_MANY_REQUESTS)
                        .await
                        .error
                        .code,
                    codes::RETRY_LATER
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    // At most 3 in any sliding second: 3 per started second the loop took
    // (normally it took milliseconds, so exactly 3).
    let seconds = started.elapsed().as_secs() + 1;
    assert!(ok >= 3 && ok <= 3 * seconds, "ok = {ok} in {seconds} s");
    assert!(throttled > 0);
    let s = sb.stats();
    assert_eq!(s.throttled, throttled);
    assert_eq!(s.spurious_429, 0);
    assert_eq!(s.created, ok);
    assert_eq!(sb.users().len() as u64, ok);

    // A full second later the window has emptied; lifting the limit admits everything.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        create(&c, &sb, &t, &user("later")).await.unwrap().status(),
        StatusCode::OK
    );
    sb.set_rate_limit(None);
    for i in 0..20 {
        let resp = create(&c, &sb, &t, &user(&format!("free{i}")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn fail_rate_one_gives_500_and_503_and_stores_nothing() {
    let (sb, c, t) = session(SandboxConfig {
        fail_rate: 1.0,
        seed: Some(7),
        ..Default::default()
    })
    .await;
    let mut seen = Vec::new();
    for i in 0..30 {
        let resp = create(&c, &sb, &t, &user(&format!("f{i}"))).await.unwrap();
        seen.push(resp.status());
    }
    assert!(
        seen.iter()
            .all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR
                || *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(seen.contains(&StatusCode::INTERNAL_SERVER_ERROR));
    assert!(seen.contains(&StatusCode::SERVICE_UNAVAILABLE));
    assert!(sb.users().is_empty());
    let s = sb.stats();
    assert_eq!(s.faults_500 + s.faults_503, 30);
    assert_eq!(s.created, 0);
}

#[tokio::test]
async fn reset_rate_one_drops_connection_and_stores_nothing() {
    let (sb, c, t) = session(SandboxConfig {
        reset_rate: 1.0,
        ..Default::default()
    })
    .await;
    let err = create(&c, &sb, &t, &user("x"))
        .await
        .expect_err("a reset must not produce a response");
    assert!(err.status().is_none(), "{err:?}");
    assert!(sb.users().is_empty());
    let s = sb.stats();
    assert_eq!((s.resets, s.created), (1, 0));
}

#[tokio::test]
async fn reset_writes_no_bytes_at_all() {
    // Below reqwest: the raw socket must see EOF (or RST) with nothing written.
    let sb = sandbox(SandboxConfig {
        reset_rate: 1.0,
        ..Default::default()
    })
    .await;
    let t = token(&client(), &sb).await;
    let body = r#"{"user_id":"raw","first_name":"ann"}"#;
    let request = format!(
        "POST {USERS_PATH} HTTP/1.1\r\nHost: sandbox\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sock = tokio::net::TcpStream::connect(sb.addr()).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got))
        .await
        .expect("server must close the connection");
    // Ok(0) is a clean close, Err a reset; either way no response bytes.
    if let Ok(n) = read {
        assert_eq!(n, 0);
    }
    assert!(
        got.is_empty(),
        "server wrote {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(sb.users().is_empty());
}

#[tokio::test]
async fn commit_drop_stores_user_then_drops_and_retry_is_taken() {
    let (sb, c, t) = session(SandboxConfig {
        commit_drop_rate: 1.0,
        ..Default::default()
    })
    .await;
    let err = create(
        &c,
        &sb,
        &t,
        &json!({"user_id": "amb", "first_name": "john"}),
    )
    .await
    .expect_err("a commit-drop must not produce a response");
    assert!(err.status().is_none());
    let stored = sb.users();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].user_id.as_str(), stored[0].first_name.as_str()),
        ("amb", "John")
    );

    // Turn the fault off through the control endpoint and retry: "already exists".
    let resp = post_control(
        &c,
        &sb,
        "/_sandbox/config",
        Some(json!({"commit_drop_rate": 0.0})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = create(
        &c,
        &sb,
        &t,
        &json!({"user_id": "amb", "first_name": "john"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: ErrorBody = resp.json().await.unwrap();
    assert!(body.is_user_id_taken());
    let s = sb.stats();
    assert_eq!(
        (s.commit_drops, s.created, s.taken, s.duplicate_creations),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn same_seed_gives_same_fault_sequence() {
    let cfg = |seed| SandboxConfig {
        fail_rate: 0.3,
        reset_rate: 0.2,
        commit_drop_rate: 0.2,
        seed: Some(seed),
        ..Default::default()
    };
    let a = sandbox(cfg(1234)).await;
    let b = sandbox(cfg(1234)).await;
    let other = sandbox(cfg(99)).await;
    let seq_a = fault_sequence(&a).await;
    let seq_b = fault_sequence(&b).await;
    let seq_other = fault_sequence(&other).await;
    assert_eq!(seq_a, seq_b);
    assert_ne!(seq_a, seq_other);
    for kind in ["200", "dropped"] {
        assert!(
            seq_a.iter().any(|o| o == kind),
            "{kind} missing from {seq_a:?}"
        );
    }
    assert!(seq_a.iter().any(|o| o == "500" || o == "503"), "{seq_a:?}");
    // POST /_sandbox/reset restarts the dice from the seed: the run replays.
    let c = client();
    assert!(
        post_control(&c, &a, "/_sandbox/reset", None)
            .await
            .status()
            .is_success()
    );
    assert_eq!(fault_sequence(&a).await, seq_a);
}

#[tokio::test]
async fn latency_delays_users_answers() {
    let (sb, c, t) = session(SandboxConfig {
        latency: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        create(&c, &sb, &t, &user("slow")).await.unwrap().status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

// --- inspection and control -----------------------------------------------

#[tokio::test]
async fn stats_and_users_endpoints_match_the_handle() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    for id in ["a", "b", "c"] {
        create(&c, &sb, &t, &user(id)).await.unwrap();
    }
    create(&c, &sb, &t, &user("a")).await.unwrap();
    create(&c, &sb, &t, &json!({"user_id": "d"})).await.unwrap();

    let stats: Stats = get_json(&c, &sb, "/_sandbox/stats").await;
    assert_eq!(stats, sb.stats());
    assert_eq!(
        (stats.requests, stats.token_requests, stats.users_requests),
        (6, 1, 5)
    );
    assert_eq!((stats.created, stats.taken, stats.rejected), (3, 1, 1));
    // Reading the stats did not count as API requests.
    assert_eq!(sb.stats().requests, 6);

    let users: Vec<CreateUser> = get_json(&c, &sb, "/_sandbox/users").await;
    assert_eq!(users, sb.users());
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn reset_endpoint_clears_users_tokens_and_stats() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    create(&c, &sb, &t, &user("a")).await.unwrap();
    let resp = post_control(&c, &sb, "/_sandbox/reset", None).await;
    assert!(resp.status().is_success());
    assert!(sb.users().is_empty());
    assert_eq!(sb.stats(), Stats::default());
    // Old tokens are gone, and the user id is free again.
    assert_eq!(
        create(&c, &sb, &t, &user("a")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let t = token(&c, &sb).await;
    assert_eq!(
        create(&c, &sb, &t, &user("a")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn config_endpoint_changes_faults_while_running() {
    let (sb, c, t) = session(SandboxConfig::default()).await;

    let resp = post_control(
        &c,
        &sb,
        "/_sandbox/config",
        Some(json!({"rate_limit": 1, "latency_ms": 5})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let live: LiveConfig = resp.json().await.unwrap();
    assert_eq!(
        (live.rate_limit, live.latency_ms, live.fail_rate),
        (Some(1), 5, 0.0)
    );
    let first = create(&c, &sb, &t, &user("a")).await.unwrap().status();
    let second = create(&c, &sb, &t, &user("b")).await.unwrap().status();
    assert_eq!(
        (first, second),
        (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS)
    );

    // null lifts the limit; other fields are left alone when absent.
    let live: LiveConfig = post_control(
        &c,
        &sb,
        "/_sandbox/config",
        Some(json!({"rate_limit": null})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!((live.rate_limit, live.latency_ms), (None, 5));
    assert_eq!(
        create(&c, &sb, &t, &user("b")).await.unwrap().status(),
        StatusCode::OK
    );

    let live: LiveConfig =
        post_control(&c, &sb, "/_sandbox/config", Some(json!({"fail_rate": 1.0})))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(live.fail_rate, 1.0);
    assert!(
        create(&c, &sb, &t, &user("c"))
            .await
            .unwrap()
            .status()
            .is_server_error()
    );
    assert_eq!(
        get_json::<LiveConfig>(&c, &sb, "/_sandbox/config").await,
        live
    );

    // Impossible values and unknown knobs are refused, and change nothing.
    for bad in [
        json!({"fail_rate": 2.0}),
        json!({"rate_limit": 0}),
        json!({"fial_rate": 0.1}),
    ] {
        let resp = post_control(&c, &sb, "/_sandbox/config", Some(bad.clone())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        get_json::<LiveConfig>(&c, &sb, "/_sandbox/config").await,
        live
    );

    // Through the handle as well.
    let live = sb
        .configure(&ConfigPatch {
            fail_rate: Some(0.0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(live.fail_rate, 0.0);
    assert_eq!(
        create(&c, &sb, &t, &user("c")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn inspection_is_never_faulted_or_limited() {
    let sb = sandbox(SandboxConfig {
        rate_limit: Some(1),
        fail_rate: 0.5,
        reset_rate: 0.5,
        ..Default::default()
    })
    .await;
    let c = client();
    for _ in 0..20 {
        let _: Stats = get_json(&c, &sb, "/_sandbox/stats").await;
        let _: Vec<CreateUser> = get_json(&c, &sb, "/_sandbox/users").await;
    }
    assert_eq!(sb.stats(), Stats::default());
}

#[tokio::test]
async fn unknown_path_is_404_in_documented_shape() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = client();
    let resp = c.get(format!("{}/v2/nope", sb.url())).send().await.unwrap();
    assert_eq!(
        single_error(resp, StatusCode::NOT_FOUND).await.error.code,
        codes::RECORD_NOT_FOUND
    );
    let resp = c
        .get(format!("{}{USERS_PATH}", sb.url()))
        .send()
        .await
        .unwrap();
    let _ = single_error(resp, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(sb.stats().not_found, 2);
}

#[tokio::test]
async fn start_refuses_impossible_config() {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let err = Sandbox::start(
        SandboxConfig {
            reset_rate: -0.1,
            ..Default::default()
        },
        listen,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let (sb, c, t) = session(SandboxConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let url = format!("{}{USERS_PATH}", sb.url());
    let addr = sb.addr();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(url)
                .bearer_auth(t)
                .json(&user("late"))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    // Shut down once the request has arrived (its answer is 300 ms away),
    // rather than after a fixed pause a slow machine might not cover.
    while sb.stats().users_requests == 0 && !in_flight.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sb.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
