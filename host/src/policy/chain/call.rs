//! One call into a guest: instantiation (fresh, or a warm instance
//! handed on), the CPU deadline and memory cap, and the classification of
//! a failure (trap, deadline, memory) into a [`CallError`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};

use crate::policy::bindings::{PolicyWorld, PolicyWorldPre, types};
use crate::policy::engine::{EngineInner, one_line, stage_bits};
use crate::policy::host::{HostState, MAX_LOG_LINES, Phase, clean};
use crate::policy::message::MessageResource;
use crate::policy::pool::Lease;
use crate::policy::{CallError, OnError, PolicyError, Services, Stage};
use crate::smtp::{Enhanced, Reply};

use super::*;

impl Chain {
    /// Instantiate, `init` and `describe` one policy in a throwaway
    /// instance; keep what it declared. Part of loading.
    pub(crate) async fn prepare(
        engine: &Arc<EngineInner>,
        p: &mut LoadedPolicy,
        services: &Services,
    ) -> Result<(), PolicyError> {
        let chain = Chain::new(engine.clone(), Vec::new(), services.clone());
        let load_err = |call, cause| PolicyError::Load {
            policy: p.name.to_string(),
            call,
            cause,
        };
        let mut inst = chain
            .instantiate(p, Phase::Load, false, Hold::Loose)
            .await
            .map_err(|e| load_err("instantiate", e))?;
        // `init` first: a policy may narrow its stages to those its
        // config needs (`describe` after `init`, see wit/policy.wit).
        match chain
            .call(p, &mut inst, Phase::Load, Call::Init(&p.config_json))
            .await
        {
            Ok(Answer::Init(Ok(()))) => {}
            Ok(Answer::Init(Err(m))) => {
                return Err(PolicyError::Init {
                    policy: p.name.to_string(),
                    message: clean(&m, MAX_REASON),
                });
            }
            Ok(_) => unreachable_answer(),
            Err(e) => return Err(load_err("init", e)),
        }
        let d = match chain.call(p, &mut inst, Phase::Load, Call::Describe).await {
            Ok(Answer::Describe(d)) => d,
            Ok(_) => unreachable_answer(),
            Err(e) => return Err(load_err("describe", e)),
        };
        let stages: Vec<Stage> = d.stages.iter().map(|s| stage_of(*s)).collect();
        if stages.is_empty() {
            // Its config leaves it nothing to do: loaded, never called.
            tracing::warn!(
                target: "sluice::policy",
                policy = &*p.name,
                "the policy declares no stage with this config: it is never called"
            );
        }
        p.stages = stage_bits(&stages);
        p.version = clean(&d.version, 64);
        tracing::info!(
            target: "sluice::policy",
            policy = &*p.name,
            describes_as = %clean(&d.name, 64),
            version = %p.version,
            stages = ?stages,
            wasm_hash = %p.wasm_hash,
            "policy loaded"
        );
        Ok(())
    }

    /// Instantiate `pre` (a copy of `p`'s component, instrumented for a
    /// snapshot) and run `init` in it, as loading does. The store and the
    /// instance, for the snapshot to read.
    pub(crate) async fn init_for_snapshot(
        &self,
        p: &LoadedPolicy,
        pre: &PolicyWorldPre<HostState>,
    ) -> Result<(Store<HostState>, wasmtime::component::Instance), String> {
        let lease = self.lease(Hold::Loose).map_err(|e| e.to_string())?;
        let mut store = self.new_store(p, Phase::Load, lease);
        let (.., wall) = self.budgets(p);
        let instance = match tokio::time::timeout(
            wall,
            pre.instance_pre().instantiate_async(&mut store),
        )
        .await
        {
            Err(_) => return Err(CallError::WallTimeout(wall).to_string()),
            Ok(Err(e)) => return Err(classify(e, store.data(), p).to_string()),
            Ok(Ok(i)) => i,
        };
        let world = PolicyWorld::new(&mut store, &instance).map_err(|e| one_line(&e))?;
        let mut inst = Instance {
            store,
            world,
            uses: 0,
            base_memory: 0,
        };
        match self
            .call(p, &mut inst, Phase::Load, Call::Init(&p.config_json))
            .await
        {
            Ok(Answer::Init(Ok(()))) => {}
            Ok(Answer::Init(Err(m))) => return Err(format!("init: {}", clean(&m, MAX_REASON))),
            Ok(_) => unreachable_answer(),
            Err(e) => return Err(format!("init: {e}")),
        }
        Ok((inst.store, instance))
    }

