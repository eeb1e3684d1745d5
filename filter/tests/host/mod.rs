//! A small proxy-wasm host on wasmtime, enough to drive the release `estuary_filter.wasm` the way
//! Envoy does: root context, configure, then per-stream request callbacks and http-call answers.
//!
//! Implemented host calls: proxy_log, proxy_get_property, proxy_get_header_map_pairs/value,
//! proxy_add/replace/remove_header_map_value, proxy_get_buffer_bytes, proxy_send_local_response,
//! proxy_http_call, proxy_get/set_shared_data, proxy_get_current_time_nanoseconds,
//! proxy_set_tick_period_milliseconds, proxy_set_effective_context, and WASI environ_get /
//! environ_sizes_get from `HostState::environ` (Envoy's `vm_config.environment_variables`). Any
//! other import is stubbed with `Linker::func_new`: it records its name and returns 0 (Status::Ok).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use wasmtime::{Caller, Engine, Extern, Instance, Linker, Memory, Module, Store, Val};

pub const ROOT_ID: i32 = 1;

// proxy-wasm ABI constants.
const STATUS_OK: i32 = 0;
const STATUS_NOT_FOUND: i32 = 1;
const STATUS_BAD_ARGUMENT: i32 = 2;
const STATUS_CAS_MISMATCH: i32 = 8;
const STATUS_INTERNAL_FAILURE: i32 = 10;
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
const BUF_REQUEST_BODY: i32 = 0;
const BUF_HTTP_CALL_RESPONSE_BODY: i32 = 4;
const BUF_PLUGIN_CONFIGURATION: i32 = 7;

/// What the filter asked the control plane.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// A local reply sent by the filter.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[derive(Default)]
pub struct HostState {
    pub plugin_config: Vec<u8>,
    pub logs: Vec<(i32, String)>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub request_headers: Vec<(String, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub call_response_headers: Vec<(String, Vec<u8>)>,
    pub call_response_body: Vec<u8>,
    pub local_response: Option<LocalResponse>,
    pub http_calls: Vec<HttpCall>,
    pub next_token: u32,
    pub fail_http_call: bool,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    pub now_ns: u64,
    pub tick_period_ms: u32,
    pub stub_calls: Vec<String>,
    /// The VM's environment, `NAME=value` each (see [`Filter::with_env`]).
    pub environ: Vec<String>,
}

fn engine_and_module() -> &'static (Engine, Module) {
    static CELL: OnceLock<(Engine, Module)> = OnceLock::new();
    CELL.get_or_init(|| {
        let path = std::env::var_os("ESTUARY_FILTER_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/wasm32-wasip1/wasm-release/estuary_filter.wasm")
            });
        assert!(
            path.exists(),
            "{} is missing: build it with: cargo build -p estuary-filter --target wasm32-wasip1 --profile wasm-release",
            path.display()
        );
        let engine = Engine::default();
        let module = Module::from_file(&engine, &path)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        (engine, module)
    })
}

/// Size of the wasm under test, in bytes.
pub fn wasm_size() -> u64 {
    let path = std::env::var_os("ESTUARY_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/wasm-release/estuary_filter.wasm")
        });
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("module exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let mut buf = vec![0u8; len as u32 as usize];
    mem.read(&*caller, ptr as u32 as usize, &mut buf)?;
    Ok(buf)
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, &v.to_le_bytes())?;
    Ok(())
}

/// Copy `data` into guest memory allocated with `proxy_on_memory_allocate`; write its address and
/// size to the two out-pointers.
fn write_out(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ptr_out: i32,
    size_out: i32,
) -> wasmtime::Result<()> {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&*caller)?,
        _ => wasmtime::bail!("module exports no proxy_on_memory_allocate"),
    };
    let addr = alloc.call(&mut *caller, data.len() as i32)?;
    let mem = memory(caller)?;
    mem.write(&mut *caller, addr as u32 as usize, data)?;
    write_u32(caller, ptr_out, addr as u32)?;
    write_u32(caller, size_out, data.len() as u32)?;
    Ok(())
}

