//! The Connect API: wire types, the HTTP client, the token manager, and the
//! classification of each attempt's answer.

pub mod classify;
pub mod client;
pub mod model;
pub mod token;
