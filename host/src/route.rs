//! The next-hop vocabulary shared by the boxes that decide where mail
//! goes (the policy chain's `route` stage, the queue) and the box that
//! takes it there (delivery): [`Route`], [`TlsMode`], `host:port`
//! parsing and the rule for address-literal recipients
//! ([`LiteralRule`]). It sits below all of them and imports only
//! [`crate::smtp`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::smtp::Enhanced;

/// TLS policy for an outbound connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS when offered, without verifying the certificate; plain
    /// otherwise (RFC 3207 as practised between MTAs).
    #[default]
    Opportunistic,
    /// STARTTLS required and the certificate verified for the host name;
    /// otherwise the attempt fails temporarily.
    Require,
    /// Never STARTTLS.
    None,
}

/// The next hop for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// A local mailbox (Maildir under the data folder, or LMTP when set).
    Local,
    /// A relay host (smarthost).
    Relay {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// TLS policy.
        tls: TlsMode,
    },
    /// The MX hosts of this domain.
    Mx {
        /// The recipient domain (lower case).
        domain: String,
    },
    /// Refuse the recipient with this status and text (a DSN follows).
    Reject {
        /// Enhanced status, e.g. 5.1.1.
        status: Enhanced,
        /// Human-readable reason.
        text: String,
    },
}

/// Split `host:port` (`[v6]:port` for IPv6 literals).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(' ') {
        return None;
    }
    Some((host.to_string(), port))
}

/// Where mail for an address-literal recipient (`u@[192.0.2.1]`,
/// `u@[IPv6:2001:db8::1]`) may go. Such a recipient names the server to
/// connect to, so whoever may relay could otherwise make the gateway
/// connect anywhere, loopback and private networks included (a
/// server-side request forgery). Off by default; when on, only public
/// addresses, and of the others those in `networks` (the operator's
/// choice). Our own addresses are refused by the loop check beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiteralRule {
    /// Deliver to address literals at all.
    pub enabled: bool,
    /// Non-public networks literals may reach anyway.
    pub networks: Vec<IpNet>,
}

/// Why an address literal may not be delivered to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralRefusal {
    /// Delivery to address literals is off.
    #[error("delivery to address literals is not enabled")]
    Disabled,
    /// The address is not public (loopback, private, link-local, …) and
    /// not in the allowed networks.
    #[error("{0} is not a public address")]
    NotPublic(IpAddr),
    /// The literal is not an IPv4 or IPv6 address.
    #[error("{0} is not a usable address literal")]
    Unusable(String),
}

impl LiteralRule {
    /// May mail go to `ip`? An IPv4-mapped IPv6 address is judged as the
    /// IPv4 address it maps.
    pub fn check(&self, ip: IpAddr) -> Result<(), LiteralRefusal> {
        if !self.enabled {
            return Err(LiteralRefusal::Disabled);
        }
        let ip = ip.to_canonical();
        if is_public(ip) || self.networks.iter().any(|n| n.contains(&ip)) {
            Ok(())
        } else {
            Err(LiteralRefusal::NotPublic(ip))
        }
    }

    /// [`check`](Self::check) for a domain written as a literal
    /// (`[192.0.2.1]`, `[IPv6:…]` in any case); the address when allowed.
    pub fn check_literal(&self, literal: &str) -> Result<IpAddr, LiteralRefusal> {
        let ip =
            parse_literal(literal).ok_or_else(|| LiteralRefusal::Unusable(literal.to_string()))?;
        self.check(ip).map(|()| ip)
    }
}

/// The address of a domain literal `[192.0.2.1]` or `[IPv6:2001:db8::1]`
/// (the tag in any case, as the router lower-cases domains); `None` for
/// anything else, general literals (`[tag:…]`) included.
pub fn parse_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Is `ip` an address of the public internet? Not: unspecified,
/// loopback, private (RFC 1918, RFC 4193), shared (RFC 6598), link-local,
/// multicast, broadcast, documentation, benchmarking or reserved ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || b0 == 0
                || b0 >= 240
                || (b0 == 100 && (64..128).contains(&b1))
                || (b0 == 198 && (b1 == 18 || b1 == 19))
                || (b0 == 192 && b1 == 0 && a.octets()[2] == 0))
        }
        IpAddr::V6(a) => {
            let seg = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x0064 && seg[1] == 0xff9b)
                || seg[0] == 0x0100
                || (seg[0] == 0 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse_in_any_case() {
        assert_eq!(
            parse_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_literal("[ipv6:2001:DB8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_literal("[300.1.1.1]"), None);
        assert_eq!(parse_literal("[x-tag:abc]"), None);
        assert_eq!(parse_literal("example.com"), None);
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        let off = LiteralRule::default();
        assert_eq!(
            off.check("8.8.8.8".parse().unwrap()),
            Err(LiteralRefusal::Disabled)
        );
        let on = LiteralRule {
            enabled: true,
            networks: vec!["10.1.0.0/16".parse().unwrap()],
        };
        for public in ["8.8.8.8", "2a00:1450::1", "::ffff:8.8.4.4"] {
            assert_eq!(on.check(public.parse().unwrap()), Ok(()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(
                matches!(
                    on.check(private.parse().unwrap()),
                    Err(LiteralRefusal::NotPublic(_))
                ),
                "{private}"
            );
        }
        assert_eq!(on.check("10.1.2.3".parse().unwrap()), Ok(()));
        assert!(matches!(
            on.check_literal("[IPv6:fe80::1]"),
            Err(LiteralRefusal::NotPublic(_))
        ));
        assert!(matches!(
            on.check_literal("[nonsense]"),
            Err(LiteralRefusal::Unusable(_))
        ));
    }
}
