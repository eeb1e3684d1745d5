//! Checked DNS-name newtypes for device identities.
//!
//! A device is named `<serial>.<parent domain>`; each part has its own type so that a string
//! that has not been checked cannot be used where a name is expected.

use core::fmt;
use core::str::FromStr;

/// Maximum length of one DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Maximum length of a DNS name in text form without trailing dot (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;

/// What is wrong with a name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name (or serial) is empty.
    #[error("name is empty")]
    Empty,
    /// A label between dots is empty (e.g. `a..b`).
    #[error("name has an empty label")]
    EmptyLabel,
    /// A label is longer than 63 characters.
    #[error("label is {len} characters long; at most 63 are allowed")]
    LabelTooLong {
        /// Length of the offending label.
        len: usize,
    },
    /// The whole name is longer than 253 characters.
    #[error("name is {len} characters long; at most 253 are allowed")]
    NameTooLong {
        /// Length of the name.
        len: usize,
    },
    /// A character outside `[a-z0-9-]` (after lower-casing).
    #[error("character {ch:?} is not allowed in a DNS label (only letters, digits and '-')")]
    BadCharacter {
        /// The offending character.
        ch: char,
    },
    /// A label starts or ends with `-`.
    #[error("a label must not start or end with '-'")]
    HyphenAtEdge,
    /// A device serial must be a single label.
    #[error("a device serial must be one DNS label (no dots)")]
    NotOneLabel,
    /// A parent domain needs at least two labels.
    #[error("a parent domain needs at least two labels")]
    TooFewLabels,
    /// The name is not exactly one label below the parent domain.
    #[error("name {name:?} is not exactly one label below {parent:?}")]
    NotUnderParent {
        /// The name as given (lower-cased).
        name: String,
        /// The parent domain.
        parent: String,
    },
}

/// Checks one lower-case LDH label.
fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong { len: label.len() });
    }
    if let Some(ch) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadCharacter { ch });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::HyphenAtEdge);
    }
    Ok(())
}

/// Lower-cases, drops one trailing dot, checks every label and the total length.
fn normalise_name(s: &str) -> Result<String, NameError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    let lower = s.to_ascii_lowercase();
    for label in lower.split('.') {
        check_label(label)?;
    }
    if lower.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong { len: lower.len() });
    }
    Ok(lower)
}

macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            /// The checked, lower-case text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A device serial number usable as one DNS label: lower-cased, 1..=63 chars of `[a-z0-9-]`,
/// not starting or ending with `-`. Built from an IDevID subject serialNumber.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceSerial(String);

impl DeviceSerial {
    /// Checks and lower-cases a serial.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.contains('.') {
            return Err(NameError::NotOneLabel);
        }
        let lower = s.to_ascii_lowercase();
        check_label(&lower)?;
        Ok(DeviceSerial(lower))
    }
}
string_newtype!(DeviceSerial);

/// The DNS domain under which devices are named: lower-cased, no trailing dot, LDH labels of
/// 1..=63 chars, at most 253 chars, at least two labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentDomain(String);

impl ParentDomain {
    /// Checks and lower-cases a parent domain (one trailing dot is accepted and dropped).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let name = normalise_name(s)?;
        if !name.contains('.') {
            return Err(NameError::TooFewLabels);
        }
        Ok(ParentDomain(name))
    }
}
string_newtype!(ParentDomain);

/// A device's DNS name: `<serial>.<parent>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceName {
    name: String,
    serial: DeviceSerial,
}

impl DeviceName {
    /// Joins a serial and a parent; fails when the result exceeds 253 characters.
    pub fn new(serial: &DeviceSerial, parent: &ParentDomain) -> Result<Self, NameError> {
        let name = format!("{}.{}", serial.as_str(), parent.as_str());
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong { len: name.len() });
        }
        Ok(DeviceName {
            name,
            serial: serial.clone(),
        })
    }

    /// Accepts `name` only when it is exactly one label below `parent` (case-insensitive; one
    /// trailing dot accepted).
    pub fn parse_under(name: &str, parent: &ParentDomain) -> Result<Self, NameError> {
        let lower = normalise_name(name)?;
        let not_under = || NameError::NotUnderParent {
            name: lower.clone(),
            parent: parent.as_str().to_owned(),
        };
        let label = lower
            .strip_suffix(parent.as_str())
            .and_then(|l| l.strip_suffix('.'))
            .ok_or_else(not_under)?;
        if label.contains('.') || label.is_empty() {
            return Err(not_under());
        }
        let serial = DeviceSerial::parse(label)?;
        DeviceName::new(&serial, parent)
    }

    /// Parses any name of at least three labels: the first label is the serial, the rest the
    /// parent domain.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let lower = normalise_name(s)?;
        let (first, rest) = lower.split_once('.').ok_or(NameError::TooFewLabels)?;
        let parent = ParentDomain::parse(rest)?;
        let serial = DeviceSerial::parse(first)?;
        DeviceName::new(&serial, &parent)
    }

    /// The device serial (first label).
    pub fn serial(&self) -> &DeviceSerial {
        &self.serial
    }

    /// The parent domain (everything after the first label).
    pub fn parent(&self) -> ParentDomain {
        // The name was built from a valid serial and a valid parent, so the split exists.
        let rest = self
            .name
            .split_once('.')
            .map(|(_, r)| r)
            .unwrap_or_default();
        ParentDomain(rest.to_owned())
    }

    /// The full name, lower-case, without trailing dot.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for DeviceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl AsRef<str> for DeviceName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// Whole-string glob match, case-sensitive: `*` matches any run of characters (also none), `?`
