//! From the command line, the environment and the config file to typed,
//! checked settings ("HiArgs"). Precedence: flag > environment > config file >
//! default. Nothing past this module looks at clap types, and nothing here
//! takes from `exec`: the breaker's settings live here, the breaker there.
//!
//! The config file's model and the checks of its values are in
//! `config_file`; the precedence of one key is `pick` or `pick_checked`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

pub(crate) use crate::api::client::Credentials;
use crate::api::client::{BaseUrl, is_loopback_host};
use crate::cli::{
    CheckArgs, CredentialArgs, EnvName, LogFormat, RateArg, ReadArgs, RunArgs, TargetArgs,
};
use crate::input::{ColumnSpec, Field, InputSource, ReadOptions, encoding_for_label};
use crate::validate::ValidateOptions;

mod config_file;

pub(crate) use config_file::{ConfigFile, ConfigFileError};

/// Development API host.
const DEVELOPMENT_URL: &str = "https://connect.dev.instacart.tools";
/// Production API host.
const PRODUCTION_URL: &str = "https://connect.instacart.com";
/// Environment variable holding the client secret.
const SECRET_ENV: &str = "CONNECT_CLIENT_SECRET";

/// `--rate-start` and `--rate-max` when neither flag nor file gives them.
const DEFAULT_RATE_START: u32 = 10;
const DEFAULT_RATE_MAX: u32 = 100;
/// `--timeout` of `run` and `check`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the options cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file, or one of its values.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A live run or `check` without a target.
    #[error(
        "no target: give exactly one of --sandbox, --env development|production or --base-url URL \
         (there is no default, so nothing goes to production by accident)"
    )]
    NoTarget,
    /// More than one target; the text names them.
    #[error("more than one target: {0} (give exactly one)")]
    TwoTargets(String),
    /// An unusable `--base-url`.
    #[error("--base-url '{url}': {reason}")]
    BaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL target without a client id.
    #[error("no client id: set CONNECT_CLIENT_ID, --client-id or client_id in the config file")]
    NoClientId,
    /// A URL target without a client secret.
    #[error(
        "no client secret: set CONNECT_CLIENT_SECRET or --client-secret-file PATH \
         (a secret is never taken on the command line)"
    )]
    NoSecret,
    /// The client secret file could not be read.
    #[error("cannot read client secret file {path}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The client secret file is empty.
    #[error("client secret file {path} is empty")]
    EmptySecret {
        /// The file.
        path: PathBuf,
    },
    /// An unusable input option (e.g. an unknown encoding).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// An unusable `--phone-region` or `--default-locale`.
    #[error(transparent)]
    Validate(#[from] crate::validate::OptionError),
    /// An option this version does not implement.
    #[error("{option} is not available yet in this version")]
    NotAvailable {
        /// The option.
        option: &'static str,
    },
    /// `--resume` without `--out`.
    #[error("--resume needs --out DIR: the report directory of the run to continue")]
    ResumeWithoutOut,
    /// `--resume` with `--dry-run`.
    #[error("--resume continues a live run; a --dry-run has nothing to resume")]
    ResumeDryRun,
    /// `--state` with `--dry-run`.
    #[error("--state records what live runs provisioned; leave it out of a --dry-run")]
    StateDryRun,
}

/// Flag over config file for one key: the flag's value if given, else the
/// file's. `file` reads and checks the file's value, and runs only when
/// there is no flag: a bad value there is passed over when a flag wins.
fn pick<'a, T>(
    flag: Option<T>,
    cfg: Option<&'a ConfigFile>,
    file: impl FnOnce(&'a ConfigFile) -> Result<Option<T>, ConfigFileError>,
) -> Result<Option<T>, ConfigError> {
    match flag {
        Some(v) => Ok(Some(v)),
        None => Ok(cfg.map(file).transpose()?.flatten()),
    }
}

