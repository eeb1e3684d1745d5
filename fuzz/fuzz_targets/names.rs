//! EST paths, device names and serials, serial globs. The property is in `src/targets.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = estuary_proto_fuzz::targets::names(data);
});
