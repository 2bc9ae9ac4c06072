//! The ESMTP server state machine (RFC 5321), sans I/O.
//!
//! The connection driver feeds it bytes with [`Session::feed`] and asks for
//! the next thing to do with [`Session::next_action`]: send a reply, start
//! TLS, ask the policy layer about a stage, store a message, read more
//! input, or close. Questions are answered with [`Session::answer`],
//! stores with [`Session::stored`], the TLS handshake with
//! [`Session::tls_started`]. Nothing here touches a socket, a clock or a
//! file, so every rule is testable with plain byte strings.

use std::collections::VecDeque;

use super::address::{Mailbox, ReversePath};
use super::command::{self, Command, MailParams, RcptParams};
use super::data::{DataReader, Defect, LineChecker};
use super::reply::{Reply, std_replies};

/// Protocol limits and the identity the session presents.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// Longest command line in octets, CRLF included (RFC 5321: 512).
    pub max_line_length: usize,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Largest message in octets (advertised with SIZE).
    pub max_message_size: u64,
    /// Protocol errors tolerated before `421` and close.
    pub max_bad_commands: u32,
    /// Octets a client may send in one session before `421` and close.
    pub max_session_bytes: u64,
    /// STARTTLS can be offered (a certificate is loaded).
    pub starttls_available: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_line_length: 512,
            max_recipients: 100,
            max_message_size: 50 * 1024 * 1024,
            max_bad_commands: 20,
            max_session_bytes: 1 << 30,
            starttls_available: true,
        }
    }
}

/// A question for the policy layer, one per stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A client connected; may it talk to us?
    Connect,
    /// EHLO/HELO with this name.
    Helo {
        /// The name the client gave.
        name: String,
    },
    /// MAIL FROM.
    MailFrom {
        /// The sender.
        from: ReversePath,
        /// Its parameters.
        params: MailParams,
    },
    /// RCPT TO.
    Rcpt {
        /// The sender of the transaction.
        from: ReversePath,
        /// The recipient asked for.
        to: Mailbox,
        /// Its parameters.
        params: RcptParams,
        /// Recipients accepted before this one.
        accepted: Vec<Mailbox>,
    },
}

/// The policy layer's answer to a [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the standard positive reply.
    Accept,
    /// Refuse with this reply (4xx or 5xx).
    Reject(Reply),
}

/// A complete message ready for the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The EHLO/HELO name.
    pub helo: String,
    /// EHLO (true) or HELO.
    pub esmtp: bool,
    /// The session was under TLS when the message came in.
    pub tls: bool,
    /// The sender.
    pub from: ReversePath,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Accepted recipients with their parameters, in order, without
    /// duplicates.
    pub recipients: Vec<Recipient>,
    /// The message: dot-unstuffed (DATA) or as sent (BDAT).
    pub body: Vec<u8>,
    /// Sent with BDAT.
    pub chunked: bool,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path.
    pub to: Mailbox,
    /// RCPT TO parameters.
    pub params: RcptParams,
}

/// How a transaction ended, for the one-line-per-transaction log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The sender.
    pub from: ReversePath,
    /// Accepted recipients.
    pub recipients: Vec<Mailbox>,
    /// Message size in octets as received.
    pub size: u64,
    /// The final reply.
    pub reply: Reply,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Send this reply (the driver may batch replies until it next reads).
    Send(Reply),
    /// Flush replies, then run the TLS handshake and call
    /// [`Session::tls_started`]. Input buffered before it was discarded.
    StartTls,
    /// Ask the policy layer, then call [`Session::answer`].
    Check(Check),
    /// Store the message, then call [`Session::stored`].
    Store(Box<Transaction>),
    /// A transaction ended (log it).
    Done(Box<Outcome>),
    /// Read more input (with the timeout for [`Session::waiting_for`]).
    NeedInput,
    /// Flush replies and close the connection.
    Close,
}

/// What kind of input the session waits for, which decides the timeout
/// (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The next command.
    Command,
    /// More message content (DATA or a BDAT chunk).
    Data,
}

#[derive(Debug)]
enum Pending {
    Connect,
    Helo {
        name: String,
        esmtp: bool,
    },
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
        params: RcptParams,
    },
}

#[derive(Debug)]
enum Phase {
    Start,
    Awaiting(Pending),
    Command,
    Data(Box<DataReader>),
    Bdat {
        remaining: u64,
        last: bool,
        refuse: Option<Reply>,
    },
    Storing,
    Tls,
    Closed,
}

