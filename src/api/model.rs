//! Wire types of the Connect API, shared by the client (`api::client`) and the
//! sandbox (`sandbox`), so the fake and the real caller cannot drift apart.

use serde::{Deserialize, Serialize};

/// `POST /v2/oauth/token` request body, as the client sends it (borrowed, so the
/// secret is exposed only for the instant of serialisation).
#[derive(Serialize)]
pub struct TokenRequestRef<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub grant_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
}

/// `POST /v2/oauth/token` request body, as the sandbox receives it.
#[derive(Deserialize)]
pub struct TokenRequest {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub grant_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .finish()
    }
}

/// `POST /v2/oauth/token` success body.
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Lifetime in seconds (86400 in production).
    pub expires_in: u64,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// `POST /v2/fulfillment/users` body, and the user echoed in its 200 answer.
/// Blank optional fields are `None` and left out of the JSON, never sent as "".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    pub user_id: String,
    pub first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// The `error` member of a 4xx body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    pub code: u32,
}

/// The `meta` member of a 4xx body: which request field the error is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMeta {
    pub key: String,
}

/// Single-error shape: `{"error":{"message","code"},"meta":{"key"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ErrorMeta>,
}

/// Multiple-errors shape: `{"errors":[{"error":…,"meta":…}, …]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrors {
    pub errors: Vec<ApiError>,
}

/// Either documented 4xx body shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorBody {
    Single(ApiError),
    Multiple(ApiErrors),
}

impl ErrorBody {
    /// All errors in the body, whichever shape it came in.
    pub fn errors(&self) -> &[ApiError] {
        match self {
            ErrorBody::Single(e) => std::slice::from_ref(e),
            ErrorBody::Multiple(m) => &m.errors,
        }
    }

    /// True when the body says the `user_id` is already taken (SPEC: the
    /// undocumented "already exists" answer).
    pub fn is_user_id_taken(&self) -> bool {
        self.errors().iter().any(|e| {
            e.meta.as_ref().is_some_and(|m| m.key == "user_id")
                && (e.error.code == codes::TAKEN || e.error.message.contains("taken"))
        })
    }

    /// One line for reports: `user_id: has already been taken (1003); …`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.errors().iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            if let Some(m) = &e.meta {
                out.push_str(&m.key);
                out.push_str(": ");
            }
            out.push_str(&e.error.message);
        }
        out
    }
}

/// Error codes used by the sandbox (Connect documents the shapes, not a code table).
pub mod codes {
    pub const BLANK: u32 = 1001;
    pub const FORBIDDEN_CHARS: u32 = 1002;
    pub const TAKEN: u32 = 1003;
    pub const INVALID_PHONE: u32 = 1004;
    pub const INVALID_LOCALE: u32 = 1005;
    pub const MALFORMED: u32 = 1006;
    pub const UNAUTHORIZED: u32 = 1010;
    pub const FORBIDDEN: u32 = 1011;
    pub const NOT_FOUND: u32 = 1012;
    pub const RATE_LIMITED: u32 = 1020;
    pub const INTERNAL: u32 = 1030;
}

/// Characters Connect forbids in `first_name` / `last_name`.
pub const FORBIDDEN_NAME_CHARS: &[char] = &['/', ':', '<', '>', '$', '%', '?'];

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/v2/oauth/token";
/// Path of the create-user endpoint.
pub const USERS_PATH: &str = "/v2/fulfillment/users";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_parses_both_shapes() {
        let single: ErrorBody = serde_json::from_str(
            r#"{"error":{"message":"has already been taken","code":1003},"meta":{"key":"user_id"}}"#,
        )
        .unwrap();
        assert!(single.is_user_id_taken());
        let multi: ErrorBody = serde_json::from_str(
            r#"{"errors":[{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}},{"error":{"message":"is invalid","code":1004},"meta":{"key":"phone_number"}}]}"#,
        )
        .unwrap();
        assert!(!multi.is_user_id_taken());
        assert_eq!(
            multi.summary(),
            "first_name: can't be blank; phone_number: is invalid"
        );
    }

    #[test]
    fn blank_optionals_are_left_out() {
        let u = CreateUser {
            user_id: "u1".into(),
            first_name: "Ann".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"user_id":"u1","first_name":"Ann"}"#
        );
    }
}
