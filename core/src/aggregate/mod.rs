//! Views of a run: tests, fixtures, crashes and workers, folded from records of every
//! process. An [`Aggregate`] takes records incrementally (from a [`crate::Follower`]);
//! [`Aggregate::view`] combines them with the segments' liveness into a [`RunView`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value as Json};

use crate::record::{Phase, Record, RecordRef, Role, Value};
use crate::segment::decode_value;
use crate::segment::SegmentStatus;

/// The run as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMeta {
    pub id: String,
    pub started_wall_ns: Option<u64>,
    pub ended_wall_ns: Option<u64>,
    pub exit_status: Option<i32>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub argv: Vec<String>,
    pub rootdir: Option<String>,
    /// Some writer of the run still holds its lock.
    pub live: bool,
    /// The run this session resumes (`--blackbox-resume`): the previous attempt.
    pub resumes: Option<String>,
    /// This session's number in its logical run: 1, or more for a resume.
    pub attempt: u32,
    /// A resume that runs the tests that crashed in `resumes` again (`=retry`).
    pub retry: bool,
}

impl RunMeta {
    /// Its pytest died: no process of it is alive and its session never ended.
    pub fn died(&self) -> bool {
        !self.live && self.ended_wall_ns.is_none()
    }
}

/// One phase of a test as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseView {
    pub phase: Phase,
    pub outcome: String,
    pub duration_s: f64,
    /// Where the record is: (segment index, frame offset), for [`crate::Follower::read_at`].
    pub location: (usize, u64),
}

/// One test across every process that touched it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestView {
    pub nodeid: String,
    /// `passed`, `failed`, `skipped`, `error` (setup or teardown failed), `crashed`,
    /// `running` (its process is alive and in it), `unfinished` (its process ended
    /// without finishing it, on purpose) or `not-run` (collected, never started, and the
    /// run is over).
    pub outcome: String,
    pub duration_s: f64,
    pub worker: Option<String>,
    pub pid: Option<u32>,
    pub crashed: bool,
    pub signal: Option<i32>,
    /// The test ran out of time (its outcome is then `timeout`).
    pub timeout: Option<TimeoutView>,
    pub phases: Vec<PhaseView>,
    pub properties: Vec<(String, Value)>,
    pub start_mono_ns: u64,
    pub end_mono_ns: Option<u64>,
    /// The latest time any record of this test carries: where a timeline bar of a test
    /// that never ended (crashed, unfinished) stops.
    pub last_mono_ns: u64,
    /// The attempt of the logical run it ran in ([`RunMeta::attempt`]).
    pub attempt: u32,
}

impl TestView {
    /// A test collected in `attempt` that never started: nothing but its name.
    pub fn not_run(nodeid: String, attempt: u32) -> TestView {
        TestView {
            nodeid,
            outcome: "not-run".into(),
            duration_s: 0.0,
            worker: None,
            pid: None,
            crashed: false,
            signal: None,
            timeout: None,
            phases: Vec::new(),
            properties: Vec::new(),
            start_mono_ns: 0,
            end_mono_ns: None,
            last_mono_ns: 0,
            attempt,
        }
    }

    /// The run did not finish it: never started, or in the middle of it when its process
    /// died (what `--blackbox-resume` runs).
    pub fn not_finished(&self) -> bool {
        self.crashed || matches!(self.outcome.as_str(), "not-run" | "unfinished" | "running")
    }
}

/// Setup and teardown times of one fixture (or one `timed` name), over the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureStats {
    pub name: String,
    pub scope: String,
    pub setups: u64,
    pub teardowns: u64,
    /// Setup time, summed.
    pub total_s: f64,
    pub mean_s: f64,
    pub max_s: f64,
    pub teardown_total_s: f64,
}

/// A process that died while (or between) running tests.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashView {
    pub nodeid: Option<String>,
    pub worker: Option<String>,
    pub pid: Option<u32>,
    pub signal: Option<i32>,
    pub exit_code: Option<i32>,
    /// The phase that died: `setup`, `call` or `teardown`.
    pub phase: Option<String>,
    pub detail: String,
    /// Files in the run folder for this crash (faulthandler output).
    pub attachments: Vec<String>,
    /// How the process ended: `timeout` (its test ran past its time limit: see `timeout`),
    /// `signal` (a fatal signal its handler saw, or that a parent
    /// read), `exit` (`os._exit` in the middle of a test), `killed` (no handler ran:
    /// SIGKILL, the OOM killer, power loss) or `child` (a process the test forked died: the
    /// test itself did not; `nodeid` names it, and it is not counted as crashed).
    pub kind: String,
    /// When it died (Unix ns), where known.
    pub wall_ns: Option<u64>,
    /// The accelerator variables the dead process had (see `process.rs`).
    pub devices: Vec<(String, String)>,
    /// The process was ended because its test ran out of time (`kind` is `timeout`).
    pub timeout: Option<TimeoutView>,
}

/// A process that ended itself (`os._exit`) outside any phase of a test: no crash.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitView {
    /// The test whose report came last before the exit; `None` between tests.
    pub nodeid: Option<String>,
    pub phase: Option<Phase>,
    pub code: i32,
    pub worker: Option<String>,
    pub pid: Option<u32>,
}

/// A test that ran past its time limit (a [`Record::Timeout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutView {
    pub phase: Option<String>,
    pub limit_s: f64,
    pub elapsed_s: f64,
    /// `blackbox_timeout` or `pytest-timeout`.
    pub source: String,
    /// The process ended with it (else only the test failed).
    pub fatal: bool,
}

impl TimeoutView {
    /// "timed out after 2.0 s in call (`blackbox_timeout`)".
    pub fn story(&self) -> String {
        crate::watchdog::timeout_story(self.limit_s, self.phase.as_deref(), &self.source)
    }

    pub fn to_json(&self) -> Json {
        json!({
            "phase": self.phase,
            "limit_s": self.limit_s,
            "elapsed_s": self.elapsed_s,
            "source": self.source,
            "fatal": self.fatal,
        })
    }
}

/// One xdist worker (or the main process), over all its processes: the children it
/// forked (pytest-forked) count as its own.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// `gw0`…, or the role (`main`, `controller`) for processes outside xdist workers.
    pub id: String,
    pub pids: Vec<u32>,
    pub tests: u64,
    pub crashes: u64,
    pub alive: bool,
    /// Of `pids`, the children forked to run a test.
    pub forked: u64,
    /// The accelerator variables its processes had (the first process that set any).
    pub devices: Vec<(String, String)>,
}

/// Everything [`Aggregate::view`] derives.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    pub run: RunMeta,
    /// In the order they started.
    pub tests: Vec<TestView>,
    /// Slowest total first.
    pub fixtures: Vec<FixtureStats>,
    /// Calls timed with the `timed` decorator, slowest total first.
    pub timed: Vec<FixtureStats>,
    pub crashes: Vec<CrashView>,
    /// Processes that ended themselves between tests or after a test's report.
    pub exits: Vec<ExitView>,
    pub workers: Vec<WorkerView>,
    /// Damaged or unreadable segments, as "path: at offset N: reason".
    pub problems: Vec<String>,
    pub segments: usize,
    pub records: u64,
    /// How many tests the session collected ([`Record::Collected`]); `None` when it
    /// recorded no collection (it died before, or an older version wrote it).
    pub collected: Option<u64>,
}

#[derive(Debug, Clone)]
struct PhaseAcc {
    mono: u64,
    outcome: Cow<'static, str>,
    duration_s: f64,
    seg: usize,
    offset: u64,
}

/// A few items, the first kept inline: most tests start and end in one process, so this
/// costs no allocation for them.
#[derive(Debug, Clone)]
struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T: Copy + PartialEq> Few<T> {
    fn push(&mut self, v: T) {
        if self.first.is_none() {
            self.first = Some(v);
        } else {
            self.rest.push(v);
        }
    }

    fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn last(&self) -> Option<T> {
        self.rest.last().copied().or(self.first)
    }

    fn contains(&self, v: T) -> bool {
        self.iter().any(|x| x == v)
    }
}

#[derive(Debug)]
struct TestAcc {
    nodeid: Box<str>,
    /// The next test whose nodeid has the same hash (see [`TestIndex`]).
    same_hash: Option<u32>,
    first_mono: u64,
    last_mono: u64,
    end_mono: Option<u64>,
    /// Segments in which the test started, with the monotonic time.
    started_in: Few<(usize, u64)>,
    /// Segments in which the test ended.
    ended_in: Few<usize>,
    /// By phase (setup, call, teardown).
    phases: [Option<PhaseAcc>; 3],
    /// One entry per key, in the order keys were first seen.
    props: Vec<PropAcc>,
    /// Key (index into [`Aggregate::keys`]) to its entry in `props`, once the test has more
    /// than [`FEW_PROPS`] keys (see [`TestAcc::prop_slot`]).
    prop_slots: HashMap<u32, u32>,
}

/// Up to this many keys a test's entries are scanned; past it they are looked up in a map,
/// so that a record costs the same whatever the number of keys the test has.
const FEW_PROPS: usize = 16;

impl TestAcc {
    /// Where in `props` key `k` is, if the test has it.
    fn prop_slot(&mut self, k: u32) -> Option<usize> {
        if self.props.len() <= FEW_PROPS {
            return self.props.iter().position(|p| p.key == k);
        }
        // Entries are only ever added: index the ones added since the last lookup.
        let indexed = self.prop_slots.len();
        for (j, p) in self.props.iter().enumerate().skip(indexed) {
            self.prop_slots
                .insert(p.key, u32::try_from(j).unwrap_or(u32::MAX));
        }
        self.prop_slots.get(&k).map(|&j| j as usize)
    }
}

