//! Idle outbound connections kept for reuse, per destination address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::delivery::client::Connection;

/// Idle connections by key (address, server name, TLS mode, protocol).
#[derive(Debug)]
pub(super) struct Pool {
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    max_idle: Duration,
}

impl Pool {
    pub(super) fn new(max_idle: Duration) -> Self {
        Self {
            idle: Mutex::default(),
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Connection, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh idle connection for `key`, if one is there.
    pub(super) fn take(&self, key: &str) -> Option<Connection> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < self.max_idle && c.is_usable() {
                return Some(c);
            }
            tokio::spawn(c.quit());
        }
        None
    }

    /// Keep `conn` for reuse (or close it when reuse is off).
    pub(super) fn put(&self, key: String, conn: Connection) {
        if self.max_idle.is_zero() || !conn.is_usable() {
            tokio::spawn(conn.quit());
            return;
        }
        self.lock()
            .entry(key)
            .or_default()
            .push((conn, Instant::now()));
    }

    /// Close connections idle too long.
    fn expire(&self) -> Vec<Connection> {
        let mut out = Vec::new();
        let mut idle = self.lock();
        for list in idle.values_mut() {
            let (keep, old): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|(_, since)| since.elapsed() < self.max_idle);
            *list = keep;
            out.extend(old.into_iter().map(|(c, _)| c));
        }
        idle.retain(|_, l| !l.is_empty());
        out
    }

    /// Close everything (shutdown).
    pub(super) async fn close_all(&self) {
        let all: Vec<Connection> = self
            .lock()
            .drain()
            .flat_map(|(_, l)| l.into_iter().map(|(c, _)| c))
            .collect();
        for c in all {
            c.quit().await;
        }
    }
}

/// Every so often, QUIT connections idle longer than allowed.
pub(super) async fn reap(inner: Arc<super::Inner>) {
    let every = (inner.pool.max_idle / 2).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        for c in inner.pool.expire() {
            c.quit().await;
        }
    }
}
