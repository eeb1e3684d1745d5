//! `https` URLs as the BRSKI commands use them: a checked newtype, and RFC 3986 §5.2 reference
//! resolution for `Location` headers. No I/O.
use std::fmt;
use std::str::FromStr;

use hyper::Uri;
use rustls::pki_types::ServerName;

/// Why a string is not a usable `https` URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URI at all.
    #[error("not a URL")]
    NotAUrl,
    /// A scheme other than https (lower-cased).
    #[error("the scheme is {0:?}, not https")]
    NotHttps(String),
    /// No host.
    #[error("no host")]
    NoHost,
    /// A port that is not a number from 0 to 65535.
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    /// user:password@ in the authority.
    #[error("user information in the URL is not allowed")]
    UserInfo,
    /// The host cannot be a TLS server name (DNS name or IP address).
    #[error("the host is not a valid DNS name or IP address")]
    BadHost,
}

/// An absolute `https` URL with a host that is a valid TLS server name. The fragment, if any,
/// is dropped (it never reaches the server).
#[derive(Clone, Debug)]
pub struct HttpsUrl {
    host: String,
    port: u16,
    authority: String,
    path: String,
    query: Option<String>,
    name: ServerName<'static>,
}

impl FromStr for HttpsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let s = s.split_once('#').map_or(s, |(before, _)| before);
        let scheme = s
            .split_once(':')
            .map(|(sch, _)| sch.to_ascii_lowercase())
            .ok_or(UrlError::NotAUrl)?;
        if !is_scheme(&scheme) {
            return Err(UrlError::NotAUrl);
        }
        if scheme != "https" {
            return Err(UrlError::NotHttps(scheme));
        }
        let uri: Uri = s.parse().map_err(|_| UrlError::NotAUrl)?;
        let auth = uri.authority().ok_or(UrlError::NoHost)?;
        if auth.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let name = ServerName::try_from(host.clone()).map_err(|_| UrlError::BadHost)?;
        // http's Authority drops a port it cannot read; an out-of-range one must not silently
        // become 443.
        let a = auth.as_str();
        let port_text = match a.rfind(']') {
            Some(i) => a.get(i + 1..).and_then(|rest| rest.strip_prefix(':')),
            None => a.rsplit_once(':').map(|(_, p)| p),
        };
        let port = match port_text {
            None | Some("") => 443,
            Some(p) => p.parse::<u16>().map_err(|_| UrlError::BadPort)?,
        };
        Ok(HttpsUrl {
            port,
            authority: auth.as_str().to_ascii_lowercase(),
            path: if uri.path().is_empty() {
                "/".to_owned()
            } else {
                uri.path().to_owned()
            },
            query: uri.query().map(str::to_owned),
            host,
            name,
        })
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority, self.path_and_query())
    }
}

/// RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

impl HttpsUrl {
    /// The host (no brackets around an IPv6 address), lower case.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when not given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as written (lower case).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path (at least `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The name the server certificate must carry (RFC 9525: DNS-ID or IP address).
    pub fn server_name(&self) -> ServerName<'static> {
        self.name.clone()
    }

    /// The request target: path and `?query`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The same origin with another absolute path and no query.
    pub fn with_path(&self, path: &str) -> HttpsUrl {
        HttpsUrl {
            path: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            },
            query: None,
            ..self.clone()
        }
    }

    /// `self` with `/segment` appended to its path (a trailing `/` is not doubled), no query.
    pub fn join(&self, segment: &str) -> HttpsUrl {
        self.with_path(&format!("{}/{segment}", self.path.trim_end_matches('/')))
    }

    /// The form used to tell whether two URLs name the same resource: host lower case, port
    /// explicit, dot segments removed.
    pub fn canonical(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "https://{host}:{}{}",
            self.port,
            match &self.query {
                Some(q) => format!("{}?{q}", remove_dot_segments(&self.path)),
                None => remove_dot_segments(&self.path),
            }
        )
    }

    /// Resolves a URI reference (e.g. a `Location` header) against this URL (RFC 3986 §5.2).
    /// An absolute reference with another scheme is [`UrlError::NotHttps`].
    pub fn resolve(&self, reference: &str) -> Result<HttpsUrl, UrlError> {
        let r = reference.trim();
        let r = r.split_once('#').map_or(r, |(before, _)| before);
        if let Some((scheme, _)) = r.split_once(':') {
            // A colon before any '/', '?' is a scheme delimiter (§4.2: a relative path's first
            // segment cannot contain one).
            if !scheme.contains(['/', '?']) {
                if !is_scheme(scheme) {
                    return Err(UrlError::NotAUrl);
                }
                let abs: HttpsUrl = r.parse()?;
                return Ok(HttpsUrl {
                    path: remove_dot_segments(&abs.path),
                    ..abs
                });
            }
        }
        if r.starts_with("//") {
            let abs: HttpsUrl = format!("https:{r}").parse()?;
            return Ok(HttpsUrl {
                path: remove_dot_segments(&abs.path),
                ..abs
            });
        }
        let (path, query) = match r.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (r, None),
        };
        let (path, query) = if path.is_empty() {
            (self.path.clone(), query.or_else(|| self.query.clone()))
        } else if path.starts_with('/') {
            (remove_dot_segments(path), query)
        } else {
            // §5.2.3 merge: the base path up to its last '/', then the reference.
            let dir = self
                .path
                .rfind('/')
                .and_then(|i| self.path.get(..=i))
                .unwrap_or("/")
                .to_owned();
            (remove_dot_segments(&format!("{dir}{path}")), query)
        };
        // Re-parse so that the result obeys the same rules as any other URL.
        let text = match query {
            Some(q) => format!("https://{}{path}?{q}", self.authority),
            None => format!("https://{}{path}", self.authority),
        };
        text.parse()
    }
}