#[derive(Debug)]
struct Tx {
    from: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Octets of message content received.
    size: u64,
    /// BDAT state: the body so far and its line checker.
    chunks: Option<(Vec<u8>, LineChecker)>,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    inbuf: Vec<u8>,
    discarding_line: bool,
    queue: VecDeque<Action>,
    phase: Phase,
    helo: Option<(String, bool)>,
    tx: Option<Tx>,
    tls: bool,
    bad_commands: u32,
    bytes_in: u64,
    shutdown: bool,
    /// Command lines taken, kept for a recorder when it asked for them.
    command_log: Option<Vec<Vec<u8>>>,
    /// When set, a new message (DATA, a first BDAT chunk) is refused with
    /// this reply: the gateway's memory budget for messages is spent.
    data_refusal: Option<Reply>,
}

impl Session {
    /// A new session; `tls` is true on an implicit-TLS listener.
    pub fn new(cfg: SessionConfig, tls: bool) -> Self {
        Self {
            cfg,
            inbuf: Vec::new(),
            discarding_line: false,
            queue: VecDeque::new(),
            phase: Phase::Start,
            helo: None,
            tx: None,
            tls,
            bad_commands: 0,
            bytes_in: 0,
            shutdown: false,
            command_log: None,
            data_refusal: None,
        }
    }

    /// Refuse new messages with `reply` from now on (`None`: take them
    /// again). A message already arriving goes on.
    pub fn refuse_data(&mut self, reply: Option<Reply>) {
        self.data_refusal = reply;
    }

    /// Octets of a message held in the session now (DATA so far, or the
    /// BDAT chunks so far).
    pub fn message_bytes(&self) -> usize {
        let chunks = self
            .tx
            .as_ref()
            .and_then(|t| t.chunks.as_ref())
            .map_or(0, |(c, _)| c.len());
        match &self.phase {
            Phase::Data(reader) => reader.held() + chunks,
            _ => chunks,
        }
    }

    /// Keep every command line taken (without its line end) for
    /// [`Session::take_commands`]: a session recorder reads them.
    pub fn log_commands(&mut self) {
        self.command_log.get_or_insert_with(Vec::new);
    }

    /// The command lines taken since the last call (none unless
    /// [`Session::log_commands`] was called). Message content is never
    /// included.
    pub fn take_commands(&mut self) -> Vec<Vec<u8>> {
        self.command_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes_in += bytes.len() as u64;
        self.inbuf.extend_from_slice(bytes);
    }

    /// Octets buffered but not yet consumed (bounded by one read plus one
    /// command line).
    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Which timeout applies to the next read.
    pub fn waiting_for(&self) -> Waiting {
        match self.phase {
            Phase::Data(_) | Phase::Bdat { .. } => Waiting::Data,
            _ => Waiting::Command,
        }
    }

    /// True while a message is being received or stored, or a BDAT
    /// transaction is open: shutdown waits for these.
    pub fn in_data(&self) -> bool {
        matches!(
            self.phase,
            Phase::Data(_) | Phase::Bdat { .. } | Phase::Storing
        ) || self.tx.as_ref().is_some_and(|t| t.chunks.is_some())
    }

    /// True once the session has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The client closed its side.
    pub fn eof(&mut self) {
        self.phase = Phase::Closed;
        self.queue.clear();
        self.queue.push_back(Action::Close);
    }

    /// The read timed out.
    pub fn timeout(&mut self) {
        self.abort(std_replies::timeout());
    }

    /// End the session now with this reply (a lifetime limit, say).
    pub fn abort(&mut self, reply: Reply) {
        self.phase = Phase::Closed;
        self.queue.clear();
        self.queue.push_back(Action::Send(reply));
        self.queue.push_back(Action::Close);
    }

    /// The gateway is shutting down: an idle session gets `421 4.3.0` at
    /// once; one receiving a message finishes it first.
    pub fn shutdown(&mut self) {
        self.shutdown = true;
    }

