//! The policy host: sandboxed WebAssembly components (the contract in
//! `wit/`, package `sluice:policy`) that decide at every SMTP stage and
//! route every recipient.
//!
//! # Life of a policy
//!
//! 1. [`Engine::new`] — once per process: the wasmtime engine (pooling
//!    allocator, epoch interruption), the linker with every host import and
//!    the empty WASI, a ticker thread that advances the epoch every
//!    `epoch_tick`, and the compiled-code cache in `cache_dir`.
//! 2. [`Engine::load_chain`] — compiles each `[[policy]]` (or takes it from
//!    the cache) on a dedicated thread, never on a tokio worker; checks it
//!    was built for this contract version (a component for another major
//!    version is refused with [`PolicyError::IncompatibleContract`]);
//!    pre-links it (`InstancePre`); then calls `describe` and `init` in a
//!    throwaway instance. The result is an immutable [`Chain`].
//! 3. [`Chain::session`] — one [`ChainSession`] per SMTP session. It keeps
//!    its `Arc<Chain>`, so a session keeps the policy set it started with
//!    even if a new chain is swapped in. Each policy gets a fresh instance
//!    (its own `Store`) the first time the session calls one of the stages
//!    it declared; the instance is dropped with the session, or at once
//!    after a failed call (a trap leaves an instance unusable), and the next
//!    call makes a new one. Every fresh instance runs `init` with the
//!    policy's config before its first hook, so the config a policy parsed
//!    in `init` is in the memory of the instance its hooks run in. With
//!    `reuse_instances`, instances a session ends with are kept warm
//!    (already `init`ed) for later sessions instead of dropped.
//! 4. [`Chain::route`] — the queue asks, per recipient, with a fresh
//!    instance per call (or a warm one with `reuse_instances`).
//! 5. [`Reloader::reload`] — builds a new chain from the config file,
//!    keeping every loaded policy whose entry and component are unchanged,
//!    and swaps it into the [`LiveChain`] new sessions read; nothing is
//!    swapped unless every policy loaded and `init`ed. A policy's
//!    `candidate` version runs in shadow (beside it, compared, never
//!    enforced) or canary mode (instead of it for a share of sessions).
//!
//! # Chain semantics
//!
//! At each stage the policies that declared it run in config order:
//! `continue` asks the next one; `accept` ends the stage with acceptance;
//! `reject`/`tempfail` end it with that reply (a code of the wrong class is
//! corrected to 550/451 and logged; an empty or wrong enhanced code becomes
//! `5.7.1`/`4.7.1`); `discard`/`quarantine` outside the data stage are a
//! `550 5.7.1` reject / `451 4.7.1` tempfail. A **failed call** (trap,
//! deadline, memory limit, failed instantiation, failed `init`) follows
//! the policy's `on_error`: `tempfail` → `451 4.3.0`, `continue` → next
//! policy, `reject` → `550 5.7.1`; it is logged (target `sluice::policy`,
//! fields `policy`, `stage`, `cause`) and counted in [`Chain::stats`].
//!
//! # Sandbox and deadlines
//!
//! - **Memory**: each instance's linear memory is capped at the policy's
//!   `max_memory` (a store limiter; the pool's slot size
//!   `[policy_engine] max_memory` is a hard ceiling above it). A guest that
//!   asks for more gets a failed `memory.grow`, which in practice ends in a
//!   trap, counted as "memory limit". Values a guest returns live in its
//!   memory first, so they are bounded by that cap; the host copies them
//!   and then keeps only bounded pieces (reply text 512 octets, reasons 256,
//!   log lines 4 KiB × 100 per call, stdout/stderr 8 KiB per stream).
//! - **CPU**: a call may run for `timeout` worth of epoch ticks. The guest
//!   yields to tokio at every tick (so a busy guest holds a worker thread
//!   for one tick at most) and the ticks in which it ran are counted; past
//!   the budget it is interrupted.
//! - **Host I/O**: DNS lookups are awaited, not run on the guest's CPU
//!   budget. One call may wait for them at most
//!   `[policy_engine] host_io_timeout` in all; a lookup gets what is left as
//!   its timeout, and once it is used up further lookups answer
//!   `temporary` (not a trap). The number of lookups is capped too, per
//!   call (`max_dns_lookups_per_call`) and per policy per session
//!   (`max_dns_lookups_per_session`), so a policy cannot make the gateway
//!   send thousands of queries; answers come from the resolver's
//!   TTL-bound cache when it has them.
//! - **Wall clock**: every call (and instantiation) is also bounded by
//!   `tokio::time::timeout(4 × timeout + host_io_timeout)`, a backstop
//!   against anything the two budgets above do not see (a starved worker,
//!   a host call that never returns).
//! - **WASI**: linked so `wasm32-wasip2` guests instantiate, with nothing
//!   granted: no environment, arguments, files or sockets; stdin closed;
//!   stdout/stderr captured and logged; the wall clock frozen at the Unix
//!   epoch unless the policy has the `clock` capability; random numbers and
//!   the monotonic clock work.
//! - **Capabilities**: `log` always; `clock`, `metrics`, `kv`, `dns` per
//!   policy. A call to one not granted answers `access-denied`.
//!
//! # Compiled-code cache
//!
//! Compiled components are kept in `cache_dir` by wasmtime's own cache
//! (its key hashes the component bytes together with every engine setting
//! that affects compiled code — the same inputs as
//! `Engine::precompile_compatibility_hash` — and the wasmtime version;
//! entries are written to a temporary file and renamed; an entry that does
//! not decode is ignored and the component recompiled). `sluice policy
//! compile FILE` fills it ahead of time ([`Engine::precompile`]). Loading a
//! precompiled file directly (`Component::deserialize_file`) is `unsafe` in
//! wasmtime, which this crate forbids; the cache still validates the
//! component on load but skips code generation.

