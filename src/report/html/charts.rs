//! The figures of report.html: the outcome bar and the three time charts,
//! drawn with plotters' SVG backend into strings that the page inlines.
//!
//! plotters is built without its `ttf`/`ab_glyph` features, so it lays text
//! out with its naive font backend (a width estimate from the character
//! count, no font files, no fontconfig) and the SVG backend writes each label
//! as an escaped `<text>` element that the browser renders with its own
//! fonts. Timelines longer than [`MAX_POINTS`] seconds are aggregated into
//! buckets first ([`downsample`]), which keeps a 3-hour run's page small.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{HtmlError, escape, int};
use crate::report::timeline::Second;

/// Most points a time chart draws; longer timelines are bucketed.
pub(super) const MAX_POINTS: usize = 600;
/// Size of a time chart, in SVG pixels.
const CHART: (u32, u32) = (900, 260);
/// Size of the outcome bar, in SVG pixels.
const BAR: (u32, u32) = (900, 40);
/// Runs longer than this many seconds get an x axis in minutes.
const MINUTES_AFTER: u64 = 900;
/// Narrowest segment of the outcome bar, so a single row stays visible.
const MIN_SEGMENT: i32 = 3;

const SENT: RGBColor = RGBColor(0x1e, 0x88, 0xe5);
const FINISHED: RGBColor = RGBColor(0x2e, 0x7d, 0x32);
const RATE: RGBColor = RGBColor(0x6a, 0x1b, 0x9a);
const THROTTLED: RGBColor = RGBColor(0xd3, 0x2f, 0x2f);
const P50: RGBColor = RGBColor(0x1e, 0x88, 0xe5);
const P95: RGBColor = RGBColor(0xef, 0x6c, 0x00);
const P99: RGBColor = RGBColor(0xc6, 0x28, 0x28);
const IN_FLIGHT: RGBColor = RGBColor(0x00, 0x89, 0x7b);
const REFRESH: RGBColor = RGBColor(0x8e, 0x24, 0xaa);
const RESUME: RGBColor = RGBColor(0x61, 0x61, 0x61);
const CEILING: RGBColor = RGBColor(0xad, 0x14, 0x57);
const NOISE: RGBColor = RGBColor(0xf9, 0xa8, 0x25);
const GRID: RGBColor = RGBColor(0xe6, 0xe8, 0xeb);
const AXIS: RGBColor = RGBColor(0x9a, 0xa0, 0xa6);
const LABEL: RGBColor = RGBColor(0x44, 0x4c, 0x56);

/// The statuses in the order the outcome bar stacks them: good, neutral,
/// then what needs attention.
const BAR_ORDER: [&str; 10] = [
    "created",
    "updated",
    "exists",
    "changed",
    "unchanged",
    "duplicate",
    "valid",
    "failed",
    "rejected",
    "invalid",
];

/// Ids of the time figures, in page order.
pub(super) const TIME_FIGURES: [&str; 3] = ["chart-throughput", "chart-latency", "chart-inflight"];

type DrawResult<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;
type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The fixed colour of a status (a neutral one for a name this version does
/// not know).
pub(super) fn status_color(name: &str) -> RGBColor {
    match name {
        "created" => RGBColor(0x2e, 0x7d, 0x32),
        "exists" => RGBColor(0x81, 0xc7, 0x84),
        "updated" => RGBColor(0x66, 0xbb, 0x6a),
        "duplicate" => RGBColor(0x75, 0x75, 0x75),
        "unchanged" => RGBColor(0xbd, 0xbd, 0xbd),
        "changed" => RGBColor(0xff, 0xca, 0x28),
        "failed" => RGBColor(0xef, 0x6c, 0x00),
        "invalid" => RGBColor(0xc6, 0x28, 0x28),
        "rejected" => RGBColor(0xe5, 0x73, 0x73),
        "valid" => RGBColor(0x1e, 0x88, 0xe5),
        _ => RGBColor(0x90, 0xa4, 0xae),
    }
}

/// `#rrggbb` for CSS.
fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Render `draw` into a standalone `<svg>` element of `size` pixels.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> DrawResult<()>) -> DrawResult<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    Ok(buf)
}

/// Turns a plotters error into this module's, naming the chart.
fn chart_err(
    chart: &'static str,
) -> impl FnOnce(DrawingAreaErrorKind<std::io::Error>) -> HtmlError {
    move |source| HtmlError::Chart { chart, source }
}

