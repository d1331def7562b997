//! The `blackbox` command line (being written).
