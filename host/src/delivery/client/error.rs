//! Failures of a transaction or a connection, classified by type, and how
//! a server's reply becomes an enhanced status and a diagnostic.

use std::io;

use crate::smtp::{Enhanced, Reply};

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
