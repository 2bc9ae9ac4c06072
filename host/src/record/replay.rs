//! Replay: drive a recorded session again through the SMTP state machine
//! and a policy chain, with no network, and say which stages changed.
//!
//! The client's side comes from the recording: its command lines, its
//! messages (fed as DATA or in the recorded BDAT chunks), its TLS. The
//! session runs the same rules as the gateway — the built-in relay rule,
//! then the chain — so a change early in a session carries on (a refused
//! MAIL FROM leaves the RCPTs after it unanswered by the chain). Host
//! calls are answered from the recording ([`RecordedCalls`]); the clock
//! from the recorded time. A message recorded redacted does not run the
//! data stage: its recorded reply is replayed and the stage reported as
//! skipped.
//!
//! The replay is itself recorded (a [`SessionTap`] without a writer), and
//! both records are turned into [`Step`]s — one per command, with the
//! outcome of its reply and, for the data stage, its changes — which are
//! compared by label and occurrence.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::schema::{Event, MessageContent, SessionRecord};
use super::script::ClientScript;
use super::{Answers, RecordLimits, SessionStart, SessionTap};
use crate::config::{Config, DnsConfig, PolicyConfig, RecordMode};
use crate::gate::{BuiltIn, DataVerdict, GatePeer, GateSession};
use crate::policy::tap::CallResult;
use crate::policy::{Chain, Engine, EnvelopeInfo, KvStore, Services};
use crate::smtp::command::{self, Command};
use crate::smtp::reply::std_replies;
use crate::smtp::{Action, Session, Waiting};

/// How long a replayed session waits for its policy instance slots.
const REPLAY_POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a host call the recording does not have is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Unrecorded {
    /// `temporary` to the guest, and the session counts as failed.
    #[default]
    Fail,
    /// As if nothing were there: DNS answers no records, `kv.get` none,
    /// `kv.incr` the delta, `kv.set`/`kv.delete` succeed.
    NotFound,
    /// Make the call: DNS through the config's resolver (the network!),
    /// key-value in a store of this replay run (empty at its start).
    Live,
}

/// One recorded host call, as an answer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The policy that made it; `None`: any (written by hand).
    pub(crate) policy: Option<String>,
    pub(crate) call: String,
    /// Matched as a prefix of the call's arguments.
    pub(crate) args: Vec<Value>,
    pub(crate) result: CallResult,
    used: bool,
}

impl Entry {
    /// An answer for `call(args…)` (args: a prefix of the call's).
    pub fn new(policy: Option<String>, call: String, args: Vec<Value>, result: CallResult) -> Self {
        Self {
            policy,
            call,
            args,
            result,
            used: false,
        }
    }
}

/// The host calls of a recording, answering the replay's calls by call
/// and arguments, in order.
///
/// - A call is answered by the first unused entry for the same policy
///   (or written by hand for any), call and arguments.
/// - DNS answers are facts: when none is left for the policy, an entry of
///   another policy, or one used already, answers too.
/// - `clock.now` without an entry answers the recorded start of the
///   session plus the time of the event being replayed.
/// - `metrics.*` calls are always made (they only count).
/// - Anything else follows [`Unrecorded`].
#[derive(Debug)]
pub(crate) struct RecordedCalls {
    entries: Vec<Entry>,
    unrecorded: Unrecorded,
    started_ms: i64,
    failures: Arc<Mutex<Vec<String>>>,
}

impl RecordedCalls {
    pub(crate) fn new(
        entries: Vec<Entry>,
        unrecorded: Unrecorded,
        started_ms: i64,
        failures: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Self {
            entries,
            unrecorded,
            started_ms,
            failures,
        }
    }

    /// Every host call in `rec`'s stage events, in order.
    pub(crate) fn entries_of(rec: &SessionRecord) -> Vec<Entry> {
        let mut out = Vec::new();
        for e in &rec.events {
            if let Event::Stage { policies, .. } = e {
                for p in policies {
                    for c in &p.calls {
                        out.push(Entry::new(
                            Some(p.policy.clone()),
                            c.call.clone(),
                            c.args.clone(),
                            c.result.clone(),
                        ));
                    }
                }
            }
        }
        out
    }

