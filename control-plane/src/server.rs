//! Wiring: from a validated [`Config`] to a serving control plane.
use std::sync::Arc;

use anyhow::Context;
use estuary_proto::{pem, pkcs7};
use tokio::net::TcpListener;
use tracing::info;

use crate::acme::Acme;
use crate::api::{self, AppState};
use crate::config::Config;
use crate::dns::DnsUpdater;
use crate::engine::Engine;
use crate::metrics::{Metrics, OrderResult};
use crate::store::Store;

/// Builds the application state from a config.
pub fn build(cfg: Config) -> anyhow::Result<(Arc<AppState>, std::net::SocketAddr)> {
    // One rustls crypto backend for the process (ring); ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let ca_pem = std::fs::read_to_string(&cfg.est.ca_certs_file).with_context(|| {
        format!(
            "reading est.ca_certs_file {}",
            cfg.est.ca_certs_file.display()
        )
    })?;
    let ca_ders =
        pem::decode_certs(&ca_pem).map_err(|e| anyhow::anyhow!("est.ca_certs_file: {e}"))?;
    let cacerts_pkcs7 = pkcs7::encode_certs_only(&ca_ders)
        .map_err(|e| anyhow::anyhow!("est.ca_certs_file: {e}"))?;
    let store = Store::new(cfg.redis.url.expose(), &cfg.redis.key_prefix)
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
    let counter = metrics.dns_updates.clone();
    let dns = Arc::new(
        DnsUpdater::new(cfg.dns.clone())
            .map_err(|e| anyhow::anyhow!("dns: {e}"))?
            .with_update_counter(Arc::new(move || {
                counter.inc();
            })),
    );
    let order_metrics = Arc::clone(&metrics);
    let acme = Arc::new(Acme::new(
        cfg.acme,
        store.clone(),
        dns,
        Arc::new(move |ok| {
            order_metrics.order(if ok {
                OrderResult::valid
            } else {
                OrderResult::failed
            })
        }),
    ));
    let keys = cfg.est.keys.policy();
    let engine = Engine::new(
        cfg.parent.clone(),
        keys,
        cfg.enroll,
        store.clone(),
        acme,
        Arc::clone(&metrics),
    );
    let state = Arc::new(AppState {
        engine,
        token: cfg.server.api_token,
        cacerts_pkcs7,
        metrics,
        store,
        parent: cfg.parent,
        keys,
    });
    Ok((state, cfg.server.listen))
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let teap = cfg.teap.take();
    let brski_cfg = cfg.brski.take();
    let (redis_url, prefix, token) = (
        cfg.redis.url.clone(),
        cfg.redis.key_prefix.clone(),
        cfg.server.api_token.clone(),
    );
    let (state, listen) = build(cfg)?;
    let brski = match brski_cfg {
        Some(b) => Some(Arc::new(crate::brski::Registrar::new(
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
            &t,
            Arc::clone(&state.engine),
            state.parent.clone(),
            state.keys,
            Arc::clone(&state.metrics),
        )
        .await?;
        info!(listen = %radius.local_addr()?, "TEAP RADIUS server listening");
        tokio::spawn(radius.run());
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding server.listen {listen}"))?;
    info!(listen = %listener.local_addr()?, "estuary control plane listening");
    let mut app = api::router(state);
    if let Some(registrar) = brski {
        info!("BRSKI registrar enabled");
        app = app.merge(crate::brski::router(registrar));
    }
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
