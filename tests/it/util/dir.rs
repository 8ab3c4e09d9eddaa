//! Scratch directories and the inputs the tests build in them.

use std::path::{Path, PathBuf};

use connect_provision::sandbox::Sandbox;

/// The crate's root (samples/, tests/hostile/ live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under samples/.
pub fn sample(name: &str) -> PathBuf {
    repo_root().join("samples").join(name)
}

/// A scratch directory, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A fresh empty directory.
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("connect-provision-it.")
                .tempdir()
                .expect("create a temporary directory"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the directory (not created).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` inside the directory as a `String`, for argument lists.
    pub fn arg(&self, name: impl AsRef<Path>) -> String {
        self.join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }

    /// Write `bytes` to `name` (parents created); returns the path.
    pub fn write(&self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Write a comma-separated CSV of `rows` (the first is the header),
    /// quoting as needed; returns the path.
    pub fn write_csv(&self, name: impl AsRef<Path>, rows: &[&[&str]]) -> PathBuf {
        self.write(name, csv_bytes(b',', rows))
    }
}

/// CSV text of `rows` with `delimiter`, `\n` line ends, quoting as needed.
pub fn csv_bytes(delimiter: u8, rows: &[&[&str]]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_writer(vec![]);
    for row in rows {
        w.write_record(*row).expect("write csv row");
    }
    w.into_inner().expect("flush csv")
}

/// File mode bits (unix).
#[cfg(unix)]
pub fn mode(path: impl AsRef<Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.as_ref().display()))
        .permissions()
        .mode()
        & 0o777
}

/// A scratch directory with a generated input of valid, distinct users.
pub struct Fixture {
    pub dir: TestDir,
    pub input: PathBuf,
    pub rows: u64,
}

impl Fixture {
    /// `rows` valid, distinct users in `in.csv`.
    pub fn users(rows: u64) -> Fixture {
        let dir = TestDir::new();
        let mut s = String::from("user_id,first_name,last_name,phone_number,locale\n");
        for i in 1..=rows {
            s.push_str(&format!(
                "u{i:06},ann,smith,(415) 555-{:04},en-US\n",
                i % 10_000
            ));
        }
        let input = dir.write("in.csv", s);
        Fixture { dir, input, rows }
    }

    /// The run's `--out` directory.
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// `run INPUT --out OUT` against `sb`.
    pub fn live(&self, sb: &Sandbox) -> super::Run {
        super::Run::live(sb).input(&self.input).out(self.out())
    }

    /// The reports of that run.
    pub fn reports(&self) -> super::Reports {
        super::Reports::at(self.out())
    }

    /// Provision every user against `sb` with `args`, expecting exit 0, and
    /// check the reports against each other and the sandbox
    /// ([`super::Reports::assert_live`]).
    pub async fn provision(&self, sb: &Sandbox, args: &[&str]) -> super::Consistent {
        self.live(sb).args(args).output_async().await.expect_code(0);
        self.reports().assert_live(sb, self.rows)
    }
}
