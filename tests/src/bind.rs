//! A real BIND9 `named` on 127.0.0.1 for tests.
//!
//! [`Bind::start`] writes a fresh `named.conf`, zone file and TSIG key into a new directory under
//! [`std::env::temp_dir`], starts `named` in the foreground on a free port and waits until it
//! answers a SOA query for the zone. The process is killed and the directory removed on drop.
//!
//! The zone is `example.test`; the TSIG key (hmac-sha256) may only write TXT records at any depth
//! below `iot.example.test` (`update-policy { grant KEY wildcard *.iot.example.test. TXT; };`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

const NAMED: &str = "/usr/sbin/named";
const INSTALL_HINT: &str = "apt-get install bind9 bind9-dnsutils";
const ZONE: &str = "example.test";
const KEY_NAME: &str = "estuary-test-key";
const READY_TIMEOUT: Duration = crate::util::STARTUP_DEADLINE;

/// A running `named` serving `example.test` on 127.0.0.1 (UDP and TCP).
pub struct Bind {
    /// Address `named` listens on (UDP and TCP).
    pub addr: SocketAddr,
    /// Name of the TSIG key allowed to update TXT records below `iot.example.test`.
    pub key_name: String,
    /// The TSIG key's secret, base64 as BIND writes it. Test material only.
    pub secret_b64: String,
    /// The zone served, without trailing dot (`example.test`).
    pub zone: String,
    dir: PathBuf,
    child: Child,
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bind")
            .field("addr", &self.addr)
            .field("key_name", &self.key_name)
            .field("secret_b64", &"<redacted>")
            .field("zone", &self.zone)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Bind {
    /// Starts a fresh `named` and waits (up to 5 s) until it answers a SOA query for the zone.
    ///
    /// Fails with an installation hint if `named`, `tsig-keygen` or `dig` is missing.
    pub fn start() -> anyhow::Result<Bind> {
        for tool in [NAMED, "/usr/sbin/tsig-keygen"] {
            if !Path::new(tool).exists() {
                bail!("{tool} not found: install BIND9 with `{INSTALL_HINT}`");
            }
        }
        let secret_b64 = generate_secret()?;
        // A port found free may be taken before named binds it: try a few times.
        let mut last_err = None;
        for _ in 0..3 {
            match Self::start_once(&secret_b64) {
                Ok(bind) => return Ok(bind),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("named did not start")))
    }

    fn start_once(secret_b64: &str) -> anyhow::Result<Bind> {
        let port = free_port()?;
        let dir = fresh_dir()?;
        let conf = write_config(&dir, port, secret_b64)?;
        let stderr = fs::File::create(dir.join("named.stderr"))?;
        let child = Command::new(NAMED)
            .args(["-f", "-4", "-u", "root", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {NAMED} (install with `{INSTALL_HINT}`)"))?;
        let mut bind = Bind {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            key_name: KEY_NAME.to_owned(),
            secret_b64: secret_b64.to_owned(),
            zone: ZONE.to_owned(),
            dir,
            child,
        };
        bind.wait_ready()?;
        Ok(bind)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "named exited with {status} before answering; stderr:\n{}\nlog:\n{}",
                    self.read_file("named.stderr"),
                    self.read_file("named.log")
                );
            }
            if soa_answers(self.addr, ZONE) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "named did not answer a SOA query for {ZONE} on {} within {:?}; log:\n{}",
                    self.addr,
                    READY_TIMEOUT,
                    self.read_file("named.log")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Path of `named`'s log file (categories default, update, update-security, queries, at
    /// severity info): each RR an UPDATE adds or deletes leaves an "updating zone" line, each
    /// refused UPDATE a "denied" line.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("named.log")
    }

    /// The log's current content (empty if not written yet).
    pub fn log(&self) -> String {
        self.read_file("named.log")
    }

    /// Directory holding this instance's config, zone file and journal.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The zone's SOA serial, read with `dig`. BIND increments it once per UPDATE message that
    /// changed the zone, so it counts applied messages independently of the client.
    pub fn soa_serial(&self) -> anyhow::Result<u32> {
        let out = self.dig(&["SOA", ZONE])?;
        let line = out
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| anyhow!("no SOA answer for {ZONE}"))?;
        line.split_whitespace()
            .nth(2)
            .ok_or_else(|| anyhow!("short SOA answer: {line}"))?
            .parse()
            .with_context(|| format!("bad serial in SOA answer: {line}"))
    }

