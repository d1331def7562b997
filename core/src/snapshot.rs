//! Reading a run: every segment, committed prefixes only. A [`Follower`] keeps its place
//! in each segment, so a poll costs what is new, not what the run holds.
//!
//! A follower keeps a segment's file open only while its writer may still write: once the
//! writer is gone and everything it committed has been read, the file is closed and only
//! its final state is kept. So a run of thousands of processes (`pytest --forked` makes
//! one segment per test) never holds thousands of descriptors; new segments are opened in
//! batches that stay well below the process's limit of open files.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::aggregate::{Aggregate, RunView};
use crate::error::{Damage, Error};
use crate::record::{Record, Role};
use crate::segment::{
    decode_hot, decode_record, is_segment_name, writer_holds_lock, CrashMark, FrameChunk,
    HeaderInfo, ReadBatch, SegmentReader, SegmentStatus, HEADER_SIZE,
};

/// The last state of a segment whose writer is gone and which was read to its end: it can
/// no longer change, so its file is closed.
#[derive(Debug)]
struct Final {
    info: HeaderInfo,
    crash: Option<CrashMark>,
    current_test: Option<String>,
    committed: u64,
}

#[derive(Debug)]
enum Source {
    Open(SegmentReader),
    /// Closed for good: finished (its final state), or never readable (`damage` says why).
    Closed(Option<Final>),
}

struct Tracked {
    path: PathBuf,
    source: Source,
    header: Option<HeaderInfo>,
    next: u64,
    role: Option<Role>,
    worker: Option<String>,
    ppid: Option<u32>,
    damage: Option<Damage>,
    /// Once a segment is damaged, reading it stops for good (what came before is kept).
    stopped: bool,
}

impl Tracked {
    fn reader(&self) -> Option<&SegmentReader> {
        match &self.source {
            Source::Open(r) => Some(r),
            Source::Closed(_) => None,
        }
    }

    /// The open reader, when its writer committed more than was read.
    fn unread(&self) -> Option<(&SegmentReader, u64)> {
        let r = self.reader().filter(|_| !self.stopped)?;
        let committed = r.committed();
        (committed > self.next).then_some((r, committed))
    }
}

/// Reads a run incrementally.
pub struct Follower {
    id: String,
    dir: PathBuf,
    segments: Vec<Tracked>,
    /// Every segment file seen, tracked or waiting.
    known: HashSet<OsString>,
    /// Files seen but not opened yet, in name order: opened when there is room under the
    /// limit of open files (a segment gets its index when it is opened, or found damaged).
    waiting: Vec<PathBuf>,
    records: u64,
    /// Segments with an open file.
    open: usize,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("id", &self.id)
            .field("segments", &self.segments.len())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// Records of one poll, by segment index.
pub type Batch = Vec<(usize, Vec<(u64, Record)>)>;

/// Below this many new bytes a poll reads segments one after another.
const PARALLEL_THRESHOLD: u64 = 8 << 20;

/// The most segment files a follower keeps open: a quarter of the soft limit of open
/// files (the rest of the process needs descriptors too), at least 8.
fn open_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft / 4).clamp(8, 4096)
}

