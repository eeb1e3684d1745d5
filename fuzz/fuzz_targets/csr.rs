//! PKCS#10: parse_and_verify must never panic; what verifies must read back consistently.
#![no_main]

use estuary_proto::csr::parse_and_verify;
use estuary_proto::names::{DeviceName, ParentDomain};
use estuary_proto::policy::{check_enroll, KeyPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = parse_and_verify(data) {
        assert_eq!(csr.der(), data);
        // Verifying again gives the same result (no hidden state).
        assert_eq!(parse_and_verify(csr.der()).as_ref(), Ok(&csr));
        if let Ok(parent) = ParentDomain::parse("iot.example.test") {
            if let Ok(name) = DeviceName::parse_under("dev1.iot.example.test", &parent) {
                let _ = check_enroll(&csr, &name, &KeyPolicy::default());
            }
        }
    }
});
