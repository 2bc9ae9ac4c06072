//! Strict RFC 5321 §4.1.2 path parsing, with RFC 6531 (SMTPUTF8) extensions.
//!
//! Lengths are counted in octets (§4.5.3.1): local part 64, domain 255,
//! path 256 including the angle brackets.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included, in octets (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is not `<...>`.
    #[error("path must be enclosed in angle brackets")]
    NotBracketed,
    /// Something in the path does not follow the grammar.
    #[error("{0}")]
    Syntax(&'static str),
    /// A length limit was exceeded.
    #[error("{0} too long")]
    TooLong(&'static str),
}

/// The domain side of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name (may hold U-labels when SMTPUTF8 is used).
    Name(String),
    /// `[192.0.2.1]`
    V4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    V6(Ipv6Addr),
    /// `[tag:content]`, a general address literal kept as written.
    General(String),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::V4(a) => write!(f, "[{a}]"),
            Domain::V6(a) => write!(f, "[IPv6:{a}]"),
            Domain::General(g) => write!(f, "[{g}]"),
        }
    }
}

/// A mailbox `local@domain`. The local part is kept exactly as written
/// (quoted strings keep their quotes) so nothing is lost in transit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part as it appeared on the wire.
    pub local: String,
    /// The domain, or `None` for the special `<postmaster>` recipient.
    pub domain: Option<Domain>,
}

impl Mailbox {
    /// True when either side holds non-ASCII octets (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || matches!(&self.domain, Some(Domain::Name(n)) if !n.is_ascii())
    }

    /// The domain as a lower-case name, when it is a name.
    pub fn domain_name(&self) -> Option<String> {
        match &self.domain {
            Some(Domain::Name(n)) => Some(n.to_lowercase()),
            _ => None,
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "{}@{}", self.local, d),
            None => f.write_str(&self.local),
        }
    }
}

/// `MAIL FROM:` argument: the null path `<>` or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    /// A real sender.
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Parse a reverse-path (`<>` or a path). `input` is the whole path
/// including brackets and nothing else.
pub fn parse_reverse_path(input: &str) -> Result<ReversePath, AddressError> {
    if input == "<>" {
        return Ok(ReversePath::Null);
    }
    parse_path(input, false).map(ReversePath::Mailbox)
}

/// Parse a forward-path (RCPT TO). `<postmaster>` without a domain is
/// accepted (RFC 5321 §4.1.1.3).
pub fn parse_forward_path(input: &str) -> Result<Mailbox, AddressError> {
    parse_path(input, true)
}

fn parse_path(input: &str, allow_postmaster: bool) -> Result<Mailbox, AddressError> {
    if input.len() > MAX_PATH {
        return Err(AddressError::TooLong("path"));
    }
    let inner = input
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .ok_or(AddressError::NotBracketed)?;
    if allow_postmaster && inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox {
            local: inner.to_string(),
            domain: None,
        });
    }
    // Source route (A-d-l ":"), obsolete: accepted and ignored (§4.1.2, C.).
    let mailbox = if inner.starts_with('@') {
        let colon = inner
            .find(':')
            .ok_or(AddressError::Syntax("bad source route"))?;
        for hop in inner[..colon].split(',') {
            let hop = hop
                .strip_prefix('@')
                .ok_or(AddressError::Syntax("bad source route"))?;
            parse_domain(hop)?;
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    parse_mailbox(mailbox)
}

/// Parse `local@domain`.
pub fn parse_mailbox(input: &str) -> Result<Mailbox, AddressError> {
    let bytes = input.as_bytes();
    if bytes.is_empty() {
        return Err(AddressError::Syntax("empty address"));
    }
    let local_end = if bytes[0] == b'"' {
        quoted_string_end(bytes)?
    } else {
        dot_string_end(bytes)?
    };
    let local = &input[..local_end];
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong("local part"));
    }
    let rest = &input[local_end..];
    let domain = rest
        .strip_prefix('@')
        .ok_or(AddressError::Syntax("missing @domain"))?;
    let domain = if domain.starts_with('[') {
        parse_address_literal(domain)?
    } else {
        parse_domain(domain)?;
        Domain::Name(domain.to_string())
    };
    Ok(Mailbox {
        local: local.to_string(),
        domain: Some(domain),
    })
}

/// atext (RFC 5322) plus UTF-8 non-ASCII (RFC 6531).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Returns the end offset of a Dot-string at the start of `b`.
fn dot_string_end(b: &[u8]) -> Result<usize, AddressError> {
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && is_atext(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(AddressError::Syntax("bad local part"));
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            continue;
        }
        return Ok(i);
    }
}

/// Returns the end offset (after the closing quote) of a Quoted-string.
fn quoted_string_end(b: &[u8]) -> Result<usize, AddressError> {
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' => {
                // quoted-pairSMTP: %d92 %d32-126
                match b.get(i + 1) {
                    Some(&c) if (32..=126).contains(&c) => i += 2,
                    _ => return Err(AddressError::Syntax("bad quoted pair")),
                }
            }
            // qtextSMTP: %d32-33 / %d35-91 / %d93-126, plus UTF-8
            c if (32..=126).contains(&c) || c >= 0x80 => i += 1,
            _ => return Err(AddressError::Syntax("bad character in quoted local part")),
        }
    }
    Err(AddressError::Syntax("unterminated quoted local part"))
}

