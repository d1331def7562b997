//! The page's two SVG charts, the timeline of tests on their workers (with each bar's
//! tooltip data) and the fixture chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use super::super::text::{count, duration, plural, shorten_middle};
use super::markup::{esc, outcome_class, test_duration, value_text, LEGEND};
use crate::aggregate::{signal_name, FixtureStats, RunView, TestView};

/// The timeline's and the fixture chart's coordinate width (the SVG scales to the page).
const CHART_W: f64 = 1200.0;

const LABEL_W: f64 = 150.0;

const PLOT_X: f64 = LABEL_W + 10.0;

const PLOT_W: f64 = CHART_W - PLOT_X - 20.0;

const AXIS_H: f64 = 26.0;

const LANE_H: f64 = 26.0;

const BAR_H: f64 = 16.0;

/// A test shorter than this still shows as a sliver.
const MIN_BAR_W: f64 = 1.5;

const FIXTURES_SHOWN: usize = 20;

/// Properties shown in a tooltip.
const TIP_PROPS: usize = 24;

fn lane_key(id: &str) -> (u8, String, u64) {
    let rank = match id {
        "main" => 0,
        "controller" => 1,
        _ => 2,
    };
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = id.split_at(id.len() - digits);
    (rank, stem.to_owned(), num.parse().unwrap_or(0))
}

/// A step of 1, 2 or 5 times a power of ten, giving about `n` ticks over `span`.
fn tick_step(span_ns: f64, n: f64) -> f64 {
    let raw = (span_ns / n).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// `2s`, `2.5s`, `500ms`: a duration without the zeros a tick does not need.
fn tick_label(seconds: f64) -> String {
    let d = duration(seconds);
    let unit_at = d
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .unwrap_or(d.len());
    let (num, unit) = d.split_at(unit_at);
    if num.contains('.') && matches!(unit, "s" | "ms" | "µs" | "ns") {
        return format!("{}{unit}", num.trim_end_matches('0').trim_end_matches('.'));
    }
    d
}

/// The tooltip data of one test (rendered with `textContent`, never as HTML).
pub(crate) fn tip(t: &TestView) -> serde_json::Value {
    let phases: Vec<String> = t
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p.phase.as_str(),
                p.outcome,
                duration(p.duration_s)
            )
        })
        .collect();
    let props: Vec<[String; 2]> = t
        .properties
        .iter()
        .take(TIP_PROPS)
        .map(|(k, v)| [k.clone(), value_text(v)])
        .collect();
    // A test that never ended: how long after its start its process last wrote.
    let last = (t.end_mono_ns.is_none() && t.last_mono_ns > t.start_mono_ns).then(|| {
        format!(
            "+{} after its start",
            duration((t.last_mono_ns - t.start_mono_ns) as f64 / 1e9)
        )
    });
    json!({
        "n": t.nodeid,
        "o": t.outcome,
        "d": test_duration(t),
        "l": last,
        "w": t.worker,
        "p": t.pid,
        "s": t.signal.map(signal_name),
        "ph": phases.join(" · "),
        "pr": props,
        "more": t.properties.len().saturating_sub(TIP_PROPS),
    })
}

