//! The wire contract as SPEC.md states it. The paths and error codes are
//! written out here, not imported from the crate, so that a protocol test
//! fails when the code drifts from the contract.

/// The token endpoint.
pub const TOKEN_PATH: &str = "/v2/oauth/token";
/// The create-user endpoint.
pub const USERS_PATH: &str = "/v2/fulfillment/users";
/// The create-user-and-validate-address endpoint.
pub const ADDRESSES_ROUTE: &str = "/v2/fulfillment/users/{user_id}/addresses";

/// The error codes Connect's docs name.
pub mod codes {
    /// A request parameter is invalid or missing; `meta.key` names it
    /// (blank, forbidden characters, taken, bad phone or locale).
    pub const INVALID_PARAMETER: u32 = 1001;
    /// Transient: try again later (the 429).
    pub const RETRY_LATER: u32 = 2003;
    /// No such record or endpoint (404, 405).
    pub const RECORD_NOT_FOUND: u32 = 4000;
    /// The request as a whole is invalid: malformed body, bad credentials,
    /// credentials in the query string.
    pub const INVALID_REQUEST: u32 = 4001;
}