    /// The answer to the last [`Action::Check`].
    pub fn answer(&mut self, verdict: Verdict) {
        let Phase::Awaiting(pending) = std::mem::replace(&mut self.phase, Phase::Command) else {
            debug_assert!(false, "answer() without a pending check");
            return;
        };
        match (pending, verdict) {
            (Pending::Connect, Verdict::Accept) => {
                let greeting = format!("{} ESMTP Sluice", self.cfg.hostname);
                self.send(Reply::plain(220, greeting));
            }
            (Pending::Connect, Verdict::Reject(r)) => self.abort(r),
            (Pending::Helo { name, esmtp }, Verdict::Accept) => {
                self.tx = None;
                let reply = if esmtp {
                    self.ehlo_reply(&name)
                } else {
                    Reply::plain(250, self.cfg.hostname.clone())
                };
                self.helo = Some((name, esmtp));
                self.send(reply);
            }
            (Pending::Mail { from, params }, Verdict::Accept) => {
                self.tx = Some(Tx {
                    from,
                    params,
                    recipients: Vec::new(),
                    size: 0,
                    chunks: None,
                });
                self.send(std_replies::sender_ok());
            }
            (Pending::Rcpt { to, params }, Verdict::Accept) => {
                if let Some(tx) = &mut self.tx
                    && !tx.recipients.iter().any(|r| r.to == to)
                {
                    tx.recipients.push(Recipient { to, params });
                }
                self.send(std_replies::recipient_ok());
            }
            (_, Verdict::Reject(r)) => self.send(r),
        }
    }

    /// The result of the last [`Action::Store`]: the queue id, or the
    /// reply to give when the message could not be stored.
    pub fn stored(&mut self, result: Result<String, Reply>) {
        debug_assert!(matches!(self.phase, Phase::Storing));
        self.phase = Phase::Command;
        let reply = match result {
            Ok(id) => std_replies::queued(&id),
            Err(r) => r,
        };
        self.finish_tx(reply);
    }

