//! Builds a history of RUNS runs of TESTS tests each (default 200 x 5,000) in DIR, as the
//! plugin would fold them (three phases, a worker, a property, a fixture per test; 1 in 100
//! tests flips outcome from run to run), for timing `blackbox flaky` on it (benches/README.md).
//!
//! `cargo run --release -p blackbox-benches --example history_build -- DIR [RUNS] [TESTS]`

use std::time::Instant;

use blackbox_core::{fold_view, FoldOptions};
use blackbox_core::{FixtureStats, PhaseView, RunMeta, RunView, TestView};
use blackbox_core::{Phase, Store, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: history_build DIR [RUNS] [TESTS]");
    let runs: usize = args.get(1).map_or(200, |s| s.parse().unwrap());
    let tests: usize = args.get(2).map_or(5_000, |s| s.parse().unwrap());
    let store = Store::create(dir).unwrap();
    let path = store.history_path();
    let opts = FoldOptions {
        keep: runs,
        max_bytes: 0,
        ..FoldOptions::default()
    };
    let started = Instant::now();
    let mut sizes = Vec::new();
    for r in 0..runs {
        let view = run_view(r, tests);
        fold_view(&path, &view, &opts).unwrap();
        sizes.push(std::fs::metadata(&path).unwrap().len());
    }
    let growth = (sizes[sizes.len() - 1] - sizes[0]) as f64 / (sizes.len() - 1).max(1) as f64;
    println!(
        "{runs} runs x {tests} tests folded in {:.1} s; history.redb {:.1} MiB, {:.2} MiB per run",
        started.elapsed().as_secs_f64(),
        sizes[sizes.len() - 1] as f64 / 1_048_576.0,
        growth / 1_048_576.0
    );
}

fn run_view(r: usize, n: usize) -> RunView {
    let phase = |p, o: &str, d| PhaseView {
        phase: p,
        outcome: o.into(),
        duration_s: d,
        location: (0, 0),
    };
    let tests = (0..n)
        .map(|i| {
            let outcome = if i % 100 == 7 && r % 2 == 1 {
                "failed"
            } else {
                "passed"
            };
            TestView {
                nodeid: format!("tests/test_module_{:03}.py::test_case_{i:05}", i / 50),
                outcome: outcome.into(),
                duration_s: 0.001 * (1 + i % 7) as f64,
                worker: Some(format!("gw{}", i % 2)),
                pid: Some(4242 + (i % 2) as u32),
                crashed: false,
                signal: None,
                timeout: None,
                phases: vec![
                    phase(Phase::Setup, "passed", 0.0001),
                    phase(Phase::Call, outcome, 0.001),
                    phase(Phase::Teardown, "passed", 0.0001),
                ],
                properties: vec![("i".into(), Value::Int(i as i64))],
                start_mono_ns: 0,
                end_mono_ns: Some(1),
                last_mono_ns: 1,
                attempt: 1,
            }
        })
        .collect();
    RunView {
        run: RunMeta {
            id: format!("20261201-{:02}{:02}00.{r:06}-beef", r / 60, r % 60),
            started_wall_ns: Some(1_796_000_000_000_000_000 + r as u64 * 60_000_000_000),
            ended_wall_ns: Some(
                1_796_000_000_000_000_000 + r as u64 * 60_000_000_000 + 30_000_000_000,
            ),
            exit_status: Some(0),
            host: Some("ci-runner".into()),
            pid: Some(4242),
            argv: vec!["pytest".into(), "-n".into(), "2".into()],
            rootdir: Some("/src/project".into()),
            live: false,
            ..RunMeta::default()
        },
        tests,
        fixtures: vec![FixtureStats {
            name: "tmp_path".into(),
            scope: "function".into(),
            setups: n as u64,
            teardowns: n as u64,
            total_s: 0.0001 * n as f64,
            mean_s: 0.0001,
            max_s: 0.001,
            teardown_total_s: 0.0001 * n as f64,
        }],
        segments: 3,
        records: 6 * n as u64,
        ..RunView::default()
    }
}
