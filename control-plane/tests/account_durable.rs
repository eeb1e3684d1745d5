//! The ACME account is durable (issue 13, build item 5): with `acme.account_key_file` the
//! account is found again at the CA by its key (RFC 8555 §7.3.1 `onlyReturnExisting`) and Redis
//! holds no key material; Redis with `requirepass` works with the right password, and a wrong
//! or missing one stops the control plane at start-up with a clear message. Against real Pebble,
//! BIND9 and Redis (`redis-cli` looks at what Redis holds), the control plane as a real process.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use estuary_tests::redis::Redis;
use estuary_tests::util::TempDir;

fn serial(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:x}")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Enrols a fresh device through `cp`; panics unless it gets its certificate.
async fn enrol_one(cp: &ControlPlane, tag: &str) {
    let sn = serial(tag);
    let (csr, _) = csr_for(&format!("{sn}.{PARENT}"));
    let r = cp
        .enroll_until_done(&sn, &csr, Duration::from_secs(90))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), cp.log_text());
}

/// The account URL of the log line that `message` starts (`account=<url>`).
fn account_in_log(log: &str, message: &str) -> Option<String> {
    log.lines().filter(|l| l.contains(message)).find_map(|l| {
        let (_, rest) = l.split_once("account=")?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// Every key in Redis with its value(s) as `redis-cli` prints them.
fn redis_contents(redis: &Redis) -> Vec<(String, String)> {
    let keys = redis.cli(&["--scan"]).expect("redis-cli --scan");
    keys.lines()
        .filter(|k| !k.is_empty())
        .map(|k| {
            let kind = redis.cli(&["TYPE", k]).expect("TYPE");
            let value = match kind.trim() {
                "string" => redis.cli(&["GET", k]),
                "hash" => redis.cli(&["HGETALL", k]),
                "list" => redis.cli(&["LRANGE", k, "0", "-1"]),
                "set" => redis.cli(&["SMEMBERS", k]),
                "zset" => redis.cli(&["ZRANGE", k, "0", "-1"]),
                other => Ok(format!("<{other}>")),
            }
            .expect("read a value");
            (k.to_string(), value)
        })
        .collect()
}

/// Redis holds no account and nothing of the key: no `acme-account` key, no PEM private key,
/// no base64 of the key's DER (standard or URL-safe, as instant-acme stores it).
fn assert_no_key_material(redis: &Redis, key_der: &[u8]) {
    let std64 = base64::engine::general_purpose::STANDARD.encode(key_der);
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key_der);
    let contents = redis_contents(redis);
    assert!(!contents.is_empty(), "Redis is empty: nothing was cached");
    for (k, v) in &contents {
        assert!(!k.contains("acme-account"), "account key in Redis: {k}");
        for needle in ["PRIVATE KEY", &std64[..40], &url64[..40]] {
            assert!(!v.contains(needle), "{k} holds key material ({needle:?})");
        }
    }
}

/// A P-256 PKCS#8 PEM account key made by rcgen: (the file's directory, its path, the DER).
fn account_key() -> (TempDir, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let dir = TempDir::new("acme-account").expect("tempdir");
    let path = dir.path().join("account-key.pem");
    let pem = key.serialize_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    std::fs::write(&path, pem).expect("write the key");
    let path = path.display().to_string();
    (dir, path, key.serialize_der())
}

/// With `acme.account_key_file`: an enrolment works and Redis holds no key material; a second
/// control plane with the same key and a fresh Redis finds the same account at the CA (the
/// `kid` both sign with) instead of creating one.
#[tokio::test(flavor = "multi_thread")]
async fn the_account_key_file_keeps_the_key_out_of_redis_and_finds_the_account_again() {
    let mut stack = stack();
    let (_keydir, key_path, key_der) = account_key();
    let opts = CpOptions {
        extra_env: env(&[("ESTUARY_ACME__ACCOUNT_KEY_FILE", &key_path)]),
        ..CpOptions::default()
    };

    let mut first = ControlPlane::start(&stack, &opts);
    enrol_one(&first, "sn-key-1").await;
    let created = account_in_log(
        &first.log_text(),
        "created the ACME account of acme.account_key_file",
    )
    .unwrap_or_else(|| panic!("no account created:\n{}", first.log_text()));
    assert_no_key_material(&stack.redis, &key_der);
    first.kill();

    // A fresh, empty Redis: nothing of the account survives there, yet the CA knows the key.
    stack.redis = Redis::start().expect("start a fresh Redis");
    let second = ControlPlane::start(&stack, &opts);
    enrol_one(&second, "sn-key-2").await;
    let log = second.log_text();
    let found = account_in_log(&log, "found the ACME account of acme.account_key_file")
        .unwrap_or_else(|| panic!("the account was not found again:\n{log}"));
    assert_eq!(found, created, "another account for the same key");
    assert!(
        !log.contains("created the ACME account"),
        "a second account was created:\n{log}"
    );
    assert_no_key_material(&stack.redis, &key_der);
}

/// A file that is not a P-256 PKCS#8 key is a configuration error naming the option.
#[test]
fn a_key_file_that_is_not_p256_pkcs8_is_refused_at_start_up() {
    let dir = TempDir::new("bad-account-key").expect("tempdir");
    let bad = dir.path().join("ed25519.pem");
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    std::fs::write(&bad, ed25519.serialize_pem()).expect("write");
    let cfg = dir.path().join("estuary.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\napi_token = \"{TOKEN}\"\n\
             [redis]\nurl = \"redis://127.0.0.1:1/\"\n\
             [est]\nparent_domain = \"{PARENT}\"\nca_certs_file = \"/nonexistent\"\n\
             [acme]\ndirectory_url = \"https://127.0.0.1:1/dir\"\naccount_key_file = {:?}\n\
             [dns]\nserver = \"127.0.0.1:53\"\nzone = \"example.test\"\nkey_name = \"k\"\n\
             algorithm = \"hmac-sha256\"\nsecret = \"c2VjcmV0\"\n",
            bad.display().to_string()
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_estuary-control-plane"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("acme.account_key_file:") && err.contains("is not a P-256"),
        "{err}"
    );
}

/// Runs the control plane with `cp`'s config and `password` (or none) until it exits, at most
/// `within`: (exit success, stderr, how long it ran).
fn run_with_password(
    cp: &ControlPlane,
    stack: &Stack,
    password: Option<&str>,
    within: Duration,
) -> (bool, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary-control-plane"));
    cmd.arg("--config")
        .arg(&cp.config)
        .env("ESTUARY_DNS__SECRET", &stack.bind.secret_b64)
        .env_remove("ESTUARY_REDIS__PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("ESTUARY_REDIS__PASSWORD", p);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn the control plane");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let status = status.unwrap_or_else(|| panic!("still running after {within:?}:\n{err}"));
    (status.success(), err, took)
}

/// Redis with `requirepass`: the right password (`ESTUARY_REDIS__PASSWORD`) serves and caches;
/// a wrong or missing one ends the process at start-up, non-zero, with a message that names
/// the problem and the settings, never the password.
#[tokio::test(flavor = "multi_thread")]
async fn redis_requirepass_right_password_works_wrong_password_stops_start_up() {
    const PASSWORD: &str = "redis-test-password-7f3a9c";
    const WRONG: &str = "not-the-password-51b2e8";
    let mut stack = stack();
    stack.redis = Redis::start_with_password(PASSWORD).expect("start Redis with requirepass");

    let cp = ControlPlane::start(
        &stack,
        &CpOptions {
            extra_env: env(&[("ESTUARY_REDIS__PASSWORD", PASSWORD)]),
            ..CpOptions::default()
        },
    );
    let ready = http(&cp.url("/readyz"), "GET", &[], Vec::new()).await;
    assert_eq!(ready.status, 200, "{}", cp.log_text());
    enrol_one(&cp, "sn-auth").await;
    let keys = stack.redis.cli(&["--scan"]).expect("redis-cli --scan");
    assert!(keys.contains("estuary:cert:"), "nothing cached: {keys}");
    assert!(
        !cp.log_text().contains(PASSWORD),
        "the password is in the log"
    );

    for password in [Some(WRONG), None] {
        let (ok, err, took) = run_with_password(&cp, &stack, password, Duration::from_secs(15));
        assert!(!ok, "started with password {password:?}:\n{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}:\n{err}");
        assert!(
            err.contains("Redis refused to authenticate the control plane")
                && err.contains("redis.password"),
            "{err}"
        );
        assert!(!err.contains(WRONG) && !err.contains(PASSWORD), "{err}");
    }
}
