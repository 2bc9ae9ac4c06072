//! Parsing one command line (CRLF already removed) into a [`Command`].

use super::address::{
    AddressError, Mailbox, ReversePath, parse_domain, parse_forward_path, parse_reverse_path,
};
use super::reply::{Reply, std_replies};

/// `BODY=` values of MAIL FROM (RFC 1652 / RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    /// `BODY=7BIT`
    #[serde(rename = "7BIT")]
    SevenBit,
    /// `BODY=8BITMIME`
    #[serde(rename = "8BITMIME")]
    EightBitMime,
}

/// ESMTP parameters of MAIL FROM that the gateway understands.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailParams {
    /// `SIZE=` declared by the client (RFC 1870).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    /// `BODY=`
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// `RET=` (RFC 3461): what a DSN returns of the message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub envid: Option<String>,
}

/// `RET=` values (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    /// Return the whole message.
    #[serde(rename = "FULL")]
    Full,
    /// Return the headers only.
    #[serde(rename = "HDRS")]
    Hdrs,
}

/// `NOTIFY=` (RFC 3461 §4.1): when the sender wants a DSN. `NEVER` is all
/// three false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    /// On successful delivery.
    pub success: bool,
    /// On failure.
    pub failure: bool,
    /// On delay.
    pub delay: bool,
}

impl Notify {
    /// The wire form: `NEVER` or a comma list.
    pub fn to_param(&self) -> String {
        let mut v = Vec::new();
        if self.success {
            v.push("SUCCESS");
        }
        if self.failure {
            v.push("FAILURE");
        }
        if self.delay {
            v.push("DELAY");
        }
        if v.is_empty() {
            "NEVER".into()
        } else {
            v.join(",")
        }
    }
}

/// ESMTP parameters of RCPT TO that the gateway understands.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RcptParams {
    /// `NOTIFY=`; `None` means the default (failure, and delay at our
    /// discretion).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify: Option<Notify>,
    /// `ORCPT=` as `addr-type;address`, xtext-decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub orcpt: Option<String>,
}

/// Decode RFC 3461 §4 xtext (`+XX` hex escapes).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encode as RFC 3461 xtext.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain-or-literal`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<path> params`
    Mail {
        /// The sender.
        from: ReversePath,
        /// Its parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> params`
    Rcpt {
        /// The recipient.
        to: Mailbox,
        /// Its parameters.
        params: RcptParams,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// Octets in the chunk that follows.
        size: u64,
        /// This is the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy,
    /// `EXPN string` (never answered with list members)
    Expn,
    /// `HELP [topic]`
    Help,
    /// `STARTTLS` (RFC 3207)
    StartTls,
}

fn syntax(text: &str) -> Reply {
    std_replies::syntax(text)
}

fn address_reply(e: AddressError) -> Reply {
    std_replies::bad_address(&e.to_string())
}

/// Parse one command line. `line` holds no CR or LF. An error is the reply
/// to send; the session goes on.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    // Commands are ASCII except inside addresses, which may be UTF-8 with
    // SMTPUTF8; anything that is not UTF-8 is refused here. Control
    // characters other than TAB are refused too.
    let line = std::str::from_utf8(line).map_err(|_| std_replies::bad_command_bytes())?;
    if line.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(std_replies::bad_command_bytes());
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(syntax("this command takes no arguments"))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let name = rest.trim();
            if name.is_empty() {
                return Err(syntax(&format!("{verb} needs a domain")));
            }
            // The argument must be a domain or an address literal; anything
            // after it (some clients add junk) is refused.
            if name.contains(' ') {
                return Err(syntax("one domain expected"));
            }
            // RFC 5321 §4.1.3: an address literal is an IPv4 or an IPv6
            // address (no general literal: no other tag is standardised,
            // and its free text would reach our Received: header); a
            // domain is ASCII (an IDN client sends A-labels).
            let valid = if name.starts_with('[') {
                matches!(
                    super::address::parse_address_literal(name),
                    Ok(super::Domain::V4(_) | super::Domain::V6(_))
                )
            } else {
                name.is_ascii() && parse_domain(name).is_ok()
            };
            if !valid {
                return Err(Reply::new(
                    501,
                    super::reply::Enhanced(5, 5, 4),
                    "Invalid domain name",
                ));
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(name.to_string())
            } else {
                Command::Helo(name.to_string())
            })
        }
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data),
        "BDAT" => parse_bdat(rest),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => {
            if rest.trim().is_empty() {
                Err(syntax("VRFY needs an argument"))
            } else {
                Ok(Command::Vrfy)
            }
        }
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        _ => Err(std_replies::unknown_command()),
    }
}

