//! Shared helpers of the integration tests, one module a concern:
//! - [`dir`]: scratch directories and the inputs built in them;
//! - [`run`]: the one driver of the binary ([`Run`], [`Running`], [`CliOutput`]);
//! - [`reports`]: the reports read back as data, and the checks every
//!   scenario ends on ([`Reports::assert_consistent`]);
//! - [`sandbox`]: the sandbox on loopback and raw HTTP against it;
//! - [`wire`]: the paths and error codes of the contract, written out.

mod dir;
mod reports;
mod run;
mod sandbox;
mod wire;

pub use dir::*;
pub use reports::*;
pub use run::*;
pub use sandbox::*;
pub use wire::*;
