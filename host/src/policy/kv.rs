//! The embedded key-value store behind `sluice:policy/kv`.
//!
//! **Per process and in memory**: nothing is persisted, a restart starts
//! empty, and two gateways do not share it. Keys live in one namespace
//! per policy name, so every version of one policy sees the same keys and
//! no policy sees another's; each namespace has its own quota
//! ([`Quota`]: entries, and octets counted with a fixed overhead per
//! entry), so one policy whose keys an attacker chooses (a rate limit on
//! senders) can fill its own namespace, never the store or another
//! policy's. A full namespace answers [`KvError::Full`], which the policy
//! sees as an error it can act on.
//!
//! Expiry costs O(log n) amortised per operation: entries with a TTL are
//! also in a min-heap by expiry; each operation on a namespace first drops
//! the entries whose time has come (each entry is dropped once), and a
//! heap grown with superseded entries is rebuilt from the map when it
//! doubles. Nothing ever scans a whole namespace under the lock on the
//! way to an answer. `incr` is atomic across concurrent sessions (one
//! lock, held for the operation only, never across an `await`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest key, in octets.
pub(crate) const MAX_KEY: usize = 512;
/// Largest value, in octets.
pub(crate) const MAX_VALUE: usize = 64 * 1024;
/// What one entry costs besides its key and value: the map slot, the
/// heap entry, the bookkeeping.
pub(crate) const ENTRY_OVERHEAD: usize = 96;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Empty or too long key, too large value, or `incr` on a value that is
    /// not a counter.
    #[error("{0}")]
    InvalidArgument(String),
    /// The policy's namespace (or the whole store) is full, even after
    /// removing expired entries.
    #[error("the key-value store is full: {0}")]
    Full(&'static str),
}

/// How much one policy's namespace may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys.
    pub max_entries: usize,
    /// Octets of keys and values, [`ENTRY_OVERHEAD`] per entry included.
    pub max_bytes: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 32 << 20,
        }
    }
}

#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Counter(i32),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
    /// Which heap entry is this entry's (older ones are superseded).
    generation: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    fn value_size(&self) -> usize {
        match &self.value {
            Value::Bytes(b) => b.len(),
            Value::Counter(_) => 4,
        }
    }
}

/// What an entry of `key` holding `e` costs.
fn cost(key: &str, e: &Entry) -> usize {
    ENTRY_OVERHEAD + key.len() + e.value_size()
}

#[derive(Debug, Default)]
struct Namespace {
    map: HashMap<String, Entry>,
    bytes: usize,
    expiry: BinaryHeap<Reverse<(Instant, u64, String)>>,
    quota: Option<Quota>,
}

impl Namespace {
    /// Drop the entries whose time has come; returns (entries, octets)
    /// dropped.
    fn expire(&mut self, now: Instant) -> (usize, usize) {
        let (mut n, mut b) = (0, 0);
        while let Some(Reverse((at, _, _))) = self.expiry.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, generation, key))) = self.expiry.pop() else {
                break;
            };
            // A superseded heap entry (the key was set again, or deleted)
            // is only dropped from the heap.
            if self
                .map
                .get(&key)
                .is_some_and(|e| e.generation == generation)
                && let Some(e) = self.map.remove(&key)
            {
                let c = cost(&key, &e);
                self.bytes -= c;
                n += 1;
                b += c;
            }
        }
        (n, b)
    }

    /// Rebuild the heap when superseded entries make it twice the map.
    fn compact(&mut self) {
        if self.expiry.len() > 2 * self.map.len() + 1024 {
            self.expiry = self
                .map
                .iter()
                .filter_map(|(k, e)| e.expires.map(|at| Reverse((at, e.generation, k.clone()))))
                .collect();
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    spaces: HashMap<String, Namespace>,
    entries: usize,
    bytes: usize,
    generation: u64,
}

impl Inner {
    /// The namespace `name`, its expired entries dropped.
    fn space(&mut self, name: &str, now: Instant) -> &mut Namespace {
        if !self.spaces.contains_key(name) {
            self.spaces.insert(name.to_string(), Namespace::default());
        }
        let ns = self.spaces.get_mut(name).expect("just made");
        let (n, b) = ns.expire(now);
        self.entries -= n;
        self.bytes -= b;
        self.spaces.get_mut(name).expect("just made")
    }
}

/// The embedded key-value store (see the module documentation).
#[derive(Debug)]
pub struct KvStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
    default_quota: Quota,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new(1_000_000, 256 << 20)
    }
}

