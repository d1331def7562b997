//! Criterion benchmarks of blackbox-core, each beside its peer measured in the same run:
//!
//! 1. `append_commit`: one record appended and committed on a warm writer, vs a redb
//!    insert + commit (`Durability::None`).
//! 2. `txn10`: a 10-record transaction, vs a 10-insert redb transaction.
//! 3. `read_1m`: reading 1,000,000 records from 8 segments, vs a full scan of one redb table.
//! 4. `follow_100_new`: `Follower::poll` after 100 new records, with 10k, 100k and 1M
//!    records already in the store (it must not depend on the store's size).
//! 5. `codec`: encode + decode of a `Record` with postcard (core's codec) and bincode 2.
//!
//! The run ends with a summary of medians and ratios, saved to `benches/results/core.txt`.
//! `cargo bench -p blackbox-benches`; see benches/README.md.

use std::cell::{OnceCell, RefCell};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use blackbox_benches::summary::{self, Notes};
use blackbox_benches::{
    build_redb, build_run, human_bytes, process, property_set, test_record, Mix, Scratch,
    REDB_TABLE,
};
use blackbox_core::FRAME_HEADER;
use blackbox_core::{
    Aggregate, Durability, Follower, Record, Recorder, Role, SegmentWriter, Snapshot,
};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use redb::{ReadableDatabase, ReadableTableMetadata};

/// A writer is replaced (and its file deleted) once it holds this much, so a long
/// measurement neither fills the disk nor measures a 10 GB file.
const ROTATE_BYTES: u64 = 32 << 20;

fn framed(rec: &Record) -> u64 {
    (FRAME_HEADER + rec.encoded_len()).next_multiple_of(8) as u64
}

/// A segment writer in `dir`, replaced by a fresh one on demand.
struct Rotating {
    dir: PathBuf,
    writer: Option<SegmentWriter>,
}

impl Rotating {
    fn new(dir: &Path) -> Rotating {
        std::fs::create_dir_all(dir).expect("creating the folder");
        Rotating {
            dir: dir.to_owned(),
            writer: None,
        }
    }

    /// Drops the current writer, deletes its file, and opens a new one (warm: its first
    /// record is written and committed).
    fn rotate(&mut self) {
        if let Some(old) = self.writer.take() {
            let path = old.path().to_owned();
            drop(old);
            let _ = std::fs::remove_file(path);
        }
        let mut w =
            SegmentWriter::create(&self.dir, Durability::Process).expect("creating a segment");
        w.append(&process(0)).expect("append");
        w.commit().expect("commit");
        self.writer = Some(w);
    }

    fn writer(&mut self) -> &mut SegmentWriter {
        if self.writer.is_none() {
            self.rotate();
        }
        self.writer.as_mut().expect("opened above")
    }
}

impl Drop for Rotating {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let path = w.path().to_owned();
            drop(w);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn redb_db(path: &Path) -> redb::Database {
    let db = redb::Database::create(path).expect("creating the redb database");
    let txn = db.begin_write().expect("begin_write");
    txn.open_table(REDB_TABLE).expect("open_table");
    txn.commit().expect("commit");
    db
}

// ---------------------------------------------------------------------------------------
// 1. append + commit
// ---------------------------------------------------------------------------------------

fn append_commit(crit: &mut Criterion, scratch: &Path, notes: &RefCell<Notes>) {
    let rec = property_set();
    let frame = framed(&rec);
    notes.borrow_mut().add(
        "append",
        format!(
            "the writer is replaced every {} (new file); its zero-filling of the pages ahead (pwritev) and the page faults are in the steady state, on the measured thread",
            human_bytes(ROTATE_BYTES)
        ),
    );
    let mut group = crit.benchmark_group("append_commit");
    group
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut rot = Rotating::new(&scratch.join("append"));
    group.bench_function("blackbox", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let w = rot.writer();
                let room = ROTATE_BYTES.saturating_sub(w.committed_len()) / frame;
                if room == 0 {
                    rot.rotate();
                    continue;
                }
                let n = left.min(room);
                let t = Instant::now();
                for _ in 0..n {
                    w.append(black_box(&rec)).unwrap();
                    w.commit().unwrap();
                }
                total += t.elapsed();
                left -= n;
            }
            total
        });
    });
    drop(rot);

    let db = redb_db(&scratch.join("append.redb"));
    let mut key = 0u64;
    let mut buf = vec![0u8; 4096];
    group.bench_function("redb", |b| {
        b.iter(|| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            {
                let mut table = txn.open_table(REDB_TABLE).unwrap();
                let n = black_box(&rec).encode_into(&mut buf).unwrap();
                table.insert(key, &buf[..n]).unwrap();
            }
            txn.commit().unwrap();
            key += 1;
        });
    });
    group.finish();
    drop(db);
    let _ = std::fs::remove_file(scratch.join("append.redb"));
}

