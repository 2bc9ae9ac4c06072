//! The client side's reply parser, sans-IO: replies from a server,
//! multi-line, with enhanced status codes (RFC 2034), bounded in line
//! length and line count; fed in pieces of any size.

use crate::smtp::{Enhanced, Reply};

/// Longest reply line accepted, CRLF excluded. RFC 5321 §4.5.3.1.5 says
/// 512 octets; real servers exceed it, so allow some room.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines accepted in one reply.
pub const MAX_REPLY_LINES: usize = 256;

/// Why bytes from the server are not a valid reply. The connection cannot
/// go on after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a reply code and a separator.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// The lines of one multi-line reply carry different codes.
    #[error("reply code changed within a multi-line reply ({first} then {then})")]
    CodeMismatch {
        /// The code of the first line.
        first: u16,
        /// The code of the offending line.
        then: u16,
    },
}

/// Turns bytes from the server into [`Reply`] values: [`push`] what was
/// read, then take replies with [`next_reply`] until it says `None`.
///
/// Lines end with CRLF (a bare LF is tolerated); continuation lines are
/// `250-…`, the last one `250 …` or just `250`. An enhanced status code
/// at the start of the text (RFC 2034) is taken out of every line into
/// [`Reply::enhanced`].
///
/// [`push`]: ReplyParser::push
/// [`next_reply`]: ReplyParser::next_reply
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    pos: usize,
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes read from the server.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet parsed into a reply.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drop everything received so far, parsed or not (after the 220 to
    /// STARTTLS: whatever followed it in plaintext must not be read as a
    /// reply inside TLS). Returns how many bytes were dropped.
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buffered();
        self.buf.clear();
        self.pos = 0;
        self.code = None;
        self.lines.clear();
        n
    }

    /// The next complete reply, `None` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                // +1 for a CR that may still come before the LF.
                if rest.len() > MAX_REPLY_LINE + 1 {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let (code, last, text) = parse_reply_line(line)?;
            self.pos += nl + 1;
            match self.code {
                Some(first) if first != code => {
                    return Err(ReplyError::CodeMismatch { first, then: code });
                }
                _ => self.code = Some(code),
            }
            if self.lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            self.lines.push(text);
            if last {
                self.code = None;
                let lines = std::mem::take(&mut self.lines);
                return Ok(Some(finish_reply(code, lines)));
            }
        }
    }
}

/// One line: code, whether it is the last line, and the text.
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || {
        let shown = &line[..line.len().min(64)];
        ReplyError::Malformed(String::from_utf8_lossy(shown).into_owned())
    };
    if line.len() < 3
        || !(b'2'..=b'5').contains(&line[0])
        || !(b'0'..=b'5').contains(&line[1])
        || !line[2].is_ascii_digit()
    {
        return Err(malformed());
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(malformed()),
    };
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[]))
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    Ok((code, last, text))
}

/// An enhanced code `class.subject.detail` at the start of `text`, and the
/// length to strip (the code and one following space).
fn parse_enhanced(text: &str) -> Option<(Enhanced, usize)> {
    let token = text.split(' ').next().unwrap_or("");
    let e = Enhanced::parse(token)?;
    let strip = if text.len() > token.len() {
        token.len() + 1
    } else {
        token.len()
    };
    Some((e, strip))
}

