//! The message at the data stage, as guests read it through the
//! `sluice:policy/message` resource.
//!
//! The bytes are parsed once with mail-parser into a [`ParsedMessage`]
//! (headers and addresses at once; MIME leaves and decoded text when a
//! policy first asks) which every policy of the chain shares for that
//! message; the guest receives only what it asks for, within the bounds
//! each method states.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser, MimeHeaders, PartType};

/// Most octets one `raw` call returns (the contract's bound).
pub(crate) const MAX_RAW_CHUNK: u32 = 1 << 20;

/// One header field: where it is in the message. Its value is unfolded
/// or decoded only when a guest asks (most policies read a few fields).
#[derive(Debug)]
pub(crate) struct HeaderField {
    /// The name as written.
    pub(crate) name: String,
    /// The whole field: name, colon, value and the line break ending it.
    field: Range<usize>,
    /// The value alone (with its line breaks).
    value: Range<usize>,
    /// The value decoded, made on the first ask.
    decoded: OnceLock<Decoded>,
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
    /// The value unfolded and trimmed, undecoded.
    fn raw(&self, message: &[u8]) -> String {
        unfold(String::from_utf8_lossy(&message[self.value.clone()]).into_owned())
    }

    /// The value decoded (RFC 2047) to UTF-8; a date in RFC 822 form.
    fn decoded(&self, message: &[u8]) -> String {
        let decoded = self
            .decoded
            .get_or_init(|| decode_field(&message[self.field.clone()], self.raw(message)));
        match decoded {
            Decoded::Text(t) => t.clone(),
            Decoded::Date(d) => unfold(d.to_rfc822()),
        }
    }
}

/// Decode one field (`field` as in the message, `raw` its unfolded
/// value) the way mail-parser decodes it within a whole header section:
/// mail-parser picks a field's parser by its name alone, so parsing the
/// field by itself gives the same value.
fn decode_field(field: &[u8], raw: String) -> Decoded {
    let mut alone = Vec::with_capacity(field.len() + 4);
    alone.extend_from_slice(field);
    alone.extend_from_slice(b"\r\n\r\n");
    let parsed = MessageParser::default().parse_headers(&alone[..]);
    match parsed.as_ref().and_then(|m| m.headers().first()) {
        Some(h) => match decode_value(h.value(), &raw) {
            Decoded::Text(t) => Decoded::Text(unfold(t)),
            date => date,
        },
        None => Decoded::Text(raw),
    }
}

