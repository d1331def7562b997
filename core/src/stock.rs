//! pytest's own fixtures (and the plugin's): what "slowest fixtures" leaves out, so a
//! person sees their suite's fixtures, not `request` or `tmp_path`. One rule for the CLI
//! (`stats`, `fixtures`) and the terminal summary (through the binding's `brief`).

use crate::aggregate::{FixtureStats, RunView};

/// Fixtures that come with pytest, its usual plugins and pytest-blackbox.
pub const STOCK_FIXTURES: &[&str] = &[
    // pytest
    "cache",
    "capfd",
    "capfdbinary",
    "caplog",
    "capsys",
    "capsysbinary",
    "capteesys",
    "doctest_namespace",
    "monkeypatch",
    "pytestconfig",
    "record_property",
    "record_testsuite_property",
    "record_xml_attribute",
    "recwarn",
    "request",
    "subtests",
    "testdir",
    "pytester",
    "linecomp",
    "LineMatcher",
    "tmp_path",
    "tmp_path_factory",
    "tmpdir",
    "tmpdir_factory",
    // pytest-xdist
    "worker_id",
    "testrun_uid",
    // pytest-blackbox
    "blackbox",
];

/// A stock fixture is listed anyway when its setups take more than this share of the run.
pub const STOCK_SHARE: f64 = 0.01;

/// Whether `name` is one of pytest's own fixtures (or one of pytest's internal ones,
/// whose names start with `_`).
pub fn is_stock_fixture(name: &str) -> bool {
    name.starts_with('_') || STOCK_FIXTURES.contains(&name)
}

/// The time the run's tests took, summed over every process (what fixture totals are
/// compared with: they are summed the same way).
pub fn test_time(view: &RunView) -> f64 {
    view.tests
        .iter()
        .map(|t| t.duration_s)
        .filter(|d| d.is_finite())
        .sum()
}

/// Whether `f` belongs in "slowest fixtures": the suite's own always, a stock one only
/// with `all` or when its setups took more than [`STOCK_SHARE`] of `test_time_s`.
pub fn is_shown(f: &FixtureStats, test_time_s: f64, all: bool) -> bool {
    all || f.scope == "timed"
        || !is_stock_fixture(&f.name)
        || f.total_s + f.teardown_total_s > STOCK_SHARE * test_time_s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(name: &str, total_s: f64) -> FixtureStats {
        FixtureStats {
            name: name.into(),
            scope: "function".into(),
            setups: 1,
            teardowns: 1,
            total_s,
            mean_s: total_s,
            max_s: total_s,
            teardown_total_s: 0.0,
        }
    }

    #[test]
    fn stock_fixtures_show_only_when_they_cost_a_share_of_the_run() {
        assert!(is_shown(&fx("db", 0.0), 10.0, false));
        assert!(!is_shown(&fx("tmp_path", 0.05), 10.0, false));
        assert!(is_shown(&fx("tmp_path", 0.2), 10.0, false));
        assert!(is_shown(&fx("record_property", 0.0), 10.0, true));
        assert!(!is_shown(&fx("_session_faulthandler", 0.0), 10.0, false));
        assert!(!is_shown(&fx("blackbox", 0.0), 0.0, false));
    }
}
