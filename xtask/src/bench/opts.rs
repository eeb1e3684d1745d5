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
    /// Concurrencies of the "how cost grows" phase (`--levels`; empty: skipped).
    pub(super) levels: Vec<usize>,
    /// `--scale`: only the cost-per-device phases ([`super::scale`]).
    pub(super) scale: bool,
    /// Largest control-plane replica count of `--scale` (runs 1..=this).
    pub(super) scale_replicas: usize,
    /// ACME orders held pending at once in `--scale`.
    pub(super) scale_pending: usize,
    /// Distinct devices whose csrattrs answer the filter caches in `--scale`.
    pub(super) scale_devices: usize,
    /// Distinct devices that ask csrattrs through the real Envoy in `--scale` (Envoy's RSS).
    pub(super) scale_edge_devices: usize,
}

/// `--pledges` and `--concurrency` under `--scale` when not given.
const SCALE_PLEDGES: usize = 150;
const SCALE_CONCURRENCY: usize = 30;

impl Default for Opts {
    fn default() -> Self {
        Self {
            duration_s: 5,
            connections: 32,
            rounds: 3,
            pledges: 200,
            concurrency: 50,
            repeats: 5,
            skip_envoy: false,
            skip_enrol: false,
            levels: vec![10, 50, 200],
            scale: false,
            scale_replicas: 3,
            scale_pending: 1000,
            scale_devices: 100_000,
            scale_edge_devices: 5000,
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--duration S] [--connections N] [--rounds N] \
[--pledges N] [--concurrency N] [--repeats N] [--levels A,B,..] [--skip-envoy] [--skip-enrol]\n       \
cargo xtask bench --scale [--pledges N] [--concurrency N] [--replicas N] [--pending N] [--devices N] [--edge-devices N]\n\n  \
--duration S     seconds per wrk run (default 5)\n  \
--connections N  wrk connections (default 32)\n  \
--rounds N       wrk runs per variant, the median reported; variants alternate (default 3)\n  \
--pledges N      distinct pledges that enrol (default 200)\n  \
--concurrency N  enrolments in flight (default 50)\n  \
--repeats N      identical-CSR posts per pledge on a kept-alive connection (default 5)\n\n\
--scale runs only the cost-per-device phases (not the ones above) and writes target/bench/scale.json:\n  \
enrolments/s and p99 at 1..N control-plane replicas, a fresh stack each (--pledges, default 150,\n  \
at --concurrency, default 30), with Pebble's and the control planes' CPU; Redis bytes per cached\n  \
certificate (INFO memory, MEMORY USAGE); Envoy's RSS after --edge-devices distinct devices asked\n  \
csrattrs; control-plane RSS with --pending ACME orders in flight; the filter's shared data with\n  \
--devices distinct csrattrs entries (wasmtime host, not Envoy).\n  \
--replicas N     largest replica count (default 3)\n  \
--pending N      ACME orders held pending at once (default 1000)\n  \
--devices N      distinct devices asking csrattrs on the wasmtime host (default 100000)\n  \
--edge-devices N distinct devices asking csrattrs through the real Envoy, for its RSS (default 5000)";

pub(super) fn parse_opts(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts::default();
    let mut it = args.iter();
    let (mut pledges_given, mut concurrency_given) = (false, false);
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
            "--pledges" => {
                o.pledges = usize::try_from(num("--pledges")?)?;
                pledges_given = true;
            }
            "--concurrency" => {
                o.concurrency = usize::try_from(num("--concurrency")?)?;
                concurrency_given = true;
            }
            "--repeats" => o.repeats = usize::try_from(num("--repeats")?)?,
            "--levels" => {
                let list = it
                    .next()
                    .context("--levels needs a list such as 10,50,200")?;
                o.levels = if list == "none" {
                    Vec::new()
                } else {
                    list.split(',')
                        .map(|v| v.trim().parse::<usize>().ok().filter(|n| *n > 0))
                        .collect::<Option<Vec<_>>>()
                        .with_context(|| {
                            format!("--levels {list}: positive numbers separated by commas")
                        })?
                };
            }
            "--skip-envoy" => o.skip_envoy = true,
            "--skip-enrol" => o.skip_enrol = true,
            "--scale" => o.scale = true,
            "--replicas" => o.scale_replicas = usize::try_from(num("--replicas")?)?,
            "--pending" => o.scale_pending = usize::try_from(num("--pending")?)?,
            "--devices" => o.scale_devices = usize::try_from(num("--devices")?)?,
            "--edge-devices" => o.scale_edge_devices = usize::try_from(num("--edge-devices")?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.scale {
        if !pledges_given {
            o.pledges = SCALE_PLEDGES;
        }
        if !concurrency_given {
            o.concurrency = SCALE_CONCURRENCY;
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Opts {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_opts(&args).unwrap().unwrap()
    }

    #[test]
    fn scale_has_its_own_pledge_defaults_unless_given() {
        let o = parse(&["--scale"]);
        assert!(o.scale);
        assert_eq!((o.pledges, o.concurrency), (150, 30));
        assert_eq!(
            (o.scale_replicas, o.scale_pending, o.scale_devices),
            (3, 1000, 100_000)
        );
        let o = parse(&[
            "--scale",
            "--pledges",
            "40",
            "--concurrency",
            "8",
            "--devices",
            "500",
        ]);
        assert_eq!((o.pledges, o.concurrency, o.scale_devices), (40, 8, 500));
        let o = parse(&["--pledges", "40"]);
        assert!(!o.scale);
        assert_eq!((o.pledges, o.concurrency), (40, 50));
    }

    #[test]
    fn levels_are_a_list_or_none() {
        assert_eq!(parse(&[]).levels, vec![10, 50, 200]);
        assert_eq!(parse(&["--levels", "5,20"]).levels, vec![5, 20]);
        assert!(parse(&["--levels", "none"]).levels.is_empty());
        for bad in ["", "10,,20", "0", "x"] {
            let args = vec!["--levels".to_string(), bad.to_string()];
            assert!(parse_opts(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts_must_be_positive() {
        let args = vec![
            "--scale".to_string(),
            "--pending".to_string(),
            "0".to_string(),
        ];
        assert!(parse_opts(&args).is_err());
    }
}
