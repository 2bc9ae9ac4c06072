//! `access`: allow and deny lists for the client address, the HELO name,
//! the sender and the recipients.
//!
//! | stage | allow list | deny list | matched against |
//! | --- | --- | --- | --- |
//! | connect | `allow_networks` | `deny_networks` | the client IP (CIDR, IPv4 and IPv6) |
//! | helo | `allow_helo` | `deny_helo` | the EHLO/HELO name |
//! | mail-from | `allow_senders` | `deny_senders` | the reverse-path (`<>` is the null sender) |
//! | rcpt | `allow_recipients` | `deny_recipients` | each recipient |
//!
//! At each stage, **an allow match wins over a deny match**: the allow
//! list carves exceptions out of the deny list (`deny_networks =
//! ["0.0.0.0/0", "::/0"]` with `allow_networks = ["192.0.2.0/24"]` lets only
//! that network in). An allowed value gets [`Verdict::Continue`] (the next
//! policy still decides) or, with `allow_action = "accept"`,
//! [`Verdict::Accept`] (the rest of the chain is skipped for this stage).
//! A denied one gets the configured reply, `550 5.7.1 Access denied` by
//! default. Every comparison ignores case.
//!
//! Address patterns (senders, recipients): `user@example.com` (that
//! address), `@example.com` or `example.com` (any address at that domain),
//! `*.example.com` or `@*.example.com` (any address at a subdomain of
//! example.com, not example.com itself), `user@` (that local part at any
//! domain), `<>` (the null sender). HELO patterns: `mail.example.com`
//! (that name) or `*.example.com` (any subdomain).
//!
//! See the crate's README for the configuration keys and an example.

#![warn(missing_docs)]

mod cidr;

use cidr::Cidr;
use sluice_guest::{Config, Context, Envelope, Param, Policy, Session, Stage, Verdict};

/// An address pattern (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrPattern {
    /// `user@example.com`.
    Exact(String),
    /// `user@`: this local part at any domain.
    LocalPart(String),
    /// `@example.com` or `example.com`.
    Domain(String),
    /// `*.example.com` or `@*.example.com`: any subdomain (the suffix is
    /// stored with its leading dot).
    Subdomains(String),
    /// `<>`: the null sender.
    Null,
}

impl AddrPattern {
    fn parse(raw: &str) -> Result<AddrPattern, String> {
        let p = raw.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "{raw:?} is not an address pattern (user@domain, @domain, *.domain, user@ or <>)"
            )
        };
        if p == "<>" {
            return Ok(AddrPattern::Null);
        }
        if p.is_empty() || p.contains(char::is_whitespace) || p.matches('@').count() > 1 {
            return Err(bad());
        }
        let wildcard = |domain: &str| -> Result<AddrPattern, String> {
            match domain.strip_prefix("*.") {
                Some(suffix) if valid_name(suffix) => {
                    Ok(AddrPattern::Subdomains(format!(".{suffix}")))
                }
                Some(_) => Err(bad()),
                None if valid_name(domain) => Ok(AddrPattern::Domain(domain.to_string())),
                None => Err(bad()),
            }
        };
        match p.split_once('@') {
            None => wildcard(&p),
            Some(("", domain)) => wildcard(domain),
            Some((local, "")) if !local.contains('*') => {
                Ok(AddrPattern::LocalPart(local.to_string()))
            }
            Some((local, domain)) if !local.contains('*') && valid_name(domain) => {
                Ok(AddrPattern::Exact(p.clone()))
            }
            Some(_) => Err(bad()),
        }
    }

    /// Whether the address (already lower case; empty for `<>`) matches.
    fn matches(&self, addr: &str) -> bool {
        if addr.is_empty() {
            return *self == AddrPattern::Null;
        }
        let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
        match self {
            AddrPattern::Exact(p) => p == addr,
            AddrPattern::LocalPart(p) => p == local,
            AddrPattern::Domain(p) => p == domain,
            AddrPattern::Subdomains(suffix) => domain.ends_with(suffix.as_str()),
            AddrPattern::Null => false,
        }
    }
}

/// A HELO name pattern (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    /// That name (or address literal, `[192.0.2.1]`).
    Exact(String),
    /// Any subdomain; the suffix with its leading dot.
    Subdomains(String),
}