fn finish_reply(code: u16, mut lines: Vec<String>) -> Reply {
    let class = (code / 100) as u8;
    let enhanced = match parse_enhanced(&lines[0]) {
        Some((e, _)) if e.0 == class => Some(e),
        _ => None,
    };
    if enhanced.is_some() {
        for line in &mut lines {
            if let Some((_, strip)) = parse_enhanced(line) {
                line.drain(..strip);
            }
        }
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Enhanced;

    // -- reply parser ----------------------------------------------------

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(r) = p.next_reply()? {
                out.push(r);
            }
        }
        Ok(out)
    }

    const REPLIES: &[u8] = b"220 mx.example ESMTP ready\r\n\
        250-mx.example hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n\
        250 2.1.0 Sender ok\r\n\
        550-5.7.1 relay\r\n550-5.7.1 denied\r\n550 5.7.1 here\r\n\
        354\n\
        451 4.3.0\r\n\
        250 5.0.0 class mismatch is text\r\n";

    #[test]
    fn replies_parse() {
        let r = parse_all(&[REPLIES]).unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(r[0], Reply::plain(220, "mx.example ESMTP ready"));
        assert_eq!(r[1].code, 250);
        assert_eq!(
            r[1].lines,
            ["mx.example hello", "PIPELINING", "SIZE 1000", "8BITMIME"]
        );
        assert_eq!(r[1].enhanced, None);
        assert_eq!(r[2], Reply::new(250, Enhanced(2, 1, 0), "Sender ok"));
        assert_eq!(r[3].enhanced, Some(Enhanced(5, 7, 1)));
        assert_eq!(r[3].lines, ["relay", "denied", "here"]);
        assert_eq!(r[4], Reply::plain(354, ""));
        assert_eq!(r[5], Reply::new(451, Enhanced(4, 3, 0), ""));
        assert_eq!(r[6], Reply::plain(250, "5.0.0 class mismatch is text"));
    }

    #[test]
    fn replies_split_at_every_boundary() {
        let whole = parse_all(&[REPLIES]).unwrap();
        for i in 0..=REPLIES.len() {
            let (a, b) = REPLIES.split_at(i);
            assert_eq!(parse_all(&[a, b]).unwrap(), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = REPLIES.chunks(1).collect();
        assert_eq!(parse_all(&bytes).unwrap(), whole);
    }

    #[test]
    fn replies_rejected() {
        let cases: &[&[u8]] = &[
            b"abc\r\n",
            b"25\r\n",
            b"199 x\r\n",
            b"600 x\r\n",
            b"260 x\r\n",
            b"250x\r\n",
            b"250_x\r\n",
            b"\r\n",
        ];
        for c in cases {
            assert!(
                matches!(parse_all(&[c]), Err(ReplyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            parse_all(&[b"250-a\r\n251 b\r\n"]),
            Err(ReplyError::CodeMismatch {
                first: 250,
                then: 251
            })
        );
        // A long line is refused before its end arrives.
        let long = vec![b'2'; MAX_REPLY_LINE + 2];
        assert_eq!(parse_all(&[&long]), Err(ReplyError::LineTooLong));
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_REPLY_LINE));
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&[&long]), Err(ReplyError::LineTooLong));
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(parse_all(&[&many]), Err(ReplyError::TooManyLines));
        // Exactly at the limits is fine.
        let mut ok = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&[&ok]).unwrap()[0].lines.len(), MAX_REPLY_LINES);
    }

    #[test]
    fn reply_text_is_cleaned() {
        let r = parse_all(&[b"250 a\rb\x00c\xff\tz\r\n"]).unwrap();
        assert_eq!(r[0].lines, ["a?b?c\u{fffd}\tz"]);
    }

    #[test]
    fn discard_buffered_drops_partial_and_complete() {
        let mut p = ReplyParser::new();
        p.push(b"220 go ahead\r\n250 injected\r\n250-par");
        assert_eq!(p.next_reply().unwrap().unwrap().code, 220);
        assert_eq!(p.discard_buffered(), b"250 injected\r\n250-par".len());
        assert_eq!(p.next_reply().unwrap(), None);
        p.push(b"250 real\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().lines, ["real"]);
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(parse_enhanced("2.1.5 ok"), Some((Enhanced(2, 1, 5), 6)));
        assert_eq!(parse_enhanced("5.7.1"), Some((Enhanced(5, 7, 1), 5)));
        assert_eq!(
            parse_enhanced("4.999.999 x"),
            Some((Enhanced(4, 999, 999), 10))
        );
        for bad in [
            "",
            "2.1",
            "2.1.5.6",
            "3.0.0",
            "2.1000.0",
            "x.1.1",
            "2.1.",
            "25.1.1",
            "mx.example",
        ] {
            assert_eq!(parse_enhanced(bad), None, "{bad}");
        }
    }
}
