//! Record types and their codec.
//!
//! A record is one logical event of a test run. On disk it is a postcard-encoded
//! [`Record`] inside a frame (see [`crate::segment`] and `docs/format.md`). Postcard's wire
//! format is specified and stable for its 1.x line, so a segment written today reads back
//! with any later 1.x release. The variant order below is part of the format: new variants
//! are only ever appended, and a reader that meets a variant it does not know reports the
//! record as damage (path, offset, reason) rather than guessing.
//!
//! The wire tags are named once, here: [`RecordKind`] and [`ValueKind`] (and
//! [`Phase::from_tag`]) give each variant its postcard index, which the hand-written
//! decoder (`segment/bounded.rs`) and the binding's encoder (`python-bindings/src/encode.rs`)
//! use instead of numbers, and the tests below hold each one to postcard's own encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

mod fields;
pub use fields::FieldsError;

/// Declares the kind enum of a serde enum: one variant per variant of `$Enum`, whose
/// discriminant is its tag on the wire (postcard's variant index: the declaration order of
/// `$Enum`), with its name, the list of all kinds and the kind of a value. The tests hold
/// every tag to postcard's encoding, so a variant moved in `$Enum` fails them.
macro_rules! wire_kinds {
    (
        $(#[$meta:meta])*
        pub enum $Kind:ident of $Enum:ident {
            $($Variant:ident = $tag:literal $name:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $Kind {
            $(#[doc = concat!("`", stringify!($Enum), "::", stringify!($Variant), "`, tag ", stringify!($tag), ": `", $name, "`.")] $Variant = $tag,)*
        }

        impl $Kind {
            /// Every kind, in tag order (the tags are 0, 1, 2, ...).
            pub const ALL: &'static [$Kind] = &[$($Kind::$Variant,)*];

            /// The tag: postcard's variant index, a varint of one byte (every tag is below
            /// 128), the first byte of the encoding.
            #[inline]
            #[must_use]
            pub const fn tag(self) -> u8 {
                self as u8
            }

            /// The kind whose tag is `tag`, if there is one.
            #[inline]
            #[must_use]
            pub const fn from_tag(tag: u32) -> Option<$Kind> {
                match tag {
                    $($tag => Some($Kind::$Variant),)*
                    _ => None,
                }
            }

            /// Its name: what `dump` and JSON call it.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $($Kind::$Variant => $name,)*
                }
            }

            /// The kind of `v`.
            #[inline]
            #[must_use]
            pub const fn of(v: &$Enum) -> $Kind {
                match v {
                    $($Enum::$Variant { .. } => $Kind::$Variant,)*
                }
            }
        }

        impl fmt::Display for $Kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }

        // A varint below 128 is one byte: the encoders write a tag as a single byte.
        const _: () = { $(assert!($tag < 0x80);)* };
    };
}

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

wire_kinds! {
    /// The kind of a [`Value`], named by its tag on the wire.
    pub enum ValueKind of Value {
        None = 0 "none",
        Bool = 1 "bool",
        Int = 2 "int",
        Float = 3 "float",
        Str = 4 "str",
        Bytes = 5 "bytes",
        List = 6 "list",
        Dict = 7 "dict",
        BigInt = 8 "bigint",
    }
}

/// The JSON key of a float JSON has no number for (`{"$float": "nan"}`, `"inf"`, `"-inf"`).
pub const JSON_FLOAT_TAG: &str = "$float";
/// The JSON key of an integer outside the i64 range (`{"$int": "<decimal digits>"}`).
pub const JSON_INT_TAG: &str = "$int";

impl Value {
    /// The tag and text of a value that JSON has no number for, which JSON output writes as
    /// a one-key object (docs/cli.md): a non-finite float as `{"$float": "nan"}` (or
    /// `"inf"`, `"-inf"`), an integer outside the i64 range as `{"$int": "<digits>"}`.
    pub fn json_tagged(&self) -> Option<(&'static str, std::borrow::Cow<'_, str>)> {
        match self {
            Value::Float(f) if f.is_nan() => Some((JSON_FLOAT_TAG, "nan".into())),
            Value::Float(f) if f.is_infinite() => {
                Some((JSON_FLOAT_TAG, if *f > 0.0 { "inf" } else { "-inf" }.into()))
            }
            Value::BigInt(s) => Some((JSON_INT_TAG, s.as_str().into())),
            _ => None,
        }
    }

    /// The value as JSON: bytes become a list of numbers; a value JSON has no number for
    /// becomes a one-key object ([`json_tagged`](Self::json_tagged)).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        if let Some((tag, text)) = self.json_tagged() {
            return serde_json::json!({ tag: text });
        }
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
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
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Phase {
    #[default]
    Setup,
    Call,
    Teardown,
}

impl Phase {
    /// Every phase, in tag order.
    pub const ALL: [Phase; 3] = [Phase::Setup, Phase::Call, Phase::Teardown];

    /// The phase whose tag on the wire (postcard's variant index) is `tag`.
    #[inline]
    #[must_use]
    pub const fn from_tag(tag: u32) -> Option<Phase> {
        match tag {
            0 => Some(Phase::Setup),
            1 => Some(Phase::Call),
            2 => Some(Phase::Teardown),
            _ => None,
        }
    }

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
///
/// A field name a variant does not have is refused when the fields come by name
/// ([`Record::from_fields`]); postcard, which has no names, is not affected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// A test ran past its time limit: written by the watchdog thread of the process that
    /// ran it (`blackbox_timeout`), or when pytest-timeout ended it (`pytest-timeout`).
    Timeout {
        test: Option<String>,
        /// The phase that ran out of time (`setup`, `call`, `teardown`).
        phase: Option<String>,
        limit_s: f64,
        /// From the test's start (or pytest-timeout's timer) to the timeout.
        elapsed_s: f64,
        /// What set the limit that acted: `blackbox_timeout` or `pytest-timeout`.
        source: String,
        /// Whether the process ends with it (the watchdog; pytest-timeout's `thread`
        /// method), or only the test failed (pytest-timeout's `signal` method).
        fatal: bool,
        wall_ns: u64,
    },
    /// The tests the session collected (what it will run, after deselection), in collection
    /// order: written once per run by the process that knows the collection (the main
    /// process, or the xdist controller from its first worker's). Front-coded: each entry
    /// `(n, rest)` is the first `n` bytes of the entry before it in this record, then `rest`
    /// (see [`front_code`]). A collection longer than [`COLLECTED_CHUNK`] bytes of text is
    /// split into several records written in one transaction: `first` is the index of this
    /// record's first nodeid in the collection, `total` the size of the whole collection.
    Collected {
        total: u32,
        first: u32,
        nodeids: Vec<(u32, String)>,
    },
    /// This session resumes an earlier run of the store (`--blackbox-resume`): `run` is the
    /// run it goes on from (the previous attempt), `attempt` this session's number in the
    /// logical run (the first session is attempt 1, so a resume is 2 or more), `retry`
    /// whether the tests that crashed in `run` are run again (else they are reported failed).
    Resume {
        run: String,
        attempt: u32,
        retry: bool,
    },
}

wire_kinds! {
    /// The kind of a [`Record`], named by its tag on the wire: the first byte of every
    /// frame's payload. `docs/format.md` ("Record kinds") lists the same table, and a test
    /// holds the two together.
    pub enum RecordKind of Record {
        Process = 0 "process",
        RunStart = 1 "run_start",
        RunEnd = 2 "run_end",
        TestStart = 3 "test_start",
        TestPhase = 4 "test_phase",
        TestEnd = 5 "test_end",
        PropertySet = 6 "property_set",
        PropertyAppend = 7 "property_append",
        Fixture = 8 "fixture",
        Timed = 9 "timed",
        Crash = 10 "crash",
        Exit = 11 "exit",
        Attachment = 12 "attachment",
        IntentionalExit = 13 "intentional_exit",
        ProcessInfo = 14 "process_info",
        Timeout = 15 "timeout",
        Collected = 16 "collected",
        Resume = 17 "resume",
    }
}

impl RecordKind {
    /// One record of this kind with every field set (text with a non-ASCII character, a
    /// value of each kind where the kind holds a value): what the tests of every reader and
    /// writer use to cover each kind. For tests; no stable API.
    #[doc(hidden)]
    #[must_use]
    pub fn sample(self) -> Record {
        let t = || Some("tests/test_m.py::test_\u{e9}[1]".to_owned());
        let nodeid = || "tests/test_m.py::test_\u{e9}[1]".to_owned();
        let value = || {
            Value::Dict(vec![
                ("none".into(), Value::None),
                ("bool".into(), Value::Bool(true)),
                ("int".into(), Value::Int(-300)),
                ("float".into(), Value::Float(0.25)),
                ("str".into(), Value::Str("\u{e9}\u{1F600}".into())),
                ("bytes".into(), Value::Bytes(vec![0, 255, 128])),
                ("list".into(), Value::List(vec![Value::Int(i64::MIN)])),
                ("dict".into(), Value::Dict(Vec::new())),
                ("big".into(), Value::BigInt("-123456789012345678901".into())),
            ])
        };
        let wall_ns = 1_800_000_000_000_000_000;
        let mono_ns = 1 << 40;
        match self {
            RecordKind::Process => Record::Process {
                pid: 4242,
                ppid: 1,
                role: Role::Worker,
                worker: Some("gw0".into()),
                wall_ns,
            },
            RecordKind::RunStart => Record::RunStart {
                argv: vec!["pytest".into(), "-n".into(), "2".into()],
                rootdir: "/r".into(),
                host: "h".into(),
                pid: 4241,
                wall_ns,
            },
            RecordKind::RunEnd => Record::RunEnd {
                exit_status: 1,
                wall_ns,
            },
            RecordKind::TestStart => Record::TestStart {
                nodeid: nodeid(),
                mono_ns,
            },
            RecordKind::TestPhase => Record::TestPhase {
                nodeid: nodeid(),
                phase: Phase::Call,
                outcome: "failed".into(),
                duration_s: 0.5,
                mono_ns,
                report: Some(value()),
            },
            RecordKind::TestEnd => Record::TestEnd {
                nodeid: nodeid(),
                mono_ns,
            },
            RecordKind::PropertySet => Record::PropertySet {
                test: t(),
                key: "all".into(),
                value: value(),
                mono_ns,
            },
            RecordKind::PropertyAppend => Record::PropertyAppend {
                test: None,
                key: "cmp".into(),
                value: value(),
                mono_ns,
            },
            RecordKind::Fixture => Record::Fixture {
                name: "db".into(),
                scope: "session".into(),
                setup: true,
                test: t(),
                duration_s: 0.125,
                mono_ns,
            },
            RecordKind::Timed => Record::Timed {
                name: "load".into(),
                test: t(),
                duration_s: 2.5,
                mono_ns,
            },
            RecordKind::Crash => Record::Crash {
                test: t(),
                pid: 4243,
                worker: Some("gw1".into()),
                signal: 11,
                exit_code: Some(-11),
                phase: Some("call".into()),
                detail: "Segmentation fault".into(),
                wall_ns,
            },
            RecordKind::Exit => Record::Exit {
                test: t(),
                code: 3,
                wall_ns,
            },
            RecordKind::Attachment => Record::Attachment {
                test: t(),
                kind: "faulthandler".into(),
                path: "faulthandler-4243.txt".into(),
            },
            RecordKind::IntentionalExit => Record::IntentionalExit {
                test: t(),
                phase: Some(Phase::Teardown),
                code: 0,
                wall_ns,
            },
            RecordKind::ProcessInfo => Record::ProcessInfo {
                env: vec![("CUDA_VISIBLE_DEVICES".into(), "0,1".into())],
                memory_cgroup: Some("/sys/fs/cgroup/user.slice".into()),
                oom_kills: Some(2),
                mono_ns,
                wall_ns,
            },
            RecordKind::Timeout => Record::Timeout {
                test: t(),
                phase: Some("call".into()),
                limit_s: 1.5,
                elapsed_s: 1.625,
                source: "blackbox_timeout".into(),
                fatal: true,
                wall_ns,
            },
            RecordKind::Collected => Record::Collected {
                total: 2,
                first: 0,
                nodeids: vec![(0, nodeid()), (24, "2]".into())],
            },
            RecordKind::Resume => Record::Resume {
                run: "20261207-000000-abcdef".into(),
                attempt: 2,
                retry: true,
            },
        }
    }
}

/// The most bytes of nodeid text one [`Record::Collected`] holds (after front-coding);
/// far under [`crate::segment::MAX_RECORD`], so any collection fits.
pub const COLLECTED_CHUNK: usize = 1 << 20;

/// The longest prefix of `a` and `b` that ends on a character boundary of both.
fn shared_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Both are the same bytes up to `n`: a boundary of one is a boundary of the other.
    (0..=n).rev().find(|&i| b.is_char_boundary(i)).unwrap_or(0)
}

