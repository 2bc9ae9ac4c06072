//! The TOML configuration: types, defaults, parsing and checks.
//!
//! Every field has a default (see `default.toml`, which is embedded and is
//! what `sluice serve` runs without `--config`). Unknown keys are refused,
//! and every error names the file, the line and the field.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration error, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a field of the wrong type or name.
    #[error("{file}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{file}: line {line}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line of the field, or 0 when it is not in the file.
        line: usize,
        /// The field, as a dotted path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Spool and state folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Our host name.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Domains delivered here.
    #[serde(default = "default_local_domains")]
    pub local_domains: Vec<String>,
    /// Networks allowed to relay.
    #[serde(default = "default_relay_networks")]
    pub relay_networks: Vec<IpNet>,
    /// Listeners.
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Certificate and key; absent: self-signed at start.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Protocol and resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Spool settings.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// The queue: retries and concurrency.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Delivery: MX, relay, local, TLS.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// DNS resolution.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The policy chain (`[[policy]]`), in order.
    #[serde(rename = "policy", default)]
    pub policies: Vec<PolicyConfig>,
    /// The policy runtime (`[policy_engine]`).
    #[serde(default)]
    pub policy_engine: PolicyEngineConfig,
    /// Session recording (`[record]`); which sessions is per listener.
    #[serde(default)]
    pub record: RecordConfig,
}

/// `[record]`: where and how recorded sessions are written (see
/// `docs/recording-format.md`). Which sessions are recorded is set per
/// listener (`record = …`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Folder of the recording files; empty: `DATA_DIR/recordings`.
    pub dir: PathBuf,
    /// A file past this size is closed and a new one started.
    pub max_file_size: ByteSize,
    /// Files kept; the oldest are deleted past it (0: keep all).
    pub max_files: usize,
    /// Keep only the header section of messages, with their size and
    /// SHA-256.
    pub redact: bool,
    /// Messages larger than this are recorded redacted.
    pub max_message_size: ByteSize,
    /// What one session's record may hold in memory while the session
    /// runs: messages that would pass it are recorded redacted, other
    /// events past it left out (the record marked truncated).
    pub max_session_size: ByteSize,
    /// Memory for recorded sessions waiting to be written; sessions past
    /// it are dropped (and counted), never waited for.
    pub max_queue: ByteSize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            max_file_size: ByteSize(64 << 20),
            max_files: 20,
            redact: false,
            max_message_size: ByteSize(10 << 20),
            max_session_size: ByteSize(16 << 20),
            max_queue: ByteSize(64 << 20),
        }
    }
}

/// Which sessions of a listener are recorded: `"off"`, `"all"`,
/// `"rejected"` (those with a refused stage: a 4xx/5xx from a policy or
/// the built-in rules), or a sample rate between 0 and 1 (`0.01`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RecordMode {
    /// Nothing.
    #[default]
    Off,
    /// Every session.
    All,
    /// Sessions in which a stage was refused.
    Rejected,
    /// This share of sessions, chosen at random at connect.
    Sample(f64),
}

impl<'de> Deserialize<'de> for RecordMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            F(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::F(r) if (0.0..=1.0).contains(&r) => Ok(if r == 0.0 {
                RecordMode::Off
            } else {
                RecordMode::Sample(r)
            }),
            Raw::F(r) => Err(serde::de::Error::custom(format!(
                "a sample rate is between 0 and 1, not {r}"
            ))),
            Raw::S(s) => match s.as_str() {
                "off" => Ok(RecordMode::Off),
                "all" => Ok(RecordMode::All),
                "rejected" => Ok(RecordMode::Rejected),
                other => Err(serde::de::Error::custom(format!(
                    "record is \"off\", \"all\", \"rejected\" or a sample rate such as 0.05, not {other:?}"
                ))),
            },
        }
    }
}

