//! Small DER helpers shared by the codecs (crate-private).

use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, Ia5StringRef, PrintableStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;

use crate::oids;

/// Why names could not be read out of a subject or a SAN extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameReadError {
    /// A subject attribute we read is in a string type we do not accept.
    UnsupportedString { tag: Tag },
    /// More than one subjectAltName extension.
    DuplicateSan,
    /// The same extension appears twice.
    DuplicateExtension,
    /// The subjectAltName extension does not decode.
    BadSan(der::Error),
    /// A dNSName is not printable ASCII.
    BadDnsName,
}

/// Splits `bytes` into consecutive complete TLVs (the content of a SEQUENCE or SET).
pub(crate) fn tlvs(bytes: &[u8]) -> Result<Vec<AnyRef<'_>>, der::Error> {
    let mut reader = SliceReader::new(bytes)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(reader.decode::<AnyRef<'_>>()?);
    }
    Ok(out)
}

/// The complete DER encoding (header + value) of a decoded TLV.
pub(crate) fn tlv_der(any: &AnyRef<'_>) -> Result<Vec<u8>, der::Error> {
    any.to_der()
}

/// Decodes exactly one TLV spanning all of `bytes`.
pub(crate) fn one_tlv(bytes: &[u8]) -> Result<AnyRef<'_>, der::Error> {
    AnyRef::from_der(bytes)
}

/// Reads a DirectoryString-like value: UTF8String, PrintableString or IA5String.
pub(crate) fn directory_string(any: &der::Any) -> Result<String, NameReadError> {
    let value = any.value();
    let unsupported = NameReadError::UnsupportedString { tag: any.tag() };
    match any.tag() {
        Tag::Utf8String => core::str::from_utf8(value)
            .map(str::to_owned)
            .map_err(|_| unsupported),
        Tag::PrintableString => PrintableStringRef::new(value)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| unsupported),
        Tag::Ia5String => Ia5StringRef::new(value)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| unsupported),
        _ => Err(unsupported),
    }
}

/// All values of attribute `oid` in a Name, in order.
pub(crate) fn name_values(
    name: &Name,
    oid: ObjectIdentifier,
) -> Result<Vec<String>, NameReadError> {
    let mut out = Vec::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == oid {
                out.push(directory_string(&atv.value)?);
            }
        }
    }
    Ok(out)
}

/// SAN contents: dNSNames in order, and whether any other kind of name was present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sans {
    pub dns: Vec<String>,
    pub non_dns: bool,
}

/// Reads the subjectAltName out of a list of extensions (none present -> empty).
pub(crate) fn sans_of(exts: &[Extension]) -> Result<Sans, NameReadError> {
    for (i, a) in exts.iter().enumerate() {
        if exts.iter().skip(i + 1).any(|b| b.extn_id == a.extn_id) {
            return Err(if a.extn_id == oids::SUBJECT_ALT_NAME {
                NameReadError::DuplicateSan
            } else {
                NameReadError::DuplicateExtension
            });
        }
    }
    let mut sans = Sans::default();
    let Some(ext) = exts.iter().find(|e| e.extn_id == oids::SUBJECT_ALT_NAME) else {
        return Ok(sans);
    };
    let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(NameReadError::BadSan)?;
    for gn in san.0 {
        match gn {
            GeneralName::DnsName(s) => {
                let s = s.as_str();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(NameReadError::BadDnsName);
                }
                sans.dns.push(s.to_owned());
            }
            _ => sans.non_dns = true,
        }
    }
    Ok(sans)
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
pub(crate) fn bit_len(be: &[u8]) -> u32 {
    let mut bytes = be;
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    match bytes.first() {
        None => 0,
        Some(first) => {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX / 8);
            (len - 1) * 8 + (8 - first.leading_zeros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0, 0x80, 0]), 16);
        assert_eq!(bit_len(&[0x7f, 0xff]), 15);
    }
}

/// Encodes one definite-length DER TLV with a single-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        // Short form: one byte.
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        let significant = be.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// DER tag bytes used by the hand-written encoders.
pub(crate) mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
}

/// The DER of an OBJECT IDENTIFIER (tag, length, arcs).
pub(crate) fn oid_der(oid: &ObjectIdentifier) -> Vec<u8> {
    tlv(tag::OID, oid.as_bytes())
}

#[cfg(test)]
mod tlv_tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(tlv(0x04, &[]), vec![0x04, 0]);
        assert_eq!(tlv(0x04, &[7; 127])[..2], [0x04, 127]);
        assert_eq!(tlv(0x04, &[7; 128])[..3], [0x04, 0x81, 128]);
        assert_eq!(tlv(0x04, &[7; 256])[..4], [0x04, 0x82, 1, 0]);
        let v = tlv(0x30, &[7; 70000]);
        assert_eq!(v[..5], [0x30, 0x83, 0x01, 0x11, 0x70]);
        assert_eq!(AnyRef::from_der(&v).unwrap().value().len(), 70000);
    }
}
