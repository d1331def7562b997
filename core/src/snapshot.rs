//! A run read at one moment: every committed record of every segment ([`Snapshot`]), read
//! by one poll of a [`Follower`].

use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, RunView};
use crate::error::{Damage, Error};
use crate::follower::Follower;
use crate::record::Record;
use crate::segment::SegmentStatus;

/// Every committed record of a run at one moment, by segment.
#[derive(Debug)]
pub struct Snapshot {
    pub id: String,
    pub dir: PathBuf,
    pub segments: Vec<SegmentStatus>,
    /// `records[i]` are the records of `segments[i]`, in commit order.
    pub records: Vec<Vec<Record>>,
    /// `offsets[i][k]` is the file offset of the frame of `records[i][k]`.
    offsets: Vec<Vec<u64>>,
}

impl Snapshot {
    /// Reads run `id` in folder `dir`.
    pub fn read(id: &str, dir: &Path) -> crate::Result<Snapshot> {
        if !dir.is_dir() {
            return Err(Error::NoSuchRun {
                id: id.to_owned(),
                store: dir.parent().unwrap_or(dir).to_owned(),
            });
        }
        let mut f = Follower::new(id, dir);
        let batch = f.poll();
        let mut records: Vec<Vec<Record>> = (0..f.segment_count()).map(|_| Vec::new()).collect();
        let mut offsets: Vec<Vec<u64>> = (0..f.segment_count()).map(|_| Vec::new()).collect();
        for (seg, recs) in batch {
            (offsets[seg], records[seg]) = recs.into_iter().unzip();
        }
        Ok(Snapshot {
            id: id.to_owned(),
            dir: dir.to_owned(),
            segments: f.statuses(),
            records,
            offsets,
        })
    }

