//! The pledge side of the BRSKI cloud registrar (draft-ietf-anima-brski-cloud-19 §3, §4).
//!
//! 1. Mutually authenticated TLS to the cloud registrar: its certificate must validate against
//!    the implicit trust anchors (`--cloud-ca`) with the URL's host as DNS-ID or IP address;
//!    the pledge presents its IDevID. This is never provisional TLS.
//! 2. The RFC 8995 pledge voucher request, signed with the IDevID, POSTed to `requestvoucher`.
//! 3. The answer:
//!    - `307` + `Location`: BRSKI starts again at that URL with a fresh nonce, under the rules
//!      of [`Redirects`]. The target's certificate is checked against the implicit anchors and
//!      the verdict recorded; one that does not validate is Provisional TLS (RFC 8995 §5.1),
//!      and such a registrar may not redirect further.
//!    - a voucher without `est-domain`: RFC 8995 from there on, as `brski` does — the
//!      registrar's TLS certificate must be covered by `pinned-domain-cert`, EST at its
//!      `/.well-known/est`.
//!    - a voucher with `est-domain` (RFC 8366bis): the EST server at that URL must be
//!      authenticated by `pinned-domain-cert` ([`crate::trust::Pinned`]) before anything is
//!      sent to it; `voucher_status` goes to the registrar that gave the voucher.
//!    - 4xx refused (404: no owner known), 5xx or 401 + Retry-After: try later.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use estuary_proto::est::EST_PREFIX;
use estuary_proto::voucher::{BRSKI_PREFIX, CT_VOUCHER_CMS_JSON};
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt as _;

use crate::brski::{
    self, check_status, connect, enroll_and_report, now_unix, send, status_post, Answer,
    BrskiError, Pledge, StatusReport,
};
use crate::error::PledgeError;
use crate::est::reason_text;
use crate::flow::{self, EnrollOptions, Summary};
use crate::transport::{self, EstClient, Identity};
use crate::trust::{self, AnchorPolicy, Recording};
use estuary_proto::url::{HttpsUrl, UrlError};
use estuary_proto::voucher::check_pin;

/// `--max-redirects` default: the draft wants the limit "in the dozens".
pub const DEFAULT_MAX_REDIRECTS: usize = 32;

/// What the `cloud` command needs.
#[derive(Clone, Debug)]
pub struct CloudOptions {
    /// The cloud registrar's BRSKI base, `https://host:port/.well-known/brski`.
    pub cloud_url: String,
    /// The implicit trust anchors (PEM).
    pub cloud_ca: PathBuf,
    /// The IDevID (certificate PEM, P-256 PKCS#8 key PEM).
    pub idevid: Identity,
    /// The manufacturer's MASA trust anchor (PEM).
    pub masa_ca: PathBuf,
    /// Output directory (voucher, pinned domain certificate, then EST's files).
    pub out_dir: PathBuf,
    /// Per-exchange timeout.
    pub timeout: Duration,
    /// How many 307s are followed at most.
    pub max_redirects: usize,
    /// EST options (key type, 202 loop limit).
    pub enrolment: EnrollOptions,
}

/// How the pledge got to its EST server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoucherPath {
    /// The voucher had no est-domain: RFC 8995 with the registrar that gave it (normally one
    /// the cloud redirected to; with no redirect, the cloud registrar itself).
    Redirect,
    /// The voucher named the owner's EST server in est-domain.
    EstDomain,
}

impl VoucherPath {
    /// `"redirect"` or `"est-domain"`, as in the JSON summary.
    pub fn as_str(self) -> &'static str {
        match self {
            VoucherPath::Redirect => "redirect",
            VoucherPath::EstDomain => "est-domain",
        }
    }
}

/// What a cloud run produced.
#[derive(Debug)]
pub struct CloudSummary {
    /// The voucher's serial-number.
    pub serial: String,
    /// The voucher (CMS, DER) file.
    pub voucher: PathBuf,
    /// The pinned domain certificate file.
    pub pinned: PathBuf,
    /// How EST was reached.
    pub path: VoucherPath,
    /// The Location URLs followed, in order.
    pub redirects: Vec<String>,
    /// The requestvoucher URL that gave the voucher.
    pub registrar: String,
    /// Whether that registrar's certificate validated against the implicit trust anchors.
    pub registrar_authenticated: bool,
    /// The EST base used.
    pub est_url: String,
    /// The EST result.
    pub est: Summary,
}

