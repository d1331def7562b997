//! Tests by nodeid, each nodeid hashed once: the fold's [`TestIndex`], a view's
//! [`TestsByNodeid`], and the [`Prehashed`] hasher both use.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::acc::TestAcc;
use super::view::{RunView, TestView};

/// Tests by nodeid: the nodeid's hash (keyed per process, so a hostile store cannot aim
/// for collisions) to the newest test with that hash, the others chained through
/// [`TestAcc::same_hash`]. Each nodeid is hashed once per lookup and never again (growing
/// the table rehashes the stored hashes, not the text), and kept once.
#[derive(Debug, Default)]
pub(super) struct TestIndex {
    keys: std::collections::hash_map::RandomState,
    pub(super) heads: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
}

/// The hasher of a key that is already a hash.
#[derive(Debug, Default)]
pub(super) struct Prehashed(u64);

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
    pub(super) fn hash(&self, nodeid: &[u8]) -> u64 {
        self.keys.hash_one(nodeid)
    }

    pub(super) fn find(&self, tests: &[TestAcc], hash: u64, nodeid: &[u8]) -> Option<u32> {
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

    pub(super) fn get(&self, tests: &[TestAcc], nodeid: &str) -> Option<usize> {
        let b = nodeid.as_bytes();
        self.find(tests, self.hash(b), b).map(|i| i as usize)
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
