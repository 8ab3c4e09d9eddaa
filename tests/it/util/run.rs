//! The one driver of the binary under test: [`Run`] builds a command line
//! (any command, a live run against a sandbox, or a dry run), then runs it
//! to completion ([`Run::output`], [`Run::output_async`]) or starts it in the
//! background ([`Run::spawn`]). Every child gets a clean tool environment,
//! and every failure shows the command, its status, stdout and stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use connect_provision::sandbox::Sandbox;

use super::sandbox::{SANDBOX_CLIENT, SANDBOX_SECRET};

/// Environment variables the binary reads; removed from every child so the
/// developer's shell cannot change a test's outcome.
const TOOL_ENV: [&str; 5] = [
    "CONNECT_BASE_URL",
    "CONNECT_CLIENT_ID",
    "CONNECT_CLIENT_SECRET",
    "CONNECT_PROVISION_CONFIG",
    "RUST_LOG",
];

/// What kind of command line [`Run`] assembles.
enum Kind {
    /// `connect-provision ARGS...`, as given.
    Cli,
    /// `connect-provision run INPUT ARGS... --base-url BASE --no-progress`.
    Live(String),
    /// `connect-provision run INPUT --dry-run ARGS...`.
    Dry,
}

/// A command line for the binary under test.
///
/// ```ignore
/// Run::live(&sb).input(&fx.input).out(&out).rate(300).resume().output_async().await
/// Run::dry(&input).out(&out).args(["--delimiter", ";"]).output()
/// Run::cli(["check", "--help"]).output()
/// ```
pub struct Run {
    kind: Kind,
    /// Arguments before the subcommand (global options) of a live or dry run.
    global: Vec<OsString>,
    input: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    shell: Option<String>,
}

impl Run {
    /// `connect-provision ARGS...`.
    pub fn cli<I, S>(args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Run::new(Kind::Cli).args(args)
    }

    /// A live run against `sb` with the sandbox's default credentials:
    /// `run INPUT ARGS... --base-url URL --no-progress`.
    pub fn live(sb: &Sandbox) -> Run {
        Run::live_at(sb.url())
    }

    /// [`Run::live`] against any base URL (a scripted server, a closed port).
    pub fn live_at(base: impl Into<String>) -> Run {
        Run::new(Kind::Live(base.into()))
            .env("CONNECT_CLIENT_ID", SANDBOX_CLIENT)
            .env("CONNECT_CLIENT_SECRET", SANDBOX_SECRET)
    }

    /// `run INPUT --dry-run ARGS...`.
    pub fn dry(input: impl AsRef<OsStr>) -> Run {
        Run::new(Kind::Dry).input(input)
    }

    fn new(kind: Kind) -> Run {
        Run {
            kind,
            global: vec![],
            input: None,
            args: vec![],
            env: vec![],
            cwd: None,
            stdin: None,
            shell: None,
        }
    }

    /// The input file (`-` for stdin).
    pub fn input(mut self, input: impl AsRef<OsStr>) -> Run {
        self.input = Some(input.as_ref().to_owned());
        self
    }

    /// `--out DIR`.
    pub fn out(self, dir: impl AsRef<OsStr>) -> Run {
        self.arg("--out").arg(dir)
    }

    /// `--rate N` (or `auto`).
    pub fn rate(self, rate: impl fmt::Display) -> Run {
        self.arg("--rate").arg(rate.to_string())
    }

