//! `blackbox check`: every frame of every segment verified, the damage listed; exit status
//! 1 when there is some.

use serde_json::{json, Value as Json};

use super::context::{resolve_run, Ctx, Failure};
use super::table::Style;
use super::text::{clean, count, plural};
use crate::aggregate::Aggregate;
use crate::error::Damage;
use crate::follower::Follower;
use crate::store::Store;

struct Checked {
    id: String,
    segments: usize,
    records: u64,
    problems: Vec<Damage>,
}

fn check_run(store: &Store, id: &str) -> Checked {
    let mut c = Checked {
        id: id.to_owned(),
        segments: 0,
        records: 0,
        problems: Vec::new(),
    };
    let dir = match store.run_path(id) {
        Ok(d) => d,
        Err(e) => {
            c.problems.push(Damage {
                path: store.root().join(id),
                offset: 0,
                reason: e.to_string(),
            });
            return c;
        }
    };
    if let Err(e) = std::fs::read_dir(&dir) {
        c.problems.push(Damage {
            path: dir,
            offset: 0,
            reason: format!("cannot list the run folder: {e}"),
        });
        return c;
    }
    let mut follower = Follower::new(id, &dir);
    // Streaming into a throwaway aggregate verifies every frame without holding the run.
    follower.poll_into(&mut Aggregate::default());
    c.records = follower.records_read();
    let statuses = follower.statuses();
    c.segments = statuses.len();
    c.problems = statuses.into_iter().filter_map(|s| s.damage).collect();
    c
}

pub(crate) fn check(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let ids = match cx.inv.run.as_deref() {
        Some(r) => vec![resolve_run(&store, Some(r))?],
        None => store.runs()?,
    };
    let checked: Vec<Checked> = ids.iter().map(|id| check_run(&store, id)).collect();
    let damaged: usize = checked.iter().map(|c| c.problems.len()).sum();
    let damaged_runs = checked.iter().filter(|c| !c.problems.is_empty()).count();
    let code = i32::from(damaged > 0);
    if cx.inv.json {
        let runs: Vec<Json> = checked
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "segments": c.segments,
                    "records": c.records,
                    "problems": c.problems.iter().map(|d| json!({
                        "path": d.path.to_string_lossy(),
                        "offset": d.offset,
                        "reason": d.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        cx.json(&json!({"store": store.root().to_string_lossy(), "ok": code == 0, "runs": runs}))?;
        return Ok(code);
    }
    for c in &checked {
        let verdict = if c.problems.is_empty() {
            cx.p("ok", Style::Green)
        } else {
            cx.p("DAMAGED", Style::BoldRed)
        };
        writeln!(
            cx.out,
            "{}  {verdict}  {}, {}",
            c.id,
            plural(c.segments as u64, "segment", "segments"),
            plural(c.records, "record", "records")
        )?;
        for d in &c.problems {
            writeln!(cx.out, "  {}", clean(&d.to_string()))?;
        }
    }
    let segments: usize = checked.iter().map(|c| c.segments).sum();
    let records: u64 = checked.iter().map(|c| c.records).sum();
    let runs = checked.len();
    if damaged == 0 {
        writeln!(
            cx.out,
            "{}: {}, {}, {} in {}",
            cx.p("no damage", Style::Green),
            plural(runs as u64, "run", "runs"),
            plural(segments as u64, "segment", "segments"),
            plural(records, "record", "records"),
            store.root().display()
        )?;
    } else {
        writeln!(
            cx.out,
            "{}: {} damaged or unreadable in {} of {}; the records before each damage are still read",
            cx.p("damage found", Style::BoldRed),
            plural(damaged as u64, "file", "files"),
            count(damaged_runs as u64),
            plural(runs as u64, "run", "runs")
        )?;
    }
    Ok(code)
}
