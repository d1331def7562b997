#!/usr/bin/env bash
# Fuzzes the segment reader for SECONDS (default 60), then replays the corpus through the
# plain test harness. `make fuzz` calls `bash fuzz/run.sh 60`. See fuzz/README.md.
#
# Stable toolchain only: cargo-fuzz runs with `-s none` (no sanitizer), which needs no
# nightly flag. BBX_FUZZ_ASAN=1 builds with AddressSanitizer instead, through
# RUSTC_BOOTSTRAP=1 (the sanitizer runtime ships with the stable toolchain).
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$here"

# The Makefile exports the main workspace's target dir; the fuzzer builds with other flags,
# in its own workspace, into fuzz/target.
unset CARGO_TARGET_DIR

# cargo-fuzz, installed with `cargo install` inside the checkout (.cache is ignored by git).
fuzz_root="$root/.cache/cargo-fuzz"
export PATH="$fuzz_root/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz into $fuzz_root"
    if ! cargo install --locked --root "$fuzz_root" cargo-fuzz --version 0.13.2; then
        echo "fuzz/run.sh: cargo-fuzz could not be installed; replaying the seeds and corpus only (no fuzzing happened)" >&2
        cargo test --release --manifest-path "$here/Cargo.toml"
        exit 1
    fi
fi

sanitizer=(-s none)
if [ "${BBX_FUZZ_ASAN:-0}" = 1 ]; then
    export RUSTC_BOOTSTRAP=1
    sanitizer=(-s address)
fi

mkdir -p corpus/segment_reader
# Inputs up to 64 KiB (a header page plus frames); a 10 s timeout per input; libFuzzer's
# own RSS limit on top of the harness's allocation bound.
cargo fuzz run "${sanitizer[@]}" segment_reader corpus/segment_reader seeds -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

# The same checks without libFuzzer, over the seeds, the corpus just grown and any crash.
cargo test --release --manifest-path "$here/Cargo.toml" -- --quiet

# The harness writes its segment under /dev/shm (or the temp dir), one folder per process:
# remove those whose process is gone.
for d in /dev/shm/bbx-fuzz-* "${TMPDIR:-/tmp}"/bbx-fuzz-*; do
    [ -d "$d" ] || continue
    pid="${d##*-}"
    [ -e "/proc/$pid" ] || rm -rf "$d"
done
