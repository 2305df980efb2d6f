//! Request signing: a provider or an S2S destination with a `secret` receives
//! `X-Tributary-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`, so it can tell
//! Tributary's requests from anyone else's (see `docs/provider-protocol.md`, Signing).

use std::fmt::Write as _;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Tributary-Signature";

/// An HMAC-SHA256 key made from a `secret`.
pub fn key(secret: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())
}

/// `sha256=<hex HMAC-SHA256 of the body>`.
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn signature_is_hex_hmac_sha256() {
        assert_eq!(
            signature(&key("Jefe"), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
