//! CMS SignedData carrying a voucher(-request) (RFC 5652, RFC 8995). The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::cms_signed(data);
});
