//! The page's sections other than its charts: the header, the crashes, the tests that did
//! not pass (with their recent outcomes), the flaky ones, the slowest.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::super::text::{command_line, count, duration, local_time, plural};
use super::markup::{esc, outcome_class, test_duration, value_text, LEGEND};
use crate::aggregate::{signal_name, RunView, TestView};
use crate::history::TestHistory;

const NOT_PASSED_SHOWN: usize = 500;

const SLOWEST_SHOWN: usize = 20;

/// Properties shown in a row of the failed-tests table.
const ROW_PROPS: usize = 12;

/// Failed and crashed tests whose recent outcomes the report looks up in history.redb, and
/// flaky tests it lists.
const HISTORY_TESTS: usize = 50;

/// Runs a strip of recent outcomes shows.
pub(crate) const HISTORY_RUNS: usize = 20;

pub(crate) fn header(h: &mut String, view: &RunView) {
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

pub(crate) fn not_passed(h: &mut String, view: &RunView, history: &HashMap<String, TestHistory>) {
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
pub(crate) fn flaky(h: &mut String, view: &RunView, flaky: &[TestHistory]) {
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

pub(crate) fn slowest(h: &mut String, view: &RunView) {
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

/// Every crash with what happened and the end of its traceback, the whole of it folded.
pub(crate) fn crashes(h: &mut String, view: &RunView) {
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
            esc(&super::super::crash_text::crash_sentence(c))
        );
        if let Some(tb) = super::super::crash_text::traceback(c, false) {
            let mut shown = tb.lines.join("\n");
            if tb.hidden > 0 {
                let _ = write!(
                    shown,
                    "\n  … {}",
                    plural(tb.hidden as u64, "more frame", "more frames")
                );
            }
            let _ = write!(h, "<pre class=\"tb\">{}</pre>", esc(&shown));
            if let Some(full) = super::super::crash_text::traceback(c, true) {
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
