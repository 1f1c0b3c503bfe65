//! The client's address: the socket peer, or, when the peer is one of
//! `server.trusted_proxies`, the rightmost address of `X-Forwarded-For`
//! that is not a trusted proxy itself (each proxy appends the address it
//! saw, so everything left of the first untrusted hop could be made up).

use std::net::IpAddr;

use crate::config::TrustedNet;

/// The client address of a request from `peer` that carried
/// `forwarded_for` (all its `X-Forwarded-For` lines, in order).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[TrustedNet],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.rev() {
        for hop in line.rsplit(|&b| b == b',') {
            let Some(ip) = parse_hop(hop) else {
                // Not an address: whoever wrote it is not to be believed,
                // and neither is anything left of it. The last trusted
                // proxy's view stands.
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` element: an IPv4 or IPv6 address, optionally
/// bracketed or with a port (some proxies write `1.2.3.4:5678`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim_matches(|c| c == ' ' || c == '\t');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (address, _) = rest.split_once(']')?;
        return address.parse().ok();
    }
    let (address, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<TrustedNet> {
        list.iter()
            .map(|s| {
                let (ip, prefix) = s.split_once('/').unwrap();
                TrustedNet { network: ip.parse().unwrap(), prefix: prefix.parse().unwrap() }
            })
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn of(peer: &str, xff: &[&str], trusted: &[&str]) -> IpAddr {
        client_ip(ip(peer), xff.iter().map(|s| s.as_bytes()), &nets(trusted))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(of("203.0.113.9", &["10.0.0.1"], &[]), ip("203.0.113.9"));
        assert_eq!(of("203.0.113.9", &["10.0.0.1"], &["10.0.0.0/8"]), ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(of("10.0.0.2", &["198.51.100.7"], &trusted), ip("198.51.100.7"));
        // The client made up the first element; the LB appended what it saw.
        assert_eq!(
            of("10.0.0.2", &["1.1.1.1, 198.51.100.7, 10.0.0.5"], &trusted),
            ip("198.51.100.7")
        );
        // Several lines are one list, in order.
        assert_eq!(of("10.0.0.2", &["1.1.1.1", "198.51.100.7"], &trusted), ip("198.51.100.7"));
        assert_eq!(of("10.0.0.2", &["[2001:db8::1]:443"], &trusted), ip("2001:db8::1"));
        assert_eq!(of("10.0.0.2", &["198.51.100.7:5050"], &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_or_nothing_leaves_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(of("10.0.0.2", &[], &trusted), ip("10.0.0.2"));
        assert_eq!(of("10.0.0.2", &["unknown"], &trusted), ip("10.0.0.2"));
        assert_eq!(of("10.0.0.2", &["1.1.1.1, junk, 10.0.0.3"], &trusted), ip("10.0.0.3"));
        assert_eq!(of("10.0.0.2", &["10.0.0.3, 10.0.0.4"], &trusted), ip("10.0.0.3"));
    }
}
