//! The per-process writer: one segment per process per run, created on the first write,
//! and a new one in a forked child.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::{monotonic_ns, wall_ns};
use crate::error::{Error, Result};
use crate::record::{Phase, Record, Role};
use crate::segment::{process_id, Durability, EncodeRecord, SegmentWriter};
use crate::watchdog::{self, Source};

/// Numbers recorders, so the watchdog knows which one armed it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// pytest-timeout's timer of a test (times in ns).
#[derive(Debug)]
struct External {
    nodeid: String,
    armed_ns: u64,
    limit_ns: u64,
    cancelled_ns: Option<u64>,
    /// The process whose pytest-timeout armed it: another one than a forked child's.
    pid: u32,
}

/// Time limits of the tests a recorder starts (see [`crate::watchdog`]).
#[derive(Debug, Default)]
struct Limits {
    /// Every test's limit (`--blackbox-timeout`), in ns; 0: none.
    default_ns: u64,
    /// Limits of single tests (the `blackbox_timeout` marker), in ns; 0: none.
    per_test: HashMap<String, u64>,
    /// The test running, when armed: (start, limit) in ns.
    armed: Option<(u64, u64)>,
    /// pytest-timeout's timer for the running test.
    external: Option<External>,
}

/// Records into one run from one process.
///
/// No file exists until the first write. After `fork()`, the child's first write opens a
/// segment of its own (role [`Role::Forked`], same worker id); the inherited one is never
/// touched again. Detecting the fork costs one relaxed atomic load per write.
///
/// Not `Sync`: guard it with a lock when threads share it (the Python binding does). A
/// process that forks while another thread holds that lock must not use it in the child.
#[derive(Debug)]
pub struct Recorder {
    run_dir: PathBuf,
    role: Role,
    worker: Option<String>,
    durability: Durability,
    writer: Option<SegmentWriter>,
    in_transaction: bool,
    current_test: Option<String>,
    /// The last phase of `current_test` whose report was recorded ([`Recorder::phase_done`]).
    last_phase: Option<Phase>,
    /// Whether this segment has its [`Record::ProcessInfo`] (written at its first test).
    info_written: bool,
    id: u64,
    limits: Limits,
}

impl Recorder {
    /// A recorder for the run folder `run_dir` (which must exist).
    pub fn new(
        run_dir: impl Into<PathBuf>,
        role: Role,
        worker: Option<String>,
        durability: Durability,
    ) -> Recorder {
        Recorder {
            run_dir: run_dir.into(),
            role,
            worker,
            durability,
            writer: None,
            in_transaction: false,
            current_test: None,
            last_phase: None,
            info_written: false,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limits: Limits::default(),
        }
    }

    /// This recorder behind a lock, known to the watchdog, which can then record a
    /// timeout into it from its own thread. Only a shared recorder arms the watchdog.
    pub fn into_shared(self) -> Arc<Mutex<Recorder>> {
        let id = self.id;
        let shared = Arc::new(Mutex::new(self));
        watchdog::register(id, &shared);
        shared
    }

    /// Sets the time limit of every test this recorder starts from now on (`None`: no
    /// limit), and of single tests by nodeid (a limit of zero: none for that test).
    pub fn set_timeouts(&mut self, default_s: Option<f64>, per_test: HashMap<String, f64>) {
        let ns = |s: f64| {
            if s.is_finite() && s > 0.0 {
                (s * 1e9) as u64
            } else {
                0
            }
        };
        self.limits.default_ns = default_s.map_or(0, ns);
        self.limits.per_test = per_test.into_iter().map(|(k, v)| (k, ns(v))).collect();
    }

    /// pytest-timeout armed (`Some(limit_s)`) or cancelled (`None`) its timer for `nodeid`
    /// (its `pytest_timeout_set_timer` / `cancel_timer` hooks): if pytest-timeout ends the
    /// test, it is recorded as a timeout with that limit. A cancelled timer still tells
    /// until the test ends: with `func_only` it is cancelled before the call's report.
    pub fn external_timer(&mut self, nodeid: &str, limit_s: Option<f64>) {
        let now = monotonic_ns();
        match limit_s {
            Some(s) if s.is_finite() && s > 0.0 => {
                self.limits.external = Some(External {
                    nodeid: nodeid.to_owned(),
                    armed_ns: now,
                    limit_ns: (s * 1e9) as u64,
                    cancelled_ns: None,
                    pid: process_id(),
                });
            }
            _ => {
                if let Some(e) = self.limits.external.as_mut().filter(|e| e.nodeid == nodeid) {
                    e.cancelled_ns.get_or_insert(now);
                }
            }
        }
    }

