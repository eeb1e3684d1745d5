//! Wiring: from a validated [`Config`] to a serving control plane.
//!
//! What runs follows the config: the internal API (always: `/metrics`, `/healthz`, `/readyz`),
//! the EST service with its ACME account, DNS updater and engine (when the config has
//! [`Config::enrolment`]), the TEAP RADIUS listener (`[teap]`, through the EST engine) and the
//! BRSKI registrar or cloud registrar (`[brski]`). A cloud registrar alone builds no ACME
//! account, DNS updater or engine; its EST paths answer 404 ([`api::NO_EST`]).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use estuary_proto::est::EstLabel;
use estuary_proto::identity::TrustPolicy;
use estuary_proto::pkcs7;
use estuary_proto::policy::KeyPolicy;
use tokio::net::TcpListener;
use tracing::info;

use crate::brski::registrar::Registrar;
use crate::config::teap::TeapConfig;
use crate::config::{Config, Enrolment};
use crate::est::api::{self, AppState, EstService};
use crate::http::health;
use crate::metrics::{Metrics, OrderResult};
use crate::ra::acme::client::Acme;
use crate::ra::chains::{CaChains, DEFAULT_CA_ID};
use crate::ra::dns::update::DnsUpdater;
use crate::ra::engine::{Ca, Cas, Engine};
use crate::ra::keygen::HeldKeys;
use crate::ra::store::Store;
use crate::support::pem_file::read_certs;
use axum::Router;

/// Builds the application state from a config (the HTTP side only: `[teap]` and `[brski]` are
/// started by [`run`]).
pub fn build(cfg: Config) -> anyhow::Result<(Arc<AppState>, Store, SocketAddr)> {
    let (state, store, listen, _teap, _sweeper) =
        build_parts(cfg.server, cfg.redis, cfg.enrolment)?;
    Ok((state, store, listen))
}

/// Every front end's router and the health paths, on one listener.
pub fn app(state: Arc<AppState>, store: Store, brski: Option<Arc<Registrar>>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let mut app = api::router(state).merge(health::router(metrics, store));
    if let Some(registrar) = brski {
        app = app.merge(crate::brski::routes::router(registrar));
    }
    app.layer(axum::middleware::from_fn(
        crate::http::request_id::with_request_id,
    ))
}

/// The DNS ledger sweeper to start ([`crate::ra::dns::ledger::sweep`]).
struct SweepPlan {
    dns: Arc<DnsUpdater>,
    store: Store,
    interval: std::time::Duration,
}

/// A TEAP listener to start, with the EST engine it enrols through.
struct TeapPlan {
    cfg: TeapConfig,
    engine: Arc<Engine>,
    trust: TrustPolicy,
    keys: KeyPolicy,
    /// The ACME trust anchors for Trusted-Server-Root requests (PKCS#7 certs-only).
    anchors_pkcs7: Vec<u8>,
}

#[allow(clippy::type_complexity)]
fn build_parts(
    server: crate::config::ServerConfig,
    redis: crate::config::RedisConfig,
    enrolment: Option<Enrolment>,
) -> anyhow::Result<(
    Arc<AppState>,
    Store,
    SocketAddr,
    Option<TeapPlan>,
    Option<SweepPlan>,
)> {
    // One rustls crypto backend for the process (ring); ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let url = redis.connection_url().map_err(|e| anyhow::anyhow!(e))?;
    let store = Store::new(url.expose(), &redis.key_prefix)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?
        .with_replica_acks(
            redis.replicas_to_wait(),
            std::time::Duration::from_millis(redis.replica_ack_timeout_ms),
        );
    let (est, teap, sweeper) = match enrolment {
        Some(e) => {
            let (est, teap, sweeper) = est_service(e, &store, &metrics)?;
            let teap = teap.map(|(cfg, anchors_pkcs7)| TeapPlan {
                cfg,
                anchors_pkcs7,
                engine: Arc::clone(&est.engine),
                trust: est.trust.clone(),
                keys: est.keys,
            });
            (Some(est), teap, Some(sweeper))
        }
        None => (None, None, None),
    };
    let state = Arc::new(AppState {
        token: server.api_token,
        metrics,
        est,
    });
    Ok((state, store, server.listen, teap, sweeper))
}

/// A `[teap]` section with the PKCS#7 of the ACME trust anchors it answers
/// Trusted-Server-Root requests with.
type TeapWithAnchors = (TeapConfig, Vec<u8>);

