//! Typed SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463).
//!
//! Every reply the gateway sends is a [`Reply`] value; the standard ones are
//! named here so no handler spells out reply text on its own.

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl Enhanced {
    /// `class.subject.detail` exactly (RFC 3463 §2): a class of 2, 4 or 5,
    /// a subject and a detail of one to three digits; `None` otherwise.
    pub fn parse(s: &str) -> Option<Enhanced> {
        let mut parts = s.split('.');
        let (c, sub, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let num = |p: &str, max: usize| {
            if p.is_empty() || p.len() > max || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse::<u16>().ok()
            }
        };
        let class = num(c, 1)?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Enhanced(class as u8, num(sub, 3)?, num(d, 3)?))
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced code, and one or
/// more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, when the reply carries one.
    pub enhanced: Option<Enhanced>,
    /// The text, one entry per line; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced code (greeting, 354, EHLO).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply without enhanced code (used for EHLO).
    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        debug_assert!(!lines.is_empty());
        Self {
            code,
            enhanced: None,
            lines,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply on the wire, CRLF-terminated, continuation lines marked
    /// with `-`. Text is cleaned of CR and LF so a reply can never inject a
    /// second one.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_to(&mut out);
        out
    }

    /// Append the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some(e) = self.enhanced {
                out.extend_from_slice(format!("{e} ").as_bytes());
            }
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The first line as text, for logs.
    pub fn summary(&self) -> String {
        match self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, self.lines[0]),
            None => format!("{} {}", self.code, self.lines[0]),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The standard replies, named once.
pub mod std_replies {
    use super::{Enhanced, Reply};

