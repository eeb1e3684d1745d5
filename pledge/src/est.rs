//! EST answers (RFC 7030 §4), read without any I/O: status handling, `Retry-After`,
//! base64 + certs-only PKCS#7 bodies, CSR attributes, and the checks on the issued certificate.
use std::time::{Duration, SystemTime};

use estuary_proto::cert::CertSummary;
use estuary_proto::csrattrs::CsrAttrs;
use estuary_proto::est::{CT_CSRATTRS, CT_PKCS7_CERTS_ONLY};

use crate::error::{Exchange, PledgeError};

/// Longest server reason shown to the user, in characters.
pub const MAX_REASON_CHARS: usize = 512;

/// An HTTP answer as the flows need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The `Retry-After` header as a delay from `now` (see [`parse_retry_after`]); `None` when
    /// it is missing or unusable.
    pub fn retry_after_delay(&self, now: SystemTime) -> Option<Duration> {
        parse_retry_after(self.retry_after.as_deref()?, now)
    }
}

/// The server's text reason from an error body: control characters replaced by spaces,
/// whitespace collapsed, at most [`MAX_REASON_CHARS`] characters. An empty body gives
/// "(no reason given)".
pub fn reason_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.is_empty() {
        return "(no reason given)".to_owned();
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_REASON_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The error for a non-success status (RFC 7030 §4.2.3: 4xx/5xx carry a text reason).
pub fn status_error(exchange: Exchange, answer: &Answer) -> PledgeError {
    match answer.status {
        400..=499 => PledgeError::Refused {
            exchange,
            status: answer.status,
            reason: reason_text(&answer.body),
        },
        500..=599 => PledgeError::ServerError {
            exchange,
            status: answer.status,
            reason: reason_text(&answer.body),
        },
        status => PledgeError::UnexpectedStatus { exchange, status },
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date turned into the seconds
/// from `now` until then (zero when it is past). `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a Content-Type header names `expected` (type/subtype case-insensitive; for the
/// PKCS#7 type the `smime-type=certs-only` parameter must be present when any smime-type is).
fn content_type_matches(found: &str, expected: &str) -> bool {
    let mut parts = found.split(';').map(str::trim);
    let mut want = expected.split(';').map(str::trim);
    let (Some(ty), Some(want_ty)) = (parts.next(), want.next()) else {
        return false;
    };
    if !ty.eq_ignore_ascii_case(want_ty) {
        return false;
    }
    let params: Vec<(String, String)> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            )
        })
        .collect();
    want.filter_map(|p| p.split_once('=')).all(|(k, v)| {
        let k = k.trim().to_ascii_lowercase();
        params
            .iter()
            .find(|(pk, _)| *pk == k)
            .is_none_or(|(_, pv)| pv.eq_ignore_ascii_case(v.trim()))
    })
}

/// Decodes a 200 certs-only answer (RFC 7030 §4.1.3, §4.2.3): content type
/// `application/pkcs7-mime; smime-type=certs-only`, base64 body, PKCS#7 certs-only inside.
/// Returns the certificates' DER in the order given.
pub fn certs_only_body(exchange: Exchange, answer: &Answer) -> Result<Vec<Vec<u8>>, PledgeError> {
    let ct = answer.content_type.as_deref().unwrap_or_default();
    if !content_type_matches(ct, CT_PKCS7_CERTS_ONLY) {
        return Err(PledgeError::ContentType {
            exchange,
            found: ct.to_owned(),
            expected: CT_PKCS7_CERTS_ONLY,
        });
    }
    let der = estuary_proto::base64::decode(&answer.body)
        .map_err(|source| PledgeError::Base64 { exchange, source })?;
    estuary_proto::pkcs7::decode_certs_only(&der)
        .map_err(|source| PledgeError::Pkcs7 { exchange, source })
}

/// A server-generated key (PKCS#8 DER, wiped when dropped) and the certificates (DER).
pub type ServerKey = (zeroize::Zeroizing<Vec<u8>>, Vec<Vec<u8>>);

