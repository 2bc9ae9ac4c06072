//! The one harness that starts the real gateway for Sluice's tests.
//!
//! Every test that runs `sluice serve` — the host's end-to-end and hostile
//! tests, the shipped policies' tests, the other languages' policies —
//! finds the binary, makes its sandbox and reads its log through this
//! crate, so a change to how the gateway starts or logs is made here once.
//!
//! - [`sluice_bin`]: the binary cargo built beside the test.
//! - [`Sandbox`]: a temporary folder with a config and a data folder.
//! - [`Server`]: a running `sluice serve --log-format json`, killed (by
//!   PID) and reaped when it drops; its log collected as it comes.
//! - [`Smtp`]: a line-by-line SMTP client for tests that speak commands
//!   and read replies.
//!
//! Servers listen on 127.0.0.1 only; every wait has a deadline.

#![warn(missing_docs)]

mod sandbox;
mod server;
mod smtp;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use sandbox::{PolicyGateway, Sandbox};
pub use server::Server;
pub use smtp::{Reply, Smtp};

/// How long a server may take to print its "listening" lines (a debug
/// build compiles each policy that is not in the compiled cache yet).
pub const STARTUP: Duration = Duration::from_secs(300);
/// How long one SMTP reply may take.
pub const REPLY: Duration = Duration::from_secs(30);
/// How long a delivery may take to show up.
pub const DELIVERY: Duration = Duration::from_secs(20);

/// `target/<profile>/sluice`: test binaries live in
/// `target/<profile>/deps/`, the gateway one folder up. Cargo builds it for
/// the host crate's tests; `cargo test --workspace` for the others.
#[must_use]
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the gateway binary {} is missing: `cargo test --workspace` builds it (or `cargo build -p sluice`)",
        bin.display()
    );
    bin
}
