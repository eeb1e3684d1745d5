//! Object identifiers used by Estuary, with the document that assigns each.

use const_oid::ObjectIdentifier as Oid;

/// rsaEncryption (RFC 8017 A.1).
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// sha256WithRSAEncryption (RFC 8017 A.2.4).
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// sha384WithRSAEncryption (RFC 8017 A.2.4).
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
/// sha512WithRSAEncryption (RFC 8017 A.2.4).
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
/// id-ecPublicKey (RFC 5480 §2.1.1).
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / P-256 (RFC 5480 §2.1.1.1).
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 / P-384 (RFC 5480 §2.1.1.1).
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
/// ecdsa-with-SHA256 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
/// id-Ed25519 (RFC 8410 §3).
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");

/// commonName (X.520, RFC 5280 A.1).
pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
/// serialNumber attribute type (X.520, RFC 5280 A.1).
pub const SERIAL_NUMBER: Oid = Oid::new_unwrap("2.5.4.5");
/// subjectAltName extension (RFC 5280 §4.2.1.6).
pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");

/// pkcs-9-at-challengePassword (RFC 2985 §5.4.1).
pub const CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");
/// pkcs-9-at-extensionRequest (RFC 2985 §5.4.2).
pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");
/// id-aa-certificationRequestInfoTemplate (RFC 9908 §3.4; id-aa 61).
pub const CERTIFICATION_REQUEST_INFO_TEMPLATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.61");
/// id-aa-extensionReqTemplate (RFC 9908 §3.4; id-aa 62): extensions with optional values.
pub const EXTENSION_REQ_TEMPLATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.62");

/// id-signedData (RFC 5652 §5.1).
pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-data (RFC 5652 §4).
pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
