//! Typed EST wire values (RFC 7030): operations, request paths, content types.

use core::fmt;

/// RFC 7030 §4.2: content type of a PKCS#10 request body.
pub const CT_PKCS10: &str = "application/pkcs10";
/// RFC 7030 §4.1.3 / §4.2.3: content type of a certs-only PKCS#7 answer.
pub const CT_PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
/// RFC 7030 §4.5.2: content type of a CSR attributes answer.
pub const CT_CSRATTRS: &str = "application/csrattrs";
/// RFC 7030 §4: EST bodies are base64 with this transfer encoding header.
pub const HDR_CONTENT_TRANSFER_ENCODING: &str = "content-transfer-encoding";
/// Value of [`HDR_CONTENT_TRANSFER_ENCODING`] for EST bodies.
pub const CTE_BASE64: &str = "base64";
/// RFC 7030 §3.2.2: the path prefix of every EST operation (without trailing slash).
pub const EST_PREFIX: &str = "/.well-known/est";

/// An EST operation path segment (RFC 7030 §3.2.2, table of operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EstOperation {
    /// `/cacerts` (§4.1): distribution of CA certificates.
    CaCerts,
    /// `/csrattrs` (§4.5): CSR attributes.
    CsrAttrs,
    /// `/simpleenroll` (§4.2.1): enrolment of clients.
    SimpleEnroll,
    /// `/simplereenroll` (§4.2.2): re-enrolment of clients.
    SimpleReenroll,
    /// `/serverkeygen` (§4.4): server-side key generation.
    ServerKeyGen,
    /// `/fullcmc` (§4.3): full CMC.
    FullCmc,
}

impl EstOperation {
    /// All operations, in RFC order.
    pub const ALL: [EstOperation; 6] = [
        EstOperation::CaCerts,
        EstOperation::SimpleEnroll,
        EstOperation::SimpleReenroll,
        EstOperation::FullCmc,
        EstOperation::ServerKeyGen,
        EstOperation::CsrAttrs,
    ];

    /// The operation named by a path segment (exact, case-sensitive as in RFC 7030).
    pub fn from_path_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == segment)
    }

    /// The path segment of this operation, e.g. `"simpleenroll"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EstOperation::CaCerts => "cacerts",
            EstOperation::CsrAttrs => "csrattrs",
            EstOperation::SimpleEnroll => "simpleenroll",
            EstOperation::SimpleReenroll => "simplereenroll",
            EstOperation::ServerKeyGen => "serverkeygen",
            EstOperation::FullCmc => "fullcmc",
        }
    }
}

impl fmt::Display for EstOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request path under [`EST_PREFIX`], split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstPath {
    /// The optional CA label (RFC 7030 §3.2.2): 1..=64 chars of `[A-Za-z0-9-_]`.
    pub label: Option<String>,
    /// The operation, or `None` when the segment names no EST operation (answer 404).
    pub op: Option<EstOperation>,
    /// The operation segment as it appeared in the path (may be empty).
    pub op_segment: String,
}

/// Maximum length of an EST label accepted here.
pub const MAX_LABEL_LEN: usize = 64;

fn is_label(s: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A checked EST label (RFC 7030 §3.2.2: `/.well-known/est/<label>/<operation>`): 1 to
/// [`MAX_LABEL_LEN`] of `A-Z a-z 0-9 - _`, and not an operation name (so that
/// `/.well-known/est/cacerts` stays unambiguous). Labels are case-sensitive, as paths are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EstLabel(String);

impl EstLabel {
    /// What a label may be, for error messages.
    pub const RULE: &'static str =
        "an EST label is 1 to 64 of A-Z a-z 0-9 - _, and not an EST operation name";

    /// Checks `s`; `None` when it is not a label.
    pub fn parse(s: &str) -> Option<Self> {
        (is_label(s) && EstOperation::from_path_segment(s).is_none()).then(|| Self(s.to_owned()))
    }

    /// The label as it appears in the path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EstLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `/.well-known/est/[label/]<op>` (query string and fragment ignored).
///
/// Returns `None` when the path is not under the EST prefix at all (not ours: pass it on) or has
/// a shape no EST path has (bad label, extra segments). Returns `Some` with `op: None` when the
/// path is under the prefix but names no known operation, so the caller can answer 404.
pub fn parse_est_path(path: &str) -> Option<EstPath> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let rest = path.strip_prefix(EST_PREFIX)?;
    let rest = if rest.is_empty() {
        rest
    } else {
        rest.strip_prefix('/')?
    };
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let (label, op_segment) = match second {
        None => (None, first),
        Some(op) => {
            if !is_label(first) {
                return None;
            }
            (Some(first.to_owned()), op)
        }
    };
    Some(EstPath {
        label,
        op: EstOperation::from_path_segment(op_segment),
        op_segment: op_segment.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7030 §3.2.2: a label is a path segment; operation names are not labels.
    #[test]
    fn labels_are_checked() {
        for ok in ["factory-a", "A_1", &"x".repeat(64)] {
            assert_eq!(
                EstLabel::parse(ok).map(|l| l.to_string()),
                Some(ok.to_string())
            );
        }
        for bad in [
            "",
            "a/b",
            "a.b",
            "caf\u{e9}",
            &"x".repeat(65),
            "cacerts",
            "simpleenroll",
        ] {
            assert_eq!(EstLabel::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn operations_round_trip() {
        for op in EstOperation::ALL {
            assert_eq!(EstOperation::from_path_segment(op.as_str()), Some(op));
            assert_eq!(op.to_string(), op.as_str());
        }
        assert_eq!(EstOperation::from_path_segment("SimpleEnroll"), None);
        assert_eq!(EstOperation::from_path_segment(""), None);
    }

    #[test]
    fn paths() {
        let p = parse_est_path("/.well-known/est/simpleenroll").unwrap();
        assert_eq!(p.label, None);
        assert_eq!(p.op, Some(EstOperation::SimpleEnroll));

        let p = parse_est_path("/.well-known/est/arbitraryLabel1/cacerts?x=1").unwrap();
        assert_eq!(p.label.as_deref(), Some("arbitraryLabel1"));
        assert_eq!(p.op, Some(EstOperation::CaCerts));

        let p = parse_est_path("/.well-known/est/nope").unwrap();
        assert_eq!(p.op, None);
        assert_eq!(p.op_segment, "nope");

        let p = parse_est_path("/.well-known/est").unwrap();
        assert_eq!(p.op, None);
        let p = parse_est_path("/.well-known/est/").unwrap();
        assert_eq!((p.label, p.op), (None, None));

        assert_eq!(parse_est_path("/.well-known/estx/cacerts"), None);
        assert_eq!(parse_est_path("/other"), None);
        assert_eq!(parse_est_path("/.well-known/est/a/b/cacerts"), None);
        assert_eq!(parse_est_path("/.well-known/est/bad.label/cacerts"), None);
        let long = format!("/.well-known/est/{}/cacerts", "a".repeat(65));
        assert_eq!(parse_est_path(&long), None);
        let ok = format!("/.well-known/est/{}/cacerts", "a".repeat(64));
        assert!(parse_est_path(&ok).unwrap().op.is_some());
    }
}
