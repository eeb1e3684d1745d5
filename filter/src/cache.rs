//! Cache entries kept in proxy-wasm shared data: the `cacerts`, `csrattrs` and enrolment
//! answers, and the digests of CSRs and client certificates whose signature verified.
//!
//! Answer layout: 8 bytes big-endian expiry (seconds since the Unix epoch), then the answer
//! (`cacerts`: the base64 reply body; bucketed answers: DER, see below).
//!
//! Verified digests (of CSRs, and of client certificates with their issuer,
//! [`estuary_proto::cms_signed::issued_by_digest`]) sit in a fixed set of buckets, so the number of shared-data keys never
//! grows (Envoy's shared data has no delete): `max_entries` entries make
//! `ceil(max_entries / 4)` buckets of up to 4 entries, the last one smaller if need be. A digest
//! goes to the bucket its first 8 bytes name. A bucket value is a list of 40-byte entries, each
//! 8 bytes big-endian expiry then the 32-byte digest. Inserting drops the expired
//! entries and, when the bucket is full, the one that expires first (the oldest).

use estuary_proto::names::DeviceSerial;

/// Shared-data key for the CA certificates of a label, kept as the base64 reply body. (Not
/// `estuary.cacerts/…`, where earlier versions kept DER: shared data outlives a filter upgrade.)
pub fn cacerts_key(label: Option<&str>) -> String {
    format!("estuary.cacerts.b64/{}", label.unwrap_or(""))
}

/// Shared-data key for the certificates of a label's `/cacerts` as the root context last
/// fetched them from the control plane (the learned ACME intermediates; raw PKCS#7 DER, no
/// expiry: they only help build a path to `acme_ca_pem`, so an old answer is harmless).
pub fn learned_key(label: Option<&str>) -> String {
    format!("estuary.learned/{}", label.unwrap_or(""))
}

/// The name of one device's CSR attributes under a label in the csrattrs cache: SHA-256 of
/// `<label>/<serial>` (a label never contains `/`).
pub fn csrattrs_digest(label: Option<&str>, serial: &DeviceSerial) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::new()
        .chain_update(label.unwrap_or("").as_bytes())
        .chain_update(b"/")
        .chain_update(serial.as_str().as_bytes())
        .finalize()
        .into()
}

/// The name of one enrolment answer in the enrolment-answer cache: SHA-256 over the operation,
/// the EST label, the exact client certificate (DER) and the exact CSR (DER), each
/// length-prefixed so that no two different inputs run together into the same bytes. Any byte
/// of either changed, another operation or label: another digest.
pub fn enrolled_digest(
    operation: &str,
    label: Option<&str>,
    client_cert_der: &[u8],
    csr_der: &[u8],
) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"estuary-enroll-answer\0");
    for part in [
        operation.as_bytes(),
        label.unwrap_or("").as_bytes(),
        client_cert_der,
        csr_der,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Build an entry that expires at `expires_at` (Unix seconds).
pub fn encode(expires_at: u64, der: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + der.len());
    v.extend_from_slice(&expires_at.to_be_bytes());
    v.extend_from_slice(der);
    v
}

/// An entry still fresh at `now` (Unix seconds): its expiry and its answer; else `None`.
pub fn fresh(entry: &[u8], now: u64) -> Option<(u64, &[u8])> {
    let (head, der) = entry.split_first_chunk::<8>()?;
    let expires_at = u64::from_be_bytes(*head);
    (now < expires_at && !der.is_empty()).then_some((expires_at, der))
}

/// Entries per CSR-digest bucket.
pub const SIG_WAYS: u32 = 4;
const SIG_ENTRY: usize = 8 + 32;

/// The bucket of one CSR digest: its shared-data key and how many entries it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigBucket {
    /// Shared-data key.
    pub key: String,
    /// Most entries this bucket holds (1 to [`SIG_WAYS`]).
    pub capacity: usize,
}

/// The bucket `digest` belongs to when the cache holds at most `max_entries` (`None` for 0: no
/// cache).
pub fn sig_bucket(digest: &[u8; 32], max_entries: u32) -> Option<SigBucket> {
    bucket("estuary.csrsig/", digest, max_entries)
}

