//! The next-hop vocabulary shared by the boxes that decide where mail
//! goes (the policy chain's `route` stage, the queue) and the box that
//! takes it there (delivery): [`Route`], [`TlsMode`] and `host:port`
//! parsing. It sits below all of them and imports only [`crate::smtp`].

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