    fn find(&self, policy: &str, call: &str, args: &[Value], fact: bool) -> Option<usize> {
        let matches = |e: &Entry| {
            e.call == call && e.args.len() <= args.len() && e.args[..] == args[..e.args.len()]
        };
        let own = |e: &Entry| e.policy.as_deref().is_none_or(|p| p == policy);
        self.entries
            .iter()
            .position(|e| !e.used && own(e) && matches(e))
            .or_else(|| {
                if !fact {
                    return None;
                }
                self.entries
                    .iter()
                    .position(|e| !e.used && matches(e))
                    .or_else(|| self.entries.iter().rposition(matches))
            })
    }
}

fn args_text(args: &[Value]) -> String {
    args.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Answers for RecordedCalls {
    fn answer(&mut self, policy: &str, call: &str, args: &[Value], t: u64) -> Option<CallResult> {
        if call.starts_with("metrics.") {
            return None;
        }
        let fact = call.starts_with("dns.") || call == "clock.now";
        if let Some(i) = self.find(policy, call, args, fact) {
            self.entries[i].used = true;
            return Some(self.entries[i].result.clone());
        }
        if call == "clock.now" {
            let ms = self.started_ms.saturating_add((t / 1000) as i64).max(0);
            return Some(CallResult::Ok(serde_json::json!({
                "seconds": u32::try_from(ms / 1000).unwrap_or(u32::MAX),
                "millis": ms % 1000,
            })));
        }
        match self.unrecorded {
            Unrecorded::Live => None,
            Unrecorded::NotFound => Some(match call {
                "kv.get" | "kv.set" | "kv.delete" => CallResult::Ok(Value::Null),
                "kv.incr" => CallResult::Ok(args.get(1).cloned().unwrap_or(Value::from(1))),
                c if c.starts_with("dns.") => CallResult::Ok(Value::Array(Vec::new())),
                _ => CallResult::Temporary("replay: not in the recording".into()),
            }),
            Unrecorded::Fail => {
                if let Ok(mut f) = self.failures.lock() {
                    f.push(format!(
                        "policy {policy:?} made a host call the recording does not have: {call}({})",
                        args_text(args)
                    ));
                }
                Some(CallResult::Temporary("replay: not in the recording".into()))
            }
        }
    }
}

/// A policy chain loaded for replay, with the gateway rules of a config.
#[derive(Debug)]
pub struct Replayer {
    config: Config,
    chain: Option<Arc<Chain>>,
    rules: Arc<BuiltIn>,
    unrecorded: Unrecorded,
}

/// `NAME=FILE.wasm`.
pub fn parse_override(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=FILE.wasm"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("{s:?} is not NAME=FILE.wasm"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

impl Replayer {
    /// Load the chain of `config` with `overrides` (the component of the
    /// policy `NAME` replaced; a name not in the config adds a policy with
    /// every capability). Compiled code is cached in `cache_dir`.
    pub async fn load(
        config: Config,
        overrides: &[(String, PathBuf)],
        cache_dir: PathBuf,
        unrecorded: Unrecorded,
    ) -> anyhow::Result<Replayer> {
        let mut policies = config.policies.clone();
        for (name, path) in overrides {
            match policies.iter_mut().find(|p| &p.name == name) {
                Some(p) => p.path = path.clone(),
                None => {
                    let text = format!(
                        "name = {name:?}\npath = {:?}\ncapabilities = [\"clock\", \"metrics\", \"kv\", \"dns\"]\n",
                        path.display().to_string()
                    );
                    let p: PolicyConfig = toml::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("--policy {name}: {e}"))?;
                    policies.push(p);
                }
            }
        }
        let chain = if policies.is_empty() {
            None
        } else {
            let mut engine_cfg = config.policy_engine.clone();
            // One session at a time: no pool to reserve.
            engine_cfg.pooling = false;
            // Compiled code in the cache runs as trusted: ours alone.
            crate::private::ensure(&cache_dir)?;
            engine_cfg.cache_dir = cache_dir;
            let engine = Engine::new(&engine_cfg)?;
            let resolver: Arc<dyn crate::dns::Resolver> = match unrecorded {
                Unrecorded::Live => crate::dns::from_config(&config.dns)?,
                // Nothing is asked of it but by `init`: no network at all.
                _ => Arc::new(crate::dns::StaticResolver::only(&DnsConfig::default())),
            };
            let services = Services {
                resolver,
                kv: Arc::new(KvStore::default()),
            };
            Some(engine.load_chain(&policies, services).await?)
        };
        let rules = Arc::new(BuiltIn::from_config(&config));
        Ok(Replayer {
            config,
            chain,
            rules,
            unrecorded,
        })
    }

    /// The chain's next hop for `rcpt` (the route stage, which the queue
    /// asks after a session and recordings do not hold): `default`,
    /// `local`, `relay HOST:PORT tls=MODE`, `mx DOMAIN`,
    /// `reject X.Y.Z text` or `defer CODE X.Y.Z text`. Host calls of route
    /// hooks go to the replay's own services (no network).
    pub async fn route(&self, rcpt: &str) -> String {
        use crate::policy::RouteDecision;
        use crate::route::Route;
        let Some(chain) = &self.chain else {
            return "default".into();
        };
        let env = EnvelopeInfo {
            sender: String::new(),
            sender_params: Vec::new(),
            recipients: vec![rcpt.to_string()],
        };
        match chain.route(&env, rcpt).await {
            RouteDecision::Default => "default".into(),
            RouteDecision::Defer(r) => format!("defer {}", r.summary()),
            RouteDecision::Route(Route::Local) => "local".into(),
            RouteDecision::Route(Route::Relay { host, port, tls }) => {
                format!(
                    "relay {host}:{port} tls={}",
                    format!("{tls:?}").to_lowercase()
                )
            }
            RouteDecision::Route(Route::Mx { domain }) => format!("mx {domain}"),
            RouteDecision::Route(Route::Reject { status, text }) => {
                format!("reject {status} {text}")
            }
        }
    }

    /// Replay one session; `extra` are host-call answers written by hand.
    pub async fn replay(&self, rec: &SessionRecord, extra: Vec<Entry>) -> Replayed {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut out = Replayed::default();
        let ip: IpAddr = match rec.peer.ip.parse() {
            Ok(ip) => ip,
            Err(_) => {
                out.errors
                    .push(format!("peer ip {:?} is not an address", rec.peer.ip));
                return out;
            }
        };
        let listener: SocketAddr = rec
            .listener
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 25)));
        let started_ms = chrono::DateTime::parse_from_rfc3339(&rec.started)
            .map(|d| d.timestamp_millis())
            .unwrap_or(0);
        let mut entries = extra;
        entries.extend(RecordedCalls::entries_of(rec));
        let answers = RecordedCalls::new(entries, self.unrecorded, started_ms, failures.clone());
        let implicit = rec.tls.clone().map(|t| (t.version, t.cipher));
        let gate = GateSession::open(
            self.rules.clone(),
            self.chain.clone(),
            &GatePeer {
                client: SocketAddr::new(ip, rec.peer.port),
                listener,
                tls: implicit.clone(),
                // A proxied session whose client is the proxy itself had
                // a header naming no client: no relay rights, as live.
                relay_rights: rec
                    .proxy
                    .as_ref()
                    .and_then(|p| p.parse::<SocketAddr>().ok())
                    .is_none_or(|p| p.ip() != ip),
            },
            // Sessions replayed side by side wait for each other's slots.
            REPLAY_POOL_WAIT,
        )
        .await;
        let mut gate = match gate {
            Ok(g) => g,
            Err(full) => {
                out.errors.push(full.to_string());
                return out;
            }
        };
        let tap = Arc::new(
            SessionTap::new(
                SessionStart {
                    id: rec.id.clone(),
                    started: rec.started.clone(),
                    listener: rec.listener.clone(),
                    peer: SocketAddr::new(ip, rec.peer.port),
                    proxy: rec.proxy.as_ref().and_then(|p| p.parse().ok()),
                    tls: implicit.clone(),
                    relay_client: gate.relay_client(),
                    chain: gate.chain().cloned(),
                },
                RecordMode::All,
                None,
                RecordLimits::UNBOUNDED,
                None,
            )
            .with_answers(Box::new(answers)),
        );
        gate.set_tap(tap.clone());
        let mut session = Session::new(
            self.config.session_config(implicit.is_none()),
            implicit.is_some(),
        );
        session.log_commands();

        let mut script = ClientScript::of(rec);
        // Bounded whatever the recording holds: each step consumes input or
        // ends the session.
        for _ in 0..1_000_000 {
            match gate.next_action(&mut session) {
                Action::Send(_) | Action::Done(_) => {}
                Action::Check(c) => {
                    let v = gate.check(&c).await;
                    session.answer(v);
                }
                Action::Store(t) => {
                    let Some(m) = script.take_message() else {
                        session.stored(Err(std_replies::bad_sequence("no message")));
                        continue;
                    };
                    tap.set_time(m.t);
                    tap.push(m.event.clone());
                    let result = match SessionRecord::message_content(&m.event) {
                        Some(MessageContent::Full(_)) => {
                            let mut t = *t;
                            match gate.data(&mut t).await {
                                DataVerdict::Refuse(r) => Err(r),
                                _ => Ok("REPLAYED".to_string()),
                            }
                        }
                        _ => {
                            // Redacted: the data stage cannot run; the
                            // recorded reply keeps the session going.
                            out.skipped.push("data".into());
                            tap.skipped_data();
                            match m.reply {
                                Some(r) if !r.is_positive() => Err(r),
                                _ => Ok("REPLAYED".to_string()),
                            }
                        }
                    };
                    session.stored(result);
                }
                Action::StartTls => {
                    let (v, c) = script.tls();
                    gate.tls_started(&v, &c);
                    session.tls_started();
                }
                Action::NeedInput => {
                    let input = match session.waiting_for() {
                        Waiting::Command => script.command(),
                        Waiting::Data => script.data(),
                    };
                    match input {
                        Ok(Some((t, bytes))) => {
                            tap.set_time(t);
                            session.feed(&bytes);
                        }
                        Ok(None) => session.eof(),
                        Err(gap) => {
                            if let Some(t) = gap.t {
                                tap.set_time(t);
                            }
                            out.errors.push(gap.what);
                            session.eof();
                        }
                    }
                }
                Action::Close => break,
            }
        }
        out.record = tap.finish();
        out.errors
            .extend(failures.lock().map(|f| f.clone()).unwrap_or_default());
        out
    }
}