/// The bucket of a csrattrs answer ([`csrattrs_digest`]), as [`sig_bucket`] with its own keys
/// (`estuary.attrs/<index>`).
pub fn attrs_bucket(digest: &[u8; 32], max_entries: u32) -> Option<SigBucket> {
    bucket("estuary.attrs/", digest, max_entries)
}

/// The bucket of an enrolment answer ([`enrolled_digest`]), as [`sig_bucket`] with its own keys
/// (`estuary.enrolled/<index>`).
pub fn enrolled_bucket(digest: &[u8; 32], max_entries: u32) -> Option<SigBucket> {
    bucket("estuary.enrolled/", digest, max_entries)
}

/// `ceil(max_entries / 4)` buckets of [`SIG_WAYS`] entries (the last one smaller if need be)
/// under `prefix`; the first 8 bytes of `digest` choose one.
fn bucket(prefix: &str, digest: &[u8; 32], max_entries: u32) -> Option<SigBucket> {
    let buckets = u64::from(max_entries.div_ceil(SIG_WAYS));
    let (head, _) = digest.split_first_chunk::<8>()?;
    let index = u64::from_be_bytes(*head).checked_rem(buckets)?;
    let before = index.saturating_mul(u64::from(SIG_WAYS));
    let capacity = u64::from(max_entries)
        .saturating_sub(before)
        .min(u64::from(SIG_WAYS));
    Some(SigBucket {
        key: format!("{prefix}{index}"),
        capacity: usize::try_from(capacity).ok()?,
    })
}

/// The answers of an answer bucket value (csrattrs, enrolments): each entry is 8 bytes
/// big-endian expiry, the
/// 32-byte digest, 2 bytes big-endian length and that many bytes of DER. A torn tail is ignored.
fn answer_entries(bucket: &[u8]) -> Vec<(u64, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut rest = bucket;
    while let Some((head, tail)) = rest.split_first_chunk::<42>() {
        let (expiry, digest_len) = head.split_at(8);
        let (digest, len) = digest_len.split_at(32);
        let (Ok(expiry), Ok(len)) = (<[u8; 8]>::try_from(expiry), <[u8; 2]>::try_from(len)) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(len));
        let Some((der, after)) = tail.split_at_checked(len) else {
            break;
        };
        out.push((u64::from_be_bytes(expiry), digest, der));
        rest = after;
    }
    out
}

/// The DER answer for `digest` in an answer bucket value, if it is there and fresh at `now`.
pub fn answer_get<'a>(bucket: &'a [u8], digest: &[u8; 32], now: u64) -> Option<&'a [u8]> {
    answer_entries(bucket)
        .into_iter()
        .find(|(e, d, _)| now < *e && *d == digest.as_slice())
        .map(|(_, _, der)| der)
}

/// How many answers an answer bucket value holds (expired ones included).
pub fn answer_len(bucket: &[u8]) -> usize {
    answer_entries(bucket).len()
}

/// `bucket` with the answer `der` for `digest` added to expire at `expires_at`: expired
/// entries and an older answer for `digest` dropped, then the earliest-expiring ones until it
/// fits in `capacity`. `None` when `der` is too long to store (over 65535 bytes).
pub fn answer_insert(
    bucket: &[u8],
    digest: &[u8; 32],
    der: &[u8],
    now: u64,
    expires_at: u64,
    capacity: usize,
) -> Option<Vec<u8>> {
    let len = u16::try_from(der.len()).ok()?;
    let mut kept: Vec<(u64, &[u8], &[u8])> = answer_entries(bucket)
        .into_iter()
        .filter(|(e, d, _)| now < *e && *d != digest.as_slice())
        .collect();
    kept.sort_by_key(|(e, _, _)| *e);
    let drop = kept.len().saturating_sub(capacity.saturating_sub(1));
    let mut out = Vec::new();
    let mut push = |e: u64, d: &[u8], der: &[u8], len: u16| {
        out.extend_from_slice(&e.to_be_bytes());
        out.extend_from_slice(d);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(der);
    };
    for (e, d, der) in kept.iter().skip(drop) {
        push(*e, d, der, u16::try_from(der.len()).unwrap_or(0));
    }
    if capacity > 0 {
        push(expires_at, digest, der, len);
    }
    Some(out)
}

