//! The `--metrics-file` report: the run's figures in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile collector.
//!
//! The caller writes the file every 10 s while the run goes on and once at
//! the end. Each write builds a fresh `prometheus-client` [`Registry`] from a
//! [`Snapshot`], encodes it and replaces the file atomically: a temporary file
//! in the same directory (hidden, and not ending in `.prom`, so the collector
//! never reads it half-written), fsync, mode 0644, rename.
//!
//! Format: node_exporter parses `*.prom` files with the Prometheus *text*
//! parser (`expfmt.TextParser`), not the OpenMetrics one. We therefore encode
//! with `encoding::prometheus_text::encode` (prometheus-client 0.26+) rather
//! than the OpenMetrics `encoding::text::encode`. The OpenMetrics encoder's
//! `# EOF` line would be harmless (the text parser skips it as a comment), but
//! it writes a counter's `# HELP`/`# TYPE` under the name without `_total`
//! while the sample carries `_total` (client_rust issues #51, #194): the text
//! parser then drops the typed, documented family as empty and reads
//! `..._total` as an untyped metric without help. The Prometheus text encoder
//! names all three lines `..._total` and writes no `# EOF`.
//!
//! One file per job: node_exporter merges every `*.prom` file of its
//! directory into one scrape, and two files with the same series (same name,
//! same labels) make the scrape fail for the duplicates. [`write`] therefore
//! labels every series with `metrics_file="<file name>"`, which is unique in
//! the directory.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Prefix of every metric name.
const PREFIX: &str = "connect_provision";

/// Full name of the one metric carried over from the previous file.
const LAST_SUCCESS: &str = "connect_provision_last_success_timestamp_seconds";

/// Label that tells the series of one metrics file from another's.
const FILE_LABEL: &str = "metrics_file";

/// What one write of the metrics file shows.
pub(crate) struct Snapshot<'a> {
    /// Rows per status so far, all statuses given, zeros included.
    pub(crate) rows: &'a [(&'static str, u64)],
    /// Requests sent to the API so far.
    pub(crate) requests_sent: u64,
    /// Responses 429 (throttled) so far.
    pub(crate) throttled_429: u64,
    /// Retried requests so far.
    pub(crate) retries: u64,
    /// Access-token refreshes so far.
    pub(crate) token_refreshes: u64,
    /// The limiter's current rate; `None` in a dry run or with no limit (the
    /// metric is then left out).
    pub(crate) rate_per_second: Option<f64>,
    /// Active time of the run so far.
    pub(crate) duration_seconds: f64,
    /// When the run started (unix seconds).
    pub(crate) started_unix: f64,
    /// `None` while running; the process's exit code in the final write.
    pub(crate) exit_code: Option<u8>,
    /// Whether this is a dry run.
    pub(crate) dry_run: bool,
    /// The time of this write (unix seconds).
    pub(crate) now_unix: f64,
}

