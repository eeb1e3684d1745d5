//! The EST transfer encoding (RFC 7030 §4: bodies are base64 with
//! `Content-Transfer-Encoding: base64`, RFC 2045 §6.8).
//!
//! Decoding ignores CR, LF, space and tab anywhere; everything else must be the standard
//! alphabet. Padding may be complete or absent, never partial; unused trailing bits must be
//! zero, so each encoded text decodes to exactly one byte string.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Line length of [`encode`] output (RFC 2045 allows up to 76; 64 matches PEM and OpenSSL).
pub const LINE_LEN: usize = 64;

const DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(false),
);

/// Why a body is not valid base64.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// A byte that is neither in the standard alphabet nor whitespace.
    #[error("invalid base64 byte 0x{byte:02x} at offset {offset}")]
    InvalidByte {
        /// Offset in the input, whitespace included.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// The number of base64 symbols cannot encode whole bytes (e.g. one symbol left over).
    #[error("base64 text has an impossible length")]
    InvalidLength,
    /// Padding is partial, misplaced, or followed by more symbols.
    #[error("base64 padding is invalid")]
    InvalidPadding,
    /// The last symbol carries bits that would be thrown away (non-canonical encoding).
    #[error("base64 text has non-zero trailing bits")]
    TrailingBits,
    /// A PEM-armoured body that is not one `CERTIFICATE REQUEST` block.
    #[error("PEM body: {0}")]
    Pem(&'static str),
}

fn is_ws(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

/// Decodes an EST body. CR, LF, space and tab are ignored wherever they are.
pub fn decode(body: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let mut compact = Vec::with_capacity(body.len());
    let mut offsets = Vec::with_capacity(body.len());
    for (offset, &byte) in body.iter().enumerate() {
        if is_ws(byte) {
            continue;
        }
        if !(byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/' || byte == b'=') {
            return Err(Base64Error::InvalidByte { offset, byte });
        }
        compact.push(byte);
        offsets.push(offset);
    }
    // Padding is all or nothing: with any '=', the text must fill whole 4-symbol groups.
    if compact.last() == Some(&b'=') && compact.len() % 4 != 0 {
        return Err(Base64Error::InvalidPadding);
    }
    DECODER.decode(&compact).map_err(|e| match e {
        base64::DecodeError::InvalidByte(i, byte) => {
            if byte == b'=' {
                Base64Error::InvalidPadding
            } else {
                Base64Error::InvalidByte {
                    offset: offsets.get(i).copied().unwrap_or(i),
                    byte,
                }
            }
        }
        base64::DecodeError::InvalidLength(_) => Base64Error::InvalidLength,
        base64::DecodeError::InvalidLastSymbol(_, _) => Base64Error::TrailingBits,
        base64::DecodeError::InvalidPadding => Base64Error::InvalidPadding,
    })
}

/// PEM labels of a PKCS#10 request (RFC 7468 §7; `NEW CERTIFICATE REQUEST` is the legacy
/// spelling that some tools still write).
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Decodes an EST CSR body as clients send it (RFC 8951 leniency): base64 with or without line
/// breaks (CRLF or LF), or a PEM-armoured `CERTIFICATE REQUEST` block (Azure IoT Edge sends one).
/// A PEM body must be exactly one such block, with nothing but whitespace around it; its
/// content is decoded like a base64 body.
pub fn decode_csr_body(body: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let start = body.iter().position(|b| !is_ws(*b)).unwrap_or(body.len());
    let text = &body[start..];
    if !text.starts_with(b"-----BEGIN ") {
        return decode(body);
    }
    let text = core::str::from_utf8(text).map_err(|_| Base64Error::Pem("not text"))?;
    let after_begin = &text["-----BEGIN ".len()..];
    let label_end = after_begin
        .find("-----")
        .ok_or(Base64Error::Pem("unterminated BEGIN line"))?;
    let label = &after_begin[..label_end];
    if !CSR_LABELS.contains(&label) {
        return Err(Base64Error::Pem("not a CERTIFICATE REQUEST block"));
    }
    let content = &after_begin[label_end + "-----".len()..];
    let end_line = format!("-----END {label}-----");
    let end_at = content
        .find(&end_line)
        .ok_or(Base64Error::Pem("no END line"))?;
    if !content[end_at + end_line.len()..].bytes().all(is_ws) {
        return Err(Base64Error::Pem("more after the END line"));
    }
    decode(&content.as_bytes()[..end_at])
}

/// Encodes DER for an EST body: standard alphabet with padding, lines of 64 characters, each
/// line ended by CRLF (RFC 2045), nothing else. Empty input gives an empty string.
///
/// The last line is terminated too: `openssl base64 -d` (OpenSSL 3.0) silently outputs nothing
/// for a single unterminated line, so a short body would not decode for a curl + openssl client.
pub fn encode(der: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(flat.len() + flat.len() / LINE_LEN * 2);
    for chunk in flat.as_bytes().chunks(LINE_LEN) {
        // The base64 alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(core::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 §10.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let want = if enc.is_empty() {
                String::new()
            } else {
                format!("{enc}\r\n")
            };
            assert_eq!(encode(plain.as_bytes()), want);
            assert_eq!(decode(enc.as_bytes()).unwrap(), plain.as_bytes());
            // Padding may be left out.
            assert_eq!(
                decode(enc.trim_end_matches('=').as_bytes()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    /// RFC 8951: the same CSR as base64 in lines (CRLF or LF), in one line, and PEM-armoured.
    #[test]
    fn csr_bodies_as_clients_send_them() {
        let der: Vec<u8> = (0u8..=200).collect();
        let flat = base64::engine::general_purpose::STANDARD.encode(&der);
        let crlf = encode(&der);
        let lf = crlf.replace("\r\n", "\n");
        let pem =
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{lf}-----END CERTIFICATE REQUEST-----\n");
        let pem_crlf = pem.replace('\n', "\r\n");
        let legacy = format!(
            "\r\n-----BEGIN NEW CERTIFICATE REQUEST-----\r\n{crlf}-----END NEW CERTIFICATE REQUEST-----"
        );
        for body in [&flat, &crlf, &lf, &pem, &pem_crlf, &legacy] {
            assert_eq!(decode_csr_body(body.as_bytes()).unwrap(), der, "{body:?}");
        }
        for (bad, why) in [
            (
                format!("-----BEGIN CERTIFICATE-----\n{lf}-----END CERTIFICATE-----\n"),
                "not a CERTIFICATE REQUEST block",
            ),
            (
                format!("-----BEGIN CERTIFICATE REQUEST-----\n{lf}"),
                "no END line",
            ),
            (format!("{pem}{pem}"), "more after the END line"),
            (
                "-----BEGIN CERTIFICATE REQUEST".to_string(),
                "unterminated BEGIN line",
            ),
        ] {
            assert_eq!(
                decode_csr_body(bad.as_bytes()),
                Err(Base64Error::Pem(why)),
                "{bad:?}"
            );
        }
        // Neither base64 nor PEM.
        assert!(matches!(
            decode_csr_body(b"not a csr!"),
            Err(Base64Error::InvalidByte { .. })
        ));
    }

    #[test]
    fn whitespace_anywhere() {
        assert_eq!(decode(b" Zm\r\n9v\tYm\nFy \r\n").unwrap(), b"foobar");
        assert_eq!(decode(b"Zg=\r\n=").unwrap(), b"f");
    }

    #[test]
    fn strictness() {
        assert_eq!(
            decode(b"Zm9v*mFy"),
            Err(Base64Error::InvalidByte {
                offset: 4,
                byte: b'*'
            })
        );
        assert_eq!(
            decode(b"Zm 9v-"),
            Err(Base64Error::InvalidByte {
                offset: 5,
                byte: b'-'
            })
        );
        assert_eq!(decode(b"Zg="), Err(Base64Error::InvalidPadding));
        assert_eq!(decode(b"Zg==Zg=="), Err(Base64Error::InvalidPadding));
        assert_eq!(decode(b"Z"), Err(Base64Error::InvalidLength));
        assert_eq!(decode(b"Zh=="), Err(Base64Error::TrailingBits));
    }

    #[test]
    fn lines_of_64_with_crlf() {
        let data: Vec<u8> = (0..=255u8).collect();
        let text = encode(&data);
        let body = text.strip_suffix("\r\n").unwrap();
        let lines: Vec<&str> = body.split("\r\n").collect();
        assert_eq!(lines.len(), 6);
        for l in &lines[..lines.len() - 1] {
            assert_eq!(l.len(), 64);
        }
        assert_eq!(lines[5].len(), 344 - 5 * 64);
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        assert_eq!(decode(text.as_bytes()).unwrap(), data);
    }
}