/// [`pick`] for the keys whose file value is checked even when a flag wins:
/// a bad value there is refused either way (the rate and the counts).
fn pick_checked<'a, T>(
    flag: Option<T>,
    cfg: Option<&'a ConfigFile>,
    file: impl FnOnce(&'a ConfigFile) -> Result<Option<T>, ConfigFileError>,
) -> Result<Option<T>, ConfigError> {
    let from_file = cfg.map(file).transpose()?.flatten();
    Ok(flag.or(from_file))
}

/// The rate of a live run, from the `--rate` flag (or the file's `rate`)
/// to the limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Rate {
    /// `--rate N`.
    Fixed(u32),
    /// `--rate auto`: find the partner's limit between 1 and `max`.
    Auto { start: u32, max: u32 },
}

impl Rate {
    /// The rate the run starts at.
    pub(crate) fn initial(&self) -> u32 {
        match *self {
            Rate::Fixed(n) => n,
            Rate::Auto { start, max } => start.min(max),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Rate::Fixed(n) => write!(f, "{n}/s"),
            Rate::Auto { start, max } => write!(f, "auto (from {start}/s, at most {max}/s)"),
        }
    }
}

/// The circuit breaker's settings (`exec::breaker` runs it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Breaker {
    /// Trip when more than this fraction of the window is rejected or invalid.
    pub(crate) max_error_rate: f64,
    /// Finished rows looked at.
    pub(crate) window: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            max_error_rate: 0.5,
            window: 200,
        }
    }
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The embedded sandbox, started in-process.
    Sandbox,
    /// A remote (or loopback) base URL, parsed once here.
    Url(BaseUrl),
}

impl Target {
    /// How the target is named in messages and summary.json.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Sandbox => "embedded sandbox".to_string(),
            Target::Url(u) => u.to_string(),
        }
    }
}

/// Execution options of a live run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExecSettings {
    pub(crate) rate: Rate,
    pub(crate) breaker: Breaker,
    /// `--burst`: the partner allows bursts of this many (GCRA, no window
    /// guard). `None`: at most R requests in any sliding second (exec::pace).
    pub(crate) burst: Option<u32>,
    /// `None`: sized from the rate and the observed latency.
    pub(crate) concurrency: Option<u32>,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Duration,
    pub(crate) time_budget: Option<Duration>,
}

impl Default for ExecSettings {
    fn default() -> Self {
        ExecSettings {
            rate: Rate::Fixed(10),
            breaker: Breaker::default(),
            burst: None,
            concurrency: None,
            max_attempts: 6,
            timeout: DEFAULT_TIMEOUT,
            time_budget: None,
        }
    }
}

/// Output options shared by every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutputSettings {
    pub(crate) log_format: LogFormat,
    pub(crate) no_progress: bool,
}

/// The input and how to read and validate it: what `run` and `state import`
/// share, so that both read a file the same way.
#[derive(Clone, Debug)]
pub(crate) struct InputSettings {
    pub(crate) input: InputSource,
    /// [`resolve_input`] leaves `limit` at `None`: only `run` has `--limit`.
    pub(crate) read: ReadOptions,
    pub(crate) validate: ValidateOptions,
}

/// A dry run or a live one, with what each needs.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// `--dry-run`: no network; a target given is only named in summary.json.
    Dry { target: Option<Target> },
    /// Send to a target.
    Live(LiveSettings),
}

/// What only a live run has.
#[derive(Clone, Debug)]
pub(crate) struct LiveSettings {
    /// Where requests go.
    pub(crate) target: Target,
    /// `None` for the embedded sandbox (it has its own).
    pub(crate) credentials: Option<Credentials>,
    pub(crate) exec: ExecSettings,
    /// `--resume`: continue the run in `--out`.
    pub(crate) resume: bool,
    /// `--state`: the incremental-run state file.
    pub(crate) state: Option<PathBuf>,
    /// Flush + fsync results.csv in batches (off only for benchmarks).
    pub(crate) journal: bool,
}

impl Mode {
    /// Where requests go (a dry run's is only named).
    pub(crate) fn target(&self) -> Option<&Target> {
        match self {
            Mode::Dry { target } => target.as_ref(),
            Mode::Live(live) => Some(&live.target),
        }
    }