impl CloudSummary {
    /// The `--json` form: the EST summary plus `voucher`, `path`, `redirects`, `registrar`,
    /// `registrar_authenticated`, `est_url`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.est.to_json();
        v["voucher"] = serde_json::json!({
            "serial": self.serial,
            "file": self.voucher,
            "pinned_domain_cert": self.pinned,
        });
        v["path"] = self.path.as_str().into();
        v["redirects"] = self.redirects.clone().into();
        v["registrar"] = self.registrar.clone().into();
        v["registrar_authenticated"] = self.registrar_authenticated.into();
        v["est_url"] = self.est_url.clone().into();
        v
    }
}

/// A `307` the pledge does not follow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefused {
    /// The registrar was reached over provisional TLS (its certificate does not validate
    /// against the implicit trust anchors): it may not redirect.
    #[error("redirect from {from} refused: its TLS certificate does not validate against --cloud-ca, and a registrar reached over provisional TLS may not redirect")]
    Unauthenticated {
        /// The registrar's URL.
        from: String,
    },
    /// A 307 without a Location header.
    #[error("redirect from {from} refused: the 307 has no Location header")]
    NoLocation {
        /// The registrar's URL.
        from: String,
    },
    /// A Location that is not a URL or whose host cannot be a TLS server name.
    #[error("redirect to {location:?} refused: {reason}")]
    BadLocation {
        /// The Location header (bounded).
        location: String,
        /// Why.
        reason: UrlError,
    },
    /// A Location that is not https.
    #[error("redirect to {location:?} refused: not https (downgrade)")]
    Downgrade {
        /// The Location header (bounded).
        location: String,
    },
    /// A Location visited before.
    #[error("redirect to {location} refused: visited before (redirect loop)")]
    Loop {
        /// The resolved Location.
        location: String,
    },
    /// More than `--max-redirects`.
    #[error("redirect to {location} refused: more than {max} redirects (--max-redirects)")]
    TooMany {
        /// The resolved Location.
        location: String,
        /// The limit.
        max: usize,
    },
}

