//! The client side's reading of an EHLO/LHLO reply: the extensions a
//! server offers.

use crate::smtp::Reply;

/// What the server offers in its EHLO/LHLO reply. All false after a HELO
/// fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870) and its limit; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// CHUNKING (RFC 3030); noted, not used.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms (RFC 4954), upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Read the keywords of an EHLO/LHLO reply (every line after the
    /// first). Unknown keywords are ignored; a bad SIZE value counts as no
    /// fixed limit.
    pub fn parse(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            let mut add_auth = |mechs: &mut dyn Iterator<Item = &str>| {
                for m in mechs {
                    let m = m.to_ascii_uppercase();
                    if !m.is_empty() && !ext.auth.contains(&m) {
                        ext.auth.push(m);
                    }
                }
            };
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "DSN" => ext.dsn = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "AUTH" => add_auth(&mut words),
                // The pre-RFC 4954 form some servers still send.
                k if k.starts_with("AUTH=") => {
                    let first = &line.trim_start()[5..];
                    add_auth(&mut first.split_ascii_whitespace());
                }
                _ => {}
            }
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- extensions ------------------------------------------------------

    #[test]
    fn extensions_parse() {
        let r = Reply::multiline(
            250,
            [
                "mx.example greets you",
                "pipelining",
                "SIZE 35882577",
                "8BITMIME",
                "SMTPUTF8",
                "STARTTLS",
                "DSN",
                "CHUNKING",
                "ENHANCEDSTATUSCODES",
                "AUTH PLAIN login",
                "AUTH=LOGIN CRAM-MD5",
                "X-UNKNOWN 1",
                "",
            ]
            .map(String::from)
            .to_vec(),
        );
        let e = Extensions::parse(&r);
        assert_eq!(
            e,
            Extensions {
                pipelining: true,
                size: Some(35_882_577),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                dsn: true,
                chunking: true,
                enhanced_status_codes: true,
                auth: vec!["PLAIN".into(), "LOGIN".into(), "CRAM-MD5".into()],
            }
        );
        // The greeting line is not a keyword; a bare SIZE means no limit.
        let r = Reply::multiline(250, vec!["PIPELINING".into(), "SIZE".into()]);
        let e = Extensions::parse(&r);
        assert!(!e.pipelining);
        assert_eq!(e.size, Some(0));
        assert_eq!(
            Extensions::parse(&Reply::plain(250, "hi")),
            Extensions::default()
        );
    }
}
