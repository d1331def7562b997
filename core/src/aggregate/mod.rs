//! Views of a run: tests, fixtures, crashes and workers, folded from records of every
//! process. An [`Aggregate`] takes records incrementally (from a [`crate::Follower`]);
//! [`Aggregate::view`] combines them with the segments' liveness into a [`RunView`].
//!
//! `view.rs` holds the types a reader gets and `json.rs` their JSON; `acc.rs` what the
//! fold keeps of each test, segment and fixture; `fold.rs` the [`Aggregate`] that takes
//! records in and `assemble.rs` its [`Aggregate::view`]; `index.rs` tests by nodeid;
//! `merge.rs` a resumed run's attempts as one run.

mod acc;
mod assemble;
mod fold;
mod index;
mod json;
mod merge;
mod view;

pub use fold::Aggregate;
pub use index::TestsByNodeid;
pub(crate) use json::TestJson;
pub(crate) use merge::merge_attempts;
pub(crate) use view::crash_kind;
pub use view::{
    signal_name, CrashView, ExitView, FixtureStats, PhaseView, RunMeta, RunView, TestView,
    TimeoutView, WorkerView,
};
