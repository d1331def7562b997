//! `history.redb`: finished runs folded into one durable database, for trends across runs.
//!
//! At the end of a session the controller calls [`fold_run`] (or [`fold_view`] when it
//! already holds the run's [`RunView`](crate::RunView)); the CLI and the Python package
//! read it back with [`History`]. The run folders stay the source of truth: the history is
//! a digest of them that outlives their pruning, and it can always be rebuilt by folding
//! runs again.
//!
//! Where things are: [`layout`] has the tables and the encoding of their rows, [`fold`] the
//! folding rules (batches, pruning, the size cap) and [`rows`] one run's rows ready to write;
//! [`read`] reads one run back, [`window`] and [`across_runs`] answer across runs; [`open`]
//! opens the file, waits while another process holds it, and words the errors.
//!
//! ```
//! use blackbox_core::{fold_run, FoldOptions, History};
//! use blackbox_core::{Durability, Record, Recorder, Role, Store};
//!
//! let dir = std::env::temp_dir().join(format!("bbx-history-doc-{}", std::process::id()));
//! let store = Store::create(&dir)?;
//! let run = store.new_run()?;
//! let mut rec = Recorder::new(store.run_path(&run)?, Role::Main, None, Durability::Process);
//! rec.start_test("t.py::test_a")?;
//! rec.end_test("t.py::test_a")?;
//! rec.record(&Record::RunEnd { exit_status: 0, wall_ns: blackbox_core::now_wall_ns() })?;
//! drop(rec);
//!
//! let stats = fold_run(&store, &run, &FoldOptions::default())?;
//! assert_eq!((stats.tests, stats.commits), (1, 1));
//! let history = History::of_store(&store)?;
//! assert_eq!(history.runs()?[0].id, run);
//! assert_eq!(history.test_history("t.py::test_a", 10)?.points.len(), 1);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), blackbox_core::Error>(())
//! ```

mod across_runs;
mod entries;
mod fold;
mod layout;
mod open;
mod read;
mod rows;
mod window;

pub use across_runs::{flaky_note, FlakyReport, FlakyTest, Slower, SlowerReport, Strips, TestRuns};
pub use entries::{HistoryRun, HistoryTest, TestHistory};
pub use fold::{fold_missing, fold_run, fold_view, import_run, FoldOptions, FoldStats, SHARD_FILE};
pub use read::History;
pub use window::RunRef;
