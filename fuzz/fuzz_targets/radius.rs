//! RADIUS packets, authenticators, MS-MPPE keys (RFC 2865, RFC 3579, RFC 2548). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::radius(data);
});
