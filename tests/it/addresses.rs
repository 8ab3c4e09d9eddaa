//! Users with addresses (issue #20): the sandbox's address endpoint over
//! loopback HTTP (docs/sandbox.md: The sandbox, Users with addresses).

use crate::util::codes;
use connect_provision::api::model::{AddressAnswer, ApiError};
use connect_provision::sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{
    Reports, Run, TestDir, create, post_address, sample, sandbox, session, single_error,
    status_counts, user,
};

fn key(e: &ApiError) -> &str {
    e.meta.as_ref().map_or("", |m| m.key.as_str())
}

// --- the sandbox's endpoint ----------------------------------------------

// SPEC "Create a user and validate an address": the docs' curl, flat answer.
#[tokio::test]
async fn address_upsert_creates_the_user_and_answers_flat() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    let body = json!({"address_line_1": "123 main st", "address_line_2": "apt 4",
                      "address_type": "residential", "postal_code": "94105",
                      "city": "san francisco", "first_name": "john", "last_name": "smith",
                      "phone_number": "+18005550100", "locale": "en-US"});
    let resp = post_address(&c, &sb, &t, "johnsmith6000", &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"user_id": "johnsmith6000", "address_line_1": "123 Main St",
               "address_line_2": "Apt 4", "postal_code": "94105", "city": "San Francisco",
               "address_type": "residential", "long_distance_delivery": false})
    );
    let users = sb.users();
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].first_name.as_str(), users[0].last_name.as_deref()),
        ("John", Some("Smith"))
    );

    // The same user_id again: found, not taken; the new address replaces the old.
    let again = json!({"address_line_1": "1 Ice Rd", "postal_code": "99501"});
    let resp = post_address(&c, &sb, &t, "johnsmith6000", &again).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let a: AddressAnswer = resp.json().await.unwrap();
    assert!(
        a.long_distance_delivery,
        "99501 is Alaska: long distance by default"
    );
    assert_eq!(sb.users().len(), 1);
    assert_eq!(
        sb.users()[0].first_name,
        "John",
        "the upsert does not update names"
    );
    assert_eq!(sb.addresses().len(), 1);
    assert_eq!(sb.addresses()[0].postal_code, "99501");

    // A user created by create-user is found by the address endpoint too.
    let resp = create(&c, &sb, &t, &user("plain")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post_address(
        &c,
        &sb,
        &t,
        "plain",
        &json!({"address_line_1": "2 B St", "postal_code": "k1a0b1"}),
    )
    .await;
    let a: AddressAnswer = resp.json().await.unwrap();
    assert_eq!(a.postal_code, "K1A 0B1");

    let s = sb.stats();
    assert_eq!(
        (
            s.address_requests,
            s.addresses_validated,
            s.address_users_found
        ),
        (3, 3, 2)
    );
    assert_eq!((s.created, s.long_distance, s.users_requests), (2, 1, 4));
}

