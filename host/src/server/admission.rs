//! Who gets a connection, and who loses one, under load: the global cap
//! with a share reserved for relay clients, caps per client address and
//! per client network, stress (shorter timeouts past a threshold), and
//! shedding (when the cap is reached the longest-idle session is closed
//! before a new client is refused). Every refusal is `421 4.3.2`, logged
//! and counted by reason.
//!
//! Addresses are compared canonically (an IPv4-mapped IPv6 address is the
//! IPv4 address); a network is the address's IPv4 /`v4_prefix` or IPv6
//! /`v6_prefix`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::Notify;

use crate::config::Limits;

/// Why a connection was refused (a counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot is taken (and no idle session could be shed).
    Capacity,
    /// The client address has its share.
    PerAddress,
    /// The client's network has its share.
    PerNetwork,
    /// The policy instance pool has no room for the session's instances
    /// (and no idle session could be shed).
    Instances,
}

impl Refusal {
    /// The reason as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::PerAddress => "per-address",
            Refusal::PerNetwork => "per-network",
            Refusal::Instances => "policy-instances",
        }
    }
}

/// How many connections were refused, by reason, and sessions shed.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Refused: all slots taken.
    pub capacity: AtomicU64,
    /// Refused: the address's cap.
    pub per_address: AtomicU64,
    /// Refused: the network's cap.
    pub per_network: AtomicU64,
    /// Refused: no policy instance slots.
    pub instances: AtomicU64,
    /// Idle sessions closed to make room.
    pub shed: AtomicU64,
}

impl AdmissionCounters {
    fn count(&self, r: Refusal) -> u64 {
        let c = match r {
            Refusal::Capacity => &self.capacity,
            Refusal::PerAddress => &self.per_address,
            Refusal::PerNetwork => &self.per_network,
            Refusal::Instances => &self.instances,
        };
        c.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One session's entry in the idle table.
#[derive(Debug)]
struct Entry {
    /// Since when it has waited for a command with no progress; `None`
    /// while it is busy (a command in hand, DATA, a policy call).
    idle_since: Option<Instant>,
    /// Told to close when it is shed.
    shed: Arc<Notify>,
    /// Told already (not picked twice).
    shedding: bool,
}

#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    per_net: HashMap<IpNet, usize>,
}

/// Connection admission for all listeners of a gateway.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    reserved: usize,
    per_ip: usize,
    per_net: usize,
    v4_prefix: u8,
    v6_prefix: u8,
    stress_at: usize,
    min_idle_to_shed: Duration,
    open: AtomicUsize,
    counts: Mutex<Counts>,
    sessions: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Refusals and sheds so far.
    pub counters: AdmissionCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    /// From `[limits]`.
    pub fn new(l: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max: l.max_connections,
            reserved: l.reserved_connections.min(l.max_connections / 2),
            per_ip: l.max_connections_per_ip,
            per_net: l.max_connections_per_network,
            v4_prefix: l.network_prefix_v4,
            v6_prefix: l.network_prefix_v6,
            stress_at: ((l.max_connections as f64) * l.stress_threshold).ceil() as usize,
            min_idle_to_shed: l.shed_idle_after,
            open: AtomicUsize::new(0),
            counts: Mutex::default(),
            sessions: Mutex::default(),
            next_id: AtomicU64::new(0),
            counters: AdmissionCounters::default(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Past the stress threshold: sessions get the shorter timeouts.
    pub fn stressed(&self) -> bool {
        self.open() >= self.stress_at
    }

    /// A slot for a new connection from `peer` (`relay`: in
    /// `relay_networks`, which may use the reserved share). When every
    /// slot it may use is taken, the longest-idle session is told to close
    /// and the new connection takes its place; with none to shed, it is
    /// refused.
    pub fn connect(self: &Arc<Self>, peer: IpAddr, relay: bool) -> Result<Slot, Refusal> {
        let limit = if relay {
            self.max
        } else {
            self.max - self.reserved
        };
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= limit {
                if !self.shed_one() {
                    let count = self.counters.count(Refusal::Capacity);
                    tracing::warn!(client = %peer, open = n, refused = count, reason = "capacity", "connection refused");
                    return Err(Refusal::Capacity);
                }
                // The shed session's slot is ours: it closes at once.
                self.open.fetch_add(1, Ordering::Relaxed);
                break;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            admission: self.clone(),
            id,
            client: None,
        })
    }

    /// The network `ip` belongs to for the per-network cap.
    fn network(&self, ip: IpAddr) -> IpNet {
        let prefix = match ip {
            IpAddr::V4(_) => self.v4_prefix,
            IpAddr::V6(_) => self.v6_prefix,
        };
        IpNet::new(ip, prefix)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip))
    }

    /// Tell the session idle longest (at least `shed_idle_after`) to close.
    fn shed_one(&self) -> bool {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        let victim = sessions
            .iter_mut()
            .filter(|(_, e)| !e.shedding)
            .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id, e)))
            .filter(|(t, _, _)| now.duration_since(*t) >= self.min_idle_to_shed)
            .min_by_key(|(t, id, _)| (*t, *id));
        let Some((since, id, e)) = victim else {
            return false;
        };
        e.shedding = true;
        e.shed.notify_one();
        let shed = self.counters.shed.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            session = id,
            idle_ms = now.duration_since(since).as_millis() as u64,
            shed,
            "connection cap reached: closing the longest-idle session"
        );
        true
    }
}

/// A connection's hold on its slot (and, once the client is known, on its
/// address's and network's shares); released on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    client: Option<(IpAddr, IpNet)>,
}

