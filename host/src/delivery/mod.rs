//! Delivery: where each recipient goes ([`Route`]) and the ways mail
//! leaves — a local Maildir or LMTP, a relay host, or the recipient
//! domain's MX found through DNS — plus DSN bounces.
//!
//! - [`dns`]: the [`dns::Resolver`] trait, its hickory implementation,
//!   static overrides, and RFC 5321 §5.1 MX selection.
//! - [`client`]: the outbound SMTP/LMTP client.
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`maildir`]: local delivery into Maildir folders.

pub mod client;
pub mod dns;
pub mod dsn;
pub mod maildir;

use serde::{Deserialize, Serialize};

use crate::smtp::Enhanced;

/// TLS policy for an outbound connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS when offered, without verifying the certificate; plain
    /// otherwise (RFC 3207 as practised between MTAs).
    #[default]
    Opportunistic,
    /// STARTTLS required and the certificate verified for the host name;
    /// otherwise the attempt fails temporarily.
    Require,
    /// Never STARTTLS.
    None,
}

/// The next hop for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// A local mailbox (Maildir under the data folder, or LMTP when set).
    Local,
    /// A relay host (smarthost).
    Relay {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// TLS policy.
        tls: TlsMode,
    },
    /// The MX hosts of this domain.
    Mx {
        /// The recipient domain (lower case).
        domain: String,
    },
    /// Refuse the recipient with this status and text (a DSN follows).
    Reject {
        /// Enhanced status, e.g. 5.1.1.
        status: Enhanced,
        /// Human-readable reason.
        text: String,
    },
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop (or written to the mailbox).
    Delivered {
        /// The host that accepted it, when remote.
        remote: Option<String>,
        /// Its reply, for the log.
        reply: String,
    },
    /// Failed for now; try again later.
    Deferred {
        /// Enhanced status, e.g. 4.4.1.
        status: Enhanced,
        /// The reply or error, e.g. `smtp; 421 4.3.2 busy`.
        diagnostic: String,
        /// The host that said it, when one did.
        remote: Option<String>,
    },
    /// Failed for good: a DSN is due.
    Failed {
        /// Enhanced status, e.g. 5.1.1.
        status: Enhanced,
        /// The reply or error.
        diagnostic: String,
        /// The host that said it, when one did.
        remote: Option<String>,
    },
}

impl Outcome {
    /// A temporary failure with no remote host involved.
    pub fn defer(status: Enhanced, diagnostic: impl Into<String>) -> Self {
        Outcome::Deferred {
            status,
            diagnostic: diagnostic.into(),
            remote: None,
        }
    }

    /// A permanent failure with no remote host involved.
    pub fn fail(status: Enhanced, diagnostic: impl Into<String>) -> Self {
        Outcome::Failed {
            status,
            diagnostic: diagnostic.into(),
            remote: None,
        }
    }
}

/// Split `host:port` (`[v6]:port` for IPv6 literals).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(' ') {
        return None;
    }
    Some((host.to_string(), port))
}
