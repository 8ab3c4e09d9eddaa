#!/usr/bin/env python3
"""Pacing against strict limiters: `connect-provision run` against the sandbox
run with each --rate-limit-algorithm, on loopback. Prints a Markdown table.

    bench/limits.py [--runs N] [--secs S] [--sections fixed,spurious,auto,auto5,jitter]
                    [--algorithms A,B] [--rows N] [--keep] [--binary PATH]

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
4. auto5 (issue #19): five scenarios for the adaptive rate. Sandbox
   --rate-limit 40 --latency 20ms (each --algorithms, sliding-window by
   default); tool --rate auto --rate-start 10 --rate-max 200 over --rows rows
   (3,600: ~90 s at 40/s). Scenarios: clean; retry-after (sandbox
   --retry-after); noisy (--throttle-rate 0.01 --fail-rate 0.03, split evenly
   500/503 by the sandbox); drop (--rate-limit-schedule 30s:13); rise
   (--rate-limit-schedule 30s:80, --rise-rows rows so it runs >= 60 s).
   Measured from GET /_sandbox/seconds, read when the run has ended, from
   second 15 to the last second with requests, which is left out as partial:
   - rate/L: mean requests per second / L (40, or 13 / 80 after a change);
   - genuine 429 share: throttled_limit / requests over the same seconds;
   - noisy: the longest run of consecutive seconds below 0.5 L;
   - drop: settle = seconds from the drop to the end of the first second from
     which the trailing-5 s share of 429s (limit + spurious) over requests stays
     below 5 % ("never" if it does not before the run ends); the 429s in the
     30 s after the drop; rate/13 from drop + 15 s;
   - rise: seconds from the rise to the end of the first second whose
     trailing-5 s mean is >= 64 requests/s ("never" within the run);
   - summary.json's rate.final_per_second, the exit code, and "rows once":
     results.csv holds every row exactly once and the sandbox's
     duplicate_creations is 0.
   One table, a line per figure, with the issue's target and whether it was met.
5. jitter (issue #23): sandbox --rate-limit 200 (sliding window), tool --rate
   200 over 200 x --jitter-secs rows (30 s), for three latencies: 300ms
   --latency-jitter 0.2, --latency 100ms --latency-p99 1s, and 20ms.
   achieved/R = mean requests per second from /_sandbox/seconds, skipping the
   first 5 s and the last second with requests, / R; 429s = all 429s the
   sandbox answered. Targets: >= 0.97 / 0.95 / 0.99 and no 429.

Every figure is the median of --runs runs (default 1). The tool, the sandbox
and the poller share the machine's cores. Ports 18811.. on 127.0.0.1.
--algorithms defaults to all three for fixed and to sliding-window for auto5.
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


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path)
    s = json.loads(c.getresponse().read())
    c.close()
    return s


def stats(port):
    return get_json(port, "/_sandbox/stats")


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


def rows_once(out, rows):
    """Whether results.csv holds every data row 1..rows exactly once."""
    try:
        with open(os.path.join(out, "results.csv"), newline="") as f:
            seen = [int(r["row"]) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return False
    return len(seen) == rows and set(seen) == set(range(1, rows + 1))


def run_scenario(binary, work, name, sandbox_args, tool_args, rows):
    """One run of the tool against a fresh sandbox; the sandbox's per-second
    table and stats are read after the run, before the sandbox stops."""
    sb = Sandbox(binary, work, sandbox_args)
    try:
        inp = os.path.join(work, f"{name}.csv")
        out = os.path.join(work, f"{name}-out")
        write_input(inp, rows, name.replace("/", "-") + "-")
        env = dict(os.environ, CONNECT_CLIENT_ID="sandbox-client",
                   CONNECT_CLIENT_SECRET="sandbox-secret")
        with open(os.path.join(work, f"{name}.log"), "w") as errlog:
            rc = subprocess.call(
                [binary, "run", inp, "--base-url", sb.url(), "--out", out, "--no-progress",
                 *tool_args], env=env, stdout=errlog, stderr=errlog)
        seconds = get_json(sb.port, "/_sandbox/seconds")
        st = stats(sb.port)
        with open(os.path.join(work, f"{name}-seconds.json"), "w") as f:
            json.dump(seconds, f)
        try:
            with open(os.path.join(out, "summary.json")) as f:
                summ = json.load(f)
        except (OSError, ValueError):
            summ = {}
        return {
            "rc": rc,
            "seconds": seconds,
            "stats": st,
            "final": (summ.get("rate") or {}).get("final_per_second"),
            "rows_once": rows_once(out, rows) and st.get("duplicate_creations") == 0,
        }
    finally:
        sb.stop()


def active(seconds, skip):
    """Seconds from `skip` on, up to the last one with requests, which is left
    out as partial."""
    last = max((r["second"] for r in seconds if r["requests"] > 0), default=-1)
    return [r for r in seconds if skip <= r["second"] < last]


def mean(values):
    return statistics.fmean(values) if values else float("nan")


def all_429(r):
    return r["throttled_limit"] + r["throttled_spurious"]


def longest_below(rows, floor):
    """The longest run of consecutive seconds with fewer requests than `floor`."""
    best = cur = 0
    for r in rows:
        cur = cur + 1 if r["requests"] < floor else 0
        best = max(best, cur)
    return best


def drop_settle(seconds, at, end, share=0.05, width=5):
    """Seconds from `at` to the end of the first second s >= at from which the
    trailing-`width` s share of 429s stays below `share` up to `end` (inf: never)."""
    by = {r["second"]: r for r in seconds}

    def trailing(s):
        win = [by[k] for k in range(s - width + 1, s + 1) if k in by]
        req = sum(r["requests"] for r in win)
        return sum(all_429(r) for r in win) / req if req else 0.0

    settled = None
    for s in range(at, end):
        if trailing(s) < share:
            if settled is None:
                settled = s
        else:
            settled = None
    return float("inf") if settled is None else settled + 1 - at


def rise_reach(seconds, at, end, target, width=5):
    """Seconds from `at` to the end of the first second s >= at whose trailing
    `width` s mean is >= `target` requests/s (inf: never)."""
    by = {r["second"]: r["requests"] for r in seconds}
    for s in range(at, end):
        if sum(by.get(k, 0) for k in range(s - width + 1, s + 1)) / width >= target:
            return s + 1 - at
    return float("inf")


AUTO5_L = 40
AUTO5_CHANGE_AT = 30


def auto5_figures(kind, run):
    """The figures of one auto5 run, by name."""
    secs = run["seconds"]
    body = active(secs, 15)
    end = body[-1]["second"] + 1 if body else 0
    f = {"exit": run["rc"], "rows once": 1.0 if run["rows_once"] else 0.0,
         "final_per_second": run["final"]}
    if kind in ("clean", "retry-after", "noisy"):
        req = sum(r["requests"] for r in body)
        f["rate/L"] = mean([r["requests"] for r in body]) / AUTO5_L
        f["genuine 429 share %"] = (100.0 * sum(r["throttled_limit"] for r in body) / req
                                    if req else float("nan"))
        if kind == "noisy":
            f["longest run < 0.5 L (s)"] = longest_below(body, 0.5 * AUTO5_L)
    elif kind == "drop":
        at = AUTO5_CHANGE_AT
        f["settle: 429 share < 5 % (s)"] = drop_settle(secs, at, end)
        f["429s in 30 s after drop"] = sum(all_429(r) for r in secs if at <= r["second"] < at + 30)
        after = [r["requests"] for r in body if r["second"] >= at + 15]
        f["rate/13 from drop + 15 s"] = mean(after) / 13
    elif kind == "rise":
        f["reach 64/s (s)"] = rise_reach(secs, AUTO5_CHANGE_AT, end, 64)
    return f


# scenario -> (sandbox args, [(figure, target text, test)])
AUTO5 = {
    "clean": ([], [
        ("rate/L", ">= 0.97", lambda v: v >= 0.97),
        ("genuine 429 share %", "<= 0.5 %", lambda v: v <= 0.5),
        ("final_per_second", "[36, 41)", lambda v: 36 <= v < 41),
    ]),
    "retry-after": (["--retry-after"], [
        ("rate/L", ">= 0.95", lambda v: v >= 0.95),
        ("genuine 429 share %", "", None),
        ("final_per_second", "", None),
    ]),
    "noisy": (["--throttle-rate", "0.01", "--fail-rate", "0.03"], [
        ("rate/L", ">= 0.92", lambda v: v >= 0.92),
        ("longest run < 0.5 L (s)", "<= 3", lambda v: v <= 3),
        ("genuine 429 share %", "", None),
        ("final_per_second", "[36, 41)", lambda v: 36 <= v < 41),
    ]),
    "drop": (["--rate-limit-schedule", f"{AUTO5_CHANGE_AT}s:13"], [
        ("settle: 429 share < 5 % (s)", "<= 10", lambda v: v <= 10),
        ("429s in 30 s after drop", "<= 40", lambda v: v <= 40),
        ("rate/13 from drop + 15 s", ">= 0.95", lambda v: v >= 0.95),
    ]),
    "rise": (["--rate-limit-schedule", f"{AUTO5_CHANGE_AT}s:80"], [
        ("reach 64/s (s)", "<= 20", lambda v: v <= 20),
    ]),
}
COMMON = [("exit", "0", lambda v: v == 0), ("rows once", "yes", lambda v: v == 1.0)]


def fmt(v, name):
    """A figure as the table shows it."""
    if v is None or v != v:
        return "n/a"
    if v == float("inf"):
        return "never"
    if name == "rows once":
        return "yes" if v == 1.0 else "no"
    if name.startswith("rate/"):
        return f"{v:.3f}"
    if name == "genuine 429 share %":
        return f"{v:.2f}"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def section_auto5(a, binary, work, algorithms):
    print("| scenario | limiter | figure | value | target | met |")
    print("|---|---|---|---:|---|:-:|")
    for algo in algorithms:
        for kind, (extra, checks) in AUTO5.items():
            if a.scenarios and kind not in a.scenarios.split(","):
                continue
            rows = a.rise_rows if kind == "rise" else a.rows
            figs = []
            for i in range(a.runs):
                log(f"auto5 {kind} {algo} run {i + 1} ({rows} rows)")
                run = run_scenario(
                    binary, work, f"auto5-{kind}-{algo}-{i}",
                    ["--rate-limit", str(AUTO5_L), "--rate-limit-algorithm", algo,
                     "--latency", "20ms", "--seed", str(i + 1), *extra],
                    ["--rate", "auto", "--rate-start", "10", "--rate-max", "200"], rows)
                figs.append(auto5_figures(kind, run))
            for name, target, test in checks + COMMON:
                v = med(figs, name)
                met = "" if test is None or v != v else ("yes" if test(v) else "**no**")
                print(f"| {kind} | {algo} | {name} | {fmt(v, name)} | {target} | {met} |",
                      flush=True)


JITTER = [
    ("300ms ± 20 %", ["--latency", "300ms", "--latency-jitter", "0.2"], 0.97),
    ("100ms, p99 1s", ["--latency", "100ms", "--latency-p99", "1s"], 0.95),
    ("20ms", ["--latency", "20ms"], 0.99),
]


def section_jitter(a, binary, work):
    r = 200
    print(f"| latency (R = {r}, sliding window) | achieved/R | target | 429s | target | exit |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, (label, extra, target) in enumerate(JITTER):
        runs = []
        for i in range(a.runs):
            log(f"jitter {label} run {i + 1}")
            run = run_scenario(
                binary, work, f"jitter-{case}-{i}",
                ["--rate-limit", str(r), "--seed", str(i + 1), *extra],
                ["--rate", str(r)], int(r * a.jitter_secs))
            body = active(run["seconds"], 5)
            runs.append({
                "ratio": mean([x["requests"] for x in body]) / r,
                "throttled": run["stats"]["throttled"],
                "rc": run["rc"],
            })
        ratio, n429 = med(runs, "ratio"), med(runs, "throttled")
        print(f"| {label} | {ratio:.3f} | >= {target} {'' if ratio >= target else '**no**'} | "
              f"{n429:.0f} | 0 {'' if n429 == 0 else '**no**'} | "
              f"{'/'.join(str(x['rc']) for x in runs)} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--secs", type=float, default=15.0, help="seconds of rows per fixed-rate case")
    ap.add_argument("--sections", default="fixed,spurious,auto")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--binary", help="use this build instead of cargo build --release")
    ap.add_argument("--algorithms",
                    help="limit algorithms (fixed: all three by default; auto5: sliding-window)")
    ap.add_argument("--scenarios", default="",
                    help="auto5 scenarios to run, comma-separated (default: all five)")
    ap.add_argument("--rows", type=int, default=3600, help="rows per auto5 scenario (~90 s at 40/s)")
    ap.add_argument("--rise-rows", type=int, default=4400,
                    help="rows of auto5's rise scenario (>= 60 s: 30 s at 40/s, then 80/s)")
    ap.add_argument("--jitter-secs", type=float, default=30.0, help="seconds of rows per jitter case")
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
            for algo in (a.algorithms or "sliding-window,fixed-window,token-bucket").split(","):
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
            print()
        if "auto5" in sections:
            print(f"Adaptive rate, issue #19: L = {AUTO5_L}, --latency 20ms, "
                  f"{a.rows} rows ({a.rise_rows} for rise)\n")
            section_auto5(a, binary, work, (a.algorithms or "sliding-window").split(","))
            print()
        if "jitter" in sections:
            print("Fixed rate against slow partners, issue #23\n")
            section_jitter(a, binary, work)
            print()
    finally:
        if a.keep:
            log(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
