//! The durable spool.
//!
//! A message is two files in `DATA_DIR/spool/queue/`: `ID.eml` (the
//! message as received, with our `Received:` header first) and `ID.json`
//! (the [`Envelope`]). Both are written under `tmp/`, made durable, renamed
//! into `queue/` — the envelope last, so it is the commit mark — and the
//! `queue/` directory is fsync'd before [`Spool::store`] returns. A crash
//! at any instant leaves both files or neither in effect: [`FsSpool::open`]
//! deletes whatever an interrupted write left behind.
//!
//! A damaged entry — an envelope that does not decode, a folder where a
//! file belongs — is never fatal: it is moved to `spool/corrupt/` with a
//! note of why ([`Spool::set_aside`]), logged, and listed by
//! `sluice queue list`; the rest of the queue goes on.
//!
//! With group commit on, concurrent stores share one filesystem sync and
//! one directory sync (see [`FsSpool`]).

mod envelope;
mod fs;

pub use envelope::{
    ClientInfo, ENVELOPE_VERSION, Envelope, RcptState, Recipient, TlsInfo, tls_names,
};
pub use fs::{FsSpool, Recovery};

use std::future::Future;
use std::pin::Pin;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An envelope could not be encoded or decoded.
    #[error("spool envelope {path}: {source}")]
    Envelope {
        /// The file.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Another gateway already runs on this data folder.
    #[error("{0} is locked by another running sluice")]
    Locked(String),
    /// The committer thread is gone (only at shutdown).
    #[error("the spool is shutting down")]
    Closed,
}

impl SpoolError {
    /// Is the entry itself damaged (an envelope that does not decode, a
    /// folder where a file belongs), so that reading it again cannot help?
    /// Such an entry is set aside, never retried.
    pub fn is_damage(&self) -> bool {
        match self {
            SpoolError::Envelope { .. } => true,
            SpoolError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::InvalidData
            ),
            SpoolError::Locked(_) | SpoolError::Closed => false,
        }
    }

    /// Did the disk (or the user's quota) run out of room? The message is
    /// not stored and nothing of it is left; the client may try later.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}

/// A message to store: its envelope, the trace header we prepend, and the
/// body as received.
#[derive(Debug)]
pub struct NewMessage {
    /// The envelope; its `size` and `trace_len` are filled by the spool.
    pub envelope: Envelope,
    /// The `Received:` header, CRLF-terminated.
    pub trace: Vec<u8>,
    /// The message.
    pub body: Vec<u8>,
}

/// A future returned by [`Spool`] methods.
pub type SpoolFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SpoolError>> + Send + 'a>>;

/// Durable message storage. Cost contract of `store`: when the future
/// resolves `Ok`, the message and envelope survive a crash or power loss;
/// it does blocking file work off the async workers.
pub trait Spool: Send + Sync + std::fmt::Debug {
    /// Store a new message durably.
    fn store(&self, msg: NewMessage) -> SpoolFuture<'_, ()>;
    /// The ids of the messages in the queue.
    fn list(&self) -> Result<Vec<String>, SpoolError>;
    /// Read a message's envelope and content (blocking).
    fn read(&self, id: &str) -> Result<(Envelope, Vec<u8>), SpoolError>;
    /// Read a message's envelope only (blocking).
    fn read_envelope(&self, id: &str) -> Result<Envelope, SpoolError>;
    /// Read a message's content only (blocking).
    fn read_body(&self, id: &str) -> Result<Vec<u8>, SpoolError>;
    /// Replace a message's envelope atomically and durably (blocking):
    /// after `Ok`, a crash leaves the new envelope, before it the old one.
    fn update(&self, env: &Envelope) -> Result<(), SpoolError>;
    /// Remove a message (blocking). The envelope goes first, so a crash in
    /// between leaves an orphan body that start-up removes.
    fn remove(&self, id: &str) -> Result<(), SpoolError>;
    /// Move a damaged message out of the queue, with `why`, where an
    /// operator can look at it; it is never tried again (blocking).
    fn set_aside(&self, id: &str, why: &str) -> Result<(), SpoolError>;
    /// The entries set aside, oldest id first (blocking).
    fn corrupt(&self) -> Result<Vec<SetAside>, SpoolError>;
}

/// One damaged entry in `spool/corrupt/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetAside {
    /// The queue id (or the name it had in `spool/tmp/`).
    pub id: String,
    /// Why it was set aside, with when.
    pub reason: String,
    /// Its files and folders in `spool/corrupt/`.
    pub files: Vec<String>,
}

/// A new unique, time-ordered queue id (UUIDv7, 32 hex digits).
pub fn new_queue_id() -> String {
    uuid::Uuid::now_v7()
        .simple()
        .to_string()
        .to_ascii_uppercase()
}
