//! Small helpers shared by the service starters.
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free TCP port on 127.0.0.1 (also free for UDP at the moment of asking).
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found on 127.0.0.1")
}

/// A fresh directory under the system temp dir, removed on drop unless `ESTUARY_KEEP_TMP` is set.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/estuary-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("estuary-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ESTUARY_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Finds a program on PATH or in the usual sbin directories.
pub fn find_program(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`{name}` is not installed; install the Debian package `{package}` (apt-get install -y {package}), or run `cargo xtask test`, which installs it")
}

/// Waits until `addr` accepts TCP connections, or fails after `timeout`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (SIGKILL) and reaped on drop.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd` with stdout/stderr sent to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdout(out)
            .stderr(err)
            .stdin(std::process::Stdio::null());
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self(child))
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a process the harness starts may take to become ready. Generous on purpose: a cold CI
/// machine with two cores runs several stacks at once (a test binary's tests run in parallel), and
/// Envoy compiling the filter's wasm under that load was seen to take longer than 30 s. A process
/// that is broken fails fast anyway (it exits, and the wait reports its log).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// Before a process is started again on the same log: moves `log` to `<log>.<n>` (the first
/// free n from 1), so the earlier lines are kept and the new process starts a fresh file.
pub fn keep_log(log: &Path) -> anyhow::Result<()> {
    let mut n = 1;
    while log.with_extension(format!("log.{n}")).exists() {
        n += 1;
    }
    std::fs::rename(log, log.with_extension(format!("log.{n}")))
        .with_context(|| format!("keeping {}", log.display()))
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `sig` (e.g. `-STOP`, `-CONT`) to process `pid` with the `kill` CLI.
pub fn send_signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .output()
        .map_err(|e| anyhow::anyhow!("running kill: {e}"))?;
    if !out.status.success() {
        anyhow::bail!("kill {sig} {pid}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
