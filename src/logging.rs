//! tracing-subscriber set-up: text or JSON lines on stderr, level from
//! -v/-q (or RUST_LOG), written through the progress bar's writer so log
//! lines never tear the bar.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// Level from the -v / -q counts: info by default.
fn level(verbose: u8, quiet: u8) -> &'static str {
    match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    }
}

/// Install the global subscriber writing to `writer`.
pub(crate) fn init<W>(format: LogFormat, verbose: u8, quiet: u8, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // Our own crate at the chosen level; the HTTP stack's chatter only at -vvv.
    let others = match verbose {
        0..=2 => "warn",
        _ => "debug",
    };
    let default = format!("connect_provision={},{others}", level(verbose, quiet));
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() && verbose == 0 && quiet == 0 => EnvFilter::new(s),
        _ => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level(0, 0), "info");
        assert_eq!(level(1, 0), "debug");
        assert_eq!(level(3, 0), "trace");
        assert_eq!(level(0, 1), "warn");
        assert_eq!(level(0, 2), "error");
    }
}
