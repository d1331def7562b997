//! `blackbox junit -o FILE`: `JUnit` XML for any run, a dead one included, shaped as pytest's
//! junitxml writes it (`classname`/`name` from the nodeid, the failure's message and
//! longrepr, `<skipped type="pytest.skip">`), with what pytest cannot write after it died:
//! crashed and timed-out tests as `<failure>` with the crash story and the traceback.
//!
//! Two families, as pytest's `junit_family`: `xunit2` (the default) validates against the
//! xunit2 schema pytest's own tests use (`tests/data/junit-10.xsd`), which has no
//! `<properties>` in a `<testcase>` and no `<error>`: a test's properties are in the text
//! of its `<failure>`/`<skipped>`, and a setup or teardown error is a `<failure>` whose
//! message says so. `xunit1` is pytest's other shape: `<properties>` in each testcase,
//! `<error>` for errors, and a `file` attribute.

mod cases;
mod longrepr;
mod xml;

use std::path::Path;

use super::context::{resolve_run, warn_damage, Ctx, Failure};
use crate::store::Store;

pub(crate) use cases::{read, read_logical, Read, Suite};
pub(crate) use xml::{write_file, write_xml};

/// The suite of the logical run `id` ends: that run and the runs it resumes.
pub(crate) fn logical_suite(store: &Store, id: &str) -> Result<Suite, Failure> {
    Ok(read_logical(store, id)?.suite())
}

pub(crate) fn junit(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let read = read_logical(&store, &id)?;
    let statuses = read.follower.statuses();
    warn_damage(cx, &id, statuses.iter().filter_map(|s| s.damage.as_ref()))?;
    let suite = read.suite();
    let mut xml = Vec::new();
    write_xml(&suite, cx.inv.family.unwrap_or_default(), &mut xml)?;
    match cx.inv.output.as_deref() {
        Some(p) if p != Path::new("-") => write_file(p, &xml)?,
        _ => cx.out.write_all(&xml)?,
    }
    Ok(0)
}