/// The fields mail-parser derives from the whole header section.
#[derive(Debug, Default)]
struct Summary {
    subject: Option<String>,
    from: Vec<String>,
    to: Vec<String>,
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
    summary: OnceLock<Summary>,
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
    /// Find the fields of the header section of `raw`: names and where
    /// each is, nothing decoded (a field's value is decoded when a guest
    /// first asks, the body parsed when one first asks for it). A message
    /// mail-parser cannot make sense of still gives its size and raw
    /// octets, with no headers or parts.
    pub(crate) fn parse(raw: Arc<[u8]>) -> Self {
        // With any entry in its map, mail-parser takes every field the map
        // does not name as raw text: a scan for the field ends, no decoding.
        let split = MessageParser::new().header_raw(HeaderName::Subject);
        let headers = match split.parse_headers(&raw[..]) {
            Some(msg) => msg
                .headers()
                .iter()
                .map(|h| {
                    let end = (h.offset_end as usize).min(raw.len());
                    let start = (h.offset_start as usize).min(end);
                    let field_start = (h.offset_field as usize).min(start);
                    HeaderField {
                        name: h.name().to_string(),
                        field: field_start..end,
                        value: start..end,
                        decoded: OnceLock::new(),
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            raw,
            headers,
            summary: OnceLock::new(),
            body: OnceLock::new(),
        }
    }

    /// Subject, From and To/Cc as mail-parser reads them from the whole
    /// header section, made on the first call.
    fn summary(&self) -> &Summary {
        self.summary.get_or_init(|| {
            let Some(msg) = MessageParser::default().parse_headers(&self.raw[..]) else {
                return Summary::default();
            };
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
            Summary {
                subject: msg.subject().map(str::to_string),
                from,
                to,
            }
        })
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
            .map(|h| h.decoded(&self.raw))
            .collect()
    }

    /// At most `max` fields: name and raw (unfolded, undecoded) value.
    pub(crate) fn headers(&self, max: u32) -> impl Iterator<Item = (&str, String)> {
        self.headers
            .iter()
            .take(max as usize)
            .map(|h| (&h.name[..], h.raw(&self.raw)))
    }

    pub(crate) fn subject(&self) -> Option<String> {
        self.summary().subject.clone()
    }

    pub(crate) fn from(&self) -> Vec<String> {
        self.summary().from.clone()
    }

    pub(crate) fn to(&self) -> Vec<String> {
        self.summary().to.clone()
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
        let (name, raw) = m.headers(10).next().unwrap();
        assert_eq!(
            (name, &raw[..]),
            ("Date", "Tue, 1 Dec 2026 10:20:30 +0100 (CET)")
        );
    }

    /// Every field of `raw` as the whole header section parsed by
    /// mail-parser at once gives it: name, raw value, decoded value.
    fn fields_parsed_at_once(raw: &[u8]) -> Vec<(String, String, String)> {
        let Some(msg) = MessageParser::default().parse_headers(raw) else {
            return Vec::new();
        };
        msg.headers()
            .iter()
            .map(|h| {
                let start = (h.offset_start as usize).min(raw.len());
                let end = (h.offset_end as usize).clamp(start, raw.len());
                let value = unfold(String::from_utf8_lossy(&raw[start..end]).into_owned());
                let decoded = match decode_value(h.value(), &value) {
                    Decoded::Text(t) => unfold(t),
                    Decoded::Date(d) => unfold(d.to_rfc822()),
                };
                (h.name().to_string(), value, decoded)
            })
            .collect()
    }

    fn corpus_messages(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                corpus_messages(&path, out);
            } else if path.extension().is_some_and(|x| x == "eml" || x == "msg") {
                out.push(path);
            }
        }
    }

    /// The fields are split without decoding and each is decoded alone
    /// when asked: over the whole corpus, that gives exactly what parsing
    /// the header section at once gives, except where that parse loses a
    /// field.
    #[test]
    fn fields_decoded_alone_match_the_whole_section_parsed_at_once() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        let mut files = Vec::new();
        corpus_messages(&corpus, &mut files);
        assert!(
            files.len() > 100,
            "corpus not found at {}",
            corpus.display()
        );
        let (mut fields, mut swallowed) = (0, 0);
        for path in &files {
            let raw = std::fs::read(path).unwrap();
            let at_once = fields_parsed_at_once(&raw);
            let m = ParsedMessage::parse(Arc::from(&raw[..]));
            if m.headers.len() != at_once.len() {
                // mail-parser's date parser can run a field into the next
                // (spam-001.eml: "DATE: 18 Feb 01 12:29:13 AM" swallows
                // the Message-ID line); split raw, both fields are found.
                let split: Vec<_> = m.headers.iter().map(|h| &h.name[..]).collect();
                let mut rest = split.iter();
                for (name, ..) in &at_once {
                    assert!(rest.any(|n| n == name), "{}: {name}", path.display());
                }
                swallowed += 1;
                continue;
            }
            for (h, (name, value, decoded)) in m.headers.iter().zip(&at_once) {
                let at = path.display();
                assert_eq!((&h.name, &h.raw(&m.raw)), (name, value), "{at}");
                assert_eq!(&h.decoded(&m.raw), decoded, "{at} {name}");
                fields += 1;
            }
            let whole = MessageParser::default().parse_headers(&raw[..]);
            if let Some(whole) = whole {
                assert_eq!(
                    m.subject().as_deref(),
                    whole.subject(),
                    "{}",
                    path.display()
                );
            }
        }
        assert!(fields > 1000, "{fields} fields");
        assert!(swallowed <= 2, "{swallowed} messages split differently");
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
        let raw: Vec<_> = m.headers(100).collect();
        assert_eq!(
            raw[0],
            ("From", "=?utf-8?q?J=C3=B6rg?= <j@example.test>".into())
        );
        assert_eq!(raw[4], ("X-Folded", "one two".into()));
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
