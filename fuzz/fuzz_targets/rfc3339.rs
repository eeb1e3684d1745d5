//! RFC 3339 date-times (voucher dates, ACME expires). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::rfc3339(data);
});