/// Why the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetricsError {
    /// The registry could not be encoded (cannot happen into a `String`, but
    /// the encoder's signature allows it).
    #[error("cannot encode the metrics in the Prometheus text format")]
    Encode(#[source] std::fmt::Error),
    /// The previous metrics file exists but could not be read, so its
    /// last-success time cannot be carried over.
    #[error("cannot read the previous metrics file {path}")]
    Read {
        /// The metrics file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The new metrics file could not be written or renamed into place.
    #[error("cannot write the metrics file {path}")]
    Write {
        /// The metrics file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl MetricsError {
    /// A [`MetricsError::Write`] for `path`.
    fn write(path: &Path, source: io::Error) -> Self {
        MetricsError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The `status` label of `connect_provision_rows`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    /// A row status, as results.csv spells it.
    status: &'static str,
}

/// Render `s` in the Prometheus text format, with
/// `connect_provision_last_success_timestamp_seconds` set to `last_success`
/// when known. Unlike [`write`], adds no `metrics_file` label.
#[cfg(test)]
pub(crate) fn render(s: &Snapshot<'_>, last_success: Option<f64>) -> Result<String, MetricsError> {
    encode(&registry(s, last_success, None))
}

/// Write `s` to `path` atomically, labelled with the file's name.
///
/// The last-success time is carried over from the file already at `path`
/// and set to `s.now_unix` when this is the final write of a run that
/// counts as a success (see [`counts_as_success`]).
pub(crate) fn write(path: &Path, s: &Snapshot<'_>) -> Result<(), MetricsError> {
    let previous = read_last_success(path)?;
    let last_success = if counts_as_success(s) {
        Some(s.now_unix)
    } else {
        previous
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| MetricsError::write(path, io::Error::other("the path names no file")))?
        .to_string_lossy()
        .into_owned();
    let text = encode(&registry(s, last_success, Some(file_name)))?;
    write_atomic(path, &text)
}

/// Whether `s` is the final write of a run that succeeded: exit 0 (every
/// row has its final answer) or 1 (finished; some rows need their data
/// fixed, which another run would not change). 75 (some rows failed
/// transiently), 2, 3 and 130 are not, and a dry run never is: it sends
/// nothing, so it says nothing about the partner API.
fn counts_as_success(s: &Snapshot<'_>) -> bool {
    !s.dry_run && matches!(s.exit_code, Some(0 | 1))
}

/// Encode `registry` in the Prometheus text format (no `# EOF`; see the
/// module doc).
fn encode(registry: &Registry) -> Result<String, MetricsError> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).map_err(MetricsError::Encode)?;
    Ok(text)
}

/// A registry holding every metric of `s`, each labelled
/// `metrics_file="<file_label>"` when given.
///
/// Help texts do not end in a full stop: `Registry::register` appends one
/// (client_rust issue #56).
fn registry(s: &Snapshot<'_>, last_success: Option<f64>, file_label: Option<String>) -> Registry {
    let labels = file_label.map(|f| (Cow::Borrowed(FILE_LABEL), Cow::Owned(f)));
    let mut r = Registry::with_prefix_and_labels(PREFIX, labels.into_iter());

    let rows = Family::<StatusLabel, Gauge<u64, AtomicU64>>::default();
    for &(status, n) in s.rows {
        rows.get_or_create(&StatusLabel { status }).set(n);
    }
    r.register("rows", "Rows per status so far in this run", rows);

    register_counts(&mut r, s);
    register_gauges(&mut r, s, last_success);
    r
}

/// Register the run's state as gauges; those whose value is `None` are left
/// out.
fn register_gauges(r: &mut Registry, s: &Snapshot<'_>, last_success: Option<f64>) {
    let floats = [
        (
            "rate_per_second",
            "The rate limiter's current rate, requests per second",
            s.rate_per_second,
        ),
        (
            "duration_seconds",
            "Active time of the run so far, in seconds",
            Some(s.duration_seconds),
        ),
        (
            "started_timestamp_seconds",
            "When the run started, unix seconds",
            Some(s.started_unix),
        ),
        (
            "last_success_timestamp_seconds",
            "When a run last ended with exit code 0 or 1, unix seconds",
            last_success,
        ),
    ];
    for (name, help, v) in floats {
        if let Some(v) = v {
            let g: Gauge<f64, AtomicU64> = Gauge::default();
            g.set(v);
            r.register(name, help, g);
        }
    }
    let ints = [
        (
            "running",
            "1 while the run goes on, 0 once it has ended",
            Some(i64::from(s.exit_code.is_none())),
        ),
        (
            "exit_code",
            "The run's exit code: 0 ok, 1 fix data, 75 retry later, 2 usage, 3 fatal, 130 interrupted",
            s.exit_code.map(i64::from),
        ),
        (
            "dry_run",
            "1 for a dry run (nothing sent), else 0",
            Some(i64::from(s.dry_run)),
        ),
    ];
    for (name, help, v) in ints {
        if let Some(v) = v {
            let g: Gauge = Gauge::default();
            g.set(v);
            r.register(name, help, g);
        }
    }
}

/// Register the run's request figures as counters.
///
/// Counters rather than gauges: each is a count of events that only grows
/// while the process lives and starts from zero in the next run, which is
/// exactly a counter's contract; Prometheus treats the nightly drop to zero
/// as a counter reset, so `rate()`/`increase()` work across runs, and the
/// raw value still reads as "this run so far". The encoder appends `_total`
/// (`connect_provision_requests_sent_total`); registering a name that ends
/// in `_total` panics in debug builds.
fn register_counts(r: &mut Registry, s: &Snapshot<'_>) {
    let counts = [
        (
            "requests_sent",
            "Requests sent to the partner API in this run",
            s.requests_sent,
        ),
        (
            "throttled_429",
            "Responses 429 Too Many Requests in this run",
            s.throttled_429,
        ),
        ("retries", "Requests retried in this run", s.retries),
        (
            "token_refreshes",
            "Access-token refreshes in this run",
            s.token_refreshes,
        ),
    ];
    for (name, help, n) in counts {
        let c: Counter<u64, AtomicU64> = Counter::default();
        c.inc_by(n);
        r.register(name, help, c);
    }
}

/// The last-success time in the metrics file at `path`: `None` when there
/// is no file or it holds no readable value.
fn read_last_success(path: &Path) -> Result<Option<f64>, MetricsError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MetricsError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(parse_last_success(&String::from_utf8_lossy(&bytes)))
}