/// Whether opening failed for want of descriptors (then it is tried again later).
fn out_of_descriptors(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

/// The checked frames of one window of one segment. A frame of a hot kind is decoded
/// again, without allocating, where it is folded; any other was decoded here.
#[derive(Default)]
struct Chunk {
    seg: usize,
    read: FrameChunk,
    /// (index into `read.frames`, the record) of the frames that are not of a hot kind.
    decoded: Vec<(usize, Record)>,
}

/// Reads and checks the frames of `r` from `from` in one window: lengths, checksums, and
/// that each record decodes (within the depth bound). Stops at the first bad frame, as
/// [`SegmentReader::read_range`] does, with the same damage.
fn check_chunk(r: &SegmentReader, seg: usize, from: u64, mut chunk: Chunk) -> Chunk {
    chunk.seg = seg;
    chunk.decoded.clear();
    r.read_frames(from, &mut chunk.read);
    let read = &mut chunk.read;
    for (k, &(offset, at, len)) in read.frames.iter().enumerate() {
        let payload = &read.buf[at..at + len];
        if decode_hot(payload, false).is_some() {
            continue;
        }
        match decode_record(payload) {
            Ok(record) => chunk.decoded.push((k, record)),
            Err(reason) => {
                read.damage = Some(Damage {
                    path: r.path().to_owned(),
                    offset,
                    reason,
                });
                read.next = offset;
                read.frames.truncate(k);
                break;
            }
        }
    }
    chunk
}

impl Follower {
    pub fn new(id: &str, dir: &Path) -> Follower {
        Follower {
            id: id.to_owned(),
            dir: dir.to_owned(),
            segments: Vec::new(),
            known: HashSet::new(),
            waiting: Vec::new(),
            records: 0,
            open: 0,
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

    /// Segments whose file the follower holds open now: those whose writer may still write
    /// (or that were not read to their end yet).
    pub fn open_segments(&self) -> usize {
        self.open
    }

    /// Notes the segment files that appeared since the last look; they are opened later.
    fn discover(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut new: Vec<(OsString, PathBuf)> = entries
            .filter_map(std::result::Result::ok)
            .map(|e| (e.file_name(), e.path()))
            .filter(|(name, _)| is_segment_name(name) && !self.known.contains(name))
            .collect();
        new.sort();
        for (name, path) in new {
            self.known.insert(name);
            self.waiting.push(path);
        }
    }

    /// Opens waiting segments, in order, while fewer than [`open_budget`] are open.
    /// Returns how many it opened (or found unreadable).
    fn open_pending(&mut self) -> usize {
        let budget = open_budget();
        let mut done = 0;
        let mut left = Vec::new();
        let mut waiting = std::mem::take(&mut self.waiting).into_iter();
        for path in waiting.by_ref() {
            if self.open >= budget {
                left.push(path);
                break;
            }
            let (source, header, damage) = match SegmentReader::open(&path) {
                Ok(r) => {
                    self.open += 1;
                    let h = r.info();
                    (Source::Open(r), Some(h), None)
                }
                Err(e) if out_of_descriptors(&e) => {
                    left.push(path);
                    break;
                }
                Err(e) => {
                    // A file that is not (yet) a readable segment while a live writer holds
                    // its lock is being set up: look again on the next poll. Writers publish
                    // a segment only once its header is complete (see
                    // `SegmentWriter::create_named`), so this is a safeguard; a file nobody
                    // holds (an empty file whose writer died, a foreign or hostile file) is
                    // reported as damaged at once.
                    if writer_holds_lock(&path) {
                        left.push(path);
                        continue;
                    }
                    let d = match e {
                        Error::Damaged(d) => d,
                        e => Damage {
                            path: path.clone(),
                            offset: 0,
                            reason: e.to_string(),
                        },
                    };
                    (Source::Closed(None), None, Some(d))
                }
            };
            done += 1;
            self.segments.push(Tracked {
                path,
                source,
                header,
                next: HEADER_SIZE,
                role: None,
                worker: None,
                ppid: None,
                stopped: damage.is_some(),
                damage,
            });
        }
        left.extend(waiting);
        self.waiting = left;
        done
    }

    /// Closes the segments that are finished: the writer is gone (it can commit nothing
    /// more) and everything it committed was read, or reading stopped at damage. A writer
    /// that closed cleanly but still runs keeps its file open: it may write again.
    fn retire_finished(&mut self) {
        for t in &mut self.segments {
            let Source::Open(r) = &t.source else { continue };
            // Liveness first: once the writer is gone, `committed` is final.
            if r.writer_alive() {
                continue;
            }
            let committed = r.committed();
            if !t.stopped && committed > t.next {
                continue; // read on the next poll
            }
            let last = Final {
                info: r.info(),
                crash: r.crash_mark(),
                current_test: r.current_test(),
                committed,
            };
            t.source = Source::Closed(Some(last));
            self.open -= 1;
        }
    }

    fn any_pending(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Reads what was committed since the last poll, in every segment (new ones included).
    pub fn poll(&mut self) -> Batch {
        self.discover();
        let mut out = Batch::new();
        loop {
            let opened = self.open_pending();
            self.read_new(&mut out);
            self.retire_finished();
            if opened == 0 || !self.any_pending() {
                break;
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out
    }

    fn read_new(&mut self, out: &mut Batch) {
        let todo: Vec<(usize, u64)> = (0..self.segments.len())
            .filter_map(|i| {
                let t = &self.segments[i];
                t.unread().map(|(_, c)| (i, c.saturating_sub(t.next)))
            })
            .collect();
        let pending: u64 = todo.iter().map(|(_, n)| n).sum();
        let read = |t: &Tracked| t.reader().map(|r| r.read_from(t.next)).unwrap_or_default();
        let batches: Vec<(usize, ReadBatch)> = if todo.len() > 1 && pending > PARALLEL_THRESHOLD {
            let threads = std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .min(todo.len());
            let segs = &self.segments;
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|k| {
                        let chunk: Vec<usize> = todo
                            .iter()
                            .map(|(i, _)| *i)
                            .skip(k)
                            .step_by(threads)
                            .collect();
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
            todo.iter()
                .map(|&(i, _)| (i, read(&self.segments[i])))
                .collect()
        };
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
    }

    /// Polls and folds what is new into `agg`, streaming: segments are read and checked in
    /// windows (on worker threads when there is much to read) while this thread folds the
    /// windows already checked, so reading and folding overlap and memory stays bounded.
    /// The usual records are folded straight from the bytes read, without allocating.
    pub fn poll_into(&mut self, agg: &mut Aggregate) {
        self.discover();
        loop {
            let opened = self.open_pending();
            self.read_new_into(agg);
            self.retire_finished();
            if opened == 0 || !self.any_pending() {
                break;
            }
        }
    }

    fn read_new_into(&mut self, agg: &mut Aggregate) {
        // (segment, from, committed end as of now)
        let todo: Vec<(usize, u64, u64)> = (0..self.segments.len())
            .filter_map(|i| {
                let t = &self.segments[i];
                t.unread().map(|(_, c)| (i, t.next, c))
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let pending: u64 = todo.iter().map(|&(_, from, end)| end - from).sum();
        let threads = if pending > PARALLEL_THRESHOLD {
            std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .min(todo.len())
        } else {
            0
        };
        // (segment, next offset, damage) and process info, gathered while folding.
        let mut ends: Vec<(usize, u64, Option<Damage>)> = Vec::new();
        let mut procs: Vec<(usize, Role, Option<String>, u32)> = Vec::new();
        let mut records = 0u64;
        let mut fold = |chunk: &mut Chunk| {
            let seg = chunk.seg;
            let mut decoded = chunk.decoded.drain(..).peekable();
            let read = &mut chunk.read;
            for (k, &(offset, at, len)) in read.frames.iter().enumerate() {
                records += 1;
                if let Some((_, record)) = decoded.next_if(|(d, _)| *d == k) {
                    if let Record::Process {
                        role, worker, ppid, ..
                    } = &record
                    {
                        procs.push((seg, *role, worker.clone(), *ppid));
                    }
                    agg.apply_owned(seg, offset, record);
                    continue;
                }
                let payload = &read.buf[at..at + len];
                if let Some(r) = decode_hot(payload, true) {
                    agg.apply_ref(seg, offset, r);
                } else if let Ok(rec) = decode_record(payload) {
                    // Unreachable: the first pass accepted these bytes.
                    agg.apply_owned(seg, offset, rec);
                }
            }
            ends.push((seg, read.next, read.damage.take()));
        };
        let segs = &self.segments;
        // Streams segment `i` from `from` until `end` (or damage), chunk by chunk.
        let stream = |i: usize,
                      from: u64,
                      end: u64,
                      spare: &mut dyn FnMut() -> Chunk,
                      sink: &mut dyn FnMut(Chunk) -> bool| {
            let Some(r) = segs[i].reader() else { return };
            let mut next = from;
            loop {
                let chunk = check_chunk(r, i, next, spare());
                let read = &chunk.read;
                let done = read.damage.is_some() || read.next <= next || read.next >= end;
                next = read.next;
                if !sink(chunk) || done {
                    return;
                }
            }
        };
        if threads <= 1 {
            let spare = std::cell::Cell::new(Chunk::default());
            for &(i, from, end) in &todo {
                stream(i, from, end, &mut || spare.take(), &mut |mut c| {
                    fold(&mut c);
                    spare.set(c);
                    true
                });
            }
        } else {
            // Chunks go back to the readers once folded: no new 1 MiB buffer per window.
            let pool: Mutex<Vec<Chunk>> = Mutex::new(Vec::new());
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2 * threads);
            std::thread::scope(|s| {
                for k in 0..threads {
                    let tx = tx.clone();
                    let mine: Vec<(usize, u64, u64)> =
                        todo.iter().copied().skip(k).step_by(threads).collect();
                    let (stream, pool) = (&stream, &pool);
                    s.spawn(move || {
                        let mut take = || {
                            pool.lock()
                                .ok()
                                .and_then(|mut p| p.pop())
                                .unwrap_or_default()
                        };
                        for (i, from, end) in mine {
                            stream(i, from, end, &mut take, &mut |c| tx.send(c).is_ok());
                        }
                    });
                }
                drop(tx);
                for mut chunk in rx {
                    fold(&mut chunk);
                    if let Ok(mut p) = pool.lock() {
                        p.push(chunk);
                    }
                }
            });
        }
        // A segment's chunks arrive in order: its last end is where the next poll starts.
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
                let mut st = SegmentStatus {
                    path: t.path.clone(),
                    pid: 0,
                    role: t.role,
                    worker: t.worker.clone(),
                    ppid: t.ppid,
                    alive: false,
                    closed_cleanly: false,
                    created_wall_ns: 0,
                    crash: None,
                    current_test: None,
                    committed: 0,
                    damage: t.damage.clone(),
                };
                let info = match &t.source {
                    Source::Open(r) => {
                        st.alive = r.writer_alive();
                        st.crash = r.crash_mark();
                        st.current_test = r.current_test();
                        st.committed = r.committed();
                        Some(r.info())
                    }
                    Source::Closed(Some(f)) => {
                        st.crash.clone_from(&f.crash);
                        st.current_test.clone_from(&f.current_test);
                        st.committed = f.committed;
                        Some(f.info.clone())
                    }
                    Source::Closed(None) => t.header.clone(),
                };
                if let Some(h) = info {
                    st.pid = h.pid;
                    st.closed_cleanly = h.closed_cleanly;
                    st.created_wall_ns = h.created_wall_ns;
                }
                st
            })
            .collect()
    }

    /// Whether any segment of the run still has its writer.
    pub fn any_writer_alive(&mut self) -> bool {
        self.discover();
        self.segments.iter().any(|t| match &t.source {
            Source::Open(r) => r.writer_alive(),
            Source::Closed(_) => false,
        }) || self.waiting.iter().any(|p| writer_holds_lock(p))
    }

    /// Reads the one record whose frame starts at `offset` in segment `seg` (an offset a
    /// poll returned, or a [`crate::aggregate::PhaseView::location`]). A finished segment's
    /// file is opened again for this.
    pub fn read_at(&self, seg: usize, offset: u64) -> Option<Record> {
        let t = self.segments.get(seg)?;
        if offset >= t.next {
            return None;
        }
        match &t.source {
            Source::Open(r) => r.read_one(offset),
            Source::Closed(Some(_)) => SegmentReader::open(&t.path).ok()?.read_one(offset),
            Source::Closed(None) => None,
        }
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
        let mut records: Vec<Vec<Record>> = (0..f.segments.len()).map(|_| Vec::new()).collect();
        let mut offsets: Vec<Vec<u64>> = (0..f.segments.len()).map(|_| Vec::new()).collect();
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
    /// points to. (The file is `segments[seg].path`, for [`SegmentReader::read_one`].)
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
    use crate::record::{Phase, Value};
    use crate::segment::{Durability, SegmentWriter};

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
