//! CSR attributes: parse -> emit -> parse gives the same value, and emit gives the input bytes.
#![no_main]

use estuary_proto::csrattrs::CsrAttrs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(attrs) = CsrAttrs::from_der(data) {
        let der = attrs.to_der().expect("a decoded CsrAttrs encodes");
        assert_eq!(der, data, "DER in, same DER out");
        let again = CsrAttrs::from_der(&der).expect("our own encoding decodes");
        assert_eq!(again, attrs);
        let _ = again.requested_dns_names();
        let _ = again.requested_curves();
        let _ = again.requested_rsa_bits();
    }
});