/// One lane per worker (or `main`): every test a bar from its start to its end, or to
/// its last record when it never ended.
pub(crate) fn timeline(h: &mut String, view: &RunView, now_mono_ns: u64) {
    h.push_str("<section id=\"timeline\"><h2>Timeline</h2>");
    if view.tests.is_empty() {
        h.push_str("<p class=\"empty\">No test was recorded in this run.</p></section>\n");
        return;
    }
    h.push_str("<div class=\"legend\">");
    for (name, class) in LEGEND {
        let _ = write!(
            h,
            "<span><i class=\"{class}\" style=\"background:var(--{name})\"></i>{name}</span>"
        );
    }
    h.push_str("<span>hover a bar for the test, its outcome, duration and properties</span></div>");

    let end_of = |t: &TestView| -> u64 {
        let end = match (t.end_mono_ns, t.outcome.as_str()) {
            (Some(e), _) => e,
            (None, "running") => now_mono_ns.max(t.last_mono_ns),
            (None, _) => t.last_mono_ns,
        };
        end.max(t.start_mono_ns)
    };
    let t0 = view
        .tests
        .iter()
        .map(|t| t.start_mono_ns)
        .min()
        .unwrap_or(0);
    let t1 = view.tests.iter().map(end_of).max().unwrap_or(t0);
    let span = ((t1 - t0) as f64).max(1e6);
    let x_of = |ns: u64| PLOT_X + (ns.saturating_sub(t0) as f64 / span) * PLOT_W;

    let mut lanes: BTreeMap<(u8, String, u64), (String, Vec<usize>)> = BTreeMap::new();
    for (i, t) in view.tests.iter().enumerate() {
        let lane = t.worker.clone().unwrap_or_else(|| "main".into());
        lanes
            .entry(lane_key(&lane))
            .or_insert_with(|| (lane, Vec::new()))
            .1
            .push(i);
    }
    let height = AXIS_H + LANE_H * lanes.len() as f64 + 6.0;
    let _ = write!(
        h,
        "<div class=\"chart\"><svg id=\"timeline-svg\" viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"timeline of {} tests\">",
        view.tests.len()
    );
    // Time axis.
    let step = tick_step(span, 8.0);
    let mut tick = 0.0;
    while tick * step <= span + 0.5 {
        let tick_x = PLOT_X + tick * step / span * PLOT_W;
        let _ = write!(
            h,
            "<line class=\"tick\" x1=\"{tick_x:.1}\" y1=\"{:.1}\" x2=\"{tick_x:.1}\" y2=\"{height:.1}\"/><text class=\"tick-label\" x=\"{tick_x:.1}\" y=\"12\" text-anchor=\"middle\">{}</text>",
            AXIS_H - 8.0,
            esc(&tick_label(tick * step / 1e9))
        );
        tick += 1.0;
    }
    for (row, (lane, tests)) in lanes.values().enumerate() {
        let y = AXIS_H + LANE_H * row as f64;
        let _ = write!(
            h,
            "<rect class=\"lane-bg\" x=\"{PLOT_X}\" y=\"{y:.1}\" width=\"{PLOT_W}\" height=\"{:.1}\"/>",
            LANE_H - 2.0
        );
        let worker = view.workers.iter().find(|w| &w.id == lane);
        let pids: Vec<u32> = worker.map(|w| w.pids.clone()).unwrap_or_default();
        let forked = worker.map_or(0, |w| w.forked);
        let sub = match pids.as_slice() {
            [] => String::new(),
            _ if forked > 0 => format!("{forked} forked"),
            [one] => format!("pid {one}"),
            [first, rest @ ..] => format!("pid {first} +{}", rest.len()),
        };
        let _ = write!(
            h,
            "<text class=\"lane-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text class=\"lane-sub\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 58.0,
            y + 16.0,
            esc(&shorten_middle(lane, 14)),
            LABEL_W,
            y + 16.0,
            esc(&sub)
        );
        let bar_y = y + (LANE_H - 2.0 - BAR_H) / 2.0;
        for &index in tests {
            let test = &view.tests[index];
            let bar_x = x_of(test.start_mono_ns);
            let bar_w = (x_of(end_of(test)) - bar_x).max(MIN_BAR_W);
            let _ = write!(
                h,
                "<rect class=\"bar {}\" data-i=\"{index}\" x=\"{bar_x:.2}\" y=\"{bar_y:.1}\" width=\"{bar_w:.2}\" height=\"{BAR_H}\" rx=\"1.5\"/>",
                outcome_class(&test.outcome)
            );
            if test.crashed {
                // A red marker above where the process died, visible even on a sliver.
                let _ = write!(
                    h,
                    "<path class=\"crash-mark\" d=\"M{:.2} {:.1} l-4 -6 h8 z\"/>",
                    bar_x + bar_w,
                    bar_y - 0.5
                );
            }
        }
    }
    h.push_str("</svg></div>");
    let _ = writeln!(
        h,
        "<p class=\"meta\">Time since the first test started; {} (one per xdist worker, or <code>main</code>; a worker's forked children run on its lane).</p></section>",
        plural(lanes.len() as u64, "lane", "lanes")
    );
}

