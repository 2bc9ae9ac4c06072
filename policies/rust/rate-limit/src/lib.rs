//! `rate-limit`: how many messages (counted at MAIL FROM) and recipients
//! (counted at RCPT TO) one client IP, one sender or one sender domain may
//! send per time window.
//!
//! Counters live in the gateway's key-value store (capability `kv`), so
//! they are shared by every session (and by every node, with a shared
//! store). Each counter is a `kv_incr` on a key that names the window it
//! counts, with a TTL of one window: windows are fixed and aligned to the
//! clock (capability `clock`; without it a window starts at the first
//! message counted and the TTL alone ends it). Going over a limit answers
//! `451 4.7.1 rate limit exceeded, try again later`: the client retries
//! later, when a new window has begun.
//!
//! When the store cannot be used (not granted, unavailable, the policy's
//! namespace full — its senders are chosen by clients) the policy answers
//! `451 4.3.0` (mail is delayed, the limits never switched off), or with
//! `fail_closed = false` lets mail through and logs a warning (fail open).
//!
//! The null sender `<>` (bounces) has no sender or sender-domain counters;
//! its per-IP counters still count.
//!
//! See the crate's README for the configuration keys and an example.

#![warn(missing_docs)]

use std::fmt::Write as _;

use sluice_guest::{Config, Context, Envelope, HostError, Param, Policy, Session, Stage, Verdict};

/// What a counter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Ip,
    Sender,
    SenderDomain,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Sender => "sender",
            Scope::SenderDomain => "sender_domain",
        }
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Messages, counted at MAIL FROM.
    Messages,
    /// Recipients, counted at RCPT TO.
    Recipients,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Messages => "messages",
            Unit::Recipients => "recipients",
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Unit::Messages => "msg",
            Unit::Recipients => "rcpt",
        }
    }
}

/// One configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    unit: Unit,
    scope: Scope,
    max: u32,
}

/// The `rate-limit` policy: see the crate documentation.
#[derive(Debug, Clone)]
pub struct RateLimit {
    limits: Vec<Limit>,
    /// Window length in seconds (at least 1).
    window: u32,
    /// Answer 451 4.3.0 rather than letting mail through when the store
    /// cannot be used.
    fail_closed: bool,
}

/// The limit keys, in the order they are checked.
const LIMIT_KEYS: &[(&str, Unit, Scope)] = &[
    ("messages_per_ip", Unit::Messages, Scope::Ip),
    ("messages_per_sender", Unit::Messages, Scope::Sender),
    (
        "messages_per_sender_domain",
        Unit::Messages,
        Scope::SenderDomain,
    ),
    ("recipients_per_ip", Unit::Recipients, Scope::Ip),
    ("recipients_per_sender", Unit::Recipients, Scope::Sender),
    (
        "recipients_per_sender_domain",
        Unit::Recipients,
        Scope::SenderDomain,
    ),
];

/// The other keys of the `[policy.config]` table.
const OTHER_KEYS: &[&str] = &["window", "fail_closed"];

/// The longest key the host accepts.
const KEY_MAX: usize = 512;

/// A duration: `"90"`, `"90s"`, `"30m"`, `"1h"`, `"1d"`, `"1h30m"`, in
/// seconds.
fn parse_duration(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a duration such as \"90s\", \"30m\", \"1h\" or \"1d\"");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u32>() {
        return Ok(seconds);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    u32::try_from(total).map_err(|_| format!("{text:?} is too long"))
}

