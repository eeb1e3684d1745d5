//! The `estuary-pledge` binary against a minimal EST server written here to RFC 7030:
//! TLS that requires a client certificate (rustls), `/cacerts` (§4.1, `application/pkcs7-mime`),
//! `/csrattrs` (§4.5), `/simpleenroll` answering `202 Retry-After` once and then the certificate
//! (§4.2.1, §4.2.3), `/simplereenroll` authenticated by the issued certificate (§4.2.2).
//! PKCS#7 certs-only bodies are made by the openssl CLI (`crl2pkcs7`), and the files the
//! pledge writes are checked with `openssl verify` / `openssl pkey`, as a user would.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use estuary_pledge::est;
use estuary_pledge::transport::{self, ConnectionUse, CsrBody, EstClient, EstSession, Identity};
use estuary_pledge::Exchange;
use estuary_proto::est::EstOperation;
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::{CertSummary, KeyPolicy};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const PARENT: &str = "iot.example.test";
const PKCS7: &str = "application/pkcs7-mime";
const PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

struct Pki {
    dir: PathBuf,
    server_ca: PathBuf,
    idevid_cert: PathBuf,
    idevid_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
    issuing_root_pem: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    client_roots: Vec<CertificateDer<'static>>,
    issuing: CertifiedIssuer<'static, KeyPair>,
    issuing_root_der: Vec<u8>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn device(serial: &str) -> (CertificateParams, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(serial.try_into().unwrap()),
    );
    p.distinguished_name.push(DnType::CommonName, "pledge");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    (p, KeyPair::generate().unwrap())
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap();
}

fn make_pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("pledge-est-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // TLS server identity.
    let server_root = CertifiedIssuer::self_signed(
        ca_params("Test EST Server Root"),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let mut sp = CertificateParams::new(Vec::<String>::new()).unwrap();
    sp.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = sp.signed_by(&server_key, &server_root).unwrap();
    let server_ca = dir.join("server-ca.pem");
    write(&server_ca, server_root.pem());

    // Manufacturer CA and one IDevID (subject serialNumber = device serial).
    let mfg = CertifiedIssuer::self_signed(
        ca_params("Test Manufacturer CA"),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let (ip, ik) = device("SN42");
    let idevid = ip.signed_by(&ik, &mfg).unwrap();
    let idevid_cert = dir.join("idevid.pem");
    let idevid_key = dir.join("idevid.key");
    write(&idevid_cert, idevid.pem());
    write(&idevid_key, ik.serialize_pem());

    // A device certificate from a CA the server does not trust.
    let rogue_ca =
        CertifiedIssuer::self_signed(ca_params("Rogue CA"), KeyPair::generate().unwrap()).unwrap();
    let (rp, rk) = device("SN42");
    let rogue = rp.signed_by(&rk, &rogue_ca).unwrap();
    let rogue_cert = dir.join("rogue.pem");
    let rogue_key = dir.join("rogue.key");
    write(&rogue_cert, rogue.pem());
    write(&rogue_key, rk.serialize_pem());

    // The issuing hierarchy (root → intermediate), like an ACME CA's.
    let issuing_root =
        CertifiedIssuer::self_signed(ca_params("Test Issuing Root"), KeyPair::generate().unwrap())
            .unwrap();
    let issuing = CertifiedIssuer::signed_by(
        ca_params("Test Issuing Intermediate"),
        KeyPair::generate().unwrap(),
        &issuing_root,
    )
    .unwrap();
    let issuing_root_pem = dir.join("issuing-root.pem");
    write(&issuing_root_pem, issuing_root.pem());

    Pki {
        server_ca,
        idevid_cert,
        idevid_key,
        rogue_cert,
        rogue_key,
        issuing_root_pem,
        server_chain: vec![server_cert.der().clone()],
        server_key: server_key.serialize_der(),
        client_roots: vec![mfg.der().clone(), issuing_root.der().clone()],
        issuing_root_der: issuing_root.der().to_vec(),
        issuing,
        dir,
    }
}

/// A certs-only PKCS#7 as the base64 body EST sends, made by `openssl crl2pkcs7`.
fn openssl_certs_only(dir: &Path, ders: &[Vec<u8>]) -> String {
    let pem = estuary_proto::pem::encode_certs(ders);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let f = dir.join(format!("p7in-{n}.pem"));
    write(&f, pem);
    let out = std::process::Command::new("openssl")
        .args(["crl2pkcs7", "-nocrl", "-outform", "PEM", "-certfile"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| format!("{l}\n"))
        .collect()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct State {
    pki: Pki,
    /// simpleenroll POSTs seen (the first is answered 202).
    enrolls: AtomicUsize,
    /// TLS connections accepted.
    connections: AtomicUsize,
    /// Certificates issued.
    issued: AtomicUsize,
    /// (method, path, content-type, content-transfer-encoding) of every request.
    seen: Mutex<Vec<(String, String, String, String)>>,
}

fn text(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(reason.to_owned())))
        .unwrap()
}

fn est_body(ct: &str, b64: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", ct)
        .header("content-transfer-encoding", "base64")
        .body(Full::new(Bytes::from(b64)))
        .unwrap()
}

fn device_name(idevid: &CertSummary) -> Option<DeviceName> {
    let serial = DeviceSerial::parse(idevid.subject_serial_number()?).ok()?;
    DeviceName::new(&serial, &ParentDomain::parse(PARENT).ok()?).ok()
}

/// Issues a certificate for a checked CSR from the intermediate; RFC 7030 §4.2.3 answer.
fn issue(state: &State, csr_der: &[u8]) -> Response<Full<Bytes>> {
    let mut params = match CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("CSR unusable: {e}")),
    };
    params.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&state.pki.issuing).unwrap();
    state.issued.fetch_add(1, Ordering::SeqCst);
    est_body(
        PKCS7_CERTS_ONLY,
        openssl_certs_only(&state.pki.dir, &[cert.der().to_vec()]),
    )
}

