//! The commands that read `history.redb` (`flaky`, `history NODEID`, `slower`) and the one
//! that merges stores into one (`combine`).

use std::path::Path;

use super::context::{Ctx, Failure, EXIT_ERROR, EXIT_OK};
use super::table::{Cell, Column, Style, Table};
use super::text::{duration, local_time, plural, strip};
use crate::combine::combine as combine_store;
use crate::history::{FoldOptions, History, RunRef};
use crate::store::Store;

/// Runs looked at unless `--last` says otherwise.
pub const DEFAULT_LAST: usize = 20;
/// `slower`'s growth unless `--threshold` says otherwise.
pub const DEFAULT_THRESHOLD: f64 = 1.5;

fn history_of(cx: &Ctx<'_>) -> Result<History, Failure> {
    Ok(History::of_store(&cx.store()?)?)
}

fn span(runs: &[RunRef]) -> String {
    let times: Vec<u64> = runs.iter().filter_map(|r| r.started_wall_ns).collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) if a != b => format!(", {} to {}", local_time(*a), local_time(*b)),
        (Some(a), _) => format!(", {}", local_time(*a)),
        _ => String::new(),
    }
}

pub(crate) fn flaky(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let last = cx.inv.last.unwrap_or(DEFAULT_LAST);
    let report = history_of(cx)?.flaky_report(last)?;
    let limit = cx.inv.limit.filter(|n| *n > 0).unwrap_or(usize::MAX);
    if cx.inv.json {
        cx.json(&report.to_json())?;
        return Ok(EXIT_OK);
    }
    writeln!(
        cx.out,
        "{} flaky over the last {}{} (strip: newest first; P passed, F failed, E error, C crashed, T timeout, s skipped, . not run)",
        report.tests.len(),
        plural(report.runs.len() as u64, "run", "runs"),
        span(&report.runs)
    )?;
    if report.tests.is_empty() {
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(vec![
        Column::shrinking("TEST"),
        Column::right("RAN"),
        Column::right("PASSED"),
        Column::right("FAILED"),
        Column::right("CRASHED"),
        Column::right("FLIPS"),
        Column::shrinking_first("LAST FLIP"),
        Column::left("STRIP"),
    ]);
    for t in report.tests.iter().take(limit) {
        let n = |k: &str| t.outcomes.get(k).copied().unwrap_or(0);
        let flip = t.last_flip.as_ref().map_or_else(
            || "-".to_owned(),
            |f| {
                let when = report
                    .runs
                    .iter()
                    .find(|r| r.id == f.run_id)
                    .and_then(|r| r.started_wall_ns)
                    .map_or_else(|| f.run_id.clone(), local_time);
                format!("{} -> {} at {when}", f.from, f.to)
            },
        );
        table.push(vec![
            Cell::new(&t.history.nodeid),
            Cell::new(t.history.ran().to_string()),
            Cell::new(n("passed").to_string()),
            Cell::new((n("failed") + n("error")).to_string()),
            Cell::styled(
                t.crashed_runs.len().to_string(),
                (!t.crashed_runs.is_empty()).then_some(Style::Red),
            ),
            Cell::new(t.history.flips().to_string()),
            Cell::new(flip),
            Cell::new(strip(t.history.points.iter().map(|p| p.outcome.as_deref()))),
        ]);
    }
    table.write(cx.out, cx.width, 0, cx.paint)?;
    Ok(EXIT_OK)
}

pub(crate) fn history(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let last = cx.inv.last.unwrap_or(DEFAULT_LAST);
    let nodeid = cx.inv.args[0].clone();
    let runs = history_of(cx)?.test_runs(&nodeid, last)?;
    if cx.inv.json {
        cx.json(&runs.to_json())?;
        return Ok(EXIT_OK);
    }
    let trend = runs.trend();
    if trend.ran() == 0 {
        writeln!(
            cx.out,
            "{nodeid} did not run in the last {} of history; `blackbox tests` lists a run's tests",
            plural(runs.runs.len() as u64, "run", "runs")
        )?;
        return Ok(EXIT_OK);
    }
    // Passed, then each other verdict it had, by its own name.
    let n = |o: &str| {
        trend
            .points
            .iter()
            .filter(|p| p.outcome.as_deref() == Some(o))
            .count()
    };
    let mut verdicts = vec![format!("passed {}", trend.passes())];
    for (outcome, said) in [
        ("failed", "failed"),
        ("error", "errors"),
        ("crashed", "crashed"),
        ("timeout", "timed out"),
    ] {
        if n(outcome) > 0 {
            verdicts.push(format!("{said} {}", n(outcome)));
        }
    }
    let verdicts = verdicts.join(", ");
    writeln!(
        cx.out,
        "{nodeid}: ran in {} of the last {}, {verdicts}, {}{}",
        trend.ran(),
        plural(runs.runs.len() as u64, "run", "runs"),
        plural(trend.flips() as u64, "flip", "flips"),
        if trend.is_flaky() { " (flaky)" } else { "" }
    )?;
    let mut table = Table::new(vec![
        Column::left("RUN"),
        Column::left("STARTED"),
        Column::left("OUTCOME"),
        Column::right("DURATION"),
        Column::left("WORKER"),
        Column::left("SIGNAL"),
        Column::shrinking_first("HOST"),
        Column::shrinking_first("SHARD"),
    ]);
    for (run, test) in &runs.runs {
        let started = run.started_wall_ns.map_or_else(|| "-".into(), local_time);
        let host = run.host.clone().unwrap_or_else(|| "-".into());
        let shard = run.shard.clone().unwrap_or_else(|| "-".into());
        let row = match test {
            None => vec![
                Cell::new(&run.id),
                Cell::new(started),
                Cell::styled("not run", Some(Style::Dim)),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new(host),
                Cell::new(shard),
            ],
            Some(t) => vec![
                Cell::new(&run.id),
                Cell::new(started),
                Cell::styled(&t.outcome, Style::of_outcome(&t.outcome)),
                Cell::new(duration(t.duration_s)),
                Cell::new(t.worker.clone().unwrap_or_else(|| "-".into())),
                Cell::new(
                    t.signal
                        .map_or_else(|| "-".into(), crate::aggregate::signal_name),
                ),
                Cell::new(host),
                Cell::new(shard),
            ],
        };
        table.push(row);
    }
    table.write(cx.out, cx.width, 0, cx.paint)?;
    Ok(EXIT_OK)
}

pub(crate) fn slower(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let last = cx.inv.last.unwrap_or(DEFAULT_LAST);
    let threshold = cx.inv.threshold.unwrap_or(DEFAULT_THRESHOLD);
    let report = history_of(cx)?.slower(last, threshold)?;
    if cx.inv.json {
        cx.json(&report.to_json())?;
        return Ok(EXIT_OK);
    }
    if report.recent.is_empty() {
        writeln!(
            cx.out,
            "history holds {}; `slower` compares the newer half of the runs with the older half, so it needs 2 or more",
            plural(report.baseline.len() as u64, "run", "runs")
        )?;
        return Ok(EXIT_OK);
    }
    let ids = |runs: &[RunRef]| {
        runs.iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        cx.out,
        "{} slower by more than {threshold}x: the newest {} ({}) against the {} before ({})",
        report.items.len(),
        plural(report.recent.len() as u64, "run", "runs"),
        ids(&report.recent),
        report.baseline.len(),
        ids(&report.baseline)
    )?;
    if report.items.is_empty() {
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(vec![
        Column::left("KIND"),
        Column::shrinking("NAME"),
        Column::right("BEFORE"),
        Column::right("NOW"),
        Column::right("RATIO"),
    ]);
    let limit = cx.inv.limit.filter(|n| *n > 0).unwrap_or(usize::MAX);
    for s in report.items.iter().take(limit) {
        let name = match &s.scope {
            Some(scope) => format!("{} ({scope})", s.name),
            None => s.name.clone(),
        };
        table.push(vec![
            Cell::new(s.kind),
            Cell::new(name),
            Cell::new(duration(s.baseline_median_s)),
            Cell::new(duration(s.recent_median_s)),
            Cell::styled(
                if s.ratio.is_finite() {
                    format!("{:.1}x", s.ratio)
                } else {
                    "new".into()
                },
                Some(Style::Red),
            ),
        ]);
    }
    table.write(cx.out, cx.width, 0, cx.paint)?;
    Ok(EXIT_OK)
}

pub(crate) fn combine(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    // The parser requires --dir for combine: the target is named, never searched for.
    let target = Store::create(cx.given_dir())?;
    let mut status = EXIT_OK;
    let sources = cx.inv.args.clone();
    for source in &sources {
        match combine_store(&target, Path::new(source), &FoldOptions::default()) {
            Ok(done) => {
                writeln!(
                    cx.out,
                    "{source} (shard {}): {} runs copied, {} from its history, {} already in {}",
                    done.shard,
                    done.copied.len(),
                    done.from_history.len(),
                    done.already.len(),
                    target.root().display()
                )?;
                for line in &done.skipped {
                    cx.warn(&format!("skipped {line}"))?;
                    status = EXIT_ERROR;
                }
            }
            Err(e) => {
                cx.warn(&format!("skipped {source}: {e}"))?;
                status = EXIT_ERROR;
            }
        }
    }
    Ok(status)
}