/// Split `<path> params` after the `FROM:`/`TO:` prefix. The path ends at
/// the first `>` that is not inside a quoted local part; after it there may
/// be nothing or a space and parameters.
fn split_path<'a>(rest: &'a str, prefix: &str) -> Result<(&'a str, &'a str), Reply> {
    let head = rest.get(..prefix.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(prefix) {
        return Err(syntax(&format!("expected {prefix}<address>")));
    }
    // RFC 5321 has no space after the colon; tolerate spaces there, as
    // every widespread MTA does, but nowhere else.
    let arg = rest[prefix.len()..].trim_start_matches(' ');
    if !arg.starts_with('<') {
        return Err(std_replies::bad_address(
            "path must be enclosed in angle brackets",
        ));
    }
    let b = arg.as_bytes();
    let mut in_quote = false;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => break,
            _ => {}
        }
        i += 1;
    }
    if i >= b.len() {
        return Err(std_replies::bad_address("missing closing '>'"));
    }
    let (path, after) = arg.split_at(i + 1);
    if after.is_empty() {
        return Ok((path, ""));
    }
    match after.strip_prefix(' ') {
        Some(params) => Ok((path, params)),
        None => Err(syntax("unexpected characters after address")),
    }
}

/// Split `KEY[=VALUE]` parameters separated by single spaces.
fn params(s: &str) -> Result<Vec<(String, Option<&str>)>, Reply> {
    let mut out = Vec::new();
    for p in s.split(' ') {
        if p.is_empty() {
            continue;
        }
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(syntax("bad parameter"));
        }
        let key = k.to_ascii_uppercase();
        if out.iter().any(|(k2, _): &(String, _)| *k2 == key) {
            return Err(syntax(&format!("duplicate parameter {key}")));
        }
        out.push((key, v));
    }
    Ok(out)
}

fn parse_mail(rest: &str) -> Result<Command, Reply> {
    let (path, ps) = split_path(rest, "FROM:")?;
    let from = parse_reverse_path(path).map_err(address_reply)?;
    let mut mp = MailParams::default();
    for (key, value) in params(ps)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(syntax("bad SIZE value"));
                }
                mp.size = Some(v.parse().map_err(|_| syntax("bad SIZE value"))?);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mp.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                mp.body = Some(Body::EightBitMime)
            }
            ("BODY", _) => return Err(std_replies::unknown_parameter("BODY value")),
            ("SMTPUTF8", None) => mp.smtputf8 = true,
            ("SMTPUTF8", Some(_)) => return Err(syntax("SMTPUTF8 takes no value")),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => mp.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => mp.ret = Some(Ret::Hdrs),
            ("RET", _) => return Err(syntax("RET must be FULL or HDRS")),
            ("ENVID", Some(v)) => {
                let id = xtext_decode(v).ok_or_else(|| syntax("bad ENVID xtext"))?;
                if id.is_empty() || id.len() > 100 {
                    return Err(syntax("ENVID must be 1 to 100 characters"));
                }
                mp.envid = Some(id);
            }
            (k, _) => return Err(std_replies::unknown_parameter(k)),
        }
    }
    Ok(Command::Mail { from, params: mp })
}

fn parse_rcpt(rest: &str) -> Result<Command, Reply> {
    let (path, ps) = split_path(rest, "TO:")?;
    let to = parse_forward_path(path).map_err(address_reply)?;
    let mut rp = RcptParams::default();
    for (key, value) in params(ps)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => rp.notify = Some(parse_notify(v)?),
            ("ORCPT", Some(v)) => {
                let decoded = xtext_decode(v).ok_or_else(|| syntax("bad ORCPT xtext"))?;
                match decoded.split_once(';') {
                    Some((kind, addr))
                        if !kind.is_empty()
                            && kind.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                            && !addr.is_empty()
                            && decoded.len() <= 500 => {}
                    _ => return Err(syntax("ORCPT must be addr-type;address")),
                }
                rp.orcpt = Some(decoded);
            }
            (k, _) => return Err(std_replies::unknown_parameter(k)),
        }
    }
    Ok(Command::Rcpt { to, params: rp })
}

