//! The answer to server-side key generation (RFC 7030 §4.4.2): a `multipart/mixed` body
//! (RFC 2046 §5.1) with the new private key and its certificate, each base64.
//!
//! ```text
//! Content-Type: multipart/mixed; boundary=estuary-serverkeygen
//!
//! --estuary-serverkeygen
//! Content-Type: application/pkcs8
//! Content-Transfer-Encoding: base64
//!
//! MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg…
//! --estuary-serverkeygen
//! Content-Type: application/pkcs7-mime; smime-type=certs-only
//! Content-Transfer-Encoding: base64
//!
//! MIIDRQYJKoZIhvcNAQcCoIIDNjCCAzICAQExADALBgkqhkiG9w0BBwGgggMY…
//! --estuary-serverkeygen--
//! ```
//!
//! The key part is the unencrypted PKCS#8 (§4.4.2: "If additional encryption is not being
//! employed, the private key data MUST be placed in an application/pkcs8 part"); Estuary does
//! not offer the encrypted variant (see [`crate::policy::check_serverkeygen`]). Base64 never
//! contains `-`, so no line of a part can look like the boundary delimiter.
//!
//! [`build`] writes into a buffer the caller owns and sizes it first, so that the key's base64
//! exists in exactly one place the caller can wipe; [`parse`] hands the key back in a
//! [`Zeroizing`] buffer.

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::base64::Base64Error;
use crate::est::CT_PKCS7_CERTS_ONLY;

/// RFC 7030 §4.4.2 / RFC 5958 §7.1: content type of the unencrypted private key part.
pub const CT_PKCS8: &str = "application/pkcs8";
/// The media type of the whole answer (RFC 2046 §5.1.3).
pub const MULTIPART_MIXED: &str = "multipart/mixed";
/// The boundary Estuary uses: base64 parts can never contain it.
pub const BOUNDARY: &str = "estuary-serverkeygen";
/// Most parts [`parse`] reads before giving up.
const MAX_PARTS: usize = 8;
/// Bytes of input per base64 line (64 characters, as [`crate::base64::encode`]).
const LINE_BYTES: usize = 48;

/// The answer's `content-type`: `multipart/mixed; boundary=…`.
pub fn content_type() -> String {
    format!("{MULTIPART_MIXED}; boundary={BOUNDARY}")
}

/// Why a body is not a serverkeygen answer. Names no content, so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The content type is not `multipart/mixed`.
    #[error("content type is not multipart/mixed")]
    NotMultipart,
    /// No usable `boundary` parameter (RFC 2046 §5.1.1: 1 to 70 characters).
    #[error("multipart/mixed without a usable boundary parameter")]
    NoBoundary,
    /// The body is not text.
    #[error("the body is not UTF-8 text")]
    NotText,
    /// The body has no closing delimiter `--boundary--`.
    #[error("the multipart body has no closing delimiter")]
    Unterminated,
    /// More parts than any serverkeygen answer has.
    #[error("the multipart body has more than {MAX_PARTS} parts")]
    TooManyParts,
    /// A part whose content type is neither the key's nor the certificate's.
    #[error("unexpected part with content type {0:?}")]
    UnexpectedPart(String),
    /// The key or the certificate part came twice.
    #[error("the {0} part appears twice")]
    DuplicatePart(&'static str),
    /// The key or the certificate part is missing.
    #[error("the {0} part is missing")]
    MissingPart(&'static str),
    /// A part's base64 does not decode.
    #[error("the {part} part is not base64: {error}")]
    BadBase64 {
        /// Which part.
        part: &'static str,
        /// Why.
        error: Base64Error,
    },
}

/// The two parts of a serverkeygen answer, decoded.
pub struct ServerKeyGenAnswer {
    /// The private key, PKCS#8 DER (RFC 5958), wiped when dropped.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The certificate, PKCS#7 certs-only DER.
    pub pkcs7: Vec<u8>,
}

impl core::fmt::Debug for ServerKeyGenAnswer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerKeyGenAnswer")
            .field("pkcs8", &"[private key elided]")
            .field("pkcs7_len", &self.pkcs7.len())
            .finish()
    }
}

fn b64_len(n: usize) -> usize {
    let chars = n.div_ceil(3) * 4;
    chars + chars.div_ceil(64) * 2
}

