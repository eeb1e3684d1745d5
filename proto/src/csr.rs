//! PKCS#10 certification requests (RFC 2986): decode, verify the self-signature, then read.
//!
//! [`parse_and_verify`] refuses anything it does not understand. The signature is checked over
//! the exact `certificationRequestInfo` bytes of the input before any field is read out. It then
//! reads the subject (attribute types, commonNames, serialNumbers), the CSR attribute types, the
//! challengePassword (TEAP's CSR channel binding, read through a typed accessor) and the
//! extensionRequest: every extension with its critical flag, the values of subjectAltName,
//! keyUsage, extKeyUsage and basicConstraints decoded (malformed ones, and an extension given
//! twice, are errors). What a device may ask for is [`crate::policy`]'s decision.
//!
//! Supported keys and signatures:
//! - RSA, modulus 2048..=8192 bits, PKCS#1 v1.5 with SHA-256, SHA-384 or SHA-512;
//! - ECDSA P-256 and P-384, each with ecdsa-with-SHA256 or ecdsa-with-SHA384;
//! - Ed25519.

use core::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::request::CertReqInfo;

use crate::derutil::{self, NameReadError};
use crate::oids;

/// Smallest RSA modulus accepted by the decoder (policy may ask for more).
pub const RSA_MIN_BITS: u32 = 2048;
/// Largest RSA modulus the decoder will do arithmetic with (bounds verification cost).
pub const RSA_MAX_BITS: u32 = 8192;

/// The kind of public key in a CSR or certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA with the given modulus length.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// Ed25519 (RFC 8410).
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::EcdsaP256 => f.write_str("P-256"),
            KeyKind::EcdsaP384 => f.write_str("P-384"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// Why a CSR was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The bytes are not a DER CertificationRequest.
    #[error("CSR is not valid DER: {0}")]
    Malformed(der::Error),
    /// Bytes follow the CertificationRequest.
    #[error("CSR is followed by trailing data")]
    TrailingData,
    /// The CertificationRequestInfo version is not v1(0).
    #[error("CSR version is not v1")]
    UnsupportedVersion,
    /// The public key algorithm is not one we accept.
    #[error("unsupported public key algorithm {oid}")]
    UnsupportedKey {
        /// The SubjectPublicKeyInfo algorithm OID.
        oid: ObjectIdentifier,
    },
    /// The elliptic curve is not P-256 or P-384.
    #[error("unsupported elliptic curve {oid}")]
    UnsupportedCurve {
        /// The namedCurve OID.
        oid: ObjectIdentifier,
    },
    /// Algorithm parameters are missing, present where they must be absent, or wrong.
    #[error("invalid algorithm parameters")]
    BadAlgorithmParameters,
    /// The public key bytes do not form a valid key.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// The RSA modulus is shorter than 2048 bits.
    #[error("RSA key of {bits} bits is too small (at least 2048 required)")]
    RsaKeyTooSmall {
        /// Modulus length.
        bits: u32,
    },
    /// The RSA modulus is longer than 8192 bits.
    #[error("RSA key of {bits} bits is too large (at most 8192 accepted)")]
    RsaKeyTooLarge {
        /// Modulus length.
        bits: u32,
    },
    /// The signature algorithm is not one we accept.
    #[error("unsupported signature algorithm {oid}")]
    UnsupportedSignatureAlgorithm {
        /// The signatureAlgorithm OID.
        oid: ObjectIdentifier,
    },
    /// The signature algorithm does not fit the key (e.g. an RSA signature with an EC key).
    #[error("signature algorithm {oid} does not match the {key} key")]
    SignatureAlgorithmMismatch {
        /// The key kind.
        key: KeyKind,
        /// The signatureAlgorithm OID.
        oid: ObjectIdentifier,
    },
    /// The signature does not verify (or is not a well-formed signature).
    #[error("CSR signature does not verify")]
    BadSignature,
    /// A subject attribute uses a string type other than UTF8String, PrintableString, IA5String.
    #[error("subject attribute uses unsupported string type {tag}")]
    UnsupportedSubjectString {
        /// The ASN.1 tag found.
        tag: Tag,
    },
    /// The extensionRequest attribute is malformed, repeated or has several values.
    #[error("extensionRequest attribute is malformed")]
    BadExtensionRequest,
    /// The challengePassword attribute is repeated, has several values, or its value is not
    /// a UTF8String, PrintableString or IA5String of at most 255 characters (RFC 2985 §5.4.1).
    #[error("challengePassword attribute is malformed")]
    BadChallengePassword,
    /// An extension appears more than once in the extensionRequest (RFC 5280 §4.2: at most
    /// one instance of a particular extension).
    #[error("the {} extension appears more than once in the CSR", oids::Named(*.oid))]
    DuplicateExtension {
        /// The repeated extension.
        oid: ObjectIdentifier,
    },
    /// The subjectAltName extension is malformed.
    #[error("subjectAltName extension is malformed")]
    BadSubjectAltName,
    /// A keyUsage, extKeyUsage or basicConstraints extension value does not decode as its
    /// RFC 5280 §4.2.1 syntax.
    #[error("the {} extension in the CSR is malformed", oids::Named(*.oid))]
    BadExtensionValue {
        /// The extension.
        oid: ObjectIdentifier,
    },
}

