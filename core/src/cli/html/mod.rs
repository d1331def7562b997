//! `blackbox report --html`: one self-contained page (inline CSS, SVG and a little JS; a
//! Content-Security-Policy forbids any fetch). Everything that comes from records is
//! escaped: nodeids, properties and paths are user input.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::json;

use super::table::{command_line, count, duration, local_time, plural, shorten_middle};
use crate::aggregate::{signal_name, FixtureStats, RunView, TestView};
use crate::history::{Strips, TestHistory};

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
const NOT_PASSED_SHOWN: usize = 500;
const SLOWEST_SHOWN: usize = 20;
/// Properties shown in a row of the failed-tests table.
const ROW_PROPS: usize = 12;
/// Failed and crashed tests whose recent outcomes the report looks up in history.redb, and
/// flaky tests it lists.
pub(crate) const HISTORY_TESTS: usize = 50;
/// Runs a strip of recent outcomes shows.
pub(crate) const HISTORY_RUNS: usize = 20;
/// Properties shown in a tooltip, and the longest value text.
const TIP_PROPS: usize = 24;
const TIP_VALUE_CHARS: usize = 300;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than whitespace have no business in a page.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside `<script type="application/json">`: no `<`, `>` or `&` can
/// end the element or open a comment.
fn script_json(v: &serde_json::Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Lanes sort as a person counts: `main`, `controller`, then `gw2` before `gw10`.
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

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "o-passed",
        "failed" => "o-failed",
        "error" => "o-error",
        "skipped" => "o-skipped",
        "crashed" | "timeout" => "o-crashed",
        "running" => "o-running",
        "unfinished" => "o-unfinished",
        _ => "o-other",
    }
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

/// What a test's duration column says: nothing measured when no phase was reported.
fn test_duration(t: &TestView) -> String {
    if t.phases.is_empty() {
        "-".into()
    } else {
        duration(t.duration_s)
    }
}

