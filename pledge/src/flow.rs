//! The commands: cacerts, csrattrs, enroll, reenroll, serverkeygen. Progress goes to stderr.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use estuary_proto::cert::CertSummary;
use estuary_proto::csrattrs::{AttrOrOid, CsrAttrs};
use estuary_proto::est::EstOperation;
use rcgen::PublicKeyData as _;
use serde_json::json;

use crate::csr;
use crate::error::{Exchange, PledgeError};
use crate::est::{self, EnrollOutcome};
use crate::keys::KeyType;
use crate::transport::EstClient;

/// Starts a progress line on stderr ("fetching cacerts… ").
pub fn step(text: &str) {
    eprint!("{text}… ");
    let _ = std::io::stderr().flush();
}

/// Ends a progress line.
pub fn done(text: &str) {
    eprintln!("{text}");
}

/// Runs `fut` as one progress step: "text… ok (detail)" or "text… failed".
async fn stepped<T, F>(text: &str, fut: F, detail: impl Fn(&T) -> String) -> Result<T, PledgeError>
where
    F: std::future::Future<Output = Result<T, PledgeError>>,
{
    step(text);
    match fut.await {
        Ok(v) => {
            let d = detail(&v);
            done(&if d.is_empty() {
                "ok".to_owned()
            } else {
                format!("ok ({d})")
            });
            Ok(v)
        }
        Err(e) => {
            done("failed");
            Err(e)
        }
    }
}

/// `GET /cacerts`, decoded (RFC 7030 §4.1).
pub async fn fetch_cacerts(client: &EstClient) -> Result<Vec<CertSummary>, PledgeError> {
    stepped(
        "fetching cacerts",
        async {
            let answer = client.get(Exchange::CaCerts, EstOperation::CaCerts).await?;
            if answer.status != 200 {
                return Err(est::status_error(Exchange::CaCerts, &answer));
            }
            let ders = est::certs_only_body(Exchange::CaCerts, &answer)?;
            est::summaries("cacerts answer", &ders)
        },
        |v: &Vec<CertSummary>| plural(v.len(), "certificate"),
    )
    .await
}

/// `/cacerts` again once a certificate is issued: the rest of its chain is there
/// (draft-ietf-acme-integrations-17 "Certificate Chains and Trust Anchors": `/simpleenroll`
/// answers the end-entity certificate alone, and an RA learns a new intermediate of its CA from
/// the issuance). If that fetch fails, the answer fetched before enrolling is used.
async fn refetch_cacerts(client: &EstClient, before: Vec<CertSummary>) -> Vec<CertSummary> {
    match fetch_cacerts(client).await {
        Ok(now) => now,
        Err(e) => {
            eprintln!("warning: {e}; using the /cacerts answer fetched before enrolling");
            before
        }
    }
}