/// One `[[policy]]`: a WebAssembly policy component in the chain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy's name in logs, metrics and the key-value namespace:
    /// 1 to 64 of `[a-z0-9_-]`, unique in the chain.
    pub name: String,
    /// The component file (`.wasm`), relative to the working directory.
    pub path: PathBuf,
    /// Host capabilities granted beyond `log` (which is always granted).
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// What a failed call (trap, deadline, memory limit) means.
    #[serde(default)]
    pub on_error: OnError,
    /// Most linear memory one instance may use.
    #[serde(default = "default_policy_memory")]
    pub max_memory: ByteSize,
    /// CPU time one hook call may take (its running time, in epoch ticks).
    #[serde(default = "default_policy_timeout", with = "humantime_de")]
    pub timeout: Duration,
    /// Keep `init`ed instances warm and hand them to later sessions
    /// instead of a fresh instance per session. Only for policies that keep
    /// no per-session state in their own memory (see README, Policies).
    #[serde(default)]
    pub reuse_instances: bool,
    /// A candidate version of this policy (another `.wasm`), run with the
    /// same config, capabilities and limits: in `shadow` mode beside the
    /// active version on every session (its verdicts are logged and
    /// counted as differences, never enforced); in `canary` mode instead
    /// of it for `canary_percent` of new sessions.
    #[serde(default)]
    pub candidate: Option<PathBuf>,
    /// How the candidate runs.
    #[serde(default)]
    pub candidate_mode: CandidateMode,
    /// The share of new sessions a `canary` candidate takes, 1 to 100.
    #[serde(default = "default_canary_percent")]
    pub canary_percent: u8,
    /// The policy's own session tests (a `sluice test` folder). A reload
    /// runs them against a new version of the policy before swapping it
    /// in, and refuses the version when one fails.
    #[serde(default)]
    pub tests: Option<PathBuf>,
    /// Keys the policy's key-value namespace may hold (`kv` capability).
    #[serde(default = "default_kv_entries")]
    pub kv_max_entries: usize,
    /// Octets its key-value namespace may hold, keys, values and a fixed
    /// overhead per entry counted.
    #[serde(default = "default_kv_memory")]
    pub kv_max_memory: ByteSize,
    /// Handed to the policy's `init` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
}

/// A host capability a policy may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Logging into the gateway's log (always granted; naming it is allowed).
    Log,
    /// The wall clock (`sluice:policy/clock`, and the WASI wall clock).
    Clock,
    /// Counters (`sluice:policy/metrics`).
    Metrics,
    /// The key-value store (`sluice:policy/kv`).
    Kv,
    /// DNS lookups through the gateway's resolver (`sluice:policy/dns`).
    Dns,
}

fn default_canary_percent() -> u8 {
    10
}

/// How a policy's candidate version runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateMode {
    /// Beside the active version, never enforced.
    #[default]
    Shadow,
    /// Instead of the active version, for a share of new sessions.
    Canary,
}

/// What a failed policy call means for the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// `451 4.3.0`: the client tries again later (mail is delayed, never
    /// lost, never waved through).
    #[default]
    Tempfail,
    /// Skip this policy: the next one in the chain decides.
    Continue,
    /// `550 5.7.1`: refuse.
    Reject,
}

/// `[policy_engine]`: the WebAssembly runtime shared by every policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyEngineConfig {
    /// Compiled-code cache; empty: `DATA_DIR/policy-cache`.
    pub cache_dir: PathBuf,
    /// How often the epoch ticks: the granularity of call deadlines and how
    /// long a busy guest may hold a worker thread before it yields.
    #[serde(with = "humantime_de")]
    pub epoch_tick: Duration,
    /// Time one hook call may spend waiting for host I/O (DNS).
    #[serde(with = "humantime_de")]
    pub host_io_timeout: Duration,
    /// DNS lookups one hook call may make (answers from the resolver's
    /// cache count too: the cap is on what a policy asks for).
    pub max_dns_lookups_per_call: u32,
    /// DNS lookups one policy may make in one SMTP session.
    pub max_dns_lookups_per_session: u32,
    /// Preallocate instance slots (pooling allocator): fast instantiation.
    pub pooling: bool,
    /// Instances alive at once, all policies together; with `pooling`, the
    /// pool size. Each SMTP session reserves one per policy (and shadow
    /// candidate) when it starts; a session that cannot is refused with
    /// `421 4.3.2` after an idle one is shed if it can be. Unset: sized to
    /// serve `max_connections` sessions of the configured chain (see
    /// [`Config::engine_config`]); [`PolicyEngineConfig::pool_size`] for an
    /// engine made without a gateway config.
    pub max_instances: Option<u32>,
    /// The largest `max_memory` a policy may have (the pool's slot size).
    pub max_memory: ByteSize,
    /// Compile with every core (faster, but competes with serving); off:
    /// one background thread.
    pub parallel_compilation: bool,
    /// Reload the policies when a policy file or the config file changes
    /// (besides SIGHUP and `sluice policy reload`).
    pub watch: bool,
    /// Run `init` of a policy with fresh instances once per loaded
    /// version and keep the initialised memory as the component's data
    /// (a snapshot), instead of running `init` in every session's
    /// instance. Components over 4 MiB (Python, JavaScript) and policies
    /// whose `init` leaves a host resource open keep `init` per session.
    pub init_snapshots: bool,
}

