//! Record and replay: SMTP sessions recorded as one JSON object per line
//! (the format is in `docs/recording-format.md` and [`schema`]), replayed
//! against a policy chain with no network, and used as policy test suites.
//!
//! - Recording: the connection driver gives each recorded session a
//!   [`SessionTap`]; it collects the commands, replies, TLS, message,
//!   each stage's decision, and — set as the [`crate::policy::HostTap`]
//!   of the session's policy chain — every policy's answer and every host
//!   call with its result. When the session ends the record goes to the
//!   [`writer`] thread through a bounded queue (dropped and counted when
//!   full): recording is never on the reply path.
//! - Replay ([`replay`]): each recorded session is driven again through
//!   the SMTP state machine and a freshly loaded chain; host calls are
//!   answered from the recording (by call and arguments, in order); the
//!   stages whose outcome changed are reported.
//! - Transcripts ([`transcript`]): a plain `C:`/`S:` format for writing
//!   sessions by hand, read into the same [`schema::SessionRecord`].
//! - Suites ([`suite`]): `sluice test DIR` replays every case in a folder
//!   and checks its expectations.

pub mod replay;
pub mod schema;
mod script;
pub mod suite;
pub mod transcript;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::budget::{Account, MemoryBudget};
use crate::config::RecordMode;
use crate::policy::tap::{HostCall, HostTap, PolicyResult};
use crate::policy::{Change, DataDecision, DataOutcome, Stage};
use crate::smtp::{Check, Reply, Verdict};
use schema::{Event, PolicyInfo, SessionRecord};

pub use writer::Writer;

/// Most events one recorded session keeps; later ones are left out and the
/// record marked `truncated`.
const MAX_EVENTS: usize = 10_000;
/// Most host calls recorded for one hook call.
const MAX_CALLS_PER_HOOK: usize = 1000;

/// How much of a session a record keeps (from `[record]`).
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Every message redacted to its header section.
    pub redact: bool,
    /// A message larger than this is redacted.
    pub max_message: u64,
    /// Octets (roughly) one session's record may hold in memory: a message
    /// that would pass it is redacted, other events past it left out and
    /// the record marked `truncated`.
    pub max_session: usize,
}

impl RecordLimits {
    /// The limits of `[record]`.
    pub fn of(cfg: &crate::config::RecordConfig) -> Self {
        Self {
            redact: cfg.redact,
            max_message: cfg.max_message_size.0,
            max_session: usize::try_from(cfg.max_session_size.0).unwrap_or(usize::MAX),
        }
    }

    /// No limit but the count of events (replay, whose input is a
    /// recording already bounded).
    pub const UNBOUNDED: Self = Self {
        redact: false,
        max_message: u64::MAX,
        max_session: usize::MAX,
    };
}

/// Answers host calls during a replay (see [`replay`]).
pub(crate) trait Answers: Send + std::fmt::Debug {
    fn answer(
        &mut self,
        policy: &str,
        call: &str,
        args: &[serde_json::Value],
        t: u64,
    ) -> Option<crate::policy::tap::CallResult>;
}

#[derive(Debug)]
struct Capture {
    record: SessionRecord,
    t0: Instant,
    /// Replay: the time of the recorded event being replayed.
    fixed_t: Option<u64>,
    /// Per-policy answers of the stage in progress.
    pending: Vec<PolicyResult>,
    /// Host calls of the hook in progress.
    calls: Vec<HostCall>,
    refused: bool,
    limits: RecordLimits,
    /// Roughly what `record` holds, in octets.
    size: usize,
    /// `size` held against the gateway's message memory budget until the
    /// record goes to the writer.
    account: Option<Account>,
}

impl Capture {
    fn t(&self) -> u64 {
        self.fixed_t
            .unwrap_or_else(|| self.t0.elapsed().as_micros() as u64)
    }