/// What one replay produced.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The replayed session as a record (commands, replies, stages, host
    /// calls) — what `--accept` keeps.
    pub record: Option<SessionRecord>,
    /// Stages that could not run (a redacted message).
    pub skipped: Vec<String>,
    /// Why the replay is not trustworthy: unrecorded host calls (with
    /// `--unrecorded fail`), a recording that ran out.
    pub errors: Vec<String>,
}

// ---------------------------------------------------------------------------
// Steps and differences

/// One step of a session: a command (or the connection, or a message) and
/// what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `connect`, `helo NAME`, `mail-from <ADDR>`, `rcpt ADDR`, `data`, or
    /// the command (`DATA`, `RSET`, `QUIT`, …).
    pub label: String,
    /// `accept`, `reject 550 5.7.1 text`, `tempfail …`, `discard`,
    /// `quarantine: reason`, with data-stage changes in brackets.
    pub outcome: String,
    /// The reply's code and first line (`550 5.7.1 text`).
    #[serde(skip)]
    pub reply: String,
    /// Data stage: the changes.
    #[serde(skip)]
    pub changes: Vec<String>,
}

/// The label of a command line.
pub fn command_label(line: &str) -> String {
    match command::parse(line.as_bytes()) {
        Ok(Command::Ehlo(n) | Command::Helo(n)) => format!("helo {n}"),
        Ok(Command::Mail { from, .. }) => format!("mail-from <{from}>"),
        Ok(Command::Rcpt { to, .. }) => format!("rcpt {to}"),
        _ => {
            let mut l = line.trim().to_string();
            if let Some(sp) = l.find(' ') {
                l[..sp].make_ascii_uppercase();
            } else {
                l.make_ascii_uppercase();
            }
            if l.len() > 80 {
                let mut end = 80;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                l.truncate(end);
            }
            l
        }
    }
}

