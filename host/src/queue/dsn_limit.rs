//! How many DSNs go to one sender domain: at most a configured number per
//! hour. The sender of a message is whatever the client wrote in MAIL
//! FROM, so without a bound a client could name a victim as the sender of
//! many messages and make the gateway send the victim their reports (a
//! reflection attack). Counted in a fixed one-hour window, for at most
//! [`MAX_DOMAINS`] domains at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window.
const WINDOW: Duration = Duration::from_secs(3600);
/// Distinct sender domains counted in one window; a new domain past this
/// is refused until the window ends (the bound on this table's memory).
pub(super) const MAX_DOMAINS: usize = 100_000;

/// DSNs per sender domain in the current hour.
#[derive(Debug)]
pub(super) struct DsnLimit {
    per_hour: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    counts: HashMap<String, u32>,
}

impl DsnLimit {
    /// At most `per_hour` DSNs per domain (0: no limit).
    pub(super) fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            window: Mutex::new(Window {
                started: Instant::now(),
                counts: HashMap::new(),
            }),
        }
    }

    /// Count one DSN to `domain`; false when it is over the limit.
    pub(super) fn allow(&self, domain: &str) -> bool {
        self.allow_at(domain, Instant::now())
    }

    fn allow_at(&self, domain: &str, now: Instant) -> bool {
        if self.per_hour == 0 {
            return true;
        }
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(w.started) >= WINDOW {
            w.started = now;
            w.counts.clear();
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(n) = w.counts.get_mut(&domain) {
            if *n >= self.per_hour {
                return false;
            }
            *n += 1;
            return true;
        }
        if w.counts.len() >= MAX_DOMAINS {
            return false;
        }
        w.counts.insert(domain, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_domain_per_hour() {
        let l = DsnLimit::new(2);
        let t0 = Instant::now();
        assert!(l.allow_at("Victim.example", t0));
        assert!(l.allow_at("victim.example.", t0));
        assert!(!l.allow_at("victim.example", t0), "the third in the hour");
        assert!(l.allow_at("other.example", t0), "another domain");
        assert!(l.allow_at("victim.example", t0 + WINDOW), "the next hour");
        let none = DsnLimit::new(0);
        assert!((0..1000).all(|_| none.allow_at("victim.example", t0)));
    }
}
