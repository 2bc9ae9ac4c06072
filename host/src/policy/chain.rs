//! A loaded chain of policies ([`Chain`]), the per-session view of it
//! ([`ChainSession`]), and the calls into guests: instantiation, budgets,
//! failure handling, and turning guest answers into host decisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
use crate::delivery::{Route, TlsMode};
use crate::smtp::{Enhanced, Reply};

/// Longest reply text kept from a guest, in octets.
const MAX_REPLY_TEXT: usize = 512;
/// Longest quarantine reason or init error kept, in octets.
const MAX_REASON: usize = 256;
/// Longest header value kept from a change, in octets.
const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Most changes kept from one data-stage answer.
const MAX_CHANGES: usize = 100;
/// Messages larger than this are parsed on the blocking pool.
const PARSE_INLINE_MAX: usize = 256 * 1024;

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
}

impl LoadedPolicy {
    fn declares(&self, stage: Stage) -> bool {
        self.stages & stage.bit() != 0
    }
}

/// The policies of one configuration, loaded, in order. Immutable; shared
/// by the sessions that started with it (see [`Chain::session`]).
pub struct Chain {
    engine: Arc<EngineInner>,
    pub(crate) policies: Vec<LoadedPolicy>,
    services: Services,
    stages: u8,
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

/// A policy's live instance in one session.
struct Instance {
    store: Store<HostState>,
    world: PolicyWorld,
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
        policies: Vec<LoadedPolicy>,
        services: Services,
    ) -> Self {
        let stages = policies.iter().fold(0, |acc, p| acc | p.stages);
        Self {
            engine,
            policies,
            services,
            stages,
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
        ChainSession {
            chain: self.clone(),
            session: wit_session(&info),
            info,
            instances: (0..self.policies.len()).map(|_| None).collect(),
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
            let started = Instant::now();
            bump(&p.stats.calls);
            let phase = Phase::Stage(Stage::Route);
            let answer = match self.instantiate(p, phase, true).await {
                Ok(mut inst) => {
                    self.call(p, &mut inst, phase, Call::Route(&envelope, rcpt))
                        .await
                }
                Err(e) => Err(e),
            };
            record_time(p, started);
            let route = match answer {
                Ok(Answer::Route(r)) => convert_route(p, r),
                Ok(_) => Err(CallError::Invalid("unexpected answer".into())),
                Err(e) => Err(e),
            };
            match route {
                Ok(None) => bump(&p.stats.continued),
                Ok(Some(r)) => {
                    bump(if matches!(r, Route::Reject { .. }) {
                        &p.stats.rejected
                    } else {
                        &p.stats.routed
                    });
                    tracing::debug!(target: "sluice::policy", policy = &*p.name, stage = "route", rcpt, route = ?r, "route");
                    return RouteDecision::Route(r);
                }
                Err(e) => {
                    record_failure(p, phase, &e);
                    match p.on_error {
                        OnError::Continue => {}
                        OnError::Tempfail => return RouteDecision::Defer(error_tempfail()),
                        OnError::Reject => {
                            return RouteDecision::Route(Route::Reject {
                                status: Enhanced(5, 7, 1),
                                text: "policy error".into(),
                            });
                        }
                    }
                }
            }
        }
        RouteDecision::Default
    }

    /// What each policy has done so far, in chain order.
    pub fn stats(&self) -> Vec<PolicyStats> {
        self.policies
            .iter()
            .map(|p| {
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
                    mean_call_time: Duration::from_nanos(get(&s.nanos) / calls.max(1)),
                    counters: p
                        .counters
                        .snapshot()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}_{k}"), v))
                        .collect(),
                }
            })
            .collect()
    }

    /// Instantiate, `describe` and `init` one policy in a throwaway
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
        let d = match chain.call(p, &mut inst, Phase::Load, Call::Describe).await {
            Ok(Answer::Describe(d)) => d,
            Ok(_) => unreachable_answer(),
            Err(e) => return Err(load_err("describe", e)),
        };
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
        let stages: Vec<Stage> = d.stages.iter().map(|s| stage_of(*s)).collect();
        if stages.is_empty() {
            return Err(PolicyError::Description {
                policy: p.name.to_string(),
                cause: "it declares no stage".into(),
            });
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

    fn budgets(&self, p: &LoadedPolicy) -> (u64, Duration, Duration) {
        let tick = self.engine.cfg.epoch_tick.max(Duration::from_micros(1));
        let ticks = (p.timeout.as_nanos().div_ceil(tick.as_nanos())).max(1);
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        let io = self.engine.cfg.host_io_timeout;
        let wall = p.timeout.saturating_mul(4).saturating_add(io);
        (ticks, io, wall)
    }

    /// A fresh instance of `p` (and `init` in it when `run_init`).
    async fn instantiate(
        &self,
        p: &LoadedPolicy,
        phase: Phase,
        run_init: bool,
    ) -> Result<Instance, CallError> {
        bump(&p.stats.instantiations);
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
        let (ticks, io, wall) = self.budgets(p);
        store.data_mut().begin_call(phase, ticks, io);
        store.set_epoch_deadline(1);
        let world = match tokio::time::timeout(wall, p.pre.instantiate_async(&mut store)).await {
            Err(_) => return Err(CallError::WallTimeout(wall)),
            Ok(Err(e)) => {
                return Err(match classify(e, store.data(), p) {
                    CallError::Trap(m) => CallError::Instantiate(m),
                    other => other,
                });
            }
            Ok(Ok(w)) => w,
        };
        let mut inst = Instance { store, world };
        if run_init {
            match self
                .call(p, &mut inst, phase, Call::Init(&p.config_json))
                .await?
            {
                Answer::Init(Ok(())) => {}
                Answer::Init(Err(m)) => return Err(CallError::Init(clean(&m, MAX_REASON))),
                _ => unreachable_answer(),
            }
        }
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

fn stage_of(s: types::Stage) -> Stage {
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
        tls: info.tls.as_ref().map(|(version, cipher)| types::TlsInfo {
            version: version.clone(),
            cipher: cipher.clone(),
        }),
        relay_client: info.relay_client,
    }
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

/// `5.7.1` and friends; `None` unless three valid numbers.
fn parse_enhanced(s: &str) -> Option<Enhanced> {
    let mut it = s.trim().split('.');
    let class: u8 = it.next()?.parse().ok()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    (it.next().is_none() && matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999)
        .then_some(Enhanced(class, subject, detail))
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
    let enhanced = match parse_enhanced(&r.enhanced) {
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

/// A verdict at a stage other than data: `None` to ask the next policy.
fn decide(p: &LoadedPolicy, stage: Stage, v: &types::Verdict) -> Option<Decision> {
    let s = &p.stats;
    match v {
        types::Verdict::Continue => {
            bump(&s.continued);
            None
        }
        types::Verdict::Accept => {
            bump(&s.accepted);
            Some(Decision::Accept)
        }
        types::Verdict::Reject(r) => {
            bump(&s.rejected);
            Some(Decision::Reject(fix_reply(p, stage, r, 5)))
        }
        types::Verdict::Tempfail(r) => {
            bump(&s.tempfailed);
            Some(Decision::Tempfail(fix_reply(p, stage, r, 4)))
        }
        types::Verdict::Discard => {
            bump(&s.discarded);
            Some(Decision::Reject(Reply::new(
                550,
                Enhanced(5, 7, 1),
                "Refused by policy",
            )))
        }
        types::Verdict::Quarantine(_) => {
            bump(&s.quarantined);
            Some(Decision::Tempfail(Reply::new(
                451,
                Enhanced(4, 7, 1),
                "Held by policy, try again later",
            )))
        }
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
    instances: Vec<Option<Instance>>,
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

impl ChainSession {
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
        self.info.tls = tls;
        self.session = wit_session(&self.info);
    }

    /// Record the EHLO/HELO name (before calling [`helo`](Self::helo)).
    pub fn set_helo(&mut self, helo: String) {
        self.info.helo = Some(helo);
        self.session = wit_session(&self.info);
    }

    /// A client connected.
    pub async fn connect(&mut self) -> Decision {
        if !self.chain.handles(Stage::Connect) {
            return Decision::Continue;
        }
        let Self {
            chain,
            session,
            instances,
            tap,
            ..
        } = self;
        let call = Call::Connect(session);
        run_stage(chain, instances, tap.as_ref(), Stage::Connect, call).await
    }

    /// EHLO/HELO with `name` (also recorded as the session's HELO name).
    pub async fn helo(&mut self, name: &str) -> Decision {
        if self.info.helo.as_deref() != Some(name) {
            self.set_helo(name.to_string());
        }
        if !self.chain.handles(Stage::Helo) {
            return Decision::Continue;
        }
        let Self {
            chain,
            session,
            instances,
            tap,
            ..
        } = self;
        let call = Call::Helo(session, name);
        run_stage(chain, instances, tap.as_ref(), Stage::Helo, call).await
    }

    /// MAIL FROM `sender` (empty for `<>`) with its parameters.
    pub async fn mail_from(&mut self, sender: &str, params: &[(String, String)]) -> Decision {
        if !self.chain.handles(Stage::MailFrom) {
            return Decision::Continue;
        }
        let params = wit_params(params);
        let Self {
            chain,
            session,
            instances,
            tap,
            ..
        } = self;
        let call = Call::MailFrom(session, sender, &params);
        run_stage(chain, instances, tap.as_ref(), Stage::MailFrom, call).await
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
        let Self {
            chain,
            session,
            instances,
            tap,
            ..
        } = self;
        let call = Call::Rcpt(session, &envelope, rcpt, &params);
        run_stage(chain, instances, tap.as_ref(), Stage::Rcpt, call).await
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
            match tokio::task::spawn_blocking(move || ParsedMessage::parse(r)).await {
                Ok(m) => m,
                Err(_) => ParsedMessage::parse(raw),
            }
        } else {
            ParsedMessage::parse(raw)
        };
        let parsed = Arc::new(parsed);
        let envelope = wit_envelope(env);
        let Self {
            chain,
            session,
            instances,
            tap,
            ..
        } = self;
        let tap = tap.as_ref();
        let stage = Stage::Data;
        for (i, p) in chain.policies.iter().enumerate() {
            if !p.declares(stage) {
                continue;
            }
            let call = Call::Data(session, &envelope, parsed.clone());
            let answer = match call_in_session(chain, p, &mut instances[i], tap, stage, call).await
            {
                Ok(Answer::Data(d)) => d,
                Ok(_) => unreachable_answer(),
                Err(_) => match p.on_error {
                    OnError::Continue => continue,
                    OnError::Tempfail => {
                        decision.outcome = DataOutcome::Tempfail(error_tempfail());
                        break;
                    }
                    OnError::Reject => {
                        decision.outcome = DataOutcome::Reject(error_reject());
                        break;
                    }
                },
            };
            convert_changes(p, answer.changes, &mut decision.changes);
            let s = &p.stats;
            let outcome = match &answer.verdict {
                types::Verdict::Continue => {
                    bump(&s.continued);
                    continue;
                }
                types::Verdict::Accept => {
                    bump(&s.accepted);
                    DataOutcome::Accept
                }
                types::Verdict::Reject(r) => {
                    bump(&s.rejected);
                    DataOutcome::Reject(fix_reply(p, stage, r, 5))
                }
                types::Verdict::Tempfail(r) => {
                    bump(&s.tempfailed);
                    DataOutcome::Tempfail(fix_reply(p, stage, r, 4))
                }
                types::Verdict::Discard => {
                    bump(&s.discarded);
                    DataOutcome::Discard
                }
                types::Verdict::Quarantine(reason) => {
                    bump(&s.quarantined);
                    DataOutcome::Quarantine(clean(reason, MAX_REASON))
                }
            };
            tracing::debug!(target: "sluice::policy", policy = &*p.name, stage = "data", outcome = ?outcome, "decided");
            decision.outcome = outcome;
            break;
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
            *slot = Some(chain.instantiate(p, phase, true).await?);
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

/// Run the policies that declared `stage`, in order, until one decides.
async fn run_stage(
    chain: &Chain,
    instances: &mut [Option<Instance>],
    tap: Option<&Arc<dyn HostTap>>,
    stage: Stage,
    call: Call<'_>,
) -> Decision {
    for (i, p) in chain.policies.iter().enumerate() {
        if !p.declares(stage) {
            continue;
        }
        match call_in_session(chain, p, &mut instances[i], tap, stage, call.clone()).await {
            Ok(Answer::Verdict(v)) => {
                if let Some(d) = decide(p, stage, &v) {
                    tracing::debug!(target: "sluice::policy", policy = &*p.name, %stage, decision = ?d, "decided");
                    return d;
                }
            }
            Ok(_) => unreachable_answer(),
            Err(_) => match p.on_error {
                OnError::Continue => {}
                OnError::Tempfail => return Decision::Tempfail(error_tempfail()),
                OnError::Reject => return Decision::Reject(error_reject()),
            },
        }
    }
    Decision::Continue
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(parse_enhanced("5.7.1"), Some(Enhanced(5, 7, 1)));
        assert_eq!(parse_enhanced(" 4.2.0 "), Some(Enhanced(4, 2, 0)));
        for bad in ["", "5.7", "5.7.1.2", "3.0.0", "5.x.1", "5.1000.1"] {
            assert_eq!(parse_enhanced(bad), None, "{bad}");
        }
    }

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
