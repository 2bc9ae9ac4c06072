//! The queue: picks up every spooled message (also those found at start),
//! decides per recipient where it goes, delivers, retries on a schedule,
//! and ends every message in exactly one of: delivered, bounced with a
//! DSN, or deleted by an operator.
//!
//! "When to try" is a schedule of due times per message ([`schedule`]);
//! "who can go now" is a per-destination semaphore plus a global one, so a
//! slow destination only holds up its own recipients. Per-recipient state
//! lives in the spool envelope and is persisted after every attempt, so a
//! restart never re-sends to a recipient already delivered (except the one
//! attempt in flight at a crash: at-least-once, never zero).

mod deliver;
mod dsn_limit;
mod plan;
mod pool;
mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, watch};

use crate::budget::{Held, MemoryBudget};
use crate::config::Config;
use crate::delivery::client::{ClientConfig, Credentials};
use crate::delivery::maildir::Maildirs;
use crate::delivery::{Outcome, dsn};
use crate::dns::Resolver;
use crate::route::{Route, TlsMode};
use crate::smtp::Enhanced;
use crate::spool::{
    ClientInfo, Envelope, NewMessage, RcptState, Recipient, SetAside, Spool, SpoolError,
    new_queue_id,
};

pub use schedule::Schedule;

/// Queue operation errors (operator commands).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No such message.
    #[error("no message {0} in the queue")]
    NotFound(String),
    /// The message is being delivered right now.
    #[error("message {0} is being delivered right now; try again in a moment")]
    Busy(String),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Decides the [`Route`] of each recipient by domain match: local domains
/// → local delivery; anything else → the relay host when one is set, or
/// the domain's MX. (The policy layer will make this decision later; this
/// is its default.)
#[derive(Debug, Clone)]
pub struct Router {
    local_domains: Vec<String>,
    relay: Option<(String, u16, TlsMode)>,
    /// Where address-literal recipients may go.
    literals: crate::route::LiteralRule,
}

impl Router {
    /// From the configuration.
    pub fn new(cfg: &Config) -> Self {
        Self {
            local_domains: cfg.local_domains.clone(),
            relay: cfg.delivery.relay_host.as_deref().and_then(|r| {
                crate::route::parse_host_port(r).map(|(h, p)| (h, p, cfg.delivery.relay_tls))
            }),
            literals: cfg.delivery.literal_rule(),
        }
    }

    /// Is `host:port` the configured `relay_host`? The relay credentials
    /// go there only, never to a relay host a route policy names.
    pub fn is_relay_host(&self, host: &str, port: u16) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|(h, p, _)| h.eq_ignore_ascii_case(host) && *p == port)
    }

    /// The route of one recipient address.
    pub fn route(&self, address: &str) -> Route {
        let Some((_, domain)) = address.rsplit_once('@') else {
            // A bare <postmaster> is always ours.
            return Route::Local;
        };
        let domain = domain.trim_end_matches('.').to_lowercase();
        if self.local_domains.contains(&domain) {
            return Route::Local;
        }
        match &self.relay {
            Some((host, port, tls)) => Route::Relay {
                host: host.clone(),
                port: *port,
                tls: *tls,
            },
            None => Route::Mx { domain },
        }
    }
}

/// Everything the queue's tasks share.
/// Writes of a message's delivery state before it is kept in memory
/// instead, and the pause after the first failed one (growing 4×).
const PERSIST_TRIES: u32 = 4;
const PERSIST_PAUSE: Duration = Duration::from_millis(50);

struct Inner {
    spool: Arc<dyn Spool>,
    cfg: Config,
    router: Router,
    resolver: Arc<dyn Resolver>,
    client: ClientConfig,
    credentials: Option<Credentials>,
    maildirs: Maildirs,
    /// Our listening addresses, for mail-loop detection.
    self_addrs: Vec<SocketAddr>,
    /// The live policy chain; those of its policies with a `route` hook
    /// are asked before the domain match.
    chain: Arc<crate::policy::LiveChain>,
    schedule: Mutex<Schedule>,
    wake: Notify,
    /// Messages being worked on at once.
    active: Semaphore,
    /// The gateway's message memory budget: a message is read only when
    /// its size fits.
    budget: Arc<MemoryBudget>,
    /// Deliveries in flight, all destinations.
    global: Arc<Semaphore>,
    /// Deliveries in flight per destination.
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    pool: pool::Pool,
    in_progress: tokio_util_lite::Tracker,
    /// Delivery state the spool would not take (after retries): used
    /// instead of the file until a write succeeds, so a delivered
    /// recipient is never sent again by this process.
    unsaved: Mutex<HashMap<String, Envelope>>,
    /// DSNs per sender domain this hour.
    dsn_limit: dsn_limit::DsnLimit,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("spool", &self.spool)
            .field("self_addrs", &self.self_addrs)
            .finish_non_exhaustive()
    }
}