/// The (expiry, digest) entries of a bucket value; a torn tail is ignored.
fn sig_entries(bucket: &[u8]) -> impl Iterator<Item = (u64, &[u8])> + '_ {
    bucket.chunks_exact(SIG_ENTRY).filter_map(|e| {
        let (head, digest) = e.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*head), digest))
    })
}

/// Whether `bucket` holds `digest`, unexpired at `now`.
pub fn sig_contains(bucket: &[u8], digest: &[u8; 32], now: u64) -> bool {
    sig_entries(bucket).any(|(expires_at, d)| now < expires_at && d == digest.as_slice())
}

/// How many entries `bucket` holds (expired ones included).
pub fn sig_len(bucket: &[u8]) -> usize {
    bucket.len() / SIG_ENTRY
}

/// `bucket` with `digest` added to expire at `expires_at`: expired entries and an older copy of
/// `digest` dropped, then the earliest-expiring entries until it fits in `capacity`.
pub fn sig_insert(
    bucket: &[u8],
    digest: &[u8; 32],
    now: u64,
    expires_at: u64,
    capacity: usize,
) -> Vec<u8> {
    let mut kept: Vec<(u64, &[u8])> = sig_entries(bucket)
        .filter(|(e, d)| now < *e && *d != digest.as_slice())
        .collect();
    kept.sort_by_key(|(e, _)| *e);
    let room = capacity.saturating_sub(1);
    let drop = kept.len().saturating_sub(room);
    let mut out = Vec::with_capacity(SIG_ENTRY * capacity);
    for (e, d) in kept.iter().skip(drop) {
        out.extend_from_slice(&e.to_be_bytes());
        out.extend_from_slice(d);
    }
    if capacity > 0 {
        out.extend_from_slice(&expires_at.to_be_bytes());
        out.extend_from_slice(digest);
    }
    out
}

#[cfg(test)]
mod tests {
    // Tests: a panic here is a failed test.
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;

