//! A loaded chain of policies ([`Chain`]), the per-session view of it
//! ([`ChainSession`]), and the calls into guests: instantiation, budgets,
//! failure handling, and turning guest answers into host decisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::Resource;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{PolicyWorld, PolicyWorldPre, types};
use super::engine::{EngineInner, one_line, stage_bits};
use super::host::{Grants, GuestCounters, HostState, MAX_LOG_LINES, Phase, clean};
use super::message::{MessageResource, ParsedMessage, cut};
use super::tap::{self, HostTap};
use super::{
    CallError, Change, DataDecision, DataOutcome, Decision, EnvelopeInfo, OnError, PolicyError,
    PolicyStats, RouteDecision, Services, SessionInfo, Stage, VerdictCounts,
};
use crate::config::{CandidateMode, PolicyConfig};
use crate::route::{Route, TlsMode};
use crate::smtp::{Enhanced, Reply};

/// Longest reply text kept from a guest, in octets.
const MAX_REPLY_TEXT: usize = 512;
/// Longest quarantine reason or init error kept, in octets.
const MAX_REASON: usize = 256;
/// Longest header value kept from a change, in octets.
const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Most changes kept from one data-stage answer.
const MAX_CHANGES: usize = 100;
/// Messages larger than this are parsed whole (headers and body) on the
/// blocking pool; smaller ones have their header section parsed inline and
/// their body when a policy asks for it.
const PARSE_INLINE_MAX: usize = 256 * 1024;
/// Most idle warm instances kept per policy with `reuse_instances`.
pub(crate) const WARM_IDLE_MAX: usize = 64;
/// A reused instance is retired after this many sessions...
const REUSE_MAX_SESSIONS: u32 = 1000;
/// ...or once its linear memory has grown this much past its size after
/// `init`, so that a guest leaking memory cannot hold it for long.
const REUSE_MAX_GROWTH: usize = 8 << 20;

/// Per-policy counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    continued: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    tempfailed: AtomicU64,
    discarded: AtomicU64,
    quarantined: AtomicU64,
    routed: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    traps: AtomicU64,
    memory: AtomicU64,
    instantiations: AtomicU64,
    reused: AtomicU64,
    nanos: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One policy of a chain: its pre-linked component and settings.
pub(crate) struct LoadedPolicy {
    pub(crate) name: Arc<str>,
    pub(crate) version: String,
    pub(crate) wasm_hash: String,
    pub(crate) stages: u8,
    pub(crate) pre: PolicyWorldPre<HostState>,
    pub(crate) on_error: OnError,
    pub(crate) grants: Grants,
    pub(crate) max_memory: usize,
    pub(crate) timeout: Duration,
    pub(crate) config_json: String,
    pub(crate) counters: Arc<GuestCounters>,
    pub(crate) stats: Counters,
    /// `reuse_instances`: sessions take `init`ed instances from `warm` and
    /// give them back when they end.
    pub(crate) reuse: bool,
    /// `pre` is a snapshot taken after `init` (see `super::snapshot`): its
    /// instances are initialised already.
    pub(crate) preinit: bool,
    pub(crate) warm: std::sync::Mutex<Vec<Instance>>,
    /// Its `[[policy]]` entry: a reload keeps this loaded version when the
    /// entry and the component's hash are unchanged.
    pub(crate) cfg: PolicyConfig,
    /// When this version was loaded.
    pub(crate) loaded_at: SystemTime,
    /// A candidate version (shadow or canary), when configured.
    pub(crate) candidate: Option<Candidate>,
}

/// A candidate version of a policy and how it runs.
pub(crate) struct Candidate {
    pub(crate) policy: Arc<LoadedPolicy>,
    pub(crate) mode: CandidateMode,
    pub(crate) percent: u8,
    /// Shadow calls whose outcome differed from the active version's.
    pub(crate) differences: AtomicU64,
}

impl LoadedPolicy {
    fn declares(&self, stage: Stage) -> bool {
        self.stages & stage.bit() != 0
    }

    /// The candidate, when it runs in shadow mode.
    fn shadow(&self) -> Option<&Candidate> {
        self.candidate
            .as_ref()
            .filter(|c| c.mode == CandidateMode::Shadow)
    }

