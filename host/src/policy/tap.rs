//! The tap on what guests observe: every host call a policy makes (with its
//! arguments and result) and every hook's answer, for the recorder
//! (`crate::record`), and a place for replay to answer host calls from a
//! recording instead of the live services.
//!
//! A [`HostTap`] is set per SMTP session on its [`super::ChainSession`]
//! ([`super::ChainSession::set_tap`]); the chain hands it to the store of
//! each instance before a hook call, so host imports consult it. Without a
//! tap (the default) nothing here runs.
//!
//! Host calls go through the tap after the host's own checks (capability
//! grants, argument syntax), which depend only on the configuration: only
//! what comes from outside — a DNS answer, the key-value store, the clock,
//! the metrics registry — is recorded and replayed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Stage;
use super::bindings::Answer;
use super::bindings::sluice::policy::{clock, errors::HostError};
use super::bindings::types;
use super::{CallError, message::cut};
use crate::smtp::base64;

/// One host call as recorded: the import (`dns.a`, `kv.incr`, …), its
/// arguments, and what the guest got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostCall {
    /// `dns.a`, `dns.aaaa`, `dns.mx`, `dns.txt`, `dns.ptr`, `kv.get`,
    /// `kv.set`, `kv.incr`, `kv.delete`, `clock.now`,
    /// `metrics.counter-add`.
    pub call: String,
    /// The arguments, in the order of the WIT signature.
    pub args: Vec<Value>,
    /// The result.
    pub result: CallResult,
}

/// The result of a host call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallResult {
    /// Success, with the value (`null` for none).
    Ok(Value),
    /// `host-error::temporary` with its text.
    Temporary(String),
    /// `host-error::invalid-argument` with its text.
    Invalid(String),
    /// `host-error::access-denied`.
    Denied,
}

/// What one policy answered at one stage, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// The policy's name in the chain.
    pub policy: String,
    /// Its verdict, unless the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictRecord>,
    /// Data stage: the changes it asked for, as the guest gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Why the call failed (trap, deadline, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The host calls it made during the hook, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<HostCall>,
}

/// A guest verdict as recorded (before the host corrects reply classes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VerdictRecord {
    /// Ask the next policy.
    Continue,
    /// Accept, skip the rest of the chain.
    Accept,
    /// Refuse permanently.
    Reject {
        /// Reply code.
        code: u16,
        /// Enhanced code as given.
        enhanced: String,
        /// Text as given.
        text: String,
    },
    /// Refuse temporarily.
    Tempfail {
        /// Reply code.
        code: u16,
        /// Enhanced code as given.
        enhanced: String,
        /// Text as given.
        text: String,
    },
    /// Say 250 and drop.
    Discard,
    /// Say 250 and hold.
    Quarantine {
        /// The reason.
        reason: String,
    },
}

/// Receives what guests observe, and may answer host calls (replay).
///
/// Called from inside host imports (on the session's task, one call at a
/// time per session): implementations must be quick and must not block.
pub trait HostTap: Send + Sync + std::fmt::Debug {
    /// Before the host makes `call(args)` for `policy`: `Some` answers it
    /// from here (replay), `None` lets the host make it live.
    fn answer(&self, policy: &str, call: &str, args: &[Value]) -> Option<CallResult>;
    /// A host call was made (live or answered): its record.
    fn host_call(&self, policy: &str, call: HostCall);
    /// A policy's hook at `stage` returned (or failed).
    fn policy_done(&self, stage: Stage, result: PolicyResult);
}

/// Longest text kept from a guest in a record.
const MAX_TEXT: usize = 1024;

fn text(s: &str) -> String {
    cut(s, MAX_TEXT).to_string()
}

fn verdict_record(v: &types::Verdict) -> VerdictRecord {
    let reply = |r: &types::Reply| (r.code, text(&r.enhanced), text(&r.text));
    match v {
        types::Verdict::Continue => VerdictRecord::Continue,
        types::Verdict::Accept => VerdictRecord::Accept,
        types::Verdict::Reject(r) => {
            let (code, enhanced, text) = reply(r);
            VerdictRecord::Reject {
                code,
                enhanced,
                text,
            }
        }
        types::Verdict::Tempfail(r) => {
            let (code, enhanced, text) = reply(r);
            VerdictRecord::Tempfail {
                code,
                enhanced,
                text,
            }
        }
        types::Verdict::Discard => VerdictRecord::Discard,
        types::Verdict::Quarantine(r) => VerdictRecord::Quarantine { reason: text(r) },
    }
}

fn change_text(c: &types::Change) -> String {
    match c {
        types::Change::AddHeader(h) => format!("add-header {}: {}", text(&h.name), text(&h.value)),
        types::Change::RemoveHeader(n) => format!("remove-header {}", text(n)),
        types::Change::AddRecipient(a) => format!("add-rcpt {}", text(a)),
        types::Change::RemoveRecipient(a) => format!("remove-rcpt {}", text(a)),
    }
}