pub fn serialize_map(map: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = (map.len() as u32).to_le_bytes().to_vec();
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub fn deserialize_map(bytes: &[u8]) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let get_u32 = |at: usize| -> wasmtime::Result<usize> {
        let b = bytes
            .get(at..at + 4)
            .ok_or_else(|| wasmtime::format_err!("map truncated"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = get_u32(0)?;
    let mut p = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let kl = get_u32(4 + i * 8)?;
        let vl = get_u32(8 + i * 8)?;
        let k = bytes
            .get(p..p + kl)
            .ok_or_else(|| wasmtime::format_err!("map truncated"))?;
        p += kl + 1;
        let v = bytes
            .get(p..p + vl)
            .ok_or_else(|| wasmtime::format_err!("map truncated"))?;
        p += vl + 1;
        out.push((String::from_utf8(k.to_vec())?, v.to_vec()));
    }
    Ok(out)
}

fn map_for(state: &mut HostState, map_type: i32) -> Option<&mut Vec<(String, Vec<u8>)>> {
    match map_type {
        MAP_REQUEST_HEADERS => Some(&mut state.request_headers),
        MAP_HTTP_CALL_RESPONSE_HEADERS => Some(&mut state.call_response_headers),
        _ => None,
    }
}

fn define_host(linker: &mut Linker<HostState>) -> wasmtime::Result<HashSet<String>> {
    let mut defined = HashSet::new();
    let mut def = |name: &str| {
        defined.insert(name.to_string());
    };

    def("proxy_log");
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let msg = read(&mut c, ptr, len)?;
            let msg = String::from_utf8_lossy(&msg).into_owned();
            c.data_mut().logs.push((level, msg));
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_log_level");
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, HostState>, out: i32| -> wasmtime::Result<i32> {
            write_u32(&mut c, out, 0)?;
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_current_time_nanoseconds");
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, HostState>, out: i32| -> wasmtime::Result<i32> {
            let now = c.data().now_ns;
            let mem = memory(&mut c)?;
            mem.write(&mut c, out as u32 as usize, &now.to_le_bytes())?;
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_set_tick_period_milliseconds");
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, HostState>, ms: i32| -> i32 {
            c.data_mut().tick_period_ms = ms as u32;
            STATUS_OK
        },
    )?;

    def("proxy_set_effective_context");
    linker.func_wrap("env", "proxy_set_effective_context", |_id: i32| -> i32 {
        STATUS_OK
    })?;

    def("proxy_get_buffer_bytes");
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, HostState>,
         buffer: i32,
         start: i32,
         max: i32,
         ptr_out: i32,
         size_out: i32|
         -> wasmtime::Result<i32> {
            let data = match buffer {
                BUF_REQUEST_BODY => c.data().request_body.clone(),
                BUF_HTTP_CALL_RESPONSE_BODY => c.data().call_response_body.clone(),
                BUF_PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                _ => return Ok(STATUS_NOT_FOUND),
            };
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            if start == end {
                return Ok(STATUS_NOT_FOUND);
            }
            write_out(&mut c, &data[start..end], ptr_out, size_out)?;
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_header_map_pairs");
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, HostState>,
         map: i32,
         ptr_out: i32,
         size_out: i32|
         -> wasmtime::Result<i32> {
            let Some(m) = map_for(c.data_mut(), map) else {
                return Ok(STATUS_NOT_FOUND);
            };
            let bytes = serialize_map(m);
            write_out(&mut c, &bytes, ptr_out, size_out)?;
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_header_map_value");
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, HostState>,
         map: i32,
         kp: i32,
         kl: i32,
         ptr_out: i32,
         size_out: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            let value = map_for(c.data_mut(), map).and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                    .map(|(_, v)| v.clone())
            });
            match value {
                Some(v) => {
                    write_out(&mut c, &v, ptr_out, size_out)?;
                    Ok(STATUS_OK)
                }
                None => Ok(STATUS_NOT_FOUND),
            }
        },
    )?;

    def("proxy_add_header_map_value");
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, HostState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            let value = read(&mut c, vp, vl)?;
            if let Some(m) = map_for(c.data_mut(), map) {
                m.push((key, value));
            }
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_replace_header_map_value");
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, HostState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            let value = read(&mut c, vp, vl)?;
            if let Some(m) = map_for(c.data_mut(), map) {
                m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                m.push((key, value));
            }
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_remove_header_map_value");
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, HostState>, map: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            if let Some(m) = map_for(c.data_mut(), map) {
                m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            }
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_property");
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, HostState>,
         pp: i32,
         pl: i32,
         ptr_out: i32,
         size_out: i32|
         -> wasmtime::Result<i32> {
            let path = read(&mut c, pp, pl)?;
            match c.data().properties.get(&path).cloned() {
                Some(v) => {
                    write_out(&mut c, &v, ptr_out, size_out)?;
                    Ok(STATUS_OK)
                }
                None => Ok(STATUS_NOT_FOUND),
            }
        },
    )?;

    def("proxy_send_local_response");
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, HostState>,
         status: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            let body = read(&mut c, bp, bl)?;
            let headers = deserialize_map(&read(&mut c, hp, hl)?)?;
            if c.data().local_response.is_some() {
                wasmtime::bail!("second local response on one stream");
            }
            c.data_mut().local_response = Some(LocalResponse {
                status: status as u32,
                headers,
                body,
            });
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_http_call");
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, HostState>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         token_out: i32|
         -> wasmtime::Result<i32> {
            let upstream = String::from_utf8(read(&mut c, up, ul)?)?;
            let headers = deserialize_map(&read(&mut c, hp, hl)?)?;
            let body = read(&mut c, bp, bl)?;
            if c.data().fail_http_call {
                return Ok(STATUS_INTERNAL_FAILURE);
            }
            if upstream.is_empty() {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let st = c.data_mut();
            st.next_token += 1;
            let token = st.next_token;
            st.http_calls.push(HttpCall {
                token,
                upstream,
                headers,
                body,
                timeout_ms: timeout as u32,
            });
            write_u32(&mut c, token_out, token)?;
            Ok(STATUS_OK)
        },
    )?;

    def("proxy_get_shared_data");
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         ptr_out: i32,
         size_out: i32,
         cas_out: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            match c.data().shared.get(&key).cloned() {
                Some((v, cas)) => {
                    write_out(&mut c, &v, ptr_out, size_out)?;
                    write_u32(&mut c, cas_out, cas)?;
                    Ok(STATUS_OK)
                }
                None => Ok(STATUS_NOT_FOUND),
            }
        },
    )?;

    def("proxy_set_shared_data");
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         expected_cas: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8(read(&mut c, kp, kl)?)?;
            let value = read(&mut c, vp, vl)?;
            let st = c.data_mut();
            // As Envoy: a non-zero CAS must be the entry's current one.
            let current = st.shared.get(&key).map(|(_, cas)| *cas);
            if expected_cas != 0 && current != Some(expected_cas as u32) {
                return Ok(STATUS_CAS_MISMATCH);
            }
            let cas = current.map_or(1, |cas| cas + 1);
            st.shared.insert(key, (value, cas));
            Ok(STATUS_OK)
        },
    )?;

    // WASI, as the SDK uses it.
    def("environ_sizes_get");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_sizes_get",
        |mut c: Caller<'_, HostState>, count: i32, size: i32| -> wasmtime::Result<i32> {
            let env = &c.data().environ;
            let n = env.len() as u32;
            let bytes: u32 = env.iter().map(|e| e.len() as u32 + 1).sum();
            write_u32(&mut c, count, n)?;
            write_u32(&mut c, size, bytes)?;
            Ok(0)
        },
    )?;
    def("environ_get");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_get",
        |mut c: Caller<'_, HostState>, ptrs: i32, buf: i32| -> wasmtime::Result<i32> {
            // WASI: `ptrs` gets one pointer per variable, `buf` the NUL-terminated strings.
            let env = c.data().environ.clone();
            let mem = memory(&mut c)?;
            let mut at = buf as u32;
            for (i, e) in env.iter().enumerate() {
                write_u32(&mut c, ptrs + 4 * i as i32, at)?;
                mem.write(&mut c, at as usize, e.as_bytes())?;
                mem.write(&mut c, at as usize + e.len(), &[0])?;
                at += e.len() as u32 + 1;
            }
            Ok(0)
        },
    )?;
    def("fd_write");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut c: Caller<'_, HostState>,
         _fd: i32,
         iovs: i32,
         n: i32,
         written: i32|
         -> wasmtime::Result<i32> {
            let mut total = 0u32;
            for i in 0..n {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let text = read(&mut c, ptr as i32, len as i32)?;
                c.data_mut()
                    .logs
                    .push((-1, String::from_utf8_lossy(&text).into_owned()));
                total += len;
            }
            write_u32(&mut c, written, total)?;
            Ok(0)
        },
    )?;
    def("proc_exit");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |code: i32| -> wasmtime::Result<()> { wasmtime::bail!("proc_exit({code})") },
    )?;
    def("clock_time_get");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "clock_time_get",
        |mut c: Caller<'_, HostState>, _id: i32, _prec: i64, out: i32| -> wasmtime::Result<i32> {
            let now = c.data().now_ns;
            let mem = memory(&mut c)?;
            mem.write(&mut c, out as u32 as usize, &now.to_le_bytes())?;
            Ok(0)
        },
    )?;
    def("random_get");
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "random_get",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes: Vec<u8> = (0..len as u32).map(|i| (i * 7 + 3) as u8).collect();
            let mem = memory(&mut c)?;
            mem.write(&mut c, ptr as u32 as usize, &bytes)?;
            Ok(0)
        },
    )?;
    Ok(defined)
}