    /// What a fresh instance of `pre` answers to `describe`, without
    /// `init` (a snapshot must answer as the initialised policy did).
    pub(crate) async fn describe_uninitialised(
        &self,
        p: &LoadedPolicy,
        pre: &PolicyWorldPre<HostState>,
    ) -> Result<types::Description, String> {
        let mut inst = self
            .instance_of(p, pre, Phase::Load, Hold::Loose)
            .await
            .map_err(|e| e.to_string())?;
        match self.call(p, &mut inst, Phase::Load, Call::Describe).await {
            Ok(Answer::Describe(d)) => Ok(d),
            Ok(_) => unreachable_answer(),
            Err(e) => Err(format!("describe: {e}")),
        }
    }

    fn budgets(&self, p: &LoadedPolicy) -> (u64, Duration, Duration) {
        let tick = self.engine.cfg.epoch_tick.max(Duration::from_micros(1));
        let ticks = (p.timeout.as_nanos().div_ceil(tick.as_nanos())).max(1);
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        let io = self.engine.cfg.host_io_timeout;
        let wall = p.timeout.saturating_mul(4).saturating_add(io);
        (ticks, io, wall)
    }

    /// An `init`ed instance of `p`: a warm one when the policy reuses
    /// instances and one is idle, else a fresh one. `hold`: whose slot it
    /// takes (a session's reservation, or a lease of its own).
    pub(super) async fn check_out(
        &self,
        p: &LoadedPolicy,
        phase: Phase,
        hold: Hold,
    ) -> Result<Instance, CallError> {
        let session_dns = self.engine.cfg.max_dns_lookups_per_session;
        if p.reuse {
            let idle = p.warm.pop();
            if let Some(mut inst) = idle {
                bump(&p.stats.reused);
                let state = inst.store.data_mut();
                if let Hold::Session = hold {
                    // From now on it is one of the session's reserved slots.
                    state.lease = None;
                }
                state.begin_session(session_dns);
                return Ok(inst);
            }
        }
        let mut inst = self.instantiate(p, phase, true, hold).await?;
        inst.store.data_mut().begin_session(session_dns);
        Ok(inst)
    }

    /// An instance of `pre` (`p`'s component or its snapshot) in a store
    /// of its own, with `p`'s limits; nothing called in it yet.
    async fn instance_of(
        &self,
        p: &LoadedPolicy,
        pre: &PolicyWorldPre<HostState>,
        phase: Phase,
        hold: Hold,
    ) -> Result<Instance, CallError> {
        let lease = self.lease(hold)?;
        let mut store = self.new_store(p, phase, lease);
        let (.., wall) = self.budgets(p);
        let world = match tokio::time::timeout(wall, pre.instantiate_async(&mut store)).await {
            Err(_) => return Err(CallError::WallTimeout(wall)),
            Ok(Err(e)) => {
                return Err(match classify(e, store.data(), p) {
                    CallError::Trap(m) => CallError::Instantiate(m),
                    other => other,
                });
            }
            Ok(Ok(w)) => w,
        };
        Ok(Instance {
            store,
            world,
            uses: 0,
            base_memory: 0,
        })
    }

    /// The slot a new instance held as `hold` takes: a session's are
    /// reserved already; any other needs a lease (`Capacity` when the pool
    /// has none, even after dropping idle warm instances).
    fn lease(&self, hold: Hold) -> Result<Option<Lease>, CallError> {
        match hold {
            Hold::Session => Ok(None),
            Hold::Loose => self
                .engine
                .pool
                .lease(true)
                .map(Some)
                .ok_or(CallError::Capacity),
        }
    }

