//! DNS for delivery: the [`Resolver`] trait, its hickory implementation
//! ([`HickoryResolver`]), static answers from the configuration
//! ([`StaticResolver`]), and RFC 5321 §5.1 MX selection ([`mx_targets`]).
//!
//! Every failure is classified by type into a [`DnsError`]: the name does
//! not exist (NXDOMAIN — bounce), the name exists without records of the
//! asked type (NODATA — e.g. fall back to the implicit MX), or no answer
//! could be had for now (SERVFAIL, REFUSED, timeouts, network errors — try
//! later). [`mx_targets`] turns those into the hosts to try, or into a
//! bounce or a deferral with an enhanced status code ([`MxError`]).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::Outcome;
use crate::config::DnsConfig;
use crate::smtp::Enhanced;

/// Most MX hosts of one domain looked up by [`mx_targets`] (best first), so
/// a domain with hundreds of MX records cannot make one attempt resolve
/// them all.
pub const MAX_MX_HOSTS: usize = 10;

/// Retries hickory makes after a failed query (SERVFAIL, timeout, network
/// error), at most; the system configuration may ask for fewer. One lookup
/// takes at most about `(MAX_ATTEMPTS + 1) × timeout`.
const MAX_ATTEMPTS: usize = 2;

/// DNS errors, classified by type (never by message text).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN), or cannot exist (it is not a
    /// valid domain name): permanent.
    #[error("no such domain (NXDOMAIN)")]
    NxDomain,
    /// The name exists but has no records of this type (NODATA).
    #[error("no records of the requested type")]
    NoRecords,
    /// SERVFAIL, REFUSED, a timeout, a network error: try later.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

/// Why [`HickoryResolver::from_config`] could not build a resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// No name servers were configured and the system configuration
    /// (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system resolver configuration (/etc/resolv.conf)")]
    SystemConfig(#[source] NetError),
    /// hickory refused the configuration.
    #[error("cannot build the DNS resolver")]
    Build(#[source] NetError),
}

/// The future every [`Resolver`] method returns.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// Lower is better.
    pub preference: u16,
    /// The mail exchanger, lower case, without the trailing dot; `""` for
    /// the null MX `"."` (RFC 7505).
    pub exchange: String,
}

/// DNS lookups, as delivery and policies need them.
///
/// Names may be given in any case, with or without the trailing dot; they
/// are always looked up as fully qualified names (no search list). Names
/// returned are lower case without the trailing dot.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// The MX records of `domain`, in answer order.
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>>;

    /// The A and AAAA records of `host` together. [`DnsError::NoRecords`]
    /// only if there are neither, [`DnsError::NxDomain`] if the name does
    /// not exist. An IP address given as `host` is returned as is.
    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>>;

    /// The TXT records of `name`, each one's character-strings joined.
    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>>;

    /// The PTR records of `ip` (its host names).
    fn ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>>;
}

/// A [`Resolver`] over hickory: the configured name servers (UDP, then TCP
/// for truncated answers) or the system's, with hickory's TTL-bound cache.
///
/// The hosts file is not consulted (mail routing follows DNS only; use
/// `[dns.a]` for local overrides). Addresses come IPv4 first, then IPv6.
#[derive(Debug, Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// Build from `[dns]`: `nameservers` (each queried over UDP and TCP on
    /// its port), or the system configuration when empty; `timeout` per
    /// query, with at most two retries (fewer if `/etc/resolv.conf` says so).
    pub fn from_config(cfg: &DnsConfig) -> Result<Self, DnsSetupError> {
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsSetupError::SystemConfig)?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = cfg.timeout;
        opts.attempts = opts.attempts.min(MAX_ATTEMPTS);
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(DnsSetupError::Build)?;
        Ok(Self { inner })
    }

    /// The records of `rtype` at `name`; an empty answer is NODATA.
    async fn lookup(&self, name: Name, rtype: RecordType) -> Result<Vec<RData>, DnsError> {
        let lookup = self.inner.lookup(name, rtype).await.map_err(classify)?;
        let data: Vec<RData> = lookup
            .answers()
            .iter()
            .filter(|record| record.record_type() == rtype)
            .map(|record| record.data.clone())
            .collect();
        if data.is_empty() {
            Err(DnsError::NoRecords)
        } else {
            Ok(data)
        }
    }

    async fn lookup_mx(&self, domain: &str) -> Result<Vec<Mx>, DnsError> {
        let data = self.lookup(fqdn(domain)?, RecordType::MX).await?;
        Ok(data
            .into_iter()
            .filter_map(|rdata| match rdata {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: name_to_string(&mx.exchange),
                }),
                _ => None,
            })
            .collect())
    }

    async fn lookup_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![ip]);
        }
        let name = fqdn(host)?;
        let (v4, v6) = tokio::join!(
            self.lookup(name.clone(), RecordType::A),
            self.lookup(name, RecordType::AAAA),
        );
        let addresses = |result: Result<Vec<RData>, DnsError>| {
            result.map(|data| {
                data.into_iter()
                    .filter_map(|rdata| match rdata {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect()
            })
        };
        merge_addresses(addresses(v4), addresses(v6))
    }

    async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let data = self.lookup(fqdn(name)?, RecordType::TXT).await?;
        Ok(data
            .into_iter()
            .filter_map(|rdata| match rdata {
                RData::TXT(txt) => {
                    Some(String::from_utf8_lossy(&txt.txt_data.concat()).into_owned())
                }
                _ => None,
            })
            .collect())
    }

    async fn lookup_ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut name = Name::from(ip);
        name.set_fqdn(true);
        let data = self.lookup(name, RecordType::PTR).await?;
        Ok(data
            .into_iter()
            .filter_map(|rdata| match rdata {
                RData::PTR(ptr) => Some(name_to_string(&ptr.0)),
                _ => None,
            })
            .collect())
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>> {
        Box::pin(self.lookup_mx(domain))
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(self.lookup_ips(host))
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(self.lookup_txt(name))
    }

    fn ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(self.lookup_ptr(ip))
    }
}

