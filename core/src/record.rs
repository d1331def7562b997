//! Record types and their codec.
//!
//! A record is one logical event of a test run. On disk it is a postcard-encoded
//! [`Record`] inside a frame (see [`crate::segment`] and `docs/format.md`). Postcard's wire
//! format is specified and stable for its 1.x line, so a segment written today reads back
//! with any later 1.x release. The variant order below is part of the format: new variants
//! are only ever appended, and a reader that meets a variant it does not know reports the
//! record as damage (path, offset, reason) rather than guessing.

use serde::{Deserialize, Serialize};

/// A value attached to a test: what `record(key, value)` stores.
///
/// Dicts keep their insertion order (a list of pairs), so what a user recorded reads back
/// the way it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
    /// An integer outside the i64 range, kept as its decimal text.
    BigInt(String),
}

impl Value {
    /// The value as JSON (bytes become a list of numbers; a big int its decimal text).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number)
            }
            Value::Str(s) | Value::BigInt(s) => J::String(s.clone()),
            Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Dict(pairs) => J::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Which phase of a test a report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Setup,
    Call,
    Teardown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Call => "call",
            Phase::Teardown => "teardown",
        }
    }

    /// Parses `"setup"`, `"call"` or `"teardown"`.
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "setup" => Some(Phase::Setup),
            "call" => Some(Phase::Call),
            "teardown" => Some(Phase::Teardown),
            _ => None,
        }
    }
}

/// What kind of process wrote a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A pytest process without xdist: it runs tests itself.
    Main,
    /// The xdist controller: it runs no test.
    Controller,
    /// An xdist worker.
    Worker,
    /// A child forked to run one test (pytest-forked, or a user's own fork).
    Forked,
    /// A process outside pytest (a script using the Rust or Python API).
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Controller => "controller",
            Role::Worker => "worker",
            Role::Forked => "forked",
            Role::Other => "other",
        }
    }

    /// Parses the names [`Role::as_str`] gives.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "main" => Some(Role::Main),
            "controller" => Some(Role::Controller),
            "worker" => Some(Role::Worker),
            "forked" => Some(Role::Forked),
            "other" => Some(Role::Other),
            _ => None,
        }
    }
}