/// Tell `tap` how one hook call of `policy` ended. `calls` is filled by the
/// tap itself from the host calls it saw.
pub(crate) fn report(
    tap: &dyn HostTap,
    policy: &str,
    stage: Stage,
    result: &Result<Answer, CallError>,
) {
    let mut r = PolicyResult {
        policy: policy.to_string(),
        verdict: None,
        changes: Vec::new(),
        error: None,
        calls: Vec::new(),
    };
    match result {
        Ok(Answer::Verdict(v)) => r.verdict = Some(verdict_record(v)),
        Ok(Answer::Data(d)) => {
            r.verdict = Some(verdict_record(&d.verdict));
            r.changes = d.changes.iter().take(100).map(change_text).collect();
        }
        Ok(_) => return,
        Err(e) => r.error = Some(e.to_string()),
    }
    tap.policy_done(stage, r);
}

/// A host-call result as the recording stores it.
pub(crate) fn call_result<T: Wire>(r: &Result<T, HostError>) -> CallResult {
    match r {
        Ok(v) => CallResult::Ok(v.to_value()),
        Err(HostError::Temporary(m)) => CallResult::Temporary(m.clone()),
        Err(HostError::InvalidArgument(m)) => CallResult::Invalid(m.clone()),
        Err(HostError::AccessDenied) => CallResult::Denied,
    }
}

/// A recorded result as the guest receives it; a value of the wrong shape
/// (a recording edited by hand, or for another call) is a `temporary`
/// error naming the call.
pub(crate) fn from_result<T: Wire>(call: &str, r: CallResult) -> Result<T, HostError> {
    match r {
        CallResult::Ok(v) => T::from_value(&v).ok_or_else(|| {
            HostError::Temporary(format!(
                "replay: the recorded result of {call} has the wrong shape"
            ))
        }),
        CallResult::Temporary(m) => Err(HostError::Temporary(m)),
        CallResult::Invalid(m) => Err(HostError::InvalidArgument(m)),
        CallResult::Denied => Err(HostError::AccessDenied),
    }
}

/// A host-call value and its JSON form in a recording.
pub(crate) trait Wire: Sized {
    fn to_value(&self) -> Value;
    fn from_value(v: &Value) -> Option<Self>;
}

impl Wire for () {
    fn to_value(&self) -> Value {
        Value::Null
    }
    fn from_value(_: &Value) -> Option<Self> {
        Some(())
    }
}

impl Wire for i32 {
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        v.as_i64().and_then(|n| i32::try_from(n).ok())
    }
}

impl Wire for Vec<String> {
    fn to_value(&self) -> Value {
        Value::from(self.clone())
    }
    fn from_value(v: &Value) -> Option<Self> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    }
}

impl Wire for Vec<(u16, String)> {
    fn to_value(&self) -> Value {
        Value::Array(
            self.iter()
                .map(|(p, x)| serde_json::json!([p, x]))
                .collect(),
        )
    }
    fn from_value(v: &Value) -> Option<Self> {
        v.as_array()?
            .iter()
            .map(|pair| {
                let pair = pair.as_array()?;
                let pref = u16::try_from(pair.first()?.as_u64()?).ok()?;
                Some((pref, pair.get(1)?.as_str()?.to_string()))
            })
            .collect()
    }
}

impl Wire for Option<Vec<u8>> {
    fn to_value(&self) -> Value {
        match self {
            None => Value::Null,
            Some(b) => bytes_value(b),
        }
    }
    fn from_value(v: &Value) -> Option<Self> {
        if v.is_null() {
            return Some(None);
        }
        value_bytes(v).map(Some)
    }
}

impl Wire for clock::Timestamp {
    fn to_value(&self) -> Value {
        serde_json::json!({"seconds": self.seconds, "millis": self.millis})
    }
    fn from_value(v: &Value) -> Option<Self> {
        Some(clock::Timestamp {
            seconds: u32::try_from(v.get("seconds")?.as_u64()?).ok()?,
            millis: u16::try_from(v.get("millis")?.as_u64()?).ok()?.min(999),
        })
    }
}

/// Octets in JSON: a string when they are UTF-8, else `{"base64": "…"}`.
pub fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => serde_json::json!({ "base64": base64::encode(b) }),
    }
}

/// The octets of [`bytes_value`]'s JSON.
pub fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Object(o) => base64::decode(o.get("base64")?.as_str()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mx = vec![(10u16, "mx.example".to_string())];
        assert_eq!(Vec::<(u16, String)>::from_value(&mx.to_value()), Some(mx));
        let b: Option<Vec<u8>> = Some(vec![0xff, 1]);
        assert_eq!(Option::<Vec<u8>>::from_value(&b.to_value()), Some(b));
        assert_eq!(Option::<Vec<u8>>::from_value(&Value::Null), Some(None));
        let r: Result<i32, HostError> = Err(HostError::Temporary("x".into()));
        assert!(matches!(
            from_result::<i32>("kv.incr", call_result(&r)),
            Err(HostError::Temporary(m)) if m == "x"
        ));
        assert!(from_result::<i32>("kv.incr", CallResult::Ok(Value::from("no"))).is_err());
    }
}