    /// Every record, with the index of its segment.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Record)> {
        self.records
            .iter()
            .enumerate()
            .flat_map(|(i, rs)| rs.iter().map(move |r| (i, r)))
    }

    /// The records of one test, from every process, segment by segment.
    pub fn records_of<'a>(
        &'a self,
        nodeid: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Record)> + 'a {
        self.iter().filter(move |(_, r)| r.test() == Some(nodeid))
    }

    pub fn record_count(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }

    /// Every damaged or unreadable segment.
    pub fn damage(&self) -> impl Iterator<Item = &Damage> {
        self.segments.iter().filter_map(|s| s.damage.as_ref())
    }

    /// The file offset of the frame of `records[seg][k]`.
    pub fn offset(&self, seg: usize, k: usize) -> Option<u64> {
        self.offsets.get(seg)?.get(k).copied()
    }

    /// The record whose frame starts at `offset` in segment `seg`: what a
    /// [`PhaseView::location`](crate::aggregate::PhaseView::location) of [`view`](Self::view)
    /// points to. (The file is `segments[seg].path`, for [`crate::SegmentReader::read_one`].)
    pub fn read_at(&self, seg: usize, offset: u64) -> Option<&Record> {
        let k = self.offsets.get(seg)?.binary_search(&offset).ok()?;
        self.records[seg].get(k)
    }

    /// The aggregate view (tests, fixtures, crashes, workers). Phase locations are
    /// (segment index, frame offset), for [`read_at`](Self::read_at).
    pub fn view(&self) -> RunView {
        let mut agg = Aggregate::default();
        for (seg, recs) in self.records.iter().enumerate() {
            for (k, rec) in recs.iter().enumerate() {
                agg.apply(seg, self.offsets[seg][k], rec);
            }
        }
        agg.view(&self.id, &self.segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Phase, Role, Value};
    use crate::segment::{Durability, SegmentReader, SegmentWriter, HEADER_SIZE};

    #[test]
    fn the_follower_and_the_snapshot_fold_the_same_view_with_usable_locations() {
        let dir = tmp("same");
        write_run(&dir);
        let snap = Snapshot::read("r", &dir).unwrap();
        let from_snapshot = snap.view();
        let mut f = Follower::new("r", &dir);
        let mut agg = Aggregate::default();
        let from_follower = f.view(&mut agg);
        assert_eq!(from_follower.to_json(), from_snapshot.to_json());
        assert_eq!(from_follower.tests, from_snapshot.tests);
        assert!(from_follower.tests.iter().any(|t| !t.properties.is_empty()));
        // Every phase location names the frame of that very phase report, in the snapshot,
        // in the follower (whose segments are closed by now) and in the file.
        let mut seen = 0;
        for t in &from_snapshot.tests {
            for p in &t.phases {
                let (seg, offset) = p.location;
                assert!(offset >= HEADER_SIZE, "{t:?}");
                let from_file = SegmentReader::open(&snap.segments[seg].path)
                    .unwrap()
                    .read_one(offset);
                for got in [
                    snap.read_at(seg, offset).cloned(),
                    f.read_at(seg, offset),
                    from_file,
                ] {
                    match got {
                        Some(Record::TestPhase {
                            nodeid,
                            phase,
                            report: Some(_),
                            ..
                        }) => {
                            assert_eq!((nodeid.as_str(), phase), (t.nodeid.as_str(), p.phase));
                        }
                        other => panic!("{t:?} {p:?}: {other:?}"),
                    }
                }
                assert_eq!(agg.phase_locations(&t.nodeid).len(), t.phases.len());
                seen += 1;
            }
        }
        assert!(seen > 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "bbx-snap-{name}-{}-{}",
            std::process::id(),
            crate::now_mono_ns()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Three finished segments of every kind of record, the third left mid-test.
    fn write_run(dir: &Path) {
        for w in 0..3u32 {
            let mut s = SegmentWriter::create(dir, Durability::Process).unwrap();
            let mut put = |r: Record| {
                s.append(&r).unwrap();
                s.commit().unwrap();
            };
            put(Record::Process {
                pid: 100 + w,
                ppid: 1,
                role: Role::Worker,
                worker: Some(format!("gw{w}")),
                wall_ns: 5,
            });
            if w == 0 {
                put(Record::RunStart {
                    argv: vec!["pytest".into()],
                    rootdir: "/r".into(),
                    host: "h".into(),
                    pid: 1,
                    wall_ns: 1,
                });
            }
            for t in 0..20u64 {
                let nodeid = format!("t.py::test_{}", t % 7);
                let mono = u64::from(w) * 1000 + t * 10;
                put(Record::TestStart {
                    nodeid: nodeid.clone(),
                    mono_ns: mono,
                });
                put(Record::Fixture {
                    name: ["db", "tmp"][(t % 2) as usize].into(),
                    scope: "function".into(),
                    setup: true,
                    test: Some(nodeid.clone()),
                    duration_s: 0.5,
                    mono_ns: mono,
                });
                for (k, phase) in [Phase::Setup, Phase::Call, Phase::Teardown]
                    .into_iter()
                    .enumerate()
                {
                    if w == 2 && t == 19 && k == 2 {
                        return; // dies in the call phase
                    }
                    put(Record::TestPhase {
                        nodeid: nodeid.clone(),
                        phase,
                        outcome: if t % 5 == 0 && k == 1 {
                            "failed"
                        } else {
                            "passed"
                        }
                        .into(),
                        duration_s: 0.1 * k as f64,
                        mono_ns: mono + k as u64,
                        report: Some(Value::Dict(vec![(
                            "when".into(),
                            Value::Str(phase.as_str().into()),
                        )])),
                    });
                    let prop = if k == 1 {
                        Record::PropertyAppend {
                            test: Some(nodeid.clone()),
                            key: "cmp".into(),
                            value: Value::Int((t * 3 + u64::from(w)) as i64),
                            mono_ns: mono + 5,
                        }
                    } else {
                        Record::PropertySet {
                            test: (t % 3 != 0).then(|| nodeid.clone()),
                            key: format!("k{k}"),
                            value: Value::List(vec![Value::Float(0.5), Value::Str(nodeid.clone())]),
                            mono_ns: mono + 6,
                        }
                    };
                    put(prop);
                }
                put(Record::Timed {
                    name: "load".into(),
                    test: None,
                    duration_s: 0.25,
                    mono_ns: mono,
                });
                put(Record::TestEnd {
                    nodeid,
                    mono_ns: mono + 9,
                });
            }
            if w == 1 {
                put(Record::Crash {
                    test: Some("t.py::test_3".into()),
                    pid: 77,
                    worker: None,
                    signal: 11,
                    exit_code: None,
                    phase: Some("call".into()),
                    detail: "forked child died".into(),
                    wall_ns: 9,
                });
                put(Record::Attachment {
                    test: None,
                    kind: "faulthandler".into(),
                    path: "/x".into(),
                });
                put(Record::RunEnd {
                    exit_status: 1,
                    wall_ns: 10,
                });
            }
        }
    }

    #[test]
    fn finished_segments_are_closed_and_keep_their_state() {
        let dir = tmp("retire");
        write_run(&dir);
        // A live writer keeps its file open.
        let mut live = SegmentWriter::create(&dir, Durability::Process).unwrap();
        live.append(&Record::TestStart {
            nodeid: "t.py::live".into(),
            mono_ns: 1,
        })
        .unwrap();
        live.commit().unwrap();
        live.set_current_test(Some("t.py::live"));
        let mut f = Follower::new("r", &dir);
        let mut agg = Aggregate::default();
        let view = f.view(&mut agg);
        assert_eq!(f.open_segments(), 1);
        assert_eq!(view.segments, 4);
        let statuses = f.statuses();
        let live_st = statuses.iter().find(|s| s.path == live.path()).unwrap();
        assert!(live_st.alive && live_st.current_test.as_deref() == Some("t.py::live"));
        for s in statuses.iter().filter(|s| s.path != live.path()) {
            assert!(!s.alive && s.pid != 0 && s.committed > HEADER_SIZE && s.created_wall_ns > 0);
            assert_eq!(
                s.committed,
                std::fs::metadata(&s.path).map(|_| s.committed).unwrap()
            );
        }
        // What the closed segments said is the same as what a fresh reader sees.
        let fresh = Snapshot::read("r", &dir).unwrap();
        for (a, b) in statuses.iter().zip(&fresh.segments) {
            assert_eq!(
                (
                    &a.path,
                    a.pid,
                    a.role,
                    &a.worker,
                    a.closed_cleanly,
                    a.committed,
                    &a.current_test
                ),
                (
                    &b.path,
                    b.pid,
                    b.role,
                    &b.worker,
                    b.closed_cleanly,
                    b.committed,
                    &b.current_test
                )
            );
        }
        let running = view
            .tests
            .iter()
            .find(|t| t.nodeid == "t.py::live")
            .unwrap();
        assert_eq!(running.outcome, "running");
        // Its writer goes: the next poll reads the rest and closes it too.
        live.append(&Record::TestEnd {
            nodeid: "t.py::live".into(),
            mono_ns: 2,
        })
        .unwrap();
        live.commit().unwrap();
        drop(live);
        let view = f.view(&mut agg);
        assert_eq!(f.open_segments(), 0);
        assert_eq!(view.records, fresh.record_count() as u64 + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
