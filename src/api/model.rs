//! Wire types of the Connect API, shared by the client (`api::client`) and the
//! sandbox (`sandbox`), so the fake and the real caller cannot drift apart.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /v2/oauth/token` request body, as the client sends it (borrowed, so the
/// secret is exposed only for the instant of serialisation).
#[derive(Serialize)]
pub(crate) struct TokenRequestRef<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
    pub(crate) grant_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<&'a str>,
}

/// `POST /v2/oauth/token` request body, as the sandbox receives it.
#[derive(Deserialize)]
pub(crate) struct TokenRequest {
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) grant_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
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
    /// The bearer token.
    pub access_token: String,
    /// The token type, `Bearer`.
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
    /// The retailer's id for the user.
    pub user_id: String,
    /// Required first name.
    pub first_name: String,
    /// Optional last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Optional phone number, in E.164 form (`+15555550123`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Optional language tag, e.g. `en-US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// A delivery address as the tool sends it to
/// `POST /v2/fulfillment/users/{user_id}/addresses` (docs/addresses.md "Users with
/// addresses"; Connect's "Create a user and validate an address"). Blank
/// optional fields are `None` and left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street address (required).
    pub address_line_1: String,
    /// Apartment, suite, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line_2: Option<String>,
    /// E.g. `residential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// US ZIP or Canadian postal code (required), in canonical form.
    pub postal_code: String,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// Which Connect endpoint a payload goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    /// `POST /v2/fulfillment/users`: create a bare user.
    Users,
    /// `POST /v2/fulfillment/users/{user_id}/addresses`: create (or find) the
    /// user and validate an address (an upsert).
    Addresses,
}

/// What one valid row sends: the one request type chosen at intake, so later
/// stages carry an endpoint and bytes and never ask which kind of row it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A row without an address: create-user.
    User(CreateUser),
    /// A row with an address: the address endpoint, carrying the user's
    /// fields. Boxed, so a payload without one stays as small as before
    /// (payloads are moved through the intake's batches).
    WithAddress(CreateUser, Box<Address>),
}

/// The address endpoint's body: the address and the user's fields (the
/// `user_id` is in the path).
#[derive(Serialize)]
struct AddressBody<'a> {
    #[serde(flatten)]
    address: &'a Address,
    first_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
}

impl Payload {
    /// The user's fields.
    pub fn user(&self) -> &CreateUser {
        match self {
            Payload::User(u) | Payload::WithAddress(u, _) => u,
        }
    }

    /// The user's fields, by value.
    pub(crate) fn into_user(self) -> CreateUser {
        match self {
            Payload::User(u) | Payload::WithAddress(u, _) => u,
        }
    }

    /// The address, when the row has one.
    pub(crate) fn address(&self) -> Option<&Address> {
        match self {
            Payload::User(_) => None,
            Payload::WithAddress(_, a) => Some(a),
        }
    }

    /// The endpoint it goes to.
    pub(crate) fn endpoint(&self) -> Endpoint {
        match self {
            Payload::User(_) => Endpoint::Users,
            Payload::WithAddress(..) => Endpoint::Addresses,
        }
    }

    /// The exact JSON body sent (serialised once per row).
    pub(crate) fn to_body(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Payload::User(u) => serde_json::to_vec(u),
            Payload::WithAddress(u, a) => serde_json::to_vec(&AddressBody {
                address: a.as_ref(),
                first_name: &u.first_name,
                last_name: u.last_name.as_deref(),
                phone_number: u.phone_number.as_deref(),
                locale: u.locale.as_deref(),
            }),
        }
    }
}

/// The sandbox's 200 answer to the address endpoint, in the flat layout of
/// the deprecated `validate_address` sibling (the stored docs do not
/// show the layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressAnswer {
    /// The user the address is attached to.
    pub user_id: String,
    /// The validated street address.
    pub address_line_1: String,
    /// The second line, as validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line_2: Option<String>,
    /// The validated postal code.
    pub postal_code: String,
    /// The city, as validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// The address type, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// More than 30 minutes from the closest stores.
    pub long_distance_delivery: bool,
}

pub(crate) use crate::outcome::ValidatedAddress;

