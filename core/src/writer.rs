//! The per-process writer: one segment per process per run, created on the first write,
//! and a new one in a forked child.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{Phase, Record, Role};
use crate::segment::{monotonic_ns, wall_ns, Durability, EncodeRecord, SegmentWriter};

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
        }
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
    pub fn record(&mut self, record: &Record) -> Result<()> {
        self.record_encoded(record)
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
        Ok(())
    }

    /// Notes that the report of `phase` of the running test was recorded: an exit from now
    /// until the next phase starts comes after that report ([`Recorder::exit`]).
    pub fn phase_done(&mut self, phase: Phase) {
        self.last_phase = Some(phase);
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
        self.in_transaction = false;
        match self.writer.as_mut() {
            Some(w) if !w.is_inherited() => w.close(),
            _ => Ok(()),
        }
    }
}

/// The monotonic clock records use (`CLOCK_MONOTONIC`, comparable across processes).
pub fn now_mono_ns() -> u64 {
    monotonic_ns()
}

/// The wall clock records use (Unix ns).
pub fn now_wall_ns() -> u64 {
    wall_ns()
}
