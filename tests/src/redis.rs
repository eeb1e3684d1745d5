//! A real `redis-server` on 127.0.0.1, without persistence.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::util::{find_program, free_port, tail, wait_tcp, KillOnDrop, TempDir};

/// A running Redis. It can be stopped and started again on the same port (to test recovery).
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: TempDir,
    child: Option<KillOnDrop>,
}

impl Redis {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`.
    pub fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("redis")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut redis = Self {
            addr,
            dir,
            child: None,
        };
        redis.start_again()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:P/`
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Stops the server (SIGKILL): every connection to it breaks.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let bin = find_program("redis-server", "redis-server")?;
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()]);
        let child = KillOnDrop::spawn(cmd, &log)?;
        self.child = Some(child);
        wait_tcp(self.addr, Duration::from_secs(10), "redis-server")
            .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&log, 20)))?;
        Ok(())
    }
}
