//! TEAP TLVs and Crypto-Binding (RFC 9930 §4.2). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::teap(data);
});
