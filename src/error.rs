//! The top-level error of a command and the exit code it maps to. With
//! `report::exit_code` (0/1/75/130 from the counts), this is the only place
//! exit codes are decided.

pub use crate::error_chain::chain;
use crate::input::InputError;
use crate::report::ReportError;
use crate::settings::ConfigError;

/// Exit code for usage, configuration or unreadable input (nothing sent).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a fatal error during the run (reports flushed).
pub const EXIT_FATAL: u8 = 3;

/// Why a command stopped before it could finish normally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Resume(#[from] crate::report::journal::ResumeError),
    /// The state file could not be opened, locked, read or seeded.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The target refused the credentials or could not be reached.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot start the sandbox on {addr}")]
    Sandbox {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// SPEC exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_)
            | Error::Input(_)
            | Error::Resume(_)
            | Error::State(_)
            | Error::Sandbox { .. }
            | Error::Runtime(_) => EXIT_USAGE,
            // Unwritable reports at start are a usage problem; the engine maps
            // mid-run report failures to Fatal itself.
            Error::Report(_) => EXIT_USAGE,
            Error::Fatal(_) => EXIT_FATAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Config(ConfigError::NoTarget).exit_code(), 2);
        assert_eq!(
            Error::Input(InputError::Empty { path: "x".into() }).exit_code(),
            2
        );
        assert_eq!(Error::Fatal("credentials refused".into()).exit_code(), 3);
    }
}