/// One logical event. Times are nanoseconds: `*_ns` on the machine-wide monotonic clock
/// (`CLOCK_MONOTONIC`, comparable between processes of one boot) unless named `wall_ns`
/// (Unix epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// First record of every segment: who wrote it.
    Process {
        pid: u32,
        ppid: u32,
        role: Role,
        /// The xdist worker id (`gw0`), inherited by processes a worker forks.
        worker: Option<String>,
        wall_ns: u64,
    },
    /// The start of a pytest session (written by the main process or the controller).
    RunStart {
        argv: Vec<String>,
        rootdir: String,
        host: String,
        pid: u32,
        wall_ns: u64,
    },
    /// The end of a pytest session.
    RunEnd { exit_status: i32, wall_ns: u64 },
    /// A test starts running in this process.
    TestStart { nodeid: String, mono_ns: u64 },
    /// The report of one phase of a test.
    TestPhase {
        nodeid: String,
        phase: Phase,
        /// `passed`, `failed` or `skipped`.
        outcome: String,
        duration_s: f64,
        mono_ns: u64,
        /// The serialized pytest report (`pytest_report_to_serializable`) so a parent can
        /// rebuild it; `None` outside pytest.
        report: Option<Value>,
    },
    /// A test is over in this process (after its teardown).
    TestEnd { nodeid: String, mono_ns: u64 },
    /// `record(key, value)`: the last write by `mono_ns` wins.
    PropertySet {
        test: Option<String>,
        key: String,
        value: Value,
        mono_ns: u64,
    },
    /// `append(key, value)`: values accumulate into a list, ordered by `mono_ns`.
    PropertyAppend {
        test: Option<String>,
        key: String,
        value: Value,
        mono_ns: u64,
    },
    /// A fixture's setup or teardown finished.
    Fixture {
        name: String,
        scope: String,
        /// `true` for setup, `false` for teardown.
        setup: bool,
        test: Option<String>,
        duration_s: f64,
        mono_ns: u64,
    },
    /// A call timed by the `timed` decorator.
    Timed {
        name: String,
        test: Option<String>,
        duration_s: f64,
        mono_ns: u64,
    },
    /// A process died: written by whoever saw it (the parent of a forked child, the
    /// xdist controller, the next reader). `signal` is 0 when unknown.
    Crash {
        test: Option<String>,
        pid: u32,
        worker: Option<String>,
        signal: i32,
        exit_code: Option<i32>,
        /// Which phase was running (`setup`, `call`, `teardown`) when known.
        phase: Option<String>,
        detail: String,
        wall_ns: u64,
    },
    /// A process ended on purpose (`os._exit`, `pytest.exit`) while a test ran.
    Exit {
        test: Option<String>,
        code: i32,
        wall_ns: u64,
    },
    /// A file in the run folder that belongs to a test (faulthandler output).
    Attachment {
        test: Option<String>,
        kind: String,
        path: String,
    },
    /// The process ended itself (`os._exit`) outside any phase of a test: between tests
    /// (`test` is `None`), or after the report of `phase` of `test` was made (a reporting
    /// hook that exits to get a clean device, say). The reports it made are whole, so this
    /// is no crash; [`Record::Exit`] is the exit in the middle of a phase.
    IntentionalExit {
        test: Option<String>,
        phase: Option<Phase>,
        code: i32,
        wall_ns: u64,
    },
    /// What the process was given, as it stood when its first test started: the
    /// accelerator selection variables that were set (`CUDA_VISIBLE_DEVICES`, ...), and its
    /// memory cgroup (a directory under /sys/fs/cgroup) with the OOM kills it had counted;
    /// with both clocks read at that moment, so a reader can place a wall-clock time (a
    /// parent's crash record) on the monotonic clock of the records.
    ProcessInfo {
        env: Vec<(String, String)>,
        memory_cgroup: Option<String>,
        oom_kills: Option<u64>,
        mono_ns: u64,
        wall_ns: u64,
    },
}

/// A record of one of the kinds a test run writes most (test start, phase and end,
/// properties, fixtures, timed calls), decoded without allocating: text and values are
/// slices of the frame's payload. What [`crate::Aggregate`] folds on the hot path; rarer
/// kinds are decoded into a [`Record`].
///
/// Text is UTF-8 checked bytes; a value is its encoded bytes, checked to be one well-formed
/// [`Value`] within the depth bound, decoded only when a view needs it. A phase report is
/// skipped: the aggregate keeps only where the frame is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RecordRef<'a> {
    TestStart {
        nodeid: &'a [u8],
        mono_ns: u64,
    },
    TestPhase {
        nodeid: &'a [u8],
        phase: Phase,
        outcome: &'a [u8],
        duration_s: f64,
        mono_ns: u64,
    },
    TestEnd {
        nodeid: &'a [u8],
        mono_ns: u64,
    },
    Property {
        append: bool,
        test: Option<&'a [u8]>,
        key: &'a [u8],
        value: &'a [u8],
        mono_ns: u64,
    },
    Fixture {
        name: &'a [u8],
        scope: &'a [u8],
        setup: bool,
        duration_s: f64,
    },
    Timed {
        name: &'a [u8],
        duration_s: f64,
    },
}

