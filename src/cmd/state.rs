//! `state`: seed (`import`), inspect (`stats`) and export the state file of
//! incremental runs.

use std::io::Write;

use crate::cli::{RunArgs, StateCommand};
use crate::error::Error;
use crate::exit::Exit;
use crate::settings::{ConfigFile, Env, resolve_run};
use crate::state::StateStore;

/// Run one `state` subcommand; returns the exit code.
pub fn state(cmd: &StateCommand, env: &dyn Env, cfg: Option<&ConfigFile>) -> Result<Exit, Error> {
    match cmd {
        StateCommand::Stats(a) => {
            let store = StateStore::open_read_only(&a.state)?;
            let stats = store.stats()?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).unwrap_or_default()
                );
            } else {
                print!("{stats}");
            }
            Ok(Exit::Success)
        }
        StateCommand::Export(a) => {
            let store = StateStore::open_read_only(&a.state)?;
            let n = match &a.out {
                Some(path) => {
                    let f = crate::report::create_private(path).map_err(|e| {
                        Error::Fatal(format!("cannot write {}: {e}", path.display()))
                    })?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = store.export(&mut w)?;
                    w.flush().map_err(|e| {
                        Error::Fatal(format!("cannot write {}: {e}", path.display()))
                    })?;
                    n
                }
                None => match store.export(std::io::stdout().lock()) {
                    Ok(n) => n,
                    // `state export | head` closing the pipe is not an error.
                    Err(crate::state::StateError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        return Ok(Exit::Success);
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            tracing::info!(users = n, "exported");
            Ok(Exit::Success)
        }
        StateCommand::Import(a) => {
            // Read the input exactly as `run` would, with the same options.
            let run_args = RunArgs {
                input: a.input.clone(),
                read: a.read.clone(),
                dry_run: true,
                ..RunArgs::default()
            };
            let settings = resolve_run(&run_args, env, cfg, jiff::Timestamp::now())?;
            let mut intake = crate::intake::Intake::open(&settings)?;
            let mut store = StateStore::open(&a.state)?;
            let s = store.import(&a.results, &mut intake)?;
            println!(
                "imported into {}: created={} exists={} (results rows {}, changed rows skipped {}, not in the input {})",
                a.state.display(),
                s.created,
                s.exists,
                s.results_rows,
                s.skipped_changed,
                s.not_in_input
            );
            Ok(Exit::Success)
        }
    }
}
