//! Local delivery into Maildir folders (`DATA_DIR/mail/DOMAIN/LOCAL/`),
//! following the Maildir rules: write under `tmp/`, sync, move into `new/`
//! under a unique name, sync the folder.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Maildir delivery errors.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// The address cannot name a mailbox.
    #[error("no local mailbox for {0:?}")]
    BadAddress(String),
    /// A file operation failed.
    #[error("maildir {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl MaildirError {
    /// Whether retrying may help (I/O) or not (a bad address).
    pub fn is_permanent(&self) -> bool {
        matches!(self, MaildirError::BadAddress(_))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MaildirError + '_ {
    move |source| MaildirError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The root of the local mailboxes.
#[derive(Debug)]
pub struct Maildirs {
    root: PathBuf,
    hostname: String,
    counter: AtomicU64,
}

/// Make one path component safe: lower-case ASCII, and every octet
/// outside `[a-z0-9._+-]` (and a leading dot) written as `%XX`.
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let b = b.to_ascii_lowercase();
        let plain = b.is_ascii_alphanumeric() || b"_+-".contains(&b) || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Maildirs {
    /// Mailboxes under `root`; `hostname` goes into file names.
    pub fn new(root: PathBuf, hostname: &str) -> Self {
        Self {
            root,
            hostname: component(hostname),
            counter: AtomicU64::new(0),
        }
    }

    /// The Maildir folder of `address` (`local@domain`; a bare
    /// `postmaster` goes to `postmaster@default_domain`).
    pub fn folder(&self, address: &str, default_domain: &str) -> Result<PathBuf, MaildirError> {
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None if address.eq_ignore_ascii_case("postmaster") => (address, default_domain),
            None => return Err(MaildirError::BadAddress(address.to_string())),
        };
        let local = local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(local);
        let domain = domain.trim_end_matches('.');
        if local.is_empty() || domain.is_empty() {
            return Err(MaildirError::BadAddress(address.to_string()));
        }
        Ok(self.root.join(component(domain)).join(component(local)))
    }

    /// Deliver `parts` (written one after the other) into the mailbox of
    /// `address`. Blocking: call from a blocking thread. Returns the file.
    pub fn deliver(
        &self,
        address: &str,
        default_domain: &str,
        parts: &[&[u8]],
    ) -> Result<PathBuf, MaildirError> {
        let folder = self.folder(address, default_domain)?;
        let (tmp, new) = (folder.join("tmp"), folder.join("new"));
        for d in [&tmp, &new, &folder.join("cur")] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed),
            self.hostname
        );
        let tmp_file = tmp.join(&name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_file)
                .map_err(io_err(&tmp_file))?;
            for p in parts {
                f.write_all(p).map_err(io_err(&tmp_file))?;
            }
            f.sync_all().map_err(io_err(&tmp_file))?;
            let size: usize = parts.iter().map(|p| p.len()).sum();
            let dest = new.join(format!("{name},S={size}"));
            fs::rename(&tmp_file, &dest).map_err(io_err(&tmp_file))?;
            File::open(&new)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&new))?;
            Ok(dest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_file);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path().to_path_buf(), "mx.example");
        let p = m
            .deliver(
                "Bob@Example.COM",
                "example.com",
                &[b"A: b\r\n", b"\r\nbody\r\n"],
            )
            .unwrap();
        assert!(p.starts_with(dir.path().join("example.com/bob/new")));
        assert_eq!(fs::read(&p).unwrap(), b"A: b\r\n\r\nbody\r\n");
        assert_eq!(
            fs::read_dir(dir.path().join("example.com/bob/tmp"))
                .unwrap()
                .count(),
            0
        );
        let p2 = m
            .deliver("bob@example.com", "example.com", &[b"x"])
            .unwrap();
        assert_ne!(p, p2);
    }

    #[test]
    fn hostile_local_parts_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path().to_path_buf(), "mx");
        for a in [
            "../../etc@example.com",
            "\"a/b\"@example.com",
            ".hidden@example.com",
            "a@..",
            "x@a/b",
        ] {
            let Ok(f) = m.folder(a, "example.com") else {
                continue;
            };
            assert!(f.starts_with(dir.path()), "{a} -> {}", f.display());
            let rel = f.strip_prefix(dir.path()).unwrap();
            assert_eq!(rel.components().count(), 2, "{a} -> {}", rel.display());
            assert!(
                rel.components()
                    .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
            );
        }
        assert_eq!(
            m.folder("postmaster", "example.com").unwrap(),
            dir.path().join("example.com/postmaster")
        );
        assert!(m.folder("nobody", "example.com").is_err());
        assert!(m.folder("a@..", "example.com").is_err());
    }
}
