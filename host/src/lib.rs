//! Sluice: a programmable SMTP mail gateway.
//!
//! The path of one message, one module per box:
//!
//! - [`smtp`] — the protocol core, sans I/O: parser, replies, the state
//!   machine, the DATA and BDAT readers.
//! - [`server`] — listeners, TLS, PROXY protocol, connection limits and the
//!   per-connection driver that runs a [`smtp::Session`] over a socket.
//! - [`spool`] — the durable spool: a message and its envelope are on disk
//!   and fsync'd before the `250`.
//! - [`config`] — the TOML configuration, its defaults and its checks.

pub mod config;
pub mod server;
pub mod smtp;
pub mod spool;
