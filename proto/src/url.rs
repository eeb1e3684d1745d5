//! `https` URLs as BRSKI uses them (registrar, cloud registrar, `est-domain`, redirect
//! `Location`s): a checked newtype, and RFC 3986 §5.2 reference resolution. No I/O.
//!
//! The parser is deliberately narrow: `https://host[:port][/path][?query][#fragment]`, where
//! the host is a DNS name or an IP address (what a TLS server certificate can name, RFC 9525)
//! and path and query are visible ASCII. Anything else is refused with a typed [`UrlError`].
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// Why a string is not a usable `https` URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute URL (`scheme://authority...`) of visible ASCII.
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
    /// A query or fragment where a base URL is expected ([`HttpsUrl::parse_base`]).
    #[error("a query or fragment is not allowed here")]
    QueryOrFragment,
}

/// An absolute `https` URL with a host that is a valid TLS server name. The fragment, if any,
/// is dropped (it never reaches the server).
///
/// [`fmt::Display`] gives the normal form (scheme and authority lower case);
/// [`HttpsUrl::as_written`] the text it was parsed from, for byte-for-byte comparisons (e.g. a
/// voucher's `est-domain` with the URL a cloud registrar asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    host: String,
    port: u16,
    authority: String,
    path: String,
    query: Option<String>,
    written: String,
}

impl FromStr for HttpsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let without_fragment = s.split_once('#').map_or(s, |(before, _)| before);
        let mut url = parse_absolute(without_fragment)?;
        url.written = s.to_string();
        Ok(url)
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority, self.path)?;
        match &self.query {
            Some(q) => write!(f, "?{q}"),
            None => Ok(()),
        }
    }
}

/// RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// A DNS name a TLS server name may be (RFC 1123 labels, `_` tolerated as certificates do):
/// at most 253 bytes, labels of 1 to 63 letters, digits, `-` and `_` that neither start nor end
/// with `-`, the last label not all digits, an optional final dot.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || host.len() > 253 {
        return false;
    }
    let mut labels = name.split('.').peekable();
    while let Some(label) = labels.next() {
        let bytes = label.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if !ok {
            return false;
        }
        if labels.peek().is_none() && bytes.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    true
}

/// Path and query characters: visible ASCII, no `#`.
fn is_target_text(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// `authority` (`host[:port]`, IPv6 in brackets) into (host without brackets, port).
fn split_authority(authority: &str) -> Result<(String, u16), UrlError> {
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let (host, port_text) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(UrlError::BadHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UrlError::BadHost)?),
        };
        inside.parse::<Ipv6Addr>().map_err(|_| UrlError::BadHost)?;
        (inside, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let host = host.to_ascii_lowercase();
    let is_ip = host.parse::<IpAddr>().is_ok();
    if !is_ip && !is_dns_name(&host) {
        return Err(UrlError::BadHost);
    }
    let port = match port_text {
        None | Some("") => 443,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| UrlError::BadPort)?
        }
        Some(_) => return Err(UrlError::BadPort),
    };
    Ok((host, port))
}

/// `https://authority[path][?query]` (no fragment) into its parts; `written` is left empty.
fn parse_absolute(s: &str) -> Result<HttpsUrl, UrlError> {
    let (scheme, rest) = s.split_once(':').ok_or(UrlError::NotAUrl)?;
    if !is_scheme(scheme) {
        return Err(UrlError::NotAUrl);
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" {
        return Err(UrlError::NotHttps(scheme));
    }
    let rest = rest.strip_prefix("//").ok_or(UrlError::NotAUrl)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return Err(UrlError::NoHost);
    }
    if !authority.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UrlError::BadHost);
    }
    let (host, port) = split_authority(authority)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !is_target_text(path) || !query.is_none_or(is_target_text) {
        return Err(UrlError::NotAUrl);
    }
    Ok(HttpsUrl {
        host,
        port,
        authority: authority.to_ascii_lowercase(),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
        query: query.map(str::to_owned),
        written: String::new(),
    })
}