/// The outcome of a step from its reply and, when a stage ran, its
/// decision and changes.
fn outcome(reply: &str, code: u16, decision: Option<&str>, changes: &[String]) -> String {
    let mut out = match decision {
        Some(d)
            if d.starts_with("discard")
                || d.starts_with("quarantine")
                || d.starts_with("skipped") =>
        {
            d.to_string()
        }
        _ => {
            if code >= 500 {
                format!("reject {reply}")
            } else if code >= 400 {
                format!("tempfail {reply}")
            } else {
                "accept".to_string()
            }
        }
    };
    if !changes.is_empty() && !out.starts_with("reject") && !out.starts_with("tempfail") {
        out.push_str(&format!(" [{}]", changes.join("; ")));
    }
    out
}

#[derive(Default)]
struct Open {
    label: String,
    decision: Option<String>,
    changes: Vec<String>,
}

/// The steps of a session record.
pub fn steps(rec: &SessionRecord) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut open: Option<Open> = None;
    let close = |o: Open, reply: String, code: u16| Step {
        outcome: outcome(&reply, code, o.decision.as_deref(), &o.changes),
        label: o.label,
        reply,
        changes: o.changes,
    };
    for e in &rec.events {
        match e {
            Event::Command { line, .. } => {
                if let Some(o) = open.take() {
                    steps.push(close(o, String::new(), 0).no_reply());
                }
                open = Some(Open {
                    label: command_label(line),
                    ..Open::default()
                });
            }
            Event::Message { .. } => {
                open.get_or_insert_with(|| Open {
                    label: "data".into(),
                    ..Open::default()
                });
            }
            Event::Stage {
                stage,
                decision,
                changes,
                ..
            } => {
                let o = open.get_or_insert_with(|| Open {
                    label: stage.clone(),
                    ..Open::default()
                });
                if stage == "data" {
                    o.label = "data".into();
                }
                o.decision = Some(decision.clone());
                o.changes = changes.clone();
            }
            Event::Reply {
                code,
                enhanced,
                lines,
                ..
            } => {
                let o = open.take().unwrap_or_else(|| Open {
                    label: "(session)".into(),
                    ..Open::default()
                });
                let mut reply = code.to_string();
                if let Some(e) = enhanced {
                    reply.push(' ');
                    reply.push_str(e);
                }
                if let Some(l) = lines.first() {
                    reply.push(' ');
                    reply.push_str(l);
                }
                steps.push(close(o, reply, *code));
            }
            Event::Tls { .. } => {}
        }
    }
    if let Some(o) = open.take() {
        steps.push(close(o, String::new(), 0).no_reply());
    }
    steps
}