impl KvStore {
    /// A store holding at most `max_entries` keys and `max_bytes` octets
    /// (all policies together); a namespace without a quota of its own
    /// ([`KvStore::set_quota`]) gets [`Quota::default`] within that.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        let q = Quota::default();
        Self {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
            default_quota: Quota {
                max_entries: q.max_entries.min(max_entries),
                max_bytes: q.max_bytes.min(max_bytes),
            },
        }
    }

    /// Give the namespace of policy `namespace` its own quota (kept while
    /// the process runs, across reloads, until set again).
    pub fn set_quota(&self, namespace: &str, quota: Quota) {
        let mut inner = self.lock();
        inner.spaces.entry(namespace.to_string()).or_default().quota = Some(quota);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-changed
        // (every update is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidArgument("the key is empty".into()));
        }
        if key.len() > MAX_KEY {
            return Err(KvError::InvalidArgument(format!(
                "the key is longer than {MAX_KEY} octets"
            )));
        }
        Ok(())
    }

    /// The value of `key` in `namespace`, if set and not expired. A counter
    /// reads as its decimal text.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Self::check_key(key)?;
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner
            .space(namespace, now)
            .map
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| match &e.value {
                Value::Bytes(b) => b.clone(),
                Value::Counter(n) => n.to_string().into_bytes(),
            }))
    }

    /// Set `key` to `value`, expiring after `ttl` (`None`: never).
    pub fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        Self::check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(KvError::InvalidArgument(format!(
                "the value is larger than {MAX_VALUE} octets"
            )));
        }
        let now = Instant::now();
        let mut inner = self.lock();
        self.insert(&mut inner, namespace, key, Value::Bytes(value), ttl, now)
    }

    /// Add `delta` to the counter at `key` (absent or expired: 0), saturating
    /// at the `i32` bounds, and return the new value. The expiry is set when
    /// the key is created and kept afterwards. A value set with [`set`]
    /// that is the decimal text of an `i32` counts as a counter.
    ///
    /// [`set`]: KvStore::set
    pub fn incr(
        &self,
        namespace: &str,
        key: &str,
        delta: i32,
        ttl: Option<Duration>,
    ) -> Result<i32, KvError> {
        Self::check_key(key)?;
        let now = Instant::now();
        let mut inner = self.lock();
        let ns = inner.space(namespace, now);
        if let Some(e) = ns.map.get_mut(key)
            && e.live(now)
        {
            let current = match &e.value {
                Value::Counter(n) => *n,
                Value::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .ok_or_else(|| {
                        KvError::InvalidArgument(format!("{key:?} does not hold a counter"))
                    })?,
            };
            let old = e.value_size();
            let n = current.saturating_add(delta);
            e.value = Value::Counter(n);
            let new = e.value_size();
            ns.bytes = ns.bytes + new - old;
            inner.bytes = inner.bytes + new - old;
            return Ok(n);
        }
        self.insert(&mut inner, namespace, key, Value::Counter(delta), ttl, now)?;
        Ok(delta)
    }

    /// Remove `key` (no error when absent).
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        Self::check_key(key)?;
        let mut inner = self.lock();
        let Some(ns) = inner.spaces.get_mut(namespace) else {
            return Ok(());
        };
        if let Some(e) = ns.map.remove(key) {
            let c = cost(key, &e);
            ns.bytes -= c;
            inner.entries -= 1;
            inner.bytes -= c;
        }
        Ok(())
    }

    /// Keys currently held, all namespaces (expired ones included until
    /// their namespace is next used).
    pub fn len(&self) -> usize {
        self.lock().entries
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        &self,
        inner: &mut Inner,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(), KvError> {
        inner.generation += 1;
        let generation = inner.generation;
        let entry = Entry {
            value,
            expires: ttl.map(|t| now + t),
            generation,
        };
        let new = cost(key, &entry);
        inner.space(namespace, now);
        let (total_entries, total_bytes) = (inner.entries, inner.bytes);
        let ns = inner.spaces.get_mut(namespace).expect("made by space()");
        let quota = ns.quota.unwrap_or(self.default_quota);
        let old = ns.map.get(key).map(|e| cost(key, e));
        let adds = usize::from(old.is_none());
        let old = old.unwrap_or(0);
        if ns.map.len() + adds > quota.max_entries || ns.bytes - old + new > quota.max_bytes {
            return Err(KvError::Full(
                "kv_max_entries / kv_max_memory of the policy",
            ));
        }
        if total_entries + adds > self.max_entries || total_bytes - old + new > self.max_bytes {
            return Err(KvError::Full("all policies together"));
        }
        if let Some(at) = entry.expires {
            ns.expiry.push(Reverse((at, generation, key.to_string())));
        }
        ns.map.insert(key.to_string(), entry);
        ns.bytes = ns.bytes - old + new;
        ns.compact();
        inner.entries += adds;
        inner.bytes = inner.bytes - old + new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_set_get_delete() {
        let kv = KvStore::default();
        kv.set("a", "k", b"v".to_vec(), None).unwrap();
        assert_eq!(kv.get("a", "k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        kv.delete("a", "k").unwrap();
        kv.delete("a", "k").unwrap();
        assert_eq!(kv.get("a", "k").unwrap(), None);
        assert!(kv.is_empty());
    }

    #[test]
    fn ttl_expires() {
        let kv = KvStore::default();
        kv.set("a", "k", b"v".to_vec(), Some(Duration::from_millis(20)))
            .unwrap();
        assert!(kv.get("a", "k").unwrap().is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(kv.get("a", "k").unwrap(), None);
        assert_eq!(kv.incr("a", "k", 2, None).unwrap(), 2);
    }

    #[test]
    fn incr_saturates_keeps_expiry_and_refuses_non_counters() {
        let kv = KvStore::default();
        assert_eq!(
            kv.incr("a", "n", 5, Some(Duration::from_secs(60))).unwrap(),
            5
        );
        assert_eq!(kv.incr("a", "n", -7, None).unwrap(), -2);
        assert_eq!(kv.get("a", "n").unwrap(), Some(b"-2".to_vec()));
        assert_eq!(kv.incr("a", "n", i32::MIN, None).unwrap(), i32::MIN);
        assert_eq!(kv.incr("a", "m", i32::MAX, None).unwrap(), i32::MAX);
        assert_eq!(kv.incr("a", "m", 1, None).unwrap(), i32::MAX);
        kv.set("a", "s", b"12".to_vec(), None).unwrap();
        assert_eq!(kv.incr("a", "s", 1, None).unwrap(), 13);
        kv.set("a", "t", b"text".to_vec(), None).unwrap();
        assert!(matches!(
            kv.incr("a", "t", 1, None),
            Err(KvError::InvalidArgument(_))
        ));
    }

    #[test]
    fn bounds() {
        let kv = KvStore::new(2, 1 << 20);
        assert!(matches!(kv.get("a", ""), Err(KvError::InvalidArgument(_))));
        assert!(matches!(
            kv.get("a", &"k".repeat(MAX_KEY + 1)),
            Err(KvError::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.set("a", "k", vec![0; MAX_VALUE + 1], None),
            Err(KvError::InvalidArgument(_))
        ));
        kv.set("a", "1", vec![], Some(Duration::from_millis(10)))
            .unwrap();
        kv.set("a", "2", vec![], None).unwrap();
        assert!(matches!(
            kv.set("a", "3", vec![], None),
            Err(KvError::Full(_))
        ));
        kv.set("a", "2", b"overwrite".to_vec(), None).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        kv.set("a", "3", vec![], None).unwrap();
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn incr_is_atomic_across_threads() {
        let kv = std::sync::Arc::new(KvStore::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.incr("p", "n", 1, None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.incr("p", "n", 0, None).unwrap(), 4000);
    }

    #[test]
    fn finding_05_one_namespace_full_leaves_the_others_alone() {
        let kv = KvStore::new(1_000, 1 << 20);
        kv.set_quota(
            "rate-limit",
            Quota {
                max_entries: 10,
                max_bytes: 1 << 20,
            },
        );
        for i in 0..10 {
            kv.incr(
                "rate-limit",
                &format!("sender:{i}"),
                1,
                Some(Duration::from_secs(60)),
            )
            .unwrap();
        }
        assert!(matches!(
            kv.incr(
                "rate-limit",
                "sender:attacker",
                1,
                Some(Duration::from_secs(60))
            ),
            Err(KvError::Full(_))
        ));
        // Counting an existing key still works, and so does every other
        // policy's namespace.
        assert_eq!(kv.incr("rate-limit", "sender:3", 1, None).unwrap(), 2);
        kv.set("greylist", "k", b"v".to_vec(), None).unwrap();
        // Bytes count the overhead per entry.
        kv.set_quota(
            "tiny",
            Quota {
                max_entries: 100,
                max_bytes: 2 * ENTRY_OVERHEAD,
            },
        );
        kv.set("tiny", "a", vec![], None).unwrap();
        assert!(matches!(
            kv.set("tiny", "bb", vec![0; ENTRY_OVERHEAD], None),
            Err(KvError::Full(_))
        ));
    }

    #[test]
    fn finding_05_expiry_frees_room_without_a_sweep() {
        let kv = KvStore::new(1_000_000, 1 << 30);
        kv.set_quota(
            "p",
            Quota {
                max_entries: 1000,
                max_bytes: 1 << 30,
            },
        );
        for i in 0..1000 {
            kv.set(
                "p",
                &format!("k{i}"),
                vec![],
                Some(Duration::from_millis(5)),
            )
            .unwrap();
        }
        assert!(kv.set("p", "more", vec![], None).is_err());
        std::thread::sleep(Duration::from_millis(20));
        kv.set("p", "more", vec![], None).unwrap();
        assert_eq!(kv.len(), 1, "expired entries dropped as their time came");
        // Overwriting one key many times keeps the heap bounded.
        for _ in 0..10_000 {
            kv.set("p", "same", vec![], Some(Duration::from_secs(60)))
                .unwrap();
        }
        let inner = kv.lock();
        assert!(inner.spaces["p"].expiry.len() <= 2 * inner.spaces["p"].map.len() + 1024);
    }
}
