//! The embedded key-value store behind `sluice:policy/kv`.
//!
//! **Per process and in memory**: nothing is persisted, a restart starts
//! empty, and two gateways do not share it. Keys are namespaced by policy
//! name, so every version of one policy sees the same keys and no policy
//! sees another's. Entries expire after their TTL (checked on access, and
//! swept when the store is full); `incr` is atomic across concurrent
//! sessions (one lock, held for the operation only, never across an
//! `await`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest key, in octets.
pub(crate) const MAX_KEY: usize = 512;
/// Largest value, in octets.
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Empty or too long key, too large value, or `incr` on a value that is
    /// not a counter.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store is full (even after removing expired entries).
    #[error("the key-value store is full")]
    Full,
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
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    fn size(&self) -> usize {
        match &self.value {
            Value::Bytes(b) => b.len(),
            Value::Counter(_) => 4,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(String, String), Entry>,
    bytes: usize,
}

/// The embedded key-value store (see the module documentation).
#[derive(Debug)]
pub struct KvStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new(1_000_000, 256 << 20)
    }
}

impl KvStore {
    /// A store holding at most `max_entries` keys and `max_bytes` octets of
    /// keys and values (all policies together).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
        }
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
        let inner = self.lock();
        Ok(inner
            .map
            .get(&(namespace.to_string(), key.to_string()))
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
        let entry = Entry {
            value: Value::Bytes(value),
            expires: ttl.map(|t| now + t),
        };
        let mut inner = self.lock();
        self.insert(
            &mut inner,
            (namespace.to_string(), key.to_string()),
            entry,
            now,
        )
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
        let k = (namespace.to_string(), key.to_string());
        let mut inner = self.lock();
        if let Some(e) = inner.map.get_mut(&k)
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
            let old = e.size();
            let n = current.saturating_add(delta);
            e.value = Value::Counter(n);
            let new = e.size();
            inner.bytes = inner.bytes + new - old;
            return Ok(n);
        }
        let entry = Entry {
            value: Value::Counter(delta),
            expires: ttl.map(|t| now + t),
        };
        self.insert(&mut inner, k, entry, now)?;
        Ok(delta)
    }

    /// Remove `key` (no error when absent).
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        Self::check_key(key)?;
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(&(namespace.to_string(), key.to_string())) {
            inner.bytes -= e.size() + namespace.len() + key.len();
        }
        Ok(())
    }

    /// Keys currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        &self,
        inner: &mut Inner,
        key: (String, String),
        entry: Entry,
        now: Instant,
    ) -> Result<(), KvError> {
        let cost = key.0.len() + key.1.len() + entry.size();
        let old = inner
            .map
            .get(&key)
            .map_or(0, |e| key.0.len() + key.1.len() + e.size());
        let fits = |inner: &Inner| {
            (inner.map.len() < self.max_entries || old > 0)
                && inner.bytes - old + cost <= self.max_bytes
        };
        if !fits(inner) {
            let before = inner.map.len();
            inner.map.retain(|_, e| e.live(now));
            if inner.map.len() != before {
                inner.bytes = inner
                    .map
                    .iter()
                    .map(|(k, e)| k.0.len() + k.1.len() + e.size())
                    .sum();
            }
            let old_live = inner
                .map
                .get(&key)
                .map_or(0, |e| key.0.len() + key.1.len() + e.size());
            if !((inner.map.len() < self.max_entries || old_live > 0)
                && inner.bytes - old_live + cost <= self.max_bytes)
            {
                return Err(KvError::Full);
            }
        }
        let old = inner
            .map
            .insert(key.clone(), entry)
            .map_or(0, |e| key.0.len() + key.1.len() + e.size());
        inner.bytes = inner.bytes - old + cost;
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
        assert_eq!(kv.set("a", "3", vec![], None), Err(KvError::Full));
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
}
