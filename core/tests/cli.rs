//! The `blackbox` CLI: in-process through `cli::run` (output and exit status), and the
//! built binary for exit statuses, a closed pipe and one-line errors. Stores are written
//! with the real writer API; live and killed runs with real child processes (this test
//! binary re-executed as a worker that records, then hangs or aborts).

#![allow(clippy::many_single_char_names, clippy::struct_field_names)] // short names in tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use blackbox_core::cli::{run, Env, DEFAULT_WIDTH};
use blackbox_core::{
    install_crash_handler, now_mono_ns, now_wall_ns, Durability, Phase, Record, Recorder, Role,
    Store, Value,
};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_blackbox");
const LONG_NODEID: &str = "tests/integration/models/test_transformer_layers.py::TestAttention::test_forward_matches_reference[batch=64-heads=16-dtype=bfloat16-device=cuda:0-kernel=flash]";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "bbx-cli-{name}-{}-{}",
            std::process::id(),
            now_mono_ns()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn store(&self) -> PathBuf {
        self.0.join(".blackbox")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
struct Out {
    code: i32,
    out: String,
    err: String,
}

impl Out {
    fn json(&self) -> Json {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.out))
    }

    /// An error is exactly one line on stderr, and nothing on stdout.
    fn assert_one_line_error(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.err.lines().count(), 1, "{self:?}");
        assert!(
            self.err.starts_with("blackbox: ") && self.err.contains(needle),
            "{self:?}"
        );
        assert!(!self.err.contains("panicked"), "{self:?}");
        assert!(self.out.is_empty(), "{self:?}");
    }
}

