//! Scale: compressed inputs (gzip, zstd, told by their bytes, stdin too;
//! damaged archives) and `--shard K/N` (the shards of an input, run
//! separately, do exactly what one unsharded run does).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use connect_provision::sandbox::SandboxConfig;

use crate::util::{Fixture, Reports, Run, TestDir, sample, sandbox, wait_until};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// results.csv as (row → (user_id, status, error)), order aside.
fn by_row(dir: &Path) -> BTreeMap<u64, (String, String, String)> {
    Reports::at(dir)
        .results()
        .into_iter()
        .map(|r| (r.row, (r.user_id, r.status, r.error)))
        .collect()
}

// gzip and zstd are read by their first bytes, whatever the file's name,
// and from stdin; the reports are the plain file's, and the SHA-256 is the
// file's as given.
#[test]
fn gzip_and_zstd_inputs_read_like_the_plain_file() {
    let t = TestDir::new();
    let plain = std::fs::read(sample("customers.csv")).unwrap();
    let want = {
        let out = t.join("plain");
        Run::dry(sample("customers.csv"))
            .out(&out)
            .output()
            .expect_code(1);
        by_row(&out)
    };
    let inputs: [(&str, Vec<u8>); 3] = [
        ("customers.csv.gz", gzip(&plain)),
        (
            "customers.csv.zst",
            zstd::encode_all(&plain[..], 3).unwrap(),
        ),
        // Named like a plain file: the bytes decide.
        ("customers.csv", gzip(&plain)),
    ];
    for (i, (name, bytes)) in inputs.iter().enumerate() {
        let input = t.write(format!("{i}/{name}"), bytes);
        let out = t.join(format!("out{i}"));
        Run::dry(&input).out(&out).output().expect_code(1);
        assert_eq!(by_row(&out), want, "{name}");
        let sha = Reports::at(&out).summary().input.sha256;
        assert_eq!(sha, sha256_hex(bytes), "{name}: the file's hash as given");
    }
    let out = t.join("stdin");
    let o = Run::dry("-").out(&out).stdin(gzip(&plain)).output();
    o.expect_code(1);
    assert_eq!(by_row(&out), want, "gzip on stdin");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A CSV of `rows` valid users.
fn users_csv(rows: u64) -> Vec<u8> {
    let mut s = String::from("user_id,first_name,last_name,phone_number,locale\n");
    for i in 1..=rows {
        s.push_str(&format!(
            "u{i:06},ann,smith,(415) 555-{:04},en-US\n",
            i % 10_000
        ));
    }
    s.into_bytes()
}

// A truncated archive: the rows before the damage are reported, then the
// run ends fatal (exit 3) with one clear error; damage before the first
// row is a usage error (exit 2). Never a panic.
#[test]
fn a_truncated_archive_reports_the_rows_before_the_damage() {
    let t = TestDir::new();
    let mut gz = gzip(&users_csv(40_000));
    gz.truncate(gz.len() / 2);
    let input = t.write("cut.csv.gz", &gz);
    let out = t.join("out");
    let o = Run::dry(&input).out(&out).output();
    o.expect_code(3).expect_stderr("damaged or truncated");
    let summary = Reports::at(&out).summary();
    assert!(
        summary.rows_read > 1000 && summary.rows_read < 40_000,
        "{}",
        summary.rows_read
    );
    Reports::at(&out).assert_consistent(summary.rows_read);
    assert!(
        summary
            .fatal_error
            .unwrap()
            .contains("the gzip input is damaged")
    );

    let header_cut = t.write("header.csv.gz", &gz[..15]);
    let o = Run::dry(&header_cut).out(t.join("out2")).output();
    o.expect_code(2).expect_stderr("damaged or truncated");
    assert_eq!(o.error_lines().len(), 1, "{o}");
}

// A live run of a gzip file, stopped by its time budget, resumes against
// the same file and refuses the same text compressed differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_input_resumes_and_a_recompressed_one_is_refused() {
    let sb = sandbox(SandboxConfig::default()).await;
    let t = TestDir::new();
    let text = users_csv(300);
    let input = t.write("in.csv.gz", gzip(&text));
    let out = t.join("out");
    // 100/s: 300 rows outlast a 1 s budget.
    let run = || Run::live(&sb).input(&input).out(&out).rate(100);
    let first = run().args(["--time-budget", "1s"]).output_async().await;
    first.expect_code(130);
    run().resume().output_async().await.expect_code(0);
    let done = Reports::at(&out).assert_live(&sb, 300);
    assert!(done.rows.iter().all(|r| r.status == "created"));
    assert_eq!(sb.stats().created, 300);

    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&text).unwrap();
    std::fs::write(&input, e.finish().unwrap()).unwrap();
    let refused = run().resume().output_async().await;
    refused.expect_code(2).expect_stderr("the input changed");
    sb.shutdown().await;
}

