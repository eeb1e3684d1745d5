//! EST base64: decode never panics; decode -> encode -> decode is stable, encode -> decode is
//! the identity.
#![no_main]

use estuary_proto::base64::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(decode(encode(data).as_bytes()).as_deref(), Ok(data));
    if let Ok(bytes) = decode(data) {
        let text = encode(&bytes);
        assert_eq!(decode(text.as_bytes()).as_deref(), Ok(bytes.as_slice()));
    }
});