fn cli_env(env: &Env, args: &[&str]) -> Out {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(args, env, &mut out, &mut err);
    Out {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn cli(store: &Path, args: &[&str]) -> Out {
    cli_env(
        &Env {
            blackbox_dir: Some(store.to_owned()),
            ..Env::default()
        },
        args,
    )
}

fn bin(store: &Path, args: &[&str]) -> Out {
    let o = Command::new(BIN)
        .args(args)
        .env("BLACKBOX_DIR", store)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8(o.stdout).unwrap(),
        err: String::from_utf8(o.stderr).unwrap(),
    }
}

fn phase(nodeid: &str, phase: Phase, outcome: &str, d: f64, mono: u64) -> Record {
    Record::TestPhase {
        nodeid: nodeid.into(),
        phase,
        outcome: outcome.into(),
        duration_s: d,
        mono_ns: mono,
        report: None,
    }
}

/// Records one whole test: start, setup, call (unless skipped in setup), teardown, end.
fn write_test(rec: &mut Recorder, nodeid: &str, setup: &str, call: Option<(&str, f64)>) {
    let t = now_mono_ns();
    rec.record(&Record::TestStart {
        nodeid: nodeid.into(),
        mono_ns: t,
    })
    .unwrap();
    rec.record(&phase(nodeid, Phase::Setup, setup, 0.001, t + 1_000))
        .unwrap();
    if let Some((outcome, d)) = call {
        rec.record(&phase(nodeid, Phase::Call, outcome, d, t + 2_000))
            .unwrap();
    }
    rec.record(&phase(nodeid, Phase::Teardown, "passed", 0.001, t + 3_000))
        .unwrap();
    rec.record(&Record::TestEnd {
        nodeid: nodeid.into(),
        mono_ns: t + 4_000,
    })
    .unwrap();
}

fn fixture(name: &str, scope: &str, d: f64) -> Record {
    Record::Fixture {
        name: name.into(),
        scope: scope.into(),
        setup: true,
        test: None,
        duration_s: d,
        mono_ns: now_mono_ns(),
    }
}

fn run_start() -> Record {
    Record::RunStart {
        argv: vec!["pytest".into(), "tests".into()],
        rootdir: "/src/project".into(),
        host: "ci-host".into(),
        pid: std::process::id(),
        wall_ns: now_wall_ns(),
    }
}

/// A finished run of a main process: passes, a failure, a skip, a setup error, a slow test
/// with properties, a very long nodeid, fixtures, and a forked child that segfaulted.
fn write_sample(store: &Store) -> String {
    let id = store.new_run().unwrap();
    let dir = store.run_path(&id).unwrap();
    let mut main = Recorder::new(&dir, Role::Main, None, Durability::Process);
    main.record(&run_start()).unwrap();
    write_test(
        &mut main,
        "t.py::test_fast",
        "passed",
        Some(("passed", 0.000_85)),
    );
    write_test(
        &mut main,
        "t.py::test_slow",
        "passed",
        Some(("passed", 2.5)),
    );
    main.record(&Record::PropertySet {
        test: Some("t.py::test_slow".into()),
        key: "model".into(),
        value: Value::Str("resnet50".into()),
        mono_ns: now_mono_ns(),
    })
    .unwrap();
    write_test(
        &mut main,
        "t.py::test_fails",
        "passed",
        Some(("failed", 0.3)),
    );
    write_test(&mut main, "t.py::test_skip", "skipped", None);
    write_test(&mut main, "t.py::test_setup_error", "failed", None);
    write_test(&mut main, LONG_NODEID, "passed", Some(("passed", 0.0123)));
    main.record(&fixture("db", "session", 1.5)).unwrap();
    for _ in 0..5 {
        main.record(&fixture("tmp_path", "function", 0.01)).unwrap();
    }
    // A forked child ran test_segv and died; the parent says so.
    let mut child = Recorder::new(&dir, Role::Forked, None, Durability::Process);
    child
        .record(&Record::TestStart {
            nodeid: "t.py::test_segv".into(),
            mono_ns: now_mono_ns(),
        })
        .unwrap();
    child.close().unwrap();
    main.record(&Record::Crash {
        test: Some("t.py::test_segv".into()),
        pid: 4242,
        worker: None,
        signal: libc::SIGSEGV,
        exit_code: None,
        phase: Some("call".into()),
        detail: "forked child died".into(),
        wall_ns: now_wall_ns(),
    })
    .unwrap();
    main.record(&Record::RunEnd {
        exit_status: 1,
        wall_ns: now_wall_ns(),
    })
    .unwrap();
    main.close().unwrap();
    id
}

fn sample() -> (TempDir, Store, String) {
    let t = TempDir::new("sample");
    let store = Store::create(t.store()).unwrap();
    let id = write_sample(&store);
    (t, store, id)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

#[test]
fn stats_reads_like_a_summary_and_fits_100_columns() {
    let (t, _store, id) = sample();
    let o = cli(&t.store(), &["stats"]);
    assert_eq!((o.code, o.err.as_str()), (0, ""), "{o:?}");
    for needle in [
        format!("run {id}"),
        "exit 1".into(),
        "host ci-host".into(),
        "tests 7:".into(),
        "1 crashed".into(),
        "1 failed".into(),
        "1 error".into(),
        "1 skipped".into(),
        "slowest tests".into(),
        "slowest fixtures".into(),
        "SIGSEGV".into(),
        "2.50s".into(),
        "2.85ms".into(),
    ] {
        assert!(o.out.contains(&needle), "{needle:?} missing in\n{}", o.out);
    }
    for line in o.out.lines() {
        assert!(
            line.chars().count() <= DEFAULT_WIDTH,
            "too wide ({}): {line}",
            line.chars().count()
        );
    }
    assert!(
        !o.out.contains(LONG_NODEID)
            && o.out.contains("tests/integration/")
            && o.out.contains("kernel=flash]")
    );
    assert!(o.out.contains('…'));
    assert!(
        !o.out.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let (t, _store, _) = sample();
    let env = |tty: bool, no_color: bool| Env {
        stdout_is_tty: tty,
        no_color,
        blackbox_dir: Some(t.store()),
        columns: Some(200),
        cwd: None,
    };
    assert!(cli_env(&env(true, false), &["stats"])
        .out
        .contains("\x1b[1;31m"));
    assert!(!cli_env(&env(true, true), &["stats"]).out.contains('\x1b'));
    assert!(!cli_env(&env(false, false), &["stats"]).out.contains('\x1b'));
    assert!(cli_env(&env(false, false), &["tests", "--color", "always"])
        .out
        .contains('\x1b'));
    assert!(!cli_env(&env(true, false), &["tests", "--color=never"])
        .out
        .contains('\x1b'));
    // A narrow terminal gets its width.
    let narrow = Env {
        columns: Some(60),
        ..env(false, false)
    };
    assert!(cli_env(&narrow, &["tests"])
        .out
        .lines()
        .all(|l| l.chars().count() <= 60));
}

#[test]
fn tests_come_crashes_first_then_failures_then_slowest() {
    let (t, _store, _) = sample();
    let o = cli(&t.store(), &["tests", "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let order: Vec<String> = o.json()["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["nodeid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "t.py::test_segv",
            "t.py::test_fails",
            "t.py::test_setup_error",
            "t.py::test_slow",
            LONG_NODEID,
            "t.py::test_fast",
            "t.py::test_skip"
        ]
    );
    let table = cli(&t.store(), &["tests"]);
    let rows: Vec<&str> = table.out.lines().collect();
    assert!(
        rows[0].starts_with("OUTCOME")
            && rows[1].starts_with("crashed SIGSEGV")
            && rows[2].starts_with("failed"),
        "{}",
        table.out
    );
    let failed = cli(
        &t.store(),
        &["tests", "--outcome", "failed,error", "--json"],
    )
    .json();
    assert_eq!(failed["tests"].as_array().unwrap().len(), 2);
    let limited = cli(&t.store(), &["tests", "-n", "2"]);
    assert_eq!(limited.out.lines().count(), 4, "{}", limited.out);
    assert!(limited.out.contains("2 of 7 tests shown"));
}

#[test]
fn fixtures_slowest_total_first_and_crashes_with_signal() {
    let (t, _store, _) = sample();
    let f = cli(&t.store(), &["fixtures"]);
    let lines: Vec<&str> = f.out.lines().collect();
    assert!(
        lines[0].contains("TOTAL") && lines[1].ends_with("db") && lines[2].ends_with("tmp_path"),
        "{}",
        f.out
    );
    assert!(
        lines[2].contains("50.0ms") && lines[2].contains("  5  "),
        "{}",
        f.out
    );
    let c = cli(&t.store(), &["crashes"]);
    assert!(
        c.out.contains("SIGSEGV")
            && c.out.contains("4242")
            && c.out.contains("t.py::test_segv")
            && c.out.contains("forked child died")
    );
    let j = cli(&t.store(), &["crashes", "--json"]).json();
    assert_eq!(j["crashes"][0]["signal"], 11);
    assert_eq!(j["crashes"][0]["pid"], 4242);
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

fn assert_type(v: &Json, field: &str, kinds: &[&str]) {
    let x = &v[field];
    let kind = match x {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_i64() || n.is_u64() => "int",
        Json::Number(_) => "float",
        Json::String(_) => "str",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    // A whole float prints as an int; a float field accepts both.
    let ok = kinds.contains(&kind) || (kind == "int" && kinds.contains(&"float"));
    assert!(ok, "{field}: {kind} is not one of {kinds:?} in {v}");
}

#[test]
fn stats_json_has_the_documented_schema() {
    let (t, store, id) = sample();
    let j = cli(&t.store(), &["stats", "--json"]).json();
    let run = &j["run"];
    assert_eq!(run["id"], id.as_str());
    assert_type(run, "started", &["float"]);
    assert_type(run, "ended", &["float"]);
    assert_type(run, "exit_status", &["int"]);
    assert_type(run, "host", &["str"]);
    assert_type(run, "pid", &["int"]);
    assert_type(run, "argv", &["array"]);
    assert_type(run, "rootdir", &["str"]);
    assert_type(run, "live", &["bool"]);
    assert_type(run, "segments", &["int"]);
    assert_type(run, "records", &["int"]);
    let tests = j["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 7);
    for t in tests {
        assert_type(t, "nodeid", &["str"]);
        assert_type(t, "outcome", &["str"]);
        assert_type(t, "duration_s", &["float"]);
        assert_type(t, "worker", &["str", "null"]);
        assert_type(t, "pid", &["int", "null"]);
        assert_type(t, "crashed", &["bool"]);
        assert_type(t, "signal", &["int", "null"]);
        assert_type(t, "signal_name", &["str", "null"]);
        assert_type(t, "phases", &["array"]);
        assert_type(t, "properties", &["object"]);
    }
    let slow = tests
        .iter()
        .find(|t| t["nodeid"] == "t.py::test_slow")
        .unwrap();
    assert_eq!(slow["properties"]["model"], "resnet50");
    for f in j["fixtures"].as_array().unwrap() {
        assert_type(f, "name", &["str"]);
        assert_type(f, "scope", &["str"]);
        assert_type(f, "setups", &["int"]);
        for k in ["total_s", "mean_s", "max_s", "teardown_total_s"] {
            assert_type(f, k, &["float"]);
        }
    }
    let c = &j["crashes"][0];
    assert_eq!(
        (
            c["nodeid"].as_str(),
            c["pid"].as_u64(),
            c["signal"].as_i64()
        ),
        (Some("t.py::test_segv"), Some(4242), Some(11))
    );
    assert_type(c, "worker", &["str", "null"]);
    let w = &j["workers"][0];
    for (k, kinds) in [
        ("id", &["str"][..]),
        ("pids", &["array"]),
        ("tests", &["int"]),
        ("crashes", &["int"]),
        ("alive", &["bool"]),
    ] {
        assert_type(w, k, kinds);
    }
    assert_type(&j, "timed", &["array"]);
    assert_type(&j, "problems", &["array"]);
    // Streamed, it is still exactly `RunView::to_json`, the one definition of the schema.
    // (Through text both ways: serde_json's parser may round a float's last digit.)
    let expected = store.snapshot(&id).unwrap().view().to_json();
    assert_eq!(
        j,
        serde_json::from_str::<Json>(&expected.to_string()).unwrap()
    );
    // Every command's JSON starts with the same run object.
    for cmd in ["tests", "fixtures", "crashes"] {
        assert_eq!(
            cli(&t.store(), &[cmd, "--json"]).json()["run"],
            j["run"],
            "{cmd}"
        );
    }
}

#[test]
fn runs_lists_every_run_with_counts_and_liveness() {
    let (t, store, first) = sample();
    let second = store.new_run().unwrap();
    let mut live = Recorder::new(
        store.run_path(&second).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    live.record(&run_start()).unwrap();
    write_test(&mut live, "t.py::test_one", "passed", Some(("passed", 0.1)));
    let o = cli(&t.store(), &["runs"]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.out.lines().collect();
    assert!(
        lines[0].starts_with("RUN") && lines[0].contains("STARTED") && lines[0].contains("CRASHES")
    );
    assert!(
        lines[1].starts_with(&first) && lines[1].contains("exit 1") && lines[1].contains(" 7 "),
        "{}",
        o.out
    );
    assert!(
        lines[2].starts_with(&second) && lines[2].contains("live"),
        "{}",
        o.out
    );
    let j = cli(&t.store(), &["runs", "--json"]).json();
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(
        (
            runs[0]["tests"].as_u64(),
            runs[0]["crashes"].as_u64(),
            runs[0]["live"].as_bool()
        ),
        (Some(7), Some(1), Some(false))
    );
    assert_eq!(
        (runs[1]["id"].as_str(), runs[1]["live"].as_bool()),
        (Some(second.as_str()), Some(true))
    );
    // The default run is the latest; --run takes an id or a unique start of it.
    assert!(cli(&t.store(), &["stats"]).out.contains(&second));
    assert!(cli(&t.store(), &["stats", "--run", &first])
        .out
        .contains(&first));
    assert!(
        cli(&t.store(), &["stats", "--run", &first[..first.len() - 2]])
            .out
            .contains(&first)
    );
    let ambiguous = cli(&t.store(), &["stats", "--run", "2"]);
    ambiguous.assert_one_line_error(1, "matches 2 runs");
    drop(live);
}

#[test]
fn dump_jsonl_streams_every_record_with_its_segment() {
    let (t, store, id) = sample();
    let records = cli(&t.store(), &["stats", "--json"]).json()["run"]["records"]
        .as_u64()
        .unwrap();
    let o = cli(&t.store(), &["dump", "--jsonl"]);
    assert_eq!((o.code, o.err.as_str()), (0, ""));
    let lines: Vec<Json> = o
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, records);
    let run_dir = store.run_path(&id).unwrap();
    for l in &lines {
        assert!(
            l["kind"].is_string() && l["offset"].as_u64().unwrap() >= 4096,
            "{l}"
        );
        assert!(
            Path::new(l["segment"].as_str().unwrap()).starts_with(&run_dir),
            "{l}"
        );
        assert_eq!(
            l["segment_pid"].as_u64(),
            Some(u64::from(std::process::id()))
        );
    }
    assert_eq!(
        lines.iter().filter(|l| l["kind"] == "test_start").count(),
        7
    );
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "property_set" && l["value"] == "resnet50"));
    let human = cli(&t.store(), &["dump"]);
    assert!(
        human.out.contains("closed cleanly") && human.out.contains("test_phase"),
        "{}",
        human.out
    );
}

/// One record of every kind, in one segment.
fn every_kind() -> Vec<Record> {
    let test = Some("t.py::x".to_owned());
    vec![
        Record::RunStart {
            argv: vec!["pytest".into(), "-n".into(), "2".into()],
            rootdir: "/src".into(),
            host: "h".into(),
            pid: 1,
            wall_ns: 2,
        },
        Record::TestStart {
            nodeid: "t.py::x".into(),
            mono_ns: 3,
        },
        Record::TestPhase {
            nodeid: "t.py::x".into(),
            phase: Phase::Call,
            outcome: "failed".into(),
            duration_s: 0.5,
            mono_ns: 4,
            report: Some(Value::Dict(vec![(
                "when".into(),
                Value::Str("call".into()),
            )])),
        },
        Record::TestEnd {
            nodeid: "t.py::x".into(),
            mono_ns: 5,
        },
        Record::PropertySet {
            test: test.clone(),
            key: "k".into(),
            value: Value::Bytes(vec![1, 2]),
            mono_ns: 6,
        },
        Record::PropertyAppend {
            test: None,
            key: "a".into(),
            value: Value::BigInt("123456789012345678901234567890".into()),
            mono_ns: 7,
        },
        Record::Fixture {
            name: "db".into(),
            scope: "module".into(),
            setup: false,
            test: test.clone(),
            duration_s: 0.25,
            mono_ns: 8,
        },
        Record::Timed {
            name: "load".into(),
            test: test.clone(),
            duration_s: 0.125,
            mono_ns: 9,
        },
        Record::Crash {
            test: test.clone(),
            pid: 42,
            worker: Some("gw1".into()),
            signal: 11,
            exit_code: None,
            phase: Some("call".into()),
            detail: "worker 'gw1' crashed".into(),
            wall_ns: 10,
        },
        Record::Exit {
            test: test.clone(),
            code: 3,
            wall_ns: 11,
        },
        Record::Attachment {
            test,
            kind: "faulthandler".into(),
            path: "/run/faulthandler-42.txt".into(),
        },
        Record::RunEnd {
            exit_status: 1,
            wall_ns: 12,
        },
    ]
}

#[test]
fn dump_jsonl_is_faithful_and_lower_case_for_every_kind_of_record() {
    let t = TempDir::new("dumpkinds");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Worker,
        Some("gw0".into()),
        Durability::Process,
    );
    let records = every_kind();
    for r in &records {
        rec.record(r).unwrap();
    }
    rec.close().unwrap();
    let o = cli(&t.store(), &["dump", "--jsonl"]);
    assert_eq!((o.code, o.err.as_str()), (0, ""));
    let lines: Vec<Json> = o
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The recorder's own first record, then ours.
    assert_eq!(lines.len(), records.len() + 1);
    let process = &lines[0];
    assert_eq!(
        (&process["kind"], &process["role"], &process["worker"]),
        (&"process".into(), &"worker".into(), &"gw0".into())
    );
    for (r, l) in records.iter().zip(&lines[1..]) {
        // The fields serde names, each under its own name (an attachment's own `kind` as
        // `attachment_kind`), plus kind, segment, segment_pid and offset: nothing lost.
        let serde = serde_json::to_value(r).unwrap();
        let fields = serde.as_object().unwrap().values().next().unwrap();
        let mut want: Vec<String> = fields.as_object().unwrap().keys().cloned().collect();
        if r.kind() == "attachment" {
            want.retain(|k| k != "kind");
            want.push("attachment_kind".into());
        }
        want.extend(["kind", "segment", "segment_pid", "offset"].map(String::from));
        want.sort();
        let mut got: Vec<String> = l.as_object().unwrap().keys().cloned().collect();
        got.sort();
        assert_eq!(got, want, "{l}");
        assert_eq!(l["kind"], r.kind());
        for (k, v) in fields.as_object().unwrap() {
            match (r, k.as_str()) {
                (Record::Attachment { .. }, "kind") => assert_eq!(l["attachment_kind"], *v),
                (Record::TestPhase { phase, .. }, "phase") => {
                    assert_eq!(l["phase"], phase.as_str());
                    assert_eq!(Phase::parse(l["phase"].as_str().unwrap()), Some(*phase));
                }
                (
                    Record::PropertySet { value, .. } | Record::PropertyAppend { value, .. },
                    "value",
                ) => assert_eq!(l["value"], value.to_json()),
                (Record::TestPhase { report, .. }, "report") => {
                    assert_eq!(l["report"], report.as_ref().unwrap().to_json());
                }
                _ => assert_eq!(l[k], *v, "{k} in {l}"),
            }
        }
    }
    // No enum in its Rust spelling anywhere.
    assert!(
        !o.out.contains("\"Worker\"") && !o.out.contains("\"Call\""),
        "{}",
        o.out
    );
}

// ---------------------------------------------------------------------------------------
// Damage, and commands that keep reading around it
// ---------------------------------------------------------------------------------------

#[test]
fn check_passes_a_healthy_store_and_names_file_and_offset_of_damage() {
    let (t, store, id) = sample();
    let ok = cli(&t.store(), &["check"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.out.contains(&format!("{id}  ok")) && ok.out.contains("no damage"),
        "{}",
        ok.out
    );
    assert_eq!(cli(&t.store(), &["check", "--json"]).json()["ok"], true);

    // Break the 10th record of the main segment: what came before still reads.
    let dump: Vec<Json> = cli(&t.store(), &["dump", "--jsonl"])
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let main_seg = dump.iter().find(|l| l["kind"] == "run_start").unwrap()["segment"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = dump
        .iter()
        .filter(|l| l["segment"] == main_seg.as_str())
        .nth(9)
        .unwrap();
    let offset = victim["offset"].as_u64().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&main_seg)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset + 9).unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], offset + 9).unwrap();
    drop(f);

    let bad = cli(&t.store(), &["check"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.out.contains(&format!(
            "{main_seg}: at offset {offset}: checksum mismatch"
        )),
        "{}",
        bad.out
    );
    assert!(
        bad.out.contains("DAMAGED") && bad.out.contains("damage found"),
        "{}",
        bad.out
    );
    let j = cli(&t.store(), &["check", "--json"]);
    assert_eq!(j.code, 1);
    let j = j.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["runs"][0]["problems"][0]["offset"].as_u64(), Some(offset));
    assert_eq!(j["runs"][0]["problems"][0]["path"], main_seg.as_str());
    assert_eq!(bin(&t.store(), &["check"]).code, 1);

    for cmd in ["stats", "tests", "fixtures", "crashes", "dump", "runs"] {
        let o = cli(&t.store(), &[cmd]);
        assert_eq!(o.code, 0, "{cmd}: {o:?}");
        if cmd != "runs" {
            assert_eq!(o.err.lines().count(), 1, "{cmd}: {o:?}");
            assert!(
                o.err.starts_with("blackbox: warning: ")
                    && o.err.contains(&main_seg)
                    && o.err.contains(&format!("offset {offset}")),
                "{cmd}: {}",
                o.err
            );
        }
    }
    // The tests recorded before the damage are all there.
    let tests = cli(&t.store(), &["tests", "--json"]).json();
    let names: Vec<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["nodeid"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"t.py::test_fast"), "{names:?}");
    assert!(cli(&t.store(), &["runs"]).out.contains("damaged"));
    let _ = store;
}

#[test]
fn unreadable_and_foreign_segments_are_damage_not_errors() {
    let (t, store, id) = sample();
    let dir = store.run_path(&id).unwrap();
    // A directory where a segment should be, and a file of zeros: both named like segments.
    std::fs::create_dir(dir.join("seg-1-00.seg")).unwrap();
    std::fs::write(dir.join("seg-2-00.seg"), vec![0u8; 8192]).unwrap();
    let check = cli(&t.store(), &["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check
            .out
            .contains("seg-1-00.seg: at offset 0: is not a regular file"),
        "{}",
        check.out
    );
    assert!(
        check.out.contains("seg-2-00.seg: at offset 0: wrong magic"),
        "{}",
        check.out
    );
    let stats = cli(&t.store(), &["stats"]);
    assert_eq!(stats.code, 0, "{stats:?}");
    assert!(
        stats.err.contains("2 damaged segments") && stats.err.lines().count() == 1,
        "{}",
        stats.err
    );
    assert!(stats.out.contains("tests 7:"));

    // A segment this user may not read (root reads everything: then only the above counts).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let seg = segments(&dir)
            .into_iter()
            .find(|p| {
                std::fs::metadata(p).unwrap().is_file()
                    && std::fs::metadata(p).unwrap().len() > 8192
            })
            .unwrap();
        std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o000)).unwrap();
        let check = cli(&t.store(), &["check"]);
        assert_eq!(check.code, 1);
        assert!(
            check
                .out
                .contains(&format!("{}: at offset 0:", seg.display()))
                && check.out.contains("ermission denied"),
            "{}",
            check.out
        );
        assert_eq!(cli(&t.store(), &["stats"]).code, 0);
        std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn a_store_of_a_future_format_version_is_refused_in_one_line() {
    let (t, store, id) = sample();
    let seg = segments(&store.run_path(&id).unwrap()).remove(0);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
    drop(f);
    for cmd in ["stats", "tests", "dump", "report"] {
        let args: Vec<&str> = if cmd == "report" {
            vec![cmd, "--html", "/dev/null"]
        } else {
            vec![cmd]
        };
        let o = cli(&t.store(), &args);
        o.assert_one_line_error(1, "format version 99");
        assert!(
            o.err.contains(&seg.display().to_string()) && o.err.contains("upgrade"),
            "{}",
            o.err
        );
    }
    let check = cli(&t.store(), &["check"]);
    assert_eq!(check.code, 1);
    assert!(check.out.contains("format version 99"), "{}", check.out);
    bin(&t.store(), &["stats"]).assert_one_line_error(1, "format version 99");
}

// ---------------------------------------------------------------------------------------
// Bad input: one line, what is wrong and what to do, exit 1 (2 for usage)
// ---------------------------------------------------------------------------------------

#[test]
fn bad_input_is_one_line_with_what_to_do() {
    let t = TempDir::new("bad");
    let missing = t.0.join("nowhere");
    let o = cli(&missing, &["stats"]);
    o.assert_one_line_error(1, "no blackbox store at");
    assert!(
        o.err.contains("--dir") && o.err.contains("BLACKBOX_DIR"),
        "{}",
        o.err
    );
    cli(&missing, &["runs"]).assert_one_line_error(1, "no blackbox store");
    cli(&missing, &["check"]).assert_one_line_error(1, "no blackbox store");

    let empty = t.store();
    Store::create(&empty).unwrap();
    cli(&empty, &["stats"]).assert_one_line_error(1, "holds no run yet");
    cli(&empty, &["report", "--html", "x.html"]).assert_one_line_error(1, "holds no run yet");
    // Listing or checking an empty store is fine.
    let runs = cli(&empty, &["runs"]);
    assert_eq!(runs.code, 0);
    assert!(runs.out.contains("no runs"));
    assert_eq!(cli(&empty, &["check"]).code, 0);

    let store = Store::open(&empty).unwrap();
    write_sample(&store);
    let o = cli(&empty, &["stats", "--run", "20990101-000000.000000-ffff"]);
    o.assert_one_line_error(1, "no run \"20990101-000000.000000-ffff\"");
    assert!(o.err.contains("`blackbox runs`"), "{}", o.err);
    cli(&empty, &["stats", "--run", "../../etc"]).assert_one_line_error(1, "no run");

    let file = t.0.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    cli(&file, &["stats"]).assert_one_line_error(1, "is not a directory");

    let bad_report = cli(
        &empty,
        &[
            "report",
            "--html",
            &t.0.join("no/such/dir/r.html").to_string_lossy(),
        ],
    );
    bad_report.assert_one_line_error(1, "writing report");

    let usage = cli(&empty, &["stats", "--frobnicate"]);
    usage.assert_one_line_error(2, "unknown option --frobnicate");
    assert!(usage.err.contains("`blackbox stats --help`"));
    cli(&empty, &["statz"]).assert_one_line_error(2, "did you mean `stats`");
    cli(&empty, &["report"]).assert_one_line_error(2, "--html FILE");
    cli(&empty, &["runs", "--run", "x"]).assert_one_line_error(2, "not an option of `runs`");
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

#[test]
fn the_binary_exits_0_1_2_and_says_one_line() {
    let (t, _store, _) = sample();
    let v = bin(&t.store(), &["--version"]);
    assert_eq!(
        (v.code, v.out.trim()),
        (0, concat!("blackbox ", env!("CARGO_PKG_VERSION")))
    );
    let h = bin(&t.store(), &["--help"]);
    assert_eq!(h.code, 0);
    for c in [
        "stats", "tests", "fixtures", "crashes", "dump", "runs", "check", "report",
    ] {
        assert!(
            h.out.contains(&format!("\n  {c} ")),
            "{c} missing from help:\n{}",
            h.out
        );
    }
    assert!(bin(&t.store(), &["help", "report"])
        .out
        .contains("--html FILE"));
    let s = bin(&t.store(), &["stats"]);
    assert_eq!((s.code, s.err.as_str()), (0, ""), "{s:?}");
    assert!(s.out.contains("slowest tests") && !s.out.contains('\x1b'));
    bin(&t.store(), &["stats", "--bogus"]).assert_one_line_error(2, "unknown option --bogus");
    bin(&t.0.join("missing"), &["stats"]).assert_one_line_error(1, "no blackbox store");
    let no_args = bin(&t.store(), &[]);
    assert_eq!(no_args.code, 0);
    assert!(no_args.out.contains("usage: blackbox"));
    // --dir wins over BLACKBOX_DIR.
    let d = bin(
        &t.0.join("missing"),
        &["stats", "--dir", &t.store().to_string_lossy()],
    );
    assert_eq!(d.code, 0, "{d:?}");
}

#[test]
fn a_closed_pipe_ends_dump_quietly() {
    let t = TempDir::new("pipe");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    for i in 0..3000 {
        write_test(
            &mut rec,
            &format!("t.py::test_{i}"),
            "passed",
            Some(("passed", 0.001)),
        );
    }
    rec.close().unwrap();
    let mut child = Command::new(BIN)
        .args(["dump", "--jsonl"])
        .env("BLACKBOX_DIR", t.store())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone (dropped above): the writer gets EPIPE.
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(first.contains("\"kind\":\"process\""), "{first}");
    assert_eq!((status.code(), err.as_str()), (Some(0), ""));
}

#[test]
fn report_writes_one_self_contained_escaped_page() {
    let t = TempDir::new("report");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    rec.record(&run_start()).unwrap();
    let evil = "t.py::test_x[<script>alert(1)</script>]";
    write_test(&mut rec, evil, "passed", Some(("failed", 0.2)));
    rec.record(&Record::PropertySet {
        test: Some(evil.into()),
        key: "<b>k</b>".into(),
        value: Value::Str("</script><img src=x onerror=alert(2)>".into()),
        mono_ns: now_mono_ns(),
    })
    .unwrap();
    write_test(&mut rec, "t.py::test_ok", "passed", Some(("passed", 0.1)));
    rec.record(&fixture("db", "session", 0.5)).unwrap();
    rec.close().unwrap();
    let page = t.0.join("report.html");
    let o = cli(&t.store(), &["report", "--html", &page.to_string_lossy()]);
    assert_eq!((o.code, o.err.as_str()), (0, ""), "{o:?}");
    assert!(
        o.out.starts_with("wrote ") && o.out.contains("2 tests"),
        "{}",
        o.out
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        html.contains("default-src 'none'"),
        "a CSP forbids every fetch"
    );
    assert!(!html.contains("<script>alert") && !html.contains("<img") && !html.contains("<b>k"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(
        html.matches("<script").count(),
        2,
        "the data block and the page script only"
    );
    assert_eq!(html.matches("class=\"bar ").count(), 2);
    for needle in ["http://", "https://", "src=\"//", "@import", "url("] {
        assert!(!html.contains(needle), "{needle}");
    }
    let stdout = cli(&t.store(), &["report", "--html", "-"]);
    assert!(stdout.out.starts_with("<!doctype html>") && stdout.out.ends_with("</html>\n"));
}

// ---------------------------------------------------------------------------------------
// Live and killed runs, with real processes
// ---------------------------------------------------------------------------------------

const CHILD_ENV: &str = "BLACKBOX_CLI_TEST_CHILD";
const HANGING: &str = "t.py::test_hangs[gw1]";

/// Not a test: the body of a child process (this binary, re-executed). A worker `gw1`
/// records one passing test, starts another and records a property in it, says READY,
/// then hangs (to be `SIGKILLed`) or aborts (its crash handler marks the segment).
#[test]
fn child_writer_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, mode) = spec.split_once('|').unwrap();
    if mode == "abort" {
        install_crash_handler().unwrap();
    }
    let mut rec = Recorder::new(dir, Role::Worker, Some("gw1".into()), Durability::Process);
    write_test(
        &mut rec,
        "t.py::test_before",
        "passed",
        Some(("passed", 0.01)),
    );
    rec.start_test(HANGING).unwrap();
    rec.record(&phase(
        HANGING,
        Phase::Setup,
        "passed",
        0.002,
        now_mono_ns(),
    ))
    .unwrap();
    rec.record(&Record::PropertySet {
        test: Some(HANGING.into()),
        key: "input".into(),
        value: Value::Int(7),
        mono_ns: now_mono_ns(),
    })
    .unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    if mode == "abort" {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::process::abort();
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A child process that is killed if the test fails before it does.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(run_dir: &Path, mode: &str) -> Worker {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{mode}", run_dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            // libtest prints `test child_writer_entry ... ` on the same line first.
            Some(Ok(l)) if l.trim_end().ends_with("READY") => break,
            Some(Ok(_)) => {}
            other => panic!("the child ended before READY: {other:?}"),
        }
    }
    // Keep the pipe open: the hanging child never writes again.
    std::mem::forget(lines);
    Worker(child)
}

fn test_json<'a>(j: &'a Json, nodeid: &str) -> &'a Json {
    j["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["nodeid"] == nodeid)
        .unwrap_or_else(|| panic!("{nodeid} not in {j}"))
}

#[test]
fn a_live_run_shows_running_and_a_sigkilled_worker_shows_crashed() {
    let t = TempDir::new("live");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let dir = store.run_path(&id).unwrap();
    let mut controller = Recorder::new(&dir, Role::Controller, None, Durability::Process);
    controller.record(&run_start()).unwrap();
    let mut worker = spawn_worker(&dir, "hang");
    let pid = worker.0.id();

    let live = cli(&t.store(), &["stats", "--json"]).json();
    assert_eq!(live["run"]["live"], true);
    let hanging = test_json(&live, HANGING);
    assert_eq!(
        (
            hanging["outcome"].as_str(),
            hanging["worker"].as_str(),
            hanging["pid"].as_u64()
        ),
        (Some("running"), Some("gw1"), Some(u64::from(pid)))
    );
    assert_eq!(hanging["properties"]["input"], 7);
    assert_eq!(test_json(&live, "t.py::test_before")["outcome"], "passed");
    assert!(live["crashes"].as_array().unwrap().is_empty());
    let table = cli(&t.store(), &["stats"]);
    assert!(
        table.out.contains("· live ·") && table.out.contains("running for"),
        "{}",
        table.out
    );
    assert!(
        table.out.lines().any(|l| l.contains("running")
            && l.contains("gw1")
            && l.contains(&pid.to_string())
            && l.contains(HANGING)),
        "{}",
        table.out
    );

    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let dead = cli(&t.store(), &["stats", "--json"]).json();
    let hanging = test_json(&dead, HANGING);
    assert_eq!(
        (hanging["outcome"].as_str(), hanging["crashed"].as_bool()),
        (Some("crashed"), Some(true))
    );
    assert_eq!(
        (hanging["worker"].as_str(), hanging["pid"].as_u64()),
        (Some("gw1"), Some(u64::from(pid)))
    );
    assert_eq!(
        hanging["properties"]["input"], 7,
        "what the worker recorded survives its death"
    );
    let crash = &dead["crashes"][0];
    assert_eq!(
        (
            crash["nodeid"].as_str(),
            crash["worker"].as_str(),
            crash["pid"].as_u64()
        ),
        (Some(HANGING), Some("gw1"), Some(u64::from(pid)))
    );
    assert_eq!(
        crash["phase"], "call",
        "setup was reported, so the call died"
    );
    assert!(
        crash["detail"].as_str().unwrap().contains("SIGKILL"),
        "{crash}"
    );
    let gw1 = dead["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "gw1")
        .unwrap();
    assert_eq!(
        (gw1["alive"].as_bool(), gw1["crashes"].as_u64()),
        (Some(false), Some(1))
    );
    let crashes = cli(&t.store(), &["crashes"]);
    assert!(
        crashes.out.contains(HANGING)
            && crashes.out.contains("gw1")
            && crashes.out.contains(&pid.to_string()),
        "{}",
        crashes.out
    );
    // The controller still runs: the run is live until it ends.
    assert_eq!(dead["run"]["live"], true);
    controller.close().unwrap();
    drop(controller);
    assert_eq!(
        cli(&t.store(), &["stats", "--json"]).json()["run"]["live"],
        false
    );
    assert_eq!(
        cli(&t.store(), &["check"]).code,
        0,
        "a killed writer is not damage"
    );
}

#[test]
fn an_aborted_worker_is_attributed_with_its_signal() {
    let t = TempDir::new("abort");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let dir = store.run_path(&id).unwrap();
    let mut worker = spawn_worker(&dir, "abort");
    let pid = worker.0.id();
    let status = worker.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGABRT)
    );
    let j = cli(&t.store(), &["stats", "--json"]).json();
    let t_json = test_json(&j, HANGING);
    assert_eq!(
        (
            t_json["outcome"].as_str(),
            t_json["signal"].as_i64(),
            t_json["signal_name"].as_str()
        ),
        (Some("crashed"), Some(6), Some("SIGABRT"))
    );
    assert_eq!(j["crashes"][0]["pid"].as_u64(), Some(u64::from(pid)));
    let o = cli(&t.store(), &["crashes"]);
    assert!(
        o.out.contains("SIGABRT") && o.out.contains("gw1"),
        "{}",
        o.out
    );
}

#[test]
fn a_test_left_open_by_a_process_that_ended_on_purpose_is_unfinished() {
    let t = TempDir::new("unfinished");
    let store = Store::create(t.store()).unwrap();
    let id = store.new_run().unwrap();
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    write_test(
        &mut rec,
        "t.py::test_done",
        "passed",
        Some(("passed", 0.01)),
    );
    rec.start_test("t.py::test_left_open").unwrap();
    rec.close().unwrap();
    drop(rec);
    let j = cli(&t.store(), &["tests", "--json"]).json();
    assert_eq!(j["tests"][0]["nodeid"], "t.py::test_left_open");
    assert_eq!(j["tests"][0]["outcome"], "unfinished");
    let table = cli(&t.store(), &["tests"]);
    assert!(
        table.out.lines().nth(1).unwrap().starts_with("unfinished"),
        "{}",
        table.out
    );
}

// ---------------------------------------------------------------------------------------
// A run of thousands of processes under a low limit of open files
// ---------------------------------------------------------------------------------------

const FORKED_CHILD_ENV: &str = "BLACKBOX_CLI_TEST_FORKED_READER";
const FORKED: usize = 3000;
const NOFILE: libc::rlim_t = 64;

/// Lowers the soft and hard limit of open files of a child before it runs.
fn with_nofile(cmd: &mut Command, limit: libc::rlim_t) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// A `pytest --forked` run: a main process and `FORKED` children, one segment each (each
/// child runs one test and exits), all finished.
fn write_forked_run(store: &Store) -> String {
    let id = store.new_run().unwrap();
    let dir = store.run_path(&id).unwrap();
    let mut main = Recorder::new(&dir, Role::Main, None, Durability::Process);
    main.record(&run_start()).unwrap();
    for i in 0..FORKED {
        let mut w = blackbox_core::SegmentWriter::create(&dir, Durability::Process).unwrap();
        let nodeid = format!("t.py::test_forked[{i}]");
        let t = now_mono_ns();
        for rec in [
            Record::Process {
                pid: 100_000 + i as u32,
                ppid: std::process::id(),
                role: Role::Forked,
                worker: None,
                wall_ns: now_wall_ns(),
            },
            Record::TestStart {
                nodeid: nodeid.clone(),
                mono_ns: t,
            },
            phase(&nodeid, Phase::Setup, "passed", 0.001, t + 1),
            phase(&nodeid, Phase::Call, "passed", 0.002, t + 2),
            phase(&nodeid, Phase::Teardown, "passed", 0.001, t + 3),
            Record::TestEnd {
                nodeid,
                mono_ns: t + 4,
            },
        ] {
            w.append(&rec).unwrap();
        }
        w.close().unwrap();
    }
    main.record(&Record::RunEnd {
        exit_status: 0,
        wall_ns: now_wall_ns(),
    })
    .unwrap();
    main.close().unwrap();
    id
}

/// Run in a child under a limit of `NOFILE` open files: the follower reads every segment.
#[test]
fn forked_reader_entry() {
    let Ok(dir) = std::env::var(FORKED_CHILD_ENV) else {
        return;
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) },
        0
    );
    assert_eq!(lim.rlim_cur, NOFILE);
    let mut follower = blackbox_core::Follower::new("run", Path::new(&dir));
    let mut agg = blackbox_core::Aggregate::default();
    let view = follower.view(&mut agg);
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    assert_eq!(view.segments, FORKED + 1);
    assert_eq!(view.records, 6 * FORKED as u64 + 3);
    assert_eq!(view.tests.len(), FORKED);
    assert!(view.tests.iter().all(|t| t.outcome == "passed"));
    assert!(
        follower.open_segments() <= 16,
        "{}",
        follower.open_segments()
    );
    // A later poll finds nothing new, and the reports of closed segments still read.
    follower.poll_into(&mut agg);
    assert_eq!(agg.records(), view.records);
    let (_, seg, offset) = agg.phase_locations("t.py::test_forked[2999]")[1];
    assert!(matches!(
        follower.read_at(seg, offset),
        Some(Record::TestPhase {
            phase: Phase::Call,
            ..
        })
    ));
    // The other way of reading a run (whole records, segment by segment).
    let snap = blackbox_core::Snapshot::read("run", Path::new(&dir)).unwrap();
    assert_eq!(snap.record_count() as u64, view.records);
    assert_eq!(snap.damage().count(), 0);
    println!("READ-ALL-OK");
}