/// A header value as shown in a message: control characters dropped, at most 200 characters.
fn shown(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// The redirect rules of draft-ietf-anima-brski-cloud-19 §3.3 / §4.1 (one per run): only an
/// authenticated registrar may redirect; https only; never a location visited before; at most
/// `max` redirects.
#[derive(Debug)]
pub struct Redirects {
    visited: Vec<String>,
    followed: Vec<HttpsUrl>,
    max: usize,
}

impl Redirects {
    /// Starting at `start` (the cloud registrar's requestvoucher URL).
    pub fn new(start: &HttpsUrl, max: usize) -> Redirects {
        Redirects {
            visited: vec![start.canonical()],
            followed: Vec::new(),
            max,
        }
    }

    /// The Locations followed so far.
    pub fn followed(&self) -> &[HttpsUrl] {
        &self.followed
    }

    /// Decides on a 307 from the registrar at `from`, whose certificate did (not) validate
    /// against the implicit trust anchors: the URL to go to next, resolved against `from`.
    pub fn follow(
        &mut self,
        from: &HttpsUrl,
        from_authenticated: bool,
        location: Option<&str>,
    ) -> Result<HttpsUrl, RedirectRefused> {
        if !from_authenticated {
            return Err(RedirectRefused::Unauthenticated {
                from: from.to_string(),
            });
        }
        let location = location.ok_or_else(|| RedirectRefused::NoLocation {
            from: from.to_string(),
        })?;
        let next = from.resolve(location).map_err(|e| match e {
            UrlError::NotHttps(_) => RedirectRefused::Downgrade {
                location: shown(location),
            },
            reason => RedirectRefused::BadLocation {
                location: shown(location),
                reason,
            },
        })?;
        let key = next.canonical();
        if self.visited.contains(&key) {
            return Err(RedirectRefused::Loop {
                location: next.to_string(),
            });
        }
        if self.followed.len() >= self.max {
            return Err(RedirectRefused::TooMany {
                location: next.to_string(),
                max: self.max,
            });
        }
        self.visited.push(key);
        self.followed.push(next.clone());
        Ok(next)
    }
}

/// The BRSKI base of a registrar reached at `requestvoucher`: that URL without its trailing
/// `/requestvoucher`, or the authority's `/.well-known/brski` when it does not end so.
pub fn brski_base(requestvoucher: &HttpsUrl) -> HttpsUrl {
    match requestvoucher
        .path()
        .trim_end_matches('/')
        .strip_suffix("/requestvoucher")
    {
        Some(base) => requestvoucher.with_path(base),
        None => requestvoucher.with_path(BRSKI_PREFIX),
    }
}

/// The EST base named by a voucher's est-domain: an https URL; an empty path or `/` means
/// `/.well-known/est`, any other path is the base itself (a trailing `/` dropped).
pub fn est_base(est_domain: &str) -> Result<HttpsUrl, BrskiError> {
    let url = HttpsUrl::parse_base(est_domain.trim())
        .map_err(|e| BrskiError::BadEstDomain(shown(est_domain), e))?;
    Ok(match url.path().trim_end_matches('/') {
        "" => url.with_path(EST_PREFIX),
        path => url.with_path(path),
    })
}

/// The error for a requestvoucher answer that is neither a voucher nor a followed 307; `cloud`
/// is whether it came from the cloud registrar itself (draft §4.1: 404 = no owner known;
/// 401 or 503 with Retry-After = try later).
fn voucher_refusal(cloud: bool, a: &Answer) -> BrskiError {
    const OP: &str = "requestvoucher";
    match a.status {
        404 if cloud => BrskiError::Refused {
            op: OP,
            status: 404,
            reason: format!(
                "the cloud registrar knows no owner for this device ({})",
                reason_text(&a.body)
            ),
        },
        401 if a.retry_after.is_some() => BrskiError::Unavailable {
            op: OP,
            status: 401,
            retry_after: a.retry_after.clone(),
        },
        100..=199 | 300..=399 => BrskiError::UnexpectedStatus {
            op: OP,
            status: a.status,
        },
        _ => match check_status(OP, a) {
            Err(e) => e,
            Ok(()) => BrskiError::UnexpectedStatus {
                op: OP,
                status: a.status,
            },
        },
    }
}

/// The registrar that gave the voucher, as the rest of the run sees it.
struct Issuer {
    at: HttpsUrl,
    cert: Vec<u8>,
    authenticated: bool,
}

fn anchors_config(
    anchors: &Arc<rustls::RootCertStore>,
    policy: AnchorPolicy,
    idevid: &Identity,
) -> Result<(ClientConfig, Arc<Recording>), BrskiError> {
    let verifier = Recording::with_anchors(Arc::clone(anchors), policy, trust::provider())
        .map_err(PledgeError::TlsSetup)?;
    let config = transport::client_config_verified_by(verifier.clone(), idevid)?;
    Ok((config, verifier))
}

/// Asks for a voucher, following redirects; the voucher (CMS), its nonce and who gave it.
async fn obtain_voucher(
    opts: &CloudOptions,
    pledge: &Pledge,
    anchors: &Arc<rustls::RootCertStore>,
    redirects: &mut Redirects,
    start: HttpsUrl,
) -> Result<(Vec<u8>, String, Issuer), BrskiError> {
    let mut at = start;
    loop {
        let cloud = redirects.followed().is_empty();
        let policy = if cloud {
            AnchorPolicy::Required
        } else {
            AnchorPolicy::Recorded
        };
        flow::step(&format!(
            "TLS to the {} at {}",
            if cloud {
                "cloud registrar"
            } else {
                "registrar"
            },
            at.authority()
        ));
        let (config, verifier) = anchors_config(anchors, policy, pledge.identity())?;
        let tls = match connect(Arc::new(config), &at, opts.timeout).await {
            Ok(tls) => tls,
            Err(e) => {
                flow::done("failed");
                return Err(match (verifier.seen(), e) {
                    (Some(seen), BrskiError::Connection(who, _)) if !seen.authenticated => {
                        BrskiError::Connection(
                            who,
                            format!(
                                "its certificate does not validate against --cloud-ca: {}",
                                seen.why_not.unwrap_or_default()
                            ),
                        )
                    }
                    (_, e) => e,
                });
            }
        };
        let seen = verifier.seen().ok_or_else(|| {
            BrskiError::Connection(at.authority().to_owned(), "no server certificate".into())
        })?;
        flow::done(if seen.authenticated {
            "authenticated by --cloud-ca"
        } else {
            "not authenticated by --cloud-ca: provisional TLS"
        });
        let request = pledge.voucher_request(&seen.cert, now_unix())?;
        flow::step(&format!("requesting a voucher at {at}"));
        let answer = match send(
            tls,
            &at,
            "POST",
            Some(CT_VOUCHER_CMS_JSON),
            request.cms,
            opts.timeout,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                flow::done("failed");
                return Err(e);
            }
        };
        match answer.status {
            200..=299 => {
                flow::done("voucher received");
                return Ok((
                    answer.body,
                    request.nonce,
                    Issuer {
                        at,
                        cert: seen.cert,
                        authenticated: seen.authenticated,
                    },
                ));
            }
            307 => {
                flow::done("307 Temporary Redirect");
                at = redirects.follow(&at, seen.authenticated, answer.location.as_deref())?;
                eprintln!("following the redirect to {at}");
            }
            s => {
                flow::done(&format!("HTTP {s}"));
                return Err(voucher_refusal(cloud, &answer));
            }
        }
    }
}

