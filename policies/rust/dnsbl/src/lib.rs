//! `dnsbl`: checks the client address against DNS blocklists.
//!
//! For a client `203.0.113.7` and a zone `zen.example` the policy looks up
//! the A records of `7.113.0.203.zen.example`; for an IPv6 client, the 32
//! reversed nibbles of its address under the zone (RFC 5782). An answer in
//! `127.0.0.0/8` means "listed" (or, with `codes`, one of those answers);
//! `127.255.255.x` answers are the lists' own error codes (query refused,
//! rate-limited) and never count as a listing.
//!
//! - `action = "reject"` (default): a listed client is refused with
//!   `554 5.7.1 Service unavailable; client [IP] blocked using ZONE` — at
//!   connect, or with `stage = "rcpt"` at each RCPT TO (so the client's
//!   sender and recipients get logged first).
//! - `action = "tag"`: the client goes on; at the data stage the message
//!   gets one `X-DNSBL: ZONE` header per listing zone (any such header the
//!   client sent is removed first, so it cannot be forged).
//!
//! A lookup that fails temporarily (SERVFAIL, timeout) counts as "not
//! listed" and is logged: a broken blocklist must not stop mail. Private,
//! loopback, link-local and unspecified client addresses are not looked
//! up unless `check_private = true`. The lookups are made once per session.
//!
//! Capability: `dns` (and optionally `metrics`: counter `listed`).
//! See the crate's README for the configuration keys and an example.

#![warn(missing_docs)]

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_guest::{
    Config, Context, DataResult, Envelope, HostError, Message, Param, Policy, Session, Stage,
    Verdict,
};

/// What to do with a listed client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reject,
    Tag,
}

/// Where the lookup happens (and, for `reject`, the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckAt {
    Connect,
    Rcpt,
}

/// The `dnsbl` policy: see the crate documentation.
#[derive(Debug)]
pub struct Dnsbl {
    zones: Vec<String>,
    /// Answers that count as listed; empty: any `127.0.0.0/8` answer but
    /// `127.255.255.0/24`.
    codes: Vec<Ipv4Addr>,
    action: Action,
    check_at: CheckAt,
    check_private: bool,
    header: String,
    reject_code: u16,
    reject_status: String,
    /// With `{ip}` and `{zone}` placeholders.
    reject_text: String,
    /// The zones listing this session's client, once looked up.
    listed: RefCell<Option<Vec<String>>>,
}

/// The keys of the `[policy.config]` table.
const KEYS: &[&str] = &[
    "zones",
    "codes",
    "action",
    "stage",
    "check_private",
    "header",
    "reject_code",
    "reject_status",
    "reject_text",
];

const DEFAULT_TEXT: &str = "Service unavailable; client [{ip}] blocked using {zone}";

fn valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 180
        && zone.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The query name of `ip` under `zone`: reversed octets for IPv4,
/// reversed nibbles for IPv6.
#[must_use]
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(80);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(name, "{d}.{c}.{b}.{a}.");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name
}

/// Private, loopback, link-local, shared (CGNAT), unspecified or
/// broadcast: addresses no public blocklist lists.
#[must_use]
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v6(v6: Ipv6Addr) -> bool {
    v6.is_loopback() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local()
}

impl Dnsbl {
    /// Whether an answer counts as a listing.
    fn counts(&self, answer: Ipv4Addr) -> bool {
        if self.codes.is_empty() {
            let [a, b, c, _] = answer.octets();
            a == 127 && !(b == 255 && c == 255)
        } else {
            self.codes.contains(&answer)
        }
    }

    /// Look the client up (once per session); the zones that list it. In
    /// `reject` mode the first listing ends the lookups.
    fn listings(&self, ctx: &Context, session: &Session) -> Vec<String> {
        if let Some(listed) = self.listed.borrow().as_ref() {
            return listed.clone();
        }
        let listed = self.look_up(ctx, session);
        *self.listed.borrow_mut() = Some(listed.clone());
        listed
    }