async fn read_csr(req: Request<hyper::body::Incoming>) -> Result<Vec<u8>, Response<Full<Bytes>>> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !ct.eq_ignore_ascii_case("application/pkcs10") {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/pkcs10",
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| text(StatusCode::BAD_REQUEST, "bad body"))?
        .to_bytes();
    estuary_proto::base64::decode(&body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, &format!("body is not base64: {e}")))
}

async fn handle(
    state: Arc<State>,
    peer: Vec<CertificateDer<'static>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.seen.lock().unwrap().push((
        req.method().to_string(),
        req.uri().path().to_owned(),
        header("content-type"),
        header("content-transfer-encoding"),
    ));
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/.well-known/est/") else {
        return Ok(text(StatusCode::NOT_FOUND, "not an EST path"));
    };
    let (label, op) = rest
        .rsplit_once('/')
        .map_or((None, rest), |(l, o)| (Some(l), o));
    if req.method() == hyper::Method::GET && op == "cacerts" {
        // RFC 7030 §4.1.3: "application/pkcs7-mime", the CA certificates; no client
        // authentication needed (§4.1.1). Under the label "learning" it plays an RA on
        // draft-ietf-acme-integrations-17 that learns its CA's intermediate from the first
        // issued chain: the root alone until then.
        let learning = label == Some("learning") && state.issued.load(Ordering::SeqCst) == 0;
        let ders = if learning {
            vec![state.pki.issuing_root_der.clone()]
        } else {
            vec![
                state.pki.issuing.der().to_vec(),
                state.pki.issuing_root_der.clone(),
            ]
        };
        return Ok(est_body(PKCS7, openssl_certs_only(&state.pki.dir, &ders)));
    }
    let Some(client) = peer.first().and_then(|c| CertSummary::from_der(c).ok()) else {
        return Ok(text(
            StatusCode::UNAUTHORIZED,
            "client certificate required",
        ));
    };
    Ok(match (req.method().as_str(), op) {
        ("GET", "csrattrs") => match device_name(&client) {
            Some(name) => {
                let attrs = estuary_proto::csrattrs::device_template(&name, &KeyPolicy::default());
                est_body(
                    "application/csrattrs",
                    estuary_proto::base64::encode(&attrs.to_der().unwrap()),
                )
            }
            None => Response::builder()
                .status(204)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        },
        ("POST", "simpleenroll") => {
            let Some(name) = device_name(&client) else {
                return Ok(text(StatusCode::FORBIDDEN, "not an IDevID"));
            };
            let der = match read_csr(req).await {
                Ok(d) => d,
                Err(resp) => return Ok(resp),
            };
            let csr = match estuary_proto::parse_and_verify(&der) {
                Ok(c) => c,
                Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &e.to_string())),
            };
            if let Err(e) = estuary_proto::check_enroll(&csr, &name, &KeyPolicy::default()) {
                return Ok(text(StatusCode::FORBIDDEN, &e.to_string()));
            }
            if label == Some("slow") {
                // Always pending; Retry-After as an HTTP-date (RFC 9110 §10.2.3).
                let when = SystemTime::now() + Duration::from_secs(3);
                return Ok(Response::builder()
                    .status(202)
                    .header("retry-after", httpdate::fmt_http_date(when))
                    .body(Full::new(Bytes::new()))
                    .unwrap());
            }
            if state.enrolls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(Response::builder()
                    .status(202)
                    .header("retry-after", "1")
                    .body(Full::new(Bytes::new()))
                    .unwrap());
            }
            issue(&state, &der)
        }
        ("POST", "simplereenroll") => {
            let der = match read_csr(req).await {
                Ok(d) => d,
                Err(resp) => return Ok(resp),
            };
            let csr = match estuary_proto::parse_and_verify(&der) {
                Ok(c) => c,
                Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &e.to_string())),
            };
            if let Err(e) = estuary_proto::check_reenroll(&csr, &client, &KeyPolicy::default()) {
                return Ok(text(StatusCode::FORBIDDEN, &e.to_string()));
            }
            issue(&state, &der)
        }
        _ => text(StatusCode::NOT_FOUND, "unknown EST operation"),
    })
}