    /// A store for an instance of `p`, with its limits, and the budgets of
    /// one call in `phase` started; `lease` lives as long as the store.
    fn new_store(&self, p: &LoadedPolicy, phase: Phase, lease: Option<Lease>) -> Store<HostState> {
        let mut state = HostState::new(
            p.name.clone(),
            p.grants,
            self.services.clone(),
            p.counters.clone(),
            p.max_memory,
        );
        state.lease = lease;
        let mut store = Store::new(&self.engine.wasm, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut cx| {
            let s = cx.data_mut();
            s.ticks += 1;
            if s.ticks > s.tick_budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        self.begin(p, &mut store, phase);
        store
    }

    /// Start the CPU and I/O budgets of one call.
    pub(crate) fn begin(&self, p: &LoadedPolicy, store: &mut Store<HostState>, phase: Phase) {
        let (ticks, io, _) = self.budgets(p);
        let dns = self.engine.cfg.max_dns_lookups_per_call;
        store.data_mut().begin_call(phase, ticks, io, dns);
        store.set_epoch_deadline(1);
    }

    /// A fresh instance of `p` (and `init` in it when `run_init`, unless
    /// `p` starts from a snapshot taken after `init`).
    async fn instantiate(
        &self,
        p: &LoadedPolicy,
        phase: Phase,
        run_init: bool,
        hold: Hold,
    ) -> Result<Instance, CallError> {
        bump(&p.stats.instantiations);
        let mut inst = self.instance_of(p, &p.pre, phase, hold).await?;
        if run_init && !p.preinit {
            match self
                .call(p, &mut inst, phase, Call::Init(&p.config_json))
                .await?
            {
                Answer::Init(Ok(())) => {}
                Answer::Init(Err(m)) => return Err(CallError::Init(clean(&m, MAX_REASON))),
                _ => unreachable_answer(),
            }
        }
        inst.base_memory = inst.store.data().limiter.peak;
        Ok(inst)
    }

    /// One call, within the CPU, I/O and wall-clock budgets.
    pub(super) async fn call(
        &self,
        p: &LoadedPolicy,
        inst: &mut Instance,
        phase: Phase,
        call: Call<'_>,
    ) -> Result<Answer, CallError> {
        let (ticks, io, wall) = self.budgets(p);
        let dns = self.engine.cfg.max_dns_lookups_per_call;
        inst.store.data_mut().begin_call(phase, ticks, io, dns);
        inst.store.set_epoch_deadline(1);
        let r = tokio::time::timeout(wall, invoke(&inst.world, &mut inst.store, call)).await;
        report_output(inst.store.data());
        match r {
            Err(_) => Err(CallError::WallTimeout(wall)),
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(classify(e, inst.store.data(), p)),
        }
    }
}

/// Whose pool slot an instance takes (see [`crate::policy::pool`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Hold {
    /// One the session reserved when it started.
    Session,
    /// A lease of its own (loading, route calls).
    Loose,
}

pub(super) fn unreachable_answer() -> ! {
    unreachable!("invoke answers each call with its own kind")
}

pub(super) async fn invoke(
    world: &PolicyWorld,
    store: &mut Store<HostState>,
    call: Call<'_>,
) -> wasmtime::Result<Answer> {
    let g = world.sluice_policy_policy();
    Ok(match call {
        Call::Describe => Answer::Describe(g.call_describe(&mut *store).await?),
        Call::Init(c) => Answer::Init(g.call_init(&mut *store, c).await?),
        Call::Connect(s) => Answer::Verdict(g.call_on_connect(&mut *store, s).await?),
        Call::Helo(s, n) => Answer::Verdict(g.call_on_helo(&mut *store, s, n).await?),
        Call::MailFrom(s, f, params) => {
            Answer::Verdict(g.call_on_mail_from(&mut *store, s, f, params).await?)
        }
        Call::Rcpt(s, e, r, params) => {
            Answer::Verdict(g.call_on_rcpt(&mut *store, s, e, r, params).await?)
        }
        Call::Data(s, e, msg) => {
            let res = store.data_mut().table.push(MessageResource(msg))?;
            let rep = res.rep();
            let r = g.call_on_data(&mut *store, s, e, res).await;
            // Gone already if the guest dropped it; nothing else to do.
            let _ = store
                .data_mut()
                .table
                .delete(Resource::<MessageResource>::new_own(rep));
            Answer::Data(r?)
        }
        Call::Route(e, r) => Answer::Route(g.call_on_route(&mut *store, e, r).await?),
    })
}

/// Name a failure by type: memory cap, CPU deadline, or another trap.
pub(super) fn classify(e: wasmtime::Error, state: &HostState, p: &LoadedPolicy) -> CallError {
    if let Some(asked) = state.limiter.refused {
        return CallError::MemoryLimit {
            limit: p.max_memory as u64,
            asked: asked as u64,
        };
    }
    if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        // The accounting keeps within the pool; wasmtime's own limits
        // (core instances, memories, tables per slot) may still be met.
        return CallError::Capacity;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline(p.timeout),
        _ => CallError::Trap(one_line(&e)),
    }
}