/// A property value as it came: encoded bytes from a segment (decoded when a view asks),
/// or a value handed over by a caller.
#[derive(Debug)]
enum Stored {
    Raw(Vec<u8>),
    Owned(Value),
}

impl Stored {
    fn value(&self) -> Value {
        match self {
            // The bytes were checked when their frame was read.
            Stored::Raw(b) => decode_value(b).unwrap_or(Value::None),
            Stored::Owned(v) => v.clone(),
        }
    }
}

/// A value being folded in: borrowed from a frame, or moved in.
enum PropIn<'a> {
    Raw(&'a [u8]),
    Owned(Value),
}

impl PropIn<'_> {
    fn stored(self) -> Stored {
        match self {
            PropIn::Raw(b) => Stored::Raw(b.to_vec()),
            PropIn::Owned(v) => Stored::Owned(v),
        }
    }
}

/// What one key of a test holds: only the newest `record` matters (the last write wins),
/// so a key written a million times costs one slot, not a million.
#[derive(Debug)]
struct PropAcc {
    /// Index into [`Aggregate::keys`].
    key: u32,
    first_mono: u64,
    set: Option<(u64, Stored)>,
    appends: Vec<(u64, Stored)>,
}

impl PropAcc {
    fn add(&mut self, mono: u64, append: bool, value: PropIn<'_>) {
        self.first_mono = self.first_mono.min(mono);
        if append {
            self.appends.push((mono, value.stored()));
            return;
        }
        match (&mut self.set, value) {
            (Some((m, _)), _) if *m > mono => {}
            // The newest record replaces the bytes in place: no allocation per write.
            (Some((m, Stored::Raw(buf))), PropIn::Raw(b)) => {
                *m = mono;
                buf.clear();
                buf.extend_from_slice(b);
            }
            (set, value) => *set = Some((mono, value.stored())),
        }
    }

    /// The value a replay in time order gives: a later `record` replaces what came
    /// before; `append` after it extends a list (a non-list value starts a new list).
    fn merged(&self) -> Value {
        let mut appends: Vec<&(u64, Stored)> = self.appends.iter().collect();
        appends.sort_by_key(|(m, _)| *m);
        let (base, after) = match &self.set {
            None => (Vec::new(), 0),
            Some((m, v)) => {
                let after = *m;
                let v = v.value();
                if appends.iter().all(|(am, _)| *am < after) {
                    return v;
                }
                let base = match v {
                    Value::List(items) => items,
                    _ => Vec::new(),
                };
                (base, after)
            }
        };
        let mut items = base;
        items.extend(
            appends
                .into_iter()
                .filter(|(m, _)| self.set.is_none() || *m >= after)
                .map(|(_, v)| v.value()),
        );
        Value::List(items)
    }
}

#[derive(Debug, Default, Clone)]
struct TimeAcc {
    setups: u64,
    teardowns: u64,
    total: f64,
    max: f64,
    teardown_total: f64,
}

#[derive(Debug, Default)]
struct SegAcc {
    role: Option<Role>,
    worker: Option<String>,
    pid: Option<u32>,
    /// The test started and not ended in this segment, if any (index into `tests`).
    open_test: Option<u32>,
    /// The last phase reported for `open_test` in this segment.
    open_phase: Option<Phase>,
    tests: u64,
    /// The test this segment's last record named: a segment writes a test's records
    /// together, so the next one most likely names it again (one comparison, no hash).
    last_test: Option<u32>,
    /// Likewise the last fixture (index into `fixtures`).
    last_fixture: Option<u32>,
    /// Likewise the last property key (index into [`Aggregate::keys`]): a suite records
    /// the same few keys test after test.
    last_key: Option<u32>,
    /// The last [`Record::IntentionalExit`]: (test, phase, code).
    intentional_exit: Option<(Option<String>, Option<Phase>, i32)>,
    /// From [`Record::ProcessInfo`]: the accelerator variables, the memory cgroup and its
    /// OOM kill count when the first test started.
    devices: Vec<(String, String)>,
    memory_cgroup: Option<(String, Option<u64>)>,
    /// (monotonic, wall) clocks read together at its first test.
    clocks: Option<(u64, u64)>,
}

/// Incremental fold of a run's records.
#[derive(Debug, Default)]
pub struct Aggregate {
    run: RunMeta,
    /// In the order they were first seen.
    tests: Vec<TestAcc>,
    test_index: TestIndex,
    /// Property keys, each once.
    keys: Vec<Box<str>>,
    key_index: HashMap<Box<str>, u32>,
    /// (name, scope, times)
    fixtures: Vec<(String, String, TimeAcc)>,
    /// name -> scope -> index into `fixtures`
    fixture_index: HashMap<String, HashMap<String, u32>>,
    timed: HashMap<String, TimeAcc>,
    segs: Vec<SegAcc>,
    /// Crash records written by observers (parents, the controller).
    crashes: Vec<CrashView>,
    /// (test, kind, path, segment): a process's own files (test `None`) belong to every
    /// crash of that process.
    attachments: Vec<(Option<String>, String, String, usize)>,
    exits: Vec<(Option<String>, i32, usize)>,
    /// (test, timeout, segment, when: Unix ns)
    timeouts: Vec<(Option<String>, TimeoutView, usize, u64)>,
    records: u64,
    /// The collection ([`Record::Collected`]) as far as its records came, and its size.
    collected: Vec<String>,
    collected_total: Option<u32>,
}

/// Tests by nodeid: the nodeid's hash (keyed per process, so a hostile store cannot aim
/// for collisions) to the newest test with that hash, the others chained through
/// [`TestAcc::same_hash`]. Each nodeid is hashed once per lookup and never again (growing
/// the table rehashes the stored hashes, not the text), and kept once.
#[derive(Debug, Default)]
struct TestIndex {
    keys: std::collections::hash_map::RandomState,
    heads: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
}

/// The hasher of a key that is already a hash.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl TestIndex {
    fn hash(&self, nodeid: &[u8]) -> u64 {
        self.keys.hash_one(nodeid)
    }

    fn find(&self, tests: &[TestAcc], hash: u64, nodeid: &[u8]) -> Option<u32> {
        let mut at = self.heads.get(&hash).copied();
        while let Some(i) = at {
            let t = &tests[i as usize];
            if t.nodeid.as_bytes() == nodeid {
                return Some(i);
            }
            at = t.same_hash;
        }
        None
    }

    fn get(&self, tests: &[TestAcc], nodeid: &str) -> Option<usize> {
        let b = nodeid.as_bytes();
        self.find(tests, self.hash(b), b).map(|i| i as usize)
    }
}

/// The text of an outcome, without an allocation for the usual ones.
/// Text from a frame (checked UTF-8 when it was written), borrowed: `str::from_utf8`
/// checks ASCII a word at a time, where `from_utf8_lossy` walks it byte by byte.
fn text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

fn outcome_text(b: &[u8]) -> Cow<'static, str> {
    match b {
        b"passed" => Cow::Borrowed("passed"),
        b"failed" => Cow::Borrowed("failed"),
        b"skipped" => Cow::Borrowed("skipped"),
        _ => Cow::Owned(text(b).into_owned()),
    }
}

impl Aggregate {
    fn seg(&mut self, seg: usize) -> &mut SegAcc {
        if self.segs.len() <= seg {
            self.segs.resize_with(seg + 1, SegAcc::default);
        }
        &mut self.segs[seg]
    }

    /// The index of test `nodeid` (created when new), named by a record of `seg` at `mono`.
    fn test_at(&mut self, seg: usize, nodeid: &[u8], mono: u64) -> usize {
        let cached = self.segs.get(seg).and_then(|s| s.last_test);
        let idx = match cached {
            Some(i) if self.tests[i as usize].nodeid.as_bytes() == nodeid => i,
            _ => {
                let hash = self.test_index.hash(nodeid);
                let i = if let Some(i) = self.test_index.find(&self.tests, hash, nodeid) {
                    i
                } else {
                    let i = u32::try_from(self.tests.len()).unwrap_or(u32::MAX);
                    let same_hash = self.test_index.heads.insert(hash, i);
                    self.tests.push(TestAcc {
                        // Text from a frame is checked UTF-8, so this copies it as it is.
                        nodeid: text(nodeid).into(),
                        same_hash,
                        first_mono: mono,
                        last_mono: mono,
                        end_mono: None,
                        started_in: Few::default(),
                        ended_in: Few::default(),
                        phases: [None, None, None],
                        props: Vec::new(),
                        prop_slots: HashMap::new(),
                    });
                    i
                };
                self.seg(seg).last_test = Some(i);
                i
            }
        };
        let t = &mut self.tests[idx as usize];
        t.last_mono = t.last_mono.max(mono);
        idx as usize
    }

    /// Folds one record of segment `seg` (frame at `offset`) in.
    pub fn apply(&mut self, seg: usize, offset: u64, rec: &Record) {
        self.apply_owned(seg, offset, rec.clone());
    }

    /// Folds in a record decoded without allocating (what a [`crate::Follower`] does).
    pub(crate) fn apply_ref(&mut self, seg: usize, offset: u64, rec: RecordRef<'_>) {
        self.records += 1;
        match rec {
            RecordRef::TestStart { nodeid, mono_ns } => self.test_start(seg, nodeid, mono_ns),
            RecordRef::TestPhase {
                nodeid,
                phase,
                outcome,
                duration_s,
                mono_ns,
            } => self.test_phase(seg, offset, nodeid, phase, outcome, duration_s, mono_ns),
            RecordRef::TestEnd { nodeid, mono_ns } => self.test_end(seg, nodeid, mono_ns),
            RecordRef::Property {
                append,
                test,
                key,
                value,
                mono_ns,
            } => self.prop(seg, test, key, PropIn::Raw(value), mono_ns, append),
            RecordRef::Fixture {
                name,
                scope,
                setup,
                duration_s,
            } => self.fixture(seg, name, scope, setup, duration_s),
            RecordRef::Timed { name, duration_s } => self.timed(name, duration_s),
        }
    }

