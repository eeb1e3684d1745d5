//! Certs-only PKCS#7: decode -> encode -> decode gives the same certificates in order.
#![no_main]

use estuary_proto::pkcs7::{decode_certs_only, encode_certs_only};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = decode_certs_only(data) {
        let der = encode_certs_only(&certs).expect("decoded certificates re-encode");
        let again = decode_certs_only(&der).expect("our own encoding decodes");
        assert_eq!(again, certs);
        // Our encoding is canonical: encoding it again changes nothing.
        assert_eq!(encode_certs_only(&again).as_ref(), Ok(&der));
    }
});
