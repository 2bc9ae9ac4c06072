//! The stage gate: the one place that decides each stage of an SMTP
//! session. For connect, HELO, MAIL and RCPT it runs the built-in rules
//! ([`AccessRules`]: no open relay, so a policy can refuse more but never
//! allow more) and then the policy chain; at the end of DATA it runs the
//! built-in message rules ([`MessageRules`]: a bounded header section, no
//! mail loop), then the chain's data stage, and applies the changes it
//! asks for ([`changes`]) to the message and its recipients.
//!
//! The live connection driver (`crate::server`) and replay
//! (`crate::record::replay`) both drive a [`Session`] through a
//! [`GateSession`], so replay runs exactly the code the gateway runs; they
//! differ only in where bytes and host-call answers come from. A
//! recorder is a [`StageTap`] set on the gate: it sees the commands, the
//! replies, every stage's verdict and the data stage's decision, and (as
//! the chain's [`HostTap`]) every host call a policy makes.
//!
//! A new stage (AUTH, authentication results, …) is added here once: a
//! [`Check`] variant from the state machine, its built-in rule in
//! [`AccessRules`], its chain call in [`GateSession::check`].

pub mod access;
pub mod changes;
pub mod disk;
pub mod message;
mod params;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use access::AccessRules;
pub use message::MessageRules;
pub use params::{mail_params, rcpt_params};

use crate::config::Config;

/// The gate's built-in rules, from the configuration: who may relay, and
/// what a message must be before any policy reads it.
#[derive(Debug, Clone)]
pub struct BuiltIn {
    /// The relay rule.
    pub access: AccessRules,
    /// Header bounds and the loop limit.
    pub message: MessageRules,
    /// Room on the spool's disk for a new transaction (live only: replay
    /// judges the recording, not this machine's disk).
    pub disk: Option<disk::DiskRule>,
}

impl BuiltIn {
    /// The rules `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            access: AccessRules::new(
                config.local_domains.clone(),
                config.relay_networks.clone(),
                config.delivery.literal_rule(),
            ),
            message: MessageRules {
                max_header_size: usize::try_from(config.limits.max_header_size.0)
                    .unwrap_or(usize::MAX),
                max_header_fields: config.limits.max_header_fields,
                max_received: config.delivery.max_received_headers,
            },
            disk: None,
        }
    }

    /// With the spool-room rule for the data folder of `config`.
    pub fn with_disk(mut self, config: &Config) -> Self {
        self.disk = Some(disk::DiskRule {
            dir: config.data_dir.clone(),
            reserve: config.limits.disk_reserve.0,
        });
        self
    }
}

use crate::policy::{
    Chain, ChainSession, DataDecision, DataOutcome, Decision, EnvelopeInfo, HostTap, PoolFull,
    SessionInfo,
};
use crate::smtp::{Action, Check, Reply, Session, Transaction, Verdict};

/// What observes a gated session: a session recorder. Besides the host
/// calls it sees as the chain's [`HostTap`], it is told what the session
/// and the gate did. Calls come on the session's task, between its
/// steps: implementations must be quick and must not block.
pub trait StageTap: HostTap {
    /// Command lines the session took.
    fn commands(&self, lines: Vec<Vec<u8>>);
    /// A reply sent.
    fn reply(&self, r: &Reply);
    /// STARTTLS completed with this `(version, cipher)`.
    fn tls(&self, version: &str, cipher: &str);
    /// A message arrived (before the data stage).
    fn message(&self, body: &[u8]);
    /// The verdict given to a stage other than data (built-in rules and
    /// policies together).
    fn stage(&self, check: &Check, verdict: &Verdict);
    /// The data stage's decision.
    fn data(&self, d: &DataDecision);
    /// The session ended.
    fn end(&self);
}

