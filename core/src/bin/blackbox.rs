fn main() {
    eprintln!("blackbox: the CLI is not built yet");
    std::process::exit(1);
}
