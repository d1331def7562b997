//! The `blackbox` command: see `blackbox --help` and docs/cli.md.

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("blackbox: internal error: {what}{at}; please report it with the command line that caused it");
    }));
    let code = std::panic::catch_unwind(blackbox_core::cli::main_from_env).unwrap_or(1);
    std::process::exit(code);
}