/// Runs the cloud registrar exchange, then EST.
pub async fn run(opts: &CloudOptions) -> Result<CloudSummary, BrskiError> {
    let cloud: HttpsUrl = opts
        .cloud_url
        .parse()
        .map_err(|e| BrskiError::BadUrl(opts.cloud_url.clone(), e))?;
    let pledge = Pledge::load(&opts.idevid, &opts.masa_ca)?;
    let anchors = Arc::new(transport::root_store("--cloud-ca", &opts.cloud_ca)?);
    let start = cloud.join("requestvoucher");
    let mut redirects = Redirects::new(&start, opts.max_redirects);
    let (cms, nonce, issuer) =
        obtain_voucher(opts, &pledge, &anchors, &mut redirects, start).await?;

    flow::step("checking the voucher");
    let checked = pledge
        .verify_voucher(&cms, &nonce, now_unix())
        .and_then(|(voucher, pinned)| {
            let pin_covers = check_pin(&pinned, &issuer.cert);
            let path = match &voucher.est_domain {
                None => VoucherPath::Redirect,
                Some(_) => VoucherPath::EstDomain,
            };
            // A registrar the implicit anchors do not authenticate is trusted only through
            // the voucher: its pin must cover it whatever the voucher says (RFC 8995 §5.6.2).
            if path == VoucherPath::Redirect || !issuer.authenticated {
                pin_covers?;
            }
            let est_url = match &voucher.est_domain {
                Some(d) => est_base(d)?,
                None => issuer.at.with_path(EST_PREFIX),
            };
            Ok((pinned, path, est_url))
        });
    let (pinned, path, est_url) = match checked {
        Ok(c) => {
            flow::done("ok");
            c
        }
        Err(e) => {
            flow::done("refused");
            return Err(e);
        }
    };
    let (voucher_path, pinned_path) = brski::write_voucher(&opts.out_dir, &cms, &pinned)?;

    // Status reports go to the registrar that gave the voucher: over TLS checked against the
    // pin when it covers that registrar, else against the implicit anchors.
    let base = brski_base(&issuer.at);
    let registrar = if check_pin(&pinned, &issuer.cert).is_ok() {
        Arc::new(brski::pinned_config(&pinned, pledge.identity())?.0)
    } else {
        Arc::new(anchors_config(&anchors, AnchorPolicy::Required, pledge.identity())?.0)
    };
    let (est_config, est_verifier) = brski::pinned_config(&pinned, pledge.identity())?;
    let report = match path {
        VoucherPath::Redirect => StatusReport::Required,
        VoucherPath::EstDomain => {
            // Nothing goes to the EST server before it proves to be the one the voucher pins.
            flow::step(&format!(
                "TLS to the EST server at {} (pinned-domain-cert)",
                est_url.authority()
            ));
            match connect(Arc::new(est_config.clone()), &est_url, opts.timeout).await {
                Ok(mut tls) => {
                    flow::done("authenticated");
                    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
                }
                Err(e) => {
                    flow::done("failed");
                    let (err, why) = match est_verifier.rejection() {
                        Some(why) => (
                            BrskiError::EstNotAuthenticated {
                                est_url: est_url.to_string(),
                                why: why.clone(),
                            },
                            format!(
                                "the EST server at {est_url} is not authenticated by pinned-domain-cert: {why}"
                            ),
                        ),
                        None => {
                            let why = format!("cannot reach the EST server: {e}");
                            (e, why)
                        }
                    };
                    if let Err(se) = status_post(
                        Arc::clone(&registrar),
                        &base,
                        "voucher_status",
                        false,
                        &why,
                        opts.timeout,
                    )
                    .await
                    {
                        eprintln!("warning: voucher_status not recorded: {se}");
                    }
                    return Err(err);
                }
            }
            StatusReport::BestEffort
        }
    };
    let est = EstClient::new(&est_url.to_string(), None, None, est_config, opts.timeout)?;
    let summary = enroll_and_report(
        registrar,
        &base,
        &est,
        report,
        &opts.enrolment,
        opts.timeout,
    )
    .await?;
    Ok(CloudSummary {
        serial: pledge.serial().to_owned(),
        voucher: voucher_path,
        pinned: pinned_path,
        path,
        redirects: redirects
            .followed()
            .iter()
            .map(ToString::to_string)
            .collect(),
        registrar: issuer.at.to_string(),
        registrar_authenticated: issuer.authenticated,
        est_url: est_url.to_string(),
        est: summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpsUrl {
        s.parse().expect("url")
    }

    const CLOUD: &str = "https://cloud.example:8443/.well-known/brski/requestvoucher";

    #[test]
    fn location_is_resolved_against_the_current_url() {
        let start = url(CLOUD);
        let mut r = Redirects::new(&start, DEFAULT_MAX_REDIRECTS);
        let next = r
            .follow(
                &start,
                true,
                Some("https://owner.example/.well-known/brski/requestvoucher"),
            )
            .expect("absolute");
        assert_eq!(
            next.to_string(),
            "https://owner.example/.well-known/brski/requestvoucher"
        );
        let next2 = r
            .follow(&next, true, Some("/tenant/a/requestvoucher"))
            .expect("absolute path");
        assert_eq!(
            next2.to_string(),
            "https://owner.example/tenant/a/requestvoucher"
        );
        let next3 = r
            .follow(&next2, true, Some("../b/requestvoucher"))
            .expect("relative path");
        assert_eq!(
            next3.to_string(),
            "https://owner.example/tenant/b/requestvoucher"
        );
        let next4 = r
            .follow(&next3, true, Some("//var.example:9443/x/requestvoucher"))
            .expect("network path");
        assert_eq!(
            next4.to_string(),
            "https://var.example:9443/x/requestvoucher"
        );
        assert_eq!(r.followed().len(), 4);
        assert_eq!(brski_base(&next4).to_string(), "https://var.example:9443/x");
    }

    /// draft-ietf-anima-brski-cloud-19 §3.3: each refusal is its own error.
    #[test]
    fn redirect_refusals() {
        let start = url(CLOUD);
        let mut r = Redirects::new(&start, 3);
        assert!(matches!(
            r.follow(&start, true, Some("http://owner.example/requestvoucher")),
            Err(RedirectRefused::Downgrade { .. })
        ));
        assert!(matches!(
            r.follow(&start, true, Some("ftp://owner.example/requestvoucher")),
            Err(RedirectRefused::Downgrade { .. })
        ));
        assert!(matches!(
            r.follow(&start, true, None),
            Err(RedirectRefused::NoLocation { .. })
        ));
        assert!(matches!(
            r.follow(&start, true, Some("https://u:p@owner.example/x")),
            Err(RedirectRefused::BadLocation { .. })
        ));
        assert!(matches!(
            r.follow(&start, false, Some("https://owner.example/requestvoucher")),
            Err(RedirectRefused::Unauthenticated { .. })
        ));
        // Back to the cloud registrar itself (written differently): a loop.
        assert!(matches!(
            r.follow(
                &start,
                true,
                Some("https://CLOUD.example:8443/.well-known/./brski/requestvoucher")
            ),
            Err(RedirectRefused::Loop { .. })
        ));
        assert!(r.followed().is_empty(), "nothing refused was recorded");
        let a = r
            .follow(&start, true, Some("https://a.example/rv"))
            .expect("1");
        let b = r.follow(&a, true, Some("https://b.example/rv")).expect("2");
        assert!(matches!(
            r.follow(&b, true, Some("https://a.example:443/rv")),
            Err(RedirectRefused::Loop { .. })
        ));
        let c = r.follow(&b, true, Some("https://c.example/rv")).expect("3");
        assert!(matches!(
            r.follow(&c, true, Some("https://d.example/rv")),
            Err(RedirectRefused::TooMany { max: 3, .. })
        ));
        let none = Redirects::new(&start, 0).follow(&start, true, Some("https://a.example/rv"));
        assert!(matches!(none, Err(RedirectRefused::TooMany { max: 0, .. })));
        // Refusals are protocol errors: exit code 1.
        let e = BrskiError::from(RedirectRefused::Unauthenticated {
            from: "https://x/".into(),
        });
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("provisional TLS may not redirect"));
    }

    #[test]
    fn est_domain_normalisation() {
        let ok = |s: &str| est_base(s).expect("est-domain").to_string();
        assert_eq!(
            ok("https://est.owner.example"),
            "https://est.owner.example/.well-known/est"
        );
        assert_eq!(
            ok("https://est.owner.example/"),
            "https://est.owner.example/.well-known/est"
        );
        assert_eq!(
            ok("https://est.owner.example:8443/.well-known/est/"),
            "https://est.owner.example:8443/.well-known/est"
        );
        assert_eq!(
            ok("https://est.owner.example/.well-known/est/arbitrary-label"),
            "https://est.owner.example/.well-known/est/arbitrary-label"
        );
        for bad in [
            "http://est.owner.example",
            "est.owner.example",
            "https://est.owner.example/?x=1",
            "https://",
            "",
        ] {
            assert!(
                matches!(est_base(bad), Err(BrskiError::BadEstDomain(..))),
                "{bad:?} accepted"
            );
        }
    }

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            retry_after: retry_after.map(str::to_owned),
            location: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn voucher_refusal_statuses() {
        let e = voucher_refusal(true, &answer(404, None, "unknown serial"));
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("knows no owner"), "{e}");
        assert!(e.to_string().contains("unknown serial"), "{e}");
        let e = voucher_refusal(false, &answer(404, None, "nope"));
        assert!(!e.to_string().contains("knows no owner"), "{e}");
        let e = voucher_refusal(true, &answer(401, Some("30"), ""));
        assert!(matches!(
            &e,
            BrskiError::Unavailable { status: 401, retry_after: Some(r), .. } if r == "30"
        ));
        assert_eq!(e.exit_code(), 4);
        assert!(matches!(
            voucher_refusal(true, &answer(401, None, "")),
            BrskiError::Refused { status: 401, .. }
        ));
        assert!(matches!(
            voucher_refusal(true, &answer(503, Some("120"), "")),
            BrskiError::Unavailable {
                status: 503,
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            voucher_refusal(true, &answer(400, None, "bad")),
            BrskiError::Refused { status: 400, .. }
        ));
        assert!(matches!(
            voucher_refusal(true, &answer(302, None, "")),
            BrskiError::UnexpectedStatus { status: 302, .. }
        ));
    }
}
