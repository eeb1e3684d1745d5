//! Certificates from a PEM file named in the configuration.
use std::path::{Path, PathBuf};

use estuary_proto::pem::PemError;

/// Why a PEM file gave no certificates; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not PEM, or a block is not base64.
    #[error("{}: {detail}", .path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// It holds no `CERTIFICATE` block.
    #[error("{} holds no certificate", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Every certificate in the file (DER, in file order); at least one.
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, PemFileError> {
    let pem = std::fs::read_to_string(path).map_err(|source| PemFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = estuary_proto::pem::decode_certs(&pem).map_err(|e| match e {
        PemError::NoCertificates => PemFileError::Empty {
            path: path.to_path_buf(),
        },
        other => PemFileError::NotPem {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    })?;
    if certs.is_empty() {
        return Err(PemFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The file's first certificate.
pub fn first_cert(path: &Path) -> Result<Vec<u8>, PemFileError> {
    read_certs(path).map(|mut certs| certs.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_the_file() {
        let dir = std::env::temp_dir().join(format!("estuary-pem-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let missing = dir.join("missing.pem");
        let e = read_certs(&missing).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}", missing.display())),
            "{e}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let e = read_certs(&empty).expect_err("empty");
        assert_eq!(
            e.to_string(),
            format!("{} holds no certificate", empty.display())
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let two = dir.join("two.pem");
        std::fs::write(&two, format!("{}{}", cert.pem(), cert.pem())).expect("write");
        assert_eq!(read_certs(&two).expect("two").len(), 2);
        assert_eq!(first_cert(&two).expect("first"), cert.der().to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
