//! connect-provision: provision Instacart Connect users from a customer CSV.
//!
//! Flow: `input` (read CSV) → `validate` (row → payload) → `intake`
//! (duplicates) → `exec` (rate-limited, retried creation through `api`) →
//! `report` (results.csv, failures.csv, summary.json). `sandbox` is a
//! faithful fake of the remote API.

pub mod api;
pub mod cli;
pub mod cmd;
pub mod error;
pub mod exec;
pub mod input;
pub mod intake;
pub mod logging;
pub mod outcome;
pub mod report;
pub mod sandbox;
pub mod settings;
pub mod validate;

pub use error::Error;

use cli::{Cli, Command};
use settings::{ConfigFile, ProcessEnv};

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    let cfg = cli.config.as_deref().map(ConfigFile::load).transpose()?;
    let output = settings::output_settings(cli.log_format, cli.no_progress, cfg.as_ref());
    logging::init(output.log_format, cli.verbose, cli.quiet, std::io::stderr);
    match cli.command {
        Command::Run(args) => {
            let s = settings::resolve_run(&args, &ProcessEnv, cfg.as_ref(), jiff::Timestamp::now())?;
            if s.resume {
                return Err(settings::ConfigError::NotAvailable { option: "--resume" }.into());
            }
            if s.exec.time_budget.is_some() {
                return Err(settings::ConfigError::NotAvailable { option: "--time-budget" }.into());
            }
            if s.dry_run {
                let summary = cmd::run::dry_run(&s)?;
                print!("{}", cmd::run::render_summary(&summary, &s.out));
                return Ok(summary.exit_code);
            }
            Err(settings::ConfigError::NotAvailable { option: "a live run" }.into())
        }
        Command::Check(_) => Err(settings::ConfigError::NotAvailable { option: "check" }.into()),
        Command::Sandbox(_) => Err(settings::ConfigError::NotAvailable { option: "sandbox" }.into()),
    }
}
