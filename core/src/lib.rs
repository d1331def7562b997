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

pub mod aggregate;
pub mod cli;
pub mod combine;
pub mod error;
pub mod history;
pub mod locate;
pub mod private;
pub mod process;
pub mod record;
pub mod segment;
pub mod snapshot;
pub mod stock;
pub mod store;
pub mod watchdog;
pub mod writer;

pub use aggregate::{
    signal_name, Aggregate, CrashView, ExitView, FixtureStats, RunMeta, RunView, TestView,
    TestsByNodeid, WorkerView,
};
pub use error::{Error, Result};
pub use history::{
    fold_missing, fold_run, fold_view, FlakyReport, FlakyTest, FoldOptions, FoldStats, History,
    HistoryRun, HistoryTest, RunRef, Slower, SlowerReport, TestHistory, TestRuns,
};
pub use locate::{find_store, Found};
pub use record::{Phase, Record, Role, Value};
pub use segment::{
    install_crash_handler, mark_crash, process_id, set_crash_echo, Damage, Durability,
    EncodeRecord, SegmentReader, SegmentWriter,
};
pub use snapshot::{Follower, SegmentStatus, Snapshot};
pub use store::{is_run_id, remove_empty_attachments, Store};
pub use watchdog::TIMEOUT_EXIT_STATUS;
pub use writer::{now_mono_ns, now_wall_ns, Recorder};
