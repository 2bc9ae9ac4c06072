//! The envelope file (`ID.json`): everything about a message that is not
//! its content. Versioned; fields are added, never renamed.

use serde::{Deserialize, Serialize};

use crate::smtp::command::MailParams;

/// Current envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// A message's envelope as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub version: u32,
    /// The queue id.
    pub id: String,
    /// When the message was accepted, RFC 3339.
    pub received_at: String,
    /// The reverse-path; empty for the null sender `<>`.
    pub sender: String,
    /// The accepted recipients, in order.
    pub recipients: Vec<String>,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Sent with BDAT.
    pub chunked: bool,
    /// Who sent it.
    pub client: ClientInfo,
    /// Octets in the `.eml` file.
    pub size: u64,
    /// Octets of our `Received:` header at the start of the `.eml` file.
    pub trace_len: u64,
}

/// The client side of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client address (the PROXY source when a trusted proxy sent one).
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// The listener address that took the connection.
    pub listener: String,
    /// EHLO/HELO name.
    pub helo: String,
    /// EHLO (true) or HELO.
    pub esmtp: bool,
    /// TLS details when the session was encrypted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls: Option<TlsInfo>,
    /// The address of the proxy, when the connection came through one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub proxy: Option<String>,
}

/// TLS parameters of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Implicit TLS (true) or STARTTLS.
    pub implicit: bool,
}
