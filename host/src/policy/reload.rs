//! Hot swap: the live policy chain ([`LiveChain`]) and what replaces it
//! ([`Reloader`]).
//!
//! A reload (SIGHUP, `sluice policy reload`, or a change in a watched
//! folder) re-reads the config file, loads every policy whose entry or
//! component changed — compiled on a low-priority thread or taken from the
//! compiled cache, instantiated, `init`ed — and only when all of that
//! succeeded swaps the new chain in, atomically. A session keeps the chain
//! it started with until it ends; new sessions and new delivery decisions
//! get the new one. A reload that fails leaves the running chain as it was
//! and says why (policy, call, cause).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{Chain, Engine, PolicyStats, Services};
use crate::config::Config;

/// The chain new sessions get. Readers take a reference (a cheap `Arc`
/// clone) and keep it as long as they like; a swap never waits for them.
#[derive(Debug, Default)]
pub struct LiveChain(RwLock<Option<Arc<Chain>>>);

impl LiveChain {
    /// A live chain starting with `chain`.
    pub fn new(chain: Option<Arc<Chain>>) -> Self {
        Self(RwLock::new(chain))
    }

    /// The chain in force now (`None`: no policies).
    pub fn current(&self) -> Option<Arc<Chain>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, chain: Option<Arc<Chain>>) -> Option<Arc<Chain>> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|e| e.into_inner()),
            chain,
        )
    }
}

/// What one successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Whether a new chain was swapped in (false: nothing had changed).
    pub swapped: bool,
    /// Per policy of the chain now in force: name, version, hash, and
    /// whether it was loaded anew by this reload.
    pub policies: Vec<(String, String, String, bool)>,
    /// Config sections that changed but apply only at the next start.
    pub needs_restart: Vec<String>,
    /// How long loading took.
    pub took: Duration,
}

/// When the last reload ran, what triggered it, and its outcome.
type LastReload = (SystemTime, String, Result<String, String>);

/// Loads new policy sets and swaps them in; counts and remembers what
/// happened for `sluice policy status`.
pub struct Reloader {
    live: Arc<LiveChain>,
    /// The engine, made at the first reload that needs one when the
    /// gateway started without policies. Its lock also makes reloads run
    /// one at a time.
    engine: tokio::sync::Mutex<Option<Engine>>,
    services: Services,
    /// The config file (`None`: the embedded default, which has no
    /// policies and never changes).
    config_path: Option<PathBuf>,
    /// The config the gateway started with: a change outside the policy
    /// chain is reported as needing a restart.
    started_with: Config,
    reloads: AtomicU64,
    failures: AtomicU64,
    last: Mutex<Option<LastReload>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for `live`, which was loaded from `config` (read from
    /// `config_path`) with `engine`.
    pub fn new(
        live: Arc<LiveChain>,
        engine: Option<Engine>,
        services: Services,
        config_path: Option<PathBuf>,
        config: Config,
    ) -> Self {
        Self {
            live,
            engine: tokio::sync::Mutex::new(engine),
            services,
            config_path,
            started_with: config,
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// The live chain this reloader replaces.
    pub fn live(&self) -> &Arc<LiveChain> {
        &self.live
    }

    /// The folders and files whose changes should trigger a reload: the
    /// config file, and the folders of every policy and candidate file.
    pub fn watched(&self, config: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        let mut add = |f: &Path| {
            let f = std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf());
            if let Some(d) = f
                .parent()
                .filter(|d| !dirs.iter().any(|x: &PathBuf| x == d))
            {
                dirs.push(d.to_path_buf());
            }
            files.push(f);
        };
        if let Some(c) = &self.config_path {
            add(c);
        }
        for p in &config.policies {
            add(&p.path);
            if let Some(c) = &p.candidate {
                add(c);
            }
        }
        (dirs, files)
    }

    /// Reload now (`trigger` names why, for the log). On success the new
    /// chain is in force for every session that starts from now on.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let mut engine = self.engine.lock().await;
        let started = Instant::now();
        let result = self.load(&mut engine, started).await;
        let n = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
        let summary = match &result {
            Ok(r) => {
                tracing::info!(
                    target: "sluice::policy",
                    trigger,
                    reload = n,
                    swapped = r.swapped,
                    policies = ?r.policies.iter().map(|(n, v, _, fresh)| format!("{n} {v}{}", if *fresh { " (new)" } else { "" })).collect::<Vec<_>>(),
                    took_ms = r.took.as_millis() as u64,
                    "policy reload done"
                );
                if !r.needs_restart.is_empty() {
                    tracing::warn!(
                        target: "sluice::policy",
                        sections = ?r.needs_restart,
                        "config changes outside the policy chain apply only after a restart"
                    );
                }
                Ok(if r.swapped {
                    "swapped".to_string()
                } else {
                    "unchanged".to_string()
                })
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    target: "sluice::policy",
                    trigger,
                    reload = n,
                    error = %e,
                    "policy reload refused: the running policies stay"
                );
                Err(e.clone())
            }
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((SystemTime::now(), trigger.to_string(), summary));
        result
    }

    async fn load(
        &self,
        engine: &mut Option<Engine>,
        started: Instant,
    ) -> Result<ReloadReport, String> {
        let config = match &self.config_path {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => self.started_with.clone(),
        };
        let needs_restart = restart_sections(&self.started_with, &config);
        let current = self.live.current();
        if config.policies.is_empty() {
            let swapped = current.is_some_and(|c| !c.is_empty());
            if swapped {
                self.live.set(None);
            }
            return Ok(ReloadReport {
                swapped,
                policies: Vec::new(),
                needs_restart,
                took: started.elapsed(),
            });
        }
        if engine.is_none() {
            *engine = Some(
                Engine::serving(&self.started_with, &config.policies).map_err(|e| e.to_string())?,
            );
        }
        let engine = engine.as_ref().expect("made above");
        let (chain, fresh) = engine
            .reload_chain(&config.policies, self.services.clone(), current.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        // A new version that ships session tests passes them before it
        // serves anyone.
        for (p, is_new) in config.policies.iter().zip(&fresh) {
            if let (Some(dir), true) = (&p.tests, *is_new) {
                run_session_tests(p, dir, engine.cache_dir()).await?;
            }
        }
        let same = current.as_ref().is_some_and(|c| {
            c.policies.len() == chain.policies.len()
                && c.policies
                    .iter()
                    .zip(&chain.policies)
                    .all(|(a, b)| Arc::ptr_eq(a, b))
        });
        let policies = chain
            .policies
            .iter()
            .zip(&fresh)
            .map(|(p, f)| {
                (
                    p.name.to_string(),
                    p.version.clone(),
                    p.wasm_hash.clone(),
                    *f,
                )
            })
            .collect();
        if !same {
            self.live.set(Some(chain));
        }
        Ok(ReloadReport {
            swapped: !same,
            policies,
            needs_restart,
            took: started.elapsed(),
        })
    }

    /// `sluice policy status`: per policy of the chain in force, its
    /// version, load time and figures; and the reloads so far.
    pub fn status(&self) -> Value {
        let policies: Vec<Value> = self
            .live
            .current()
            .map(|c| c.stats())
            .unwrap_or_default()
            .iter()
            .map(stats_json)
            .collect();
        let last = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, trigger, r)| {
                json!({
                    "at": humantime::format_rfc3339_millis(*at).to_string(),
                    "trigger": trigger,
                    "ok": r.is_ok(),
                    "result": match r { Ok(s) | Err(s) => s },
                })
            });
        json!({
            "policies": policies,
            "reloads": self.reloads.load(Ordering::Relaxed),
            "reload_failures": self.failures.load(Ordering::Relaxed),
            "last_reload": last,
        })
    }
}