#[test]
fn a_forked_run_of_thousands_of_segments_reads_under_a_low_limit_of_open_files() {
    let tmp = TempDir::new("forked");
    let store = Store::create(tmp.store()).unwrap();
    let id = write_forked_run(&store);
    let dir = store.run_path(&id).unwrap();

    // The follower (re-executing this test binary as the reader).
    let out = with_nofile(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "forked_reader_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FORKED_CHILD_ENV, &dir),
        NOFILE,
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("READ-ALL-OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CLI.
    let out = with_nofile(
        Command::new(BIN)
            .args(["stats", "--json", "--dir"])
            .arg(tmp.store()),
        NOFILE,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{err}");
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["run"]["segments"], FORKED + 1);
    assert_eq!(j["run"]["records"], 6 * FORKED + 3);
    assert_eq!(j["tests"].as_array().unwrap().len(), FORKED);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
    let out = with_nofile(
        Command::new(BIN).args(["check", "--dir"]).arg(tmp.store()),
        NOFILE,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------
// A large store, for measuring the CLI by hand (docs/cli.md, "Speed")
// ---------------------------------------------------------------------------------------

/// Writes a run of `BLACKBOX_BIG_TESTS` tests (default 100,000) into the store
/// `BLACKBOX_BIG_STORE`: 8 xdist workers of 10 records a test (start, two fixture setups,
/// three phase reports, a property, two fixture teardowns, end) plus the controller's
/// segment, 1,000,011 records by default. With `BLACKBOX_BIG_REPORTS=1` the phase reports
/// carry a serialized pytest report, as the plugin writes them.
///
/// `BLACKBOX_BIG_STORE=/tmp/big cargo test -p blackbox-core --release --test cli -- --ignored --exact write_a_big_store`
#[test]
#[ignore = "writes a large store for timing the CLI by hand"]
fn write_a_big_store() {
    let store =
        Store::create(std::env::var("BLACKBOX_BIG_STORE").expect("BLACKBOX_BIG_STORE")).unwrap();
    let tests: u64 = std::env::var("BLACKBOX_BIG_TESTS").map_or(100_000, |s| s.parse().unwrap());
    let reports = std::env::var("BLACKBOX_BIG_REPORTS").is_ok_and(|s| s == "1");
    let id = store.new_run().unwrap();
    let dir = store.run_path(&id).unwrap();
    let mut controller = Recorder::new(&dir, Role::Controller, None, Durability::Process);
    controller.record(&run_start()).unwrap();
    let workers = 8;
    for w in 0..workers {
        let mut rec = Recorder::new(
            &dir,
            Role::Worker,
            Some(format!("gw{w}")),
            Durability::Process,
        );
        for t in (w..tests).step_by(workers as usize) {
            let nodeid = format!(
                "tests/test_mod{:03}.py::test_case[{t}-resnet50-fp16]",
                t / 100
            );
            let mono = now_mono_ns();
            let report = |when: &str, outcome: &str| {
                reports.then(|| {
                    Value::Dict(vec![
                        ("nodeid".into(), Value::Str(nodeid.clone())),
                        (
                            "location".into(),
                            Value::List(vec![
                                Value::Str(format!("tests/test_mod{:03}.py", t / 100)),
                                Value::Int(41),
                                Value::Str(format!("test_case[{t}-resnet50-fp16]")),
                            ]),
                        ),
                        (
                            "keywords".into(),
                            Value::Dict(vec![
                                (format!("test_case[{t}-resnet50-fp16]"), Value::Int(1)),
                                ("parametrize".into(), Value::Int(1)),
                            ]),
                        ),
                        ("outcome".into(), Value::Str(outcome.into())),
                        ("longrepr".into(), Value::None),
                        ("when".into(), Value::Str(when.into())),
                        ("user_properties".into(), Value::List(Vec::new())),
                        ("sections".into(), Value::List(Vec::new())),
                        ("duration".into(), Value::Float(0.001)),
                        ("$report_type".into(), Value::Str("TestReport".into())),
                    ])
                })
            };
            let failed = t % 97 == 0;
            let phase = |p: Phase, outcome: &str, d: f64| Record::TestPhase {
                nodeid: nodeid.clone(),
                phase: p,
                outcome: outcome.into(),
                duration_s: d,
                mono_ns: mono,
                report: report(p.as_str(), outcome),
            };
            let fix = |name: &str, setup: bool| Record::Fixture {
                name: name.into(),
                scope: "function".into(),
                setup,
                test: Some(nodeid.clone()),
                duration_s: 1e-4 * (t % 7) as f64,
                mono_ns: mono,
            };
            rec.start_test(&nodeid).unwrap();
            rec.record(&fix("tmp_path", true)).unwrap();
            rec.record(&fix("db", true)).unwrap();
            rec.record(&phase(Phase::Setup, "passed", 2e-4)).unwrap();
            rec.record(&phase(
                Phase::Call,
                if failed { "failed" } else { "passed" },
                1e-3 * (t % 11) as f64,
            ))
            .unwrap();
            rec.record(&Record::PropertySet {
                test: Some(nodeid.clone()),
                key: "pcc".into(),
                value: Value::Dict(vec![
                    ("value".into(), Value::Float(0.99 - (t % 13) as f64 * 1e-3)),
                    ("ok".into(), Value::Bool(!failed)),
                ]),
                mono_ns: mono,
            })
            .unwrap();
            rec.record(&phase(Phase::Teardown, "passed", 1e-4)).unwrap();
            rec.record(&fix("db", false)).unwrap();
            rec.record(&fix("tmp_path", false)).unwrap();
            rec.end_test(&nodeid).unwrap();
        }
        rec.close().unwrap();
    }
    controller
        .record(&Record::RunEnd {
            exit_status: 1,
            wall_ns: now_wall_ns(),
        })
        .unwrap();
    controller.close().unwrap();
    let snap = store.snapshot(&id).unwrap();
    println!(
        "{}: {} records in {} segments",
        dir.display(),
        snap.record_count(),
        snap.segments.len()
    );
}