/// `GET /csrattrs`, decoded (RFC 7030 §4.5).
pub async fn fetch_csrattrs(client: &EstClient) -> Result<CsrAttrs, PledgeError> {
    stepped(
        "fetching csrattrs",
        async {
            let answer = client
                .get(Exchange::CsrAttrs, EstOperation::CsrAttrs)
                .await?;
            est::csrattrs_answer(&answer)
        },
        |a: &CsrAttrs| match a.requested_dns_names().as_slice() {
            [] if a.0.is_empty() => "no attributes".to_owned(),
            [] => "no DNS name requested".to_owned(),
            names => format!("name {}", names.join(", ")),
        },
    )
    .await
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Posts the CSR and follows `202 Retry-After` until issued or `max_wait` would be exceeded.
pub async fn post_until_issued(
    client: &EstClient,
    exchange: Exchange,
    csr_der: &[u8],
    max_wait: Duration,
) -> Result<Vec<Vec<u8>>, PledgeError> {
    post_until(
        client,
        exchange,
        csr_der,
        max_wait,
        |answer| match est::enroll_answer(exchange, answer, SystemTime::now())? {
            EnrollOutcome::Issued(certs) => Ok(Polled::Done(certs)),
            EnrollOutcome::Pending { delay, hinted } => Ok(Polled::Pending { delay, hinted }),
        },
        |certs| plural(certs.len(), "certificate"),
    )
    .await
}

/// What one POST gave: the result, or "ask again later".
enum Polled<T> {
    Done(T),
    Pending { delay: Duration, hinted: bool },
}

/// Posts the CSR for `exchange` and reads each answer with `read`, following `202
/// Retry-After` until done or `max_wait` would be exceeded; `detail` words the result.
async fn post_until<T>(
    client: &EstClient,
    exchange: Exchange,
    csr_der: &[u8],
    max_wait: Duration,
    read: impl Fn(&est::Answer) -> Result<Polled<T>, PledgeError>,
    detail: impl Fn(&T) -> String,
) -> Result<T, PledgeError> {
    let (op, label) = match exchange {
        Exchange::Reenroll => (EstOperation::SimpleReenroll, "re-enrolling"),
        Exchange::ServerKeyGen => (
            EstOperation::ServerKeyGen,
            "asking for a server-generated key",
        ),
        _ => (EstOperation::SimpleEnroll, "enrolling"),
    };
    let started = Instant::now();
    loop {
        step(label);
        let answer = match client.post_csr(exchange, op, csr_der).await {
            Ok(a) => a,
            Err(e) => {
                done("failed");
                return Err(e);
            }
        };
        match read(&answer) {
            Ok(Polled::Done(v)) => {
                done(&format!("ok ({})", detail(&v)));
                return Ok(v);
            }
            Ok(Polled::Pending { delay, hinted }) => {
                // Never spin: at least one second between tries.
                let delay = delay.max(Duration::from_secs(1));
                let waited = started.elapsed();
                if waited + delay > max_wait {
                    done(&format!(
                        "202, server asks to retry in {} s",
                        delay.as_secs()
                    ));
                    return Err(PledgeError::StillPending {
                        exchange,
                        waited: waited.as_secs(),
                        max_wait: max_wait.as_secs(),
                    });
                }
                let note = if hinted {
                    ""
                } else {
                    " (no usable Retry-After; using the default)"
                };
                done(&format!("202, retrying in {} s{note}", delay.as_secs()));
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                done(&format!("{}", answer.status));
                return Err(e);
            }
        }
    }
}

/// Files written by an enrolment.
#[derive(Clone, Debug)]
pub struct Written {
    /// DIR/key.pem (0600).
    pub key: PathBuf,
    /// DIR/cert.pem: the leaf.
    pub cert: PathBuf,
    /// DIR/chain.pem: leaf + intermediates.
    pub chain: PathBuf,
    /// DIR/cacerts.pem: the /cacerts answer.
    pub cacerts: PathBuf,
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file; `private` makes it 0600 from creation on.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), PledgeError> {
    let werr = |source| PledgeError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let _ = std::fs::remove_file(&tmp);
    let mut f = opts.open(&tmp).map_err(werr)?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(werr)
}

fn write_outputs(
    dir: &Path,
    key_pem: &str,
    leaf: &CertSummary,
    chain: &[Vec<u8>],
    cacerts: &[CertSummary],
) -> Result<Written, PledgeError> {
    std::fs::create_dir_all(dir).map_err(|source| PledgeError::WriteFile {
        path: dir.to_owned(),
        source,
    })?;
    let out = Written {
        key: dir.join("key.pem"),
        cert: dir.join("cert.pem"),
        chain: dir.join("chain.pem"),
        cacerts: dir.join("cacerts.pem"),
    };
    let pem = estuary_proto::pem::encode_certs;
    write_file(&out.key, key_pem.as_bytes(), true)?;
    write_file(&out.cert, pem(&[leaf.der().to_vec()]).as_bytes(), false)?;
    write_file(&out.chain, pem(chain).as_bytes(), false)?;
    let ca: Vec<Vec<u8>> = cacerts.iter().map(|c| c.der().to_vec()).collect();
    write_file(&out.cacerts, pem(&ca).as_bytes(), false)?;
    Ok(out)
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(unix: i64) -> String {
    u64::try_from(unix)
        .ok()
        .and_then(|s| der::DateTime::from_unix_duration(Duration::from_secs(s)).ok())
        .map(|d| d.to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// What an enrolment produced, for the human and `--json` summaries.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The files.
    pub written: Written,
    /// Leaf serial number, hex.
    pub serial: String,
    /// Leaf notAfter, RFC 3339.
    pub not_after: String,
    /// Leaf dNSNames.
    pub dns_names: Vec<String>,
    /// The key type generated.
    pub key_type: KeyType,
    /// Number of certificates in chain.pem.
    pub chain_len: usize,
}

impl Summary {
    /// The `--json` form.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "key": self.written.key,
            "cert": self.written.cert,
            "chain": self.written.chain,
            "cacerts": self.written.cacerts,
            "serial": self.serial,
            "not_after": self.not_after,
            "dns_names": self.dns_names,
            "key_type": self.key_type.to_string(),
            "chain_len": self.chain_len,
        })
    }
}

