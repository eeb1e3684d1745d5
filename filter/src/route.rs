//! Which EST operation a request is, decided from its headers alone (pure).

use estuary_proto::est::{self, EstOperation};
use estuary_proto::internal_api::Operation;

use crate::config::Config;
use crate::error::EdgeError;

/// The EST path prefix (RFC 7030 §3.2.2).
pub const EST_PREFIX: &[u8] = est::EST_PREFIX.as_bytes();

/// The operations that POST a CSR: the two enrolments and server-side key generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollKind {
    /// RFC 7030 §4.2.1.
    Enroll,
    /// RFC 7030 §4.2.2.
    Reenroll,
    /// RFC 7030 §4.4: the CSR names the device; the server makes the key.
    ServerKeyGen,
}

impl EnrollKind {
    /// The internal API operation.
    pub fn operation(self) -> Operation {
        match self {
            EnrollKind::Enroll => Operation::SimpleEnroll,
            EnrollKind::Reenroll => Operation::SimpleReenroll,
            EnrollKind::ServerKeyGen => Operation::ServerKeyGen,
        }
    }

    /// The operation name, as sent in `estuary-operation`.
    pub fn as_str(self) -> &'static str {
        self.operation().as_str()
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Not an EST path: Envoy carries on, the filter does nothing more.
    PassThrough,
    /// `GET cacerts` (RFC 7030 §4.1).
    CaCerts {
        /// EST label, if any.
        label: Option<String>,
    },
    /// `GET csrattrs` (RFC 7030 §4.5).
    CsrAttrs {
        /// EST label, if any.
        label: Option<String>,
    },
    /// `POST simpleenroll` / `simplereenroll` (RFC 7030 §4.2) / `serverkeygen` (§4.4).
    Enroll {
        /// Which one.
        kind: EnrollKind,
        /// EST label, if any.
        label: Option<String>,
    },
}

/// True if `path` is under `/.well-known/est` (cheap: no allocation).
pub fn is_est_path(path: &[u8]) -> bool {
    match path.strip_prefix(EST_PREFIX) {
        Some(rest) => matches!(rest.first(), None | Some(b'/') | Some(b'?')),
        None => false,
    }
}

/// Decide the route from `:path` and `:method`.
pub fn route(path: &[u8], method: Option<&[u8]>, cfg: &Config) -> Result<Route, EdgeError> {
    if !is_est_path(path) {
        return Ok(Route::PassThrough);
    }
    let path = std::str::from_utf8(path).map_err(|_| EdgeError::MalformedEstPath)?;
    let parsed = est::parse_est_path(path).ok_or(EdgeError::MalformedEstPath)?;
    let label = parsed.label.clone();
    if let Some(l) = &label {
        if !cfg.labels.contains_key(l) {
            return Err(EdgeError::UnknownLabel(l.clone()));
        }
    }
    let op = match parsed.op {
        Some(op) => op,
        None => return Err(EdgeError::UnknownOperation(parsed.op_segment.clone())),
    };
    let (allow, route) = match op {
        EstOperation::CaCerts => ("GET", Route::CaCerts { label }),
        EstOperation::CsrAttrs => ("GET", Route::CsrAttrs { label }),
        EstOperation::SimpleEnroll => (
            "POST",
            Route::Enroll {
                kind: EnrollKind::Enroll,
                label,
            },
        ),
        EstOperation::SimpleReenroll => (
            "POST",
            Route::Enroll {
                kind: EnrollKind::Reenroll,
                label,
            },
        ),
        EstOperation::ServerKeyGen => (
            "POST",
            Route::Enroll {
                kind: EnrollKind::ServerKeyGen,
                label,
            },
        ),
        EstOperation::FullCmc => return Err(EdgeError::NotImplemented("fullcmc")),
    };
    if method != Some(allow.as_bytes()) {
        return Err(EdgeError::MethodNotAllowed {
            op: op.as_str(),
            allow,
        });
    }
    Ok(route)
}

/// RFC 7030 §4.2.1, §4.4.1: the body is `application/pkcs10`; parameters are tolerated.
pub fn check_content_type(content_type: Option<&[u8]>) -> Result<(), EdgeError> {
    let ct = content_type.ok_or(EdgeError::UnsupportedMediaType)?;
    let essence = ct.split(|b| *b == b';').next().unwrap_or_default();
    if essence
        .trim_ascii()
        .eq_ignore_ascii_case(est::CT_PKCS10.as_bytes())
    {
        Ok(())
    } else {
        Err(EdgeError::UnsupportedMediaType)
    }
}

/// Refuse early when the announced Content-Length is over the limit.
pub fn check_content_length(content_length: Option<&[u8]>, limit: u64) -> Result<(), EdgeError> {
    let Some(raw) = content_length else {
        return Ok(());
    };
    // An unreadable Content-Length is Envoy's to reject; the body size check still applies.
    let announced = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > limit => Err(EdgeError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_detection() {
        assert!(is_est_path(b"/.well-known/est"));
        assert!(is_est_path(b"/.well-known/est/cacerts"));
        assert!(is_est_path(b"/.well-known/est?x"));
        assert!(!is_est_path(b"/.well-known/estuary"));
        assert!(!is_est_path(b"/.well-known/es"));
        assert!(!is_est_path(b"/"));
        assert!(!is_est_path(b""));
        assert!(!is_est_path(b"/healthz"));
    }

    #[test]
    fn content_type_rules() {
        assert!(check_content_type(Some(b"application/pkcs10")).is_ok());
        assert!(check_content_type(Some(b"Application/PKCS10; charset=x")).is_ok());
        assert!(check_content_type(Some(b" application/pkcs10 ")).is_ok());
        assert!(check_content_type(Some(b"application/pkcs7-mime")).is_err());
        assert!(check_content_type(Some(b"")).is_err());
        assert!(check_content_type(Some(b"\xff\xfe")).is_err());
        assert!(check_content_type(None).is_err());
    }

    #[test]
    fn content_length_rules() {
        assert!(check_content_length(None, 10).is_ok());
        assert!(check_content_length(Some(b"10"), 10).is_ok());
        assert!(matches!(
            check_content_length(Some(b"11"), 10),
            Err(EdgeError::PayloadTooLarge { limit: 10 })
        ));
        assert!(check_content_length(Some(b"x"), 10).is_ok());
        assert!(check_content_length(Some(b"99999999999999999999999"), 10).is_ok());
    }
}
