//! The outbound SMTP/LMTP client: one [`Connection`] per session with a
//! next hop (an MX, a relay host, or a local LMTP server), reusable for
//! several messages.
//!
//! The wire rules are sans-IO, in [`crate::smtp::client`] beside the
//! server side: the reply parser, the EHLO/LHLO keywords, the DATA
//! encoder. Here:
//!
//! - [`config`]: timeouts, the client's settings, trust roots, AUTH
//!   credentials;
//! - [`error`]: [`ClientError`] and how a reply becomes a status;
//! - [`tls`]: the opportunistic verifier and the rustls client set-up;
//!
//! [`Connection`] does the I/O with tokio: greeting, EHLO/LHLO (HELO
//! fallback), STARTTLS per [`TlsMode`], AUTH, and transactions with
//! PIPELINING (RFC 2920) or in lockstep. Every read and write runs under
//! the RFC 5321 §4.5.3.2 timeout of its stage ([`Timeouts`]).
//!
//! Failures that concern the whole transaction or connection are a
//! [`ClientError`]; the fate of each recipient is a [`RcptResult`].

pub mod config;
pub mod error;
pub mod tls;

pub use crate::smtp::client::{
    DataEncoder, Extensions, MAX_REPLY_LINE, MAX_REPLY_LINES, ReplyError, ReplyParser,
};
pub use config::{ClientConfig, Credentials, Timeouts, load_roots};
pub use error::{ClientError, reply_diagnostic, reply_status};
pub use tls::TlsSummary;
use tls::tls_client_config;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::route::TlsMode;
use crate::smtp::base64;
use crate::smtp::command::{Notify, Ret, xtext_encode};
use crate::smtp::{Enhanced, Reply};

/// Bytes of the message encoded and written at a time.
const WRITE_CHUNK: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Configuration and inputs
// ---------------------------------------------------------------------------

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
    /// is given (only over TLS, and then as [`TlsMode::Require`] unless
    /// the credentials allow unverified TLS). `server_name` is the host
    /// name the certificate must match in [`TlsMode::Require`], and the
    /// SNI.
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
        let tls = match auth {
            Some(a) if !a.allow_unverified_tls && tls == TlsMode::Opportunistic => TlsMode::Require,
            _ => tls,
        };
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
        let (version, cipher) = crate::spool::tls_names(tls.get_ref().1);
        self.tls = Some(TlsSummary {
            version,
            cipher,
            verified: verify,
        });
        self.stream = Stream::Tls(Box::new(tls));
        // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
        self.extensions = Extensions::default();
        self.hello().await
    }

    /// AUTH PLAIN (preferred) or LOGIN, over TLS only, verified TLS unless
    /// the credentials allow otherwise.
    async fn authenticate(&mut self, creds: &Credentials) -> Result<(), ClientError> {
        match &self.tls {
            None => {
                return Err(ClientError::TlsRequired(
                    "refusing to send credentials in plaintext".into(),
                ));
            }
            Some(t) if !t.verified && !creds.allow_unverified_tls => {
                self.usable = false;
                return Err(ClientError::TlsRequired(format!(
                    "refusing to send credentials to {}: its certificate was not verified",
                    self.server_name
                )));
            }
            Some(_) => {}
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
mod tests;
