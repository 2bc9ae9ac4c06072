//! Listeners and connections: TCP accept loops, connection caps, TLS,
//! PROXY protocol, graceful shutdown, and the per-connection driver that
//! runs an [`crate::smtp::Session`] over a socket.

pub mod access;
mod changes;
mod conn;
pub(crate) use conn::{mail_params, rcpt_params};
pub mod limits;
pub mod proxy;
mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ListenerConfig};
use crate::delivery::client::{ClientConfig, Timeouts};
use crate::queue::{Queue, QueueParts};
use crate::smtp::reply::std_replies;
use crate::spool::{FsSpool, Spool, SpoolError};

/// Server start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The queue could not load the spool.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// DNS could not be set up.
    #[error("DNS: {0}")]
    Dns(String),
    /// Outbound TLS trust anchors could not be loaded.
    #[error("outbound TLS: {0}")]
    ClientTls(String),
    /// The admin socket could not be set up.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// A policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The recording writer could not start.
    #[error("cannot start the session recorder: {0}")]
    Record(std::io::Error),
}

/// Everything a connection needs, shared.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) access: access::AccessRules,
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) tls: TlsAcceptor,
    pub(crate) per_ip: limits::PerIpLimiter,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) queue: Queue,
    /// The policy chain new sessions get (swapped by reloads).
    pub(crate) chain: Arc<crate::policy::LiveChain>,
    /// The session recorder; `None` when no listener records.
    pub(crate) recorder: Option<crate::record::Recorder>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

/// A bound, ready server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, ListenerConfig)>,
    admin: tokio::net::UnixListener,
    reloader: Arc<crate::policy::Reloader>,
}