    /// The settings of a live run.
    #[cfg(test)]
    fn live(&self) -> Option<&LiveSettings> {
        match self {
            Mode::Live(live) => Some(live),
            Mode::Dry { .. } => None,
        }
    }

    /// The credentials of a live run against a URL.
    #[cfg(test)]
    fn credentials(&self) -> Option<&Credentials> {
        self.live().and_then(|l| l.credentials.as_ref())
    }
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub(crate) input: InputSource,
    pub(crate) read: ReadOptions,
    pub(crate) validate: ValidateOptions,
    pub(crate) mode: Mode,
    pub(crate) out: PathBuf,
    /// `--metrics-file`: the Prometheus text file.
    pub(crate) metrics_file: Option<PathBuf>,
    /// `--shard K/N`: only this shard's rows.
    pub(crate) shard: Option<crate::shard::Shard>,
}

/// Everything `check` needs.
#[derive(Clone, Debug)]
pub(crate) struct CheckSettings {
    pub(crate) target: Target,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) timeout: Duration,
}

/// Reads environment variables; a trait so tests don't touch the process env.
pub trait Env {
    /// The variable's value, `None` when unset or not Unicode.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Log format and progress: flag > config file > default.
pub(crate) fn output_settings(
    log_format: Option<LogFormat>,
    no_progress: bool,
    cfg: Option<&ConfigFile>,
) -> OutputSettings {
    OutputSettings {
        log_format: log_format
            .or(cfg.and_then(|c| c.log_format))
            .unwrap_or(LogFormat::Text),
        no_progress: no_progress || cfg.and_then(|c| c.no_progress).unwrap_or(false),
    }
}

fn resolve_target(
    args: &TargetArgs,
    cfg: Option<&ConfigFile>,
) -> Result<Option<Target>, ConfigError> {
    // Flags (clap already folded CONNECT_BASE_URL into base_url) win as a group
    // over the config file: a flag target replaces the file's target.
    let flag_target = target_from(args.sandbox, args.env, args.base_url.as_deref())?;
    if flag_target.is_some() {
        return Ok(flag_target);
    }
    match cfg {
        Some(c) => target_from(c.sandbox.unwrap_or(false), c.env, c.base_url.as_deref()),
        None => Ok(None),
    }
}

fn target_from(
    sandbox: bool,
    env: Option<EnvName>,
    base_url: Option<&str>,
) -> Result<Option<Target>, ConfigError> {
    let mut given = vec![];
    if sandbox {
        given.push("sandbox");
    }
    if env.is_some() {
        given.push("env");
    }
    if base_url.is_some() {
        given.push("base_url");
    }
    if given.len() > 1 {
        return Err(ConfigError::TwoTargets(given.join(", ")));
    }
    Ok(if sandbox {
        Some(Target::Sandbox)
    } else if let Some(env) = env {
        Some(Target::Url(check_base_url(match env {
            EnvName::Development => DEVELOPMENT_URL,
            EnvName::Production => PRODUCTION_URL,
        })?))
    } else if let Some(url) = base_url {
        Some(Target::Url(check_base_url(url)?))
    } else {
        None
    })
}

/// HTTPS, or plain HTTP to a loopback host only. Returns the URL without a
/// trailing slash.
fn check_base_url(url: &str) -> Result<BaseUrl, ConfigError> {
    let bad = |reason: &str| ConfigError::BaseUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        "http" => {
            return Err(bad(
                "plain http is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use https",
            ));
        }
        _ => return Err(bad("the scheme must be https")),
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    BaseUrl::new(parsed).map_err(bad)
}

/// Client id and scope: flag > config file. The secret: `--client-secret-file`
/// > `CONNECT_CLIENT_SECRET` > the file's `client_secret_file`.
fn resolve_credentials(
    args: &CredentialArgs,
    env: &dyn Env,
    cfg: Option<&ConfigFile>,
) -> Result<Credentials, ConfigError> {
    let client_id = pick(args.client_id.clone(), cfg, |c| Ok(c.client_id.clone()))?
        .filter(|s| !s.trim().is_empty())
        .ok_or(ConfigError::NoClientId)?;
    let secret = if let Some(p) = &args.client_secret_file {
        read_secret_file(p)?
    } else if let Some(s) = env.var(SECRET_ENV).filter(|s| !s.is_empty()) {
        SecretString::from(s)
    } else if let Some(p) = cfg.and_then(|c| c.path_of(&c.client_secret_file)) {
        read_secret_file(&p)?
    } else {
        return Err(ConfigError::NoSecret);
    };
    let scope = pick(args.scope.clone(), cfg, |c| Ok(c.scope.clone()))?
        .unwrap_or_else(|| "connect:fulfillment".to_string());
    Ok(Credentials {
        client_id: client_id.trim().to_string(),
        client_secret: secret,
        scope: Some(scope),
    })
}

fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
        path: path.to_path_buf(),
        source: e,
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::EmptySecret {
            path: path.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let own_gid = rustix::process::getegid().as_raw();
        if let Ok(m) = std::fs::metadata(path)
            && let Some(who) = secret_exposure(m.mode(), m.gid(), own_gid)
        {
            tracing::warn!(path = %path.display(), "client secret file is readable by {who}; chmod 600 it");
        }
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// Who beyond its owner can read a secret file of this `mode` and group:
/// anyone when others may; its group's members when the group may and the
/// group is not this process's own. (A Kubernetes Secret mounted with
/// `fsGroup` is group-readable by the pod's own group: no one else.)
#[cfg(unix)]
fn secret_exposure(mode: u32, file_gid: u32, own_gid: u32) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        Some("other users")
    } else if mode & 0o070 != 0 && file_gid != own_gid {
        Some("its group")
    } else {
        None
    }
}

