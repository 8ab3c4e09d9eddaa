#!/usr/bin/env python3
"""Pacing against strict limiters: `connect-provision run` against the sandbox
run with each --rate-limit-algorithm, on loopback. Prints a Markdown table.

    bench/limits.py [--runs N] [--secs S] [--sections fixed,spurious,auto] [--keep] [--binary PATH]

1. Fixed rate: for each algorithm (sliding-window, fixed-window, token-bucket),
   R = 50 and 200, server latency 0 and 50 ms: sandbox --rate-limit R, tool
   --rate R over R x S rows. Columns:
   - achieved/R: requests over the sending window, as the sandbox counted them
     (its users_requests polled every 10 ms, from the first request seen to the
     last), divided by R. Start-up and the tail are left out.
   - run/R: summary.json achieved_rps (requests / elapsed, start-up included) / R.
   - 429s: summary.json throttled_429.
   - max 1 s: the most users requests the sandbox saw in any sliding 1 s window
     (stats max_window). Target: <= R, no 429, achieved/R >= 0.99.
2. Spurious 429s: sliding window, R = 50 and 200, and the sandbox answering
   one request in 1,000 with a 429 (--throttle-rate 0.001). Target: achieved/R
   >= 0.95.
3. Adaptive: sliding-window limit L = 40, tool --rate auto --rate-max 200
   --rate-start 10, 2,000 rows. whole-run/L = achieved_rps / L (start-up and
   slow start included). Targets: >= 0.9 and fewer than 2 % of requests 429.

Every figure is the median of --runs runs (default 1). The tool, the sandbox
and the poller share the machine's cores. Ports 18811.. on 127.0.0.1.
Standard library only.
"""
import argparse
import csv
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 18811


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    c.request("GET", "/_sandbox/stats")
    s = json.loads(c.getresponse().read())
    c.close()
    return s