// The N shards of one input, run separately, together send exactly the rows
// one unsharded run sends, and the union of their results.csv is the
// unsharded one (duplicates included: equal user_ids share a shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_together_do_what_one_unsharded_run_does() {
    let t = TestDir::new();
    // The sample (invalid rows, duplicates) gzipped, plus more users.
    let mut text = std::fs::read(sample("customers.csv")).unwrap();
    for i in 1..=400u64 {
        text.extend(format!("extra{i:05},Ann,Lee,,en-US\n").as_bytes());
    }
    let input = t.write("in.csv.gz", gzip(&text));

    let whole_sb = sandbox(SandboxConfig::default()).await;
    let whole = t.join("whole");
    let o = Run::live(&whole_sb)
        .input(&input)
        .out(&whole)
        .rate(500)
        .output_async()
        .await;
    o.expect_code(1);
    let want = by_row(&whole);
    let sent: BTreeSet<String> = whole_sb.users().into_iter().map(|u| u.user_id).collect();
    whole_sb.shutdown().await;

    let n = 3;
    let sb = sandbox(SandboxConfig::default()).await;
    let mut union = BTreeMap::new();
    let mut rows_read = 0;
    for k in 1..=n {
        let out = t.join(format!("shard{k}"));
        let shard = format!("{k}/{n}");
        let o = Run::live(&sb)
            .input(&input)
            .out(&out)
            .rate(500)
            .args(["--shard", &shard])
            .output_async()
            .await;
        o.expect_stdout(&format!("run (shard {shard})"));
        let summary = Reports::at(&out).summary();
        let s = summary.shard.expect("summary.json names the shard");
        assert_eq!((s.index, s.count), (k, n));
        assert_eq!(summary.counts.values().sum::<u64>(), summary.rows_read);
        rows_read += summary.rows_read;
        for (row, line) in by_row(&out) {
            assert!(union.insert(row, line).is_none(), "row {row} in two shards");
        }
    }
    assert_eq!(rows_read, want.len() as u64);
    assert_eq!(union, want, "the shards' results.csv together");
    let sent_by_shards: BTreeSet<String> = sb.users().into_iter().map(|u| u.user_id).collect();
    assert_eq!(
        sent_by_shards, sent,
        "the shards created what one run created"
    );
    assert_eq!(
        sb.stats().users_requests,
        sent.len() as u64,
        "each sent once"
    );
    sb.shutdown().await;
}

// A shard's run resumes only as the same shard.
#[test]
fn a_resume_with_another_shard_is_refused() {
    let t = TestDir::new();
    let fx = Fixture::users(50);
    let out = t.join("out");
    // Nothing listens on port 9: the token cannot be had (exit 3), but the
    // run is recorded, as shard 1/2.
    let run = |extra: &[&str]| {
        Run::live_at("http://127.0.0.1:9")
            .input(&fx.input)
            .out(&out)
            .rate(500)
            .args(["--timeout", "1s", "--max-attempts", "1"])
            .args(extra)
            .output()
    };
    run(&["--shard", "1/2"]).expect_code(3);
    run(&["--shard", "2/2", "--resume"])
        .expect_code(2)
        .expect_stderr("handled shard 1/2, not shard 2/2");
}

// A live run reading a pipe (stdin, or a FIFO named as the input) sends each
// row as it arrives; only a regular file is validated in batches of 1,024
// (ARCHITECTURE.md "A dry run"). The writer holds the pipe open after two
// rows: the sandbox must see both users before the input ends.
#[test]
fn a_live_run_sends_the_rows_of_a_pipe_as_they_arrive() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(sandbox(SandboxConfig::default()));
    let t = TestDir::new();
    let fifo = t.join("export.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let out = t.join("out");
    let mut child = Run::live(&sb).input(&fifo).out(&out).spawn();
    // Opening a FIFO for writing waits for its reader: the run.
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    pipe.write_all(b"user_id,first_name\nu1,Ann\nu2,Bob\n")
        .unwrap();
    pipe.flush().unwrap();
    let both = wait_until(Duration::from_secs(60), || sb.users().len() == 2);
    assert!(child.running(), "the run ended before its input did");
    assert!(both, "two rows written to a pipe held open were not sent");
    pipe.write_all(b"u3,Cy\n").unwrap();
    drop(pipe);
    child.wait(Duration::from_secs(60)).expect_code(0);
    let rows = by_row(&out);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.values().all(|(_, status, _)| status == "created"),
        "{rows:?}"
    );
    assert_eq!(sb.users().len(), 3);
    // A pipe is read once: run.json cannot hold its hash (summary.json's is
    // taken as it was read), and --resume refuses it.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["input_sha256"], "pipe");
    Run::live(&sb)
        .input(&fifo)
        .out(&out)
        .resume()
        .output()
        .expect_code(2)
        .expect_stderr("cannot resume a run that reads stdin or a pipe");
}