async fn start(pki: Pki) -> (SocketAddr, Arc<State>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in &pki.client_roots {
        roots.add(r.clone()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    // RFC 7030 §4.1.1: /cacerts is served without client authentication; the other
    // operations answer 401 when no certificate was presented.
    .allow_unauthenticated()
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State {
        pki,
        enrolls: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        issued: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(<[_]>::to_vec)
                    .unwrap_or_default();
                let svc =
                    hyper::service::service_fn(move |req| handle(st.clone(), peer.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

async fn pledge(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_estuary-pledge"))
        .args(args)
        .output()
        .await
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// draft-ietf-acme-integrations-17: the enrolment answer is the certificate alone and the rest
/// of its chain is in `/cacerts`, which an RA may complete only once it learned its CA's
/// intermediate from that very issuance. The pledge builds `chain.pem` from `/cacerts` fetched
/// after the enrolment, so the chain is whole even though the first `/cacerts` had the root alone.
#[tokio::test]
async fn the_chain_comes_from_cacerts_fetched_after_the_enrolment() {
    let pki = make_pki("learn");
    let dir = pki.dir.clone();
    let (ca, cert, key, issuing_root) = (
        pki.server_ca.clone(),
        pki.idevid_cert.clone(),
        pki.idevid_key.clone(),
        pki.issuing_root_pem.clone(),
    );
    let (addr, state) = start(pki).await;
    let url = format!("https://{addr}/.well-known/est");
    let out = dir.join("learned");
    let o = pledge(&[
        "enroll",
        "--est-url",
        &url,
        "--label",
        "learning",
        "--server-ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--key",
        s(&key),
        "--out-dir",
        s(&out),
    ])
    .await;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("fetching cacerts… ok (1 certificate)"),
        "{err}"
    );
    assert!(
        err.contains("fetching cacerts… ok (2 certificates)"),
        "{err}"
    );
    let chain =
        estuary_proto::pem::decode_certs(&std::fs::read_to_string(out.join("chain.pem")).unwrap())
            .unwrap();
    assert_eq!(
        chain.len(),
        2,
        "leaf + the intermediate from the second /cacerts"
    );
    assert_eq!(chain[1], state.pki.issuing.der().to_vec());
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(&issuing_root),
        "-untrusted",
        s(&out.join("chain.pem")),
        s(&out.join("cert.pem")),
    ]);
    assert!(v.contains(": OK"), "{v}");
}

#[tokio::test]
async fn enroll_follows_202_then_reenrolls_with_the_ldevid() {
    let pki = make_pki("flow");
    let dir = pki.dir.clone();
    let (ca, cert, key, issuing_root) = (
        pki.server_ca.clone(),
        pki.idevid_cert.clone(),
        pki.idevid_key.clone(),
        pki.issuing_root_pem.clone(),
    );
    let (addr, state) = start(pki).await;
    let url = format!("https://{addr}/.well-known/est");

    // cacerts → PEM file holding exactly the two CA certificates, in the server's order.
    let cacerts_out = dir.join("ca-out.pem");
    let o = pledge(&[
        "cacerts",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--out",
        s(&cacerts_out),
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fetching cacerts… ok (2 certificates)"),
        "{}",
        stderr(&o)
    );
    let got =
        estuary_proto::pem::decode_certs(&std::fs::read_to_string(&cacerts_out).unwrap()).unwrap();
    assert_eq!(
        got,
        vec![
            state.pki.issuing.der().to_vec(),
            state.pki.issuing_root_der.clone()
        ]
    );

    // csrattrs → the device's name.
    let o = pledge(&[
        "csrattrs",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--key",
        s(&key),
    ])
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("dNSName: sn42.iot.example.test"), "{out}");
    assert!(out.contains("key: EC secp256r1"), "{out}");

    // enroll: 202 once (Retry-After: 1), then the certificate.
    let d1 = dir.join("ldevid");
    let o = pledge(&[
        "enroll",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--key",
        s(&key),
        "--out-dir",
        s(&d1),
        "--json",
    ])
    .await;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("enrolling… 202, retrying in 1 s"), "{err}");
    assert!(err.contains("enrolling… ok (1 certificate)"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["dns_names"],
        serde_json::json!(["sn42.iot.example.test"])
    );
    assert_eq!(state.enrolls.load(Ordering::SeqCst), 2);
    {
        let seen = state.seen.lock().unwrap();
        let posts: Vec<_> = seen.iter().filter(|r| r.0 == "POST").collect();
        assert_eq!(posts.len(), 2);
        for p in posts {
            assert_eq!(p.1, "/.well-known/est/simpleenroll");
            assert_eq!(p.2, "application/pkcs10");
            assert_eq!(p.3, "base64");
        }
    }
    // The files, checked with openssl.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d1.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let cert_pub = openssl(&["x509", "-in", s(&d1.join("cert.pem")), "-noout", "-pubkey"]);
    let key_pub = openssl(&["pkey", "-in", s(&d1.join("key.pem")), "-pubout"]);
    assert_eq!(cert_pub, key_pub, "cert.pem holds key.pem's public key");
    let san = openssl(&[
        "x509",
        "-in",
        s(&d1.join("cert.pem")),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(san.contains("DNS:sn42.iot.example.test"), "{san}");
    let serial = openssl(&["x509", "-in", s(&d1.join("cert.pem")), "-noout", "-serial"]);
    assert_eq!(
        serial.trim().trim_start_matches("serial="),
        summary["serial"].as_str().unwrap()
    );
    let chain =
        estuary_proto::pem::decode_certs(&std::fs::read_to_string(d1.join("chain.pem")).unwrap())
            .unwrap();
    assert_eq!(chain.len(), 2, "leaf + intermediate");
    assert_eq!(chain[1], state.pki.issuing.der().to_vec());
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(&issuing_root),
        "-untrusted",
        s(&d1.join("chain.pem")),
        s(&d1.join("cert.pem")),
    ]);
    assert!(v.contains(": OK"), "{v}");
    assert_eq!(
        estuary_proto::pem::decode_certs(&std::fs::read_to_string(d1.join("cacerts.pem")).unwrap())
            .unwrap()
            .len(),
        2
    );

    // reenroll with the LDevID (its chain.pem is sent, the server trusts only the root).
    let d2 = dir.join("ldevid2");
    let o = pledge(&[
        "reenroll",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--cert",
        s(&d1.join("cert.pem")),
        "--key",
        s(&d1.join("key.pem")),
        "--out-dir",
        s(&d2),
    ])
    .await;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("re-enrolling… ok"), "{err}");
    let subj = |p: &Path| {
        openssl(&[
            "x509",
            "-in",
            s(p),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ])
    };
    assert_eq!(subj(&d1.join("cert.pem")), subj(&d2.join("cert.pem")));
    assert_ne!(
        openssl(&["pkey", "-in", s(&d2.join("key.pem")), "-pubout"]),
        key_pub,
        "re-enrolment uses a new key"
    );
    let posts: Vec<String> = state
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "POST")
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(posts.last().unwrap(), "/.well-known/est/simplereenroll");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn refusals_and_failures_are_named() {
    let pki = make_pki("fail");
    let dir = pki.dir.clone();
    let (ca, cert, key) = (
        pki.server_ca.clone(),
        pki.idevid_cert.clone(),
        pki.idevid_key.clone(),
    );
    let (rogue_cert, rogue_key, wrong_ca) = (
        pki.rogue_cert.clone(),
        pki.rogue_key.clone(),
        pki.issuing_root_pem.clone(),
    );
    let (addr, _state) = start(pki).await;
    let url = format!("https://{addr}/.well-known/est");
    let out = dir.join("out");

    // A CSR for another name: 403 with the server's reason, exit 3.
    let o = pledge(&[
        "enroll",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--key",
        s(&key),
        "--out-dir",
        s(&out),
        "--dns-name",
        "other.iot.example.test",
    ])
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("error: enrolment refused (403): "), "{err}");
    assert!(err.contains("other.iot.example.test"), "{err}");
    assert!(!out.join("key.pem").exists(), "nothing written on failure");

    // A client certificate from an untrusted CA.
    let o = pledge(&[
        "csrattrs",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--cert",
        s(&rogue_cert),
        "--key",
        s(&rogue_key),
    ])
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the server refused our client certificate"),
        "{}",
        stderr(&o)
    );

    // The wrong trust anchor for the server.

    let o = pledge(&["cacerts", "--est-url", &url, "--server-ca", s(&wrong_ca)]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did not verify against --server-ca"),
        "{}",
        stderr(&o)
    );

    // Always 202 (HTTP-date Retry-After) under the "slow" label: give up at --max-wait, exit 5.
    let o = pledge(&[
        "enroll",
        "--est-url",
        &url,
        "--label",
        "slow",
        "--server-ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--key",
        s(&key),
        "--out-dir",
        s(&out),
        "--max-wait",
        "2",
    ])
    .await;
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("still pending after"), "{}", stderr(&o));

    // Usage errors are clap's (exit 2); a bad label is ours.
    let o = pledge(&["enroll", "--est-url", &url]).await;
    assert_eq!(o.status.code(), Some(2));
    let o = pledge(&[
        "cacerts",
        "--est-url",
        &url,
        "--server-ca",
        s(&ca),
        "--label",
        "a/b",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid EST label"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The library's [`EstSession`] (what `cargo xtask bench` enrols with): requests on one
/// kept-alive connection, or each on a new TLS connection; status, Retry-After and timing.
#[tokio::test]
async fn session_keeps_one_connection_or_opens_one_per_request() {
    let pki = make_pki("session");
    let dir = pki.dir.clone();
    let identity = Identity {
        cert: pki.idevid_cert.clone(),
        key: pki.idevid_key.clone(),
        extra_chain: Vec::new(),
    };
    let config = transport::client_config(&pki.server_ca, Some(&identity)).unwrap();
    let (addr, state) = start(pki).await;
    let connections = || state.connections.load(Ordering::SeqCst);
    let client = EstClient::new(
        &format!("https://{addr}"),
        None,
        None,
        config,
        Duration::from_secs(20),
    )
    .unwrap();
    let mut session = EstSession::new(client);
    assert!(!session.is_connected());

    let name = format!("sn42.{PARENT}");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.clone()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, &name);
    let csr = CsrBody::new(params.serialize_request(&key).unwrap().der());
    let post = |how| (Exchange::Enroll, EstOperation::SimpleEnroll, how);

    // The first POST opens the connection and is answered 202, Retry-After: 1.
    let (ex, op, how) = post(ConnectionUse::KeepAlive);
    let r = session.post_csr(ex, op, &csr, how).await.unwrap();
    assert_eq!(r.answer.status, 202);
    assert_eq!(
        r.answer.retry_after_delay(SystemTime::now()),
        Some(Duration::from_secs(1))
    );
    assert!(r.new_connection);
    assert!(r.elapsed > Duration::ZERO);
    assert!(session.is_connected());

    // The same CSR three more times, on that connection: each issued.
    for _ in 0..3 {
        let r = session.post_csr(ex, op, &csr, how).await.unwrap();
        assert_eq!(r.answer.status, 200, "{:?}", r.answer);
        assert!(!r.new_connection);
        assert_eq!(
            est::certs_only_body(Exchange::Enroll, &r.answer)
                .unwrap()
                .len(),
            1
        );
    }
    assert_eq!(connections(), 1);

    // A new TLS connection for each request: the kept-alive one is replaced, none is kept.
    let (ex, op, how) = post(ConnectionUse::New);
    for n in 0..2 {
        let r = session.post_csr(ex, op, &csr, how).await.unwrap();
        assert_eq!(r.answer.status, 200);
        assert!(r.new_connection);
        assert!(!session.is_connected());
        assert_eq!(connections(), 2 + n);
    }

    // GET keeps alive too; after close() the next request opens a connection again.
    for (how, opens) in [
        (ConnectionUse::KeepAlive, true),
        (ConnectionUse::KeepAlive, false),
    ] {
        let r = session
            .get(Exchange::CaCerts, EstOperation::CaCerts, how)
            .await
            .unwrap();
        assert_eq!(r.answer.status, 200);
        assert_eq!(r.new_connection, opens);
    }
    assert_eq!(connections(), 4);
    session.close();
    assert!(!session.is_connected());
    let r = session
        .get(
            Exchange::CaCerts,
            EstOperation::CaCerts,
            ConnectionUse::KeepAlive,
        )
        .await
        .unwrap();
    assert!(r.new_connection);
    assert_eq!(connections(), 5);

    // Every POST carried the EST headers and the one body.
    {
        let seen = state.seen.lock().unwrap();
        let posts: Vec<_> = seen.iter().filter(|r| r.0 == "POST").collect();
        assert_eq!(posts.len(), 6);
        for p in posts {
            assert_eq!(p.1, "/.well-known/est/simpleenroll");
            assert_eq!(p.2, "application/pkcs10");
            assert_eq!(p.3, "base64");
        }
    }

    // The client's one-shot requests still open a connection each.
    let client = session.client().clone();
    for _ in 0..2 {
        let a = client
            .get(Exchange::CaCerts, EstOperation::CaCerts)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
    assert_eq!(connections(), 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A refused client certificate is named as such on a session's connection too.
#[tokio::test]
async fn session_names_a_refused_client_certificate() {
    let pki = make_pki("session-rogue");
    let dir = pki.dir.clone();
    let identity = Identity {
        cert: pki.rogue_cert.clone(),
        key: pki.rogue_key.clone(),
        extra_chain: Vec::new(),
    };
    let config = transport::client_config(&pki.server_ca, Some(&identity)).unwrap();
    let (addr, _state) = start(pki).await;
    let client = EstClient::new(
        &format!("https://{addr}"),
        None,
        None,
        config,
        Duration::from_secs(20),
    )
    .unwrap();
    let mut session = EstSession::new(client);
    for how in [ConnectionUse::KeepAlive, ConnectionUse::New] {
        let e = session
            .get(Exchange::CsrAttrs, EstOperation::CsrAttrs, how)
            .await
            .unwrap_err();
        assert!(
            matches!(e, estuary_pledge::PledgeError::ClientCertRefused { .. }),
            "{e:?}"
        );
        assert!(!session.is_connected());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
