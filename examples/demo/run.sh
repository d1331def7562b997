#!/usr/bin/env bash
# The demo: a small suite (passing, failing, segfaulting and aborting tests) run under
# `-n 2` and then `--forked`, each into the demo's own store, then what the store says.
#
#   bash examples/demo/run.sh [PYTHON]    (make demo passes the dev venv's python)
#
# The crashing tests make pytest exit 1, which is what the demo expects; any other exit
# status (0: nothing crashed; 2, 3, 4: interrupted, internal or usage error) fails it.
# DEMO_OUT (default: examples/demo/.blackbox) is where the store and JUnit XML go.
set -euo pipefail

PY=${1:-python3}
case $PY in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # we cd below
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${DEMO_OUT:-$HERE/.blackbox}
STORE=$OUT/store
rm -rf "$STORE" "$OUT"/junit-*.xml
mkdir -p "$OUT"

latest_run() {
    "$PY" -c 'import sys, pytest_blackbox as b; print(b.Store(sys.argv[1]).latest().id)' "$STORE"
}

# run_suite LABEL JUNIT_XML PYTEST_ARGS...
run_suite() {
    local label=$1 xml=$2 code=0
    shift 2
    echo "=== pytest $label: passing, failing and crashing tests"
    # --tb=no: the store keeps every crash's Python traceback; the summary below shows where.
    (cd "$HERE" && "$PY" -m pytest "$@" --blackbox-dir="$STORE" --junit-xml="$xml" \
        -o junit_family=xunit1 -q --tb=no) || code=$?
    if [ "$code" -ne 1 ]; then
        echo "demo: pytest $label exited with status $code; expected 1 (tests failed and crashed)" >&2
        exit 1
    fi
    echo
}

run_suite "-n 2" "$OUT/junit-xdist.xml" -n 2
XDIST_RUN=$(latest_run)
run_suite "--forked" "$OUT/junit-forked.xml" --forked
FORKED_RUN=$(latest_run)

echo "=== what the store says"
BLACKBOX=$(dirname "$PY")/blackbox
if [ -x "$BLACKBOX" ] && "$BLACKBOX" --help >/dev/null 2>&1; then
    for run in "$XDIST_RUN" "$FORKED_RUN"; do
        "$BLACKBOX" stats --dir "$STORE" --run "$run"
        echo
    done
else
    # No CLI yet: the same through the Python API.
    (cd "$HERE" && "$PY" summary.py "$STORE" "$XDIST_RUN" "$FORKED_RUN")
fi

echo "=== the crashed tests' properties, in the JUnit XML (written by the xdist controller)"
"$PY" - "$OUT/junit-xdist.xml" <<'PYTHON'
import sys
import xml.etree.ElementTree as ET

for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    if props and any("crash" in (f.get("message") or "") for f in case.iter("failure")):
        print(f"  {case.get('classname')}.{case.get('name')}:")
        for name, value in props:
            print(f"    <property name={name!r} value={value!r}/>")
PYTHON
echo "  $OUT/junit-xdist.xml"
echo "  $OUT/junit-forked.xml"
echo "  store: $STORE (runs $XDIST_RUN, $FORKED_RUN)"
