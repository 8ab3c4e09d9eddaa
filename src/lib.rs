//! connect-provision: provision Instacart Connect users from a customer CSV.
//!
//! Flow: `input` (read CSV) → `validate` (row → payload) → `intake`
//! (duplicates) → `exec` (rate-limited, retried creation through `api`) →
//! `report` (results.csv, failures.csv, summary.json). `sandbox` is a
//! faithful fake of the remote API.

pub mod api;
pub mod cli;
pub(crate) mod cmd;
pub(crate) mod error;
pub(crate) mod error_chain;
pub mod exec;
pub(crate) mod exit;
pub(crate) mod fpset;
#[doc(hidden)]
pub mod fuzzing;
pub mod input;
pub mod intake;
pub(crate) mod logging;
pub mod outcome;
pub mod progress;
pub mod report;
pub(crate) mod retry;
pub(crate) mod rowset;
pub mod sandbox;
pub mod settings;
pub(crate) mod shard;
pub mod state;
pub mod validate;

pub(crate) use error::Error;

/// The version and the build it names: `0.1.0 (a1b2c3d 2026-12-05)`, the
/// short commit hash and the commit's date, or `unknown` for a build made
/// outside a git checkout (build.rs). `--version` prints it; summary.json,
/// run.json and report.html record it as `tool_version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CONNECT_PROVISION_COMMIT"),
    " ",
    env!("CONNECT_PROVISION_COMMIT_DATE"),
    ")"
);

use cli::{Cli, Command};
use settings::{ConfigFile, ProcessEnv};

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<exit::Exit, Error> {
    let cfg = cli.config.as_deref().map(ConfigFile::load).transpose()?;
    let output = settings::output_settings(cli.log_format, cli.no_progress, cfg.as_ref());
    let ui = progress::Ui::new(output.no_progress);
    logging::init(output.log_format, cli.verbose, cli.quiet, ui.log_writer());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    match cli.command {
        Command::Run(args) => {
            let s =
                settings::resolve_run(&args, &ProcessEnv, cfg.as_ref(), jiff::Timestamp::now())?;
            let run = cmd::signals::unless_aborted(cmd::run::run(&s, &ui));
            rt.block_on(run).unwrap_or_else(|| {
                // Aborted by a second signal: leave the run's tasks and
                // threads as they stand, and exit 130 as soon as `main` can.
                std::mem::forget(rt);
                Ok(exit::Exit::Interrupted)
            })
        }
        Command::Check(args) => {
            let s = settings::resolve_check(&args, &ProcessEnv, cfg.as_ref())?;
            rt.block_on(cmd::check::check(&s))
        }
        Command::State(cmd) => cmd::state::state(&cmd, &ProcessEnv, cfg.as_ref()),
        Command::Sandbox(args) => rt.block_on(cmd::sandbox::serve(&args)),
        Command::Report(args) => cmd::docs::report(&args),
        Command::Completions(args) => cmd::docs::completions(&args),
        Command::Man(args) => cmd::docs::man(&args),
    }
}