/// The default report directory: `reports/<UTC timestamp>/`.
fn default_out_dir(now: jiff::Timestamp) -> PathBuf {
    PathBuf::from("reports").join(now.strftime("%Y%m%dT%H%M%SZ").to_string())
}

/// Resolve `run`'s settings.
pub fn resolve_run(
    args: &RunArgs,
    env: &dyn Env,
    cfg: Option<&ConfigFile>,
    now: jiff::Timestamp,
) -> Result<RunSettings, ConfigError> {
    let target = resolve_target(&args.target, cfg)?;
    // A dry run only names its target; a live run's target and credentials.
    let (dry_target, live_target) = match (target, args.dry_run) {
        (target, true) => (target, None),
        (None, false) => return Err(ConfigError::NoTarget),
        (Some(target), false) => {
            let credentials = match target {
                Target::Url(_) => Some(resolve_credentials(&args.credentials, env, cfg)?),
                Target::Sandbox => None,
            };
            (None, Some((target, credentials)))
        }
    };

    let InputSettings {
        input,
        read,
        validate,
    } = resolve_input(&args.input, &args.read, cfg)?;
    let exec = resolve_exec(args, cfg)?;
    if args.resume && args.dry_run {
        return Err(ConfigError::ResumeDryRun);
    }
    if args.resume && args.out.is_none() && cfg.and_then(|c| c.out.as_ref()).is_none() {
        return Err(ConfigError::ResumeWithoutOut);
    }
    let state = pick(args.state.clone(), cfg, |c| Ok(c.path_of(&c.state)))?;
    if state.is_some() && args.dry_run {
        return Err(ConfigError::StateDryRun);
    }
    let out = pick(args.out.clone(), cfg, |c| Ok(c.path_of(&c.out)))?
        .unwrap_or_else(|| default_out_dir(now));
    let metrics_file = pick(args.metrics_file.clone(), cfg, |c| {
        Ok(c.path_of(&c.metrics_file))
    })?;
    let shard = pick(args.shard, cfg, |c| c.shard())?;
    let mode = match live_target {
        None => Mode::Dry { target: dry_target },
        Some((target, credentials)) => Mode::Live(LiveSettings {
            target,
            credentials,
            exec,
            resume: args.resume,
            state,
            journal: !args.no_journal,
        }),
    };
    Ok(RunSettings {
        input,
        read: ReadOptions {
            limit: args.limit,
            ..read
        },
        validate,
        mode,
        out,
        metrics_file,
        shard,
    })
}

