//! A loaded chain of policies ([`Chain`]), the per-session view of it
//! ([`ChainSession`]), and the calls into guests: instantiation, budgets,
//! failure handling, and turning guest answers into host decisions.
//!
//! - [`call`]: one guest call with its deadline and failure classification;
//! - [`session`]: [`ChainSession`], the per-session view;
//! - [`wit`]: conversions to and from the WIT records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::Store;

use crate::config::{CandidateMode, PolicyConfig};
use crate::policy::bindings::{Answer, PolicyWorld, PolicyWorldPre, types};
use crate::policy::engine::EngineInner;
use crate::policy::host::{Grants, GuestCounters, HostState, Phase};
use crate::policy::message::ParsedMessage;
use crate::policy::pool::{Evict, InstancePool, PoolFull, Reservation};
use crate::policy::{
    CallError, EnvelopeInfo, OnError, PolicyStats, RouteDecision, Services, SessionInfo, Stage,
    VerdictCounts,
};
use crate::route::Route;
use crate::smtp::Enhanced;

mod call;
mod session;
mod wit;

use call::*;
pub use session::ChainSession;
use session::*;
pub(crate) use wit::stage_of;
use wit::*;

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
    pub(crate) warm: Arc<WarmList>,
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

    /// Give back an instance a session (or a route call) is done with:
    /// kept warm when the policy reuses instances, the instance is not
    /// worn out and the pool has a slot for it outside sessions; dropped
    /// otherwise. Only instances whose every call succeeded come here (a
    /// failed call drops its instance).
    fn check_in(&self, mut inst: Instance, pool: &Arc<InstancePool>) {
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
        let state = inst.store.data_mut();
        if state.lease.is_none() {
            // It held one of a session's reserved slots; idle, it needs a
            // slot of its own (never taken from another warm instance).
            match pool.lease(false) {
                Some(lease) => state.lease = Some(lease),
                None => return,
            }
        }
        self.warm.push(inst);
    }
}

/// A policy's idle warm instances (`reuse_instances`), each holding a
/// lease; the pool drops them when a session's reservation needs room.
#[derive(Default)]
pub(crate) struct WarmList(std::sync::Mutex<Vec<Instance>>);

impl WarmList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<Instance> {
        self.lock().pop()
    }

    /// Keep `inst` idle, unless `WARM_IDLE_MAX` are already.
    fn push(&self, inst: Instance) {
        let mut warm = self.lock();
        if warm.len() < WARM_IDLE_MAX {
            warm.push(inst);
        }
    }
}

impl Evict for WarmList {
    fn evict_one(&self) -> bool {
        // Dropped outside the lock: dropping gives its lease back.
        let oldest = {
            let mut warm = self.lock();
            (!warm.is_empty()).then(|| warm.remove(0))
        };
        oldest.is_some()
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

    /// Instances one session of this chain may hold: one per position
    /// whose active or canary version declares a session stage, one more
    /// per shadow candidate that does (route calls are not in sessions).
    pub fn instances_per_session(&self) -> usize {
        let in_session = |p: &LoadedPolicy| p.stages & !Stage::Route.bit() != 0;
        self.policies
            .iter()
            .map(|p| {
                let (canary, shadow) = match &p.candidate {
                    Some(c) if c.mode == CandidateMode::Canary => (in_session(&c.policy), false),
                    Some(c) => (false, in_session(&c.policy)),
                    None => (false, false),
                };
                usize::from(in_session(p) || canary) + usize::from(shadow)
            })
            .sum()
    }

    /// A view of this chain for one SMTP session, with the pool slots it
    /// may need reserved (see [`crate::policy::pool`]); `PoolFull` when
    /// they are not free. Instances are made lazily and dropped with the
    /// returned value.
    pub fn session(self: &Arc<Self>, info: SessionInfo) -> Result<ChainSession, PoolFull> {
        let reservation = self
            .engine
            .pool
            .reserve(self.instances_per_session(), info.relay_client)?;
        Ok(self.session_with(info, reservation))
    }

    /// [`session`](Self::session), waiting up to `wait` for slots to be
    /// given back (an idle session shed to make room closing).
    pub async fn session_within(
        self: &Arc<Self>,
        info: SessionInfo,
        wait: Duration,
    ) -> Result<ChainSession, PoolFull> {
        let reservation = self
            .engine
            .pool
            .reserve_within(self.instances_per_session(), info.relay_client, wait)
            .await?;
        Ok(self.session_with(info, reservation))
    }

    fn session_with(self: &Arc<Self>, info: SessionInfo, reservation: Reservation) -> ChainSession {
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
            _reservation: reservation,
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
                Err(e) => match on_failure(p, &e) {
                    Failure::Continue => {}
                    Failure::Tempfail(r) => return RouteDecision::Defer(r),
                    Failure::Reject => {
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
        let answer = match self.check_out(p, phase, Hold::Loose).await {
            Ok(mut inst) => {
                let r = self
                    .call(p, &mut inst, phase, Call::Route(envelope, rcpt))
                    .await;
                if r.is_ok() {
                    p.check_in(inst, &self.engine.pool);
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