impl Record {
    /// A short name of the variant, for `dump` and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Process { .. } => "process",
            Record::RunStart { .. } => "run_start",
            Record::RunEnd { .. } => "run_end",
            Record::TestStart { .. } => "test_start",
            Record::TestPhase { .. } => "test_phase",
            Record::TestEnd { .. } => "test_end",
            Record::PropertySet { .. } => "property_set",
            Record::PropertyAppend { .. } => "property_append",
            Record::Fixture { .. } => "fixture",
            Record::Timed { .. } => "timed",
            Record::Crash { .. } => "crash",
            Record::Exit { .. } => "exit",
            Record::Attachment { .. } => "attachment",
            Record::IntentionalExit { .. } => "intentional_exit",
            Record::ProcessInfo { .. } => "process_info",
        }
    }

    /// The test this record belongs to, if any.
    pub fn test(&self) -> Option<&str> {
        match self {
            Record::TestStart { nodeid, .. }
            | Record::TestPhase { nodeid, .. }
            | Record::TestEnd { nodeid, .. } => Some(nodeid),
            Record::PropertySet { test, .. }
            | Record::PropertyAppend { test, .. }
            | Record::Fixture { test, .. }
            | Record::Timed { test, .. }
            | Record::Crash { test, .. }
            | Record::Exit { test, .. }
            | Record::Attachment { test, .. }
            | Record::IntentionalExit { test, .. } => test.as_deref(),
            Record::Process { .. }
            | Record::RunStart { .. }
            | Record::RunEnd { .. }
            | Record::ProcessInfo { .. } => None,
        }
    }

    /// Encodes into `buf`, returning the number of bytes written, or `None` when `buf` is
    /// too small.
    pub fn encode_into(&self, buf: &mut [u8]) -> Option<usize> {
        postcard::to_slice(self, buf).ok().map(|s| s.len())
    }

    /// The encoded size of this record.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    /// Decodes one record that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        match postcard::take_from_bytes::<Record>(bytes) {
            Ok((rec, [])) => Ok(rec),
            Ok((_, rest)) => Err(format!("{} trailing bytes after the record", rest.len())),
            Err(e) => Err(format!("undecodable record: {e}")),
        }
    }

    /// The record as one JSON object (`dump --jsonl`, docs/cli.md): `kind` (the variant,
    /// [`Record::kind`]) and every field under its own name, with enums in lower case as
    /// everywhere in the JSON (`"role": "worker"`, `"phase": "call"`) and values as plain
    /// JSON ([`Value::to_json`]). One field is renamed, since `kind` names the variant:
    /// an `Attachment`'s own `kind` is `attachment_kind`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value as J};
        let opt = |v: &Option<Value>| v.as_ref().map_or(J::Null, Value::to_json);
        let mut obj = match self {
            Record::Process {
                pid,
                ppid,
                role,
                worker,
                wall_ns,
            } => {
                json!({"pid": pid, "ppid": ppid, "role": role.as_str(), "worker": worker, "wall_ns": wall_ns})
            }
            Record::RunStart {
                argv,
                rootdir,
                host,
                pid,
                wall_ns,
            } => {
                json!({"argv": argv, "rootdir": rootdir, "host": host, "pid": pid, "wall_ns": wall_ns})
            }
            Record::RunEnd {
                exit_status,
                wall_ns,
            } => json!({"exit_status": exit_status, "wall_ns": wall_ns}),
            Record::TestStart { nodeid, mono_ns } | Record::TestEnd { nodeid, mono_ns } => {
                json!({"nodeid": nodeid, "mono_ns": mono_ns})
            }
            Record::TestPhase {
                nodeid,
                phase,
                outcome,
                duration_s,
                mono_ns,
                report,
            } => json!({
                "nodeid": nodeid,
                "phase": phase.as_str(),
                "outcome": outcome,
                "duration_s": duration_s,
                "mono_ns": mono_ns,
                "report": opt(report),
            }),
            Record::PropertySet {
                test,
                key,
                value,
                mono_ns,
            }
            | Record::PropertyAppend {
                test,
                key,
                value,
                mono_ns,
            } => json!({"test": test, "key": key, "value": value.to_json(), "mono_ns": mono_ns}),
            Record::Fixture {
                name,
                scope,
                setup,
                test,
                duration_s,
                mono_ns,
            } => json!({
                "name": name,
                "scope": scope,
                "setup": setup,
                "test": test,
                "duration_s": duration_s,
                "mono_ns": mono_ns,
            }),
            Record::Timed {
                name,
                test,
                duration_s,
                mono_ns,
            } => json!({"name": name, "test": test, "duration_s": duration_s, "mono_ns": mono_ns}),
            Record::Crash {
                test,
                pid,
                worker,
                signal,
                exit_code,
                phase,
                detail,
                wall_ns,
            } => json!({
                "test": test,
                "pid": pid,
                "worker": worker,
                "signal": signal,
                "exit_code": exit_code,
                "phase": phase,
                "detail": detail,
                "wall_ns": wall_ns,
            }),
            Record::Exit {
                test,
                code,
                wall_ns,
            } => json!({"test": test, "code": code, "wall_ns": wall_ns}),
            Record::Attachment { test, kind, path } => {
                json!({"test": test, "attachment_kind": kind, "path": path})
            }
            Record::IntentionalExit {
                test,
                phase,
                code,
                wall_ns,
            } => json!({
                "test": test,
                "phase": phase.map(Phase::as_str),
                "code": code,
                "wall_ns": wall_ns,
            }),
            Record::ProcessInfo {
                env,
                memory_cgroup,
                oom_kills,
                mono_ns,
                wall_ns,
            } => json!({
                "mono_ns": mono_ns,
                "wall_ns": wall_ns,
                "env": env
                    .iter()
                    .map(|(k, v)| (k.clone(), J::String(v.clone())))
                    .collect::<serde_json::Map<String, J>>(),
                "memory_cgroup": memory_cgroup,
                "oom_kills": oom_kills,
            }),
        };
        if let J::Object(map) = &mut obj {
            map.insert("kind".into(), self.kind().into());
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_value_kind() {
        let rec = Record::PropertySet {
            test: Some("t.py::test_a".into()),
            key: "k".into(),
            value: Value::Dict(vec![
                ("n".into(), Value::None),
                ("b".into(), Value::Bool(true)),
                ("i".into(), Value::Int(-7)),
                ("f".into(), Value::Float(0.99)),
                ("s".into(), Value::Str("é".into())),
                ("y".into(), Value::Bytes(vec![0, 255])),
                ("l".into(), Value::List(vec![Value::Int(1)])),
                (
                    "big".into(),
                    Value::BigInt("123456789012345678901234567890".into()),
                ),
            ]),
            mono_ns: 42,
        };
        let mut buf = vec![0u8; rec.encoded_len()];
        let n = rec.encode_into(&mut buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(Record::decode(&buf).unwrap(), rec);
        assert!(rec.encode_into(&mut [0u8; 4]).is_none());
    }

    #[test]
    fn decode_rejects_trailing_and_garbage() {
        let rec = Record::TestEnd {
            nodeid: "x".into(),
            mono_ns: 1,
        };
        let mut buf = vec![0u8; rec.encoded_len() + 1];
        rec.encode_into(&mut buf).unwrap();
        assert!(Record::decode(&buf).unwrap_err().contains("trailing"));
        assert!(Record::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn json_is_flat_with_kind() {
        let rec = Record::PropertyAppend {
            test: None,
            key: "cmp".into(),
            value: Value::Dict(vec![("pcc".into(), Value::Float(0.5))]),
            mono_ns: 3,
        };
        let j = rec.to_json();
        assert_eq!(j["kind"], "property_append");
        assert_eq!(j["value"]["pcc"], 0.5);
        assert_eq!(j["key"], "cmp");
        let j = Record::Attachment {
            test: None,
            kind: "faulthandler".into(),
            path: "/p".into(),
        }
        .to_json();
        assert_eq!(
            (&j["kind"], &j["attachment_kind"]),
            (&"attachment".into(), &"faulthandler".into())
        );
        let j = Record::Process {
            pid: 1,
            ppid: 0,
            role: Role::Worker,
            worker: Some("gw0".into()),
            wall_ns: 2,
        }
        .to_json();
        assert_eq!(
            (&j["role"], &j["kind"]),
            (&"worker".into(), &"process".into())
        );
    }
}