pub(crate) fn fixtures(h: &mut String, view: &RunView) {
    h.push_str("<section id=\"fixtures\"><h2>Slowest fixtures</h2>");
    let test_time = crate::stock::test_time(view);
    let mut all: Vec<(&FixtureStats, bool)> = view
        .fixtures
        .iter()
        .filter(|f| crate::stock::is_shown(f, test_time, false))
        .map(|f| (f, false))
        .chain(view.timed.iter().map(|f| (f, true)))
        .collect();
    if all.is_empty() {
        h.push_str("<p class=\"empty\">No fixture timings were recorded (pytest's own fixtures are left out: <code>blackbox fixtures --all</code> lists them).</p></section>\n");
        return;
    }
    all.sort_by(|a, b| {
        b.0.total_s
            .total_cmp(&a.0.total_s)
            .then_with(|| a.0.name.cmp(&b.0.name))
    });
    let n = all.len();
    all.truncate(FIXTURES_SHOWN);
    let max = all
        .iter()
        .map(|(f, _)| f.total_s)
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let row_h = 24.0;
    let label_w = 300.0;
    let bar_x = label_w + 10.0;
    let bar_w = CHART_W - bar_x - 330.0;
    let height = row_h * all.len() as f64 + 8.0;
    let _ = write!(
        h,
        "<div class=\"chart\"><svg id=\"fixtures-svg\" viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"slowest fixtures\">"
    );
    for (row, (f, timed)) in all.iter().enumerate() {
        let y = 4.0 + row_h * row as f64;
        let w = (f.total_s / max * bar_w).max(1.0);
        let value = format!(
            "{} · {}× · mean {} · max {}",
            duration(f.total_s),
            count(f.setups),
            duration(f.mean_s),
            duration(f.max_s)
        );
        let _ = write!(
            h,
            "<g><title>{name} ({scope}): {value}</title>\
             <text class=\"flabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{short} <tspan class=\"fscope\">{scope}</tspan></text>\
             <rect class=\"fbar{}\" x=\"{bar_x}\" y=\"{:.1}\" width=\"{w:.2}\" height=\"16\" rx=\"2\"/>\
             <text class=\"fvalue\" x=\"{:.1}\" y=\"{:.1}\">{value}</text></g>",
            label_w,
            y + 13.0,
            if *timed { " timed" } else { "" },
            y,
            bar_x + w + 6.0,
            y + 12.5,
            name = esc(&f.name),
            scope = esc(&f.scope),
            short = esc(&shorten_middle(&f.name, 40)),
            value = esc(&value),
        );
    }
    h.push_str("</svg></div>");
    if n > FIXTURES_SHOWN {
        let _ = write!(
            h,
            "<p class=\"meta\">{FIXTURES_SHOWN} of {} shown; <code>blackbox fixtures</code> lists all.</p>",
            count(n as u64)
        );
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_count_like_people() {
        let mut ids = ["gw10", "gw2", "main", "controller", "gw0"];
        ids.sort_by_key(|s| lane_key(s));
        assert_eq!(ids, ["main", "controller", "gw0", "gw2", "gw10"]);
        assert!((tick_step(10e9, 8.0) - 2e9).abs() < 1.0);
        assert!((tick_step(7e6, 8.0) - 1e6).abs() < 1e-3);
        let ticks: Vec<String> = [0.0, 2.0, 2.5, 0.5, 0.0125, 90.0]
            .into_iter()
            .map(tick_label)
            .collect();
        assert_eq!(ticks, ["0s", "2s", "2.5s", "500ms", "12.5ms", "1m30s"]);
    }
}
