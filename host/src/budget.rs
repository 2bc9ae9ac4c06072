//! One memory budget for the message octets a gateway holds: while
//! messages arrive, while they are judged and spooled (the sessions'
//! [`Account`]s), and while the queue delivers or bounces them
//! ([`MemoryBudget::reserve`]). When it is spent, a new message (DATA, a
//! first BDAT chunk) gets `452 4.3.1` and the client tries again later, and
//! the queue waits before it reads another message: never a crash, never a
//! lost message. A message already arriving goes on to its end (SMTP
//! cannot refuse half a message), so the budget can be passed by what was
//! in flight when it ran out; a queued message larger than the whole
//! budget is read when nothing else is held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The budget, shared by every connection.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// New messages refused because the budget was spent.
    pub refused: AtomicU64,
    /// Told whenever octets are given back.
    freed: Notify,
}

impl MemoryBudget {
    /// A budget of `limit` octets.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    /// Take `n` octets if they fit (or nothing else is held).
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used == 0 || used.saturating_add(n) <= self.limit).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Hold `n` octets for a message the queue reads, waiting until they
    /// fit; given back when the [`Held`] drops.
    pub async fn reserve(self: &Arc<Self>, n: usize) -> Held {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a release between the check
            // and the wait is not missed.
            freed.as_mut().enable();
            if self.try_take(n) {
                return Held {
                    budget: self.clone(),
                    n,
                };
            }
            freed.await;
        }
    }

    /// Octets held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Is it spent?
    pub fn spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Octets left before it is spent.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// A session's account on the budget, empty.
    pub fn account(self: &Arc<Self>) -> Account {
        Account {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// What one session holds of the budget; given back on drop.
#[derive(Debug)]
pub struct Account {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Account {
    /// The budget this account holds on.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The session holds `now` octets of message.
    pub fn hold(&mut self, now: usize) {
        if now > self.held {
            self.budget
                .used
                .fetch_add(now - self.held, Ordering::Relaxed);
        } else if now < self.held {
            self.budget.give_back(self.held - now);
        }
        self.held = now;
    }

    /// A new message was refused for want of budget (counted).
    pub fn refused(&self) -> u64 {
        self.budget.refused.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.hold(0);
    }
}

/// Octets the queue holds for one message; given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<MemoryBudget>,
    n: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_add_up_and_give_back() {
        let b = MemoryBudget::new(100);
        let mut a = b.account();
        let mut c = b.account();
        a.hold(60);
        c.hold(30);
        assert!(!b.spent());
        c.hold(40);
        assert!(b.spent());
        a.hold(10);
        assert_eq!(b.used(), 50);
        drop(c);
        assert_eq!(b.used(), 10);
        drop(a);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn the_queue_waits_for_room_and_a_large_message_goes_alone() {
        let b = MemoryBudget::new(100);
        let mut session = b.account();
        session.hold(80);
        let first = b.reserve(20).await;
        assert_eq!(b.used(), 100);
        // No room: waits until the session gives its octets back.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(50).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        session.hold(0);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(b.used(), 70);
        drop((first, second));
        assert_eq!(b.used(), 0);
        // Larger than the whole budget: taken when nothing else is held.
        let big = b.reserve(500).await;
        assert!(b.spent());
        drop(big);
        assert_eq!(b.used(), 0);
    }
}
