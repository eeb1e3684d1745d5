//! The serverkeygen multipart answer (RFC 7030 §4.4.2). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::serverkeygen(data);
});
