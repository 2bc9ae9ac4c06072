//! The chain as one SMTP session sees it ([`ChainSession`]): its policy
//! set, its instances, each stage's call through the chain, and shadow or
//! canary candidates beside the active policies.

use std::sync::Arc;
use std::time::Instant;

use crate::policy::bindings::types;
use crate::policy::host::{Phase, clean};
use crate::policy::message::ParsedMessage;
use crate::policy::tap::{self, HostTap};
use crate::policy::{
    CallError, Change, DataDecision, DataOutcome, Decision, EnvelopeInfo, SessionInfo, Stage,
};

use super::*;

/// The chain as one SMTP session sees it: the policy set it started with
/// and one lazily made instance per policy. Dropping it drops the
/// instances.
pub struct ChainSession {
    pub(super) chain: Arc<Chain>,
    pub(super) info: SessionInfo,
    pub(super) session: types::Session,
    /// Per chain position, the version this session runs: the active one,
    /// or a canary candidate (chosen at the session's start).
    pub(super) picks: Vec<Arc<LoadedPolicy>>,
    pub(super) instances: Vec<Option<Instance>>,
    /// Instances of shadow candidates.
    pub(super) shadows: Vec<Option<Instance>>,
    /// Recorder or replay source of this session (see [`super::tap`]).
    pub(super) tap: Option<Arc<dyn HostTap>>,
    /// The pool slots its instances take; given back after them (fields
    /// drop in order, after `Drop::drop` has checked the instances in).
    pub(super) _reservation: Reservation,
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
        let pool = &self.chain.engine.pool;
        for (i, p) in self.picks.iter().enumerate() {
            if let Some(inst) = self.instances[i].take() {
                p.check_in(inst, pool);
            }
            if let (Some(inst), Some(c)) = (self.shadows[i].take(), self.chain.policies[i].shadow())
            {
                c.policy.check_in(inst, pool);
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
pub(super) async fn call_in_session(
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
            *slot = Some(chain.check_out(p, phase, Hold::Session).await?);
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
pub(super) struct Slots<'a> {
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
pub(super) fn compare<T: std::fmt::Debug + PartialEq>(
    c: &Candidate,
    stage: Stage,
    active: &T,
    candidate: &T,
) {
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
pub(super) fn verdict_outcome(
    p: &LoadedPolicy,
    stage: Stage,
    r: Result<Answer, CallError>,
) -> Option<Decision> {
    match r {
        Ok(Answer::Verdict(v)) => decide(p, stage, &v),
        Ok(_) => unreachable_answer(),
        Err(e) => match on_failure(p, &e) {
            Failure::Continue => None,
            Failure::Tempfail(r) => Some(Decision::Tempfail(r)),
            Failure::Reject => Some(Decision::Reject(error_reject())),
        },
    }
}

/// What one policy decides at DATA (`None` to go on) and the changes it
/// asks for.
pub(super) fn data_outcome(
    p: &LoadedPolicy,
    stage: Stage,
    r: Result<Answer, CallError>,
) -> (Option<DataOutcome>, Vec<Change>) {
    let answer = match r {
        Ok(Answer::Data(d)) => d,
        Ok(_) => unreachable_answer(),
        Err(e) => {
            let outcome = match on_failure(p, &e) {
                Failure::Continue => None,
                Failure::Tempfail(r) => Some(DataOutcome::Tempfail(r)),
                Failure::Reject => Some(DataOutcome::Reject(error_reject())),
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
pub(super) async fn run_stage(slots: &mut Slots<'_>, stage: Stage, call: Call<'_>) -> Decision {
    for i in 0..slots.picks.len() {
        if let Some(Some(d)) = slots.call(i, stage, call.clone(), verdict_outcome).await {
            tracing::debug!(target: "sluice::policy", policy = &*slots.picks[i].name, %stage, decision = ?d, "decided");
            return d;
        }
    }
    Decision::Continue
}
