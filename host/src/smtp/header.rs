//! The header section of a message (RFC 5322 §2.2, 3.6): where each field
//! is. This is the one definition of it in the gateway — the data-stage
//! editor (the gate's `changes.rs`) and the policies' message resource
//! see the same fields, so a field a policy can read is a field a policy
//! can remove. It is mail-parser's reading: a line that is not a field
//! (no colon) does not end the section; it is skipped, and the fields
//! after it are fields.

use std::ops::Range;

use mail_parser::{HeaderName, MessageParser};

/// One header field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpan {
    /// The name as written.
    pub name: String,
    /// The whole field: name, colon, value and the line break ending it.
    pub field: Range<usize>,
    /// The value alone (with its line breaks).
    pub value: Range<usize>,
}

/// The fields of the header section of `msg`, in order; none when the
/// message has no header section mail-parser can read.
pub fn fields(msg: &[u8]) -> Vec<FieldSpan> {
    // With any entry in its map, mail-parser takes every field the map
    // does not name as raw text: a scan for the fields, no decoding.
    let split = MessageParser::new().header_raw(HeaderName::Subject);
    let Some(parsed) = split.parse_headers(msg) else {
        return Vec::new();
    };
    parsed
        .headers()
        .iter()
        .map(|h| {
            let end = (h.offset_end as usize).min(msg.len());
            let start = (h.offset_start as usize).min(end);
            let field_start = (h.offset_field as usize).min(start);
            FieldSpan {
                name: h.name().to_string(),
                field: field_start..end,
                value: start..end,
            }
        })
        .collect()
}

/// What a bounded scan of the header section found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// Lines that start a field (a line that is not a field counts too).
    pub fields: usize,
    /// `Received:` fields among them.
    pub received: usize,
    /// Octets of the section scanned (up to the empty line).
    pub bytes: usize,
    /// The scan stopped at a bound: the section is longer than
    /// `max_bytes` or has more than `max_fields` fields.
    pub over: bool,
}

/// Scan the header section of `msg` line by line, without parsing it, and
/// stop as soon as it passes `max_bytes` octets or `max_fields` fields: the
/// cost is bounded by the limits, not by the message (a header bomb of
/// millions of tiny fields costs `max_fields` lines).
pub fn scan(msg: &[u8], max_bytes: usize, max_fields: usize) -> Scan {
    let mut s = Scan::default();
    let mut pos = 0;
    while pos < msg.len() {
        let end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            s.fields += 1;
            if is_received(line) {
                s.received += 1;
            }
        }
        s.bytes = end;
        if s.bytes > max_bytes || s.fields > max_fields {
            s.over = true;
            break;
        }
        pos = end;
    }
    s
}

/// The `Received:` fields of the header section of `msg` (a folded field
/// counts once; `Received:` lines in the body do not count).
pub fn count_received(msg: &[u8]) -> usize {
    scan(msg, usize::MAX, usize::MAX).received
}

/// Does `line` start a `Received:` field (name case-insensitive, blanks
/// before the colon allowed as obsolete syntax has them)?
fn is_received(line: &[u8]) -> bool {
    const NAME: &[u8] = b"received";
    line.len() > NAME.len()
        && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        && line[NAME.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            .is_some_and(|&b| b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_within_bounds() {
        let msg = b"Received: a\r\n\tb\r\nRECEIVED : c\r\nX-Received: no\r\n\r\nReceived: body\r\n";
        let s = scan(msg, 1 << 20, 1000);
        assert_eq!((s.fields, s.received, s.over), (3, 2, false));
        assert_eq!(s.bytes, msg.len() - b"\r\nReceived: body\r\n".len());
        // A bomb stops at the bound.
        let bomb = b"a:\r\n".repeat(100_000);
        let s = scan(&bomb, 1 << 20, 1000);
        assert!(s.over);
        assert_eq!(s.fields, 1001);
        let s = scan(&bomb, 100, 1_000_000);
        assert!(s.over && s.bytes > 100 && s.bytes < 110);
    }

    fn names(msg: &[u8]) -> Vec<String> {
        fields(msg).into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn a_line_without_a_colon_does_not_end_the_section() {
        let msg = b"Subject: x\r\njunk without a colon\r\nX-DNSBL: forged\r\n\r\nbody\r\n";
        assert_eq!(names(msg), ["Subject", "X-DNSBL"]);
        let f = &fields(msg)[1];
        assert_eq!(&msg[f.field.clone()], b"X-DNSBL: forged\r\n");
    }

    #[test]
    fn folded_fields_and_the_body() {
        let msg = b"A: 1\r\n\tmore\r\nB: 2\r\n\r\nC: not a field\r\n";
        assert_eq!(names(msg), ["A", "B"]);
        assert_eq!(&msg[fields(msg)[0].field.clone()], b"A: 1\r\n\tmore\r\n");
    }

    #[test]
    fn count_received_cases() {
        let msg = b"Received: from a by b;\r\n\tSat, 14 Mar 2026 10:00:00 +0000\r\n\
    RECEIVED: from c\r\n  by d; Sat, 14 Mar 2026 09:00:00 +0000\r\n\
    received : obsolete spacing\r\n\
    X-Received: not this one\r\n\
    Received-SPF: pass\r\n\
    Subject: Received: in a subject\r\n\
    From: a@b\r\n\r\n\
    Received: from body by text\r\nReceived: again\r\n";
        assert_eq!(count_received(msg), 3);
        assert_eq!(
            count_received(b"Received: x\nreceived: y\n\nReceived: z\n"),
            2
        );
        assert_eq!(count_received(b"Subject: none\r\n\r\n"), 0);
        assert_eq!(count_received(b""), 0);
        assert_eq!(count_received(b"Received: only headers, no body"), 1);
    }
}