impl Slot {
    /// The client is `ip` (after a PROXY header, the proxied client): take
    /// its address's and network's shares, unless it is a relay client
    /// (exempt, as Postfix exempts `mynetworks`).
    pub fn client(&mut self, ip: IpAddr, relay: bool) -> Result<(), Refusal> {
        let a = &self.admission;
        let ip = ip.to_canonical();
        if relay {
            return Ok(());
        }
        let net = a.network(ip);
        let mut counts = lock(&a.counts);
        let on_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        let on_net = counts.per_net.get(&net).copied().unwrap_or(0);
        let refusal = if on_ip >= a.per_ip {
            Some(Refusal::PerAddress)
        } else if on_net >= a.per_net {
            Some(Refusal::PerNetwork)
        } else {
            None
        };
        if let Some(r) = refusal {
            drop(counts);
            let count = a.counters.count(r);
            tracing::warn!(client = %ip, network = %net, refused = count, reason = r.as_str(), "connection refused");
            return Err(r);
        }
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        *counts.per_net.entry(net).or_insert(0) += 1;
        self.client = Some((ip, net));
        Ok(())
    }

    /// Enter the session in the idle table: it may be shed while it waits
    /// for a command. Returns what tells it to close.
    pub fn track(&self) -> Arc<Notify> {
        let shed = Arc::new(Notify::new());
        lock(&self.admission.sessions).insert(
            self.id,
            Entry {
                idle_since: None,
                shed: shed.clone(),
                shedding: false,
            },
        );
        shed
    }

    /// The session waits for a command since `since` (or is busy: `None`).
    pub fn set_idle(&self, since: Option<Instant>) {
        if let Some(e) = lock(&self.admission.sessions).get_mut(&self.id) {
            e.idle_since = since;
        }
    }

    /// Past the stress threshold?
    pub fn stressed(&self) -> bool {
        self.admission.stressed()
    }

    /// The policy instance pool is full: tell the longest-idle session to
    /// close, so that its instance slots come free. False when none may be
    /// shed.
    pub fn shed_for_instances(&self) -> bool {
        self.admission.shed_one()
    }

    /// Count and log a refusal for `reason` that came after admission
    /// (the policy instance pool).
    pub fn refused(&self, reason: Refusal, detail: &str) {
        let count = self.admission.counters.count(reason);
        let client = self.client.map(|(ip, _)| ip);
        tracing::warn!(client = ?client, refused = count, reason = reason.as_str(), detail, "connection refused");
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let a = &self.admission;
        lock(&a.sessions).remove(&self.id);
        if let Some((ip, net)) = self.client {
            let mut counts = lock(&a.counts);
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
            if let Some(n) = counts.per_net.get_mut(&net) {
                *n -= 1;
                if *n == 0 {
                    counts.per_net.remove(&net);
                }
            }
        }
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, reserved: usize, per_ip: usize, per_net: usize) -> Limits {
        Limits {
            max_connections: max,
            reserved_connections: reserved,
            max_connections_per_ip: per_ip,
            max_connections_per_network: per_net,
            shed_idle_after: Duration::ZERO,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_network_and_exemption() {
        let a = Admission::new(&limits(100, 0, 2, 3));
        let mut slots = Vec::new();
        for _ in 0..2 {
            let mut s = a.connect(ip("192.0.2.1"), false).unwrap();
            s.client(ip("192.0.2.1"), false).unwrap();
            slots.push(s);
        }
        let mut s = a.connect(ip("192.0.2.1"), false).unwrap();
        assert_eq!(s.client(ip("192.0.2.1"), false), Err(Refusal::PerAddress));
        // Mapped is the same address.
        assert_eq!(
            s.client(ip("::ffff:192.0.2.1"), false),
            Err(Refusal::PerAddress)
        );
        s.client(ip("192.0.2.2"), false).unwrap();
        slots.push(s);
        let mut s = a.connect(ip("192.0.2.3"), false).unwrap();
        assert_eq!(s.client(ip("192.0.2.3"), false), Err(Refusal::PerNetwork));
        // Another /24, and a relay client, are fine.
        s.client(ip("192.0.3.3"), false).unwrap();
        let mut r = a.connect(ip("192.0.2.1"), true).unwrap();
        r.client(ip("192.0.2.1"), true).unwrap();
        drop(slots);
        let mut s = a.connect(ip("192.0.2.1"), false).unwrap();
        s.client(ip("192.0.2.1"), false).unwrap();
        assert_eq!(a.counters.per_address.load(Ordering::Relaxed), 2);
        assert_eq!(a.counters.per_network.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reserved_share_and_shedding() {
        let a = Admission::new(&limits(3, 1, 10, 10));
        let s1 = a.connect(ip("192.0.2.1"), false).unwrap();
        let s2 = a.connect(ip("192.0.2.2"), false).unwrap();
        // The public share (2) is full and nobody is idle: refused.
        assert_eq!(
            a.connect(ip("192.0.2.3"), false).unwrap_err(),
            Refusal::Capacity
        );
        // A relay client takes the reserved slot.
        let r = a.connect(ip("127.0.0.1"), true).unwrap();
        assert_eq!(a.open(), 3);
        // An idle session is shed for the next public client.
        let shed1 = s1.track();
        let _shed2 = s2.track();
        s1.set_idle(Some(Instant::now()));
        let s4 = a.connect(ip("192.0.2.4"), false).unwrap();
        assert_eq!(a.counters.shed.load(Ordering::Relaxed), 1);
        // It was told (a permit is stored for the waiter).
        let told = futures_now(shed1.notified());
        assert!(told);
        drop((s1, s2, r, s4));
        assert_eq!(a.open(), 0);
    }

    /// Whether `f` is ready at once.
    fn futures_now(f: impl Future<Output = ()>) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(10), f)
                .await
                .is_ok()
        })
    }
}
