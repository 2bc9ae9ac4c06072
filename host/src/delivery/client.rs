//! The outbound SMTP/LMTP client: one [`Connection`] per session with a
//! next hop (an MX, a relay host, or a local LMTP server), reusable for
//! several messages.
//!
//! The wire rules live in small sans-IO pieces, unit-tested on bytes:
//!
//! - [`ReplyParser`]: replies from the server, multi-line, with enhanced
//!   status codes, bounded in line length and line count;
//! - [`Extensions`]: the EHLO/LHLO keywords;
//! - [`DataEncoder`]: the message as it goes out after `DATA` —
//!   dot-stuffed, every line ending made CRLF (no bare LF ever leaves:
//!   SMTP smuggling defence on the outbound side), ended by `CRLF.CRLF`.
//!
//! [`Connection`] does the I/O with tokio: greeting, EHLO/LHLO (HELO
//! fallback), STARTTLS per [`TlsMode`], AUTH, and transactions with
//! PIPELINING (RFC 2920) or in lockstep. Every read and write runs under
//! the RFC 5321 §4.5.3.2 timeout of its stage ([`Timeouts`]).
//!
//! Failures that concern the whole transaction or connection are a
//! [`ClientError`]; the fate of each recipient is a [`RcptResult`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::route::TlsMode;
use crate::smtp::base64;
use crate::smtp::command::{Notify, Ret, xtext_encode};
use crate::smtp::{Enhanced, Reply};

/// Longest reply line accepted, CRLF excluded. RFC 5321 §4.5.3.1.5 says
/// 512 octets; real servers exceed it, so allow some room.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines accepted in one reply.
pub const MAX_REPLY_LINES: usize = 256;
/// Bytes of the message encoded and written at a time.
const WRITE_CHUNK: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Configuration and inputs
// ---------------------------------------------------------------------------

/// How long to wait at each stage (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the 220 greeting (RFC: 5 minutes).
    pub greeting: Duration,
    /// For the reply to EHLO/LHLO, HELO, STARTTLS, AUTH and RSET
    /// (5 minutes, as for MAIL).
    pub command: Duration,
    /// For the TLS handshake after STARTTLS (2 minutes).
    pub tls_handshake: Duration,
    /// For the reply to MAIL (5 minutes).
    pub mail: Duration,
    /// For the reply to each RCPT (5 minutes).
    pub rcpt: Duration,
    /// For the 354 reply to DATA (2 minutes).
    pub data_init: Duration,
    /// For each write of message data (3 minutes).
    pub data_block: Duration,
    /// For the reply to the final dot (10 minutes).
    pub data_end: Duration,
    /// For QUIT's reply and the close (10 seconds: nothing depends on it).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Self {
            greeting: Duration::from_secs(5 * MIN),
            command: Duration::from_secs(5 * MIN),
            tls_handshake: Duration::from_secs(2 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_end: Duration::from_secs(10 * MIN),
            quit: Duration::from_secs(10),
        }
    }
}

impl Timeouts {
    /// The same timeout at every stage (tests, tight local LMTP).
    pub fn uniform(d: Duration) -> Self {
        Self {
            greeting: d,
            command: d,
            tls_handshake: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_block: d,
            data_end: d,
            quit: d,
        }
    }
}

/// Settings shared by every outbound connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our host name, sent in EHLO/LHLO/HELO. When empty or not a plain
    /// name, the local address literal (`[192.0.2.1]`) is sent instead.
    pub helo_name: String,
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait at each stage of the session.
    pub timeouts: Timeouts,
    /// Trust anchors for [`TlsMode::Require`] (see [`load_roots`]).
    pub tls_roots: Arc<RootCertStore>,
}

impl ClientConfig {
    /// A configuration with the RFC 5321 timeouts and a 30 second connect
    /// timeout.
    pub fn new(helo_name: impl Into<String>, tls_roots: Arc<RootCertStore>) -> Self {
        Self {
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            tls_roots,
        }
    }
}

/// The trust anchors for verified TLS: the Mozilla roots compiled in
/// (`webpki-roots`), plus every certificate of `extra_pem` when given (a
/// private CA, or a relay's own certificate).
pub fn load_roots(extra_pem: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_pem {
        let bad = |e: &dyn fmt::Display| ClientError::Tls(format!("{}: {e}", path.display()));
        let mut added = 0usize;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            let cert = cert.map_err(|e| bad(&e))?;
            roots.add(cert).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no certificate found"));
        }
    }
    Ok(roots)
}

