//! The ACME CA's chain as Estuary learns it from issuances (draft-ietf-acme-integrations-17
//! "Certificate Chains and Trust Anchors"): `/simpleenroll` answers the end-entity certificate
//! only, and `/cacerts` "the remainder of the chain returned by the ACME server …, appending
//! the trust anchor root CA if necessary".
//!
//! - After each fresh issuance the engine hands the CA's chain to [`CaChains::learn`]. The
//!   certificates after the end-entity one are kept only if they really form its chain
//!   ([`intermediates_of`]: each a CA certificate, unexpired, whose subject is the previous
//!   certificate's issuer and whose key verifies its signature, the last one issued by a trust
//!   anchor of `est.ca_certs_file` or being one). A malformed CA answer never reaches `/cacerts`.
//! - New intermediates go to Redis (`ca-chain:<ca id>`, one key per CA; the id is
//!   [`DEFAULT_CA_ID`] today), newest first, merged with the ones already known (a CA that
//!   issues from two intermediates in turn, as Let's Encrypt does, keeps both served), at most
//!   [`MAX_LEARNED`]. Every replica reads that key again after [`REFRESH`], so a changed chain
//!   is served without a restart; what it reads is checked again ([`check_stored`]): Redis is
//!   not trusted.
//! - `/cacerts` is [`bundle`]: the learned intermediates, then the certificates of
//!   `est.ca_certs_file` not already listed. Before the first issuance it is the file alone.
//! - With `est.trust_bundle_file` the same certificates, followed by the manufacturers' IDevID
//!   CAs, are written there as PEM (a temporary file and a rename) whenever they change: the
//!   whole client trust store of an Envoy EST listener that watches the file.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::cert::CertSummary;
use estuary_proto::cms_signed::verify_issued_by;
use estuary_proto::pem;
use tracing::{error, info, warn};

use crate::ra::store::Store;
use crate::support::clock::now_unix;

pub use crate::config::DEFAULT_CA_ID;

/// At most this many learned intermediates are kept per CA (the newest).
pub const MAX_LEARNED: usize = 8;

/// How long a replica serves what it last read from Redis before reading again.
pub const REFRESH: Duration = Duration::from_secs(3);

/// Why the certificates after the end-entity one in a CA's answer are not its chain. `Display`
/// names positions, not certificate content; position 0 is the end-entity certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainRefusal {
    /// Not PEM certificates.
    #[error("the chain is not PEM certificates: {0}")]
    NotPem(#[from] pem::PemError),
    /// A certificate does not parse.
    #[error("certificate {0} of the chain is not a readable X.509 certificate")]
    Unreadable(usize),
    /// An intermediate without basicConstraints cA.
    #[error("certificate {0} of the chain is not a CA certificate")]
    NotCa(usize),
    /// An intermediate past its notAfter.
    #[error("certificate {0} of the chain has expired")]
    Expired(usize),
    /// Certificate `n` did not issue certificate `n - 1` (issuer name or signature).
    #[error("certificate {0} of the chain did not issue certificate {prev} (issuer name or signature)", prev = .0 - 1)]
    NotIssuer(usize),
    /// The last certificate is neither a trust anchor nor issued by one.
    #[error("the chain does not lead to a certificate of est.ca_certs_file")]
    Unanchored,
    /// More intermediates than [`MAX_LEARNED`].
    #[error("the chain has more than {MAX_LEARNED} intermediates")]
    TooLong,
}

/// Whether `der` is one of `anchors` or issued by one of them (name and signature).
fn anchored(der: &[u8], anchors: &[Vec<u8>]) -> bool {
    anchors
        .iter()
        .any(|a| a.as_slice() == der || verify_issued_by(der, a).is_ok())
}

/// A certificate that may stand in `/cacerts` as an intermediate: readable, a CA, unexpired.
fn usable_ca(der: &[u8], index: usize, now: i64) -> Result<(), ChainRefusal> {
    let c = CertSummary::from_der(der).map_err(|_| ChainRefusal::Unreadable(index))?;
    if !c.is_ca() {
        return Err(ChainRefusal::NotCa(index));
    }
    if c.not_after_unix() <= now {
        return Err(ChainRefusal::Expired(index));
    }
    Ok(())
}

