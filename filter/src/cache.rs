//! Cache entries for `cacerts` / `csrattrs`, kept in proxy-wasm shared data.
//!
//! Value layout: 8 bytes big-endian expiry (seconds since the Unix epoch), then the DER answer.

use estuary_proto::names::DeviceSerial;

/// Shared-data key for the CA certificates of a label.
pub fn cacerts_key(label: Option<&str>) -> String {
    format!("estuary.cacerts/{}", label.unwrap_or(""))
}

/// Shared-data key for one device's CSR attributes under a label.
pub fn csrattrs_key(label: Option<&str>, serial: &DeviceSerial) -> String {
    format!(
        "estuary.csrattrs/{}/{}",
        label.unwrap_or(""),
        serial.as_str()
    )
}

/// Build an entry that expires at `expires_at` (Unix seconds).
pub fn encode(expires_at: u64, der: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + der.len());
    v.extend_from_slice(&expires_at.to_be_bytes());
    v.extend_from_slice(der);
    v
}

/// The DER of an entry still fresh at `now` (Unix seconds), or `None`.
pub fn fresh(entry: &[u8], now: u64) -> Option<&[u8]> {
    let (head, der) = entry.split_first_chunk::<8>()?;
    let expires_at = u64::from_be_bytes(*head);
    (now < expires_at && !der.is_empty()).then_some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let e = encode(100, b"der");
        assert_eq!(fresh(&e, 99), Some(&b"der"[..]));
        assert_eq!(fresh(&e, 100), None);
        assert_eq!(fresh(e.get(..7).unwrap_or_default(), 0), None);
        assert_eq!(fresh(&encode(100, b""), 0), None);
        assert_eq!(fresh(b"", 0), None);
    }
}
