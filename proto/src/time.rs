//! RFC 3339 date-times (`2026-11-28T19:00:00Z`) as the protocols carry them: voucher
//! `created-on` / `expires-on` (RFC 8366 §5.3) and ACME `expires` (RFC 8555 §7.1). Text from
//! a peer is hostile: the parser reads by `str::get`, never by a byte index that could fall
//! inside a multi-byte character.

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (RFC 3339 §5.6), days by the
/// proleptic Gregorian calendar.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Seconds since the Unix epoch of an RFC 3339 date-time (`Z` or `±HH:MM`, optional fraction,
/// which is dropped); `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, se) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // RFC 3339 §5.7: the day must exist in that month (leap years included).
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let v = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *c == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Days in month `m` (1..=12) of year `y`, proleptic Gregorian (RFC 3339 Appendix C).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public-domain algorithms, written here).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_475_868_702), "2016-10-07T19:31:42Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0, 1_475_868_702, 951_782_400, 4_102_444_800, 1_795_000_123] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2016-10-07T21:31:42.123+02:00"),
            Some(1_475_868_702)
        );
        for bad in [
            "",
            "2016-10-07",
            "2016-13-07T00:00:00Z",
            "2016-10-07T00:00:00",
            "2016-10-07T00:00:00Zx",
            "2016-10-07T00:00:00.",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    /// RFC 8555 §7.1.4: an authorization's `expires`, as an ACME CA writes it.
    #[test]
    fn acme_expires() {
        assert_eq!(parse_rfc3339("2016-01-02T14:09:30Z"), Some(1_451_743_770));
        assert_eq!(
            parse_rfc3339("2016-01-02T14:09:30.123Z"),
            Some(1_451_743_770)
        );
        assert_eq!(
            parse_rfc3339("2016-01-02T16:09:30+02:00"),
            Some(1_451_743_770)
        );
        assert_eq!(parse_rfc3339("2016-01-02 14:09:30"), None);
        for cut in 0..20 {
            assert_eq!(parse_rfc3339(&"2016-01-02T14:09:30Z"[..cut]), None);
        }
    }

    /// A CA-supplied string with a multi-byte character where the old control-plane parser
    /// sliced by byte index (offset, fraction, separators) is refused, not a panic.
    #[test]
    fn multi_byte_characters_are_refused() {
        for bad in [
            "2016-01-02T14:09:30+1\u{e9}00",
            "2016-01-02T14:09:30+\u{e9}:000",
            "2016-01-02T14:09:30+01\u{e9}0",
            "2016-01-02T14:09:30.\u{e9}Z",
            "2016-01-02T14:09:3\u{e9}Z",
            "2016\u{e9}01-02T14:09:30Z",
            "2016-01-02T14:09:30\u{1f600}",
            "\u{1f600}\u{1f600}\u{1f600}\u{1f600}\u{1f600}",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    /// Found by fuzzing (fuzz target rfc3339): `9999-02-31` was read as 3 March. RFC 3339 §5.7
    /// bounds the day by the month; February has 29 days only in leap years.
    #[test]
    fn days_beyond_the_month_are_refused() {
        assert_eq!(parse_rfc3339("9999-02-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-04-31T00:00:00Z"), None);
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2026-12-31T00:00:00Z").is_some());
    }
}