/// Appends `der` as base64 lines of 64 characters, each ending CRLF, through a stack buffer
/// that is wiped afterwards (no intermediate heap copy of the text).
fn push_base64(out: &mut Vec<u8>, der: &[u8]) {
    let mut line = [0u8; 64];
    for chunk in der.chunks(LINE_BYTES) {
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut line)
            .unwrap_or(0);
        out.extend_from_slice(line.get(..n).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    line.zeroize();
}

fn push_part_header(out: &mut Vec<u8>, content_type: &str) {
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
}

/// The exact length [`build`] writes for these inputs.
pub fn built_len(pkcs8_len: usize, pkcs7_len: usize) -> usize {
    let header = |ct: &str| {
        "--".len()
            + BOUNDARY.len()
            + "\r\nContent-Type: ".len()
            + ct.len()
            + "\r\nContent-Transfer-Encoding: base64\r\n\r\n".len()
    };
    header(CT_PKCS8)
        + b64_len(pkcs8_len)
        + header(CT_PKCS7_CERTS_ONLY)
        + b64_len(pkcs7_len)
        + 2
        + BOUNDARY.len()
        + 4
}

/// Writes the serverkeygen answer body (RFC 7030 §4.4.2) for `pkcs8` (the private key, PKCS#8
/// DER) and `pkcs7` (the certificate, PKCS#7 certs-only DER) into `out`, with [`BOUNDARY`]:
/// the key part first, then the certificate part, each base64 in CRLF lines. `out` is grown
/// once to the final size first, so it never reallocates (which would leave a copy of the key
/// behind); wipe it when done.
pub fn build(pkcs8: &[u8], pkcs7: &[u8], out: &mut Vec<u8>) {
    out.reserve_exact(built_len(pkcs8.len(), pkcs7.len()));
    push_part_header(out, CT_PKCS8);
    push_base64(out, pkcs8);
    push_part_header(out, CT_PKCS7_CERTS_ONLY);
    push_base64(out, pkcs7);
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

/// The `boundary` parameter of a `multipart/mixed` content type (RFC 2045 §5.1: parameter
/// names are case-insensitive, the value may be quoted; RFC 2046 §5.1.1: 1–70 characters).
pub fn boundary(content_type: &str) -> Result<&str, MultipartError> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(MULTIPART_MIXED) {
        return Err(MultipartError::NotMultipart);
    }
    for p in params {
        let Some((name, value)) = p.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let ok = (1..=70).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b))
            && !value.ends_with(' ');
        return if ok {
            Ok(value)
        } else {
            Err(MultipartError::NoBoundary)
        };
    }
    Err(MultipartError::NoBoundary)
}