impl From<NameReadError> for CsrError {
    fn from(e: NameReadError) -> Self {
        match e {
            NameReadError::UnsupportedString { tag } => CsrError::UnsupportedSubjectString { tag },
            NameReadError::DuplicateSan => CsrError::DuplicateExtension {
                oid: oids::SUBJECT_ALT_NAME,
            },
            // parse_and_verify refuses repeated extensions, naming them, before it reads the SAN.
            NameReadError::DuplicateExtension => CsrError::BadExtensionRequest,
            NameReadError::BadSan(_) | NameReadError::BadDnsName => CsrError::BadSubjectAltName,
        }
    }
}

/// A public key ready to verify signatures.
pub(crate) enum PublicKey {
    Rsa(Box<rsa::RsaPublicKey>, u32),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa(_, bits) => KeyKind::Rsa { bits: *bits },
            PublicKey::P256(_) => KeyKind::EcdsaP256,
            PublicKey::P384(_) => KeyKind::EcdsaP384,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }
}

/// Parameters must be absent or an ASN.1 NULL.
fn null_or_absent(params: Option<AnyRef<'_>>) -> Result<(), CsrError> {
    match params {
        None => Ok(()),
        Some(p) if p.tag() == Tag::Null && p.value().is_empty() => Ok(()),
        Some(_) => Err(CsrError::BadAlgorithmParameters),
    }
}

