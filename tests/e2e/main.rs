//! End-to-end tests: the real `sluice` binary, real clients (swaks, Python
//! smtplib, raw sockets), real sockets on loopback, a real spool on disk.
//!
//! Each test starts its own server in its own temporary folder on port 0
//! and reads the bound ports from the JSON log, so tests run in parallel.

mod harness;

mod cli;
mod durability;
mod protocol;
mod proxy;
mod smuggling;
mod tls;
