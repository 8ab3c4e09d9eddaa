//! The top-level error of a command and the [`Exit`] it maps to. With
//! `report::summary::exit` (from the counts), this is the only place exit
//! codes are decided.

pub(crate) use crate::error_chain::chain;
use crate::exit::Exit;
use crate::input::InputError;
use crate::report::ReportError;
use crate::settings::ConfigError;

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
    /// `report DIR` could not draw the page.
    #[error(transparent)]
    View(#[from] crate::report::view::ViewError),
    /// Generated output (completions, man pages) could not be written.
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::report::run_dir::OpenError> for Error {
    fn from(e: crate::report::run_dir::OpenError) -> Self {
        use crate::report::run_dir::OpenError;
        match e {
            OpenError::Resume(e) => Error::Resume(e),
            OpenError::Report(e) => Error::Report(e),
        }
    }
}

impl Error {
    /// How a command that failed with this error exits.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_)
            | Error::Input(_)
            | Error::Resume(_)
            | Error::State(_)
            | Error::Sandbox { .. }
            | Error::Runtime(_)
            | Error::View(_)
            | Error::Write { .. } => Exit::Usage,
            // Unwritable reports at start are a usage problem; the engine maps
            // mid-run report failures to Fatal itself.
            Error::Report(_) => Exit::Usage,
            Error::Fatal(_) => Exit::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Config(ConfigError::NoTarget).exit().code(), 2);
        assert_eq!(
            Error::Input(InputError::Empty { path: "x".into() })
                .exit()
                .code(),
            2
        );
        assert_eq!(Error::Fatal("credentials refused".into()).exit().code(), 3);
    }
}
