//! The client's settings: timeouts per stage, the HELO name, trust
//! anchors for verified TLS, AUTH credentials.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ClientError;

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

/// Credentials for AUTH (RFC 4954), sent only over TLS whose certificate
/// verified for the host name: a connection that carries them is made as
/// [`TlsMode::Require`](crate::route::TlsMode::Require) whatever its route
/// says, so a machine in the path cannot take the password by presenting
/// any certificate. `allow_unverified_tls` is the operator's explicit
/// opt-out (a relay host with a certificate nobody can verify).
#[derive(Clone)]
pub struct Credentials {
    /// The user name (authentication identity).
    pub username: String,
    /// The password.
    pub password: String,
    /// Send them over TLS whose certificate did not verify (not plaintext).
    pub allow_unverified_tls: bool,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("allow_unverified_tls", &self.allow_unverified_tls)
            .finish()
    }
}