/// Reads a SubjectPublicKeyInfo into a key we can verify with.
pub(crate) fn public_key(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<PublicKey, CsrError> {
    let alg = &spki.algorithm;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CsrError::InvalidPublicKey)?;
    match alg.oid {
        oids::RSA_ENCRYPTION => {
            null_or_absent(alg.parameters)?;
            let pk = rsa::pkcs1::RsaPublicKey::from_der(key_bytes)
                .map_err(|_| CsrError::InvalidPublicKey)?;
            let bits = derutil::bit_len(pk.modulus.as_bytes());
            if bits < RSA_MIN_BITS {
                return Err(CsrError::RsaKeyTooSmall { bits });
            }
            if bits > RSA_MAX_BITS {
                return Err(CsrError::RsaKeyTooLarge { bits });
            }
            let n = rsa::BigUint::from_bytes_be(pk.modulus.as_bytes());
            let e = rsa::BigUint::from_bytes_be(pk.public_exponent.as_bytes());
            let key = rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS as usize)
                .map_err(|_| CsrError::InvalidPublicKey)?;
            Ok(PublicKey::Rsa(Box::new(key), bits))
        }
        oids::EC_PUBLIC_KEY => {
            let curve = alg
                .parameters
                .ok_or(CsrError::BadAlgorithmParameters)?
                .decode_as::<ObjectIdentifier>()
                .map_err(|_| CsrError::BadAlgorithmParameters)?;
            match curve {
                oids::SECP256R1 => p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P256)
                    .map_err(|_| CsrError::InvalidPublicKey),
                oids::SECP384R1 => p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P384)
                    .map_err(|_| CsrError::InvalidPublicKey),
                oid => Err(CsrError::UnsupportedCurve { oid }),
            }
        }
        oids::ED25519 => {
            if alg.parameters.is_some() {
                return Err(CsrError::BadAlgorithmParameters);
            }
            let raw: [u8; 32] = key_bytes
                .try_into()
                .map_err(|_| CsrError::InvalidPublicKey)?;
            ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map(PublicKey::Ed25519)
                .map_err(|_| CsrError::InvalidPublicKey)
        }
        oid => Err(CsrError::UnsupportedKey { oid }),
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }
}

/// Verifies `sig` over `msg` with `key` under signature algorithm `alg`.
pub(crate) fn verify(
    key: &PublicKey,
    alg: &AlgorithmIdentifierRef<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CsrError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;

    let mismatch = || CsrError::SignatureAlgorithmMismatch {
        key: key.kind(),
        oid: alg.oid,
    };
    let known_rsa = matches!(
        alg.oid,
        oids::SHA256_WITH_RSA | oids::SHA384_WITH_RSA | oids::SHA512_WITH_RSA
    );
    let known_ec = matches!(alg.oid, oids::ECDSA_WITH_SHA256 | oids::ECDSA_WITH_SHA384);
    let known_ed = alg.oid == oids::ED25519;
    if !(known_rsa || known_ec || known_ed) {
        return Err(CsrError::UnsupportedSignatureAlgorithm { oid: alg.oid });
    }
    match key {
        PublicKey::Rsa(key, _) => {
            if !known_rsa {
                return Err(mismatch());
            }
            null_or_absent(alg.parameters)?;
            let (hash, scheme) = match alg.oid {
                oids::SHA256_WITH_RSA => (Hash::Sha256, rsa::Pkcs1v15Sign::new::<Sha256>()),
                oids::SHA384_WITH_RSA => (Hash::Sha384, rsa::Pkcs1v15Sign::new::<Sha384>()),
                _ => (Hash::Sha512, rsa::Pkcs1v15Sign::new::<Sha512>()),
            };
            key.verify(scheme, &hash.digest(msg), sig)
                .map_err(|_| CsrError::BadSignature)
        }
        PublicKey::P256(_) | PublicKey::P384(_) => {
            if !known_ec {
                return Err(mismatch());
            }
            if alg.parameters.is_some() {
                return Err(CsrError::BadAlgorithmParameters);
            }
            let hash = if alg.oid == oids::ECDSA_WITH_SHA256 {
                Hash::Sha256
            } else {
                Hash::Sha384
            };
            let prehash = hash.digest(msg);
            let ok = match key {
                PublicKey::P256(vk) => p256::ecdsa::Signature::from_der(sig)
                    .ok()
                    .and_then(|s| vk.verify_prehash(&prehash, &s).ok()),
                PublicKey::P384(vk) => p384::ecdsa::Signature::from_der(sig)
                    .ok()
                    .and_then(|s| vk.verify_prehash(&prehash, &s).ok()),
                _ => None,
            };
            ok.ok_or(CsrError::BadSignature)
        }
        PublicKey::Ed25519(vk) => {
            if !known_ed {
                return Err(mismatch());
            }
            if alg.parameters.is_some() {
                return Err(CsrError::BadAlgorithmParameters);
            }
            let sig =
                ed25519_dalek::Signature::from_slice(sig).map_err(|_| CsrError::BadSignature)?;
            vk.verify_strict(msg, &sig)
                .map_err(|_| CsrError::BadSignature)
        }
    }
}

