//! Client-certificate identity (IDevID / LDevID, by issuer) from a leaf and chain. The property
//! is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::identity(data);
});