/// The [`Record::Collected`] records of a collection: front-coded, split at
/// [`COLLECTED_CHUNK`] bytes of text (each record's first entry spelled out whole).
pub fn front_code<S: AsRef<str>>(nodeids: &[S]) -> Vec<Record> {
    let total = u32::try_from(nodeids.len()).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    let mut chunk: Vec<(u32, String)> = Vec::new();
    let (mut first, mut bytes) = (0u32, 0usize);
    let mut prev = "";
    for (i, id) in nodeids.iter().take(total as usize).enumerate() {
        let id = id.as_ref();
        if bytes >= COLLECTED_CHUNK {
            out.push(Record::Collected {
                total,
                first,
                nodeids: std::mem::take(&mut chunk),
            });
            first = u32::try_from(i).unwrap_or(u32::MAX);
            bytes = 0;
            prev = "";
        }
        let n = shared_prefix(prev, id);
        bytes += id.len() - n;
        chunk.push((u32::try_from(n).unwrap_or(0), id[n..].to_owned()));
        prev = id;
    }
    if !chunk.is_empty() || out.is_empty() {
        out.push(Record::Collected {
            total,
            first,
            nodeids: chunk,
        });
    }
    out
}

/// The nodeids of one [`Record::Collected`]'s entries. A prefix longer than the nodeid
/// before it (damage a checksum missed) is cut to that nodeid, never a panic.
pub fn front_decode(entries: &[(u32, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (n, rest) in entries {
        let prev = out.last().map_or("", String::as_str);
        let mut n = (*n as usize).min(prev.len());
        while !prev.is_char_boundary(n) {
            n -= 1;
        }
        let mut id = String::with_capacity(n + rest.len());
        id.push_str(&prev[..n]);
        id.push_str(rest);
        out.push(id);
    }
    out
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
    /// A short name of the variant, for `dump` and error messages ([`RecordKind::name`]).
    pub fn kind(&self) -> &'static str {
        RecordKind::of(self).name()
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
            | Record::IntentionalExit { test, .. }
            | Record::Timeout { test, .. } => test.as_deref(),
            Record::Process { .. }
            | Record::RunStart { .. }
            | Record::RunEnd { .. }
            | Record::ProcessInfo { .. }
            | Record::Collected { .. }
            | Record::Resume { .. } => None,
        }
    }

    /// The [`Value`] this record carries, if any: what a writer checks against
    /// [`crate::MAX_VALUE_DEPTH`]. Every variant is named, so a new one must say.
    pub(crate) fn carried_value(&self) -> Option<&Value> {
        match self {
            Record::PropertySet { value, .. } | Record::PropertyAppend { value, .. } => Some(value),
            Record::TestPhase { report, .. } => report.as_ref(),
            Record::Process { .. }
            | Record::RunStart { .. }
            | Record::RunEnd { .. }
            | Record::TestStart { .. }
            | Record::TestEnd { .. }
            | Record::Fixture { .. }
            | Record::Timed { .. }
            | Record::Crash { .. }
            | Record::Exit { .. }
            | Record::Attachment { .. }
            | Record::IntentionalExit { .. }
            | Record::ProcessInfo { .. }
            | Record::Timeout { .. }
            | Record::Collected { .. }
            | Record::Resume { .. } => None,
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
            Record::Timeout {
                test,
                phase,
                limit_s,
                elapsed_s,
                source,
                fatal,
                wall_ns,
            } => json!({
                "test": test,
                "phase": phase,
                "limit_s": limit_s,
                "elapsed_s": elapsed_s,
                "source": source,
                "fatal": fatal,
                "wall_ns": wall_ns,
            }),
            Record::Collected {
                total,
                first,
                nodeids,
            } => json!({"total": total, "first": first, "nodeids": front_decode(nodeids)}),
            Record::Resume {
                run,
                attempt,
                retry,
            } => json!({"run": run, "attempt": attempt, "retry": retry}),
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

    fn encoded<T: Serialize>(v: &T) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = postcard::to_slice(v, &mut buf).unwrap().len();
        buf.truncate(n);
        buf
    }

    /// The named tags are postcard's: a variant moved, inserted or removed in `Record`,
    /// `Value` or `Phase` (a format change) fails here.
    #[test]
    fn every_named_tag_is_the_one_postcard_writes() {
        for (i, &k) in RecordKind::ALL.iter().enumerate() {
            assert_eq!(
                usize::from(k.tag()),
                i,
                "{k:?}: tags go 0, 1, 2, ... in order"
            );
            assert_eq!(RecordKind::from_tag(u32::from(k.tag())), Some(k));
            let rec = k.sample();
            assert_eq!(RecordKind::of(&rec), k, "{k:?}'s sample is a {rec:?}");
            let bytes = encoded(&rec);
            assert_eq!(bytes[0], k.tag(), "postcard tags {rec:?} {}", bytes[0]);
            assert_eq!(rec.encoded_len(), bytes.len());
            assert_eq!(Record::decode(&bytes).unwrap(), rec);
            assert_eq!(
                (rec.kind(), format!("{k:>8}")),
                (k.name(), format!("{:>8}", k.name()))
            );
            assert_eq!(rec.to_json()["kind"], k.name());
            // The same bytes under the next tag are not this record.
            let mut next = bytes.clone();
            next[0] += 1;
            assert_ne!(Record::decode(&next).ok(), Some(rec));
        }
        let past = u32::try_from(RecordKind::ALL.len()).unwrap();
        assert_eq!(RecordKind::from_tag(past), None);
        assert!(Record::decode(&[u8::try_from(past).unwrap(), 0, 0, 0]).is_err());
        let mut names: Vec<&str> = RecordKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RecordKind::ALL.len());

        let values = [
            Value::None,
            Value::Bool(true),
            Value::Int(-1),
            Value::Float(0.5),
            Value::Str("\u{e9}".into()),
            Value::Bytes(vec![1]),
            Value::List(vec![Value::None]),
            Value::Dict(vec![("k".into(), Value::None)]),
            Value::BigInt("99999999999999999999".into()),
        ];
        assert_eq!(values.len(), ValueKind::ALL.len());
        for (i, (v, &k)) in values.iter().zip(ValueKind::ALL).enumerate() {
            assert_eq!((ValueKind::of(v), usize::from(k.tag())), (k, i));
            assert_eq!(ValueKind::from_tag(u32::from(k.tag())), Some(k));
            assert_eq!(
                encoded(v)[0],
                k.tag(),
                "postcard tags {v:?} {}",
                encoded(v)[0]
            );
        }
        assert_eq!(ValueKind::from_tag(9), None);
        for (i, p) in Phase::ALL.into_iter().enumerate() {
            assert_eq!(encoded(&p), [u8::try_from(i).unwrap()]);
            assert_eq!(Phase::from_tag(u32::try_from(i).unwrap()), Some(p));
        }
        assert_eq!(Phase::from_tag(3), None);
    }

    /// The keys of a JSON object, in the order they come.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    /// docs/format.md's table of kinds is this one: each tag, name, variant and its fields
    /// in order (serde's field names, which JSON output uses too).
    #[test]
    fn docs_format_lists_every_kind_with_its_fields() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let table = doc
            .split("\n## Record kinds\n")
            .nth(1)
            .expect("docs/format.md has a section \"Record kinds\"");
        let documented: Vec<String> = table
            .lines()
            .skip_while(|l| !l.starts_with("| tag"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').take(4).collect::<Vec<_>>().join("|"))
            .collect();
        let want: Vec<String> = RecordKind::ALL
            .iter()
            .map(|&k| {
                let json = serde_json::to_string(&k.sample()).unwrap();
                let one: std::collections::BTreeMap<String, Keys> =
                    serde_json::from_str(&json).unwrap();
                let (variant, Keys(fields)) = one.into_iter().next().unwrap();
                format!(
                    "| {} | `{}` | `{variant} {{{}}}` ",
                    k.tag(),
                    k.name(),
                    fields.join(", ")
                )
            })
            .collect();
        assert_eq!(documented, want);
    }

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
    fn values_json_has_no_number_for_are_tagged_objects() {
        let big = "1606938044258990275541962092341162602522202993782792835301376";
        let v = Value::List(vec![
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::BigInt(big.into()),
            Value::BigInt(format!("-{big}")),
            Value::Float(1.5),
            Value::Str("nan".into()),
        ]);
        assert_eq!(
            v.to_json(),
            serde_json::json!([
                {"$float": "nan"}, {"$float": "inf"}, {"$float": "-inf"},
                {"$int": big}, {"$int": format!("-{big}")}, 1.5, "nan"
            ])
        );
        // Stored as values: they read back as the float and the integer they were.
        let rec = Record::PropertySet {
            test: None,
            key: "k".into(),
            value: v.clone(),
            mono_ns: 1,
        };
        let mut buf = vec![0u8; rec.encoded_len()];
        rec.encode_into(&mut buf).unwrap();
        let Record::PropertySet { value, .. } = Record::decode(&buf).unwrap() else {
            panic!("kind changed")
        };
        let Value::List(items) = value else { panic!() };
        assert!(matches!(items[0], Value::Float(f) if f.is_nan()));
        assert_eq!(
            items[1..],
            match &v {
                Value::List(l) => &l[1..],
                _ => unreachable!(),
            }[..]
        );
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
    fn collections_front_code_and_read_back_whole() {
        let ids: Vec<String> = (0..5000)
            .map(|i| format!("tests/test_m{}.py::test_é{}[{}]", i / 700, i / 7, i % 7))
            .chain([String::new(), "x".into(), "xé".into(), "xè".into()])
            .collect();
        let recs = front_code(&ids);
        assert_eq!(recs.len(), 1);
        let mut back = Vec::new();
        for r in &recs {
            let mut buf = vec![0u8; r.encoded_len()];
            r.encode_into(&mut buf).unwrap();
            let Record::Collected {
                total,
                first,
                nodeids,
            } = Record::decode(&buf).unwrap()
            else {
                panic!("kind changed")
            };
            assert_eq!((total as usize, first as usize), (ids.len(), back.len()));
            back.extend(front_decode(&nodeids));
        }
        assert_eq!(back, ids);
        // Far smaller than the text: most of each nodeid is the one before it.
        let text: usize = ids.iter().map(String::len).sum();
        assert!(
            recs[0].encoded_len() * 4 < text,
            "{} vs {text}",
            recs[0].encoded_len()
        );
        // Long collections split; each record starts whole.
        let long: Vec<String> = (0..3000)
            .map(|i| format!("{i}{}", "x".repeat(999)))
            .collect();
        let recs = front_code(&long);
        assert!(recs.len() > 1);
        let mut back = Vec::new();
        for r in &recs {
            let Record::Collected { first, nodeids, .. } = r else {
                panic!()
            };
            assert_eq!(*first as usize, back.len());
            assert_eq!(nodeids[0].0, 0);
            back.extend(front_decode(nodeids));
        }
        assert_eq!(back, long);
        // An empty collection is still said; a hostile prefix is cut, not a panic.
        assert!(matches!(
            &front_code::<&str>(&[])[..],
            [Record::Collected { total: 0, .. }]
        ));
        assert_eq!(
            front_decode(&[(0, "é".into()), (1, "a".into()), (99, "b".into())]),
            ["é", "a", "ab"]
        );
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