/// Options shared by enroll and reenroll.
#[derive(Clone, Debug)]
pub struct EnrollOptions {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Key type forced by the user.
    pub key_type: Option<KeyType>,
    /// Limit on the whole 202 loop.
    pub max_wait: Duration,
    /// Name to ask for instead of / in the absence of csrattrs' one.
    pub dns_name: Option<String>,
}

/// First enrolment (RFC 7030 §4.2.1), authenticated by the client's IDevID.
pub async fn enroll(client: &EstClient, opts: &EnrollOptions) -> Result<Summary, PledgeError> {
    let cacerts = fetch_cacerts(client).await?;
    let attrs = fetch_csrattrs(client).await?;
    let requested = attrs.requested_dns_names();
    let names = match (&opts.dns_name, requested.is_empty()) {
        (Some(n), _) => {
            if !requested.is_empty() && !requested.iter().any(|r| r.eq_ignore_ascii_case(n)) {
                eprintln!(
                    "warning: asking for {n} although the server asks for {}",
                    requested.join(", ")
                );
            }
            vec![n.clone()]
        }
        (None, false) => requested,
        (None, true) => return Err(PledgeError::NoNameRequested),
    };
    let key_type = KeyType::choose(opts.key_type, &attrs);
    if !key_type.accepted_by(&attrs) {
        eprintln!("warning: the server's csrattrs do not list {key_type} keys");
    }
    let key = stepped(
        &format!("generating {key_type} key"),
        async { key_type.generate() },
        |_| String::new(),
    )
    .await?;
    // CN = the (first) name: what the edge accepts (absent or equal to the name).
    let subject = csr::common_name_subject(&names[0])?;
    let csr_der = csr::build_csr(&key, &subject, &names)?;
    let certs = post_until_issued(client, Exchange::Enroll, &csr_der, opts.max_wait).await?;
    let cacerts = refetch_cacerts(client, cacerts).await;
    finish(
        Exchange::Enroll,
        &key,
        key_type,
        &names,
        None,
        certs,
        &cacerts,
        &opts.out_dir,
    )
}

