//! `estuary-pledge cloud` against registrars and EST servers written here
//! (draft-ietf-anima-brski-cloud-19 §3, §4): a cloud registrar whose certificate the implicit
//! trust anchors validate, a VAR registrar they also validate, an owner registrar they do not
//! (provisional TLS), and EST servers authenticated (or not) by the voucher's
//! pinned-domain-cert. Vouchers are minted per request from the pledge's own voucher request
//! (its nonce), signed by a test MASA.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estuary_proto::cms_signed::{self, ANIMA_JSON_VOUCHER};
use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
use estuary_proto::voucher::{self, Assertion, Voucher, VoucherRequest};
use estuary_proto::{CertSummary, KeyPolicy};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const SERIAL: &str = "SN77";
const PARENT: &str = "owner.example.test";

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A TLS server identity for 127.0.0.1 issued by `by`: (certificate DER, PKCS#8 key DER).
fn server_cert(cn: &str, by: &Ca) -> (Vec<u8>, Vec<u8>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let kp = KeyPair::generate().unwrap();
    let cert = p.signed_by(&kp, by).unwrap();
    (cert.der().to_vec(), kp.serialize_der())
}

struct Pki {
    dir: PathBuf,
    /// Implicit trust anchors: the manufacturer's cloud CA.
    cloud_ca: Ca,
    cloud_ca_pem: PathBuf,
    /// The owner's domain CA: the voucher's pinned-domain-cert.
    domain_ca: Ca,
    domain_ca_pem: PathBuf,
    /// Someone else's CA.
    rogue_ca: Ca,
    masa_signer: Vec<u8>,
    masa_key: Vec<u8>,
    masa_ca_pem: PathBuf,
    mfg_ca: Vec<u8>,
    idevid_cert: PathBuf,
    idevid_key: PathBuf,
}

fn make_pki(tag: &str) -> Arc<Pki> {
    let dir = std::env::temp_dir().join(format!("pledge-cloud-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, data: String| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let cloud_ca = ca("manufacturer cloud CA");
    let domain_ca = ca("owner domain CA");
    let rogue_ca = ca("rogue CA");
    let masa_ca = ca("MASA CA");
    let mut sp = CertificateParams::new(Vec::<String>::new()).unwrap();
    sp.distinguished_name
        .push(DnType::CommonName, "MASA signer");
    let masa_kp = KeyPair::generate().unwrap();
    let masa_signer = sp.signed_by(&masa_kp, &masa_ca).unwrap().der().to_vec();
    let mfg = ca("manufacturer IDevID CA");
    let mut ip = CertificateParams::new(Vec::<String>::new()).unwrap();
    ip.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(SERIAL.try_into().unwrap()),
    );
    ip.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let ik = KeyPair::generate().unwrap();
    let idevid = ip.signed_by(&ik, &mfg).unwrap();
    Arc::new(Pki {
        cloud_ca_pem: write("cloud-ca.pem", cloud_ca.pem()),
        domain_ca_pem: write("domain-ca.pem", domain_ca.pem()),
        masa_ca_pem: write("masa-ca.pem", masa_ca.pem()),
        idevid_cert: write("idevid.pem", idevid.pem()),
        idevid_key: write("idevid.key", ik.serialize_pem()),
        mfg_ca: mfg.der().to_vec(),
        masa_signer,
        masa_key: masa_kp.serialize_der(),
        cloud_ca,
        domain_ca,
        rogue_ca,
        dir,
    })
}

/// What a server answers to requestvoucher.
#[derive(Clone, Debug)]
enum Reply {
    /// A MASA-signed voucher for the request's nonce, pinning the owner's domain CA.
    Voucher { est_domain: Option<String> },
    /// 307 with this Location.
    Redirect(String),
    /// This status, Retry-After and body.
    Status(u16, Option<&'static str>, &'static str),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct Server {
    addr: SocketAddr,
    cert: Vec<u8>,
    reply: Mutex<Reply>,
    seen: Mutex<Vec<Seen>>,
    pki: Arc<Pki>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn set(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// The voucher requests received: (nonce, proximity-registrar-cert).
    fn voucher_requests(&self) -> Vec<(String, Vec<u8>)> {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with("/requestvoucher"))
            .map(|s| {
                let signed = cms_signed::verify(&s.body, ANIMA_JSON_VOUCHER).unwrap();
                let vr = VoucherRequest::from_json(&signed.content).unwrap();
                assert_eq!(vr.assertion, Some(Assertion::Proximity));
                assert_eq!(vr.serial_number.as_deref(), Some(SERIAL));
                let cert = vr.proximity_registrar_cert_der().unwrap();
                (vr.nonce.unwrap(), cert)
            })
            .collect()
    }

    /// The JSON bodies posted to `op` (voucher_status, enrollstatus).
    fn statuses(&self, op: &str) -> Vec<serde_json::Value> {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with(&format!("/{op}")))
            .map(|s| serde_json::from_slice(&s.body).unwrap())
            .collect()
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()))
        .unwrap()
}

fn voucher_for(pki: &Pki, pvr: &[u8], est_domain: Option<String>) -> Response<Full<Bytes>> {
    let Ok(signed) = cms_signed::verify(pvr, ANIMA_JSON_VOUCHER) else {
        return respond(400, "voucher request is not CMS");
    };
    let Ok(vr) = VoucherRequest::from_json(&signed.content) else {
        return respond(400, "voucher request is not JSON");
    };
    let v = Voucher {
        assertion: Some(Assertion::Logged),
        serial_number: vr.serial_number.unwrap_or_default(),
        nonce: vr.nonce,
        pinned_domain_cert: voucher::b64(pki.domain_ca.der()),
        created_on: Some(voucher::rfc3339(0)),
        expires_on: Some(voucher::rfc3339(4_000_000_000)),
        est_domain,
        ..Default::default()
    };
    let key = cms_signed::signing_key_from_pkcs8_der(&pki.masa_key).unwrap();
    let cms = cms_signed::sign(
        ANIMA_JSON_VOUCHER,
        &v.to_json().unwrap(),
        &pki.masa_signer,
        &[],
        &key,
    )
    .unwrap();
    Response::builder()
        .status(200)
        .header("content-type", voucher::CT_VOUCHER_CMS_JSON)
        .body(Full::new(Bytes::from(cms)))
        .unwrap()
}

fn est_body(ct: &str, der: &[u8]) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", ct)
        .header("content-transfer-encoding", "base64")
        .body(Full::new(Bytes::from(estuary_proto::base64::encode(der))))
        .unwrap()
}