/// FNV-1a, for keys too long for the store.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl RateLimit {
    /// The key of a counter: `msg:sender:ann@example.com:472222` (the last
    /// part is the window number, when the clock is known).
    fn key(&self, limit: &Limit, value: &str, window_index: Option<u32>) -> String {
        // Built in place: this runs for every message and recipient.
        let (prefix, scope) = (limit.unit.key_prefix(), limit.scope.as_str());
        let suffix_len = window_index.map_or(0, |i| 2 + i.checked_ilog10().unwrap_or(0) as usize);
        let mut key =
            String::with_capacity(prefix.len() + scope.len() + 2 + value.len() + suffix_len);
        key.push_str(prefix);
        key.push(':');
        key.push_str(scope);
        key.push(':');
        if key.len() + value.len() + suffix_len > KEY_MAX {
            let _ = write!(key, "#{:016x}", fnv1a(value));
        } else {
            key.push_str(value);
        }
        if let Some(i) = window_index {
            key.push(':');
            sluice_guest::push_decimal(&mut key, u64::from(i));
        }
        key
    }

    /// The number of the current window, if the clock is available.
    fn window_index(&self, ctx: &Context) -> Option<u32> {
        match ctx.now() {
            Ok(now) => Some(now.seconds / self.window),
            Err(e) => {
                ctx.debug(&format!(
                    "clock unavailable ({e}): windows start at the first message counted"
                ));
                None
            }
        }
    }

    /// What the store failing means.
    fn store_failed(&self, ctx: &Context, e: &HostError) -> Verdict {
        if self.fail_closed {
            ctx.warn(&format!(
                "rate-limit state unavailable ({e}): refusing for now (fail_closed)"
            ));
            Verdict::tempfail(
                451,
                "4.3.0",
                "rate limit state unavailable, try again later",
            )
        } else {
            ctx.warn(&format!(
                "rate-limit state unavailable ({e}): letting mail through"
            ));
            Verdict::Continue
        }
    }

    /// Count one more `unit` for the session's IP and sender; tempfail
    /// when a limit is exceeded.
    fn count(&self, ctx: &Context, unit: Unit, ip: &str, sender: &str) -> Verdict {
        let sender = sender.to_ascii_lowercase();
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let mut window_index = None;
        let mut clock_asked = false;
        for limit in self.limits.iter().filter(|l| l.unit == unit) {
            let value = match limit.scope {
                Scope::Ip => ip,
                Scope::Sender => sender.as_str(),
                Scope::SenderDomain => domain,
            };
            if value.is_empty() {
                // The null sender, or a sender without a domain.
                continue;
            }
            if !clock_asked {
                window_index = self.window_index(ctx);
                clock_asked = true;
            }
            let key = self.key(limit, value, window_index);
            let count = match ctx.kv_incr(&key, 1, self.window) {
                Ok(count) => count,
                Err(e) => return self.store_failed(ctx, &e),
            };
            if i64::from(count) > i64::from(limit.max) {
                ctx.info(&format!(
                    "{} {value}: {count} {} in this {}s window, over the limit of {}",
                    limit.scope.as_str(),
                    unit.as_str(),
                    self.window,
                    limit.max
                ));
                let _ = ctx.counter_add("limited", 1);
                return Verdict::tempfail(451, "4.7.1", "rate limit exceeded, try again later");
            }
        }
        Verdict::Continue
    }
}

