//! `domain-router`: the gateway's domain match as a policy, with a
//! per-domain next-hop table.
//!
//! At the `route` stage, for each recipient:
//!
//! 1. its domain is looked up in the table built from `local_domains`
//!    (→ [`Route::Local`]) and `[routes]` (→ a relay host, another
//!    domain's MX hosts, a rejection, or local delivery): an exact match
//!    first, then wildcard entries `*.example.org` from the most specific
//!    parent domain to the least;
//! 2. a recipient that matches nothing goes to the MX hosts of its own
//!    domain ([`Route::Mx`]), or with `fallback = "default"` is left to the
//!    next policy and the gateway's own domain match ([`Route::Default`]).
//!
//! A recipient without a domain (`postmaster`) or with an address literal
//! (`user@[192.0.2.1]`) is always left to the gateway ([`Route::Default`]).
//!
//! See the crate's README for the configuration keys and an example.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use sluice_guest::{Config, Context, Envelope, Policy, Route, Stage, TlsMode};

/// What a table entry does with a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Deliver to the local mailbox.
    Local,
    /// Send to this relay host.
    Relay {
        host: String,
        port: u16,
        tls: TlsMode,
    },
    /// Send to the MX hosts of this domain.
    Mx(String),
    /// Fail the recipient with this reply.
    Reject {
        code: u16,
        enhanced: String,
        text: String,
    },
}

impl Action {
    fn route(&self) -> Route {
        match self {
            Action::Local => Route::Local,
            Action::Relay { host, port, tls } => Route::relay(host.clone(), *port, *tls),
            Action::Mx(domain) => Route::mx(domain.clone()),
            Action::Reject {
                code,
                enhanced,
                text,
            } => Route::reject(*code, enhanced.clone(), text.clone()),
        }
    }
}

/// What happens to a recipient whose domain is in no table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// The MX hosts of the recipient's domain.
    Mx,
    /// No opinion: the next policy, then the gateway's domain match.
    Default,
}

/// The `domain-router` policy: see the crate documentation.
#[derive(Debug, Clone)]
pub struct DomainRouter {
    /// Exact domains (lower case, no trailing dot) → action.
    exact: BTreeMap<String, Action>,
    /// Wildcard suffixes: `"example.org"` for the pattern `*.example.org`.
    wildcard: BTreeMap<String, Action>,
    fallback: Fallback,
}

/// The keys of the `[policy.config]` table.
const KEYS: &[&str] = &["local_domains", "routes", "fallback"];
/// The keys of one `[policy.config.routes]` entry.
const ROUTE_KEYS: &[&str] = &["relay", "tls", "mx", "reject", "local"];

/// A domain pattern, lower case without a trailing dot: `Ok((true, suffix))`
/// for `*.suffix`, `Ok((false, domain))` for a plain domain.
fn parse_pattern(raw: &str) -> Result<(bool, String), String> {
    let lower = raw.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, domain) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if !valid_domain(domain) {
        return Err(format!("{raw:?} is not a domain or a wildcard `*.domain`"));
    }
    Ok((wild, domain.to_string()))
}

/// A plausible domain name: 1 to 253 octets, labels of 1 to 63 letters,
/// digits, `-` or `_`, not starting or ending with `-`.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `host`, `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address; the
/// port defaults to 25.
fn parse_relay(raw: &str) -> Result<(String, u16), String> {
    let raw = raw.trim();
    let bad = || format!("{raw:?} is not `host` or `host:port`");
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{raw:?}: {host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if raw.matches(':').count() > 1 {
        // A bare IPv6 address: no port.
        if raw.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        (raw, None)
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    let port = match port {
        None => 25,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("{raw:?}: the port must be 1 to 65535")),
        },
    };
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    if !is_ip && !valid_domain(&host.to_ascii_lowercase()) {
        return Err(format!("{raw:?}: {host:?} is not a host name or address"));
    }
    Ok((host.to_string(), port))
}

fn parse_tls(raw: &str) -> Result<TlsMode, String> {
    match raw.to_ascii_lowercase().as_str() {
        "opportunistic" => Ok(TlsMode::Opportunistic),
        "require" => Ok(TlsMode::Require),
        "none" => Ok(TlsMode::None),
        _ => Err(format!(
            "{raw:?} is not \"opportunistic\", \"require\" or \"none\""
        )),
    }
}

