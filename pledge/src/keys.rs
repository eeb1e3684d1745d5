//! Key generation for the pledge's new certificate.
//!
//! EC and Ed25519 keys come from rcgen (ring). ring cannot generate RSA keys, so RSA 2048 keys
//! are generated with the `rsa` crate and handed to rcgen as PKCS#8; ring signs with them.
use estuary_proto::csrattrs::CsrAttrs;
use estuary_proto::oids;
use estuary_proto::KeyKind;
use rcgen::KeyPair;

use crate::error::PledgeError;

/// The key types the pledge can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 with SHA-256 (the default).
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256.
    Rsa2048,
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Rsa2048 => "RSA 2048",
        })
    }
}

impl KeyType {
    /// Preference order when the user does not choose.
    pub const PREFERENCE: [KeyType; 4] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
    ];

    /// The key type of an existing key, if it is one we can generate.
    pub fn of(kind: KeyKind) -> Option<KeyType> {
        match kind {
            KeyKind::EcdsaP256 => Some(KeyType::P256),
            KeyKind::EcdsaP384 => Some(KeyType::P384),
            KeyKind::Ed25519 => Some(KeyType::Ed25519),
            KeyKind::Rsa { bits: 2048 } => Some(KeyType::Rsa2048),
            KeyKind::Rsa { .. } => None,
        }
    }

    /// Whether a CSR attributes answer accepts this key type. An answer that names no key
    /// type at all accepts every type (RFC 7030 §4.5: attributes are hints).
    pub fn accepted_by(self, attrs: &CsrAttrs) -> bool {
        let curves = attrs.requested_curves();
        let rsa = attrs.requested_rsa_bits();
        let ed = attrs.mentions(oids::ED25519);
        let names_any =
            !curves.is_empty() || rsa.is_some() || ed || attrs.mentions(oids::RSA_ENCRYPTION);
        if !names_any {
            return true;
        }
        match self {
            KeyType::P256 => curves.contains(&oids::SECP256R1),
            KeyType::P384 => curves.contains(&oids::SECP384R1),
            KeyType::Ed25519 => ed,
            KeyType::Rsa2048 => {
                attrs.mentions(oids::RSA_ENCRYPTION) && rsa.is_none_or(|min| min <= 2048)
            }
        }
    }

    /// The type to use: the user's choice if given, else the first of [`Self::PREFERENCE`]
    /// that the server accepts (P-256 when it names none we know).
    pub fn choose(user: Option<KeyType>, attrs: &CsrAttrs) -> KeyType {
        user.unwrap_or_else(|| {
            Self::PREFERENCE
                .into_iter()
                .find(|k| k.accepted_by(attrs))
                .unwrap_or(KeyType::P256)
        })
    }

    /// Generates a fresh key of this type.
    pub fn generate(self) -> Result<KeyPair, PledgeError> {
        let keygen = |e: rcgen::Error| PledgeError::KeyGen(e.to_string());
        match self {
            KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(keygen),
            KeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(keygen),
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(keygen),
            KeyType::Rsa2048 => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .map_err(|e| PledgeError::KeyGen(e.to_string()))?;
                let pkcs8 = key
                    .to_pkcs8_der()
                    .map_err(|e| PledgeError::KeyGen(e.to_string()))?;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).map_err(keygen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_proto::csrattrs::device_template;
    use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
    use estuary_proto::KeyPolicy;

    fn name() -> DeviceName {
        DeviceName::new(
            &DeviceSerial::parse("SN1").unwrap(),
            &ParentDomain::parse("iot.example.test").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn choice_follows_csrattrs() {
        let all = device_template(&name(), &KeyPolicy::default());
        assert_eq!(KeyType::choose(None, &all), KeyType::P256);
        for k in KeyType::PREFERENCE {
            assert!(k.accepted_by(&all), "{k}");
        }
        let p384_only = device_template(
            &name(),
            &KeyPolicy {
                rsa_min_bits: 1,
                rsa_max_bits: 0,
                allow_p256: false,
                allow_p384: true,
                allow_ed25519: false,
            },
        );
        assert_eq!(KeyType::choose(None, &p384_only), KeyType::P384);
        assert!(!KeyType::Rsa2048.accepted_by(&p384_only));
        let rsa3072 = device_template(
            &name(),
            &KeyPolicy {
                rsa_min_bits: 3072,
                rsa_max_bits: 4096,
                allow_p256: false,
                allow_p384: false,
                allow_ed25519: true,
            },
        );
        assert_eq!(KeyType::choose(None, &rsa3072), KeyType::Ed25519);
        assert!(!KeyType::Rsa2048.accepted_by(&rsa3072));
        // The user's choice wins.
        assert_eq!(
            KeyType::choose(Some(KeyType::Rsa2048), &p384_only),
            KeyType::Rsa2048
        );
        // No key hints at all: default P-256.
        assert_eq!(KeyType::choose(None, &CsrAttrs::default()), KeyType::P256);
    }
}
