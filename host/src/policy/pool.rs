//! The instance pool's accounting: who may hold how many of the
//! `max_instances` slots.
//!
//! An SMTP session holds one instance per policy it calls, for its whole
//! life. If sessions took slots as they went, idle sessions could take the
//! whole pool and every later call would fail into the policy's
//! `on_error` (a tempfail for everyone, or, with `continue`, the policy
//! bypassed). So a session *reserves* the slots it may need when it
//! starts ([`InstancePool::reserve`]); a session that cannot reserve is
//! refused (or an idle one shed to make room) before it has said anything,
//! and a session that got in never finds the pool empty.
//!
//! Instances outside sessions (loading, route calls, warm instances idle
//! between sessions) hold a [`Lease`] of one slot each. A share of the pool
//! (`loose_share`) is kept from sessions so these always find room; warm
//! idle instances are dropped when a reservation needs their slots.
//!
//! Sessions from outside the relay networks may reserve only their share
//! of what sessions may hold (see [`InstancePool::set_relay_share`]), as the
//! connection cap keeps a share for relay clients.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::pool_loose_share;

/// Evictions one reservation or lease may make before it gives up.
const MAX_EVICTIONS: usize = 64;

/// The pool has too few free slots for a new session.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "the policy instance pool is full: a session needs {needed} instances, \
     {free} of the {limit} sessions may hold are free"
)]
pub struct PoolFull {
    /// Slots the session needed.
    pub needed: usize,
    /// Slots free for it.
    pub free: usize,
    /// Slots sessions like it may hold in all.
    pub limit: usize,
}

/// Something that holds idle instances and can give one up (a policy's
/// warm list).
pub(crate) trait Evict: Send + Sync {
    /// Drop one idle instance; false when there was none.
    fn evict_one(&self) -> bool;
}

#[derive(Debug, Default)]
struct Usage {
    /// Slots reserved by live sessions.
    reserved: usize,
    /// Slots held by leases.
    loose: usize,
}

/// The accounting of one engine's pool (see the [module documentation](self)).
pub struct InstancePool {
    max: usize,
    loose_share: usize,
    /// Of what sessions may hold, the share only relay clients may use, in
    /// thousandths.
    relay_permille: AtomicU32,
    usage: Mutex<Usage>,
    /// Told whenever slots are given back.
    freed: Notify,
    warm: Mutex<Vec<Weak<dyn Evict>>>,
}

impl std::fmt::Debug for InstancePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = self.usage();
        f.debug_struct("InstancePool")
            .field("max", &self.max)
            .field("reserved", &u.reserved)
            .field("loose", &u.loose)
            .finish_non_exhaustive()
    }
}

/// A session's hold on its slots; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<InstancePool>,
    n: usize,
}

/// One slot held outside a session; given back on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<InstancePool>,
}

impl InstancePool {
    /// A pool of `max` slots.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            loose_share: pool_loose_share(max),
            relay_permille: AtomicU32::new(0),
            usage: Mutex::default(),
            freed: Notify::new(),
            warm: Mutex::default(),
        })
    }

    /// Keep `fraction` (0 to 0.5) of what sessions may hold for sessions
    /// of relay clients.
    pub fn set_relay_share(&self, fraction: f64) {
        let permille = (fraction.clamp(0.0, 0.5) * 1000.0).round() as u32;
        self.relay_permille.store(permille, Ordering::Relaxed);
    }

    /// Slots sessions may hold in all (`relay`), or sessions of other
    /// clients.
    pub fn session_limit(&self, relay: bool) -> usize {
        let all = self.max - self.loose_share;
        if relay {
            return all;
        }
        let permille = self.relay_permille.load(Ordering::Relaxed) as usize;
        all - all * permille / 1000
    }

    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slots in use now: (reserved by sessions, leased).
    pub fn in_use(&self) -> (usize, usize) {
        let u = self.usage();
        (u.reserved, u.loose)
    }

    /// Register `list` as a holder of idle instances that reservations may
    /// empty.
    pub(crate) fn register_warm(&self, list: Weak<dyn Evict>) {
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        warm.retain(|w| w.strong_count() > 0);
        warm.push(list);
    }

    /// Drop one idle warm instance, if any is left.
    fn evict_one(&self) -> bool {
        let lists: Vec<Arc<dyn Evict>> = {
            let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
            warm.iter().filter_map(Weak::upgrade).collect()
        };
        lists.iter().any(|l| l.evict_one())
    }

    /// Reserve `n` slots for a session (`relay`: of a relay client). Idle
    /// warm instances are dropped to make room; with too little room left
    /// even so, `PoolFull`.
    pub fn reserve(self: &Arc<Self>, n: usize, relay: bool) -> Result<Reservation, PoolFull> {
        let limit = self.session_limit(relay);
        // Each eviction frees one slot; the bound keeps a loop against a
        // racing check-in finite.
        for _ in 0..=n.saturating_add(MAX_EVICTIONS) {
            {
                let mut u = self.usage();
                let fits_sessions = u.reserved + n <= limit;
                if fits_sessions && u.reserved + u.loose + n <= self.max {
                    u.reserved += n;
                    return Ok(Reservation {
                        pool: self.clone(),
                        n,
                    });
                }
                if !fits_sessions {
                    return Err(PoolFull {
                        needed: n,
                        free: limit.saturating_sub(u.reserved),
                        limit,
                    });
                }
            }
            // Sessions have room but warm instances hold it.
            if !self.evict_one() {
                break;
            }
        }
        let u = self.usage();
        Err(PoolFull {
            needed: n,
            free: limit
                .saturating_sub(u.reserved)
                .min(self.max.saturating_sub(u.reserved + u.loose)),
            limit,
        })
    }

    /// [`reserve`](Self::reserve), waiting up to `wait` for slots to be
    /// given back (a shed session closing).
    pub async fn reserve_within(
        self: &Arc<Self>,
        n: usize,
        relay: bool,
        wait: Duration,
    ) -> Result<Reservation, PoolFull> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a release between the check
            // and the wait is not missed.
            freed.as_mut().enable();
            match self.reserve(n, relay) {
                Ok(r) => return Ok(r),
                Err(full) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(full);
                    }
                }
            }
        }
    }

    /// One slot outside a session: from the free slots, then by dropping
    /// an idle warm instance (`evict`).
    pub(crate) fn lease(self: &Arc<Self>, evict: bool) -> Option<Lease> {
        for _ in 0..=MAX_EVICTIONS {
            {
                let mut u = self.usage();
                if u.reserved + u.loose < self.max {
                    u.loose += 1;
                    return Some(Lease { pool: self.clone() });
                }
            }
            if !evict || !self.evict_one() {
                return None;
            }
        }
        None
    }
}

