//! The envelope file (`ID.json`): everything about a message that is not
//! its content. Versioned; fields are added, never renamed.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::smtp::command::{MailParams, Notify};

/// Current envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// A message's envelope as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub version: u32,
    /// The queue id.
    pub id: String,
    /// When the message was accepted (RFC 3339 in the file).
    pub received_at: DateTime<Utc>,
    /// The reverse-path; empty for the null sender `<>`.
    pub sender: String,
    /// The accepted recipients, in order, each with its delivery state.
    pub recipients: Vec<Recipient>,
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
    /// Held by an operator or a policy: not delivered until released.
    #[serde(default)]
    pub held: bool,
    /// Why a policy put the message in quarantine (it is then held).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quarantine: Option<String>,
}

impl Envelope {
    /// A new envelope in the current format: not held, not in quarantine,
    /// sizes filled in by the spool when the message is stored.
    pub fn new(
        id: String,
        received_at: DateTime<Utc>,
        sender: String,
        recipients: Vec<Recipient>,
        params: MailParams,
        chunked: bool,
        client: ClientInfo,
    ) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            id,
            received_at,
            sender,
            recipients,
            params,
            chunked,
            client,
            size: 0,
            trace_len: 0,
            held: false,
            quarantine: None,
        }
    }

    /// The same envelope held in quarantine for `reason` (a policy's word).
    pub fn quarantined(mut self, reason: Option<String>) -> Self {
        self.held = reason.is_some();
        self.quarantine = reason;
        self
    }

    /// True when no recipient is waiting for delivery.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.state.is_final())
    }
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not tried yet.
    #[default]
    Pending,
    /// Tried, failed temporarily; `next_attempt` says when again.
    Deferred,
    /// Delivered (or relayed) successfully.
    Delivered,
    /// Failed permanently (or expired); a DSN is due unless NOTIFY says no.
    Failed,
}

impl RcptState {
    /// Delivered or failed.
    pub fn is_final(self) -> bool {
        matches!(self, RcptState::Delivered | RcptState::Failed)
    }
}

/// One recipient of a stored message and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path as accepted.
    pub address: String,
    /// `ORCPT=` (RFC 3461), `addr-type;address`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub orcpt: Option<String>,
    /// `NOTIFY=` (RFC 3461); absent means the default.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify: Option<Notify>,
    /// Delivery state.
    #[serde(default)]
    pub state: RcptState,
    /// Delivery attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When to try again (deferred recipients).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_attempt: Option<DateTime<Utc>>,
    /// When it was last tried.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_attempt: Option<DateTime<Utc>>,
    /// The enhanced status of the last attempt, e.g. `5.1.1`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    /// The last reply or error, e.g. `smtp; 550 5.1.1 no such user`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diagnostic: Option<String>,
    /// The server that gave it, e.g. `mx1.example.com`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_mta: Option<String>,
}

impl Recipient {
    /// A new, pending recipient.
    pub fn new(address: String) -> Self {
        Self {
            address,
            orcpt: None,
            notify: None,
            state: RcptState::Pending,
            attempts: 0,
            next_attempt: None,
            last_attempt: None,
            status: None,
            diagnostic: None,
            remote_mta: None,
        }
    }
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

/// The protocol version and cipher suite a TLS connection agreed, as
/// logged and recorded (`TLSv1_3`, `TLS13_AES_128_GCM_SHA256`; `unknown`
/// before the handshake): the one spelling for both directions.
pub fn tls_names(conn: &rustls::CommonState) -> (String, String) {
    (
        conn.protocol_version()
            .map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
        conn.negotiated_cipher_suite()
            .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
    )
}