/// `"550 5.1.2 no mail for this domain"`: a 5xx code, an optional
/// enhanced code of class 5, and text.
fn parse_reject(raw: &str) -> Result<(u16, String, String), String> {
    let raw = raw.trim();
    let (code, rest) = raw.split_once(' ').unwrap_or((raw, ""));
    let code = match code.parse::<u16>() {
        Ok(code) if (500..=599).contains(&code) => code,
        _ => {
            return Err(format!(
                "{raw:?} must start with a 5xx reply code, e.g. \"550 5.1.2 no mail for this domain\""
            ));
        }
    };
    let rest = rest.trim_start();
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let is_enhanced = first.split('.').count() == 3
        && first
            .split('.')
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    let (enhanced, text) = if is_enhanced {
        if !first.starts_with('5') {
            return Err(format!(
                "{raw:?}: the enhanced code {first} does not match the 5xx reply code"
            ));
        }
        (first.to_string(), after.trim().to_string())
    } else {
        ("5.1.2".to_string(), rest.to_string())
    };
    let text = if text.is_empty() {
        "no mail for this domain".to_string()
    } else {
        text
    };
    Ok((code, enhanced, text))
}

/// One `[policy.config.routes]` entry.
fn parse_action(entry: &Config, key: &str) -> Result<Action, String> {
    entry.check_keys(ROUTE_KEYS)?;
    let relay = entry.str("relay")?;
    let mx = entry.str("mx")?;
    let reject = entry.str("reject")?;
    let local = entry.bool("local")?.unwrap_or(false);
    let chosen = [relay.is_some(), mx.is_some(), reject.is_some(), local]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        return Err(format!(
            "config key `{key}`: give exactly one of `relay`, `mx`, `reject` or `local = true`"
        ));
    }
    let tls = entry.str("tls")?;
    if tls.is_some() && relay.is_none() {
        return Err(format!(
            "config key `{key}.tls`: only a `relay` entry has a TLS mode"
        ));
    }
    if let Some(relay) = relay {
        let (host, port) =
            parse_relay(relay).map_err(|e| format!("config key `{key}.relay`: {e}"))?;
        let tls = match tls {
            Some(t) => parse_tls(t).map_err(|e| format!("config key `{key}.tls`: {e}"))?,
            None => TlsMode::Opportunistic,
        };
        return Ok(Action::Relay { host, port, tls });
    }
    if let Some(mx) = mx {
        let (wild, domain) =
            parse_pattern(mx).map_err(|e| format!("config key `{key}.mx`: {e}"))?;
        if wild {
            return Err(format!(
                "config key `{key}.mx`: {mx:?} must be a domain, not a wildcard"
            ));
        }
        return Ok(Action::Mx(domain));
    }
    if let Some(reject) = reject {
        let (code, enhanced, text) =
            parse_reject(reject).map_err(|e| format!("config key `{key}.reject`: {e}"))?;
        return Ok(Action::Reject {
            code,
            enhanced,
            text,
        });
    }
    Ok(Action::Local)
}

impl DomainRouter {
    fn insert(&mut self, pattern: &str, action: Action, key: &str) -> Result<(), String> {
        let (wild, domain) =
            parse_pattern(pattern).map_err(|e| format!("config key `{key}`: {e}"))?;
        let table = if wild {
            &mut self.wildcard
        } else {
            &mut self.exact
        };
        if table.insert(domain, action).is_some() {
            return Err(format!(
                "config key `{key}`: {pattern:?} is listed twice (in `local_domains` and `routes`, or twice in `routes`)"
            ));
        }
        Ok(())
    }

    /// The table entry for `domain` (lower case): exact, then wildcards
    /// from the closest parent outwards.
    fn lookup(&self, domain: &str) -> Option<&Action> {
        if let Some(action) = self.exact.get(domain) {
            return Some(action);
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(action) = self.wildcard.get(parent) {
                return Some(action);
            }
            rest = parent;
        }
        None
    }

    /// The route of one recipient address.
    #[must_use]
    pub fn route_for(&self, recipient: &str) -> Route {
        let Some((_, domain)) = recipient.rsplit_once('@') else {
            return Route::Default;
        };
        let domain = domain.to_ascii_lowercase();
        let domain = domain.strip_suffix('.').unwrap_or(&domain);
        if domain.is_empty() || domain.starts_with('[') {
            return Route::Default;
        }
        match self.lookup(domain) {
            Some(action) => action.route(),
            None => match self.fallback {
                Fallback::Mx => Route::mx(domain),
                Fallback::Default => Route::Default,
            },
        }
    }
}