    /// [`apply`](Self::apply), taking the record: its strings and values move into the
    /// aggregate instead of being copied.
    pub fn apply_owned(&mut self, seg: usize, offset: u64, rec: Record) {
        self.records += 1;
        match rec {
            Record::Process {
                pid, role, worker, ..
            } => {
                let s = self.seg(seg);
                s.role = Some(role);
                s.worker = worker;
                s.pid = Some(pid);
            }
            Record::RunStart {
                argv,
                rootdir,
                host,
                pid,
                wall_ns,
            } => {
                self.run.started_wall_ns = Some(wall_ns);
                self.run.argv = argv;
                self.run.rootdir = Some(rootdir);
                self.run.host = Some(host);
                self.run.pid = Some(pid);
            }
            Record::RunEnd {
                exit_status,
                wall_ns,
            } => {
                self.run.exit_status = Some(exit_status);
                self.run.ended_wall_ns = Some(wall_ns);
            }
            Record::TestStart { nodeid, mono_ns } => {
                self.test_start(seg, nodeid.as_bytes(), mono_ns);
            }
            Record::TestPhase {
                nodeid,
                phase,
                outcome,
                duration_s,
                mono_ns,
                ..
            } => self.test_phase(
                seg,
                offset,
                nodeid.as_bytes(),
                phase,
                outcome.as_bytes(),
                duration_s,
                mono_ns,
            ),
            Record::TestEnd { nodeid, mono_ns } => self.test_end(seg, nodeid.as_bytes(), mono_ns),
            Record::PropertySet {
                test,
                key,
                value,
                mono_ns,
            } => self.prop(
                seg,
                test.as_deref().map(str::as_bytes),
                key.as_bytes(),
                PropIn::Owned(value),
                mono_ns,
                false,
            ),
            Record::PropertyAppend {
                test,
                key,
                value,
                mono_ns,
            } => self.prop(
                seg,
                test.as_deref().map(str::as_bytes),
                key.as_bytes(),
                PropIn::Owned(value),
                mono_ns,
                true,
            ),
            Record::Fixture {
                name,
                scope,
                setup,
                duration_s,
                ..
            } => self.fixture(seg, name.as_bytes(), scope.as_bytes(), setup, duration_s),
            Record::Timed {
                name, duration_s, ..
            } => self.timed(name.as_bytes(), duration_s),
            Record::Crash {
                test,
                pid,
                worker,
                signal,
                exit_code,
                phase,
                detail,
                wall_ns,
            } => {
                let kind = crash_kind((signal != 0).then_some(signal), exit_code);
                self.crashes.push(CrashView {
                    nodeid: test,
                    worker,
                    pid: (pid != 0).then_some(pid),
                    signal: (signal != 0).then_some(signal),
                    exit_code,
                    phase,
                    detail,
                    attachments: Vec::new(),
                    timeout: None,
                    kind: kind.into(),
                    wall_ns: Some(wall_ns),
                    devices: Vec::new(),
                });
            }
            Record::Exit { test, code, .. } => self.exits.push((test, code, seg)),
            Record::IntentionalExit {
                test, phase, code, ..
            } => self.seg(seg).intentional_exit = Some((test, phase, code)),
            Record::ProcessInfo {
                env,
                memory_cgroup,
                oom_kills,
                mono_ns,
                wall_ns,
            } => {
                let s = self.seg(seg);
                s.devices = env;
                s.memory_cgroup = memory_cgroup.map(|c| (c, oom_kills));
                s.clocks = Some((mono_ns, wall_ns));
            }
            Record::Attachment { test, kind, path } => {
                self.attachments.push((test, kind, path, seg));
            }
            Record::Collected {
                total,
                first,
                nodeids,
            } => {
                // The parts of the first collection, in order; any other is not this run's.
                let next = self.collected.len();
                let fits = match self.collected_total {
                    None => first == 0,
                    Some(t) => t == total && first as usize == next && next < t as usize,
                };
                if fits {
                    self.collected_total = Some(total);
                    self.collected.extend(crate::record::front_decode(&nodeids));
                }
            }
            Record::Resume {
                run,
                attempt,
                retry,
            } => {
                self.run.resumes = Some(run);
                self.run.attempt = attempt;
                self.run.retry = retry;
            }
            Record::Timeout {
                test,
                phase,
                limit_s,
                elapsed_s,
                source,
                fatal,
                wall_ns,
            } => self.timeouts.push((
                test,
                TimeoutView {
                    phase,
                    limit_s,
                    elapsed_s,
                    source,
                    fatal,
                },
                seg,
                wall_ns,
            )),
        }
    }

    fn test_start(&mut self, seg: usize, nodeid: &[u8], mono: u64) {
        let i = self.test_at(seg, nodeid, mono);
        self.tests[i].started_in.push((seg, mono));
        let s = self.seg(seg);
        s.open_test = Some(i as u32);
        s.open_phase = None;
        s.tests += 1;
    }

    #[allow(clippy::too_many_arguments)] // the fields of a phase record
    fn test_phase(
        &mut self,
        seg: usize,
        offset: u64,
        nodeid: &[u8],
        phase: Phase,
        outcome: &[u8],
        duration_s: f64,
        mono: u64,
    ) {
        let i = self.test_at(seg, nodeid, mono);
        let slot = &mut self.tests[i].phases[phase as usize];
        if slot.as_ref().is_none_or(|p| p.mono <= mono) {
            *slot = Some(PhaseAcc {
                mono,
                outcome: outcome_text(outcome),
                duration_s,
                seg,
                offset,
            });
        }
        let s = self.seg(seg);
        if s.open_test == Some(i as u32) {
            s.open_phase = Some(phase);
        }
    }

    fn test_end(&mut self, seg: usize, nodeid: &[u8], mono: u64) {
        let i = self.test_at(seg, nodeid, mono);
        let s = self.seg(seg);
        if s.open_test == Some(i as u32) {
            s.open_test = None;
            s.open_phase = None;
        }
        let t = &mut self.tests[i];
        t.ended_in.push(seg);
        t.end_mono = Some(t.end_mono.map_or(mono, |m| m.max(mono)));
    }

    fn prop(
        &mut self,
        seg: usize,
        test: Option<&[u8]>,
        key: &[u8],
        value: PropIn<'_>,
        mono: u64,
        append: bool,
    ) {
        let i = self.test_at(seg, test.unwrap_or_default(), mono);
        let cached = self.segs.get(seg).and_then(|s| s.last_key);
        let k = match cached {
            Some(k) if self.keys[k as usize].as_bytes() == key => k,
            _ => {
                let name = text(key);
                let k = if let Some(&k) = self.key_index.get(&*name) {
                    k
                } else {
                    let k = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
                    self.keys.push(name.clone().into());
                    self.key_index.insert(name.into(), k);
                    k
                };
                self.seg(seg).last_key = Some(k);
                k
            }
        };
        let t = &mut self.tests[i];
        if let Some(j) = t.prop_slot(k) {
            t.props[j].add(mono, append, value);
            return;
        }
        let mut p = PropAcc {
            key: k,
            first_mono: mono,
            set: None,
            appends: Vec::new(),
        };
        p.add(mono, append, value);
        t.props.push(p);
    }

    fn fixture(&mut self, seg: usize, name: &[u8], scope: &[u8], setup: bool, d: f64) {
        let cached = self.segs.get(seg).and_then(|s| s.last_fixture);
        let i = match cached {
            Some(i)
                if self.fixtures[i as usize].0.as_bytes() == name
                    && self.fixtures[i as usize].1.as_bytes() == scope =>
            {
                i
            }
            _ => {
                let (name, scope) = (text(name), text(scope));
                let found = self
                    .fixture_index
                    .get(&*name)
                    .and_then(|m| m.get(&*scope))
                    .copied();
                let i = if let Some(i) = found {
                    i
                } else {
                    let i = u32::try_from(self.fixtures.len()).unwrap_or(u32::MAX);
                    self.fixtures
                        .push((name.to_string(), scope.to_string(), TimeAcc::default()));
                    self.fixture_index
                        .entry(name.into_owned())
                        .or_default()
                        .insert(scope.into_owned(), i);
                    i
                };
                self.seg(seg).last_fixture = Some(i);
                i
            }
        };
        add_time(&mut self.fixtures[i as usize].2, setup, d);
    }

    fn timed(&mut self, name: &[u8], d: f64) {
        let name = text(name);
        let acc = match self.timed.get_mut(&*name) {
            Some(a) => a,
            None => self.timed.entry(name.into_owned()).or_default(),
        };
        add_time(acc, true, d);
    }

    /// Records folded in so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Total fixture setups recorded so far (every fixture, every scope).
    pub fn fixture_setups(&self) -> u64 {
        self.fixtures.iter().map(|(_, _, a)| a.setups).sum()
    }

    /// Merged properties of `nodeid`: the last `record` of a key wins; `append`ed values
    /// form a list in time order.
    pub fn properties(&self, nodeid: &str) -> Vec<(String, Value)> {
        self.test_index
            .get(&self.tests, nodeid)
            .map(|i| merge_props(&self.tests[i].props, &self.keys))
            .unwrap_or_default()
    }

