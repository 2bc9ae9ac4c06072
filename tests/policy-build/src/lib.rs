//! The Rust policies of `policies/rust/`, built.
//!
//! This crate's build script compiles every policy crate in `policies/rust/`
//! for `wasm32-wasip2` (a nested cargo build into `target/policies/`), so
//! `cargo test --workspace` (and `cargo build`, `cargo clippy`) fails when a
//! policy does not build. Its tests then check each component:
//!
//! - `tests/components.rs`: every folder in `policies/` has a built
//!   component, which exports `sluice:policy/policy@0.1.0`, carries the SDK
//!   stamp, imports nothing but the contract and WASI, has unit tests, and
//!   passes `sluice policy compile` (the gateway's own loader);
//! - `tests/e2e_policies.rs`: each policy runs in the real gateway binary
//!   and is exercised over SMTP.
//!
//! [`POLICIES`] lists what the build script built.

#![warn(missing_docs)]

/// One policy crate of `policies/` and its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltPolicy {
    /// The folder name in `policies/`, e.g. `"domain-router"`.
    pub dir_name: &'static str,
    /// The package name, e.g. `"domain-router"`.
    pub package: &'static str,
    /// The crate's folder (absolute).
    pub crate_dir: &'static str,
    /// The built component (absolute), e.g.
    /// `.../target/policies/wasm32-wasip2/release/domain_router.wasm`.
    pub wasm: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/policies.rs"));

/// The built policy in the folder `policies/rust/<dir_name>`, if any.
#[must_use]
pub fn policy(dir_name: &str) -> Option<&'static BuiltPolicy> {
    POLICIES.iter().find(|p| p.dir_name == dir_name)
}