impl Reservation {
    /// Slots reserved.
    pub fn size(&self) -> usize {
        self.n
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.usage().reserved -= self.n;
        self.pool.freed.notify_waiters();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.usage().loose -= 1;
        self.pool.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Idle {
        leases: Mutex<Vec<Lease>>,
        evicted: AtomicUsize,
    }

    impl Evict for Idle {
        fn evict_one(&self) -> bool {
            let lease = self.leases.lock().unwrap().pop();
            if lease.is_some() {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            lease.is_some()
        }
    }

    #[test]
    fn sessions_reserve_up_to_their_limit() {
        let pool = InstancePool::new(100);
        assert_eq!(pool.session_limit(true), 75);
        let a = pool.reserve(50, true).unwrap();
        let err = pool.reserve(30, true).unwrap_err();
        assert_eq!((err.needed, err.free, err.limit), (30, 25, 75));
        let b = pool.reserve(25, true).unwrap();
        drop(a);
        assert!(pool.reserve(50, true).is_ok());
        drop(b);
        assert_eq!(pool.in_use(), (0, 0));
    }

    #[test]
    fn the_loose_share_is_kept_from_sessions() {
        let pool = InstancePool::new(100);
        let _all = pool.reserve(75, true).unwrap();
        let leases: Vec<_> = (0..25).map(|_| pool.lease(false).unwrap()).collect();
        assert!(pool.lease(false).is_none());
        drop(leases);
        assert_eq!(pool.in_use(), (75, 0));
    }

    #[test]
    fn other_clients_leave_the_relay_share() {
        let pool = InstancePool::new(1064);
        pool.set_relay_share(0.1);
        assert_eq!(pool.session_limit(true), 1000);
        assert_eq!(pool.session_limit(false), 900);
        let _public = pool.reserve(900, false).unwrap();
        assert!(pool.reserve(1, false).is_err());
        assert!(pool.reserve(100, true).is_ok());
    }

    #[test]
    fn a_reservation_drops_idle_warm_instances_for_room() {
        let pool = InstancePool::new(8);
        let idle = Arc::new(Idle {
            leases: Mutex::new((0..8).map(|_| pool.lease(false).unwrap()).collect()),
            evicted: AtomicUsize::new(0),
        });
        let weak: Weak<dyn Evict> = Arc::downgrade(&idle) as Weak<dyn Evict>;
        pool.register_warm(weak);
        assert!(pool.lease(false).is_none());
        let r = pool.reserve(3, true).unwrap();
        assert_eq!(idle.evicted.load(Ordering::Relaxed), 3);
        assert_eq!(pool.in_use(), (3, 5));
        // A lease may evict too.
        assert!(pool.lease(true).is_some());
        assert_eq!(idle.evicted.load(Ordering::Relaxed), 4);
        drop(r);
    }

    #[test]
    fn sizes_serve_the_sessions_they_are_made_for() {
        for (sessions, per) in [(1, 1), (1, 2), (10, 3), (500, 2), (10_000, 3)] {
            let size = crate::config::pool_size_for(sessions, per);
            let pool = InstancePool::new(size);
            let held: Vec<_> = (0..sessions)
                .map(|_| pool.reserve(per, true).unwrap())
                .collect();
            assert_eq!(held.len(), sessions, "{sessions} x {per} in {size}");
        }
    }

    #[tokio::test]
    async fn a_waiting_reservation_takes_slots_given_back() {
        let pool = InstancePool::new(4);
        let held = pool.reserve(3, true).unwrap();
        let p = pool.clone();
        let waiter =
            tokio::spawn(async move { p.reserve_within(2, true, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.size(), 2);
        assert!(
            pool.reserve_within(3, true, Duration::from_millis(20))
                .await
                .is_err()
        );
    }
}