    /// Where each recorded phase report of `nodeid` is, in phase order.
    pub fn phase_locations(&self, nodeid: &str) -> Vec<(Phase, usize, u64)> {
        self.test_index
            .get(&self.tests, nodeid)
            .map(|i| {
                phases(&self.tests[i])
                    .map(|(p, a)| (p, a.seg, a.offset))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Builds the view, given the segments' state now (index = segment index).
    pub fn view(&self, id: &str, segments: &[SegmentStatus]) -> RunView {
        let status = |seg: usize| segments.get(seg);
        let seg_worker = |seg: usize| -> Option<String> {
            self.segs
                .get(seg)
                .and_then(|s| s.worker.clone())
                .or_else(|| status(seg).and_then(|s| s.worker.clone()))
        };
        let seg_pid = |seg: usize| {
            self.segs
                .get(seg)
                .and_then(|s| s.pid)
                .or_else(|| status(seg).map(|s| s.pid))
        };

        // Crashes: observers' records first, then dead segments that were in a test.
        let mut crashes: Vec<CrashView> = Vec::new();
        // Crashes by nodeid, so merging stays linear in the number of crashes.
        let mut by_nodeid: HashMap<Option<String>, Vec<usize>> = HashMap::new();
        let mut merge = |c: CrashView| {
            let candidates = by_nodeid.entry(c.nodeid.clone()).or_default();
            let found = candidates.iter().copied().find(|&i| {
                let x = &crashes[i];
                (x.nodeid.is_some() || x.pid == c.pid)
                    && (x.pid.is_none()
                        || c.pid.is_none()
                        || x.pid == c.pid
                        || x.worker == c.worker)
            });
            if found.is_none() {
                candidates.push(crashes.len());
            }
            match found.map(|i| &mut crashes[i]) {
                Some(x) => {
                    x.signal = x.signal.or(c.signal);
                    x.exit_code = x.exit_code.or(c.exit_code);
                    x.pid = x.pid.or(c.pid);
                    x.worker = x.worker.clone().or(c.worker);
                    x.phase = x.phase.clone().or(c.phase);
                    x.wall_ns = x.wall_ns.or(c.wall_ns);
                    if x.devices.is_empty() {
                        x.devices = c.devices;
                    }
                    if x.detail.is_empty() || (x.timeout.is_none() && c.timeout.is_some()) {
                        x.detail = c.detail;
                    }
                    if x.timeout.is_none() && c.timeout.is_some() {
                        x.timeout = c.timeout;
                        "timeout".clone_into(&mut x.kind);
                    }
                }
                None => crashes.push(c),
            }
        };
        for c in &self.crashes {
            merge(c.clone());
        }
        let mut exit_of_seg: HashMap<usize, &(Option<String>, i32, usize)> = HashMap::new();
        for e in &self.exits {
            exit_of_seg.entry(e.2).or_insert(e);
        }
        // A process's fatal timeout, and when it came (its test's time runs to it).
        let mut timeout_of_seg: HashMap<usize, (&TimeoutView, u64)> = HashMap::new();
        for (_, t, seg, wall_ns) in self.timeouts.iter().filter(|t| t.1.fatal) {
            timeout_of_seg.entry(*seg).or_insert((t, *wall_ns));
        }
        let mut exits = Vec::new();
        for (seg, s) in self.segs.iter().enumerate() {
            let Some(st) = status(seg) else { continue };
            if let Some((test, phase, code)) = &s.intentional_exit {
                exits.push(ExitView {
                    nodeid: test.clone(),
                    phase: *phase,
                    code: *code,
                    worker: s.worker.clone(),
                    pid: s.pid.or(Some(st.pid)),
                });
            }
            if st.alive || st.closed_cleanly {
                continue;
            }
            let exit = exit_of_seg.get(&seg).copied();
            let (timeout, timed_out_at) = timeout_of_seg
                .get(&seg)
                .map_or((None, None), |&(t, at)| (Some(t), Some(at)));
            let mark = st.crash.as_ref();
            let open = s
                .open_test
                .map(|i| self.tests[i as usize].nodeid.to_string());
            if s.tests == 0 {
                // This process started no test of its own: a replacement xdist worker that
                // ran nothing, a child a test forked (multiprocessing, os.fork). Its end is
                // no crash of a test; a child that died of a signal, or without a word
                // (no exit of its own), is told as a child of the test it ran in.
                let inherited = mark
                    .and_then(|m| m.test.clone())
                    .or_else(|| exit.and_then(|e| e.0.clone()))
                    .or_else(|| st.current_test.clone());
                let child = matches!(s.role, Some(Role::Forked) | None);
                if !child || exit.is_some() || s.intentional_exit.is_some() || inherited.is_none() {
                    if mark.is_none() || child {
                        continue;
                    }
                } else {
                    let x = inherited.unwrap_or_default();
                    let how = mark.map_or_else(
                        || "died without a signal handler running (SIGKILL?)".to_owned(),
                        |m| format!("died of {}", signal_name(m.signal)),
                    );
                    merge(CrashView {
                        detail: format!("child process of {x} {how}"),
                        nodeid: Some(x),
                        worker: s.worker.clone(),
                        pid: s.pid.or(Some(st.pid)),
                        signal: mark.map(|m| m.signal),
                        exit_code: None,
                        phase: None,
                        attachments: Vec::new(),
                        kind: "child".into(),
                        wall_ns: mark.map(|m| m.wall_ns),
                        devices: s.devices.clone(),
                        timeout: None,
                    });
                    continue;
                }
            }
            if let Some((test, _, _)) = &s.intentional_exit {
                // It ended itself between tests, or after its running test's last report
                // was made: that report is the test's outcome.
                if test.is_none() || *test == open {
                    continue;
                }
            }
            let test = open.clone().or_else(|| mark.and_then(|m| m.test.clone()));
            if test.is_none() && mark.is_none() && exit.is_none() && s.role == Some(Role::Forked) {
                continue; // a forked child that ran its test and went (nothing to attribute)
            }
            let phase = match s.open_phase {
                None => "setup",
                Some(Phase::Setup) => "call",
                Some(Phase::Call | Phase::Teardown) => "teardown",
            };
            let oom = mark.is_none() && exit.is_none() && oom_killed(s);
            let (kind, detail) = match (mark, exit) {
                _ if timeout.is_some() => (
                    "timeout",
                    timeout.map(TimeoutView::story).unwrap_or_default(),
                ),
                (Some(m), _) => ("signal", format!("killed by {}", signal_name(m.signal))),
                (None, Some((_, code, _))) => {
                    ("exit", format!("exited with status {code} during the test"))
                }
                (None, None) if oom => (
                    "killed",
                    "killed by the OOM killer (its memory cgroup counted an oom_kill)".into(),
                ),
                (None, None) => (
                    "killed",
                    "process died without a signal handler running (SIGKILL, os._exit or power loss)"
                        .into(),
                ),
            };
            merge(CrashView {
                nodeid: test,
                worker: s.worker.clone(),
                pid: s.pid.or(Some(st.pid)),
                signal: mark.map(|m| m.signal),
                exit_code: exit.map(|e| e.1),
                phase: timeout
                    .and_then(|t| t.phase.clone())
                    .or_else(|| s.open_test.as_ref().map(|_| phase.to_owned())),
                detail,
                attachments: Vec::new(),
                timeout: timeout.cloned(),
                kind: kind.into(),
                wall_ns: mark.map(|m| m.wall_ns).or(timed_out_at),
                devices: s.devices.clone(),
            });
        }
        // Devices of the processes observers' crash records name.
        for c in &mut crashes {
            if c.devices.is_empty() {
                if let Some(s) = self.segs.iter().find(|s| c.pid.is_some() && s.pid == c.pid) {
                    c.devices.clone_from(&s.devices);
                }
            }
        }
        let mut attachments_of: HashMap<&str, Vec<String>> = HashMap::new();
        let mut process_files: HashMap<u32, Vec<String>> = HashMap::new();
        for (t, _, p, seg) in &self.attachments {
            match t {
                Some(t) => attachments_of
                    .entry(t.as_str())
                    .or_default()
                    .push(p.clone()),
                None => {
                    if let Some(pid) = self.segs.get(*seg).and_then(|s| s.pid) {
                        process_files.entry(pid).or_default().push(p.clone());
                    }
                }
            }
        }
        for c in &mut crashes {
            let mut files = c
                .nodeid
                .as_deref()
                .and_then(|n| attachments_of.get(n))
                .cloned()
                .unwrap_or_default();
            for p in c
                .pid
                .and_then(|pid| process_files.get(&pid))
                .into_iter()
                .flatten()
            {
                if !files.contains(p) {
                    files.push(p.clone());
                }
            }
            c.attachments = files;
        }
        let mut timeout_of: HashMap<&str, &TimeoutView> = HashMap::new();
        for (test, t, _, _) in &self.timeouts {
            if let Some(n) = test.as_deref() {
                timeout_of.entry(n).or_insert(t);
            }
        }
        let mut crash_of: HashMap<&str, usize> = HashMap::new();
        for (i, c) in crashes.iter().enumerate() {
            if let Some(n) = c.nodeid.as_deref().filter(|_| c.kind != "child") {
                crash_of.entry(n).or_insert(i);
            }
        }
        // A dead test's time runs to its last sign of life: its last record, or its death
        // (a wall-clock time, placed on the monotonic clock by the dead process's own
        // reading of both).
        let clocks_of: HashMap<u32, (u64, u64)> = self
            .segs
            .iter()
            .filter_map(|s| Some((s.pid?, s.clocks?)))
            .collect();
        let died_mono = |c: &CrashView| -> u64 {
            match (c.wall_ns, c.pid.and_then(|p| clocks_of.get(&p))) {
                (Some(w), Some(&(mono, wall))) => (w + mono).saturating_sub(wall),
                _ => 0,
            }
        };

        let live = segments.iter().any(|s| s.alive);
        let attempt = self.run.attempt.max(1);
        // Tests, in the order they started: CLOCK_MONOTONIC is one clock for every process
        // of a host, while records come segment by segment. A test never started sorts by
        // the record that first named it; ties keep the order tests were first seen.
        let mut order: Vec<(u64, usize)> = self
            .tests
            .iter()
            .enumerate()
            .map(|(idx, t)| {
                let started = t.started_in.iter().map(|(_, mono)| mono).min();
                (started.unwrap_or(t.first_mono), idx)
            })
            .collect();
        order.sort_unstable();
        let mut tests = Vec::with_capacity(self.tests.len());
        for (idx, t) in order.into_iter().map(|(_, idx)| (idx, &self.tests[idx])) {
            let nodeid = &*t.nodeid;
            if nodeid.is_empty() {
                continue; // session-level properties
            }
            let crash = crash_of.get(nodeid).map(|&i| &crashes[i]);
            let running = t.started_in.iter().any(|(seg, _)| {
                !t.ended_in.contains(seg)
                    && status(seg).is_some_and(|s| s.alive)
                    && self.segs.get(seg).and_then(|s| s.open_test) == Some(idx as u32)
            });
            let phase_outcome =
                |p: Phase| t.phases[p as usize].as_ref().map(|a| a.outcome.as_ref());
            let timeout = crash
                .and_then(|c| c.timeout.as_ref())
                .or_else(|| timeout_of.get(nodeid).copied());
            let outcome = if timeout.is_some() {
                "timeout"
            } else if crash.is_some() {
                "crashed"
            } else if running {
                "running"
            } else if phase_outcome(Phase::Setup) == Some("failed")
                || phase_outcome(Phase::Teardown) == Some("failed")
            {
                "error"
            } else if let Some(o) = phase_outcome(Phase::Call) {
                o
            } else if phase_outcome(Phase::Setup) == Some("skipped") {
                "skipped"
            } else if t.ended_in.is_empty() && !t.started_in.is_empty() {
                "unfinished"
            } else if t.phases.iter().all(Option::is_none) && t.started_in.is_empty() {
                // Only properties were recorded under this name.
                "unknown"
            } else {
                "passed"
            };
            let main_seg = t.phases[Phase::Call as usize]
                .as_ref()
                .map(|a| a.seg)
                .or_else(|| t.started_in.last().map(|(s, _)| s))
                .or_else(|| phases(t).next().map(|(_, a)| a.seg));
            let reported: f64 = phases(t).map(|(_, a)| a.duration_s).sum();
            let duration_s = match (crash, t.started_in.iter().map(|(_, m)| m).min()) {
                (Some(c), Some(start)) => {
                    let died = died_mono(c).max(t.last_mono);
                    reported.max(died.saturating_sub(start) as f64 / 1e9)
                }
                _ => reported,
            };
            tests.push(TestView {
                nodeid: nodeid.to_owned(),
                outcome: outcome.to_owned(),
                duration_s,
                worker: crash
                    .and_then(|c| c.worker.clone())
                    .or_else(|| main_seg.and_then(seg_worker)),
                pid: crash
                    .and_then(|c| c.pid)
                    .or_else(|| main_seg.and_then(seg_pid)),
                crashed: crash.is_some(),
                signal: crash.and_then(|c| c.signal),
                timeout: timeout.cloned(),
                phases: phases(t)
                    .map(|(p, a)| PhaseView {
                        phase: p,
                        outcome: a.outcome.to_string(),
                        duration_s: a.duration_s,
                        location: (a.seg, a.offset),
                    })
                    .collect(),
                properties: merge_props(&t.props, &self.keys),
                start_mono_ns: t.first_mono,
                end_mono_ns: t.end_mono,
                last_mono_ns: t.last_mono,
                attempt,
            });
        }
        // Collected and never started, once the run is over (while it runs they are to
        // come), in collection order.
        if !live {
            let mut seen = std::collections::HashSet::new();
            for id in &self.collected {
                if id.is_empty()
                    || self.test_index.get(&self.tests, id).is_some()
                    || !seen.insert(id.as_str())
                {
                    continue;
                }
                tests.push(TestView::not_run(id.clone(), attempt));
            }
        }

        // Workers (a section of its own: issue 17). A forked child belongs to the worker that
        // forked it (`gwN`, or `main`); tests and crashes count where their process belongs.
        let mut workers: BTreeMap<String, WorkerView> = BTreeMap::new();
        let mut key_of_pid: HashMap<u32, &str> = HashMap::new();
        let mut pid_seen: std::collections::HashSet<(&str, u32)> = std::collections::HashSet::new();
        let mut xdist_workers: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (seg, s) in self.segs.iter().enumerate() {
            let key = seg_worker_key(s);
            if s.role == Some(Role::Worker) {
                xdist_workers.insert(key);
            }
            let w = workers.entry(key.to_owned()).or_insert_with(|| WorkerView {
                id: key.to_owned(),
                pids: Vec::new(),
                tests: 0,
                crashes: 0,
                alive: false,
                forked: 0,
                devices: Vec::new(),
            });
            if w.devices.is_empty() {
                w.devices.clone_from(&s.devices);
            }
            if let Some(pid) = s.pid.or_else(|| status(seg).map(|x| x.pid)) {
                key_of_pid.insert(pid, key);
                // One segment per forked test: a set keeps this linear.
                if pid_seen.insert((key, pid)) {
                    w.pids.push(pid);
                    w.forked += u64::from(s.role == Some(Role::Forked));
                }
            }
            w.alive |= status(seg).is_some_and(|x| x.alive);
        }
        let key_of = |worker: Option<&str>, pid: Option<u32>| -> String {
            pid.and_then(|p| key_of_pid.get(&p).copied())
                .or(worker)
                .unwrap_or("main")
                .to_owned()
        };
        for t in tests.iter().filter(|t| t.outcome != "not-run") {
            if let Some(w) = workers.get_mut(&key_of(t.worker.as_deref(), t.pid)) {
                w.tests += 1;
            }
        }
        for c in crashes.iter().filter(|c| c.kind != "child") {
            if let Some(w) = workers.get_mut(&key_of(c.worker.as_deref(), c.pid)) {
                w.crashes += 1;
            }
        }
        // A replacement xdist worker that ended without running a test is not a worker of
        // the run ("9 tests on 4 workers" for `-n 2`).
        workers.retain(|id, w| {
            !(xdist_workers.contains(id.as_str()) && w.tests == 0 && w.crashes == 0 && !w.alive)
        });

        let mut run = self.run.clone();
        id.clone_into(&mut run.id);
        run.live = live;
        run.attempt = attempt;
        RunView {
            run,
            tests,
            fixtures: sorted_stats(self.fixtures.iter().map(|(n, s, a)| stats(n, s, a))),
            timed: sorted_stats(self.timed.iter().map(|(n, a)| stats(n, "timed", a))),
            crashes,
            exits,
            workers: workers.into_values().collect(),
            problems: segments
                .iter()
                .filter_map(|s| s.damage.as_ref().map(ToString::to_string))
                .collect(),
            segments: segments.len(),
            records: self.records,
            collected: self.collected_total.map(u64::from),
        }
    }
}

/// One logical run from `latest` and the attempts before it (`earlier`, newest first):
/// every test once, as the newest attempt that has it tells it (with that attempt's
/// number in [`TestView::attempt`]), the earlier attempts' tests first; the crashes of the
/// tests taken from earlier attempts join `latest`'s. Fixtures, workers and the run's own
/// facts stay `latest`'s.
pub fn merge_attempts(mut latest: RunView, earlier: Vec<RunView>) -> RunView {
    if earlier.is_empty() {
        return latest;
    }
    let mut have: std::collections::HashSet<String> =
        latest.tests.iter().map(|t| t.nodeid.clone()).collect();
    let mut older: Vec<(Vec<TestView>, Vec<CrashView>)> = Vec::new();
    for v in earlier {
        let tests: Vec<TestView> = v
            .tests
            .into_iter()
            .filter(|t| have.insert(t.nodeid.clone()))
            .collect();
        let taken: std::collections::HashSet<&str> =
            tests.iter().map(|t| t.nodeid.as_str()).collect();
        let crashes = v
            .crashes
            .into_iter()
            .filter(|c| c.nodeid.as_deref().is_some_and(|n| taken.contains(n)))
            .collect();
        older.push((tests, crashes));
    }
    let mut tests = Vec::new();
    let mut crashes = Vec::new();
    for (t, c) in older.into_iter().rev() {
        tests.extend(t);
        crashes.extend(c);
    }
    tests.append(&mut latest.tests);
    crashes.append(&mut latest.crashes);
    latest.tests = tests;
    latest.crashes = crashes;
    latest
}

/// The [`CrashView::kind`] of a death an observer saw: a signal (SIGKILL: `killed`), an
/// exit status, or nothing known (`killed`).
pub(crate) fn crash_kind(signal: Option<i32>, exit_code: Option<i32>) -> &'static str {
    match (signal, exit_code) {
        (Some(libc::SIGKILL), _) | (None, None) => "killed",
        (Some(_), _) => "signal",
        (None, Some(_)) => "exit",
    }
}

/// Whether the OOM killer killed in the segment's memory cgroup since its first test
/// started (the cgroup's `oom_kill` count grew): the likely end of a process that died
/// without a signal handler running.
fn oom_killed(s: &SegAcc) -> bool {
    s.memory_cgroup.as_ref().is_some_and(|(dir, before)| {
        crate::process::oom_kills(std::path::Path::new(dir))
            .is_some_and(|now| now > before.unwrap_or(0))
    })
}

/// The worker a segment belongs to: its xdist id, or its role outside xdist; a forked child
/// outside xdist belongs to `main`, which forked it.
fn seg_worker_key(s: &SegAcc) -> &str {
    s.worker.as_deref().unwrap_or_else(|| match s.role {
        Some(Role::Forked) => Role::Main.as_str(),
        Some(r) => r.as_str(),
        None => "other",
    })
}

fn add_time(acc: &mut TimeAcc, setup: bool, d: f64) {
    if setup {
        acc.setups += 1;
        acc.total += d;
        acc.max = acc.max.max(d);
    } else {
        acc.teardowns += 1;
        acc.teardown_total += d;
    }
}

fn stats(name: &str, scope: &str, a: &TimeAcc) -> FixtureStats {
    FixtureStats {
        name: name.to_owned(),
        scope: scope.to_owned(),
        setups: a.setups,
        teardowns: a.teardowns,
        total_s: a.total,
        mean_s: if a.setups == 0 {
            0.0
        } else {
            a.total / a.setups as f64
        },
        max_s: a.max,
        teardown_total_s: a.teardown_total,
    }
}

fn sorted_stats(it: impl Iterator<Item = FixtureStats>) -> Vec<FixtureStats> {
    let mut v: Vec<FixtureStats> = it.collect();
    v.sort_by(|a, b| {
        (b.total_s + b.teardown_total_s)
            .total_cmp(&(a.total_s + a.teardown_total_s))
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

fn merge_props(props: &[PropAcc], keys: &[Box<str>]) -> Vec<(String, Value)> {
    let mut sorted: Vec<&PropAcc> = props.iter().collect();
    sorted.sort_by_key(|p| p.first_mono);
    sorted
        .into_iter()
        .map(|p| (keys[p.key as usize].to_string(), p.merged()))
        .collect()
}

/// The phases a test reported, in phase order.
fn phases(t: &TestAcc) -> impl Iterator<Item = (Phase, &PhaseAcc)> {
    [Phase::Setup, Phase::Call, Phase::Teardown]
        .into_iter()
        .zip(&t.phases)
        .filter_map(|(p, a)| a.as_ref().map(|a| (p, a)))
}

/// `SIGSEGV` for 11, and so on; `signal N` for others.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

fn props_json(props: &[(String, Value)]) -> Json {
    Json::Object(
        props
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    )
}

/// A view's tests by nodeid ([`RunView::tests_by_nodeid`]): each nodeid's hash (keyed per
/// process, as [`TestIndex`]'s) to the first test of that hash, no copy of a nodeid. Two
/// nodeids of one 64-bit hash are told apart by a scan of the tests, never by a wrong
/// answer. Of two tests with one nodeid (a view has none), the first is found.
///
/// Readers mostly ask for the tests in their order (`{t.nodeid: run.properties(t.nodeid)
/// for t in run.tests}`): the test after the last one found is compared first, which
/// costs one comparison of the nodeid instead of hashing it.
#[derive(Debug)]
pub struct TestsByNodeid {
    keys: std::collections::hash_map::RandomState,
    first: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// No two tests share a nodeid: a test found at `next` is the first of its nodeid.
    unique: bool,
    /// The index after the last one found.
    next: AtomicUsize,
}

impl Clone for TestsByNodeid {
    fn clone(&self) -> Self {
        TestsByNodeid {
            keys: self.keys.clone(),
            first: self.first.clone(),
            unique: self.unique,
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}

impl TestsByNodeid {
    fn new(tests: &[TestView]) -> Self {
        let keys = std::collections::hash_map::RandomState::new();
        let mut first =
            HashMap::with_capacity_and_hasher(tests.len(), BuildHasherDefault::default());
        let mut unique = true;
        for (i, t) in tests.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match first.entry(keys.hash_one(t.nodeid.as_bytes())) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    unique &= tests[*e.get() as usize].nodeid != t.nodeid;
                }
            }
        }
        TestsByNodeid {
            keys,
            first,
            unique,
            next: AtomicUsize::new(0),
        }
    }

    /// The index in `tests` (those it was built from) of test `nodeid`.
    pub fn get(&self, tests: &[TestView], nodeid: &str) -> Option<usize> {
        let next = self.next.load(Ordering::Relaxed);
        if self.unique && tests.get(next).is_some_and(|t| t.nodeid == nodeid) {
            self.next.store(next + 1, Ordering::Relaxed);
            return Some(next);
        }
        let i = *self.first.get(&self.keys.hash_one(nodeid.as_bytes()))? as usize;
        let found = if tests.get(i).is_some_and(|t| t.nodeid == nodeid) {
            Some(i)
        } else {
            tests.iter().position(|t| t.nodeid == nodeid) // another nodeid of that hash
        };
        if let Some(i) = found {
            self.next.store(i + 1, Ordering::Relaxed);
        }
        found
    }
}

impl RunView {
    /// Its tests by nodeid, for lookups of many (`TestsByNodeid::get` with `self.tests`).
    pub fn tests_by_nodeid(&self) -> TestsByNodeid {
        TestsByNodeid::new(&self.tests)
    }

    /// The documented `stats --json` schema (docs/cli.md).
    pub fn to_json(&self) -> Json {
        json!({
            "run": {
                "id": self.run.id,
                "started": self.run.started_wall_ns.map(|n| n as f64 / 1e9),
                "ended": self.run.ended_wall_ns.map(|n| n as f64 / 1e9),
                "exit_status": self.run.exit_status,
                "host": self.run.host,
                "pid": self.run.pid,
                "argv": self.run.argv,
                "rootdir": self.run.rootdir,
                "live": self.run.live,
                "segments": self.segments,
                "records": self.records,
                "collected": self.collected,
                "resumes": self.run.resumes,
                "attempt": self.run.attempt,
                "retry": self.run.retry,
            },
            "tests": self.tests.iter().map(TestView::to_json).collect::<Vec<_>>(),
            "fixtures": self.fixtures.iter().map(FixtureStats::to_json).collect::<Vec<_>>(),
            "timed": self.timed.iter().map(FixtureStats::to_json).collect::<Vec<_>>(),
            "crashes": self.crashes.iter().map(CrashView::to_json).collect::<Vec<_>>(),
            "exits": self.exits.iter().map(ExitView::to_json).collect::<Vec<_>>(),
            "workers": self.workers.iter().map(WorkerView::to_json).collect::<Vec<_>>(),
            "problems": self.problems,
        })
    }
}

impl TestView {
    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "attempt": self.attempt,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "pid": self.pid,
            "crashed": self.crashed,
            "signal": self.signal,
            "signal_name": self.signal.map(signal_name),
            "timeout": self.timeout.as_ref().map(TimeoutView::to_json),
            "phases": self.phases.iter().map(|p| json!({"phase": p.phase.as_str(), "outcome": p.outcome, "duration_s": p.duration_s})).collect::<Vec<_>>(),
            "properties": props_json(&self.properties),
        })
    }
}

/// [`TestView::to_json`], written straight to a serializer: the same object, keys in the
/// same (sorted) order, without building the tree first (`stats --json` writes 100k of
/// them).
pub(crate) struct TestJson<'a>(pub &'a TestView);