impl NamePattern {
    fn parse(raw: &str) -> Result<NamePattern, String> {
        let p = raw.trim().to_ascii_lowercase();
        let p = p.strip_suffix('.').unwrap_or(&p).to_string();
        if p.is_empty() || p.contains(char::is_whitespace) {
            return Err(format!("{raw:?} is not a HELO name pattern"));
        }
        match p.strip_prefix("*.") {
            Some(suffix) if !suffix.contains('*') && !suffix.is_empty() => {
                Ok(NamePattern::Subdomains(format!(".{suffix}")))
            }
            None if !p.contains('*') => Ok(NamePattern::Exact(p)),
            _ => Err(format!(
                "{raw:?}: a `*` is only allowed as a leading `*.` (any subdomain)"
            )),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(p) => p == name,
            NamePattern::Subdomains(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

/// Letters, digits, `-`, `_` and dots, labels non-empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The pair of lists of one stage.
#[derive(Debug, Clone)]
struct Lists<P> {
    allow: Vec<P>,
    deny: Vec<P>,
}

impl<P> Lists<P> {
    fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// What a list lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Allowed,
    Denied,
    Neither,
}

impl<P> Lists<P> {
    fn check(&self, matches: impl Fn(&P) -> bool) -> Found {
        if self.allow.iter().any(&matches) {
            Found::Allowed
        } else if self.deny.iter().any(&matches) {
            Found::Denied
        } else {
            Found::Neither
        }
    }
}

/// The `access` policy: see the crate documentation.
#[derive(Debug, Clone)]
pub struct Access {
    networks: Lists<Cidr>,
    helo: Lists<NamePattern>,
    senders: Lists<AddrPattern>,
    recipients: Lists<AddrPattern>,
    /// Accept (skip the rest of the chain) on an allow match, rather than
    /// continue.
    allow_accepts: bool,
    /// The refusal.
    denied: Verdict,
}

/// The keys of the `[policy.config]` table.
const KEYS: &[&str] = &[
    "allow_networks",
    "deny_networks",
    "allow_helo",
    "deny_helo",
    "allow_senders",
    "deny_senders",
    "allow_recipients",
    "deny_recipients",
    "allow_action",
    "reject_code",
    "reject_status",
    "reject_text",
];

fn list<P>(
    config: &Config,
    key: &str,
    parse: impl Fn(&str) -> Result<P, String>,
) -> Result<Vec<P>, String> {
    config
        .list_str(key)?
        .unwrap_or_default()
        .iter()
        .map(|item| parse(item).map_err(|e| format!("config key `{key}`: {e}")))
        .collect()
}

fn lists<P>(
    config: &Config,
    what: &str,
    parse: impl Fn(&str) -> Result<P, String> + Copy,
) -> Result<Lists<P>, String> {
    Ok(Lists {
        allow: list(config, &format!("allow_{what}"), parse)?,
        deny: list(config, &format!("deny_{what}"), parse)?,
    })
}

/// The refusal from `reject_code`, `reject_status` and `reject_text`: a
/// 5xx code rejects, a 4xx code tempfails.
fn refusal(config: &Config) -> Result<Verdict, String> {
    let code = config.u32("reject_code")?.unwrap_or(550);
    if !(400..=599).contains(&code) {
        return Err(format!(
            "config key `reject_code`: {code} is not a 4xx or 5xx reply code"
        ));
    }
    let class = code / 100;
    let status = config
        .str("reject_status")?
        .map(str::to_string)
        .unwrap_or_else(|| format!("{class}.7.1"));
    let parts: Vec<&str> = status.split('.').collect();
    let well_formed = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed || parts[0] != class.to_string() {
        return Err(format!(
            "config key `reject_status`: {status:?} is not an enhanced status code of class {class} (like \"{class}.7.1\") to go with reject_code {code}"
        ));
    }
    let text = config.str("reject_text")?.unwrap_or("Access denied");
    if text.contains(['\r', '\n']) {
        return Err("config key `reject_text`: must be one line".into());
    }
    // `code` is 400..=599, so it fits.
    let code = u16::try_from(code).unwrap_or(550);
    Ok(if class == 4 {
        Verdict::tempfail(code, status, text)
    } else {
        Verdict::reject(code, status, text)
    })
}

impl Access {
    /// Turn a lookup into a verdict, logging what matched.
    /// `what` names the matched item for the log (built only on a match).
    fn decide(&self, ctx: &Context, found: Found, what: impl FnOnce() -> String) -> Verdict {
        match found {
            Found::Allowed => {
                ctx.debug(&format!("{} allowed", what()));
                let _ = ctx.counter_add("allowed", 1);
                if self.allow_accepts {
                    Verdict::Accept
                } else {
                    Verdict::Continue
                }
            }
            Found::Denied => {
                ctx.info(&format!("{} denied", what()));
                let _ = ctx.counter_add("denied", 1);
                self.denied.clone()
            }
            Found::Neither => Verdict::Continue,
        }
    }

    fn check_address(
        &self,
        ctx: &Context,
        lists: &Lists<AddrPattern>,
        addr: &str,
        what: &str,
    ) -> Verdict {
        if lists.is_empty() {
            return Verdict::Continue;
        }
        let lower = addr.to_ascii_lowercase();
        let found = lists.check(|p| p.matches(&lower));
        let shown = if addr.is_empty() { "<>" } else { addr };
        self.decide(ctx, found, || format!("{what} {shown}"))
    }
}

impl Policy for Access {
    fn name() -> &'static str {
        "access"
    }

    fn stages() -> &'static [Stage] {
        &[Stage::Connect, Stage::Helo, Stage::MailFrom, Stage::Rcpt]
    }

    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KEYS)?;
        let allow_accepts = match config.str("allow_action")? {
            None | Some("continue") => false,
            Some("accept") => true,
            Some(other) => {
                return Err(format!(
                    "config key `allow_action`: {other:?} is not \"continue\" or \"accept\""
                ));
            }
        };
        Ok(Access {
            networks: lists(config, "networks", Cidr::parse)?,
            helo: lists(config, "helo", NamePattern::parse)?,
            senders: lists(config, "senders", AddrPattern::parse)?,
            recipients: lists(config, "recipients", AddrPattern::parse)?,
            allow_accepts,
            denied: refusal(config)?,
        })
    }