class Sandbox:
    def __init__(self, binary, work, args):
        global PORT
        PORT += 1
        self.port = PORT
        self.log = open(os.path.join(work, f"sandbox-{self.port}.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "sandbox", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                stats(self.port)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"sandbox on {self.port} did not start")

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Poller(threading.Thread):
    """users_requests every 10 ms: (t, n) each time it changes."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.points, self.done = port, [], False

    def run(self):
        conn, last = None, None
        while not self.done:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/_sandbox/stats")
                n = json.loads(conn.getresponse().read())["users_requests"]
            except (OSError, http.client.HTTPException, ValueError):
                conn = None
                time.sleep(0.01)
                continue
            t = time.monotonic()
            if n != last:
                self.points.append((t, n))
                last = n
            time.sleep(0.01)

    def window_rate(self):
        pts = [p for p in self.points if p[1] > 0]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return float("nan")
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def write_input(path, rows, prefix):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "first_name", "last_name"])
        for i in range(rows):
            w.writerow([f"{prefix}{i:07d}", "ann", "smith"])


def run_case(binary, work, name, sandbox_args, tool_args, rows):
    sb = Sandbox(binary, work, sandbox_args)
    try:
        inp = os.path.join(work, f"{name}.csv")
        out = os.path.join(work, f"{name}-out")
        write_input(inp, rows, name.replace("/", "-") + "-")
        poll = Poller(sb.port)
        poll.start()
        env = dict(os.environ, CONNECT_CLIENT_ID="sandbox-client",
                   CONNECT_CLIENT_SECRET="sandbox-secret")
        with open(os.path.join(work, f"{name}.log"), "w") as errlog:
            rc = subprocess.call(
                [binary, "run", inp, "--base-url", sb.url(), "--out", out, "--no-progress",
                 *tool_args], env=env, stdout=errlog, stderr=errlog)
        time.sleep(0.05)
        poll.done = True
        poll.join()
        st = stats(sb.port)
        with open(os.path.join(out, "summary.json")) as f:
            summ = json.load(f)
        return {
            "rc": rc,
            "window_rps": poll.window_rate(),
            "achieved_rps": summ["achieved_rps"],
            "requests": summ["requests_sent"],
            "throttled": summ["throttled_429"],
            "max_window": st.get("max_window", float("nan")),
            "final": (summ.get("rate") or {}).get("final_per_second"),
        }
    finally:
        sb.stop()


def med(runs, key):
    v = [r[key] for r in runs if r[key] is not None and r[key] == r[key]]
    return statistics.median(v) if v else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--secs", type=float, default=15.0, help="seconds of rows per fixed-rate case")
    ap.add_argument("--sections", default="fixed,spurious,auto")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--binary", help="use this build instead of cargo build --release")
    ap.add_argument("--algorithms", default="sliding-window,fixed-window,token-bucket")
    ap.add_argument("--rates", default="50,200")
    ap.add_argument("--latencies", default="0ms,50ms")
    a = ap.parse_args()
    sections = set(a.sections.split(","))

    built = a.binary
    if built is None:
        log("building (cargo build --release)...")
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        built = os.path.join(ROOT, "target", "release", "connect-provision")
    work = tempfile.mkdtemp(prefix="limits-bench.")
    # A private copy: a rebuild during the benchmark must not mix two binaries.
    binary = os.path.join(work, "connect-provision")
    shutil.copy(built, binary)
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    print(f"Pacing against strict limiters, {rev}, median of {a.runs} run(s), "
          f"{os.cpu_count()} cores\n")
    try:
        if "fixed" in sections:
            print("| limiter | R | latency | achieved/R | run/R | 429s | max 1 s | exit |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for algo in a.algorithms.split(","):
                for r in [int(x) for x in a.rates.split(",")]:
                    for lat in a.latencies.split(","):
                        name = f"{algo}-{r}-{lat}"
                        runs = []
                        for i in range(a.runs):
                            log(f"{name} run {i + 1}")
                            runs.append(run_case(
                                binary, work, f"{name}-{i}",
                                ["--rate-limit", str(r), "--rate-limit-algorithm", algo,
                                 "--latency", lat],
                                ["--rate", str(r)], int(r * a.secs)))
                        print(f"| {algo} | {r} | {lat} | {med(runs, 'window_rps') / r:.3f} | "
                              f"{med(runs, 'achieved_rps') / r:.3f} | {med(runs, 'throttled'):.0f} | "
                              f"{med(runs, 'max_window'):.0f} | "
                              f"{'/'.join(str(x['rc']) for x in runs)} |", flush=True)
            print()
        if "spurious" in sections:
            print("| spurious 429 (1 in 1,000), sliding window | R | achieved/R | run/R | 429s | exit |")
            print("|---|---:|---:|---:|---:|---:|")
            for r in [int(x) for x in a.rates.split(",")]:
                runs = []
                for i in range(a.runs):
                    log(f"spurious-{r} run {i + 1}")
                    runs.append(run_case(
                        binary, work, f"spurious-{r}-{i}",
                        ["--rate-limit", str(r), "--throttle-rate", "0.001", "--seed", str(i + 1)],
                        ["--rate", str(r)], int(r * a.secs * 2)))
                print(f"| | {r} | {med(runs, 'window_rps') / r:.3f} | "
                      f"{med(runs, 'achieved_rps') / r:.3f} | {med(runs, 'throttled'):.0f} | "
                      f"{'/'.join(str(x['rc']) for x in runs)} |", flush=True)
            print()
        if "auto" in sections:
            limit = 40
            print("| adaptive, sliding window L = 40 | whole-run/L | 429s | 429 share | final_per_second | exit |")
            print("|---|---:|---:|---:|---:|---:|")
            runs = []
            for i in range(a.runs):
                log(f"auto run {i + 1}")
                runs.append(run_case(
                    binary, work, f"auto-{i}", ["--rate-limit", str(limit)],
                    ["--rate", "auto", "--rate-max", "200", "--rate-start", "10"], 2000))
            share = statistics.median(x["throttled"] / max(1, x["requests"]) for x in runs)
            print(f"| 2,000 rows, start 10, max 200 | {med(runs, 'achieved_rps') / limit:.3f} | "
                  f"{med(runs, 'throttled'):.0f} | {share * 100:.2f} % | {med(runs, 'final'):.1f} | "
                  f"{'/'.join(str(x['rc']) for x in runs)} |", flush=True)
    finally:
        if a.keep:
            log(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
