//! `estuary-pledge teap`: enrolment over EAP-TEAP (RFC 9930), acting as peer and NAS at once —
//! RADIUS Access-Requests with EAP-Message straight to the TEAP server. The peer itself lives in
//! the `estuary-teap` crate (`estuary_teap::peer`), beside the server's session and tunnel it is
//! tested against; this module turns its outcome into files.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estuary_teap::peer::{self, csr_from_attrs, PeerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the `teap` command needs.
pub struct TeapOptions {
    /// The TEAP server's RADIUS address.
    pub radius: SocketAddr,
    /// The RADIUS shared secret.
    pub secret: String,
    /// The outer identity (User-Name).
    pub identity: String,
    /// Client certificate (IDevID, or LDevID for renewal) and key.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Trust anchors for the TEAP server's certificate.
    pub server_ca: PathBuf,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// TLS octets per EAP-Response.
    pub fragment_size: usize,
    /// Where to write key.pem, cert.pem, chain.pem and (when the server answers the
    /// Trusted-Server-Root request) acme-roots.pem.
    pub out_dir: PathBuf,
}

/// Why `teap` failed: (message, exit code as for EST: 3 refused, 4 network/TLS, 1 other).
pub type TeapFailure = (String, u8);

/// Runs one TEAP authentication with enrolment and writes the results.
pub async fn run(o: &TeapOptions) -> Result<String, TeapFailure> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let local = |m: String| (m, 1u8);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&o.server_ca)
        .map_err(|e| local(format!("--server-ca {}: {e}", o.server_ca.display())))?
    {
        let c = c.map_err(|e| local(format!("--server-ca: {e}")))?;
        roots
            .add(c)
            .map_err(|e| local(format!("--server-ca: {e}")))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&o.cert)
        .map_err(|e| local(format!("--cert {}: {e}", o.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| local(format!("--cert: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(&o.key)
        .map_err(|e| local(format!("--key {}: {e}", o.key.display())))?;
    let server_name = ServerName::try_from(o.server_name.clone())
        .map_err(|e| local(format!("--server-name: {e}")))?;
    let cfg = PeerConfig {
        server: o.radius,
        secret: o.secret.as_bytes().to_vec(),
        identity: o.identity.clone(),
        client: Some((chain, key)),
        server_roots: roots,
        server_name,
        fragment_size: o.fragment_size,
        tls13: true,
        radius_timeout: Duration::from_secs(3),
        request_trusted_roots: true,
        dangerous_first_phase2_reply: None,
    };
    let new_key: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&new_key);
    eprintln!("authenticating with EAP-TEAP at {} …", o.radius);
    let out = peer::run(
        &cfg,
        Some(Box::new(move |input| {
            let (csr, key_pem) = csr_from_attrs(input.attrs, Some(input.channel_binding))?;
            eprintln!("server asked for a CSR; sending one for a new key, bound to the tunnel");
            if let Ok(mut s) = slot.lock() {
                *s = Some(key_pem);
            }
            Ok(csr)
        })),
    )
    .await
    .map_err(|e| {
        let code = match e {
            peer::PeerError::Rejected { .. } => 3,
            peer::PeerError::Io(_) | peer::PeerError::NoReply(_) | peer::PeerError::Tunnel(_) => 4,
            _ => 1,
        };
        (format!("TEAP failed: {e}"), code)
    })?;
    if !out.mppe_keys_match {
        return Err(local(
            "the Access-Accept's MS-MPPE keys do not match the MSK this peer derived".into(),
        ));
    }
    eprintln!("Access-Accept; MSK agreed (MS-MPPE keys match)");
    // RFC 9930 §4.2.18: the ACME CA's trust anchor(s), asked for inside the authenticated
    // tunnel; kept for checking certificates the ACME CA issued (other devices' LDevIDs).
    if let Some(roots) = &out.trusted_server_roots {
        let ders = estuary_proto::pkcs7::decode_certs_only(roots)
            .map_err(|e| local(format!("Trusted-Server-Root PKCS#7: {e}")))?;
        write(
            &o.out_dir,
            "acme-roots.pem",
            estuary_proto::pem::encode_certs(&ders).as_bytes(),
            false,
        )?;
        eprintln!(
            "Trusted-Server-Root: {} ACME trust anchor(s) written to {}",
            ders.len(),
            o.out_dir.join("acme-roots.pem").display()
        );
    }
    let Some(p7) = out.pkcs7 else {
        return Ok("authenticated; the server sent no certificate".into());
    };
    let ders = estuary_proto::pkcs7::decode_certs_only(&p7)
        .map_err(|e| local(format!("PKCS#7 TLV: {e}")))?;
    let key_pem = new_key
        .lock()
        .ok()
        .and_then(|k| k.clone())
        .ok_or_else(|| local("a certificate came back but no CSR was sent".into()))?;
    let leaf = ders
        .first()
        .ok_or_else(|| local("the PKCS#7 TLV holds no certificate".into()))?;
    write(&o.out_dir, "key.pem", key_pem.as_bytes(), true)?;
    write(
        &o.out_dir,
        "cert.pem",
        estuary_proto::pem::encode_certs(std::slice::from_ref(leaf)).as_bytes(),
        false,
    )?;
    write(
        &o.out_dir,
        "chain.pem",
        estuary_proto::pem::encode_certs(&ders).as_bytes(),
        false,
    )?;
    Ok(format!(
        "enrolled over TEAP: {} ({} certificates)",
        o.out_dir.join("cert.pem").display(),
        ders.len()
    ))
}

fn write(dir: &Path, name: &str, data: &[u8], private: bool) -> Result<(), TeapFailure> {
    std::fs::create_dir_all(dir).map_err(|e| (format!("{}: {e}", dir.display()), 1))?;
    crate::flow::write_file(&dir.join(name), data, private).map_err(|e| (e.to_string(), 1))
}