    /// The TLS handshake completed; the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        debug_assert!(matches!(self.phase, Phase::Tls));
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.inbuf.clear();
        self.phase = Phase::Command;
    }

    fn send(&mut self, r: Reply) {
        self.queue.push_back(Action::Send(r));
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![
            format!("{} Hello {}", self.cfg.hostname, name),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.cfg.starttls_available && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        lines.push("HELP".to_string());
        Reply::multiline(250, lines)
    }

    fn protocol_error(&mut self, r: Reply) {
        self.bad_commands += 1;
        if self.bad_commands > self.cfg.max_bad_commands {
            self.send(r);
            self.abort_keep(std_replies::too_many_errors());
        } else {
            self.send(r);
        }
    }

    /// Like `abort` but keeps replies already queued.
    fn abort_keep(&mut self, r: Reply) {
        self.phase = Phase::Closed;
        self.queue.push_back(Action::Send(r));
        self.queue.push_back(Action::Close);
    }

    fn finish_tx(&mut self, reply: Reply) {
        if let Some(tx) = self.tx.take() {
            let size = tx.size;
            self.queue.push_back(Action::Done(Box::new(Outcome {
                from: tx.from,
                recipients: tx.recipients.into_iter().map(|r| r.to).collect(),
                size,
                reply: reply.clone(),
            })));
        }
        self.send(reply);
    }

    /// The next thing to do.
    pub fn next_action(&mut self) -> Action {
        loop {
            if let Some(a) = self.queue.pop_front() {
                return a;
            }
            match &mut self.phase {
                Phase::Closed => return Action::Close,
                Phase::Start => {
                    self.phase = Phase::Awaiting(Pending::Connect);
                    return Action::Check(Check::Connect);
                }
                Phase::Awaiting(_) | Phase::Storing | Phase::Tls => {
                    // The driver owes an answer; asking again is a bug in
                    // the driver, and reading more is the harmless reply.
                    debug_assert!(false, "next_action() while awaiting the driver");
                    return Action::NeedInput;
                }
                Phase::Command | Phase::Data(_) | Phase::Bdat { .. }
                    if self.bytes_in > self.cfg.max_session_bytes =>
                {
                    self.abort_keep(std_replies::session_too_big());
                }
                Phase::Command => {
                    if self.shutdown && !self.in_data() {
                        self.abort_keep(std_replies::shutting_down());
                        continue;
                    }
                    match self.take_line() {
                        Some(Ok(line)) => {
                            if let Some(log) = &mut self.command_log {
                                log.push(line.clone());
                            }
                            self.command(&line)
                        }
                        Some(Err(r)) => self.protocol_error(r),
                        None => return Action::NeedInput,
                    }
                }
                Phase::Data(reader) => {
                    let (n, done) = reader.feed(&self.inbuf);
                    self.inbuf.drain(..n);
                    if !done {
                        return Action::NeedInput;
                    }
                    let Phase::Data(reader) = std::mem::replace(&mut self.phase, Phase::Command)
                    else {
                        unreachable!()
                    };
                    self.end_of_data(reader.finish());
                }
                Phase::Bdat {
                    remaining,
                    last,
                    refuse,
                } => {
                    let n = (*remaining).min(self.inbuf.len() as u64) as usize;
                    if refuse.is_none()
                        && let Some(tx) = &mut self.tx
                        && let Some((body, checker)) = &mut tx.chunks
                    {
                        checker.feed(&self.inbuf[..n]);
                        let room = self.cfg.max_message_size.saturating_sub(tx.size);
                        let keep = (n as u64).min(room) as usize;
                        body.extend_from_slice(&self.inbuf[..keep]);
                        tx.size += n as u64;
                    }
                    self.inbuf.drain(..n);
                    *remaining -= n as u64;
                    if *remaining > 0 {
                        return Action::NeedInput;
                    }
                    let last = *last;
                    let refuse = refuse.take();
                    self.phase = Phase::Command;
                    self.end_of_chunk(last, refuse);
                }
            }
        }
    }

    /// Take one command line from the buffer: `None` when a whole line is
    /// not there yet, `Some(Err)` for a line over the limit.
    fn take_line(&mut self) -> Option<Result<Vec<u8>, Reply>> {
        let max = self.cfg.max_line_length;
        match memchr::memchr(b'\n', &self.inbuf) {
            Some(i) => {
                let line: Vec<u8> = self.inbuf.drain(..=i).collect();
                if std::mem::take(&mut self.discarding_line) || line.len() > max {
                    return Some(Err(std_replies::line_too_long()));
                }
                let mut line = line;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Ok(line))
            }
            None => {
                if self.inbuf.len() >= max {
                    // No line end within the limit: drop what we have and
                    // keep dropping until the next LF, so memory stays
                    // bounded whatever the client sends.
                    self.inbuf.clear();
                    self.discarding_line = true;
                }
                None
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(r) => return self.protocol_error(r),
        };
        match cmd {
            Command::Ehlo(name) => {
                self.phase = Phase::Awaiting(Pending::Helo { name, esmtp: true });
                self.queue
                    .push_back(Action::Check(self.pending_check().expect("helo pending")));
            }
            Command::Helo(name) => {
                self.phase = Phase::Awaiting(Pending::Helo { name, esmtp: false });
                self.queue
                    .push_back(Action::Check(self.pending_check().expect("helo pending")));
            }
            Command::Mail { from, params } => {
                if self.helo.is_none() {
                    return self.protocol_error(std_replies::bad_sequence("Send EHLO/HELO first"));
                }
                if self.tx.is_some() {
                    return self.protocol_error(std_replies::bad_sequence("Nested MAIL command"));
                }
                if params.size.is_some_and(|s| s > self.cfg.max_message_size) {
                    return self.send(std_replies::too_big());
                }
                if let ReversePath::Mailbox(m) = &from
                    && m.is_utf8()
                    && !params.smtputf8
                {
                    return self.send(std_replies::needs_smtputf8());
                }
                self.phase = Phase::Awaiting(Pending::Mail { from, params });
                self.queue
                    .push_back(Action::Check(self.pending_check().expect("mail pending")));
            }
            Command::Rcpt { to, params } => {
                let Some(tx) = &self.tx else {
                    return self.protocol_error(std_replies::bad_sequence("Need MAIL command"));
                };
                if tx.chunks.is_some() {
                    return self.protocol_error(std_replies::bad_sequence("RCPT after BDAT"));
                }
                if to.is_utf8() && !tx.params.smtputf8 {
                    return self.send(std_replies::needs_smtputf8());
                }
                if tx.recipients.len() >= self.cfg.max_recipients {
                    return self.send(std_replies::too_many_recipients());
                }
                self.phase = Phase::Awaiting(Pending::Rcpt { to, params });
                self.queue
                    .push_back(Action::Check(self.pending_check().expect("rcpt pending")));
            }
            Command::Data => match &self.tx {
                None => self.protocol_error(std_replies::bad_sequence("Need MAIL command")),
                Some(tx) if tx.chunks.is_some() => {
                    self.protocol_error(std_replies::bad_sequence("DATA after BDAT"))
                }
                Some(tx) if tx.recipients.is_empty() => {
                    self.send(std_replies::no_valid_recipients())
                }
                Some(_) if self.data_refusal.is_some() => {
                    let r = self.data_refusal.clone().expect("checked");
                    self.send(r)
                }
                Some(_) => {
                    self.send(std_replies::start_data());
                    self.phase = Phase::Data(Box::new(DataReader::new(self.cfg.max_message_size)));
                }
            },
            Command::Bdat { size, last } => {
                // The chunk is always read, whatever the reply (RFC 3030 §2).
                let refuse = match &mut self.tx {
                    None => Some(std_replies::bad_sequence("Need MAIL command")),
                    Some(tx) if tx.recipients.is_empty() => {
                        Some(std_replies::no_valid_recipients())
                    }
                    Some(tx) if tx.chunks.is_none() && self.data_refusal.is_some() => {
                        self.data_refusal.clone()
                    }
                    Some(tx) => {
                        tx.chunks
                            .get_or_insert_with(|| (Vec::new(), LineChecker::default()));
                        None
                    }
                };
                if refuse.is_some() {
                    self.bad_commands += 1;
                }
                self.phase = Phase::Bdat {
                    remaining: size,
                    last,
                    refuse,
                };
            }
            Command::Rset => {
                self.tx = None;
                self.send(std_replies::ok());
            }
            Command::Noop => self.send(std_replies::ok()),
            Command::Quit => {
                self.tx = None;
                self.abort_keep(std_replies::bye());
            }
            Command::Vrfy => self.send(std_replies::vrfy()),
            Command::Expn => self.send(std_replies::not_implemented()),
            Command::Help => self.send(std_replies::help()),
            Command::StartTls => {
                if self.tls {
                    self.protocol_error(std_replies::bad_sequence("TLS already active"))
                } else if !self.cfg.starttls_available {
                    self.send(std_replies::tls_unavailable())
                } else {
                    self.send(std_replies::tls_go_ahead());
                    // Anything pipelined after STARTTLS was sent in
                    // plaintext and must not survive the upgrade.
                    self.inbuf.clear();
                    self.phase = Phase::Tls;
                    self.queue.push_back(Action::StartTls);
                }
            }
        }
    }

    fn pending_check(&self) -> Option<Check> {
        let Phase::Awaiting(p) = &self.phase else {
            return None;
        };
        Some(match p {
            Pending::Connect => Check::Connect,
            Pending::Helo { name, .. } => Check::Helo { name: name.clone() },
            Pending::Mail { from, params } => Check::MailFrom {
                from: from.clone(),
                params: params.clone(),
            },
            Pending::Rcpt { to, params } => Check::Rcpt {
                from: self
                    .tx
                    .as_ref()
                    .map_or(ReversePath::Null, |t| t.from.clone()),
                to: to.clone(),
                params: params.clone(),
                accepted: self
                    .tx
                    .as_ref()
                    .map(|t| t.recipients.iter().map(|r| r.to.clone()).collect())
                    .unwrap_or_default(),
            },
        })
    }

    fn end_of_data(&mut self, o: super::data::DataOutcome) {
        if let Some(tx) = &mut self.tx {
            tx.size = o.size;
        }
        let refuse = match o.defect {
            Some(Defect::BareLineEnding) => Some(std_replies::bare_line_ending()),
            Some(Defect::Nul) => Some(std_replies::nul_in_message()),
            None if o.too_big(self.cfg.max_message_size) => Some(std_replies::too_big()),
            None => None,
        };
        match refuse {
            Some(r) => self.finish_tx(r),
            None => self.store(o.body, false),
        }
    }

    fn end_of_chunk(&mut self, last: bool, refuse: Option<Reply>) {
        if let Some(r) = refuse {
            // A refused chunk ends the transaction (RFC 3030 §2).
            self.tx = None;
            return self.send(r);
        }
        let Some(tx) = &mut self.tx else {
            return self.send(std_replies::bad_sequence("Need MAIL command"));
        };
        let size = tx.size;
        let Some((body, checker)) = &mut tx.chunks else {
            return self.send(std_replies::bad_sequence("Need MAIL command"));
        };
        let defect = checker.defect(last);
        let refuse = match defect {
            Some(Defect::BareLineEnding) => Some(std_replies::bare_line_ending()),
            Some(Defect::Nul) => Some(std_replies::nul_in_message()),
            None if size > self.cfg.max_message_size => Some(std_replies::too_big()),
            None => None,
        };
        if let Some(r) = refuse {
            return self.finish_tx(r);
        }
        if !last {
            return self.send(std_replies::chunk_ok(size));
        }
        let body = std::mem::take(body);
        self.store(body, true);
    }

    fn store(&mut self, body: Vec<u8>, chunked: bool) {
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let Some(tx) = &self.tx else {
            return self.send(std_replies::bad_sequence("Need MAIL command"));
        };
        let t = Transaction {
            helo,
            esmtp,
            tls: self.tls,
            from: tx.from.clone(),
            params: tx.params.clone(),
            recipients: tx.recipients.clone(),
            body,
            chunked,
        };
        self.phase = Phase::Storing;
        self.queue.push_back(Action::Store(Box::new(t)));
    }
}
