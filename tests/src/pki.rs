//! The dev/test PKI: the Envoy listener's CA and certificate, the manufacturer CA that issues
//! IDevIDs (subject serialNumber = device serial), and IDevIDs on demand. Files are PEM.
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A CA: its certificate PEM and key, able to issue.
pub struct Ca {
    /// Certificate file.
    pub cert_path: PathBuf,
    /// Private key file (PKCS#8 PEM).
    pub key_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and key written to disk.
pub struct Issued {
    /// Certificate file (leaf only).
    pub cert_path: PathBuf,
    /// Private key file.
    pub key_path: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `cn`, written as `<dir>/<stem>.pem` and `<stem>.key`.
    pub fn create(dir: &Path, stem: &str, cn: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Estuary dev");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        write_key(&key_path, &key.serialize_pem())?;
        Ok(Self {
            cert_path,
            key_path,
            issuer: Issuer::new(params, key),
        })
    }

    /// A TLS server certificate for `localhost` and 127.0.0.1.
    pub fn issue_server(&self, dir: &Path, stem: &str) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, stem, &cert.pem(), &key.serialize_pem())
    }

    /// A TLS server certificate for `localhost` and 127.0.0.1 that is also a BRSKI registrar
    /// certificate: serverAuth + id-kp-cmcRA (RFC 8995 §2.5.3, RFC 6402 §2.10).
    pub fn issue_registrar(&self, dir: &Path, stem: &str) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 28]),
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, stem, &cert.pem(), &key.serialize_pem())
    }

    /// A plain end-entity certificate named `cn` (digitalSignature), e.g. a voucher signer.
    pub fn issue_named(&self, dir: &Path, stem: &str, cn: &str) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, stem, &cert.pem(), &key.serialize_pem())
    }

    /// DER of an IDevID for device `serial` (as [`Ca::issue_idevid`], in memory; the key is
    /// thrown away): what a test puts in a forwarded-certificate header.
    pub fn idevid_der(&self, serial: &str) -> anyhow::Result<Vec<u8>> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(serial.try_into().context("serial must be printable")?),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params.signed_by(&key, &self.issuer)?.der().to_vec())
    }

    /// A client certificate with subject serialNumber `serial` (if any) and these dNSNames,
    /// clientAuth: e.g. what a manufacturer CA could issue to impersonate an LDevID.
    pub fn issue_client(
        &self,
        dir: &Path,
        stem: &str,
        serial: Option<&str>,
        dns_names: &[&str],
    ) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        if let Some(serial) = serial {
            params.distinguished_name.push(
                DnType::CustomDnType(vec![2, 5, 4, 5]),
                DnValue::PrintableString(serial.try_into().context("serial must be printable")?),
            );
        }
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, stem, &cert.pem(), &key.serialize_pem())
    }

    /// An IDevID for device `serial`: subject `serialNumber=<serial>, CN=<cn>`, clientAuth.
    pub fn issue_idevid(&self, dir: &Path, stem: &str, serial: &str) -> anyhow::Result<Issued> {
        self.issue_idevid_with_masa(dir, stem, serial, None)
    }

    /// An IDevID as [`Ca::issue_idevid`], carrying the id-pe-masa-url extension
    /// (1.3.6.1.5.5.7.1.32, RFC 8995 §2.3.2) when `masa_url` is given.
    pub fn issue_idevid_with_masa(
        &self,
        dir: &Path,
        stem: &str,
        serial: &str,
        masa_url: Option<&str>,
    ) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(serial.try_into().context("serial must be printable")?),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Estuary dev pledge {serial}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(url) = masa_url {
            // MASAURLSyntax ::= IA5String
            anyhow::ensure!(
                url.is_ascii() && url.len() < 128,
                "MASA URL must be short ASCII"
            );
            let mut value = vec![0x16, url.len() as u8];
            value.extend_from_slice(url.as_bytes());
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 32],
                    value,
                ));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        write_pair(dir, stem, &cert.pem(), &key.serialize_pem())
    }
}

fn write_pair(dir: &Path, stem: &str, cert: &str, key: &str) -> anyhow::Result<Issued> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))?;
    write_key(&key_path, key)?;
    Ok(Issued {
        cert_path,
        key_path,
    })
}

fn write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The dev stack's PKI, in one directory.
pub struct DevPki {
    /// Signs the Envoy listener's certificate (clients trust this: `ESTUARY_SERVER_CA`).
    pub server_ca: Ca,
    /// The Envoy listener's certificate.
    pub server: Issued,
    /// The manufacturer CA that issues IDevIDs.
    pub manufacturer: Ca,
    /// One ready IDevID (`ESTUARY_DEMO_CERT`/`KEY`).
    pub demo: Issued,
    /// The demo device's serial.
    pub demo_serial: String,
}

impl DevPki {
    /// Creates everything under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        Self::create_with_masa(dir, None)
    }

    /// Creates everything under `dir`; the demo IDevID names `masa_url` as its MASA. The
    /// listener certificate is also the BRSKI registrar certificate (serverAuth + cmcRA), and
    /// the server CA is the domain CA.
    pub fn create_with_masa(dir: &Path, masa_url: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let server_ca = Ca::create(dir, "server-ca", "Estuary dev server CA")?;
        let server = server_ca.issue_registrar(dir, "envoy-server")?;
        let manufacturer = Ca::create(dir, "manufacturer-ca", "Estuary dev manufacturer CA")?;
        let demo_serial = "DEMO-0001".to_string();
        let demo =
            manufacturer.issue_idevid_with_masa(dir, "demo-idevid", &demo_serial, masa_url)?;
        Ok(Self {
            server_ca,
            server,
            manufacturer,
            demo,
            demo_serial,
        })
    }
}
