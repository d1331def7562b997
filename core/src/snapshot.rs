//! Reading a run: every segment, committed prefixes only. A [`Follower`] keeps its place
//! in each segment, so a poll costs what is new, not what the run holds.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, RunView};
use crate::error::Error;
use crate::record::{Record, Role};
use crate::segment::{
    is_segment_name, writer_holds_lock, CrashMark, Damage, HeaderInfo, SegmentReader, HEADER_SIZE,
};

/// One segment's state as a reader sees it now.
#[derive(Debug, Clone)]
pub struct SegmentStatus {
    pub path: PathBuf,
    /// From the header; 0 when the header could not be read.
    pub pid: u32,
    /// From the segment's first record.
    pub role: Option<Role>,
    pub worker: Option<String>,
    pub ppid: Option<u32>,
    pub alive: bool,
    pub closed_cleanly: bool,
    pub created_wall_ns: u64,
    pub crash: Option<CrashMark>,
    pub current_test: Option<String>,
    pub committed: u64,
    /// Where reading stopped early, or why the file could not be read at all.
    pub damage: Option<Damage>,
}

struct Tracked {
    path: PathBuf,
    reader: Option<SegmentReader>,
    header: Option<HeaderInfo>,
    next: u64,
    role: Option<Role>,
    worker: Option<String>,
    ppid: Option<u32>,
    damage: Option<Damage>,
    /// Once a segment is damaged, reading it stops for good (what came before is kept).
    stopped: bool,
}