/// One loaded filter VM with its root context configured.
pub struct Filter {
    pub store: Store<HostState>,
    instance: Instance,
    next_context: i32,
    pub configured: bool,
}

/// A request as Envoy would deliver it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
    pub mtls: Option<bool>,
    /// Deliver the body in this many chunks (each call sees the cumulative size, as in Envoy).
    pub chunks: usize,
    /// The TLS peer certificate of the connection, whose SHA-256 the host reports as
    /// `connection.sha256_peer_certificate_digest` when `mtls` is on.
    pub peer_cert: PeerCert,
}

/// What the connection's peer certificate is, for `connection.sha256_peer_certificate_digest`.
#[derive(Debug, Clone, Default)]
pub enum PeerCert {
    /// The `Cert` of the request's `x-forwarded-client-cert`, as with a correctly configured
    /// Envoy (SANITIZE_SET: Envoy writes the XFCC from the connection).
    #[default]
    AsForwarded,
    /// This DER: the client forged the XFCC, or the proxy forwarded one it did not write.
    Der(Vec<u8>),
    /// No digest property at all.
    Absent,
}

/// The DER of the `Cert="…"` of an XFCC value (a small reader for the test host only).
fn xfcc_cert_der(xfcc: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(xfcc).ok()?;
    let start = s.find("Cert=\"")? + 6;
    let end = start + s[start..].find('"')?;
    let enc = &s[start..end];
    let mut pem = Vec::new();
    let b = enc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            pem.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok()?);
            i += 3;
        } else {
            pem.push(b[i]);
            i += 1;
        }
    }
    estuary_proto::pem::decode_certs(std::str::from_utf8(&pem).ok()?)
        .ok()?
        .into_iter()
        .next()
}

