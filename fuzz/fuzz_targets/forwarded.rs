//! Who the client is behind proxies (`core::forwarded`): the bytes are split at `0xFF` into
//! the peer, the trusted proxies (one CIDR per line), and the `Forwarded`, `X-Forwarded-For`
//! and `X-Forwarded-Proto` values. Whatever they say: an untrusted peer is always the client
//! with the connection's own scheme, and a client other than the peer comes from a header.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use tributary::core::forwarded::{client, ForwardedHeaders};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{FFFD}');
    let peer: Option<IpAddr> = parts.next().and_then(|p| p.trim().parse().ok());
    let trusted: Vec<ipnet::IpNet> = parts
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let headers = ForwardedHeaders {
        forwarded: parts.next(),
        x_forwarded_for: parts.next(),
        x_forwarded_proto: parts.next(),
    };
    for tls in [false, true] {
        let c = client(peer, tls, headers, &trusted);
        let peer_trusted = peer.is_some_and(|p| {
            let p = match p {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(p, IpAddr::V4),
                v4 => v4,
            };
            trusted.iter().any(|n| n.contains(&p))
        });
        if !peer_trusted {
            assert_eq!((c.ip, c.https), (peer, tls));
        } else if c.ip != peer {
            // Any other address (or none) came from a header.
            assert!(
                headers.forwarded.is_some() || headers.x_forwarded_for.is_some(),
                "{c:?} from no header"
            );
        }
    }
});
