//! `blackbox report --html FILE`: the run's HTML page (see [`super::html`]) written to a
//! file or standard output.

use super::context::{load, Ctx, Failure, Loaded, HISTORY_WAIT};
use super::html;
use super::text::{clean, plural};
use crate::error::Error;

pub(crate) fn report(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let store = cx.store()?;
    // The runs up to this one: an older run's report shows nothing that came after it.
    let path = store.history_path();
    let strips = if path.exists() {
        crate::history::History::open(&path)
            .map(|h| h.with_wait(HISTORY_WAIT))
            .and_then(|h| {
                h.strips_upto(
                    &view.run.id,
                    html::HISTORY_RUNS,
                    &html::history_wanted(&view),
                )
            })
            // Unreadable (busy, damaged, refused): no strips, the rest of the page is there.
            .unwrap_or_default()
    } else {
        crate::history::Strips::default()
    };
    let html = html::render(&view, crate::clock::now_mono_ns(), &strips);
    let target = cx.inv.html.clone().expect("the parser requires --html");
    if target.as_os_str() == "-" {
        cx.out.write_all(html.as_bytes())?;
        return Ok(0);
    }
    std::fs::write(&target, html.as_bytes()).map_err(|e| Error::Io {
        path: target.clone(),
        action: "writing report",
        source: e,
    })?;
    writeln!(
        cx.out,
        "wrote {}: {}, {}, {} (run {})",
        clean(&target.to_string_lossy()),
        plural(view.tests.len() as u64, "test", "tests"),
        plural(view.crashes.len() as u64, "crash", "crashes"),
        plural(
            (view.fixtures.len() + view.timed.len()) as u64,
            "fixture",
            "fixtures"
        ),
        view.run.id
    )?;
    Ok(0)
}
