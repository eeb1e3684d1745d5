//! Server-side key generation (RFC 7030 §4.4): the RA makes the device's key, and the CSR for
//! it that the engine orders like any other.
//!
//! **Which key.** The type follows the key of the device's request CSR where the RA can make
//! it and `keys` allows it: ECDSA P-256 (the default, also for Ed25519 and anything else),
//! P-384 for a P-384 request, RSA 2048 or 3072 for an RSA request of that size (RSA 4096 gets
//! 3072: generating 4096-bit keys takes seconds of CPU per request). When `keys` forbids that
//! type, the first allowed of P-256, P-384, RSA at `keys.rsa_min_bits` (2048 or 3072).
//!
//! **The RA's CSR.** Subject: commonName = the device's name if the request had a commonName,
//! else empty; one subjectAltName dNSName, the device's name; nothing else (the CA sets key
//! usages itself). Signed with the new key, so the engine's checks (signature, names, key
//! policy) and the cache's `chain_fits` (the leaf holds the CSR's key) apply unchanged.
//!
//! **Secrets.** The keys are RustCrypto signing keys, which wipe themselves when dropped
//! (`ZeroizeOnDrop`); their PKCS#8 encoding is handed out in a [`Zeroizing`] buffer. Neither
//! is logged (`Debug` elides them), written to Redis, or put into an error.
//!
//! **Pending issuance.** [`HeldKeys`] keeps a generated key, in this process's memory only,
//! while its order may still be running: for a serverkeygen request that got 202, bound to
//! that requester and that request (SHA-256 over the client certificate and the request's
//! CSR), for at most `acme.order_timeout_s + 3 × enroll.retry_after_s`. The device's retry —
//! the same request from the same certificate — finds it and asks the engine for the same
//! CSR, so it joins the running order or finds its certificate; the answer that hands the key
//! over removes it. Anything else — another requester, a later identical request once the key
//! was handed over, a retry after the entry expired, a retry that lands on another replica,
//! or a retry after a 200 lost in transit — gets a new key and a new order (which counts
//! against `enroll.max_orders_per_device` like any new CSR).
//!
//! Why not the other designs: a new key per request would make a new CSR per retry, so the
//! order a device waits for would never be the one it asks about; deriving the key from the
//! request would hand the same key out again to a repeated request; keeping it in Redis would
//! put key material where anyone who can read Redis finds it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::csr::KeyKind;
use estuary_proto::names::DeviceName;
use estuary_proto::policy::KeyPolicy;
use p256::elliptic_curve::rand_core::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The key types the RA generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyChoice {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
    /// RSA of this many bits (2048 or 3072), PKCS#1 v1.5 with SHA-256.
    Rsa(u32),
}

impl KeyChoice {
    /// The type to generate for a request whose CSR holds a `requested` key, under `keys`;
    /// `None` when `keys` allows none of the types the RA can make.
    pub fn for_request(requested: KeyKind, keys: &KeyPolicy) -> Option<KeyChoice> {
        let wanted = match requested {
            KeyKind::EcdsaP384 => KeyChoice::P384,
            KeyKind::Rsa { bits } if bits >= 3072 => KeyChoice::Rsa(3072),
            KeyKind::Rsa { .. } => KeyChoice::Rsa(2048),
            KeyKind::EcdsaP256 | KeyKind::Ed25519 => KeyChoice::P256,
        };
        let rsa_floor = if keys.rsa_min_bits <= 2048 {
            2048
        } else {
            3072
        };
        [
            wanted,
            KeyChoice::P256,
            KeyChoice::P384,
            KeyChoice::Rsa(rsa_floor),
        ]
        .into_iter()
        .find(|c| keys.allows(c.kind()))
    }

    /// The key kind it makes.
    pub fn kind(self) -> KeyKind {
        match self {
            KeyChoice::P256 => KeyKind::EcdsaP256,
            KeyChoice::P384 => KeyKind::EcdsaP384,
            KeyChoice::Rsa(bits) => KeyKind::Rsa { bits },
        }
    }
}

