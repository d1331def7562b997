//! The summary of one `cargo bench -p blackbox-benches` run: Criterion's median of every
//! benchmark (from `<criterion dir>/<id>/new/estimates.json`), and the ratios between the
//! figures of the same run (redb / blackbox, bincode / postcard). Ratios are the figures
//! to quote: absolute times move with the machine's load, ratios much less.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use blackbox_core::Record;

use crate::{property_set, test_phase};

/// Where Criterion writes its estimates, found the way Criterion finds it: `CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else the workspace's `target/criterion`.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    benches
        .parent()
        .unwrap_or(benches)
        .join("target")
        .join("criterion")
}

/// Where the summary is saved: `benches/results/core.txt`.
pub fn results_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join("core.txt")
}

/// One benchmark's median, in nanoseconds, with its 95% confidence interval.
#[derive(Debug, Clone, Copy)]
pub struct Median {
    pub ns: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Reads the median of benchmark `id` (`group/function[/parameter]`), if it was measured
/// by this run (its estimates were written after `since`).
pub fn median(dir: &Path, id: &str, since: SystemTime) -> Option<Median> {
    let path = dir.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let m = &v["median"];
    Some(Median {
        ns: m["point_estimate"].as_f64()?,
        lower: m["confidence_interval"]["lower_bound"].as_f64()?,
        upper: m["confidence_interval"]["upper_bound"].as_f64()?,
    })
}

/// `ns` nanoseconds, readably.
pub fn human_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The encoded sizes of a record with postcard (what core writes) and bincode 2's
/// standard (varint) and legacy (fixed-width) configurations.
pub fn encoded_sizes(rec: &Record) -> (usize, usize, usize) {
    let postcard = rec.encoded_len();
    let standard =
        bincode::serde::encode_to_vec(rec, bincode::config::standard()).map_or(0, |v| v.len());
    let legacy =
        bincode::serde::encode_to_vec(rec, bincode::config::legacy()).map_or(0, |v| v.len());
    (postcard, standard, legacy)
}

/// The records of the codec group, by the name of their benchmark.
pub fn codec_records() -> Vec<(&'static str, Record)> {
    vec![
        ("property_set", property_set()),
        ("fixture", crate::fixture(3, 1_234, true)),
        (
            "test_phase",
            test_phase(3, 1_234, blackbox_core::Phase::Call),
        ),
    ]
}

/// A line of the summary: a label, then a median (with its interval) if measured.
struct Out {
    text: String,
    dir: PathBuf,
    since: SystemTime,
    missing: Vec<String>,
}

impl Out {
    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }

    fn get(&mut self, id: &str) -> Option<Median> {
        let m = median(&self.dir, id, self.since);
        if m.is_none() {
            self.missing.push(id.to_owned());
        }
        m
    }

    /// Prints `label  median [lo, hi]` and returns the median.
    fn row(&mut self, label: &str, id: &str) -> Option<f64> {
        let m = self.get(id);
        let line = match m {
            Some(m) => format!(
                "   {label:<52} {:>10}   [{} .. {}]",
                human_ns(m.ns),
                human_ns(m.lower),
                human_ns(m.upper)
            ),
            None => format!("   {label:<52} {:>10}", "not run"),
        };
        self.line(&line);
        m.map(|m| m.ns)
    }

    fn ratio_row(&mut self, label: &str, num: Option<f64>, den: Option<f64>, target: Option<f64>) {
        let (Some(n), Some(d)) = (num, den) else {
            return;
        };
        let r = n / d;
        let t = target.map_or_else(String::new, |t| {
            format!("   target >= {}: {}", ratio(t), verdict(r >= t))
        });
        let line = format!("   {label:<52} {:>10}{t}", ratio(r));
        self.line(&line);
    }

    fn target_row(&mut self, label: &str, value: Option<f64>, limit_ns: f64) {
        let Some(v) = value else { return };
        let line = format!(
            "   target: {label:<44} {:>10}   {}",
            human_ns(limit_ns),
            verdict(v <= limit_ns)
        );
        self.line(&line);
    }
}

