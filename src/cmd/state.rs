//! `state`: seed (`import`), inspect (`stats`) and export the state file of
//! incremental runs.

use std::io::Write;

use crate::cli::{StateCommand, StateExportArgs, StateFileArgs, StateImportArgs};
use crate::error::Error;
use crate::exit::Exit;
use crate::settings::{ConfigFile, Env, resolve_input};
use crate::state::StateStore;

/// Run one `state` subcommand; returns the exit code. No subcommand reads
/// the environment (`_env`): `import` reads its input with the flags and
/// the config file only, as `run` does.
pub(crate) fn state(
    cmd: &StateCommand,
    _env: &dyn Env,
    cfg: Option<&ConfigFile>,
) -> Result<Exit, Error> {
    match cmd {
        StateCommand::Stats(a) => stats(a),
        StateCommand::Export(a) => export(a),
        StateCommand::Import(a) => import(a, cfg),
    }
}

/// `state stats`: counts per status, file size and the last run.
fn stats(a: &StateFileArgs) -> Result<Exit, Error> {
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

/// `state export`: the users as CSV, to `--out` or stdout.
fn export(a: &StateExportArgs) -> Result<Exit, Error> {
    let store = StateStore::open_read_only(&a.state)?;
    let n = match &a.out {
        Some(path) => {
            let f = crate::report::create_private(path)
                .map_err(|e| Error::Fatal(format!("cannot write {}: {e}", path.display())))?;
            let mut w = std::io::BufWriter::new(f);
            let n = store.export(&mut w)?;
            w.flush()
                .map_err(|e| Error::Fatal(format!("cannot write {}: {e}", path.display())))?;
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

/// `state import`: seed the state from an earlier run's results.csv and the
/// input it came from.
fn import(a: &StateImportArgs, cfg: Option<&ConfigFile>) -> Result<Exit, Error> {
    // Read the input exactly as `run` does, with the same options.
    let input = resolve_input(&a.input, &a.read, cfg)?;
    let mut intake = crate::intake::Intake::open_input(&input)?;
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
