//! The command line, as clap derive structs kept as close to the flags as
//! possible ("LowArgs"). Fields that the config file can also set are
//! `Option`s with no clap default, so `settings` can apply the precedence of
//! README "Config file and precedence" (flag > environment > config file >
//! default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Provision Instacart Connect user accounts from a customer CSV.
#[derive(Debug, Parser)]
#[command(
    name = "connect-provision",
    version = crate::VERSION,
    about,
    after_help = "Start with a dry run of the sample, then a real run against the embedded sandbox:\n  \
                  connect-provision run samples/customers.csv --dry-run\n  \
                  connect-provision run samples/customers.csv --sandbox\n\n\
                  Exit codes: 0 all done, 1 some rows need fixing, 75 some rows failed transiently \
                  (rerun failures.csv later), 2 usage/input error, 3 fatal (credentials, target \
                  unreachable), 130 interrupted (resumable)."
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,

    /// TOML file holding any option (flags and environment win over it).
    #[arg(
        long,
        global = true,
        env = "CONNECT_PROVISION_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) quiet: u8,

    /// Never draw a progress bar (it is drawn only when stderr is a terminal).
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision users from a CSV file (or - for stdin).
    #[command(after_help = "Examples:\n  \
        connect-provision run samples/customers.csv --dry-run\n  \
        connect-provision run samples/customers.csv --sandbox\n  \
        CONNECT_CLIENT_ID=abc connect-provision run export.csv --env development \\\n      \
        --client-secret-file ~/.connect/secret --encoding windows-1252 --map user_id='Customer ID'\n  \
        connect-provision run reports/2026-11-30T02:00:00Z/failures.csv --env production")]
    Run(Box<RunArgs>),
    /// Get a token and report its expiry; creates nothing.
    #[command(after_help = "Examples:\n  \
        connect-provision check --sandbox\n  \
        CONNECT_CLIENT_ID=abc CONNECT_CLIENT_SECRET=... connect-provision check --env development")]
    Check(CheckArgs),
    /// Inspect or seed the state file of incremental runs (--state).
    #[command(subcommand)]
    State(StateCommand),
    /// Run the fake Connect API standalone until Ctrl-C.
    #[command(after_help = "Examples:\n  \
        connect-provision sandbox\n  \
        connect-provision sandbox --listen 127.0.0.1:9000 --rate-limit 50 --fail-rate 0.05 --seed 7")]
    Sandbox(SandboxArgs),
    /// Draw report.html again from a run's report directory.
    #[command(after_help = "Examples:\n  \
        connect-provision report reports/2026-11-30T02:00:00Z")]
    Report(ReportArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = "Examples:\n  \
        connect-provision completions bash > ~/.local/share/bash-completion/completions/connect-provision\n  \
        connect-provision completions zsh > ~/.zfunc/_connect-provision\n  \
        connect-provision completions fish > ~/.config/fish/completions/connect-provision.fish")]
    Completions(CompletionsArgs),
    /// Print the man page on stdout, or write one page per command.
    #[command(after_help = "Examples:\n  \
        connect-provision man | man -l -\n  \
        connect-provision man --out-dir ~/.local/share/man/man1")]
    Man(ManArgs),
}

/// `report DIR`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run's report directory (its --out): summary.json, timeline.csv
    /// and results.csv are read, report.html is written.
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

/// `completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum, value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write connect-provision.1 and a page per command (connect-provision-run.1,
    /// ...) into this directory instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// A named Connect environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EnvName {
    Development,
    Production,
}

/// Where requests go. Exactly one of these is required for a live run.
#[derive(Debug, Default, Args)]
pub(crate) struct TargetArgs {
    /// Start the embedded sandbox on a loopback port and use it; nothing leaves the machine.
    #[arg(long, conflicts_with_all = ["env", "base_url"])]
    pub(crate) sandbox: bool,

