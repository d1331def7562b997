//! blackbox-core: a crash-safe, memory-mapped flight recorder for test runs.
//!
//! Every process of a run writes its own *segment* file: records are appended into a
//! shared mapping and committed by one release store, so a process killed at any
//! instruction loses nothing it committed. Readers see every segment's committed prefix,
//! whether the writers still run or died.
//!
//! ```
//! use blackbox_core::{Durability, Record, Recorder, Role, Store, Value};
//!
//! let dir = std::env::temp_dir().join(format!("bbx-doc-{}", std::process::id()));
//! let store = Store::create(&dir)?;
//! let run = store.new_run()?;
//! let mut rec = Recorder::new(store.run_path(&run)?, Role::Main, None, Durability::Process);
//! rec.start_test("test_x.py::test_one")?;
//! rec.record(&Record::PropertySet {
//!     test: Some("test_x.py::test_one".into()),
//!     key: "model".into(),
//!     value: Value::Str("resnet50".into()),
//!     mono_ns: blackbox_core::now_mono_ns(),
//! })?;
//! let view = store.view(&run)?; // the aggregate; store.snapshot(&run) keeps every record
//! assert_eq!(view.tests[0].properties[0].1, Value::Str("resnet50".into()));
//! # drop(rec); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), blackbox_core::Error>(())
//! ```
//!
//! The byte layout and the commit protocol are in `docs/format.md`.

mod aggregate;
pub mod cli;
mod clock;
mod combine;
mod error;
mod follower;
mod history;
mod locate;
mod private;
mod process;
mod record;
mod recorder;
mod segment;
mod snapshot;
mod stock;
mod store;
mod watchdog;

// One public path per type: the modules are private and this list is the crate's face.
pub use aggregate::{
    signal_name, Aggregate, CrashView, ExitView, FixtureStats, PhaseView, RunMeta, RunView,
    TestView, TestsByNodeid, TimeoutView, WorkerView,
};
pub use clock::{now_mono_ns, now_wall_ns};
pub use combine::{combine, Combined};
pub use error::{Damage, Error, Result};
pub use follower::Follower;
pub use history::{
    flaky_note, fold_missing, fold_run, fold_view, FlakyReport, FlakyTest, FoldOptions, FoldStats,
    History, HistoryRun, HistoryTest, RunRef, Slower, SlowerReport, TestHistory, TestRuns,
};
pub use locate::{find_store, Found};
pub use private::create_file;
pub use record::{FieldsError, Phase, Record, RecordKind, Role, Value, ValueKind};
pub use recorder::Recorder;
pub use segment::{
    install_crash_handler, is_segment_name, mark_crash, process_id, set_crash_echo, CrashMark,
    Durability, EncodeRecord, FrameChunk, HeaderInfo, ReadBatch, SegmentReader, SegmentStatus,
    SegmentWriter, FORMAT_VERSION, FRAME_HEADER, HEADER_SIZE, INITIAL_SIZE, MAGIC, MAX_RECORD,
    MAX_VALUE_DEPTH, READ_WINDOW,
};
pub use snapshot::Snapshot;
pub use stock::{is_shown, test_time};
pub use store::{civil_from_unix, is_run_id, remove_empty_attachments, Store};
pub use watchdog::{after_fork_in_parent, before_fork, set_dump_signal, TIMEOUT_EXIT_STATUS};

/// What the integration tests look at inside the store and nothing else uses: no stable API.
#[doc(hidden)]
pub mod testing {
    /// The watchdog's state in this process.
    pub mod watchdog {
        pub use crate::watchdog::{armed, thread_running, FORKED_GRACE};
    }
}