/// A 200 serverkeygen answer (RFC 7030 §4.4.2): `multipart/mixed` with the private key
/// (`application/pkcs8`) and the certificate (certs-only PKCS#7), both base64. Returns the
/// PKCS#8 DER (wiped when dropped) and the certificates' DER.
pub fn serverkeygen_body(answer: &Answer) -> Result<ServerKey, PledgeError> {
    let exchange = Exchange::ServerKeyGen;
    let ct = answer.content_type.as_deref().unwrap_or_default();
    let parts = estuary_proto::serverkeygen::parse(ct, &answer.body)
        .map_err(|source| PledgeError::Multipart { exchange, source })?;
    let certs = estuary_proto::pkcs7::decode_certs_only(&parts.pkcs7)
        .map_err(|source| PledgeError::Pkcs7 { exchange, source })?;
    Ok((parts.pkcs8, certs))
}

/// Reads a csrattrs answer (RFC 7030 §4.5.2): 200 with `application/csrattrs` and a base64
/// CsrAttrs; 204 or 404 mean "no attributes" (RFC 7030 §4.5.2, RFC 9908 §2).
pub fn csrattrs_answer(answer: &Answer) -> Result<CsrAttrs, PledgeError> {
    match answer.status {
        200 => {
            let ct = answer.content_type.as_deref().unwrap_or_default();
            if !content_type_matches(ct, CT_CSRATTRS) {
                return Err(PledgeError::ContentType {
                    exchange: Exchange::CsrAttrs,
                    found: ct.to_owned(),
                    expected: CT_CSRATTRS,
                });
            }
            let der = estuary_proto::base64::decode(&answer.body).map_err(|source| {
                PledgeError::Base64 {
                    exchange: Exchange::CsrAttrs,
                    source,
                }
            })?;
            if der.is_empty() {
                return Ok(CsrAttrs::default());
            }
            CsrAttrs::from_der(&der).map_err(PledgeError::CsrAttrs)
        }
        204 | 404 => Ok(CsrAttrs::default()),
        _ => Err(status_error(Exchange::CsrAttrs, answer)),
    }
}

/// What a `simpleenroll`/`simplereenroll` answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// 200: the certificates (DER, in the server's order).
    Issued(Vec<Vec<u8>>),
    /// 202 (RFC 7030 §4.2.3): try again after this delay. `hinted` is false when the server
    /// sent no usable Retry-After (which it MUST send) and the delay is our default.
    Pending {
        /// How long to wait.
        delay: Duration,
        /// Whether the delay came from the server.
        hinted: bool,
    },
}

/// Delay used when a 202 has no usable Retry-After.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(10);

/// Interprets an enrolment answer.
pub fn enroll_answer(
    exchange: Exchange,
    answer: &Answer,
    now: SystemTime,
) -> Result<EnrollOutcome, PledgeError> {
    match answer.status {
        200 => certs_only_body(exchange, answer).map(EnrollOutcome::Issued),
        202 => Ok(
            match answer
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now))
            {
                Some(delay) => EnrollOutcome::Pending {
                    delay,
                    hinted: true,
                },
                None => EnrollOutcome::Pending {
                    delay: DEFAULT_RETRY,
                    hinted: false,
                },
            },
        ),
        _ => Err(status_error(exchange, answer)),
    }
}

/// Reads certificates, naming their origin in errors.
pub fn summaries(origin: &str, ders: &[Vec<u8>]) -> Result<Vec<CertSummary>, PledgeError> {
    ders.iter()
        .enumerate()
        .map(|(index, der)| {
            CertSummary::from_der(der).map_err(|source| PledgeError::Cert {
                origin: origin.to_owned(),
                index,
                source,
            })
        })
        .collect()
}

/// The issued certificate and the others the answer carried.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate holding our public key.
    pub leaf: CertSummary,
    /// The rest of the answer, in order.
    pub others: Vec<CertSummary>,
}

