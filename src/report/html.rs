//! report.html: one self-contained page an operator opens from a mail
//! attachment after a run. Inline CSS and inline SVG charts (drawn by
//! plotters, see [`charts`]), no JavaScript and nothing fetched from a
//! network.
//!
//! In page order: the run's facts and exit code, the next step, the
//! outcomes as one stacked bar, throughput, latency, requests in flight
//! with token refreshes, and the most frequent error messages. Everything
//! taken from data (paths, target, error messages) is HTML-escaped.

mod charts;

use crate::exit::Exit;
use crate::report::Summary;
use crate::report::errors::ErrorGroup;
use crate::report::timeline::Second;

/// Longest error message shown, in characters; longer ones are cut.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// The page's style: light, system fonts, at most 1000 px wide.
const CSS: &str = r#":root{color-scheme:light}
body{margin:0;background:#f4f5f7;color:#1f2328;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:24px 20px 32px}
h1{font-size:24px;margin:0 0 16px}
h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:16px 20px;margin:0 0 16px}
dl#facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 24px;margin:0}
dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere}
code{font:13px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
#next-step{margin:0 0 16px;padding:12px 16px;border-left:5px solid;border-radius:4px}
#next-step.ok{border-color:#2e7d32;background:#edf7ee}
#next-step.warn{border-color:#ef6c00;background:#fff4e5}
#next-step.bad{border-color:#c62828;background:#fdecea}
dd.ok,dd.warn,dd.bad{font-weight:600}
dd.ok{color:#2e7d32}dd.warn{color:#b45309}dd.bad{color:#c62828}
figure{margin:0}
figure svg{display:block;width:100%;height:auto}
svg text{font-family:inherit}
figcaption{font-size:13px;color:#444c56}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 20px;padding:0;margin:8px 0 0}
.key{display:inline-block;margin-right:6px;vertical-align:middle}
.key.block{width:12px;height:12px;border-radius:2px;background:currentColor}
.key.line{width:18px;height:3px;background:currentColor}
.key.dot{width:8px;height:8px;border-radius:50%;background:currentColor}
.key.tri{width:0;height:0;border:6px solid transparent;border-bottom:10px solid currentColor;border-top:0}
.key.dash{width:18px;height:0;border-top:2px dashed currentColor}
.note{margin:4px 0 0;color:#6e7781}
.empty{margin:0;color:#6e7781;font-style:italic}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e1e4e8;vertical-align:top}
th{color:#57606a;font-weight:600}
td.message{overflow-wrap:anywhere;width:70%}
td.count,th.count{text-align:right;font-variant-numeric:tabular-nums}
td.rows{font-variant-numeric:tabular-nums;white-space:nowrap}
footer{color:#6e7781;font-size:12px;text-align:center}
@media print{body{background:#fff}section{break-inside:avoid}}
"#;

/// What report.html shows.
pub(crate) struct Page<'a> {
    /// summary.json.
    pub(crate) summary: &'a Summary,
    /// timeline.csv, one entry per second of the run.
    pub(crate) timeline: &'a [Second],
    /// The most frequent error messages (at most 10), most frequent first.
    pub(crate) errors: &'a [ErrorGroup],
}

/// Why report.html could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// plotters failed to draw a chart.
    #[error("cannot draw the {chart} chart of report.html")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// plotters' error.
        #[source]
        source: plotters::drawing::DrawingAreaErrorKind<std::io::Error>,
    },
}

/// The whole page.
pub(crate) fn render(page: &Page<'_>) -> Result<String, HtmlError> {
    let s = page.summary;
    let outcomes = charts::outcomes_figure(&s.counts)?;
    let [throughput, latency, inflight] = charts::time_figures(page.timeline)?;
    let mut html = String::with_capacity(128 * 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<title>connect-provision run report</title>\n");
    html.push_str(&format!(
        "<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n"
    ));
    html.push_str("<h1>connect-provision run report</h1>\n");
    html.push_str(&section("Run", &facts(s)));
    html.push_str(&next_step(s));
    html.push_str(&section("Outcomes", &outcomes));
    html.push_str(&section("Throughput", &throughput));
    html.push_str(&section("Latency", &latency));
    html.push_str(&section(
        "In-flight requests and token refreshes",
        &inflight,
    ));
    html.push_str(&section("Top errors", &top_errors(page.errors)));
    html.push_str(&format!(
        "<footer>connect-provision {}</footer>\n</main>\n</body>\n</html>\n",
        escape(&s.tool_version)
    ));
    Ok(html)
}

/// `text` with `& < > " '` escaped, safe in element content and in quoted
/// attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `12,345`.
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `41.2`: at most two decimals, trailing zeros dropped; `n/a` if not finite.
fn dec(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1 h 02 min 03 s`, `2 min 05 s` or `12.3 s`.
fn elapsed(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "n/a".to_string();
    }
    let whole = seconds.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    match (h, m) {
        (0, 0) => format!("{seconds:.1} s"),
        (0, _) => format!("{m} min {s:02} s"),
        _ => format!("{h} h {m:02} min {s:02} s"),
    }
}

/// A titled section.
fn section(title: &str, body: &str) -> String {
    format!("<section>\n<h2>{title}</h2>\n{body}</section>\n")
}

/// What an exit code means, in one short phrase.
fn meaning(exit: Option<Exit>) -> &'static str {
    match exit {
        Some(Exit::Success) => "success",
        Some(Exit::FixData) => "some rows need fixing",
        Some(Exit::Usage) => "usage error",
        Some(Exit::Fatal) => "fatal error during the run",
        Some(Exit::RetryLater) => "some rows failed transiently",
        Some(Exit::Interrupted) => "interrupted",
        None => "unknown exit code",
    }
}

/// The CSS class for how an exit should worry the operator.
fn severity(exit: Option<Exit>) -> &'static str {
    match exit {
        Some(Exit::Success) => "ok",
        Some(Exit::FixData | Exit::RetryLater | Exit::Interrupted) => "warn",
        Some(Exit::Usage | Exit::Fatal) | None => "bad",
    }
}

/// The target, and whether the run was dry.
fn target(s: &Summary) -> String {
    match (&s.target, s.dry_run) {
        (Some(t), false) => escape(t),
        (Some(t), true) => format!("{} (dry run)", escape(t)),
        (None, _) => "dry run".to_string(),
    }
}

/// The rate the run used.
fn rate(s: &Summary) -> String {
    match &s.rate {
        Some(r) => {
            let max = r
                .max_per_second
                .map(|m| format!(", max {m}/s"))
                .unwrap_or_default();
            format!(
                "{}, final {}/s{max}",
                escape(&r.mode),
                dec(r.final_per_second)
            )
        }
        None if s.dry_run => "none (dry run)".to_string(),
        None => "none".to_string(),
    }
}

/// `<dl id="facts">`: the run's figures.
fn facts(s: &Summary) -> String {
    let exit = Exit::from_code(s.exit_code);
    let finished = s.counts.values().fold(0u64, |a, n| a.saturating_add(*n));
    let mut rows: Vec<(&str, String, &str)> = vec![
        (
            "Input",
            format!("<code>{}</code>", escape(&s.input.path)),
            "",
        ),
        (
            "Input SHA-256",
            format!("<code>{}</code>", escape(&s.input.sha256)),
            "",
        ),
        ("Target", target(s), ""),
        ("Started", escape(&s.started), ""),
        ("Finished", escape(&s.finished), ""),
        ("Elapsed", elapsed(s.elapsed_seconds), ""),
        ("Rows read", rows_read(s), ""),
        (
            "Rows finished",
            format!("{} ({}/s)", int(finished), dec(s.rows_per_second)),
            "",
        ),
        (
            "Requests sent",
            format!("{} ({}/s)", int(s.requests_sent), dec(s.achieved_rps)),
            "",
        ),
        ("429 answers", int(s.throttled_429), ""),
        ("Retries", int(s.retries), ""),
        ("Token refreshes", int(s.token_refreshes), ""),
        ("Rate", rate(s), ""),
        (
            "Exit code",
            format!("{}: {}", s.exit_code, meaning(exit)),
            severity(exit),
        ),
    ];
    if s.long_distance_delivery > 0 {
        // After "Rows finished": a fact about the rows, not the requests.
        rows.insert(
            8,
            ("Long-distance addresses", int(s.long_distance_delivery), ""),
        );
    }
    if let Some(e) = &s.fatal_error {
        rows.push(("Fatal error", escape(e), "bad"));
    }
    rows.push(("Tool version", escape(&s.tool_version), ""));
    let items: String = rows
        .into_iter()
        .map(|(k, v, class)| match class {
            "" => format!("<dt>{k}</dt><dd>{v}</dd>\n"),
            c => format!("<dt>{k}</dt><dd class=\"{c}\">{v}</dd>\n"),
        })
        .collect();
    format!("<dl id=\"facts\">\n{items}</dl>\n")
}

/// The rows read, and with `--shard` whose they are.
fn rows_read(s: &Summary) -> String {
    match &s.shard {
        Some(sh) => format!("{} (shard {} of {})", int(s.rows_read), sh.index, sh.count),
        None => int(s.rows_read),
    }
}

/// `<p id="next-step">`: what the exit code asks of the operator.
fn next_step(s: &Summary) -> String {
    let exit = Exit::from_code(s.exit_code);
    let text = match (exit.and_then(Exit::hint), exit) {
        (Some(hint), _) => escape(hint),
        (None, Some(Exit::Success)) => "nothing to do.".to_string(),
        (None, _) if s.fatal_error.is_some() => "see the fatal error above.".to_string(),
        (None, _) => "see the exit code above.".to_string(),
    };
    format!(
        "<p id=\"next-step\" class=\"{}\"><strong>Next step:</strong> {text}</p>\n",
        severity(exit)
    )
}

/// `message`, cut to [`MAX_MESSAGE_CHARS`] characters.
fn shorten(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    }
}

/// `<table id="top-errors">`, or a paragraph saying there were none.
fn top_errors(errors: &[ErrorGroup]) -> String {
    if errors.is_empty() {
        return "<p class=\"empty\">No errors.</p>\n".to_string();
    }
    let rows: String = errors
        .iter()
        .map(|g| {
            let first: Vec<String> = g.rows.iter().map(u64::to_string).collect();
            format!(
                "<tr><td class=\"message\">{}</td><td class=\"count\">{}</td><td class=\"rows\">{}</td></tr>\n",
                escape(&shorten(&g.message)),
                g.count,
                first.join(", ")
            )
        })
        .collect();
    format!(
        "<table id=\"top-errors\">\n<thead><tr><th>Message</th><th class=\"count\">Count</th><th>First rows</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{InputInfo, RateSummary};

    /// A plausible run of `n` seconds: an auto rate that climbs and backs
    /// off at 429s, a resume at `resume_at`, two token refreshes.
    fn timeline(n: u64, resume_at: Option<u64>) -> Vec<Second> {
        let mut out = Vec::new();
        let mut rate = 8.0_f64;
        for i in 0..n {
            let part = match resume_at {
                Some(r) if i >= r => 2,
                _ => 1,
            };
            if Some(i) == resume_at {
                rate = 8.0;
            }
            let wobble = ((i as f64) * 0.37).sin();
            let throttled = u64::from(rate > 30.0 && i % 11 == 0) * (1 + i % 3);
            rate = if throttled > 0 {
                rate * 0.7
            } else {
                (rate + 0.35).min(40.0)
            };
            let sent = (rate * (0.92 + 0.05 * wobble)).round() as u64;
            let retries = throttled;
            let done = sent.saturating_sub(retries);
            let fresh = Some(i) == resume_at;
            out.push(Second {
                second: i,
                unix_time: 1_750_000_000 + i as i64 + if part == 2 { 900 } else { 0 },
                part,
                sent: if fresh { 0 } else { sent },
                outcomes: [
                    done * 8 / 10,
                    done / 10,
                    u64::from(i % 37 == 5),
                    0,
                    u64::from(i % 53 == 9),
                    u64::from(i % 97 == 3),
                    0,
                    0,
                    done - done * 8 / 10 - done / 10,
                    0,
                ],
                throttled_429: throttled,
                retries,
                token_refreshes: u64::from(i == 100 || i == 240),
                rate: Some(rate),
                in_flight: (rate * 0.25 + 2.0 * wobble.abs()).round() as u64,
                latency_ms: (!fresh).then(|| {
                    [
                        60.0 + 15.0 * wobble,
                        140.0 + 40.0 * wobble.abs() + rate,
                        260.0 + 8.0 * rate + if throttled > 0 { 300.0 } else { 0.0 },
                    ]
                }),
                ceiling: (i > 60).then_some(41.0),
                noise_429: u64::from(i % 41 == 7),
            });
        }
        out
    }

    fn summary(t: &[Second]) -> Summary {
        let mut counts = std::collections::BTreeMap::new();
        for (k, name) in crate::report::timeline::STATUS_NAMES.iter().enumerate() {
            counts.insert(name.to_string(), t.iter().map(|s| s.outcomes[k]).sum());
        }
        let sum = |f: fn(&Second) -> u64| t.iter().map(f).sum::<u64>();
        let rows: u64 = counts.values().sum();
        let secs = t.len().max(1) as f64;
        Summary {
            tool_version: "0.1.0".into(),
            input: InputInfo {
                path: "/data/customers <nightly>.csv".into(),
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            },
            dry_run: false,
            shard: None,
            target: Some("connect.example (production)".into()),
            started: "2025-06-18T01:00:00Z".into(),
            finished: "2025-06-18T01:20:00Z".into(),
            elapsed_seconds: t.len() as f64,
            rows_read: rows,
            counts,
            long_distance_delivery: 0,
            requests_sent: sum(|s| s.sent),
            retries: sum(|s| s.retries),
            throttled_429: sum(|s| s.throttled_429),
            token_refreshes: sum(|s| s.token_refreshes),
            achieved_rps: sum(|s| s.sent) as f64 / secs,
            rows_per_second: rows as f64 / secs,
            rate: Some(RateSummary {
                mode: "auto".into(),
                final_per_second: 28.5,
                max_per_second: Some(40),
            }),
            interrupted: false,
            fatal_error: None,
            exit_code: 1,
        }
    }

    fn errors() -> Vec<ErrorGroup> {
        vec![
            ErrorGroup {
                message: "phone_number: not a valid E.164 number".into(),
                count: 7,
                rows: vec![12, 40, 41, 97, 130],
            },
            ErrorGroup {
                message: "HTTP 422: email <already> used & \"locked\"".into(),
                count: 3,
                rows: vec![5, 6, 300],
            },
            ErrorGroup {
                message: "=HYPERLINK(\"x\") 'quoted'".into(),
                count: 1,
                rows: vec![77],
            },
        ]
    }

    fn render_ok(s: &Summary, t: &[Second], e: &[ErrorGroup]) -> String {
        render(&Page {
            summary: s,
            timeline: t,
            errors: e,
        })
        .expect("renders")
    }

    /// The `<figure id="…">` element with that id, whole.
    fn figure<'h>(html: &'h str, id: &str) -> &'h str {
        let start = html
            .find(&format!("<figure id=\"{id}\""))
            .expect("figure present");
        let end = html[start..].find("</figure>").expect("figure closed");
        &html[start..start + end]
    }

    #[test]
    fn escape_handles_markup_and_quotes() {
        assert_eq!(escape("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn every_figure_holds_an_svg_chart() {
        let t = timeline(300, Some(150));
        let html = render_ok(&summary(&t), &t, &errors());
        for id in [
            "chart-outcomes",
            "chart-throughput",
            "chart-latency",
            "chart-inflight",
        ] {
            assert!(figure(&html, id).contains("<svg"), "{id} has no chart");
        }
        assert!(html.contains("<dl id=\"facts\">"));
        assert!(html.contains("<dd class=\"warn\">1: some rows need fixing</dd>"));
        assert!(html.contains(
            "<p id=\"next-step\" class=\"warn\"><strong>Next step:</strong> some rows need fixing"
        ));
        assert!(figure(&html, "chart-throughput").contains(">resumed"));
    }

    #[test]
    fn top_errors_list_counts_and_first_rows() {
        let t = timeline(10, None);
        let html = render_ok(&summary(&t), &t, &errors());
        assert_eq!(html.matches("<td class=\"message\">").count(), 3);
        assert!(html.contains(
            "<td class=\"message\">phone_number: not a valid E.164 number</td><td class=\"count\">7</td><td class=\"rows\">12, 40, 41, 97, 130</td>"
        ));
        assert!(html.contains(
            "<td class=\"message\">HTTP 422: email &lt;already&gt; used &amp; &quot;locked&quot;</td><td class=\"count\">3</td><td class=\"rows\">5, 6, 300</td>"
        ));
        let none = render_ok(&summary(&t), &t, &[]);
        assert!(!none.contains("id=\"top-errors\""));
        assert!(none.contains("<p class=\"empty\">No errors.</p>"));
    }

    #[test]
    fn data_is_escaped() {
        let t = timeline(10, None);
        let mut s = summary(&t);
        s.input.path = "<script>alert(1)</script>.csv".into();
        s.target = Some("a&b <img src=x>".into());
        s.fatal_error = Some("\"'><script>".into());
        let e = [ErrorGroup {
            message: "<script>&\"'".into(),
            count: 1,
            rows: vec![1],
        }];
        let html = render_ok(&s, &t, &e);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.csv"));
        assert!(html.contains("a&amp;b &lt;img src=x&gt;"));
        assert!(html.contains("<td class=\"message\">&lt;script&gt;&amp;&quot;&#39;</td>"));
    }

    #[test]
    fn nothing_is_loaded_from_outside() {
        let t = timeline(300, Some(150));
        let html = render_ok(&summary(&t), &t, &errors());
        for bad in [
            "<script", "src=", "href=", "url(", "@import", "<link", "<img",
        ] {
            assert!(!html.contains(bad), "found {bad}");
        }
        let http = html.matches("http://").count() + html.matches("https://").count();
        assert_eq!(
            http,
            html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
    }

    #[test]
    fn an_empty_timeline_says_so_and_the_bar_still_renders() {
        let mut s = summary(&[]);
        s.counts.clear();
        s.exit_code = 0;
        let html = render_ok(&s, &[], &[]);
        assert!(figure(&html, "chart-outcomes").contains("<svg"));
        assert!(figure(&html, "chart-outcomes").contains("no rows"));
        for id in charts::TIME_FIGURES {
            assert!(figure(&html, id).contains("no timeline"), "{id}");
            assert!(!figure(&html, id).contains("<svg"), "{id}");
        }
        assert!(html.contains("<strong>Next step:</strong> nothing to do."));
    }

    #[test]
    fn a_dry_run_has_no_latency_chart_but_renders() {
        let t: Vec<Second> = timeline(20, None)
            .into_iter()
            .map(|s| Second {
                sent: 0,
                rate: None,
                latency_ms: None,
                in_flight: 0,
                ..s
            })
            .collect();
        let mut s = summary(&t);
        (s.dry_run, s.target, s.rate, s.exit_code) = (true, None, None, 0);
        let html = render_ok(&s, &t, &[]);
        assert!(figure(&html, "chart-latency").contains("no latency"));
        assert!(figure(&html, "chart-throughput").contains("<svg"));
        assert!(html.contains("<dt>Target</dt><dd>dry run</dd>"));
    }

    #[test]
    fn odd_data_renders_without_panicking() {
        let odd = [
            Second {
                second: u64::MAX - 1,
                sent: u64::MAX,
                outcomes: [u64::MAX; 10],
                rate: Some(f64::INFINITY),
                latency_ms: Some([f64::NAN, 1.0, -5.0]),
                ..Second::default()
            },
            Second {
                second: 3,
                part: 7,
                throttled_429: u64::MAX,
                token_refreshes: u64::MAX,
                rate: Some(-1.0),
                in_flight: u64::MAX,
                ..Second::default()
            },
        ];
        let mut s = summary(&[]);
        s.counts.insert("someday-a-new-status".into(), u64::MAX);
        (s.elapsed_seconds, s.achieved_rps, s.exit_code) = (f64::NAN, f64::INFINITY, 200);
        for t in [&odd[..], &odd[..1], &odd[1..]] {
            let html = render_ok(&s, t, &[]);
            assert!(html.contains("200: unknown exit code"));
            assert!(html.contains("someday-a-new-status"));
        }
    }

    #[test]
    fn errors_are_sendable_for_anyhow() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<HtmlError>();
    }

    #[test]
    fn exit_codes_have_a_meaning() {
        let phrases: Vec<&str> = [0u8, 1, 2, 3, 75, 130, 9]
            .map(Exit::from_code)
            .map(meaning)
            .to_vec();
        assert_eq!(
            phrases,
            [
                "success",
                "some rows need fixing",
                "usage error",
                "fatal error during the run",
                "some rows failed transiently",
                "interrupted",
                "unknown exit code"
            ]
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(0), "0");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(dec(41.2), "41.2");
        assert_eq!(dec(40.0), "40");
        assert_eq!(dec(f64::NAN), "n/a");
        assert_eq!(elapsed(12.34), "12.3 s");
        assert_eq!(elapsed(125.0), "2 min 05 s");
        assert_eq!(elapsed(3723.0), "1 h 02 min 03 s");
        assert_eq!(
            shorten(&"é".repeat(MAX_MESSAGE_CHARS + 5)).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn a_three_hour_run_stays_small() {
        let t = timeline(11_000, Some(5_000));
        let html = render_ok(&summary(&t), &t, &errors());
        eprintln!("report.html for 11,000 seconds: {} bytes", html.len());
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        if let Ok(path) = std::env::var("REPORT_HTML_SAMPLE_LONG") {
            std::fs::write(path, &html).expect("sample written");
        }
    }

    /// Writes a sample page to `$REPORT_HTML_SAMPLE` when set, to look at.
    #[test]
    fn writes_a_sample_when_asked() {
        let t = timeline(300, Some(150));
        let html = render_ok(&summary(&t), &t, &errors());
        if let Ok(path) = std::env::var("REPORT_HTML_SAMPLE") {
            std::fs::write(path, html).expect("sample written");
        }
    }
}