/// Minimal RFC 7030 server: cacerts, csrattrs (the device template), simpleenroll issued by
/// the owner's domain CA.
fn est(pki: &Pki, client: Option<&CertSummary>, op: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let name = client
        .and_then(|c| c.subject_serial_number())
        .and_then(|s| DeviceSerial::parse(s).ok())
        .and_then(|s| DeviceName::new(&s, &ParentDomain::parse(PARENT).ok()?).ok());
    match (op, name) {
        ("cacerts", _) => est_body(
            "application/pkcs7-mime",
            &estuary_proto::pkcs7::encode_certs_only(&[pki.domain_ca.der().to_vec()]).unwrap(),
        ),
        ("csrattrs", Some(name)) => est_body(
            "application/csrattrs",
            &estuary_proto::csrattrs::device_template(&name, &KeyPolicy::default())
                .to_der()
                .unwrap(),
        ),
        ("simpleenroll", Some(_)) => {
            let Ok(der) = estuary_proto::base64::decode(body) else {
                return respond(400, "not base64");
            };
            let Ok(mut csr) = CertificateSigningRequestParams::from_der(&der.into()) else {
                return respond(400, "not a CSR");
            };
            csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = csr.signed_by(&pki.domain_ca).unwrap();
            est_body(
                "application/pkcs7-mime; smime-type=certs-only",
                &estuary_proto::pkcs7::encode_certs_only(&[cert.der().to_vec()]).unwrap(),
            )
        }
        (_, None) => respond(401, "IDevID required"),
        _ => respond(404, "unknown EST operation"),
    }
}