impl Policy for DomainRouter {
    fn name() -> &'static str {
        "domain-router"
    }

    fn stages() -> &'static [Stage] {
        &[Stage::Route]
    }

    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KEYS)?;
        let fallback = match config.str("fallback")? {
            None | Some("mx") => Fallback::Mx,
            Some("default") => Fallback::Default,
            Some(other) => {
                return Err(format!(
                    "config key `fallback`: {other:?} is not \"mx\" or \"default\""
                ));
            }
        };
        let mut router = DomainRouter {
            exact: BTreeMap::new(),
            wildcard: BTreeMap::new(),
            fallback,
        };
        for domain in config.list_str("local_domains")?.unwrap_or_default() {
            router.insert(&domain, Action::Local, "local_domains")?;
        }
        if let Some(routes) = config.table("routes")? {
            for pattern in routes.keys() {
                let key = format!("routes.{pattern}");
                let entry = routes.table(pattern)?.unwrap_or_default();
                let action = parse_action(&entry, &key)?;
                router.insert(pattern, action, &key)?;
            }
        }
        Ok(router)
    }

    fn on_route(&self, ctx: &Context, _envelope: &Envelope, recipient: &str) -> Route {
        let route = self.route_for(recipient);
        ctx.debug(&format!("{recipient}: {route:?}"));
        route
    }
}

