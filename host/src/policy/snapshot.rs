//! Init snapshots: `init` once per loaded version, not once per session.
//!
//! A policy without `reuse_instances` gets a fresh instance in every SMTP
//! session, and without a snapshot each of them runs the guest's start
//! code and `init` again: parse the config, compile regexes, build
//! tables. For the shipped chain that was about 3100 of the 7900 lines of
//! code a session touched, and most of a fresh session's time in the
//! gateway (see docs/benchmarks.md).
//!
//! Loading a policy therefore also makes, best effort:
//!
//! 1. an instrumented copy of the component (`wasmtime-wizer`: each core
//!    module exports its memories and globals), compiled off the serving
//!    threads;
//! 2. an instance of it, in which `init` runs with the policy's config and
//!    capabilities, exactly as at load;
//! 3. a snapshot: the component rewritten so that its memories and globals
//!    start as `init` left them;
//! 4. that snapshot compiled (off the serving threads) and checked: a fresh
//!    instance of it, with no `init`, must `describe` itself as the loaded
//!    policy did.
//!
//! Sessions then instantiate the snapshot and skip `init`. A snapshot is
//! not taken (and `init` runs per session as before, logged at info) when
//! `init` leaves a host resource open (an output stream, say: its handle
//! would be baked into memory but not exist in a new instance), when the
//! component is over [`SNAPSHOT_MAX_COMPONENT`] (a Python or JavaScript
//! component: two more compiles of several seconds at every load), or when
//! any step fails. What `init` read (clock, random numbers, key-value
//! state) is kept as it was: that is the contract's "init once per loaded
//! version".

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::bindings::PolicyWorldPre;
use super::chain::{Chain, LoadedPolicy};
use super::engine::{EngineInner, link, on_compile_thread, one_line};
use super::host::{HostState, Phase};

/// Larger components keep `init` per session (see the module docs).
pub(crate) const SNAPSHOT_MAX_COMPONENT: usize = 4 << 20;

/// Take, compile and check the init snapshot of `p` (already prepared:
/// `init` and `describe` ran at load). `wasm` is its component. `Err`
/// says why there is none.
pub(crate) async fn make(
    engine: &Arc<EngineInner>,
    chain: &Chain,
    p: &LoadedPolicy,
    wasm: Arc<[u8]>,
) -> Result<PolicyWorldPre<HostState>, String> {
    if wasm.len() > SNAPSHOT_MAX_COMPONENT {
        return Err(format!(
            "the component is over {} MiB",
            SNAPSHOT_MAX_COMPONENT >> 20
        ));
    }
    let instrumented = {
        let (engine, wasm) = (engine.clone(), wasm.clone());
        on_compile_thread(&p.name, move || {
            let (_, bytes) = Wizer::new()
                .instrument_component(&wasm)
                .map_err(|e| format!("instrument: {}", one_line(&e)))?;
            Component::new(&engine.wasm, &bytes)
                .map_err(|e| format!("compile the instrumented copy: {}", one_line(&e)))
        })
        .await??
    };
    let pre = link(engine, &p.name, &instrumented).map_err(|e| e.to_string())?;
    let (mut store, instance) = chain.init_for_snapshot(p, &pre).await?;
    if !store.data().table.is_empty() {
        return Err("init left a host resource open (a stream, a message…), \
                    which a snapshot cannot keep"
            .into());
    }
    // The same parse as on the compile thread (cheap next to compiling):
    // the snapshot rewrites the component it describes.
    let wizer = Wizer::new();
    let (cx, _) = wizer
        .instrument_component(&wasm)
        .map_err(|e| format!("instrument: {}", one_line(&e)))?;
    chain.begin(p, &mut store, Phase::Load);
    let mut access = Access {
        store: &mut store,
        instance,
        failed: None,
    };
    let snapshot = wizer
        .snapshot_component(&cx, &mut access)
        .await
        .map_err(|e| format!("snapshot: {}", one_line(&e)))?;
    if let Some(e) = access.failed {
        return Err(format!("snapshot: {e}"));
    }
    drop(store);
    let component = {
        let engine = engine.clone();
        on_compile_thread(&p.name, move || {
            Component::new(&engine.wasm, &snapshot)
                .map_err(|e| format!("compile the snapshot: {}", one_line(&e)))
        })
        .await??
    };
    let snap = link(engine, &p.name, &component).map_err(|e| e.to_string())?;
    let d = chain.describe_uninitialised(p, &snap).await?;
    let stages = super::engine::stage_bits(
        &d.stages
            .iter()
            .map(|s| super::chain::stage_of(*s))
            .collect::<Vec<_>>(),
    );
    if stages != p.stages || super::host::clean(&d.version, 64) != p.version {
        return Err(format!(
            "a fresh instance of the snapshot describes itself otherwise \
             (version {:?}, stages {stages:#x}; loaded: {:?}, {:#x})",
            d.version, p.version, p.stages
        ));
    }
    Ok(snap)
}

/// What wizer reads the instrumented instance through. Its methods cannot
/// fail, so the first failure is kept in `failed` (and the snapshot
/// thrown away) instead of panicking.
struct Access<'a> {
    store: &'a mut Store<HostState>,
    instance: Instance,
    failed: Option<String>,
}

impl Access<'_> {
    /// Call `func` of the exported instance `instance` (no parameters, one
    /// result) and hand the result to `take`.
    async fn call<R, O>(
        &mut self,
        instance: &str,
        func: &str,
        take: impl FnOnce(&Store<HostState>, R) -> O,
    ) -> Option<O>
    where
        R: Lift + Send + Sync + 'static,
    {
        if self.failed.is_some() {
            return None;
        }
        let r = async {
            let (_, at) = self
                .instance
                .get_export(&mut *self.store, None, instance)
                .ok_or_else(|| format!("no export {instance}"))?;
            let (_, f) = self
                .instance
                .get_export(&mut *self.store, Some(&at), func)
                .ok_or_else(|| format!("no export {instance}#{func}"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, f)
                .map_err(|e| format!("{instance}#{func}: {}", one_line(&e)))?;
            let (r,) = f
                .call_async(&mut *self.store, ())
                .await
                .map_err(|e| format!("{instance}#{func}: {}", one_line(&e)))?;
            Ok::<_, String>(take(self.store, r))
        }
        .await;
        match r {
            Ok(o) => Some(o),
            Err(e) => {
                self.failed = Some(e);
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let mut contents = Some(contents);
        self.call(instance, func, |store, list: WasmList<u8>| {
            if let Some(c) = contents.take() {
                c(list.as_le_slice(store));
            }
        })
        .await;
        if let Some(c) = contents {
            // The read failed (recorded): wizer still wants an answer.
            c(&[]);
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, v: i32| v).await.unwrap_or(0)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, v: i64| v).await.unwrap_or(0)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, v: f32| v.to_bits())
            .await
            .unwrap_or(0)
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, v: f64| v.to_bits())
            .await
            .unwrap_or(0)
    }
}