/// One keyUsage bit (RFC 5280 §4.2.1.3), by its position in the BIT STRING (0 is the first
/// bit). Bits after `decipherOnly` (8) are kept too, so that they can be named and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyUsageBit(pub u16);

impl KeyUsageBit {
    /// digitalSignature (0).
    pub const DIGITAL_SIGNATURE: KeyUsageBit = KeyUsageBit(0);
    /// contentCommitment, formerly nonRepudiation (1).
    pub const CONTENT_COMMITMENT: KeyUsageBit = KeyUsageBit(1);
    /// keyEncipherment (2).
    pub const KEY_ENCIPHERMENT: KeyUsageBit = KeyUsageBit(2);
    /// dataEncipherment (3).
    pub const DATA_ENCIPHERMENT: KeyUsageBit = KeyUsageBit(3);
    /// keyAgreement (4).
    pub const KEY_AGREEMENT: KeyUsageBit = KeyUsageBit(4);
    /// keyCertSign (5): the key may sign certificates.
    pub const KEY_CERT_SIGN: KeyUsageBit = KeyUsageBit(5);
    /// cRLSign (6).
    pub const CRL_SIGN: KeyUsageBit = KeyUsageBit(6);
    /// encipherOnly (7).
    pub const ENCIPHER_ONLY: KeyUsageBit = KeyUsageBit(7);
    /// decipherOnly (8).
    pub const DECIPHER_ONLY: KeyUsageBit = KeyUsageBit(8);

    /// The RFC 5280 name of this bit, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            KeyUsageBit::DIGITAL_SIGNATURE => "digitalSignature",
            KeyUsageBit::CONTENT_COMMITMENT => "contentCommitment",
            KeyUsageBit::KEY_ENCIPHERMENT => "keyEncipherment",
            KeyUsageBit::DATA_ENCIPHERMENT => "dataEncipherment",
            KeyUsageBit::KEY_AGREEMENT => "keyAgreement",
            KeyUsageBit::KEY_CERT_SIGN => "keyCertSign",
            KeyUsageBit::CRL_SIGN => "cRLSign",
            KeyUsageBit::ENCIPHER_ONLY => "encipherOnly",
            KeyUsageBit::DECIPHER_ONLY => "decipherOnly",
            _ => return None,
        })
    }
}

impl fmt::Display for KeyUsageBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "bit {}", self.0),
        }
    }
}

/// The value of a requested extension, read for the extensions the enrolment policy looks
/// into (RFC 5280 §4.2.1); any other extension's value is not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionValue {
    /// subjectAltName; its names are [`VerifiedCsr::dns_names`] and
    /// [`VerifiedCsr::has_non_dns_sans`].
    SubjectAltName,
    /// keyUsage: the bits set, in order (at least one).
    KeyUsage(Vec<KeyUsageBit>),
    /// extKeyUsage: the key purposes, in order (at least one).
    ExtendedKeyUsage(Vec<ObjectIdentifier>),
    /// basicConstraints.
    BasicConstraints {
        /// cA: whether the subject would be a CA.
        ca: bool,
        /// pathLenConstraint, if present.
        path_len: Option<u8>,
    },
    /// Any other extension.
    Other,
}

/// One extension of the CSR's extensionRequest attribute (RFC 2985 §5.4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedExtension {
    /// extnID.
    pub oid: ObjectIdentifier,
    /// Whether it is marked critical.
    pub critical: bool,
    /// The value, read when the policy looks into it.
    pub value: ExtensionValue,
}

