//! The header section of a message (RFC 5322 §2.2, 3.6): where each field
//! is. This is the one definition of it in the gateway — the data-stage
//! editor ([`crate::gate::changes`]) and the policies' message resource
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