fn sha256_hex(der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            headers: vec![
                (":method".into(), method.as_bytes().to_vec()),
                (":path".into(), path.as_bytes().to_vec()),
                (":authority".into(), b"est.example.test".to_vec()),
            ],
            body: None,
            mtls: None,
            chunks: 1,
            peer_cert: PeerCert::AsForwarded,
        }
    }
    pub fn peer_cert(mut self, peer: PeerCert) -> Self {
        self.peer_cert = peer;
        self
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        let b = body.as_ref().to_vec();
        self = self.header("content-length", b.len().to_string());
        self.body = Some(b);
        self
    }
    pub fn mtls(mut self, on: bool) -> Self {
        self.mtls = Some(on);
        self
    }
}

/// What happened to one stream.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub context_id: i32,
    /// Action from the request-headers callback (0 Continue, 1 Pause).
    pub headers_action: i32,
    /// Actions from the body callbacks.
    pub body_actions: Vec<i32>,
    pub local: Option<LocalResponse>,
    pub calls: Vec<HttpCall>,
}

impl Filter {
    pub fn new(config: &str) -> wasmtime::Result<Filter> {
        Filter::with_env(config, &[])
    }

    /// A filter whose VM sees `env` (name, value) as its WASI environment, as Envoy's
    /// `vm_config.environment_variables` gives it; set before `_initialize` and `on_configure`.
    pub fn with_env(config: &str, env: &[(&str, &str)]) -> wasmtime::Result<Filter> {
        let (engine, module) = engine_and_module();
        let mut linker: Linker<HostState> = Linker::new(engine);
        let defined = define_host(&mut linker)?;
        for import in module.imports() {
            if defined.contains(import.name()) {
                continue;
            }
            if let wasmtime::ExternType::Func(ft) = import.ty() {
                let name = import.name().to_string();
                let results: Vec<wasmtime::ValType> = ft.results().collect();
                linker.func_new(
                    import.module(),
                    import.name(),
                    ft.clone(),
                    move |mut c, _args, out| {
                        c.data_mut().stub_calls.push(name.clone());
                        for (slot, ty) in out.iter_mut().zip(results.iter()) {
                            *slot = Val::default_for_ty(ty).unwrap_or(Val::I32(0));
                        }
                        Ok(())
                    },
                )?;
            }
        }
        let mut store = Store::new(
            engine,
            HostState {
                plugin_config: config.as_bytes().to_vec(),
                now_ns: 1_800_000_000 * 1_000_000_000,
                environ: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                ..HostState::default()
            },
        );
        let instance = linker.instantiate(&mut store, module)?;
        instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")?
            .call(&mut store, ())?;
        instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "proxy_on_context_create")?
            .call(&mut store, (ROOT_ID, 0))?;
        let vm_ok = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "proxy_on_vm_start")?
            .call(&mut store, (ROOT_ID, 0))?;
        if vm_ok == 0 {
            wasmtime::bail!("proxy_on_vm_start returned false");
        }
        let cfg_len = config.len() as i32;
        let configured = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "proxy_on_configure")?
            .call(&mut store, (ROOT_ID, cfg_len))?
            != 0;
        Ok(Filter {
            store,
            instance,
            next_context: ROOT_ID + 1,
            configured,
        })
    }

    /// Size of the VM's linear memory (`memory` export) in bytes; it only ever grows.
    pub fn memory_bytes(&mut self) -> u64 {
        self.instance
            .get_memory(&mut self.store, "memory")
            .map_or(0, |m| m.data_size(&self.store) as u64)
    }

    pub fn logs(&self) -> Vec<String> {
        self.store
            .data()
            .logs
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn call3(&mut self, name: &str, a: i32, b: i32, c: i32) -> wasmtime::Result<i32> {
        self.instance
            .get_typed_func::<(i32, i32, i32), i32>(&mut self.store, name)?
            .call(&mut self.store, (a, b, c))
    }

    /// Run one request through headers (and body) and report what the filter did.
    pub fn request(&mut self, req: Request) -> wasmtime::Result<Outcome> {
        let id = self.next_context;
        self.next_context += 1;
        {
            let st = self.store.data_mut();
            st.request_headers = req.headers.clone();
            st.request_body.clear();
            st.local_response = None;
            st.http_calls.clear();
            st.properties.clear();
            if let Some(on) = req.mtls {
                st.properties
                    .insert(b"connection\0mtls".to_vec(), vec![u8::from(on)]);
                let peer = match &req.peer_cert {
                    _ if !on => None,
                    PeerCert::AsForwarded => req
                        .headers
                        .iter()
                        .find(|(n, _)| n == "x-forwarded-client-cert")
                        .and_then(|(_, v)| xfcc_cert_der(v)),
                    PeerCert::Der(d) => Some(d.clone()),
                    PeerCert::Absent => None,
                };
                if let Some(der) = peer {
                    st.properties.insert(
                        b"connection\0sha256_peer_certificate_digest".to_vec(),
                        sha256_hex(&der),
                    );
                }
            }
        }
        self.instance
            .get_typed_func::<(i32, i32), ()>(&mut self.store, "proxy_on_context_create")?
            .call(&mut self.store, (id, ROOT_ID))?;
        let n = req.headers.len() as i32;
        let eos = i32::from(req.body.is_none());
        let headers_action = self.call3("proxy_on_request_headers", id, n, eos)?;
        let mut body_actions = Vec::new();
        if let Some(body) = &req.body {
            if headers_action == 0 || self.store.data().local_response.is_none() {
                let chunks = req.chunks.max(1);
                let step = body.len().div_ceil(chunks).max(1);
                let mut sent = 0usize;
                loop {
                    sent = (sent + step).min(body.len());
                    let last = sent == body.len();
                    self.store.data_mut().request_body = body[..sent].to_vec();
                    let a =
                        self.call3("proxy_on_request_body", id, sent as i32, i32::from(last))?;
                    body_actions.push(a);
                    if last || self.store.data().local_response.is_some() {
                        break;
                    }
                }
            }
        }
        let st = self.store.data();
        Ok(Outcome {
            context_id: id,
            headers_action,
            body_actions,
            local: st.local_response.clone(),
            calls: st.http_calls.clone(),
        })
    }

    /// Deliver the control plane's answer to a pending call; `status: None` simulates a timeout
    /// or reset (Envoy then calls back with no headers).
    pub fn answer(
        &mut self,
        outcome: &Outcome,
        status: Option<u16>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> wasmtime::Result<Option<LocalResponse>> {
        let call = outcome
            .calls
            .last()
            .ok_or_else(|| wasmtime::format_err!("no http call to answer"))?;
        let mut h: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(s) = status {
            h.push((":status".into(), s.to_string().into_bytes()));
            for (k, v) in headers {
                h.push(((*k).into(), v.as_bytes().to_vec()));
            }
        }
        let n = h.len() as i32;
        {
            let st = self.store.data_mut();
            st.call_response_headers = h;
            st.call_response_body = if status.is_some() {
                body.to_vec()
            } else {
                Vec::new()
            };
            st.local_response = None;
        }
        let body_len = self.store.data().call_response_body.len() as i32;
        self.instance
            .get_typed_func::<(i32, i32, i32, i32, i32), ()>(
                &mut self.store,
                "proxy_on_http_call_response",
            )?
            .call(
                &mut self.store,
                (ROOT_ID, call.token as i32, n, body_len, 0),
            )?;
        Ok(self.store.data().local_response.clone())
    }

    /// End a stream the way Envoy does.
    pub fn finish(&mut self, outcome: &Outcome) -> wasmtime::Result<()> {
        let id = outcome.context_id;
        self.instance
            .get_typed_func::<i32, i32>(&mut self.store, "proxy_on_done")?
            .call(&mut self.store, id)?;
        self.instance
            .get_typed_func::<i32, ()>(&mut self.store, "proxy_on_log")?
            .call(&mut self.store, id)?;
        self.instance
            .get_typed_func::<i32, ()>(&mut self.store, "proxy_on_delete")?
            .call(&mut self.store, id)?;
        Ok(())
    }
}

/// Percent-encodes every byte but unreserved ones, as Envoy encodes the PEM in an XFCC `Cert`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