/// Reads one requested extension; a malformed SAN, keyUsage, extKeyUsage or basicConstraints
/// value is an error.
fn read_extension(ext: &Extension) -> Result<RequestedExtension, CsrError> {
    let bad = || CsrError::BadExtensionValue { oid: ext.extn_id };
    let bytes = ext.extn_value.as_bytes();
    let value = match ext.extn_id {
        // Read (and checked) by derutil::sans_of.
        oids::SUBJECT_ALT_NAME => ExtensionValue::SubjectAltName,
        oids::KEY_USAGE => {
            // KeyUsage ::= BIT STRING; "at least one of the bits MUST be set" (§4.2.1.3).
            let bits = BitStringRef::from_der(bytes).map_err(|_| bad())?;
            let mut set = Vec::new();
            for (i, on) in bits.bits().enumerate() {
                if on {
                    set.push(KeyUsageBit(u16::try_from(i).map_err(|_| bad())?));
                }
            }
            if set.is_empty() {
                return Err(bad());
            }
            ExtensionValue::KeyUsage(set)
        }
        oids::EXT_KEY_USAGE => {
            // ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId (§4.2.1.12).
            let eku = ExtendedKeyUsage::from_der(bytes).map_err(|_| bad())?;
            if eku.0.is_empty() {
                return Err(bad());
            }
            ExtensionValue::ExtendedKeyUsage(eku.0)
        }
        oids::BASIC_CONSTRAINTS => {
            let bc = BasicConstraints::from_der(bytes).map_err(|_| bad())?;
            ExtensionValue::BasicConstraints {
                ca: bc.ca,
                path_len: bc.path_len_constraint,
            }
        }
        _ => ExtensionValue::Other,
    };
    Ok(RequestedExtension {
        oid: ext.extn_id,
        critical: ext.critical,
        value,
    })
}

/// The one value of a challengePassword attribute: `DirectoryString (SIZE(1..255))` (RFC
/// 2985 §5.4.1); an empty string reads as absent.
fn read_challenge_password(values: &[der::Any]) -> Result<Option<String>, CsrError> {
    let [value] = values else {
        return Err(CsrError::BadChallengePassword);
    };
    let s = derutil::directory_string(value).map_err(|_| CsrError::BadChallengePassword)?;
    if s.chars().count() > 255 {
        return Err(CsrError::BadChallengePassword);
    }
    Ok(Some(s).filter(|s| !s.is_empty()))
}

/// A CSR whose self-signature has been verified, with the fields Estuary reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCsr {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    subject_attribute_types: Vec<ObjectIdentifier>,
    common_names: Vec<String>,
    serial_numbers: Vec<String>,
    dns_names: Vec<String>,
    non_dns_sans: bool,
    attribute_types: Vec<ObjectIdentifier>,
    challenge_password: Result<Option<String>, CsrError>,
    extensions: Vec<RequestedExtension>,
    key: KeyKind,
    spki_der: Vec<u8>,
}

