//! Folders only the gateway's own user may use: the data folder (mail,
//! the spool, the admin socket, recordings) and the compiled policy cache
//! (native code that wasmtime runs as trusted).
//!
//! A folder is created `0700`. An existing one must belong to this user
//! (root too refuses another user's folder: that user could plant code or
//! mail in it); one that others could write into is refused,
//! since anything in it may have been planted; one others can merely read
//! or enter is narrowed to `0700`. Files and folders made inside inherit
//! no access for others from the process umask (`077`, set at start by
//! `main.rs`).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Why a folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// It could not be created, read or narrowed.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It belongs to another user.
    #[error("{path} belongs to uid {owner}, not to this user (uid {me}): refusing to use it")]
    NotOurs {
        /// The folder.
        path: String,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Other users may write into it.
    #[error(
        "{path} is writable by other users (mode {mode:o}): refusing to use it; \
         check its contents, then chmod 700 it"
    )]
    Writable {
        /// The folder.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It is not a folder.
    #[error("{path} is not a folder")]
    NotADir {
        /// The path.
        path: String,
    },
}

/// The process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Make sure `dir` exists and only this user may use it (see the module
/// doc). Returns whether an existing folder had to be narrowed.
pub fn ensure(dir: &Path) -> Result<bool, PrivateDirError> {
    let path = || dir.display().to_string();
    let io = |source| PrivateDirError::Io {
        path: path(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    // The folder itself, not what a symlink points to.
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADir { path: path() });
    }
    let me = euid();
    if meta.uid() != me {
        return Err(PrivateDirError::NotOurs {
            path: path(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::Writable { path: path(), mode });
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_narrowed_or_refused() {
        let t = tempfile::tempdir().unwrap();
        let new = t.path().join("a/b");
        assert!(!ensure(&new).unwrap());
        assert_eq!(mode(&new), 0o700);

        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure(&open).unwrap(), "0755 is narrowed");
        assert_eq!(mode(&open), 0o700);

        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            ensure(&shared),
            Err(PrivateDirError::Writable { mode: 0o777, .. })
        ));

        let file = t.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(ensure(&file), Err(PrivateDirError::Io { .. })));
    }
}