impl serde::Serialize for TestJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Phases<'a>(&'a [PhaseView]);
        impl serde::Serialize for Phases<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                struct One<'a>(&'a PhaseView);
                impl serde::Serialize for One<'_> {
                    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                        use serde::ser::SerializeMap;
                        let mut m = ser.serialize_map(Some(3))?;
                        m.serialize_entry("duration_s", &self.0.duration_s)?;
                        m.serialize_entry("outcome", &self.0.outcome)?;
                        m.serialize_entry("phase", self.0.phase.as_str())?;
                        m.end()
                    }
                }
                ser.collect_seq(self.0.iter().map(One))
            }
        }
        struct Props<'a>(&'a [(String, Value)]);
        impl serde::Serialize for Props<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                // As a JSON object: sorted, the last of equal keys wins.
                let sorted: BTreeMap<&str, &Value> =
                    self.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
                ser.collect_map(sorted.into_iter().map(|(k, v)| (k, ValueJson(v))))
            }
        }
        let t = self.0;
        let mut m = ser.serialize_map(Some(12))?;
        m.serialize_entry("attempt", &t.attempt)?;
        m.serialize_entry("crashed", &t.crashed)?;
        m.serialize_entry("duration_s", &t.duration_s)?;
        m.serialize_entry("nodeid", &t.nodeid)?;
        m.serialize_entry("outcome", &t.outcome)?;
        m.serialize_entry("phases", &Phases(&t.phases))?;
        m.serialize_entry("pid", &t.pid)?;
        m.serialize_entry("properties", &Props(&t.properties))?;
        m.serialize_entry("signal", &t.signal)?;
        m.serialize_entry("signal_name", &t.signal.map(signal_name))?;
        m.serialize_entry("timeout", &t.timeout.as_ref().map(TimeoutView::to_json))?;
        m.serialize_entry("worker", &t.worker)?;
        m.end()
    }
}