impl PolicyEngineConfig {
    /// Pool slots of an engine made from this config alone (`max_instances`,
    /// or 1000 when unset; a gateway sizes it with [`Config::engine_config`]).
    pub fn pool_size(&self) -> usize {
        self.max_instances.map_or(1000, |n| n as usize)
    }
}

/// Most pool slots kept from sessions for loading and route calls.
const POOL_LOOSE_SHARE_MAX: usize = 64;

/// Of a pool of `max` instance slots, how many sessions may not reserve:
/// kept for loading, route calls and warm instances (a quarter of a small
/// pool, at most 64).
pub fn pool_loose_share(max: usize) -> usize {
    (max / 4).min(POOL_LOOSE_SHARE_MAX)
}

/// The pool size that serves `sessions` sessions of `per_session`
/// instances each beside its loose share.
pub fn pool_size_for(sessions: usize, per_session: usize) -> usize {
    let for_sessions = sessions.saturating_mul(per_session);
    // Past 4 × the maximum share the share is the maximum; below, a
    // quarter of the whole is a third of what sessions hold.
    if for_sessions >= 3 * POOL_LOOSE_SHARE_MAX {
        for_sessions.saturating_add(POOL_LOOSE_SHARE_MAX)
    } else {
        for_sessions + for_sessions.div_ceil(3)
    }
}

/// Instances one SMTP session of `policies` may hold: one per policy, and
/// one more per shadow candidate (a canary takes its policy's place).
pub fn instances_per_session(policies: &[PolicyConfig]) -> usize {
    policies
        .iter()
        .map(|p| {
            1 + usize::from(p.candidate.is_some() && p.candidate_mode == CandidateMode::Shadow)
        })
        .sum()
}

impl Default for PolicyEngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::new(),
            epoch_tick: Duration::from_millis(5),
            host_io_timeout: Duration::from_secs(5),
            max_dns_lookups_per_call: 20,
            max_dns_lookups_per_session: 200,
            pooling: true,
            max_instances: None,
            max_memory: ByteSize(128 << 20),
            parallel_compilation: false,
            watch: true,
            init_snapshots: true,
        }
    }
}

fn default_kv_entries() -> usize {
    100_000
}

fn default_kv_memory() -> ByteSize {
    ByteSize(32 << 20)
}

fn default_policy_memory() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_policy_timeout() -> Duration {
    Duration::from_millis(100)
}

/// `[queue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Deliver queued mail. `false` only accepts into the spool (for
    /// maintenance, or to measure acceptance alone).
    pub deliver: bool,
    /// First retry delay.
    #[serde(with = "humantime_de")]
    pub retry_initial: Duration,
    /// Longest delay between retries.
    #[serde(with = "humantime_de")]
    pub retry_max: Duration,
    /// How long a message may stay queued.
    #[serde(with = "humantime_de")]
    pub max_lifetime: Duration,
    /// Deliveries in flight.
    pub concurrency: usize,
    /// Deliveries in flight per destination.
    pub destination_concurrency: usize,
    /// What a DSN returns of the original at most (a larger message: its
    /// header section; a larger header section: cut after a whole field).
    pub bounce_size_limit: ByteSize,
    /// DSNs per sender domain per hour; more are not sent (logged). 0: no
    /// limit.
    pub max_dsns_per_domain: u32,
    /// How long a message a policy put in quarantine is kept, from its
    /// arrival; then it is deleted (logged, no DSN: quarantined mail is
    /// mostly unwanted, a report would be backscatter). 0: kept until an
    /// operator acts.
    #[serde(with = "humantime_de")]
    pub quarantine_lifetime: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            deliver: true,
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 86400),
            concurrency: 100,
            destination_concurrency: 10,
            // As the DSN builder's own default (and Postfix's bounce_size_limit).
            bounce_size_limit: ByteSize(50 * 1024),
            max_dsns_per_domain: 100,
            quarantine_lifetime: Duration::from_secs(30 * 86400),
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Port for MX delivery.
    pub mx_port: u16,
    /// TLS policy for MX delivery.
    pub tls: crate::route::TlsMode,
    /// Per-domain TLS policy overrides for MX delivery.
    pub tls_policy: std::collections::BTreeMap<String, crate::route::TlsMode>,
    /// Smarthost `host:port` for all non-local mail.
    pub relay_host: Option<String>,
    /// TLS policy towards the relay host.
    pub relay_tls: crate::route::TlsMode,
    /// AUTH user name for the relay host.
    pub relay_username: Option<String>,
    /// AUTH password for the relay host.
    pub relay_password: Option<String>,
    /// Send the relay credentials over TLS whose certificate did not
    /// verify (never over plaintext). Off: they go only over verified TLS.
    pub relay_auth_unverified_tls: bool,
    /// LMTP server (`host:port`) for local delivery instead of Maildir.
    pub lmtp: Option<String>,
    /// Extra PEM trust anchors for verified TLS.
    pub ca_file: Option<PathBuf>,
    /// More `Received:` headers than this: a loop, bounce 5.4.6.
    pub max_received_headers: usize,
    /// Allow MX hosts that are our own listeners.
    pub allow_mx_to_self: bool,
    /// Deliver to address-literal recipients (`u@[192.0.2.1]`) at all.
    pub address_literals: bool,
    /// Non-public networks (loopback, private, …) address literals may
    /// reach anyway; public addresses need no entry.
    pub address_literal_networks: Vec<IpNet>,
    /// TCP connect timeout.
    #[serde(with = "humantime_de")]
    pub connect_timeout: Duration,
    /// How long an idle outbound connection is kept for reuse.
    #[serde(with = "humantime_de")]
    pub idle_connection_time: Duration,
}