impl Policy for RateLimit {
    fn name() -> &'static str {
        "rate-limit"
    }

    fn stages() -> &'static [Stage] {
        &[Stage::MailFrom, Stage::Rcpt]
    }

    fn init(config: &Config) -> Result<Self, String> {
        let known: Vec<&str> = LIMIT_KEYS
            .iter()
            .map(|(k, _, _)| *k)
            .chain(OTHER_KEYS.iter().copied())
            .collect();
        config.check_keys(&known)?;
        let mut limits = Vec::new();
        for (key, unit, scope) in LIMIT_KEYS {
            if let Some(max) = config.u32(key)? {
                limits.push(Limit {
                    unit: *unit,
                    scope: *scope,
                    max,
                });
            }
        }
        if limits.is_empty() {
            return Err(format!(
                "config: no limit set; give at least one of {}",
                LIMIT_KEYS
                    .iter()
                    .map(|(k, _, _)| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let window = match config.str("window") {
            Ok(None) => 3600,
            Ok(Some(text)) => {
                parse_duration(text).map_err(|e| format!("config key `window`: {e}"))?
            }
            // Not a string: whole seconds.
            Err(_) => config
                .u32("window")
                .map_err(|_| {
                    "config key `window`: expected seconds or a duration such as \"1h\"".to_string()
                })?
                .unwrap_or(3600),
        };
        if window == 0 {
            return Err("config key `window`: must be at least one second".into());
        }
        Ok(RateLimit {
            limits,
            window,
            fail_closed: config.bool("fail_closed")?.unwrap_or(true),
        })
    }

    /// MAIL FROM counts messages, RCPT TO recipients: only the stages of
    /// the configured limits are called.
    fn configured_stages(&self) -> Vec<Stage> {
        [
            (Stage::MailFrom, Unit::Messages),
            (Stage::Rcpt, Unit::Recipients),
        ]
        .into_iter()
        .filter(|(_, unit)| self.limits.iter().any(|l| l.unit == *unit))
        .map(|(stage, _)| stage)
        .collect()
    }

    fn on_mail_from(
        &self,
        ctx: &Context,
        session: &Session,
        sender: &str,
        _params: &[Param],
    ) -> Verdict {
        self.count(ctx, Unit::Messages, &session.client_ip, sender)
    }

    fn on_rcpt(
        &self,
        ctx: &Context,
        session: &Session,
        envelope: &Envelope,
        _recipient: &str,
        _params: &[Param],
    ) -> Verdict {
        self.count(ctx, Unit::Recipients, &session.client_ip, &envelope.sender)
    }
}

sluice_guest::export_policy!(RateLimit);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use sluice_guest::{Capability, MockHost, Timestamp};

    fn policy(json: &str) -> RateLimit {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        RateLimit::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn init_err(json: &str) -> String {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        match RateLimit::init(&config) {
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

    fn mail(p: &RateLimit, host: &MockHost, ip: &str, sender: &str) -> Verdict {
        p.on_mail_from(&host.context(), &from(ip), sender, &[])
    }

    fn rcpt(p: &RateLimit, host: &MockHost, ip: &str, sender: &str) -> Verdict {
        let env = Envelope {
            sender: sender.into(),
            ..Envelope::default()
        };
        p.on_rcpt(&host.context(), &from(ip), &env, "r@example.com", &[])
    }

    fn limited() -> Verdict {
        Verdict::tempfail(451, "4.7.1", "rate limit exceeded, try again later")
    }

    /// A host granted kv and clock, its clock at the start of an hour.
    fn host() -> MockHost {
        MockHost::new()
            .grant(Capability::Kv)
            .grant(Capability::Clock)
            .grant(Capability::Metrics)
            .at(Timestamp::from_unix_seconds(1_699_999_200))
    }

    #[test]
    fn only_the_stages_of_the_configured_limits_are_called() {
        let p = policy(r#"{"messages_per_ip": 5}"#);
        assert_eq!(p.configured_stages(), vec![Stage::MailFrom]);
        let p = policy(r#"{"recipients_per_sender": 5}"#);
        assert_eq!(p.configured_stages(), vec![Stage::Rcpt]);
        let p = policy(r#"{"messages_per_sender_domain": 5, "recipients_per_ip": 9}"#);
        assert_eq!(p.configured_stages(), vec![Stage::MailFrom, Stage::Rcpt]);
    }

    #[test]
    fn messages_per_ip_until_the_window_ends() {
        let p = policy(r#"{"messages_per_ip": 2, "window": "1h"}"#);
        let host = host();
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "b@y.example"),
            Verdict::Continue
        );
        assert_eq!(mail(&p, &host, "192.0.2.1", "c@z.example"), limited());
        assert_eq!(
            mail(&p, &host, "192.0.2.2", "a@x.example"),
            Verdict::Continue,
            "other IP"
        );
        assert_eq!(host.counter("limited"), 1);
        assert!(host.logged("ip 192.0.2.1: 3 messages in this 3600s window, over the limit of 2"));
        // Still limited late in the window; a fresh count in the next one.
        host.advance(Duration::from_secs(3599));
        assert_eq!(mail(&p, &host, "192.0.2.1", "a@x.example"), limited());
        host.advance(Duration::from_secs(1));
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(mail(&p, &host, "192.0.2.1", "a@x.example"), limited());
        // Counters carry the window number and expire with the window.
        assert!(
            host.calls()
                .iter()
                .any(|c| c == "kv.incr msg:ip:192.0.2.1:472222 1 3600"),
            "{:?}",
            host.calls()
        );
    }

    #[test]
    fn per_sender_and_sender_domain_case_insensitive() {
        let p =
            policy(r#"{"messages_per_sender": 1, "messages_per_sender_domain": 2, "window": 60}"#);
        let host = host();
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "Ann@Example.com"),
            Verdict::Continue
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.2", "ann@example.COM"),
            limited(),
            "same sender"
        );
        // A refusal stops at the first limit exceeded: ann's second try did
        // not count for the domain, so bob makes 2 and carol 3.
        assert_eq!(
            mail(&p, &host, "192.0.2.3", "bob@example.com"),
            Verdict::Continue
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.3", "carol@example.com"),
            limited(),
            "domain full"
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.3", "bob@other.example"),
            Verdict::Continue
        );
        host.advance(Duration::from_secs(60));
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "ann@example.com"),
            Verdict::Continue
        );
    }

    #[test]
    fn null_sender_counts_only_per_ip() {
        let p = policy(
            r#"{"messages_per_sender": 1, "messages_per_sender_domain": 1, "messages_per_ip": 3}"#,
        );
        let host = host();
        for _ in 0..3 {
            assert_eq!(mail(&p, &host, "192.0.2.1", ""), Verdict::Continue);
        }
        assert_eq!(mail(&p, &host, "192.0.2.1", ""), limited());
        assert!(host.calls().iter().all(|c| !c.contains(":sender")));
    }

    #[test]
    fn recipients_are_counted_at_rcpt_not_at_mail() {
        let p = policy(r#"{"recipients_per_sender": 3, "window": "10m"}"#);
        let host = host();
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert!(
            host.calls().is_empty(),
            "no message limits: MAIL counts nothing"
        );
        for _ in 0..3 {
            assert_eq!(
                rcpt(&p, &host, "192.0.2.1", "a@x.example"),
                Verdict::Continue
            );
        }
        assert_eq!(rcpt(&p, &host, "192.0.2.9", "a@x.example"), limited());
        assert_eq!(
            rcpt(&p, &host, "192.0.2.9", "b@x.example"),
            Verdict::Continue
        );
        host.advance(Duration::from_secs(600));
        assert_eq!(
            rcpt(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
    }

    #[test]
    fn recipients_per_ip_and_domain() {
        let p = policy(r#"{"recipients_per_ip": 2, "recipients_per_sender_domain": 3}"#);
        let host = host();
        assert_eq!(
            rcpt(&p, &host, "2001:db8::1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(
            rcpt(&p, &host, "2001:db8::1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(rcpt(&p, &host, "2001:db8::1", "a@x.example"), limited());
        assert_eq!(
            rcpt(&p, &host, "2001:db8::2", "b@x.example"),
            Verdict::Continue
        );
        assert_eq!(
            rcpt(&p, &host, "2001:db8::3", "c@x.example"),
            limited(),
            "x.example is at 4"
        );
    }

    #[test]
    fn without_the_clock_the_ttl_ends_the_window() {
        let p = policy(r#"{"messages_per_ip": 1, "window": "5m"}"#);
        let host = MockHost::new().grant(Capability::Kv);
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        host.advance(Duration::from_secs(200));
        assert_eq!(mail(&p, &host, "192.0.2.1", "a@x.example"), limited());
        host.advance(Duration::from_secs(100));
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert!(
            host.calls()
                .iter()
                .any(|c| c == "kv.incr msg:ip:192.0.2.1 1 300")
        );
    }

    #[test]
    fn store_unavailable_fails_open_or_closed() {
        let p = policy(r#"{"messages_per_ip": 1, "fail_closed": false}"#);
        let host = MockHost::new().grant(Capability::Clock); // no kv
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert_eq!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Continue
        );
        assert!(host.logged("rate-limit state unavailable (access denied"));
        assert!(host.logged("letting mail through"));

        // The default: a store that fails (full, or unavailable) delays
        // mail rather than turning the limits off.
        let p = policy(r#"{"recipients_per_ip": 1}"#);
        assert_eq!(
            rcpt(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::tempfail(
                451,
                "4.3.0",
                "rate limit state unavailable, try again later"
            )
        );
    }

    #[test]
    fn a_corrupt_counter_is_a_store_failure() {
        let p = policy(r#"{"messages_per_ip": 5}"#);
        let host = MockHost::new()
            .grant(Capability::Kv)
            .kv("msg:ip:192.0.2.1", "not a number", 0);
        assert!(matches!(
            mail(&p, &host, "192.0.2.1", "a@x.example"),
            Verdict::Tempfail(_)
        ));
        assert!(host.logged("not a counter"));
    }

    #[test]
    fn long_values_are_hashed_into_the_key() {
        let p = policy(r#"{"messages_per_sender": 1}"#);
        let host = host();
        let sender = format!("{}@example.com", "a".repeat(600));
        assert_eq!(mail(&p, &host, "192.0.2.1", &sender), Verdict::Continue);
        assert_eq!(mail(&p, &host, "192.0.2.1", &sender), limited());
        assert!(
            host.calls()
                .iter()
                .any(|c| c.starts_with("kv.incr msg:sender:#"))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10 m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999d").is_err());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = init_err("{}");
        assert!(
            e.contains("no limit set") && e.contains("`messages_per_ip`"),
            "{e}"
        );
        let e = init_err(r#"{"messages_per_ip": 1, "window": "1 week"}"#);
        assert!(e.contains("config key `window`"), "{e}");
        let e = init_err(r#"{"messages_per_ip": 1, "window": 0}"#);
        assert!(e.contains("config key `window`"), "{e}");
        let e = init_err(r#"{"messages_per_ip": 1, "window": -5}"#);
        assert!(e.contains("config key `window`"), "{e}");
        let e = init_err(r#"{"messages_per_ip": -1}"#);
        assert!(e.contains("config key `messages_per_ip`"), "{e}");
        let e = init_err(r#"{"messages_per_ip": 1, "fail_closed": "yes"}"#);
        assert!(e.contains("config key `fail_closed`"), "{e}");
        let e = init_err(r#"{"messages_per_client": 1}"#);
        assert!(e.contains("`messages_per_client` is not known"), "{e}");
    }
}
