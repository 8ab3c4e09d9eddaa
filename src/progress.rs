//! The progress bar: rows done/total, rate, ETA and counts by status, drawn on
//! stderr only when it is a terminal (and not with `--no-progress`). Log lines
//! go through `Ui::log_writer`, which suspends the bar around each line so
//! they never tear it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_indicatif::writer::{IndicatifWriter, Stderr};

use crate::report::Counts;

/// Owner of the terminal's progress display.
#[derive(Clone)]
pub struct Ui {
    multi: MultiProgress,
    enabled: bool,
}

impl Ui {
    /// A display that draws only when stderr is a terminal and `no_progress` is off.
    pub fn new(no_progress: bool) -> Ui {
        let enabled = !no_progress && std::io::stderr().is_terminal();
        let target = if enabled {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        };
        Ui {
            multi: MultiProgress::with_draw_target(target),
            enabled,
        }
    }

    /// The writer the tracing subscriber logs through.
    pub(crate) fn log_writer(&self) -> IndicatifWriter<Stderr> {
        IndicatifWriter::new(self.multi.clone())
    }

    /// A bar for a run over about `total` rows (an estimate; may grow).
    pub(crate) fn run_bar(&self, total: Option<u64>) -> RunBar {
        if !self.enabled {
            return RunBar { bar: None };
        }
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} rows  {rate}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            },
        );
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        RunBar { bar: Some(bar) }
    }
}

/// The bar of one run; a no-op when the display is off.
pub(crate) struct RunBar {
    bar: Option<ProgressBar>,
}

impl RunBar {
    /// Rows done so far and the counts to show.
    pub(crate) fn update(&self, done: u64, counts: &Counts, extra: &str) {
        if let Some(bar) = &self.bar {
            if bar.length().is_some_and(|len| done > len) {
                bar.set_length(done);
            }
            bar.set_position(done);
            bar.set_message(progress_message(counts, extra));
        }
    }

    /// Remove the bar before the final summary is printed.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The text after the bar: counts by status, then engine figures.
fn progress_message(counts: &Counts, extra: &str) -> String {
    let brief = counts.brief();
    match (brief.is_empty(), extra.is_empty()) {
        (true, _) => extra.to_string(),
        (false, true) => brief,
        (false, false) => format!("{brief}  {extra}"),
    }
}

/// Estimate the data rows of a file from its newlines, for the bar's length
/// (quoted newlines make it an over-estimate; the bar corrects at the end).
/// Only a regular file is counted: a second reader of a FIFO would take rows
/// from the run, and could wait for its writer forever.
pub(crate) fn estimate_rows(path: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    let mut last = b'\n';
    let mut first = true;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        // A compressed file's lines are not countable without unpacking
        // it: the bar then shows a count without a total.
        if std::mem::take(&mut first)
            && crate::input::Compression::sniff(&buf[..n]) != crate::input::Compression::None
        {
            return None;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Some(lines.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    #[test]
    fn message_shows_counts_then_extra() {
        let mut c = Counts::default();
        c.add(Status::Created);
        c.add(Status::Created);
        c.add(Status::Failed);
        assert_eq!(progress_message(&c, "429s=3"), "created=2 failed=1  429s=3");
        assert_eq!(progress_message(&Counts::default(), ""), "");
    }

    #[test]
    fn row_estimate_counts_data_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "h\n1\n2\n3").unwrap();
        assert_eq!(estimate_rows(&p), Some(3));
        std::fs::write(&p, "h\n1\n").unwrap();
        assert_eq!(estimate_rows(&p), Some(1));
        // gzip: no total rather than a count of newline bytes.
        std::fs::write(&p, b"\x1f\x8b\x08\x00\n\n\n").unwrap();
        assert_eq!(estimate_rows(&p), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("export.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(made.success());
        // With no writer, opening it to count would wait forever; reading it
        // would take the run's rows.
        assert_eq!(estimate_rows(&p), None);
        assert_eq!(estimate_rows(dir.path()), None);
    }
}
