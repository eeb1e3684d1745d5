//! hostapd 2.10's own TEAP peer (`eapol_test`) and TEAP RADIUS server (`hostapd`), built from
//! Debian's `wpa` SOURCE package: the Debian binaries have no TEAP (see shared/facts.md).
//!
//! [`build`] fetches the source with apt (a private deb-src list, no system file is touched),
//! unpacks it, and builds both programs with TEAP enabled, once, into `target/hostapd/bin/`.
//! Later calls reuse that cache. Needs the Debian packages `dpkg-dev` (dpkg-source), `build-essential`,
//! `pkg-config`, `libssl-dev` and network access to the Debian mirror the machine uses.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Paths of the built programs.
#[derive(Clone, Debug)]
pub struct HostapdBins {
    /// `eapol_test`: an EAP peer + RADIUS client in one program.
    pub eapol_test: PathBuf,
    /// `hostapd` with its integrated RADIUS/EAP server.
    pub hostapd: PathBuf,
}

/// `target/hostapd` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("hostapd")
}

/// Builds (or finds in the cache) `eapol_test` and `hostapd` with TEAP.
pub fn build() -> anyhow::Result<HostapdBins> {
    let dir = cache_dir();
    let bins = HostapdBins {
        eapol_test: dir.join("bin/eapol_test"),
        hostapd: dir.join("bin/hostapd"),
    };
    if bins.eapol_test.is_file() && bins.hostapd.is_file() {
        return Ok(bins);
    }
    std::fs::create_dir_all(&dir)?;
    // One builder at a time across test processes: mkdir is atomic.
    let lock = dir.join("build.lock");
    let started = std::time::Instant::now();
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(600) => {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if bins.eapol_test.is_file() && bins.hostapd.is_file() {
                    return Ok(bins);
                }
            }
            Err(e) => bail!("{} held for 10 minutes: {e}", lock.display()),
        }
    }
    let result = build_locked(&dir, &bins);
    let _ = std::fs::remove_dir(&lock);
    result.map(|()| bins)
}

fn build_locked(dir: &Path, bins: &HostapdBins) -> anyhow::Result<()> {
    if bins.eapol_test.is_file() && bins.hostapd.is_file() {
        return Ok(());
    }
    for (prog, pkg) in [
        ("dpkg-source", "dpkg-dev"),
        ("make", "build-essential"),
        ("cc", "build-essential"),
        ("pkg-config", "pkg-config"),
    ] {
        crate::util::find_program(prog, pkg)?;
    }
    if !Path::new("/usr/include/openssl/ssl.h").is_file() {
        bail!("OpenSSL headers missing: apt-get install -y libssl-dev");
    }
    let src_root = dir.join("src");
    let _ = std::fs::remove_dir_all(&src_root);
    let apt = src_root.join("apt");
    std::fs::create_dir_all(apt.join("lists/partial"))?;
    // A deb-src stanza copied from the machine's own Debian sources (first stanza).
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .context("reading /etc/apt/sources.list.d/debian.sources")?;
    let first = sources.split("\n\n").next().unwrap_or_default();
    let stanza = first
        .lines()
        .map(|l| {
            if l.starts_with("Types:") {
                "Types: deb-src"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(apt.join("src.sources"), format!("{stanza}\n"))?;
    let apt_opts = |cmd: &mut Command| {
        cmd.arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", apt.display()))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()));
    };
    let mut update = Command::new("apt-get");
    apt_opts(&mut update);
    update.args(["-q", "update"]);
    run(&mut update, "apt-get update (deb-src)")?;
    let mut fetch = Command::new("apt-get");
    apt_opts(&mut fetch);
    fetch
        .args(["-q", "source", "--download-only", "wpa"])
        .current_dir(&src_root);
    run(&mut fetch, "apt-get source --download-only wpa")?;
    let dsc = std::fs::read_dir(&src_root)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "dsc"))
        .context("no wpa_*.dsc downloaded")?;
    run(
        Command::new("dpkg-source")
            .args(["--no-check", "-x"])
            .arg(&dsc)
            .arg("wpa")
            .current_dir(&src_root),
        "dpkg-source -x",
    )?;
    let wpa = src_root.join("wpa");

    let peer_cfg = "CONFIG_EAPOL_TEST=y\nCONFIG_IEEE8021X_EAPOL=y\nCONFIG_EAP_TLS=y\n\
CONFIG_EAP_TEAP=y\nCONFIG_EAP_MSCHAPV2=y\nCONFIG_TLS=openssl\nCONFIG_DRIVER_NONE=y\n\
CONFIG_CTRL_IFACE=y\n";
    std::fs::write(wpa.join("wpa_supplicant/.config"), peer_cfg)?;
    run(
        Command::new("make")
            .args(["-j2", "eapol_test"])
            .current_dir(wpa.join("wpa_supplicant")),
        "make eapol_test",
    )?;
    let server_cfg = "CONFIG_DRIVER_NONE=y\nCONFIG_RADIUS_SERVER=y\nCONFIG_EAP=y\n\
CONFIG_EAP_TLS=y\nCONFIG_EAP_TEAP=y\nCONFIG_EAP_FAST=y\nCONFIG_EAP_MSCHAPV2=y\n\
CONFIG_TLS=openssl\n";
    std::fs::write(wpa.join("hostapd/.config"), server_cfg)?;
    run(
        Command::new("make")
            .args(["-j2", "hostapd"])
            .current_dir(wpa.join("hostapd")),
        "make hostapd",
    )?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    // Copy under a temporary name, then rename: a reader never sees half a binary.
    for (from, to) in [
        (wpa.join("wpa_supplicant/eapol_test"), &bins.eapol_test),
        (wpa.join("hostapd/hostapd"), &bins.hostapd),
    ] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(&from, &tmp).with_context(|| format!("copying {}", from.display()))?;
        std::fs::rename(&tmp, to)?;
    }
    let _ = std::fs::remove_dir_all(&src_root);
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}
