#!/bin/sh
# `blackbox flaky` on a history of 200 runs of 5,000 tests (target: under 1 s).
# Builds the history once in ${1:-/tmp/bbx-history-bench}, then times the command.
set -eu
dir=${1:-/tmp/bbx-history-bench}
cd "$(dirname "$0")/.."
cargo build --release -q -p blackbox-core --bin blackbox
if [ ! -f "$dir/history.redb" ]; then
    cargo run --release -q -p blackbox-benches --example history_build -- "$dir" 200 5000
fi
farm-bench -n 10 -- target/release/blackbox flaky --dir "$dir"
farm-bench -n 5 -- target/release/blackbox flaky --last 200 --json --dir "$dir"