    /// `--resume`.
    pub fn resume(self) -> Run {
        self.arg("--resume")
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Run {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Global options, placed before the `run` subcommand.
    pub fn global<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.global.extend(args.into_iter().map(Into::into));
        self
    }

    /// `CONNECT_CLIENT_SECRET` for the child.
    pub fn secret(self, secret: &str) -> Run {
        self.env("CONNECT_CLIENT_SECRET", secret)
    }

    /// Set an environment variable for the child.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Run {
        let value = value.as_ref().to_string();
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => self.env.push((key.to_string(), value)),
        }
        self
    }

    /// Leave `key` out of the child's environment (a live run's default
    /// secret, say, when the test gives it as a file).
    pub fn env_remove(mut self, key: &str) -> Run {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Run in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Run {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Feed `bytes` on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Run {
        self.stdin = Some(bytes.into());
        self
    }

    /// Start the binary from `sh -c SCRIPT BINARY ARGS...`, for limits only
    /// a shell sets for its child (the script ends in `exec "$0" "$@"`).
    pub fn via_shell(mut self, script: &str) -> Run {
        self.shell = Some(script.to_string());
        self
    }

    /// The full argument list of the binary.
    fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = self.global.clone();
        match &self.kind {
            Kind::Cli => v.extend(self.args.iter().cloned()),
            Kind::Live(base) => {
                v.push("run".into());
                v.extend(self.input.iter().cloned());
                v.extend(self.args.iter().cloned());
                v.extend(["--base-url".into(), base.into(), "--no-progress".into()]);
            }
            Kind::Dry => {
                v.push("run".into());
                v.extend(self.input.iter().cloned());
                v.push("--dry-run".into());
                v.extend(self.args.iter().cloned());
            }
        }
        v
    }

    fn command(&self) -> Command {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_connect-provision"));
        let mut cmd = match &self.shell {
            Some(script) => {
                let mut c = Command::new("sh");
                c.args(["-c", script]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        for k in TOOL_ENV {
            cmd.env_remove(k);
        }
        cmd.args(self.argv());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// The command as a person would type it, for failure messages.
    fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={v:?} "));
        }
        if let Some(script) = &self.shell {
            s.push_str(&format!("sh -c {script:?} "));
        }
        s.push_str("connect-provision");
        for a in self.argv() {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '\'', '"', '\\', '$']) {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// Run to completion. With `SHOW_OUTPUT` set in the environment, print
    /// what it printed.
    pub fn output(mut self) -> CliOutput {
        let shown = self.describe();
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let input = self.stdin.take().unwrap_or_default();
        let mut pipe = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            // The child may exit without reading all of it; that is its business.
            let _ = pipe.write_all(&input);
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {shown}: {e}"));
        let _ = writer.join();
        let out = CliOutput {
            command: shown,
            output,
        };
        if std::env::var_os("SHOW_OUTPUT").is_some() {
            eprintln!("{out}");
        }
        out
    }

    /// [`Run::output`] on a blocking thread, so that an async test's servers
    /// keep answering meanwhile.
    pub async fn output_async(self) -> CliOutput {
        tokio::task::spawn_blocking(move || self.output())
            .await
            .expect("the command's thread")
    }

    /// Start in the background, stdin empty; stdout and stderr go to files,
    /// so a chatty run never blocks on a full pipe.
    pub fn spawn(self) -> Running {
        let shown = self.describe();
        let logs = tempfile::Builder::new()
            .prefix("connect-provision-log.")
            .tempdir()
            .expect("create a log directory");
        let file = |name: &str| File::create(logs.path().join(name)).expect("create a log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        Running {
            child,
            logs,
            command: shown,
        }
    }
}

/// The binary running in the background ([`Run::spawn`]). Killed when
/// dropped, so a failing test leaves no process behind.
pub struct Running {
    child: Child,
    logs: tempfile::TempDir,
    command: String,
}

impl Running {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Send `sig` (`-TERM`, `-INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGKILL, and reap.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Wait for the exit, at most `limit` (then kill it and fail): a guard
    /// against a run that never ends, not a speed check.
    pub fn wait(&mut self, limit: Duration) -> CliOutput {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return self.finished(status);
            }
            if Instant::now() >= deadline {
                self.kill_9();
                panic!(
                    "still running after {limit:?}: {}\n--- stderr ---\n{}",
                    self.command,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finished(&self, status: ExitStatus) -> CliOutput {
        CliOutput {
            command: self.command.clone(),
            output: Output {
                status,
                stdout: self.stdout().into_bytes(),
                stderr: self.stderr().into_bytes(),
            },
        }
    }

    /// stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `cond` every 10 ms for at most `limit`; whether it came true.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A finished command: the process output plus the command line, all three
/// shown by `Display` (and by the assertion helpers when they fail).
pub struct CliOutput {
    pub command: String,
    pub output: Output,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status: {}", self.output.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout())?;
        write!(f, "--- stderr ---\n{}", self.stderr())
    }
}

impl CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// stdout, lossily decoded.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// stderr, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panic, showing the command and its output, unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &CliOutput {
        assert_eq!(self.code(), code, "unexpected exit code\n{self}");
        self
    }

    /// Panic, showing the command and its output, unless stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &CliOutput {
        assert!(
            self.stderr().contains(needle),
            "stderr does not contain {needle:?}\n{self}"
        );
        self
    }

    /// Panic, showing the command and its output, unless stdout contains `needle`.
    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &CliOutput {
        assert!(
            self.stdout().contains(needle),
            "stdout does not contain {needle:?}\n{self}"
        );
        self
    }

    /// The lines of stderr that start with `error:`.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .map(str::to_string)
            .collect()
    }
}
