//! Conversions between the host's vocabulary and the WIT records: the
//! session, envelope and TLS going in; verdicts, replies (made right for
//! their class by `fix_reply`), changes and routes coming out.

use crate::policy::bindings::types;
use crate::policy::host::clean;
use crate::policy::message::cut;
use crate::policy::{CallError, Change, Decision, EnvelopeInfo, SessionInfo, Stage};
use crate::route::{Route, TlsMode};
use crate::smtp::{Enhanced, Reply};

use super::*;

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

pub(super) fn wit_session(info: &SessionInfo) -> types::Session {
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
pub(super) fn wit_tls(tls: Option<&(String, String)>) -> Option<types::TlsInfo> {
    tls.map(|(version, cipher)| types::TlsInfo {
        version: version.clone(),
        cipher: cipher.clone(),
    })
}

pub(super) fn wit_params(params: &[(String, String)]) -> Vec<types::Param> {
    params
        .iter()
        .map(|(name, value)| types::Param {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub(super) fn wit_envelope(env: &EnvelopeInfo) -> types::Envelope {
    types::Envelope {
        sender: env.sender.clone(),
        sender_params: wit_params(&env.sender_params),
        recipients: env.recipients.clone(),
    }
}

/// A guest reply made right for its verdict: the code in the class
/// (`5` for reject, `4` for tempfail; else 550/451, logged), an enhanced
/// code of that class (else `X.7.1`), one clean line of bounded text.
pub(super) fn fix_reply(p: &LoadedPolicy, stage: Stage, r: &types::Reply, class: u16) -> Reply {
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
pub(super) fn count(p: &LoadedPolicy, v: &types::Verdict) {
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
pub(super) fn decide(p: &LoadedPolicy, stage: Stage, v: &types::Verdict) -> Option<Decision> {
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

pub(super) fn valid_field_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 76 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

pub(super) fn valid_address(a: &str) -> bool {
    a.len() <= 320 && crate::smtp::address::parse_mailbox(a).is_ok_and(|m| m.domain.is_some())
}

/// Validate the changes of one data-stage answer; drop (and log) the bad.
pub(super) fn convert_changes(
    p: &LoadedPolicy,
    changes: Vec<types::Change>,
    out: &mut Vec<Change>,
) {
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

pub(super) fn valid_host(h: &str) -> bool {
    h.parse::<std::net::IpAddr>().is_ok() || crate::smtp::address::parse_domain(h).is_ok()
}

/// A guest route as a delivery route: `None` for `default`.
pub(super) fn convert_route(p: &LoadedPolicy, r: types::Route) -> Result<Option<Route>, CallError> {
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
