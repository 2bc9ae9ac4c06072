//! The message at the data stage, as guests read it through the
//! `sluice:policy/message` resource.
//!
//! The bytes are parsed once with mail-parser into a [`ParsedMessage`]
//! (headers and addresses at once; MIME leaves and decoded text when a
//! policy first asks) which every policy of the chain shares for that
//! message; the guest receives only what it asks for, within the bounds
//! each method states.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

/// Most octets one `raw` call returns (the contract's bound).
pub(crate) const MAX_RAW_CHUNK: u32 = 1 << 20;

/// One header field.
#[derive(Debug, Clone)]
pub(crate) struct HeaderField {
    /// The name as written.
    pub(crate) name: String,
    /// The value unfolded, undecoded, trimmed.
    pub(crate) raw: String,
    /// The value decoded (RFC 2047) to UTF-8 (see [`HeaderField::decoded`]).
    decoded: Decoded,
}

/// A decoded value, or what it is made from when making it is dear and
/// most policies never ask (a date: formatting it is most of the cost of
/// a Date field).
#[derive(Debug, Clone)]
enum Decoded {
    Text(String),
    Date(mail_parser::DateTime),
}

impl HeaderField {
    /// The value decoded (RFC 2047) to UTF-8; a date in RFC 822 form.
    pub(crate) fn decoded(&self) -> String {
        match &self.decoded {
            Decoded::Text(t) => t.clone(),
            Decoded::Date(d) => unfold(d.to_rfc822()),
        }
    }
}

/// A MIME leaf.
#[derive(Debug, Clone)]
pub(crate) struct PartSummary {
    pub(crate) content_type: String,
    pub(crate) filename: Option<String>,
    pub(crate) size: u32,
    pub(crate) is_attachment: bool,
}

/// A message parsed once, read by every policy of the chain. The header
/// section is parsed up front; the MIME structure and text bodies only
/// when a policy first asks for them (most policies read headers only).
#[derive(Debug)]
pub(crate) struct ParsedMessage {
    raw: Arc<[u8]>,
    headers: Vec<HeaderField>,
    subject: Option<String>,
    from: Vec<String>,
    to: Vec<String>,
    body: OnceLock<Body>,
}

/// The MIME leaves and the decoded text bodies.
#[derive(Debug, Default)]
struct Body {
    parts: Vec<PartSummary>,
    text: String,
}

/// The host side of one `message` resource: a handle on a shared parse.
#[derive(Debug, Clone)]
pub struct MessageResource(pub(crate) Arc<ParsedMessage>);