/// Credentials for AUTH (RFC 4954), sent only over TLS.
#[derive(Clone)]
pub struct Credentials {
    /// The user name (authentication identity).
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One recipient of an [`OutboundMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRcpt {
    /// The address, without angle brackets.
    pub address: String,
    /// `NOTIFY=` to pass on when the server offers DSN.
    pub notify: Option<Notify>,
    /// `ORCPT=` (`addr-type;address`, not encoded) to pass on when the
    /// server offers DSN. A value without `;` is taken as `rfc822`.
    pub orcpt: Option<String>,
}

impl OutRcpt {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// One message to send in one transaction.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The reverse path without angle brackets; empty for the null
    /// reverse-path `<>` (bounces).
    pub sender: String,
    /// The recipients, in the order the results come back.
    pub recipients: Vec<OutRcpt>,
    /// `RET=` to pass on when the server offers DSN.
    pub ret: Option<Ret>,
    /// `ENVID=` (not encoded) to pass on when the server offers DSN.
    pub envid: Option<String>,
    /// The message needs SMTPUTF8 (RFC 6531). Also implied by a non-ASCII
    /// address.
    pub smtputf8: bool,
    /// The body has 8-bit content: `BODY=8BITMIME` when the server offers it.
    pub eight_bit: bool,
    /// The complete message (headers and body) with CRLF line endings,
    /// not dot-stuffed.
    pub body: Arc<Vec<u8>>,
}

/// The final status of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Accepted for delivery: the reply to the end of data (for LMTP, this
    /// recipient's own reply to it).
    Accepted(Reply),
    /// Refused: the reply to RCPT, or the reply to the end of data when
    /// that was negative. The reply code tells temporary (4xx) from
    /// permanent (5xx).
    Rejected(Reply),
}

impl RcptResult {
    /// The reply behind this result.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptResult::Accepted(r) | RcptResult::Rejected(r) => r,
        }
    }

    /// Delivered to the next hop.
    pub fn is_accepted(&self) -> bool {
        matches!(self, RcptResult::Accepted(_))
    }

    /// The best enhanced status code for a DSN or the log.
    pub fn status(&self) -> Enhanced {
        reply_status(self.reply())
    }

    /// The reply as an RFC 3464 Diagnostic-Code, e.g. `smtp; 550 5.1.1 no such user`.
    pub fn diagnostic(&self) -> String {
        reply_diagnostic(self.reply())
    }
}

/// The best enhanced status for a reply: its own enhanced code when it has
/// one of the right class, else `class.0.0`; `4.5.0` for a reply that is
/// neither 4xx nor 5xx.
pub fn reply_status(reply: &Reply) -> Enhanced {
    let class = (reply.code / 100) as u8;
    match reply.enhanced {
        Some(e) if e.0 == class && (class == 2 || class == 4 || class == 5) => e,
        _ if class == 2 => Enhanced(2, 0, 0),
        _ if class == 4 || class == 5 => Enhanced(class, 0, 0),
        _ => Enhanced(4, 5, 0),
    }
}

/// A reply as an RFC 3464 Diagnostic-Code value: `smtp; 550 5.7.1 text`,
/// the lines of a multi-line reply joined by spaces.
pub fn reply_diagnostic(reply: &Reply) -> String {
    let mut s = format!("smtp; {}", reply.code);
    if let Some(e) = reply.enhanced {
        s.push_str(&format!(" {e}"));
    }
    for line in &reply.lines {
        if !line.is_empty() {
            s.push(' ');
            s.push_str(line);
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A failure that concerns the whole transaction (or the connection).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The server did not answer (or take our data) in time; the stage
    /// names what we were waiting for.
    #[error("timed out at stage {0}")]
    Timeout(&'static str),
    /// The TLS handshake after STARTTLS failed (opportunistic mode: the
    /// caller may retry without TLS later), or the extra CA file given to
    /// [`load_roots`] is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reading or writing failed, or the server closed the connection.
    #[error("connection error: {0}")]
    Io(#[source] io::Error),
    /// The server's reply was malformed, or it answered out of protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the greeting, EHLO/HELO, STARTTLS, AUTH, MAIL or
    /// DATA, or sent 421 (closing) at any stage.
    #[error("{stage}: {reply}")]
    Reply {
        /// The stage the reply answered.
        stage: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// TLS was required and not offered, refused, or the certificate did
    /// not verify; or credentials would have gone out in plaintext.
    #[error("TLS required: {0}")]
    TlsRequired(String),
    /// The message needs SMTPUTF8 and the server does not offer it (a
    /// bounce with 5.6.7 is due).
    #[error("the message needs SMTPUTF8 and the server does not offer it")]
    NeedsSmtputf8,
    /// The server's SIZE is smaller than the message (a bounce with 5.3.4
    /// is due).
    #[error("message larger than the server's limit of {limit} octets")]
    TooBig {
        /// The server's SIZE.
        limit: u64,
    },
    /// Credentials were given but the server offers neither PLAIN nor
    /// LOGIN.
    #[error("the server offers no supported AUTH mechanism (PLAIN, LOGIN)")]
    AuthUnavailable,
    /// An envelope address holds characters that cannot go into a command
    /// (control characters, spaces, angle brackets) or a recipient is
    /// empty.
    #[error("invalid envelope address {0:?}")]
    InvalidEnvelope(String),
    /// The connection failed earlier (timeout, I/O error, 421) and cannot
    /// carry another transaction.
    #[error("connection no longer usable")]
    Unusable,
}

impl ClientError {
    /// A failure for good: a 5xx reply, [`ClientError::NeedsSmtputf8`],
    /// [`ClientError::TooBig`], [`ClientError::InvalidEnvelope`]. Anything
    /// else is worth another try later.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Reply { reply, .. } => reply.is_permanent(),
            ClientError::NeedsSmtputf8
            | ClientError::TooBig { .. }
            | ClientError::InvalidEnvelope(_) => true,
            _ => false,
        }
    }

    /// The best enhanced status code for a DSN or a deferral.
    pub fn status(&self) -> Enhanced {
        match self {
            ClientError::Connect(_) => Enhanced(4, 4, 1),
            ClientError::Timeout(_) | ClientError::Io(_) | ClientError::Unusable => {
                Enhanced(4, 4, 2)
            }
            ClientError::Tls(_) | ClientError::TlsRequired(_) => Enhanced(4, 7, 5),
            ClientError::Protocol(_) => Enhanced(4, 5, 0),
            ClientError::Reply { reply, .. } => match reply_status(reply) {
                // A positive reply where a refusal ends the session (e.g. a
                // 250 greeting) is a protocol problem.
                Enhanced(2, _, _) => Enhanced(4, 5, 0),
                e => e,
            },
            ClientError::NeedsSmtputf8 => Enhanced(5, 6, 7),
            ClientError::TooBig { .. } => Enhanced(5, 3, 4),
            ClientError::AuthUnavailable => Enhanced(4, 7, 0),
            ClientError::InvalidEnvelope(_) => Enhanced(5, 1, 3),
        }
    }

    /// The error as an RFC 3464 Diagnostic-Code value: `smtp; 550 5.7.1
    /// relay denied` for a reply, `X-Sluice; …` for anything else.
    pub fn diagnostic(&self) -> String {
        match self {
            ClientError::Reply { reply, .. } => reply_diagnostic(reply),
            other => format!("X-Sluice; {other}"),
        }
    }

    /// The server's reply, when the error is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Reply { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Reply parser (sans-IO)
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Extensions
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// DATA encoder (sans-IO)
// ---------------------------------------------------------------------------

/// Encodes a message for transfer after `DATA`: a line starting with `.`
/// gets another `.` (RFC 5321 §4.5.2), every bare LF or bare CR becomes
/// CRLF, and [`finish`](DataEncoder::finish) ends the last line and adds
/// the terminating `.`. Feed the message in pieces of any size; the output
/// is the same.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    /// At the start of a message.
    pub fn new() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Encode the next piece of the message, appending to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 4);
        while let Some(&first) = input.first() {
            if self.pending_cr {
                // A CR ends the line whatever follows; a LF right after it
                // belongs to it.
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if first == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            match memchr::memchr2(b'\r', b'\n', input) {
                None => {
                    out.extend_from_slice(input);
                    return;
                }
                Some(i) => {
                    out.extend_from_slice(&input[..i]);
                    if input[i] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.line_start = true;
                    } else {
                        self.pending_cr = true;
                    }
                    input = &input[i + 1..];
                }
            }
        }
    }

    /// End the message: a CRLF if the last line lacks one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_start = true;
            out.extend_from_slice(b"\r\n");
        }
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.line_start = true;
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// Opportunistic TLS between MTAs (RFC 7435): any certificate is taken,
/// but the handshake signatures are still checked with the provider's
/// algorithms, so the session key belongs to whoever holds the
/// certificate's key.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_client_config(
    verify: bool,
    roots: &Arc<RootCertStore>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok(if verify {
        builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    })
}

/// What was negotiated on a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSummary {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The certificate was verified for the server name
    /// ([`TlsMode::Require`]).
    pub verified: bool,
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// Plain TCP, or TLS over it after STARTTLS.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Between taking the TCP stream for a handshake and getting it back.
    Closed,
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Closed => Err(not_connected()),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Closed => Err(not_connected()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Closed => Ok(()),
        }
    }
}

/// One SMTP or LMTP session with a next hop. Made by
/// [`connect`](Connection::connect), which has done the greeting,
/// EHLO/LHLO, STARTTLS and AUTH; then [`send`](Connection::send) one
/// message after another while [`is_usable`](Connection::is_usable), and
/// [`quit`](Connection::quit).
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    parser: ReplyParser,
    scratch: Vec<u8>,
    server_name: String,
    peer: SocketAddr,
    lmtp: bool,
    helo_name: String,
    greeting: Reply,
    extensions: Extensions,
    tls: Option<TlsSummary>,
    timeouts: Timeouts,
    usable: bool,
    /// MAIL was sent and the transaction has not ended: RSET before the
    /// next one.
    dirty: bool,
}

fn is_2xx(r: &Reply) -> bool {
    (200..300).contains(&r.code)
}

/// `name` when it can go into EHLO as a domain, else our address literal.
fn helo_argument(name: &str, local: Option<SocketAddr>) -> String {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        return name.to_string();
    }
    match local.map(|a| a.ip()) {
        Some(std::net::IpAddr::V4(ip)) => format!("[{ip}]"),
        Some(std::net::IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        None => "[127.0.0.1]".to_string(),
    }
}

/// An address that can go between angle brackets in a command.
fn check_address(addr: &str) -> Result<(), ClientError> {
    if addr
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>' || c == ' ')
    {
        return Err(ClientError::InvalidEnvelope(addr.to_string()));
    }
    Ok(())
}

