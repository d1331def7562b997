//! The views' JSON: each view's `to_json` (the `stats --json` schema, docs/cli.md), and
//! [`TestJson`], a test's object written straight to a serializer.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::view::{
    signal_name, CrashView, ExitView, FixtureStats, PhaseView, RunView, TestView, TimeoutView,
    WorkerView,
};
use crate::record::{Phase, Value};

impl RunView {
    /// The documented `stats --json` schema (docs/cli.md).
    pub fn to_json(&self) -> Json {
        json!({
            "run": {
                "id": self.run.id,
                "started": self.run.started_wall_ns.map(|n| n as f64 / 1e9),
                "ended": self.run.ended_wall_ns.map(|n| n as f64 / 1e9),
                "exit_status": self.run.exit_status,
                "host": self.run.host,
                "pid": self.run.pid,
                "argv": self.run.argv,
                "rootdir": self.run.rootdir,
                "live": self.run.live,
                "segments": self.segments,
                "records": self.records,
                "collected": self.collected,
                "resumes": self.run.resumes,
                "attempt": self.run.attempt,
                "retry": self.run.retry,
            },
            "tests": self.tests.iter().map(TestView::to_json).collect::<Vec<_>>(),
            "fixtures": self.fixtures.iter().map(FixtureStats::to_json).collect::<Vec<_>>(),
            "timed": self.timed.iter().map(FixtureStats::to_json).collect::<Vec<_>>(),
            "crashes": self.crashes.iter().map(CrashView::to_json).collect::<Vec<_>>(),
            "exits": self.exits.iter().map(ExitView::to_json).collect::<Vec<_>>(),
            "workers": self.workers.iter().map(WorkerView::to_json).collect::<Vec<_>>(),
            "problems": self.problems,
        })
    }
}

impl TestView {
    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "attempt": self.attempt,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "pid": self.pid,
            "crashed": self.crashed,
            "signal": self.signal,
            "signal_name": self.signal.map(signal_name),
            "timeout": self.timeout.as_ref().map(TimeoutView::to_json),
            "phases": self.phases.iter().map(|p| json!({"phase": p.phase.as_str(), "outcome": p.outcome, "duration_s": p.duration_s})).collect::<Vec<_>>(),
            "properties": props_json(&self.properties),
        })
    }
}

/// [`TestView::to_json`], written straight to a serializer: the same object, keys in the
/// same (sorted) order, without building the tree first (`stats --json` writes 100k of
/// them).
pub(crate) struct TestJson<'a>(pub &'a TestView);

impl serde::Serialize for TestJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Phases<'a>(&'a [PhaseView]);
        impl serde::Serialize for Phases<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                struct One<'a>(&'a PhaseView);
                impl serde::Serialize for One<'_> {
                    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                        use serde::ser::SerializeMap;
                        let mut m = ser.serialize_map(Some(3))?;
                        m.serialize_entry("duration_s", &self.0.duration_s)?;
                        m.serialize_entry("outcome", &self.0.outcome)?;
                        m.serialize_entry("phase", self.0.phase.as_str())?;
                        m.end()
                    }
                }
                ser.collect_seq(self.0.iter().map(One))
            }
        }
        struct Props<'a>(&'a [(String, Value)]);
        impl serde::Serialize for Props<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                // As a JSON object: sorted, the last of equal keys wins.
                let sorted: BTreeMap<&str, &Value> =
                    self.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
                ser.collect_map(sorted.into_iter().map(|(k, v)| (k, ValueJson(v))))
            }
        }
        let t = self.0;
        let mut m = ser.serialize_map(Some(12))?;
        m.serialize_entry("attempt", &t.attempt)?;
        m.serialize_entry("crashed", &t.crashed)?;
        m.serialize_entry("duration_s", &t.duration_s)?;
        m.serialize_entry("nodeid", &t.nodeid)?;
        m.serialize_entry("outcome", &t.outcome)?;
        m.serialize_entry("phases", &Phases(&t.phases))?;
        m.serialize_entry("pid", &t.pid)?;
        m.serialize_entry("properties", &Props(&t.properties))?;
        m.serialize_entry("signal", &t.signal)?;
        m.serialize_entry("signal_name", &t.signal.map(signal_name))?;
        m.serialize_entry("timeout", &t.timeout.as_ref().map(TimeoutView::to_json))?;
        m.serialize_entry("worker", &t.worker)?;
        m.end()
    }
}