/// Reading the address endpoint's 200 answer liberally: each field at the
/// top level, or nested under `address` (and the flag also under `flags`,
/// as the deprecated sibling answers). A field that is absent stays `None`.
impl ValidatedAddress {
    /// Read a 200 body; `None` when it is not a JSON object.
    pub(crate) fn from_answer(bytes: &[u8]) -> Option<ValidatedAddress> {
        let root: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let root = root.as_object()?;
        let nested = root.get("address").and_then(serde_json::Value::as_object);
        let text = |key: &str| {
            let pick = |o: &serde_json::Map<String, serde_json::Value>| {
                o.get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            pick(root).or_else(|| nested.and_then(pick))
        };
        let flag = |o: &serde_json::Map<String, serde_json::Value>| {
            let v = o
                .get("long_distance_delivery")
                .or_else(|| o.get("flags").and_then(|f| f.get("long_distance_delivery")))?;
            match v {
                serde_json::Value::Bool(b) => Some(*b),
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            }
        };
        Some(ValidatedAddress {
            address_line_1: text("address_line_1"),
            postal_code: text("postal_code"),
            long_distance_delivery: flag(root).or_else(|| nested.and_then(flag)),
        })
    }
}

/// A postal code Connect serves: a US ZIP (`94105`, `94105-1234`) or a
/// Canadian postal code (`K1A 0B1`, space optional, any case). Returns the
/// canonical form (`K1A 0B1`), or `None`.
pub(crate) fn canonical_postal_code(s: &str) -> Option<String> {
    let s = s.trim();
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 if digits(b) => return Some(s.to_owned()),
        10 if digits(&b[..5]) && b[5] == b'-' && digits(&b[6..]) => return Some(s.to_owned()),
        _ => {}
    }
    let compact: Vec<u8> = match b.len() {
        6 => b.to_vec(),
        7 if b[3] == b' ' => [&b[..3], &b[4..]].concat(),
        _ => return None,
    };
    let compact = compact.to_ascii_uppercase();
    // Letters D, F, I, O, Q, U never appear; W and Z never first.
    let letter = |c: u8, first: bool| {
        c.is_ascii_uppercase() && !b"DFIOQU".contains(&c) && !(first && (c == b'W' || c == b'Z'))
    };
    let ok = letter(compact[0], true)
        && compact[1].is_ascii_digit()
        && letter(compact[2], false)
        && compact[3].is_ascii_digit()
        && letter(compact[4], false)
        && compact[5].is_ascii_digit();
    if !ok {
        return None;
    }
    let text = String::from_utf8(compact).ok()?;
    Some(format!("{} {}", &text[..3], &text[3..]))
}

/// The `error` member of an error body: what went wrong, as text and as a code
/// (see `codes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable description.
    pub message: String,
    /// Numeric error code (see `codes`).
    pub code: u32,
}

/// The `meta` member of an error body when it names a request field.
///
/// Connect sends `"meta":{"key":"user_id"}`, `"meta":{}` or no `meta` at all;
/// [`ApiError::meta`] is `None` for the last two (and for an empty key), so the
/// key is optional without a second level of `Option`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMeta {
    /// The request field the error is about, e.g. `user_id`.
    pub key: String,
}

/// Single-error shape: `{"error":{"message","code"},"meta":{"key"}}`, with
/// `meta` also `{}` or absent. Also each entry of the multiple-errors list.
///
/// Displays as `key: message (code)`, without `key: ` when no field is named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: ErrorDetail,
    /// The field the error is about. Serialised as `{}` when `None`: the
    /// documented bodies always carry `meta`.
    #[serde(default, with = "meta_field")]
    pub meta: Option<ErrorMeta>,
}

impl ApiError {
    /// The `meta.key`, if the error names a field.
    fn key(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.key.as_str())
    }

    /// True when this error says the `user_id` is already taken (an assumed
    /// answer): `meta.key` is `user_id` and the message says so. The code alone
    /// cannot tell: a blank `user_id` is the same 1001 "invalid parameter".
    fn is_user_id_taken(&self) -> bool {
        if self.key() != Some("user_id") {
            return false;
        }
        let message = self.error.message.to_ascii_lowercase();
        message.contains("taken") || message.contains("already exist")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = self.key() {
            write!(f, "{key}: ")?;
        }
        write!(f, "{} ({})", self.error.message, self.error.code)
    }
}

