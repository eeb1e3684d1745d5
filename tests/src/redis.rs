//! A real `redis-server` on 127.0.0.1, without persistence unless asked for (AOF), optionally
//! with `requirepass`.
use std::net::SocketAddr;
use std::process::Command;

use crate::util::{find_program, free_port, tail, wait_tcp, KillOnDrop, TempDir, STARTUP_DEADLINE};

/// A running Redis. It can be stopped and started again on the same port (to test recovery).
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: TempDir,
    child: Option<KillOnDrop>,
    requirepass: Option<String>,
    aof: bool,
}

impl Redis {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None, false)
    }

    /// Starts it with `--requirepass PASSWORD`: clients must `AUTH` first.
    pub fn start_with_password(password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some(password.to_string()), false)
    }

    /// Starts it with persistence: `--appendonly yes` (fsync every second) in its own
    /// directory, so [`Redis::start_again`] finds the data again.
    pub fn start_with_aof() -> anyhow::Result<Self> {
        Self::start_with(None, true)
    }

    fn start_with(requirepass: Option<String>, aof: bool) -> anyhow::Result<Self> {
        let dir = TempDir::new("redis")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut redis = Self {
            addr,
            dir,
            child: None,
            requirepass,
            aof,
        };
        redis.start_again()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:P/`
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// `redis-cli -h 127.0.0.1 -p P [-a PASSWORD] ARGS…`: its standard output, one line per
    /// reply element.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let bin = find_program("redis-cli", "redis-tools")?;
        let mut cmd = Command::new(bin);
        cmd.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()]);
        if let Some(p) = &self.requirepass {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server (SIGKILL): every connection to it breaks.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// A crash and a restart: SIGKILL if it runs, then the server again on the same port and
    /// directory. Without AOF it starts empty; with AOF every write it acknowledged is back
    /// (Redis writes the AOF before it replies, so a killed process loses nothing the kernel
    /// already has).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let bin = find_program("redis-server", "redis-server")?;
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--dir", &self.dir.path().display().to_string()]);
        if let Some(p) = &self.requirepass {
            cmd.args(["--requirepass", p]);
        }
        let child = KillOnDrop::spawn(cmd, &log)?;
        self.child = Some(child);
        wait_tcp(self.addr, STARTUP_DEADLINE, "redis-server")
            .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
        Ok(())
    }
}