/// A 32 MiB file reserved with `posix_fallocate` and mapped shared, as a segment is: each
/// `touch` writes the first byte of a page never written before. With `prefill`, as the
/// segment writer does under `Durability::Process`: the mapping is advised `MADV_RANDOM`
/// and the pages are first filled with zeros by one `pwritev` per MiB, on the same thread.
struct FreshPages {
    dir: PathBuf,
    map: Option<memmap2::MmapRaw>,
    next: usize,
    files: u64,
    prefill: bool,
    /// End of the pages filled so far.
    filled: usize,
    file: Option<std::fs::File>,
}

impl FreshPages {
    const SIZE: usize = 32 << 20;
    const CHUNK: usize = 1 << 20;

    fn new(dir: &Path, prefill: bool) -> FreshPages {
        std::fs::create_dir_all(dir).expect("creating the folder");
        FreshPages {
            dir: dir.to_owned(),
            map: None,
            next: 0,
            files: 0,
            prefill,
            filled: 0,
            file: None,
        }
    }

    fn renew(&mut self) {
        self.map = None;
        let path = self.dir.join(format!("pages-{}", self.files));
        let _ = std::fs::remove_file(
            self.dir
                .join(format!("pages-{}", self.files.wrapping_sub(1))),
        );
        self.files += 1;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("creating");
        // SAFETY: posix_fallocate on our own descriptor.
        let rc = unsafe {
            libc::posix_fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                Self::SIZE as libc::off_t,
            )
        };
        assert_eq!(rc, 0, "posix_fallocate");
        self.map = Some(
            memmap2::MmapOptions::new()
                .len(Self::SIZE)
                .map_raw(&f)
                .expect("mapping"),
        );
        if self.prefill {
            let map = self.map.as_ref().expect("mapped above");
            map.advise(memmap2::Advice::Random).expect("madvise");
        }
        self.next = 0;
        self.filled = 0;
        self.file = Some(f);
    }

    /// Pages left in the current file.
    fn left(&self) -> u64 {
        if self.map.is_none() {
            0
        } else {
            ((Self::SIZE - self.next) / 4096) as u64
        }
    }

    fn touch(&mut self) {
        if self.prefill && self.next >= self.filled {
            static ZEROS: [u8; 4096] = [0; 4096];
            let iov = [libc::iovec {
                iov_base: ZEROS.as_ptr().cast_mut().cast(),
                iov_len: 4096,
            }; FreshPages::CHUNK / 4096];
            let fd = std::os::fd::AsRawFd::as_raw_fd(self.file.as_ref().expect("renewed"));
            // SAFETY: pwritev on our own descriptor, from a static page of zeros, inside the
            // reserved 32 MiB (CHUNK divides SIZE).
            let n = unsafe {
                libc::pwritev(
                    fd,
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    self.filled as libc::off_t,
                )
            };
            assert_eq!(n, FreshPages::CHUNK as isize, "pwritev");
            self.filled += FreshPages::CHUNK;
        }
        let base = self.map.as_ref().expect("renewed").as_mut_ptr();
        // SAFETY: `next` is a page inside the mapping, backed by reserved file space; only
        // this process maps the file.
        unsafe { std::ptr::write_volatile(base.add(self.next), 1) };
        self.next += 4096;
    }
}

/// What an append is made of, measured apart: serializing the record into a warm buffer,
/// the frame's crc32, and the first write to a new page of a shared file mapping (one per
/// 4096 bytes of frames).
fn append_parts(crit: &mut Criterion, scratch: &Path) {
    let rec = property_set();
    let mut group = crit.benchmark_group("append_parts");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut buf = vec![0u8; 4096];
    group.bench_function("encode_into", |b| {
        b.iter(|| black_box(&rec).encode_into(&mut buf).unwrap());
    });
    let n = rec.encode_into(&mut buf).unwrap();
    let payload = buf[..n].to_vec();
    group.bench_function("frame_crc", |b| {
        b.iter(|| {
            // What segment/layout.rs does: the 4 length bytes, then the payload.
            let mut h = crc32fast::Hasher::new();
            h.update(&(n as u32).to_le_bytes());
            h.update(black_box(&payload));
            h.finalize()
        });
    });
    let dir = scratch.join("pages");
    std::fs::create_dir_all(&dir).expect("creating the folder");
    // `page_fault_4k` is what an append pays per new page (the writer prefills);
    // `page_fault_4k_unfilled` is the bare first store into a page not in the page cache.
    for (name, prefill) in [("page_fault_4k", true), ("page_fault_4k_unfilled", false)] {
        let mut pages = FreshPages::new(&dir.join(name), prefill);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if pages.left() == 0 {
                        pages.renew();
                    }
                    let k = left.min(pages.left());
                    let t = Instant::now();
                    for _ in 0..k {
                        pages.touch();
                    }
                    total += t.elapsed();
                    left -= k;
                }
                total
            });
        });
        drop(pages);
    }
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// 2. a 10-record transaction
// ---------------------------------------------------------------------------------------