    /// Only the stages with a list: the host skips the others' calls.
    fn configured_stages(&self) -> Vec<Stage> {
        [
            (Stage::Connect, self.networks.is_empty()),
            (Stage::Helo, self.helo.is_empty()),
            (Stage::MailFrom, self.senders.is_empty()),
            (Stage::Rcpt, self.recipients.is_empty()),
        ]
        .into_iter()
        .filter(|(_, empty)| !empty)
        .map(|(stage, _)| stage)
        .collect()
    }

    fn on_connect(&self, ctx: &Context, session: &Session) -> Verdict {
        if self.networks.is_empty() {
            return Verdict::Continue;
        }
        let Some(ip) = session.ip() else {
            ctx.warn(&format!(
                "client address {:?} is not an IP address",
                session.client_ip
            ));
            return Verdict::Continue;
        };
        let found = self.networks.check(|net| net.contains(ip));
        self.decide(ctx, found, || format!("client {ip}"))
    }

    fn on_helo(&self, ctx: &Context, _session: &Session, name: &str) -> Verdict {
        if self.helo.is_empty() {
            return Verdict::Continue;
        }
        let lower = name.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let found = self.helo.check(|p| p.matches(lower));
        self.decide(ctx, found, || format!("HELO {name}"))
    }

    fn on_mail_from(
        &self,
        ctx: &Context,
        _session: &Session,
        sender: &str,
        _params: &[Param],
    ) -> Verdict {
        self.check_address(ctx, &self.senders, sender, "sender")
    }

    fn on_rcpt(
        &self,
        ctx: &Context,
        _session: &Session,
        _envelope: &Envelope,
        recipient: &str,
        _params: &[Param],
    ) -> Verdict {
        self.check_address(ctx, &self.recipients, recipient, "recipient")
    }
}

