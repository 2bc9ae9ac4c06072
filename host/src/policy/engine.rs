//! The process-wide [`Engine`]: wasmtime configuration, the linker, the
//! epoch ticker, the compiled-code cache, and loading a chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{PolicyWorld, PolicyWorldPre};
use super::host::HostState;
use super::pool::InstancePool;
use super::{CONTRACT_PACKAGE, CONTRACT_VERSION, PolicyEngineConfig, PolicyError, Stage};

/// Core instances, memories and tables a component may hold per pool
/// slot of `max_instances` (a Rust `wasm32-wasip2` component has one memory
/// and a handful of core instances; scripting-language ones a few more).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Freed pool slots reset per batch (see `Engine::new`).
const DECOMMIT_BATCH: usize = 16;
/// With PAGEMAP_SCAN: up to this much of a freed linear memory is reset in
/// place (only the pages that were touched) instead of unmapped.
const KEEP_RESIDENT_MEMORY: usize = 16 << 20;
/// The same for tables.
const KEEP_RESIDENT_TABLE: usize = 1 << 20;

/// The policy runtime of a process (see the [module documentation](super)).
///
/// Make one per process and share it by reference or `Arc`; every chain
/// loaded from it shares its instance pool and cache. The epoch ticker
/// stops once the engine and every chain loaded from it are dropped.
pub struct Engine {
    pub(super) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

pub(crate) struct EngineInner {
    pub(crate) wasm: wasmtime::Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cfg: PolicyEngineConfig,
    cache: Cache,
    pub(crate) pool: Arc<InstancePool>,
}

/// What [`Engine::precompile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// SHA-256 of the component, hex.
    pub wasm_hash: String,
    /// The cache folder the compiled code is in.
    pub cache_dir: PathBuf,
    /// It was already there (nothing compiled).
    pub was_cached: bool,
}

fn engine_err(e: wasmtime::Error) -> PolicyError {
    PolicyError::Engine(one_line(&e))
}

