//! What a guest can reach: the data of one policy `Store` ([`HostState`])
//! and the host side of every import — `log`, `clock`, `metrics`, `kv`,
//! `dns`, the `message` resource — plus the empty WASI context.
//!
//! Each capability is checked on every call; one that was not granted
//! answers `access-denied` (never a trap). Invalid arguments answer
//! `invalid-argument`, a store or lookup that failed for now `temporary`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::policy::{clock, dns, errors, kv, log, message, metrics, types};
use super::kv::KvError;
use super::message::{MessageResource, cut};
use super::tap::{self, HostCall, HostTap, Wire};
use super::{Services, Stage};
use crate::config::Capability;
use crate::dns::DnsError;

use errors::HostError;

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

/// Guest stdout or stderr: the first [`MAX_OUTPUT`] octets since the last
/// drain are kept, the rest counted and dropped. Writes never fail, so a
/// chatty guest is never trapped for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<CaptureBuf>>);

#[derive(Debug, Default)]
struct CaptureBuf {
    data: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT.saturating_sub(b.data.len());
        let keep = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..keep]);
        b.dropped += bytes.len() - keep;
    }

    /// What was written since the last drain, and how much was dropped.
    pub(crate) fn drain(&self) -> Option<(String, usize)> {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if b.data.is_empty() && b.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&b.data).into_owned();
        let dropped = b.dropped;
        b.data.clear();
        b.dropped = 0;
        Some((text, dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// The WASI wall clock of a policy without the `clock` capability: always
/// the Unix epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
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

    /// Reset the per-call budgets before a call.
    pub(crate) fn begin_call(&mut self, phase: Phase, tick_budget: u64, io: Duration) {
        self.phase = phase;
        self.logs = 0;
        self.logs_dropped = 0;
        self.io_left = io;
        self.ticks = 0;
        self.tick_budget = tick_budget;
        self.limiter.refused = None;
    }

    fn dns_allowed(&self) -> Result<(), HostError> {
        if !self.grants.dns {
            return Err(HostError::AccessDenied);
        }
        if self.io_left.is_zero() {
            return Err(HostError::Temporary(
                "this call's time for host lookups is used up".into(),
            ));
        }
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

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        if self.logs >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return;
        }
        self.logs += 1;
        // Below the log level: nothing to clean or format.
        let enabled = match level {
            log::Level::Trace => tracing::enabled!(target: "sluice::policy", tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(target: "sluice::policy", tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(target: "sluice::policy", tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(target: "sluice::policy", tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(target: "sluice::policy", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let msg = clean(&message, MAX_LOG_LINE);
        let (policy, stage) = (&*self.policy, self.phase);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "sluice::policy", policy, %stage, "{msg}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "sluice::policy", policy, %stage, "{msg}")
            }
            log::Level::Info => tracing::info!(target: "sluice::policy", policy, %stage, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "sluice::policy", policy, %stage, "{msg}"),
            log::Level::Error => {
                tracing::error!(target: "sluice::policy", policy, %stage, "{msg}")
            }
        }
    }
}

impl clock::Host for HostState {
    fn now(&mut self) -> Result<clock::Timestamp, HostError> {
        if !self.grants.clock {
            return Err(HostError::AccessDenied);
        }
        self.through_tap("clock.now", Vec::new, |_| {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok(clock::Timestamp {
                seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                millis: d.subsec_millis() as u16,
            })
        })
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u32) -> Result<(), HostError> {
        if !self.grants.metrics {
            return Err(HostError::AccessDenied);
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(HostError::InvalidArgument(
                "a counter name is 1 to 64 of [a-z0-9_]".into(),
            ));
        }
        let args = || vec![name.clone().into(), delta.into()];
        self.through_tap("metrics.counter-add", args, |s| {
            s.counters.add(&name, delta)
        })
    }
}

fn kv_error(e: KvError) -> HostError {
    match e {
        KvError::InvalidArgument(m) => HostError::InvalidArgument(m),
        KvError::Full => HostError::Temporary(e.to_string()),
    }
}

fn ttl(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        self.through_tap(
            "kv.get",
            || vec![key.clone().into()],
            |s| s.services.kv.get(&s.policy, &key).map_err(kv_error),
        )
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32) -> Result<(), HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        // Made here (`live` takes the value); only for a tapped session.
        let args = if self.tap.is_some() {
            vec![
                key.clone().into(),
                tap::bytes_value(&value),
                ttl_seconds.into(),
            ]
        } else {
            Vec::new()
        };
        self.through_tap(
            "kv.set",
            move || args,
            |s| {
                s.services
                    .kv
                    .set(&s.policy, &key, value, ttl(ttl_seconds))
                    .map_err(kv_error)
            },
        )
    }

    fn incr(&mut self, key: String, delta: i32, ttl_seconds: u32) -> Result<i32, HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        let args = || vec![key.clone().into(), delta.into(), ttl_seconds.into()];
        self.through_tap("kv.incr", args, |s| {
            s.services
                .kv
                .incr(&s.policy, &key, delta, ttl(ttl_seconds))
                .map_err(kv_error)
        })
    }

    fn delete(&mut self, key: String) -> Result<(), HostError> {
        if !self.grants.kv {
            return Err(HostError::AccessDenied);
        }
        self.through_tap(
            "kv.delete",
            || vec![key.clone().into()],
            |s| s.services.kv.delete(&s.policy, &key).map_err(kv_error),
        )
    }
}

/// A domain name as DNS takes it: 1 to 253 octets of labels of 1 to 63
/// letters, digits, `-` and `_`, an optional final dot; not an address.
fn check_name(name: &str) -> Result<(), HostError> {
    let bad = |why: &str| {
        Err(HostError::InvalidArgument(format!(
            "{why}: {:?}",
            cut(name, 300)
        )))
    };
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 {
        return bad("not a domain name");
    }
    if n.parse::<IpAddr>().is_ok() {
        return bad("an address, not a name (use ptr)");
    }
    for label in n.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("not a domain name");
        }
    }
    Ok(())
}

