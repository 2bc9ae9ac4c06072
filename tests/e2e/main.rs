//! End-to-end tests: the real `sluice` binary, real clients (swaks, Python
//! smtplib, raw sockets), real sockets on loopback, a real spool on disk.
//!
//! Each test starts its own server in its own temporary folder on port 0
//! and reads the bound ports from the JSON log, so tests run in parallel.
//!
//! The delivery tests (`delivery*.rs`) add aiosmtpd sinks
//! (`tests/clients/sink.py`, see `delivery_kit.rs`) as the next hops and an
//! authoritative DNS server on loopback (`dnsd.rs`) for MX answers.

mod delivery_kit;
mod dnsd;
#[path = "../policy-guests/locate.rs"]
mod guests;
mod harness;

mod cli;
mod delivery;
mod delivery_dsn;
mod delivery_queue;
mod durability;
mod hot_swap;
mod policy_faults;
mod policy_rewrite;
mod protocol;
mod proxy;
mod record_replay;
mod security;
mod smuggling;
mod tls;
