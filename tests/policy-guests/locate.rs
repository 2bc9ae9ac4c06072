//! Build the purpose-built test components once per process and say where
//! they are. Shared by path (`#[path = …] mod guests;`) by the host's unit
//! tests, its policy benchmark and the end-to-end tests, which are
//! separate crates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Build `tests/policy-guests` (release, wasm32-wasip2) into its own target
/// folder — a nested cargo must not share the outer build's folder — and
/// return the folder holding the `.wasm` files.
pub(crate) fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root")
            .to_path_buf();
        let target = root.join("target").join("policy-guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root.join("tests/policy-guests"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("tests/policy-guests/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo to build tests/policy-guests");
        assert!(status.success(), "building tests/policy-guests failed");
        target.join("wasm32-wasip2").join("release")
    })
}

/// The component of the test guest `name` (`basic`, `faulty`,
/// `other-major`, `versioned`).
pub(crate) fn guest_wasm(name: &str) -> PathBuf {
    guests_dir().join(format!("policy_guest_{}.wasm", name.replace('-', "_")))
}
