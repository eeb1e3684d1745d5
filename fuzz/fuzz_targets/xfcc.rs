//! Envoy's x-forwarded-client-cert, as the filter reads it. The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::xfcc(data);
});
