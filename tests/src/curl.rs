//! An EST client made of curl and openssl (code we did not write), and probes of the control
//! planes' metrics, for the end-to-end tests.
use std::path::Path;
use std::process::Command;

use crate::dev_stack::DevStack;
use crate::pki::Issued;
use crate::stack::DEV_PARENT;

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// curl with `args` and the URL; the body goes through a file so the status is alone on
/// stdout.
pub fn curl(dir: &Path, args: &[&str], url: &str) -> Answer {
    let body = dir.join("answer");
    let _ = std::fs::remove_file(&body);
    let status = sh(Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-o"])
        .arg(&body)
        .args(args)
        .arg(url));
    Answer {
        status: String::from_utf8_lossy(&status).trim().parse().unwrap_or(0),
        body: String::from_utf8_lossy(&std::fs::read(&body).unwrap_or_default()).into_owned(),
    }
}

/// A DER CSR by `openssl req` with a fresh P-256 key: `subject`, a SAN for `name`, and one
/// `-addext` per `extra`.
pub fn openssl_csr(dir: &Path, subject: &str, name: &str, extra: &[&str]) -> Vec<u8> {
    let key = dir.join("csr.key");
    let der = dir.join("csr.der");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ])
    .args(["-nodes", "-keyout"])
    .arg(&key)
    .args(["-subj", subject])
    .args(["-addext", &format!("subjectAltName=DNS:{name}")]);
    for e in extra {
        cmd.args(["-addext", e]);
    }
    sh(cmd.args(["-outform", "DER", "-out"]).arg(&der));
    std::fs::read(&der).expect("read CSR")
}

/// Sum of every series of `family` (any labels) over all control planes.
pub fn metric_sum(stack: &DevStack, dir: &Path, family: &str) -> f64 {
    stack
        .control_planes
        .iter()
        .map(|cp| {
            curl(dir, &[], &cp.url("/metrics"))
                .body
                .lines()
                .filter(|l| {
                    l.strip_prefix(family)
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// (ACME orders, DNS UPDATEs) so far.
pub fn side_effects(stack: &DevStack, dir: &Path) -> (f64, f64) {
    (
        metric_sum(stack, dir, "estuary_acme_orders_total"),
        metric_sum(stack, dir, "estuary_dns_updates_total"),
    )
}

/// POSTs a CSR body to `<EST URL>/<op>` with curl, authenticating with `cert`/`key`; `cte` is
/// the `Content-Transfer-Encoding` header, if any. Asks again while the answer is 202 (RFC 7030
/// §4.2.3), for at most `within`.
#[allow(clippy::too_many_arguments)]
pub fn enrol_until_done(
    stack: &DevStack,
    dir: &Path,
    op: &str,
    (cert, key): (&Path, &Path),
    body: &str,
    content_type: &str,
    cte: Option<&str>,
    within: std::time::Duration,
) -> Answer {
    let file = dir.join(format!("{op}.body"));
    std::fs::write(&file, body).expect("write body");
    let ct = format!("Content-Type: {content_type}");
    let te = cte.map(|v| format!("Content-Transfer-Encoding: {v}"));
    let data = format!("@{}", file.display());
    let server_ca = stack.pki.server_ca.cert_path.display().to_string();
    let cert = cert.display().to_string();
    let key = key.display().to_string();
    let mut args = vec![
        "--cacert",
        server_ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
        "-H",
        ct.as_str(),
        "--data-binary",
        data.as_str(),
    ];
    if let Some(te) = &te {
        args.push("-H");
        args.push(te.as_str());
    }
    let url = format!("{}/{op}", stack.est_url());
    let deadline = std::time::Instant::now() + within;
    loop {
        let a = curl(dir, &args, &url);
        if a.status != 202 || std::time::Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A new device of the dev stack's manufacturer with subject serialNumber `serial`: its IDevID
/// (`<dir>/idevid.pem`, `idevid.key`), its DNS name, and the DER of an [`openssl_csr`] for that
/// name (`CN` and SAN; its key in `<dir>/csr.key`).
pub fn new_device(stack: &DevStack, dir: &Path, serial: &str) -> (Issued, String, Vec<u8>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let id = stack
        .pki
        .manufacturer
        .issue_idevid(dir, "idevid", serial)
        .expect("idevid");
    let name = format!("{}.{DEV_PARENT}", serial.to_ascii_lowercase());
    let csr = openssl_csr(dir, &format!("/CN={name}"), &name, &[]);
    (id, name, csr)
}