    /// A Connect environment: development or production.
    #[arg(long, value_enum, value_name = "NAME", conflicts_with = "base_url")]
    pub(crate) env: Option<EnvName>,

    /// An explicit API base URL (https; plain http only for loopback hosts).
    #[arg(long, env = "CONNECT_BASE_URL", value_name = "URL")]
    pub(crate) base_url: Option<String>,
}

/// Credentials. The secret is never accepted as a flag value.
#[derive(Debug, Default, Args)]
pub(crate) struct CredentialArgs {
    /// OAuth client id.
    #[arg(long, env = "CONNECT_CLIENT_ID", value_name = "ID")]
    pub(crate) client_id: Option<String>,

    /// File holding the client secret (or set CONNECT_CLIENT_SECRET).
    #[arg(long, value_name = "PATH")]
    pub(crate) client_secret_file: Option<PathBuf>,

    /// OAuth scope [default: connect:fulfillment].
    #[arg(long, value_name = "SCOPE")]
    pub(crate) scope: Option<String>,
}

/// How to read and validate the input: shared by `run` and `state import`,
/// which must read a file exactly as the run did.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct ReadArgs {
    /// Map a payload field to a differently named column, e.g. user_id='Customer ID'.
    #[arg(long = "map", value_name = "FIELD=HEADER", value_parser = parse_mapping)]
    pub(crate) map: Vec<(String, String)>,

    /// Input encoding, any WHATWG label (windows-1252, latin1, utf-16le, ...) [default: utf-8].
    #[arg(long, value_name = "LABEL")]
    pub(crate) encoding: Option<String>,

    /// Field delimiter, one ASCII character; `tab` or `\t` for tab [default: ,].
    #[arg(long, value_name = "CHAR", value_parser = parse_delimiter)]
    pub(crate) delimiter: Option<u8>,

    /// Region for phone numbers written without +country code [default: US].
    #[arg(long, value_name = "REGION")]
    pub(crate) phone_region: Option<String>,

    /// Locale sent for rows whose locale is blank, e.g. en-US.
    #[arg(long, value_name = "TAG")]
    pub(crate) default_locale: Option<String>,

    /// A row without an address (address_line_1 and postal_code) is invalid.
    #[arg(long)]
    pub(crate) require_address: bool,
}

/// `run`'s options.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// The customer CSV (a header row is required), or - for stdin.
    #[arg(value_name = "INPUT")]
    pub(crate) input: PathBuf,

    #[command(flatten)]
    pub(crate) target: TargetArgs,

    #[command(flatten)]
    pub(crate) credentials: CredentialArgs,

    #[command(flatten)]
    pub(crate) read: ReadArgs,

    /// Requests per second shared by all workers, or `auto` to find the
    /// partner's limit while running [default: 10].
    #[arg(long, value_name = "N|auto", value_parser = parse_rate)]
    pub(crate) rate: Option<RateArg>,

    /// With --rate auto: never go above this many requests per second [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate_max: Option<u32>,

    /// With --rate auto: the rate to start from, e.g. the last run's
    /// summary.json rate_final [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate_start: Option<u32>,

    /// Circuit breaker: stop the run (exit 3) when more than this fraction of
    /// the last --error-window finished rows were rejected or invalid [default: 0.5].
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub(crate) max_error_rate: Option<f64>,

    /// Circuit breaker: how many of the latest finished rows it looks at [default: 200].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub(crate) error_window: Option<u32>,

    /// The partner allows bursts of N (a token bucket): pace with GCRA at
    /// this burst and no sliding-window guard. Without it, at most --rate
    /// requests go in any sliding second, the strictest limiter there is.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) burst: Option<u32>,

    /// Requests in flight at once [default: enough to reach --rate at the observed latency].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) concurrency: Option<u32>,

    /// Attempts per row before it is `failed` [default: 6].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) max_attempts: Option<u32>,

    /// Timeout of one request, e.g. 30s, 500ms [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Process only the first N data rows.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,

    /// Validate and write the reports; no network at all.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Continue an interrupted run recorded in --out.
    #[arg(long)]
    pub(crate) resume: bool,

    /// Stop taking rows after this long (e.g. 3h), drain, exit 130; resumable.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) time_budget: Option<Duration>,

    /// Report directory (by default `reports/<UTC timestamp>/`).
    #[arg(
        long,
        value_name = "DIR",
        help = "Report directory [default: reports/<UTC timestamp>/]."
    )]
    pub(crate) out: Option<PathBuf>,

    /// SQLite file remembering what earlier runs provisioned: known users
    /// are not sent again (`unchanged` / `changed`). Created on first use.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,

    /// Handle only shard K of N: the rows whose user_id hashes to K
    /// (xxh3, stable across versions). Give each shard its own --out and
    /// --state.
    #[arg(long, value_name = "K/N", value_parser = clap::value_parser!(crate::shard::Shard))]
    pub(crate) shard: Option<crate::shard::Shard>,

    /// Write the run's figures for Prometheus (node_exporter's textfile
    /// collector) to this file: every 10 s and at the end, atomically.
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,

    /// Benchmarking only: skip the journal's fsync batches (a crash may then
    /// lose recorded rows; they are resent and end `exists`).
    #[arg(long, hide = true)]
    pub(crate) no_journal: bool,
}

