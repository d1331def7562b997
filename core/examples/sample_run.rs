//! Writes one sample run into a store, the way an xdist session would: a controller, a few
//! workers with passing, failing and skipped tests, fixtures and properties, and one worker
//! process that is `SIGKILLed` in the middle of a test. Used by `tests/test_report_html.py`.
//!
//! usage: `sample_run` `STORE_DIR` [--tests N] [--workers N]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use blackbox_core::{
    now_mono_ns, now_wall_ns, Durability, Phase, Record, Recorder, Role, Store, Value,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CRASHING: &str = "tests/test_native.py::test_segfaults_in_extension[float16]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1], &args[2], args[3].parse()?);
    }
    let Some(dir) = args.first() else {
        return Err("usage: sample_run STORE_DIR [--tests N] [--workers N]".into());
    };
    let opt = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let (tests, workers) = (opt("--tests", 60)?, opt("--workers", 3)?.max(1));

    let store = Store::create(dir)?;
    let run = store.new_run()?;
    let run_dir = store.run_path(&run)?;
    // Synthetic times: the tests ran over the last few seconds.
    let base = now_mono_ns().saturating_sub(60_000_000_000);

    let mut controller = Recorder::new(&run_dir, Role::Controller, None, Durability::Process);
    controller.record(&Record::RunStart {
        argv: vec![
            "pytest".into(),
            "-n".into(),
            workers.to_string(),
            "tests".into(),
        ],
        rootdir: "/home/ci/project".into(),
        host: "build-7".into(),
        pid: std::process::id(),
        wall_ns: now_wall_ns().saturating_sub(60_000_000_000),
    })?;

    let mut recs: Vec<Recorder> = (0..workers)
        .map(|w| {
            Recorder::new(
                &run_dir,
                Role::Worker,
                Some(format!("gw{w}")),
                Durability::Process,
            )
        })
        .collect();
    let mut clock = vec![base; workers];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..tests {
        let w = i % workers;
        let nodeid = match i {
            3 => "tests/test_escape.py::test_html[<script>alert(1)</script>]".to_owned(),
            _ => format!(
                "tests/test_module_{}.py::test_case_{i}[param-{}]",
                i % 7,
                next() % 100
            ),
        };
        let outcome = match next() % 20 {
            // The test with markup in its name fails, so the report lists it in a table too.
            _ if i == 3 => "failed",
            0 | 1 => "failed",
            2 => "skipped",
            _ => "passed",
        };
        let call_ms = if i % 17 == 0 {
            2_000 + next() % 3_000
        } else {
            5 + next() % 400
        };
        write_test(
            &mut recs[w],
            &nodeid,
            &mut clock[w],
            outcome,
            call_ms,
            i,
            next(),
        )?;
    }
    for r in &mut recs {
        r.close()?;
    }

    // One worker process dies in the middle of a test, killed from outside.
    let exe = std::env::current_exe()?;
    let start = clock.iter().copied().max().unwrap_or(base);
    let mut child = Command::new(exe)
        .args([
            "--child",
            run_dir.to_str().ok_or("run dir is not UTF-8")?,
            &format!("gw{workers}"),
            &start.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no child stdout")?).read_line(&mut line)?;
    child.kill()?;
    child.wait()?;

    controller.record(&Record::Crash {
        test: Some(CRASHING.into()),
        pid: 0,
        worker: Some(format!("gw{workers}")),
        signal: 0,
        exit_code: None,
        phase: None,
        detail: format!("worker 'gw{workers}' crashed while running '{CRASHING}'"),
        wall_ns: now_wall_ns(),
    })?;
    controller.record(&Record::RunEnd {
        exit_status: 1,
        wall_ns: now_wall_ns(),
    })?;
    controller.close()?;
    println!("{run}");
    Ok(())
}

fn write_test(
    rec: &mut Recorder,
    nodeid: &str,
    clock: &mut u64,
    outcome: &str,
    call_ms: u64,
    i: usize,
    r: u64,
) -> Result<()> {
    let ms = 1_000_000;
    rec.record(&Record::TestStart {
        nodeid: nodeid.into(),
        mono_ns: *clock,
    })?;
    let setup_ms = if i < 3 { 800 } else { 1 + r % 30 };
    let fixture = |name: &str, scope: &str, d_ms: u64, mono: u64| Record::Fixture {
        name: name.into(),
        scope: scope.into(),
        setup: true,
        test: Some(nodeid.into()),
        duration_s: d_ms as f64 / 1e3,
        mono_ns: mono,
    };
    if i < 3 {
        rec.record(&fixture("database", "session", 800, *clock + 800 * ms))?;
    }
    rec.record(&fixture(
        "tmp_path",
        "function",
        1 + r % 5,
        *clock + setup_ms * ms,
    ))?;
    rec.record(&fixture(
        "model_weights",
        "module",
        r % 20,
        *clock + setup_ms * ms,
    ))?;
    let phase = |phase: Phase, outcome: &str, d_ms: u64, mono: u64| Record::TestPhase {
        nodeid: nodeid.into(),
        phase,
        outcome: outcome.into(),
        duration_s: d_ms as f64 / 1e3,
        mono_ns: mono,
        report: None,
    };
    *clock += setup_ms * ms;
    rec.record(&phase(
        Phase::Setup,
        if outcome == "skipped" {
            "skipped"
        } else {
            "passed"
        },
        setup_ms,
        *clock,
    ))?;
    if outcome != "skipped" {
        rec.record(&Record::PropertySet {
            test: Some(nodeid.into()),
            key: "pcc".into(),
            value: Value::Float(0.99 + (r % 100) as f64 / 10_000.0),
            mono_ns: *clock + ms,
        })?;
        if i == 3 {
            rec.record(&Record::PropertySet {
                test: Some(nodeid.into()),
                key: "note".into(),
                value: Value::Str("<img src=x onerror=alert(2)>".into()),
                mono_ns: *clock + ms,
            })?;
        }
        *clock += call_ms * ms;
        rec.record(&phase(Phase::Call, outcome, call_ms, *clock))?;
    }
    *clock += 2 * ms;
    rec.record(&phase(Phase::Teardown, "passed", 2, *clock))?;
    rec.record(&Record::TestEnd {
        nodeid: nodeid.into(),
        mono_ns: *clock,
    })?;
    *clock += 3 * ms;
    Ok(())
}

/// The worker that dies: one passing test, then a test it never finishes.
fn child(run_dir: &str, worker: &str, start: u64) -> Result<()> {
    let mut rec = Recorder::new(
        run_dir,
        Role::Worker,
        Some(worker.into()),
        Durability::Process,
    );
    let mut clock = start;
    write_test(
        &mut rec,
        "tests/test_native.py::test_loads_extension",
        &mut clock,
        "passed",
        120,
        99,
        7,
    )?;
    rec.record(&Record::TestStart {
        nodeid: CRASHING.into(),
        mono_ns: clock,
    })?;
    rec.record(&Record::PropertySet {
        test: Some(CRASHING.into()),
        key: "input_shape".into(),
        value: Value::List(vec![
            Value::Int(1),
            Value::Int(3),
            Value::Int(224),
            Value::Int(224),
        ]),
        mono_ns: clock + 1_500_000_000,
    })?;
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
