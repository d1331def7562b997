//! `blackbox show NODEID`: one test's whole story: its phases, fixtures, properties, crash
//! and traceback, and its outcomes in history.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::context::{load_id, resolve_run, warn_damage, Ctx, Failure, Loaded, HISTORY_WAIT};
use super::crash_text::{crash_sentence, traceback};
use super::table::{Cell, Column, Note, Style, Table};
use super::text::{clean, count, duration, join_fitted, plural, strip, wrap};
use crate::aggregate::{signal_name, RunView, TestJson, TestView};
use crate::history::{History, TestHistory};
use crate::record::Record;
use crate::segment::{SegmentReader, SegmentStatus, HEADER_SIZE};
use crate::store::Store;

/// Runs of history `show` lists.
const HISTORY_RUNS: usize = 10;

/// The test `wanted` names: its nodeid, else the one test whose nodeid contains it.
fn find_test<'v>(view: &'v RunView, wanted: &str) -> Result<&'v TestView, Failure> {
    if let Some(t) = view.tests.iter().find(|t| t.nodeid == wanted) {
        return Ok(t);
    }
    let found: Vec<&TestView> = view
        .tests
        .iter()
        .filter(|t| t.nodeid.contains(wanted))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure::Error(format!(
            "no test of run {} matches {wanted:?}; `blackbox tests` lists them",
            view.run.id
        ))),
        many => {
            let shown: Vec<&str> = many.iter().take(5).map(|t| t.nodeid.as_str()).collect();
            Err(Failure::Error(format!(
                "{} tests of run {} match {wanted:?} ({}{}); give more of the nodeid",
                count(many.len() as u64),
                view.run.id,
                shown.join(", "),
                if many.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )))
        }
    }
}

/// One fixture as a test used it.
#[derive(Debug, Default)]
struct FixtureUse {
    setups: u64,
    setup_s: f64,
    teardown_s: Option<f64>,
}

/// The fixtures whose records name `nodeid`, by (name, scope), read from the segments that
/// hold the test's records (every segment when it reported no phase).
fn fixtures_of(t: &TestView, statuses: &[SegmentStatus]) -> BTreeMap<(String, String), FixtureUse> {
    let mut segs: Vec<usize> = t.phases.iter().map(|p| p.location.0).collect();
    segs.sort_unstable();
    segs.dedup();
    if segs.is_empty() {
        segs = (0..statuses.len()).collect();
    }
    let mut out: BTreeMap<(String, String), FixtureUse> = BTreeMap::new();
    for seg in segs {
        let Some(st) = statuses.get(seg) else {
            continue;
        };
        let Ok(reader) = SegmentReader::open(&st.path) else {
            continue;
        };
        let mut next = HEADER_SIZE;
        loop {
            let batch = reader.read_range(next, 4096);
            for (_, rec) in &batch.records {
                if let Record::Fixture {
                    name,
                    scope,
                    setup,
                    test: Some(test),
                    duration_s,
                    ..
                } = rec
                {
                    if *test != t.nodeid {
                        continue;
                    }
                    let u = out.entry((name.clone(), scope.clone())).or_default();
                    if *setup {
                        u.setups += 1;
                        u.setup_s += duration_s;
                    } else {
                        *u.teardown_s.get_or_insert(0.0) += duration_s;
                    }
                }
            }
            if batch.damage.is_some() || batch.records.is_empty() || batch.next <= next {
                break;
            }
            next = batch.next;
        }
    }
    out
}

/// The test's outcomes in history.redb over the `runs` runs up to `run_id`, newest first;
/// `Err` says why there are none.
pub(crate) fn test_history(
    store: &Store,
    nodeid: &str,
    run_id: &str,
    runs: usize,
) -> Result<TestHistory, String> {
    let path = store.history_path();
    if !path.exists() {
        return Err("no history.redb yet (a session folds its run there when it ends)".into());
    }
    History::open(&path)
        .map(|h| h.with_wait(HISTORY_WAIT))
        .and_then(|h| h.test_history_upto(nodeid, run_id, runs))
        .map_err(|e| e.to_string())
}