/// `state`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Seed the state from an earlier run's results.csv and the input it came
    /// from (read with the same options), so the next run sends only what is new.
    #[command(after_help = "Example:\n  \
        connect-provision state import --state nightly.db --results reports/import-1/results.csv \\\n      \
        customers.csv --config provision.toml")]
    Import(StateImportArgs),
    /// Counts per status, file size and the last run.
    Stats(StateFileArgs),
    /// CSV of user_id, status, first_seen, last_seen (no names or phones).
    Export(StateExportArgs),
}

/// `state stats`.
#[derive(Debug, Args)]
pub struct StateFileArgs {
    /// The state file.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `state export`.
#[derive(Debug, Args)]
pub struct StateExportArgs {
    /// The state file.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: PathBuf,

    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// `state import`.
#[derive(Debug, Args)]
pub struct StateImportArgs {
    /// The state file (created if missing).
    #[arg(long, value_name = "PATH")]
    pub(crate) state: PathBuf,

    /// results.csv of the earlier run.
    #[arg(long, value_name = "FILE")]
    pub(crate) results: PathBuf,

    /// The input that run read.
    #[arg(value_name = "INPUT")]
    pub(crate) input: PathBuf,

    #[command(flatten)]
    pub(crate) read: ReadArgs,
}

/// `check`'s options.
#[derive(Debug, Default, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    #[command(flatten)]
    pub(crate) credentials: CredentialArgs,

    /// Timeout of the token request [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// `sandbox`'s options.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub(crate) listen: SocketAddr,

    /// Client id the sandbox accepts.
    #[arg(long, value_name = "ID", default_value = "sandbox-client")]
    pub(crate) client_id: String,

    /// Client secret the sandbox accepts (a sandbox-only value, not a real secret).
    #[arg(long, value_name = "SECRET", default_value = "sandbox-secret")]
    pub(crate) client_secret: String,

    /// Lifetime of issued tokens, e.g. 24h, 90s, 500ms.
    #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_duration)]
    pub(crate) token_ttl: Duration,

    /// Users requests allowed in any 1 s window (counted as --rate-limit-algorithm
    /// says); more get 429 [default: unlimited].
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,

