//! The `estuary-pledge` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use estuary_pledge::flow::{self, EnrollOptions};
use estuary_pledge::keys::KeyType;
use estuary_pledge::transport::{self, EstClient, Identity};
use estuary_pledge::PledgeError;

/// An EST (RFC 7030) client for testing an Estuary deployment, with BRSKI (RFC 8995, and
/// through a cloud registrar) and EAP-TEAP (RFC 9930) in front of EST.
///
/// Progress goes to stderr, results to stdout (`--json` for a machine-readable summary).
/// Exit codes: 0 ok, 1 local or protocol error, 2 usage, 3 refused by the server (4xx),
/// 4 connection or TLS failure, 5 still pending at --max-wait.
#[derive(Parser, Debug)]
#[command(name = "estuary-pledge", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Server {
    /// EST base URL, e.g. https://127.0.0.1:8443/.well-known/est
    #[arg(long, value_name = "URL")]
    est_url: String,
    /// PEM trust anchor(s) for the server's certificate (no system roots are used)
    #[arg(long, value_name = "FILE")]
    server_ca: PathBuf,
    /// EST CA label (RFC 7030 §3.2.2): <URL>/<LABEL>/<operation>
    #[arg(long, value_name = "L")]
    label: Option<String>,
    /// Name the server certificate must carry, if not the URL's host
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
    /// Limit for each HTTP exchange, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ClientCert {
    /// Client certificate (PEM; leaf first, intermediates may follow)
    #[arg(long, value_name = "CERT.pem")]
    cert: PathBuf,
    /// Private key of the client certificate (PEM: PKCS#8, SEC1 or PKCS#1)
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
}