mod bindings;
mod chain;
mod engine;
#[cfg(fuzzing)]
pub mod fuzzing;
#[cfg(test)]
#[path = "../../../tests/policy-guests/locate.rs"]
mod guests;
mod host;
mod kv;
mod load;
mod message;
mod pool;
mod reload;
mod snapshot;
pub mod tap;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::{Capability, OnError, PolicyConfig, PolicyEngineConfig};
pub use chain::{Chain, ChainSession};
pub use engine::{Engine, Precompiled};
pub use kv::{KvError, KvStore};
pub use message::MessageResource;
pub use pool::{InstancePool, PoolFull, Reservation};
pub use reload::{LiveChain, ReloadReport, Reloader, report_json, watch};
pub use tap::HostTap;

use crate::dns::Resolver;
use crate::route::Route;
use crate::smtp::Reply;

/// The contract this host speaks: `sluice:policy@CONTRACT_VERSION`.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The contract's package name.
pub const CONTRACT_PACKAGE: &str = "sluice:policy";

/// The stages a policy may handle (the contract's `stage` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A client connected.
    Connect,
    /// EHLO/HELO.
    Helo,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    Rcpt,
    /// The message has arrived.
    Data,
    /// The next hop of a recipient (asked by the queue).
    Route,
}

impl Stage {
    /// Every stage, in SMTP order.
    pub const ALL: [Stage; 6] = [
        Stage::Connect,
        Stage::Helo,
        Stage::MailFrom,
        Stage::Rcpt,
        Stage::Data,
        Stage::Route,
    ];

    /// The contract's name: `connect`, `helo`, `mail-from`, `rcpt`, `data`,
    /// `route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::MailFrom => "mail-from",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Route => "route",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host lends to policies.
#[derive(Debug, Clone)]
pub struct Services {
    /// DNS for the `dns` capability (the delivery engine's resolver).
    pub resolver: Arc<dyn Resolver>,
    /// The key-value store for the `kv` capability: embedded, in memory,
    /// per process, not persisted (see [`KvStore`]). Keep one for the life
    /// of the process so state survives chain reloads.
    pub kv: Arc<KvStore>,
}

/// Who is talking to us, for the policies of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Client address (the PROXY source when a trusted proxy sent one).
    pub client_ip: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// The listener that took the connection.
    pub listener: SocketAddr,
    /// TLS `(version, cipher)` when the session is encrypted.
    pub tls: Option<(String, String)>,
    /// Whether the client may relay.
    pub relay_client: bool,
    /// The EHLO/HELO name, once given.
    pub helo: Option<String>,
}

