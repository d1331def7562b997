//! libFuzzer target: arbitrary bytes as a segment file (see `blackbox_fuzz::check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blackbox_fuzz::check(data));