/// exactly one character, every other character itself. There is no escape character.
///
/// Iterative, remembering only the last `*` seen: on a mismatch the text position after that star
/// advances by one and matching resumes there. Work is bounded by `pattern.len() * text.len()`
/// steps; no recursion, so no hostile pattern or text can exhaust the stack.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // (index of the last `*` in the pattern, text index it is currently made to end at)
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some('*'), _) => {
                star = Some((pi, ti));
                pi += 1;
            }
            (Some('?'), Some(_)) => {
                pi += 1;
                ti += 1;
            }
            (Some(pc), Some(tc)) if pc == tc => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and try again after it.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    // The text is used up: what is left of the pattern must be stars only.
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> ParentDomain {
        ParentDomain::parse("IoT.Example.Test.").unwrap()
    }

    #[test]
    fn serials() {
        assert_eq!(DeviceSerial::parse("SN-0042").unwrap().as_str(), "sn-0042");
        assert_eq!(DeviceSerial::parse(""), Err(NameError::Empty));
        assert_eq!(DeviceSerial::parse("a.b"), Err(NameError::NotOneLabel));
        assert_eq!(DeviceSerial::parse("-a"), Err(NameError::HyphenAtEdge));
        assert_eq!(DeviceSerial::parse("a-"), Err(NameError::HyphenAtEdge));
        assert_eq!(
            DeviceSerial::parse("a_b"),
            Err(NameError::BadCharacter { ch: '_' })
        );
        assert_eq!(
            DeviceSerial::parse("é"),
            Err(NameError::BadCharacter { ch: 'é' })
        );
        assert!(DeviceSerial::parse(&"a".repeat(63)).is_ok());
        assert_eq!(
            DeviceSerial::parse(&"a".repeat(64)),
            Err(NameError::LabelTooLong { len: 64 })
        );
        let s: DeviceSerial = "X1".parse().unwrap();
        assert_eq!(s.to_string(), "x1");
    }

    #[test]
    fn parents() {
        assert_eq!(parent().as_str(), "iot.example.test");
        assert_eq!(ParentDomain::parse("test"), Err(NameError::TooFewLabels));
        assert_eq!(ParentDomain::parse("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(ParentDomain::parse("."), Err(NameError::Empty));
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(
            ParentDomain::parse(&long),
            Err(NameError::NameTooLong { len: 255 })
        );
    }

    #[test]
    fn device_names() {
        let p = parent();
        let s = DeviceSerial::parse("SN1").unwrap();
        let n = DeviceName::new(&s, &p).unwrap();
        assert_eq!(n.as_str(), "sn1.iot.example.test");
        assert_eq!(n.serial(), &s);
        assert_eq!(n.parent(), p);
        assert_eq!(
            DeviceName::parse_under("SN1.IOT.example.test.", &p).unwrap(),
            n
        );
        assert_eq!(DeviceName::parse("sn1.iot.example.test").unwrap(), n);
        for bad in [
            "iot.example.test",
            "a.b.iot.example.test",
            "sn1.other.test",
            "sn1xiot.example.test",
            ".iot.example.test",
        ] {
            assert!(DeviceName::parse_under(bad, &p).is_err(), "{bad}");
        }
        // 253 limit on the joined name.
        let p2 = ParentDomain::parse(&vec!["b".repeat(63); 3].join(".")).unwrap();
        let s2 = DeviceSerial::parse(&"a".repeat(63)).unwrap();
        assert!(matches!(
            DeviceName::new(&s2, &p2),
            Err(NameError::NameTooLong { len: 255 })
        ));
    }

    #[test]
    fn glob_literals_and_wildcards() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything at all"));
        assert!(glob_match("**", ""));
        assert!(!glob_match("?", ""));
        assert!(glob_match("?", "x"));
        assert!(!glob_match("?", "xy"));
        assert!(glob_match("DEMO-*", "DEMO-"));
        assert!(glob_match("DEMO-*", "DEMO-0001"));
        assert!(!glob_match("DEMO-*", "demo-0001"), "case-sensitive");
        assert!(!glob_match("DEMO-*", "XDEMO-0001"), "anchored at the start");
        assert!(!glob_match("*-0001", "DEMO-0001x"), "anchored at the end");
        assert!(glob_match("*-0001", "DEMO-0001"));
        assert!(glob_match("SN-????", "SN-1234"));
        assert!(!glob_match("SN-????", "SN-123"));
        assert!(!glob_match("SN-????", "SN-12345"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(
            glob_match("a*bc", "abcbcbc"),
            "backtracks past an early partial match"
        );
        assert!(glob_match("*a?c*", "zzabcab"));
        assert!(
            glob_match("[x]", "[x]"),
            "no character classes: brackets are literal"
        );
        assert!(
            glob_match("\\*", "\\abc"),
            "no escapes: backslash is literal"
        );
        assert!(glob_match("é?", "éß"), "? is one character, not one byte");
        assert!(!glob_match("?", "é\u{301}"), "two characters");
    }

    #[test]
    fn glob_hostile_input_is_linear_enough() {
        // Exponential for naive recursion; bounded by len(pattern) * len(text) here.
        let pattern = format!("{}b", "a*".repeat(200));
        let text = "a".repeat(5000);
        assert!(!glob_match(&pattern, &text));
        let text = format!("{}b", "a".repeat(5000));
        assert!(glob_match(&pattern, &text));
    }
}
