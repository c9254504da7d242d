//! Server-side SVG charts for the dashboard: pure functions from data to markup, so pages
//! work without JavaScript, print legibly in grayscale and load nothing from a CDN.

use std::fmt::Write as _;

/// Appends formatted markup; writing into a `String` cannot fail, so the result is dropped.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// One line of a line chart: a value per x label (None = no data that day, gap in the line).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) values: Vec<Option<f64>>,
}

const WIDTH: f64 = 640.0;
const INK: &str = "#222222";
const MUTED: &str = "#666666";
const GRID: &str = "#e6e6e6";
const NO_DATA: &str = "No data for this period";
/// Longer bar labels and legend names are cut, and kept whole in a hover title.
const LABEL_CHARS: usize = 28;
/// More x labels than this would overlap at the chart's width.
const MAX_X_LABELS: usize = 8;
const BAR_POSITIVE: &str = "#1d3557";
const BAR_NEGATIVE: &str = "#d1495b";
// Attributes of the chart's kinds of text; the classes are hooks for tests and page CSS.
const Y_TICK: &str = r#"class="y-tick" text-anchor="end""#;
const X_TICK: &str = r#"class="x-tick" text-anchor="middle""#;
const X_LABEL: &str = r#"class="x-label" text-anchor="middle""#;
const UNIT: &str = r#"class="unit" text-anchor="end""#;
const CENTRE: &str = r#"text-anchor="middle""#;
const NAME: &str = r##"text-anchor="end" fill="#222222""##;
const LEGEND: &str = r##"fill="#222222""##;

/// Colour, dash pattern, marker shape (drawn around 0,0) and whether the marker is hollow.
/// All four differ between neighbours, so series stay apart when printed without colour.
const STYLES: [(&str, &str, &str, bool); 5] = [
    (
        "#1d3557",
        "none",
        "M-3 0a3 3 0 1 0 6 0a3 3 0 1 0-6 0",
        false,
    ),
    ("#e8740c", "7 3", "M-3.5-3.5H3.5V3.5H-3.5Z", true),
    ("#2a9d8f", "2 3", "M0-4.5L4.5 3.5H-4.5Z", false),
    ("#7b3294", "9 3 2 3", "M0-5L5 0L0 5L-5 0Z", true),
    ("#555555", "4 4", "M-4-4L4 4M4-4L-4 4", true),
];

