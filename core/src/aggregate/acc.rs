//! What the fold keeps while records come in: of each test ([`TestAcc`]: its phases and
//! properties), of each segment ([`SegAcc`]), of each fixture's times ([`TimeAcc`]).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::record::{Phase, Role, Value};
use crate::segment::decode_value;

#[derive(Debug, Clone)]
pub(super) struct PhaseAcc {
    pub(super) mono: u64,
    pub(super) outcome: Cow<'static, str>,
    pub(super) duration_s: f64,
    pub(super) seg: usize,
    pub(super) offset: u64,
}

/// A few items, the first kept inline: most tests start and end in one process, so this
/// costs no allocation for them.
#[derive(Debug, Clone)]
pub(super) struct Few<T> {
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
    pub(super) fn push(&mut self, v: T) {
        if self.first.is_none() {
            self.first = Some(v);
        } else {
            self.rest.push(v);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn last(&self) -> Option<T> {
        self.rest.last().copied().or(self.first)
    }

    pub(super) fn contains(&self, v: T) -> bool {
        self.iter().any(|x| x == v)
    }
}

#[derive(Debug)]
pub(super) struct TestAcc {
    pub(super) nodeid: Box<str>,
    /// The next test whose nodeid has the same hash (see [`TestIndex`](super::index::TestIndex)).
    pub(super) same_hash: Option<u32>,
    pub(super) first_mono: u64,
    pub(super) last_mono: u64,
    pub(super) end_mono: Option<u64>,
    /// Segments in which the test started, with the monotonic time.
    pub(super) started_in: Few<(usize, u64)>,
    /// Segments in which the test ended.
    pub(super) ended_in: Few<usize>,
    /// By phase (setup, call, teardown).
    pub(super) phases: [Option<PhaseAcc>; 3],
    /// One entry per key, in the order keys were first seen.
    pub(super) props: Vec<PropAcc>,
    /// Key (index into [`Aggregate::keys`](super::Aggregate::keys)) to its entry in
    /// `props`, once the test has more than [`FEW_PROPS`] keys (see
    /// [`TestAcc::prop_slot`]).
    pub(super) prop_slots: HashMap<u32, u32>,
}

/// Up to this many keys a test's entries are scanned; past it they are looked up in a map,
/// so that a record costs the same whatever the number of keys the test has.
pub(super) const FEW_PROPS: usize = 16;

impl TestAcc {
    /// Where in `props` key `k` is, if the test has it.
    pub(super) fn prop_slot(&mut self, k: u32) -> Option<usize> {
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
pub(super) enum Stored {
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
pub(super) enum PropIn<'a> {
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
pub(super) struct PropAcc {
    /// Index into [`Aggregate::keys`](super::Aggregate::keys).
    pub(super) key: u32,
    pub(super) first_mono: u64,
    pub(super) set: Option<(u64, Stored)>,
    pub(super) appends: Vec<(u64, Stored)>,
}

impl PropAcc {
    pub(super) fn add(&mut self, mono: u64, append: bool, value: PropIn<'_>) {
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
pub(super) struct TimeAcc {
    pub(super) setups: u64,
    pub(super) teardowns: u64,
    pub(super) total: f64,
    pub(super) max: f64,
    pub(super) teardown_total: f64,
}

#[derive(Debug, Default)]
pub(super) struct SegAcc {
    pub(super) role: Option<Role>,
    pub(super) worker: Option<String>,
    pub(super) pid: Option<u32>,
    /// The test started and not ended in this segment, if any (index into `tests`).
    pub(super) open_test: Option<u32>,
    /// The last phase reported for `open_test` in this segment.
    pub(super) open_phase: Option<Phase>,
    pub(super) tests: u64,
    /// The test this segment's last record named: a segment writes a test's records
    /// together, so the next one most likely names it again (one comparison, no hash).
    pub(super) last_test: Option<u32>,
    /// Likewise the last fixture (index into `fixtures`).
    pub(super) last_fixture: Option<u32>,
    /// Likewise the last property key (index into
    /// [`Aggregate::keys`](super::Aggregate::keys)): a suite records the same few keys test
    /// after test.
    pub(super) last_key: Option<u32>,
    /// The last [`Record::IntentionalExit`](crate::Record::IntentionalExit): (test, phase, code).
    pub(super) intentional_exit: Option<(Option<String>, Option<Phase>, i32)>,
    /// From [`Record::ProcessInfo`](crate::Record::ProcessInfo): the accelerator
    /// variables, the memory cgroup and its OOM kill count when the first test started.
    pub(super) devices: Vec<(String, String)>,
    pub(super) memory_cgroup: Option<(String, Option<u64>)>,
    /// (monotonic, wall) clocks read together at its first test.
    pub(super) clocks: Option<(u64, u64)>,
}

pub(super) fn add_time(acc: &mut TimeAcc, setup: bool, d: f64) {
    if setup {
        acc.setups += 1;
        acc.total += d;
        acc.max = acc.max.max(d);
    } else {
        acc.teardowns += 1;
        acc.teardown_total += d;
    }
}

pub(super) fn merge_props(props: &[PropAcc], keys: &[Box<str>]) -> Vec<(String, Value)> {
    let mut sorted: Vec<&PropAcc> = props.iter().collect();
    sorted.sort_by_key(|p| p.first_mono);
    sorted
        .into_iter()
        .map(|p| (keys[p.key as usize].to_string(), p.merged()))
        .collect()
}

/// The phases a test reported, in phase order.
pub(super) fn phases(t: &TestAcc) -> impl Iterator<Item = (Phase, &PhaseAcc)> {
    [Phase::Setup, Phase::Call, Phase::Teardown]
        .into_iter()
        .zip(&t.phases)
        .filter_map(|(p, a)| a.as_ref().map(|a| (p, a)))
}
