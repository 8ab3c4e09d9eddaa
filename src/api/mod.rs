//! The Connect API: wire types, the HTTP client, the token manager, and the
//! classification of each attempt's answer.

pub mod classify;
pub mod client;
pub mod model;
pub(crate) mod token;

use client::{BaseUrl, Credentials};

/// Where a live run sends its requests.
pub(crate) struct Remote {
    pub(crate) base_url: BaseUrl,
    pub(crate) credentials: Credentials,
    /// Named in summary.json.
    pub(crate) label: String,
}
