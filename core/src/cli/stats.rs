//! `blackbox stats`: one run at a glance, its header, outcome counts and the sections that
//! matter (what did not pass, the slowest tests and fixtures, crashes, workers, damage).

use std::collections::HashMap;

use serde_json::Value as Json;

use super::context::{drop_later, load, Ctx, Failure, Loaded};
use super::json::{write_doc, Part};
use super::run_tables::{
    crash_table, fixture_table, run_state, section, sorted_fixtures, sorted_tests, test_table,
    WithoutLists,
};
use super::table::{Cell, Column, Style, Table};
use super::text::{clean, command_line, count, duration, join_fitted, local_time, plural};
use crate::aggregate::{CrashView, ExitView, FixtureStats, TestView};

/// Rows per section of `stats` unless `--limit` says otherwise.
const STATS_ROWS: usize = 10;

pub(crate) fn stats(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    if cx.inv.json {
        // The shape of `RunView::to_json`, its lists streamed (a test checks they agree).
        let all = view.to_json_without_lists();
        let parts: Vec<(&str, Part<'_>)> = vec![
            (
                "crashes",
                Part::Many(Box::new(view.crashes.iter().map(CrashView::to_json))),
            ),
            (
                "exits",
                Part::Many(Box::new(view.exits.iter().map(ExitView::to_json))),
            ),
            (
                "fixtures",
                Part::Many(Box::new(view.fixtures.iter().map(FixtureStats::to_json))),
            ),
            (
                "problems",
                Part::Many(Box::new(
                    view.problems.iter().map(|p| Json::String(p.clone())),
                )),
            ),
            ("run", Part::One(all["run"].clone())),
            ("tests", Part::Tests(Box::new(view.tests.iter()))),
            (
                "timed",
                Part::Many(Box::new(view.timed.iter().map(FixtureStats::to_json))),
            ),
            (
                "workers",
                Part::Many(Box::new(
                    view.workers
                        .iter()
                        .map(crate::aggregate::WorkerView::to_json),
                )),
            ),
        ];
        write_doc(cx.out, parts)?;
        drop_later(view);
        return Ok(0);
    }
    let limit = match cx.inv.limit {
        None => STATS_ROWS,
        Some(0) => usize::MAX,
        Some(n) => n,
    };
    let width = cx.width;
    let paint = cx.paint;

    // Header: which run, how it ended, where, when.
    let (state, state_style) = run_state(&view);
    let mut head = vec![
        format!("run {}", view.run.id),
        paint.paint(&state, state_style).into_owned(),
    ];
    if let Some(h) = &view.run.host {
        head.push(format!("host {}", clean(h)));
    }
    if let Some(r) = &view.run.resumes {
        head.push(format!(
            "attempt {} (resumes {})",
            view.run.attempt,
            clean(r)
        ));
    }
    head.push(plural(view.segments as u64, "process", "processes"));
    head.push(plural(view.records, "record", "records"));
    for line in join_fitted(&head, width) {
        writeln!(cx.out, "{line}")?;
    }
    let mut when = Vec::new();
    if let Some(start) = view.run.started_wall_ns {
        when.push(format!("started {}", local_time(start)));
        let end = view
            .run
            .ended_wall_ns
            .or_else(|| view.run.live.then(crate::clock::now_wall_ns));
        if let Some(end) = end {
            let verb = if view.run.ended_wall_ns.is_some() {
                "took"
            } else {
                "running for"
            };
            when.push(format!(
                "{verb} {}",
                duration(end.saturating_sub(start) as f64 / 1e9)
            ));
        }
    }
    if !view.run.argv.is_empty() {
        when.push(clean(&command_line(&view.run.argv)).into_owned());
    }
    for line in join_fitted(&when, width) {
        writeln!(cx.out, "{line}")?;
    }

    // Outcome counts, in a fixed order.
    let mut by_outcome: HashMap<&str, u64> = HashMap::new();
    for t in &view.tests {
        *by_outcome.entry(t.outcome.as_str()).or_default() += 1;
    }
    let order = [
        "passed",
        "failed",
        "error",
        "skipped",
        "crashed",
        "unfinished",
        "running",
        "unknown",
    ];
    let mut parts: Vec<String> = Vec::new();
    let never_ran = by_outcome.remove("not-run").unwrap_or(0);
    for o in order {
        if let Some(&n) = by_outcome.get(o) {
            parts.push(
                paint
                    .paint(&format!("{} {o}", count(n)), Style::of_outcome(o))
                    .into_owned(),
            );
        }
    }
    let mut others: Vec<(&&str, &u64)> = by_outcome
        .iter()
        .filter(|(o, _)| !order.contains(o))
        .collect();
    others.sort();
    for (o, n) in others {
        parts.push(format!("{} {}", count(*n), clean(o)));
    }
    if never_ran > 0 {
        parts.push(
            paint
                .paint(
                    &format!("{} never ran", count(never_ran)),
                    Style::of_outcome("not-run"),
                )
                .into_owned(),
        );
    }
    let total = view.tests.len();
    if total == 0 {
        writeln!(cx.out, "tests: none recorded yet")?;
    } else {
        writeln!(
            cx.out,
            "tests {}: {}",
            count(total as u64),
            parts.join(" · ")
        )?;
    }

    // Only what is shown gets sorted: a run of 100k tests has few that did not pass.
    let bad_outcomes: Vec<String> = [
        "crashed",
        "timeout",
        "unfinished",
        "running",
        "failed",
        "error",
    ]
    .map(String::from)
    .into();
    let bad = sorted_tests(&view.tests, &bad_outcomes);
    if !bad.is_empty() {
        section(
            cx,
            "crashed, unfinished and failed",
            bad.len().min(limit),
            bad.len(),
        )?;
        let shown: Vec<&TestView> = bad.into_iter().take(limit).collect();
        test_table(&shown).write(cx.out, width, 2, paint)?;
    }
    if total > 0 {
        let slowest_first = |a: &&TestView, b: &&TestView| {
            b.duration_s
                .total_cmp(&a.duration_s)
                .then_with(|| a.nodeid.cmp(&b.nodeid))
        };
        let mut slow: Vec<&TestView> = view
            .tests
            .iter()
            .filter(|t| t.outcome != "not-run")
            .collect();
        if limit < slow.len() {
            slow.select_nth_unstable_by(limit, slowest_first);
            slow.truncate(limit);
        }
        slow.sort_by(slowest_first);
        section(cx, "slowest tests", slow.len(), total)?;
        test_table(&slow).write(cx.out, width, 2, paint)?;
    }
    let fixtures = sorted_fixtures(&view, cx.inv.all);
    if !fixtures.is_empty() {
        let n = fixtures.len();
        let shown: Vec<&FixtureStats> = fixtures.into_iter().take(limit).collect();
        section(cx, "slowest fixtures", shown.len(), n)?;
        fixture_table(&shown).write(cx.out, width, 2, paint)?;
    }
    if !view.crashes.is_empty() {
        let shown: Vec<&CrashView> = view.crashes.iter().take(limit).collect();
        section(cx, "crashes", shown.len(), view.crashes.len())?;
        crash_table(&shown, None).write(cx.out, width, 2, paint)?;
    }
    if !view.workers.is_empty() {
        section(cx, "workers", view.workers.len(), view.workers.len())?;
        let mut table = Table::new(vec![
            Column::left("WORKER"),
            Column::right("TESTS"),
            Column::right("CRASHES"),
            Column::left("STATE"),
            Column::shrinking("PIDS"),
        ]);
        for w in &view.workers {
            let pids = if w.pids.len() > 8 {
                format!(
                    "{} … ({} processes)",
                    w.pids[..4]
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    w.pids.len()
                )
            } else {
                w.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            table.push(vec![
                Cell::new(&w.id),
                Cell::new(count(w.tests)),
                Cell::styled(count(w.crashes), (w.crashes > 0).then_some(Style::Red)),
                Cell::styled(
                    if w.alive { "running" } else { "ended" },
                    w.alive.then_some(Style::Cyan),
                ),
                Cell::new(pids),
            ]);
        }
        table.write(cx.out, width, 2, paint)?;
    }
    if !view.problems.is_empty() {
        section(cx, "damage", view.problems.len(), view.problems.len())?;
        for p in &view.problems {
            writeln!(cx.out, "  {}", cx.p(&clean(p), Style::Red))?;
        }
    }
    Ok(0)
}
