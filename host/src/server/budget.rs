//! One memory budget for the message octets the sessions of a gateway hold
//! while messages arrive and while they are judged and spooled. When it is
//! spent, a new message (DATA, a first BDAT chunk) gets `452 4.3.1` and
//! the client tries again later: never a crash, never a lost message. A
//! message already arriving goes on to its end (SMTP cannot refuse half a
//! message), so the budget can be passed by what was in flight when it ran
//! out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The budget, shared by every connection.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// New messages refused because the budget was spent.
    pub refused: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` octets.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Octets held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Is it spent?
    pub fn spent(&self) -> bool {
        self.used() >= self.limit
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
    /// The session holds `now` octets of message.
    pub fn hold(&mut self, now: usize) {
        if now > self.held {
            self.budget
                .used
                .fetch_add(now - self.held, Ordering::Relaxed);
        } else if now < self.held {
            self.budget
                .used
                .fetch_sub(self.held - now, Ordering::Relaxed);
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
}
