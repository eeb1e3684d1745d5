//! The TLS tunnel of TEAP carried in EAP (RFC 9930 §3.2, §3.7): a rustls connection driven over
//! in-memory buffers, with fragmentation (L, M flags) and reassembly. Shared by the server and
//! the peer; the side-specific part is the [`rustls::ConnectionCommon`] inside.
use std::collections::VecDeque;
use std::io::{Read, Write};

use estuary_proto::eap::{self, TeapFrame};
use estuary_proto::teap::{
    PrfHash, TeapKeys, CHANNEL_BINDING_LEN, SESSION_KEY_SEED_LABEL,
    TLS_EXPORTER_CHANNEL_BINDING_LABEL,
};

/// Largest reassembled TEAP message accepted (bounds memory per conversation).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why the tunnel cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The TLS layer failed (bad certificate, alert, decode error).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Fragments that do not add up, or an oversized message.
    #[error("TEAP fragmentation: {0}")]
    Fragment(&'static str),
    /// Reading/writing the in-memory TLS buffers failed.
    #[error("TLS buffer: {0}")]
    Io(#[from] std::io::Error),
}

/// What one incoming TEAP frame gives.
pub enum Incoming {
    /// A fragment of a longer message: acknowledge it.
    NeedAck,
    /// The other side acknowledged our fragment: send the next one.
    SendNext,
    /// A whole message was processed by TLS.
    Message,
}

/// Reassembly and fragmentation state plus the TLS connection.
pub struct Tunnel<C> {
    /// The rustls connection.
    pub conn: C,
    rx: Vec<u8>,
    rx_expected: Option<usize>,
    tx: VecDeque<TeapFrame>,
    fragment_size: usize,
}

impl<C, S> Tunnel<C>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    /// Wraps a fresh connection.
    pub fn new(conn: C, fragment_size: usize) -> Self {
        Self {
            conn,
            rx: Vec::new(),
            rx_expected: None,
            tx: VecDeque::new(),
            fragment_size: fragment_size.max(64),
        }
    }

    /// True while fragments of our last message wait to be sent.
    pub fn sending(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Takes one incoming frame.
    pub fn receive(&mut self, frame: &TeapFrame) -> Result<Incoming, TunnelError> {
        if self.sending() {
            if !frame.tls_data.is_empty() {
                return Err(TunnelError::Fragment(
                    "data while fragments are unacknowledged",
                ));
            }
            return Ok(Incoming::SendNext);
        }
        if let Some(total) = frame.message_length {
            let total = total as usize;
            if total > MAX_MESSAGE {
                return Err(TunnelError::Fragment("message too large"));
            }
            if self.rx.is_empty() {
                self.rx_expected = Some(total);
            }
        }
        if self.rx.len() + frame.tls_data.len() > MAX_MESSAGE {
            return Err(TunnelError::Fragment("message too large"));
        }
        self.rx.extend_from_slice(&frame.tls_data);
        if let Some(n) = self.rx_expected {
            if self.rx.len() > n {
                return Err(TunnelError::Fragment("more data than the Message Length"));
            }
        }
        if frame.more {
            if self.rx_expected.is_none() {
                return Err(TunnelError::Fragment(
                    "first fragment without a Message Length",
                ));
            }
            return Ok(Incoming::NeedAck);
        }
        if let Some(n) = self.rx_expected {
            if self.rx.len() != n {
                return Err(TunnelError::Fragment(
                    "fragments do not add up to the Message Length",
                ));
            }
        }
        let data = std::mem::take(&mut self.rx);
        self.rx_expected = None;
        let mut rd = data.as_slice();
        while !rd.is_empty() {
            let n = self.conn.read_tls(&mut rd)?;
            if n == 0 {
                break;
            }
            self.conn.process_new_packets()?;
        }
        Ok(Incoming::Message)
    }

    /// Queues application data (phase 2 TLVs) for sending inside TLS.
    pub fn write_plain(&mut self, data: &[u8]) -> Result<(), TunnelError> {
        self.conn.writer().write_all(data)?;
        Ok(())
    }

    /// Reads all the application data TLS has decrypted.
    pub fn read_plain(&mut self) -> Result<Vec<u8>, TunnelError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.len() > MAX_MESSAGE {
                        return Err(TunnelError::Fragment("phase 2 data too large"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Collects what TLS wants to send into frames; `outer` TLVs go into the first frame.
    /// Returns false when there is nothing to send.
    pub fn flush(&mut self, outer: &[u8]) -> Result<bool, TunnelError> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        if out.is_empty() && outer.is_empty() {
            return Ok(false);
        }
        self.tx
            .extend(eap::fragment(&out, self.fragment_size, outer));
        Ok(true)
    }

    /// The next frame to send: a queued fragment or an empty acknowledgement.
    pub fn next_frame(&mut self) -> TeapFrame {
        self.tx.pop_front().unwrap_or_else(TeapFrame::ack)
    }

    /// The tunnel's `tls-exporter` channel binding (RFC 9266 §2: exporter label
    /// "EXPORTER-Channel-Binding", empty context, 32 octets), which binds a CSR to this
    /// tunnel (call once the handshake is complete). rustls offers no `tls-unique` (RFC 5929),
    /// the value RFC 9930 §3.8.2 names for TLS 1.2; TLS 1.3 has no `tls-unique` at all, and
    /// RFC 9266 makes `tls-exporter` its replacement. Estuary uses it with both versions.
    pub fn channel_binding(&self) -> Result<[u8; CHANNEL_BINDING_LEN], TunnelError> {
        Ok(self.conn.export_keying_material(
            [0u8; CHANNEL_BINDING_LEN],
            TLS_EXPORTER_CHANNEL_BINDING_LABEL,
            Some(&[]),
        )?)
    }

    /// TEAP keys from the TLS exporter (call once the handshake is complete).
    pub fn keys(&self) -> Result<TeapKeys, TunnelError> {
        let seed: [u8; 40] =
            self.conn
                .export_keying_material([0u8; 40], SESSION_KEY_SEED_LABEL, None)?;
        let hash = match self.conn.negotiated_cipher_suite() {
            Some(s) if format!("{:?}", s.suite()).contains("SHA384") => PrfHash::Sha384,
            _ => PrfHash::Sha256,
        };
        Ok(TeapKeys::without_inner_method(hash, &seed))
    }
}
