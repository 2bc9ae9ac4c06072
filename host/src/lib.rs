//! Sluice: a programmable SMTP mail gateway.
//!
//! The path of one message, one module per box:
//!
//! - [`smtp`] — the protocol, both directions, sans I/O: parser, replies,
//!   the server state machine, the DATA and BDAT readers, the client side.
//! - [`private`] — the umask and checked private directories.
//! - [`route`] — the next-hop vocabulary: `Route`, `TlsMode`.
//! - [`config`] — the TOML configuration, its defaults and its checks.
//! - [`dns`] — the resolver trait, hickory, static tables, MX selection.
//! - [`spool`] — the durable spool: a message and its envelope are on disk
//!   and fsync'd before the `250`.
//! - [`delivery`] — how mail leaves: Maildir/LMTP, the SMTP client, DSNs.
//! - [`policy`] — the WebAssembly policy runtime: the engine and its
//!   loading, the chain consulted at each stage, one host module per WIT
//!   interface, the message resource, hot swap (`reload`, `snapshot`).
//! - [`queue`] — the queue: routing, scheduling, retries, bounces.
//! - [`gate`] — the stage gate: built-in rules and the chain at each
//!   stage, run alike by live sessions and by replay.
//! - [`record`] — record and replay: sessions recorded as JSON lines,
//!   replayed through the gate, and run as policy test suites.
//! - [`server`] — listeners, TLS, PROXY protocol, admission and the memory
//!   budget, and the per-connection driver that runs a [`smtp::Session`].
//! - [`admin`] — the local admin socket behind `sluice queue`.
//! - [`scaffold`] — `sluice policy new` and `sluice policy build`.
//! - [`gateway`] — start-up wiring: builds every box, hands them to the
//!   listeners.
//!
//! Each box imports only boxes above it in this list (ARCHITECTURE.md;
//! `scripts/house --check` keeps it so).

pub mod admin;
pub mod budget;
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
