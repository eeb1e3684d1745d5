//! `estuary-test-acme`: the strict RFC 8555 + RFC 9444 test ACME CA as a process.
//!
//! ```text
//! estuary-test-acme --dns 127.0.0.1:5353 [--listen 127.0.0.1:14001] [--dir DIR]
//!                   [--no-new-authz] [--no-subdomain-auth] [--no-ancestor-domain]
//!                   [--authz-lifetime-s N]
//! ```
//! Once listening it prints `KEY=value` lines (directory URL, the TLS trust anchor to give
//! the ACME client, the issuing root) and serves until killed.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use estuary_tests::acme_ca::{CaOptions, TestAcmeCa};

const USAGE: &str =
    "usage: estuary-test-acme --dns HOST:PORT [--listen 127.0.0.1:PORT] [--dir DIR] \
[--no-new-authz] [--no-subdomain-auth] [--no-ancestor-domain] [--authz-lifetime-s N]";

fn main() -> ExitCode {
    let mut dns: Option<SocketAddr> = None;
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut dir: Option<PathBuf> = None;
    let mut flags = (true, true, true);
    let mut lifetime = 86_400u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next();
        match a.as_str() {
            "--dns" => dns = value().and_then(|v| v.parse().ok()),
            "--listen" => match value().and_then(|v| v.parse().ok()) {
                Some(l) => listen = l,
                None => return usage(),
            },
            "--dir" => dir = value().map(PathBuf::from),
            "--no-new-authz" => flags.0 = false,
            "--no-subdomain-auth" => flags.1 = false,
            "--no-ancestor-domain" => flags.2 = false,
            "--authz-lifetime-s" => match value().and_then(|v| v.parse().ok()) {
                Some(s) => lifetime = s,
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(dns) = dns else { return usage() };
    let mut opts = CaOptions::rfc9444(dns);
    opts.new_authz = flags.0;
    opts.subdomain_auth = flags.1;
    opts.advertise_subdomain_auth = flags.1;
    opts.ancestor_domain = flags.2;
    opts.authz_lifetime = Duration::from_secs(lifetime);
    let ca = match TestAcmeCa::start_on(opts, listen, dir) {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("estuary-test-acme: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("ESTUARY_TEST_ACME_DIRECTORY={}", ca.directory_url);
    println!("ESTUARY_TEST_ACME_TLS_CA={}", ca.tls_ca_pem.display());
    println!("ESTUARY_ACME_ROOTS={}", ca.issuer_root_pem.display());
    loop {
        std::thread::park();
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