impl Server {
    /// Open the spool, load TLS, bind every listener.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        Self::bind_from(config, None).await
    }

    /// [`bind`](Self::bind), with the file `config` was read from: reloads
    /// (SIGHUP, `sluice policy reload`, a change of the file) read it
    /// again.
    pub async fn bind_from(
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> Result<Self, ServerError> {
        let (spool, recovery) = FsSpool::open(
            &config.data_dir,
            config.spool.group_commit,
            config.spool.max_batch,
        )?;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            messages = recovery.messages,
            removed_partial = recovery.removed,
            group_commit = config.spool.group_commit,
            "spool open"
        );
        let (tls_config, self_signed) = tls::server_config(config.tls.as_ref(), &config.hostname)?;
        if self_signed {
            tracing::warn!(
                hostname = %config.hostname,
                "no [tls] certificate configured: using a self-signed certificate made at start"
            );
        }
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let socket =
                TcpListener::bind(l.address)
                    .await
                    .map_err(|source| ServerError::Bind {
                        address: l.address,
                        source,
                    })?;
            listeners.push((socket, l.clone()));
        }
        let spool: Arc<dyn Spool> = Arc::new(spool);
        let resolver =
            crate::dns::from_config(&config.dns).map_err(|e| ServerError::Dns(e.to_string()))?;
        let roots = crate::delivery::client::load_roots(config.delivery.ca_file.as_deref())
            .map_err(|e| ServerError::ClientTls(e.to_string()))?;
        let client = ClientConfig {
            helo_name: config.hostname.clone(),
            connect_timeout: config.delivery.connect_timeout,
            timeouts: Timeouts::default(),
            tls_roots: Arc::new(roots),
        };
        let self_addrs = listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect();
        // Policies are compiled (or taken from the compiled cache) and
        // initialised before the first session; a policy that fails to
        // load stops the start with a message naming it.
        let services = crate::policy::Services {
            resolver: resolver.clone(),
            kv: Arc::new(crate::policy::KvStore::new(1_000_000, 256 << 20)),
        };
        let (engine, chain) = if config.policies.is_empty() {
            (None, None)
        } else {
            // Each session holds one instance per policy it calls; past the
            // pool's size a call fails and the policy's on_error applies.
            let needed = config
                .limits
                .max_connections
                .saturating_mul(config.policies.len());
            if config.policy_engine.pooling
                && (config.policy_engine.max_instances as usize) < needed
            {
                tracing::warn!(
                    max_instances = config.policy_engine.max_instances,
                    max_connections = config.limits.max_connections,
                    policies = config.policies.len(),
                    "[policy_engine] max_instances is below max_connections x policies: \
                     under full load some policy calls will fail (and apply on_error)"
                );
            }
            let engine = crate::policy::Engine::new(&config.policy_engine)?;
            let chain = engine
                .load_chain(&config.policies, services.clone())
                .await?;
            for s in chain.stats() {
                tracing::info!(policy = %s.name, version = %s.version, "policy loaded");
            }
            (Some(engine), Some(chain))
        };
        let chain = Arc::new(crate::policy::LiveChain::new(chain));
        let reloader = Arc::new(crate::policy::Reloader::new(
            chain.clone(),
            engine,
            services,
            config_path,
            config.clone(),
        ));
        let queue = Queue::new(QueueParts {
            spool: spool.clone(),
            config: config.clone(),
            resolver,
            client,
            self_addrs,
            chain: chain.clone(),
        })?;
        let admin = crate::admin::bind(&config.data_dir)?;
        let recorder = if config
            .listeners
            .iter()
            .any(|l| l.record != crate::config::RecordMode::Off)
        {
            Some(crate::record::Recorder::start(&config.record).map_err(ServerError::Record)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            recorder,
            access: access::AccessRules::new(
                config.local_domains.clone(),
                config.relay_networks.clone(),
            ),
            queue,
            chain,
            spool,
            tls: TlsAcceptor::from(tls_config),
            per_ip: limits::PerIpLimiter::new(config.limits.max_connections_per_ip),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            config,
        });
        Ok(Self {
            shared,
            listeners,
            admin,
            reloader,
        })
    }

    /// What reloads the policies (for SIGHUP).
    pub fn reloader(&self) -> Arc<crate::policy::Reloader> {
        self.reloader.clone()
    }

    /// The bound addresses, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serve until `shutdown` becomes true; then stop accepting, tell idle
    /// sessions `421 4.3.0`, let messages in flight finish (bounded by
    /// `shutdown_timeout`) and return.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let queue_task = tokio::spawn(self.shared.queue.clone().run(shutdown.clone()));
        let admin_task = tokio::spawn(crate::admin::serve(
            self.admin,
            self.shared.queue.clone(),
            self.reloader.clone(),
            shutdown.clone(),
        ));
        if self.shared.config.policy_engine.watch {
            tokio::spawn(crate::policy::watch(
                self.reloader.clone(),
                self.shared.config.clone(),
                shutdown.clone(),
            ));
        }
        let mut accept_tasks = Vec::new();
        for (listener, cfg) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(address = %addr, implicit_tls = cfg.implicit_tls, proxy_protocol = cfg.proxy_protocol, "listening");
            }
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                Arc::new(cfg),
                self.shared.clone(),
                shutdown.clone(),
            )));
        }
        for t in accept_tasks {
            let _ = t.await;
        }
        // Every open connection holds one permit: all permits back means
        // every session has ended.
        let max = self.shared.config.limits.max_connections as u32;
        let grace = self.shared.config.limits.shutdown_timeout;
        match tokio::time::timeout(grace, self.shared.connections.acquire_many(max)).await {
            Ok(_) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!(
                open = max as usize - self.shared.connections.available_permits(),
                "shutdown timeout: closing sessions still open"
            ),
        }
        if self.shared.recorder.is_some() {
            // Sessions have ended: write what they recorded.
            let shared = self.shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(r) = &shared.recorder {
                    r.flush(Duration::from_secs(10));
                }
            })
            .await;
        }
        let _ = admin_task.await;
        let _ = queue_task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // Out of descriptors and the like: wait and go on; the
                // listener never ends because of one failed accept.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match shared.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let cfg = cfg.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    conn::handle(stream, peer, cfg, shared, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(client = %peer, "connection limit reached");
                tokio::spawn(refuse(stream, std_replies::too_many_connections()));
            }
        }
    }
    tracing::info!(address = %cfg.address, "listener stopped");
}

/// Say a 421 and close, without waiting long for a slow peer.
pub(crate) async fn refuse(mut stream: TcpStream, reply: crate::smtp::Reply) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
