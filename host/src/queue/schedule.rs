//! "When to try": the due time of each message, and which messages are
//! being worked on. Pure data, no I/O.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

/// Due times per message id, plus the set in progress.
#[derive(Debug, Default)]
pub struct Schedule {
    by_time: BTreeSet<(DateTime<Utc>, String)>,
    due: HashMap<String, (DateTime<Utc>, bool)>,
    busy: HashSet<String>,
    /// Asked for while busy: when (the earliest asked) and with `force`,
    /// applied when the work ends.
    again: HashMap<String, (DateTime<Utc>, bool)>,
}

impl Schedule {
    /// Make `id` due at `at` (keeping an earlier time already set).
    /// `force` also retries deferred recipients before their time.
    pub fn at(&mut self, id: &str, at: DateTime<Utc>, force: bool) {
        if self.busy.contains(id) {
            let e = self.again.entry(id.to_string()).or_insert((at, force));
            e.0 = e.0.min(at);
            e.1 |= force;
            return;
        }
        if let Some((old, old_force)) = self.due.get(id).copied() {
            if old <= at && (old_force || !force) {
                return;
            }
            self.by_time.remove(&(old, id.to_string()));
            let at = at.min(old);
            self.by_time.insert((at, id.to_string()));
            self.due.insert(id.to_string(), (at, force || old_force));
            return;
        }
        self.by_time.insert((at, id.to_string()));
        self.due.insert(id.to_string(), (at, force));
    }

    /// Take every message due at `now`, marking it busy; also the next due
    /// time after those.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> (Vec<(String, bool)>, Option<DateTime<Utc>>) {
        let mut out = Vec::new();
        while let Some((t, id)) = self.by_time.first().cloned() {
            if t > now {
                break;
            }
            self.by_time.pop_first();
            let force = self.due.remove(&id).is_some_and(|(_, f)| f);
            if self.busy.contains(&id) {
                // An operator holds it: run when they are done.
                let e = self.again.entry(id).or_insert((t, force));
                e.0 = e.0.min(t);
                e.1 |= force;
                continue;
            }
            self.busy.insert(id.clone());
            out.push((id, force));
        }
        (out, self.by_time.first().map(|(t, _)| *t))
    }

    /// Mark `id` busy for an operator change; false if it already is.
    pub fn claim(&mut self, id: &str) -> bool {
        self.busy.insert(id.to_string())
    }

    /// Work on `id` ended; if it was scheduled meanwhile (by the work
    /// itself, or asked for by someone else), it is due at that time.
    pub fn done(&mut self, id: &str) {
        self.busy.remove(id);
        if let Some((at, force)) = self.again.remove(id) {
            self.at(id, at, force);
        }
    }

    /// Drop `id` from the schedule (deleted or held).
    pub fn forget(&mut self, id: &str) {
        if let Some((t, _)) = self.due.remove(id) {
            self.by_time.remove(&(t, id.to_string()));
        }
    }

    /// Messages scheduled (not busy).
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Nothing scheduled.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn due_in_order_and_busy_reruns() {
        let mut s = Schedule::default();
        s.at("b", t(20), false);
        s.at("a", t(10), false);
        s.at("a", t(30), false); // later: keeps 10
        let (due, next) = s.take_due(t(15));
        assert_eq!(due, vec![("a".to_string(), false)]);
        assert_eq!(next, Some(t(20)));
        s.at("a", t(0), true); // while busy: remembered
        assert_eq!(s.len(), 1);
        s.done("a");
        assert_eq!(s.len(), 2);
        // A time booked while busy is kept, not turned into "now".
        let (due, _) = s.take_due(t(5));
        assert!(due.contains(&("a".to_string(), true)));
        s.at("a", t(50), false);
        s.done("a");
        let (due, next) = s.take_due(t(15));
        assert!(due.is_empty(), "{due:?}");
        assert_eq!(next, Some(t(20)));
        let (due, next) = s.take_due(t(20));
        assert_eq!(due, vec![("b".to_string(), false)]);
        assert_eq!(next, Some(t(50)));
        s.done("b");
        s.at("b", t(20), false);
        let (due, _) = s.take_due(t(100));
        assert!(due.contains(&("a".to_string(), false)));
        assert!(due.contains(&("b".to_string(), false)));
    }

    #[test]
    fn claim_and_forget() {
        let mut s = Schedule::default();
        s.at("a", t(10), false);
        assert!(s.claim("x"));
        assert!(!s.claim("x"));
        s.forget("a");
        assert!(s.is_empty());
        let (due, next) = s.take_due(t(100));
        assert!(due.is_empty() && next.is_none());
    }
}
