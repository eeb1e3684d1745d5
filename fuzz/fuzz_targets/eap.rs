//! EAP packets and EAP-TEAP frames, fragmentation (RFC 3748, RFC 9930 §4.1). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::eap(data);
});
