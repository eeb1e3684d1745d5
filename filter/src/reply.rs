//! A local HTTP answer, built by pure code and sent by the proxy-wasm glue.

/// Content type of every error body.
pub const CT_TEXT: &str = "text/plain; charset=utf-8";

/// An HTTP answer the filter sends itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u32,
    /// Header names (lower case) and values.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A `text/plain` answer whose body is `message` and a newline.
    pub fn text(status: u32, message: &str) -> Reply {
        let mut body = Vec::with_capacity(message.len() + 1);
        body.extend_from_slice(message.as_bytes());
        body.push(b'\n');
        Reply {
            status,
            headers: vec![("content-type", CT_TEXT.to_string())],
            body,
        }
    }

    /// A 200 answer carrying DER in base64 transfer encoding (RFC 7030 §4.1.3, §4.2.3, §4.5.2).
    pub fn base64_der(content_type: &str, der: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                ("content-type", content_type.to_string()),
                ("content-transfer-encoding", "base64".to_string()),
            ],
            body: estuary_proto::base64::encode(der).into_bytes(),
        }
    }

    /// A 200 answer whose body is already base64 (as [`Reply::base64_der`] makes it), e.g. kept
    /// that way in a cache so that a hit encodes nothing.
    pub fn base64_body(content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                ("content-type", content_type.to_string()),
                ("content-transfer-encoding", "base64".to_string()),
            ],
            body,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