/// Validate a domain: sub-domain *("." sub-domain), each label
/// Let-dig [Ldh-str], at most 63 octets per label and 255 in all.
pub fn parse_domain(d: &str) -> Result<(), AddressError> {
    if d.is_empty() {
        return Err(AddressError::Syntax("empty domain"));
    }
    if d.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong("domain"));
    }
    for label in d.split('.') {
        let b = label.as_bytes();
        if b.is_empty() {
            return Err(AddressError::Syntax("empty domain label"));
        }
        if b.len() > 63 {
            return Err(AddressError::TooLong("domain label"));
        }
        let let_dig = |c: u8| c.is_ascii_alphanumeric() || c >= 0x80;
        if !let_dig(b[0]) || !let_dig(b[b.len() - 1]) {
            return Err(AddressError::Syntax("bad domain label"));
        }
        if !b.iter().all(|&c| let_dig(c) || c == b'-') {
            return Err(AddressError::Syntax("bad character in domain"));
        }
    }
    Ok(())
}

/// An address literal `[…]` (RFC 5321 §4.1.3): IPv4, `IPv6:…`, or a
/// general literal `[tag:content]`.
pub(crate) fn parse_address_literal(d: &str) -> Result<Domain, AddressError> {
    let inner = d
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(AddressError::Syntax("bad address literal"))?;
    if let Some(v6) = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
    {
        return v6
            .parse::<Ipv6Addr>()
            .map(Domain::V6)
            .map_err(|_| AddressError::Syntax("bad IPv6 address literal"));
    }
    if inner.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return inner
            .parse::<Ipv4Addr>()
            .map(Domain::V4)
            .map_err(|_| AddressError::Syntax("bad IPv4 address literal"));
    }
    // General-address-literal = Standardized-tag ":" 1*dcontent
    let (tag, content) = inner
        .split_once(':')
        .ok_or(AddressError::Syntax("bad address literal"))?;
    let tag_ok = !tag.is_empty()
        && tag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !tag.ends_with('-');
    let content_ok = !content.is_empty()
        && content
            .bytes()
            .all(|c| (33..=90).contains(&c) || (94..=126).contains(&c));
    if tag_ok && content_ok {
        Ok(Domain::General(inner.to_string()))
    } else {
        Err(AddressError::Syntax("bad address literal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_paths() {
        let ok = [
            "<a@example.com>",
            "<first.last@sub.example.com>",
            "<\"john doe\"@example.com>",
            "<\"a\\\"b\"@example.com>",
            "<user+tag@example.com>",
            "<a@[192.0.2.1]>",
            "<a@[IPv6:2001:db8::1]>",
            "<@hop1.example,@hop2.example:a@example.com>",
            "<用户@例子.广告>",
            "<x@a-b.c>",
        ];
        for p in ok {
            assert!(parse_forward_path(p).is_ok(), "{p} should parse");
        }
        let m = parse_forward_path("<@hop.example:a@b.example>").unwrap();
        assert_eq!(m.to_string(), "a@b.example");
    }

    #[test]
    fn refuses_invalid_paths() {
        let bad = [
            "a@example.com",
            "<a@example.com",
            "<>",
            "<a>",
            "<@example.com>",
            "<a@>",
            "<a..b@example.com>",
            "<.a@example.com>",
            "<a.@example.com>",
            "<a b@example.com>",
            "<a@exa mple.com>",
            "<a@-example.com>",
            "<a@example-.com>",
            "<a@example..com>",
            "<a@[300.1.1.1]>",
            "<a@[IPv6:zz::1]>",
            "<\"unterminated@example.com>",
            "<a@b.com>x",
            "<a@b.com> ",
            "<a@b@c.com>",
            "<a(comment)@b.com>",
        ];
        for p in bad {
            assert!(parse_forward_path(p).is_err(), "{p:?} should be refused");
        }
    }

    #[test]
    fn lengths_in_octets() {
        // 64 octets of local part: fine; 65: too long.
        let ok = format!("<{}@example.com>", "a".repeat(64));
        assert!(parse_forward_path(&ok).is_ok());
        let long = format!("<{}@example.com>", "a".repeat(65));
        assert_eq!(
            parse_forward_path(&long),
            Err(AddressError::TooLong("local part"))
        );
        // 22 characters of 3 octets each = 66 octets: too long although
        // only 22 characters.
        let utf = format!("<{}@example.com>", "é".repeat(33));
        assert!(matches!(
            parse_forward_path(&utf),
            Err(AddressError::TooLong(_))
        ));
        let label = format!("<a@{}.com>", "b".repeat(64));
        assert!(parse_forward_path(&label).is_err());
        let path = format!("<a@{}>", ["abcdefghi"; 30].join("."));
        assert_eq!(
            parse_forward_path(&path),
            Err(AddressError::TooLong("path"))
        );
    }

    #[test]
    fn null_and_postmaster() {
        assert_eq!(parse_reverse_path("<>"), Ok(ReversePath::Null));
        assert!(parse_reverse_path("<postmaster>").is_err());
        let pm = parse_forward_path("<Postmaster>").unwrap();
        assert_eq!(pm.domain, None);
    }

    #[test]
    fn utf8_detection() {
        assert!(parse_forward_path("<ü@example.com>").unwrap().is_utf8());
        assert!(parse_forward_path("<u@exämple.com>").unwrap().is_utf8());
        assert!(!parse_forward_path("<u@example.com>").unwrap().is_utf8());
    }
}