    /// 250 2.0.0 Ok
    pub fn ok() -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), "Ok")
    }
    /// 250 2.1.0 sender ok
    pub fn sender_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 0), "Sender ok")
    }
    /// 250 2.1.5 recipient ok
    pub fn recipient_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 5), "Recipient ok")
    }
    /// 354 go ahead with DATA
    pub fn start_data() -> Reply {
        Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
    }
    /// 250 queued
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as {id}"))
    }
    /// 250 for a non-final BDAT chunk.
    pub fn chunk_ok(size: u64) -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), format!("{size} octets received"))
    }
    /// 221 closing
    pub fn bye() -> Reply {
        Reply::new(221, Enhanced(2, 0, 0), "Bye")
    }
    /// 252 for VRFY: we never confirm or deny a mailbox.
    pub fn vrfy() -> Reply {
        Reply::new(
            252,
            Enhanced(2, 5, 2),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    /// 214 HELP
    pub fn help() -> Reply {
        Reply::new(
            214,
            Enhanced(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
        )
    }
    /// 220 ready to start TLS
    pub fn tls_go_ahead() -> Reply {
        Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS")
    }
    /// 421 service shutting down
    pub fn shutting_down() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 0),
            "Service shutting down, try again later",
        )
    }
    /// 421 too many connections
    pub fn too_many_connections() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            "Too many connections, try again later",
        )
    }
    /// 421 too many connections from one address
    pub fn too_many_from_ip() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            "Too many connections from your address, try again later",
        )
    }
    /// 421 command or data timeout
    pub fn timeout() -> Reply {
        Reply::new(421, Enhanced(4, 4, 2), "Timeout, closing connection")
    }
    /// 421 session lasted too long
    pub fn session_too_long() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 4, 2),
            "Session time limit reached, closing",
        )
    }
    /// 421 session sent too many bytes
    pub fn session_too_big() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 7, 0),
            "Session byte limit reached, closing",
        )
    }
    /// 421 too many bad commands
    pub fn too_many_errors() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 7, 0),
            "Too many errors, closing connection",
        )
    }
    /// 451 local error (the spool could not take the message)
    pub fn local_error() -> Reply {
        Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Local error in processing, try again later",
        )
    }
    /// 421 too many connections from the client's network
    pub fn too_many_from_network() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            "Too many connections from your network, try again later",
        )
    }
    /// 552 the header section is larger than `max_header_size`
    pub fn header_too_big() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Message header section too large")
    }
    /// 552 more header fields than `max_header_fields`
    pub fn too_many_header_fields() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Too many header fields")
    }
    /// 554 more `Received:` fields than the loop limit
    pub fn mail_loop(received: usize) -> Reply {
        Reply::new(
            554,
            Enhanced(5, 4, 6),
            format!("Mail loop detected: {received} Received: header fields"),
        )
    }
    /// 452 the spool's disk is full (RFC 3463 4.3.1: mail system full)
    pub fn insufficient_storage() -> Reply {
        Reply::new(
            452,
            Enhanced(4, 3, 1),
            "Insufficient system storage, try again later",
        )
    }
    /// 452 too many recipients
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, Enhanced(4, 5, 3), "Too many recipients")
    }
    /// 454 TLS not available now
    pub fn tls_unavailable() -> Reply {
        Reply::new(454, Enhanced(4, 7, 0), "TLS not available")
    }
    /// 500 command line too long
    pub fn line_too_long() -> Reply {
        Reply::new(500, Enhanced(5, 5, 2), "Command line too long")
    }
    /// 500 unrecognized command
    pub fn unknown_command() -> Reply {
        Reply::new(500, Enhanced(5, 5, 1), "Command unrecognized")
    }
    /// 500 command not valid UTF-8 or contains control characters
    pub fn bad_command_bytes() -> Reply {
        Reply::new(500, Enhanced(5, 5, 2), "Invalid characters in command")
    }
    /// 501 syntax error in parameters
    pub fn syntax(text: &str) -> Reply {
        Reply::new(501, Enhanced(5, 5, 4), format!("Syntax error: {text}"))
    }
    /// 501 bad address syntax
    pub fn bad_address(text: &str) -> Reply {
        Reply::new(
            501,
            Enhanced(5, 1, 3),
            format!("Bad address syntax: {text}"),
        )
    }
    /// 502 command not implemented
    pub fn not_implemented() -> Reply {
        Reply::new(502, Enhanced(5, 5, 1), "Command not implemented")
    }
    /// 503 bad sequence
    pub fn bad_sequence(text: &str) -> Reply {
        Reply::new(503, Enhanced(5, 5, 1), text.to_string())
    }
    /// 552 message too big (declared with SIZE or received)
    pub fn too_big() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Message size exceeds fixed limit")
    }
    /// 553 non-ASCII address without SMTPUTF8
    pub fn needs_smtputf8() -> Reply {
        Reply::new(
            553,
            Enhanced(5, 6, 7),
            "Non-ASCII address requires the SMTPUTF8 parameter",
        )
    }
    /// 554 relay denied
    pub fn relay_denied() -> Reply {
        Reply::new(554, Enhanced(5, 7, 1), "Relay access denied")
    }
    /// 554 no valid recipients
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, Enhanced(5, 5, 1), "No valid recipients")
    }
    /// 550 bare CR or LF in message content (SMTP smuggling defence)
    pub fn bare_line_ending() -> Reply {
        Reply::new(
            550,
            Enhanced(5, 6, 11),
            "Message contains bare CR or LF; lines must end with CRLF",
        )
    }
    /// 550 NUL octet in message content
    pub fn nul_in_message() -> Reply {
        Reply::new(550, Enhanced(5, 6, 0), "Message contains a NUL octet")
    }
    /// 555 unknown MAIL/RCPT parameter
    pub fn unknown_parameter(name: &str) -> Reply {
        Reply::new(
            555,
            Enhanced(5, 5, 4),
            format!("Unsupported parameter {name}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(Enhanced::parse("5.7.1"), Some(Enhanced(5, 7, 1)));
        assert_eq!(Enhanced::parse("4.2.0"), Some(Enhanced(4, 2, 0)));
        assert_eq!(Enhanced::parse("2.1.999"), Some(Enhanced(2, 1, 999)));
        for bad in [
            "", "5.7", "5.7.1.2", "3.0.0", "5.x.1", "5.1000.1", "55.1.1", " 4.2.0",
        ] {
            assert_eq!(Enhanced::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn wire_single_and_multi() {
        assert_eq!(std_replies::ok().to_wire(), b"250 2.0.0 Ok\r\n");
        let r = Reply::multiline(250, vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(r.to_wire(), b"250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::new(550, Enhanced(5, 7, 1), "x\r\n250 ok");
        assert_eq!(r.to_wire(), b"550 5.7.1 x  250 ok\r\n");
    }
}