impl ParsedMessage {
    /// Parse the header section of `raw` (the body waits for a policy to
    /// ask). A message mail-parser cannot make sense of still gives its
    /// size and raw octets, with no headers or parts.
    pub(crate) fn parse(raw: Arc<[u8]>) -> Self {
        let Some(msg) = MessageParser::default().parse_headers(&raw[..]) else {
            return Self {
                raw,
                headers: Vec::new(),
                subject: None,
                from: Vec::new(),
                to: Vec::new(),
                body: OnceLock::from(Body::default()),
            };
        };
        let headers = msg
            .headers()
            .iter()
            .map(|h| {
                let start = (h.offset_start as usize).min(raw.len());
                let end = (h.offset_end as usize).clamp(start, raw.len());
                let raw_value = unfold(String::from_utf8_lossy(&raw[start..end]).into_owned());
                let decoded = match decode_value(h.value(), &raw_value) {
                    Decoded::Text(t) => Decoded::Text(unfold(t)),
                    date => date,
                };
                HeaderField {
                    name: h.name().to_string(),
                    raw: raw_value,
                    decoded,
                }
            })
            .collect();
        let addresses = |a: Option<&Address<'_>>, out: &mut Vec<String>| {
            if let Some(a) = a {
                out.extend(a.iter().filter_map(|x| x.address().map(str::to_string)));
            }
        };
        let mut from = Vec::new();
        addresses(msg.from(), &mut from);
        let mut to = Vec::new();
        addresses(msg.to(), &mut to);
        addresses(msg.cc(), &mut to);
        let subject = msg.subject().map(str::to_string);
        drop(msg);
        Self {
            raw,
            headers,
            subject,
            from,
            to,
            body: OnceLock::new(),
        }
    }

    /// [`parse`](Self::parse), and the body at once (for a large message,
    /// on the blocking pool, so that no policy call parses it on a
    /// serving thread).
    pub(crate) fn parse_all(raw: Arc<[u8]>) -> Self {
        let m = Self::parse(raw);
        m.body();
        m
    }

    /// The MIME leaves and text bodies, parsed on the first call.
    fn body(&self) -> &Body {
        self.body.get_or_init(|| {
            let Some(msg) = MessageParser::default().parse(&self.raw[..]) else {
                return Body::default();
            };
            let parts = msg
                .parts
                .iter()
                .enumerate()
                .filter(|(_, p)| !matches!(p.body, PartType::Multipart(_)))
                .map(|(i, p)| {
                    let content_type = p
                        .content_type()
                        .map(|ct| match ct.subtype() {
                            Some(sub) => format!("{}/{}", ct.ctype(), sub),
                            None => ct.ctype().to_string(),
                        })
                        .unwrap_or_else(|| "text/plain".to_string())
                        .to_ascii_lowercase();
                    PartSummary {
                        content_type,
                        filename: p.attachment_name().map(str::to_string),
                        size: u32::try_from(p.len()).unwrap_or(u32::MAX),
                        is_attachment: msg.attachments.contains(&(i as u32)),
                    }
                })
                .collect();
            let mut text = String::new();
            for i in 0..msg.text_body_count() {
                if let Some(t) = msg.body_text(i) {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&t);
                }
            }
            Body { parts, text }
        })
    }

    /// Size as received, saturating at 4 GiB.
    pub(crate) fn size(&self) -> u32 {
        u32::try_from(self.raw.len()).unwrap_or(u32::MAX)
    }

    /// Decoded values of the fields called `name`.
    pub(crate) fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(HeaderField::decoded)
            .collect()
    }

    /// At most `max` fields, raw values.
    pub(crate) fn headers(&self, max: u32) -> impl Iterator<Item = &HeaderField> {
        self.headers.iter().take(max as usize)
    }

    pub(crate) fn subject(&self) -> Option<String> {
        self.subject.clone()
    }

    pub(crate) fn from(&self) -> Vec<String> {
        self.from.clone()
    }

    pub(crate) fn to(&self) -> Vec<String> {
        self.to.clone()
    }

    pub(crate) fn parts(&self, max: u32) -> impl Iterator<Item = &PartSummary> {
        self.body().parts.iter().take(max as usize)
    }

    /// The text bodies, cut to at most `max` octets at a character
    /// boundary.
    pub(crate) fn text(&self, max: u32) -> String {
        cut(&self.body().text, max as usize).to_string()
    }

    /// Raw octets from `offset`, at most `len` and [`MAX_RAW_CHUNK`].
    pub(crate) fn raw(&self, offset: u32, len: u32) -> Vec<u8> {
        let start = (offset as usize).min(self.raw.len());
        let end = start
            .saturating_add(len.min(MAX_RAW_CHUNK) as usize)
            .min(self.raw.len());
        self.raw[start..end].to_vec()
    }
}

/// `s` cut to at most `max` octets, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Unfold (RFC 5322 §2.2.3) and trim a raw header value: line breaks
/// (CRLF or bare LF, with any CRs just before them or at the end) go, a
/// CR elsewhere stays. Most values have no break and are trimmed in place.
fn unfold(v: String) -> String {
    if memchr::memchr2(b'\r', b'\n', v.as_bytes()).is_none() {
        let t = v.trim();
        return if t.len() == v.len() { v } else { t.to_string() };
    }
    let mut out = String::with_capacity(v.len());
    for piece in v.split('\n') {
        out.push_str(piece.trim_end_matches('\r'));
    }
    out.trim().to_string()
}