    /// How --rate-limit is counted: sliding-window (at most N in any sliding second,
    /// the strictest reading of Connect's unpublished limiter), fixed-window (N per
    /// aligned second, up to 2N around a boundary) or token-bucket (burst N, then
    /// N/s).
    #[arg(
        long,
        value_name = "ALGORITHM",
        default_value = "sliding-window",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(crate::sandbox::LimitAlgorithm::NAMES),
            |s| s.parse::<crate::sandbox::LimitAlgorithm>(),
        )
    )]
    pub rate_limit_algorithm: crate::sandbox::LimitAlgorithm,

    /// Change --rate-limit at offsets from the first users request (restarted by
    /// POST /_sandbox/reset), e.g. 30s:13,90s:40. A change keeps the requests
    /// already booked: after a drop a client waits out the window.
    #[arg(long, value_name = "SPEC", requires = "rate_limit", value_parser = parse_schedule)]
    pub rate_limit_schedule: Option<crate::sandbox::RateSchedule>,

    /// Send Retry-After: 1 with every 429 (Connect documents none, so by default
    /// the sandbox sends none either).
    #[arg(long)]
    pub retry_after: bool,

    /// Probability (0..1) of a spurious 429 on a users request the limit admitted.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub throttle_rate: f64,

    /// Delay added to every users request, e.g. 100ms (the median with
    /// --latency-jitter or --latency-p99).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub(crate) latency: Duration,

    /// Spread the latency uniformly over latency x [1-F, 1+F] (0..1).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_probability,
          conflicts_with = "latency_p99")]
    pub latency_jitter: f64,

    /// Heavy tail: latency log-normal with median --latency and this 99th
    /// percentile (at least --latency), e.g. 1s.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub latency_p99: Option<Duration>,

    /// A cold backend: users requests arriving within WINDOW of the first one
    /// take DELAY instead of their latency, e.g. 4s:8s.
    #[arg(long, value_name = "WINDOW:DELAY", value_parser = parse_slow_start)]
    pub slow_start: Option<crate::sandbox::SlowStart>,

    /// Start at most N users requests per second, first come first served:
    /// the rest queue (their latency grows), never a 429 [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: Option<u32>,

    /// Probability (0..1) of a random 500 or 503.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub(crate) fail_rate: f64,

    /// Probability (0..1) of dropping the connection without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub(crate) reset_rate: f64,

    /// Probability (0..1) of creating the user, then dropping the connection (the ambiguous case).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub(crate) commit_drop_rate: f64,

    /// Seed for the fault decisions, for reproducible runs.
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Postal-code prefixes the address endpoint flags long_distance_delivery
    /// (comma-separated, case and spaces ignored; empty for none)
    /// [default: 995,996,997,998,999,X,Y: Alaska and Canada's territories].
    #[arg(long, value_name = "PREFIXES", value_delimiter = ',')]
    pub(crate) long_distance_prefixes: Option<Vec<String>>,
}

/// `--rate` and the config file's `rate`, as `parse_rate` reads both: a
/// fixed number per second, or `auto`. `settings` makes it a
/// [`crate::settings::Rate`], the type that reaches the limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateArg {
    Fixed(u32),
    Auto,
}

/// `10` or `auto`.
pub(crate) fn parse_rate(s: &str) -> Result<RateArg, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(RateArg::Auto);
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(RateArg::Fixed(n)),
        _ => Err(format!(
            "expected a number of requests per second (at least 1) or 'auto', got '{s}'"
        )),
    }
}

/// `30s`, `500ms`, `2h 30m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 30s, 500ms, 2h)"))
}

/// `FIELD=HEADER` for `--map`.
fn parse_mapping(s: &str) -> Result<(String, String), String> {
    let (field, header) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FIELD=HEADER, got '{s}'"))?;
    let field = field.trim().to_ascii_lowercase();
    if !crate::input::FIELDS.contains(&field.as_str()) {
        return Err(format!(
            "unknown field '{field}' (fields: {})",
            crate::input::FIELDS.join(", ")
        ));
    }
    if header.trim().is_empty() {
        return Err(format!("empty column name for {field}"));
    }
    Ok((field, header.trim().to_string()))
}

