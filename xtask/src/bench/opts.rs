//! The command line of `cargo xtask bench`.
use anyhow::{bail, Context};

/// Knobs (`cargo xtask bench --help`).
#[derive(Clone, Debug)]
pub(super) struct Opts {
    pub(super) duration_s: u64,
    pub(super) connections: u32,
    pub(super) rounds: u32,
    pub(super) pledges: usize,
    pub(super) concurrency: usize,
    pub(super) repeats: usize,
    pub(super) skip_envoy: bool,
    pub(super) skip_enrol: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            duration_s: 5,
            connections: 32,
            rounds: 2,
            pledges: 200,
            concurrency: 50,
            repeats: 5,
            skip_envoy: false,
            skip_enrol: false,
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--duration S] [--connections N] [--rounds N] \
[--pledges N] [--concurrency N] [--repeats N] [--skip-envoy] [--skip-enrol]\n\n  \
--duration S     seconds per wrk run (default 5)\n  \
--connections N  wrk connections (default 32)\n  \
--rounds N       wrk runs per variant, averaged; variants alternate (default 2)\n  \
--pledges N      distinct pledges that enrol (default 200)\n  \
--concurrency N  enrolments in flight (default 50)\n  \
--repeats N      identical-CSR posts per pledge on a kept-alive connection (default 5)";

pub(super) fn parse_opts(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .with_context(|| format!("{what} needs a positive number"))
        };
        match a.as_str() {
            "--duration" => o.duration_s = num("--duration")?,
            "--connections" => o.connections = u32::try_from(num("--connections")?)?,
            "--rounds" => o.rounds = u32::try_from(num("--rounds")?)?,
            "--pledges" => o.pledges = usize::try_from(num("--pledges")?)?,
            "--concurrency" => o.concurrency = usize::try_from(num("--concurrency")?)?,
            "--repeats" => o.repeats = usize::try_from(num("--repeats")?)?,
            "--skip-envoy" => o.skip_envoy = true,
            "--skip-enrol" => o.skip_enrol = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(Some(o))
}