/// How `input` is read and validated: `--map` over the `[columns]` table,
/// then encoding, delimiter, phone region and default locale, each flag over
/// the config file. `run` and `state import` both read their input this way.
pub(crate) fn resolve_input(
    input: &Path,
    args: &ReadArgs,
    cfg: Option<&ConfigFile>,
) -> Result<InputSettings, ConfigError> {
    let mut columns = ColumnSpec::default();
    if let Some(c) = cfg {
        c.map_columns(&mut columns)?;
    }
    for (field, header) in &args.map {
        if let Some(f) = Field::from_name(field) {
            columns.map(f, header.clone());
        }
    }
    let encoding = match pick(args.encoding.as_deref(), cfg, |c| Ok(c.encoding.as_deref()))? {
        Some(label) => encoding_for_label(label)?,
        None => None,
    };
    let delimiter = pick(args.delimiter, cfg, ConfigFile::delimiter)?.unwrap_or(b',');
    let phone_region = pick(args.phone_region.as_deref(), cfg, |c| {
        Ok(c.phone_region.as_deref())
    })?;
    let default_locale = pick(args.default_locale.as_deref(), cfg, |c| {
        Ok(c.default_locale.as_deref())
    })?;
    Ok(InputSettings {
        input: InputSource::from_arg(input),
        read: ReadOptions {
            encoding,
            delimiter,
            columns,
            limit: None,
        },
        validate: ValidateOptions::new(phone_region.unwrap_or("US"), default_locale)?
            .require_address(
                args.require_address || cfg.and_then(|c| c.require_address).unwrap_or(false),
            ),
    })
}

/// How the run executes: rate, breaker, burst, concurrency, attempts,
/// timeout and time budget, each flag over the config file over the default.
fn resolve_exec(args: &RunArgs, cfg: Option<&ConfigFile>) -> Result<ExecSettings, ConfigError> {
    let d = ExecSettings::default();
    let rate = resolve_rate(args, cfg)?;
    let breaker = Breaker {
        max_error_rate: pick(args.max_error_rate, cfg, ConfigFile::max_error_rate)?
            .unwrap_or(d.breaker.max_error_rate),
        window: pick_checked(args.error_window, cfg, |c| {
            c.nonzero("error_window", c.error_window)
        })?
        .unwrap_or(d.breaker.window)
        .max(10),
    };
    Ok(ExecSettings {
        rate,
        breaker,
        burst: pick_checked(args.burst, cfg, |c| c.nonzero("burst", c.burst))?.or(d.burst),
        concurrency: pick_checked(args.concurrency, cfg, |c| {
            c.nonzero("concurrency", c.concurrency)
        })?,
        max_attempts: pick_checked(args.max_attempts, cfg, |c| {
            c.nonzero("max_attempts", c.max_attempts)
        })?
        .unwrap_or(d.max_attempts),
        timeout: pick(args.timeout, cfg, |c| c.duration("timeout", &c.timeout))?
            .unwrap_or(d.timeout),
        time_budget: pick(args.time_budget, cfg, |c| {
            c.duration("time_budget", &c.time_budget)
        })?,
    })
}

/// `--rate` (or the file's `rate`), with `--rate-start` and `--rate-max`
/// for `auto`.
fn resolve_rate(args: &RunArgs, cfg: Option<&ConfigFile>) -> Result<Rate, ConfigError> {
    let rate = pick_checked(args.rate, cfg, ConfigFile::rate)?;
    let max = pick_checked(args.rate_max, cfg, |c| c.nonzero("rate_max", c.rate_max))?
        .unwrap_or(DEFAULT_RATE_MAX);
    let start = pick_checked(args.rate_start, cfg, |c| {
        c.nonzero("rate_start", c.rate_start)
    })?
    .unwrap_or(DEFAULT_RATE_START);
    Ok(match rate {
        None => ExecSettings::default().rate,
        Some(RateArg::Fixed(n)) => Rate::Fixed(n),
        Some(RateArg::Auto) => Rate::Auto { start, max },
    })
}