/// The intermediates of an issued chain (DER, end-entity first, as the CA returned it): the
/// certificates after the first, each a CA certificate valid at `now` (Unix seconds) that issued
/// the one before it (issuer = its subject, and its key verifies the signature), the last one a
/// certificate of `anchors` or issued by one. Certificates equal to an anchor are left out (the
/// anchors are served anyway). An end-entity certificate issued by an anchor directly has none.
pub fn intermediates_of(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: i64,
) -> Result<Vec<Vec<u8>>, ChainRefusal> {
    let Some(last) = chain.last() else {
        return Err(ChainRefusal::NotPem(pem::PemError::NoCertificates));
    };
    if chain.len() > MAX_LEARNED + 1 {
        return Err(ChainRefusal::TooLong);
    }
    for (i, pair) in chain.windows(2).enumerate() {
        let index = i + 1;
        usable_ca(&pair[1], index, now)?;
        verify_issued_by(&pair[0], &pair[1]).map_err(|_| ChainRefusal::NotIssuer(index))?;
    }
    if !anchored(last, anchors) {
        return Err(ChainRefusal::Unanchored);
    }
    Ok(chain
        .iter()
        .skip(1)
        .filter(|d| !anchors.contains(d))
        .cloned()
        .collect())
}

/// What of a stored list of intermediates may be served: each certificate readable, a CA,
/// valid at `now`, and anchored through the list (issued by an anchor, or by another certificate
/// of the list that is), in the stored order. The rest is dropped.
pub fn check_stored(stored: &[Vec<u8>], anchors: &[Vec<u8>], now: i64) -> Vec<Vec<u8>> {
    let candidates: Vec<&Vec<u8>> = stored
        .iter()
        .take(MAX_LEARNED)
        .filter(|d| usable_ca(d, 0, now).is_ok())
        .collect();
    let mut good = vec![false; candidates.len()];
    // Each round admits at least one more certificate, or ends.
    loop {
        let mut grew = false;
        for i in 0..candidates.len() {
            if good[i] {
                continue;
            }
            let by_good = (0..candidates.len()).any(|j| {
                j != i && good[j] && verify_issued_by(candidates[i], candidates[j]).is_ok()
            });
            if by_good || anchored(candidates[i], anchors) {
                good[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (d, ok) in candidates.into_iter().zip(good) {
        if ok && !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

/// `fresh` first (an issuance's intermediates, in chain order), then the `known` ones not among
/// them; at most [`MAX_LEARNED`].
pub fn merge(fresh: &[Vec<u8>], known: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = concat_once(fresh, known);
    out.truncate(MAX_LEARNED);
    out
}

/// What `/cacerts` serves: the learned intermediates, then the anchors not already among them.
pub fn bundle(learned: &[Vec<u8>], anchors: &[Vec<u8>]) -> Vec<Vec<u8>> {
    concat_once(learned, anchors)
}

/// `a` then `b`, each certificate once (the first time it appears).
fn concat_once(a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for d in a.iter().chain(b) {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

/// What a fresh issuance's chain did to the learned intermediates.
#[derive(Debug, PartialEq, Eq)]
pub enum Learned {
    /// Its intermediates were known already: nothing written.
    Known,
    /// New intermediates, stored in Redis.
    Stored,
    /// Not the end-entity certificate's chain: nothing stored.
    Refused(ChainRefusal),
    /// Redis could not be read or written; the next issuance tries again.
    StoreFailed,
}

/// What this replica last read.
#[derive(Default)]
struct Snapshot {
    /// The Redis value it was read from (`None`: no key, or never read).
    raw: Option<String>,
    /// Its certificates that passed [`check_stored`].
    learned: Vec<Vec<u8>>,
    /// When it was read; `None` forces a read.
    read_at: Option<Instant>,
    /// The PEM last written to the trust bundle file.
    written: Option<String>,
}

/// The learned chain of one ACME CA, shared by the EST front end (`/cacerts`) and the engine.
pub struct CaChains {
    store: Store,
    ca_id: String,
    anchors: Vec<Vec<u8>>,
    bundle_file: Option<PathBuf>,
    /// Written to the bundle file after the ACME certificates (the IDevID CAs), never served
    /// by `/cacerts`.
    bundle_extra: Vec<Vec<u8>>,
    refresh: Duration,
    state: Mutex<Snapshot>,
    /// One bundle file write at a time in this process (they share the temporary file name).
    writing: tokio::sync::Mutex<()>,
}

impl CaChains {
    /// The chain of the CA `ca_id` ([`DEFAULT_CA_ID`] today), anchored in `anchors` (the
    /// certificates of `est.ca_certs_file`). With `bundle_file`, the bundle is also written
    /// there, followed by `bundle_extra` (the manufacturers' IDevID CAs, so that the file is the
    /// whole client trust store of an EST listener; `/cacerts` never includes them).
    pub fn new(
        store: Store,
        ca_id: &str,
        anchors: Vec<Vec<u8>>,
        bundle_file: Option<PathBuf>,
        bundle_extra: Vec<Vec<u8>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            ca_id: ca_id.to_string(),
            anchors,
            bundle_file,
            bundle_extra,
            refresh: REFRESH,
            state: Mutex::new(Snapshot::default()),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether `est.trust_bundle_file` is configured ([`Self::keep_bundle_file`] then runs).
    pub fn writes_bundle_file(&self) -> bool {
        self.bundle_file.is_some()
    }

    fn snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A poisoned lock only means a panic elsewhere; the snapshot is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `/cacerts` certificates (DER): [`bundle`] of what Redis held at most [`REFRESH`] ago.
    /// With Redis unavailable, the last good read (or the anchors alone) is served.
    pub async fn cacerts(&self) -> Vec<Vec<u8>> {
        let stale = self
            .snapshot()
            .read_at
            .is_none_or(|t| t.elapsed() >= self.refresh);
        if stale {
            self.reload().await;
        }
        let learned = self.snapshot().learned.clone();
        bundle(&learned, &self.anchors)
    }

    /// Reads Redis now; then rewrites the trust bundle file if the bundle changed.
    pub async fn reload(&self) {
        match self.store.ca_chain(&self.ca_id).await {
            Ok(raw) => {
                let same = self.snapshot().raw == raw;
                if !same {
                    let learned = self.parse_stored(raw.as_deref());
                    let mut s = self.snapshot();
                    if s.learned != learned {
                        info!(
                            ca = %self.ca_id,
                            intermediates = learned.len(),
                            "the ACME CA's learned chain changed"
                        );
                    }
                    s.learned = learned;
                    s.raw = raw;
                }
            }
            Err(e) => {
                warn!(ca = %self.ca_id, error = %e, "cannot read the learned CA chain; serving the last one");
            }
        }
        self.snapshot().read_at = Some(Instant::now());
        self.write_bundle().await;
    }

    fn parse_stored(&self, raw: Option<&str>) -> Vec<Vec<u8>> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let ders = match pem::decode_certs(raw) {
            Ok(d) => d,
            Err(e) => {
                warn!(ca = %self.ca_id, error = %e, "the learned CA chain in Redis is not PEM; ignoring it");
                return Vec::new();
            }
        };
        let good = check_stored(&ders, &self.anchors, now_unix());
        if good.len() != ders.len() {
            warn!(
                ca = %self.ca_id,
                stored = ders.len(),
                kept = good.len(),
                "some learned CA certificates in Redis are expired or do not chain to est.ca_certs_file; not serving them"
            );
        }
        good
    }

    /// Learns from a fresh issuance's chain (PEM, end-entity first, already checked to fit its
    /// CSR): stores its intermediates if they are the end-entity certificate's chain and not
    /// known yet.
    pub async fn learn(&self, chain_pem: &str) -> Learned {
        let ders = match pem::decode_certs(chain_pem) {
            Ok(d) => d,
            Err(e) => return self.refused(e.into()),
        };
        // The common case: the same intermediates as a fresh read of Redis held, nothing to
        // check or store.
        let known_already = {
            let s = self.snapshot();
            s.read_at.is_some_and(|t| t.elapsed() < self.refresh)
                && ders
                    .iter()
                    .skip(1)
                    .all(|d| s.learned.contains(d) || self.anchors.contains(d))
        };
        if known_already && ders.len() > 1 {
            return Learned::Known;
        }
        let fresh = match intermediates_of(&ders, &self.anchors, now_unix()) {
            Ok(f) => f,
            Err(why) => return self.refused(why),
        };
        if fresh.is_empty() {
            return Learned::Known;
        }
        // Merge with what Redis holds now (another replica may have learned meanwhile).
        let known = match self.store.ca_chain(&self.ca_id).await {
            Ok(raw) => self.parse_stored(raw.as_deref()),
            Err(e) => {
                warn!(ca = %self.ca_id, error = %e, "cannot read the learned CA chain; not storing the new one");
                return Learned::StoreFailed;
            }
        };
        if fresh.iter().all(|d| known.contains(d)) {
            self.reload().await;
            return Learned::Known;
        }
        let merged = merge(&fresh, &known);
        let raw = pem::encode_certs(&merged);
        if let Err(e) = self.store.set_ca_chain(&self.ca_id, &raw).await {
            warn!(ca = %self.ca_id, error = %e, "cannot store the learned CA chain; the next issuance tries again");
            return Learned::StoreFailed;
        }
        info!(ca = %self.ca_id, intermediates = merged.len(), "learned the ACME CA's intermediates from an issuance");
        {
            let mut s = self.snapshot();
            s.learned = merged;
            s.raw = Some(raw);
            s.read_at = Some(Instant::now());
        }
        self.write_bundle().await;
        Learned::Stored
    }

    fn refused(&self, why: ChainRefusal) -> Learned {
        error!(ca = %self.ca_id, reason = %why, "the ACME CA returned a chain that is not the certificate's chain; /cacerts keeps the certificates it had");
        Learned::Refused(why)
    }

    /// Writes the bundle to `est.trust_bundle_file` if it differs from what was written last.
    async fn write_bundle(&self) {
        let Some(path) = self.bundle_file.clone() else {
            return;
        };
        let _writing = self.writing.lock().await;
        let pem_text = {
            let s = self.snapshot();
            let acme = bundle(&s.learned, &self.anchors);
            let text = pem::encode_certs(&concat_once(&acme, &self.bundle_extra));
            if s.written.as_deref() == Some(text.as_str()) {
                return;
            }
            text
        };
        let data = pem_text.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, data.as_bytes()))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(()) => {
                if let Some(p) = &self.bundle_file {
                    info!(path = %p.display(), "wrote the trust bundle (learned intermediates, est.ca_certs_file, IDevID CAs)");
                }
                self.snapshot().written = Some(pem_text);
            }
            Err(e) => {
                if let Some(p) = &self.bundle_file {
                    warn!(path = %p.display(), error = %e, "cannot write est.trust_bundle_file; trying again at the next change");
                }
            }
        }
    }

    /// Keeps the trust bundle file current: reads Redis every [`REFRESH`] (writes the file at
    /// once, then whenever the bundle changes). Runs until the process ends.
    pub async fn keep_bundle_file(self: Arc<Self>) {
        loop {
            self.reload().await;
            tokio::time::sleep(self.refresh).await;
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader (Envoy watching the directory) never sees half a file.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    struct Ca {
        der: Vec<u8>,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let p = ca_params(cn);
        let der = p.self_signed(&key).expect("root").der().to_vec();
        Ca {
            der,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn sub_ca(cn: &str, by: &Ca) -> Ca {
        let key = KeyPair::generate().expect("key");
        let p = ca_params(cn);
        let der = p
            .signed_by(&key, &by.issuer)
            .expect("intermediate")
            .der()
            .to_vec();
        Ca {
            der,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn leaf(by: &Ca) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        CertificateParams::new(vec!["sn-1.iot.example.test".to_string()])
            .expect("params")
            .signed_by(&key, &by.issuer)
            .expect("leaf")
            .der()
            .to_vec()
    }

    fn der(c: &Ca) -> Vec<u8> {
        c.der.clone()
    }

    #[test]
    fn the_intermediates_of_a_real_chain_are_learned() {
        let r = root("root");
        let i1 = sub_ca("intermediate 1", &r);
        let i2 = sub_ca("intermediate 2", &i1);
        let ee = leaf(&i2);
        let anchors = vec![der(&r)];
        let got = intermediates_of(&[ee.clone(), der(&i2), der(&i1)], &anchors, now_unix());
        assert_eq!(got, Ok(vec![der(&i2), der(&i1)]));
        // The root sent along is an anchor already: not learned.
        let got = intermediates_of(&[ee, der(&i2), der(&i1), der(&r)], &anchors, now_unix());
        assert_eq!(got, Ok(vec![der(&i2), der(&i1)]));
        // Issued by the root directly: nothing to learn.
        let direct = leaf(&r);
        assert_eq!(
            intermediates_of(&[direct], &anchors, now_unix()),
            Ok(vec![])
        );
        // The anchor file may hold the intermediate itself.
        let ee = leaf(&i1);
        assert_eq!(
            intermediates_of(&[ee, der(&i1)], &[der(&i1)], now_unix()),
            Ok(vec![])
        );
    }

    #[test]
    fn a_chain_that_is_not_the_certificates_chain_is_refused() {
        let r = root("root");
        let i1 = sub_ca("intermediate", &r);
        let anchors = vec![der(&r)];
        let ee = leaf(&i1);
        // Another intermediate, under the same root: not the end-entity's issuer.
        let other = sub_ca("other intermediate", &r);
        assert_eq!(
            intermediates_of(&[ee.clone(), der(&other)], &anchors, now_unix()),
            Err(ChainRefusal::NotIssuer(1))
        );
        // Same subject name, another key: the signature does not verify.
        let twin = sub_ca("intermediate", &r);
        assert_eq!(
            intermediates_of(&[ee.clone(), der(&twin)], &anchors, now_unix()),
            Err(ChainRefusal::NotIssuer(1))
        );
        // The right intermediate under a root that is not an anchor.
        let stranger = root("stranger");
        let i_s = sub_ca("intermediate", &stranger);
        let ee_s = leaf(&i_s);
        assert_eq!(
            intermediates_of(&[ee_s, der(&i_s)], &anchors, now_unix()),
            Err(ChainRefusal::Unanchored)
        );
        // Not a CA certificate: a leaf in the intermediate's place.
        let not_ca = leaf(&r);
        assert_eq!(
            intermediates_of(&[ee.clone(), not_ca], &anchors, now_unix()),
            Err(ChainRefusal::NotCa(1))
        );
        // Garbage.
        assert_eq!(
            intermediates_of(
                &[ee.clone(), vec![0x30, 0x03, 2, 1, 1]],
                &anchors,
                now_unix()
            ),
            Err(ChainRefusal::Unreadable(1))
        );
        // An expired intermediate (seen from the far future).
        assert_eq!(
            intermediates_of(&[ee, der(&i1)], &anchors, 1_000_000_000_000),
            Err(ChainRefusal::Expired(1))
        );
        assert!(matches!(
            intermediates_of(&[], &anchors, now_unix()),
            Err(ChainRefusal::NotPem(_))
        ));
    }

    #[test]
    fn stored_certificates_are_served_only_when_anchored() {
        let r = root("root");
        let i1 = sub_ca("intermediate 1", &r);
        let i2 = sub_ca("intermediate 2", &i1);
        let stranger = sub_ca("stranger", &root("other root"));
        let anchors = vec![der(&r)];
        // Anchored through another stored certificate, whatever the order.
        assert_eq!(
            check_stored(&[der(&i2), der(&i1)], &anchors, now_unix()),
            vec![der(&i2), der(&i1)]
        );
        assert_eq!(
            check_stored(
                &[der(&stranger), der(&i2), vec![1, 2, 3], der(&i1)],
                &anchors,
                now_unix()
            ),
            vec![der(&i2), der(&i1)]
        );
        // i2 alone does not reach the root.
        assert!(check_stored(&[der(&i2)], &anchors, now_unix()).is_empty());
    }

    #[test]
    fn the_bundle_lists_intermediates_then_anchors_once() {
        let r = root("root");
        let i1 = sub_ca("intermediate 1", &r);
        let i2 = sub_ca("intermediate 2", &r);
        // The file holds the root and (by hand, as before) intermediate 1.
        let file = vec![der(&r), der(&i1)];
        assert_eq!(bundle(&[], &file), file);
        assert_eq!(
            bundle(&[der(&i1)], &file),
            vec![der(&i1), der(&r)],
            "an intermediate also in the file is not repeated"
        );
        let learned = merge(&[der(&i2)], &[der(&i1)]);
        assert_eq!(learned, vec![der(&i2), der(&i1)]);
        assert_eq!(bundle(&learned, &file), vec![der(&i2), der(&i1), der(&r)]);
        // At most MAX_LEARNED, the newest kept.
        let many: Vec<Vec<u8>> = (0..MAX_LEARNED + 3).map(|n| vec![n as u8]).collect();
        let merged = merge(&many[..1], &many[1..]);
        assert_eq!(merged.len(), MAX_LEARNED);
        assert_eq!(merged[0], many[0]);
    }

    #[test]
    fn the_bundle_file_is_replaced_whole() {
        let dir = estuary_tests::util::TempDir::new("cp-bundle").expect("tmp");
        let path = dir.path().join("bundle.pem");
        write_atomically(&path, b"one").expect("write");
        write_atomically(&path, b"two").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }
}
