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

// Other subject attribute types, named in refusals (X.520; RFC 4519; RFC 4514 §3 short names).
/// surname (X.520).
pub const SURNAME: Oid = Oid::new_unwrap("2.5.4.4");
/// countryName, C (X.520).
pub const COUNTRY_NAME: Oid = Oid::new_unwrap("2.5.4.6");
/// localityName, L (X.520).
pub const LOCALITY_NAME: Oid = Oid::new_unwrap("2.5.4.7");
/// stateOrProvinceName, ST (X.520).
pub const STATE_OR_PROVINCE_NAME: Oid = Oid::new_unwrap("2.5.4.8");
/// streetAddress, STREET (X.520).
pub const STREET_ADDRESS: Oid = Oid::new_unwrap("2.5.4.9");
/// organizationName, O (X.520).
pub const ORGANIZATION_NAME: Oid = Oid::new_unwrap("2.5.4.10");
/// organizationalUnitName, OU (X.520).
pub const ORGANIZATIONAL_UNIT_NAME: Oid = Oid::new_unwrap("2.5.4.11");
/// title (X.520).
pub const TITLE: Oid = Oid::new_unwrap("2.5.4.12");
/// givenName, GN (X.520).
pub const GIVEN_NAME: Oid = Oid::new_unwrap("2.5.4.42");
/// dnQualifier (X.520).
pub const DN_QUALIFIER: Oid = Oid::new_unwrap("2.5.4.46");
/// pseudonym (X.520).
pub const PSEUDONYM: Oid = Oid::new_unwrap("2.5.4.65");
/// organizationIdentifier (X.520).
pub const ORGANIZATION_IDENTIFIER: Oid = Oid::new_unwrap("2.5.4.97");
/// userId, UID (RFC 4519 §2.39).
pub const USER_ID: Oid = Oid::new_unwrap("0.9.2342.19200300.100.1.1");
/// domainComponent, DC (RFC 4519 §2.4).
pub const DOMAIN_COMPONENT: Oid = Oid::new_unwrap("0.9.2342.19200300.100.1.25");
/// emailAddress (RFC 2985 §5.2.1; deprecated in subjects by RFC 5280 §4.1.2.6).
pub const EMAIL_ADDRESS: Oid = Oid::new_unwrap("1.2.840.113549.1.9.1");

// Certificate extensions (RFC 5280 §4.2 unless noted).
/// subjectKeyIdentifier (RFC 5280 §4.2.1.2).
pub const SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
/// keyUsage (RFC 5280 §4.2.1.3).
pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
/// issuerAltName (RFC 5280 §4.2.1.7).
pub const ISSUER_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.18");
/// basicConstraints (RFC 5280 §4.2.1.9).
pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
/// nameConstraints (RFC 5280 §4.2.1.10).
pub const NAME_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.30");
/// cRLDistributionPoints (RFC 5280 §4.2.1.13).
pub const CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
/// certificatePolicies (RFC 5280 §4.2.1.4).
pub const CERTIFICATE_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
/// policyMappings (RFC 5280 §4.2.1.5).
pub const POLICY_MAPPINGS: Oid = Oid::new_unwrap("2.5.29.33");
/// authorityKeyIdentifier (RFC 5280 §4.2.1.1).
pub const AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
/// policyConstraints (RFC 5280 §4.2.1.11).
pub const POLICY_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.36");
/// extKeyUsage (RFC 5280 §4.2.1.12).
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
/// inhibitAnyPolicy (RFC 5280 §4.2.1.14).
pub const INHIBIT_ANY_POLICY: Oid = Oid::new_unwrap("2.5.29.54");
/// authorityInfoAccess (RFC 5280 §4.2.2.1).
pub const AUTHORITY_INFO_ACCESS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.1");
/// subjectInfoAccess (RFC 5280 §4.2.2.2).
pub const SUBJECT_INFO_ACCESS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.11");
/// TLS Feature, e.g. OCSP must-staple (RFC 7633 §6).
pub const TLS_FEATURE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.24");

// Key purposes for extKeyUsage (RFC 5280 §4.2.1.12 unless noted).
/// anyExtendedKeyUsage.
pub const ANY_EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37.0");
/// id-kp-serverAuth.
pub const KP_SERVER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.1");
/// id-kp-clientAuth.
pub const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");
/// id-kp-codeSigning.
pub const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
/// id-kp-emailProtection.
pub const KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
/// id-kp-timeStamping.
pub const KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
/// id-kp-OCSPSigning.
pub const KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");
/// id-kp-cmcCA (RFC 6402 §2.10).
pub const KP_CMC_CA: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.27");
/// id-kp-cmcRA (RFC 6402 §2.10).
pub const KP_CMC_RA: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.28");