/// Server-side key generation (RFC 7030 §4.4), authenticated by the client's IDevID: a CSR
/// naming the device (from csrattrs), signed with a throwaway key of `key_type` whose type the
/// server follows; the server's key and certificate are checked to belong together and
/// written as key.pem (0600), cert.pem, chain.pem, cacerts.pem. The server-generated key is
/// wiped from this process's memory once written.
pub async fn serverkeygen(
    client: &EstClient,
    opts: &EnrollOptions,
) -> Result<Summary, PledgeError> {
    let exchange = Exchange::ServerKeyGen;
    let cacerts = fetch_cacerts(client).await?;
    let attrs = fetch_csrattrs(client).await?;
    let names = match (&opts.dns_name, attrs.requested_dns_names()) {
        (Some(n), _) => vec![n.clone()],
        (None, requested) if !requested.is_empty() => requested,
        (None, _) => return Err(PledgeError::NoNameRequested),
    };
    let request_type = opts.key_type.unwrap_or(KeyType::P256);
    let request_key = request_type.generate()?;
    let subject = csr::common_name_subject(&names[0])?;
    let csr_der = csr::build_csr(&request_key, &subject, &names)?;
    drop(request_key);
    let (pkcs8, certs) = post_until(
        client,
        exchange,
        &csr_der,
        opts.max_wait,
        |answer| {
            if answer.status == 200 {
                return est::serverkeygen_body(answer).map(Polled::Done);
            }
            match est::enroll_answer(exchange, answer, SystemTime::now())? {
                EnrollOutcome::Pending { delay, hinted } => Ok(Polled::Pending { delay, hinted }),
                EnrollOutcome::Issued(_) => Err(PledgeError::UnexpectedStatus {
                    exchange,
                    status: answer.status,
                }),
            }
        },
        |(_, certs)| format!("a key and {}", plural(certs.len(), "certificate")),
    )
    .await?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
    let key = rcgen::KeyPair::try_from(&der).map_err(|e| PledgeError::ServerKey {
        exchange,
        reason: e.to_string(),
    })?;
    drop(pkcs8);
    let key_type = certs
        .first()
        .and_then(|c| CertSummary::from_der(c).ok())
        .and_then(|c| c.key())
        .and_then(KeyType::of)
        .ok_or(PledgeError::UnknownKeyType)?;
    finish(
        exchange,
        &key,
        key_type,
        &names,
        None,
        certs,
        &cacerts,
        &opts.out_dir,
    )
}