/// [`Value::to_json`], written straight to a serializer.
struct ValueJson<'a>(&'a Value);

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if let Some((tag, text)) = self.0.json_tagged() {
            return ser.collect_map([(tag, text)]);
        }
        match self.0 {
            Value::None => ser.serialize_unit(),
            Value::Bool(b) => ser.serialize_bool(*b),
            Value::Int(i) => ser.serialize_i64(*i),
            Value::Float(f) => ser.serialize_f64(*f),
            Value::Str(s) | Value::BigInt(s) => ser.serialize_str(s),
            Value::Bytes(b) => ser.collect_seq(b),
            Value::List(items) => ser.collect_seq(items.iter().map(ValueJson)),
            Value::Dict(pairs) => {
                let sorted: BTreeMap<&str, &Value> =
                    pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
                ser.collect_map(sorted.into_iter().map(|(k, v)| (k, ValueJson(v))))
            }
        }
    }
}

impl FixtureStats {
    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "scope": self.scope,
            "setups": self.setups,
            "teardowns": self.teardowns,
            "total_s": self.total_s,
            "mean_s": self.mean_s,
            "max_s": self.max_s,
            "teardown_total_s": self.teardown_total_s,
        })
    }
}

impl CrashView {
    /// `timeout`, or the signal's name, for a table's column; `None` when neither.
    pub fn cause(&self) -> Option<String> {
        if self.timeout.is_some() {
            Some("timeout".into())
        } else {
            self.signal.map(signal_name)
        }
    }

