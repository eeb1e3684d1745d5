//! EST base64 (RFC 7030 §4). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::base64(data);
});
