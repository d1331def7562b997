//! One logical run out of a resumed run's attempts (`--blackbox-resume`).

use super::view::{CrashView, RunView, TestView};

/// One logical run from `latest` and the attempts before it (`earlier`, newest first):
/// every test once, as the newest attempt that has it tells it (with that attempt's
/// number in [`TestView::attempt`]), the earlier attempts' tests first; the crashes of the
/// tests taken from earlier attempts join `latest`'s. Fixtures, workers and the run's own
/// facts stay `latest`'s.
pub fn merge_attempts(mut latest: RunView, earlier: Vec<RunView>) -> RunView {
    if earlier.is_empty() {
        return latest;
    }
    let mut have: std::collections::HashSet<String> =
        latest.tests.iter().map(|t| t.nodeid.clone()).collect();
    let mut older: Vec<(Vec<TestView>, Vec<CrashView>)> = Vec::new();
    for v in earlier {
        let tests: Vec<TestView> = v
            .tests
            .into_iter()
            .filter(|t| have.insert(t.nodeid.clone()))
            .collect();
        let taken: std::collections::HashSet<&str> =
            tests.iter().map(|t| t.nodeid.as_str()).collect();
        let crashes = v
            .crashes
            .into_iter()
            .filter(|c| c.nodeid.as_deref().is_some_and(|n| taken.contains(n)))
            .collect();
        older.push((tests, crashes));
    }
    let mut tests = Vec::new();
    let mut crashes = Vec::new();
    for (t, c) in older.into_iter().rev() {
        tests.extend(t);
        crashes.extend(c);
    }
    tests.append(&mut latest.tests);
    crashes.append(&mut latest.crashes);
    latest.tests = tests;
    latest.crashes = crashes;
    latest
}