impl Step {
    fn no_reply(mut self) -> Self {
        if !self.outcome.starts_with("skipped") {
            self.outcome = "(no reply)".into();
        }
        self
    }
}

/// One difference between two runs of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepChange {
    /// The step's label.
    pub step: String,
    /// Its outcome in the recording; `None`: not in the recording.
    pub before: Option<String>,
    /// Its outcome in the replay; `None`: not reached.
    pub after: Option<String>,
}

impl std::fmt::Display for StepChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} → {}",
            self.step,
            self.before.as_deref().unwrap_or("(not in recording)"),
            self.after.as_deref().unwrap_or("(not reached)")
        )
    }
}

/// The differences between recorded and replayed steps, matched by label
/// and occurrence, in the recording's order (then steps only the replay
/// has). Skipped steps are not differences.
pub fn diff(before: &[Step], after: &[Step]) -> Vec<StepChange> {
    let key = |steps: &[Step]| {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        steps
            .iter()
            .map(|s| {
                let n = seen.entry(s.label.as_str()).or_default();
                *n += 1;
                (s.label.clone(), *n)
            })
            .collect::<Vec<_>>()
    };
    let (kb, ka) = (key(before), key(after));
    let index: BTreeMap<&(String, usize), usize> =
        ka.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut matched = vec![false; after.len()];
    let mut out = Vec::new();
    for (i, k) in kb.iter().enumerate() {
        match index.get(k) {
            Some(&j) => {
                matched[j] = true;
                let (b, a) = (&before[i].outcome, &after[j].outcome);
                if b != a && !a.starts_with("skipped") {
                    out.push(StepChange {
                        step: before[i].label.clone(),
                        before: Some(b.clone()),
                        after: Some(a.clone()),
                    });
                }
            }
            None => out.push(StepChange {
                step: before[i].label.clone(),
                before: Some(before[i].outcome.clone()),
                after: None,
            }),
        }
    }
    for (j, s) in after.iter().enumerate() {
        if !matched[j] {
            out.push(StepChange {
                step: s.label.clone(),
                before: None,
                after: Some(s.outcome.clone()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(label: &str, outcome: &str) -> Step {
        Step {
            label: label.into(),
            outcome: outcome.into(),
            reply: String::new(),
            changes: Vec::new(),
        }
    }

    #[test]
    fn labels() {
        assert_eq!(command_label("ehlo Client.Example"), "helo Client.Example");
        assert_eq!(command_label("MAIL FROM:<>"), "mail-from <>");
        assert_eq!(
            command_label("mail from:<a@b.example> SIZE=10"),
            "mail-from <a@b.example>"
        );
        assert_eq!(
            command_label("RCPT TO:<bob@x.example>"),
            "rcpt bob@x.example"
        );
        assert_eq!(command_label("quit"), "QUIT");
        assert_eq!(command_label("bdat 100 last"), "BDAT 100 last");
    }

    #[test]
    fn differences_by_label_and_occurrence() {
        let before = [
            step("connect", "accept"),
            step("rcpt a@x", "accept"),
            step("rcpt a@x", "accept"),
            step("data", "accept [add-header X: 1]"),
            step("QUIT", "accept"),
        ];
        let after = [
            step("connect", "accept"),
            step("rcpt a@x", "accept"),
            step("rcpt a@x", "tempfail 451 4.7.1 later"),
            step("data", "skipped: message redacted"),
            step("RSET", "accept"),
        ];
        let d: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            d,
            [
                "rcpt a@x: accept → tempfail 451 4.7.1 later",
                "QUIT: accept → (not reached)",
                "RSET: (not in recording) → accept",
            ]
        );
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn unrecorded_calls_follow_the_flag() {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let entries = vec![
            Entry::new(
                Some("p".into()),
                "kv.incr".into(),
                vec!["k".into(), 1.into(), 60.into()],
                CallResult::Ok(5.into()),
            ),
            Entry::new(
                Some("p".into()),
                "dns.a".into(),
                vec!["a.test".into()],
                CallResult::Ok(serde_json::json!(["127.0.0.2"])),
            ),
        ];
        let mut r = RecordedCalls::new(entries, Unrecorded::Fail, 1_000_000, failures.clone());
        let incr = [Value::from("k"), Value::from(1), Value::from(60)];
        assert_eq!(
            r.answer("p", "kv.incr", &incr, 0),
            Some(CallResult::Ok(5.into()))
        );
        // Used up: state is not reused.
        assert!(matches!(
            r.answer("p", "kv.incr", &incr, 0),
            Some(CallResult::Temporary(_))
        ));
        assert_eq!(failures.lock().unwrap().len(), 1);
        // DNS is a fact: another policy, and again.
        let a = [Value::from("a.test")];
        for policy in ["q", "p", "q"] {
            assert_eq!(
                r.answer(policy, "dns.a", &a, 0),
                Some(CallResult::Ok(serde_json::json!(["127.0.0.2"])))
            );
        }
        // The clock from the recorded start plus the event's time.
        assert_eq!(
            r.answer("p", "clock.now", &[], 2_500_000),
            Some(CallResult::Ok(
                serde_json::json!({"seconds": 1002, "millis": 500})
            ))
        );
        assert_eq!(r.answer("p", "metrics.counter-add", &[], 0), None);
        let mut nf = RecordedCalls::new(Vec::new(), Unrecorded::NotFound, 0, failures.clone());
        assert_eq!(
            nf.answer("p", "kv.incr", &incr, 0),
            Some(CallResult::Ok(1.into()))
        );
        assert_eq!(
            nf.answer("p", "dns.mx", &a, 0),
            Some(CallResult::Ok(serde_json::json!([])))
        );
        assert_eq!(
            nf.answer("p", "kv.get", &a, 0),
            Some(CallResult::Ok(Value::Null))
        );
        let mut live = RecordedCalls::new(Vec::new(), Unrecorded::Live, 0, failures);
        assert_eq!(live.answer("p", "dns.a", &a, 0), None);
    }
}
