//! The built-in access rules the gate applies at each stage before, and
//! regardless of, any policy: no open relay, and no address literal that
//! would make the gateway connect where it must not.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::route::{LiteralRefusal, LiteralRule};
use crate::smtp::address::Domain;
use crate::smtp::reply::{Reply, std_replies};
use crate::smtp::{Check, Enhanced, Verdict};

/// The relay rule: local domains from anyone, other domains only from
/// relay networks; of those, address literals only as [`LiteralRule`]
/// allows.
#[derive(Debug, Clone)]
pub struct AccessRules {
    local_domains: Vec<String>,
    relay_networks: Vec<IpNet>,
    literals: LiteralRule,
}

impl AccessRules {
    /// From the configuration (domains already lower-cased).
    pub fn new(
        local_domains: Vec<String>,
        relay_networks: Vec<IpNet>,
        literals: LiteralRule,
    ) -> Self {
        Self {
            local_domains,
            relay_networks,
            literals,
        }
    }

    /// May `client` relay (send to non-local domains)? An IPv4-mapped
    /// IPv6 address is taken as the IPv4 address it maps.
    pub fn may_relay(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.relay_networks.iter().any(|n| n.contains(&client))
    }

    /// Is this domain ours?
    pub fn is_local(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_lowercase();
        self.local_domains.contains(&d)
    }

    /// The verdict for one stage, for a client that may relay or not
    /// ([`may_relay`](Self::may_relay), unless the session's address
    /// cannot be trusted for it).
    pub fn check(&self, check: &Check, relay_client: bool) -> Verdict {
        match check {
            Check::Rcpt { to, .. } => {
                // <postmaster> without a domain is always ours (RFC 5321
                // §4.1.1.3); an address literal is never a local domain.
                let local = match (&to.domain, to.domain_name()) {
                    (None, _) => true,
                    (Some(_), Some(name)) => self.is_local(&name),
                    (Some(_), None) => false,
                };
                if !local && !relay_client {
                    return Verdict::Reject(std_replies::relay_denied());
                }
                let checked = match &to.domain {
                    Some(Domain::V4(a)) => self.literals.check(IpAddr::V4(*a)),
                    Some(Domain::V6(a)) => self.literals.check(IpAddr::V6(*a)),
                    Some(Domain::General(g)) => Err(LiteralRefusal::Unusable(format!("[{g}]"))),
                    Some(Domain::Name(_)) | None => Ok(()),
                };
                match checked {
                    Ok(()) => Verdict::Accept,
                    Err(refusal @ LiteralRefusal::Unusable(_)) => Verdict::Reject(Reply::new(
                        553,
                        Enhanced(5, 1, 2),
                        format!("<{to}>: {refusal}"),
                    )),
                    Err(refusal) => Verdict::Reject(Reply::new(
                        550,
                        Enhanced(5, 7, 1),
                        format!("<{to}>: {refusal}"),
                    )),
                }
            }
            Check::Connect | Check::Helo { .. } | Check::MailFrom { .. } => Verdict::Accept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{ReversePath, parse_forward_path};

    fn rcpt(a: &str) -> Check {
        Check::Rcpt {
            from: ReversePath::Null,
            to: parse_forward_path(a).unwrap(),
            params: Default::default(),
            accepted: Vec::new(),
        }
    }

    #[test]
    fn relay_rule() {
        let r = AccessRules::new(
            vec!["example.com".into()],
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            LiteralRule::default(),
        );
        let outside: IpAddr = "203.0.113.9".parse().unwrap();
        let inside: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            r.check(&rcpt("<a@Example.COM>"), r.may_relay(outside)),
            Verdict::Accept
        );
        assert_eq!(
            r.check(&rcpt("<postmaster>"), r.may_relay(outside)),
            Verdict::Accept
        );
        assert!(
            matches!(r.check(&rcpt("<a@other.example>"), r.may_relay(outside)), Verdict::Reject(x) if x.code == 554)
        );
        assert!(matches!(
            r.check(&rcpt("<a@[127.0.0.1]>"), r.may_relay(outside)),
            Verdict::Reject(_)
        ));
        assert_eq!(
            r.check(&rcpt("<a@other.example>"), r.may_relay(inside)),
            Verdict::Accept
        );
        assert_eq!(
            r.check(&rcpt("<a@other.example>"), r.may_relay(mapped)),
            Verdict::Accept
        );
    }

    #[test]
    fn address_literals_only_as_the_rule_allows() {
        let rules = |literals| {
            AccessRules::new(
                vec!["example.com".into()],
                vec!["127.0.0.0/8".parse().unwrap()],
                literals,
            )
        };
        let off = rules(LiteralRule::default());
        for to in ["<u@[127.0.0.1]>", "<u@[8.8.8.8]>", "<u@[IPv6:::1]>"] {
            assert!(
                matches!(off.check(&rcpt(to), true), Verdict::Reject(x) if x.code == 550 && x.enhanced == Some(Enhanced(5, 7, 1))),
                "{to}"
            );
        }
        assert!(matches!(
            off.check(&rcpt("<u@[x-tag:abc]>"), true),
            Verdict::Reject(x) if x.code == 553
        ));
        let on = rules(LiteralRule {
            enabled: true,
            networks: vec!["127.0.0.2/32".parse().unwrap()],
        });
        assert_eq!(on.check(&rcpt("<u@[8.8.8.8]>"), true), Verdict::Accept);
        assert_eq!(on.check(&rcpt("<u@[127.0.0.2]>"), true), Verdict::Accept);
        for to in ["<u@[127.0.0.1]>", "<u@[10.0.0.1]>", "<u@[IPv6:fe80::1]>"] {
            assert!(
                matches!(on.check(&rcpt(to), true), Verdict::Reject(x) if x.code == 550),
                "{to}"
            );
        }
        // Outsiders still get the relay refusal first.
        assert!(matches!(
            on.check(&rcpt("<u@[8.8.8.8]>"), false),
            Verdict::Reject(x) if x.code == 554
        ));
    }
}
