//! Which addresses the server may call on a tenant's behalf (media downloads, webhooks): public
//! unicast only. Private, loopback, link-local, CGNAT, multicast, documentation, reserved and
//! unspecified ranges are refused, in IPv4 and IPv6, including the IPv6 ranges that carry IPv4
//! addresses (mapped, compatible, NAT64, 6to4: judged by the address they carry; local-use NAT64 and
//! SIIT: refused outright).
//!
//! What a refused host *name* resolved to is never said (in errors or stored failure reasons): it
//! would let a tenant map the operator's internal DNS. A literal address the tenant typed may be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // "this network"
        || a == 10                              // private
        || a == 127                             // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254)               // link-local
        || (a == 172 && (16..32).contains(&b))  // private
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // documentation
        || (a == 192 && b == 88 && c == 99)     // 6to4 relay
        || (a == 192 && b == 168)               // private
        || (a == 198 && (18..20).contains(&b))  // benchmarking
        || (a == 198 && b == 51 && c == 100)    // documentation
        || (a == 203 && b == 0 && c == 113)     // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    !(ip.is_unspecified()
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64 (RFC 8215)
        || (s[..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0) // SIIT, IPv4-translated
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00      // unique local
        || (s[0] & 0xffc0) == 0xfe80      // link-local
        || (s[0] & 0xffc0) == 0xfec0      // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00      // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // discard-only
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
/// (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::/48) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    let mapped = s[..5].iter().all(|x| *x == 0) && s[5] == 0xffff;
    let compatible = s[..6].iter().all(|x| *x == 0) && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    (mapped || compatible || nat64).then(|| v4(s[6], s[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_non_public_class_is_refused() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "100::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in
            ["1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn local_use_nat64_and_siit_are_refused_whatever_they_carry() {
        for ip in ["64:ff9b:1::808:808", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::1", "::ffff:0:808:808", "::ffff:0:a00:1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
    }

    #[test]
    fn six_to_four_is_judged_by_the_ipv4_address_it_carries() {
        for ip in ["2002:a00:1::1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101:1::1", "2002:6440:1::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} carries a non-public IPv4 address");
        }
        assert!(is_public("2002:808:808::1".parse().unwrap()), "2002:808:808::1 carries 8.8.8.8");
    }
}

/// A host the server refuses to call. A literal address is named; a host name is named but what
/// it resolved to is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPublic {
    #[error("{0} is not a public address")]
    Address(IpAddr),
    #[error("{0} resolves to a non-public address")]
    Name(String),
}

/// A DNS resolver for outbound HTTP that resolves like the system does, then keeps only public
/// addresses. The check is made inside the client's own resolver, so the address checked is the
/// address connected to (no DNS rebinding between a check and the connection).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let public: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(NotPublic::Name(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client builder for calls to tenants' URLs: no redirects followed, no proxy (through a
/// proxy from `HTTP(S)_PROXY`/`ALL_PROXY`, the address connected to would be the proxy's, and the
/// target's would never be checked) and, unless private URLs are allowed, host names resolved to
/// public addresses only. Literal addresses never reach a resolver: check them with
/// [`literal_not_public`] before each request.
pub fn outbound_client(allow_private: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wazion-bridge/", env!("CARGO_PKG_VERSION")));
    if allow_private {
        builder
    } else {
        builder.dns_resolver(std::sync::Arc::new(PublicOnly))
    }
}

/// The URL's host when it is a literal address that is not public.
pub fn literal_not_public(url: &reqwest::Url) -> Option<NotPublic> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then_some(NotPublic::Address(ip))
}

/// The resolver's refusal, if that is what made a request fail.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<NotPublic> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<NotPublic>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

/// The innermost cause of an error: what actually went wrong (e.g. "connection refused").
pub fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