/// One ASCII character; `tab` / `\t` for a tab.
pub(crate) fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(format!(
            "delimiter must be one ASCII character other than a quote or newline, got '{s}'"
        )),
    }
}

/// `--rate-limit-schedule`: `30s:13,90s:40`.
fn parse_schedule(s: &str) -> Result<crate::sandbox::RateSchedule, String> {
    s.parse()
        .map_err(|e: crate::sandbox::SandboxError| e.to_string())
}

/// `--slow-start`: `4s:8s`.
fn parse_slow_start(s: &str) -> Result<crate::sandbox::SlowStart, String> {
    s.parse()
        .map_err(|e: crate::sandbox::SandboxError| e.to_string())
}

/// A probability in 0..=1.
fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number between 0 and 1, got '{s}'"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("expected a number between 0 and 1, got '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("connect-provision").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).expect("parses").command {
            Command::Run(r) => *r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn rate_zero_is_refused_naming_the_flag() {
        let err = parse(&["run", "x.csv", "--rate", "0"]).unwrap_err();
        assert!(err.to_string().contains("--rate"), "{err}");
    }

    #[test]
    fn targets_are_exclusive() {
        assert!(parse(&["run", "x.csv", "--sandbox", "--env", "production"]).is_err());
        assert!(parse(&["check", "--env", "development", "--base-url", "https://x"]).is_err());
        let r = run_args(&["run", "x.csv", "--env", "development"]);
        assert_eq!(r.target.env, Some(EnvName::Development));
    }

    #[test]
    fn address_flags_parse() {
        assert!(
            run_args(&["run", "x.csv", "--require-address"])
                .read
                .require_address
        );
        assert!(!run_args(&["run", "x.csv"]).read.require_address);
        let r = run_args(&["run", "x.csv", "--map", "postal_code=PLZ"]);
        assert_eq!(r.read.map, [("postal_code".to_string(), "PLZ".to_string())]);
        let sandbox = |args: &[&str]| match parse(args).expect("parses").command {
            Command::Sandbox(s) => s.long_distance_prefixes,
            other => panic!("not sandbox: {other:?}"),
        };
        assert_eq!(
            sandbox(&["sandbox", "--long-distance-prefixes", "995,K0"]),
            Some(vec!["995".to_string(), "K0".to_string()])
        );
        assert_eq!(sandbox(&["sandbox"]), None);
    }

    #[test]
    fn no_secret_flag_exists() {
        let err = parse(&["run", "x.csv", "--client-secret", "s3cret"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn map_parses_and_rejects_unknown_fields() {
        let r = run_args(&[
            "run",
            "x.csv",
            "--map",
            "User_ID=Customer ID",
            "--map",
            "locale=Lang",
        ]);
        assert_eq!(
            r.read.map,
            vec![
                ("user_id".to_string(), "Customer ID".to_string()),
                ("locale".to_string(), "Lang".to_string())
            ]
        );
        let err = parse(&["run", "x.csv", "--map", "email=E-mail"]).unwrap_err();
        assert!(err.to_string().contains("unknown field 'email'"), "{err}");
        assert!(parse(&["run", "x.csv", "--map", "user_id"]).is_err());
    }

    #[test]
    fn delimiter_and_durations() {
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("\"").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("soon").is_err());
        let err = parse(&["run", "x.csv", "--timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--timeout"), "{err}");
    }

    #[test]
    fn rate_is_a_number_or_auto() {
        assert_eq!(parse_rate("25"), Ok(RateArg::Fixed(25)));
        assert_eq!(parse_rate("AUTO"), Ok(RateArg::Auto));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        let r = run_args(&["run", "x.csv", "--rate", "auto", "--rate-max", "200"]);
        assert_eq!((r.rate, r.rate_max), (Some(RateArg::Auto), Some(200)));
    }

    #[test]
    fn probabilities_are_bounded() {
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("x").is_err());
    }
}