/// Multiple-errors shape. Connect documents the errors nested under a wrapper
/// error with code 9999:
/// `{"error":{"message":"There were issues with your request","code":9999,"errors":[{single}, …]},"meta":{}}`.
/// The older, undocumented top-level list `{"errors":[{single}, …]}` (what the
/// sandbox used to send) parses too, with no `wrapper`. Always serialised in
/// the documented shape.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ErrorBody")]
pub struct ApiErrors {
    /// The wrapper's own `error` (code [`codes::MULTIPLE`]); `None` when the
    /// body came in the legacy top-level shape.
    wrapper: Option<ErrorDetail>,
    /// The individual errors, in the order the server listed them.
    pub errors: Vec<ApiError>,
}

/// The wrapper message of the documented multiple-errors example.
const MULTIPLE_MESSAGE: &str = "There were issues with your request";

impl ApiErrors {
    /// Several errors under the documented 9999 wrapper.
    pub(crate) fn new(errors: Vec<ApiError>) -> ApiErrors {
        ApiErrors {
            wrapper: Some(ErrorDetail {
                message: MULTIPLE_MESSAGE.to_owned(),
                code: codes::MULTIPLE,
            }),
            errors,
        }
    }
}

impl Serialize for ApiErrors {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wrapper<'a> {
            message: &'a str,
            code: u32,
            errors: &'a [ApiError],
        }
        #[derive(Serialize)]
        struct NoMeta {}
        #[derive(Serialize)]
        struct Body<'a> {
            error: Wrapper<'a>,
            meta: NoMeta,
        }
        let (message, code) = match &self.wrapper {
            Some(w) => (w.message.as_str(), w.code),
            None => (MULTIPLE_MESSAGE, codes::MULTIPLE),
        };
        Body {
            error: Wrapper {
                message,
                code,
                errors: &self.errors,
            },
            meta: NoMeta {},
        }
        .serialize(serializer)
    }
}

impl TryFrom<ErrorBody> for ApiErrors {
    type Error = &'static str;

    fn try_from(body: ErrorBody) -> Result<ApiErrors, Self::Error> {
        match body {
            ErrorBody::Multiple(m) => Ok(m),
            ErrorBody::Single(_) => Err("expected the multiple-errors shape, got a single error"),
        }
    }
}

/// A parsed error body, in any shape Connect (or the old sandbox) answers with.
///
/// | body | parses as |
/// |---|---|
/// | `{"error":{"message","code"},"meta":{"key"}}`, `meta` `{}` or absent | `Single` |
/// | `{"error":{"message","code":9999,"errors":[{single}, …]},"meta":{}}` | `Multiple` with `wrapper` |
/// | `{"errors":[{single}, …]}` (legacy, non-empty) | `Multiple` without `wrapper` |
/// | anything else (HTML, empty, other JSON) | an error: the caller keeps a raw snippet |
///
/// Unknown extra members are ignored everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WireBody")]
pub enum ErrorBody {
    /// One error.
    Single(ApiError),
    /// A list of errors, with or without its wrapper.
    Multiple(ApiErrors),
}

/// Every member any accepted shape can have; [`ErrorBody`]'s `TryFrom` decides
/// which shape it is.
#[derive(Deserialize)]
struct WireBody {
    #[serde(default)]
    error: Option<WireDetail>,
    #[serde(default, with = "meta_field")]
    meta: Option<ErrorMeta>,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
}

#[derive(Deserialize)]
struct WireDetail {
    message: String,
    code: u32,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
}

impl TryFrom<WireBody> for ErrorBody {
    type Error = &'static str;

    fn try_from(wire: WireBody) -> Result<ErrorBody, Self::Error> {
        match (wire.error, wire.errors) {
            // The documented nested shape wins over a stray top-level list.
            (
                Some(WireDetail {
                    message,
                    code,
                    errors: Some(errors),
                }),
                _,
            ) => Ok(ErrorBody::Multiple(ApiErrors {
                wrapper: Some(ErrorDetail { message, code }),
                errors,
            })),
            (Some(WireDetail { message, code, .. }), _) => Ok(ErrorBody::Single(ApiError {
                error: ErrorDetail { message, code },
                meta: wire.meta,
            })),
            (None, Some(errors)) if !errors.is_empty() => Ok(ErrorBody::Multiple(ApiErrors {
                wrapper: None,
                errors,
            })),
            (None, _) => Err("not a Connect error body"),
        }
    }
}