fn value_text(v: &crate::Value) -> String {
    let text = match (v, v.json_tagged()) {
        (crate::Value::Str(s), _) => s.clone(),
        // nan, inf, -inf and the digits of a big int: what Python would print.
        (_, Some((_, text))) => text.into_owned(),
        (other, None) => other.to_json().to_string(),
    };
    if text.chars().count() > TIP_VALUE_CHARS {
        let mut cut: String = text.chars().take(TIP_VALUE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// The tooltip data of one test (rendered with `textContent`, never as HTML).
fn tip(t: &TestView) -> serde_json::Value {
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

const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--panel:#f8f9fb;
--passed:#3fa66a;--failed:#e8833a;--error:#c2571a;--skipped:#a5adba;--crashed:#d92d20;
--running:#2e90fa;--unfinished:#9e77ed;--other:#667085}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:20px;margin:0 0 4px}
h1 code{font-size:18px}
h2{font-size:16px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:var(--muted);margin:2px 0;word-break:break-all}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0 0}
.chip{border-radius:12px;padding:2px 10px;background:var(--panel);border:1px solid var(--line);font-weight:600}
.chip i{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:6px;vertical-align:0}
.state{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:700;color:#fff;vertical-align:3px;margin-left:6px}
.state.live{background:var(--running)}.state.ok{background:var(--passed)}.state.bad{background:var(--crashed)}.state.none{background:var(--unfinished)}
.legend{display:flex;flex-wrap:wrap;gap:14px;color:var(--muted);font-size:12px;margin-bottom:6px}
.legend i{display:inline-block;width:12px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg{display:block;width:100%;height:auto}
.chart{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px 4px}
.lane-label{font-size:12px;fill:var(--fg);font-weight:600}
.lane-sub{font-size:10px;fill:var(--muted)}
.lane-bg{fill:#fff}
.tick{stroke:var(--line);stroke-width:1}
.tick-label{font-size:10px;fill:var(--muted)}
.bar{stroke:#fff;stroke-width:.6}
.bar:hover{stroke:var(--fg);stroke-width:1.5}
.o-passed{fill:var(--passed)}.o-failed{fill:var(--failed)}.o-error{fill:var(--error)}.o-skipped{fill:var(--skipped)}
.o-crashed{fill:var(--crashed)}.o-running{fill:var(--running)}.o-unfinished{fill:var(--unfinished)}.o-other{fill:var(--other)}
.crash-mark{fill:var(--crashed)}
.fbar{fill:#5b8def}.fbar.timed{fill:#9e77ed}
.flabel{font-size:12px;fill:var(--fg)}.fscope{font-size:10px;fill:var(--muted)}.fvalue{font-size:11px;fill:var(--muted)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:4px 8px}
td{border-bottom:1px solid var(--line);padding:4px 8px;vertical-align:top}
td.num{text-align:right;white-space:nowrap}
td.id{word-break:break-all}
.outcome{font-weight:700}
.outcome.o-crashed,.outcome.o-failed,.outcome.o-error{color:var(--crashed)}
.outcome.o-unfinished{color:var(--unfinished)}.outcome.o-running{color:var(--running)}
.empty{color:var(--muted);font-style:italic}
.problems li{color:var(--crashed);font-family:ui-monospace,monospace;font-size:12.5px;word-break:break-all}
#tip{position:fixed;z-index:10;max-width:520px;background:#101828;color:#f2f4f7;border-radius:6px;padding:8px 10px;
font-size:12px;line-height:1.4;box-shadow:0 4px 16px rgba(0,0,0,.25);pointer-events:none;word-break:break-all}
#tip .n{font-family:ui-monospace,monospace;font-weight:700;margin-bottom:4px}
#tip .k{color:#98a2b3}
#tip .o-crashed,#tip .o-failed,#tip .o-error{color:#fda29b}
footer{margin-top:32px;color:var(--muted);font-size:12px}
.props{margin:0;padding:0;list-style:none;font-size:12px}
.props li{word-break:break-all}.props b{font-weight:600;color:var(--muted)}
.strip{display:inline-flex;gap:2px;vertical-align:middle}
.strip i{display:inline-block;width:9px;height:14px;border-radius:2px;background:var(--line)}
.strip i.o-passed{background:var(--passed)}.strip i.o-failed{background:var(--failed)}.strip i.o-error{background:var(--error)}
.strip i.o-skipped{background:var(--skipped)}.strip i.o-crashed{background:var(--crashed)}.strip i.o-other{background:var(--other)}
.strip i.none{background:transparent;border:1px dashed var(--line)}
.crash{border:1px solid var(--line);border-left:4px solid var(--crashed);border-radius:6px;padding:8px 12px;margin:10px 0;background:var(--panel)}
.crash h3{font-size:14px;margin:0 0 4px;word-break:break-all}
.crash p{margin:2px 0}
pre.tb{margin:6px 0 0;padding:8px;background:#101828;color:#f2f4f7;border-radius:4px;overflow-x:auto;font-size:12px;line-height:1.4;white-space:pre}
details summary{cursor:pointer;color:var(--muted);font-size:12px;margin-top:4px}
"#;

const SCRIPT: &str = r#"
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bb-tests").textContent);
  var tip = document.getElementById("tip");
  var svg = document.getElementById("timeline-svg");
  if (!svg) { return; }
  function line(parent, key, value, cls) {
    var d = document.createElement("div");
    var k = document.createElement("span");
    k.className = "k";
    k.textContent = key + " ";
    var v = document.createElement("span");
    if (cls) { v.className = cls; }
    v.textContent = value;
    d.appendChild(k);
    d.appendChild(v);
    parent.appendChild(d);
  }
  function place(ev) {
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = ev.clientX + pad, y = ev.clientY + pad;
    if (x + w > window.innerWidth) { x = Math.max(0, ev.clientX - w - pad); }
    if (y + h > window.innerHeight) { y = Math.max(0, ev.clientY - h - pad); }
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function show(ev) {
    var t = ev.target;
    if (!t.classList || !t.classList.contains("bar")) { return; }
    var x = data[Number(t.getAttribute("data-i"))];
    if (!x) { return; }
    tip.replaceChildren();
    var n = document.createElement("div");
    n.className = "n";
    n.textContent = x.n;
    tip.appendChild(n);
    line(tip, "outcome", x.o + (x.s ? " (" + x.s + ")" : ""), "o-" + x.o);
    line(tip, "duration", x.d);
    if (x.w || x.p) { line(tip, "process", (x.w || "main") + (x.p ? " · pid " + x.p : "")); }
    if (x.ph) { line(tip, "phases", x.ph); }
    if (x.l) { line(tip, "last record", x.l); }
    for (var i = 0; i < x.pr.length; i++) { line(tip, x.pr[i][0] + " =", x.pr[i][1]); }
    if (x.more) { line(tip, "", "… " + x.more + " more properties"); }
    tip.hidden = false;
    place(ev);
  }
  svg.addEventListener("mouseover", show);
  svg.addEventListener("mousemove", function (ev) { if (!tip.hidden) { place(ev); } });
  svg.addEventListener("mouseout", function (ev) {
    if (ev.target.classList && ev.target.classList.contains("bar")) { tip.hidden = true; }
  });
})();
"#;

const LEGEND: [(&str, &str); 7] = [
    ("passed", "o-passed"),
    ("failed", "o-failed"),
    ("error", "o-error"),
    ("skipped", "o-skipped"),
    ("crashed", "o-crashed"),
    ("unfinished", "o-unfinished"),
    ("running", "o-running"),
];

/// The page for `view`. `now_mono_ns` ends the bars of tests still running; `history`
/// holds the recent outcomes (history.redb, up to this run) of its failed, crashed and
/// timed-out tests, and the tests flaky over those runs.
pub fn render(view: &RunView, now_mono_ns: u64, history: &Strips) -> String {
    let mut h = String::with_capacity(64 * 1024 + view.tests.len() * 160);
    let id = esc(&view.run.id);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>blackbox · run {id}</title><style>{STYLE}</style></head><body><main>\n"
    );
    header(&mut h, view);
    crashes(&mut h, view);
    timeline(&mut h, view, now_mono_ns);
    not_passed(&mut h, view, &history.tests);
    flaky(&mut h, view, &history.flaky);
    slowest(&mut h, view);
    fixtures(&mut h, view);
    if !view.problems.is_empty() {
        h.push_str("<section id=\"problems\"><h2>Damage</h2><p>Records before each damaged spot were read; run <code>blackbox check</code> for details.</p><ul class=\"problems\">");
        for p in &view.problems {
            let _ = write!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul></section>\n");
    }
    let _ = write!(
        h,
        "<footer>Written by blackbox {} from {} records in {} segments.</footer></main>\n\
         <div id=\"tip\" role=\"tooltip\" hidden></div>\n",
        env!("CARGO_PKG_VERSION"),
        count(view.records),
        count(view.segments as u64)
    );
    let data: Vec<serde_json::Value> = view.tests.iter().map(tip).collect();
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"bb-tests\">{}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        script_json(&serde_json::Value::Array(data))
    );
    h
}

fn header(h: &mut String, view: &RunView) {
    let r = &view.run;
    let (state, class) = if r.live {
        ("live".to_owned(), "live")
    } else {
        match r.exit_status {
            Some(0) => ("exit 0".to_owned(), "ok"),
            Some(c) => (format!("exit {c}"), "bad"),
            None => ("no end record".to_owned(), "none"),
        }
    };
    let _ = write!(
        h,
        "<header><h1>Run <code>{}</code><span class=\"state {class}\">{}</span></h1>",
        esc(&r.id),
        esc(&state)
    );
    let mut meta: Vec<String> = Vec::new();
    if let Some(host) = &r.host {
        meta.push(format!("host <b>{}</b>", esc(host)));
    }
    if let Some(start) = r.started_wall_ns {
        meta.push(format!("started {}", esc(&local_time(start))));
        if let Some(end) = r.ended_wall_ns {
            meta.push(format!(
                "took {}",
                esc(&duration(end.saturating_sub(start) as f64 / 1e9))
            ));
        }
    }
    meta.push(plural(view.segments as u64, "process", "processes"));
    meta.push(plural(view.records, "record", "records"));
    let _ = write!(h, "<p class=\"meta\">{}</p>", meta.join(" · "));
    if !r.argv.is_empty() {
        let _ = write!(
            h,
            "<p class=\"meta\"><code>{}</code></p>",
            esc(&command_line(&r.argv))
        );
    }
    if let Some(root) = &r.rootdir {
        let _ = write!(
            h,
            "<p class=\"meta\">rootdir <code>{}</code></p>",
            esc(root)
        );
    }
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &view.tests {
        *counts.entry(t.outcome.as_str()).or_default() += 1;
    }
    let _ = write!(
        h,
        "<div class=\"chips\"><span class=\"chip\">{}</span>",
        plural(view.tests.len() as u64, "test", "tests")
    );
    for (name, class) in LEGEND {
        if let Some(n) = counts.get(name) {
            let _ = write!(
                h,
                "<span class=\"chip\"><i class=\"{class}\" style=\"background:var(--{name})\"></i>{} {name}</span>",
                count(*n)
            );
        }
    }
    // Crashed tests have their chip above; a process that died outside any test has not.
    let between = view.crashes.iter().filter(|c| c.nodeid.is_none()).count() as u64;
    if between > 0 {
        let _ = write!(
            h,
            "<span class=\"chip\">{} between tests</span>",
            esc(&plural(between, "process died", "processes died"))
        );
    }
    h.push_str("</div></header>\n");
}

/// One lane per worker (or `main`): every test a bar from its start to its end, or to
/// its last record when it never ended.
fn timeline(h: &mut String, view: &RunView, now_mono_ns: u64) {
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

fn props_cell(t: &TestView) -> String {
    if t.properties.is_empty() {
        return "<span class=\"empty\">none</span>".into();
    }
    let mut out = String::from("<ul class=\"props\">");
    for (k, v) in t.properties.iter().take(ROW_PROPS) {
        let _ = write!(out, "<li><b>{}</b> = {}</li>", esc(k), esc(&value_text(v)));
    }
    if t.properties.len() > ROW_PROPS {
        let _ = write!(
            out,
            "<li class=\"empty\">… {}</li>",
            plural(
                (t.properties.len() - ROW_PROPS) as u64,
                "more property",
                "more properties"
            )
        );
    }
    out.push_str("</ul>");
    out
}

/// A strip of squares, oldest run first: the test's outcome in each of its recent runs.
fn strip(hist: Option<&TestHistory>) -> String {
    let Some(hist) = hist.filter(|h| !h.points.is_empty()) else {
        return "<span class=\"empty\">-</span>".into();
    };
    let mut out = String::from("<span class=\"strip\">");
    for p in hist.points.iter().rev() {
        let (class, what) = match p.outcome.as_deref() {
            Some(o) => (outcome_class(o).to_owned(), o.to_owned()),
            None => ("none".to_owned(), "did not run".to_owned()),
        };
        let _ = write!(
            out,
            "<i class=\"{class}\" title=\"{}: {}\"></i>",
            esc(&p.run_id),
            esc(&what)
        );
    }
    let _ = write!(
        out,
        "</span> <span class=\"meta\">{} of {}</span>",
        count(hist.failures() as u64),
        plural(hist.ran() as u64, "run", "runs")
    );
    out
}

fn not_passed(h: &mut String, view: &RunView, history: &HashMap<String, TestHistory>) {
    let rank = |o: &str| match o {
        "crashed" | "timeout" => 0,
        "unfinished" => 1,
        "running" => 2,
        "failed" | "error" => 3,
        _ => 9,
    };
    let mut bad: Vec<&TestView> = view.tests.iter().filter(|t| rank(&t.outcome) < 9).collect();
    if bad.is_empty() {
        return;
    }
    bad.sort_by(|a, b| {
        rank(&a.outcome)
            .cmp(&rank(&b.outcome))
            .then_with(|| b.duration_s.total_cmp(&a.duration_s))
    });
    let n = bad.len();
    let _ = write!(h, "<section id=\"not-passed\"><h2>Crashed, unfinished and failed ({})</h2><table><thead><tr><th>Outcome</th><th>Duration</th><th>Worker</th><th>PID</th><th>Test</th><th>Properties</th><th>Recent runs</th></tr></thead><tbody>", count(n as u64));
    for t in bad.into_iter().take(NOT_PASSED_SHOWN) {
        let outcome = match t.signal {
            Some(s) => format!("{} ({})", t.outcome, signal_name(s)),
            None => t.outcome.clone(),
        };
        let _ = write!(
            h,
            "<tr><td class=\"outcome {}\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"id mono\">{}</td><td class=\"mono\">{}</td><td class=\"hist\">{}</td></tr>",
            outcome_class(&t.outcome),
            esc(&outcome),
            esc(&test_duration(t)),
            esc(t.worker.as_deref().unwrap_or("main")),
            t.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            esc(&t.nodeid),
            props_cell(t),
            strip(history.get(&t.nodeid)),
        );
    }
    h.push_str("</tbody></table>");
    if n > NOT_PASSED_SHOWN {
        let _ = write!(h, "<p class=\"meta\">{NOT_PASSED_SHOWN} of {} shown; <code>blackbox tests --outcome crashed,unfinished,failed,error</code> lists all.</p>", count(n as u64));
    }
    h.push_str("</section>\n");
}

/// The tests flaky over the runs up to this one (those that passed this run included), each
/// with its strip.
fn flaky(h: &mut String, view: &RunView, flaky: &[TestHistory]) {
    if flaky.is_empty() {
        return;
    }
    let runs = flaky.iter().map(|t| t.points.len()).max().unwrap_or(0);
    let _ = write!(
        h,
        "<section id=\"flaky\"><h2>Flaky over the last {} ({})</h2><p class=\"meta\">Tests that both passed and failed (or crashed, or timed out) in those runs of history.redb; <code>blackbox flaky</code> lists them.</p><table><thead><tr><th>This run</th><th>Flips</th><th>Test</th><th>Recent runs</th></tr></thead><tbody>",
        plural(runs as u64, "run", "runs"),
        count(flaky.len() as u64)
    );
    for t in flaky.iter().take(HISTORY_TESTS) {
        let now = view
            .tests
            .iter()
            .find(|v| v.nodeid == t.nodeid)
            .map_or("not run", |v| v.outcome.as_str());
        let _ = write!(
            h,
            "<tr><td class=\"outcome {}\">{}</td><td class=\"num\">{}</td><td class=\"id mono\">{}</td><td class=\"hist\">{}</td></tr>",
            outcome_class(now),
            esc(now),
            t.flips(),
            esc(&t.nodeid),
            strip(Some(t)),
        );
    }
    h.push_str("</tbody></table>");
    if flaky.len() > HISTORY_TESTS {
        let _ = write!(
            h,
            "<p class=\"meta\">{HISTORY_TESTS} of {} shown.</p>",
            count(flaky.len() as u64)
        );
    }
    h.push_str("</section>\n");
}

/// The nodeids of the failed, crashed and timed-out tests whose history the report shows.
pub(crate) fn history_wanted(view: &RunView) -> Vec<&str> {
    let mut bad: Vec<&TestView> = view
        .tests
        .iter()
        .filter(|t| {
            matches!(
                t.outcome.as_str(),
                "crashed" | "timeout" | "failed" | "error"
            )
        })
        .collect();
    bad.sort_by_key(|t| u8::from(!matches!(t.outcome.as_str(), "crashed" | "timeout")));
    bad.into_iter()
        .take(HISTORY_TESTS)
        .map(|t| t.nodeid.as_str())
        .collect()
}

fn slowest(h: &mut String, view: &RunView) {
    if view.tests.is_empty() {
        return;
    }
    let mut slow: Vec<&TestView> = view.tests.iter().collect();
    let by = |a: &&TestView, b: &&TestView| {
        b.duration_s
            .total_cmp(&a.duration_s)
            .then_with(|| a.nodeid.cmp(&b.nodeid))
    };
    if slow.len() > SLOWEST_SHOWN {
        slow.select_nth_unstable_by(SLOWEST_SHOWN, by);
        slow.truncate(SLOWEST_SHOWN);
    }
    slow.sort_by(by);
    let _ = write!(
        h,
        "<section id=\"slowest\"><h2>Slowest tests ({} of {})</h2><table><thead><tr><th>Duration</th><th>Outcome</th><th>Worker</th><th>Phases</th><th>Test</th></tr></thead><tbody>",
        count(slow.len() as u64),
        count(view.tests.len() as u64)
    );
    for t in slow {
        let phases: Vec<String> = t
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase.as_str(), duration(p.duration_s)))
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td class=\"outcome {}\">{}</td><td>{}</td><td>{}</td><td class=\"id mono\">{}</td></tr>",
            esc(&test_duration(t)),
            outcome_class(&t.outcome),
            esc(&t.outcome),
            esc(t.worker.as_deref().unwrap_or("main")),
            esc(&phases.join(" · ")),
            esc(&t.nodeid)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn fixtures(h: &mut String, view: &RunView) {
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

/// Every crash with what happened and the end of its traceback, the whole of it folded.
fn crashes(h: &mut String, view: &RunView) {
    if view.crashes.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"crashes\"><h2>Crashes ({})</h2>",
        count(view.crashes.len() as u64)
    );
    for c in &view.crashes {
        let mut facts = vec![
            format!(
                "<b class=\"outcome o-crashed\">{}</b>",
                esc(&match (c.cause(), c.exit_code) {
                    (Some(cause), _) => cause,
                    (None, Some(code)) => format!("exit status {code}"),
                    (None, None) => "no signal".into(),
                })
            ),
            format!("worker {}", esc(c.worker.as_deref().unwrap_or("main"))),
        ];
        if let Some(pid) = c.pid {
            facts.push(format!("pid {pid}"));
        }
        // The accelerators the process was given.
        for (k, v) in &c.devices {
            facts.push(format!("<span class=\"mono\">{}={}</span>", esc(k), esc(v)));
        }
        if let Some(p) = &c.phase {
            facts.push(format!("in {}", esc(p)));
        }
        let _ = write!(
            h,
            "<div class=\"crash\"><h3 class=\"mono\">{}</h3><p>{}</p><p>{}</p>",
            esc(c.nodeid.as_deref().unwrap_or("(between tests)")),
            facts.join(" · "),
            esc(&super::crash_text::crash_sentence(c))
        );
        if let Some(tb) = super::crash_text::traceback(c, false) {
            let mut shown = tb.lines.join("\n");
            if tb.hidden > 0 {
                let _ = write!(
                    shown,
                    "\n  … {}",
                    plural(tb.hidden as u64, "more frame", "more frames")
                );
            }
            let _ = write!(h, "<pre class=\"tb\">{}</pre>", esc(&shown));
            if let Some(full) = super::crash_text::traceback(c, true) {
                let _ = write!(
                    h,
                    "<details><summary>whole traceback ({})</summary><pre class=\"tb\">{}</pre></details>",
                    esc(&tb.path),
                    esc(&full.lines.join("\n"))
                );
            }
        } else {
            h.push_str("<p class=\"empty\">No Python traceback was written.</p>");
        }
        h.push_str("</div>");
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_no_script_end() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        let j = script_json(&json!({"n": "</script><script>alert(1)</script>"}));
        assert!(!j.contains('<') && !j.contains('>'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&j).unwrap()["n"],
            "</script><script>alert(1)</script>"
        );
    }

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