/// The media type (before any `;`), lower-cased and trimmed.
fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Reads a serverkeygen answer: `content_type` must be `multipart/mixed` with a boundary, and
/// the body must hold exactly one `application/pkcs8` part and one `application/pkcs7-mime`
/// part (any order, other headers ignored, base64 decoded leniently as EST bodies are).
pub fn parse(content_type: &str, body: &[u8]) -> Result<ServerKeyGenAnswer, MultipartError> {
    let boundary = boundary(content_type)?;
    let text = core::str::from_utf8(body).map_err(|_| MultipartError::NotText)?;
    let delimiter = format!("--{boundary}");
    let closing = format!("--{boundary}--");
    // The parts, each as (content type, content lines).
    let mut parts: Vec<(String, Vec<&str>)> = Vec::new();
    let mut current: Option<(Option<String>, bool, Vec<&str>)> = None;
    let mut closed = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_end_matches([' ', '\t']);
        if trimmed == closing || trimmed == delimiter {
            if let Some((ct, _, lines)) = current.take() {
                parts.push((ct.unwrap_or_default(), lines));
            }
            if parts.len() > MAX_PARTS {
                return Err(MultipartError::TooManyParts);
            }
            if trimmed == closing {
                closed = true;
                break;
            }
            current = Some((None, true, Vec::new()));
            continue;
        }
        let Some((ct, in_headers, lines)) = current.as_mut() else {
            continue; // preamble
        };
        if *in_headers {
            if line.is_empty() {
                *in_headers = false;
            } else if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-type") {
                    *ct = Some(value.trim().to_string());
                }
            }
        } else {
            lines.push(line);
        }
    }
    if !closed {
        return Err(MultipartError::Unterminated);
    }
    let mut pkcs8: Option<Zeroizing<Vec<u8>>> = None;
    let mut pkcs7: Option<Vec<u8>> = None;
    for (ct, lines) in parts {
        let mut joined = Zeroizing::new(Vec::with_capacity(
            lines.iter().map(|l| l.len() + 1).sum::<usize>(),
        ));
        for l in &lines {
            joined.extend_from_slice(l.as_bytes());
            joined.push(b'\n');
        }
        match essence(&ct).as_str() {
            CT_PKCS8 => {
                if pkcs8.is_some() {
                    return Err(MultipartError::DuplicatePart("application/pkcs8"));
                }
                let der =
                    crate::base64::decode(&joined).map_err(|error| MultipartError::BadBase64 {
                        part: "application/pkcs8",
                        error,
                    })?;
                pkcs8 = Some(Zeroizing::new(der));
            }
            "application/pkcs7-mime" => {
                if pkcs7.is_some() {
                    return Err(MultipartError::DuplicatePart("application/pkcs7-mime"));
                }
                let der =
                    crate::base64::decode(&joined).map_err(|error| MultipartError::BadBase64 {
                        part: "application/pkcs7-mime",
                        error,
                    })?;
                pkcs7 = Some(der);
            }
            _ => return Err(MultipartError::UnexpectedPart(ct)),
        }
    }
    Ok(ServerKeyGenAnswer {
        pkcs8: pkcs8.ok_or(MultipartError::MissingPart("application/pkcs8"))?,
        pkcs7: pkcs7.ok_or(MultipartError::MissingPart("application/pkcs7-mime"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_length_is_exact_and_the_buffer_never_grows() {
        for (k, c) in [(0, 0), (1, 1), (47, 48), (48, 49), (138, 900), (1218, 1500)] {
            let key = vec![0x5a; k];
            let p7 = vec![0xa5; c];
            let mut out = Vec::new();
            build(&key, &p7, &mut out);
            assert_eq!(out.len(), built_len(k, c), "{k} {c}");
            assert_eq!(out.capacity(), built_len(k, c), "{k} {c}");
        }
    }

    #[test]
    fn build_then_parse_round_trips() {
        let key: Vec<u8> = (0..=255u8).collect();
        let p7 = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        let mut out = Vec::new();
        build(&key, &p7, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with(
            "--estuary-serverkeygen\r\nContent-Type: application/pkcs8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        assert!(text.contains(
            "\r\n--estuary-serverkeygen\r\nContent-Type: application/pkcs7-mime; \
             smime-type=certs-only\r\nContent-Transfer-Encoding: base64\r\n\r\nMAMCAQc=\r\n"
        ));
        assert!(text.ends_with("\r\n--estuary-serverkeygen--\r\n"));
        assert!(text.lines().all(|l| l.len() <= 76));
        let a = parse(&content_type(), &out).unwrap();
        assert_eq!(a.pkcs8.as_slice(), key.as_slice());
        assert_eq!(a.pkcs7, p7);
        assert!(!format!("{a:?}").contains("MIG"));
    }

    /// RFC 7030 §4.4.2's example layout: `multipart/mixed ; boundary=est`, LF line ends, the
    /// key part first, then the certificate part.
    #[test]
    fn rfc7030_4_4_2_example_layout_parses() {
        let body = "--est\nContent-Type: application/pkcs8\nContent-Transfer-Encoding: base64\n\n\
                    AQID\n--est\nContent-Type: application/pkcs7-mime; smime-type=certs-only\n\
                    Content-Transfer-Encoding: base64\n\nBAUG\n--est--\n";
        let a = parse("multipart/mixed ; boundary=est", body.as_bytes()).unwrap();
        assert_eq!(a.pkcs8.as_slice(), &[1, 2, 3]);
        assert_eq!(a.pkcs7, vec![4, 5, 6]);
        // Quoted boundary, parts in the other order, a preamble, and an epilogue.
        let body = "preamble\r\n--a b\r\ncontent-type: application/pkcs7-mime\r\n\r\nBAUG\r\n\
                    --a b\r\nCONTENT-TYPE: Application/PKCS8\r\n\r\nAQID\r\n--a b--\r\nepilogue";
        let a = parse(
            "Multipart/Mixed; charset=x; Boundary=\"a b\"",
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(a.pkcs8.as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn bad_answers_are_refused() {
        let ok = |b: &str| parse("multipart/mixed; boundary=b", b.as_bytes());
        assert_eq!(
            parse("application/pkcs7-mime", b"").unwrap_err(),
            MultipartError::NotMultipart
        );
        assert_eq!(
            parse("multipart/mixed", b"").unwrap_err(),
            MultipartError::NoBoundary
        );
        assert_eq!(
            parse("multipart/mixed; boundary=", b"").unwrap_err(),
            MultipartError::NoBoundary
        );
        assert_eq!(
            parse(
                &format!("multipart/mixed; boundary={}", "x".repeat(71)),
                b""
            )
            .unwrap_err(),
            MultipartError::NoBoundary
        );
        let key = "--b\r\nContent-Type: application/pkcs8\r\n\r\nAQID\r\n";
        let cert = "--b\r\nContent-Type: application/pkcs7-mime\r\n\r\nAQID\r\n";
        assert_eq!(
            ok(&format!("{key}{cert}")).unwrap_err(),
            MultipartError::Unterminated
        );
        assert_eq!(
            ok(&format!("{key}--b--\r\n")).unwrap_err(),
            MultipartError::MissingPart("application/pkcs7-mime")
        );
        assert_eq!(
            ok(&format!("{key}{key}{cert}--b--")).unwrap_err(),
            MultipartError::DuplicatePart("application/pkcs8")
        );
        assert!(matches!(
            ok(&format!(
                "{key}--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n{cert}--b--"
            )),
            Err(MultipartError::UnexpectedPart(_))
        ));
        assert!(matches!(
            ok("--b\r\nContent-Type: application/pkcs8\r\n\r\n!!!\r\n--b--"),
            Err(MultipartError::BadBase64 { .. })
        ));
        assert_eq!(
            parse("multipart/mixed; boundary=b", b"\xff").unwrap_err(),
            MultipartError::NotText
        );
        let many = format!("{}--b--", "--b\r\n\r\n".repeat(MAX_PARTS + 2));
        assert_eq!(ok(&many).unwrap_err(), MultipartError::TooManyParts);
    }

    #[test]
    fn every_prefix_of_an_answer_is_refused_or_parses() {
        let mut out = Vec::new();
        build(&[7; 100], &[9; 100], &mut out);
        for cut in 0..out.len() {
            // No panic; a prefix that still ends with the closing delimiter may parse.
            let _ = parse(&content_type(), &out[..cut]);
        }
    }
}
