//! `blackbox dump`: every record of a run as it is in its segments, segment by segment.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value as Json};

use super::context::{resolve_run, warn_damage, Ctx, Failure};
use super::table::Style;
use super::text::clean;
use crate::aggregate::signal_name;
use crate::error::{Damage, Error};
use crate::segment::{is_segment_name, SegmentReader, HEADER_SIZE};

/// Records `dump` reads at a time from one segment.
const DUMP_CHUNK: usize = 4096;

fn write_dump_line(
    cx: &mut Ctx<'_>,
    jsonl: bool,
    segment: &str,
    pid: u32,
    offset: u64,
    rec: &crate::Record,
) -> Result<(), Failure> {
    let mut obj = rec.to_json();
    if jsonl {
        if let Json::Object(map) = &mut obj {
            map.insert("segment".into(), Json::String(segment.to_owned()));
            map.insert("segment_pid".into(), json!(pid));
            map.insert("offset".into(), json!(offset));
        }
        serde_json::to_writer(&mut *cx.out, &obj).map_err(|e| Failure::Output(e.into()))?;
        cx.out.write_all(b"\n")?;
    } else {
        if let Json::Object(map) = &mut obj {
            map.remove("kind");
        }
        let fields = serde_json::to_string(&obj).unwrap_or_default();
        writeln!(
            cx.out,
            "  {offset:>10}  {:<16} {}",
            rec.kind(),
            clean(&fields)
        )?;
    }
    Ok(())
}

/// Streams every record, segment by segment, in chunks: memory never holds a whole segment,
/// let alone the whole run.
pub(crate) fn dump(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let dir = store.run_path(&id)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io {
        path: dir.clone(),
        action: "listing run folder",
        source: e,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| is_segment_name(&e.file_name()))
        .map(|e| e.path())
        .collect();
    // First pass: refuse a newer format before printing anything; order by creation.
    let mut order: Vec<(u64, PathBuf)> = Vec::with_capacity(paths.len());
    let mut damage: Vec<Damage> = Vec::new();
    for p in paths.drain(..) {
        match SegmentReader::open(&p) {
            Ok(r) => order.push((r.info().created_wall_ns, p)),
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e.into()),
            Err(Error::Damaged(d)) => damage.push(d),
            Err(e) => damage.push(Damage {
                path: p,
                offset: 0,
                reason: e.to_string(),
            }),
        }
    }
    order.sort();
    let jsonl = cx.inv.jsonl || cx.inv.json;
    for (_, path) in order {
        let reader = match SegmentReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                damage.push(Damage {
                    path,
                    offset: 0,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let info = reader.info();
        let path_text = path.to_string_lossy().into_owned();
        if !jsonl {
            // A forked child ends with os._exit, never closing its segment: when its test
            // was over (no test in the header's slot, no crash mark) it finished.
            let forked = matches!(
                reader.read_range(HEADER_SIZE, 1).records.first(),
                Some((
                    _,
                    crate::Record::Process {
                        role: crate::Role::Forked,
                        ..
                    }
                ))
            );
            let finished_child =
                forked && reader.crash_mark().is_none() && reader.current_test().is_none();
            let state = if reader.writer_alive() {
                "writer alive"
            } else if info.closed_cleanly {
                "closed cleanly"
            } else if finished_child {
                "closed (forked child, its test finished)"
            } else {
                "writer died"
            };
            let mut head = format!("{}  pid {}  {state}", path_text, info.pid);
            if let Some(m) = reader.crash_mark() {
                let _ = write!(head, "  crashed: {}", signal_name(m.signal));
            }
            writeln!(cx.out, "{}", cx.p(&clean(&head), Style::Bold))?;
        }
        // Chunks of records: memory holds one chunk, whatever the size of the segment.
        let mut next = HEADER_SIZE;
        loop {
            let batch = reader.read_range(next, DUMP_CHUNK);
            for (offset, rec) in &batch.records {
                write_dump_line(cx, jsonl, &path_text, info.pid, *offset, rec)?;
            }
            if let Some(d) = batch.damage {
                if !jsonl {
                    writeln!(
                        cx.out,
                        "  {}",
                        cx.p(&clean(&format!("stopped: {d}")), Style::Red)
                    )?;
                }
                damage.push(d);
                break;
            }
            if batch.records.is_empty() || batch.next <= next {
                break;
            }
            next = batch.next;
        }
    }
    warn_damage(cx, &id, damage.iter())?;
    Ok(0)
}
