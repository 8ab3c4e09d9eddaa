//! `report`, `completions` and `man`: what an operator reads, drawn again
//! from a run's files, or generated from the command line's own definition.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs, ReportArgs};
use crate::error::Error;
use crate::exit::Exit;

/// `report DIR`: write DIR/report.html again.
pub(crate) fn report(args: &ReportArgs) -> Result<Exit, Error> {
    let path = crate::report::view::rebuild(&args.dir)?;
    println!("report: {}", path.display());
    Ok(Exit::Success)
}

/// `completions SHELL`: the script on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<Exit, Error> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut out);
    print_all(&out)
}

/// `man`: the main page on stdout, or every page into `--out-dir`.
pub(crate) fn man(args: &ManArgs) -> Result<Exit, Error> {
    let cmd = Cli::command();
    match &args.out_dir {
        Some(dir) => {
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(cmd, dir))
                .map_err(|source| Error::Write {
                    path: dir.clone(),
                    source,
                });
            written?;
            println!("man pages: {}", dir.display());
            Ok(Exit::Success)
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|source| Error::Write {
                    path: "<stdout>".into(),
                    source,
                })?;
            print_all(&out)
        }
    }
}

/// Write `bytes` to stdout; a closed pipe (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<Exit, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Exit::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        Err(source) => Err(Error::Write {
            path: "<stdout>".into(),
            source,
        }),
    }
}
