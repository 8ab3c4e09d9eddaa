//! The Connect API: wire types, the HTTP client, the token manager, and the
//! classification of each attempt's answer.

pub mod classify;
pub mod client;
pub mod model;
pub mod token;

use client::Credentials;

/// Where a live run sends its requests.
pub struct Remote {
    pub base_url: String,
    pub credentials: Credentials,
    /// Named in summary.json.
    pub label: String,
}
