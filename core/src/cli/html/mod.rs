//! `blackbox report --html`: one self-contained page (inline CSS, SVG and a little JS; a
//! Content-Security-Policy forbids any fetch). Everything that comes from records is
//! escaped: nodeids, properties and paths are user input.

mod assets;
mod charts;
mod markup;
mod sections;

use std::fmt::Write as _;

use super::text::count;
use crate::aggregate::RunView;
use crate::history::Strips;
use assets::{SCRIPT, STYLE};
use charts::{fixtures, timeline, tip};
use markup::{esc, script_json};
use sections::{crashes, flaky, header, not_passed, slowest};

pub(crate) use sections::{history_wanted, HISTORY_RUNS};

/// The page for `view`. `now_mono_ns` ends the bars of tests still running; `history`
/// holds the recent outcomes (history.redb, up to this run) of its failed, crashed and
/// timed-out tests, and the tests flaky over those runs.
pub(crate) fn render(view: &RunView, now_mono_ns: u64, history: &Strips) -> String {
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
