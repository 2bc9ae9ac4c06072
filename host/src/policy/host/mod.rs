//! What a guest can reach: the data of one policy `Store` ([`HostState`])
//! and the host side of every import — `log`, `clock`, `metrics`, `kv`,
//! `dns`, the `message` resource — plus the empty WASI context.
//!
//! Each capability is checked on every call; one that was not granted
//! answers `access-denied` (never a trap). Invalid arguments answer
//! `invalid-argument`, a store or lookup that failed for now `temporary`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::Capability;
use crate::dns::DnsError;
use crate::policy::bindings::sluice::policy as wit;
use crate::policy::message::{MessageResource, cut};
use crate::policy::pool::Lease;
use crate::policy::tap::{self, HostCall, HostTap, Wire};
use crate::policy::{Services, Stage};

use wit::errors::HostError;

/// Most log lines one hook call may write (the contract's bound).
pub(crate) const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept, in octets (the contract's bound).
pub(crate) const MAX_LOG_LINE: usize = 4096;
/// Guest stdout/stderr kept per stream between two calls, in octets.
pub(crate) const MAX_OUTPUT: usize = 8 * 1024;
/// Distinct metric counters one policy may create.
pub(crate) const MAX_COUNTERS: usize = 256;
/// Most records one DNS answer hands to the guest.
pub(crate) const MAX_DNS_RECORDS: usize = 100;

/// The capabilities a policy was granted (log is always granted).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Grants {
    pub(crate) clock: bool,
    pub(crate) metrics: bool,
    pub(crate) kv: bool,
    pub(crate) dns: bool,
}

impl Grants {
    pub(crate) fn from(caps: &[Capability]) -> Self {
        let has = |c| caps.contains(&c);
        Self {
            clock: has(Capability::Clock),
            metrics: has(Capability::Metrics),
            kv: has(Capability::Kv),
            dns: has(Capability::Dns),
        }
    }
}

/// A policy's metric counters (names without the policy prefix).
#[derive(Debug, Default)]
pub(crate) struct GuestCounters(Mutex<BTreeMap<String, u64>>);

impl GuestCounters {
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn add(&self, name: &str, delta: u32) -> Result<(), HostError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(name) {
            *v = v.saturating_add(u64::from(delta));
            return Ok(());
        }
        if map.len() >= MAX_COUNTERS {
            return Err(HostError::InvalidArgument(format!(
                "a policy may have at most {MAX_COUNTERS} counters"
            )));
        }
        map.insert(name.to_string(), u64::from(delta));
        Ok(())
    }
}