fn ten_records() -> Vec<Record> {
    (0..10)
        .map(|i| match property_set() {
            Record::PropertySet {
                test,
                value,
                mono_ns,
                ..
            } => Record::PropertySet {
                test,
                key: format!("metric_{i}"),
                value,
                mono_ns: mono_ns + i,
            },
            other => other,
        })
        .collect()
}

/// A recorder whose segment is replaced (and deleted) on demand.
struct RotatingRecorder {
    dir: PathBuf,
    rec: Option<Recorder>,
}

impl RotatingRecorder {
    fn rotate(&mut self) -> &mut Recorder {
        if let Some(old) = self.rec.take() {
            let path = old.segment_path().map(Path::to_owned);
            drop(old);
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        }
        let mut r = Recorder::new(
            &self.dir,
            Role::Worker,
            Some("gw0".into()),
            Durability::Process,
        );
        // Opens the segment (and writes its first record) before anything is timed.
        r.begin().expect("begin");
        r.commit().expect("commit");
        self.rec.insert(r)
    }
}

impl Drop for RotatingRecorder {
    fn drop(&mut self) {
        if let Some(r) = self.rec.take() {
            let path = r.segment_path().map(Path::to_owned);
            drop(r);
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn txn10(crit: &mut Criterion, scratch: &Path) {
    let ten = ten_records();
    let per_txn: u64 = ten.iter().map(framed).sum();
    let per_writer = ROTATE_BYTES / per_txn;
    let mut group = crit.benchmark_group("txn10");
    group
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let dir = scratch.join("txn10");
    std::fs::create_dir_all(&dir).expect("creating the folder");
    let mut rr = RotatingRecorder { dir, rec: None };
    rr.rotate();
    let mut done = 0u64;
    group.bench_function("blackbox", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if done >= per_writer {
                    rr.rotate();
                    done = 0;
                }
                let n = left.min(per_writer - done);
                let r = rr.rec.as_mut().expect("rotated above");
                let t = Instant::now();
                for _ in 0..n {
                    r.begin().unwrap();
                    for rec in &ten {
                        r.record(black_box(rec)).unwrap();
                    }
                    r.commit().unwrap();
                }
                total += t.elapsed();
                done += n;
                left -= n;
            }
            total
        });
    });
    drop(rr);

    let db = redb_db(&scratch.join("txn10.redb"));
    let mut key = 0u64;
    let mut buf = vec![0u8; 4096];
    group.bench_function("redb", |b| {
        b.iter(|| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            {
                let mut table = txn.open_table(REDB_TABLE).unwrap();
                for rec in &ten {
                    let n = black_box(rec).encode_into(&mut buf).unwrap();
                    table.insert(key, &buf[..n]).unwrap();
                    key += 1;
                }
            }
            txn.commit().unwrap();
        });
    });
    group.finish();
    drop(db);
    let _ = std::fs::remove_file(scratch.join("txn10.redb"));
}

// ---------------------------------------------------------------------------------------
// 3. reading 1M records
// ---------------------------------------------------------------------------------------

const BIG: u64 = 1_000_000;
const SEGMENTS: usize = 8;
const RUN_ID: &str = "20261122-000000-bench";

/// A 1M-record run (8 segments) and the same records in one redb table, built on first use.
struct BigStore {
    run: PathBuf,
    db: redb::Database,
}