/// pkcs-9-at-challengePassword (RFC 2985 §5.4.1).
pub const CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");
/// pkcs-9-at-extensionRequest (RFC 2985 §5.4.2).
pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");
/// Microsoft's older extension request attribute (szOID_CERT_EXTENSIONS; MS-WCCE §2.2.2.7.7),
/// which OpenSSL also reads extensions from.
pub const MS_EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.14");
/// id-aa-decryptKeyID (RFC 7030 §4.4.1.1; id-aa 37): DecryptKeyIdentifier, a serverkeygen
/// request for the returned key to be encrypted to a symmetric key the server holds.
pub const DECRYPT_KEY_ID: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.37");
/// id-aa-asymmDecryptKeyID (RFC 7030 §4.4.1.2; id-aa 54): AsymmetricDecryptKeyIdentifier, a
/// serverkeygen request for the returned key to be encrypted to a certificate's key.
pub const ASYMM_DECRYPT_KEY_ID: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.54");
/// id-aa-certificationRequestInfoTemplate (RFC 9908 §3.4; id-aa 61).
pub const CERTIFICATION_REQUEST_INFO_TEMPLATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.61");
/// id-aa-extensionReqTemplate (RFC 9908 §3.4; id-aa 62): extensions with optional values.
pub const EXTENSION_REQ_TEMPLATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.62");

/// id-signedData (RFC 5652 §5.1).
pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-data (RFC 5652 §4).
pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");

/// The usual short name of an OID Estuary names in messages: subject attribute types by their
/// RFC 4514 / OpenSSL short names (`CN`, `O`, `serialNumber`), extensions and key purposes by
/// their RFC 5280 names (`basicConstraints`, `clientAuth`). `None` for any other OID.
pub fn short_name(oid: &Oid) -> Option<&'static str> {
    const NAMES: &[(Oid, &str)] = &[
        (COMMON_NAME, "CN"),
        (SURNAME, "SN"),
        (SERIAL_NUMBER, "serialNumber"),
        (COUNTRY_NAME, "C"),
        (LOCALITY_NAME, "L"),
        (STATE_OR_PROVINCE_NAME, "ST"),
        (STREET_ADDRESS, "STREET"),
        (ORGANIZATION_NAME, "O"),
        (ORGANIZATIONAL_UNIT_NAME, "OU"),
        (TITLE, "title"),
        (GIVEN_NAME, "GN"),
        (DN_QUALIFIER, "dnQualifier"),
        (PSEUDONYM, "pseudonym"),
        (ORGANIZATION_IDENTIFIER, "organizationIdentifier"),
        (USER_ID, "UID"),
        (DOMAIN_COMPONENT, "DC"),
        (EMAIL_ADDRESS, "emailAddress"),
        (SUBJECT_KEY_IDENTIFIER, "subjectKeyIdentifier"),
        (KEY_USAGE, "keyUsage"),
        (SUBJECT_ALT_NAME, "subjectAltName"),
        (ISSUER_ALT_NAME, "issuerAltName"),
        (BASIC_CONSTRAINTS, "basicConstraints"),
        (NAME_CONSTRAINTS, "nameConstraints"),
        (CRL_DISTRIBUTION_POINTS, "cRLDistributionPoints"),
        (CERTIFICATE_POLICIES, "certificatePolicies"),
        (POLICY_MAPPINGS, "policyMappings"),
        (AUTHORITY_KEY_IDENTIFIER, "authorityKeyIdentifier"),
        (POLICY_CONSTRAINTS, "policyConstraints"),
        (EXT_KEY_USAGE, "extKeyUsage"),
        (INHIBIT_ANY_POLICY, "inhibitAnyPolicy"),
        (AUTHORITY_INFO_ACCESS, "authorityInfoAccess"),
        (SUBJECT_INFO_ACCESS, "subjectInfoAccess"),
        (TLS_FEATURE, "tlsFeature"),
        (ANY_EXTENDED_KEY_USAGE, "anyExtendedKeyUsage"),
        (KP_SERVER_AUTH, "serverAuth"),
        (KP_CLIENT_AUTH, "clientAuth"),
        (KP_CODE_SIGNING, "codeSigning"),
        (KP_EMAIL_PROTECTION, "emailProtection"),
        (KP_TIME_STAMPING, "timeStamping"),
        (KP_OCSP_SIGNING, "OCSPSigning"),
        (KP_CMC_CA, "cmcCA"),
        (KP_CMC_RA, "cmcRA"),
        (CHALLENGE_PASSWORD, "challengePassword"),
        (EXTENSION_REQUEST, "extensionRequest"),
        (MS_EXTENSION_REQUEST, "msExtensionRequest"),
        (DECRYPT_KEY_ID, "DecryptKeyIdentifier"),
        (ASYMM_DECRYPT_KEY_ID, "AsymmetricDecryptKeyIdentifier"),
    ];
    NAMES.iter().find(|(o, _)| o == oid).map(|(_, n)| *n)
}

/// Displays an OID as `name (dotted)` when [`short_name`] knows it, else dotted:
/// `basicConstraints (2.5.29.19)`, `1.3.6.1.4.1.55555.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Named(pub Oid);

impl core::fmt::Display for Named {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match short_name(&self.0) {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_oids_display_name_and_dotted_form() {
        assert_eq!(
            Named(BASIC_CONSTRAINTS).to_string(),
            "basicConstraints (2.5.29.19)"
        );
        assert_eq!(Named(ORGANIZATION_NAME).to_string(), "O (2.5.4.10)");
        assert_eq!(
            Named(Oid::new_unwrap("1.3.6.1.4.1.55555.1")).to_string(),
            "1.3.6.1.4.1.55555.1"
        );
        assert_eq!(short_name(&KP_CLIENT_AUTH), Some("clientAuth"));
    }
}