/// Why a key or its CSR could not be made. Names no key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyGenError {
    /// `keys` allows none of the types the RA makes (a configuration problem).
    #[error("keys allows none of P-256, P-384, RSA 2048/3072: no key type to generate")]
    NoKeyType,
    /// The key could not be generated or encoded.
    #[error("cannot generate the key: {0}")]
    Generate(String),
    /// The CSR could not be built or signed.
    #[error("cannot build the CSR for the generated key: {0}")]
    Csr(String),
    /// The generating task failed (panicked or was cancelled).
    #[error("the key generation task failed: {0}")]
    Task(String),
}

enum Secret {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// A key the RA generated for a device. Wiped when dropped; `Debug` shows its type only.
pub struct GeneratedKey {
    secret: Secret,
    choice: KeyChoice,
    /// The public key as rcgen wants it (EC: the uncompressed point; RSA: RSAPublicKey DER).
    public: Vec<u8>,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("type", &self.choice)
            .finish_non_exhaustive()
    }
}

impl GeneratedKey {
    /// Generates a key. RSA takes a while: call it off the async threads.
    pub fn generate(choice: KeyChoice) -> Result<GeneratedKey, KeyGenError> {
        let gen = |e: &dyn std::fmt::Display| KeyGenError::Generate(e.to_string());
        let (secret, public) = match choice {
            KeyChoice::P256 => {
                let k = p256::ecdsa::SigningKey::random(&mut OsRng);
                let public = k
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                (Secret::P256(k), public)
            }
            KeyChoice::P384 => {
                let k = p384::ecdsa::SigningKey::random(&mut OsRng);
                let public = k
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                (Secret::P384(k), public)
            }
            KeyChoice::Rsa(bits) => {
                use rsa::pkcs1::EncodeRsaPublicKey as _;
                let bits = usize::try_from(bits).map_err(|e| gen(&e))?;
                let k = rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| gen(&e))?;
                let public = k
                    .to_public_key()
                    .to_pkcs1_der()
                    .map_err(|e| gen(&e))?
                    .into_vec();
                (Secret::Rsa(Box::new(k)), public)
            }
        };
        Ok(GeneratedKey {
            secret,
            choice,
            public,
        })
    }

    /// Its type.
    pub fn choice(&self) -> KeyChoice {
        self.choice
    }

    /// The private key as PKCS#8 DER (RFC 5958), in a buffer wiped when dropped.
    pub fn pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyGenError> {
        use p256::pkcs8::EncodePrivateKey as _;
        let doc = match &self.secret {
            // The SecretKey copies wipe themselves when dropped.
            Secret::P256(k) => p256::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
            Secret::P384(k) => p384::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
            Secret::Rsa(k) => rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(k.as_ref()),
        }
        .map_err(|e| KeyGenError::Generate(e.to_string()))?;
        // `doc` (a SecretDocument) wipes itself when dropped.
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// A CSR for `name` signed with this key (see the module documentation for its content).
    pub fn csr_for(
        &self,
        name: &DeviceName,
        with_common_name: bool,
    ) -> Result<Vec<u8>, KeyGenError> {
        let csr = |e: rcgen::Error| KeyGenError::Csr(e.to_string());
        let mut params =
            rcgen::CertificateParams::new(vec![name.as_str().to_string()]).map_err(csr)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if with_common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name.as_str());
        }
        Ok(params.serialize_request(self).map_err(csr)?.der().to_vec())
    }
}

impl rcgen::PublicKeyData for GeneratedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.choice {
            KeyChoice::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyChoice::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyChoice::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for GeneratedKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let failed = |_| rcgen::Error::RemoteKeyError;
        match &self.secret {
            Secret::P256(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(msg).map_err(failed)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Secret::P384(k) => {
                let sig: p384::ecdsa::Signature = k.try_sign(msg).map_err(failed)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Secret::Rsa(k) => {
                // The clone inside the signing key wipes itself too.
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(k.as_ref().clone());
                Ok(signer.try_sign(msg).map_err(failed)?.to_vec())
            }
        }
    }
}

/// A generated key held for a pending serverkeygen request, with the CSR made for it.
#[derive(Debug)]
pub struct HeldKey {
    /// The key.
    pub key: GeneratedKey,
    /// The CSR (DER) the engine orders.
    pub csr_der: Vec<u8>,
    expires: Instant,
}

/// Who asked for what: SHA-256 over the requester's client certificate and its request CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// The id of a request: `client_cert` (as the edge forwarded it) and the request's CSR DER.
    pub fn of(client_cert: &[u8], request_csr: &[u8]) -> RequestId {
        Self::under(None, client_cert, request_csr)
    }