impl Connection {
    /// Connect to `addr`, read the greeting, EHLO (LHLO when `lmtp`; HELO
    /// if EHLO is refused), STARTTLS as `tls` says, then AUTH when `auth`
    /// is given (only over TLS). `server_name` is the host name the
    /// certificate must match in [`TlsMode::Require`], and the SNI.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: TlsMode,
        lmtp: bool,
        auth: Option<&Credentials>,
        cfg: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let tcp = match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ClientError::Timeout("connect")),
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        // Commands are small and replies are awaited: no Nagle delays.
        let _ = tcp.set_nodelay(true);
        let helo_name = helo_argument(&cfg.helo_name, tcp.local_addr().ok());
        let mut c = Connection {
            stream: Stream::Plain(tcp),
            parser: ReplyParser::new(),
            scratch: vec![0; READ_CHUNK],
            server_name: server_name.to_string(),
            peer: addr,
            lmtp,
            helo_name,
            greeting: Reply::plain(220, ""),
            extensions: Extensions::default(),
            tls: None,
            timeouts: cfg.timeouts,
            usable: true,
            dirty: false,
        };
        let greeting = c.read_reply("greeting", c.timeouts.greeting).await?;
        if greeting.code != 220 {
            c.usable = false;
            return Err(ClientError::Reply {
                stage: "greeting",
                reply: greeting,
            });
        }
        c.greeting = greeting;
        c.hello().await?;
        match tls {
            TlsMode::None => {}
            TlsMode::Opportunistic => {
                if c.extensions.starttls {
                    c.starttls(false, &cfg.tls_roots).await?;
                }
            }
            TlsMode::Require => {
                if !c.extensions.starttls {
                    c.usable = false;
                    return Err(ClientError::TlsRequired(format!(
                        "{} does not offer STARTTLS",
                        c.server_name
                    )));
                }
                c.starttls(true, &cfg.tls_roots).await?;
            }
        }
        if let Some(creds) = auth {
            c.authenticate(creds).await?;
        }
        Ok(c)
    }

    /// The name the connection was made for.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The address connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Speaking LMTP rather than SMTP.
    pub fn is_lmtp(&self) -> bool {
        self.lmtp
    }

    /// The server's 220 greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// What the server offers (from the last EHLO/LHLO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// TLS is active (after STARTTLS).
    pub fn tls_active(&self) -> bool {
        self.tls.is_some()
    }

    /// What TLS negotiated, when active.
    pub fn tls(&self) -> Option<&TlsSummary> {
        self.tls.as_ref()
    }

    /// The connection can carry another transaction: false after a
    /// timeout, an I/O or protocol error, or a 421.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Send one message in one transaction with all its recipients.
    /// Returns one [`RcptResult`] per recipient, in order; an error means
    /// the whole transaction failed (see [`ClientError::is_permanent`]).
    /// A failed transaction is reset (RSET) so the connection can carry
    /// the next one while [`is_usable`](Connection::is_usable).
    pub async fn send(&mut self, msg: &OutboundMessage) -> Result<Vec<RcptResult>, ClientError> {
        if !self.usable {
            return Err(ClientError::Unusable);
        }
        let result = self.transaction(msg).await;
        if self.usable && self.dirty {
            self.dirty = false;
            match self
                .command("RSET\r\n", "rset", self.timeouts.command)
                .await
            {
                Ok(r) if is_2xx(&r) => {}
                _ => self.usable = false,
            }
        }
        result
    }

    /// Say QUIT (when the session is still in order), wait briefly for the
    /// reply, and close.
    pub async fn quit(mut self) {
        let t = self.timeouts.quit;
        if self.usable {
            let _ = self.command("QUIT\r\n", "quit", t).await;
        }
        let _ = timeout(t, self.stream.shutdown()).await;
    }

    // -- I/O -----------------------------------------------------------

    /// Read one reply within `limit`. A 421 marks the connection unusable
    /// (the server is closing); any error does too.
    async fn read_reply(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => {
                    tracing::trace!(server = %self.server_name, stage, reply = %r, "reply");
                    if r.code == 421 {
                        self.usable = false;
                    }
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => {
                    self.usable = false;
                    return Err(ClientError::Protocol(e.to_string()));
                }
            }
            let n = match timeout_at(deadline, self.stream.read(&mut self.scratch)).await {
                Err(_) => {
                    self.usable = false;
                    return Err(ClientError::Timeout(stage));
                }
                Ok(Err(e)) => {
                    self.usable = false;
                    return Err(ClientError::Io(e));
                }
                Ok(Ok(0)) => {
                    self.usable = false;
                    return Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed by the server at stage {stage}"),
                    )));
                }
                Ok(Ok(n)) => n,
            };
            self.parser.push(&self.scratch[..n]);
        }
    }

    async fn write(
        &mut self,
        stage: &'static str,
        limit: Duration,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        match timeout(limit, self.stream.write_all(bytes)).await {
            Err(_) => {
                self.usable = false;
                Err(ClientError::Timeout(stage))
            }
            Ok(Err(e)) => {
                self.usable = false;
                Err(ClientError::Io(e))
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        self.write(stage, limit, line.as_bytes()).await?;
        self.read_reply(stage, limit).await
    }

    // -- session setup -------------------------------------------------

    /// EHLO (or LHLO), falling back to HELO on a 5xx for SMTP.
    async fn hello(&mut self) -> Result<(), ClientError> {
        let t = self.timeouts.command;
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}\r\n", self.helo_name);
        let r = self.command(&line, "ehlo", t).await?;
        if is_2xx(&r) {
            self.extensions = Extensions::parse(&r);
            return Ok(());
        }
        if self.lmtp || !r.is_permanent() {
            return Err(ClientError::Reply {
                stage: "ehlo",
                reply: r,
            });
        }
        let line = format!("HELO {}\r\n", self.helo_name);
        let r = self.command(&line, "helo", t).await?;
        if !is_2xx(&r) {
            return Err(ClientError::Reply {
                stage: "helo",
                reply: r,
            });
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    /// STARTTLS, the handshake, and EHLO again. `verify`: the certificate
    /// must verify for the server name ([`TlsMode::Require`]).
    async fn starttls(
        &mut self,
        verify: bool,
        roots: &Arc<RootCertStore>,
    ) -> Result<(), ClientError> {
        let t = self.timeouts;
        let r = self.command("STARTTLS\r\n", "starttls", t.command).await?;
        if r.code != 220 {
            if r.code == 421 {
                return Err(ClientError::Reply {
                    stage: "starttls",
                    reply: r,
                });
            }
            if verify {
                return Err(ClientError::TlsRequired(format!(
                    "{} refused STARTTLS: {r}",
                    self.server_name
                )));
            }
            // Opportunistic: the session goes on in plaintext.
            tracing::info!(server = %self.server_name, reply = %r, "STARTTLS refused; continuing without TLS");
            return Ok(());
        }
        // Anything the server sent after its 220 came in plaintext and
        // must not be taken as a reply inside TLS.
        let dropped = self.parser.discard_buffered();
        if dropped > 0 {
            tracing::warn!(server = %self.server_name, bytes = dropped, "discarded plaintext sent after the STARTTLS reply");
        }
        let fail = |msg: String| {
            if verify {
                ClientError::TlsRequired(msg)
            } else {
                ClientError::Tls(msg)
            }
        };
        let name = self.server_name.trim_end_matches('.');
        let server_name = match ServerName::try_from(name.to_string()) {
            Ok(n) => n,
            Err(_) if !verify => ServerName::IpAddress(self.peer.ip().into()),
            Err(_) => {
                self.usable = false;
                return Err(fail(format!("{name:?} is not a valid server name")));
            }
        };
        let config = match tls_client_config(verify, roots) {
            Ok(c) => c,
            Err(e) => {
                self.usable = false;
                return Err(fail(e.to_string()));
            }
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            self.usable = false;
            return Err(ClientError::Protocol("STARTTLS on a TLS connection".into()));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = match timeout(t.tls_handshake, connector.connect(server_name, tcp)).await {
            Err(_) => {
                self.usable = false;
                return Err(ClientError::Timeout("starttls"));
            }
            Ok(Err(e)) => {
                self.usable = false;
                return Err(fail(format!("handshake with {}: {e}", self.server_name)));
            }
            Ok(Ok(s)) => s,
        };
        let (_, conn) = tls.get_ref();
        self.tls = Some(TlsSummary {
            version: conn
                .protocol_version()
                .map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
            verified: verify,
        });
        self.stream = Stream::Tls(Box::new(tls));
        // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
        self.extensions = Extensions::default();
        self.hello().await
    }

    /// AUTH PLAIN (preferred) or LOGIN, over TLS only.
    async fn authenticate(&mut self, creds: &Credentials) -> Result<(), ClientError> {
        if self.tls.is_none() {
            return Err(ClientError::TlsRequired(
                "refusing to send credentials in plaintext".into(),
            ));
        }
        let t = self.timeouts.command;
        let has = |m: &str| self.extensions.auth.iter().any(|a| a == m);
        let r = if has("PLAIN") {
            let mut raw = Vec::with_capacity(creds.username.len() + creds.password.len() + 2);
            raw.push(0);
            raw.extend_from_slice(creds.username.as_bytes());
            raw.push(0);
            raw.extend_from_slice(creds.password.as_bytes());
            let line = format!("AUTH PLAIN {}\r\n", base64::encode(&raw));
            self.command(&line, "auth", t).await?
        } else if has("LOGIN") {
            let mut r = self.command("AUTH LOGIN\r\n", "auth", t).await?;
            for secret in [&creds.username, &creds.password] {
                if r.code != 334 {
                    break;
                }
                let line = format!("{}\r\n", base64::encode(secret.as_bytes()));
                r = self.command(&line, "auth", t).await?;
            }
            r
        } else {
            return Err(ClientError::AuthUnavailable);
        };
        match r.code {
            235 => Ok(()),
            334 => {
                // A challenge we did not expect: cancel the exchange.
                let _ = self.command("*\r\n", "auth", t).await?;
                self.usable = false;
                Err(ClientError::Protocol("unexpected AUTH challenge".into()))
            }
            _ => Err(ClientError::Reply {
                stage: "auth",
                reply: r,
            }),
        }
    }

    // -- transactions --------------------------------------------------

    fn mail_command(&self, msg: &OutboundMessage, utf8: bool) -> String {
        let ext = &self.extensions;
        let mut s = format!("MAIL FROM:<{}>", msg.sender);
        if ext.size.is_some() {
            s.push_str(&format!(" SIZE={}", msg.body.len()));
        }
        if msg.eight_bit && ext.eight_bit_mime {
            s.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            s.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            match msg.ret {
                Some(Ret::Full) => s.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => s.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(id) = &msg.envid {
                s.push_str(" ENVID=");
                s.push_str(&xtext_encode(id));
            }
        }
        s.push_str("\r\n");
        s
    }

    fn rcpt_command(&self, rcpt: &OutRcpt) -> String {
        let mut s = format!("RCPT TO:<{}>", rcpt.address);
        if self.extensions.dsn {
            if let Some(n) = rcpt.notify {
                s.push_str(" NOTIFY=");
                s.push_str(&n.to_param());
            }
            if let Some(o) = &rcpt.orcpt {
                let o = if o.contains(';') {
                    o.clone()
                } else {
                    format!("rfc822;{o}")
                };
                s.push_str(" ORCPT=");
                s.push_str(&xtext_encode(&o));
            }
        }
        s.push_str("\r\n");
        s
    }

    async fn transaction(&mut self, msg: &OutboundMessage) -> Result<Vec<RcptResult>, ClientError> {
        check_address(&msg.sender)?;
        for r in &msg.recipients {
            if r.address.is_empty() {
                return Err(ClientError::InvalidEnvelope(String::new()));
            }
            check_address(&r.address)?;
        }
        if msg.recipients.is_empty() {
            return Ok(Vec::new());
        }
        let utf8 = msg.smtputf8
            || !msg.sender.is_ascii()
            || msg.recipients.iter().any(|r| !r.address.is_ascii());
        if utf8 && !self.extensions.smtputf8 {
            return Err(ClientError::NeedsSmtputf8);
        }
        if let Some(limit) = self.extensions.size
            && limit > 0
            && msg.body.len() as u64 > limit
        {
            return Err(ClientError::TooBig { limit });
        }
        let mail = self.mail_command(msg, utf8);
        let rcpts: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| self.rcpt_command(r))
            .collect();
        if self.extensions.pipelining {
            self.pipelined(msg, &mail, &rcpts).await
        } else {
            self.lockstep(msg, &mail, &rcpts).await
        }
    }

    /// RFC 2920: MAIL, every RCPT and DATA in one write, then the replies
    /// in order.
    async fn pipelined(
        &mut self,
        msg: &OutboundMessage,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Vec<RcptResult>, ClientError> {
        let t = self.timeouts;
        let mut batch =
            String::with_capacity(mail.len() + rcpts.iter().map(String::len).sum::<usize>() + 6);
        batch.push_str(mail);
        for r in rcpts {
            batch.push_str(r);
        }
        batch.push_str("DATA\r\n");
        self.dirty = true;
        self.write("mail", t.mail, batch.as_bytes()).await?;

        let mail_reply = self.read_reply("mail", t.mail).await?;
        if mail_reply.code == 421 {
            return Err(ClientError::Reply {
                stage: "mail",
                reply: mail_reply,
            });
        }
        let mut results = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            let r = self.read_reply("rcpt", t.rcpt).await?;
            if r.code == 421 {
                return Err(ClientError::Reply {
                    stage: "rcpt",
                    reply: r,
                });
            }
            results.push(if is_2xx(&r) {
                RcptResult::Accepted(r)
            } else {
                RcptResult::Rejected(r)
            });
        }
        let data_reply = self.read_reply("data", t.data_init).await?;
        if data_reply.code == 421 {
            return Err(ClientError::Reply {
                stage: "data",
                reply: data_reply,
            });
        }
        let mail_ok = is_2xx(&mail_reply);
        let any_accepted = mail_ok && results.iter().any(RcptResult::is_accepted);
        if data_reply.code == 354 {
            if any_accepted {
                return self.transfer(msg, results).await;
            }
            // RFC 2920 §3.1: DATA was accepted although nothing before it
            // was; end the empty message with a lone dot. The transaction
            // stays dirty, so RSET follows.
            self.write("data", t.data_block, b".\r\n").await?;
            if self.lmtp {
                // An LMTP server must refuse DATA here (RFC 2033 §4.2) and
                // owes no reply per recipient; with one this far off
                // protocol, end the session rather than guess.
                self.usable = false;
            } else {
                let r = self.read_reply("data-end", t.data_end).await?;
                if r.code == 421 {
                    return Err(ClientError::Reply {
                        stage: "data-end",
                        reply: r,
                    });
                }
            }
        }
        if !mail_ok {
            return Err(ClientError::Reply {
                stage: "mail",
                reply: mail_reply,
            });
        }
        if !any_accepted {
            return Ok(results);
        }
        Err(ClientError::Reply {
            stage: "data",
            reply: data_reply,
        })
    }

    /// One command, one reply.
    async fn lockstep(
        &mut self,
        msg: &OutboundMessage,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Vec<RcptResult>, ClientError> {
        let t = self.timeouts;
        self.dirty = true;
        let r = self.command(mail, "mail", t.mail).await?;
        if !is_2xx(&r) {
            return Err(ClientError::Reply {
                stage: "mail",
                reply: r,
            });
        }
        let mut results = Vec::with_capacity(rcpts.len());
        for line in rcpts {
            let r = self.command(line, "rcpt", t.rcpt).await?;
            if r.code == 421 {
                return Err(ClientError::Reply {
                    stage: "rcpt",
                    reply: r,
                });
            }
            results.push(if is_2xx(&r) {
                RcptResult::Accepted(r)
            } else {
                RcptResult::Rejected(r)
            });
        }
        if !results.iter().any(RcptResult::is_accepted) {
            return Ok(results);
        }
        let r = self.command("DATA\r\n", "data", t.data_init).await?;
        if r.code != 354 {
            return Err(ClientError::Reply {
                stage: "data",
                reply: r,
            });
        }
        self.transfer(msg, results).await
    }

    /// Send the message after a 354 and read the final reply (SMTP) or
    /// one reply per accepted recipient (LMTP).
    async fn transfer(
        &mut self,
        msg: &OutboundMessage,
        mut results: Vec<RcptResult>,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let t = self.timeouts;
        let mut enc = DataEncoder::new();
        let mut buf = Vec::with_capacity(WRITE_CHUNK + WRITE_CHUNK / 8);
        for chunk in msg.body.chunks(WRITE_CHUNK) {
            buf.clear();
            enc.encode(chunk, &mut buf);
            self.write("data-block", t.data_block, &buf).await?;
        }
        buf.clear();
        enc.finish(&mut buf);
        self.write("data-block", t.data_block, &buf).await?;

        let accepted: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_accepted())
            .map(|(i, _)| i)
            .collect();
        if !self.lmtp {
            let r = self.read_reply("data-end", t.data_end).await?;
            self.dirty = false;
            if r.code == 421 {
                return Err(ClientError::Reply {
                    stage: "data-end",
                    reply: r,
                });
            }
            for i in accepted {
                results[i] = if is_2xx(&r) {
                    RcptResult::Accepted(r.clone())
                } else {
                    RcptResult::Rejected(r.clone())
                };
            }
            return Ok(results);
        }
        // LMTP (RFC 2033 §4.2): one reply per accepted recipient, in order.
        // Once one has come, the others may already be delivered, so a
        // later failure only defers the recipients still unanswered.
        for (k, &i) in accepted.iter().enumerate() {
            let (reply, last) = match self.read_reply("data-end", t.data_end).await {
                Ok(r) if r.code == 421 && k == 0 => {
                    return Err(ClientError::Reply {
                        stage: "data-end",
                        reply: r,
                    });
                }
                Ok(r) => {
                    let closing = r.code == 421;
                    (r, closing)
                }
                Err(e) if k == 0 => return Err(e),
                Err(e) => (
                    Reply::new(
                        451,
                        Enhanced(4, 4, 2),
                        format!("no reply for this recipient: {e}"),
                    ),
                    true,
                ),
            };
            if last {
                // The connection is gone: this reply stands for every
                // recipient still unanswered.
                for &j in &accepted[k..] {
                    results[j] = RcptResult::Rejected(reply.clone());
                }
                return Ok(results);
            }
            results[i] = if is_2xx(&reply) {
                RcptResult::Accepted(reply)
            } else {
                RcptResult::Rejected(reply)
            };
        }
        self.dirty = false;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn status_and_diagnostic() {
        let e = ClientError::Reply {
            stage: "rcpt",
            reply: Reply::new(550, Enhanced(5, 7, 1), "relay denied"),
        };
        assert!(e.is_permanent());
        assert_eq!(e.status(), Enhanced(5, 7, 1));
        assert_eq!(e.diagnostic(), "smtp; 550 5.7.1 relay denied");
        let e = ClientError::Reply {
            stage: "mail",
            reply: Reply::plain(452, "full"),
        };
        assert!(!e.is_permanent());
        assert_eq!(e.status(), Enhanced(4, 0, 0));
        let e = ClientError::Reply {
            stage: "greeting",
            reply: Reply::plain(250, "odd"),
        };
        assert_eq!(e.status(), Enhanced(4, 5, 0));
        assert!(!ClientError::Timeout("rcpt").is_permanent());
        assert_eq!(ClientError::Timeout("rcpt").status(), Enhanced(4, 4, 2));
        assert!(ClientError::NeedsSmtputf8.is_permanent());
        assert_eq!(ClientError::NeedsSmtputf8.status(), Enhanced(5, 6, 7));
        assert_eq!(ClientError::TooBig { limit: 1 }.status(), Enhanced(5, 3, 4));
        assert!(
            ClientError::Timeout("data-end")
                .diagnostic()
                .starts_with("X-Sluice; ")
        );
        let multi = Reply {
            code: 550,
            enhanced: Some(Enhanced(5, 1, 1)),
            lines: vec!["no".into(), "such user".into()],
        };
        assert_eq!(reply_diagnostic(&multi), "smtp; 550 5.1.1 no such user");
    }

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

    // -- DATA encoder ----------------------------------------------------

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = DataEncoder::new();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn data_encoding() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r\n.\r\nsmuggled", b"a\r\n..\r\nsmuggled\r\n.\r\n"),
            (b"a\n.\r\nsmuggled", b"a\r\n..\r\nsmuggled\r\n.\r\n"),
            (b"x.y\r\n", b"x.y\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
        ];
        for (input, want) in cases {
            let got = encode(&[input]);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            // Any split gives the same bytes.
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                assert_eq!(encode(&[a, b]), *want, "split at {i}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(encode(&bytes), *want);
        }
    }

    #[test]
    fn data_encoding_never_emits_bare_line_endings() {
        let input: Vec<u8> = (0u32..4000)
            .map(|i| match i.wrapping_mul(2_654_435_761) >> 29 {
                0 => b'\r',
                1 => b'\n',
                2 => b'.',
                _ => b'a',
            })
            .collect();
        let out = encode(&[&input]);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(out[i + 1], b'\n', "bare CR at {i}");
            }
        }
        assert!(out.ends_with(b"\r\n.\r\n"));
        // The only line that is a lone dot is the last one.
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\r\n.\r\n").count(), 1);
    }

    #[test]
    fn helo_argument_falls_back_to_literal() {
        let v4: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:25".parse().unwrap();
        assert_eq!(helo_argument("mx.example", Some(v4)), "mx.example");
        assert_eq!(helo_argument("", Some(v4)), "[192.0.2.1]");
        assert_eq!(helo_argument("bad name", Some(v6)), "[IPv6:2001:db8::1]");
    }

    // -- against a scripted fake server -------------------------------------

    mod fake {
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::time::Duration;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};
        use tokio::task::JoinHandle;

        /// One step of a fake server's script.
        #[derive(Debug, Clone)]
        pub(super) enum Step {
            /// Write these bytes in one write.
            Say(&'static str),
            /// Read one line; it must start with this.
            Hear(&'static str),
            /// Read one line that must start with this and that arrived
            /// alone (no other command already sent behind it).
            HearAlone(&'static str),
            /// Read message data up to the lone dot; recorded as
            /// `DATA:<bytes>`.
            HearData,
            /// TLS handshake as the server; the script ends quietly if
            /// it fails.
            Tls,
            /// Do nothing for this long.
            Sleep(Duration),
        }

        enum Io {
            Plain(TcpStream),
            Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
            Gone,
        }

        struct Conn {
            io: Io,
            buf: Vec<u8>,
            seen: Vec<String>,
        }

        const LIMIT: Duration = Duration::from_secs(10);

        impl Conn {
            async fn fill(&mut self) {
                let mut tmp = [0u8; 4096];
                let read = async {
                    match &mut self.io {
                        Io::Plain(s) => s.read(&mut tmp).await,
                        Io::Tls(s) => s.read(&mut tmp).await,
                        Io::Gone => unreachable!(),
                    }
                };
                let n = tokio::time::timeout(LIMIT, read)
                    .await
                    .expect("fake server: client silent")
                    .expect("fake server: read");
                assert!(n > 0, "fake server: client closed; saw {:?}", self.seen);
                self.buf.extend_from_slice(&tmp[..n]);
            }

            async fn line(&mut self) -> String {
                loop {
                    if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.buf.drain(..=i).collect();
                        let s = String::from_utf8_lossy(&line).into_owned();
                        assert!(s.ends_with("\r\n"), "bare LF from client: {s:?}");
                        return s.trim_end_matches("\r\n").to_string();
                    }
                    self.fill().await;
                }
            }

            async fn say(&mut self, s: &str) {
                let r = match &mut self.io {
                    Io::Plain(t) => t.write_all(s.as_bytes()).await,
                    Io::Tls(t) => match t.write_all(s.as_bytes()).await {
                        Ok(()) => t.flush().await,
                        Err(e) => Err(e),
                    },
                    Io::Gone => unreachable!(),
                };
                r.expect("fake server: write");
            }
        }

        /// A server on 127.0.0.1:0 that serves one connection by `script`
        /// and returns what it heard.
        pub(super) async fn serve(
            script: Vec<Step>,
            tls: Option<Arc<rustls::ServerConfig>>,
        ) -> (SocketAddr, JoinHandle<Vec<String>>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handle = tokio::spawn(async move {
                let (tcp, _) = tokio::time::timeout(LIMIT, listener.accept())
                    .await
                    .expect("fake server: no client")
                    .unwrap();
                let mut c = Conn {
                    io: Io::Plain(tcp),
                    buf: Vec::new(),
                    seen: Vec::new(),
                };
                for step in script {
                    match step {
                        Step::Say(s) => c.say(s).await,
                        Step::Hear(want) | Step::HearAlone(want) => {
                            let alone = matches!(step, Step::HearAlone(_));
                            let line = c.line().await;
                            assert!(
                                line.starts_with(want),
                                "fake server: wanted {want:?}, heard {line:?}; saw {:?}",
                                c.seen
                            );
                            if alone {
                                // Give a pipelining client time to have sent more.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let more = match &mut c.io {
                                    Io::Plain(s) => {
                                        let mut b = [0u8; 1];
                                        s.try_read(&mut b).unwrap_or(0)
                                    }
                                    _ => 0,
                                };
                                assert!(
                                    c.buf.is_empty() && more == 0,
                                    "fake server: {line:?} was pipelined"
                                );
                            }
                            c.seen.push(line);
                        }
                        Step::HearData => {
                            let mut data = String::new();
                            loop {
                                let line = c.line().await;
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push_str("\r\n");
                            }
                            c.seen.push(format!("DATA:{data}"));
                        }
                        Step::Tls => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(
                                tls.clone().expect("fake server: no TLS config"),
                            );
                            assert!(c.buf.is_empty(), "client pipelined past STARTTLS");
                            let Io::Plain(tcp) = std::mem::replace(&mut c.io, Io::Gone) else {
                                panic!("fake server: TLS twice");
                            };
                            match tokio::time::timeout(LIMIT, acceptor.accept(tcp)).await {
                                Ok(Ok(s)) => c.io = Io::Tls(Box::new(s)),
                                _ => {
                                    c.seen.push("TLS-FAILED".into());
                                    return c.seen;
                                }
                            }
                        }
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                    }
                }
                c.seen
            });
            (addr, handle)
        }
    }

    use fake::Step::{self, Hear, HearAlone, HearData, Say, Sleep};

    const GREET: Step = Say("220 fake.test ESMTP\r\n");
    const EHLO_PIPE: &str = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n\
        250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";
    const EHLO_PLAIN: &str = "250-fake.test\r\n250 8BITMIME\r\n";

    fn cfg(t: Duration) -> ClientConfig {
        let mut c = ClientConfig::new("client.test", Arc::new(load_roots(None).unwrap()));
        c.connect_timeout = Duration::from_secs(5);
        c.timeouts = Timeouts::uniform(t);
        c
    }

    fn cfg5() -> ClientConfig {
        cfg(Duration::from_secs(5))
    }

    fn msg(rcpts: &[&str]) -> OutboundMessage {
        OutboundMessage {
            sender: "a@src.test".into(),
            recipients: rcpts.iter().map(|r| OutRcpt::new(*r)).collect(),
            ret: None,
            envid: None,
            smtputf8: false,
            eight_bit: false,
            body: Arc::new(b"Subject: t\r\n\r\nhello\r\n".to_vec()),
        }
    }

    async fn connect(addr: SocketAddr, tls: TlsMode, lmtp: bool, cfg: &ClientConfig) -> Connection {
        Connection::connect(addr, "fake.test", tls, lmtp, None, cfg)
            .await
            .expect("connect")
    }

    async fn done(h: tokio::task::JoinHandle<Vec<String>>) -> Vec<String> {
        timeout(Duration::from_secs(15), h)
            .await
            .expect("fake server hangs")
            .expect("fake server failed")
    }

    fn codes(r: &[RcptResult]) -> Vec<(bool, u16)> {
        r.iter()
            .map(|r| (r.is_accepted(), r.reply().code))
            .collect()
    }

    #[tokio::test]
    async fn happy_path_pipelined() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO client.test"),
                Say(EHLO_PIPE),
                // Nothing is answered until all of MAIL, RCPT, RCPT, DATA
                // came: a lockstep client would time out here.
                Hear("MAIL FROM:<a@src.test> SIZE=21"),
                Hear("RCPT TO:<b@dst.test>"),
                Hear("RCPT TO:<c@dst.test>"),
                Hear("DATA"),
                Say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
                HearData,
                Say("250 2.0.0 queued as X\r\n"),
                Hear("QUIT"),
                Say("221 bye\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
        assert!(c.extensions().pipelining);
        assert!(!c.tls_active());
        let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
        assert_eq!(codes(&r), [(true, 250), (true, 250)]);
        assert_eq!(r[0].reply().lines, ["queued as X"]);
        assert_eq!(r[0].status(), Enhanced(2, 0, 0));
        assert!(c.is_usable());
        c.quit().await;
        let seen = done(h).await;
        assert_eq!(seen[5], "DATA:Subject: t\r\n\r\nhello\r\n");
    }

    #[tokio::test]
    async fn lockstep_without_pipelining_and_body_encoding() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PLAIN),
                HearAlone("MAIL FROM:<a@src.test>"),
                Say("250 ok\r\n"),
                HearAlone("RCPT TO:<b@dst.test>"),
                Say("250 ok\r\n"),
                HearAlone("DATA"),
                Say("354 go\r\n"),
                HearData,
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
        let mut m = msg(&["b@dst.test"]);
        m.eight_bit = true;
        m.body = Arc::new(b"S: x\n\n.line\r\nbare\rcr\r\n.\r\nend".to_vec());
        let r = c.send(&m).await.unwrap();
        assert_eq!(codes(&r), [(true, 250)]);
        let seen = done(h).await;
        // No SIZE offered: none sent; 8BITMIME offered: BODY sent.
        assert_eq!(seen[1], "MAIL FROM:<a@src.test> BODY=8BITMIME");
        assert_eq!(
            seen[4],
            "DATA:S: x\r\n\r\n..line\r\nbare\r\ncr\r\n..\r\nend\r\n"
        );
    }

    #[tokio::test]
    async fn ehlo_rejected_falls_back_to_helo() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO client.test"),
                Say("502 5.5.1 what\r\n"),
                Hear("HELO client.test"),
                Say("250 fake.test\r\n"),
                HearAlone("MAIL FROM:<>"),
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(
            addr,
            TlsMode::Opportunistic,
            false,
            &cfg(Duration::from_millis(500)),
        )
        .await;
        assert_eq!(*c.extensions(), Extensions::default());
        let mut m = msg(&["b@dst.test"]);
        m.sender = String::new();
        m.eight_bit = true;
        // The script ends after MAIL: the client's RCPT goes nowhere.
        let e = c.send(&m).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout("rcpt") | ClientError::Io(_)),
            "{e:?}"
        );
        let seen = done(h).await;
        assert_eq!(seen[2], "MAIL FROM:<>");
    }

    #[tokio::test]
    async fn greeting_refused() {
        let (addr, h) = fake::serve(vec![Say("554 5.7.1 go away\r\n")], None).await;
        let e = Connection::connect(addr, "fake.test", TlsMode::None, false, None, &cfg5())
            .await
            .unwrap_err();
        assert!(matches!(&e, ClientError::Reply { stage: "greeting", reply } if reply.code == 554));
        assert!(e.is_permanent());
        done(h).await;
    }

    #[tokio::test]
    async fn one_rcpt_rejected() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT TO:<b@"),
                Hear("RCPT TO:<c@"),
                Hear("RCPT TO:<d@"),
                Hear("DATA"),
                Say("250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n452 4.2.2 full\r\n354 go\r\n"),
                HearData,
                Say("250 2.0.0 done\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let r = c
            .send(&msg(&["b@dst.test", "c@dst.test", "d@dst.test"]))
            .await
            .unwrap();
        assert_eq!(codes(&r), [(false, 550), (true, 250), (false, 452)]);
        assert_eq!(r[0].status(), Enhanced(5, 1, 1));
        assert_eq!(r[0].diagnostic(), "smtp; 550 5.1.1 no such user");
        assert_eq!(r[1].reply().lines, ["done"]);
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn all_rcpts_rejected_pipelined_data_354() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n354 go anyway\r\n"),
                // The lone dot, not the message.
                Hear("."),
                Say("554 5.5.1 no valid recipients\r\n"),
                Hear("RSET"),
                Say("250 ok\r\n"),
                // The connection is still good for another message.
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
        assert_eq!(codes(&r), [(false, 550), (false, 550)]);
        assert!(c.is_usable());
        let r = c.send(&msg(&["e@dst.test"])).await.unwrap();
        assert_eq!(codes(&r), [(true, 250)]);
        let seen = done(h).await;
        assert_eq!(seen[5], ".");
    }

    #[tokio::test]
    async fn all_rcpts_rejected_pipelined_data_503() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n450 4.2.1 later\r\n503 5.5.1 no recipients\r\n"),
                Hear("RSET"),
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
        assert_eq!(codes(&r), [(false, 450)]);
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn mail_rejected_pipelined_then_reset() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("550 5.7.1 sender denied\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"),
                Hear("RSET"),
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
        assert!(matches!(&e, ClientError::Reply { stage: "mail", reply } if reply.code == 550));
        assert!(e.is_permanent());
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn data_rejected() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PLAIN),
                Hear("MAIL"),
                Say("250 ok\r\n"),
                Hear("RCPT"),
                Say("250 ok\r\n"),
                Hear("DATA"),
                Say("451 4.3.0 not now\r\n"),
                Hear("RSET"),
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
        assert!(matches!(&e, ClientError::Reply { stage: "data", reply } if reply.code == 451));
        assert!(!e.is_permanent());
        assert_eq!(e.status(), Enhanced(4, 3, 0));
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn final_reply_rejects_accepted_recipients() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n"),
                HearData,
                Say("554 5.7.1 spam\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
        assert_eq!(codes(&r), [(false, 554), (false, 550)]);
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn reply_421_mid_session() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n421 4.3.2 shutting down\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let e = c
            .send(&msg(&["b@dst.test", "c@dst.test"]))
            .await
            .unwrap_err();
        assert!(matches!(&e, ClientError::Reply { stage: "rcpt", reply } if reply.code == 421));
        assert!(!e.is_permanent());
        assert!(!c.is_usable());
        assert!(matches!(
            c.send(&msg(&["b@dst.test"])).await,
            Err(ClientError::Unusable)
        ));
        // No QUIT or RSET on a closing connection: the script has no step for it.
        c.quit().await;
        done(h).await;
    }

    #[tokio::test]
    async fn size_too_big_and_smtputf8_missing() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say("250-fake.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"),
                // Neither message produces a command.
                Hear("QUIT"),
                Say("221 bye\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
        assert!(matches!(e, ClientError::TooBig { limit: 10 }));
        assert!(e.is_permanent());
        let mut m = msg(&["b@dst.test"]);
        m.body = Arc::new(b"x".to_vec());
        m.smtputf8 = true;
        assert!(matches!(c.send(&m).await, Err(ClientError::NeedsSmtputf8)));
        // A non-ASCII address needs it too.
        let mut m = msg(&["bö@dst.test"]);
        m.body = Arc::new(b"x".to_vec());
        assert!(matches!(c.send(&m).await, Err(ClientError::NeedsSmtputf8)));
        assert!(c.is_usable());
        c.quit().await;
        done(h).await;
    }

    #[tokio::test]
    async fn smtputf8_and_dsn_params_passed() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say("250-fake.test\r\n250-PIPELINING\r\n250-DSN\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let mut m = msg(&[]);
        m.sender = "ä@src.test".into();
        m.ret = Some(Ret::Hdrs);
        m.envid = Some("id 1+x".into());
        m.recipients = vec![
            OutRcpt {
                address: "b@dst.test".into(),
                notify: Some(Notify {
                    success: true,
                    failure: true,
                    delay: false,
                }),
                orcpt: Some("rfc822;B@dst.test".into()),
            },
            OutRcpt {
                address: "c@dst.test".into(),
                notify: Some(Notify {
                    success: false,
                    failure: false,
                    delay: false,
                }),
                orcpt: Some("c=x@dst.test".into()),
            },
        ];
        c.send(&m).await.unwrap();
        let seen = done(h).await;
        assert_eq!(
            seen[1],
            "MAIL FROM:<ä@src.test> SMTPUTF8 RET=HDRS ENVID=id+201+2Bx"
        );
        assert_eq!(
            seen[2],
            "RCPT TO:<b@dst.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@dst.test"
        );
        assert_eq!(
            seen[3],
            "RCPT TO:<c@dst.test> NOTIFY=NEVER ORCPT=rfc822;c+3Dx@dst.test"
        );
    }

    #[tokio::test]
    async fn dsn_params_withheld_without_dsn() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PLAIN),
                Hear("MAIL"),
                Say("250 ok\r\n"),
                Hear("RCPT"),
                Say("550 no\r\n"),
                Hear("RSET"),
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let mut m = msg(&["b@dst.test"]);
        m.ret = Some(Ret::Full);
        m.envid = Some("x".into());
        m.recipients[0].orcpt = Some("rfc822;b@dst.test".into());
        let r = c.send(&m).await.unwrap();
        assert_eq!(codes(&r), [(false, 550)]);
        let seen = done(h).await;
        assert_eq!(seen[1], "MAIL FROM:<a@src.test>");
        assert_eq!(seen[2], "RCPT TO:<b@dst.test>");
    }

    #[tokio::test]
    async fn invalid_envelope_refused_locally() {
        let (addr, h) = fake::serve(vec![GREET, Hear("EHLO"), Say(EHLO_PIPE)], None).await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        for bad in ["a@b>\r\nRSET", "a b@c", ""] {
            let e = c.send(&msg(&[bad])).await.unwrap_err();
            assert!(matches!(e, ClientError::InvalidEnvelope(_)), "{bad:?}");
        }
        assert!(c.send(&msg(&[])).await.unwrap().is_empty());
        done(h).await;
    }

    #[tokio::test]
    async fn lmtp_per_recipient_replies() {
        let (addr, h) = fake::serve(
            vec![
                Say("220 lmtp.test LMTP\r\n"),
                Hear("LHLO client.test"),
                Say("250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"),
                Hear("MAIL"),
                Hear("RCPT TO:<b@"),
                Hear("RCPT TO:<c@"),
                Hear("RCPT TO:<d@"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 2.0.0 b delivered\r\n452 4.2.2 d over quota\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, true, &cfg5()).await;
        assert!(c.is_lmtp());
        let r = c
            .send(&msg(&["b@dst.test", "c@dst.test", "d@dst.test"]))
            .await
            .unwrap();
        assert_eq!(codes(&r), [(true, 250), (false, 550), (false, 452)]);
        assert_eq!(r[0].reply().lines, ["b delivered"]);
        assert_eq!(r[2].reply().lines, ["d over quota"]);
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn lmtp_connection_lost_after_first_reply() {
        let (addr, h) = fake::serve(
            vec![
                Say("220 lmtp.test LMTP\r\n"),
                Hear("LHLO"),
                Say("250-lmtp.test\r\n250 PIPELINING\r\n"),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 2.0.0 b delivered\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, true, &cfg(Duration::from_millis(500))).await;
        let r = c.send(&msg(&["b@dst.test", "c@dst.test"])).await.unwrap();
        // b is delivered and must not be sent again; c is deferred.
        assert_eq!(codes(&r), [(true, 250), (false, 451)]);
        assert!(!c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn connection_reuse() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PLAIN),
                Hear("MAIL FROM:<a@src.test>"),
                Say("250 ok\r\n"),
                Hear("RCPT TO:<b@"),
                Say("250 ok\r\n"),
                Hear("DATA"),
                Say("354 go\r\n"),
                HearData,
                Say("250 first\r\n"),
                // No RSET between successful transactions.
                Hear("MAIL FROM:<z@src.test>"),
                Say("250 ok\r\n"),
                Hear("RCPT TO:<c@"),
                Say("250 ok\r\n"),
                Hear("DATA"),
                Say("354 go\r\n"),
                HearData,
                Say("250 second\r\n"),
                Hear("QUIT"),
                Say("221 bye\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
        assert_eq!(r[0].reply().lines, ["first"]);
        let mut m = msg(&["c@dst.test"]);
        m.sender = "z@src.test".into();
        m.body = Arc::new(b"second message\r\n".to_vec());
        let r = c.send(&m).await.unwrap();
        assert_eq!(r[0].reply().lines, ["second"]);
        c.quit().await;
        let seen = done(h).await;
        assert_eq!(seen[8], "DATA:second message\r\n");
    }

    #[tokio::test]
    async fn timeouts_are_bounded() {
        // A server that never greets.
        let (addr, h) = fake::serve(vec![Sleep(Duration::from_secs(5))], None).await;
        let start = std::time::Instant::now();
        let e = Connection::connect(
            addr,
            "fake.test",
            TlsMode::None,
            false,
            None,
            &cfg(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ClientError::Timeout("greeting")), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(!e.is_permanent());
        h.abort();

        // A server that goes silent after the message.
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_PIPE),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Sleep(Duration::from_secs(5)),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg(Duration::from_millis(300))).await;
        let start = std::time::Instant::now();
        let e = c.send(&msg(&["b@dst.test"])).await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout("data-end")), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(!c.is_usable());
        c.quit().await;
        h.abort();
    }

    #[tokio::test]
    async fn malformed_reply_is_protocol_error() {
        let (addr, h) = fake::serve(vec![Say("hello there\r\n")], None).await;
        let e = Connection::connect(addr, "fake.test", TlsMode::None, false, None, &cfg5())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
        done(h).await;
    }

    #[tokio::test]
    async fn connect_refused() {
        // Bind and drop to find a port nothing listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = Connection::connect(addr, "x", TlsMode::None, false, None, &cfg5())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e:?}");
        assert_eq!(e.status(), Enhanced(4, 4, 1));
    }

    // -- TLS ---------------------------------------------------------------

    struct TestCert {
        server: Arc<rustls::ServerConfig>,
        pem: String,
    }

    fn test_cert(name: &str) -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        TestCert {
            server: Arc::new(server),
            pem: ck.cert.pem(),
        }
    }

    const EHLO_TLS: &str = "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

    fn tls_script(after_starttls: &'static str) -> Vec<Step> {
        vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_TLS),
            Hear("STARTTLS"),
            Say(after_starttls),
            Step::Tls,
            Hear("EHLO client.test"),
            Say("250-fake.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"),
            Hear("MAIL"),
            Hear("RCPT"),
            Hear("DATA"),
            Say("250 ok\r\n250 ok\r\n354 go\r\n"),
            HearData,
            Say("250 2.0.0 over tls\r\n"),
        ]
    }

    #[tokio::test]
    async fn starttls_opportunistic_self_signed() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(tls_script("220 2.0.0 go ahead\r\n"), Some(cert.server)).await;
        let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
        assert!(c.tls_active());
        assert!(!c.tls().unwrap().verified);
        // Extensions are those said over TLS.
        assert!(!c.extensions().starttls);
        assert_eq!(c.extensions().auth, ["PLAIN", "LOGIN"]);
        let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
        assert_eq!(r[0].reply().lines, ["over tls"]);
        done(h).await;
    }

    #[tokio::test]
    async fn starttls_discards_injected_plaintext() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(
            tls_script("220 go ahead\r\n250 injected\r\n"),
            Some(cert.server),
        )
        .await;
        let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
        assert!(c.tls_active());
        // Had "250 injected" been taken as the EHLO reply, PIPELINING
        // would be unknown and every later reply one step off.
        assert!(c.extensions().pipelining);
        let r = c.send(&msg(&["b@dst.test"])).await.unwrap();
        assert_eq!(r[0].reply().lines, ["over tls"]);
        done(h).await;
    }

    #[tokio::test]
    async fn starttls_none_mode_never_upgrades() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_TLS),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::None, false, &cfg5()).await;
        assert!(!c.tls_active());
        c.send(&msg(&["b@dst.test"])).await.unwrap();
        done(h).await;
    }

    #[tokio::test]
    async fn starttls_refused_opportunistic_goes_on_plain() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_TLS),
                Hear("STARTTLS"),
                Say("454 4.7.0 TLS not available\r\n"),
                Hear("MAIL"),
                Hear("RCPT"),
                Hear("DATA"),
                Say("250 ok\r\n250 ok\r\n354 go\r\n"),
                HearData,
                Say("250 ok\r\n"),
            ],
            None,
        )
        .await;
        let mut c = connect(addr, TlsMode::Opportunistic, false, &cfg5()).await;
        assert!(!c.tls_active());
        c.send(&msg(&["b@dst.test"])).await.unwrap();
        done(h).await;
    }

    #[tokio::test]
    async fn require_mode() {
        let cert = test_cert("localhost");
        let script = || {
            vec![
                GREET,
                Hear("EHLO"),
                Say(EHLO_TLS),
                Hear("STARTTLS"),
                Say("220 go ahead\r\n"),
                Step::Tls,
                Hear("EHLO"),
                Say("250 fake.test\r\n"),
            ]
        };

        // Not offered.
        let (addr, h) = fake::serve(vec![GREET, Hear("EHLO"), Say(EHLO_PIPE)], None).await;
        let e = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &cfg5())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
        assert!(!e.is_permanent());
        done(h).await;

        // A self-signed certificate does not verify against the default roots.
        let (addr, h) = fake::serve(script(), Some(cert.server.clone())).await;
        let e = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &cfg5())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
        assert_eq!(done(h).await.last().unwrap(), "TLS-FAILED");

        // It does once trusted.
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, &cert.pem).unwrap();
        let mut trusted = cfg5();
        trusted.tls_roots = Arc::new(load_roots(Some(&pem)).unwrap());
        let (addr, h) = fake::serve(script(), Some(cert.server.clone())).await;
        let c = Connection::connect(addr, "localhost", TlsMode::Require, false, None, &trusted)
            .await
            .unwrap();
        assert!(c.tls_active());
        assert!(c.tls().unwrap().verified);
        done(h).await;

        // But not for another name.
        let (addr, h) = fake::serve(script(), Some(cert.server)).await;
        let e = Connection::connect(addr, "other.test", TlsMode::Require, false, None, &trusted)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
        done(h).await;
    }

    #[test]
    fn load_roots_errors() {
        let n = load_roots(None).unwrap().len();
        assert!(n > 100);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(matches!(load_roots(Some(&empty)), Err(ClientError::Tls(_))));
        assert!(matches!(
            load_roots(Some(&dir.path().join("missing.pem"))),
            Err(ClientError::Tls(_))
        ));
    }

    // -- AUTH ----------------------------------------------------------------

    fn creds() -> Credentials {
        Credentials {
            username: "user".into(),
            password: "pass".into(),
        }
    }

    fn auth_script(ehlo: &'static str, exchange: Vec<Step>) -> Vec<Step> {
        let mut s = vec![
            GREET,
            Hear("EHLO"),
            Say(EHLO_TLS),
            Hear("STARTTLS"),
            Say("220 go ahead\r\n"),
            Step::Tls,
            Hear("EHLO"),
            Say(ehlo),
        ];
        s.extend(exchange);
        s
    }

    #[tokio::test]
    async fn auth_plain_over_tls() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(
            auth_script(
                "250-fake.test\r\n250 AUTH LOGIN PLAIN\r\n",
                vec![Hear("AUTH PLAIN AHVzZXIAcGFzcw=="), Say("235 2.7.0 ok\r\n")],
            ),
            Some(cert.server),
        )
        .await;
        let c = Connection::connect(
            addr,
            "fake.test",
            TlsMode::Opportunistic,
            false,
            Some(&creds()),
            &cfg5(),
        )
        .await
        .unwrap();
        assert!(c.is_usable());
        done(h).await;
    }

    #[tokio::test]
    async fn auth_login_when_only_login() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(
            auth_script(
                "250-fake.test\r\n250 AUTH LOGIN\r\n",
                vec![
                    Hear("AUTH LOGIN"),
                    Say("334 VXNlcm5hbWU6\r\n"),
                    Hear("dXNlcg=="),
                    Say("334 UGFzc3dvcmQ6\r\n"),
                    Hear("cGFzcw=="),
                    Say("235 ok\r\n"),
                ],
            ),
            Some(cert.server),
        )
        .await;
        Connection::connect(
            addr,
            "fake.test",
            TlsMode::Opportunistic,
            false,
            Some(&creds()),
            &cfg5(),
        )
        .await
        .unwrap();
        done(h).await;
    }

    #[tokio::test]
    async fn auth_failed_is_permanent() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(
            auth_script(
                "250-fake.test\r\n250 AUTH PLAIN\r\n",
                vec![Hear("AUTH PLAIN"), Say("535 5.7.8 bad credentials\r\n")],
            ),
            Some(cert.server),
        )
        .await;
        let e = Connection::connect(
            addr,
            "fake.test",
            TlsMode::Opportunistic,
            false,
            Some(&creds()),
            &cfg5(),
        )
        .await
        .unwrap_err();
        assert!(matches!(&e, ClientError::Reply { stage: "auth", reply } if reply.code == 535));
        assert!(e.is_permanent());
        assert_eq!(e.status(), Enhanced(5, 7, 8));
        done(h).await;
    }

    #[tokio::test]
    async fn auth_never_in_plaintext() {
        let (addr, h) = fake::serve(
            vec![
                GREET,
                Hear("EHLO"),
                Say("250-fake.test\r\n250 AUTH PLAIN\r\n"),
            ],
            None,
        )
        .await;
        let e = Connection::connect(
            addr,
            "fake.test",
            TlsMode::Opportunistic,
            false,
            Some(&creds()),
            &cfg5(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ClientError::TlsRequired(_)), "{e:?}");
        let seen = done(h).await;
        assert!(seen.iter().all(|l| !l.starts_with("AUTH")));
        assert!(!format!("{:?}", creds()).contains("pass\""));
    }

    #[tokio::test]
    async fn auth_without_mechanism() {
        let cert = test_cert("fake.test");
        let (addr, h) = fake::serve(
            auth_script("250-fake.test\r\n250 AUTH CRAM-MD5\r\n", vec![]),
            Some(cert.server),
        )
        .await;
        let e = Connection::connect(
            addr,
            "fake.test",
            TlsMode::Opportunistic,
            false,
            Some(&creds()),
            &cfg5(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ClientError::AuthUnavailable), "{e:?}");
        done(h).await;
    }
}