    fn look_up(&self, ctx: &Context, session: &Session) -> Vec<String> {
        let Some(ip) = session.ip() else {
            ctx.warn(&format!(
                "client address {:?} is not an IP address",
                session.client_ip
            ));
            return Vec::new();
        };
        if !self.check_private && is_private(ip) {
            ctx.debug(&format!("client {ip} is a private address: not looked up"));
            return Vec::new();
        }
        let mut listed = Vec::new();
        for zone in &self.zones {
            let name = query_name(ip, zone);
            match ctx.dns_a(&name) {
                Ok(answers) => {
                    let mut hit = None;
                    for answer in &answers {
                        let Ok(addr) = answer.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        if self.counts(addr) {
                            hit = Some(addr);
                            break;
                        }
                        if addr.octets()[..3] == [127, 255, 255] {
                            ctx.warn(&format!(
                                "{zone} answered {addr} for {ip}: the list refused the query (an error code, not a listing)"
                            ));
                        }
                    }
                    if let Some(addr) = hit {
                        ctx.info(&format!("client {ip} is listed in {zone} ({addr})"));
                        let _ = ctx.counter_add("listed", 1);
                        listed.push(zone.clone());
                        if self.action == Action::Reject {
                            break;
                        }
                    }
                }
                Err(HostError::Temporary(why)) => ctx.warn(&format!(
                    "{zone}: lookup of {name} failed temporarily ({why}); counted as not listed"
                )),
                Err(e) => ctx.warn(&format!("{zone}: cannot look up {name}: {e}")),
            }
        }
        listed
    }

    fn refusal(&self, session: &Session, zone: &str) -> Verdict {
        let text = self
            .reject_text
            .replace("{ip}", &session.client_ip)
            .replace("{zone}", zone);
        Verdict::reject(self.reject_code, self.reject_status.clone(), text)
    }

    /// The verdict at the stage the lookup is made.
    fn check(&self, ctx: &Context, session: &Session) -> Verdict {
        let listed = self.listings(ctx, session);
        match (self.action, listed.first()) {
            (Action::Reject, Some(zone)) => self.refusal(session, zone),
            _ => Verdict::Continue,
        }
    }
}