/// Re-enrolment (RFC 7030 §4.2.2), authenticated by the current certificate: same subject and
/// SANs, new key.
pub async fn reenroll(
    client: &EstClient,
    current: &CertSummary,
    opts: &EnrollOptions,
) -> Result<Summary, PledgeError> {
    let cacerts = fetch_cacerts(client).await?;
    let names = current.dns_names().to_vec();
    let key_type = match opts.key_type {
        Some(k) => k,
        None => current
            .key()
            .and_then(KeyType::of)
            .ok_or(PledgeError::UnknownKeyType)?,
    };
    let key = stepped(
        &format!("generating {key_type} key"),
        async { key_type.generate() },
        |_| String::new(),
    )
    .await?;
    let subject = csr::subject_from_der(current.subject_der())?;
    let csr_der = csr::build_csr(&key, &subject, &names)?;
    let certs = post_until_issued(client, Exchange::Reenroll, &csr_der, opts.max_wait).await?;
    let cacerts = refetch_cacerts(client, cacerts).await;
    finish(
        Exchange::Reenroll,
        &key,
        key_type,
        &names,
        Some(current.subject_der()),
        certs,
        &cacerts,
        &opts.out_dir,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    exchange: Exchange,
    key: &rcgen::KeyPair,
    key_type: KeyType,
    names: &[String],
    subject: Option<&[u8]>,
    certs: Vec<Vec<u8>>,
    cacerts: &[CertSummary],
    out_dir: &Path,
) -> Result<Summary, PledgeError> {
    step("checking the issued certificate");
    let checked = (|| {
        let summaries = est::summaries("enrolment answer", &certs)?;
        let issued = est::pick_leaf(exchange, summaries, &key.subject_public_key_info(), names)?;
        if subject.is_some_and(|s| s != issued.leaf.subject_der()) {
            return Err(PledgeError::SubjectChanged);
        }
        Ok(issued)
    })();
    let issued = match checked {
        Ok(i) => {
            done("ok");
            i
        }
        Err(e) => {
            done("failed");
            return Err(e);
        }
    };
    let mut pool = issued.others.clone();
    pool.extend(cacerts.iter().cloned());
    let chain = est::build_chain(&issued.leaf, &pool);
    let written = write_outputs(out_dir, &key.serialize_pem(), &issued.leaf, &chain, cacerts)?;
    eprintln!(
        "wrote {}, {}, {}, {}",
        written.key.display(),
        written.cert.display(),
        written.chain.display(),
        written.cacerts.display()
    );
    Ok(Summary {
        written,
        serial: serial_hex(issued.leaf.serial_number_bytes()),
        not_after: rfc3339(issued.leaf.not_after_unix()),
        dns_names: issued.leaf.dns_names().to_vec(),
        key_type,
        chain_len: chain.len(),
    })
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A certificate serial number as `openssl x509 -serial` shows it: the DER INTEGER's content
/// octets, so a positive serial whose first octet has its top bit set keeps the `00` that DER
/// puts in front of it (the X.509 parser hands over the magnitude without it).
fn serial_hex(magnitude: &[u8]) -> String {
    match magnitude.first() {
        Some(b) if b & 0x80 != 0 => format!("00{}", hex_upper(magnitude)),
        _ => hex_upper(magnitude),
    }
}

/// Human-readable lines describing a CsrAttrs answer.
pub fn describe_csrattrs(attrs: &CsrAttrs) -> Vec<String> {
    let mut lines = Vec::new();
    for name in attrs.requested_dns_names() {
        lines.push(format!("dNSName: {name}"));
    }
    for curve in attrs.requested_curves() {
        lines.push(format!("key: EC {}", oid_name(&curve)));
    }
    if let Some(bits) = attrs.requested_rsa_bits() {
        lines.push(format!("key: RSA, at least {bits} bits"));
    }
    for entry in &attrs.0 {
        match entry {
            AttrOrOid::Oid(oid) => lines.push(format!("oid: {} ({oid})", oid_name(oid))),
            AttrOrOid::Attribute { oid, values } => lines.push(format!(
                "attribute: {} ({oid}), {}",
                oid_name(oid),
                plural(values.len(), "value")
            )),
        }
    }
    lines
}

fn oid_name(oid: &const_oid::ObjectIdentifier) -> String {
    use estuary_proto::oids;
    let known = [
        (oids::SECP256R1, "secp256r1"),
        (oids::SECP384R1, "secp384r1"),
        (oids::ED25519, "Ed25519"),
        (oids::RSA_ENCRYPTION, "rsaEncryption"),
        (oids::EC_PUBLIC_KEY, "id-ecPublicKey"),
        (oids::EXTENSION_REQUEST, "extensionRequest"),
        (oids::CHALLENGE_PASSWORD, "challengePassword"),
        (
            oids::CERTIFICATION_REQUEST_INFO_TEMPLATE,
            "certificationRequestInfoTemplate",
        ),
    ];
    known
        .iter()
        .find(|(o, _)| o == oid)
        .map(|(_, n)| (*n).to_owned())
        .or_else(|| const_oid::db::DB.by_oid(oid).map(str::to_owned))
        .unwrap_or_else(|| oid.to_string())
}

/// The `--json` form of a CsrAttrs answer.
pub fn csrattrs_json(attrs: &CsrAttrs) -> serde_json::Value {
    json!({
        "dns_names": attrs.requested_dns_names(),
        "ec_curves": attrs.requested_curves().iter().map(oid_name).collect::<Vec<_>>(),
        "rsa_min_bits": attrs.requested_rsa_bits(),
        "ed25519": attrs.mentions(estuary_proto::oids::ED25519),
        "entries": describe_csrattrs(attrs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_serials() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(hex_upper(&[0x01, 0xab]), "01AB");
        // As openssl prints them: a serial with its top bit set keeps DER's leading 00.
        assert_eq!(serial_hex(&[0x01, 0xab]), "01AB");
        assert_eq!(serial_hex(&[0xf4, 0x00, 0x5b]), "00F4005B");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn key_file_is_private_and_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("pledge-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key.pem");
        write_file(&p, b"one", true).unwrap();
        write_file(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