    fn digest(first: u8, n: u8) -> [u8; 32] {
        let mut d = [n; 32];
        d[0..8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, first]);
        d
    }

    #[test]
    fn buckets_cover_exactly_max_entries() {
        assert_eq!(sig_bucket(&digest(0, 1), 0), None);
        for max in [1u32, 3, 4, 5, 8, 10, 4096] {
            let buckets = max.div_ceil(SIG_WAYS);
            let total: usize = (0..buckets)
                .map(|i| sig_bucket(&digest(i as u8, 1), max).unwrap().capacity)
                .sum();
            assert_eq!(total, max as usize, "max_entries {max}");
        }
        let b = sig_bucket(&digest(2, 1), 10).unwrap();
        assert_eq!(b.key, "estuary.csrsig/2");
        assert_eq!(b.capacity, 2);
        // Only the first 8 bytes choose the bucket.
        assert_eq!(sig_bucket(&[0xff; 32], 4096), sig_bucket(&[0xff; 32], 4096));
    }

    #[test]
    fn csrattrs_answers_are_bounded_found_by_digest_and_evicted_oldest_first() {
        assert_eq!(attrs_bucket(&digest(0, 1), 0), None);
        let b = attrs_bucket(&digest(2, 1), 10).unwrap();
        assert_eq!((b.key.as_str(), b.capacity), ("estuary.attrs/2", 2));
        let mut v = Vec::new();
        for n in 1..=6u8 {
            let der = vec![n; usize::from(n) * 10];
            v = answer_insert(&v, &digest(0, n), &der, 100, 100 + u64::from(n), 4).unwrap();
            assert!(answer_len(&v) <= 4);
            assert_eq!(answer_get(&v, &digest(0, n), 100), Some(der.as_slice()));
        }
        // The two oldest went; the others are still found, each with its own answer.
        assert_eq!(answer_get(&v, &digest(0, 1), 100), None);
        assert_eq!(answer_get(&v, &digest(0, 2), 100), None);
        assert_eq!(
            answer_get(&v, &digest(0, 3), 100),
            Some(vec![3u8; 30].as_slice())
        );
        // Expired: not found, and dropped by the next insert.
        assert_eq!(answer_get(&v, &digest(0, 6), 106), None);
        let v = answer_insert(&v, &digest(0, 9), b"x", 105, 200, 4).unwrap();
        assert_eq!(
            answer_len(&v),
            2,
            "only 6 (due 106) and the new one are left"
        );
        // A new answer for the same device replaces the old one.
        let v = answer_insert(&v, &digest(0, 9), b"y", 105, 200, 4).unwrap();
        assert_eq!(answer_get(&v, &digest(0, 9), 105), Some(b"y".as_slice()));
        assert_eq!(answer_len(&v), 2);
        // A torn value is read up to the tear; an oversized answer is not stored.
        assert_eq!(answer_len(&v[..v.len() - 1]), 1);
        assert!(answer_insert(&v, &digest(0, 7), &vec![0; 70_000], 105, 200, 4).is_none());
    }

    #[test]
    fn a_csrattrs_digest_names_label_and_serial() {
        let s = DeviceSerial::parse("sn-1").unwrap();
        let t = DeviceSerial::parse("sn-2").unwrap();
        assert_ne!(csrattrs_digest(None, &s), csrattrs_digest(None, &t));
        assert_ne!(csrattrs_digest(None, &s), csrattrs_digest(Some("a"), &s));
        assert_eq!(
            csrattrs_digest(Some("a"), &s),
            csrattrs_digest(Some("a"), &s)
        );
    }

    #[test]
    fn an_enrolment_digest_names_operation_label_client_and_csr_exactly() {
        let base = enrolled_digest("simpleenroll", None, b"cert", b"csr");
        assert_eq!(base, enrolled_digest("simpleenroll", None, b"cert", b"csr"));
        for other in [
            enrolled_digest("simplereenroll", None, b"cert", b"csr"),
            enrolled_digest("simpleenroll", Some("a"), b"cert", b"csr"),
            enrolled_digest("simpleenroll", None, b"cerT", b"csr"),
            enrolled_digest("simpleenroll", None, b"cert", b"csR"),
            // Bytes moved from the certificate to the CSR: the length prefixes tell them apart.
            enrolled_digest("simpleenroll", None, b"cer", b"tcsr"),
        ] {
            assert_ne!(base, other);
        }
        assert!(enrolled_bucket(&base, 4096)
            .unwrap()
            .key
            .starts_with("estuary.enrolled/"));
        assert_eq!(enrolled_bucket(&base, 0), None, "0 entries: no cache");
    }

    #[test]
    fn insert_evicts_the_oldest_and_the_expired() {
        let mut b = Vec::new();
        for n in 1..=6u8 {
            b = sig_insert(&b, &digest(0, n), 100, 100 + u64::from(n), 4);
            assert!(sig_len(&b) <= 4);
        }
        assert_eq!(sig_len(&b), 4);
        for n in 1..=2u8 {
            assert!(!sig_contains(&b, &digest(0, n), 100), "{n} evicted");
        }
        for n in 3..=6u8 {
            assert!(sig_contains(&b, &digest(0, n), 100), "{n} kept");
        }
        // Expiry: at 104, entries 3 and 4 are gone for lookups, and dropped by the next insert.
        assert!(!sig_contains(&b, &digest(0, 4), 104));
        assert!(sig_contains(&b, &digest(0, 5), 104));
        let b = sig_insert(&b, &digest(0, 7), 104, 200, 4);
        assert_eq!(sig_len(&b), 3);
        // Re-inserting a digest keeps one copy, with the new expiry.
        let b = sig_insert(&b, &digest(0, 5), 104, 300, 4);
        assert_eq!(sig_len(&b), 3);
        assert!(sig_contains(&b, &digest(0, 5), 250));
        // A torn value reads as the entries it holds.
        assert!(sig_contains(&b[..b.len() - 1], &digest(0, 6), 104));
        assert!(!sig_contains(&b[..b.len() - 1], &digest(0, 5), 104));
        assert_eq!(sig_insert(&b, &digest(0, 9), 0, 1, 0), Vec::<u8>::new());
    }

    #[test]
    fn round_trip_and_expiry() {
        let e = encode(100, b"der");
        assert_eq!(fresh(&e, 99), Some((100, &b"der"[..])));
        assert_eq!(fresh(&e, 100), None);
        assert_eq!(fresh(e.get(..7).unwrap_or_default(), 0), None);
        assert_eq!(fresh(&encode(100, b""), 0), None);
        assert_eq!(fresh(b"", 0), None);
    }
}