/// Finds the certificate that holds our public key (`spki_der`) and checks that its dNSNames
/// are the ones we asked for (case-insensitive, same set).
pub fn pick_leaf(
    exchange: Exchange,
    certs: Vec<CertSummary>,
    spki_der: &[u8],
    expected_names: &[String],
) -> Result<Issued, PledgeError> {
    let pos = certs
        .iter()
        .position(|c| c.spki_der() == spki_der)
        .ok_or(PledgeError::LeafKeyMismatch { exchange })?;
    let mut others = certs;
    let leaf = others.remove(pos);
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v
            .iter()
            .map(|n| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if norm(leaf.dns_names()) != norm(expected_names) {
        return Err(PledgeError::LeafNameMismatch {
            exchange,
            found: leaf.dns_names().to_vec(),
            expected: expected_names.to_vec(),
        });
    }
    Ok(Issued { leaf, others })
}

/// leaf + intermediates: follows issuer → subject through `pool` (the enrolment answer's other
/// certificates first, then /cacerts), stopping before a self-issued certificate (a root) and
/// after at most 8 links. Matching is by name only; signatures are not checked here.
pub fn build_chain(leaf: &CertSummary, pool: &[CertSummary]) -> Vec<Vec<u8>> {
    let mut chain = vec![leaf.der().to_vec()];
    let mut current = leaf;
    for _ in 0..8 {
        if current.issuer_der() == current.subject_der() {
            break;
        }
        let next = pool.iter().find(|c| {
            c.subject_der() == current.issuer_der()
                && c.issuer_der() != c.subject_der()
                && !chain.iter().any(|d| d.as_slice() == c.der())
        });
        match next {
            Some(c) => {
                chain.push(c.der().to_vec());
                current = c;
            }
            None => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ct: Option<&str>, retry: Option<&str>, body: &[u8]) -> Answer {
        Answer {
            status,
            content_type: ct.map(str::to_owned),
            retry_after: retry.map(str::to_owned),
            body: body.to_vec(),
        }
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        // RFC 9110 §5.6.7 IMF-fixdate, 90 s after `now`.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:07 GMT", now),
            Some(Duration::from_secs(90))
        );
        // Obsolete RFC 850 and asctime forms are accepted too (RFC 9110 §5.6.7).
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "5.5", "soon", "5s", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            answer(202, None, Some("3"), b"").retry_after_delay(now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(answer(202, None, None, b"").retry_after_delay(now), None);
        assert_eq!(
            answer(202, None, Some("soon"), b"").retry_after_delay(now),
            None
        );
    }

    #[test]
    fn reasons_are_sanitised_and_bounded() {
        assert_eq!(reason_text(b"CSR asks for a.b\r\n"), "CSR asks for a.b");
        assert_eq!(reason_text(b"a\x1b[31mb\x00c"), "a [31mb c");
        assert_eq!(reason_text(b""), "(no reason given)");
        let long = reason_text(&[b'x'; 2000]);
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn status_errors_name_status_and_reason() {
        let e = status_error(
            Exchange::Enroll,
            &answer(403, Some("text/plain"), None, b"CSR asks for x.example\n"),
        );
        assert_eq!(
            e.to_string(),
            "enrolment refused (403): CSR asks for x.example"
        );
        assert_eq!(e.exit_code(), 3);
        let e = status_error(Exchange::Reenroll, &answer(503, None, None, b""));
        assert_eq!(
            e.to_string(),
            "re-enrolment failed, server error (503): (no reason given)"
        );
        let e = status_error(Exchange::CaCerts, &answer(301, None, None, b""));
        assert_eq!(e.to_string(), "cacerts request: unexpected HTTP status 301");
    }

    #[test]
    fn content_types() {
        assert!(content_type_matches(
            CT_PKCS7_CERTS_ONLY,
            CT_PKCS7_CERTS_ONLY
        ));
        assert!(content_type_matches(
            "Application/PKCS7-MIME;smime-type=\"certs-only\"",
            CT_PKCS7_CERTS_ONLY
        ));
        // RFC 7030 servers in the wild omit the parameter; accept the bare type.
        assert!(content_type_matches(
            "application/pkcs7-mime",
            CT_PKCS7_CERTS_ONLY
        ));
        assert!(!content_type_matches(
            "application/pkcs7-mime; smime-type=signed-data",
            CT_PKCS7_CERTS_ONLY
        ));
        assert!(!content_type_matches("text/plain", CT_PKCS7_CERTS_ONLY));
        assert!(!content_type_matches("", CT_CSRATTRS));
        assert!(content_type_matches("application/csrattrs", CT_CSRATTRS));
    }

    #[test]
    fn enroll_answers() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            enroll_answer(Exchange::Enroll, &answer(202, None, Some("7"), b""), now).unwrap(),
            EnrollOutcome::Pending {
                delay: Duration::from_secs(7),
                hinted: true
            }
        );
        assert_eq!(
            enroll_answer(
                Exchange::Enroll,
                &answer(202, None, Some("later"), b""),
                now
            )
            .unwrap(),
            EnrollOutcome::Pending {
                delay: DEFAULT_RETRY,
                hinted: false
            }
        );
        // A certs-only PKCS#7 made by proto, base64 with CRLF lines as EST sends it.
        let fake_cert = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let p7 = estuary_proto::pkcs7::encode_certs_only(std::slice::from_ref(&fake_cert)).unwrap();
        let body = estuary_proto::base64::encode(&p7);
        let ok = answer(200, Some(CT_PKCS7_CERTS_ONLY), None, body.as_bytes());
        assert_eq!(
            enroll_answer(Exchange::Enroll, &ok, now).unwrap(),
            EnrollOutcome::Issued(vec![fake_cert])
        );
        let wrong_ct = answer(200, Some("application/pkix-cert"), None, body.as_bytes());
        assert!(matches!(
            enroll_answer(Exchange::Enroll, &wrong_ct, now),
            Err(PledgeError::ContentType { .. })
        ));
        let not_b64 = answer(200, Some(CT_PKCS7_CERTS_ONLY), None, b"%%%");
        assert!(matches!(
            enroll_answer(Exchange::Enroll, &not_b64, now),
            Err(PledgeError::Base64 { .. })
        ));
        let not_p7 = answer(200, Some(CT_PKCS7_CERTS_ONLY), None, b"MAA=");
        assert!(matches!(
            enroll_answer(Exchange::Enroll, &not_p7, now),
            Err(PledgeError::Pkcs7 { .. })
        ));
        let refused = answer(400, Some("text/plain"), None, b"bad CSR");
        assert_eq!(
            enroll_answer(Exchange::Enroll, &refused, now)
                .unwrap_err()
                .to_string(),
            "enrolment refused (400): bad CSR"
        );
    }

    #[test]
    fn csrattrs_answers() {
        use estuary_proto::names::{DeviceName, DeviceSerial, ParentDomain};
        let name = DeviceName::new(
            &DeviceSerial::parse("A1").unwrap(),
            &ParentDomain::parse("iot.example.test").unwrap(),
        )
        .unwrap();
        let attrs =
            estuary_proto::csrattrs::device_template(&name, &estuary_proto::KeyPolicy::default());
        let body = estuary_proto::base64::encode(&attrs.to_der().unwrap());
        let got = csrattrs_answer(&answer(200, Some(CT_CSRATTRS), None, body.as_bytes())).unwrap();
        assert_eq!(got, attrs);
        assert_eq!(got.requested_dns_names(), vec!["a1.iot.example.test"]);
        assert_eq!(
            csrattrs_answer(&answer(204, None, None, b"")).unwrap(),
            CsrAttrs::default()
        );
        assert_eq!(
            csrattrs_answer(&answer(404, None, None, b"")).unwrap(),
            CsrAttrs::default()
        );
        assert!(matches!(
            csrattrs_answer(&answer(200, Some(CT_CSRATTRS), None, b"MQA=")),
            Err(PledgeError::CsrAttrs(_))
        ));
        assert!(matches!(
            csrattrs_answer(&answer(401, None, None, b"who are you")),
            Err(PledgeError::Refused { status: 401, .. })
        ));
    }
}