#[tokio::test]
async fn address_refusals_use_the_documented_envelopes() {
    let (sb, c, t) = session(SandboxConfig::default()).await;
    // A P.O. box: the single shape, naming the field.
    let resp = post_address(
        &c,
        &sb,
        &t,
        "u1",
        &json!({"address_line_1": "PO Box 12", "postal_code": "94105"}),
    )
    .await;
    let e = single_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(key(&e), "address_line_1");
    assert_eq!(e.error.code, codes::INVALID_PARAMETER); // 1001, invalid parameter
    assert!(e.error.message.contains("P.O. box"), "{}", e.error.message);

    // A bad postal code alone: single shape, key postal_code.
    let resp = post_address(
        &c,
        &sb,
        &t,
        "u1",
        &json!({"address_line_1": "1 A St", "postal_code": "SW1A 1AA"}),
    )
    .await;
    let e = single_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(key(&e), "postal_code");

    // Several: the 9999 wrapper.
    let resp = post_address(&c, &sb, &t, "u1", &json!({"first_name": "a/b"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 9999);
    let keys: Vec<&str> = body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["meta"]["key"].as_str())
        .collect();
    assert_eq!(keys, ["first_name", "address_line_1", "postal_code"]);

    assert!(sb.users().is_empty(), "nothing stored on a refusal");
    let s = sb.stats();
    assert_eq!((s.address_requests, s.rejected, s.undeliverable), (3, 3, 1));
    assert_eq!(s.addresses_validated, 0);
}

#[tokio::test]
async fn address_endpoint_needs_a_token_and_shares_the_rate_limit() {
    let (sb, c, t) = session(SandboxConfig {
        rate_limit: Some(2),
        long_distance_prefixes: vec!["941".into()],
        ..SandboxConfig::default()
    })
    .await;
    let body = json!({"address_line_1": "1 A St", "postal_code": "94105"});
    let resp = post_address(&c, &sb, "nope", "u1", &body).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // One create-user and one address request fill the window of 2.
    let resp = create(&c, &sb, &t, &user("u0")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post_address(&c, &sb, &t, "u1", &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let a: AddressAnswer = resp.json().await.unwrap();
    assert!(a.long_distance_delivery, "configured prefix 941");
    let resp = post_address(&c, &sb, &t, "u2", &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sb.stats().throttled, 1);
}

// --- input, local validation, the endpoint chosen at intake -----------------

/// An export with address columns under their usual export names.
fn address_file(dir: &TestDir) -> std::path::PathBuf {
    dir.write_csv(
        "with_address.csv",
        &[
            &["user_id", "first_name", "Street", "Zip", "Town"],
            &["a1", "ann", "1 main st", "94105", "san francisco"],
            &["a2", "bob", "", "", ""],
            &["a3", "cy", "2 elm st", "9410", "oakland"],
            &["a4", "di", "PO Box 12", "94105", ""],
            &["a5", "ed", "3 ice rd", "99501", "anchorage"],
            &["a6", "flo", "4 oak st", "", ""],
            &["a7", "gus", "5 rue main", "h2x1y4", "montreal"],
        ],
    )
}

#[tokio::test]
async fn invalid_postal_codes_are_never_sent_and_rows_choose_their_endpoint() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let input = address_file(&dir);
    let out = dir.join("out");
    let o = Run::live(&sb)
        .input(&input)
        .out(&out)
        .rate(1000)
        .output_async()
        .await;
    o.expect_code(1);
    let rows = Reports::at(&out).assert_live(&sb, 7).rows;
    let st = |id: &str| {
        rows.iter()
            .find(|r| r.user_id == id)
            .map(|r| r.status.as_str())
    };
    assert_eq!(st("a1"), Some("created"));
    assert_eq!(st("a2"), Some("created"), "no address: create-user");
    assert_eq!(st("a3"), Some("invalid"));
    assert_eq!(st("a6"), Some("invalid"));
    assert_eq!(st("a7"), Some("created"));
    let a3 = rows
        .iter()
        .find(|r| r.user_id == "a3")
        .map(|r| r.error.as_str());
    assert_eq!(
        a3,
        Some(
            "postal_code: '9410' is not a US ZIP code (94105, 94105-1234) or a Canadian postal code (K1A 0B1)"
        )
    );
    // What the sandbox saw: one create-user (a2) and four address requests;
    // the invalid rows never left the machine.
    let s = sb.stats();
    assert_eq!((s.users_requests, s.address_requests), (5, 4));
    let addressed: Vec<String> = sb.addresses().into_iter().map(|a| a.user_id).collect();
    assert_eq!(addressed, ["a1", "a5", "a7"]);
}

#[tokio::test]
async fn dry_run_reports_invalid_addresses_and_require_address() {
    let dir = TestDir::new();
    let input = address_file(&dir);
    let out = dir.join("dry");
    Run::dry(&input).out(&out).output().expect_code(1);
    let rows = Reports::at(&out).assert_consistent(7).rows;
    let invalid: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == "invalid")
        .map(|r| r.user_id.as_str())
        .collect();
    assert_eq!(invalid, ["a3", "a6"]);
    assert!(rows.iter().filter(|r| r.status == "valid").count() == 5);

    let out = dir.join("dry-required");
    Run::dry(&input)
        .out(&out)
        .arg("--require-address")
        .output()
        .expect_code(1);
    let rows = Reports::at(&out).assert_consistent(7).rows;
    let a2 = rows.iter().find(|r| r.user_id == "a2").expect("row a2");
    assert_eq!(a2.status, "invalid");
    assert_eq!(
        a2.error,
        "address_line_1: required (--require-address): the row has no address"
    );
}

// --- answers, outcomes and reports ------------------------------------------

// Issue #20 point 3: flat answers read into results.csv, refused addresses
// named in failures.csv, long-distance counted everywhere the operator looks.
#[tokio::test]
async fn validated_addresses_refusals_and_long_distance_reach_every_report() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let input = address_file(&dir);
    let out = dir.join("out");
    let o = Run::live(&sb)
        .input(&input)
        .out(&out)
        .rate(1000)
        .output_async()
        .await;
    o.expect_code(1)
        .expect_stdout("long-distance addresses: 1 (long_distance_delivery=true in results.csv)");
    let reports = Reports::at(&out);
    let checked = reports.assert_live(&sb, 7);
    let row = |id: &str| {
        checked
            .rows
            .iter()
            .find(|r| r.user_id == id)
            .unwrap_or_else(|| panic!("row {id}"))
            .clone()
    };
    let a1 = row("a1");
    assert_eq!(
        (
            a1.status.as_str(),
            a1.validated_address_line_1.as_str(),
            a1.validated_postal_code.as_str(),
            a1.long_distance_delivery.as_str()
        ),
        ("created", "1 Main St", "94105", "false")
    );
    let a5 = row("a5");
    assert_eq!(
        (
            a5.validated_postal_code.as_str(),
            a5.long_distance_delivery.as_str()
        ),
        ("99501", "true")
    );
    assert_eq!(row("a7").validated_postal_code, "H2X 1Y4");
    // No address: the three columns stay empty.
    let a2 = row("a2");
    assert_eq!(
        (
            a2.validated_address_line_1.as_str(),
            a2.validated_postal_code.as_str(),
            a2.long_distance_delivery.as_str()
        ),
        ("", "", "")
    );
    // The P.O. box: rejected with the partner's message, in failures.csv.
    let a4 = row("a4");
    let refused = "address_line_1: is undeliverable: P.O. boxes are not delivered to (1001)";
    assert_eq!(
        (a4.status.as_str(), a4.http_status),
        ("rejected", Some(400))
    );
    assert_eq!(a4.error, refused);
    let (header, failures) = reports.failure_records();
    assert_eq!(header.last().map(String::as_str), Some("error_message"));
    let failed_a4 = failures
        .iter()
        .find(|f| f[0] == "a4")
        .expect("a4 in failures.csv");
    assert_eq!(failed_a4.last().map(String::as_str), Some(refused));
    assert_eq!(failed_a4[2], "PO Box 12", "the input's own cells, verbatim");

    assert_eq!(checked.summary.long_distance_delivery, 1);
    let page = std::fs::read_to_string(reports.path("report.html")).expect("report.html");
    assert!(
        page.contains("<dt>Long-distance addresses</dt><dd>1</dd>"),
        "report.html shows the count"
    );
    assert_eq!(sb.stats().undeliverable, 1);

    // failures.csv reruns safely: the endpoint is an upsert. Fixed rows are created.
    let fixed = dir.write_csv(
        "fixed.csv",
        &[
            &["user_id", "first_name", "Street", "Zip", "Town"],
            &["a4", "di", "12 Pine St", "94105", ""],
            &["a1", "ann", "9 New Rd", "94107", ""],
        ],
    );
    let out2 = dir.join("rerun");
    Run::live(&sb)
        .input(&fixed)
        .out(&out2)
        .rate(1000)
        .output_async()
        .await
        .expect_code(0);
    let rows = Reports::at(&out2).assert_consistent(2).rows;
    assert!(rows.iter().all(|r| r.status == "created"), "{rows:?}");
    assert_eq!(sb.stats().duplicate_creations, 0);
}