impl HttpsUrl {
    /// A base URL: [`HttpsUrl::from_str`]'s rules, and no query or fragment (paths are
    /// appended to it). Such a URL's [`HttpsUrl::as_written`] is exactly `s`.
    pub fn parse_base(s: &str) -> Result<HttpsUrl, UrlError> {
        if s.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment);
        }
        s.parse()
    }

    /// Parts into a URL whose written form is its normal form.
    fn normalised(mut self) -> HttpsUrl {
        self.written = String::new();
        self.written = self.to_string();
        self
    }

    /// The text this URL was parsed from (fragment included); for a URL made by
    /// [`HttpsUrl::with_path`], [`HttpsUrl::join`] or [`HttpsUrl::resolve`], its normal form.
    pub fn as_written(&self) -> &str {
        &self.written
    }

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

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
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
        .normalised()
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
                let abs = parse_absolute(r)?;
                return Ok(HttpsUrl {
                    path: remove_dot_segments(&abs.path),
                    ..abs
                }
                .normalised());
            }
        }
        if let Some(net_path) = r.strip_prefix("//") {
            let abs = parse_absolute(&format!("https://{net_path}"))?;
            return Ok(HttpsUrl {
                path: remove_dot_segments(&abs.path),
                ..abs
            }
            .normalised());
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
        parse_absolute(&text).map(HttpsUrl::normalised)
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
        assert_eq!(
            u.as_written(),
            "https://Cloud.Example:8443/.well-known/brski"
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

    #[test]
    fn hosts_ports_and_text_are_checked() {
        assert_eq!(url("https://10.0.0.1:8443/").host(), "10.0.0.1");
        assert_eq!(url("https://est_1.example./").host(), "est_1.example.");
        let err = |s: &str| s.parse::<HttpsUrl>().expect_err(s);
        assert_eq!(err("https:///path"), UrlError::NoHost);
        assert_eq!(err("https://:443/"), UrlError::NoHost);
        assert_eq!(err("https://h:+80/"), UrlError::BadPort);
        assert_eq!(err("https://h:8x/"), UrlError::BadPort);
        assert_eq!(err("https://-h.example/"), UrlError::BadHost);
        assert_eq!(err("https://h-.example/"), UrlError::BadHost);
        assert_eq!(err("https://a..b/"), UrlError::BadHost);
        assert_eq!(err("https://1.2.3/"), UrlError::BadHost);
        assert_eq!(err("https://h%41/"), UrlError::BadHost);
        assert_eq!(err("https://[::1/"), UrlError::BadHost);
        assert_eq!(err("https://[nope]/"), UrlError::BadHost);
        assert_eq!(err("https://[::1]x/"), UrlError::BadHost);
        assert_eq!(
            err(&format!("https://{}/", "a".repeat(64))),
            UrlError::BadHost
        );
        assert_eq!(err("https://h/a b"), UrlError::NotAUrl);
        assert_eq!(err("https://h/\u{e9}"), UrlError::NotAUrl);
        assert_eq!(err("https:h/x"), UrlError::NotAUrl);
        assert_eq!(err("1https://h/"), UrlError::NotAUrl);
        assert_eq!(url("https://h/p#frag").to_string(), "https://h/p");
        assert_eq!(url("https://h/p?a=1").query(), Some("a=1"));
    }

    #[test]
    fn base_urls_are_kept_as_written() {
        let b =
            HttpsUrl::parse_base("https://Est.Owner.example:8443/.well-known/est/").expect("base");
        assert_eq!(
            b.as_written(),
            "https://Est.Owner.example:8443/.well-known/est/"
        );
        assert_eq!(b.authority(), "est.owner.example:8443");
        assert_eq!(
            HttpsUrl::parse_base("https://h/x?q").err(),
            Some(UrlError::QueryOrFragment)
        );
        assert_eq!(
            HttpsUrl::parse_base("https://h/x#f").err(),
            Some(UrlError::QueryOrFragment)
        );
        assert_eq!(
            HttpsUrl::parse_base("http://h/").err(),
            Some(UrlError::NotHttps("http".into()))
        );
        assert_eq!(
            b.join("simpleenroll").as_written(),
            "https://est.owner.example:8443/.well-known/est/simpleenroll"
        );
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
            assert_eq!(got.as_written(), want, "resolving {r:?}");
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

    proptest::proptest! {
        /// Hostile input never panics; what parses prints in a form that parses to the same
        /// parts, and resolving any reference against it is total too.
        #[test]
        fn any_text_is_safe(s in "\\PC{0,64}", r in "\\PC{0,32}") {
            let _ = HttpsUrl::parse_base(&s);
            let with_scheme = format!("https://{s}");
            for text in [s.as_str(), with_scheme.as_str()] {
                if let Ok(u) = text.parse::<HttpsUrl>() {
                    let again: HttpsUrl = u.to_string().parse().expect("normal form parses");
                    proptest::prop_assert_eq!(again.to_string(), u.to_string());
                    let _ = u.resolve(&r);
                    let _ = u.canonical();
                }
            }
        }
    }
}
