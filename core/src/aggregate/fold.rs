//! The fold: an [`Aggregate`] takes a run's records, of every segment, one at a time into
//! its accumulators (`acc.rs`); `assemble.rs` makes the view of them.

use std::borrow::Cow;
use std::collections::HashMap;

use super::acc::{
    add_time, merge_props, phases, Few, PhaseAcc, PropAcc, PropIn, SegAcc, TestAcc, TimeAcc,
};
use super::index::TestIndex;
use super::view::{crash_kind, CrashView, RunMeta, TimeoutView};
use crate::record::{Phase, Record, RecordRef, Value};

/// Incremental fold of a run's records.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub(super) run: RunMeta,
    /// In the order they were first seen.
    pub(super) tests: Vec<TestAcc>,
    pub(super) test_index: TestIndex,
    /// Property keys, each once.
    pub(super) keys: Vec<Box<str>>,
    key_index: HashMap<Box<str>, u32>,
    /// (name, scope, times)
    pub(super) fixtures: Vec<(String, String, TimeAcc)>,
    /// name -> scope -> index into `fixtures`
    fixture_index: HashMap<String, HashMap<String, u32>>,
    pub(super) timed: HashMap<String, TimeAcc>,
    pub(super) segs: Vec<SegAcc>,
    /// Crash records written by observers (parents, the controller).
    pub(super) crashes: Vec<CrashView>,
    /// (test, kind, path, segment): a process's own files (test `None`) belong to every
    /// crash of that process.
    pub(super) attachments: Vec<(Option<String>, String, String, usize)>,
    pub(super) exits: Vec<(Option<String>, i32, usize)>,
    /// (test, timeout, segment, when: Unix ns)
    pub(super) timeouts: Vec<(Option<String>, TimeoutView, usize, u64)>,
    pub(super) records: u64,
    /// The collection ([`Record::Collected`]) as far as its records came, and its size.
    pub(super) collected: Vec<String>,
    pub(super) collected_total: Option<u32>,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::acc::FEW_PROPS;

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
}