fn value_text(v: &crate::Value) -> String {
    match v {
        crate::Value::Str(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

pub(crate) fn show(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let Loaded { view, statuses } = load_id(&store, &id)?;
    warn_damage(cx, &id, statuses.iter().filter_map(|s| s.damage.as_ref()))?;
    let wanted = cx.inv.nodeid.clone().unwrap_or_default();
    let t = find_test(&view, &wanted)?;
    // The death of the test's own process (a child the test forked dying is not its crash).
    let crash = view
        .crashes
        .iter()
        .find(|c| c.nodeid.as_deref() == Some(t.nodeid.as_str()) && c.kind != "child");
    let fixtures = fixtures_of(t, &statuses);
    let history = test_history(&store, &t.nodeid, &view.run.id, HISTORY_RUNS);
    let tb = crash.and_then(|c| traceback(c, cx.inv.full));
    if cx.inv.json {
        let run = json!({"id": view.run.id});
        let fixtures: Vec<Json> = fixtures
            .iter()
            .map(|((name, scope), u)| {
                json!({"name": name, "scope": scope, "setups": u.setups,
                       "setup_s": u.setup_s, "teardown_s": u.teardown_s})
            })
            .collect();
        let test = serde_json::to_value(TestJson(t)).unwrap_or(Json::Null);
        let doc = json!({
            "run": run,
            "test": test,
            "fixtures": fixtures,
            "crash": crash.map(|c| {
                let mut j = c.to_json();
                j["traceback"] = tb.as_ref().map_or(Json::Null, |tb| json!({
                    "path": tb.path, "lines": tb.lines, "hidden_frames": tb.hidden}));
                j
            }),
            "history": history.as_ref().map_or(Json::Null, TestHistory::to_json),
        });
        serde_json::to_writer_pretty(&mut *cx.out, &doc).map_err(|e| Failure::Output(e.into()))?;
        writeln!(cx.out)?;
        return Ok(0);
    }
    let width = cx.width;
    let paint = cx.paint;
    let outcome = match t.signal {
        Some(sig) => format!("{} ({})", t.outcome, signal_name(sig)),
        None => t.outcome.clone(),
    };
    writeln!(
        cx.out,
        "{}",
        paint.paint(&clean(&t.nodeid), Some(Style::Bold))
    )?;
    let mut head = vec![
        paint
            .paint(&outcome, Style::of_outcome(&t.outcome))
            .into_owned(),
        if t.phases.is_empty() && t.timeout.is_none() {
            "no phase reported".to_owned()
        } else {
            format!("took {}", duration(t.duration_s))
        },
        format!("worker {}", t.worker.as_deref().unwrap_or("main")),
    ];
    if let Some(pid) = t.pid {
        head.push(format!("pid {pid}"));
    }
    head.push(format!("run {}", view.run.id));
    for line in join_fitted(&head, width) {
        writeln!(cx.out, "  {line}")?;
    }

    writeln!(cx.out, "\n{}", paint.paint("phases", Some(Style::Bold)))?;
    if t.phases.is_empty() && crash.and_then(|c| c.phase.as_ref()).is_none() {
        writeln!(
            cx.out,
            "  none reported (the process died before the first report)"
        )?;
    } else {
        let mut table = Table::new(vec![
            Column::left("PHASE"),
            Column::left("OUTCOME"),
            Column::right("DURATION"),
        ]);
        for p in &t.phases {
            table.push(vec![
                Cell::new(p.phase.as_str()),
                Cell::styled(&p.outcome, Style::of_outcome(&p.outcome)),
                Cell::new(duration(p.duration_s)),
            ]);
        }
        if let Some(c) = crash {
            if let Some(phase) = &c.phase {
                if !t.phases.iter().any(|p| p.phase.as_str() == phase) {
                    let ended = if c.timeout.is_some() {
                        "timed out"
                    } else {
                        "crashed"
                    };
                    table.push(vec![
                        Cell::new(phase),
                        Cell::styled(ended, Some(Style::BoldRed)),
                        Cell::new("-"),
                    ]);
                }
            }
        }
        table.write(cx.out, width, 2, paint)?;
    }

    if let Some(c) = crash {
        writeln!(cx.out, "\n{}", paint.paint("crash", Some(Style::BoldRed)))?;
        let mut what = crash_sentence(c);
        if let Some(p) = c.phase.as_deref().filter(|p| !what.contains(p)) {
            what = format!("{what}, in {p}");
        }
        let room = width.map(|w| w.saturating_sub(2));
        for l in room.map_or_else(|| vec![what.clone()], |r| wrap(&what, r)) {
            writeln!(cx.out, "  {}", clean(&l))?;
        }
        match &tb {
            Some(tb) => {
                let mut notes: Vec<Note> = tb.lines.iter().cloned().map(Note::Code).collect();
                if tb.hidden > 0 {
                    notes.push(Note::Text(format!(
                        "… {} (--full shows them)",
                        plural(tb.hidden as u64, "more frame", "more frames")
                    )));
                }
                notes.push(Note::Text(format!("traceback: {}", tb.path)));
                super::table::write_notes(cx.out, &notes, width, 2, paint)?;
            }
            None => writeln!(cx.out, "  no Python traceback was written")?,
        }
    }

    writeln!(
        cx.out,
        "\n{}",
        paint.paint(
            &format!("properties ({})", count(t.properties.len() as u64)),
            Some(Style::Bold)
        )
    )?;
    for (k, v) in &t.properties {
        let line = format!("{k} = {}", value_text(v));
        let notes = [Note::Text(line)];
        super::table::write_notes(
            cx.out,
            &notes,
            width,
            2,
            super::table::Painter { enabled: false },
        )?;
    }

    writeln!(
        cx.out,
        "\n{}",
        paint.paint(
            &format!("fixtures ({})", count(fixtures.len() as u64)),
            Some(Style::Bold)
        )
    )?;
    if !fixtures.is_empty() {
        let mut table = Table::new(vec![
            Column::right("SETUP"),
            Column::right("TEARDOWN"),
            Column::left("SCOPE"),
            Column::shrinking("FIXTURE"),
        ]);
        let mut rows: Vec<(&(String, String), &FixtureUse)> = fixtures.iter().collect();
        rows.sort_by(|a, b| b.1.setup_s.total_cmp(&a.1.setup_s));
        for ((name, scope), u) in rows {
            table.push(vec![
                Cell::new(duration(u.setup_s)),
                Cell::new(u.teardown_s.map_or_else(|| "-".into(), duration)),
                Cell::new(scope),
                Cell::new(name),
            ]);
        }
        table.write(cx.out, width, 2, paint)?;
    }

    writeln!(cx.out, "\n{}", paint.paint("history", Some(Style::Bold)))?;
    match &history {
        Err(why) => writeln!(cx.out, "  {}", clean(why))?,
        Ok(h) if h.points.is_empty() => writeln!(cx.out, "  no run in history.redb yet")?,
        Ok(h) => {
            // The strip of `blackbox flaky`; `blackbox history NODEID` has a row per run.
            let strip = strip(h.points.iter().map(|p| p.outcome.as_deref()));
            writeln!(
                cx.out,
                "  {strip}  (newest first; P passed, F failed, E error, C crashed, s skipped, . not run)"
            )?;
            writeln!(
                cx.out,
                "  {}, {}, {} in the last {}; `blackbox history` lists each run",
                plural(h.ran() as u64, "run", "runs"),
                plural(h.passes() as u64, "pass", "passes"),
                plural(h.failures() as u64, "failure", "failures"),
                plural(h.points.len() as u64, "run", "runs"),
            )?;
        }
    }
    Ok(0)
}