fn big_store<'a>(
    cell: &'a OnceCell<BigStore>,
    mix: Mix,
    scratch: &Path,
    notes: &RefCell<Notes>,
) -> &'a BigStore {
    cell.get_or_init(|| {
        let t = Instant::now();
        let run = scratch.join(format!("{}-{RUN_ID}", mix.name())).join(RUN_ID);
        let bytes = build_run(&run, mix, SEGMENTS, BIG);
        let db_path = scratch.join(format!("read_1m_{}.redb", mix.name()));
        let db = build_redb(&db_path, mix, SEGMENTS, BIG);
        let snap = Snapshot::read(RUN_ID, &run).expect("reading the run");
        assert_eq!(snap.record_count() as u64, BIG);
        assert_eq!(snap.damage().count(), 0);
        drop(snap);
        let rows = db.begin_read().expect("begin_read").open_table(REDB_TABLE).expect("open_table").len().expect("len");
        assert_eq!(rows, BIG);
        let redb_size = std::fs::metadata(&db_path).map_or(0, |m| m.len());
        let what = match mix {
            Mix::Pytest => "tests of 8 records: start, fixture setup and teardown, 3 phase reports with the serialized pytest report, a property, end",
            Mix::Small => "tests of 8 record(\"metrics\", {...}) calls, the record of bench 1",
        };
        let section = format!("read_{}", mix.name());
        notes.borrow_mut().add(&section, format!("{BIG} records in {SEGMENTS} segments: {} {what}", (BIG - SEGMENTS as u64) / 8));
        notes.borrow_mut().add(
            &section,
            format!(
                "{} of frames (mean {} B a record); the redb file {}; built in {:.1} s",
                human_bytes(bytes),
                bytes / BIG,
                human_bytes(redb_size),
                t.elapsed().as_secs_f64()
            ),
        );
        BigStore { run, db }
    })
}

fn redb_scan(db: &redb::Database) -> Vec<Record> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(REDB_TABLE).unwrap();
    let mut out = Vec::new();
    for row in table.range::<u64>(..).unwrap() {
        let (_, v) = row.unwrap();
        out.push(Record::decode(v.value()).unwrap());
    }
    out
}

/// Group `read_1m_<mix>`: the 1M-record run read four ways. Results are dropped outside
/// the timing (`iter_with_large_drop`), for every contestant alike.
fn read_1m(
    crit: &mut Criterion,
    cell: &OnceCell<BigStore>,
    mix: Mix,
    scratch: &Path,
    notes: &RefCell<Notes>,
) {
    let mut group = crit.benchmark_group(format!("read_1m_{}", mix.name()));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("snapshot_read", |b| {
        let s = big_store(cell, mix, scratch, notes);
        b.iter_with_large_drop(|| Snapshot::read(RUN_ID, &s.run).unwrap());
    });
    group.bench_function("snapshot_read_view", |b| {
        let s = big_store(cell, mix, scratch, notes);
        b.iter_with_large_drop(|| {
            let snap = Snapshot::read(RUN_ID, &s.run).unwrap();
            let view = snap.view();
            (snap, view)
        });
    });
    group.bench_function("follower_poll_into", |b| {
        let s = big_store(cell, mix, scratch, notes);
        b.iter_with_large_drop(|| {
            let mut f = Follower::new(RUN_ID, &s.run);
            let mut agg = Aggregate::default();
            f.poll_into(&mut agg);
            (f, agg)
        });
    });
    group.bench_function("store_view", |b| {
        // What Store::view, the CLI and the Python Store do: poll, then the view.
        let s = big_store(cell, mix, scratch, notes);
        b.iter_with_large_drop(|| {
            let mut f = Follower::new(RUN_ID, &s.run);
            let mut agg = Aggregate::default();
            let view = f.view(&mut agg);
            (f, agg, view)
        });
    });
    group.bench_function("redb_scan_decode", |b| {
        let s = big_store(cell, mix, scratch, notes);
        let n = redb_scan(&s.db).len() as u64;
        assert_eq!(n, BIG);
        b.iter_with_large_drop(|| redb_scan(&s.db));
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 4. incremental follow
// ---------------------------------------------------------------------------------------

/// New records per poll.
const NEW: u64 = 100;
/// The live segment is replaced (old file deleted) after this many polls, so the store
/// holds between N and N + `NEW * ROTATE_POLLS` records while it is measured.
const ROTATE_POLLS: u32 = 20;

struct Follow {
    follower: Follower,
    live: Rotating,
    polls: u32,
    new: Vec<Record>,
}

impl Follow {
    fn new(run: &Path) -> Follow {
        let mut follower = Follower::new(RUN_ID, run);
        let _ = follower.poll();
        let mut f = Follow {
            follower,
            live: Rotating {
                dir: run.to_owned(),
                writer: None,
            },
            polls: 0,
            new: (0..NEW).map(|k| test_record(99, k / 8, k % 8)).collect(),
        };
        f.rotate();
        f
    }

    /// A new live segment; the follower discovers it (and reads its first record) here,
    /// outside the timing.
    fn rotate(&mut self) {
        self.live.rotate();
        let batch = self.follower.poll();
        assert_eq!(batch.iter().map(|(_, r)| r.len()).sum::<usize>(), 1);
        self.polls = 0;
    }
}

fn follow(crit: &mut Criterion, big: &OnceCell<BigStore>, scratch: &Path, notes: &RefCell<Notes>) {
    let mut group = crit.benchmark_group("follow_100_new");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(60));
    let new_bytes: u64 = (0..NEW)
        .map(|k| framed(&test_record(99, k / 8, k % 8)))
        .sum();
    notes.borrow_mut().add(
        "follow",
        format!(
            "{NEW} new records ({}) committed in a live 9th segment before each timed poll; it is replaced every {} records (old file deleted), so a store of N holds N..N+{} while measured",
            human_bytes(new_bytes),
            NEW * u64::from(ROTATE_POLLS),
            NEW * u64::from(ROTATE_POLLS)
        ),
    );
    for n in [10_000u64, 100_000, BIG] {
        // Built on first use, so a filtered-out size costs nothing.
        let small = scratch.join(format!("follow-{n}"));
        let mut state: Option<Follow> = None;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let st = state.get_or_insert_with(|| {
                if n == BIG {
                    Follow::new(&big_store(big, Mix::Pytest, scratch, notes).run)
                } else {
                    build_run(&small, Mix::Pytest, SEGMENTS, n);
                    Follow::new(&small)
                }
            });
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if st.polls == ROTATE_POLLS {
                        st.rotate();
                    }
                    let w = st.live.writer();
                    for rec in &st.new {
                        w.append(rec).unwrap();
                    }
                    w.commit().unwrap();
                    let t = Instant::now();
                    let batch = st.follower.poll();
                    total += t.elapsed();
                    st.polls += 1;
                    assert_eq!(batch.iter().map(|(_, r)| r.len() as u64).sum::<u64>(), NEW);
                    drop(batch);
                }
                total
            });
        });
        drop(state);
        let _ = std::fs::remove_dir_all(&small);
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 5. codec
// ---------------------------------------------------------------------------------------

