//! Reader for Envoy's `x-forwarded-client-cert` header.
//!
//! Envoy's format: elements separated by `,`, each a list of `Key=Value` pairs separated by `;`.
//! A value is either bare (up to the next `;` or `,`) or double-quoted, in which case `\"` and `\\`
//! are escapes and `,`/`;` lose their meaning. `Cert` and `Chain` hold URL-encoded PEM.
//! With `forward_client_cert_details: SANITIZE_SET` Envoy drops any incoming header and writes one
//! element for this hop; if several elements arrive anyway, the LAST is the one Envoy added.

/// Why a header value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    /// A `"` opened a value that never closed.
    #[error("x-forwarded-client-cert: unterminated quoted value")]
    UnterminatedQuote,
    /// A pair without `=`.
    #[error("x-forwarded-client-cert: a field has no '='")]
    MissingEquals,
    /// Text between a closing quote and the next separator.
    #[error("x-forwarded-client-cert: unexpected text after a quoted value")]
    TextAfterQuote,
    /// A `\` at the very end of a quoted value.
    #[error("x-forwarded-client-cert: dangling escape")]
    DanglingEscape,
    /// A `%` not followed by two hex digits.
    #[error("x-forwarded-client-cert: bad percent-escape in Cert")]
    BadPercentEscape,
    /// The URL-decoded certificate is not UTF-8 text.
    #[error("x-forwarded-client-cert: Cert is not text")]
    NotText,
    /// The header is not UTF-8.
    #[error("x-forwarded-client-cert is not UTF-8")]
    HeaderNotUtf8,
    /// The Cert field holds no readable PEM certificate.
    #[error("Cert is not a PEM certificate")]
    BadPem,
    /// The certificate DER could not be parsed.
    #[error("the certificate could not be parsed")]
    BadCertificate,
}

/// One XFCC element: its `Key=Value` pairs in order (keys as written, values unquoted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccElement {
    pairs: Vec<(String, String)>,
}

impl XfccElement {
    /// The first value of `key` (compared case-insensitively).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// All values of `key` (e.g. several `DNS`).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Parse a whole header value into its elements, in order.
pub fn parse(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    let mut elements = Vec::new();
    let mut current = XfccElement::default();
    let mut chars = header.chars().peekable();
    loop {
        // Skip blanks before a key.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut key = String::new();
        let mut saw_equals = false;
        while let Some(&c) = chars.peek() {
            if c == '=' {
                chars.next();
                saw_equals = true;
                break;
            }
            if c == ';' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim_end().to_string();
        if !saw_equals {
            // An empty segment (e.g. "a=b;;c=d" or a trailing ';') is tolerated; a bare word is not.
            if !key.is_empty() {
                return Err(XfccError::MissingEquals);
            }
        } else {
            let mut value = String::new();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(escaped) => value.push(escaped),
                            None => return Err(XfccError::DanglingEscape),
                        },
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err(XfccError::UnterminatedQuote);
                }
                while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| *c != ';' && *c != ',') {
                    return Err(XfccError::TextAfterQuote);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' || c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                let trimmed = value.trim_end().len();
                value.truncate(trimmed);
            }
            current.pairs.push((key, value));
        }
        match chars.next() {
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut current)),
            // Only ';', ',' or the end can stop the loops above.
            _ => {
                elements.push(current);
                break;
            }
        }
    }
    elements.retain(|e| !e.pairs.is_empty());
    Ok(elements)
}

/// The element Envoy added for this hop: the last one.
pub fn last_element(header: &str) -> Result<Option<XfccElement>, XfccError> {
    Ok(parse(header)?.pop())
}

