//! PKCS#10 parse, verify and enrolment policy. The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::csr(data);
});
