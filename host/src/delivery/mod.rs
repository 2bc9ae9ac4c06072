//! Delivery: the ways mail leaves — a local Maildir or LMTP, a relay host, or the recipient
//! domain's MX found through DNS — plus DSN bounces.
//!
//! - [`client`]: the outbound SMTP/LMTP client.
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`maildir`]: local delivery into Maildir folders.

pub mod client;
pub mod dsn;
pub mod maildir;

use crate::dns::MxError;
use crate::smtp::Enhanced;

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

impl From<MxError> for Outcome {
    /// An MX lookup that failed, as the outcome of a delivery attempt (no
    /// remote host involved).
    fn from(e: MxError) -> Self {
        match e {
            MxError::Bounce { status, text } => Outcome::fail(status, text),
            MxError::Defer { status, text } => Outcome::defer(status, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_error_as_outcome() {
        let bounce = MxError::Bounce {
            status: Enhanced(5, 1, 2),
            text: "domain x not found".into(),
        };
        assert_eq!(
            Outcome::from(bounce),
            Outcome::fail(Enhanced(5, 1, 2), "domain x not found")
        );
        let defer = MxError::Defer {
            status: Enhanced(4, 4, 3),
            text: "later".into(),
        };
        assert_eq!(
            Outcome::from(defer),
            Outcome::defer(Enhanced(4, 4, 3), "later")
        );
    }
}