    fn warm(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give back an instance a session (or a route call) is done with:
    /// kept warm when the policy reuses instances and the instance is not
    /// worn out, dropped otherwise. Only instances whose every call
    /// succeeded come here (a failed call drops its instance).
    fn check_in(&self, mut inst: Instance) {
        if !self.reuse {
            return;
        }
        inst.uses += 1;
        // The next session brings its own recorder, if any.
        inst.store.data_mut().tap = None;
        let grown = inst.store.data().limiter.peak > inst.base_memory + REUSE_MAX_GROWTH;
        if inst.uses >= REUSE_MAX_SESSIONS || grown {
            return;
        }
        let mut warm = self.warm();
        if warm.len() < WARM_IDLE_MAX {
            warm.push(inst);
        }
    }
}

/// The policies of one configuration, loaded, in order. Immutable; shared
/// by the sessions that started with it (see [`Chain::session`]).
pub struct Chain {
    engine: Arc<EngineInner>,
    pub(crate) policies: Vec<Arc<LoadedPolicy>>,
    services: Services,
    stages: u8,
    /// Sessions started on this chain (spreads canary sessions evenly).
    sessions: AtomicU64,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field(
                "policies",
                &self.policies.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A policy's live instance: in one session, or idle in its policy's warm
/// list (`reuse_instances`).
pub(crate) struct Instance {
    store: Store<HostState>,
    world: PolicyWorld,
    /// Sessions that have used it (with `reuse_instances`).
    uses: u32,
    /// Its largest linear memory right after `init`.
    base_memory: usize,
}

/// One call into a guest, with its arguments.
#[derive(Clone)]
enum Call<'a> {
    Describe,
    Init(&'a str),
    Connect(&'a types::Session),
    Helo(&'a types::Session, &'a str),
    MailFrom(&'a types::Session, &'a str, &'a [types::Param]),
    Rcpt(
        &'a types::Session,
        &'a types::Envelope,
        &'a str,
        &'a [types::Param],
    ),
    Data(&'a types::Session, &'a types::Envelope, Arc<ParsedMessage>),
    Route(&'a types::Envelope, &'a str),
}

pub(crate) enum Answer {
    Describe(types::Description),
    Init(Result<(), String>),
    Verdict(types::Verdict),
    Data(types::DataResult),
    Route(types::Route),
}

impl Chain {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        policies: Vec<Arc<LoadedPolicy>>,
        services: Services,
    ) -> Self {
        let stages = policies.iter().fold(0, |acc, p| {
            acc | p.stages | p.candidate.as_ref().map_or(0, |c| c.policy.stages)
        });
        Self {
            engine,
            policies,
            services,
            stages,
            sessions: AtomicU64::new(0),
        }
    }

    /// No policies: every stage is `Continue`.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether any policy declared `stage` (when none did, the stage costs
    /// nothing: no instance, no message parse).
    pub fn handles(&self, stage: Stage) -> bool {
        self.stages & stage.bit() != 0
    }

    /// A view of this chain for one SMTP session. Instances are made lazily
    /// and dropped with the returned value.
    pub fn session(self: &Arc<Self>, info: SessionInfo) -> ChainSession {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        // A canary takes session n when (37 n) mod 100 is below its
        // percentage: exactly its share of every hundred sessions (37 and
        // 100 are coprime), spread through the hundred, not in a run.
        let slot = n.wrapping_mul(37) % 100;
        let picks = self
            .policies
            .iter()
            .map(|p| match &p.candidate {
                Some(c) if c.mode == CandidateMode::Canary && slot < u64::from(c.percent) => {
                    c.policy.clone()
                }
                _ => p.clone(),
            })
            .collect();
        ChainSession {
            chain: self.clone(),
            session: wit_session(&info),
            info,
            picks,
            instances: (0..self.policies.len()).map(|_| None).collect(),
            shadows: (0..self.policies.len()).map(|_| None).collect(),
            tap: None,
        }
    }

    /// Ask the policies that declared `route`, in order, for the next hop
    /// of `rcpt` (a fresh instance per policy per call). The first answer
    /// other than `default` wins; a failed call follows `on_error`.
    pub async fn route(&self, env: &EnvelopeInfo, rcpt: &str) -> RouteDecision {
        if !self.handles(Stage::Route) {
            return RouteDecision::Default;
        }
        let envelope = wit_envelope(env);
        for p in self.policies.iter().filter(|p| p.declares(Stage::Route)) {
            let route = self.route_one(p, &envelope, rcpt).await;
            if let Some(c) = p.shadow().filter(|c| c.policy.declares(Stage::Route)) {
                let other = self.route_one(&c.policy, &envelope, rcpt).await;
                compare(c, Stage::Route, &route, &other);
            }
            match route {
                Ok(None) => {}
                Ok(Some(r)) => {
                    tracing::debug!(target: "sluice::policy", policy = &*p.name, stage = "route", rcpt, route = ?r, "route");
                    return RouteDecision::Route(r);
                }
                Err(_) => match p.on_error {
                    OnError::Continue => {}
                    OnError::Tempfail => return RouteDecision::Defer(error_tempfail()),
                    OnError::Reject => {
                        return RouteDecision::Route(Route::Reject {
                            status: Enhanced(5, 7, 1),
                            text: "policy error".into(),
                        });
                    }
                },
            }
        }
        RouteDecision::Default
    }

    /// One policy's answer for one recipient's next hop (counted, failures
    /// recorded; `on_error` is for the caller).
    async fn route_one(
        &self,
        p: &LoadedPolicy,
        envelope: &types::Envelope,
        rcpt: &str,
    ) -> Result<Option<Route>, CallError> {
        let started = Instant::now();
        bump(&p.stats.calls);
        let phase = Phase::Stage(Stage::Route);
        let answer = match self.check_out(p, phase).await {
            Ok(mut inst) => {
                let r = self
                    .call(p, &mut inst, phase, Call::Route(envelope, rcpt))
                    .await;
                if r.is_ok() {
                    p.check_in(inst);
                }
                r
            }
            Err(e) => Err(e),
        };
        record_time(p, started);
        let route = match answer {
            Ok(Answer::Route(r)) => convert_route(p, r),
            Ok(_) => Err(CallError::Invalid("unexpected answer".into())),
            Err(e) => Err(e),
        };
        match &route {
            Ok(None) => bump(&p.stats.continued),
            Ok(Some(Route::Reject { .. })) => bump(&p.stats.rejected),
            Ok(Some(_)) => bump(&p.stats.routed),
            Err(e) => record_failure(p, phase, e),
        }
        route
    }

    /// What each policy has done so far, in chain order.
    pub fn stats(&self) -> Vec<PolicyStats> {
        self.policies.iter().map(|p| stats_of(p)).collect()
    }

    /// The loaded version of the policy named `name`, for a reload that
    /// finds its entry and component unchanged.
    pub(crate) fn find(&self, name: &str) -> Option<&Arc<LoadedPolicy>> {
        self.policies.iter().find(|p| &*p.name == name)
    }
}

fn stats_of(p: &LoadedPolicy) -> PolicyStats {
    {
        {
            {
                let s = &p.stats;
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let calls = get(&s.calls);
                let prefix = p.name.replace('-', "_");
                PolicyStats {
                    name: p.name.to_string(),
                    version: p.version.clone(),
                    wasm_hash: p.wasm_hash.clone(),
                    stages: Stage::ALL
                        .into_iter()
                        .filter(|st| p.declares(*st))
                        .collect(),
                    calls,
                    verdicts: VerdictCounts {
                        continued: get(&s.continued),
                        accepted: get(&s.accepted),
                        rejected: get(&s.rejected),
                        tempfailed: get(&s.tempfailed),
                        discarded: get(&s.discarded),
                        quarantined: get(&s.quarantined),
                        routed: get(&s.routed),
                    },
                    errors: get(&s.errors),
                    timeouts: get(&s.timeouts),
                    traps: get(&s.traps),
                    memory_limits: get(&s.memory),
                    instantiations: get(&s.instantiations),
                    reused: get(&s.reused),
                    mean_call_time: Duration::from_nanos(get(&s.nanos) / calls.max(1)),
                    counters: p
                        .counters
                        .snapshot()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}_{k}"), v))
                        .collect(),
                    loaded_at: p.loaded_at,
                    candidate: p.candidate.as_ref().map(|c| {
                        Box::new(super::CandidateStats {
                            mode: c.mode,
                            percent: c.percent,
                            differences: c.differences.load(Ordering::Relaxed),
                            stats: stats_of(&c.policy),
                        })
                    }),
                }
            }
        }
    }
}

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
            .instantiate(p, Phase::Load, false)
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
        let mut store = self.new_store(p, Phase::Load);
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
            .instance_of(p, pre, Phase::Load)
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
    /// instances and one is idle, else a fresh one.
    async fn check_out(&self, p: &LoadedPolicy, phase: Phase) -> Result<Instance, CallError> {
        if p.reuse {
            let idle = p.warm().pop();
            if let Some(inst) = idle {
                bump(&p.stats.reused);
                return Ok(inst);
            }
        }
        self.instantiate(p, phase, true).await
    }

    /// An instance of `pre` (`p`'s component or its snapshot) in a store
    /// of its own, with `p`'s limits; nothing called in it yet.
    async fn instance_of(
        &self,
        p: &LoadedPolicy,
        pre: &PolicyWorldPre<HostState>,
        phase: Phase,
    ) -> Result<Instance, CallError> {
        let mut store = self.new_store(p, phase);
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

    /// A store for an instance of `p`, with its limits, and the budgets of
    /// one call in `phase` started.
    fn new_store(&self, p: &LoadedPolicy, phase: Phase) -> Store<HostState> {
        let state = HostState::new(
            p.name.clone(),
            p.grants,
            self.services.clone(),
            p.counters.clone(),
            p.max_memory,
        );
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
        store.data_mut().begin_call(phase, ticks, io);
        store.set_epoch_deadline(1);
    }

    /// A fresh instance of `p` (and `init` in it when `run_init`, unless
    /// `p` starts from a snapshot taken after `init`).
    async fn instantiate(
        &self,
        p: &LoadedPolicy,
        phase: Phase,
        run_init: bool,
    ) -> Result<Instance, CallError> {
        bump(&p.stats.instantiations);
        let mut inst = self.instance_of(p, &p.pre, phase).await?;
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
    async fn call(
        &self,
        p: &LoadedPolicy,
        inst: &mut Instance,
        phase: Phase,
        call: Call<'_>,
    ) -> Result<Answer, CallError> {
        let (ticks, io, wall) = self.budgets(p);
        inst.store.data_mut().begin_call(phase, ticks, io);
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

fn unreachable_answer() -> ! {
    unreachable!("invoke answers each call with its own kind")
}

async fn invoke(
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
fn classify(e: wasmtime::Error, state: &HostState, p: &LoadedPolicy) -> CallError {
    if let Some(asked) = state.limiter.refused {
        return CallError::MemoryLimit {
            limit: p.max_memory as u64,
            asked: asked as u64,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline(p.timeout),
        _ => CallError::Trap(one_line(&e)),
    }
}

/// Log what the guest wrote to stdout/stderr, and log lines it lost.
fn report_output(state: &HostState) {
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

fn record_time(p: &LoadedPolicy, started: Instant) {
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    p.stats.nanos.fetch_add(ns, Ordering::Relaxed);
}

fn record_failure(p: &LoadedPolicy, stage: Phase, e: &CallError) {
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

fn error_tempfail() -> Reply {
    Reply::new(451, Enhanced(4, 3, 0), "policy error, try again later")
}

fn error_reject() -> Reply {
    Reply::new(550, Enhanced(5, 7, 1), "policy error")
}

pub(crate) fn stage_of(s: types::Stage) -> Stage {
    match s {
        types::Stage::Connect => Stage::Connect,
        types::Stage::Helo => Stage::Helo,
        types::Stage::MailFrom => Stage::MailFrom,
        types::Stage::Rcpt => Stage::Rcpt,
        types::Stage::Data => Stage::Data,
        types::Stage::Route => Stage::Route,
    }
}

fn wit_session(info: &SessionInfo) -> types::Session {
    types::Session {
        client_ip: info.client_ip.to_string(),
        client_port: info.client_port,
        listener: info.listener.to_string(),
        helo: info.helo.clone(),
        tls: wit_tls(info.tls.as_ref()),
        relay_client: info.relay_client,
    }
}

/// The session record's TLS field from `(version, cipher)`.
fn wit_tls(tls: Option<&(String, String)>) -> Option<types::TlsInfo> {
    tls.map(|(version, cipher)| types::TlsInfo {
        version: version.clone(),
        cipher: cipher.clone(),
    })
}

fn wit_params(params: &[(String, String)]) -> Vec<types::Param> {
    params
        .iter()
        .map(|(name, value)| types::Param {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn wit_envelope(env: &EnvelopeInfo) -> types::Envelope {
    types::Envelope {
        sender: env.sender.clone(),
        sender_params: wit_params(&env.sender_params),
        recipients: env.recipients.clone(),
    }
}

/// A guest reply made right for its verdict: the code in the class
/// (`5` for reject, `4` for tempfail; else 550/451, logged), an enhanced
/// code of that class (else `X.7.1`), one clean line of bounded text.
fn fix_reply(p: &LoadedPolicy, stage: Stage, r: &types::Reply, class: u16) -> Reply {
    let mut code = r.code;
    if code / 100 != class {
        code = if class == 5 { 550 } else { 451 };
        tracing::warn!(
            target: "sluice::policy",
            policy = &*p.name,
            %stage,
            given = r.code,
            used = code,
            "reply code of the wrong class corrected"
        );
    }
    let enhanced = match Enhanced::parse(r.enhanced.trim()) {
        Some(e) if u16::from(e.0) == class => e,
        other => {
            if other.is_some() || !r.enhanced.is_empty() {
                tracing::warn!(
                    target: "sluice::policy",
                    policy = &*p.name,
                    %stage,
                    given = %clean(&r.enhanced, 32),
                    "enhanced status code replaced"
                );
            }
            Enhanced(class as u8, 7, 1)
        }
    };
    let mut text = clean(&r.text, MAX_REPLY_TEXT).trim().to_string();
    if text.is_empty() {
        text = if class == 5 {
            "Refused by policy".into()
        } else {
            "Try again later".into()
        };
    }
    Reply::new(code, enhanced, text)
}

/// Count a verdict in its policy's figures.
fn count(p: &LoadedPolicy, v: &types::Verdict) {
    let s = &p.stats;
    bump(match v {
        types::Verdict::Continue => &s.continued,
        types::Verdict::Accept => &s.accepted,
        types::Verdict::Reject(_) => &s.rejected,
        types::Verdict::Tempfail(_) => &s.tempfailed,
        types::Verdict::Discard => &s.discarded,
        types::Verdict::Quarantine(_) => &s.quarantined,
    });
}

/// A verdict at a stage other than data (counted): `None` to ask the next
/// policy.
fn decide(p: &LoadedPolicy, stage: Stage, v: &types::Verdict) -> Option<Decision> {
    count(p, v);
    match v {
        types::Verdict::Continue => None,
        types::Verdict::Accept => Some(Decision::Accept),
        types::Verdict::Reject(r) => Some(Decision::Reject(fix_reply(p, stage, r, 5))),
        types::Verdict::Tempfail(r) => Some(Decision::Tempfail(fix_reply(p, stage, r, 4))),
        types::Verdict::Discard => Some(Decision::Reject(Reply::new(
            550,
            Enhanced(5, 7, 1),
            "Refused by policy",
        ))),
        types::Verdict::Quarantine(_) => Some(Decision::Tempfail(Reply::new(
            451,
            Enhanced(4, 7, 1),
            "Held by policy, try again later",
        ))),
    }
}

fn valid_field_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 76 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn valid_address(a: &str) -> bool {
    a.len() <= 320 && crate::smtp::address::parse_mailbox(a).is_ok_and(|m| m.domain.is_some())
}

/// Validate the changes of one data-stage answer; drop (and log) the bad.
fn convert_changes(p: &LoadedPolicy, changes: Vec<types::Change>, out: &mut Vec<Change>) {
    let total = changes.len();
    for c in changes.into_iter().take(MAX_CHANGES) {
        let converted = match c {
            types::Change::AddHeader(h) if valid_field_name(&h.name) => Ok(Change::AddHeader {
                value: clean(&h.value, MAX_HEADER_VALUE).trim().to_string(),
                name: h.name,
            }),
            types::Change::AddHeader(h) => Err(format!("bad header name {:?}", cut(&h.name, 80))),
            types::Change::RemoveHeader(n) if valid_field_name(&n) => Ok(Change::RemoveHeader(n)),
            types::Change::RemoveHeader(n) => Err(format!("bad header name {:?}", cut(&n, 80))),
            types::Change::AddRecipient(a) if valid_address(&a) => Ok(Change::AddRecipient(a)),
            types::Change::RemoveRecipient(a) if valid_address(&a) => {
                Ok(Change::RemoveRecipient(a))
            }
            types::Change::AddRecipient(a) | types::Change::RemoveRecipient(a) => {
                Err(format!("bad address {:?}", cut(&a, 80)))
            }
        };
        match converted {
            Ok(c) => out.push(c),
            Err(why) => tracing::warn!(
                target: "sluice::policy",
                policy = &*p.name,
                stage = "data",
                "change ignored: {why}"
            ),
        }
    }
    if total > MAX_CHANGES {
        tracing::warn!(
            target: "sluice::policy",
            policy = &*p.name,
            stage = "data",
            dropped = total - MAX_CHANGES,
            "changes over {MAX_CHANGES} dropped"
        );
    }
}

fn valid_host(h: &str) -> bool {
    h.parse::<std::net::IpAddr>().is_ok() || crate::smtp::address::parse_domain(h).is_ok()
}

/// A guest route as a delivery route: `None` for `default`.
fn convert_route(p: &LoadedPolicy, r: types::Route) -> Result<Option<Route>, CallError> {
    Ok(Some(match r {
        types::Route::Default => return Ok(None),
        types::Route::Local => Route::Local,
        types::Route::Relay(h) => {
            let host = h.host.trim_end_matches('.').to_ascii_lowercase();
            if !valid_host(&host) || h.port == 0 {
                return Err(CallError::Invalid(format!(
                    "bad relay host {:?} port {}",
                    cut(&h.host, 80),
                    h.port
                )));
            }
            Route::Relay {
                host,
                port: h.port,
                tls: match h.tls {
                    types::TlsMode::Opportunistic => TlsMode::Opportunistic,
                    types::TlsMode::Require => TlsMode::Require,
                    types::TlsMode::None => TlsMode::None,
                },
            }
        }
        types::Route::Mx(d) => {
            let domain = d.trim_end_matches('.').to_ascii_lowercase();
            if crate::smtp::address::parse_domain(&domain).is_err() {
                return Err(CallError::Invalid(format!(
                    "bad MX domain {:?}",
                    cut(&d, 80)
                )));
            }
            Route::Mx { domain }
        }
        types::Route::Reject(r) => {
            let reply = fix_reply(p, Stage::Route, &r, 5);
            Route::Reject {
                status: reply.enhanced.unwrap_or(Enhanced(5, 7, 1)),
                text: reply.lines.into_iter().next().unwrap_or_default(),
            }
        }
    }))
}

/// The chain as one SMTP session sees it: the policy set it started with
/// and one lazily made instance per policy. Dropping it drops the
/// instances.
pub struct ChainSession {
    chain: Arc<Chain>,
    info: SessionInfo,
    session: types::Session,
    /// Per chain position, the version this session runs: the active one,
    /// or a canary candidate (chosen at the session's start).
    picks: Vec<Arc<LoadedPolicy>>,
    instances: Vec<Option<Instance>>,
    /// Instances of shadow candidates.
    shadows: Vec<Option<Instance>>,
    /// Recorder or replay source of this session (see [`super::tap`]).
    tap: Option<Arc<dyn HostTap>>,
}

impl std::fmt::Debug for ChainSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSession")
            .field("chain", &self.chain)
            .field("info", &self.info)
            .field(
                "live_instances",
                &self.instances.iter().filter(|i| i.is_some()).count(),
            )
            .finish()
    }
}

impl Drop for ChainSession {
    /// The session is over: instances of policies that reuse them go back
    /// to their warm lists; the others are dropped.
    fn drop(&mut self) {
        for (i, p) in self.picks.iter().enumerate() {
            if let Some(inst) = self.instances[i].take() {
                p.check_in(inst);
            }
            if let (Some(inst), Some(c)) = (self.shadows[i].take(), self.chain.policies[i].shadow())
            {
                c.policy.check_in(inst);
            }
        }
    }
}

impl ChainSession {
    /// The per-position state the stage calls work on, and the session
    /// record they pass (borrowed side by side).
    fn slots(&mut self) -> (Slots<'_>, &types::Session) {
        let Self {
            chain,
            session,
            picks,
            instances,
            shadows,
            tap,
            ..
        } = self;
        let slots = Slots {
            chain,
            picks,
            instances,
            shadows,
            tap: tap.as_ref(),
        };
        (slots, session)
    }

    /// The session as policies see it.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The chain this session runs (fixed for its life).
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Send what the policies of this session observe (host calls and
    /// their results, each hook's answer) to `tap`, which may also answer
    /// host calls (replay).
    pub fn set_tap(&mut self, tap: Arc<dyn HostTap>) {
        self.tap = Some(tap);
    }

    /// Record TLS `(version, cipher)` after STARTTLS (or `None` after a
    /// reset of the session state).
    pub fn set_tls(&mut self, tls: Option<(String, String)>) {
        self.session.tls = wit_tls(tls.as_ref());
        self.info.tls = tls;
    }

    /// Record the EHLO/HELO name (before calling [`helo`](Self::helo)).
    pub fn set_helo(&mut self, helo: String) {
        // Only the field that changed: the addresses are formatted once.
        self.session.helo = Some(helo.clone());
        self.info.helo = Some(helo);
    }

    /// A client connected.
    pub async fn connect(&mut self) -> Decision {
        if !self.chain.handles(Stage::Connect) {
            return Decision::Continue;
        }
        let (mut slots, session) = self.slots();
        run_stage(&mut slots, Stage::Connect, Call::Connect(session)).await
    }

    /// EHLO/HELO with `name` (also recorded as the session's HELO name).
    pub async fn helo(&mut self, name: &str) -> Decision {
        if self.info.helo.as_deref() != Some(name) {
            self.set_helo(name.to_string());
        }
        if !self.chain.handles(Stage::Helo) {
            return Decision::Continue;
        }
        let (mut slots, session) = self.slots();
        run_stage(&mut slots, Stage::Helo, Call::Helo(session, name)).await
    }

    /// MAIL FROM `sender` (empty for `<>`) with its parameters.
    pub async fn mail_from(&mut self, sender: &str, params: &[(String, String)]) -> Decision {
        if !self.chain.handles(Stage::MailFrom) {
            return Decision::Continue;
        }
        let params = wit_params(params);
        let (mut slots, session) = self.slots();
        let call = Call::MailFrom(session, sender, &params);
        run_stage(&mut slots, Stage::MailFrom, call).await
    }

    /// RCPT TO `rcpt`; `env.recipients` holds those accepted before it.
    pub async fn rcpt(
        &mut self,
        env: &EnvelopeInfo,
        rcpt: &str,
        params: &[(String, String)],
    ) -> Decision {
        if !self.chain.handles(Stage::Rcpt) {
            return Decision::Continue;
        }
        let params = wit_params(params);
        let envelope = wit_envelope(env);
        let (mut slots, session) = self.slots();
        let call = Call::Rcpt(session, &envelope, rcpt, &params);
        run_stage(&mut slots, Stage::Rcpt, call).await
    }

    /// The whole message has arrived. It is parsed once (on the blocking
    /// pool when large) and the parse is shared by every policy of the
    /// chain; nothing is parsed when no policy declared `data`.
    pub async fn data(&mut self, env: &EnvelopeInfo, message: &[u8]) -> DataDecision {
        let mut decision = DataDecision {
            outcome: DataOutcome::Continue,
            changes: Vec::new(),
        };
        if !self.chain.handles(Stage::Data) {
            return decision;
        }
        let raw: Arc<[u8]> = Arc::from(message);
        let parsed = if raw.len() > PARSE_INLINE_MAX {
            let r = raw.clone();
            match tokio::task::spawn_blocking(move || ParsedMessage::parse_all(r)).await {
                Ok(m) => m,
                Err(_) => ParsedMessage::parse_all(raw),
            }
        } else {
            ParsedMessage::parse(raw)
        };
        let parsed = Arc::new(parsed);
        let envelope = wit_envelope(env);
        let (mut slots, session) = self.slots();
        let stage = Stage::Data;
        for i in 0..slots.picks.len() {
            let call = Call::Data(session, &envelope, parsed.clone());
            let Some((outcome, changes)) = slots.call(i, stage, call, data_outcome).await else {
                continue;
            };
            decision.changes.extend(changes);
            if let Some(outcome) = outcome {
                tracing::debug!(target: "sluice::policy", policy = &*slots.picks[i].name, stage = "data", outcome = ?outcome, "decided");
                decision.outcome = outcome;
                break;
            }
        }
        if !matches!(
            decision.outcome,
            DataOutcome::Continue | DataOutcome::Accept | DataOutcome::Quarantine(_)
        ) {
            decision.changes.clear();
        }
        decision
    }
}

/// Call `p` in a session: make its instance if needed, drop it after a
/// failure; count and log.
async fn call_in_session(
    chain: &Chain,
    p: &LoadedPolicy,
    slot: &mut Option<Instance>,
    tap: Option<&Arc<dyn HostTap>>,
    stage: Stage,
    call: Call<'_>,
) -> Result<Answer, CallError> {
    let started = Instant::now();
    bump(&p.stats.calls);
    let phase = Phase::Stage(stage);
    let result = async {
        if slot.is_none() {
            *slot = Some(chain.check_out(p, phase).await?);
        }
        let inst = slot.as_mut().expect("an instance was just made");
        inst.store.data_mut().tap = tap.cloned();
        chain.call(p, inst, phase, call).await
    }
    .await;
    record_time(p, started);
    if let Some(t) = tap {
        tap::report(t.as_ref(), &p.name, stage, &result);
    }
    if let Err(e) = &result {
        // A trapped instance refuses further calls: the next call of this
        // session gets a fresh one.
        *slot = None;
        record_failure(p, phase, e);
    }
    result
}

/// The per-session state of the chain's positions: which version runs,
/// and the instances of the active (or canary) and shadow versions.
struct Slots<'a> {
    chain: &'a Chain,
    picks: &'a [Arc<LoadedPolicy>],
    instances: &'a mut [Option<Instance>],
    shadows: &'a mut [Option<Instance>],
    /// The session's recorder or replay source; shadow candidates are
    /// never tapped (they must not answer, nor be recorded as, the
    /// session's policies).
    tap: Option<&'a Arc<dyn HostTap>>,
}

impl Slots<'_> {
    /// Call position `i` with `call` if its version declared `stage`, and
    /// say what that policy alone decides (`judge` turns its answer, or
    /// failure, into an outcome). A shadow candidate gets the same call;
    /// a difference in outcome is logged and counted, never enforced.
    /// `None`: the policy did not declare the stage.
    async fn call<T: std::fmt::Debug + PartialEq>(
        &mut self,
        i: usize,
        stage: Stage,
        call: Call<'_>,
        judge: fn(&LoadedPolicy, Stage, Result<Answer, CallError>) -> T,
    ) -> Option<T> {
        let p = &self.picks[i];
        let shadow = self.chain.policies[i]
            .shadow()
            .filter(|c| c.policy.declares(stage));
        if !p.declares(stage) && shadow.is_none() {
            return None;
        }
        let mine = if p.declares(stage) {
            let r = call_in_session(
                self.chain,
                p,
                &mut self.instances[i],
                self.tap,
                stage,
                call.clone(),
            )
            .await;
            Some(judge(p, stage, r))
        } else {
            None
        };
        if let Some(c) = shadow {
            let r = call_in_session(
                self.chain,
                &c.policy,
                &mut self.shadows[i],
                None,
                stage,
                call,
            )
            .await;
            let theirs = Some(judge(&c.policy, stage, r));
            compare(c, stage, &mine, &theirs);
        }
        mine
    }
}

/// Log and count a shadow candidate's different outcome.
fn compare<T: std::fmt::Debug + PartialEq>(c: &Candidate, stage: Stage, active: &T, candidate: &T) {
    if active != candidate {
        bump(&c.differences);
        tracing::info!(
            target: "sluice::policy",
            policy = &*c.policy.name,
            %stage,
            active = ?active,
            candidate = ?candidate,
            "shadow candidate decided differently"
        );
    }
}

/// What one policy decides at a stage before DATA: `None` to go on.
fn verdict_outcome(
    p: &LoadedPolicy,
    stage: Stage,
    r: Result<Answer, CallError>,
) -> Option<Decision> {
    match r {
        Ok(Answer::Verdict(v)) => decide(p, stage, &v),
        Ok(_) => unreachable_answer(),
        Err(_) => match p.on_error {
            OnError::Continue => None,
            OnError::Tempfail => Some(Decision::Tempfail(error_tempfail())),
            OnError::Reject => Some(Decision::Reject(error_reject())),
        },
    }
}

/// What one policy decides at DATA (`None` to go on) and the changes it
/// asks for.
fn data_outcome(
    p: &LoadedPolicy,
    stage: Stage,
    r: Result<Answer, CallError>,
) -> (Option<DataOutcome>, Vec<Change>) {
    let answer = match r {
        Ok(Answer::Data(d)) => d,
        Ok(_) => unreachable_answer(),
        Err(_) => {
            let outcome = match p.on_error {
                OnError::Continue => None,
                OnError::Tempfail => Some(DataOutcome::Tempfail(error_tempfail())),
                OnError::Reject => Some(DataOutcome::Reject(error_reject())),
            };
            return (outcome, Vec::new());
        }
    };
    let mut changes = Vec::new();
    convert_changes(p, answer.changes, &mut changes);
    count(p, &answer.verdict);
    let outcome = match &answer.verdict {
        types::Verdict::Continue => None,
        types::Verdict::Accept => Some(DataOutcome::Accept),
        types::Verdict::Reject(r) => Some(DataOutcome::Reject(fix_reply(p, stage, r, 5))),
        types::Verdict::Tempfail(r) => Some(DataOutcome::Tempfail(fix_reply(p, stage, r, 4))),
        types::Verdict::Discard => Some(DataOutcome::Discard),
        types::Verdict::Quarantine(reason) => {
            Some(DataOutcome::Quarantine(clean(reason, MAX_REASON)))
        }
    };
    (outcome, changes)
}

/// Run the policies that declared `stage`, in order, until one decides.
async fn run_stage(slots: &mut Slots<'_>, stage: Stage, call: Call<'_>) -> Decision {
    for i in 0..slots.picks.len() {
        if let Some(Some(d)) = slots.call(i, stage, call.clone(), verdict_outcome).await {
            tracing::debug!(target: "sluice::policy", policy = &*slots.picks[i].name, %stage, decision = ?d, "decided");
            return d;
        }
    }
    Decision::Continue
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn field_names_and_addresses() {
        assert!(valid_field_name("X-Spam-Flag"));
        assert!(!valid_field_name("X Spam"));
        assert!(!valid_field_name("X:"));
        assert!(!valid_field_name(""));
        assert!(valid_address("a@example.test"));
        assert!(!valid_address("postmaster"));
        assert!(!valid_address("a@b\r\nRCPT TO:<x@y>"));
        assert!(!valid_address("<a@b>"));
    }
}
