//! `cargo xtask <command>`: the project's own commands.
//!
//! - `cargo xtask install` — installs what the tests need on Debian 12 (apt packages, the
//!   wasm32-wasip1 target). Idempotent; skips what is present.
//! - `cargo xtask test` — install, build the release filter `.wasm`, check that the protocol
//!   crate builds for wasm32-wasip1, run rustfmt and clippy, then every test in the workspace
//!   (the integration tests start their own Redis, BIND9 and Pebble on loopback).
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// Debian packages the tests and the dev stack use, and a program each provides.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("named", "bind9"),
    ("dig", "bind9-dnsutils"),
    ("pebble", "pebble"),
    ("openssl", "openssl"),
    ("curl", "curl"),
];

const WASM_TARGET: &str = "wasm32-wasip1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("install") => install(),
        Some("test") => test(&args[1..]),
        Some("build-wasm") => build_wasm().map(|p| println!("{}", p.display())),
        _ => {
            eprintln!(
                "usage: cargo xtask <install | test [-- test args] | build-wasm>\n\n  \
                 install     apt packages (redis-server bind9 bind9-dnsutils pebble openssl curl) and the wasm32-wasip1 target\n  \
                 test        everything CI runs: install, build the filter, fmt, clippy, all tests\n  \
                 build-wasm  build the release filter and print its path"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.iter().any(|d| d.join(program).is_file())
}

fn install() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run(update).context("apt-get update (run as root on Debian 12)")?;
        let mut inst = Command::new("apt-get");
        inst.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing);
        run(inst)?;
    }
    // Debian's bind9 package starts a system `named` on port 53; the tests use their own.
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) {
        let mut add = Command::new("rustup");
        add.args(["target", "add", WASM_TARGET]);
        run(add)?;
    }
    Ok(())
}

/// Builds `target/wasm32-wasip1/wasm-release/estuary_filter.wasm`.
fn build_wasm() -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "-p",
        "estuary-filter",
        "--target",
        WASM_TARGET,
        "--profile",
        "wasm-release",
    ]);
    run(c)?;
    let path = root().join("target/wasm32-wasip1/wasm-release/estuary_filter.wasm");
    let size = std::fs::metadata(&path)
        .with_context(|| format!("{} was not built", path.display()))?
        .len();
    eprintln!("xtask: {} is {size} bytes", path.display());
    if size > 1024 * 1024 {
        bail!("the filter is {size} bytes; the limit is 1 MiB");
    }
    Ok(path)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    install()?;
    let wasm = build_wasm()?;
    // The protocol crate must build for the filter's target on its own, too.
    let mut proto = cargo();
    proto.args(["build", "-p", "estuary-proto", "--target", WASM_TARGET]);
    run(proto)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let mut clippy_wasm = cargo();
    clippy_wasm.args([
        "clippy",
        "-p",
        "estuary-filter",
        "-p",
        "estuary-proto",
        "--target",
        WASM_TARGET,
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy_wasm)?;
    let mut t = cargo();
    t.args(["test", "--workspace"])
        .env("ESTUARY_FILTER_WASM", &wasm)
        .args(extra);
    run(t)
}