impl Serialize for ErrorBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ErrorBody::Single(e) => e.serialize(serializer),
            ErrorBody::Multiple(m) => m.serialize(serializer),
        }
    }
}

impl ErrorBody {
    /// Parse a response body; `Err` for anything that is not one of the shapes.
    pub fn parse(bytes: &[u8]) -> Result<ErrorBody, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The individual errors: the single one, or the multiple shape's list
    /// (not its 9999 wrapper).
    fn errors(&self) -> &[ApiError] {
        match self {
            ErrorBody::Single(e) => std::slice::from_ref(e),
            ErrorBody::Multiple(m) => &m.errors,
        }
    }

    /// The codes that describe what went wrong: each listed error's, or the
    /// wrapper's own when its list is empty.
    fn codes(&self) -> impl Iterator<Item = u32> + '_ {
        let wrapper = match self {
            ErrorBody::Multiple(m) if m.errors.is_empty() => m.wrapper.as_ref().map(|w| w.code),
            _ => None,
        };
        self.errors().iter().map(|e| e.error.code).chain(wrapper)
    }

    /// True when the body says the `user_id` is already taken (the
    /// undocumented "already exists" answer) and says nothing else.
    ///
    /// Only a lone "taken" counts, in either shape: a multiple-errors body that
    /// also names other invalid fields means the row itself needs fixing, and
    /// calling it `exists` would hide that behind a success.
    pub fn is_user_id_taken(&self) -> bool {
        matches!(self.errors(), [only] if only.is_user_id_taken())
    }

    /// True when every error is one that goes away by itself: 2003 "retry
    /// later" or a 500x internal error. One field error among them makes the
    /// body final, since retrying cannot fix the data.
    pub(crate) fn is_transient(&self) -> bool {
        let mut any = false;
        self.codes().all(|c| {
            any = true;
            codes::is_transient(c)
        }) && any
    }

    /// One line for reports: `key: message (code)` per error, joined with
    /// `; ` (e.g. `first_name: can't be blank (1001); last_name: … (1001)`).
    /// A multiple-errors body with an empty list shows its wrapper instead.
    pub fn summary(&self) -> String {
        match self {
            ErrorBody::Multiple(ApiErrors {
                wrapper: Some(w),
                errors,
            }) if errors.is_empty() => format!("{} ({})", w.message, w.code),
            _ => self
                .errors()
                .iter()
                .map(ApiError::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// `meta` as Connect sends it: `{"key":…}`, `{}`, `null` or absent (all but
/// the first read as `None`); written as `{"key":…}` or `{}`, never left out.
mod meta_field {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ErrorMeta;

    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        key: Option<String>,
    }

    #[derive(Serialize)]
    struct WireRef<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<&'a str>,
    }

    pub(crate) fn serialize<S: Serializer>(
        meta: &Option<ErrorMeta>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        WireRef {
            key: meta.as_ref().map(|m| m.key.as_str()),
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<ErrorMeta>, D::Error> {
        let wire = Option::<Wire>::deserialize(d)?;
        Ok(wire
            .and_then(|w| w.key)
            .filter(|k| !k.is_empty())
            .map(|key| ErrorMeta { key }))
    }
}

/// Error codes. The first group is the table in Connect's docs (docs/rate-limiting.md "Error bodies");
/// identify an error by its code together with `meta.key`.
pub(crate) mod codes {
    /// A request parameter is invalid or missing; `meta.key` names it.
    pub(crate) const INVALID_PARAMETER: u32 = 1001;
    /// Transient: try the same request again later.
    pub(crate) const RETRY_LATER: u32 = 2003;
    /// The record (or endpoint) was not found.
    pub(crate) const RECORD_NOT_FOUND: u32 = 4000;
    /// The request as a whole is invalid (malformed body, bad credentials).
    pub(crate) const INVALID_REQUEST: u32 = 4001;
    /// The request's context (e.g. store, retailer) could not be resolved.
    #[cfg(test)]
    pub(crate) const CONTEXT_NOT_RESOLVED: u32 = 4002;
    /// Internal error (the docs' "500x"; 5000 is the generic 500 answer).
    pub(crate) const INTERNAL: u32 = 5000;
    /// What the sandbox answers with its injected 503: an internal 500x code.
    pub(crate) const SERVICE_UNAVAILABLE: u32 = 5001;
    /// The wrapper of the multiple-errors shape.
    pub(crate) const MULTIPLE: u32 = 9999;

    /// True for codes that name a server-side, passing condition: 2003 and
    /// the 5000 range.
    pub(crate) fn is_transient(code: u32) -> bool {
        code == RETRY_LATER || (5000..=5999).contains(&code)
    }

    // What the sandbox answers for each refusal: names for readability at the
    // call sites, every one a documented code above.
    /// A required field is blank or missing.
    pub(crate) const BLANK: u32 = INVALID_PARAMETER;
    /// The `user_id` already exists (with a "has already been taken" message).
    pub(crate) const TAKEN: u32 = INVALID_PARAMETER;
    /// The body is not the expected JSON.
    pub(crate) const MALFORMED: u32 = INVALID_REQUEST;
}

/// Characters Connect forbids in `first_name` / `last_name`.
pub const FORBIDDEN_NAME_CHARS: &[char] = &['/', ':', '<', '>', '$', '%', '?'];

/// Path of the token endpoint.
pub(crate) const TOKEN_PATH: &str = "/v2/oauth/token";
/// Path of the create-user endpoint.
pub(crate) const USERS_PATH: &str = "/v2/fulfillment/users";
/// Route of the create-user-and-validate-address endpoint (`{user_id}` is
/// the user's id, percent-encoded as one path segment).
pub(crate) const ADDRESSES_ROUTE: &str = "/v2/fulfillment/users/{user_id}/addresses";
/// The last path segment of the address endpoint.
pub(crate) const ADDRESSES_SEGMENT: &str = "addresses";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> ErrorBody {
        ErrorBody::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    // docs/rate-limiting.md "Error bodies", single shape: meta with a key, `{}`, `null`, or absent.
    #[test]
    fn single_shape_with_every_kind_of_meta() {
        let cases = [
            (
                r#"{"error":{"message":"User not found","code":1001},"meta":{"key":"user_id"}}"#,
                "user_id: User not found (1001)",
            ),
            (
                r#"{"error":{"message":"Sorry, an unexpected error occurred. Please try again later.","code":5000},"meta":{}}"#,
                "Sorry, an unexpected error occurred. Please try again later. (5000)",
            ),
            (
                r#"{"error":{"message":"Invalid request","code":4001}}"#,
                "Invalid request (4001)",
            ),
            (
                r#"{"error":{"message":"Invalid request","code":4001},"meta":null}"#,
                "Invalid request (4001)",
            ),
            (
                r#"{"error":{"message":"Invalid request","code":4001},"meta":{"key":""}}"#,
                "Invalid request (4001)",
            ),
        ];
        for (body, want) in cases {
            let parsed = parse(body);
            assert!(matches!(parsed, ErrorBody::Single(_)), "{body}");
            assert_eq!(parsed.summary(), want, "{body}");
        }
    }

    // docs/rate-limiting.md "Error bodies", multiple shape: nested under `error.errors`, code 9999.
    #[test]
    fn nested_multiple_shape() {
        let body = parse(
            r#"{"error":{"message":"There were issues with your request","code":9999,"errors":[{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}},{"error":{"message":"is invalid","code":1001},"meta":{"key":"phone_number"}}]},"meta":{}}"#,
        );
        let ErrorBody::Multiple(m) = &body else {
            panic!("{body:?}");
        };
        assert_eq!(
            m.wrapper,
            Some(ErrorDetail {
                message: MULTIPLE_MESSAGE.into(),
                code: codes::MULTIPLE
            })
        );
        assert_eq!(
            body.summary(),
            "first_name: can't be blank (1001); phone_number: is invalid (1001)"
        );
        assert!(!body.is_user_id_taken());
        assert!(!body.is_transient());
    }

    #[test]
    fn legacy_top_level_list() {
        let body = parse(
            r#"{"errors":[{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}},{"error":{"message":"bad","code":1001}}]}"#,
        );
        let ErrorBody::Multiple(m) = &body else {
            panic!("{body:?}");
        };
        assert_eq!(m.wrapper, None);
        assert_eq!(
            body.summary(),
            "first_name: can't be blank (1001); bad (1001)"
        );
    }

    #[test]
    fn a_wrapper_with_no_entries_shows_itself() {
        let body = parse(
            r#"{"error":{"message":"There were issues with your request","code":9999,"errors":[]},"meta":{}}"#,
        );
        assert_eq!(body.summary(), "There were issues with your request (9999)");
        assert!(!body.is_transient());
    }

    #[test]
    fn unknown_extra_members_are_ignored() {
        let body = parse(
            r#"{"error":{"message":"Store not resolved","code":4002,"trace":"abc"},"meta":{"key":"store_id","request_id":"r-1"},"debug":[1,2]}"#,
        );
        assert_eq!(body.summary(), "store_id: Store not resolved (4002)");
    }

    #[test]
    fn anything_else_is_not_an_error_body() {
        for body in [
            "",
            "   ",
            "<html><body>502 Bad Gateway</body></html>",
            "null",
            "42",
            "\"oops\"",
            "[]",
            "{}",
            r#"{"errors":[]}"#,
            r#"{"error":"boom"}"#,
            r#"{"error":{"message":"no code"}}"#,
            r#"{"error":{"code":1001}}"#,
            r#"{"message":"Internal Server Error"}"#,
            r#"{"error":{"message":"x","code":1001}"#,
        ] {
            assert!(ErrorBody::parse(body.as_bytes()).is_err(), "{body:?}");
        }
    }

    #[test]
    fn user_id_taken_only_when_it_is_the_only_error() {
        let taken = r#"{"error":{"message":"has already been taken","code":1001},"meta":{"key":"user_id"}}"#;
        let blank =
            r#"{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}}"#;
        assert!(parse(taken).is_user_id_taken());
        let nested = |list: &str| {
            format!(
                r#"{{"error":{{"message":"There were issues with your request","code":9999,"errors":[{list}]}},"meta":{{}}}}"#
            )
        };
        assert!(parse(&nested(taken)).is_user_id_taken());
        assert!(parse(&format!(r#"{{"errors":[{taken}]}}"#)).is_user_id_taken());
        // Taken plus another field error: the row needs fixing, not `exists`.
        assert!(!parse(&nested(&format!("{taken},{blank}"))).is_user_id_taken());
        // Blank user_id has the same code but is not "taken".
        assert!(
            !parse(
                r#"{"error":{"message":"can't be blank","code":1001},"meta":{"key":"user_id"}}"#
            )
            .is_user_id_taken()
        );
        // "taken" about another field is not "exists".
        assert!(
            !parse(r#"{"error":{"message":"has already been taken","code":1001},"meta":{"key":"email"}}"#)
                .is_user_id_taken()
        );
        assert!(
            parse(r#"{"error":{"message":"User already exists","code":1001},"meta":{"key":"user_id"}}"#)
                .is_user_id_taken()
        );
    }

    #[test]
    fn transient_codes() {
        let single = |code: u32| {
            parse(&format!(
                r#"{{"error":{{"message":"m","code":{code}}},"meta":{{}}}}"#
            ))
        };
        for code in [codes::RETRY_LATER, 5000, 5001, 5009, 5999] {
            assert!(single(code).is_transient(), "{code}");
        }
        for code in [
            codes::INVALID_PARAMETER,
            codes::RECORD_NOT_FOUND,
            codes::INVALID_REQUEST,
            codes::CONTEXT_NOT_RESOLVED,
            codes::MULTIPLE,
            4999,
            6000,
        ] {
            assert!(!single(code).is_transient(), "{code}");
        }
        let mixed = parse(
            r#"{"errors":[{"error":{"message":"retry later","code":2003},"meta":{}},{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}}]}"#,
        );
        assert!(!mixed.is_transient());
    }

    // The sandbox writes the documented shapes: `meta` is never left out, and
    // several errors go under the 9999 wrapper.
    #[test]
    fn serialised_in_the_documented_shapes() {
        let one = ApiError {
            error: ErrorDetail {
                message: "Sorry, an unexpected error occurred. Please try again later.".into(),
                code: codes::INTERNAL,
            },
            meta: None,
        };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"error":{"message":"Sorry, an unexpected error occurred. Please try again later.","code":5000},"meta":{}}"#
        );
        let field = |key: &str, message: &str| ApiError {
            error: ErrorDetail {
                message: message.into(),
                code: codes::INVALID_PARAMETER,
            },
            meta: Some(ErrorMeta { key: key.into() }),
        };
        let many = ApiErrors::new(vec![
            field("first_name", "can't be blank"),
            field("last_name", "is invalid"),
        ]);
        let json = serde_json::to_string(&many).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"message":"There were issues with your request","code":9999,"errors":[{"error":{"message":"can't be blank","code":1001},"meta":{"key":"first_name"}},{"error":{"message":"is invalid","code":1001},"meta":{"key":"last_name"}}]},"meta":{}}"#
        );
        // And they read back as they were.
        assert_eq!(parse(&json), ErrorBody::Multiple(many.clone()));
        let again: ApiErrors = serde_json::from_str(&json).unwrap();
        assert_eq!(again, many);
        assert_eq!(
            serde_json::to_string(&ErrorBody::Single(one.clone())).unwrap(),
            serde_json::to_string(&one).unwrap()
        );
        // A legacy body is written back in the documented shape.
        let legacy: ApiErrors =
            serde_json::from_str(r#"{"errors":[{"error":{"message":"m","code":1001}}]}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&legacy).unwrap(),
            r#"{"error":{"message":"There were issues with your request","code":9999,"errors":[{"error":{"message":"m","code":1001},"meta":{}}]},"meta":{}}"#
        );
        // A single error is not a multiple-errors body.
        assert!(serde_json::from_str::<ApiErrors>(&serde_json::to_string(&one).unwrap()).is_err());
    }

    #[test]
    fn postal_codes_us_and_canadian() {
        for (given, want) in [
            ("94105", "94105"),
            (" 94105-1234 ", "94105-1234"),
            ("K1A 0B1", "K1A 0B1"),
            ("k1a0b1", "K1A 0B1"),
            ("h2x 1y4", "H2X 1Y4"),
        ] {
            assert_eq!(
                canonical_postal_code(given).as_deref(),
                Some(want),
                "{given}"
            );
        }
        for bad in [
            "",
            "9410",
            "941051",
            "94105-12",
            "94105 1234",
            "ABCDE",
            "K1A  0B1",
            "D1A 0B1",
            "K1O 0B1",
            "W1A 0B1",
            "K1A-0B1",
            "SW1A 1AA",
            "941O5",
        ] {
            assert_eq!(canonical_postal_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn address_payload_goes_to_its_endpoint_with_the_user_fields() {
        let user = CreateUser {
            user_id: "u1".into(),
            first_name: "Ann".into(),
            phone_number: Some("+18005550100".into()),
            ..Default::default()
        };
        let address = Address {
            address_line_1: "1 Main St".into(),
            postal_code: "94105".into(),
            ..Default::default()
        };
        let p = Payload::WithAddress(user.clone(), Box::new(address));
        assert_eq!(p.endpoint(), Endpoint::Addresses);
        assert_eq!(
            String::from_utf8(p.to_body().unwrap()).unwrap(),
            r#"{"address_line_1":"1 Main St","postal_code":"94105","first_name":"Ann","phone_number":"+18005550100"}"#
        );
        let p = Payload::User(user);
        assert_eq!(p.endpoint(), Endpoint::Users);
        assert_eq!(
            String::from_utf8(p.to_body().unwrap()).unwrap(),
            r#"{"user_id":"u1","first_name":"Ann","phone_number":"+18005550100"}"#
        );
    }

    #[test]
    fn validated_address_is_read_flat_or_nested() {
        let flat = br#"{"user_id":"u1","address_line_1":"1 Main St","postal_code":"94105","long_distance_delivery":true}"#;
        let nested = br#"{"user_id":"u1","address":{"address_line_1":"1 Main St","postal_code":"94105","flags":{"long_distance_delivery":true}}}"#;
        let want = ValidatedAddress {
            address_line_1: Some("1 Main St".into()),
            postal_code: Some("94105".into()),
            long_distance_delivery: Some(true),
        };
        assert_eq!(ValidatedAddress::from_answer(flat), Some(want.clone()));
        assert_eq!(ValidatedAddress::from_answer(nested), Some(want));
        let sibling = br#"{"address_line_1":"1 Main St","postal_code":"94105","flags":{"long_distance_delivery":false}}"#;
        assert_eq!(
            ValidatedAddress::from_answer(sibling).and_then(|v| v.long_distance_delivery),
            Some(false)
        );
        assert_eq!(
            ValidatedAddress::from_answer(b"{}"),
            Some(ValidatedAddress::default())
        );
        assert_eq!(ValidatedAddress::from_answer(b"not json"), None);
        assert_eq!(ValidatedAddress::from_answer(b"[1]"), None);
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