impl DeliveryConfig {
    /// Where mail for address-literal recipients may go.
    pub fn literal_rule(&self) -> crate::route::LiteralRule {
        crate::route::LiteralRule {
            enabled: self.address_literals,
            networks: self.address_literal_networks.clone(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mx_port: 25,
            tls: crate::route::TlsMode::Opportunistic,
            tls_policy: Default::default(),
            relay_host: None,
            relay_tls: crate::route::TlsMode::Opportunistic,
            relay_username: None,
            relay_password: None,
            relay_auth_unverified_tls: false,
            lmtp: None,
            ca_file: None,
            max_received_headers: 50,
            allow_mx_to_self: false,
            address_literals: false,
            address_literal_networks: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            idle_connection_time: Duration::from_secs(5),
        }
    }
}

/// `[dns]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty: the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout.
    #[serde(with = "humantime_de")]
    pub timeout: Duration,
    /// Static MX answers: domain → exchanges in preference order.
    pub mx: std::collections::BTreeMap<String, Vec<String>>,
    /// Static address answers: host → addresses.
    pub a: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            mx: Default::default(),
            a: Default::default(),
        }
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind.
    pub address: SocketAddr,
    /// TLS from the first byte (RFC 8314) instead of STARTTLS.
    #[serde(default)]
    pub implicit_tls: bool,
    /// Expect a PROXY protocol v1/v2 header from trusted proxies.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Peers whose PROXY header is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Which sessions to record (see [`RecordMode`] and `[record]`).
    #[serde(default)]
    pub record: RecordMode,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message.
    pub max_message_size: ByteSize,
    /// Largest header section (larger: 552 5.3.4 at the end of DATA).
    pub max_header_size: ByteSize,
    /// Most header fields (more: 552 5.3.4 at the end of DATA).
    pub max_header_fields: usize,
    /// The octets of messages the gateway may hold together: sessions
    /// while messages arrive and are judged, the queue while it delivers
    /// or bounces them. Past it new messages get 452 4.3.1 and the queue
    /// waits before it reads another.
    pub max_message_memory: ByteSize,
    /// Octets kept free on the spool's disk: a transaction that would
    /// leave less gets 452 4.3.1 at MAIL.
    pub disk_reserve: ByteSize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Command line length with CRLF.
    pub max_line_length: usize,
    /// Protocol errors before 421.
    pub max_bad_commands: u32,
    /// Octets per session.
    pub max_session_bytes: ByteSize,
    /// Lifetime of a session.
    #[serde(with = "humantime_de")]
    pub max_session_duration: Duration,
    /// Connections across all listeners.
    pub max_connections: usize,
    /// Connections per client address (relay clients are exempt).
    pub max_connections_per_ip: usize,
    /// Connections per client network (relay clients are exempt).
    pub max_connections_per_network: usize,
    /// The IPv4 prefix length of a client network.
    pub network_prefix_v4: u8,
    /// The IPv6 prefix length of a client network.
    pub network_prefix_v6: u8,
    /// Of `max_connections`, how many only relay clients may use (at most
    /// half of it).
    pub reserved_connections: usize,
    /// Past this share of `max_connections` the gateway is under stress:
    /// sessions get the stress timeouts.
    pub stress_threshold: f64,
    /// Waiting for a command (with no progress) under stress.
    #[serde(with = "humantime_de")]
    pub stress_command_timeout: Duration,
    /// Waiting for the next block of message data under stress.
    #[serde(with = "humantime_de")]
    pub stress_data_timeout: Duration,
    /// At the cap, a session idle this long may be closed for a new client.
    #[serde(with = "humantime_de")]
    pub shed_idle_after: Duration,
    /// Waiting for a command.
    #[serde(with = "humantime_de")]
    pub command_timeout: Duration,
    /// Waiting for message data.
    #[serde(with = "humantime_de")]
    pub data_timeout: Duration,
    /// The TLS handshake.
    #[serde(with = "humantime_de")]
    pub tls_handshake_timeout: Duration,
    /// Waiting for the PROXY header.
    #[serde(with = "humantime_de")]
    pub proxy_header_timeout: Duration,
    /// How long shutdown waits for in-flight messages.
    #[serde(with = "humantime_de")]
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: ByteSize(50 << 20),
            max_header_size: ByteSize(1 << 20),
            max_header_fields: 1000,
            disk_reserve: ByteSize(256 << 20),
            max_message_memory: ByteSize(1 << 30),
            max_recipients: 100,
            max_line_length: 512,
            max_bad_commands: 20,
            max_session_bytes: ByteSize(1 << 30),
            max_session_duration: Duration::from_secs(3600),
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_connections_per_network: 200,
            network_prefix_v4: 24,
            network_prefix_v6: 64,
            reserved_connections: 500,
            stress_threshold: 0.7,
            stress_command_timeout: Duration::from_secs(10),
            stress_data_timeout: Duration::from_secs(30),
            shed_idle_after: Duration::from_secs(1),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_handshake_timeout: Duration::from_secs(30),
            proxy_header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(300),
        }
    }
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Share filesystem syncs among concurrent messages.
    pub group_commit: bool,
    /// Most messages per shared sync.
    pub max_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            group_commit: true,
            max_batch: 256,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A tracing filter.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A size in octets, written as a number or as a string with a unit