/// Who a gated session is with, as the gate and the policies see it.
#[derive(Debug, Clone)]
pub struct GatePeer {
    /// The client (the PROXY source when a trusted proxy named one).
    pub client: SocketAddr,
    /// Our listener's address.
    pub listener: SocketAddr,
    /// TLS `(version, cipher)` when the connection started with TLS.
    pub tls: Option<(String, String)>,
    /// May the client's address earn relay rights (be matched against
    /// `relay_networks`)? Not when it is only a proxy's own address
    /// standing in for an unknown client (PROXY `UNKNOWN`, v2 `LOCAL`).
    pub relay_rights: bool,
}

/// How the data stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataVerdict {
    /// Store the (changed) transaction; held in quarantine with this
    /// reason when one is given.
    Store {
        /// The quarantine reason, if a policy quarantined the message.
        quarantine: Option<String>,
    },
    /// A policy discarded the message: the client is told it was queued,
    /// nothing is kept.
    Discard,
    /// The policies' changes left no recipient: nothing to keep.
    NoRecipients,
    /// A policy refused the message with this reply (5xx or 4xx).
    Refuse(Reply),
}

/// The gate of one SMTP session: the built-in rules, the chain this
/// session started with (a session keeps it from greeting to QUIT), and
/// the session's tap.
#[derive(Debug)]
pub struct GateSession {
    rules: Arc<BuiltIn>,
    relay_client: bool,
    chain: Option<Arc<Chain>>,
    policies: Option<ChainSession>,
    /// MAIL FROM parameters of the current transaction, for the policies.
    sender_params: Vec<(String, String)>,
    tap: Option<Arc<dyn StageTap>>,
}

impl GateSession {
    /// A gate for a session with `peer`, under `access`, asking `chain`
    /// (none, or an empty one: the built-in rules alone). The chain's pool
    /// slots for the session are reserved now, waiting up to `wait` for
    /// them; `PoolFull` when they are not to be had (the caller refuses the
    /// session, `421 4.3.2`).
    pub async fn open(
        rules: Arc<BuiltIn>,
        chain: Option<Arc<Chain>>,
        peer: &GatePeer,
        wait: Duration,
    ) -> Result<Self, PoolFull> {
        let chain = chain.filter(|c| !c.is_empty());
        let relay_client = peer.relay_rights && rules.access.may_relay(peer.client.ip());
        let policies = match &chain {
            None => None,
            Some(c) => {
                let info = SessionInfo {
                    client_ip: peer.client.ip(),
                    client_port: peer.client.port(),
                    listener: peer.listener,
                    tls: peer.tls.clone(),
                    relay_client,
                    helo: None,
                };
                Some(c.session_within(info, wait).await?)
            }
        };
        Ok(Self {
            rules,
            relay_client,
            chain,
            policies,
            sender_params: Vec::new(),
            tap: None,
        })
    }

    /// Report this session to `tap` from now on (and the chain's host
    /// calls with it).
    pub fn set_tap(&mut self, tap: Arc<dyn StageTap>) {
        if let Some(p) = &mut self.policies {
            p.set_tap(tap.clone());
        }
        self.tap = Some(tap);
    }

    /// Is the client in `relay_networks`?
    pub fn relay_client(&self) -> bool {
        self.relay_client
    }

    /// The chain this session runs, if any.
    pub fn chain(&self) -> Option<&Arc<Chain>> {
        self.chain.as_ref()
    }

    /// The session's next action, reported to the tap (the command lines
    /// it took and the reply it sends).
    pub fn next_action(&self, session: &mut Session) -> Action {
        let action = session.next_action();
        if let Some(tap) = &self.tap {
            tap.commands(session.take_commands());
            if let Action::Send(r) = &action {
                tap.reply(r);
            }
        }
        action
    }