async fn handle(
    server: Arc<Server>,
    client: Option<CertSummary>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    server.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
    });
    if let Some(op) = path.strip_prefix("/.well-known/est/") {
        return Ok(est(&server.pki, client.as_ref(), op, &body));
    }
    let op = path.rsplit('/').next().unwrap_or_default();
    let reply = server.reply.lock().unwrap().clone();
    Ok(match (method.as_str(), op, reply) {
        ("POST", "requestvoucher", Reply::Voucher { est_domain }) => {
            voucher_for(&server.pki, &body, est_domain)
        }
        ("POST", "requestvoucher", Reply::Redirect(location)) => Response::builder()
            .status(307)
            .header("location", location)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        ("POST", "requestvoucher", Reply::Status(status, retry_after, text)) => {
            let mut b = Response::builder().status(status);
            if let Some(r) = retry_after {
                b = b.header("retry-after", r);
            }
            b.body(Full::new(Bytes::from(text))).unwrap()
        }
        ("POST", "voucher_status" | "enrollstatus", _) => respond(200, ""),
        _ => respond(404, "no such resource"),
    })
}

/// A TLS server (client certificate from the manufacturer's IDevID CA required) with `cert`.
async fn start(pki: &Arc<Pki>, (cert, key): (Vec<u8>, Vec<u8>), reply: Reply) -> Arc<Server> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.mfg_ca.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Arc::new(Server {
        addr: listener.local_addr().unwrap(),
        cert,
        reply: Mutex::new(reply),
        seen: Mutex::new(Vec::new()),
        pki: Arc::clone(pki),
    });
    let s = Arc::clone(&server);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| CertSummary::from_der(c).ok());
                let svc =
                    hyper::service::service_fn(move |req| handle(s.clone(), client.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    server
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn pledge_cloud(pki: &Pki, cloud: &Server, out: &Path, extra: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_estuary-pledge"))
        .args([
            "cloud",
            "--cloud-url",
            &cloud.url("/.well-known/brski"),
            "--cloud-ca",
            s(&pki.cloud_ca_pem),
            "--masa-ca",
            s(&pki.masa_ca_pem),
            "--cert",
            s(&pki.idevid_cert),
            "--key",
            s(&pki.idevid_key),
            "--out-dir",
            s(out),
            "--timeout",
            "10",
            "--json",
        ])
        .args(extra)
        .output()
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn summary(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "pledge failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("JSON summary")
}

/// §4.2 (voucher with est-domain): the cloud registrar answers with a voucher; EST goes to
/// est-domain over TLS authenticated by pinned-domain-cert; statuses go to the cloud.
#[tokio::test]
async fn est_domain_voucher_then_est_at_the_owner() {
    let pki = make_pki("estdomain");
    let cloud = start(
        &pki,
        server_cert("cloud", &pki.cloud_ca),
        Reply::Status(500, None, "not set"),
    )
    .await;
    let est = start(
        &pki,
        server_cert("owner EST", &pki.domain_ca),
        Reply::Status(404, None, "EST only"),
    )
    .await;
    cloud.set(Reply::Voucher {
        est_domain: Some(est.url("/")),
    });
    let out = pki.dir.join("out");
    let o = pledge_cloud(&pki, &cloud, &out, &[]).await;
    let j = summary(&o);
    assert_eq!(j["path"], "est-domain");
    assert_eq!(j["redirects"], serde_json::json!([]));
    assert_eq!(
        j["registrar"],
        cloud.url("/.well-known/brski/requestvoucher")
    );
    assert_eq!(j["registrar_authenticated"], true);
    assert_eq!(j["est_url"], est.url("/.well-known/est"));
    assert_eq!(j["voucher"]["serial"], SERIAL);
    assert!(out.join("cert.pem").is_file());
    assert!(out.join("voucher.cms").is_file());
    let pinned = std::fs::read_to_string(out.join("pinned-domain.pem")).unwrap();
    assert_eq!(
        estuary_proto::pem::decode_certs(&pinned).unwrap(),
        vec![pki.domain_ca.der().to_vec()]
    );
    // One voucher request, naming the cloud registrar's certificate.
    let vrs = cloud.voucher_requests();
    assert_eq!(vrs.len(), 1);
    assert_eq!(vrs[0].1, cloud.cert);
    assert_eq!(cloud.statuses("voucher_status")[0]["status"], true);
    assert_eq!(cloud.statuses("enrollstatus")[0]["status"], true);
    let ops: Vec<String> = est.seen().iter().map(|s| s.path.clone()).collect();
    assert!(ops.iter().any(|p| p.ends_with("/csrattrs")), "{ops:?}");
    assert!(ops.iter().any(|p| p.ends_with("/simpleenroll")), "{ops:?}");
}

/// §4.2: an EST server that pinned-domain-cert does not authenticate gets nothing: no
/// csrattrs, no CSR; the cloud registrar hears voucher_status false.
#[tokio::test]
async fn est_server_not_pinned_gets_nothing() {
    let pki = make_pki("notpinned");
    let cloud = start(
        &pki,
        server_cert("cloud", &pki.cloud_ca),
        Reply::Status(500, None, "not set"),
    )
    .await;
    let rogue = start(
        &pki,
        server_cert("rogue EST", &pki.rogue_ca),
        Reply::Status(404, None, ""),
    )
    .await;
    cloud.set(Reply::Voucher {
        est_domain: Some(rogue.url("")),
    });
    let out = pki.dir.join("out");
    let o = pledge_cloud(&pki, &cloud, &out, &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not authenticated by the voucher's pinned-domain-cert"),
        "{}",
        stderr(&o)
    );
    assert!(rogue.seen().is_empty(), "{:?}", rogue.seen());
    let vs = cloud.statuses("voucher_status");
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0]["status"], false);
    assert!(!out.join("cert.pem").exists());
}

/// §4.1: cloud → 307 → VAR registrar (implicit anchors validate it) → 307 → owner registrar
/// (they do not: provisional TLS) → voucher without est-domain → RFC 8995 there.
#[tokio::test]
async fn redirects_to_the_owner_registrar() {
    let pki = make_pki("redirect");
    let cloud = start(
        &pki,
        server_cert("cloud", &pki.cloud_ca),
        Reply::Status(500, None, ""),
    )
    .await;
    let var = start(
        &pki,
        server_cert("VAR", &pki.cloud_ca),
        Reply::Status(500, None, ""),
    )
    .await;
    let owner = start(
        &pki,
        server_cert("owner registrar", &pki.domain_ca),
        Reply::Voucher { est_domain: None },
    )
    .await;
    let var_rv = var.url("/tenant/brski/requestvoucher");
    let owner_rv = owner.url("/.well-known/brski/requestvoucher");
    cloud.set(Reply::Redirect(var_rv.clone()));
    var.set(Reply::Redirect(owner_rv.clone()));
    let out = pki.dir.join("out");
    let o = pledge_cloud(&pki, &cloud, &out, &[]).await;
    let j = summary(&o);
    assert_eq!(j["path"], "redirect");
    assert_eq!(j["redirects"], serde_json::json!([var_rv, owner_rv]));
    assert_eq!(j["registrar"], owner_rv);
    assert_eq!(j["registrar_authenticated"], false);
    assert_eq!(j["est_url"], owner.url("/.well-known/est"));
    assert!(out.join("cert.pem").is_file());
    // A fresh voucher request at each hop, each naming that hop's certificate.
    let (c, v, w) = (
        cloud.voucher_requests(),
        var.voucher_requests(),
        owner.voucher_requests(),
    );
    assert_eq!((c.len(), v.len(), w.len()), (1, 1, 1));
    assert_eq!(c[0].1, cloud.cert);
    assert_eq!(v[0].1, var.cert);
    assert_eq!(w[0].1, owner.cert);
    assert!(c[0].0 != v[0].0 && v[0].0 != w[0].0 && c[0].0 != w[0].0);
    // Statuses go to the registrar that gave the voucher only.
    assert_eq!(owner.statuses("voucher_status")[0]["status"], true);
    assert_eq!(owner.statuses("enrollstatus")[0]["status"], true);
    assert!(cloud.statuses("voucher_status").is_empty());
    assert!(var.statuses("voucher_status").is_empty());
}

/// §3, §4.1: the refusals, each its own message and exit code.
#[tokio::test]
async fn refusals() {
    let pki = make_pki("refusals");
    let cloud = start(
        &pki,
        server_cert("cloud", &pki.cloud_ca),
        Reply::Status(500, None, ""),
    )
    .await;
    let var = start(
        &pki,
        server_cert("VAR", &pki.cloud_ca),
        Reply::Status(500, None, ""),
    )
    .await;
    let owner = start(
        &pki,
        server_cert("owner registrar", &pki.domain_ca),
        Reply::Status(500, None, ""),
    )
    .await;
    let stranger = start(
        &pki,
        server_cert("stranger registrar", &pki.rogue_ca),
        Reply::Voucher {
            est_domain: Some("https://127.0.0.1:9/".into()),
        },
    )
    .await;
    let out = pki.dir.join("out");
    let run = |extra: &'static [&'static str]| pledge_cloud(&pki, &cloud, &out, extra);
    let expect = |o: &Output, code: i32, text: &str| {
        assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
        assert!(stderr(o).contains(text), "wanted {text:?} in {}", stderr(o));
    };

    // A registrar reached over provisional TLS may not redirect.
    cloud.set(Reply::Redirect(
        owner.url("/.well-known/brski/requestvoucher"),
    ));
    owner.set(Reply::Redirect(
        var.url("/.well-known/brski/requestvoucher"),
    ));
    let o = run(&[]).await;
    expect(
        &o,
        1,
        "a registrar reached over provisional TLS may not redirect",
    );
    assert!(var.seen().is_empty());

    // Downgrade.
    cloud.set(Reply::Redirect("http://127.0.0.1:1/requestvoucher".into()));
    expect(&run(&[]).await, 1, "not https (downgrade)");

    // Loop: a relative Location naming the cloud registrar itself.
    cloud.set(Reply::Redirect("./requestvoucher".into()));
    expect(&run(&[]).await, 1, "visited before (redirect loop)");

    // The limit.
    cloud.set(Reply::Redirect(
        var.url("/.well-known/brski/requestvoucher"),
    ));
    var.set(Reply::Redirect(
        owner.url("/.well-known/brski/requestvoucher"),
    ));
    expect(
        &run(&["--max-redirects", "1"]).await,
        1,
        "more than 1 redirects",
    );

    // A provisional registrar's voucher must pin a certificate covering it, est-domain or not.
    cloud.set(Reply::Redirect(
        stranger.url("/.well-known/brski/requestvoucher"),
    ));
    expect(&run(&[]).await, 1, "not vouched for by pinned-domain-cert");

    // Unknown device, overload.
    cloud.set(Reply::Status(404, None, "serial not registered"));
    let o = run(&[]).await;
    expect(&o, 3, "the cloud registrar knows no owner for this device");
    expect(&o, 3, "serial not registered");
    cloud.set(Reply::Status(503, Some("60"), ""));
    expect(&run(&[]).await, 4, "retry after 60 s");
    cloud.set(Reply::Status(401, Some("5"), ""));
    expect(&run(&[]).await, 4, "retry after 5 s");

    // A cloud registrar the implicit anchors do not validate hears nothing.
    cloud.clear();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_estuary-pledge"))
        .args([
            "cloud",
            "--cloud-url",
            &cloud.url("/.well-known/brski"),
            "--cloud-ca",
            s(&pki.domain_ca_pem),
            "--masa-ca",
            s(&pki.masa_ca_pem),
            "--cert",
            s(&pki.idevid_cert),
            "--key",
            s(&pki.idevid_key),
            "--out-dir",
            s(&out),
        ])
        .output()
        .await
        .unwrap();
    expect(&o, 4, "does not validate against --cloud-ca");
    assert!(cloud.seen().is_empty());
    assert!(!out.join("voucher.cms").exists());
}