impl Policy for Dnsbl {
    fn name() -> &'static str {
        "dnsbl"
    }

    fn stages() -> &'static [Stage] {
        // All three, since which ones matter depends on the config (a
        // hook with nothing to do returns at once).
        &[Stage::Connect, Stage::Rcpt, Stage::Data]
    }

    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KEYS)?;
        let zones = config.list_str("zones")?.ok_or(
            "config key `zones` is required: the blocklist zones, e.g. [\"zen.spamhaus.org\"]",
        )?;
        if zones.is_empty() {
            return Err("config key `zones`: give at least one zone".into());
        }
        let zones = zones
            .iter()
            .map(|z| {
                let lower = z.trim().trim_end_matches('.').to_ascii_lowercase();
                if valid_zone(&lower) {
                    Ok(lower)
                } else {
                    Err(format!("config key `zones`: {z:?} is not a DNS zone name"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let codes = config
            .list_str("codes")?
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.trim().parse::<Ipv4Addr>().map_err(|_| {
                    format!(
                        "config key `codes`: {c:?} is not an IPv4 address such as \"127.0.0.2\""
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let action = match config.str("action")? {
            None | Some("reject") => Action::Reject,
            Some("tag") => Action::Tag,
            Some(other) => {
                return Err(format!(
                    "config key `action`: {other:?} is not \"reject\" or \"tag\""
                ));
            }
        };
        let check_at = match config.str("stage")? {
            None | Some("connect") => CheckAt::Connect,
            Some("rcpt") => CheckAt::Rcpt,
            Some(other) => {
                return Err(format!(
                    "config key `stage`: {other:?} is not \"connect\" or \"rcpt\""
                ));
            }
        };
        let header = config.str("header")?.unwrap_or("X-DNSBL").to_string();
        if !valid_header_name(&header) {
            return Err(format!(
                "config key `header`: {header:?} is not a header field name"
            ));
        }
        let code = config.u32("reject_code")?.unwrap_or(554);
        let reject_code = match u16::try_from(code) {
            Ok(c) if (500..=599).contains(&c) => c,
            _ => {
                return Err(format!(
                    "config key `reject_code`: {code} is not a 5xx reply code"
                ));
            }
        };
        let reject_status = config.str("reject_status")?.unwrap_or("5.7.1").to_string();
        let parts: Vec<&str> = reject_status.split('.').collect();
        if parts.len() != 3
            || parts[0] != "5"
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "config key `reject_status`: {reject_status:?} is not an enhanced status code such as \"5.7.1\""
            ));
        }
        let reject_text = config
            .str("reject_text")?
            .unwrap_or(DEFAULT_TEXT)
            .to_string();
        if reject_text.contains(['\r', '\n']) {
            return Err("config key `reject_text`: must be one line".into());
        }
        Ok(Dnsbl {
            zones,
            codes,
            action,
            check_at,
            check_private: config.bool("check_private")?.unwrap_or(false),
            header,
            reject_code,
            reject_status,
            reject_text,
            listed: RefCell::new(None),
        })
    }

    fn on_connect(&self, ctx: &Context, session: &Session) -> Verdict {
        if self.check_at != CheckAt::Connect {
            return Verdict::Continue;
        }
        self.check(ctx, session)
    }

    fn on_rcpt(
        &self,
        ctx: &Context,
        session: &Session,
        _envelope: &Envelope,
        _recipient: &str,
        _params: &[Param],
    ) -> Verdict {
        if self.check_at != CheckAt::Rcpt {
            return Verdict::Continue;
        }
        self.check(ctx, session)
    }

    fn on_data(
        &self,
        ctx: &Context,
        session: &Session,
        _envelope: &Envelope,
        _message: &Message<'_>,
    ) -> DataResult {
        if self.action != Action::Tag {
            return DataResult::continue_();
        }
        // Normally looked up already at connect or rcpt; this instance may
        // be a fresh one (after a failure elsewhere), so ask if need be.
        let listed = self.listings(ctx, session);
        let mut result = DataResult::continue_().remove_header(self.header.clone());
        for zone in listed {
            result = result.add_header(self.header.clone(), zone);
        }
        result
    }
}

sluice_guest::export_policy!(Dnsbl);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{Capability, Change, Header, MockHost, MockMessage};

    fn policy(json: &str) -> Dnsbl {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        Dnsbl::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn init_err(json: &str) -> String {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        match Dnsbl::init(&config) {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => e,
        }
    }

    fn from(ip: &str) -> Session {
        Session {
            client_ip: ip.into(),
            ..Session::default()
        }
    }

    fn rcpt(p: &Dnsbl, host: &MockHost, s: &Session) -> Verdict {
        p.on_rcpt(
            &host.context(),
            s,
            &Envelope::default(),
            "a@example.com",
            &[],
        )
    }

    fn data(p: &Dnsbl, host: &MockHost, s: &Session) -> DataResult {
        let mock = MockMessage::parse("X-DNSBL: forged.example\r\nSubject: hi\r\n\r\nbody\r\n");
        p.on_data(&host.context(), s, &Envelope::default(), &mock.message())
    }

    /// The DNS lookups made so far.
    fn lookups(host: &MockHost) -> Vec<String> {
        host.calls()
            .into_iter()
            .filter(|c| c.starts_with("dns."))
            .collect()
    }

    fn blocked(ip: &str, zone: &str) -> Verdict {
        Verdict::reject(
            554,
            "5.7.1",
            format!("Service unavailable; client [{ip}] blocked using {zone}"),
        )
    }

    #[test]
    fn query_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| panic!("{s}"));
        assert_eq!(
            query_name(ip("203.0.113.7"), "zen.test"),
            "7.113.0.203.zen.test"
        );
        assert_eq!(
            query_name(ip("2001:db8::1"), "zen.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test"
        );
        assert_eq!(
            query_name(ip("::ffff:203.0.113.7"), "z.test"),
            "7.113.0.203.z.test"
        );
    }

    #[test]
    fn private_addresses() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(
                is_private(private.parse().unwrap_or_else(|_| panic!("{private}"))),
                "{private}"
            );
        }
        for public in [
            "203.0.113.7",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "172.32.0.1",
        ] {
            assert!(
                !is_private(public.parse().unwrap_or_else(|_| panic!("{public}"))),
                "{public}"
            );
        }
    }

    #[test]
    fn listed_clients_are_rejected_at_connect() {
        let p = policy(r#"{"zones": ["zen.test", "other.test"]}"#);
        let host = MockHost::new()
            .grant_all()
            .dns_a("7.113.0.203.zen.test", ["127.0.0.2"])
            .dns_a("7.113.0.203.other.test", ["127.0.0.4"]);
        let s = from("203.0.113.7");
        assert_eq!(
            p.on_connect(&host.context(), &s),
            blocked("203.0.113.7", "zen.test")
        );
        // Reject mode stops at the first listing.
        assert_eq!(lookups(&host), ["dns.a 7.113.0.203.zen.test"]);
        assert_eq!(host.counter("listed"), 1);
        assert!(host.logged("client 203.0.113.7 is listed in zen.test (127.0.0.2)"));
        // Nothing to do at rcpt or data in this mode.
        assert_eq!(rcpt(&p, &host, &s), Verdict::Continue);
        assert_eq!(data(&p, &host, &s), DataResult::continue_());
    }

    #[test]
    fn clients_not_listed_continue() {
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        let host = MockHost::new().grant_all();
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.8")),
            Verdict::Continue
        );
        assert_eq!(host.calls(), ["dns.a 8.113.0.203.zen.test"]);
    }

    #[test]
    fn ipv6_clients() {
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        let name = query_name(
            "2001:db8::7".parse().unwrap_or_else(|_| panic!()),
            "zen.test",
        );
        let host = MockHost::new().grant_all().dns_a(&name, ["127.0.0.3"]);
        assert_eq!(
            p.on_connect(&host.context(), &from("2001:db8::7")),
            blocked("2001:db8::7", "zen.test")
        );
    }

    #[test]
    fn codes_filter_the_answers() {
        let p = policy(r#"{"zones": ["zen.test"], "codes": ["127.0.0.2", "127.0.0.3"]}"#);
        let host = MockHost::new()
            .grant_all()
            .dns_a("7.113.0.203.zen.test", ["127.0.0.10"])
            .dns_a("8.113.0.203.zen.test", ["127.0.0.10", "127.0.0.3"]);
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.7")),
            Verdict::Continue
        );
        let p = policy(r#"{"zones": ["zen.test"], "codes": ["127.0.0.2", "127.0.0.3"]}"#);
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.8")),
            blocked("203.0.113.8", "zen.test")
        );
    }

    #[test]
    fn error_codes_and_odd_answers_are_not_listings() {
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        let host = MockHost::new().grant_all().dns_a(
            "7.113.0.203.zen.test",
            ["127.255.255.254", "192.0.2.1", "junk"],
        );
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.7")),
            Verdict::Continue
        );
        assert!(host.logged("the list refused the query"));
    }

    #[test]
    fn temporary_failures_continue_and_are_logged() {
        let p = policy(r#"{"zones": ["broken.test", "zen.test"], "action": "tag"}"#);
        let host = MockHost::new()
            .grant_all()
            .dns_error(
                "7.113.0.203.broken.test",
                HostError::Temporary("SERVFAIL".into()),
            )
            .dns_a("7.113.0.203.zen.test", ["127.0.0.2"]);
        let s = from("203.0.113.7");
        assert_eq!(p.on_connect(&host.context(), &s), Verdict::Continue);
        assert!(host.logged(
            "broken.test: lookup of 7.113.0.203.broken.test failed temporarily (SERVFAIL)"
        ));
        let r = data(&p, &host, &s);
        assert_eq!(
            r,
            DataResult::continue_()
                .remove_header("X-DNSBL")
                .add_header("X-DNSBL", "zen.test")
        );

        let p = policy(r#"{"zones": ["broken.test"]}"#);
        assert_eq!(p.on_connect(&host.context(), &s), Verdict::Continue);
    }

    #[test]
    fn without_the_dns_capability_continue() {
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        let host = MockHost::new().dns_a("7.113.0.203.zen.test", ["127.0.0.2"]);
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.7")),
            Verdict::Continue
        );
        assert!(host.logged("access denied"));
    }

    #[test]
    fn private_clients_are_skipped_unless_asked() {
        let host = MockHost::new()
            .grant_all()
            .dns_a("1.0.0.127.zen.test", ["127.0.0.2"]);
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        assert_eq!(
            p.on_connect(&host.context(), &from("127.0.0.1")),
            Verdict::Continue
        );
        assert!(host.calls().is_empty());
        let p = policy(r#"{"zones": ["zen.test"], "check_private": true}"#);
        assert_eq!(
            p.on_connect(&host.context(), &from("127.0.0.1")),
            blocked("127.0.0.1", "zen.test")
        );
    }

    #[test]
    fn tag_mode_adds_one_header_per_zone_at_data() {
        let p = policy(
            r#"{"zones": ["a.test", "b.test", "c.test"], "action": "tag", "header": "X-Listed"}"#,
        );
        let host = MockHost::new()
            .grant_all()
            .dns_a("7.113.0.203.a.test", ["127.0.0.2"])
            .dns_a("7.113.0.203.c.test", ["127.0.0.9"]);
        let s = from("203.0.113.7");
        assert_eq!(p.on_connect(&host.context(), &s), Verdict::Continue);
        assert_eq!(lookups(&host).len(), 3);
        let r = data(&p, &host, &s);
        assert_eq!(r.verdict, Verdict::Continue);
        assert_eq!(
            r.changes,
            vec![
                Change::RemoveHeader("X-Listed".into()),
                Change::AddHeader(Header::new("X-Listed", "a.test")),
                Change::AddHeader(Header::new("X-Listed", "c.test")),
            ]
        );
        assert_eq!(lookups(&host).len(), 3, "looked up once per session");
    }

    #[test]
    fn tag_mode_strips_forged_headers_from_clean_clients() {
        let p = policy(r#"{"zones": ["zen.test"], "action": "tag"}"#);
        let host = MockHost::new().grant_all();
        let s = from("203.0.113.9");
        assert_eq!(p.on_connect(&host.context(), &s), Verdict::Continue);
        assert_eq!(
            data(&p, &host, &s),
            DataResult::continue_().remove_header("X-DNSBL")
        );
    }

    #[test]
    fn tag_mode_looks_up_at_data_on_a_fresh_instance() {
        let p = policy(r#"{"zones": ["zen.test"], "action": "tag"}"#);
        let host = MockHost::new()
            .grant_all()
            .dns_a("7.113.0.203.zen.test", ["127.0.0.2"]);
        let r = data(&p, &host, &from("203.0.113.7"));
        assert!(
            r.changes
                .contains(&Change::AddHeader(Header::new("X-DNSBL", "zen.test")))
        );
    }

    #[test]
    fn rcpt_stage_rejects_recipients_not_the_connection() {
        let p = policy(
            r#"{"zones": ["zen.test"], "stage": "rcpt", "reject_code": 550, "reject_status": "5.7.25",
                "reject_text": "{ip} is on {zone}"}"#,
        );
        let host = MockHost::new()
            .grant_all()
            .dns_a("7.113.0.203.zen.test", ["127.0.0.2"]);
        let s = from("203.0.113.7");
        assert_eq!(p.on_connect(&host.context(), &s), Verdict::Continue);
        assert!(host.calls().is_empty());
        let refused = Verdict::reject(550, "5.7.25", "203.0.113.7 is on zen.test");
        assert_eq!(rcpt(&p, &host, &s), refused);
        assert_eq!(rcpt(&p, &host, &s), refused);
        assert_eq!(lookups(&host).len(), 1, "looked up once per session");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = init_err("{}");
        assert!(e.contains("config key `zones` is required"), "{e}");
        let e = init_err(r#"{"zones": []}"#);
        assert!(e.contains("config key `zones`"), "{e}");
        let e = init_err(r#"{"zones": ["bad zone"]}"#);
        assert!(e.contains("config key `zones`"), "{e}");
        let e = init_err(r#"{"zones": "zen.test"}"#);
        assert!(e.contains("`zones`: expected a list"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "codes": ["127.0.0"]}"#);
        assert!(e.contains("config key `codes`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "action": "drop"}"#);
        assert!(e.contains("config key `action`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "stage": "data"}"#);
        assert!(e.contains("config key `stage`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "header": "X Bad:"}"#);
        assert!(e.contains("config key `header`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "reject_code": 451}"#);
        assert!(e.contains("config key `reject_code`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "reject_status": "4.7.1"}"#);
        assert!(e.contains("config key `reject_status`"), "{e}");
        let e = init_err(r#"{"zones": ["z.test"], "zone": "y.test"}"#);
        assert!(e.contains("`zone` is not known"), "{e}");
        assert!(
            init_err(r#"{"zones": ["z.test"], "check_private": 1}"#).contains("`check_private`")
        );
    }

    #[test]
    fn capabilities_granted_one_by_one() {
        // Only dns is needed; metrics is optional.
        let p = policy(r#"{"zones": ["zen.test"]}"#);
        let host = MockHost::new()
            .grant(Capability::Dns)
            .dns_a("7.113.0.203.zen.test", ["127.0.0.2"]);
        assert_eq!(
            p.on_connect(&host.context(), &from("203.0.113.7")),
            blocked("203.0.113.7", "zen.test")
        );
    }
}