/// Log what the guest wrote to stdout/stderr, and log lines it lost.
pub(super) fn report_output(state: &HostState) {
    let policy = &*state.policy;
    let stage = state.phase;
    for (stream, cap) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        if let Some((text, dropped)) = cap.drain() {
            for line in text.lines().take(MAX_LOG_LINES as usize) {
                let line = clean(line, 1024);
                tracing::info!(target: "sluice::policy", policy, %stage, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(target: "sluice::policy", policy, %stage, stream, dropped, "guest output over the bound dropped");
            }
        }
    }
    if state.logs_dropped > 0 {
        tracing::warn!(
            target: "sluice::policy",
            policy,
            %stage,
            dropped = state.logs_dropped,
            "log lines over {MAX_LOG_LINES} in one call dropped"
        );
    }
}

pub(super) fn record_time(p: &LoadedPolicy, started: Instant) {
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    p.stats.nanos.fetch_add(ns, Ordering::Relaxed);
}

pub(super) fn record_failure(p: &LoadedPolicy, stage: Phase, e: &CallError) {
    bump(&p.stats.errors);
    match e {
        CallError::Deadline(_) | CallError::WallTimeout(_) => bump(&p.stats.timeouts),
        CallError::Trap(_) => bump(&p.stats.traps),
        CallError::MemoryLimit { .. } => bump(&p.stats.memory),
        _ => {}
    }
    tracing::warn!(
        target: "sluice::policy",
        policy = &*p.name,
        %stage,
        cause = %e,
        on_error = ?p.on_error,
        "policy call failed"
    );
}

pub(super) fn error_tempfail() -> Reply {
    Reply::new(451, Enhanced(4, 3, 0), "policy error, try again later")
}

/// What a failed call of `p` means for the session: its `on_error`, except
/// that a call that found no instance slot is always a temporary failure
/// (the policy was never run, so `continue` would bypass it).
pub(super) fn on_failure(p: &LoadedPolicy, e: &CallError) -> Failure {
    if matches!(e, CallError::Capacity) {
        return Failure::Tempfail(error_capacity());
    }
    match p.on_error {
        OnError::Continue => Failure::Continue,
        OnError::Tempfail => Failure::Tempfail(error_tempfail()),
        OnError::Reject => Failure::Reject,
    }
}

/// See [`on_failure`].
pub(super) enum Failure {
    /// Go on as if the policy had not been asked.
    Continue,
    /// Try again later with this reply.
    Tempfail(Reply),
    /// Refuse (each stage with its own form of `550 5.7.1`).
    Reject,
}

/// A policy could not be called for want of an instance slot.
fn error_capacity() -> Reply {
    Reply::new(
        451,
        Enhanced(4, 3, 2),
        "too busy to check this now, try again later",
    )
}

pub(super) fn error_reject() -> Reply {
    Reply::new(550, Enhanced(5, 7, 1), "policy error")
}
