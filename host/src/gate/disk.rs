//! Room on the spool's disk: a transaction whose announced size (`MAIL
//! FROM ... SIZE=`) does not fit in the free space less a reserve is
//! refused `452 4.3.1` before DATA, and so is any when less than the
//! reserve is left — the client tries again later, nothing is half-written.

use std::path::PathBuf;

use crate::smtp::reply::std_replies;
use crate::smtp::{Check, Reply};

/// The spool-room rule.
#[derive(Debug, Clone)]
pub struct DiskRule {
    /// The data folder (the spool's file system).
    pub dir: PathBuf,
    /// Octets kept free.
    pub reserve: u64,
}

impl DiskRule {
    /// Octets free for unprivileged writers on the data folder's file
    /// system; `None` when it cannot be told (then nothing is refused).
    pub fn available(&self) -> Option<u64> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// The refusal for a `MAIL FROM`, if its transaction has no room.
    pub fn check_mail(&self, c: &Check) -> Option<Reply> {
        let Check::MailFrom { params, .. } = c else {
            return None;
        };
        let room = self.available()?.saturating_sub(self.reserve);
        let need = params.size.unwrap_or(0);
        if room == 0 || need > room {
            tracing::warn!(
                size = need,
                room,
                reserve = self.reserve,
                "spool disk nearly full: transaction refused"
            );
            return Some(std_replies::insufficient_storage());
        }
        None
    }
}