/// Resolve `check`'s settings.
pub(crate) fn resolve_check(
    args: &CheckArgs,
    env: &dyn Env,
    cfg: Option<&ConfigFile>,
) -> Result<CheckSettings, ConfigError> {
    let target = resolve_target(&args.target, cfg)?.ok_or(ConfigError::NoTarget)?;
    let credentials = match target {
        Target::Url(_) => Some(resolve_credentials(&args.credentials, env, cfg)?),
        Target::Sandbox => None,
    };
    let timeout =
        pick(args.timeout, cfg, |c| c.duration("timeout", &c.timeout))?.unwrap_or(DEFAULT_TIMEOUT);
    Ok(CheckSettings {
        target,
        credentials,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(
            ["connect-provision", "run", "in.csv"]
                .iter()
                .chain(args.iter())
                .copied(),
        )
        .unwrap();
        match cli.command {
            Command::Run(r) => *r,
            _ => unreachable!(),
        }
    }

    fn cfg(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        ConfigFile::load(&p).unwrap()
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn no_env() -> FakeEnv {
        FakeEnv(HashMap::new())
    }

    /// The execution settings of a live run.
    fn exec(s: &RunSettings) -> &ExecSettings {
        &s.mode.live().expect("a live run").exec
    }

    #[test]
    fn defaults() {
        let s = resolve_run(&run_args(&["--dry-run"]), &no_env(), None, now()).unwrap();
        assert!(s.mode.live().is_none());
        assert_eq!(s.mode.target().cloned(), None);
        assert_eq!(s.read.delimiter, b',');
        assert_eq!(s.out, PathBuf::from("reports/20270115T080000Z"));
        let s = resolve_run(&run_args(&["--sandbox"]), &no_env(), None, now()).unwrap();
        assert_eq!(exec(&s), &ExecSettings::default());
        let live = s.mode.live().expect("a live run");
        assert!(!live.resume && live.journal && live.state.is_none());
    }

    #[test]
    fn live_run_needs_a_target() {
        let err = resolve_run(&run_args(&[]), &no_env(), None, now()).unwrap_err();
        assert!(matches!(err, ConfigError::NoTarget));
    }

    #[test]
    fn flag_beats_config_beats_default() {
        let c = cfg(
            "rate = 50\nburst = 5\ntimeout = \"5s\"\nsandbox = true\n[columns]\nuser_id = \"Customer ID\"\n",
        );
        let s = resolve_run(&run_args(&["--rate", "7"]), &no_env(), Some(&c), now()).unwrap();
        assert_eq!(exec(&s).rate, Rate::Fixed(7));
        assert_eq!(exec(&s).burst, Some(5));
        assert_eq!(exec(&s).timeout, Duration::from_secs(5));
        assert_eq!(exec(&s).max_attempts, 6);
        assert_eq!(s.mode.target().cloned(), Some(Target::Sandbox));
        assert_eq!(s.read.columns.header_for(Field::UserId), "Customer ID");
        let s = resolve_run(
            &run_args(&["--map", "user_id=Cust"]),
            &no_env(),
            Some(&c),
            now(),
        )
        .unwrap();
        assert_eq!(s.read.columns.header_for(Field::UserId), "Cust");
    }

    #[test]
    fn rate_auto_from_flag_or_file() {
        let c = cfg("rate = \"auto\"\nrate_max = 60\n");
        let s = resolve_run(&run_args(&["--sandbox"]), &no_env(), Some(&c), now()).unwrap();
        assert_eq!(exec(&s).rate, Rate::Auto { start: 10, max: 60 });
        let s = resolve_run(
            &run_args(&["--sandbox", "--rate", "5"]),
            &no_env(),
            Some(&c),
            now(),
        )
        .unwrap();
        assert_eq!(exec(&s).rate, Rate::Fixed(5));
        let bad = cfg("rate = \"quick\"\n");
        let err = resolve_run(&run_args(&["--dry-run"]), &no_env(), Some(&bad), now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate:"), "{err}");
        assert_eq!(exec(&s).breaker, Breaker::default());
    }

    #[test]
    fn flag_target_replaces_config_target() {
        let c = cfg("env = \"production\"\nclient_id = \"x\"\n");
        let s = resolve_run(&run_args(&["--sandbox"]), &no_env(), Some(&c), now()).unwrap();
        assert_eq!(s.mode.target().cloned(), Some(Target::Sandbox));
        assert!(matches!(
            target_from(true, Some(EnvName::Production), None),
            Err(ConfigError::TwoTargets(_))
        ));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "rates = 5\n").unwrap();
        let err = ConfigFile::load(&p).unwrap_err().to_string();
        assert!(err.contains("unknown field `rates`"), "{err}");
    }

    #[test]
    fn base_url_rules() {
        assert_eq!(
            check_base_url("https://connect.example.com/")
                .unwrap()
                .to_string(),
            "https://connect.example.com"
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:8787").unwrap().to_string(),
            "http://127.0.0.1:8787"
        );
        assert!(check_base_url("http://localhost:1").is_ok());
        assert!(check_base_url("http://[::1]:1").is_ok());
        let err = check_base_url("http://connect.example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only for loopback"), "{err}");
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("not a url").is_err());
    }

    #[test]
    fn credentials_come_from_env_or_file_never_argv() {
        let env = FakeEnv(HashMap::from([(SECRET_ENV, "s3cret")]));
        let s = resolve_run(
            &run_args(&["--env", "development", "--client-id", "abc"]),
            &env,
            None,
            now(),
        )
        .unwrap();
        let c = s.mode.credentials().cloned().unwrap();
        assert_eq!(c.client_id, "abc");
        assert_eq!(c.client_secret.expose_secret(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        let s = resolve_run(
            &run_args(&[
                "--env",
                "development",
                "--client-id",
                "abc",
                "--client-secret-file",
                secret.to_str().unwrap(),
            ]),
            &env,
            None,
            now(),
        )
        .unwrap();
        assert_eq!(
            s.mode
                .credentials()
                .cloned()
                .unwrap()
                .client_secret
                .expose_secret(),
            "from-file"
        );

        let err = resolve_run(
            &run_args(&["--env", "development", "--client-id", "abc"]),
            &no_env(),
            None,
            now(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NoSecret));
    }

    #[test]
    fn settings_debug_has_no_secret() {
        let env = FakeEnv(HashMap::from([(SECRET_ENV, "hunter2-secret")]));
        let s = resolve_run(
            &run_args(&["--env", "production", "--client-id", "abc"]),
            &env,
            None,
            now(),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2-secret"));
    }

    #[test]
    fn bad_option_values_name_the_option() {
        let err = resolve_run(
            &run_args(&["--dry-run", "--encoding", "nope"]),
            &no_env(),
            None,
            now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown encoding 'nope'"), "{err}");
        let err = resolve_run(
            &run_args(&["--dry-run", "--phone-region", "ZZZ"]),
            &no_env(),
            None,
            now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--phone-region"), "{err}");
        let c = cfg("rate = 0\n");
        let err = resolve_run(&run_args(&["--dry-run"]), &no_env(), Some(&c), now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate: must be at least 1"), "{err}");
    }

    /// Which config values are checked even when a flag overrides them
    /// (today's behaviour, kept as is): the counts and the rate are, the
    /// durations, the error rate and the input options are not.
    #[test]
    fn a_flag_over_a_bad_config_value() {
        let refused = [
            ("burst = 0", "--burst=5"),
            ("concurrency = 0", "--concurrency=4"),
            ("max_attempts = 0", "--max-attempts=3"),
            ("error_window = 0", "--error-window=20"),
            ("rate = 0", "--rate=5"),
            ("rate = \"quick\"", "--rate=5"),
            ("rate_max = 0", "--rate-max=5"),
            ("rate_start = 0", "--rate-start=5"),
        ];
        for (line, flag) in refused {
            let c = cfg(&format!("{line}\n"));
            let err = resolve_run(&run_args(&["--dry-run", flag]), &no_env(), Some(&c), now())
                .unwrap_err()
                .to_string();
            let key = line.split(' ').next().unwrap();
            assert!(err.contains(&format!("{key}: ")), "{line}: {err}");
        }
        let passed_over = [
            ("timeout = \"soon\"", "--timeout=5s"),
            ("time_budget = \"soon\"", "--time-budget=1h"),
            ("max_error_rate = 2.0", "--max-error-rate=0.5"),
            ("delimiter = \";;\"", "--delimiter=;"),
            ("encoding = \"nope\"", "--encoding=utf-8"),
            ("phone_region = \"ZZZ\"", "--phone-region=US"),
        ];
        for (line, flag) in passed_over {
            let c = cfg(&format!("{line}\n"));
            resolve_run(&run_args(&["--dry-run", flag]), &no_env(), Some(&c), now())
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        let c = cfg("[columns]\nemail = \"E\"\n");
        let err = resolve_run(
            &run_args(&["--dry-run", "--map", "user_id=U"]),
            &no_env(),
            Some(&c),
            now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("columns: unknown field 'email'"), "{err}");
        let c = cfg("error_window = 5\n");
        let s = resolve_run(&run_args(&["--sandbox"]), &no_env(), Some(&c), now()).unwrap();
        assert_eq!(exec(&s).breaker.window, 10);
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_readable_beyond_this_process_is_flagged() {
        assert_eq!(secret_exposure(0o100600, 5, 7), None);
        assert_eq!(secret_exposure(0o100644, 7, 7), Some("other users"));
        assert_eq!(secret_exposure(0o100604, 7, 7), Some("other users"));
        assert_eq!(secret_exposure(0o100640, 5, 7), Some("its group"));
        // Kubernetes: defaultMode 0400 plus fsGroup = the pod's group.
        assert_eq!(secret_exposure(0o100440, 7, 7), None);
    }

    /// `--metrics-file` over `metrics_file`, which is relative to the config
    /// file; neither means no metrics file.
    #[test]
    fn the_metrics_file_comes_from_the_flag_or_the_config_file() {
        let c = cfg("metrics_file = \"m/acme.prom\"\n");
        let from_file = resolve_run(&run_args(&["--dry-run"]), &no_env(), Some(&c), now()).unwrap();
        let path = from_file.metrics_file.unwrap();
        assert!(
            path.ends_with("m/acme.prom") && path.is_absolute(),
            "{path:?}"
        );
        let args = run_args(&["--dry-run", "--metrics-file", "x.prom"]);
        let flag = resolve_run(&args, &no_env(), Some(&c), now()).unwrap();
        assert_eq!(flag.metrics_file, Some(PathBuf::from("x.prom")));
        let none = resolve_run(&run_args(&["--dry-run"]), &no_env(), None, now()).unwrap();
        assert_eq!(none.metrics_file, None);
    }

    /// `state import` reads its input as `run` does, without `--limit`, and
    /// is not held up by what only a run uses (its state file, its rate).
    #[test]
    fn state_import_reads_its_input_as_run_does() {
        let c = cfg(
            "delimiter = \";\"\nencoding = \"latin1\"\nphone_region = \"GB\"\n\
             [columns]\nuser_id = \"Customer ID\"\n",
        );
        let args = run_args(&["--sandbox", "--limit", "5", "--map", "first_name=Given"]);
        let run = resolve_run(&args, &no_env(), Some(&c), now()).unwrap();
        let import = resolve_input(&args.input, &args.read, Some(&c)).unwrap();
        assert_eq!(run.read.limit, Some(5));
        assert_eq!(import.read.limit, None);
        assert_eq!(import.input, run.input);
        assert_eq!(import.read.encoding, run.read.encoding);
        assert_eq!(import.read.delimiter, b';');
        assert_eq!(import.read.columns, run.read.columns);
        assert_eq!(import.read.columns.header_for(Field::FirstName), "Given");
        assert_eq!(
            format!("{:?}", import.validate),
            format!("{:?}", run.validate)
        );
        let c = cfg("state = \"nightly.db\"\nburst = 0\n");
        assert!(resolve_input(&args.input, &args.read, Some(&c)).is_ok());
    }
}