/// A field's decoded value (a date stays a date until a guest asks).
fn decode_value(v: &HeaderValue<'_>, raw: &str) -> Decoded {
    Decoded::Text(match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.iter().map(Cow::as_ref).collect::<Vec<_>>().join(", "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|x| match (x.name(), x.address()) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::DateTime(d) => return Decoded::Date(*d),
        _ => raw.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unfolding this module used before, kept as the reference.
    fn unfold_reference(v: &str) -> String {
        let mut out = String::with_capacity(v.len());
        for piece in v.split("\r\n").flat_map(|l| l.split('\n')) {
            out.push_str(piece.trim_end_matches('\r'));
        }
        out.trim().to_string()
    }

    #[test]
    fn a_date_is_decoded_when_asked() {
        let m = ParsedMessage::parse(Arc::from(
            &b"Date: Tue, 1 Dec 2026 10:20:30 +0100 (CET)\r\nSubject: x\r\n\r\nbody"[..],
        ));
        assert_eq!(m.header("date"), vec!["Tue, 1 Dec 2026 10:20:30 +0100"]);
        let date = m.headers(10).next().unwrap();
        assert_eq!(date.raw, "Tue, 1 Dec 2026 10:20:30 +0100 (CET)");
        assert_eq!(date.decoded(), "Tue, 1 Dec 2026 10:20:30 +0100");
    }

    #[test]
    fn unfold_removes_line_breaks_and_trims() {
        let cases = [
            "",
            "plain",
            "  padded\t",
            "one\r\n two",
            "one\n two",
            "one\r\r\n two\r",
            "a\rb",
            "a\r\rb\r\n\r\n c",
            "\r\n lead",
            "trail \r\n",
            "x\n\ny",
            "\r",
            "\n",
            "é\r\n\tü",
        ];
        for c in cases {
            assert_eq!(unfold(c.to_string()), unfold_reference(c), "{c:?}");
        }
    }

    const MSG: &[u8] = b"From: =?utf-8?q?J=C3=B6rg?= <j@example.test>\r\n\
To: a@example.test, B <b@example.test>\r\n\
Cc: c@example.test\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
X-Folded: one\r\n two\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello w\xc3\xb6rld\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"r.pdf\"\r\n\
Content-Disposition: attachment; filename=\"r.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b1--\r\n";

    #[test]
    fn parse_all_parses_the_body_at_once() {
        let m = ParsedMessage::parse_all(Arc::from(MSG));
        assert!(m.body.get().is_some());
        assert_eq!(m.parts(10).count(), 2);
    }

    #[test]
    fn parsed_once_read_by_method() {
        let m = ParsedMessage::parse(Arc::from(MSG));
        assert_eq!(m.size() as usize, MSG.len());
        assert_eq!(m.subject().as_deref(), Some("Grüße"));
        assert_eq!(m.header("subject"), ["Grüße"]);
        assert_eq!(m.header("FROM"), ["Jörg <j@example.test>"]);
        assert_eq!(m.header("x-folded"), ["one two"]);
        assert!(m.header("x-absent").is_empty());
        let raw: Vec<_> = m.headers(100).map(|h| (&h.name[..], &h.raw[..])).collect();
        assert_eq!(raw[0], ("From", "=?utf-8?q?J=C3=B6rg?= <j@example.test>"));
        assert_eq!(raw[4], ("X-Folded", "one two"));
        assert_eq!(m.headers(2).count(), 2);
        assert_eq!(m.from(), ["j@example.test"]);
        assert_eq!(
            m.to(),
            ["a@example.test", "b@example.test", "c@example.test"]
        );
        // Headers and addresses did not need the body parsed.
        assert!(m.body.get().is_none());
        let parts: Vec<_> = m.parts(10).collect();
        assert!(m.body.get().is_some());
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].content_type, "text/plain");
        assert!(!parts[0].is_attachment);
        assert_eq!(parts[1].content_type, "application/pdf");
        assert_eq!(parts[1].filename.as_deref(), Some("r.pdf"));
        assert!(parts[1].is_attachment);
        assert_eq!(parts[1].size, 9);
        assert_eq!(m.text(1000).trim_end(), "Hello wörld");
        assert_eq!(m.text(8), "Hello w");
        assert_eq!(m.raw(0, 4), b"From");
        assert!(m.raw(1 << 30, 10).is_empty());
        assert_eq!(m.raw(0, u32::MAX).len(), MSG.len());
    }

    #[test]
    fn garbage_still_has_size_and_raw() {
        let m = ParsedMessage::parse(Arc::from(&b""[..]));
        assert_eq!(m.size(), 0);
        assert!(m.headers(10).next().is_none());
        let m = ParsedMessage::parse(Arc::from(&b"\x00\xff no headers"[..]));
        assert_eq!(m.raw(0, 3), b"\x00\xff ");
    }

    #[test]
    fn cut_at_char_boundary() {
        assert_eq!(cut("aö", 2), "a");
        assert_eq!(cut("aö", 3), "aö");
        assert_eq!(cut("", 0), "");
    }
}