/// Decode `%XX` escapes (the `+` sign stays a `+`: base64 PEM is full of them).
pub fn percent_decode(s: &str) -> Result<Vec<u8>, XfccError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_val(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_val(*c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(XfccError::BadPercentEscape),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The PEM text of the `Cert` field of the last element, if there is one.
pub fn client_cert_pem(header: &str) -> Result<Option<String>, XfccError> {
    pem_field(header, "Cert")
}

/// The PEM text of the `Chain` field of the last element (the presented chain, leaf first), if
/// there is one.
pub fn client_chain_pem(header: &str) -> Result<Option<String>, XfccError> {
    pem_field(header, "Chain")
}

/// The URL-decoded text of `key` in the last element; `None` if absent or empty.
fn pem_field(header: &str, key: &str) -> Result<Option<String>, XfccError> {
    match last_element(header)? {
        Some(element) => pem_of(&element, key),
        None => Ok(None),
    }
}

/// The URL-decoded text of `key` (`Cert`, `Chain`) in `element`; `None` if absent or empty. For
/// reading several fields of a header parsed once with [`last_element`].
pub fn pem_of(element: &XfccElement, key: &str) -> Result<Option<String>, XfccError> {
    let Some(value) = element.get(key) else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let decoded = percent_decode(value)?;
    String::from_utf8(decoded)
        .map(Some)
        .map_err(|_| XfccError::NotText)
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn envoy_example_single_element() {
        // Shape from Envoy's docs (config_http_conn_man_headers_x-forwarded-client-cert).
        let h = r#"By=spiffe://lyft.com/frontend;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=spiffe://lyft.com/test"#;
        let els = parse(h).unwrap_or_default();
        assert_eq!(els.len(), 1);
        let e = &els[0];
        assert_eq!(e.get("by"), Some("spiffe://lyft.com/frontend"));
        assert_eq!(
            e.get("Subject"),
            Some("/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client")
        );
        assert_eq!(e.get("URI"), Some("spiffe://lyft.com/test"));
    }

    #[test]
    fn quoted_separators_and_escapes() {
        let h = r#"Subject="CN=a\"b, O=x;y\\z";DNS=a.example;DNS=b.example,By=second;Cert="-----BEGIN%20CERT"#;
        let err = parse(h);
        assert_eq!(err, Err(XfccError::UnterminatedQuote));
        let h = r#"Subject="CN=a\"b, O=x;y\\z";DNS=a.example;DNS=b.example,By=second;Cert="%2Bx%2fy+z""#;
        let els = parse(h).unwrap_or_default();
        assert_eq!(els.len(), 2);
        assert_eq!(els[0].get("subject"), Some(r#"CN=a"b, O=x;y\z"#));
        let dns: Vec<&str> = els[0].get_all("DNS").collect();
        assert_eq!(dns, vec!["a.example", "b.example"]);
        assert_eq!(els[1].get("By"), Some("second"));
        assert_eq!(client_cert_pem(h), Ok(Some("+x/y+z".to_string())));
    }

    #[test]
    fn last_element_wins() {
        let h = r#"By=spoofed;Cert="evil", By=envoy;Cert="good""#;
        assert_eq!(client_cert_pem(h), Ok(Some("good".to_string())));
        let h = r#"By=spoofed;Chain="evil", By=envoy;Cert="good";Chain="a%0Ab""#;
        assert_eq!(client_chain_pem(h), Ok(Some("a\nb".to_string())));
        assert_eq!(client_chain_pem(r#"Chain="evil",By=envoy"#), Ok(None));
        // A last element without Cert means no client certificate, whatever came before.
        let h = r#"Cert="evil",By=envoy;Hash=00"#;
        assert_eq!(client_cert_pem(h), Ok(None));
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        assert_eq!(parse("Cert=\"abc\"x"), Err(XfccError::TextAfterQuote));
        assert_eq!(parse("Cert=\"abc\\"), Err(XfccError::DanglingEscape));
        assert_eq!(parse("justaword"), Err(XfccError::MissingEquals));
        assert_eq!(percent_decode("%"), Err(XfccError::BadPercentEscape));
        assert_eq!(percent_decode("%4"), Err(XfccError::BadPercentEscape));
        assert_eq!(percent_decode("%zz"), Err(XfccError::BadPercentEscape));
        assert_eq!(percent_decode("a%20b%0A"), Ok(b"a b\n".to_vec()));
        assert_eq!(client_cert_pem("Cert=\"%FF%FE\""), Err(XfccError::NotText));
    }

    #[test]
    fn empty_and_degenerate_headers() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse(",,;"), Ok(vec![]));
        assert_eq!(client_cert_pem(""), Ok(None));
        assert_eq!(client_cert_pem("Cert=\"\""), Ok(None));
        assert_eq!(
            client_cert_pem(" Cert = abc ; By=x"),
            Ok(Some("abc".to_string()))
        );
    }

    #[test]
    fn every_prefix_of_a_real_header_parses_or_errors() {
        let h = r#"By=spiffe://x;Hash=ab;Cert="-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%0A-----END%20CERTIFICATE-----%0A";Subject="serialNumber=SN1,CN=pledge";URI=;DNS=sn1.iot.example.test"#;
        for end in 0..=h.len() {
            if let Some(prefix) = h.get(..end) {
                let _ = parse(prefix);
                let _ = client_cert_pem(prefix);
            }
        }
        let pem = client_cert_pem(h).unwrap_or_default().unwrap_or_default();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nMIIB+\n"));
    }
}