    /// The id of a request under an EST label (RFC 7030 §3.2.2; `None`: the unlabelled path):
    /// the same request under two labels is two requests, each with its own key and CA.
    pub fn under(label: Option<&str>, client_cert: &[u8], request_csr: &[u8]) -> RequestId {
        let mut h = Sha256::new();
        if let Some(label) = label {
            // Apart from every unlabelled id: a label is never 0 bytes long.
            h.update(b"label");
            h.update((label.len() as u64).to_be_bytes());
            h.update(label);
        }
        h.update((client_cert.len() as u64).to_be_bytes());
        h.update(client_cert);
        h.update(request_csr);
        RequestId(h.finalize().into())
    }
}

/// The table is full: every place holds a key for a pending request.
#[derive(Debug, thiserror::Error)]
#[error("too many server-generated keys are waiting for their certificates")]
pub struct HeldKeysFull;

/// Generated keys waiting for their certificates, in this process's memory only (see the
/// module documentation).
pub struct HeldKeys {
    map: Mutex<HashMap<RequestId, Arc<HeldKey>>>,
    ttl: Duration,
    max: usize,
}

impl HeldKeys {
    /// A table keeping each key for `ttl`, holding at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Arc<HeldKeys> {
        Arc::new(HeldKeys {
            map: Mutex::new(HashMap::new()),
            ttl,
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, Arc<HeldKey>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the expired entries (their keys are wiped when the last user lets go).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, h| h.expires > now);
    }

    /// The key held for `id`, if any and not expired.
    pub fn get(&self, id: &RequestId) -> Option<Arc<HeldKey>> {
        self.sweep();
        self.lock().get(id).cloned()
    }

    /// Holds `key` and `csr_der` for `id`; if a concurrent identical request got there first,
    /// its entry is returned instead (and `key` dropped).
    pub fn hold(
        &self,
        id: RequestId,
        key: GeneratedKey,
        csr_der: Vec<u8>,
    ) -> Result<Arc<HeldKey>, HeldKeysFull> {
        self.sweep();
        let mut map = self.lock();
        if let Some(existing) = map.get(&id) {
            return Ok(Arc::clone(existing));
        }
        if map.len() >= self.max {
            return Err(HeldKeysFull);
        }
        let held = Arc::new(HeldKey {
            key,
            csr_der,
            expires: Instant::now() + self.ttl,
        });
        map.insert(id, Arc::clone(&held));
        Ok(held)
    }

    /// Forgets the key for `id` (handed over, or its issuance failed).
    pub fn release(&self, id: &RequestId) {
        self.lock().remove(id);
    }

