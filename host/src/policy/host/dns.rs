//! The host side of `sluice:policy/dns` (the `dns` capability): A, AAAA,
//! MX, TXT and PTR lookups through the gateway's resolver, names checked,
//! answers bounded.

use std::net::IpAddr;

use crate::policy::bindings::sluice::policy::{dns, errors};
use crate::policy::message::cut;

use errors::HostError;

use super::*;

/// A domain name as DNS takes it: 1 to 253 octets of labels of 1 to 63
/// letters, digits, `-` and `_`, an optional final dot; not an address.
fn check_name(name: &str) -> Result<(), HostError> {
    let bad = |why: &str| {
        Err(HostError::InvalidArgument(format!(
            "{why}: {:?}",
            cut(name, 300)
        )))
    };
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 {
        return bad("not a domain name");
    }
    if n.parse::<IpAddr>().is_ok() {
        return bad("an address, not a name (use ptr)");
    }
    for label in n.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("not a domain name");
        }
    }
    Ok(())
}

impl dns::Host for HostState {
    async fn a(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.a", &[name.clone().into()]) {
            return self.tap_record("dns.a", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ips(&name)).await.map(|ips| {
            ips.into_iter()
                .filter(IpAddr::is_ipv4)
                .map(|ip| ip.to_string())
                .collect()
        });
        self.tap_record("dns.a", vec![name.into()], r)
    }

    async fn aaaa(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.aaaa", &[name.clone().into()]) {
            return self.tap_record("dns.aaaa", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ips(&name)).await.map(|ips| {
            ips.into_iter()
                .filter(IpAddr::is_ipv6)
                .map(|ip| ip.to_string())
                .collect()
        });
        self.tap_record("dns.aaaa", vec![name.into()], r)
    }

    async fn mx(&mut self, name: String) -> Result<Vec<(u16, String)>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.mx", &[name.clone().into()]) {
            return self.tap_record("dns.mx", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.mx(&name)).await.map(|mx| {
            mx.into_iter()
                .map(|m| {
                    let exchange = if m.exchange.is_empty() {
                        ".".to_string()
                    } else {
                        m.exchange
                    };
                    (m.preference, exchange)
                })
                .collect()
        });
        self.tap_record("dns.mx", vec![name.into()], r)
    }

    async fn txt(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.txt", &[name.clone().into()]) {
            return self.tap_record("dns.txt", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.txt(&name)).await;
        self.tap_record("dns.txt", vec![name.into()], r)
    }

    async fn ptr(&mut self, ip: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        let addr: IpAddr = ip.parse().map_err(|_| {
            HostError::InvalidArgument(format!("not an IP address: {:?}", cut(&ip, 100)))
        })?;
        if let Some(r) = self.tapped("dns.ptr", &[ip.clone().into()]) {
            return self.tap_record("dns.ptr", vec![ip.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ptr(addr)).await;
        self.tap_record("dns.ptr", vec![ip.into()], r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("example.test").is_ok());
        assert!(check_name("2.0.0.127.zen.example.").is_ok());
        assert!(check_name("_dmarc.example.test").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            "1.2.3.4",
            "::1",
            "a b.test",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_name(bad), Err(HostError::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