/// The value of the last `connect_provision_last_success_timestamp_seconds`
/// sample in `text`, with or without labels. We write no timestamps, so the
/// value is a line's last field.
fn parse_last_success(text: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(LAST_SUCCESS)?;
            if !rest.starts_with([' ', '{']) {
                return None; // a longer name that merely starts the same
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .rfind(|v| v.is_finite())
}

/// Replace `path` with `text`: a hidden temporary file in the same
/// directory, mode 0644, fsync, rename, then a best-effort fsync of the
/// directory. Readers see the old file or the new one, never a part.
fn write_atomic(path: &Path, text: &str) -> Result<(), MetricsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let err = |e| MetricsError::write(path, e);
    // ".<name>.XXXXXX.tmp": hidden, and not "*.prom", so node_exporter
    // never reads it.
    let prefix = format!(
        ".{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    make_world_readable(tmp.as_file()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Set mode 0644 on `file`. tempfile creates files 0600, which node_exporter
/// (another user) could not read. `fchmod` is not subject to the umask,
/// unlike `Builder::permissions`, which passes the mode to `open`.
#[cfg(unix)]
fn make_world_readable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
}

/// No modes to set off Unix.
#[cfg(not(unix))]
fn make_world_readable(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Fsync `dir` so the rename survives a crash. Best effort: some file
/// systems refuse to fsync a directory, and a metrics file that reverts to
/// its previous version after a power cut is rewritten within 10 s anyway.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Sample, Scrape, Value};

    use crate::report::timeline::STATUS_NAMES as STATUSES;

    /// Rows 10, 11, 12… per status, in `STATUSES` order.
    fn rows() -> Vec<(&'static str, u64)> {
        STATUSES.iter().zip(10..).map(|(&s, n)| (s, n)).collect()
    }

    fn snapshot<'a>(rows: &'a [(&'static str, u64)], exit_code: Option<u8>) -> Snapshot<'a> {
        Snapshot {
            rows,
            requests_sent: 120,
            throttled_429: 3,
            retries: 7,
            token_refreshes: 1,
            rate_per_second: Some(42.5),
            duration_seconds: 61.25,
            started_unix: 1_764_644_400.5,
            exit_code,
            dry_run: false,
            now_unix: 1_764_648_000.25,
        }
    }

    /// Parse the metrics file with prometheus-parse, checking that every
    /// sample line became a sample (the parser skips bad values silently).
    fn parse_file(path: &Path) -> Scrape {
        let text = fs::read_to_string(path).unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let sample_lines = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(scrape.samples.len(), sample_lines, "{text}");
        scrape
    }

    fn find<'s>(scrape: &'s Scrape, name: &str) -> Option<&'s Sample> {
        let mut found = scrape.samples.iter().filter(|s| s.metric == name);
        let first = found.next();
        assert!(found.next().is_none(), "{name} appears twice");
        first
    }

    fn gauge(scrape: &Scrape, name: &str) -> Option<f64> {
        find(scrape, name).map(|s| match s.value {
            Value::Gauge(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        })
    }

    fn counter(scrape: &Scrape, name: &str) -> f64 {
        match find(scrape, name).map(|s| &s.value) {
            Some(Value::Counter(v)) => *v,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn last_success(scrape: &Scrape) -> Option<f64> {
        gauge(scrape, LAST_SUCCESS)
    }

    /// Check that `scrape` has one `connect_provision_rows` series per
    /// status, with the count from `rows`.
    fn assert_rows(scrape: &Scrape, rows: &[(&'static str, u64)]) {
        let mut seen = Vec::new();
        for s in scrape
            .samples
            .iter()
            .filter(|s| s.metric == "connect_provision_rows")
        {
            let status = s.labels.get("status").unwrap();
            let want = rows.iter().find(|(st, _)| *st == status).unwrap().1;
            assert_eq!(s.value, Value::Gauge(want as f64), "{status}");
            seen.push(status.to_owned());
        }
        seen.sort();
        let mut all = STATUSES.map(String::from).to_vec();
        all.sort();
        assert_eq!(seen, all);
    }

    /// The file names in `dir`.
    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn running_write_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect_provision_acme.prom");
        let rows = rows();
        write(&path, &snapshot(&rows, None)).unwrap();
        let scrape = parse_file(&path);

        assert_rows(&scrape, &rows);

        assert_eq!(
            counter(&scrape, "connect_provision_requests_sent_total"),
            120.0
        );
        assert_eq!(
            counter(&scrape, "connect_provision_throttled_429_total"),
            3.0
        );
        assert_eq!(counter(&scrape, "connect_provision_retries_total"), 7.0);
        assert_eq!(
            counter(&scrape, "connect_provision_token_refreshes_total"),
            1.0
        );
        assert_eq!(
            gauge(&scrape, "connect_provision_rate_per_second"),
            Some(42.5)
        );
        assert_eq!(
            gauge(&scrape, "connect_provision_duration_seconds"),
            Some(61.25)
        );
        assert_eq!(
            gauge(&scrape, "connect_provision_started_timestamp_seconds"),
            Some(1_764_644_400.5)
        );
        assert_eq!(gauge(&scrape, "connect_provision_running"), Some(1.0));
        assert_eq!(gauge(&scrape, "connect_provision_dry_run"), Some(0.0));
        assert_eq!(gauge(&scrape, "connect_provision_exit_code"), None);
        assert_eq!(last_success(&scrape), None);

        // Every series carries the file label, and every metric has help.
        for s in &scrape.samples {
            let file = s.labels.get(FILE_LABEL);
            assert_eq!(file, Some("connect_provision_acme.prom"), "{}", s.metric);
            let help = scrape.docs.get(&s.metric);
            assert!(help.is_some_and(|h| !h.is_empty()), "{}", s.metric);
        }
    }

    #[test]
    fn file_is_0644_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.prom");
        let rows = rows();
        write(&path, &snapshot(&rows, None)).unwrap();
        write(&path, &snapshot(&rows, Some(0))).unwrap();
        assert_eq!(dir_entries(dir.path()), ["run.prom"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn final_write_has_exit_code_and_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.prom");
        let rows = rows();
        write(&path, &snapshot(&rows, Some(75))).unwrap();
        let scrape = parse_file(&path);
        assert_eq!(gauge(&scrape, "connect_provision_exit_code"), Some(75.0));
        assert_eq!(gauge(&scrape, "connect_provision_running"), Some(0.0));
        assert_eq!(last_success(&scrape), None, "75 is not a success");
    }

    #[test]
    fn last_success_is_set_on_success_and_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.prom");
        let rows = rows();
        let first = snapshot(&rows, Some(0));
        write(&path, &first).unwrap();
        assert_eq!(last_success(&parse_file(&path)), Some(first.now_unix));

        // The next night: while running, and after endings that are not
        // successes, the old time stays.
        for code in [None, Some(2), Some(3), Some(75), Some(130)] {
            let mut next = snapshot(&rows, code);
            next.now_unix += 86_400.0;
            write(&path, &next).unwrap();
            assert_eq!(
                last_success(&parse_file(&path)),
                Some(first.now_unix),
                "{code:?}"
            );
        }

        // Exit 1 (finished, some rows need fixing) is a success.
        let mut fix_data = snapshot(&rows, Some(1));
        fix_data.now_unix += 2.0 * 86_400.0;
        write(&path, &fix_data).unwrap();
        assert_eq!(last_success(&parse_file(&path)), Some(fix_data.now_unix));
    }

    #[test]
    fn dry_run_never_sets_last_success_but_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.prom");
        let rows = rows();
        let mut dry = snapshot(&rows, Some(0));
        dry.dry_run = true;
        dry.rate_per_second = None;
        write(&path, &dry).unwrap();
        let scrape = parse_file(&path);
        assert_eq!(last_success(&scrape), None);
        assert_eq!(gauge(&scrape, "connect_provision_dry_run"), Some(1.0));
        assert_eq!(gauge(&scrape, "connect_provision_rate_per_second"), None);

        let real = snapshot(&rows, Some(0));
        write(&path, &real).unwrap();
        dry.now_unix = real.now_unix + 60.0;
        write(&path, &dry).unwrap();
        assert_eq!(last_success(&parse_file(&path)), Some(real.now_unix));
    }

    #[test]
    fn render_is_prometheus_text_not_openmetrics() {
        let rows = rows();
        let text = render(&snapshot(&rows, Some(0)), Some(1_700_000_000.0)).unwrap();
        assert!(text.ends_with('\n'));
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains(FILE_LABEL), "render adds no file label");
        // Like node_exporter's parser: a sample belongs to the family of
        // the `# TYPE` line before it only if the names match exactly.
        let mut typed = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, typed, "{line}");
            }
        }
        assert!(text.contains("# TYPE connect_provision_requests_sent_total counter\n"));
        assert!(text.contains("\nconnect_provision_last_success_timestamp_seconds 1700000000"));
    }

    #[test]
    fn last_success_parses_with_and_without_labels() {
        let text = "# HELP x y\n\
                    connect_provision_last_success_timestamp_seconds_other 5\n\
                    connect_provision_last_success_timestamp_seconds{metrics_file=\"a b}.prom\"} 1.5e9\n";
        assert_eq!(parse_last_success(text), Some(1.5e9));
        let text = "connect_provision_last_success_timestamp_seconds 17\n";
        assert_eq!(parse_last_success(text), Some(17.0));
        assert_eq!(parse_last_success("garbage\n\u{0}"), None);
        let text = "connect_provision_last_success_timestamp_seconds NaN\n";
        assert_eq!(parse_last_success(text), None);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("run.prom");
        let rows = rows();
        let err = write(&path, &snapshot(&rows, None)).unwrap_err();
        assert!(matches!(err, MetricsError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");

        // A directory where the file should be: reading it fails.
        let path = dir.path().join("a-dir.prom");
        fs::create_dir(&path).unwrap();
        let err = write(&path, &snapshot(&rows, None)).unwrap_err();
        assert!(err.to_string().contains("a-dir.prom"), "{err}");
    }
}