    /// Sweeps every `every` on the current tokio runtime (if any) until the table is dropped,
    /// so that an expired key is wiped even when no request comes.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match weak.upgrade() {
                        Some(keys) => keys.sweep(),
                        None => return,
                    }
                }
            });
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_proto::policy;

    fn name() -> DeviceName {
        DeviceName::parse("sn-1.iot.example.test").expect("name")
    }

    #[test]
    fn the_key_type_follows_the_request_within_the_policy() {
        let all = KeyPolicy::default();
        let c = |k, p: &KeyPolicy| KeyChoice::for_request(k, p);
        assert_eq!(c(KeyKind::EcdsaP256, &all), Some(KeyChoice::P256));
        assert_eq!(c(KeyKind::Ed25519, &all), Some(KeyChoice::P256));
        assert_eq!(c(KeyKind::EcdsaP384, &all), Some(KeyChoice::P384));
        assert_eq!(
            c(KeyKind::Rsa { bits: 2048 }, &all),
            Some(KeyChoice::Rsa(2048))
        );
        assert_eq!(
            c(KeyKind::Rsa { bits: 3072 }, &all),
            Some(KeyChoice::Rsa(3072))
        );
        assert_eq!(
            c(KeyKind::Rsa { bits: 4096 }, &all),
            Some(KeyChoice::Rsa(3072))
        );
        let no_p256 = KeyPolicy {
            allow_p256: false,
            ..all
        };
        assert_eq!(c(KeyKind::Ed25519, &no_p256), Some(KeyChoice::P384));
        let rsa_only = KeyPolicy {
            rsa_min_bits: 3072,
            allow_p256: false,
            allow_p384: false,
            allow_ed25519: false,
            ..all
        };
        assert_eq!(c(KeyKind::EcdsaP256, &rsa_only), Some(KeyChoice::Rsa(3072)));
        let nothing = KeyPolicy {
            rsa_min_bits: 4096,
            ..rsa_only
        };
        assert_eq!(c(KeyKind::EcdsaP256, &nothing), None);
    }

    /// The RA's CSR passes the very checks the engine runs, and its key is the PKCS#8's.
    #[test]
    fn generated_keys_make_csrs_the_engine_accepts() {
        for choice in [KeyChoice::P256, KeyChoice::P384] {
            let key = GeneratedKey::generate(choice).expect("key");
            for with_cn in [true, false] {
                let der = key.csr_for(&name(), with_cn).expect("csr");
                let csr = estuary_proto::csr::parse_and_verify(&der).expect("verifies");
                policy::check_enroll(&csr, &name(), &KeyPolicy::default()).expect("policy");
                assert_eq!(csr.key(), choice.kind());
                assert_eq!(csr.subject_common_name().is_some(), with_cn);
                // The PKCS#8 holds the same public key as the CSR.
                let pkcs8 = key.pkcs8_der().expect("pkcs8");
                let kp = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("pkcs8 parses");
                let from_pkcs8 = rcgen::PublicKeyData::subject_public_key_info(&kp);
                assert_eq!(from_pkcs8, csr.spki_der(), "{choice:?}");
            }
            assert!(!format!("{key:?}").contains("Signing"), "no key in Debug");
        }
    }

    /// (Fast in tests only because the workspace builds `rsa` and `num-bigint-dig` at
    /// opt-level 3 in the dev profile too.)
    #[test]
    fn rsa_keys_make_csrs_too() {
        let key = GeneratedKey::generate(KeyChoice::Rsa(2048)).expect("key");
        let der = key.csr_for(&name(), true).expect("csr");
        let csr = estuary_proto::csr::parse_and_verify(&der).expect("verifies");
        assert_eq!(csr.key(), KeyKind::Rsa { bits: 2048 });
        policy::check_enroll(&csr, &name(), &KeyPolicy::default()).expect("policy");
    }

    #[test]
    fn held_keys_are_per_request_expire_and_are_bounded() {
        let keys = HeldKeys::new(Duration::from_millis(200), 2);
        let a = RequestId::of(b"cert-a", b"csr");
        let b = RequestId::of(b"cert-b", b"csr");
        assert_ne!(a, b, "another requester is another entry");
        let gen = || GeneratedKey::generate(KeyChoice::P256).expect("key");
        let held = keys.hold(a, gen(), b"csr-a".to_vec()).expect("room");
        // A concurrent identical request joins the first entry.
        let again = keys.hold(a, gen(), b"other".to_vec()).expect("room");
        assert!(Arc::ptr_eq(&held, &again));
        assert!(keys.get(&b).is_none());
        keys.hold(b, gen(), b"csr-b".to_vec()).expect("room");
        let c = RequestId::of(b"cert-c", b"csr");
        assert_ne!(
            RequestId::under(Some("factory-b"), b"cert-c", b"csr"),
            c,
            "a label makes another request"
        );
        assert!(keys.hold(c, gen(), vec![]).is_err(), "full");
        keys.release(&a);
        assert!(keys.get(&a).is_none(), "handed over: gone");
        std::thread::sleep(Duration::from_millis(250));
        assert!(keys.get(&b).is_none(), "expired");
        assert!(keys.is_empty());
    }
}