sluice_guest::export_policy!(Access);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{Capability, MockHost};

    fn access(json: &str) -> Access {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        Access::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn init_err(json: &str) -> String {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        match Access::init(&config) {
            Ok(a) => panic!("expected an error, got {a:?}"),
            Err(e) => e,
        }
    }

    fn from(ip: &str) -> Session {
        Session {
            client_ip: ip.into(),
            ..Session::default()
        }
    }

    fn denied() -> Verdict {
        Verdict::reject(550, "5.7.1", "Access denied")
    }

    struct Run {
        host: MockHost,
        policy: Access,
    }

    impl Run {
        fn new(json: &str) -> Run {
            Run {
                host: MockHost::new().grant(Capability::Metrics),
                policy: access(json),
            }
        }
        fn connect(&self, ip: &str) -> Verdict {
            self.policy.on_connect(&self.host.context(), &from(ip))
        }
        fn helo(&self, name: &str) -> Verdict {
            self.policy
                .on_helo(&self.host.context(), &from("192.0.2.1"), name)
        }
        fn mail(&self, sender: &str) -> Verdict {
            self.policy
                .on_mail_from(&self.host.context(), &from("192.0.2.1"), sender, &[])
        }
        fn rcpt(&self, rcpt: &str) -> Verdict {
            self.policy.on_rcpt(
                &self.host.context(),
                &from("192.0.2.1"),
                &Envelope::default(),
                rcpt,
                &[],
            )
        }
    }

    #[test]
    fn networks_deny_and_allow_exceptions() {
        let run = Run::new(
            r#"{"deny_networks": ["192.0.2.0/24", "2001:db8::/32"],
                "allow_networks": ["192.0.2.128/25", "2001:db8:1::1"]}"#,
        );
        assert_eq!(run.connect("192.0.2.7"), denied());
        assert_eq!(run.connect("192.0.2.200"), Verdict::Continue, "allow wins");
        assert_eq!(run.connect("198.51.100.1"), Verdict::Continue);
        assert_eq!(run.connect("2001:db8:5::1"), denied());
        assert_eq!(run.connect("2001:db8:1::1"), Verdict::Continue);
        assert_eq!(run.connect("::ffff:192.0.2.7"), denied(), "v4-mapped");
        assert_eq!(run.connect("not-an-ip"), Verdict::Continue);
        assert!(run.host.logged("client 192.0.2.7 denied"));
        assert_eq!(run.host.counter("denied"), 3);
        assert_eq!(run.host.counter("allowed"), 2);
    }

    #[test]
    fn allow_only_with_deny_all() {
        let run = Run::new(
            r#"{"deny_networks": ["0.0.0.0/0", "::/0"], "allow_networks": ["10.0.0.0/8"],
                "allow_action": "accept"}"#,
        );
        assert_eq!(run.connect("10.1.2.3"), Verdict::Accept);
        assert_eq!(run.connect("192.0.2.1"), denied());
        assert_eq!(run.connect("::1"), denied());
    }

    #[test]
    fn helo_names() {
        let run = Run::new(
            r#"{"deny_helo": ["localhost", "*.Dyn.Example", "[127.0.0.1]"],
                "allow_helo": ["good.dyn.example"]}"#,
        );
        assert_eq!(run.helo("LOCALHOST"), denied());
        assert_eq!(run.helo("localhost."), denied());
        assert_eq!(run.helo("host-1.dyn.example"), denied());
        assert_eq!(run.helo("good.dyn.example"), Verdict::Continue);
        assert_eq!(
            run.helo("dyn.example"),
            Verdict::Continue,
            "subdomains only"
        );
        assert_eq!(run.helo("[127.0.0.1]"), denied());
        assert_eq!(run.helo("mail.example.com"), Verdict::Continue);
    }

    #[test]
    fn sender_patterns() {
        let run = Run::new(
            r#"{"deny_senders": ["spammer@example.com", "@bad.example", "*.bulk.example",
                                 "noreply@", "<>", "junk.example"],
                "allow_senders": ["boss@bad.example", "@ok.bulk.example"]}"#,
        );
        assert_eq!(run.mail("Spammer@Example.COM"), denied());
        assert_eq!(run.mail("other@example.com"), Verdict::Continue);
        assert_eq!(run.mail("anyone@BAD.example"), denied());
        assert_eq!(
            run.mail("boss@bad.example"),
            Verdict::Continue,
            "allow wins"
        );
        assert_eq!(
            run.mail("x@sub.bad.example"),
            Verdict::Continue,
            "@domain is exact"
        );
        assert_eq!(run.mail("x@a.bulk.example"), denied());
        assert_eq!(run.mail("x@a.b.bulk.example"), denied());
        assert_eq!(
            run.mail("x@bulk.example"),
            Verdict::Continue,
            "*. is subdomains only"
        );
        assert_eq!(run.mail("x@ok.bulk.example"), Verdict::Continue);
        assert_eq!(run.mail("noreply@anywhere.example"), denied());
        assert_eq!(run.mail(""), denied(), "null sender");
        assert_eq!(run.mail("x@junk.example"), denied(), "bare domain");
        assert!(run.host.logged("sender <> denied"));
    }

    #[test]
    fn recipient_patterns_and_the_null_sender_pattern_only_matches_null() {
        let run = Run::new(
            r#"{"deny_recipients": ["@internal.example", "@*.internal.example"],
                "allow_recipients": ["postmaster@", "help@internal.example"]}"#,
        );
        assert_eq!(run.rcpt("x@internal.example"), denied());
        assert_eq!(run.rcpt("x@eu.internal.example"), denied());
        assert_eq!(run.rcpt("Postmaster@internal.example"), Verdict::Continue);
        assert_eq!(run.rcpt("help@internal.example"), Verdict::Continue);
        assert_eq!(run.rcpt("x@example.com"), Verdict::Continue);
        assert_eq!(run.rcpt("postmaster"), Verdict::Continue);
        let run = Run::new(r#"{"deny_senders": ["<>"]}"#);
        assert_eq!(run.mail("a@b.example"), Verdict::Continue);
    }

    #[test]
    fn stages_are_independent() {
        // A denied network does not affect the sender check and vice versa.
        let run =
            Run::new(r#"{"deny_networks": ["192.0.2.0/24"], "allow_senders": ["a@b.example"]}"#);
        assert_eq!(run.connect("192.0.2.1"), denied());
        assert_eq!(run.mail("a@b.example"), Verdict::Continue);
        assert_eq!(run.mail("c@d.example"), Verdict::Continue);
        assert_eq!(run.helo("x"), Verdict::Continue);
        assert_eq!(run.rcpt("a@b.example"), Verdict::Continue);
    }

    #[test]
    fn custom_replies() {
        let run = Run::new(
            r#"{"deny_senders": ["@x.example"], "reject_code": 554, "reject_status": "5.7.25",
                "reject_text": "go away"}"#,
        );
        assert_eq!(
            run.mail("a@x.example"),
            Verdict::reject(554, "5.7.25", "go away")
        );
        let run = Run::new(r#"{"deny_senders": ["@x.example"], "reject_code": 450}"#);
        assert_eq!(
            run.mail("a@x.example"),
            Verdict::tempfail(450, "4.7.1", "Access denied")
        );
    }

    #[test]
    fn empty_config_allows_everything_and_needs_no_capability() {
        let run = Run::new("{}");
        assert_eq!(run.connect("192.0.2.1"), Verdict::Continue);
        assert_eq!(run.helo("x"), Verdict::Continue);
        assert_eq!(run.mail(""), Verdict::Continue);
        assert_eq!(run.rcpt("a@b.example"), Verdict::Continue);
        assert!(run.host.calls().is_empty());
    }

    #[test]
    fn only_the_stages_with_a_list_are_called() {
        let p = access(r#"{"deny_networks": ["192.0.2.0/24"]}"#);
        assert_eq!(p.configured_stages(), vec![Stage::Connect]);
        let p = access(r#"{"allow_helo": ["mx.example"], "deny_recipients": ["@x.example"]}"#);
        assert_eq!(p.configured_stages(), vec![Stage::Helo, Stage::Rcpt]);
        let p = access(r#"{"deny_senders": ["a@x.example"]}"#);
        assert_eq!(p.configured_stages(), vec![Stage::MailFrom]);
        assert!(access("{}").configured_stages().is_empty());
    }

    #[test]
    fn metrics_are_optional() {
        let host = MockHost::new();
        let policy = access(r#"{"deny_networks": ["192.0.2.0/24"]}"#);
        assert_eq!(
            policy.on_connect(&host.context(), &from("192.0.2.1")),
            denied()
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = init_err(r#"{"deny_network": []}"#);
        assert!(e.contains("`deny_network` is not known"), "{e}");
        let e = init_err(r#"{"deny_networks": ["192.0.2.0/33"]}"#);
        assert!(
            e.contains("config key `deny_networks`") && e.contains("prefix"),
            "{e}"
        );
        let e = init_err(r#"{"allow_networks": ["example.com"]}"#);
        assert!(e.contains("config key `allow_networks`"), "{e}");
        let e = init_err(r#"{"deny_networks": "192.0.2.0/24"}"#);
        assert!(e.contains("`deny_networks`: expected a list"), "{e}");
        let e = init_err(r#"{"deny_senders": ["a@b@c"]}"#);
        assert!(e.contains("config key `deny_senders`"), "{e}");
        let e = init_err(r#"{"allow_recipients": ["*@example.com"]}"#);
        assert!(e.contains("config key `allow_recipients`"), "{e}");
        let e = init_err(r#"{"deny_helo": ["mail.*.example"]}"#);
        assert!(e.contains("config key `deny_helo`"), "{e}");
        let e = init_err(r#"{"reject_code": 250}"#);
        assert!(e.contains("config key `reject_code`"), "{e}");
        let e = init_err(r#"{"reject_code": 550, "reject_status": "4.7.1"}"#);
        assert!(e.contains("config key `reject_status`"), "{e}");
        let e = init_err(r#"{"reject_status": "5.7"}"#);
        assert!(e.contains("config key `reject_status`"), "{e}");
        let e = init_err(r#"{"reject_text": "a\nb"}"#);
        assert!(e.contains("config key `reject_text`"), "{e}");
        let e = init_err(r#"{"allow_action": "skip"}"#);
        assert!(e.contains("config key `allow_action`"), "{e}");
    }
}
