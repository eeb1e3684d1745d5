//! PEM certificate bundles (RFC 7468).

/// Why a PEM bundle could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// No CERTIFICATE block was found.
    #[error("no CERTIFICATE block found")]
    NoCertificates,
    /// A BEGIN line without its END line.
    #[error("PEM block {index} has no END line")]
    Unterminated {
        /// Index of the block (0-based, counting every block).
        index: usize,
    },
    /// A block does not decode.
    #[error("PEM block {index} is invalid: {reason}")]
    Invalid {
        /// Index of the block (0-based, counting every block).
        index: usize,
        /// The decoder's reason.
        reason: pem_rfc7468::Error,
    },
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Decodes every CERTIFICATE block, in order (other block types are skipped); at least one.
pub fn decode_certs(pem: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let mut out = Vec::new();
    let mut rest = pem;
    let mut index = 0;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let label_end = block[BEGIN.len()..]
            .find(DASHES)
            .ok_or(PemError::Unterminated { index })?;
        let label = &block[BEGIN.len()..BEGIN.len() + label_end];
        let end_line = format!("{END}{label}{DASHES}");
        let end_at = block
            .find(&end_line)
            .ok_or(PemError::Unterminated { index })?;
        let block_len = end_at + end_line.len();
        let text = &block[..block_len];
        if label == "CERTIFICATE" {
            let (_, der) = pem_rfc7468::decode_vec(text.as_bytes())
                .map_err(|reason| PemError::Invalid { index, reason })?;
            out.push(der);
        }
        rest = &block[block_len..];
        index += 1;
    }
    if out.is_empty() {
        return Err(PemError::NoCertificates);
    }
    Ok(out)
}

/// Encodes certificates as consecutive CERTIFICATE blocks (LF line endings).
pub fn encode_certs(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        // Encoding can only fail on a bad label or on overflow; our label is fixed.
        if let Ok(block) =
            pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der)
        {
            out.push_str(&block);
        }
    }
    out
}
