//! Helpers shared by the integration tests: temp dirs, a seeded generator, child processes
//! (the test binary re-run as one designated `#[ignore]`d test) with an acknowledgement pipe,
//! and records whose content can be checked byte for byte.
#![allow(dead_code)] // each test binary uses a part of this module

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use blackbox_core::{Record, Value};

/// The variable that turns a test binary into a child process playing a role.
pub const CHILD_ENV: &str = "BBX_CHILD";
/// The descriptor a child writes its acknowledgements to.
pub const ACK_FD: i32 = 3;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut r = Rng::from_entropy();
        let p = std::env::temp_dir().join(format!(
            "bbx-{tag}-{}-{:08x}",
            std::process::id(),
            r.next() as u32
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: a small, seeded generator so a failing round can be replayed (`BBX_SEED`).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn from_entropy() -> Rng {
        let mut x = 0u64;
        // SAFETY: getrandom fills the 8 bytes we own.
        unsafe { libc::getrandom((&raw mut x).cast(), 8, 0) };
        Rng::new(x)
    }

    /// The seed from `BBX_SEED`, or a random one; printed so a failure can be replayed.
    pub fn seeded(test: &str) -> Rng {
        let seed = std::env::var("BBX_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Rng::from_entropy().next());
        eprintln!("{test}: BBX_SEED={seed}");
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The role this process plays, when it was started as a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A child process: the test binary running `test` with `BBX_CHILD=role`.
pub struct Spawned {
    pub child: std::process::Child,
    /// What the child wrote to [`ACK_FD`], line by line; EOF once every process holding the
    /// pipe (the child and anything it forked) is gone.
    pub acks: BufReader<File>,
    /// The child's standard input: a control channel (see [`wait_for_parent`]).
    pub control: Option<std::process::ChildStdin>,
    pub log: PathBuf,
}

/// Starts the test binary again as a child running only `test` (an `#[ignore]`d test that
/// dispatches on [`child_role`]), with `env` set, its stdout and stderr in `log`, and the
/// write end of a fresh pipe as descriptor [`ACK_FD`].
pub fn spawn(test: &str, role: &str, env: &[(&str, String)], log: &Path) -> Spawned {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors; both are close-on-exec in this process.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: fresh descriptors we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let out = File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, role)
    .env_remove("RUST_TEST_THREADS")
    .stdin(Stdio::piped())
    .stdout(out)
    .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let wfd = write.as_raw_fd();
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; dup2 clears CLOEXEC on
    // the new descriptor, so the child keeps the write end as ACK_FD.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, ACK_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(write);
    let control = child.stdin.take();
    Spawned {
        child,
        acks: BufReader::new(File::from(read)),
        control,
        log: log.to_owned(),
    }
}

impl Spawned {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next acknowledgement line, or `None` at EOF.
    pub fn next_ack(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.acks.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        }
    }

    /// Reads acknowledgements until one starts with `prefix`; panics (with the child's log)
    /// at EOF.
    pub fn expect_ack(&mut self, prefix: &str) -> String {
        loop {
            match self.next_ack() {
                Some(l) if l.starts_with(prefix) => return l,
                Some(_) => {}
                None => panic!(
                    "child ended before acknowledging {prefix:?}; its log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// Every remaining acknowledgement, to EOF.
    pub fn rest_of_acks(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        while let Some(l) = self.next_ack() {
            all.push(l);
        }
        all
    }

    /// Tells a child blocked in [`wait_for_parent`] to go on.
    pub fn tell(&mut self, line: &str) {
        let c = self.control.as_mut().expect("control channel");
        c.write_all(format!("{line}\n").as_bytes()).unwrap();
        c.flush().unwrap();
    }

    pub fn kill(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the child and reaps it; a child that died on its own before the kill is a
    /// failure (its log is shown).
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        self.kill();
        let st = self.wait();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "child died before it was killed: {st:?}; log:\n{}",
            self.log_text()
        );
        st
    }
}

/// In a child: writes one acknowledgement line to [`ACK_FD`] with a single `write` (a pipe
/// write of at most `PIPE_BUF` bytes is atomic, so lines of forked writers never interleave).
pub fn ack(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    assert!(buf.len() <= libc::PIPE_BUF);
    // SAFETY: writes our own buffer to the inherited pipe.
    let n = unsafe { libc::write(ACK_FD, buf.as_ptr().cast(), buf.len()) };
    assert_eq!(n, buf.len() as isize, "ack write");
}

/// In a child: blocks until the parent writes a line on the control channel (or closes it).
pub fn wait_for_parent() -> String {
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    while stdin.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    line
}

/// In a child: no core files from the signals the tests send or provoke.
pub fn no_core_dumps() {
    let lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &raw const lim) };
}

// ---------------------------------------------------------------------------------------
// Records whose every byte can be checked
// ---------------------------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The payload size of record `seq` of writer `w`: mostly small, sometimes a few pages,
/// now and then large enough to make the segment grow inside one write.
pub fn payload_len(w: u32, seq: u64) -> usize {
    let h = mix(u64::from(w) << 40 ^ seq);
    match h % 100 {
        0 => 60_000 + (h >> 8) as usize % 80_000,
        1..=9 => 4_000 + (h >> 8) as usize % 12_000,
        _ => (h >> 8) as usize % 700,
    }
}

/// The bytes of record `seq` of writer `w`.
pub fn payload(w: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = mix(u64::from(w) << 40 ^ seq ^ 0x5eed);
    while out.len() < len {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes()[..(len - out.len()).min(8)]);
    }
    out
}

/// Record `seq` of writer `w`; `txn` is `(part, parts)` when it belongs to a transaction.
pub fn data_record(w: u32, seq: u64, txn: Option<(u32, u32)>) -> Record {
    let key = match txn {
        Some((i, k)) => format!("s{seq} t{i}/{k}"),
        None => format!("s{seq}"),
    };
    Record::PropertySet {
        test: Some(format!("w{w}")),
        key,
        value: Value::Bytes(payload(w, seq, payload_len(w, seq))),
        mono_ns: seq,
    }
}

/// What [`data_record`] made: (writer, seq, txn part). Panics on any byte that differs.
pub fn check_data_record(rec: &Record) -> (u32, u64, Option<(u32, u32)>) {
    let Record::PropertySet {
        test,
        key,
        value,
        mono_ns,
    } = rec
    else {
        panic!("not a data record: {rec:?}");
    };
    let w: u32 = test
        .as_deref()
        .and_then(|t| t.strip_prefix('w'))
        .and_then(|n| n.parse().ok())
        .expect("writer id");
    let mut parts = key.split(' ');
    let seq: u64 = parts
        .next()
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|n| n.parse().ok())
        .expect("seq");
    let txn = parts.next().map(|t| {
        let (i, k) = t
            .strip_prefix('t')
            .and_then(|t| t.split_once('/'))
            .expect("txn part");
        (i.parse().unwrap(), k.parse().unwrap())
    });
    assert_eq!(*mono_ns, seq, "mono_ns of w{w} s{seq}");
    let Value::Bytes(b) = value else {
        panic!("value of w{w} s{seq} is not bytes")
    };
    assert_eq!(b.len(), payload_len(w, seq), "length of w{w} s{seq}");
    assert!(
        *b == payload(w, seq, b.len()),
        "bytes of w{w} s{seq} differ"
    );
    (w, seq, txn)
}

/// Waits until process `pid` (not necessarily our child) has exited: a pidfd becomes
/// readable then, after the kernel closed its files (and so released its locks).
pub fn wait_exit(pid: i32) {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // ESRCH: already gone (and reaped).
        return;
    }
    // SAFETY: fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls the one pollfd we own; 20 s is a generous bound for an exit.
    let n = unsafe { libc::poll(&raw mut p, 1, 20_000) };
    assert_eq!(n, 1, "process {pid} did not exit");
}

/// Describes a wait status for assertion messages.
pub fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!(
            "signal {s}{}",
            if st.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        _ => format!("{st:?}"),
    }
}