    fn dig(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string()])
            .args(["+short", "+time=2", "+tries=1"])
            .args(args)
            .output()
            .with_context(|| format!("running dig (install with `{INSTALL_HINT}`)"))?;
        if !out.status.success() {
            bail!(
                "dig failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).context("dig printed non-UTF-8")
    }

    /// [`Bind::dig_txt`] until `name` has no TXT record or `within` has passed; the values
    /// last seen (empty: gone). The control plane removes DNS-01 records after the device has
    /// its answer (a removal may wait up to a second to ride in a message with additions), so
    /// "removal happens" is checked with a deadline, not at the instant of the answer.
    pub fn txt_after_removal(
        &self,
        name: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let values = self.dig_txt(name)?;
            if values.is_empty() || std::time::Instant::now() >= deadline {
                return Ok(values);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The process id of `named`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the "DNS primary hangs" fault. Its sockets stay open, so UPDATEs and queries
    /// are sent and wait with no answer until [`Bind::thaw`].
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT: `named` answers again (what waited in its socket buffers included).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        crate::util::send_signal(self.pid(), sig)
    }

    /// Asks `named` for the TXT records at `name` with the `dig` CLI, an independent check of what
    /// the server publishes. Returns one string per TXT record, each record's character-strings
    /// concatenated, sorted.
    pub fn dig_txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        // dig reports a message it could not trust (e.g. ";; Warning: query response not set",
        // a late answer to an earlier dig that reused the port after `named` was frozen) as a
        // `;;` line and may print nothing else: ask again, a few times.
        let mut stdout = self.dig(&["TXT", name])?;
        for _ in 0..3 {
            if !stdout.lines().any(|l| l.starts_with(";;")) {
                break;
            }
            stdout = self.dig(&["TXT", name])?;
        }
        let mut values = Vec::new();
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            values.push(parse_dig_txt_line(line)?);
        }
        values.sort();
        Ok(values)
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Parses one `dig +short` TXT line: one or more quoted character-strings separated by spaces,
/// with `\"`, `\\` and `\DDD` escapes. The strings are concatenated.
fn parse_dig_txt_line(line: &str) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let bytes = line.trim().as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => bail!("unterminated string in dig output: {line}"),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let digits = bytes.get(i + 1..i + 4);
                            match digits {
                                Some(d) if d.iter().all(u8::is_ascii_digit) => {
                                    let v = (d[0] - b'0') as u32 * 100
                                        + (d[1] - b'0') as u32 * 10
                                        + (d[2] - b'0') as u32;
                                    out.push(u8::try_from(v).context("bad \\DDD escape")?);
                                    i += 4;
                                }
                                _ => {
                                    let c = bytes
                                        .get(i + 1)
                                        .ok_or_else(|| anyhow!("dangling escape: {line}"))?;
                                    out.push(*c);
                                    i += 2;
                                }
                            }
                        }
                        Some(c) => {
                            out.push(*c);
                            i += 1;
                        }
                    }
                }
            }
            _ => bail!("unexpected dig TXT output: {line}"),
        }
    }
    String::from_utf8(out).context("TXT value is not UTF-8")
}

/// Generates a fresh hmac-sha256 secret with `tsig-keygen` and returns its base64 text.
fn generate_secret() -> anyhow::Result<String> {
    let out = Command::new("/usr/sbin/tsig-keygen")
        .args(["-a", "hmac-sha256", KEY_NAME])
        .output()
        .with_context(|| format!("running tsig-keygen (install with `{INSTALL_HINT}`)"))?;
    if !out.status.success() {
        bail!("tsig-keygen failed with {}", out.status);
    }
    let text = String::from_utf8(out.stdout).context("tsig-keygen printed non-UTF-8")?;
    // `secret "BASE64";`
    let secret = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("secret \"")
                .and_then(|rest| rest.strip_suffix("\";"))
        })
        .ok_or_else(|| anyhow!("no secret line in tsig-keygen output"))?;
    Ok(secret.to_owned())
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of the call.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

fn fresh_dir() -> anyhow::Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "estuary-bind-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write_config(dir: &Path, port: u16, secret_b64: &str) -> anyhow::Result<PathBuf> {
    let d = dir.display();
    let zone_file = format!(
        "$TTL 300\n\
         @ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n\
         @ IN NS ns.{ZONE}.\n\
         ns IN A 127.0.0.1\n"
    );
    fs::write(dir.join("example.test.zone"), zone_file)?;
    let conf = format!(
        r#"key "{KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{secret_b64}";
}};
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
logging {{
    channel estuary_log {{
        file "{d}/named.log";
        severity info;
        print-time yes;
        print-category yes;
        print-severity yes;
    }};
    category default {{ estuary_log; }};
    category update {{ estuary_log; }};
    category update-security {{ estuary_log; }};
    category queries {{ estuary_log; }};
}};
zone "{ZONE}" {{
    type primary;
    file "{d}/example.test.zone";
    journal "{d}/example.test.zone.jnl";
    update-policy {{ grant {KEY_NAME} wildcard *.iot.{ZONE}. TXT; }};
}};
"#
    );
    let path = dir.join("named.conf");
    fs::write(&path, conf)?;
    Ok(path)
}

/// Sends one SOA query over UDP and reports whether a NOERROR answer came back.
fn soa_answers(addr: SocketAddr, zone: &str) -> bool {
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if sock.connect(addr).is_err()
        || sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return false;
    }
    let id: u16 = 0x5e57;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no RD, QDCOUNT 1
    for label in zone.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]); // root, TYPE SOA, CLASS IN
    if sock.send(&q).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    match sock.recv(&mut buf) {
        Ok(n) if n >= 12 => {
            let rcode = buf[3] & 0x0f;
            let ancount = u16::from_be_bytes([buf[6], buf[7]]);
            buf[..2] == id.to_be_bytes() && rcode == 0 && ancount >= 1
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_line_parsing() {
        assert_eq!(parse_dig_txt_line(r#""abc""#).unwrap(), "abc");
        assert_eq!(parse_dig_txt_line(r#""ab" "cd""#).unwrap(), "abcd");
        assert_eq!(
            parse_dig_txt_line(r#""a\"b\\c\032d""#).unwrap(),
            "a\"b\\c d"
        );
        assert!(parse_dig_txt_line(r#""abc"#).is_err());
        assert!(parse_dig_txt_line("abc").is_err());
    }

    #[test]
    fn starts_answers_and_stops() {
        let bind = Bind::start().expect("start named");
        assert!(soa_answers(bind.addr, ZONE));
        assert!(bind.dig_txt("nothing.iot.example.test").unwrap().is_empty());
        assert_eq!(bind.soa_serial().unwrap(), 1);
        let addr = bind.addr;
        let dir = bind.dir().to_owned();
        drop(bind);
        assert!(!soa_answers(addr, ZONE), "named still answers after drop");
        assert!(!dir.exists(), "temp dir left behind");
    }
}