    fn push(&mut self, e: Event) {
        let size = e.approx_size();
        if self.record.events.len() >= MAX_EVENTS
            || self.size.saturating_add(size) > self.limits.max_session
        {
            self.record.truncated = true;
            return;
        }
        self.size += size;
        self.record.events.push(e);
        if let Some(a) = &mut self.account {
            a.hold(self.size);
        }
    }
}

/// What the driver knows about a session when it starts.
#[derive(Debug, Clone)]
pub struct SessionStart {
    /// The record's id.
    pub id: String,
    /// Wall-clock start, RFC 3339.
    pub started: String,
    /// Listener address.
    pub listener: String,
    /// Client.
    pub peer: std::net::SocketAddr,
    /// The proxy, if any.
    pub proxy: Option<std::net::SocketAddr>,
    /// Implicit TLS `(version, cipher)`.
    pub tls: Option<(String, String)>,
    /// In `relay_networks`.
    pub relay_client: bool,
    /// The chain, if any.
    pub chain: Option<Arc<crate::policy::Chain>>,
}

/// The recorder of one session: the connection driver reports to it, and
/// it is the session chain's [`HostTap`].
#[derive(Debug)]
pub struct SessionTap {
    capture: Mutex<Capture>,
    answers: Option<Mutex<Box<dyn Answers>>>,
    mode: RecordMode,
    writer: Option<Arc<Writer>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A decision as recorded: `accept`, `reject 550 5.7.1 text`, …
pub fn decision_text(reply: Option<&Reply>) -> String {
    match reply {
        None => "accept".into(),
        Some(r) if r.is_transient() => format!("tempfail {}", r.summary()),
        Some(r) if r.is_permanent() => format!("reject {}", r.summary()),
        Some(_) => "accept".into(),
    }
}

/// A change as recorded.
pub fn change_text(c: &Change) -> String {
    match c {
        Change::AddHeader { name, value } => format!("add-header {name}: {value}"),
        Change::RemoveHeader(n) => format!("remove-header {n}"),
        Change::AddRecipient(a) => format!("add-rcpt {a}"),
        Change::RemoveRecipient(a) => format!("remove-rcpt {a}"),
    }
}

impl SessionTap {
    /// A recorder for a session that starts now.
    pub fn new(
        start: SessionStart,
        mode: RecordMode,
        writer: Option<Arc<Writer>>,
        limits: RecordLimits,
        budget: Option<&Arc<MemoryBudget>>,
    ) -> Self {
        let policies = start
            .chain
            .as_ref()
            .map(|c| {
                c.policies
                    .iter()
                    .map(|p| PolicyInfo {
                        name: p.name.to_string(),
                        version: p.version.clone(),
                        wasm_sha256: p.wasm_hash.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = SessionRecord {
            format: schema::FORMAT.into(),
            version: schema::VERSION,
            id: start.id,
            started: start.started,
            listener: start.listener,
            peer: schema::Peer {
                ip: start.peer.ip().to_string(),
                port: start.peer.port(),
            },
            proxy: start.proxy.map(|p| p.to_string()),
            tls: start
                .tls
                .map(|(version, cipher)| schema::TlsRecord { version, cipher }),
            relay_client: start.relay_client,
            policies,
            redacted: false,
            truncated: false,
            events: Vec::new(),
        };
        Self {
            capture: Mutex::new(Capture {
                record,
                t0: Instant::now(),
                fixed_t: None,
                pending: Vec::new(),
                calls: Vec::new(),
                refused: false,
                limits,
                size: 0,
                account: budget.map(MemoryBudget::account),
            }),
            answers: None,
            mode,
            writer,
        }
    }

    /// Replay: answer host calls from `answers`, and time events as the
    /// recording did.
    pub(crate) fn with_answers(mut self, answers: Box<dyn Answers>) -> Self {
        self.answers = Some(Mutex::new(answers));
        lock(&self.capture).fixed_t = Some(0);
        self
    }

    /// Replay: the recorded time of what is being replayed now.
    pub(crate) fn set_time(&self, t: u64) {
        lock(&self.capture).fixed_t = Some(t);
    }

    /// Command lines the session took.
    pub fn commands(&self, lines: Vec<Vec<u8>>) {
        if lines.is_empty() {
            return;
        }
        let mut c = lock(&self.capture);
        let t = c.t();
        for line in lines {
            let line = String::from_utf8_lossy(&line).into_owned();
            c.push(Event::Command { t, line });
        }
    }

    /// A reply sent.
    pub fn reply(&self, r: &Reply) {
        let mut c = lock(&self.capture);
        let t = c.t();
        c.push(Event::Reply {
            t,
            code: r.code,
            enhanced: r.enhanced.map(|e| e.to_string()),
            lines: r.lines.clone(),
        });
    }

    /// STARTTLS completed.
    pub fn tls(&self, version: &str, cipher: &str) {
        let mut c = lock(&self.capture);
        let t = c.t();
        c.push(Event::Tls {
            t,
            version: version.into(),
            cipher: cipher.into(),
        });
    }

    /// A message arrived (before the data stage).
    pub fn message(&self, body: &[u8]) {
        let mut c = lock(&self.capture);
        let t = c.t();
        // Whole, it would take about its size (as text) or 4/3 of it
        // (base64) of the session's share.
        let whole = body.len().saturating_add(body.len() / 3);
        // Nor may it take what the gateway's budget has left.
        let no_room = c
            .account
            .as_ref()
            .is_some_and(|a| a.budget().room() < whole);
        let redact = c.limits.redact
            || body.len() as u64 > c.limits.max_message
            || c.size.saturating_add(whole) > c.limits.max_session
            || no_room;
        if redact {
            c.record.redacted = true;
        }
        c.push(schema::message_event(t, body, redact));
    }

    /// The verdict given to a stage other than data (built-in rules and
    /// policies together).
    pub fn stage(&self, check: &Check, verdict: &Verdict) {
        let (stage, arg) = match check {
            Check::Connect => (Stage::Connect, String::new()),
            Check::Helo { name } => (Stage::Helo, name.clone()),
            Check::MailFrom { from, .. } => (Stage::MailFrom, format!("<{from}>")),
            Check::Rcpt { to, .. } => (Stage::Rcpt, to.to_string()),
        };
        let reply = match verdict {
            Verdict::Accept => None,
            Verdict::Reject(r) => Some(r),
        };
        self.stage_event(stage, arg, decision_text(reply), Vec::new());
    }

    /// The data stage's decision.
    pub fn data(&self, d: &DataDecision) {
        let decision = match &d.outcome {
            DataOutcome::Continue | DataOutcome::Accept => "accept".into(),
            DataOutcome::Reject(r) | DataOutcome::Tempfail(r) => decision_text(Some(r)),
            DataOutcome::Discard => "discard".into(),
            DataOutcome::Quarantine(reason) => format!("quarantine: {reason}"),
        };
        let changes = d.changes.iter().map(change_text).collect();
        self.stage_event(Stage::Data, String::new(), decision, changes);
    }

    fn stage_event(&self, stage: Stage, arg: String, decision: String, changes: Vec<String>) {
        let mut c = lock(&self.capture);
        if decision.starts_with("reject") || decision.starts_with("tempfail") {
            c.refused = true;
        }
        let t = c.t();
        let policies = std::mem::take(&mut c.pending);
        c.calls.clear();
        c.push(Event::Stage {
            t,
            stage: stage.as_str().into(),
            arg,
            decision,
            changes,
            policies,
        });
    }

    /// Replay: an event copied from the recording.
    pub(crate) fn push(&self, e: Event) {
        lock(&self.capture).push(e);
    }

    /// Replay: the data stage could not run (the message is redacted).
    pub(crate) fn skipped_data(&self) {
        let decision = "skipped: message redacted".to_string();
        self.stage_event(Stage::Data, String::new(), decision, Vec::new());
    }

    /// The session ended: hand the record to the writer if its mode keeps
    /// it; without a writer (replay), return it.
    pub fn finish(&self) -> Option<SessionRecord> {
        let mut c = lock(&self.capture);
        let keep = match self.mode {
            RecordMode::Off => false,
            RecordMode::Rejected => c.refused,
            RecordMode::All | RecordMode::Sample(_) => true,
        };
        if !keep {
            return None;
        }
        let empty = SessionRecord {
            events: Vec::new(),
            policies: Vec::new(),
            ..c.record.clone_header()
        };
        let record = std::mem::replace(&mut c.record, empty);
        // The writer's queue bounds it from here (`max_queue`).
        c.account = None;
        drop(c);
        match &self.writer {
            Some(w) => {
                w.submit(record);
                None
            }
            None => Some(record),
        }
    }
}

impl SessionRecord {
    /// Everything but the events and policies.
    fn clone_header(&self) -> SessionRecord {
        SessionRecord {
            format: self.format.clone(),
            version: self.version,
            id: self.id.clone(),
            started: self.started.clone(),
            listener: self.listener.clone(),
            peer: self.peer.clone(),
            proxy: self.proxy.clone(),
            tls: self.tls.clone(),
            relay_client: self.relay_client,
            policies: Vec::new(),
            redacted: self.redacted,
            truncated: self.truncated,
            events: Vec::new(),
        }
    }
}

impl HostTap for SessionTap {
    fn answer(
        &self,
        policy: &str,
        call: &str,
        args: &[serde_json::Value],
    ) -> Option<crate::policy::tap::CallResult> {
        let answers = self.answers.as_ref()?;
        let t = lock(&self.capture).t();
        lock(answers).answer(policy, call, args, t)
    }

    fn host_call(&self, _policy: &str, call: HostCall) {
        let mut c = lock(&self.capture);
        if c.calls.len() < MAX_CALLS_PER_HOOK {
            c.calls.push(call);
        } else {
            c.record.truncated = true;
        }
    }

    fn policy_done(&self, _stage: Stage, mut result: PolicyResult) {
        let mut c = lock(&self.capture);
        result.calls = std::mem::take(&mut c.calls);
        c.pending.push(result);
    }
}

impl crate::gate::StageTap for SessionTap {
    fn commands(&self, lines: Vec<Vec<u8>>) {
        SessionTap::commands(self, lines);
    }

    fn reply(&self, r: &Reply) {
        SessionTap::reply(self, r);
    }

    fn tls(&self, version: &str, cipher: &str) {
        SessionTap::tls(self, version, cipher);
    }

    fn message(&self, body: &[u8]) {
        SessionTap::message(self, body);
    }

    fn stage(&self, check: &Check, verdict: &Verdict) {
        SessionTap::stage(self, check, verdict);
    }

    fn data(&self, d: &DataDecision) {
        SessionTap::data(self, d);
    }

    fn end(&self) {
        // Live: the record goes to the writer. (Replay keeps its tap and
        // calls `finish` itself.)
        let _ = self.finish();
    }
}

/// The recorder of a gateway: decides which sessions are recorded and owns
/// the writer.
#[derive(Debug)]
pub struct Recorder {
    writer: Arc<Writer>,
    limits: RecordLimits,
    budget: Arc<MemoryBudget>,
}

impl Recorder {
    /// Start the writer for `[record]`; sessions' records hold their
    /// messages against `budget`.
    pub fn start(
        cfg: &crate::config::RecordConfig,
        budget: Arc<MemoryBudget>,
    ) -> std::io::Result<Recorder> {
        Ok(Recorder {
            writer: Arc::new(Writer::start(cfg)?),
            limits: RecordLimits::of(cfg),
            budget,
        })
    }

    /// A recorder for a new session on a listener with `mode`, or `None`
    /// when this session is not recorded (mode off, not sampled, writes
    /// paused after a failure).
    pub fn session(
        &self,
        mode: RecordMode,
        start: impl FnOnce() -> SessionStart,
    ) -> Option<Arc<SessionTap>> {
        match mode {
            RecordMode::Off => return None,
            RecordMode::Sample(rate) => {
                use std::hash::BuildHasher;
                // SipHash with fresh random keys: a uniform draw.
                let r = std::collections::hash_map::RandomState::new().hash_one(0u8);
                if (r as f64 / u64::MAX as f64) >= rate {
                    return None;
                }
            }
            RecordMode::All | RecordMode::Rejected => {}
        }
        if self.writer.paused() {
            return None;
        }
        Some(Arc::new(SessionTap::new(
            start(),
            mode,
            Some(self.writer.clone()),
            self.limits,
            Some(&self.budget),
        )))
    }

    /// Wait (bounded) until every record submitted is written.
    pub fn flush(&self, timeout: std::time::Duration) {
        self.writer.flush(timeout);
    }
}

/// A new session id and the current time, for [`SessionStart`].
pub fn new_id_and_time() -> (String, String) {
    (
        uuid::Uuid::now_v7().to_string(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(limits: RecordLimits) -> SessionTap {
        tap_on(limits, None)
    }

    fn tap_on(limits: RecordLimits, budget: Option<&Arc<MemoryBudget>>) -> SessionTap {
        let (id, started) = new_id_and_time();
        let start = SessionStart {
            id,
            started,
            listener: "127.0.0.1:25".into(),
            peer: "127.0.0.1:40000".parse().unwrap(),
            proxy: None,
            tls: None,
            relay_client: false,
            chain: None,
        };
        SessionTap::new(start, RecordMode::All, None, limits, budget)
    }

    fn message(n: usize) -> Vec<u8> {
        let mut m = b"Subject: big\r\n\r\n".to_vec();
        m.resize(n, b'x');
        m
    }

    /// A session's record holds at most `max_session` octets however many
    /// messages and commands it sees: later messages are redacted, later
    /// events left out, and the record says so.
    #[test]
    fn a_session_record_is_bounded_in_bytes() {
        let limits = RecordLimits {
            redact: false,
            max_message: 10 << 20,
            max_session: 64 << 10,
        };
        let t = tap(limits);
        for _ in 0..20 {
            t.message(&message(40 << 10));
        }
        for i in 0..2000 {
            t.commands(vec![format!("RCPT TO:<user{i}@example.com>").into_bytes()]);
        }
        let r = t.finish().expect("kept");
        assert!(r.approx_size() <= 512 + (64 << 10), "{}", r.approx_size());
        assert!(r.redacted && r.truncated);
        let whole = r
            .events
            .iter()
            .filter(|e| matches!(e, Event::Message { data: Some(_), .. }))
            .count();
        let redacted = r
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Message {
                        headers: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!((whole, redacted), (1, 19));
    }

    /// A record holds its messages against the gateway's memory budget:
    /// with no room left a message is recorded redacted, and the record
    /// gives its octets back when it goes to the writer.
    #[test]
    fn a_record_takes_no_more_than_the_budget_has() {
        let budget = MemoryBudget::new(100 << 10);
        let mut other = budget.account();
        other.hold(90 << 10);
        let t = tap_on(RecordLimits::of(&Default::default()), Some(&budget));
        t.message(&message(40 << 10));
        other.hold(0);
        t.message(&message(40 << 10));
        assert!(budget.used() > 40 << 10, "the whole message is held");
        let r = t.finish().expect("kept");
        assert_eq!(budget.used(), 0, "given back with the record");
        let kinds: Vec<bool> = r
            .events
            .iter()
            .map(|e| matches!(e, Event::Message { data: Some(_), .. }))
            .collect();
        assert_eq!(kinds, [false, true], "redacted, then whole");
    }

    /// Within the bound nothing is redacted or left out.
    #[test]
    fn a_small_session_is_recorded_whole() {
        let t = tap(RecordLimits {
            redact: false,
            max_message: 10 << 20,
            max_session: 16 << 20,
        });
        for _ in 0..3 {
            t.message(&message(40 << 10));
        }
        let r = t.finish().expect("kept");
        assert!(!r.redacted && !r.truncated);
        assert_eq!(r.events.len(), 3);
    }
}