fn codec(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("codec");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    let cfg = bincode::config::standard();
    for (name, rec) in summary::codec_records() {
        // Both codecs round-trip the record exactly.
        let mut buf = vec![0u8; 1 << 16];
        let n = rec.encode_into(&mut buf).unwrap();
        assert_eq!(Record::decode(&buf[..n]).unwrap(), rec);
        let n = bincode::serde::encode_into_slice(&rec, &mut buf, cfg).unwrap();
        let (back, used): (Record, usize) =
            bincode::serde::decode_from_slice(&buf[..n], cfg).unwrap();
        assert_eq!((back, used), (rec.clone(), n));

        group.bench_with_input(BenchmarkId::new("postcard", name), &rec, |b, rec| {
            let mut buf = vec![0u8; 1 << 16];
            b.iter(|| {
                let n = black_box(rec).encode_into(&mut buf).unwrap();
                Record::decode(black_box(&buf[..n])).unwrap()
            });
        });
        group.bench_with_input(BenchmarkId::new("bincode", name), &rec, |b, rec| {
            let mut buf = vec![0u8; 1 << 16];
            b.iter(|| {
                let n = bincode::serde::encode_into_slice(black_box(rec), &mut buf, cfg).unwrap();
                let (r, _): (Record, usize) =
                    bincode::serde::decode_from_slice(black_box(&buf[..n]), cfg).unwrap();
                r
            });
        });
    }
    group.finish();
}

fn main() {
    let since = SystemTime::now();
    let load = summary::loadavg();
    let args: Vec<String> = std::env::args().collect();
    let measuring = !args
        .iter()
        .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"));
    let mut c = Criterion::default()
        .nresamples(20_000)
        .configure_from_args();
    let scratch = Scratch::new("core");
    let notes = RefCell::new(Notes::default());
    let big = OnceCell::new();

    append_commit(&mut c, scratch.path(), &notes);
    append_parts(&mut c, scratch.path());
    txn10(&mut c, scratch.path());
    read_1m(&mut c, &big, Mix::Pytest, scratch.path(), &notes);
    {
        let small = OnceCell::new();
        read_1m(&mut c, &small, Mix::Small, scratch.path(), &notes);
    }
    follow(&mut c, &big, scratch.path(), &notes);
    codec(&mut c);
    c.final_summary();

    drop(big);
    drop(scratch);
    if measuring {
        summary::print_and_save(since, &load, &notes.borrow());
    }
}
