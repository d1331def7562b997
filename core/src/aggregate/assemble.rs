//! [`Aggregate::view`]: the fold's accumulators and the segments' state now made into a
//! [`RunView`]: which dead process is a crash and of which test, each test's outcome and
//! time, the tests collected and never run, the workers and what they ran.

use std::collections::{BTreeMap, HashMap};

use super::acc::{merge_props, phases, SegAcc, TimeAcc};
use super::fold::Aggregate;
use super::view::{
    signal_name, CrashView, ExitView, FixtureStats, PhaseView, RunView, TestView, TimeoutView,
    WorkerView,
};
use crate::record::{Phase, Role};
use crate::segment::SegmentStatus;

impl Aggregate {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, Value};

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
}