#[derive(Args, Debug)]
struct Enrolment {
    /// Directory for key.pem (0600), cert.pem, chain.pem, cacerts.pem (created if missing)
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Key type of the new key [default: enroll: the first of p256, p384, ed25519, rsa2048
    /// that csrattrs accepts; reenroll: that of the current certificate; serverkeygen: p256,
    /// the type of the request's throwaway key, which the server follows]
    #[arg(long, value_enum)]
    key_type: Option<KeyType>,
    /// Give up when the server still answers 202 after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_wait: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// BRSKI (RFC 8995): voucher through the registrar (provisional TLS), verified against
    /// the MASA anchor; then EST over TLS verified against the pinned domain certificate;
    /// voucher_status and enrollstatus reported
    Brski {
        /// BRSKI base URL, e.g. https://127.0.0.1:8443/.well-known/brski
        #[arg(long, value_name = "URL")]
        brski_url: String,
        /// EST base URL, e.g. https://127.0.0.1:8443/.well-known/est
        #[arg(long, value_name = "URL")]
        est_url: String,
        /// The manufacturer's MASA trust anchor (PEM) that vouchers must chain to
        #[arg(long, value_name = "FILE")]
        masa_ca: PathBuf,
        /// IDevID certificate and P-256 PKCS#8 key
        #[command(flatten)]
        client: ClientCert,
        #[command(flatten)]
        enrolment: Enrolment,
        /// Limit for each HTTP exchange, in seconds
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
        /// Print a JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
    /// BRSKI through a cloud registrar (draft-ietf-anima-brski-cloud): voucher from the cloud
    /// registrar (mutual TLS checked against --cloud-ca) or from the owner's registrar it
    /// redirects to; then EST as the voucher says
    ///
    /// A 307 is followed to its Location with a fresh voucher request: https only, never a
    /// location visited before, at most --max-redirects, and only from a registrar whose
    /// certificate validates against --cloud-ca (others are provisional TLS). A voucher
    /// without est-domain is RFC 8995 with the registrar that gave it (its TLS certificate
    /// must be covered by pinned-domain-cert; EST at its /.well-known/est). A voucher with
    /// est-domain: EST at that URL, over TLS checked against pinned-domain-cert (the server's
    /// certificate is the pin, or chains to it with the URL's host), nothing sent otherwise.
    /// voucher_status and enrollstatus go to the registrar that gave the voucher.
    ///
    /// --json adds "path" ("redirect" or "est-domain"), "redirects" (Locations followed),
    /// "registrar" (the requestvoucher URL that gave the voucher), "registrar_authenticated"
    /// and "est_url" to the enrolment summary and "voucher". Exit codes: 1 a redirect or
    /// voucher refused by the pledge, 3 refused by the registrar (4xx; 404: no owner known),
    /// 4 connection/TLS failure (including an EST server the pin does not authenticate, or a
    /// cloud registrar --cloud-ca does not) or 5xx / 401 with Retry-After
    Cloud {
        /// The cloud registrar's BRSKI base URL, e.g. https://cloud.example:8443/.well-known/brski
        #[arg(long, value_name = "URL")]
        cloud_url: String,
        /// Implicit trust anchors (PEM): authenticate the cloud registrar, and decide which
        /// redirect targets are authenticated (others are provisional TLS and may not redirect)
        #[arg(long, value_name = "FILE")]
        cloud_ca: PathBuf,
        /// The manufacturer's MASA trust anchor (PEM) that vouchers must chain to
        #[arg(long, value_name = "FILE")]
        masa_ca: PathBuf,
        /// IDevID certificate and P-256 PKCS#8 key
        #[command(flatten)]
        client: ClientCert,
        #[command(flatten)]
        enrolment: Enrolment,
        /// Follow at most this many 307 redirects
        #[arg(long, value_name = "N", default_value_t = estuary_pledge::cloud::DEFAULT_MAX_REDIRECTS)]
        max_redirects: usize,
        /// Limit for each HTTP exchange, in seconds
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
        /// Print a JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
    /// Enrol over EAP-TEAP (RFC 9930), as peer and NAS at once: RADIUS Access-Requests with
    /// EAP-Message to the TEAP server; answers its PKCS#10 request with a CSR for a new key
    Teap {
        /// The TEAP server's RADIUS address, e.g. 127.0.0.1:1812
        #[arg(long, value_name = "ADDR")]
        radius: std::net::SocketAddr,
        /// Environment variable holding the RADIUS shared secret (not given on the command line)
        #[arg(long, value_name = "VAR", default_value = "ESTUARY_RADIUS_SECRET")]
        secret_env: String,
        /// Outer EAP identity (User-Name)
        #[arg(long, default_value = "anonymous@teap")]
        identity: String,
        #[command(flatten)]
        client: ClientCert,
        /// PEM trust anchor(s) for the TEAP server's certificate
        #[arg(long, value_name = "FILE")]
        server_ca: PathBuf,
        /// Name the TEAP server's certificate must carry
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// TLS octets per EAP-Response
        #[arg(long, default_value_t = 1000)]
        fragment_size: usize,
        /// Directory for key.pem (0600), cert.pem, chain.pem and acme-roots.pem (the ACME trust
        /// anchors, when the server answers the Trusted-Server-Root request)
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// GET /cacerts and write the CA certificates as PEM
    Cacerts {
        #[command(flatten)]
        server: Server,
        /// Output file (default: stdout)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Client certificate to present (optional: /cacerts needs no client authentication)
        #[arg(long, value_name = "CERT.pem", requires = "key")]
        cert: Option<PathBuf>,
        /// Private key of --cert
        #[arg(long, value_name = "KEY.pem", requires = "cert")]
        key: Option<PathBuf>,
    },
    /// GET /csrattrs and print what the server asks for
    Csrattrs {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        client: ClientCert,
    },
    /// First enrolment with the IDevID: new key, CSR from csrattrs, POST /simpleenroll
    Enroll {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        client: ClientCert,
        #[command(flatten)]
        enrolment: Enrolment,
        /// DNS name to ask for instead of the one csrattrs names (for testing refusals)
        #[arg(long, value_name = "NAME")]
        dns_name: Option<String>,
    },
    /// Server-side key generation (RFC 7030 §4.4) with the IDevID: POST /serverkeygen a CSR
    /// naming the device (signed with a throwaway key whose type, --key-type, the server
    /// follows: P-256 by default); writes the server's key and certificate
    ///
    /// The key arrives protected by TLS only (Estuary does not encrypt it, §4.4.2).
    Serverkeygen {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        client: ClientCert,
        #[command(flatten)]
        enrolment: Enrolment,
        /// DNS name to ask for instead of the one csrattrs names (for testing refusals)
        #[arg(long, value_name = "NAME")]
        dns_name: Option<String>,
    },
    /// Re-enrolment with the current certificate: same subject and names, new key,
    /// POST /simplereenroll
    Reenroll {
        #[command(flatten)]
        server: Server,
        /// Current certificate (e.g. DIR/cert.pem; a chain.pem beside it is sent as the TLS chain)
        #[command(flatten)]
        client: ClientCert,
        #[command(flatten)]
        enrolment: Enrolment,
    },
}

fn client_for(server: &Server, identity: Option<&Identity>) -> Result<EstClient, PledgeError> {
    let config = transport::client_config(&server.server_ca, identity)?;
    EstClient::new(
        &server.est_url,
        server.label.as_deref(),
        server.tls_name.as_deref(),
        config,
        Duration::from_secs(server.timeout),
    )
}

fn identity(client: &ClientCert) -> Identity {
    Identity {
        cert: client.cert.clone(),
        key: client.key.clone(),
        extra_chain: Vec::new(),
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_summary(s: &flow::Summary, json: bool) {
    if json {
        print_json(&s.to_json());
    } else {
        println!("certificate for {}", s.dns_names.join(", "));
        println!("  serial    {}", s.serial);
        println!("  notAfter  {}", s.not_after);
        println!("  key       {} ({})", s.written.key.display(), s.key_type);
        println!("  cert      {}", s.written.cert.display());
        println!(
            "  chain     {} ({} certificates)",
            s.written.chain.display(),
            s.chain_len
        );
        println!("  cacerts   {}", s.written.cacerts.display());
    }
}

async fn run(cli: Cli) -> Result<(), PledgeError> {
    let server_keygen = matches!(cli.command, Command::Serverkeygen { .. });
    match cli.command {
        Command::Teap { .. } | Command::Brski { .. } | Command::Cloud { .. } => {
            unreachable!("handled in main")
        }
        Command::Cacerts {
            server,
            out,
            cert,
            key,
        } => {
            let id = cert.zip(key).map(|(cert, key)| Identity {
                cert,
                key,
                extra_chain: Vec::new(),
            });
            let client = client_for(&server, id.as_ref())?;
            let certs = flow::fetch_cacerts(&client).await?;
            let ders: Vec<Vec<u8>> = certs.iter().map(|c| c.der().to_vec()).collect();
            let pem = estuary_proto::pem::encode_certs(&ders);
            match &out {
                Some(path) => {
                    flow::write_file(path, pem.as_bytes(), false)?;
                    eprintln!("wrote {}", path.display());
                }
                None if !server.json => print!("{pem}"),
                None => {}
            }
            if server.json {
                print_json(&serde_json::json!({
                    "out": out,
                    "count": certs.len(),
                    "certificates": certs.iter().map(|c| serde_json::json!({
                        "subject_cn": c.subject_common_name(),
                        "not_after": flow::rfc3339(c.not_after_unix()),
                        "self_issued": c.subject_der() == c.issuer_der(),
                    })).collect::<Vec<_>>(),
                }));
            }
            Ok(())
        }
        Command::Csrattrs { server, client } => {
            let est = client_for(&server, Some(&identity(&client)))?;
            let attrs = flow::fetch_csrattrs(&est).await?;
            if server.json {
                print_json(&flow::csrattrs_json(&attrs));
            } else {
                for line in flow::describe_csrattrs(&attrs) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        // The same options and output; only who makes the key differs.
        Command::Enroll {
            server,
            client,
            enrolment,
            dns_name,
        }
        | Command::Serverkeygen {
            server,
            client,
            enrolment,
            dns_name,
        } => {
            let est = client_for(&server, Some(&identity(&client)))?;
            let opts = EnrollOptions {
                out_dir: enrolment.out_dir,
                key_type: enrolment.key_type,
                max_wait: Duration::from_secs(enrolment.max_wait),
                dns_name,
            };
            let summary = if server_keygen {
                flow::serverkeygen(&est, &opts).await?
            } else {
                flow::enroll(&est, &opts).await?
            };
            print_summary(&summary, server.json);
            Ok(())
        }
        Command::Reenroll {
            server,
            client,
            enrolment,
        } => {
            let current_ders = transport::read_pem_certs("--cert", &client.cert)?;
            let leaf_der = current_ders.first().map(|c| c.to_vec()).unwrap_or_default();
            let current = estuary_proto::CertSummary::from_der(&leaf_der).map_err(|source| {
                PledgeError::Cert {
                    origin: client.cert.display().to_string(),
                    index: 0,
                    source,
                }
            })?;
            let mut id = identity(&client);
            // A chain.pem beside cert.pem (as `enroll` writes them) holding the same leaf:
            // send its intermediates too, so the server can build the path.
            if current_ders.len() == 1 {
                if let Some(chain_path) = client.cert.parent().map(|d| d.join("chain.pem")) {
                    if let Ok(chain) = transport::read_pem_certs("chain.pem", &chain_path) {
                        if chain.first().map(|c| c.as_ref()) == Some(leaf_der.as_slice())
                            && chain.len() > 1
                        {
                            eprintln!(
                                "presenting {} as the TLS client chain",
                                chain_path.display()
                            );
                            id.extra_chain = chain.into_iter().skip(1).collect();
                        }
                    }
                }
            }
            let est = client_for(&server, Some(&id))?;
            let opts = EnrollOptions {
                out_dir: enrolment.out_dir,
                key_type: enrolment.key_type,
                max_wait: Duration::from_secs(enrolment.max_wait),
                dns_name: None,
            };
            let summary = flow::reenroll(&est, &current, &opts).await?;
            print_summary(&summary, server.json);
            Ok(())
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn enroll_options(enrolment: Enrolment) -> EnrollOptions {
    EnrollOptions {
        out_dir: enrolment.out_dir,
        key_type: enrolment.key_type,
        max_wait: Duration::from_secs(enrolment.max_wait),
        dns_name: None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Teap {
        radius,
        secret_env,
        identity,
        client,
        server_ca,
        server_name,
        fragment_size,
        out_dir,
    } = cli.command
    {
        let Ok(secret) = std::env::var(&secret_env) else {
            eprintln!("error: set the RADIUS shared secret in ${secret_env}");
            return ExitCode::from(2);
        };
        let opts = estuary_pledge::teap::TeapOptions {
            radius,
            secret,
            identity,
            cert: client.cert,
            key: client.key,
            server_ca,
            server_name,
            fragment_size,
            out_dir,
        };
        let Some(rt) = runtime() else {
            return ExitCode::FAILURE;
        };
        return match rt.block_on(estuary_pledge::teap::run(&opts)) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err((msg, code)) => {
                eprintln!("error: {msg}");
                ExitCode::from(code)
            }
        };
    }
    if let Command::Brski {
        brski_url,
        est_url,
        masa_ca,
        client,
        enrolment,
        timeout,
        json,
    } = cli.command
    {
        let opts = estuary_pledge::brski::BrskiOptions {
            brski_url,
            est_url,
            idevid: identity(&client),
            masa_ca,
            out_dir: enrolment.out_dir.clone(),
            timeout: Duration::from_secs(timeout),
            enrolment: enroll_options(enrolment),
        };
        let Some(rt) = runtime() else {
            return ExitCode::FAILURE;
        };
        return match rt.block_on(estuary_pledge::brski::run(&opts)) {
            Ok(s) => {
                if json {
                    let mut v = s.est.to_json();
                    v["voucher"] = serde_json::json!({
                        "serial": s.serial,
                        "file": s.voucher,
                        "pinned_domain_cert": s.pinned,
                    });
                    print_json(&v);
                } else {
                    println!("voucher for {} in {}", s.serial, s.voucher.display());
                    println!("  pinned    {}", s.pinned.display());
                    print_summary(&s.est, false);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    if let Command::Cloud {
        cloud_url,
        cloud_ca,
        masa_ca,
        client,
        enrolment,
        max_redirects,
        timeout,
        json,
    } = cli.command
    {
        let opts = estuary_pledge::cloud::CloudOptions {
            cloud_url,
            cloud_ca,
            idevid: identity(&client),
            masa_ca,
            out_dir: enrolment.out_dir.clone(),
            timeout: Duration::from_secs(timeout),
            max_redirects,
            enrolment: enroll_options(enrolment),
        };
        let Some(rt) = runtime() else {
            return ExitCode::FAILURE;
        };
        return match rt.block_on(estuary_pledge::cloud::run(&opts)) {
            Ok(s) => {
                if json {
                    print_json(&s.to_json());
                } else {
                    println!("voucher for {} in {}", s.serial, s.voucher.display());
                    println!("  path      {}", s.path.as_str());
                    for r in &s.redirects {
                        println!("  redirect  {r}");
                    }
                    println!("  registrar {}", s.registrar);
                    println!("  est       {}", s.est_url);
                    println!("  pinned    {}", s.pinned.display());
                    print_summary(&s.est, false);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