/// Map a hickory error to its kind. A negative answer carries the response
/// code: NXDOMAIN → [`DnsError::NxDomain`], NOERROR (NODATA) →
/// [`DnsError::NoRecords`]. Everything else — an error response code
/// (SERVFAIL, REFUSED, FORMERR, …), a timeout, I/O, a malformed or
/// truncated answer, no usable server — is [`DnsError::Temporary`].
fn classify(err: NetError) -> DnsError {
    match &err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match *response_code {
                ResponseCode::NXDomain => DnsError::NxDomain,
                ResponseCode::NoError => DnsError::NoRecords,
                code => DnsError::Temporary(format!("response code {code}")),
            }
        }
        _ => DnsError::Temporary(err.to_string()),
    }
}

/// Join the A and AAAA answers: any address wins; otherwise a temporary
/// failure of either wins over NXDOMAIN (never bounce on half an answer),
/// and NXDOMAIN over NODATA.
fn merge_addresses(
    v4: Result<Vec<IpAddr>, DnsError>,
    v6: Result<Vec<IpAddr>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut temporary = None;
    let mut nxdomain = false;
    for result in [v4, v6] {
        match result {
            Ok(found) => {
                for ip in found {
                    if !addrs.contains(&ip) {
                        addrs.push(ip);
                    }
                }
            }
            Err(DnsError::Temporary(e)) => {
                temporary.get_or_insert(e);
            }
            Err(DnsError::NxDomain) => nxdomain = true,
            Err(DnsError::NoRecords) => {}
        }
    }
    match (addrs.is_empty(), temporary) {
        (false, _) => Ok(addrs),
        (true, Some(e)) => Err(DnsError::Temporary(e)),
        (true, None) if nxdomain => Err(DnsError::NxDomain),
        (true, None) => Err(DnsError::NoRecords),
    }
}

/// `name` as a fully qualified hickory name; an invalid name cannot exist.
fn fqdn(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(DnsError::NxDomain);
    }
    let parsed = if trimmed.is_ascii() {
        // Lenient: keeps `_dmarc` style labels that IDNA would refuse.
        Name::from_ascii(trimmed)
    } else {
        Name::from_utf8(trimmed)
    };
    let mut parsed = parsed.map_err(|_| DnsError::NxDomain)?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// Lower case, without the trailing dot (the root becomes `""`).
fn name_to_string(name: &Name) -> String {
    normalize(&name.to_ascii())
}

/// Lower case, without the trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `host` when it is an IP address (`192.0.2.1`, `2001:db8::1`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

/// Answers from `[dns.mx]` and `[dns.a]`, and everything else from an
/// inner resolver.
///
/// Names match case-insensitively, trailing dot ignored. `[dns.mx]` lists
/// exchanges in preference order; they get preferences 10, 20, 30, …; an
/// exchange `"."` is the null MX; an empty list means "no MX" (so the
/// implicit MX applies). An empty `[dns.a]` list means "no addresses".
///
/// [`StaticResolver::only`] has no inner resolver: a name listed in either
/// table exists (NODATA for what is not listed), any other is NXDOMAIN.
#[derive(Debug, Clone)]
pub struct StaticResolver {
    mx: HashMap<String, Vec<Mx>>,
    a: HashMap<String, Vec<IpAddr>>,
    inner: Option<Arc<dyn Resolver>>,
}

impl StaticResolver {
    /// Static answers from `cfg`, the rest from `inner`.
    pub fn new(cfg: &DnsConfig, inner: Arc<dyn Resolver>) -> Self {
        Self::build(cfg, Some(inner))
    }

    /// Static answers from `cfg` only (for tests and closed setups).
    pub fn only(cfg: &DnsConfig) -> Self {
        Self::build(cfg, None)
    }

    fn build(cfg: &DnsConfig, inner: Option<Arc<dyn Resolver>>) -> Self {
        let mx = cfg
            .mx
            .iter()
            .map(|(domain, exchanges)| {
                let records = exchanges
                    .iter()
                    .enumerate()
                    .map(|(i, exchange)| Mx {
                        preference: u16::try_from((i + 1) * 10).unwrap_or(u16::MAX),
                        exchange: normalize(exchange),
                    })
                    .collect();
                (normalize(domain), records)
            })
            .collect();
        let a = cfg
            .a
            .iter()
            .map(|(host, addrs)| (normalize(host), addrs.clone()))
            .collect();
        Self { mx, a, inner }
    }

    /// Whether `name` (normalised) is in either table.
    fn listed(&self, name: &str) -> bool {
        self.mx.contains_key(name) || self.a.contains_key(name)
    }

    /// The answer for a name in neither table, without an inner resolver.
    fn unlisted<T>(&self, name: &str) -> Result<T, DnsError> {
        if self.listed(name) {
            Err(DnsError::NoRecords)
        } else {
            Err(DnsError::NxDomain)
        }
    }
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>> {
        Box::pin(async move {
            let key = normalize(domain);
            match (self.mx.get(&key), &self.inner) {
                (Some(records), _) if records.is_empty() => Err(DnsError::NoRecords),
                (Some(records), _) => Ok(records.clone()),
                (None, Some(inner)) => inner.mx(domain).await,
                (None, None) => self.unlisted(&key),
            }
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move {
            if let Some(ip) = ip_literal(host) {
                return Ok(vec![ip]);
            }
            let key = normalize(host);
            match (self.a.get(&key), &self.inner) {
                (Some(addrs), _) if addrs.is_empty() => Err(DnsError::NoRecords),
                (Some(addrs), _) => Ok(addrs.clone()),
                (None, Some(inner)) => inner.ips(host).await,
                (None, None) => self.unlisted(&key),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move {
            match &self.inner {
                Some(inner) => inner.txt(name).await,
                None => self.unlisted(&normalize(name)),
            }
        })
    }

    fn ptr<'a>(&'a self, ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move {
            match &self.inner {
                Some(inner) => inner.ptr(ip).await,
                None => Err(DnsError::NxDomain),
            }
        })
    }
}

/// The resolver `[dns]` asks for: hickory, under the static answers of
/// `[dns.mx]` and `[dns.a]` when there are any.
pub fn from_config(cfg: &DnsConfig) -> Result<Arc<dyn Resolver>, DnsSetupError> {
    let hickory: Arc<dyn Resolver> = Arc::new(HickoryResolver::from_config(cfg)?);
    if cfg.mx.is_empty() && cfg.a.is_empty() {
        Ok(hickory)
    } else {
        Ok(Arc::new(StaticResolver::new(cfg, hickory)))
    }
}

/// One host to try, with its addresses, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name (lower case), or the address literal as written.
    pub host: String,
    /// Its addresses, in the resolver's order.
    pub addrs: Vec<IpAddr>,
}