sluice_guest::export_policy!(DomainRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::MockHost;

    fn router(json: &str) -> DomainRouter {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        DomainRouter::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn init_err(json: &str) -> String {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        match DomainRouter::init(&config) {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    fn route(r: &DomainRouter, rcpt: &str) -> Route {
        let host = MockHost::new();
        r.on_route(&host.context(), &Envelope::default(), rcpt)
    }

    const TABLE: &str = r#"{
        "local_domains": ["example.com", "*.corp.example"],
        "routes": {
            "partner.example": { "relay": "smtp.partner.example:2525", "tls": "require" },
            "plain.example": { "relay": "192.0.2.10", "tls": "none" },
            "v6.example": { "relay": "[2001:db8::25]:587" },
            "alias.example": { "mx": "Other.Example." },
            "gone.example": { "reject": "550 5.1.2 no mail for this domain" },
            "short.example": { "reject": "551" },
            "*.example.org": { "relay": "hub.example.org" },
            "*.deep.example.org": { "mx": "deep.example.net" },
            "deep.example.org": { "local": true }
        }
    }"#;

    #[test]
    fn local_domains_are_local_case_insensitively() {
        let r = router(TABLE);
        assert_eq!(route(&r, "ann@example.com"), Route::Local);
        assert_eq!(route(&r, "Ann@EXAMPLE.COM"), Route::Local);
        assert_eq!(route(&r, "ann@example.com."), Route::Local);
        assert_eq!(route(&r, "bob@eu.corp.example"), Route::Local);
        assert_eq!(route(&r, "bob@a.b.corp.example"), Route::Local);
        // A wildcard does not match the parent domain itself.
        assert_eq!(route(&r, "bob@corp.example"), Route::mx("corp.example"));
    }

    #[test]
    fn relay_entries() {
        let r = router(TABLE);
        assert_eq!(
            route(&r, "x@partner.example"),
            Route::relay("smtp.partner.example", 2525, TlsMode::Require)
        );
        assert_eq!(
            route(&r, "x@plain.example"),
            Route::relay("192.0.2.10", 25, TlsMode::None)
        );
        assert_eq!(
            route(&r, "x@v6.example"),
            Route::relay("2001:db8::25", 587, TlsMode::Opportunistic)
        );
    }

    #[test]
    fn mx_and_reject_entries() {
        let r = router(TABLE);
        assert_eq!(route(&r, "x@alias.example"), Route::mx("other.example"));
        assert_eq!(
            route(&r, "x@gone.example"),
            Route::reject(550, "5.1.2", "no mail for this domain")
        );
        assert_eq!(
            route(&r, "x@short.example"),
            Route::reject(551, "5.1.2", "no mail for this domain")
        );
    }

    #[test]
    fn wildcards_most_specific_first_and_exact_before_wildcard() {
        let r = router(TABLE);
        assert_eq!(
            route(&r, "x@a.example.org"),
            Route::relay("hub.example.org", 25, TlsMode::Opportunistic)
        );
        assert_eq!(
            route(&r, "x@a.b.example.org"),
            Route::relay("hub.example.org", 25, TlsMode::Opportunistic)
        );
        assert_eq!(
            route(&r, "x@a.deep.example.org"),
            Route::mx("deep.example.net")
        );
        // Exact beats the `*.example.org` wildcard.
        assert_eq!(route(&r, "x@deep.example.org"), Route::Local);
        // `*.example.org` does not cover example.org itself.
        assert_eq!(route(&r, "x@example.org"), Route::mx("example.org"));
    }

    #[test]
    fn everything_else_goes_to_its_mx_or_to_the_gateway() {
        let r = router(TABLE);
        assert_eq!(route(&r, "x@Elsewhere.NET"), Route::mx("elsewhere.net"));
        let r = router(r#"{"local_domains": ["example.com"], "fallback": "default"}"#);
        assert_eq!(route(&r, "x@elsewhere.net"), Route::Default);
        assert_eq!(route(&r, "x@example.com"), Route::Local);
    }

    #[test]
    fn addresses_without_a_domain_are_left_to_the_gateway() {
        let r = router(TABLE);
        assert_eq!(route(&r, "postmaster"), Route::Default);
        assert_eq!(route(&r, "x@[192.0.2.1]"), Route::Default);
        assert_eq!(route(&r, "x@"), Route::Default);
    }

    #[test]
    fn empty_config_routes_by_mx() {
        let r = router("{}");
        assert_eq!(route(&r, "x@example.com"), Route::mx("example.com"));
    }

    #[test]
    fn bad_configs_name_the_key() {
        assert!(init_err(r#"{"local_domain": []}"#).contains("`local_domain` is not known"));
        assert!(init_err(r#"{"fallback": "relay"}"#).contains("config key `fallback`"));
        assert!(init_err(r#"{"local_domains": ["not a domain"]}"#).contains("`local_domains`"));
        assert!(init_err(r#"{"local_domains": [1]}"#).contains("`local_domains`"));
        assert!(init_err(r#"{"routes": {"a.example": {}}}"#).contains("exactly one of"));
        assert!(
            init_err(r#"{"routes": {"a.example": {"relay": "h", "mx": "m.example"}}}"#)
                .contains("exactly one of")
        );
        let e = init_err(r#"{"routes": {"a.example": {"relay": "h:99999"}}}"#);
        assert!(
            e.contains("routes.a.example.relay") && e.contains("port"),
            "{e}"
        );
        let e = init_err(r#"{"routes": {"a.example": {"relay": "h", "tls": "maybe"}}}"#);
        assert!(e.contains("routes.a.example.tls"), "{e}");
        let e = init_err(r#"{"routes": {"a.example": {"mx": "m.example", "tls": "none"}}}"#);
        assert!(e.contains("only a `relay` entry"), "{e}");
        let e = init_err(r#"{"routes": {"a.example": {"reject": "250 ok"}}}"#);
        assert!(
            e.contains("routes.a.example.reject") && e.contains("5xx"),
            "{e}"
        );
        let e = init_err(r#"{"routes": {"a.example": {"reject": "550 4.1.2 mixed"}}}"#);
        assert!(e.contains("does not match"), "{e}");
        let e = init_err(r#"{"routes": {"a.example": {"mx": "*.b.example"}}}"#);
        assert!(e.contains("not a wildcard"), "{e}");
        let e = init_err(r#"{"routes": {"a.example": {"relay": "h", "port": 25}}}"#);
        assert!(e.contains("routes.a.example.port` is not known"), "{e}");
        let e = init_err(r#"{"routes": {"a.example": "smtp.example"}}"#);
        assert!(e.contains("routes.a.example"), "{e}");
        let e = init_err(r#"{"routes": {"a.*.example": {"local": true}}}"#);
        assert!(e.contains("wildcard"), "{e}");
        let e = init_err(
            r#"{"local_domains": ["a.example"], "routes": {"A.example": {"mx": "b.example"}}}"#,
        );
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn relay_and_reject_parsing() {
        assert_eq!(parse_relay("h.example"), Ok(("h.example".into(), 25)));
        assert_eq!(parse_relay("h.example:587"), Ok(("h.example".into(), 587)));
        assert_eq!(parse_relay("[::1]"), Ok(("::1".into(), 25)));
        assert_eq!(parse_relay("2001:db8::1"), Ok(("2001:db8::1".into(), 25)));
        assert!(parse_relay("[::1]x").is_err());
        assert!(parse_relay("[nope]:25").is_err());
        assert!(parse_relay("h:0").is_err());
        assert!(parse_relay(":25").is_err());
        assert_eq!(
            parse_reject("554 not here"),
            Ok((554, "5.1.2".into(), "not here".into()))
        );
        assert_eq!(
            parse_reject("550 5.7.1"),
            Ok((550, "5.7.1".into(), "no mail for this domain".into()))
        );
    }

    #[test]
    fn the_decision_is_logged_at_debug() {
        let r = router(TABLE);
        let host = MockHost::new();
        let _ = r.on_route(&host.context(), &Envelope::default(), "x@example.com");
        assert!(host.logged("x@example.com: Local"));
        assert!(host.calls().is_empty(), "routing needs no capability");
    }
}
