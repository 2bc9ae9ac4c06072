//! A small CIDR matcher for IPv4 and IPv6 networks.

use std::fmt;
use std::net::IpAddr;

/// A network such as `192.0.2.0/24` or `2001:db8::/32`; a plain address is
/// a network of one (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    /// An IPv4 network: address bits and prefix length.
    V4(u32, u8),
    /// An IPv6 network: address bits and prefix length.
    V6(u128, u8),
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Cidr {
    /// Parse `addr/len` or a plain address. Bits beyond the prefix
    /// (`192.0.2.1/24`) are ignored, as the address is masked.
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => {
                    return Err(format!("{text:?}: the prefix length must be 0 to {max}"));
                }
            },
        };
        Ok(match addr {
            IpAddr::V4(v4) => Cidr::V4(u32::from(v4) & mask32(len), len),
            IpAddr::V6(v6) => Cidr::V6(u128::from(v6) & mask128(len), len),
        })
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.1`) counts as its IPv4 address.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (Cidr::V4(net, len), IpAddr::V4(v4)) => u32::from(v4) & mask32(*len) == *net,
            (Cidr::V6(net, len), IpAddr::V6(v6)) => u128::from(v6) & mask128(*len) == *net,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(net, len) => write!(f, "{}/{len}", std::net::Ipv4Addr::from(*net)),
            Cidr::V6(net, len) => write!(f, "{}/{len}", std::net::Ipv6Addr::from(*net)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn v4_networks() {
        let net = cidr("192.0.2.0/24");
        assert!(net.contains(ip("192.0.2.0")));
        assert!(net.contains(ip("192.0.2.255")));
        assert!(!net.contains(ip("192.0.3.0")));
        assert!(!net.contains(ip("2001:db8::1")));
        assert!(net.contains(ip("::ffff:192.0.2.9")), "v4-mapped v6");
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(cidr("203.0.113.7").contains(ip("203.0.113.7")));
        assert!(!cidr("203.0.113.7").contains(ip("203.0.113.8")));
        assert_eq!(cidr("192.0.2.77/24").to_string(), "192.0.2.0/24");
        assert!(cidr("10.0.0.0/9").contains(ip("10.127.255.255")));
        assert!(!cidr("10.0.0.0/9").contains(ip("10.128.0.0")));
    }

    #[test]
    fn v6_networks() {
        let net = cidr("2001:db8::/32");
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        assert!(!net.contains(ip("192.0.2.1")));
        assert!(cidr("::/0").contains(ip("::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
        assert_eq!(cidr("2001:db8::1/64").to_string(), "2001:db8::/64");
    }

    #[test]
    fn bad_networks() {
        assert!(Cidr::parse("192.0.2.0/33").is_err());
        assert!(Cidr::parse("2001:db8::/129").is_err());
        assert!(Cidr::parse("192.0.2/24").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("192.0.2.0/").is_err());
        assert!(Cidr::parse("").is_err());
    }
}