/// A handle on the running queue.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// The pieces the queue needs from start-up.
#[derive(Debug)]
pub struct QueueParts {
    /// The gateway's message memory budget (shared with the sessions).
    pub budget: Arc<MemoryBudget>,
    /// The spool.
    pub spool: Arc<dyn Spool>,
    /// The configuration.
    pub config: Config,
    /// DNS.
    pub resolver: Arc<dyn Resolver>,
    /// Outbound client settings.
    pub client: ClientConfig,
    /// Our listening addresses.
    pub self_addrs: Vec<SocketAddr>,
    /// The live policy chain, whose `route` hooks choose next hops.
    pub chain: Arc<crate::policy::LiveChain>,
}

impl Queue {
    /// Build the queue and load every message in the spool into the
    /// schedule. Call [`Queue::run`] to start delivering.
    pub fn new(parts: QueueParts) -> Result<Self, QueueError> {
        let cfg = parts.config;
        let credentials = match (&cfg.delivery.relay_username, &cfg.delivery.relay_password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
                allow_unverified_tls: cfg.delivery.relay_auth_unverified_tls,
            }),
            _ => None,
        };
        let mut schedule = Schedule::default();
        let now = Utc::now();
        let mut loaded = 0;
        for id in parts.spool.list()? {
            match parts.spool.read_envelope(&id) {
                Ok(env) if env.held => {}
                Ok(env) => {
                    schedule.at(&id, next_due(&env).unwrap_or(now), false);
                    loaded += 1;
                }
                Err(e) if e.is_damage() => set_aside(parts.spool.as_ref(), &id, &e),
                Err(e) => tracing::error!(id, error = %e, "unreadable envelope left in the queue"),
            }
        }
        if loaded > 0 {
            tracing::info!(messages = loaded, "queue loaded from the spool");
        }
        let q = &cfg.queue;
        let inner = Inner {
            router: Router::new(&cfg),
            maildirs: Maildirs::new(cfg.data_dir.join("mail"), &cfg.hostname),
            active: Semaphore::new(q.concurrency.max(1) * 2),
            budget: parts.budget,
            global: Arc::new(Semaphore::new(q.concurrency.max(1))),
            destinations: Mutex::default(),
            pool: pool::Pool::new(cfg.delivery.idle_connection_time),
            schedule: Mutex::new(schedule),
            wake: Notify::new(),
            spool: parts.spool,
            resolver: parts.resolver,
            client: parts.client,
            credentials,
            self_addrs: parts.self_addrs,
            chain: parts.chain,
            in_progress: tokio_util_lite::Tracker::default(),
            unsaved: Mutex::default(),
            dsn_limit: dsn_limit::DsnLimit::new(cfg.queue.max_dsns_per_domain),
            cfg,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// A message was stored: try it now.
    pub fn submit(&self, id: &str) {
        self.inner.lock_schedule().at(id, Utc::now(), false);
        self.inner.wake.notify_one();
    }

    /// Deliver until `shutdown`; then wait (bounded) for deliveries in
    /// flight and close idle connections.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let expiry = tokio::spawn(self.clone().expire_quarantine());
        if !self.inner.cfg.queue.deliver {
            tracing::warn!(
                "[queue] deliver = false: mail is accepted into the spool and not delivered"
            );
            let _ = shutdown.wait_for(|s| *s).await;
            expiry.abort();
            return;
        }
        let reaper = tokio::spawn(pool::reap(self.inner.clone()));
        loop {
            let (due, next) = self.inner.lock_schedule().take_due(Utc::now());
            for (id, force) in due {
                let inner = self.inner.clone();
                let guard = self.inner.in_progress.enter();
                tokio::spawn(async move {
                    inner.process(&id, force).await;
                    inner.lock_schedule().done(&id);
                    inner.wake.notify_one();
                    drop(guard);
                });
            }
            let sleep = next
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        let grace = Duration::from_secs(10);
        if tokio::time::timeout(grace, self.inner.in_progress.wait())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still in flight at shutdown; they will be retried at start");
        }
        reaper.abort();
        expiry.abort();
        self.inner.pool.close_all().await;
    }

    /// Delete quarantined messages past `quarantine_lifetime`, looking
    /// every quarter of it (at least every second, at most every hour).
    async fn expire_quarantine(self) {
        let lifetime = self.inner.cfg.queue.quarantine_lifetime;
        if lifetime.is_zero() {
            return;
        }
        let every = (lifetime / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            tokio::time::sleep(every).await;
            let Ok(all) = self.list().await else {
                continue;
            };
            let now = Utc::now();
            for env in all {
                if env.quarantine.is_none() || !past_lifetime(env.received_at, lifetime, now) {
                    continue;
                }
                let reason = env.quarantine.clone().unwrap_or_default();
                let id = env.id.clone();
                let r = self
                    .with_message(&id, |spool, id| {
                        // Released meanwhile: no longer ours to expire.
                        let current = spool.read_envelope(id).map_err(|e| not_found(e, id))?;
                        let quarantined = current.quarantine.is_some();
                        if quarantined {
                            spool.remove(id)?;
                        }
                        Ok(quarantined)
                    })
                    .await;
                match r {
                    Ok(true) => tracing::info!(
                        queue_id = %id,
                        sender = %env.sender,
                        reason = %reason,
                        "quarantine expired: message deleted"
                    ),
                    // Released between the listing and now: it is due
                    // (`with_message` took it off the schedule).
                    Ok(false) => {
                        self.inner.lock_schedule().at(&id, Utc::now(), false);
                        self.inner.wake.notify_one();
                    }
                    Err(QueueError::Busy(_)) => {}
                    Err(e) => {
                        tracing::warn!(queue_id = %id, error = %e, "cannot expire quarantined message")
                    }
                }
            }
        }
    }

    // ---- operator commands ----

    /// Every message's envelope, oldest first.
    pub async fn list(&self) -> Result<Vec<Envelope>, QueueError> {
        let spool = self.inner.spool.clone();
        blocking(move || {
            let mut out = Vec::new();
            for id in spool.list()? {
                match spool.read_envelope(&id) {
                    Ok(e) => out.push(e),
                    Err(SpoolError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) if e.is_damage() => set_aside(spool.as_ref(), &id, &e),
                    // One entry that cannot be read now (permissions, I/O)
                    // does not hide the others.
                    Err(e) => tracing::error!(queue_id = %id, error = %e, "cannot read envelope"),
                }
            }
            out.sort_by_key(|e| e.received_at);
            Ok(out)
        })
        .await
    }

    /// The damaged entries set aside in `spool/corrupt/`.
    pub async fn corrupt(&self) -> Result<Vec<SetAside>, QueueError> {
        let spool = self.inner.spool.clone();
        blocking(move || Ok(spool.corrupt()?)).await
    }

    /// One message: its envelope and header section.
    pub async fn show(&self, id: &str) -> Result<(Envelope, String), QueueError> {
        let spool = self.inner.spool.clone();
        let id = id.to_string();
        blocking(move || {
            let (env, msg) = spool.read(&id).map_err(|e| not_found(e, &id))?;
            let headers = String::from_utf8_lossy(dsn::header_section(&msg)).into_owned();
            Ok((env, headers))
        })
        .await
    }

    /// Try deferred recipients now (one message, or all with `None`).
    pub async fn retry(&self, id: Option<&str>) -> Result<usize, QueueError> {
        let ids = match id {
            Some(id) => {
                self.show(id).await?;
                vec![id.to_string()]
            }
            None => self
                .list()
                .await?
                .into_iter()
                .filter(|e| !e.held)
                .map(|e| e.id)
                .collect(),
        };
        let now = Utc::now();
        {
            let mut s = self.inner.lock_schedule();
            for id in &ids {
                s.at(id, now, true);
            }
        }
        self.inner.wake.notify_one();
        Ok(ids.len())
    }

    /// Delete a message without delivering it or sending a DSN.
    pub async fn delete(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.with_message(&id, |spool, id| {
            spool.read_envelope(id).map_err(|e| not_found(e, id))?;
            spool.remove(id)?;
            Ok(())
        })
        .await?;
        tracing::info!(queue_id = %id, "deleted by operator");
        Ok(())
    }

    /// Hold (`true`) or release (`false`) a message.
    pub async fn hold(&self, id: &str, hold: bool) -> Result<(), QueueError> {
        let id = id.to_string();
        self.with_message(&id, move |spool, id| {
            let mut env = spool.read_envelope(id).map_err(|e| not_found(e, id))?;
            env.held = hold;
            spool.update(&env)?;
            Ok(())
        })
        .await?;
        tracing::info!(queue_id = %id, held = hold, "hold changed by operator");
        if !hold {
            self.inner.lock_schedule().at(&id, Utc::now(), true);
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Run a blocking change on one message while no delivery touches it.
    async fn with_message<F, T>(&self, id: &str, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(&dyn Spool, &str) -> Result<T, QueueError> + Send + 'static,
        T: Send + 'static,
    {
        if !self.inner.lock_schedule().claim(id) {
            return Err(QueueError::Busy(id.to_string()));
        }
        let spool = self.inner.spool.clone();
        let owned = id.to_string();
        let r = blocking(move || f(spool.as_ref(), &owned)).await;
        let mut s = self.inner.lock_schedule();
        s.done(id);
        s.forget(id);
        r
    }
}

fn not_found(e: SpoolError, id: &str) -> QueueError {
    match e {
        SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            QueueError::NotFound(id.to_string())
        }
        SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput => {
            QueueError::NotFound(id.to_string())
        }
        e => QueueError::Spool(e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| QueueError::Spool(SpoolError::Closed))?
}

/// The earliest time a recipient of `env` is due, if any is.
fn next_due(env: &Envelope) -> Option<DateTime<Utc>> {
    env.recipients
        .iter()
        .filter_map(|r| match r.state {
            RcptState::Pending => Some(env.received_at),
            RcptState::Deferred => Some(r.next_attempt.unwrap_or(env.received_at)),
            _ => None,
        })
        .min()
}

/// The retry delay after `attempts` failed attempts: `initial * 2^(n-1)`,
/// at most `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    initial.saturating_mul(factor).min(max)
}

impl Inner {
    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn destination(&self, key: &str) -> Arc<Semaphore> {
        let mut d = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        d.entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.cfg.queue.destination_concurrency.max(1),
                ))
            })
            .clone()
    }

    /// Work on one message: deliver its due recipients, persist their
    /// state, bounce or finish it, or schedule its next attempt.
    async fn process(self: &Arc<Self>, id: &str, force: bool) {
        let Ok(_active) = self.active.acquire().await else {
            return;
        };
        let Some((mut env, msg, _memory)) = self.load(id).await else {
            return;
        };
        if env.held {
            return;
        }
        let now = Utc::now();
        let expired = self.expire(&mut env, &msg, now);
        let (groups, routed) = self.plan_routes(&mut env, now, force).await;
        let env = Arc::new(tokio::sync::Mutex::new(env));
        if expired || routed {
            self.persist(&env).await;
        }
        let msg = Arc::new(msg);
        self.deliver_groups(&env, &msg, groups).await;
        self.settle(id, &env, &msg).await;
    }

    /// Read a message from the spool, its content once the memory budget
    /// has room for it (waiting until it has); `None` when it is gone or
    /// cannot be read now (then it is tried again later). The [`Held`]
    /// holds the message's share of the budget.
    async fn load(&self, id: &str) -> Option<(Envelope, Vec<u8>, Held)> {
        let spool = self.spool.clone();
        let owned = id.to_string();
        let env = tokio::task::spawn_blocking(move || spool.read_envelope(&owned)).await;
        let env = self.loaded(id, env).await?;
        let held = self
            .budget
            .reserve(usize::try_from(env.size).unwrap_or(usize::MAX))
            .await;
        let spool = self.spool.clone();
        let owned = id.to_string();
        let body = tokio::task::spawn_blocking(move || spool.read_body(&owned)).await;
        let body = self.loaded(id, body).await?;
        Some((self.unsaved_state(id).unwrap_or(env), body, held))
    }

    /// What a read of message `id` from the spool gave: the value, or
    /// `None` when it is gone, damaged (then set aside) or unreadable now
    /// (then tried again later).
    async fn loaded<T>(
        &self,
        id: &str,
        r: Result<Result<T, SpoolError>, tokio::task::JoinError>,
    ) -> Option<T> {
        match r {
            Ok(Ok(v)) => Some(v),
            Ok(Err(SpoolError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Ok(Err(e)) if e.is_damage() => {
                let spool = self.spool.clone();
                let owned = id.to_string();
                let _ = tokio::task::spawn_blocking(move || set_aside(spool.as_ref(), &owned, &e))
                    .await;
                None
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = id, error = %e, "cannot read queued message; retrying later");
                self.lock_schedule().at(
                    id,
                    Utc::now()
                        + chrono::Duration::from_std(self.cfg.queue.retry_initial)
                            .unwrap_or_default(),
                    false,
                );
                None
            }
            Err(_) => None,
        }
    }

    /// Fail the recipients of a message past its lifetime, or of one
    /// that loops; true when a recipient changed.
    fn expire(&self, env: &mut Envelope, msg: &[u8], now: DateTime<Utc>) -> bool {
        let mut changed = false;
        if past_lifetime(env.received_at, self.cfg.queue.max_lifetime, now) {
            for r in env.recipients.iter_mut().filter(|r| !r.state.is_final()) {
                let last = r.diagnostic.clone().unwrap_or_default();
                record(
                    r,
                    now,
                    Outcome::fail(
                        Enhanced(4, 4, 7),
                        format!("delivery time expired; last error: {last}"),
                    ),
                    false,
                );
                changed = true;
            }
        }
        let received = crate::smtp::header::count_received(msg);
        if received > self.cfg.delivery.max_received_headers {
            for r in env.recipients.iter_mut().filter(|r| !r.state.is_final()) {
                record(
                    r,
                    now,
                    Outcome::fail(
                        Enhanced(5, 4, 6),
                        format!("mail loop: {received} Received: headers"),
                    ),
                    false,
                );
                changed = true;
            }
        }
        changed
    }

    /// Deliver each group of recipients in its own task and record the
    /// outcomes; returns when every group is done.
    async fn deliver_groups(
        self: &Arc<Self>,
        env: &Arc<tokio::sync::Mutex<Envelope>>,
        msg: &Arc<Vec<u8>>,
        groups: Vec<(Route, Vec<usize>)>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for (route, idx) in groups {
            let inner = self.clone();
            let env = env.clone();
            let msg = msg.clone();
            tasks.spawn(async move {
                let snapshot = env.lock().await.clone();
                let outcomes = inner.deliver_group(&route, &snapshot, &idx, msg).await;
                let now = Utc::now();
                {
                    let mut e = env.lock().await;
                    let initial = inner.cfg.queue.retry_initial;
                    let max = inner.cfg.queue.retry_max;
                    for (i, o) in idx.iter().zip(outcomes) {
                        let r = &mut e.recipients[*i];
                        log_outcome(&snapshot.id, &r.address, &o);
                        record(r, now, o, true);
                        if r.state == RcptState::Deferred {
                            r.next_attempt = Some(
                                now + chrono::Duration::from_std(backoff(r.attempts, initial, max))
                                    .unwrap_or_default(),
                            );
                        }
                    }
                }
                inner.persist(&env).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// After the attempt: finish the message (delivered, bounced) or
    /// schedule its next one.
    async fn settle(self: &Arc<Self>, id: &str, env: &tokio::sync::Mutex<Envelope>, msg: &[u8]) {
        let env = env.lock().await.clone();
        if env.is_finished() {
            self.finish(env, msg).await;
        } else if let Some(next) = next_due(&env) {
            self.lock_schedule().at(id, next, false);
        }
    }

    /// Write the envelope's delivery state to the spool. One writer per
    /// message: the lock is held until the file is in place, so the route
    /// groups of a message write one after the other and the last write
    /// carries every outcome. A failed write is retried; one that keeps
    /// failing is logged and the state kept in memory (see `unsaved`).
    async fn persist(&self, env: &tokio::sync::Mutex<Envelope>) {
        let guard = env.lock().await;
        let id = guard.id.clone();
        let mut pause = PERSIST_PAUSE;
        for attempt in 1..=PERSIST_TRIES {
            let spool = self.spool.clone();
            let snapshot = guard.clone();
            match tokio::task::spawn_blocking(move || spool.update(&snapshot)).await {
                Ok(Ok(())) => {
                    self.lock_unsaved().remove(&id);
                    return;
                }
                Ok(Err(e)) if attempt < PERSIST_TRIES => {
                    tracing::warn!(queue_id = %id, error = %e, attempt, "cannot persist delivery state; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        queue_id = %id,
                        error = %e,
                        attempts = attempt,
                        "cannot persist delivery state; kept in memory, so this process \
                         sends no recipient twice, but a restart before the spool takes it \
                         may repeat deliveries"
                    );
                    self.lock_unsaved().insert(id, guard.clone());
                    return;
                }
                // The runtime is shutting down.
                Err(_) => return,
            }
        }
    }

    fn lock_unsaved(&self) -> std::sync::MutexGuard<'_, HashMap<String, Envelope>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delivery state of `id` the spool did not take, if any.
    fn unsaved_state(&self, id: &str) -> Option<Envelope> {
        self.lock_unsaved().get(id).cloned()
    }

    /// The DSN of `kind` for the recipients at `which`, unless none may be
    /// sent: [`dsn::build_with_limit`]'s rules (never to `<>`, only as
    /// NOTIFY asks), never to an address-literal sender, at most
    /// `max_dsns_per_domain` per sender domain per hour.
    fn dsn(
        &self,
        env: &Envelope,
        msg: &[u8],
        which: &[usize],
        kind: dsn::DsnKind,
    ) -> Option<dsn::Dsn> {
        let limit = usize::try_from(self.cfg.queue.bounce_size_limit.0).unwrap_or(usize::MAX);
        let d =
            dsn::build_with_limit(env, msg, which, kind, &self.cfg.hostname, Utc::now(), limit)?;
        let domain = env.sender.rsplit_once('@').map_or("", |(_, d)| d);
        let refusal = if domain.starts_with('[') {
            Some("the sender is an address literal")
        } else if !self.dsn_limit.allow(domain) {
            Some("too many DSNs to this sender domain this hour (max_dsns_per_domain)")
        } else {
            None
        };
        if let Some(why) = refusal {
            tracing::warn!(queue_id = %env.id, sender = %env.sender, kind = ?kind, why, "DSN not sent");
            return None;
        }
        Some(d)
    }

    /// Every recipient is final: bounce the failures (one DSN for the
    /// message), then remove it.
    async fn finish(self: &Arc<Self>, env: Envelope, msg: &[u8]) {
        let failed: Vec<usize> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RcptState::Failed)
            .map(|(i, _)| i)
            .collect();
        if !failed.is_empty()
            && let Some(d) = self.dsn(&env, msg, &failed, dsn::DsnKind::Failure)
        {
            match self.store_local(d.to, d.message, env.params.smtputf8).await {
                Ok(dsn_id) => {
                    tracing::info!(queue_id = %env.id, dsn = %dsn_id, to = %env.sender, "bounced")
                }
                Err(e) => {
                    // Keep the message: the DSN is retried with it.
                    tracing::error!(queue_id = %env.id, error = %e, "cannot queue DSN; keeping the message");
                    self.lock_schedule().at(
                        &env.id,
                        Utc::now() + chrono::Duration::seconds(60),
                        false,
                    );
                    return;
                }
            }
        }
        // NOTIFY=SUCCESS (RFC 3461 §5.2.2): for mail that ends here (local
        // delivery) we report "delivered". Mail relayed onwards carries its
        // NOTIFY to the next hop, which reports.
        let local_ok: Vec<usize> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.state == RcptState::Delivered
                    && r.remote_mta.is_none()
                    && r.notify.is_some_and(|n| n.success)
            })
            .map(|(i, _)| i)
            .collect();
        if !local_ok.is_empty()
            && let Some(d) = self.dsn(&env, msg, &local_ok, dsn::DsnKind::Success)
        {
            match self.store_local(d.to, d.message, env.params.smtputf8).await {
                Ok(dsn_id) => {
                    tracing::info!(queue_id = %env.id, dsn = %dsn_id, "success DSN queued")
                }
                Err(e) => {
                    tracing::error!(queue_id = %env.id, error = %e, "cannot queue success DSN")
                }
            }
        }
        let spool = self.spool.clone();
        let id = env.id.clone();
        match tokio::task::spawn_blocking(move || spool.remove(&id)).await {
            Ok(Ok(())) => {
                self.lock_unsaved().remove(&env.id);
                tracing::info!(
                    queue_id = %env.id,
                    delivered = env.recipients.len() - failed.len(),
                    failed = failed.len(),
                    "message done"
                )
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot remove finished message")
            }
            Err(_) => {}
        }
    }

    /// Queue a message we generate (a DSN) from the null sender.
    async fn store_local(
        self: &Arc<Self>,
        to: String,
        message: Vec<u8>,
        smtputf8: bool,
    ) -> Result<String, SpoolError> {
        let id = new_queue_id();
        let now = Utc::now();
        let trace = format!(
            "Received: by {} (Sluice) id {id};\r\n\t{}\r\n",
            self.cfg.hostname,
            now.to_rfc2822()
        )
        .into_bytes();
        let params = crate::smtp::command::MailParams {
            smtputf8,
            ..Default::default()
        };
        let client = ClientInfo {
            ip: "127.0.0.1".into(),
            port: 0,
            listener: "local".into(),
            helo: self.cfg.hostname.clone(),
            esmtp: true,
            tls: None,
            proxy: None,
        };
        let envelope = Envelope::new(
            id.clone(),
            now,
            String::new(),
            vec![Recipient::new(to)],
            params,
            false,
            client,
        );
        self.spool
            .store(NewMessage {
                envelope,
                trace,
                body: message,
            })
            .await?;
        self.lock_schedule().at(&id, now, false);
        self.wake.notify_one();
        Ok(id)
    }
}

/// Apply one attempt's outcome to a recipient.
fn record(r: &mut Recipient, now: DateTime<Utc>, o: Outcome, attempt: bool) {
    if attempt {
        r.attempts += 1;
        r.last_attempt = Some(now);
    }
    match o {
        Outcome::Delivered { remote, reply } => {
            r.state = RcptState::Delivered;
            r.status = Some("2.0.0".into());
            r.diagnostic = Some(reply);
            r.remote_mta = remote;
            r.next_attempt = None;
        }
        Outcome::Deferred {
            status,
            diagnostic,
            remote,
        } => {
            r.state = RcptState::Deferred;
            r.status = Some(status.to_string());
            r.diagnostic = Some(diagnostic);
            r.remote_mta = remote;
        }
        Outcome::Failed {
            status,
            diagnostic,
            remote,
        } => {
            r.state = RcptState::Failed;
            r.status = Some(status.to_string());
            r.diagnostic = Some(diagnostic);
            r.remote_mta = remote;
            r.next_attempt = None;
        }
    }
}

fn log_outcome(id: &str, rcpt: &str, o: &Outcome) {
    match o {
        Outcome::Delivered { remote, reply } => tracing::info!(
            queue_id = id, rcpt, result = "delivered", remote = remote.as_deref().unwrap_or("local"), reply = %reply, "delivery"
        ),
        Outcome::Deferred {
            status,
            diagnostic,
            remote,
        } => tracing::info!(
            queue_id = id, rcpt, result = "deferred", status = %status, remote = remote.as_deref().unwrap_or(""), diagnostic = %diagnostic, "delivery"
        ),
        Outcome::Failed {
            status,
            diagnostic,
            remote,
        } => tracing::info!(
            queue_id = id, rcpt, result = "failed", status = %status, remote = remote.as_deref().unwrap_or(""), diagnostic = %diagnostic, "delivery"
        ),
    }
}

/// A tiny task tracker: count tasks in progress and wait for none.
mod tokio_util_lite {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    /// Counts guards alive.
    #[derive(Debug, Default)]
    pub(super) struct Tracker {
        inner: Arc<(AtomicUsize, Notify)>,
    }

    /// One task in progress.
    #[derive(Debug)]
    pub(super) struct Guard {
        inner: Arc<(AtomicUsize, Notify)>,
    }

    impl Tracker {
        pub(super) fn enter(&self) -> Guard {
            self.inner.0.fetch_add(1, Ordering::SeqCst);
            Guard {
                inner: self.inner.clone(),
            }
        }

        pub(super) async fn wait(&self) {
            loop {
                let notified = self.inner.1.notified();
                if self.inner.0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self.inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.inner.1.notify_waiters();
            }
        }
    }
}

/// Move a damaged entry to `spool/corrupt/`, loudly.
fn set_aside(spool: &dyn Spool, id: &str, e: &SpoolError) {
    match spool.set_aside(id, &e.to_string()) {
        Ok(()) => tracing::error!(
            queue_id = %id,
            error = %e,
            "damaged spool entry set aside in spool/corrupt/; it is not delivered"
        ),
        Err(e2) => tracing::error!(
            queue_id = %id,
            error = %e,
            move_error = %e2,
            "damaged spool entry, and it cannot be set aside"
        ),
    }
}

/// Has a message received at `received_at` outlived `lifetime`? A
/// lifetime beyond what the calendar holds never ends (no overflow).
fn past_lifetime(received_at: DateTime<Utc>, lifetime: Duration, now: DateTime<Utc>) -> bool {
    chrono::Duration::from_std(lifetime)
        .ok()
        .and_then(|l| received_at.checked_add_signed(l))
        .is_some_and(|end| now >= end)
}

#[cfg(test)]
mod tests {

    #[test]
    fn finding_04_relay_credentials_only_to_the_configured_relay() {
        let mut cfg = Config::parse("", "t").unwrap();
        assert!(!Router::new(&cfg).is_relay_host("smarthost.example", 587));
        cfg.delivery.relay_host = Some("Smarthost.example:587".into());
        let r = Router::new(&cfg);
        assert!(r.is_relay_host("smarthost.example", 587));
        assert!(!r.is_relay_host("smarthost.example", 25));
        assert!(!r.is_relay_host("attacker.example", 587));
    }

    #[test]
    fn finding_10_a_lifetime_past_the_calendar_never_ends() {
        let now = Utc::now();
        let huge = Duration::from_secs(u64::MAX / 2);
        assert!(!past_lifetime(now, huge, now));
        assert!(!past_lifetime(
            DateTime::<Utc>::MAX_UTC,
            Duration::from_secs(60),
            now
        ));
        assert!(past_lifetime(
            now - chrono::Duration::days(6),
            Duration::from_secs(5 * 86_400),
            now
        ));
        assert!(!past_lifetime(now, Duration::from_secs(5 * 86_400), now));
    }

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let (i, m) = (Duration::from_secs(300), Duration::from_secs(3600));
        assert_eq!(backoff(1, i, m), Duration::from_secs(300));
        assert_eq!(backoff(2, i, m), Duration::from_secs(600));
        assert_eq!(backoff(4, i, m), Duration::from_secs(2400));
        assert_eq!(backoff(5, i, m), Duration::from_secs(3600));
        assert_eq!(backoff(500, i, m), Duration::from_secs(3600));
    }

    #[test]
    fn routes_by_domain() {
        let mut cfg = Config::parse("local_domains = [\"example.com\"]", "t").unwrap();
        let r = Router::new(&cfg);
        assert_eq!(r.route("a@EXAMPLE.com"), Route::Local);
        assert_eq!(r.route("postmaster"), Route::Local);
        assert_eq!(
            r.route("a@other.org"),
            Route::Mx {
                domain: "other.org".into()
            }
        );
        cfg.delivery.relay_host = Some("smarthost.example:587".into());
        cfg.delivery.relay_tls = TlsMode::Require;
        let r = Router::new(&cfg);
        assert_eq!(
            r.route("a@other.org"),
            Route::Relay {
                host: "smarthost.example".into(),
                port: 587,
                tls: TlsMode::Require
            }
        );
        assert_eq!(r.route("a@example.com"), Route::Local);
    }
}
