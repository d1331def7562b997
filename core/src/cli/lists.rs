//! The lists: `blackbox tests`, `fixtures` and `crashes` (of one run) and `runs` (of the
//! store).

use serde_json::{json, Value as Json};

use super::context::{load, load_id, Ctx, Failure, Loaded};
use super::json::{write_doc, Part};
use super::run_tables::{
    crash_table, fixture_table, opt_str, run_json, run_state, sorted_fixtures, sorted_tests, take,
    test_table,
};
use super::table::{Cell, Column, Style, Table};
use super::text::{count, local_time};
use crate::aggregate::{FixtureStats, RunView};

pub(crate) fn tests(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let matching = sorted_tests(&view.tests, &cx.inv.outcomes);
    let n = matching.len();
    let shown = take(matching, cx.inv.limit);
    if cx.inv.json {
        let parts = vec![
            ("run", Part::One(run_json(&view))),
            ("tests", Part::Tests(Box::new(shown.iter().copied()))),
        ];
        write_doc(cx.out, parts)?;
        return Ok(0);
    }
    if shown.is_empty() {
        let what = if cx.inv.outcomes.is_empty() {
            String::new()
        } else {
            format!(" {}", cx.inv.outcomes.join("/"))
        };
        writeln!(cx.out, "no{what} tests in run {}", view.run.id)?;
        return Ok(0);
    }
    test_table(&shown).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} tests shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

pub(crate) fn fixtures(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let all = sorted_fixtures(&view, cx.inv.all);
    let n = all.len();
    let shown = take(all, cx.inv.limit);
    if cx.inv.json {
        let fixture_rows: std::collections::HashSet<*const FixtureStats> =
            view.fixtures.iter().map(std::ptr::from_ref).collect();
        let (fixtures, timed): (Vec<&&FixtureStats>, Vec<&&FixtureStats>) = shown
            .iter()
            .partition(|f| fixture_rows.contains(&std::ptr::from_ref(**f)));
        cx.json(&json!({
            "run": run_json(&view),
            "fixtures": fixtures.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
            "timed": timed.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    if shown.is_empty() {
        writeln!(cx.out, "no fixture timings in run {}", view.run.id)?;
        return Ok(0);
    }
    fixture_table(&shown).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} fixtures shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

pub(crate) fn crashes(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let n = view.crashes.len();
    let shown = take(view.crashes.iter().collect::<Vec<_>>(), cx.inv.limit);
    if cx.inv.json {
        cx.json(&json!({
            "run": run_json(&view),
            "crashes": shown.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    if shown.is_empty() {
        writeln!(cx.out, "no crashes in run {}", view.run.id)?;
        return Ok(0);
    }
    crash_table(&shown, Some(cx.inv.full)).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} crashes shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------------

pub(crate) fn runs(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let ids = store.runs()?;
    // The newest runs are the ones asked about: --limit keeps the last N.
    let ids: Vec<String> = match cx.inv.limit {
        Some(n) if n > 0 && n < ids.len() => ids[ids.len() - n..].to_vec(),
        _ => ids,
    };
    let mut rows: Vec<(String, Result<RunView, String>)> = Vec::with_capacity(ids.len());
    for id in ids {
        let view = load_id(&store, &id)
            .map(|l| l.view)
            .map_err(|f| f.to_string());
        rows.push((id, view));
    }
    if cx.inv.json {
        let runs: Vec<Json> = rows
            .iter()
            .map(|(id, v)| match v {
                Ok(v) => {
                    let mut r = run_json(v);
                    r["tests"] = json!(v.tests.len());
                    r["crashes"] = json!(v.crashes.len());
                    r["problems"] = json!(v.problems);
                    r
                }
                Err(e) => json!({"id": id, "error": e}),
            })
            .collect();
        cx.json(&json!({"store": store.root().to_string_lossy(), "runs": runs}))?;
        return Ok(0);
    }
    if rows.is_empty() {
        writeln!(
            cx.out,
            "no runs in {} yet; run pytest with the plugin first",
            store.root().display()
        )?;
        return Ok(0);
    }
    let mut table = Table::new(vec![
        Column::left("RUN"),
        Column::left("STARTED"),
        Column::right("TESTS"),
        Column::right("CRASHES"),
        Column::left("STATE"),
        Column::shrinking("HOST"),
    ]);
    for (id, v) in &rows {
        match v {
            Ok(v) => {
                let (state, style) = run_state(v);
                let state = if v.problems.is_empty() {
                    state
                } else {
                    format!("{state}, damaged")
                };
                table.push(vec![
                    Cell::new(id),
                    Cell::new(v.run.started_wall_ns.map_or_else(|| "-".into(), local_time)),
                    Cell::new(count(v.tests.len() as u64)),
                    Cell::styled(
                        count(v.crashes.len() as u64),
                        (!v.crashes.is_empty()).then_some(Style::Red),
                    ),
                    Cell::styled(
                        state,
                        if v.problems.is_empty() {
                            style
                        } else {
                            Some(Style::Red)
                        },
                    ),
                    Cell::new(opt_str(v.run.host.as_deref())),
                ]);
            }
            Err(e) => table.push(vec![
                Cell::new(id),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::styled(format!("unreadable: {e}"), Some(Style::Red)),
                Cell::new("-"),
            ]),
        }
    }
    table.write(cx.out, cx.width, 0, cx.paint)?;
    Ok(0)
}