    pub fn to_json(&self) -> Json {
        json!({
            "timeout": self.timeout.as_ref().map(TimeoutView::to_json),
            "nodeid": self.nodeid,
            "worker": self.worker,
            "pid": self.pid,
            "signal": self.signal,
            "signal_name": self.signal.map(signal_name),
            "exit_code": self.exit_code,
            "phase": self.phase,
            "detail": self.detail,
            "attachments": self.attachments,
            "kind": self.kind,
            "devices": devices_json(&self.devices),
        })
    }
}

impl ExitView {
    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "phase": self.phase.map(Phase::as_str),
            "code": self.code,
            "worker": self.worker,
            "pid": self.pid,
        })
    }
}

fn devices_json(devices: &[(String, String)]) -> Json {
    Json::Object(
        devices
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

impl WorkerView {
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "pids": self.pids,
            "tests": self.tests,
            "crashes": self.crashes,
            "alive": self.alive,
            "forked": self.forked,
            "devices": devices_json(&self.devices),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_set_wins_by_clock_and_appends_accumulate() {
        let mut agg = Aggregate::default();
        let ops: [(&str, u64, bool, Value); 8] = [
            ("a", 5, false, Value::Int(2)),
            ("a", 1, false, Value::Int(1)),
            ("c", 3, true, Value::Int(30)),
            ("c", 2, true, Value::Int(20)),
            // A record after appends replaces them; appends after a list extend it.
            ("m", 10, true, Value::Int(1)),
            ("m", 11, false, Value::List(vec![Value::Int(7)])),
            ("m", 12, true, Value::Int(8)),
            ("n", 20, false, Value::Str("x".into())),
        ];
        for (key, mono, append, value) in ops {
            let (test, key) = (Some("t::x".to_owned()), key.to_owned());
            let rec = if append {
                Record::PropertyAppend {
                    test,
                    key,
                    value,
                    mono_ns: mono,
                }
            } else {
                Record::PropertySet {
                    test,
                    key,
                    value,
                    mono_ns: mono,
                }
            };
            agg.apply(0, 0, &rec);
        }
        // Keys keep the order of their first write in time.
        assert_eq!(
            agg.properties("t::x"),
            vec![
                ("a".into(), Value::Int(2)),
                (
                    "c".into(),
                    Value::List(vec![Value::Int(20), Value::Int(30)])
                ),
                ("m".into(), Value::List(vec![Value::Int(7), Value::Int(8)])),
                ("n".into(), Value::Str("x".into())),
            ]
        );
    }

    #[test]
    fn a_test_of_many_keys_keeps_their_order_and_last_writes() {
        // Past FEW_PROPS the keys are looked up in a map: the same story as the scan's.
        let mut agg = Aggregate::default();
        let n = 3 * FEW_PROPS as u64;
        let set = |test: &str, key: String, value: i64, mono: u64| Record::PropertySet {
            test: Some(test.into()),
            key,
            value: Value::Int(value),
            mono_ns: mono,
        };
        for i in 0..n {
            agg.apply(0, 0, &set("t::x", format!("k{i}"), 0, 10 + i));
            // Another test's keys in between, some of the same names.
            agg.apply(0, 0, &set("t::y", format!("k{}", i % 5), 1, 10 + i));
        }
        for i in (0..n).rev() {
            agg.apply(0, 0, &set("t::x", format!("k{i}"), i as i64, 1_000 + i));
            agg.apply(
                0,
                0,
                &Record::PropertyAppend {
                    test: Some("t::x".into()),
                    key: "list".into(),
                    value: Value::Int(i as i64),
                    mono_ns: 1_000 + i,
                },
            );
        }
        let props = agg.properties("t::x");
        let mut want: Vec<(String, Value)> = (0..n)
            .map(|i| (format!("k{i}"), Value::Int(i as i64)))
            .collect();
        want.push((
            "list".into(),
            Value::List((0..n).map(|i| Value::Int(i as i64)).collect()),
        ));
        assert_eq!(props, want);
    }

    #[test]
    fn a_test_written_straight_is_its_json_value() {
        let t = TestView {
            nodeid: "t.py::x[\"é\"]".into(),
            outcome: "crashed".into(),
            duration_s: f64::NAN,
            worker: Some("gw0".into()),
            pid: None,
            crashed: true,
            signal: Some(11),
            timeout: Some(TimeoutView {
                phase: Some("call".into()),
                limit_s: 2.0,
                elapsed_s: 2.05,
                source: "blackbox_timeout".into(),
                fatal: true,
            }),
            phases: vec![PhaseView {
                phase: Phase::Call,
                outcome: "failed".into(),
                duration_s: 0.25,
                location: (0, 4096),
            }],
            properties: vec![
                ("z".into(), Value::Float(f64::INFINITY)),
                (
                    "a".into(),
                    Value::Dict(vec![
                        ("k".into(), Value::Int(1)),
                        ("b".into(), Value::Bytes(vec![0, 255])),
                        (
                            "k".into(),
                            Value::List(vec![Value::None, Value::BigInt("1".repeat(30))]),
                        ),
                    ]),
                ),
                ("m".into(), Value::Float(-0.5)),
            ],
            start_mono_ns: 0,
            end_mono_ns: None,
            last_mono_ns: 0,
            attempt: 2,
        };
        assert_eq!(serde_json::to_value(TestJson(&t)).unwrap(), t.to_json());
        assert_eq!(
            serde_json::to_string(&TestJson(&t)).unwrap(),
            serde_json::to_string(&t.to_json()).unwrap()
        );
    }

    #[test]
    fn fixture_stats_sum_and_sort() {
        let mut agg = Aggregate::default();
        for (name, d) in [("db", 0.5), ("db", 1.5), ("tmp", 0.1)] {
            agg.apply(
                0,
                0,
                &Record::Fixture {
                    name: name.into(),
                    scope: "function".into(),
                    setup: true,
                    test: None,
                    duration_s: d,
                    mono_ns: 0,
                },
            );
        }
        assert_eq!(agg.fixture_setups(), 3);
        let v = agg.view("r", &[]);
        assert_eq!(v.fixtures[0].name, "db");
        assert_eq!(v.fixtures[0].setups, 2);
        assert!((v.fixtures[0].mean_s - 1.0).abs() < 1e-12);
        assert!((v.fixtures[0].max_s - 1.5).abs() < 1e-12);
    }

    fn dead_segment(pid: u32) -> SegmentStatus {
        SegmentStatus {
            path: format!("seg-{pid}.seg").into(),
            pid,
            role: Some(Role::Worker),
            worker: Some("gw1".into()),
            ppid: Some(1),
            alive: false,
            closed_cleanly: false,
            created_wall_ns: 0,
            crash: None,
            current_test: None,
            committed: 0,
            damage: None,
        }
    }

    #[test]
    fn tests_come_in_the_order_they_started_across_segments() {
        let mut agg = Aggregate::default();
        let start = |nodeid: &str, mono_ns| Record::TestStart {
            nodeid: nodeid.into(),
            mono_ns,
        };
        // Two workers' segments, read one after the other, their tests interleaved in time;
        // a property names a test that never started (sorted by that record's time).
        agg.apply(0, 0, &start("a.py::w0_first", 10));
        agg.apply(0, 0, &start("a.py::w0_third", 30));
        agg.apply(
            0,
            0,
            &Record::PropertySet {
                test: Some("a.py::named_only".into()),
                key: "k".into(),
                value: Value::Int(1),
                mono_ns: 35,
            },
        );
        agg.apply(1, 0, &start("b.py::w1_second", 20));
        agg.apply(1, 0, &start("b.py::w1_fourth", 40));
        let v = agg.view("r", &[dead_segment(7), dead_segment(8)]);
        let order: Vec<&str> = v.tests.iter().map(|t| t.nodeid.as_str()).collect();
        assert_eq!(
            order,
            [
                "a.py::w0_first",
                "b.py::w1_second",
                "a.py::w0_third",
                "a.py::named_only",
                "b.py::w1_fourth"
            ]
        );
    }

    /// Which dead processes are crashes: only those that ran a test of their own and died
    /// in it; an exit after the running test's report is no crash; a child of a test that
    /// died of a signal is that test's child, and the test keeps its outcome.
    #[test]
    fn only_a_test_of_its_own_makes_a_crash() {
        let mut agg = Aggregate::default();
        let process = |pid, role| Record::Process {
            pid,
            ppid: 1,
            role,
            worker: Some("gw1".into()),
            wall_ns: 0,
        };
        let start = |nodeid: &str| Record::TestStart {
            nodeid: nodeid.into(),
            mono_ns: 10,
        };
        let call = |nodeid: &str, outcome: &str| Record::TestPhase {
            nodeid: nodeid.into(),
            phase: Phase::Call,
            outcome: outcome.into(),
            duration_s: 0.1,
            mono_ns: 20,
            report: None,
        };
        // 0: a worker whose reporting hook ended it after t.py::fails's failed call report.
        agg.apply(0, 0, &process(10, Role::Worker));
        agg.apply(0, 0, &start("t.py::fails"));
        agg.apply(0, 0, &call("t.py::fails", "failed"));
        agg.apply(
            0,
            0,
            &Record::IntentionalExit {
                test: Some("t.py::fails".into()),
                phase: Some(Phase::Call),
                code: 1,
                wall_ns: 0,
            },
        );
        // 1: its replacement, which ran nothing and was shut down.
        agg.apply(1, 0, &process(11, Role::Worker));
        // 2: a child of t.py::forks that ended with os._exit(0) in the test's call.
        agg.apply(2, 0, &process(12, Role::Forked));
        agg.apply(
            2,
            0,
            &Record::Exit {
                test: Some("t.py::forks".into()),
                code: 0,
                wall_ns: 0,
            },
        );
        // 3: a child of t.py::forks that died of SIGSEGV (its crash mark names the test).
        agg.apply(3, 0, &process(13, Role::Forked));
        // 4: the worker that ran t.py::forks, which passed.
        agg.apply(4, 0, &process(14, Role::Worker));
        agg.apply(4, 0, &start("t.py::forks"));
        agg.apply(4, 0, &call("t.py::forks", "passed"));
        agg.apply(
            4,
            0,
            &Record::TestEnd {
                nodeid: "t.py::forks".into(),
                mono_ns: 30,
            },
        );
        let mut segs: Vec<SegmentStatus> = (10..15).map(dead_segment).collect();
        segs[3].crash = Some(crate::segment::CrashMark {
            signal: 11,
            wall_ns: 5,
            test: Some("t.py::forks".into()),
        });
        segs[4].closed_cleanly = true;
        let v = agg.view("r", &segs);
        let kinds: Vec<_> = v
            .crashes
            .iter()
            .map(|c| (c.kind.as_str(), c.nodeid.as_deref(), c.pid))
            .collect();
        assert_eq!(kinds, vec![("child", Some("t.py::forks"), Some(13))]);
        assert_eq!(
            v.crashes[0].detail,
            "child process of t.py::forks died of SIGSEGV"
        );
        let outcomes: Vec<_> = v
            .tests
            .iter()
            .map(|t| (t.nodeid.as_str(), t.outcome.as_str(), t.crashed))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("t.py::fails", "failed", false),
                ("t.py::forks", "passed", false)
            ]
        );
        assert_eq!(
            v.exits,
            vec![ExitView {
                nodeid: Some("t.py::fails".into()),
                phase: Some(Phase::Call),
                code: 1,
                worker: Some("gw1".into()),
                pid: Some(10),
            }]
        );
        assert!(v.workers.iter().all(|w| w.crashes == 0), "{:?}", v.workers);
    }

    #[test]
    fn observer_crash_and_dead_segment_merge_into_one() {
        let mut agg = Aggregate::default();
        let process = |pid| Record::Process {
            pid,
            ppid: 1,
            role: Role::Worker,
            worker: Some("gw1".into()),
            wall_ns: 0,
        };
        // Two processes of gw1 (the second replaced the first), then the controller's word.
        agg.apply(0, 0, &process(7));
        agg.apply(
            0,
            0,
            &Record::TestStart {
                nodeid: "t.py::ok".into(),
                mono_ns: 10,
            },
        );
        agg.apply(
            0,
            0,
            &Record::TestEnd {
                nodeid: "t.py::ok".into(),
                mono_ns: 20,
            },
        );
        agg.apply(1, 0, &process(8));
        agg.apply(
            1,
            0,
            &Record::TestStart {
                nodeid: "t.py::boom".into(),
                mono_ns: 30,
            },
        );
        agg.apply(
            1,
            0,
            &Record::PropertySet {
                test: Some("t.py::boom".into()),
                key: "k".into(),
                value: Value::Int(1),
                mono_ns: 35,
            },
        );
        agg.apply(
            2,
            0,
            &Record::Crash {
                test: Some("t.py::boom".into()),
                pid: 0,
                worker: Some("gw1".into()),
                signal: 0,
                exit_code: None,
                phase: None,
                detail: "worker 'gw1' crashed while running 't.py::boom'".into(),
                wall_ns: 0,
            },
        );
        let mut closed = dead_segment(7);
        closed.closed_cleanly = true;
        let v = agg.view("r", &[closed, dead_segment(8)]);
        assert_eq!(v.crashes.len(), 1, "{:?}", v.crashes);
        assert_eq!(v.crashes[0].pid, Some(8));
        assert_eq!(v.crashes[0].phase.as_deref(), Some("setup"));
        let boom = v.tests.iter().find(|t| t.nodeid == "t.py::boom").unwrap();
        assert_eq!(
            (boom.outcome.as_str(), boom.pid, boom.worker.as_deref()),
            ("crashed", Some(8), Some("gw1"))
        );
        assert_eq!(
            (boom.start_mono_ns, boom.end_mono_ns, boom.last_mono_ns),
            (30, None, 35)
        );
        assert_eq!(v.workers.len(), 1);
        assert_eq!(
            (
                v.workers[0].pids.clone(),
                v.workers[0].tests,
                v.workers[0].crashes
            ),
            (vec![7, 8], 2, 1)
        );
    }

    /// A dead plain-mode run: the collection tells what never started; the test that was
    /// running is the crash; a second collection (not this run's) changes nothing; while
    /// the run is live nothing is `not-run` yet.
    #[test]
    fn collected_tests_that_never_started_are_not_run_once_the_run_is_over() {
        let mut agg = Aggregate::default();
        agg.apply(
            0,
            0,
            &Record::Process {
                pid: 7,
                ppid: 1,
                role: Role::Main,
                worker: None,
                wall_ns: 0,
            },
        );
        let ids = ["t.py::a", "t.py::b", "t.py::c", "t.py::d"];
        for r in crate::record::front_code(&ids) {
            agg.apply(0, 0, &r);
        }
        for r in crate::record::front_code(&["other.py::x"]) {
            agg.apply(0, 0, &r);
        }
        agg.apply(
            0,
            0,
            &Record::Resume {
                run: "r0".into(),
                attempt: 2,
                retry: false,
            },
        );
        for (n, end) in [("t.py::a", true), ("t.py::b", false)] {
            agg.apply(
                0,
                0,
                &Record::TestStart {
                    nodeid: n.into(),
                    mono_ns: 1,
                },
            );
            if end {
                agg.apply(
                    0,
                    0,
                    &Record::TestEnd {
                        nodeid: n.into(),
                        mono_ns: 2,
                    },
                );
            }
        }
        let mut seg = dead_segment(7);
        seg.role = Some(Role::Main);
        seg.worker = None;
        let v = agg.view("r1", std::slice::from_ref(&seg));
        let got: Vec<_> = v
            .tests
            .iter()
            .map(|t| {
                (
                    t.nodeid.as_str(),
                    t.outcome.as_str(),
                    t.attempt,
                    t.not_finished(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("t.py::a", "passed", 2, false),
                ("t.py::b", "crashed", 2, true),
                ("t.py::c", "not-run", 2, true),
                ("t.py::d", "not-run", 2, true),
            ]
        );
        assert_eq!(v.collected, Some(4));
        assert!(v.run.died());
        assert_eq!((v.run.resumes.as_deref(), v.run.attempt), (Some("r0"), 2));
        assert_eq!(v.workers[0].tests, 2);
        seg.alive = true;
        let live = agg.view("r1", &[seg]);
        assert!(live.tests.iter().all(|t| t.outcome != "not-run"));
        assert!(!live.run.died());
    }

    #[test]
    fn tests_by_nodeid_finds_each_test_and_nothing_else() {
        let mut v = RunView::default();
        for i in 0..1000 {
            v.tests
                .push(TestView::not_run(format!("t.py::test[{i}]"), 1));
        }
        v.tests.push(TestView::not_run("t.py::test[7]".into(), 2)); // a second of one name
        let index = v.tests_by_nodeid();
        for i in 0..1000 {
            assert_eq!(index.get(&v.tests, &format!("t.py::test[{i}]")), Some(i));
        }
        assert_eq!(index.get(&v.tests, "t.py::test[1000]"), None);
        assert_eq!(index.get(&v.tests, ""), None);
        // Asked for in order, each is found; the next one after the last is not taken
        // for a second test of its nodeid.
        assert_eq!(index.get(&v.tests, "t.py::test[999]"), Some(999));
        assert_eq!(index.get(&v.tests, "t.py::test[7]"), Some(7));
        assert_eq!(index.get(&v.tests, "t.py::test[8]"), Some(8));
        v.tests.pop();
        let unique = v.tests_by_nodeid();
        for i in (0..1000).chain(0..1000).chain([500, 501, 3, 4, 999]) {
            assert_eq!(unique.get(&v.tests, &format!("t.py::test[{i}]")), Some(i));
        }
        assert_eq!(unique.get(&v.tests, "t.py::test[1000]"), None);
        let empty = RunView::default();
        assert_eq!(empty.tests_by_nodeid().get(&empty.tests, "t.py::a"), None);
    }
}
