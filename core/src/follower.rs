//! Following a run: every segment, committed prefixes only. A [`Follower`] keeps its place
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

    /// How many segments the follower has found.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
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
