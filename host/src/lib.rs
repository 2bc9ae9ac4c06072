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
//! - [`policy`] — the WebAssembly policy runtime: the wasmtime engine, the
//!   chain consulted at each stage, host capabilities, the message resource.
//! - [`queue`] — the queue: routing, scheduling, retries, bounces.
//! - [`delivery`] — how mail leaves: Maildir/LMTP, the SMTP client, DNS,
//!   DSNs.
//! - [`record`] — record and replay: sessions recorded as JSON lines,
//!   replayed against a policy chain, and run as policy test suites.
//! - [`admin`] — the local admin socket behind `sluice queue`.
//! - [`config`] — the TOML configuration, its defaults and its checks.

pub mod admin;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod gate;
pub mod gateway;
pub mod policy;
pub mod private;
pub mod queue;
pub mod record;
pub mod route;
pub mod scaffold;
pub mod server;
pub mod smtp;
pub mod spool;