/// RFC 3986 §5.2.4 for an absolute path: `.` and `..` segments removed.
pub fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpsUrl {
        s.parse().expect("url")
    }

    #[test]
    fn parses_https_only() {
        let u = url("https://Cloud.Example:8443/.well-known/brski");
        assert_eq!(u.host(), "cloud.example");
        assert_eq!(u.port(), 8443);
        assert_eq!(u.path(), "/.well-known/brski");
        assert_eq!(
            u.to_string(),
            "https://cloud.example:8443/.well-known/brski"
        );
        assert_eq!(url("https://[::1]/x").host(), "::1");
        assert_eq!(url("https://h").path(), "/");
        assert_eq!(
            "http://h/x".parse::<HttpsUrl>().err(),
            Some(UrlError::NotHttps("http".into()))
        );
        assert_eq!(
            "HTTP://h/x".parse::<HttpsUrl>().err(),
            Some(UrlError::NotHttps("http".into()))
        );
        assert_eq!(
            "https://u:p@h/x".parse::<HttpsUrl>().err(),
            Some(UrlError::UserInfo)
        );
        assert!("/relative".parse::<HttpsUrl>().is_err());
        assert!("https://h:65536/".parse::<HttpsUrl>().is_err());
        assert_eq!(url("https://h:65535/").port(), 65535);
        assert_eq!(url("https://[::1]:8443/").port(), 8443);
        assert_eq!(url("https://[::1]/").port(), 443);
        assert!("https://".parse::<HttpsUrl>().is_err());
        assert!("".parse::<HttpsUrl>().is_err());
    }

    /// RFC 3986 §5.4.1 normal examples, with the base's scheme changed to https and the
    /// examples that leave https (g:h) refused.
    #[test]
    fn rfc3986_examples() {
        let base = url("https://a/b/c/d;p?q");
        let cases = [
            ("g", "https://a/b/c/g"),
            ("./g", "https://a/b/c/g"),
            ("g/", "https://a/b/c/g/"),
            ("/g", "https://a/g"),
            ("//g", "https://g/"),
            ("?y", "https://a/b/c/d;p?y"),
            ("g?y", "https://a/b/c/g?y"),
            ("#s", "https://a/b/c/d;p?q"),
            ("g#s", "https://a/b/c/g"),
            (";x", "https://a/b/c/;x"),
            ("", "https://a/b/c/d;p?q"),
            (".", "https://a/b/c/"),
            ("./", "https://a/b/c/"),
            ("..", "https://a/b/"),
            ("../", "https://a/b/"),
            ("../g", "https://a/b/g"),
            ("../..", "https://a/"),
            ("../../g", "https://a/g"),
            ("../../../g", "https://a/g"),
            ("/./g", "https://a/g"),
            ("/../g", "https://a/g"),
            ("g/./h", "https://a/b/c/g/h"),
            ("g/../h", "https://a/b/c/h"),
            ("https://x:9/p/../q", "https://x:9/q"),
        ];
        for (r, want) in cases {
            let got = base.resolve(r).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(got.to_string(), want, "resolving {r:?}");
        }
        assert_eq!(
            base.resolve("g:h").err(),
            Some(UrlError::NotHttps("g".into()))
        );
        assert_eq!(
            base.resolve("http://a/b").err(),
            Some(UrlError::NotHttps("http".into()))
        );
    }

    #[test]
    fn canonical_form_and_joins() {
        assert_eq!(
            url("https://A:443/x/./y").canonical(),
            url("https://a/x/y").canonical()
        );
        assert_ne!(
            url("https://a:8443/x").canonical(),
            url("https://a/x").canonical()
        );
        assert_eq!(
            url("https://[::1]:8443/x").canonical(),
            "https://[::1]:8443/x"
        );
        let b = url("https://r:1/.well-known/brski/");
        assert_eq!(
            b.join("requestvoucher").to_string(),
            "https://r:1/.well-known/brski/requestvoucher"
        );
        assert_eq!(
            url("https://r/a?q")
                .with_path("/.well-known/est")
                .to_string(),
            "https://r/.well-known/est"
        );
    }
}
