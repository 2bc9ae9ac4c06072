//! Loading a chain from the configuration: each policy compiled (or taken
//! from the compiled cache), checked against the contract, pre-linked, its
//! `describe` and `init` run, its init snapshot taken, its candidate
//! loaded beside it; and reloading, which keeps what did not change.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::CandidateMode;
use crate::policy::chain::{Candidate, Chain, LoadedPolicy, WarmList};
use crate::policy::engine::*;
use crate::policy::host::{Grants, GuestCounters};
use crate::policy::snapshot;
use crate::policy::{PolicyConfig, PolicyError, Services};

impl Engine {
    /// An empty warm list, known to the pool (which may empty it for a
    /// session's reservation).
    fn warm_list(&self) -> Arc<WarmList> {
        let list = Arc::new(WarmList::default());
        let weak = Arc::downgrade(&list);
        self.inner.pool.register_warm(weak);
        list
    }

    /// Load `policies` in order into a chain. Compilation (or a cache load)
    /// runs on a dedicated thread; then each component is checked against
    /// the contract, pre-linked, and `describe` and `init` run in a
    /// throwaway instance. The first failure refuses the whole chain, with
    /// an error naming the policy and the cause.
    pub async fn load_chain(
        &self,
        policies: &[PolicyConfig],
        services: Services,
    ) -> Result<Arc<Chain>, PolicyError> {
        Ok(self.reload_chain(policies, services, None).await?.0)
    }

    /// Load `policies` like [`load_chain`](Self::load_chain), but keep
    /// from `previous` each loaded policy whose `[[policy]]` entry and
    /// component files (active and candidate) are unchanged: no compile,
    /// no `init`, and its counters go on. Also says, per policy, whether
    /// it was loaded anew.
    pub async fn reload_chain(
        &self,
        policies: &[PolicyConfig],
        services: Services,
        previous: Option<&Chain>,
    ) -> Result<(Arc<Chain>, Vec<bool>), PolicyError> {
        let mut loaded = Vec::with_capacity(policies.len());
        let mut fresh = Vec::with_capacity(policies.len());
        for p in policies {
            if let Some(old) = previous
                .and_then(|c| c.find(&p.name))
                .filter(|old| unchanged(old, p))
            {
                loaded.push(old.clone());
                fresh.push(false);
                continue;
            }
            loaded.push(Arc::new(self.load_policy(p, &services).await?));
            fresh.push(true);
        }
        let chain = Chain::new(self.inner.clone(), loaded, services);
        Ok((Arc::new(chain), fresh))
    }

    /// Load one policy and its candidate, if any.
    async fn load_policy(
        &self,
        p: &PolicyConfig,
        services: &Services,
    ) -> Result<LoadedPolicy, PolicyError> {
        let (mut policy, wasm) = self.load_one(p, &p.name, &p.path).await?;
        // The namespace is the policy's name (a canary shares it, a shadow
        // has its own with the same quota, see below).
        let quota = crate::policy::kv::Quota {
            max_entries: p.kv_max_entries,
            max_bytes: usize::try_from(p.kv_max_memory.0).unwrap_or(usize::MAX),
        };
        services.kv.set_quota(&p.name, quota);
        Chain::prepare(&self.inner, &mut policy, services).await?;
        self.snapshot(&mut policy, wasm, services).await;
        if let Some(path) = &p.candidate {
            // A shadow has a key-value namespace of its own, so that its
            // writes (rate counters…) do not count twice; a canary serves
            // real sessions in the active version's place and shares it.
            let name = match p.candidate_mode {
                CandidateMode::Shadow => format!("{}~shadow", p.name),
                CandidateMode::Canary => p.name.clone(),
            };
            services.kv.set_quota(&name, quota);
            let (mut c, wasm) = self.load_one(p, &name, path).await?;
            Chain::prepare(&self.inner, &mut c, services).await?;
            self.snapshot(&mut c, wasm, services).await;
            policy.candidate = Some(Candidate {
                policy: Arc::new(c),
                mode: p.candidate_mode,
                percent: p.canary_percent,
                differences: Default::default(),
            });
        }
        Ok(policy)
    }

    /// Start the fresh instances of `policy` from a snapshot taken after
    /// `init` (see [`super::snapshot`]), when it does not reuse instances
    /// and `init_snapshots` is on. Best effort: without a snapshot, `init`
    /// runs in every instance, and the log says why.
    async fn snapshot(&self, policy: &mut LoadedPolicy, wasm: Arc<[u8]>, services: &Services) {
        if policy.reuse || !self.inner.cfg.init_snapshots {
            return;
        }
        let started = std::time::Instant::now();
        let chain = Chain::new(self.inner.clone(), Vec::new(), services.clone());
        match snapshot::make(&self.inner, &chain, policy, wasm).await {
            Ok(pre) => {
                policy.pre = pre;
                policy.preinit = true;
                tracing::info!(
                    target: "sluice::policy",
                    policy = &*policy.name,
                    took_ms = started.elapsed().as_millis() as u64,
                    "init snapshot taken: fresh instances start initialised"
                );
            }
            Err(why) => tracing::info!(
                target: "sluice::policy",
                policy = &*policy.name,
                %why,
                "no init snapshot: init runs in every fresh instance"
            ),
        }
    }

    async fn load_one(
        &self,
        p: &PolicyConfig,
        name: &str,
        path: &Path,
    ) -> Result<(LoadedPolicy, Arc<[u8]>), PolicyError> {
        let inner = self.inner.clone();
        let owned_name = name.to_string();
        let owned_path = path.to_path_buf();
        let (component, wasm_hash, wasm) =
            on_compile_thread(name, move || compile(&inner, &owned_name, &owned_path))
                .await
                .map_err(|cause| PolicyError::Thread {
                    policy: name.to_string(),
                    cause,
                })??;
        let pre = link(&self.inner, name, &component)?;
        let policy = LoadedPolicy {
            name: Arc::from(name),
            version: String::new(),
            wasm_hash,
            stages: 0,
            pre,
            on_error: p.on_error,
            grants: Grants::from(&p.capabilities),
            // The pool slot is a hard ceiling anyway; the config check
            // refuses a bigger cap, this covers configs built in code.
            max_memory: usize::try_from(p.max_memory.0.min(self.inner.cfg.max_memory.0))
                .unwrap_or(usize::MAX),
            timeout: p.timeout,
            config_json: config_json(&p.config),
            counters: Arc::new(GuestCounters::default()),
            stats: Default::default(),
            reuse: p.reuse_instances,
            preinit: false,
            warm: self.warm_list(),
            cfg: p.clone(),
            loaded_at: std::time::SystemTime::now(),
            candidate: None,
        };
        Ok((policy, wasm))
    }
}

/// Whether a loaded policy is what `p` asks for: the same entry, and
/// component files with the same contents.
fn unchanged(old: &LoadedPolicy, p: &PolicyConfig) -> bool {
    let same_file = |path: &Path, hash: &str| {
        std::fs::read(path).is_ok_and(|b| hex(&Sha256::digest(&b)) == hash)
    };
    old.cfg == *p
        && same_file(&p.path, &old.wasm_hash)
        && match (&p.candidate, &old.candidate) {
            (None, None) => true,
            (Some(path), Some(c)) => same_file(path, &c.policy.wasm_hash),
            _ => false,
        }
}
