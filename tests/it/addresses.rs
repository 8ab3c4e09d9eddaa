//! Users with addresses (issue #20): the sandbox's address endpoint over
//! loopback HTTP (README: The sandbox, Users with addresses).

use connect_provision::api::model::{AddressAnswer, ApiError, codes};
use connect_provision::sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{create, post_address, session, single_error, user};

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