/// The EST service (ACME accounts, DNS updater, engine, `/cacerts` and the learned CA chains),
/// the `[teap]` section
/// that uses it and its DNS ledger sweeper.
fn est_service(
    e: Enrolment,
    store: &Store,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(EstService, Option<TeapWithAnchors>, SweepPlan)> {
    let ca_ders = read_certs(&e.est.ca_certs_file)
        .map_err(|err| anyhow::anyhow!("est.ca_certs_file: {err}"))?;
    // The file alone must make a /cacerts answer (it is the answer before any issuance).
    pkcs7::encode_certs_only(&ca_ders)
        .map_err(|err| anyhow::anyhow!("est.ca_certs_file: {err}"))?;
    let teap = match e.teap {
        Some(t) => Some((t, crate::teap::server::trust_anchors_pkcs7(&ca_ders)?)),
        None => None,
    };
    // The trust bundle file is an EST listener's whole client trust store: after the ACME
    // chains, the manufacturers' IDevID CAs and every label CA's anchors.
    let mut bundle_extra: Vec<Vec<u8>> = e
        .trust
        .manufacturers
        .iter()
        .map(|m| m.ca_der.clone())
        .collect();
    let counter = metrics.dns_updates.clone();
    let failures = metrics.dns_update_failures.clone();
    let sweep_interval = std::time::Duration::from_secs(e.dns.sweep_interval_s);
    let dns = Arc::new(
        DnsUpdater::new(e.dns)
            .map_err(|err| anyhow::anyhow!("dns: {err}"))?
            .with_update_counter(Arc::new(move || {
                counter.inc();
            }))
            .with_failure_counter(Arc::new(move || {
                failures.inc();
            })),
    );
    let order_metrics = Arc::clone(metrics);
    let sweeper = SweepPlan {
        dns: Arc::clone(&dns),
        store: store.clone(),
        interval: sweep_interval,
    };
    let on_order: Arc<dyn Fn(bool) + Send + Sync> = Arc::new(move |ok| {
        order_metrics.order(if ok {
            OrderResult::valid
        } else {
            OrderResult::failed
        })
    });
    let mut acme_cfg = e.acme;
    let mut labelled = BTreeMap::new();
    for l in std::mem::take(&mut acme_cfg.labels) {
        let at = format!("acme.labels {:?}", l.name);
        let label =
            EstLabel::parse(&l.name).ok_or_else(|| anyhow::anyhow!("{at}: {}", EstLabel::RULE))?;
        let ders = read_certs(&l.ca_certs_file)
            .map_err(|err| anyhow::anyhow!("{at}.ca_certs_file: {err}"))?;
        pkcs7::encode_certs_only(&ders)
            .map_err(|err| anyhow::anyhow!("{at}.ca_certs_file: {err}"))?;
        bundle_extra.extend(ders.iter().cloned());
        // A label's chain is learned like the default's, under the label's id; only the
        // unlabelled CA writes the bundle file (see the README's limitations).
        let chains = CaChains::new(store.clone(), label.as_str(), ders, None, Vec::new());
        info!(
            %label,
            directory = %l.acme.directory_url,
            profile = l.acme.profile.as_deref().unwrap_or("-"),
            "EST label: enrols from its own ACME CA"
        );
        let acme = Acme::new(
            l.acme,
            store.clone(),
            Arc::clone(&dns),
            Arc::clone(&on_order),
        );
        labelled.insert(
            label,
            Ca {
                acme: Arc::new(acme),
                chains,
            },
        );
    }
    let acme = Arc::new(Acme::new(acme_cfg, store.clone(), dns, on_order));
    let chains = CaChains::new(
        store.clone(),
        DEFAULT_CA_ID,
        ca_ders,
        e.est.trust_bundle_file.clone(),
        bundle_extra,
    );
    let keys = e.est.keys;
    let engine = Engine::new(
        e.parent.clone(),
        keys,
        e.enroll,
        store.clone(),
        Cas::new(Ca { acme, chains }, labelled),
        Arc::clone(metrics),
    );
    // serverkeygen: a key is held while its order may run and the device comes back for it.
    let held_keys = {
        let c = engine.config();
        HeldKeys::new(
            engine.order_timeout() + std::time::Duration::from_secs(3 * c.retry_after_s),
            (c.max_inflight_orders + c.max_queued_orders).max(16),
        )
    };
    held_keys.spawn_sweeper(std::time::Duration::from_secs(10));
    let est = EstService {
        engine,
        trust: e.trust,
        keys,
        held_keys,
    };
    Ok((est, teap, sweeper))
}

/// The services a config runs, for the start-up log: e.g. `EST, TEAP, BRSKI registrar` or
/// `BRSKI cloud registrar only (no EST, ACME or DNS)`.
pub fn services(cfg: &Config) -> String {
    let brski = match &cfg.brski {
        Some(b) if b.cloud.is_some() => Some("BRSKI cloud registrar"),
        Some(_) => Some("BRSKI registrar"),
        None => None,
    };
    match &cfg.enrolment {
        Some(e) => {
            let mut s = vec!["EST"];
            if e.teap.is_some() {
                s.push("TEAP");
            }
            s.extend(brski);
            s.join(", ")
        }
        None => format!(
            "{} only (no EST, ACME or DNS)",
            brski.unwrap_or("internal API")
        ),
    }
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let services = services(&cfg);
    let Config {
        server,
        redis,
        enrolment,
        brski: brski_cfg,
    } = cfg;
    let (redis_url, prefix, token) = (
        redis.connection_url().map_err(|e| anyhow::anyhow!(e))?,
        redis.key_prefix.clone(),
        server.api_token.clone(),
    );
    let (state, store, listen, teap, sweeper) = build_parts(server, redis, enrolment)?;
    // Wrong credentials are a configuration error: refuse to start. Redis merely down is not.
    store
        .check_credentials(std::time::Duration::from_secs(5))
        .await?;
    let brski = match brski_cfg {
        Some(b) => Some(Arc::new(crate::brski::registrar::Registrar::new(
            &b,
            redis_url.expose(),
            &prefix,
            token,
            Arc::clone(&state.metrics),
        )?)),
        None => None,
    };
    if let Some(t) = teap {
        let radius = crate::teap::server::TeapServer::bind(
            &t.cfg,
            t.engine,
            t.trust,
            t.keys,
            Some(t.anchors_pkcs7),
            Arc::clone(&state.metrics),
        )
        .await?;
        info!(listen = %radius.local_addr()?, "TEAP RADIUS server listening");
        tokio::spawn(radius.run());
    }
    if let Some(est) = &state.est {
        for chains in est.engine.all_chains() {
            if chains.writes_bundle_file() {
                // Every replica keeps its own file current (Redis is read every few seconds).
                tokio::spawn(Arc::clone(chains).keep_bundle_file());
            }
        }
    }
    if let Some(s) = sweeper {
        // In every replica: the ledger's claims let exactly one work on each leftover.
        tokio::spawn(crate::ra::dns::ledger::sweep(
            s.dns,
            s.store,
            s.interval,
            Arc::clone(&state.metrics),
        ));
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding server.listen {listen}"))?;
    info!(listen = %listener.local_addr()?, %services, "estuary control plane listening");
    let app = app(state, store, brski);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, Method, Request, StatusCode};
    use estuary_proto::internal_api::{CACERTS_PATH, CSRATTRS_PATH, ENROLL_PATH};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;

    const TOKEN: &str = "0123456789abcdef0123";

    /// A config for a cloud registrar alone; `dir` holds the files it names.
    fn cloud_only(dir: &std::path::Path) -> Config {
        let any = dir.join("any.pem");
        std::fs::write(&any, "placeholder\n").expect("write");
        let f = format!("{:?}", any.display().to_string());
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
api_token = "{TOKEN}"
[redis]
url = "redis://127.0.0.1:1/"
[brski]
registrar_cert_file = {f}
registrar_key_file = {f}
[[brski.manufacturers]]
name = "acme-devices"
idevid_ca_file = {f}
masa_ca_file = {f}
[brski.cloud]
[[brski.cloud.owners]]
name = "acme"
serials = ["SN-1"]
redirect_url = "https://registrar.acme.example/.well-known/brski"
"#
        );
        Config::from_toml(&text, Vec::new()).expect("valid cloud-only config")
    }

    #[test]
    fn the_startup_log_names_the_services() {
        let dir = estuary_tests::util::TempDir::new("cp-services").expect("tmp");
        let cfg = cloud_only(dir.path());
        assert_eq!(
            services(&cfg),
            "BRSKI cloud registrar only (no EST, ACME or DNS)"
        );
    }

    /// A cloud registrar alone: no engine; the EST paths answer 404 behind the token check,
    /// `/metrics` and `/healthz` still answer.
    #[tokio::test]
    async fn a_cloud_registrar_alone_answers_404_on_the_est_paths() {
        let dir = estuary_tests::util::TempDir::new("cp-cloud-only").expect("tmp");
        let (state, store, _) = build(cloud_only(dir.path())).expect("built");
        assert!(state.est.is_none());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app(state, store, None)).await;
        });
        let client: Client<_, Full<Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let call = |method: Method, path: &str, token: Option<&str>| {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(format!("http://{addr}{path}"))
                .header("estuary-device-serial", "SN-1");
            if method == Method::POST {
                req = req
                    .header("estuary-operation", "simpleenroll")
                    .header(header::CONTENT_TYPE, "application/pkcs10");
            }
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req
                .body(Full::new(Bytes::from_static(b"csr")))
                .expect("req");
            let client = client.clone();
            async move {
                let resp = client.request(req).await.expect("answer");
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, ct, String::from_utf8_lossy(&body).into_owned())
            }
        };
        for (method, path) in [
            (Method::POST, ENROLL_PATH),
            (Method::GET, CACERTS_PATH),
            (Method::GET, CSRATTRS_PATH),
        ] {
            let (status, _, _) = call(method.clone(), path, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
            let (status, _, _) = call(method.clone(), path, Some("wrong-token-0123456789")).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with a wrong token"
            );
            let (status, ct, body) = call(method, path, Some(TOKEN)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(ct, "text/plain; charset=utf-8", "{path}");
            assert_eq!(
                body, "this control plane serves no EST (cloud registrar only)\n",
                "{path}"
            );
        }
        let (status, _, body) = call(Method::GET, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# EOF"), "{body}");
        let (status, _, _) = call(Method::GET, "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
        server.abort();
    }
}