/// The style of axis labels and chart notes (plotters sizes are 1.24× the
/// CSS pixel size it writes).
fn label_style() -> TextStyle<'static> {
    TextStyle::from(("sans-serif", 15).into_font()).color(&LABEL)
}

// ---------------------------------------------------------------- outcomes

/// One status in the outcome bar.
struct Segment {
    name: String,
    count: u64,
    color: RGBColor,
}

/// The non-zero statuses of `counts` in [`BAR_ORDER`], then any others.
fn segments(counts: &BTreeMap<String, u64>) -> Vec<Segment> {
    let known = BAR_ORDER
        .iter()
        .map(|n| (*n, counts.get(*n).copied().unwrap_or(0)));
    let unknown = counts
        .iter()
        .filter(|(k, _)| !BAR_ORDER.contains(&k.as_str()))
        .map(|(k, n)| (k.as_str(), *n));
    known
        .chain(unknown)
        .filter(|(_, n)| *n > 0)
        .map(|(name, count)| Segment {
            name: name.to_string(),
            count,
            color: status_color(name),
        })
        .collect()
}

/// Pixel widths of the bar's segments: proportional, each at least
/// [`MIN_SEGMENT`] wide, summing to `width` (the widest absorbs rounding).
pub(super) fn bar_widths(counts: &[u64], width: i32) -> Vec<i32> {
    let total = counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    if total == 0 || counts.is_empty() {
        return vec![0; counts.len()];
    }
    let mut widths: Vec<i32> = counts
        .iter()
        .map(|n| ((*n as f64 / total as f64) * f64::from(width)).round() as i32)
        .map(|w| w.max(MIN_SEGMENT))
        .collect();
    let sum: i32 = widths.iter().sum();
    if let Some(widest) = widths.iter_mut().max_by_key(|w| **w) {
        *widest = (*widest + width - sum).max(MIN_SEGMENT);
    }
    widths
}

/// `45%`, `4.5%`, `<0.1%`.
fn percent(n: u64, total: u64) -> String {
    let p = n as f64 * 100.0 / total.max(1) as f64;
    match p {
        p if p >= 10.0 => format!("{p:.0}%"),
        p if p >= 0.1 => format!("{p:.1}%"),
        _ => "<0.1%".to_string(),
    }
}

/// Whether dark text reads better than white on `c`.
fn is_light(c: RGBColor) -> bool {
    0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2) > 160.0
}

/// Draw the stacked bar; a grey "no rows" bar when nothing was counted.
fn draw_bar(root: &Area<'_>, segs: &[Segment]) -> DrawResult<()> {
    let (w, h) = root.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let centre = Pos::new(HPos::Center, VPos::Center);
    if segs.is_empty() {
        root.draw(&Rectangle::new([(0, 2), (w, h - 2)], GRID.filled()))?;
        let style = label_style().pos(centre);
        return root.draw(&Text::new("no rows", (w / 2, h / 2), style));
    }
    let counts: Vec<u64> = segs.iter().map(|s| s.count).collect();
    let total = counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    let mut x = 0;
    for (s, sw) in segs.iter().zip(bar_widths(&counts, w)) {
        root.draw(&Rectangle::new([(x, 2), (x + sw, h - 2)], s.color.filled()))?;
        let pct = percent(s.count, total);
        let text_color = if is_light(s.color) { LABEL } else { WHITE };
        let style = label_style().color(&text_color).pos(centre);
        // Labels only where they fit (about 7 px per character).
        let label = [format!("{} {pct}", s.name), pct]
            .into_iter()
            .find(|t| (t.chars().count() as i32) * 7 + 12 <= sw);
        if let Some(label) = label {
            root.draw(&Text::new(label, (x + sw / 2, h / 2), style))?;
        }
        x += sw;
    }
    Ok(())
}

/// `<figure id="chart-outcomes">`: the stacked bar and its legend.
pub(super) fn outcomes_figure(counts: &BTreeMap<String, u64>) -> Result<String, HtmlError> {
    let segs = segments(counts);
    let svg = svg(BAR, |root| draw_bar(root, &segs)).map_err(chart_err("outcomes"))?;
    let keys: Vec<Key> = segs
        .iter()
        .map(|s| Key {
            shape: Shape::Block,
            color: s.color,
            label: format!("{} <b>{}</b>", escape(&s.name), int(s.count)),
        })
        .collect();
    let legend = if keys.is_empty() {
        "<p class=\"empty\">no rows recorded</p>".to_string()
    } else {
        legend(&keys)
    };
    Ok(format!(
        "<figure id=\"chart-outcomes\">\n{svg}<figcaption>{legend}</figcaption>\n</figure>\n"
    ))
}