impl VerifiedCsr {
    /// The exact input bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// DER of the subject Name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// The type of every subject attribute (each AttributeTypeAndValue of each RDN), in order.
    pub fn subject_attribute_types(&self) -> &[ObjectIdentifier] {
        &self.subject_attribute_types
    }
    /// The first subject commonName, if any.
    pub fn subject_common_name(&self) -> Option<&str> {
        self.common_names.first().map(String::as_str)
    }
    /// Every subject commonName, in order.
    pub fn subject_common_names(&self) -> &[String] {
        &self.common_names
    }
    /// The first subject serialNumber (2.5.4.5), if any.
    pub fn subject_serial_number(&self) -> Option<&str> {
        self.serial_numbers.first().map(String::as_str)
    }
    /// SAN dNSNames from the extensionRequest attribute, in order, as written.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    /// Whether the SAN holds any name that is not a dNSName (IP, URI, email, otherName...).
    pub fn has_non_dns_sans(&self) -> bool {
        self.non_dns_sans
    }
    /// The type of every CSR attribute (challengePassword, extensionRequest, ...), in DER
    /// SET OF order.
    pub fn attribute_types(&self) -> &[ObjectIdentifier] {
        &self.attribute_types
    }
    /// The challengePassword attribute (RFC 2985 §5.4.1): `Ok(None)` when absent or empty,
    /// an error when it is repeated, has several values or is not a UTF8String,
    /// PrintableString or IA5String of at most 255 characters. Only readers that use it fail
    /// on a malformed one (EST ignores it; TEAP carries its CSR channel binding in it, RFC
    /// 9930 §3.8.2). It is covered by the CSR's signature like every attribute.
    pub fn challenge_password(&self) -> Result<Option<&str>, CsrError> {
        match &self.challenge_password {
            Ok(p) => Ok(p.as_deref()),
            Err(e) => Err(e.clone()),
        }
    }
    /// The extensions of the extensionRequest attribute, in order (empty without one). No two
    /// have the same extnID.
    pub fn extensions(&self) -> &[RequestedExtension] {
        &self.extensions
    }
    /// The key kind.
    pub fn key(&self) -> KeyKind {
        self.key
    }
    /// DER of the SubjectPublicKeyInfo, as in the input.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// SHA-256 of a CSR's exact DER bytes: the name under which a good signature is remembered.
pub type CsrDigest = [u8; 32];

/// Remembers which exact signed bytes carried a good signature (for the filter, a cache in the
/// proxy's shared data): CSRs (their self-signature, named by [`CsrDigest`]) and client
/// certificates (their issuer's signature, named by
/// [`crate::cms_signed::issued_by_digest`] of the certificate and the issuer). The same bytes
/// always give the same verification outcome, so a remembered digest can stand in for the
/// signature check, and for nothing else: every field is still read and every policy still
/// applies. Whoever can add digests can make a forged CSR or certificate pass the signature
/// check, so only [`parse_and_verify_memo`] and [`crate::cms_signed::verify_issued_by_memo`]
/// should call [`Self::remember`].
pub trait SignatureMemo {
    /// Whether signed bytes with exactly this digest were verified before (and are still
    /// remembered).
    fn verified(&mut self, digest: &CsrDigest) -> bool;
    /// Note that the signed bytes with this digest have a good signature.
    fn remember(&mut self, digest: &CsrDigest);
}

/// Decodes one DER CertificationRequest (no trailing bytes), verifies its self-signature, then
/// reads its fields.
pub fn parse_and_verify(der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    parse_and_verify_memo(der, None)
}

/// [`parse_and_verify`], where `memo` may vouch for the signature of these exact bytes (the
/// signature is then not verified again) and learns of every signature that verifies.
pub fn parse_and_verify_memo(
    der: &[u8],
    memo: Option<&mut dyn SignatureMemo>,
) -> Result<VerifiedCsr, CsrError> {
    // CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }
    let mut reader = SliceReader::new(der).map_err(CsrError::Malformed)?;
    let (info, alg, sig) = reader
        .sequence(|r| {
            let info: AnyRef<'_> = r.decode()?;
            let alg: AlgorithmIdentifierRef<'_> = r.decode()?;
            let sig: BitStringRef<'_> = r.decode()?;
            Ok((info, alg, sig))
        })
        .map_err(CsrError::Malformed)?;
    if !reader.is_finished() {
        return Err(CsrError::TrailingData);
    }
    if info.tag() != Tag::Sequence {
        return Err(CsrError::Malformed(der::Error::new(
            der::ErrorKind::TagUnexpected {
                expected: Some(Tag::Sequence),
                actual: info.tag(),
            },
            der::Length::ZERO,
        )));
    }
    let info_der = derutil::tlv_der(&info).map_err(CsrError::Malformed)?;

    // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, [0] attributes }
    let parts = derutil::tlvs(info.value()).map_err(CsrError::Malformed)?;
    let spki_any = parts.get(2).ok_or(CsrError::Malformed(der::Error::new(
        der::ErrorKind::Incomplete {
            expected_len: der::Length::ONE,
            actual_len: der::Length::ZERO,
        },
        der::Length::ZERO,
    )))?;
    let spki_der = derutil::tlv_der(spki_any).map_err(CsrError::Malformed)?;
    let spki = SubjectPublicKeyInfoRef::from_der(&spki_der).map_err(CsrError::Malformed)?;

    // Key and signature first: nothing else is read from a request that is neither verified
    // nor one whose exact bytes verified before.
    let key = public_key(&spki)?;
    let sig = sig.as_bytes().ok_or(CsrError::BadSignature)?;
    match memo {
        Some(memo) => {
            let digest: CsrDigest = Sha256::digest(der).into();
            if !memo.verified(&digest) {
                verify(&key, &alg, &info_der, sig)?;
                memo.remember(&digest);
            }
        }
        None => verify(&key, &alg, &info_der, sig)?,
    }

    let info = CertReqInfo::from_der(&info_der).map_err(CsrError::Malformed)?;
    if info.version != x509_cert::request::Version::V1 {
        return Err(CsrError::UnsupportedVersion);
    }
    let subject_der = info.subject.to_der().map_err(CsrError::Malformed)?;
    let common_names = derutil::name_values(&info.subject, oids::COMMON_NAME)?;
    let serial_numbers = derutil::name_values(&info.subject, oids::SERIAL_NUMBER)?;
    let subject_attribute_types = info
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter().map(|atv| atv.oid))
        .collect();