/// An error and its causes on one line, bounded (wasmtime's messages may
/// span lines, e.g. byte dumps).
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let mut out = String::with_capacity(text.len().min(1024));
    for word in text.split_whitespace() {
        if out.len() + word.len() + 1 > 1024 {
            out.push_str(" …");
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

impl Engine {
    /// Configure wasmtime (pooling allocator unless `pooling = false`, epoch
    /// interruption, no component-model concurrency), link every host import
    /// and WASI, open the cache in `cfg.cache_dir` (created if missing), and
    /// start the epoch ticker thread.
    pub fn new(cfg: &PolicyEngineConfig) -> Result<Engine, PolicyError> {
        let dir = if cfg.cache_dir.as_os_str().is_empty() {
            PathBuf::from("./sluice-data/policy-cache")
        } else {
            cfg.cache_dir.clone()
        };
        let dir = std::path::absolute(&dir).map_err(|e| PolicyError::Cache {
            dir: dir.clone(),
            cause: e.to_string(),
        })?;
        let mut cache_cfg = CacheConfig::new();
        cache_cfg.with_directory(&dir);
        let cache = Cache::new(cache_cfg).map_err(|e| PolicyError::Cache {
            dir: dir.clone(),
            cause: one_line(&e),
        })?;

        let max_memory = cfg.max_memory.0;
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .parallel_compilation(cfg.parallel_compilation)
            // The slot size: no memory grows past it, so reserving exactly it
            // keeps the address space of a big pool modest.
            .memory_reservation(max_memory)
            .memory_reservation_for_growth(0)
            .cache(Some(cache.clone()));
        let slots = cfg.pool_size();
        if cfg.pooling {
            let n = u32::try_from(slots).unwrap_or(u32::MAX);
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
                .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
                .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
                .total_stacks(n)
                .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
                // Freed slots are reset in batches: fewer madvise calls,
                // each of which costs a TLB shootdown on every core.
                .decommit_batch_size(DECOMMIT_BATCH);
            if PoolingAllocationConfig::is_pagemap_scan_available() {
                // Reset only the pages an instance touched, with memset, and
                // keep them mapped: the next instance in the slot takes no
                // page faults. Without PAGEMAP_SCAN (Linux < 6.7) the keep-
                // resident memset would cover the whole range blindly, so
                // the default madvise reset stays.
                pool.pagemap_scan(wasmtime::Enabled::Yes)
                    .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                    .table_keep_resident(KEEP_RESIDENT_TABLE);
            }
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let wasm = wasmtime::Engine::new(&c).map_err(engine_err)?;

        let mut linker = Linker::<HostState>::new(&wasm);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        PolicyWorld::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(engine_err)?;

        start_ticker(&wasm, cfg.epoch_tick)?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                wasm,
                linker,
                cfg: PolicyEngineConfig {
                    cache_dir: dir,
                    ..cfg.clone()
                },
                cache,
                pool: InstancePool::new(slots),
            }),
        })
    }

    /// The engine of a gateway running `config` with `policies`: its pool
    /// sized for `max_connections` sessions of that chain unless
    /// `max_instances` is set, and the relay clients' share of the
    /// connection cap kept for them in the pool too.
    pub fn serving(
        config: &crate::config::Config,
        policies: &[crate::config::PolicyConfig],
    ) -> Result<Engine, PolicyError> {
        let engine = Engine::new(&config.engine_config(policies))?;
        let l = &config.limits;
        let relay = l.reserved_connections.min(l.max_connections / 2);
        engine
            .pool()
            .set_relay_share(relay as f64 / l.max_connections.max(1) as f64);
        let size = engine.inner.cfg.pool_size();
        let per_session = crate::config::instances_per_session(policies).max(1);
        let sessions = engine.pool().session_limit(true) / per_session;
        tracing::info!(
            target: "sluice::policy",
            slots = size,
            per_session,
            sessions,
            "policy instance pool sized"
        );
        if sessions < l.max_connections {
            tracing::warn!(
                target: "sluice::policy",
                max_instances = size,
                max_connections = l.max_connections,
                sessions,
                "[policy_engine] max_instances serves fewer sessions than max_connections: \
                 past that, an idle session is shed or a new one refused (421 4.3.2)"
            );
        }
        Ok(engine)
    }

    /// The accounting of this engine's instance pool (reservations of
    /// sessions, leases of loading and route calls).
    pub fn pool(&self) -> &Arc<InstancePool> {
        &self.inner.pool
    }

    /// The cache folder in use (absolute).
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cfg.cache_dir
    }

    /// Compilations taken from the cache and made afresh (written to it)
    /// by this engine so far.
    pub fn cache_counts(&self) -> (usize, usize) {
        (
            self.inner.cache.cache_hits(),
            self.inner.cache.cache_misses(),
        )
    }

    /// Compile `wasm` into the cache (for `sluice policy compile`) and check
    /// it links against this contract. Blocking: call it outside async code.
    pub fn precompile(&self, wasm: &Path) -> Result<Precompiled, PolicyError> {
        let name = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (hits, _) = self.cache_counts();
        let (component, wasm_hash, _) = compile(&self.inner, &name, wasm)?;
        link(&self.inner, &name, &component)?;
        Ok(Precompiled {
            wasm_hash,
            cache_dir: self.inner.cfg.cache_dir.clone(),
            was_cached: self.cache_counts().0 > hits,
        })
    }
}

/// Advance the epoch every `tick` on a thread of its own (outside tokio),
/// until the engine is gone.
fn start_ticker(engine: &wasmtime::Engine, tick: Duration) -> Result<(), PolicyError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// Read and compile (or take from the cache). Runs off the async workers.
/// The component, its hash and its bytes.
pub(super) fn compile(
    inner: &EngineInner,
    policy: &str,
    path: &Path,
) -> Result<(Component, String, Arc<[u8]>), PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
        policy: policy.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let hash = hex(&Sha256::digest(&bytes));
    let component = Component::new(&inner.wasm, &bytes).map_err(|e| PolicyError::Compile {
        policy: policy.to_string(),
        path: path.to_path_buf(),
        cause: one_line(&e),
    })?;
    Ok((component, hash, Arc::from(bytes)))
}

/// Run `work` on a thread of its own at low priority and wait for it:
/// compiling a big component takes seconds of CPU, and the serving threads
/// go first. `Err` says why the thread gave no answer.
pub(crate) async fn on_compile_thread<T: Send + 'static>(
    policy: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("sluice-compile-{policy}"))
        .spawn(move || {
            lower_thread_priority();
            let _ = tx.send(work());
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|_| "the compile thread ended without an answer".to_string())
}