/// The envelope as far as it is known at a stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeInfo {
    /// Reverse-path without brackets; empty for the null sender.
    pub sender: String,
    /// MAIL FROM parameters, `(NAME, value)`; empty value for none.
    pub sender_params: Vec<(String, String)>,
    /// Recipients accepted so far, `local@domain`.
    pub recipients: Vec<String>,
}

/// The chain's answer at an SMTP stage other than data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody objected: give the stage's normal reply.
    Continue,
    /// A policy accepted: give the stage's normal positive reply.
    Accept,
    /// Refuse permanently with this (5xx) reply.
    Reject(Reply),
    /// Refuse temporarily with this (4xx) reply.
    Tempfail(Reply),
}

/// The chain's answer at the data stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDecision {
    /// What to do with the message.
    pub outcome: DataOutcome,
    /// Changes to apply, in order, from every policy that ran (the deciding
    /// one included). Empty unless the outcome lets the message through
    /// (`Continue`, `Accept`, `Quarantine`).
    pub changes: Vec<Change>,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOutcome {
    /// Nobody objected: store and deliver.
    Continue,
    /// A policy accepted: store and deliver.
    Accept,
    /// Refuse permanently with this (5xx) reply.
    Reject(Reply),
    /// Refuse temporarily with this (4xx) reply.
    Tempfail(Reply),
    /// Say 250, then drop the message.
    Discard,
    /// Say 250 and keep the message in quarantine with this reason.
    Quarantine(String),
}

/// A change a data-stage policy asked for (validated: header names are
/// field names, values one line, addresses `local@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a header field at the top.
    AddHeader {
        /// Field name.
        name: String,
        /// Unfolded value (fold it when writing).
        value: String,
    },
    /// Remove every field with this name (case-insensitive).
    RemoveHeader(String),
    /// Add an envelope recipient.
    AddRecipient(String),
    /// Remove an envelope recipient (case-insensitive).
    RemoveRecipient(String),
}

/// The chain's answer for one recipient's next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// No policy decided: the gateway's own domain match applies.
    Default,
    /// Use this route (`Route::Reject` fails the recipient with a DSN).
    Route(Route),
    /// A policy failed and its `on_error` is `tempfail`: try this
    /// recipient again later.
    Defer(Reply),
}

/// Verdicts given by one policy, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounts {
    /// `continue` (and `default` routes).
    pub continued: u64,
    /// `accept`.
    pub accepted: u64,
    /// `reject` (and rejecting routes).
    pub rejected: u64,
    /// `tempfail`.
    pub tempfailed: u64,
    /// `discard`.
    pub discarded: u64,
    /// `quarantine`.
    pub quarantined: u64,
    /// Routes other than `default` and `reject`.
    pub routed: u64,
}

/// What one policy of a chain has done (for `sluice policy status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStats {
    /// Name from the config.
    pub name: String,
    /// The version the policy reports in `describe`.
    pub version: String,
    /// SHA-256 of the component file, hex.
    pub wasm_hash: String,
    /// The stages it declared.
    pub stages: Vec<Stage>,
    /// Hook calls made (failed ones included).
    pub calls: u64,
    /// Verdicts of the calls that succeeded.
    pub verdicts: VerdictCounts,
    /// Failed calls (every cause below, and failed instantiations).
    pub errors: u64,
    /// Calls stopped by the CPU or wall-clock deadline.
    pub timeouts: u64,
    /// Calls that trapped (memory-limit traps excluded).
    pub traps: u64,
    /// Calls that failed at the memory cap.
    pub memory_limits: u64,
    /// Instances made (one per session that called the policy, plus one
    /// after each failure, plus one per route call), except those taken
    /// warm (`reused`).
    pub instantiations: u64,
    /// Warm instances handed to a session or route call
    /// (`reuse_instances`).
    pub reused: u64,
    /// Mean time of a hook call.
    pub mean_call_time: Duration,
    /// The policy's own counters (`metrics` capability), named
    /// `<policy>_<name>` (a `-` in the policy name becomes `_`).
    pub counters: Vec<(String, u64)>,
    /// When this version was loaded.
    pub loaded_at: std::time::SystemTime,
    /// The candidate version, when one is configured.
    pub candidate: Option<Box<CandidateStats>>,
}