/// Reads a run incrementally.
pub struct Follower {
    id: String,
    dir: PathBuf,
    segments: Vec<Tracked>,
    known: HashMap<OsString, usize>,
    records: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("id", &self.id)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

/// Records of one poll, by segment index.
pub type Batch = Vec<(usize, Vec<(u64, Record)>)>;

/// Records decoded per chunk when streaming into an aggregate.
const STREAM_CHUNK: usize = 4096;

/// Below this many new bytes a poll reads segments one after another.
const PARALLEL_THRESHOLD: u64 = 8 << 20;

impl Follower {
    pub fn new(id: &str, dir: &Path) -> Follower {
        Follower {
            id: id.to_owned(),
            dir: dir.to_owned(),
            segments: Vec::new(),
            known: HashMap::new(),
            records: 0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records read so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    fn discover(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut new: Vec<(OsString, PathBuf)> = entries
            .filter_map(std::result::Result::ok)
            .map(|e| (e.file_name(), e.path()))
            .filter(|(name, _)| is_segment_name(name) && !self.known.contains_key(name))
            .collect();
        new.sort();
        for (name, path) in new {
            let (reader, header, damage) = match SegmentReader::open(&path) {
                Ok(r) => {
                    let h = r.info();
                    (Some(r), Some(h), None)
                }
                Err(Error::Damaged(d)) => (None, None, Some(d)),
                Err(e) => (
                    None,
                    None,
                    Some(Damage {
                        path: path.clone(),
                        offset: 0,
                        reason: e.to_string(),
                    }),
                ),
            };
            // A file that is not (yet) a readable segment while a live writer holds its lock
            // is being set up: look again on the next poll. Writers publish a segment only
            // once its header is complete (see `SegmentWriter::create_named`), so this is
            // a safeguard; a file nobody holds (an empty file whose writer died, a foreign
            // or hostile file) is reported as damaged at once.
            if reader.is_none() && writer_holds_lock(&path) {
                continue;
            }
            self.known.insert(name, self.segments.len());
            self.segments.push(Tracked {
                path,
                reader,
                header,
                next: HEADER_SIZE,
                role: None,
                worker: None,
                ppid: None,
                stopped: damage.is_some(),
                damage,
            });
        }
    }

    /// Reads what was committed since the last poll, in every segment (new ones included).
    pub fn poll(&mut self) -> Batch {
        self.discover();
        let todo: Vec<usize> = (0..self.segments.len())
            .filter(|&i| {
                let t = &self.segments[i];
                !t.stopped && t.reader.as_ref().is_some_and(|r| r.committed() > t.next)
            })
            .collect();
        let pending: u64 = todo
            .iter()
            .map(|&i| {
                let t = &self.segments[i];
                t.reader
                    .as_ref()
                    .map_or(0, |r| r.committed().saturating_sub(t.next))
            })
            .sum();
        let read = |t: &Tracked| {
            t.reader
                .as_ref()
                .map(|r| r.read_from(t.next))
                .unwrap_or_default()
        };
        let batches: Vec<(usize, crate::segment::ReadBatch)> =
            if todo.len() > 1 && pending > PARALLEL_THRESHOLD {
                let threads = std::thread::available_parallelism()
                    .map_or(2, std::num::NonZero::get)
                    .min(todo.len());
                let segs = &self.segments;
                std::thread::scope(|s| {
                    let chunks: Vec<Vec<usize>> = (0..threads)
                        .map(|k| todo.iter().copied().skip(k).step_by(threads).collect())
                        .collect();
                    let handles: Vec<_> = chunks
                        .into_iter()
                        .map(|chunk| {
                            s.spawn(move || {
                                chunk
                                    .into_iter()
                                    .map(|i| (i, read(&segs[i])))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    let mut all: Vec<_> = handles
                        .into_iter()
                        .flat_map(|h| h.join().unwrap_or_default())
                        .collect();
                    all.sort_by_key(|(i, _)| *i);
                    all
                })
            } else {
                todo.iter().map(|&i| (i, read(&self.segments[i]))).collect()
            };
        let mut out = Vec::with_capacity(batches.len());
        for (i, batch) in batches {
            let t = &mut self.segments[i];
            t.next = batch.next;
            if let Some(d) = batch.damage {
                t.damage = Some(d);
                t.stopped = true;
            }
            for (_, rec) in &batch.records {
                if let Record::Process {
                    role, worker, ppid, ..
                } = rec
                {
                    t.role = Some(*role);
                    t.worker.clone_from(worker);
                    t.ppid = Some(*ppid);
                }
            }
            self.records += batch.records.len() as u64;
            if !batch.records.is_empty() {
                out.push((i, batch.records));
            }
        }
        out
    }

    /// Polls and folds what is new into `agg`, streaming: segments are decoded in chunks
    /// (on worker threads when there is much to read) while this thread folds the chunks
    /// already decoded, so decoding and folding overlap and memory stays bounded.
    pub fn poll_into(&mut self, agg: &mut Aggregate) {
        self.discover();
        let todo: Vec<(usize, u64)> = (0..self.segments.len())
            .filter_map(|i| {
                let t = &self.segments[i];
                let new = !t.stopped && t.reader.as_ref().is_some_and(|r| r.committed() > t.next);
                new.then_some((i, t.next))
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let pending: u64 = todo
            .iter()
            .map(|&(i, next)| {
                self.segments[i]
                    .reader
                    .as_ref()
                    .map_or(0, |r| r.committed().saturating_sub(next))
            })
            .sum();
        let threads = if pending > PARALLEL_THRESHOLD {
            std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .min(todo.len())
        } else {
            0
        };
        // (segment, next offset, damage, process info) gathered while folding.
        let mut ends: Vec<(usize, u64, Option<Damage>)> = Vec::new();
        let mut procs: Vec<(usize, Role, Option<String>, u32)> = Vec::new();
        let mut records = 0u64;
        let mut fold = |i: usize, batch: crate::segment::ReadBatch| {
            for (offset, rec) in batch.records {
                if let Record::Process {
                    role, worker, ppid, ..
                } = &rec
                {
                    procs.push((i, *role, worker.clone(), *ppid));
                }
                records += 1;
                agg.apply_owned(i, offset, rec);
            }
            ends.push((i, batch.next, batch.damage));
        };
        let segs = &self.segments;
        let stream =
            |i: usize,
             from: u64,
             sink: &mut dyn FnMut(usize, crate::segment::ReadBatch) -> bool| {
                let Some(r) = segs[i].reader.as_ref() else {
                    return;
                };
                let mut next = from;
                loop {
                    let batch = r.read_range(next, STREAM_CHUNK);
                    let done = batch.records.len() < STREAM_CHUNK || batch.damage.is_some();
                    next = batch.next;
                    if !sink(i, batch) || done {
                        return;
                    }
                }
            };
        if threads <= 1 {
            for &(i, from) in &todo {
                stream(i, from, &mut |i, b| {
                    fold(i, b);
                    true
                });
            }
        } else {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<(usize, crate::segment::ReadBatch)>(2 * threads);
            std::thread::scope(|s| {
                for k in 0..threads {
                    let tx = tx.clone();
                    let mine: Vec<(usize, u64)> =
                        todo.iter().copied().skip(k).step_by(threads).collect();
                    let stream = &stream;
                    s.spawn(move || {
                        for (i, from) in mine {
                            stream(i, from, &mut |i, b| tx.send((i, b)).is_ok());
                        }
                    });
                }
                drop(tx);
                for (i, batch) in rx {
                    fold(i, batch);
                }
            });
        }
        // A segment's batches arrive in order: its last end is where the next poll starts.
        for (i, next, damage) in ends {
            let t = &mut self.segments[i];
            t.next = next;
            if let Some(d) = damage {
                t.damage = Some(d);
                t.stopped = true;
            }
        }
        for (i, role, worker, ppid) in procs {
            let t = &mut self.segments[i];
            t.role = Some(role);
            t.worker = worker;
            t.ppid = Some(ppid);
        }
        self.records += records;
    }

    /// The state of every segment now (liveness, crash marks, running tests).
    pub fn statuses(&self) -> Vec<SegmentStatus> {
        self.segments
            .iter()
            .map(|t| {
                let r = t.reader.as_ref();
                let info = r.map(SegmentReader::info).or_else(|| t.header.clone());
                SegmentStatus {
                    path: t.path.clone(),
                    pid: info.as_ref().map_or(0, |h| h.pid),
                    role: t.role,
                    worker: t.worker.clone(),
                    ppid: t.ppid,
                    alive: r.is_some_and(SegmentReader::writer_alive),
                    closed_cleanly: info.as_ref().is_some_and(|h| h.closed_cleanly),
                    created_wall_ns: info.as_ref().map_or(0, |h| h.created_wall_ns),
                    crash: r.and_then(SegmentReader::crash_mark),
                    current_test: r.and_then(SegmentReader::current_test),
                    committed: r.map_or(0, SegmentReader::committed),
                    damage: t.damage.clone(),
                }
            })
            .collect()
    }

    /// Whether any segment of the run still has its writer.
    pub fn any_writer_alive(&mut self) -> bool {
        self.discover();
        self.segments
            .iter()
            .any(|t| t.reader.as_ref().is_some_and(SegmentReader::writer_alive))
    }

    /// Reads the one record whose frame starts at `offset` in segment `seg` (an offset a
    /// poll returned).
    pub fn read_at(&self, seg: usize, offset: u64) -> Option<Record> {
        let r = self.segments.get(seg)?.reader.as_ref()?;
        if offset >= self.segments[seg].next {
            return None;
        }
        r.read_one(offset)
    }

    /// Polls and builds the aggregate view of the run as it stands.
    pub fn view(&mut self, agg: &mut Aggregate) -> RunView {
        self.poll_into(agg);
        agg.view(&self.id, &self.statuses())
    }
}

/// Every committed record of a run at one moment, by segment.
#[derive(Debug)]
pub struct Snapshot {
    pub id: String,
    pub dir: PathBuf,
    pub segments: Vec<SegmentStatus>,
    /// `records[i]` are the records of `segments[i]`, in commit order.
    pub records: Vec<Vec<Record>>,
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
        let mut records: Vec<Vec<Record>> = (0..f.segments.len()).map(|_| Vec::new()).collect();
        for (seg, recs) in batch {
            records[seg] = recs.into_iter().map(|(_, r)| r).collect();
        }
        Ok(Snapshot {
            id: id.to_owned(),
            dir: dir.to_owned(),
            segments: f.statuses(),
            records,
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

    /// The aggregate view (tests, fixtures, crashes, workers).
    pub fn view(&self) -> RunView {
        let mut agg = Aggregate::default();
        for (seg, recs) in self.records.iter().enumerate() {
            for rec in recs {
                agg.apply(seg, 0, rec);
            }
        }
        agg.view(&self.id, &self.segments)
    }
}
