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
mod tests;