impl dns::Host for HostState {
    async fn a(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.a", &[name.clone().into()]) {
            return self.tap_record("dns.a", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ips(&name)).await.map(|ips| {
            ips.into_iter()
                .filter(IpAddr::is_ipv4)
                .map(|ip| ip.to_string())
                .collect()
        });
        self.tap_record("dns.a", vec![name.into()], r)
    }

    async fn aaaa(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.aaaa", &[name.clone().into()]) {
            return self.tap_record("dns.aaaa", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ips(&name)).await.map(|ips| {
            ips.into_iter()
                .filter(IpAddr::is_ipv6)
                .map(|ip| ip.to_string())
                .collect()
        });
        self.tap_record("dns.aaaa", vec![name.into()], r)
    }

    async fn mx(&mut self, name: String) -> Result<Vec<(u16, String)>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.mx", &[name.clone().into()]) {
            return self.tap_record("dns.mx", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.mx(&name)).await.map(|mx| {
            mx.into_iter()
                .map(|m| {
                    let exchange = if m.exchange.is_empty() {
                        ".".to_string()
                    } else {
                        m.exchange
                    };
                    (m.preference, exchange)
                })
                .collect()
        });
        self.tap_record("dns.mx", vec![name.into()], r)
    }

    async fn txt(&mut self, name: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        check_name(&name)?;
        if let Some(r) = self.tapped("dns.txt", &[name.clone().into()]) {
            return self.tap_record("dns.txt", vec![name.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.txt(&name)).await;
        self.tap_record("dns.txt", vec![name.into()], r)
    }

    async fn ptr(&mut self, ip: String) -> Result<Vec<String>, HostError> {
        self.dns_allowed()?;
        let addr: IpAddr = ip.parse().map_err(|_| {
            HostError::InvalidArgument(format!("not an IP address: {:?}", cut(&ip, 100)))
        })?;
        if let Some(r) = self.tapped("dns.ptr", &[ip.clone().into()]) {
            return self.tap_record("dns.ptr", vec![ip.into()], r);
        }
        let resolver = self.services.resolver.clone();
        let r = self.lookup(resolver.ptr(addr)).await;
        self.tap_record("dns.ptr", vec![ip.into()], r)
    }
}

impl errors::Host for HostState {}
impl types::Host for HostState {}
impl message::Host for HostState {}

impl message::HostMessage for HostState {
    fn size(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<u32> {
        Ok(self.message(&m)?.size())
    }

    fn header(
        &mut self,
        m: Resource<MessageResource>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.header(&name))
    }

    fn headers(
        &mut self,
        m: Resource<MessageResource>,
        max: u32,
    ) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .message(&m)?
            .headers(max)
            .map(|(name, value)| types::Header {
                name: name.to_string(),
                value,
            })
            .collect())
    }

    fn subject(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&m)?.subject())
    }

    fn from(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.from())
    }

    fn to(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.to())
    }

    fn parts(
        &mut self,
        m: Resource<MessageResource>,
        max: u32,
    ) -> wasmtime::Result<Vec<message::PartInfo>> {
        Ok(self
            .message(&m)?
            .parts(max)
            .map(|p| message::PartInfo {
                content_type: p.content_type.clone(),
                filename: p.filename.clone(),
                size: p.size,
                is_attachment: p.is_attachment,
            })
            .collect())
    }

    fn text(&mut self, m: Resource<MessageResource>, max_bytes: u32) -> wasmtime::Result<String> {
        Ok(self.message(&m)?.text(max_bytes))
    }

    fn raw(
        &mut self,
        m: Resource<MessageResource>,
        offset: u32,
        len: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&m)?.raw(offset, len))
    }

    fn drop(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("example.test").is_ok());
        assert!(check_name("2.0.0.127.zen.example.").is_ok());
        assert!(check_name("_dmarc.example.test").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            "1.2.3.4",
            "::1",
            "a b.test",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_name(bad), Err(HostError::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn capture_is_bounded() {
        let c = Capture::default();
        assert!(c.drain().is_none());
        c.push(&vec![b'x'; MAX_OUTPUT + 10]);
        let (text, dropped) = c.drain().unwrap();
        assert_eq!(text.len(), MAX_OUTPUT);
        assert_eq!(dropped, 10);
        assert!(c.drain().is_none());
    }

    #[test]
    fn clean_removes_line_breaks() {
        assert_eq!(clean("a\r\nb\tc", 100), "a  b\tc");
        assert_eq!(clean("abc", 2), "ab");
    }
}