fn first_line(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Load average (1 minute) now.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A time as `YYYY-MM-DD HH:MM UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day, hour, minute, _) = blackbox_core::civil_from_unix(secs as i64);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Facts the benches learned while they ran, for the summary (store sizes and the like).
#[derive(Debug, Default)]
pub struct Notes {
    pub lines: Vec<(String, String)>,
}

impl Notes {
    pub fn add(&mut self, section: &str, line: String) {
        self.lines.push((section.to_owned(), line));
    }

    fn of<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter(move |(s, _)| s == section)
            .map(|(_, l)| l.as_str())
    }
}

/// Builds the summary of the benchmarks measured since `since`.
pub fn render(since: SystemTime, load_at_start: &str, notes: &Notes) -> String {
    let mut o = Out {
        text: String::new(),
        dir: criterion_dir(),
        since,
        missing: Vec::new(),
    };
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    o.line("pytest-blackbox core benchmarks (cargo bench -p blackbox-benches)");
    o.line(&format!(
        "{}; {cpu}; {cores} cores; load average {load_at_start} at start, {} at end",
        utc(since),
        loadavg()
    ));
    o.line("Criterion medians with their 95% intervals. Ratios compare medians of this one run;");
    o.line("they are the figures to quote, the absolute times depend on the machine's load.");
    o.line("");

    let (p, _, _) = encoded_sizes(&property_set());
    o.line(&format!(
        "1. append + commit of one record (PropertySet, {p} B postcard, {} B framed)",
        (blackbox_core::FRAME_HEADER + p).next_multiple_of(8)
    ));
    let frame = (blackbox_core::FRAME_HEADER + p).next_multiple_of(8) as f64;
    let bb = o.row(
        "blackbox  SegmentWriter::append + commit (warm)",
        "append_commit/blackbox",
    );
    let rd = o.row(
        "redb      insert + commit, Durability::None",
        "append_commit/redb",
    );
    o.ratio_row("redb / blackbox", rd, bb, Some(100.0));
    o.target_row("blackbox median <=", bb, 100.0);
    for l in notes.of("append") {
        o.line(&format!("   note: {l}"));
    }
    o.line("   where an append's time goes (measured apart, same run):");
    let enc = o.row(
        "  postcard encode_into a warm buffer",
        "append_parts/encode_into",
    );
    let crc = o.row("  crc32 of the frame (crc32fast)", "append_parts/frame_crc");
    let pf = o.row(
        "  first write to a new 4 KiB page of the mapping",
        "append_parts/page_fault_4k",
    );
    if let (Some(bb), Some(enc), Some(crc), Some(pf)) = (bb, enc, crc, pf) {
        let share = pf * frame / 4096.0;
        o.line(&format!(
            "   {:<52} {:>10}   ({} per page x {frame:.0} B / 4096 B)",
            "  page faults, per frame",
            human_ns(share),
            human_ns(pf)
        ));
        o.line(&format!(
            "   {:<52} {:>10}   (the rest: depth check, bounds, padding, header, commit)",
            "  append + commit - the three above",
            human_ns(bb - enc - crc - share)
        ));
    }
    o.line("");

    o.line("2. a transaction of 10 records");
    let bb = o.row(
        "blackbox  Recorder::begin, 10 x record, commit",
        "txn10/blackbox",
    );
    let rd = o.row(
        "redb      begin_write, 10 x insert, commit (None)",
        "txn10/redb",
    );
    o.ratio_row("redb / blackbox", rd, bb, None);
    o.line("");

    for (mix, title) in [("pytest", "a pytest-like mix"), ("small", "small records")] {
        o.line(&format!(
            "3{}. reading 1,000,000 records, {title}",
            if mix == "pytest" { "a" } else { "b" }
        ));
        for l in notes.of(&format!("read_{mix}")) {
            o.line(&format!("   store: {l}"));
        }
        let g = format!("read_1m_{mix}");
        let sr = o.row("blackbox  Snapshot::read", &format!("{g}/snapshot_read"));
        let sv = o.row(
            "blackbox  Snapshot::read + view()",
            &format!("{g}/snapshot_read_view"),
        );
        let fp = o.row(
            "blackbox  Follower::new + poll_into(Aggregate)",
            &format!("{g}/follower_poll_into"),
        );
        let fv = o.row(
            "blackbox  Store::view (Follower: poll_into + view())",
            &format!("{g}/store_view"),
        );
        let rd = o.row(
            "redb      full range scan + decode (1 table)",
            &format!("{g}/redb_scan_decode"),
        );
        o.ratio_row("redb scan / Snapshot::read", rd, sr, None);
        o.ratio_row("redb scan / Snapshot::read + view()", rd, sv, None);
        o.ratio_row("redb scan / Follower::poll_into", rd, fp, None);
        o.ratio_row("redb scan / Store::view", rd, fv, None);
        // The aggregate read is Store::view: what every reader of a run (CLI, Python Store,
        // the plugin, history) does. Snapshot keeps every record as an owned Record, for
        // record-level access (dump, phase reports): shown for context, no target.
        o.target_row("aggregate read: Store::view <", fv, 250e6);
        o.line("");
    }
    o.line("   (results are dropped outside the timing, for every contestant alike)");
    o.line("");

    o.line("4. Follower::poll after 100 new records, by records already in the store");
    for l in notes.of("follow") {
        o.line(&format!("   note: {l}"));
    }
    let sizes = [10_000u64, 100_000, 1_000_000];
    let meds: Vec<Option<f64>> = sizes
        .iter()
        .map(|n| {
            o.row(
                &format!("store of {n:>9} records"),
                &format!("follow_100_new/{n}"),
            )
        })
        .collect();
    o.ratio_row("1M / 10k", meds[2], meds[0], None);
    o.ratio_row("100k / 10k", meds[1], meds[0], None);
    if let (Some(a), Some(b), Some(c)) = (meds[0], meds[1], meds[2]) {
        let spread = a.max(b).max(c) / a.min(b).min(c);
        o.line(&format!(
            "   {:<52} {:>10}   flat (within 1.25x): {}",
            "largest / smallest",
            ratio(spread),
            verdict(spread <= 1.25)
        ));
    }
    o.line("");

    o.line("5. codec: encode + decode of one Record (serde), postcard 1.x vs bincode =2.0.1");
    o.line(&format!(
        "   {:<14} {:>9} {:>17} {:>16}",
        "record", "postcard", "bincode standard", "bincode legacy"
    ));
    let recs = codec_records();
    for (name, rec) in &recs {
        let (p, s, l) = encoded_sizes(rec);
        o.line(&format!("   {name:<14} {p:>7} B {s:>15} B {l:>14} B"));
    }
    for (name, _) in &recs {
        let pc = o.row(
            &format!("postcard  {name}"),
            &format!("codec/postcard/{name}"),
        );
        let bc = o.row(
            &format!("bincode   {name} (standard config)"),
            &format!("codec/bincode/{name}"),
        );
        o.ratio_row(&format!("bincode / postcard, {name}"), bc, pc, None);
    }
    for l in notes.of("codec") {
        o.line(&format!("   note: {l}"));
    }

    if !o.missing.is_empty() {
        o.line("");
        o.line(&format!(
            "Not measured by this run (filtered out, or no estimates in {}): {}",
            o.dir.display(),
            o.missing.join(", ")
        ));
    }
    o.text
}

/// Prints the summary and saves it: to [`results_file`] when the run measured every
/// benchmark, else (a filtered run) beside it as `core-partial.txt`, so a partial run never
/// replaces the figures of a full one.
pub fn print_and_save(since: SystemTime, load_at_start: &str, notes: &Notes) {
    let text = render(since, load_at_start, notes);
    println!("\n{text}");
    let mut path = results_file();
    if text.contains("\nNot measured by this run") {
        path.set_file_name("core-partial.txt");
    }
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, &text));
    match saved {
        Ok(()) => println!("Saved to {}", path.display()),
        Err(e) => eprintln!("could not save the summary to {}: {e}", path.display()),
    }
}