    /// The limit of the running test, when the watchdog is armed for it: (start, limit).
    pub fn armed_limit(&self) -> Option<(u64, u64)> {
        self.limits.armed
    }

    /// Fills `rec` (a [`Record::Timeout`]) with the running test and records it; the
    /// process is about to end.
    pub(crate) fn record_timeout(&mut self, rec: &mut Record) {
        if let Record::Timeout { test, .. } = rec {
            test.clone_from(&self.current_test);
        }
        watchdog::note_fired_test(self.current_test.as_deref());
        self.in_transaction = false;
        if let Some(w) = self.writer.as_mut() {
            w.rollback();
        }
        let _ = self.record(rec);
    }

    /// pytest-timeout's limit for the running test, when it has run out: the timeout
    /// record that tells so.
    fn external_timeout(&self, phase: Option<Phase>, fatal: bool) -> Option<Record> {
        let e = self.limits.external.as_ref()?;
        let until = e.cancelled_ns.unwrap_or_else(monotonic_ns);
        let elapsed = until.saturating_sub(e.armed_ns);
        // pytest-timeout's timers fire at their limit; 1 ms of slack for the clocks.
        let ran_out = elapsed + 1_000_000 >= e.limit_ns;
        (self.current_test.as_deref() == Some(e.nodeid.as_str()) && ran_out).then(|| {
            Record::Timeout {
                test: Some(e.nodeid.clone()),
                phase: phase.map(|p| p.as_str().to_owned()),
                limit_s: e.limit_ns as f64 / 1e9,
                elapsed_s: elapsed as f64 / 1e9,
                source: watchdog::SOURCE_PYTEST_TIMEOUT.to_owned(),
                fatal,
                wall_ns: wall_ns(),
            }
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }

    /// The segment this process writes, once it has written.
    pub fn segment_path(&self) -> Option<&Path> {
        self.writer
            .as_ref()
            .filter(|w| !w.is_inherited())
            .map(SegmentWriter::path)
    }

    /// The test this process runs, as last set.
    pub fn current_test(&self) -> Option<&str> {
        self.current_test.as_deref()
    }

    fn writer(&mut self) -> Result<&mut SegmentWriter> {
        let inherited = self
            .writer
            .as_ref()
            .is_some_and(SegmentWriter::is_inherited);
        if inherited && self.in_transaction {
            // Forked inside a transaction: its first records are in the parent's segment,
            // out of reach, so the rest must not be committed as if they were the whole.
            // `commit` or `rollback` ends it; the next write opens the child's segment.
            return Err(Error::Inherited {
                path: self
                    .writer
                    .as_ref()
                    .map_or_else(|| self.run_dir.clone(), |w| w.path().to_owned()),
            });
        }
        if inherited {
            // Forked: leave the parent's segment alone (dropping unmaps only our copy).
            self.writer = None;
            self.in_transaction = false;
            self.role = Role::Forked;
            self.info_written = false;
        }
        if self.writer.is_none() {
            // One lstat per process: a run folder swapped for a link or another user's
            // folder since the run began is not written into.
            crate::private::check_dir(&self.run_dir, "run folder", false)?;
            let mut w = SegmentWriter::create(&self.run_dir, self.durability)?;
            // SAFETY of getppid: always succeeds.
            let ppid = unsafe { libc::getppid() } as u32;
            w.append(&Record::Process {
                pid: std::process::id(),
                ppid,
                role: self.role,
                worker: self.worker.clone(),
                wall_ns: wall_ns(),
            })?;
            w.commit()?;
            w.set_current_test(self.current_test.as_deref());
            self.writer = Some(w);
        }
        Ok(self.writer.as_mut().expect("writer was just opened"))
    }

    /// Appends and, outside a transaction, commits one record.
    ///
    /// A phase report moves the watchdog's phase on; when pytest-timeout's timer of the
    /// running test has run out, a failed call (its `signal` method) or an `os._exit`
    /// (its `thread` method) is preceded by the timeout record that says so.
    pub fn record(&mut self, record: &Record) -> Result<()> {
        match record {
            Record::TestPhase { phase, outcome, .. } if outcome == "failed" => {
                if let Some(t) = self.external_timeout(Some(*phase), false) {
                    self.limits.external = None;
                    self.record_encoded(record)?;
                    return self.record_encoded(&t);
                }
            }
            Record::IntentionalExit { .. } => crate::segment::note_dying(),
            Record::Exit { .. } => {
                crate::segment::note_dying();
                if let Some(t) = self.external_timeout(self.running_phase(), true) {
                    self.record_encoded(&t)?;
                }
            }
            _ => {}
        }
        self.record_encoded(record)
    }

    /// Disarms the watchdog if this recorder armed it. When it fires for the running test
    /// already (the test ends at the last instant), records the timeout unless the watchdog
    /// did, and waits for the watchdog to end the process: one report, as a timeout.
    fn disarm(&mut self) {
        if self.limits.armed.take().is_some() && !watchdog::disarm(self.id) {
            if let Some(mut rec) = watchdog::fired_record() {
                self.record_timeout(&mut rec);
            }
            watchdog::wait_for_the_end();
        }
    }

    /// The phase of the running test that runs now (after the reports recorded so far).
    fn running_phase(&self) -> Option<Phase> {
        self.current_test.as_ref()?;
        Some(match self.last_phase {
            None => Phase::Setup,
            Some(Phase::Setup) => Phase::Call,
            Some(Phase::Call | Phase::Teardown) => Phase::Teardown,
        })
    }

    /// [`record`](Self::record) for anything that encodes as a record
    /// ([`EncodeRecord`]): a binding's record borrowed from its caller's objects.
    pub fn record_encoded<E: EncodeRecord + ?Sized>(&mut self, record: &E) -> Result<()> {
        let in_txn = self.in_transaction;
        let w = self.writer()?;
        w.append_encoded(record)?;
        if !in_txn {
            w.commit()?;
        }
        Ok(())
    }

    /// Records the session's collection ([`Record::Collected`]): front-coded, in as many
    /// records as it takes, all visible at once (inside the caller's transaction, or one of
    /// its own).
    pub fn collected<S: AsRef<str>>(&mut self, nodeids: &[S]) -> Result<()> {
        let own = !self.in_transaction;
        if own {
            self.begin()?;
        }
        for rec in crate::record::front_code(nodeids) {
            if let Err(e) = self.record_encoded(&rec) {
                if own {
                    self.rollback();
                }
                return Err(e);
            }
        }
        if own {
            self.commit()?;
        }
        Ok(())
    }

    /// Starts a transaction: the records until [`commit`](Self::commit) become visible
    /// together, or not at all if the process dies first.
    pub fn begin(&mut self) -> Result<()> {
        if self.in_transaction {
            return Err(Error::TransactionOpen);
        }
        // Open the segment now, so a fork inside the transaction is noticed at commit.
        let w = self.writer()?;
        if w.pending() != 0 {
            w.commit()?;
        }
        self.in_transaction = true;
        Ok(())
    }

    /// Ends the transaction, publishing its records at once.
    pub fn commit(&mut self) -> Result<()> {
        let was = std::mem::replace(&mut self.in_transaction, false);
        if let Some(w) = self.writer.as_mut() {
            if w.is_inherited() {
                self.writer = None;
                return if was {
                    Err(Error::Inherited {
                        path: self.run_dir.clone(),
                    })
                } else {
                    Ok(())
                };
            }
            w.commit()?;
        }
        Ok(())
    }

    /// Ends the transaction, dropping its records.
    pub fn rollback(&mut self) {
        self.in_transaction = false;
        if let Some(w) = self.writer.as_mut() {
            w.rollback();
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Sets the running test (kept in the segment header for the crash handler and for
    /// readers) and, when `Some`, records a [`Record::TestStart`].
    ///
    /// The first test of a segment also records the process's [`Record::ProcessInfo`]
    /// (its accelerator variables as a conftest left them, its memory cgroup).
    pub fn start_test(&mut self, nodeid: &str) -> Result<()> {
        self.current_test = Some(nodeid.to_owned());
        self.last_phase = None;
        let rec = Record::TestStart {
            nodeid: nodeid.to_owned(),
            mono_ns: monotonic_ns(),
        };
        self.record(&rec)?;
        if !self.info_written {
            self.info_written = true;
            let cgroup = crate::process::memory_cgroup();
            let info = Record::ProcessInfo {
                env: crate::process::device_env(),
                oom_kills: cgroup.as_deref().and_then(crate::process::oom_kills),
                memory_cgroup: cgroup.map(|p| p.to_string_lossy().into_owned()),
                mono_ns: monotonic_ns(),
                wall_ns: wall_ns(),
            };
            self.record(&info)?;
        }
        if let Some(w) = self.writer.as_mut() {
            w.set_current_test(Some(nodeid));
        }
        let limit = match self.limits.per_test.get(nodeid) {
            Some(&ns) => ns,
            None => self.limits.default_ns,
        };
        self.disarm();
        if let Record::TestStart { mono_ns, .. } = rec {
            // pytest-timeout's timer of this test runs in the process that forked this one
            // (pytest-forked's parent, its protocol-wide limit): when it fires there, the
            // parent dies and this test would run on, orphaned, and pass. The watchdog ends
            // it just after that deadline, as that limit's timeout.
            let external = self
                .limits
                .external
                .as_ref()
                .filter(|e| e.nodeid == nodeid && e.cancelled_ns.is_none())
                .filter(|e| e.pid != process_id())
                .map(|e| (e.armed_ns, e.limit_ns));
            let own = (limit > 0).then_some((mono_ns, limit));
            let grace = watchdog::FORKED_GRACE.as_nanos() as u64;
            let (arm, source) = match (own, external) {
                (Some(o), Some(x)) if x.0 + x.1 + grace < o.0 + o.1 => {
                    (Some(x), Source::PytestTimeout)
                }
                (Some(o), _) => (Some(o), Source::Blackbox),
                (None, x) => (x, Source::PytestTimeout),
            };
            if let Some((start, limit)) = arm {
                watchdog::arm(self.id, start, limit, source).map_err(|e| Error::Io {
                    path: self.run_dir.clone(),
                    action: "start the watchdog thread for",
                    source: e,
                })?;
                self.limits.armed = Some((start, limit));
            }
        }
        Ok(())
    }

    /// Notes that the report of `phase` of the running test was recorded: an exit from now
    /// until the next phase starts comes after that report ([`Recorder::exit`]).
    pub fn phase_done(&mut self, phase: Phase) {
        self.last_phase = Some(phase);
        if self.limits.armed.is_some() {
            watchdog::phase_done(self.id, phase);
        }
    }

    /// Records how this process ends itself with status `code` (`os._exit`): a
    /// [`Record::Exit`] when a test is in the middle of a phase (the test dies with the
    /// process), else a [`Record::IntentionalExit`]: between tests, or, when
    /// `after_report`, from a hook that runs after the last recorded phase's report was
    /// made (its reports are whole).
    pub fn exit(&mut self, code: i32, after_report: bool) -> Result<()> {
        let wall_ns = wall_ns();
        let rec = match self.current_test.clone() {
            Some(test) if !after_report => Record::Exit {
                test: Some(test),
                code,
                wall_ns,
            },
            test => Record::IntentionalExit {
                phase: test.as_ref().and(self.last_phase),
                test,
                code,
                wall_ns,
            },
        };
        self.record(&rec)
    }

    /// Records a [`Record::TestEnd`] and clears the running test.
    pub fn end_test(&mut self, nodeid: &str) -> Result<()> {
        self.disarm();
        self.limits.external = None;
        let rec = Record::TestEnd {
            nodeid: nodeid.to_owned(),
            mono_ns: monotonic_ns(),
        };
        self.record(&rec)?;
        self.current_test = None;
        self.last_phase = None;
        if let Some(w) = self.writer.as_mut() {
            w.set_current_test(None);
        }
        Ok(())
    }

    /// Commits and marks the segment closed cleanly (a reader then knows this process
    /// ended on purpose). The lock is held until the recorder is dropped.
    pub fn close(&mut self) -> Result<()> {
        self.disarm();
        self.in_transaction = false;
        match self.writer.as_mut() {
            Some(w) if !w.is_inherited() => w.close(),
            _ => Ok(()),
        }
    }
}

impl watchdog::TimeoutSink for Recorder {
    fn record_timeout(&mut self, rec: &mut Record) {
        Recorder::record_timeout(self, rec);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.disarm();
    }
}