/// A candidate version's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateStats {
    /// Shadow or canary.
    pub mode: crate::config::CandidateMode,
    /// The share of new sessions a canary takes.
    pub percent: u8,
    /// Shadow calls whose outcome differed from the active version's.
    pub differences: u64,
    /// The candidate's own figures.
    pub stats: PolicyStats,
}

/// Why a call into a policy failed (the `cause` of the log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped (panic, `unreachable`, bad memory access, …).
    #[error("trap: {0}")]
    Trap(String),
    /// The guest ran longer than its CPU budget.
    #[error("CPU deadline of {0:?} exceeded")]
    Deadline(Duration),
    /// The call took longer than its wall-clock bound.
    #[error("wall-clock bound of {0:?} exceeded")]
    WallTimeout(Duration),
    /// The guest asked for more memory than its cap.
    #[error("memory limit of {limit} octets reached (asked for {asked})")]
    MemoryLimit {
        /// The cap.
        limit: u64,
        /// The size asked for.
        asked: u64,
    },
    /// A fresh instance could not be made (a trap while starting).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The instance pool had no slot for the instance. Never follows
    /// `on_error`: a temporary failure (`451 4.3.2`), so that a full pool
    /// cannot make a `continue` policy be skipped.
    #[error("the policy instance pool is full")]
    Capacity,
    /// `init` refused the config in a fresh instance.
    #[error("init failed: {0}")]
    Init(String),
    /// The guest returned something the host cannot use.
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl CallError {
    /// Whether this is a deadline (CPU or wall clock).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Deadline(_) | CallError::WallTimeout(_))
    }
}

/// Errors of the policy host: setting up the engine and loading policies.
/// Each names the policy and the cause.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The engine could not be configured.
    #[error("cannot set up the policy engine: {0}")]
    Engine(String),
    /// The compiled-code cache could not be set up.
    #[error("cannot use the policy cache {dir}: {cause}")]
    Cache {
        /// The cache folder.
        dir: std::path::PathBuf,
        /// Why.
        cause: String,
    },
    /// The component file could not be read.
    #[error("policy {policy:?}: cannot read {path}: {source}")]
    Read {
        /// Policy name.
        policy: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid WebAssembly component.
    #[error("policy {policy:?}: cannot compile {path}: {cause}")]
    Compile {
        /// Policy name.
        policy: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        cause: String,
    },
    /// The component was built for another version of the contract.
    #[error(
        "policy {policy:?}: incompatible contract: the component was built for {found}, \
         this gateway speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION} \
         (components for {expected} load); rebuild it against a matching sluice-guest"
    )]
    IncompatibleContract {
        /// Policy name.
        policy: String,
        /// What the component imports or exports, e.g. `sluice:policy@1.0.0`.
        found: String,
        /// The versions this host accepts, e.g. `0.1.x`.
        expected: String,
    },
    /// The component does not export the policy interface.
    #[error("policy {policy:?}: not a Sluice policy: {cause}")]
    NotAPolicy {
        /// Policy name.
        policy: String,
        /// Why.
        cause: String,
    },
    /// The component imports something the host does not provide.
    #[error("policy {policy:?}: cannot link: {cause}")]
    Link {
        /// Policy name.
        policy: String,
        /// Why (the missing import).
        cause: String,
    },
    /// A call made while loading (`describe`, `init`) failed.
    #[error("policy {policy:?}: {call} failed: {cause}")]
    Load {
        /// Policy name.
        policy: String,
        /// `instantiate`, `describe` or `init`.
        call: &'static str,
        /// Why.
        cause: CallError,
    },
    /// `init` refused the configuration.
    #[error("policy {policy:?}: init refused the config: {message}")]
    Init {
        /// Policy name.
        policy: String,
        /// The policy's error text (bounded).
        message: String,
    },
    /// `describe` returned something unusable.
    #[error("policy {policy:?}: bad description: {cause}")]
    Description {
        /// Policy name.
        policy: String,
        /// Why.
        cause: String,
    },
    /// The compile thread could not run or died.
    #[error("policy {policy:?}: compile thread failed: {cause}")]
    Thread {
        /// Policy name.
        policy: String,
        /// Why.
        cause: String,
    },
}