    let mut ext_req: Option<Extensions> = None;
    let mut attribute_types = Vec::with_capacity(info.attributes.len());
    let mut challenge_password: Option<Result<Option<String>, CsrError>> = None;
    for attr in info.attributes.iter() {
        attribute_types.push(attr.oid);
        if attr.oid == oids::CHALLENGE_PASSWORD {
            challenge_password = Some(match challenge_password {
                Some(_) => Err(CsrError::BadChallengePassword),
                None => read_challenge_password(attr.values.as_slice()),
            });
            continue;
        }
        if attr.oid != oids::EXTENSION_REQUEST {
            continue;
        }
        if ext_req.is_some() || attr.values.len() != 1 {
            return Err(CsrError::BadExtensionRequest);
        }
        let value = attr.values.get(0).ok_or(CsrError::BadExtensionRequest)?;
        let value_der = value.to_der().map_err(|_| CsrError::BadExtensionRequest)?;
        ext_req =
            Some(Extensions::from_der(&value_der).map_err(|_| CsrError::BadExtensionRequest)?);
    }
    let ext_req = ext_req.as_deref().unwrap_or_default();
    // Sorted, so that many extensions cost n log n, not n².
    let mut ids: Vec<&ObjectIdentifier> = ext_req.iter().map(|e| &e.extn_id).collect();
    ids.sort_unstable();
    if let Some([a, _]) = ids.windows(2).find(|w| matches!(w, [a, b] if a == b)) {
        return Err(CsrError::DuplicateExtension { oid: **a });
    }
    let extensions = ext_req
        .iter()
        .map(read_extension)
        .collect::<Result<Vec<_>, _>>()?;
    let san = ext_req
        .iter()
        .position(|e| e.extn_id == oids::SUBJECT_ALT_NAME)
        .and_then(|i| ext_req.get(i..=i))
        .unwrap_or_default();
    let sans = derutil::sans_of(san)?;

    Ok(VerifiedCsr {
        der: der.to_vec(),
        subject_der,
        subject_attribute_types,
        common_names,
        serial_numbers,
        dns_names: sans.dns,
        non_dns_sans: sans.non_dns,
        attribute_types,
        challenge_password: challenge_password.unwrap_or(Ok(None)),
        extensions,
        key: key.kind(),
        spki_der,
    })
}