/// Longest a policy's session tests may run before the reload gives up.
const SESSION_TESTS_TIMEOUT: Duration = Duration::from_secs(300);

/// Run `sluice test DIR --policy NAME=FILE` (this executable, in a child
/// process of its own: off the serving threads, and a test that
/// misbehaves cannot touch the gateway) for the version just loaded.
async fn run_session_tests(
    p: &crate::config::PolicyConfig,
    dir: &Path,
    cache: &Path,
) -> Result<(), String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("policy {:?}: cannot run its session tests: {e}", p.name))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("test")
        .arg("--policy")
        .arg(format!("{}={}", p.name, p.path.display()))
        .arg("--cache-dir")
        .arg(cache)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(SESSION_TESTS_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "policy {:?}: its session tests in {} ran past {}s",
                p.name,
                dir.display(),
                SESSION_TESTS_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "policy {:?}: cannot run its session tests: {e}",
                p.name
            ));
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    // The failing cases and the totals, on one line.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("      ") || l.contains(" passed, "))
        .map(str::trim)
        .take(6)
        .collect();
    let err = String::from_utf8_lossy(&out.stderr);
    if lines.is_empty() {
        lines.extend(err.lines().map(str::trim).filter(|l| !l.is_empty()).take(3));
    }
    Err(format!(
        "policy {:?}: its session tests in {} failed: {}",
        p.name,
        dir.display(),
        lines.join("; ")
    ))
}

/// A report as JSON, for the admin interface.
pub fn report_json(r: &ReloadReport) -> Value {
    json!({
        "swapped": r.swapped,
        "policies": r.policies.iter().map(|(name, version, hash, fresh)| json!({
            "name": name, "version": version, "wasm_hash": hash, "loaded": fresh,
        })).collect::<Vec<_>>(),
        "needs_restart": r.needs_restart,
        "took_ms": r.took.as_secs_f64() * 1000.0,
    })
}