/// Make the calling thread yield to the others (nice 10; Linux sets the
/// niceness of one thread). Best effort: a failure changes nothing else.
fn lower_thread_priority() {
    let _ = rustix::process::setpriority_process(None, 10);
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check the contract version, then pre-link.
pub(crate) fn link(
    inner: &EngineInner,
    policy: &str,
    component: &Component,
) -> Result<PolicyWorldPre<HostState>, PolicyError> {
    check_contract(&inner.wasm, policy, component)?;
    let pre = inner
        .linker
        .instantiate_pre(component)
        .map_err(|e| PolicyError::Link {
            policy: policy.to_string(),
            cause: one_line(&e),
        })?;
    PolicyWorldPre::new(pre).map_err(|e| PolicyError::NotAPolicy {
        policy: policy.to_string(),
        cause: one_line(&e),
    })
}

/// The versions this host accepts, as said in errors: `0.1.x`.
fn accepted_range() -> String {
    let (major, minor, _) = parse_version(CONTRACT_VERSION).unwrap_or((0, 0, 0));
    if major == 0 {
        format!("{CONTRACT_PACKAGE}@0.{minor}.x")
    } else {
        format!("{CONTRACT_PACKAGE}@{major}.x")
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|n| n.parse::<u64>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

/// Semver compatibility as wasmtime links it: the same major, and before
/// 1.0 the same minor.
fn compatible(found: (u64, u64, u64), ours: (u64, u64, u64)) -> bool {
    if ours.0 == 0 {
        found.0 == 0 && found.1 == ours.1
    } else {
        found.0 == ours.0
    }
}

/// Find the `sluice:policy` version the component imports and exports; if
/// one is not compatible with ours, say which. A component that exports no
/// `sluice:policy/policy` at all is not a policy.
pub(super) fn check_contract(
    engine: &wasmtime::Engine,
    policy: &str,
    component: &Component,
) -> Result<(), PolicyError> {
    let ours = parse_version(CONTRACT_VERSION).unwrap_or((0, 0, 0));
    let ty = component.component_type();
    let prefix = format!("{CONTRACT_PACKAGE}/");
    let names: Vec<(String, bool)> = ty
        .imports(engine)
        .map(|(n, _)| (n.to_string(), false))
        .chain(
            ty.exports(engine)
                .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
                .map(|(n, _)| (n.to_string(), true)),
        )
        .collect();
    let mut exports_policy = false;
    for (name, is_export) in &names {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if *is_export && iface == "policy" {
            exports_policy = true;
        }
        let found = parse_version(version);
        if found.is_none_or(|f| !compatible(f, ours)) {
            return Err(PolicyError::IncompatibleContract {
                policy: policy.to_string(),
                found: if version.is_empty() {
                    format!("{CONTRACT_PACKAGE} without a version")
                } else {
                    format!("{CONTRACT_PACKAGE}@{version}")
                },
                expected: accepted_range(),
            });
        }
    }
    if !exports_policy {
        return Err(PolicyError::NotAPolicy {
            policy: policy.to_string(),
            cause: format!(
                "the component exports no {CONTRACT_PACKAGE}/policy interface \
                 (is it built against the wit/ of this gateway?)"
            ),
        });
    }
    Ok(())
}

/// The `[policy.config]` table as the JSON object `init` receives.
pub(super) fn config_json(table: &toml::Table) -> String {
    fn conv(v: &toml::Value) -> serde_json::Value {
        match v {
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(conv).collect()),
            toml::Value::Table(t) => {
                serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), conv(v))).collect())
            }
        }
    }
    let obj: serde_json::Map<String, serde_json::Value> =
        table.iter().map(|(k, v)| (k.clone(), conv(v))).collect();
    serde_json::Value::Object(obj).to_string()
}

/// The stages in a bit set, from a description.
pub(crate) fn stage_bits(stages: &[Stage]) -> u8 {
    stages.iter().fold(0, |acc, s| acc | s.bit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.2.3-rc.1"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2"), None);
        assert!(compatible((0, 1, 7), (0, 1, 0)));
        assert!(!compatible((0, 2, 0), (0, 1, 0)));
        assert!(!compatible((1, 0, 0), (0, 1, 0)));
        assert!(compatible((1, 9, 0), (1, 0, 0)));
        assert!(!compatible((2, 0, 0), (1, 0, 0)));
        assert_eq!(accepted_range(), "sluice:policy@0.1.x");
    }

    #[test]
    fn contract_version_matches_wit() {
        let package = include_str!("../../../wit/package.wit");
        assert!(
            package.contains(&format!("package {CONTRACT_PACKAGE}@{CONTRACT_VERSION};")),
            "CONTRACT_VERSION must match wit/package.wit"
        );
    }

    #[test]
    fn config_as_json() {
        let t: toml::Table = toml::from_str(
            "a = 1\nb = \"x\"\nc = [true, 1.5]\nd = 1979-05-27T07:32:00Z\n[e]\nf = \"g\"\n",
        )
        .unwrap();
        let j: serde_json::Value = serde_json::from_str(&config_json(&t)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"a": 1, "b": "x", "c": [true, 1.5], "d": "1979-05-27T07:32:00Z", "e": {"f": "g"}})
        );
        assert_eq!(config_json(&toml::Table::new()), "{}");
    }
}
