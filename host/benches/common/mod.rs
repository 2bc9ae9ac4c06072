//! What the policy benchmarks (`policy.rs`, `lang.rs`) share: a policy
//! entry with the usual settings, the host services, and a session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::{ByteSize, DnsConfig};
use sluice::dns::StaticResolver;
use sluice::policy::{KvStore, OnError, PolicyConfig, Services, SessionInfo};

/// A `[[policy]]` entry for `path` with `config` and the defaults the
/// benchmarks change field by field: no capabilities, tempfail on error,
/// 64 MiB, 100 ms, a fresh instance per session, no candidate.
pub(crate) fn policy(name: &str, path: &Path, config: toml::Table) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        path: path.to_path_buf(),
        capabilities: Vec::new(),
        on_error: OnError::Tempfail,
        max_memory: ByteSize(64 << 20),
        timeout: Duration::from_millis(100),
        reuse_instances: false,
        candidate: None,
        candidate_mode: Default::default(),
        canary_percent: 10,
        tests: None,
        kv_max_entries: 100_000,
        kv_max_memory: ByteSize(32 << 20),
        config,
    }
}

/// A static resolver with no answers and an empty key-value store.
pub(crate) fn services() -> Services {
    Services {
        resolver: Arc::new(StaticResolver::only(&DnsConfig::default())),
        kv: Arc::new(KvStore::default()),
    }
}

/// A client at 192.0.2.7:40000, no TLS, not a relay client.
pub(crate) fn info() -> SessionInfo {
    SessionInfo {
        client_ip: "192.0.2.7".parse().unwrap(),
        client_port: 40000,
        listener: "127.0.0.1:2525".parse().unwrap(),
        tls: None,
        relay_client: false,
        helo: None,
    }
}