/// A stand-in Connect whose address endpoint answers in the nested layout
/// (`{"user_id", "address": {…, "flags": {"long_distance_delivery"}}}`),
/// the other layout the stored docs leave open.
async fn nested_partner() -> (String, tokio::task::JoinHandle<()>) {
    use axum::Router;
    use axum::extract::Path;
    use axum::routing::post;
    let router = Router::new()
        .route(
            crate::util::TOKEN_PATH,
            post(|| async {
                axum::Json(
                    json!({"access_token": "t0123456789abcdef", "token_type": "Bearer",
                                  "expires_in": 86400, "created_at": 1_796_000_000}),
                )
            }),
        )
        .route(
            crate::util::ADDRESSES_ROUTE,
            post(
                |Path(id): Path<String>, axum::Json(body): axum::Json<Value>| async move {
                    let far = body["postal_code"]
                        .as_str()
                        .is_some_and(|p| p.starts_with('9'));
                    axum::Json(json!({"user_id": id, "address": {
                    "address_line_1": body["address_line_1"].as_str().map(str::to_uppercase),
                    "postal_code": body["postal_code"],
                    "flags": {"long_distance_delivery": far}}}))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_nested_answer_is_read_too() {
    let (base, task) = nested_partner().await;
    let dir = TestDir::new();
    let input = dir.write_csv(
        "nested.csv",
        &[
            &["user_id", "first_name", "address_line_1", "postal_code"],
            &["n1", "ann", "1 main st", "99501"],
            &["n2", "bob", "2 elm st", "K1A 0B1"],
        ],
    );
    let out = dir.join("out");
    Run::live_at(base)
        .input(&input)
        .out(&out)
        .output_async()
        .await
        .expect_code(0);
    let rows = Reports::at(&out).assert_consistent(2).rows;
    let got: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.user_id.as_str(),
                r.validated_address_line_1.as_str(),
                r.validated_postal_code.as_str(),
                r.long_distance_delivery.as_str(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        got,
        [
            ("n1", "1 MAIN ST", "99501", "true"),
            ("n2", "2 ELM ST", "K1A 0B1", "false")
        ]
    );
    assert_eq!(Reports::at(&out).summary().long_distance_delivery, 1);
    task.abort();
}

// docs/addresses.md: Users with addresses (the samples it runs).
#[test]
fn the_address_samples_dry_run_as_the_readme_says() {
    let dir = TestDir::new();
    let out = dir.join("sample");
    Run::dry(sample("customers_with_address.csv"))
        .out(&out)
        .output()
        .expect_code(1);
    let counts = status_counts(&Reports::at(&out).assert_consistent(200).rows);
    assert_eq!(
        (counts.get("invalid"), counts.get("valid")),
        (Some(&6), Some(&194))
    );
    let out = dir.join("export");
    Run::dry(sample("customers_export_with_address.csv"))
        .out(&out)
        .args([
            "--config".as_ref(),
            sample("mapping_with_address.toml").as_os_str(),
        ])
        .output()
        .expect_code(0);
    Reports::at(&out).assert_consistent(20);
}

// --- `--state`: only changed addresses are sent again -----------------------

// Issue #20 point 4 (docs/operations.md: Incremental nightly runs).
#[tokio::test]
async fn state_sends_only_changed_addresses_and_records_them_updated() {
    let sb = sandbox(SandboxConfig::default()).await;
    let dir = TestDir::new();
    let state = dir.join("state.db");
    let header: &[&str] = &[
        "user_id",
        "first_name",
        "last_name",
        "address_line_1",
        "postal_code",
    ];
    let night1 = dir.write_csv(
        "n1.csv",
        &[
            header,
            &["s1", "ann", "lee", "1 Main St", "94105"],
            &["s2", "bob", "ray", "2 Elm St", "94107"],
            &["s3", "cy", "dee", "", ""],
            &["s4", "di", "fox", "4 Oak St", "94110"],
        ],
    );
    let run = |input: &std::path::Path, out: &str| {
        Run::live(&sb)
            .input(input)
            .out(dir.join(out))
            .rate(1000)
            .arg("--state")
            .arg(&state)
            .output_async()
    };
    run(&night1, "n1").await.expect_code(0);
    assert_eq!(sb.stats().users_requests, 4);

    // The same file again: nothing sent.
    run(&night1, "n1-again").await.expect_code(0);
    let rows = Reports::at(dir.join("n1-again")).assert_consistent(4).rows;
    assert!(rows.iter().all(|r| r.status == "unchanged"), "{rows:?}");
    assert_eq!(sb.stats().users_requests, 4);

    // Night 2: s1 moved (sent again, `updated`), s2 renamed (`changed`,
    // not sent, even though its address moved too), s3 now has an address
    // (attached: `updated`), s4 as before, s5 new.
    let night2 = dir.write_csv(
        "n2.csv",
        &[
            header,
            &["s1", "ann", "lee", "1 Ice Rd", "99501"],
            &["s2", "bobby", "ray", "9 Elm St", "94107"],
            &["s3", "cy", "dee", "3 Pine Rd", "K1A 0B1"],
            &["s4", "di", "fox", "4 Oak St", "94110"],
            &["s5", "ed", "gus", "5 Birch Way", "94111"],
        ],
    );
    let o = run(&night2, "n2").await;
    o.expect_code(0);
    let checked = Reports::at(dir.join("n2")).assert_consistent(5);
    let st = |id: &str| {
        checked
            .rows
            .iter()
            .find(|r| r.user_id == id)
            .map(|r| (r.status.clone(), r.long_distance_delivery.clone()))
    };
    assert_eq!(st("s1"), Some(("updated".into(), "true".into())));
    assert_eq!(st("s2").map(|s| s.0), Some("changed".into()));
    assert_eq!(st("s3").map(|s| s.0), Some("updated".into()));
    assert_eq!(st("s4").map(|s| s.0), Some("unchanged".into()));
    assert_eq!(st("s5").map(|s| s.0), Some("created".into()));
    assert_eq!(checked.summary.counts.get("updated"), Some(&2));
    assert_eq!(checked.summary.long_distance_delivery, 1);
    // Three requests: s1, s3 and s5; all to the address endpoint.
    let s = sb.stats();
    assert_eq!((s.users_requests, s.address_requests), (7, 6));
    let moved = sb
        .addresses()
        .into_iter()
        .find(|a| a.user_id == "s1")
        .expect("s1");
    assert_eq!(moved.postal_code, "99501");

    // The state keeps the last validated address per user.
    let conn = rusqlite::Connection::open(&state).expect("state db");
    let kept: String = conn
        .query_row(
            "SELECT validated_address FROM users WHERE user_id = 's1'",
            [],
            |r| r.get(0),
        )
        .expect("s1's address");
    let kept: Value = serde_json::from_str(&kept).expect("json");
    assert_eq!(
        kept,
        json!({"address_line_1": "1 Ice Rd", "postal_code": "99501", "long_distance_delivery": true})
    );

    // Night 2 again: everything known, nothing sent.
    run(&night2, "n2-again").await.expect_code(0);
    let rows = Reports::at(dir.join("n2-again")).assert_consistent(5).rows;
    let changed: Vec<&str> = rows
        .iter()
        .filter(|r| r.status != "unchanged")
        .map(|r| r.user_id.as_str())
        .collect();
    assert_eq!(changed, ["s2"], "only the renamed user stays changed");
    assert_eq!(sb.stats().users_requests, 7);
}