fn stats_json(s: &PolicyStats) -> Value {
    let v = &s.verdicts;
    let mut out = json!({
        "name": s.name,
        "version": s.version,
        "wasm_hash": s.wasm_hash,
        "loaded_at": humantime::format_rfc3339_millis(s.loaded_at).to_string(),
        "stages": s.stages.iter().map(|st| st.as_str()).collect::<Vec<_>>(),
        "calls": s.calls,
        "verdicts": {
            "continue": v.continued, "accept": v.accepted, "reject": v.rejected,
            "tempfail": v.tempfailed, "discard": v.discarded,
            "quarantine": v.quarantined, "route": v.routed,
        },
        "errors": s.errors,
        "timeouts": s.timeouts,
        "traps": s.traps,
        "memory_limits": s.memory_limits,
        "instantiations": s.instantiations,
        "reused": s.reused,
        "mean_call_us": s.mean_call_time.as_secs_f64() * 1e6,
        "counters": s.counters.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(c) = &s.candidate {
        out["candidate"] = stats_json(&c.stats);
        out["candidate"]["mode"] = json!(match c.mode {
            crate::config::CandidateMode::Shadow => "shadow",
            crate::config::CandidateMode::Canary => "canary",
        });
        out["candidate"]["canary_percent"] = json!(c.percent);
        out["candidate"]["differences"] = json!(c.differences);
    }
    out
}

/// The config sections outside the policy chain that differ: they take
/// effect only after a restart.
fn restart_sections(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, a: String, b: String| {
        if a != b {
            out.push(name.to_string());
        }
    };
    check(
        "data_dir",
        format!("{:?}", old.data_dir),
        format!("{:?}", new.data_dir),
    );
    check(
        "hostname",
        format!("{:?}", old.hostname),
        format!("{:?}", new.hostname),
    );
    check(
        "local_domains",
        format!("{:?}", old.local_domains),
        format!("{:?}", new.local_domains),
    );
    check(
        "relay_networks",
        format!("{:?}", old.relay_networks),
        format!("{:?}", new.relay_networks),
    );
    check(
        "listener",
        format!("{:?}", old.listeners),
        format!("{:?}", new.listeners),
    );
    check("tls", format!("{:?}", old.tls), format!("{:?}", new.tls));
    check(
        "limits",
        format!("{:?}", old.limits),
        format!("{:?}", new.limits),
    );
    check(
        "spool",
        format!("{:?}", old.spool),
        format!("{:?}", new.spool),
    );
    check(
        "queue",
        format!("{:?}", old.queue),
        format!("{:?}", new.queue),
    );
    check(
        "delivery",
        format!("{:?}", old.delivery),
        format!("{:?}", new.delivery),
    );
    check("dns", format!("{:?}", old.dns), format!("{:?}", new.dns));
    check("log", format!("{:?}", old.log), format!("{:?}", new.log));
    check(
        "policy_engine",
        format!("{:?}", old.policy_engine),
        format!("{:?}", new.policy_engine),
    );
    out
}

/// Watch the config file and the policy folders; after a change (and a
/// quiet spell, so that an editor's or a copy's partial writes are over)
/// reload. Runs until `shutdown`. Watching is best effort: a folder that
/// cannot be watched is logged, and SIGHUP and `sluice policy reload`
/// still work.
pub async fn watch(
    reloader: Arc<Reloader>,
    config: Config,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use notify::Watcher;
    const QUIET: Duration = Duration::from_millis(150);
    const MAX_WAIT: Duration = Duration::from_secs(3);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch policy files: reload with SIGHUP or `sluice policy reload`");
            return;
        }
    };
    let mut config = config;
    let mut watching: Vec<PathBuf> = Vec::new();
    loop {
        let (dirs, files) = reloader.watched(&config);
        for d in watching.iter().filter(|d| !dirs.contains(d)) {
            let _ = watcher.unwatch(d);
        }
        for d in dirs.iter().filter(|d| !watching.contains(d)) {
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %d.display(), error = %e, "cannot watch folder");
            }
        }
        watching = dirs;
        // Wait for a change to one of our files (or any .wasm in a
        // watched folder: a new version is often written beside and
        // renamed over).
        let relevant =
            |p: &Path| files.iter().any(|f| f == p) || p.extension().is_some_and(|e| e == "wasm");
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                p = rx.recv() => match p {
                    None => return,
                    Some(p) if relevant(&p) => break,
                    Some(_) => {}
                },
            }
        }
        let first = Instant::now();
        loop {
            match tokio::time::timeout(QUIET, rx.recv()).await {
                Ok(Some(_)) if first.elapsed() < MAX_WAIT => continue,
                Ok(None) => return,
                _ => break,
            }
        }
        let reloaded = reloader.reload("file change").await.is_ok();
        // The next round watches what the config in force names.
        let fresh = reloader
            .config_path
            .as_ref()
            .filter(|_| reloaded)
            .and_then(|p| Config::load(p).ok());
        if let Some(c) = fresh {
            config = c;
        }
    }
}
