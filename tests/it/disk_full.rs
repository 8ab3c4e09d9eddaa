//! The reports cannot be written mid-run (issue #24 C). A file-size limit
//! stands in for a full disk: writes past it fail (EFBIG) as they would with
//! ENOSPC, and `sh` sets it for the child alone, with SIGXFSZ ignored so the
//! write fails instead of the signal killing the process.

use connect_provision::sandbox::SandboxConfig;

use crate::util::{Fixture, Reports, sandbox};

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
    let limited = fx
        .live(&sb)
        .rate(5000)
        .via_shell(script)
        .output_async()
        .await;
    limited
        .expect_code(3)
        .expect_stderr("results.csv") // names the file
        .expect_stderr("--resume"); // says how to go on
    assert!(out.join("progress.json").exists(), "the journal is kept");
    let summary = Reports::at(&out).summary();
    assert_eq!(summary.exit_code, 3);
    assert!(sb.stats().created > 0, "the test would be vacuous");

    let resumed = fx.live(&sb).resume().rate(5000).output_async().await;
    resumed.expect_code(0);
    fx.reports().assert_live(&sb, fx.rows);
    sb.shutdown().await;
}
