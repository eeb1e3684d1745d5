//! Which hosts this EST / BRSKI server answers for (pure).
//!
//! On a listener shared with other servers (an Istio ingress gateway, one port for many SNI names)
//! the filter may see requests that were meant for another host. With `authorities` configured,
//! a request on an EST or BRSKI path whose `:authority` names no listed host is answered 421
//! Misdirected Request (RFC 9110 §15.5.20) at the edge; other paths are not looked at.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// One host the server answers for: a DNS name in lower case without a trailing dot, or an IP
/// address in its canonical text form (IPv6 without brackets).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerHost(String);

impl ServerHost {
    /// A DNS name (letters, digits and `-` in labels of 1 to 63, at most 253 in all; one
    /// trailing dot ignored; compared case-insensitively) or an IPv4 / IPv6 address (IPv6 with
    /// or without brackets). `None` for anything else, including the empty string and a port.
    pub fn parse(s: &str) -> Option<ServerHost> {
        if let Some(ip) = parse_ip(s) {
            return Some(ServerHost(ip.to_string()));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('.').all(is_dns_label) {
            return None;
        }
        Some(ServerHost(name.to_ascii_lowercase()))
    }

    /// The host, as compared.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerHost({})", self.0)
    }
}

fn is_dns_label(label: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse::<IpAddr>().ok(),
    }
}

/// The host part of an `:authority` value (RFC 9110 §7.2: `host[:port]`, IPv6 in brackets):
/// the port is dropped, the brackets kept. `None` if it is not UTF-8.
pub fn host_part(authority: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(authority).ok()?;
    if s.starts_with('[') {
        let end = s.find(']')?;
        return s.get(..=end);
    }
    Some(s.rsplit_once(':').map_or(s, |(host, _port)| host))
}

/// True if `authority` (the request's `:authority`, `None` if it had none) names one of `hosts`.
pub fn admits(hosts: &[ServerHost], authority: Option<&[u8]>) -> bool {
    let Some(host) = authority.and_then(host_part) else {
        return false;
    };
    if let Some(ip) = parse_ip(host) {
        let ip = ip.to_string();
        return hosts.iter().any(|h| h.0 == ip);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    hosts.iter().any(|h| h.0.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hosts(list: &[&str]) -> Vec<ServerHost> {
        list.iter().map(|s| ServerHost::parse(s).unwrap()).collect()
    }

    #[test]
    fn entries_are_dns_names_or_ip_addresses() {
        assert_eq!(
            ServerHost::parse("EST.Example.COM.").unwrap().as_str(),
            "est.example.com"
        );
        assert_eq!(
            ServerHost::parse("localhost").unwrap().as_str(),
            "localhost"
        );
        assert_eq!(ServerHost::parse("a-1.b2").unwrap().as_str(), "a-1.b2");
        assert_eq!(
            ServerHost::parse("192.0.2.10").unwrap().as_str(),
            "192.0.2.10"
        );
        assert_eq!(
            ServerHost::parse("[2001:DB8::0:1]").unwrap().as_str(),
            "2001:db8::1"
        );
        assert_eq!(
            ServerHost::parse("2001:db8::1").unwrap().as_str(),
            "2001:db8::1"
        );
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 4].join(".");
        for bad in [
            "",
            ".",
            "est.example.com:443",
            "*.example.com",
            "-est.example.com",
            "est-.example.com",
            "est..example.com",
            "est example.com",
            "est_1.example.com",
            "[192.0.2.1]",
            "[2001:db8::1",
            "https://est.example.com",
            "ést.example.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(ServerHost::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_part_drops_the_port() {
        assert_eq!(host_part(b"est.example.com"), Some("est.example.com"));
        assert_eq!(host_part(b"est.example.com:8443"), Some("est.example.com"));
        assert_eq!(host_part(b"[2001:db8::1]:443"), Some("[2001:db8::1]"));
        assert_eq!(host_part(b"[2001:db8::1]"), Some("[2001:db8::1]"));
        assert_eq!(host_part(b"[2001:db8::1"), None);
        assert_eq!(host_part(b"\xff"), None);
        assert_eq!(host_part(b""), Some(""));
    }

    #[test]
    fn admits_listed_hosts_only() {
        let h = hosts(&["est.example.com", "192.0.2.10", "2001:db8::1"]);
        for ok in [
            &b"est.example.com"[..],
            b"EST.Example.Com",
            b"est.example.com:443",
            b"est.example.com.",
            b"est.example.com.:8443",
            b"192.0.2.10",
            b"192.0.2.10:8443",
            b"[2001:db8::1]:443",
            b"[2001:DB8:0::1]",
        ] {
            assert!(
                admits(&h, Some(ok)),
                "{:?} refused",
                String::from_utf8_lossy(ok)
            );
        }
        for refused in [
            &b"other.example.com"[..],
            b"est.example.com.evil.test",
            b"xest.example.com",
            b"example.com",
            b"",
            b":443",
            b"192.0.2.11",
            b"[2001:db8::2]:443",
            b"[2001:db8::1",
            b"est.example.com\xff",
        ] {
            assert!(
                !admits(&h, Some(refused)),
                "{:?} admitted",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(!admits(&h, None), "no :authority, no admission");
        assert!(!admits(&[], Some(b"est.example.com")));
    }
}
