//! Who the client is behind proxies: the address and scheme a request came from, read from
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`/`X-Forwarded-Proto` only when the peer that
//! sent them is a configured trusted proxy (`server.trusted_proxies`). Anyone else can write
//! those headers, so from anyone else they are ignored and the socket's own peer counts.
//!
//! The chain is walked from the nearest hop outwards: every hop a trusted proxy added is
//! believed, and the first address that is not a trusted proxy is the client. A client can
//! prepend whatever it likes to the list; it can never get past the proxy that appended its
//! real address. See docs/dcs-api.md (Client address).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Hops read from one request's forwarding headers; a longer chain is cut at the nearest ones.
pub const MAX_HOPS: usize = 32;

/// The forwarding headers of one request, as sent (several lines of one header already joined
/// with `,`, in order).
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardedHeaders<'a> {
    pub forwarded: Option<&'a str>,
    pub x_forwarded_for: Option<&'a str>,
    pub x_forwarded_proto: Option<&'a str>,
}

/// The client as far as the trusted chain tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// `None` when a trusted proxy said it did not know (`unknown`, an obfuscated name, or
    /// text that is no address): better no `h_ip` than the proxy's own.
    pub ip: Option<IpAddr>,
    /// Whether the client's own connection was HTTPS.
    pub https: bool,
}

/// The client of a request that arrived from `peer` over a connection that is HTTPS itself
/// when `tls`.
pub fn client(
    peer: Option<IpAddr>,
    tls: bool,
    headers: ForwardedHeaders<'_>,
    trusted: &[IpNet],
) -> Client {
    let direct = Client {
        ip: peer,
        https: tls,
    };
    let Some(peer) = peer else { return direct };
    if !is_trusted(peer, trusted) {
        return direct;
    }
    // `Forwarded` is the standard and carries the scheme beside each address; a proxy that
    // sends it is read from it alone, as mixing the two could pair one header's address with
    // the other's scheme.
    let hops: Vec<Hop> = match headers.forwarded {
        Some(text) => forwarded_hops(text),
        None => match headers.x_forwarded_for {
            Some(text) => x_forwarded_for_hops(text, headers.x_forwarded_proto),
            None => Vec::new(),
        },
    };
    let mut client = direct;
    // The parsers keep the nearest [`MAX_HOPS`] only.
    for hop in hops.iter().rev() {
        let Some(ip) = client.ip else { break };
        if !is_trusted(ip, trusted) {
            break;
        }
        // `ip` is a trusted proxy: what it says of its own client is believed.
        client = Client {
            ip: hop.ip,
            https: hop.https.unwrap_or(client.https),
        };
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4 peers reach a dual-stack socket as `::ffff:a.b.c.d`; the configured CIDRs are written
/// as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// One hop: the address a proxy received the request from, and the scheme it received it over
/// where it said.
#[derive(Clone, Copy, Debug)]
struct Hop {
    ip: Option<IpAddr>,
    https: Option<bool>,
}

/// `for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`: elements separated by commas, pairs
/// by semicolons, values tokens or quoted strings. Only the last [`MAX_HOPS`] elements count.
fn forwarded_hops(text: &str) -> Vec<Hop> {
    let elements: Vec<&str> = split_outside_quotes(text, ',');
    let skip = elements.len().saturating_sub(MAX_HOPS);
    elements
        .into_iter()
        .skip(skip)
        .map(|element| {
            let mut hop = Hop {
                ip: None,
                https: None,
            };
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = unquote(value.trim());
                match name.trim().to_ascii_lowercase().as_str() {
                    "for" => hop.ip = parse_node(value),
                    "proto" => hop.https = Some(value.eq_ignore_ascii_case("https")),
                    _ => {}
                }
            }
            hop
        })
        .collect()
}

/// `203.0.113.9, 10.0.0.2`, with `X-Forwarded-Proto` (its last value: the nearest proxy's,
/// which is the one that set it when it replaced the header) given to the nearest hop only.
fn x_forwarded_for_hops(text: &str, proto: Option<&str>) -> Vec<Hop> {
    let entries: Vec<&str> = text.split(',').collect();
    let skip = entries.len().saturating_sub(MAX_HOPS);
    let mut hops: Vec<Hop> = entries
        .into_iter()
        .skip(skip)
        .map(|entry| Hop {
            ip: parse_node(entry.trim()),
            https: None,
        })
        .collect();
    let proto = proto.and_then(|p| p.rsplit(',').next()).map(str::trim);
    if let (Some(last), Some(proto)) = (hops.last_mut(), proto) {
        if !proto.is_empty() {
            last.https = Some(proto.eq_ignore_ascii_case("https"));
        }
    }
    hops
}

/// A node as proxies write it: `192.0.2.60`, `192.0.2.60:8080`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, or a bare IPv6 address (X-Forwarded-For). `unknown` and obfuscated
/// names (`_hidden`) are no address.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = text.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Splits at `separator` where it is not inside a quoted string (`for="[::1]:80"` holds none,
/// but a quoted value may hold a comma or a semicolon).
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn xff(value: &str) -> ForwardedHeaders<'_> {
        ForwardedHeaders {
            x_forwarded_for: Some(value),
            ..Default::default()
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let headers = ForwardedHeaders {
            forwarded: Some("for=198.51.100.1;proto=https"),
            x_forwarded_for: Some("198.51.100.2"),
            x_forwarded_proto: Some("https"),
        };
        let peer = ip("203.0.113.5");
        assert_eq!(
            client(peer, false, headers, &[]),
            Client {
                ip: peer,
                https: false
            }
        );
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client(peer, false, headers, &trusted).ip, peer);
        assert!(!client(peer, false, headers, &trusted).https);
    }

    #[test]
    fn the_first_address_that_is_no_trusted_proxy_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client wrote 1.2.3.4 itself; the edge proxy appended the real address.
        let c = client(
            ip("10.0.0.2"),
            false,
            xff("1.2.3.4, 198.51.100.7, 192.168.1.1"),
            &trusted,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Every hop trusted: the leftmost is the client (traffic from inside).
        let c = client(ip("10.0.0.2"), false, xff("10.1.1.1, 10.2.2.2"), &trusted);
        assert_eq!(c.ip, ip("10.1.1.1"));
        // A trusted peer that sent no header is the client itself.
        let c = client(ip("10.0.0.2"), false, ForwardedHeaders::default(), &trusted);
        assert_eq!(c.ip, ip("10.0.0.2"));
    }

    #[test]
    fn a_trusted_proxy_that_does_not_know_gives_no_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        for header in ["unknown", "garbage, ", "  "] {
            let c = client(ip("10.0.0.2"), false, xff(header), &trusted);
            assert_eq!(c.ip, None, "{header:?}");
        }
        let c = client(
            ip("10.0.0.2"),
            false,
            ForwardedHeaders {
                forwarded: Some("for=_hidden"),
                ..Default::default()
            },
            &trusted,
        );
        assert_eq!(c.ip, None);
    }

    #[test]
    fn forwarded_elements_quotes_ports_and_schemes() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:1::/48"]);
        let headers = ForwardedHeaders {
            forwarded: Some(
                "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=x, \
                 For=\"10.9.9.9:80\";PROTO=http",
            ),
            // Ignored when `Forwarded` is there.
            x_forwarded_for: Some("5.5.5.5"),
            x_forwarded_proto: Some("http"),
        };
        let c = client(ip("2001:db8:1::1"), false, headers, &trusted);
        assert_eq!(
            c,
            Client {
                ip: ip("2001:db8:cafe::17"),
                https: true
            }
        );
        assert_eq!(
            split_outside_quotes("for=\"a,b\";x=1, for=c", ','),
            vec!["for=\"a,b\";x=1", " for=c"]
        );
    }

    #[test]
    fn scheme_from_x_forwarded_proto_only_through_a_trusted_peer() {
        let trusted = nets(&["127.0.0.1/32"]);
        let headers = ForwardedHeaders {
            x_forwarded_for: Some("203.0.113.8"),
            x_forwarded_proto: Some("http, https"),
            forwarded: None,
        };
        assert!(client(ip("127.0.0.1"), false, headers, &trusted).https);
        assert!(!client(ip("127.0.0.2"), false, headers, &trusted).https);
        // A TLS connection is HTTPS whatever a header says of the hop before.
        let plain = ForwardedHeaders {
            x_forwarded_proto: Some("http"),
            ..headers
        };
        assert!(!client(ip("127.0.0.1"), false, plain, &trusted).https);
        assert!(client(ip("127.0.0.2"), true, plain, &trusted).https);
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_cidrs() {
        let trusted = nets(&["127.0.0.0/8"]);
        let c = client(ip("::ffff:127.0.0.1"), false, xff("203.0.113.1"), &trusted);
        assert_eq!(c.ip, ip("203.0.113.1"));
        assert_eq!(parse_node("[::ffff:1.2.3.4]:5"), ip("1.2.3.4"));
    }

    #[test]
    fn a_long_chain_is_cut_at_the_nearest_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut chain = vec!["203.0.113.1".to_string()];
        chain.extend((0..100).map(|i| format!("10.0.{}.{}", i / 250, i % 250)));
        let header = chain.join(",");
        let c = client(ip("10.0.0.1"), false, xff(&header), &trusted);
        // Only the last MAX_HOPS entries are read, all trusted: the leftmost of those.
        assert_eq!(c.ip, ip(&chain[chain.len() - MAX_HOPS]));
    }
}