// ---------------------------------------------------------------- buckets

/// Consecutive seconds of the timeline, aggregated.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Bucket {
    /// First second.
    pub(super) first: u64,
    /// Last second.
    pub(super) last: u64,
    /// Seconds aggregated.
    pub(super) len: u64,
    /// Requests sent (sum).
    pub(super) sent: u64,
    /// Rows recorded, all statuses (sum).
    pub(super) finished: u64,
    /// 429 answers (sum).
    pub(super) throttled: u64,
    /// Token refreshes (sum).
    pub(super) refreshes: u64,
    /// The limiter's rate (mean of the seconds that had one).
    pub(super) rate: Option<f64>,
    /// Requests in flight (max).
    pub(super) in_flight: u64,
    /// `--rate auto`'s ceiling (the lowest in the bucket).
    pub(super) ceiling: Option<f64>,
    /// 429s the controller took for noise (sum).
    pub(super) noise: u64,
    /// p50, p95, p99 latency in ms (max of each; `None` if no second had one).
    pub(super) latency: Option<[f64; 3]>,
}

impl Bucket {
    /// Aggregate `seconds` (not empty).
    fn of(seconds: &[Second]) -> Bucket {
        let mut b = Bucket {
            first: seconds.first().map_or(0, |s| s.second),
            last: seconds.last().map_or(0, |s| s.second),
            len: seconds.len() as u64,
            ..Bucket::default()
        };
        let (mut rate_sum, mut rate_n) = (0.0, 0u32);
        for s in seconds {
            b.sent = b.sent.saturating_add(s.sent);
            let rows = s.outcomes.iter().fold(0u64, |a, n| a.saturating_add(*n));
            b.finished = b.finished.saturating_add(rows);
            b.throttled = b.throttled.saturating_add(s.throttled_429);
            b.refreshes = b.refreshes.saturating_add(s.token_refreshes);
            b.in_flight = b.in_flight.max(s.in_flight);
            b.noise = b.noise.saturating_add(s.noise_429);
            if let Some(c) = s.ceiling.filter(|c| c.is_finite() && *c >= 0.0) {
                b.ceiling = Some(b.ceiling.map_or(c, |m: f64| m.min(c)));
            }
            if let Some(r) = s.rate.filter(|r| r.is_finite() && *r >= 0.0) {
                rate_sum += r;
                rate_n += 1;
            }
            if let Some(l) = s.latency_ms.filter(|l| l.iter().all(|v| v.is_finite())) {
                let m = b.latency.unwrap_or([0.0; 3]);
                b.latency = Some([m[0].max(l[0]), m[1].max(l[1]), m[2].max(l[2])]);
            }
        }
        b.rate = (rate_n > 0).then(|| rate_sum / f64::from(rate_n));
        b
    }

    /// `n` (a sum over the bucket) per second.
    pub(super) fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.len.max(1) as f64
    }

    /// The middle of the bucket, in seconds of the run.
    fn mid(&self) -> f64 {
        (self.first as f64 + self.last as f64 + 1.0) / 2.0
    }
}

/// At most `max` buckets of consecutive seconds, all of the same number of
/// seconds but the last.
pub(super) fn downsample(timeline: &[Second], max: usize) -> Vec<Bucket> {
    let width = timeline.len().div_ceil(max.max(1)).max(1);
    timeline.chunks(width).map(Bucket::of).collect()
}

// ---------------------------------------------------------------- time charts

/// The x axis of the time charts.
struct XAxis {
    /// Seconds per unit (1 or 60).
    scale: f64,
    min: f64,
    max: f64,
    desc: &'static str,
}

/// What the time charts draw.
struct Data {
    buckets: Vec<Bucket>,
    axis: XAxis,
    /// Where a resumed part starts, in axis units.
    resumes: Vec<f64>,
    /// Seconds per bucket (1 when not downsampled).
    width: u64,
}