/// Why a domain has no usable targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// Permanent: a DSN is due.
    #[error("{status} {text}")]
    Bounce {
        /// Enhanced status, e.g. 5.1.2.
        status: Enhanced,
        /// Human-readable reason.
        text: String,
    },
    /// Temporary: try again later.
    #[error("{status} {text}")]
    Defer {
        /// Enhanced status, e.g. 4.4.3.
        status: Enhanced,
        /// Human-readable reason.
        text: String,
    },
}

impl MxError {
    /// The enhanced status code.
    pub fn status(&self) -> Enhanced {
        match self {
            MxError::Bounce { status, .. } | MxError::Defer { status, .. } => *status,
        }
    }

    /// The reason.
    pub fn text(&self) -> &str {
        match self {
            MxError::Bounce { text, .. } | MxError::Defer { text, .. } => text,
        }
    }

    /// As the outcome of a delivery attempt (no remote host involved).
    pub fn into_outcome(self) -> Outcome {
        match self {
            MxError::Bounce { status, text } => Outcome::fail(status, text),
            MxError::Defer { status, text } => Outcome::defer(status, text),
        }
    }
}

/// 5.1.2: bad destination system address (no such domain).
const NO_SUCH_DOMAIN: Enhanced = Enhanced(5, 1, 2);
/// 5.1.3: bad destination address syntax.
const BAD_SYNTAX: Enhanced = Enhanced(5, 1, 3);
/// 5.1.10: the domain publishes a null MX (RFC 7505 §4.2).
const NULL_MX: Enhanced = Enhanced(5, 1, 10);
/// 4.4.3: directory server failure (DNS, for now).
const DNS_TEMPORARY: Enhanced = Enhanced(4, 4, 3);
/// 5.4.4: unable to route.
const UNROUTABLE: Enhanced = Enhanced(5, 4, 4);
/// 5.4.6: routing loop detected.
const MAIL_LOOP: Enhanced = Enhanced(5, 4, 6);

fn bounce(status: Enhanced, text: String) -> MxError {
    MxError::Bounce { status, text }
}

fn defer(text: String) -> MxError {
    MxError::Defer {
        status: DNS_TEMPORARY,
        text,
    }
}