fn parse_notify(v: &str) -> Result<Notify, Reply> {
    let mut n = Notify {
        success: false,
        failure: false,
        delay: false,
    };
    let mut never = false;
    for item in v.split(',') {
        match item.to_ascii_uppercase().as_str() {
            "NEVER" => never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return Err(syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")),
        }
    }
    if never && (n.success || n.failure || n.delay) {
        return Err(syntax("NOTIFY=NEVER cannot be combined"));
    }
    Ok(n)
}

fn parse_bdat(rest: &str) -> Result<Command, Reply> {
    let mut parts = rest.split(' ');
    let size = parts.next().unwrap_or("");
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|c| c.is_ascii_digit()) {
        return Err(syntax("BDAT needs a chunk size"));
    }
    let size = size.parse().map_err(|_| syntax("bad chunk size"))?;
    let last = match parts.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax("expected LAST")),
    };
    if parts.next().is_some() {
        return Err(syntax("too many arguments to BDAT"));
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> u16 {
        match parse(line.as_bytes()) {
            Ok(_) => 0,
            Err(r) => r.code,
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, u16)] = &[
            ("EHLO client.example", 0),
            ("ehlo client.example", 0),
            ("EHLO [192.0.2.1]", 0),
            ("EHLO [IPv6:2001:db8::1]", 0),
            ("EHLO [192.0.2.1\t]", 501),
            ("EHLO [x:a(b);c]", 501),
            ("EHLO [300.1.1.1]", 501),
            ("EHLO []", 501),
            ("EHLO ex\u{e4}mple.com", 501),
            ("EHLO", 501),
            ("EHLO bad_name!", 501),
            ("HELO a b", 501),
            ("MAIL FROM:<a@b.example>", 0),
            ("mail from:<a@b.example>", 0),
            ("MAIL FROM: <a@b.example>", 0),
            ("MAIL FROM:<>", 0),
            ("MAIL FROM:<a@b.example> SIZE=1000", 0),
            ("MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8", 0),
            ("MAIL FROM:<a@b.example> BODY=BINARYMIME", 555),
            ("MAIL FROM:<a@b.example> FOO=bar", 555),
            ("MAIL FROM:<a@b.example> AUTH=<>", 555),
            ("MAIL FROM:<a@b.example> SIZE=abc", 501),
            ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", 501),
            ("MAIL FROM:<a@b.example>junk", 501),
            ("MAIL FROM:a@b.example", 501),
            ("MAIL FROM:<a@b.example", 501),
            ("MAIL TO:<a@b.example>", 501),
            ("MAIL FROM:<\"a>b\"@c.example>", 0),
            ("RCPT TO:<c@d.example>", 0),
            ("RCPT TO:<postmaster>", 0),
            ("RCPT TO:<c@d.example> NOTIFY=NEVER", 0),
            (
                "RCPT TO:<c@d.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40d.example",
                0,
            ),
            ("RCPT TO:<c@d.example> NOTIFY=NEVER,DELAY", 501),
            ("RCPT TO:<c@d.example> NOTIFY=SOMETIMES", 501),
            ("RCPT TO:<c@d.example> ORCPT=c@d.example", 501),
            ("RCPT TO:<c@d.example> FOO=1", 555),
            ("MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159", 0),
            ("MAIL FROM:<a@b.example> RET=ALL", 501),
            ("MAIL FROM:<a@b.example> ENVID=a+zz", 501),
            ("RCPT TO:<c@d.example> x", 555),
            ("RCPT TO:<c@d.example>>", 501),
            ("RCPT FROM:<c@d.example>", 501),
            ("DATA", 0),
            ("DATA x", 501),
            ("BDAT 100", 0),
            ("BDAT 100 LAST", 0),
            ("BDAT 0 last", 0),
            ("BDAT", 501),
            ("BDAT -1", 501),
            ("BDAT 10 FIRST", 501),
            ("BDAT 99999999999999999999999", 501),
            ("RSET", 0),
            ("NOOP anything", 0),
            ("QUIT", 0),
            ("VRFY someone", 0),
            ("VRFY", 501),
            ("HELP", 0),
            ("STARTTLS", 0),
            ("STARTTLS now", 501),
            ("FROB", 500),
            ("", 500),
            ("MAIL FROM:<a\u{1}@b.example>", 500),
        ];
        for (line, want) in cases {
            assert_eq!(code(line), *want, "{line:?}");
        }
    }

    #[test]
    fn xtext_round_trip() {
        assert_eq!(
            xtext_decode("rfc822;a+40b.example").as_deref(),
            Some("rfc822;a@b.example")
        );
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(
            xtext_decode(&xtext_encode("a+b=c d")).as_deref(),
            Some("a+b=c d")
        );
        assert_eq!(xtext_decode("a+4"), None);
        assert_eq!(xtext_decode("a+4g"), None);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let r = parse(b"MAIL FROM:<\xff@b.example>").unwrap_err();
        assert_eq!(r.code, 500);
    }

    #[test]
    fn mail_params_parsed() {
        let c = parse(b"MAIL FROM:<a@b.example> SIZE=1234 BODY=8bitmime SMTPUTF8").unwrap();
        assert_eq!(
            c,
            Command::Mail {
                from: parse_reverse_path("<a@b.example>").unwrap(),
                params: MailParams {
                    size: Some(1234),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ..MailParams::default()
                }
            }
        );
    }
}
