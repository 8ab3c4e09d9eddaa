//! The `connect-provision` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = connect_provision::cli::Cli::parse();
    match connect_provision::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let code = err.exit().code();
            eprintln!("error: {:#}", anyhow::Error::from(err));
            ExitCode::from(code)
        }
    }
}