/// (`"50MiB"`, `"10MB"`, `"512KiB"`, `"1k"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} octets", self.0)
    }
}

impl ByteSize {
    /// Parse `"50MiB"` and friends.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number and a unit like \"50MiB\"")
        })?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("invalid size unit {other:?} in {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

mod humantime_de {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}): expected e.g. \"30s\", \"5m\", \"1h\""
            ))
        })
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./sluice-data")
}
fn default_hostname() -> String {
    "localhost".into()
}
fn default_local_domains() -> Vec<String> {
    vec!["localhost".into()]
}
fn default_relay_networks() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid network"),
        "::1/128".parse().expect("valid network"),
    ]
}
fn default_listeners() -> Vec<ListenerConfig> {
    vec![
        ListenerConfig {
            address: "127.0.0.1:2525".parse().expect("valid address"),
            implicit_tls: false,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            record: RecordMode::Off,
        },
        ListenerConfig {
            address: "127.0.0.1:4465".parse().expect("valid address"),
            implicit_tls: true,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            record: RecordMode::Off,
        },
    ]
}

impl Config {
    /// `[policy_engine]` for an engine that serves `policies` under this
    /// config's `[limits]`: `max_instances` as given, or sized so that
    /// `max_connections` sessions of that chain each reserve theirs.
    pub fn engine_config(&self, policies: &[PolicyConfig]) -> PolicyEngineConfig {
        let mut e = self.policy_engine.clone();
        if e.max_instances.is_none() {
            let size = pool_size_for(
                self.limits.max_connections,
                instances_per_session(policies).max(1),
            );
            e.max_instances = Some(u32::try_from(size).unwrap_or(u32::MAX));
        }
        e
    }

