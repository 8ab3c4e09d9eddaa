//! The reports cannot be written mid-run (issue #24 C). A file-size limit
//! stands in for a full disk: writes past it fail (EFBIG) as they would with
//! ENOSPC, and `sh` sets it for the child alone, with SIGXFSZ ignored so the
//! write fails instead of the signal killing the process.

use std::process::Command;

use connect_provision::sandbox::SandboxConfig;

use crate::util::{
    Fixture, SANDBOX_SECRET, assert_each_row_once, assert_sandbox_matches, bin, read_results,
    read_summary, run_blocking, sandbox,
};

// The run ends like any fatal stop: exit 3, a message that names the file
// and says `--resume` continues, progress.json kept and summary.json written
// (it is small). `--resume` on the same directory, the limit lifted, ends
// with every row exactly once and nothing created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_cannot_be_written_mid_run_end_fatal_and_resumable() {
    let sb = sandbox(SandboxConfig::default()).await;
    let fx = Fixture::users(20_000);
    let out = fx.out();
    // 600 blocks: 300 KiB (dash) or 600 KiB (bash), either way well under
    // results.csv's 20,000 lines.
    let script = "trap '' XFSZ; ulimit -f 600; exec \"$0\" \"$@\"";
    let base = sb.url();
    let limited = tokio::task::spawn_blocking({
        let (input, out) = (fx.input.clone(), out.clone());
        move || {
            Command::new("sh")
                .args(["-c", script])
                .arg(bin())
                .arg("run")
                .arg(&input)
                .arg("--out")
                .arg(&out)
                .args(["--base-url", &base, "--rate", "5000", "--no-progress"])
                .env("CONNECT_CLIENT_ID", "sandbox-client")
                .env("CONNECT_CLIENT_SECRET", SANDBOX_SECRET)
                .output()
                .expect("run sh")
        }
    })
    .await
    .expect("the run's thread");
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("results.csv"), "names the file: {stderr}");
    assert!(stderr.contains("--resume"), "says how to go on: {stderr}");
    assert!(out.join("progress.json").exists(), "the journal is kept");
    let summary = read_summary(&out);
    assert_eq!(summary.exit_code, 3);
    assert!(sb.stats().created > 0, "the test would be vacuous");

    let resumed = run_blocking(
        sb.url(),
        SANDBOX_SECRET,
        fx.args(&["--resume", "--rate", "5000"]),
    )
    .await;
    resumed.expect_code(0);
    let rows = read_results(&out);
    assert_each_row_once(&rows, fx.rows);
    assert_sandbox_matches(&sb, &rows);
    sb.shutdown().await;
}