impl Data {
    /// Bucket `timeline` (not empty) and lay out its axis.
    fn new(timeline: &[Second]) -> Data {
        let buckets = downsample(timeline, MAX_POINTS);
        let first = timeline.first().map_or(0, |s| s.second);
        let last = timeline.last().map_or(0, |s| s.second);
        let (scale, desc) = if last.saturating_sub(first) > MINUTES_AFTER {
            (60.0, "run time (min)")
        } else {
            (1.0, "run time (s)")
        };
        let (min, max) = (first as f64 / scale, (last as f64 + 1.0) / scale);
        let resumes = timeline
            .windows(2)
            .filter(|w| w[0].part != w[1].part)
            .map(|w| w[1].second as f64 / scale)
            .collect();
        Data {
            width: buckets.first().map_or(1, |b| b.len),
            buckets,
            axis: XAxis {
                scale,
                min,
                max,
                desc,
            },
            resumes,
        }
    }

    /// The x of a bucket, in axis units.
    fn x(&self, b: &Bucket) -> f64 {
        b.mid() / self.axis.scale
    }

    /// `(x, f(bucket))` for each bucket.
    fn points<'s>(
        &'s self,
        f: impl Fn(&Bucket) -> Option<f64> + 's,
    ) -> impl Iterator<Item = (f64, Option<f64>)> + 's {
        self.buckets.iter().map(move |b| (self.x(b), f(b)))
    }
}