/// The memory cap of one store, remembering a refusal so a failed call
/// can be told apart as "memory limit".
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory: usize,
    /// The size a refused growth asked for.
    pub(crate) refused: Option<usize>,
    /// The largest size any memory of the instance has grown to.
    pub(crate) peak: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = Some(desired);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused.get_or_insert(self.max_memory);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Where a call is: the stage of a hook, or loading (`describe`, `init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Load,
    Stage(Stage),
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Load => f.write_str("load"),
            Phase::Stage(s) => f.write_str(s.as_str()),
        }
    }
}

/// The data of one policy `Store`.
pub(crate) struct HostState {
    pub(crate) policy: Arc<str>,
    grants: Grants,
    services: Services,
    counters: Arc<GuestCounters>,
    pub(crate) phase: Phase,
    logs: u32,
    pub(crate) logs_dropped: u32,
    io_left: Duration,
    /// DNS lookups left in this call and in this session.
    dns_call_left: u32,
    dns_session_left: u32,
    pub(crate) ticks: u64,
    pub(crate) tick_budget: u64,
    pub(crate) limiter: Limiter,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    /// The session's recorder or replay source, when there is one (see
    /// [`super::tap`]).
    pub(crate) tap: Option<Arc<dyn HostTap>>,
    /// The pool slot of an instance outside a session (loading, a route
    /// call, idle warm); `None` in a session, whose reservation holds it.
    pub(crate) lease: Option<Lease>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("policy", &self.policy)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub(crate) fn new(
        policy: Arc<str>,
        grants: Grants,
        services: Services,
        counters: Arc<GuestCounters>,
        max_memory: usize,
    ) -> Self {
        let stdout = Capture::default();
        let stderr = Capture::default();
        // Nothing granted: no env, args, preopens or sockets; stdin closed;
        // stdout/stderr captured. The wall clock only with "clock".
        let mut b = WasiCtx::builder();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grants.clock {
            b.wall_clock(FrozenClock);
        }
        Self {
            policy,
            grants,
            services,
            counters,
            phase: Phase::Load,
            logs: 0,
            logs_dropped: 0,
            io_left: Duration::ZERO,
            dns_call_left: 0,
            // Until a session takes the instance (loading: `init`), only
            // the per-call cap.
            dns_session_left: u32::MAX,
            ticks: 0,
            tick_budget: 0,
            limiter: Limiter {
                max_memory,
                refused: None,
                peak: 0,
            },
            wasi: b.build(),
            table: ResourceTable::new(),
            stdout,
            stderr,
            tap: None,
            lease: None,
        }
    }

    /// Replay: the answer to `call(args)` from the tap, if it has one.
    fn tapped<T: Wire>(
        &self,
        call: &str,
        args: &[serde_json::Value],
    ) -> Option<Result<T, HostError>> {
        let tap = self.tap.as_ref()?;
        tap.answer(&self.policy, call, args)
            .map(|r| tap::from_result(call, r))
    }

    /// Record `call(args)` and its result `r` with the tap; return `r`.
    fn tap_record<T: Wire>(
        &self,
        call: &str,
        args: Vec<serde_json::Value>,
        r: Result<T, HostError>,
    ) -> Result<T, HostError> {
        if let Some(tap) = &self.tap {
            tap.host_call(
                &self.policy,
                HostCall {
                    call: call.to_string(),
                    args,
                    result: tap::call_result(&r),
                },
            );
        }
        r
    }

    /// A host call through the tap: answered by it, or made by `live`;
    /// recorded either way.
    /// `args` is made only when a tap is set (most sessions have none).
    fn through_tap<T: Wire>(
        &mut self,
        call: &str,
        args: impl FnOnce() -> Vec<serde_json::Value>,
        live: impl FnOnce(&mut Self) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        if self.tap.is_none() {
            return live(self);
        }
        let args = args();
        let r = match self.tapped(call, &args) {
            Some(r) => r,
            None => live(self),
        };
        self.tap_record(call, args, r)
    }

    /// Reset the per-session budgets when a session takes the instance.
    pub(crate) fn begin_session(&mut self, dns_lookups: u32) {
        self.dns_session_left = dns_lookups;
    }

    /// Reset the per-call budgets before a call.
    pub(crate) fn begin_call(
        &mut self,
        phase: Phase,
        tick_budget: u64,
        io: Duration,
        dns_lookups: u32,
    ) {
        self.phase = phase;
        self.logs = 0;
        self.logs_dropped = 0;
        self.io_left = io;
        self.dns_call_left = dns_lookups;
        self.ticks = 0;
        self.tick_budget = tick_budget;
        self.limiter.refused = None;
    }

    /// May this call make one more DNS lookup? Counts it when so.
    fn dns_allowed(&mut self) -> Result<(), HostError> {
        if !self.grants.dns {
            return Err(HostError::AccessDenied);
        }
        if self.io_left.is_zero() {
            return Err(HostError::Temporary(
                "this call's time for host lookups is used up".into(),
            ));
        }
        if self.dns_call_left == 0 {
            return Err(HostError::Temporary(
                "this call's DNS lookups are used up (max_dns_lookups_per_call)".into(),
            ));
        }
        if self.dns_session_left == 0 {
            return Err(HostError::Temporary(
                "this session's DNS lookups are used up (max_dns_lookups_per_session)".into(),
            ));
        }
        self.dns_call_left -= 1;
        self.dns_session_left -= 1;
        Ok(())
    }

    /// Run one lookup within what is left of this call's I/O time.
    async fn lookup<T>(
        &mut self,
        f: impl Future<Output = Result<Vec<T>, DnsError>>,
    ) -> Result<Vec<T>, HostError> {
        let started = Instant::now();
        let r = tokio::time::timeout(self.io_left, f).await;
        self.io_left = self.io_left.saturating_sub(started.elapsed());
        match r {
            Err(_) => {
                self.io_left = Duration::ZERO;
                Err(HostError::Temporary("DNS lookup timed out".into()))
            }
            Ok(Ok(mut v)) => {
                v.truncate(MAX_DNS_RECORDS);
                Ok(v)
            }
            Ok(Err(DnsError::NxDomain | DnsError::NoRecords)) => Ok(Vec::new()),
            Ok(Err(DnsError::Temporary(m))) => Err(HostError::Temporary(m)),
        }
    }

    fn message(
        &self,
        r: &Resource<MessageResource>,
    ) -> wasmtime::Result<Arc<super::message::ParsedMessage>> {
        Ok(self.table.get(r)?.0.clone())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Control characters (but tab) become spaces, so a guest cannot forge log
/// lines.
pub(crate) fn clean(s: &str, max: usize) -> String {
    cut(s, max)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

impl wit::errors::Host for HostState {}
impl wit::types::Host for HostState {}
impl wit::message::Host for HostState {}

mod clock;
mod dns;
mod kv;
mod log;
mod message;
mod metrics;
mod wasi;

pub(crate) use wasi::Capture;
use wasi::FrozenClock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_line_breaks() {
        assert_eq!(clean("a\r\nb\tc", 100), "a  b\tc");
        assert_eq!(clean("abc", 2), "ab");
    }
}