    /// The verdict for one stage: the built-in rules first; then, when
    /// they accept, the chain.
    pub async fn check(&mut self, c: &Check) -> Verdict {
        let v = match self.rules.access.check(c, self.relay_client) {
            Verdict::Accept if matches!(c, Check::MailFrom { .. }) => {
                match self.rules.disk.as_ref().and_then(|d| d.check_mail(c)) {
                    Some(r) => Verdict::Reject(r),
                    None => self.ask_policies(c).await,
                }
            }
            Verdict::Accept => self.ask_policies(c).await,
            refused => refused,
        };
        if let Some(tap) = &self.tap {
            tap.stage(c, &v);
        }
        v
    }

    async fn ask_policies(&mut self, c: &Check) -> Verdict {
        let Some(p) = &mut self.policies else {
            return Verdict::Accept;
        };
        let d = match c {
            Check::Connect => p.connect().await,
            Check::Helo { name } => {
                p.set_helo(name.clone());
                p.helo(name).await
            }
            Check::MailFrom { from, params } => {
                self.sender_params = mail_params(params);
                p.mail_from(&from.to_string(), &self.sender_params).await
            }
            Check::Rcpt {
                from,
                to,
                params,
                accepted,
            } => {
                let env = EnvelopeInfo {
                    sender: from.to_string(),
                    sender_params: self.sender_params.clone(),
                    recipients: accepted.iter().map(|m| m.to_string()).collect(),
                };
                p.rcpt(&env, &to.to_string(), &rcpt_params(params)).await
            }
        };
        match d {
            Decision::Continue | Decision::Accept => Verdict::Accept,
            Decision::Reject(r) | Decision::Tempfail(r) => Verdict::Reject(r),
        }
    }

    /// A message arrived: tell the tap (before [`data`](Self::data)).
    pub fn received(&self, body: &[u8]) {
        if let Some(tap) = &self.tap {
            tap.message(body);
        }
    }

    /// The data stage: the chain's verdict on the message, and its changes
    /// applied to `t` (headers to the body, recipients to the list) when
    /// the message is to be kept.
    pub async fn data(&mut self, t: &mut Transaction) -> DataVerdict {
        // The built-in rules first: a bounded header section, no loop.
        if let Some(r) = self.rules.message.check(&t.body) {
            if let Some(tap) = &self.tap {
                tap.data(&DataDecision {
                    outcome: DataOutcome::Reject(r.clone()),
                    changes: Vec::new(),
                });
            }
            return DataVerdict::Refuse(r);
        }
        let Some(p) = &mut self.policies else {
            return DataVerdict::Store { quarantine: None };
        };
        let env = EnvelopeInfo {
            sender: t.from.to_string(),
            sender_params: self.sender_params.clone(),
            recipients: t.recipients.iter().map(|r| r.to.to_string()).collect(),
        };
        let d = p.data(&env, &t.body).await;
        if let Some(tap) = &self.tap {
            tap.data(&d);
        }
        let quarantine = match d.outcome {
            DataOutcome::Reject(r) | DataOutcome::Tempfail(r) => return DataVerdict::Refuse(r),
            DataOutcome::Discard => return DataVerdict::Discard,
            DataOutcome::Quarantine(reason) => Some(reason),
            DataOutcome::Continue | DataOutcome::Accept => None,
        };
        if let Some(body) = changes::apply_headers(&t.body, &d.changes) {
            t.body = body;
        }
        for bad in changes::apply_recipients(&mut t.recipients, &d.changes) {
            tracing::warn!(address = %bad, "a policy added an invalid recipient; ignored");
        }
        if t.recipients.is_empty() {
            return DataVerdict::NoRecipients;
        }
        DataVerdict::Store { quarantine }
    }

    /// STARTTLS completed: the tap and the policies' session record learn
    /// the TLS parameters.
    pub fn tls_started(&mut self, version: &str, cipher: &str) {
        if let Some(tap) = &self.tap {
            tap.tls(version, cipher);
        }
        if let Some(p) = &mut self.policies {
            p.set_tls(Some((version.to_string(), cipher.to_string())));
        }
    }

    /// The session ended: tell the tap.
    pub fn end(&mut self) {
        if let Some(tap) = self.tap.take() {
            tap.end();
        }
    }
}