    /// The embedded default.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML, "<embedded default>")
            .expect("the embedded default config is valid")
    }

    /// Read and check a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and check TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                file: file.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.local_domains = cfg
            .local_domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        // Domains are compared in lower case without the root dot, so
        // the per-domain TLS policy is keyed the same way (security
        // review finding 4: `"Example.org" = "require"` matched nothing).
        let mut tls_policy = std::collections::BTreeMap::new();
        for (domain, mode) in std::mem::take(&mut cfg.delivery.tls_policy) {
            let key = domain.trim_end_matches('.').to_ascii_lowercase();
            if let Some(other) = tls_policy.insert(key.clone(), mode)
                && other != mode
            {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    line: find_line(text, "tls_policy"),
                    field: "delivery.tls_policy".to_string(),
                    message: format!("{key:?} is given twice with different policies"),
                });
            }
        }
        cfg.delivery.tls_policy = tls_policy;
        if cfg.policy_engine.cache_dir.as_os_str().is_empty() {
            cfg.policy_engine.cache_dir = cfg.data_dir.join("policy-cache");
        }
        if cfg.record.dir.as_os_str().is_empty() {
            cfg.record.dir = cfg.data_dir.join("recordings");
        }
        cfg.check(text, file)?;
        Ok(cfg)
    }

    fn check(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line: find_line(text, field),
            field: field.to_string(),
            message,
        };
        if self.hostname.is_empty() || crate::smtp::address::parse_domain(&self.hostname).is_err() {
            return Err(invalid(
                "hostname",
                format!("{:?} is not a valid host name", self.hostname),
            ));
        }
        for d in &self.local_domains {
            if crate::smtp::address::parse_domain(d).is_err() {
                return Err(invalid(
                    "local_domains",
                    format!("{d:?} is not a valid domain"),
                ));
            }
        }
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "at least one [[listener]] is needed".into(),
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.proxy_protocol && l.trusted_proxies.is_empty() {
                return Err(invalid(
                    "trusted_proxies",
                    format!(
                        "listener {} ({}) has proxy_protocol = true but no trusted_proxies",
                        i + 1,
                        l.address
                    ),
                ));
            }
        }
        let lim = &self.limits;
        if lim.max_line_length < 512 {
            return Err(invalid(
                "max_line_length",
                "must be at least 512 (RFC 5321 §4.5.3.1.4)".into(),
            ));
        }
        if lim.max_header_fields < 1 || lim.max_header_size.0 < 1024 {
            return Err(invalid(
                "max_header_size",
                "max_header_size must be at least 1KiB and max_header_fields at least 1".into(),
            ));
        }
        if lim.max_recipients < 1 {
            return Err(invalid("max_recipients", "must be at least 1".into()));
        }
        if lim.max_message_size.0 < 1024 {
            return Err(invalid("max_message_size", "must be at least 1KiB".into()));
        }
        if lim.max_connections < 1
            || lim.max_connections_per_ip < 1
            || lim.max_connections_per_network < 1
        {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if lim.network_prefix_v4 > 32 || lim.network_prefix_v6 > 128 {
            return Err(invalid(
                "network_prefix_v4",
                "prefixes are at most 32 (IPv4) and 128 (IPv6)".into(),
            ));
        }
        if !(lim.stress_threshold > 0.0 && lim.stress_threshold <= 1.0) {
            return Err(invalid(
                "stress_threshold",
                "must be more than 0 and at most 1".into(),
            ));
        }
        for (name, d) in [
            ("command_timeout", lim.command_timeout),
            ("data_timeout", lim.data_timeout),
            ("tls_handshake_timeout", lim.tls_handshake_timeout),
            ("proxy_header_timeout", lim.proxy_header_timeout),
            ("max_session_duration", lim.max_session_duration),
            ("stress_command_timeout", lim.stress_command_timeout),
            ("stress_data_timeout", lim.stress_data_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(name, "must be more than zero".into()));
            }
        }
        let q = &self.queue;
        if q.retry_initial.is_zero() || q.retry_max < q.retry_initial {
            return Err(invalid(
                "retry_max",
                "retry_initial must be more than zero and retry_max at least retry_initial".into(),
            ));
        }
        if q.concurrency < 1 || q.destination_concurrency < 1 {
            return Err(invalid("concurrency", "must be at least 1".into()));
        }
        let d = &self.delivery;
        if let Some(r) = &d.relay_host
            && crate::route::parse_host_port(r).is_none()
        {
            return Err(invalid("relay_host", format!("{r:?} is not host:port")));
        }
        if let Some(r) = &d.lmtp
            && crate::route::parse_host_port(r).is_none()
        {
            return Err(invalid("lmtp", format!("{r:?} is not host:port")));
        }
        if d.relay_username.is_some() != d.relay_password.is_some() {
            return Err(invalid(
                "relay_username",
                "relay_username and relay_password go together".into(),
            ));
        }
        if d.relay_username.is_some() && d.relay_tls == crate::route::TlsMode::None {
            return Err(invalid(
                "relay_tls",
                "\"none\" with relay_username: credentials are sent only over TLS".into(),
            ));
        }
        if self.record.max_file_size.0 < 4096 {
            return Err(invalid(
                "record.max_file_size",
                "must be at least 4KiB".into(),
            ));
        }
        if self.spool.max_batch < 1 {
            return Err(invalid("max_batch", "must be at least 1".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("level", format!("bad log filter: {e}")))?;
        self.check_policies(text, file)
    }

    fn check_policies(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line: find_line(text, field),
            field: field.to_string(),
            message,
        };
        let e = &self.policy_engine;
        if e.epoch_tick < Duration::from_micros(100) || e.epoch_tick > Duration::from_millis(100) {
            return Err(invalid(
                "policy_engine.epoch_tick",
                "must be between 100us and 100ms".into(),
            ));
        }
        if e.host_io_timeout.is_zero() {
            return Err(invalid(
                "policy_engine.host_io_timeout",
                "must be more than zero".into(),
            ));
        }
        if let Some(n) = e.max_instances {
            // One session of this chain must fit beside the share kept for
            // loading and route calls.
            let per_session = instances_per_session(&self.policies);
            let limit = n as usize - pool_loose_share(n as usize);
            if n < 1 || limit < per_session {
                return Err(invalid(
                    "policy_engine.max_instances",
                    format!(
                        "{n} cannot serve one session: the chain needs {per_session} \
                         instances per session, and {} of the pool are kept for \
                         loading and route calls",
                        n as usize - limit
                    ),
                ));
            }
        }
        if e.max_memory.0 < (1 << 20) || e.max_memory.0 > (4 << 30) {
            return Err(invalid(
                "policy_engine.max_memory",
                "must be between 1MiB and 4GiB".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let invalid = |field: &str, message: String| ConfigError::Invalid {
                file: file.to_string(),
                line: find_policy_line(text, i, field),
                field: field.to_string(),
                message,
            };
            let what = |m: &str| format!("policy {:?}: {m}", p.name);
            if p.name.is_empty()
                || p.name.len() > 64
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    "policy.name",
                    what("a name is 1 to 64 of a-z, 0-9, _ and -"),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    "policy.name",
                    what("the name is used by an earlier [[policy]]"),
                ));
            }
            if p.path.as_os_str().is_empty() {
                return Err(invalid("policy.path", what("path is empty")));
            }
            if p.candidate
                .as_ref()
                .is_some_and(|c| c.as_os_str().is_empty())
            {
                return Err(invalid("policy.candidate", what("candidate is empty")));
            }
            if !(1..=100).contains(&p.canary_percent) {
                return Err(invalid(
                    "policy.canary_percent",
                    what("canary_percent must be 1 to 100"),
                ));
            }
            if p.timeout.is_zero() || p.timeout > Duration::from_secs(60) {
                return Err(invalid(
                    "policy.timeout",
                    what("timeout must be more than zero and at most 60s"),
                ));
            }
            if p.timeout < e.epoch_tick {
                return Err(invalid(
                    "policy.timeout",
                    what("timeout must be at least policy_engine.epoch_tick"),
                ));
            }
            if p.max_memory.0 < (1 << 20) {
                return Err(invalid(
                    "policy.max_memory",
                    what("max_memory must be at least 1MiB"),
                ));
            }
            if p.max_memory.0 > e.max_memory.0 {
                return Err(invalid(
                    "policy.max_memory",
                    what(&format!(
                        "max_memory ({}) is more than policy_engine.max_memory ({})",
                        p.max_memory, e.max_memory
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The session limits for the SMTP core.
    pub fn session_config(&self, starttls_available: bool) -> crate::smtp::SessionConfig {
        crate::smtp::SessionConfig {
            hostname: self.hostname.clone(),
            max_line_length: self.limits.max_line_length,
            max_recipients: self.limits.max_recipients,
            max_message_size: self.limits.max_message_size.0,
            max_bad_commands: self.limits.max_bad_commands,
            max_session_bytes: self.limits.max_session_bytes.0,
            starttls_available,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The line where `key` is set (the last segment of a dotted field), or 0.
fn find_line(text: &str, key: &str) -> usize {
    let key = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('=') || key == "listener")
                || (key == "listener" && l.starts_with("[[listener]]"))
        })
        .map_or(0, |i| i + 1)
}

/// The line of `key` (the last segment of a dotted field) in the
/// `index`-th `[[policy]]` table, or of that table's header, or 0.
fn find_policy_line(text: &str, index: usize, key: &str) -> usize {
    let key = key.rsplit('.').next().unwrap_or(key);
    let mut seen = 0;
    let mut header = 0;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with("[[policy]]") {
            if seen == index + 1 {
                break;
            }
            seen += 1;
            header = n + 1;
        } else if l.starts_with('[') && seen == index + 1 {
            break;
        } else if seen == index + 1
            && l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return n + 1;
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_and_empty_are_the_same_gateway() {
        let a = Config::embedded();
        let b = Config::parse("", "empty.toml").unwrap();
        assert_eq!(a.listeners.len(), 2);
        assert_eq!(b.listeners.len(), 2);
        assert_eq!(a.listeners[1].address, b.listeners[1].address);
        assert!(b.listeners[1].implicit_tls);
        assert_eq!(a.limits.max_message_size, b.limits.max_message_size);
        assert_eq!(a.limits.command_timeout, b.limits.command_timeout);
        assert_eq!(a.local_domains, ["localhost"]);
    }

    #[test]
    fn unknown_field_names_line() {
        let e = Config::parse(
            "hostname = \"mx.example\"\n\n[limits]\nmax_mesage_size = 5\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.toml: line 4, column 1:"), "{e}");
        assert!(e.contains("max_mesage_size"), "{e}");
    }

    #[test]
    fn finding_04_tls_policy_keys_match_like_the_lookup() {
        let cfg = Config::parse(
            "[delivery.tls_policy]\n\"Example.ORG.\" = \"require\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            cfg.delivery.tls_policy.get("example.org"),
            Some(&crate::route::TlsMode::Require)
        );
        let e = Config::parse(
            "[delivery.tls_policy]\n\"a.example\" = \"require\"\n\"A.example\" = \"none\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn bad_values_named() {
        let e = Config::parse("[limits]\nmax_message_size = \"12 parsecs\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("parsecs"), "{e}");
        let e = Config::parse("[limits]\ncommand_timeout = \"soon\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("soon"), "{e}");
        let e = Config::parse("\n[limits]\nmax_line_length = 100\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "x.toml: line 3: max_line_length: must be at least 512 (RFC 5321 §4.5.3.1.4)"
        );
        let e = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:25\"\nproxy_protocol = true\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("trusted_proxies"), "{e}");
        let e = Config::parse("relay_networks = [\"10.0.0.0/33\"]\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn policies() {
        let cfg = Config::parse(
            "data_dir = \"/var/sluice\"\n\
             [[policy]]\nname = \"access\"\npath = \"access.wasm\"\n\
             capabilities = [\"kv\", \"dns\"]\non_error = \"continue\"\n\
             [policy.config]\ndeny = [\"192.0.2.0/24\"]\n\
             [[policy]]\nname = \"spam\"\npath = \"spam.wasm\"\n\
             max_memory = \"32MiB\"\ntimeout = \"250ms\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.policies.len(), 2);
        let a = &cfg.policies[0];
        assert_eq!(a.capabilities, [Capability::Kv, Capability::Dns]);
        assert_eq!(a.on_error, OnError::Continue);
        assert_eq!(a.max_memory, ByteSize(64 << 20));
        assert_eq!(a.timeout, Duration::from_millis(100));
        assert!(a.config.contains_key("deny"));
        let b = &cfg.policies[1];
        assert_eq!(b.on_error, OnError::Tempfail);
        assert_eq!(b.max_memory, ByteSize(32 << 20));
        assert_eq!(b.timeout, Duration::from_millis(250));
        assert_eq!(
            cfg.policy_engine.cache_dir,
            PathBuf::from("/var/sluice/policy-cache")
        );
        assert_eq!(cfg.policy_engine.epoch_tick, Duration::from_millis(5));

        let e = Config::parse(
            "[[policy]]\nname = \"a\"\npath = \"a.wasm\"\n[[policy]]\nname = \"a\"\npath = \"b.wasm\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 5") && e.contains("used by an earlier"),
            "{e}"
        );
        let e = Config::parse(
            "[[policy]]\nname = \"Big Name\"\npath = \"a.wasm\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2") && e.contains("policy.name"), "{e}");
        let e = Config::parse(
            "[[policy]]\nname = \"a\"\npath = \"a.wasm\"\nmax_memory = \"1GiB\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("policy_engine.max_memory"), "{e}");
        let e = Config::parse(
            "[[policy]]\nname = \"a\"\npath = \"a.wasm\"\ncapabilities = [\"net\"]\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("net"), "{e}");
        let e = Config::parse(
            "[[policy]]\nname = \"a\"\npath = \"a.wasm\"\non_error = \"ignore\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ignore"), "{e}");
    }

    #[test]
    fn recording() {
        let cfg = Config::parse(
            "data_dir = \"/d\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nrecord = \"rejected\"\n\
             [[listener]]\naddress = \"127.0.0.1:26\"\nrecord = 0.25\n\
             [[listener]]\naddress = \"127.0.0.1:27\"\n[record]\nredact = true\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.listeners[0].record, RecordMode::Rejected);
        assert_eq!(cfg.listeners[1].record, RecordMode::Sample(0.25));
        assert_eq!(cfg.listeners[2].record, RecordMode::Off);
        assert!(cfg.record.redact);
        assert_eq!(cfg.record.dir, PathBuf::from("/d/recordings"));
        assert_eq!(Config::embedded().listeners[0].record, RecordMode::Off);
        for bad in ["\"sometimes\"", "1.5"] {
            let e = Config::parse(
                &format!("[[listener]]\naddress = \"127.0.0.1:25\"\nrecord = {bad}\n"),
                "x.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("line 3"), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("50MiB"), Ok(ByteSize(50 << 20)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("1024"), Ok(ByteSize(1024)));
        assert_eq!(ByteSize::parse("1k"), Ok(ByteSize(1000)));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999GiB").is_err());
    }
}