/// [`Value::to_json`], written straight to a serializer.
struct ValueJson<'a>(&'a Value);

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if let Some((tag, text)) = self.0.json_tagged() {
            return ser.collect_map([(tag, text)]);
        }
        match self.0 {
            Value::None => ser.serialize_unit(),
            Value::Bool(b) => ser.serialize_bool(*b),
            Value::Int(i) => ser.serialize_i64(*i),
            Value::Float(f) => ser.serialize_f64(*f),
            Value::Str(s) | Value::BigInt(s) => ser.serialize_str(s),
            Value::Bytes(b) => ser.collect_seq(b),
            Value::List(items) => ser.collect_seq(items.iter().map(ValueJson)),
            Value::Dict(pairs) => {
                let sorted: BTreeMap<&str, &Value> =
                    pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
                ser.collect_map(sorted.into_iter().map(|(k, v)| (k, ValueJson(v))))
            }
        }
    }
}

impl FixtureStats {
    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "scope": self.scope,
            "setups": self.setups,
            "teardowns": self.teardowns,
            "total_s": self.total_s,
            "mean_s": self.mean_s,
            "max_s": self.max_s,
            "teardown_total_s": self.teardown_total_s,
        })
    }
}

impl CrashView {
    pub fn to_json(&self) -> Json {
        json!({
            "timeout": self.timeout.as_ref().map(TimeoutView::to_json),
            "nodeid": self.nodeid,
            "worker": self.worker,
            "pid": self.pid,
            "signal": self.signal,
            "signal_name": self.signal.map(signal_name),
            "exit_code": self.exit_code,
            "phase": self.phase,
            "detail": self.detail,
            "attachments": self.attachments,
            "kind": self.kind,
            "devices": devices_json(&self.devices),
        })
    }
}

impl ExitView {
    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "phase": self.phase.map(Phase::as_str),
            "code": self.code,
            "worker": self.worker,
            "pid": self.pid,
        })
    }
}

fn devices_json(devices: &[(String, String)]) -> Json {
    Json::Object(
        devices
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

impl WorkerView {
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "pids": self.pids,
            "tests": self.tests,
            "crashes": self.crashes,
            "alive": self.alive,
            "forked": self.forked,
            "devices": devices_json(&self.devices),
        })
    }
}

impl TimeoutView {
    pub fn to_json(&self) -> Json {
        json!({
            "phase": self.phase,
            "limit_s": self.limit_s,
            "elapsed_s": self.elapsed_s,
            "source": self.source,
            "fatal": self.fatal,
        })
    }
}

fn props_json(props: &[(String, Value)]) -> Json {
    Json::Object(
        props
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_written_straight_is_its_json_value() {
        let t = TestView {
            nodeid: "t.py::x[\"é\"]".into(),
            outcome: "crashed".into(),
            duration_s: f64::NAN,
            worker: Some("gw0".into()),
            pid: None,
            crashed: true,
            signal: Some(11),
            timeout: Some(TimeoutView {
                phase: Some("call".into()),
                limit_s: 2.0,
                elapsed_s: 2.05,
                source: "blackbox_timeout".into(),
                fatal: true,
            }),
            phases: vec![PhaseView {
                phase: Phase::Call,
                outcome: "failed".into(),
                duration_s: 0.25,
                location: (0, 4096),
            }],
            properties: vec![
                ("z".into(), Value::Float(f64::INFINITY)),
                (
                    "a".into(),
                    Value::Dict(vec![
                        ("k".into(), Value::Int(1)),
                        ("b".into(), Value::Bytes(vec![0, 255])),
                        (
                            "k".into(),
                            Value::List(vec![Value::None, Value::BigInt("1".repeat(30))]),
                        ),
                    ]),
                ),
                ("m".into(), Value::Float(-0.5)),
            ],
            start_mono_ns: 0,
            end_mono_ns: None,
            last_mono_ns: 0,
            attempt: 2,
        };
        assert_eq!(serde_json::to_value(TestJson(&t)).unwrap(), t.to_json());
        assert_eq!(
            serde_json::to_string(&TestJson(&t)).unwrap(),
            serde_json::to_string(&t.to_json()).unwrap()
        );
    }
}