/// A line chart over days (or any ordered labels), several series, one y axis.
pub(crate) fn line_chart(
    title: &str,
    x_labels: &[String],
    series: &[Series],
    unit: &str,
) -> String {
    let n = x_labels.len();
    // Values beyond the labels have no x position; NaN and infinities are no data.
    let point = |s: &Series, i: usize| s.values.get(i).copied().flatten().filter(|v| v.is_finite());
    let values = series
        .iter()
        .flat_map(|s| (0..n).filter_map(move |i| point(s, i)));
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    // Amounts read best against a zero baseline; signed data keeps its own range.
    let Some((ticks, step)) = nice_ticks(min.min(0.0), max).filter(|_| min <= max) else {
        return no_data(title);
    };
    let (t0, t1) = (ticks[0], ticks[ticks.len() - 1]);
    let (left, right, top, bottom) = (56.0, WIDTH - 40.0, 44.0, 224.0);
    let x_at = |i: usize| match n {
        1 => (left + right) / 2.0,
        _ => left + (right - left) * i as f64 / (n - 1) as f64,
    };
    let y_at = |v: f64| bottom - (v - t0) / (t1 - t0) * (bottom - top);

    // The legend wraps onto more rows when names are long; the chart grows to fit.
    let mut legend = Vec::with_capacity(series.len());
    let (mut lx, mut ly) = (left, bottom + 40.0);
    for s in series {
        let w = 48.0 + 6.5 * s.name.chars().count().min(LABEL_CHARS) as f64;
        if lx > left && lx + w > WIDTH - 8.0 {
            (lx, ly) = (left, ly + 18.0);
        }
        legend.push((lx, ly));
        lx += w;
    }
    let content = format!("{x_labels:?}{series:?}{unit}");
    let mut out = open_svg(title, &content, "line", ly + 12.0);
    caption(&mut out, left - 6.0, unit);
    for &t in &ticks {
        let (y, label) = (y_at(t), fmt_compact(t, step));
        line(&mut out, (left, y), (right, y), GRID, "");
        text(&mut out, (left - 6.0, y), Y_TICK, &label);
    }
    line(&mut out, (left, top), (left, bottom), MUTED, "");
    line(&mut out, (left, bottom), (right, bottom), MUTED, "");
    for i in x_label_indices(n) {
        let at = (x_at(i), bottom + 16.0);
        text(&mut out, at, X_LABEL, &cut(&x_labels[i], 12));
    }

    for (si, s) in series.iter().enumerate() {
        let (color, dash, ..) = STYLES[si % STYLES.len()];
        put!(out, r#"<g class="series" data-series="{}">"#, esc(&s.name));
        // A None ends a run of points; a run of one shows as its marker alone.
        let pts: Vec<_> = (0..n)
            .map(|i| point(s, i).map(|v| (x_at(i), y_at(v))))
            .collect();
        for run in pts.split(Option::is_none).filter(|run| run.len() >= 2) {
            let d: String = (run.iter().flatten().enumerate())
                .map(|(k, (x, y))| format!("{}{} {}", if k == 0 { 'M' } else { 'L' }, c(*x), c(*y)))
                .collect();
            put!(
                out,
                r#"<path class="line" d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" stroke-dasharray="{dash}"/>"#
            );
        }
        for (i, label) in x_labels.iter().enumerate() {
            if let Some(v) = point(s, i) {
                let hover = esc(format!("{label}: {} {unit}", fmt_value(v)).trim_end());
                marker(&mut out, si, (x_at(i), y_at(v)), Some((v, &hover)));
            }
        }
        out.push_str("</g>");
    }

    out.push_str(r#"<g class="legend">"#);
    for (si, (s, &(x, y))) in series.iter().zip(&legend).enumerate() {
        let (color, dash, ..) = STYLES[si % STYLES.len()];
        let extra = format!(r#" stroke-width="2" stroke-dasharray="{dash}""#);
        line(&mut out, (x, y), (x + 24.0, y), color, &extra);
        marker(&mut out, si, (x + 12.0, y), None);
        let name = cut(&s.name, LABEL_CHARS);
        text(&mut out, (x + 30.0, y), LEGEND, &name);
    }
    out.push_str("</g></svg>");
    out
}

/// Horizontal bar chart: one bar per label, values may be negative (a zero line then sits
/// inside the plot). Bars whose value is NaN or infinite are left out.
pub(crate) fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str) -> String {
    let bars: Vec<&(String, f64)> = bars.iter().filter(|(_, v)| v.is_finite()).collect();
    // Bars grow from zero, so zero is always on the axis.
    let lo = bars.iter().fold(0.0_f64, |a, b| a.min(b.1));
    let hi = bars.iter().fold(0.0_f64, |a, b| a.max(b.1));
    let Some((ticks, step)) = nice_ticks(lo, hi).filter(|_| !bars.is_empty()) else {
        return no_data(title);
    };
    let (t0, t1) = (ticks[0], ticks[ticks.len() - 1]);
    // Labels sit left of the plot; gutters either side hold the values printed at bar ends.
    let label_x = 176.0;
    let left = label_x + if lo < 0.0 { 60.0 } else { 8.0 };
    let (right, top, row) = (WIDTH - 56.0, 44.0, 22.0);
    let bottom = top + 4.0 + row * bars.len() as f64;
    let x_at = |v: f64| round1(left + (v - t0) / (t1 - t0) * (right - left));
    let zero = x_at(0.0);

    let mut out = open_svg(title, &format!("{bars:?}{unit}"), "bar", bottom + 26.0);
    caption(&mut out, right, unit);
    for &t in &ticks {
        let (x, label) = (x_at(t), fmt_compact(t, step));
        line(&mut out, (x, top), (x, bottom), GRID, "");
        text(&mut out, (x, bottom + 14.0), X_TICK, &label);
    }
    let class = r#" class="zero""#;
    line(&mut out, (zero, top), (zero, bottom), MUTED, class);
    out.push_str(r#"<g class="bars">"#);
    for (i, (label, v)) in bars.iter().enumerate() {
        let (v, cy) = (*v, top + 2.0 + row * (i as f64 + 0.5));
        let (end, value) = (x_at(v), fmt_value(v));
        let (fill, value_x, anchor) = match v < 0.0 {
            true => (BAR_NEGATIVE, end - 4.0, "end"),
            false => (BAR_POSITIVE, end + 4.0, "start"),
        };
        text(&mut out, (label_x, cy), NAME, &cut(label, LABEL_CHARS));
        let hover = esc(format!("{label}: {value} {unit}").trim_end());
        let (x, y, w) = (c(end.min(zero)), c(cy - 7.0), c((end - zero).abs()));
        put!(
            out,
            r#"<rect x="{x}" y="{y}" width="{w}" height="14" fill="{fill}" data-value="{v}"><title>{hover}</title></rect>"#
        );
        let attrs = format!(r#"class="value" text-anchor="{anchor}" fill="{INK}""#);
        text(&mut out, (value_x, cy), &attrs, &value);
    }
    out.push_str("</g></svg>");
    out
}

/// The small chart shown when there is nothing to draw.
fn no_data(title: &str) -> String {
    let mut out = open_svg(title, "", "empty", 80.0);
    text(&mut out, (WIDTH / 2.0, 52.0), CENTRE, NO_DATA);
    out + "</svg>"
}

/// The `<svg>` element, its accessible `<title>` and the visible title. The id is a hash of
/// the content (FNV-1a, no per-process seed): stable across renders, distinct between charts.
fn open_svg(title: &str, content: &str, kind: &str, height: f64) -> String {
    let hash = (title.bytes().chain([0]).chain(content.bytes()))
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let (id, title, height) = (format!("chart-{hash:016x}"), esc(title), c(height));
    // Text defaults to the muted grey; everything else sets its own paint.
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" viewBox="0 0 640 {height}" width="100%" role="img" aria-labelledby="{id}" font-family="system-ui, sans-serif" font-size="11" fill="{MUTED}"><title id="{id}">{title}</title><text class="chart-title" x="8" y="16" font-size="12" font-weight="600" fill="{INK}">{title}</text>"#
    )
}

/// A `<text>` vertically centred on `at`; `body` is markup, already escaped.
fn text(out: &mut String, at: (f64, f64), attrs: &str, body: &str) {
    // The baseline sits about a third of the 11px font below the centre.
    let (x, y) = (c(at.0), c(at.1 + 3.5));
    put!(out, r#"<text x="{x}" y="{y}" {attrs}>{body}</text>"#);
}

/// A straight stroke from `a` to `b`; `extra` is further attributes, with a leading space.
fn line(out: &mut String, a: (f64, f64), b: (f64, f64), color: &str, extra: &str) {
    let d = format!("M{} {}L{} {}", c(a.0), c(a.1), c(b.0), c(b.1));
    put!(
        out,
        r#"<path d="{d}" fill="none" stroke="{color}"{extra}/>"#
    );
}

/// The unit, once, above the value axis's labels.
fn caption(out: &mut String, x: f64, unit: &str) {
    if !unit.is_empty() {
        text(out, (x, 32.0), UNIT, &esc(unit));
    }
}

/// Series `style`'s marker at `at`; data points carry their value and an escaped hover
/// text, legend samples neither.
fn marker(out: &mut String, style: usize, at: (f64, f64), value: Option<(f64, &str)>) {
    let (color, _, shape, hollow) = STYLES[style % STYLES.len()];
    let fill = if hollow { "#ffffff" } else { color };
    let (x, y) = (c(at.0), c(at.1));
    put!(
        out,
        r#"<path class="marker" d="{shape}" transform="translate({x} {y})" fill="{fill}" stroke="{color}" stroke-width="1.5""#
    );
    match value {
        Some((v, hover)) => put!(out, r#" data-value="{v}"><title>{hover}</title></path>"#),
        None => out.push_str("/>"),
    }
}

/// Ticks at a 1, 2 or 5 × 10^k step covering `lo..=hi` in 4 to 6 marks, and that step.
/// None when the range cannot be drawn (infinite, or too small for an f64 step).
fn nice_ticks(lo: f64, hi: f64) -> Option<(Vec<f64>, f64)> {
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    if hi - lo <= 1e-12 * hi.abs().max(lo.abs()) {
        // A flat series still needs a span: 0..1 for zeros, ±10% around anything else.
        let pad = lo.abs() * 0.1;
        lo = if pad > 0.0 { lo - pad } else { 0.0 };
        hi = if pad > 0.0 { hi + pad } else { 1.0 };
    }
    let span = hi - lo;
    let mut mag = 10f64.powf((span / 5.0).log10().floor());
    let mut pick = None;
    'search: for _ in 0..6 {
        for step in [mag, mag * 2.0, mag * 5.0] {
            // The epsilon keeps float noise (2.0000000001 steps) from adding a tick.
            let (a, b) = ((lo / step + 1e-9).floor(), (hi / step - 1e-9).ceil());
            if b - a <= 5.0 {
                pick = Some((a, b, step));
                break 'search;
            }
        }
        mag *= 10.0;
    }
    // NaN comparisons fail above, so a span that is infinite or underflows ends up here.
    let (a, mut b, step) = pick.filter(|&(a, b, s)| (a + b + s).is_finite() && s > 0.0)?;
    // A padded flat range can come out as two intervals, a bare-looking axis; add one on
    // top. Ranges that start at zero always get three or more, so zero stays the baseline.
    while b - a < 3.0 {
        b += 1.0;
    }
    // Adding 0.0 turns -0.0 into 0.0, so "-0" never shows up.
    let ticks = (0..=(b - a).round() as usize).map(|k| (a + k as f64) * step + 0.0);
    Some((ticks.collect(), step))
}

/// A tick label such as 0, 0.05, 1.2k or 3.4M, with just enough decimals that labels one
/// `step` apart still differ.
fn fmt_compact(v: f64, step: f64) -> String {
    let v = (v / step).round() * step;
    if v == 0.0 || !v.is_finite() {
        return "0".to_owned();
    }
    let (scale, suffix) = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(s, _)| v.abs() >= *s)
        .unwrap_or((1.0, ""));
    let scaled = step / scale;
    let decimals = match scaled < 1.0 {
        true => (-scaled.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize,
        false => 0,
    };
    let text = format!("{:.*}", decimals, v / scale);
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => &text,
    };
    format!("{text}{suffix}")
}

/// A data value to three significant digits, for bar ends and hover titles.
fn fmt_value(v: f64) -> String {
    fmt_compact(v, 10f64.powf(v.abs().log10().floor() - 2.0))
}

/// Which of `n` x labels to print: all when few, else evenly spaced, first and last always.
fn x_label_indices(n: usize) -> Vec<usize> {
    if n <= MAX_X_LABELS {
        return (0..n).collect();
    }
    let stride = (n - 1).div_ceil(MAX_X_LABELS - 1);
    let mut idx: Vec<usize> = (0..n).step_by(stride).collect();
    // A regular label crowding the last one gives way to it.
    if idx
        .last()
        .is_some_and(|&i| i != n - 1 && (n - 1 - i) * 4 < stride * 3)
    {
        idx.pop();
    }
    if idx.last() != Some(&(n - 1)) {
        idx.push(n - 1);
    }
    idx
}

/// Text safe in SVG content and attributes; control characters XML forbids are dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped and cut to `max` characters with an ellipsis; a cut text keeps the whole in
/// a hover `<title>`.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return esc(s);
    }
    let short: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("<title>{}</title>{}…", esc(s), esc(&short))
}

fn round1(x: f64) -> f64 {
    let r = (x * 10.0).round() / 10.0;
    if r.is_finite() { r + 0.0 } else { 0.0 }
}

/// A coordinate rounded to one decimal, without a trailing ".0".
fn c(x: f64) -> String {
    round1(x).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|d| format!("2026-04-{d:02}")).collect()
    }

    fn series(name: &str, values: &[Option<f64>]) -> Series {
        let (name, values) = (name.to_owned(), values.to_vec());
        Series { name, values }
    }

    /// The opening tag of each `<tag ...>` element in `svg`.
    fn elements<'a>(svg: &'a str, tag: &str) -> Vec<&'a str> {
        let open = format!("<{tag} ");
        let starts = svg.match_indices(&open).map(|(at, _)| &svg[at..]);
        let tag = |el: &'a str| &el[..el.find('>').expect("tag is closed")];
        starts.map(tag).collect()
    }

    fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
        let rest = &el[el.find(&format!(" {name}=\""))? + name.len() + 3..];
        Some(&rest[..rest.find('"').expect("attribute is closed")])
    }

    fn attrs<'a>(svg: &'a str, tag: &str, name: &str) -> Vec<&'a str> {
        let els = elements(svg, tag).into_iter();
        els.filter_map(|el| attr(el, name)).collect()
    }

    fn finite(svg: &str) -> bool {
        !svg.contains("NaN") && !svg.contains("inf")
    }

    #[test]
    fn nice_ticks_use_round_steps() {
        let cases: [(f64, f64, &[f64]); 5] = [
            (0.0, 97.0, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
            (0.0, 0.0, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (-30.0, 45.0, &[-40.0, -20.0, 0.0, 20.0, 40.0, 60.0]),
            (0.0, 1234.0, &[0.0, 500.0, 1000.0, 1500.0]),
            (-5.0, -5.0, &[-5.5, -5.0, -4.5, -4.0]),
        ];
        for (lo, hi, want) in cases {
            let (got, _) = nice_ticks(lo, hi).expect("drawable range");
            let close = got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-9);
            assert!(got.len() == want.len() && close, "{lo}..{hi}: {got:?}");
        }
        for (lo, hi) in [(0.0, f64::INFINITY), (f64::NAN, 1.0), (-f64::MAX, f64::MAX)] {
            assert!(nice_ticks(lo, hi).is_none(), "{lo}..{hi}");
        }
        // Whatever the range: 4 to 6 ticks at a 1-2-5 step, covering it, labelled distinctly.
        let ranges = [
            0.0, 0.013, 1.9, 4.1, 7.0, 7.0, -0.001, 0.002, 0.0, 3.3e9, -12.5, -0.5, 99.0, 101.0,
            0.0, 26.0, 0.0, 1e-7, -1e6, 1.0, 0.0, 1.0,
        ];
        for r in ranges.chunks(2) {
            let (ticks, step) = nice_ticks(r[0], r[1]).expect("drawable range");
            let covers = ticks[0] <= r[0] && ticks[ticks.len() - 1] >= r[1];
            assert!(covers && (4..=6).contains(&ticks.len()), "{r:?}: {ticks:?}");
            let mantissa = step / 10f64.powf(step.log10().floor());
            let nice = [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6);
            assert!(nice, "{r:?}: step {step}");
            let mut labels: Vec<String> = ticks.iter().map(|t| fmt_compact(*t, step)).collect();
            labels.dedup();
            assert_eq!(labels.len(), ticks.len(), "{r:?}: {labels:?}");
        }
    }

    #[test]
    fn compact_labels() {
        let values = [
            0.0,
            -0.0,
            0.05,
            0.30000000000000004,
            1200.0,
            1000.0,
            -1500.0,
            3.4e6,
        ];
        let steps = [0.05, 1.0, 0.05, 0.1, 200.0, 500.0, 500.0, 2e5];
        let want = ["0", "0", "0.05", "0.3", "1.2k", "1k", "-1.5k", "3.4M"];
        for ((v, step), want) in values.into_iter().zip(steps).zip(want) {
            assert_eq!(fmt_compact(v, step), want, "{v} by {step}");
        }
        assert_eq!(
            [2.5e9, 999.5].map(|v| fmt_compact(v, 0.5)),
            ["2.5B", "999.5"]
        );
        let values = [1234.56, -0.0523, 999_950.0, 0.0].map(fmt_value);
        assert_eq!(values, ["1.23k", "-0.0523", "1M", "0"]);
    }

    #[test]
    fn hostile_text_is_escaped() {
        let evil = r#"<script>alert("x&y")</script>'"#;
        let line = line_chart(evil, &[evil.into()], &[series(evil, &[Some(1.0)])], evil);
        let bar = bar_chart(evil, &[(evil.to_owned(), 3.0)], evil);
        for svg in [line, bar, line_chart(evil, &[], &[], evil)] {
            assert!(!svg.contains("<script") && !svg.contains("x&y") && !svg.contains("\")"));
            assert!(svg.contains("&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"));
        }
        assert_eq!(esc("a\u{0}b\tc"), "ab\tc");
    }

    #[test]
    fn empty_constant_and_single_point_inputs_stay_finite() {
        let line = |n: usize, values: &[Option<f64>]| {
            line_chart("Daily cost", &days(n), &[series("cost", values)], "EUR")
        };
        let bar = |v: f64| bar_chart("Daily cost", &[("a".to_owned(), v)], "EUR");
        let mut empty = vec![line(0, &[Some(1.0)]), line(3, &[None; 3])];
        empty.push(line_chart("Daily cost", &days(1), &[], "EUR"));
        empty.extend([line(1, &[Some(f64::NAN)]), bar(f64::INFINITY)]);
        empty.push(bar_chart("Daily cost", &[], "EUR"));
        for svg in empty {
            let titled = svg.contains(">Daily cost<") && !svg.contains("data-value");
            assert!(svg.contains(NO_DATA) && titled && finite(&svg), "{svg}");
        }
        let flat = |v: f64| line(4, &[Some(v); 4]);
        let mut drawn = vec![flat(0.0), flat(5.0), flat(-5.0), line(1, &[Some(4.0)])];
        drawn.extend([bar(0.0), bar(-3.0)]);
        for svg in drawn {
            assert!(finite(&svg) && !svg.contains(NO_DATA), "{svg}");
            let ticks = svg.matches("class=\"y-tick\"").count() + svg.matches("x-tick").count();
            assert!((4..=6).contains(&ticks), "{ticks} ticks in {svg}");
        }
        assert!(flat(0.0).contains(">0</text>") && flat(0.0).contains(">1</text>"));
        let zero_tick = r#"class="y-tick" text-anchor="end">0</text>"#;
        assert!(flat(5.0).contains(zero_tick), "a zero baseline");
        let lone = line(1, &[Some(4.0)]);
        let centre = format!("translate({} ", (56.0 + WIDTH - 40.0) / 2.0);
        let at = attrs(&lone, "path", "transform");
        assert!(at[0].starts_with(&centre), "{lone}");
    }

    #[test]
    fn none_makes_a_gap_and_each_value_one_point() {
        let (one, none) = (Some(1.0), None);
        let values = [one, one, none, one, one, none, Some(7.0)];
        let svg = line_chart("Cost", &days(7), &[series("c", &values)], "EUR");
        let paths = elements(&svg, "path").into_iter();
        let runs = paths.filter(|el| attr(el, "class") == Some("line"));
        let runs: Vec<&str> = runs.filter_map(|el| attr(el, "d")).collect();
        assert_eq!(runs.len(), 2, "two runs, the lone 7 unjoined: {runs:?}");
        let two_points = |d: &&str| d.matches('M').count() == 1 && d.matches('L').count() == 1;
        assert!(runs.iter().all(two_points), "{runs:?}");
        assert_eq!(attrs(&svg, "path", "data-value"), ["1", "1", "1", "1", "7"]);

        let a = series("cost", &[Some(1.0), None, Some(3.5), Some(2.0), None]);
        let b = [None, Some(2.0), Some(4.0), None, Some(f64::NAN), Some(9.0)];
        let svg = line_chart("Cost and billed", &days(5), &[a, series("billed", &b)], "");
        // The NaN and the sixth value (it has no label) are not data points.
        let values = attrs(&svg, "path", "data-value");
        assert!(
            finite(&svg) && values == ["1", "3.5", "2", "2", "4"],
            "{values:?}"
        );
        assert_eq!(attrs(&svg, "g", "data-series"), ["cost", "billed"]);
        let bars = (0..4).map(|i| (format!("t{i}"), f64::from(i) - 1.5));
        let svg = bar_chart("Margin", &bars.collect::<Vec<_>>(), "EUR");
        let values = attrs(&svg, "rect", "data-value");
        assert_eq!(values, ["-1.5", "-0.5", "0.5", "1.5"]);
    }

    #[test]
    fn negative_bars_sit_left_of_zero() {
        let bars = [("loss".to_owned(), -50.0), ("gain".to_owned(), 120.0)];
        let svg = bar_chart("Margin by tenant", &bars, "EUR");
        let paths = elements(&svg, "path").into_iter();
        let zero = paths
            .filter(|el| el.contains("\"zero\""))
            .find_map(|el| attr(el, "d"));
        let zero = zero
            .and_then(|d| d[1..].split(' ').next())
            .expect("zero line");
        let zero: f64 = zero.parse().expect("zero x");
        let num = |name| -> Vec<f64> {
            let values = attrs(&svg, "rect", name).into_iter();
            values.map(|v| v.parse().expect("a number")).collect()
        };
        let (xs, ws) = (num("x"), num("width"));
        let loss_ends_at_zero = ws[0] > 0.0 && (xs[0] + ws[0] - zero).abs() < 0.15;
        assert!(loss_ends_at_zero && xs[0] < zero, "{svg}");
        assert!(
            (xs[1] - zero).abs() < 0.15 && ws[1] > ws[0],
            "gain starts at zero"
        );
        assert_eq!(attrs(&svg, "rect", "fill"), [BAR_NEGATIVE, BAR_POSITIVE]);
        assert!(svg.contains(">-50</text>") && svg.contains(">120</text>"));
    }

    #[test]
    fn long_labels_are_cut_and_x_labels_thinned() {
        let long = "Acme Corporation International Holdings GmbH";
        let svg = bar_chart("Cost", &[(long.to_owned(), 10.0)], "EUR");
        let shown = "</title>Acme Corporation Internatio…</text>";
        assert!(svg.contains(shown), "{svg}");
        assert!(svg.contains(&format!("<title>{long}: 10 EUR</title></rect>")));
        for n in [1, 8, 9, 30, 31, 90, 365] {
            let idx = x_label_indices(n);
            assert!(idx.len() <= MAX_X_LABELS && idx.windows(2).all(|w| w[0] < w[1]));
            assert_eq!((idx[0], idx[idx.len() - 1]), (0, n - 1), "{n}: {idx:?}");
        }
        assert_eq!(x_label_indices(9), [0, 2, 4, 6, 8]);
        let svg = line_chart("Cost", &days(30), &[series("a", &[Some(1.0); 30])], "EUR");
        assert!(svg.contains(">2026-04-01<") && svg.contains(">2026-04-30<"));
        assert_eq!(svg.matches("class=\"x-label\"").count(), 7, "{svg}");
    }

    #[test]
    fn output_is_deterministic_styled_and_rounded() {
        let chart = |title: &str| {
            let s = (0..5).map(|k| series(&format!("s{k}"), &[Some(f64::from(k) / 7.0 + 0.1)]));
            line_chart(title, &days(1), &s.collect::<Vec<_>>(), "ms")
        };
        let svg = chart("Trend");
        assert_eq!(svg, chart("Trend"));
        let id = |svg: &str| attrs(svg, "svg", "aria-labelledby")[0].to_owned();
        assert_ne!(id(&svg), id(&chart("Trend 2")));
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.contains(&format!(r#"<title id="{}">Trend</title>"#, id(&svg))));
        assert_eq!(svg.matches(">ms</text>").count(), 1, "unit shown once");
        let legend = &svg[svg.find("class=\"legend\"").expect("legend")..];
        let dashes = attrs(legend, "path", "stroke-dasharray");
        assert_eq!(dashes, ["none", "7 3", "2 3", "9 3 2 3", "4 4"]);
        let shapes = attrs(legend, "path", "d").into_iter().skip(1).step_by(2);
        assert_eq!(shapes.collect::<Vec<_>>(), STYLES.map(|s| s.2));
        let coords = ["d", "transform"].map(|name| attrs(&svg, "path", name));
        for value in coords.concat().into_iter().chain(attrs(&svg, "text", "y")) {
            let mut parts = value.split(|ch: char| !(ch.is_ascii_digit() || ch == '.'));
            let ok = parts.all(|p| p.split('.').nth(1).is_none_or(|f| f.len() == 1));
            assert!(ok, "more than one decimal in {value}");
        }
    }
}