/// The top of a y axis showing `values`: a little above the largest, at
/// least 1.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// A tick label: no decimals for whole numbers, one otherwise.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The axes and grid of a time chart.
fn frame<'a, 'b>(
    root: &'a Area<'b>,
    d: &Data,
    y_max: f64,
    y_desc: &str,
) -> DrawResult<Chart<'a, 'b>> {
    let x_max = if d.axis.max > d.axis.min {
        d.axis.max
    } else {
        d.axis.min + 1.0
    };
    let mut chart = ChartBuilder::on(root)
        .margin_top(14)
        .margin_left(6)
        .margin_right(22)
        .margin_bottom(4)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(d.axis.min..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .label_style(label_style())
        .axis_desc_style(label_style())
        .x_desc(d.axis.desc)
        .y_desc(y_desc)
        .x_labels(12)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()?;
    Ok(chart)
}

/// A line through the `Some` points, broken where a point is `None`; a lone
/// point is drawn as a dot.
fn draw_line(
    chart: &mut Chart<'_, '_>,
    points: impl Iterator<Item = (f64, Option<f64>)>,
    color: RGBColor,
) -> DrawResult<()> {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (x, y) in points {
        match (y.filter(|v| v.is_finite()), runs.last_mut()) {
            (Some(y), Some(run)) => run.push((x, y)),
            (None, Some(run)) if !run.is_empty() => runs.push(Vec::new()),
            _ => {}
        }
    }
    for run in runs.into_iter().filter(|r| !r.is_empty()) {
        if let [p] = run[..] {
            chart.draw_series(std::iter::once(Circle::new(p, 2, color.filled())))?;
        } else {
            chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
        }
    }
    Ok(())
}

/// A dashed vertical line, labelled, where each resumed part starts.
fn draw_resumes(chart: &mut Chart<'_, '_>, d: &Data, y_max: f64) -> DrawResult<()> {
    for &x in &d.resumes {
        let line = DashedPathElement::new(vec![(x, 0.0), (x, y_max)], 5, 4, RESUME.stroke_width(1));
        chart.draw_series(std::iter::once(line))?;
        let note = EmptyElement::at((x, y_max)) + Text::new("resumed", (5, 2), label_style());
        chart.draw_series(std::iter::once(note))?;
    }
    Ok(())
}

/// Requests sent and rows finished per second, the limiter's rate, 429s.
fn draw_throughput(root: &Area<'_>, d: &Data) -> DrawResult<()> {
    let b = &d.buckets;
    let y_max = y_top(b.iter().flat_map(|k| {
        let rate = k.rate.unwrap_or(0.0);
        [
            k.per_second(k.sent),
            k.per_second(k.finished),
            k.per_second(k.throttled),
            rate,
            k.ceiling.unwrap_or(0.0),
        ]
    }));
    let mut chart = frame(root, d, y_max, "per second")?;
    let sent = b.iter().map(|k| (d.x(k), k.per_second(k.sent)));
    chart.draw_series(
        AreaSeries::new(sent, 0.0, SENT.mix(0.15).filled()).border_style(SENT.stroke_width(2)),
    )?;
    draw_line(
        &mut chart,
        d.points(|k| Some(k.per_second(k.finished))),
        FINISHED,
    )?;
    draw_line(&mut chart, d.points(|k| k.rate), RATE)?;
    draw_ceiling(&mut chart, d)?;
    let dot = if d.width > 1 { 2 } else { 3 };
    let throttled = b.iter().filter(|k| k.throttled > 0);
    chart.draw_series(
        throttled
            .map(|k| Circle::new((d.x(k), k.per_second(k.throttled)), dot, THROTTLED.filled())),
    )?;
    // 429s the controller ignored as noise: a ring around the 429 dot.
    let noise = b.iter().filter(|k| k.noise > 0);
    chart.draw_series(noise.map(|k| {
        Circle::new(
            (d.x(k), k.per_second(k.noise)),
            dot + 2,
            NOISE.stroke_width(2),
        )
    }))?;
    draw_resumes(&mut chart, d, y_max)
}

/// `--rate auto`'s ceiling: a dashed step line where one was in force.
fn draw_ceiling(chart: &mut Chart<'_, '_>, d: &Data) -> DrawResult<()> {
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut runs = Vec::new();
    for k in &d.buckets {
        match k.ceiling.filter(|c| c.is_finite()) {
            Some(c) => run.push((d.x(k), c)),
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    runs.push(run);
    for run in runs.into_iter().filter(|r| !r.is_empty()) {
        let path = if let [p] = run[..] {
            vec![p, (p.0 + 0.5, p.1)]
        } else {
            run
        };
        chart.draw_series(std::iter::once(DashedPathElement::new(
            path,
            4,
            3,
            CEILING.stroke_width(2),
        )))?;
    }
    Ok(())
}

/// p50, p95 and p99 latency lines.
fn draw_latency(root: &Area<'_>, d: &Data) -> DrawResult<()> {
    let y_max = y_top(d.buckets.iter().filter_map(|k| k.latency).flatten());
    let mut chart = frame(root, d, y_max, "latency (ms)")?;
    for (i, color) in [P50, P95, P99].into_iter().enumerate() {
        draw_line(
            &mut chart,
            d.points(move |k| k.latency.map(|l| l[i])),
            color,
        )?;
    }
    draw_resumes(&mut chart, d, y_max)
}

/// Requests in flight, with a marker at the top for each token refresh.
fn draw_inflight(root: &Area<'_>, d: &Data) -> DrawResult<()> {
    let y_max = y_top(d.buckets.iter().map(|k| k.in_flight as f64)) * 1.08;
    let mut chart = frame(root, d, y_max, "requests in flight")?;
    draw_line(
        &mut chart,
        d.points(|k| Some(k.in_flight as f64)),
        IN_FLIGHT,
    )?;
    let refreshes = d.buckets.iter().filter(|k| k.refreshes > 0);
    let top = y_max * 0.96;
    chart
        .draw_series(refreshes.map(|k| TriangleMarker::new((d.x(k), top), 6, REFRESH.filled())))?;
    draw_resumes(&mut chart, d, y_max)
}

/// The look of a legend entry.
enum Shape {
    Block,
    Line,
    Dot,
    Triangle,
    Dash,
}

/// A legend entry; `label` is HTML (already escaped).
struct Key {
    shape: Shape,
    color: RGBColor,
    label: String,
}

impl Key {
    fn new(shape: Shape, color: RGBColor, label: impl Into<String>) -> Key {
        Key {
            shape,
            color,
            label: label.into(),
        }
    }
}

/// A legend as an HTML list.
fn legend(keys: &[Key]) -> String {
    let items: String = keys
        .iter()
        .map(|k| {
            let class = match k.shape {
                Shape::Block => "block",
                Shape::Line => "line",
                Shape::Dot => "dot",
                Shape::Triangle => "tri",
                Shape::Dash => "dash",
            };
            let c = hex(k.color);
            format!(
                "<li><i class=\"key {class}\" style=\"color:{c}\"></i>{}</li>",
                k.label
            )
        })
        .collect();
    format!("<ul class=\"legend\">{items}</ul>")
}

/// A note on how the points were aggregated, or nothing.
fn bucket_note(d: &Data, how: &str) -> String {
    if d.width > 1 {
        format!(
            "<p class=\"note\">Each point: {how} over {} seconds.</p>",
            d.width
        )
    } else {
        String::new()
    }
}

/// A time figure: its chart, legend and note.
fn figure(id: &str, svg: &str, keys: &[Key], note: &str) -> String {
    format!(
        "<figure id=\"{id}\">\n{svg}<figcaption>{}{note}</figcaption>\n</figure>\n",
        legend(keys)
    )
}

/// A figure with only a message in it.
fn empty_figure(id: &str, message: &str) -> String {
    format!("<figure id=\"{id}\"><p class=\"empty\">{message}</p></figure>\n")
}

/// `<figure id="chart-throughput">`.
fn throughput_figure(d: &Data) -> Result<String, HtmlError> {
    let svg = svg(CHART, |root| draw_throughput(root, d)).map_err(chart_err("throughput"))?;
    let mut keys = vec![
        Key::new(Shape::Block, SENT, "requests sent/s"),
        Key::new(Shape::Line, FINISHED, "rows finished/s"),
    ];
    if d.buckets.iter().any(|b| b.rate.is_some()) {
        keys.push(Key::new(Shape::Line, RATE, "limiter rate"));
    }
    if d.buckets.iter().any(|b| b.ceiling.is_some()) {
        keys.push(Key::new(
            Shape::Dash,
            CEILING,
            "ceiling (--rate auto: the rate last pushed back)",
        ));
    }
    let throttled = d
        .buckets
        .iter()
        .fold(0u64, |a, b| a.saturating_add(b.throttled));
    if throttled > 0 {
        keys.push(Key::new(
            Shape::Dot,
            THROTTLED,
            format!("429 answers/s ({} in all)", int(throttled)),
        ));
    }
    let noise = d
        .buckets
        .iter()
        .fold(0u64, |a, b| a.saturating_add(b.noise));
    if noise > 0 {
        keys.push(Key::new(
            Shape::Dot,
            NOISE,
            format!("429s taken for noise/s ({} in all, no cut)", int(noise)),
        ));
    }
    if !d.resumes.is_empty() {
        keys.push(Key::new(Shape::Dash, RESUME, "resumed"));
    }
    Ok(figure(
        "chart-throughput",
        &svg,
        &keys,
        &bucket_note(d, "mean per second"),
    ))
}

/// `<figure id="chart-latency">`; a message when no request was answered.
fn latency_figure(d: &Data) -> Result<String, HtmlError> {
    if d.buckets.iter().all(|b| b.latency.is_none()) {
        return Ok(empty_figure(
            "chart-latency",
            "no latency: no request was answered",
        ));
    }
    let svg = svg(CHART, |root| draw_latency(root, d)).map_err(chart_err("latency"))?;
    let keys = [
        Key::new(Shape::Line, P50, "p50"),
        Key::new(Shape::Line, P95, "p95"),
        Key::new(Shape::Line, P99, "p99"),
    ];
    Ok(figure(
        "chart-latency",
        &svg,
        &keys,
        &bucket_note(d, "the highest"),
    ))
}

/// `<figure id="chart-inflight">`.
fn inflight_figure(d: &Data) -> Result<String, HtmlError> {
    let svg = svg(CHART, |root| draw_inflight(root, d)).map_err(chart_err("in-flight"))?;
    let refreshes = d
        .buckets
        .iter()
        .fold(0u64, |a, b| a.saturating_add(b.refreshes));
    let mut keys = vec![Key::new(Shape::Line, IN_FLIGHT, "requests in flight")];
    if refreshes > 0 {
        keys.push(Key::new(
            Shape::Triangle,
            REFRESH,
            format!("token refresh ({} in all)", int(refreshes)),
        ));
    }
    Ok(figure(
        "chart-inflight",
        &svg,
        &keys,
        &bucket_note(d, "the highest"),
    ))
}

/// The three time figures in [`TIME_FIGURES`] order; each says "no
/// timeline" when `timeline` is empty.
pub(super) fn time_figures(timeline: &[Second]) -> Result<[String; 3], HtmlError> {
    if timeline.is_empty() {
        return Ok(TIME_FIGURES.map(|id| empty_figure(id, "no timeline")));
    }
    let d = Data::new(timeline);
    Ok([
        throughput_figure(&d)?,
        latency_figure(&d)?,
        inflight_figure(&d)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::timeline::STATUS_NAMES;

    fn second(i: u64) -> Second {
        Second {
            second: i,
            part: 1,
            sent: i % 7,
            outcomes: [i % 3, 1, 0, 0, 0, i % 2, 0, 0, 0, 0],
            throttled_429: u64::from(i.is_multiple_of(50)),
            token_refreshes: u64::from(i.is_multiple_of(1000)),
            rate: Some(10.0 + (i % 5) as f64),
            in_flight: i % 13,
            latency_ms: (!i.is_multiple_of(4)).then_some([
                i as f64,
                2.0 * i as f64,
                3.0 * i as f64,
            ]),
            ..Second::default()
        }
    }

    #[test]
    fn downsampling_bounds_points_and_keeps_sums() {
        for n in [0u64, 1, 599, 600, 601, 11_000, 11_001] {
            let t: Vec<Second> = (0..n).map(second).collect();
            let b = downsample(&t, MAX_POINTS);
            assert!(
                b.len() <= MAX_POINTS,
                "{n} seconds gave {} buckets",
                b.len()
            );
            assert_eq!(b.iter().map(|k| k.len).sum::<u64>(), n);
            let sum = |f: fn(&Second) -> u64| t.iter().map(f).sum::<u64>();
            assert_eq!(b.iter().map(|k| k.sent).sum::<u64>(), sum(|s| s.sent));
            assert_eq!(
                b.iter().map(|k| k.throttled).sum::<u64>(),
                sum(|s| s.throttled_429)
            );
            assert_eq!(
                b.iter().map(|k| k.refreshes).sum::<u64>(),
                sum(|s| s.token_refreshes)
            );
            let rows = |s: &Second| s.outcomes.iter().sum::<u64>();
            assert_eq!(b.iter().map(|k| k.finished).sum::<u64>(), sum(rows));
            let per_second_total: f64 = b.iter().map(|k| k.per_second(k.sent) * k.len as f64).sum();
            assert!((per_second_total - sum(|s| s.sent) as f64).abs() < 1e-6);
            assert_eq!(
                b.iter().map(|k| k.in_flight).max(),
                t.iter().map(|s| s.in_flight).max()
            );
        }
        let short: Vec<Second> = (0..300).map(second).collect();
        assert!(downsample(&short, MAX_POINTS).iter().all(|k| k.len == 1));
    }

    #[test]
    fn buckets_take_max_latency_and_mean_rate() {
        let t: Vec<Second> = (1..=4).map(second).collect();
        let b = downsample(&t, 1);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].latency, Some([3.0, 6.0, 9.0]));
        assert_eq!(b[0].rate, Some((11.0 + 12.0 + 13.0 + 14.0) / 4.0));
        assert_eq!((b[0].first, b[0].last), (1, 4));
        let none = [Second {
            rate: Some(f64::NAN),
            latency_ms: Some([f64::NAN; 3]),
            ..Second::default()
        }];
        let b = downsample(&none, MAX_POINTS);
        assert_eq!((b[0].rate, b[0].latency), (None, None));
    }

    #[test]
    fn bar_widths_fill_the_bar_and_keep_small_segments_visible() {
        let w = bar_widths(&[1_000_000, 1, 500_000], 900);
        assert_eq!(w.iter().sum::<i32>(), 900);
        assert!(w.iter().all(|x| *x >= MIN_SEGMENT));
        assert_eq!(bar_widths(&[5], 900), vec![900]);
        assert_eq!(bar_widths(&[], 900), Vec::<i32>::new());
    }

    #[test]
    fn bar_order_is_a_permutation_of_the_statuses() {
        let mut a = BAR_ORDER.to_vec();
        let mut b = STATUS_NAMES.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn labels_are_svg_text_elements() {
        let t: Vec<Second> = (0..300).map(second).collect();
        let [throughput, ..] = time_figures(&t).expect("charts render");
        assert!(throughput.contains("<svg"));
        // Axis title and tick labels are SVG text, not paths.
        assert!(throughput.contains(">\nrun time (s)\n</text>"));
        assert!(throughput.contains(">\n150\n</text>"));
        assert!(throughput.matches("<text").count() > 10);
        let long: Vec<Second> = (0..11_000).map(second).collect();
        let [throughput, ..] = time_figures(&long).expect("charts render");
        assert!(throughput.contains("run time (min)"));
    }
}
