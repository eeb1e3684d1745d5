//! `estuary-control-plane --config FILE`: the registration authority service.
use std::path::PathBuf;
use std::process::ExitCode;

use estuary_control_plane::config::Config;

fn usage() -> ExitCode {
    eprintln!("usage: estuary-control-plane --config FILE   (or ESTUARY_CONFIG=FILE)\n\nEvery key can be overridden with ESTUARY_<SECTION>__<KEY>; see the README.\nESTUARY_LOG_FORMAT=json writes one JSON object per log line (default: text); RUST_LOG filters.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("ESTUARY_CONFIG").map(PathBuf::from);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => path = Some(PathBuf::from(p)),
                None => return usage(),
            },
            "--help" | "-h" => return usage(),
            _ => return usage(),
        }
    }
    let Some(path) = path else { return usage() };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,estuary_control_plane=info".into());
    match std::env::var("ESTUARY_LOG_FORMAT").as_deref() {
        // One JSON object per line; the fields of the request's span (its `request_id`) are in
        // `span`.
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init(),
        Ok(other) => {
            eprintln!("ESTUARY_LOG_FORMAT={other:?}: not `json` or `text`");
            return ExitCode::from(2);
        }
    }
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(estuary_control_plane::http::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("estuary-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
