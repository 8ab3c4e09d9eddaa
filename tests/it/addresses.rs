//! Users with addresses (issue #20): the sandbox's address endpoint over
//! loopback HTTP (README: The sandbox, Users with addresses).

use connect_provision::api::model::{AddressAnswer, ApiError, codes};
use connect_provision::sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{
    Reports, Run, TestDir, create, post_address, sandbox, session, single_error, user,
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
    assert_eq!(e.error.code, codes::BLANK); // 1001, invalid parameter
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