/// RFC 5321 §5.1: the hosts to try for `domain`, best first.
///
/// - The MX records, sorted by preference, hosts of equal preference in
///   random order; with no MX records (NODATA), the implicit MX: the domain
///   itself at preference 0. NXDOMAIN bounces (5.1.2); a temporary failure
///   defers (4.4.3).
/// - A null MX (RFC 7505: the only MX is `"."`) bounces with 5.1.10; a `"."`
///   among other MX records is ignored.
/// - Each host's addresses (A and AAAA) are looked up, at most
///   [`MAX_MX_HOSTS`] hosts. A host that does not resolve is skipped. If
///   none resolves: a temporary failure of any defers (4.4.3), otherwise
///   it bounces (5.4.4; 5.1.2 for the implicit MX).
/// - Mail loops: a host with an address for which `is_self` holds is us.
///   We and every host with a preference not better than ours are dropped;
///   if that leaves nothing, it bounces (5.4.6).
/// - An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is its own
///   single target.
pub async fn mx_targets(
    resolver: &dyn Resolver,
    domain: &str,
    is_self: &(dyn Fn(IpAddr) -> bool + Sync),
) -> Result<Vec<Target>, MxError> {
    let domain = normalize(domain);
    if domain.starts_with('[') {
        return literal_target(&domain, is_self);
    }
    let (hosts, implicit) = match resolver.mx(&domain).await {
        Ok(records) if !records.is_empty() => {
            let real: Vec<Mx> = records
                .into_iter()
                .map(|mx| Mx {
                    exchange: normalize(&mx.exchange),
                    ..mx
                })
                .filter(|mx| !mx.exchange.is_empty())
                .collect();
            if real.is_empty() {
                return Err(bounce(
                    NULL_MX,
                    format!("domain {domain} does not accept mail (null MX)"),
                ));
            }
            (by_preference(real), false)
        }
        Ok(_) | Err(DnsError::NoRecords) => {
            let implicit = Mx {
                preference: 0,
                exchange: domain.clone(),
            };
            (vec![implicit], true)
        }
        Err(DnsError::NxDomain) => {
            return Err(bounce(NO_SUCH_DOMAIN, format!("domain {domain} not found")));
        }
        Err(DnsError::Temporary(e)) => {
            return Err(defer(format!("MX lookup for {domain} failed: {e}")));
        }
    };

    // Resolve in order until we meet ourselves: everything after has a
    // preference at least ours.
    let mut resolved: Vec<(u16, Target)> = Vec::new();
    let mut temporary: Vec<(u16, String)> = Vec::new();
    let mut unresolved: Vec<String> = Vec::new();
    let mut self_preference = None;
    for mx in hosts.iter().take(MAX_MX_HOSTS) {
        match resolver.ips(&mx.exchange).await {
            Ok(addrs) if addrs.iter().any(|ip| is_self(*ip)) => {
                self_preference = Some(mx.preference);
                break;
            }
            Ok(addrs) if !addrs.is_empty() => {
                let mut unique: Vec<IpAddr> = Vec::with_capacity(addrs.len());
                for ip in addrs {
                    if !unique.contains(&ip) {
                        unique.push(ip);
                    }
                }
                let target = Target {
                    host: mx.exchange.clone(),
                    addrs: unique,
                };
                resolved.push((mx.preference, target));
            }
            Ok(_) | Err(DnsError::NoRecords | DnsError::NxDomain) => {
                unresolved.push(mx.exchange.clone());
            }
            Err(DnsError::Temporary(e)) => {
                temporary.push((mx.preference, format!("{}: {e}", mx.exchange)));
            }
        }
    }
    if let Some(ours) = self_preference {
        resolved.retain(|(preference, _)| *preference < ours);
        temporary.retain(|(preference, _)| *preference < ours);
    }
    if !resolved.is_empty() {
        return Ok(resolved.into_iter().map(|(_, target)| target).collect());
    }
    if let Some((_, first)) = temporary.into_iter().next() {
        return Err(defer(format!(
            "address lookup for the mail hosts of {domain} failed: {first}"
        )));
    }
    if self_preference.is_some() {
        return Err(bounce(
            MAIL_LOOP,
            format!("MX for {domain} points back to this server (mail loop)"),
        ));
    }
    if implicit {
        return Err(bounce(
            NO_SUCH_DOMAIN,
            format!("domain {domain} has no MX and no address records"),
        ));
    }
    Err(bounce(
        UNROUTABLE,
        format!(
            "unable to route: no MX host of {domain} has an address ({})",
            unresolved.join(", ")
        ),
    ))
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (already lower case) as a target.
fn literal_target(
    literal: &str,
    is_self: &(dyn Fn(IpAddr) -> bool + Sync),
) -> Result<Vec<Target>, MxError> {
    let inner = literal
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    let ip = inner.and_then(|inner| match inner.strip_prefix("ipv6:") {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    });
    let Some(ip) = ip else {
        return Err(bounce(
            BAD_SYNTAX,
            format!("{literal} is not a valid address literal"),
        ));
    };
    if is_self(ip) {
        return Err(bounce(
            MAIL_LOOP,
            format!("{literal} is this server (mail loop)"),
        ));
    }
    Ok(vec![Target {
        host: literal.to_string(),
        addrs: vec![ip],
    }])
}

/// Sorted by preference; equal preferences shuffled; each exchange once.
fn by_preference(mut records: Vec<Mx>) -> Vec<Mx> {
    // Shuffle everything, then sort stably: equal preferences stay shuffled.
    for i in (1..records.len()).rev() {
        records.swap(i, random_below(i + 1));
    }
    records.sort_by_key(|mx| mx.preference);
    let mut seen: Vec<String> = Vec::with_capacity(records.len());
    records.retain(|mx| {
        if seen.contains(&mx.exchange) {
            false
        } else {
            seen.push(mx.exchange.clone());
            true
        }
    });
    records
}

/// A number in `0..n` (`n > 0`), for spreading load over equal MX hosts —
/// not for anything secret. Each [`RandomState`] is seeded from the
/// process's random keys and differs from the last; hashing a counter with
/// it gives a fresh, well-mixed value without a `rand` dependency.
fn random_below(n: usize) -> usize {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let value = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (value % n as u64) as usize
}

// The e2e tests' DNS server (another crate), shared by path, to test
// `HickoryResolver` over real UDP and TCP.
#[cfg(test)]
#[path = "../../../tests/e2e/dnsd.rs"]
mod dnsd;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    use super::dnsd;

    // ---------------------------------------------------------------
    // mx_targets over an in-memory fake
    // ---------------------------------------------------------------

    /// Answers from maps; anything unlisted is NXDOMAIN. Records the
    /// address lookups made.
    #[derive(Debug, Default)]
    struct Fake {
        mx: HashMap<String, Result<Vec<Mx>, DnsError>>,
        ips: HashMap<String, Result<Vec<IpAddr>, DnsError>>,
        looked_up: Mutex<Vec<String>>,
    }

    impl Fake {
        fn mx(mut self, domain: &str, records: &[(u16, &str)]) -> Self {
            let records = records
                .iter()
                .map(|(preference, exchange)| Mx {
                    preference: *preference,
                    exchange: (*exchange).to_string(),
                })
                .collect();
            self.mx.insert(domain.to_string(), Ok(records));
            self
        }

        fn mx_err(mut self, domain: &str, err: DnsError) -> Self {
            self.mx.insert(domain.to_string(), Err(err));
            self
        }

        fn host(mut self, host: &str, addrs: &[&str]) -> Self {
            let addrs = addrs.iter().map(|a| a.parse().expect("an IP")).collect();
            self.ips.insert(host.to_string(), Ok(addrs));
            self
        }

        fn host_err(mut self, host: &str, err: DnsError) -> Self {
            self.ips.insert(host.to_string(), Err(err));
            self
        }

        fn looked_up(&self) -> Vec<String> {
            self.looked_up.lock().expect("not poisoned").clone()
        }
    }

    impl Resolver for Fake {
        fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<Mx>> {
            let answer = self.mx.get(domain).cloned();
            Box::pin(async move { answer.unwrap_or(Err(DnsError::NxDomain)) })
        }

        fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
            self.looked_up
                .lock()
                .expect("not poisoned")
                .push(host.to_string());
            let answer = self.ips.get(host).cloned();
            Box::pin(async move { answer.unwrap_or(Err(DnsError::NxDomain)) })
        }

        fn txt<'a>(&'a self, _name: &'a str) -> DnsFuture<'a, Vec<String>> {
            Box::pin(async { Err(DnsError::NxDomain) })
        }

        fn ptr<'a>(&'a self, _ip: IpAddr) -> DnsFuture<'a, Vec<String>> {
            Box::pin(async { Err(DnsError::NxDomain) })
        }
    }

    fn nobody(_: IpAddr) -> bool {
        false
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP")
    }

    fn hosts(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.host.as_str()).collect()
    }

    fn temporary() -> DnsError {
        DnsError::Temporary("SERVFAIL".into())
    }

    async fn targets(resolver: &dyn Resolver, domain: &str) -> Result<Vec<Target>, MxError> {
        mx_targets(resolver, domain, &nobody).await
    }

    #[tokio::test]
    async fn sorted_by_preference_with_addresses() {
        let fake = Fake::default()
            .mx(
                "example.test",
                &[
                    (20, "b.example.test"),
                    (10, "a.example.test"),
                    (30, "c.example.test"),
                ],
            )
            .host("a.example.test", &["192.0.2.1", "2001:db8::1"])
            .host("b.example.test", &["192.0.2.2"])
            .host("c.example.test", &["192.0.2.3", "192.0.2.3"]);
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(
            got,
            vec![
                Target {
                    host: "a.example.test".into(),
                    addrs: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                },
                Target {
                    host: "b.example.test".into(),
                    addrs: vec![ip("192.0.2.2")],
                },
                Target {
                    host: "c.example.test".into(),
                    addrs: vec![ip("192.0.2.3")], // deduplicated
                },
            ]
        );
    }

    #[tokio::test]
    async fn equal_preferences_are_shuffled() {
        let fake = Fake::default()
            .mx(
                "example.test",
                &[(10, "a"), (10, "b"), (5, "first"), (20, "last")],
            )
            .host("a", &["192.0.2.1"])
            .host("b", &["192.0.2.2"])
            .host("first", &["192.0.2.3"])
            .host("last", &["192.0.2.4"]);
        let (mut a_first, mut b_first) = (0, 0);
        for _ in 0..200 {
            let got = targets(&fake, "example.test").await.expect("targets");
            let got = hosts(&got);
            assert_eq!(got.len(), 4);
            assert_eq!(got[0], "first");
            assert_eq!(got[3], "last");
            match got[1] {
                "a" => a_first += 1,
                "b" => b_first += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert!(a_first > 20 && b_first > 20, "a {a_first}, b {b_first}");
    }

    #[tokio::test]
    async fn duplicate_exchanges_are_tried_once() {
        let fake = Fake::default()
            .mx("example.test", &[(20, "mx"), (10, "MX."), (30, "other")])
            .host("mx", &["192.0.2.1"])
            .host("other", &["192.0.2.2"]);
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(hosts(&got), ["mx", "other"]);
    }

    #[tokio::test]
    async fn names_are_normalised() {
        let fake = Fake::default()
            .mx("example.test", &[(10, "MX.Example.Test.")])
            .host("mx.example.test", &["192.0.2.1"]);
        let got = targets(&fake, "Example.TEST.").await.expect("targets");
        assert_eq!(hosts(&got), ["mx.example.test"]);
    }

    #[tokio::test]
    async fn implicit_mx_uses_the_domain_itself() {
        for fake in [
            Fake::default().mx_err("example.test", DnsError::NoRecords),
            Fake::default().mx("example.test", &[]),
        ] {
            let fake = fake.host("example.test", &["192.0.2.9"]);
            let got = targets(&fake, "example.test").await.expect("targets");
            assert_eq!(
                got,
                vec![Target {
                    host: "example.test".into(),
                    addrs: vec![ip("192.0.2.9")],
                }]
            );
        }
    }

    #[tokio::test]
    async fn implicit_mx_without_addresses() {
        for (err, want) in [
            (
                DnsError::NxDomain,
                MxError::Bounce {
                    status: Enhanced(5, 1, 2),
                    text: String::new(),
                },
            ),
            (
                DnsError::NoRecords,
                MxError::Bounce {
                    status: Enhanced(5, 1, 2),
                    text: String::new(),
                },
            ),
            (
                temporary(),
                MxError::Defer {
                    status: Enhanced(4, 4, 3),
                    text: String::new(),
                },
            ),
        ] {
            let fake = Fake::default()
                .mx_err("example.test", DnsError::NoRecords)
                .host_err("example.test", err.clone());
            let got = targets(&fake, "example.test")
                .await
                .expect_err("no targets");
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{err:?}: {got:?}"
            );
            assert_eq!(got.status(), want.status(), "{err:?}: {got:?}");
        }
    }

    #[tokio::test]
    async fn null_mx_bounces() {
        let fake = Fake::default()
            .mx("example.test", &[(0, "")])
            .host("example.test", &["192.0.2.1"]);
        let got = targets(&fake, "example.test").await.expect_err("null MX");
        assert!(
            matches!(
                got,
                MxError::Bounce {
                    status: Enhanced(5, 1, 10),
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(got.text().contains("does not accept mail"), "{got}");
        // The implicit MX is not consulted.
        assert!(fake.looked_up().is_empty());
    }

    #[tokio::test]
    async fn null_mx_among_others_is_ignored() {
        let fake = Fake::default()
            .mx("example.test", &[(0, ""), (10, "mx.example.test")])
            .host("mx.example.test", &["192.0.2.1"]);
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(hosts(&got), ["mx.example.test"]);
    }

    #[tokio::test]
    async fn nxdomain_bounces_and_servfail_defers() {
        let fake = Fake::default()
            .mx_err("gone.test", DnsError::NxDomain)
            .mx_err("broken.test", temporary());
        let got = targets(&fake, "gone.test").await.expect_err("NXDOMAIN");
        assert!(
            matches!(
                got,
                MxError::Bounce {
                    status: Enhanced(5, 1, 2),
                    ..
                }
            ),
            "{got:?}"
        );
        let got = targets(&fake, "broken.test").await.expect_err("SERVFAIL");
        assert!(
            matches!(
                got,
                MxError::Defer {
                    status: Enhanced(4, 4, 3),
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(got.text().contains("SERVFAIL"), "{got}");
        // Unknown to the fake: NXDOMAIN too.
        let got = targets(&fake, "unknown.test").await.expect_err("NXDOMAIN");
        assert_eq!(got.status(), Enhanced(5, 1, 2));
    }

    #[tokio::test]
    async fn failing_hosts_are_skipped() {
        let fake = Fake::default()
            .mx("example.test", &[(10, "down"), (20, "gone"), (30, "up")])
            .host_err("down", temporary())
            .host_err("gone", DnsError::NxDomain)
            .host("up", &["192.0.2.1"]);
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(hosts(&got), ["up"]);
    }

    #[tokio::test]
    async fn no_resolvable_host() {
        // Any temporary failure: try later.
        let fake = Fake::default()
            .mx("example.test", &[(10, "down"), (20, "gone")])
            .host_err("down", temporary())
            .host_err("gone", DnsError::NoRecords);
        let got = targets(&fake, "example.test").await.expect_err("none");
        assert!(
            matches!(
                got,
                MxError::Defer {
                    status: Enhanced(4, 4, 3),
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(got.text().contains("down"), "{got}");

        // All permanent: unable to route.
        let fake = Fake::default()
            .mx("example.test", &[(10, "gone"), (20, "empty")])
            .host_err("gone", DnsError::NxDomain)
            .host_err("empty", DnsError::NoRecords);
        let got = targets(&fake, "example.test").await.expect_err("none");
        assert!(
            matches!(
                got,
                MxError::Bounce {
                    status: Enhanced(5, 4, 4),
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(got.text().contains("gone, empty"), "{got}");
    }

    #[tokio::test]
    async fn at_most_max_mx_hosts_are_resolved() {
        let names: Vec<String> = (0..MAX_MX_HOSTS + 5).map(|i| format!("mx{i}")).collect();
        let records: Vec<(u16, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (u16::try_from(i).expect("small"), name.as_str()))
            .collect();
        let mut fake = Fake::default().mx("example.test", &records);
        for name in &names {
            fake = fake.host(name, &["192.0.2.1"]);
        }
        let got = targets(&fake, "example.test").await.expect("targets");
        assert_eq!(got.len(), MAX_MX_HOSTS);
        assert_eq!(fake.looked_up().len(), MAX_MX_HOSTS);
    }

    #[tokio::test]
    async fn mx_pointing_only_at_us_is_a_loop() {
        let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST);
        let fake = Fake::default()
            .mx("example.test", &[(10, "mx")])
            .host("mx", &["127.0.0.1"])
            .mx_err("implicit.test", DnsError::NoRecords)
            .host("implicit.test", &["127.0.0.1"]);
        for domain in ["example.test", "implicit.test"] {
            let got = mx_targets(&fake, domain, &is_self).await.expect_err("loop");
            assert!(
                matches!(
                    got,
                    MxError::Bounce {
                        status: Enhanced(5, 4, 6),
                        ..
                    }
                ),
                "{domain}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn only_hosts_better_than_us_are_used() {
        let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST);
        let fake = Fake::default()
            .mx(
                "example.test",
                &[(5, "better"), (10, "peer"), (10, "us"), (20, "worse")],
            )
            .host("better", &["192.0.2.1"])
            .host("peer", &["192.0.2.2"])
            .host("us", &["192.0.2.3", "127.0.0.1"])
            .host("worse", &["192.0.2.4"]);
        for _ in 0..20 {
            let got = mx_targets(&fake, "example.test", &is_self)
                .await
                .expect("targets");
            assert_eq!(hosts(&got), ["better"]);
        }
        // Nothing after us is even looked up.
        assert!(!fake.looked_up().contains(&"worse".to_string()));

        // We are the best MX: nowhere to go.
        let fake = Fake::default()
            .mx("example.test", &[(10, "us"), (20, "worse")])
            .host("us", &["127.0.0.1"])
            .host("worse", &["192.0.2.4"]);
        let got = mx_targets(&fake, "example.test", &is_self)
            .await
            .expect_err("loop");
        assert_eq!(got.status(), Enhanced(5, 4, 6));

        // A better host that fails for now: try later, not a loop.
        let fake = Fake::default()
            .mx("example.test", &[(5, "better"), (10, "us")])
            .host_err("better", temporary())
            .host("us", &["127.0.0.1"]);
        let got = mx_targets(&fake, "example.test", &is_self)
            .await
            .expect_err("defer");
        assert_eq!(got.status(), Enhanced(4, 4, 3));
    }

    #[tokio::test]
    async fn address_literals() {
        let fake = Fake::default();
        let got = targets(&fake, "[192.0.2.7]").await.expect("v4 literal");
        assert_eq!(
            got,
            vec![Target {
                host: "[192.0.2.7]".into(),
                addrs: vec![ip("192.0.2.7")],
            }]
        );
        let got = targets(&fake, "[IPv6:2001:DB8::7]")
            .await
            .expect("v6 literal");
        assert_eq!(got[0].addrs, vec![ip("2001:db8::7")]);
        for bad in [
            "[300.1.1.1]",
            "[2001:db8::7]",
            "[IPv6:1.2.3.4]",
            "[192.0.2.7",
        ] {
            let got = targets(&fake, bad).await.expect_err(bad);
            assert_eq!(got.status(), Enhanced(5, 1, 3), "{bad}");
        }
        let is_self = |ip: IpAddr| ip.is_loopback();
        let got = mx_targets(&fake, "[127.0.0.1]", &is_self)
            .await
            .expect_err("loop");
        assert_eq!(got.status(), Enhanced(5, 4, 6));
        assert!(fake.looked_up().is_empty());
    }

    #[test]
    fn mx_error_as_outcome() {
        let bounce = MxError::Bounce {
            status: Enhanced(5, 1, 2),
            text: "domain x not found".into(),
        };
        assert_eq!(bounce.to_string(), "5.1.2 domain x not found");
        assert_eq!(
            bounce.into_outcome(),
            Outcome::fail(Enhanced(5, 1, 2), "domain x not found")
        );
        let defer = MxError::Defer {
            status: Enhanced(4, 4, 3),
            text: "later".into(),
        };
        assert_eq!(
            defer.into_outcome(),
            Outcome::defer(Enhanced(4, 4, 3), "later")
        );
    }

    #[test]
    fn address_merging() {
        let v4 = || Ok(vec![ip("192.0.2.1")]);
        let v6 = || Ok(vec![ip("2001:db8::1")]);
        assert_eq!(
            merge_addresses(v4(), v6()),
            Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")])
        );
        assert_eq!(
            merge_addresses(v4(), Err(temporary())),
            Ok(vec![ip("192.0.2.1")])
        );
        assert_eq!(
            merge_addresses(Err(DnsError::NoRecords), v6()),
            Ok(vec![ip("2001:db8::1")])
        );
        assert_eq!(
            merge_addresses(Err(DnsError::NoRecords), Err(DnsError::NoRecords)),
            Err(DnsError::NoRecords)
        );
        assert_eq!(
            merge_addresses(Err(DnsError::NxDomain), Err(DnsError::NxDomain)),
            Err(DnsError::NxDomain)
        );
        assert_eq!(
            merge_addresses(Err(DnsError::NxDomain), Err(temporary())),
            Err(temporary())
        );
    }

    #[test]
    fn random_below_stays_in_range() {
        let mut seen = [0usize; 3];
        for _ in 0..300 {
            seen[random_below(3)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
        assert_eq!(random_below(1), 0);
    }

    // ---------------------------------------------------------------
    // StaticResolver
    // ---------------------------------------------------------------

    fn static_config() -> DnsConfig {
        let mut mx = BTreeMap::new();
        mx.insert(
            "Example.Test".to_string(),
            vec![
                "MX1.example.test.".to_string(),
                "mx2.example.test".to_string(),
            ],
        );
        mx.insert("null.test".to_string(), vec![".".to_string()]);
        mx.insert("nomx.test".to_string(), vec![]);
        let mut a = BTreeMap::new();
        a.insert(
            "mx1.example.test".to_string(),
            vec![ip("127.0.0.1"), ip("::1")],
        );
        a.insert("empty.test".to_string(), vec![]);
        a.insert("nomx.test".to_string(), vec![ip("127.0.0.2")]);
        DnsConfig {
            mx,
            a,
            ..DnsConfig::default()
        }
    }

    #[tokio::test]
    async fn static_only_answers() {
        let r = StaticResolver::only(&static_config());
        let want = vec![
            Mx {
                preference: 10,
                exchange: "mx1.example.test".into(),
            },
            Mx {
                preference: 20,
                exchange: "mx2.example.test".into(),
            },
        ];
        assert_eq!(r.mx("example.test").await, Ok(want.clone()));
        assert_eq!(r.mx("EXAMPLE.TEST.").await, Ok(want));
        assert_eq!(
            r.mx("null.test").await,
            Ok(vec![Mx {
                preference: 10,
                exchange: String::new(),
            }])
        );
        assert_eq!(r.mx("nomx.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.mx("mx1.example.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.mx("other.test").await, Err(DnsError::NxDomain));

        assert_eq!(
            r.ips("MX1.Example.Test.").await,
            Ok(vec![ip("127.0.0.1"), ip("::1")])
        );
        assert_eq!(r.ips("empty.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.ips("example.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.ips("mx2.example.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.ips("192.0.2.5").await, Ok(vec![ip("192.0.2.5")]));
        assert_eq!(r.txt("example.test").await, Err(DnsError::NoRecords));
        assert_eq!(r.txt("other.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.ptr(ip("127.0.0.1")).await, Err(DnsError::NxDomain));

        // End to end: mx2 has no address, null.test refuses mail, nomx.test
        // falls back to its A record.
        let got = targets(&r, "example.test").await.expect("targets");
        assert_eq!(hosts(&got), ["mx1.example.test"]);
        let got = targets(&r, "null.test").await.expect_err("null MX");
        assert_eq!(got.status(), Enhanced(5, 1, 10));
        let got = targets(&r, "nomx.test").await.expect("implicit");
        assert_eq!(got[0].addrs, vec![ip("127.0.0.2")]);
    }

    #[tokio::test]
    async fn static_falls_through_to_inner() {
        let inner = Fake::default()
            .mx("other.test", &[(5, "mx.other.test")])
            .mx("example.test", &[(5, "not.used")])
            .host("mx.other.test", &["192.0.2.8"]);
        let r = StaticResolver::new(&static_config(), Arc::new(inner));
        assert_eq!(
            r.mx("other.test").await,
            Ok(vec![Mx {
                preference: 5,
                exchange: "mx.other.test".into(),
            }])
        );
        assert_eq!(
            r.mx("example.test").await.expect("static")[0].preference,
            10
        );
        assert_eq!(r.ips("mx.other.test").await, Ok(vec![ip("192.0.2.8")]));
        assert_eq!(r.ips("mx1.example.test").await.expect("static").len(), 2);
        assert_eq!(r.ips("unknown.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.txt("x.test").await, Err(DnsError::NxDomain));
    }

    // ---------------------------------------------------------------
    // HickoryResolver against a real server on loopback
    // ---------------------------------------------------------------

    /// Every network test is bounded by this.
    const TEST_DEADLINE: Duration = Duration::from_secs(20);

    fn zone() -> dnsd::Zone {
        let mut zone = dnsd::Zone::new()
            .mx("example.test", 10, "MX1.example.test")
            .mx("example.test", 20, "mx2.example.test.")
            .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 1))
            .a("mx1.example.test", "::1".parse::<IpAddr>().expect("v6"))
            .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 2))
            .a("nomx.test", Ipv4Addr::new(127, 0, 0, 3))
            .null_mx("null.test")
            .nxdomain("nx.test")
            .servfail("fail.test")
            .mx("halfbroken.test", 10, "fail.test")
            .mx("halfbroken.test", 20, "mx2.example.test")
            .txt("_policy.example.test", "v=spf1 -all")
            .ptr(Ipv4Addr::new(192, 0, 2, 25), "MX1.example.test");
        // More than fits a UDP answer: hickory must retry over TCP.
        for i in 1..=120u8 {
            zone = zone.a("big.test", Ipv4Addr::new(10, 0, 0, i));
        }
        zone
    }

    fn hickory(servers: Vec<SocketAddr>, timeout: Duration) -> HickoryResolver {
        HickoryResolver::from_config(&DnsConfig {
            nameservers: servers,
            timeout,
            ..DnsConfig::default()
        })
        .expect("resolver")
    }

    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(TEST_DEADLINE, f)
            .await
            .expect("the test finished in time")
    }

    #[tokio::test]
    async fn hickory_classifies_answers() {
        let server = dnsd::DnsServer::start(zone());
        let r = hickory(vec![server.addr()], Duration::from_secs(2));
        bounded(async {
            assert_eq!(
                r.mx("Example.Test").await,
                Ok(vec![
                    Mx {
                        preference: 10,
                        exchange: "mx1.example.test".into(),
                    },
                    Mx {
                        preference: 20,
                        exchange: "mx2.example.test".into(),
                    },
                ])
            );
            assert_eq!(
                r.ips("mx1.example.test.").await,
                Ok(vec![ip("127.0.0.1"), ip("::1")])
            );
            // A only: AAAA is NODATA, merged away.
            assert_eq!(r.ips("mx2.example.test").await, Ok(vec![ip("127.0.0.2")]));
            assert_eq!(r.ips("192.0.2.1").await, Ok(vec![ip("192.0.2.1")]));

            assert_eq!(r.mx("nx.test").await, Err(DnsError::NxDomain));
            assert_eq!(r.ips("nx.test").await, Err(DnsError::NxDomain));
            assert_eq!(r.mx("unknown.test").await, Err(DnsError::NxDomain));
            assert!(matches!(
                r.mx("fail.test").await,
                Err(DnsError::Temporary(_))
            ));
            assert!(matches!(
                r.ips("fail.test").await,
                Err(DnsError::Temporary(_))
            ));
            assert_eq!(r.mx("nomx.test").await, Err(DnsError::NoRecords));
            assert_eq!(r.ips("null.test").await, Err(DnsError::NoRecords));
            // An empty non-terminal exists.
            assert_eq!(r.ips("example.test").await, Err(DnsError::NoRecords));
            assert_eq!(
                r.mx("null.test").await,
                Ok(vec![Mx {
                    preference: 0,
                    exchange: String::new(),
                }])
            );
            assert_eq!(
                r.txt("_policy.example.test").await,
                Ok(vec!["v=spf1 -all".to_string()])
            );
            assert_eq!(
                r.ptr(ip("192.0.2.25")).await,
                Ok(vec!["mx1.example.test".to_string()])
            );
            assert_eq!(r.ptr(ip("192.0.2.26")).await, Err(DnsError::NxDomain));
            // Not a valid name: it cannot exist.
            assert_eq!(r.mx(&"x".repeat(64)).await, Err(DnsError::NxDomain));
            assert_eq!(r.mx("").await, Err(DnsError::NxDomain));

            // Truncated over UDP, complete over TCP.
            let big = r.ips("big.test").await.expect("big answer");
            assert_eq!(big.len(), 120);
        })
        .await;
        assert!(server.queries() > 0);
    }

    #[tokio::test]
    async fn hickory_mx_targets() {
        let server = dnsd::DnsServer::start(zone());
        let r = hickory(vec![server.addr()], Duration::from_secs(2));
        bounded(async {
            let got = targets(&r, "example.test").await.expect("targets");
            assert_eq!(
                got,
                vec![
                    Target {
                        host: "mx1.example.test".into(),
                        addrs: vec![ip("127.0.0.1"), ip("::1")],
                    },
                    Target {
                        host: "mx2.example.test".into(),
                        addrs: vec![ip("127.0.0.2")],
                    },
                ]
            );
            let got = targets(&r, "nomx.test").await.expect("implicit MX");
            assert_eq!(hosts(&got), ["nomx.test"]);
            let got = targets(&r, "halfbroken.test")
                .await
                .expect("one host works");
            assert_eq!(hosts(&got), ["mx2.example.test"]);
            let status = |r: Result<Vec<Target>, MxError>| r.expect_err("no targets").status();
            assert_eq!(status(targets(&r, "null.test").await), Enhanced(5, 1, 10));
            assert_eq!(status(targets(&r, "nx.test").await), Enhanced(5, 1, 2));
            assert_eq!(status(targets(&r, "fail.test").await), Enhanced(4, 4, 3));
            let is_self = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
            let got = mx_targets(&r, "example.test", &is_self).await.expect("mx1");
            assert_eq!(hosts(&got), ["mx1.example.test"]);
        })
        .await;
    }

    #[tokio::test]
    async fn hickory_unanswered_queries_fail_temporarily_in_time() {
        // A socket that never answers (and no TCP listener on its port).
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let r = hickory(
            vec![silent.local_addr().expect("addr")],
            Duration::from_millis(300),
        );
        let start = Instant::now();
        let got = bounded(r.mx("example.test")).await;
        assert!(matches!(got, Err(DnsError::Temporary(_))), "{got:?}");
        let got = bounded(r.ips("mx.example.test")).await;
        assert!(matches!(got, Err(DnsError::Temporary(_))), "{got:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
        let got = bounded(targets(&r, "example.test"))
            .await
            .expect_err("defer");
        assert_eq!(got.status(), Enhanced(4, 4, 3));
    }

    #[tokio::test]
    async fn from_config_layers_static_over_hickory() {
        let server = dnsd::DnsServer::start(zone());
        let mut cfg = static_config();
        cfg.nameservers = vec![server.addr()];
        cfg.timeout = Duration::from_secs(2);
        let r = from_config(&cfg).expect("resolver");
        bounded(async {
            // Static.
            assert_eq!(
                r.mx("example.test").await.expect("static")[0].preference,
                10
            );
            assert_eq!(r.ips("nomx.test").await, Ok(vec![ip("127.0.0.2")]));
            // From the server.
            assert_eq!(r.ips("mx2.example.test").await, Ok(vec![ip("127.0.0.2")]));
            assert_eq!(r.mx("nx.test").await, Err(DnsError::NxDomain));
        })
        .await;
        // Without static answers, hickory alone.
        cfg.mx.clear();
        cfg.a.clear();
        let r = from_config(&cfg).expect("resolver");
        let got = bounded(r.ips("nomx.test")).await;
        assert_eq!(got, Ok(vec![ip("127.0.0.3")]));
    }
}
